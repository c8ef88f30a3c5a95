//! The `packet` dissector: the capture's framing (Haka's `packet` dissector, the root of
//! every chain). Reads the link header the capture module announced (Ethernet II with up
//! to two VLAN tags, raw IP, DLT_NULL, Linux SLL) and names the ethertype that selects
//! the next dissector.
use super::{Dissector, LayerRegistration, Next, On, PacketView};
use crate::dissect::{LinkType, Malformed, PacketMeta, L3};
use crate::wire::{ethertype, EthernetFrame, VlanTag};

pub const REGISTRATION: LayerRegistration = LayerRegistration { name: "packet", on: &[On::Capture] };

pub struct Packet;

impl Dissector for Packet {
    #[inline(always)]
    fn receive_packet(&self, p: &mut PacketView<'_>) -> Result<Next, Malformed> {
        let frame = p.frame;
        let (t, off, vlan) = match p.link {
            LinkType::Ethernet => {
                let eth = EthernetFrame::new_checked(frame)?;
                vlan_tags(frame, eth.ethertype(), EthernetFrame::<&[u8]>::HEADER_LEN)?
            }
            LinkType::RawIp => {
                let first = *frame.first().ok_or(Malformed::LinkTruncated)?;
                // the version nibble picks the family; anything but 6 goes the IPv4 way
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
                    // an address family below 0x600 selects no ethertype dissector
                    _ => af as u16,
                };
                (t, 4, 0)
            }
            LinkType::LinuxSll => {
                let b = frame.get(..16).ok_or(Malformed::LinkTruncated)?;
                vlan_tags(frame, u16::from_be_bytes([b[14], b[15]]), 16)?
            }
        };
        // What is known of any frame; the network dissector (if one is registered for `t`)
        // overwrites it. Not IP (ARP, LLDP, ...): the frame is accepted as is.
        p.meta = PacketMeta {
            l3: L3::Other(t),
            vlan,
            l3_offset: off as u16,
            l4_offset: off as u16,
            payload_offset: off as u16,
            payload_len: frame.len().saturating_sub(off) as u16,
            ..PacketMeta::NONE
        };
        p.off = off;
        p.data = frame.get(off..).unwrap_or(&[]);
        Ok(Next::EtherType(t))
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
