//! The stateful layer through the real datapath (hakapcap): tcp_connection,
//! udp_connection, http, dns, stream reassembly and stream edits, RST forging,
//! the `[tcp]` / `[http]` policies, the sample rules of `rules/`, and
//! adversarial input. Reproduces real Haka's outputs where there is one
//! (tests/data/haka-reference-outputs: p3, p4, p5, p7), byte for byte per packet.
//!
//! Captures that Haka's test suite does not have are built here (Ethernet/IPv4/TCP
//! or UDP with valid checksums) into a temporary directory.
mod common;
use common::*;
use haka_engine::pcapfile::Capture;
use std::path::{Path, PathBuf};
use std::process::Command;

// ---------------------------------------------------------------------------------------
// running hakapcap
// ---------------------------------------------------------------------------------------

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn pcap(rel: &str) -> PathBuf {
    pcaps_dir().join(rel)
}

fn http_pcap(name: &str) -> PathBuf {
    pcap(&format!("modules/protocol/http/test/{name}"))
}

fn reference(name: &str) -> Capture {
    Capture::read(&root().join("tests/data/haka-reference-outputs").join(name)).unwrap()
}

struct Run {
    out: Capture,
    stats: serde_json::Value,
    stdout: String,
    /// Kept alive so that files written next to the output stay until the end of the test.
    dir: tempfile::TempDir,
}

impl Run {
    fn out_path(&self) -> PathBuf {
        self.dir.path().join("out.pcap")
    }

    /// `totals.stateful.<k>`
    fn st(&self, k: &str) -> u64 {
        self.stats["totals"]["stateful"][k]
            .as_u64()
            .unwrap_or_else(|| panic!("no stateful counter {k}: {}", self.stats))
    }

    /// `totals.dropped_by_reason.<k>`
    fn dropped(&self, k: &str) -> u64 {
        self.stats["totals"]["dropped_by_reason"][k].as_u64().unwrap_or_else(|| panic!("no drop reason {k}"))
    }

    fn total(&self, k: &str) -> u64 {
        self.stats["totals"][k].as_u64().unwrap_or_else(|| panic!("no total {k}"))
    }

    fn alerts(&self) -> u64 {
        self.stats["alerts"]["raised"].as_u64().unwrap()
    }

    /// The messages of the rules' `haka.log` calls (Haka's lines `info external: MESSAGE`).
    fn logs(&self) -> Vec<String> {
        self.stdout.lines().filter_map(|l| l.strip_prefix("info external: ").map(str::to_owned)).collect()
    }

    /// Lines logged with `prefix` (prefix removed).
    fn logs_with(&self, prefix: &str) -> Vec<String> {
        self.logs().iter().filter_map(|l| l.strip_prefix(prefix).map(str::to_owned)).collect()
    }

    /// Alert descriptions, in order (not those of the alerts' `method`).
    fn alert_descriptions(&self) -> Vec<String> {
        self.stdout.lines().filter_map(|l| l.strip_prefix("\tdescription = ").map(str::to_owned)).collect()
    }

    fn out_packets(&self) -> Vec<Pkt> {
        self.out.packets.iter().map(|f| parse(f, self.out.link_type).expect("parse output packet")).collect()
    }
}

/// Runs hakapcap with the rules in `rules` (Lua source) on `input`, with an optional config
/// (TOML text).
fn run(rules: &str, input: &Path, config: Option<&str>) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("rules.lua");
    std::fs::write(&r, rules).unwrap();
    run_in(dir, &r, input, config)
}

/// Runs hakapcap with the rules file `rules` (e.g. a sample of rules/).
fn run_file(rules: &Path, input: &Path, config: Option<&str>) -> Run {
    run_in(tempfile::tempdir().unwrap(), rules, input, config)
}

fn run_in(dir: tempfile::TempDir, rules: &Path, input: &Path, config: Option<&str>) -> Run {
    let out = dir.path().join("out.pcap");
    let stats = dir.path().join("stats.json");
    let mut args: Vec<String> = vec![
        rules.display().to_string(),
        input.display().to_string(),
        "-o".into(),
        out.display().to_string(),
        "--stats-file".into(),
        stats.display().to_string(),
    ];
    // The instruction budget is wall time: on a loaded machine (tests run in parallel on
    // 2 cores) a descheduled worker would see trivial rule calls interrupted and their
    // packets dropped (see `rule_budget_is_not_spent_by_preemption`). Give the rules a
    // budget that only a real runaway exceeds, unless the test sets one.
    let mut conf = config.unwrap_or("").to_owned();
    if !conf.contains("[rules]") {
        conf.push_str("\n[rules]\ninstruction_budget = 30000000000\n");
    }
    let p = dir.path().join("haka.toml");
    std::fs::write(&p, conf).unwrap();
    args.push("-c".into());
    args.push(p.display().to_string());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = hakapcap(&a);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "hakapcap failed on {}: {}\n{}",
        input.display(),
        String::from_utf8_lossy(&o.stderr),
        stdout
    );
    let run = Run { out: Capture::read(&out).unwrap(), stats: read_json(&stats), stdout, dir };
    assert_eq!(run.stats["mempool"]["in_use"], 0, "mbuf leak");
    let t = &run.stats["totals"];
    assert_eq!(
        run.out.packets.len() as u64,
        t["tx"].as_u64().unwrap(),
        "output file vs tx counter: {}\n{}",
        run.stats,
        run.stdout
    );
    assert_eq!(
        t["rx"].as_u64().unwrap() + run.st("resets_sent") + run.st("split_segments"),
        t["tx"].as_u64().unwrap() + t["dropped"].as_u64().unwrap(),
        "rx + forged = tx + dropped: {}\n{}",
        run.stats,
        run.stdout
    );
    run
}

/// The output has exactly the packets of `expected` (per-packet bytes; the capture
/// headers may differ).
fn assert_same_packets(got: &Capture, expected: &Capture, what: &str) {
    assert_eq!(got.link_type, expected.link_type, "{what}: link type");
    assert_eq!(got.packets.len(), expected.packets.len(), "{what}: packet count");
    for (i, (a, b)) in got.packets.iter().zip(&expected.packets).enumerate() {
        assert!(a == b, "{what}: packet {} differs from the reference\n got {:02x?}\nwant {:02x?}", i + 1, a, b);
    }
}

fn have_tool(t: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {t}")]).output().is_ok_and(|o| o.status.success())
}

fn tshark(args: &[&str]) -> String {
    assert!(have_tool("tshark"), "tshark is needed (scripts/setup.sh installs it)");
    let o = Command::new("tshark").args(args).output().expect("run tshark");
    assert!(o.status.success(), "tshark {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------
// crafting and parsing packets
// ---------------------------------------------------------------------------------------

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

fn mac(ip: [u8; 4]) -> [u8; 6] {
    [0x02, 0, ip[0], ip[1], ip[2], ip[3]]
}

fn sum16(data: &[u8], mut sum: u32) -> u32 {
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo_sum(src: [u8; 4], dst: [u8; 4], proto: u8, len: usize) -> u32 {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    sum16(&p, 0)
}

/// Ethernet + IPv4 + `l4` (whose checksum at `csum_at` is computed here).
fn ipv4_l4(src: [u8; 4], dst: [u8; 4], proto: u8, mut l4: Vec<u8>, csum_at: usize) -> Vec<u8> {
    let c = fold(sum16(&l4, pseudo_sum(src, dst, proto, l4.len())));
    let c = if proto == 17 && c == 0 { 0xffff } else { c };
    l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    let total = 20 + l4.len();
    let mut f = Vec::with_capacity(14 + total);
    f.extend_from_slice(&mac(dst));
    f.extend_from_slice(&mac(src));
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = fold(sum16(&ip, 0));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&l4);
    f
}

#[allow(clippy::too_many_arguments)]
fn tcp_pkt(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + payload.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    ipv4_l4(src, dst, 6, t, 16)
}

fn udp_pkt(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    ipv4_l4(src, dst, 17, u, 6)
}

const CLIENT: [u8; 4] = [198, 18, 0, 1];
const SERVER: [u8; 4] = [198, 18, 0, 2];
const C_ISN: u32 = 1000;
const S_ISN: u32 = 5000;

/// A TCP conversation with correct sequence and acknowledgement numbers.
/// Direction 0: client to server, 1: server to client.
struct Session {
    ip: [[u8; 4]; 2],
    port: [u16; 2],
    /// Next sequence number to send, per direction.
    next: [u32; 2],
    pkts: Vec<Vec<u8>>,
}

impl Session {
    fn new(cport: u16, sport: u16) -> Session {
        Session::between(CLIENT, SERVER, cport, sport)
    }

    fn between(c: [u8; 4], s: [u8; 4], cport: u16, sport: u16) -> Session {
        Session { ip: [c, s], port: [cport, sport], next: [C_ISN, S_ISN], pkts: Vec::new() }
    }

    fn raw(&self, dir: usize, seq: u32, ack: u32, flags: u8, data: &[u8]) -> Vec<u8> {
        tcp_pkt(self.ip[dir], self.ip[1 - dir], self.port[dir], self.port[1 - dir], seq, ack, flags, data)
    }

    fn push_raw(&mut self, dir: usize, seq: u32, ack: u32, flags: u8, data: &[u8]) {
        let p = self.raw(dir, seq, ack, flags, data);
        self.pkts.push(p);
    }

    fn handshake(&mut self) -> &mut Self {
        self.push_raw(0, C_ISN, 0, SYN, b"");
        self.push_raw(1, S_ISN, C_ISN + 1, SYN | ACK, b"");
        self.next = [C_ISN + 1, S_ISN + 1];
        self.push_raw(0, self.next[0], self.next[1], ACK, b"");
        self
    }

    /// A data segment in direction `dir`, acknowledging everything the other side sent.
    fn send(&mut self, dir: usize, data: &[u8]) -> &mut Self {
        let (seq, ack) = (self.next[dir], self.next[1 - dir]);
        self.push_raw(dir, seq, ack, PSH | ACK, data);
        self.next[dir] = seq.wrapping_add(data.len() as u32);
        self
    }

    /// `data` cut into segments of at most `mss` bytes.
    fn send_split(&mut self, dir: usize, data: &[u8], mss: usize) -> &mut Self {
        for c in data.chunks(mss) {
            self.send(dir, c);
        }
        self
    }

    fn ack(&mut self, dir: usize) -> &mut Self {
        let (seq, ack) = (self.next[dir], self.next[1 - dir]);
        self.push_raw(dir, seq, ack, ACK, b"");
        self
    }

    /// FIN from the client, FIN from the server, last ACK.
    fn close(&mut self) -> &mut Self {
        let (s0, s1) = (self.next[0], self.next[1]);
        self.push_raw(0, s0, s1, FIN | ACK, b"");
        self.push_raw(1, s1, s0 + 1, FIN | ACK, b"");
        self.push_raw(0, s0 + 1, s1 + 1, ACK, b"");
        self.next = [s0 + 1, s1 + 1];
        self
    }
}

fn write_pcap(dir: &Path, name: &str, packets: Vec<Vec<u8>>) -> PathBuf {
    let p = dir.join(name);
    write_capture(&p, packets);
    p
}

/// A parsed IPv4 TCP or UDP packet of an output capture.
#[derive(Debug, Clone)]
struct Pkt {
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: Vec<u8>,
    /// IPv4 header checksum and TCP/UDP checksum verify.
    checksums_ok: bool,
}

/// The client of the TCP conversation in `pkts` (address, port): the sender of the first
/// SYN without ACK.
fn client_of(pkts: &[Pkt]) -> ([u8; 4], u16) {
    let p = pkts.iter().find(|p| p.proto == 6 && p.flags & (SYN | ACK) == SYN).expect("a SYN");
    (p.src, p.sport)
}

impl Pkt {
    fn is_from(&self, end: ([u8; 4], u16)) -> bool {
        (self.src, self.sport) == end
    }
}

fn parse(frame: &[u8], link: u32) -> Option<Pkt> {
    let ip = match link {
        1 => {
            if frame.get(12..14)? != [0x08, 0x00] {
                return None;
            }
            &frame[14..]
        }
        101 | 228 => frame,
        _ => return None,
    };
    if ip.first()? >> 4 != 4 {
        return None;
    }
    let ihl = ((ip[0] & 15) as usize) * 4;
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let ip = ip.get(..total)?;
    let src: [u8; 4] = ip[12..16].try_into().unwrap();
    let dst: [u8; 4] = ip[16..20].try_into().unwrap();
    let proto = ip[9];
    let l4 = &ip[ihl..];
    let ip_ok = fold(sum16(&ip[..ihl], 0)) == 0;
    let l4_ok = fold(sum16(l4, pseudo_sum(src, dst, proto, l4.len()))) == 0;
    let (sport, dport) = (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]));
    let mut p = Pkt {
        src,
        dst,
        proto,
        sport,
        dport,
        seq: 0,
        ack: 0,
        flags: 0,
        payload: Vec::new(),
        checksums_ok: ip_ok && l4_ok,
    };
    match proto {
        6 => {
            p.seq = u32::from_be_bytes(l4[4..8].try_into().unwrap());
            p.ack = u32::from_be_bytes(l4[8..12].try_into().unwrap());
            p.flags = l4[13];
            let off = ((l4[12] >> 4) as usize) * 4;
            p.payload = l4[off..].to_vec();
        }
        17 => p.payload = l4[8..].to_vec(),
        _ => {}
    }
    Some(p)
}

/// Every packet of one direction of a TCP conversation follows the previous one in
/// sequence (no gap, no overlap), and the data concatenated.
fn stream_of(pkts: &[Pkt], from_client: bool) -> Vec<u8> {
    let client = client_of(pkts);
    let mut next: Option<u32> = None;
    let mut data = Vec::new();
    for p in pkts.iter().filter(|p| p.proto == 6 && p.is_from(client) == from_client) {
        if p.flags & SYN != 0 {
            next = Some(p.seq.wrapping_add(1));
            continue;
        }
        if p.flags & RST != 0 {
            continue;
        }
        if let Some(n) = next {
            if !p.payload.is_empty() || p.flags & FIN != 0 {
                assert_eq!(
                    p.seq,
                    n,
                    "sequence gap or overlap in the {} stream",
                    if from_client { "client" } else { "server" }
                );
            }
        }
        data.extend_from_slice(&p.payload);
        next = Some(p.seq.wrapping_add(p.payload.len() as u32 + (p.flags & FIN != 0) as u32));
    }
    data
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

// ---------------------------------------------------------------------------------------
// rules used by several tests
// ---------------------------------------------------------------------------------------

/// Logs every HTTP request and response with their fields.
const HTTP_LOG_RULES: &str = r#"
local http = require("protocol/http")
haka.rule{
    on = haka.dissectors.http.events.request,
    eval = function (http, request)
        haka.log("REQ %s %s %s host=%s ua=%s from=%s:%d to=%s:%d", request.method, request.uri, request.version,
            tostring(request.headers["Host"]), tostring(request.headers["user-agent"]),
            tostring(http.srcip), http.srcport, tostring(http.dstip), http.dstport)
    end
}
haka.rule{
    on = haka.dissectors.http.events.response,
    eval = function (http, response)
        haka.log("RESP %s %s %s server=%s req=%s", response.version, response.status, response.reason,
            tostring(response.headers["Server"]), http.request and http.request.uri or "nil")
    end
}
"#;

// ---------------------------------------------------------------------------------------
// real Haka's outputs, reproduced
// ---------------------------------------------------------------------------------------

#[test]
fn p7_http_header_modification_matches_real_haka() {
    let rules = r#"
local http = require("protocol/http")
haka.rule{
    on = haka.dissectors.http.events.request,
    eval = function (http, request) request.headers["User-Agent"] = "holdout-agent/1.0" end
}
haka.rule{
    on = haka.dissectors.http.events.response,
    eval = function (http, response) response.headers["Server"] = "holdout" end
}
"#;
    let r = run(rules, &http_pcap("keepalive.pcap"), None);
    assert_same_packets(&r.out, &reference("p7-http-modif.pcap"), "p7");
    assert_eq!(r.st("http_requests"), 4);
    assert_eq!(r.st("http_responses"), 4);
    assert_eq!(r.st("stream_edits"), 8, "one head rewrite per request and per response");
    assert_eq!(r.st("stream_edits_refused"), 0);
}

#[test]
fn p3_http_observation_matches_real_haka() {
    let r = run(HTTP_LOG_RULES, &pcap("doc/user/workshop/http.pcap"), None);
    assert_same_packets(&r.out, &reference("p3-http.pcap"), "p3");
    assert_eq!(r.st("http_requests"), 3);
    assert_eq!(r.st("http_responses"), 3);
    assert_eq!(r.logs_with("REQ ").len(), 3, "{}", r.stdout);
    assert_eq!(r.logs_with("RESP ").len(), 3, "{}", r.stdout);
    assert_eq!(r.st("stream_edits"), 0);
}

#[test]
fn p4_tcp_connections_match_real_haka() {
    let rules = r#"
require("protocol/tcp_connection")
haka.rule{
    on = haka.dissectors.tcp_connection.events.new_connection,
    eval = function (flow, tcp)
        haka.log("NEW %s:%d -> %s:%d %s", tostring(flow.srcip), flow.srcport, tostring(flow.dstip), flow.dstport, flow.state)
    end
}
haka.rule{
    on = haka.dissectors.tcp_connection.events.receive_data,
    eval = function (flow, data, dir) haka.log("DATA %d %s %d", flow.srcport, dir, #data) end
}
haka.rule{
    on = haka.dissectors.tcp_connection.events.end_connection,
    eval = function (flow) haka.log("END %d %s", flow.srcport, flow.state) end
}
"#;
    let r = run(
        rules,
        &pcap("modules/protocol/tcp/test/interleavedconnection.pcap"),
        Some("[tcp]\nunexpected_packet = \"drop\"\n"),
    );
    // 40 of 44: the retransmitted SYN-ACKs are unexpected packets, dropped as by Haka
    // (without an alert: to Haka's stream they are old data).
    assert_same_packets(&r.out, &reference("p4-tcpconn.pcap"), "p4");
    assert_eq!(r.total("rx"), 44);
    assert_eq!(r.dropped("tcp_unexpected"), 4);
    assert_eq!(r.st("tcp_unexpected"), 4);
    assert_eq!(r.alert_descriptions().iter().filter(|d| *d == "unexpected tcp packet").count(), 0, "{}", r.stdout);
    assert_eq!(r.st("tcp_connections"), 3);
    let mut new = r.logs_with("NEW ");
    new.sort();
    assert_eq!(
        new,
        [32889, 32890, 32891].map(|p| format!("192.168.10.1:{p} -> 192.168.20.1:80 syn_sent")).to_vec(),
        "{}",
        r.stdout
    );
    let mut end = r.logs_with("END ");
    end.sort();
    assert_eq!(end, ["32889 timed_wait", "32890 timed_wait", "32891 timed_wait"]);
    // Every byte of both directions of the three connections reached receive_data.
    let data = r.logs_with("DATA ");
    let total = |port: &str, dir: &str| -> u64 {
        data.iter()
            .filter(|l| l.starts_with(&format!("{port} {dir} ")))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    let input = Capture::read(&pcap("modules/protocol/tcp/test/interleavedconnection.pcap")).unwrap();
    for port in [32889u16, 32890, 32891] {
        let pk: Vec<Pkt> = input.packets.iter().filter_map(|f| parse(f, input.link_type)).collect();
        let up: usize = pk.iter().filter(|p| p.sport == port).map(|p| p.payload.len()).sum();
        let down: usize = pk.iter().filter(|p| p.dport == port).map(|p| p.payload.len()).sum();
        assert!(up > 0 && down > 0);
        assert_eq!(total(&port.to_string(), "up"), up as u64, "client bytes of {port}");
        assert_eq!(total(&port.to_string(), "down"), down as u64, "server bytes of {port}");
    }
}

#[test]
fn p5_dns_observation_matches_real_haka_and_fields() {
    let rules = r#"
local dns = require("protocol/dns")
haka.rule{
    on = haka.dissectors.dns.events.query,
    eval = function (dns, query)
        local q = query.question
        haka.log("QUERY id=%d qr=%s rd=%s qd=%d %s %s %s from=%s:%d", query.id, tostring(query.qr), tostring(query.rd),
            query.qdcount, q.name, tostring(q.type), tostring(q.class), tostring(dns.srcip), dns.srcport)
    end
}
haka.rule{
    on = haka.dissectors.dns.events.response,
    eval = function (dns, response, query)
        local a = {}
        for _, rr in ipairs(response.answer) do
            local v
            if rr.type == "A" then v = tostring(rr.ip)
            elseif rr.type == "MX" then v = rr.pref .. " " .. rr.name
            elseif rr.type == "SOA" then v = rr.mname .. " " .. rr.serial
            elseif rr.type == "TXT" then v = rr.data
            else v = "?" end
            a[#a + 1] = string.format("%s %s %s", rr.owner, tostring(rr.type), v)
        end
        haka.log("RESP id=%d qid=%d qr=%s rcode=%d an=%d ns=%d ar=%d q=%s | %s", response.id, query.id,
            tostring(response.qr), response.rcode, response.ancount, response.nscount, response.arcount,
            query.question.name, table.concat(a, ", "))
    end
}
"#;
    let r = run(rules, &pcap("modules/protocol/dns/test/basic.pcap"), None);
    assert_same_packets(&r.out, &reference("p5-dns.pcap"), "p5");
    assert_eq!(r.st("dns_queries"), 4);
    assert_eq!(r.st("dns_responses"), 4);
    assert_eq!(r.st("dns_errors"), 0);
    assert_eq!(r.st("udp_connections"), 4);
    assert_eq!(
        r.logs_with("QUERY "),
        [
            "id=23936 qr=false rd=true qd=1 haka-security.org. A 1 from=172.16.3.38:38360",
            "id=60714 qr=false rd=true qd=1 haka-security.org. SOA 1 from=172.16.3.38:50391",
            "id=32893 qr=false rd=true qd=1 arkoon.net. MX 1 from=172.16.3.38:51292",
            "id=47997 qr=false rd=true qd=1 paulfariello.fr. TXT 1 from=172.16.3.38:37869",
        ],
        "{}",
        r.stdout
    );
    let resp = r.logs_with("RESP ");
    assert_eq!(resp.len(), 4, "{}", r.stdout);
    assert_eq!(
        resp[0],
        "id=23936 qid=23936 qr=true rcode=0 an=6 ns=6 ar=11 q=haka-security.org. | \
         haka-security.org. A 66.155.11.238, haka-security.org. A 76.74.254.123, haka-security.org. A 66.155.9.238, \
         haka-security.org. A 192.0.80.250, haka-security.org. A 76.74.254.120, haka-security.org. A 192.0.81.250"
    );
    // (checked against tshark: SOA serial 2005071858, TXT "v=spf1 a mx -all", NS/AR counts)
    assert_eq!(resp[1], "id=60714 qid=60714 qr=true rcode=0 an=1 ns=6 ar=11 q=haka-security.org. | haka-security.org. SOA ns1.wordpress.com. 2005071858");
    assert_eq!(resp[2], "id=32893 qid=32893 qr=true rcode=0 an=1 ns=2 ar=2 q=arkoon.net. | arkoon.net. MX 10 arkoon-mail.");
    assert_eq!(resp[3], "id=47997 qid=47997 qr=true rcode=0 an=1 ns=5 ar=5 q=paulfariello.fr. | paulfariello.fr. TXT v=spf1 a mx -all");
}

// ---------------------------------------------------------------------------------------
// HTTP events and fields
// ---------------------------------------------------------------------------------------

#[test]
fn http_request_and_response_fields() {
    let r = run(HTTP_LOG_RULES, &http_pcap("request-response.pcap"), None);
    assert_eq!(
        r.logs(),
        [
            "REQ GET / 1.1 host=10.2.104.129 ua=Wget/1.13.4 (linux-gnu) from=10.2.96.127:57794 to=10.2.104.129:80",
            "RESP 1.1 200 OK server=Apache/2.2.8 (Ubuntu) DAV/2 req=/",
        ]
    );
    assert_eq!((r.st("http_requests"), r.st("http_responses"), r.st("http_errors")), (1, 1, 0));
    assert_eq!(
        r.out.packets,
        Capture::read(&http_pcap("request-response.pcap")).unwrap().packets,
        "observing changes nothing"
    );
}

#[test]
fn http_keepalive_gives_every_request_and_response_in_order() {
    let r = run(HTTP_LOG_RULES, &http_pcap("keepalive.pcap"), None);
    let ua = "ua=Wget/1.13.4 (linux-gnu) from=10.2.96.127:57838 to=10.2.104.129:80";
    let srv = "server=Apache/2.2.8 (Ubuntu) DAV/2";
    let want = [
        format!("REQ GET /twiki/bin/view/ 1.1 host=10.2.104.129 {ua}"),
        format!("RESP 1.1 200 OK {srv} req=/twiki/bin/view/"),
        format!("REQ GET /robots.txt 1.1 host=10.2.104.129 {ua}"),
        format!("RESP 1.1 404 Not Found {srv} req=/robots.txt"),
        format!("REQ GET /twiki/pub/TWiki/TWikiLogos/twikiRobot46x50.gif 1.1 host=10.2.104.129 {ua}"),
        format!("RESP 1.1 200 OK {srv} req=/twiki/pub/TWiki/TWikiLogos/twikiRobot46x50.gif"),
        format!("REQ GET /twiki/pub/TWiki/TWikiLogos/twikiRobot131x64.gif 1.1 host=10.2.104.129 {ua}"),
        format!("RESP 1.1 200 OK {srv} req=/twiki/pub/TWiki/TWikiLogos/twikiRobot131x64.gif"),
    ];
    assert_eq!(r.logs(), want);
    assert_eq!((r.st("http_requests"), r.st("http_responses"), r.st("http_errors")), (4, 4, 0));
    assert_eq!(r.total("tx"), 40);
}

#[test]
fn http_variations_valid_ones_parsed_invalid_ones_alerted_and_dropped() {
    let r = run(HTTP_LOG_RULES, &http_pcap("variation_http.pcap"), None);
    let reqs = r.logs_with("REQ ");
    let methods: Vec<&str> = reqs.iter().map(|l| l.split(' ').next().unwrap()).collect();
    // Tabs and repeated blanks between the request-line tokens, LF-only line ends and a
    // folded header are accepted; an unknown but well-formed method token is a request.
    // "GET /" (no version) is an HTTP/0.9 request: its line only (the lines after it are
    // not read by a server: a body), no version; Apache answered without a status line.
    assert_eq!(methods, ["GET", "GET", "GET", "GET", "BAD_METHOD", "GET%"], "{}", r.stdout);
    for l in &reqs {
        if l.starts_with("GET /  host=nil") {
            continue;
        }
        assert!(l.contains(" / 1.1 host=server ua=telnet v1.0/1 enhanced gold edition from=192.168.10.1:"), "{l}");
    }
    assert_eq!(reqs.iter().filter(|l| l.starts_with("GET /  host=nil")).count(), 1, "{}", r.stdout);
    assert_eq!(r.logs_with("RESP 1.1 200 OK server=Apache/2.2.8 (Ubuntu) DAV/2 req=/").len(), 5);
    assert_eq!(r.st("http_anomaly_http09_request"), 1);
    // "GET / HTML/1.1", "G(E*T$? /", "HTTP/numeric.numeric": protocol errors.
    assert_eq!(r.st("http_errors"), 3);
    let errs: Vec<String> = r.alert_descriptions().into_iter().filter(|d| d.starts_with("invalid http")).collect();
    assert_eq!(errs.len(), 3, "{}", r.stdout);
    assert!(r.dropped("flow_dropped") > 0);
    // Nothing of an invalid request reached the server side of the output.
    let out = r.out_packets();
    for bad in [&b"GET / HTML/1.1"[..], b"G(E*T$? /", b"HTTP/numeric.numeric"] {
        assert!(!out.iter().any(|p| contains(&p.payload, bad)), "{:?} was forwarded", String::from_utf8_lossy(bad));
    }
    assert!(out.iter().any(|p| contains(&p.payload, b"BAD_METHOD / HTTP/1.1")));
}

#[test]
fn http_request_split_over_packets_is_parsed() {
    let input = http_pcap("split-request.pcap");
    let r = run(HTTP_LOG_RULES, &input, None);
    // The request line spans two TCP segments (1448 + 9 bytes).
    let cap = Capture::read(&input).unwrap();
    let pk: Vec<Pkt> = cap.packets.iter().filter_map(|f| parse(f, cap.link_type)).collect();
    let data: Vec<&Pkt> = pk.iter().filter(|p| p.dport == 80 && !p.payload.is_empty()).collect();
    assert_eq!(data.len(), 2, "the capture has the request in two segments");
    let head: Vec<u8> = data.iter().flat_map(|p| p.payload.clone()).collect();
    let line = String::from_utf8_lossy(&head).lines().next().unwrap().to_owned();
    let uri = line.split(' ').nth(1).unwrap();
    assert!(uri.len() > 1000 && uri.starts_with("/totototo") && uri.ends_with("0.html"), "{uri}");
    assert!(!contains(&data[0].payload, b"\r\n\r\n"), "the head ends in the second segment");
    let reqs = r.logs_with("REQ ");
    assert_eq!(reqs.len(), 1, "{}", r.stdout);
    assert_eq!(
        reqs[0],
        format!("GET {uri} 1.1 host=10.2.104.129 ua=Wget/1.13.4 (linux-gnu) from=10.2.96.127:57804 to=10.2.104.129:80")
    );
    assert_eq!(r.logs_with("RESP ").len(), 1);
    assert!(r.logs_with("RESP ")[0].starts_with("1.1 403 Forbidden "));
    assert_eq!(r.st("http_requests"), 1);
    assert_eq!(r.total("tx"), 13, "{}\n{}", r.stats["totals"], r.stdout);
}

const SPLIT_URI_RULES: &str = r#"
local http = require("protocol/http")
local function s(v) return v == nil and "nil" or tostring(v) end
haka.rule{
    on = haka.dissectors.http.events.request,
    eval = function (session, request)
        local u = request.split_uri
        local args = {}
        for k, v in pairs(u.args or {}) do args[#args + 1] = k .. "=" .. v end
        table.sort(args)
        haka.log("URI scheme=%s user=%s pass=%s host=%s port=%s path=%s query=%s args=[%s]", s(u.scheme), s(u.user),
            s(u.pass), s(u.host), s(u.port), s(u.path), s(u.query), table.concat(args, "&"))
        -- the method form (older rules) gives the same object
        assert(request:split_uri() == u)
        haka.log("URI norm=%s", http.uri.normalize(request.uri))
        local ck = {}
        for k, v in pairs(request.split_cookies) do ck[#ck + 1] = k .. "=" .. v end
        table.sort(ck)
        haka.log("COOKIES [%s]", table.concat(ck, ";"))
    end
}
"#;

#[test]
fn http_split_uri_fields_on_haka_capture() {
    let r = run(SPLIT_URI_RULES, &http_pcap("uri-split-pcap.pcap"), None);
    assert_eq!(
        r.logs(),
        ["URI scheme=nil user=nil pass=nil host=nil port=nil path=/ query=nil args=[]", "URI norm=/", "COOKIES []",],
        "{}",
        r.stdout
    );
}

#[test]
fn http_split_uri_and_cookies_on_crafted_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::new(40001, 80);
    s.handshake()
        .send(
            0,
            b"GET http://alice:secret@WWW.Example.com:8080/a/./b/../c%7e/index.php?id=42&name=J%C3%B8rn+Doe&q=%27or%201 HTTP/1.1\r\n\
              Host: www.example.com\r\nCookie: session=abc123; theme=dark\r\nCookie: lang=fr\r\n\r\n",
        )
        .send(1, b"HTTP/1.1 204 No Content\r\n\r\n")
        .ack(0)
        .close();
    let input = write_pcap(dir.path(), "uri.pcap", s.pkts.clone());
    let r = run(SPLIT_URI_RULES, &input, None);
    assert_eq!(
        r.logs(),
        [
            "URI scheme=http user=alice pass=secret host=WWW.Example.com port=8080 path=/a/./b/../c%7e/index.php \
             query=id=42&name=J%C3%B8rn+Doe&q=%27or%201 args=[id=42&name=J%C3%B8rn+Doe&q=%27or%201]",
            "URI norm=http://alice:secret@www.example.com:8080/a/c~/index.php?id=42&name=J%C3%B8rn+Doe&q=%27or%201",
            "COOKIES [lang=fr;session=abc123;theme=dark]",
        ],
        "{}",
        r.stdout
    );
}

#[test]
fn http_protocol_error_alerts_and_drops_the_connection() {
    // A NUL in the target: a C server would see "/a", the rules "/a\0b" (not tolerated).
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::new(40050, 80);
    s.handshake()
        .send(0, b"GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n")
        .send(1, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        .ack(0)
        .close();
    let input = write_pcap(dir.path(), "nul.pcap", s.pkts.clone());
    let r = run(HTTP_LOG_RULES, &input, None);
    assert!(r.logs_with("REQ ").is_empty(), "{}", r.stdout);
    assert_eq!(r.st("http_errors"), 1);
    let descs = r.alert_descriptions();
    assert_eq!(descs, ["invalid http request_line"], "{}", r.stdout);
    // The request and every later packet of the connection are dropped; the handshake passes.
    assert_eq!(r.dropped("flow_dropped"), s.pkts.len() as u64 - 3);
    let out = r.out_packets();
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|p| p.payload.is_empty()), "no request data forwarded");

    // protocol_error = "accept": the alert is still raised, every packet passes.
    let r = run(HTTP_LOG_RULES, &input, Some("[http]\nprotocol_error = \"accept\"\n"));
    assert_eq!(r.st("http_errors"), 1);
    assert_eq!(r.alert_descriptions().iter().filter(|d| d.starts_with("invalid http")).count(), 1, "{}", r.stdout);
    assert_eq!(r.total("dropped"), 0);
    assert_eq!(r.out.packets, Capture::read(&input).unwrap().packets);
}

/// A NUL in a header value: a protocol error by default (a C server ends the value there);
/// with `[http] binary_header = "accept"` (Haka's behaviour) the request reaches the rules,
/// the value whole, and print() cuts it at the NUL as Haka's printf did.
#[test]
fn http_nul_in_header_value_refused_by_default_accepted_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::new(40051, 80);
    s.handshake()
        .send(0, b"GET / HTTP/1.1\r\nHost: \x04\x8e\x00\x11xy\r\n\r\n")
        .send(1, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        .ack(0)
        .close();
    let input = write_pcap(dir.path(), "nulhdr.pcap", s.pkts.clone());
    let rules = r#"
        require("protocol/http")
        haka.rule{ on = haka.dissectors.http.events.request, eval = function (http, request)
            local h = request.headers["Host"]
            haka.log("HOST %d %s", #h, h:byte(-1))
            print("PRINT", h, "after")
        end }
    "#;
    let r = run(rules, &input, None);
    assert_eq!(r.alert_descriptions(), ["invalid http header"], "{}", r.stdout);
    assert!(r.logs_with("HOST ").is_empty(), "{}", r.stdout);

    let r = run(rules, &input, Some("[http]\nbinary_header = \"accept\"\n"));
    assert!(r.alert_descriptions().is_empty(), "{}", r.stdout);
    assert_eq!(r.logs_with("HOST "), ["6 121"], "{}", r.stdout);
    assert!(r.stdout.contains("PRINT \u{4}\u{fffd} after\n"), "{:?}", r.stdout);
    assert_eq!(r.total("dropped"), 0);
}

/// A request whose target holds raw spaces (accepted by servers and by libhtp) used to be a
/// protocol error: never seen by the request rules, and passed uninspected with
/// `protocol_error = "accept"`. It is now parsed, inspected and flagged.
#[test]
fn http_sqli_with_raw_spaces_reaches_the_request_rules_and_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let mut pkts = Vec::new();
    let mut sessions = Vec::new();
    let reqs: [(u16, &[u8]); 2] = [
        (40060, b"GET /admin/login.php?user=admin' OR 1=1-- HTTP/1.1\r\nHost: shop\r\n\r\n"),
        // benign, with another tolerated irregularity
        (40061, b"GET /index.html HTTP/1.1\r\nHost : shop\r\n\r\n"),
    ];
    for (port, req) in reqs {
        let mut s = Session::new(port, 80);
        s.handshake().send(0, req).send(1, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").ack(0).close();
        pkts.extend(s.pkts.clone());
        sessions.push(s);
    }
    let n = sessions[0].pkts.len();
    let input = write_pcap(dir.path(), "sqli-spaces.pcap", pkts);
    let sqli = "http: sqli in uri argument 'user' (score 12)";
    let conn = |r: &Run, port: u16| r.out_packets().iter().filter(|p| p.sport == port || p.dport == port).count();
    for config in [None, Some("[http]\nprotocol_error = \"accept\"\n")] {
        let r = run_file(&sample("http_sqli.lua"), &input, config);
        let mut descs = r.alert_descriptions();
        descs.sort();
        assert_eq!(descs, ["http anomaly: request_target_spaces", "http anomaly: space_before_colon", sqli], "{}", r.stdout);
        assert_eq!((r.st("http_requests"), r.st("http_errors")), (2, 0));
        assert_eq!((r.st("http_anomalies"), r.st("http_anomaly_request_target_spaces")), (2, 1));
        assert_eq!(r.st("http_anomaly_space_before_colon"), 1);
        assert_eq!(conn(&r, 40060), 3, "the attack is dropped: only the handshake passes");
        assert_eq!(conn(&r, 40061), n, "the benign request passes");
    }
    // anomaly = "ignore": counted, not alerted; the rules inspect as before
    let r = run_file(&sample("http_sqli.lua"), &input, Some("[http]\nanomaly = \"ignore\"\n"));
    assert_eq!(r.alert_descriptions(), [sqli], "{}", r.stdout);
    assert_eq!(r.st("http_anomalies"), 2);
    assert_eq!(conn(&r, 40061), n);
    // anomaly = "drop": alerted, and the connection is dropped
    let r = run_file(&sample("http_sqli.lua"), &input, Some("[http]\nanomaly = \"drop\"\n"));
    assert_eq!(r.alert_descriptions().len(), 3, "{}", r.stdout);
    assert_eq!((conn(&r, 40060), conn(&r, 40061)), (3, 3));
    assert_eq!(r.dropped("flow_dropped"), 2 * (n as u64 - 3));
}

/// Rules hook the anomaly event (the message is http.request / http.response), also when
/// no request rule runs; an HTTP/0.9 exchange (no version, an answer without a status
/// line) is parsed without error and passes.
#[test]
fn http_anomaly_event_reaches_rules_and_http09_exchanges_pass() {
    let dir = tempfile::tempdir().unwrap();
    let mut pkts = Vec::new();
    let mut s = Session::new(40070, 80);
    s.handshake().send(0, b"GET /x\r\n").send(1, b"<html>hi</html>\n").close();
    pkts.extend(s.pkts.clone());
    let mut s = Session::new(40071, 80);
    s.handshake()
        .send(0, b"GET /a b HTTP/1.1\nHost: shop\n\n")
        .send(1, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        .ack(0)
        .close();
    pkts.extend(s.pkts.clone());
    let input = write_pcap(dir.path(), "anomalies.pcap", pkts);
    let anomaly_rule = r#"
local http = require("protocol/http")
haka.rule{
    on = haka.dissectors.http.events.anomaly,
    eval = function (http, name)
        haka.log("ANOM %s %s", name, http.request and http.request.uri or "-")
    end
}
"#;
    let request_rule = r#"
haka.rule{
    on = haka.dissectors.http.events.request,
    eval = function (http, request) haka.log("REQ %s [%s] [%s]", request.method, request.uri, request.version) end
}
haka.rule{
    on = haka.dissectors.http.events.response_data,
    eval = function (http, data) haka.log("RESP_DATA %d %s", data:size(), tostring(http.response)) end
}
"#;
    let anoms = ["ANOM http09_request /x", "ANOM request_target_spaces /a b", "ANOM bare_lf /a b"];
    let r = run(anomaly_rule, &input, None);
    assert_eq!(r.logs(), anoms, "{}", r.stdout);
    let r = run(&format!("{anomaly_rule}{request_rule}"), &input, None);
    let mut want: Vec<&str> = vec![anoms[0], "REQ GET [/x] []", "RESP_DATA 16 nil"];
    want.extend([anoms[1], anoms[2], "REQ GET [/a b] [1.1]"]);
    assert_eq!(r.logs(), want, "{}", r.stdout);
    assert_eq!((r.st("http_errors"), r.st("http_anomalies"), r.total("dropped")), (0, 3, 0));
    assert_eq!(r.out.packets, Capture::read(&input).unwrap().packets);
    let descs = r.alert_descriptions();
    assert_eq!(descs.len(), 3, "{}", r.stdout);
    assert!(descs.iter().all(|d| d.starts_with("http anomaly: ")), "{descs:?}");
    // the capture of Haka's tests: "GET /_HTTP/1.1" (no version) is an HTTP/0.9 request
    let r = run(request_rule, &http_pcap("bad-request.pcap"), None);
    assert_eq!(r.logs_with("REQ "), ["GET [/_HTTP/1.1] []"], "{}", r.stdout);
    assert_eq!((r.st("http_errors"), r.st("http_anomaly_http09_request"), r.total("dropped")), (0, 1, 0));
}

// ---------------------------------------------------------------------------------------
// the samples of rules/
// ---------------------------------------------------------------------------------------

fn sample(name: &str) -> PathBuf {
    root().join("rules").join(name)
}

/// The output has exactly two forged RSTs for the connection client:cport <-> server:80,
/// one toward each end, continuing the sequence of the packet that triggered the reset
/// (`seq`/`ack`/`len` of that client packet), with valid checksums.
fn assert_resets_both_ways(out: &[Pkt], cport: u16, seq: u32, ack: u32, len: u32) {
    let rsts: Vec<&Pkt> = out.iter().filter(|p| p.proto == 6 && p.flags & RST != 0).collect();
    assert_eq!(rsts.len(), 2, "two RSTs: {rsts:?}");
    let to_server = rsts.iter().find(|p| p.src == CLIENT).expect("an RST toward the server");
    let to_client = rsts.iter().find(|p| p.src == SERVER).expect("an RST toward the client");
    assert_eq!((to_server.dst, to_server.sport, to_server.dport), (SERVER, cport, 80));
    assert_eq!((to_client.dst, to_client.sport, to_client.dport), (CLIENT, 80, cport));
    // toward the server: in the client's sequence space where the dropped request began
    assert_eq!(to_server.seq, seq, "RST to the server: seq");
    // toward the client: in the server's sequence space, acknowledging the request
    assert_eq!(to_client.seq, ack, "RST to the client: seq");
    assert_eq!(to_client.ack, seq.wrapping_add(len), "RST to the client: ack");
    for p in [to_server, to_client] {
        assert!(p.checksums_ok, "forged RST with a bad checksum: {p:?}");
        assert!(p.payload.is_empty());
    }
}

#[test]
fn sample_http_block_ua_resets_scanners() {
    let dir = tempfile::tempdir().unwrap();
    let req_scan =
        b"GET /index.php?id=1 HTTP/1.1\r\nHost: victim\r\nUser-Agent: sqlmap/1.4.7#stable (http://sqlmap.org)\r\n\r\n";
    let mut scan = Session::new(40010, 80);
    scan.handshake().send(0, req_scan);
    let (req_seq, req_ack) = (C_ISN + 1, S_ISN + 1);
    scan.send(1, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").ack(0).close();
    let mut nikto = Session::new(40011, 80);
    nikto
        .handshake()
        .send(0, b"HEAD / HTTP/1.0\r\nUser-Agent: Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:map_codes)\r\n\r\n");
    let mut ok = Session::new(40012, 80);
    ok.handshake()
        .send(0, b"GET / HTTP/1.1\r\nHost: victim\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/115.0\r\n\r\n")
        .send(1, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        .ack(0)
        .close();
    let mut pkts = scan.pkts.clone();
    pkts.extend(ok.pkts.clone());
    let input = write_pcap(dir.path(), "ua.pcap", pkts);
    let r = run_file(&sample("http_block_ua.lua"), &input, None);
    let descs = r.alert_descriptions();
    assert_eq!(descs, ["http: scanner user-agent 'sqlmap/1.4.7#stable (http://sqlmap.org)' (sqlmap)"], "{}", r.stdout);
    assert_eq!(r.st("resets_sent"), 2);
    let out = r.out_packets();
    let scan_out: Vec<Pkt> = out.iter().filter(|p| p.sport == 40010 || p.dport == 40010).cloned().collect();
    // handshake + 2 RSTs; the request, the response and the teardown are dropped
    assert_eq!(scan_out.len(), 5, "{scan_out:?}");
    assert!(scan_out.iter().all(|p| p.payload.is_empty()), "nothing of the request or response went through");
    assert_resets_both_ways(&out, 40010, req_seq, req_ack, req_scan.len() as u32);
    assert_eq!(r.dropped("flow_dropped"), (scan.pkts.len() - 3) as u64);
    // the browser's session is untouched
    let ok_out: Vec<&Vec<u8>> =
        r.out.packets.iter().filter(|f| parse(f, 1).is_some_and(|p| p.sport == 40012 || p.dport == 40012)).collect();
    assert_eq!(ok_out.len(), ok.pkts.len());
    assert!(ok_out.iter().zip(&ok.pkts).all(|(a, b)| *a == b));
    // Nikto too (case-insensitive match)
    let input = write_pcap(dir.path(), "nikto.pcap", nikto.pkts.clone());
    let r = run_file(&sample("http_block_ua.lua"), &input, None);
    assert_eq!(r.alert_descriptions().len(), 1, "{}", r.stdout);
    assert!(r.alert_descriptions()[0].ends_with("(nikto)"));
    assert_eq!(r.st("resets_sent"), 2);
}

/// Rules on HTTP events see their own connection (session fields) and their alerts name
/// the flow of the packet that carried the message, even when other connections were
/// opened since (the Lua flow objects of application-only policies are made lazily).
#[test]
fn http_rules_see_and_alert_on_the_connection_of_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Session::new(40030, 80);
    let mut b = Session::new(40031, 80);
    a.handshake();
    b.handshake();
    a.send(0, b"GET /a HTTP/1.1\r\nHost: h\r\nUser-Agent: sqlmap/1.4\r\n\r\n");
    b.send(0, b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n");
    b.send(1, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").close();
    a.send(1, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").close();
    let mut pkts: Vec<Vec<u8>> = a.pkts[..3].to_vec();
    pkts.extend(b.pkts[..3].iter().cloned());
    pkts.push(a.pkts[3].clone());
    pkts.extend(b.pkts[3..].iter().cloned());
    pkts.extend(a.pkts[4..].iter().cloned());
    let input = write_pcap(dir.path(), "two.pcap", pkts);
    let eve = dir.path().join("eve.json");
    let rules = r#"
haka.rule{ on = haka.dissectors.http.events.request, eval = function(http, request)
  haka.log("request %s from %s:%d to %d", request.uri, tostring(http.srcip), http.srcport, http.dstport)
  if (request.headers["User-Agent"] or ""):find("sqlmap", 1, true) then
    haka.alert{ description = "scanner on " .. request.uri }
  end
end }
haka.rule{ on = haka.dissectors.http.events.response, eval = function(http, response)
  haka.log("response %s to %d", response.status, http.srcport)
end }
"#;
    let conf = format!("[alerts]\neve_file = \"{}\"\n", eve.display());
    let r = run(rules, &input, Some(&conf));
    assert_eq!(
        r.logs(),
        [
            "request /a from 198.18.0.1:40030 to 80",
            "request /b from 198.18.0.1:40031 to 80",
            "response 200 to 40031",
            "response 200 to 40030"
        ],
        "{}",
        r.stdout
    );
    let alerts: Vec<serde_json::Value> =
        std::fs::read_to_string(&eve).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(alerts.len(), 1, "{}", r.stdout);
    assert_eq!(alerts[0]["alert"]["description"], "scanner on /a", "{}", alerts[0]);
    assert_eq!(alerts[0]["src_port"], 40030, "{}", alerts[0]);
    assert_eq!(alerts[0]["dest_port"], 80, "{}", alerts[0]);
    assert_eq!(r.st("connections_ended"), 2);
}

#[test]
fn sample_http_uri_block_resets_forbidden_uris() {
    let dir = tempfile::tempdir().unwrap();
    let req = b"GET /forbidden/secret.html HTTP/1.1\r\nHost: lab\r\nUser-Agent: curl/7.88.1\r\n\r\n";
    let mut bad = Session::new(40020, 80);
    bad.handshake().send(0, req).send(1, b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret").ack(0).close();
    let mut good = Session::new(40021, 80);
    good.handshake()
        .send(0, b"GET /index.html HTTP/1.1\r\nHost: lab\r\nUser-Agent: curl/7.88.1\r\n\r\n")
        .send(1, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        .ack(0)
        .close();
    let mut pkts = good.pkts.clone();
    pkts.extend(bad.pkts.clone());
    let input = write_pcap(dir.path(), "uri.pcap", pkts);
    let r = run_file(&sample("http_uri_block.lua"), &input, None);
    assert_eq!(r.alert_descriptions(), ["http: forbidden uri /forbidden/secret.html"], "{}", r.stdout);
    assert_eq!(r.st("http_requests"), 2);
    assert_eq!(r.st("resets_sent"), 2);
    let out = r.out_packets();
    assert_resets_both_ways(&out, 40020, C_ISN + 1, S_ISN + 1, req.len() as u32);
    assert!(!out.iter().any(|p| contains(&p.payload, b"secret")));
    assert_eq!(out.iter().filter(|p| p.sport == 40021 || p.dport == 40021).count(), good.pkts.len());
    assert_eq!(r.total("tx"), (good.pkts.len() + 3 + 2) as u64);
}

#[test]
fn forged_resets_follow_the_packets_received_before_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = Session::new(40022, 80);
    bad.handshake().send(0, b"GET /forbidden HTTP/1.1\r\nHost: lab\r\n\r\n");
    let input = write_pcap(dir.path(), "rst-order.pcap", bad.pkts.clone());
    let r = run_file(&sample("http_uri_block.lua"), &input, None);
    let out = r.out_packets();
    let flags: Vec<u8> = out.iter().map(|p| p.flags).collect();
    assert_eq!(out.len(), 5, "{flags:02x?}");
    // SYN, SYN-ACK, ACK as received, then the two RSTs (the request is dropped)
    assert_eq!(&r.out.packets[..3], &bad.pkts[..3], "handshake first, in input order: flags {flags:02x?}");
    assert!(out[3..].iter().all(|p| p.flags & RST != 0), "flags {flags:02x?}");
}

#[test]
fn resets_leave_right_after_their_packet_client_first_in_either_form() {
    // Haka sends the RSTs of flow:reset() at once, the client's then the server's; the
    // next packets of the burst (another connection) come after them.
    let dir = tempfile::tempdir().unwrap();
    let mut bad = Session::new(40023, 80);
    bad.handshake().send(0, b"GET /forbidden HTTP/1.1\r\nHost: lab\r\n\r\n");
    let mut other = Session::new(40024, 80);
    other.handshake();
    let mut pkts = bad.pkts.clone();
    pkts.extend(other.pkts.clone());
    let input = write_pcap(dir.path(), "rst-place.pcap", pkts);
    for (conf, bare) in [(None, false), (Some("[tcp]\nreset_flags = \"rst\"\n"), true)] {
        let r = run_file(&sample("http_uri_block.lua"), &input, conf);
        let out = r.out_packets();
        let ports: Vec<(u16, u16, u8)> = out.iter().map(|p| (p.sport, p.dport, p.flags)).collect();
        assert_eq!(out.len(), 3 + 2 + 3, "{ports:?}");
        assert_eq!(&r.out.packets[..3], &bad.pkts[..3], "{ports:?}");
        let (to_client, to_server) = (&out[3], &out[4]);
        assert_eq!((to_client.src, to_client.dst, to_client.seq), (SERVER, CLIENT, S_ISN + 1), "{ports:?}");
        assert_eq!((to_server.src, to_server.dst, to_server.seq), (CLIENT, SERVER, C_ISN + 1), "{ports:?}");
        assert_eq!(&r.out.packets[5..], &other.pkts[..], "the other connection after the RSTs: {ports:?}");
        for (i, p) in [(3, to_client), (4, to_server)] {
            assert!(p.checksums_ok && p.payload.is_empty(), "{p:?}");
            let df = r.out.packets[i][14 + 6] & 0x40 != 0;
            if bare {
                assert_eq!((p.flags, p.ack, df), (RST, 0, false), "Haka's bare RST: {p:?}");
            } else {
                assert_eq!((p.flags, df), (RST | ACK, true), "{p:?}");
            }
        }
        assert_eq!(to_client.ack, if bare { 0 } else { C_ISN + 1 + 38 });
    }
}

#[test]
fn a_packet_dropped_as_its_connection_is_made_drops_a_tcp_connection_and_makes_no_udp_one() {
    // Haka: pkt:drop() in new_connection (or a policy) drops the TCP connection: its
    // later packets are dropped silently; a UDP connection is not made, so the next
    // datagram makes it again. In receive_packet it drops the packet.
    let dir = tempfile::tempdir().unwrap();
    let mut web = Session::new(40040, 80);
    web.handshake().send(0, b"GET / HTTP/1.0\r\n\r\n").send(0, b"drop me").send(0, b"more").close();
    let mut db = Session::new(40041, 3306);
    db.handshake().send(1, b"greeting").ack(0).close();
    let mut pkts = web.pkts.clone();
    pkts.extend(db.pkts.clone());
    let q1 = udp_pkt(CLIENT, SERVER, 5000, 5353, b"first");
    let q2 = udp_pkt(CLIENT, SERVER, 5000, 5353, b"second");
    pkts.extend([q1, q2]);
    let input = write_pcap(dir.path(), "filter.pcap", pkts);
    let rules = r#"require("protocol/ipv4") require("protocol/tcp") require("protocol/udp")
require("protocol/tcp_connection") require("protocol/udp_connection")
haka.rule { on = haka.dissectors.tcp_connection.events.new_connection,
  eval = function (flow, pkt) if pkt.dstport ~= 80 then pkt:drop() end end }
haka.rule { on = haka.dissectors.tcp_connection.events.receive_packet,
  eval = function (flow, pkt) if #pkt.payload == 7 then pkt:drop() end end }
haka.rule { on = haka.dissectors.udp_connection.events.new_connection,
  eval = function (flow, pkt) pkt:drop() end }
"#;
    let r = run(rules, &input, None);
    let out = r.out_packets();
    assert!(!out.iter().any(|p| p.sport == 3306 || p.dport == 3306), "the 3306 connection is dropped whole");
    let web_out: Vec<&Vec<u8>> =
        r.out.packets.iter().filter(|f| parse(f, 1).is_some_and(|p| p.sport == 40040 || p.dport == 40040)).collect();
    let mut web_expected: Vec<&Vec<u8>> = web.pkts.iter().collect();
    web_expected.remove(4); // "drop me"
    assert_eq!(web_out, web_expected, "the web connection less the packet its rule dropped");
    let udp_out: Vec<&Vec<u8>> = r.out.packets.iter().filter(|f| parse(f, 1).is_some_and(|p| p.proto == 17)).collect();
    assert!(udp_out.is_empty(), "each UDP datagram makes the connection again, and is dropped: {udp_out:?}");
    assert_eq!(r.st("udp_connections"), 2, "new_connection fired for each");
}

#[test]
fn sample_http_sqli_scores_uri_arguments_and_cookies() {
    let dir = tempfile::tempdir().unwrap();
    let mut pkts = Vec::new();
    let reqs: [(u16, &[u8]); 4] = [
        // keywords in a %-encoded query argument: union 4 + select 4 + from 2 + ' 2 + -- 4
        (40030, b"GET /search.php?lang=en&q=1%27%20UNION%20SELECT%20password%20FROM%20users-- HTTP/1.1\r\nHost: shop\r\n\r\n"),
        // in a cookie, double-encoded: ' 2 + "or 1=1" 6 + -- 4
        (40031, b"GET /account HTTP/1.1\r\nHost: shop\r\nCookie: theme=dark; id=1%27%20or%201%3D1%20--\r\n\r\n"),
        // SQL comments inside keywords (un/**/ion): decoded before scoring: union 4 + select 4
        (40032, b"GET /item?id=1+un/**/ion+sel/**/ect+1 HTTP/1.1\r\nHost: shop\r\n\r\n"),
        // benign: one keyword only (select 4 < 8)
        (40033, b"GET /search.php?q=select+a+car HTTP/1.1\r\nHost: shop\r\nCookie: id=42\r\n\r\n"),
    ];
    let mut sessions = Vec::new();
    for (port, req) in reqs {
        let mut s = Session::new(port, 80);
        s.handshake().send(0, req).send(1, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").ack(0).close();
        pkts.extend(s.pkts.clone());
        sessions.push(s);
    }
    let input = write_pcap(dir.path(), "sqli.pcap", pkts);
    let r = run_file(&sample("http_sqli.lua"), &input, None);
    let mut descs = r.alert_descriptions();
    descs.sort();
    assert_eq!(
        descs,
        [
            "http: sqli in cookie 'id' (score 12)",
            "http: sqli in uri argument 'id' (score 8)",
            "http: sqli in uri argument 'q' (score 16)",
        ],
        "{}",
        r.stdout
    );
    assert_eq!(r.st("http_requests"), 4);
    assert_eq!(r.st("resets_sent"), 0, "drop, not reset");
    let out = r.out_packets();
    for port in [40030u16, 40031, 40032] {
        let conn: Vec<&Pkt> = out.iter().filter(|p| p.sport == port || p.dport == port).collect();
        assert_eq!(conn.len(), 3, "{port}: only the handshake passes");
    }
    let benign = out.iter().filter(|p| p.sport == 40033 || p.dport == 40033).count();
    assert_eq!(benign, sessions[3].pkts.len());
    assert_eq!(r.dropped("flow_dropped"), 3 * (sessions[0].pkts.len() as u64 - 3));
}

#[test]
fn sample_http_rewrite_header_edits_the_stream_consistently() {
    let input = http_pcap("keepalive.pcap");
    let r = run_file(&sample("http_rewrite_header.lua"), &input, None);
    assert_eq!(r.st("http_responses"), 4);
    assert_eq!(r.st("stream_edits"), 4, "one head rewrite per response");
    assert_eq!(r.st("stream_edits_refused"), 0);
    assert_eq!(r.total("tx"), 40);
    let out = r.out_packets();
    assert!(out.iter().all(|p| p.checksums_ok), "checksums recomputed");
    let server = stream_of(&out, false);
    let client = stream_of(&out, true);
    assert_eq!(count(&server, b"\r\nServer: haka\r\n"), 4);
    assert_eq!(count(&server, b"\r\nX-Inspected-By: haka\r\n"), 4);
    assert_eq!(count(&server, b"Server: Apache"), 0);
    assert_eq!(count(&client, b"GET /"), 4, "requests unchanged");
    // The bodies are intact: the server stream is the original one with only the heads changed.
    let orig_pk: Vec<Pkt> = {
        let c = Capture::read(&input).unwrap();
        c.packets.iter().filter_map(|f| parse(f, c.link_type)).collect()
    };
    let orig_server = stream_of(&orig_pk, false);
    // Expected: Server replaced in place, X-Inspected-By appended as the head's last header.
    let old: &[u8] = b"Server: Apache/2.2.8 (Ubuntu) DAV/2";
    let mut want = Vec::new();
    let mut rest = &orig_server[..];
    while let Some(i) = rest.windows(old.len()).position(|w| w == old) {
        let end = i + rest[i..].windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        want.extend_from_slice(&rest[..i]);
        want.extend_from_slice(b"Server: haka");
        want.extend_from_slice(&rest[i + old.len()..end]);
        want.extend_from_slice(b"\r\nX-Inspected-By: haka");
        rest = &rest[end..];
    }
    want.extend_from_slice(rest);
    assert_eq!(count(&want, b"X-Inspected-By"), 4);
    assert!(want == server, "server stream = the original one with the heads rewritten, bodies intact");
    assert_eq!(client, stream_of(&orig_pk, true));

    // An independent check with tshark: no TCP analysis flag at all on the input; on the
    // output none but "ACKed unseen segment" (no lost, retransmitted or out-of-order segment,
    // bad checksum, ...). The output merges both wire sides: each client ACK is mapped back
    // into the server's original sequence space (what the real server expects), while the
    // server's segments in the same file are in the edited space, so a shrunk response head
    // makes tshark see ACKs beyond the data (in keepalive.pcap each head shrinks by one byte).
    let in_s = input.display().to_string();
    let out_s = r.out_path().display().to_string();
    assert_eq!(tshark(&["-r", &in_s, "-Y", "tcp.analysis.flags"]).trim(), "", "the input is clean");
    let flagged = tshark(&[
        "-r",
        &out_s,
        "-o",
        "tcp.check_checksum:TRUE",
        "-Y",
        "(tcp.analysis.flags && !tcp.analysis.ack_lost_segment) || tcp.checksum.status == \"Bad\" || ip.checksum.status == \"Bad\"",
    ]);
    assert_eq!(flagged.trim(), "", "tshark flags the output");
    let acks = tshark(&["-r", &out_s, "-Y", "tcp.analysis.ack_lost_segment", "-T", "fields", "-e", "tcp.srcport"]);
    assert!(acks.lines().all(|l| l == "57838"), "only client ACKs: {acks}");
    let servers =
        tshark(&["-r", &out_s, "-Y", "http.response", "-T", "fields", "-e", "http.server", "-e", "http.response.code"]);
    assert_eq!(servers.lines().collect::<Vec<_>>(), ["haka\t200", "haka\t404", "haka\t200", "haka\t200"], "{servers}");
    let inspected = tshark(&["-r", &out_s, "-Y", "http.response", "-T", "fields", "-e", "http.response.line"]);
    assert_eq!(inspected.matches("X-Inspected-By: haka").count(), 4, "{inspected}");
}

/// A DNS message: header, questions (name, type) and answer records (name, type, rdata).
fn dns_msg(id: u16, flags: u16, questions: &[(&str, u16)], answers: &[(&str, u16, Vec<u8>)]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(&(questions.len() as u16).to_be_bytes());
    m.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    let name = |m: &mut Vec<u8>, n: &str| {
        for l in n.split('.').filter(|l| !l.is_empty()) {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.push(0);
    };
    for (n, t) in questions {
        name(&mut m, n);
        m.extend_from_slice(&t.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
    }
    for (n, t, rdata) in answers {
        name(&mut m, n);
        m.extend_from_slice(&t.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m.extend_from_slice(&300u32.to_be_bytes());
        m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        m.extend_from_slice(rdata);
    }
    m
}

const DNS_RESOLVER: [u8; 4] = [198, 18, 0, 53];

#[test]
fn sample_dns_pdns_alerts_per_address_record() {
    let r = run_file(&sample("dns_pdns.lua"), &pcap("modules/protocol/dns/test/basic.pcap"), None);
    let want: Vec<String> =
        ["66.155.11.238", "76.74.254.123", "66.155.9.238", "192.0.80.250", "76.74.254.120", "192.0.81.250"]
            .iter()
            .map(|ip| format!("pdns: haka-security.org. -> {ip}"))
            .collect();
    assert_eq!(r.alert_descriptions(), want, "A records of the answer section only: {}", r.stdout);
    assert_eq!(r.logs(), want);
    assert_eq!(r.total("tx"), 8, "nothing dropped");

    // AAAA records, behind a CNAME (the CNAME itself is not an address)
    let dir = tempfile::tempdir().unwrap();
    let q = dns_msg(0x1111, 0x0100, &[("www.example.net", 28)], &[]);
    let mut cname = Vec::new();
    for l in ["v6", "example", "net"] {
        cname.push(l.len() as u8);
        cname.extend_from_slice(l.as_bytes());
    }
    cname.push(0);
    let v6: Vec<u8> = vec![0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let resp = dns_msg(
        0x1111,
        0x8180,
        &[("www.example.net", 28)],
        &[("www.example.net", 5, cname), ("v6.example.net", 28, v6)],
    );
    let input = write_pcap(
        dir.path(),
        "aaaa.pcap",
        vec![udp_pkt(CLIENT, DNS_RESOLVER, 33333, 53, &q), udp_pkt(DNS_RESOLVER, CLIENT, 53, 33333, &resp)],
    );
    let r = run_file(&sample("dns_pdns.lua"), &input, None);
    assert_eq!(r.alert_descriptions(), ["pdns: v6.example.net. -> 2001:db8::1"], "{}", r.stdout);
    assert_eq!(r.total("tx"), 2);
}

// ---------------------------------------------------------------------------------------
// DNS
// ---------------------------------------------------------------------------------------

const DNS_LOG_RULES: &str = r#"
local dns = require("protocol/dns")
haka.rule{
    on = haka.dissectors.dns.events.query,
    eval = function (dns, query) haka.log("QUERY %d %s", query.id, query.question.name) end
}
haka.rule{
    on = haka.dissectors.dns.events.response,
    eval = function (dns, response, query)
        haka.log("RESP %d %d %s an=%d", response.id, query.id, query.question.name, #response.answer)
    end
}
"#;

#[test]
fn dns_response_without_its_query_is_alerted_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let a = |ip: [u8; 4]| ip.to_vec();
    let q1 = dns_msg(0x0101, 0x0100, &[("good.example", 1)], &[]);
    let r1 = dns_msg(0x0101, 0x8180, &[("good.example", 1)], &[("good.example", 1, a([192, 0, 2, 1]))]);
    // an unsolicited response (no query ever sent on this flow): cache poisoning attempt
    let lone = dns_msg(0x4242, 0x8180, &[("bank.example", 1)], &[("bank.example", 1, a([203, 0, 113, 66]))]);
    // a response whose id does not match the pending query of its flow
    let q3 = dns_msg(0x0303, 0x0100, &[("mail.example", 1)], &[]);
    let r3_bad = dns_msg(0x0304, 0x8180, &[("mail.example", 1)], &[("mail.example", 1, a([203, 0, 113, 67]))]);
    let r3 = dns_msg(0x0303, 0x8180, &[("mail.example", 1)], &[("mail.example", 1, a([192, 0, 2, 3]))]);
    let pkts = vec![
        udp_pkt(CLIENT, DNS_RESOLVER, 30001, 53, &q1),
        udp_pkt(DNS_RESOLVER, CLIENT, 53, 30001, &r1),
        udp_pkt(DNS_RESOLVER, CLIENT, 53, 30002, &lone),
        udp_pkt(CLIENT, DNS_RESOLVER, 30003, 53, &q3),
        udp_pkt(DNS_RESOLVER, CLIENT, 53, 30003, &r3_bad),
        udp_pkt(DNS_RESOLVER, CLIENT, 53, 30003, &r3),
    ];
    let input = write_pcap(dir.path(), "dns.pcap", pkts.clone());
    let r = run(DNS_LOG_RULES, &input, None);
    assert_eq!(r.alert_descriptions(), ["dns: mismatching response", "dns: mismatching response"], "{}", r.stdout);
    assert_eq!(
        r.logs(),
        [
            "QUERY 257 good.example.",
            "RESP 257 257 good.example. an=1",
            "QUERY 771 mail.example.",
            "RESP 771 771 mail.example. an=1"
        ]
    );
    assert_eq!(r.dropped("rule"), 2);
    let expect: Vec<Vec<u8>> = [0, 1, 3, 5].iter().map(|&i| pkts[i].clone()).collect();
    assert_eq!(r.out.packets, expect, "the two unmatched responses are dropped, the rest passes unchanged");
    assert_eq!(r.st("dns_queries"), 2);
}

/// DNS header fields written by a rule reach the datagram of the message (valid UDP
/// checksum, the response matched by the id as sent); the query a response rule gets was
/// sent already: writing it fails ("error udp: read only buffer", Haka's) and drops the
/// response and its connection (a later datagram of the flow with it).
#[test]
fn dns_header_fields_written_into_the_datagram_and_sent_queries_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let a = |ip: [u8; 4]| ip.to_vec();
    let q1 = dns_msg(0x0101, 0x0100, &[("w.example", 1)], &[]);
    let r1 = dns_msg(0x5151, 0x8180, &[("w.example", 1)], &[("w.example", 1, a([192, 0, 2, 1]))]);
    let q2 = dns_msg(0x0202, 0x0100, &[("ro.example", 1)], &[]);
    let r2 = dns_msg(0x0202, 0x8180, &[("ro.example", 1)], &[("ro.example", 1, a([192, 0, 2, 2]))]);
    let later = dns_msg(0x0303, 0x0100, &[("ro.example", 1)], &[]);
    let pkts = vec![
        udp_pkt(CLIENT, DNS_RESOLVER, 30011, 53, &q1),
        udp_pkt(DNS_RESOLVER, CLIENT, 53, 30011, &r1),
        udp_pkt(CLIENT, DNS_RESOLVER, 30012, 53, &q2),
        udp_pkt(DNS_RESOLVER, CLIENT, 53, 30012, &r2),
        udp_pkt(CLIENT, DNS_RESOLVER, 30012, 53, &later),
    ];
    let input = write_pcap(dir.path(), "dnsw.pcap", pkts.clone());
    let rules = r#"
        require("protocol/dns")
        haka.rule{ on = haka.dissectors.dns.events.query, eval = function (dns, query)
            if query.question.name == "w.example." then query.id = 0x5151; query.rd = false end
        end }
        haka.rule{ on = haka.dissectors.dns.events.response, eval = function (dns, response, query)
            haka.log("RESP %d rd=%s", query.id, tostring(query.rd))
            if query.question.name == "ro.example." then query.id = 1 end
        end }
    "#;
    let r = run(rules, &input, None);
    assert_eq!(r.logs(), ["RESP 20817 rd=false", "RESP 514 rd=true"], "{}", r.stdout);
    assert!(r.alert_descriptions().is_empty(), "{}", r.stdout);
    assert_eq!(r.stdout.lines().filter(|l| *l == "error udp: read only buffer").count(), 1, "{}", r.stdout);
    assert_eq!(r.total("rule_errors"), 1);
    assert_eq!(r.out.packets.len(), 3, "the failed response and the later datagram of its flow dropped");
    let out = &r.out.packets[0];
    let mut want = pkts[0].clone();
    want[42..44].copy_from_slice(&[0x51, 0x51]);
    want[44] &= !0x01; // rd
    assert_eq!(out[..40], want[..40]);
    assert_eq!(out[42..], want[42..], "the written fields, nothing else");
    // the UDP checksum covers the new bytes
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&out[26..34]);
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&((out.len() - 34) as u16).to_be_bytes());
    pseudo.extend_from_slice(&out[34..]);
    assert_eq!(csum(&pseudo), 0, "UDP checksum");
    assert_eq!(r.out.packets[1..], pkts[1..3]);
}

#[test]
fn dns_compression_loops_are_counted_errors_not_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let q = dns_msg(0x0707, 0x0100, &[("loop.example", 1)], &[]);
    // Response: question at offset 12 ("loop.example": 14 bytes + type + class = 18), the
    // answer's name at offset 30 is a pointer to itself.
    let mut self_loop = dns_msg(0x0707, 0x8180, &[("loop.example", 1)], &[]);
    self_loop[7] = 1; // ancount
    assert_eq!(self_loop.len(), 30);
    self_loop.extend_from_slice(&[0xc0, 30, 0, 1, 0, 1, 0, 0, 1, 0x2c, 0, 4, 192, 0, 2, 7]);
    // Query whose question name is two pointers pointing at each other (offsets 12 and 14).
    let mut ping_pong = dns_msg(0x0808, 0x0100, &[], &[]);
    ping_pong[5] = 1; // qdcount
    ping_pong.extend_from_slice(&[0xc0, 14, 0xc0, 12, 0, 1, 0, 1]);
    // A label running past the end of the message.
    let mut truncated = dns_msg(0x0909, 0x0100, &[("x.example", 1)], &[]);
    truncated.truncate(15);
    truncated[12] = 60;
    let q_ok = dns_msg(0x0a0a, 0x0100, &[("after.example", 1)], &[]);
    let r_ok = dns_msg(0x0a0a, 0x8180, &[("after.example", 1)], &[("after.example", 1, vec![192, 0, 2, 10])]);
    let pkts = vec![
        udp_pkt(CLIENT, DNS_RESOLVER, 31001, 53, &q),
        udp_pkt(DNS_RESOLVER, CLIENT, 53, 31001, &self_loop),
        udp_pkt(CLIENT, DNS_RESOLVER, 31002, 53, &ping_pong),
        udp_pkt(CLIENT, DNS_RESOLVER, 31003, 53, &truncated),
        udp_pkt(CLIENT, DNS_RESOLVER, 31004, 53, &q_ok),
        udp_pkt(DNS_RESOLVER, CLIENT, 53, 31004, &r_ok),
    ];
    let input = write_pcap(dir.path(), "loops.pcap", pkts.clone());
    let r = run(DNS_LOG_RULES, &input, None);
    assert_eq!(r.st("dns_errors"), 3, "{}", r.stats["totals"]["stateful"]);
    assert_eq!(r.total("rx"), 6);
    // the worker goes on: a well-formed exchange after the loops is dissected
    let logs = r.logs();
    assert!(logs.contains(&"QUERY 2570 after.example.".to_owned()), "{logs:?}");
    assert!(logs.contains(&"RESP 2570 2570 after.example. an=1".to_owned()), "{logs:?}");
    assert!(!logs.iter().any(|l| l.contains("loop.example") && l.starts_with("RESP")), "{logs:?}");
    // malformed messages are alerted and (by default) dropped, never passed silently
    let want = ["dns: compression pointer loop", "dns: compression pointer loop", "dns: truncated message"];
    assert_eq!(r.alert_descriptions(), want, "{}", r.stdout);
    assert_eq!(r.dropped("protocol_error"), 3);
    let expect: Vec<Vec<u8>> = [0, 4, 5].iter().map(|&i| pkts[i].clone()).collect();
    assert_eq!(r.out.packets, expect);
    // [dns] protocol_error = "accept": alerted, passed
    let r = run(DNS_LOG_RULES, &input, Some("[dns]\nprotocol_error = \"accept\"\n"));
    assert_eq!(r.alert_descriptions(), want, "{}", r.stdout);
    assert_eq!(r.out.packets, pkts);
}

/// A ClientHello of `pad` padding bytes (extension 21) for `sni`, as TLS records of at most
/// 2^14 bytes.
fn big_client_hello(sni: &str, pad: usize) -> Vec<u8> {
    let mut ext = Vec::new();
    let name = sni.as_bytes();
    let mut sni_ext = vec![0u8, 0]; // list length, filled below
    sni_ext.push(0);
    sni_ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni_ext.extend_from_slice(name);
    let l = (sni_ext.len() - 2) as u16;
    sni_ext[..2].copy_from_slice(&l.to_be_bytes());
    for (ty, data) in [(0u16, sni_ext), (21, vec![0; pad])] {
        ext.extend_from_slice(&ty.to_be_bytes());
        ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
        ext.extend_from_slice(&data);
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]); // one suite, null compression
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let n = body.len() as u32;
    let mut hs = vec![1, (n >> 16) as u8, (n >> 8) as u8, n as u8];
    hs.extend_from_slice(&body);
    let mut out = Vec::new();
    for frag in hs.chunks(1 << 14) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&(frag.len() as u16).to_be_bytes());
        out.extend_from_slice(frag);
    }
    out
}

#[test]
fn client_hellos_over_many_records_are_inspected_and_over_the_cap_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut pkts = Vec::new();
    // 30 KB hellos (3 records, 1400-byte segments) with a blocked and an allowed name
    for (port, sni) in [(40001, "blocked.example"), (40002, "fine.example")] {
        let mut s = Session::new(port, 443);
        s.handshake().send_split(0, &big_client_hello(sni, 30_000), 1400);
        pkts.extend(s.pkts);
    }
    let input = write_pcap(dir.path(), "hellos.pcap", pkts);
    let r = run_file(&sample("tls_block_sni.lua"), &input, None);
    assert_eq!(r.st("tls_client_hellos"), 2, "{}", r.stats["totals"]["stateful"]);
    assert_eq!(r.alert_descriptions(), ["blocked SNI blocked.example"], "{}", r.stdout);
    assert!(r.st("resets_sent") >= 1);
    // over `[tls] max_hello_bytes`: alert and drop the connection, from the hello's header
    let r = run_file(&sample("tls_block_sni.lua"), &input, Some("[tls]\nmax_hello_bytes = 16384\n"));
    assert_eq!(r.st("tls_client_hellos"), 0);
    assert_eq!(r.st("tls_errors"), 2);
    let want: Vec<String> = ["blocked.example", "fine.example"]
        .iter()
        .map(|sni| {
            let h = big_client_hello(sni, 30_000);
            let len = (h[6] as usize) << 16 | (h[7] as usize) << 8 | h[8] as usize;
            format!("tls: ClientHello of {len} bytes, over the 16384-byte cap")
        })
        .collect();
    assert_eq!(r.alert_descriptions(), want, "{}", r.stdout);
    assert_eq!(r.dropped("flow_dropped"), 2 * 22, "every segment of the hellos");
    // protocol_error = "accept": alerted, passed uninspected
    let conf = "[tls]\nmax_hello_bytes = 16384\nprotocol_error = \"accept\"\n";
    let r = run_file(&sample("tls_block_sni.lua"), &input, Some(conf));
    assert_eq!(r.alert_descriptions(), want, "{}", r.stdout);
    assert_eq!(r.total("dropped"), 0);
}

// ---------------------------------------------------------------------------------------
// TCP streams
// ---------------------------------------------------------------------------------------

/// A receive_data rule that logs the data, and (see `tcp_receive_data_alone_fires`) a
/// new_connection rule that does nothing: without one, receive_data never fires.
const TCP_DATA_LOG: &str = r#"
require("protocol/tcp_connection")
haka.rule{ on = haka.dissectors.tcp_connection.events.new_connection, eval = function (flow, tcp) end }
haka.rule{
    on = haka.dissectors.tcp_connection.events.receive_data,
    eval = function (flow, data, dir)
        local s = data:asstring()
        assert(#data == #s and data:size() == #s)
        haka.log("DATA %d %s %d %s", flow.srcport, dir, #data, (s:gsub("[^%w%p ]", ".")))
    end
}
"#;

#[test]
fn tcp_receive_data_alone_fires() {
    let only_receive_data = r#"
require("protocol/tcp_connection")
haka.rule{
    on = haka.dissectors.tcp_connection.events.receive_data,
    eval = function (flow, data, dir) haka.log("DATA %d %s %d", flow.srcport, dir, #data) end
}
"#;
    let r = run(only_receive_data, &pcap("modules/protocol/tcp/test/streamread.pcap"), None);
    assert_eq!(r.logs(), ["DATA 44393 up 41"], "{}", r.stdout);
    // udp_connection likewise
    let only_udp_data = r#"
require("protocol/udp_connection")
haka.rule{
    on = haka.dissectors.udp_connection.events.receive_data,
    eval = function (flow, pkt, dir) haka.log("UDATA %s %d", dir, #pkt.payload) end
}
"#;
    let r = run(only_udp_data, &pcap("modules/protocol/dns/test/basic.pcap"), None);
    assert_eq!(r.logs().len(), 8, "{}", r.stdout);
}

#[test]
fn tcp_receive_data_sees_the_stream() {
    let input = pcap("modules/protocol/tcp/test/streamread.pcap");
    let r = run(TCP_DATA_LOG, &input, None);
    let cap = Capture::read(&input).unwrap();
    let pk: Vec<Pkt> = cap.packets.iter().filter_map(|f| parse(f, cap.link_type)).collect();
    let data = stream_of(&pk, true);
    let client_port = pk[0].sport;
    assert_eq!(data.len(), 41);
    let printable = String::from_utf8_lossy(&data)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c.is_ascii_punctuation() || c == ' ' { c } else { '.' })
        .collect::<String>();
    assert_eq!(r.logs(), [format!("DATA {client_port} up 41 {printable}")], "{}", r.stdout);
    assert_eq!(r.out.packets, cap.packets);
}

#[test]
fn tcp_out_of_order_segments_are_reassembled() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::new(41000, 7000);
    s.handshake();
    let base = s.next[0];
    let seg = |s: &Session, off: u32, d: &[u8]| s.raw(0, base + off, S_ISN + 1, PSH | ACK, d);
    let (a, c, b) = (seg(&s, 0, b"AAAA"), seg(&s, 8, b"CCCC"), seg(&s, 4, b"BBBB"));
    s.pkts.extend([a, c, b]);
    s.next[0] = base + 12;
    s.ack(1).send(1, b"done").ack(0).close();
    let input = write_pcap(dir.path(), "ooo.pcap", s.pkts.clone());
    let r = run(TCP_DATA_LOG, &input, None);
    assert_eq!(
        r.logs(),
        ["DATA 41000 up 4 AAAA", "DATA 41000 up 8 BBBBCCCC", "DATA 41000 down 4 done"],
        "the gap is filled before the rules see CCCC: {}",
        r.stdout
    );
    assert_eq!(r.out.packets, s.pkts, "every segment passes");
    assert_eq!(r.st("overlap_conflicts"), 0);
}

#[test]
fn tcp_overlap_with_different_data_is_alerted_first_data_wins() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::new(41001, 7000);
    s.handshake();
    let base = s.next[0];
    let seg = |s: &Session, off: u32, d: &[u8]| s.raw(0, base + off, S_ISN + 1, PSH | ACK, d);
    // CCCC is buffered out of order, then the same range arrives with other bytes
    let pk = [seg(&s, 8, b"CCCC"), seg(&s, 8, b"DDDD"), seg(&s, 0, b"AAAABBBB")];
    s.pkts.extend(pk);
    s.next[0] = base + 12;
    s.ack(1).close();
    let input = write_pcap(dir.path(), "overlap.pcap", s.pkts.clone());
    let r = run(TCP_DATA_LOG, &input, None);
    assert_eq!(r.st("overlap_conflicts"), 1);
    assert_eq!(
        r.alert_descriptions(),
        ["tcp: retransmitted data differs from the original (overlap evasion)"],
        "{}",
        r.stdout
    );
    assert_eq!(r.logs(), ["DATA 41001 up 12 AAAABBBBCCCC"], "first data wins");
}

#[test]
fn tcp_retransmission_of_delivered_data_with_different_bytes_is_alerted() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::new(41002, 7000);
    s.handshake().send(0, b"AAAABBBB");
    let retrans = s.raw(0, C_ISN + 1, S_ISN + 1, PSH | ACK, b"AAAAXXXX");
    s.pkts.push(retrans);
    s.ack(1).close();
    let input = write_pcap(dir.path(), "retrans.pcap", s.pkts.clone());
    let r = run(TCP_DATA_LOG, &input, None);
    assert_eq!(r.st("overlap_conflicts"), 1);
    assert_eq!(r.logs(), ["DATA 41002 up 8 AAAABBBB"]);
}

#[test]
fn tcp_stream_edits_shift_seq_and_ack() {
    // Client -> server: "hello world" -> "HELLO!! world" (+2), later "ins" -> "[[ins" (+2).
    // Server -> client: "data:XXXXend" -> "data:end" (-4).
    let rules = r#"
require("protocol/tcp_connection")
-- (workaround: see tcp_receive_data_alone_fires)
haka.rule{ on = haka.dissectors.tcp_connection.events.new_connection, eval = function (flow, tcp) end }
haka.rule{
    on = haka.dissectors.tcp_connection.events.receive_data,
    eval = function (flow, data, dir)
        local s = data:asstring()
        if dir == "up" and s == "hello world" then
            data:sub(0, 5):replace("HELLO!!")
        elseif dir == "up" and s == "ins" then
            data:insert("[[")
        elseif dir == "down" and s == "data:XXXXend" then
            data:sub(5, 4):erase()
        end
    end
}
"#;
    // The capture is what the two ends would send through an inline haka: each end
    // acknowledges the stream as it received it (edited). In the output, every packet
    // carries its sequence number in the edited stream of its direction, and its
    // acknowledgement mapped back into the sequence space of the end it goes to.
    let dir = tempfile::tempdir().unwrap();
    let s = Session::new(41003, 7000);
    let (c, d) = (0usize, 1usize);
    // (direction, seq, ack, flags, payload) in; (payload, seq, ack) out
    #[allow(clippy::type_complexity)]
    let plan: Vec<((usize, u32, u32, u8, &[u8]), (&[u8], u32, u32))> = vec![
        ((c, 1000, 0, SYN, b""), (b"", 1000, 0)),
        ((d, 5000, 1001, SYN | ACK, b""), (b"", 5000, 1001)),
        ((c, 1001, 5001, ACK, b""), (b"", 1001, 5001)),
        // +2 in the client's stream: 1001..1012 becomes 1001..1014
        ((c, 1001, 5001, PSH | ACK, b"hello world"), (b"HELLO!! world", 1001, 5001)),
        // the server acknowledges what it received (1014): the client gets 1012
        ((d, 5001, 1014, ACK, b""), (b"", 5001, 1012)),
        ((c, 1012, 5001, PSH | ACK, b"second"), (b"second", 1014, 5001)),
        // -4 in the server's stream: 5001..5013 becomes 5001..5009
        ((d, 5001, 1020, PSH | ACK, b"data:XXXXend"), (b"data:end", 5001, 1018)),
        ((c, 1018, 5009, ACK, b""), (b"", 1020, 5013)),
        // +2 more in the client's stream (insert at the start of the data)
        ((c, 1018, 5009, PSH | ACK, b"ins"), (b"[[ins", 1020, 5013)),
        ((d, 5013, 1025, PSH | ACK, b"reply"), (b"reply", 5009, 1021)),
        ((c, 1021, 5014, PSH | ACK, b"last"), (b"last", 1025, 5018)),
        ((c, 1025, 5014, FIN | ACK, b""), (b"", 1029, 5018)),
        ((d, 5018, 1030, FIN | ACK, b""), (b"", 5014, 1026)),
        ((c, 1026, 5015, ACK, b""), (b"", 1030, 5019)),
    ];
    let pkts: Vec<Vec<u8>> =
        plan.iter().map(|((dir, seq, ack, fl, data), _)| s.raw(*dir, *seq, *ack, *fl, data)).collect();
    let input = write_pcap(dir.path(), "edit.pcap", pkts);
    let r = run(rules, &input, None);
    assert_eq!(r.st("stream_edits"), 3);
    assert_eq!(r.st("stream_edits_refused"), 0);
    let out = r.out_packets();
    assert_eq!(out.len(), plan.len());
    assert!(out.iter().all(|p| p.checksums_ok), "checksums recomputed after edits");
    for (i, (p, ((_, seq_in, ack_in, _, _), (pl, seq, ack)))) in out.iter().zip(&plan).enumerate() {
        assert_eq!(
            (String::from_utf8_lossy(&p.payload).into_owned(), p.seq, p.ack),
            (String::from_utf8_lossy(pl).into_owned(), *seq, *ack),
            "packet {i} (input seq {seq_in} ack {ack_in})"
        );
    }
    assert_eq!(stream_of(&out, true), b"HELLO!! worldsecond[[inslast");
    assert_eq!(stream_of(&out, false), b"data:endreply");
}

// ---------------------------------------------------------------------------------------
// connections picked up mid-stream
// ---------------------------------------------------------------------------------------

fn mid_stream_capture(dir: &Path) -> (PathBuf, usize) {
    let c = Capture::read(&http_pcap("request-response.pcap")).unwrap();
    let pkts: Vec<Vec<u8>> = c.packets[3..].to_vec(); // no SYN, SYN-ACK, ACK
    let n = pkts.len();
    let p = dir.join("midstream.pcap");
    Capture { link_type: c.link_type, packets: pkts }.write(&p).unwrap();
    (p, n)
}

#[test]
fn tcp_no_connection_found_drop_alerts_and_drops() {
    let dir = tempfile::tempdir().unwrap();
    let (input, n) = mid_stream_capture(dir.path());
    let r = run(HTTP_LOG_RULES, &input, Some("[tcp]\nno_connection_found = \"drop\"\n"));
    assert_eq!(r.total("rx"), n as u64);
    assert_eq!(r.total("tx"), 0);
    assert_eq!(r.dropped("no_connection"), n as u64);
    let descs = r.alert_descriptions();
    assert_eq!(descs.len(), n, "{}", r.stdout);
    assert!(descs.iter().all(|d| d.starts_with("no connection found")), "{descs:?}");
    assert!(r.logs().is_empty());
    assert_eq!(r.st("tcp_connections"), 0);
}

#[test]
fn tcp_mid_stream_pickup_by_default_still_dissects_http() {
    let dir = tempfile::tempdir().unwrap();
    let (input, n) = mid_stream_capture(dir.path());
    let r = run(HTTP_LOG_RULES, &input, None);
    assert_eq!(r.total("tx"), n as u64);
    assert_eq!(r.st("tcp_picked_up"), 1);
    assert_eq!(r.st("tcp_connections"), 1);
    assert_eq!(
        r.logs(),
        [
            "REQ GET / 1.1 host=10.2.104.129 ua=Wget/1.13.4 (linux-gnu) from=10.2.96.127:57794 to=10.2.104.129:80",
            "RESP 1.1 200 OK server=Apache/2.2.8 (Ubuntu) DAV/2 req=/",
        ]
    );
    assert_eq!(r.alerts(), 0);
}

// ---------------------------------------------------------------------------------------
// adversarial input
// ---------------------------------------------------------------------------------------

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn garbage_and_truncated_http_are_counted_without_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut pkts = Vec::new();
    let sessions = 60u16;
    for i in 0..sessions {
        let mut s = Session::new(42000 + i, 80);
        s.handshake();
        let len = 1 + (rng.next() % 3000) as usize;
        let mut junk = rng.bytes(len);
        junk[0] = b"\x00\x16\xff{<~\x01\x80"[i as usize % 8]; // never a method token
        s.send_split(0, &junk, 1 + (rng.next() % 1460) as usize);
        s.send(1, &rng.bytes(200)).close();
        pkts.extend(s.pkts);
    }
    // a request head cut short by the client's FIN
    let mut t = Session::new(43000, 80);
    t.handshake().send(0, b"GET /index.html HTTP/1.1\r\nHost: x\r\nUser-Ag").close();
    let t_len = t.pkts.len();
    pkts.extend(t.pkts);
    // a response to no request, and a request with a huge header line
    let mut u = Session::new(43001, 80);
    u.handshake().send(1, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc");
    let mut long = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
    long.extend(std::iter::repeat_n(b'a', 200_000));
    long.extend_from_slice(b"\r\n\r\n");
    u.send_split(0, &long, 1460).close();
    pkts.extend(u.pkts);
    let total = pkts.len() as u64;
    let input = write_pcap(dir.path(), "garbage.pcap", pkts);
    let r = run(HTTP_LOG_RULES, &input, None);
    assert_eq!(r.total("rx"), total);
    assert_eq!(r.total("processed"), total);
    assert_eq!(r.total("tx") + r.total("dropped"), total, "every packet accounted for");
    assert_eq!(r.total("dropped"), r.dropped("flow_dropped"));
    // every junk session is a protocol error (alerted, connection dropped), and so is the
    // 200 KB header line
    assert_eq!(r.st("http_errors"), sessions as u64 + 1, "{}", r.stats["totals"]["stateful"]);
    let descs = r.alert_descriptions();
    assert_eq!(
        descs.iter().filter(|d| *d == "invalid http request_line").count(),
        sessions as usize,
        "{descs:?}"
    );
    assert_eq!(descs.iter().filter(|d| *d == "invalid http header").count(), 1, "{descs:?}");
    assert_eq!(descs.len(), sessions as usize + 1);
    // nothing after the first junk byte of a session is forwarded to the server
    let out = r.out_packets();
    assert!(
        out.iter()
            .filter(|p| p.dport == 80 && (42000..42000 + sessions).contains(&p.sport))
            .all(|p| p.payload.is_empty()),
        "junk forwarded"
    );
    // the truncated head is never a request, its connection passes and ends normally
    assert_eq!(out.iter().filter(|p| p.sport == 43000 || p.dport == 43000).count(), t_len);
    assert!(r.logs_with("REQ ").is_empty(), "no request was complete: {:?}", r.logs());
    assert_eq!(r.st("tcp_connections"), sessions as u64 + 2);
    assert_eq!(r.stats["totals"]["rule_errors"].as_u64().unwrap_or(0), 0);
}

#[test]
fn syn_flood_into_a_small_flow_table() {
    let dir = tempfile::tempdir().unwrap();
    let flood = 20_000u32;
    let mut pkts = Vec::with_capacity(flood as usize + 16);
    for i in 0..flood {
        let src = [198, 19, (i >> 8) as u8, i as u8];
        pkts.push(tcp_pkt(src, SERVER, 1024 + (i % 60000) as u16, 80, i.wrapping_mul(2654435761), 0, SYN, b""));
    }
    // a real client after the flood still gets through and is dissected
    let mut s = Session::new(44000, 80);
    s.handshake()
        .send(0, b"GET /after-the-flood HTTP/1.1\r\nHost: victim\r\nUser-Agent: curl/8\r\n\r\n")
        .send(1, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        .ack(0)
        .close();
    pkts.extend(s.pkts.clone());
    let total = pkts.len() as u64;
    let input = write_pcap(dir.path(), "flood.pcap", pkts);
    let r = run(HTTP_LOG_RULES, &input, Some("[flows]\ncapacity = 1000\n"));
    assert_eq!(r.total("rx"), total);
    // SYNs pass: nothing drops them (but a loaded machine may see the tx queue full)
    assert_eq!(r.total("tx") + r.dropped("tx_full"), total, "{}", r.stats["totals"]);
    assert_eq!(r.st("tcp_connections"), flood as u64 + 1, "every SYN counted as a connection");
    assert!(
        r.st("connections_active") <= 1000,
        "connections bounded by the flow table: {}",
        r.stats["totals"]["stateful"]
    );
    assert!(r.total("flows_active") <= 1000);
    assert!(r.total("flows_evicted") >= (flood - 1000) as u64, "{}", r.stats["totals"]);
    assert_eq!(r.total("flows_created"), flood as u64 + 1);
    assert_eq!(r.logs_with("REQ ").len(), 1, "{:?}", r.logs());
    assert!(r.logs_with("REQ ")[0].starts_with("GET /after-the-flood 1.1"));
    assert_eq!(r.st("http_responses"), 1);
}

/// Busy threads pinned to CPU 0, stopped (and joined) on drop; each also stops by itself
/// after 30 s.
struct Hogs {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Hogs {
    fn on_cpu0(n: usize) -> Hogs {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    // SAFETY: a zeroed cpu_set_t is a valid empty set; pid 0 = this thread.
                    unsafe {
                        let mut set: libc::cpu_set_t = std::mem::zeroed();
                        libc::CPU_SET(0, &mut set);
                        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                    }
                    let t0 = std::time::Instant::now();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) && t0.elapsed().as_secs() < 30 {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        Hogs { stop, threads }
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
#[ignore = "known limit: [rules] instruction_budget is wall time; the 100 ms default makes preemption \
            trips rare (this test passes with it) but a long enough descheduling still trips it; run with --ignored"]
fn rule_budget_is_not_spent_by_preemption() {
    assert!(have_tool("taskset"), "taskset (util-linux) is needed");
    let dir = tempfile::tempdir().unwrap();
    let mut pkts = Vec::new();
    for i in 0..20_000u32 {
        let src = [198, 19, (i >> 8) as u8, i as u8];
        pkts.push(tcp_pkt(src, SERVER, 1024 + (i % 60000) as u16, 80, i.wrapping_mul(7), 0, SYN, b""));
    }
    let input = write_pcap(dir.path(), "syns.pcap", pkts);
    let rules = dir.path().join("rules.lua");
    std::fs::write(&rules, HTTP_LOG_RULES).unwrap();
    let stats = dir.path().join("stats.json");
    // Four busy threads share CPU 0 with hakapcap.
    let _hogs = Hogs::on_cpu0(4);
    let o = Command::new("taskset")
        .args(["-c", "0", env!("CARGO_BIN_EXE_hakapcap")])
        .args([rules.to_str().unwrap(), input.to_str().unwrap(), "--stats-file", stats.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let st = read_json(&stats);
    // The default budget (10^7 "instructions", i.e. 10 ms) is far above what these rules
    // cost per call: nothing may be interrupted.
    assert_eq!(
        st["totals"]["dropped_by_reason"]["rule_error"],
        0,
        "rule calls interrupted while the worker was preempted:\n{}",
        String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.contains("budget")).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn dns_over_tcp_fires_query_and_response() {
    let dir = tempfile::tempdir().unwrap();
    let q = dns_msg(0x0a0b, 0x0100, &[("tcp.example", 1)], &[]);
    let resp = dns_msg(0x0a0b, 0x8180, &[("tcp.example", 1)], &[("tcp.example", 1, vec![192, 0, 2, 9])]);
    let frame = |m: &[u8]| {
        let mut f = (m.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(m);
        f
    };
    // the query's length prefix and body in separate segments, as some resolvers send them
    let fq = frame(&q);
    let mut s = Session::new(45000, 53);
    s.handshake().send(0, &fq[..2]).send(0, &fq[2..]).send(1, &frame(&resp)).ack(0).close();
    let input = write_pcap(dir.path(), "dns-tcp.pcap", s.pkts.clone());
    let r = run(DNS_LOG_RULES, &input, None);
    assert_eq!(r.logs(), ["QUERY 2571 tcp.example.", "RESP 2571 2571 tcp.example. an=1"], "{}", r.stdout);
    assert_eq!(r.st("dns_queries"), 1);
    assert_eq!(r.st("dns_responses"), 1);
    assert_eq!(r.out.packets, s.pkts, "observed, unchanged");
}

#[test]
fn http_body_modification_reframes_bodies_as_chunks() {
    // Haka's enable_data_modification: bodies with a Content-Length become chunked so
    // that rules may change their size; the one already chunked is left alone.
    let rules = r#"
local http = require("protocol/http")
haka.rule{ on = http.events.response, eval = function(h, resp)
  h.mod = resp.headers["Transfer-Encoding"] == nil
  if h.mod then h:enable_data_modification() end end }
haka.rule{ on = http.events.response_data, eval = function(h, data)
  if not h.mod then return end
  local s = data:asstring()
  local i = s:find("<title>", 1, true)
  if i then data:sub(i - 1 + 7, 0):insert("[haka] ") end
  local j = s:find("GIF89a", 1, true)
  if j then data:sub(j - 1, 6):replace("GIF") end
end }
"#;
    let input = http_pcap("keepalive.pcap");
    let r = run(rules, &input, None);
    assert_eq!(r.stats["totals"]["rule_errors"].as_u64(), Some(0), "{}", r.stdout);
    assert!(r.st("stream_edits") > 0 && r.st("stream_edits_refused") == 0, "{}", r.stats["totals"]["stateful"]);
    let out_s = r.out_path().display().to_string();
    // every response is chunked now (the first one already was), none has a Content-Length
    let heads = tshark(&["-r", &out_s, "-Y", "http.response", "-T", "fields", "-e", "http.response.code", "-e",
        "http.transfer_encoding", "-e", "http.content_length_header"]);
    assert_eq!(heads.lines().collect::<Vec<_>>(), ["200\tchunked\t", "404\tchunked\t", "200\tchunked\t", "200\tchunked\t"], "{heads}");
    // tshark de-chunks the bodies: the edits are there, sizes changed
    let bodies = tshark(&["-r", &out_s, "-Y", "http.response", "-T", "fields", "-e", "http.file_data"]);
    assert!(bodies.contains("<title>[haka] 404 Not Found</title>"), "{bodies}");
    assert_eq!(bodies.matches("GIF89a").count(), 0, "{bodies}");
    // TCP stays consistent: no lost, retransmitted or out-of-order segment
    let flagged = tshark(&["-r", &out_s, "-Y", "tcp.analysis.lost_segment or tcp.analysis.retransmission or tcp.analysis.out_of_order or tcp.checksum.status == 0"]);
    assert_eq!(flagged.trim(), "", "TCP analysis flags on the output");
}

#[test]
fn http_body_modification_rechunks_chunked_bodies_and_splits_segments_at_the_mtu() {
    // A streamed rule inserts a marker into every response body, the chunked one
    // included: that one is re-chunked (its own chunk framing replaced, as Haka did),
    // and the full-size segments the insertions grow past the MTU are split in two.
    let rules = r#"
local http = require("protocol/http")
haka.rule{ on = http.events.response, eval = function(h, resp) h:enable_data_modification() end }
haka.rule{ on = http.events.response_data, options = { streamed = true }, eval = function(h, iter)
  iter:advance(20)
  iter:insert(haka.vbuffer_from("<!--inserted by haka-->"))
end }
"#;
    let input = http_pcap("keepalive.pcap");
    let r = run(rules, &input, None);
    assert_eq!(r.stats["totals"]["rule_errors"].as_u64(), Some(0), "{}", r.stdout);
    assert!(!r.stdout.contains("unmodifiable"), "{}", r.stdout);
    let st = &r.stats["totals"]["stateful"];
    assert!(r.st("stream_edits") > 0 && r.st("stream_edits_refused") == 0, "{st}");
    assert!(r.st("split_segments") >= 2, "{st}");
    let (in_s, out_s) = (input.display().to_string(), r.out_path().display().to_string());
    // every body has the marker at offset 20 and is otherwise the same (the bodies as
    // tshark exports them: de-chunked)
    let bodies = |f: &str| -> Vec<(String, Vec<u8>)> {
        let d = tempfile::tempdir().unwrap();
        tshark(&["-r", f, "-Q", "--export-objects", &format!("http,{}", d.path().display())]);
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
            .collect();
        v.sort();
        v
    };
    let (before, after) = (bodies(&in_s), bodies(&out_s));
    assert_eq!(before.len(), 4, "responses in the capture");
    assert_eq!(after.len(), before.len());
    for ((name, b), (name2, a)) in before.iter().zip(&after) {
        assert_eq!(name, name2);
        let want = [&b[..20], &b"<!--inserted by haka-->"[..], &b[20..]].concat();
        assert!(a == &want, "{name}: the body with the marker at 20");
    }
    let heads = tshark(&["-r", &out_s, "-Y", "http.response", "-T", "fields", "-e", "http.transfer_encoding"]);
    assert_eq!(heads.lines().collect::<Vec<_>>(), ["chunked"; 4], "{heads}");
    // no IP packet over 1500 bytes, and TCP stays consistent
    let lens = tshark(&["-r", &out_s, "-T", "fields", "-e", "ip.len"]);
    assert!(lens.lines().all(|l| l.trim().parse::<usize>().is_ok_and(|n| n <= 1500)), "{lens}");
    let flagged = tshark(&["-r", &out_s, "-Y", "tcp.analysis.lost_segment or tcp.analysis.retransmission or tcp.analysis.out_of_order or tcp.checksum.status == 0"]);
    assert_eq!(flagged.trim(), "", "TCP analysis flags on the output");
}

#[test]
fn http_body_edit_without_data_modification_is_a_rule_error() {
    let rules = r#"
local http = require("protocol/http")
haka.rule{ on = http.events.response_data, eval = function(h, data) data:sub(0, 1):replace("X") end }
"#;
    let r = run(rules, &http_pcap("request-response.pcap"), None);
    assert!(r.stdout.contains("data not modifiable"), "{}", r.stdout);
    assert_eq!(r.st("stream_edits"), 0);
}

#[test]
fn udp_connections_end_at_exit() {
    let rules = r#"
haka.rule{ on = haka.dissectors.udp_connection.events.new_connection, eval = function(f) haka.log("NEW %d", f.srcport) end }
haka.rule{ on = haka.dissectors.udp_connection.events.end_connection, eval = function(f) haka.log("END %d", f.srcport) end }
"#;
    let r = run(rules, &pcap("modules/protocol/dns/test/basic.pcap"), None);
    let mut news = r.logs_with("NEW ");
    let mut ends = r.logs_with("END ");
    assert_eq!(news.len(), 4, "{:?}", r.logs());
    news.sort();
    ends.sort();
    let news: Vec<String> = news.iter().map(|l| l.replace("NEW", "END")).collect();
    assert_eq!(ends, news, "every connection ends once, at exit at the latest");
}

#[test]
fn zero_window_probes_are_retransmissions_not_data() {
    // The server closes its window; the client probes it with the same byte until it
    // reopens: the rules see the request once, intact.
    let win = |dir: usize, s: &Session, seq: u32, ack: u32, flags: u8, window: u16, data: &[u8]| {
        let mut t = Vec::new();
        t.extend_from_slice(&s.port[dir].to_be_bytes());
        t.extend_from_slice(&s.port[1 - dir].to_be_bytes());
        t.extend_from_slice(&seq.to_be_bytes());
        t.extend_from_slice(&ack.to_be_bytes());
        t.extend_from_slice(&[0x50, flags]);
        t.extend_from_slice(&window.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 0]);
        t.extend_from_slice(data);
        ipv4_l4(s.ip[dir], s.ip[1 - dir], 6, t, 16)
    };
    let dir = tempfile::tempdir().unwrap();
    let req = b"GET /after-zero-window HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut s = Session::new(46000, 80);
    s.handshake();
    let (c, sv) = (s.next[0], s.next[1]);
    s.pkts.push(win(1, &s, sv, c, ACK, 0, b"")); // window closed
    for _ in 0..5 {
        s.pkts.push(win(0, &s, c, sv, ACK, 65535, &req[..1])); // probes: the first byte, again and again
        s.pkts.push(win(1, &s, sv, c, ACK, 0, b"")); // still closed, byte not accepted
    }
    s.pkts.push(win(1, &s, sv, c, ACK, 65535, b"")); // reopened
    s.pkts.push(win(0, &s, c, sv, PSH | ACK, 65535, req)); // the whole request (the probe byte again)
    s.next[0] = c + req.len() as u32;
    s.send(1, b"HTTP/1.1 204 No Content\r\n\r\n").ack(0).close();
    let input = write_pcap(dir.path(), "zwin.pcap", s.pkts.clone());
    let r = run(HTTP_LOG_RULES, &input, None);
    assert_eq!(r.logs_with("REQ ").len(), 1, "{:?}", r.logs());
    assert!(r.logs_with("REQ ")[0].contains("/after-zero-window"), "{:?}", r.logs());
    assert!(r.st("retransmissions") >= 4, "{}", r.stats["totals"]["stateful"]);
    assert_eq!(r.st("overlap_conflicts"), 0);
    assert_eq!(r.total("dropped"), 0);
    assert_eq!(r.out.packets, s.pkts, "all forwarded unchanged");
}

#[test]
fn halfreset_resets_only_the_server_and_new_connection_policy_refuses() {
    let rules = r#"
local http = require("protocol/http")
haka.policy{ on = haka.dissectors.tcp_connection.policies.new_connection, name = "no telnet",
  dstport = 23, action = { haka.policy.alert{ description = "telnet refused" }, haka.policy.drop } }
haka.rule{ on = http.events.request, eval = function(h, request)
  if request.uri == "/half" then h:halfreset() end end }
"#;
    let dir = tempfile::tempdir().unwrap();
    // a request reset toward the server only
    let mut a = Session::new(47000, 80);
    a.handshake().send(0, b"GET /half HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut b = Session::new(47001, 80);
    b.handshake().send(0, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").send(1, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").ack(0).close();
    // telnet: the SYN is refused by the new_connection policy, later packets dropped silently
    let mut t = Session::new(47002, 23);
    t.handshake().send(0, b"root\r\n");
    let mut pkts = a.pkts.clone();
    pkts.extend(b.pkts.clone());
    pkts.extend(t.pkts.clone());
    let input = write_pcap(dir.path(), "half.pcap", pkts);
    let r = run(rules, &input, None);
    let out = r.out_packets();
    let rsts: Vec<&Pkt> = out.iter().filter(|p| p.proto == 6 && p.flags & RST != 0).collect();
    assert_eq!(rsts.len(), 1, "one RST, toward the server: {rsts:?}");
    let rst = rsts[0];
    assert_eq!((rst.dst, rst.dport, rst.src, rst.sport), (SERVER, 80, CLIENT, 47000));
    assert_eq!(rst.seq, C_ISN + 1, "the RST continues the client's sequence");
    assert!(rst.checksums_ok);
    assert!(!out.iter().any(|p| p.payload.starts_with(b"GET /half")), "the request never reaches the server");
    assert!(out.iter().any(|p| p.payload.starts_with(b"GET /ok")), "the other connection is untouched");
    assert!(!out.iter().any(|p| p.dport == 23 || p.sport == 23), "telnet refused from its SYN on");
    assert_eq!(r.alert_descriptions(), ["telnet refused"]);
    assert_eq!(r.dropped("flow_dropped"), 1 + t.pkts.len() as u64, "{}", r.stats["totals"]);
}

/// A rule that keeps 1 MiB per request under an 8 MiB heap: once the heap is full the
/// state is recreated after the burst (as for packet rules), so that requests keep being
/// inspected rather than every later event failing on the full heap.
#[test]
fn rules_leaking_per_request_get_their_state_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let (c, s) = ([198, 18, 7, 1], [198, 19, 7, 1]);
    let n = 60u16;
    let mut pkts = Vec::new();
    for i in 0..n {
        let port = 20000 + i;
        let req = format!("GET /item/{i} HTTP/1.1\r\nHost: www.example.com\r\n\r\n");
        pkts.push(tcp_pkt(c, s, port, 80, 1000, 0, 0x02, b""));
        pkts.push(tcp_pkt(s, c, 80, port, 5000, 1001, 0x12, b""));
        pkts.push(tcp_pkt(c, s, port, 80, 1001, 5001, 0x10, b""));
        pkts.push(tcp_pkt(c, s, port, 80, 1001, 5001, 0x18, req.as_bytes()));
    }
    let input = write_pcap(dir.path(), "leak.pcap", pkts);
    let rules = r#"
local http = require("protocol/http")
local keep = {}
haka.rule{ on = haka.dissectors.http.events.request, eval = function (http, request)
  keep[#keep + 1] = string.rep("x", 1024 * 1024) .. request.uri
  haka.log("SEEN %s", request.uri)
end }
"#;
    let r = run(rules, &input, Some("[rules]\nmemory_limit_mb = 8\ninstruction_budget = 30000000000\n"));
    assert_eq!(r.st("http_requests"), n as u64);
    let seen = r.logs_with("SEEN ").len() as u64;
    let mem = r.total("rule_memory_exceeded");
    // each fill takes a few requests, then one fails and the state is recreated
    assert!(mem >= 3, "{}\n{}", r.stats["totals"], r.stdout);
    assert!(seen + mem >= n as u64 && seen >= n as u64 * 2 / 3, "seen {seen}, failed {mem}: {}", r.stdout);
    assert!(r.stdout.contains("state recreated"), "{}", r.stdout);
}

/// One keep-alive connection from client port `port` to port 80: the handshake, each
/// (request, response) exchange with the client's ACK, and a FIN from each side.
fn keepalive_session(c: [u8; 4], s: [u8; 4], port: u16, exchanges: &[(&str, &str)]) -> Vec<Vec<u8>> {
    let (mut cs, mut ss) = (1000u32, 5000u32);
    let mut p = vec![tcp_pkt(c, s, port, 80, cs, 0, 0x02, b"")];
    p.push(tcp_pkt(s, c, 80, port, ss, cs + 1, 0x12, b""));
    (cs, ss) = (cs + 1, ss + 1);
    p.push(tcp_pkt(c, s, port, 80, cs, ss, 0x10, b""));
    for (req, resp) in exchanges {
        p.push(tcp_pkt(c, s, port, 80, cs, ss, 0x18, req.as_bytes()));
        cs += req.len() as u32;
        p.push(tcp_pkt(s, c, 80, port, ss, cs, 0x18, resp.as_bytes()));
        ss += resp.len() as u32;
        p.push(tcp_pkt(c, s, port, 80, cs, ss, 0x10, b""));
    }
    p.push(tcp_pkt(c, s, port, 80, cs, ss, 0x11, b""));
    p.push(tcp_pkt(s, c, 80, port, ss, cs + 1, 0x11, b""));
    p.push(tcp_pkt(c, s, port, 80, cs + 1, ss + 1, 0x10, b""));
    p
}

#[test]
fn prefiltered_rules_run_only_for_matching_messages_and_see_their_exchange() {
    let dir = tempfile::tempdir().unwrap();
    let req = |uri: &str, ua: &str| format!("GET {uri} HTTP/1.1\r\nHost: h\r\nUser-Agent: {ua}\r\n\r\n");
    let resp = |st: &str| format!("HTTP/1.1 {st}\r\nServer: nginx\r\nContent-Length: 2\r\n\r\nok");
    let ex = [
        (req("/index.html", "Mozilla/5.0"), resp("200 OK")),
        (req("/Admin/login", "curl/8"), resp("403 Forbidden")),
        (req("/x", "sqlmap/1.4"), resp("500 Internal Server Error")),
        (req("/y", "Mozilla/5.00 (Nikto/2.1.6)"), resp("200 OK")),
        (req("/z", "Mozilla/5.0"), resp("404 Not Found")),
    ];
    let ex: Vec<(&str, &str)> = ex.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let input = write_pcap(dir.path(), "ka.pcap", keepalive_session([198, 18, 9, 1], [198, 19, 9, 1], 40000, &ex));
    let rules = r#"
local http = require("protocol/http")
haka.rule{ on = http.events.request, prefilter = { uri = "/ADMIN" },
  eval = function (h, r) haka.log("ADMIN %s", r.uri) end }
haka.rule{ on = http.events.request, prefilter = { headers = { ["user-agent"] = { "sqlmap", "nikto" } } },
  eval = function (h, r) haka.log("TOOL %s %s", r.uri, r.headers["User-Agent"]) end }
haka.rule{ on = http.events.response, prefilter = { status = 500, reason = "forbidden" },
  eval = function (h, r) haka.log("ERR %s %s", h.request.uri, r.status) end }
"#;
    let r = run(rules, &input, None);
    assert_eq!(r.logs_with("ADMIN "), vec!["/Admin/login"], "{}", r.stdout);
    assert_eq!(r.logs_with("TOOL "), vec!["/x sqlmap/1.4", "/y Mozilla/5.00 (Nikto/2.1.6)"]);
    // the response rules read the request of their exchange, which no rule saw
    assert_eq!(r.logs_with("ERR "), vec!["/Admin/login 403", "/x 500"]);
    // no rule ran for 2 requests (/index.html, /z) and 3 responses (200, 200, 404)
    assert_eq!((r.st("http_requests"), r.st("http_responses")), (5, 5));
    assert_eq!(r.st("http_prefiltered"), 2 + 3);
    assert_eq!(r.total("rule_errors"), 0);

    // A rule without prefilter runs for every message, and sees the exchange as before.
    let all = format!(
        "{rules}\nhaka.rule{{ on = http.events.response, eval = function (h, r) haka.log(\"RESP %s %s\", h.request.uri, r.status) end }}\n"
    );
    let r = run(&all, &input, None);
    assert_eq!(r.logs_with("RESP ").len(), 5);
    assert_eq!(r.logs_with("RESP ")[4], "/z 404");
    assert_eq!(r.logs_with("ERR "), vec!["/Admin/login 403", "/x 500"]);
    assert_eq!(r.st("http_prefiltered"), 2);
}

/// The request of a prefiltered exchange reaches Lua only when something reads
/// `http.request` (it is built then): an alert raised by a response rule that never reads
/// it still carries the request's fields, and a later rule reading it gets that message.
#[test]
fn a_prefiltered_request_is_there_for_whatever_reads_it_in_its_response_call() {
    let dir = tempfile::tempdir().unwrap();
    let req = |uri: &str| format!("GET {uri} HTTP/1.1\r\nHost: h\r\nUser-Agent: sqlmap/1.4\r\n\r\n");
    let resp = |st: &str| format!("HTTP/1.1 {st}\r\nContent-Length: 2\r\n\r\nok");
    let ex = [(req("/a"), resp("200 OK")), (req("/b"), resp("500 Oops")), (req("/c"), resp("500 Oops"))];
    let ex: Vec<(&str, &str)> = ex.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let input = write_pcap(dir.path(), "ka.pcap", keepalive_session([198, 18, 9, 2], [198, 19, 9, 2], 40001, &ex));
    let eve = dir.path().join("eve.json");
    let rules = r#"
local http = require("protocol/http")
haka.rule{ on = http.events.request, prefilter = { uri = "/nowhere" }, eval = function () end }
haka.rule{ on = http.events.response, prefilter = { status = 500 },
  eval = function (h, r) haka.alert{ description = "server error" } end }
haka.rule{ on = http.events.response, prefilter = { status = 500 },
  eval = function (h, r) haka.log("ERR %s %s", h.request.uri, tostring(h.request == h.request)) end }
"#;
    let conf = format!("[alerts]\neve_file = \"{}\"\n", eve.display());
    let r = run(rules, &input, Some(&conf));
    assert_eq!(r.logs_with("ERR "), vec!["/b true", "/c true"], "{}", r.stdout);
    assert_eq!(r.total("rule_errors"), 0);
    let alerts: Vec<serde_json::Value> =
        std::fs::read_to_string(&eve).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let urls: Vec<&serde_json::Value> = alerts.iter().map(|a| &a["http"]["url"]).collect();
    assert_eq!(urls, ["/b", "/c"], "{alerts:?}");
    assert_eq!(alerts[0]["http"]["http_user_agent"], "sqlmap/1.4", "{}", alerts[0]);
}

#[test]
fn set_headers_gives_the_stream_the_lua_rewrite_gives_without_calling_lua() {
    // rules/http_rewrite_header.lua does it in Lua; the same fields set by the engine must
    // give the same packets, byte for byte (heads, seq/ack shifts, checksums).
    let input = http_pcap("keepalive.pcap");
    let lua = run_file(&sample("http_rewrite_header.lua"), &input, None);
    let rules = r#"
local http = require("protocol/http")
haka.rule{ on = http.events.response, set_headers = { Server = "haka", ["X-Inspected-By"] = "haka" } }
-- a request rule that never runs: no Lua call at all for this capture
haka.rule{ on = http.events.request, prefilter = { uri = "/nowhere" }, eval = function (h, r) haka.log("SEEN") end }
"#;
    let r = run(rules, &input, None);
    assert_same_packets(&r.out, &lua.out, "set_headers vs the Lua rewrite");
    assert_eq!((r.st("stream_edits"), r.st("http_prefiltered")), (4, 4 + 4));
    assert!(r.logs_with("SEEN").is_empty());

    // With a Lua rule on the same responses: it sees the fields set, and its own edit
    // applies on top of them.
    let both = r#"
local http = require("protocol/http")
haka.rule{ on = http.events.response, set_headers = { Server = "haka", ["X-Powered-By"] = false } }
haka.rule{ on = http.events.response, eval = function (h, r)
  haka.log("SERVER %s", r.headers["Server"])
  r.headers["X-Inspected-By"] = "haka"
end }
"#;
    let r = run(both, &input, None);
    assert_eq!(r.logs_with("SERVER "), vec!["haka"; 4]);
    assert_same_packets(&r.out, &lua.out, "set_headers then a Lua edit vs the Lua rewrite");
}

#[test]
fn bad_prefilters_and_set_headers_are_refused_with_the_rules_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_pcap(dir.path(), "one.pcap", keepalive_session([198, 18, 9, 2], [198, 19, 9, 2], 40001, &[]));
    // hakapcap's error for the rules `src`: it must refuse to start
    let refused = |src: &str| {
        let p = dir.path().join("bad.lua");
        std::fs::write(&p, src).unwrap();
        let o = hakapcap(&[p.to_str().unwrap(), input.to_str().unwrap(), "-o", "/dev/null"]);
        assert!(!o.status.success(), "accepted: {src}");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    for (rule, want) in [
        ("on = http.events.request, prefilter = { url = '/x' }", "prefilter: unknown field 'url' (headers, method, uri, version)"),
        ("on = http.events.request, prefilter = { uri = '' }", "prefilter: uri: patterns must be non-empty strings"),
        ("on = http.events.request, prefilter = { uri = {} }", "prefilter: uri: no pattern"),
        ("on = http.events.request, prefilter = { headers = { ['a b'] = 'x' } }", "prefilter: invalid header name 'a b'"),
        ("on = http.events.request, prefilter = 'x'", "prefilter must be a table"),
        ("on = http.events.response, set_headers = { ['Content-Length'] = '1' }", "'Content-Length' cannot be set (it frames the body)"),
        ("on = http.events.response, set_headers = { ['a:b'] = 'x' }", "set_headers: invalid header name 'a:b'"),
        ("on = http.events.response, set_headers = { X = 'a\\r\\nY: b' }", "value of 'X' contains CR or LF"),
        ("on = http.events.response, set_headers = { X = {} }", "value of 'X' must be a string, or false to remove the field"),
        ("on = http.events.response, set_headers = {}", "set_headers: no field"),
        ("on = haka.dissectors.tcp_connection.events.new_connection, prefilter = { uri = 'x' }", "prefilter: only for http request and response events"),
    ] {
        let err = refused(&format!("local http = require('protocol/http')\n\nhaka.rule{{ {rule}, eval = function () end }}\n"));
        assert!(err.contains("bad.lua:3: ") && err.contains(want), "{rule}: {err}");
    }
}

#[test]
fn bench_policy_with_prefilters_gives_what_the_plain_lua_policy_gives() {
    // rules/bench_http.lua (prefilters, set_headers) and rules/bench_http_plain.lua (the
    // same rules in plain Lua, every message handed to Lua) on generated sessions (the
    // benchmark's generator: /admin URIs, encoded "union select", sqlmap and Nikto
    // clients, 500s, chunked and keep-alive): the same packets out, the same alerts.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("http.pcap");
    let gen = std::process::Command::new("python3")
        .arg(root().join("scripts/gen_http_pcap.py"))
        .arg(&input)
        .args(["-n", "400", "--seed", "7"])
        .output()
        .unwrap();
    assert!(gen.status.success(), "{}", String::from_utf8_lossy(&gen.stderr));
    let fast = run_file(&root().join("rules/bench_http.lua"), &input, None);
    let plain = run_file(&root().join("rules/bench_http_plain.lua"), &input, None);
    assert_same_packets(&fast.out, &plain.out, "bench_http.lua vs bench_http_plain.lua");
    assert_eq!(fast.alert_descriptions(), plain.alert_descriptions());
    assert!(fast.alert_descriptions().iter().any(|d| d == "sqli") && fast.alerts() > 5, "{}", fast.stdout);
    for k in ["http_requests", "http_responses", "stream_edits", "resets_sent"] {
        assert_eq!(fast.st(k), plain.st(k), "{k}");
    }
    assert!(fast.st("resets_sent") > 0 && fast.st("stream_edits") == fast.st("http_responses"));
    let errors = |r: &Run| r.stdout.matches("warn external: server error").count();
    assert!(errors(&fast) > 0 && errors(&fast) == errors(&plain), "{} {}", errors(&fast), errors(&plain));
    // most messages never reach Lua
    assert!(fast.st("http_prefiltered") * 10 > (fast.st("http_requests") + fast.st("http_responses")) * 8);
    assert_eq!(plain.st("http_prefiltered"), 0);
}

#[test]
fn irregular_http_capture_is_parsed_whole_and_the_common_rules_fire() {
    // `gen_http_pcap.py --irregular` (timestamps and SACK options, swapped and
    // retransmitted segments, lower-case header names, `Server: nginx` on half the
    // responses): every request and response the generator wrote reaches the HTTP
    // dissector once, nothing is dropped as unexpected TCP; then the benchmark's case (i)
    // rules (rules/bench_http_common.lua) fire, the Server rule on about half the responses,
    // and their prefilter variant gives the same.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("http.pcap");
    let gen = std::process::Command::new("python3")
        .arg(root().join("scripts/gen_http_pcap.py"))
        .arg(&input)
        .args(["-n", "300", "--seed", "7", "--irregular"])
        .output()
        .unwrap();
    assert!(gen.status.success(), "{}", String::from_utf8_lossy(&gen.stderr));
    let summary = String::from_utf8_lossy(&gen.stdout).into_owned();
    let exchanges: u64 = summary
        .split(", ")
        .find_map(|p| p.strip_suffix(" requests and responses"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exchange count in {summary}"));
    assert!(exchanges > 300, "{summary}");
    let parsed = run("local http = require('protocol/http')\n", &input, None);
    assert_eq!(parsed.st("http_requests"), exchanges);
    assert_eq!(parsed.st("http_responses"), exchanges);
    assert_eq!(parsed.total("dropped"), 0, "{}", parsed.stats["totals"]["dropped_by_reason"]);

    let common = run_file(&root().join("rules/bench_http_common.lua"), &input, None);
    let alerts = common.alert_descriptions();
    for want in ["admin page", "scanner: ", "sqli in uri"] {
        assert!(alerts.iter().any(|d| d.starts_with(want)), "no '{want}' alert: {alerts:?}");
    }
    assert_eq!(common.dropped("rule_error"), 0);
    assert!(common.stdout.contains("api call without a session cookie"), "{}", common.stdout);
    // The nginx rule edits about half of the responses the rules let through.
    let (edits, responses) = (common.st("stream_edits"), common.st("http_responses"));
    assert!(edits * 10 > responses * 3 && edits * 10 < responses * 7, "{edits} edits of {responses} responses");

    // Case (i)'s prefilter variant: the same packets, alerts and logs, fewer messages
    // handed to Lua.
    let fast = run_file(&root().join("rules/bench_http_common_prefilter.lua"), &input, None);
    assert_same_packets(&fast.out, &common.out, "bench_http_common_prefilter.lua vs bench_http_common.lua");
    assert_eq!(fast.alert_descriptions(), common.alert_descriptions());
    for log in ["api call without a session cookie", "warn external: server error"] {
        let n = |r: &Run| r.stdout.matches(log).count();
        assert!(n(&fast) > 0 && n(&fast) == n(&common), "{log}: {} {}", n(&fast), n(&common));
    }
    for k in ["http_requests", "http_responses", "stream_edits", "resets_sent"] {
        assert_eq!(fast.st(k), common.st(k), "{k}");
    }
    assert!(fast.st("http_prefiltered") > 0 && common.st("http_prefiltered") == 0);
}

#[test]
fn body_rules_see_the_request_and_response_of_their_exchange() {
    // response_data rules read http.request and http.response (they were cleared once the
    // response event had run), also when no request or response rule ran for the heads
    // (prefilters: the heads reach Lua as prior heads, before the body)
    let input = http_pcap("keepalive.pcap");
    let body = r#"
haka.rule{ on = http.events.response_data, eval = function (h, d)
  haka.log("DATA %s %s", h.request and h.request.uri or "nil", h.response and h.response.status or "nil")
end }
"#;
    let prefiltered = r#"
haka.rule{ on = http.events.request, prefilter = { uri = "/nowhere" }, eval = function () end }
haka.rule{ on = http.events.response, prefilter = { status = "999" }, eval = function () end }
"#;
    for extra in ["", prefiltered] {
        let r = run(&format!("local http = require(\"protocol/http\")\n{extra}{body}"), &input, None);
        let mut seen = r.logs_with("DATA ");
        assert!(seen.len() >= 4, "{}", r.stdout);
        seen.dedup();
        assert_eq!(
            seen,
            [
                "/twiki/bin/view/ 200",
                "/robots.txt 404",
                "/twiki/pub/TWiki/TWikiLogos/twikiRobot46x50.gif 200",
                "/twiki/pub/TWiki/TWikiLogos/twikiRobot131x64.gif 200"
            ],
            "{extra}"
        );
    }
}

#[test]
fn tcp_stream_vbuffer_insert_and_erase_shift_seq_and_ack() {
    // The receive_data data is a vbuffer_sub: Haka's iterator/sub API edits it; the
    // changes become stream edits. Client: "hello world" -> "hello, world" (+1, an
    // iterator insert); server: "data:XXXXend" -> "data:end" (-4, sub(n, true):erase()).
    let rules = r#"
require("protocol/tcp_connection")
haka.rule{ on = haka.dissectors.tcp_connection.events.new_connection, eval = function (flow, tcp) end }
haka.rule{
    on = haka.dissectors.tcp_connection.events.receive_data,
    eval = function (flow, data, dir)
        if dir == "up" and data:asstring() == "hello world" then
            data:pos(5):insert(haka.vbuffer_from(","))
        elseif dir == "down" and #data == 12 then
            local it = data:pos("begin")
            it:advance(5)
            it:sub(4, true):erase()
            assert(data:asstring() == "data:end")
        end
    end
}
"#;
    let dir = tempfile::tempdir().unwrap();
    let s = Session::new(41005, 7000);
    let (c, d) = (0usize, 1usize);
    #[allow(clippy::type_complexity)]
    let plan: Vec<((usize, u32, u32, u8, &[u8]), (&[u8], u32, u32))> = vec![
        ((c, 1000, 0, SYN, b""), (b"", 1000, 0)),
        ((d, 5000, 1001, SYN | ACK, b""), (b"", 5000, 1001)),
        ((c, 1001, 5001, ACK, b""), (b"", 1001, 5001)),
        ((c, 1001, 5001, PSH | ACK, b"hello world"), (b"hello, world", 1001, 5001)),
        ((d, 5001, 1013, ACK, b""), (b"", 5001, 1012)),
        ((d, 5001, 1013, PSH | ACK, b"data:XXXXend"), (b"data:end", 5001, 1012)),
        ((c, 1012, 5009, ACK, b""), (b"", 1013, 5013)),
        ((c, 1012, 5009, PSH | ACK, b"more"), (b"more", 1013, 5013)),
    ];
    let pkts: Vec<Vec<u8>> =
        plan.iter().map(|((dir, seq, ack, fl, data), _)| s.raw(*dir, *seq, *ack, *fl, data)).collect();
    let input = write_pcap(dir.path(), "vbedit.pcap", pkts);
    let r = run(rules, &input, None);
    assert_eq!(r.st("stream_edits_refused"), 0);
    assert_eq!(r.st("stream_edits"), 2, "{}", r.stdout);
    let out = r.out_packets();
    assert_eq!(out.len(), plan.len());
    assert!(out.iter().all(|p| p.checksums_ok), "checksums recomputed after edits");
    for (i, (p, (_, (pl, seq, ack)))) in out.iter().zip(&plan).enumerate() {
        assert_eq!(
            (String::from_utf8_lossy(&p.payload).into_owned(), p.seq, p.ack),
            (String::from_utf8_lossy(pl).into_owned(), *seq, *ack),
            "packet {i}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// next_dissector policies (the dissector registry)
// ---------------------------------------------------------------------------------------

/// One HTTP exchange on `port`.
fn http_exchange(cport: u16, port: u16, path: &str) -> Vec<Vec<u8>> {
    let mut s = Session::new(cport, port);
    s.handshake()
        .send(0, format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .send(1, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        .close();
    s.pkts
}

#[test]
fn next_dissector_policies_install_dissectors_by_name_and_the_last_eligible_wins() {
    let dir = tempfile::tempdir().unwrap();
    let mut pkts = http_exchange(41001, 80, "/default");
    pkts.extend(http_exchange(41002, 8080, "/alt"));
    pkts.extend(http_exchange(41003, 8443, "/tls"));
    let input = write_pcap(dir.path(), "ports.pcap", pkts);
    let rules = r#"
require("protocol/http")
require("protocol/tls")
haka.rule{ on = haka.dissectors.http.events.request, eval = function (http, req) haka.log("REQ %s", req.uri) end }
haka.policy{ on = haka.dissectors.tcp_connection.policies.next_dissector, port = 8080,
    action = haka.dissectors.http.install }
-- two eligible policies for 8443: the last one declared wins (tls, which reads no HTTP)
haka.policy{ on = haka.dissectors.tcp_connection.policies.next_dissector, port = 8443,
    action = haka.dissectors.http.install }
haka.policy{ on = haka.dissectors.tcp_connection.policies.next_dissector, port = 8443,
    action = haka.dissectors.tls.install }
"#;
    let r = run(rules, &input, None);
    assert_eq!(r.logs(), ["REQ /default", "REQ /alt"], "{}", r.stdout);
    assert_eq!(r.st("http_requests"), 2);
    assert_eq!(r.st("tls_errors"), 1, "the HTTP bytes on 8443 went to the tls dissector");
    // a dissector name that is not registered is a rule error that names the known ones
    let bad = "require('protocol/tcp_connection')\nhaka.rule{ on = haka.dissectors.tcp_connection.events.new_connection,\n  eval = function (flow) flow:select_next_dissector('smtp') end }\n";
    let r = run(bad, &input, None);
    assert!(r.stdout.contains("unknown next dissector 'smtp' (dns, http, tls)"), "{}", r.stdout);
}

// ---------------------------------------------------------------------------------------
// streamed rules (options.streamed: a coroutine over the stream)
// ---------------------------------------------------------------------------------------

#[test]
fn streamed_rules_read_the_stream_as_it_arrives_and_finish_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::new(42001, 7000);
    s.handshake().send(0, b"hello ").send(0, b"wor").send(1, b"answer").send(0, b"ld").close();
    let input = write_pcap(dir.path(), "stream.pcap", s.pkts);
    let rules = r#"
require("protocol/tcp_connection")
haka.rule{
    on = haka.dissectors.tcp_connection.events.receive_data,
    options = { streamed = true },
    eval = function (flow, iter, dir)
        local parts = {}
        for sub in iter:foreach_available() do
            haka.log("%s got %d", dir, #sub)
            parts[#parts + 1] = sub:asstring()
        end
        haka.log("%s end: %s", dir, table.concat(parts, "|"))
    end
}
-- a streamed rule that stops after 4 bytes: it sees no more, the others go on
haka.rule{
    on = haka.dissectors.tcp_connection.events.receive_data,
    options = { streamed = true },
    eval = function (flow, iter, dir)
        if dir == "up" then
            local sub = iter:sub(4)
            haka.log("first 4: %s", sub:asstring())
        end
    end
}
-- a plain rule on the same event still gets each piece
haka.rule{
    on = haka.dissectors.tcp_connection.events.receive_data,
    eval = function (flow, data, dir) haka.log("plain %s %s", dir, data:asstring()) end
}
"#;
    let r = run(rules, &input, None);
    assert_eq!(
        r.logs(),
        [
            "up got 6",
            "first 4: hell",
            "plain up hello ",
            "up got 3",
            "plain up wor",
            "down got 6",
            "plain down answer",
            "up got 2",
            "plain up ld",
            "up end: hello |wor|ld",
            "down end: answer",
        ],
        "{}",
        r.stdout
    );
}

#[test]
fn streamed_http_body_rules_get_one_stream_per_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::new(42002, 80);
    s.handshake()
        .send(0, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        .send(1, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        .send(1, b"6\r\nsecond\r\n0\r\n\r\n")
        .send(0, b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        .send(1, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nthird")
        .close();
    let input = write_pcap(dir.path(), "bodies.pcap", s.pkts);
    let rules = r#"
require("protocol/http")
haka.rule{
    on = haka.dissectors.http.events.response_data,
    options = { streamed = true },
    eval = function (http, iter)
        local parts = {}
        for sub in iter:foreach_available() do parts[#parts + 1] = sub:asstring() end
        haka.log("%s: %s", http.request.uri, table.concat(parts, "+"))
    end
}
"#;
    let r = run(rules, &input, None);
    assert_eq!(r.logs(), ["/a: first+second", "/b: third"], "{}", r.stdout);
}

/// `[http] http09 = "error"` (Haka): an HTTP/0.9 request line is a protocol error, alerted
/// as Haka's grammar named it, and the connection dropped; by default it is parsed.
#[test]
fn http09_request_is_an_error_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::new(40070, 80);
    s.handshake().send(0, b"GET /_HTTP/1.1\r\nHost: x\r\n\r\n").ack(1).close();
    let input = write_pcap(dir.path(), "h09.pcap", s.pkts.clone());
    let r = run(HTTP_LOG_RULES, &input, Some("[http]\nhttp09 = \"error\"\nanomaly = \"ignore\"\n"));
    assert!(r.logs_with("REQ ").is_empty(), "{}", r.stdout);
    assert_eq!(r.alert_descriptions(), ["invalid http request_line"], "{}", r.stdout);
    assert_eq!(r.dropped("flow_dropped"), s.pkts.len() as u64 - 3);
    let r = run(HTTP_LOG_RULES, &input, Some("[http]\nanomaly = \"ignore\"\n"));
    assert_eq!(r.logs_with("REQ ").len(), 1, "{}", r.stdout);
    assert_eq!(r.total("dropped"), 0);
}

/// A request line whose version is wrong is alerted "invalid http version" (Haka's grammar
/// rule), one whose line is wrong elsewhere "invalid http request_line".
#[test]
fn http_bad_version_is_named_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut pkts = Vec::new();
    for (i, req) in [&b"GET / HTML/1.1\r\n\r\n"[..], b"GET / HTTP/x.y\r\n\r\n", b"GET / HTTP/1.1 x\r\n\r\n"].iter().enumerate() {
        let mut s = Session::new(40080 + i as u16, 80);
        s.handshake().send(0, req);
        pkts.extend(s.pkts);
    }
    let input = write_pcap(dir.path(), "ver.pcap", pkts);
    let r = run(HTTP_LOG_RULES, &input, None);
    assert_eq!(
        r.alert_descriptions(),
        ["invalid http version", "invalid http version", "invalid http request_line"],
        "{}",
        r.stdout
    );
}

/// `[http] truncated_head = "error"` (Haka): a head cut by the client's FIN is alerted
/// "invalid http header" and the connection dropped (the server's answer with it); by
/// default the connection just closed mid-message.
#[test]
fn http_head_cut_by_fin_is_an_error_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::new(40090, 80);
    s.handshake().send(0, b"GET / HTTP/1.1\r\nX-Long: yes\r\n");
    let (s0, s1) = (s.next[0], s.next[1]);
    s.push_raw(0, s0, s1, FIN | ACK, b"");
    s.next[0] = s0 + 1;
    s.send(1, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    let input = write_pcap(dir.path(), "cut.pcap", s.pkts.clone());
    let r = run(HTTP_LOG_RULES, &input, Some("[http]\ntruncated_head = \"error\"\n"));
    assert_eq!(r.alert_descriptions(), ["invalid http header"], "{}", r.stdout);
    assert!(r.logs_with("RESP ").is_empty(), "{}", r.stdout);
    assert_eq!(r.dropped("flow_dropped"), 2, "the FIN and the answer");
    let r = run(HTTP_LOG_RULES, &input, None);
    assert!(r.alert_descriptions().is_empty(), "{}", r.stdout);
    assert_eq!(r.total("dropped"), 0);
}

/// A query a rule dropped is not awaited (Haka records a query after its rules): its
/// response is a "dns: mismatching response", alerted and dropped; the rules after the
/// dropping one do not see the query.
#[test]
fn dns_dropped_query_gets_no_response() {
    let dir = tempfile::tempdir().unwrap();
    let a = |ip: [u8; 4]| ip.to_vec();
    let q1 = dns_msg(0x0101, 0x0100, &[("bad.example", 1)], &[]);
    let r1 = dns_msg(0x0101, 0x8180, &[("bad.example", 1)], &[("bad.example", 1, a([192, 0, 2, 1]))]);
    let q2 = dns_msg(0x0202, 0x0100, &[("good.example", 1)], &[]);
    let r2 = dns_msg(0x0202, 0x8180, &[("good.example", 1)], &[("good.example", 1, a([192, 0, 2, 2]))]);
    let pkts = vec![
        udp_pkt(CLIENT, DNS_RESOLVER, 30011, 53, &q1),
        udp_pkt(DNS_RESOLVER, CLIENT, 53, 30011, &r1),
        udp_pkt(CLIENT, DNS_RESOLVER, 30012, 53, &q2),
        udp_pkt(DNS_RESOLVER, CLIENT, 53, 30012, &r2),
    ];
    let input = write_pcap(dir.path(), "dnsdrop.pcap", pkts.clone());
    let rules = format!(
        "{}{}",
        r#"haka.rule{ on = haka.dissectors.dns.events.query,
            eval = function (dns, query) if query.id == 0x0101 then query:drop() end end }
"#,
        DNS_LOG_RULES
    );
    let r = run(&rules, &input, None);
    assert_eq!(r.alert_descriptions(), ["dns: mismatching response"], "{}", r.stdout);
    assert_eq!(r.logs(), ["QUERY 514 good.example.", "RESP 514 514 good.example. an=1"]);
    assert_eq!(r.out.packets, vec![pkts[2].clone(), pkts[3].clone()]);
}

/// `[dns] records = "haka"`: AAAA records are not decoded (`unknown`, a vbuffer_sub of the
/// 16 bytes) and TXT's `data` is the record data with its length bytes, as Haka 0.4; by
/// default AAAA gives `ip`.
#[test]
fn dns_records_as_haka_gave_them() {
    let dir = tempfile::tempdir().unwrap();
    let v6: Vec<u8> = "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets().to_vec();
    let q = dns_msg(0x0303, 0x0100, &[("v6.example", 28)], &[]);
    let r = dns_msg(0x0303, 0x8180, &[("v6.example", 28)], &[("v6.example", 28, v6), ("v6.example", 16, b"\x03abc".to_vec())]);
    let pkts = vec![udp_pkt(CLIENT, DNS_RESOLVER, 30021, 53, &q), udp_pkt(DNS_RESOLVER, CLIENT, 53, 30021, &r)];
    let input = write_pcap(dir.path(), "aaaa.pcap", pkts);
    let rules = r#"require("protocol/dns")
haka.rule{ on = haka.dissectors.dns.events.response, eval = function (dns, response)
    local a, t = response.answer[1], response.answer[2]
    local u = a.unknown and (tostring(a.unknown) .. " " .. #a.unknown:asstring()) or "-"
    haka.log("AAAA ip=%s unknown=%s TXT %d %d", tostring(a.ip), u, #t.data, t.data:byte(1))
end }
"#;
    let r1 = run(rules, &input, Some("[dns]\nrecords = \"haka\"\n"));
    assert_eq!(r1.logs(), ["AAAA ip=nil unknown=<vbuffer_sub> 16 TXT 4 3"], "{}", r1.stdout);
    let r2 = run(rules, &input, None);
    assert_eq!(r2.logs(), ["AAAA ip=2001:db8::1 unknown=- TXT 3 97"], "{}", r2.stdout);
}

#[test]
fn data_held_for_streamed_rules_is_capped_per_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::new(42003, 7001);
    s.handshake();
    for _ in 0..4 {
        s.send(0, &[b'x'; 1000]);
    }
    s.close();
    let input = write_pcap(dir.path(), "big.pcap", s.pkts);
    // a streamed rule that reads to the end of the stream: it holds every byte
    let rules = r#"
require("protocol/tcp_connection")
haka.rule{
    on = haka.dissectors.tcp_connection.events.receive_data,
    options = { streamed = true },
    eval = function (flow, iter, dir)
        local n = 0
        for sub in iter:foreach_available() do n = n + #sub end
        haka.log("%s read %d", dir, n)
    end
}
"#;
    // under the cap: the rule reads all 4000 bytes at the end of the stream (and, as in
    // Haka, runs on the server's empty stream when it ends)
    let r = run(rules, &input, Some("[rules]\nstreamed_hold_kb = 8\ninstruction_budget = 30000000000\n"));
    assert_eq!(r.logs(), ["up read 4000", "down read 0"], "{}", r.stdout);
    assert_eq!(r.st("streamed_over_cap"), 0);
    // 2 KiB: the third segment goes over: counted, the connection dropped
    let r = run(rules, &input, Some("[rules]\nstreamed_hold_kb = 2\ninstruction_budget = 30000000000\n"));
    assert_eq!(r.st("streamed_over_cap"), 1);
    assert!(r.logs().is_empty(), "{}", r.stdout);
    assert_eq!(r.dropped("flow_dropped"), 2 + 3, "the third segment, the fourth and the FIN/ACKs");
    // "accept": the rule ends with what it read, the connection goes on
    let conf = "[rules]\nstreamed_hold_kb = 2\nstreamed_over_cap = \"accept\"\ninstruction_budget = 30000000000\n";
    let r = run(rules, &input, Some(conf));
    assert_eq!(r.st("streamed_over_cap"), 1);
    assert_eq!(r.logs(), ["up read 2000", "down read 0"], "{}", r.stdout);
    assert_eq!(r.total("dropped"), 0);
}

#[test]
fn a_dropped_connection_ends_at_its_close_or_drop_timeout_then_its_ports_make_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let rules = r#"
require("protocol/tcp_connection")
haka.rule{ on = haka.dissectors.tcp_connection.events.new_connection,
    eval = function (flow, tcp) haka.log("NEW %d", tcp.srcport) end }
haka.rule{ on = haka.dissectors.tcp_connection.events.receive_data,
    eval = function (flow, data, dir)
        if data:asstring():find("evil") then flow:drop() else haka.log("DATA %s", data:asstring()) end
    end }
"#;
    // dropped, then closed (FIN both ways): the next SYN on the same ports is a new connection
    let mut pkts = Vec::new();
    let mut a = Session::new(43001, 7002);
    a.handshake().send(0, b"evil").send(0, b"more").close();
    pkts.extend(a.pkts);
    let mut b = Session::new(43001, 7002);
    b.handshake().send(0, b"good").close();
    pkts.extend(b.pkts);
    let input = write_pcap(dir.path(), "closed.pcap", pkts);
    let r = run(rules, &input, None);
    assert_eq!(r.logs(), ["NEW 43001", "NEW 43001", "DATA good"], "{}", r.stdout);
    assert_eq!(r.dropped("flow_dropped"), 1 + 4, "evil, more and the close of the dropped connection");

    // dropped, not closed: a new connection 10 s later (SYN, data, close) is dropped with
    // it (its close closes the dropped one); 70 s later a new SYN is a new connection.
    let mut c = Session::new(43002, 7002);
    c.handshake().send(0, b"evil");
    let mut d = Session::new(43002, 7002);
    d.handshake().send(0, b"retry").close();
    let mut e = Session::new(43002, 7002);
    e.handshake().send(0, b"later").close();
    let t0 = 1_700_000_000_000_000_000u64;
    let mut times = Vec::new();
    for (k, s) in [(0u64, &c), (10, &d), (70, &e)] {
        for i in 0..s.pkts.len() as u64 {
            times.push(t0 + k * 1_000_000_000 + i * 1_000_000);
        }
    }
    let pkts: Vec<Vec<u8>> = [c.pkts, d.pkts, e.pkts].concat();
    let input = write_pcap(dir.path(), "timeout.pcap", pkts);
    let mut bytes = std::fs::read(&input).unwrap();
    haka_engine::pcapfile::restamp(&mut bytes, &times).unwrap();
    std::fs::write(&input, bytes).unwrap();
    let r = run(rules, &input, None);
    assert_eq!(r.logs(), ["NEW 43002", "NEW 43002", "DATA later"], "{}", r.stdout);
    assert_eq!(r.dropped("flow_dropped"), 1 + 7, "evil, and the 7 packets of the retry within the timeout");
    // [tcp] drop_timeout = 5: the retry 10 s later is already a new connection
    let r = run(rules, &input, Some("[tcp]\ndrop_timeout = 5\n"));
    assert_eq!(r.logs(), ["NEW 43002", "NEW 43002", "DATA retry", "NEW 43002", "DATA later"], "{}", r.stdout);
}

/// `flow:restart()` (Haka's tcp_connection restart): the connection ends after the packet's
/// rules (end_connection, no RST) and the packet is handled again as the first of a new one:
/// a client reusing its ports with a new SYN on a live connection gets a new connection;
/// a data packet restarted finds none ("no connection found" under Haka's policy).
#[test]
fn flow_restart_ends_the_connection_and_handles_the_packet_anew() {
    let dir = tempfile::tempdir().unwrap();
    let rules = r#"
        require("protocol/tcp_connection")
        local n = 0
        haka.rule{ on = haka.dissectors.tcp_connection.events.new_connection, eval = function (flow, pkt)
            n = n + 1
            flow.num = n
            haka.log("NEW %d seq=%d", n, pkt.seq)
        end }
        haka.rule{ on = haka.dissectors.tcp_connection.events.receive_packet, eval = function (flow, pkt)
            if pkt.seq == 90000 or pkt.payload:asstring() == "restart" then
                haka.log("RESTART %d", flow.num)
                flow:restart()
                flow:restart() -- (the same)
            end
        end }
        haka.rule{ on = haka.dissectors.tcp_connection.events.end_connection, eval = function (flow)
            haka.log("END %d", flow.num)
        end }
    "#;
    let mut s = Session::new(40061, 80);
    s.handshake().send(0, b"hello");
    // the client reuses its ports: a new SYN on the live connection
    s.push_raw(0, 90000, 0, SYN, b"");
    let mut s2 = Session::new(40062, 80);
    s2.handshake().send(0, b"restart").send(0, b"after");
    let mut pkts = s.pkts.clone();
    pkts.extend(s2.pkts.clone());
    let input = write_pcap(dir.path(), "restart.pcap", pkts.clone());
    for (conf, restarted_passes) in [(None, true), (Some("[tcp]\nno_connection_found = \"drop\"\n"), false)] {
        let r = run(rules, &input, conf);
        // (the packet handled again runs the rules again: its restart is not repeated)
        let mut want =
            vec!["NEW 1 seq=1000", "RESTART 1", "END 1", "NEW 2 seq=90000", "RESTART 2", "NEW 3 seq=1000", "RESTART 3", "END 3"];
        let mut ends = vec!["END 2"];
        if restarted_passes {
            // picked up mid-stream (the default): a new connection from that packet
            want.extend(["NEW 4 seq=1001", "RESTART 4"]);
            ends.push("END 4");
        }
        let mut logs = r.logs();
        let mut last = logs.split_off(want.len().min(logs.len()));
        last.sort();
        assert_eq!((logs, last), (want.iter().map(|s| s.to_string()).collect(), ends.iter().map(|s| s.to_string()).collect()), "{conf:?}: {}", r.stdout);
        assert_eq!(r.st("resets_sent"), 0);
        let alerts = r.alert_descriptions();
        if restarted_passes {
            assert!(alerts.is_empty(), "{}", r.stdout);
            assert_eq!(r.out.packets, pkts);
        } else {
            assert_eq!(alerts, ["no connection found for tcp packet", "no connection found for tcp packet"], "{}", r.stdout);
            assert_eq!(r.out.packets.len(), pkts.len() - 2, "the restarted data packet and the next one dropped");
        }
    }
}

/// Incomplete HTTP heads, the state an attacker grows per connection: under `[memory]`
/// a connection over its flow cap is alerted and dropped at once (its state freed, the
/// rest of the capture's connections inspected as usual), the stats report bytes per
/// connection by protocol, and every byte charged comes back when the connections end.
#[test]
fn flow_memory_budget_drops_a_connection_over_its_cap_and_reports_bytes_by_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let rules = r#"
        local http = require('protocol/http')
        haka.rule{ on = http.events.request, eval = function (h) haka.log("request %s", h.request.uri) end }
    "#;
    // 40 KB of header lines that never end (no blank line): the parser must hold them
    let mut head = b"GET /slow HTTP/1.1\r\nHost: lab\r\n".to_vec();
    while head.len() < 40_000 {
        // (long lines: at most [http]'s 256 header fields)
        head.extend_from_slice(b"X-Pad: ");
        head.resize(head.len() + 990, b'a');
        head.extend_from_slice(b"\r\n");
    }
    let mut slow = Session::new(40100, 80);
    slow.handshake().send_split(0, &head, 1400).send(0, b"X-Last: 1\r\n\r\n");
    let mut good = Session::new(40101, 80);
    good.handshake()
        .send(0, b"GET /index.html HTTP/1.1\r\nHost: lab\r\n\r\n")
        .send(1, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        .ack(0)
        .close();
    let mut pkts = slow.pkts.clone();
    pkts.extend(good.pkts.clone());
    let input = write_pcap(dir.path(), "slow.pcap", pkts);

    // Default budget (1 MiB per flow): both requests are seen.
    let r = run(rules, &input, None);
    assert_eq!(r.logs(), ["request /slow", "request /index.html"], "{}", r.stdout);
    assert_eq!(r.st("memory_flow_cap_hits"), 0);
    let http = &r.stats["totals"]["memory_by_protocol"]["http"];
    let max = http["max_connection_bytes"].as_u64().unwrap();
    assert!(max > 40_000 && max < 300_000, "the slow head's connection held {max} bytes: {http}");
    assert_eq!(r.st("memory_held_bytes"), 0, "every charge returned at the end: {}", r.stats);
    assert!(r.st("memory_peak_bytes") >= max);

    // 32 KiB per flow: the slow connection is alerted and dropped once its head passes it.
    let r = run(rules, &input, Some("[memory]\nflow_kb = 32\n"));
    assert_eq!(r.logs(), ["request /index.html"], "{}", r.stdout);
    let alerts = r.alert_descriptions();
    assert_eq!(alerts.len(), 1, "{}", r.stdout);
    assert!(alerts[0].starts_with("memory: connection over the flow memory cap ("), "{alerts:?}");
    assert!(alerts[0].ends_with("bytes held, mostly parser state)"), "{alerts:?}");
    assert_eq!((r.st("memory_flow_cap_hits"), r.st("memory_cap_hits_parser")), (1, 1));
    assert_eq!(r.dropped("memory_cap"), 1);
    // the rest of its packets are dropped as those of any dropped connection
    let sent_after = slow.pkts.len() as u64 - 3 - (32 * 1024 / 1400) as u64;
    assert!(r.dropped("flow_dropped") >= sent_after - 2, "{}", r.stats["totals"]);
    assert!(r.stats["totals"]["memory_by_protocol"]["http"]["max_connection_bytes"].as_u64().unwrap() < 100_000);
    assert_eq!(r.st("memory_held_bytes"), 0);

    // "accept": the connection's state is freed and its data passes uninspected.
    let r = run(rules, &input, Some("[memory]\nflow_kb = 32\nover_cap = \"accept\"\n"));
    assert_eq!(r.logs(), ["request /index.html"], "{}", r.stdout);
    assert_eq!(r.dropped("memory_cap"), 0);
    assert_eq!(r.stats["totals"]["dropped"], 0, "{}", r.stats["totals"]);
    assert_eq!(r.st("memory_flow_cap_hits"), 1);
}

/// The worker's cap bounds the sum: many connections each under their own cap, the one
/// whose growth crosses the worker's cap gets the verdict, and the total stays bounded.
#[test]
fn worker_memory_cap_bounds_many_incomplete_heads() {
    let dir = tempfile::tempdir().unwrap();
    let rules = "require('protocol/http')";
    let mut pkts = Vec::new();
    for i in 0..40u16 {
        let mut s = Session::new(41000 + i, 80);
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        head.resize(20_000, b'a');
        s.handshake().send_split(0, &head, 1400);
        pkts.extend(s.pkts);
    }
    let input = write_pcap(dir.path(), "many.pcap", pkts);
    let r = run(rules, &input, None);
    let peak_uncapped = r.st("memory_peak_bytes");
    assert!(peak_uncapped > 40 * 20_000, "40 heads of 20 KB held: {peak_uncapped}");
    assert_eq!(r.st("memory_worker_cap_hits"), 0);
    let r = run(rules, &input, Some("[memory]\nworker_mb = 1\nflow_kb = 512\n"));
    let hits = r.st("memory_worker_cap_hits");
    assert!(hits >= 10, "{}", r.stats["totals"]);
    assert_eq!(r.dropped("memory_cap"), hits);
    assert!(r.st("memory_peak_bytes") <= (1 << 20) + 64 * 1024, "{}", r.stats["totals"]);
    assert_eq!(r.st("memory_held_bytes"), 0);
}

/// What rules keep on a flow's Lua object counts against the flow's memory cap: a rule
/// that stores every segment of a connection on its flow object gets that connection
/// alerted and dropped once the scan of the Lua flow objects measures it over the cap;
/// a connection whose rule keeps little is untouched; the bytes are reported.
#[test]
fn lua_flow_objects_count_against_the_flow_memory_cap() {
    let dir = tempfile::tempdir().unwrap();
    let rules = r#"
        haka.rule{ on = haka.dissectors.tcp_connection.events.receive_data, eval = function (flow, data, dir)
            if flow.dstport == 80 then
                flow.kept = flow.kept or {}
                flow.kept[#flow.kept + 1] = data:asstring() -- every byte the connection sent
            else
                flow.n = (flow.n or 0) + 1
            end
        end }
        haka.rule{ on = haka.dissectors.tcp_connection.events.end_connection, eval = function (flow)
            haka.log("end %d %d", flow.dstport, flow.kept and #flow.kept or flow.n)
        end }
    "#;
    // (bytes that differ from segment to segment: Lua keeps one copy of equal strings)
    let big: Vec<u8> = (0..1_500_000u32).map(|i| (i % 251) as u8).collect();
    // (each segment acknowledged by the server: the stream delivers acknowledged data)
    let mut hoard = Session::new(42000, 80);
    hoard.handshake();
    for c in big.chunks(1400) {
        hoard.send(0, c).ack(1);
    }
    let mut small = Session::new(42001, 81);
    small.handshake();
    for c in big[..300_000].chunks(1400) {
        small.send(0, c).ack(1);
    }
    small.close();
    // interleaved, so that both connections are live at each scan
    let (a, b) = (hoard.pkts.clone(), small.pkts.clone());
    let mut pkts = Vec::new();
    for i in 0..a.len().max(b.len()) {
        pkts.extend(a.get(i).cloned());
        pkts.extend(b.get(i).cloned());
    }
    let input = write_pcap(dir.path(), "hoard.pcap", pkts);
    // scanned from the first packets (lua_scan_mb = 0), 256 KiB per flow
    let r = run(rules, &input, Some("[memory]\nflow_kb = 256\nlua_scan_mb = 0\n"));
    let alerts = r.alert_descriptions();
    assert_eq!(alerts.len(), 1, "{}", r.stdout);
    assert!(alerts[0].starts_with("memory: connection over the flow memory cap ("), "{alerts:?}");
    assert!(alerts[0].ends_with("bytes held, mostly Lua objects)"), "{alerts:?}");
    assert_eq!((r.st("memory_flow_cap_hits"), r.st("memory_cap_hits_lua")), (1, 1), "{}", r.stats["totals"]);
    assert_eq!(r.dropped("memory_cap"), 1);
    // the hoarding connection ended when it was dropped, with what it had kept by then
    // (scanned every 1024 packets); the other ran to its end
    let logs = r.logs();
    assert_eq!(logs.len(), 2, "{logs:?}");
    let kept: usize = logs.iter().find_map(|l| l.strip_prefix("end 80 ")).expect("hoard ended").parse().unwrap();
    assert!(kept > 256 * 1024 / 1400 && kept < 1_500_000 / 1400, "{logs:?}");
    assert_eq!(logs.iter().filter(|l| *l == &format!("end 81 {}", 300_000usize.div_ceil(1400))).count(), 1, "{logs:?}");
    assert!(r.dropped("flow_dropped") > 0, "the rest of the hoarding connection dropped: {}", r.stats["totals"]);
    assert_eq!(r.st("memory_held_bytes"), 0, "{}", r.stats["totals"]);

    // Haka's behaviour (no cap on what rules keep) with the scan off: nothing dropped
    let r = run(rules, &input, Some("[memory]\nflow_kb = 256\nlua_scan_mb = 1048576\n"));
    assert!(r.alert_descriptions().is_empty(), "{}", r.stdout);
    assert_eq!(r.stats["totals"]["dropped"], 0, "{}", r.stats["totals"]);
}

/// DNS amplification bounded: a query of many questions (servers answer FORMERR to
/// more than one) is a protocol error past `[dns] max_questions`, alerted and dropped
/// before any rule builds its objects; the queries awaited per connection are capped
/// (`pending_queries`): the response of a forgotten one is a mismatching response.
#[test]
fn dns_many_questions_and_pending_queries_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..256).map(|i| format!("n{i}.example")).collect();
    let qs: Vec<(&str, u16)> = names.iter().map(|n| (n.as_str(), 1)).collect();
    let bomb = dns_msg(0x0900, 0x0100, &qs, &[]);
    let few = dns_msg(0x0901, 0x0100, &qs[..3], &[]);
    let mut pkts = vec![udp_pkt(CLIENT, DNS_RESOLVER, 30100, 53, &bomb), udp_pkt(CLIENT, DNS_RESOLVER, 30101, 53, &few)];
    // five queries on one flow, then the response to the first
    for id in 1..=5u16 {
        pkts.push(udp_pkt(CLIENT, DNS_RESOLVER, 30102, 53, &dns_msg(id, 0x0100, &[("a.example", 1)], &[])));
    }
    let a = vec![192, 0, 2, 1];
    pkts.push(udp_pkt(DNS_RESOLVER, CLIENT, 53, 30102, &dns_msg(1, 0x8180, &[("a.example", 1)], &[("a.example", 1, a.clone())])));
    pkts.push(udp_pkt(DNS_RESOLVER, CLIENT, 53, 30102, &dns_msg(5, 0x8180, &[("a.example", 1)], &[("a.example", 1, a)])));
    let input = write_pcap(dir.path(), "dnsbomb.pcap", pkts);
    let r = run(DNS_LOG_RULES, &input, Some("[dns]\npending_queries = 4\n"));
    assert_eq!(r.alert_descriptions(), ["dns: too many questions", "dns: mismatching response"], "{}", r.stdout);
    assert_eq!(r.dropped("protocol_error"), 1);
    let logs = r.logs();
    assert!(logs.iter().any(|l| l.starts_with("QUERY 2305")), "3 questions are fine: {logs:?}");
    assert!(!logs.iter().any(|l| l.starts_with("QUERY 2304")), "{logs:?}");
    assert!(logs.iter().any(|l| l.starts_with("RESP 5 5")), "{logs:?}");
    assert!(!logs.iter().any(|l| l.starts_with("RESP 1 ")), "{logs:?}");
    // a bad key value is refused with its name
    let bad = haka_engine::config::Config::parse("[dns]\nmax_questions = 0\n", "t.toml").unwrap_err();
    assert!(bad.contains("dns.max_questions = 0"), "{bad}");
}

// ---------------------------------------------------------------------------------------
// dissectors written in Lua (haka.dissector.new, grammar, state machine)
// ---------------------------------------------------------------------------------------

/// A line protocol dissector on TCP port 7777: `CMD arg\r\n` both ways, a `command` event
/// per client line, the rules' writes going back into the stream.
const KV_DISSECTOR: &str = r#"
local tcp_connection = require('protocol/tcp_connection')
local kv = haka.dissector.new{ type = tcp_connection.helper.TcpFlowDissector, name = 'kv' }
kv:register_event('command')
kv:register_event('reply')
kv.grammar = haka.grammar.new('kv', function ()
  line = record{ field('cmd', token('[A-Z]+')), token(' '), field('arg', token('[^\r\n]*')), token('\r?\n') }
  export(line)
end)
kv.state_machine = haka.state_machine.new('kv', function ()
  state_type(BidirectionalState)
  session = state(kv.grammar.line, kv.grammar.line)
  session:on{ event = events.up, execute = function (self, res) self:trigger('command', res) end }
  session:on{ event = events.down, execute = function (self, res) self:trigger('reply', res) end }
  initial(session)
end)
kv:install_tcp_rule(7777)

haka.rule{ on = haka.dissectors.kv.events.command, eval = function (kv, cmd)
  haka.log("CMD %s %s", cmd.cmd, cmd.arg)
  if cmd.cmd == "SECRET" then cmd.arg = string.rep("x", #cmd.arg + 2) end
  if cmd.cmd == "QUIT" then kv:drop() end
end }
haka.rule{ on = haka.dissectors.kv.events.reply, eval = function (kv, r) haka.log("REPLY %s", r.cmd) end }
haka.rule{ on = haka.dissectors.kv.events.protocol_error, eval = function (kv, err)
  haka.log("PERR %s", tostring(err))
end }
"#;

#[test]
fn lua_tcp_dissector_parses_streams_edits_them_and_drops_on_its_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::new(41000, 7777);
    s.handshake()
        .send(0, b"HELLO wo")
        .send(0, b"rld\r\n")
        .send(1, b"OK hi\r\n")
        .send(0, b"SECRET pw\r\n")
        .send(1, b"OK\x20\r\n")
        .send(0, b"QUIT now\r\n")
        .send(0, b"MORE data\r\n")
        .close();
    // another port: not dissected
    let mut o = Session::new(41001, 7778);
    o.handshake().send(0, b"lower case\r\n").close();
    let mut pkts = s.pkts.clone();
    pkts.extend(o.pkts.clone());
    let input = write_pcap(dir.path(), "kv.pcap", pkts);
    let r = run(KV_DISSECTOR, &input, None);
    assert_eq!(r.logs(), ["CMD HELLO world", "REPLY OK", "CMD SECRET pw", "REPLY OK", "CMD QUIT now"], "{}", r.stdout);
    assert_eq!(r.st("lua_protocol_errors"), 0);
    let out = r.out_packets();
    let client = stream_of(&out, true);
    // the line split over two segments parsed once whole; the rule's write in the stream
    // (longer: the sequence numbers that follow are shifted); QUIT dropped the connection
    assert_eq!(String::from_utf8_lossy(&client), "HELLO world\r\nSECRET xxxx\r\n", "{out:?}");
    assert!(out.iter().all(|p| p.checksums_ok), "valid checksums");
    assert!(!out.iter().any(|p| contains(&p.payload, b"MORE")), "dropped after QUIT");
    // the other connection went through untouched
    assert!(out.iter().any(|p| p.dport == 7778 && p.payload == b"lower case\r\n"));
}

#[test]
fn lua_dissector_parse_error_is_a_counted_protocol_error_that_drops_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::new(41002, 7777);
    s.handshake().send(0, b"HELLO ok\r\n").send(0, b"bad line\r\n").send(0, b"AFTER x\r\n").close();
    let input = write_pcap(dir.path(), "kvbad.pcap", s.pkts.clone());
    let r = run(KV_DISSECTOR, &input, None);
    assert_eq!(
        r.logs(),
        ["CMD HELLO ok", "PERR parse error at byte 0 for field 'cmd' in line: token /[A-Z]+/ doesn't match"],
        "{}",
        r.stdout
    );
    assert_eq!(r.st("lua_protocol_errors"), 1);
    let out = r.out_packets();
    assert!(!out.iter().any(|p| contains(&p.payload, b"bad line") || contains(&p.payload, b"AFTER")), "{out:?}");
    assert!(r.dropped("flow_dropped") >= 2, "{}", r.stats);

    // [rules] lua_protocol_error = "accept": counted, the dissector stops, the traffic goes on
    let r = run(KV_DISSECTOR, &input, Some("[rules]\nlua_protocol_error = \"accept\"\ninstruction_budget = 30000000000\n"));
    assert_eq!(r.st("lua_protocol_errors"), 1);
    assert_eq!(r.logs().len(), 2, "{}", r.stdout);
    assert_eq!(r.total("dropped"), 0);
    assert_eq!(r.out.packets, Capture::read(&input).unwrap().packets);
}

#[test]
fn lua_udp_and_packet_dissectors() {
    let dir = tempfile::tempdir().unwrap();
    let rules = r#"
        local udp_connection = require('protocol/udp_connection')
        local echo = haka.dissector.new{ type = udp_connection.helper.UdpFlowDissector, name = 'echo' }
        echo:register_event('message')
        echo.grammar = haka.grammar.new('echo', function ()
          msg = record{ field('kind', number(8)), field('len', number(8)),
            field('text', bytes():count(function (self) return self.len end)) }
          export(msg)
        end)
        function echo.method:receive(payload, direction, pkt)
          local res, err = echo.grammar.msg:parse(payload:pos('begin'), nil, self)
          if err then return self:protocol_error(err) end
          self:trigger('message', res, direction)
        end
        echo:install_udp_rule(9999)
        haka.rule{ on = haka.dissectors.echo.events.message, eval = function (e, m, dir)
          haka.log("MSG %s %d %s", dir, m.kind, m.text:asstring())
          m.kind = 7
        end }

        -- a packet dissector chosen by a policy of udp: the same bytes, seen per packet
        local raw = haka.dissector.new{ type = haka.helper.PacketDissector, name = 'rawmsg' }
        raw.grammar = haka.grammar.new('rawmsg', function ()
          msg = record{ field('kind', number(8)), field('len', number(8)) }
          export(msg)
        end).msg
        haka.policy{ on = haka.dissectors.udp.policies.next_dissector, dstport = 9999,
          action = haka.dissectors.rawmsg.install }
        haka.rule{ on = haka.dissectors.rawmsg.events.receive_packet, eval = function (m)
          haka.log("RAW %d %d", m.kind, m.len)
          if m.len > 10 then m:drop() end
        end }
    "#;
    let pkts = vec![
        udp_pkt(CLIENT, SERVER, 5000, 9999, b"\x01\x03abc"),
        udp_pkt(SERVER, CLIENT, 9999, 5000, b"\x02\x02ok"),
        udp_pkt(CLIENT, SERVER, 5000, 9999, b"\x01\x09short"),
        udp_pkt(CLIENT, SERVER, 5001, 9999, b"\x01\x20"),
    ];
    let input = write_pcap(dir.path(), "echo.pcap", pkts);
    let r = run(rules, &input, None);
    // (the packet rules of a burst run before its connection events)
    assert_eq!(r.logs_with("RAW "), ["1 3", "1 9", "1 32"], "{}", r.stdout);
    assert_eq!(r.logs_with("MSG "), ["up 1 abc", "down 2 ok"], "{}", r.stdout);
    // a datagram that does not parse: a protocol error, dropped; one dropped by the
    // packet dissector's rule
    assert_eq!(r.st("lua_protocol_errors"), 1);
    let out = r.out_packets();
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].payload, b"\x07\x03abc", "the rule's write in the datagram");
    assert_eq!(out[1].payload, b"\x07\x02ok");
    assert!(out.iter().all(|p| p.checksums_ok));
}

// ---------------------------------------------------------------------------------------
// the Modbus/TCP sample dissector written in Lua (rules/modbus.lua, rules/modbus_rules.lua)
// ---------------------------------------------------------------------------------------

/// A Modbus/TCP ADU: MBAP header (transaction id, protocol 0, length, unit) and the PDU.
fn mbap(tid: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    a.extend_from_slice(&tid.to_be_bytes());
    a.extend_from_slice(&[0, 0]);
    a.extend_from_slice(&((pdu.len() + 1) as u16).to_be_bytes());
    a.push(unit);
    a.extend_from_slice(pdu);
    a
}

/// Logs every request and response field the dissector gives, and its protocol errors.
fn modbus_log_rules() -> String {
    format!(
        r#"
local modbus = dofile("{}")
local function fields(m)
  local out = {{ m.transaction_id, m.unit_id, m.function_code }}
  for _, k in ipairs({{ 'address', 'quantity', 'value', 'byte_count', 'exception_code' }}) do
    local v = m[k]
    if v ~= nil then out[#out + 1] = k .. '=' .. v end
  end
  if m.values then out[#out + 1] = 'values=' .. #m.values end
  if m.data then out[#out + 1] = 'data=' .. #m.data end
  return table.concat(out, ' ')
end
haka.rule{{ on = haka.dissectors.modbus.events.request, eval = function (mb, req) haka.log("REQ %s", fields(req)) end }}
haka.rule{{ on = haka.dissectors.modbus.events.response, eval = function (mb, resp) haka.log("RESP %s", fields(resp)) end }}
haka.rule{{ on = haka.dissectors.modbus.events.protocol_error, eval = function (mb, err) haka.log("PERR %s", tostring(err)) end }}
"#,
        sample("modbus.lua").display()
    )
}

#[test]
fn modbus_dissector_gives_every_function_code_split_and_pipelined_frames() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::new(42000, 502);
    let read_req = mbap(1, 1, &[3, 0x00, 0x10, 0x00, 0x02]);
    let read_resp = mbap(1, 1, &[3, 4, 0xde, 0xad, 0xbe, 0xef]);
    let coils_req = mbap(2, 1, &[1, 0x00, 0x00, 0x00, 0x0a]);
    let coils_resp = mbap(2, 1, &[1, 2, 0xff, 0x03]);
    let wsc = mbap(3, 1, &[5, 0x00, 0x07, 0xff, 0x00]);
    let wsr = mbap(4, 1, &[6, 0x00, 0x08, 0x12, 0x34]);
    let wmr_req = mbap(5, 1, &[16, 0x00, 0x20, 0x00, 0x02, 4, 0, 1, 0, 2]);
    let wmr_resp = mbap(5, 1, &[16, 0x00, 0x20, 0x00, 0x02]);
    let wmc_req = mbap(6, 1, &[15, 0x00, 0x30, 0x00, 0x09, 2, 0xff, 0x01]);
    let wmc_resp = mbap(6, 1, &[15, 0x00, 0x30, 0x00, 0x09]);
    let di_req = mbap(7, 2, &[2, 0x00, 0x00, 0x00, 0x08]);
    let exc = mbap(7, 2, &[0x82, 0x02]);
    let ir_req = mbap(8, 2, &[4, 0x00, 0x01, 0x00, 0x01]);
    let ir_resp = mbap(8, 2, &[4, 2, 0x00, 0x2a]);
    let diag = mbap(9, 2, &[8, 0x00, 0x00, 0xa5, 0x37]);
    let diag_exc = mbap(9, 2, &[0x88, 0x01]);
    s.handshake().send(0, &read_req).send(1, &read_resp);
    // a request split in two segments, its response cut in three
    s.send(0, &coils_req[..3]).send(0, &coils_req[3..]);
    s.send(1, &coils_resp[..7]).send(1, &coils_resp[7..8]).send(1, &coils_resp[8..]);
    // pipelined: two requests in one segment, their responses in one
    s.send(0, &[wsc.clone(), wsr.clone()].concat()).send(1, &[wsc.clone(), wsr.clone()].concat());
    // one and a half frames, then the rest with a whole frame
    let both = [wmr_req.clone(), wmc_req.clone()].concat();
    s.send(0, &both[..wmr_req.len() + 4]).send(0, &[&both[wmr_req.len() + 4..], &di_req[..]].concat());
    s.send(1, &[wmr_resp.clone(), wmc_resp.clone(), exc.clone()].concat());
    s.send(0, &ir_req).send(1, &ir_resp).send(0, &diag).send(1, &diag_exc).close();
    let input = write_pcap(dir.path(), "modbus.pcap", s.pkts.clone());
    let r = run(&modbus_log_rules(), &input, None);
    assert_eq!(
        r.logs(),
        [
            "REQ 1 1 3 address=16 quantity=2",
            "RESP 1 1 3 byte_count=4 values=4",
            "REQ 2 1 1 address=0 quantity=10",
            "RESP 2 1 1 byte_count=2 values=2",
            "REQ 3 1 5 address=7 value=65280",
            "REQ 4 1 6 address=8 value=4660",
            "RESP 3 1 5 address=7 value=65280",
            "RESP 4 1 6 address=8 value=4660",
            "REQ 5 1 16 address=32 quantity=2 byte_count=4 values=4",
            "REQ 6 1 15 address=48 quantity=9 byte_count=2 values=2",
            "REQ 7 2 2 address=0 quantity=8",
            "RESP 5 1 16 address=32 quantity=2",
            "RESP 6 1 15 address=48 quantity=9",
            "RESP 7 2 130 exception_code=2",
            "REQ 8 2 4 address=1 quantity=1",
            "RESP 8 2 4 byte_count=2 values=2",
            "REQ 9 2 8 data=4",
            "RESP 9 2 136 exception_code=1",
        ],
        "{}",
        r.stdout
    );
    assert_eq!(r.st("lua_protocol_errors"), 0);
    assert_eq!(r.out.packets, Capture::read(&input).unwrap().packets, "everything forwarded unchanged");
}

/// Frames cut by segment ends, again and again in both directions, each between frames
/// parsed in place: every frame is dissected once, in order, and the result of a cut frame
/// (parsed through the direction's stream, which is let go once it is all parsed) still
/// reads its fields and bytes after later segments.
#[test]
fn modbus_frames_cut_again_and_again_keep_their_fields() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::new(42001, 502);
    s.handshake();
    let mut want = Vec::new();
    for i in 0..6u16 {
        let req = mbap(10 + i, 1, &[3, 0x00, i as u8, 0x00, 0x02]);
        let resp = mbap(10 + i, 1, &[3, 4, 0xde, 0xad, 0xbe, i as u8]);
        if i % 2 == 0 {
            // cut: the request after its MBAP header, the response in three
            s.send(0, &req[..7]).send(0, &req[7..]);
            s.send(1, &resp[..2]).send(1, &resp[2..9]).send(1, &resp[9..]);
        } else {
            s.send(0, &req).send(1, &resp);
        }
        want.push(format!("REQ {} 1 3 address={i} quantity=2", 10 + i));
        want.push(format!("RESP {} 1 3 byte_count=4 values=4 last={i} kept={}", 10 + i, 10 + i.saturating_sub(1)));
    }
    s.close();
    let input = write_pcap(dir.path(), "modbus-cut.pcap", s.pkts.clone());
    let rules = format!(
        r#"
local modbus = dofile("{}")
local kept
haka.rule{{ on = haka.dissectors.modbus.events.request, eval = function (mb, req)
  haka.log("REQ %d %d %d address=%d quantity=%d", req.transaction_id, req.unit_id, req.function_code, req.address, req.quantity)
end }}
haka.rule{{ on = haka.dissectors.modbus.events.response, eval = function (mb, resp)
  -- (the previous response, kept from its own event)
  local k = kept or resp
  haka.log("RESP %d %d %d byte_count=%d values=%d last=%d kept=%d", resp.transaction_id, resp.unit_id,
    resp.function_code, resp.byte_count, #resp.values, resp.values:sub(3, 1):asnumber(), k.transaction_id)
  assert(k.values:sub(0, 3):asstring() == "\222\173\190")
  kept = resp
end }}
"#,
        sample("modbus.lua").display()
    );
    let r = run(&rules, &input, None);
    assert_eq!(r.logs(), want, "{}", r.stdout);
    assert_eq!(r.st("lua_protocol_errors"), 0);
    assert_eq!(r.total("rule_errors"), 0, "{}", r.stdout);
}

/// A frame cut by the end of its segment is kept and parsed again, in place, with the next
/// segment's bytes (no stream): as the stream gave it, a request cut in two whose rest comes
/// with an invalid frame (its event, then the protocol error), a request the connection ends
/// in (a protocol error at the FIN), a response cut in three with two frames after its end
/// in the last segment, and then frames whole again.
#[test]
fn modbus_cut_frames_are_parsed_again_with_the_next_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut pkts = Vec::new();
    let a = mbap(1, 1, &[3, 0, 1, 0, 2]);
    let bad = vec![0, 2, 0, 7, 0, 6, 1, 3, 0, 0, 0, 1];
    let mut s = Session::new(42401, 502);
    s.handshake().send(0, &a[..9]).send(0, &[&a[9..], &bad[..]].concat()).close();
    pkts.extend(s.pkts);
    let b = mbap(2, 1, &[3, 0, 5, 0, 1]);
    let c = mbap(3, 1, &[3, 0, 6, 0, 1]);
    let mut s = Session::new(42402, 502);
    s.handshake().send(0, &b).send(0, &c[..4]).close();
    pkts.extend(s.pkts);
    let (r4, r5, r6, r7) = (mbap(4, 1, &[3, 2, 0, 7]), mbap(5, 1, &[6, 0, 9, 0, 1]), mbap(6, 1, &[3, 2, 0, 8]), mbap(7, 2, &[5, 0, 3, 0xff, 0]));
    let mut s = Session::new(42403, 502);
    s.handshake().send(1, &r4[..3]).send(1, &r4[3..8]).send(1, &[&r4[8..], &r5[..], &r6[..]].concat()).send(1, &r7).close();
    pkts.extend(s.pkts);
    let input = write_pcap(dir.path(), "modbus_kept.pcap", pkts);
    let r = run(&modbus_log_rules(), &input, None);
    let logs = r.logs();
    assert_eq!(
        logs.iter().filter(|l| !l.starts_with("PERR ")).cloned().collect::<Vec<_>>(),
        [
            "REQ 1 1 3 address=1 quantity=2",
            "REQ 2 1 3 address=5 quantity=1",
            "RESP 4 1 3 byte_count=2 values=2",
            "RESP 5 1 6 address=9 value=1",
            "RESP 6 1 3 byte_count=2 values=2",
            "RESP 7 2 5 address=3 value=65280",
        ],
        "{}",
        r.stdout
    );
    let perr = r.logs_with("PERR ");
    assert_eq!(perr.len(), 2, "{}", r.stdout);
    assert!(perr[0].contains("protocol_id"), "{}", perr[0]);
    assert!(perr[1].contains("not enough data"), "{}", perr[1]);
    assert!(logs[1].starts_with("PERR ") && logs[1].contains("protocol_id"), "the invalid frame after the cut one: {logs:?}");
    assert_eq!(r.st("lua_protocol_errors"), 2);
    assert_eq!(r.total("rule_errors"), 0, "{}", r.stdout);
    // the invalid frame's segment and what follows on its connection are dropped
    let out = r.out_packets();
    let data: Vec<&Vec<u8>> = out.iter().filter(|p| p.sport == 42401 && !p.payload.is_empty()).map(|p| &p.payload).collect();
    assert_eq!(data, [&a[..9].to_vec()]);
    // passive mode (segments read only: the kept bytes are copies), the same dissection
    let p = run(&modbus_log_rules(), &input, Some("[datapath]\nmode = \"passive\"\n"));
    assert_eq!(p.logs(), logs, "{}", p.stdout);
    assert_eq!(p.st("lua_protocol_errors"), 2);
}

/// A message of a Lua dissector cut by a segment end and longer than what the in-place path
/// keeps for the next segment (4 KiB) goes through the direction's stream, and the messages
/// after it are parsed in place again; a kept result of either kind still reads its bytes.
#[test]
fn lua_dissector_long_cut_messages_go_through_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let rules = r#"
local tcp_connection = require('protocol/tcp_connection')
local blob = haka.dissector.new{ type = tcp_connection.helper.TcpFlowDissector, name = 'blob' }
blob:register_event('msg')
blob.grammar = haka.grammar.new('blob', function ()
  msg = record{ field('len', number(16)), field('data', bytes():count(function (r) return r.len end)) }
  export(msg)
end)
blob.state_machine = haka.state_machine.new('blob', function ()
  state_type(BidirectionalState)
  s = state(blob.grammar.msg, blob.grammar.msg)
  s:on{ event = events.up, execute = function (self, m) self:trigger('msg', m) end }
  s:on{ event = events.down, execute = function (self, m) self:trigger('msg', m) end }
  initial(s)
end)
blob:install_tcp_rule(7100)
local kept = {}
haka.rule{ on = haka.dissectors.blob.events.msg, eval = function (b, m)
  kept[#kept + 1] = m
  local k = kept[1]
  haka.log("MSG %d %d %s first=%s", m.len, #m.data, m.data:sub(m.len - 2, 2):asstring(), k.data:sub(0, 2):asstring())
end }
haka.rule{ on = haka.dissectors.blob.events.protocol_error, eval = function (b, err) haka.log("PERR %s", tostring(err)) end }
"#;
    let msg = |n: usize, tag: u8| {
        let mut m = (n as u16).to_be_bytes().to_vec();
        m.extend((0..n).map(|i| if i + 2 >= n { tag } else { b'a' + (i % 26) as u8 }));
        m
    };
    let (m1, m2, m3, m4) = (msg(10, b'1'), msg(6000, b'2'), msg(20, b'3'), msg(5000, b'4'));
    let mut s = Session::new(42410, 7100);
    s.handshake().send(0, &m1[..5]).send(0, &[&m1[5..], &m2[..1000]].concat());
    s.send_split(0, &m2[1000..], 1200).send(0, &m3[..7]).send(0, &m3[7..]);
    s.send(0, &m4[..4500]).send(0, &m4[4500..]).close();
    let input = write_pcap(dir.path(), "blob.pcap", s.pkts.clone());
    let r = run(rules, &input, None);
    assert_eq!(
        r.logs(),
        ["MSG 10 10 11 first=ab", "MSG 6000 6000 22 first=ab", "MSG 20 20 33 first=ab", "MSG 5000 5000 44 first=ab"],
        "{}",
        r.stdout
    );
    assert_eq!(r.st("lua_protocol_errors"), 0);
    assert_eq!(r.total("rule_errors"), 0, "{}", r.stdout);
}

#[test]
fn modbus_malformed_frames_are_protocol_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ok = mbap(1, 1, &[3, 0, 0, 0, 1]);
    let cases: [(&str, Vec<u8>); 5] = [
        // length 300: over Modbus's 260-byte ADU (the frame is not waited for)
        ("length", [&[0, 2, 0, 0, 0x01, 0x2c, 1, 3][..], &[0; 16][..]].concat()),
        ("length 1", vec![0, 2, 0, 0, 0, 1, 1, 3, 0, 0, 0, 1]),
        ("protocol", vec![0, 2, 0, 7, 0, 6, 1, 3, 0, 0, 0, 1]),
        // the length says 8 bytes of PDU, the read request has 5
        ("PDU size", vec![0, 2, 0, 0, 0, 9, 1, 3, 0, 0, 0, 1, 0, 0, 0]),
        // write multiple registers: byte count 6, the MBAP length leaves room for 4
        ("byte count", mbap(2, 1, &[16, 0, 0, 0, 2, 6, 0, 1, 0, 2])),
    ];
    let mut pkts = Vec::new();
    for (i, (_, bad)) in cases.iter().enumerate() {
        let mut s = Session::new(42100 + i as u16, 502);
        s.handshake().send(0, &ok).send(0, bad).send(0, &ok).close();
        pkts.extend(s.pkts);
    }
    let input = write_pcap(dir.path(), "modbus_bad.pcap", pkts);
    let r = run(&modbus_log_rules(), &input, None);
    let perr = r.logs_with("PERR ");
    assert_eq!(perr.len(), cases.len(), "{}", r.stdout);
    for ((what, _), e) in cases.iter().zip(&perr) {
        assert!(e.contains(what), "{what}: {e}");
    }
    assert!(perr[0].contains("invalid MBAP length 300 (2 to 254)"), "{}", perr[0]);
    assert_eq!(r.logs_with("REQ ").len(), cases.len(), "the good frame before each bad one: {}", r.stdout);
    assert_eq!(r.st("lua_protocol_errors"), cases.len() as u64);
    // the bad frame and what follows it on its connection are dropped: only the first
    // good frame of each connection went through
    let out = r.out_packets();
    for i in 0..cases.len() {
        let data: Vec<&Vec<u8>> =
            out.iter().filter(|p| p.sport == 42100 + i as u16 && !p.payload.is_empty()).map(|p| &p.payload).collect();
        assert_eq!(data, [&ok], "{}", cases[i].0);
    }
}

#[test]
fn modbus_sample_rules_alert_and_drop() {
    let dir = tempfile::tempdir().unwrap();
    let mut pkts = Vec::new();
    // 1. a write to a protected register (1500): alert, connection dropped
    let mut s = Session::new(42200, 502);
    s.handshake()
        .send(0, &mbap(1, 1, &[6, 0x00, 0x10, 0, 1]))
        .send(1, &mbap(1, 1, &[6, 0x00, 0x10, 0, 1]))
        .send(0, &mbap(2, 1, &[16, 0x05, 0xdc, 0, 1, 2, 0, 9]))
        .send(0, &mbap(3, 1, &[3, 0, 0, 0, 1]))
        .close();
    pkts.extend(s.pkts.clone());
    // 2. an unknown function code: alert only
    let mut u = Session::new(42201, 502);
    u.handshake().send(0, &mbap(1, 3, &[43, 14, 1, 0])).send(1, &mbap(1, 3, &[0xab, 1])).close();
    pkts.extend(u.pkts.clone());
    // 3. a unit id not allowed: alert, dropped
    let mut b = Session::new(42202, 502);
    b.handshake().send(0, &mbap(1, 99, &[3, 0, 0, 0, 1])).close();
    pkts.extend(b.pkts.clone());
    // a write outside the protected range goes through
    let mut g = Session::new(42203, 502);
    g.handshake().send(0, &mbap(1, 1, &[16, 0x07, 0xd0, 0, 1, 2, 0, 9])).send(1, &mbap(1, 1, &[16, 0x07, 0xd0, 0, 1])).close();
    pkts.extend(g.pkts.clone());
    let input = write_pcap(dir.path(), "modbus_rules.pcap", pkts);
    let r = run_file(&sample("modbus_rules.lua"), &input, None);
    assert_eq!(
        r.alert_descriptions(),
        [
            "modbus: write to protected registers 1500-1500 (unit 1)",
            "modbus: unknown function code 43 (unit 3)",
            "modbus: unit id 99 not allowed",
        ],
        "{}",
        r.stdout
    );
    let out = r.out_packets();
    let sent = |port: u16, b: &[u8]| out.iter().any(|p| p.sport == port && p.payload == b);
    assert!(sent(42200, &mbap(1, 1, &[6, 0x00, 0x10, 0, 1])), "the first write passes");
    assert!(!sent(42200, &mbap(2, 1, &[16, 0x05, 0xdc, 0, 1, 2, 0, 9])), "the protected write is dropped");
    assert!(!sent(42200, &mbap(3, 1, &[3, 0, 0, 0, 1])), "and the connection after it");
    assert!(sent(42201, &mbap(1, 3, &[43, 14, 1, 0])), "unknown code: alert only");
    assert!(!sent(42202, &mbap(1, 99, &[3, 0, 0, 0, 1])));
    assert!(sent(42203, &mbap(1, 1, &[16, 0x07, 0xd0, 0, 1, 2, 0, 9])));
    assert_eq!(r.st("lua_protocol_errors"), 0);
}

#[test]
fn lua_in_place_parsing_false_runs_grammar_callbacks_once_in_haka_order() {
    // a length-prefixed message whose length field has an apply callback; the second
    // message is cut in two by its segments
    let rules = r#"
local tcp_connection = require('protocol/tcp_connection')
local d = haka.dissector.new{ type = tcp_connection.helper.TcpFlowDissector, name = 'lenmsg' }
d:register_event('msg')
d.grammar = haka.grammar.new('lenmsg', function ()
  msg = record{
    field('len', number(8)):apply(function (v) haka.log("LEN %d", v) end),
    field('body', bytes():count(function (r) return r.len end)),
  }
  export(msg)
end)
d.state_machine = haka.state_machine.new('lenmsg', function ()
  state_type(BidirectionalState)
  s = state(d.grammar.msg, d.grammar.msg)
  s:on{ event = events.up, execute = function (self, m) self:trigger('msg', m) end }
  initial(s)
end)
d:install_tcp_rule(5555)
haka.rule{ on = haka.dissectors.lenmsg.events.msg, eval = function (x, m) haka.log("MSG %d %s", m.len, m.body:asstring()) end }
"#;
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::new(42400, 5555);
    s.handshake().send(0, b"\x03abc").send(0, b"\x04wx").send(0, b"yz").close();
    let input = write_pcap(dir.path(), "lenmsg.pcap", s.pkts.clone());
    let events = |r: &Run| -> Vec<String> {
        r.logs().iter().filter(|l| l.starts_with("LEN ") || l.starts_with("MSG ")).cloned().collect()
    };
    // default: the cut message's callback ran in the in-place attempt, then in the stream
    let r = run(rules, &input, None);
    assert_eq!(events(&r), ["LEN 3", "MSG 3 abc", "LEN 4", "LEN 4", "MSG 4 wxyz"], "{}", r.stdout);
    // Haka's order: every message through the stream, each callback once
    let r = run(rules, &input, Some("[rules]\nlua_in_place_parsing = false\n"));
    assert_eq!(events(&r), ["LEN 3", "MSG 3 abc", "LEN 4", "MSG 4 wxyz"], "{}", r.stdout);
    assert_eq!(r.st("lua_protocol_errors"), 0);
}

#[test]
fn modbus_rule_writes_go_into_the_frames_in_place_and_through_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let rules = format!(
        r#"
local modbus = dofile("{}")
-- writes to register 9 are redirected to register 10, values capped at 100
haka.rule{{ on = haka.dissectors.modbus.events.request, eval = function (mb, req)
  if req.function_code == 6 and req.address == 9 then
    req.address = 10
    if req.value > 100 then req.value = 100 end
  end
end }}
"#,
        sample("modbus.lua").display()
    );
    let w = mbap(1, 1, &[6, 0x00, 0x09, 0x01, 0x00]);
    let w2 = mbap(2, 1, &[6, 0x00, 0x09, 0x00, 0x05]);
    let mut s = Session::new(42300, 502);
    // the first whole in its segment (in place), the second cut in two (the stream)
    s.handshake().send(0, &w).send(0, &w2[..5]).send(0, &w2[5..]).close();
    let input = write_pcap(dir.path(), "modbus_write.pcap", s.pkts.clone());
    // checksums recomputed
    let r = run(&rules, &input, Some("[tcp]\nedit_checksum = \"recompute\"\n"));
    let out = r.out_packets();
    assert!(out.iter().all(|p| p.checksums_ok), "valid checksums");
    let client = stream_of(&out, true);
    assert_eq!(client, [mbap(1, 1, &[6, 0x00, 0x0a, 0x00, 0x64]), mbap(2, 1, &[6, 0x00, 0x0a, 0x00, 0x05])].concat());
    assert_eq!(r.st("lua_protocol_errors"), 0);
    // the default incremental update too: the bytes written in place are put back before
    // the edits apply, so the update sees what changed
    let r = run(&rules, &input, None);
    let out = r.out_packets();
    assert!(out.iter().all(|p| p.checksums_ok), "valid checksums (incremental update)");
    assert_eq!(stream_of(&out, true), client);
}
