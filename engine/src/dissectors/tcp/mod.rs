//! The `tcp` dissector: the TCP header of every segment (ports, flags, payload bounds).
//! The connection itself (`tcp_connection`: state, reassembly, the stream handed to the
//! next dissector) is the `tcp_connection` dissector's ([`super::tcp_connection`]).
use super::{Dissector, LayerRegistration, Next, On, PacketView};
use crate::dissect::Malformed;
use crate::wire::{ip_proto, TcpSegment};

pub const REGISTRATION: LayerRegistration = LayerRegistration { name: "tcp", on: &[On::IpProto(ip_proto::TCP)] };

pub struct Tcp;

impl Dissector for Tcp {
    #[inline(always)]
    fn receive_packet(&self, p: &mut PacketView<'_>) -> Result<Next, Malformed> {
        let t = TcpSegment::new_checked(p.data)?;
        let hl = t.header_len();
        let m = &mut p.meta;
        m.src_port = t.src_port();
        m.dst_port = t.dst_port();
        m.tcp_flags = t.flags();
        m.payload_offset = (p.off + hl) as u16;
        m.payload_len = (p.data.len() - hl) as u16;
        m.has_l4 = true;
        Ok(Next::End)
    }
}
