//! The runtime shared by `haka` and `hakapcap`: EAL, ports, pool, rings,
//! workers on their lcores, the main lcore's control loop, clean shutdown and
//! the final stats. Also both command lines.
use crate::alert::{AlertQueue, AlertWriter};
use crate::config::{Config, DispatchFull, DispatchMode, MainLcoreWorker, Mode, Verdict};
use crate::dispatch::WhenFull;
use crate::lua::{LuaEngine, LuaOptions};
use crate::dissect::LinkType;
use crate::dpdk::{self, Eal, Mempool, PoolRef, Port, PortInfo, PortSettings, Ring, RxQueue, BURST};
use crate::fragstage::FragPlan;
use crate::pcapfile;
use crate::pipeline::Pipeline;
use crate::stats::Counters;
use crate::worker::{self, Shared, WorkerPlan, WorkerReport};
use clap::Parser;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything a run needs, from either command line.
pub struct RunSpec {
    pub program: &'static str,
    /// Full EAL argv (argv[0] first).
    pub eal_args: Vec<String>,
    pub config: Config,
    pub link: LinkType,
    pub stats_file: Option<PathBuf>,
    pub flow_dump: Option<PathBuf>,
    /// Offline replay: stop once this many packets were received (or input went idle).
    pub stop_after: Option<u64>,
    /// Print `ready:` and periodic stats lines.
    pub verbose: bool,
    /// Offline: keep running this long after the input ended (timers such as the
    /// fragment timeout fire meanwhile).
    pub linger: Duration,
    /// The config file (for `hakactl status`).
    pub config_file: Option<PathBuf>,
    /// Version line (`hakactl status`, metrics).
    pub build: &'static str,
    /// Offline: the progress line on a terminal.
    pub progress: Option<crate::progress::Progress>,
    /// The name alerts give every port (`in_iface`; hakapcap: the input file's); None:
    /// each port's DPDK name.
    pub iface_name: Option<String>,
}

pub struct RunResult {
    pub totals: Counters,
    pub stats: Value,
}

fn fmt_ports(ports: &[Port], out_port: &[Option<u16>]) -> String {
    ports
        .iter()
        .map(|p| match out_port[p.id() as usize] {
            Some(o) => format!("{}:{}->{}", p.id(), p.info.name, o),
            None => format!("{}:{}", p.id(), p.info.name),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Output port for each input port, from the config (None everywhere when passive).
fn port_pairs(cfg: &Config, n_ports: u16) -> Result<Vec<Option<u16>>, String> {
    let mut out = vec![None; n_ports as usize];
    if cfg.datapath.mode == Mode::Passive {
        return Ok(out);
    }
    let pairs: Vec<[u16; 2]> = if cfg.ports.pairs.is_empty() {
        if n_ports % 2 != 0 {
            return Err(format!(
                "inline mode pairs ports 0<->1, 2<->3, ... but there are {n_ports} ports; set ports.pairs (e.g. [[0, 0]] to send back out the same port) or datapath.mode = \"passive\""
            ));
        }
        (0..n_ports / 2).map(|i| [2 * i, 2 * i + 1]).collect()
    } else {
        cfg.ports.pairs.clone()
    };
    for [a, b] in pairs {
        for p in [a, b] {
            if p >= n_ports {
                return Err(format!("ports.pairs: port {p} does not exist (there are {n_ports} ports)"));
            }
        }
        if out[a as usize].is_some() || out[b as usize].is_some() {
            return Err(format!("ports.pairs: port {a} or {b} appears in two pairs"));
        }
        out[a as usize] = Some(b);
        out[b as usize] = Some(a);
    }
    Ok(out)
}

/// The rules engine's options from the config.
fn lua_options(cfg: &Config) -> LuaOptions {
    LuaOptions {
        rule_error_drop: cfg.rules.rule_error == Verdict::Drop,
        instruction_budget: cfg.rules.instruction_budget,
        memory_limit_bytes: (cfg.rules.memory_limit_mb as usize) << 20,
        error_log_interval: std::time::Duration::from_secs(cfg.rules.error_log_interval),
        required_chain: cfg.rules.dissectors == crate::config::DissectorChain::Required,
        read_only: cfg.datapath.mode == Mode::Passive || cfg.datapath.pass_through,
        dns_haka_records: cfg.dns.records == crate::config::DnsRecords::Haka,
        streamed_hold_bytes: (cfg.rules.streamed_hold_kb as usize).saturating_mul(1024),
        streamed_over_cap_drop: cfg.rules.streamed_over_cap == Verdict::Drop,
        dns_pending_queries: cfg.dns.pending_queries,
        disable_after_errors: cfg.rules.disable_after_errors,
        disable_after_timeouts: cfg.rules.disable_after_timeouts,
        disable_window: cfg.rules.disable_window,
        alert_rate: cfg.rules.alert_rate,
        lua_protocol_error_drop: cfg.rules.lua_protocol_error == Verdict::Drop,
        lua_in_place_parsing: cfg.rules.lua_in_place_parsing,
        port_names: Vec::new(),
    }
}

/// Whether a port's input can wait to be read (the packets stay where they are, nothing
/// is lost): a `net_pcap` vdev reading a capture file (`rx_pcap=`), or `net_null`
/// (made-up packets). Live inputs (NICs, taps, interfaces) drop what is not read in time.
fn input_can_wait(eal_args: &[String], info: &PortInfo) -> bool {
    let devargs = eal_args.iter().enumerate().find_map(|(i, a)| {
        let v = a.strip_prefix("--vdev=").or_else(|| (a == "--vdev").then(|| eal_args.get(i + 1).map(String::as_str)).flatten())?;
        (v.split(',').next() == Some(info.name.as_str())).then_some(v)
    });
    match (info.driver.as_str(), devargs) {
        ("net_null", Some(_)) => true,
        ("net_pcap", Some(a)) => a.split(',').any(|kv| kv.starts_with("rx_pcap=")) && !a.split(',').any(|kv| kv.starts_with("rx_iface") || kv.starts_with("iface=")),
        _ => false,
    }
}

/// Runs the datapath until a signal (or, offline, the end of the input).
pub fn run(spec: RunSpec) -> Result<RunResult, String> {
    let cfg = &spec.config;
    crate::flow::key::set_hash_seed(crate::flow::key::random_hash_seed());
    // Rules: load them once here, before anything starts, so that a broken file
    // is one error line (FILE:LINE: message); each worker then loads its own state.
    let rules = match &cfg.rules.file {
        Some(path) => {
            let opts = lua_options(cfg);
            LuaEngine::load(path, &opts, 0, Box::new(|_| {}))?;
            Some((path.clone(), opts))
        }
        None => None,
    };
    // Everything haka will write, and the memory it needs, checked before EAL starts.
    preflight(cfg, &spec)?;
    let control_sock = match cfg.control.socket.as_str() {
        "" => None,
        p => Some(crate::ops::control::bind(Path::new(p))?),
    };
    let metrics_sock = cfg.metrics.listen.as_deref().map(crate::ops::metrics::bind).transpose()?;
    // Alerts: workers push into a bounded queue; this thread writes them out.
    let alert_queue = Arc::new(AlertQueue::new(cfg.alerts.queue_size));
    let alert_writer = AlertWriter::spawn(alert_queue.clone(), &cfg.alerts)?;
    let eal = Eal::init(&spec.eal_args).map_err(|e| crate::ops::check::explain_eal_failure(&e, &spec.eal_args))?;
    let n_ports = dpdk::available_ports();
    if n_ports == 0 {
        return Err(crate::ops::check::explain_no_ports(&spec.eal_args));
    }

    // Workers: every EAL lcore but the main one; the main lcore works too when asked,
    // or ("auto") when EAL has at most 2 lcores, or when it is the only one.
    let main = dpdk::main_lcore();
    let others = dpdk::worker_lcores();
    let main_works = match cfg.datapath.main_lcore_worker {
        MainLcoreWorker::Yes => true,
        MainLcoreWorker::No if others.is_empty() => {
            return Err("datapath.main_lcore_worker = \"no\" needs at least 2 EAL lcores (-l)".into())
        }
        MainLcoreWorker::No => false,
        MainLcoreWorker::Auto => others.len() < 2,
    };
    let lcores: Vec<u32> = if main_works { std::iter::once(main).chain(others.iter().copied()).collect() } else { others };
    let workers = lcores.len();

    let out_port = port_pairs(cfg, n_ports)?;
    let passive = cfg.datapath.mode == Mode::Passive;

    // Queues: trusted symmetric RSS spreads flows over one queue per worker;
    // otherwise the software dispatcher hands each packet to its flow's owner.
    let infos: Vec<PortInfo> = (0..n_ports).map(PortInfo::query).collect::<Result<_, _>>()?;
    let mut settings = Vec::new();
    for info in &infos {
        // Virtual devices may claim RSS without applying our symmetric key
        // (net_tap's eBPF RSS is often unavailable): trust only real NICs.
        let rss = cfg.ports.rss && workers > 1 && info.bus != "vdev" && info.rss_offloads != 0 && info.max_rx_queues > 1;
        // Several rx queues share the polling even without trusted RSS (the
        // dispatcher then fixes ownership); some PMDs (net_tap) need rx == tx queues.
        let rx_queues = (workers as u16).min(info.max_rx_queues).max(1);
        let tx_queues = if passive { rx_queues } else { workers as u16 };
        if info.max_tx_queues < tx_queues {
            return Err(format!(
                "port {} ({}) has {} tx queues, fewer than the {workers} workers; give EAL fewer lcores (-l)",
                info.id, info.name, info.max_tx_queues
            ));
        }
        settings.push(PortSettings {
            rx_queues,
            tx_queues,
            rx_descriptors: cfg.ports.rx_descriptors,
            tx_descriptors: cfg.ports.tx_descriptors,
            rss,
        });
    }
    let by_queue = cfg.datapath.dispatch == DispatchMode::Queue;
    let dispatch = workers > 1 && !by_queue && settings.iter().any(|s| !s.rss || (s.rx_queues as usize) < workers);
    if dispatch && workers > crate::dispatch::MAX_WORKERS {
        return Err(format!(
            "{workers} workers: the software dispatcher serves at most {} (datapath.dispatch = \"queue\", or a NIC with RSS, for more)",
            crate::dispatch::MAX_WORKERS
        ));
    }
    let dispatch_name = if workers == 1 {
        "none"
    } else if by_queue {
        "queue"
    } else if dispatch {
        "software"
    } else {
        "rss"
    };

    let mbufs = if cfg.mempool.mbufs > 0 {
        cfg.mempool.mbufs
    } else {
        let queues: u32 = settings
            .iter()
            .map(|s| s.rx_queues as u32 * s.rx_descriptors as u32 + s.tx_queues as u32 * s.tx_descriptors as u32)
            .sum();
        let rings = if dispatch { workers as u32 * cfg.datapath.dispatch_ring_size } else { 0 };
        let bursts = workers as u32 * (BURST as u32) * (n_ports as u32 + workers as u32 + 2);
        let caches = (workers as u32 + 1) * cfg.mempool.cache_size * 2;
        // Fragments held for reassembly come from this pool too.
        let held = if cfg.defrag.enabled { workers as u32 * cfg.defrag.max_fragments } else { 0 };
        ((queues + rings + bursts + caches + held + 2048).next_power_of_two() - 1).max(8191)
    };
    let pool = Mempool::new_pktmbuf("haka_mbufs", mbufs, cfg.mempool.cache_size, cfg.mempool.data_room, dpdk::socket_id_any())?;
    // Reassembled datagrams (up to 64 KiB) get mbufs of their own (no per-lcore cache:
    // they are rare, and a cache would park large buffers).
    let reasm_pool = if cfg.defrag.enabled {
        Some(
            Mempool::new_pktmbuf("haka_reasm", cfg.defrag.reassembly_mbufs, 0, u16::MAX, dpdk::socket_id_any())
                .map_err(|e| format!("[defrag] reassembly_mbufs: {e}"))?,
        )
    } else {
        None
    };
    let frag_plan = reasm_pool.as_ref().map(|p| FragPlan {
        config: cfg.defrag.defrag_config(),
        max_fragments: cfg.defrag.max_fragments as usize,
        pool: PoolRef::of(p),
        haka_overlaps: cfg.defrag.overlap == crate::config::FragOverlap::Haka,
        haka_refragment: cfg.defrag.refragment == crate::config::Refragment::Haka,
    });

    let mut ports = Vec::new();
    for (info, s) in infos.into_iter().zip(&settings) {
        ports.push(Port::setup(info, s, &pool)?);
    }
    for p in &mut ports {
        let link = p.start(cfg.ports.promiscuous)?;
        if spec.verbose {
            println!(
                "port {}: {} ({}) rx_queues={} tx_queues={} {link}",
                p.id(),
                p.info.name,
                p.info.driver,
                settings[p.id() as usize].rx_queues,
                settings[p.id() as usize].tx_queues
            );
        }
    }
    // dpdk-dumpcap (a secondary process) captures the ports through pdump.
    if cfg.ports.pdump {
        if dpdk::shared_config(&spec.eal_args) {
            match dpdk::pdump_init() {
                Ok(()) if spec.verbose => println!("pdump: on (dpdk-dumpcap --file-prefix {} -i PORT)", file_prefix(&spec.eal_args)),
                Ok(()) => {}
                Err(e) => println!("pdump: off: {e}"),
            }
        } else if spec.verbose {
            println!("pdump: off (EAL runs with --in-memory or --no-shconf: dpdk-dumpcap cannot attach)");
        }
    }
    // Software dispatch with a full ring: wait when the input can (see crate::dispatch).
    let dispatch_full = match cfg.datapath.dispatch_full {
        DispatchFull::Wait => WhenFull::Wait,
        DispatchFull::Drop => WhenFull::Drop,
        DispatchFull::Auto if spec.stop_after.is_some() || ports.iter().all(|p| input_can_wait(&spec.eal_args, &p.info)) => WhenFull::Wait,
        DispatchFull::Auto => WhenFull::Drop,
    };
    // A channel per pair of workers, of dispatch_ring_size packets; the mbuf queues beside
    // them hold a quarter of the pool at most all together (large packets travel as mbufs:
    // a replay must not run out of mbufs to read into). Reassembled datagrams travel on
    // rings of dispatch_ring_size.
    let pairs = (workers * workers.saturating_sub(1)).max(1) as u32;
    let channel_size = (cfg.datapath.dispatch_ring_size - 1).min(mbufs / (4 * pairs)).max(1);
    // Each port's queue q is polled by worker q; single-queue ports are spread over workers.
    let rx_of: Vec<Vec<RxQueue>> = (0..workers)
        .map(|w| {
            ports
                .iter()
                .zip(&settings)
                .filter_map(|(p, s)| {
                    let nq = s.rx_queues as usize;
                    let polls = if nq == 1 { (p.id() as usize) % workers == w } else { w < nq };
                    polls.then(|| RxQueue { port: p.id(), queue: if nq == 1 { 0 } else { w as u16 } })
                })
                .collect()
        })
        .collect();
    let every_worker_reads = rx_of.iter().all(|rx| !rx.is_empty());
    let channels = dispatch.then(|| {
        (crate::dispatch::channels(workers, channel_size), crate::dispatch::OwnerTable::new(workers, every_worker_reads))
    });
    let rings = if dispatch {
        let r: Vec<Ring> = (0..workers)
            .map(|w| Ring::new(&format!("haka_dispatch_{w}"), cfg.datapath.dispatch_ring_size, dpdk::socket_id_any()))
            .collect::<Result<_, _>>()?;
        Some(Arc::new(r))
    } else {
        None
    };

    // Alerts name the port a packet came in on (EVE in_iface).
    let port_names: Vec<String> = ports.iter().map(|p| spec.iface_name.clone().unwrap_or_else(|| p.info.name.clone())).collect();
    let rules = rules.map(|(path, mut opts)| {
        opts.port_names = port_names;
        (path, opts)
    });
    let plans: Vec<WorkerPlan> = rx_of
        .into_iter()
        .enumerate()
        .map(|(w, rx)| {
            WorkerPlan {
                index: w,
                workers,
                rx,
                out_port: out_port.clone(),
                tx_queue: if passive { 0 } else { w as u16 },
                rings: rings.clone(),
                dump_flows: spec.flow_dump.is_some(),
                rules: rules.clone(),
                alerts: alert_queue.clone(),
                dispatch_full,
                channels: channels.clone(),
                offline: spec.stop_after.is_some(),
                conn: (cfg.conn_config(), crate::dissectors::Settings::of(cfg)),
                pool: Some(dpdk::PoolRef::of(&pool)),
                defrag: frag_plan,
            }
        })
        .collect();

    let stop_signal = Arc::new(AtomicBool::new(false));
    let reload_signal = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGHUP, reload_signal.clone());
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while stopping exits at once.
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, stop_signal.clone());
        let _ = signal_hook::flag::register(sig, stop_signal.clone());
    }

    let shared = Arc::new(Shared::new(workers));
    let reports: Arc<Mutex<Vec<Option<WorkerReport>>>> = Arc::new(Mutex::new((0..workers).map(|_| None).collect()));
    let mut plans = plans.into_iter();
    let main_plan = if main_works { plans.next() } else { None };
    let launch_lcores = if main_works { &lcores[1..] } else { &lcores[..] };
    for (plan, &lcore) in plans.zip(launch_lcores) {
        let shared = shared.clone();
        let reports = reports.clone();
        let cfg = cfg.clone();
        let link = spec.link;
        dpdk::launch_on(lcore, move || {
            let idx = plan.index;
            let pipeline = Pipeline::new(&cfg, link);
            let r = worker::run(plan, &shared, pipeline, || false);
            reports.lock().map(|mut v| v[idx] = Some(r)).is_ok() as i32 - 1
        })?;
    }

    let live = Arc::new(crate::ops::Live {
        program: spec.program,
        version: spec.build.to_string(),
        started: std::time::SystemTime::now(),
        started_at: Instant::now(),
        mode: if passive { "passive" } else { "inline" },
        dispatch: dispatch_name,
        lcores: lcores.clone(),
        ports: ports
            .iter()
            .map(|p| crate::ops::LivePort { id: p.id(), name: p.info.name.clone(), driver: p.info.driver.clone(), out: out_port[p.id() as usize] })
            .collect(),
        config_file: spec.config_file.clone(),
        rules_file: rules.as_ref().map(|(p, _)| p.clone()),
        rules_opts: rules.as_ref().map(|(_, o)| o.clone()),
        rules_loaded: Mutex::new(std::time::SystemTime::now()),
        shared: shared.clone(),
        alerts: alert_queue.clone(),
        pools: std::iter::once(("haka_mbufs", PoolRef::of(&pool), pool.size()))
            .chain(reasm_pool.as_ref().map(|p| ("haka_reasm", PoolRef::of(p), p.size())))
            .collect(),
        stop: stop_signal.clone(),
        reloading: Mutex::new(()),
        redis: cfg.alerts.redis.is_some(),
        reopen: alert_writer.reopen_handle(),
    });
    let servers = crate::ops::Servers::start(live.clone(), control_sock, metrics_sock)?;
    {
        let l = live.clone();
        if let Err(e) = dpdk::register_telemetry(&crate::ops::TELEMETRY_COMMANDS, Arc::new(move |cmd, params| l.telemetry(cmd, params))) {
            println!("telemetry: {e}");
        }
    }
    let mut control = Control {
        live: live.clone(),
        ports: ports.iter().map(|p| p.id()).collect(),
        shared: shared.clone(),
        signal: stop_signal,
        reload: reload_signal,
        workers,
        verbose: spec.verbose,
        ready_line: format!(
            "ready: ports={} [{}] workers={workers} lcores={} mode={} dispatch={dispatch_name}",
            ports.len(),
            fmt_ports(&ports, &out_port),
            lcores.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(","),
            if passive { "passive" } else { "inline" },
        ),
        ready_at: None,
        stats_every: (cfg.datapath.stats_interval > 0).then(|| Duration::from_secs(cfg.datapath.stats_interval)),
        last_print: Instant::now(),
        last_rx: 0,
        last_rx_change: Instant::now(),
        stop_after: spec.stop_after,
        linger: spec.linger,
        input_done: None,
        progress: spec.progress,
    };
    if let Some(plan) = main_plan {
        let idx = plan.index;
        let r = worker::run(plan, &shared, Pipeline::new(cfg, spec.link), || control.tick());
        if let Ok(mut v) = reports.lock() {
            v[idx] = Some(r);
        }
    } else {
        while !control.tick() {
            std::thread::sleep(Duration::from_millis(20));
        }
        shared.stop.store(true, Ordering::SeqCst);
    }
    dpdk::wait_all_lcores();
    if let Some(p) = &mut control.progress {
        // (interrupted: the line ends before the final output)
        p.finish(shared.totals().rx);
    }
    // (the control and metrics threads read the pools and ports: stopped first)
    servers.stop();
    let elapsed = control.ready_at.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);

    let reports: Vec<WorkerReport> = std::mem::take(&mut *reports.lock().map_err(|_| "worker report lock poisoned")?)
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.ok_or_else(|| format!("worker {i} did not finish cleanly")))
        .collect::<Result<_, _>>()?;
    let alerts = alert_writer.finish();
    let port_stats: Vec<_> = ports.iter().map(|p| (p.id(), p.stats())).collect();
    for p in &mut ports {
        p.stop_and_close();
    }
    drop(rings);
    drop(channels);
    let reasm_in_use = reasm_pool.as_ref().map_or(0, Mempool::in_use);
    let in_use = pool.in_use() + reasm_in_use;

    let totals = Counters::sum(reports.iter().map(|r| &r.counters));
    let table_bytes: usize = reports.iter().map(|r| r.table_bytes).sum();
    let table_capacity: usize = reports.iter().map(|r| r.table_capacity).sum();
    let stats = json!({
        "program": spec.program,
        "version": VERSION,
        "mode": if passive { "passive" } else { "inline" },
        "workers": workers,
        "dispatch": dispatch_name,
        "dispatch_full": match dispatch_full {
            WhenFull::Wait => "wait",
            WhenFull::Drop => "drop",
        },
        "elapsed_seconds": elapsed,
        "totals": totals.to_json(),
        "per_worker": reports.iter().map(|r| {
            let mut j = r.counters.to_json();
            j["worker"] = r.index.into();
            j["lcore"] = lcores[r.index].into();
            j["flow_table_bytes"] = r.table_bytes.into();
            j["flow_table_capacity"] = r.table_capacity.into();
            j
        }).collect::<Vec<_>>(),
        "ports": port_stats.iter().map(|(id, s)| {
            let info = &ports[*id as usize].info;
            let mut j = serde_json::to_value(s).unwrap_or_default();
            j["port"] = (*id).into();
            j["name"] = info.name.clone().into();
            j["driver"] = info.driver.clone().into();
            j
        }).collect::<Vec<_>>(),
        "mempool": {
            "size": pool.size(),
            "in_use": in_use,
            "reassembly_size": reasm_pool.as_ref().map_or(0, Mempool::size),
            "reassembly_in_use": reasm_in_use,
        },
        "rules_reloads_refused": shared.reloads_refused.load(Ordering::Relaxed),
        "alerts": {
            "raised": alerts.pushed,
            "lost": alerts.lost,
            "stdout": alerts.stdout_written,
            "eve": alerts.eve_written,
            "syslog": alerts.syslog_written,
            "write_errors": alerts.write_errors,
            "redis": alerts.redis_sent,
            "redis_lost": alerts.redis_lost,
        },
        "flow_table": {
            "bytes": table_bytes,
            "capacity": table_capacity,
            "bytes_per_flow": if table_capacity > 0 { table_bytes as f64 / table_capacity as f64 } else { 0.0 },
        },
    });
    if let Some(path) = &spec.stats_file {
        std::fs::write(path, format!("{stats}\n")).map_err(|e| format!("{}: cannot write stats: {e}", path.display()))?;
    }
    if let Some(path) = &spec.flow_dump {
        let lines: String = reports.iter().flat_map(|r| r.flows.iter()).map(|l| format!("{l}\n")).collect();
        std::fs::write(path, lines).map_err(|e| format!("{}: cannot write flow dump: {e}", path.display()))?;
    }
    if spec.verbose {
        println!(
            "final: {} elapsed={elapsed:.1}s mempool_in_use={in_use} alerts={} alerts_lost={}",
            summary(&totals),
            alerts.pushed,
            alerts.lost
        );
        for r in &reports {
            println!("final: worker {} (lcore {}): {}", r.index, lcores[r.index], summary(&r.counters));
        }
        for (id, s) in &port_stats {
            println!(
                "final: port {id}: rx={} tx={} imissed={} rx_nombuf={} ierrors={} oerrors={}",
                s.rx, s.tx, s.imissed, s.rx_nombuf, s.ierrors, s.oerrors
            );
        }
    }
    drop(ports);
    drop(pool);
    drop(reasm_pool);
    drop(eal);
    Ok(RunResult { totals, stats })
}

fn summary(c: &Counters) -> String {
    format!(
        "rx={} processed={} accepted={} tx={} dropped={} malformed={} non_ip={} flows_active={} created={} expired={} evicted={} \
         fragments={} reassembled={} frag_invalid={} frag_timed_out={} frag_evicted={} frag_held={}",
        c.rx,
        c.processed,
        c.accepted,
        c.tx,
        c.dropped_total(),
        c.malformed_total(),
        c.non_ip,
        c.flows_active,
        c.flows_created,
        c.flows_expired,
        c.flows_evicted,
        c.frag_fragments,
        c.frag_reassembled,
        c.frag_invalid,
        c.frag_timed_out,
        c.frag_evicted,
        c.frag_held
    )
}

/// EAL's `--file-prefix` (what secondary processes such as dpdk-dumpcap must be given).
fn file_prefix(eal_args: &[String]) -> String {
    let mut it = eal_args.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--file-prefix=") {
            return v.to_string();
        }
        if a == "--file-prefix" {
            return it.next().cloned().unwrap_or_default();
        }
    }
    "rte".into()
}

/// Before EAL starts: the files haka writes (stats file, flow dump, EVE file), the control
/// socket's directory, the memory the flow tables and pools need.
fn preflight(cfg: &Config, spec: &RunSpec) -> Result<(), String> {
    use crate::ops::check;
    if let Some(p) = &spec.stats_file {
        check::writable_file(p, "--stats-file")?;
    }
    if let Some(p) = &spec.flow_dump {
        check::writable_file(p, "--flow-dump")?;
    }
    if let Some(p) = &cfg.alerts.eve_file {
        check::writable_file(p, "alerts.eve_file")?;
    }
    cfg.alerts.check_syslog()?;
    if !cfg.control.socket.is_empty() {
        check::socket_dir(Path::new(&cfg.control.socket))?;
    }
    check::memory(cfg, spec.eal_args.get(1..).unwrap_or_default())
}

/// `haka --check`: the config (already parsed), the rules, the EAL arguments and the
/// environment they need, every path, the memory; nothing is started.
fn check_only(spec: &RunSpec) -> Result<String, String> {
    let cfg = &spec.config;
    if let Some(path) = &cfg.rules.file {
        LuaEngine::load(path, &lua_options(cfg), 0, Box::new(|_| {}))?;
    }
    crate::ops::check::eal_args(spec.eal_args.get(1..).unwrap_or_default())?;
    preflight(cfg, spec)?;
    Ok(format!(
        "configuration OK: config {}, rules {}, EAL arguments [{}]",
        spec.config_file.as_ref().map_or("(defaults)".into(), |p| p.display().to_string()),
        cfg.rules.file.as_ref().map_or("(none)".into(), |p| p.display().to_string()),
        spec.eal_args.get(1..).unwrap_or_default().join(" ")
    ))
}

/// `--dump-dissector-graph`: loads the rules once and writes the Graphviz file of each
/// grammar and state machine they made into `dir` (created if missing), with Haka's names
/// (`NAME-grammar.dot`, `NAME-state-machine.dot`). Returns the line to print.
fn dump_dissector_graphs(cfg: &Config, dir: &Path) -> Result<String, String> {
    let path = cfg.rules.file.as_ref().ok_or("--dump-dissector-graph: no rules file (-r FILE or [rules] file)")?;
    let engine = LuaEngine::load(path, &lua_options(cfg), 0, Box::new(|_| {}))?;
    let graphs = engine.dissector_graphs()?;
    std::fs::create_dir_all(dir).map_err(|e| format!("--dump-dissector-graph: {}: {e}", dir.display()))?;
    for (name, text) in &graphs {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| format!("--dump-dissector-graph: {}: {e}", p.display()))?;
    }
    let names: Vec<&str> = graphs.iter().map(|(n, _)| n.as_str()).collect();
    let list = if names.is_empty() { " (the rules make no grammar nor state machine)".to_string() } else { format!(": {}", names.join(" ")) };
    Ok(format!("dissector graphs: {} file(s) in {}{list}", graphs.len(), dir.display()))
}

/// The main lcore's periodic duties, run between its own bursts (or in a sleep loop).
struct Control {
    live: Arc<crate::ops::Live>,
    /// Port ids (the stats line's imissed and rx_nombuf).
    ports: Vec<u16>,
    shared: Arc<Shared>,
    signal: Arc<AtomicBool>,
    /// SIGHUP: reload the rules on every worker (between their bursts).
    reload: Arc<AtomicBool>,
    workers: usize,
    verbose: bool,
    ready_line: String,
    ready_at: Option<Instant>,
    stats_every: Option<Duration>,
    last_print: Instant,
    last_rx: u64,
    last_rx_change: Instant,
    stop_after: Option<u64>,
    linger: Duration,
    /// When the offline input was found to be over.
    input_done: Option<Instant>,
    progress: Option<crate::progress::Progress>,
}

impl Control {
    /// Returns true when the run must stop.
    fn tick(&mut self) -> bool {
        if self.ready_at.is_none() {
            if self.shared.polling.load(Ordering::SeqCst) < self.workers {
                return self.signal.load(Ordering::Relaxed);
            }
            self.ready_at = Some(Instant::now());
            self.last_print = Instant::now();
            self.last_rx_change = Instant::now();
            if self.verbose {
                println!("{}", self.ready_line);
                let _ = std::io::stdout().flush();
            }
        }
        if self.signal.load(Ordering::Relaxed) {
            return true;
        }
        if self.reload.swap(false, Ordering::Relaxed) {
            // The same reload as `hakactl reload`, waited for off this lcore.
            println!("reload: rules reload requested (SIGHUP); alert files reopened");
            let _ = std::io::stdout().flush();
            // (logrotate's postrotate: the alert files are reopened too)
            self.live.reopen.request();
            let live = self.live.clone();
            let _ = std::thread::Builder::new().name("haka-reload".into()).spawn(move || match live.reload() {
                Ok(m) => println!("reload: {m}"),
                Err(e) => println!("reload: {e}"),
            });
        }
        let now = Instant::now();
        let totals = self.shared.totals();
        if totals.rx != self.last_rx {
            self.last_rx = totals.rx;
            self.last_rx_change = now;
        }
        if let Some(every) = self.stats_every {
            if now.duration_since(self.last_print) >= every {
                let secs = self.ready_at.map(|t| t.elapsed().as_secs()).unwrap_or(0);
                if self.verbose && crate::logging::core_enabled("info") {
                    let (mut imissed, mut nombuf) = (0, 0);
                    for &p in &self.ports {
                        let s = dpdk::port_stats(p);
                        imissed += s.imissed;
                        nombuf += s.rx_nombuf;
                    }
                    let reasons: Vec<String> = crate::stats::DropReason::ALL
                        .iter()
                        .filter(|r| totals.dropped[**r as usize] > 0)
                        .map(|r| format!("{}:{}", r.name(), totals.dropped[*r as usize]))
                        .collect();
                    let reasons = if reasons.is_empty() { "none".to_string() } else { reasons.join(",") };
                    println!("stats: t={secs}s {} imissed={imissed} rx_nombuf={nombuf} drop_reasons={reasons}", summary(&totals));
                    let _ = std::io::stdout().flush();
                }
                self.last_print = now;
            }
        }
        if let Some(n) = self.stop_after {
            // Offline input is over when all its packets arrived, or nothing came for a
            // second; then the run lingers if asked.
            if self.input_done.is_none()
                && (totals.rx >= n || now.duration_since(self.last_rx_change) > Duration::from_secs(1))
            {
                self.input_done = Some(now);
                if let Some(p) = &mut self.progress {
                    p.finish(totals.rx);
                }
            }
            if self.input_done.is_none() {
                if let Some(p) = &mut self.progress {
                    p.tick(totals.rx);
                }
            }
            if self.input_done.is_some_and(|t| now.duration_since(t) >= self.linger) {
                return true;
            }
        }
        false
    }
}

/// Prints `prog: error: msg` (one line) and returns the exit code.
fn fail(prog: &str, msg: &str) -> i32 {
    eprintln!("{prog}: error: {}", msg.replace('\n', " "));
    1
}

/// clap errors as one line (help and version print normally).
fn clap_error(prog: &str, e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            0
        }
        _ => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad arguments").trim_start_matches("error: ");
            let hint = if prog == "haka" { " (EAL arguments go before `--`; try --help)" } else { " (try --help)" };
            fail(prog, &format!("{first}{hint}"))
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "haka",
    version = VERSION,
    about = "Haka network-security engine on DPDK",
    override_usage = "haka [EAL ARGS] -- [OPTIONS]"
)]
struct HakaArgs {
    /// TOML configuration (default: built-in defaults)
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Lua rules file (overrides the config's rules.file); none: accept everything
    #[arg(short = 'r', long = "rules", value_name = "FILE")]
    rules: Option<PathBuf>,
    /// At exit, write totals and per-worker/per-port figures as one JSON object
    #[arg(long, value_name = "PATH")]
    stats_file: Option<PathBuf>,
    /// At exit, write every live flow as a JSON line (debugging)
    #[arg(long, value_name = "PATH")]
    flow_dump: Option<PathBuf>,
    /// Check the config, rules, EAL arguments, paths and memory, then exit (0: all good)
    #[arg(short = 'T', long = "check")]
    check: bool,
    /// Load the rules, write a Graphviz file of each grammar and state machine they make
    /// (NAME-grammar.dot, NAME-state-machine.dot) to DIR (default: the current folder), exit
    #[arg(long = "dump-dissector-graph", value_name = "DIR", num_args = 0..=1, require_equals = true, default_missing_value = ".")]
    dump_dissector_graph: Option<PathBuf>,
    /// Override a config key: section.key=value (TOML value, or a bare string); repeatable
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    /// Log levels: LEVEL[,SECTION=LEVEL...] (fatal error warning info debug trace); overrides [log] level
    #[arg(long = "loglevel", value_name = "LEVELS")]
    loglevel: Option<String>,
}

/// `haka [EAL args] -- [app args]`; without `--`, every argument is an app argument.
pub fn haka_main(argv: Vec<String>, build: &'static str) -> i32 {
    let prog = "haka";
    let (eal_cli, app_cli): (Vec<String>, Vec<String>) = match argv.iter().position(|a| a == "--") {
        Some(i) => (argv[1..i].to_vec(), argv[i + 1..].to_vec()),
        None => (Vec::new(), argv.get(1..).unwrap_or_default().to_vec()),
    };
    let cmd = <HakaArgs as clap::CommandFactory>::command().version(build);
    let args = match cmd.try_get_matches_from(std::iter::once(prog.to_string()).chain(app_cli)).and_then(|m| <HakaArgs as clap::FromArgMatches>::from_arg_matches(&m)) {
        Ok(a) => a,
        Err(e) => return clap_error(prog, e),
    };
    let mut config = match Config::load_with(args.config.as_deref(), &args.set) {
        Ok(c) => c,
        Err(e) => return fail(prog, &e),
    };
    if let Some(r) = args.rules {
        config.rules.file = Some(r);
    }
    let levels = args.loglevel.as_deref().unwrap_or(&config.log.level);
    match crate::logging::LogSpec::parse(levels) {
        Ok(spec) => crate::logging::set(spec),
        Err(e) => return fail(prog, &format!("--loglevel {levels}: {e}")),
    }
    let mut eal_args = vec![argv.first().cloned().unwrap_or_else(|| prog.into())];
    eal_args.extend(config.eal.args.iter().cloned());
    eal_args.extend(eal_cli);
    let spec = RunSpec {
        program: prog,
        eal_args,
        config,
        link: LinkType::Ethernet,
        stats_file: args.stats_file,
        flow_dump: args.flow_dump,
        stop_after: None,
        verbose: true,
        linger: Duration::ZERO,
        config_file: args.config.clone(),
        build,
        progress: None,
        iface_name: None,
    };
    if let Some(dir) = &args.dump_dissector_graph {
        return match dump_dissector_graphs(&spec.config, dir) {
            Ok(m) => {
                println!("haka: {m}");
                0
            }
            Err(e) => fail(prog, &e),
        };
    }
    if args.check {
        return match check_only(&spec) {
            Ok(m) => {
                println!("haka: {m}");
                0
            }
            Err(e) => fail(prog, &e),
        };
    }
    match run(spec) {
        Ok(_) => 0,
        Err(e) => fail(prog, &e),
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "hakapcap",
    version = VERSION,
    about = "Run the Haka datapath offline over a capture file (through DPDK's net_pcap)"
)]
struct HakapcapArgs {
    /// Lua rules file (may be empty: everything is accepted)
    rules: PathBuf,
    /// Input capture (pcap or pcapng)
    input: PathBuf,
    /// Write accepted packets here, in order
    #[arg(short = 'o', long = "output", value_name = "OUT.pcap")]
    output: Option<PathBuf>,
    /// TOML configuration for the datapath/flows sections (EAL and ports are set by hakapcap)
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Workers (lcores 0..N-1); packet order is kept only with 1
    #[arg(long, default_value_t = 1, value_name = "N")]
    workers: u32,
    /// At exit, write totals and per-worker figures as one JSON object
    #[arg(long, value_name = "PATH")]
    stats_file: Option<PathBuf>,
    /// At exit, write every live flow as a JSON line
    #[arg(long, value_name = "PATH")]
    flow_dump: Option<PathBuf>,
    /// Keep the datapath running SECS seconds after the input ended, so that timers
    /// (fragment timeouts) fire before the final counters
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    linger: f64,
    /// Before the run, write a Graphviz file of each grammar and state machine the rules
    /// make (NAME-grammar.dot, NAME-state-machine.dot) to DIR (default: the current folder)
    #[arg(long = "dump-dissector-graph", value_name = "DIR", num_args = 0..=1, require_equals = true, default_missing_value = ".")]
    dump_dissector_graph: Option<PathBuf>,
}

fn vdev_path(p: &Path, what: &str) -> Result<String, String> {
    let s = p.to_str().ok_or_else(|| format!("{what} path is not UTF-8: {}", p.display()))?;
    if s.contains(',') || s.contains('=') {
        return Err(format!("{what} path must not contain ',' or '=' (DPDK device arguments): {s}"));
    }
    Ok(s.to_string())
}

/// An anonymous file for the tx time log in the temp dir: O_TMPFILE (never has a name),
/// else a new file (O_EXCL: never one planted there) unlinked at once.
fn tx_time_log_file() -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    if let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).mode(0o600).custom_flags(libc::O_TMPFILE).open(&dir) {
        return Ok(f);
    }
    let path = dir.join(format!("hakapcap-{}.txtimes", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("{}: cannot create the tx time log: {e}", path.display()))?;
    let _ = std::fs::remove_file(&path);
    Ok(f)
}

/// Puts the capture times logged in `times` (8 bytes each, in send order) into `out`, in place.
fn restamp_output(out: &Path, mut times: std::fs::File) -> Result<(), String> {
    use std::io::{Read, Seek};
    let log_err = |e: std::io::Error| format!("{}: tx time log: {e}", out.display());
    let count = times.metadata().map_err(log_err)?.len() / 8;
    times.rewind().map_err(log_err)?;
    let mut r = std::io::BufReader::with_capacity(1 << 16, times);
    let ns = std::iter::from_fn(move || {
        let mut b = [0u8; 8];
        r.read_exact(&mut b).ok().map(|_| u64::from_le_bytes(b))
    })
    .map(|t| if t == 0 { 0 } else { worker::rx_time_ns(t) });
    pcapfile::restamp_file(out, count, ns)
}

pub fn hakapcap_main(argv: Vec<String>, build: &'static str) -> i32 {
    let prog = "hakapcap";
    let cmd = <HakapcapArgs as clap::CommandFactory>::command().version(build);
    let args = match cmd.try_get_matches_from(&argv).and_then(|m| <HakapcapArgs as clap::FromArgMatches>::from_arg_matches(&m)) {
        Ok(a) => a,
        Err(e) => return clap_error(prog, e),
    };
    match hakapcap(args, build) {
        Ok(()) => 0,
        Err(e) => fail(prog, &e),
    }
}

fn hakapcap(args: HakapcapArgs, build: &'static str) -> Result<(), String> {
    std::fs::metadata(&args.rules).map_err(|e| format!("{}: cannot read rules: {e}", args.rules.display()))?;
    if args.rules.is_dir() {
        return Err(format!("{}: is a directory, not a rules file", args.rules.display()));
    }
    // (streamed: only the link type and packet count are kept)
    let capture = pcapfile::summarize(&args.input)?;
    let link = pcapfile::dissect_link_type(capture.link_type).ok_or_else(|| {
        format!("{}: unsupported link type {} (supported: Ethernet, raw IP, NULL, Linux SLL)", args.input.display(), capture.link_type)
    })?;
    if args.workers == 0 || args.workers as usize > std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) {
        return Err(format!("--workers {}: must be between 1 and the number of CPUs", args.workers));
    }
    if !(args.linger.is_finite() && (0.0..=3600.0).contains(&args.linger)) {
        return Err(format!("--linger {}: must be between 0 and 3600 seconds", args.linger));
    }
    if args.workers > 1 && args.output.is_some() {
        return Err("-o needs --workers 1: net_pcap writes one output through a single tx queue".into());
    }
    let mut config = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let input = vdev_path(&args.input, "input")?;
    let mut vdev = format!("net_pcap0,rx_pcap={input}");
    if let Some(out) = &args.output {
        vdev.push_str(&format!(",tx_pcap={}", vdev_path(out, "output")?));
        // (passive asked for: the packets are written out, unmodified: read only for the rules)
        config.datapath.pass_through = config.datapath.mode == Mode::Passive;
        config.datapath.mode = Mode::Inline;
        config.ports.pairs = vec![[0, 0]];
    } else {
        config.datapath.mode = Mode::Passive;
    }
    config.rules.file = Some(args.rules.clone());
    // (offline: nothing to operate while it runs)
    config.control.socket.clear();
    config.metrics.listen = None;
    config.datapath.main_lcore_worker = MainLcoreWorker::Yes;
    config.datapath.stats_interval = 0;
    config.ports.rss = false;
    // (one capture, one queue: the flows are shared out by the software dispatcher)
    config.datapath.dispatch = DispatchMode::Auto;
    // One mbuf per captured frame, whatever its size (net_pcap chains otherwise,
    // and the dissector reads the first segment only).
    config.mempool.data_room = u16::MAX;
    config.mempool.mbufs = 2047;
    // Held fragments come from that pool: keep room for the input.
    config.defrag.max_fragments = config.defrag.max_fragments.min(256);
    let eal_args: Vec<String> = [
        "hakapcap",
        "--no-huge",
        "--no-shconf",
        "--no-pci",
        "-m",
        "512",
        "--log-level=*:warning",
        "--no-telemetry",
        "-l",
        &format!("0-{}", args.workers - 1),
        "--vdev",
        &vdev,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(dir) = &args.dump_dissector_graph {
        println!("hakapcap: {}", dump_dissector_graphs(&config, dir)?);
    }
    let expected = capture.packets;
    let spec = RunSpec {
        program: "hakapcap",
        eal_args,
        config,
        link,
        stats_file: args.stats_file.clone(),
        flow_dump: args.flow_dump.clone(),
        stop_after: Some(expected),
        verbose: false,
        linger: Duration::from_secs_f64(args.linger),
        config_file: args.config.clone(),
        build,
        progress: crate::progress::Progress::on_terminal(&args.input, expected),
        iface_name: args.input.file_name().map(|n| n.to_string_lossy().into_owned()),
    };
    if args.output.is_some() {
        dpdk::start_tx_time_log(tx_time_log_file()?);
    }
    let result = run(spec);
    let tx_times = args.output.is_some().then(dpdk::finish_tx_time_log);
    let result = result?;
    if let (Some(out), Some(times)) = (&args.output, tx_times) {
        // net_pcap stamps what it writes with the wall clock; a packet keeps its capture
        // time, as in Haka (one a rule created keeps the wall clock). net_pcap always
        // writes an Ethernet header: the input's link type is restored.
        if capture.link_type != pcapfile::LINKTYPE_ETHERNET {
            pcapfile::set_link_type(out, capture.link_type)?;
        }
        if let Err(e) = times.map_err(|e| format!("{}: tx time log: {e}", out.display())).and_then(|f| restamp_output(out, f)) {
            eprintln!("hakapcap: capture times not restored: {e}");
        }
    }
    let t = &result.totals;
    println!(
        "hakapcap: {}: {} packets, {} accepted, {} dropped ({} malformed), {} flows",
        args.input.display(),
        t.rx,
        t.accepted,
        t.dropped_total(),
        t.malformed_total(),
        t.flows_created
    );
    if t.rx != expected {
        return Err(format!("{}: read {} of {expected} packets", args.input.display(), t.rx));
    }
    Ok(())
}
