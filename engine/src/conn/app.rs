//! Application dissectors on top of a connection: HTTP (TCP stream), DNS (UDP
//! datagrams), TLS ClientHello (TCP stream, client side). Pure: bytes in, typed
//! events out; the worker turns the events into Lua events.
use crate::dns::{self, Message, PendingQueries};
use crate::http::{Anomaly, HttpError, HttpEvent, HttpParser, RawHead};
use crate::tls::{self, ClientHello, TlsError};

/// DNS queries remembered per flow for matching responses.
const DNS_PENDING: usize = 64;
const DNS_PENDING_MS: u64 = 30_000;
/// DNS over TCP: bytes kept for one incomplete message (2-byte length + 65535).
const DNS_TCP_MAX: usize = 65537;

pub enum AppState {
    /// `end`: per direction, stream offset after the last head or body byte seen;
    /// `prior`: the last request and response heads that no rule saw at their own time
    /// (prefilters), handed to Lua before the events of its next call for this connection,
    /// so that `http.request` and `http.response` are there (see [`AppEvent::HttpPriorHead`]).
    Http { req: HttpParser, resp: HttpParser, end: [u64; 2], prior: [Option<RawHead>; 2] },
    /// `tcp`: DNS over TCP, bytes of an incomplete length-prefixed message per direction.
    Dns { pending: PendingQueries, tcp: [Vec<u8>; 2] },
    /// `reader`: None once the hello was read (or refused).
    Tls { reader: Option<Box<tls::HelloReader>> },
}

/// One application event, in stream order.
#[derive(Debug)]
pub enum AppEvent {
    /// A request head as received; `span`: its stream offsets `[start, end)` in the up
    /// direction; `rules`: the listeners that run for it (`crate::prefilter`; set by the
    /// stateful stage).
    HttpRequest { head: RawHead, span: (u64, u64), rules: u32 },
    HttpResponse { head: RawHead, span: (u64, u64), rules: u32 },
    /// A head of an earlier packet that selected no rule, handed to Lua before a later
    /// event of its exchange so that the rules of that event read it (`http.request` in a
    /// response rule): its message is made, no rule fires for it.
    HttpPriorHead(RawHead),
    /// Body bytes (de-chunked) of the current message in direction `dir`; `off`: stream
    /// offset of the first one (meaningful for bodies that are not chunked).
    HttpBody { dir: u8, data: Vec<u8>, off: u64 },
    /// The message in direction `dir` ended at stream offset `end`.
    HttpMessageEnd { dir: u8, end: u64 },
    /// Malformed HTTP in direction `dir` (Haka: alert + drop the connection).
    HttpError { dir: u8, error: HttpError },
    DnsQuery(Message),
    /// A response; `matched`: a query of this flow with the same id and question was seen.
    DnsResponse { msg: Message, matched: bool },
    DnsError(dns::DnsError),
    TlsClientHello(ClientHello),
    TlsError(TlsError),
}

impl AppState {
    /// `bodies`: report body bytes (rules read them); without, bodies are skipped uncopied.
    pub fn http(bodies: bool) -> AppState {
        let (mut req, mut resp) = (HttpParser::request(), HttpParser::response());
        for p in [&mut req, &mut resp] {
            p.set_emit_bodies(bodies);
            p.set_raw_heads(true);
        }
        AppState::Http { req, resp, end: [0; 2], prior: [None, None] }
    }

    /// An HTTP state from a recycled one (see [`ConnTable::new_http_state`](super::ConnTable::new_http_state)):
    /// its parsers reset, their buffers kept.
    pub fn reuse_http(mut self: Box<AppState>, bodies: bool) -> Box<AppState> {
        match &mut *self {
            AppState::Http { req, resp, end, prior } => {
                for p in [&mut *req, &mut *resp] {
                    p.reset();
                    p.set_emit_bodies(bodies);
                }
                *end = [0; 2];
                *prior = [None, None];
                self
            }
            _ => Box::new(AppState::http(bodies)),
        }
    }

    /// Gives back the head bytes of `e` to the parser that reported it.
    pub fn recycle(&mut self, e: AppEvent) {
        if let AppState::Http { req, resp, .. } = self {
            match e {
                AppEvent::HttpRequest { head, .. } => req.recycle_head(head.bytes),
                AppEvent::HttpResponse { head, .. } => resp.recycle_head(head.bytes),
                AppEvent::HttpPriorHead(head) => if head.is_request { req } else { resp }.recycle_head(head.bytes),
                _ => {}
            }
        }
    }

    /// Gives head bytes no event holds any more back to the parser of their direction.
    pub fn recycle_bytes(&mut self, bytes: Vec<u8>, is_request: bool) {
        if let AppState::Http { req, resp, .. } = self {
            if is_request { req } else { resp }.recycle_head(bytes);
        }
    }

    /// Keeps `head` (of an event no rule saw) as the connection's prior head of its kind; a
    /// request starts a new exchange: the prior response goes.
    pub fn keep_prior(&mut self, head: RawHead) {
        if let AppState::Http { req, resp, prior, .. } = self {
            if head.is_request {
                if let Some(old) = prior[0].replace(head) {
                    req.recycle_head(old.bytes);
                }
                if let Some(old) = prior[1].take() {
                    resp.recycle_head(old.bytes);
                }
            } else if let Some(old) = prior[1].replace(head) {
                resp.recycle_head(old.bytes);
            }
        }
    }

    /// The prior heads (request, response), taken.
    pub fn take_priors(&mut self) -> [Option<RawHead>; 2] {
        match self {
            AppState::Http { prior, .. } => std::mem::take(prior),
            _ => [None, None],
        }
    }

    /// HTTP: Haka's errors where the parser is tolerant by default: HTTP/0.9 request lines
    /// (`[http] http09 = "error"`), heads cut by the end of the stream (`[http]
    /// truncated_head = "error"`).
    pub fn set_http_errors(&mut self, http09: bool, truncated_head: bool) {
        if let AppState::Http { req, resp, .. } = self {
            req.set_refuse_http09(http09);
            req.set_truncated_head_error(truncated_head);
            resp.set_truncated_head_error(truncated_head);
        }
    }

    pub fn dns() -> AppState {
        AppState::Dns { pending: PendingQueries::new(DNS_PENDING, DNS_PENDING_MS), tcp: [Vec::new(), Vec::new()] }
    }

    /// `max_hello`: the largest ClientHello read (`[tls] max_hello_bytes`).
    pub fn tls(max_hello: usize) -> AppState {
        AppState::Tls { reader: Some(Box::new(tls::HelloReader::new(max_hello))) }
    }

    /// Feeds in-order stream bytes of direction `dir` (0 = client to server). `scratch`:
    /// the HTTP parser's events, a vector the worker reuses for every connection (hot in
    /// cache, where one per connection was a cache miss per segment).
    pub fn feed_stream(&mut self, dir: u8, data: &[u8], out: &mut Vec<AppEvent>, scratch: &mut Vec<HttpEvent>) {
        match self {
            AppState::Http { req, resp, end, .. } => {
                let start = out.len();
                let p = if dir == 0 { &mut *req } else { &mut *resp };
                let last = &mut end[dir as usize & 1];
                scratch.clear();
                match p.feed_into(data, scratch) {
                    Ok(()) => {
                        for e in scratch.drain(..) {
                            match e {
                                HttpEvent::Head(head) => {
                                    let span = p.take_head_span().unwrap_or((0, 0));
                                    *last = span.1;
                                    out.push(if head.is_request {
                                        AppEvent::HttpRequest { head, span, rules: crate::prefilter::ALL }
                                    } else {
                                        AppEvent::HttpResponse { head, span, rules: crate::prefilter::ALL }
                                    });
                                }
                                // not reported in raw-heads mode
                                HttpEvent::Request(_) | HttpEvent::Response(_) => {}
                                HttpEvent::Body(d) | HttpEvent::Tunnel(d) => {
                                    let off = p.take_body_offset().unwrap_or(*last);
                                    *last = off + d.len() as u64;
                                    out.push(AppEvent::HttpBody { dir, data: d, off });
                                }
                                HttpEvent::MessageEnd => out.push(AppEvent::HttpMessageEnd { dir, end: *last }),
                                HttpEvent::Trailers(_) => {}
                            }
                        }
                        // Requests tell the response parser how to delimit their answers.
                        if dir == 0 {
                            for e in &out[start..] {
                                if let AppEvent::HttpRequest { head, .. } = e {
                                    if head.info.anomalies & Anomaly::Http09Request.bit() != 0 {
                                        resp.expect_http09_response();
                                    } else {
                                        resp.expect_response_to_method(head.part(0));
                                    }
                                }
                            }
                        }
                    }
                    Err(error) => out.push(AppEvent::HttpError { dir, error }),
                }
            }
            AppState::Tls { reader } => {
                let Some(r) = reader.as_mut().filter(|_| dir == 0) else { return };
                if let Some(res) = r.feed(data) {
                    *reader = None;
                    match res {
                        Ok(h) => out.push(AppEvent::TlsClientHello(h)),
                        Err(e) => out.push(AppEvent::TlsError(e)),
                    }
                }
            }
            AppState::Dns { pending, tcp } => {
                // DNS over TCP (RFC 1035 4.2.2): 2-byte length, then the message.
                let buf = &mut tcp[dir as usize & 1];
                let (msgs, used) = if buf.is_empty() {
                    crate::dns::parse_tcp_stream(data)
                } else {
                    buf.extend_from_slice(data);
                    crate::dns::parse_tcp_stream(buf)
                };
                if buf.is_empty() {
                    if used < data.len() {
                        buf.extend_from_slice(&data[used..]);
                    }
                } else {
                    buf.drain(..used);
                }
                if buf.len() > DNS_TCP_MAX {
                    // a length prefix announcing more than a DNS message may hold
                    buf.clear();
                    out.push(AppEvent::DnsError(dns::DnsError::Truncated));
                }
                for m in msgs {
                    Self::dns_message(pending, m, 0, out);
                }
            }
        }
    }

    fn dns_message(pending: &mut PendingQueries, m: Result<Message, dns::DnsError>, now_ms: u64, out: &mut Vec<AppEvent>) {
        match m {
            Ok(msg) => {
                if msg.is_response() {
                    let matched = pending.on_response(&msg, now_ms).is_some();
                    out.push(AppEvent::DnsResponse { msg, matched });
                } else {
                    pending.on_query(&msg, now_ms);
                    out.push(AppEvent::DnsQuery(msg));
                }
            }
            Err(e) => out.push(AppEvent::DnsError(e)),
        }
    }

    /// End of a direction's stream (FIN): completes read-until-close bodies.
    pub fn feed_eof(&mut self, dir: u8, out: &mut Vec<AppEvent>) {
        if let AppState::Http { req, resp, end, .. } = self {
            let p = if dir == 0 { req } else { resp };
            match p.feed_eof() {
                Ok(evs) => {
                    for e in evs {
                        match e {
                            HttpEvent::Body(d) => {
                                let off = p.take_body_offset().unwrap_or(end[dir as usize & 1]);
                                out.push(AppEvent::HttpBody { dir, data: d, off })
                            }
                            HttpEvent::MessageEnd => out.push(AppEvent::HttpMessageEnd { dir, end: end[dir as usize & 1] }),
                            _ => {}
                        }
                    }
                }
                Err(HttpError::Truncated) => {} // connection closed mid-message: not an attack
                Err(error) => out.push(AppEvent::HttpError { dir, error }),
            }
        }
    }

    /// A UDP datagram of direction `dir`.
    pub fn feed_datagram(&mut self, _dir: u8, payload: &[u8], now_ms: u64, out: &mut Vec<AppEvent>) {
        if let AppState::Dns { pending, .. } = self {
            Self::dns_message(pending, dns::parse(payload), now_ms, out);
        }
    }
}
