//! DNS message parser (RFC 1035 wire format) for the `dns` dissector.
//!
//! Covers what Haka's `dns` dissector exposed (haka-api.md §3.2): the header
//! (`id, qr, opcode, aa, tc, rd, ra, rcode, qdcount, ancount, nscount,
//! arcount`), the questions and the answer/authority/additional records
//! (`name, type, class, ttl, length` plus typed data).
//!
//! Robustness rules (every input is attacker controlled; no input panics):
//! - Compression pointers must point strictly backwards, before the start of
//!   the label run that contains them (RFC 1035 §4.1.4: "a prior occurrence").
//!   A self, forward or mutual pointer is reported as [`DnsError::PointerLoop`],
//!   a target past the end of the message as [`DnsError::PointerOutOfBounds`].
//!   At most [`MAX_POINTER_JUMPS`] jumps per name.
//! - Names are at most [`MAX_NAME_LEN`] octets in uncompressed wire form
//!   (labels plus length octets plus the root octet), labels at most 63 octets;
//!   the 0x40/0x80 label types are rejected ([`DnsError::BadLabel`]).
//! - At most [`MAX_RECORDS`] records in all four sections together
//!   ([`DnsError::TooManyRecords`], checked on the header counts before parsing).
//! - Labels are kept byte for byte as received (case preserved); compare with
//!   [`Name::eq_ignore_case`] / [`Name::eq_str_ignore_case`].
//! - Record data whose length does not fit its type (an A record of 5 bytes, a
//!   name running past RDLENGTH, trailing bytes, ...) is kept as
//!   [`RData::Raw`] rather than failing the message; compression errors inside
//!   record data do fail the message.
//! - Bytes after the last record are ignored (see [`Message::trailing`]).
#![deny(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Maximum number of compression pointers followed while reading one name.
pub const MAX_POINTER_JUMPS: usize = 64;
/// Maximum uncompressed wire length of a name (RFC 1035 §2.3.4).
pub const MAX_NAME_LEN: usize = 255;
/// Maximum label length.
pub const MAX_LABEL_LEN: usize = 63;
/// Maximum number of records (questions included) in one message.
pub const MAX_RECORDS: usize = 256;
/// DNS header length.
pub const HEADER_LEN: usize = 12;

/// Record types with typed decoding.
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const MD: u16 = 3;
    pub const MF: u16 = 4;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const MB: u16 = 7;
    pub const MG: u16 = 8;
    pub const MR: u16 = 9;
    pub const NULL: u16 = 10;
    pub const WKS: u16 = 11;
    pub const PTR: u16 = 12;
    pub const HINFO: u16 = 13;
    pub const MINFO: u16 = 14;
    pub const MX: u16 = 15;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const OPT: u16 = 41;
}

/// Class IN.
pub const CLASS_IN: u16 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DnsError {
    /// The message ends before a header field, name, or record that it announces.
    Truncated,
    /// A label length octet uses the reserved 0x40 or 0x80 types (i.e. > 63).
    BadLabel,
    /// A compression pointer that does not point strictly backwards (self,
    /// forward, mutual loop) or too many jumps.
    PointerLoop,
    /// A compression pointer whose target is past the end of the message.
    PointerOutOfBounds,
    /// A name longer than [`MAX_NAME_LEN`] octets once decompressed.
    NameTooLong,
    /// The header counts announce more than [`MAX_RECORDS`] records.
    TooManyRecords,
    /// More questions than `[dns] max_questions` (checked by the dissector).
    TooManyQuestions,
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DnsError::Truncated => "dns: truncated message",
            DnsError::BadLabel => "dns: invalid label type",
            DnsError::PointerLoop => "dns: compression pointer loop",
            DnsError::PointerOutOfBounds => "dns: compression pointer out of bounds",
            DnsError::NameTooLong => "dns: name too long",
            DnsError::TooManyRecords => "dns: too many records",
            DnsError::TooManyQuestions => "dns: too many questions",
        })
    }
}

impl std::error::Error for DnsError {}

/// A domain name, decompressed, kept in uncompressed wire form
/// (`<len><label>...<0>`), labels byte for byte as received.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Name {
    wire: Vec<u8>,
}

impl Name {
    /// The root name.
    pub fn root() -> Name {
        Name { wire: vec![0] }
    }

    /// Builds a name from dotted text (`"www.example.com"`, trailing dot
    /// optional, `""` or `"."` is the root). No escapes are interpreted.
    pub fn from_dotted(s: &str) -> Result<Name, DnsError> {
        let mut wire = Vec::with_capacity(s.len() + 2);
        let s = s.strip_suffix('.').unwrap_or(s);
        if !s.is_empty() {
            for label in s.split('.') {
                if label.is_empty() || label.len() > MAX_LABEL_LEN {
                    return Err(DnsError::BadLabel);
                }
                wire.push(label.len() as u8);
                wire.extend_from_slice(label.as_bytes());
            }
        }
        wire.push(0);
        if wire.len() > MAX_NAME_LEN {
            return Err(DnsError::NameTooLong);
        }
        Ok(Name { wire })
    }

    /// Uncompressed wire form, ending with the root octet.
    pub fn as_wire(&self) -> &[u8] {
        &self.wire
    }

    pub fn is_root(&self) -> bool {
        self.wire.len() <= 1
    }

    /// The labels, in order, without the root.
    pub fn labels(&self) -> Labels<'_> {
        Labels { rest: &self.wire }
    }

    /// Dotted text without a trailing dot (the root is `""`), as Haka's `dn`
    /// converter showed names. Non-printable bytes, `.` and `\` inside labels
    /// are escaped as in RFC 4343 presentation format (`\.`, `\\`, `\DDD`).
    pub fn to_dotted(&self) -> String {
        let mut s = String::with_capacity(self.wire.len());
        for (i, label) in self.labels().enumerate() {
            if i > 0 {
                s.push('.');
            }
            for &b in label {
                match b {
                    b'.' | b'\\' => {
                        s.push('\\');
                        s.push(b as char);
                    }
                    0x21..=0x7e => s.push(b as char),
                    _ => {
                        s.push('\\');
                        s.push_str(&format!("{b:03}"));
                    }
                }
            }
        }
        s
    }

    /// ASCII case-insensitive comparison (RFC 4343).
    pub fn eq_ignore_case(&self, other: &Name) -> bool {
        // Length octets are <= 63, so they are never touched by ASCII case folding.
        self.wire.eq_ignore_ascii_case(&other.wire)
    }

    /// ASCII case-insensitive comparison with dotted text (trailing dot optional).
    pub fn eq_str_ignore_case(&self, dotted: &str) -> bool {
        match Name::from_dotted(dotted) {
            Ok(n) => self.eq_ignore_case(&n),
            Err(_) => false,
        }
    }

    /// The name with ASCII letters lowercased (for use as a map key).
    pub fn to_lowercase(&self) -> Name {
        Name { wire: self.wire.to_ascii_lowercase() }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_dotted())
    }
}

/// Iterator over a [`Name`]'s labels.
pub struct Labels<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Labels<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let (&len, tail) = self.rest.split_first()?;
        if len == 0 {
            return None;
        }
        let label = tail.get(..len as usize)?;
        self.rest = tail.get(len as usize..)?;
        Some(label)
    }
}

/// The fixed 12-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub id: u16,
    /// false: query, true: response.
    pub qr: bool,
    pub opcode: u8,
    pub aa: bool,
    pub tc: bool,
    pub rd: bool,
    pub ra: bool,
    /// The three bits between RA and RCODE (Z, AD, CD), as a 3-bit value.
    pub z: u8,
    pub rcode: u8,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

impl Header {
    fn parse(msg: &[u8]) -> Result<Header, DnsError> {
        let h = msg.get(..HEADER_LEN).ok_or(DnsError::Truncated)?;
        let u16at = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        Ok(Header {
            id: u16at(0),
            qr: h[2] & 0x80 != 0,
            opcode: (h[2] >> 3) & 0x0f,
            aa: h[2] & 0x04 != 0,
            tc: h[2] & 0x02 != 0,
            rd: h[2] & 0x01 != 0,
            ra: h[3] & 0x80 != 0,
            z: (h[3] >> 4) & 0x07,
            rcode: h[3] & 0x0f,
            qdcount: u16at(4),
            ancount: u16at(6),
            nscount: u16at(8),
            arcount: u16at(10),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub name: Name,
    pub qtype: u16,
    pub qclass: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Soa {
    pub mname: Name,
    pub rname: Name,
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub minimum: u32,
}

/// Typed record data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// NS, CNAME, PTR, MD, MF, MB, MG, MR: a single domain name.
    Name(Name),
    Soa(Soa),
    Mx {
        preference: u16,
        exchange: Name,
    },
    /// MINFO: responsible and error mailboxes.
    Minfo {
        rmailbx: Name,
        emailbx: Name,
    },
    /// TXT: the character-strings, in order.
    Txt(Vec<Vec<u8>>),
    /// HINFO: CPU and OS character-strings.
    Hinfo {
        cpu: Vec<u8>,
        os: Vec<u8>,
    },
    /// WKS: address, IP protocol and port bitmap.
    Wks {
        address: Ipv4Addr,
        protocol: u8,
        bitmap: Vec<u8>,
    },
    /// Any other type (or typed data that does not fit its RDLENGTH): the raw RDATA.
    Raw(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: Name,
    pub rtype: u16,
    pub class: u16,
    pub ttl: u32,
    /// RDLENGTH as received.
    pub length: u16,
    pub data: RData,
}

/// A parsed DNS message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    /// All questions (`qdcount` of them). Haka exposed a single `question`:
    /// use [`Message::question`] for that view.
    pub questions: Vec<Question>,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
    /// Number of bytes after the last record (ignored).
    pub trailing: usize,
}

impl Message {
    /// The first question, as Haka's single `question` field.
    pub fn question(&self) -> Option<&Question> {
        self.questions.first()
    }

    pub fn is_response(&self) -> bool {
        self.header.qr
    }

    /// Every record of the answer, authority and additional sections, in order.
    pub fn records(&self) -> impl Iterator<Item = (Section, &Record)> {
        fn tag(sec: Section, v: &[Record]) -> impl Iterator<Item = (Section, &Record)> {
            v.iter().map(move |r| (sec, r))
        }
        tag(Section::Answer, &self.answers)
            .chain(tag(Section::Authority, &self.authority))
            .chain(tag(Section::Additional, &self.additional))
    }
}

/// The record sections (Haka's `answer`, `authority`, `additional`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Section {
    Answer,
    Authority,
    Additional,
}

impl Section {
    pub fn haka_name(self) -> &'static str {
        match self {
            Section::Answer => "answer",
            Section::Authority => "authority",
            Section::Additional => "additional",
        }
    }
}

/// Mnemonic of a record type (`"A"`, `"MX"`, ...), if known.
pub fn type_name(t: u16) -> Option<&'static str> {
    Some(match t {
        rtype::A => "A",
        rtype::NS => "NS",
        rtype::MD => "MD",
        rtype::MF => "MF",
        rtype::CNAME => "CNAME",
        rtype::SOA => "SOA",
        rtype::MB => "MB",
        rtype::MG => "MG",
        rtype::MR => "MR",
        rtype::NULL => "NULL",
        rtype::WKS => "WKS",
        rtype::PTR => "PTR",
        rtype::HINFO => "HINFO",
        rtype::MINFO => "MINFO",
        rtype::MX => "MX",
        rtype::TXT => "TXT",
        rtype::AAAA => "AAAA",
        rtype::OPT => "OPT",
        33 => "SRV",
        43 => "DS",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        65 => "HTTPS",
        252 => "AXFR",
        255 => "ANY",
        257 => "CAA",
        _ => return None,
    })
}

/// Mnemonic of a class (`"IN"`, ...), if known.
pub fn class_name(c: u16) -> Option<&'static str> {
    Some(match c {
        1 => "IN",
        2 => "CS",
        3 => "CH",
        4 => "HS",
        254 => "NONE",
        255 => "ANY",
        _ => return None,
    })
}

/// Reads a possibly compressed name at `start`. Returns the name and the
/// offset just after it in the original (not followed) byte stream.
fn read_name(msg: &[u8], start: usize) -> Result<(Name, usize), DnsError> {
    let mut wire: Vec<u8> = Vec::with_capacity(32);
    let mut pos = start;
    // Pointer targets must be strictly below the start of the current label run.
    let mut limit = start;
    let mut end: Option<usize> = None;
    let mut jumps = 0usize;
    loop {
        let len = *msg.get(pos).ok_or(DnsError::Truncated)?;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    wire.push(0);
                    let end = end.unwrap_or(pos + 1);
                    return Ok((Name { wire }, end));
                }
                let l = len as usize;
                if wire.len() + 1 + l + 1 > MAX_NAME_LEN {
                    return Err(DnsError::NameTooLong);
                }
                let label = msg.get(pos + 1..pos + 1 + l).ok_or(DnsError::Truncated)?;
                wire.push(len);
                wire.extend_from_slice(label);
                pos += 1 + l;
            }
            0xc0 => {
                let lo = *msg.get(pos + 1).ok_or(DnsError::Truncated)?;
                let target = (((len & 0x3f) as usize) << 8) | lo as usize;
                if end.is_none() {
                    end = Some(pos + 2);
                }
                if target >= msg.len() {
                    return Err(DnsError::PointerOutOfBounds);
                }
                jumps += 1;
                if target >= limit || jumps > MAX_POINTER_JUMPS {
                    return Err(DnsError::PointerLoop);
                }
                limit = target;
                pos = target;
            }
            _ => return Err(DnsError::BadLabel),
        }
    }
}

fn u16_at(msg: &[u8], pos: usize) -> Result<u16, DnsError> {
    let b = msg.get(pos..pos + 2).ok_or(DnsError::Truncated)?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

fn u32_at(msg: &[u8], pos: usize) -> Result<u32, DnsError> {
    let b = msg.get(pos..pos + 4).ok_or(DnsError::Truncated)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Outcome of typed decoding: `Ok(None)` means "does not fit, keep raw".
type Typed = Result<Option<RData>, DnsError>;

/// A name inside RDATA `[start, end)`: compression errors propagate, a name
/// running past `end` yields `None`.
fn rdata_name(msg: &[u8], pos: usize, end: usize) -> Result<Option<(Name, usize)>, DnsError> {
    // Parse against the message cut at the RDATA end, so that a label run
    // past RDLENGTH is not mistaken for a valid name... but pointers may
    // legitimately target anywhere before `pos`, which is inside the cut.
    match read_name(&msg[..end], pos) {
        Ok(r) => Ok(Some(r)),
        Err(DnsError::Truncated) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A sequence of `<len><bytes>` character-strings filling `rd` exactly.
fn character_strings(rd: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut strings = Vec::new();
    let mut rest = rd;
    while let Some((&l, tail)) = rest.split_first() {
        strings.push(tail.get(..l as usize)?.to_vec());
        rest = tail.get(l as usize..)?;
    }
    Some(strings)
}

fn decode_rdata(msg: &[u8], rtype: u16, start: usize, end: usize) -> Typed {
    let rd = &msg[start..end];
    match rtype {
        rtype::A => Ok(<[u8; 4]>::try_from(rd).ok().map(|a| RData::A(Ipv4Addr::from(a)))),
        rtype::AAAA => Ok(<[u8; 16]>::try_from(rd).ok().map(|a| RData::Aaaa(Ipv6Addr::from(a)))),
        rtype::NS | rtype::CNAME | rtype::PTR | rtype::MD | rtype::MF | rtype::MB | rtype::MG | rtype::MR => {
            Ok(match rdata_name(msg, start, end)? {
                Some((n, p)) if p == end => Some(RData::Name(n)),
                _ => None,
            })
        }
        rtype::MX => {
            if rd.len() < 3 {
                return Ok(None);
            }
            let preference = u16::from_be_bytes([rd[0], rd[1]]);
            Ok(match rdata_name(msg, start + 2, end)? {
                Some((exchange, p)) if p == end => Some(RData::Mx { preference, exchange }),
                _ => None,
            })
        }
        rtype::MINFO => {
            let Some((rmailbx, p)) = rdata_name(msg, start, end)? else { return Ok(None) };
            Ok(match rdata_name(msg, p, end)? {
                Some((emailbx, p)) if p == end => Some(RData::Minfo { rmailbx, emailbx }),
                _ => None,
            })
        }
        rtype::SOA => {
            let Some((mname, p)) = rdata_name(msg, start, end)? else { return Ok(None) };
            let Some((rname, p)) = rdata_name(msg, p, end)? else { return Ok(None) };
            if end.checked_sub(p) != Some(20) {
                return Ok(None);
            }
            let v = |i: usize| u32_at(msg, p + 4 * i);
            Ok(Some(RData::Soa(Soa {
                mname,
                rname,
                serial: v(0)?,
                refresh: v(1)?,
                retry: v(2)?,
                expire: v(3)?,
                minimum: v(4)?,
            })))
        }
        rtype::TXT => Ok(character_strings(rd).map(RData::Txt)),
        rtype::HINFO => Ok(match character_strings(rd) {
            Some(mut v) if v.len() == 2 => {
                let os = v.pop().unwrap_or_default();
                let cpu = v.pop().unwrap_or_default();
                Some(RData::Hinfo { cpu, os })
            }
            _ => None,
        }),
        rtype::WKS => Ok(match rd {
            [a, b, c, d, protocol, bitmap @ ..] => Some(RData::Wks {
                address: Ipv4Addr::new(*a, *b, *c, *d),
                protocol: *protocol,
                bitmap: bitmap.to_vec(),
            }),
            _ => None,
        }),
        _ => Ok(None),
    }
}

fn read_question(msg: &[u8], pos: usize) -> Result<(Question, usize), DnsError> {
    let (name, p) = read_name(msg, pos)?;
    let qtype = u16_at(msg, p)?;
    let qclass = u16_at(msg, p + 2)?;
    Ok((Question { name, qtype, qclass }, p + 4))
}

fn read_record(msg: &[u8], pos: usize) -> Result<(Record, usize), DnsError> {
    let (name, p) = read_name(msg, pos)?;
    let rtype = u16_at(msg, p)?;
    let class = u16_at(msg, p + 2)?;
    let ttl = u32_at(msg, p + 4)?;
    let length = u16_at(msg, p + 8)?;
    let start = p + 10;
    let end = start + length as usize;
    if end > msg.len() {
        return Err(DnsError::Truncated);
    }
    let data = match decode_rdata(msg, rtype, start, end)? {
        Some(d) => d,
        None => RData::Raw(msg[start..end].to_vec()),
    };
    Ok((Record { name, rtype, class, ttl, length, data }, end))
}

/// Parses one DNS message (a UDP payload, or a TCP message without its
/// length prefix).
pub fn parse(msg: &[u8]) -> Result<Message, DnsError> {
    let header = Header::parse(msg)?;
    let counts = [header.qdcount, header.ancount, header.nscount, header.arcount];
    if counts.iter().map(|&c| c as usize).sum::<usize>() > MAX_RECORDS {
        return Err(DnsError::TooManyRecords);
    }
    let mut pos = HEADER_LEN;
    let mut questions = Vec::with_capacity(header.qdcount as usize);
    for _ in 0..header.qdcount {
        let (q, p) = read_question(msg, pos)?;
        questions.push(q);
        pos = p;
    }
    let mut sections: [Vec<Record>; 3] = Default::default();
    for (section, &count) in sections.iter_mut().zip(&counts[1..]) {
        section.reserve_exact(count as usize);
        for _ in 0..count {
            let (r, p) = read_record(msg, pos)?;
            section.push(r);
            pos = p;
        }
    }
    let [answers, authority, additional] = sections;
    Ok(Message { header, questions, answers, authority, additional, trailing: msg.len().saturating_sub(pos) })
}

/// Parses DNS-over-TCP framing (RFC 1035 §4.2.2: 2-byte big-endian length,
/// then the message). Returns one result per complete frame, and the number
/// of bytes consumed (complete frames only); a partial frame at the end is
/// left for the caller to retry with more data.
pub fn parse_tcp_stream(buf: &[u8]) -> (Vec<Result<Message, DnsError>>, usize) {
    let mut out = Vec::new();
    let mut off = 0usize;
    while let Some(len) = buf.get(off..off + 2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize) {
        let Some(frame) = buf.get(off + 2..off + 2 + len) else { break };
        out.push(parse(frame));
        off += 2 + len;
    }
    (out, off)
}

/// Key of a pending query: id and first question (name lowercased, type, class).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct QueryKey {
    id: u16,
    question: Option<(Name, u16, u16)>,
}

impl QueryKey {
    fn of(m: &Message) -> QueryKey {
        QueryKey { id: m.header.id, question: m.question().map(|q| (q.name.to_lowercase(), q.qtype, q.qclass)) }
    }

    /// Heap bytes of the key (its name).
    fn name_bytes(&self) -> usize {
        self.question.as_ref().map_or(0, |q| q.0.wire.capacity())
    }
}

/// What is remembered about a query until its response arrives: its key only (the
/// rules keep the query object they saw themselves), so that an entry costs at most one
/// name, whatever the query held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryInfo {
    /// When the query was seen.
    pub time_ms: u64,
}

/// Bounded table of outstanding queries, for query/response matching (one
/// per UDP connection, or global). Keyed by (id, first question's name
/// (case-insensitive), type, class). Entries expire `timeout_ms` after the
/// query; when full, the oldest entry is evicted.
/// `on_response` returning `None` is Haka's "dns: mismatching response" case.
#[derive(Debug)]
pub struct PendingQueries {
    capacity: usize,
    timeout_ms: u64,
    map: HashMap<QueryKey, (QueryInfo, u64)>,
    /// Insertion order: (key, sequence number); stale when the map's sequence differs.
    order: VecDeque<(QueryKey, u64)>,
    seq: u64,
    /// Heap bytes of the names in `map` (the flow memory budget).
    names: usize,
}

impl PendingQueries {
    pub fn new(capacity: usize, timeout_ms: u64) -> PendingQueries {
        let capacity = capacity.max(1);
        PendingQueries {
            capacity,
            timeout_ms,
            // (grown on demand: most flows await one query at a time)
            map: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
            names: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drops entries older than the timeout.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some((key, seq)) = self.order.front() {
            match self.map.get(key) {
                Some((info, s)) if s == seq => {
                    if now_ms.saturating_sub(info.time_ms) < self.timeout_ms {
                        break;
                    }
                    self.names -= key.name_bytes();
                    self.map.remove(key);
                }
                _ => {}
            }
            self.order.pop_front();
        }
    }

    fn evict_oldest(&mut self) {
        while let Some((key, seq)) = self.order.pop_front() {
            if matches!(self.map.get(&key), Some((_, s)) if *s == seq) {
                self.names -= key.name_bytes();
                self.map.remove(&key);
                return;
            }
        }
    }

    /// Records a query. A retransmission (same key) replaces the previous entry.
    pub fn on_query(&mut self, msg: &Message, now_ms: u64) {
        self.expire(now_ms);
        let key = QueryKey::of(msg);
        if !self.map.contains_key(&key) && self.map.len() >= self.capacity {
            self.evict_oldest();
        }
        self.seq += 1;
        self.names += key.name_bytes();
        if let Some((old, _)) = self.map.remove_entry(&key) {
            self.names -= old.name_bytes();
        }
        self.map.insert(key.clone(), (QueryInfo { time_ms: now_ms }, self.seq));
        self.order.push_back((key, self.seq));
        if self.order.len() > 2 * self.capacity + 16 {
            let map = &self.map;
            self.order.retain(|(k, s)| matches!(map.get(k), Some((_, ms)) if ms == s));
        }
    }

    /// Matches a response with its pending query and removes it. `None`: no
    /// pending query with that id and question (or it timed out).
    pub fn on_response(&mut self, msg: &Message, now_ms: u64) -> Option<QueryInfo> {
        self.expire(now_ms);
        let (key, (info, _)) = self.map.remove_entry(&QueryKey::of(msg))?;
        self.names -= key.name_bytes();
        Some(info)
    }

    /// Heap memory held: the table, the order queue and the names.
    pub fn held_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(QueryKey, (QueryInfo, u64))>() + 8;
        self.map.capacity() * entry
            + self.order.capacity() * (std::mem::size_of::<(QueryKey, u64)>())
            + 2 * self.names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcapfile::{Capture, LINKTYPE_ETHERNET};
    use std::path::Path;

    /// UDP payloads of an Ethernet/IPv4 capture, offsets from the headers.
    fn udp_payloads(path: &str) -> Vec<Vec<u8>> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/haka-pcaps").join(path);
        let cap = Capture::read(&p).unwrap();
        assert_eq!(cap.link_type, LINKTYPE_ETHERNET);
        cap.packets
            .iter()
            .map(|f| {
                assert_eq!(&f[12..14], &[0x08, 0x00]);
                let ip = &f[14..];
                assert_eq!(ip[0] >> 4, 4);
                let ihl = (ip[0] & 0x0f) as usize * 4;
                assert_eq!(ip[9], 17);
                let udp = &ip[ihl..];
                let ulen = u16::from_be_bytes([udp[4], udp[5]]) as usize;
                udp[8..ulen].to_vec()
            })
            .collect()
    }

    fn basic() -> Vec<Vec<u8>> {
        udp_payloads("modules/protocol/dns/test/basic.pcap")
    }

    fn name(s: &str) -> Name {
        Name::from_dotted(s).unwrap()
    }

    // --- a small uncompressed encoder for crafted messages ---
    fn header(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(&flags.to_be_bytes());
        for c in counts {
            v.extend_from_slice(&c.to_be_bytes());
        }
        v
    }

    fn push_q(v: &mut Vec<u8>, n: &str, t: u16) {
        v.extend_from_slice(name(n).as_wire());
        v.extend_from_slice(&t.to_be_bytes());
        v.extend_from_slice(&CLASS_IN.to_be_bytes());
    }

    fn push_rr(v: &mut Vec<u8>, n: &str, t: u16, ttl: u32, rdata: &[u8]) {
        v.extend_from_slice(name(n).as_wire());
        v.extend_from_slice(&t.to_be_bytes());
        v.extend_from_slice(&CLASS_IN.to_be_bytes());
        v.extend_from_slice(&ttl.to_be_bytes());
        v.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        v.extend_from_slice(rdata);
    }

    fn query(id: u16, n: &str, t: u16) -> Message {
        let mut v = header(id, 0x0100, [1, 0, 0, 0]);
        push_q(&mut v, n, t);
        parse(&v).unwrap()
    }

    fn response(id: u16, n: &str, t: u16) -> Message {
        let mut v = header(id, 0x8180, [1, 1, 0, 0]);
        push_q(&mut v, n, t);
        push_rr(&mut v, n, rtype::A, 60, &[10, 0, 0, 1]);
        parse(&v).unwrap()
    }

    #[test]
    fn real_query() {
        let p = basic();
        let m = parse(&p[0]).unwrap();
        let h = m.header;
        assert_eq!(h.id, 0x5d80);
        assert!(!h.qr && h.rd && !h.aa && !h.tc && !h.ra);
        assert_eq!((h.opcode, h.rcode, h.z), (0, 0, 0));
        assert_eq!((h.qdcount, h.ancount, h.nscount, h.arcount), (1, 0, 0, 0));
        let q = m.question().unwrap();
        assert_eq!(q.name.to_dotted(), "haka-security.org");
        assert_eq!((q.qtype, q.qclass), (rtype::A, CLASS_IN));
        assert!(m.answers.is_empty() && m.authority.is_empty() && m.additional.is_empty());
        assert_eq!(m.trailing, 0);
    }

    #[test]
    fn real_response_with_compression() {
        let p = basic();
        let m = parse(&p[1]).unwrap();
        let h = m.header;
        assert_eq!(h.id, 0x5d80);
        assert!(h.qr && h.rd && h.ra && !h.aa && !h.tc);
        assert_eq!((h.opcode, h.rcode), (0, 0));
        assert_eq!((h.qdcount, h.ancount, h.nscount, h.arcount), (1, 6, 6, 11));
        assert_eq!(m.question().unwrap().name.to_dotted(), "haka-security.org");
        let ips: Vec<Ipv4Addr> = m
            .answers
            .iter()
            .map(|r| {
                assert_eq!(r.name.to_dotted(), "haka-security.org"); // c00c resolved
                assert_eq!((r.rtype, r.class, r.ttl, r.length), (rtype::A, CLASS_IN, 44, 4));
                match r.data {
                    RData::A(ip) => ip,
                    ref d => panic!("{d:?}"),
                }
            })
            .collect();
        let want: Vec<Ipv4Addr> =
            ["66.155.11.238", "76.74.254.123", "66.155.9.238", "192.0.80.250", "76.74.254.120", "192.0.81.250"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect();
        assert_eq!(ips, want);
        let ns: Vec<String> = m
            .authority
            .iter()
            .map(|r| {
                assert_eq!(r.name.to_dotted(), "org"); // pointer into the question name
                assert_eq!(r.rtype, rtype::NS);
                match &r.data {
                    RData::Name(n) => n.to_dotted(),
                    d => panic!("{d:?}"),
                }
            })
            .collect();
        assert_eq!(
            ns,
            [
                "a0.org.afilias-nst.info",
                "a2.org.afilias-nst.info",
                "b0.org.afilias-nst.org",
                "b2.org.afilias-nst.org",
                "c0.org.afilias-nst.info",
                "d0.org.afilias-nst.org"
            ]
        );
        let a0 = &m.additional[0];
        assert_eq!(a0.name.to_dotted(), "a0.org.afilias-nst.info");
        assert_eq!(a0.data, RData::A("199.19.56.1".parse().unwrap()));
        let aaaa = &m.additional[6];
        assert_eq!(aaaa.name.to_dotted(), "a0.org.afilias-nst.info");
        assert_eq!((aaaa.rtype, aaaa.length), (rtype::AAAA, 16));
        assert_eq!(aaaa.data, RData::Aaaa("2001:500:e::1".parse().unwrap()));
        assert_eq!(m.trailing, 0);
    }

    #[test]
    fn real_soa_response() {
        let p = basic();
        let q = parse(&p[2]).unwrap();
        assert_eq!(q.question().unwrap().qtype, rtype::SOA);
        let m = parse(&p[3]).unwrap();
        assert_eq!(m.header.id, q.header.id);
        let r = &m.answers[0];
        assert_eq!(r.name.to_dotted(), "haka-security.org");
        assert_eq!((r.rtype, r.ttl), (rtype::SOA, 0));
        let RData::Soa(soa) = &r.data else { panic!("{:?}", r.data) };
        assert_eq!(soa.mname.to_dotted(), "ns1.wordpress.com");
        assert_eq!(soa.rname.to_dotted(), "hostmaster.wordpress.com");
        assert_eq!(
            (soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum),
            (2005071858, 14400, 7200, 604800, 300)
        );
        assert_eq!(m.authority.len(), 6);
        assert_eq!(m.additional.len(), 11);
    }

    #[test]
    fn real_query_response_matching() {
        let p = basic();
        let mut pending = PendingQueries::new(16, 5_000);
        let msgs: Vec<Message> = p.iter().map(|b| parse(b).unwrap()).collect();
        pending.on_query(&msgs[0], 0);
        pending.on_query(&msgs[2], 1);
        assert_eq!(pending.len(), 2);
        let info = pending.on_response(&msgs[3], 10).unwrap();
        assert_eq!(info.time_ms, 1);
        let info = pending.on_response(&msgs[1], 10).unwrap();
        assert_eq!(info.time_ms, 0);
        assert_eq!(pending.names, 0);
        assert!(pending.is_empty());
        // A duplicate response no longer matches.
        assert!(pending.on_response(&msgs[1], 11).is_none());
    }

    #[test]
    fn truncated_at_every_byte() {
        for pkt in basic() {
            assert!(parse(&pkt).is_ok());
            for n in 0..pkt.len() {
                assert_eq!(parse(&pkt[..n]), Err(DnsError::Truncated), "prefix {n}");
            }
        }
    }

    #[test]
    fn pointer_to_itself_is_loop() {
        let mut v = header(1, 0, [1, 0, 0, 0]);
        v.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(parse(&v), Err(DnsError::PointerLoop));
    }

    #[test]
    fn mutual_pointers_are_loop() {
        // Question name at 12 -> 14, 14 -> 12.
        let mut v = header(1, 0, [1, 0, 0, 0]);
        v.extend_from_slice(&[0xc0, 14, 0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(parse(&v), Err(DnsError::PointerLoop));
        // Backwards pointer into the same name (label then pointer to it).
        let mut v = header(1, 0, [1, 0, 0, 0]);
        v.extend_from_slice(&[1, b'a', 0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(parse(&v), Err(DnsError::PointerLoop));
        // Loop reached through a valid backwards pointer: record name -> 12,
        // and the name at 12 points forward to the record name.
        let mut v = header(1, 0, [1, 1, 0, 0]);
        v.extend_from_slice(&[0xc0, 18, 0, 1, 0, 1]); // question at 12, pointer forward to 18
        v.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]); // record at 18
        assert_eq!(parse(&v), Err(DnsError::PointerLoop));
    }

    #[test]
    fn long_backward_chain_is_capped() {
        // 0 at offset 0, then pointers each to the previous one.
        let mut v = vec![0u8];
        let mut prev = 0usize;
        for _ in 0..100 {
            let here = v.len();
            v.extend_from_slice(&[0xc0 | (prev >> 8) as u8, prev as u8]);
            prev = here;
        }
        assert_eq!(read_name(&v, prev).unwrap_err(), DnsError::PointerLoop);
        // 64 jumps are fine.
        let start = 1 + 2 * (MAX_POINTER_JUMPS - 1);
        let (n, end) = read_name(&v, start).unwrap();
        assert!(n.is_root());
        assert_eq!(end, start + 2);
    }

    #[test]
    fn pointer_out_of_bounds() {
        let mut v = header(1, 0, [1, 0, 0, 0]);
        v.extend_from_slice(&[0xff, 0xff, 0, 1, 0, 1]);
        assert_eq!(parse(&v), Err(DnsError::PointerOutOfBounds));
        let mut v = header(1, 0, [1, 0, 0, 0]);
        v.extend_from_slice(&[3, b'w', b'w', b'w', 0xc0, 200, 0, 1, 0, 1]);
        assert_eq!(parse(&v), Err(DnsError::PointerOutOfBounds));
    }

    #[test]
    fn bad_labels() {
        for b in [0x40u8, 0x7f, 0x80, 0xbf] {
            let mut v = header(1, 0, [1, 0, 0, 0]);
            v.push(b);
            v.extend_from_slice(&[0u8; 70]);
            assert_eq!(parse(&v), Err(DnsError::BadLabel), "{b:#x}");
        }
        // 63 is the maximum label length.
        let mut v = header(1, 0, [1, 0, 0, 0]);
        v.push(63);
        v.extend_from_slice(&[b'x'; 63]);
        v.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(parse(&v).unwrap().questions[0].name.labels().next().unwrap().len(), 63);
        assert_eq!(Name::from_dotted(&"x".repeat(64)), Err(DnsError::BadLabel));
    }

    #[test]
    fn name_length_limit() {
        let label = "x".repeat(63);
        // 3*64 + 62 + 1 = 255: the maximum.
        let ok = format!("{label}.{label}.{label}.{}", "y".repeat(61));
        let n = name(&ok);
        assert_eq!(n.as_wire().len(), 255);
        let mut v = header(1, 0, [1, 0, 0, 0]);
        push_q(&mut v, &ok, 1);
        assert!(parse(&v).unwrap().questions[0].name.eq_ignore_case(&n));
        // One more octet.
        let mut v = header(1, 0, [1, 0, 0, 0]);
        let wire = name(&ok).as_wire().to_vec();
        v.extend_from_slice(&wire[..wire.len() - 1]);
        v.extend_from_slice(&[1, b'z', 0, 0, 1, 0, 1]);
        assert_eq!(parse(&v), Err(DnsError::NameTooLong));
        // Too long only after decompression: a 200-octet question name,
        // and a record name of 100 octets pointing to it.
        let long = format!("{label}.{label}.{label}.{}", "y".repeat(7));
        let mut v = header(1, 0, [1, 1, 0, 0]);
        push_q(&mut v, &long, 1);
        for _ in 0..2 {
            v.push(49);
            v.extend_from_slice(&[b'z'; 49]);
        }
        v.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse(&v), Err(DnsError::NameTooLong));
    }

    #[test]
    fn typed_rdata() {
        let mut v = header(7, 0x8400, [0, 5, 0, 0]);
        push_rr(&mut v, "example.org", rtype::AAAA, 1, &"fe80::1".parse::<Ipv6Addr>().unwrap().octets());
        let mut mx = vec![0, 10];
        mx.extend_from_slice(&[4, b'm', b'a', b'i', b'l', 0xc0, 12]); // mail.example.org
        push_rr(&mut v, "example.org", rtype::MX, 2, &mx);
        push_rr(&mut v, "example.org", rtype::TXT, 3, b"\x05hello\x00\x03a b");
        let mut soa = Vec::new();
        soa.extend_from_slice(name("ns.example.org").as_wire());
        soa.extend_from_slice(&[0xc0, 12]);
        for x in [1u32, 2, 3, 4, 5] {
            soa.extend_from_slice(&x.to_be_bytes());
        }
        push_rr(&mut v, "Example.ORG", rtype::SOA, 4, &soa);
        push_rr(&mut v, "example.org", 99, 5, b"\x01\x02\x03");
        let m = parse(&v).unwrap();
        assert!(m.header.aa && m.header.qr);
        let a = &m.answers;
        assert_eq!(a[0].data, RData::Aaaa("fe80::1".parse().unwrap()));
        assert_eq!(a[1].data, RData::Mx { preference: 10, exchange: name("mail.example.org") });
        assert_eq!(a[2].data, RData::Txt(vec![b"hello".to_vec(), vec![], b"a b".to_vec()]));
        assert_eq!(
            a[3].data,
            RData::Soa(Soa {
                mname: name("ns.example.org"),
                rname: name("example.org"),
                serial: 1,
                refresh: 2,
                retry: 3,
                expire: 4,
                minimum: 5
            })
        );
        assert_eq!(a[3].name.to_dotted(), "Example.ORG"); // case preserved
        assert!(a[3].name.eq_str_ignore_case("example.org."));
        assert!(!a[3].name.eq_str_ignore_case("example.com"));
        assert_eq!(a[4].data, RData::Raw(vec![1, 2, 3]));
        assert_eq!(a[4].rtype, 99);
        assert_eq!((a[0].ttl, a[4].ttl, a[4].length), (1, 5, 3));
    }

    #[test]
    fn ill_fitting_rdata_is_raw() {
        let mut v = header(7, 0x8000, [0, 4, 0, 0]);
        push_rr(&mut v, "a", rtype::A, 1, &[1, 2, 3, 4, 5]);
        push_rr(&mut v, "a", rtype::CNAME, 1, &[1, b'b', 0, 9]); // trailing byte
        push_rr(&mut v, "a", rtype::TXT, 1, &[5, b'x']); // string past rdlength
        push_rr(&mut v, "a", rtype::NS, 1, &[3, b'b']); // name past rdlength
        v.extend_from_slice(&[0xde, 0xad]);
        let m = parse(&v).unwrap();
        for r in &m.answers {
            assert!(matches!(r.data, RData::Raw(_)), "{r:?}");
        }
        assert_eq!(m.trailing, 2);
        // A compression loop inside RDATA fails the message.
        let mut v = header(7, 0x8000, [0, 1, 0, 0]);
        push_rr(&mut v, "a", rtype::CNAME, 1, &[0xc0, 25]);
        assert_eq!(v.len(), 27);
        assert_eq!(parse(&v), Err(DnsError::PointerLoop));
    }

    #[test]
    fn too_many_records() {
        let v = header(1, 0, [100, 100, 50, 7]);
        assert_eq!(parse(&v), Err(DnsError::TooManyRecords));
        let v = header(1, 0, [0, 0, 0, 256]);
        assert_eq!(parse(&v), Err(DnsError::Truncated));
    }

    #[test]
    fn tcp_framing() {
        let p = basic();
        let mut stream = Vec::new();
        for m in [&p[0], &p[1], &p[3]] {
            stream.extend_from_slice(&(m.len() as u16).to_be_bytes());
            stream.extend_from_slice(m);
        }
        let full = stream.len();
        let two = 2 + p[0].len() + 2 + p[1].len();
        // Cut inside the third message, and inside its length prefix.
        for cut in [full - 1, two + 40, two + 1, two] {
            let (msgs, used) = parse_tcp_stream(&stream[..cut]);
            assert_eq!(used, two);
            assert_eq!(msgs.len(), 2);
            assert_eq!(msgs[0].as_ref().unwrap().header.id, 0x5d80);
            assert_eq!(msgs[1].as_ref().unwrap().answers.len(), 6);
        }
        let (msgs, used) = parse_tcp_stream(&stream);
        assert_eq!((msgs.len(), used), (3, full));
        assert!(msgs[2].as_ref().unwrap().answers[0].rtype == rtype::SOA);
        // A bad frame is reported and skipped.
        let (msgs, used) = parse_tcp_stream(&[0, 3, 1, 2, 3, 0]);
        assert_eq!(msgs, vec![Err(DnsError::Truncated)]);
        assert_eq!(used, 5);
        assert_eq!(parse_tcp_stream(&[]), (vec![], 0));
    }

    #[test]
    fn mismatching_responses() {
        let mut pq = PendingQueries::new(4, 1_000);
        pq.on_query(&query(1, "example.org", rtype::A), 0);
        assert!(pq.on_response(&response(2, "example.org", rtype::A), 1).is_none()); // id
        assert!(pq.on_response(&response(1, "example.com", rtype::A), 1).is_none()); // name
        assert!(pq.on_response(&response(1, "example.org", rtype::MX), 1).is_none()); // type
        assert!(pq.on_response(&response(1, "EXAMPLE.org", rtype::A), 1).is_some()); // case-insensitive
        assert!(pq.on_response(&response(1, "example.org", rtype::A), 2).is_none()); // consumed
                                                                                     // Timeout.
        pq.on_query(&query(3, "a.b", rtype::A), 10);
        assert!(pq.on_response(&response(3, "a.b", rtype::A), 1_010).is_none());
        assert!(pq.is_empty());
        // Capacity: the oldest is evicted.
        for id in 0..5 {
            pq.on_query(&query(id, "x.y", rtype::A), 2_000 + id as u64);
        }
        assert_eq!(pq.len(), 4);
        assert!(pq.on_response(&response(0, "x.y", rtype::A), 2_010).is_none());
        assert!(pq.on_response(&response(4, "x.y", rtype::A), 2_010).is_some());
        // Retransmissions replace, and the order queue stays bounded.
        for t in 0..1_000u64 {
            pq.on_query(&query(9, "r.s", rtype::A), 3_000 + t / 10);
        }
        assert!(pq.order.len() <= 2 * 4 + 17);
        assert!(pq.on_response(&response(9, "r.s", rtype::A), 3_200).is_some());
    }

    #[test]
    fn name_helpers() {
        let n = name("WwW.Example.org.");
        assert_eq!(n.to_dotted(), "WwW.Example.org");
        assert_eq!(n.labels().count(), 3);
        assert!(n.eq_ignore_case(&name("www.example.ORG")));
        assert_ne!(n, name("www.example.org"));
        assert_eq!(Name::root().to_dotted(), "");
        assert_eq!(name(".").as_wire(), &[0]);
        assert_eq!(name("").labels().count(), 0);
        let odd = Name { wire: vec![3, b'a', b'.', 0xff, 0] };
        assert_eq!(odd.to_dotted(), "a\\.\\255");
        assert_eq!(Name::from_dotted("a..b"), Err(DnsError::BadLabel));
    }

    #[test]
    fn more_typed_rdata() {
        let mut v = header(7, 0x8000, [1, 4, 0, 0]);
        push_q(&mut v, "h.example", rtype::HINFO);
        push_rr(&mut v, "h.example", rtype::HINFO, 1, b"\x03x86\x05Linux");
        push_rr(&mut v, "h.example", rtype::WKS, 1, &[10, 0, 0, 1, 6, 0x40, 0x01]);
        let mut minfo = vec![5, b'a', b'd', b'm', b'i', b'n', 0xc0, 12];
        minfo.extend_from_slice(&[0xc0, 12]);
        push_rr(&mut v, "h.example", rtype::MINFO, 1, &minfo);
        push_rr(&mut v, "h.example", rtype::NULL, 1, b"anything");
        let m = parse(&v).unwrap();
        let a = &m.answers;
        assert_eq!(a[0].data, RData::Hinfo { cpu: b"x86".to_vec(), os: b"Linux".to_vec() });
        assert_eq!(
            a[1].data,
            RData::Wks { address: Ipv4Addr::new(10, 0, 0, 1), protocol: 6, bitmap: vec![0x40, 0x01] }
        );
        assert_eq!(a[2].data, RData::Minfo { rmailbx: name("admin.h.example"), emailbx: name("h.example") });
        assert_eq!(a[3].data, RData::Raw(b"anything".to_vec()));
        assert_eq!(type_name(a[2].rtype), Some("MINFO"));
        assert_eq!(class_name(a[2].class), Some("IN"));
        assert_eq!(type_name(4242), None);
    }

    #[test]
    fn records_iterator_in_section_order() {
        let m = parse(&basic()[1]).unwrap();
        let secs: Vec<Section> = m.records().map(|(s, _)| s).collect();
        assert_eq!(secs.len(), 23);
        assert_eq!(secs[0], Section::Answer);
        assert_eq!(secs[6], Section::Authority);
        assert_eq!(secs[12].haka_name(), "additional");
        // pdns.lua style: every A record of a response.
        let a = m.records().filter(|(_, r)| matches!(r.data, RData::A(_))).count();
        assert_eq!(a, 6 + 6);
    }

    #[test]
    fn all_haka_dns_captures_parse_and_match() {
        for f in [
            "modules/protocol/dns/test/basic.pcap",
            "modules/protocol/dns/test/drop.pcap",
            "modules/protocol/dns/test/query-readonly.pcap",
            "sample/test/pdns.pcap",
        ] {
            let mut pq = PendingQueries::new(64, 10_000);
            let payloads = udp_payloads(f);
            assert!(!payloads.is_empty());
            for (i, b) in payloads.iter().enumerate() {
                let m = parse(b).unwrap_or_else(|e| panic!("{f} packet {}: {e}", i + 1));
                assert_eq!(m.trailing, 0);
                assert_eq!(m.questions.len(), 1);
                if m.is_response() {
                    assert!(pq.on_response(&m, i as u64).is_some(), "{f} packet {}", i + 1);
                } else {
                    pq.on_query(&m, i as u64);
                }
                for n in 0..b.len() {
                    assert_eq!(parse(&b[..n]), Err(DnsError::Truncated));
                }
            }
            assert!(pq.is_empty());
        }
    }

    #[test]
    fn fuzz_never_panics() {
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let seeds = basic();
        let mut ok = 0usize;
        let mut seen = std::collections::HashSet::new();
        for i in 0..50_000usize {
            let r = next();
            let buf: Vec<u8> = if i % 2 == 0 {
                // Pure garbage, with plausible small header counts half the time.
                let len = (r % 600) as usize;
                let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                if r & 0x1000 != 0 && b.len() >= 12 {
                    for (c, byte) in b.iter_mut().enumerate().take(12).skip(4) {
                        *byte &= if c % 2 == 0 { 0 } else { 0x07 };
                    }
                }
                b
            } else {
                // Mutations of a real message: byte flips, pointer-like bytes, cuts.
                let mut b = seeds[(r % seeds.len() as u64) as usize].clone();
                for _ in 0..(1 + r % 8) {
                    let x = next();
                    let at = (x as usize >> 8) % b.len();
                    b[at] = match x % 4 {
                        0 => (x >> 8) as u8,
                        1 => 0xc0,
                        2 => (x >> 16) as u8 & 0x3f,
                        _ => b[at] ^ 0xff,
                    };
                }
                if r & 0x100 != 0 {
                    let cut = (next() as usize) % (b.len() + 1);
                    b.truncate(cut);
                }
                b
            };
            match parse(&buf) {
                Ok(m) => {
                    ok += 1;
                    let names = m.questions.iter().map(|q| &q.name).chain(m.records().map(|(_, r)| &r.name));
                    for n in names {
                        assert!(n.as_wire().len() <= MAX_NAME_LEN);
                        assert!(n.labels().all(|l| !l.is_empty() && l.len() <= MAX_LABEL_LEN));
                        assert_eq!(n.as_wire().last(), Some(&0));
                    }
                }
                Err(e) => {
                    seen.insert(e);
                }
            }
            let _ = parse_tcp_stream(&buf);
        }
        assert!(ok > 0);
        eprintln!("fuzz: {ok} parsed, errors seen {seen:?}");
        for e in [DnsError::Truncated, DnsError::BadLabel, DnsError::PointerLoop, DnsError::PointerOutOfBounds] {
            assert!(seen.contains(&e), "{e:?} never produced");
        }
    }
}
