//! The `ipv4` dissector: the IPv4 header (checksum checked unless the NIC did it). Every
//! fragment, the first included, stops the chain here (the flow key is then address-only,
//! the same for every fragment of a datagram); the protocol selects the next dissector.
use super::{Dissector, LayerRegistration, Next, On, PacketView};
use crate::dissect::{Malformed, PacketMeta, L3};
use crate::wire::{ethertype, Ipv4Packet};

pub const REGISTRATION: LayerRegistration = LayerRegistration { name: "ipv4", on: &[On::EtherType(ethertype::IPV4)] };

pub struct Ipv4;

impl Dissector for Ipv4 {
    #[inline(always)]
    fn receive_packet(&self, p: &mut PacketView<'_>) -> Result<Next, Malformed> {
        let l3 = p.off;
        let ip = Ipv4Packet::new_checked(p.data)?;
        if p.opts.ipv4_checksum && !ip.verify_checksum() {
            return Err(Malformed::Ipv4BadChecksum);
        }
        let hl = ip.header_len();
        let total = ip.total_len() as usize;
        let l4 = l3 + hl;
        p.meta = PacketMeta {
            l3: L3::Ipv4,
            vlan: p.meta.vlan,
            l3_offset: l3 as u16,
            l4_offset: l4 as u16,
            payload_offset: l4 as u16,
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
        p.off = l4;
        p.data = ip.payload_ref();
        Ok(if p.meta.fragment { Next::End } else { Next::IpProto(p.meta.proto) })
    }
}

/// `::ffff:a.b.c.d`: one key type covers both families.
#[inline(always)]
pub fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    // One 16-byte value rather than byte stores (cheaper to build and to read back).
    (0xffff_0000_0000u128 | u32::from_be_bytes(a) as u128).to_be_bytes()
}
