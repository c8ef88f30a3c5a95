//! `tcp_connection`: Haka's TCP connection dissector. One instance per connection
//! ([`TcpConnection`]): Haka's state machine (the states of its `tcp_connection.lua`), the
//! initial sequence numbers, the two stream reassemblers (made on the first data the rules
//! or an application dissector read) and the sequence shifts of stream edits.
//!
//! As in Haka, the `tcp` dissector's packets create it: a packet of a flow without a
//! connection goes to [`Dissector::open`] (a SYN opens one; another packet is picked up
//! mid-stream or refused by the `no_connection_found` policy); the packets of a connection go
//! to its instance's [`Dissector::receive_connection`]. The connection table
//! ([`crate::conn`]) keeps the instances; the stateful stage ([`crate::stateful`]) fires the
//! Lua events between the state step and the data step ([`TcpConnection::receive_data`]).
use super::{ConnectionRegistration, Dissector, Opened, Segment};
use crate::conn::{ConnConfig, ConnContext, ConnCounters, Step};
use crate::stream::{ByteBudget, SegmentResult, StreamConfig, StreamReassembler};
use crate::tcp_edit::SeqShift;
use crate::wire::ip_proto;

pub const REGISTRATION: ConnectionRegistration =
    ConnectionRegistration { name: "tcp_connection", parent: super::Layer::Tcp, on: super::On::IpProto(ip_proto::TCP) };

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

/// Why data did not reach the rules (counted by the worker).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataResult {
    /// In-order bytes made readable by this segment (read them with
    /// [`crate::conn::ConnTable::read`]).
    pub delivered: usize,
    /// The readable bytes are exactly this packet's payload (no copy was made: read
    /// them from the packet).
    pub in_place: bool,
    pub seg: SegmentResult,
}

/// Is `port` more likely the server's? (well-known below 1024, else the lower one).
fn looks_like_server(port: u16, other: u16) -> bool {
    match (port < 1024, other < 1024) {
        (true, false) => true,
        (false, true) => false,
        _ => port < other,
    }
}

/// The `tcp_connection` dissector of one connection.
pub struct TcpConnection {
    pub state: TcpState,
    /// Which side sent the first FIN (up = 0).
    pub(crate) closer: u8,
    pub(crate) fin: [bool; 2],
    /// Created on the first data the layer must inspect.
    pub(crate) streams: Option<Box<[StreamReassembler; 2]>>,
    /// Initial sequence numbers seen in SYNs (streams are created lazily).
    isn: [Option<u32>; 2],
    /// Sequence shift per direction after stream edits (identity when none).
    pub shift: [SeqShift; 2],
}

impl TcpConnection {
    fn new(state: TcpState) -> TcpConnection {
        TcpConnection {
            state,
            closer: 0,
            fin: [false; 2],
            streams: None,
            isn: [None; 2],
            shift: [SeqShift::default(), SeqShift::default()],
        }
    }

    /// Some stream edit shifted sequence numbers: every later packet is rewritten.
    pub fn has_shift(&self) -> bool {
        !self.shift[0].is_identity() || !self.shift[1].is_identity()
    }

    /// Frees the reassemblers (their buffered bytes go back to `budget`).
    pub(crate) fn release(&mut self, budget: &mut ByteBudget) {
        if let Some(s) = self.streams.as_mut() {
            s[0].release(budget);
            s[1].release(budget);
        }
        self.streams = None;
    }

    /// Feeds the payload of a segment (connection direction `dir`) to its direction's
    /// reassembler (made on the first data: a recycled pair from `spare` when there is
    /// one). With nothing buffered and the segment in order the stream advances without
    /// copying (`in_place`: read the packet's payload).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn receive_data(
        &mut self,
        dir: u8,
        t: &TcpInfo,
        payload: &[u8],
        spare: &mut Vec<Box<[StreamReassembler; 2]>>,
        cfg: StreamConfig,
        history: usize,
        budget: &mut ByteBudget,
    ) -> DataResult {
        let mut r = DataResult::default();
        if self.state == TcpState::Reset {
            return r;
        }
        let isn = self.isn;
        let streams = self.streams.get_or_insert_with(|| {
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
                r.seg = s.segment(seq, payload, budget);
                r.delivered = s.read().len();
            }
        }
        if t.flags & FIN != 0 {
            s.on_fin(seq.wrapping_add(payload.len() as u32));
        }
        r
    }

    /// The readable (reassembled, not yet consumed) bytes of a direction.
    pub fn read(&self, dir: u8) -> &[u8] {
        match self.streams.as_ref() {
            Some(s) => s[dir as usize & 1].read(),
            None => &[],
        }
    }

    /// Marks every readable byte of a direction as consumed.
    pub fn consume_all(&mut self, dir: u8) {
        if let Some(s) = self.streams.as_mut() {
            let n = s[dir as usize & 1].read().len();
            s[dir as usize & 1].consume(n);
        }
    }

    /// Stream offset (bytes since the start of the inspected stream) of the next byte
    /// the direction expects.
    pub fn stream_offset(&self, dir: u8) -> u64 {
        self.streams.as_ref().map_or(0, |s| s[dir as usize & 1].delivered_total())
    }
}

impl Dissector for TcpConnection {
    /// A SYN opens a connection (its sender is the client); a RST passes; another packet
    /// is picked up mid-stream (oriented by its ports) or refused, by `no_connection_found`.
    fn open(seg: &Segment, cfg: &ConnConfig, n: &mut ConnCounters) -> Opened<TcpConnection> {
        let t = &seg.tcp;
        let f = t.flags;
        if f & (SYN | ACK) == SYN {
            let mut c = TcpConnection::new(TcpState::SynSent);
            c.isn[0] = Some(t.seq);
            n.tcp_created += 1;
            return Opened::New { conn: c, sender_is_server: false, picked_up: false };
        }
        if f & RST != 0 {
            // Nothing to pick up: let the RST through.
            return Opened::Pass;
        }
        match cfg.no_connection_found {
            NoConnection::Drop => {
                n.tcp_no_connection += 1;
                Opened::NoConnection
            }
            NoConnection::Pickup => {
                // Orient by ports: the sender is the client unless its port looks like
                // the server's.
                let sender_is_server = looks_like_server(seg.ports.0, seg.ports.1) || (f & (SYN | ACK) == SYN | ACK);
                let mut c = TcpConnection::new(TcpState::Established);
                if f & FIN != 0 {
                    c.state = TcpState::FinWait1;
                    c.closer = sender_is_server as u8;
                    c.fin[c.closer as usize] = true;
                }
                n.tcp_created += 1;
                n.tcp_picked_up += 1;
                Opened::New { conn: c, sender_is_server, picked_up: true }
            }
        }
    }

    /// A new connection on the same ports once this one is over: a SYN (Haka's restart).
    fn reopened_by(&self, seg: &Segment) -> bool {
        seg.tcp.flags & (SYN | ACK) == SYN
    }

    fn ended(&self) -> bool {
        self.state.is_ended()
    }

    /// Haka's state machine step.
    fn receive_connection(&mut self, dir: u8, seg: &Segment, cx: &mut ConnContext<'_>) -> Step {
        let mut step = Step::default();
        let t = &seg.tcp;
        let f = t.flags;
        let syn_only = f & (SYN | ACK) == SYN;
        if cx.dropped {
            if f & RST != 0 {
                cx.dropped_closed = true;
            } else if f & FIN != 0 {
                self.fin[dir as usize] = true;
                cx.dropped_closed = self.fin[0] && self.fin[1];
            }
            step.drop_silently = true;
            return step;
        }
        if self.state.is_ended() {
            // Last ACKs, retransmitted FINs, RSTs after the end: pass, no event.
            return step;
        }
        step.live = true;
        let up = dir == 0;
        if f & SYN != 0 && !matches!(self.state, TcpState::Syn | TcpState::SynSent | TcpState::SynReceived) {
            step.unexpected = true;
            if cx.cfg.unexpected_drop {
                // A retransmitted SYN or SYN-ACK (its sender's initial sequence number
                // again) is old data to Haka's stream: dropped without an alert.
                step.retransmitted_syn = self.isn[dir as usize] == Some(t.seq);
                return step;
            }
        }
        if f & RST != 0 {
            self.state = TcpState::Reset;
            if let Some(s) = self.streams.as_mut() {
                s[0].reset(cx.budget);
                s[1].reset(cx.budget);
            }
            step.ended = true;
            cx.counters.ended += 1;
            return step;
        }
        self.state = match self.state {
            TcpState::Syn | TcpState::SynSent if !up && f & (SYN | ACK) == SYN | ACK => {
                self.isn[1] = Some(t.seq);
                TcpState::SynReceived
            }
            TcpState::SynSent if up && syn_only => {
                self.isn[0] = Some(t.seq);
                TcpState::SynSent
            }
            TcpState::SynReceived if up && f & ACK != 0 && f & SYN == 0 => TcpState::Established,
            s => s,
        };
        if f & FIN != 0 && !self.fin[dir as usize] {
            self.fin[dir as usize] = true;
            self.state = match self.state {
                TcpState::FinWait1 | TcpState::FinWait2 | TcpState::Closing => {
                    // The other side closes too.
                    if self.state == TcpState::FinWait2 {
                        TcpState::TimedWait
                    } else {
                        TcpState::Closing
                    }
                }
                _ => {
                    self.closer = dir;
                    TcpState::FinWait1
                }
            };
        } else if f & ACK != 0 && dir != self.closer {
            if self.state == TcpState::FinWait1 && !self.fin[dir as usize] {
                self.state = TcpState::FinWait2;
            }
        } else if f & ACK != 0 && dir == self.closer && self.state == TcpState::Closing {
            self.state = TcpState::TimedWait;
        }
        if f & ACK != 0 {
            if let Some(s) = self.streams.as_mut() {
                // (the peer's stream, in its sequence numbers as received when edits shifted them)
                let other = 1 - dir as usize;
                s[other].acked(self.shift[other].unmap_ack(t.ack));
            }
        }
        if self.state == TcpState::TimedWait {
            step.ended = true;
            cx.counters.ended += 1;
        }
        step
    }
}
