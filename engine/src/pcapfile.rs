//! Minimal capture-file support: enough to learn a file's link type and
//! packet count before replaying it through `net_pcap`, and for tests to
//! write and compare captures. Reads pcap (both byte orders, us/ns) and pcapng.
use std::path::Path;

pub const LINKTYPE_NULL: u32 = 0;
pub const LINKTYPE_ETHERNET: u32 = 1;
pub const LINKTYPE_RAW: u32 = 101;
pub const LINKTYPE_LINUX_SLL: u32 = 113;
pub const LINKTYPE_IPV4: u32 = 228;
pub const LINKTYPE_IPV6: u32 = 229;

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

impl Capture {
    pub fn read(path: &Path) -> Result<Capture, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Capture::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(b: &[u8]) -> Result<Capture, String> {
        let magic = rd32(b, 0, true).ok_or("not a capture file (too short)")?;
        match magic {
            0xa1b2c3d4 | 0xa1b23c4d => Self::parse_pcap(b, true),
            0xd4c3b2a1 | 0x4d3cb2a1 => Self::parse_pcap(b, false),
            0x0a0d0d0a => Self::parse_pcapng(b),
            _ => Err(format!("not a pcap or pcapng file (magic {magic:#010x})")),
        }
    }

    fn parse_pcap(b: &[u8], le: bool) -> Result<Capture, String> {
        let link_type = rd32(b, 20, le).ok_or("truncated pcap header")? & 0x0fff_ffff;
        let mut packets = Vec::new();
        let mut off = 24;
        while off < b.len() {
            let caplen = rd32(b, off + 8, le).ok_or_else(|| format!("truncated record header at byte {off}"))? as usize;
            let data = b
                .get(off + 16..off + 16 + caplen)
                .ok_or_else(|| format!("truncated packet {} at byte {off}", packets.len() + 1))?;
            packets.push(data.to_vec());
            off += 16 + caplen;
        }
        Ok(Capture { link_type, packets })
    }

    fn parse_pcapng(b: &[u8]) -> Result<Capture, String> {
        let mut le = true;
        let mut link_type = None;
        let mut packets = Vec::new();
        let mut off = 0;
        while off + 12 <= b.len() {
            if rd32(b, off, true) == Some(0x0a0d0d0a) {
                le = match rd32(b, off + 8, true) {
                    Some(0x1a2b3c4d) => true,
                    Some(0x4d3c2b1a) => false,
                    _ => return Err("bad pcapng byte-order magic".into()),
                };
            }
            let btype = rd32(b, off, le).ok_or("truncated block")?;
            let blen = rd32(b, off + 4, le).ok_or("truncated block")? as usize;
            if blen < 12 || off + blen > b.len() {
                return Err(format!("bad pcapng block length at byte {off}"));
            }
            let body = &b[off + 8..off + blen - 4];
            match btype {
                1 if link_type.is_none() => link_type = rd16(body, 0, le).map(u32::from),
                6 => {
                    let cap = rd32(body, 12, le).ok_or("truncated EPB")? as usize;
                    packets.push(body.get(20..20 + cap).ok_or("truncated EPB data")?.to_vec());
                }
                3 => {
                    let orig = rd32(body, 0, le).ok_or("truncated SPB")? as usize;
                    let cap = orig.min(body.len().saturating_sub(4));
                    packets.push(body[4..4 + cap].to_vec());
                }
                2 => {
                    let cap = rd32(body, 12, le).ok_or("truncated PB")? as usize;
                    packets.push(body.get(20..20 + cap).ok_or("truncated PB data")?.to_vec());
                }
                _ => {}
            }
            off += blen;
        }
        Ok(Capture { link_type: link_type.unwrap_or(LINKTYPE_ETHERNET), packets })
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
        if t == 0 {
            continue;
        }
        let sec = (t / 1_000_000_000) as u32;
        let frac = if nano { t % 1_000_000_000 } else { t % 1_000_000_000 / 1000 } as u32;
        let (sec, frac) = if le { (sec.to_le_bytes(), frac.to_le_bytes()) } else { (sec.to_be_bytes(), frac.to_be_bytes()) };
        b[off..off + 4].copy_from_slice(&sec);
        b[off + 4..off + 8].copy_from_slice(&frac);
    }
    Ok(())
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
        let p = Capture::read(&root.join("sample/filter/ipfilter.pcap")).unwrap();
        assert_eq!(p.link_type, LINKTYPE_ETHERNET);
        assert!(!p.packets.is_empty());
    }
}
