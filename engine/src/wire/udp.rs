//! UDP header (RFC 768): ports, length, checksum. `new_checked` validates that the length
//! field covers the header and fits in the buffer; `payload()` is clipped to that length.
//! A computed checksum of 0 is sent as 0xffff; a received 0 over IPv4 means "no checksum".

use super::{be16, checksum, ip_proto, put16};
use crate::dissect::Malformed;

/// View over a UDP datagram.
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    pub const HEADER_LEN: usize = 8;

    #[inline(always)]
    pub fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Checks: 8 bytes present (`UdpTruncated`), 8 <= length field <= buffer length
    /// (`UdpBadLength`).
    #[inline(always)]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let b = buffer.as_ref();
        if b.len() < Self::HEADER_LEN {
            return Err(Malformed::UdpTruncated);
        }
        let l = be16(b, 4) as usize;
        if l < Self::HEADER_LEN || l > b.len() {
            return Err(Malformed::UdpBadLength);
        }
        Ok(UdpPacket { buffer })
    }

    #[inline(always)]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline(always)]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }

    #[inline(always)]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// Length field (header + payload).
    #[inline(always)]
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }

    /// True when the length field says there is no payload.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len() as usize <= Self::HEADER_LEN
    }

    #[inline(always)]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 6)
    }

    /// Payload: bytes 8..length.
    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::HEADER_LEN..self.len() as usize]
    }

    /// True when the checksum is right or absent (0) over IPv4.
    #[inline]
    pub fn verify_checksum_v4(&self, src: &[u8; 4], dst: &[u8; 4]) -> bool {
        self.checksum() == 0 || checksum::l4_v4(src, dst, ip_proto::UDP, self.datagram()) == 0
    }

    /// True when the checksum is right over IPv6 (where 0 is not allowed).
    #[inline]
    pub fn verify_checksum_v6(&self, src: &[u8; 16], dst: &[u8; 16]) -> bool {
        self.checksum() != 0 && checksum::l4_v6(src, dst, ip_proto::UDP, self.datagram()) == 0
    }

    #[inline]
    fn datagram(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    #[inline(always)]
    pub fn set_src_port(&mut self, p: u16) {
        put16(self.buffer.as_mut(), 0, p)
    }

    #[inline(always)]
    pub fn set_dst_port(&mut self, p: u16) {
        put16(self.buffer.as_mut(), 2, p)
    }

    #[inline(always)]
    pub fn set_len(&mut self, l: u16) {
        put16(self.buffer.as_mut(), 4, l)
    }

    #[inline(always)]
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.buffer.as_mut(), 6, c)
    }

    /// Recomputes the checksum (over `len()` bytes) with the IPv4 pseudo-header.
    #[inline]
    pub fn fill_checksum_v4(&mut self, src: &[u8; 4], dst: &[u8; 4]) {
        self.set_checksum(0);
        let c = checksum::l4_v4(src, dst, ip_proto::UDP, self.datagram());
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    /// Recomputes the checksum (over `len()` bytes) with the IPv6 pseudo-header.
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: &[u8; 16], dst: &[u8; 16]) {
        self.set_checksum(0);
        let c = checksum::l4_v6(src, dst, ip_proto::UDP, self.datagram());
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    #[inline(always)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let l = self.len() as usize;
        &mut self.buffer.as_mut()[Self::HEADER_LEN..l]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DNS query 192.168.1.10:53000 -> 8.8.8.8:53, "example.com A", checksum field 0
    /// (absent); the computed checksum is compared with a naive word sum.
    fn dns() -> ([u8; 4], [u8; 4], Vec<u8>) {
        let mut v = vec![0xcf, 0x08, 0x00, 0x35, 0x00, 0x25, 0x00, 0x00];
        v.extend_from_slice(&[
            0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, b'e', b'x', b'a', b'm', b'p',
            b'l', b'e', 0x03, b'c', b'o', b'm', 0x00, 0x00, 0x01, 0x00, 0x01,
        ]);
        ([192, 168, 1, 10], [8, 8, 8, 8], v)
    }

    #[test]
    fn wire_udp_fields_and_checksum() {
        let (s, d, mut v) = dns();
        v.extend_from_slice(&[0xee; 3]); // trailing bytes beyond the UDP length
        let mut u = UdpPacket::new_checked(&mut v[..]).unwrap();
        assert_eq!((u.src_port(), u.dst_port(), u.len()), (53000, 53, 37));
        assert_eq!(u.payload().len(), 29);
        assert!(!u.is_empty());
        assert!(u.verify_checksum_v4(&s, &d)); // 0 = absent
        u.fill_checksum_v4(&s, &d);
        assert!(u.verify_checksum_v4(&s, &d));
        let c = u.checksum();
        assert_ne!(c, 0);
        // Independent word sum of pseudo-header + datagram.
        let mut acc: u32 = 0xc0a8 + 0x010a + 0x0808 + 0x0808 + 17 + 37;
        let mut dg = v[..37].to_vec();
        dg[6] = 0;
        dg[7] = 0;
        dg.push(0);
        for w in dg.chunks(2) {
            acc += u16::from_be_bytes([w[0], w[1]]) as u32;
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        assert_eq!(c, !(acc as u16));

        let s6 = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let d6 = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfb];
        let mut u = UdpPacket::new_checked(&mut v[..]).unwrap();
        u.set_checksum(0);
        assert!(!u.verify_checksum_v6(&s6, &d6));
        u.fill_checksum_v6(&s6, &d6);
        assert!(u.verify_checksum_v6(&s6, &d6));
        u.set_src_port(1);
        u.set_dst_port(2);
        u.payload_mut()[0] = 0;
        assert!(!u.verify_checksum_v6(&s6, &d6));
    }

    #[test]
    fn wire_udp_checksum_zero_becomes_ffff() {
        // Find a payload whose checksum computes to 0: adjust a word so the sum is 0xffff.
        let s = [10, 0, 0, 1];
        let d = [10, 0, 0, 2];
        let mut v = [0u8; 10];
        let mut u = UdpPacket::new_unchecked(&mut v[..]);
        u.set_src_port(1000);
        u.set_dst_port(2000);
        u.set_len(10);
        u.fill_checksum_v4(&s, &d);
        let c = u.checksum();
        // Put the checksum value into the payload word: the sum becomes 0xffff -> computes to 0.
        u.payload_mut().copy_from_slice(&c.to_be_bytes());
        u.fill_checksum_v4(&s, &d);
        assert_eq!(u.checksum(), 0xffff);
        assert!(u.verify_checksum_v4(&s, &d));
    }

    #[test]
    fn wire_udp_checked_errors() {
        let (_, _, v) = dns();
        assert_eq!(UdpPacket::new_checked(&v[..7]).unwrap_err(), Malformed::UdpTruncated);
        assert_eq!(UdpPacket::new_checked(&v[..36]).unwrap_err(), Malformed::UdpBadLength);
        let mut w = v.clone();
        w[5] = 7;
        assert_eq!(UdpPacket::new_checked(&w[..]).unwrap_err(), Malformed::UdpBadLength);
        w[5] = 8;
        assert!(UdpPacket::new_checked(&w[..]).unwrap().is_empty());
    }
}
