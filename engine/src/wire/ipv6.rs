//! IPv6 fixed header (RFC 8200, 40 bytes) and extension headers.
//!
//! Extension headers walked by [`walk_ext_headers`]: Hop-by-Hop (0), Routing (43),
//! Fragment (44, fixed 8 bytes), Destination Options (60), AH (51, length (len+2)*4),
//! Mobility (135), HIP (139), Shim6 (140) — all but Fragment and AH have length (len+1)*8.
//! ESP (50), No Next Header (59) and any other value end the chain (the upper layer).

use super::{be16, be32, checksum, ip_proto, put16, put32};
use crate::dissect::Malformed;

/// Maximum number of extension headers walked before `Ipv6ExtChainTooLong`.
pub const MAX_EXT_HEADERS: usize = 8;

/// View over an IPv6 fixed header and its payload.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    pub const HEADER_LEN: usize = 40;

    #[inline(always)]
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Checks, in order: 40 bytes present (`Ipv6Truncated`), version 6 (`Ipv6BadVersion`),
    /// 40 + payload length <= buffer length (`Ipv6BadPayloadLength`). A payload length of 0
    /// with a Hop-by-Hop header (RFC 2675 jumbogram) is rejected as `Ipv6BadPayloadLength`.
    #[inline(always)]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let b = buffer.as_ref();
        if b.len() < Self::HEADER_LEN {
            return Err(Malformed::Ipv6Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(Malformed::Ipv6BadVersion);
        }
        let pl = be16(b, 4) as usize;
        if Self::HEADER_LEN + pl > b.len() || (pl == 0 && b[6] == ip_proto::HOP_BY_HOP) {
            return Err(Malformed::Ipv6BadPayloadLength);
        }
        Ok(Ipv6Packet { buffer })
    }

    #[inline(always)]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    #[inline(always)]
    pub fn traffic_class(&self) -> u8 {
        (be16(self.buffer.as_ref(), 0) >> 4) as u8
    }

    #[inline(always)]
    pub fn flow_label(&self) -> u32 {
        be32(self.buffer.as_ref(), 0) & 0x000f_ffff
    }

    #[inline(always)]
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }

    #[inline(always)]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[6]
    }

    #[inline(always)]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[7]
    }

    #[inline(always)]
    pub fn src_addr(&self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[8..24]);
        a
    }

    #[inline(always)]
    pub fn dst_addr(&self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[24..40]);
        a
    }

    /// Payload (extension headers + upper layer): bytes 40..40+payload_len.
    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::HEADER_LEN..Self::HEADER_LEN + self.payload_len() as usize]
    }

    /// Pseudo-header partial sum for an upper-layer segment of `l4_len` bytes with protocol
    /// `next_header` (the upper-layer value, not the first extension header).
    #[inline(always)]
    pub fn pseudo_header_sum(&self, next_header: u8, l4_len: u32) -> u32 {
        checksum::pseudo_header_v6(&self.src_addr(), &self.dst_addr(), next_header, l4_len)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets version 6, traffic class and flow label.
    #[inline(always)]
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let v = (6u32 << 28) | ((traffic_class as u32) << 20) | (flow_label & 0x000f_ffff);
        put32(self.buffer.as_mut(), 0, v)
    }

    #[inline(always)]
    pub fn set_payload_len(&mut self, len: u16) {
        put16(self.buffer.as_mut(), 4, len)
    }

    #[inline(always)]
    pub fn set_next_header(&mut self, nh: u8) {
        self.buffer.as_mut()[6] = nh;
    }

    #[inline(always)]
    pub fn set_hop_limit(&mut self, h: u8) {
        self.buffer.as_mut()[7] = h;
    }

    #[inline(always)]
    pub fn set_src_addr(&mut self, a: [u8; 16]) {
        self.buffer.as_mut()[8..24].copy_from_slice(&a);
    }

    #[inline(always)]
    pub fn set_dst_addr(&mut self, a: [u8; 16]) {
        self.buffer.as_mut()[24..40].copy_from_slice(&a);
    }

    #[inline(always)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = Self::HEADER_LEN + self.payload_len() as usize;
        &mut self.buffer.as_mut()[Self::HEADER_LEN..end]
    }
}

/// True for the next-header values walked as extension headers.
#[inline(always)]
pub fn is_ext_header(nh: u8) -> bool {
    matches!(
        nh,
        ip_proto::HOP_BY_HOP
            | ip_proto::IPV6_ROUTING
            | ip_proto::IPV6_FRAGMENT
            | ip_proto::IPV6_DEST_OPTS
            | ip_proto::AH
            | ip_proto::MOBILITY
            | ip_proto::HIP
            | ip_proto::SHIM6
    )
}

/// View over a generic extension header (next header, length, data). The protocol of the
/// header itself (`kind`, the previous next-header value) decides how its length is encoded.
#[derive(Debug, Clone)]
pub struct Ipv6ExtHeader<T: AsRef<[u8]>> {
    buffer: T,
    kind: u8,
}

impl<T: AsRef<[u8]>> Ipv6ExtHeader<T> {
    #[inline(always)]
    pub fn new_unchecked(buffer: T, kind: u8) -> Self {
        Ipv6ExtHeader { buffer, kind }
    }

    /// Fails with `Ipv6ExtTruncated` unless the whole header (per its length field) is present.
    #[inline(always)]
    pub fn new_checked(buffer: T, kind: u8) -> Result<Self, Malformed> {
        let b = buffer.as_ref();
        if b.len() < 2 {
            return Err(Malformed::Ipv6ExtTruncated);
        }
        let h = Ipv6ExtHeader { buffer, kind };
        if h.buffer.as_ref().len() < h.header_len() {
            return Err(Malformed::Ipv6ExtTruncated);
        }
        Ok(h)
    }

    /// The protocol number of this header (as given by the previous next-header field).
    #[inline(always)]
    pub fn kind(&self) -> u8 {
        self.kind
    }

    #[inline(always)]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// Raw length byte.
    #[inline(always)]
    pub fn len_field(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    /// Total header length in bytes: 8 for Fragment, (len+2)*4 for AH, (len+1)*8 otherwise.
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        let l = self.len_field() as usize;
        match self.kind {
            ip_proto::IPV6_FRAGMENT => 8,
            ip_proto::AH => (l + 2) * 4,
            _ => (l + 1) * 8,
        }
    }

    /// Bytes after the 2-byte next-header/length prefix, up to the header length.
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[2..self.header_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6ExtHeader<T> {
    #[inline(always)]
    pub fn set_next_header(&mut self, nh: u8) {
        self.buffer.as_mut()[0] = nh;
    }
}

/// View over the 8-byte Fragment header.
#[derive(Debug, Clone)]
pub struct Ipv6FragmentHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6FragmentHeader<T> {
    pub const LEN: usize = 8;

    #[inline(always)]
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv6FragmentHeader { buffer }
    }

    #[inline(always)]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        if buffer.as_ref().len() < Self::LEN {
            return Err(Malformed::Ipv6ExtTruncated);
        }
        Ok(Ipv6FragmentHeader { buffer })
    }

    #[inline(always)]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// Fragment offset in bytes.
    #[inline(always)]
    pub fn frag_offset(&self) -> u16 {
        be16(self.buffer.as_ref(), 2) & 0xfff8
    }

    #[inline(always)]
    pub fn more_frags(&self) -> bool {
        self.buffer.as_ref()[3] & 1 != 0
    }

    #[inline(always)]
    pub fn ident(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6FragmentHeader<T> {
    /// Writes the whole header (reserved fields zeroed). `offset_bytes` must be a multiple of 8.
    #[inline(always)]
    pub fn set(&mut self, next_header: u8, offset_bytes: u16, more_frags: bool, ident: u32) {
        let b = self.buffer.as_mut();
        b[0] = next_header;
        b[1] = 0;
        put16(b, 2, (offset_bytes & 0xfff8) | more_frags as u16);
        put32(b, 4, ident);
    }
}

/// Result of walking an extension-header chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtChain {
    /// Upper-layer protocol: the first next-header value that is not an extension header
    /// (TCP, UDP, ESP, No Next Header...), or, when a Fragment header was met, the next-header
    /// value of the Fragment header (the walk stops there, see `fragment`).
    pub proto: u8,
    /// Offset (from the start of the walked buffer) of the upper-layer header, or of the
    /// bytes following the Fragment header.
    pub offset: usize,
    /// A Fragment header was met. The walk stops right after it, so that every fragment of
    /// a datagram (the first one included) yields the same `proto`.
    pub fragment: bool,
    /// Number of extension headers walked.
    pub count: u8,
}

/// Walks the extension headers starting with next-header value `first` over `payload`
/// (the IPv6 payload, already clipped to the payload length).
/// Errors: `Ipv6ExtTruncated` when a header does not fit, `Ipv6ExtChainTooLong` when more
/// than [`MAX_EXT_HEADERS`] headers would be walked.
#[inline]
pub fn walk_ext_headers(first: u8, payload: &[u8]) -> Result<ExtChain, Malformed> {
    let mut nh = first;
    let mut off = 0usize;
    let mut count = 0usize;
    while is_ext_header(nh) {
        if count == MAX_EXT_HEADERS {
            return Err(Malformed::Ipv6ExtChainTooLong);
        }
        count += 1;
        let rest = payload.get(off..).unwrap_or(&[]);
        if nh == ip_proto::IPV6_FRAGMENT {
            let f = Ipv6FragmentHeader::new_checked(rest)?;
            return Ok(ExtChain {
                proto: f.next_header(),
                offset: off + 8,
                fragment: true,
                count: count as u8,
            });
        }
        let h = Ipv6ExtHeader::new_checked(rest, nh)?;
        nh = h.next_header();
        off += h.header_len();
    }
    Ok(ExtChain {
        proto: nh,
        offset: off,
        fragment: false,
        count: count as u8,
    })
}

impl<'a> Ipv6Packet<&'a [u8]> {
    /// The payload, borrowed for as long as the buffer (the dissector hands it on).
    #[inline(always)]
    pub fn payload_ref(&self) -> &'a [u8] {
        let b: &'a [u8] = self.buffer;
        &b[Self::HEADER_LEN..Self::HEADER_LEN + self.payload_len() as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(payload_len: u16, nh: u8) -> Vec<u8> {
        let mut v = vec![0u8; 40];
        let mut ip = Ipv6Packet::new_unchecked(&mut v[..]);
        ip.set_version_tc_flow(0xb8, 0xabcde);
        ip.set_payload_len(payload_len);
        ip.set_next_header(nh);
        ip.set_hop_limit(64);
        ip.set_src_addr([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        ip.set_dst_addr([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        v
    }

    #[test]
    fn wire_ipv6_fields() {
        let mut v = header(8, 59);
        v.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 0xee, 0xee]);
        let ip = Ipv6Packet::new_checked(&v[..]).unwrap();
        assert_eq!(ip.version(), 6);
        assert_eq!(ip.traffic_class(), 0xb8);
        assert_eq!(ip.flow_label(), 0xabcde);
        assert_eq!(ip.payload_len(), 8);
        assert_eq!(ip.next_header(), 59);
        assert_eq!(ip.hop_limit(), 64);
        assert_eq!(ip.src_addr()[15], 1);
        assert_eq!(ip.dst_addr()[15], 2);
        assert_eq!(ip.payload(), &[1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn wire_ipv6_checked_errors() {
        let v = header(8, 59);
        assert_eq!(Ipv6Packet::new_checked(&v[..39]).unwrap_err(), Malformed::Ipv6Truncated);
        assert_eq!(
            Ipv6Packet::new_checked(&v[..]).unwrap_err(),
            Malformed::Ipv6BadPayloadLength
        );
        let mut w = header(0, 0);
        w.extend_from_slice(&[0; 8]);
        assert_eq!(
            Ipv6Packet::new_checked(&w[..]).unwrap_err(),
            Malformed::Ipv6BadPayloadLength
        );
        let mut w = header(0, 59);
        assert!(Ipv6Packet::new_checked(&w[..]).is_ok());
        w[0] = 0x45;
        assert_eq!(Ipv6Packet::new_checked(&w[..]).unwrap_err(), Malformed::Ipv6BadVersion);
    }

    #[test]
    fn wire_ipv6_ext_walk() {
        // HBH (8) -> Routing (24) -> AH (len 4 -> 24 bytes) -> DestOpts (8) -> TCP.
        let mut p = vec![43, 0, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(&[51, 2, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[0; 16]);
        p.extend_from_slice(&[60, 4, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[0; 16]);
        p.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[0; 20]);
        let c = walk_ext_headers(0, &p).unwrap();
        assert_eq!(
            c,
            ExtChain {
                proto: 6,
                offset: 8 + 24 + 24 + 8,
                fragment: false,
                count: 4
            }
        );
        // Truncated anywhere inside the chain.
        for n in 0..64 {
            assert_eq!(
                walk_ext_headers(0, &p[..n]).unwrap_err(),
                Malformed::Ipv6ExtTruncated,
                "n={n}"
            );
        }
        assert_eq!(walk_ext_headers(6, &[]).unwrap().offset, 0);

        let e = Ipv6ExtHeader::new_checked(&p[8..], ip_proto::IPV6_ROUTING).unwrap();
        assert_eq!(
            (e.kind(), e.next_header(), e.len_field(), e.header_len(), e.data().len()),
            (43, 51, 2, 24, 22)
        );
        let a = Ipv6ExtHeader::new_checked(&p[32..], ip_proto::AH).unwrap();
        assert_eq!(a.header_len(), 24);

        // Fragment header stops the walk.
        let mut f = vec![0u8; 8];
        Ipv6FragmentHeader::new_unchecked(&mut f[..]).set(17, 1232, true, 0xdeadbeef);
        let fh = Ipv6FragmentHeader::new_checked(&f[..]).unwrap();
        assert_eq!(
            (fh.next_header(), fh.frag_offset(), fh.more_frags(), fh.ident()),
            (17, 1232, true, 0xdeadbeef)
        );
        let c = walk_ext_headers(44, &f).unwrap();
        assert_eq!(
            c,
            ExtChain {
                proto: 17,
                offset: 8,
                fragment: true,
                count: 1
            }
        );

        // 8 headers OK, 9 too long.
        let mut chain = Vec::new();
        for _ in 0..7 {
            chain.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
        }
        chain.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(walk_ext_headers(60, &chain).unwrap().count, 8);
        chain[56] = 60;
        chain.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            walk_ext_headers(60, &chain).unwrap_err(),
            Malformed::Ipv6ExtChainTooLong
        );
    }
}
