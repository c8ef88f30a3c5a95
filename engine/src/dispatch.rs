//! Software dispatch: without trusted symmetric RSS, a worker that receives a packet
//! of a flow another worker owns hands it over to that worker, so that both directions
//! of a flow always meet the same flow table.
//!
//! Every ordered pair of workers has a [`Channel`]: a single-producer single-consumer
//! ring of 8-byte words. A small packet travels as a copy of its bytes (with its port
//! and rx time) packed after the previous one (a 60-byte frame takes 80 bytes), and the
//! worker that received it frees its mbuf with the rest of its burst; the owner builds
//! the packet in an mbuf of its own cache. Moving cache lines between cores is what
//! software dispatch costs (on the development VM a line takes 0.5-0.9 us between the
//! cores, and under the datapath's own memory traffic a bare 80-byte entry costs both
//! sides ~25 ns together), so: the producer publishes many entries at once (one store of
//! its write position for up to [`PUBLISH_ENTRIES`]) and reads the consumer's position
//! only when the ring looks full; it asks for the lines it will write next ahead of time;
//! the consumer reads the write position once per poll, then streams consecutive lines.
//! (Handing over the mbuf instead costs its two header lines, its data line and, once it
//! is recycled by the other core, as many lines again.) Larger packets (and chained
//! ones) go over as mbufs on a queue beside the ring, a marker entry keeping their place
//! in the flow's order.
//!
//! Packets go to the owner's channel as they are classified; those that find it full
//! are staged, in order, and handed over later. When a channel has no room:
//! - `wait` (input that can wait: a capture file): the packets stay staged and the
//!   worker reads no rx queue until they are handed over (it keeps serving its own
//!   channels meanwhile, so two workers waiting on each other both make progress): the
//!   input backs up, nothing is lost;
//! - `drop` (live input): they are dropped, counted `dispatch_ring_full`, and the
//!   worker keeps reading, so that its own flows do not suffer for a busy neighbour.
//!
//! Reassembled datagrams and fragments travel on an `rte_ring` per worker (see
//! `crate::fragstage`).
use crate::dpdk::{self, Mbuf, MbufBurst, PoolRef, Ring, BURST};
use crate::stats::{Counters, DropReason};
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

/// Bytes of a packet handed over as a copy at most (larger ones go as mbufs).
pub const COPY_MAX: usize = 128;
/// An entry: a header word (length, port, kind), the rx time, then the bytes.
const HEADER_WORDS: usize = 2;
/// Ring words per packet a channel is sized for (a copy of up to 112 bytes and its
/// header: more of smaller packets fit, fewer of larger ones).
const WORDS_PER_PACKET: usize = 16;
const KIND_COPY: u64 = 0;
/// Entries a worker writes for another before it publishes them ([`Dispatch::flush`]).
const PUBLISH_ENTRIES: usize = 64;
/// Flushes a written entry waits at most before it is published.
const PUBLISH_ROUNDS: usize = 4;
/// Words of a channel prefetched for writing past the last publication.
const PREFETCH_AHEAD_WORDS: usize = 24 * 8;
/// The packet is the next mbuf of the channel's mbuf queue.
const KIND_MBUF: u64 = 1;

/// One worker's packets for another: a single-producer single-consumer ring of words.
pub struct Channel {
    /// Words published by the producer (a running count; the ring index is `& mask`).
    head: CachePadded<AtomicUsize>,
    /// Words the consumer is done with.
    tail: CachePadded<AtomicUsize>,
    words: Box<[AtomicU64]>,
    mask: usize,
    /// Packets handed over as mbufs, in the order of their marker entries.
    mbufs: ArrayQueue<Mbuf>,
}

impl Channel {
    fn new(packets: usize) -> Channel {
        let n = (packets.max(BURST) * WORDS_PER_PACKET).next_power_of_two();
        Channel {
            head: CachePadded::new(AtomicUsize::new(0)),
            tail: CachePadded::new(AtomicUsize::new(0)),
            words: (0..n).map(|_| AtomicU64::new(0)).collect(),
            mask: n - 1,
            mbufs: ArrayQueue::new(packets.max(BURST)),
        }
    }

    #[inline(always)]
    fn word(&self, at: usize) -> &AtomicU64 {
        &self.words[at & self.mask]
    }
}

/// The channels between every pair of workers: `[from * workers + to]` (those from a
/// worker to itself are not used).
pub type Channels = Arc<Vec<Channel>>;

/// Channels for `workers` workers, each holding about `packets` packets (see
/// `WORDS_PER_PACKET`) and `packets` mbufs.
pub fn channels(workers: usize, packets: u32) -> Channels {
    Arc::new((0..workers * workers).map(|i| Channel::new(if i / workers == i % workers { 0 } else { packets as usize })).collect())
}

/// The worker a flow hash designates: fast range reduction of the low 32 bits (no
/// division); the flow table takes its buckets from the high half.
#[inline(always)]
pub fn owner_of(hash: u64, workers: usize) -> usize {
    (((hash & 0xffff_ffff) * workers as u64) >> 32) as usize
}

/// Bytes of the owner table. It is read for every packet of a flow its worker does not
/// hold (new flows, flows of other workers), so its size is fixed (well within a core's
/// cache); the fewer workers, the narrower a slot and the more slots it
/// holds: 2 bits for up to 3 workers (8 Mi slots), 4 bits for up to 15 (4 Mi), 8 bits
/// for up to 255 (2 Mi). More slots, fewer flows that meet one another claimed (each of
/// those is handed over for its life: 2 workers on 64k flows, 1 MiB -> 2 MiB halved them
/// and gained 5%).
const OWNER_BYTES: usize = 2 << 20;
/// Claims a worker may hold above its share before it claims by hash, when every worker
/// reads an input of its own: they start together, but their first bursts are not read
/// at the same time, and a worker's first flows should stay its own.
const CLAIM_SLACK: u64 = 512;
/// The same when some workers read no input (hakapcap, a single-queue device): the
/// readers make every claim, and a few hundred flows must still be shared out.
const CLAIM_SLACK_FEW_READERS: u64 = 32;
/// When every worker reads: claims a worker makes for itself while another has not read
/// a packet yet (workers do not start reading at the same instant, and a few
/// milliseconds are enough to claim every flow of a queue). Past it, a queue that
/// carries nothing does not keep the others' flows where they were seen.
const CLAIM_ALONE: u64 = 1 << 16;
/// Workers the owner table can name (8-bit slots, 0 = unclaimed).
pub const MAX_WORKERS: usize = 255;

/// Which worker owns the flows of each hash slot. The first worker that receives a packet
/// of a slot claims it: for itself while it holds at most 1/8 more than an even share of
/// the claims, else for the worker the hash designates ([`owner_of`]). When every worker
/// reads, a worker claims by hash only when it is over its share both of all the claims
/// and of those made since every worker read its first packet (before, or after
/// [`CLAIM_ALONE`] claims of one alone, a worker claims for itself): a worker that
/// started first is not ahead for the rest of the run (its claims since are even), and
/// one that started late, after the others had claimed their queues' flows, keeps the
/// flows of its own queue too (its share of all the claims is low). A claim never
/// changes, so every packet of a flow, both ways, meets one flow table. When the input
/// already delivers each flow on one queue (a capture per queue split by flow, AF_PACKET
/// fanout by flow, RSS), every worker claims the flows of its own queues and hands over
/// only those of slots another flow claimed first; when the two directions of a flow
/// come on different queues (ports of a bump in the wire, asymmetric RSS), the one not
/// seen first is handed over, as with a dispatch by hash, and the balance rule keeps
/// the workers' shares even.
pub struct OwnerTable {
    /// Slots packed into bytes, 1 << (3 - `slot_bits_log2`) per byte; a slot holds 0
    /// (unclaimed) or the owner + 1.
    bytes: Box<[AtomicU8]>,
    /// log2 of a slot's width in bits: 1, 2 or 3 (2, 4 or 8 bits).
    slot_bits_log2: u32,
    /// Slots - 1.
    slot_mask: usize,
    /// Slots claimed for each worker.
    claims: Vec<CachePadded<AtomicU64>>,
    /// [`CLAIM_SLACK`] or [`CLAIM_SLACK_FEW_READERS`].
    slack: u64,
    /// Every worker has rx queues of its own.
    every_worker_reads: bool,
    /// Workers that read a packet ([`OwnerTable::started`], written once each); all of
    /// them: the claims each held then are in `baseline`.
    started: Vec<AtomicBool>,
    all_started: AtomicBool,
    baseline: Vec<AtomicU64>,
}

/// The owner table shared by the workers.
pub type Owners = Arc<OwnerTable>;

impl OwnerTable {
    /// A table for `workers` workers (at most [`MAX_WORKERS`]); `every_worker_reads`: each
    /// has rx queues of its own (else the readers share the flows out at once).
    pub fn new(workers: usize, every_worker_reads: bool) -> Owners {
        assert!((1..=MAX_WORKERS).contains(&workers), "owner table: {workers} workers (checked at start)");
        let slot_bits_log2 = match workers {
            1..=3 => 1,
            4..=15 => 2,
            _ => 3,
        };
        Arc::new(OwnerTable {
            bytes: (0..OWNER_BYTES).map(|_| AtomicU8::new(0)).collect(),
            slot_bits_log2,
            slot_mask: (OWNER_BYTES << (3 - slot_bits_log2)) - 1,
            claims: (0..workers).map(|_| CachePadded::new(AtomicU64::new(0))).collect(),
            slack: if every_worker_reads { CLAIM_SLACK } else { CLAIM_SLACK_FEW_READERS },
            every_worker_reads,
            started: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            all_started: AtomicBool::new(false),
            baseline: (0..workers).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// The byte that holds the slot of `hash`, and the slot's shift in it.
    #[inline(always)]
    fn slot(&self, hash: u64) -> (&AtomicU8, u32) {
        let slot = hash as usize & self.slot_mask;
        let per_byte_log2 = 3 - self.slot_bits_log2;
        let shift = ((slot & ((1 << per_byte_log2) - 1)) as u32) << self.slot_bits_log2;
        (&self.bytes[slot >> per_byte_log2], shift)
    }

    /// The mask of a slot's bits (before its shift).
    #[inline(always)]
    fn slot_mask_bits(&self) -> u8 {
        (((1u32 << (1 << self.slot_bits_log2)) - 1) & 0xff) as u8
    }

    /// The worker that owns flow hash `hash`, claimed now if no one has (by `me`, the
    /// worker asking).
    #[inline(always)]
    pub fn owner(&self, hash: u64, me: usize) -> usize {
        let (byte, shift) = self.slot(hash);
        match (byte.load(Ordering::Relaxed) >> shift) & self.slot_mask_bits() {
            0 => self.claim(hash, me),
            v => v as usize - 1,
        }
    }

    /// Worker `me` read its first packet (called once per worker, when every worker reads).
    #[cold]
    pub fn started(&self, me: usize) {
        self.started[me].store(true, Ordering::Relaxed);
        if self.started.iter().all(|s| s.load(Ordering::Relaxed))
            && self.all_started.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            // (the claims of the other workers move meanwhile: a few claims either way)
            for (b, c) in self.baseline.iter().zip(&self.claims) {
                b.store(c.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
    }

    #[cold]
    fn claim(&self, hash: u64, me: usize) -> usize {
        let n = self.claims.len() as u64;
        let within = |mine: u64, total: u64| mine * n <= total + total / 8 + self.slack;
        let all = |w: usize| self.claims[w].load(Ordering::Relaxed);
        let since = |w: usize| all(w).saturating_sub(self.baseline[w].load(Ordering::Relaxed));
        let mine_all = all(me);
        let within_all = within(mine_all, (0..n as usize).map(all).sum());
        let keep = if self.every_worker_reads {
            let alone = !self.all_started.load(Ordering::Acquire) && mine_all < CLAIM_ALONE;
            alone || within_all || within(since(me), (0..n as usize).map(since).sum())
        } else {
            within_all
        };
        let want = if keep { me } else { owner_of(hash, n as usize) };
        let (byte, shift) = self.slot(hash);
        let mask = self.slot_mask_bits();
        let mut cur = byte.load(Ordering::Relaxed);
        loop {
            let v = (cur >> shift) & mask;
            if v != 0 {
                // (claimed meanwhile by another worker)
                return v as usize - 1;
            }
            // (the other slots of the byte are left as they are: a failed exchange
            // because one of them was claimed meanwhile is tried again)
            match byte.compare_exchange_weak(cur, cur | ((want as u8 + 1) << shift), Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    self.claims[want].fetch_add(1, Ordering::Relaxed);
                    return want;
                }
                Err(now) => cur = now,
            }
        }
    }
}

/// What a worker does with packets for a worker whose ring is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Keep them and stop reading the input until they are handed over.
    Wait,
    /// Drop them (counted).
    Drop,
}

/// The producer's side of one channel.
struct Out {
    /// Words written (published or not).
    write: usize,
    /// Words published.
    published: usize,
    /// The consumer's position when last read.
    tail_seen: usize,
    /// Entries written and not yet published.
    pending: usize,
    /// Flushes that left them unpublished.
    held: usize,
    /// Packets waiting for room, in order (a burst at most).
    staged: VecDeque<Mbuf>,
}

/// One worker's side of the software dispatcher.
pub struct Dispatch {
    /// Reassembled datagrams and fragments travel on these (see `crate::fragstage`).
    rings: Arc<Vec<Ring>>,
    channels: Channels,
    owners: Owners,
    me: usize,
    /// Per destination worker.
    out: Vec<Out>,
    /// Per source worker: words read from its channel to this worker.
    read: Vec<usize>,
    /// The source worker polled first next time (so that none is always served last).
    first: usize,
    when_full: WhenFull,
    /// Where packets handed over as copies are rebuilt.
    pool: PoolRef,
    /// Empty mbufs for them, taken from the pool a burst at a time.
    spare: MbufBurst,
    /// This worker read a packet ([`OwnerTable::started`] was told).
    reading: bool,
}

impl Dispatch {
    pub fn new(rings: Arc<Vec<Ring>>, channels: Channels, owners: Owners, me: usize, when_full: WhenFull, pool: PoolRef) -> Dispatch {
        let n = rings.len();
        debug_assert_eq!(channels.len(), n * n);
        let out = (0..n)
            .map(|_| Out { write: 0, published: 0, tail_seen: 0, pending: 0, held: 0, staged: VecDeque::with_capacity(BURST) })
            .collect();
        Dispatch { rings, channels, owners, me, out, read: vec![0; n], first: 0, when_full, pool, spare: MbufBurst::new(), reading: false }
    }

    pub fn workers(&self) -> usize {
        self.rings.len()
    }

    /// Called for every burst this worker reads (before its owners are asked): the first
    /// tells the owner table that this worker started.
    #[inline(always)]
    pub fn note_read(&mut self) {
        if !self.reading {
            self.reading = true;
            self.owners.started(self.me);
        }
    }

    /// The worker that owns a packet with this flow hash (None: no flow, decided here).
    #[inline(always)]
    pub fn owner(&self, hash: Option<u64>) -> usize {
        hash.map_or(self.me, |h| self.owners.owner(h, self.me))
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

    /// Hands the packet in slot `i` of `burst` over to worker `owner`. A packet copied
    /// into the channel stays in the burst, to be freed with it; any other leaves it.
    /// A burst never fills a stage (the input is read only when every stage is empty,
    /// and a burst is at most a stage), but a full one is sent at once, as a full
    /// channel would be handled.
    #[inline(always)]
    pub fn hand_over(&mut self, owner: usize, burst: &mut MbufBurst, i: usize, c: &mut Counters) {
        if self.out[owner].staged.is_empty() {
            let Some(m) = burst.get(i) else { return };
            match self.put_copy(owner, m) {
                Put::Done => {
                    c.dispatched_out += 1;
                    return;
                }
                Put::Full => {}
                Put::TooLarge => {
                    let Some(m) = burst.take(i) else { return };
                    match self.put_mbuf(owner, m) {
                        Ok(()) => {
                            c.dispatched_out += 1;
                            return;
                        }
                        Err(m) => {
                            self.stage(owner, m, c);
                            return;
                        }
                    }
                }
            }
        }
        if let Some(m) = burst.take(i) {
            self.stage(owner, m, c);
        }
    }

    /// Keeps `m` for `owner` until its channel has room.
    fn stage(&mut self, owner: usize, m: Mbuf, c: &mut Counters) {
        if self.out[owner].staged.len() >= BURST {
            self.send(owner, c, true);
        }
        self.out[owner].staged.push_back(m);
    }

    /// Whether `need` more words fit in the channel to `to`.
    #[inline(always)]
    fn room(&mut self, to: usize, need: usize) -> bool {
        let ch = &self.channels[self.me * self.out.len() + to];
        let o = &mut self.out[to];
        let size = ch.mask + 1;
        if o.write + need - o.tail_seen <= size {
            return true;
        }
        o.tail_seen = ch.tail.load(Ordering::Acquire);
        o.write + need - o.tail_seen <= size
    }

    /// Writes a copy of `m` into the channel to `to` (not yet published).
    #[inline(always)]
    fn put_copy(&mut self, to: usize, m: &Mbuf) -> Put {
        let data = m.data();
        let len = data.len();
        if len > COPY_MAX || !m.is_single_segment() {
            return Put::TooLarge;
        }
        let need = HEADER_WORDS + len.div_ceil(8);
        if !self.room(to, need) {
            return Put::Full;
        }
        let ch = &self.channels[self.me * self.out.len() + to];
        let at = self.out[to].write;
        ch.word(at).store(len as u64 | (m.port() as u64) << 16 | KIND_COPY << 32, Ordering::Relaxed);
        ch.word(at + 1).store(m.rx_timestamp().unwrap_or(0), Ordering::Relaxed);
        let mut p = at + HEADER_WORDS;
        let mut chunks = data.chunks_exact(8);
        for w in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            ch.word(p).store(u64::from_le_bytes(b), Ordering::Relaxed);
            p += 1;
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            // (byte by byte: a copy of a variable length would be a call)
            let mut v = 0u64;
            for (k, &b) in rest.iter().enumerate() {
                v |= (b as u64) << (8 * k);
            }
            ch.word(p).store(v, Ordering::Relaxed);
        }
        self.out[to].write = at + need;
        self.out[to].pending += 1;
        Put::Done
    }

    /// Hands `m` over as an mbuf, with a marker entry in the channel to `to`.
    fn put_mbuf(&mut self, to: usize, m: Mbuf) -> Result<(), Mbuf> {
        if !self.room(to, HEADER_WORDS) {
            return Err(m);
        }
        let ch = &self.channels[self.me * self.out.len() + to];
        ch.mbufs.push(m)?;
        let at = self.out[to].write;
        ch.word(at).store(KIND_MBUF << 32, Ordering::Relaxed);
        ch.word(at + 1).store(0, Ordering::Relaxed);
        self.out[to].write = at + HEADER_WORDS;
        self.out[to].pending += 1;
        Ok(())
    }

    /// Makes what was written to `to` visible to it.
    #[inline(always)]
    fn publish(&mut self, to: usize) {
        let n = self.out.len();
        let o = &mut self.out[to];
        let ch = &self.channels[self.me * n + to];
        o.pending = 0;
        o.held = 0;
        if o.write != o.published {
            o.published = o.write;
            ch.head.store(o.write, Ordering::Release);
        }
        if to != self.me {
            // (the lines the next entries go to, taken over from the consumer's cache while
            // the next bursts are read and classified)
            let mut p = o.write;
            while p < o.write + PREFETCH_AHEAD_WORDS {
                dpdk::prefetch_write(ch.word(p) as *const AtomicU64);
                p += 8;
            }
        }
    }

    /// Takes up to `BURST - buf.len()` packets handed over to this worker into `buf`
    /// (a copy that finds no mbuf is dropped, counted). Returns how many were taken.
    #[inline]
    pub fn receive(&mut self, buf: &mut MbufBurst, c: &mut Counters) -> usize {
        let n = self.out.len();
        let mut taken = 0;
        for k in 0..n {
            let from = (self.first + k) % n;
            if from == self.me || buf.is_full() {
                continue;
            }
            let ch = &self.channels[from * n + self.me];
            let head = ch.head.load(Ordering::Acquire);
            let mut read = self.read[from];
            if read == head {
                continue;
            }
            // (the lines of the entries ready, asked for at once: the transfers overlap)
            let end = head.min(read + BURST * WORDS_PER_PACKET);
            let mut p = read;
            while p < end {
                dpdk::prefetch(ch.word(p) as *const AtomicU64);
                p += 8;
            }
            while read != head && !buf.is_full() {
                let h = ch.word(read).load(Ordering::Relaxed);
                let len = (h & 0xffff) as usize;
                taken += 1;
                if h >> 32 & 0xff == KIND_MBUF {
                    read += HEADER_WORDS;
                    // (pushed before its marker was published: always there)
                    if let Some(m) = ch.mbufs.pop() {
                        let _ = buf.push(m);
                    }
                    continue;
                }
                let ts = ch.word(read + 1).load(Ordering::Relaxed);
                let at = read + HEADER_WORDS;
                read = at + len.div_ceil(8);
                if self.spare.is_empty() {
                    let _ = self.pool.alloc_bulk(&mut self.spare);
                }
                let Some(mut m) = self.spare.pop().or_else(|| self.pool.alloc()) else {
                    c.drop(DropReason::DispatchNoBuffer);
                    continue;
                };
                // (whole words, the last one into the tailroom, then the length cut: a
                // copy of a variable length would be a call)
                if !m.resize(len.next_multiple_of(8)) {
                    c.drop(DropReason::DispatchNoBuffer);
                    continue;
                }
                for (k, dst) in m.data_mut().chunks_exact_mut(8).enumerate() {
                    dst.copy_from_slice(&ch.word(at + k).load(Ordering::Relaxed).to_le_bytes());
                }
                m.resize(len);
                m.set_port((h >> 16 & 0xffff) as u16);
                if ts != 0 {
                    m.set_rx_timestamp(ts);
                }
                let _ = buf.push(m);
            }
            self.read[from] = read;
            ch.tail.store(read, Ordering::Release);
        }
        self.first = (self.first + 1) % n;
        taken
    }

    /// Hands every stage over and publishes what was written: all of it when `eager`,
    /// else for each worker once there are [`PUBLISH_ENTRIES`] entries or they waited
    /// [`PUBLISH_ROUNDS`] flushes (a line that synchronises both sides, and the partly
    /// written line at the end, cost per publication: fewer, larger batches cross
    /// faster). Returns true when nothing is left staged, i.e. the worker may read its
    /// input (with `Drop`, always: what did not fit was dropped).
    #[inline]
    pub fn flush(&mut self, c: &mut Counters, eager: bool) -> bool {
        let mut clear = true;
        for w in 0..self.out.len() {
            if !self.out[w].staged.is_empty() {
                clear &= self.send(w, c, false);
            }
            let o = &mut self.out[w];
            if o.pending == 0 {
                continue;
            }
            if eager || o.pending >= PUBLISH_ENTRIES || o.held >= PUBLISH_ROUNDS || !o.staged.is_empty() {
                self.publish(w);
            } else {
                o.held += 1;
            }
        }
        clear
    }

    /// Hands stage `w` over, in order; what does not fit is dropped with `Drop` (or
    /// `force`), kept with `Wait`. True when the stage is empty.
    fn send(&mut self, w: usize, c: &mut Counters, force: bool) -> bool {
        while let Some(m) = self.out[w].staged.pop_front() {
            let put = match self.put_copy(w, &m) {
                Put::Done => Ok(()),
                Put::Full => Err(m),
                Put::TooLarge => self.put_mbuf(w, m),
            };
            if let Err(m) = put {
                self.out[w].staged.push_front(m);
                break;
            }
            c.dispatched_out += 1;
        }
        let stage = &mut self.out[w].staged;
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
        self.out.iter().map(|o| o.staged.len()).sum()
    }

    /// At stop, what could not be handed over in time: dropped, counted.
    pub fn drop_staged(&mut self, c: &mut Counters) {
        for o in &mut self.out {
            c.dropped[DropReason::DispatchRingFull as usize] += o.staged.len() as u64;
            o.staged.clear();
        }
    }
}

/// How writing a copy into a channel went.
enum Put {
    Done,
    /// No room.
    Full,
    /// Not copied: handed over as an mbuf.
    TooLarge,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distinct flow hashes spread over the owner table's slots.
    fn hashes(n: u64) -> impl Iterator<Item = u64> {
        (0..n).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i << 40))
    }

    #[test]
    fn one_reader_shares_the_flows_out() {
        // hakapcap or a single-queue device: worker 0 sees every flow first.
        for flows in [100u64, 400, 3000, 60000] {
            let t = OwnerTable::new(2, false);
            let mut mine = 0;
            for h in hashes(flows) {
                mine += (t.owner(h, 0) == 0) as u64;
            }
            let share = mine as f64 / flows as f64;
            assert!(mine <= flows * 9 / 16 + CLAIM_SLACK_FEW_READERS, "{flows} flows: worker 0 kept {mine}");
            assert!(share > 0.45, "{flows} flows: worker 0 kept {mine}");
        }
    }

    #[test]
    fn flows_stay_with_the_worker_that_saw_them_first() {
        // Two queues, each with its own flows, read in turn: no flow changes hands, and
        // both directions (the same hash) find the owner the first packet made.
        let t = OwnerTable::new(2, true);
        let all: Vec<u64> = hashes(20000).collect();
        let mut moved = 0;
        for pair in all.chunks(2) {
            for (w, &h) in pair.iter().enumerate() {
                moved += (t.owner(h, w) != w) as u64;
            }
        }
        // (slots two flows share: the second one goes where the first did)
        assert!(moved < 200, "{moved} of 20000 flows claimed for the other worker");
        for pair in all.chunks(2) {
            for (w, &h) in pair.iter().enumerate() {
                assert_eq!(t.owner(h, 1 - w), t.owner(h, w), "the owner never changes");
            }
        }
    }

    #[test]
    fn slots_that_share_a_byte_keep_their_own_owners() {
        // 2-bit slots (2 workers: 4 per byte), 4-bit (5 workers: 2 per byte), 8-bit (40
        // workers): neighbouring hashes are neighbouring slots; each keeps the owner of
        // its first claim, whatever the others of its byte get.
        for workers in [2usize, 5, 40] {
            let t = OwnerTable::new(workers, true);
            let owners: Vec<usize> = (0..64u64).map(|h| t.owner(h, h as usize % workers)).collect();
            for (h, &o) in owners.iter().enumerate() {
                assert_eq!(o, h % workers, "{workers} workers: slot {h} claimed by its first asker");
                for w in 0..workers {
                    assert_eq!(t.owner(h as u64, w), o, "{workers} workers: slot {h} changed hands");
                }
            }
            // the whole width of the table is used: the last slot too
            let last = t.slot_mask as u64;
            assert_eq!(t.owner(last, workers - 1), workers - 1);
            assert_eq!(t.owner(last, 0), workers - 1);
        }
    }

    #[test]
    fn a_worker_ahead_claims_by_hash_past_its_share() {
        let t = OwnerTable::new(4, true);
        // (every worker has started)
        for w in 0..4 {
            t.started(w);
        }
        let flows = 8000u64;
        let mut per = [0u64; 4];
        for h in hashes(flows) {
            per[t.owner(h, 2)] += 1;
        }
        // at most 1/8 over an even share, the rest by hash
        assert!(per[2] <= flows * 9 / 32 + CLAIM_SLACK, "{per:?}");
        assert!(per.iter().all(|&c| c > flows / 6), "{per:?}");
    }

    #[test]
    fn the_worker_that_starts_first_keeps_its_flows() {
        // Two queues, split by flow: worker 0 reads all of its queue's flows before worker
        // 1 reads any. Neither's flows go to the other but for the slots they share.
        // Worker 0 reads 10000 of its queue's 30000 flows before worker 1 reads anything;
        // then both read, in turn (20000 flows each). Neither's flows go to the other but for the slots they
        // share.
        let t = OwnerTable::new(2, true);
        let all: Vec<u64> = hashes(50000).collect();
        let (zero, one) = all.split_at(30000);
        t.started(0);
        assert!(zero[..10000].iter().all(|&h| t.owner(h, 0) == 0), "worker 0 alone keeps what it sees");
        t.started(1);
        let mut moved = [0; 2];
        for (&a, &b) in zero[10000..].iter().zip(one) {
            moved[0] += (t.owner(a, 0) != 0) as u32;
            moved[1] += (t.owner(b, 1) != 1) as u32;
        }
        assert!(moved[0] < 300 && moved[1] < 300, "flows that changed worker: {moved:?}");
    }

    #[test]
    fn a_worker_that_starts_late_keeps_its_flows() {
        // Two queues, split by flow: worker 0 reads every flow of its queue before worker
        // 1 reads anything (a late start, or a neighbour busy with another process); then
        // worker 1 reads its own queue's flows while worker 0 sees no new one; then both
        // read new flows in turn. Neither's flows go to the other but for the slots they
        // share.
        let t = OwnerTable::new(2, true);
        let all: Vec<u64> = hashes(80000).collect();
        let (early, rest) = all.split_at(30000);
        let (late, both) = rest.split_at(30000);
        let mut moved = [0; 2];
        t.started(0);
        for &h in early {
            moved[0] += (t.owner(h, 0) != 0) as u32;
        }
        t.started(1);
        for &h in late {
            moved[1] += (t.owner(h, 1) != 1) as u32;
        }
        for pair in both.chunks(2) {
            for (w, &h) in pair.iter().enumerate() {
                moved[w] += (t.owner(h, w) != w) as u32;
            }
        }
        assert!(moved[0] < 300 && moved[1] < 300, "flows that changed worker: {moved:?}");
    }

    #[test]
    fn a_worker_that_sees_every_flow_first_shares_them_out() {
        // Both directions of each flow on different queues (the two ports of a bump in the
        // wire), the client's first: worker 0 sees every flow first, after both started.
        let t = OwnerTable::new(2, true);
        t.started(0);
        t.started(1);
        let flows = 20000u64;
        let mut per = [0u64; 2];
        for h in hashes(flows) {
            let o = t.owner(h, 0);
            assert_eq!(t.owner(h, 1), o, "the reply finds the owner the request made");
            per[o] += 1;
        }
        assert!(per[0] <= flows * 9 / 16 + CLAIM_SLACK, "{per:?}");
        assert!(per[1] > flows * 2 / 5, "{per:?}");
    }

    #[test]
    fn a_worker_alone_shares_out_past_its_allowance() {
        // Every worker has a queue, but only worker 0's carries anything: past CLAIM_ALONE
        // claims, its flows are shared out by hash.
        let t = OwnerTable::new(2, true);
        t.started(0);
        let flows = CLAIM_ALONE + 20000;
        let mut per = [0u64; 2];
        for h in hashes(flows) {
            per[t.owner(h, 0)] += 1;
        }
        assert!(per[0] >= CLAIM_ALONE, "{per:?}");
        assert!(per[1] > 5000, "{per:?}");
    }
}
