//! Alert output: workers never block on alerts.
//!
//! Workers (busy-polling lcores) build an [`Alert`] and [`AlertQueue::push`] it into a
//! bounded lock-free queue; when the queue is full the alert is dropped and counted in
//! [`AlertQueue::lost`]. A plain `std::thread` ([`AlertWriter`]) drains the queue and writes
//! each alert to the configured outputs ([`AlertsConfig`]):
//! - stdout, in Haka's pretty format ([`format::pretty`], from `lib/haka/alert.c`
//!   `alert_tostring` + `modules/alert/file/main.c`);
//! - an EVE-style JSON-lines file ([`format::eve_json`]);
//! - syslog (facility LOCAL0, LOG_NOTICE, Haka's oneline `"alert: ..."`), sent as an RFC 3164
//!   datagram to `/dev/log` with std's `UnixDatagram` (no libc call, no `unsafe`).

pub mod format;
pub mod redis;

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_queue::ArrayQueue;
use serde::Deserialize;

/// The 5-tuple of the flow an alert was raised on, as text for output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowInfo {
    /// IP protocol number (6 = TCP, 17 = UDP, 1 = ICMP, ...).
    pub proto: u8,
    pub src: String,
    pub sport: u16,
    pub dst: String,
    pub dport: u16,
}

/// What SIEMs key on, added to Haka's keys: EVE `flow_id`, `in_iface`, `alert.rule`,
/// `alert.signature_id`, `alert.action`, `app_proto` and the application's metadata in
/// Suricata's layout (`http`, `dns`, `tls`). Gathered only when an alert is raised.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Siem {
    /// The flow's id, as in flow dumps ([`crate::flow::flow_uid`]).
    pub flow_id: Option<u64>,
    /// The port the packet came in on (its DPDK name; hakapcap: the input file's name).
    pub in_iface: Option<String>,
    /// The rule's `name`, else FILE:LINE of its haka.rule call (None: raised by the engine).
    pub rule: Option<String>,
    /// The rule's `id` when it has one, else [`signature_id_of`] its `rule`.
    pub signature_id: Option<u32>,
    /// The packet (or its connection) was dropped: EVE `"action": "blocked"`.
    pub blocked: bool,
    /// `http`, `dns`, `tls` (the flow's application dissector).
    pub app_proto: Option<String>,
    pub http: Option<HttpMeta>,
    pub dns: Option<DnsMeta>,
    pub tls: Option<TlsMeta>,
}

/// EVE `http` (Suricata's names).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HttpMeta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// EVE `dns` (Suricata's version 2 layout of a query: `type`, `rrname`, `rrtype`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DnsMeta {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rrname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rrtype: Option<String>,
}

/// EVE `tls`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TlsMeta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
}

/// The signature id of a rule that has no `id`: FNV-1a of its name (or FILE:LINE), in
/// 31 bits (consumers that read it as a signed 32-bit number keep it positive), never 0.
pub fn signature_id_of(rule: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in rule.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    (h & 0x7fff_ffff).max(1)
}

/// One alert (or alert update) raised by a rule: the keys of Haka's `haka.alert{...}`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Alert {
    /// Unique per process: see [`alert_id`] / [`AlertIdGen`].
    pub id: u64,
    /// When the alert was raised (unix time, seconds).
    pub time_secs: f64,
    /// Haka's `start_time` key (unix seconds), if given.
    pub start_time: Option<f64>,
    /// Haka's `end_time` key (unix seconds), if given.
    pub end_time: Option<f64>,
    pub description: Option<String>,
    /// `low|medium|high`.
    pub severity: Option<String>,
    /// `low|medium|high` or a number as text.
    pub confidence: Option<String>,
    /// `failed|successful`.
    pub completion: Option<String>,
    pub method_description: Option<String>,
    pub method_ref: Vec<String>,
    /// Addresses (`"192.168.10.10"`) or services (`"tcp/80"`, anything with a `/`).
    pub sources: Vec<String>,
    pub targets: Vec<String>,
    /// Ids of related alerts (Haka's `ref` key).
    pub refs: Vec<u64>,
    pub flow: Option<FlowInfo>,
    /// `"up"` or `"down"`.
    pub direction: Option<String>,
    /// Index of the worker that raised it.
    pub worker: usize,
    /// True for `alert:update{...}` (same id as the alert it updates).
    pub update: bool,
    /// The SIEM fields (EVE and syslog in EVE format only; Haka's layouts leave them out).
    pub siem: Siem,
    /// Not empty: not an alert but lines a worker's rules logged, queued with its
    /// alerts so that stdout shows both in the order they were raised, as Haka's
    /// single thread printed them ([`AlertQueue::push_console`]).
    pub console: Vec<u8>,
}

/// Bits of an alert id holding the per-worker counter; the worker index is above them.
pub const ALERT_ID_COUNTER_BITS: u32 = 48;

/// `worker << 48 | (counter & (2^48 - 1))`: unique per process without any shared counter.
/// With one worker and counters starting at 1 the ids are 1, 2, 3... like Haka's.
pub fn alert_id(worker: usize, counter: u64) -> u64 {
    ((worker as u64) << ALERT_ID_COUNTER_BITS) | (counter & ((1u64 << ALERT_ID_COUNTER_BITS) - 1))
}

/// Per-worker alert id generator (no atomics): ids [`alert_id`]`(worker, 1)`, `(worker, 2)`, ...
#[derive(Clone, Debug)]
pub struct AlertIdGen {
    worker: usize,
    counter: u64,
}

impl AlertIdGen {
    pub fn new(worker: usize) -> AlertIdGen {
        AlertIdGen { worker, counter: 0 }
    }

    pub fn next_id(&mut self) -> u64 {
        self.counter += 1;
        alert_id(self.worker, self.counter)
    }
}

/// Current unix time in seconds (wall clock).
pub fn unix_time_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Bounded lock-free multi-producer queue of alerts. [`push`](Self::push) never blocks.
pub struct AlertQueue {
    q: ArrayQueue<Alert>,
    pushed: AtomicU64,
    lost: AtomicU64,
}

impl AlertQueue {
    /// `capacity` must be > 0 (the config enforces a power of two >= 64).
    pub fn new(capacity: usize) -> AlertQueue {
        AlertQueue {
            q: ArrayQueue::new(capacity.max(1)),
            pushed: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        }
    }

    /// Enqueues `alert`; if the queue is full the alert is dropped, counted as lost, and
    /// `false` is returned. Never blocks, never allocates.
    pub fn push(&self, alert: Alert) -> bool {
        match self.q.push(alert) {
            Ok(()) => {
                self.pushed.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_dropped) => {
                self.lost.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Enqueues log lines of a worker behind its alerts (not counted as alerts);
    /// hands them back when the queue is full (the caller writes them itself).
    pub fn push_console(&self, text: Vec<u8>) -> Result<(), Vec<u8>> {
        self.q.push(Alert { console: text, ..Alert::default() }).map_err(|a| a.console)
    }

    /// Dequeues the oldest alert, if any (used by the output thread).
    pub fn pop(&self) -> Option<Alert> {
        self.q.pop()
    }

    /// Alerts accepted so far.
    pub fn pushed(&self) -> u64 {
        self.pushed.load(Ordering::Relaxed)
    }

    /// Alerts dropped because the queue was full.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.q.len()
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.q.capacity()
    }
}

/// `[alerts]` section of the configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Write alerts to stdout in Haka's pretty format.
    pub stdout: bool,
    /// Append EVE-style JSON lines to this file.
    pub eve_file: Option<PathBuf>,
    /// Send alerts to syslog (LOCAL0, LOG_NOTICE).
    pub syslog: bool,
    /// The syslog daemon's socket (checked at start when `syslog` is on).
    pub syslog_socket: PathBuf,
    /// The syslog message: the EVE JSON line ("eve", SIEM fields included) or Haka's
    /// oneline layout ("haka").
    pub syslog_format: SyslogFormat,
    /// Capacity of the alert queue (power of two >= 64).
    pub queue_size: usize,
    /// `[alerts.redis]`: alerts also sent to Redis.
    pub redis: Option<redis::RedisConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            stdout: true,
            eve_file: None,
            syslog: false,
            syslog_socket: PathBuf::from(SYSLOG_SOCKET),
            syslog_format: SyslogFormat::Eve,
            queue_size: 4096,
            redis: None,
        }
    }
}

/// `[alerts] syslog_format`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SyslogFormat {
    /// The EVE JSON line, as Suricata's syslog EVE output.
    #[default]
    Eve,
    /// Haka's `alert/syslog` message: `alert: id = ... ` (no SIEM fields).
    Haka,
}

/// Largest accepted `alerts.queue_size`.
pub const MAX_ALERT_QUEUE_SIZE: usize = 1 << 24;

impl AlertsConfig {
    /// One-line error naming the key.
    pub fn validate(&self) -> Result<(), String> {
        let q = self.queue_size;
        if q < 64 || !q.is_power_of_two() {
            return Err(format!(
                "alerts.queue_size = {q}: must be a power of two >= 64"
            ));
        }
        if q > MAX_ALERT_QUEUE_SIZE {
            return Err(format!(
                "alerts.queue_size = {q}: must be at most {MAX_ALERT_QUEUE_SIZE}"
            ));
        }
        if let Some(p) = &self.eve_file {
            if p.as_os_str().is_empty() {
                return Err("alerts.eve_file = \"\": must be a file path".into());
            }
        }
        if let Some(r) = &self.redis {
            r.validate()?;
        }
        Ok(())
    }

    /// With `syslog` on: the syslog socket is there (else alerts would be lost silently).
    /// One line naming the fix.
    pub fn check_syslog(&self) -> Result<(), String> {
        use std::os::unix::fs::FileTypeExt;
        if !self.syslog {
            return Ok(());
        }
        let p = &self.syslog_socket;
        match std::fs::metadata(p) {
            Ok(m) if m.file_type().is_socket() => Ok(()),
            Ok(_) => Err(format!(
                "alerts.syslog = true: {} is not a socket; is a syslog daemon running? (start rsyslog or systemd-journald, set alerts.syslog_socket, or alerts.syslog = false)",
                p.display()
            )),
            Err(_) => Err(format!(
                "alerts.syslog = true: {} does not exist: no syslog daemon (install and start one: apt-get install rsyslog && service rsyslog start; or set alerts.syslog_socket, or alerts.syslog = false)",
                p.display()
            )),
        }
    }
}

/// Counts returned by [`AlertWriter::finish`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlertTotals {
    /// Alerts accepted by the queue.
    pub pushed: u64,
    /// Alerts dropped because the queue was full.
    pub lost: u64,
    /// Alerts taken out of the queue by the output thread.
    pub drained: u64,
    /// Alerts written to stdout.
    pub stdout_written: u64,
    /// Alerts written to the EVE file.
    pub eve_written: u64,
    /// Alerts sent to syslog.
    pub syslog_written: u64,
    /// Failed writes/sends over all outputs (the alert is skipped for that output).
    pub write_errors: u64,
    /// Alerts stored by Redis, and those that could not be delivered to it.
    pub redis_sent: u64,
    pub redis_lost: u64,
}

/// Where syslog datagrams go.
const SYSLOG_SOCKET: &str = "/dev/log";
/// How long to wait before reconnecting to syslog after a failure.
const SYSLOG_RETRY: Duration = Duration::from_secs(1);
/// Output thread sleep when the queue is empty.
const IDLE_SLEEP: Duration = Duration::from_millis(5);
/// Alerts written between two stop-flag/flush checks under load.
const BATCH: usize = 256;
/// Longest time buffered output waits for a flush under sustained load.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

struct SyslogSink {
    sock: Option<UnixDatagram>,
    path: PathBuf,
    pid: u32,
    retry_at: Option<Instant>,
    format: SyslogFormat,
}

impl SyslogSink {
    #[cfg(test)]
    fn new(path: &Path) -> SyslogSink {
        Self::with_format(path, SyslogFormat::Haka)
    }

    fn with_format(path: &Path, format: SyslogFormat) -> SyslogSink {
        let mut s = SyslogSink {
            sock: None,
            path: path.to_path_buf(),
            pid: std::process::id(),
            retry_at: None,
            format,
        };
        // Like openlog(LOG_NDELAY): connect now; failing is not fatal (as with glibc).
        s.connect();
        s
    }

    fn connect(&mut self) -> bool {
        match UnixDatagram::unbound().and_then(|s| s.connect(&self.path).map(|()| s)) {
            Ok(s) => {
                self.sock = Some(s);
                self.retry_at = None;
                true
            }
            Err(_) => {
                self.retry_at = Some(Instant::now() + SYSLOG_RETRY);
                false
            }
        }
    }

    fn send(&mut self, a: &Alert) -> io::Result<()> {
        if self.sock.is_none() {
            let may_retry = self.retry_at.is_none_or(|t| Instant::now() >= t);
            if !may_retry || !self.connect() {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "syslog unavailable",
                ));
            }
        }
        let msg = match self.format {
            SyslogFormat::Haka => format::syslog_datagram(a, self.pid, unix_time_now()),
            SyslogFormat::Eve => format::syslog_datagram_with(&format::eve_json(a), self.pid, unix_time_now()),
        };
        let sock = self
            .sock
            .as_ref()
            .ok_or_else(|| io::Error::other("no socket"))?;
        match sock.send(msg.as_bytes()) {
            Ok(_) => Ok(()),
            Err(e) => {
                // syslogd restarted? Reconnect (rate-limited) on the next alert.
                self.sock = None;
                self.retry_at = Some(Instant::now() + SYSLOG_RETRY);
                Err(e)
            }
        }
    }
}

/// Asks the alert thread to reopen its files (SIGHUP, `hakactl reopen`: logrotate's
/// postrotate). `requested` is bumped by the asker; the thread sets `done` to the request
/// it served, with the outcome in `outcome`.
pub struct Reopen {
    requested: AtomicU64,
    done: AtomicU64,
    outcome: std::sync::Mutex<Result<String, String>>,
}

impl Default for Reopen {
    fn default() -> Self {
        Reopen { requested: AtomicU64::new(0), done: AtomicU64::new(0), outcome: std::sync::Mutex::new(Ok(String::new())) }
    }
}

impl Reopen {
    /// Asks for a reopen and waits up to `timeout` for it: Ok(what was reopened) or the
    /// error (the previous file is kept then).
    pub fn reopen_and_wait(&self, timeout: Duration) -> Result<String, String> {
        let me = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let deadline = Instant::now() + timeout;
        while self.done.load(Ordering::Acquire) < me {
            if Instant::now() >= deadline {
                return Err("the alert thread did not answer in time".into());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.outcome.lock().map(|o| o.clone()).unwrap_or_else(|_| Err("alert thread failed".into()))
    }

    /// Asks for a reopen without waiting (from a signal flag).
    pub fn request(&self) {
        self.requested.fetch_add(1, Ordering::SeqCst);
    }
}

struct Outputs {
    stdout: Option<Box<dyn Write + Send>>,
    /// Log lines when alerts do not go to stdout.
    console: BufWriter<io::Stdout>,
    eve: Option<BufWriter<File>>,
    eve_path: Option<PathBuf>,
    syslog: Option<SyslogSink>,
    redis: Option<redis::RedisSink>,
    totals: AlertTotals,
}

impl Outputs {
    fn write(&mut self, a: &Alert) {
        if !a.console.is_empty() {
            // log lines: stdout, wherever the alerts go
            let w: &mut dyn Write = match self.stdout.as_mut() {
                Some(w) => w,
                None => &mut self.console,
            };
            if w.write_all(&a.console).is_err() {
                self.totals.write_errors += 1;
            }
            return;
        }
        self.totals.drained += 1;
        if let Some(w) = self.stdout.as_mut() {
            match w.write_all(format::pretty(a).as_bytes()) {
                Ok(()) => self.totals.stdout_written += 1,
                Err(_) => self.totals.write_errors += 1,
            }
        }
        if let Some(w) = self.eve.as_mut() {
            let mut line = format::eve_json(a);
            line.push('\n');
            match w.write_all(line.as_bytes()) {
                Ok(()) => self.totals.eve_written += 1,
                Err(_) => self.totals.write_errors += 1,
            }
        }
        if let Some(r) = self.redis.as_mut() {
            r.push(format::eve_json(a));
        }
        if let Some(s) = self.syslog.as_mut() {
            match s.send(a) {
                Ok(()) => self.totals.syslog_written += 1,
                Err(_) => self.totals.write_errors += 1,
            }
        }
    }

    /// Reopens the EVE file at its configured path (the old one was moved away): what
    /// was written so far goes to the old file first. On failure the old file is kept.
    fn reopen(&mut self) -> Result<String, String> {
        let (Some(w), Some(p)) = (self.eve.as_mut(), self.eve_path.as_ref()) else {
            return Ok("no alert file to reopen".into());
        };
        if w.flush().is_err() {
            self.totals.write_errors += 1;
        }
        let f = open_eve(p)?;
        *w = BufWriter::new(f);
        Ok(format!("reopened {}", p.display()))
    }

    fn flush(&mut self) {
        if let Some(r) = self.redis.as_mut() {
            r.flush();
        }
        if self.console.flush().is_err() {
            self.totals.write_errors += 1;
        }
        if let Some(w) = self.stdout.as_mut() {
            if w.flush().is_err() {
                self.totals.write_errors += 1;
            }
        }
        if let Some(w) = self.eve.as_mut() {
            if w.flush().is_err() {
                self.totals.write_errors += 1;
            }
        }
    }
}

fn run(queue: Arc<AlertQueue>, stop: Arc<AtomicBool>, reopen: Arc<Reopen>, mut out: Outputs) -> AlertTotals {
    let mut last_flush = Instant::now();
    let mut dirty = false;
    let mut served = 0;
    loop {
        let asked = reopen.requested.load(Ordering::Acquire);
        if asked != served {
            let r = out.reopen();
            match &r {
                Ok(m) => println!("alerts: {m}"),
                Err(e) => println!("alerts: reopen failed, still writing to the previous file: {e}"),
            }
            if let Ok(mut o) = reopen.outcome.lock() {
                *o = r;
            }
            served = asked;
            reopen.done.store(asked, Ordering::Release);
        }
        let mut n = 0;
        while n < BATCH {
            match queue.pop() {
                Some(a) => {
                    out.write(&a);
                    n += 1;
                }
                None => break,
            }
        }
        if n > 0 || out.redis.as_ref().is_some_and(redis::RedisSink::has_pending) {
            dirty = true;
        }
        if dirty && (n < BATCH || last_flush.elapsed() >= FLUSH_EVERY) {
            out.flush();
            dirty = false;
            last_flush = Instant::now();
        }
        if n == 0 {
            // Queue empty: stop only now, so everything pushed before `finish` is written.
            if stop.load(Ordering::Acquire) {
                if queue.is_empty() {
                    break;
                }
                continue;
            }
            std::thread::sleep(IDLE_SLEEP);
        }
    }
    out.flush();
    if let Some(r) = out.redis.as_mut() {
        r.finish();
        out.totals.redis_sent = redis::SENT.load(Ordering::Relaxed);
        out.totals.redis_lost = redis::LOST.load(Ordering::Relaxed);
    }
    out.totals
}

/// The alert output thread.
pub struct AlertWriter {
    queue: Arc<AlertQueue>,
    stop: Arc<AtomicBool>,
    reopen: Arc<Reopen>,
    handle: Option<JoinHandle<AlertTotals>>,
}

impl AlertWriter {
    /// Opens the configured outputs and starts the output thread (`haka-alerts`).
    /// Errors (config invalid, EVE file not openable, thread not spawnable) are one line.
    pub fn spawn(queue: Arc<AlertQueue>, cfg: &AlertsConfig) -> Result<AlertWriter, String> {
        let stdout: Option<Box<dyn Write + Send>> = if cfg.stdout {
            Some(Box::new(BufWriter::new(io::stdout())))
        } else {
            None
        };
        Self::spawn_with_stdout(queue, cfg, stdout)
    }

    /// Like [`spawn`](Self::spawn) but the pretty output (when `cfg.stdout`) goes to `sink`
    /// instead of the process stdout (tests, embedding).
    pub fn spawn_with_stdout_sink(
        queue: Arc<AlertQueue>,
        cfg: &AlertsConfig,
        sink: Box<dyn Write + Send>,
    ) -> Result<AlertWriter, String> {
        Self::spawn_with_stdout(queue, cfg, cfg.stdout.then_some(sink))
    }

    fn spawn_with_stdout(
        queue: Arc<AlertQueue>,
        cfg: &AlertsConfig,
        stdout: Option<Box<dyn Write + Send>>,
    ) -> Result<AlertWriter, String> {
        cfg.validate()?;
        let eve = match &cfg.eve_file {
            Some(p) => Some(BufWriter::new(open_eve(p)?)),
            None => None,
        };
        let syslog = cfg
            .syslog
            .then(|| SyslogSink::with_format(&cfg.syslog_socket, cfg.syslog_format));
        let redis = cfg.redis.as_ref().map(redis::RedisSink::new).transpose()?;
        let out = Outputs {
            stdout,
            console: BufWriter::new(io::stdout()),
            eve,
            eve_path: cfg.eve_file.clone(),
            syslog,
            redis,
            totals: AlertTotals::default(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let reopen = Arc::new(Reopen::default());
        let (q, s, r) = (Arc::clone(&queue), Arc::clone(&stop), Arc::clone(&reopen));
        let handle = std::thread::Builder::new()
            .name("haka-alerts".into())
            .spawn(move || run(q, s, r, out))
            .map_err(|e| format!("alerts: cannot start the output thread: {e}"))?;
        Ok(AlertWriter {
            queue,
            stop,
            reopen,
            handle: Some(handle),
        })
    }

    /// Reopens the alert files (SIGHUP, `hakactl reopen`).
    pub fn reopen_handle(&self) -> Arc<Reopen> {
        Arc::clone(&self.reopen)
    }

    /// The queue this writer drains.
    pub fn queue(&self) -> &Arc<AlertQueue> {
        &self.queue
    }

    /// Writes everything still queued, flushes, joins the thread and returns the counts.
    /// Call it after the workers have stopped pushing.
    pub fn finish(mut self) -> AlertTotals {
        let mut t = self.stop_and_join();
        t.pushed = self.queue.pushed();
        t.lost = self.queue.lost();
        t
    }

    fn stop_and_join(&mut self) -> AlertTotals {
        self.stop.store(true, Ordering::Release);
        match self.handle.take() {
            Some(h) => h.join().unwrap_or_default(),
            None => AlertTotals::default(),
        }
    }
}

impl Drop for AlertWriter {
    fn drop(&mut self) {
        if self.handle.is_some() {
            self.stop_and_join();
        }
    }
}

/// Opens (creates, appends to) the EVE file; the error is one line naming the file.
fn open_eve(p: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .map_err(|e| format!("alerts.eve_file = {}: cannot open: {e}", p.display()))
}

#[cfg(test)]
mod tests;
