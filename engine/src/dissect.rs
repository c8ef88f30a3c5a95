//! L2-L4 dissection: Ethernet, 802.1Q/QinQ, IPv4, IPv6 (+extension headers),
//! TCP, UDP, ICMP, ICMPv6. Zero-copy over the frame bytes; the result is a
//! small `Copy` struct so the hot path never allocates.
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

use crate::wire::ipv6::walk_ext_headers;
use crate::wire::{
    ethertype, ip_proto, EthernetFrame, Icmpv4Packet, Icmpv6Packet, Ipv4Packet, Ipv6Packet, TcpSegment, UdpPacket,
    VlanTag,
};

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

/// Dissects one frame. Never panics, whatever the bytes; never allocates.
pub fn dissect(frame: &[u8], link: LinkType, opts: &DissectOptions) -> Result<PacketMeta, Malformed> {
    // Offsets are u16: never look past 65535 bytes.
    let frame = frame.get(..u16::MAX as usize).unwrap_or(frame);
    let (ethertype, l3_off, vlan) = match link {
        LinkType::Ethernet => {
            let eth = EthernetFrame::new_checked(frame)?;
            vlan_tags(frame, eth.ethertype(), EthernetFrame::<&[u8]>::HEADER_LEN)?
        }
        LinkType::RawIp => {
            let first = *frame.first().ok_or(Malformed::LinkTruncated)?;
            (if first >> 4 == 6 { ethertype::IPV6 } else { ethertype::IPV4 }, 0, 0)
        }
        LinkType::Null => {
            let b = frame.get(..4).ok_or(Malformed::LinkTruncated)?;
            let le = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            // Written in the capturing host's order: a value above 0xffff means the other order.
            let af = if le > 0xffff { le.swap_bytes() } else { le };
            let t = match af {
                2 => ethertype::IPV4,
                24 | 28 | 30 => ethertype::IPV6,
                _ => return Ok(non_ip(frame, af as u16, 4, 0)),
            };
            (t, 4, 0)
        }
        LinkType::LinuxSll => {
            let b = frame.get(..16).ok_or(Malformed::LinkTruncated)?;
            vlan_tags(frame, u16::from_be_bytes([b[14], b[15]]), 16)?
        }
    };
    match ethertype {
        ethertype::IPV4 => dissect_ipv4(frame, l3_off, vlan, opts),
        ethertype::IPV6 => dissect_ipv6(frame, l3_off, vlan),
        other => Ok(non_ip(frame, other, l3_off, vlan)),
    }
}

/// Skips up to two VLAN tags starting at the ethertype `t` whose tag would begin at `off`.
/// Returns (inner ethertype, L3 offset, vlan value).
#[inline(always)]
fn vlan_tags(frame: &[u8], t: u16, off: usize) -> Result<(u16, usize, u32), Malformed> {
    if !ethertype::is_vlan(t) {
        return Ok((t, off, 0));
    }
    let outer = VlanTag::new_checked(frame.get(off..).unwrap_or(&[]))?;
    let (t, off, vid) = (outer.ethertype(), off + 4, outer.vid() as u32);
    if !ethertype::is_vlan(t) {
        return Ok((t, off, vid));
    }
    let inner = VlanTag::new_checked(frame.get(off..).unwrap_or(&[]))?;
    let (t, off, vlan) = (inner.ethertype(), off + 4, vid << 12 | inner.vid() as u32);
    if ethertype::is_vlan(t) {
        return Err(Malformed::VlanTooDeep);
    }
    Ok((t, off, vlan))
}

#[inline(always)]
fn non_ip(frame: &[u8], ethertype: u16, l3_off: usize, vlan: u32) -> PacketMeta {
    let off = l3_off as u16;
    PacketMeta {
        l3: L3::Other(ethertype),
        vlan,
        l3_offset: off,
        l4_offset: off,
        payload_offset: off,
        payload_len: frame.len().saturating_sub(l3_off) as u16,
        proto: 0,
        has_l4: false,
        fragment: false,
        src_addr: [0; 16],
        dst_addr: [0; 16],
        src_port: 0,
        dst_port: 0,
        tcp_flags: 0,
        ip_len: 0,
    }
}

#[inline(always)]
fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3]]
}

#[inline(always)]
fn dissect_ipv4(frame: &[u8], l3: usize, vlan: u32, opts: &DissectOptions) -> Result<PacketMeta, Malformed> {
    let ip = Ipv4Packet::new_checked(frame.get(l3..).unwrap_or(&[]))?;
    if opts.ipv4_checksum && !ip.verify_checksum() {
        return Err(Malformed::Ipv4BadChecksum);
    }
    let hl = ip.header_len();
    let total = ip.total_len() as usize;
    let l4_off = l3 + hl;
    let mut meta = PacketMeta {
        l3: L3::Ipv4,
        vlan,
        l3_offset: l3 as u16,
        l4_offset: l4_off as u16,
        payload_offset: l4_off as u16,
        payload_len: (total - hl) as u16,
        proto: ip.protocol(),
        has_l4: false,
        fragment: ip.is_fragment(),
        src_addr: v4_mapped(ip.src_addr()),
        dst_addr: v4_mapped(ip.dst_addr()),
        src_port: 0,
        dst_port: 0,
        tcp_flags: 0,
        ip_len: total as u16,
    };
    if meta.fragment {
        return Ok(meta);
    }
    l4(&mut meta, ip.payload(), l4_off, ip_proto::ICMP)?;
    Ok(meta)
}

#[inline(always)]
fn dissect_ipv6(frame: &[u8], l3: usize, vlan: u32) -> Result<PacketMeta, Malformed> {
    let ip = Ipv6Packet::new_checked(frame.get(l3..).unwrap_or(&[]))?;
    let payload = ip.payload();
    let chain = walk_ext_headers(ip.next_header(), payload)?;
    let upper = payload.get(chain.offset..).unwrap_or(&[]);
    let l4_off = l3 + Ipv6Packet::<&[u8]>::HEADER_LEN + chain.offset;
    let mut meta = PacketMeta {
        l3: L3::Ipv6,
        vlan,
        l3_offset: l3 as u16,
        l4_offset: l4_off as u16,
        payload_offset: l4_off as u16,
        payload_len: upper.len() as u16,
        proto: chain.proto,
        has_l4: false,
        fragment: chain.fragment,
        src_addr: ip.src_addr(),
        dst_addr: ip.dst_addr(),
        src_port: 0,
        dst_port: 0,
        tcp_flags: 0,
        ip_len: (Ipv6Packet::<&[u8]>::HEADER_LEN + payload.len()) as u16,
    };
    if meta.fragment {
        return Ok(meta);
    }
    l4(&mut meta, upper, l4_off, ip_proto::ICMPV6)?;
    Ok(meta)
}

/// Parses the L4 header of `meta.proto` in `seg` (the L4 bytes, clipped to the IP length),
/// which starts at frame offset `off`. `icmp` is the ICMP protocol number of this IP family.
#[inline(always)]
fn l4(meta: &mut PacketMeta, seg: &[u8], off: usize, icmp: u8) -> Result<(), Malformed> {
    match meta.proto {
        ip_proto::TCP => {
            let t = TcpSegment::new_checked(seg)?;
            let hl = t.header_len();
            meta.src_port = t.src_port();
            meta.dst_port = t.dst_port();
            meta.tcp_flags = t.flags();
            meta.payload_offset = (off + hl) as u16;
            meta.payload_len = (seg.len() - hl) as u16;
        }
        ip_proto::UDP => {
            let u = UdpPacket::new_checked(seg)?;
            meta.src_port = u.src_port();
            meta.dst_port = u.dst_port();
            meta.payload_offset = (off + UdpPacket::<&[u8]>::HEADER_LEN) as u16;
            meta.payload_len = u.len() - UdpPacket::<&[u8]>::HEADER_LEN as u16;
        }
        p if p == icmp => {
            // Same 8-byte layout for both families; only the error and echo types differ.
            let (echo, id) = if icmp == ip_proto::ICMP {
                let m = Icmpv4Packet::new_checked(seg)?;
                (m.is_echo(), m.echo_ident())
            } else {
                let m = Icmpv6Packet::new_checked(seg)?;
                (m.is_echo(), m.echo_ident())
            };
            if echo {
                meta.src_port = id;
                meta.dst_port = id;
            }
            meta.payload_offset = (off + 8) as u16;
            meta.payload_len = (seg.len() - 8) as u16;
        }
        _ => return Ok(()),
    }
    meta.has_l4 = true;
    Ok(())
}
