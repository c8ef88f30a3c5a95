//! Dissectors: every protocol the engine reads, behind one trait ([`Dissector`]) and
//! registered by name, as in Haka's architecture: the capture hands each packet to the
//! `packet` dissector, each dissector hands what it carries to the next one (`receive`),
//! the connection dissectors (`tcp_connection`, `udp_connection`) create the flow context
//! and hand the connection's stream or datagrams to the dissector a `next_dissector`
//! policy installs on it (`http`, `dns`, `tls`, or one written in Lua).
//!
//! One folder per protocol: its parser or header view, its dissector (a type implementing
//! [`Dissector`]) and one registration line:
//! - **packet dissectors** (`packet`, `ipv4`, `ipv6`, `tcp`, `udp`, `icmp`, `icmpv6`) read
//!   one header of every packet ([`Dissector::receive_packet`]) and name what follows
//!   ([`Next`]: an ethertype, an IP protocol). Their [`LayerRegistration`] says what
//!   selects them ([`On`]); the `packet_layers!` list below registers them. The chain is
//!   walked by [`crate::dissect::dissect`] with static dispatch (the list becomes a
//!   `match`), so a registered layer costs what a hand-written chain costs.
//! - **connection dissectors** (`tcp_connection`, `udp_connection`) are the flow context
//!   of one connection, made by the packets of their transport as in Haka (the `tcp`
//!   dissector's receive creates the `tcp_connection`): [`Dissector::open`] says what a
//!   packet of a flow without a connection makes ([`Opened`]), the instance's
//!   [`Dissector::receive_connection`] steps on each later packet ([`Segment`]: ports, TCP
//!   header facts) and returns the [`Step`] the stateful stage acts on. Their
//!   [`ConnectionRegistration`] names the packet dissector they follow and the
//!   [`On::IpProto`] that selects them; the `connection_dissectors!` list registers them
//!   and makes [`Connection`] (one connection's dissector), dispatched by a `match` per
//!   packet. The connection table that keeps the instances, [`crate::conn`], is not a
//!   dissector: it is what every connection has beside its dissector (orientation,
//!   `flow:drop()`, the flow dissector installed on it, the memory budget).
//! - **flow dissectors** (`http`, `dns`, `tls`) read a connection's in-order stream bytes
//!   or datagrams ([`Dissector::receive_stream`], [`Dissector::receive_datagram`]: the
//!   data is lent, the events it reports are owned by the engine from then on). Their
//!   [`Registration`] in [`REGISTRY`] names their default ports and makes one per
//!   connection ([`Registration::new`]) when a policy selects it. The connection stage
//!   ([`crate::stateful`]) knows none of them by name: it turns their [`AppEvent`]s into
//!   Lua events and verdicts.
//!
//! The shape is Suricata's app-layer registration (a name, default ports, a state
//! constructor, parse functions per direction) rather than Snort 3's inspector
//! classes: a stream dissector here does not split or own the stream (the
//! `tcp_connection` dissector reassembles it once for every dissector, Haka's model), it
//! only parses what it is given and reports events in stream order. Packet layers follow
//! smoltcp's `wire` views and DPDK's l3fwd (a fixed chain decided per packet, no
//! allocation, no indirect call); the connection list does the same per connection.
use crate::config::AnomalyAction;
use crate::conn::{ConnConfig, ConnContext, ConnCounters, Step};
use crate::stats::Stateful;
use std::fmt;

pub mod dns;
pub mod http;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod packet;
pub mod tcp;
pub mod tcp_connection;
pub mod tls;
pub mod udp;
pub mod udp_connection;

use crate::dissect::{DissectOptions, LinkType, Malformed, PacketMeta};

/// Every flow dissector, by name. Its position + 1 is its [`DissectorId`]
/// (the code Lua's `select_next_dissector` hands back); Lua builds its
/// `next_dissector` names and default port policies from this list.
pub static REGISTRY: &[&Registration] = &[&http::REGISTRATION, &dns::REGISTRATION, &tls::REGISTRATION];

/// 1-based position in [`REGISTRY`]; 0: no dissector.
pub type DissectorId = u8;

/// How a dissector is known and made.
pub struct Registration {
    /// `haka.dissectors.<name>`, and the `protocol/<name>` module that loads it.
    pub name: &'static str,
    /// (IP protocol, server port) of Haka's default `next_dissector` policies for it
    /// (set when its module is loaded; a user policy declared later wins).
    pub default_ports: &'static [(u8, u16)],
    /// A dissector for a new connection of IP protocol `proto`.
    pub new: fn(&Settings, u8) -> Box<dyn Dissector>,
    /// Counter of its protocol errors.
    pub errors: Stateful,
    /// Counters of its request and response heads ([`AppEvent::Head`]).
    pub heads: Option<[Stateful; 2]>,
}

/// The registration of `id`.
pub fn registration(id: DissectorId) -> Option<&'static Registration> {
    REGISTRY.get((id as usize).checked_sub(1)?).copied()
}

/// The id of the dissector named `name`.
pub fn by_name(name: &str) -> Option<DissectorId> {
    REGISTRY.iter().position(|r| r.name == name).map(|i| i as DissectorId + 1)
}

/// What the dissectors read of the configuration (`[http]`, `[tls]`, `[dns]`), and
/// whether rules read HTTP bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// HTTP protocol errors drop the connection (else: alert, stop parsing it).
    pub http_error_drop: bool,
    pub anomaly: AnomalyAction,
    /// HTTP/0.9 request lines are protocol errors (`[http] http09 = "error"`).
    pub http09_error: bool,
    /// A head cut by the end of its stream is a protocol error (`[http] truncated_head`).
    pub truncated_head_error: bool,
    /// A NUL in an HTTP field value is part of the value (`[http] binary_header = "accept"`).
    pub http_binary_header: bool,
    /// Body bytes are reported (rules read them); else skipped uncopied.
    pub http_bodies: bool,
    /// A malformed or too long ClientHello drops the connection (else: alert, let it by).
    pub tls_error_drop: bool,
    pub tls_max_hello: usize,
    /// A malformed DNS message is dropped (else: alert, let it by).
    pub dns_error_drop: bool,
    pub dns_max_questions: u16,
    pub dns_pending_queries: u32,
}

impl Settings {
    pub fn of(cfg: &crate::config::Config) -> Settings {
        use crate::config::Verdict::Drop;
        Settings {
            http_error_drop: cfg.http.protocol_error == Drop,
            anomaly: cfg.http.anomaly,
            http09_error: cfg.http.http09 == crate::config::Http09::Error,
            truncated_head_error: cfg.http.truncated_head == crate::config::TruncatedHead::Error,
            http_binary_header: cfg.http.binary_header == crate::config::BinaryHeader::Accept,
            http_bodies: false,
            tls_error_drop: cfg.tls.protocol_error == Drop,
            tls_max_hello: cfg.tls.max_hello_bytes,
            dns_error_drop: cfg.dns.protocol_error == Drop,
            dns_max_questions: cfg.dns.max_questions,
            dns_pending_queries: cfg.dns.pending_queries,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings::of(&crate::config::Config::default())
    }
}

/// A dissector: what Haka's `receive` hands a packet, a stream or a datagram to. A packet
/// dissector implements [`receive_packet`](Self::receive_packet) (it is stateless: one
/// value serves every packet); a flow dissector is the per-connection state and
/// implements the `receive_stream` / `receive_datagram` side.
pub trait Dissector: Send {
    /// Reads this dissector's header at the start of `p.data` (frame offset `p.off`),
    /// fills its fields of `p.meta`, moves `p.data` and `p.off` to what it carries and
    /// names what selects the next dissector.
    fn receive_packet(&self, _p: &mut PacketView<'_>) -> Result<Next, Malformed> {
        Ok(Next::End)
    }
    /// Connection dissectors: what a packet of a flow without a connection makes of it
    /// (Haka: the transport dissector's receive creates the connection dissector).
    fn open(_seg: &Segment, _cfg: &ConnConfig, _n: &mut ConnCounters) -> Opened<Self>
    where
        Self: Sized,
    {
        Opened::Pass
    }
    /// Connection dissectors: a packet of connection direction `dir` (0: client to
    /// server) of the connection this is: its state step. `cx`: the connection's shared
    /// state (`flow:drop()`) and the worker's stream budget.
    fn receive_connection(&mut self, _dir: u8, _seg: &Segment, _cx: &mut ConnContext<'_>) -> Step {
        Step::default()
    }
    /// Connection dissectors: whether `seg` starts a new connection on this one's flow
    /// once this one is over ([`ended`](Self::ended), or dropped and closed or timed out).
    fn reopened_by(&self, _seg: &Segment) -> bool {
        false
    }
    /// Connection dissectors: the connection ended (end_connection fired): later packets
    /// are stragglers.
    fn ended(&self) -> bool {
        false
    }
    /// In-order stream bytes of direction `dir` (0: client to server).
    fn receive_stream(&mut self, _dir: u8, _data: &[u8], _out: &mut Events) {}
    /// The end of direction `dir`'s stream (FIN).
    fn receive_eof(&mut self, _dir: u8, _out: &mut Events) {}
    /// One datagram of direction `dir`.
    fn receive_datagram(&mut self, _dir: u8, _data: &[u8], _out: &mut Events) {}
    /// An event the engine is done with: its buffers may be kept for the next ones.
    fn recycle(&mut self, _e: AppEvent) {}
    /// Bytes of a head no event holds any more (replaced by a rewrite).
    fn recycle_head_bytes(&mut self, _bytes: Vec<u8>, _is_request: bool) {}
    /// A head no rule saw at its own time (prefilters), kept as context for the rules
    /// of later events (`http.request` in a response rule).
    fn keep_prior(&mut self, _head: http::RawHead) {}
    /// The kept heads (request, response), taken.
    fn take_priors(&mut self) -> [Option<http::RawHead>; 2] {
        [None, None]
    }
    /// Whether a state of an ended connection is worth keeping for the next one
    /// ([`reset`](Self::reset) then makes it ready).
    fn reusable(&self) -> bool {
        false
    }
    /// Made ready for another connection, its buffers kept.
    fn reset(&mut self, _s: &Settings) {}
    /// Bytes it holds for the connection (incomplete messages, buffers).
    fn held_bytes(&self) -> usize {
        0
    }
}

/// What a packet dissector hands on: the key its children are selected by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    EtherType(u16),
    IpProto(u8),
    /// Nothing more is dissected per packet (a fragment, the last header).
    End,
}

/// What selects a packet dissector (the `next_dissector` choice of its parent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum On {
    /// The root of every chain: the capture hands it the frame.
    Capture,
    EtherType(u16),
    IpProto(u8),
}

/// How a packet dissector is known and selected.
pub struct LayerRegistration {
    /// `haka.dissectors.<name>`.
    pub name: &'static str,
    pub on: &'static [On],
}

/// A packet on its way down the chain: the frame, the current dissector's bytes (`data`:
/// from its header to the end of what its parent carries, the IP length clipping Ethernet
/// padding) and their offset in the frame (`off`), and the metadata the dissectors fill.
#[derive(Clone, Copy)]
pub struct PacketView<'a> {
    pub frame: &'a [u8],
    pub link: LinkType,
    pub opts: &'a DissectOptions,
    pub off: usize,
    pub data: &'a [u8],
    pub meta: PacketMeta,
}

/// Registers the packet dissectors: `Variant: type = registration`, in the order a later
/// line wins over an earlier one for the same selector (Haka: the last policy wins).
/// Makes the [`Layer`] enum, its static dispatch and the selection tables.
macro_rules! packet_layers {
    ($($variant:ident: $ty:path = $reg:path),* $(,)?) => {
        /// A registered packet dissector.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Layer { $($variant),* }

        impl Layer {
            pub const ALL: &'static [Layer] = &[$(Layer::$variant),*];
            const REGISTRATIONS: &'static [&'static LayerRegistration] = &[$(&$reg),*];

            pub fn registration(self) -> &'static LayerRegistration {
                Self::REGISTRATIONS[self as usize]
            }

            /// Hands the packet to this dissector (a `match`: no indirect call).
            #[inline(always)]
            pub fn receive(self, p: &mut PacketView<'_>) -> Result<Next, Malformed> {
                match self { $(Layer::$variant => <$ty as Dissector>::receive_packet(&$ty, p)),* }
            }
        }
    };
}

packet_layers! {
    Packet: packet::Packet = packet::REGISTRATION,
    Ipv4: ipv4::Ipv4 = ipv4::REGISTRATION,
    Ipv6: ipv6::Ipv6 = ipv6::REGISTRATION,
    Tcp: tcp::Tcp = tcp::REGISTRATION,
    Udp: udp::Udp = udp::REGISTRATION,
    Icmp: icmp::Icmp = icmp::REGISTRATION,
    Icmpv6: icmp::Icmpv6 = icmp::REGISTRATION_V6,
}

/// The packet dissector selected by `on` (the last registered one), built at compile time.
const fn select(on: On) -> Option<Layer> {
    let mut found = None;
    let mut i = 0;
    while i < Layer::ALL.len() {
        let sel = Layer::REGISTRATIONS[i].on;
        let mut j = 0;
        while j < sel.len() {
            let hit = match (sel[j], on) {
                (On::Capture, On::Capture) => true,
                (On::EtherType(a), On::EtherType(b)) => a == b,
                (On::IpProto(a), On::IpProto(b)) => a == b,
                _ => false,
            };
            if hit {
                found = Some(Layer::ALL[i]);
            }
            j += 1;
        }
        i += 1;
    }
    found
}

const fn ip_table() -> [Option<Layer>; 256] {
    let mut t = [None; 256];
    let mut p = 0;
    while p < 256 {
        t[p] = select(On::IpProto(p as u8));
        p += 1;
    }
    t
}

/// The root dissector (`On::Capture`).
pub const CAPTURE: Layer = match select(On::Capture) {
    Some(l) => l,
    None => panic!("no packet dissector registered on the capture"),
};
static BY_IP_PROTO: [Option<Layer>; 256] = ip_table();

/// The match on a selector that hands the packet to the dissector it selects, then calls
/// `$then` with what that one names. The common selectors are resolved at compile time
/// (so that the chain inlines into straight code, every path a tail: nothing merges).
macro_rules! hand_on {
    ($next:expr, $p:ident, $then:ident) => {{
        use crate::wire::{ethertype, ip_proto};
        macro_rules! fixed {
            ($on:expr) => {{
                const L: Option<Layer> = select($on);
                match L {
                    Some(l) => {
                        let n = l.receive(&mut $p)?;
                        n.$then($p)
                    }
                    None => Ok($p.meta),
                }
            }};
        }
        match $next {
            Next::End => Ok($p.meta),
            Next::EtherType(ethertype::IPV4) => fixed!(On::EtherType(ethertype::IPV4)),
            Next::EtherType(ethertype::IPV6) => fixed!(On::EtherType(ethertype::IPV6)),
            Next::IpProto(ip_proto::TCP) => fixed!(On::IpProto(ip_proto::TCP)),
            Next::IpProto(ip_proto::UDP) => fixed!(On::IpProto(ip_proto::UDP)),
            Next::IpProto(ip_proto::ICMP) => fixed!(On::IpProto(ip_proto::ICMP)),
            Next::IpProto(ip_proto::ICMPV6) => fixed!(On::IpProto(ip_proto::ICMPV6)),
            // the rare selectors: looked up (no call returns the metadata: it stays in
            // registers, as does every path here)
            other => match other.dissector() {
                Some(l) => {
                    let n = l.receive(&mut $p)?;
                    n.$then($p)
                }
                None => Ok($p.meta),
            },
        }
    }};
}

impl Next {
    /// Hands the packet to the dissector this selects and on down the chain; the packet's
    /// metadata once a dissector names nothing registered.
    #[inline(always)]
    pub fn walk(self, mut p: PacketView<'_>) -> Result<PacketMeta, Malformed> {
        hand_on!(self, p, walk_second)
    }

    #[inline(always)]
    fn walk_second(self, mut p: PacketView<'_>) -> Result<PacketMeta, Malformed> {
        hand_on!(self, p, walk_rest)
    }

    /// Past three dissectors (link, network, transport) the packet is not walked further:
    /// what a transport carries is the flow dissectors' (`tcp_connection` and the
    /// dissectors installed on it), or a Lua packet dissector's.
    #[inline(always)]
    fn walk_rest(self, p: PacketView<'_>) -> Result<PacketMeta, Malformed> {
        Ok(p.meta)
    }

    /// The dissector this selects.
    pub fn dissector(self) -> Option<Layer> {
        match self {
            Next::EtherType(t) => select(On::EtherType(t)),
            Next::IpProto(x) => BY_IP_PROTO[x as usize],
            Next::End => None,
        }
    }
}

/// A packet as a connection dissector receives it: its transport facts.
#[derive(Clone, Copy, Debug, Default)]
pub struct Segment {
    /// (source, destination) ports.
    pub ports: (u16, u16),
    /// TCP header facts (zero for UDP).
    pub tcp: tcp_connection::TcpInfo,
}

/// What a connection dissector makes of a packet of a flow without a connection.
pub enum Opened<D> {
    /// A new connection: its dissector, whether the packet's sender is the server (the
    /// client's side is direction 0), whether it was picked up mid-stream.
    New { conn: D, sender_is_server: bool, picked_up: bool },
    /// No connection: the packet passes.
    Pass,
    /// No connection: Haka's `no_connection_found` (alert and drop).
    NoConnection,
}

impl<D> Opened<D> {
    fn map<E>(self, f: impl FnOnce(D) -> E) -> Opened<E> {
        match self {
            Opened::New { conn, sender_is_server, picked_up } => Opened::New { conn: f(conn), sender_is_server, picked_up },
            Opened::Pass => Opened::Pass,
            Opened::NoConnection => Opened::NoConnection,
        }
    }
}

/// How a connection dissector is known and selected.
pub struct ConnectionRegistration {
    /// `haka.dissectors.<name>`.
    pub name: &'static str,
    /// The packet dissector whose packets it receives, and the key that selects it there.
    pub parent: Layer,
    pub on: On,
}

impl ConnectionRegistration {
    /// The IP protocol that selects it.
    pub const fn proto(&self) -> u8 {
        match self.on {
            On::IpProto(p) => p,
            _ => 0,
        }
    }
}

/// Registers the connection dissectors: `Variant: type = registration`. Makes the
/// [`ConnectionKind`] enum (a registered connection dissector), the [`Connection`] enum (one
/// connection's dissector) and their static dispatch (a `match`: no indirect call per packet).
macro_rules! connection_dissectors {
    ($($variant:ident: $ty:ident = $reg:path),* $(,)?) => {
        /// A registered connection dissector.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum ConnectionKind { $($variant),* }

        impl ConnectionKind {
            pub const ALL: &'static [ConnectionKind] = &[$(ConnectionKind::$variant),*];
            const REGISTRATIONS: &'static [&'static ConnectionRegistration] = &[$(&$reg),*];

            pub fn registration(self) -> &'static ConnectionRegistration {
                Self::REGISTRATIONS[self as usize]
            }

            /// What this dissector makes of a packet of a flow without a connection.
            #[inline]
            pub fn open(self, seg: &Segment, cfg: &ConnConfig, n: &mut ConnCounters) -> Opened<Connection> {
                match self { $(ConnectionKind::$variant => <$ty as Dissector>::open(seg, cfg, n).map(Connection::$variant)),* }
            }
        }

        /// One connection's dissector (inline in its boxed [`crate::conn::Conn`]: no
        /// second allocation or pointer per packet, whatever the variants' sizes).
        #[allow(clippy::large_enum_variant)]
        pub enum Connection { $($variant($ty)),* }

        impl Connection {
            pub fn kind(&self) -> ConnectionKind {
                match self { $(Connection::$variant(_) => ConnectionKind::$variant),* }
            }

            #[inline(always)]
            pub fn receive(&mut self, dir: u8, seg: &Segment, cx: &mut ConnContext<'_>) -> Step {
                match self { $(Connection::$variant(d) => d.receive_connection(dir, seg, cx)),* }
            }

            #[inline(always)]
            pub fn reopened_by(&self, seg: &Segment) -> bool {
                match self { $(Connection::$variant(d) => d.reopened_by(seg)),* }
            }

            #[inline(always)]
            pub fn ended(&self) -> bool {
                match self { $(Connection::$variant(d) => d.ended()),* }
            }
        }
    };
}

use tcp_connection::TcpConnection;
use udp_connection::UdpConnection;

connection_dissectors! {
    Tcp: TcpConnection = tcp_connection::REGISTRATION,
    Udp: UdpConnection = udp_connection::REGISTRATION,
}

const fn connection_table() -> [Option<ConnectionKind>; 256] {
    let mut t = [None; 256];
    let mut i = 0;
    while i < ConnectionKind::ALL.len() {
        t[ConnectionKind::REGISTRATIONS[i].proto() as usize] = Some(ConnectionKind::ALL[i]);
        i += 1;
    }
    t
}
static CONNECTION_BY_PROTO: [Option<ConnectionKind>; 256] = connection_table();

impl ConnectionKind {
    /// The connection dissector of IP protocol `proto` (the last registered one).
    #[inline(always)]
    pub fn of_proto(proto: u8) -> Option<ConnectionKind> {
        CONNECTION_BY_PROTO[proto as usize]
    }
}

impl Connection {
    /// The `tcp_connection` dissector of a TCP connection.
    pub fn tcp(&self) -> Option<&TcpConnection> {
        match self {
            Connection::Tcp(t) => Some(t),
            _ => None,
        }
    }

    pub fn tcp_mut(&mut self) -> Option<&mut TcpConnection> {
        match self {
            Connection::Tcp(t) => Some(t),
            _ => None,
        }
    }
}

/// What a name is registered as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registered {
    Packet(Layer),
    Connection(ConnectionKind),
    Flow(DissectorId),
}

/// The dissector registered as `name`, of any kind.
pub fn find(name: &str) -> Option<Registered> {
    if let Some(&l) = Layer::ALL.iter().find(|l| l.registration().name == name) {
        return Some(Registered::Packet(l));
    }
    if let Some(&k) = ConnectionKind::ALL.iter().find(|k| k.registration().name == name) {
        return Some(Registered::Connection(k));
    }
    by_name(name).map(Registered::Flow)
}

/// Where a dissector reports its events, with per-worker scratch space the dissectors
/// reuse (one per worker stays hot in cache; one per connection was a miss per segment).
#[derive(Default)]
pub struct Events {
    pub list: Vec<AppEvent>,
    pub(crate) http_scratch: Vec<http::HttpEvent>,
}

/// One application event, in stream order.
#[derive(Debug)]
pub enum AppEvent {
    /// A message head (start line and fields: an HTTP request or response) as received;
    /// `span`: its stream offsets `[start, end)` in its direction; `rules`: the
    /// listeners that run for it (prefilters; set by the stateful stage).
    Head { head: http::RawHead, span: (u64, u64), rules: u32 },
    /// A head of an earlier packet that selected no rule, handed to Lua before a later
    /// event of its exchange so that the rules of that event read it: its message is
    /// made, no rule fires for it.
    PriorHead(http::RawHead),
    /// Body bytes (de-chunked) of the current message in direction `dir`; `off`: stream
    /// offset of the first one (meaningful for bodies that are not chunked).
    Body { dir: u8, data: Vec<u8>, off: u64 },
    /// The message in direction `dir` ended at stream offset `end` (after its body's
    /// framing: a chunked body's last chunk and trailers).
    MessageEnd { dir: u8, end: u64 },
    /// A parsed message the rules receive whole (a DNS query, a ClientHello).
    Message(Box<dyn Message>),
    /// Input the dissector refuses.
    Error(ProtocolError),
}

/// What the Lua form of a message depends on (the rules' options).
#[derive(Clone, Copy, Debug, Default)]
pub struct LuaContext {
    /// `[dns] records = "haka"`: DNS records as Haka 0.4 gave them.
    pub dns_haka_records: bool,
}

/// A message event's Lua form (see `RT.app_events` in haka.lua): the record kind Lua
/// dispatches on, its flags, and its fields as a table.
pub struct LuaMessage {
    pub kind: i32,
    pub flags: i32,
    pub table: mlua::Table,
}

/// A parsed message.
pub trait Message: Send + fmt::Debug {
    /// Its counter.
    fn counter(&self) -> Stateful;
    fn to_lua(&self, lua: &mlua::Lua, ctx: &LuaContext) -> mlua::Result<LuaMessage>;
    /// For tests and tools that know the concrete type.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// Input a dissector refuses, and what becomes of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    pub dir: u8,
    /// The alert's description; None: counted only.
    pub alert: Option<String>,
    pub verdict: ErrorVerdict,
    /// The dissector reads nothing more of the connection (it is removed).
    pub stops: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorVerdict {
    Accept,
    /// This packet (a datagram).
    DropPacket,
    DropConnection,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_unique_and_found_by_name() {
        for (i, r) in REGISTRY.iter().enumerate() {
            assert_eq!(by_name(r.name), Some(i as DissectorId + 1));
            assert_eq!(registration(i as DissectorId + 1).unwrap().name, r.name);
        }
        assert_eq!(by_name("smtp"), None);
        assert!(registration(0).is_none());
    }

    #[test]
    fn every_dissector_is_found_by_its_one_name() {
        let mut names: Vec<&str> = Layer::ALL.iter().map(|l| l.registration().name).collect();
        names.extend(ConnectionKind::ALL.iter().map(|k| k.registration().name));
        names.extend(REGISTRY.iter().map(|r| r.name));
        for want in ["packet", "ipv4", "ipv6", "tcp", "udp", "icmp", "tcp_connection", "udp_connection", "http", "dns", "tls"] {
            assert!(names.contains(&want), "{want} is registered");
        }
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "names are unique: {names:?}");
        assert_eq!(find("ipv4"), Some(Registered::Packet(Layer::Ipv4)));
        assert_eq!(find("tcp_connection"), Some(Registered::Connection(ConnectionKind::Tcp)));
        assert_eq!(find("udp_connection"), Some(Registered::Connection(ConnectionKind::Udp)));
        assert_eq!(find("http"), by_name("http").map(Registered::Flow));
        assert_eq!(find("gre"), None);
    }

    #[test]
    fn connection_dissectors_are_registered_by_name_and_selected_by_ip_protocol() {
        for (i, k) in ConnectionKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
            let r = k.registration();
            assert_eq!(find(r.name), Some(Registered::Connection(*k)));
            assert_eq!(ConnectionKind::of_proto(r.proto()), Some(*k));
            // selected after the packet dissector that the same key selects
            assert_eq!(Next::IpProto(r.proto()).dissector(), Some(r.parent));
        }
        assert_eq!(ConnectionKind::of_proto(6), Some(ConnectionKind::Tcp));
        assert_eq!(ConnectionKind::of_proto(17), Some(ConnectionKind::Udp));
        assert_eq!(ConnectionKind::Tcp.registration().parent, Layer::Tcp);
        assert_eq!(ConnectionKind::Udp.registration().parent, Layer::Udp);
        assert_eq!(ConnectionKind::of_proto(1), None, "icmp: no connection");
        assert_eq!(ConnectionKind::of_proto(47), None);
    }

    #[test]
    fn a_connection_dissector_opens_its_connection_and_receives_its_packets() {
        use crate::conn::{ConnConfig, ConnCounters};
        use crate::stream::ByteBudget;
        let cfg = ConnConfig::default();
        let mut n = ConnCounters::default();
        let syn = Segment { ports: (40000, 80), tcp: tcp_connection::TcpInfo { flags: tcp_connection::SYN, seq: 7, ..Default::default() } };
        // tcp_connection: a SYN opens a connection whose client is its sender
        let Opened::New { conn: mut tcp, sender_is_server: false, picked_up: false } = ConnectionKind::Tcp.open(&syn, &cfg, &mut n) else {
            panic!("a SYN opens a tcp connection");
        };
        assert_eq!(tcp.kind(), ConnectionKind::Tcp);
        assert_eq!(n.tcp_created, 1);
        // its instance steps on the next packets: the SYN-ACK, from the server (direction 1)
        let mut budget = ByteBudget::new(1 << 20);
        let synack = Segment { ports: (80, 40000), tcp: tcp_connection::TcpInfo { flags: tcp_connection::SYN | tcp_connection::ACK, seq: 99, ack: 8, payload_len: 0 } };
        let mut cx = ConnContext { cfg: &cfg, dropped: false, dropped_closed: false, budget: &mut budget, counters: &mut n };
        assert!(tcp.receive(1, &synack, &mut cx).live);
        assert_eq!(tcp.tcp().map(|t| t.state), Some(tcp_connection::TcpState::SynReceived));
        assert!(tcp.reopened_by(&syn) && !tcp.reopened_by(&synack) && !tcp.ended());
        // a RST without a connection passes; under Haka's policy another packet is refused
        let rst = Segment { ports: (40000, 80), tcp: tcp_connection::TcpInfo { flags: tcp_connection::RST, ..Default::default() } };
        assert!(matches!(ConnectionKind::Tcp.open(&rst, &cfg, &mut n), Opened::Pass));
        let strict = ConnConfig { no_connection_found: tcp_connection::NoConnection::Drop, ..cfg };
        assert!(matches!(ConnectionKind::Tcp.open(&synack, &strict, &mut n), Opened::NoConnection));
        // udp_connection: any datagram opens one; a response seen first is oriented by ports
        let resp = Segment { ports: (53, 33000), tcp: Default::default() };
        let Opened::New { conn: mut udp, sender_is_server: true, .. } = ConnectionKind::Udp.open(&resp, &cfg, &mut n) else {
            panic!("a datagram opens a udp connection");
        };
        assert_eq!((udp.kind(), n.udp_created), (ConnectionKind::Udp, 1));
        let mut cx = ConnContext { cfg: &cfg, dropped: true, dropped_closed: false, budget: &mut budget, counters: &mut n };
        let s = udp.receive(0, &resp, &mut cx);
        assert!(s.drop_silently && !s.live, "a dropped connection's datagrams are dropped");
    }

    #[test]
    fn parents_select_their_children_by_the_registered_key() {
        assert_eq!(CAPTURE, Layer::Packet);
        assert_eq!(Next::EtherType(0x0800).dissector(), Some(Layer::Ipv4));
        assert_eq!(Next::EtherType(0x86dd).dissector(), Some(Layer::Ipv6));
        assert_eq!(Next::EtherType(0x0806).dissector(), None, "ARP: no dissector, the frame is accepted as is");
        assert_eq!(Next::IpProto(6).dissector(), Some(Layer::Tcp));
        assert_eq!(Next::IpProto(17).dissector(), Some(Layer::Udp));
        assert_eq!(Next::IpProto(1).dissector(), Some(Layer::Icmp));
        assert_eq!(Next::IpProto(58).dissector(), Some(Layer::Icmpv6));
        assert_eq!(Next::IpProto(47).dissector(), None);
        assert_eq!(Next::End.dissector(), None);
        for (i, l) in Layer::ALL.iter().enumerate() {
            assert_eq!(*l as usize, i);
        }
    }

    #[test]
    fn each_packet_dissector_reads_its_header_and_hands_on_the_rest() {
        // Ethernet / IPv4 (20) / UDP 5353 -> 53 with 4 payload bytes, then 2 bytes of padding
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0x45, 0, 0, 32, 0, 0, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
        f.extend_from_slice(&[0x14, 0xe9, 0, 53, 0, 12, 0, 0, b'a', b'b', b'c', b'd', 0xee, 0xee]);
        let opts = DissectOptions { ipv4_checksum: false };
        let mut p = PacketView { frame: &f, link: LinkType::Ethernet, opts: &opts, off: 0, data: &f, meta: PacketMeta::NONE };
        let next = CAPTURE.receive(&mut p).unwrap();
        assert_eq!((next, p.off, p.data.len()), (Next::EtherType(0x0800), 14, f.len() - 14));
        let l3 = next.dissector().unwrap();
        let next = l3.receive(&mut p).unwrap();
        // the IP length clips the Ethernet padding off what ipv4 hands on
        assert_eq!((next, p.off, p.data.len()), (Next::IpProto(17), 34, 12));
        assert_eq!(&p.meta.src_addr[12..], &[198, 18, 0, 1]);
        let l4 = next.dissector().unwrap();
        assert_eq!(l4, Layer::Udp);
        assert_eq!(l4.receive(&mut p).unwrap(), Next::End);
        assert_eq!((p.meta.src_port, p.meta.dst_port, p.meta.payload_offset, p.meta.payload_len), (5353, 53, 42, 4));
        assert!(p.meta.has_l4);
        // the chain walked whole gives the same metadata
        assert_eq!(crate::dissect::dissect(&f, LinkType::Ethernet, &opts).unwrap(), p.meta);
        // a header its dissector refuses stops the chain with the reason
        let mut short = p;
        short.data = &f[34..40];
        assert_eq!(Layer::Udp.receive(&mut short), Err(Malformed::UdpTruncated));
    }
}
