//! TLS ClientHello, read incrementally (`tls::HelloReader`, what the `tls` dissector
//! feeds each segment to), the stream cut at fuzzer-chosen points, under a fuzzer-chosen
//! cap.
//! Oracles: split invariance (the same result, at the same stream position, as the stream
//! fed whole); `parse_client_hello` agrees with the reader under the protocol's cap; the
//! bytes held never exceed the cap plus the handshake header; an SNI read is 1..=255
//! bytes of `[A-Za-z0-9._-]`.
//! Input: [ctl len][ctl: byte 0 picks the cap, the rest chunk lengths][stream].
#![no_main]
use haka_engine::dissectors::tls::{parse_client_hello, ClientHello, HelloReader, TlsError, HANDSHAKE_HEADER_LEN, MAX_HANDSHAKE_LEN};
use haka_fuzz::{chunks, control};
use libfuzzer_sys::fuzz_target;

/// The result and how many bytes were fed when it came, and the most bytes held.
fn read(cap: usize, parts: &[&[u8]]) -> (Option<Result<ClientHello, TlsError>>, usize, usize) {
    let mut r = HelloReader::new(cap);
    let (mut fed, mut held) = (0, 0);
    for p in parts {
        fed += p.len();
        let res = r.feed(p);
        held = held.max(r.held());
        if res.is_some() {
            return (res, fed, held);
        }
    }
    (None, fed, held)
}

fuzz_target!(|data: &[u8]| {
    let (ctl, stream) = control(data);
    let cap = match ctl.first() {
        None | Some(0) => MAX_HANDSHAKE_LEN,
        Some(&b) => (b as usize) * 97,
    };
    let (whole, _, held_whole) = read(cap, &[stream]);
    let cuts = chunks(ctl.get(1..).unwrap_or(&[]), stream);
    let (split, fed, held) = read(cap, &cuts);
    assert_eq!(whole, split, "split invariance");
    if split.is_some() {
        // the result came with the chunk holding the byte that decided it: a shorter
        // stream, cut at the start of that chunk, does not decide it
        let last = cuts.iter().scan(0, |s, c| { *s += c.len(); Some(*s) }).position(|e| e == fed).unwrap();
        let before = fed - cuts[last].len();
        assert_eq!(read(cap, &[&stream[..before]]).0, None, "decided before its last byte");
    }
    let bound = cap.min(MAX_HANDSHAKE_LEN) + HANDSHAKE_HEADER_LEN + 64;
    assert!(held.max(held_whole) <= bound, "held {} > {bound}", held.max(held_whole));
    if cap == MAX_HANDSHAKE_LEN {
        let p = parse_client_hello(stream);
        match &whole {
            Some(r) => assert_eq!(&p, r),
            None => assert_eq!(p, Err(TlsError::Incomplete)),
        }
    }
    if let Some(Ok(h)) = &whole {
        if let Some(s) = &h.sni {
            assert!(!s.is_empty() && s.len() <= 255, "sni {s:?}");
            assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)), "sni {s:?}");
        }
    }
});
