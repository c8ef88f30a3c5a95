//! The `tls` dissector: the ClientHello at the start of a TLS connection (server name,
//! versions, ALPN), read over as many records and segments as it takes. The parser is
//! [`parser`].
pub mod parser;

pub use parser::*;

use super::{Dissector, AppEvent, ErrorVerdict, Events, LuaMessage, ProtocolError, Registration, Settings};
use crate::stats::Stateful;

pub static REGISTRATION: Registration = Registration {
    name: "tls",
    default_ports: &[(6, 443)],
    new: |s, _| Box::new(TlsDissector::new(s)),
    errors: Stateful::TlsErrors,
    heads: None,
};

pub struct TlsDissector {
    /// None once the hello was read (or refused).
    reader: Option<Box<HelloReader>>,
    error_drop: bool,
}

impl TlsDissector {
    pub fn new(s: &Settings) -> TlsDissector {
        TlsDissector { reader: Some(Box::new(HelloReader::new(s.tls_max_hello))), error_drop: s.tls_error_drop }
    }
}

impl super::Message for ClientHello {
    fn counter(&self) -> Stateful {
        Stateful::TlsClientHellos
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn to_lua(&self, lua: &mlua::Lua, _ctx: &super::LuaContext) -> mlua::Result<LuaMessage> {
        Ok(LuaMessage { kind: 6, flags: 0, table: crate::lua::app_values::tls_table(lua, self)? })
    }
}

impl Dissector for TlsDissector {
    fn receive_stream(&mut self, dir: u8, data: &[u8], out: &mut Events) {
        let Some(r) = self.reader.as_mut().filter(|_| dir == 0) else { return };
        let Some(res) = r.feed(data) else { return };
        self.reader = None;
        out.list.push(match res {
            Ok(h) => AppEvent::Message(Box::new(h)),
            // not TLS at all: no endpoint reads it as TLS; counted only
            Err(TlsError::NotTls) => {
                AppEvent::Error(ProtocolError { dir, alert: None, verdict: ErrorVerdict::Accept, stops: true })
            }
            Err(e) => AppEvent::Error(ProtocolError {
                dir,
                alert: Some(e.to_string()),
                verdict: if self.error_drop { ErrorVerdict::DropConnection } else { ErrorVerdict::Accept },
                stops: true,
            }),
        });
    }

    fn held_bytes(&self) -> usize {
        self.reader.as_ref().map_or(0, |r| r.held())
    }
}
