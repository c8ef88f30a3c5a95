//! The per-worker flow table: fixed capacity, no locks, no allocation after creation.
//!
//! Layout: a slab of `capacity` fixed-size entries (the [`Flow`] plus the table's own
//! bookkeeping: the stored hash and the timer-wheel links; 128 bytes, two cache lines),
//! indexed by a `FlowIndex` (index.rs) of cache-line buckets of (tag, slab index)
//! pairs. A flow's [`FlowId`] is its slab index; freed indices are reused (LIFO).
//! Everything is allocated by [`FlowTable::new`]; no path allocates, rehashes or
//! does unbounded work afterwards (eviction looks at most at 8 flows).
//!
//! A lookup costs two dependent cache misses (index bucket, then flow entry) when the
//! table is larger than the caches; [`FlowTable::observe_burst`] overlaps them across
//! a burst of packets.
//!
//! Expiry is lazy (see `wheel.rs`): `observe` on an existing flow only updates its
//! counters and `last_seen_ms`; the wheel is touched when a flow is created, when its
//! timeout gets shorter (TCP FIN/RST), and when its slot comes due in `expire` (then it
//! is either ended or re-filed at its real deadline).
use super::index::FlowIndex;
use super::key::{Direction, FlowKey, Side};
use super::wheel::{Links, Wheel, WheelNode, NIL};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTimeouts {
    pub tcp_syn_ms: u64,
    pub tcp_established_ms: u64,
    pub tcp_closing_ms: u64,
    pub udp_ms: u64,
    pub other_ms: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct FlowTableConfig {
    /// Hard maximum of tracked flows; at capacity the oldest idle flow is evicted.
    pub capacity: usize,
    pub timeouts: FlowTimeouts,
}

/// Coarse TCP phase, enough to choose the idle timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TcpPhase {
    /// Only SYNs seen so far (or not TCP).
    New,
    Established,
    /// FIN or RST seen.
    Closing,
}

pub type FlowId = u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    Timeout,
    Evicted,
}

#[derive(Clone, Debug)]
pub struct Flow {
    pub key: FlowKey,
    /// The endpoint that sent the first packet (the client).
    pub client: Side,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub tcp: TcpPhase,
}

/// The flow's id in alerts (EVE `flow_id`) and flow dumps: stable for the life of the
/// flow, distinct across flows of the process (worker, slab slot, creation time and the
/// key's ports and protocol, mixed). 51 bits, so that JSON readers that hold numbers as
/// doubles (JavaScript, Kibana) keep it exact; never 0.
pub fn flow_uid(worker: usize, id: FlowId, f: &Flow) -> u64 {
    fn mix(mut z: u64) -> u64 {
        // splitmix64's finaliser
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let k = &f.key;
    let ports = (k.lo_port as u64) << 24 | (k.hi_port as u64) << 8 | k.proto as u64;
    // (one finaliser over the parts, each moved to bits of its own: computed per packet
    // handed to the rules, three cost ~50 instructions)
    let h = mix(((worker as u64) << 32 | id as u64) ^ f.first_seen_ms.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ports.rotate_left(23));
    (h & ((1u64 << 51) - 1)).max(1)
}

/// One packet for `FlowTable::observe_burst`: the arguments of `observe`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowPacket {
    pub key: FlowKey,
    /// `key.hash()`.
    pub hash: u64,
    pub sender: Side,
    pub tcp_flags: Option<u8>,
    pub bytes: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    pub id: FlowId,
    pub dir: Direction,
    pub created: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableCounters {
    pub created: u64,
    pub expired: u64,
    pub evicted: u64,
}


/// Default wheel tick.
pub const DEFAULT_TICK_MS: u64 = 250;
/// Default number of wheel slots (horizon = slots * tick = 1024 s by default).
pub const DEFAULT_WHEEL_SLOTS: usize = 4096;
/// Flows examined at most to find an eviction victim.
const EVICT_ATTEMPTS: usize = 8;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// The hash as used inside the table. The dispatcher picks the worker from the low
/// bits of `FlowKey::hash` (`hash % workers`), so all flows of one worker share them:
/// the table takes its bucket from the high half instead.
#[inline(always)]
fn table_hash(hash: u64) -> u64 {
    hash.rotate_left(32)
}

/// Phase after seeing `flags`; phases only move forward (New -> Established -> Closing).
#[inline]
fn tcp_phase(cur: TcpPhase, flags: u8) -> TcpPhase {
    let seen = if flags & (TCP_FIN | TCP_RST) != 0 {
        TcpPhase::Closing
    } else if flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        TcpPhase::New
    } else {
        TcpPhase::Established
    };
    cur.max(seen)
}

impl FlowTimeouts {
    /// Idle timeout of a flow in its current state.
    #[inline]
    pub fn of(&self, flow: &Flow) -> u64 {
        match flow.key.proto {
            IPPROTO_TCP => match flow.tcp {
                TcpPhase::New => self.tcp_syn_ms,
                TcpPhase::Established => self.tcp_established_ms,
                TcpPhase::Closing => self.tcp_closing_ms,
            },
            IPPROTO_UDP => self.udp_ms,
            _ => self.other_ms,
        }
    }
}

impl Flow {
    /// Direction of a packet sent by `sender`.
    #[inline]
    pub fn direction(&self, sender: Side) -> Direction {
        if sender == self.client {
            Direction::Up
        } else {
            Direction::Down
        }
    }
}

/// One slab slot: the flow first (key, counters and timestamps: what `observe` reads
/// and writes), then the table's bookkeeping. 128 bytes, cache-line aligned, so a
/// flow spans exactly two lines.
#[repr(C, align(64))]
#[repr(align(64))]
struct Entry {
    flow: Flow,
    hash: u64,
    /// Wheel links while live (`links.slot != NIL`); `links.next` chains the free list.
    links: Links,
}

impl WheelNode for Entry {
    #[inline(always)]
    fn links(&self) -> &Links {
        &self.links
    }
    #[inline(always)]
    fn links_mut(&mut self) -> &mut Links {
        &mut self.links
    }
}

const BLANK_KEY: FlowKey = FlowKey { lo_addr: [0; 16], hi_addr: [0; 16], lo_port: 0, hi_port: 0, vlan: 0, proto: 0 };
const BLANK_FLOW: Flow = Flow {
    key: BLANK_KEY,
    client: Side::Lo,
    packets: [0; 2],
    bytes: [0; 2],
    first_seen_ms: 0,
    last_seen_ms: 0,
    tcp: TcpPhase::New,
};

/// Fixed-capacity flow table owned by one worker.
pub struct FlowTable {
    slab: Vec<Entry>,
    index: FlowIndex,
    wheel: Wheel,
    /// Head of the free list (through `links.next`), NIL when full.
    free: u32,
    len: usize,
    timeouts: FlowTimeouts,
    counters: TableCounters,
}

impl FlowTable {
    /// A table with the default wheel (250 ms ticks, 4096 slots).
    pub fn new(cfg: FlowTableConfig) -> FlowTable {
        FlowTable::with_wheel(cfg, DEFAULT_TICK_MS, DEFAULT_WHEEL_SLOTS)
    }

    /// A table with a wheel of `slots` ticks of `tick_ms` (`slots` a power of two in
    /// 64..=4096). Flows expire between their deadline and one tick later (when
    /// `expire` keeps up). Allocates everything the table will ever use.
    pub fn with_wheel(cfg: FlowTableConfig, tick_ms: u64, slots: usize) -> FlowTable {
        let cap = cfg.capacity;
        assert!(cap >= 1 && cap < NIL as usize, "flow table capacity must be in 1..{}", NIL);
        let mut slab = Vec::with_capacity(cap);
        slab.extend((0..cap).map(|i| Entry {
            flow: BLANK_FLOW,
            hash: 0,
            links: Links { next: if i + 1 < cap { i as u32 + 1 } else { NIL }, prev: NIL, slot: NIL },
        }));
        FlowTable {
            slab,
            index: FlowIndex::with_capacity(cap),
            wheel: Wheel::new(tick_ms, slots),
            free: 0,
            len: 0,
            timeouts: cfg.timeouts,
            counters: TableCounters::default(),
        }
    }

    /// Size of one slab entry in bytes.
    pub const fn entry_bytes() -> usize {
        std::mem::size_of::<Entry>()
    }

    /// Looks up the packet's flow, creating it if new (the sender is then the client:
    /// `Direction::Up`), and accounts the packet. At capacity, the flow closest to
    /// expiry is evicted first (counted in `counters().evicted`).
    /// `hash` must be `key.hash()` (or any hash the caller always uses for that key).
    #[inline]
    pub fn observe(&mut self, key: &FlowKey, hash: u64, sender: Side, now_ms: u64, tcp_flags: Option<u8>, bytes: u32) -> Observed {
        self.observe_with(key, hash, sender, now_ms, tcp_flags, bytes, &mut |_, _, _| {})
    }

    /// `observe`, calling `on_evict(id, flow, EndReason::Evicted)` for a flow evicted to
    /// make room (before its slot is reused for the new flow).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn observe_with(
        &mut self,
        key: &FlowKey,
        hash: u64,
        sender: Side,
        now_ms: u64,
        tcp_flags: Option<u8>,
        bytes: u32,
        on_evict: &mut impl FnMut(FlowId, &Flow, EndReason),
    ) -> Observed {
        let hash = table_hash(hash);
        if let Some(i) = self.find(key, hash) {
            return self.account(i, sender, now_ms, tcp_flags, bytes);
        }
        self.create(key, hash, sender, now_ms, tcp_flags, bytes, on_evict)
    }

    /// The live entry of flow `key`, `hash` being its [`table_hash`].
    #[inline(always)]
    fn find(&self, key: &FlowKey, hash: u64) -> Option<u32> {
        let slab = &self.slab;
        self.index.find(hash, |j| slab[j as usize].flow.key == *key)
    }

    /// `observe` for a burst of packets (all at `now_ms`), writing `out[k]` for
    /// `pkts[k]`; `out` must be at least as long as `pkts`. Same result as observing
    /// them one by one, but the cache misses of the lookups are overlapped: the index
    /// buckets of the whole burst are read first, then the candidate flow entries, then
    /// the packets are accounted. Bursts of 16-64 packets work best.
    pub fn observe_burst(&mut self, pkts: &[FlowPacket], now_ms: u64, out: &mut [Observed]) {
        self.observe_burst_with(pkts, now_ms, out, &mut |_, _, _| {})
    }

    /// `observe_burst` with an eviction callback (see `observe_with`).
    pub fn observe_burst_with(
        &mut self,
        pkts: &[FlowPacket],
        now_ms: u64,
        out: &mut [Observed],
        on_evict: &mut impl FnMut(FlowId, &Flow, EndReason),
    ) {
        self.observe_burst_inner(pkts, now_ms, out, on_evict, &mut |_| true);
    }

    /// `observe_burst` for a worker that owns only some flows (software dispatch): a
    /// packet of a flow the table does not hold is accounted only if `owns(hash)` (asked
    /// then, and only then: a flow held here is this worker's); the others are left out,
    /// their `out` untouched, and named in the returned mask (bit k for `pkts[k]`; at most
    /// 64 packets).
    pub fn observe_burst_owned(&mut self, pkts: &[FlowPacket], now_ms: u64, out: &mut [Observed], owns: &mut impl FnMut(u64) -> bool) -> u64 {
        assert!(pkts.len() <= 64, "observe_burst_owned: more than 64 packets");
        self.observe_burst_inner(pkts, now_ms, out, &mut |_, _, _| {}, owns)
    }

    #[inline(always)]
    fn observe_burst_inner(
        &mut self,
        pkts: &[FlowPacket],
        now_ms: u64,
        out: &mut [Observed],
        on_evict: &mut impl FnMut(FlowId, &Flow, EndReason),
        owns: &mut impl FnMut(u64) -> bool,
    ) -> u64 {
        const CHUNK: usize = 32;
        assert!(out.len() >= pkts.len(), "observe_burst: out shorter than pkts");
        let mut foreign = 0u64;
        for (ci, (pkts, out)) in pkts.chunks(CHUNK).zip(out.chunks_mut(CHUNK)).enumerate() {
            let mut cand = [NIL; CHUNK];
            for p in pkts {
                self.index.prefetch(table_hash(p.hash));
            }
            for (c, p) in cand.iter_mut().zip(pkts) {
                if let Some(id) = self.index.candidate(table_hash(p.hash)) {
                    *c = id;
                    // Both cache lines of the entry (it is 64-byte aligned).
                    let e = &self.slab[id as usize] as *const Entry as *const u8;
                    crate::dpdk::prefetch(e);
                    crate::dpdk::prefetch(e.wrapping_add(64));
                }
            }
            for (k, ((&c, p), o)) in cand.iter().zip(pkts).zip(out.iter_mut()).enumerate() {
                if c != NIL {
                    let e = &mut self.slab[c as usize];
                    // The candidate is right if it is live with this key (an earlier packet
                    // of the burst may have evicted it: then its slot holds another key).
                    if e.flow.key == p.key && e.links.slot != NIL {
                        *o = self.account(c, p.sender, now_ms, p.tcp_flags, p.bytes);
                        continue;
                    }
                }
                let hash = table_hash(p.hash);
                if let Some(i) = self.find(&p.key, hash) {
                    *o = self.account(i, p.sender, now_ms, p.tcp_flags, p.bytes);
                } else if owns(p.hash) {
                    *o = self.create(&p.key, hash, p.sender, now_ms, p.tcp_flags, p.bytes, on_evict);
                } else {
                    foreign |= 1 << ((ci * CHUNK + k) & 63);
                }
            }
        }
        foreign
    }

    /// Accounts a packet to live flow `i`.
    #[inline(always)]
    fn account(&mut self, i: u32, sender: Side, now_ms: u64, tcp_flags: Option<u8>, bytes: u32) -> Observed {
        let f = &mut self.slab[i as usize].flow;
        let dir = f.direction(sender);
        let d = dir as usize;
        f.packets[d] += 1;
        f.bytes[d] += bytes as u64;
        f.last_seen_ms = now_ms;
        if let Some(flags) = tcp_flags {
            let phase = tcp_phase(f.tcp, flags);
            if phase != f.tcp {
                let before = self.timeouts.of(f);
                f.tcp = phase;
                if self.timeouts.of(f) < before {
                    // The deadline moved earlier (FIN/RST): the lazy wheel only
                    // copes with later deadlines, so re-file now (once per flow).
                    self.refile(i, now_ms);
                }
            }
        }
        Observed { id: i, dir, created: false }
    }

    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        key: &FlowKey,
        hash: u64,
        sender: Side,
        now_ms: u64,
        tcp_flags: Option<u8>,
        bytes: u32,
        on_evict: &mut impl FnMut(FlowId, &Flow, EndReason),
    ) -> Observed {
        if self.free == NIL {
            self.evict_one(now_ms, on_evict);
        }
        let i = self.free;
        let e = &mut self.slab[i as usize];
        self.free = e.links.next;
        e.links = Links::UNFILED;
        e.hash = hash;
        e.flow = Flow {
            key: *key,
            client: sender,
            packets: [1, 0],
            bytes: [bytes as u64, 0],
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
            tcp: match tcp_flags {
                Some(flags) => tcp_phase(TcpPhase::New, flags),
                None => TcpPhase::New,
            },
        };
        let deadline = now_ms.saturating_add(self.timeouts.of(&e.flow));
        self.index.insert(hash, i);
        let tick = self.wheel.deadline_tick(deadline);
        self.wheel.insert(&mut self.slab, i, tick, now_ms);
        self.len += 1;
        self.counters.created += 1;
        Observed { id: i, dir: Direction::Up, created: true }
    }

    /// Prefetches the index bucket of `hash`. Calling it for every packet of a burst
    /// before `observe`-ing them overlaps the index misses; `observe_burst` does more.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        self.index.prefetch(table_hash(hash));
    }

    #[inline(never)]
    fn refile(&mut self, i: u32, now_ms: u64) {
        let tick = self.wheel.deadline_tick(self.deadline(i));
        self.wheel.remove(&mut self.slab, i);
        self.wheel.insert(&mut self.slab, i, tick, now_ms);
    }

    #[inline]
    fn deadline(&self, i: u32) -> u64 {
        let f = &self.slab[i as usize].flow;
        f.last_seen_ms.saturating_add(self.timeouts.of(f))
    }

    /// Evicts the flow closest to expiry: the first of the earliest wheel slot, unless
    /// it was refreshed since it was filed, in which case it is re-filed and the next
    /// one looked at; after `EVICT_ATTEMPTS` refreshed flows, the one of them with the
    /// earliest deadline goes.
    #[inline(never)]
    fn evict_one(&mut self, now_ms: u64, on_evict: &mut impl FnMut(FlowId, &Flow, EndReason)) {
        let mut victim = NIL;
        let mut best = (NIL, u64::MAX);
        for _ in 0..EVICT_ATTEMPTS {
            let Some((i, slot_tick)) = self.wheel.first() else { break };
            let deadline = self.deadline(i);
            let want = self.wheel.clamp(self.wheel.deadline_tick(deadline));
            if want <= slot_tick {
                victim = i;
                break;
            }
            self.wheel.remove(&mut self.slab, i);
            self.wheel.insert(&mut self.slab, i, want, now_ms);
            if deadline < best.1 {
                best = (i, deadline);
            }
        }
        if victim == NIL {
            victim = best.0;
        }
        assert!(victim != NIL, "full flow table with no filed flow");
        on_evict(victim, &self.slab[victim as usize].flow, EndReason::Evicted);
        self.release(victim);
        self.counters.evicted += 1;
    }

    /// Frees slot `i` (live): unfiles it if filed, drops it from the index, pushes it
    /// on the free list.
    fn release(&mut self, i: u32) {
        if self.slab[i as usize].links.slot != NIL {
            self.wheel.remove(&mut self.slab, i);
        }
        let hash = self.slab[i as usize].hash;
        let found = self.index.remove(hash, i);
        debug_assert!(found, "live flow missing from the index");
        self.slab[i as usize].links.next = self.free;
        self.free = i;
        self.len -= 1;
    }

    /// Incremental expiry: examines at most `budget` flows whose wheel slot is due at
    /// `now_ms`, ending (`on_end(id, flow, EndReason::Timeout)`, then removing) those
    /// idle for at least their timeout and re-filing the others at their real deadline.
    /// Returns the number of flows ended. Cheap when nothing is due.
    pub fn expire(&mut self, now_ms: u64, budget: usize, on_end: &mut impl FnMut(FlowId, &Flow, EndReason)) -> usize {
        let now_tick = self.wheel.tick_of(now_ms);
        let mut ended = 0;
        for _ in 0..budget {
            let Some(i) = self.wheel.pop_due(&mut self.slab, now_tick) else { break };
            let deadline = self.deadline(i);
            if deadline > now_ms {
                let tick = self.wheel.deadline_tick(deadline);
                self.wheel.insert(&mut self.slab, i, tick, now_ms);
            } else {
                on_end(i, &self.slab[i as usize].flow, EndReason::Timeout);
                self.release(i);
                self.counters.expired += 1;
                ended += 1;
            }
        }
        ended
    }

    /// Removes a live flow now (e.g. on a verdict), returning it. Not counted.
    pub fn remove(&mut self, id: FlowId) -> Option<Flow> {
        let flow = self.get(id)?.clone();
        self.release(id);
        Some(flow)
    }

    /// The live flow `id`, if any.
    #[inline]
    pub fn get(&self, id: FlowId) -> Option<&Flow> {
        self.slab.get(id as usize).filter(|e| e.links.slot != NIL).map(|e| &e.flow)
    }

    /// Live flows, in id order. O(capacity): for dumps, not the datapath.
    pub fn iter(&self) -> impl Iterator<Item = (FlowId, &Flow)> + '_ {
        self.slab
            .iter()
            .enumerate()
            .filter(|(_, e)| e.links.slot != NIL)
            .map(|(i, e)| (i as FlowId, &e.flow))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.slab.len()
    }

    pub fn counters(&self) -> TableCounters {
        self.counters
    }

    pub fn timeouts(&self) -> &FlowTimeouts {
        &self.timeouts
    }

    pub fn tick_ms(&self) -> u64 {
        self.wheel.tick_ms()
    }

    pub fn wheel_slots(&self) -> usize {
        self.wheel.slots()
    }

    /// Bytes allocated by the table (slab, hash table, wheel); constant after `new`.
    pub fn memory_bytes(&self) -> usize {
        self.slab.capacity() * std::mem::size_of::<Entry>() + self.index.memory_bytes() + self.wheel.memory_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dissect::{PacketMeta, L3};
    use crate::flow::key::tests::meta;

    const SYN: u8 = TCP_SYN;
    const SYNACK: u8 = TCP_SYN | TCP_ACK;
    const ACK: u8 = TCP_ACK;
    const FIN_ACK: u8 = TCP_FIN | TCP_ACK;

    fn timeouts() -> FlowTimeouts {
        FlowTimeouts { tcp_syn_ms: 5_000, tcp_established_ms: 60_000, tcp_closing_ms: 10_000, udp_ms: 30_000, other_ms: 20_000 }
    }

    fn table(capacity: usize) -> FlowTable {
        FlowTable::new(FlowTableConfig { capacity, timeouts: timeouts() })
    }

    fn v4(a: u32) -> [u8; 16] {
        let mut x = [0u8; 16];
        x[10] = 0xff;
        x[11] = 0xff;
        x[12..].copy_from_slice(&a.to_be_bytes());
        x
    }

    /// One packet through the table, as the pipeline does it.
    fn pkt(t: &mut FlowTable, m: &PacketMeta, now: u64, flags: Option<u8>, bytes: u32) -> Observed {
        let (k, side) = FlowKey::from_meta(m);
        t.observe(&k, k.hash(), side, now, flags, bytes)
    }

    fn udp(i: u32) -> PacketMeta {
        meta(v4(0x0a00_0000 + i), 1000 + (i % 50_000) as u16, v4(0xc0a8_0001), 53, IPPROTO_UDP, 0)
    }

    fn tcp(i: u32) -> PacketMeta {
        meta(v4(0x0a00_0000 + i), 1000 + (i % 50_000) as u16, v4(0xc0a8_0001), 80, IPPROTO_TCP, 0)
    }

    fn rev(m: &PacketMeta) -> PacketMeta {
        let mut r = *m;
        r.src_addr = m.dst_addr;
        r.dst_addr = m.src_addr;
        r.src_port = m.dst_port;
        r.dst_port = m.src_port;
        r
    }

    fn expire_all(t: &mut FlowTable, now: u64) -> Vec<(FlowId, FlowKey, EndReason)> {
        let mut ended = vec![];
        t.expire(now, usize::MAX, &mut |id, f: &Flow, r| ended.push((id, f.key, r)));
        ended
    }

    impl FlowTable {
        fn check(&self) {
            assert_eq!(self.len, self.index.len());
            assert_eq!(self.len, self.wheel.filed());
            assert!(self.len <= self.capacity());
            let mut free = 0;
            let mut i = self.free;
            while i != NIL {
                assert_eq!(self.slab[i as usize].links.slot, NIL);
                free += 1;
                i = self.slab[i as usize].links.next;
            }
            assert_eq!(free + self.len, self.capacity());
            for (id, f) in self.iter() {
                let e = &self.slab[id as usize];
                assert_eq!(e.hash, table_hash(f.key.hash()));
                assert_eq!(self.index.find(e.hash, |j| j == id), Some(id));
            }
        }
    }

    #[test]
    fn flow_entry_is_compact() {
        assert_eq!(FlowTable::entry_bytes(), 128);
    }

    #[test]
    fn flow_both_directions_one_entry() {
        let mut t = table(16);
        let c2s = tcp(1);
        let s2c = rev(&c2s);
        let o1 = pkt(&mut t, &c2s, 1000, Some(SYN), 60);
        assert!(o1.created);
        assert_eq!(o1.dir, Direction::Up);
        assert_eq!(t.get(o1.id).unwrap().tcp, TcpPhase::New);
        let o2 = pkt(&mut t, &s2c, 1001, Some(SYNACK), 70);
        assert_eq!((o2.id, o2.dir, o2.created), (o1.id, Direction::Down, false));
        let o3 = pkt(&mut t, &c2s, 1002, Some(ACK), 80);
        assert_eq!((o3.id, o3.dir, o3.created), (o1.id, Direction::Up, false));
        let o4 = pkt(&mut t, &s2c, 1003, Some(ACK), 1500);
        assert_eq!(o4.dir, Direction::Down);
        assert_eq!(t.len(), 1);
        let f = t.get(o1.id).unwrap();
        assert_eq!(f.packets, [2, 2]);
        assert_eq!(f.bytes, [140, 1570]);
        assert_eq!((f.first_seen_ms, f.last_seen_ms), (1000, 1003));
        assert_eq!(f.tcp, TcpPhase::Established);
        assert_eq!(f.client, FlowKey::from_meta(&c2s).1);
        assert_eq!(f.key, FlowKey::from_meta(&s2c).0);
        pkt(&mut t, &s2c, 1004, Some(FIN_ACK), 60);
        assert_eq!(t.get(o1.id).unwrap().tcp, TcpPhase::Closing);
        // never goes back
        pkt(&mut t, &c2s, 1005, Some(ACK), 60);
        assert_eq!(t.get(o1.id).unwrap().tcp, TcpPhase::Closing);
        assert_eq!(t.counters(), TableCounters { created: 1, expired: 0, evicted: 0 });
        t.check();
    }

    #[test]
    fn flow_server_first_packet_makes_it_client() {
        // The first packet's sender is the client, whatever the canonical order.
        let mut t = table(4);
        let m = tcp(1);
        let r = rev(&m);
        let o = pkt(&mut t, &r, 0, Some(SYN), 1);
        assert_eq!(o.dir, Direction::Up);
        assert_eq!(pkt(&mut t, &m, 1, Some(SYNACK), 1).dir, Direction::Down);
        assert_eq!(t.get(o.id).unwrap().client, FlowKey::from_meta(&r).1);
    }

    #[test]
    fn flow_tcp_phases() {
        let mut t = table(8);
        // data without handshake (mid-stream pickup) is established
        let o = pkt(&mut t, &tcp(1), 0, Some(ACK), 1);
        assert_eq!(t.get(o.id).unwrap().tcp, TcpPhase::Established);
        // retransmitted SYNs stay New, RST closes
        let o = pkt(&mut t, &tcp(2), 0, Some(SYN), 1);
        pkt(&mut t, &tcp(2), 1, Some(SYN), 1);
        assert_eq!(t.get(o.id).unwrap().tcp, TcpPhase::New);
        pkt(&mut t, &rev(&tcp(2)), 2, Some(TCP_RST | TCP_ACK), 1);
        assert_eq!(t.get(o.id).unwrap().tcp, TcpPhase::Closing);
        // non-TCP: New, flags None never change it
        let o = pkt(&mut t, &udp(1), 0, None, 1);
        pkt(&mut t, &rev(&udp(1)), 1, None, 1);
        assert_eq!(t.get(o.id).unwrap().tcp, TcpPhase::New);
    }

    #[test]
    fn flow_vlan_distinguishes_flows() {
        let mut t = table(8);
        let m0 = tcp(1);
        let mut m1 = m0;
        m1.vlan = 10;
        let mut m2 = m0;
        m2.vlan = (10 << 12) | 20;
        let a = pkt(&mut t, &m0, 0, Some(SYN), 1);
        let b = pkt(&mut t, &m1, 0, Some(SYN), 1);
        let c = pkt(&mut t, &m2, 0, Some(SYN), 1);
        assert!(a.created && b.created && c.created);
        assert_eq!(t.len(), 3);
        assert_eq!(pkt(&mut t, &rev(&m1), 1, Some(SYNACK), 1).id, b.id);
        assert_eq!(t.get(c.id).unwrap().key.vlan, (10 << 12) | 20);
        t.check();
    }

    #[test]
    fn flow_ipv4_vs_ipv6() {
        let mut t = table(8);
        let m4 = meta(v4(0x0a00_0001), 1234, v4(0x0a00_0002), 80, IPPROTO_TCP, 0);
        // IPv4-compatible IPv6 (::10.0.0.1) differs from IPv4-mapped (::ffff:10.0.0.1)
        let mut a6 = [0u8; 16];
        a6[12..].copy_from_slice(&[10, 0, 0, 1]);
        let mut b6 = a6;
        b6[15] = 2;
        let m6 = meta(a6, 1234, b6, 80, IPPROTO_TCP, 0);
        assert_eq!(m6.l3, L3::Ipv6);
        let o4 = pkt(&mut t, &m4, 0, Some(SYN), 1);
        let o6 = pkt(&mut t, &m6, 0, Some(SYN), 1);
        assert!(o4.created && o6.created);
        assert_ne!(o4.id, o6.id);
        let r6 = pkt(&mut t, &rev(&m6), 1, Some(SYNACK), 1);
        assert_eq!((r6.id, r6.dir), (o6.id, Direction::Down));
        let r4 = pkt(&mut t, &rev(&m4), 1, Some(SYNACK), 1);
        assert_eq!((r4.id, r4.dir), (o4.id, Direction::Down));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn flow_timeouts_per_protocol() {
        let mut t = table(64);
        let t0 = 1_000_000;
        let udp_id = pkt(&mut t, &udp(1), t0, None, 1).id;
        let icmp = meta(v4(1), 7, v4(2), 7, 1, 0);
        let other_id = pkt(&mut t, &icmp, t0, None, 1).id;
        let syn_id = pkt(&mut t, &tcp(1), t0, Some(SYN), 1).id;
        let est = tcp(2);
        let est_id = pkt(&mut t, &est, t0, Some(SYN), 1).id;
        pkt(&mut t, &rev(&est), t0, Some(SYNACK), 1);
        pkt(&mut t, &est, t0, Some(ACK), 1);
        let clo = tcp(3);
        let clo_id = pkt(&mut t, &clo, t0, Some(ACK), 1).id;
        pkt(&mut t, &clo, t0, Some(FIN_ACK), 1);
        assert_eq!(t.len(), 5);

        let tick = t.tick_ms();
        let ended_between = |t: &mut FlowTable, from: u64, to: u64| -> Vec<FlowId> {
            let mut ids = vec![];
            let mut now = from;
            while now <= to {
                t.expire(now, 1000, &mut |id, _f: &Flow, r| {
                    assert_eq!(r, EndReason::Timeout);
                    ids.push(id)
                });
                now += 50;
            }
            ids
        };
        // nothing before the first deadline (5 s)
        assert!(ended_between(&mut t, t0, t0 + 4_999).is_empty());
        // each flow ends within one tick after its timeout, in timeout order
        assert_eq!(ended_between(&mut t, t0 + 5_000, t0 + 5_000 + tick), vec![syn_id]);
        assert!(ended_between(&mut t, t0 + 5_000 + tick + 50, t0 + 9_999).is_empty());
        assert_eq!(ended_between(&mut t, t0 + 10_000, t0 + 10_000 + tick), vec![clo_id]);
        assert!(ended_between(&mut t, t0 + 10_000 + tick + 50, t0 + 19_999).is_empty());
        assert_eq!(ended_between(&mut t, t0 + 20_000, t0 + 20_000 + tick), vec![other_id]);
        assert!(ended_between(&mut t, t0 + 20_000 + tick + 50, t0 + 29_999).is_empty());
        assert_eq!(ended_between(&mut t, t0 + 30_000, t0 + 30_000 + tick), vec![udp_id]);
        assert!(ended_between(&mut t, t0 + 30_000 + tick + 50, t0 + 59_999).is_empty());
        assert_eq!(ended_between(&mut t, t0 + 60_000, t0 + 60_000 + tick), vec![est_id]);
        assert!(t.is_empty());
        assert_eq!(t.counters().expired, 5);
        t.check();
    }

    #[test]
    fn flow_refreshed_survives() {
        let mut t = table(8);
        let m = udp(7);
        let id = pkt(&mut t, &m, 0, None, 1).id;
        // refresh at 20 s, and again at 45 s from the other side
        assert!(expire_all(&mut t, 19_000).is_empty());
        pkt(&mut t, &m, 20_000, None, 1);
        assert!(expire_all(&mut t, 31_000).is_empty());
        assert!(expire_all(&mut t, 44_000).is_empty());
        pkt(&mut t, &rev(&m), 45_000, None, 1);
        assert!(expire_all(&mut t, 74_999).is_empty());
        assert_eq!(t.get(id).unwrap().packets, [2, 1]);
        let ended = expire_all(&mut t, 75_000);
        assert_eq!(ended, vec![(id, FlowKey::from_meta(&m).0, EndReason::Timeout)]);
        // a SYN flow that becomes established gets the longer timeout
        let s = tcp(9);
        let id = pkt(&mut t, &s, 100_000, Some(SYN), 1).id;
        pkt(&mut t, &rev(&s), 100_001, Some(SYNACK), 1);
        assert!(expire_all(&mut t, 110_000).is_empty());
        assert!(expire_all(&mut t, 160_000).is_empty());
        let tick = t.tick_ms();
        assert_eq!(expire_all(&mut t, 160_001 + tick)[0].0, id);
        t.check();
    }

    #[test]
    fn flow_expiry_is_incremental() {
        let mut t = table(2000);
        for i in 0..1000 {
            pkt(&mut t, &udp(i), (i % 4) as u64 * 100, None, 1);
        }
        // 100 of them refreshed: they must be examined (re-filed) but not ended
        for i in 0..100 {
            pkt(&mut t, &udp(i * 10), 20_000, None, 1);
        }
        let mut calls = 0;
        let mut total = 0;
        loop {
            let mut seen = 0;
            let n = t.expire(31_000, 64, &mut |_, _: &Flow, _| seen += 1);
            assert_eq!(n, seen);
            assert!(n <= 64);
            calls += 1;
            total += n;
            if n == 0 {
                break;
            }
            t.check();
        }
        assert_eq!(total, 900);
        assert!((15..=18).contains(&calls), "{calls} calls");
        assert_eq!(t.len(), 100);
        assert_eq!(expire_all(&mut t, 50_000).len(), 100);
        // budget 0 does nothing
        pkt(&mut t, &udp(1), 60_000, None, 1);
        assert_eq!(t.expire(1_000_000, 0, &mut |_, _: &Flow, _| panic!()), 0);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn flow_expire_after_long_gap_and_large_clock() {
        // pcap-like absolute clock, expire not called for hours: stays cheap and correct
        let mut t = table(100);
        let base = 1_700_000_000_000u64;
        for i in 0..50 {
            pkt(&mut t, &udp(i), base, None, 1);
        }
        let long = tcp(1);
        pkt(&mut t, &long, base, Some(ACK), 1); // 60 s
        for k in 1..100u64 {
            pkt(&mut t, &long, base + k * 50_000, Some(ACK), 1); // kept alive for ~80 min
        }
        let mut examined_calls = 0;
        let mut ended = 0;
        loop {
            let n = t.expire(base + 99 * 50_000 + 1_000, 8, &mut |_, _: &Flow, _| ended += 1);
            examined_calls += 1;
            if n == 0 {
                break;
            }
        }
        assert_eq!(ended, 50);
        assert!(examined_calls <= 10);
        assert_eq!(t.len(), 1);
        assert_eq!(expire_all(&mut t, base + 99 * 50_000 + 60_000).len(), 1);
        t.check();
    }

    #[test]
    fn flow_eviction_at_capacity() {
        let mut t = table(4);
        let ids: Vec<FlowId> = (0..4).map(|i| pkt(&mut t, &udp(i), i as u64 * 1000, None, 1).id).collect();
        // refresh the oldest
        pkt(&mut t, &udp(0), 4000, None, 1);
        let mut evicted = vec![];
        let o = t.observe_with(
            &FlowKey::from_meta(&udp(4)).0,
            FlowKey::from_meta(&udp(4)).0.hash(),
            Side::Lo,
            5000,
            None,
            1,
            &mut |id, f: &Flow, r| evicted.push((id, f.key, r)),
        );
        assert!(o.created);
        assert_eq!(evicted, vec![(ids[1], FlowKey::from_meta(&udp(1)).0, EndReason::Evicted)]);
        assert_eq!(o.id, ids[1]); // its slot is reused
        assert_eq!(t.len(), 4);
        assert!(!pkt(&mut t, &udp(0), 5001, None, 1).created, "refreshed flow kept");
        assert_eq!(t.counters().evicted, 1);
        // next victims: 2 then 3 (oldest idle), never the one just inserted
        assert!(pkt(&mut t, &udp(5), 6000, None, 1).created);
        assert!(pkt(&mut t, &udp(6), 7000, None, 1).created);
        let live: Vec<FlowKey> = t.iter().map(|(_, f)| f.key).collect();
        for i in [0, 4, 5, 6] {
            assert!(live.contains(&FlowKey::from_meta(&udp(i)).0), "udp({i}) missing");
        }
        assert_eq!(t.counters(), TableCounters { created: 7, expired: 0, evicted: 3 });
        t.check();
    }

    #[test]
    fn flow_eviction_when_every_flow_was_refreshed() {
        let mut t = table(16);
        for i in 0..16 {
            pkt(&mut t, &tcp(i), 0, Some(ACK), 1);
        }
        // all refreshed later, in order: whoever is evicted, it is bounded work and sane
        for i in 0..16 {
            pkt(&mut t, &tcp(i), 10_000 + i as u64, Some(ACK), 1);
        }
        let mut ev = vec![];
        t.observe_with(&FlowKey::from_meta(&tcp(99)).0, FlowKey::from_meta(&tcp(99)).0.hash(), Side::Lo, 20_000, Some(SYN), 1, &mut |_, f: &Flow, _| {
            ev.push(f.last_seen_ms)
        });
        // the best of the examined flows (earliest deadline) goes: the first refreshed one
        assert_eq!(ev, vec![10_000]);
        assert_eq!(t.len(), 16);
        t.check();
    }

    #[test]
    fn flow_syn_flood_stays_bounded() {
        let mut t = table(1000);
        let mem = t.memory_bytes();
        for i in 0..100_000u32 {
            let m = tcp(i);
            let o = pkt(&mut t, &m, i as u64 / 10, Some(SYN), 60);
            assert!(o.created);
            assert!(t.len() <= 1000);
            if i % 64 == 0 {
                t.expire(i as u64 / 10, 64, &mut |_, _: &Flow, _| {});
            }
        }
        assert_eq!(t.len(), 1000);
        let c = t.counters();
        assert_eq!(c.created, 100_000);
        assert_eq!(c.evicted + c.expired, 99_000);
        assert_eq!(c.evicted, 99_000); // 10 s of flood: nothing idle 5 s is left to expire
        assert_eq!(t.memory_bytes(), mem);
        t.check();
        // the survivors are the newest 1000
        let min_live = t.iter().map(|(_, f)| f.first_seen_ms).min().unwrap();
        assert!(min_live >= 9_890, "{min_live}");
    }

    #[test]
    fn flow_no_allocation_growth_under_churn() {
        // heavy create/expire churn: the index keeps its size and stays consistent
        let mut t = table(512);
        let mem = t.memory_bytes();
        let mut now = 0;
        for round in 0..200u32 {
            for i in 0..512 {
                pkt(&mut t, &udp(round * 512 + i), now, None, 1);
            }
            now += 31_000;
            expire_all(&mut t, now);
            assert!(t.is_empty());
        }
        assert_eq!(t.memory_bytes(), mem);
        t.check();
    }

    #[test]
    fn flow_ids_reused_after_removal() {
        let mut t = table(8);
        let a = pkt(&mut t, &udp(1), 0, None, 1).id;
        let b = pkt(&mut t, &tcp(1), 0, Some(SYN), 1).id;
        let _c = pkt(&mut t, &udp(2), 10_000, None, 1).id;
        // tcp SYN flow (5 s) expires first
        let ended = expire_all(&mut t, 6_000);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].0, b);
        assert!(t.get(b).is_none());
        let d = pkt(&mut t, &tcp(2), 7_000, Some(SYN), 1);
        assert_eq!(d.id, b);
        let f = t.get(b).unwrap();
        assert_eq!((f.packets, f.first_seen_ms), ([1, 0], 7_000)); // fresh counters
        // explicit removal
        let removed = t.remove(a).unwrap();
        assert_eq!(removed.key, FlowKey::from_meta(&udp(1)).0);
        assert!(t.remove(a).is_none());
        assert!(t.get(a).is_none());
        assert_eq!(pkt(&mut t, &udp(3), 8_000, None, 1).id, a);
        assert!(t.get(1000).is_none());
        t.check();
    }

    #[test]
    fn flow_iter_lists_live_flows() {
        let mut t = table(16);
        let mut ids = vec![];
        for i in 0..5 {
            ids.push(pkt(&mut t, &udp(i), 0, None, 1).id);
        }
        for i in 0..3 {
            pkt(&mut t, &udp(i), 20_000, None, 1);
        }
        let ended: Vec<FlowId> = expire_all(&mut t, 31_000).into_iter().map(|e| e.0).collect();
        assert_eq!(ended.len(), 2);
        let live: Vec<(FlowId, FlowKey)> = t.iter().map(|(id, f)| (id, f.key)).collect();
        assert_eq!(live.len(), 3);
        for i in 0..3 {
            assert!(live.contains(&(ids[i as usize], FlowKey::from_meta(&udp(i)).0)));
        }
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn flow_randomized_against_model() {
        use std::collections::HashMap;
        let mut rng = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut t = FlowTable::with_wheel(FlowTableConfig { capacity: 64, timeouts: timeouts() }, 100, 64);
        let mut model: HashMap<FlowKey, (u64, [u64; 2])> = HashMap::new();
        let mut now = 0u64;
        for _ in 0..200_000 {
            let r = next();
            now += r % 40;
            if r % 16 == 0 {
                let mut gone = vec![];
                t.expire(now, (r >> 8) as usize % 32, &mut |_, f: &Flow, reason| {
                    assert_eq!(reason, EndReason::Timeout);
                    assert!(f.last_seen_ms + timeouts().of(f) <= now);
                    gone.push(f.key)
                });
                for k in gone {
                    assert!(model.remove(&k).is_some());
                }
                continue;
            }
            let m = udp((r >> 20) as u32 % 100);
            let m = if r & 0x100 != 0 { rev(&m) } else { m };
            let (k, side) = FlowKey::from_meta(&m);
            let mut ev = vec![];
            let o = t.observe_with(&k, k.hash(), side, now, None, 10, &mut |_, f: &Flow, _| ev.push(f.key));
            for e in ev {
                assert!(model.remove(&e).is_some());
            }
            let entry = model.entry(k).or_insert((now, [0, 0]));
            assert_eq!(o.created, entry.1 == [0, 0]);
            entry.1[o.dir as usize] += 1;
            let f = t.get(o.id).unwrap();
            assert_eq!(f.packets, entry.1);
            assert_eq!(t.len(), model.len());
        }
        t.check();
    }
}

#[cfg(test)]
mod burst_tests {
    use super::*;

    fn timeouts() -> FlowTimeouts {
        FlowTimeouts { tcp_syn_ms: 5_000, tcp_established_ms: 60_000, tcp_closing_ms: 10_000, udp_ms: 30_000, other_ms: 20_000 }
    }

    fn fp(i: u32, sender: Side, flags: Option<u8>) -> FlowPacket {
        let mut lo = [0u8; 16];
        lo[10] = 0xff;
        lo[11] = 0xff;
        lo[12..].copy_from_slice(&(0x0a00_0000 + i).to_be_bytes());
        let mut hi = lo;
        hi[12] = 0xc0;
        let key = FlowKey { lo_addr: lo, hi_addr: hi, lo_port: 1000 + i as u16, hi_port: 443, vlan: 0, proto: if flags.is_some() { 6 } else { 17 } };
        FlowPacket { key, hash: key.hash(), sender, tcp_flags: flags, bytes: 100 + i }
    }

    /// The burst gives exactly what packet-by-packet observation gives: same ids,
    /// directions, creations, evictions, flows.
    fn compare(capacity: usize, bursts: &[Vec<FlowPacket>]) {
        let cfg = FlowTableConfig { capacity, timeouts: timeouts() };
        let mut a = FlowTable::new(cfg);
        let mut b = FlowTable::new(cfg);
        let (mut ev_a, mut ev_b) = (vec![], vec![]);
        for (n, burst) in bursts.iter().enumerate() {
            let now = 1000 + n as u64 * 100;
            let one: Vec<Observed> = burst
                .iter()
                .map(|p| a.observe_with(&p.key, p.hash, p.sender, now, p.tcp_flags, p.bytes, &mut |id, f: &Flow, r| ev_a.push((id, f.key, r))))
                .collect();
            let mut out = vec![Observed { id: 0, dir: Direction::Up, created: false }; burst.len() + 3];
            b.observe_burst_with(burst, now, &mut out, &mut |id, f: &Flow, r| ev_b.push((id, f.key, r)));
            assert_eq!(one[..], out[..burst.len()], "burst {n}");
        }
        assert_eq!(ev_a, ev_b);
        assert_eq!(a.counters(), b.counters());
        let fa: Vec<(FlowId, Flow)> = a.iter().map(|(i, f)| (i, f.clone())).collect();
        let fb: Vec<(FlowId, Flow)> = b.iter().map(|(i, f)| (i, f.clone())).collect();
        assert_eq!(format!("{fa:?}"), format!("{fb:?}"));
    }

    #[test]
    fn flow_burst_matches_one_by_one() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        // duplicates inside a burst, both directions, new and known flows, > 32 packets
        let bursts: Vec<Vec<FlowPacket>> = (0..200)
            .map(|_| {
                let n = (next() % 70) as usize;
                (0..n)
                    .map(|_| {
                        let r = next();
                        let side = if r & 1 == 0 { Side::Lo } else { Side::Hi };
                        let flags = match (r >> 1) % 4 {
                            0 => None,
                            1 => Some(0x02),
                            2 => Some(0x10),
                            _ => Some(0x11),
                        };
                        fp((r >> 8) as u32 % 300, side, flags)
                    })
                    .collect()
            })
            .collect();
        compare(1000, &bursts); // no eviction
        compare(64, &bursts); // evictions inside bursts, slots reused by later packets
        compare(1, &bursts);
    }

    #[test]
    fn flow_burst_owned_asks_only_for_flows_it_does_not_hold() {
        let mut t = FlowTable::new(FlowTableConfig { capacity: 16, timeouts: timeouts() });
        let blank = Observed { id: 99, dir: Direction::Up, created: false };
        let mut out = [blank; 4];
        let (mine, theirs) = (fp(1, Side::Lo, None), fp(2, Side::Lo, None));
        let mut asked = Vec::new();
        let foreign = t.observe_burst_owned(&[mine, theirs], 0, &mut out, &mut |h| {
            asked.push(h);
            h == mine.hash
        });
        assert_eq!(asked, [mine.hash, theirs.hash]);
        assert_eq!(foreign, 0b10);
        assert!(out[0].created);
        assert_eq!(out[1], blank, "a packet left out is not accounted");
        assert_eq!(t.len(), 1);
        // Known flows (either way) are not asked about; an unknown one is, every time.
        let mut back = mine;
        back.sender = Side::Hi;
        asked.clear();
        let foreign = t.observe_burst_owned(&[theirs, back, mine], 1, &mut out, &mut |h| {
            asked.push(h);
            false
        });
        assert_eq!(asked, [theirs.hash]);
        assert_eq!(foreign, 0b001);
        assert_eq!((out[1].id, out[1].dir, out[1].created), (out[2].id, Direction::Down, false));
        assert_eq!(t.get(out[2].id).unwrap().packets, [2, 1]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn flow_burst_same_new_flow_twice() {
        let p = fp(1, Side::Lo, Some(0x02));
        let mut q = p;
        q.sender = Side::Hi;
        q.tcp_flags = Some(0x12);
        let mut t = FlowTable::new(FlowTableConfig { capacity: 4, timeouts: timeouts() });
        let mut out = [Observed { id: 0, dir: Direction::Up, created: false }; 2];
        t.observe_burst(&[p, q], 0, &mut out);
        assert!(out[0].created && !out[1].created);
        assert_eq!((out[1].id, out[1].dir), (out[0].id, Direction::Down));
        assert_eq!(t.get(out[0].id).unwrap().tcp, TcpPhase::Established);
        assert_eq!(t.len(), 1);
    }
}
