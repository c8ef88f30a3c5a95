//! Software dispatch: without trusted symmetric RSS, a worker that receives a packet
//! of a flow another worker owns hands it over on that worker's ring (`rte_ring`,
//! multi-producer single-consumer), so that both directions of a flow always meet
//! the same flow table.
//!
//! A small packet is handed over as a copy of its bytes (with its port and rx time) in
//! the owner's inbox, a bounded queue of fixed slots, and its mbuf is freed at once by
//! the worker that received it: the owner reads one or two cache lines that the
//! hardware prefetcher streams (the slots are consecutive), then builds the packet in
//! an mbuf of its own cache. Handing over the mbuf instead costs its two header lines,
//! its data line and, once it is recycled by the other core, as many lines again: on
//! a VM where a line takes ~0.5 us between cores that was most of the time. Larger
//! packets (and chained ones) go over as mbufs, in the same queue so that a flow's
//! packets keep their order.
//!
//! Packets go to the owner's inbox as they are classified; those that find it full
//! are staged, in order, and handed over later. When an inbox has no room:
//! - `wait` (input that can wait: a capture file): the packets stay staged and the
//!   worker reads no rx queue until they are handed over (it keeps serving its own
//!   ring meanwhile, so two workers waiting on each other both make progress): the
//!   input backs up, nothing is lost;
//! - `drop` (live input): they are dropped, counted `dispatch_ring_full`, and the
//!   worker keeps reading, so that its own flows do not suffer for a busy neighbour.
use crate::dpdk::{Mbuf, MbufBurst, PoolRef, Ring, BURST};
use crate::stats::{Counters, DropReason};
use crossbeam_queue::ArrayQueue;
use std::collections::VecDeque;
use std::sync::Arc;

/// Bytes of a packet handed over as a copy at most: an inbox slot (its sequence number
/// and a `Handoff`) is then two cache lines, and a minimum-size frame (60 bytes) fits.
pub const COPY_MAX: usize = 100;
const _: () = assert!(std::mem::size_of::<Handoff>() + 8 <= 128);

/// A packet on its way to the worker that owns its flow.
pub enum Handoff {
    Copied(Copied),
    Mbuf(Mbuf),
}

pub struct Copied {
    /// The driver's rx timestamp (0: none).
    ts: u64,
    port: u16,
    len: u16,
    bytes: [u8; COPY_MAX],
}

impl Handoff {
    /// A copy of a small single-segment packet (its mbuf freed here), else the mbuf.
    #[inline(always)]
    fn of(m: Mbuf) -> Handoff {
        let data = m.data();
        if data.len() > COPY_MAX || !m.is_single_segment() {
            return Handoff::Mbuf(m);
        }
        let mut c = Copied { ts: m.rx_timestamp().unwrap_or(0), port: m.port(), len: data.len() as u16, bytes: [0; COPY_MAX] };
        c.bytes[..data.len()].copy_from_slice(data);
        Handoff::Copied(c)
    }

    /// The packet, in an mbuf of this worker's (None: the pool is exhausted).
    #[inline(always)]
    fn into_mbuf(self, pool: PoolRef) -> Option<Mbuf> {
        match self {
            Handoff::Mbuf(m) => Some(m),
            Handoff::Copied(c) => {
                let mut m = pool.alloc_with(&c.bytes[..c.len as usize], c.port)?;
                if c.ts != 0 {
                    m.set_rx_timestamp(c.ts);
                }
                Some(m)
            }
        }
    }
}

/// Every worker's inbox, indexed by worker.
pub type Inboxes = Arc<Vec<ArrayQueue<Handoff>>>;

/// One inbox per worker, holding `capacity` packets.
pub fn inboxes(workers: usize, capacity: u32) -> Inboxes {
    Arc::new((0..workers).map(|_| ArrayQueue::new(capacity.max(BURST as u32) as usize)).collect())
}

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
    /// Reassembled datagrams and fragments travel on these (see `crate::fragstage`).
    rings: Arc<Vec<Ring>>,
    inboxes: Inboxes,
    me: usize,
    /// Per destination worker: packets waiting for room in its inbox (a burst at most).
    staged: Vec<VecDeque<Handoff>>,
    when_full: WhenFull,
    /// Where packets handed over as copies are rebuilt.
    pool: PoolRef,
}

impl Dispatch {
    pub fn new(rings: Arc<Vec<Ring>>, inboxes: Inboxes, me: usize, when_full: WhenFull, pool: PoolRef) -> Dispatch {
        let staged = (0..rings.len()).map(|_| VecDeque::with_capacity(BURST)).collect();
        Dispatch { rings, inboxes, me, staged, when_full, pool }
    }

    pub fn workers(&self) -> usize {
        self.rings.len()
    }

    /// The worker that owns a packet with this flow hash (None: no flow, decided here).
    #[inline(always)]
    pub fn owner(&self, hash: Option<u64>) -> usize {
        hash.map_or(self.me, |h| owner_of(h, self.rings.len()))
    }

    /// This worker's inbound ring (reassembled datagrams and fragments).
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
    /// full one is sent at once, as a full inbox would be handled.
    /// (Straight into the inbox while nothing waits before it: the owner can start on it.)
    #[inline(always)]
    pub fn stage(&mut self, owner: usize, m: Mbuf, c: &mut Counters) {
        let h = Handoff::of(m);
        let h = if self.staged[owner].is_empty() {
            match self.inboxes[owner].push(h) {
                Ok(()) => {
                    c.dispatched_out += 1;
                    return;
                }
                Err(h) => h,
            }
        } else {
            h
        };
        if self.staged[owner].len() >= BURST {
            self.send(owner, c, true);
        }
        self.staged[owner].push_back(h);
    }

    /// Takes up to `BURST - buf.len()` packets from this worker's inbox into `buf`
    /// (a copy that finds no mbuf is dropped, counted). Returns how many were taken.
    #[inline]
    pub fn receive(&self, buf: &mut MbufBurst, c: &mut Counters) -> usize {
        let inbox = &self.inboxes[self.me];
        let mut n = 0;
        while !buf.is_full() {
            let Some(h) = inbox.pop() else { break };
            n += 1;
            match h.into_mbuf(self.pool) {
                Some(m) => {
                    let _ = buf.push(m);
                }
                None => c.drop(DropReason::DispatchNoBuffer),
            }
        }
        n
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

    /// Hands stage `w` over to its inbox, in order; what does not fit is dropped with
    /// `Drop` (or `force`), kept with `Wait`. True when the stage is empty.
    fn send(&mut self, w: usize, c: &mut Counters, force: bool) -> bool {
        let inbox = &self.inboxes[w];
        let stage = &mut self.staged[w];
        while let Some(h) = stage.pop_front() {
            if let Err(h) = inbox.push(h) {
                stage.push_front(h);
                break;
            }
            c.dispatched_out += 1;
        }
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
        self.staged.iter().map(VecDeque::len).sum()
    }

    /// At stop, what could not be handed over in time: dropped, counted.
    pub fn drop_staged(&mut self, c: &mut Counters) {
        for s in &mut self.staged {
            c.dropped[DropReason::DispatchRingFull as usize] += s.len() as u64;
            s.clear();
        }
    }
}
