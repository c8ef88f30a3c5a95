//! HTTP head edits: `http::set_fields` (what a rule's `headers[name] = value` does to a
//! head in the datapath) against the owned model (`Headers::set` / `remove` then
//! `to_bytes`), and the parse -> write -> parse round trip.
//! Oracles: an unmodified head writes back byte for byte; the edited head re-parses, with
//! the same start line and the same fields as the owned model's edit of the same head;
//! every field set reads back with its new value, every field removed is gone.
//! Input: [ctl len][ctl: bit 0 of byte 0 = response; then (name, value) selector pairs][head].
#![no_main]
use haka_engine::dissectors::http::{set_fields, FieldSet, HttpEvent, HttpParser, Limits, RawHead};
use libfuzzer_sys::fuzz_target;

// (no framing field: a rule that writes a bad Content-Length makes an unparsable head)
const NAMES: [&str; 7] = ["Host", "X-Fuzz", "User-Agent", "cookie", "Connection", "a", "x-fuzz"];
const VALUES: [&str; 6] = ["", "v", "a b", "12", "gzip, deflate", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"];

/// Parses one head: (owned event, raw head), or None when `bytes` is not exactly one
/// complete head.
/// `roomy`: limits that a head grown by the edits may need (a field added to a head at the
/// field-count or size limit: the edit's doing, not the parser's).
fn parse(bytes: &[u8], response: bool, roomy: bool) -> Option<(HttpEvent, RawHead)> {
    let limits = if roomy { Limits { max_head: 1 << 20, max_headers: 1 << 16, ..Limits::default() } } else { Limits::default() };
    let mk = |raw: bool| {
        let mut p = if response { HttpParser::response_with_limits(limits) } else { HttpParser::request_with_limits(limits) };
        p.set_raw_heads(raw);
        p
    };
    let (mut owned, mut raw) = (mk(false), mk(true));
    let evs = owned.feed(bytes).ok()?;
    let revs = raw.feed(bytes).ok()?;
    let o = evs.into_iter().next().filter(|e| matches!(e, HttpEvent::Request(_) | HttpEvent::Response(_)))?;
    let r = match revs.into_iter().next()? {
        HttpEvent::Head(h) => h,
        _ => return None,
    };
    // exactly one head: it used all the bytes
    (r.bytes.len() == bytes.len()).then_some((o, r))
}

fn fields(e: &HttpEvent) -> (Vec<(String, String)>, String) {
    let (h, line) = match e {
        HttpEvent::Request(r) => (&r.headers, format!("{} {} {}", r.method, r.uri, r.version)),
        HttpEvent::Response(r) => (&r.headers, format!("{} {} {}", r.version, r.status, r.reason)),
        _ => unreachable!(),
    };
    (h.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(), line)
}

fuzz_target!(|data: &[u8]| {
    let (ctl, head) = haka_fuzz::control(data);
    let response = ctl.first().is_some_and(|b| b & 1 != 0);
    let Some((mut owned, raw)) = parse(head, response, false) else { return };
    // unmodified: written back as received
    let written = match &owned {
        HttpEvent::Request(r) => r.to_bytes(),
        HttpEvent::Response(r) => r.to_bytes(),
        _ => unreachable!(),
    };
    assert_eq!(written, head, "unmodified head not written back as received");
    if raw.info.anomalies & haka_engine::dissectors::http::Anomaly::Http09Request.bit() != 0 {
        return; // no fields to edit
    }
    let sets: Vec<FieldSet> = ctl
        .get(1..)
        .unwrap_or(&[])
        .chunks_exact(2)
        .take(16)
        .map(|p| FieldSet {
            name: NAMES[p[0] as usize % NAMES.len()].as_bytes().to_vec(),
            value: (p[1] as usize % 7 < 6).then(|| VALUES[p[1] as usize % 7].as_bytes().to_vec()),
        })
        .collect();
    if sets.is_empty() {
        return;
    }
    let mut out = Vec::new();
    let changed = set_fields(&raw, sets.iter(), &mut out);
    let edited = if changed { &out[..] } else { head };
    let Some((ev, re)) = parse(edited, response, true) else {
        panic!("edited head does not parse: {:?}", String::from_utf8_lossy(edited))
    };
    assert_eq!(re.part(0), raw.part(0));
    assert_eq!(re.part(1), raw.part(1));
    // the owned model
    let h = match &mut owned {
        HttpEvent::Request(r) => &mut r.headers,
        HttpEvent::Response(r) => &mut r.headers,
        _ => unreachable!(),
    };
    for s in &sets {
        let name = std::str::from_utf8(&s.name).unwrap();
        match &s.value {
            Some(v) => h.set(name, std::str::from_utf8(v).unwrap()),
            None => {
                h.remove(name);
            }
        }
    }
    let (got, got_line) = fields(&ev);
    let (want, want_line) = fields(&owned);
    assert_eq!(got_line, want_line);
    assert_eq!(got, want, "set_fields and Headers::set disagree on {:?}", String::from_utf8_lossy(head));
    for s in &sets {
        let last = sets.iter().rev().find(|t| t.name.eq_ignore_ascii_case(&s.name)).unwrap();
        let name = std::str::from_utf8(&s.name).unwrap();
        let now: Vec<&str> = got.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect();
        match &last.value {
            Some(v) => assert_eq!(now, vec![std::str::from_utf8(v).unwrap()], "field {name}"),
            None => assert!(now.is_empty(), "field {name} removed but still there"),
        }
    }
});
