//! The `dns` dissector: DNS queries and responses over UDP datagrams or TCP
//! (length-prefixed messages, RFC 1035 4.2.2), with the queries of each flow kept to
//! match their responses (Haka's `protocol/dns`). The parser is [`parser`].
pub mod parser;

pub use parser::*;

use super::{Dissector, AppEvent, ErrorVerdict, Events, LuaMessage, ProtocolError, Registration, Settings};
use crate::stats::Stateful;

pub static REGISTRATION: Registration = Registration {
    name: "dns",
    default_ports: &[(17, 53), (6, 53)],
    new: |s, proto| Box::new(DnsDissector::new(s, proto)),
    errors: Stateful::DnsErrors,
    heads: None,
};

/// How long a query waits for its response.
const PENDING_MS: u64 = 30_000;
/// DNS over TCP: bytes kept for one incomplete message (2-byte length + 65535).
const TCP_MAX: usize = 65537;

pub struct DnsDissector {
    pending: PendingQueries,
    /// DNS over TCP: bytes of an incomplete length-prefixed message per direction.
    tcp: [Vec<u8>; 2],
    /// What a malformed message gets.
    error_verdict: ErrorVerdict,
    max_questions: usize,
}

/// A query, or a response (`matched`: a query of this flow with the same id and
/// question was seen).
#[derive(Debug)]
pub struct DnsEvent {
    pub msg: Message,
    pub matched: Option<bool>,
}

impl super::Message for DnsEvent {
    fn counter(&self) -> Stateful {
        if self.matched.is_some() {
            Stateful::DnsResponses
        } else {
            Stateful::DnsQueries
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn to_lua(&self, lua: &mlua::Lua, ctx: &super::LuaContext) -> mlua::Result<LuaMessage> {
        Ok(LuaMessage {
            kind: if self.matched.is_some() { 5 } else { 4 },
            flags: (self.matched == Some(true)) as i32,
            table: crate::lua::app_values::dns_table(lua, &self.msg, ctx.dns_haka_records)?,
        })
    }
}

impl DnsDissector {
    pub fn new(s: &Settings, proto: u8) -> DnsDissector {
        let error_verdict = match (s.dns_error_drop, proto) {
            (false, _) => ErrorVerdict::Accept,
            (true, 17) => ErrorVerdict::DropPacket,
            (true, _) => ErrorVerdict::DropConnection,
        };
        DnsDissector {
            pending: PendingQueries::new(s.dns_pending_queries as usize, PENDING_MS),
            tcp: [Vec::new(), Vec::new()],
            error_verdict,
            max_questions: s.dns_max_questions as usize,
        }
    }

    fn message(&mut self, dir: u8, m: Result<Message, DnsError>, now_ms: u64, out: &mut Events) {
        let m = m.and_then(|m| if m.questions.len() > self.max_questions { Err(DnsError::TooManyQuestions) } else { Ok(m) });
        out.list.push(match m {
            Ok(msg) => {
                let matched = if msg.is_response() {
                    Some(self.pending.on_response(&msg, now_ms).is_some())
                } else {
                    self.pending.on_query(&msg, now_ms);
                    None
                };
                AppEvent::Message(Box::new(DnsEvent { msg, matched }))
            }
            Err(e) => AppEvent::Error(ProtocolError {
                dir,
                alert: Some(e.to_string()),
                verdict: self.error_verdict,
                stops: false,
            }),
        });
    }
}

impl Dissector for DnsDissector {
    fn receive_stream(&mut self, dir: u8, data: &[u8], out: &mut Events) {
        let buf = &mut self.tcp[dir as usize & 1];
        let (msgs, used) = if buf.is_empty() {
            parse_tcp_stream(data)
        } else {
            buf.extend_from_slice(data);
            parse_tcp_stream(buf)
        };
        if buf.is_empty() {
            if used < data.len() {
                buf.extend_from_slice(&data[used..]);
            }
        } else {
            buf.drain(..used);
        }
        let over = buf.len() > TCP_MAX;
        if over {
            // a length prefix announcing more than a DNS message may hold
            buf.clear();
        }
        for m in msgs {
            self.message(dir, m, 0, out);
        }
        if over {
            self.message(dir, Err(DnsError::Truncated), 0, out);
        }
    }

    fn receive_datagram(&mut self, dir: u8, data: &[u8], out: &mut Events) {
        // pending-query expiry counts in datagrams, not time, here
        self.message(dir, parse(data), 0, out);
    }

    fn held_bytes(&self) -> usize {
        self.tcp[0].capacity() + self.tcp[1].capacity() + self.pending.held_bytes()
    }
}
