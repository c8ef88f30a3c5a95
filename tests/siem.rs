//! The SIEM fields of EVE alerts, end to end: hakapcap over HTTP and DNS captures with
//! alerting rules, the EVE file read back (flow_id, in_iface, rule, signature_id, action,
//! app_proto and the application's metadata), and the flow dump's flow ids.
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn capture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/haka-pcaps").join(rel)
}

/// Runs hakapcap with `rules` over `cap`, alerts to an EVE file only; returns the alerts
/// and the flow dump.
fn run(dir: &Path, rules: &str, cap: &Path) -> (Vec<Value>, Vec<Value>) {
    let r = dir.join("rules.lua");
    std::fs::write(&r, rules).unwrap();
    let eve = dir.join("eve.json");
    let _ = std::fs::remove_file(&eve);
    let conf = dir.join("haka.toml");
    std::fs::write(&conf, format!("[alerts]\nstdout = false\neve_file = \"{}\"\n", eve.display())).unwrap();
    let dump = dir.join("flows.json");
    let o = Command::new(env!("CARGO_BIN_EXE_hakapcap"))
        .arg(&r)
        .arg(cap)
        .arg("-c")
        .arg(&conf)
        .arg("--flow-dump")
        .arg(&dump)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let lines = |p: &Path| -> Vec<Value> {
        std::fs::read_to_string(p).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    (lines(&eve), lines(&dump))
}

const HTTP_RULES: &str = r#"local http = require("protocol/http")
haka.rule{
    name = "http-request", id = 1000001,
    on = haka.dissectors.http.events.request,
    eval = function (h, request)
        haka.alert{ description = "request", severity = "low" }
        local ua = request.headers["User-Agent"]
        if ua and ua:find("sqlmap", 1, true) then
            haka.alert{ description = "scanner" }
            h:reset()
        end
    end
}
haka.rule{
    on = haka.dissectors.http.events.response,
    eval = function (h, response)
        haka.alert{ description = "response" }
    end
}
"#;

/// FNV-1a of the text in 31 bits (the signature id of a rule without `id`).
fn fnv31(s: &str) -> u64 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    ((h & 0x7fff_ffff).max(1)) as u64
}

#[test]
fn http_alerts_carry_flow_rule_action_and_http_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let cap = capture("sample/test/standard-http.pcap");
    let (alerts, flows) = run(dir.path(), HTTP_RULES, &cap);
    assert!(alerts.len() >= 8, "{alerts:?}");
    let rules_file = dir.path().join("rules.lua");
    let mut by_port: HashMap<u64, HashSet<u64>> = HashMap::new();
    let (mut requests, mut responses, mut blocked, mut gets) = (0, 0, 0, 0);
    for a in &alerts {
        assert_eq!(a["event_type"], "alert");
        assert_eq!(a["in_iface"], "standard-http.pcap", "{a}");
        let id = a["flow_id"].as_u64().unwrap_or_else(|| panic!("no flow_id: {a}"));
        assert!(id > 0 && id < 1 << 53, "{a}");
        // the client's port names the flow
        let client_port = if a["dest_port"] == 80 { a["src_port"].as_u64() } else { a["dest_port"].as_u64() };
        by_port.entry(client_port.unwrap()).or_default().insert(id);
        let al = &a["alert"];
        if al.get("rule").is_none() {
            // raised by the engine itself (an HTTP anomaly of the capture): no rule
            assert!(al["description"].as_str().unwrap().starts_with("http anomaly: "), "{a}");
            assert!(al.get("signature_id").is_none(), "{a}");
            continue;
        }
        assert_eq!(a["app_proto"], "http", "{a}");
        match al["description"].as_str().unwrap() {
            "request" => {
                requests += 1;
                assert_eq!(al["rule"], "http-request", "{a}");
                assert_eq!(al["signature_id"], 1000001, "{a}");
                assert_eq!(al["signature"], "request", "{a}");
                // (as sent: the capture has a "WRONG" one too)
                let m = a["http"]["http_method"].as_str().unwrap();
                gets += (m == "GET") as usize;
                assert!(a["http"]["url"].as_str().unwrap().starts_with('/'), "{a}");
            }
            "scanner" => {
                blocked += 1;
                assert_eq!(al["action"], "blocked", "{a}");
                assert!(a["http"]["http_user_agent"].as_str().unwrap().contains("sqlmap"), "{a}");
                assert_eq!(a["http"]["hostname"], "server", "{a}");
            }
            "response" => {
                responses += 1;
                let rule = al["rule"].as_str().unwrap();
                // unnamed: FILE:LINE of its haka.rule call; signature id: its hash
                assert_eq!(rule, format!("{}:14", rules_file.display()), "{a}");
                assert_eq!(al["signature_id"].as_u64(), Some(fnv31(rule)), "{a}");
                assert!(a["http"]["status"].as_u64().is_some_and(|s| (100..600).contains(&s)), "{a}");
                assert_eq!(al["action"], "allowed", "{a}");
            }
            other => panic!("unexpected alert {other}: {a}"),
        }
        if al["description"] == "request" {
            // (the scanner's request alert shares its packet's fate: reset)
            let ua = a["http"]["http_user_agent"].as_str().unwrap_or("");
            assert_eq!(al["action"], if ua.contains("sqlmap") { "blocked" } else { "allowed" }, "{a}");
        }
    }
    assert!(requests >= 5 && responses >= 2 && blocked == 1 && gets >= 3, "{requests} {responses} {blocked} {gets}");
    // one flow_id per flow, the same in all its alerts; different across flows
    assert!(by_port.len() >= 5, "{by_port:?}");
    for (port, ids) in &by_port {
        assert_eq!(ids.len(), 1, "flow of client port {port}: {ids:?}");
    }
    let distinct: HashSet<u64> = by_port.values().flatten().copied().collect();
    assert_eq!(distinct.len(), by_port.len(), "{by_port:?}");
    // the flow dump names the flows by the same ids
    let mut matched = 0;
    for f in &flows {
        let port: u64 = f["client"].as_str().unwrap().rsplit(':').next().unwrap().parse().unwrap();
        if let Some(ids) = by_port.get(&port) {
            assert!(ids.contains(&f["flow_id"].as_u64().unwrap()), "{f} vs {ids:?}");
            matched += 1;
        }
    }
    assert!(matched >= 1, "no alerted flow in the dump: {flows:?}");
}

#[test]
fn dns_alerts_carry_the_query() {
    let dir = tempfile::tempdir().unwrap();
    let rules = r#"require("protocol/dns")
haka.rule{
    name = "dns-query",
    on = haka.dissectors.dns.events.query,
    eval = function (dns, query) haka.alert{ description = "query" } end
}
"#;
    let (alerts, _) = run(dir.path(), rules, &capture("modules/protocol/dns/test/basic.pcap"));
    assert!(!alerts.is_empty());
    for a in &alerts {
        assert_eq!(a["app_proto"], "dns", "{a}");
        assert_eq!(a["dns"]["type"], "query", "{a}");
        assert!(!a["dns"]["rrname"].as_str().unwrap().is_empty(), "{a}");
        assert!(a["dns"]["rrtype"].is_string(), "{a}");
        assert_eq!(a["alert"]["rule"], "dns-query", "{a}");
        assert_eq!(a["alert"]["action"], "allowed", "{a}");
        assert_eq!(a["proto"], "UDP", "{a}");
        assert!(a["flow_id"].as_u64().is_some(), "{a}");
    }
}
