//! IPv4/IPv6 fragment reassembly (`defrag::Defragmenter`), in both overlap modes.
//! Two parts per input:
//! - a round trip: a datagram made from the input is cut by `refrag` at a fuzzer-chosen
//!   MTU and its fragments pushed in a fuzzer-chosen order, some twice: exactly one
//!   `Complete`, equal to the datagram (IPv4 and IPv6);
//! - any packets: fuzzer-built fragments (few ids, so that they meet) and raw bytes pushed
//!   over fuzzer-chosen time under a small fuzzer-chosen budget. Budgets conserved: the
//!   bytes and datagrams held never exceed the caps, and come back to 0 once every
//!   datagram has timed out; a completed IPv4 datagram is well formed (offset 0, MF clear,
//!   valid header checksum, total length = its length).
//! Input: [ctl len][ctl: config and cut choices][datagram payload len u16][payload][ops].
#![no_main]
use haka_engine::defrag::{DefragConfig, DefragResult, Defragmenter};
use haka_engine::refrag::{refragment_ipv4, refragment_ipv6};
use haka_engine::wire::checksum;
use libfuzzer_sys::fuzz_target;

fn v4_datagram(id: u16, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut ip = vec![0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
    let c = checksum::compute(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(payload);
    ip
}

fn v6_datagram(nh: u8, payload: &[u8]) -> Vec<u8> {
    let mut ip = vec![0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    ip[6] = nh;
    ip[7] = 64;
    ip[23] = 1;
    ip[39] = 2;
    ip.extend_from_slice(payload);
    ip
}

/// An IPv4 fragment of datagram `id`: payload offset `off` (bytes), MF `more`.
fn v4_fragment(id: u16, off: usize, more: bool, data: &[u8]) -> Vec<u8> {
    let mut ip = v4_datagram(id, 17, data);
    let fo = ((off / 8) as u16 & 0x1fff) | (more as u16) << 13;
    ip[6..8].copy_from_slice(&fo.to_be_bytes());
    ip[10..12].fill(0);
    let c = checksum::compute(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip
}

fn v6_fragment(id: u32, off: usize, more: bool, data: &[u8]) -> Vec<u8> {
    let mut p = vec![17u8, 0];
    p.extend_from_slice(&(((off / 8) as u16) << 3 | more as u16).to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(data);
    v6_datagram(44, &p)
}

/// Pushes `frags` in the order `ctl` picks (each byte takes one of the remaining; odd bytes
/// also push it again): the datagram must come out exactly once, as `want`.
fn round_trip(frags: Vec<Vec<u8>>, ctl: &[u8], v6: bool, haka: bool, want: &[u8]) {
    let mut d = Defragmenter::new(DefragConfig::default());
    d.set_haka_overlaps(haka);
    let mut left = frags;
    let single = left.len() == 1;
    let mut done = 0;
    let mut i = 0;
    while !left.is_empty() {
        let b = ctl.get(i).copied().unwrap_or(0);
        i += 1;
        let f = left.remove(b as usize % left.len());
        let dup = b & 1 == 1 && !left.is_empty();
        for again in [false, true].into_iter().take(1 + dup as usize) {
            let r = if v6 { d.push_ipv6(&f, 0) } else { d.push_ipv4(&f, 0) };
            match r {
                DefragResult::Complete { packet, .. } => {
                    assert_eq!(packet, want, "reassembled datagram differs from the original");
                    done += 1;
                }
                DefragResult::NotFragment if single => done += 1,
                DefragResult::Pending => {}
                // Haka's model: a fragment at the last one's offset, pushed again, is refused
                DefragResult::Invalid(haka_engine::defrag::DefragError::AfterLast) if haka && again => {}
                other => panic!("fragment of a well-formed datagram: {other:?}"),
            }
        }
    }
    assert_eq!(done, 1, "datagram reassembled {done} times");
    assert_eq!(d.counters().bytes, 0);
    assert_eq!(d.counters().in_progress, 0);
}

fn check_complete(packet: &[u8], v6: bool) {
    assert!(packet.len() <= 65535 + if v6 { 40 } else { 0 }, "datagram of {} bytes", packet.len());
    if !v6 {
        assert!(packet.len() >= 20);
        let hl = (packet[0] & 15) as usize * 4;
        assert_eq!(u16::from_be_bytes([packet[2], packet[3]]) as usize, packet.len());
        assert_eq!(u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff, 0, "offset or MF set");
        assert!(checksum::verify(&packet[..hl]), "bad header checksum");
    } else {
        assert_eq!(u16::from_be_bytes([packet[4], packet[5]]) as usize + 40, packet.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let (ctl, rest) = haka_fuzz::control(data);
    let c = |i: usize| ctl.get(i).copied().unwrap_or(0) as usize;
    let haka = c(0) & 1 == 1;
    let (payload, ops) = haka_fuzz::take_u16_prefixed(rest);

    // round trip, IPv4 then IPv6
    let mtu = 68 + c(1) * 8 + c(2);
    let dg = v4_datagram(0x1234, 17, &payload[..payload.len().min(65535 - 20)]);
    if let Ok(frags) = refragment_ipv4(&dg, mtu) {
        round_trip(frags, ctl.get(3..).unwrap_or(&[]), false, haka, &dg);
    }
    let dg6 = v6_datagram(17, &payload[..payload.len().min(65535 - 8)]);
    if let Ok(frags) = refragment_ipv6(&dg6, 40, 0xabcd, mtu.max(1280 - c(2) * 4)) {
        round_trip(frags, ctl.get(3..).unwrap_or(&[]), true, haka, &dg6);
    }

    // any packets under a small budget
    let cfg = DefragConfig {
        max_datagrams: 1 + c(1) % 8,
        max_bytes: 256 + c(2) * 64,
        timeout_ms: 1 + c(3) as u64 * 10,
    };
    let mut d = Defragmenter::new(cfg);
    d.set_haka_overlaps(haka);
    let mut now = 0u64;
    let mut ops = ops;
    while ops.len() >= 4 {
        let (op, a, b, n) = (ops[0], ops[1], ops[2], ops[3] as usize);
        let body = &ops[4..];
        let n = n.min(body.len());
        let (bytes, next) = body.split_at(n);
        ops = next;
        let r = match op % 8 {
            0 => Some((d.push_ipv4(bytes, now), false)),
            1 => Some((d.push_ipv6(bytes, now), true)),
            2 | 3 => Some((d.push_ipv4(&v4_fragment(a as u16 % 3, b as usize * 8, op & 8 != 0, bytes), now), false)),
            4 | 5 => Some((d.push_ipv6(&v6_fragment(a as u32 % 3, b as usize * 8, op & 8 != 0, bytes), now), true)),
            6 => {
                now += a as u64;
                d.expire(now);
                None
            }
            _ => {
                d.evict_one();
                None
            }
        };
        if let Some((DefragResult::Complete { packet, .. }, v6)) = &r {
            check_complete(packet, *v6);
        }
        while d.take_released().is_some() {}
        let k = d.counters();
        assert!(k.bytes <= cfg.max_bytes, "{} bytes held over the {}-byte cap", k.bytes, cfg.max_bytes);
        assert!(k.in_progress <= cfg.max_datagrams, "{} datagrams over the cap of {}", k.in_progress, cfg.max_datagrams);
    }
    d.expire(now + cfg.timeout_ms + 1);
    let k = d.counters();
    assert_eq!((k.bytes, k.in_progress), (0, 0), "held after every datagram timed out");
});
