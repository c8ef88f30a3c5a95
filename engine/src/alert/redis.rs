//! The Redis alert sink (`[alerts.redis]`): EVE JSON lines sent from the alert thread,
//! batched and pipelined (one write of every queued command, then their replies), with
//! `RPUSH` (mode "list"), `XADD KEY * alert JSON` ("stream") or `PUBLISH` ("publish").
//! A lost connection is retried with a backoff (100 ms doubling to 5 s); meanwhile alerts
//! wait (up to `max_pending`); those that cannot be delivered (past that bound, or refused
//! by Redis) are counted lost. Workers never wait on it: they only push to the alert queue.
//!
//! Exactly once per batch: a batch is one transaction, `MULTI`, its commands, `SET
//! KEY:haka-batch INSTANCE:SEQ EX 86400`, `EXEC`, so that Redis applies all of it or
//! nothing, with its marker. When the connection breaks before EXEC's reply arrived,
//! the batch is in doubt: after reconnecting, `GET KEY:haka-batch` tells whether it was
//! applied (then it counts as sent) or not (then it is sent again).
use serde::Deserialize;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `[alerts.redis]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[:PASSWORD@]HOST[:PORT][/DB]`.
    pub url: String,
    /// "list" (RPUSH), "stream" (XADD) or "publish" (PUBLISH).
    pub mode: RedisMode,
    /// The list, stream or channel.
    pub key: String,
    /// Alerts kept while Redis is unreachable; beyond, counted lost.
    pub max_pending: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig { url: "redis://127.0.0.1:6379".into(), mode: RedisMode::List, key: "haka-alerts".into(), max_pending: 65536 }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    #[default]
    List,
    Stream,
    Publish,
}

/// Alerts delivered to Redis / lost for it, process-wide (metrics, stats file).
pub static SENT: AtomicU64 = AtomicU64::new(0);
pub static LOST: AtomicU64 = AtomicU64::new(0);

/// The parts of a `redis://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisUrl {
    pub host: String,
    pub port: u16,
    pub password: Option<String>,
    pub db: Option<u32>,
}

pub fn parse_url(url: &str) -> Result<RedisUrl, String> {
    let bad = || format!("alerts.redis.url = \"{url}\": expected redis://[:PASSWORD@]HOST[:PORT][/DB]");
    let rest = url.strip_prefix("redis://").ok_or_else(bad)?;
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((a, r)) => (Some(a), r),
        None => (None, rest),
    };
    let (hostport, db) = match rest.split_once('/') {
        Some((h, d)) if !d.is_empty() => (h, Some(d.parse::<u32>().map_err(|_| bad())?)),
        Some((h, _)) => (h, None),
        None => (rest, None),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (h.trim_matches(|c| c == '[' || c == ']'), p.parse::<u16>().map_err(|_| bad())?),
        _ => (hostport, 6379),
    };
    if host.is_empty() {
        return Err(bad());
    }
    let password = auth.map(|a| a.split_once(':').map_or(a, |(_, p)| p).to_string()).filter(|p| !p.is_empty());
    Ok(RedisUrl { host: host.to_string(), port, password, db })
}

impl RedisConfig {
    pub fn validate(&self) -> Result<(), String> {
        parse_url(&self.url)?;
        if self.key.is_empty() {
            return Err("alerts.redis.key = \"\": must not be empty".into());
        }
        if self.max_pending == 0 {
            return Err("alerts.redis.max_pending = 0: must be at least 1".into());
        }
        Ok(())
    }
}

fn resp(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Reads one reply; Err on an I/O error or a malformed reply, Ok(Err(msg)) for `-ERR`.
fn read_reply(r: &mut BufReader<TcpStream>) -> std::io::Result<Result<(), String>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad reply");
    let body = line.trim_end();
    match body.as_bytes().first() {
        Some(b'+') | Some(b':') => Ok(Ok(())),
        Some(b'-') => Ok(Err(body[1..].to_string())),
        Some(b'$') => {
            let n: i64 = body[1..].parse().map_err(|_| bad())?;
            if n >= 0 {
                let mut buf = vec![0u8; n as usize + 2];
                std::io::Read::read_exact(r, &mut buf)?;
            }
            Ok(Ok(()))
        }
        Some(b'*') => {
            let n: i64 = body[1..].parse().map_err(|_| bad())?;
            for _ in 0..n.max(0) {
                if let Err(e) = read_reply(r)? {
                    return Ok(Err(e));
                }
            }
            Ok(Ok(()))
        }
        _ => Err(bad()),
    }
}

/// Reads a bulk string reply (None: nil).
fn read_bulk(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad reply {:?}", line.trim_end()));
    let body = line.trim_end();
    let n: i64 = body.strip_prefix('$').ok_or_else(bad)?.parse().map_err(|_| bad())?;
    if n < 0 {
        return Ok(None);
    }
    let mut buf = vec![0u8; n as usize + 2];
    std::io::Read::read_exact(r, &mut buf)?;
    buf.truncate(n as usize);
    Ok(Some(buf))
}

/// The replies of `MULTI`, `queued` commands and `EXEC`: Ok(Ok(None)) all applied,
/// Ok(Ok(Some((count, message)))) applied but `count` commands failed, Ok(Err(message))
/// the transaction was refused whole; Err: the connection broke (outcome unknown).
#[allow(clippy::type_complexity)]
fn read_transaction(r: &mut BufReader<TcpStream>, queued: usize) -> std::io::Result<Result<Option<(usize, String)>, String>> {
    let mut refused = None;
    for _ in 0..queued + 1 {
        // +OK for MULTI, +QUEUED for each command (or an error: EXEC then aborts)
        if let Err(m) = read_reply(r)? {
            refused.get_or_insert(m);
        }
    }
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    let body = line.trim_end();
    if let Some(m) = body.strip_prefix('-') {
        return Ok(Err(refused.unwrap_or_else(|| m.to_string())));
    }
    let n: i64 = body
        .strip_prefix('*')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad EXEC reply"))?;
    if n < 0 {
        return Ok(Err("transaction aborted".into()));
    }
    let mut failed: Option<(usize, String)> = None;
    for _ in 0..n {
        if let Err(m) = read_reply(r)? {
            let f = failed.get_or_insert((0, m));
            f.0 += 1;
        }
    }
    Ok(Ok(failed))
}

pub struct RedisSink {
    cfg: RedisConfig,
    url: RedisUrl,
    conn: Option<(TcpStream, BufReader<TcpStream>)>,
    pending: Vec<String>,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// The last error, logged once per outage.
    logged: bool,
    /// `KEY:haka-batch`, and this process's `INSTANCE:` prefix of its values.
    marker_key: String,
    instance: String,
    /// Sequence number of the last batch sent.
    seq: u64,
    /// The batch of that sequence number was sent but its outcome is unknown: its first
    /// `n` pending alerts.
    in_doubt: Option<(u64, usize)>,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Commands per pipelined write.
const BATCH: usize = 512;

impl RedisSink {
    pub fn new(cfg: &RedisConfig) -> Result<RedisSink, String> {
        cfg.validate()?;
        let mut s = RedisSink {
            cfg: cfg.clone(),
            url: parse_url(&cfg.url)?,
            conn: None,
            pending: Vec::new(),
            retry_at: None,
            backoff: BACKOFF_MIN,
            logged: false,
            marker_key: format!("{}:haka-batch", cfg.key),
            instance: format!(
                "{}-{}",
                std::process::id(),
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
            ),
            seq: 0,
            in_doubt: None,
        };
        if let Err(e) = s.connect() {
            println!("alerts: redis {}: {e}; retrying in the background (alerts wait, up to {})", cfg.url, cfg.max_pending);
            s.logged = true;
            s.retry_at = Some(Instant::now() + s.backoff);
        }
        Ok(s)
    }

    fn connect(&mut self) -> Result<(), String> {
        let addr = (self.url.host.as_str(), self.url.port)
            .to_socket_addrs()
            .map_err(|e| e.to_string())?
            .next()
            .ok_or("no address")?;
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
        let _ = s.set_nodelay(true);
        let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
        let mut w = s;
        let mut cmd = Vec::new();
        let mut n = 0;
        if let Some(p) = &self.url.password {
            resp(&mut cmd, &[b"AUTH", p.as_bytes()]);
            n += 1;
        }
        if let Some(db) = self.url.db {
            resp(&mut cmd, &[b"SELECT", db.to_string().as_bytes()]);
            n += 1;
        }
        if n > 0 {
            w.write_all(&cmd).map_err(|e| e.to_string())?;
            for _ in 0..n {
                read_reply(&mut r).map_err(|e| e.to_string())??;
            }
        }
        self.conn = Some((w, r));
        self.backoff = BACKOFF_MIN;
        self.retry_at = None;
        if self.logged {
            println!("alerts: redis {}: connected", self.cfg.url);
            self.logged = false;
        }
        Ok(())
    }

    /// Queues an alert (its EVE line).
    pub fn push(&mut self, line: String) {
        if self.pending.len() >= self.cfg.max_pending {
            LOST.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.pending.push(line);
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn down(&mut self, e: &str) {
        self.conn = None;
        if !self.logged {
            println!("alerts: redis {}: {e}; reconnecting (alerts wait, up to {})", self.cfg.url, self.cfg.max_pending);
            self.logged = true;
        }
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Sends what is pending (one transaction per batch), connecting when due.
    pub fn flush(&mut self) {
        while !self.pending.is_empty() {
            if self.conn.is_none() {
                if self.retry_at.is_some_and(|t| Instant::now() < t) {
                    return;
                }
                if let Err(e) = self.connect().and_then(|()| self.settle_in_doubt()) {
                    self.down(&e);
                    return;
                }
                if self.pending.is_empty() {
                    return;
                }
            }
            let n = self.pending.len().min(BATCH);
            self.seq += 1;
            let marker = format!("{}:{}", self.instance, self.seq);
            let mut cmd = Vec::with_capacity(n * 512 + 128);
            let key = self.cfg.key.as_bytes();
            resp(&mut cmd, &[b"MULTI"]);
            for l in &self.pending[..n] {
                match self.cfg.mode {
                    RedisMode::List => resp(&mut cmd, &[b"RPUSH", key, l.as_bytes()]),
                    RedisMode::Stream => resp(&mut cmd, &[b"XADD", key, b"*", b"alert", l.as_bytes()]),
                    RedisMode::Publish => resp(&mut cmd, &[b"PUBLISH", key, l.as_bytes()]),
                }
            }
            resp(&mut cmd, &[b"SET", self.marker_key.as_bytes(), marker.as_bytes(), b"EX", b"86400"]);
            resp(&mut cmd, &[b"EXEC"]);
            // From the first byte written until EXEC's reply, the batch is in doubt.
            self.in_doubt = Some((self.seq, n));
            let Some((w, r)) = self.conn.as_mut() else { return };
            if let Err(e) = w.write_all(&cmd).and_then(|_| w.flush()) {
                self.down(&e.to_string());
                return;
            }
            match read_transaction(r, n + 1) {
                Ok(Ok(failed)) => {
                    // (the marker's SET is the last reply: not an alert)
                    self.in_doubt = None;
                    if let Some((count, msg)) = failed {
                        println!("alerts: redis {}: {count} alerts refused: {msg}", self.cfg.url);
                        LOST.fetch_add(count as u64, Ordering::Relaxed);
                        SENT.fetch_add((n - count.min(n)) as u64, Ordering::Relaxed);
                    } else {
                        SENT.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    self.pending.drain(..n);
                }
                Ok(Err(msg)) => {
                    // the transaction was refused whole (EXECABORT): nothing applied
                    self.in_doubt = None;
                    println!("alerts: redis {}: {n} alerts refused: {msg}", self.cfg.url);
                    LOST.fetch_add(n as u64, Ordering::Relaxed);
                    self.pending.drain(..n);
                }
                Err(e) => {
                    self.down(&e.to_string());
                    return;
                }
            }
        }
    }

    /// Just reconnected: a batch in doubt was applied (its marker is there: counted sent,
    /// taken off) or not (it stays first in line, sent again).
    fn settle_in_doubt(&mut self) -> Result<(), String> {
        let Some((seq, n)) = self.in_doubt else { return Ok(()) };
        let Some((w, r)) = self.conn.as_mut() else { return Ok(()) };
        let mut cmd = Vec::new();
        resp(&mut cmd, &[b"GET", self.marker_key.as_bytes()]);
        w.write_all(&cmd).and_then(|_| w.flush()).map_err(|e| e.to_string())?;
        let v = read_bulk(r).map_err(|e| e.to_string())?;
        self.in_doubt = None;
        if v.as_deref() == Some(format!("{}:{seq}", self.instance).as_bytes()) {
            SENT.fetch_add(n as u64, Ordering::Relaxed);
            self.pending.drain(..n.min(self.pending.len()));
        }
        Ok(())
    }

    /// At exit: one last try, then whatever is left is lost.
    pub fn finish(&mut self) {
        self.retry_at = None;
        self.flush();
        if !self.pending.is_empty() && self.conn.is_none() {
            // (a batch in doubt is settled if Redis is back)
            self.retry_at = None;
            self.flush();
        }
        LOST.fetch_add(self.pending.len() as u64, Ordering::Relaxed);
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(parse_url("redis://127.0.0.1:6379").unwrap(), RedisUrl { host: "127.0.0.1".into(), port: 6379, password: None, db: None });
        assert_eq!(parse_url("redis://localhost").unwrap().port, 6379);
        let u = parse_url("redis://:secret@10.0.0.1:7000/2").unwrap();
        assert_eq!((u.password.as_deref(), u.db, u.port), (Some("secret"), Some(2), 7000));
        for bad in ["http://x", "redis://", "redis://h:port", "redis://h/x"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    /// A fake Redis for the transaction path: parses the commands of each connection,
    /// applies MULTI..EXEC transactions (RPUSH to `list`, SET of the marker) and, per
    /// connection in `plan`, hangs up at a chosen point.
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Cut {
        /// Answers everything.
        None,
        /// Hangs up after reading MULTI and one command (the transaction never completes).
        BeforeExec,
        /// Applies the transaction, hangs up before answering EXEC.
        AfterExec,
    }

    fn read_command(r: &mut BufReader<TcpStream>) -> Option<Vec<Vec<u8>>> {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let n: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
        let mut args = Vec::new();
        for _ in 0..n {
            line.clear();
            r.read_line(&mut line).ok()?;
            let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
            let mut b = vec![0u8; len + 2];
            std::io::Read::read_exact(r, &mut b).ok()?;
            b.truncate(len);
            args.push(b);
        }
        Some(args)
    }

    #[derive(Default)]
    struct Store {
        list: Vec<String>,
        marker: Option<Vec<u8>>,
        connections: usize,
        gets: usize,
    }

    fn fake_redis(plan: Vec<Cut>) -> (u16, std::sync::Arc<std::sync::Mutex<Store>>) {
        use std::sync::{Arc, Mutex};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let store = Arc::new(Mutex::new(Store::default()));
        let st = Arc::clone(&store);
        std::thread::spawn(move || {
            for (i, c) in l.incoming().enumerate() {
                let Ok(c) = c else { return };
                st.lock().unwrap().connections += 1;
                let cut = plan.get(i).copied().unwrap_or(Cut::None);
                let mut w = c.try_clone().unwrap();
                let mut r = BufReader::new(c);
                let mut queued: Option<Vec<Vec<Vec<u8>>>> = None;
                while let Some(cmd) = read_command(&mut r) {
                    let name = String::from_utf8_lossy(&cmd[0]).to_uppercase();
                    let reply: Vec<u8> = match (name.as_str(), queued.as_mut()) {
                        ("MULTI", _) => {
                            queued = Some(Vec::new());
                            b"+OK\r\n".to_vec()
                        }
                        ("EXEC", Some(_)) => {
                            let q = queued.take().unwrap();
                            let mut s = st.lock().unwrap();
                            let mut out = format!("*{}\r\n", q.len()).into_bytes();
                            for c in q {
                                match &c[0][..] {
                                    b"RPUSH" => s.list.push(String::from_utf8(c[2].clone()).unwrap()),
                                    b"SET" => s.marker = Some(c[2].clone()),
                                    _ => {}
                                }
                                out.extend_from_slice(b":1\r\n");
                            }
                            drop(s);
                            if cut == Cut::AfterExec {
                                break;
                            }
                            out
                        }
                        (_, Some(q)) => {
                            q.push(cmd.clone());
                            if cut == Cut::BeforeExec {
                                break;
                            }
                            b"+QUEUED\r\n".to_vec()
                        }
                        ("GET", None) => {
                            let mut s = st.lock().unwrap();
                            s.gets += 1;
                            match &s.marker {
                                Some(v) => {
                                    let mut o = format!("${}\r\n", v.len()).into_bytes();
                                    o.extend_from_slice(v);
                                    o.extend_from_slice(b"\r\n");
                                    o
                                }
                                None => b"$-1\r\n".to_vec(),
                            }
                        }
                        _ => b"-ERR unknown\r\n".to_vec(),
                    };
                    if w.write_all(&reply).is_err() {
                        break;
                    }
                }
            }
        });
        (port, store)
    }

    fn sink(port: u16) -> RedisSink {
        RedisSink::new(&RedisConfig { url: format!("redis://127.0.0.1:{port}"), ..RedisConfig::default() }).unwrap()
    }

    /// Flushes until nothing is pending (reconnecting past the backoff), at most 5 s.
    fn flush_all(s: &mut RedisSink) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.has_pending() && Instant::now() < deadline {
            s.retry_at = None;
            s.flush();
        }
    }

    #[test]
    fn batch_applied_but_reply_lost_is_not_sent_again() {
        let (port, store) = fake_redis(vec![Cut::AfterExec]);
        let mut s = sink(port);
        for i in 0..3 {
            s.push(format!("{{\"n\":{i}}}"));
        }
        s.flush();
        assert!(s.has_pending() && s.in_doubt.is_some(), "in doubt after the cut");
        flush_all(&mut s);
        s.push("{\"n\":3}".into());
        flush_all(&mut s);
        let st = store.lock().unwrap();
        assert_eq!(st.list, vec!["{\"n\":0}", "{\"n\":1}", "{\"n\":2}", "{\"n\":3}"], "each alert exactly once");
        assert_eq!((st.connections, st.gets), (2, 1));
    }

    #[test]
    fn batch_cut_before_exec_is_sent_again() {
        let (port, store) = fake_redis(vec![Cut::BeforeExec]);
        let mut s = sink(port);
        for i in 0..3 {
            s.push(format!("{{\"n\":{i}}}"));
        }
        s.flush();
        assert!(s.has_pending(), "nothing applied: still pending");
        flush_all(&mut s);
        let st = store.lock().unwrap();
        assert_eq!(st.list, vec!["{\"n\":0}", "{\"n\":1}", "{\"n\":2}"], "each alert exactly once");
        assert_eq!((st.connections, st.gets), (2, 1));
    }

    #[test]
    fn resp_encoding() {
        let mut v = Vec::new();
        resp(&mut v, &[b"RPUSH", b"k", b"{\"a\":1}"]);
        assert_eq!(v, b"*3\r\n$5\r\nRPUSH\r\n$1\r\nk\r\n$7\r\n{\"a\":1}\r\n");
    }
}
