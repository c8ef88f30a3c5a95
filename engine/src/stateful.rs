//! The worker's stateful stage: runs after the packet rules, packet by packet in
//! burst order, for the packets of TCP and UDP flows. It drives the connection
//! layer ([`crate::conn`]) and fires the stateful Lua events between its steps, so
//! that a rule's decision (drop, reset, next dissector, stream edits) applies
//! before the next step and the next packet.
use crate::config::AnomalyAction;
use crate::conn::memory::{OverCap, Part};
use crate::conn::{BodyFraming, ConnTable};
use crate::dissectors::tcp_connection::{TcpInfo, FIN, RST, SYN};
use crate::dissectors::{AppEvent, ConnectionKind, Dissector, ErrorVerdict, Events, Segment, Settings};
use crate::dissect::PacketMeta;
use crate::dpdk::{Mbuf, PoolRef};
use crate::flow::{Direction, FlowId};
use crate::dissectors::http::{Anomaly, RawHead};
use crate::lua::{act, connbits, stateful as sf, ConnCall, LuaEngine};
use crate::stats::{Counters, DropReason, Stateful};
use crate::tcp_edit::{apply_edits, rewrite_tcp, shift_tcp, split_tcp, Edit, TcpRewrite};

/// What the worker does with the packet after the stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Accept,
    Drop(DropReason),
}

/// A packet the stage forged (RST), to transmit on `port`.
pub struct Forged {
    pub mbuf: Mbuf,
    pub port: u16,
    /// The packet it leaves right after, as Haka sends a reset at once: (injection
    /// depth, burst slot) of the packet being processed, set by the worker; None: at the
    /// end of the burst.
    pub after: Option<(u32, u8)>,
}

pub struct StatefulStage {
    pub conns: ConnTable,
    /// `LuaEngine::stateful_info` bits.
    info: u32,
    /// What the dissectors read of the configuration.
    settings: Settings,
    pool: Option<PoolRef>,
    events: Events,
    /// Forged packets waiting for transmission (drained by the worker).
    pub forged: Vec<Forged>,
    /// The packet being handled is a reassembled datagram (set by the worker): it leaves
    /// re-fragmented, so stream edits never split it.
    pub reassembled: bool,
    /// Edits of the current packet's payload (offsets in its original payload).
    edits: Vec<Edit>,
    /// Bytes of the current packet's payload the rules wrote in place, as they were
    /// (payload offset, bytes): put back before the edits are applied (checksum update).
    originals: Vec<(usize, Vec<u8>)>,
    /// The current packet's payload is the data just handed to the rules (edits possible).
    in_place: bool,
    /// Stream offset of the current packet's first payload byte.
    pkt_stream_off: u64,
    scratch: Vec<u8>,
    /// The reassembled run of a segment that filled a gap (out-of-order data), copied out
    /// of its stream for the dissectors (kept to reuse its memory: no allocation per packet).
    run_buf: Vec<u8>,
    /// Per call of `app_events` (kept to reuse their memory): indices of the events handed
    /// to Lua, and the offsets of their bytes in the packet's payload.
    lua_idx: Vec<usize>,
    body_offs: Vec<i64>,
    /// Per call of `app_events`: the heads rewritten by the rules' `set_headers` (their
    /// event's index, their bytes as received).
    set_heads: Vec<(usize, Vec<u8>, bool)>,
    /// Buffers of heads rewritten by `set_headers`, back from the packet edits that carried
    /// them (a few: no allocation per rewritten head).
    spare_heads: Vec<Vec<u8>>,
    /// Flows that have a Lua flow object (bit per flow id): end_connection is called for
    /// those only.
    lua_flows: FlowBits,
    last_edit_log: Option<std::time::Instant>,
    /// `flow:restart()`: 1 asked by the rules of the current packet, 2 while that packet is
    /// handled again as the first of a new connection (a second restart is ignored).
    restart: u8,
}

/// Whether a request (or response) head is read by the rules of later events when no rule
/// of its own runs: response and data rules read `http.request`, data rules `http.response`.
fn context_of(info: u32, is_request: bool) -> bool {
    if is_request {
        info & (sf::HTTP_RESPONSE | sf::HTTP_DATA) != 0
    } else {
        info & sf::HTTP_DATA != 0
    }
}

/// Whether rules listen to the anomalies `head` has (its event then goes to Lua).
fn anomaly_rules(info: u32, head: &RawHead) -> bool {
    head.info.anomalies != 0 && info & sf::HTTP_ANOMALY != 0
}

/// Which rules run for each HTTP head of `events` (prefilters, `crate::dissectors::http::prefilter`), and
/// the heads the selected rules' `set_headers` rewrite: their event's index, their bytes as
/// received and their direction go to `set_heads` (cleared first); Lua rules see the new
/// bytes, which replace the head in the stream unless a Lua rule rewrites it again.
/// Whether Lua is to be called: a head with a Lua rule to run, or another event someone
/// listens to. Events nobody listens to are not handed to Lua (no objects built, no call).
fn select_http_rules(
    lua: &LuaEngine,
    events: &mut [AppEvent],
    set_heads: &mut Vec<(usize, Vec<u8>, bool)>,
    spare: &mut Vec<Vec<u8>>,
    info: u32,
    c: &mut Counters,
) -> bool {
    set_heads.clear();
    let mut call = false;
    for (i, e) in events.iter_mut().enumerate() {
        call |= match e {
            AppEvent::Head { head, rules, .. } => {
                let mut buf = spare.pop().unwrap_or_default();
                let (lua_rules, changed) = lua.http_apply(head, &mut buf);
                if changed {
                    // (its positions are scanned only if Lua reads it, below)
                    let old = std::mem::replace(&mut head.bytes, buf);
                    set_heads.push((i, old, head.is_request));
                } else {
                    spare.push(buf);
                }
                *rules = lua_rules;
                let listened = info & if head.is_request { sf::HTTP_REQUEST } else { sf::HTTP_RESPONSE } != 0;
                if *rules == 0 && listened {
                    c.add(Stateful::HttpPrefiltered, 1);
                }
                *rules != 0 || anomaly_rules(info, head)
            }
            AppEvent::Body { .. } => info & sf::HTTP_DATA != 0,
            AppEvent::MessageEnd { .. } => info & sf::HTTP_STREAMED != 0,
            AppEvent::PriorHead(_) | AppEvent::Error(_) => false,
            AppEvent::Message(_) => true,
        };
    }
    // A rewritten head Lua reads (now or later, as a prior head) gets the positions of its
    // new bytes; one that cannot be scanned stays as received (and is not rewritten).
    set_heads.retain_mut(|(i, old, is_request)| {
        let AppEvent::Head { head, .. } = &mut events[*i] else {
            return false;
        };
        if !call && !context_of(info, *is_request) {
            return true;
        }
        match RawHead::scan(std::mem::take(&mut head.bytes), *is_request) {
            Ok(h) => {
                *head = h;
                true
            }
            Err(_) => {
                head.bytes = std::mem::take(old);
                false
            }
        }
    });
    call
}

/// Before the events of a Lua call: the connection's prior heads (heads no rule ran for,
/// kept as context: `http.request` in a response rule), as `HttpPriorHead` events.
fn prepend_prior_heads(st: &mut dyn Dissector, events: &mut Vec<AppEvent>, set_heads: &mut [(usize, Vec<u8>, bool)]) {
    let [req, resp] = st.take_priors();
    let n = req.is_some() as usize + resp.is_some() as usize;
    if n > 0 {
        events.splice(0..0, [req, resp].into_iter().flatten().map(AppEvent::PriorHead));
        set_heads.iter_mut().for_each(|(i, ..)| *i += n);
    }
}

/// One bit per flow id, grown on demand.
#[derive(Default)]
struct FlowBits(Vec<u64>);

impl FlowBits {
    fn set(&mut self, id: FlowId) {
        let (w, b) = (id as usize / 64, id % 64);
        if w >= self.0.len() {
            self.0.resize(w + 1, 0);
        }
        self.0[w] |= 1 << b;
    }

    /// Clears the bit; whether it was set.
    fn take(&mut self, id: FlowId) -> bool {
        let (w, b) = (id as usize / 64, id % 64);
        match self.0.get_mut(w) {
            Some(x) if *x & (1 << b) != 0 => {
                *x &= !(1 << b);
                true
            }
            _ => false,
        }
    }
}

fn be16(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([b[o], b[o + 1]])
}

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

impl StatefulStage {
    pub fn new(conns: ConnTable, info: u32, mut settings: Settings, pool: Option<PoolRef>) -> StatefulStage {
        settings.http_bodies = info & sf::HTTP_DATA != 0;
        StatefulStage {
            conns,
            info,
            settings,
            pool,
            events: Events::default(),
            forged: Vec::new(),
            edits: Vec::new(),
            originals: Vec::new(),
            in_place: false,
            reassembled: false,
            pkt_stream_off: 0,
            scratch: Vec::new(),
            run_buf: Vec::new(),
            lua_idx: Vec::new(),
            body_offs: Vec::new(),
            set_heads: Vec::new(),
            spare_heads: Vec::new(),
            lua_flows: FlowBits::default(),
            last_edit_log: None,
            restart: 0,
        }
    }

    pub fn set_info(&mut self, info: u32) {
        self.info = info;
        self.settings.http_bodies = info & sf::HTTP_DATA != 0;
    }

    /// Whether the stage has anything to do for this protocol.
    pub fn wants(&self, proto: u8) -> bool {
        self.conns.config().tracks(proto, self.info)
    }

    /// Runs the stage for one packet of flow `id` (`created`: the flow table created the
    /// flow for it). `out_port`: where accepted packets of this input port go (forged
    /// packets toward the receiver use it; toward the sender use the input port).
    #[allow(clippy::too_many_arguments)]
    pub fn packet(
        &mut self,
        lua: &mut LuaEngine,
        m: &mut Mbuf,
        meta: &PacketMeta,
        id: FlowId,
        created: bool,
        flow_dir: Direction,
        out_port: Option<u16>,
        c: &mut Counters,
    ) -> Outcome {
        let o = self.packet_restartable(lua, m, meta, id, created, flow_dir, out_port, c);
        // the alerts raised for it get their action (allowed / blocked) from its fate
        lua.release_alerts(matches!(o, Outcome::Drop(_)));
        o
    }

    #[allow(clippy::too_many_arguments)]
    fn packet_restartable(
        &mut self,
        lua: &mut LuaEngine,
        m: &mut Mbuf,
        meta: &PacketMeta,
        id: FlowId,
        created: bool,
        flow_dir: Direction,
        out_port: Option<u16>,
        c: &mut Counters,
    ) -> Outcome {
        self.restart = 0;
        let o = self.packet_once(lua, m, meta, id, created, flow_dir, out_port, c);
        if self.restart != 1 {
            return o;
        }
        // flow:restart() (Haka's tcp_connection restart): the connection ends here
        // (end_connection, no RST) and the packet is handled again as if none existed: a
        // SYN opens a new one, another packet is "no connection found" (or picked up).
        self.restart = 2;
        if self.conns.end(id).is_some() {
            self.end_lua(lua, id, meta.proto, Some((meta, flow_dir as u8)), c);
        }
        self.edits.clear();
        self.originals.clear();
        let o = self.packet_once(lua, m, meta, id, false, flow_dir, out_port, c);
        self.restart = 0;
        o
    }

    #[allow(clippy::too_many_arguments)]
    fn packet_once(
        &mut self,
        lua: &mut LuaEngine,
        m: &mut Mbuf,
        meta: &PacketMeta,
        id: FlowId,
        created: bool,
        flow_dir: Direction,
        out_port: Option<u16>,
        c: &mut Counters,
    ) -> Outcome {
        let data = m.data();
        let l4 = meta.l4_offset as usize;
        let (sport, dport) = (be16(data, l4), be16(data, l4 + 2));
        let pay_off = meta.payload_offset as usize;
        let pay_len = (meta.payload_len as usize).min(data.len().saturating_sub(pay_off));
        let tcp = meta.proto == 6;
        let t = if tcp {
            TcpInfo { flags: data[l4 + 13], seq: be32(data, l4 + 4), ack: be32(data, l4 + 8), payload_len: pay_len as u32 }
        } else {
            TcpInfo::default()
        };
        let Some(kind) = ConnectionKind::of_proto(meta.proto) else { return Outcome::Accept };
        let step = self.conns.receive(kind, id, created, flow_dir, &Segment { ports: (sport, dport), tcp: t });
        if step.restarted {
            self.end_lua(lua, id, meta.proto, None, c);
        }
        self.edits.clear();
        self.originals.clear();
        self.in_place = false;
        if step.no_connection {
            lua.raise_alert_with("no connection found for tcp packet", "low", meta, flow_dir as u8, true);
            return Outcome::Drop(DropReason::NoConnection);
        }
        if step.drop_silently {
            return Outcome::Drop(DropReason::FlowDropped);
        }
        if step.unexpected {
            c.add(Stateful::TcpUnexpected, 1);
            if self.conns.config().unexpected_drop {
                if !step.retransmitted_syn {
                    lua.raise_alert_with("unexpected tcp packet", "low", meta, flow_dir as u8, true);
                }
                return Outcome::Drop(DropReason::TcpUnexpected);
            }
        }
        if step.created {
            c.add(if tcp { Stateful::TcpConnections } else { Stateful::UdpConnections }, 1);
            if self.conns.get(id).is_some_and(|k| k.picked_up) {
                c.add(Stateful::TcpPickedUp, 1);
            }
        }
        if !step.live {
            if tcp {
                self.finish_tcp(m, meta, id, step.dir, &t, out_port, c);
            }
            return Outcome::Accept;
        }
        let dir = step.dir;
        let (ev_bits, data_bit) = if tcp { (sf::TCP_EVENTS, sf::TCP_DATA) } else { (sf::UDP_EVENTS, sf::UDP_DATA) };
        let pol_bit = if tcp { sf::TCP_POLICIES } else { sf::UDP_POLICIES };
        // 1. new_connection (+ policies) / receive_packet
        let mut bits = 0;
        if step.created {
            bits |= connbits::CREATED;
            if self.conns.get(id).is_some_and(|k| k.picked_up) {
                bits |= connbits::PICKED_UP;
            }
        }
        if self.info & ev_bits != 0 {
            bits |= connbits::RECEIVE;
        }
        // (a connection no longer inspected, `[memory] over_cap = "accept"`, gets no rule)
        let needs_lua = (bits & connbits::RECEIVE != 0
            || (step.created && self.info & (ev_bits | data_bit | pol_bit | sf::APPS) != 0))
            && !self.conns.get(id).is_some_and(|k| k.uninspected);
        let by_port = if tcp { sf::TCP_APPS_BY_PORT } else { sf::UDP_APPS_BY_PORT };
        if needs_lua && bits & connbits::RECEIVE == 0 && self.info & by_port != 0 {
            // Only default application selections: no Lua call for the new connection.
            let server_port = if dir == 0 { dport } else { sport };
            if let Some(&(_, _, app)) = lua.app_ports().iter().find(|p| p.0 == meta.proto && p.1 == server_port) {
                self.select_app(id, app);
            }
        } else if needs_lua {
            let state = self.conns.get(id).map_or(3, |k| k.state().code());
            self.lua_flows.set(id);
            match lua.conn_packet(m.data_mut(), meta, id, dir, state, bits) {
                ConnCall::Error => return self.rule_error(lua),
                ConnCall::Done(a) => {
                    // Haka makes a UDP connection only once new_connection let its packet
                    // through: the next packet makes it again
                    if !tcp && step.created && a & act::PACKET_DROP != 0 {
                        self.conns.end(id);
                        return Outcome::Drop(DropReason::Rule);
                    }
                    if let Some(o) = self.apply(a, m, meta, id, dir, flow_dir, out_port, c) {
                        return o;
                    }
                }
            }
        }
        // 2. data
        let (has_app, inspected, lua_over) =
            self.conns.get(id).map_or((false, false, None), |k| (k.app.is_some(), !k.uninspected, k.lua_over));
        if let Some(over) = lua_over {
            // (found over its cap by the scan of the Lua flow objects since its last packet)
            if let Some(o) = self.over_cap(lua, meta, id, flow_dir, over) {
                return o;
            }
            return Outcome::Accept;
        }
        let want_data = (self.info & data_bit != 0 || has_app) && inspected;
        if want_data && (pay_len > 0 || t.flags & (FIN | SYN) != 0) {
            let verdict = if tcp {
                self.tcp_data(lua, m, meta, id, dir, flow_dir, &t, pay_off, pay_len, out_port, c)
            } else {
                self.udp_data(lua, m, meta, id, dir, flow_dir, pay_off, pay_len, out_port, c)
            };
            if let Some(o) = self.memory_check(lua, meta, id, flow_dir) {
                return o;
            }
            if let Some(o) = verdict {
                return o;
            }
        }
        // 3. end_connection
        if step.ended {
            self.end_lua(lua, id, meta.proto, Some((meta, flow_dir as u8)), c);
        }
        if tcp {
            self.finish_tcp(m, meta, id, dir, &t, out_port, c);
        }
        Outcome::Accept
    }

    /// Re-charges the connection's memory after its data was handled; over a cap, the
    /// alert and `[memory] over_cap` (drop the connection, or stop inspecting it).
    fn memory_check(&mut self, lua: &mut LuaEngine, meta: &PacketMeta, id: FlowId, flow_dir: Direction) -> Option<Outcome> {
        let over = self.conns.recharge(id)?;
        self.over_cap(lua, meta, id, flow_dir, over)
    }

    /// Connection `id` went over a memory cap (`over`): the alert, then `[memory] over_cap`:
    /// its state is freed (its Lua object too when that is what grew) and it is dropped, or
    /// no longer inspected.
    fn over_cap(&mut self, lua: &mut LuaEngine, meta: &PacketMeta, id: FlowId, flow_dir: Direction, over: OverCap) -> Option<Outcome> {
        let part = match over.part {
            Part::Stream => "stream reassembly",
            Part::Parser => "parser state",
            Part::Lua => "Lua objects",
        };
        let cap = if over.worker { "worker" } else { "flow" };
        let msg = format!("memory: connection over the {cap} memory cap ({} bytes held, mostly {part})", over.bytes);
        lua.raise_alert(&msg, "medium", meta, flow_dir as u8);
        if over.part == Part::Lua {
            // (end_connection, then the object is gone: freed at the next collection)
            let mut c = Counters::default();
            self.end_lua(lua, id, meta.proto, Some((meta, flow_dir as u8)), &mut c);
            self.conns.clear_lua_bytes(id);
        }
        if self.conns.mem.cfg.over_cap_drop {
            self.conns.drop_over_cap(id);
            Some(Outcome::Drop(DropReason::MemoryCap))
        } else {
            self.conns.stop_inspecting(id);
            None
        }
    }

    /// Bodies being modified (`enable_data_modification`) leave as chunks, Haka's way: each
    /// body slice of this packet gets a chunk header and CRLF around its (edited) bytes, the
    /// body's own framing bytes (a chunked body's size lines and CRLFs, its last chunk and
    /// trailers) are removed, and the message end gets the last chunk. A body part that is
    /// not in this packet (after out-of-order data) cannot be re-framed: the connection is
    /// reset, never corrupted.
    #[allow(clippy::too_many_arguments)]
    fn frame_bodies(
        &mut self,
        events: &[AppEvent],
        dm_heads: &[(usize, BodyFraming)],
        dm_before: Option<BodyFraming>,
        lua: &mut LuaEngine,
        meta: &PacketMeta,
        id: FlowId,
        dir: u8,
        flow_dir: Direction,
        out_port: Option<u16>,
        m: &mut Mbuf,
        c: &mut Counters,
    ) -> Option<Outcome> {
        let mut dm = dm_before;
        let pkt = self.pkt_stream_off;
        let pkt_end = pkt + meta.payload_len as u64;
        // chunk headers (before the rules' edits at the same place); CRLFs, removed framing
        // and last chunks (after them), in stream order
        let mut front: Vec<Edit> = Vec::new();
        let mut back: Vec<Edit> = Vec::new();
        // the body's own framing bytes in [from, to), those of this packet
        let erase = |from: u64, to: u64, back: &mut Vec<Edit>| {
            let (a, b) = (from.max(pkt), to.min(pkt_end));
            if b > a {
                back.push(Edit::Erase { at: (a - pkt) as usize, len: (b - a) as usize });
            }
        };
        // where the current body's next unreported (framing) bytes start
        let mut cursor = pkt;
        let mut broken = false;
        for (i, e) in events.iter().enumerate() {
            match e {
                AppEvent::Head { span, .. } => {
                    dm = dm_heads.iter().find(|h| h.0 == i).map(|h| h.1);
                    cursor = span.1;
                }
                AppEvent::Body { off, data, .. } if dm.is_some() => {
                    let n = data.len() as u64;
                    if !self.in_place || *off < pkt || *off + n > pkt_end {
                        broken = true;
                        break;
                    }
                    if dm == Some(BodyFraming::Rechunk) {
                        erase(cursor, *off, &mut back);
                        let a = (*off - pkt) as usize;
                        let b = a + data.len();
                        // size of the slice after the rules' edits inside it
                        let mut size = data.len() as i64;
                        for ed in &self.edits {
                            if ed.at() >= a && ed.at() + ed.removed() <= b && !(ed.at() == b && ed.removed() == 0) {
                                size += ed.inserted().len() as i64 - ed.removed() as i64;
                            }
                        }
                        if size > 0 {
                            front.push(Edit::Insert { at: a, bytes: format!("{size:x}\r\n").into_bytes() });
                            back.push(Edit::Insert { at: b, bytes: b"\r\n".to_vec() });
                        }
                    }
                    cursor = *off + n;
                }
                AppEvent::MessageEnd { end, .. } if dm.is_some() => {
                    if dm == Some(BodyFraming::Rechunk) {
                        if !self.in_place || *end < pkt || *end > pkt_end {
                            broken = true;
                            break;
                        }
                        erase(cursor, *end, &mut back);
                        back.push(Edit::Insert { at: (*end - pkt) as usize, bytes: b"0\r\n\r\n".to_vec() });
                    }
                    dm = None;
                }
                _ => {}
            }
        }
        if !broken && dm == Some(BodyFraming::Rechunk) {
            // (framing after the packet's last body bytes: a CRLF, the next size line)
            erase(cursor, pkt_end, &mut back);
        }
        if let Some(k) = self.conns.get_mut(id) {
            k.data_mod[dir as usize & 1] = if broken { None } else { dm };
        }
        if broken {
            c.add(Stateful::StreamEditsRefused, 1);
            lua.raise_alert("http: modified body cannot be re-framed (data out of order): connection reset", "medium", meta, flow_dir as u8);
            return self.apply(act::RESET, m, meta, id, dir, flow_dir, out_port, c);
        }
        if !front.is_empty() || !back.is_empty() {
            front.append(&mut self.edits);
            front.append(&mut back);
            self.edits = front;
        }
        None
    }

    fn log_edit_refused(&mut self, why: &str) {
        let now = std::time::Instant::now();
        if self.last_edit_log.is_none_or(|t| now.duration_since(t).as_secs() >= 1) {
            self.last_edit_log = Some(now);
            println!("stream edit refused: {why}");
        }
    }

    /// Queues a rule's edit of the data just handed to it (offsets relative to that data).
    /// Queues the replacement of a head (its stream offsets `span`) by `bytes`, if it began
    /// in the current packet (`in_pkt`); whether it was queued.
    fn queue_head_edit(&mut self, span: (u64, u64), bytes: Vec<u8>, in_pkt: bool, c: &mut Counters) -> bool {
        if !in_pkt {
            c.add(Stateful::StreamEditsRefused, 1);
            self.log_edit_refused("the HTTP head began in a packet already forwarded");
            return false;
        }
        let at = (span.0 - self.pkt_stream_off) as usize;
        self.queue_edit(Edit::Replace { at, len: (span.1 - span.0) as usize, bytes }, c);
        true
    }

    /// Queues the stream edits the rules made, with the bytes they wrote in place as
    /// they were (put back before the edits apply, see `finish_tcp`).
    fn queue_lua_edits(&mut self, lua: &mut LuaEngine, c: &mut Counters) {
        let mut originals = std::mem::take(&mut self.originals);
        for edit in lua.take_edits(&mut originals) {
            self.queue_edit(edit, c);
        }
        if !self.in_place {
            originals.clear(); // (the rules wrote into a copy, refused)
        }
        self.originals = originals;
    }

    fn queue_edit(&mut self, e: Edit, c: &mut Counters) {
        if !self.in_place {
            c.add(Stateful::StreamEditsRefused, 1);
            self.log_edit_refused("the data spans packets already forwarded (edit only in-order data of the current packet)");
            return;
        }
        self.edits.push(e);
    }

    /// Rewrites the current TCP packet when its connection has edits: its payload (edits
    /// of this packet), its sequence number (edits before it in its direction) and its
    /// acknowledgement number and SACK blocks (edits in the other direction).
    #[allow(clippy::too_many_arguments)]
    fn finish_tcp(&mut self, m: &mut Mbuf, meta: &PacketMeta, id: FlowId, dir: u8, t: &TcpInfo, out_port: Option<u16>, c: &mut Counters) {
        let recompute = self.conns.config().recompute_checksums;
        if !self.originals.is_empty() {
            // the payload as it arrived (the edits carry what the rules wrote in place)
            let pay_off = meta.payload_offset as usize;
            let data = m.data_mut();
            for (at, orig) in self.originals.drain(..) {
                if let Some(d) = data.get_mut(pay_off + at..pay_off + at + orig.len()) {
                    d.copy_from_slice(&orig);
                }
            }
        }
        let Some(conn) = self.conns.get_mut(id).and_then(|k| k.tcp_mut()) else { return };
        if self.edits.is_empty() && !conn.has_shift() {
            return;
        }
        let d = dir as usize & 1;
        let new_seq = conn.shift[d].map_seq(t.seq);
        if self.edits.is_empty() {
            // numbers only, the payload as it is (every packet after an edit)
            let _ = shift_tcp(m.data_mut(), meta, new_seq, &conn.shift[1 - d], recompute);
            return;
        }
        let pay_off = meta.payload_offset as usize;
        let pay_len = (meta.payload_len as usize).min(m.data().len().saturating_sub(pay_off));
        let mut payload: Option<&[u8]> = None;
        let mut unchanged = None;
        if !self.edits.is_empty() {
            self.edits.sort_by_key(|e| e.at());
            let first = self.edits.iter().map(|e| e.at()).min().unwrap_or(0);
            let end = self.edits.iter().map(|e| e.at() + e.removed()).max().unwrap_or(0);
            unchanged = Some((first, pay_len.saturating_sub(end)));
            let data_seq = t.seq.wrapping_add((t.flags & SYN != 0) as u32);
            self.scratch.clear();
            let r = apply_edits(&m.data()[pay_off..pay_off + pay_len], &self.edits, &mut self.scratch)
                .and_then(|_| conn.shift[d].record_edits(data_seq, pay_len, &self.edits));
            match r {
                Ok(_) => {
                    c.add(Stateful::StreamEdits, self.edits.len() as u64);
                    payload = Some(&self.scratch);
                }
                Err(e) => {
                    c.add(Stateful::StreamEditsRefused, self.edits.len() as u64);
                    let msg = e.to_string();
                    self.edits.clear();
        self.originals.clear();
                    self.log_edit_refused(&msg);
                    return self.finish_tcp(m, meta, id, dir, t, out_port, c);
                }
            }
        }
        let Some(conn) = self.conns.get(id).and_then(|k| k.tcp()) else { return };
        let edited = payload.is_some();
        let rw = TcpRewrite { payload, seq: Some(new_seq), ack: None, ack_map: Some(&conn.shift[1 - d]), unchanged, recompute };
        let old_len = m.data().len();
        let cap = m.capacity().min(u16::MAX as usize);
        if !m.resize(cap) {
            return;
        }
        match rewrite_tcp(m.data_mut(), old_len, meta, &rw) {
            Ok(n) => {
                m.resize(n);
                let mtu = self.conns.config().mtu;
                if edited && mtu > 0 && n > meta.l3_offset as usize + mtu && !self.reassembled {
                    self.split_segment(m, meta, mtu, out_port, c);
                }
            }
            Err(e) => {
                m.resize(old_len);
                if payload.is_some() {
                    c.add(Stateful::StreamEditsRefused, self.edits.len() as u64);
                    let msg = format!("{e}");
                    self.log_edit_refused(&msg);
                }
            }
        }
        for e in self.edits.drain(..) {
            if let (Edit::Replace { bytes, .. }, true) = (e, self.spare_heads.len() < 4) {
                self.spare_heads.push(bytes);
            }
        }
    }

    /// Splits a segment that stream edits grew past the MTU (see [`split_tcp`]): what does
    /// not fit leaves in new segments right after it. When the pool cannot give them all,
    /// the segment leaves whole (too long for the link, rather than cut short).
    #[cold]
    fn split_segment(&mut self, m: &mut Mbuf, meta: &PacketMeta, mtu: usize, out_port: Option<u16>, c: &mut Counters) {
        let (Some(pool), Some(out)) = (self.pool, out_port) else { return };
        let v6 = matches!(meta.l3, crate::dissect::L3::Ipv6);
        let mut frame = m.data().to_vec();
        let mut extra = Vec::new();
        let len = frame.len();
        let n = split_tcp(&mut frame, len, v6, meta.l3_offset as usize, meta.l4_offset as usize, mtu, &mut extra);
        if extra.is_empty() {
            return;
        }
        let mut mbufs = Vec::with_capacity(extra.len());
        for f in &extra {
            match pool.alloc_with(f, m.port()) {
                Some(x) => mbufs.push(x),
                None => return,
            }
        }
        m.data_mut()[..n].copy_from_slice(&frame[..n]);
        m.resize(n);
        c.add(Stateful::SplitSegments, mbufs.len() as u64);
        for x in mbufs {
            self.forged.push(Forged { mbuf: x, port: out, after: None });
        }
    }

    fn rule_error(&self, lua: &LuaEngine) -> Outcome {
        if lua.rule_error_drops() {
            Outcome::Drop(DropReason::RuleError)
        } else {
            Outcome::Accept
        }
    }

    /// Fires end_connection for a connection that ended (or is being forgotten).
    pub fn end_lua(&mut self, lua: &mut LuaEngine, id: FlowId, proto: u8, meta: Option<(&PacketMeta, u8)>, c: &mut Counters) {
        c.add(Stateful::ConnectionsEnded, 1);
        if self.lua_flows.take(id) {
            let _ = lua.conn_end(id, proto, meta);
        }
    }

    /// Flow end (expiry, eviction, shutdown): end_connection if the connection had not
    /// ended, then free it.
    pub fn forget(&mut self, lua: Option<&mut LuaEngine>, id: FlowId, c: &mut Counters) {
        if let Some(conn) = self.conns.end(id) {
            if !conn.dissector.ended() {
                if let Some(lua) = lua {
                    self.end_lua(lua, id, conn.proto(), None, c);
                    lua.release_alerts(false);
                }
            }
        }
    }

    /// The connection's application dissector from now on (its registry id: [`act::app_of`]).
    fn select_app(&mut self, id: FlowId, app: u32) {
        self.conns.install_app(id, app as u8, &self.settings);
    }

    /// Applies the actions a rule returned. Some(outcome) stops the packet here.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        a: u32,
        m: &mut Mbuf,
        meta: &PacketMeta,
        id: FlowId,
        dir: u8,
        _flow_dir: Direction,
        out_port: Option<u16>,
        c: &mut Counters,
    ) -> Option<Outcome> {
        let app = act::app_of(a);
        if app != 0 {
            self.select_app(id, app);
        }
        if a & act::STREAMED_OVER_CAP != 0 {
            c.add(Stateful::StreamedOverCap, 1);
        }
        if a & (act::RESET | act::HALFRESET) != 0 && meta.proto == 6 {
            let both = a & act::RESET != 0;
            self.send_resets(m, meta, id, dir, both, out_port, c);
            self.conns.drop_conn(id);
            return Some(Outcome::Drop(DropReason::FlowDropped));
        }
        if a & act::DROP != 0 {
            self.conns.drop_conn(id);
            return Some(Outcome::Drop(DropReason::FlowDropped));
        }
        if a & act::PACKET_DROP != 0 {
            return Some(Outcome::Drop(DropReason::Rule));
        }
        if a & act::RESTART != 0 && self.restart == 0 {
            self.restart = 1; // (`packet` handles the packet again)
            return Some(Outcome::Accept);
        }
        None
    }

    /// Forges RSTs: to the receiver of `m` (always) and, for `both`, back to its sender.
    #[allow(clippy::too_many_arguments)]
    fn send_resets(
        &mut self,
        m: &Mbuf,
        meta: &PacketMeta,
        id: FlowId,
        dir: u8,
        both: bool,
        out_port: Option<u16>,
        c: &mut Counters,
    ) {
        let Some(pool) = self.pool else { return };
        let data = m.data();
        let l4 = meta.l4_offset as usize;
        let flags = data[l4 + 13];
        let seq = be32(data, l4 + 4);
        let ack = be32(data, l4 + 8);
        let len = meta.payload_len as u32 + (flags & (SYN | FIN) != 0) as u32;
        // Toward the receiver the numbers go through the edits' shifts (it sees the
        // modified stream); toward the sender they are its own.
        let d = dir as usize & 1;
        let (rseq, rack) = match self.conns.get(id).and_then(|k| k.tcp()) {
            Some(k) => (k.shift[d].map_seq(seq), k.shift[1 - d].unmap_ack(ack)),
            None => (seq, ack),
        };
        // halfreset: only the server (the receiver of a client packet, the sender of a server one)
        let to_receiver = both || dir == 0;
        let to_sender = (both || dir == 1) && flags & RST == 0;
        let bare = self.conns.config().bare_resets;
        let mut buf = [0u8; 128];
        // The client's RST first, then the server's, in Haka's order (a server packet's
        // receiver is the client).
        for toward_sender in if dir == 0 { [true, false] } else { [false, true] } {
            if toward_sender && to_sender {
                if let Ok(n) = crate::tcp_edit::forge_rst(data, meta, true, ack, seq.wrapping_add(len), bare, &mut buf) {
                    self.push_forged(pool, &buf[..n], m.port(), m.port(), c);
                }
            }
            if let (false, true, Some(out)) = (toward_sender, to_receiver, out_port) {
                if let Ok(n) = crate::tcp_edit::forge_rst(data, meta, false, rseq, rack, bare, &mut buf) {
                    self.push_forged(pool, &buf[..n], m.port(), out, c);
                }
            }
        }
    }

    /// Queues a forged RST (received on `in_port`, to leave on `out_port`).
    fn push_forged(&mut self, pool: PoolRef, bytes: &[u8], in_port: u16, out_port: u16, c: &mut Counters) {
        if let Some(f) = pool.alloc_with(bytes, in_port) {
            self.forged.push(Forged { mbuf: f, port: out_port, after: None });
            c.add(Stateful::ResetsSent, 1);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn tcp_data(
        &mut self,
        lua: &mut LuaEngine,
        m: &mut Mbuf,
        meta: &PacketMeta,
        id: FlowId,
        dir: u8,
        flow_dir: Direction,
        t: &TcpInfo,
        pay_off: usize,
        pay_len: usize,
        out_port: Option<u16>,
        c: &mut Counters,
    ) -> Option<Outcome> {
        let r = {
            let payload = &m.data()[pay_off..pay_off + pay_len];
            self.conns.tcp_data(id, dir, t, payload)
        };
        if r.seg.overlap_conflict {
            c.add(Stateful::OverlapConflicts, 1);
            lua.raise_alert("tcp: retransmitted data differs from the original (overlap evasion)", "high", meta, flow_dir as u8);
        }
        if r.seg.duplicate {
            c.add(Stateful::Retransmissions, 1);
        }
        if r.seg.over_cap {
            c.add(Stateful::StreamOverCap, 1);
            if self.conns.config().over_cap_drop {
                return Some(Outcome::Drop(DropReason::StreamOverCap));
            }
        }
        self.in_place = r.in_place;
        if r.in_place {
            self.pkt_stream_off = self.conns.stream_offset(id, dir).saturating_sub(pay_len as u64);
        }
        if r.delivered > 0 {
            // The readable bytes: the packet's own payload (no copy) or the reassembled run.
            // (a copy only after out-of-order data: the run spans several packets)
            // (the run's buffer is out of `self` while its bytes are read, and goes back after;
            // untouched for a segment read in place, the usual case)
            let owned = if r.in_place {
                Vec::new()
            } else {
                let mut b = std::mem::take(&mut self.run_buf);
                b.clear();
                b.extend_from_slice(self.conns.read(id, dir));
                b
            };
            let bytes: &[u8] = if r.in_place { &m.data()[pay_off..pay_off + pay_len] } else { &owned };
            if self.info & sf::TCP_DATA != 0 {
                match lua.conn_data(id, meta, dir, bytes, self.conns.config().read_only_streams) {
                    ConnCall::Error => {
                        // Haka: an error in a stream rule closes the connection (no
                        // end_connection; its later packets are "no connection found")
                        if lua.rule_error_drops() {
                            self.conns.end(id);
                            self.lua_flows.take(id);
                        }
                        if !r.in_place {
                            self.run_buf = owned;
                        }
                        return Some(self.rule_error(lua));
                    }
                    ConnCall::Done(a) => {
                        if a & act::EDITS != 0 {
                            self.queue_lua_edits(lua, c);
                        }
                        if let Some(o) = self.apply(a, m, meta, id, dir, flow_dir, out_port, c) {
                            if !r.in_place {
                                self.run_buf = owned;
                            }
                            return Some(o);
                        }
                    }
                }
            }
            let bytes: &[u8] = if r.in_place { &m.data()[pay_off..pay_off + pay_len] } else { &owned };
            if let Some(st) = self.conns.get_mut(id).and_then(|k| k.app.as_mut()) {
                self.events.list.clear();
                st.receive_stream(dir, bytes, &mut self.events);
            }
            // (events own what they keep of the bytes)
            if !r.in_place {
                self.run_buf = owned;
                self.conns.consume_all(id, dir);
            }
            if let Some(o) = self.app_events(lua, m, meta, id, dir, flow_dir, out_port, c) {
                return Some(o);
            }
        }
        if t.flags & FIN != 0 && self.info & sf::TCP_STREAMED != 0 {
            match lua.conn_data_end(id, meta, dir) {
                ConnCall::Error => return Some(self.rule_error(lua)),
                ConnCall::Done(a) => {
                    if let Some(o) = self.apply(a & !act::EDITS, m, meta, id, dir, flow_dir, out_port, c) {
                        return Some(o);
                    }
                }
            }
        }
        if t.flags & FIN != 0 {
            if let Some(st) = self.conns.get_mut(id).and_then(|k| k.app.as_mut()) {
                self.events.list.clear();
                st.receive_eof(dir, &mut self.events);
            }
            if let Some(o) = self.app_events(lua, m, meta, id, dir, flow_dir, out_port, c) {
                return Some(o);
            }
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn udp_data(
        &mut self,
        lua: &mut LuaEngine,
        m: &mut Mbuf,
        meta: &PacketMeta,
        id: FlowId,
        dir: u8,
        flow_dir: Direction,
        pay_off: usize,
        pay_len: usize,
        out_port: Option<u16>,
        c: &mut Counters,
    ) -> Option<Outcome> {
        if self.info & sf::UDP_DATA != 0 {
            match lua.conn_datagram(id, m.data_mut(), meta, dir) {
                ConnCall::Error => return Some(self.rule_error(lua)),
                ConnCall::Done(a) => {
                    if let Some(o) = self.apply(a & !act::EDITS, m, meta, id, dir, flow_dir, out_port, c) {
                        return Some(o);
                    }
                }
            }
        }
        if let Some(st) = self.conns.get_mut(id).and_then(|k| k.app.as_mut()) {
            self.events.list.clear();
            st.receive_datagram(dir, &m.data()[pay_off..pay_off + pay_len], &mut self.events);
        }
        self.app_events(lua, m, meta, id, dir, flow_dir, out_port, c)
    }

    /// Counts the anomalies of the HTTP heads in `self.events` and raises their alerts (one
    /// per kind per head) as `[http] anomaly` says; whether the connection is to be dropped.
    fn http_anomalies(&self, lua: &mut LuaEngine, meta: &PacketMeta, flow_dir: Direction, c: &mut Counters) -> bool {
        for e in &self.events.list {
            let AppEvent::Head { head, .. } = e else { continue };
            for a in Anomaly::of(head.info.anomalies) {
                c.add(Stateful::HttpAnomalies, 1);
                c.add(Stateful::http_anomaly(a), 1);
                if self.settings.anomaly != AnomalyAction::Ignore {
                    lua.raise_alert(&format!("http anomaly: {}", a.name()), "low", meta, flow_dir as u8);
                }
            }
        }
        self.settings.anomaly == AnomalyAction::Drop
    }

    /// Hands the application events in `self.events` to the rules.
    #[allow(clippy::too_many_arguments)]
    fn app_events(
        &mut self,
        lua: &mut LuaEngine,
        m: &mut Mbuf,
        meta: &PacketMeta,
        id: FlowId,
        dir: u8,
        flow_dir: Direction,
        out_port: Option<u16>,
        c: &mut Counters,
    ) -> Option<Outcome> {
        let reg = self.conns.get(id).and_then(|k| crate::dissectors::registration(k.app_id));
        let mut anomalous = false;
        for e in &self.events.list {
            match e {
                AppEvent::Head { head, .. } => {
                    if let Some(h) = reg.and_then(|r| r.heads) {
                        c.add(h[!head.is_request as usize], 1);
                    }
                    anomalous |= head.info.anomalies != 0;
                }
                AppEvent::Error(_) => {
                    if let Some(r) = reg {
                        c.add(r.errors, 1);
                    }
                }
                AppEvent::Message(msg) => c.add(msg.counter(), 1),
                AppEvent::Body { .. } | AppEvent::MessageEnd { .. } | AppEvent::PriorHead(_) => {}
            }
        }
        let anomaly_drop = anomalous && self.http_anomalies(lua, meta, flow_dir, c);
        let dm_before = self.conns.get(id).and_then(|k| k.data_mod[dir as usize & 1]);
        let ends_matter = dm_before.is_some() || self.info & sf::HTTP_STREAMED != 0;
        if self.events.list.is_empty() || (!ends_matter && self.events.list.iter().all(|e| matches!(e, AppEvent::MessageEnd { .. }))) {
            self.events.list.clear();
            return None;
        }
        let mut events = std::mem::take(&mut self.events.list);
        let info = self.info;
        let mut set_heads = std::mem::take(&mut self.set_heads);
        let call = select_http_rules(lua, &mut events, &mut set_heads, &mut self.spare_heads, info, c);
        if call {
            if let Some(st) = self.conns.get_mut(id).and_then(|k| k.app.as_deref_mut()) {
                prepend_prior_heads(st, &mut events, &mut set_heads);
            }
        }
        // the events handed to Lua: heads whose rules run, or that later rules read
        let mut lua_idx = std::mem::take(&mut self.lua_idx);
        lua_idx.clear();
        if call {
            lua_idx.extend((0..events.len()).filter(|&i| match &events[i] {
                AppEvent::Body { .. } => info & sf::HTTP_DATA != 0,
                AppEvent::Head { head, rules, .. } => *rules != 0 || context_of(info, head.is_request) || anomaly_rules(info, head),
                AppEvent::MessageEnd { .. } => info & sf::HTTP_STREAMED != 0,
                AppEvent::Error(_) => false,
                AppEvent::PriorHead(_) | AppEvent::Message(_) => true,
            }));
        }
        let pay_len = meta.payload_len as u64;
        let (in_place, pkt_off) = (self.in_place, self.pkt_stream_off);
        let in_pkt = move |off: u64, len: u64| in_place && off >= pkt_off && off + len <= pkt_off + pay_len;
        let mut body_offs = std::mem::take(&mut self.body_offs);
        body_offs.clear();
        body_offs.extend(lua_idx.iter().map(|&i| match &events[i] {
            AppEvent::Body { off, data, .. } if in_pkt(*off, data.len() as u64) => (*off - pkt_off) as i64,
            _ => -1,
        }));
        let mut outcome = None;
        for e in &events {
            let AppEvent::Error(err) = e else { continue };
            if let Some(text) = &err.alert {
                lua.raise_alert(text, "low", meta, flow_dir as u8);
            }
            if err.stops {
                if let Some(k) = self.conns.get_mut(id) {
                    k.app = None;
                }
            }
            if outcome.is_none() {
                outcome = match err.verdict {
                    ErrorVerdict::Accept => None,
                    ErrorVerdict::DropPacket => Some(Outcome::Drop(DropReason::ProtocolError)),
                    ErrorVerdict::DropConnection => {
                        self.conns.drop_conn(id);
                        Some(Outcome::Drop(DropReason::FlowDropped))
                    }
                };
            }
            if err.stops {
                break;
            }
        }
        if anomaly_drop && outcome.is_none() {
            // (the rules still see the message, below)
            self.conns.drop_conn(id);
            outcome = Some(Outcome::Drop(DropReason::FlowDropped));
        }
        let mut dm_heads: Vec<(usize, BodyFraming)> = Vec::new();
        if !lua_idx.is_empty() {
            let state = self.conns.get(id).map_or(3, |k| k.state().code());
            self.lua_flows.set(id);
            match lua.app_events(m.data_mut(), meta, id, dir, state, &events, &lua_idx, &body_offs) {
                ConnCall::Error => {
                    // Haka: a rule error in an application event fails the connection
                    // dissector's receive, which drops the connection
                    if lua.rule_error_drops() {
                        self.conns.drop_conn(id);
                    }
                    if outcome.is_none() {
                        outcome = Some(self.rule_error(lua));
                    }
                }
                ConnCall::Done(a) => {
                    if a & act::EDITS != 0 {
                        for (li, head, dm) in lua.drain_heads() {
                            let Some(&i) = lua_idx.get(li) else { continue };
                            let AppEvent::Head { span, .. } = &events[i] else { continue };
                            let span = *span;
                            // (a head left as it is: its body was chunked, or keeps its framing)
                            let queued = match head {
                                Some(head) => {
                                    set_heads.retain(|(k, ..)| *k != i); // the rules' bytes supersede
                                    self.queue_head_edit(span, head, in_pkt(span.0, span.1 - span.0), c)
                                }
                                None => true,
                            };
                            match dm {
                                1 if queued => dm_heads.push((i, BodyFraming::Rechunk)),
                                2 => dm_heads.push((i, BodyFraming::Keep)),
                                _ => {}
                            }
                        }
                        if a & act::STREAM_EDITS != 0 {
                            self.queue_lua_edits(lua, c);
                        }
                    }
                    if outcome.is_none() {
                        outcome = self.apply(a, m, meta, id, dir, flow_dir, out_port, c);
                    }
                }
            }
        }
        for (i, old, is_request) in set_heads.drain(..) {
            if let Some(a) = self.conns.get_mut(id).and_then(|k| k.app.as_deref_mut()) {
                a.recycle_head_bytes(old, is_request);
            }
            if let AppEvent::Head { head, span, .. } = &mut events[i] {
                let (span, bytes) = (*span, std::mem::take(&mut head.bytes));
                self.queue_head_edit(span, bytes, in_pkt(span.0, span.1 - span.0), c);
            }
        }
        if outcome.is_none() {
            outcome = self.frame_bodies(&events, &dm_heads, dm_before, lua, meta, id, dir, flow_dir, out_port, m, c);
        }
        // head buffers back to their parser, or kept as context for the next call
        match self.conns.get_mut(id).and_then(|k| k.app.as_deref_mut()) {
            Some(a) => events.drain(..).for_each(|e| match e {
                AppEvent::Head { head, .. } if !call && context_of(info, head.is_request) => a.keep_prior(head),
                e => a.recycle(e),
            }),
            None => events.clear(),
        }
        self.events.list = events;
        self.lua_idx = lua_idx;
        self.body_offs = body_offs;
        self.set_heads = set_heads;
        outcome
    }
}
