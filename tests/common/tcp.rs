//! TCP conversations for the tests: frames with correct sequence numbers and checksums,
//! and the parsing of an output capture back into packets and streams.
use std::path::{Path, PathBuf};

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

pub const CLIENT: [u8; 4] = [198, 18, 0, 1];
pub const SERVER: [u8; 4] = [198, 18, 0, 2];
const C_ISN: u32 = 1000;
const S_ISN: u32 = 5000;

fn sum16(data: &[u8], mut sum: u32) -> u32 {
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo_sum(src: [u8; 4], dst: [u8; 4], len: usize) -> u32 {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&[0, 6]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    sum16(&p, 0)
}

/// Ethernet + IPv4 + TCP frame, checksums computed.
#[allow(clippy::too_many_arguments)]
pub fn tcp_pkt(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + payload.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    let c = fold(sum16(&t, pseudo_sum(src, dst, t.len())));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    let total = 20 + t.len();
    let mut f = Vec::with_capacity(14 + total);
    f.extend_from_slice(&[0x02, 0, dst[0], dst[1], dst[2], dst[3], 0x02, 0, src[0], src[1], src[2], src[3], 0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0];
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = fold(sum16(&ip, 0));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&t);
    f
}

/// A TCP conversation. Direction 0: client to server, 1: server to client.
pub struct Session {
    ip: [[u8; 4]; 2],
    port: [u16; 2],
    next: [u32; 2],
    pub pkts: Vec<Vec<u8>>,
}

impl Session {
    pub fn new(cport: u16, sport: u16) -> Session {
        Session { ip: [CLIENT, SERVER], port: [cport, sport], next: [C_ISN, S_ISN], pkts: Vec::new() }
    }

    fn push(&mut self, dir: usize, seq: u32, ack: u32, flags: u8, data: &[u8]) {
        let p = tcp_pkt(self.ip[dir], self.ip[1 - dir], self.port[dir], self.port[1 - dir], seq, ack, flags, data);
        self.pkts.push(p);
    }

    pub fn handshake(&mut self) -> &mut Self {
        self.push(0, C_ISN, 0, SYN, b"");
        self.push(1, S_ISN, C_ISN + 1, SYN | ACK, b"");
        self.next = [C_ISN + 1, S_ISN + 1];
        self.push(0, self.next[0], self.next[1], ACK, b"");
        self
    }

    /// A data segment in direction `dir`, acknowledging everything the other side sent.
    pub fn send(&mut self, dir: usize, data: &[u8]) -> &mut Self {
        let (seq, ack) = (self.next[dir], self.next[1 - dir]);
        self.push(dir, seq, ack, PSH | ACK, data);
        self.next[dir] = seq.wrapping_add(data.len() as u32);
        self
    }

    /// `data` cut into segments of at most `mss` bytes.
    pub fn send_split(&mut self, dir: usize, data: &[u8], mss: usize) -> &mut Self {
        for c in data.chunks(mss) {
            self.send(dir, c);
        }
        self
    }

    /// FIN from the client, FIN from the server, last ACK.
    pub fn close(&mut self) -> &mut Self {
        let (s0, s1) = (self.next[0], self.next[1]);
        self.push(0, s0, s1, FIN | ACK, b"");
        self.push(1, s1, s0 + 1, FIN | ACK, b"");
        self.push(0, s0 + 1, s1 + 1, ACK, b"");
        self.next = [s0 + 1, s1 + 1];
        self
    }
}

pub fn write_pcap(dir: &Path, name: &str, packets: Vec<Vec<u8>>) -> PathBuf {
    let p = dir.join(name);
    super::write_capture(&p, packets);
    p
}

/// A TCP packet of an output capture (Ethernet, IPv4).
#[derive(Debug, Clone)]
pub struct Pkt {
    pub src: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub flags: u8,
    pub payload: Vec<u8>,
    /// IPv4 and TCP checksums verify.
    pub checksums_ok: bool,
}

pub fn parse(frame: &[u8]) -> Option<Pkt> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = ((ip[0] & 15) as usize) * 4;
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let ip = ip.get(..total)?;
    if ip[9] != 6 {
        return None;
    }
    let src: [u8; 4] = ip[12..16].try_into().unwrap();
    let dst: [u8; 4] = ip[16..20].try_into().unwrap();
    let l4 = &ip[ihl..];
    let ok = fold(sum16(&ip[..ihl], 0)) == 0 && fold(sum16(l4, pseudo_sum(src, dst, l4.len()))) == 0;
    let off = ((l4[12] >> 4) as usize) * 4;
    Some(Pkt {
        src,
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dport: u16::from_be_bytes([l4[2], l4[3]]),
        seq: u32::from_be_bytes(l4[4..8].try_into().unwrap()),
        flags: l4[13],
        payload: l4[off..].to_vec(),
        checksums_ok: ok,
    })
}

/// The data one side sent on connection `cport` (client port), in order, as it left
/// (each segment must follow the previous one: no gap, no overlap).
pub fn stream_of(pkts: &[Pkt], cport: u16, from_client: bool) -> Vec<u8> {
    let mut next: Option<u32> = None;
    let mut data = Vec::new();
    for p in pkts.iter().filter(|p| (p.src == CLIENT) == from_client && (p.sport == cport || p.dport == cport)) {
        if p.flags & SYN != 0 {
            next = Some(p.seq.wrapping_add(1));
            continue;
        }
        if p.flags & RST != 0 {
            continue;
        }
        if let Some(n) = next {
            if !p.payload.is_empty() {
                assert_eq!(p.seq, n, "sequence gap or overlap");
            }
        }
        data.extend_from_slice(&p.payload);
        next = Some(p.seq.wrapping_add(p.payload.len() as u32 + (p.flags & FIN != 0) as u32));
    }
    data
}
