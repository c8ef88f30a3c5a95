//! TCP header (RFC 9293): ports, sequence/acknowledgement numbers, data offset, flags,
//! window, checksum, urgent pointer, options. The view's buffer must be exactly the TCP
//! segment (clipped to the IP length) for the pseudo-header checksum helpers to be right.

use super::{be16, be32, checksum, ip_proto, put16, put32};
use crate::dissect::Malformed;

/// TCP flag bits (the byte at offset 13).
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// View over a TCP segment.
#[derive(Debug, Clone)]
pub struct TcpSegment<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpSegment<T> {
    pub const MIN_HEADER_LEN: usize = 20;

    #[inline(always)]
    pub fn new_unchecked(buffer: T) -> Self {
        TcpSegment { buffer }
    }

    /// Checks: 20 bytes present (`TcpTruncated`), data offset >= 5 (`TcpBadDataOffset`),
    /// the whole header (data offset * 4) present (`TcpTruncated`).
    #[inline(always)]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let b = buffer.as_ref();
        if b.len() < Self::MIN_HEADER_LEN {
            return Err(Malformed::TcpTruncated);
        }
        let hl = ((b[12] >> 4) as usize) * 4;
        if hl < Self::MIN_HEADER_LEN {
            return Err(Malformed::TcpBadDataOffset);
        }
        if hl > b.len() {
            return Err(Malformed::TcpTruncated);
        }
        Ok(TcpSegment { buffer })
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

    #[inline(always)]
    pub fn seq_number(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }

    #[inline(always)]
    pub fn ack_number(&self) -> u32 {
        be32(self.buffer.as_ref(), 8)
    }

    /// Data offset in 32-bit words.
    #[inline(always)]
    pub fn data_offset(&self) -> u8 {
        self.buffer.as_ref()[12] >> 4
    }

    /// Header length in bytes.
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        (self.data_offset() as usize) * 4
    }

    /// Flags byte (see [`flags`]); the NS bit (byte 12 bit 0) is not included.
    #[inline(always)]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[13]
    }

    #[inline(always)]
    pub fn syn(&self) -> bool {
        self.flags() & flags::SYN != 0
    }

    #[inline(always)]
    pub fn ack(&self) -> bool {
        self.flags() & flags::ACK != 0
    }

    #[inline(always)]
    pub fn fin(&self) -> bool {
        self.flags() & flags::FIN != 0
    }

    #[inline(always)]
    pub fn rst(&self) -> bool {
        self.flags() & flags::RST != 0
    }

    #[inline(always)]
    pub fn window(&self) -> u16 {
        be16(self.buffer.as_ref(), 14)
    }

    #[inline(always)]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 16)
    }

    #[inline(always)]
    pub fn urgent(&self) -> u16 {
        be16(self.buffer.as_ref(), 18)
    }

    #[inline(always)]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::MIN_HEADER_LEN..self.header_len()]
    }

    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// True when the checksum over the IPv4 pseudo-header and the whole segment is right.
    #[inline]
    pub fn verify_checksum_v4(&self, src: &[u8; 4], dst: &[u8; 4]) -> bool {
        checksum::l4_v4(src, dst, ip_proto::TCP, self.buffer.as_ref()) == 0
    }

    /// True when the checksum over the IPv6 pseudo-header and the whole segment is right.
    #[inline]
    pub fn verify_checksum_v6(&self, src: &[u8; 16], dst: &[u8; 16]) -> bool {
        checksum::l4_v6(src, dst, ip_proto::TCP, self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpSegment<T> {
    #[inline(always)]
    pub fn set_src_port(&mut self, p: u16) {
        put16(self.buffer.as_mut(), 0, p)
    }

    #[inline(always)]
    pub fn set_dst_port(&mut self, p: u16) {
        put16(self.buffer.as_mut(), 2, p)
    }

    #[inline(always)]
    pub fn set_seq_number(&mut self, v: u32) {
        put32(self.buffer.as_mut(), 4, v)
    }

    #[inline(always)]
    pub fn set_ack_number(&mut self, v: u32) {
        put32(self.buffer.as_mut(), 8, v)
    }

    /// Sets the data offset (32-bit words), clearing the reserved bits and NS.
    #[inline(always)]
    pub fn set_data_offset(&mut self, words: u8) {
        self.buffer.as_mut()[12] = words << 4;
    }

    #[inline(always)]
    pub fn set_flags(&mut self, f: u8) {
        self.buffer.as_mut()[13] = f;
    }

    #[inline(always)]
    pub fn set_window(&mut self, w: u16) {
        put16(self.buffer.as_mut(), 14, w)
    }

    #[inline(always)]
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.buffer.as_mut(), 16, c)
    }

    #[inline(always)]
    pub fn set_urgent(&mut self, u: u16) {
        put16(self.buffer.as_mut(), 18, u)
    }

    /// Recomputes the checksum with the IPv4 pseudo-header.
    #[inline]
    pub fn fill_checksum_v4(&mut self, src: &[u8; 4], dst: &[u8; 4]) {
        self.set_checksum(0);
        let c = checksum::l4_v4(src, dst, ip_proto::TCP, self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// Recomputes the checksum with the IPv6 pseudo-header.
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: &[u8; 16], dst: &[u8; 16]) {
        self.set_checksum(0);
        let c = checksum::l4_v6(src, dst, ip_proto::TCP, self.buffer.as_ref());
        self.set_checksum(c);
    }

    #[inline(always)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A typical SYN: 192.168.1.2 -> 93.184.216.34, 51996 -> 80 with options (MSS,
    /// SACK-perm, timestamps, NOP, wscale), checksum field zeroed. Checksums are compared with
    /// the naive reference below (and with etherparse in the dissect tests).
    fn syn() -> ([u8; 4], [u8; 4], Vec<u8>) {
        let seg = vec![
            0xcb, 0x1c, 0x00, 0x50, 0x3a, 0x9f, 0x1c, 0x33, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfa, 0xf0, 0x00, 0x00,
            0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x2a, 0x4d, 0x3b, 0x00, 0x00, 0x00, 0x00,
            0x01, 0x03, 0x03, 0x07,
        ];
        ([192, 168, 1, 2], [93, 184, 216, 34], seg)
    }

    /// Straightforward reference: 16-bit sum of pseudo-header + segment.
    fn ref_cksum(src: &[u8], dst: &[u8], proto: u8, seg: &[u8]) -> u16 {
        let mut buf = Vec::new();
        buf.extend_from_slice(src);
        buf.extend_from_slice(dst);
        if src.len() == 4 {
            buf.extend_from_slice(&[0, proto]);
            buf.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        } else {
            buf.extend_from_slice(&(seg.len() as u32).to_be_bytes());
            buf.extend_from_slice(&[0, 0, 0, proto]);
        }
        buf.extend_from_slice(seg);
        if buf.len() % 2 == 1 {
            buf.push(0);
        }
        let mut acc: u32 = 0;
        for w in buf.chunks(2) {
            acc += u16::from_be_bytes([w[0], w[1]]) as u32;
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    #[test]
    fn wire_tcp_fields_and_checksum_v4() {
        let (s, d, mut seg) = syn();
        let expect = ref_cksum(&s, &d, 6, &seg);
        let mut t = TcpSegment::new_checked(&mut seg[..]).unwrap();
        assert_eq!((t.src_port(), t.dst_port()), (51996, 80));
        assert_eq!(t.seq_number(), 0x3a9f1c33);
        assert_eq!(t.ack_number(), 0);
        assert_eq!(t.data_offset(), 10);
        assert_eq!(t.header_len(), 40);
        assert_eq!(t.flags(), flags::SYN);
        assert!(t.syn() && !t.ack() && !t.fin() && !t.rst());
        assert_eq!(t.window(), 64240);
        assert_eq!(t.options().len(), 20);
        assert!(t.payload().is_empty());
        t.fill_checksum_v4(&s, &d);
        assert_eq!(t.checksum(), expect);
        assert!(t.verify_checksum_v4(&s, &d));
        t.set_dst_port(8080);
        assert!(!t.verify_checksum_v4(&s, &d));
        t.fill_checksum_v4(&s, &d);
        assert!(t.verify_checksum_v4(&s, &d));
    }

    #[test]
    fn wire_tcp_checksum_v6_odd_payload() {
        let s = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let d = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        let mut seg = vec![0u8; 20];
        seg.extend_from_slice(b"hello world");
        let mut t = TcpSegment::new_unchecked(&mut seg[..]);
        t.set_src_port(443);
        t.set_dst_port(40000);
        t.set_seq_number(1);
        t.set_ack_number(2);
        t.set_data_offset(5);
        t.set_flags(flags::PSH | flags::ACK);
        t.set_window(1000);
        t.set_urgent(0);
        t.fill_checksum_v6(&s, &d);
        assert!(t.verify_checksum_v6(&s, &d));
        assert_eq!(t.payload(), b"hello world");
        t.payload_mut()[0] = b'H';
        assert!(!t.verify_checksum_v6(&s, &d));
        t.fill_checksum_v6(&s, &d);
        let c = t.checksum();
        t.set_checksum(0);
        assert_eq!(c, ref_cksum(&s, &d, 6, &seg));
    }

    #[test]
    fn wire_tcp_checked_errors() {
        let (_, _, seg) = syn();
        assert_eq!(
            TcpSegment::new_checked(&seg[..19]).unwrap_err(),
            Malformed::TcpTruncated
        );
        assert_eq!(
            TcpSegment::new_checked(&seg[..39]).unwrap_err(),
            Malformed::TcpTruncated
        );
        let mut s2 = seg.clone();
        s2[12] = 0x40;
        assert_eq!(
            TcpSegment::new_checked(&s2[..]).unwrap_err(),
            Malformed::TcpBadDataOffset
        );
    }
}
