//! The SMTP dissector written in Lua (rules/smtp.lua) and its spam filter
//! (rules/smtp_spam.lua), through hakapcap on constructed conversations: commands and
//! replies split anywhere, multi-line replies, a mail split across segments, malformed
//! lines; and `--dump-dissector-graph`.
mod common;
use common::tcp::*;
use common::*;
use haka_engine::pcapfile::Capture;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

struct Run {
    stdout: String,
    stats: serde_json::Value,
    out: Vec<Pkt>,
    _dir: tempfile::TempDir,
}

impl Run {
    /// The messages of the rules' `haka.log` calls.
    fn logs(&self) -> Vec<String> {
        self.stdout.lines().filter_map(|l| l.strip_prefix("info external: ").map(str::to_owned)).collect()
    }
    fn st(&self, k: &str) -> u64 {
        self.stats["totals"]["stateful"][k].as_u64().unwrap_or_else(|| panic!("no counter {k}"))
    }
    fn alert_descriptions(&self) -> Vec<String> {
        self.stdout.lines().filter_map(|l| l.strip_prefix("\tdescription = ").map(str::to_owned)).collect()
    }
}

/// hakapcap with `rules` (Lua source, beside a copy of rules/smtp.lua and
/// rules/smtp_spam.lua) on the conversations `pkts`.
fn run(rules: &str, pkts: Vec<Vec<u8>>) -> Run {
    run_conf(rules, pkts, "")
}

/// The same, with more config lines in `[rules]`.
fn run_conf(rules: &str, pkts: Vec<Vec<u8>>, rules_conf: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    for f in ["smtp.lua", "smtp_spam.lua"] {
        std::fs::copy(root().join("rules").join(f), dir.path().join(f)).unwrap();
    }
    let r = dir.path().join("rules.lua");
    std::fs::write(&r, rules).unwrap();
    let input = write_pcap(dir.path(), "in.pcap", pkts);
    let (out, stats, conf) = (dir.path().join("out.pcap"), dir.path().join("stats.json"), dir.path().join("haka.toml"));
    // (a budget only a runaway rule exceeds: the tests run in parallel on few cores)
    std::fs::write(&conf, format!("[rules]\ninstruction_budget = 30000000000\n{rules_conf}\n")).unwrap();
    let o = hakapcap_to(&r, &conf, &input, &out, &stats, &[]);
    let cap = Capture::read(&out).unwrap();
    let run = Run {
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stats: read_json(&stats),
        out: cap.packets.iter().filter_map(|f| parse(f)).collect(),
        _dir: dir,
    };
    assert_eq!(run.stats["mempool"]["in_use"], 0, "mbuf leak");
    run
}

/// Logs every event of the dissector.
const LOG_RULES: &str = r#"
local smtp = require('smtp')
smtp.install_tcp_rule(25)
smtp.install_tcp_rule(2525)
haka.rule{ on = smtp.events.command, eval = function (flow, cmd)
  haka.log("CMD %s|%s", cmd.command, tostring(cmd.parameter))
end }
haka.rule{ on = smtp.events.response, eval = function (flow, resp)
  local lines = {}
  for i, r in ipairs(resp.responses) do lines[i] = r.code .. r.sep .. r.parameter end
  haka.log("RESP %s %s", resp.code, table.concat(lines, "|"))
end }
haka.rule{ on = smtp.events.mail_content, options = { streamed = true }, eval = function (flow, iter)
  local parts = {}
  for sub in iter:foreach_available() do parts[#parts + 1] = sub:asstring() end
  haka.log("MAIL %s", (table.concat(parts):gsub('\r', '\\r'):gsub('\n', '\\n')))
end }
haka.rule{ on = smtp.events.protocol_error, eval = function (flow, err)
  haka.log("PERR %s", tostring(err))
end }
"#;

const BODY: &[u8] = b"From: a@example\r\nSubject: hello\r\n\r\nfirst line of the body\r\n..a stuffed dot\r\nlast line\r\n";

/// A whole mail transaction: greeting, EHLO with a multi-line reply, MAIL, RCPT, DATA,
/// content, QUIT; every client and server line cut into segments of `mss` bytes.
fn transaction(cport: u16, sport: u16, body: &[u8], mss: usize) -> Session {
    let mut s = Session::new(cport, sport);
    s.handshake()
        .send_split(1, b"220 mx.example ESMTP ready\r\n", mss)
        .send_split(0, b"EHLO client.example\r\n", mss)
        .send_split(1, b"250-mx.example\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n250 HELP\r\n", mss)
        // (pipelined: both commands in one go, both replies in one go)
        .send_split(0, b"mail FROM:<a@example>\r\nrcpt TO:<b@example>\r\n", mss)
        .send_split(1, b"250 OK\r\n250 OK\r\n", mss)
        .send_split(0, b"DATA\r\n", mss)
        .send_split(1, b"354 End data with <CR><LF>.<CR><LF>\r\n", mss);
    let mut content = body.to_vec();
    content.extend_from_slice(b".\r\n");
    s.send_split(0, &content, mss)
        .send_split(1, b"250 OK queued\r\n", mss)
        .send_split(0, b"QUIT\r\n", mss)
        .send_split(1, b"221 Bye\r\n", mss)
        .close();
    s
}

fn expected_logs(body: &[u8]) -> Vec<String> {
    [
        "RESP 220 220 mx.example ESMTP ready",
        "CMD EHLO|client.example",
        "RESP 250 250-mx.example|250-SIZE 1000000|250-8BITMIME|250 HELP",
        "CMD mail|FROM:<a@example>",
        "CMD rcpt|TO:<b@example>",
        "RESP 250 250 OK",
        "RESP 250 250 OK",
        "CMD DATA|nil",
        "RESP 354 354 End data with <CR><LF>.<CR><LF>",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("MAIL {}", escaped(body)),
        "RESP 250 250 OK queued".into(),
        "CMD QUIT|nil".into(),
        "RESP 221 221 Bye".into(),
    ])
    .collect()
}

/// CR and LF as the rules log them (\r, \n).
fn escaped(b: &[u8]) -> String {
    String::from_utf8_lossy(b).replace('\r', "\\r").replace('\n', "\\n")
}

#[test]
fn smtp_events_whole_and_split_into_tiny_segments() {
    for mss in [1000, 7, 1] {
        let s = transaction(40000, 25, BODY, mss);
        let input = s.pkts.clone();
        let r = run(LOG_RULES, input.clone());
        assert_eq!(r.logs(), expected_logs(BODY), "mss {mss}:\n{}", r.stdout);
        assert_eq!(r.st("lua_protocol_errors"), 0);
        // everything passes, unchanged
        assert_eq!(r.out.len(), input.len(), "mss {mss}");
        let sent: Vec<Pkt> = input.iter().filter_map(|f| parse(f)).collect();
        assert_eq!(stream_of(&r.out, 40000, true), stream_of(&sent, 40000, true));
        assert_eq!(stream_of(&r.out, 40000, false), stream_of(&sent, 40000, false));
    }
}

#[test]
fn smtp_on_another_port_and_auth_exchange() {
    let mut s = Session::new(40010, 2525);
    s.handshake()
        .send(1, b"220 ready\r\n")
        .send(0, b"EHLO c\r\n")
        .send(1, b"250-mx\r\n250 AUTH LOGIN PLAIN\r\n")
        .send(0, b"AUTH LOGIN\r\n")
        .send(1, b"334 VXNlcm5hbWU6\r\n")
        .send(0, b"dXNlcg==\r\n")
        .send(1, b"334 UGFzc3dvcmQ6\r\n")
        .send(0, b"cGFzcw==\r\n")
        .send(1, b"235 2.7.0 Authentication successful\r\n")
        .send(0, b"QUIT\r\n")
        .send(1, b"221 Bye\r\n")
        .close();
    let r = run(LOG_RULES, s.pkts.clone());
    assert_eq!(
        r.logs(),
        [
            "RESP 220 220 ready",
            "CMD EHLO|c",
            "RESP 250 250-mx|250 AUTH LOGIN PLAIN",
            "CMD AUTH|LOGIN",
            "RESP 334 334 VXNlcm5hbWU6",
            "RESP 334 334 UGFzc3dvcmQ6",
            "RESP 235 235 2.7.0 Authentication successful",
            "CMD QUIT|nil",
            "RESP 221 221 Bye",
        ],
        "{}",
        r.stdout
    );
    assert_eq!(r.st("lua_protocol_errors"), 0);
}

/// BDAT (CHUNKING): the chunks' bytes are the mail content, split anywhere, with the next
/// command pipelined right after the last chunk.
#[test]
fn smtp_bdat_chunks_are_mail_content() {
    let mut s = Session::new(40050, 25);
    s.handshake()
        .send(1, b"220 ready\r\n")
        .send(0, b"EHLO c\r\n")
        .send(1, b"250-mx\r\n250 CHUNKING\r\n")
        .send(0, b"MAIL FROM:<a@example>\r\nRCPT TO:<b@example>\r\n")
        .send(1, b"250 OK\r\n250 OK\r\n")
        .send(0, b"BDAT 20\r\nSubject: x\r\n")
        .send(0, b"\r\nhello ")
        .send(1, b"250 20 octets\r\n")
        .send(0, b"BDAT 8 LAST\r\n")
        .send(0, b"world.\r\nQUIT\r\n")
        .send(1, b"250 8 octets, queued\r\n221 Bye\r\n")
        .close();
    let r = run(LOG_RULES, s.pkts.clone());
    assert_eq!(
        r.logs(),
        [
            "RESP 220 220 ready",
            "CMD EHLO|c",
            "RESP 250 250-mx|250 CHUNKING",
            "CMD MAIL|FROM:<a@example>",
            "CMD RCPT|TO:<b@example>",
            "RESP 250 250 OK",
            "RESP 250 250 OK",
            "CMD BDAT|20",
            "RESP 250 250 20 octets",
            "CMD BDAT|8 LAST",
            "MAIL Subject: x\\r\\n\\r\\nhello world.\\r\\n",
            "CMD QUIT|nil",
            "RESP 250 250 8 octets, queued",
            "RESP 221 221 Bye",
        ],
        "{}",
        r.stdout
    );
    assert_eq!(r.st("lua_protocol_errors"), 0);
}

/// Each malformed conversation: one protocol error, its event, and the connection dropped
/// from the bad segment on (the bytes after it never leave).
#[test]
fn smtp_malformed_input_is_a_protocol_error_and_drops() {
    let long = vec![b'a'; 3000];
    let mut long_cmd = b"MAIL FROM:".to_vec();
    long_cmd.extend_from_slice(&long);
    long_cmd.extend_from_slice(b"\r\n");
    let cases: Vec<(&str, Session, &str)> = vec![
        ("bad reply code", {
            let mut s = Session::new(40020, 25);
            s.handshake().send(1, b"220 hi\r\n").send(0, b"EHLO x\r\n").send(1, b"25x oops\r\n").send(0, b"NEXT\r\n");
            s
        }, "for field 'code' in reply_line"),
        ("client before the greeting", {
            let mut s = Session::new(40021, 25);
            s.handshake().send(0, b"EHLO x\r\n").send(1, b"220 hi\r\n").send(0, b"NEXT\r\n");
            s
        }, "smtp: unexpected client data in state greeting"),
        ("command line too long, in segments", {
            let mut s = Session::new(40022, 25);
            s.handshake().send(1, b"220 hi\r\n").send_split(0, &long_cmd, 500).send(0, b"NEXT\r\n");
            s
        }, "in command"),
        ("binary command", {
            let mut s = Session::new(40023, 25);
            s.handshake().send(1, b"220 hi\r\n").send(0, b"\x00\x01\x02\r\n").send(0, b"NEXT\r\n");
            s
        }, "for field 'command' in command"),
        ("invalid BDAT", {
            let mut s = Session::new(40025, 25);
            s.handshake().send(1, b"220 hi\r\n").send(0, b"BDAT many\r\n").send(0, b"NEXT\r\n");
            s
        }, "smtp: invalid BDAT parameter"),
        ("lone CR in a reply", {
            let mut s = Session::new(40024, 25);
            s.handshake().send(1, b"220 hi\rthere\r\n").send(0, b"NEXT\r\n");
            s
        }, "in reply_line"),
    ];
    for (what, s, err) in cases {
        let r = run(LOG_RULES, s.pkts.clone());
        let perr: Vec<String> = r.logs().into_iter().filter(|l| l.starts_with("PERR ")).collect();
        assert_eq!(perr.len(), 1, "{what}: {}", r.stdout);
        assert!(perr[0].contains(err), "{what}: {perr:?}");
        assert_eq!(r.st("lua_protocol_errors"), 1, "{what}");
        assert!(!r.out.iter().any(|p| p.payload.windows(4).any(|w| w == b"NEXT")), "{what}: dropped after the error");
    }
}

/// A connection that ends in the middle of a mail: the streamed rules get what came, and
/// the end of the mail.
#[test]
fn smtp_connection_closed_mid_mail_ends_the_mail() {
    let mut s = Session::new(40070, 25);
    s.handshake()
        .send(1, b"220 hi\r\n")
        .send(0, b"HELO x\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n")
        .send(1, b"250 hi\r\n250 OK\r\n250 OK\r\n354 go\r\n")
        .send(0, b"Subject: cut\r\n\r\nfirst\r\nsec")
        .close();
    // (and one cut at the end of a line)
    let mut t = Session::new(40071, 25);
    t.handshake()
        .send(1, b"220 hi\r\n")
        .send(0, b"HELO x\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n")
        .send(1, b"250 hi\r\n250 OK\r\n250 OK\r\n354 go\r\n")
        .send(0, b"Subject: cut2\r\n\r\nfirst\r\n")
        .close();
    let mut pkts = s.pkts.clone();
    pkts.extend(t.pkts.clone());
    let r = run(LOG_RULES, pkts);
    let mail: Vec<String> = r.logs().into_iter().filter(|l| l.starts_with("MAIL ")).collect();
    assert_eq!(
        mail,
        ["MAIL Subject: cut\\r\\n\\r\\nfirst\\r\\nsec", "MAIL Subject: cut2\\r\\n\\r\\nfirst\\r\\n"],
        "{}",
        r.stdout
    );
    assert_eq!(r.st("lua_protocol_errors"), 0);
}

/// A reply that never ends (continuation lines forever) is held only up to
/// `[rules] streamed_hold_kb`: then a protocol error, the connection dropped.
#[test]
fn smtp_endless_multiline_reply_is_bounded() {
    let mut s = Session::new(40060, 25);
    s.handshake().send(1, b"220 hi\r\n").send(0, b"EHLO x\r\n");
    for _ in 0..40 {
        s.send(1, &b"250-this reply goes on and on\r\n".repeat(32));
    }
    let r = run_conf(LOG_RULES, s.pkts.clone(), "streamed_hold_kb = 16");
    let perr: Vec<String> = r.logs().into_iter().filter(|l| l.starts_with("PERR ")).collect();
    assert_eq!(perr, ["PERR more than 16384 bytes held in the down stream"], "{}", r.stdout);
    assert_eq!(r.st("lua_protocol_errors"), 1);
    // dropped from the segment that went over: about 16 KiB of the 40 KiB left
    let down = stream_of(&r.out, 40060, false);
    assert!(down.len() > 12000 && down.len() <= 16384, "{}", down.len());
}

/// rules/smtp_spam.lua: the mail with a banned keyword (split across two segments) is
/// reset before its end reaches the server, with an alert naming the rule; the other mail
/// passes byte for byte.
#[test]
fn smtp_spam_rule_resets_banned_mail_and_passes_others() {
    let spam = b"Subject: offer\r\n\r\nget your VIAGRA today\r\nbye\r\n";
    let mut pkts = transaction(40030, 25, BODY, 1000).pkts;
    // the keyword cut in two: "Subject: offer\r\n\r\nget your VIA" | "GRA today..."
    pkts.extend(transaction(40031, 25, spam, 30).pkts);
    let r = run("require('smtp_spam')", pkts.clone());
    let alerts = r.alert_descriptions();
    assert_eq!(alerts, ["smtp_spam: banned keyword 'viagra' in a mail, connection reset"], "{}", r.stdout);
    assert_eq!(r.st("resets_sent"), 2, "RST to both ends");
    // the good mail: both streams intact
    let sent: Vec<Pkt> = pkts.iter().filter_map(|f| parse(f)).collect();
    assert_eq!(stream_of(&r.out, 40030, true), stream_of(&sent, 40030, true));
    assert_eq!(stream_of(&r.out, 40030, false), stream_of(&sent, 40030, false));
    // the spam: the server got the mail up to the keyword's first half, never its end,
    // then a RST
    let to_server = stream_of(&r.out, 40031, true);
    let text = String::from_utf8_lossy(&to_server);
    assert!(text.contains("DATA\r\n") && text.ends_with("get your VIA"), "{text:?}");
    assert!(!text.contains("\r\n.\r\n"), "the end of the mail reached the server");
    let rst_to_server = r.out.iter().filter(|p| p.flags & RST != 0 && p.dport == 25 && p.sport == 40031).count();
    let rst_to_client = r.out.iter().filter(|p| p.flags & RST != 0 && p.sport == 25 && p.dport == 40031).count();
    assert_eq!((rst_to_server, rst_to_client), (1, 1));
    assert!(r.out.iter().all(|p| p.checksums_ok));
}

fn dot_ok(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.starts_with("digraph "), "{}: {text}", path.display());
    assert_eq!(text.matches('{').count(), text.matches('}').count(), "{}: braces", path.display());
    if std::process::Command::new("dot").arg("-V").output().is_ok() {
        let o = std::process::Command::new("dot").arg("-Tsvg").arg(path).output().unwrap();
        assert!(o.status.success(), "dot -Tsvg {}: {}", path.display(), String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("<svg"));
    }
}

#[test]
fn dump_dissector_graph_writes_each_grammar_and_state_machine() {
    let dir = tempfile::tempdir().unwrap();
    let graphs = dir.path().join("graphs");
    let rules = root().join("rules/smtp_spam.lua");
    // haka: loads the rules, writes the files, exits (no EAL, no ports)
    let o = haka(&["-r", rules.to_str().unwrap(), &format!("--dump-dissector-graph={}", graphs.display())]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("dissector graphs: 2 file(s)"), "{out}");
    let g = graphs.join("smtp-grammar.dot");
    let sm = graphs.join("smtp-state-machine.dot");
    dot_ok(&g);
    dot_ok(&sm);
    let sm_text = std::fs::read_to_string(&sm).unwrap();
    for edge in ["greeting -> session [label=\"down\"]", "session -> data [label=\"down\"]", "data -> session [label=\"up\"]", "session -> finish"] {
        assert!(sm_text.contains(edge), "{edge}: {sm_text}");
    }
    let g_text = std::fs::read_to_string(&g).unwrap();
    for rule in ["cluster_command", "cluster_reply", "cluster_auth_line", "DGToken"] {
        assert!(g_text.contains(rule), "{rule}: {g_text}");
    }
    // hakapcap: the files, then the run
    let cap = dir.path().join("in.pcap");
    write_capture(&cap, transaction(40040, 25, BODY, 1000).pkts);
    let o = hakapcap(&[rules.to_str().unwrap(), cap.to_str().unwrap(), &format!("--dump-dissector-graph={}", dir.path().display())]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(" packets, "));
    dot_ok(&dir.path().join("smtp-state-machine.dot"));
    // rules without grammar nor state machine: no file, said so
    let empty = empty_rules(dir.path());
    let o = haka(&["-r", empty.to_str().unwrap(), &format!("--dump-dissector-graph={}", dir.path().join("none").display())]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("0 file(s) in"), "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(std::fs::read_dir(dir.path().join("none")).unwrap().count(), 0);
    // no rules: a one-line error
    let o = haka(&["--dump-dissector-graph"]);
    assert!(!o.status.success());
    assert_eq!(stderr_lines(&o), ["haka: error: --dump-dissector-graph: no rules file (-r FILE or [rules] file)"]);
}
