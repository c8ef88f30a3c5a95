//! The `ipv6` dissector: the IPv6 header and its extension headers (hop-by-hop, routing,
//! destination options, AH; at most `MAX_EXT_HEADERS`). The walk stops at a Fragment
//! header (the chain stops: every fragment has the same address-only flow key) or at the
//! upper-layer header, whose next-header value selects the next dissector.
use super::{Dissector, LayerRegistration, Next, On, PacketView};
use crate::dissect::{Malformed, PacketMeta, L3};
use crate::wire::ipv6::{is_ext_header, walk_ext_headers, ExtChain};
use crate::wire::{ethertype, Ipv6Packet};

pub const REGISTRATION: LayerRegistration = LayerRegistration { name: "ipv6", on: &[On::EtherType(ethertype::IPV6)] };

pub struct Ipv6;

impl Dissector for Ipv6 {
    #[inline(always)]
    fn receive_packet(&self, p: &mut PacketView<'_>) -> Result<Next, Malformed> {
        const HL: usize = Ipv6Packet::<&[u8]>::HEADER_LEN;
        let l3 = p.off;
        let ip = Ipv6Packet::new_checked(p.data)?;
        let payload = ip.payload_ref();
        let nh = ip.next_header();
        // most packets have no extension header: no walk
        let chain = if is_ext_header(nh) {
            walk_ext_headers(nh, payload)?
        } else {
            ExtChain { proto: nh, offset: 0, fragment: false, count: 0 }
        };
        let upper = payload.get(chain.offset..).unwrap_or(&[]);
        let l4 = l3 + HL + chain.offset;
        p.meta = PacketMeta {
            l3: L3::Ipv6,
            vlan: p.meta.vlan,
            l3_offset: l3 as u16,
            l4_offset: l4 as u16,
            payload_offset: l4 as u16,
            payload_len: upper.len() as u16,
            proto: chain.proto,
            has_l4: false,
            fragment: chain.fragment,
            src_addr: ip.src_addr(),
            dst_addr: ip.dst_addr(),
            src_port: 0,
            dst_port: 0,
            tcp_flags: 0,
            ip_len: (HL + payload.len()) as u16,
        };
        p.off = l4;
        p.data = upper;
        Ok(if p.meta.fragment { Next::End } else { Next::IpProto(chain.proto) })
    }
}
