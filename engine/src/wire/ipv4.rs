//! IPv4 header (RFC 791): version/IHL, DSCP/ECN, total length, identification,
//! flags/fragment offset, TTL, protocol, header checksum, addresses, options.
//! `new_checked` validates version, IHL, header fit and total length; bytes beyond the total
//! length (Ethernet padding) are outside `payload()`.

use super::{be16, be32, checksum, put16};
use crate::dissect::Malformed;

/// View over an IPv4 header and its payload.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Length of the header without options.
    pub const MIN_HEADER_LEN: usize = 20;

    #[inline(always)]
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Checks, in order: 20 bytes present (`Ipv4Truncated`), version 4 (`Ipv4BadVersion`),
    /// IHL >= 5 (`Ipv4BadIhl`), the whole header present (`Ipv4Truncated`),
    /// IHL*4 <= total length <= buffer length (`Ipv4BadTotalLength`).
    /// Does not verify the checksum (see [`Ipv4Packet::verify_checksum`]).
    #[inline(always)]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let b = buffer.as_ref();
        if b.len() < Self::MIN_HEADER_LEN {
            return Err(Malformed::Ipv4Truncated);
        }
        if b[0] >> 4 != 4 {
            return Err(Malformed::Ipv4BadVersion);
        }
        let hl = ((b[0] & 0x0f) as usize) * 4;
        if hl < Self::MIN_HEADER_LEN {
            return Err(Malformed::Ipv4BadIhl);
        }
        if b.len() < hl {
            return Err(Malformed::Ipv4Truncated);
        }
        let total = be16(b, 2) as usize;
        if total < hl || total > b.len() {
            return Err(Malformed::Ipv4BadTotalLength);
        }
        Ok(Ipv4Packet { buffer })
    }

    #[inline(always)]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Header length in 32-bit words.
    #[inline(always)]
    pub fn ihl(&self) -> u8 {
        self.buffer.as_ref()[0] & 0x0f
    }

    /// Header length in bytes (IHL * 4).
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        (self.ihl() as usize) * 4
    }

    #[inline(always)]
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[1] >> 2
    }

    #[inline(always)]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[1] & 0x03
    }

    #[inline(always)]
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    #[inline(always)]
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }

    #[inline(always)]
    pub fn dont_frag(&self) -> bool {
        self.buffer.as_ref()[6] & 0x40 != 0
    }

    #[inline(always)]
    pub fn more_frags(&self) -> bool {
        self.buffer.as_ref()[6] & 0x20 != 0
    }

    /// Fragment offset in bytes (the 13-bit field times 8).
    #[inline(always)]
    pub fn frag_offset(&self) -> u16 {
        (be16(self.buffer.as_ref(), 6) & 0x1fff) << 3
    }

    /// True when MF is set or the fragment offset is non-zero.
    #[inline(always)]
    pub fn is_fragment(&self) -> bool {
        be16(self.buffer.as_ref(), 6) & 0x3fff != 0
    }

    #[inline(always)]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[8]
    }

    #[inline(always)]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[9]
    }

    #[inline(always)]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 10)
    }

    #[inline(always)]
    pub fn src_addr(&self) -> [u8; 4] {
        be32(self.buffer.as_ref(), 12).to_be_bytes()
    }

    #[inline(always)]
    pub fn dst_addr(&self) -> [u8; 4] {
        be32(self.buffer.as_ref(), 16).to_be_bytes()
    }

    /// Header options (bytes 20..IHL*4).
    #[inline(always)]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::MIN_HEADER_LEN..self.header_len()]
    }

    /// True when the header checksum is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        let b = self.buffer.as_ref();
        let hl = self.header_len();
        // Constant-length fast path for the usual option-less header (fully unrolled).
        if hl == Self::MIN_HEADER_LEN {
            checksum::verify(&b[..Self::MIN_HEADER_LEN])
        } else {
            checksum::verify(&b[..hl])
        }
    }

    /// Payload: bytes IHL*4..total_len (Ethernet padding excluded).
    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..self.total_len() as usize]
    }

    /// IPv4 pseudo-header partial sum for this packet's payload (protocol, addresses and
    /// payload length from the header), to combine with the L4 sum.
    #[inline(always)]
    pub fn pseudo_header_sum(&self) -> u32 {
        let l4_len = (self.total_len() as usize).saturating_sub(self.header_len()) as u16;
        checksum::pseudo_header_v4(&self.src_addr(), &self.dst_addr(), self.protocol(), l4_len)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets version 4 and the IHL (in 32-bit words).
    #[inline(always)]
    pub fn set_version_ihl(&mut self, ihl: u8) {
        self.buffer.as_mut()[0] = 0x40 | (ihl & 0x0f);
    }

    #[inline(always)]
    pub fn set_dscp_ecn(&mut self, dscp: u8, ecn: u8) {
        self.buffer.as_mut()[1] = (dscp << 2) | (ecn & 0x03);
    }

    #[inline(always)]
    pub fn set_total_len(&mut self, len: u16) {
        put16(self.buffer.as_mut(), 2, len)
    }

    #[inline(always)]
    pub fn set_ident(&mut self, id: u16) {
        put16(self.buffer.as_mut(), 4, id)
    }

    /// Sets DF, MF and the fragment offset (in bytes; must be a multiple of 8).
    #[inline(always)]
    pub fn set_frag(&mut self, dont_frag: bool, more_frags: bool, offset_bytes: u16) {
        let v = ((dont_frag as u16) << 14) | ((more_frags as u16) << 13) | ((offset_bytes >> 3) & 0x1fff);
        put16(self.buffer.as_mut(), 6, v)
    }

    #[inline(always)]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[8] = ttl;
    }

    #[inline(always)]
    pub fn set_protocol(&mut self, p: u8) {
        self.buffer.as_mut()[9] = p;
    }

    #[inline(always)]
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.buffer.as_mut(), 10, c)
    }

    #[inline(always)]
    pub fn set_src_addr(&mut self, a: [u8; 4]) {
        self.buffer.as_mut()[12..16].copy_from_slice(&a);
    }

    #[inline(always)]
    pub fn set_dst_addr(&mut self, a: [u8; 4]) {
        self.buffer.as_mut()[16..20].copy_from_slice(&a);
    }

    /// Recomputes and stores the header checksum.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let c = checksum::compute(&self.buffer.as_ref()[..hl]);
        self.set_checksum(c);
    }

    /// Decrements the TTL and patches the checksum incrementally (RFC 1624).
    /// Returns the new TTL (saturates at 0).
    #[inline]
    pub fn decrement_ttl(&mut self) -> u8 {
        let old = be16(self.buffer.as_ref(), 8);
        let ttl = self.ttl().saturating_sub(1);
        self.set_ttl(ttl);
        let new = be16(self.buffer.as_ref(), 8);
        let c = checksum::update16(self.checksum(), old, new);
        self.set_checksum(c);
        ttl
    }

    #[inline(always)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, tl) = (self.header_len(), self.total_len() as usize);
        &mut self.buffer.as_mut()[hl..tl]
    }
}

impl<'a> Ipv4Packet<&'a [u8]> {
    /// The payload, borrowed for as long as the buffer (the dissector hands it on).
    #[inline(always)]
    pub fn payload_ref(&self) -> &'a [u8] {
        let b: &'a [u8] = self.buffer;
        &b[self.header_len()..self.total_len() as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Well-known header (Wikipedia "IPv4 header checksum" example), checksum 0xb861.
    const HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
        0x00, 0xc7,
    ];

    fn packet() -> Vec<u8> {
        let mut v = HDR.to_vec();
        v.resize(0x73, 0xaa);
        v
    }

    #[test]
    fn wire_ipv4_known_checksum() {
        let p = packet();
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.checksum(), 0xb861);
        assert_eq!(ip.version(), 4);
        assert_eq!(ip.header_len(), 20);
        assert_eq!(ip.total_len(), 0x73);
        assert!(ip.dont_frag());
        assert!(!ip.more_frags());
        assert!(!ip.is_fragment());
        assert_eq!(ip.frag_offset(), 0);
        assert_eq!(ip.ttl(), 64);
        assert_eq!(ip.protocol(), 17);
        assert_eq!(ip.src_addr(), [192, 168, 0, 1]);
        assert_eq!(ip.dst_addr(), [192, 168, 0, 199]);
        assert_eq!(ip.payload().len(), 0x73 - 20);
        assert!(ip.options().is_empty());

        let mut q = p.clone();
        let mut ip = Ipv4Packet::new_unchecked(&mut q[..]);
        ip.set_checksum(0);
        ip.fill_checksum();
        assert_eq!(ip.checksum(), 0xb861);
        ip.set_ttl(1);
        assert!(!ip.verify_checksum());
        ip.fill_checksum();
        assert!(ip.verify_checksum());
    }

    #[test]
    fn wire_ipv4_setters_and_ttl() {
        let mut p = packet();
        let mut ip = Ipv4Packet::new_checked(&mut p[..]).unwrap();
        for _ in 0..70 {
            ip.decrement_ttl();
            assert!(ip.verify_checksum());
        }
        assert_eq!(ip.ttl(), 0);
        ip.set_src_addr([10, 0, 0, 1]);
        ip.set_dst_addr([10, 0, 0, 2]);
        ip.set_ident(0xbeef);
        ip.set_frag(false, true, 1480);
        ip.set_dscp_ecn(46, 1);
        ip.set_protocol(6);
        ip.fill_checksum();
        assert!(ip.verify_checksum());
        assert_eq!(ip.src_addr(), [10, 0, 0, 1]);
        assert_eq!(ip.dst_addr(), [10, 0, 0, 2]);
        assert_eq!(ip.ident(), 0xbeef);
        assert!(ip.more_frags() && !ip.dont_frag() && ip.is_fragment());
        assert_eq!(ip.frag_offset(), 1480);
        assert_eq!((ip.dscp(), ip.ecn()), (46, 1));
        ip.payload_mut()[0] = 1;
        assert_eq!(ip.payload()[0], 1);
    }

    #[test]
    fn wire_ipv4_checked_errors() {
        let p = packet();
        assert_eq!(Ipv4Packet::new_checked(&p[..19]).unwrap_err(), Malformed::Ipv4Truncated);
        assert_eq!(
            Ipv4Packet::new_checked(&p[..0x72]).unwrap_err(),
            Malformed::Ipv4BadTotalLength
        );
        let mut q = p.clone();
        q[0] = 0x65;
        assert_eq!(Ipv4Packet::new_checked(&q[..]).unwrap_err(), Malformed::Ipv4BadVersion);
        q[0] = 0x44;
        assert_eq!(Ipv4Packet::new_checked(&q[..]).unwrap_err(), Malformed::Ipv4BadIhl);
        q[0] = 0x4f;
        assert_eq!(Ipv4Packet::new_checked(&q[..40]).unwrap_err(), Malformed::Ipv4Truncated);
        q[0] = 0x46;
        q[2] = 0;
        q[3] = 23;
        assert_eq!(
            Ipv4Packet::new_checked(&q[..]).unwrap_err(),
            Malformed::Ipv4BadTotalLength
        );
        q[3] = 24;
        let ip = Ipv4Packet::new_checked(&q[..]).unwrap();
        assert_eq!(ip.options().len(), 4);
        assert!(ip.payload().is_empty());
        // Padding beyond total length is fine and excluded from the payload.
        let mut r = p.clone();
        r.extend_from_slice(&[0; 10]);
        assert_eq!(Ipv4Packet::new_checked(&r[..]).unwrap().payload().len(), 0x73 - 20);
    }
}
