//! TLS ClientHello parser for the `tls` dissector (block by server name).
//!
//! [`parse_client_hello`] reads the first bytes of the client->server TCP
//! stream: TLS records (RFC 8446 §5.1: content type, version, 16-bit length)
//! carrying one handshake message (type, 24-bit length), which must be a
//! ClientHello (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2). The handshake message may
//! be split over any number of records (even 1-byte records).
//!
//! Results:
//! - [`TlsError::Incomplete`]: every byte seen so far is consistent with a
//!   ClientHello but more stream bytes are needed; the caller waits for more
//!   data and calls again with the longer prefix. Every strict prefix of a
//!   valid stream yields `Incomplete` (never `Ok`, never another error).
//! - [`TlsError::NotTls`]: the first record header is not a TLS handshake
//!   record (content type not 22, version major not 3 or minor above 4).
//!   SSLv2-compatible hellos (first byte 0x80) are reported as `NotTls`.
//! - [`TlsError::Malformed`]: TLS-looking but invalid; the string says why.
//!
//! Robustness rules (every input is attacker controlled; no input panics):
//! - Records: non-empty, at most [`MAX_RECORD_LEN`] bytes, all of content
//!   type 22 and version major 3 until the ClientHello is complete.
//! - Handshake type must be 1 (ClientHello), its length at most
//!   [`MAX_HANDSHAKE_LEN`] (checked on the header, before buffering).
//! - Every vector length is checked against its enclosing length (vector in
//!   extension in extension block in handshake); the extension block must end
//!   exactly at the end of the handshake message, each extension body must be
//!   consumed exactly by the known extensions (SNI, ALPN, supported_versions).
//! - Duplicate extension types are rejected (RFC 8446 §4.2).
//! - The SNI host name (server_name ext 0, name type 0; RFC 6066 §3) must be
//!   1..=[`MAX_HOST_NAME_LEN`] bytes of `[A-Za-z0-9._-]`; it is kept as sent
//!   (case preserved): compare with [`ClientHello::sni_eq_ignore_case`].
//!   More than one host_name entry is rejected; other name types are skipped.
//! - ALPN protocol names (ext 16) are opaque bytes, converted lossily to UTF-8.
//! - Bytes after the ClientHello (in its last record or following records)
//!   are ignored; the result is `Ok` as soon as the ClientHello's last byte
//!   is present, even if its record announces more bytes.
#![deny(unsafe_code)]

use std::fmt;

/// Record content type "handshake".
pub const CONTENT_TYPE_HANDSHAKE: u8 = 22;
/// Handshake type "client_hello".
pub const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// Maximum TLSPlaintext fragment length (2^14, RFC 8446 §5.1).
pub const MAX_RECORD_LEN: usize = 1 << 14;
/// The longest ClientHello body the protocol allows: version, random, a 32-byte
/// session id, the largest cipher-suite, compression and extension vectors.
pub const MAX_HANDSHAKE_LEN: usize = 2 + 32 + 1 + 32 + 2 + 65534 + 1 + 255 + 2 + 65535;
/// Maximum SNI host name length (DNS name limit).
pub const MAX_HOST_NAME_LEN: usize = 255;
/// Record header length.
pub const RECORD_HEADER_LEN: usize = 5;
/// Handshake header length.
pub const HANDSHAKE_HEADER_LEN: usize = 4;

/// Extension types decoded by the parser.
pub mod ext {
    pub const SERVER_NAME: u16 = 0;
    pub const ALPN: u16 = 16;
    pub const SUPPORTED_VERSIONS: u16 = 43;
}

/// Protocol version numbers.
pub mod version {
    pub const SSL_3_0: u16 = 0x0300;
    pub const TLS_1_0: u16 = 0x0301;
    pub const TLS_1_1: u16 = 0x0302;
    pub const TLS_1_2: u16 = 0x0303;
    pub const TLS_1_3: u16 = 0x0304;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsError {
    /// Need more bytes: the caller waits for more stream data.
    Incomplete,
    /// The stream does not start with a TLS handshake record.
    NotTls,
    /// TLS-looking but invalid; the reason.
    Malformed(&'static str),
    /// The ClientHello announces `len` body bytes, more than the reader's cap.
    TooLong { len: usize, cap: usize },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Incomplete => f.write_str("tls: incomplete ClientHello"),
            TlsError::NotTls => f.write_str("tls: not a TLS handshake"),
            TlsError::Malformed(why) => write!(f, "tls: malformed ClientHello: {why}"),
            TlsError::TooLong { len, cap } => write!(f, "tls: ClientHello of {len} bytes, over the {cap}-byte cap"),
        }
    }
}

impl std::error::Error for TlsError {}

/// A parsed ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// Version of the first record header (often 0x0301).
    pub record_version: u16,
    /// `legacy_version` / `client_version` of the ClientHello body.
    pub legacy_version: u16,
    /// Highest version offered: the highest non-GREASE entry of
    /// supported_versions (ext 43) when present and non-empty after removing
    /// GREASE, else `legacy_version`.
    pub version: u16,
    pub random: [u8; 32],
    pub session_id: Vec<u8>,
    /// As sent, GREASE values included.
    pub cipher_suites: Vec<u16>,
    pub compression_methods: Vec<u8>,
    /// server_name (ext 0) host_name (type 0), as sent (case preserved).
    pub sni: Option<String>,
    /// application_layer_protocol_negotiation (ext 16) protocol names, in order.
    pub alpn: Vec<String>,
    /// Extension types in order, GREASE values included.
    pub extensions: Vec<u16>,
    /// supported_versions (ext 43) as sent, GREASE values included.
    pub supported_versions: Vec<u16>,
}

impl ClientHello {
    /// SNI equals `name`, ASCII case-insensitively (false without SNI).
    /// A single trailing dot on either side is ignored.
    pub fn sni_eq_ignore_case(&self, name: &str) -> bool {
        match &self.sni {
            Some(s) => eq_ignore_case(s, name),
            None => false,
        }
    }

    /// SNI equals `suffix` or ends with `.suffix`, ASCII case-insensitively
    /// (`example.com` matches `example.com` and `www.EXAMPLE.com`, not
    /// `badexample.com`).
    pub fn sni_matches_domain(&self, suffix: &str) -> bool {
        let Some(s) = &self.sni else { return false };
        let s = s.strip_suffix('.').unwrap_or(s).as_bytes();
        let d = suffix.strip_suffix('.').unwrap_or(suffix).as_bytes();
        if d.is_empty() || s.len() < d.len() {
            return false;
        }
        let split = s.len() - d.len();
        s[split..].eq_ignore_ascii_case(d) && (split == 0 || s[split - 1] == b'.')
    }

    /// SNI in ASCII lowercase.
    pub fn sni_lowercase(&self) -> Option<String> {
        self.sni.as_ref().map(|s| s.to_ascii_lowercase())
    }

    /// Whether the hello carries extension `ty`.
    pub fn has_extension(&self, ty: u16) -> bool {
        self.extensions.contains(&ty)
    }
}

/// ASCII case-insensitive host name equality; a single trailing dot on either
/// side is ignored.
pub fn eq_ignore_case(a: &str, b: &str) -> bool {
    let a = a.strip_suffix('.').unwrap_or(a);
    let b = b.strip_suffix('.').unwrap_or(b);
    a.eq_ignore_ascii_case(b)
}

/// GREASE value (RFC 8701): 0x?A?A with both bytes equal.
pub fn is_grease(v: u16) -> bool {
    (v & 0x0f0f) == 0x0a0a && (v >> 8) == (v & 0xff)
}

/// Human-readable protocol version name.
pub fn version_name(v: u16) -> &'static str {
    match v {
        version::SSL_3_0 => "SSL 3.0",
        version::TLS_1_0 => "TLS 1.0",
        version::TLS_1_1 => "TLS 1.1",
        version::TLS_1_2 => "TLS 1.2",
        version::TLS_1_3 => "TLS 1.3",
        0x7f00..=0x7fff => "TLS 1.3 draft",
        _ if is_grease(v) => "GREASE",
        _ => "unknown",
    }
}

/// Parse the ClientHello at the start of a client->server TCP stream.
pub fn parse_client_hello(stream: &[u8]) -> Result<ClientHello, TlsError> {
    HelloReader::new(MAX_HANDSHAKE_LEN).feed(stream).unwrap_or(Err(TlsError::Incomplete))
}

/// Reads the ClientHello from the stream as it arrives, segment by segment: keeps the
/// handshake bytes gathered so far (at most the cap plus the handshake header) and the
/// partial record header, so each stream byte is looked at once, whatever the number of
/// records or segments (a hello in one-byte records and segments costs what one costs).
pub struct HelloReader {
    /// Largest ClientHello body read; a longer one is [`TlsError::TooLong`].
    cap: usize,
    hs: Vec<u8>,
    hdr: [u8; RECORD_HEADER_LEN],
    hdr_len: usize,
    /// Bytes of the current record not read yet.
    rec_left: usize,
    record_version: u16,
    first: bool,
}

impl HelloReader {
    pub fn new(cap: usize) -> HelloReader {
        HelloReader {
            cap: cap.min(MAX_HANDSHAKE_LEN),
            hs: Vec::new(),
            hdr: [0; RECORD_HEADER_LEN],
            hdr_len: 0,
            rec_left: 0,
            record_version: 0,
            first: true,
        }
    }

    /// Bytes held.
    pub fn held(&self) -> usize {
        self.hs.capacity()
    }

    /// Feeds the next stream bytes: None while more are needed, then the result (once;
    /// the caller stops feeding).
    pub fn feed(&mut self, mut data: &[u8]) -> Option<Result<ClientHello, TlsError>> {
        while !data.is_empty() {
            if self.rec_left == 0 {
                let n = (RECORD_HEADER_LEN - self.hdr_len).min(data.len());
                self.hdr[self.hdr_len..self.hdr_len + n].copy_from_slice(&data[..n]);
                self.hdr_len += n;
                data = &data[n..];
                match record_header(&self.hdr[..self.hdr_len], 0, self.first) {
                    Err(TlsError::Incomplete) => return None,
                    Err(e) => return Some(Err(e)),
                    Ok((version, start, end)) => {
                        if self.first {
                            self.record_version = version;
                            self.first = false;
                        }
                        self.rec_left = end - start;
                        self.hdr_len = 0;
                    }
                }
                continue;
            }
            let n = self.rec_left.min(data.len());
            let (take, rest) = data.split_at(n);
            data = rest;
            self.rec_left -= n;
            // Only the ClientHello's own bytes are kept (what follows it is ignored).
            let mut chunk = take;
            while !chunk.is_empty() {
                let room = match self.total() {
                    Some(total) => total - self.hs.len(),
                    None => HANDSHAKE_HEADER_LEN - self.hs.len(),
                };
                let (now, rest) = chunk.split_at(room.min(chunk.len()));
                self.hs.extend_from_slice(now);
                chunk = rest;
                if let Some(r) = self.check() {
                    return Some(r);
                }
            }
        }
        None
    }

    /// The handshake message's length with its header, once its header is read.
    fn total(&self) -> Option<usize> {
        let h = self.hs.get(..HANDSHAKE_HEADER_LEN)?;
        Some(HANDSHAKE_HEADER_LEN + (usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3])))
    }

    /// The result, if the bytes held decide it.
    fn check(&mut self) -> Option<Result<ClientHello, TlsError>> {
        match self.hs.first() {
            None => return None,
            Some(&HANDSHAKE_CLIENT_HELLO) => {}
            Some(_) => return Some(Err(TlsError::Malformed("handshake message is not a ClientHello"))),
        }
        let total = self.total()?;
        let len = total - HANDSHAKE_HEADER_LEN;
        if len > self.cap {
            return Some(Err(if len > MAX_HANDSHAKE_LEN {
                TlsError::Malformed("ClientHello longer than the protocol allows")
            } else {
                TlsError::TooLong { len, cap: self.cap }
            }));
        }
        if self.hs.len() == HANDSHAKE_HEADER_LEN {
            self.hs.reserve_exact(len);
        }
        (self.hs.len() >= total).then(|| parse_body(self.record_version, &self.hs[HANDSHAKE_HEADER_LEN..total]))
    }
}

/// Check one record header at `pos`; returns (version, fragment start, fragment end).
/// `first` selects NotTls (first record) vs Malformed (later records).
fn record_header(stream: &[u8], pos: usize, first: bool) -> Result<(u16, usize, usize), TlsError> {
    let bad = |why| if first { TlsError::NotTls } else { TlsError::Malformed(why) };
    let hdr = stream.get(pos..).unwrap_or(&[]);
    // Decide NotTls as early as the bytes allow.
    match hdr.first() {
        None => return Err(TlsError::Incomplete),
        Some(&CONTENT_TYPE_HANDSHAKE) => {}
        Some(_) => return Err(bad("non-handshake record inside the ClientHello")),
    }
    match hdr.get(1) {
        None => return Err(TlsError::Incomplete),
        Some(3) => {}
        Some(_) => return Err(bad("record version major is not 3")),
    }
    let minor = match hdr.get(2) {
        None => return Err(TlsError::Incomplete),
        Some(&m) if m <= 4 => m,
        Some(_) => return Err(bad("record version minor above 4")),
    };
    let (Some(&hi), Some(&lo)) = (hdr.get(3), hdr.get(4)) else {
        return Err(TlsError::Incomplete);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len == 0 {
        return Err(TlsError::Malformed("empty handshake record"));
    }
    if len > MAX_RECORD_LEN {
        return Err(TlsError::Malformed("record longer than 2^14"));
    }
    let version = u16::from_be_bytes([3, minor]);
    let start = pos + RECORD_HEADER_LEN;
    Ok((version, start, start + len))
}

/// Bounds-checked big-endian reader; running out is `Malformed(what)`.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], TlsError> {
        let end = self.pos.checked_add(n).ok_or(TlsError::Malformed(what))?;
        let s = self.buf.get(self.pos..end).ok_or(TlsError::Malformed(what))?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, TlsError> {
        Ok(self.bytes(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, TlsError> {
        let b = self.bytes(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a 1-byte length prefix.
    fn vec8(&mut self, what: &'static str) -> Result<Reader<'a>, TlsError> {
        let n = usize::from(self.u8(what)?);
        Ok(Reader::new(self.bytes(n, what)?))
    }

    /// A vector with a 2-byte length prefix.
    fn vec16(&mut self, what: &'static str) -> Result<Reader<'a>, TlsError> {
        let n = usize::from(self.u16(what)?);
        Ok(Reader::new(self.bytes(n, what)?))
    }

    fn u16_list(&mut self, what: &'static str) -> Result<Vec<u16>, TlsError> {
        if !self.remaining().is_multiple_of(2) {
            return Err(TlsError::Malformed(what));
        }
        let mut out = Vec::with_capacity(self.remaining() / 2);
        while !self.is_empty() {
            out.push(self.u16(what)?);
        }
        Ok(out)
    }
}

fn parse_body(record_version: u16, body: &[u8]) -> Result<ClientHello, TlsError> {
    let mut r = Reader::new(body);
    let legacy_version = r.u16("truncated legacy_version")?;
    let mut random = [0u8; 32];
    random.copy_from_slice(r.bytes(32, "truncated random")?);
    let sid = r.vec8("session_id runs past the ClientHello")?;
    if sid.remaining() > 32 {
        return Err(TlsError::Malformed("session_id longer than 32"));
    }
    let session_id = sid.buf.to_vec();
    let mut cs = r.vec16("cipher_suites run past the ClientHello")?;
    if cs.is_empty() {
        return Err(TlsError::Malformed("empty cipher_suites"));
    }
    let cipher_suites = cs.u16_list("odd cipher_suites length")?;
    let cm = r.vec8("compression_methods run past the ClientHello")?;
    if cm.is_empty() {
        return Err(TlsError::Malformed("empty compression_methods"));
    }
    let compression_methods = cm.buf.to_vec();

    let mut hello = ClientHello {
        record_version,
        legacy_version,
        version: legacy_version,
        random,
        session_id,
        cipher_suites,
        compression_methods,
        sni: None,
        alpn: Vec::new(),
        extensions: Vec::new(),
        supported_versions: Vec::new(),
    };
    // Extensions are optional (pre-TLS 1.2 clients may omit the block).
    if r.is_empty() {
        return Ok(hello);
    }
    let mut exts = r.vec16("extensions run past the ClientHello")?;
    if !r.is_empty() {
        return Err(TlsError::Malformed("trailing bytes after extensions"));
    }
    while !exts.is_empty() {
        let ty = exts.u16("truncated extension header")?;
        let mut data = exts.vec16("extension runs past the extensions block")?;
        if hello.extensions.contains(&ty) {
            return Err(TlsError::Malformed("duplicate extension"));
        }
        hello.extensions.push(ty);
        match ty {
            ext::SERVER_NAME => hello.sni = parse_sni(&mut data)?,
            ext::ALPN => hello.alpn = parse_alpn(&mut data)?,
            ext::SUPPORTED_VERSIONS => {
                let mut list = data.vec8("supported_versions list runs past the extension")?;
                if !data.is_empty() {
                    return Err(TlsError::Malformed("trailing bytes in supported_versions"));
                }
                if list.is_empty() {
                    return Err(TlsError::Malformed("empty supported_versions"));
                }
                hello.supported_versions = list.u16_list("odd supported_versions length")?;
            }
            _ => {}
        }
    }
    if let Some(v) = hello.supported_versions.iter().copied().filter(|v| !is_grease(*v)).max() {
        hello.version = v;
    }
    Ok(hello)
}

fn parse_sni(data: &mut Reader<'_>) -> Result<Option<String>, TlsError> {
    let mut list = data.vec16("server_name list runs past the extension")?;
    if !data.is_empty() {
        return Err(TlsError::Malformed("trailing bytes in server_name"));
    }
    if list.is_empty() {
        return Err(TlsError::Malformed("empty server_name list"));
    }
    let mut host: Option<String> = None;
    while !list.is_empty() {
        let name_type = list.u8("truncated server_name entry")?;
        let name = list.vec16("server name runs past the server_name list")?;
        if name_type != 0 {
            continue;
        }
        if host.is_some() {
            return Err(TlsError::Malformed("several host_name entries"));
        }
        let b = name.buf;
        if b.is_empty() {
            return Err(TlsError::Malformed("empty SNI host name"));
        }
        if b.len() > MAX_HOST_NAME_LEN {
            return Err(TlsError::Malformed("SNI host name too long"));
        }
        if !b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_')) {
            return Err(TlsError::Malformed("invalid byte in SNI host name"));
        }
        // All bytes are ASCII, so this is valid UTF-8.
        host = Some(b.iter().map(|&c| char::from(c)).collect());
    }
    Ok(host)
}

fn parse_alpn(data: &mut Reader<'_>) -> Result<Vec<String>, TlsError> {
    let mut list = data.vec16("ALPN list runs past the extension")?;
    if !data.is_empty() {
        return Err(TlsError::Malformed("trailing bytes in ALPN"));
    }
    if list.is_empty() {
        return Err(TlsError::Malformed("empty ALPN list"));
    }
    let mut out = Vec::new();
    while !list.is_empty() {
        let p = list.vec8("ALPN protocol runs past the list")?;
        if p.is_empty() {
            return Err(TlsError::Malformed("empty ALPN protocol name"));
        }
        out.push(String::from_utf8_lossy(p.buf).into_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GREASE_A: u16 = 0x0a0a;
    const GREASE_B: u16 = 0x3a3a;
    const GREASE_C: u16 = 0xdada;

    fn u16be(v: u16) -> [u8; 2] {
        v.to_be_bytes()
    }

    fn vec8(data: &[u8]) -> Vec<u8> {
        let mut v = vec![data.len() as u8];
        v.extend_from_slice(data);
        v
    }

    fn vec16(data: &[u8]) -> Vec<u8> {
        let mut v = (data.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(data);
        v
    }

    fn sni_ext(host: &[u8]) -> Vec<u8> {
        let mut entry = vec![0u8];
        entry.extend(vec16(host));
        vec16(&entry)
    }

    fn alpn_ext(protos: &[&str]) -> Vec<u8> {
        let mut list = Vec::new();
        for p in protos {
            list.extend(vec8(p.as_bytes()));
        }
        vec16(&list)
    }

    fn sv_ext(versions: &[u16]) -> Vec<u8> {
        let list: Vec<u8> = versions.iter().flat_map(|v| u16be(*v)).collect();
        vec8(&list)
    }

    /// Small ClientHello builder.
    #[derive(Clone)]
    struct Builder {
        legacy_version: u16,
        random: [u8; 32],
        session_id: Vec<u8>,
        cipher_suites: Vec<u16>,
        compression: Vec<u8>,
        /// None: no extensions block at all.
        extensions: Option<Vec<(u16, Vec<u8>)>>,
    }

    impl Builder {
        /// A Chrome-like hello: GREASE cipher/extension/version values, SNI,
        /// ALPN, supported_versions, key_share-ish opaque extensions.
        fn chrome_like() -> Builder {
            let mut random = [0u8; 32];
            for (i, b) in random.iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(7).wrapping_add(3);
            }
            Builder {
                legacy_version: 0x0303,
                random,
                session_id: (0..32u8).collect(),
                cipher_suites: vec![GREASE_A, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0x009c, 0x002f],
                compression: vec![0],
                extensions: Some(vec![
                    (GREASE_B, vec![]),
                    (ext::SERVER_NAME, sni_ext(b"www.Example.com")),
                    (23, vec![]),                                 // extended_master_secret
                    (65281, vec![0]),                             // renegotiation_info
                    (10, vec16(&[0x0a, 0x0a, 0, 0x1d, 0, 0x17])), // supported_groups
                    (ext::ALPN, alpn_ext(&["h2", "http/1.1"])),
                    (ext::SUPPORTED_VERSIONS, sv_ext(&[GREASE_C, 0x0304, 0x0303])),
                    (51, vec16(&[0, 0x1d, 0, 4, 1, 2, 3, 4])), // key_share
                    (GREASE_C, vec![0]),
                    (21, vec![0; 40]), // padding
                ]),
            }
        }

        fn without_ext(mut self, ty: u16) -> Builder {
            if let Some(e) = &mut self.extensions {
                e.retain(|(t, _)| *t != ty);
            }
            self
        }

        fn with_ext(mut self, ty: u16, data: Vec<u8>) -> Builder {
            self.extensions.get_or_insert_with(Vec::new).push((ty, data));
            self
        }

        fn body(&self) -> Vec<u8> {
            let mut b = u16be(self.legacy_version).to_vec();
            b.extend_from_slice(&self.random);
            b.extend(vec8(&self.session_id));
            let cs: Vec<u8> = self.cipher_suites.iter().flat_map(|v| u16be(*v)).collect();
            b.extend(vec16(&cs));
            b.extend(vec8(&self.compression));
            if let Some(exts) = &self.extensions {
                let mut block = Vec::new();
                for (ty, data) in exts {
                    block.extend(u16be(*ty));
                    block.extend(vec16(data));
                }
                b.extend(vec16(&block));
            }
            b
        }

        fn handshake(&self) -> Vec<u8> {
            handshake_of(&self.body())
        }

        fn stream(&self) -> Vec<u8> {
            records(&self.handshake(), &[])
        }
    }

    fn handshake_of(body: &[u8]) -> Vec<u8> {
        let n = body.len() as u32;
        let mut h = vec![1, (n >> 16) as u8, (n >> 8) as u8, n as u8];
        h.extend_from_slice(body);
        h
    }

    /// Wrap handshake bytes in records, cutting at the given offsets.
    fn records(hs: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(hs.len());
        for (i, w) in bounds.windows(2).enumerate() {
            let frag = &hs[w[0]..w[1]];
            out.extend_from_slice(&[22, 3, if i == 0 { 1 } else { 3 }]);
            out.extend(vec16(frag));
        }
        out
    }

    fn stream_of_body(body: &[u8]) -> Vec<u8> {
        records(&handshake_of(body), &[])
    }

    fn malformed(r: Result<ClientHello, TlsError>) -> &'static str {
        match r {
            Err(TlsError::Malformed(why)) => why,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    fn check_chrome_like(h: &ClientHello) {
        let b = Builder::chrome_like();
        assert_eq!(h.record_version, 0x0301);
        assert_eq!(h.legacy_version, 0x0303);
        assert_eq!(h.version, 0x0304);
        assert_eq!(h.random, b.random);
        assert_eq!(h.session_id, (0..32u8).collect::<Vec<_>>());
        assert_eq!(h.cipher_suites, b.cipher_suites);
        assert_eq!(h.compression_methods, vec![0]);
        assert_eq!(h.sni.as_deref(), Some("www.Example.com"));
        assert_eq!(h.alpn, vec!["h2".to_string(), "http/1.1".to_string()]);
        assert_eq!(h.extensions, vec![GREASE_B, 0, 23, 65281, 10, 16, 43, 51, GREASE_C, 21]);
        assert_eq!(h.supported_versions, vec![GREASE_C, 0x0304, 0x0303]);
    }

    #[test]
    fn parses_chrome_like_hello() {
        let h = parse_client_hello(&Builder::chrome_like().stream()).unwrap();
        check_chrome_like(&h);
        assert!(h.sni_eq_ignore_case("WWW.example.COM"));
        assert!(h.sni_eq_ignore_case("www.example.com."));
        assert!(!h.sni_eq_ignore_case("example.com"));
        assert!(h.sni_matches_domain("example.com"));
        assert!(h.sni_matches_domain("EXAMPLE.com."));
        assert!(h.sni_matches_domain("www.example.com"));
        assert!(!h.sni_matches_domain("ample.com"));
        assert!(!h.sni_matches_domain(""));
        assert_eq!(h.sni_lowercase().as_deref(), Some("www.example.com"));
        assert!(h.has_extension(ext::ALPN));
        assert!(!h.has_extension(35));
        assert!(h.cipher_suites.iter().any(|c| is_grease(*c)));
    }

    #[test]
    fn split_across_two_records_at_every_offset() {
        let hs = Builder::chrome_like().handshake();
        for cut in 1..hs.len() {
            let s = records(&hs, &[cut]);
            let h = parse_client_hello(&s).unwrap_or_else(|e| panic!("cut {cut}: {e:?}"));
            check_chrome_like(&h);
        }
    }

    #[test]
    fn split_across_many_records() {
        let hs = Builder::chrome_like().handshake();
        check_chrome_like(&parse_client_hello(&records(&hs, &[2, 3, 50, 51, 100])).unwrap());
        let every: Vec<usize> = (1..hs.len()).collect();
        let s = records(&hs, &every);
        assert_eq!(s.len(), hs.len() * 6);
        check_chrome_like(&parse_client_hello(&s).unwrap());
    }

    #[test]
    fn every_truncation_prefix_is_incomplete() {
        let hs = Builder::chrome_like().handshake();
        for s in [records(&hs, &[]), records(&hs, &[1]), records(&hs, &[3, 77]), records(&hs, &[hs.len() - 1])] {
            for n in 0..s.len() {
                assert_eq!(parse_client_hello(&s[..n]), Err(TlsError::Incomplete), "prefix {n}");
            }
            check_chrome_like(&parse_client_hello(&s).unwrap());
        }
    }

    /// Feeds `s` to a reader in segments cut at `cuts`.
    fn feed_cut(s: &[u8], cuts: &[usize], cap: usize) -> Option<Result<ClientHello, TlsError>> {
        let mut r = HelloReader::new(cap);
        let mut at = 0;
        for &c in cuts.iter().chain(std::iter::once(&s.len())) {
            if let Some(res) = r.feed(&s[at..c]) {
                return Some(res);
            }
            at = c;
        }
        None
    }

    #[test]
    fn segments_cut_anywhere_give_what_one_segment_gives() {
        let hs = Builder::chrome_like().handshake();
        for s in [records(&hs, &[]), records(&hs, &[1, 7, 90])] {
            for cut in 0..s.len() {
                check_chrome_like(&feed_cut(&s, &[cut], MAX_HANDSHAKE_LEN).unwrap().unwrap());
            }
            let every: Vec<usize> = (1..s.len()).collect();
            check_chrome_like(&feed_cut(&s, &every, MAX_HANDSHAKE_LEN).unwrap().unwrap());
            assert_eq!(feed_cut(&s[..s.len() - 1], &[3], MAX_HANDSHAKE_LEN), None);
        }
    }

    #[test]
    fn hellos_over_many_records_up_to_the_protocol_limit_and_the_cap() {
        // A 30 KB hello (padding extension, 21) over two full records and a third.
        let mut b = Builder::chrome_like();
        b = b.with_ext(0x4469, vec![0; 30_000]);
        let hs = b.handshake();
        let s = records(&hs, &[16384, 20000]);
        assert!(s.len() > 30_000);
        let h = parse_client_hello(&s).unwrap();
        assert_eq!(h.sni.as_deref(), Some("www.Example.com"));
        let every: Vec<usize> = (1..s.len()).step_by(7).collect();
        assert_eq!(feed_cut(&s, &every, MAX_HANDSHAKE_LEN).unwrap().unwrap(), h);
        // The same hello against a 16 KiB cap: TooLong as soon as its header is in.
        let r = feed_cut(&s[..9], &[], 16384).unwrap();
        assert!(matches!(r, Err(TlsError::TooLong { cap: 16384, .. })), "{r:?}");
        // The reader holds the hello's bytes, not the record headers around them.
        let mut r = HelloReader::new(MAX_HANDSHAKE_LEN);
        assert!(r.feed(&s[..s.len() - 1]).is_none());
        assert!(r.held() < s.len());
    }

    #[test]
    fn trailing_stream_bytes_are_ignored() {
        let mut s = Builder::chrome_like().stream();
        s.extend_from_slice(&[23, 3, 3, 0, 5, 1, 2, 3, 4, 5]);
        check_chrome_like(&parse_client_hello(&s).unwrap());
        // Record announcing more than the ClientHello: Ok as soon as it is there.
        let mut hs = Builder::chrome_like().handshake();
        hs.extend_from_slice(&[11, 0, 0, 100]); // start of a next handshake message
        let s = records(&hs, &[]);
        let cut = s.len() - 4;
        check_chrome_like(&parse_client_hello(&s[..cut]).unwrap());
        check_chrome_like(&parse_client_hello(&s).unwrap());
    }

    #[test]
    fn not_tls() {
        assert_eq!(parse_client_hello(b"GET / HTTP/1.1\r\n"), Err(TlsError::NotTls));
        assert_eq!(parse_client_hello(b"G"), Err(TlsError::NotTls));
        assert_eq!(parse_client_hello(b"SSH-2.0-OpenSSH_9.6\r\n"), Err(TlsError::NotTls));
        // SSLv2-compatible hello.
        assert_eq!(parse_client_hello(&[0x80, 0x2e, 0x01, 0x03, 0x01]), Err(TlsError::NotTls));
        // Application data / alert records first.
        assert_eq!(parse_client_hello(&[23, 3, 3, 0, 1, 0]), Err(TlsError::NotTls));
        assert_eq!(parse_client_hello(&[21, 3, 3, 0, 2, 2, 40]), Err(TlsError::NotTls));
        assert_eq!(parse_client_hello(&[22, 2]), Err(TlsError::NotTls));
        assert_eq!(parse_client_hello(&[22, 3, 5]), Err(TlsError::NotTls));
        assert_eq!(parse_client_hello(&[]), Err(TlsError::Incomplete));
        assert_eq!(parse_client_hello(&[22]), Err(TlsError::Incomplete));
        assert_eq!(parse_client_hello(&[22, 3]), Err(TlsError::Incomplete));
        assert_eq!(parse_client_hello(&[22, 3, 1, 0]), Err(TlsError::Incomplete));
    }

    #[test]
    fn malformed_record_layer() {
        let hs = Builder::chrome_like().handshake();
        // Empty record.
        malformed(parse_client_hello(&[22, 3, 1, 0, 0]));
        // Record longer than 2^14.
        malformed(parse_client_hello(&[22, 3, 1, 0x40, 0x01]));
        // Second record not a handshake record / bad version.
        let mut s = records(&hs, &[10]);
        let second = RECORD_HEADER_LEN + 10;
        s[second] = 23;
        malformed(parse_client_hello(&s));
        let mut s = records(&hs, &[10]);
        s[second + 1] = 2;
        malformed(parse_client_hello(&s));
        // Not a ClientHello (ServerHello), detected from its first byte.
        let mut s = records(&hs, &[]);
        s[RECORD_HEADER_LEN] = 2;
        malformed(parse_client_hello(&s));
        malformed(parse_client_hello(&s[..RECORD_HEADER_LEN + 1]));
        // Handshake length above the protocol's limit, detected from the header alone.
        let s = [22, 3, 1, 0, 4, 1, 0x02, 0x01, 0x45];
        assert_eq!(parse_client_hello(&s), Err(TlsError::Malformed("ClientHello longer than the protocol allows")));
        let s = [22, 3, 1, 0, 4, 1, 0x02, 0x01, 0x44];
        assert_eq!(parse_client_hello(&s), Err(TlsError::Incomplete));
        // Over a reader's cap: TooLong, from the header alone.
        let s = [22, 3, 1, 0, 4, 1, 0x00, 0x40, 0x01];
        assert_eq!(HelloReader::new(16384).feed(&s), Some(Err(TlsError::TooLong { len: 16385, cap: 16384 })));
    }

    #[test]
    fn malformed_inner_lengths() {
        let body = Builder::chrome_like().body();
        // Body cut short (handshake length consistent, inner vectors not).
        for n in [0, 1, 20, 34, 35, 40, 67, 70, 80, body.len() - 1] {
            malformed(parse_client_hello(&stream_of_body(&body[..n])));
        }
        // Trailing byte after the extensions block.
        let mut b = body.clone();
        b.push(0);
        malformed(parse_client_hello(&stream_of_body(&b)));
        // Session id length 33.
        let mut b = Builder::chrome_like();
        b.session_id = vec![1; 33];
        malformed(parse_client_hello(&b.stream()));
        // Odd and empty cipher suites, empty compression methods.
        let mut bad = body.clone();
        let cs_len = 2 + 32 + 1 + 32;
        bad[cs_len + 1] += 1;
        malformed(parse_client_hello(&stream_of_body(&bad)));
        let mut b = Builder::chrome_like();
        b.cipher_suites.clear();
        malformed(parse_client_hello(&b.stream()));
        let mut b = Builder::chrome_like();
        b.compression.clear();
        malformed(parse_client_hello(&b.stream()));
        // Extensions block length one too large / too small.
        let ext_len_at = cs_len + 2 + 16 + 2;
        for delta in [1i32, -1] {
            let mut bad = body.clone();
            let v = u16::from_be_bytes([bad[ext_len_at], bad[ext_len_at + 1]]) as i32 + delta;
            bad[ext_len_at..ext_len_at + 2].copy_from_slice(&(v as u16).to_be_bytes());
            malformed(parse_client_hello(&stream_of_body(&bad)));
        }
        // Extension length running past the block.
        let b = Builder::chrome_like().with_ext(99, vec![]);
        let mut bad = b.body();
        let n = bad.len();
        bad[n - 1] = 1;
        malformed(parse_client_hello(&stream_of_body(&bad)));
    }

    #[test]
    fn malformed_extensions() {
        let base = || Builder::chrome_like().without_ext(ext::SERVER_NAME);
        let cases: Vec<(u16, Vec<u8>)> = vec![
            // SNI list length past the extension.
            (ext::SERVER_NAME, vec![0, 9, 0, 0, 3, b'a', b'.', b'b']),
            // SNI list length short of the extension.
            (ext::SERVER_NAME, vec![0, 5, 0, 0, 3, b'a', b'.', b'b']),
            // Host name length past the list.
            (ext::SERVER_NAME, vec![0, 6, 0, 0, 4, b'a', b'.', b'b']),
            // Empty list, empty extension, empty host name.
            (ext::SERVER_NAME, vec![0, 0]),
            (ext::SERVER_NAME, vec![]),
            (ext::SERVER_NAME, sni_ext(b"")),
            // Bad host name bytes.
            (ext::SERVER_NAME, sni_ext(b"ex ample.com")),
            (ext::SERVER_NAME, sni_ext(b"example.com\0")),
            (ext::SERVER_NAME, sni_ext(b"exa\xffmple.com")),
            (ext::SERVER_NAME, sni_ext(b"example.com/evil")),
            (ext::SERVER_NAME, sni_ext(&[b'a'; 256])),
            // Two host names.
            (ext::SERVER_NAME, vec16(&[0, 0, 1, b'a', 0, 0, 1, b'b'])),
            // ALPN: empty protocol, protocol length past the list, empty list.
            (ext::ALPN, vec16(&[0])),
            (ext::ALPN, vec16(&[3, b'h', b'2'])),
            (ext::ALPN, vec16(&[])),
            // supported_versions: odd, empty, past the extension, trailing.
            (ext::SUPPORTED_VERSIONS, vec![3, 3, 4, 3]),
            (ext::SUPPORTED_VERSIONS, vec![0]),
            (ext::SUPPORTED_VERSIONS, vec![4, 3, 4]),
            (ext::SUPPORTED_VERSIONS, vec![2, 3, 4, 0]),
        ];
        for (ty, data) in cases {
            let b = base().without_ext(ty).with_ext(ty, data.clone());
            assert!(matches!(parse_client_hello(&b.stream()), Err(TlsError::Malformed(_))), "ext {ty} {data:?}");
        }
        // Duplicate extension.
        let b = Builder::chrome_like().with_ext(ext::ALPN, alpn_ext(&["h2"]));
        assert_eq!(parse_client_hello(&b.stream()), Err(TlsError::Malformed("duplicate extension")));
    }

    #[test]
    fn host_name_charset() {
        for ok in [&b"a"[..], b"_dmarc.Example-1.COM", b"xn--bcher-kva.example.", b"10.0.0.1"] {
            let b = Builder::chrome_like().without_ext(0).with_ext(0, sni_ext(ok));
            let h = parse_client_hello(&b.stream()).unwrap();
            assert_eq!(h.sni.as_deref().map(str::as_bytes), Some(ok));
        }
        let b = Builder::chrome_like().without_ext(0).with_ext(0, sni_ext(&[b'a'; 255]));
        assert_eq!(parse_client_hello(&b.stream()).unwrap().sni.unwrap().len(), 255);
    }

    #[test]
    fn unknown_name_type_is_skipped() {
        let list = vec16(&[7, 0, 2, 0xff, 0xfe, 0, 0, 3, b'a', b'.', b'b']);
        let b = Builder::chrome_like().without_ext(0).with_ext(0, list);
        assert_eq!(parse_client_hello(&b.stream()).unwrap().sni.as_deref(), Some("a.b"));
        let list = vec16(&[7, 0, 1, b'x']);
        let b = Builder::chrome_like().without_ext(0).with_ext(0, list);
        assert_eq!(parse_client_hello(&b.stream()).unwrap().sni, None);
    }

    #[test]
    fn no_sni() {
        let h = parse_client_hello(&Builder::chrome_like().without_ext(0).stream()).unwrap();
        assert_eq!(h.sni, None);
        assert!(!h.sni_eq_ignore_case("www.example.com"));
        assert!(!h.sni_matches_domain("com"));
        assert!(!h.has_extension(0));
        assert_eq!(h.alpn.len(), 2);
    }

    #[test]
    fn versions() {
        // No supported_versions: version is legacy_version.
        let h = parse_client_hello(&Builder::chrome_like().without_ext(43).stream()).unwrap();
        assert_eq!(h.version, 0x0303);
        assert!(h.supported_versions.is_empty());
        // GREASE-only supported_versions: legacy_version too.
        let b = Builder::chrome_like().without_ext(43).with_ext(43, sv_ext(&[GREASE_A]));
        let h = parse_client_hello(&b.stream()).unwrap();
        assert_eq!((h.version, h.supported_versions.clone()), (0x0303, vec![GREASE_A]));
        // Highest, not first.
        let b = Builder::chrome_like().without_ext(43).with_ext(43, sv_ext(&[0x0302, 0x0304, 0x0303]));
        assert_eq!(parse_client_hello(&b.stream()).unwrap().version, 0x0304);
        // Old client without any extensions block.
        let mut b = Builder::chrome_like();
        b.extensions = None;
        b.legacy_version = 0x0301;
        b.session_id.clear();
        let h = parse_client_hello(&b.stream()).unwrap();
        assert_eq!((h.version, h.sni.clone(), h.extensions.len()), (0x0301, None, 0));
        assert!(h.session_id.is_empty());
        // Empty extensions block.
        let mut b = Builder::chrome_like();
        b.extensions = Some(vec![]);
        assert!(parse_client_hello(&b.stream()).unwrap().extensions.is_empty());
    }

    #[test]
    fn version_names_and_grease() {
        assert_eq!(version_name(0x0300), "SSL 3.0");
        assert_eq!(version_name(0x0301), "TLS 1.0");
        assert_eq!(version_name(0x0302), "TLS 1.1");
        assert_eq!(version_name(0x0303), "TLS 1.2");
        assert_eq!(version_name(0x0304), "TLS 1.3");
        assert_eq!(version_name(0x7f1c), "TLS 1.3 draft");
        assert_eq!(version_name(0x2a2a), "GREASE");
        assert_eq!(version_name(0x0305), "unknown");
        let grease: Vec<u16> = (0..=u16::MAX).filter(|v| is_grease(*v)).collect();
        assert_eq!(grease.len(), 16);
        assert!(grease.iter().all(|v| v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff));
        assert!(is_grease(0x0a0a) && is_grease(0xfafa));
        assert!(!is_grease(0x0a1a) && !is_grease(0x0303) && !is_grease(0x1a0a));
    }

    #[test]
    fn error_display() {
        assert_eq!(TlsError::NotTls.to_string(), "tls: not a TLS handshake");
        assert!(TlsError::Malformed("x").to_string().ends_with(": x"));
    }

    /// ClientHello sent by `openssl s_client -connect 127.0.0.1:PORT
    /// -servername example.test -alpn h2,http/1.1` (OpenSSL 3.0.19).
    const OPENSSL_HELLO: &str = concat!(
        "160301014b010001470303c6b073f9f6da49b246c4ed1b8d5f14dbc70137",
        "038dcb3fcb720925c1d8a8bc9c208c7c9f194b526c1a43d60e86fc4cae07",
        "61fb7a53644b53e39c1492fde86111a1003e130213031301c02cc030009f",
        "cca9cca8ccaac02bc02f009ec024c028006bc023c0270067c00ac0140039",
        "c009c0130033009d009c003d003c0035002f00ff010000c000000011000f",
        "00000c6578616d706c652e74657374000b000403000102000a0016001400",
        "1d0017001e0019001801000101010201030104002300000010000e000c02",
        "683208687474702f312e310016000000170000000d002a00280403050306",
        "03080708080809080a080b08040805080604010501060103030301030204",
        "0205020602002b0009080304030303020301002d00020101003300260024",
        "001d0020796da9810df29e4f4675df5f36f77518d124b30d669abbf3ea08",
        "635cfdfb8614",
    );

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn openssl_client_hello() {
        let s = unhex(OPENSSL_HELLO);
        assert_eq!(s.len(), 336);
        let h = parse_client_hello(&s).unwrap();
        assert_eq!((h.record_version, h.legacy_version, h.version), (0x0301, 0x0303, 0x0304));
        assert_eq!(h.sni.as_deref(), Some("example.test"));
        assert_eq!(h.alpn, vec!["h2", "http/1.1"]);
        assert_eq!(h.supported_versions, vec![0x0304, 0x0303, 0x0302, 0x0301]);
        assert_eq!(h.session_id.len(), 32);
        assert_eq!(h.cipher_suites.len(), 31);
        assert_eq!(&h.cipher_suites[..3], &[0x1302, 0x1303, 0x1301]);
        assert_eq!(*h.cipher_suites.last().unwrap(), 0x00ff);
        assert_eq!(h.compression_methods, vec![0]);
        assert_eq!(h.extensions, vec![0, 11, 10, 35, 16, 22, 23, 13, 43, 45, 51]);
        for n in 0..s.len() {
            assert_eq!(parse_client_hello(&s[..n]), Err(TlsError::Incomplete));
        }
        // Re-split into two records.
        let hs = &s[RECORD_HEADER_LEN..];
        assert_eq!(parse_client_hello(&records(hs, &[100])).unwrap().sni, h.sni);
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            if n == 0 {
                0
            } else {
                (self.next() % n as u64) as usize
            }
        }
    }

    #[test]
    fn fuzz_mutations_never_panic() {
        let hs = Builder::chrome_like().handshake();
        let seeds = [
            Builder::chrome_like().stream(),
            records(&hs, &[40]),
            records(&hs, &[1, 2, 3, 100, 150]),
            unhex(OPENSSL_HELLO),
        ];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let (mut ok, mut inc, mut not, mut bad) = (0, 0, 0, 0);
        for i in 0..50_000 {
            let mut s = seeds[i % seeds.len()].clone();
            for _ in 0..1 + rng.below(4) {
                match rng.below(6) {
                    0 => {
                        let p = rng.below(s.len());
                        if let Some(b) = s.get_mut(p) {
                            *b ^= 1 << rng.below(8);
                        }
                    }
                    1 => {
                        let p = rng.below(s.len());
                        if let Some(b) = s.get_mut(p) {
                            *b = [0, 1, 0xff, 0x7f, 0x80, 0x10, 0x2b][rng.below(7)];
                        }
                    }
                    2 => {
                        let n = rng.below(s.len() + 1);
                        s.truncate(n);
                    }
                    3 => {
                        let p = rng.below(s.len() + 1);
                        s.insert(p, rng.next() as u8);
                    }
                    4 => {
                        if !s.is_empty() {
                            let p = rng.below(s.len());
                            s.remove(p);
                        }
                    }
                    _ => {
                        // Random 16-bit length field somewhere.
                        let p = rng.below(s.len().saturating_sub(1));
                        if p + 2 <= s.len() {
                            s[p..p + 2].copy_from_slice(&(rng.next() as u16).to_be_bytes());
                        }
                    }
                }
            }
            match parse_client_hello(&s) {
                Ok(h) => {
                    ok += 1;
                    if let Some(n) = &h.sni {
                        assert!(!n.is_empty() && n.len() <= MAX_HOST_NAME_LEN);
                        assert!(n.bytes().all(|c| c.is_ascii_alphanumeric() || b"-._".contains(&c)));
                    }
                }
                Err(TlsError::Incomplete) => inc += 1,
                Err(TlsError::NotTls) => not += 1,
                Err(TlsError::Malformed(_)) => bad += 1,
                Err(TlsError::TooLong { .. }) => unreachable!("parse_client_hello reads up to the protocol's limit"),
            }
        }
        // Mutations must exercise every outcome.
        assert!(ok > 0 && inc > 0 && not > 0 && bad > 0, "{ok} {inc} {not} {bad}");
    }
}
