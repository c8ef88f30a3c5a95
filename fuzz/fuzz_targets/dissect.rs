//! L2-L4 dissection (`dissect::dissect`) of any frame under each link type.
//! Oracles: offsets within the frame and ordered; the ports, flags and addresses reported
//! are the frame's bytes at the offsets reported; the same IP packet framed as Ethernet,
//! raw IP, DLT_NULL and Linux SLL dissects to the same result (offsets shifted by the
//! link header), and so do its malformation reasons.
#![no_main]
use haka_engine::dissect::{dissect, DissectOptions, LinkType, PacketMeta, L3};
use libfuzzer_sys::fuzz_target;

fn be16(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([b[o], b[o + 1]])
}

fn check(frame: &[u8], m: &PacketMeta) {
    let len = frame.len().min(u16::MAX as usize);
    assert!(m.l3_offset <= m.l4_offset && m.l4_offset <= m.payload_offset, "{m:?}");
    assert!(m.payload_offset as usize + m.payload_len as usize <= len, "payload beyond the frame: {m:?}");
    let l3 = m.l3_offset as usize;
    match m.l3 {
        L3::Ipv4 => {
            assert_eq!(frame[l3] >> 4, 4);
            assert_eq!(&m.src_addr[12..], &frame[l3 + 12..l3 + 16]);
            assert_eq!(&m.dst_addr[12..], &frame[l3 + 16..l3 + 20]);
            assert_eq!(m.ip_len, be16(frame, l3 + 2));
            assert!(l3 + m.ip_len as usize <= len, "IP length beyond the frame: {m:?}");
        }
        L3::Ipv6 => {
            assert_eq!(frame[l3] >> 4, 6);
            assert_eq!(&m.src_addr[..], &frame[l3 + 8..l3 + 24]);
            assert_eq!(&m.dst_addr[..], &frame[l3 + 24..l3 + 40]);
            assert_eq!(m.ip_len as usize, 40 + be16(frame, l3 + 4) as usize);
            assert!(l3 + m.ip_len as usize <= len, "IP length beyond the frame: {m:?}");
        }
        L3::Other(_) => assert!(!m.has_l4),
    }
    if m.has_l4 {
        let l4 = m.l4_offset as usize;
        assert!(m.payload_offset as usize >= l4);
        match m.proto {
            6 => {
                assert!(m.payload_offset as usize >= l4 + 20);
                assert_eq!((m.src_port, m.dst_port), (be16(frame, l4), be16(frame, l4 + 2)));
                assert_eq!(m.tcp_flags, frame[l4 + 13]);
                assert_eq!(m.payload_offset as usize, l4 + (frame[l4 + 12] >> 4) as usize * 4);
            }
            17 => {
                assert_eq!(m.payload_offset as usize, l4 + 8);
                assert_eq!((m.src_port, m.dst_port), (be16(frame, l4), be16(frame, l4 + 2)));
            }
            _ => {}
        }
        let end = m.payload_offset as usize + m.payload_len as usize;
        if !m.fragment && m.proto == 6 {
            // a TCP payload ends where the IP datagram ends
            assert_eq!(end, l3 + m.ip_len as usize, "{m:?}");
        }
        if !m.fragment && m.proto == 17 {
            // a UDP payload ends where the datagram's length says, within the IP datagram
            assert_eq!(end, (l4 + be16(frame, l4 + 4) as usize).min(l3 + m.ip_len as usize).max(m.payload_offset as usize), "{m:?}");
        }
    }
}

fn shifted(m: &PacketMeta, by: i32) -> PacketMeta {
    let s = |v: u16| (v as i32 + by) as u16;
    PacketMeta { l3_offset: s(m.l3_offset), l4_offset: s(m.l4_offset), payload_offset: s(m.payload_offset), ..*m }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else { return };
    let opts = DissectOptions { ipv4_checksum: sel & 0x80 == 0 };
    let link = [LinkType::Ethernet, LinkType::RawIp, LinkType::Null, LinkType::LinuxSll][(sel & 3) as usize];
    let r = dissect(frame, link, &opts);
    if let Ok(m) = &r {
        check(frame, m);
    }
    // The IP packet under every framing: raw IP is the reference.
    if link != LinkType::RawIp || frame.is_empty() || frame.len() > 60_000 {
        return;
    }
    let raw = r;
    let v6 = frame[0] >> 4 == 6;
    let mut eth = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    eth.extend_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
    let mut null = (if v6 { 24u32 } else { 2 }).to_le_bytes().to_vec();
    let mut sll = vec![0u8; 14];
    sll.extend_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
    for (mut hdr, link) in [(eth, LinkType::Ethernet), (std::mem::take(&mut null), LinkType::Null), (sll, LinkType::LinuxSll)] {
        let n = hdr.len();
        hdr.extend_from_slice(frame);
        let got = dissect(&hdr, link, &opts);
        let want = raw.map(|m| shifted(&m, n as i32));
        if let Ok(m) = &got {
            check(&hdr, m);
        }
        assert_eq!(got, want, "{link:?} framing differs from raw IP");
    }
});
