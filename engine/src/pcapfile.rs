//! Capture-file support: hakapcap learns a file's link type and packet count by
//! streaming through it before replaying it through `net_pcap`, and restores the
//! capture times of what net_pcap wrote, in place; tests write and compare captures.
//! Reads pcap (both byte orders, us/ns) and pcapng, one packet at a time.
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

pub const LINKTYPE_NULL: u32 = 0;
pub const LINKTYPE_ETHERNET: u32 = 1;
pub const LINKTYPE_RAW: u32 = 101;
pub const LINKTYPE_LINUX_SLL: u32 = 113;
pub const LINKTYPE_IPV4: u32 = 228;
pub const LINKTYPE_IPV6: u32 = 229;

/// Largest record or block accepted (libpcap itself refuses packets over 256 KiB):
/// a corrupt length must not make a reader allocate gigabytes.
const MAX_RECORD: usize = 16 << 20;

/// A capture file's packets (captured bytes) and link type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub link_type: u32,
    pub packets: Vec<Vec<u8>>,
}

fn rd32(b: &[u8], off: usize, le: bool) -> Option<u32> {
    let s: [u8; 4] = b.get(off..off + 4)?.try_into().ok()?;
    Some(if le { u32::from_le_bytes(s) } else { u32::from_be_bytes(s) })
}

fn rd16(b: &[u8], off: usize, le: bool) -> Option<u16> {
    let s: [u8; 2] = b.get(off..off + 2)?.try_into().ok()?;
    Some(if le { u16::from_le_bytes(s) } else { u16::from_be_bytes(s) })
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, String> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(n)
}

/// Reads a capture's packets one at a time from any reader (pcap or pcapng),
/// holding one packet at most.
pub struct PacketReader<R> {
    r: R,
    pcapng: bool,
    le: bool,
    link_type: Option<u32>,
    /// Bytes consumed so far (error messages name the offending byte offset).
    off: u64,
    packets: u64,
    /// A pcapng block's body (reused).
    block: Vec<u8>,
}

impl<R: Read> PacketReader<R> {
    /// Reads the file header (pcap) or recognizes the first block (pcapng).
    pub fn new(mut r: R) -> Result<PacketReader<R>, String> {
        let mut magic = [0u8; 4];
        if read_full(&mut r, &mut magic)? < 4 {
            return Err("not a capture file (too short)".into());
        }
        let magic_le = u32::from_le_bytes(magic);
        let mut rd = PacketReader { r, pcapng: false, le: true, link_type: None, off: 4, packets: 0, block: Vec::new() };
        match magic_le {
            0xa1b2c3d4 | 0xa1b23c4d | 0xd4c3b2a1 | 0x4d3cb2a1 => {
                rd.le = matches!(magic_le, 0xa1b2c3d4 | 0xa1b23c4d);
                let mut hdr = [0u8; 20];
                if read_full(&mut rd.r, &mut hdr)? < 20 {
                    return Err("truncated pcap header".into());
                }
                rd.off = 24;
                rd.link_type = rd32(&hdr, 16, rd.le).map(|l| l & 0x0fff_ffff);
            }
            0x0a0d0d0a => rd.pcapng = true,
            _ => return Err(format!("not a pcap or pcapng file (magic {magic_le:#010x})")),
        }
        Ok(rd)
    }

    /// The capture's link type (pcapng: that of its first interface seen so far).
    pub fn link_type(&self) -> u32 {
        self.link_type.unwrap_or(LINKTYPE_ETHERNET)
    }

    /// Packets returned so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Reads the next packet's captured bytes into `buf`; Ok(false) at the end.
    pub fn next_into(&mut self, buf: &mut Vec<u8>) -> Result<bool, String> {
        let got = if self.pcapng { self.next_pcapng(buf)? } else { self.next_pcap(buf)? };
        if got {
            self.packets += 1;
        }
        Ok(got)
    }

    fn next_pcap(&mut self, buf: &mut Vec<u8>) -> Result<bool, String> {
        let off = self.off;
        let mut hdr = [0u8; 16];
        match read_full(&mut self.r, &mut hdr)? {
            0 => return Ok(false),
            16 => {}
            _ => return Err(format!("truncated record header at byte {off}")),
        }
        let caplen = rd32(&hdr, 8, self.le).unwrap_or(0) as usize;
        if caplen > MAX_RECORD {
            return Err(format!("record of {caplen} bytes at byte {off} (corrupt length?)"));
        }
        buf.resize(caplen, 0);
        if read_full(&mut self.r, buf)? < caplen {
            return Err(format!("truncated packet {} at byte {off}", self.packets + 1));
        }
        self.off += 16 + caplen as u64;
        Ok(true)
    }

    fn next_pcapng(&mut self, buf: &mut Vec<u8>) -> Result<bool, String> {
        loop {
            let off = self.off;
            // (the first block's type was read as the magic)
            let mut hdr = [0u8; 12];
            let start = if off == 4 {
                hdr[..4].copy_from_slice(&0x0a0d0d0au32.to_le_bytes());
                4
            } else {
                0
            };
            let n = start + read_full(&mut self.r, &mut hdr[start..])?;
            if n < 12 {
                // (fewer than 12 bytes left: trailing padding, ignored)
                return Ok(false);
            }
            let block_start = if off == 4 { 0 } else { off };
            if rd32(&hdr, 0, true) == Some(0x0a0d0d0a) {
                self.le = match rd32(&hdr, 8, true) {
                    Some(0x1a2b3c4d) => true,
                    Some(0x4d3c2b1a) => false,
                    _ => return Err("bad pcapng byte-order magic".into()),
                };
            }
            let btype = rd32(&hdr, 0, self.le).unwrap_or(0);
            let blen = rd32(&hdr, 4, self.le).unwrap_or(0) as usize;
            if blen < 12 || blen > MAX_RECORD {
                return Err(format!("bad pcapng block length at byte {block_start}"));
            }
            // body = the 4 bytes already read after the length, then the rest but the trailing length
            self.block.clear();
            self.block.extend_from_slice(&hdr[8..12]);
            self.block.resize(blen - 8, 0);
            if read_full(&mut self.r, &mut self.block[4..])? < blen - 12 {
                return Err(format!("bad pcapng block length at byte {block_start}"));
            }
            self.block.truncate(blen - 12);
            self.off = block_start + blen as u64;
            let le = self.le;
            let body = &self.block;
            let data = match btype {
                1 => {
                    if self.link_type.is_none() {
                        self.link_type = rd16(body, 0, le).map(u32::from);
                    }
                    None
                }
                6 => {
                    let cap = rd32(body, 12, le).ok_or("truncated EPB")? as usize;
                    Some(body.get(20..20 + cap).ok_or("truncated EPB data")?)
                }
                3 => {
                    let orig = rd32(body, 0, le).ok_or("truncated SPB")? as usize;
                    let cap = orig.min(body.len().saturating_sub(4));
                    Some(&body[4..4 + cap])
                }
                2 => {
                    let cap = rd32(body, 12, le).ok_or("truncated PB")? as usize;
                    Some(body.get(20..20 + cap).ok_or("truncated PB data")?)
                }
                _ => None,
            };
            if let Some(d) = data {
                buf.clear();
                buf.extend_from_slice(d);
                return Ok(true);
            }
        }
    }
}

/// What hakapcap needs before a replay: the link type and how many packets to expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureSummary {
    pub link_type: u32,
    pub packets: u64,
}

/// Streams through a capture file (one packet in memory at a time), checking it is whole.
pub fn summarize(path: &Path) -> Result<CaptureSummary, String> {
    let named = |e: String| format!("{}: {e}", path.display());
    let file = File::open(path).map_err(|e| named(e.to_string()))?;
    let mut rd = PacketReader::new(BufReader::with_capacity(1 << 20, file)).map_err(named)?;
    let mut buf = Vec::new();
    while rd.next_into(&mut buf).map_err(named)? {}
    Ok(CaptureSummary { link_type: rd.link_type(), packets: rd.packets() })
}

impl Capture {
    pub fn read(path: &Path) -> Result<Capture, String> {
        let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Capture::from_reader(BufReader::new(file)).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(b: &[u8]) -> Result<Capture, String> {
        Capture::from_reader(b)
    }

    fn from_reader(r: impl Read) -> Result<Capture, String> {
        let mut rd = PacketReader::new(r)?;
        let mut packets = Vec::new();
        let mut buf = Vec::new();
        while rd.next_into(&mut buf)? {
            packets.push(std::mem::take(&mut buf));
        }
        Ok(Capture { link_type: rd.link_type(), packets })
    }

    /// Writes a classic little-endian pcap (microsecond timestamps, 1 ms apart).
    pub fn write(&self, path: &Path) -> Result<(), String> {
        std::fs::write(path, self.to_pcap_bytes()).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn to_pcap_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.packets.iter().map(|p| p.len() + 16).sum::<usize>());
        out.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&262144u32.to_le_bytes());
        out.extend_from_slice(&self.link_type.to_le_bytes());
        for (i, p) in self.packets.iter().enumerate() {
            let us = i as u64 * 1000;
            out.extend_from_slice(&((1_700_000_000 + us / 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&((us % 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
            out.extend_from_slice(p);
        }
        out
    }
}

/// The byte order and precision (ns?) of a classic pcap, from its magic.
fn pcap_order(b: &[u8]) -> Result<(bool, bool), String> {
    match rd32(b, 0, true).ok_or("not a capture file (too short)")? {
        0xa1b2c3d4 => Ok((true, false)),
        0xa1b23c4d => Ok((true, true)),
        0xd4c3b2a1 => Ok((false, false)),
        0x4d3cb2a1 => Ok((false, true)),
        m => Err(format!("not a classic pcap (magic {m:#010x})")),
    }
}

/// Byte offsets of a classic pcap's record headers.
fn record_offsets(b: &[u8], le: bool) -> Result<Vec<usize>, String> {
    let mut records = Vec::new();
    let mut off = 24;
    while off < b.len() {
        let caplen = rd32(b, off + 8, le).ok_or_else(|| format!("truncated record header at byte {off}"))? as usize;
        if b.len() < off + 16 + caplen {
            return Err(format!("truncated packet {} at byte {off}", records.len() + 1));
        }
        records.push(off);
        off += 16 + caplen;
    }
    Ok(records)
}

/// The timestamps of a classic pcap's records, in ns since the epoch.
pub fn record_times_ns(b: &[u8]) -> Result<Vec<u64>, String> {
    let (le, nano) = pcap_order(b)?;
    let records = record_offsets(b, le)?;
    Ok(records
        .iter()
        .map(|&off| {
            let sec = rd32(b, off, le).unwrap_or(0) as u64;
            let frac = rd32(b, off + 4, le).unwrap_or(0) as u64;
            sec * 1_000_000_000 + if nano { frac } else { frac * 1000 }
        })
        .collect())
}

/// Sets the timestamps of a classic pcap's records, in order, to `times_ns` (ns since the
/// epoch; 0 leaves a record's time as it is), at the file's own precision (µs or ns
/// magic, either byte order). Err, nothing changed, when the file is not a classic pcap
/// or its record count differs from `times_ns`.
pub fn restamp(b: &mut [u8], times_ns: &[u64]) -> Result<(), String> {
    let (le, nano) = pcap_order(b)?;
    let records = record_offsets(b, le)?;
    if records.len() != times_ns.len() {
        return Err(format!("{} records for {} timestamps", records.len(), times_ns.len()));
    }
    for (&off, &t) in records.iter().zip(times_ns) {
        stamp(&mut b[off..off + 16], t, le, nano);
    }
    Ok(())
}

/// Sets one record header's time (0: left as it is).
fn stamp(header: &mut [u8], t: u64, le: bool, nano: bool) {
    if t == 0 {
        return;
    }
    let sec = (t / 1_000_000_000) as u32;
    let frac = if nano { t % 1_000_000_000 } else { t % 1_000_000_000 / 1000 } as u32;
    let (sec, frac) = if le { (sec.to_le_bytes(), frac.to_le_bytes()) } else { (sec.to_be_bytes(), frac.to_be_bytes()) };
    header[..4].copy_from_slice(&sec);
    header[4..8].copy_from_slice(&frac);
}

/// [`restamp`] for a file, in place, in bounded memory (1 MiB at a time): `times_ns` yields
/// `count` times, one per record in order. Err, nothing changed, when the file is not a
/// whole classic pcap or does not hold `count` records.
pub fn restamp_file(path: &Path, count: u64, mut times_ns: impl Iterator<Item = u64>) -> Result<(), String> {
    let named = |e: String| format!("{}: {e}", path.display());
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(|e| named(e.to_string()))?;
    let mut hdr = [0u8; 24];
    f.read_exact_at(&mut hdr, 0).map_err(|_| named("not a capture file (too short)".into()))?;
    let (le, nano) = pcap_order(&hdr).map_err(named)?;
    let records = walk_records(&f, le, None).map_err(named)?;
    if records != count {
        return Err(named(format!("{records} records for {count} timestamps")));
    }
    walk_records(&f, le, Some(&mut |h: &mut [u8]| stamp(h, times_ns.next().unwrap_or(0), le, nano))).map_err(named)?;
    Ok(())
}

/// Sets a classic pcap file's link type, in place.
pub fn set_link_type(path: &Path, link_type: u32) -> Result<(), String> {
    let named = |e: String| format!("{}: {e}", path.display());
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(|e| named(e.to_string()))?;
    let mut hdr = [0u8; 24];
    f.read_exact_at(&mut hdr, 0).map_err(|_| named("not a capture file (too short)".into()))?;
    let (le, _) = pcap_order(&hdr).map_err(named)?;
    let l = if le { link_type.to_le_bytes() } else { link_type.to_be_bytes() };
    f.write_all_at(&l, 20).map_err(|e| named(e.to_string()))
}

/// Visits every record header of a classic pcap file in order (`visit` may change it: the
/// chunk is then written back); returns the record count. Err when the file is not whole.
fn walk_records(f: &File, le: bool, mut visit: Option<&mut dyn FnMut(&mut [u8])>) -> Result<u64, String> {
    const CHUNK: usize = 1 << 20;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut chunk = vec![0u8; CHUNK];
    let (mut pos, mut count) = (24u64, 0u64);
    while pos < len {
        let want = ((len - pos) as usize).min(CHUNK);
        f.read_exact_at(&mut chunk[..want], pos).map_err(|e| e.to_string())?;
        let mut i = 0usize;
        while i + 16 <= want {
            let caplen = rd32(&chunk, i + 8, le).unwrap_or(0) as usize;
            if pos + (i + 16 + caplen) as u64 > len {
                return Err(format!("truncated packet {} at byte {}", count + 1, pos + i as u64));
            }
            if let Some(v) = visit.as_mut() {
                v(&mut chunk[i..i + 16]);
            }
            count += 1;
            i += 16 + caplen;
        }
        if i < want && pos + want as u64 == len {
            return Err(format!("truncated record header at byte {}", pos + i as u64));
        }
        if visit.is_some() {
            f.write_all_at(&chunk[..want], pos).map_err(|e| e.to_string())?;
        }
        // (a header cut by the chunk's end is read again at the start of the next)
        pos += i as u64;
    }
    Ok(count)
}

/// The dissector's link type for a capture's LINKTYPE, if supported.
pub fn dissect_link_type(link_type: u32) -> Option<crate::dissect::LinkType> {
    use crate::dissect::LinkType;
    match link_type {
        LINKTYPE_ETHERNET => Some(LinkType::Ethernet),
        LINKTYPE_RAW | LINKTYPE_IPV4 | LINKTYPE_IPV6 | 12 | 14 => Some(LinkType::RawIp),
        LINKTYPE_NULL | 108 => Some(LinkType::Null),
        LINKTYPE_LINUX_SLL => Some(LinkType::LinuxSll),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_roundtrip() {
        let c = Capture { link_type: 1, packets: vec![vec![1, 2, 3], vec![], vec![9; 100]] };
        assert_eq!(Capture::parse(&c.to_pcap_bytes()).unwrap(), c);
    }

    #[test]
    fn restamp_sets_record_times_at_the_file_precision() {
        let c = Capture { link_type: 1, packets: vec![vec![1, 2, 3], vec![4; 10]] };
        let mut b = c.to_pcap_bytes();
        let before = b.clone();
        restamp(&mut b, &[1_390_235_096_590_310_123, 0]).unwrap();
        assert_eq!(rd32(&b, 24, true), Some(1_390_235_096));
        assert_eq!(rd32(&b, 28, true), Some(590_310)); // µs file
        assert_eq!(b[24 + 16 + 3..], before[24 + 16 + 3..]); // 0: second record untouched
        assert_eq!(Capture::parse(&b).unwrap(), c);
        assert_eq!(record_times_ns(&b).unwrap(), vec![1_390_235_096_590_310_000, 1_700_000_000_001_000_000]);
        // nanosecond file, big endian
        let mut n = b.clone();
        n[..4].copy_from_slice(&0xa1b23c4du32.to_be_bytes());
        for off in [8usize, 12, 16, 20, 24, 28, 32, 36] {
            let v = rd32(&b, off, true).unwrap();
            n[off..off + 4].copy_from_slice(&v.to_be_bytes());
        }
        let off2 = 24 + 16 + 3;
        for k in 0..4 {
            let v = rd32(&b, off2 + 4 * k, true).unwrap();
            n[off2 + 4 * k..off2 + 4 * k + 4].copy_from_slice(&v.to_be_bytes());
        }
        restamp(&mut n, &[0, 5_000_000_007]).unwrap();
        assert_eq!(rd32(&n, off2, false), Some(5));
        assert_eq!(rd32(&n, off2 + 4, false), Some(7));
        // a count mismatch changes nothing
        let mut m = before.clone();
        assert!(restamp(&mut m, &[1]).is_err());
        assert_eq!(m, before);
    }

    #[test]
    fn restamp_file_matches_restamp_across_chunks() {
        // records of varied sizes over several 1 MiB chunks: headers get cut by chunk ends
        let packets: Vec<Vec<u8>> = (0..3000).map(|i| vec![i as u8; 60 + (i * 37) % 1500]).collect();
        let c = Capture { link_type: 1, packets };
        let times: Vec<u64> = (0..3000u64).map(|i| if i % 7 == 0 { 0 } else { 1_390_000_000_000_000_000 + i * 1_001_000 }).collect();
        let mut want = c.to_pcap_bytes();
        assert!(want.len() > 2 << 20);
        restamp(&mut want, &times).unwrap();
        let p = std::env::temp_dir().join(format!("haka-restamp-{}.pcap", std::process::id()));
        c.write(&p).unwrap();
        restamp_file(&p, times.len() as u64, times.iter().copied()).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), want);
        // a count mismatch changes nothing
        assert!(restamp_file(&p, 5, [1u64; 5].into_iter()).unwrap_err().contains("3000 records for 5"));
        assert_eq!(std::fs::read(&p).unwrap(), want);
        set_link_type(&p, LINKTYPE_RAW).unwrap();
        assert_eq!(summarize(&p).unwrap(), CaptureSummary { link_type: LINKTYPE_RAW, packets: 3000 });
        // truncated file: an error, nothing changed
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() - 5]).unwrap();
        assert!(restamp_file(&p, 3000, times.iter().copied()).unwrap_err().contains("truncated packet 3000"));
        assert!(summarize(&p).unwrap_err().contains("truncated packet 3000"));
        std::fs::write(&p, &b[..b.len() - 5 - 16 - c.packets[2999].len() + 8]).unwrap();
        assert!(restamp_file(&p, 2999, times.iter().copied()).unwrap_err().contains("truncated record header"));
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn truncated_and_garbage_are_errors() {
        let c = Capture { link_type: 1, packets: vec![vec![1, 2, 3]] };
        let b = c.to_pcap_bytes();
        assert!(Capture::parse(&b[..b.len() - 1]).unwrap_err().contains("truncated"));
        assert!(Capture::parse(b"hello world, not a pcap").is_err());
        assert!(Capture::parse(b"").is_err());
    }

    #[test]
    fn reads_shared_captures_including_pcapng() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/haka-pcaps");
        if !root.exists() {
            return;
        }
        let ng = Capture::read(&root.join("modules/protocol/ipv4/test/create.pcap")).unwrap();
        assert!(!ng.packets.is_empty());
        let sum = summarize(&root.join("modules/protocol/ipv4/test/create.pcap")).unwrap();
        assert_eq!(sum, CaptureSummary { link_type: ng.link_type, packets: ng.packets.len() as u64 });
        let p = Capture::read(&root.join("sample/filter/ipfilter.pcap")).unwrap();
        assert_eq!(p.link_type, LINKTYPE_ETHERNET);
        assert!(!p.packets.is_empty());
    }
}
