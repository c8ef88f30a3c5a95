use super::format::{self, ctime_string, eve_timestamp};
use super::*;
use crate::test_util::TempFile;

use std::sync::Mutex;

/// 2023-11-14 22:13:20.25 UTC, a Tuesday.
const T: f64 = 1_700_000_000.25;

fn full_alert() -> Alert {
    Alert {
        id: 1,
        time_secs: T,
        start_time: Some(1_699_999_990.0),
        end_time: Some(1_700_000_000.0),
        description: Some("packet sent from blacklisted address".into()),
        severity: Some("high".into()),
        confidence: Some("medium".into()),
        completion: Some("failed".into()),
        method_description: Some("Spoofing".into()),
        method_ref: vec!["CVE-2014-0001".into(), "https://example.org/1".into()],
        sources: vec!["192.168.10.10".into()],
        targets: vec!["10.0.0.1".into(), "tcp/80".into()],
        refs: vec![3, 4],
        flow: Some(FlowInfo {
            proto: 6,
            src: "192.168.10.10".into(),
            sport: 40000,
            dst: "10.0.0.1".into(),
            dport: 80,
        }),
        direction: Some("up".into()),
        worker: 2,
        update: false,
        siem: Siem::default(),
        console: Vec::new(),
    }
}

fn small_alert(worker: usize, n: u64) -> Alert {
    Alert {
        id: alert_id(worker, n),
        time_secs: T,
        description: Some(format!("alert {n}")),
        severity: Some("low".into()),
        worker,
        ..Alert::default()
    }
}

/// `name` in a directory of its own (names are unique among the tests), removed after.
fn tmp_path(name: &str) -> TempFile {
    TempFile::in_own_dir(&format!("haka-alert-test-{}-{name}", std::process::id()), name)
}

#[derive(Clone, Default)]
struct SharedSink(Arc<Mutex<Vec<u8>>>);

impl Write for SharedSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SharedSink {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[test]
fn time_formats() {
    assert_eq!(ctime_string(0.0), "Thu Jan  1 00:00:00 1970");
    assert_eq!(ctime_string(T), "Tue Nov 14 22:13:20 2023");
    assert_eq!(ctime_string(951_782_400.0), "Tue Feb 29 00:00:00 2000");
    assert_eq!(ctime_string(-1.0), "Wed Dec 31 23:59:59 1969");
    assert_eq!(eve_timestamp(T), "2023-11-14T22:13:20.250000+0000");
    assert_eq!(
        eve_timestamp(1_700_000_000.9999996),
        "2023-11-14T22:13:21.000000+0000"
    );
    assert_eq!(format::syslog_timestamp(1_699_142_400.0), "Nov  5 00:00:00");
}

#[test]
fn pretty_matches_haka_layout() {
    let expected = "alert: id = 1\n\
        \ttime = Tue Nov 14 22:13:20 2023\n\
        \tstart time = Tue Nov 14 22:13:10 2023\n\
        \tend time = Tue Nov 14 22:13:20 2023\n\
        \tseverity = high\n\
        \tconfidence = medium\n\
        \tcompletion = failed\n\
        \tdescription = packet sent from blacklisted address\n\
        \tmethod = {\n\
        \t\tdescription = Spoofing\n\
        \t\tref = { CVE-2014-0001, https://example.org/1 }\n\
        \t}\n\
        \tsources = {\n\
        \t\taddress: 192.168.10.10\n\
        \t}\n\
        \ttargets = {\n\
        \t\taddress: 10.0.0.1\n\
        \t\tservice: tcp/80\n\
        \t}\n\
        \trefs = { 3, 4 }\n";
    assert_eq!(format::pretty(&full_alert()), expected);
}

#[test]
fn pretty_minimal_and_update() {
    let mut a = Alert {
        id: 7,
        time_secs: T,
        ..Alert::default()
    };
    assert_eq!(
        format::pretty(&a),
        "alert: id = 7\n\ttime = Tue Nov 14 22:13:20 2023\n"
    );
    a.update = true;
    a.confidence = Some("0.7".into());
    assert_eq!(
        format::pretty(&a),
        "alert: update id = 7\n\ttime = Tue Nov 14 22:13:20 2023\n\tconfidence = 0.7\n"
    );
    // Method with only a description: no ref line.
    a.method_description = Some("m".into());
    assert!(format::pretty(&a).ends_with("\tmethod = {\n\t\tdescription = m\n\t}\n"));
}

#[test]
fn oneline_and_syslog_line() {
    let a = full_alert();
    let line = format::oneline(&a);
    assert!(!line.contains('\n'));
    assert!(line.starts_with(
        "alert: id = 1 time = Tue Nov 14 22:13:20 2023 start time = Tue Nov 14 22:13:10 2023 "
    ));
    // Haka's indent " " + "\t" for nested items.
    assert!(line.contains(" sources = { \taddress: 192.168.10.10 }"));
    assert!(line.ends_with(" refs = { 3, 4 }"));
    assert_eq!(format::syslog_message(&a), line);

    let dgram = format::syslog_datagram(&a, 42, T);
    assert_eq!(format::SYSLOG_PRI, 133);
    assert_eq!(dgram, format!("<133>Nov 14 22:13:20 haka[42]: {line}"));

    let mut u = a.clone();
    u.update = true;
    assert!(format::syslog_message(&u).starts_with("alert: update id = 1 "));
}

#[test]
fn eve_line_has_every_field() {
    let line = format::eve_json(&full_alert());
    assert!(!line.contains('\n'));
    assert!(line.starts_with(
        "{\"timestamp\":\"2023-11-14T22:13:20.250000+0000\",\"event_type\":\"alert\""
    ));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["event_type"], "alert");
    assert_eq!(v["src_ip"], "192.168.10.10");
    assert_eq!(v["src_port"], 40000);
    assert_eq!(v["dest_ip"], "10.0.0.1");
    assert_eq!(v["dest_port"], 80);
    assert_eq!(v["proto"], "TCP");
    assert_eq!(v["direction"], "up");
    assert_eq!(v["worker"], 2);
    assert!(v.get("update").is_none());
    let al = &v["alert"];
    assert_eq!(al["id"], 1);
    assert_eq!(al["severity"], "high");
    assert_eq!(al["confidence"], "medium");
    assert_eq!(al["completion"], "failed");
    assert_eq!(al["description"], "packet sent from blacklisted address");
    assert_eq!(al["start_time"], "2023-11-14T22:13:10.000000+0000");
    assert_eq!(al["end_time"], "2023-11-14T22:13:20.000000+0000");
    assert_eq!(al["method"]["description"], "Spoofing");
    assert_eq!(
        al["method"]["ref"],
        serde_json::json!(["CVE-2014-0001", "https://example.org/1"])
    );
    assert_eq!(al["sources"], serde_json::json!(["192.168.10.10"]));
    assert_eq!(al["targets"], serde_json::json!(["10.0.0.1", "tcp/80"]));
    assert_eq!(al["ref"], serde_json::json!([3, 4]));
}

#[test]
fn eve_line_minimal_update_and_protos() {
    let mut a = Alert {
        id: alert_id(3, 9),
        time_secs: T,
        description: Some("quote \" and \\ and \u{1}".into()),
        worker: 3,
        update: true,
        ..Alert::default()
    };
    let v: serde_json::Value = serde_json::from_str(&format::eve_json(&a)).unwrap();
    assert_eq!(v["update"], true);
    assert!(v.get("src_ip").is_none() && v.get("proto").is_none());
    assert_eq!(v["alert"]["id"], (3u64 << 48) | 9);
    assert_eq!(v["alert"]["description"], "quote \" and \\ and \u{1}");
    assert!(v["alert"].get("severity").is_none());
    assert_eq!(v["alert"]["ref"], serde_json::json!([]));
    for (p, want) in [
        (17u8, serde_json::json!("UDP")),
        (1, "ICMP".into()),
        (47, 47.into()),
    ] {
        a.flow = Some(FlowInfo {
            proto: p,
            ..FlowInfo::default()
        });
        let v: serde_json::Value = serde_json::from_str(&format::eve_json(&a)).unwrap();
        assert_eq!(v["proto"], want);
    }
}

#[test]
fn ids_are_unique_per_worker() {
    let mut g0 = AlertIdGen::new(0);
    let mut g1 = AlertIdGen::new(1);
    assert_eq!(g0.next_id(), 1);
    assert_eq!(g0.next_id(), 2);
    assert_eq!(g1.next_id(), (1 << 48) | 1);
    assert_ne!(alert_id(1, 5), alert_id(2, 5));
}

#[test]
fn queue_full_counts_lost_without_blocking() {
    let q = AlertQueue::new(64);
    assert_eq!(q.capacity(), 64);
    for i in 0..64 {
        assert!(q.push(small_alert(0, i)));
    }
    assert!(!q.push(small_alert(0, 64)));
    assert_eq!((q.pushed(), q.lost(), q.len()), (64, 1, 64));
    assert_eq!(q.pop().unwrap().id, alert_id(0, 0));
}

#[test]
fn queue_two_producers_lost_plus_drained() {
    let q = Arc::new(AlertQueue::new(64));
    let done = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (q, done) = (Arc::clone(&q), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut n = 0u64;
            loop {
                match q.pop() {
                    Some(_) => n += 1,
                    None if done.load(Ordering::Acquire) && q.is_empty() => return n,
                    None => std::thread::yield_now(),
                }
            }
        })
    };
    let producers: Vec<_> = (0..2)
        .map(|w| {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                let t0 = Instant::now();
                for i in 0..1000 {
                    q.push(small_alert(w, i));
                }
                t0.elapsed()
            })
        })
        .collect();
    for p in producers {
        // 1000 pushes without blocking: far below a second even on a loaded machine.
        assert!(p.join().unwrap() < Duration::from_secs(5));
    }
    done.store(true, Ordering::Release);
    let drained = consumer.join().unwrap();
    assert_eq!(q.lost() + drained, 2000);
    assert_eq!(q.pushed(), drained);
}

#[test]
fn writer_drains_everything_on_finish() {
    let q = Arc::new(AlertQueue::new(1024));
    let sink = SharedSink::default();
    let w = AlertWriter::spawn_with_stdout_sink(
        Arc::clone(&q),
        &AlertsConfig::default(),
        Box::new(sink.clone()),
    )
    .unwrap();
    for i in 1..=1000 {
        assert!(q.push(small_alert(0, i)));
    }
    let t = w.finish();
    assert_eq!(t.pushed, 1000);
    assert_eq!(t.lost, 0);
    assert_eq!(t.drained, 1000);
    assert_eq!(t.stdout_written, 1000);
    assert_eq!((t.eve_written, t.syslog_written, t.write_errors), (0, 0, 0));
    let text = sink.text();
    assert_eq!(text.matches("alert: id = ").count(), 1000);
    assert!(
        text.starts_with("alert: id = 1\n\ttime = Tue Nov 14 22:13:20 2023\n\tseverity = low\n")
    );
    assert!(text.ends_with("\tdescription = alert 1000\n"));
}

#[test]
fn writer_counts_lost_when_queue_full() {
    let q = Arc::new(AlertQueue::new(64));
    for i in 0..100 {
        q.push(small_alert(1, i));
    }
    let cfg = AlertsConfig {
        queue_size: 64,
        ..AlertsConfig::default()
    };
    let sink = SharedSink::default();
    let w =
        AlertWriter::spawn_with_stdout_sink(Arc::clone(&q), &cfg, Box::new(sink.clone())).unwrap();
    let t = w.finish();
    assert_eq!(
        (t.pushed, t.lost, t.drained, t.stdout_written),
        (64, 36, 64, 64)
    );
}

#[test]
fn eve_file_written_and_flushed() {
    let path = tmp_path("eve.json");
    let cfg = AlertsConfig {
        stdout: false,
        eve_file: Some(path.clone()),
        ..AlertsConfig::default()
    };
    let q = Arc::new(AlertQueue::new(64));
    let w = AlertWriter::spawn(Arc::clone(&q), &cfg).unwrap();
    for i in 1..=3 {
        q.push(small_alert(0, i));
    }
    // Flushed by the running thread once the queue is empty, before finish().
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .count();
        if n == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "EVE file not flushed: {n} lines");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut full = full_alert();
    full.update = true;
    q.push(full);
    let t = w.finish();
    assert_eq!((t.eve_written, t.stdout_written, t.write_errors), (4, 0, 0));
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4);
    for (i, l) in lines.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["event_type"], "alert");
        if i < 3 {
            assert_eq!(v["alert"]["id"], i as u64 + 1);
        }
    }
    let last: serde_json::Value = serde_json::from_str(lines[3]).unwrap();
    assert_eq!(last["update"], true);
    assert_eq!(last["proto"], "TCP");

    // Appends, like Haka's fopen(file, "a").
    let w = AlertWriter::spawn(Arc::clone(&q), &cfg).unwrap();
    q.push(small_alert(0, 9));
    assert_eq!(w.finish().eve_written, 1);
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 5);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn bad_eve_path_is_one_line_error() {
    let cfg = AlertsConfig {
        eve_file: Some(PathBuf::from("/nonexistent-haka-dir/sub/eve.json")),
        ..AlertsConfig::default()
    };
    let err = AlertWriter::spawn(Arc::new(AlertQueue::new(64)), &cfg)
        .err()
        .expect("must fail");
    assert!(
        err.starts_with("alerts.eve_file = /nonexistent-haka-dir/sub/eve.json: cannot open:"),
        "{err}"
    );
    assert!(!err.contains('\n'));
}

#[test]
fn syslog_sink_sends_datagrams() {
    let path = tmp_path("log.sock");
    let server = UnixDatagram::bind(&path).unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sink = SyslogSink::new(&path);
    let a = full_alert();
    sink.send(&a).unwrap();
    let mut buf = vec![0u8; 65536];
    let n = server.recv(&mut buf).unwrap();
    let got = std::str::from_utf8(&buf[..n]).unwrap();
    assert!(got.starts_with("<133>"), "{got}");
    assert!(got.ends_with(&format!(
        "haka[{}]: {}",
        std::process::id(),
        format::oneline(&a)
    )));
    drop(server);
    let _ = std::fs::remove_file(&path);

    // No syslog daemon: not fatal, counted as an error.
    let mut none = SyslogSink::new(&tmp_path("absent.sock"));
    assert!(none.send(&a).is_err());
}

#[test]
fn config_defaults_parse_and_validate() {
    let d = AlertsConfig::default();
    assert!(d.stdout && !d.syslog && d.eve_file.is_none() && d.queue_size == 4096);
    assert_eq!(d.validate(), Ok(()));

    let c: AlertsConfig = toml::from_str(
        "stdout = false\neve_file = \"/var/log/haka/eve.json\"\nsyslog = true\nqueue_size = 128\n",
    )
    .unwrap();
    assert_eq!(
        c,
        AlertsConfig {
            stdout: false,
            eve_file: Some(PathBuf::from("/var/log/haka/eve.json")),
            syslog: true,
            queue_size: 128,
            redis: None,
            ..AlertsConfig::default()
        }
    );
    let f: AlertsConfig = toml::from_str("syslog_format = \"haka\"\nsyslog_socket = \"/run/x.sock\"").unwrap();
    assert_eq!((f.syslog_format, f.syslog_socket.to_str()), (SyslogFormat::Haka, Some("/run/x.sock")));
    assert!(toml::from_str::<AlertsConfig>("syslog_format = \"json\"").is_err());
    let r: AlertsConfig = toml::from_str("[redis]\nurl = \"redis://127.0.0.1:6380/1\"\nmode = \"stream\"\nkey = \"k\"\n").unwrap();
    let rc = r.redis.as_ref().unwrap();
    assert_eq!((rc.mode, rc.key.as_str(), rc.max_pending), (super::redis::RedisMode::Stream, "k", 65536));
    assert!(r.validate().is_ok());
    let r: AlertsConfig = toml::from_str("[redis]\nurl = \"http://x\"\n").unwrap();
    assert!(r.validate().unwrap_err().contains("alerts.redis.url"));
    let partial: AlertsConfig = toml::from_str("syslog = true").unwrap();
    assert!(partial.stdout && partial.queue_size == 4096);
    assert!(toml::from_str::<AlertsConfig>("colour = true").is_err());

    for bad in [0usize, 32, 100, 4095] {
        let c = AlertsConfig {
            queue_size: bad,
            ..AlertsConfig::default()
        };
        assert_eq!(
            c.validate(),
            Err(format!(
                "alerts.queue_size = {bad}: must be a power of two >= 64"
            ))
        );
    }
    let big = AlertsConfig {
        queue_size: 1 << 25,
        ..AlertsConfig::default()
    };
    assert!(big
        .validate()
        .unwrap_err()
        .starts_with("alerts.queue_size = 33554432:"));
    let empty = AlertsConfig {
        eve_file: Some(PathBuf::new()),
        ..AlertsConfig::default()
    };
    assert!(empty.validate().unwrap_err().starts_with("alerts.eve_file"));
    // spawn validates too.
    assert!(AlertWriter::spawn(
        Arc::new(AlertQueue::new(64)),
        &AlertsConfig { queue_size: 3, ..d }
    )
    .is_err());
}

#[test]
fn dropping_writer_joins_thread() {
    let q = Arc::new(AlertQueue::new(64));
    let sink = SharedSink::default();
    let w = AlertWriter::spawn_with_stdout_sink(
        Arc::clone(&q),
        &AlertsConfig::default(),
        Box::new(sink.clone()),
    )
    .unwrap();
    q.push(small_alert(0, 1));
    drop(w);
    assert_eq!(sink.text().matches("alert: id = ").count(), 1);
}

fn siem_alert() -> Alert {
    let mut a = full_alert();
    a.siem = Siem {
        flow_id: Some(1234567),
        in_iface: Some("net_tap0".into()),
        rule: Some("http: scanner".into()),
        signature_id: Some(signature_id_of("http: scanner")),
        blocked: true,
        app_proto: Some("http".into()),
        http: Some(HttpMeta {
            hostname: Some("example.org".into()),
            url: Some("/a?b".into()),
            http_user_agent: Some("sqlmap/1.0".into()),
            http_method: Some("GET".into()),
            status: Some(403),
        }),
        dns: None,
        tls: None,
    };
    a
}

#[test]
fn eve_line_siem_fields_in_suricata_layout() {
    let line = format::eve_json(&siem_alert());
    assert!(
        line.starts_with("{\"timestamp\":\"2023-11-14T22:13:20.250000+0000\",\"flow_id\":1234567,\"in_iface\":\"net_tap0\",\"event_type\":\"alert\""),
        "{line}"
    );
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let al = &v["alert"];
    assert_eq!(al["action"], "blocked");
    assert_eq!(al["rule"], "http: scanner");
    assert_eq!(al["signature_id"], signature_id_of("http: scanner"));
    assert_eq!(al["signature"], "packet sent from blacklisted address");
    assert_eq!(al["id"], 1, "Haka's keys kept");
    assert_eq!(v["app_proto"], "http");
    assert_eq!(
        v["http"],
        serde_json::json!({"hostname": "example.org", "url": "/a?b", "http_user_agent": "sqlmap/1.0", "http_method": "GET", "status": 403})
    );
    assert!(v.get("dns").is_none() && v.get("tls").is_none());

    // dns and tls; an alert without flow, rule or app: "allowed", no SIEM keys
    let mut d = siem_alert();
    d.siem.app_proto = Some("dns".into());
    d.siem.http = None;
    d.siem.dns = Some(DnsMeta { kind: "query", rrname: Some("www.example.org".into()), rrtype: Some("AAAA".into()) });
    let v: serde_json::Value = serde_json::from_str(&format::eve_json(&d)).unwrap();
    assert_eq!(v["dns"], serde_json::json!({"type": "query", "rrname": "www.example.org", "rrtype": "AAAA"}));
    d.siem.dns = None;
    d.siem.tls = Some(TlsMeta { sni: Some("blocked.example".into()) });
    let v: serde_json::Value = serde_json::from_str(&format::eve_json(&d)).unwrap();
    assert_eq!(v["tls"], serde_json::json!({"sni": "blocked.example"}));
    let bare: serde_json::Value = serde_json::from_str(&format::eve_json(&small_alert(0, 1))).unwrap();
    assert_eq!(bare["alert"]["action"], "allowed");
    for k in ["flow_id", "in_iface", "app_proto", "http"] {
        assert!(bare.get(k).is_none(), "{k}: {bare}");
    }
    assert!(bare["alert"].get("rule").is_none() && bare["alert"].get("signature_id").is_none());
}

#[test]
fn signature_ids_are_stable_31_bit_hashes() {
    assert_eq!(signature_id_of("a"), signature_id_of("a"));
    assert_ne!(signature_id_of("rules/x.lua:10"), signature_id_of("rules/x.lua:11"));
    // FNV-1a 32 of "a" is 0xe40c292c; the top bit is cleared
    assert_eq!(signature_id_of("a"), 0xe40c_292c & 0x7fff_ffff);
    assert!(signature_id_of("") > 0);
}

#[test]
fn syslog_eve_format_sends_the_eve_line() {
    let path = tmp_path("eve-log.sock");
    let server = UnixDatagram::bind(&path).unwrap();
    server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sink = SyslogSink::with_format(&path, SyslogFormat::Eve);
    let a = siem_alert();
    sink.send(&a).unwrap();
    let mut buf = vec![0u8; 65536];
    let n = server.recv(&mut buf).unwrap();
    let got = std::str::from_utf8(&buf[..n]).unwrap();
    assert!(got.starts_with("<133>"), "{got}");
    assert!(got.ends_with(&format!("haka[{}]: {}", std::process::id(), format::eve_json(&a))), "{got}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn syslog_check_names_the_missing_socket() {
    let mut c = AlertsConfig { syslog: true, syslog_socket: tmp_path("no-such.sock").to_path_buf(), ..AlertsConfig::default() };
    let e = c.check_syslog().unwrap_err();
    assert!(e.starts_with("alerts.syslog = true: ") && e.contains("does not exist") && e.contains("rsyslog"), "{e}");
    assert!(!e.contains('\n'));
    // a regular file is not a socket
    let f = tmp_path("plain-file");
    std::fs::write(&f, b"").unwrap();
    c.syslog_socket = f.to_path_buf();
    assert!(c.check_syslog().unwrap_err().contains("is not a socket"));
    let _ = std::fs::remove_file(&f);
    let s = tmp_path("real.sock");
    let _server = UnixDatagram::bind(&s).unwrap();
    c.syslog_socket = s.to_path_buf();
    assert_eq!(c.check_syslog(), Ok(()));
    c.syslog = false;
    c.syslog_socket = PathBuf::from("/nonexistent/log");
    assert_eq!(c.check_syslog(), Ok(()), "only checked when syslog is on");
    let _ = std::fs::remove_file(&s);
}

#[test]
fn eve_file_reopened_at_its_path_after_a_rename() {
    let eve = tmp_path("reopen-eve.json");
    let moved = tmp_path("reopen-eve.json.1");
    let _ = std::fs::remove_file(&*eve);
    let _ = std::fs::remove_file(&*moved);
    let q = Arc::new(AlertQueue::new(64));
    let cfg = AlertsConfig { stdout: false, eve_file: Some(eve.to_path_buf()), ..AlertsConfig::default() };
    let w = AlertWriter::spawn(Arc::clone(&q), &cfg).unwrap();
    q.push(small_alert(0, 1));
    q.push(small_alert(0, 2));
    // logrotate: move the file, then ask for the reopen
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(&*eve).unwrap_or_default().lines().count() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::rename(&*eve, &*moved).unwrap();
    let r = w.reopen_handle().reopen_and_wait(Duration::from_secs(5));
    assert_eq!(r, Ok(format!("reopened {}", eve.display())));
    q.push(small_alert(0, 3));
    let t = w.finish();
    assert_eq!(t.eve_written, 3);
    let ids = |p: &Path| -> Vec<u64> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["alert"]["id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(ids(&moved), vec![1, 2]);
    assert_eq!(ids(&eve), vec![3]);
    let _ = std::fs::remove_file(&*eve);
    let _ = std::fs::remove_file(&*moved);
}
