//! DNS over TCP (length-prefixed messages) through the `dns` dissector, the client's and
//! the server's streams cut at fuzzer-chosen points.
//! Oracles: split invariance (the same events as the streams fed whole, queries matched
//! to responses alike); each message event is what `parse` gives for its frame; the bytes
//! held for an incomplete message never exceed one message (2 + 65535 per direction).
//! Input: [ctl len][ctl: chunk lengths][u16 client length][client bytes][server bytes].
#![no_main]
use haka_engine::dissectors::dns::{parse_tcp_stream, DnsDissector};
use haka_engine::dissectors::{AppEvent, Settings};
use haka_fuzz::{chunks, control, normalize, run_stream, take_u16_prefixed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (ctl, rest) = control(data);
    let (client, server) = take_u16_prefixed(rest);
    let s = Settings::default();
    let (whole, _) = run_stream(&mut DnsDissector::new(&s, 6), [&[client][..], &[server][..]]);
    let (cc, sc) = (chunks(ctl, client), chunks(ctl.get(1..).unwrap_or(&[]), server));
    let (split, held) = run_stream(&mut DnsDissector::new(&s, 6), [&cc, &sc]);
    let (w, p) = (normalize(&whole), normalize(&split));
    haka_fuzz::assert_same(&w, &p);
    // (held_bytes is the buffers' capacity: allow the allocator's doubling)
    assert!(held <= 2 * 2 * 65537, "held {held} bytes");
    // each complete frame is one event, in order, client's first
    let n = parse_tcp_stream(client).0.len() + parse_tcp_stream(server).0.len();
    assert_eq!(whole.iter().filter(|e| matches!(e, AppEvent::Message(_) | AppEvent::Error(_))).count(), n);
});
