//! Helpers for the integration tests: run the real binaries, build captures.
#![allow(dead_code)]
pub mod tcp;
use haka_engine::pcapfile::Capture;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn pcaps_dir() -> PathBuf {
    match std::env::var_os("HAKA_PCAPS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/haka-pcaps"),
    }
}

pub fn hakapcap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hakapcap")).args(args).output().expect("run hakapcap")
}

/// hakapcap with `rules` and config `conf` on `cap`, the output capture to `out` and the
/// stats to `stats`, plus `extra` arguments; panics with its stderr if it fails.
pub fn hakapcap_to(rules: &Path, conf: &Path, cap: &Path, out: &Path, stats: &Path, extra: &[&str]) -> Output {
    let s = |p: &Path| p.to_str().expect("utf-8 path").to_owned();
    let (rules, conf, cap, out, stats) = (s(rules), s(conf), s(cap), s(out), s(stats));
    let mut args = vec![rules.as_str(), "-c", &conf, &cap, "-o", &out, "--stats-file", &stats];
    args.extend_from_slice(extra);
    let o = hakapcap(&args);
    assert!(o.status.success(), "{cap}: {}", String::from_utf8_lossy(&o.stderr));
    o
}

pub fn haka(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_haka")).args(args).output().expect("run haka")
}

pub fn stderr_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr).lines().map(str::to_owned).collect()
}

pub fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).expect("stats file")).expect("stats json")
}

pub fn empty_rules(dir: &Path) -> PathBuf {
    let p = dir.join("empty.lua");
    std::fs::write(&p, "-- no rules: accept everything\n").unwrap();
    p
}

/// Internet checksum over `data`.
pub fn csum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet/IPv4/UDP-or-TCP frame with a valid IPv4 header checksum.
pub fn ipv4_frame(src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let l4_len = if proto == 6 { 20 } else { 8 };
    let total = 20 + l4_len + payload.len();
    let mut f = Vec::with_capacity(14 + total);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    if proto == 6 {
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    }
    f.extend_from_slice(payload);
    f
}

pub fn write_capture(path: &Path, packets: Vec<Vec<u8>>) {
    Capture { link_type: 1, packets }.write(path).unwrap();
}

/// Splits an Ethernet/IPv4 frame (20-byte IP header, no options) into fragments of
/// `chunk` payload bytes (a multiple of 8), all with identification `id`.
pub fn fragment_v4(frame: &[u8], id: u16, chunk: usize) -> Vec<Vec<u8>> {
    let (eth, ip) = frame.split_at(14);
    let payload = &ip[20..];
    let mut out = Vec::new();
    let mut off = 0;
    while off < payload.len() {
        let end = (off + chunk).min(payload.len());
        let more = end < payload.len();
        let mut f = eth.to_vec();
        let mut h = ip[..20].to_vec();
        h[2..4].copy_from_slice(&((20 + end - off) as u16).to_be_bytes());
        h[4..6].copy_from_slice(&id.to_be_bytes());
        h[6..8].copy_from_slice(&(((more as u16) << 13) | (off / 8) as u16).to_be_bytes());
        h[10..12].copy_from_slice(&[0, 0]);
        let c = csum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&h);
        f.extend_from_slice(&payload[off..end]);
        out.push(f);
        off = end;
    }
    out
}

/// Ethernet/IPv6/UDP frame with a valid UDP checksum.
pub fn ipv6_udp_frame(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let ulen = 8 + payload.len();
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x86, 0xdd];
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(ulen as u16).to_be_bytes());
    f.extend_from_slice(&[17, 64]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    let mut udp = Vec::with_capacity(ulen);
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&(ulen as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&(ulen as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 17]);
    pseudo.extend_from_slice(&udp);
    let c = match csum(&pseudo) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&udp);
    f
}

/// Splits an Ethernet/IPv6 frame (no extension headers) into fragments of `chunk`
/// payload bytes (a multiple of 8), Fragment header identification `id`.
pub fn fragment_v6(frame: &[u8], id: u32, chunk: usize) -> Vec<Vec<u8>> {
    let (head, payload) = frame.split_at(14 + 40);
    let inner_nh = head[14 + 6];
    let mut out = Vec::new();
    let mut off = 0;
    while off < payload.len() {
        let end = (off + chunk).min(payload.len());
        let more = end < payload.len();
        let mut f = head.to_vec();
        f[14 + 6] = 44;
        f[14 + 4..14 + 6].copy_from_slice(&((8 + end - off) as u16).to_be_bytes());
        f.extend_from_slice(&[inner_nh, 0]);
        f.extend_from_slice(&((off as u16) | more as u16).to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&payload[off..end]);
        out.push(f);
        off = end;
    }
    out
}
