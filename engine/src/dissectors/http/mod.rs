//! The `http` dissector: HTTP/1.x requests and responses on a TCP stream (Haka's
//! `protocol/http`). The parser is [`parser`]; the engine-side rule pre-checks
//! (`prefilter`, `set_headers`) are [`prefilter`].
pub mod parser;
pub mod prefilter;

pub use parser::*;

use super::{Dissector, AppEvent, ErrorVerdict, Events, ProtocolError, Registration, Settings};
use crate::stats::Stateful;

pub static REGISTRATION: Registration = Registration {
    name: "http",
    default_ports: &[(6, 80)],
    new: |s, _| Box::new(HttpDissector::new(s)),
    errors: Stateful::HttpErrors,
    heads: Some([Stateful::HttpRequests, Stateful::HttpResponses]),
};

/// One connection's HTTP state: a parser per direction.
pub struct HttpDissector {
    req: HttpParser,
    resp: HttpParser,
    /// Per direction, stream offset after the last head or body byte seen.
    end: [u64; 2],
    /// The last request and response heads that no rule saw at their own time
    /// (prefilters), handed to Lua before the events of its next call for this
    /// connection, so that `http.request` and `http.response` are there.
    prior: [Option<RawHead>; 2],
    error_drop: bool,
}

impl HttpDissector {
    pub fn new(s: &Settings) -> HttpDissector {
        let (mut req, mut resp) = (HttpParser::request(), HttpParser::response());
        for p in [&mut req, &mut resp] {
            p.set_emit_bodies(s.http_bodies);
            p.set_raw_heads(true);
        }
        Self::set_errors(&mut req, &mut resp, s);
        HttpDissector { req, resp, end: [0; 2], prior: [None, None], error_drop: s.http_error_drop }
    }

    /// Haka's errors where the parser is tolerant by default (HTTP/0.9 request lines, heads
    /// cut by the end of the stream) and its tolerance where it is strict (NUL in values).
    fn set_errors(req: &mut HttpParser, resp: &mut HttpParser, s: &Settings) {
        req.set_refuse_http09(s.http09_error);
        req.set_truncated_head_error(s.truncated_head_error);
        resp.set_truncated_head_error(s.truncated_head_error);
        for p in [req, resp] {
            p.set_nul_in_values(s.http_binary_header);
        }
    }

    fn error(&self, dir: u8, error: HttpError) -> AppEvent {
        AppEvent::Error(ProtocolError {
            dir,
            alert: Some(error.haka_alert(dir == 1)),
            verdict: if self.error_drop { ErrorVerdict::DropConnection } else { ErrorVerdict::Accept },
            stops: true,
        })
    }
}

impl Dissector for HttpDissector {
    fn receive_stream(&mut self, dir: u8, data: &[u8], out: &mut Events) {
        let start = out.list.len();
        let p = if dir == 0 { &mut self.req } else { &mut self.resp };
        let last = &mut self.end[dir as usize & 1];
        let scratch = &mut out.http_scratch;
        scratch.clear();
        // On an error, the messages completed before it in the same data are reported
        // first (as they are when the data comes in several segments), then the error.
        let fed = p.feed_into(data, scratch);
        for e in scratch.drain(..) {
            match e {
                HttpEvent::Head(head) => {
                    let span = p.take_head_span().unwrap_or((0, 0));
                    *last = span.1;
                    out.list.push(AppEvent::Head { head, span, rules: prefilter::ALL });
                }
                // not reported in raw-heads mode
                HttpEvent::Request(_) | HttpEvent::Response(_) => {}
                HttpEvent::Body(d) | HttpEvent::Tunnel(d) => {
                    let off = p.take_body_offset().unwrap_or(*last);
                    *last = off + d.len() as u64;
                    out.list.push(AppEvent::Body { dir, data: d, off });
                }
                HttpEvent::MessageEnd => {
                    let end = p.take_message_end().unwrap_or(*last);
                    *last = end;
                    out.list.push(AppEvent::MessageEnd { dir, end })
                }
                HttpEvent::Trailers(_) => {}
            }
        }
        if let Err(error) = fed {
            let e = self.error(dir, error);
            out.list.push(e);
            return;
        }
        // Requests tell the response parser how to delimit their answers.
        if dir == 0 {
            for e in &out.list[start..] {
                if let AppEvent::Head { head, .. } = e {
                    if head.info.anomalies & Anomaly::Http09Request.bit() != 0 {
                        self.resp.expect_http09_response();
                    } else {
                        self.resp.expect_response_to_method(head.part(0));
                    }
                }
            }
        }
    }

    /// Completes read-until-close bodies.
    fn receive_eof(&mut self, dir: u8, out: &mut Events) {
        let p = if dir == 0 { &mut self.req } else { &mut self.resp };
        let end = self.end[dir as usize & 1];
        match p.feed_eof() {
            Ok(evs) => {
                for e in evs {
                    match e {
                        HttpEvent::Body(d) => {
                            let off = p.take_body_offset().unwrap_or(end);
                            out.list.push(AppEvent::Body { dir, data: d, off })
                        }
                        HttpEvent::MessageEnd => out.list.push(AppEvent::MessageEnd { dir, end }),
                        _ => {}
                    }
                }
            }
            Err(HttpError::Truncated) => {} // connection closed mid-message: not an attack
            Err(error) => {
                let e = self.error(dir, error);
                out.list.push(e)
            }
        }
    }

    /// Gives the head bytes of `e` back to the parser that reported them.
    fn recycle(&mut self, e: AppEvent) {
        if let AppEvent::Head { head, .. } | AppEvent::PriorHead(head) = e {
            if head.is_request { &mut self.req } else { &mut self.resp }.recycle_head(head.bytes);
        }
    }

    fn recycle_head_bytes(&mut self, bytes: Vec<u8>, is_request: bool) {
        if is_request { &mut self.req } else { &mut self.resp }.recycle_head(bytes);
    }

    /// A request starts a new exchange: the prior response goes.
    fn keep_prior(&mut self, head: RawHead) {
        if head.is_request {
            if let Some(old) = self.prior[0].replace(head) {
                self.req.recycle_head(old.bytes);
            }
            if let Some(old) = self.prior[1].take() {
                self.resp.recycle_head(old.bytes);
            }
        } else if let Some(old) = self.prior[1].replace(head) {
            self.resp.recycle_head(old.bytes);
        }
    }

    fn take_priors(&mut self) -> [Option<RawHead>; 2] {
        std::mem::take(&mut self.prior)
    }

    fn reusable(&self) -> bool {
        true
    }

    /// Parsers reset, their buffers kept.
    fn reset(&mut self, s: &Settings) {
        for p in [&mut self.req, &mut self.resp] {
            p.reset();
            p.set_emit_bodies(s.http_bodies);
        }
        Self::set_errors(&mut self.req, &mut self.resp, s);
        self.end = [0; 2];
        self.prior = [None, None];
        self.error_drop = s.http_error_drop;
    }

    fn held_bytes(&self) -> usize {
        let prior: usize = self.prior.iter().flatten().map(|h| h.bytes.capacity()).sum();
        self.req.held_bytes() + self.resp.held_bytes() + prior
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the dissector reports for the client's stream fed in `parts`.
    fn events(parts: &[&[u8]]) -> Vec<String> {
        let mut d = HttpDissector::new(&Settings::default());
        let mut ev = Events::default();
        for p in parts {
            d.receive_stream(0, p, &mut ev);
        }
        ev.list
            .iter()
            .map(|e| match e {
                AppEvent::Head { head, span, .. } => format!("head {} {span:?}", String::from_utf8_lossy(head.part(1))),
                AppEvent::MessageEnd { end, .. } => format!("end {end}"),
                AppEvent::Error(p) => format!("error {:?}", p.alert),
                other => format!("{other:?}"),
            })
            .collect()
    }

    /// A request followed in the same segment by bytes that are no HTTP: the request is
    /// reported (its rules run), then the error, as when the two come in two segments.
    /// Before, the error alone was reported and the request was never inspected (with
    /// `[http] protocol_error = "accept"` it passed uninspected). Found by fuzz/http_split.
    #[test]
    fn a_message_before_an_error_in_the_same_segment_is_reported() {
        let req: &[u8] = b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n";
        let bad: &[u8] = b"\x01\x02\r\n\r\n";
        let whole = events(&[&[req, bad].concat()]);
        assert_eq!(whole.len(), 3, "{whole:?}");
        assert_eq!(whole[0], "head /admin (0, 32)");
        assert_eq!(whole[1], "end 32");
        assert!(whole[2].starts_with("error Some("), "{whole:?}");
        assert_eq!(events(&[req, bad]), whole);
    }

    /// 100 pipelined requests in one segment: each head gets its own stream span (before,
    /// the parser kept 64 spans per call and the later heads got (0, 0), which misplaced
    /// a rewrite of their head). Found by fuzz/http_split.
    #[test]
    fn every_head_of_one_segment_gets_its_span() {
        let req: &[u8] = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n";
        let n = req.len() as u64;
        let whole = events(&[&req.repeat(100)]);
        let heads: Vec<&String> = whole.iter().filter(|e| e.starts_with("head")).collect();
        assert_eq!(heads.len(), 100);
        for (i, h) in heads.iter().enumerate() {
            let i = i as u64;
            assert_eq!(**h, format!("head /a ({}, {})", i * n, (i + 1) * n));
        }
    }
}
