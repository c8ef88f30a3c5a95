//! `hakactl [--socket PATH] COMMAND`: asks a running haka through its control socket.
use super::control::DEFAULT_SOCKET;
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "hakactl", version = crate::app::VERSION, about = "Control a running haka through its control socket")]
struct Args {
    /// The control socket (haka's [control] socket)
    #[arg(short = 's', long = "socket", value_name = "PATH", default_value = DEFAULT_SOCKET, global = true)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Version, uptime, ports, workers, mode, rules file and its load time
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Live counters: totals, per worker, per port
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Live flows, taken from each worker between its bursts
    Flows {
        #[arg(long, default_value_t = 100, value_name = "N")]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Reload the rules file (the previous rules stay when it does not load)
    Reload,
    /// Reopen the alert files at their configured paths (after logrotate moved them)
    Reopen,
    /// Show, or set, the log levels: LEVEL[,SECTION=LEVEL...] (fatal error warning info debug trace)
    Loglevel { level: Option<String> },
    /// Each rule with its hit and error counters
    Rules {
        #[arg(long)]
        json: bool,
    },
    /// Stop haka (as SIGINT: the workers drain, the stats file is written)
    Stop,
}

/// Sends one request and returns the `data` of the answer, or a one-line error.
pub fn request(socket: &Path, req: &Value, timeout: Duration) -> Result<Value, String> {
    let s = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("haka is not running (no control socket at {})", socket.display()),
        std::io::ErrorKind::ConnectionRefused => {
            format!("haka is not running ({} refused the connection: a stale socket)", socket.display())
        }
        std::io::ErrorKind::PermissionDenied => {
            format!("{}: permission denied (the socket is mode 0600: run hakactl as the user haka runs as)", socket.display())
        }
        _ => format!("cannot connect to {}: {e}", socket.display()),
    })?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut w = &s;
    w.write_all(format!("{req}\n").as_bytes()).map_err(|e| format!("{}: {e}", socket.display()))?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).map_err(|e| format!("{}: no answer: {e}", socket.display()))?;
    if line.is_empty() {
        return Err(format!("{}: haka closed the connection without answering", socket.display()));
    }
    let v: Value = serde_json::from_str(&line).map_err(|e| format!("{}: bad answer: {e}", socket.display()))?;
    if v["ok"].as_bool() == Some(true) {
        Ok(v["data"].clone())
    } else {
        Err(v["error"].as_str().unwrap_or("unknown error").to_string())
    }
}

fn time_text(unix: f64) -> String {
    use chrono::TimeZone;
    chrono::Local
        .timestamp_opt(unix as i64, 0)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| format!("{unix}"))
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn print_status(d: &Value) {
    println!("haka {} (pid {})", d["version"].as_str().unwrap_or("?"), n(&d["pid"]));
    println!("uptime: {:.0} s (since {})", d["uptime_seconds"].as_f64().unwrap_or(0.0), time_text(d["started"].as_f64().unwrap_or(0.0)));
    println!("mode: {}  dispatch: {}", d["mode"].as_str().unwrap_or("?"), d["dispatch"].as_str().unwrap_or("?"));
    let lcores: Vec<String> = d["lcores"].as_array().into_iter().flatten().map(|l| l.to_string()).collect();
    println!("workers: {} (lcores {})", n(&d["workers"]), lcores.join(","));
    for p in d["ports"].as_array().into_iter().flatten() {
        let out = p["out"].as_u64().map(|o| format!(" -> port {o}")).unwrap_or_default();
        println!("port {}: {} ({}){out}", n(&p["port"]), p["name"].as_str().unwrap_or("?"), p["driver"].as_str().unwrap_or("?"));
    }
    match d["rules_file"].as_str() {
        Some(f) => println!("rules: {f} (loaded {})", time_text(d["rules_loaded"].as_f64().unwrap_or(0.0))),
        None => println!("rules: none (everything accepted)"),
    }
    if let Some(c) = d["config_file"].as_str() {
        println!("config: {c}");
    }
    println!("loglevel: {}", d["loglevel"].as_str().unwrap_or("?"));
}

fn counters_line(c: &Value) -> String {
    format!(
        "rx={} processed={} accepted={} tx={} dropped={} malformed={} flows_active={} flows_created={} lua_packets={} rule_errors={}",
        n(&c["rx"]),
        n(&c["processed"]),
        n(&c["accepted"]),
        n(&c["tx"]),
        n(&c["dropped"]),
        n(&c["malformed"]),
        n(&c["flows_active"]),
        n(&c["flows_created"]),
        n(&c["lua_packets"]),
        n(&c["rule_errors"])
    )
}

fn print_stats(d: &Value) {
    println!("uptime: {:.0} s  workers: {}  mode: {}", d["uptime_seconds"].as_f64().unwrap_or(0.0), n(&d["workers"]), d["mode"].as_str().unwrap_or("?"));
    println!("total: {}", counters_line(&d["totals"]));
    let reasons: Vec<String> = d["totals"]["dropped_by_reason"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| n(v) > 0)
        .map(|(k, v)| format!("{k}={}", n(v)))
        .collect();
    if !reasons.is_empty() {
        println!("drops: {}", reasons.join(" "));
    }
    for w in d["per_worker"].as_array().into_iter().flatten() {
        println!("worker {} (lcore {}): {}", n(&w["worker"]), n(&w["lcore"]), counters_line(w));
    }
    for p in d["ports"].as_array().into_iter().flatten() {
        println!(
            "port {} ({}): rx={} tx={} imissed={} rx_nombuf={} ierrors={} oerrors={}",
            n(&p["port"]),
            p["name"].as_str().unwrap_or("?"),
            n(&p["rx"]),
            n(&p["tx"]),
            n(&p["imissed"]),
            n(&p["rx_nombuf"]),
            n(&p["ierrors"]),
            n(&p["oerrors"])
        );
    }
    for m in d["mempool"].as_array().into_iter().flatten() {
        println!("mempool {}: {} of {} in use", m["pool"].as_str().unwrap_or("?"), n(&m["in_use"]), n(&m["size"]));
    }
    println!("alerts: raised={} lost={} queued={}", n(&d["alerts"]["raised"]), n(&d["alerts"]["lost"]), n(&d["alerts"]["queued"]));
}

fn print_flows(d: &Value) {
    for f in d["flows"].as_array().into_iter().flatten() {
        println!(
            "flow {} worker {} proto {} {} -> {} packets {}/{} bytes {}/{} {}",
            n(&f["flow_id"]),
            n(&f["worker"]),
            n(&f["proto"]),
            f["client"].as_str().unwrap_or("?"),
            f["server"].as_str().unwrap_or("?"),
            n(&f["packets_up"]),
            n(&f["packets_down"]),
            n(&f["bytes_up"]),
            n(&f["bytes_down"]),
            f["tcp"].as_str().unwrap_or("")
        );
    }
    println!("{} flows shown of {} live", n(&d["shown"]), n(&d["total"]));
    warn_silent(d);
}

fn warn_silent(d: &Value) {
    if let Some(s) = d["workers_not_answering"].as_array().filter(|s| !s.is_empty()) {
        let ws: Vec<String> = s.iter().map(|w| w.to_string()).collect();
        eprintln!("hakactl: workers {} did not answer in time (left out)", ws.join(","));
    }
}

fn print_rules(d: &Value) {
    let rules = d["rules"].as_array().cloned().unwrap_or_default();
    if rules.is_empty() {
        println!("no rules ({})", d["rules_file"].as_str().unwrap_or("no rules file"));
    }
    for r in &rules {
        let name = r["name"].as_str().filter(|s| !s.is_empty()).unwrap_or("-");
        println!(
            "{:<24} {:<32} {:<28} hits={} errors={}",
            name,
            r["location"].as_str().unwrap_or("?"),
            r["event"].as_str().unwrap_or("?"),
            n(&r["hits"]),
            n(&r["errors"])
        );
    }
    warn_silent(d);
}

pub fn hakactl_main(argv: Vec<String>) -> i32 {
    let args = match Args::try_parse_from(&argv) {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand) {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand { 2 } else { 0 };
            }
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad arguments").trim_start_matches("error: ");
            eprintln!("hakactl: error: {first} (try --help)");
            return 2;
        }
    };
    let (req, timeout) = match &args.command {
        Cmd::Status { .. } => (json!({"cmd": "status"}), 10),
        Cmd::Stats { .. } => (json!({"cmd": "stats"}), 10),
        Cmd::Flows { limit, .. } => (json!({"cmd": "flows", "limit": limit}), 20),
        Cmd::Reload => (json!({"cmd": "reload"}), 60),
        Cmd::Reopen => (json!({"cmd": "reopen"}), 10),
        Cmd::Loglevel { level } => (json!({"cmd": "loglevel", "level": level}), 10),
        Cmd::Rules { .. } => (json!({"cmd": "rules"}), 20),
        Cmd::Stop => (json!({"cmd": "stop"}), 10),
    };
    let data = match request(&args.socket, &req, Duration::from_secs(timeout)) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("hakactl: {e}");
            return 1;
        }
    };
    let pretty = |d: &Value| println!("{}", serde_json::to_string_pretty(d).unwrap_or_default());
    match &args.command {
        Cmd::Status { json: true } | Cmd::Stats { json: true } | Cmd::Flows { json: true, .. } | Cmd::Rules { json: true } => pretty(&data),
        Cmd::Status { .. } => print_status(&data),
        Cmd::Stats { .. } => print_stats(&data),
        Cmd::Flows { .. } => print_flows(&data),
        Cmd::Rules { .. } => print_rules(&data),
        Cmd::Reload | Cmd::Reopen | Cmd::Stop => println!("{}", data["message"].as_str().unwrap_or("ok")),
        Cmd::Loglevel { .. } => println!("loglevel: {}", data["loglevel"].as_str().unwrap_or("?")),
    }
    0
}
