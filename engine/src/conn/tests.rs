use super::*;
use crate::dissectors::tcp_connection::{ACK, FIN, RST, SYN};

/// The packets of the tests, by protocol, as the stateful stage hands them on.
impl ConnTable {
    fn tcp_packet(&mut self, id: FlowId, created: bool, dir: Direction, t: &TcpInfo, ports: (u16, u16)) -> Step {
        self.receive(ConnectionKind::Tcp, id, created, dir, &Segment { ports, tcp: *t })
    }

    fn udp_packet(&mut self, id: FlowId, created: bool, dir: Direction, ports: (u16, u16)) -> Step {
        self.receive(ConnectionKind::Udp, id, created, dir, &Segment { ports, tcp: TcpInfo::default() })
    }
}

const UP: Direction = Direction::Up;
const DOWN: Direction = Direction::Down;

fn t(flags: u8, seq: u32, ack: u32, len: u32) -> TcpInfo {
    TcpInfo { flags, seq, ack, payload_len: len }
}

fn table(policy: NoConnection) -> ConnTable {
    ConnTable::new(ConnConfig { no_connection_found: policy, ..ConnConfig::default() }, 16)
}

#[test]
fn handshake_data_and_close_walk_haka_states() {
    let mut ct = table(NoConnection::Pickup);
    let s = ct.tcp_packet(1, true, UP, &t(SYN, 100, 0, 0), (40000, 80));
    assert!(s.created && s.live && s.dir == 0);
    assert_eq!(ct.get(1).unwrap().state(), TcpState::SynSent);
    ct.tcp_packet(1, false, DOWN, &t(SYN | ACK, 500, 101, 0), (80, 40000));
    assert_eq!(ct.get(1).unwrap().state(), TcpState::SynReceived);
    ct.tcp_packet(1, false, UP, &t(ACK, 101, 501, 0), (40000, 80));
    assert_eq!(ct.get(1).unwrap().state(), TcpState::Established);
    // data both ways, in order: no copy
    let s = ct.tcp_packet(1, false, UP, &t(ACK, 101, 501, 5), (40000, 80));
    assert!(s.live && !s.ended);
    let d = ct.tcp_data(1, 0, &t(ACK, 101, 501, 5), b"hello");
    assert_eq!((d.delivered, d.in_place), (5, true));
    let d = ct.tcp_data(1, 1, &t(ACK, 501, 106, 3), b"abc");
    assert_eq!((d.delivered, d.in_place), (3, true));
    // client closes, server acks, server closes, client acks
    ct.tcp_packet(1, false, UP, &t(FIN | ACK, 106, 504, 0), (40000, 80));
    assert_eq!(ct.get(1).unwrap().state(), TcpState::FinWait1);
    ct.tcp_packet(1, false, DOWN, &t(ACK, 504, 107, 0), (80, 40000));
    assert_eq!(ct.get(1).unwrap().state(), TcpState::FinWait2);
    let s = ct.tcp_packet(1, false, DOWN, &t(FIN | ACK, 504, 107, 0), (80, 40000));
    assert_eq!(ct.get(1).unwrap().state(), TcpState::TimedWait);
    assert!(s.ended);
    // the last ACK is a straggler: no event, passes
    let s = ct.tcp_packet(1, false, UP, &t(ACK, 107, 505, 0), (40000, 80));
    assert!(!s.live && !s.drop_silently && !s.ended);
    // a new SYN on the same ports restarts
    let s = ct.tcp_packet(1, false, UP, &t(SYN, 9000, 0, 0), (40000, 80));
    assert!(s.created && !s.restarted);
    assert_eq!(ct.counters.tcp_created, 2);
}

#[test]
fn simultaneous_close_goes_through_closing() {
    let mut ct = table(NoConnection::Pickup);
    ct.tcp_packet(2, true, UP, &t(SYN, 1, 0, 0), (1234, 80));
    ct.tcp_packet(2, false, DOWN, &t(SYN | ACK, 1, 2, 0), (80, 1234));
    ct.tcp_packet(2, false, UP, &t(ACK, 2, 2, 0), (1234, 80));
    ct.tcp_packet(2, false, UP, &t(FIN | ACK, 2, 2, 0), (1234, 80));
    ct.tcp_packet(2, false, DOWN, &t(FIN | ACK, 2, 2, 0), (80, 1234));
    assert_eq!(ct.get(2).unwrap().state(), TcpState::Closing);
    let s = ct.tcp_packet(2, false, UP, &t(ACK, 3, 3, 0), (1234, 80));
    assert!(s.ended);
    assert_eq!(ct.get(2).unwrap().state(), TcpState::TimedWait);
}

#[test]
fn rst_ends_the_connection_and_frees_streams() {
    let mut ct = table(NoConnection::Pickup);
    ct.tcp_packet(3, true, UP, &t(SYN, 10, 0, 0), (5555, 80));
    ct.tcp_packet(3, false, DOWN, &t(SYN | ACK, 20, 11, 0), (80, 5555));
    // out-of-order data is buffered (charged to the worker budget)
    let d = ct.tcp_data(3, 0, &t(ACK, 21, 21, 4), b"late");
    assert_eq!(d.delivered, 0);
    assert_eq!(ct.buffered_bytes(), 4);
    let s = ct.tcp_packet(3, false, DOWN, &t(RST, 21, 0, 0), (80, 5555));
    assert!(s.ended);
    assert_eq!(ct.get(3).unwrap().state(), TcpState::Reset);
    assert_eq!(ct.buffered_bytes(), 0);
    assert!(ct.end(3).is_some());
    assert!(ct.is_empty());
}

#[test]
fn out_of_order_and_overlap_conflict() {
    let mut ct = table(NoConnection::Pickup);
    ct.tcp_packet(4, true, UP, &t(SYN, 999, 0, 0), (5555, 80));
    let d = ct.tcp_data(4, 0, &t(ACK, 1005, 0, 5), b"world");
    assert_eq!(d.delivered, 0);
    let d = ct.tcp_data(4, 0, &t(ACK, 1000, 0, 5), b"hello");
    assert!(!d.in_place);
    assert_eq!(ct.read(4, 0), b"helloworld");
    ct.consume_all(4, 0);
    // a retransmission with different bytes of data still held is a conflict
    let d = ct.tcp_data(4, 0, &t(ACK, 1012, 0, 3), b"xyz");
    assert_eq!(d.delivered, 0);
    let d = ct.tcp_data(4, 0, &t(ACK, 1012, 0, 3), b"XYZ");
    assert!(d.seg.overlap_conflict);
    assert_eq!(ct.counters.overlap_conflicts, 1);
}

/// A table with connection `id` established: client 5555 (ISN 99) -> server 80 (ISN 499).
fn established(id: FlowId) -> ConnTable {
    let mut ct = table(NoConnection::Pickup);
    ct.tcp_packet(id, true, UP, &t(SYN, 99, 0, 0), (5555, 80));
    ct.tcp_packet(id, false, DOWN, &t(SYN | ACK, 499, 100, 0), (80, 5555));
    ct.tcp_packet(id, false, UP, &t(ACK, 100, 500, 0), (5555, 80));
    ct
}

#[test]
fn the_peers_acknowledgement_ends_the_retransmission_check() {
    let mut ct = established(5);
    for (seq, data) in [(100, b"GET /"), (105, b"index")] {
        ct.tcp_packet(5, false, UP, &t(ACK, seq, 500, 5), (5555, 80));
        assert!(ct.tcp_data(5, 0, &t(ACK, seq, 500, 5), data).in_place);
    }
    // not acknowledged yet: a different retransmission is the evasion
    assert!(ct.tcp_data(5, 0, &t(ACK, 100, 500, 5), b"GET X").seg.overlap_conflict);
    // the server acknowledges the first segment (a pure ACK, no data of its own)
    ct.tcp_packet(5, false, DOWN, &t(ACK, 500, 105, 0), (80, 5555));
    assert!(!ct.tcp_data(5, 0, &t(ACK, 100, 500, 5), b"GET X").seg.overlap_conflict);
    assert!(ct.tcp_data(5, 0, &t(ACK, 105, 500, 5), b"inXex").seg.overlap_conflict);
    assert_eq!(ct.counters.overlap_conflicts, 2);
}

#[test]
fn an_acknowledgement_after_a_stream_edit_is_read_in_the_original_numbers() {
    let mut ct = established(6);
    ct.tcp_packet(6, false, DOWN, &t(ACK, 500, 100, 10), (80, 5555));
    assert!(ct.tcp_data(6, 1, &t(ACK, 500, 100, 10), b"0123456789").in_place);
    // a rule erased the server's first 4 bytes: the client saw 6, and acknowledges them
    // all with 506, which is 510 in the server's numbers
    ct.get_mut(6).unwrap().tcp_mut().unwrap().shift[1].record(500, -4).unwrap();
    ct.tcp_packet(6, false, UP, &t(ACK, 100, 506, 0), (5555, 80));
    assert!(!ct.tcp_data(6, 1, &t(ACK, 506, 100, 4), b"XXXX").seg.overlap_conflict);
}

#[test]
fn pickup_mid_stream_orients_by_port() {
    let mut ct = table(NoConnection::Pickup);
    // first packet seen is the server's answer (80 -> 40000)
    let s = ct.tcp_packet(5, true, UP, &t(ACK | 0x08, 7000, 100, 10), (80, 40000));
    assert!(s.created && s.live);
    assert_eq!(s.dir, 1, "the server's packet is down");
    assert!(ct.get(5).unwrap().picked_up);
    let d = ct.tcp_data(5, 1, &t(ACK, 7000, 100, 10), b"0123456789");
    assert_eq!(d.delivered, 10);
    let s = ct.tcp_packet(5, false, DOWN, &t(ACK, 100, 7010, 0), (40000, 80));
    assert_eq!(s.dir, 0);
}

#[test]
fn strict_policy_refuses_connections_without_syn() {
    let mut ct = table(NoConnection::Drop);
    let s = ct.tcp_packet(6, true, UP, &t(ACK, 1, 1, 0), (40000, 80));
    assert!(s.no_connection && !s.live && !s.created);
    assert_eq!(ct.counters.tcp_no_connection, 1);
    // an RST is let through without alert
    let s = ct.tcp_packet(6, false, UP, &t(RST, 1, 1, 0), (40000, 80));
    assert!(!s.no_connection);
    assert!(ct.get(6).is_none());
}

#[test]
fn dropped_connection_drops_silently_and_reused_id_restarts() {
    let mut ct = table(NoConnection::Pickup);
    ct.tcp_packet(7, true, UP, &t(SYN, 1, 0, 0), (40000, 80));
    ct.drop_conn(7);
    let s = ct.tcp_packet(7, false, DOWN, &t(SYN | ACK, 1, 2, 0), (80, 40000));
    assert!(s.drop_silently && !s.live);
    // the flow table evicted flow 7 and reused the id for another flow
    let s = ct.tcp_packet(7, true, UP, &t(SYN, 50, 0, 0), (40001, 80));
    assert!(s.created && s.restarted);
    assert!(!ct.get(7).unwrap().dropped);
}

#[test]
fn udp_connection_orients_and_drops() {
    let mut ct = table(NoConnection::Pickup);
    let s = ct.udp_packet(8, true, UP, (53, 33333));
    assert!(s.created && s.dir == 1, "a datagram from port 53 is the server's");
    let s = ct.udp_packet(8, false, DOWN, (33333, 53));
    assert!(!s.created && s.dir == 0 && s.live);
    ct.drop_conn(8);
    assert!(ct.udp_packet(8, false, DOWN, (33333, 53)).drop_silently);
}

#[test]
fn memory_is_bounded_per_flow_and_per_worker() {
    let cfg = ConnConfig { max_buffered_per_flow: 1000, max_buffered_per_worker: 1500, ..ConnConfig::default() };
    let mut ct = ConnTable::new(cfg, 8);
    for id in 0..3u32 {
        ct.tcp_packet(id, true, UP, &t(SYN, 0, 0, 0), (40000 + id as u16, 80));
        // 2000 bytes out of order (a gap at seq 1)
        for k in 0..20u32 {
            ct.tcp_data(id, 0, &t(ACK, 2 + k * 100, 0, 100), &[b'a'; 100]);
        }
    }
    assert!(ct.buffered_bytes() <= 1500);
    assert!(ct.counters.over_cap > 0);
    for id in 0..3 {
        ct.end(id);
    }
    assert_eq!(ct.buffered_bytes(), 0);
}

fn dns_msg(id: u16, response: bool) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&(if response { 0x8180u16 } else { 0x0100 }).to_be_bytes());
    m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // 1 question
    m.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
    m
}

#[test]
fn dns_over_tcp_frames_split_anywhere() {
    use crate::dissectors::dns::{DnsDissector, DnsEvent};
    use crate::dissectors::{Dissector, AppEvent, Events, Settings};
    let dns = |proto| DnsDissector::new(&Settings::default(), proto);
    // the events' messages: (id, Some(matched) for responses), or None for an error
    let summary = |ev: &mut Events| -> Vec<Option<(u16, Option<bool>)>> {
        ev.list
            .drain(..)
            .map(|e| match e {
                AppEvent::Message(m) => m.as_any().downcast_ref::<DnsEvent>().map(|d| (d.msg.header.id, d.matched)),
                _ => None,
            })
            .collect()
    };
    let q = dns_msg(0x1234, false);
    let r = dns_msg(0x1234, true);
    let mut up = (q.len() as u16).to_be_bytes().to_vec();
    up.extend_from_slice(&q);
    let mut down = (r.len() as u16).to_be_bytes().to_vec();
    down.extend_from_slice(&r);
    for cut in 0..=up.len() {
        let mut st = dns(6);
        let mut ev = Events::default();
        st.receive_stream(0, &up[..cut], &mut ev);
        st.receive_stream(0, &up[cut..], &mut ev);
        assert_eq!(summary(&mut ev), [Some((0x1234, None))], "cut {cut}");
        let c = cut.min(down.len());
        st.receive_stream(1, &down[..c], &mut ev);
        st.receive_stream(1, &down[c..], &mut ev);
        assert_eq!(summary(&mut ev), [Some((0x1234, Some(true)))], "cut {cut}");
    }
    // two messages in one segment, and garbage framed as a message
    let mut st = dns(6);
    let mut ev = Events::default();
    let mut two = up.clone();
    two.extend_from_slice(&up);
    two.extend_from_slice(&[0, 3, 1, 2, 3]);
    st.receive_stream(0, &two, &mut ev);
    assert_eq!(ev.list.len(), 3);
    assert!(matches!(&ev.list[2], AppEvent::Error(e) if e.alert.as_deref() == Some("dns: truncated message")));
}
