//! The Redis alert sink (`[alerts.redis]`): EVE JSON lines sent from the alert thread,
//! batched and pipelined (one write of every queued command, then their replies), with
//! `RPUSH` (mode "list"), `XADD KEY * alert JSON` ("stream") or `PUBLISH` ("publish").
//! A lost connection is retried with a backoff (100 ms doubling to 5 s); meanwhile alerts
//! wait (up to `max_pending`); those that cannot be delivered (past that bound, or in a
//! batch whose replies did not come back) are counted lost. Workers never wait on it:
//! they only push to the alert queue.
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

pub struct RedisSink {
    cfg: RedisConfig,
    url: RedisUrl,
    conn: Option<(TcpStream, BufReader<TcpStream>)>,
    pending: Vec<String>,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// The last error, logged once per outage.
    logged: bool,
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

    /// Sends what is pending (pipelined, in batches), connecting when due.
    pub fn flush(&mut self) {
        while !self.pending.is_empty() {
            if self.conn.is_none() {
                if self.retry_at.is_some_and(|t| Instant::now() < t) {
                    return;
                }
                if let Err(e) = self.connect() {
                    self.down(&e);
                    return;
                }
            }
            let n = self.pending.len().min(BATCH);
            let mut cmd = Vec::with_capacity(n * 512);
            let key = self.cfg.key.as_bytes();
            for l in &self.pending[..n] {
                match self.cfg.mode {
                    RedisMode::List => resp(&mut cmd, &[b"RPUSH", key, l.as_bytes()]),
                    RedisMode::Stream => resp(&mut cmd, &[b"XADD", key, b"*", b"alert", l.as_bytes()]),
                    RedisMode::Publish => resp(&mut cmd, &[b"PUBLISH", key, l.as_bytes()]),
                }
            }
            let Some((w, r)) = self.conn.as_mut() else { return };
            if let Err(e) = w.write_all(&cmd).and_then(|_| w.flush()) {
                // (nothing of the batch is known to have arrived: it stays pending)
                self.down(&e.to_string());
                return;
            }
            let mut ok = 0u64;
            let mut failed: Option<String> = None;
            for _ in 0..n {
                match read_reply(r) {
                    Ok(Ok(())) => ok += 1,
                    Ok(Err(msg)) => {
                        LOST.fetch_add(1, Ordering::Relaxed);
                        if failed.is_none() {
                            println!("alerts: redis {}: {msg}", self.cfg.url);
                        }
                        failed = Some(msg);
                    }
                    Err(e) => {
                        // The rest of the batch may or may not have been stored: counted lost.
                        let rest = n as u64 - ok - failed.is_some() as u64;
                        SENT.fetch_add(ok, Ordering::Relaxed);
                        LOST.fetch_add(rest, Ordering::Relaxed);
                        self.pending.drain(..n);
                        self.down(&e.to_string());
                        return;
                    }
                }
            }
            SENT.fetch_add(ok, Ordering::Relaxed);
            self.pending.drain(..n);
        }
    }

    /// At exit: one last try, then whatever is left is lost.
    pub fn finish(&mut self) {
        self.retry_at = None;
        self.flush();
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

    #[test]
    fn resp_encoding() {
        let mut v = Vec::new();
        resp(&mut v, &[b"RPUSH", b"k", b"{\"a\":1}"]);
        assert_eq!(v, b"*3\r\n$5\r\nRPUSH\r\n$1\r\nk\r\n$7\r\n{\"a\":1}\r\n");
    }
}
