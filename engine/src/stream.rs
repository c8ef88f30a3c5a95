//! Per-direction TCP stream reassembly.
//!
//! One [`StreamReassembler`] per direction of a TCP connection. The caller (the TCP connection
//! state machine) feeds every segment with [`StreamReassembler::segment`] and reads the in-order
//! data with [`StreamReassembler::read`] / [`StreamReassembler::consume`] (or
//! [`StreamReassembler::take`]). Delivered data is kept in one contiguous buffer so that rules can
//! be handed a view without per-byte copies.
//!
//! Behaviour (modelled on Haka's `modules/protocol/tcp/tcp-stream.c`, hardened):
//! - in-order data is delivered immediately; out-of-order segments are queued (sorted by sequence,
//!   merged when overlapping or adjacent, with bounded copying: see [`ABSORB_MAX`]) until the
//!   gap fills;
//! - **first data wins**: bytes already received (delivered but not yet consumed, or buffered) are
//!   never replaced; a retransmission/overlap carrying *different* bytes for an already-received
//!   range sets [`SegmentResult::overlap_conflict`] (the classic IDS evasion, the caller alerts);
//!   bytes already consumed by the reader are compared only within the optional retained
//!   history ([`StreamReassembler::set_conflict_history`], off by default), which forgets
//!   what the receiver acknowledged ([`StreamReassembler::acked`]);
//! - sequence numbers are compared with serial-number arithmetic (RFC 1982) and wrap at 2^32;
//!   internally the stream uses 64-bit offsets from the start of the stream;
//! - segments entirely left of the next expected sequence are duplicates; segments reaching more
//!   than [`RECEIVE_WINDOW`] bytes ahead of it are out of window and ignored;
//! - out-of-order bytes are bounded per flow ([`StreamConfig::max_buffered_per_flow`]) and per
//!   worker ([`ByteBudget`], shared by all the flows of a worker): buffering takes from the budget,
//!   delivering or freeing gives it back. Over either cap the out-of-order part of the segment is
//!   not buffered and [`SegmentResult::over_cap`] is set (the in-order part is still delivered).
//!   The number of disjoint out-of-order chunks is bounded too ([`MAX_CHUNKS`]).
//!
//! The budget is passed by `&mut` rather than shared, so dropping a reassembler cannot give its
//! buffered bytes back: call [`StreamReassembler::reset`] (or [`StreamReassembler::release`])
//! before dropping one that may hold out-of-order data. Memory itself is always freed on drop.
//!
//! Delivered-but-unread data is not charged to the budget: the reader is expected to consume it
//! after every segment.
#![deny(unsafe_code)]

use std::collections::VecDeque;

/// Receive window: data starting or ending more than 1 GiB ahead of the next expected sequence
/// number is ignored (`out_of_window`).
pub const RECEIVE_WINDOW: u64 = 1 << 30;

/// Maximum number of disjoint out-of-order chunks held per direction (bounds the per-chunk
/// bookkeeping overhead when an attacker sends many tiny non-adjacent segments).
pub const MAX_CHUNKS: usize = 1024;

/// A chunk at most this long is copied into an adjacent chunk on its left when a segment joins
/// them; longer ones stay separate (adjacent) chunks, which bounds the copying per segment.
pub const ABSORB_MAX: usize = 4096;

/// Above this capacity, an emptied delivery buffer gives its memory back.
const KEEP_CAPACITY: usize = 64 * 1024;

/// A recycled reassembler keeps a delivery buffer up to this capacity.
const RECYCLED_READY_CAPACITY: usize = 4 * 1024;

/// Per-flow reassembly configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamConfig {
    /// Maximum number of out-of-order bytes buffered per direction.
    pub max_buffered_per_flow: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig { max_buffered_per_flow: 256 * 1024 }
    }
}

/// Per-worker budget of out-of-order bytes, shared by all the flows of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteBudget {
    /// Bytes that may still be buffered.
    pub remaining: usize,
}

impl ByteBudget {
    /// A budget of `bytes` buffered out-of-order bytes.
    pub fn new(bytes: usize) -> Self {
        ByteBudget { remaining: bytes }
    }

    fn give_back(&mut self, n: usize) {
        self.remaining = self.remaining.saturating_add(n);
    }
}

/// What happened to one segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentResult {
    /// Bytes that became readable in order because of this segment (including previously buffered
    /// bytes whose gap it filled). The total readable is `read().len()`.
    pub delivered: usize,
    /// Some bytes of the segment cover an already-received range still held (delivered-unread,
    /// buffered, or within the retained consumed history) with *different* content. The first
    /// data was kept.
    pub overlap_conflict: bool,
    /// The segment carried no new byte (everything already received or consumed).
    pub duplicate: bool,
    /// The segment (or its tail) lies beyond the receive window or after the FIN; ignored.
    pub out_of_window: bool,
    /// The out-of-order part was not buffered: per-flow cap, per-worker budget or chunk count.
    pub over_cap: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Neither SYN nor pickup nor segment seen yet.
    Idle,
    /// Reassembling.
    Open,
    /// Reset (RST): everything dropped, segments ignored until a new SYN.
    Closed,
}

/// One buffered out-of-order chunk: `data` starts at stream offset `off`.
#[derive(Debug)]
struct Chunk {
    off: u64,
    data: Vec<u8>,
}

impl Chunk {
    fn end(&self) -> u64 {
        self.off + self.data.len() as u64
    }
}

/// The last consumed bytes not yet acknowledged by the receiver, at most `cap` of them, in a
/// ring: no byte is moved once written. The ring's storage grows on demand up to `cap`
/// (most connections acknowledge every second segment: a few KiB), and writing starts again
/// at its beginning whenever every byte held was acknowledged, so that the bytes copied in
/// stay in cache rather than sweeping `cap` bytes of memory per connection.
#[derive(Debug, Default)]
struct History {
    /// Ring storage, `size` bytes allocated; its length is how far bytes were ever written
    /// (the ring is filled from its start, so no byte past it is held): a new ring is not
    /// zeroed (a connection's first bytes cost no 4 KiB memset per direction).
    buf: Vec<u8>,
    /// The ring's size (at most `cap`).
    size: usize,
    cap: usize,
    /// Index of the oldest byte held.
    start: usize,
    /// Bytes held.
    len: usize,
}

/// First size of a history ring, and its growth step.
const HISTORY_MIN: usize = 4096;

impl History {
    fn push(&mut self, b: &[u8]) {
        let cap = self.cap;
        if cap == 0 || b.is_empty() {
            return;
        }
        let b = &b[b.len().saturating_sub(cap)..];
        let need = self.len + b.len();
        if need > self.size && self.size < cap {
            self.grow(need.max(2 * self.size).max(HISTORY_MIN).min(cap));
        }
        let size = self.size;
        if need > size {
            // full: the oldest bytes make room
            let over = need - size;
            self.start = (self.start + over) % size;
            self.len -= over;
        }
        if self.len == 0 {
            self.start = 0;
        }
        let pos = (self.start + self.len) % size;
        let n = (size - pos).min(b.len());
        self.put(pos, &b[..n]);
        self.put(0, &b[n..]);
        self.len += b.len();
    }

    /// Writes `b` at `pos`: over bytes written before, then appended. `pos` is at most
    /// `buf.len()` (the next byte after those held is, see `buf`).
    fn put(&mut self, pos: usize, b: &[u8]) {
        let k = (self.buf.len() - pos).min(b.len());
        self.buf[pos..pos + k].copy_from_slice(&b[..k]);
        self.buf.extend_from_slice(&b[k..]);
    }

    /// Storage of `size` bytes, the bytes held moved to its start.
    fn grow(&mut self, size: usize) {
        let (a, b) = self.slices();
        let mut buf = Vec::with_capacity(size);
        buf.extend_from_slice(a);
        buf.extend_from_slice(b);
        self.buf = buf;
        self.size = size;
        self.start = 0;
    }

    /// The bytes held, oldest first, in two parts.
    fn slices(&self) -> (&[u8], &[u8]) {
        let end = self.start + self.len;
        if end <= self.size {
            (&self.buf[self.start..end], &[])
        } else {
            // (wrapped: every byte of the ring was written)
            (&self.buf[self.start..self.size], &self.buf[..end - self.size])
        }
    }

    /// Forgets the `n` oldest bytes held.
    fn forget_oldest(&mut self, n: usize) {
        let n = n.min(self.len);
        self.len -= n;
        self.start = if self.len == 0 { 0 } else { (self.start + n) % self.size };
    }

    /// Keeps the last `cap` bytes held.
    fn set_capacity(&mut self, cap: usize) {
        if cap == self.cap {
            return;
        }
        let (a, b) = self.slices();
        let kept = [a, b].concat();
        *self = History { cap, ..History::default() };
        self.push(&kept);
    }

    fn clear(&mut self) {
        *self = History { cap: self.cap, ..History::default() };
    }

    /// Empty, keeping the ring's memory (for another stream).
    fn empty(&mut self) {
        self.start = 0;
        self.len = 0;
    }
}

/// Reassembler for one direction of a TCP connection.
#[derive(Debug)]
pub struct StreamReassembler {
    config: StreamConfig,
    state: State,
    /// Sequence number of stream offset `next_off` (the next expected byte).
    next_seq: u32,
    /// Stream offset of the next expected byte (= total bytes delivered).
    next_off: u64,
    /// Delivered data; `ready[read_pos..]` is unread.
    ready: Vec<u8>,
    read_pos: usize,
    /// The last consumed bytes, retained for conflict detection (see `set_conflict_history`).
    history: History,
    /// Out-of-order chunks, sorted, disjoint (possibly adjacent), all starting after `next_off`.
    chunks: VecDeque<Chunk>,
    /// Sum of the chunk lengths (charged to the budget).
    buffered: usize,
    /// Stream offset of the FIN, once seen.
    fin_off: Option<u64>,
}

/// Serial-number comparison (RFC 1982): is `a` before `b`?
pub fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// Signed distance from `from` to `to` in sequence space (in `[-2^31, 2^31)`).
fn seq_diff(to: u32, from: u32) -> i64 {
    i64::from(to.wrapping_sub(from) as i32)
}

impl StreamReassembler {
    /// A reassembler waiting for [`on_syn`](Self::on_syn) or [`pickup`](Self::pickup) (or the
    /// first segment, which picks up the stream at its sequence number).
    pub fn new(config: StreamConfig) -> Self {
        StreamReassembler {
            config,
            state: State::Idle,
            next_seq: 0,
            next_off: 0,
            ready: Vec::new(),
            read_pos: 0,
            history: History::default(),
            chunks: VecDeque::new(),
            buffered: 0,
            fin_off: None,
        }
    }

    /// SYN seen with initial sequence number `isn`: data starts at `isn + 1`.
    ///
    /// Re-initialises the stream when it is idle, closed (reset) or has not received any byte yet
    /// (a retransmitted SYN, possibly with another ISN); ignored otherwise. Returns whether it was
    /// taken into account.
    pub fn on_syn(&mut self, isn: u32) -> bool {
        let fresh = match self.state {
            State::Idle | State::Closed => true,
            State::Open => self.next_off == 0 && self.chunks.is_empty() && self.fin_off.is_none(),
        };
        if fresh {
            self.start(isn.wrapping_add(1));
        }
        fresh
    }

    /// Starts mid-stream at `seq` (flow picked up without a SYN). Same conditions as
    /// [`on_syn`](Self::on_syn).
    pub fn pickup(&mut self, seq: u32) -> bool {
        let fresh = match self.state {
            State::Idle | State::Closed => true,
            State::Open => self.next_off == 0 && self.chunks.is_empty() && self.fin_off.is_none(),
        };
        if fresh {
            self.start(seq);
        }
        fresh
    }

    fn start(&mut self, seq: u32) {
        self.state = State::Open;
        self.next_seq = seq;
        self.next_off = 0;
        self.fin_off = None;
    }

    /// Feeds one segment (`payload` starting at sequence number `seq`). SYN/FIN/RST flags are
    /// handled by [`on_syn`](Self::on_syn), [`on_fin`](Self::on_fin) and [`reset`](Self::reset);
    /// call `on_fin` after `segment` for a segment carrying both data and FIN.
    pub fn segment(&mut self, seq: u32, payload: &[u8], budget: &mut ByteBudget) -> SegmentResult {
        let mut res = SegmentResult::default();
        match self.state {
            State::Closed => return res,
            State::Idle => self.start(seq),
            State::Open => {}
        }
        if payload.is_empty() {
            return res;
        }
        let len = payload.len() as u64;
        let d = seq_diff(seq, self.next_seq);

        // Part left of the next expected byte: already delivered. Compare what is still unread.
        let mut payload = payload;
        let mut start_off = self.next_off;
        if d < 0 {
            let left = d.unsigned_abs();
            self.compare_delivered(payload, left, &mut res);
            if len <= left {
                res.duplicate = true;
                return res;
            }
            // left < len <= usize::MAX
            payload = &payload[left as usize..];
        } else {
            start_off = self.next_off + d as u64;
        }
        let plen = payload.len() as u64;
        // Receive window.
        let rel_start = start_off - self.next_off;
        if rel_start > RECEIVE_WINDOW || plen > RECEIVE_WINDOW - rel_start {
            res.out_of_window = true;
            return res;
        }
        let mut end_off = start_off + plen;
        // Nothing after the FIN.
        if let Some(fin) = self.fin_off {
            if start_off >= fin {
                res.out_of_window = true;
                return res;
            }
            if end_off > fin {
                res.out_of_window = true;
                end_off = fin;
                payload = &payload[..(end_off - start_off) as usize];
            }
        }

        let new_in_order = self.deliver_in_order(start_off, payload, budget, &mut res);
        let pos = start_off + new_in_order.consumed;
        let new_buffered = if pos < end_off {
            let rest = &payload[(pos - start_off) as usize..];
            self.buffer(pos, rest, budget, &mut res)
        } else {
            false
        };
        if new_in_order.fresh == 0 && !new_buffered && !res.over_cap {
            res.duplicate = true;
        }
        res
    }

    /// Compares the part of `payload` lying left of `next_off` (it starts `left` bytes before)
    /// with the delivered bytes still held (unread, plus the retained consumed history).
    fn compare_delivered(&self, payload: &[u8], left: u64, res: &mut SegmentResult) {
        // Held bytes, oldest first: the history, then the unread ones.
        let (h0, h1) = self.history.slices();
        let held = [h0, h1, self.read()];
        let total: usize = held.iter().map(|p| p.len()).sum();
        let start_i = left.saturating_sub(total as u64);
        let end_i = left.min(payload.len() as u64);
        if start_i >= end_i {
            return;
        }
        // left - start_i <= total, so this does not underflow.
        let mut at = total - (left - start_i) as usize;
        let mut seg = &payload[start_i as usize..end_i as usize];
        for part in held {
            if at >= part.len() {
                at -= part.len();
                continue;
            }
            let n = (part.len() - at).min(seg.len());
            if part[at..at + n] != seg[..n] {
                res.overlap_conflict = true;
                return;
            }
            seg = &seg[n..];
            at = 0;
            if seg.is_empty() {
                return;
            }
        }
    }

    /// Delivers the in-order prefix of `payload` (which starts at `start_off >= next_off`) and any
    /// buffered chunk it makes contiguous.
    fn deliver_in_order(
        &mut self,
        start_off: u64,
        payload: &[u8],
        budget: &mut ByteBudget,
        res: &mut SegmentResult,
    ) -> InOrder {
        let end_off = start_off + payload.len() as u64;
        let mut pos = start_off;
        let mut out = InOrder { consumed: 0, fresh: 0 };
        loop {
            let head = self.chunks.front().map(|c| (c.off, c.end()));
            match head {
                Some((off, cend)) if off == self.next_off => {
                    // The head chunk is now contiguous: the segment bytes it covers lose.
                    if pos == self.next_off && pos < end_off {
                        let n = (end_off.min(cend) - pos) as usize;
                        let seg = &payload[(pos - start_off) as usize..][..n];
                        if let Some(c) = self.chunks.front() {
                            if c.data.get(..n) != Some(seg) {
                                res.overlap_conflict = true;
                            }
                        }
                        pos += n as u64;
                    }
                    if let Some(c) = self.chunks.pop_front() {
                        self.deliver_chunk(c, budget, res);
                    }
                }
                _ => {
                    if pos == self.next_off && pos < end_off {
                        let lim = head.map_or(end_off, |(off, _)| off.min(end_off));
                        let bytes = &payload[(pos - start_off) as usize..(lim - start_off) as usize];
                        self.push_ready(bytes);
                        res.delivered += bytes.len();
                        out.fresh += bytes.len();
                        self.next_off = lim;
                        self.next_seq = self.next_seq.wrapping_add(bytes.len() as u32);
                        pos = lim;
                    } else {
                        break;
                    }
                }
            }
        }
        out.consumed = pos.max(start_off) - start_off;
        out
    }

    fn deliver_chunk(&mut self, c: Chunk, budget: &mut ByteBudget, res: &mut SegmentResult) {
        let n = c.data.len();
        self.buffered -= n;
        budget.give_back(n);
        let mut data = c.data;
        if let Some(fin) = self.fin_off {
            // Bytes buffered beyond a FIN seen later are dropped.
            let keep = fin.saturating_sub(c.off).min(data.len() as u64) as usize;
            data.truncate(keep);
        }
        let k = data.len();
        if self.ready.is_empty() {
            // Nothing unread nor retained: adopt the chunk's buffer (no copy).
            self.ready = data;
            self.read_pos = 0;
        } else {
            self.ready.extend_from_slice(&data);
        }
        res.delivered += k;
        self.next_off += k as u64;
        self.next_seq = self.next_seq.wrapping_add(k as u32);
    }

    fn push_ready(&mut self, bytes: &[u8]) {
        self.ready.extend_from_slice(bytes);
    }

    /// Frees consumed bytes (amortised O(1) per byte; the history keeps its own copy).
    fn compact(&mut self) {
        let drop = self.read_pos;
        if drop == 0 {
            return;
        }
        if drop == self.ready.len() {
            self.ready.clear();
            self.read_pos = 0;
            if self.ready.capacity() > KEEP_CAPACITY {
                self.ready.shrink_to(KEEP_CAPACITY);
            }
        } else if drop >= self.ready.len() - drop {
            self.ready.drain(..drop);
            self.read_pos -= drop;
        }
    }

    /// Buffers `data` (starting at `off > next_off`) out of order. Returns whether new bytes were
    /// buffered.
    ///
    /// Existing bytes win. The new bytes fill the gaps between the chunks the segment touches;
    /// a gap extends the chunk on its left in place (amortised O(1) per byte), and a chunk is
    /// copied into its left neighbour only when it is at most [`ABSORB_MAX`] bytes long, so the
    /// copying done per segment is bounded by its length plus `2 * ABSORB_MAX` (no quadratic
    /// behaviour when segments arrive in decreasing order). Chunks may therefore be adjacent.
    fn buffer(
        &mut self,
        off: u64,
        data: &[u8],
        budget: &mut ByteBudget,
        res: &mut SegmentResult,
    ) -> bool {
        let end = off + data.len() as u64;
        // Chunks overlapping or adjacent to [off, end): indices i..j.
        let i = self.chunks.partition_point(|c| c.end() < off);
        let mut j = i;
        let mut cursor = off;
        let mut fresh: u64 = 0;
        // Dry run of the merge below, to count the resulting chunks.
        let mut plan = MergePlan::default();
        while let Some(c) = self.chunks.get(j) {
            if c.off > end {
                break;
            }
            let (lo, hi) = (c.off.max(off), c.end().min(end));
            if lo < hi {
                let a = &c.data[(lo - c.off) as usize..(hi - c.off) as usize];
                let b = &data[(lo - off) as usize..(hi - off) as usize];
                if a != b {
                    res.overlap_conflict = true;
                }
            }
            if c.off > cursor {
                fresh += c.off - cursor;
                plan.bytes(cursor, c.off);
            }
            plan.chunk(c.off, c.end(), c.data.len());
            cursor = cursor.max(c.end());
            j += 1;
        }
        if end > cursor {
            fresh += end - cursor;
            plan.bytes(cursor, end);
        }
        if fresh == 0 {
            return false;
        }
        let fresh = fresh as usize; // <= data.len()
        let chunks_after = self.chunks.len() - (j - i) + plan.count;
        if self.buffered.saturating_add(fresh) > self.config.max_buffered_per_flow
            || fresh > budget.remaining
            || chunks_after > MAX_CHUNKS
        {
            res.over_cap = true;
            return false;
        }
        let touched: Vec<Chunk> = self.chunks.drain(i..j).collect();
        let mut out: Vec<Chunk> = Vec::with_capacity(plan.count);
        let mut cur = off;
        for c in touched {
            if c.off > cur {
                push_bytes(&mut out, cur, &data[(cur - off) as usize..(c.off - off) as usize]);
            }
            cur = cur.max(c.end());
            push_chunk(&mut out, c);
        }
        if end > cur {
            push_bytes(&mut out, cur, &data[(cur - off) as usize..]);
        }
        for (k, c) in out.into_iter().enumerate() {
            self.chunks.insert(i + k, c);
        }
        self.buffered += fresh;
        budget.remaining -= fresh;
        true
    }

    /// Fast path for the common case: `payload` at exactly the next expected
    /// sequence number while nothing is buffered or unread and no FIN is pending.
    /// Advances the stream and counts the bytes as read at once (the caller reads
    /// them from its packet: no copy, except into the retained conflict history
    /// when there is one) and returns true; returns false, changing nothing, otherwise.
    pub fn advance_in_order(&mut self, seq: u32, payload: &[u8]) -> bool {
        let len = payload.len();
        if self.state != State::Open
            || seq != self.next_seq
            || !self.chunks.is_empty()
            || self.read_pos != self.ready.len()
            || self.fin_off.is_some()
            || len as u64 > RECEIVE_WINDOW
        {
            return false;
        }
        self.next_seq = self.next_seq.wrapping_add(len as u32);
        self.next_off += len as u64;
        self.history.push(payload);
        true
    }

    /// The receiver acknowledged every byte before sequence number `ack`. The retained
    /// history (`set_conflict_history`) forgets the bytes before it: the receiver drops a
    /// retransmission of bytes it acknowledged, so those can no longer be used for an
    /// evasion (as Suricata, which keeps stream data until it is acknowledged). An
    /// acknowledgement more than a window ahead of the delivered bytes is ignored.
    pub fn acked(&mut self, ack: u32) {
        if self.history.len == 0 || self.state != State::Open {
            return;
        }
        let d = seq_diff(ack, self.next_seq);
        if d > 0 && d as u64 > RECEIVE_WINDOW {
            return;
        }
        let ack_off = if d >= 0 { self.next_off } else { self.next_off.saturating_sub(d.unsigned_abs()) };
        // the history ends where the unread bytes start
        let hist_end = self.next_off - (self.ready.len() - self.read_pos) as u64;
        let hist_start = hist_end - self.history.len as u64;
        if ack_off > hist_start {
            self.history.forget_oldest((ack_off - hist_start).min(self.history.len as u64) as usize);
        }
    }

    /// The delivered, unread in-order data (one contiguous slice).
    pub fn read(&self) -> &[u8] {
        self.ready.get(self.read_pos..).unwrap_or(&[])
    }

    /// Marks the first `n` unread bytes as consumed (clamped to what is readable).
    pub fn consume(&mut self, n: usize) {
        let unread = self.ready.len() - self.read_pos;
        let n = n.min(unread);
        self.history.push(&self.ready[self.read_pos..self.read_pos + n]);
        self.read_pos += n;
        self.compact();
    }

    /// Keeps the last `bytes` consumed bytes, until acknowledged ([`acked`](Self::acked)),
    /// so that a retransmission of already-consumed data carrying different bytes is still
    /// reported as `overlap_conflict` (default 0: only unread and buffered data are compared).
    /// Costs up to `bytes` of memory per direction, not charged to the budget.
    pub fn set_conflict_history(&mut self, bytes: usize) {
        self.history.set_capacity(bytes);
    }

    /// Appends all unread data to `out` and consumes it.
    pub fn take(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.read());
        let n = self.ready.len() - self.read_pos;
        self.consume(n);
    }

    /// FIN seen; `seq` is the sequence number the FIN occupies (segment seq + payload length).
    /// The stream is finished once every byte before it has been delivered. Data after the FIN
    /// is ignored. A FIN left of the delivered data, beyond the window, or after another FIN
    /// (at a different place) is ignored; returns whether it was taken into account.
    pub fn on_fin(&mut self, seq: u32) -> bool {
        match self.state {
            State::Closed => return false,
            State::Idle => self.start(seq),
            State::Open => {}
        }
        let d = seq_diff(seq, self.next_seq);
        if d < 0 || d as u64 > RECEIVE_WINDOW {
            return false;
        }
        let off = self.next_off + d as u64;
        match self.fin_off {
            Some(f) => f == off,
            None => {
                self.fin_off = Some(off);
                true
            }
        }
    }

    /// All data up to the FIN has been delivered (it may still be unread), or the stream was
    /// reset.
    pub fn is_finished(&self) -> bool {
        self.state == State::Closed || self.fin_off == Some(self.next_off)
    }

    /// The stream was reset.
    pub fn is_reset(&self) -> bool {
        self.state == State::Closed
    }

    /// RST: drops everything (unread and out-of-order data), frees the memory and gives the
    /// buffered bytes back to `budget`. Later segments are ignored until a new SYN.
    pub fn reset(&mut self, budget: &mut ByteBudget) {
        self.release(budget);
        self.state = State::Closed;
    }

    /// Frees all held data and gives the buffered bytes back to `budget`, without changing the
    /// state (to call before dropping the reassembler).
    pub fn release(&mut self, budget: &mut ByteBudget) {
        budget.give_back(self.buffered);
        self.buffered = 0;
        self.chunks = VecDeque::new();
        self.ready = Vec::new();
        self.read_pos = 0;
        self.history.clear();
    }

    /// Back to the state of [`new`](Self::new)`(config)` for another connection, keeping the
    /// memory of the history ring and of a small delivery buffer (so that a connection
    /// does not allocate them again). Gives the buffered bytes back to `budget`.
    pub fn recycle(&mut self, config: StreamConfig, budget: &mut ByteBudget) {
        budget.give_back(self.buffered);
        self.buffered = 0;
        self.chunks.clear();
        if self.ready.capacity() > RECYCLED_READY_CAPACITY {
            self.ready = Vec::new();
        } else {
            self.ready.clear();
        }
        self.read_pos = 0;
        self.history.empty();
        self.config = config;
        self.state = State::Idle;
        self.next_seq = 0;
        self.next_off = 0;
        self.fin_off = None;
    }

    /// Out-of-order bytes currently held (charged to the budget).
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Heap memory this reassembler holds: out-of-order chunks, the delivery buffer's
    /// allocation and the retransmission history ring (the flow memory budget).
    pub fn held_bytes(&self) -> usize {
        self.buffered
            + self.chunks.capacity() * std::mem::size_of::<Chunk>()
            + self.ready.capacity()
            + self.history.buf.capacity()
    }

    /// Next expected sequence number (`None` before SYN/pickup/first segment).
    pub fn next_seq(&self) -> Option<u32> {
        match self.state {
            State::Idle => None,
            _ => Some(self.next_seq),
        }
    }

    /// Total bytes delivered in order since the start of the stream.
    pub fn delivered_total(&self) -> u64 {
        self.next_off
    }

    /// Number of disjoint out-of-order chunks held.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// The configuration.
    pub fn config(&self) -> &StreamConfig {
        &self.config
    }
}

/// Appends `bytes` (at stream offset `at`) to the chunk list being built.
fn push_bytes(out: &mut Vec<Chunk>, at: u64, bytes: &[u8]) {
    match out.last_mut() {
        Some(last) if last.end() == at => last.data.extend_from_slice(bytes),
        _ => out.push(Chunk { off: at, data: bytes.to_vec() }),
    }
}

/// Appends an existing chunk to the chunk list being built, absorbing it into its left neighbour
/// when adjacent and short.
fn push_chunk(out: &mut Vec<Chunk>, c: Chunk) {
    match out.last_mut() {
        Some(last) if last.end() == c.off && c.data.len() <= ABSORB_MAX => {
            last.data.extend_from_slice(&c.data)
        }
        _ => out.push(c),
    }
}

/// Dry run of [`push_bytes`] / [`push_chunk`]: how many chunks they produce.
#[derive(Default)]
struct MergePlan {
    last_end: Option<u64>,
    count: usize,
}

impl MergePlan {
    fn bytes(&mut self, at: u64, end: u64) {
        if self.last_end != Some(at) {
            self.count += 1;
        }
        self.last_end = Some(end);
    }

    fn chunk(&mut self, off: u64, end: u64, len: usize) {
        if !(self.last_end == Some(off) && len <= ABSORB_MAX) {
            self.count += 1;
        }
        self.last_end = Some(end);
    }
}

struct InOrder {
    /// Bytes of the segment (from its start) covered by the in-order processing.
    consumed: u64,
    /// Bytes of the segment itself newly delivered.
    fresh: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: usize = 1 << 20;

    fn cfg(max: usize) -> StreamConfig {
        StreamConfig { max_buffered_per_flow: max }
    }

    fn syn(isn: u32) -> StreamReassembler {
        let mut s = StreamReassembler::new(cfg(BIG));
        assert!(s.on_syn(isn));
        s
    }

    fn drain(s: &mut StreamReassembler) -> Vec<u8> {
        let mut v = Vec::new();
        s.take(&mut v);
        v
    }

    #[test]
    fn seq_compare_wraps() {
        assert!(seq_lt(1, 2));
        assert!(!seq_lt(2, 1));
        assert!(seq_lt(0xffff_fff0, 5));
        assert!(!seq_lt(5, 0xffff_fff0));
        assert!(!seq_lt(7, 7));
    }

    #[test]
    fn in_order() {
        let mut b = ByteBudget::new(BIG);
        let mut s = syn(1000);
        assert_eq!(s.next_seq(), Some(1001));
        let r = s.segment(1001, b"hello ", &mut b);
        assert_eq!(r, SegmentResult { delivered: 6, ..Default::default() });
        assert_eq!(s.read(), b"hello ");
        let r = s.segment(1007, b"world", &mut b);
        assert_eq!(r.delivered, 5);
        assert_eq!(s.read(), b"hello world");
        s.consume(6);
        assert_eq!(s.read(), b"world");
        s.consume(100);
        assert_eq!(s.read(), b"");
        assert_eq!(s.next_seq(), Some(1012));
        assert_eq!(s.delivered_total(), 11);
        assert_eq!(b.remaining, BIG);
    }

    #[test]
    fn out_of_order_reversed() {
        let mut b = ByteBudget::new(BIG);
        let mut s = syn(0);
        let r = s.segment(8, b"ghi", &mut b);
        assert_eq!(r.delivered, 0);
        assert!(!r.duplicate && !r.over_cap);
        assert_eq!(s.buffered_bytes(), 3);
        assert_eq!(b.remaining, BIG - 3);
        let r = s.segment(5, b"def", &mut b);
        assert_eq!(r.delivered, 0);
        assert_eq!(s.buffered_bytes(), 6);
        assert_eq!(s.chunk_count(), 1, "adjacent chunks merged");
        assert_eq!(s.read(), b"");
        let r = s.segment(1, b"abcd", &mut b);
        assert_eq!(r.delivered, 10);
        assert_eq!(s.read(), b"abcddefghi");
        assert_eq!(s.buffered_bytes(), 0);
        assert_eq!(s.chunk_count(), 0);
        assert_eq!(b.remaining, BIG);
        assert_eq!(s.next_seq(), Some(11));
    }

    #[test]
    fn out_of_order_with_gaps_between_chunks() {
        let mut b = ByteBudget::new(BIG);
        let mut s = syn(0);
        s.segment(11, b"K", &mut b);
        s.segment(5, b"EF", &mut b);
        assert_eq!(s.chunk_count(), 2);
        // Fills [1,5) only: delivers up to the next gap.
        let r = s.segment(1, b"ABCD", &mut b);
        assert_eq!(r.delivered, 6);
        assert_eq!(s.read(), b"ABCDEF");
        assert_eq!(s.buffered_bytes(), 1);
        // A segment covering the gap and the chunk (same data).
        let r = s.segment(7, b"GHIJK", &mut b);
        assert_eq!(r.delivered, 5);
        assert!(!r.overlap_conflict);
        assert_eq!(s.read(), b"ABCDEFGHIJK");
        assert_eq!(b.remaining, BIG);
    }

    #[test]
    fn duplicate() {
        let mut b = ByteBudget::new(BIG);
        let mut s = syn(0);
        s.segment(1, b"abcdef", &mut b);
        let r = s.segment(1, b"abcdef", &mut b);
        assert!(r.duplicate && !r.overlap_conflict);
        assert_eq!(r.delivered, 0);
        // Duplicate of consumed data: still a duplicate, cannot be compared.
        drain(&mut s);
        let r = s.segment(3, b"XX", &mut b);
        assert!(r.duplicate && !r.overlap_conflict);
        // Duplicate of buffered data.
        s.segment(20, b"zz", &mut b);
        let r = s.segment(20, b"zz", &mut b);
        assert!(r.duplicate && !r.overlap_conflict && !r.over_cap);
        assert_eq!(s.buffered_bytes(), 2);
    }

    #[test]
    fn overlap_same_data_no_conflict() {
        let mut b = ByteBudget::new(BIG);
        let mut s = syn(0);
        s.segment(1, b"abcdef", &mut b);
        let r = s.segment(4, b"defghi", &mut b);
        assert!(!r.overlap_conflict && !r.duplicate);
        assert_eq!(r.delivered, 3);
        assert_eq!(s.read(), b"abcdefghi");
    }

    #[test]
    fn overlap_different_data_conflict_first_wins() {
        let mut b = ByteBudget::new(BIG);
        let mut s = syn(0);
        s.segment(1, b"abcdef", &mut b);
        // Retransmission of delivered (unread) data with other bytes.
        let r = s.segment(1, b"abcXef", &mut b);
        assert!(r.overlap_conflict && r.duplicate);
        assert_eq!(s.read(), b"abcdef");
        // Overlapping buffered data with other bytes.
        s.segment(11, b"klmn", &mut b);
        let r = s.segment(11, b"KLMN", &mut b);
        assert!(r.overlap_conflict && r.duplicate);
        let r = s.segment(7, b"ghij", &mut b);
        assert!(!r.overlap_conflict);
        assert_eq!(s.read(), b"abcdefghijklmn");
        assert_eq!(b.remaining, BIG);
    }

    #[test]
    fn partial_overlap_both_sides() {
        let mut b = ByteBudget::new(BIG);
        let mut s = syn(0);
        s.segment(1, b"0123", &mut b);
        s.segment(9, b"89ab", &mut b);
        // Starts in delivered data, ends inside the buffered chunk; conflicting on both sides.
        let r = s.segment(3, b"2X4567Y9", &mut b);
        assert!(r.overlap_conflict);
        assert!(!r.duplicate);
        assert_eq!(r.delivered, 8);
        assert_eq!(s.read(), b"0123456789ab");
        // Same with matching bytes: no conflict.
        let mut s = syn(0);
        s.segment(1, b"0123", &mut b);
        s.segment(9, b"89ab", &mut b);
        let r = s.segment(3, b"23456789", &mut b);
        assert!(!r.overlap_conflict);
        assert_eq!(s.read(), b"0123456789ab");
        // Out-of-order segment overlapping two chunks and the gap between and around them.
        let mut s = syn(0);
        s.segment(5, b"45", &mut b);
        s.segment(9, b"89", &mut b);
        let r = s.segment(3, b"2345678", &mut b);
        assert!(!r.overlap_conflict && !r.duplicate);
        assert_eq!(s.chunk_count(), 1);
        assert_eq!(s.buffered_bytes(), 8);
        let r = s.segment(4, b"3X", &mut b);
        assert!(r.overlap_conflict && r.duplicate);
        let r = s.segment(1, b"01", &mut b);
        assert_eq!(r.delivered, 10);
        assert_eq!(s.read(), b"0123456789");
        assert_eq!(b.remaining, BIG);
    }

    #[test]
    fn wrap_around() {
        let mut b = ByteBudget::new(BIG);
        let isn = 0xffff_fff9u32;
        let mut s = syn(isn); // data starts at 0xffff_fffa
        let r = s.segment(0xffff_fffa, b"abcd", &mut b);
        assert_eq!(r.delivered, 4);
        // Crossing 0xffff_ffff -> 0, out of order first.
        let r = s.segment(2, b"ijkl", &mut b);
        assert_eq!(r.delivered, 0);
        assert!(!r.out_of_window);
        let r = s.segment(0xffff_fffe, b"efgh", &mut b);
        assert_eq!(r.delivered, 8);
        assert_eq!(s.read(), b"abcdefghijkl");
        assert_eq!(s.next_seq(), Some(6));
        // Old duplicate from before the wrap.
        let r = s.segment(0xffff_fffc, b"cd", &mut b);
        assert!(r.duplicate && !r.overlap_conflict);
        assert!(s.on_fin(6));
        assert!(s.is_finished());
        assert_eq!(b.remaining, BIG);
    }

    #[test]
    fn missing_segment_then_fin() {
        let mut b = ByteBudget::new(BIG);
        let mut s = syn(100);
        s.segment(101, b"aaaa", &mut b);
        s.segment(109, b"cccc", &mut b); // [105,109) missing
        assert!(s.on_fin(113));
        assert!(!s.is_finished());
        // Data after the FIN is ignored.
        let r = s.segment(113, b"zz", &mut b);
        assert!(r.out_of_window);
        let r = s.segment(111, b"ccZZ", &mut b);
        assert!(r.out_of_window && !r.overlap_conflict);
        let r = s.segment(105, b"bbbb", &mut b);
        assert_eq!(r.delivered, 8);
        assert!(s.is_finished());
        assert_eq!(s.read(), b"aaaabbbbcccc");
        // A FIN at another place is ignored.
        assert!(!s.on_fin(120));
        assert!(s.on_fin(113));
    }

    #[test]
    fn cap_per_flow() {
        let mut b = ByteBudget::new(BIG);
        let mut s = StreamReassembler::new(cfg(10));
        s.on_syn(0);
        let r = s.segment(11, b"0123456789", &mut b);
        assert!(!r.over_cap);
        assert_eq!(s.buffered_bytes(), 10);
        let r = s.segment(30, b"x", &mut b);
        assert!(r.over_cap && !r.duplicate);
        assert_eq!(s.buffered_bytes(), 10);
        // A duplicate of buffered data does not need room.
        let r = s.segment(11, b"01", &mut b);
        assert!(!r.over_cap && r.duplicate);
        // In-order data is still delivered at the cap, and frees the chunk.
        let r = s.segment(1, b"abcdefghij", &mut b);
        assert!(!r.over_cap);
        assert_eq!(r.delivered, 20);
        assert_eq!(s.buffered_bytes(), 0);
        assert_eq!(b.remaining, BIG);
        // Segment in order whose tail would need buffering beyond the cap: only the in-order
        // part is delivered.
        let r = s.segment(41, b"late", &mut b);
        assert!(!r.over_cap);
        let r = s.segment(21, b"0123456789ABCDEFGHIJ", &mut b);
        assert_eq!(r.delivered, 24);
        assert!(!r.over_cap);
    }

    #[test]
    fn cap_per_worker_budget_and_return() {
        let mut b = ByteBudget::new(8);
        let mut s1 = StreamReassembler::new(cfg(BIG));
        let mut s2 = StreamReassembler::new(cfg(BIG));
        s1.on_syn(0);
        s2.on_syn(1000);
        assert!(!s1.segment(5, b"12345", &mut b).over_cap);
        assert_eq!(b.remaining, 3);
        let r = s2.segment(1005, b"abcd", &mut b);
        assert!(r.over_cap);
        assert_eq!(s2.buffered_bytes(), 0);
        assert!(!s2.segment(1005, b"abc", &mut b).over_cap);
        assert_eq!(b.remaining, 0);
        // In-order data needs no budget.
        assert_eq!(s2.segment(1001, b"wxyz", &mut b).delivered, 7);
        assert_eq!(b.remaining, 3);
        // Delivery returns the budget.
        assert_eq!(s1.segment(1, b"0123", &mut b).delivered, 9);
        assert_eq!(b.remaining, 8);
        // Reset returns it too, and frees everything.
        s1.segment(50, b"later", &mut b);
        assert_eq!(b.remaining, 3);
        s1.reset(&mut b);
        assert_eq!(b.remaining, 8);
        assert_eq!(s1.buffered_bytes(), 0);
        assert_eq!(s1.read(), b"");
        assert!(s1.is_reset() && s1.is_finished());
        let r = s1.segment(14, b"ignored", &mut b);
        assert_eq!(r, SegmentResult::default());
        assert_eq!(b.remaining, 8);
        // A new SYN reopens it.
        assert!(s1.on_syn(500));
        assert_eq!(s1.segment(501, b"new", &mut b).delivered, 3);
        // Release before drop.
        s2.segment(2000, b"zz", &mut b);
        assert_eq!(b.remaining, 6);
        s2.release(&mut b);
        assert_eq!(b.remaining, 8);
    }

    #[test]
    fn chunk_count_cap() {
        let mut b = ByteBudget::new(BIG);
        let mut s = syn(0);
        for k in 0..MAX_CHUNKS as u32 {
            assert!(!s.segment(10 + 2 * k, b"x", &mut b).over_cap);
        }
        assert_eq!(s.chunk_count(), MAX_CHUNKS);
        assert!(s.segment(10_000, b"y", &mut b).over_cap);
        // Filling a hole merges two chunks: allowed.
        assert!(!s.segment(11, b"z", &mut b).over_cap);
        assert_eq!(s.chunk_count(), MAX_CHUNKS - 1);
    }

    #[test]
    fn syn_plus_data() {
        let mut b = ByteBudget::new(BIG);
        let mut s = StreamReassembler::new(cfg(BIG));
        assert_eq!(s.next_seq(), None);
        assert!(s.on_syn(41));
        // Retransmitted SYN before any data: accepted.
        assert!(s.on_syn(41));
        let r = s.segment(42, b"GET / HTTP/1.0\r\n", &mut b);
        assert_eq!(r.delivered, 16);
        // A SYN once data has arrived is ignored.
        assert!(!s.on_syn(7));
        assert_eq!(s.next_seq(), Some(58));
        // A segment before the ISN+1 (e.g. SYN seq itself) is left of next: duplicate.
        let r = s.segment(41, b"G", &mut b);
        assert!(r.duplicate && !r.overlap_conflict);
    }

    #[test]
    fn pickup_mid_stream() {
        let mut b = ByteBudget::new(BIG);
        let mut s = StreamReassembler::new(cfg(BIG));
        assert!(s.pickup(123_456));
        let r = s.segment(123_460, b"5678", &mut b);
        assert_eq!(r.delivered, 0);
        let r = s.segment(123_456, b"1234", &mut b);
        assert_eq!(r.delivered, 8);
        assert_eq!(s.read(), b"12345678");
        // Implicit pickup by the first segment.
        let mut s = StreamReassembler::new(cfg(BIG));
        assert_eq!(s.segment(77, b"abc", &mut b).delivered, 3);
        assert_eq!(s.next_seq(), Some(80));
    }

    #[test]
    fn out_of_window() {
        let mut b = ByteBudget::new(BIG);
        let mut s = syn(0);
        let w = RECEIVE_WINDOW as u32;
        assert!(s.segment(1 + w + 1, b"x", &mut b).out_of_window);
        assert!(s.segment(1 + w - 1, b"xy", &mut b).out_of_window);
        assert!(!s.segment(1 + w - 1, b"x", &mut b).out_of_window);
        assert_eq!(s.buffered_bytes(), 1);
        // Far behind (more than 2^31 ahead in serial arithmetic is behind): duplicate.
        assert!(s.segment(0x9000_0000, b"x", &mut b).duplicate);
        assert_eq!(b.remaining, BIG - 1);
    }

    #[test]
    fn empty_and_edge_inputs() {
        let mut b = ByteBudget::new(0);
        let mut s = syn(u32::MAX);
        assert_eq!(s.segment(0, b"", &mut b), SegmentResult::default());
        assert_eq!(s.segment(5, b"", &mut b), SegmentResult::default());
        s.consume(usize::MAX);
        assert_eq!(s.segment(0, b"ab", &mut b).delivered, 2);
        s.consume(1);
        s.consume(usize::MAX);
        assert_eq!(s.read(), b"");
        assert!(s.segment(10, b"ab", &mut b).over_cap);
        let mut c = StreamReassembler::new(cfg(0));
        assert!(c.on_fin(9));
        assert!(c.is_finished());
    }

    #[test]
    fn decreasing_tiny_segments_bounded_work() {
        // 200 000 one-byte segments in decreasing order: no quadratic copying, few chunks.
        let n: u32 = 200_000;
        let mut b = ByteBudget::new(BIG);
        let mut s = syn(0);
        let byte = |k: u32| (k % 251) as u8;
        for k in (1..n).rev() {
            let r = s.segment(1 + k, &[byte(k)], &mut b);
            assert!(!r.over_cap && !r.duplicate && !r.overlap_conflict);
        }
        assert_eq!(s.buffered_bytes(), n as usize - 1);
        assert!(s.chunk_count() <= n as usize / ABSORB_MAX + 2, "{}", s.chunk_count());
        // A conflicting byte in the middle of the adjacent chunks.
        assert!(s.segment(1 + 100_000, &[byte(100_000) ^ 1], &mut b).overlap_conflict);
        // A segment straddling the boundary between two adjacent chunks (same bytes).
        let mid: Vec<u8> = (4000..9000).map(byte).collect();
        let r = s.segment(1 + 4000, &mid, &mut b);
        assert!(r.duplicate && !r.overlap_conflict);
        let r = s.segment(1, &[byte(0)], &mut b);
        assert_eq!(r.delivered, n as usize);
        let want: Vec<u8> = (0..n).map(byte).collect();
        assert_eq!(s.read(), &want[..]);
        assert_eq!(b.remaining, BIG);
        assert_eq!(s.chunk_count(), 0);
    }

    #[test]
    fn gap_fill_between_large_adjacent_chunks() {
        let mut b = ByteBudget::new(BIG);
        let mut s = syn(0);
        let big = vec![7u8; ABSORB_MAX + 10];
        let base = 1000u32;
        s.segment(base, &big, &mut b);
        let after = base + big.len() as u32 + 5;
        s.segment(after, &big, &mut b);
        // Fill the 5-byte gap: the left chunk grows in place, the long right one stays separate.
        let r = s.segment(base + big.len() as u32 - 2, &[7u8; 9], &mut b);
        assert!(!r.overlap_conflict && !r.duplicate && !r.over_cap);
        assert_eq!(s.chunk_count(), 2);
        assert_eq!(s.buffered_bytes(), 2 * big.len() + 5);
        let head = vec![7u8; base as usize - 1];
        let r = s.segment(1, &head, &mut b);
        assert_eq!(r.delivered, head.len() + 2 * big.len() + 5);
        assert!(s.read().iter().all(|&x| x == 7));
        assert_eq!(b.remaining, BIG);
    }

    #[test]
    fn conflict_history_on_consumed_data() {
        let mut b = ByteBudget::new(BIG);
        let mut s = syn(0);
        s.set_conflict_history(4);
        s.segment(1, b"abcdefgh", &mut b);
        assert_eq!(drain(&mut s), b"abcdefgh");
        // Last 4 consumed bytes are compared, older ones are not.
        assert!(s.segment(5, b"eXgh", &mut b).overlap_conflict);
        assert!(!s.segment(5, b"efgh", &mut b).overlap_conflict);
        assert!(!s.segment(1, b"XXXX", &mut b).overlap_conflict);
        let r = s.segment(3, b"cdeX", &mut b);
        assert!(r.overlap_conflict && r.duplicate);
        // Straddling the history and new data.
        let r = s.segment(7, b"gXij", &mut b);
        assert!(r.overlap_conflict);
        assert_eq!(r.delivered, 2);
        assert_eq!(s.read(), b"ij");
        // Memory stays bounded by history + unread.
        for k in 0..1000u32 {
            s.segment(11 + 10 * k, b"0123456789", &mut b);
            s.consume(usize::MAX);
            assert!(s.ready.len() <= 2 * (4 + 10));
        }
        s.set_conflict_history(0);
        assert!(s.ready.is_empty());
    }

    #[test]
    fn acknowledged_bytes_leave_the_history() {
        let mut b = ByteBudget::new(BIG);
        let mut s = syn(1000);
        s.set_conflict_history(16);
        // "abcdefgh" is seq 1001..1009; the receiver acknowledged up to "e" (1005)
        assert!(s.advance_in_order(1001, b"abcdefgh"));
        s.acked(1005);
        // a retransmission of acknowledged bytes is not compared (the receiver drops it)
        assert!(!s.segment(1001, b"XXXX", &mut b).overlap_conflict);
        // the unacknowledged ones still are
        assert!(s.segment(1005, b"eXgh", &mut b).overlap_conflict);
        assert!(!s.segment(1003, b"cdefgh", &mut b).overlap_conflict, "acked part skipped, rest equal");
        assert!(s.segment(1003, b"cdeXgh", &mut b).overlap_conflict);
        // an old or a wild acknowledgement changes nothing
        s.acked(1002);
        s.acked(1009u32.wrapping_add((1 << 30) + 1));
        assert!(s.segment(1005, b"Xfgh", &mut b).overlap_conflict);
        // everything acknowledged: nothing left to compare; later bytes are kept again
        s.acked(1009);
        assert!(!s.segment(1005, b"XXXX", &mut b).overlap_conflict);
        assert!(s.advance_in_order(1009, b"ijkl"));
        assert!(s.segment(1009, b"iXkl", &mut b).overlap_conflict);
        // unread (delivered, not consumed) bytes are the reader's: never forgotten
        s.segment(1013, b"mnop", &mut b);
        s.acked(1017);
        assert!(s.segment(1013, b"mXop", &mut b).overlap_conflict);
        assert_eq!(s.read(), b"mnop");
    }

    #[test]
    fn history_ring_keeps_the_last_bytes_across_growth_and_wrap() {
        // Pushes of every size through a ring of 10000 bytes (it grows from 4096 and
        // wraps), with acknowledgements now and then: the bytes held are always the last
        // unacknowledged ones, at most `cap`.
        let mut rng = XorShift(0x1234_5678);
        let mut h = History { cap: 10_000, ..History::default() };
        let mut model: Vec<u8> = Vec::new();
        for round in 0..3000u32 {
            let n = (rng.next() % 3000) as usize;
            let bytes: Vec<u8> = (0..n).map(|k| (round as usize * 7 + k) as u8).collect();
            h.push(&bytes);
            model.extend_from_slice(&bytes);
            let keep = model.len().min(10_000);
            model.drain(..model.len() - keep);
            if rng.next() % 5 == 0 {
                let k = (rng.next() as usize) % (model.len() + 1);
                h.forget_oldest(k);
                model.drain(..k);
            }
            let (a, b) = h.slices();
            assert_eq!([a, b].concat(), model, "round {round}");
            assert!(h.buf.len() <= h.size && h.size <= 10_000);
        }
    }

    #[test]
    fn recycled_reassembler_behaves_like_a_new_one() {
        let mut b = ByteBudget::new(BIG);
        let mut s = syn(100);
        s.set_conflict_history(8);
        s.segment(101, b"abcdefgh", &mut b);
        assert_eq!(drain(&mut s), b"abcdefgh");
        s.segment(120, b"later", &mut b); // out of order: charged to the budget
        assert!(s.on_fin(130));
        assert!(b.remaining < BIG);
        s.recycle(cfg(BIG), &mut b);
        assert_eq!(b.remaining, BIG, "buffered bytes given back");
        assert_eq!((s.next_seq(), s.buffered_bytes(), s.chunk_count(), s.delivered_total()), (None, 0, 0, 0));
        assert!(!s.is_finished() && s.read().is_empty());
        // Same answers as a fresh reassembler for a new stream (another ISN), including
        // the history: the old stream's bytes are not compared.
        let mut fresh = StreamReassembler::new(cfg(BIG));
        fresh.set_conflict_history(8);
        for r in [&mut s, &mut fresh] {
            assert!(r.on_syn(5000));
            let a = r.segment(5001, b"ABCDEFGH", &mut b);
            assert_eq!((a.delivered, a.overlap_conflict), (8, false));
            assert_eq!(drain(r), b"ABCDEFGH");
            assert!(r.segment(5005, b"EXGH", &mut b).overlap_conflict);
            assert!(!r.segment(5005, b"EFGH", &mut b).overlap_conflict);
            assert_eq!(r.next_seq(), Some(5009));
        }
        assert_eq!(b.remaining, BIG);
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn randomized_reassembly() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for round in 0..200 {
            let len = 1 + rng.below(3000) as usize;
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Near the wrap point half of the time.
            let isn = if round % 2 == 0 { u32::MAX - rng.below(2000) as u32 } else { rng.next() as u32 };
            // Cut into random segments.
            let mut segs: Vec<(usize, usize)> = Vec::new();
            let mut p = 0;
            while p < len {
                let n = (1 + rng.below(200) as usize).min(len - p);
                segs.push((p, n));
                p += n;
            }
            // Random duplicates and random overlapping re-cuts (same bytes).
            let extra = rng.below(segs.len() as u64 + 1) as usize;
            for _ in 0..extra {
                let a = rng.below(len as u64) as usize;
                let n = (1 + rng.below(300) as usize).min(len - a);
                segs.push((a, n));
            }
            // Shuffle (Fisher-Yates).
            for i in (1..segs.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                segs.swap(i, j);
            }
            let mut budget = ByteBudget::new(1 << 20);
            let mut s = StreamReassembler::new(cfg(1 << 20));
            s.on_syn(isn);
            let mut out = Vec::new();
            let mut delivered = 0;
            for &(a, n) in &segs {
                let seq = isn.wrapping_add(1).wrapping_add(a as u32);
                let r = s.segment(seq, &data[a..a + n], &mut budget);
                assert!(!r.overlap_conflict && !r.over_cap && !r.out_of_window, "round {round}");
                delivered += r.delivered;
                // Read at random moments.
                if rng.below(3) == 0 {
                    s.take(&mut out);
                }
            }
            s.take(&mut out);
            assert_eq!(delivered, len, "round {round}");
            assert_eq!(out, data, "round {round}");
            assert_eq!(s.buffered_bytes(), 0);
            assert_eq!(budget.remaining, 1 << 20);
            assert_eq!(s.next_seq(), Some(isn.wrapping_add(1).wrapping_add(len as u32)));
            assert!(s.on_fin(isn.wrapping_add(1).wrapping_add(len as u32)));
            assert!(s.is_finished());
        }
    }

    #[test]
    fn randomized_large_with_caps_and_retransmissions() {
        // Larger streams (adjacent chunks beyond ABSORB_MAX), a small per-flow cap and a shared
        // worker budget: segments refused for over_cap are retransmitted later (as TCP would);
        // the stream still reassembles exactly and the budget comes back whole.
        let mut rng = XorShift(0xdead_beef_cafe_f00d);
        let mut budget = ByteBudget::new(48 * 1024);
        let mut total_refused = 0;
        for round in 0..40 {
            let len = 1 + rng.below(60_000) as usize;
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let isn = u32::MAX - rng.below(30_000) as u32;
            let mut pending: Vec<(usize, usize)> = Vec::new();
            let mut p = 0;
            while p < len {
                let n = (1 + rng.below(1460) as usize).min(len - p);
                pending.push((p, n));
                p += n;
            }
            let mut s = StreamReassembler::new(cfg(32 * 1024));
            s.on_syn(isn);
            // A second flow of the same worker holding part of the budget for a while.
            let mut other = StreamReassembler::new(cfg(32 * 1024));
            other.pickup(rng.next() as u32);
            let o = other.next_seq().unwrap_or(0);
            other.segment(o.wrapping_add(10), &[1u8; 8000], &mut budget);
            let mut out = Vec::new();
            let mut refused = 0usize;
            let mut passes = 0;
            while !pending.is_empty() {
                passes += 1;
                assert!(passes < 10_000, "round {round}: no progress");
                for i in (1..pending.len()).rev() {
                    let j = rng.below(i as u64 + 1) as usize;
                    pending.swap(i, j);
                }
                let mut next = Vec::new();
                for &(a, n) in &pending {
                    let seq = isn.wrapping_add(1).wrapping_add(a as u32);
                    let r = s.segment(seq, &data[a..a + n], &mut budget);
                    assert!(!r.overlap_conflict && !r.out_of_window, "round {round}");
                    if r.over_cap {
                        refused += 1;
                        next.push((a, n));
                    } else if rng.below(8) == 0 {
                        next.push((a, n)); // spurious retransmission
                    }
                    assert!(s.buffered_bytes() <= 32 * 1024);
                    if rng.below(2) == 0 {
                        s.take(&mut out);
                    }
                }
                if passes == 2 {
                    other.release(&mut budget);
                }
                // Drop what is already fully delivered.
                let done = s.delivered_total() as usize;
                next.retain(|&(a, n)| a + n > done);
                pending = next;
            }
            s.take(&mut out);
            other.release(&mut budget);
            assert_eq!(out, data, "round {round} ({refused} refused)");
            assert_eq!(s.buffered_bytes(), 0);
            assert_eq!(budget.remaining, 48 * 1024, "round {round}");
            total_refused += refused;
        }
        assert!(total_refused > 100, "caps not exercised: {total_refused}");
    }

    #[test]
    fn randomized_arbitrary_inputs_keep_invariants() {
        // Arbitrary calls (any seq, sizes, FIN, SYN, pickup, reset, consume, history): no panic,
        // budget conserved, caps respected, chunks sorted and disjoint after next_off.
        let mut rng = XorShift(0x0bad_5eed_0bad_5eed);
        const TOTAL: usize = 20_000;
        let mut budget = ByteBudget::new(TOTAL);
        let mut flows: Vec<StreamReassembler> =
            (0..4).map(|k| StreamReassembler::new(cfg(1000 * (k + 1)))).collect();
        let buf: Vec<u8> = (0..5000).map(|_| rng.next() as u8).collect();
        for _ in 0..60_000 {
            let f = rng.below(flows.len() as u64) as usize;
            let s = &mut flows[f];
            let base = s.next_seq().unwrap_or(0);
            let seq = match rng.below(4) {
                0 => rng.next() as u32,
                1 => base.wrapping_add(rng.below(3000) as u32),
                2 => base.wrapping_sub(rng.below(3000) as u32),
                _ => base.wrapping_add((RECEIVE_WINDOW as u32).wrapping_sub(rng.below(4000) as u32)),
            };
            match rng.below(40) {
                0 => {
                    s.on_fin(seq);
                }
                1 => {
                    s.on_syn(seq);
                }
                2 => {
                    s.pickup(seq);
                }
                3 => s.reset(&mut budget),
                4 => s.release(&mut budget),
                5 => s.set_conflict_history(rng.below(100) as usize),
                6..=12 => s.consume(rng.below(3000) as usize),
                _ => {
                    let a = rng.below(buf.len() as u64) as usize;
                    let n = rng.below((buf.len() - a) as u64 + 1) as usize;
                    let r = s.segment(seq, &buf[a..a + n], &mut budget);
                    assert!(r.delivered <= s.read().len());
                }
            }
            assert!(s.buffered_bytes() <= s.config().max_buffered_per_flow);
            let held: usize = flows.iter().map(|s| s.buffered_bytes()).sum();
            assert_eq!(held + budget.remaining, TOTAL);
            for s in &flows {
                let mut prev = s.next_off + 1;
                for c in &s.chunks {
                    assert!(!c.data.is_empty() && c.off >= prev);
                    prev = c.end();
                }
                assert_eq!(s.chunks.iter().map(|c| c.data.len()).sum::<usize>(), s.buffered);
                assert!(s.chunks.len() <= MAX_CHUNKS);
            }
        }
        for s in &mut flows {
            s.reset(&mut budget);
        }
        assert_eq!(budget.remaining, TOTAL);
    }

    #[test]
    fn randomized_conflicts_first_data_wins() {
        // Overlapping segments carrying different bytes: the result is the first bytes received
        // for each offset, and a conflict is reported iff a different byte was offered for an
        // offset still held (not yet consumed).
        let mut rng = XorShift(0x1234_5678_9abc_def1);
        for round in 0..300 {
            let history = [0usize, 1, 64, 100_000][round as usize % 4];
            let len = 1 + rng.below(500) as usize;
            let mut segs: Vec<(usize, Vec<u8>)> = Vec::new();
            let mut p = 0;
            while p < len {
                let n = (1 + rng.below(60) as usize).min(len - p);
                segs.push((p, (0..n).map(|_| rng.below(4) as u8).collect()));
                p += n;
            }
            for _ in 0..rng.below(20) {
                let a = rng.below(len as u64) as usize;
                let n = (1 + rng.below(80) as usize).min(len - a);
                segs.push((a, (0..n).map(|_| rng.below(4) as u8).collect()));
            }
            for i in (1..segs.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                segs.swap(i, j);
            }
            // Model: first byte seen per offset.
            let mut model: Vec<Option<u8>> = vec![None; len];
            let mut budget = ByteBudget::new(1 << 16);
            let mut s = StreamReassembler::new(cfg(1 << 16));
            s.pickup(round * 7919);
            s.set_conflict_history(history);
            let mut out = Vec::new();
            for (a, bytes) in &segs {
                // Offsets already consumed cannot be compared.
                let consumed = out.len();
                let mut expect_conflict = false;
                for (k, &byte) in bytes.iter().enumerate() {
                    match model[a + k] {
                        Some(m) if a + k + history >= consumed && m != byte => {
                            expect_conflict = true
                        }
                        Some(_) => {}
                        None => model[a + k] = Some(byte),
                    }
                }
                let r = s.segment((round * 7919).wrapping_add(*a as u32), bytes, &mut budget);
                assert_eq!(r.overlap_conflict, expect_conflict, "round {round}");
                if rng.below(2) == 0 {
                    s.take(&mut out);
                }
            }
            s.take(&mut out);
            let want: Vec<u8> = model.iter().map(|b| b.unwrap_or(0xff)).collect();
            assert_eq!(out, want, "round {round}");
            assert_eq!(budget.remaining, 1 << 16);
        }
    }
}
