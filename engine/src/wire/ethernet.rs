//! Ethernet II frame header (14 bytes: dst MAC, src MAC, ethertype) and the 4-byte VLAN
//! tag (802.1Q 0x8100, 802.1ad 0x88a8, legacy QinQ 0x9100): TCI (PCP/DEI/VID) followed by
//! the encapsulated ethertype.

use super::{be16, put16};
use crate::dissect::Malformed;

/// Ethertype values.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    pub const IPV6: u16 = 0x86dd;
    pub const QINQ: u16 = 0x88a8;
    pub const QINQ_9100: u16 = 0x9100;
    pub const LLDP: u16 = 0x88cc;

    /// True for the TPIDs of a VLAN tag (802.1Q, 802.1ad, 0x9100).
    #[inline(always)]
    pub fn is_vlan(t: u16) -> bool {
        t == VLAN || t == QINQ || t == QINQ_9100
    }
}

/// View over an Ethernet II header and its payload.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    pub const HEADER_LEN: usize = 14;

    #[inline(always)]
    pub fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Fails with `EthernetTruncated` when shorter than 14 bytes.
    #[inline(always)]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        if buffer.as_ref().len() < Self::HEADER_LEN {
            return Err(Malformed::EthernetTruncated);
        }
        Ok(EthernetFrame { buffer })
    }

    #[inline(always)]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline(always)]
    pub fn dst_addr(&self) -> [u8; 6] {
        let b = self.buffer.as_ref();
        [b[0], b[1], b[2], b[3], b[4], b[5]]
    }

    #[inline(always)]
    pub fn src_addr(&self) -> [u8; 6] {
        let b = self.buffer.as_ref();
        [b[6], b[7], b[8], b[9], b[10], b[11]]
    }

    #[inline(always)]
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), 12)
    }

    /// Bytes after the 14-byte header (the first VLAN tag, if any, starts here).
    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    #[inline(always)]
    pub fn set_dst_addr(&mut self, a: [u8; 6]) {
        self.buffer.as_mut()[0..6].copy_from_slice(&a);
    }

    #[inline(always)]
    pub fn set_src_addr(&mut self, a: [u8; 6]) {
        self.buffer.as_mut()[6..12].copy_from_slice(&a);
    }

    #[inline(always)]
    pub fn set_ethertype(&mut self, t: u16) {
        put16(self.buffer.as_mut(), 12, t)
    }

    #[inline(always)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[Self::HEADER_LEN..]
    }
}

/// View over one 4-byte VLAN tag, positioned just after the TPID
/// (i.e. TCI at bytes 0..2, encapsulated ethertype at 2..4).
#[derive(Debug, Clone)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    pub const LEN: usize = 4;

    #[inline(always)]
    pub fn new_unchecked(buffer: T) -> Self {
        VlanTag { buffer }
    }

    /// Fails with `VlanTruncated` when shorter than 4 bytes.
    #[inline(always)]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        if buffer.as_ref().len() < Self::LEN {
            return Err(Malformed::VlanTruncated);
        }
        Ok(VlanTag { buffer })
    }

    #[inline(always)]
    pub fn tci(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }

    /// Priority code point (3 bits).
    #[inline(always)]
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// Drop eligible indicator.
    #[inline(always)]
    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// 12-bit VLAN identifier.
    #[inline(always)]
    pub fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// Ethertype of what follows the tag.
    #[inline(always)]
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    #[inline(always)]
    pub fn set_tci(&mut self, tci: u16) {
        put16(self.buffer.as_mut(), 0, tci)
    }

    /// Sets the 12-bit VID, keeping PCP/DEI.
    #[inline(always)]
    pub fn set_vid(&mut self, vid: u16) {
        let tci = (self.tci() & 0xf000) | (vid & 0x0fff);
        self.set_tci(tci)
    }

    #[inline(always)]
    pub fn set_ethertype(&mut self, t: u16) {
        put16(self.buffer.as_mut(), 2, t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_ethernet_fields() {
        let mut f = [
            1, 2, 3, 4, 5, 6, 0xa, 0xb, 0xc, 0xd, 0xe, 0xf, 0x81, 0x00, 0xe0, 0x2a, 0x08, 0x00, 0x45,
        ];
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(e.dst_addr(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(e.src_addr(), [0xa, 0xb, 0xc, 0xd, 0xe, 0xf]);
        assert_eq!(e.ethertype(), ethertype::VLAN);
        assert!(ethertype::is_vlan(e.ethertype()));
        let t = VlanTag::new_checked(e.payload()).unwrap();
        assert_eq!(t.pcp(), 7);
        assert!(!t.dei());
        assert_eq!(t.vid(), 42);
        assert_eq!(t.ethertype(), ethertype::IPV4);

        let mut e = EthernetFrame::new_unchecked(&mut f[..]);
        e.set_dst_addr([9; 6]);
        e.set_src_addr([8; 6]);
        e.set_ethertype(ethertype::QINQ);
        let mut t = VlanTag::new_unchecked(e.payload_mut());
        t.set_vid(0xfff);
        t.set_ethertype(ethertype::IPV6);
        assert_eq!(t.pcp(), 7);
        assert_eq!(t.vid(), 0xfff);
        assert_eq!(
            &f[..18],
            &[9, 9, 9, 9, 9, 9, 8, 8, 8, 8, 8, 8, 0x88, 0xa8, 0xef, 0xff, 0x86, 0xdd]
        );
    }

    #[test]
    fn wire_ethernet_truncated() {
        let f = [0u8; 13];
        assert_eq!(
            EthernetFrame::new_checked(&f[..]).unwrap_err(),
            Malformed::EthernetTruncated
        );
        assert_eq!(VlanTag::new_checked(&f[..3]).unwrap_err(), Malformed::VlanTruncated);
        assert!(!ethertype::is_vlan(ethertype::IPV4));
        assert!(ethertype::is_vlan(0x9100));
    }
}
