//! Stateful inspection: Haka's `tcp_connection` and `udp_connection` dissectors,
//! minus Lua. One [`ConnTable`] per worker, beside its flow table and indexed by the
//! same [`FlowId`]: a connection exists only for flows the stateful layer looked at
//! (so workers whose rules use no stateful event pay nothing).
//!
//! Per packet the worker calls [`ConnTable::packet`] (state machine, connection
//! creation, the `no_connection_found` policy), then, for TCP, [`ConnTable::data`]
//! (stream reassembly: the in-order bytes this packet made readable) and, for the
//! application dissector selected by the rules (HTTP, DNS, TLS), [`app`]. The Lua
//! events are fired by the worker between these steps, so a rule's verdict (drop,
//! reset, next dissector) applies before the next step.
//!
//! Memory: a connection is a small box plus, for TCP flows whose data is inspected,
//! two reassemblers bounded per flow and per worker ([`ByteBudget`]); everything is
//! released by [`ConnTable::end`] when the flow ends, expires or is evicted.
#![deny(unsafe_code)]


use crate::flow::{Direction, FlowId};
use crate::stream::{ByteBudget, SegmentResult, StreamConfig, StreamReassembler};
use crate::tcp_edit::SeqShift;
use crate::dissectors::{Dissector, DissectorId, Settings};

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

/// TCP states, named as in Haka's `tcp_connection.lua`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpState {
    Syn,
    SynSent,
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    Closing,
    TimedWait,
    Reset,
}

impl TcpState {
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Syn => "syn",
            TcpState::SynSent => "syn_sent",
            TcpState::SynReceived => "syn_received",
            TcpState::Established => "established",
            TcpState::FinWait1 => "fin_wait_1",
            TcpState::FinWait2 => "fin_wait_2",
            TcpState::Closing => "closing",
            TcpState::TimedWait => "timed_wait",
            TcpState::Reset => "reset",
        }
    }

    /// Code shared with Lua (`flow.state` reads the name from it).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The connection is over (end_connection fired): later packets are stragglers.
    pub fn is_ended(self) -> bool {
        matches!(self, TcpState::TimedWait | TcpState::Reset)
    }
}

/// What to do with a TCP packet that belongs to no known connection (no SYN seen).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoConnection {
    /// Start tracking mid-stream (the default: a restart of the engine or an
    /// asymmetric route must not cut live connections).
    Pickup,
    /// Haka's behaviour: alert and drop the packet.
    Drop,
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

/// One tracked connection (TCP or UDP).
pub struct Conn {
    pub proto: u8,
    pub state: TcpState,
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
    /// Which side sent the first FIN (up = 0).
    closer: u8,
    fin: [bool; 2],
    /// TCP only, created on the first data the layer must inspect.
    streams: Option<Box<[StreamReassembler; 2]>>,
    /// Initial sequence numbers seen in SYNs (streams are created lazily).
    isn: [Option<u32>; 2],
    /// Sequence shift per direction after stream edits (identity when none).
    pub shift: [SeqShift; 2],
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
    fn new(proto: u8, state: TcpState, flip: bool) -> Conn {
        Conn {
            proto,
            state,
            flip,
            dropped: false,
            dropped_at: 0,
            dropped_closed: false,
            picked_up: false,
            closer: 0,
            fin: [false; 2],
            streams: None,
            isn: [None; 2],
            shift: [SeqShift::default(), SeqShift::default()],
            app: None,
            app_id: 0,
            data_mod: [None; 2],
            uninspected: false,
            charge: None,
            lua_bytes: 0,
            lua_over: None,
        }
    }

    /// The bytes this connection holds, by part (the flow memory budget).
    pub fn held(&self) -> Held {
        let mut h = Held { fixed: std::mem::size_of::<Conn>(), stream: 0, parser: 0, lua: self.lua_bytes };
        if let Some(s) = &self.streams {
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
        !self.shift[0].is_identity() || !self.shift[1].is_identity()
    }

    fn release(&mut self, budget: &mut ByteBudget) {
        if let Some(s) = self.streams.as_mut() {
            s[0].release(budget);
            s[1].release(budget);
        }
        self.streams = None;
    }
}

/// TCP header facts the state machine needs.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpInfo {
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub payload_len: u32,
}

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// Result of [`ConnTable::packet`].
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

/// Why data did not reach the rules (counted by the worker).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataResult {
    /// In-order bytes made readable by this segment (read them with [`ConnTable::read`]).
    pub delivered: usize,
    /// The readable bytes are exactly this packet's payload (no copy was made: read
    /// them from the packet).
    pub in_place: bool,
    pub seg: SegmentResult,
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

/// Is `port` more likely the server's? (well-known below 1024, else the lower one).
fn looks_like_server(port: u16, other: u16) -> bool {
    match (port < 1024, other < 1024) {
        (true, false) => true,
        (false, true) => false,
        _ => port < other,
    }
}

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
        if let Some(mut s) = c.streams.take() {
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

    /// State machine step for a TCP packet of flow `id` seen in `flow_dir`.
    /// `flow_created`: the flow table created the flow for this packet (a stale
    /// connection at that id belongs to an evicted flow). `ports`: (src, dst) of the packet.
    pub fn tcp_packet(&mut self, id: FlowId, flow_created: bool, flow_dir: Direction, t: &TcpInfo, ports: (u16, u16)) -> Step {
        let mut step = Step::default();
        let Some(slot) = self.conns.get(id as usize) else { return step };
        let f = t.flags;
        let syn_only = f & (SYN | ACK) == SYN;
        let over = |c: &Conn| c.state.is_ended() || self.drop_over(c);
        if slot.is_some() && (flow_created || (syn_only && slot.as_ref().is_some_and(|c| over(c)))) {
            // Evicted flow's leftovers, or a new connection on the same ports after the
            // previous one closed (Haka's restart) or after the previous one was dropped and
            // closed or timed out.
            let old = self.end(id);
            step.restarted = old.is_some_and(|c| !c.state.is_ended());
        }
        let exists = self.conns[id as usize].is_some();
        if !exists {
            if syn_only {
                // The SYN's sender is the client: conn up = this flow direction.
                let flip = flow_dir == Direction::Down;
                self.insert(id, Conn::new(6, TcpState::SynSent, flip));
                self.counters.tcp_created += 1;
                step.created = true;
                step.live = true;
                step.dir = 0;
                if let Some(c) = self.conns[id as usize].as_deref_mut() {
                    c.isn[0] = Some(t.seq);
                }
                return step;
            }
            if f & RST != 0 {
                // Nothing to pick up: let the RST through.
                return step;
            }
            match self.cfg.no_connection_found {
                NoConnection::Drop => {
                    self.counters.tcp_no_connection += 1;
                    step.no_connection = true;
                    return step;
                }
                NoConnection::Pickup => {
                    // Orient by ports: the sender is the client unless its port looks like
                    // the server's.
                    let sender_is_server = looks_like_server(ports.0, ports.1) || (f & (SYN | ACK) == SYN | ACK);
                    let flip = (flow_dir == Direction::Down) ^ sender_is_server;
                    let mut c = Conn::new(6, TcpState::Established, flip);
                    c.picked_up = true;
                    if f & FIN != 0 {
                        c.state = TcpState::FinWait1;
                        c.closer = c.dir(flow_dir);
                        c.fin[c.closer as usize] = true;
                    }
                    self.insert(id, c);
                    self.counters.tcp_created += 1;
                    self.counters.tcp_picked_up += 1;
                    step.created = true;
                    step.live = true;
                    step.dir = self.conns[id as usize].as_ref().map_or(0, |c| c.dir(flow_dir));
                    return step;
                }
            }
        }
        let c = self.conns[id as usize].as_deref_mut().expect("exists");
        let dir = c.dir(flow_dir);
        step.dir = dir;
        if c.dropped {
            if f & RST != 0 {
                c.dropped_closed = true;
            } else if f & FIN != 0 {
                c.fin[dir as usize] = true;
                c.dropped_closed = c.fin[0] && c.fin[1];
            }
            step.drop_silently = true;
            return step;
        }
        if c.state.is_ended() {
            // Last ACKs, retransmitted FINs, RSTs after the end: pass, no event.
            return step;
        }
        step.live = true;
        let up = dir == 0;
        if f & SYN != 0 && !matches!(c.state, TcpState::Syn | TcpState::SynSent | TcpState::SynReceived) {
            step.unexpected = true;
            if self.cfg.unexpected_drop {
                // A retransmitted SYN or SYN-ACK (its sender's initial sequence number
                // again) is old data to Haka's stream: dropped without an alert.
                step.retransmitted_syn = c.isn[dir as usize] == Some(t.seq);
                return step;
            }
        }
        if f & RST != 0 {
            c.state = TcpState::Reset;
            if let Some(s) = c.streams.as_mut() {
                s[0].reset(&mut self.budget);
                s[1].reset(&mut self.budget);
            }
            step.ended = true;
            self.counters.ended += 1;
            return step;
        }
        c.state = match c.state {
            TcpState::Syn | TcpState::SynSent if !up && f & (SYN | ACK) == SYN | ACK => {
                c.isn[1] = Some(t.seq);
                TcpState::SynReceived
            }
            TcpState::SynSent if up && syn_only => {
                c.isn[0] = Some(t.seq);
                TcpState::SynSent
            }
            TcpState::SynReceived if up && f & ACK != 0 && f & SYN == 0 => TcpState::Established,
            s => s,
        };
        if f & FIN != 0 && !c.fin[dir as usize] {
            c.fin[dir as usize] = true;
            c.state = match c.state {
                TcpState::FinWait1 | TcpState::FinWait2 | TcpState::Closing => {
                    // The other side closes too.
                    if c.state == TcpState::FinWait2 {
                        TcpState::TimedWait
                    } else {
                        TcpState::Closing
                    }
                }
                _ => {
                    c.closer = dir;
                    TcpState::FinWait1
                }
            };
        } else if f & ACK != 0 && dir != c.closer {
            if c.state == TcpState::FinWait1 && !c.fin[dir as usize] {
                c.state = TcpState::FinWait2;
            }
        } else if f & ACK != 0 && dir == c.closer && c.state == TcpState::Closing {
            c.state = TcpState::TimedWait;
        }
        if f & ACK != 0 {
            if let Some(s) = c.streams.as_mut() {
                // (the peer's stream, in its sequence numbers as received when edits shifted them)
                let other = 1 - dir as usize;
                s[other].acked(c.shift[other].unmap_ack(t.ack));
            }
        }
        if c.state == TcpState::TimedWait {
            step.ended = true;
            self.counters.ended += 1;
        }
        step
    }

    /// State step for a UDP datagram: the first one creates the connection (its sender
    /// is the client, as in Haka, unless it comes from a well-known port to an
    /// ephemeral one: a response seen first).
    pub fn udp_packet(&mut self, id: FlowId, flow_created: bool, flow_dir: Direction, ports: (u16, u16)) -> Step {
        let mut step = Step::default();
        let Some(slot) = self.conns.get(id as usize) else { return step };
        if slot.is_some() && (flow_created || slot.as_ref().is_some_and(|c| self.drop_over(c))) {
            step.restarted = self.end(id).is_some();
        }
        if self.conns[id as usize].is_none() {
            let from_server = ports.0 < 1024 && ports.1 >= 1024;
            let flip = (flow_dir == Direction::Down) ^ from_server;
            self.insert(id, Conn::new(17, TcpState::Established, flip));
            self.counters.udp_created += 1;
            step.created = true;
        }
        let c = self.conns[id as usize].as_deref().expect("exists");
        step.dir = c.dir(flow_dir);
        if c.dropped {
            step.drop_silently = true;
            return step;
        }
        step.live = true;
        step
    }

    fn insert(&mut self, id: FlowId, c: Conn) {
        self.conns[id as usize] = Some(Box::new(c));
        self.live += 1;
    }

    /// Feeds the payload of a TCP segment (connection direction `dir`) to its
    /// direction's reassembler. With nothing buffered and the segment in order the
    /// stream advances without copying (`in_place`: read the packet's payload).
    pub fn tcp_data(&mut self, id: FlowId, dir: u8, t: &TcpInfo, payload: &[u8]) -> DataResult {
        let mut r = DataResult::default();
        let cfg = self.stream_config();
        let spare = &mut self.spare_streams;
        let Some(c) = self.conns.get_mut(id as usize).and_then(|c| c.as_deref_mut()) else { return r };
        if c.dropped || c.uninspected || c.state == TcpState::Reset {
            return r;
        }
        let isn = c.isn;
        let history = self.cfg.conflict_history;
        let streams = c.streams.get_or_insert_with(|| {
            let mut s = spare.pop().unwrap_or_else(|| Box::new([StreamReassembler::new(cfg), StreamReassembler::new(cfg)]));
            s[0].set_conflict_history(history);
            s[1].set_conflict_history(history);
            for (d, isn) in isn.iter().enumerate() {
                if let Some(isn) = isn {
                    s[d].on_syn(*isn);
                }
            }
            s
        });
        let s = &mut streams[dir as usize & 1];
        let seq = if t.flags & SYN != 0 {
            s.on_syn(t.seq);
            t.seq.wrapping_add(1)
        } else {
            t.seq
        };
        if !payload.is_empty() {
            if s.advance_in_order(seq, payload) {
                r.delivered = payload.len();
                r.in_place = true;
            } else {
                r.seg = s.segment(seq, payload, &mut self.budget);
                r.delivered = s.read().len();
            }
        }
        if t.flags & FIN != 0 {
            s.on_fin(seq.wrapping_add(payload.len() as u32));
        }
        let res = &r.seg;
        self.counters.overlap_conflicts += res.overlap_conflict as u64;
        self.counters.over_cap += res.over_cap as u64;
        self.counters.out_of_window += res.out_of_window as u64;
        self.counters.retransmissions += res.duplicate as u64;
        r
    }

    /// The readable (reassembled, not yet consumed) bytes of a direction.
    pub fn read(&self, id: FlowId, dir: u8) -> &[u8] {
        match self.get(id).and_then(|c| c.streams.as_ref()) {
            Some(s) => s[dir as usize & 1].read(),
            None => &[],
        }
    }

    /// Marks every readable byte of a direction as consumed.
    pub fn consume_all(&mut self, id: FlowId, dir: u8) {
        if let Some(s) = self.get_mut(id).and_then(|c| c.streams.as_mut()) {
            let n = s[dir as usize & 1].read().len();
            s[dir as usize & 1].consume(n);
        }
    }

    /// Stream offset (bytes since the start of the inspected stream) of the next byte
    /// the direction expects.
    pub fn stream_offset(&self, id: FlowId, dir: u8) -> u64 {
        self.get(id).and_then(|c| c.streams.as_ref()).map_or(0, |s| s[dir as usize & 1].delivered_total())
    }

    /// Installs dissector `id` on connection `flow` (a recycled state when there is one).
    pub fn install_app(&mut self, flow: FlowId, id: DissectorId, settings: &Settings) {
        let Some(reg) = crate::dissectors::registration(id) else { return };
        let Some(proto) = self.get(flow).map(|k| k.proto) else { return };
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
        let class = memory::class_of(c.proto, c.app_id);
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
                c.fin = [false; 2];
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
