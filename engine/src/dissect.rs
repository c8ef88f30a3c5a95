//! L2-L4 dissection: the chain of packet dissectors ([`crate::dissectors`]: `packet`
//! (Ethernet, 802.1Q/QinQ, raw IP, DLT_NULL, SLL), `ipv4`, `ipv6` (+extension headers),
//! `tcp`, `udp`, `icmp`, `icmpv6`) walked over one frame. Zero-copy over the frame bytes;
//! the result is a small `Copy` struct so the hot path never allocates.
//!
//! CONTRACT (shared with flow/, pipeline.rs, worker.rs):
//! `dissect(frame, link, opts) -> Result<PacketMeta, Malformed>`.
//!
//! Rules (beyond the field docs of [`PacketMeta`]):
//! - Link: Ethernet II with up to two VLAN tags (0x8100, 0x88a8, 0x9100; a third is
//!   `VlanTooDeep`); raw IP (version nibble picks v4/v6, anything but 6 goes the IPv4 way,
//!   so an unknown version is `Ipv4BadVersion`); DLT_NULL (address family in either byte
//!   order: 2 = IPv4, 24/28/30 = IPv6, other AF -> `L3::Other(af)`); Linux SLL (protocol at
//!   14..16, VLAN tags honoured like Ethernet).
//! - Non-IP: `Ok` with `L3::Other(ethertype)`, `proto` 0, zero addresses, `ip_len` 0;
//!   `l4_offset` = `payload_offset` = `l3_offset` and `payload_len` = the rest of the frame.
//! - Fragments: every IPv4 fragment (MF set or offset != 0), the first one included, and
//!   every IPv6 packet with a Fragment header get `fragment = true`, `has_l4 = false` and
//!   ports 0, so all fragments of a datagram map to the same address-only flow key.
//!   For IPv6, the extension-header walk stops at the Fragment header and `proto` is its
//!   next-header value (identical in all fragments of a datagram).
//! - Whenever `has_l4` is false on an IP packet, `l4_offset` = `payload_offset` = the first
//!   byte after the IP header (and the walked IPv6 extension headers) and `payload_len` the
//!   remaining IP payload length.
//! - ICMP/ICMPv6 echo request/reply: the identifier is put in both ports (both directions
//!   of a ping share a flow); other ICMP types: ports 0, `has_l4` true.
//! - Ethernet padding beyond the IP total/payload length is ignored everywhere.
//! - Frames longer than 65535 bytes are dissected over their first 65535 bytes (offsets are
//!   `u16`); an IP length reaching beyond that is reported as a bad length.

use crate::dissectors::{self, PacketView};

/// Link-layer framing of the bytes handed to the dissector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// DLT_EN10MB: Ethernet II (the DPDK case).
    Ethernet,
    /// DLT_RAW / LINKTYPE_IPV4 / LINKTYPE_IPV6: the frame starts at the IP header.
    RawIp,
    /// DLT_NULL: 4-byte host-order address family, then IP.
    Null,
    /// DLT_LINUX_SLL: 16-byte cooked header, protocol at bytes 14..16.
    LinuxSll,
}

/// What the dissector must check.
#[derive(Clone, Copy, Debug)]
pub struct DissectOptions {
    /// Verify the IPv4 header checksum (skip when the NIC already did).
    pub ipv4_checksum: bool,
}

impl Default for DissectOptions {
    fn default() -> Self {
        DissectOptions { ipv4_checksum: true }
    }
}

/// Layer-3 kind of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L3 {
    Ipv4,
    Ipv6,
    /// Not IP (ARP, LLDP, ...): the ethertype. Not malformed; forwarded as is.
    Other(u16),
}

/// Result of dissecting one frame. Addresses are 16 bytes; IPv4 addresses are
/// stored IPv4-mapped (`::ffff:a.b.c.d`) so one key type covers both families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketMeta {
    pub l3: L3,
    /// VLAN ids: outer << 12 | inner (QinQ), or the single tag, 0 when untagged.
    pub vlan: u32,
    pub l3_offset: u16,
    /// Offset of the L4 header; meaningful only when `has_l4`.
    pub l4_offset: u16,
    /// Offset and length of the L4 payload (after TCP/UDP/ICMP header), clipped to the IP length.
    pub payload_offset: u16,
    pub payload_len: u16,
    /// IP protocol / IPv6 upper-layer next header (0 for non-IP).
    pub proto: u8,
    /// True when an L4 header of `proto` was parsed (false for later fragments, ESP, unknown protocols).
    pub has_l4: bool,
    /// IPv4 MF/offset or IPv6 fragment header present.
    pub fragment: bool,
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    /// TCP/UDP ports; ICMP echo: identifier in both; other: 0.
    pub src_port: u16,
    pub dst_port: u16,
    /// TCP flags byte (FIN=0x01 SYN=0x02 RST=0x04 PSH=0x08 ACK=0x10 URG=0x20 ECE=0x40 CWR=0x80).
    pub tcp_flags: u8,
    /// IP total length (v4) or 40 + payload length (v6); 0 for non-IP.
    pub ip_len: u16,
}

/// Why a frame was rejected. Counted per reason; `Malformed::ALL` lists them in index order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    EthernetTruncated,
    VlanTruncated,
    VlanTooDeep,
    LinkTruncated,
    Ipv4Truncated,
    Ipv4BadVersion,
    Ipv4BadIhl,
    Ipv4BadTotalLength,
    Ipv4BadChecksum,
    Ipv6Truncated,
    Ipv6BadVersion,
    Ipv6BadPayloadLength,
    Ipv6ExtTruncated,
    Ipv6ExtChainTooLong,
    TcpTruncated,
    TcpBadDataOffset,
    UdpTruncated,
    UdpBadLength,
    IcmpTruncated,
    Icmpv6Truncated,
}

impl Malformed {
    pub const COUNT: usize = 20;
    pub const ALL: [Malformed; Malformed::COUNT] = [
        Malformed::EthernetTruncated,
        Malformed::VlanTruncated,
        Malformed::VlanTooDeep,
        Malformed::LinkTruncated,
        Malformed::Ipv4Truncated,
        Malformed::Ipv4BadVersion,
        Malformed::Ipv4BadIhl,
        Malformed::Ipv4BadTotalLength,
        Malformed::Ipv4BadChecksum,
        Malformed::Ipv6Truncated,
        Malformed::Ipv6BadVersion,
        Malformed::Ipv6BadPayloadLength,
        Malformed::Ipv6ExtTruncated,
        Malformed::Ipv6ExtChainTooLong,
        Malformed::TcpTruncated,
        Malformed::TcpBadDataOffset,
        Malformed::UdpTruncated,
        Malformed::UdpBadLength,
        Malformed::IcmpTruncated,
        Malformed::Icmpv6Truncated,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    /// Stable snake_case name used in stats output.
    pub fn name(self) -> &'static str {
        match self {
            Malformed::EthernetTruncated => "ethernet_truncated",
            Malformed::VlanTruncated => "vlan_truncated",
            Malformed::VlanTooDeep => "vlan_too_deep",
            Malformed::LinkTruncated => "link_truncated",
            Malformed::Ipv4Truncated => "ipv4_truncated",
            Malformed::Ipv4BadVersion => "ipv4_bad_version",
            Malformed::Ipv4BadIhl => "ipv4_bad_ihl",
            Malformed::Ipv4BadTotalLength => "ipv4_bad_total_length",
            Malformed::Ipv4BadChecksum => "ipv4_bad_checksum",
            Malformed::Ipv6Truncated => "ipv6_truncated",
            Malformed::Ipv6BadVersion => "ipv6_bad_version",
            Malformed::Ipv6BadPayloadLength => "ipv6_bad_payload_length",
            Malformed::Ipv6ExtTruncated => "ipv6_ext_truncated",
            Malformed::Ipv6ExtChainTooLong => "ipv6_ext_chain_too_long",
            Malformed::TcpTruncated => "tcp_truncated",
            Malformed::TcpBadDataOffset => "tcp_bad_data_offset",
            Malformed::UdpTruncated => "udp_truncated",
            Malformed::UdpBadLength => "udp_bad_length",
            Malformed::IcmpTruncated => "icmp_truncated",
            Malformed::Icmpv6Truncated => "icmpv6_truncated",
        }
    }
}

/// Dissects one frame: hands it to the `packet` dissector and down the chain of registered
/// packet dissectors ([`crate::dissectors`]) until one names nothing more. Never panics,
/// whatever the bytes; never allocates.
///
/// Always inlined: at the (few) call sites the link type is usually a constant and the
/// result fields stay in registers, which roughly halves the per-packet cost compared with
/// an out-of-line call returning the 60-byte `PacketMeta` through memory.
#[inline(always)]
pub fn dissect(frame: &[u8], link: LinkType, opts: &DissectOptions) -> Result<PacketMeta, Malformed> {
    // Offsets are u16: never look past 65535 bytes.
    let frame = frame.get(..u16::MAX as usize).unwrap_or(frame);
    let mut p = PacketView { frame, link, opts, off: 0, data: frame, meta: PacketMeta::NONE };
    let next = dissectors::CAPTURE.receive(&mut p)?;
    next.walk(p)
}

impl PacketMeta {
    /// Before any dissector ran.
    pub const NONE: PacketMeta = PacketMeta {
        l3: L3::Other(0),
        vlan: 0,
        l3_offset: 0,
        l4_offset: 0,
        payload_offset: 0,
        payload_len: 0,
        proto: 0,
        has_l4: false,
        fragment: false,
        src_addr: [0; 16],
        dst_addr: [0; 16],
        src_port: 0,
        dst_port: 0,
        tcp_flags: 0,
        ip_len: 0,
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ip_proto, Icmpv4Packet, Icmpv6Packet, Ipv4Packet, Ipv6Packet, TcpSegment, UdpPacket};
    use crate::wire::ipv6::MAX_EXT_HEADERS;
    use crate::wire::tcp::flags;
    use crate::wire::{checksum, Ipv6FragmentHeader};

    const SRC4: [u8; 4] = [192, 168, 1, 10];
    const DST4: [u8; 4] = [10, 20, 30, 40];
    const SRC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11];
    const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x22];

    // ---- packet builders -------------------------------------------------------------

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// Ethernet header with VLAN tags (tpid, vid), outermost first, then `ethertype`.
    fn eth(ethertype: u16, tags: &[(u16, u16)]) -> Vec<u8> {
        let mut v = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        for &(tpid, vid) in tags {
            v.extend_from_slice(&tpid.to_be_bytes());
            v.extend_from_slice(&(0x2000 | vid).to_be_bytes()); // PCP 1
        }
        v.extend_from_slice(&ethertype.to_be_bytes());
        v
    }

    fn tcp(sport: u16, dport: u16, fl: u8, opt_words: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 20 + 4 * opt_words as usize];
        let mut t = TcpSegment::new_unchecked(&mut v[..]);
        t.set_src_port(sport);
        t.set_dst_port(dport);
        t.set_seq_number(1000);
        t.set_ack_number(2000);
        t.set_data_offset(5 + opt_words);
        t.set_flags(fl);
        t.set_window(65535);
        for b in v[20..].iter_mut() {
            *b = 1; // NOP options
        }
        v.extend_from_slice(payload);
        v
    }

    fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 8];
        let mut u = UdpPacket::new_unchecked(&mut v[..]);
        u.set_src_port(sport);
        u.set_dst_port(dport);
        u.set_len(8 + payload.len() as u16);
        v.extend_from_slice(payload);
        v
    }

    fn icmp(ty: u8, id: u16, seq: u16) -> Vec<u8> {
        let mut v = vec![ty, 0, 0, 0];
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(b"0123456789abcdef");
        v
    }

    /// IPv4 header (+ options) and payload, checksum filled. `frag` = (MF, offset in bytes).
    fn ipv4_full(proto: u8, options: &[u8], frag: (bool, u16), l4: &[u8]) -> Vec<u8> {
        let hl = 20 + options.len();
        let mut v = vec![0u8; hl];
        let mut ip = Ipv4Packet::new_unchecked(&mut v[..]);
        ip.set_version_ihl((hl / 4) as u8);
        ip.set_total_len((hl + l4.len()) as u16);
        ip.set_ident(0x1234);
        ip.set_frag(!frag.0 && frag.1 == 0, frag.0, frag.1);
        ip.set_ttl(64);
        ip.set_protocol(proto);
        ip.set_src_addr(SRC4);
        ip.set_dst_addr(DST4);
        v[20..].copy_from_slice(options);
        Ipv4Packet::new_unchecked(&mut v[..]).fill_checksum();
        v.extend_from_slice(l4);
        v
    }

    fn ipv4(proto: u8, l4: &[u8]) -> Vec<u8> {
        ipv4_full(proto, &[], (false, 0), l4)
    }

    fn ipv6(nh: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 40];
        let mut ip = Ipv6Packet::new_unchecked(&mut v[..]);
        ip.set_version_tc_flow(0, 0x12345);
        ip.set_payload_len(payload.len() as u16);
        ip.set_next_header(nh);
        ip.set_hop_limit(64);
        ip.set_src_addr(SRC6);
        ip.set_dst_addr(DST6);
        v.extend_from_slice(payload);
        v
    }

    /// Generic extension header of `len` bytes (multiple of 8), PadN-filled.
    fn ext(nh: u8, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        v[0] = nh;
        v[1] = (len / 8 - 1) as u8;
        if len > 2 {
            v[2] = 1; // PadN
            v[3] = (len - 4) as u8;
        }
        v
    }

    /// AH header of `len` bytes (multiple of 4, >= 12).
    fn ah(nh: u8, len: usize) -> Vec<u8> {
        let mut v = vec![0xaa; len];
        v[0] = nh;
        v[1] = (len / 4 - 2) as u8;
        v
    }

    fn frag6(nh: u8, offset: u16, more: bool) -> Vec<u8> {
        let mut v = vec![0u8; 8];
        Ipv6FragmentHeader::new_unchecked(&mut v[..]).set(nh, offset, more, 0xcafe);
        v
    }

    fn mapped(a: [u8; 4]) -> [u8; 16] {
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3]]
    }

    fn d(f: &[u8]) -> Result<PacketMeta, Malformed> {
        dissect(f, LinkType::Ethernet, &DissectOptions::default())
    }

    fn d_nock(f: &[u8]) -> Result<PacketMeta, Malformed> {
        dissect(f, LinkType::Ethernet, &DissectOptions { ipv4_checksum: false })
    }

    /// Sets the IPv4 total length at `l3` and refreshes the header checksum.
    fn set_v4_total(f: &mut [u8], l3: usize, total: u16) {
        let mut ip = Ipv4Packet::new_unchecked(&mut f[l3..]);
        ip.set_total_len(total);
        ip.fill_checksum();
    }

    /// Invariants of any `Ok` result over `frame`.
    fn check_invariants(frame: &[u8], m: &PacketMeta) {
        let len = frame.len().min(u16::MAX as usize);
        let (l3, l4, po, pl) = (
            m.l3_offset as usize,
            m.l4_offset as usize,
            m.payload_offset as usize,
            m.payload_len as usize,
        );
        assert!(l3 <= len, "{m:?}");
        match m.l3 {
            L3::Other(_) => {
                assert_eq!((l4, po, po + pl), (l3, l3, len), "{m:?}");
                assert_eq!((m.proto, m.ip_len, m.has_l4, m.fragment), (0, 0, false, false));
                assert_eq!((m.src_addr, m.dst_addr), ([0; 16], [0; 16]));
            }
            L3::Ipv4 | L3::Ipv6 => {
                let end = l3 + m.ip_len as usize;
                assert!(end <= len, "{m:?}");
                assert!(l4 >= l3 + 20 && l4 <= end, "{m:?}");
                assert!(po >= l4 && po + pl <= end, "{m:?}");
                if m.l3 == L3::Ipv4 {
                    assert_eq!(&m.src_addr[..12], &mapped([0; 4])[..12]);
                }
            }
        }
        if !m.has_l4 {
            assert_eq!((m.src_port, m.dst_port, m.tcp_flags), (0, 0, 0), "{m:?}");
            assert_eq!(po, l4, "{m:?}");
        }
        if m.fragment {
            assert!(!m.has_l4);
        }
        if m.proto != ip_proto::TCP {
            assert_eq!(m.tcp_flags, 0);
        }
    }

    // ---- Ethernet / IPv4 / TCP ----------------------------------------------------------

    fn eth_v4_tcp() -> Vec<u8> {
        cat(&[
            &eth(0x0800, &[]),
            &ipv4(6, &tcp(40000, 443, flags::PSH | flags::ACK, 3, b"hello")),
        ])
    }

    #[test]
    fn dissect_eth_ipv4_tcp() {
        let f = eth_v4_tcp();
        assert_eq!(f.len(), 14 + 20 + 32 + 5);
        let m = d(&f).unwrap();
        assert_eq!(
            m,
            PacketMeta {
                l3: L3::Ipv4,
                vlan: 0,
                l3_offset: 14,
                l4_offset: 34,
                payload_offset: 66,
                payload_len: 5,
                proto: 6,
                has_l4: true,
                fragment: false,
                src_addr: mapped(SRC4),
                dst_addr: mapped(DST4),
                src_port: 40000,
                dst_port: 443,
                tcp_flags: flags::PSH | flags::ACK,
                ip_len: 57,
            }
        );
        assert_eq!(&f[m.payload_offset as usize..][..m.payload_len as usize], b"hello");
        check_invariants(&f, &m);
    }

    #[test]
    fn dissect_eth_ipv4_tcp_every_prefix() {
        let f = eth_v4_tcp();
        for n in 0..=f.len() {
            let want = match n {
                0..=13 => Err(Malformed::EthernetTruncated),
                14..=33 => Err(Malformed::Ipv4Truncated),
                _ if n < f.len() => Err(Malformed::Ipv4BadTotalLength),
                _ => Ok(()),
            };
            for r in [d(&f[..n]), d_nock(&f[..n])] {
                assert_eq!(r.map(|_| ()), want, "prefix {n}");
            }
        }
        // Same prefixes with the IP total length fixed up: the TCP checks are reached.
        for n in 34..=f.len() {
            let mut g = f[..n].to_vec();
            set_v4_total(&mut g, 14, (n - 14) as u16);
            let r = d(&g);
            match n - 34 {
                0..=31 => assert_eq!(r, Err(Malformed::TcpTruncated), "prefix {n}"),
                p => {
                    let m = r.unwrap();
                    assert_eq!((m.payload_len as usize, m.ip_len as usize), (p - 32, n - 14));
                    check_invariants(&g, &m);
                }
            }
        }
    }

    #[test]
    fn dissect_ipv4_header_errors() {
        let f = eth_v4_tcp();
        // Bad version.
        let mut g = f.clone();
        g[14] = 0x55;
        assert_eq!(d_nock(&g), Err(Malformed::Ipv4BadVersion));
        // Bad IHL (< 5), whatever the checksum.
        for ihl in 0..5u8 {
            let mut g = f.clone();
            g[14] = 0x40 | ihl;
            assert_eq!(d_nock(&g), Err(Malformed::Ipv4BadIhl));
            assert_eq!(d(&g), Err(Malformed::Ipv4BadIhl));
        }
        // IHL larger than the bytes present.
        let mut g = f[..14 + 24].to_vec();
        g[14] = 0x47;
        assert_eq!(d_nock(&g), Err(Malformed::Ipv4Truncated));
        // Total length below the header length / above the bytes present.
        for total in [0u16, 19, 58, 1500, 65535] {
            let mut g = f.clone();
            set_v4_total(&mut g, 14, total);
            assert_eq!(d(&g), Err(Malformed::Ipv4BadTotalLength), "total {total}");
        }
        // Options: IHL 6 with the total length covering them.
        let g = cat(&[
            &eth(0x0800, &[]),
            &ipv4_full(6, &[1, 1, 1, 0], (false, 0), &tcp(1, 2, flags::SYN, 0, &[])),
        ]);
        let m = d(&g).unwrap();
        assert_eq!(
            (m.l4_offset, m.payload_offset, m.payload_len, m.src_port),
            (38, 58, 0, 1)
        );
        // Bad checksum: rejected, accepted when the option is off.
        let mut g = f.clone();
        g[14 + 8] = 1; // TTL changed without checksum update
        assert_eq!(d(&g), Err(Malformed::Ipv4BadChecksum));
        let m = d_nock(&g).unwrap();
        assert_eq!((m.src_port, m.dst_port), (40000, 443));
    }

    #[test]
    fn dissect_tcp_bad_data_offset() {
        for off in 0..5u8 {
            let mut f = eth_v4_tcp();
            f[34 + 12] = off << 4;
            assert_eq!(d(&f), Err(Malformed::TcpBadDataOffset));
        }
        // Data offset pointing past the segment (15 words = 60 bytes > 37).
        let mut f = eth_v4_tcp();
        f[34 + 12] = 0xf0;
        assert_eq!(d(&f), Err(Malformed::TcpTruncated));
    }

    #[test]
    fn dissect_ethernet_padding_ignored() {
        // A bare ACK is 54 bytes: padded to the 60-byte minimum with non-zero junk.
        let mut f = cat(&[&eth(0x0800, &[]), &ipv4(6, &tcp(80, 50000, flags::ACK, 0, &[]))]);
        assert_eq!(f.len(), 54);
        f.extend_from_slice(&[0xee; 6]);
        let m = d(&f).unwrap();
        assert_eq!((m.ip_len, m.payload_offset, m.payload_len), (40, 54, 0));
        // UDP: length field and IP length both exclude the padding.
        let mut f = cat(&[&eth(0x0800, &[]), &ipv4(17, &udp(53, 5353, b"ab"))]);
        f.extend_from_slice(&[0xee; 8]);
        let m = d(&f).unwrap();
        assert_eq!((m.ip_len, m.payload_offset, m.payload_len), (30, 42, 2));
        // IPv6 too.
        let mut f = cat(&[&eth(0x86dd, &[]), &ipv6(6, &tcp(1, 2, flags::RST, 0, &[]))]);
        f.extend_from_slice(&[0xee; 10]);
        let m = d(&f).unwrap();
        assert_eq!(
            (m.ip_len, m.payload_offset, m.payload_len, m.tcp_flags),
            (60, 74, 0, flags::RST)
        );
        check_invariants(&f, &m);
    }

    // ---- VLAN / link types --------------------------------------------------------------

    #[test]
    fn dissect_vlan_tags() {
        let l4 = ipv4(17, &udp(1000, 2000, b"x"));
        let f = cat(&[&eth(0x0800, &[(0x8100, 42)]), &l4]);
        let m = d(&f).unwrap();
        assert_eq!((m.vlan, m.l3_offset, m.src_port, m.dst_port), (42, 18, 1000, 2000));
        for (outer, inner) in [(0x88a8, 0x8100), (0x8100, 0x8100), (0x9100, 0x8100), (0x88a8, 0x88a8)] {
            let f = cat(&[&eth(0x0800, &[(outer, 0xabc), (inner, 0x123)]), &l4]);
            let m = d(&f).unwrap();
            assert_eq!((m.vlan, m.l3_offset), (0xabc << 12 | 0x123, 22));
            check_invariants(&f, &m);
        }
        let f = cat(&[&eth(0x0800, &[(0x88a8, 1), (0x8100, 2), (0x8100, 3)]), &l4]);
        assert_eq!(d(&f), Err(Malformed::VlanTooDeep));
        let f = cat(&[&eth(0x0800, &[(0x88a8, 1), (0x8100, 2), (0x9100, 3)]), &l4]);
        assert_eq!(d(&f), Err(Malformed::VlanTooDeep));
        // Truncated tags.
        let f = eth(0x0800, &[(0x88a8, 1), (0x8100, 2)]);
        for n in 14..22 {
            assert_eq!(d(&f[..n]), Err(Malformed::VlanTruncated), "n={n}");
        }
        assert_eq!(d(&f), Err(Malformed::Ipv4Truncated));
        // VLAN-tagged ARP.
        let f = cat(&[&eth(0x0806, &[(0x8100, 7)]), &[0u8; 28]]);
        let m = d(&f).unwrap();
        assert_eq!((m.l3, m.vlan, m.l3_offset), (L3::Other(0x0806), 7, 18));
    }

    #[test]
    fn dissect_non_ip() {
        let f = cat(&[&eth(0x0806, &[]), &[0u8; 28], &[0; 18]]);
        let m = d(&f).unwrap();
        assert_eq!(m.l3, L3::Other(0x0806));
        assert_eq!(
            (m.l3_offset, m.payload_len, m.proto, m.has_l4, m.ip_len),
            (14, 46, 0, false, 0)
        );
        check_invariants(&f, &m);
        // Header only, 802.3 length field, LLDP.
        assert_eq!(d(&eth(0x88cc, &[])).unwrap().l3, L3::Other(0x88cc));
        assert_eq!(d(&eth(0x0026, &[])).unwrap().payload_len, 0);
    }

    #[test]
    fn dissect_link_types() {
        let v4 = ipv4(6, &tcp(1111, 2222, flags::SYN, 0, &[]));
        let v6 = ipv6(17, &udp(3333, 4444, b"abc"));
        let o = DissectOptions::default();
        // Raw IP.
        let m = dissect(&v4, LinkType::RawIp, &o).unwrap();
        assert_eq!((m.l3, m.l3_offset, m.l4_offset, m.src_port), (L3::Ipv4, 0, 20, 1111));
        let m = dissect(&v6, LinkType::RawIp, &o).unwrap();
        assert_eq!(
            (m.l3, m.l3_offset, m.l4_offset, m.dst_port, m.payload_len),
            (L3::Ipv6, 0, 40, 4444, 3)
        );
        assert_eq!(dissect(&[], LinkType::RawIp, &o), Err(Malformed::LinkTruncated));
        assert_eq!(dissect(&[0x45], LinkType::RawIp, &o), Err(Malformed::Ipv4Truncated));
        assert_eq!(dissect(&[0x60], LinkType::RawIp, &o), Err(Malformed::Ipv6Truncated));
        let mut bad = v4.clone();
        bad[0] = 0x55;
        assert_eq!(dissect(&bad, LinkType::RawIp, &o), Err(Malformed::Ipv4BadVersion));
        // Null: both byte orders, all IPv6 AFs.
        for hdr in [[2u8, 0, 0, 0], [0, 0, 0, 2]] {
            let f = cat(&[&hdr, &v4]);
            let m = dissect(&f, LinkType::Null, &o).unwrap();
            assert_eq!((m.l3, m.l3_offset, m.src_port), (L3::Ipv4, 4, 1111));
        }
        for af in [24u32, 28, 30] {
            for hdr in [af.to_le_bytes(), af.to_be_bytes()] {
                let f = cat(&[&hdr, &v6]);
                let m = dissect(&f, LinkType::Null, &o).unwrap();
                assert_eq!((m.l3, m.l3_offset, m.src_port), (L3::Ipv6, 4, 3333));
            }
        }
        let f = cat(&[&7u32.to_le_bytes(), &[1, 2, 3]]);
        let m = dissect(&f, LinkType::Null, &o).unwrap();
        assert_eq!((m.l3, m.l3_offset, m.payload_len), (L3::Other(7), 4, 3));
        for n in 0..4 {
            assert_eq!(dissect(&f[..n], LinkType::Null, &o), Err(Malformed::LinkTruncated));
        }
        assert_eq!(
            dissect(&[2, 0, 0, 0], LinkType::Null, &o),
            Err(Malformed::Ipv4Truncated)
        );
        // Linux SLL.
        let mut sll = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0];
        sll.extend_from_slice(&0x86ddu16.to_be_bytes());
        let f = cat(&[&sll, &v6]);
        let m = dissect(&f, LinkType::LinuxSll, &o).unwrap();
        assert_eq!((m.l3, m.l3_offset, m.l4_offset, m.src_port), (L3::Ipv6, 16, 56, 3333));
        for n in 0..16 {
            assert_eq!(dissect(&f[..n], LinkType::LinuxSll, &o), Err(Malformed::LinkTruncated));
        }
        sll[14..16].copy_from_slice(&0x0800u16.to_be_bytes());
        let f = cat(&[&sll, &v4]);
        let m = dissect(&f, LinkType::LinuxSll, &o).unwrap();
        assert_eq!((m.l3, m.l3_offset, m.tcp_flags), (L3::Ipv4, 16, flags::SYN));
        sll[14..16].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(dissect(&sll, LinkType::LinuxSll, &o).unwrap().l3, L3::Other(0x0806));
        // Ethernet link, truncated header.
        for n in 0..14 {
            assert_eq!(
                dissect(&[0u8; 13][..n], LinkType::Ethernet, &o),
                Err(Malformed::EthernetTruncated)
            );
        }
    }

    // ---- UDP / ICMP / other protocols --------------------------------------------------

    #[test]
    fn dissect_udp() {
        let f = cat(&[&eth(0x0800, &[]), &ipv4(17, &udp(5353, 53, b"query"))]);
        let m = d(&f).unwrap();
        assert_eq!((m.proto, m.has_l4, m.src_port, m.dst_port), (17, true, 5353, 53));
        assert_eq!((m.l4_offset, m.payload_offset, m.payload_len), (34, 42, 5));
        // Length field too large, too small; datagram shorter than 8.
        for (lenf, want) in [
            (14u16, Malformed::UdpBadLength),
            (7, Malformed::UdpBadLength),
            (0, Malformed::UdpBadLength),
        ] {
            let mut g = f.clone();
            g[34 + 4..34 + 6].copy_from_slice(&lenf.to_be_bytes());
            assert_eq!(d(&g), Err(want), "len {lenf}");
        }
        // Length field smaller than the IP payload: the UDP length wins for the payload.
        let mut g = f.clone();
        g[34 + 4..34 + 6].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(d(&g).unwrap().payload_len, 2);
        let g = cat(&[&eth(0x0800, &[]), &ipv4(17, &[0, 53, 0, 53, 0, 8, 0])]);
        assert_eq!(d(&g), Err(Malformed::UdpTruncated));
        let g = cat(&[&eth(0x86dd, &[]), &ipv6(17, &[0, 53, 0, 53])]);
        assert_eq!(d(&g), Err(Malformed::UdpTruncated));
    }

    #[test]
    fn dissect_icmp_echo_ids_as_ports() {
        let req = cat(&[&eth(0x0800, &[]), &ipv4(1, &icmp(8, 0x4242, 1))]);
        let m = d(&req).unwrap();
        assert_eq!((m.proto, m.has_l4, m.src_port, m.dst_port), (1, true, 0x4242, 0x4242));
        assert_eq!((m.l4_offset, m.payload_offset, m.payload_len), (34, 42, 16));
        let rep = cat(&[&eth(0x0800, &[]), &ipv4(1, &icmp(0, 0x4242, 1))]);
        assert_eq!(d(&rep).unwrap().src_port, 0x4242);
        // Destination unreachable: no ports.
        let un = cat(&[&eth(0x0800, &[]), &ipv4(1, &icmp(3, 0x4242, 1))]);
        let m = d(&un).unwrap();
        assert_eq!((m.has_l4, m.src_port, m.dst_port), (true, 0, 0));
        let short = cat(&[&eth(0x0800, &[]), &ipv4(1, &[8, 0, 0, 0, 0, 1, 0])]);
        assert_eq!(d(&short), Err(Malformed::IcmpTruncated));
        // ICMPv6.
        for ty in [128u8, 129] {
            let f = cat(&[&eth(0x86dd, &[]), &ipv6(58, &icmp(ty, 0x0707, 9))]);
            let m = d(&f).unwrap();
            assert_eq!(
                (m.proto, m.has_l4, m.src_port, m.dst_port, m.payload_offset),
                (58, true, 0x0707, 0x0707, 62)
            );
        }
        let ns = cat(&[&eth(0x86dd, &[]), &ipv6(58, &icmp(135, 0x0707, 9))]);
        assert_eq!(d(&ns).unwrap().src_port, 0);
        let short = cat(&[&eth(0x86dd, &[]), &ipv6(58, &[128, 0, 0, 0, 0, 1, 0])]);
        assert_eq!(d(&short), Err(Malformed::Icmpv6Truncated));
        // ICMPv4 protocol number inside IPv6 / ICMPv6 inside IPv4 are not parsed.
        let odd = cat(&[&eth(0x86dd, &[]), &ipv6(1, &icmp(8, 1, 1))]);
        assert!(!d(&odd).unwrap().has_l4);
        let odd = cat(&[&eth(0x0800, &[]), &ipv4(58, &icmp(128, 1, 1))]);
        assert!(!d(&odd).unwrap().has_l4);
    }

    #[test]
    fn dissect_other_protocols() {
        for proto in [ip_proto::GRE, ip_proto::ESP, ip_proto::SCTP, 255] {
            let f = cat(&[&eth(0x0800, &[]), &ipv4(proto, &[0xab; 12])]);
            let m = d(&f).unwrap();
            assert_eq!(
                (
                    m.proto,
                    m.has_l4,
                    m.src_port,
                    m.l4_offset,
                    m.payload_offset,
                    m.payload_len
                ),
                (proto, false, 0, 34, 34, 12)
            );
            let f = cat(&[&eth(0x86dd, &[]), &ipv6(proto, &[0xab; 12])]);
            let m = d(&f).unwrap();
            assert_eq!((m.proto, m.has_l4, m.l4_offset, m.payload_len), (proto, false, 54, 12));
        }
        // No Next Header, empty payload.
        let f = cat(&[&eth(0x86dd, &[]), &ipv6(59, &[])]);
        let m = d(&f).unwrap();
        assert_eq!((m.proto, m.has_l4, m.ip_len, m.payload_len), (59, false, 40, 0));
    }

    // ---- fragments --------------------------------------------------------------------

    #[test]
    fn dissect_ipv4_fragments_share_key() {
        let seg = tcp(40000, 443, flags::ACK, 0, &[0x55; 20]);
        let first = cat(&[&eth(0x0800, &[]), &ipv4_full(6, &[], (true, 0), &seg[..24])]);
        let middle = cat(&[&eth(0x0800, &[]), &ipv4_full(6, &[], (true, 24), &seg[24..32])]);
        let last = cat(&[&eth(0x0800, &[]), &ipv4_full(6, &[], (false, 32), &seg[32..])]);
        let mut metas = Vec::new();
        for f in [&first, &middle, &last] {
            let m = d(f).unwrap();
            assert!(m.fragment && !m.has_l4);
            assert_eq!(
                (
                    m.src_port,
                    m.dst_port,
                    m.tcp_flags,
                    m.proto,
                    m.l4_offset,
                    m.payload_offset
                ),
                (0, 0, 0, 6, 34, 34)
            );
            check_invariants(f, &m);
            metas.push(m);
        }
        assert_eq!(metas[0].payload_len, 24);
        for m in &metas {
            assert_eq!(
                (m.src_addr, m.dst_addr, m.proto),
                (metas[0].src_addr, metas[0].dst_addr, 6)
            );
        }
        // A later fragment whose bytes would not even be a TCP header is fine.
        let tiny = cat(&[&eth(0x0800, &[]), &ipv4_full(6, &[], (false, 8), &[1, 2])]);
        assert!(d(&tiny).unwrap().fragment);
        // DF alone is not a fragment.
        assert!(!d(&eth_v4_tcp()).unwrap().fragment);
    }

    #[test]
    fn dissect_ipv6_fragments_share_key() {
        let seg = udp(1000, 2000, &[0x77; 40]);
        let first = cat(&[&eth(0x86dd, &[]), &ipv6(44, &cat(&[&frag6(17, 0, true), &seg[..24]]))]);
        let last = cat(&[&eth(0x86dd, &[]), &ipv6(44, &cat(&[&frag6(17, 24, false), &seg[24..]]))]);
        // With a Destination Options header before the fragment header, and one after it
        // (in the fragmentable part).
        let dst_first = cat(&[
            &eth(0x86dd, &[]),
            &ipv6(60, &cat(&[&ext(44, 8), &frag6(60, 0, true), &ext(17, 8), &seg[..16]])),
        ]);
        let dst_last = cat(&[
            &eth(0x86dd, &[]),
            &ipv6(60, &cat(&[&ext(44, 8), &frag6(60, 24, false), &seg[16..]])),
        ]);
        for (f, proto, l4) in [
            (&first, 17, 62),
            (&last, 17, 62),
            (&dst_first, 60, 70),
            (&dst_last, 60, 70),
        ] {
            let m = d(f).unwrap();
            assert!(m.fragment && !m.has_l4);
            assert_eq!(
                (m.proto, m.src_port, m.dst_port, m.l4_offset, m.payload_offset),
                (proto, 0, 0, l4, l4)
            );
            assert_eq!((m.src_addr, m.dst_addr), (SRC6, DST6));
            check_invariants(f, &m);
        }
        // Truncated fragment header.
        let f = cat(&[&eth(0x86dd, &[]), &ipv6(44, &[17, 0, 0, 1, 0, 0])]);
        assert_eq!(d(&f), Err(Malformed::Ipv6ExtTruncated));
    }

    // ---- IPv6 extension headers --------------------------------------------------------

    #[test]
    fn dissect_ipv6_ext_chains() {
        // HBH + Routing + DestOpts then TCP.
        let exts = cat(&[&ext(43, 8), &ext(60, 24), &ext(6, 16)]);
        let f = cat(&[
            &eth(0x86dd, &[]),
            &ipv6(0, &cat(&[&exts, &tcp(22, 50000, flags::SYN | flags::ACK, 1, b"ssh")])),
        ]);
        let m = d(&f).unwrap();
        assert_eq!((m.l3, m.proto, m.has_l4, m.fragment), (L3::Ipv6, 6, true, false));
        assert_eq!(
            (m.l4_offset, m.payload_offset, m.payload_len),
            (54 + 48, 54 + 48 + 24, 3)
        );
        assert_eq!(
            (m.src_port, m.dst_port, m.tcp_flags, m.ip_len),
            (22, 50000, 0x12, 40 + 48 + 27)
        );
        check_invariants(&f, &m);
        // AH then UDP (AH length in 4-byte units: 24 bytes -> len field 4).
        let f = cat(&[
            &eth(0x86dd, &[]),
            &ipv6(51, &cat(&[&ah(17, 24), &udp(500, 4500, b"ike")])),
        ]);
        let m = d(&f).unwrap();
        assert_eq!(
            (m.proto, m.l4_offset, m.payload_offset, m.src_port),
            (17, 54 + 24, 54 + 32, 500)
        );
        // Mobility, HIP, Shim6 are walked like the others.
        for kind in [ip_proto::MOBILITY, ip_proto::HIP, ip_proto::SHIM6] {
            let f = cat(&[
                &eth(0x86dd, &[]),
                &ipv6(kind, &cat(&[&ext(6, 16), &tcp(1, 2, 0, 0, &[])])),
            ]);
            let m = d(&f).unwrap();
            assert_eq!((m.proto, m.l4_offset, m.has_l4), (6, 70, true));
        }
        // ESP ends the chain without L4.
        let f = cat(&[&eth(0x86dd, &[]), &ipv6(0, &cat(&[&ext(50, 8), &[0xee; 16]]))]);
        let m = d(&f).unwrap();
        assert_eq!((m.proto, m.has_l4, m.l4_offset, m.payload_len), (50, false, 62, 16));
        // Chains of exactly MAX and MAX+1 headers.
        for (count, want_ok) in [(MAX_EXT_HEADERS, true), (MAX_EXT_HEADERS + 1, false)] {
            let mut chain = Vec::new();
            for i in 0..count {
                chain.extend_from_slice(&ext(if i + 1 == count { 17 } else { 60 }, 8));
            }
            chain.extend_from_slice(&udp(1, 2, &[]));
            let f = cat(&[&eth(0x86dd, &[]), &ipv6(60, &chain)]);
            match want_ok {
                true => assert_eq!(d(&f).unwrap().l4_offset as usize, 54 + 8 * count),
                false => assert_eq!(d(&f), Err(Malformed::Ipv6ExtChainTooLong)),
            }
        }
        // Extension header longer than the payload length.
        let f = cat(&[&eth(0x86dd, &[]), &ipv6(0, &cat(&[&[43, 1], &[0u8; 14]]))]);
        assert_eq!(d(&f), Err(Malformed::Ipv6ExtTruncated));
        // Jumbogram (payload length 0 with HBH).
        let mut f = cat(&[&eth(0x86dd, &[]), &ipv6(0, &ext(59, 8))]);
        f[18] = 0;
        f[19] = 0;
        assert_eq!(d(&f), Err(Malformed::Ipv6BadPayloadLength));
        // Bad version, short header.
        let mut f = cat(&[&eth(0x86dd, &[]), &ipv6(59, &[])]);
        f[14] = 0x40;
        assert_eq!(d(&f), Err(Malformed::Ipv6BadVersion));
        assert_eq!(d(&f[..50]), Err(Malformed::Ipv6Truncated));
    }

    fn qinq_v6_frag_frame() -> Vec<u8> {
        let exts = cat(&[&ext(43, 8), &ext(60, 24), &ext(44, 16), &frag6(6, 0, true)]);
        cat(&[
            &eth(0x86dd, &[(0x88a8, 100), (0x8100, 200)]),
            &ipv6(0, &cat(&[&exts, &tcp(1, 2, flags::SYN, 0, b"data")])),
        ])
    }

    #[test]
    fn dissect_eth_qinq_ipv6_ext_every_prefix() {
        let f = qinq_v6_frag_frame();
        let full = d(&f).unwrap();
        assert_eq!(
            (full.vlan, full.l3_offset, full.fragment, full.has_l4, full.proto),
            (100 << 12 | 200, 22, true, false, 6)
        );
        assert_eq!((full.l4_offset, full.payload_len), (62 + 56, 24));
        check_invariants(&f, &full);
        for n in 0..f.len() {
            let want = match n {
                0..=13 => Malformed::EthernetTruncated,
                14..=21 => Malformed::VlanTruncated,
                22..=61 => Malformed::Ipv6Truncated,
                _ => Malformed::Ipv6BadPayloadLength,
            };
            assert_eq!(d(&f[..n]), Err(want), "prefix {n}");
        }
        // Payload length fixed up to each prefix: the extension-header checks are reached.
        for n in 62..=f.len() {
            let mut g = f[..n].to_vec();
            Ipv6Packet::new_unchecked(&mut g[22..]).set_payload_len((n - 62) as u16);
            match n - 62 {
                0 => assert_eq!(d(&g), Err(Malformed::Ipv6BadPayloadLength)),
                1..=55 => assert_eq!(d(&g), Err(Malformed::Ipv6ExtTruncated), "prefix {n}"),
                p => {
                    let m = d(&g).unwrap();
                    assert_eq!((m.fragment, m.has_l4, m.payload_len as usize), (true, false, p - 56));
                }
            }
        }
        // Non-fragmented chain down to UDP: ext, then UDP checks.
        let exts = cat(&[&ext(43, 8), &ext(60, 24), &ext(17, 16)]);
        let f = cat(&[
            &eth(0x86dd, &[(0x8100, 5)]),
            &ipv6(0, &cat(&[&exts, &udp(7, 9, b"xyz")])),
        ]);
        for n in 58..=f.len() {
            let mut g = f[..n].to_vec();
            Ipv6Packet::new_unchecked(&mut g[18..]).set_payload_len((n - 58) as u16);
            let r = d(&g);
            match n - 58 {
                0 => assert_eq!(r, Err(Malformed::Ipv6BadPayloadLength)),
                1..=47 => assert_eq!(r, Err(Malformed::Ipv6ExtTruncated), "prefix {n}"),
                48..=55 => assert_eq!(r, Err(Malformed::UdpTruncated), "prefix {n}"),
                56..=58 => assert_eq!(r, Err(Malformed::UdpBadLength), "prefix {n}"),
                _ => assert_eq!(r.unwrap().payload_len, 3),
            }
        }
    }

    #[test]
    fn dissect_oversized_frame() {
        // A frame above 65535 bytes is dissected over its first 65535 bytes.
        let mut f = eth_v4_tcp();
        f.resize(70_000, 0);
        let m = d(&f).unwrap();
        assert_eq!(m.payload_len, 5);
        let f = cat(&[&eth(0x86dd, &[]), &ipv6(17, &udp(1, 2, &vec![0u8; 65535 - 8]))]);
        assert_eq!(f.len(), 14 + 40 + 65535);
        assert_eq!(d(&f), Err(Malformed::Ipv6BadPayloadLength));
        let mut f = eth(0x0806, &[]);
        f.resize(80_000, 0x41);
        let m = d(&f).unwrap();
        assert_eq!(
            (m.l3, m.payload_offset, m.payload_len),
            (L3::Other(0x0806), 14, 65535 - 14)
        );
    }

    #[test]
    fn dissect_malformed_table_consistent() {
        assert_eq!(Malformed::ALL.len(), Malformed::COUNT);
        let mut names = std::collections::HashSet::new();
        for (i, m) in Malformed::ALL.iter().enumerate() {
            assert_eq!(m.index(), i);
            assert!(names.insert(m.name()));
            assert!(m
                .name()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        }
    }

    // ---- cross-check with etherparse (independent implementation) ----------------------

    fn offset_in(frame: &[u8], sub: &[u8]) -> usize {
        sub.as_ptr() as usize - frame.as_ptr() as usize
    }

    #[test]
    fn dissect_cross_check_etherparse() {
        use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice, VlanId};
        let mac_a = [2, 0, 0, 0, 0, 1];
        let mac_b = [2, 0, 0, 0, 0, 2];
        let payload: Vec<u8> = (0..37u8).collect();
        let mut frames: Vec<Vec<u8>> = Vec::new();
        let mut w = |b: Vec<u8>| frames.push(b);
        let mut v = Vec::new();
        PacketBuilder::ethernet2(mac_a, mac_b)
            .ipv4(SRC4, DST4, 64)
            .tcp(1234, 80, 7, 1000)
            .syn()
            .write(&mut v, &payload)
            .unwrap();
        w(std::mem::take(&mut v));
        PacketBuilder::ethernet2(mac_a, mac_b)
            .single_vlan(VlanId::try_new(77).unwrap())
            .ipv4(SRC4, DST4, 64)
            .udp(53, 5353)
            .write(&mut v, &payload)
            .unwrap();
        w(std::mem::take(&mut v));
        PacketBuilder::ethernet2(mac_a, mac_b)
            .double_vlan(VlanId::try_new(10).unwrap(), VlanId::try_new(20).unwrap())
            .ipv6(SRC6, DST6, 64)
            .udp(123, 123)
            .write(&mut v, &payload)
            .unwrap();
        w(std::mem::take(&mut v));
        PacketBuilder::ethernet2(mac_a, mac_b)
            .ipv6(SRC6, DST6, 64)
            .tcp(443, 40000, 1, 2)
            .ack(5)
            .fin()
            .write(&mut v, &payload)
            .unwrap();
        w(std::mem::take(&mut v));
        PacketBuilder::ethernet2(mac_a, mac_b)
            .ipv4(SRC4, DST4, 64)
            .icmpv4_echo_request(99, 1)
            .write(&mut v, &payload)
            .unwrap();
        w(std::mem::take(&mut v));
        PacketBuilder::ethernet2(mac_a, mac_b)
            .ipv6(SRC6, DST6, 64)
            .icmpv6_echo_reply(98, 1)
            .write(&mut v, &payload)
            .unwrap();
        w(std::mem::take(&mut v));

        for f in &frames {
            let m = d(f).unwrap();
            check_invariants(f, &m);
            let ep = SlicedPacket::from_ethernet(f).unwrap();
            let l3 = m.l3_offset as usize;
            let l4 = m.l4_offset as usize;
            let l4_bytes = &f[l4..l3 + m.ip_len as usize];
            match ep.net.as_ref().unwrap() {
                NetSlice::Ipv4(ip) => {
                    assert_eq!(m.l3, L3::Ipv4);
                    assert_eq!(offset_in(f, ip.header().slice()), l3);
                    assert_eq!(offset_in(f, ip.payload().payload), l4);
                    assert_eq!(ip.payload().payload.len(), m.ip_len as usize - 20);
                    // Our checksum verifiers accept etherparse's checksums.
                    assert!(Ipv4Packet::new_checked(&f[l3..]).unwrap().verify_checksum());
                }
                NetSlice::Ipv6(ip) => {
                    assert_eq!(m.l3, L3::Ipv6);
                    assert_eq!(offset_in(f, ip.payload().payload), l4);
                }
                NetSlice::Arp(_) => unreachable!(),
            }
            let (src, dst) = (m.src_addr, m.dst_addr);
            let s4: [u8; 4] = src[12..].try_into().unwrap();
            let d4: [u8; 4] = dst[12..].try_into().unwrap();
            match ep.transport.as_ref().unwrap() {
                TransportSlice::Tcp(t) => {
                    assert_eq!((m.src_port, m.dst_port), (t.source_port(), t.destination_port()));
                    assert_eq!(offset_in(f, t.payload()), m.payload_offset as usize);
                    assert_eq!(t.payload().len(), m.payload_len as usize);
                    assert_eq!(m.tcp_flags, f[l4 + 13]);
                    let seg = TcpSegment::new_checked(l4_bytes).unwrap();
                    let ok = if m.l3 == L3::Ipv4 {
                        seg.verify_checksum_v4(&s4, &d4)
                    } else {
                        seg.verify_checksum_v6(&src, &dst)
                    };
                    assert!(ok, "tcp checksum");
                    // Recompute after zeroing: same value as etherparse's.
                    let mut g = l4_bytes.to_vec();
                    let mut s = TcpSegment::new_unchecked(&mut g[..]);
                    if m.l3 == L3::Ipv4 {
                        s.fill_checksum_v4(&s4, &d4)
                    } else {
                        s.fill_checksum_v6(&src, &dst)
                    }
                    assert_eq!(g, l4_bytes);
                }
                TransportSlice::Udp(u) => {
                    assert_eq!((m.src_port, m.dst_port), (u.source_port(), u.destination_port()));
                    assert_eq!(offset_in(f, u.payload()), m.payload_offset as usize);
                    assert_eq!(u.payload().len(), m.payload_len as usize);
                    let mut g = l4_bytes.to_vec();
                    let mut p = UdpPacket::new_checked(&mut g[..]).unwrap();
                    if m.l3 == L3::Ipv4 {
                        assert!(p.verify_checksum_v4(&s4, &d4));
                        p.fill_checksum_v4(&s4, &d4);
                    } else {
                        assert!(p.verify_checksum_v6(&src, &dst));
                        p.fill_checksum_v6(&src, &dst);
                    }
                    assert_eq!(g, l4_bytes);
                }
                TransportSlice::Icmpv4(i) => {
                    assert_eq!((m.src_port, m.dst_port), (99, 99));
                    assert_eq!(i.payload().len(), m.payload_len as usize);
                    let mut g = l4_bytes.to_vec();
                    let mut p = Icmpv4Packet::new_checked(&mut g[..]).unwrap();
                    assert!(p.verify_checksum());
                    p.fill_checksum();
                    assert_eq!(g, l4_bytes);
                }
                TransportSlice::Icmpv6(i) => {
                    assert_eq!((m.src_port, m.dst_port), (98, 98));
                    assert_eq!(i.payload().len(), m.payload_len as usize);
                    let mut g = l4_bytes.to_vec();
                    let mut p = Icmpv6Packet::new_checked(&mut g[..]).unwrap();
                    assert!(p.verify_checksum(&src, &dst));
                    p.fill_checksum(&src, &dst);
                    assert_eq!(g, l4_bytes);
                }
                TransportSlice::Igmp(_) => unreachable!(),
            }
        }
        // Incremental update of a rewritten IPv4 address in the TCP checksum matches a recompute.
        let f = &frames[0];
        let mut g = f.clone();
        let old_tcp = TcpSegment::new_unchecked(&g[34..]).checksum();
        let new_src = [172, 16, 0, 9];
        let mut ip = Ipv4Packet::new_unchecked(&mut g[14..]);
        let old_ipck = ip.checksum();
        ip.set_src_addr(new_src);
        ip.set_checksum(checksum::update32(
            old_ipck,
            u32::from_be_bytes(SRC4),
            u32::from_be_bytes(new_src),
        ));
        assert!(ip.verify_checksum());
        let mut t = TcpSegment::new_unchecked(&mut g[34..]);
        t.set_checksum(checksum::update32(
            old_tcp,
            u32::from_be_bytes(SRC4),
            u32::from_be_bytes(new_src),
        ));
        assert!(t.verify_checksum_v4(&new_src, &DST4));
    }

    // ---- fuzz ------------------------------------------------------------------------

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
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn dissect_fuzz_never_panics() {
        let templates: Vec<(LinkType, Vec<u8>)> = vec![
            (LinkType::Ethernet, eth_v4_tcp()),
            (LinkType::Ethernet, qinq_v6_frag_frame()),
            (
                LinkType::Ethernet,
                cat(&[&eth(0x0800, &[(0x8100, 3)]), &ipv4(17, &udp(1, 2, b"abcdef"))]),
            ),
            (
                LinkType::Ethernet,
                cat(&[
                    &eth(0x86dd, &[]),
                    &ipv6(0, &cat(&[&ext(51, 8), &ah(60, 16), &ext(6, 8), &tcp(1, 2, 3, 2, b"p")])),
                ]),
            ),
            (
                LinkType::Ethernet,
                cat(&[&eth(0x86dd, &[]), &ipv6(58, &icmp(128, 5, 5))]),
            ),
            (
                LinkType::Ethernet,
                cat(&[
                    &eth(0x0800, &[]),
                    &ipv4_full(1, &[1, 1, 1, 1, 1, 1, 1, 0], (false, 0), &icmp(8, 1, 2)),
                ]),
            ),
            (
                LinkType::Ethernet,
                cat(&[&eth(0x0800, &[]), &ipv4_full(17, &[], (true, 16), &[0; 16])]),
            ),
            (LinkType::RawIp, ipv4(6, &tcp(5, 6, 2, 0, &[]))),
            (LinkType::RawIp, ipv6(17, &udp(5, 6, &[]))),
            (LinkType::Null, cat(&[&2u32.to_le_bytes(), &ipv4(17, &udp(5, 6, &[1]))])),
            (
                LinkType::Null,
                cat(&[&30u32.to_be_bytes(), &ipv6(6, &tcp(5, 6, 2, 0, &[]))]),
            ),
            (
                LinkType::LinuxSll,
                cat(&[
                    &[0u8; 14],
                    &[0x86, 0xdd],
                    &ipv6(44, &cat(&[&frag6(6, 8, false), &[0; 8]])),
                ]),
            ),
        ];
        let links = [LinkType::Ethernet, LinkType::RawIp, LinkType::Null, LinkType::LinuxSll];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let (mut ok, mut err) = (0usize, 0usize);
        let mut buf = Vec::with_capacity(512);
        for i in 0..100_000 {
            let opts = DissectOptions {
                ipv4_checksum: rng.next() & 1 == 0,
            };
            buf.clear();
            let link;
            if i % 4 == 0 {
                // Fully random bytes, with a plausible ethertype/version half of the time.
                link = links[rng.below(links.len())];
                let len = rng.below(160);
                for _ in 0..len {
                    buf.push(rng.next() as u8);
                }
                if rng.next() & 1 == 0 && buf.len() >= 15 {
                    let t: [u16; 5] = [0x0800, 0x86dd, 0x8100, 0x88a8, 0x9100];
                    buf[12..14].copy_from_slice(&t[rng.below(5)].to_be_bytes());
                    buf[14] = if rng.next() & 1 == 0 { 0x45 } else { 0x60 };
                }
            } else {
                let (l, t) = &templates[rng.below(templates.len())];
                link = *l;
                buf.extend_from_slice(t);
                for _ in 0..1 + rng.below(4) {
                    match rng.below(5) {
                        0 | 1 if !buf.is_empty() => {
                            let at = rng.below(buf.len());
                            buf[at] = rng.next() as u8;
                        }
                        2 if !buf.is_empty() => {
                            let at = rng.below(buf.len());
                            buf[at] ^= 1 << rng.below(8);
                        }
                        3 => {
                            let n = rng.below(buf.len() + 1);
                            buf.truncate(n);
                        }
                        _ => {
                            for _ in 0..rng.below(24) {
                                buf.push(rng.next() as u8);
                            }
                        }
                    }
                }
            }
            match dissect(&buf, link, &opts) {
                Ok(m) => {
                    ok += 1;
                    check_invariants(&buf, &m);
                }
                Err(e) => {
                    err += 1;
                    assert!(Malformed::ALL.contains(&e));
                }
            }
        }
        // Both outcomes are well represented.
        assert!(ok > 10_000 && err > 10_000, "ok {ok} err {err}");
    }
}
