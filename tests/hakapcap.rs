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

#[test]
fn every_shared_capture_comes_out_byte_identical() {
    let caps = all_captures();
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
