//! The Lua field API: a rules file that reads and writes the fields of every layer, run
//! by the engine's Lua runtime (`LuaEngine::run_burst`, as the worker runs packet rules)
//! on fuzzed frames that dissect.
//! Oracles: every field a rule reads equals the frame's bytes (read by this harness at
//! the offsets the dissector reports); every field a rule writes reads back from the frame
//! the packet leaves with; a modified packet leaves with valid checksums; no rule error.
//! Input: [link type selector][frame].
#![no_main]
use haka_engine::dissect::{dissect, DissectOptions, LinkType, PacketMeta, L3};
use haka_engine::lua::{Alert, LuaEngine, LuaOptions, LuaPacket};
use haka_engine::wire::checksum;
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::rc::Rc;

const RULES: &str = r#"
local function say(...) haka.alert{ description = table.concat({ ... }, " ") } end
haka.rule{ on = haka.dissectors.ethernet.events.receive_packet, eval = function(eth)
    say("eth", eth.type)
end }
haka.rule{ on = haka.dissectors.ipv4.events.receive_packet, eval = function(ip)
    say("ipv4", ip.version, ip.hdr_len, ip.tos, ip.len, ip.id, ip.frag_offset, ip.flags.all, ip.ttl, ip.proto,
        ip.checksum, tostring(ip.src), tostring(ip.dst), #ip.payload)
    ip.ttl = (ip.ttl * 7 + 3) % 256
    ip.id = (ip.id + 1) % 65536
end }
haka.rule{ on = haka.dissectors.ipv6.events.receive_packet, eval = function(ip)
    say("ipv6", ip.version, ip.traffic_class, ip.flow_label, ip.payload_length, ip.next_header, ip.hop_limit,
        tostring(ip.src), tostring(ip.dst))
    ip.hop_limit = (ip.hop_limit + 5) % 256
end }
haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function(t)
    say("tcp", t.srcport, t.dstport, t.seq, t.ack_seq, t.hdr_len, t.flags.all, t.window_size, t.checksum,
        t.urgent_pointer, #t.payload, #t.payload > 0 and t.payload[1] or -1)
    t.srcport = (t.srcport + 1) % 65536
    t.seq = (t.seq + 1000) % 4294967296
    t.window_size = 1234
    if #t.payload > 0 then t.payload[1] = (t.payload[1] + 1) % 256 end
end }
haka.rule{ on = haka.dissectors.udp.events.receive_packet, eval = function(u)
    say("udp", u.srcport, u.dstport, u.length, u.checksum, #u.payload)
    u.dstport = (u.dstport + 3) % 65536
end }
"#;

thread_local! {
    static ENGINE: RefCell<Option<(LuaEngine, Rc<RefCell<Vec<String>>>)>> = const { RefCell::new(None) };
}

fn be16(b: &[u8], o: usize) -> u32 {
    u16::from_be_bytes([b[o], b[o + 1]]) as u32
}

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// What the rules must say about `f`, in event order.
fn expected(f: &[u8], m: &PacketMeta, link: LinkType) -> Vec<String> {
    let mut out = Vec::new();
    let l3 = m.l3_offset as usize;
    if link == LinkType::Ethernet {
        let t = match m.l3 {
            L3::Ipv4 => 0x0800,
            L3::Ipv6 => 0x86dd,
            L3::Other(t) => t as u32,
        };
        out.push(format!("eth {t}"));
    }
    match m.l3 {
        L3::Ipv4 => {
            let hl = (f[l3] & 15) as usize * 4;
            let src = std::net::Ipv4Addr::from(<[u8; 4]>::try_from(&f[l3 + 12..l3 + 16]).unwrap());
            let dst = std::net::Ipv4Addr::from(<[u8; 4]>::try_from(&f[l3 + 16..l3 + 20]).unwrap());
            out.push(format!(
                "ipv4 4 {hl} {} {} {} {} {} {} {} {} {src} {dst} {}",
                f[l3 + 1],
                be16(f, l3 + 2),
                be16(f, l3 + 4),
                (be16(f, l3 + 6) & 0x1fff) * 8,
                f[l3 + 6] >> 5,
                f[l3 + 8],
                f[l3 + 9],
                be16(f, l3 + 10),
                be16(f, l3 + 2) as usize - hl
            ));
        }
        L3::Ipv6 => {
            let w = be32(f, l3);
            let src = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&f[l3 + 8..l3 + 24]).unwrap());
            let dst = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&f[l3 + 24..l3 + 40]).unwrap());
            out.push(format!(
                "ipv6 6 {} {} {} {} {} {src} {dst}",
                (w >> 20) & 0xff,
                w & 0xfffff,
                be16(f, l3 + 4),
                f[l3 + 6],
                f[l3 + 7]
            ));
        }
        L3::Other(_) => return out,
    }
    if !m.has_l4 || m.fragment {
        return out;
    }
    let l4 = m.l4_offset as usize;
    let (po, pl) = (m.payload_offset as usize, m.payload_len as usize);
    match m.proto {
        6 => out.push(format!(
            "tcp {} {} {} {} {} {} {} {} {} {pl} {}",
            be16(f, l4),
            be16(f, l4 + 2),
            be32(f, l4 + 4),
            be32(f, l4 + 8),
            (f[l4 + 12] >> 4) * 4,
            f[l4 + 13],
            be16(f, l4 + 14),
            be16(f, l4 + 16),
            be16(f, l4 + 18),
            if pl > 0 { f[po] as i32 } else { -1 }
        )),
        17 => out.push(format!("udp {} {} {} {} {pl}", be16(f, l4), be16(f, l4 + 2), be16(f, l4 + 4), be16(f, l4 + 6))),
        _ => {}
    }
    out
}

/// The checksums of a modified packet, recomputed on its way out.
fn checksums_valid(f: &[u8], m: &PacketMeta) -> bool {
    let (l3, l4) = (m.l3_offset as usize, m.l4_offset as usize);
    let mut end = l3 + m.ip_len as usize;
    if m.has_l4 && m.proto == 17 {
        // a UDP checksum covers the datagram its length field gives
        end = end.min(l4 + be16(f, l4 + 4) as usize);
    }
    let l4_ok = |ph: u32| -> bool {
        if !m.has_l4 || m.fragment || !matches!(m.proto, 6 | 17) {
            return true;
        }
        if m.proto == 17 && be16(f, l4 + 6) == 0 && m.l3 == L3::Ipv4 {
            return true; // no UDP checksum
        }
        checksum::finish(checksum::combine(&[ph, checksum::sum(&f[l4..end])])) == 0
    };
    match m.l3 {
        L3::Ipv4 => {
            let hl = (f[l3] & 15) as usize * 4;
            let (s, d): ([u8; 4], [u8; 4]) = (f[l3 + 12..l3 + 16].try_into().unwrap(), f[l3 + 16..l3 + 20].try_into().unwrap());
            checksum::compute(&f[l3..l3 + hl]) == 0 && l4_ok(checksum::pseudo_header_v4(&s, &d, m.proto, (end - l4) as u16))
        }
        L3::Ipv6 => {
            let (s, d): ([u8; 16], [u8; 16]) = (f[l3 + 8..l3 + 24].try_into().unwrap(), f[l3 + 24..l3 + 40].try_into().unwrap());
            l4_ok(checksum::pseudo_header_v6(&s, &d, m.proto, (end - l4) as u32))
        }
        L3::Other(_) => true,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else { return };
    let link = if sel & 1 == 0 { LinkType::Ethernet } else { LinkType::RawIp };
    let Ok(meta) = dissect(frame, link, &DissectOptions::default()) else { return };
    if meta.l3 == L3::Other(0) && link == LinkType::RawIp {
        return;
    }
    let want = expected(frame, &meta, link);
    ENGINE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let (engine, said) = cell.get_or_insert_with(|| {
            let path = std::env::temp_dir().join(format!("haka-fuzz-lua-fields-{}.lua", std::process::id()));
            std::fs::write(&path, RULES).unwrap();
            let said: Rc<RefCell<Vec<String>>> = Rc::default();
            let s2 = Rc::clone(&said);
            let sink = Box::new(move |a: Alert| s2.borrow_mut().push(a.description));
            let e = LuaEngine::load(&path, &LuaOptions::default(), 0, sink).unwrap_or_else(|e| panic!("{e}"));
            (e, said)
        });
        said.borrow_mut().clear();
        let mut f = frame.to_vec();
        let mut pkts = [LuaPacket::new(&mut f, &meta, 0, 1)];
        let out = engine.run_burst(&mut pkts);
        let (modified, error, rewrite) = (pkts[0].modified, pkts[0].error, pkts[0].rewrite.is_some());
        assert_eq!(out.rule_errors, 0, "rule error on a frame that dissects");
        assert!(!error);
        assert!(!rewrite);
        let got = said.borrow().clone();
        assert_eq!(got, want, "fields read by the rules differ from the frame's");
        // what the rules wrote, read back
        let (l3, l4, po) = (meta.l3_offset as usize, meta.l4_offset as usize, meta.payload_offset as usize);
        match meta.l3 {
            L3::Ipv4 => {
                assert_eq!(f[l3 + 8], ((frame[l3 + 8] as u32 * 7 + 3) % 256) as u8);
                assert_eq!(be16(&f, l3 + 4), (be16(frame, l3 + 4) + 1) % 65536);
            }
            L3::Ipv6 => assert_eq!(f[l3 + 7], frame[l3 + 7].wrapping_add(5)),
            L3::Other(_) => {}
        }
        if meta.has_l4 && !meta.fragment {
            match meta.proto {
                6 => {
                    assert_eq!(be16(&f, l4), (be16(frame, l4) + 1) % 65536);
                    assert_eq!(be32(&f, l4 + 4), be32(frame, l4 + 4).wrapping_add(1000));
                    assert_eq!(be16(&f, l4 + 14), 1234);
                    if meta.payload_len > 0 {
                        assert_eq!(f[po], frame[po].wrapping_add(1));
                    }
                }
                17 => assert_eq!(be16(&f, l4 + 2), (be16(frame, l4 + 2) + 3) % 65536),
                _ => {}
            }
        }
        if matches!(meta.l3, L3::Ipv4 | L3::Ipv6) {
            assert!(modified, "written packet not marked modified");
            assert!(checksums_valid(&f, &meta), "checksum not valid after the rules' writes");
        }
        engine.after_burst();
    });
});
