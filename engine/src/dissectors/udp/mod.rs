//! The `udp` dissector: the UDP header of every datagram (ports, payload bounds from the
//! UDP length). The `udp_connection` over it is [`super::udp_connection`].
use super::{Dissector, LayerRegistration, Next, On, PacketView};
use crate::dissect::Malformed;
use crate::wire::{ip_proto, UdpPacket};

pub const REGISTRATION: LayerRegistration = LayerRegistration { name: "udp", on: &[On::IpProto(ip_proto::UDP)] };

pub struct Udp;

impl Dissector for Udp {
    #[inline(always)]
    fn receive_packet(&self, p: &mut PacketView<'_>) -> Result<Next, Malformed> {
        const HL: usize = UdpPacket::<&[u8]>::HEADER_LEN;
        let u = UdpPacket::new_checked(p.data)?;
        let m = &mut p.meta;
        m.src_port = u.src_port();
        m.dst_port = u.dst_port();
        m.payload_offset = (p.off + HL) as u16;
        m.payload_len = u.len() - HL as u16;
        m.has_l4 = true;
        Ok(Next::End)
    }
}
