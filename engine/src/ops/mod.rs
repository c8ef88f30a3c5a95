//! Operating a running haka: what it tells about itself while it runs ([`Live`]), served
//! off the workers' path by the control socket ([`control`], read by `hakactl`, [`ctl`]),
//! the Prometheus endpoint ([`metrics`]) and DPDK telemetry commands.
//!
//! Counters come from the workers' published [`crate::stats::SharedCounters`] and the
//! ports; what only a worker knows (its flows, its rules' counters) is asked through its
//! [`crate::worker::Mailbox`], answered between two bursts.
pub mod check;
pub mod control;
pub mod ctl;
pub mod metrics;

use crate::alert::AlertQueue;
use crate::dpdk::{self, PoolRef, PortStats};
use crate::stats::Counters;
use crate::worker::{Answer, Query, Shared};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a worker gets to answer a question.
pub const WORKER_ANSWER_TIMEOUT: Duration = Duration::from_millis(500);

/// A port as the live view shows it.
#[derive(Clone, Debug)]
pub struct LivePort {
    pub id: u16,
    pub name: String,
    pub driver: String,
    /// Paired output port (inline mode).
    pub out: Option<u16>,
}

/// A running haka, as the control socket, metrics and telemetry see it.
pub struct Live {
    pub program: &'static str,
    pub version: String,
    pub started: SystemTime,
    pub started_at: Instant,
    pub mode: &'static str,
    pub dispatch: &'static str,
    pub lcores: Vec<u32>,
    pub ports: Vec<LivePort>,
    pub config_file: Option<PathBuf>,
    pub rules_file: Option<PathBuf>,
    /// How the workers load it (a reload is first checked with it, off the workers).
    pub rules_opts: Option<crate::lua::LuaOptions>,
    /// When the rules in force were loaded (start, then each successful reload).
    pub rules_loaded: Mutex<SystemTime>,
    pub shared: Arc<Shared>,
    pub alerts: Arc<AlertQueue>,
    /// (name, pool, size) of each mbuf pool.
    pub pools: Vec<(&'static str, PoolRef, u32)>,
    /// Set to stop haka (as SIGINT).
    pub stop: Arc<AtomicBool>,
    /// Serialises reloads (socket and SIGHUP).
    pub reloading: Mutex<()>,
    /// Alerts go to Redis too (`[alerts.redis]`).
    pub redis: bool,
    /// Reopens the alert files (`hakactl reopen`, SIGHUP).
    pub reopen: Arc<crate::alert::Reopen>,
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl Live {
    pub fn workers(&self) -> usize {
        self.shared.counters.len()
    }

    pub fn uptime(&self) -> f64 {
        self.started_at.elapsed().as_secs_f64()
    }

    pub fn worker_counters(&self) -> Vec<Counters> {
        self.shared.counters.iter().map(|c| c.snapshot()).collect()
    }

    pub fn port_stats(&self) -> Vec<(&LivePort, PortStats)> {
        self.ports.iter().map(|p| (p, dpdk::port_stats(p.id))).collect()
    }

    /// `hakactl status`.
    pub fn status(&self) -> Value {
        json!({
            "program": self.program,
            "version": self.version,
            "pid": std::process::id(),
            "started": unix(self.started),
            "uptime_seconds": self.uptime(),
            "mode": self.mode,
            "dispatch": self.dispatch,
            "workers": self.workers(),
            "lcores": self.lcores,
            "ports": self.ports.iter().map(|p| json!({"port": p.id, "name": p.name, "driver": p.driver, "out": p.out})).collect::<Vec<_>>(),
            "config_file": self.config_file.as_ref().map(|p| p.display().to_string()),
            "rules_file": self.rules_file.as_ref().map(|p| p.display().to_string()),
            "rules_loaded": self.rules_loaded.lock().map(|t| unix(*t)).unwrap_or(0.0),
            "loglevel": crate::logging::current().to_string(),
        })
    }

    /// `hakactl stats`: the stats file's figures, live.
    pub fn stats(&self) -> Value {
        let per: Vec<Counters> = self.worker_counters();
        let totals = Counters::sum(&per);
        json!({
            "program": self.program,
            "version": self.version,
            "uptime_seconds": self.uptime(),
            "mode": self.mode,
            "workers": self.workers(),
            "dispatch": self.dispatch,
            "totals": totals.to_json(),
            "per_worker": per.iter().enumerate().map(|(i, c)| {
                let mut j = c.to_json();
                j["worker"] = i.into();
                j["lcore"] = self.lcores.get(i).copied().into();
                j
            }).collect::<Vec<_>>(),
            "ports": self.port_stats().iter().map(|(p, s)| {
                let mut j = serde_json::to_value(s).unwrap_or_default();
                j["port"] = p.id.into();
                j["name"] = p.name.clone().into();
                j["driver"] = p.driver.clone().into();
                j
            }).collect::<Vec<_>>(),
            "mempool": self.pools.iter().map(|(n, p, size)| json!({"pool": n, "size": size, "in_use": p.in_use()})).collect::<Vec<_>>(),
            "alerts": {
                "raised": self.alerts.pushed(),
                "lost": self.alerts.lost(),
                "queued": self.alerts.len(),
                "redis": self.redis.then(|| crate::alert::redis::SENT.load(Ordering::Relaxed)),
                "redis_lost": self.redis.then(|| crate::alert::redis::LOST.load(Ordering::Relaxed)),
            },
        })
    }

    /// Asks every worker; None for a worker that did not answer in time.
    pub fn ask_all(&self, q: Query) -> Vec<Option<Answer>> {
        self.shared.mailboxes.iter().map(|m| m.ask(q, WORKER_ANSWER_TIMEOUT)).collect()
    }

    /// `hakactl flows`: up to `limit` live flows, taken from every worker.
    pub fn flows(&self, limit: usize) -> Value {
        let mut total = 0;
        let mut flows = Vec::new();
        let mut silent = Vec::new();
        for (w, a) in self.ask_all(Query::Flows { limit }).into_iter().enumerate() {
            match a {
                Some(Answer::Flows { total: t, lines }) => {
                    total += t;
                    for l in lines {
                        if flows.len() < limit {
                            flows.push(serde_json::from_str::<Value>(&l).unwrap_or(Value::String(l)));
                        }
                    }
                }
                _ => silent.push(w),
            }
        }
        json!({ "total": total, "shown": flows.len(), "flows": flows, "workers_not_answering": silent })
    }

    /// Per worker, each rule's counters (None: the worker did not answer).
    pub fn worker_rules(&self) -> Vec<Option<Vec<crate::lua::RuleStat>>> {
        self.ask_all(Query::Rules)
            .into_iter()
            .map(|a| match a {
                Some(Answer::Rules(r)) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// `hakactl rules`: each rule with its hits and errors summed over the workers.
    pub fn rules(&self) -> Value {
        let mut out: Vec<(crate::lua::RuleStat, Vec<u64>)> = Vec::new();
        let per = self.worker_rules();
        let n = per.len();
        let mut silent = Vec::new();
        for (w, r) in per.into_iter().enumerate() {
            let Some(r) = r else {
                silent.push(w);
                continue;
            };
            for (i, s) in r.into_iter().enumerate() {
                let pos = out.iter().position(|(o, _)| o.location == s.location && o.name == s.name && o.event == s.event);
                let pos = match pos {
                    Some(p) => p,
                    None => {
                        let at = i.min(out.len());
                        out.insert(at, (crate::lua::RuleStat { hits: 0, errors: 0, ..s.clone() }, vec![0; n]));
                        at
                    }
                };
                out[pos].0.hits += s.hits;
                out[pos].0.errors += s.errors;
                out[pos].1[w] = s.hits;
            }
        }
        json!({
            "rules_file": self.rules_file.as_ref().map(|p| p.display().to_string()),
            "rules_loaded": self.rules_loaded.lock().map(|t| unix(*t)).unwrap_or(0.0),
            "rules": out.iter().map(|(s, hits)| json!({
                "name": s.name, "location": s.location, "event": s.event,
                "hits": s.hits, "errors": s.errors, "hits_per_worker": hits,
            })).collect::<Vec<_>>(),
            "workers_not_answering": silent,
        })
    }

    /// `hakactl reload` (and SIGHUP): the workers reload the rules file; Ok(message) or
    /// Err(the load error, the previous rules staying in force).
    pub fn reload(&self) -> Result<String, String> {
        let _one = self.reloading.lock().map_err(|_| "reload lock poisoned".to_string())?;
        if self.rules_file.is_none() {
            return Err("no rules file: haka runs without rules (nothing to reload)".into());
        }
        // The workers' new engines are built here, off the workers (one per worker: a Lua
        // state is single-threaded); each worker only swaps its engine in between two
        // bursts. A file that fails, or loops at load until its instruction budget stops
        // it, never reaches a worker.
        let t0 = Instant::now();
        let workers = self.shared.mailboxes.len();
        let mut built = Vec::with_capacity(workers);
        if let (Some(path), Some(opts)) = (&self.rules_file, &self.rules_opts) {
            for w in 0..workers {
                match crate::dpdk::EngineHandoff::build(path, opts, w) {
                    Ok(e) => built.push(e),
                    Err(e) => {
                        self.shared.reloads_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return Err(format!("rules reload refused, the workers keep their rules: {e}"));
                    }
                }
            }
        }
        let built_ms = t0.elapsed().as_secs_f64() * 1e3;
        let outcomes = self.shared.reload_with(built, Duration::from_secs(30));
        let file = self.rules_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        let errors: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().and_then(|r| r.as_ref().err())).collect();
        if let Some(e) = errors.first() {
            return Err(format!("rules reload failed, the previous rules stay: {e}"));
        }
        let silent = outcomes.iter().filter(|o| o.is_none()).count();
        if silent > 0 {
            return Err(format!("{silent} of {} workers did not report their reload within 30 s", outcomes.len()));
        }
        let reloaded = outcomes.iter().filter(|o| matches!(o, Some(Ok(true)))).count();
        if let Ok(mut t) = self.rules_loaded.lock() {
            *t = SystemTime::now();
        }
        Ok(format!(
            "rules loaded in {built_ms:.1} ms off the workers, swapped in from {file} by {reloaded} of {} workers",
            outcomes.len()
        ))
    }

    /// The DPDK telemetry commands' answers.
    pub fn telemetry(&self, cmd: &str, params: &str) -> Value {
        let per = self.worker_counters();
        match cmd {
            "/haka/stats" => {
                let t = Counters::sum(&per);
                let mut j = t.to_json();
                j["uptime_seconds"] = self.uptime().into();
                j["alerts_raised"] = self.alerts.pushed().into();
                j["alerts_lost"] = self.alerts.lost().into();
                j["mempool_in_use"] = self.pools.iter().map(|(_, p, _)| p.in_use() as u64).sum::<u64>().into();
                j
            }
            "/haka/flows_count" => {
                json!({
                    "flows_active": per.iter().map(|c| c.flows_active).sum::<u64>(),
                    "per_worker": per.iter().map(|c| c.flows_active).collect::<Vec<_>>(),
                    "flows_created": per.iter().map(|c| c.flows_created).sum::<u64>(),
                })
            }
            "/haka/workers" => match params.trim().parse::<usize>() {
                Ok(w) if w < per.len() => {
                    let mut j = per[w].to_json();
                    j["worker"] = w.into();
                    j["lcore"] = self.lcores.get(w).copied().into();
                    j
                }
                _ => json!({
                    "workers": per.len(),
                    "lcores": self.lcores,
                    "rx": per.iter().map(|c| c.rx).collect::<Vec<_>>(),
                    "processed": per.iter().map(|c| c.processed).collect::<Vec<_>>(),
                    "accepted": per.iter().map(|c| c.accepted).collect::<Vec<_>>(),
                    "dropped": per.iter().map(|c| c.dropped_total()).collect::<Vec<_>>(),
                    "tx": per.iter().map(|c| c.tx).collect::<Vec<_>>(),
                    "flows_active": per.iter().map(|c| c.flows_active).collect::<Vec<_>>(),
                    "lua_packets": per.iter().map(|c| c.lua_packets).collect::<Vec<_>>(),
                }),
            },
            _ => json!({ "error": format!("unknown command {cmd}") }),
        }
    }
}

/// DPDK telemetry commands haka registers.
pub const TELEMETRY_COMMANDS: [(&str, &str); 3] = [
    ("/haka/stats", "Haka totals (the stats file's counters). No parameters"),
    ("/haka/flows_count", "Live flows, total and per worker. No parameters"),
    ("/haka/workers", "Per-worker counters as arrays; with a worker index, all that worker's counters"),
];

/// The control and metrics threads (stopped and joined by [`Servers::stop`]).
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    socket_path: Option<PathBuf>,
}

impl Servers {
    /// Starts the threads serving `live` on the listeners bound before EAL started.
    pub fn start(live: Arc<Live>, control: Option<control::Bound>, metrics: Option<std::net::TcpListener>) -> Result<Servers, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut socket_path = None;
        if let Some(b) = control {
            socket_path = Some(b.path.clone());
            let (l, s) = (live.clone(), stop.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("haka-control".into())
                    .spawn(move || control::serve(b.listener, l, s))
                    .map_err(|e| format!("cannot start the control thread: {e}"))?,
            );
        }
        if let Some(m) = metrics {
            let (l, s) = (live.clone(), stop.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("haka-metrics".into())
                    .spawn(move || metrics::serve(m, l, s))
                    .map_err(|e| format!("cannot start the metrics thread: {e}"))?,
            );
        }
        Ok(Servers { stop, threads, socket_path })
    }

    /// Stops the threads (before the pools and ports they read go away) and removes the
    /// control socket.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        if let Some(p) = self.socket_path {
            let _ = std::fs::remove_file(p);
        }
    }
}
