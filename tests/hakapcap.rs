//! hakapcap through the real datapath (EAL + net_pcap): captures pass
//! byte-identical, malformed packets are counted and dropped, flows keep to
//! one worker, no mbuf leaks, and bad input gives one-line errors.
mod common;
use common::*;
use haka_engine::pcapfile::Capture;
use std::path::PathBuf;

fn all_captures() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![pcaps_dir()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "pcap") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Captures whose datagrams are dropped by the reassembly (overlapping or never
/// complete fragments): tested in `fragment_*` below.
const DROPPED_BY_REASSEMBLY: [&str; 3] = ["fragment_overlap_1.pcap", "fragment_overlap_2.pcap", "fragment_incomplete.pcap"];

#[test]
fn every_shared_capture_comes_out_byte_identical() {
    let caps: Vec<PathBuf> = all_captures()
        .into_iter()
        .filter(|c| !DROPPED_BY_REASSEMBLY.iter().any(|n| c.ends_with(n)))
        .collect();
    assert!(caps.len() > 100, "expected the Haka captures under {}", pcaps_dir().display());
    let dir = tempfile::tempdir().unwrap();
    let rules = empty_rules(dir.path());
    let out = dir.path().join("out.pcap");
    let stats = dir.path().join("stats.json");
    for cap in caps {
        let o = hakapcap(&[
            rules.to_str().unwrap(),
            cap.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--stats-file",
            stats.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}: {}", cap.display(), String::from_utf8_lossy(&o.stderr));
        let input = Capture::read(&cap).unwrap();
        let output = Capture::read(&out).unwrap();
        assert_eq!(output.link_type, input.link_type, "{}", cap.display());
        assert_eq!(output.packets.len(), input.packets.len(), "{}", cap.display());
        assert!(output.packets == input.packets, "{}: packets differ", cap.display());
        let st = read_json(&stats);
        assert_eq!(st["totals"]["rx"], input.packets.len() as u64, "{}", cap.display());
        assert_eq!(st["totals"]["tx"], input.packets.len() as u64, "{}", cap.display());
        assert_eq!(st["mempool"]["in_use"], 0, "{}: mbuf leak", cap.display());
    }
}

#[test]
fn malformed_packets_are_counted_by_reason_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let good1 = ipv4_frame([198, 18, 0, 1], [198, 18, 0, 2], 17, 5000, 53, b"query");
    let good2 = ipv4_frame([198, 18, 0, 2], [198, 18, 0, 1], 17, 53, 5000, b"answer");
    // TCP header cut to 10 bytes, with an IP total length that agrees (so only TCP is short).
    let mut truncated_tcp = ipv4_frame([198, 18, 0, 1], [198, 18, 0, 2], 6, 1000, 80, b"")[..14 + 20 + 10].to_vec();
    truncated_tcp[16..18].copy_from_slice(&30u16.to_be_bytes());
    truncated_tcp[24..26].copy_from_slice(&[0, 0]);
    let c = csum(&truncated_tcp[14..34]);
    truncated_tcp[24..26].copy_from_slice(&c.to_be_bytes());
    // IP total length larger than the frame.
    let mut bad_length = good1.clone();
    bad_length[16..18].copy_from_slice(&900u16.to_be_bytes());
    bad_length[24..26].copy_from_slice(&[0, 0]);
    let c = csum(&bad_length[14..34]);
    bad_length[24..26].copy_from_slice(&c.to_be_bytes());
    let mut bad_checksum = good1.clone();
    bad_checksum[14 + 10] ^= 0xff;
    let mut bad_ihl = good1.clone();
    bad_ihl[14] = 0x43;
    let runt = vec![0u8; 10];
    let packets = vec![good1.clone(), truncated_tcp, bad_checksum, good2.clone(), bad_ihl, runt, bad_length];
    let input = dir.path().join("in.pcap");
    write_capture(&input, packets);
    let out = dir.path().join("out.pcap");
    let stats = dir.path().join("stats.json");
    let rules = empty_rules(dir.path());
    let o = hakapcap(&[
        rules.to_str().unwrap(),
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--stats-file",
        stats.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(Capture::read(&out).unwrap().packets, vec![good1, good2]);
    let st = read_json(&stats);
    let m = &st["totals"]["malformed_by_reason"];
    assert_eq!(m["tcp_truncated"], 1, "{m}");
    assert_eq!(m["ipv4_bad_checksum"], 1, "{m}");
    assert_eq!(m["ipv4_bad_ihl"], 1, "{m}");
    assert_eq!(m["ethernet_truncated"], 1, "{m}");
    assert_eq!(m["ipv4_bad_total_length"], 1, "{m}");
    assert_eq!(st["totals"]["dropped_by_reason"]["malformed"], 5);
    assert_eq!(st["totals"]["flows_created"], 1);
    assert_eq!(st["mempool"]["in_use"], 0);
}

#[test]
fn malformed_accept_verdict_forwards_them() {
    let dir = tempfile::tempdir().unwrap();
    let good = ipv4_frame([198, 18, 0, 1], [198, 18, 0, 2], 17, 5000, 53, b"q");
    let mut bad = good.clone();
    bad[14 + 10] ^= 0xff;
    let input = dir.path().join("in.pcap");
    write_capture(&input, vec![good.clone(), bad.clone()]);
    let conf = dir.path().join("haka.toml");
    std::fs::write(&conf, "[datapath]\nmalformed = \"accept\"\n").unwrap();
    let out = dir.path().join("out.pcap");
    let rules = empty_rules(dir.path());
    let o = hakapcap(&[
        rules.to_str().unwrap(),
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-c",
        conf.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(Capture::read(&out).unwrap().packets, vec![good, bad]);
}

/// Many flows, both directions interleaved, two workers with the software
/// dispatcher (passive: net_pcap has one tx queue): every flow must be
/// tracked by exactly one worker, which saw all of its packets both ways.
#[test]
fn flow_affinity_with_two_workers() {
    if std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) < 2 {
        eprintln!("skipped: needs 2 CPUs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    const FLOWS: u32 = 3000;
    let mut packets = Vec::new();
    for round in 0..3 {
        for i in 0..FLOWS {
            let client = [198, 18, (i >> 8) as u8, i as u8];
            let server = [198, 19, 0, (i % 7) as u8 + 1];
            let (sport, dport) = (10000 + (i % 50000) as u16, 80 + (i % 3) as u16);
            let proto = if i % 2 == 0 { 6 } else { 17 };
            packets.push(ipv4_frame(client, server, proto, sport, dport, &[round as u8; 20]));
            packets.push(ipv4_frame(server, client, proto, dport, sport, &[round as u8; 30]));
        }
    }
    let n = packets.len() as u64;
    let input = dir.path().join("flows.pcap");
    write_capture(&input, packets);
    let stats = dir.path().join("stats.json");
    let dump = dir.path().join("flows.jsonl");
    let rules = empty_rules(dir.path());
    let o = hakapcap(&[
        rules.to_str().unwrap(),
        input.to_str().unwrap(),
        "--workers",
        "2",
        "--stats-file",
        stats.to_str().unwrap(),
        "--flow-dump",
        dump.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let st = read_json(&stats);
    assert_eq!(st["workers"], 2);
    assert_eq!(st["dispatch"], "software");
    // (a capture can wait: a full ring holds the reader back, nothing is dropped)
    assert_eq!(st["dispatch_full"], "wait");
    assert_eq!(st["totals"]["dropped"], 0);
    assert_eq!(st["totals"]["rx"], n);
    assert_eq!(st["totals"]["processed"], n);
    assert_eq!(st["totals"]["accepted"], n);
    // One entry per flow overall: a flow split across workers would be created twice.
    assert_eq!(st["totals"]["flows_created"], FLOWS as u64);
    let per: Vec<u64> = st["per_worker"].as_array().unwrap().iter().map(|w| w["flows_created"].as_u64().unwrap()).collect();
    assert!(per.iter().all(|&c| c > FLOWS as u64 / 4), "unbalanced: {per:?}");
    assert!(st["totals"]["dispatched_out"].as_u64().unwrap() > 0);
    assert_eq!(st["totals"]["dispatched_out"], st["totals"]["dispatched_in"]);
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&dump).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), FLOWS as usize);
    for f in &lines {
        assert_eq!(f["packets_up"], 3, "{f}");
        assert_eq!(f["packets_down"], 3, "{f}");
        assert!(f["client"].as_str().unwrap().starts_with("198.18."), "{f}");
    }
    assert_eq!(st["mempool"]["in_use"], 0);
}

/// Two workers: packets handed over to the flow's owner (small ones travel as copies)
/// keep their capture time, which the rules see.
#[test]
fn dispatched_packets_keep_their_capture_time() {
    if std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) < 2 {
        eprintln!("skipped: needs 2 CPUs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    const N: u32 = 400;
    // (write_capture stamps packet i at 1_700_000_000 s + i ms)
    let packets = (0..N).map(|i| ipv4_frame([198, 18, (i >> 8) as u8, i as u8], [198, 19, 0, 1], 17, 1000 + i as u16, 53, b"abcd")).collect();
    let input = dir.path().join("in.pcap");
    write_capture(&input, packets);
    let rules = dir.path().join("time.lua");
    std::fs::write(
        &rules,
        "local ipv4 = require('protocol/ipv4')\nhaka.rule{ on = haka.dissectors.ipv4.events.receive_packet, eval = function (pkt)\n  \
         haka.alert{ description = string.format('%s %d', tostring(pkt.src), pkt.timestamp.secs * 1000 + math.floor(pkt.timestamp.nsecs / 1000000)) }\nend }\n",
    )
    .unwrap();
    let (eve, conf, stats) = (dir.path().join("eve.json"), dir.path().join("c.toml"), dir.path().join("st.json"));
    std::fs::write(&conf, format!("[alerts]\nstdout = false\neve_file = \"{}\"\n", eve.display())).unwrap();
    let o = hakapcap(&[rules.to_str().unwrap(), input.to_str().unwrap(), "--workers", "2", "-c", conf.to_str().unwrap(), "--stats-file", stats.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let st = read_json(&stats);
    assert!(st["totals"]["dispatched_in"].as_u64().unwrap() > N as u64 / 4, "{}", st["totals"]);
    let alerts: Vec<serde_json::Value> = std::fs::read_to_string(&eve).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(alerts.len(), N as usize);
    for a in &alerts {
        let d = a["alert"]["description"].as_str().unwrap();
        let (src, ms) = d.split_once(' ').unwrap();
        let o: Vec<u32> = src.split('.').map(|x| x.parse().unwrap()).collect();
        let i = o[2] * 256 + o[3];
        assert_eq!(ms.parse::<u64>().unwrap(), 1_700_000_000_000 + i as u64, "{a}");
    }
}

#[test]
fn passive_without_output_inspects_only() {
    let dir = tempfile::tempdir().unwrap();
    let cap = pcaps_dir().join("sample/filter/ipfilter.pcap");
    let stats = dir.path().join("stats.json");
    let rules = empty_rules(dir.path());
    let o = hakapcap(&[rules.to_str().unwrap(), cap.to_str().unwrap(), "--stats-file", stats.to_str().unwrap()]);
    assert!(o.status.success());
    let st = read_json(&stats);
    assert_eq!(st["mode"], "passive");
    assert_eq!(st["totals"]["tx"], 0);
    assert_eq!(st["totals"]["rx"], Capture::read(&cap).unwrap().packets.len() as u64);
    assert!(String::from_utf8_lossy(&o.stdout).contains("packets"));
}

#[test]
fn output_packets_keep_their_capture_time() {
    // Haka writes each packet with the time it was captured with (tshark reads an ICMP
    // echo's timestamp against it); net_pcap would stamp the write time.
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("in.pcap");
    let frames = vec![
        ipv4_frame([198, 18, 0, 1], [198, 18, 0, 2], 17, 5000, 53, b"one"),
        ipv4_frame([198, 18, 0, 1], [198, 18, 0, 3], 17, 5000, 53, b"two"),
        ipv4_frame([198, 18, 0, 1], [198, 18, 0, 2], 17, 5000, 53, b"three"),
    ];
    write_capture(&cap, frames);
    let in_times = haka_engine::pcapfile::record_times_ns(&std::fs::read(&cap).unwrap()).unwrap();
    let rules = dir.path().join("rules.lua");
    std::fs::write(
        &rules,
        r#"local ipv4 = require("protocol/ipv4")
haka.rule { on = haka.dissectors.ipv4.events.receive_packet, eval = function (pkt)
    if pkt.dst == ipv4.addr("198.18.0.3") then pkt:drop() else pkt.ttl = 7 end
end }
"#,
    )
    .unwrap();
    let out = dir.path().join("out.pcap");
    let o = hakapcap(&[rules.to_str().unwrap(), cap.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&out).unwrap();
    let output = Capture::parse(&bytes).unwrap();
    assert_eq!(output.packets.len(), 2);
    assert!(output.packets.iter().all(|p| p[14 + 8] == 7), "the rule modified them");
    // the dropped second packet takes its time with it
    assert_eq!(haka_engine::pcapfile::record_times_ns(&bytes).unwrap(), vec![in_times[0], in_times[2]]);
}

fn assert_one_line_error(o: &std::process::Output, prog: &str, needle: &str) {
    assert!(!o.status.success(), "expected failure");
    let lines = stderr_lines(o);
    let errs: Vec<_> = lines.iter().filter(|l| l.starts_with(&format!("{prog}: error:"))).collect();
    assert_eq!(errs.len(), 1, "stderr: {lines:?}");
    assert!(errs[0].contains(needle), "{:?} lacks {needle:?}", errs[0]);
    assert_eq!(lines.len(), 1, "only the error line expected, got {lines:?}");
}

#[test]
fn missing_or_bad_capture_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let rules = empty_rules(dir.path());
    let o = hakapcap(&[rules.to_str().unwrap(), "/nonexistent/in.pcap"]);
    assert_one_line_error(&o, "hakapcap", "/nonexistent/in.pcap");
    let junk = dir.path().join("junk.pcap");
    std::fs::write(&junk, b"this is not a capture file at all").unwrap();
    let o = hakapcap(&[rules.to_str().unwrap(), junk.to_str().unwrap()]);
    assert_one_line_error(&o, "hakapcap", "junk.pcap");
    let cap = pcaps_dir().join("sample/filter/ipfilter.pcap");
    let o = hakapcap(&["/nonexistent/rules.lua", cap.to_str().unwrap()]);
    assert_one_line_error(&o, "hakapcap", "/nonexistent/rules.lua");
    let o = hakapcap(&[rules.to_str().unwrap()]);
    assert_one_line_error(&o, "hakapcap", "required");
    let o = hakapcap(&[rules.to_str().unwrap(), cap.to_str().unwrap(), "--workers", "0"]);
    assert_one_line_error(&o, "hakapcap", "--workers");
    let o = hakapcap(&[rules.to_str().unwrap(), cap.to_str().unwrap(), "--workers", "2", "-o", "/tmp/x.pcap"]);
    assert_one_line_error(&o, "hakapcap", "--workers 1");
}

#[test]
fn bad_config_is_a_one_line_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bad.toml");
    std::fs::write(&conf, "[flows]\ncapacity = 10\nudp_timout = 5\n").unwrap();
    let o = haka(&["--", "-c", conf.to_str().unwrap()]);
    assert_one_line_error(&o, "haka", "bad.toml:3: unknown field `udp_timout`");
    std::fs::write(&conf, "[datapath]\nmalformed = \"maybe\"\n").unwrap();
    let o = haka(&["--", "-c", conf.to_str().unwrap()]);
    assert_one_line_error(&o, "haka", "bad.toml:2:");
    let o = haka(&["--", "-c", "/nonexistent/haka.toml"]);
    assert_one_line_error(&o, "haka", "/nonexistent/haka.toml");
    // The same checks apply to hakapcap's -c.
    let cap = pcaps_dir().join("sample/filter/ipfilter.pcap");
    let rules = empty_rules(dir.path());
    let o = hakapcap(&[rules.to_str().unwrap(), cap.to_str().unwrap(), "-c", conf.to_str().unwrap()]);
    assert_one_line_error(&o, "hakapcap", "bad.toml:2:");
}

#[test]
fn bad_eal_arguments_are_a_one_line_error() {
    let o = haka(&["--definitely-not-eal", "--"]);
    assert_one_line_error(&o, "haka", "EAL initialisation failed: unrecognized option '--definitely-not-eal'");
    let o = haka(&["-l", "4000", "--no-huge", "--no-shconf", "--"]);
    assert_one_line_error(&o, "haka", "EAL initialisation failed");
    let o = haka(&["--", "--no-such-app-flag"]);
    assert_one_line_error(&o, "haka", "--no-such-app-flag");
}

#[test]
fn no_ports_is_a_clear_error() {
    let o = haka(&["--no-huge", "--no-shconf", "--no-pci", "-l", "0", "--"]);
    assert!(!o.status.success());
    let errs: Vec<_> = stderr_lines(&o).into_iter().filter(|l| l.starts_with("haka: error:")).collect();
    assert_eq!(errs.len(), 1);
    assert!(errs[0].contains("no DPDK ports"), "{errs:?}");
}

// ---- IP fragments -----------------------------------------------------------------

/// A config whose rule budget survives a loaded machine (the budget is wall time, and the
/// tests run side by side on few cores).
fn patient_config(dir: &std::path::Path) -> PathBuf {
    let conf = dir.join("patient.toml");
    std::fs::write(&conf, "[rules]\ninstruction_budget = 5000000000\n").unwrap();
    conf
}

fn ipv4_test_pcap(name: &str) -> PathBuf {
    pcaps_dir().join("modules/protocol/ipv4/test").join(name)
}

/// Messages of `haka.log` (Haka's lines `info external: MESSAGE`) on hakapcap's stdout.
fn log_lines(o: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| Some(l.strip_prefix("info external: ")?.to_string()))
        .collect()
}

/// An IPv4 fragment of an Ethernet frame, parsed by the test itself.
struct V4Frag {
    key: ([u8; 4], [u8; 4], u8, u16),
    offset: usize,
    more: bool,
    header: Vec<u8>,
    payload: Vec<u8>,
}

fn parse_v4(frame: &[u8]) -> V4Frag {
    let ip = &frame[14..];
    let hl = ((ip[0] & 15) as usize) * 4;
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let fo = u16::from_be_bytes([ip[6], ip[7]]);
    assert_eq!(csum(&ip[..hl]), 0, "bad IPv4 header checksum");
    V4Frag {
        key: (ip[12..16].try_into().unwrap(), ip[16..20].try_into().unwrap(), ip[9], u16::from_be_bytes([ip[4], ip[5]])),
        offset: (fo & 0x1fff) as usize * 8,
        more: fo & 0x2000 != 0,
        header: ip[..hl].to_vec(),
        payload: ip[hl..total].to_vec(),
    }
}

/// Test-side reassembly of in-order captures: (first header, payload) per datagram, in the
/// order they complete. Checks that the pieces tile the datagram.
fn reassemble_v4(frames: &[Vec<u8>]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut open: std::collections::HashMap<_, Vec<V4Frag>> = Default::default();
    let mut done = Vec::new();
    for f in frames {
        let fr = parse_v4(f);
        let key = fr.key;
        let last = !fr.more;
        open.entry(key).or_default().push(fr);
        if last {
            let mut parts = open.remove(&key).unwrap();
            parts.sort_by_key(|p| p.offset);
            let mut payload = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                assert_eq!(p.offset, payload.len(), "fragments do not tile the datagram");
                assert_eq!(p.more, i + 1 < parts.len());
                payload.extend_from_slice(&p.payload);
            }
            done.push((parts[0].header.clone(), payload));
        }
    }
    assert!(open.is_empty(), "incomplete datagrams left");
    done
}

/// Haka's event model: ipv4 `receive_packet` fires for each fragment as it comes (its own
/// header fields and payload), `receive_packet_reassembled` and the icmp events once per
/// reassembled datagram (length and content); the original fragments leave byte-identical
/// and in order, nothing leaks; a drop verdict on a datagram drops all its fragments.
#[test]
fn fragments_reassembled_for_rules_and_originals_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let conf = patient_config(dir.path());
    let rules = dir.path().join("frag.lua");
    std::fs::write(
        &rules,
        r#"
require("protocol/ipv4")
require("protocol/icmp")
haka.rule{ on = haka.dissectors.ipv4.events.receive_packet, eval = function(pkt)
    haka.log("frag id=%d mf=%s off=%d payload=%d", pkt.id, tostring(pkt.flags.mf), pkt.frag_offset, #pkt.payload)
end }
haka.rule{ on = haka.dissectors.ipv4.events.receive_packet_reassembled, eval = function(pkt)
    local p = pkt.payload
    local sum = 0
    for i = 1, #p do sum = sum + p[i] end
    haka.log("dgram id=%d len=%d mf=%s off=%d payload=%d sum=%d", pkt.id, pkt.len,
        tostring(pkt.flags.mf), pkt.frag_offset, #p, sum)
end }
haka.rule{ on = haka.dissectors.icmp.events.receive_packet, eval = function(pkt)
    haka.log("icmp")
end }
"#,
    )
    .unwrap();
    for (name, datagrams) in [("fragment.pcap", 6), ("fragment_overrun.pcap", 1)] {
        let cap = ipv4_test_pcap(name);
        let out = dir.path().join("out.pcap");
        let stats = dir.path().join("stats.json");
        let o = hakapcap_to(&rules, &conf, &cap, &out, &stats, &[]);
        let input = Capture::read(&cap).unwrap();
        let dgrams = reassemble_v4(&input.packets);
        assert_eq!(dgrams.len(), datagrams);
        // Each packet's own line, then, after a datagram's last fragment, the datagram's.
        let mut expect = Vec::new();
        let mut done = dgrams.iter();
        for f in &input.packets {
            let fr = parse_v4(f);
            let id = fr.key.3;
            expect.push(format!("frag id={id} mf={} off={} payload={}", fr.more, fr.offset, fr.payload.len()));
            if !fr.more {
                let (h, p) = done.next().unwrap();
                let sum: u64 = p.iter().map(|&b| b as u64).sum();
                expect.push(format!("dgram id={id} len={} mf=false off=0 payload={} sum={sum}", h.len() + p.len(), p.len()));
                expect.push("icmp".to_string());
            }
        }
        let got: Vec<String> = log_lines(&o);
        assert_eq!(got, expect, "{name}: each fragment, then each datagram once, reassembled");
        // The originals, byte for byte and in order.
        assert!(Capture::read(&out).unwrap().packets == input.packets, "{name}: output differs");
        let st = read_json(&stats);
        let d = &st["totals"]["defrag"];
        let frags = input.packets.iter().filter(|f| parse_v4(f).more || parse_v4(f).offset > 0).count();
        assert_eq!(d["fragments"], frags as u64, "{name}: {d}");
        assert_eq!(d["held"], 0);
        assert_eq!(d["invalid"], 0);
        assert_eq!(st["totals"]["processed"], datagrams as u64);
        assert_eq!(st["totals"]["tx"], input.packets.len() as u64);
        assert_eq!(st["mempool"]["in_use"], 0, "{name}: mbuf leak");
        assert_eq!(st["mempool"]["reassembly_in_use"], 0);
    }
    assert_eq!(
        read_json(&dir.path().join("stats.json"))["totals"]["defrag"]["reassembled"],
        1,
        "fragment_overrun: one 60028-byte datagram"
    );

    // IPv6: fragments (shuffled) reassembled for the rules, originals forwarded as they came.
    std::fs::write(
        &rules,
        "haka.rule{ on = haka.dissectors.ipv6.events.receive_packet_reassembled, eval = function(pkt)\n\
         haka.log(\"v6 len=%d payload_length=%d proto=%d\", pkt.len, pkt.payload_length, pkt.proto) end }\n",
    )
    .unwrap();
    let src = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let dst = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let payload: Vec<u8> = (0..4000u32).map(|i| (i * 3) as u8).collect();
    let mut frags = fragment_v6(&ipv6_udp_frame(src, dst, 5000, 53, &payload), 77, 1232);
    frags.swap(0, 2);
    let input6 = dir.path().join("v6.pcap");
    write_capture(&input6, frags.clone());
    let out = dir.path().join("out.pcap");
    let o = hakapcap(&[rules.to_str().unwrap(), input6.to_str().unwrap(), "-c", conf.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: Vec<String> = log_lines(&o);
    assert_eq!(got, vec![format!("v6 len={} payload_length={} proto=17", 40 + 8 + 4000, 8 + 4000)]);
    assert!(Capture::read(&out).unwrap().packets == frags);

    // A rule dropping the big datagrams drops every fragment of them.
    std::fs::write(
        &rules,
        "haka.rule{ on = haka.dissectors.ipv4.events.receive_packet_reassembled, eval = function(pkt)\n\
         if pkt.len > 5000 then pkt:drop() end end }\n",
    )
    .unwrap();
    let cap = ipv4_test_pcap("fragment.pcap");
    let out = dir.path().join("out.pcap");
    let stats = dir.path().join("stats.json");
    hakapcap_to(&rules, &conf, &cap, &out, &stats, &[]);
    let input = Capture::read(&cap).unwrap().packets;
    let kept: Vec<Vec<u8>> = input.iter().filter(|f| ![48550, 14026].contains(&parse_v4(f).key.3)).cloned().collect();
    assert_eq!(kept.len(), 6);
    assert!(Capture::read(&out).unwrap().packets == kept);
    let st = read_json(&stats);
    assert_eq!(st["totals"]["dropped_by_reason"]["rule"], 2);
    assert_eq!(st["mempool"]["in_use"], 0);
}

/// Overlapping fragments: Haka's alert, the datagram is dropped.
#[test]
fn fragment_overlap_alerts_and_drops() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("log.lua");
    std::fs::write(
        &rules,
        "haka.rule{ on = haka.dissectors.ipv4.events.receive_packet, eval = function(pkt) haka.log(\"fragment\") end }\n\
         haka.rule{ on = haka.dissectors.ipv4.events.receive_packet_reassembled, eval = function(pkt) haka.log(\"datagram\") end }\n",
    )
    .unwrap();
    let eve = dir.path().join("eve.json");
    let conf = dir.path().join("haka.toml");
    std::fs::write(&conf, format!("[rules]\ninstruction_budget = 5000000000\n[alerts]\neve_file = \"{}\"\n", eve.display())).unwrap();
    for (name, dropped_invalid, incomplete) in [("fragment_overlap_1.pcap", 2, 1), ("fragment_overlap_2.pcap", 3, 0)] {
        let _ = std::fs::remove_file(&eve);
        let out = dir.path().join("out.pcap");
        let stats = dir.path().join("stats.json");
        let cap = ipv4_test_pcap(name);
        let o = hakapcap_to(&rules, &conf, &cap, &out, &stats, &[]);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert_eq!(stdout.matches("description = invalid ipv4 fragment (overlap)").count(), 1, "{name}: {stdout}");
        assert_eq!(log_lines(&o), vec!["fragment"; 3], "{name}: each fragment seen, no datagram");
        assert!(Capture::read(&out).unwrap().packets.is_empty(), "{name}: nothing forwarded");
        let alerts: Vec<serde_json::Value> =
            std::fs::read_to_string(&eve).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(alerts.len(), 1, "{name}");
        let a = &alerts[0];
        assert_eq!(a["alert"]["description"], "invalid ipv4 fragment (overlap)", "{a}");
        assert_eq!(a["alert"]["severity"], "low", "{a}");
        assert_eq!(a["src_ip"], "127.0.0.1", "{a}");
        assert_eq!(a["dest_ip"], "127.0.0.1", "{a}");
        assert_eq!(a["proto"], "ICMP", "{a}");
        let st = read_json(&stats);
        let t = &st["totals"];
        assert_eq!(t["defrag"]["invalid"], 1, "{name}");
        assert_eq!(t["dropped_by_reason"]["fragment_invalid"], dropped_invalid, "{name}");
        // overlap_1's last fragment starts a new datagram, still incomplete at the end.
        assert_eq!(t["dropped_by_reason"]["fragment_incomplete"], incomplete, "{name}");
        assert_eq!(t["tx"], 0);
        assert_eq!(st["alerts"]["raised"], 1);
        assert_eq!(st["mempool"]["in_use"], 0, "{name}: mbuf leak");
    }
}

/// Haka's `dont_reassemble`, set by a fragment's `receive_packet` rule: that fragment goes
/// on alone (its `receive_packet_reassembled` fires for it, it leaves as it is); the other
/// datagrams are reassembled.
#[test]
fn dont_reassemble_on_a_fragment_keeps_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let conf = patient_config(dir.path());
    let rules = dir.path().join("alone.lua");
    std::fs::write(
        &rules,
        r#"
haka.rule{ on = haka.dissectors.ipv4.events.receive_packet, eval = function(pkt)
    if pkt.id == 48550 then pkt.dont_reassemble = true end
end }
haka.rule{ on = haka.dissectors.ipv4.events.receive_packet_reassembled, eval = function(pkt)
    haka.log("%d %d %s", pkt.id, pkt.len, tostring(pkt.dont_reassemble))
end }
"#,
    )
    .unwrap();
    let cap = ipv4_test_pcap("fragment.pcap");
    let out = dir.path().join("out.pcap");
    let stats = dir.path().join("stats.json");
    let o = hakapcap_to(&rules, &conf, &cap, &out, &stats, &[]);
    let got = log_lines(&o);
    assert_eq!(
        got,
        vec![
            "48550 1500 true", "48550 1500 true", "48550 1500 true", "48550 888 true",
            "14026 5328 false", "0 84 false", "14027 84 false", "48551 1628 false", "14028 1628 false",
        ]
    );
    assert!(Capture::read(&out).unwrap().packets == Capture::read(&cap).unwrap().packets);
    let st = read_json(&stats);
    assert_eq!(st["totals"]["defrag"]["reassembled"], 3);
    assert_eq!(st["mempool"]["in_use"], 0);
}

/// `[defrag] overlap = "haka"` and `refragment = "haka"` (conf/haka-strict.toml): Haka's
/// handling of Haka's own captures. Overlaps: the lowest offset's data wins, a fragment
/// covered by others is dropped silently, one after the last fragment is alerted ("invalid
/// ipv4 fragment") and dropped, the rest of the datagram goes through. A modified datagram
/// leaves as its fragments, each with its share (here 8 bytes inserted at the end of the
/// first one: a 1508-byte fragment), where the default re-fragments to 1500 bytes.
#[test]
fn fragment_haka_overlaps_and_refragmentation() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("log.lua");
    std::fs::write(
        &rules,
        r#"
require("protocol/ipv4")
require("protocol/icmp")
haka.rule{ on = haka.dissectors.ipv4.events.receive_packet, eval = function(pkt) haka.log("fragment %d", #pkt.payload) end }
haka.rule{ on = haka.dissectors.icmp.events.receive_packet, eval = function(pkt)
    haka.log("icmp %d", #pkt.payload)
    if #pkt.payload > 2000 then pkt.payload:pos(1476):insert(haka.vbuffer_from("HAKAHAKA")) end
end }
"#,
    )
    .unwrap();
    let eve = dir.path().join("eve.json");
    let conf = dir.path().join("haka.toml");
    let base = format!("[rules]\ninstruction_budget = 5000000000\n[alerts]\neve_file = \"{}\"\n", eve.display());
    std::fs::write(&conf, format!("{base}[defrag]\noverlap = \"haka\"\nrefragment = \"haka\"\n")).unwrap();
    let out = dir.path().join("out.pcap");
    let stats = dir.path().join("stats.json");
    for (name, logs, alerts) in [
        ("fragment_overlap_1.pcap", vec!["fragment 16", "fragment 8", "fragment 8", "icmp 20"], 0),
        ("fragment_overlap_2.pcap", vec!["fragment 8", "fragment 8", "fragment 24", "icmp 28"], 1),
    ] {
        let _ = std::fs::remove_file(&eve);
        let cap = ipv4_test_pcap(name);
        let o = hakapcap_to(&rules, &conf, &cap, &out, &stats, &[]);
        assert_eq!(log_lines(&o), logs, "{name}");
        let input = Capture::read(&cap).unwrap().packets;
        // (overlap_1: the second is covered by the first; overlap_2: after the last)
        assert!(Capture::read(&out).unwrap().packets == vec![input[0].clone(), input[2].clone()], "{name}");
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert_eq!(stdout.matches("description = invalid ipv4 fragment\n").count(), alerts, "{name}: {stdout}");
        if alerts > 0 {
            // raised when the last fragment came, after its rules and before the datagram's
            let at = stdout.find("invalid ipv4 fragment").unwrap();
            assert!(stdout.find("fragment 24").unwrap() < at && at < stdout.find("icmp 28").unwrap(), "{stdout}");
            let a: serde_json::Value = serde_json::from_str(std::fs::read_to_string(&eve).unwrap().trim()).unwrap();
            assert_eq!(a["alert"]["description"], "invalid ipv4 fragment", "{a}");
        }
        let st = read_json(&stats);
        assert_eq!(st["totals"]["dropped_by_reason"]["fragment_invalid"], 1, "{name}");
        assert_eq!(st["alerts"]["raised"], alerts as u64, "{name}");
        assert_eq!(st["mempool"]["in_use"], 0, "{name}: mbuf leak");
    }

    // The insertion: Haka's 1508-byte first fragment, the later ones shifted by 8 bytes.
    let cap = ipv4_test_pcap("fragment.pcap");
    let input = Capture::read(&cap).unwrap().packets;
    let mut expect = reassemble_v4(&input);
    for (_, p) in expect.iter_mut().filter(|(_, p)| p.len() > 2004) {
        // (at the ICMP payload's byte 1476, i.e. the end of the first fragment)
        p.splice(1480..1480, b"HAKAHAKA".iter().copied());
    }
    hakapcap_to(&rules, &conf, &cap, &out, &stats, &[]);
    let output = Capture::read(&out).unwrap().packets;
    assert_eq!(output.len(), input.len());
    let sizes: Vec<usize> = output.iter().map(|f| f.len() - 14).collect();
    assert_eq!(&sizes[..4], &[1508, 1500, 1500, 888], "{sizes:?}");
    let after = reassemble_v4(&output);
    for ((_, p0), (_, p1)) in expect.iter().zip(&after) {
        assert_eq!(p0.len(), p1.len());
        assert_eq!(p0[4..], p1[4..], "same data but the ICMP checksum");
    }
    assert_eq!(&output[0][output[0].len() - 8..], b"HAKAHAKA");
    assert_eq!(read_json(&stats)["mempool"]["in_use"], 0);
    // The default: re-fragmented to the largest original fragment (1500 bytes).
    std::fs::write(&conf, &base).unwrap();
    hakapcap_to(&rules, &conf, &cap, &out, &stats, &[]);
    let output = Capture::read(&out).unwrap().packets;
    assert!(output.iter().all(|f| f.len() - 14 <= 1500));
    let after = reassemble_v4(&output);
    for ((_, p0), (_, p1)) in expect.iter().zip(&after) {
        assert_eq!(p0[4..], p1[4..]);
    }
}

/// An incomplete datagram is released after `defrag.timeout` (the run lingers past it);
/// without lingering it is freed when the worker stops. Nothing leaks either way.
#[test]
fn fragment_incomplete_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let rules = empty_rules(dir.path());
    let conf = dir.path().join("haka.toml");
    std::fs::write(&conf, "[defrag]\ntimeout = 0.2\n").unwrap();
    let cap = ipv4_test_pcap("fragment_incomplete.pcap");
    let out = dir.path().join("out.pcap");
    let stats = dir.path().join("stats.json");
    for (linger, timed_out) in [("1", 1), ("0", 0)] {
        hakapcap_to(&rules, &conf, &cap, &out, &stats, &["--linger", linger]);
        assert!(Capture::read(&out).unwrap().packets.is_empty(), "Haka's reference output is empty");
        let st = read_json(&stats);
        let t = &st["totals"];
        assert_eq!(t["defrag"]["fragments"], 2);
        assert_eq!(t["defrag"]["timed_out"], timed_out, "linger {linger}: {t}");
        assert_eq!(t["defrag"]["held"], 0);
        assert_eq!(t["dropped_by_reason"]["fragment_incomplete"], 2);
        assert_eq!(t["processed"], 0);
        assert_eq!(st["mempool"]["in_use"], 0);
    }
    let o = hakapcap(&[rules.to_str().unwrap(), cap.to_str().unwrap(), "--linger=-1"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--linger"));
}

/// A rule modifying reassembled datagrams: what leaves is their re-fragmentation
/// (IPv4 and IPv6), whose fragments reassemble to the modified datagram.
#[test]
fn modified_datagrams_are_refragmented() {
    let dir = tempfile::tempdir().unwrap();
    let conf = patient_config(dir.path());
    let rules = dir.path().join("ttl.lua");
    std::fs::write(
        &rules,
        r#"
haka.rule{ on = haka.dissectors.ipv4.events.receive_packet_reassembled, eval = function(pkt)
    pkt.ttl = 33
end }
haka.rule{ on = haka.dissectors.ipv6.events.receive_packet_reassembled, eval = function(pkt)
    pkt.hop_limit = 7
    local p = pkt.payload
    p[#p] = 0x5a
end }
"#,
    )
    .unwrap();
    // IPv4: Haka's capture (ICMP, 1500-byte fragments).
    let cap = ipv4_test_pcap("fragment.pcap");
    let out = dir.path().join("out.pcap");
    let stats = dir.path().join("stats.json");
    hakapcap_to(&rules, &conf, &cap, &out, &stats, &[]);
    let input = Capture::read(&cap).unwrap().packets;
    let output = Capture::read(&out).unwrap().packets;
    assert_eq!(output.len(), input.len());
    for (f, i) in output.iter().zip(&input) {
        let fr = parse_v4(f);
        assert_eq!(fr.header[8], 33, "every fragment carries the new TTL");
        assert!(f.len() <= 1514);
        assert_eq!(&f[..14], &i[..14], "link header kept");
    }
    let before = reassemble_v4(&input);
    let after = reassemble_v4(&output);
    assert_eq!(before.len(), after.len());
    for ((h0, p0), (h1, p1)) in before.iter().zip(&after) {
        assert_eq!(p0, p1, "same payload");
        assert_eq!(h1[8], 33);
        assert_eq!((&h0[..8], &h0[9..10], &h0[12..]), (&h1[..8], &h1[9..10], &h1[12..]), "other header fields kept");
    }
    let st = read_json(&stats);
    assert_eq!(st["totals"]["defrag"]["refragmented"], 4);
    assert_eq!(st["mempool"]["in_use"], 0);

    // An independent check with scapy, when it is there.
    let check = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys\nfrom scapy.all import rdpcap, IP, defragment\n\
             d = [p[IP] for p in defragment(rdpcap(sys.argv[1])) if IP in p]\n\
             print(len(d), sorted(set(p.ttl for p in d)), sorted(p.len for p in d))",
            out.to_str().unwrap(),
        ])
        .output();
    match check {
        Ok(c) if c.status.success() => {
            assert_eq!(String::from_utf8_lossy(&c.stdout).trim(), "6 [33] [84, 84, 1628, 1628, 5328, 5328]");
        }
        _ => eprintln!("scapy not available: independent check skipped"),
    }

    // IPv6: a UDP datagram in 3 fragments; the rule changes the hop limit and the last byte.
    let src = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let dst = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    let dgram = ipv6_udp_frame(src, dst, 5000, 53, &payload);
    let frags = fragment_v6(&dgram, 0x01020304, 1232);
    assert_eq!(frags.len(), 3);
    let input6 = dir.path().join("v6.pcap");
    write_capture(&input6, frags.clone());
    hakapcap_to(&rules, &conf, &input6, &out, &stats, &[]);
    let output = Capture::read(&out).unwrap().packets;
    assert_eq!(output.len(), 3);
    let mut expect = dgram.clone();
    expect[14 + 7] = 7;
    let n = expect.len();
    expect[n - 1] = 0x5a;
    // The UDP checksum was recomputed by the engine: take it from the output.
    let mut rebuilt = output[0][..14 + 40].to_vec();
    rebuilt[14 + 6] = 17;
    let mut udp = Vec::new();
    for f in &output {
        assert_eq!(f[14 + 6], 44, "Fragment header");
        assert_eq!(f[14 + 7], 7, "new hop limit in every fragment");
        assert_eq!(&f[14 + 40 + 4..14 + 40 + 8], &0x01020304u32.to_be_bytes(), "identification kept");
        let off = (u16::from_be_bytes([f[14 + 42], f[14 + 43]]) & !7) as usize;
        assert_eq!(off, udp.len());
        udp.extend_from_slice(&f[14 + 48..]);
    }
    rebuilt[14 + 4..14 + 6].copy_from_slice(&(udp.len() as u16).to_be_bytes());
    rebuilt.extend_from_slice(&udp);
    assert_eq!(rebuilt.len(), expect.len());
    expect[14 + 46..14 + 48].copy_from_slice(&rebuilt[14 + 46..14 + 48]);
    assert_eq!(rebuilt, expect);
    // ... and that checksum is right for the modified datagram.
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&(udp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 17]);
    pseudo.extend_from_slice(&udp);
    assert_eq!(csum(&pseudo), 0, "UDP checksum of the modified datagram");
    let st = read_json(&stats);
    assert_eq!(st["totals"]["defrag"]["refragmented"], 1);
    assert_eq!(st["totals"]["defrag"]["reassembled"], 1);
    assert_eq!(st["mempool"]["in_use"], 0);
}

/// Two workers, many fragmented datagrams of many flows sharing address pairs (so the
/// reassembling worker, chosen by addresses, often does not own the 5-tuple flow): every
/// datagram reaches the rules exactly once, on the worker owning its flow.
#[test]
fn fragments_with_two_workers_reach_the_flow_owner_once() {
    if std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) < 2 {
        eprintln!("skipped: needs 2 CPUs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = patient_config(dir.path());
    const PAIRS: u32 = 40;
    const PORTS: u32 = 12;
    const GROUP: usize = 40;
    struct Dgram {
        tag: String,
        flow: u32,
        len: usize,
        frames: Vec<Vec<u8>>,
    }
    let mut dgrams = Vec::new();
    let mut ident: u16 = 100;
    for pair in 0..PAIRS {
        let client = [198, 18, 1, pair as u8 + 1];
        let server = [198, 19, 0, (pair % 5) as u8 + 1];
        for port in 0..PORTS {
            let flow = pair * PORTS + port;
            let (sport, dport) = (20000 + port as u16, 53);
            // Up: a fragmented datagram and a small one; down: a fragmented one.
            for (k, (from, to, sp, dp, size)) in [
                (client, server, sport, dport, 3000usize),
                (client, server, sport, dport, 100),
                (server, client, dport, sport, 2000 + (flow as usize % 7) * 8),
            ]
            .into_iter()
            .enumerate()
            {
                let tag = format!("F{flow:05}D{k}");
                let mut payload = tag.clone().into_bytes();
                payload.resize(size, (flow % 251) as u8);
                let frame = ipv4_frame(from, to, 17, sp, dp, &payload);
                ident = ident.wrapping_add(1);
                let frames = if size > 1000 { fragment_v4(&frame, ident, 1480) } else { vec![frame] };
                dgrams.push(Dgram { tag, flow, len: size, frames });
            }
        }
    }
    // Interleave the fragments of groups of datagrams (many in progress at once).
    let mut packets = Vec::new();
    for group in dgrams.chunks(GROUP) {
        let most = group.iter().map(|d| d.frames.len()).max().unwrap();
        for i in 0..most {
            for d in group {
                if let Some(f) = d.frames.get(i) {
                    packets.push(f.clone());
                }
            }
        }
    }
    let n = packets.len() as u64;
    let fragmented = dgrams.iter().filter(|d| d.frames.len() > 1).count() as u64;
    let input = dir.path().join("frags.pcap");
    write_capture(&input, packets);
    let rules = dir.path().join("udp.lua");
    std::fs::write(
        &rules,
        "local udp = require(\"protocol/udp\")\n\
         haka.rule{ on = haka.dissectors.udp.events.receive_packet, eval = function(pkt)\n\
         haka.log(\"%d dgram %s len=%d\", haka.current_thread(), pkt.payload:sub(0, 8):asstring(), #pkt.payload) end }\n",
    )
    .unwrap();
    let stats = dir.path().join("stats.json");
    let dump = dir.path().join("flows.jsonl");
    let o = hakapcap(&[
        rules.to_str().unwrap(),
        "-c",
        conf.to_str().unwrap(),
        input.to_str().unwrap(),
        "--workers",
        "2",
        "--stats-file",
        stats.to_str().unwrap(),
        "--flow-dump",
        dump.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut seen: std::collections::HashMap<String, Vec<(usize, usize)>> = Default::default();
    for line in log_lines(&o) {
        let (w, rest) = line.split_once(" dgram ").unwrap();
        let w: usize = w.parse().unwrap();
        let (tag, len) = rest.split_once(" len=").unwrap();
        seen.entry(tag.to_string()).or_default().push((w, len.parse().unwrap()));
    }
    assert_eq!(seen.len(), dgrams.len(), "every datagram reached the rules");
    let mut worker_of_flow: std::collections::HashMap<u32, usize> = Default::default();
    for d in &dgrams {
        let s = &seen[&d.tag];
        assert_eq!(s.len(), 1, "{}: seen {} times", d.tag, s.len());
        assert_eq!(s[0].1, d.len, "{}: reassembled length", d.tag);
        let w = *worker_of_flow.entry(d.flow).or_insert(s[0].0);
        assert_eq!(w, s[0].0, "{}: flow split across workers", d.tag);
    }
    let st = read_json(&stats);
    let t = &st["totals"];
    assert_eq!(t["rx"], n);
    assert_eq!(t["defrag"]["reassembled"], fragmented);
    assert_eq!(t["defrag"]["invalid"], 0);
    assert_eq!(t["defrag"]["evicted"], 0);
    assert_eq!(t["defrag"]["held"], 0);
    assert!(t["defrag"]["handed_over"].as_u64().unwrap() > 0, "{t}");
    assert_eq!(t["processed"], dgrams.len() as u64);
    assert_eq!(t["dispatched_out"], t["dispatched_in"]);
    assert_eq!(t["dropped"], 0, "{t}");
    let flows = (PAIRS * PORTS) as u64;
    assert_eq!(t["flows_created"], flows);
    let per: Vec<u64> = st["per_worker"].as_array().unwrap().iter().map(|w| w["flows_created"].as_u64().unwrap()).collect();
    assert!(per.iter().all(|&c| c > flows / 5), "unbalanced: {per:?}");
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&dump).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), flows as usize);
    for f in &lines {
        // The first datagram to complete may be the server's: it is then the flow's client.
        let (client, up, down) = match f["client"].as_str().unwrap() {
            c if c.starts_with("198.18.") => (c, 2, 1),
            _ => (f["server"].as_str().unwrap(), 1, 2),
        };
        assert_eq!((f["proto"].as_u64(), f["packets_up"].as_u64(), f["packets_down"].as_u64()), (Some(17), Some(up), Some(down)), "{f}");
        let port: u32 = client.rsplit(':').next().unwrap().parse().unwrap();
        let pair: u32 = client.split('.').nth(3).unwrap().split(':').next().unwrap().parse().unwrap();
        let flow = (pair - 1) * PORTS + (port - 20000);
        assert_eq!(f["worker"].as_u64().unwrap() as usize, worker_of_flow[&flow], "{f}: rules ran on the flow's owner");
    }
    assert_eq!(st["mempool"]["in_use"], 0);
    assert_eq!(st["mempool"]["reassembly_in_use"], 0);
}

/// Ethernet/IPv4/TCP frame with valid IP and TCP checksums.
fn tcp_segment(src: [u8; 4], dst: [u8; 4], ports: (u16, u16), seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = ipv4_frame(src, dst, 6, ports.0, ports.1, payload);
    let tcp = 14 + 20;
    f[tcp + 4..tcp + 8].copy_from_slice(&seq.to_be_bytes());
    f[tcp + 8..tcp + 12].copy_from_slice(&ack.to_be_bytes());
    f[tcp + 13] = flags;
    f[tcp + 16..tcp + 18].copy_from_slice(&[0, 0]);
    let c = tcp_checksum(&f);
    f[tcp + 16..tcp + 18].copy_from_slice(&c.to_be_bytes());
    f
}

/// TCP checksum of an Ethernet/IPv4 (20-byte header) frame's segment.
fn tcp_checksum(frame: &[u8]) -> u16 {
    let ip = &frame[14..];
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&((total - 20) as u16).to_be_bytes());
    pseudo.extend_from_slice(&ip[20..total]);
    csum(&pseudo)
}

/// TCP over fragments through the stateful stage: the connection sees the reassembled
/// segment's data once; unmodified, the originals leave; a stream edit on it makes the
/// re-fragmented datagram leave, carrying the edit with valid checksums.
#[test]
fn fragmented_tcp_segments_through_the_stateful_stage() {
    let dir = tempfile::tempdir().unwrap();
    let conf = patient_config(dir.path());
    let (c, s) = ([198, 18, 0, 1], [198, 18, 0, 2]);
    let ports = (40000, 8080);
    let data: Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut packets = vec![
        tcp_segment(c, s, ports, 100, 0, 0x02, b""),
        tcp_segment(s, c, (ports.1, ports.0), 500, 101, 0x12, b""),
        tcp_segment(c, s, ports, 101, 501, 0x10, b""),
    ];
    let big = tcp_segment(c, s, ports, 101, 501, 0x18, &data);
    let frags = fragment_v4(&big, 4242, 1480);
    assert_eq!(frags.len(), 3);
    packets.extend(frags.iter().cloned());
    packets.push(tcp_segment(c, s, ports, 3101, 501, 0x18, b"tail"));
    let input = dir.path().join("tcp.pcap");
    write_capture(&input, packets.clone());
    let out = dir.path().join("out.pcap");
    let stats = dir.path().join("stats.json");
    let rules = dir.path().join("tcp.lua");
    const CONN: &str = "local tc = require(\"protocol/tcp_connection\")\n";
    let run = |lua: &str| {
        std::fs::write(&rules, lua).unwrap();
        let o = hakapcap_to(&rules, &conf, &input, &out, &stats, &[]);
        o
    };
    let o = run(&format!(
        "{CONN}haka.rule{{ on = tc.events.receive_data, eval = function(flow, data, dir)\n\
         haka.log(\"data %s %d %s\", dir, #data, data:sub(0, 4):asstring()) end }}\n"
    ));
    let got: Vec<String> = log_lines(&o);
    assert_eq!(got, vec!["data up 3000 abcd".to_string(), "data up 4 tail".to_string()]);
    assert!(Capture::read(&out).unwrap().packets == packets, "originals forwarded");
    let st = read_json(&stats);
    assert_eq!(st["totals"]["defrag"]["reassembled"], 1);
    assert_eq!(st["totals"]["stateful"]["tcp_connections"], 1, "{}", st["totals"]["stateful"]);
    assert_eq!(st["mempool"]["in_use"], 0);

    // A stream edit of the reassembled segment (same length).
    let o = run(&format!(
        "{CONN}haka.rule{{ on = tc.events.receive_data, eval = function(flow, data, dir)\n\
         if #data > 1000 then data:sub(0, 4):replace(\"HAKA\") end end }}\n"
    ));
    assert!(o.status.success());
    let output = Capture::read(&out).unwrap().packets;
    assert_eq!(output.len(), packets.len());
    assert!(output[..3] == packets[..3] && output[6] == packets[6], "other packets unchanged");
    let dgram = reassemble_v4(&output[3..6]);
    assert_eq!(dgram.len(), 1);
    let (h, p) = &dgram[0];
    assert_eq!(u16::from_be_bytes([h[4], h[5]]), 4242);
    assert_eq!(&p[20..24], b"HAKA");
    assert_eq!(&p[24..], &data[4..]);
    let mut whole = output[3][..14].to_vec();
    whole.extend_from_slice(h);
    whole.extend_from_slice(p);
    whole[14 + 2..14 + 4].copy_from_slice(&((20 + p.len()) as u16).to_be_bytes());
    assert_eq!(tcp_checksum(&whole), 0, "TCP checksum of the edited segment");
    let st = read_json(&stats);
    assert_eq!(st["totals"]["defrag"]["refragmented"], 1);
    assert_eq!(st["totals"]["stateful"]["stream_edits"], 1, "{}", st["totals"]["stateful"]);
    assert_eq!(st["mempool"]["in_use"], 0);
}

// ---- packets forged by rules ------------------------------------------------------

/// Rules forge packets: injected ones are received after the packet whose rule made them
/// (the rules see them, they leave right after it, even one that looks like a fragment),
/// sent ones leave as they are; nothing leaks.
#[test]
fn forged_packets_follow_their_creator() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("forge.lua");
    std::fs::write(
        &rules,
        r#"local ipv4 = require("protocol/ipv4")
require("protocol/udp")
haka.rule { on = haka.dissectors.ipv4.events.receive_packet, eval = function (pkt)
  pkt.dont_reassemble = true
  if pkt.proto == 20 then haka.log("injected seen, ip id %x", pkt.id) end
end }
haka.rule { on = haka.dissectors.udp.events.receive_packet, eval = function (pkt)
  if pkt.srcport == 3333 then return end
  -- injected: a fragment-looking datagram of protocol 20
  local n = haka.dissectors.ipv4.create(haka.dissectors.packet.create())
  n.id = 0xbeef
  n.flags.mf = true
  n.frag_offset = 80
  n.proto = 20
  n.src = ipv4.addr(192, 168, 0, 1)
  n.dst = ipv4.addr("192.168.0.2")
  n.payload:append("abcd")
  n:inject()
  -- sent: a UDP datagram, not seen by the rules
  local u = haka.dissectors.udp.create(haka.dissectors.ipv4.create(haka.dissectors.packet.create()),
    { srcport = 3333, dstport = 4444 })
  u.payload:append("xyz")
  u:send()
end }
"#,
    )
    .unwrap();
    let conf = patient_config(dir.path());
    let cap = dir.path().join("in.pcap");
    let a = common::ipv4_frame([10, 0, 0, 1], [10, 0, 0, 2], 17, 1000, 53, b"one");
    let b = common::ipv4_frame([10, 0, 0, 2], [10, 0, 0, 1], 17, 53, 1000, b"two");
    write_capture(&cap, vec![a.clone(), b.clone()]);
    let out = dir.path().join("out.pcap");
    let stats = dir.path().join("stats.json");
    let o = hakapcap_to(&rules, &conf, &cap, &out, &stats, &[]);
    let got = Capture::read(&out).unwrap().packets;
    assert_eq!(got.len(), 6, "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(got[0], a);
    assert_eq!(got[3], b);
    for k in [1, 4] {
        let f = &got[k];
        assert_eq!(f.len(), 14 + 20 + 8 + 3, "sent udp first (it left while the injected one was received)");
        assert_eq!(&f[34..38], &[0x0d, 0x05, 0x11, 0x5c]);
        assert_eq!(common::csum(&f[14..34]), 0);
    }
    for k in [2, 5] {
        let f = &got[k];
        assert_eq!(f.len(), 14 + 20 + 4);
        assert_eq!((f[14 + 9], &f[14 + 4..14 + 8]), (20, &[0xbe, 0xef, 0x20, 10][..]));
        assert_eq!(&f[34..], b"abcd");
        assert_eq!(common::csum(&f[14..34]), 0);
    }
    assert_eq!(log_lines(&o), vec!["injected seen, ip id beef"; 2]);
    let st = read_json(&stats);
    assert_eq!(st["mempool"]["in_use"], 0);
    assert_eq!(st["totals"]["defrag"]["fragments"], 0, "injected packets are not reassembled");
}
