//! The connection table: the flow contexts Haka's connection dissectors (`tcp_connection`,
//! `udp_connection`: [`crate::dissectors::tcp_connection`], [`crate::dissectors::udp_connection`])
//! create, one [`ConnTable`] per worker, beside its flow table and indexed by the same
//! [`FlowId`]: a connection exists only for flows the stateful layer looked at (so workers
//! whose rules use no stateful event pay nothing).
//!
//! It is not a dissector and so not a folder of `dissectors/`: it is what both connection
//! dissectors share and what outlives the packet, Haka's flow context: a connection's
//! orientation, `flow:drop()`, the application dissector a policy installed on it, its
//! Lua object's size, and the memory budget ([`memory`]) that charges all of them. Each
//! [`Conn`] holds its connection dissector ([`Connection`]: the TCP state machine and
//! reassemblers, or nothing for UDP); the table hands it the packet ([`ConnTable::receive`])
//! through a static `match`.
//!
//! Per packet the worker calls [`ConnTable::receive`] (connection creation by the
//! dissector's `open`, its state step), then, for TCP, [`ConnTable::tcp_data`]
//! (stream reassembly: the in-order bytes this packet made readable) and, for the
//! application dissector selected by the rules (HTTP, DNS, TLS), its `receive_stream`
//! / `receive_datagram`. The Lua events are fired by the worker between these steps, so a
//! rule's verdict (drop, reset, next dissector) applies before the next step.
//!
//! Memory: a connection is a small box plus, for TCP flows whose data is inspected,
//! two reassemblers bounded per flow and per worker ([`ByteBudget`]); everything is
//! released by [`ConnTable::end`] when the flow ends, expires or is evicted.
#![deny(unsafe_code)]


use crate::dissectors::tcp_connection::{DataResult, NoConnection, TcpConnection, TcpInfo, TcpState};
use crate::dissectors::{Connection, ConnectionKind, Dissector, DissectorId, Opened, Segment, Settings};
use crate::flow::{Direction, FlowId};
use crate::stream::{ByteBudget, StreamConfig, StreamReassembler};

pub mod memory;
use memory::{FlowMemory, Held, MemoryConfig, OverCap};

/// How a body being modified keeps a valid framing (`http:enable_data_modification()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// Each slice of body data leaves as a chunk of its own, the body's own framing (a
    /// chunked body's size lines, CRLFs, last chunk and trailers) removed: its head says
    /// `Transfer-Encoding: chunked` (now, or it did).
    Rechunk,
    /// Read until the end of the stream (a transfer coding other than chunked): no framing.
    Keep,
}

/// Stateful-layer configuration (`[tcp]` in the config file).
#[derive(Clone, Copy, Debug)]
pub struct ConnConfig {
    pub no_connection_found: NoConnection,
    /// Haka's `unexpected_packet` default (alert and drop) for a SYN or SYN-ACK on an
    /// established connection; false: let it through (counted).
    pub unexpected_drop: bool,
    /// Bytes of already-inspected data kept per direction to compare retransmissions
    /// with (a retransmission carrying different bytes is the classic evasion); 0: off.
    pub conflict_history: usize,
    /// Out-of-order bytes buffered per direction of a flow.
    pub max_buffered_per_flow: usize,
    /// Out-of-order bytes buffered by all the flows of a worker.
    pub max_buffered_per_worker: usize,
    /// Verdict for a segment whose out-of-order data went over a cap: drop (the
    /// sender retransmits it later) or accept it uninspected.
    pub over_cap_drop: bool,
    /// `[rules] dissectors = "required"`: connections are tracked only when the rules
    /// file loaded tcp_connection / udp_connection (Haka's chain).
    pub required_chain: bool,
    /// Passive mode (Haka's pass-through): the rules may read stream data, not modify it
    /// (a modification raises Haka's "read only buffer").
    pub read_only_streams: bool,
    /// Forged RSTs (`flow:reset()`) carry the RST flag alone, acknowledgement 0 and no DF,
    /// as Haka forged them (`[tcp] reset_flags = "rst"`); false: RST+ACK with the
    /// acknowledgement number.
    pub bare_resets: bool,
    /// Segments rewritten by stream edits or sequence shifts get their TCP checksum computed
    /// again (`[tcp] edit_checksum = "recompute"`, Haka) rather than updated.
    pub recompute_checksums: bool,
    /// How long a dropped connection's state lasts when it does not close, s (Haka: 60).
    pub drop_timeout_s: u64,
    /// Largest IP packet a stream edit may make (`[tcp] mtu`; 0: no limit).
    pub mtu: usize,
    /// The flow memory budget (`[memory]`).
    pub memory: MemoryConfig,
}

impl ConnConfig {
    /// Whether the stateful stage runs for `proto` (6 or 17) given the rules' `info`
    /// bits (`crate::lua::stateful`): when a rule or application needs it, or for
    /// TCP when a `[tcp]` setting alerts and drops (Haka's connection tracking);
    /// under the required chain, only when the connection dissector is loaded.
    pub fn tracks(&self, proto: u8, info: u32) -> bool {
        use crate::lua::stateful as sf;
        let (loaded, wanted) = match proto {
            6 => (
                info & sf::TCP_CONNECTION_LOADED != 0,
                info & (sf::TCP_EVENTS | sf::TCP_DATA | sf::TCP_POLICIES | sf::APPS) != 0
                    || self.no_connection_found == NoConnection::Drop
                    || self.unexpected_drop,
            ),
            17 => (
                info & sf::UDP_CONNECTION_LOADED != 0,
                info & (sf::UDP_EVENTS | sf::UDP_DATA | sf::UDP_POLICIES | sf::APPS) != 0,
            ),
            _ => return false,
        };
        wanted && (loaded || !self.required_chain)
    }
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            no_connection_found: NoConnection::Pickup,
            unexpected_drop: false,
            conflict_history: 16 * 1024,
            max_buffered_per_flow: 256 * 1024,
            max_buffered_per_worker: 64 << 20,
            over_cap_drop: true,
            required_chain: false,
            read_only_streams: false,
            bare_resets: false,
            recompute_checksums: false,
            drop_timeout_s: 60,
            mtu: 1500,
            memory: MemoryConfig::default(),
        }
    }
}

/// One tracked connection (TCP or UDP): the flow context its connection dissector made.
pub struct Conn {
    /// Its `tcp_connection` or `udp_connection` dissector.
    pub dissector: Connection,
    /// Connection direction = flow direction XOR flip (the flow table calls the first
    /// sender "up"; a connection picked up mid-stream orients itself by the ports).
    pub flip: bool,
    /// `flow:drop()`: every later packet is dropped silently, until the connection
    /// closes or `drop_timeout` passes; then a new SYN starts a new connection.
    pub dropped: bool,
    /// When it was dropped (packet time, s), and whether it closed since (FIN both
    /// ways, or RST).
    dropped_at: u64,
    dropped_closed: bool,
    /// Picked up without a handshake.
    pub picked_up: bool,
    /// The application dissector a `next_dissector` policy installed, and its id.
    pub app: Option<Box<dyn Dissector>>,
    pub app_id: DissectorId,
    /// Per direction: the current HTTP message's body is being modified (re-framed as
    /// chunks by the stage, or its chunk size lines rewritten when it was chunked), after
    /// `http:enable_data_modification()`.
    pub data_mod: [Option<BodyFraming>; 2],
    /// Over its memory cap with `[memory] over_cap = "accept"`: its state was freed and
    /// its data is no longer inspected.
    pub uninspected: bool,
    /// What the flow memory budget charged it (bytes, class), once charged.
    charge: Option<(usize, u8)>,
    /// Bytes of its Lua flow object, as the worker's last scan measured them.
    lua_bytes: usize,
    /// A cap its Lua object's growth crossed (found by the scan, between packets):
    /// handled at its next packet, which the alert is about.
    pub lua_over: Option<OverCap>,
}

impl Conn {
    fn new(dissector: Connection, flip: bool) -> Conn {
        Conn {
            dissector,
            flip,
            dropped: false,
            dropped_at: 0,
            dropped_closed: false,
            picked_up: false,
            app: None,
            app_id: 0,
            data_mod: [None; 2],
            uninspected: false,
            charge: None,
            lua_bytes: 0,
            lua_over: None,
        }
    }

    /// Its IP protocol (6, 17).
    pub fn proto(&self) -> u8 {
        self.dissector.kind().registration().proto()
    }

    /// Its TCP state (a UDP connection is `established` for Lua, as in Haka).
    pub fn state(&self) -> TcpState {
        self.tcp().map_or(TcpState::Established, |t| t.state)
    }

    /// Its `tcp_connection` dissector (TCP connections).
    pub fn tcp(&self) -> Option<&TcpConnection> {
        self.dissector.tcp()
    }

    pub fn tcp_mut(&mut self) -> Option<&mut TcpConnection> {
        self.dissector.tcp_mut()
    }

    /// The bytes this connection holds, by part (the flow memory budget).
    pub fn held(&self) -> Held {
        let mut h = Held { fixed: std::mem::size_of::<Conn>(), stream: 0, parser: 0, lua: self.lua_bytes };
        if let Some(s) = self.tcp().and_then(|t| t.streams.as_ref()) {
            h.fixed += std::mem::size_of::<[StreamReassembler; 2]>();
            h.stream = s[0].held_bytes() + s[1].held_bytes();
        }
        if let Some(a) = &self.app {
            h.fixed += std::mem::size_of_val(&**a);
            h.parser = a.held_bytes();
        }
        h
    }

    /// Connection direction of a packet the flow table saw in `flow_dir`.
    pub fn dir(&self, flow_dir: Direction) -> u8 {
        ((flow_dir == Direction::Down) ^ self.flip) as u8
    }

    /// Some stream edit shifted sequence numbers: every later packet is rewritten.
    pub fn has_shift(&self) -> bool {
        self.tcp().is_some_and(|t| t.has_shift())
    }

    fn release(&mut self, budget: &mut ByteBudget) {
        if let Some(t) = self.tcp_mut() {
            t.release(budget);
        }
    }
}

/// A connection dissector's step for one packet ([`ConnTable::receive`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// A connection was created by this packet (fire new_connection).
    pub created: bool,
    /// A connection ended on an earlier packet of this flow was replaced (SYN in
    /// timed_wait, or a flow id reused after eviction): end_connection was due for it
    /// and `ConnTable::end` was already called.
    pub restarted: bool,
    /// The packet belongs to a live connection (fire receive_packet, then data).
    pub live: bool,
    /// Connection direction of the packet (0 up, 1 down).
    pub dir: u8,
    /// The connection ended with this packet (fire end_connection after its data).
    pub ended: bool,
    /// Drop the packet silently (connection dropped by a rule).
    pub drop_silently: bool,
    /// No connection and the policy is strict: alert and drop.
    pub no_connection: bool,
    /// A SYN or SYN-ACK on a connection past its handshake (a retransmission, or a
    /// forged packet): with `unexpected_drop`, alert and drop it.
    pub unexpected: bool,
    /// The unexpected packet is a retransmitted SYN or SYN-ACK: Haka's stream drops it
    /// as old data, without an alert.
    pub retransmitted_syn: bool,
}

/// What a connection dissector's [`receive_connection`](Dissector::receive_connection)
/// reads and changes beside its own state.
pub struct ConnContext<'a> {
    pub cfg: &'a ConnConfig,
    /// `flow:drop()` was called on the connection: its packets are dropped silently.
    pub dropped: bool,
    /// The dropped connection closed since (FIN both ways, or RST): a new one may start.
    pub dropped_closed: bool,
    /// The worker's budget of out-of-order stream bytes.
    pub budget: &'a mut ByteBudget,
    pub counters: &'a mut ConnCounters,
}

/// Counters of the stateful layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnCounters {
    pub tcp_created: u64,
    pub tcp_picked_up: u64,
    pub tcp_no_connection: u64,
    pub udp_created: u64,
    pub ended: u64,
    pub overlap_conflicts: u64,
    pub over_cap: u64,
    pub out_of_window: u64,
    pub retransmissions: u64,
}

pub struct ConnTable {
    cfg: ConnConfig,
    conns: Vec<Option<Box<Conn>>>,
    budget: ByteBudget,
    live: usize,
    pub counters: ConnCounters,
    /// Every byte held for the connections, against `[memory]`'s caps.
    pub mem: FlowMemory,
    /// Reassembler pairs of ended connections, recycled (their history rings stay
    /// allocated) for the next ones: at most [`SPARE_STREAMS`].
    spare_streams: Vec<Box<[StreamReassembler; 2]>>,
    /// Application dissectors of ended connections that can be reset, likewise (an HTTP
    /// state keeps its parsers' buffers), per id: at most [`SPARE_STREAMS`] each.
    spare_apps: Vec<Vec<Box<dyn Dissector>>>,
    /// Packet time of the current packet, s ([`set_time`](Self::set_time)).
    now_s: u64,
}

/// Reassembler pairs kept for reuse per worker (each holds two history rings of
/// `conflict_history` bytes: 64 pairs of the default 16 KiB rings are 2 MiB).
const SPARE_STREAMS: usize = 64;

impl ConnTable {
    /// `capacity`: the flow table's capacity (flow ids are below it).
    pub fn new(cfg: ConnConfig, capacity: usize) -> ConnTable {
        let mut conns = Vec::new();
        conns.resize_with(capacity, || None);
        ConnTable {
            cfg,
            conns,
            budget: ByteBudget::new(cfg.max_buffered_per_worker),
            live: 0,
            mem: FlowMemory::new(cfg.memory),
            counters: ConnCounters::default(),
            spare_streams: Vec::new(),
            spare_apps: Vec::new(),
            now_s: 0,
        }
    }

    pub fn config(&self) -> &ConnConfig {
        &self.cfg
    }

    /// The configuration of every reassembler.
    fn stream_config(&self) -> StreamConfig {
        StreamConfig { max_buffered_per_flow: self.cfg.max_buffered_per_flow }
    }

    pub fn get(&self, id: FlowId) -> Option<&Conn> {
        self.conns.get(id as usize).and_then(|c| c.as_deref())
    }

    pub fn get_mut(&mut self, id: FlowId) -> Option<&mut Conn> {
        self.conns.get_mut(id as usize).and_then(|c| c.as_deref_mut())
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Ids of the flows that have a connection (shutdown).
    pub fn ids(&self) -> Vec<FlowId> {
        self.conns.iter().enumerate().filter(|(_, c)| c.is_some()).map(|(i, _)| i as FlowId).collect()
    }

    /// Out-of-order bytes currently buffered by this worker.
    pub fn buffered_bytes(&self) -> usize {
        self.cfg.max_buffered_per_worker - self.budget.remaining
    }

    /// Forgets the connection of flow `id` (flow ended, expired, evicted or reused)
    /// and frees its memory. Returns whether there was one that had not ended yet
    /// (the caller fires end_connection for it).
    pub fn end(&mut self, id: FlowId) -> Option<Box<Conn>> {
        let mut c = self.conns.get_mut(id as usize)?.take()?;
        if let Some((bytes, class)) = c.charge.take() {
            self.mem.uncharge(bytes, class);
        }
        self.mem.lua_held -= c.lua_bytes.min(self.mem.lua_held);
        if let Some(mut s) = c.tcp_mut().and_then(|t| t.streams.take()) {
            if self.spare_streams.len() < SPARE_STREAMS {
                let cfg = self.stream_config();
                s[0].recycle(cfg, &mut self.budget);
                s[1].recycle(cfg, &mut self.budget);
                self.spare_streams.push(s);
            } else {
                s[0].release(&mut self.budget);
                s[1].release(&mut self.budget);
            }
        }
        if let Some(a) = c.app.take().filter(|a| a.reusable()) {
            let i = c.app_id as usize;
            if self.spare_apps.len() <= i {
                self.spare_apps.resize_with(i + 1, Vec::new);
            }
            if self.spare_apps[i].len() < SPARE_STREAMS {
                self.spare_apps[i].push(a);
            }
        }
        c.release(&mut self.budget);
        self.live -= 1;
        Some(c)
    }

    /// Hands packet `seg` of flow `id`, seen in `flow_dir`, to connection dissector
    /// `kind`: a flow without a connection goes to the dissector's `open` (Haka: the
    /// transport dissector creates it), a connection to its dissector's
    /// `receive_connection`. `flow_created`: the flow table created the flow for this
    /// packet (a stale connection at that id belongs to an evicted flow).
    #[inline]
    pub fn receive(&mut self, kind: ConnectionKind, id: FlowId, flow_created: bool, flow_dir: Direction, seg: &Segment) -> Step {
        let mut step = Step::default();
        let Some(slot) = self.conns.get(id as usize) else { return step };
        if let Some(c) = slot.as_deref() {
            if flow_created || (c.dissector.reopened_by(seg) && (c.dissector.ended() || self.drop_over(c))) {
                // Evicted flow's leftovers, or a new connection on the same ports after the
                // previous one closed (Haka's restart) or after the previous one was dropped
                // and closed or timed out.
                let old = self.end(id);
                step.restarted = old.is_some_and(|c| !c.dissector.ended());
            }
        }
        let Some(c) = self.conns[id as usize].as_deref_mut() else {
            match kind.open(seg, &self.cfg, &mut self.counters) {
                Opened::Pass => {}
                Opened::NoConnection => step.no_connection = true,
                Opened::New { conn, sender_is_server, picked_up } => {
                    // (the client's side is connection direction 0)
                    let mut c = Conn::new(conn, (flow_dir == Direction::Down) ^ sender_is_server);
                    c.picked_up = picked_up;
                    self.insert(id, c);
                    step.created = true;
                    step.live = true;
                    step.dir = sender_is_server as u8;
                }
            }
            return step;
        };
        let dir = c.dir(flow_dir);
        let mut cx = ConnContext {
            cfg: &self.cfg,
            dropped: c.dropped,
            dropped_closed: c.dropped_closed,
            budget: &mut self.budget,
            counters: &mut self.counters,
        };
        let s = c.dissector.receive(dir, seg, &mut cx);
        c.dropped_closed = cx.dropped_closed;
        Step { restarted: step.restarted, dir, ..s }
    }

    fn insert(&mut self, id: FlowId, c: Conn) {
        self.conns[id as usize] = Some(Box::new(c));
        self.live += 1;
    }

    /// Feeds the payload of a TCP segment (connection direction `dir`) to its
    /// direction's reassembler ([`TcpConnection::receive_data`]).
    pub fn tcp_data(&mut self, id: FlowId, dir: u8, t: &TcpInfo, payload: &[u8]) -> DataResult {
        let cfg = self.stream_config();
        let history = self.cfg.conflict_history;
        let Some(c) = self.conns.get_mut(id as usize).and_then(|c| c.as_deref_mut()) else { return DataResult::default() };
        if c.dropped || c.uninspected {
            return DataResult::default();
        }
        let Some(tcp) = c.tcp_mut() else { return DataResult::default() };
        let r = tcp.receive_data(dir, t, payload, &mut self.spare_streams, cfg, history, &mut self.budget);
        let res = &r.seg;
        self.counters.overlap_conflicts += res.overlap_conflict as u64;
        self.counters.over_cap += res.over_cap as u64;
        self.counters.out_of_window += res.out_of_window as u64;
        self.counters.retransmissions += res.duplicate as u64;
        r
    }

    /// The readable (reassembled, not yet consumed) bytes of a direction.
    pub fn read(&self, id: FlowId, dir: u8) -> &[u8] {
        self.get(id).and_then(|c| c.tcp()).map_or(&[], |t| t.read(dir))
    }

    /// Marks every readable byte of a direction as consumed.
    pub fn consume_all(&mut self, id: FlowId, dir: u8) {
        if let Some(t) = self.get_mut(id).and_then(|c| c.tcp_mut()) {
            t.consume_all(dir);
        }
    }

    /// Stream offset (bytes since the start of the inspected stream) of the next byte
    /// the direction expects.
    pub fn stream_offset(&self, id: FlowId, dir: u8) -> u64 {
        self.get(id).and_then(|c| c.tcp()).map_or(0, |t| t.stream_offset(dir))
    }

    /// Installs dissector `id` on connection `flow` (a recycled state when there is one).
    pub fn install_app(&mut self, flow: FlowId, id: DissectorId, settings: &Settings) {
        let Some(reg) = crate::dissectors::registration(id) else { return };
        let Some(proto) = self.get(flow).map(|k| k.proto()) else { return };
        let spare = self.spare_apps.get_mut(id as usize).and_then(|v| v.pop());
        let app = match spare {
            Some(mut a) => {
                a.reset(settings);
                a
            }
            None => (reg.new)(settings, proto),
        };
        if let Some(k) = self.get_mut(flow).filter(|k| !k.uninspected) {
            k.app = Some(app);
            k.app_id = id;
        }
    }

    /// Charges connection `id` what it holds now, against the flow memory budget; the cap
    /// it went over, if any (the caller applies `[memory] over_cap`: [`drop_conn`] or
    /// [`stop_inspecting`], which free its state).
    ///
    /// [`drop_conn`]: Self::drop_conn
    /// [`stop_inspecting`]: Self::stop_inspecting
    pub fn recharge(&mut self, id: FlowId) -> Option<OverCap> {
        let c = self.conns.get_mut(id as usize).and_then(|c| c.as_deref_mut())?;
        let held = c.held();
        let class = memory::class_of(c.proto(), c.app_id);
        if c.charge.is_some_and(|(b, k)| b == held.total() && k == class) {
            return None;
        }
        let over = self.mem.charge(c.charge, &held, class);
        c.charge = Some((held.total(), class));
        over
    }

    /// Charges connection `id` the `bytes` its Lua flow object holds now (the worker's scan
    /// of the Lua flow objects); a cap that growth crosses is kept in `lua_over` for the
    /// connection's next packet.
    pub fn set_lua_bytes(&mut self, id: FlowId, bytes: usize) {
        let Some(c) = self.conns.get_mut(id as usize).and_then(|c| c.as_deref_mut()) else { return };
        if c.lua_bytes == bytes || c.uninspected || c.dropped {
            return;
        }
        self.mem.lua_held = self.mem.lua_held + bytes - c.lua_bytes.min(self.mem.lua_held);
        c.lua_bytes = bytes;
        if let Some(over) = self.recharge(id) {
            if let Some(c) = self.get_mut(id) {
                c.lua_over = Some(over);
            }
        }
    }

    /// The connection's Lua object is gone (end_connection ran, or its state was freed).
    pub fn clear_lua_bytes(&mut self, id: FlowId) {
        let Some(c) = self.conns.get_mut(id as usize).and_then(|c| c.as_deref_mut()) else { return };
        self.mem.lua_held -= c.lua_bytes.min(self.mem.lua_held);
        c.lua_bytes = 0;
        c.lua_over = None;
        self.recharge(id);
    }

    /// `[memory] over_cap = "accept"`: frees connection `id`'s streams and application
    /// state; its later data passes uninspected.
    pub fn stop_inspecting(&mut self, id: FlowId) {
        self.free_state(id);
        if let Some(c) = self.get_mut(id) {
            c.uninspected = true;
        }
        self.recharge(id);
    }

    /// Frees a connection's streams and application state (recycling them).
    fn free_state(&mut self, id: FlowId) {
        let Some(c) = self.conns.get_mut(id as usize).and_then(|c| c.as_deref_mut()) else { return };
        c.release(&mut self.budget);
        // (not recycled: its buffers are what went over)
        c.app = None;
    }

    /// Whether dropped connection `c` is over: closed since, or dropped `drop_timeout_s` ago.
    fn drop_over(&self, c: &Conn) -> bool {
        c.dropped && (c.dropped_closed || self.now_s.saturating_sub(c.dropped_at) >= self.cfg.drop_timeout_s)
    }

    /// The packet time (s) of the packets stepped from now on (drop timeouts).
    pub fn set_time(&mut self, now_s: u64) {
        self.now_s = now_s;
    }

    /// The `flow:drop()` of a rule: later packets are dropped; stream memory freed.
    pub fn drop_conn(&mut self, id: FlowId) {
        let budget = &mut self.budget;
        let now = self.now_s;
        if let Some(c) = self.conns.get_mut(id as usize).and_then(|c| c.as_deref_mut()) {
            if !c.dropped {
                c.dropped_at = now;
                if let Some(t) = c.tcp_mut() {
                    t.fin = [false; 2];
                }
            }
            c.dropped = true;
            c.release(budget);
        }
        self.recharge(id);
    }

    /// `[memory] over_cap = "drop"`: the connection is dropped and all its state freed.
    pub fn drop_over_cap(&mut self, id: FlowId) {
        self.free_state(id);
        self.drop_conn(id);
    }
}

#[cfg(test)]
mod tests;
