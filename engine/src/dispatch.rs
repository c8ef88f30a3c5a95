//! Software dispatch: without trusted symmetric RSS, a worker that receives a packet
//! of a flow another worker owns hands it over on that worker's ring (`rte_ring`,
//! multi-producer single-consumer), so that both directions of a flow always meet
//! the same flow table.
//!
//! Packets for each destination are staged during an rx burst and enqueued together
//! after it (one ring operation per destination per burst). When a ring has no room:
//! - `wait` (input that can wait: a capture file): the packets stay staged and the
//!   worker reads no rx queue until they are handed over (it keeps serving its own
//!   ring meanwhile, so two workers waiting on each other both make progress): the
//!   input backs up, nothing is lost;
//! - `drop` (live input): they are dropped, counted `dispatch_ring_full`, and the
//!   worker keeps reading, so that its own flows do not suffer for a busy neighbour.
use crate::dpdk::{Mbuf, MbufBurst, Ring};
use crate::stats::{Counters, DropReason};
use std::sync::Arc;

/// Worker that owns a flow hash: fast range reduction of the low 32 bits (no
/// division); the flow table takes its buckets from the high half.
#[inline(always)]
pub fn owner_of(hash: u64, workers: usize) -> usize {
    (((hash & 0xffff_ffff) * workers as u64) >> 32) as usize
}

/// What a worker does with packets for a worker whose ring is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Keep them and stop reading the input until they are handed over.
    Wait,
    /// Drop them (counted).
    Drop,
}

/// One worker's side of the software dispatcher.
pub struct Dispatch {
    rings: Arc<Vec<Ring>>,
    me: usize,
    /// Per destination worker: packets waiting to be enqueued on its ring.
    staged: Vec<MbufBurst>,
    when_full: WhenFull,
    /// Packets this worker lets wait in another's ring at most (the rest of the ring is
    /// kept for reassembled datagrams, which cannot wait, and bounds the mbufs in flight).
    limit: u32,
}

impl Dispatch {
    pub fn new(rings: Arc<Vec<Ring>>, me: usize, when_full: WhenFull, limit: u32) -> Dispatch {
        let staged = (0..rings.len()).map(|_| MbufBurst::new()).collect();
        Dispatch { rings, me, staged, when_full, limit: limit.max(1) }
    }

    pub fn workers(&self) -> usize {
        self.rings.len()
    }

    /// The worker that owns a packet with this flow hash (None: no flow, decided here).
    #[inline(always)]
    pub fn owner(&self, hash: Option<u64>) -> usize {
        hash.map_or(self.me, |h| owner_of(h, self.rings.len()))
    }

    /// This worker's inbound ring.
    #[inline(always)]
    pub fn inbound(&self) -> &Ring {
        &self.rings[self.me]
    }

    /// All the rings (the fragment stage hands reassembled datagrams over on them).
    pub fn rings(&self) -> &[Ring] {
        &self.rings
    }

    /// Stages a packet for worker `owner`. A burst never fills a stage (the input is
    /// read only when every stage is empty, and a burst is at most a stage), but a
    /// full one is sent at once, as a full ring would be handled.
    #[inline(always)]
    pub fn stage(&mut self, owner: usize, m: Mbuf, c: &mut Counters) {
        if let Err(m) = self.staged[owner].push(m) {
            self.send(owner, c, true);
            if self.staged[owner].push(m).is_err() {
                c.drop(DropReason::DispatchRingFull);
            }
        }
    }

    /// Enqueues every stage. Returns true when nothing is left staged, i.e. the worker
    /// may read its input (with `Drop`, always: what did not fit was dropped).
    #[inline]
    pub fn flush(&mut self, c: &mut Counters) -> bool {
        let mut clear = true;
        for w in 0..self.staged.len() {
            if !self.staged[w].is_empty() {
                clear &= self.send(w, c, false);
            }
        }
        clear
    }

    /// Enqueues stage `w` up to the limit; what is left is dropped with `Drop` (or
    /// `force`), kept with `Wait`. True when the stage is empty.
    fn send(&mut self, w: usize, c: &mut Counters, force: bool) -> bool {
        let ring = &self.rings[w];
        let stage = &mut self.staged[w];
        let room = self.limit.saturating_sub(ring.count()) as usize;
        let sent = ring.enqueue_at_most(stage, room);
        c.dispatched_out += sent as u64;
        if stage.is_empty() {
            return true;
        }
        if self.when_full == WhenFull::Drop || force {
            c.dropped[DropReason::DispatchRingFull as usize] += stage.len() as u64;
            stage.clear();
            return true;
        }
        false
    }

    /// Packets staged and not yet handed over.
    pub fn staged(&self) -> usize {
        self.staged.iter().map(MbufBurst::len).sum()
    }

    /// At stop, what could not be handed over in time: dropped, counted.
    pub fn drop_staged(&mut self, c: &mut Counters) {
        for s in &mut self.staged {
            c.dropped[DropReason::DispatchRingFull as usize] += s.len() as u64;
            s.clear();
        }
    }
}
