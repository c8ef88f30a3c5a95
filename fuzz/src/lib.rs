//! Helpers shared by the fuzz targets (`fuzz_targets/*.rs`): how an input is cut into a
//! control part and data, chunking at fuzzer-chosen points, comparable forms of the
//! dissectors' events, and frames with valid checksums.
use haka_engine::dissectors::{Dissector, AppEvent, Events};
use haka_engine::wire::checksum;

/// Splits an input into `(control, data)`: the first byte is the control part's length.
/// Seeds written by `scripts/fuzz_seeds.py` start with a 0 (no control: default cuts).
pub fn control(input: &[u8]) -> (&[u8], &[u8]) {
    match input.split_first() {
        None => (&[], &[]),
        Some((&n, rest)) => rest.split_at((n as usize).min(rest.len())),
    }
}

/// Chunk lengths cycled through when the control part is empty.
const DEFAULT_CUTS: [u8; 7] = [0, 2, 6, 0, 12, 30, 99];

/// `data` cut at the points the control bytes choose: chunk `i` is
/// `ctl[i % ctl.len()] + 1` bytes long (0 means one byte; every chunk holds at least one).
pub fn chunks<'a>(ctl: &[u8], data: &'a [u8]) -> Vec<&'a [u8]> {
    let ctl = if ctl.is_empty() { &DEFAULT_CUTS[..] } else { ctl };
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = (ctl[i % ctl.len()] as usize + 1).min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
        i += 1;
    }
    out
}

/// Reads a big-endian u16 length then that many bytes (clamped): `(part, rest)`.
pub fn take_u16_prefixed(data: &[u8]) -> (&[u8], &[u8]) {
    if data.len() < 2 {
        return (&[], data);
    }
    let n = (u16::from_be_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
    data[2..].split_at(n)
}

/// A dissector's events in a form that does not depend on how the stream was cut:
/// consecutive body bytes of one direction joined (their offsets must follow on), and
/// everything else by its debug form.
pub fn normalize(events: &[AppEvent]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    // (dir, first offset, next offset, bytes) of the body run being joined
    let mut body: Option<(u8, u64, u64, Vec<u8>)> = None;
    let flush = |body: &mut Option<(u8, u64, u64, Vec<u8>)>, out: &mut Vec<String>| {
        if let Some((dir, off, _, data)) = body.take() {
            out.push(format!("Body dir={dir} off={off} data={data:?}"));
        }
    };
    for e in events {
        match e {
            AppEvent::Body { dir, data, off } => {
                match &mut body {
                    Some((d, _, next, bytes)) if *d == *dir && *next == *off => {
                        bytes.extend_from_slice(data);
                        *next += data.len() as u64;
                    }
                    _ => {
                        flush(&mut body, &mut out);
                        body = Some((*dir, *off, *off + data.len() as u64, data.clone()));
                    }
                }
                continue;
            }
            _ => flush(&mut body, &mut out),
        }
        out.push(match e {
            AppEvent::Head { head, span, .. } => format!("Head span={span:?} {head:?}"),
            other => format!("{other:?}"),
        });
    }
    flush(&mut body, &mut out);
    out
}

/// Feeds a stream dissector the client's then the server's bytes, each cut into `cuts`
/// (one call per chunk), then the ends of both streams; a direction that reported a
/// protocol error that stops the dissector gets nothing more (as in the engine, which
/// removes it). Returns the events, and the most bytes the dissector held between calls.
pub fn run_stream(d: &mut dyn Dissector, dirs: [&[&[u8]]; 2]) -> (Vec<AppEvent>, usize) {
    let mut ev = Events::default();
    let mut all = Vec::new();
    let mut held = 0;
    let mut stopped = false;
    for (dir, cuts) in dirs.iter().enumerate() {
        for c in cuts.iter() {
            if stopped {
                break;
            }
            d.receive_stream(dir as u8, c, &mut ev);
            stopped |= take(&mut ev, &mut all);
            held = held.max(d.held_bytes());
        }
    }
    for dir in 0..2 {
        if stopped {
            break;
        }
        d.receive_eof(dir, &mut ev);
        stopped |= take(&mut ev, &mut all);
    }
    (all, held)
}

/// Moves the reported events to `all`; whether one stops the dissector.
fn take(ev: &mut Events, all: &mut Vec<AppEvent>) -> bool {
    let mut stop = false;
    for e in ev.list.drain(..) {
        stop |= matches!(&e, AppEvent::Error(p) if p.stops);
        all.push(e);
    }
    stop
}

/// An Ethernet/IPv4 frame carrying `l4` (protocol `proto`), checksums valid.
pub fn ipv4_frame(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 34];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    f[18..20].copy_from_slice(&0x4242u16.to_be_bytes());
    f[22] = 64;
    f[23] = proto;
    f[26..30].copy_from_slice(&src);
    f[30..34].copy_from_slice(&dst);
    let c = checksum::compute(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let start = f.len();
    f.extend_from_slice(l4);
    fix_l4_v4(&mut f[start..], src, dst, proto);
    f
}

/// Sets the TCP/UDP/ICMP checksum of an IPv4 L4 segment.
pub fn fix_l4_v4(seg: &mut [u8], src: [u8; 4], dst: [u8; 4], proto: u8) {
    let off = match proto {
        6 => 16,
        17 => 6,
        1 => 2,
        _ => return,
    };
    if seg.len() < off + 2 {
        return;
    }
    seg[off..off + 2].fill(0);
    let c = if proto == 1 { checksum::compute(seg) } else { checksum::l4_v4(&src, &dst, proto, seg) };
    seg[off..off + 2].copy_from_slice(&c.to_be_bytes());
}

/// A 20-byte TCP header (data offset 5 + `opts` 32-bit words of options taken from
/// `opt_bytes`) followed by `payload`; checksum left 0.
pub fn tcp_segment(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, opt_bytes: &[u8], payload: &[u8]) -> Vec<u8> {
    let opts = (opt_bytes.len() / 4).min(10) * 4;
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = ((5 + opts / 4) as u8) << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&8192u16.to_be_bytes());
    t.extend_from_slice(&opt_bytes[..opts]);
    t.extend_from_slice(payload);
    t
}

/// Whether the IPv4 TCP/UDP segment `seg` has a valid checksum.
pub fn l4_v4_ok(seg: &[u8], src: [u8; 4], dst: [u8; 4], proto: u8) -> bool {
    checksum::finish(checksum::combine(&[checksum::pseudo_header_v4(&src, &dst, proto, seg.len() as u16), checksum::sum(seg)]))
        == 0
}

/// Fails, showing the first difference (cut to a readable length), unless the events of
/// the whole streams and of the cut streams are the same.
pub fn assert_same(whole: &[String], split: &[String]) {
    if whole == split {
        return;
    }
    let cut = |s: Option<&String>| s.map_or("(none)".to_string(), |s| s.chars().take(400).collect());
    let i = whole.iter().zip(split).take_while(|(a, b)| a == b).count();
    panic!(
        "split invariance: {} events whole, {} cut; first difference at {i}:\n whole: {}\n cut:   {}",
        whole.len(),
        split.len(),
        cut(whole.get(i)),
        cut(split.get(i))
    );
}
