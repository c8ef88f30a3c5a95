//! L2-L4 dissection: Ethernet, 802.1Q/QinQ, IPv4, IPv6 (+extension headers),
//! TCP, UDP, ICMP, ICMPv6. Zero-copy over the frame bytes; the result is a
//! small `Copy` struct so the hot path never allocates.
//!
//! CONTRACT (shared with flow/, pipeline.rs, worker.rs):
//! `dissect(frame, link, opts) -> Result<PacketMeta, Malformed>`.

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

/// Dissects one frame. Never panics, whatever the bytes.
pub fn dissect(frame: &[u8], link: LinkType, opts: &DissectOptions) -> Result<PacketMeta, Malformed> {
    let _ = (frame, link, opts);
    todo!("helper: implement over crate::wire views")
}
