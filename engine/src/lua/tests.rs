//! DPDK-free tests of the Lua rule engine: crafted frames, rules written to temp files.

use super::*;
use crate::test_util::TempFile;
use crate::dissect::{dissect, DissectOptions, LinkType};
use std::sync::atomic::AtomicUsize;

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn rules_file(src: &str) -> TempFile {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    TempFile::with_contents(&format!("hk-lua-{}-{}.lua", std::process::id(), n), src)
}

type Alerts = Rc<RefCell<Vec<Alert>>>;

/// Keep the returned file while the engine may read it again (reload, or a state rebuilt
/// after the memory cap).
fn engine_opts(src: &str, opts: &LuaOptions) -> (LuaEngine, Alerts, TempFile) {
    let p = rules_file(src);
    let alerts: Alerts = Rc::new(RefCell::new(Vec::new()));
    let a2 = Rc::clone(&alerts);
    let e = LuaEngine::load(&p, opts, 3, Box::new(move |a| a2.borrow_mut().push(a))).unwrap_or_else(|e| panic!("{e}"));
    (e, alerts, p)
}

fn engine(src: &str) -> (LuaEngine, Alerts) {
    let (e, a, _) = engine_opts(src, &LuaOptions::default()); // (default cap: never rebuilt)
    (e, a)
}

const SRC: [u8; 4] = [192, 168, 1, 10];
const DST: [u8; 4] = [10, 0, 0, 1];

fn ipv4_frame(proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[1] = 0x10;
    ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&SRC);
    ip[16..20].copy_from_slice(&DST);
    let c = checksum::compute(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let start = f.len();
    f.extend_from_slice(l4);
    let seg = &f[start..];
    let c = match proto {
        1 => Some((2, checksum::compute(seg))),
        6 => Some((16, checksum::l4_v4(&SRC, &DST, 6, seg))),
        17 => Some((6, checksum::l4_v4(&SRC, &DST, 17, seg))),
        _ => None,
    };
    if let Some((off, c)) = c {
        f[start + off..start + off + 2].copy_from_slice(&c.to_be_bytes());
    }
    f
}

const SRC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

fn ipv6_frame(nh: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 40];
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    let ip = &mut f[14..54];
    ip[0] = 0x6a; // version 6, tc 0xa5, flow 0x12345
    ip[1] = 0x51;
    ip[2] = 0x23;
    ip[3] = 0x45;
    ip[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
    ip[6] = nh;
    ip[7] = 33;
    ip[8..24].copy_from_slice(&SRC6);
    ip[24..40].copy_from_slice(&DST6);
    let start = f.len();
    f.extend_from_slice(l4);
    let off = match nh {
        6 => 16,
        17 => 6,
        _ => 2,
    };
    let c = checksum::l4_v6(&SRC6, &DST6, nh, &f[start..]);
    f[start + off..start + off + 2].copy_from_slice(&c.to_be_bytes());
    f
}

fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&0xdeadbeefu32.to_be_bytes());
    t[8..12].copy_from_slice(&0x01020304u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&8192u16.to_be_bytes());
    t[18..20].copy_from_slice(&7u16.to_be_bytes());
    t.extend_from_slice(payload);
    t
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(payload);
    u
}

fn icmp_echo(payload: &[u8]) -> Vec<u8> {
    let mut i = vec![8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
    i.extend_from_slice(payload);
    i
}

/// Runs one burst; returns (verdict, modified) per frame.
fn run(e: &mut LuaEngine, frames: &mut [Vec<u8>]) -> Vec<(LuaVerdict, bool)> {
    let metas: Vec<PacketMeta> = frames
        .iter()
        .map(|f| dissect(f, LinkType::Ethernet, &DissectOptions::default()).expect("frame dissects"))
        .collect();
    let mut pkts: Vec<LuaPacket> = frames
        .iter_mut()
        .zip(&metas)
        .enumerate()
        .map(|(i, (f, m))| LuaPacket::new(f, m, (i % 2) as u8, i as u32))
        .collect();
    e.run_burst(&mut pkts);
    pkts.iter().map(|p| (p.verdict, p.modified)).collect()
}

fn descs(a: &Alerts) -> Vec<String> {
    a.borrow().iter().map(|x| x.description.clone()).collect()
}

/// All checksums of an Ethernet frame are valid (re-dissected with checksum verification).
fn checksums_valid(f: &[u8]) -> bool {
    let m = dissect(f, LinkType::Ethernet, &DissectOptions { ipv4_checksum: true }).expect("valid after rewrite");
    let l3 = m.l3_offset as usize;
    let l4 = m.l4_offset as usize;
    match m.l3 {
        L3::Ipv4 => {
            let end = l3 + u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]) as usize;
            let (s, d): ([u8; 4], [u8; 4]) =
                (f[l3 + 12..l3 + 16].try_into().unwrap(), f[l3 + 16..l3 + 20].try_into().unwrap());
            checksum::compute(&f[l3..l3 + 20]) == 0
                && match m.proto {
                    1 => checksum::compute(&f[l4..end]) == 0,
                    p => checksum::l4_v4(&s, &d, p, &f[l4..end]) == 0,
                }
        }
        L3::Ipv6 => {
            let (s, d): ([u8; 16], [u8; 16]) =
                (f[l3 + 8..l3 + 24].try_into().unwrap(), f[l3 + 24..l3 + 40].try_into().unwrap());
            checksum::l4_v6(&s, &d, m.proto, &f[l4..]) == 0
        }
        _ => true,
    }
}

#[test]
fn ipv4_tcp_fields_read() {
    let (mut e, a) = engine(
        r#"
        local ipv4 = require("protocol/ipv4")
        require("protocol/tcp")
        haka.rule{ on = haka.dissectors.ipv4.events.receive_packet, eval = function(ip)
            haka.alert{ description = table.concat({ ip.version, ip.hdr_len, ip.tos, ip.len, ip.id, ip.frag_offset,
                ip.ttl, ip.proto, ip.checksum, tostring(ip.src), tostring(ip.dst), tostring(ip.flags.rb),
                tostring(ip.flags.df), tostring(ip.flags.mf), ip.flags.all, #ip.payload, tostring(ip:verify_checksum()),
                tostring(ip.src == ipv4.addr("192.168.1.10")), tostring(ip.dst < ip.src) }, " ") }
        end }
        haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function(tcp)
            local f = tcp.flags
            haka.alert{ description = table.concat({ tcp.srcport, tcp.dstport, tcp.seq, tcp.ack_seq, tcp.res, tcp.hdr_len,
                tcp.window_size, tcp.checksum, tcp.urgent_pointer, tostring(f.fin), tostring(f.syn), tostring(f.rst),
                tostring(f.psh), tostring(f.ack), tostring(f.urg), tostring(f.ecn), tostring(f.cwr), f.all,
                #tcp.payload, tcp.payload:asstring(), tcp.payload[1], tostring(tcp:verify_checksum()),
                tostring(tcp.ip.src), tcp.ip.ttl }, " ") }
        end }
    "#,
    );
    assert!(e.has_packet_rules());
    let mut frames = vec![ipv4_frame(6, &tcp(1234, 80, 0x12, b"hello"))];
    let ipck = u16::from_be_bytes([frames[0][24], frames[0][25]]);
    let tck = u16::from_be_bytes([frames[0][50], frames[0][51]]);
    let v = run(&mut e, &mut frames);
    assert_eq!(v, vec![(LuaVerdict::Accept, false)]);
    let d = descs(&a);
    assert_eq!(
        d[0],
        format!("4 20 16 45 4660 0 64 6 {ipck} 192.168.1.10 10.0.0.1 false true false 2 25 true true true")
    );
    assert_eq!(
        d[1],
        format!("1234 80 3735928559 16909060 0 20 8192 {tck} 7 false true false false true false false false 18 5 hello 104 true 192.168.1.10 64")
    );
    // the alert carries the flow of the packet
    let al = &a.borrow()[0];
    assert_eq!(al.flow, Some(("192.168.1.10".into(), 1234, "10.0.0.1".into(), 80, 6)));
    assert_eq!(al.direction.as_deref(), Some("up"));
    assert_eq!(al.worker, 3);
}

#[test]
fn udp_icmp_ipv6_ethernet_fields_read() {
    let (mut e, a) = engine(
        r#"
        haka.rule{ on = haka.dissectors.udp.events.receive_packet, eval = function(u)
            haka.alert{ description = table.concat({ "udp", u.srcport, u.dstport, u.length, tostring(u:verify_checksum()),
                u.payload:asstring(), u.ip.name, u.checksum > 0 and "ck" or "nock" }, " ") }
        end }
        haka.rule{ on = haka.dissectors.icmp.events.receive_packet, eval = function(i)
            haka.alert{ description = table.concat({ "icmp", i.type, i.code, tostring(i:verify_checksum()), #i.payload,
                tostring(i.checksum == i.ip.payload[3] * 256 + i.ip.payload[4]) }, " ") }
        end }
        haka.rule{ on = haka.dissectors.ipv6.events.receive_packet, eval = function(ip)
            haka.alert{ description = table.concat({ "ipv6", ip.version, ip.traffic_class, ip.flow_label, ip.payload_length,
                ip.next_header, ip.hop_limit, tostring(ip.src), tostring(ip.dst), tostring(ip.src == "2001:db8::1") }, " ") }
        end }
        haka.rule{ on = haka.dissectors.ethernet.events.receive_packet, eval = function(eth)
            haka.alert{ description = table.concat({ "eth", eth.src, eth.dst, eth.type, eth.vlan }, " ") }
        end }
    "#,
    );
    let mut frames = vec![
        ipv4_frame(17, &udp(53, 4000, b"dns")),
        ipv4_frame(1, &icmp_echo(b"ping")),
        ipv6_frame(17, &udp(1, 2, b"x")),
    ];
    let v = run(&mut e, &mut frames);
    assert!(v.iter().all(|x| *x == (LuaVerdict::Accept, false)));
    assert_eq!(
        descs(&a),
        vec![
            "eth 02:00:00:00:00:02 02:00:00:00:00:01 2048 0",
            "udp 53 4000 11 true dns ipv4 ck",
            "eth 02:00:00:00:00:02 02:00:00:00:00:01 2048 0",
            "icmp 8 0 true 8 true",
            "eth 00:00:00:00:00:00 00:00:00:00:00:00 34525 0",
            "ipv6 6 165 74565 9 17 33 2001:db8::1 2001:db8::2 true",
            "udp 1 2 9 true x ipv6 ck",
        ]
    );
}

#[test]
fn writes_change_bytes_and_keep_valid_checksums() {
    let (mut e, _) = engine(
        r#"
        local ipv4 = require("protocol/ipv4")
        haka.rule{ on = haka.dissectors.ipv4.events.receive_packet, eval = function(ip)
            ip.ttl = ip.ttl - 1
            ip.src = ipv4.addr("1.2.3.4")
            ip.dst = ipv4.addr(5, 6, 7, 8)
            ip.flags.df = false
        end }
        haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function(t)
            t.dstport = 8080
            t.flags.psh = true
            t.payload[1] = 72 -- 'H'
            t.payload:sub(1, 2):setstring("EY")
        end }
        haka.rule{ on = haka.dissectors.udp.events.receive_packet, eval = function(u) u.srcport = 5353 end }
        haka.rule{ on = haka.dissectors.icmp.events.receive_packet, eval = function(i) i.payload[1] = 0x41 end }
        haka.rule{ on = haka.dissectors.ipv6.events.receive_packet, eval = function(ip)
            ip.hop_limit = 1; ip.src = "2001:db8::99"; ip.traffic_class = 0x3c; ip.flow_label = 0xabcde
            assert(ip.traffic_class == 0x3c and ip.flow_label == 0xabcde and ip.version == 6)
        end }
        haka.rule{ on = haka.dissectors.ethernet.events.receive_packet, eval = function(eth)
            if eth.type == 0x86dd then eth.dst = "0a:0b:0c:0d:0e:0f" end
        end }
        haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function(t)
            if t.ip.name == "ipv6" then
                t.seq = 4294967295; t.ack_seq = 5; t.window_size = 1000; t.flags.all = 0x11
                t.ip.payload_length = t.ip.payload_length -- no-op write
            else
                t.ip.flags.all = 1; t.ip.tos = 7; t.ip.id = 99
                assert(t.ip.flags.mf and not t.ip.flags.df)
            end
        end }
    "#,
    );
    let mut frames = vec![
        ipv4_frame(6, &tcp(1234, 80, 0x10, b"hello")),
        ipv4_frame(17, &udp(53, 4000, b"dns")),
        ipv4_frame(1, &icmp_echo(b"ping")),
        ipv6_frame(6, &tcp(1, 2, 0x02, b"abc")),
        ipv6_frame(17, &udp(1, 2, b"abc")),
    ];
    let v = run(&mut e, &mut frames);
    assert!(v.iter().all(|x| *x == (LuaVerdict::Accept, true)), "{v:?}");
    let f = &frames[0];
    assert_eq!(f[22], 63);
    assert_eq!(&f[26..30], &[1, 2, 3, 4]);
    assert_eq!(&f[30..34], &[5, 6, 7, 8]);
    assert_eq!(f[20], 0x20); // flags.all = 1 (MF)
    assert_eq!(f[15], 7);
    assert_eq!(&f[18..20], &[0, 99]);
    assert_eq!(u16::from_be_bytes([f[36], f[37]]), 8080);
    assert_eq!(f[47], 0x18);
    assert_eq!(&f[54..], b"HEYlo");
    assert_eq!(u16::from_be_bytes([frames[1][34], frames[1][35]]), 5353);
    assert_eq!(frames[2][38], 0x41);
    assert_eq!(frames[3][21], 1);
    assert_eq!(frames[3][37], 0x99);
    let f6 = &frames[3];
    assert_eq!(&f6[14..18], &[0x63, 0xca, 0xbc, 0xde]);
    assert_eq!(&f6[0..6], &[0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f]);
    assert_eq!(&f6[58..62], &[0xff; 4]);
    assert_eq!(&f6[62..66], &[0, 0, 0, 5]);
    assert_eq!(f6[67], 0x11);
    assert_eq!(&f6[68..70], &1000u16.to_be_bytes());
    for f in &frames {
        assert!(checksums_valid(f), "bad checksum in {f:?}");
    }
}

/// Haka's semantics: a checksum field a rule writes is recomputed when the packet leaves
/// (IP, TCP, UDP and ICMP alike).
#[test]
fn written_checksums_are_recomputed() {
    let (mut e, _) = engine(
        r#"haka.rule{ on = haka.dissectors.ipv4.events.receive_packet, eval = function(ip) ip.checksum = 0x1111 end }
           haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function(t) t.checksum = 0xdead end }
           haka.rule{ on = haka.dissectors.udp.events.receive_packet, eval = function(u) u.checksum = 0xdead end }
           haka.rule{ on = haka.dissectors.icmp.events.receive_packet, eval = function(i) i.checksum = 1 end }"#,
    );
    let mut frames =
        vec![ipv4_frame(6, &tcp(1, 2, 0, b"x")), ipv4_frame(17, &udp(5, 53, b"q")), ipv4_frame(1, &icmp_echo(b"p"))];
    let before = frames.clone();
    let r = run(&mut e, &mut frames);
    for (i, f) in frames.iter().enumerate() {
        assert!(r[i].1, "frame {i} modified");
        assert!(checksums_valid(f), "frame {i}: {f:02x?}");
        assert_eq!(f, &before[i], "frame {i}: same bytes once the checksums are recomputed");
    }
}

/// Passive mode: writes raise Haka's "read only buffer" and change nothing.
#[test]
fn read_only_packets_in_passive_mode() {
    let opts = LuaOptions { read_only: true, ..LuaOptions::default() };
    let (mut e, _, _f) = engine_opts(
        r#"R = {}
           haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function(t)
             R[#R + 1] = select(2, pcall(function() t.srcport = 3 end))
             R[#R + 1] = select(2, pcall(function() t.flags.syn = true end))
             R[#R + 1] = select(2, pcall(function() t.ip.ttl = 3 end))
             R[#R + 1] = select(2, pcall(function() t.ip.flags.df = false end))
             R[#R + 1] = select(2, pcall(function() t:compute_checksum() end))
             R[#R + 1] = haka.capture_mode()
           end }"#,
        &opts,
    );
    let mut frames = vec![ipv4_frame(6, &tcp(1, 2, 0, b""))];
    let before = frames.clone();
    let r = run(&mut e, &mut frames);
    assert_eq!(r[0], (LuaVerdict::Accept, false));
    assert_eq!(frames, before);
    assert_eq!(
        eval_str(&e, "return table.concat(R, '|')"),
        "read only buffer|read only buffer|read only buffer|read only buffer|read only buffer|passthrough"
    );
}

/// Haka's errors for bad field values, and the writes it accepts (truncated).
#[test]
fn bad_field_values_raise_hakas_errors() {
    let (mut e, _) = engine(
        r#"local ipv4 = require("protocol/ipv4")
           R = {}
           local function try(f) local ok, err = pcall(f); R[#R + 1] = ok and "ok" or err end
           haka.rule{ on = haka.dissectors.ipv4.events.receive_packet, eval = function(p)
             try(function() p.version = 77 end)
             try(function() p.len = -84 end)
             try(function() p.ttl = 333 end)
             try(function() p.proto = -14 end)
             try(function() p.src = ipv4.addr(350, 350, 350, 350) end)
             try(function() p.dst = ipv4.addr("350.350.350.350") end)
             print(true, "a", 1)
           end }"#,
    );
    let mut frames = vec![ipv4_frame(6, &tcp(1, 2, 0, b""))];
    run(&mut e, &mut frames);
    assert_eq!(
        eval_str(&e, "return table.concat(R, '|')"),
        "ok|number must not be negative|ok|number must not be negative|invalid IPv4 address format|invalid IPv4 address format"
    );
    assert_eq!(frames[0][14 + 8], (333 % 256) as u8);
}

/// pkt.id counts the packets handed to the rules; pkt.data is one table per packet.
#[test]
fn packet_id_and_data() {
    let (mut e, _) = engine(
        r#"R = {}
           haka.rule{ on = haka.dissectors.packet.events.receive_packet, eval = function(p)
             p.data.n = (p.data.n or 0) + 1
             R[#R + 1] = p.id .. ":" .. p.data.n
           end }
           haka.rule{ on = haka.dissectors.packet.events.receive_packet, eval = function(p)
             p.data.n = p.data.n + 1
             R[#R + 1] = tostring(p.data.n)
           end }
           haka.rule{ on = haka.dissectors.ipv4.events.receive_packet, eval = function(ip)
             ip.dont_reassemble = true
             R[#R + 1] = tostring(ip.dont_reassemble)
           end }"#,
    );
    let mut frames = vec![ipv4_frame(6, &tcp(1, 2, 0, b"")), ipv4_frame(6, &tcp(1, 2, 0, b""))];
    let r = run(&mut e, &mut frames);
    assert_eq!(r, vec![(LuaVerdict::Accept, false); 2], "dont_reassemble does not modify the packet");
    let mut more = vec![ipv4_frame(6, &tcp(1, 2, 0, b""))];
    run(&mut e, &mut more);
    assert_eq!(eval_str(&e, "return table.concat(R, ' ')"), "1:1 2 true 2:1 2 true 3:1 2 true");
}

/// packet/ipv4/tcp/udp/icmp.create, payload:append, inject and send: the forged frames come
/// back with lengths and checksums set, tagged with the packet that made them.
#[test]
fn forged_packets() {
    let (mut e, _) = engine(
        r#"local ipv4 = require("protocol/ipv4")
           haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function(pkt)
             local n = haka.dissectors.packet.create()
             n = haka.dissectors.ipv4.create(n)
             n.ttl = pkt.ttl
             n.src, n.dst = pkt.dst, pkt.src
             n = haka.dissectors.tcp.create(n)
             n.srcport, n.dstport = pkt.dstport, pkt.srcport
             n.flags.ack = true
             n.checksum = 0xdead
             n.payload:append(pkt.payload:clone())
             n.payload:append("!")
             n:inject()
             local u = haka.dissectors.udp.create(haka.dissectors.ipv4.create(haka.dissectors.packet.create()),
               { srcport = 3333, dstport = 4444 })
             u:send()
             local ok, err = pcall(function() u:send() end)
             assert(not ok and err:find("already sent"))
             local i = haka.dissectors.icmp.create(haka.dissectors.ipv4.create(haka.dissectors.packet.create()),
               { type = 6, code = 1 })
             -- made, never sent: nothing leaves
           end }"#,
    );
    let mut frames = vec![ipv4_frame(17, &udp(1, 2, b"")), ipv4_frame(6, &tcp(1000, 80, 0x18, b"hello"))];
    assert!(!e.has_forged());
    run(&mut e, &mut frames);
    assert!(e.has_forged());
    let f = e.take_forged();
    assert!(!e.has_forged());
    assert!(e.take_forged().is_empty());
    assert_eq!(f.len(), 2);
    assert_eq!((f[0].inject, f[0].origin, f[1].inject, f[1].origin), (true, 1, false, 1));
    let t = &f[0].data;
    assert_eq!(t.len(), 14 + 20 + 20 + 6);
    assert_eq!(&t[0..12], &[0u8; 12], "link addresses zero");
    assert_eq!(&t[12..14], &[0x08, 0x00]);
    let m = dissect(t, LinkType::Ethernet, &DissectOptions::default()).expect("forged frame dissects");
    assert_eq!((m.proto, m.ip_len, m.payload_len), (6, 46, 6));
    assert_eq!(&t[14 + 12..14 + 16], &DST);
    assert_eq!(&t[14 + 16..14 + 20], &SRC);
    assert_eq!(t[14 + 8], 64);
    assert_eq!(&t[34..38], &[0, 80, 0x03, 0xe8]);
    assert_eq!(t[34 + 13], 0x10);
    assert_eq!(&t[54..], b"hello!");
    assert!(checksums_valid(t));
    let u = &f[1].data;
    assert_eq!(u.len(), 14 + 20 + 8);
    assert_eq!(&u[34..38], &[0x0d, 0x05, 0x11, 0x5c]);
    assert_eq!(&u[38..40], &[0, 8], "udp length");
    assert!(checksums_valid(u));
    // the received packets are untouched
    assert!(checksums_valid(&frames[1]));
}

/// Forging errors: a non-new packet, too many new packets, appending to a received packet.
#[test]
fn forging_errors() {
    let (mut e, _) = engine(
        r#"R = {}
           local function try(f) local ok, err = pcall(f); R[#R + 1] = ok and "ok" or err:gsub("^.-: ", "", 1) end
           haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function(pkt)
             try(function() haka.dissectors.tcp.create(pkt.ip) end)
             try(function() pkt:inject() end)
             try(function() haka.dissectors.tcp.create(haka.dissectors.packet.create()) end)
             try(function() for i = 1, 100 do haka.dissectors.packet.create(10) end end)
           end }"#,
    );
    let mut frames = vec![ipv4_frame(6, &tcp(1, 2, 0, b"ab"))];
    let before = frames.clone();
    let r = run(&mut e, &mut frames);
    assert_eq!(r[0], (LuaVerdict::Accept, false));
    assert_eq!(frames, before);
    assert!(!e.has_forged());
    let got = eval_str(&e, "return table.concat(R, '|')");
    let parts: Vec<&str> = got.split('|').collect();
    assert_eq!(parts.len(), 4, "{got}");
    assert!(parts[0].contains("a new packet expected"), "{got}");
    assert!(parts[1].contains("only a new packet"), "{got}");
    assert!(parts[2].contains("a new packet expected") || parts[2].contains("IPv4 packet expected"), "{got}");
    assert!(parts[3].contains("too many new packets"), "{got}");
    // the next burst may forge again
    let mut again = vec![ipv4_frame(6, &tcp(1, 2, 0, b""))];
    run(&mut e, &mut again);
}

#[test]
fn drop_and_default_accept() {
    let (mut e, a) = engine(
        r#"
        haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function(t)
            if t.dstport == 22 then t:drop() end
        end }
        haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function(t)
            haka.alert{ description = "second " .. t.dstport }
        end }
        haka.rule{ on = haka.dissectors.ipv4.events.send_packet, eval = function(ip)
            haka.alert{ description = "sent " .. ip.ttl }
        end }
    "#,
    );
    let mut frames = vec![ipv4_frame(6, &tcp(1, 22, 0, b"")), ipv4_frame(6, &tcp(1, 80, 0, b""))];
    let v = run(&mut e, &mut frames);
    assert_eq!(v, vec![(LuaVerdict::Drop, false), (LuaVerdict::Accept, false)]);
    // after the drop no other rule runs for that packet (and it is not sent)
    assert_eq!(descs(&a), vec!["second 80", "sent 64"]);
}

#[test]
fn policies_each_criterion() {
    let (mut e, a) = engine(
        r#"
        local ipv4 = require("protocol/ipv4")
        local P = haka.dissectors.tcp.policies.next_dissector
        haka.policy{ on = P, name = "value", dstport = 1, action = haka.policy.drop }
        haka.policy{ on = P, name = "set", dstport = haka.policy.set{2, 3}, action = haka.policy.drop }
        haka.policy{ on = P, name = "range", dstport = haka.policy.range(10, 20), action = haka.policy.drop }
        haka.policy{ on = P, name = "oor", dstport = haka.policy.outofrange(0, 60000), action = haka.policy.drop }
        haka.policy{ on = P, name = "present", srcport = 7777, dstport = haka.policy.present(), action = { haka.policy.alert{ severity = "low" }, haka.policy.drop } }
        haka.policy{ on = P, name = "absent", srcport = 7778, nothere = haka.policy.absent(), action = haka.policy.log(haka.log, "info", "absent ok %d", 1) }
        -- last eligible wins: 443 matches range(400,500) then accept
        haka.policy{ on = P, dstport = haka.policy.range(400, 500), action = haka.policy.drop }
        haka.policy{ on = P, dstport = 443, action = haka.policy.accept }
        local IP = haka.dissectors.ipv4.policies.next_dissector
        haka.policy{ on = IP, proto = 17, action = haka.policy.drop }
        haka.policy{ on = haka.dissectors.udp.policies.next_dissector, srcport = 99, action = haka.policy.drop }
        haka.policy{ on = IP, proto = 1, action = haka.policy.accept }
    "#,
    );
    let mut frames = vec![
        ipv4_frame(6, &tcp(5, 1, 0, b"")),
        ipv4_frame(6, &tcp(5, 3, 0, b"")),
        ipv4_frame(6, &tcp(5, 15, 0, b"")),
        ipv4_frame(6, &tcp(5, 61000, 0, b"")),
        ipv4_frame(6, &tcp(7777, 100, 0, b"")),
        ipv4_frame(6, &tcp(7778, 100, 0, b"")),
        ipv4_frame(6, &tcp(5, 443, 0, b"")),
        ipv4_frame(6, &tcp(5, 450, 0, b"")),
        ipv4_frame(6, &tcp(5, 100, 0, b"")),
        ipv4_frame(17, &udp(5, 100, b"")),
        ipv4_frame(1, &icmp_echo(b"")),
    ];
    let v: Vec<LuaVerdict> = run(&mut e, &mut frames).into_iter().map(|x| x.0).collect();
    use LuaVerdict::*;
    assert_eq!(v, vec![Drop, Drop, Drop, Drop, Drop, Accept, Accept, Drop, Accept, Drop, Accept]);
    let al = a.borrow();
    assert_eq!(al.len(), 1);
    assert_eq!(al[0].description, "next_dissector");
    assert_eq!(al[0].severity, "low");
}

#[test]
fn ipv4_addr_network_api() {
    let (mut e, _) = engine(
        r#"
        local ipv4 = require("protocol/ipv4")
        haka.policy{ on = haka.dissectors.ipv4.policies.next_dissector, proto = 6, action = haka.policy.drop }
        haka.rule{ on = haka.dissectors.ipv4.events.receive_packet, eval = function(ip)
            local net = ipv4.network("192.168.0.0/16")
            assert(tostring(net) == "192.168.0.0/16" and net.mask == 16 and tostring(net.net) == "192.168.0.0")
            assert(net:contains(ip.src) and not net:contains(ip.dst))
            assert(ipv4.network(ipv4.addr("10.1.2.3"), 8):contains(ip.dst))
            assert(ipv4.addr(3232235786) == ip.src and ip.src.packed == 3232235786)
        end }
        local P = haka.policy.new("custom")
        haka.policy{ on = haka.dissectors.tcp.policies.next_dissector, dstport = 80, action = haka.policy.accept }
    "#,
    );
    let mut frames = vec![ipv4_frame(6, &tcp(5, 80, 0, b""))];
    assert_eq!(run(&mut e, &mut frames)[0].0, LuaVerdict::Drop);
    assert_eq!(e.rule_errors(), 0);
}

#[test]
fn policy_ipv4_in_network() {
    let (mut e, _) = engine(
        r#"
        local ipv4 = require("protocol/ipv4")
        haka.policy{ on = haka.dissectors.ipv4.policies.next_dissector, proto = 6,
            action = function(policy, ip) if haka.policy.ipv4_in_network("192.168.0.0/16")(ip.src) then ip:drop() end end }
        haka.policy{ on = haka.dissectors.ipv4.policies.next_dissector, proto = 17,
            action = function(policy, ip) if ipv4.ipv4_in_network(ipv4.network("10.0.0.0/8"))(ip.src) then ip:drop() end end }
    "#,
    );
    let mut frames = vec![ipv4_frame(6, &tcp(5, 80, 0, b"")), ipv4_frame(17, &udp(5, 80, b""))];
    let v: Vec<LuaVerdict> = run(&mut e, &mut frames).into_iter().map(|x| x.0).collect();
    assert_eq!(v, vec![LuaVerdict::Drop, LuaVerdict::Accept]);
    assert_eq!(e.rule_errors(), 0);
}

#[test]
fn policy_learning() {
    let (mut e, _) = engine(
        r#"
        -- load time: learnt sets and ranges, learning only from eligible policies
        local P = haka.policy.new("t")
        local hits = 0
        local set = haka.policy.learn(haka.policy.set)
        haka.policy{ on = P, a = true, v = set, z = true, action = function() hits = hits + 1 end }
        assert(haka.policy.learning == false)
        haka.policy.learning = true
        P:apply{ values = { a = true, v = "x", z = true }, ctx = {} }
        P:apply{ values = { a = true, v = "y", z = false }, ctx = {} } -- not eligible: not learnt
        P:apply{ values = { a = true, z = true }, ctx = {} }           -- nil: not learnt
        assert(hits == 1, hits)
        haka.policy.learning = false
        assert(set("x") and not set("y") and not set(nil))
        P:apply{ values = { a = true, v = "y", z = true }, ctx = {} }
        assert(hits == 1)
        local ok, err = pcall(haka.policy.learn, haka.policy.outofrange)
        assert(not ok and err:find("cannot learn on haka.policy.outofrange criterion$"), err)
        ok, err = pcall(haka.policy.learn, function() end)
        assert(not ok and err:find("cannot learn on this criterion$"), err)

        -- on packets: a range learnt from the first two packets
        local n = 0
        haka.rule{ on = haka.dissectors.ipv4.events.receive_packet, eval = function()
            n = n + 1
            haka.policy.learning = n <= 2
        end }
        haka.policy{ on = haka.dissectors.tcp.policies.next_dissector,
            dstport = haka.policy.learn(haka.policy.range), action = haka.policy.drop }
    "#,
    );
    let mut frames: Vec<_> = [90, 80, 85, 100, 79, 80].iter().map(|&p| ipv4_frame(6, &tcp(5, p, 0, b""))).collect();
    let v: Vec<LuaVerdict> = run(&mut e, &mut frames).into_iter().map(|x| x.0).collect();
    use LuaVerdict::{Accept, Drop};
    assert_eq!(v, vec![Drop, Drop, Drop, Accept, Accept, Drop]);
    assert_eq!(e.rule_errors(), 0);
}

#[test]
fn dissector_parent() {
    let (mut e, _) = engine(
        r#"
        haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function(tcp)
            local ip = tcp:parent()
            assert(ip.name == "ipv4" and ip == tcp:parent(1) and ip == tcp:parent("ipv4"), "same object")
            assert(tcp:parent("packet") == tcp:parent(2) and tcp:parent(2).name == "packet")
            assert(tcp:parent(3) == nil and tcp:parent("ipv6") == nil and tcp:parent("nope") == nil)
            assert(ip:parent() == tcp:parent(2) and ip:parent():parent() == nil)
            assert(tcp._parent == ip and ip._next_dissector == tcp and tcp._next_dissector == nil)
            assert(ip._parent._next_dissector == ip)
            local lines = {}
            debug.pprint(tcp:parent(2), { depth = 1, print = function(l) lines[#lines + 1] = l end })
            assert(lines[2] == "  _next_dissector : userdata ipv4" and lines[3] == "  _parent : nil", lines[3])
            -- Haka's ipv4 object shows its dont_reassemble flag (sorted among the fields)
            lines = {}
            debug.pprint(ip, { depth = 1, print = function(l) lines[#lines + 1] = l end })
            assert(lines[5] == "  dont_reassemble : false" and lines[4]:match("^  checksum : "), lines[5])
        end }
    "#,
    );
    let mut frames = vec![ipv4_frame(6, &tcp(5, 80, 0, b""))];
    assert_eq!(run(&mut e, &mut frames)[0].0, LuaVerdict::Accept);
    assert_eq!(e.rule_errors(), 0);
}

#[test]
fn rule_group_semantics() {
    let (mut e, a) = engine(
        r#"
        local trace = {}
        local g = haka.rule_group{ name = "g", on = haka.dissectors.tcp.events.receive_packet,
            init = function(t) trace = { "init" } end,
            continue = function(ret, t) table.insert(trace, "cont:" .. tostring(ret)); return not ret end,
            final = function(t) table.insert(trace, "final") end }
        g:rule{ eval = function(t) table.insert(trace, "r1"); return false end }
        g:rule{ eval = function(t) table.insert(trace, "r2"); if t.dstport == 22 then t:drop() end; return t.dstport == 23 end }
        g:rule{ eval = function(t) table.insert(trace, "r3") end }
        haka.rule{ on = haka.dissectors.ipv4.events.send_packet, eval = function(ip) end }
        haka.rule{ on = haka.dissectors.tcp.events.send_packet, eval = function(t)
            haka.alert{ description = table.concat(trace, ",") } end }
        haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function(t)
            if t.dstport ~= 80 then haka.alert{ description = table.concat(trace, ",") } end end }
    "#,
    );
    let mut frames = vec![
        ipv4_frame(6, &tcp(5, 80, 0, b"")),
        ipv4_frame(6, &tcp(5, 23, 0, b"")),
        ipv4_frame(6, &tcp(5, 22, 0, b"")),
    ];
    let v: Vec<LuaVerdict> = run(&mut e, &mut frames).into_iter().map(|x| x.0).collect();
    assert_eq!(v, vec![LuaVerdict::Accept, LuaVerdict::Accept, LuaVerdict::Drop]);
    assert_eq!(
        descs(&a),
        vec![
            "init,r1,cont:false,r2,cont:false,r3,cont:nil,final",
            "init,r1,cont:false,r2,cont:true",
            "init,r1,cont:false,r2,cont:true",
        ]
    );
}

#[test]
fn alert_all_keys_and_update() {
    let (mut e, a) = engine(
        r#"
        haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function(t)
            local first = haka.alert{ description = "first" }
            local al = haka.alert{
                start_time = haka.time(1000.5), end_time = haka.time(1001),
                description = "scan", severity = "high", confidence = "medium", completion = "failed",
                method = { description = "port scan", ref = { "cve/1", "cwe/2" } },
                sources = { haka.alert.address(t.ip.src), haka.alert.service("tcp/" .. t.srcport) },
                targets = haka.alert.address(t.ip.dst, "10.0.0.2"),
                ref = { first },
            }
            al:update{ completion = "successful" }
        end }
    "#,
    );
    let mut frames = vec![ipv4_frame(6, &tcp(5, 80, 0, b""))];
    run(&mut e, &mut frames);
    let al = a.borrow();
    assert_eq!(al.len(), 3);
    let x = &al[1];
    assert_eq!(x.time_secs, 1000.5);
    assert_eq!(x.end_time_secs, Some(1001.0));
    assert_eq!(
        (x.description.as_str(), x.severity.as_str(), x.confidence.as_str(), x.completion.as_str()),
        ("scan", "high", "medium", "failed")
    );
    assert_eq!(x.method_description, "port scan");
    assert_eq!(x.method_ref, vec!["cve/1", "cwe/2"]);
    assert_eq!(x.sources, vec!["address: 192.168.1.10", "service: tcp/5"]);
    assert_eq!(x.targets, vec!["address: 10.0.0.1, 10.0.0.2"]);
    assert_eq!(x.refs, vec![al[0].id]);
    assert_ne!(x.id, al[0].id);
    assert_eq!(x.id >> 48, 3);
    assert!(!x.update);
    assert!(al[2].update && al[2].id == x.id && al[2].completion == "successful");
    assert_eq!(e.counters().alerts, 3);
}

#[test]
fn syntax_error_is_file_line() {
    let p =
        rules_file("haka.rule{ on = haka.dissectors.ipv4.events.receive_packet,\n eval = function(ip) if then end }\n");
    let err = LuaEngine::load(&p, &LuaOptions::default(), 0, Box::new(|_| {})).unwrap_err();
    assert!(err.starts_with(&format!("{}:2:", p.display())), "{err}");
    assert!(!err.contains('\n'));
    let p = rules_file("local x = 1\nhaka.rule{ on = 42, eval = function() end }\n");
    let err = LuaEngine::load(&p, &LuaOptions::default(), 0, Box::new(|_| {})).unwrap_err();
    assert_eq!(err, format!("{}:2: rule on must be an event", p.display()));
    let err =
        LuaEngine::load(Path::new("/nonexistent/r.lua"), &LuaOptions::default(), 0, Box::new(|_| {})).unwrap_err();
    assert!(err.starts_with("/nonexistent/r.lua:0: cannot read rules file"), "{err}");
}

#[test]
fn runtime_error_counted_dropped_others_fine() {
    let src = r#"
        haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function(t)
            if t.dstport == 666 then error("boom") end
            if t.dstport == 667 then local x = nil; return x.field end
            haka.alert{ description = "ok " .. t.dstport }
        end }
    "#;
    let (mut e, a) = engine(src);
    let mut frames = vec![
        ipv4_frame(6, &tcp(5, 1, 0, b"")),
        ipv4_frame(6, &tcp(5, 666, 0, b"")),
        ipv4_frame(6, &tcp(5, 2, 0, b"")),
        ipv4_frame(6, &tcp(5, 667, 0, b"")),
        ipv4_frame(6, &tcp(5, 3, 0, b"")),
    ];
    let v: Vec<LuaVerdict> = run(&mut e, &mut frames).into_iter().map(|x| x.0).collect();
    use LuaVerdict::*;
    assert_eq!(v, vec![Accept, Drop, Accept, Drop, Accept]);
    assert_eq!(e.rule_errors(), 2);
    assert_eq!(descs(&a), vec!["ok 1", "ok 2", "ok 3"]);
    // rule_error_drop = false accepts the failing packets
    let opts = LuaOptions { rule_error_drop: false, ..LuaOptions::default() };
    let (mut e, _, _rules) = engine_opts(src, &opts);
    let v: Vec<LuaVerdict> = run(&mut e, &mut frames).into_iter().map(|x| x.0).collect();
    assert!(v.iter().all(|x| *x == Accept));
    assert_eq!(e.rule_errors(), 2);
}

#[test]
fn an_error_escaping_the_per_packet_protection_is_counted_once() {
    // An error outside RT.run's per-packet pcall (an interruption between two packets, in
    // practice): every packet not yet decided gets the rule-error verdict, and the error
    // is one error in the counters and the log.
    let (mut e, _) = engine(r#"
        haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function(t) end }
    "#);
    e.st.run = e.st.lua.load("return function() error('outside the per-packet pcall') end").eval().unwrap();
    let mut frames = vec![ipv4_frame(6, &tcp(5, 1, 0, b"")), ipv4_frame(6, &tcp(5, 2, 0, b""))];
    let v: Vec<LuaVerdict> = run(&mut e, &mut frames).into_iter().map(|x| x.0).collect();
    assert_eq!(v, vec![LuaVerdict::Drop, LuaVerdict::Drop]);
    assert_eq!(e.rule_errors(), 1);
}

#[test]
fn infinite_loop_interrupted() {
    let opts = LuaOptions { instruction_budget: 20_000_000, ..LuaOptions::default() };
    let (mut e, a, _rules) = engine_opts(
        r#"
        haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function(t)
            if t.dstport == 666 then local n = 0; while true do n = n + 1 end end
            if t.dstport == 667 then while true do end end
            haka.alert{ description = "ok " .. t.dstport }
        end }
    "#,
        &opts,
    );
    let mut frames = vec![
        ipv4_frame(6, &tcp(5, 1, 0, b"")),
        ipv4_frame(6, &tcp(5, 666, 0, b"")),
        ipv4_frame(6, &tcp(5, 667, 0, b"")),
        ipv4_frame(6, &tcp(5, 2, 0, b"")),
    ];
    let t0 = Instant::now();
    let v: Vec<LuaVerdict> = run(&mut e, &mut frames).into_iter().map(|x| x.0).collect();
    let el = t0.elapsed();
    use LuaVerdict::*;
    assert_eq!(v, vec![Accept, Drop, Drop, Accept]);
    assert_eq!(e.counters().budget_exceeded, 2);
    assert!(el < Duration::from_secs(2), "{el:?}");
    assert_eq!(descs(&a), vec!["ok 1", "ok 2"]);
    // still works afterwards (and the JIT-compiled loop is interrupted again)
    let v: Vec<LuaVerdict> = run(&mut e, &mut frames).into_iter().map(|x| x.0).collect();
    assert_eq!(v, vec![Accept, Drop, Drop, Accept]);
}

#[test]
fn memory_hog_capped() {
    let opts = LuaOptions { memory_limit_bytes: 16 << 20, ..LuaOptions::default() };
    let (mut e, _, _rules) = engine_opts(
        r#"
        hog = {}
        haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function(t)
            if t.dstport == 666 then
                -- slow growth across packets: 1 MiB per packet, kept in a global
                table.insert(hog, string.rep("x", 1024 * 1024 - 64) .. #hog)
            elseif t.dstport == 667 then
                -- fast growth in one packet
                local l = {}
                while true do l[#l + 1] = string.rep("y", 4096) .. #l end
            end
        end }
    "#,
        &opts,
    );
    // Growth across bursts: caught after a burst (state recreated) or, if a burst runs
    // longer than a watchdog tick, inside it (that packet gets the rule-error verdict).
    for _ in 0..40 {
        let mut frames = vec![ipv4_frame(6, &tcp(5, 666, 0, b""))];
        run(&mut e, &mut frames);
    }
    let c = e.counters();
    assert!(c.memory_resets >= 1, "{c:?}");
    assert!(c.memory_exceeded >= 1, "{c:?}");
    assert!(e.used_memory() < 16 << 20);
    let mut frames = vec![ipv4_frame(6, &tcp(5, 667, 0, b"")), ipv4_frame(6, &tcp(5, 1, 0, b""))];
    let v = run(&mut e, &mut frames);
    assert_eq!(v[0].0, LuaVerdict::Drop);
    assert_eq!(v[1].0, LuaVerdict::Accept);
    assert!(e.counters().memory_exceeded >= 2, "{:?}", e.counters());
    assert!(e.used_memory() < 16 << 20);
}

#[test]
fn reload_keeps_old_rules_on_broken_file() {
    let (mut e, a, p) = engine_opts(
        r#"haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function(t) haka.alert{ description = "v1" } end }"#,
        &LuaOptions::default(),
    );
    std::fs::write(&p, "haka.rule{ on = \n").unwrap();
    let err = e.reload().unwrap_err();
    assert!(err.starts_with(&format!("{}:", p.display())), "{err}");
    let mut frames = vec![ipv4_frame(6, &tcp(5, 1, 0, b""))];
    run(&mut e, &mut frames);
    std::fs::write(&p, r#"haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function(t) haka.alert{ description = "v2" } end }"#)
        .unwrap();
    e.reload().unwrap();
    run(&mut e, &mut frames);
    assert_eq!(descs(&a), vec!["v1", "v2"]);
}

#[test]
fn engine_built_on_another_thread_is_swapped_in() {
    let (mut e, a, p) = engine_opts(
        r#"haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function(t) haka.alert{ description = "v1" } end }"#,
        &LuaOptions::default(),
    );
    let mut frames = vec![ipv4_frame(6, &tcp(5, 1, 0, b""))];
    run(&mut e, &mut frames);
    // the new file takes a while to load: built on another thread, as the control thread
    // does at a reload, while this one goes on
    std::fs::write(
        &p,
        r#"local t = os.clock() while os.clock() - t < 0.2 do end
        haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function(t) haka.alert{ description = "v2 " .. haka.current_thread() } end }"#,
    )
    .unwrap();
    let path = p.to_path_buf();
    let builder = std::thread::spawn(move || crate::dpdk::EngineHandoff::build(&path, &LuaOptions::default(), 3));
    let mut during = 0;
    while !builder.is_finished() {
        run(&mut e, &mut frames); // the old rules keep running meanwhile
        during += 1;
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(during >= 10, "the build did not take place while this thread ran ({during} bursts)");
    let built = builder.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
    e.adopt(built.into_engine());
    run(&mut e, &mut frames);
    let d = descs(&a);
    assert_eq!(d.len(), during + 2, "{d:?}");
    assert!(d[..during + 1].iter().all(|x| x == "v1"), "{d:?}");
    // the new rules alert through this engine's sink, with this worker's index
    assert_eq!(d.last().map(String::as_str), Some("v2 3"));
    assert_eq!(e.counters().reloads, 1);
    assert_eq!(e.counters().alerts, during as u64 + 2);
    // a broken file is refused by the builder: the running engine is untouched
    std::fs::write(&p, "haka.rule{ on = \n").unwrap();
    let err = crate::dpdk::EngineHandoff::build(&p, &LuaOptions::default(), 3).err().unwrap();
    assert!(err.starts_with(&format!("{}:", p.display())), "{err}");
    run(&mut e, &mut frames);
    assert_eq!(descs(&a).last().map(String::as_str), Some("v2 3"));
}

#[test]
fn no_packet_rules_and_global_events() {
    let (mut e, a) = engine(
        r#"
        haka.rule{ on = haka.events.started, eval = function() haka.alert{ description = "started" } end }
        haka.rule{ on = haka.events.exiting, eval = function() haka.log.info("bye %s", "now") end }
        haka.log("loaded %d", 1)
        haka.log.debug("hidden")
    "#,
    );
    assert!(!e.has_packet_rules());
    e.fire_started().unwrap();
    e.fire_exiting().unwrap();
    assert_eq!(descs(&a), vec!["started"]);
    let mut frames = vec![ipv4_frame(6, &tcp(5, 1, 0, b""))];
    assert_eq!(run(&mut e, &mut frames), vec![(LuaVerdict::Accept, false)]);
}

#[test]
fn hook_alias_and_regexp() {
    let (mut e, a) = engine(
        r#"
        local rem = require("regexp/pcre")
        local re = rem.re
        local rx = re:compile("%d+ (bar)", re.CASE_INSENSITIVE)
        haka.rule{ hook = haka.dissectors.tcp.events.receive_packet, eval = function(t)
            local m, b, e = rx:match(t.payload:asstring()) -- (on the vbuffer itself: a sub)
            local m2 = re:match("^hel+o", t.payload:asstring())
            local m3 = re:match("nomatch", "hello")
            haka.alert{ description = tostring(m) .. " " .. tostring(b) .. " " .. tostring(e) .. " " .. tostring(m2) .. " " .. tostring(m3) }
        end }
    "#,
    );
    let mut frames = vec![ipv4_frame(6, &tcp(5, 1, 0, b"hello 42 BAR"))];
    run(&mut e, &mut frames);
    assert_eq!(descs(&a), vec!["42 BAR 6 12 hello nil"]);
}

#[test]
fn big_burst_is_chunked_and_verdicts_align() {
    let (mut e, _) = engine(
        r#"haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function(t) if t.dstport % 3 == 0 then t:drop() end end }"#,
    );
    let mut frames: Vec<Vec<u8>> = (0..600u16).map(|i| ipv4_frame(6, &tcp(5, i, 0, b""))).collect();
    let v = run(&mut e, &mut frames);
    for (i, x) in v.iter().enumerate() {
        assert_eq!(x.0 == LuaVerdict::Drop, i % 3 == 0, "packet {i}");
    }
}

/// ns/packet for (a) no rules, (b) one ipv4 rule reading src, dst, ttl, (c) ten such rules.
/// Run with `cargo test --release -p haka-engine lua::tests::bench_ns_per_packet -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_ns_per_packet() {
    let one = r#"haka.rule{ on = haka.dissectors.ipv4.events.receive_packet, eval = function(ip)
        local s, d, t = ip.src, ip.dst, ip.ttl
        if t == 0 and s == d then ip:drop() end end }
    "#;
    // (d): ten different rules on several fields and dissectors (no common subexpressions)
    let mut ten_distinct = String::from("local ipv4 = require('protocol/ipv4')\n");
    for k in 0..10 {
        ten_distinct.push_str(&format!(
            "local net{k} = ipv4.network('10.{k}.0.0/16')\n\
             haka.rule{{ on = haka.dissectors.ipv4.events.receive_packet, eval = function(ip)\n\
               if ip.ttl == {k} or net{k}:contains(ip.src) or ip.id == {k} then ip:drop() end end }}\n\
             haka.rule{{ on = haka.dissectors.tcp.events.receive_packet, eval = function(t)\n\
               if t.dstport == {} and t.flags.syn then t:drop() end end }}\n",
            1000 + k
        ));
    }
    let cases = [
        ("a: no rules", String::new()),
        ("b: 1 ipv4 rule", one.to_string()),
        ("c: 10 ipv4 rules", one.repeat(10)),
        ("d: 10 distinct ipv4 + 10 tcp rules", ten_distinct),
    ];
    for (name, src) in cases {
        let (mut e, _) = engine(&src);
        let mut frames: Vec<Vec<u8>> = (0..32u16).map(|i| ipv4_frame(6, &tcp(5, i, 0x10, b"payload"))).collect();
        let metas: Vec<PacketMeta> =
            frames.iter().map(|f| dissect(f, LinkType::Ethernet, &DissectOptions::default()).unwrap()).collect();
        let iters = 200_000;
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t0 = Instant::now();
            for _ in 0..iters {
                let mut pkts: Vec<LuaPacket> =
                    frames.iter_mut().zip(metas.iter()).map(|(f, m)| LuaPacket::new(f, m, 0, 0)).collect();
                let o = e.run_burst(&mut pkts);
                std::hint::black_box(o);
            }
            let ns = t0.elapsed().as_nanos() as f64 / (iters as f64 * 32.0);
            best = best.min(ns);
        }
        println!("{name}: {best:.1} ns/packet (bursts of 32)");
    }
}

/// Lua time of one Modbus/TCP exchange through the sample dissector written with the grammar
/// (rules/modbus.lua) and the three rules of rules/modbus_rules.lua: a request segment and
/// its response segment handed to the dissector as the connection stage does (a read of
/// holding registers three times out of four, a write of multiple registers the fourth),
/// and one read response parsed alone. Run with
/// `cargo test --release -p haka-engine --lib modbus_exchange_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn modbus_exchange_cost() {
    let dissector = include_str!("../../../rules/modbus.lua");
    let rules = include_str!("../../../rules/modbus_rules.lua");
    // (the rules file loads the dissector from beside it: here it comes first, inline)
    let rules = rules.replace("local modbus = dofile(here .. 'modbus.lua')", "");
    let src = format!("local modbus = (function ()\n{dissector}\nend)()\n{rules}");
    let (e, _) = engine(&src);
    let got = eval_str(
        &e,
        r#"
        -- (the engine steps the collector between bursts: this loop has none)
        collectgarbage("restart")
        local modbus = haka.dissectors.modbus.class
        local flow = { can_continue = function() return true end, drop = function() error("dropped") end }
        local function adu(tid, unit, pdu) return string.char(math.floor(tid / 256), tid % 256, 0, 0, 0, #pdu + 1, unit) .. pdu end
        local req = adu(7, 1, string.char(3, 0, 10, 0, 10))
        local resp = adu(7, 1, string.char(3, 20) .. string.rep("", 20))
        local wreq = adu(8, 1, string.char(16, 0, 20, 0, 2, 4, 1, 2, 3, 4))
        local wresp = adu(8, 1, string.char(16, 0, 20, 0, 2))
        local function exchanges(n)
          local obj = modbus:new(flow)
          for i = 1, n do
            local q, r = req, resp
            if i % 4 == 0 then q, r = wreq, wresp end
            obj:_receive_data(haka.vbuffer_from(q):sub(0), 'up')
            obj:_receive_data(haka.vbuffer_from(r):sub(0), 'down')
          end
        end
        local function parses(n)
          local b = haka.vbuffer_from(resp)
          for _ = 1, n do
            local res, err = modbus.grammar.response:parse(b:pos('begin'))
            assert(err == nil and res.byte_count == 20)
          end
        end
        local function best(f, n)
          f(500)
          local b = math.huge
          for _ = 1, 5 do
            collectgarbage()
            local t = os.clock()
            f(n)
            b = math.min(b, (os.clock() - t) / n * 1e9)
          end
          return b
        end
        return string.format("exchange %.0f ns, response parse %.0f ns", best(exchanges, 3000), best(parses, 10000))"#,
    );
    println!("modbus (Lua dissector + 3 rules): {got}");
}

/// Diagnostic: prints LuaJIT trace aborts (error code, location) for a rule set
/// (`HK_RULES=file` or the built-in one). Codes: see lj_traceerr.h (0-based).
#[test]
#[ignore]
fn jit_debug() {
    let mut rules = String::from("local ipv4 = require('protocol/ipv4')\n");
    for k in 0..10 {
        rules.push_str(&format!(
            "local net{k} = ipv4.network('10.{k}.0.0/16')\n\
             haka.rule{{ on = haka.dissectors.ipv4.events.receive_packet, eval = function(ip)\n\
               if ip.ttl == {k} or net{k}:contains(ip.src) or ip.id == {k} then ip:drop() end end }}\n\
             haka.rule{{ on = haka.dissectors.tcp.events.receive_packet, eval = function(t)\n\
               if t.dstport == {} and t.flags.syn then t:drop() end end }}\n",
            1000 + k
        ));
    }
    let src = format!(
        r#"
        local n = 0
        jit.attach(function(what, tr, func, pc, otr, oex)
            if what == "abort" and n < 40 then n = n + 1
              local fi = require("jit.util").funcinfo(func, pc)
              print("abort", tr, fi.loc, otr, oex)
            end
        end, "trace")
        {}"#,
        std::env::var("HK_RULES").ok().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or(rules)
    );
    let (mut e, _) = engine(&src);
    let mut frames: Vec<Vec<u8>> = (0..32u16).map(|i| ipv4_frame(6, &tcp(5, i, 0x10, b"payload"))).collect();
    for _ in 0..2000 {
        run(&mut e, &mut frames);
    }
}

/// The collector's pause is doubled while the heap is small against the memory cap and
/// back to Lua's default once it holds more than a quarter of it.
#[test]
fn gc_pause_follows_the_heap_size() {
    let opts = LuaOptions { memory_limit_bytes: 32 << 20, ..LuaOptions::default() };
    let (mut e, _, _rules) = engine_opts(
        r#"
        keep = {}
        haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function(t)
            if t.dstport == 666 then
                for i = 1, 10 do keep[#keep + 1] = string.rep("x", 1024 * 1024) .. #keep end
            elseif t.dstport == 667 then
                keep = {}
                collectgarbage()
            end
        end }
    "#,
        &opts,
    );
    e.after_burst();
    assert_eq!(e.gc_pause(), 400);
    run(&mut e, &mut [ipv4_frame(6, &tcp(5, 666, 0, b""))]);
    e.after_burst();
    assert!(e.used_memory() > 8 << 20);
    assert_eq!(e.gc_pause(), 200);
    run(&mut e, &mut [ipv4_frame(6, &tcp(5, 667, 0, b""))]);
    e.after_burst();
    assert!(e.used_memory() < 4 << 20, "{}", e.used_memory());
    assert_eq!(e.gc_pause(), 400);
}

#[test]
fn splice_replaces_a_range_and_rejects_bad_ones() {
    assert_eq!(splice(b"Server: Apache\r\n", 8, 14, b"haka").unwrap(), b"Server: haka\r\n");
    assert_eq!(splice(b"abc", 0, 0, b"x").unwrap(), b"xabc");
    assert_eq!(splice(b"abc", 3, 3, b"x").unwrap(), b"abcx");
    assert!(splice(b"abc", 2, 1, b"x").is_none());
    assert!(splice(b"abc", 1, 4, b"x").is_none());
    assert!(splice(b"abc", -1, 2, b"x").is_none());
}

/// The buffer module's own tests (engine/lua/tests/vbuffer_test.lua), run as a rules file:
/// a failing check is a load error naming the test.
#[test]
fn vbuffer_lua_tests() {
    let p = rules_file(include_str!("../../lua/tests/vbuffer_test.lua"));
    let r = LuaEngine::load(&p, &LuaOptions::default(), 0, Box::new(|_| {}));
    if let Err(e) = r {
        panic!("{e}");
    }
}

/// The grammar's tests (engine/lua/tests/grammar_test.lua), run as a rules file.
#[test]
fn grammar_lua_tests() {
    let p = rules_file(include_str!("../../lua/tests/grammar_test.lua"));
    let r = LuaEngine::load(&p, &LuaOptions::default(), 0, Box::new(|_| {}));
    if let Err(e) = r {
        panic!("{e}");
    }
}

/// The state machines' and the Lua dissector classes' tests
/// (engine/lua/tests/state_machine_test.lua), run as a rules file.
#[test]
fn state_machine_lua_tests() {
    let p = rules_file(include_str!("../../lua/tests/state_machine_test.lua"));
    let r = LuaEngine::load(&p, &LuaOptions::default(), 0, Box::new(|_| {}));
    if let Err(e) = r {
        panic!("{e}");
    }
}

/// The regexp module's tests (engine/lua/tests/regexp_test.lua), run as a rules file.
#[test]
fn regexp_lua_tests() {
    let p = rules_file(include_str!("../../lua/tests/regexp_test.lua"));
    let r = LuaEngine::load(&p, &LuaOptions::default(), 0, Box::new(|_| {}));
    if let Err(e) = r {
        panic!("{e}");
    }
}

/// Runs `code` in the engine's state (rules loaded) and returns its string result; Lua
/// errors panic with their message.
fn eval_str(e: &LuaEngine, code: &str) -> String {
    e.st.lua.load(code).set_name("=test").eval::<String>().unwrap_or_else(|err| panic!("{err}"))
}

/// `debug.pprint(obj, opts)` of the Lua expression `expr`, its lines joined by "\n".
const PPRINT: &str = r#"
local function pp(obj, opts)
  local out = {}
  opts = opts or {}
  opts.print = function(line) out[#out + 1] = line end
  debug.pprint(obj, opts)
  return table.concat(out, "\n")
end
"#;

#[test]
fn pprint_nested_table_in_hakas_format() {
    let (e, _) = engine("");
    let got = eval_str(
        &e,
        &format!(
            "{PPRINT} return pp({{ b = {{ y = 'two', x = 1 }}, a = true, [10] = 'ten', [2] = 'two', _hidden = 1,
               f = print, e = {{}} }}, {{ hide = {{ debug.hide_underscore, debug.hide_function }} }})"
        ),
    );
    // keys sorted by their string form ("10" < "2" < "a"), strings quoted, empty tables braced
    assert_eq!(
        got,
        "table {\n  10 : \"ten\"\n  2 : \"two\"\n  a : true\n  b : table {\n    x : 1\n    y : \"two\"\n  }\n  \
         e : table {\n  }\n}"
    );
    // depth, title, indent, one hide function, functions, recursion
    let got = eval_str(
        &e,
        &format!(
            "{PPRINT} local t = {{ n = {{ m = {{ 1 }} }}, f = print }}; t.self = t
             return pp(t, {{ depth = 2, title = 'top', indent = '> ' }}) .. '|' ..
               pp(t, {{ hide = debug.hide_function, depth = 1 }})"
        ),
    );
    assert_eq!(
        got,
        "> top : table {\n>   f : function\n>   n : table {\n>     m : table\n>   }\n>   self : recursive value\n> }|\
         table {\n  n : table\n  self : recursive value\n}"
    );
    // addresses and times print on one line (Haka's swig objects with a tostring)
    let got = eval_str(
        &e,
        &format!(
            "{PPRINT} local ipv4 = require('protocol/ipv4')
             return pp({{ a = ipv4.addr('199.19.56.1'), n = ipv4.network('10.0.0.0/8'), s = 'x' }})"
        ),
    );
    assert_eq!(got, "table {\n  a : userdata addr 199.19.56.1\n  n : userdata network 10.0.0.0/8\n  s : \"x\"\n}");
    assert!(eval_str(&e, &format!("{PPRINT} return pp(haka.time(0))")).starts_with("userdata time "));
    // options must be a table
    let err = e.st.lua.load("debug.pprint({}, 3)").exec().unwrap_err().to_string();
    assert!(err.contains("options must be a table"), "{err}");
}

#[test]
fn class_hierarchy_methods_properties_and_pprint() {
    let (e, _) = engine("");
    let got = eval_str(
        &e,
        &format!(
            r#"{PPRINT}
            local class = require('class')
            local Shape = class.class('Shape')
            function Shape.method:__init(name) self.label = name end
            function Shape.method:area() return 0 end
            function Shape.method:describe() return self.label .. ':' .. self:area() end
            Shape.property.kind = {{ get = function(self) return 'shape' end }}
            local Rect = class.class('Rect', Shape)
            function Rect.method:__init(w, h)
              class.super(Rect).__init(self, 'rect')
              self._w, self._h = w, h
            end
            function Rect.method:area() return self._w * self._h end
            Rect.property.width = {{
              get = function(self) return self._w end,
              set = function(self, v) self._w = v end,
            }}
            local r = Rect:new(2, 3)
            assert(r:describe() == 'rect:6', r:describe())
            r.width = 5
            assert(r:area() == 15 and r._w == 5 and rawget(r, 'width') == nil)
            assert(r.kind == 'shape', 'a parent property')
            assert(class.isa(r, Rect) and class.isa(r, Shape) and not class.isa(Shape:new('s'), Rect))
            assert(class.classof(r) == Rect and Rect.super == Shape and class.isclass(Rect))
            assert(not class.isclass({{}}) and Rect.name == 'Rect' and Rect.new ~= nil)
            assert(tostring(Rect) == '<class: Rect>')
            assert(tostring(r):match('^<class instance Rect: 0x%x+>$'), tostring(r))
            -- a method added after instances exist is found; __tostring and __index methods
            function Shape.method:late() return 'late' end
            assert(r:late() == 'late')
            function Rect.method:__tostring() return 'Rect ' .. self._w end
            assert(tostring(r) == 'Rect 5')
            local Dyn = class.class('Dyn')
            function Dyn.method:__index(k) return 'dyn ' .. k end
            local d = Dyn:new()
            assert(d.anything == 'dyn anything')
            d:addproperty('p', function(self) return 42 end)
            assert(d.p == 42)
            local c = r:clone()
            assert(class.classof(c) == Rect and c._w == 5)
            -- pprint: own fields sorted, then the instance's properties, then its class's
            return pp(r, {{ hide = debug.hide_underscore }}) .. '|' .. pp(d) .. '|' ..
              pp(r, {{ depth = 0 }})"#
        ),
    );
    assert_eq!(
        got,
        "class Rect {\n  label : \"rect\"\n  width : 5\n}|class Dyn {\n  p : 42\n}|class Rect"
    );
}

#[test]
fn check_errors_blame_the_caller() {
    let (e, _) = engine("");
    let got = eval_str(
        &e,
        r#"local check = require('check')
        local function lib(x, y)
          check.type(1, x, 'string')
          check.types(2, y, { 'number', 'nil' })
          check.assert(x ~= '', 'empty x')
          return x
        end
        local out = {}
        local function try(...)
          local ok, err = pcall(lib, ...)
          out[#out + 1] = ok and 'ok' or err
        end
        try('a')
        try(1)
        try('a', 'b')
        local ok, err = pcall(function() lib('') end) -- line 16: the caller is blamed
        out[#out + 1] = err
        ok, err = pcall(check.error, 'boom')
        out[#out + 1] = tostring(err):match('boom$')
        return table.concat(out, '|')"#,
    );
    assert_eq!(
        got,
        "ok|invalid parameter 1, expected string|invalid parameter 2, expected number or nil|test:16: empty x|boom"
    );
}

#[test]
fn payload_vbuffer_resize_rebuilds_the_frame_with_valid_lengths_and_checksums() {
    let (mut e, _) = engine(
        r#"
        require("protocol/udp")
        haka.rule{ on = haka.dissectors.udp.events.receive_packet, eval = function(u)
            local p = u.payload
            assert(#p == 11 and p:asstring() == "hello world")
            p:sub(5, 6):erase()                         -- "hello"
            p:pos("end"):insert(haka.vbuffer_from(", vbuffers!"))
            p:pos(0):insert(haka.vbuffer_from(">"))
            assert(u.payload:asstring() == ">hello, vbuffers!")
            KEPT = u.payload
        end }
        haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function(t)
            t.payload:sub(0, 2):setfixedstring("HE")     -- same size: in place
            t.payload[3] = 0x4c
        end }
    "#,
    );
    let mut frames = vec![ipv4_frame(17, &udp(53, 4000, b"hello world")), ipv4_frame(6, &tcp(1, 80, 0x10, b"hello"))];
    let metas: Vec<PacketMeta> =
        frames.iter().map(|f| dissect(f, LinkType::Ethernet, &DissectOptions::default()).unwrap()).collect();
    let mut pkts: Vec<LuaPacket> =
        frames.iter_mut().zip(metas.iter()).map(|(f, m)| LuaPacket::new(f, m, 0, 1)).collect();
    e.run_burst(&mut pkts);
    assert!(pkts.iter().all(|p| p.modified && p.verdict == LuaVerdict::Accept));
    let rw = pkts[0].rewrite.take().expect("a size change is a rewrite");
    assert!(pkts[1].rewrite.is_none(), "same size: written in place");
    drop(pkts);
    assert_eq!(&frames[1][54..], b"HELlo");
    assert!(checksums_valid(&frames[1]));
    assert_eq!((rw.offset, rw.old_len, &rw.bytes[..]), (42, 11, &b">hello, vbuffers!"[..]));
    let mut out = Vec::new();
    assert!(rebuild_payload(&frames[0], &metas[0], &rw, &mut out));
    assert_eq!(out.len(), frames[0].len() + 6);
    assert_eq!(&out[..34 - 20 + 2], &frames[0][..16], "ethernet and IP header start unchanged");
    assert_eq!(u16::from_be_bytes([out[16], out[17]]), 20 + 8 + 17, "IPv4 total length");
    assert_eq!(u16::from_be_bytes([out[38], out[39]]), 8 + 17, "UDP length");
    assert_eq!(&out[42..], b">hello, vbuffers!");
    assert!(checksums_valid(&out));
    // a buffer a rule kept reads a copy once the burst is over
    assert_eq!(eval_str(&e, "return KEPT:asstring()"), ">hello, vbuffers!");
}

#[test]
fn payload_not_read_means_no_rewrite_and_no_modification() {
    let (mut e, _) = engine(
        r#"
        require("protocol/udp")
        haka.rule{ on = haka.dissectors.udp.events.receive_packet, eval = function(u)
            assert(u.payload:sub(0, 5):asstring() == "hello")
        end }
    "#,
    );
    let mut frames = vec![ipv4_frame(17, &udp(53, 4000, b"hello world"))];
    let before = frames[0].clone();
    let v = run(&mut e, &mut frames);
    assert_eq!(v, vec![(LuaVerdict::Accept, false)]);
    assert_eq!(frames[0], before);
}

/// A rules file that accepts at the raw dissector's next_dissector point says so (the
/// worker then does not drop IPv4 as an unknown dissector).
#[test]
fn packet_next_dissector_accept_is_reported() {
    use super::stateful::PACKET_NEXT_ACCEPT;
    let (e, _) = engine(
        r#"haka.policy{ on = haka.dissectors.packet.policies.next_dissector, name = "keep", action = haka.policy.accept }"#,
    );
    assert_ne!(e.stateful_info() & PACKET_NEXT_ACCEPT, 0);
    let (e, _) = engine(
        r#"haka.policy{ on = haka.dissectors.packet.policies.next_dissector, name = "no", action = haka.policy.drop }"#,
    );
    assert_eq!(e.stateful_info() & PACKET_NEXT_ACCEPT, 0);
    let (e, _) = engine("-- nothing");
    assert_eq!(e.stateful_info() & PACKET_NEXT_ACCEPT, 0);
}

/// Haka recomputes an L4 checksum only in the dissector of that protocol: under
/// `[rules] dissectors = "required"`, a rules file that loads protocol/ipv4 alone (NAT on
/// the addresses) gets a valid IP checksum and the TCP/UDP checksums as they were; once it
/// loads protocol/tcp (or in the default mode), the TCP checksum is recomputed.
#[test]
fn ip_header_write_leaves_l4_checksum_when_l4_module_not_loaded() {
    let nat = r#"
        local ipv4 = require("protocol/ipv4")
        haka.rule{ on = haka.dissectors.ipv4.events.receive_packet, eval = function(ip)
            ip.dst = ipv4.addr("10.9.8.7")
        end }
    "#;
    let l4_csum_ok = |f: &[u8]| {
        let s: [u8; 4] = f[26..30].try_into().unwrap();
        let d: [u8; 4] = f[30..34].try_into().unwrap();
        checksum::compute(&f[14..34]) == 0 && checksum::l4_v4(&s, &d, f[23], &f[34..]) == 0
    };
    let required = LuaOptions { required_chain: true, ..LuaOptions::default() };
    let (mut e, _, _f) = engine_opts(nat, &required);
    let mut frames = vec![ipv4_frame(6, &tcp(1234, 80, 0x10, b"hello")), ipv4_frame(17, &udp(53, 4000, b"dns"))];
    run(&mut e, &mut frames);
    for f in &frames {
        assert_eq!(&f[30..34], &[10, 9, 8, 7]);
        assert_eq!(checksum::compute(&f[14..34]), 0, "IP checksum recomputed");
        assert!(!l4_csum_ok(f), "L4 checksum left as it was: {f:02x?}");
    }
    let with_tcp = format!("require('protocol/tcp')\n{nat}");
    let (mut e, _, _f) = engine_opts(&with_tcp, &required);
    let mut frames = vec![ipv4_frame(6, &tcp(1234, 80, 0x10, b"hello")), ipv4_frame(17, &udp(53, 4000, b"dns"))];
    run(&mut e, &mut frames);
    assert!(l4_csum_ok(&frames[0]), "protocol/tcp loaded: TCP checksum recomputed");
    assert!(!l4_csum_ok(&frames[1]), "protocol/udp not loaded: UDP checksum as it was");
    let (mut e, _) = engine(nat);
    let mut frames = vec![ipv4_frame(6, &tcp(1234, 80, 0x10, b"hello")), ipv4_frame(17, &udp(53, 4000, b"dns"))];
    run(&mut e, &mut frames);
    assert!(frames.iter().all(|f| l4_csum_ok(f)), "default mode: every checksum recomputed");
}

/// Haka's ipv4 event model per `Pass`: a whole packet gets `receive_packet`, then
/// `receive_packet_reassembled`, then the icmp events; a fragment only the packet and ipv4
/// `receive_packet` (a drop there drops it); a reassembled datagram only what follows
/// reassembly. Rules that only watch datagrams leave fragments out of Lua.
#[test]
fn ipv4_event_model_per_pass() {
    let src = r#"
        haka.rule{ on = haka.dissectors.packet.events.receive_packet, eval = function(p) haka.alert{ description = "packet" } end }
        haka.rule{ on = haka.dissectors.ipv4.events.receive_packet, eval = function(ip)
            haka.alert{ description = "ipv4 " .. ip.ttl }
            if ip.ttl == 1 then ip:drop() end
        end }
        haka.rule{ on = haka.dissectors.ipv4.events.receive_packet_reassembled, eval = function(ip) haka.alert{ description = "datagram" } end }
        haka.rule{ on = haka.dissectors.icmp.events.receive_packet, eval = function(i) haka.alert{ description = "icmp" } end }
        haka.rule{ on = haka.dissectors.ipv4.events.send_packet, eval = function(ip) haka.alert{ description = "sent" } end }
    "#;
    let (mut e, a) = engine(src);
    assert!(e.has_fragment_rules());
    let mut one = |pass: Pass, ttl: u8| {
        let mut f = ipv4_frame(1, &icmp_echo(b"ping"));
        f[14 + 8] = ttl;
        crate::wire::Ipv4Packet::new_unchecked(&mut f[14..]).fill_checksum();
        let m = dissect(&f, LinkType::Ethernet, &DissectOptions::default()).unwrap();
        let mut p = LuaPacket::new(&mut f, &m, 0, 0);
        p.pass = pass;
        e.run_burst(std::slice::from_mut(&mut p));
        let v = p.verdict;
        (v, std::mem::take(&mut *a.borrow_mut()).into_iter().map(|x| x.description).collect::<Vec<_>>())
    };
    let all = vec!["packet", "ipv4 64", "datagram", "icmp", "sent"];
    assert_eq!(one(Pass::Whole, 64), (LuaVerdict::Accept, all.iter().map(|s| s.to_string()).collect()));
    assert_eq!(one(Pass::Fragment, 64), (LuaVerdict::Accept, vec!["packet".to_string(), "ipv4 64".into()]));
    assert_eq!(one(Pass::Fragment, 1), (LuaVerdict::Drop, vec!["packet".to_string(), "ipv4 1".into()]));
    assert_eq!(one(Pass::Reassembled, 64), (LuaVerdict::Accept, vec!["datagram".to_string(), "icmp".into(), "sent".into()]));
    let (e, _) = engine(
        "haka.rule{ on = haka.dissectors.ipv4.events.receive_packet_reassembled, eval = function(ip) end }\n\
         haka.rule{ on = haka.dissectors.tcp.events.receive_packet, eval = function(t) end }",
    );
    assert!(e.has_packet_rules() && !e.has_fragment_rules());
}
