//! TCP payload edits and sequence/acknowledgement shifting (`tcp_edit`).
//! Oracles: `apply_edits` gives what a plain model of the edit list gives; the sequence
//! map (`SeqShift`) of a stream edited packet by packet maps every original position
//! outside the removed ranges where the edited stream has it, and `unmap_ack` takes it
//! back; `rewrite_tcp` (new payload, seq, ack) and `shift_tcp` on a frame with valid
//! checksums leave a frame that dissects to the new payload and fields, checksums valid.
//! Input: [ctl len][ctl: isn, seq, ack][u16 payload length][payload][TCP options (<= 40)
//! u8-prefixed][edit ops, 4 bytes each].
#![no_main]
use haka_engine::dissect::{dissect, DissectOptions, LinkType};
use haka_engine::tcp_edit::{apply_edits, rewrite_tcp, shift_tcp, validate_edits, Edit, SeqShift, TcpRewrite};
use haka_engine::wire::checksum;
use haka_fuzz::{ipv4_frame, l4_v4_ok, tcp_segment};
use libfuzzer_sys::fuzz_target;

/// Edits of a payload of `len` bytes, sorted and disjoint, from `ops`.
fn edits(ops: &[u8], len: usize) -> Vec<Edit> {
    let mut out = Vec::new();
    let mut pos = 0;
    for o in ops.chunks_exact(4).take(12) {
        pos = (pos + (o[0] as usize % 24)).min(len);
        let n = (o[2] as usize % 24).min(len - pos);
        let bytes: Vec<u8> = (0..o[3] as usize % 24).map(|i| o[1] ^ i as u8).collect();
        let e = match o[1] % 3 {
            0 => Edit::Insert { at: pos, bytes },
            1 => Edit::Erase { at: pos, len: n },
            _ => Edit::Replace { at: pos, len: n, bytes },
        };
        pos += e.removed();
        out.push(e);
    }
    out
}

fn model(payload: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pos = 0;
    for e in edits {
        out.extend_from_slice(&payload[pos..e.at()]);
        out.extend_from_slice(e.inserted());
        pos = e.at() + e.removed();
    }
    out.extend_from_slice(&payload[pos..]);
    out
}

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fuzz_target!(|data: &[u8]| {
    let (ctl, rest) = haka_fuzz::control(data);
    let w = |i: usize| u32::from_le_bytes(std::array::from_fn(|k| ctl.get(4 * i + k).copied().unwrap_or(0)));
    let (isn, seq, ack) = (w(0), w(1), w(2));
    let (payload, rest) = haka_fuzz::take_u16_prefixed(rest);
    let payload = &payload[..payload.len().min(1400)];
    let (opts, ops) = match rest.split_first() {
        Some((&n, r)) => r.split_at((n as usize % 41).min(r.len())),
        None => (&[][..], &[][..]),
    };

    // payload edits
    let list = edits(ops, payload.len());
    let mut out = Vec::new();
    let delta = apply_edits(payload, &list, &mut out).expect("a valid edit list");
    assert_eq!(out, model(payload, &list));
    assert_eq!(validate_edits(payload.len(), &list).unwrap(), out.len());
    assert_eq!(delta, out.len() as i32 - payload.len() as i32);

    // the sequence map of a stream edited packet by packet: the payload cut in packets of
    // `cut` bytes, each with the edits of its own range
    let cut = 1 + ctl.get(12).copied().unwrap_or(99) as usize;
    let mut shift = SeqShift::new();
    let mut recs = Vec::new(); // (at, removed, inserted) in stream offsets
    let mut start = 0;
    while start < payload.len() || (start == 0 && payload.is_empty()) {
        let end = (start + cut).min(payload.len());
        let mine: Vec<Edit> = list
            .iter()
            .filter(|e| e.at() >= start && (e.at() < end || (e.at() == end && end == payload.len())) && e.at() + e.removed() <= end)
            .map(|e| match e {
                Edit::Insert { at, bytes } => Edit::Insert { at: at - start, bytes: bytes.clone() },
                Edit::Erase { at, len } => Edit::Erase { at: at - start, len: *len },
                Edit::Replace { at, len, bytes } => Edit::Replace { at: at - start, len: *len, bytes: bytes.clone() },
            })
            .collect();
        shift.record_edits(isn.wrapping_add(start as u32), end - start, &mine).expect("edits of a new packet");
        for e in &mine {
            if e.removed() != e.inserted().len() {
                recs.push((start + e.at(), e.removed(), e.inserted().len()));
            }
        }
        if end == payload.len() {
            break;
        }
        start = end;
    }
    if shift.merges() == 0 {
        for x in 0..=payload.len() + 2 {
            if recs.iter().any(|&(a, r, _)| r > 0 && a <= x && x < a + r) {
                continue; // inside a removed range: approximate by design
            }
            let moved: i64 = recs.iter().filter(|&&(a, r, _)| a + r <= x).map(|&(_, r, i)| i as i64 - r as i64).sum();
            let want = isn.wrapping_add((x as i64 + moved) as u32);
            let got = shift.map_seq(isn.wrapping_add(x as u32));
            assert_eq!(got, want, "map_seq of stream offset {x} ({recs:?})");
            assert_eq!(shift.unmap_ack(got), isn.wrapping_add(x as u32), "unmap_ack of stream offset {x} ({recs:?})");
        }
    }

    // the frame rewrites
    let (src, dst) = ([192, 168, 0, 1], [192, 168, 0, 2]);
    let flags = 0x18 | (ctl.get(13).copied().unwrap_or(0) & 0x10);
    let frame = ipv4_frame(src, dst, 6, &tcp_segment(1234, 80, seq, ack, flags, opts, payload));
    let Ok(meta) = dissect(&frame, LinkType::Ethernet, &DissectOptions::default()) else { return };
    let mut buf = frame.clone();
    buf.resize(frame.len() + 2048, 0);
    let rw = TcpRewrite { payload: Some(&out), seq: Some(seq ^ 0x55), ack: Some(ack.wrapping_add(7)), ack_map: None, unchanged: None, recompute: false };
    let n = rewrite_tcp(&mut buf, frame.len(), &meta, &rw).expect("rewrite of a well-formed segment");
    let f = &buf[..n];
    let m = dissect(f, LinkType::Ethernet, &DissectOptions::default()).expect("the rewritten frame dissects");
    let (l4, po) = (m.l4_offset as usize, m.payload_offset as usize);
    assert_eq!(&f[po..po + m.payload_len as usize], &out[..]);
    assert_eq!((be32(f, l4 + 4), be32(f, l4 + 8)), (seq ^ 0x55, ack.wrapping_add(7)));
    assert!(checksum::verify(&f[14..34]), "IPv4 header checksum");
    assert!(l4_v4_ok(&f[l4..], src, dst, 6), "TCP checksum after rewrite_tcp");
    // shift_tcp: the seq set, the ack mapped back through the map
    let mut g = frame.clone();
    let new_seq = shift.map_seq(seq);
    shift_tcp(&mut g, &meta, new_seq, &shift, false).expect("shift of a well-formed segment");
    let l4 = meta.l4_offset as usize;
    assert_eq!(be32(&g, l4 + 4), new_seq);
    let want_ack = if flags & 0x10 != 0 { shift.unmap_ack(ack) } else { ack };
    assert_eq!(be32(&g, l4 + 8), want_ack);
    assert!(l4_v4_ok(&g[l4..], src, dst, 6), "TCP checksum after shift_tcp");
});
