//! TCP stream reassembly (`stream::StreamReassembler`): two directions sharing a per-worker
//! budget, segments drawn from a known stream (at any offset, overlapping, repeated,
//! out of order, some with other bytes), reads, FIN, RST, acknowledgements.
//! Oracles: the bytes delivered are the stream's own, in order (a conflicting segment
//! never replaces delivered or buffered bytes: the first data wins); a segment carrying
//! only known bytes is never reported as a conflict; budgets conserved: each direction
//! holds at most its per-flow cap and `MAX_CHUNKS` chunks, the shared budget plus what
//! the directions hold is constant, and comes back whole when they are released.
//! Input: [ctl len][ctl: caps, ISNs][u16 stream length][stream][ops, 6 bytes each].
#![no_main]
use haka_engine::stream::{ByteBudget, StreamConfig, StreamReassembler, MAX_CHUNKS};
use libfuzzer_sys::fuzz_target;

struct Dir {
    r: StreamReassembler,
    isn: u32,
    /// Bytes read so far (must be the stream's prefix).
    read: Vec<u8>,
    /// Stream offsets where a conflicting segment put other bytes (those may be kept when
    /// they came first).
    dirty: Vec<(usize, usize)>,
    reset: bool,
}

fuzz_target!(|data: &[u8]| {
    let (ctl, rest) = haka_fuzz::control(data);
    let c = |i: usize| ctl.get(i).copied().unwrap_or(0) as usize;
    let (stream, mut ops) = haka_fuzz::take_u16_prefixed(rest);
    let cap = 1 + c(0) * 37;
    let total = 1 + c(1) * 53;
    let isn = |i: usize| u32::from_le_bytes([c(i) as u8, c(i + 1) as u8, c(i + 2) as u8, 0xff - c(i + 3) as u8]);
    let mut budget = ByteBudget::new(total);
    let cfg = StreamConfig { max_buffered_per_flow: cap };
    let mut dirs = [0usize, 1].map(|k| {
        let mut r = StreamReassembler::new(cfg);
        let i = isn(2 + 4 * k);
        r.on_syn(i);
        r.set_conflict_history(c(10) * 8);
        Dir { r, isn: i.wrapping_add(1), read: Vec::new(), dirty: Vec::new(), reset: false }
    });
    while ops.len() >= 6 {
        let (op, k) = (ops[0] & 7, (ops[0] >> 7) as usize);
        let off = u16::from_le_bytes([ops[1], ops[2]]) as usize;
        let len = u16::from_le_bytes([ops[3], ops[4]]) as usize % 2048;
        let x = ops[5];
        ops = &ops[6..];
        let d = &mut dirs[k];
        let seq = d.isn.wrapping_add(off as u32);
        match op {
            0..=2 => {
                // a segment of the stream's bytes (past its end: zeros, consistently)
                let seg: Vec<u8> = (off..off + len).map(|i| stream.get(i).copied().unwrap_or(0)).collect();
                let res = d.r.segment(seq, &seg, &mut budget);
                let touches_dirty = d.dirty.iter().any(|&(a, b)| a < off + len && off < b);
                assert!(!res.overlap_conflict || touches_dirty, "conflict reported for the stream's own bytes: {res:?}");
            }
            3 => {
                // other bytes at those offsets
                let seg: Vec<u8> = (0..len).map(|i| (i as u8) ^ x ^ 0x5a).collect();
                d.r.segment(seq, &seg, &mut budget);
                d.dirty.push((off, off + len));
            }
            4 => {
                let n = d.r.read().len().min(x as usize * 16);
                d.read.extend_from_slice(&d.r.read()[..n]);
                d.r.consume(n);
            }
            5 => {
                d.r.on_fin(seq);
            }
            6 => d.r.acked(seq),
            _ => {
                if x == 0xff {
                    d.r.reset(&mut budget);
                    d.reset = true;
                }
            }
        }
        for d in &dirs {
            assert!(d.r.buffered_bytes() <= cap, "{} bytes buffered over the per-flow cap {cap}", d.r.buffered_bytes());
            assert!(d.r.chunk_count() <= MAX_CHUNKS);
        }
        let held: usize = dirs.iter().map(|d| d.r.buffered_bytes()).sum();
        assert_eq!(budget.remaining + held, total, "budget not conserved");
    }
    for d in &mut dirs {
        let rest = d.r.read().to_vec();
        d.read.extend_from_slice(&rest);
        // what was read is the stream's, except where other bytes came first
        for (i, &b) in d.read.iter().enumerate() {
            let want = stream.get(i).copied().unwrap_or(0);
            if b != want {
                assert!(d.dirty.iter().any(|&(a, e)| a <= i && i < e), "byte {i} delivered as {b} instead of {want}");
            }
        }
        if !d.reset {
            assert_eq!(d.r.delivered_total() as usize, d.read.len());
        }
        d.r.release(&mut budget);
    }
    assert_eq!(budget.remaining, total, "budget not returned");
});
