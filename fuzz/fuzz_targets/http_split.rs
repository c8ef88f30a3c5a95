//! HTTP, both directions, through the `http` dissector the engine uses (raw heads, bodies
//! reported), the client's and the server's streams cut at fuzzer-chosen points.
//! Oracles: split invariance (the same events, body bytes joined, as the streams fed
//! whole); every head reported re-scans to itself (`RawHead::scan`), spans follow one
//! another; the bytes held between
//! calls stay under the head limit per direction.
//! Input: [ctl len][ctl: chunk lengths][u16 client length][client bytes][server bytes].
#![no_main]
use haka_engine::dissectors::http::{HttpDissector, RawHead};
use haka_engine::dissectors::{AppEvent, Settings};
use haka_fuzz::{chunks, control, normalize, run_stream, take_u16_prefixed};
use libfuzzer_sys::fuzz_target;

fn settings(flags: u8) -> Settings {
    let mut s = Settings::default();
    s.http_bodies = true;
    s.http09_error = flags & 1 != 0;
    s.truncated_head_error = flags & 2 != 0;
    s.http_binary_header = flags & 4 != 0;
    s
}

fuzz_target!(|data: &[u8]| {
    let (ctl, rest) = control(data);
    let (client, server) = take_u16_prefixed(rest);
    let s = settings(ctl.first().copied().unwrap_or(0));
    let whole = run_stream(&mut HttpDissector::new(&s), [&[client][..], &[server][..]]).0;
    let (cc, sc) = (chunks(ctl, client), chunks(ctl.get(1..).unwrap_or(&[]), server));
    let (split, held) = run_stream(&mut HttpDissector::new(&s), [&cc, &sc]);
    let (w, p) = (normalize(&whole), normalize(&split));
    haka_fuzz::assert_same(&w, &p);
    // what waits for the end of a head, chunk line or trailer block: under the head limit
    assert!(held <= 2 * ((64 << 10) + 4096), "held {held} bytes");
    let mut ends = [0u64; 2];
    for e in &whole {
        if let AppEvent::Head { head, span, .. } = e {
            if !s.http_binary_header {
                // (scan refuses a NUL in a value, which binary_header = "accept" lets by)
                let again = RawHead::scan(head.bytes.clone(), head.is_request).expect("a reported head re-scans");
                assert_eq!(again.info.parts, head.info.parts);
            }
            let d = !head.is_request as usize;
            assert!(span.0 >= ends[d] && span.1 - span.0 == head.bytes.len() as u64, "span {span:?} after {}", ends[d]);
            ends[d] = span.1;
        }
    }
});
