//! The lcore loop (after DPDK's examples/l3fwd): poll every rx queue this
//! worker owns in bursts of 32, hand packets of flows owned by other workers
//! to them over rings (software dispatch), decide on the rest, buffer tx to
//! the paired port, then expire flows a little. Nothing here locks or allocates.
use crate::dispatch::{Dispatch, WhenFull};
use crate::dpdk::{self, Mbuf, MbufBurst, Ring, RxQueue, TxBuffer, BURST};
use crate::alert::AlertQueue;
use crate::flow::{Direction, Flow, Side};
use crate::fragstage::{FragInspect, FragPlan, FragStage};
use crate::lua::{rebuild_payload, ForgedPacket, LuaEngine, LuaOptions, LuaPacket, LuaVerdict, Pass, PayloadRewrite};
use crate::pipeline::{Batch, Class, Decision, Pipeline, BATCH};
use crate::stateful::{Outcome, StatefulStage};
use crate::dissect::PacketMeta;
use crate::stats::{Counters, DropReason, SharedCounters, Stateful};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// State shared by all workers and the main lcore.
pub struct Shared {
    /// Set to stop: workers stop polling ports, drain their rings, flush tx.
    pub stop: AtomicBool,
    /// Workers that have stopped polling ports (phase 1 of the drain).
    pub rx_stopped: AtomicUsize,
    /// Workers in their loop (for the `ready:` line).
    pub polling: AtomicUsize,
    /// Incremented to ask every worker to reload its rules (SIGHUP).
    pub reload_generation: AtomicU64,
    /// Reloads refused by their check (the rules file failed to load off the workers).
    pub reloads_refused: AtomicU64,
    pub counters: Vec<SharedCounters>,
    /// Fragments and reassembled datagrams handed to another worker and not yet
    /// processed by it (see `crate::fragstage`; the final drain waits for 0).
    pub frag_inflight: AtomicI64,
    /// Per worker: questions from the control socket / metrics, answered between bursts.
    pub mailboxes: Vec<Mailbox>,
}

/// A question for one worker (`hakactl flows`, `hakactl rules`, `/metrics`).
#[derive(Clone, Copy, Debug)]
pub enum Query {
    /// Up to `limit` live flows, as [`flow_json`] lines.
    Flows { limit: usize },
    /// Each rule's hits and errors.
    Rules,
}

/// A worker's answer to a [`Query`].
#[derive(Debug)]
pub enum Answer {
    Flows { total: usize, lines: Vec<String> },
    Rules(Vec<crate::lua::RuleStat>),
}

/// Lock-free single-slot exchanges between the control threads and one worker: the worker
/// only ever pops a request and pushes an answer (never waits); requests carry a sequence
/// number so that a late answer to an abandoned request is not taken for another's.
pub struct Mailbox {
    request: crossbeam_queue::ArrayQueue<(u64, Query)>,
    answer: crossbeam_queue::ArrayQueue<(u64, Answer)>,
    /// (reload generation, outcome: Ok(true) reloaded, Ok(false) no rules, Err(load error)).
    reload: crossbeam_queue::ArrayQueue<(u64, Result<bool, String>)>,
    /// Serialises the askers of this worker (control and metrics threads; never the worker).
    asking: std::sync::Mutex<u64>,
    /// The rules engine the reload built for this worker off its thread, with the reload
    /// generation it is for: the worker swaps it in between bursts (locked once per reload).
    rules: std::sync::Mutex<Option<(u64, crate::dpdk::EngineHandoff)>>,
}

impl Default for Mailbox {
    fn default() -> Self {
        Mailbox {
            request: crossbeam_queue::ArrayQueue::new(1),
            answer: crossbeam_queue::ArrayQueue::new(1),
            reload: crossbeam_queue::ArrayQueue::new(1),
            asking: std::sync::Mutex::new(0),
            rules: std::sync::Mutex::new(None),
        }
    }
}

impl Mailbox {
    /// Leaves `engine` for the worker to swap in at reload `generation` (replacing one it
    /// did not take).
    pub fn offer_rules(&self, generation: u64, engine: crate::dpdk::EngineHandoff) {
        if let Ok(mut r) = self.rules.lock() {
            *r = Some((generation, engine));
        }
    }

    /// The engine offered for reload `generation`, if any (an older one is dropped).
    fn take_rules(&self, generation: u64) -> Option<crate::lua::LuaEngine> {
        let (g, e) = self.rules.lock().ok()?.take()?;
        (g == generation).then(|| e.into_engine())
    }

    /// Asks the worker and waits up to `timeout` for its answer (None: it did not answer,
    /// e.g. stopped or busy in a long rule). Called off the workers' path.
    pub fn ask(&self, q: Query, timeout: std::time::Duration) -> Option<Answer> {
        let mut seq = self.asking.lock().ok()?;
        *seq += 1;
        let me = *seq;
        while self.answer.pop().is_some() {}
        let _ = self.request.force_push((me, q));
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some((s, a)) = self.answer.pop() {
                if s == me {
                    return Some(a);
                }
            }
            if std::time::Instant::now() >= deadline {
                // (withdrawn if still there; a late answer is dropped by the next ask)
                let _ = self.request.pop();
                return None;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
}

impl Shared {
    pub fn new(workers: usize) -> Shared {
        Shared {
            stop: AtomicBool::new(false),
            rx_stopped: AtomicUsize::new(0),
            polling: AtomicUsize::new(0),
            reload_generation: AtomicU64::new(0),
            reloads_refused: AtomicU64::new(0),
            counters: (0..workers).map(|_| SharedCounters::default()).collect(),
            frag_inflight: AtomicI64::new(0),
            mailboxes: (0..workers).map(|_| Mailbox::default()).collect(),
        }
    }

    /// The rules reload hook (SIGHUP, `hakactl reload`): triggers the reload every worker
    /// does between its bursts (`reload_generation`) and waits up to `timeout` for each
    /// worker's outcome. Per worker: None (no answer in time), Ok(true) reloaded, Ok(false)
    /// no rules loaded, Err(the load error: the previous rules stay).
    pub fn reload_and_wait(&self, timeout: std::time::Duration) -> Vec<Option<Result<bool, String>>> {
        self.reload_with(Vec::new(), timeout)
    }

    /// As [`reload_and_wait`](Self::reload_and_wait), the workers swapping in `built[w]`,
    /// the engines built off their threads (a worker without one loads the file itself).
    pub fn reload_with(
        &self,
        built: Vec<crate::dpdk::EngineHandoff>,
        timeout: std::time::Duration,
    ) -> Vec<Option<Result<bool, String>>> {
        let gen = self.reload_generation.load(Ordering::SeqCst) + 1;
        for (m, e) in self.mailboxes.iter().zip(built) {
            m.offer_rules(gen, e);
        }
        // (only the control thread reloads, one reload at a time: `gen` is this one's)
        self.reload_generation.store(gen, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + timeout;
        let mut out: Vec<Option<Result<bool, String>>> = self.mailboxes.iter().map(|_| None).collect();
        while out.iter().any(Option::is_none) && std::time::Instant::now() < deadline {
            for (o, m) in out.iter_mut().zip(&self.mailboxes) {
                if o.is_none() {
                    if let Some((g, r)) = m.reload.pop() {
                        if g >= gen {
                            *o = Some(r);
                        }
                    }
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        out
    }

    pub fn totals(&self) -> Counters {
        let all: Vec<Counters> = self.counters.iter().map(SharedCounters::snapshot).collect();
        Counters::sum(&all)
    }
}

/// What one worker polls and where its packets go.
pub struct WorkerPlan {
    pub index: usize,
    pub workers: usize,
    /// The rx queues this worker polls (one per port at most).
    pub rx: Vec<RxQueue>,
    /// Indexed by input port id: output port for accepted packets; None when passive.
    pub out_port: Vec<Option<u16>>,
    /// This worker's tx queue index on every port.
    pub tx_queue: u16,
    /// Software dispatch: rings[i] is worker i's inbound ring.
    pub rings: Option<Arc<Vec<Ring>>>,
    pub dump_flows: bool,
    /// Lua rules: the file and the engine's limits (None: no rules, all accepted).
    pub rules: Option<(PathBuf, LuaOptions)>,
    /// Where this worker's rules raise alerts.
    pub alerts: Arc<AlertQueue>,
    /// What this worker does with packets for a worker whose ring is full.
    pub dispatch_full: WhenFull,
    /// Software dispatch: the channels between every pair of workers, and who owns which
    /// flows.
    pub channels: Option<(crate::dispatch::Channels, crate::dispatch::Owners)>,
    /// Offline input (hakapcap): the Lua flow objects are measured by packets, not time.
    pub offline: bool,
    /// Stateful layer settings: connection tracking, what HTTP protocol errors and
    /// anomalies do.
    pub conn: (crate::conn::ConnConfig, crate::dissectors::Settings),
    /// Pool for forged packets (RSTs).
    pub pool: Option<dpdk::PoolRef>,
    /// IP fragment reassembly (None: fragments are decided on one by one).
    pub defrag: Option<FragPlan>,
}

/// Offline backpressure threshold: fragments and datagrams waiting in any dispatch ring.
const OFFLINE_RING_LIMIT: u32 = 256;

/// A worker's result, returned when it stops.
pub struct WorkerReport {
    pub index: usize,
    pub counters: Counters,
    pub table_bytes: usize,
    pub table_capacity: usize,
    /// JSON lines, one per live flow (only with `dump_flows`).
    pub flows: Vec<String>,
}

/// Milliseconds from the TSC, read once per loop iteration.
struct Clock {
    t0: u64,
    per_ms: u64,
}

impl Clock {
    fn new() -> Clock {
        Clock { t0: dpdk::tsc(), per_ms: (dpdk::tsc_hz() / 1000).max(1) }
    }
    #[inline(always)]
    fn now_ms(&self) -> u64 {
        (dpdk::tsc() - self.t0) / self.per_ms
    }
}

const _: () = assert!(BURST == BATCH && BURST <= u8::MAX as usize);

/// A driver's rx timestamp in ns since the epoch (net_pcap writes ns, or µs in older
/// drivers): Unix time in µs stays below 1e17 until the year 5138; in ns it is above.
#[inline(always)]
pub(crate) fn rx_time_ns(t: u64) -> u64 {
    if t > 100_000_000_000_000_000 {
        t
    } else {
        t.saturating_mul(1000)
    }
}

/// A packet's time (seconds since the epoch, nanoseconds): the driver's rx timestamp
/// (net_pcap: the capture's time, in ns, or µs in older drivers), else the wall
/// clock, read at most once per burst (`wall`, (0, 0) until read).
#[inline(always)]
/// Clears the dissections of the slots in `made` (a bit per slot).
fn forget_metas(metas: &mut [Option<PacketMeta>; BURST], made: u32) {
    let mut bits = made;
    while bits != 0 {
        metas[bits.trailing_zeros() as usize] = None;
        bits &= bits - 1;
    }
}

fn packet_time(m: &Mbuf, wall: &mut (u64, u32)) -> (u64, u32) {
    if let Some(t) = m.rx_timestamp() {
        let ns = rx_time_ns(t);
        return (ns / 1_000_000_000, (ns % 1_000_000_000) as u32);
    }
    if wall.0 == 0 {
        let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        *wall = (d.as_secs(), d.subsec_nanos());
    }
    *wall
}

struct Loop<'a> {
    plan: &'a WorkerPlan,
    pipeline: Pipeline,
    tx: Vec<Option<TxBuffer>>,
    c: Counters,
    /// Present only when the rules file has packet rules.
    lua: Option<LuaEngine>,
    /// Present when the rules use stateful events (or TCP tracking is strict).
    stateful: Option<StatefulStage>,
    /// Flows ended by expiry (scratch).
    ended: Vec<crate::flow::FlowId>,
    /// (flow, bytes of its Lua object) of the last scan (scratch).
    lua_sizes: Vec<(u32, usize)>,
    /// IP fragment reassembly, when enabled.
    frag: Option<FragStage<'a>>,
    /// Burst slots whose packet a rule modified (bit per slot).
    modified: u32,
    /// Burst slots holding a fragment its rules kept from reassembly (`dont_reassemble`):
    /// its receive_packet rules ran already (bit per slot).
    alone: u32,
    /// A payload rewrite that did not fit was logged (once).
    rewrite_logged: bool,
    /// Per burst slot: the dissection made when the packet was classified (None for a
    /// packet that took the slot later, e.g. a reassembled datagram). The rules and the
    /// stateful stage use it rather than dissecting the packet again. Every slot of a
    /// batch is set when it is classified, so nothing is cleared between bursts.
    metas: [Option<PacketMeta>; BURST],
    /// Whether `metas` is filled (some stage after the flow table reads it).
    keep_metas: bool,
    /// Packets the rules forged, with the injection depth and burst slot of the packet
    /// they follow (empty unless a rule forges).
    injected: Vec<(u32, u8, ForgedPacket)>,
    /// Injection depth of the burst being processed (0: received packets).
    depth: u32,
}

/// Rounds of injected packets whose rules inject more (a rule that injects for every
/// packet it sees, injected ones included): beyond it, further injected packets are dropped.
const MAX_INJECT_DEPTH: u32 = 8;

/// Flows measured per scan of the Lua flow objects (every 100 ms while the Lua heap is
/// large: a few hundred small walks, well under a millisecond).
const LUA_SCAN_FLOWS: usize = 512;
/// Offline, the Lua flow objects are measured every this many packets.
const OFFLINE_SCAN_PACKETS: u64 = 1024;
/// Lua tables one flow's objects may number before the flow counts as over its cap.
const LUA_SCAN_OBJECTS: usize = 16384;

impl Loop<'_> {
    /// Classifies the packet in burst slot `i`, keeping its dissection for the rules and
    /// the stateful stage when they run.
    #[inline(always)]
    fn classify_slot(&mut self, i: usize, frame: &[u8], len: u32) -> Class {
        if !self.keep_metas {
            return self.pipeline.classify(frame, len);
        }
        self.pipeline.classify_meta(frame, len, &mut self.metas[i])
    }

    /// Called before each burst: whether to keep the packets' dissections.
    fn update_keep_metas(&mut self) {
        let keep = self.stateful.is_some()
            || self.lua.as_ref().is_some_and(|l| l.has_packet_rules() || self.drops_ipv4(l));
        if keep != self.keep_metas {
            self.metas = [None; BURST];
            self.keep_metas = keep;
        }
    }

    /// Haka's chain without protocol/ipv4 (`[rules] dissectors = "required"`): the raw
    /// dissector's "unknown dissector" policy drops IPv4 packets (unless a rules' policy
    /// accepts them).
    fn drops_ipv4(&self, lua: &LuaEngine) -> bool {
        // (with packet rules, the Lua burst loop does it after them, packet by packet; an
        // accept policy on the raw dissector keeps the packets)
        use crate::lua::stateful::{IPV4_LOADED, PACKET_NEXT_ACCEPT};
        self.plan.conn.0.required_chain
            && lua.stateful_info() & (IPV4_LOADED | PACKET_NEXT_ACCEPT) == 0
            && !lua.has_packet_rules()
    }

    /// Alerts and drops the accepted IPv4 packets of the batch (see `drops_ipv4`).
    fn drop_unknown_ipv4(&mut self, batch: &mut Batch) {
        let Some(lua) = self.lua.as_mut() else { return };
        for j in 0..batch.len() {
            let (slot, d) = batch.result(j);
            if d == Decision::Accept && self.metas[slot as usize].is_some_and(|m| matches!(m.l3, crate::dissect::L3::Ipv4)) {
                lua.raise_bare_alert("dropping unknown dissector 'ipv4'");
                self.c.accepted -= 1;
                self.c.drop(DropReason::UnknownDissector);
                batch.set_decision(j, Decision::Drop(DropReason::UnknownDissector));
            }
        }
    }

    /// Decides on one packet this worker owns and sends or frees it.
    #[inline(always)]
    fn handle(&mut self, m: Mbuf, decision: Decision, modified: bool) {
        if decision == Decision::Accept
            && self.frag.as_ref().is_some_and(|fs| fs.is_carrier(&m))
            && matches!(self.plan.out_port.get(m.port() as usize), Some(Some(_)))
        {
            // A reassembled datagram to transmit: its original fragments (or its
            // re-fragmentation) leave. (Not transmitted: freed whole, below.)
            if let Some(fs) = self.frag.as_mut() {
                for f in fs.release(m, modified, &self.pipeline, &mut self.c) {
                    self.send(f);
                }
            }
            return;
        }
        match decision {
            Decision::Accept => self.send(m),
            Decision::Drop(_) => drop(m),
        }
    }

    /// Sends an accepted packet to its output port (passive: frees it).
    #[inline(always)]
    fn send(&mut self, m: Mbuf) {
        let port = m.port() as usize;
        match self.plan.out_port.get(port).copied() {
            Some(Some(out)) => match self.tx.get_mut(out as usize).and_then(Option::as_mut) {
                Some(txb) => {
                    let (sent, dropped) = txb.push(m);
                    self.c.tx += sent as u64;
                    self.c.dropped[DropReason::TxFull as usize] += dropped as u64;
                }
                None => self.c.drop(DropReason::NoOutputPort),
            },
            Some(None) => drop(m), // passive: inspected, not sent
            None => self.c.drop(DropReason::NoOutputPort),
        }
    }

    fn flush_tx(&mut self) {
        for txb in self.tx.iter_mut().flatten() {
            let (sent, dropped) = txb.flush();
            self.c.tx += sent as u64;
            self.c.dropped[DropReason::TxFull as usize] += dropped as u64;
        }
    }

    /// Hands the accepted packets of the batch to the Lua rules (one call for
    /// the whole burst) and applies their verdicts.
    fn run_rules(&mut self, burst: &mut MbufBurst, batch: &mut Batch) {
        let Some(lua) = self.lua.as_mut() else { return };
        let flows = self.pipeline.flows();
        let mut slot_to_j = [u8::MAX; BURST];
        for j in 0..batch.len() {
            let (slot, d) = batch.result(j);
            if d == Decision::Accept {
                slot_to_j[slot as usize] = j as u8;
            }
        }
        // (dissections not kept, e.g. of dispatched packets: made now, so that the packets
        // can borrow them, and forgotten after the rules)
        let mut made = 0u32;
        for (slot, m) in burst.slots_mut().iter().enumerate() {
            if let (Some(m), None, true) = (m, &self.metas[slot], slot_to_j[slot] != u8::MAX) {
                self.metas[slot] = self.pipeline.meta(m.data());
                made |= 1 << slot;
            }
        }
        // The packets for the rules, and the batch index of each.
        let mut pkts: arrayvec::ArrayVec<LuaPacket<'_>, BURST> = arrayvec::ArrayVec::new();
        let mut wall = (0, 0);
        let mut js: arrayvec::ArrayVec<u8, BURST> = arrayvec::ArrayVec::new();
        for (slot, m) in burst.slots_mut().iter_mut().enumerate() {
            let j = slot_to_j[slot];
            let Some(m) = m.as_mut().filter(|_| j != u8::MAX) else { continue };
            let carrier = self.frag.as_ref().is_some_and(|fs| fs.is_carrier(m));
            let ts = packet_time(m, &mut wall);
            let port = m.port();
            let data = m.data_mut();
            let Some(meta) = self.metas[slot].as_ref() else { continue };
            let (flow_id, dir) = match batch.flow_of(j as usize) {
                Some((id, d)) => (id, (d == Direction::Down) as u8),
                None => (u32::MAX, 0),
            };
            let mut p = LuaPacket::new(data, meta, dir, flow_id);
            p.ts = ts;
            p.port = port;
            p.flow_uid = flows.get(flow_id).map_or(0, |f| crate::flow::flow_uid(self.plan.index, flow_id, f));
            if carrier {
                p.pass = Pass::Reassembled;
            } else if self.alone >> slot & 1 != 0 {
                p.pass = Pass::Reassembled;
                p.dont_reassemble = true;
            }
            pkts.push(p);
            js.push(j);
        }
        if pkts.is_empty() {
            drop(pkts);
            forget_metas(&mut self.metas, made);
            return;
        }
        lua.run_burst(&mut pkts);
        self.c.lua_packets += pkts.len() as u64;
        if lua.has_forged() {
            for f in lua.take_forged() {
                let j = js.get(f.origin).or(js.first()).copied().unwrap_or(0);
                self.injected.push((self.depth, batch.result(j as usize).0, f));
            }
        }
        let mut rewrites: arrayvec::ArrayVec<(u8, Box<PayloadRewrite>), BURST> = arrayvec::ArrayVec::new();
        for (p, &j) in pkts.iter_mut().zip(&js) {
            if let Some(rw) = p.rewrite.take() {
                if p.verdict == LuaVerdict::Accept {
                    rewrites.push((j, rw));
                }
            }
            if p.modified {
                self.modified |= 1 << batch.result(j as usize).0;
            }
            if p.verdict == LuaVerdict::Drop {
                let reason = if p.error { DropReason::RuleError } else { DropReason::Rule };
                self.c.accepted -= 1;
                self.c.drop(reason);
                batch.set_decision(j as usize, Decision::Drop(reason));
            }
        }
        drop(pkts);
        // payloads the rules resized: the frames are rebuilt (mbuf resized, lengths and
        // checksums fixed); one that cannot grow that much is left as it was
        for (j, rw) in rewrites {
            let slot = batch.result(j as usize).0 as usize;
            let Some(m) = burst.slots_mut()[slot].as_mut() else { continue };
            let Some(meta) = self.metas[slot].or_else(|| self.pipeline.meta(m.data())) else { continue };
            let mut out = Vec::new();
            if rebuild_payload(m.data(), &meta, &rw, &mut out) && m.resize(out.len()) {
                m.data_mut().copy_from_slice(&out);
            } else if !self.rewrite_logged {
                self.rewrite_logged = true;
                println!("worker {}: a payload a rule resized does not fit its packet: left unchanged (logged once)", self.plan.index);
            }
        }
        forget_metas(&mut self.metas, made);
        copy_rule_counters(&mut self.c, lua);
    }

    /// The stateful stage, packet by packet in burst order, for accepted TCP/UDP packets.
    fn run_stateful(&mut self, burst: &mut MbufBurst, batch: &mut Batch) {
        let (Some(stage), Some(lua)) = (self.stateful.as_mut(), self.lua.as_mut()) else { return };
        let mut wall = (0, 0);
        for j in 0..batch.len() {
            let (slot, d) = batch.result(j);
            if d != Decision::Accept {
                continue;
            }
            let Some((id, fdir)) = batch.flow_of(j) else { continue };
            let created = batch.flow_created(j);
            let Some(m) = burst.slots_mut()[slot as usize].as_mut() else { continue };
            // (a packet a rule modified is dissected again)
            let cached = self.metas[slot as usize].filter(|_| self.modified >> slot & 1 == 0);
            let Some(meta) = cached.or_else(|| self.pipeline.meta(m.data())) else { continue };
            if !meta.has_l4 || meta.fragment || !stage.wants(meta.proto) {
                continue;
            }
            let out_port = self.plan.out_port.get(m.port() as usize).copied().flatten();
            let now = packet_time(m, &mut wall);
            lua.set_packet_time(now);
            stage.conns.set_time(now.0);
            // A reassembled datagram the stage changes (rules, stream edits) must be
            // re-fragmented rather than its originals sent: compare (fragments are rare).
            let before = self.frag.as_ref().filter(|fs| fs.is_carrier(m)).map(|_| m.data().to_vec());
            stage.reassembled = before.is_some();
            let n_forged = stage.forged.len();
            let uid = self.pipeline.flows().get(id).map_or(0, |f| crate::flow::flow_uid(self.plan.index, id, f));
            lua.set_flow_context(uid, m.port());
            let outcome = stage.packet(lua, m, &meta, id, created, fdir, out_port, &mut self.c);
            for f in &mut stage.forged[n_forged..] {
                f.after = Some((self.depth, slot));
            }
            if lua.has_forged() {
                for f in lua.take_forged() {
                    self.injected.push((self.depth, slot, f));
                }
            }
            if before.is_some_and(|b| b.as_slice() != m.data()) {
                self.modified |= 1 << slot;
            }
            if let Outcome::Drop(reason) = outcome {
                self.c.accepted -= 1;
                self.c.drop(reason);
                batch.set_decision(j, Decision::Drop(reason));
            }
        }
        lua.check_memory_since_last();
        self.c.stateful[Stateful::ConnectionsActive as usize] = stage.conns.len() as u64;
        self.c.stateful[Stateful::StreamBufferedBytes as usize] = stage.conns.buffered_bytes() as u64;
        self.c.set_memory(&stage.conns.mem);
        copy_rule_counters(&mut self.c, lua);
    }

    /// Sends the packets the stateful stage forged (RSTs) that follow the packet in
    /// burst `slot` of injection depth `depth`, or (None) those of this depth or deeper
    /// that are left (their packet is no longer in the burst) and untagged ones.
    fn send_forged(&mut self, after: Option<(u32, u8)>) {
        let Some(stage) = self.stateful.as_mut() else { return };
        if stage.forged.is_empty() {
            return;
        }
        let depth = self.depth;
        let due = |f: &crate::stateful::Forged| match (after, f.after) {
            (Some(a), t) => t == Some(a),
            (None, Some((d, _))) => d >= depth,
            (None, None) => depth == 0,
        };
        let mut i = 0;
        while i < stage.forged.len() {
            if !due(&stage.forged[i]) {
                i += 1;
                continue;
            }
            let f = stage.forged.remove(i);
            match self.tx.get_mut(f.port as usize).and_then(Option::as_mut) {
                Some(txb) => {
                    let (sent, dropped) = txb.push(f.mbuf);
                    self.c.tx += sent as u64;
                    self.c.dropped[DropReason::TxFull as usize] += dropped as u64;
                }
                None => drop(f.mbuf), // passive mode or no such port: not sent
            }
        }
    }

    /// Charges up to [`LUA_SCAN_FLOWS`] flows their Lua objects' bytes (the flow memory
    /// budget), while the Lua heap is over `[memory] lua_scan_mb`: a flow over its cap
    /// gets the cap's verdict at its next packet.
    fn scan_lua_flows(&mut self) {
        let (Some(lua), Some(stage)) = (self.lua.as_mut(), self.stateful.as_mut()) else { return };
        let cfg = stage.conns.mem.cfg;
        if lua.used_memory() < cfg.lua_scan_bytes {
            return;
        }
        lua.flow_sizes(LUA_SCAN_FLOWS, LUA_SCAN_OBJECTS, cfg.per_flow + 1, &mut self.lua_sizes);
        for &(id, bytes) in &self.lua_sizes {
            stage.conns.set_lua_bytes(id as crate::flow::FlowId, bytes);
        }
        self.c.set_memory(&stage.conns.mem);
    }

    /// One step of flow expiry; connections of ended flows get end_connection.
    fn expire(&mut self, now: u64) {
        self.ended.clear();
        self.pipeline.expire(now, &mut self.c, &mut self.ended);
        if let Some(stage) = self.stateful.as_mut() {
            for &id in &self.ended {
                stage.forget(self.lua.as_mut(), id, &mut self.c);
            }
            self.c.stateful[Stateful::ConnectionsActive as usize] = stage.conns.len() as u64;
            self.c.set_memory(&stage.conns.mem);
        }
    }

    /// Reloads this worker's rules: swaps in `built`, the engine the reload built off this
    /// thread, or else loads the file into a fresh state here; on failure the old rules
    /// stay. Ok(false): no rules to reload.
    fn reload_rules(&mut self, built: Option<LuaEngine>) -> Result<bool, String> {
        let Some(lua) = self.lua.as_mut() else { return Ok(false) };
        let outcome = match built {
            Some(e) => {
                lua.adopt(e);
                Ok(())
            }
            None => lua.reload(),
        };
        match outcome {
            Ok(()) => {
                if let Some(st) = self.stateful.as_mut() {
                    st.set_info(lua.stateful_info());
                }
                self.c.rules_reloaded += 1;
                println!("worker {}: rules reloaded", self.plan.index);
                Ok(true)
            }
            Err(e) => {
                self.c.rules_reload_failed += 1;
                println!("worker {}: rules reload failed, keeping the previous rules: {e}", self.plan.index);
                Err(e)
            }
        }
    }

    /// Answers a control question (between bursts; allocates, but only when asked).
    #[cold]
    fn answer(&mut self, q: Query) -> Answer {
        match q {
            Query::Flows { limit } => {
                let table = self.pipeline.flows();
                let lines = table.iter().take(limit).map(|(id, f)| flow_json(self.plan.index, id, f)).collect();
                Answer::Flows { total: table.len(), lines }
            }
            Query::Rules => Answer::Rules(self.lua.as_ref().map(LuaEngine::rule_stats).unwrap_or_default()),
        }
    }

    /// The packets the rules forged while processing the packet of burst slot `slot`
    /// (received on `port`): sent ones leave now; injected ones are received as a burst of
    /// their own (flow table, rules, stateful stage; never reassembled), then leave.
    #[cold]
    fn forged_after(&mut self, slot: u8, port: u16, now: u64, depth: u32) {
        let mut mine = Vec::new();
        let mut i = 0;
        while i < self.injected.len() {
            if self.injected[i].0 == depth && self.injected[i].1 == slot {
                mine.push(self.injected.remove(i).2);
            } else {
                i += 1;
            }
        }
        let Some(pool) = self.plan.pool else { return };
        let mut burst = MbufBurst::new();
        for f in mine {
            let Some(m) = pool.alloc_with(&f.data, port) else {
                self.c.drop(DropReason::TxFull);
                continue;
            };
            if !f.inject {
                self.send(m);
            } else if depth >= MAX_INJECT_DEPTH {
                self.c.drop(DropReason::Rule);
            } else if let Err(m) = burst.push(m) {
                drop(m);
                self.c.drop(DropReason::Rule);
            }
        }
        if burst.is_empty() {
            return;
        }
        // (the outer burst's per-slot state is no longer needed by its send loop, but for
        // `modified`, kept by the caller)
        let saved_modified = std::mem::take(&mut self.modified);
        let saved_alone = std::mem::take(&mut self.alone);
        let mut batch = Batch::default();
        for i in 0..burst.len() {
            let Some(m) = burst.get(i) else { continue };
            let class = self.classify_slot(i, m.data(), m.pkt_len());
            batch.push(i as u8, class);
        }
        self.finish_batch_at(&mut burst, &mut batch, now, depth + 1);
        self.depth = depth;
        self.modified = saved_modified;
        self.alone = saved_alone;
    }

    /// Decides on the batched packets of `burst` and sends or frees them.
    fn finish_batch(&mut self, burst: &mut MbufBurst, batch: &mut Batch, now: u64) {
        self.finish_batch_at(burst, batch, now, 0);
    }

    /// Before a fragment in the middle of a burst: decides on the packets batched so far
    /// (they come first, as in Haka, which saw each packet's rules through before the next
    /// packet's), leaving the rest of the burst in place.
    fn finish_batch_before_fragment(&mut self, burst: &mut MbufBurst, batch: &mut Batch, now: u64) {
        if !batch.is_empty() {
            self.finish_batch_inner(burst, batch, now, 0, false);
        }
    }

    /// `finish_batch` for packets injected by rules `depth` rounds deep (0: received).
    fn finish_batch_at(&mut self, burst: &mut MbufBurst, batch: &mut Batch, now: u64, depth: u32) {
        self.finish_batch_inner(burst, batch, now, depth, true);
    }

    /// `clear`: the burst is done (its slots not batched are freed).
    fn finish_batch_inner(&mut self, burst: &mut MbufBurst, batch: &mut Batch, now: u64, depth: u32, clear: bool) {
        self.depth = depth;
        if !batch.is_decided() {
            self.pipeline.decide_batch(batch, now, &mut self.c);
        }
        if self.lua.as_ref().is_some_and(LuaEngine::has_packet_rules) {
            self.run_rules(burst, batch);
        }
        // (after the packet rules: Haka's raw dissector signals receive_packet first)
        if self.lua.as_ref().is_some_and(|l| self.drops_ipv4(l)) {
            self.drop_unknown_ipv4(batch);
        }
        if self.stateful.is_some() {
            self.run_stateful(burst, batch);
        }
        let modified = self.modified;
        for j in 0..batch.len() {
            let (slot, d) = batch.result(j);
            if let Some(m) = burst.take(slot as usize) {
                let port = m.port();
                self.handle(m, d, modified >> slot & 1 != 0);
                if self.stateful.as_ref().is_some_and(|s| !s.forged.is_empty()) {
                    self.send_forged(Some((depth, slot)));
                }
                if !self.injected.is_empty() {
                    self.forged_after(slot, port, now, depth);
                }
            }
        }
        if !self.injected.is_empty() {
            // (made while processing a packet no longer in the burst)
            let port = self.plan.rx.first().map_or(0, |q| q.port);
            while let Some(slot) = self.injected.iter().find(|e| e.0 == depth).map(|e| e.1) {
                self.forged_after(slot, port, now, depth);
            }
        }
        self.send_forged(None);
        if let Some(l) = self.lua.as_mut() {
            l.after_burst();
        }
        self.modified = 0;
        self.alone = 0;
        batch.clear();
        if clear {
            burst.clear();
        }
    }

    /// With software dispatch: decides on the batched packets of `burst` (flow lookups)
    /// and hands those of flows other workers own over to them (a copy leaves the mbuf in
    /// the burst, freed with it); the rest stay batched, decided.
    #[inline(always)]
    fn decide_and_hand_over(&mut self, d: &mut Dispatch, burst: &mut MbufBurst, batch: &mut Batch, now: u64) {
        d.note_read();
        let me = self.plan.index;
        let others = self.pipeline.decide_batch_owned(batch, now, &mut self.c, me, |h| d.owner(Some(h)));
        for (slot, owner) in others {
            self.metas[slot as usize] = None;
            d.hand_over(owner, burst, slot as usize, &mut self.c);
        }
    }

    /// Processes a burst of the packets dispatched to this worker by others (its channels,
    /// then its ring). Returns how many it took.
    fn drain_ring(&mut self, now: u64, d: &mut Dispatch, buf: &mut MbufBurst, batch: &mut Batch) -> usize {
        let taken = d.receive(buf, &mut self.c) + d.inbound().dequeue(buf);
        let n = buf.len();
        // Another worker received these: their headers and bytes are in its cache. Ask
        // for all of them before using any, so that the transfers overlap.
        for m in buf.slots_mut().iter().flatten() {
            m.prefetch_header();
        }
        for m in buf.slots_mut().iter().flatten() {
            m.prefetch_data();
        }
        self.update_keep_metas();
        self.c.dispatched_in += taken as u64;
        let mut tracked = 0;
        for i in 0..n {
            if let Some(m) = buf.get(i) {
                let len = self.frag.as_ref().map_or(m.pkt_len(), |fs| fs.wire_len(m));
                let class = self.classify_slot(i, m.data(), len);
                if let Some(fs) = self.frag.as_ref() {
                    tracked += fs.is_tracked(m, &class) as i64;
                    if class.is_fragment() {
                        self.metas[i] = None;
                        self.finish_batch_before_fragment(buf, batch, now);
                        self.fragment(buf, i, class, now, batch);
                        continue;
                    }
                }
                batch.push(i as u8, class);
            }
        }
        self.finish_batch(buf, batch, now);
        if let Some(fs) = self.frag.as_ref() {
            fs.done_tracked(tracked);
        }
        taken
    }

    /// A fragment in slot `i` of `burst`: to the reassembly; a datagram it completes
    /// takes its slot in the batch when this worker owns its flow.
    fn fragment(&mut self, burst: &mut MbufBurst, i: usize, class: Class, now: u64, batch: &mut Batch) {
        let (Some(fs), Some(m)) = (self.frag.as_mut(), burst.take(i)) else { return };
        let rings = self.plan.rings.as_deref().map(Vec::as_slice);
        let mut lua = self.lua.as_mut().filter(|l| l.has_fragment_rules());
        let mut ran = false;
        // Haka's ipv4 receive_packet for the fragment itself, before it joins its datagram
        // (the upper dissectors see the datagram, once complete).
        let mut inspect = |m: &mut Mbuf, meta: &PacketMeta| -> FragInspect {
            let Some(lua) = lua.as_deref_mut() else { return FragInspect::Keep };
            ran = true;
            let ts = packet_time(m, &mut (0, 0));
            let port = m.port();
            let mut p = LuaPacket::new(m.data_mut(), meta, 0, u32::MAX);
            p.ts = ts;
            p.port = port;
            p.pass = Pass::Fragment;
            lua.run_burst(std::slice::from_mut(&mut p));
            // (its lines come out before an alert the reassembly may raise)
            lua.flush_logs();
            // (a resized fragment payload is not supported: it is left as it was)
            match (p.verdict, p.error) {
                (LuaVerdict::Drop, true) => FragInspect::Drop(DropReason::RuleError),
                (LuaVerdict::Drop, false) => FragInspect::Drop(DropReason::Rule),
                _ if p.dont_reassemble => FragInspect::Alone,
                _ => FragInspect::Keep,
            }
        };
        let out = fs.on_fragment(m, &class, now, &self.pipeline, rings, &mut self.c, &mut inspect);
        if ran {
            self.c.lua_packets += 1;
            if let Some(lua) = self.lua.as_mut() {
                if lua.has_forged() {
                    for f in lua.take_forged() {
                        self.injected.push((self.depth, i as u8, f));
                    }
                }
                copy_rule_counters(&mut self.c, lua);
            }
        }
        if let Some((m, class)) = out {
            let alone = !self.frag.as_ref().is_some_and(|fs| fs.is_carrier(&m));
            if burst.put(i, m).is_ok() {
                self.alone = self.alone & !(1 << i) | (alone as u32) << i;
                batch.push(i as u8, class);
            }
        }
    }
}

/// Runs one worker until `shared.stop`, then drains. `control` is called about
/// every 20 ms (the main lcore uses it for stats and signals) and returns true
/// to request the stop.
pub fn run(plan: WorkerPlan, shared: &Shared, pipeline: Pipeline, mut control: impl FnMut() -> bool) -> WorkerReport {
    let me = plan.index;
    let n_ports = plan.out_port.len();
    let tx: Vec<Option<TxBuffer>> = (0..n_ports)
        .map(|p| plan.out_port.iter().any(|o| *o == Some(p as u16)).then(|| TxBuffer::new(p as u16, plan.tx_queue)))
        .collect();
    let lua = plan.rules.as_ref().and_then(|(path, opts)| {
        let queue = plan.alerts.clone();
        let mut lost_logged = false;
        let sink = Box::new(move |a: crate::lua::Alert| {
            if !queue.push(a.into_output()) && !lost_logged {
                lost_logged = true;
                println!("worker {me}: alert queue full, alerts are being lost (counted)");
            }
        });
        // The main lcore loaded the same file already, so this cannot fail but
        // for a file changed in between: then this worker runs without rules.
        match LuaEngine::load(path, opts, me, sink) {
            Ok(mut e) => {
                let queue = plan.alerts.clone();
                e.set_console(Box::new(move |text| queue.push_console(text).err()));
                if let Err(err) = e.fire_started() {
                    println!("worker {me}: haka.events.started: {err}");
                }
                Some(e)
            }
            Err(e) => {
                println!("worker {me}: cannot load rules, accepting everything: {e}");
                None
            }
        }
    });
    let stateful = lua.as_ref().and_then(|l| {
        let (cfg, http) = plan.conn;
        let info = l.stateful_info();
        (cfg.tracks(6, info) || cfg.tracks(17, info)).then(|| {
            let conns = crate::conn::ConnTable::new(cfg, pipeline.flows().capacity());
            StatefulStage::new(conns, info, http, plan.pool)
        })
    });
    let owners = plan.channels.as_ref().map(|c| c.1.clone());
    let frag = plan.defrag.as_ref().map(|fp| FragStage::new(fp, me, plan.workers, owners, plan.alerts.clone(), &shared.frag_inflight));
    let mut lp = Loop {
        plan: &plan,
        pipeline,
        tx,
        c: Counters::default(),
        lua,
        stateful,
        ended: Vec::with_capacity(64),
        lua_sizes: Vec::new(),
        frag,
        modified: 0,
        alone: 0,
        rewrite_logged: false,
        metas: [None; BURST],
        keep_metas: false,
        injected: Vec::new(),
        depth: 0,
    };
    let mut reload_seen = shared.reload_generation.load(Ordering::Relaxed);
    let mut log_seen = u64::MAX;
    let mut dispatch = match (plan.rings.clone(), plan.channels.clone(), plan.pool) {
        (Some(r), Some((ch, owners)), Some(pool)) => Some(Dispatch::new(r, ch, owners, me, plan.dispatch_full, pool)),
        _ => None,
    };
    let mut rx = MbufBurst::new();
    let mut ringbuf = MbufBurst::new();
    let mut batch = Batch::default();
    let clock = Clock::new();
    let tick_every = (dpdk::tsc_hz() / 50).max(1);
    let mut next_tick = dpdk::tsc() + tick_every;
    let mut ticks: u64 = 0;
    let mut next_scan_rx = OFFLINE_SCAN_PACKETS;
    let mut iter: u64 = 0;
    // (no full burst in the last round: what was written for other workers goes at once)
    let mut idle = true;
    shared.polling.fetch_add(1, Ordering::SeqCst);
    if dispatch.is_some() {
        // With software dispatch the workers start reading together (up to a second apart
        // at most): a worker that starts alone would claim every new flow and leave its
        // neighbour's share to the hash (see `crate::dispatch::OwnerTable`).
        let deadline = dpdk::tsc() + dpdk::tsc_hz();
        while shared.polling.load(Ordering::SeqCst) < plan.workers && dpdk::tsc() < deadline && !shared.stop.load(Ordering::Relaxed) {
            std::hint::spin_loop();
        }
    }

    while !shared.stop.load(Ordering::Relaxed) {
        let now = clock.now_ms();
        // (waiting for room in another worker's ring: the input is not read meanwhile)
        // (what is written for other workers waits for more while the input is busy)
        let mut may_read = dispatch.as_mut().map_or(true, |d| d.flush(&mut lp.c, idle));
        idle = true;
        // Offline, fragments and reassembled datagrams (handed over on the rings) wait too:
        // a ring left to fill holds the pool's mbufs, and the fragments that would complete
        // the held datagrams could then never be read.
        if plan.offline && dispatch.as_ref().is_some_and(|d| d.rings().iter().any(|r| r.count() > OFFLINE_RING_LIMIT)) {
            may_read = false;
        }
        for q in &plan.rx {
            if !may_read {
                break;
            }
            let n = q.rx(&mut rx);
            if n == 0 {
                continue;
            }
            idle &= n < BURST;
            lp.update_keep_metas();
            lp.c.rx += n as u64;
            // With software dispatch, the packets of flows other workers own are found by
            // the flow lookups of the burst (or of its part before a fragment) and handed
            // over before the rest is inspected (the owner works on them meanwhile).
            for i in 0..n {
                let Some(m) = rx.get(i) else { continue };
                let class = lp.classify_slot(i, m.data(), m.pkt_len());
                if class.is_fragment() {
                    if let Some(d) = dispatch.as_mut() {
                        lp.decide_and_hand_over(d, &mut rx, &mut batch, now);
                    }
                    lp.metas[i] = None;
                    lp.finish_batch_before_fragment(&mut rx, &mut batch, now);
                    lp.fragment(&mut rx, i, class, now, &mut batch);
                    continue;
                }
                batch.push(i as u8, class);
            }
            if let Some(d) = dispatch.as_mut() {
                lp.decide_and_hand_over(d, &mut rx, &mut batch, now);
                may_read = d.flush(&mut lp.c, false);
            }
            lp.finish_batch(&mut rx, &mut batch, now);
        }
        if let Some(d) = dispatch.as_mut() {
            while lp.drain_ring(now, d, &mut ringbuf, &mut batch) == BURST {}
        }
        lp.flush_tx();
        if plan.offline && lp.c.rx >= next_scan_rx {
            // (offline, by packets rather than time: a capture gives the same results at
            // any speed)
            next_scan_rx = lp.c.rx + OFFLINE_SCAN_PACKETS;
            lp.scan_lua_flows();
        }
        lp.expire(now);
        if let Some(fs) = lp.frag.as_mut() {
            fs.housekeeping(now, &mut lp.c);
        }
        let gen = shared.reload_generation.load(Ordering::Relaxed);
        if gen != reload_seen {
            // Between bursts: nothing is in flight in this worker.
            reload_seen = gen;
            let built = shared.mailboxes[me].take_rules(gen);
            let outcome = lp.reload_rules(built);
            if outcome == Ok(true) {
                log_seen = u64::MAX; // (a new rules state: levels set again)
            }
            let _ = shared.mailboxes[me].reload.force_push((gen, outcome));
        }
        if iter & 15 == 0 {
            let lg = crate::logging::generation();
            if lg != log_seen {
                if let (Some(spec), Some(lua)) = (crate::logging::try_current(), lp.lua.as_ref()) {
                    lua.set_log_levels(&spec);
                    log_seen = lg;
                } else if lp.lua.is_none() {
                    log_seen = lg;
                }
            }
            let mb = &shared.mailboxes[me];
            if let Some((seq, q)) = mb.request.pop() {
                let _ = mb.answer.force_push((seq, lp.answer(q)));
            }
        }
        iter += 1;
        if iter & 63 == 0 {
            shared.counters[me].publish(&lp.c);
        }
        let t = dpdk::tsc();
        if t >= next_tick {
            next_tick = t + tick_every;
            ticks += 1;
            if ticks % 5 == 0 && !plan.offline {
                lp.scan_lua_flows();
            }
            shared.counters[me].publish(&lp.c);
            if control() {
                shared.stop.store(true, Ordering::SeqCst);
            }
        }
    }

    // Drain, phase 0: hand over what is still staged (serving this worker's ring
    // meanwhile: its neighbour may be waiting for room in it too). Bounded: a second
    // without progress drops the rest, counted.
    if let Some(d) = dispatch.as_mut() {
        let now = clock.now_ms();
        let patience = dpdk::tsc_hz().max(1);
        let mut since = (dpdk::tsc(), d.staged());
        while !d.flush(&mut lp.c, true) {
            lp.drain_ring(now, d, &mut ringbuf, &mut batch);
            lp.flush_tx();
            if d.staged() < since.1 {
                since = (dpdk::tsc(), d.staged());
            } else if dpdk::tsc() - since.0 > patience {
                println!("worker {me}: stopping with {} packets the other workers did not take", d.staged());
                d.drop_staged(&mut lp.c);
            }
            std::hint::spin_loop();
        }
    }
    // Drain, phase 1: this worker no longer takes packets from ports, so it no
    // longer dispatches. Keep serving the ring until every worker got here.
    shared.rx_stopped.fetch_add(1, Ordering::SeqCst);
    if let Some(d) = dispatch.as_mut() {
        let now = clock.now_ms();
        while shared.rx_stopped.load(Ordering::SeqCst) < plan.workers {
            lp.drain_ring(now, d, &mut ringbuf, &mut batch);
            lp.flush_tx();
            std::hint::spin_loop();
        }
        // Phase 2: only reassembled datagrams are still handed over; empty the
        // ring until none is in flight anywhere.
        // (Bounded: a second without anything to drain ends it anyway.)
        let patience = dpdk::tsc_hz().max(1);
        let mut idle_since = dpdk::tsc();
        loop {
            let n = lp.drain_ring(now, d, &mut ringbuf, &mut batch);
            if n > 0 {
                idle_since = dpdk::tsc();
                continue;
            }
            let inflight = shared.frag_inflight.load(Ordering::SeqCst);
            if inflight <= 0 {
                break;
            }
            if dpdk::tsc() - idle_since > patience {
                println!("worker {me}: stopping with {inflight} reassembled datagrams still in flight");
                break;
            }
            lp.flush_tx();
            std::hint::spin_loop();
        }
    }
    lp.flush_tx();
    if let Some(fs) = lp.frag.as_mut() {
        fs.shutdown(&mut lp.c);
    }
    let now = clock.now_ms();
    lp.expire(now);
    // Connections still open at exit get their end_connection (rules flush per-flow state),
    // the newest first as Haka's connection table ended them.
    if let Some(stage) = lp.stateful.as_mut() {
        for id in stage.conns.ids().into_iter().rev() {
            stage.forget(lp.lua.as_mut(), id, &mut lp.c);
        }
        // (every charge taken back: held bytes 0, the budget conserved)
        lp.c.set_memory(&stage.conns.mem);
    }
    if let Some(lua) = lp.lua.as_mut() {
        if let Err(err) = lua.fire_exiting() {
            println!("worker {me}: haka.events.exiting: {err}");
        }
    }
    lp.c.cpu_ns = dpdk::thread_cpu_ns();
    shared.counters[me].publish(&lp.c);
    let table = lp.pipeline.flows();
    let flows = if plan.dump_flows { table.iter().map(|(id, f)| flow_json(me, id, f)).collect() } else { Vec::new() };
    WorkerReport {
        index: me,
        counters: lp.c,
        table_bytes: table.memory_bytes(),
        table_capacity: table.capacity(),
        flows,
    }
}

/// `ADDR:PORT`, IPv6 as `[ADDR]:PORT`.
fn endpoint_string(a: &[u8; 16], port: u16) -> String {
    match Ipv6Addr::from(*a).to_ipv4_mapped() {
        Some(v4) => format!("{}:{port}", Ipv4Addr::from(v4)),
        None => format!("[{}]:{port}", Ipv6Addr::from(*a)),
    }
}

/// One flow as a JSON line (`--flow-dump`, `hakactl flows`); `flow_id` is the one its
/// alerts carry ([`crate::flow::flow_uid`]).
pub fn flow_json(worker: usize, id: crate::flow::FlowId, f: &Flow) -> String {
    let k = &f.key;
    let (client, server) = match f.client {
        Side::Lo => ((k.lo_addr, k.lo_port), (k.hi_addr, k.hi_port)),
        Side::Hi => ((k.hi_addr, k.hi_port), (k.lo_addr, k.lo_port)),
    };
    serde_json::json!({
        "flow_id": crate::flow::flow_uid(worker, id, f),
        "worker": worker,
        "proto": k.proto,
        "vlan": k.vlan,
        "client": endpoint_string(&client.0, client.1),
        "server": endpoint_string(&server.0, server.1),
        "packets_up": f.packets[0],
        "packets_down": f.packets[1],
        "bytes_up": f.bytes[0],
        "bytes_down": f.bytes[1],
        "tcp": format!("{:?}", f.tcp),
    })
    .to_string()
}

/// The rule engine's error counters, mirrored in the worker's stats after each burst.
fn copy_rule_counters(c: &mut Counters, lua: &LuaEngine) {
    let lc = lua.counters();
    c.rule_errors = lc.rule_errors;
    c.rule_budget_exceeded = lc.budget_exceeded;
    c.rule_memory_exceeded = lc.memory_exceeded;
    c.rules_disabled = lc.rules_disabled;
    c.alerts_suppressed = lc.alerts_suppressed;
    c.stateful[crate::stats::Stateful::LuaProtocolErrors as usize] = lc.protocol_errors;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{FlowKey, TcpPhase};

    fn flow(lo: [u8; 16], hi: [u8; 16], first_seen_ms: u64) -> Flow {
        Flow {
            key: FlowKey { lo_addr: lo, hi_addr: hi, lo_port: 80, hi_port: 40000, vlan: 0, proto: 6 },
            client: Side::Hi,
            packets: [3, 2],
            bytes: [300, 200],
            first_seen_ms,
            last_seen_ms: first_seen_ms + 5,
            tcp: TcpPhase::Established,
        }
    }

    #[test]
    fn flow_lines_bracket_ipv6_and_carry_the_alerts_flow_id() {
        let v6 = |last: u8| {
            let mut a = [0u8; 16];
            a[0] = 0x20;
            a[1] = 0x01;
            a[2] = 0x0d;
            a[3] = 0xb8;
            a[15] = last;
            a
        };
        let f = flow(v6(1), v6(2), 1000);
        let j: serde_json::Value = serde_json::from_str(&flow_json(1, 7, &f)).unwrap();
        assert_eq!(j["client"], "[2001:db8::2]:40000");
        assert_eq!(j["server"], "[2001:db8::1]:80");
        assert_eq!(j["flow_id"], crate::flow::flow_uid(1, 7, &f));
        // IPv4 (mapped) stays ADDR:PORT
        let v4 = |d: u8| {
            let mut a = [0u8; 16];
            a[10] = 0xff;
            a[11] = 0xff;
            a[12..].copy_from_slice(&[198, 18, 0, d]);
            a
        };
        let j: serde_json::Value = serde_json::from_str(&flow_json(0, 7, &flow(v4(2), v4(1), 1000))).unwrap();
        assert_eq!((j["client"].as_str(), j["server"].as_str()), (Some("198.18.0.1:40000"), Some("198.18.0.2:80")));
        // ids: stable per flow, different for another slot, worker or creation time
        let id = crate::flow::flow_uid(1, 7, &f);
        assert_eq!(id, crate::flow::flow_uid(1, 7, &f));
        assert!(id > 0 && id < 1 << 51);
        for other in [crate::flow::flow_uid(0, 7, &f), crate::flow::flow_uid(1, 8, &f), crate::flow::flow_uid(1, 7, &flow(v6(1), v6(2), 1001))] {
            assert_ne!(id, other);
        }
    }
}
