//! Application dissectors: what reads a connection's data once a `next_dissector` policy
//! (or Haka's default port policy) installs one on it, as in Haka, where
//! `tcp_connection` hands its stream to `http`.
//!
//! One folder per protocol: its parser (pure: bytes in, typed results out), its
//! dissector (the per-connection state behind [`AppDissector`]) and one
//! [`Registration`] line in [`REGISTRY`]. The connection stage
//! ([`crate::stateful`]) knows none of them by name: it creates the dissector a policy
//! selects ([`Registration::new`]), hands it the connection's in-order stream bytes or
//! datagrams (`receive_*`: the data is lent, the events it reports are owned by the
//! engine from then on) and turns the [`AppEvent`]s into Lua events and verdicts.
//!
//! The shape is Suricata's app-layer registration (a name, default ports, a state
//! constructor, parse functions per direction) rather than Snort 3's inspector
//! classes: a stream dissector here does not split or own the stream (the
//! connection stage reassembles it once for every dissector, Haka's model), it
//! only parses what it is given and reports events in stream order.
use crate::config::AnomalyAction;
use crate::stats::Stateful;
use std::fmt;

pub mod dns;
pub mod http;
pub mod tls;

/// Every application dissector, by name. Its position + 1 is its [`DissectorId`]
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
    pub new: fn(&Settings, u8) -> Box<dyn AppDissector>,
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

/// The per-connection state of an application dissector.
pub trait AppDissector: Send {
    /// In-order stream bytes of direction `dir` (0: client to server).
    fn receive_stream(&mut self, dir: u8, data: &[u8], out: &mut Events);
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
    fn held_bytes(&self) -> usize;
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
    /// The message in direction `dir` ended at stream offset `end`.
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
}
