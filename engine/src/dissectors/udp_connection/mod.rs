//! `udp_connection`: Haka's UDP connection dissector. A UDP connection has no state of its
//! own beyond what every connection has (its orientation, `flow:drop()`: the connection
//! table's [`crate::conn::Conn`]): the first datagram of a flow opens it, every later one is
//! handed on (to the rules' `receive_data` and the dissector a policy installs, e.g. `dns`).
use super::{ConnectionRegistration, Dissector, Opened, Segment};
use crate::conn::{ConnConfig, ConnContext, ConnCounters, Step};
use crate::wire::ip_proto;

pub const REGISTRATION: ConnectionRegistration =
    ConnectionRegistration { name: "udp_connection", parent: super::Layer::Udp, on: super::On::IpProto(ip_proto::UDP) };

/// The `udp_connection` dissector of one connection.
pub struct UdpConnection;

impl Dissector for UdpConnection {
    /// Every datagram of a flow without a connection opens one; its sender is the client,
    /// as in Haka, unless it comes from a well-known port to an ephemeral one (a response
    /// seen first).
    fn open(seg: &Segment, _cfg: &ConnConfig, n: &mut ConnCounters) -> Opened<UdpConnection> {
        let (src, dst) = seg.ports;
        n.udp_created += 1;
        Opened::New { conn: UdpConnection, sender_is_server: src < 1024 && dst >= 1024, picked_up: false }
    }

    /// Any datagram once the connection is over (dropped, and the drop timed out).
    fn reopened_by(&self, _seg: &Segment) -> bool {
        true
    }

    fn receive_connection(&mut self, _dir: u8, _seg: &Segment, cx: &mut ConnContext<'_>) -> Step {
        Step { live: !cx.dropped, drop_silently: cx.dropped, ..Step::default() }
    }
}
