//! The Prometheus endpoint (`[metrics] listen = "127.0.0.1:9477"`, off by default): `GET
//! /metrics` in the text exposition format 0.0.4, served by its own thread.
//!
//! Every counter of the stats file, per worker (label `worker`) and per port (labels
//! `port`, `name`); each rule's hits and errors; alerts raised and lost; the memory caps
//! hit (`haka_caps_hit_total{cap=...}`); mbufs in use per pool.
use super::Live;
use crate::stats::Counters;
use serde_json::Value;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Binds the endpoint (before EAL starts, so that a bad address is found at once).
pub fn bind(listen: &str) -> Result<TcpListener, String> {
    let l = TcpListener::bind(listen).map_err(|e| format!("metrics.listen = \"{listen}\": {e}"))?;
    l.set_nonblocking(true).map_err(|e| format!("metrics.listen = \"{listen}\": {e}"))?;
    Ok(l)
}

pub fn serve(listener: TcpListener, live: Arc<Live>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                let _ = one(s, &live);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn one(mut s: TcpStream, live: &Live) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") && buf.len() < 16384 {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let first = head.lines().next().unwrap_or("");
    let mut parts = first.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = if method != "GET" && method != "HEAD" {
        ("405 Method Not Allowed", "text/plain", "GET /metrics\n".to_string())
    } else if path == "/metrics" {
        ("200 OK", "text/plain; version=0.0.4; charset=utf-8", render(live))
    } else if path == "/" {
        ("200 OK", "text/html", "<html><body><a href=\"/metrics\">/metrics</a></body></html>\n".to_string())
    } else {
        ("404 Not Found", "text/plain", "not found: GET /metrics\n".to_string())
    };
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    if method != "HEAD" {
        out.push_str(&body);
    }
    s.write_all(out.as_bytes())?;
    s.flush()
}

/// A label value, escaped as the format wants.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Samples grouped by family (the format wants each family's lines together).
#[derive(Default)]
struct Out {
    order: Vec<String>,
    families: std::collections::HashMap<String, (String, Vec<String>)>,
}

impl Out {
    fn sample(&mut self, name: &str, kind: &str, help: &str, labels: &[(&str, String)], v: f64) {
        let fam = self.families.entry(name.to_string()).or_insert_with(|| {
            self.order.push(name.to_string());
            (format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"), Vec::new())
        });
        let mut line = String::from(name);
        if !labels.is_empty() {
            line.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                let _ = write!(line, "{k}=\"{}\"", esc(val));
            }
            line.push('}');
        }
        let _ = write!(line, " {v}");
        fam.1.push(line);
    }

    fn finish(self) -> String {
        let mut text = String::with_capacity(32 << 10);
        for name in &self.order {
            if let Some((head, lines)) = self.families.get(name) {
                text.push_str(head);
                for l in lines {
                    text.push_str(l);
                    text.push('\n');
                }
            }
        }
        text
    }
}

/// Counters of the stats file that are gauges (the rest only grow).
const GAUGES: [&str; 4] = ["flows_active", "defrag_held", "stateful_connections_active", "stateful_stream_buffered_bytes"];

/// Whether a stats file counter is a gauge: those above, and the flow memory budget's
/// bytes and connections held now (not its cap hits, which only grow).
fn is_gauge(key: &str) -> bool {
    GAUGES.contains(&key) || (key.starts_with("stateful_memory_") && !key.contains("cap_hits"))
}

/// One worker's counters (`Counters::to_json`, the stats file's names) as samples.
fn worker_samples(out: &mut Out, w: usize, c: &Counters) {
    let j = c.to_json();
    let Value::Object(m) = j else { return };
    let wl = ("worker", w.to_string());
    for (k, v) in &m {
        match (k.as_str(), v) {
            // (sums of the by-reason counters below; cpu time is set at exit only)
            ("dropped" | "malformed" | "cpu_seconds", _) => {}
            ("dropped_by_reason" | "malformed_by_reason", Value::Object(r)) => {
                let name = if k == "dropped_by_reason" { "haka_dropped_packets_total" } else { "haka_malformed_packets_total" };
                let help = if k == "dropped_by_reason" { "Packets not forwarded, by reason" } else { "Malformed packets, by reason" };
                for (reason, n) in r {
                    out.sample(name, "counter", help, &[wl.clone(), ("reason", reason.clone())], n.as_f64().unwrap_or(0.0));
                }
            }
            (section @ ("stateful" | "defrag"), Value::Object(r)) => {
                for (sub, n) in r {
                    let key = format!("{section}_{sub}");
                    let gauge = is_gauge(&key);
                    let name = if gauge { format!("haka_{key}") } else { format!("haka_{key}_total") };
                    out.sample(&name, if gauge { "gauge" } else { "counter" }, &format!("Stats file: {section}.{sub}"), &[wl.clone()], n.as_f64().unwrap_or(0.0));
                }
            }
            (_, Value::Number(n)) => {
                let gauge = is_gauge(k);
                let name = if gauge { format!("haka_{k}") } else { format!("haka_{k}_total") };
                out.sample(&name, if gauge { "gauge" } else { "counter" }, &format!("Stats file: {k}"), &[wl.clone()], n.as_f64().unwrap_or(0.0));
            }
            _ => {}
        }
    }
}

/// The whole exposition.
pub fn render(live: &Live) -> String {
    let mut out = Out::default();
    out.sample("haka_info", "gauge", "Version and mode of this haka", &[("version", live.version.clone()), ("mode", live.mode.to_string())], 1.0);
    out.sample("haka_uptime_seconds", "gauge", "Seconds since haka was ready", &[], live.uptime());
    out.sample("haka_workers", "gauge", "Worker lcores", &[], live.workers() as f64);
    let per = live.worker_counters();
    for (w, c) in per.iter().enumerate() {
        worker_samples(&mut out, w, c);
    }
    for (p, s) in live.port_stats() {
        let l = [("port", p.id.to_string()), ("name", p.name.clone())];
        for (name, help, v) in [
            ("haka_port_rx_packets_total", "Packets received by the port", s.rx),
            ("haka_port_tx_packets_total", "Packets sent by the port", s.tx),
            ("haka_port_rx_bytes_total", "Bytes received by the port", s.rx_bytes),
            ("haka_port_tx_bytes_total", "Bytes sent by the port", s.tx_bytes),
            ("haka_port_imissed_total", "Packets the NIC dropped: rx queues full (workers too slow)", s.imissed),
            ("haka_port_ierrors_total", "Erroneous received packets", s.ierrors),
            ("haka_port_oerrors_total", "Failed transmissions", s.oerrors),
            ("haka_port_rx_nombuf_total", "Receive failures for want of an mbuf (pool exhausted)", s.rx_nombuf),
        ] {
            out.sample(name, "counter", help, &l, v as f64);
        }
    }
    for (name, pool, size) in &live.pools {
        out.sample("haka_mempool_in_use", "gauge", "Mbufs allocated from the pool", &[("pool", name.to_string())], pool.in_use() as f64);
        out.sample("haka_mempool_size", "gauge", "Mbufs in the pool", &[("pool", name.to_string())], *size as f64);
    }
    out.sample("haka_alerts_raised_total", "counter", "Alerts the rules raised (queued for output)", &[], live.alerts.pushed() as f64);
    out.sample("haka_alerts_lost_total", "counter", "Alerts lost: the alert queue was full", &[], live.alerts.lost() as f64);
    if live.redis {
        use std::sync::atomic::Ordering::Relaxed;
        out.sample("haka_alerts_redis_sent_total", "counter", "Alerts stored by Redis", &[], crate::alert::redis::SENT.load(Relaxed) as f64);
        out.sample("haka_alerts_redis_lost_total", "counter", "Alerts that could not be delivered to Redis", &[], crate::alert::redis::LOST.load(Relaxed) as f64);
    }
    out.sample("haka_alert_queue_length", "gauge", "Alerts waiting for the output thread", &[], live.alerts.len() as f64);
    // Memory caps: how often each one was hit.
    let t = Counters::sum(&per);
    let ports = live.port_stats();
    use crate::stats::{DropReason, Stateful};
    for (cap, v) in [
        ("flow_table", t.flows_evicted),
        ("stream_buffer", t.stateful[Stateful::StreamOverCap as usize]),
        ("streamed_hold", t.stateful[Stateful::StreamedOverCap as usize]),
        ("rules_memory", t.rule_memory_exceeded),
        ("rules_instruction_budget", t.rule_budget_exceeded),
        ("defrag", t.frag_evicted),
        ("dispatch_ring", t.dropped[DropReason::DispatchRingFull as usize]),
        ("alert_queue", live.alerts.lost()),
        ("mempool", ports.iter().map(|(_, s)| s.rx_nombuf).sum()),
    ] {
        out.sample("haka_caps_hit_total", "counter", "Times a memory cap or bounded queue was hit", &[("cap", cap.to_string())], v as f64);
    }
    for (w, rules) in live.worker_rules().into_iter().enumerate() {
        for r in rules.unwrap_or_default() {
            let label = if r.name.is_empty() { r.location.clone() } else { r.name.clone() };
            let l = [("worker", w.to_string()), ("rule", label), ("location", r.location.clone()), ("event", r.event.clone())];
            out.sample("haka_rule_hits_total", "counter", "Calls of a rule (since the rules were loaded)", &l, r.hits as f64);
            out.sample("haka_rule_errors_total", "counter", "Errors of a rule (since the rules were loaded)", &l, r.errors as f64);
        }
    }
    out.finish()
}
