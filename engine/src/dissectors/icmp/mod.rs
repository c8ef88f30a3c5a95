//! The `icmp` (IPv4) and `icmpv6` dissectors: the 8-byte ICMP header. An echo request and
//! its reply share a flow: the identifier is put in both ports; other types have ports 0.
//! Each answers for its own family only (ICMP's protocol number in an IPv6 packet, or
//! ICMPv6's in an IPv4 one, is not parsed).
use super::{Dissector, LayerRegistration, Next, On, PacketView};
use crate::dissect::{Malformed, L3};
use crate::wire::{ip_proto, Icmpv4Packet, Icmpv6Packet};

pub const REGISTRATION: LayerRegistration = LayerRegistration { name: "icmp", on: &[On::IpProto(ip_proto::ICMP)] };
pub const REGISTRATION_V6: LayerRegistration =
    LayerRegistration { name: "icmpv6", on: &[On::IpProto(ip_proto::ICMPV6)] };

pub struct Icmp;
pub struct Icmpv6;

impl Dissector for Icmp {
    #[inline(always)]
    fn receive_packet(&self, p: &mut PacketView<'_>) -> Result<Next, Malformed> {
        if p.meta.l3 != L3::Ipv4 {
            return Ok(Next::End);
        }
        let m = Icmpv4Packet::new_checked(p.data)?;
        set_header(p, m.is_echo(), m.echo_ident());
        Ok(Next::End)
    }
}

impl Dissector for Icmpv6 {
    #[inline(always)]
    fn receive_packet(&self, p: &mut PacketView<'_>) -> Result<Next, Malformed> {
        if p.meta.l3 != L3::Ipv6 {
            return Ok(Next::End);
        }
        let m = Icmpv6Packet::new_checked(p.data)?;
        set_header(p, m.is_echo(), m.echo_ident());
        Ok(Next::End)
    }
}

/// Same 8-byte layout for both families; only the error and echo types differ.
#[inline(always)]
fn set_header(p: &mut PacketView<'_>, echo: bool, id: u16) {
    let m = &mut p.meta;
    if echo {
        m.src_port = id;
        m.dst_port = id;
    }
    m.payload_offset = (p.off + 8) as u16;
    m.payload_len = (p.data.len() - 8) as u16;
    m.has_l4 = true;
}
