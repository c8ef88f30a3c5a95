//! The control socket (`[control] socket`, default `/run/haka/haka.sock`, mode 0600): a
//! Unix stream socket served by its own thread. One request per connection: a JSON line
//! `{"cmd": "stats", ...}`, answered by one JSON line `{"ok": true, "data": ...}` or
//! `{"ok": false, "error": "..."}` (see [`handle`]).
use super::Live;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_SOCKET: &str = "/run/haka/haka.sock";

/// A bound control socket, before its thread starts.
pub struct Bound {
    pub listener: UnixListener,
    pub path: PathBuf,
}

/// Binds the control socket at `path` (its directory made when missing), mode 0600.
/// A socket left by a haka that died is replaced; one that answers is another haka's.
pub fn bind(path: &Path) -> Result<Bound, String> {
    let fix = "set [control] socket to another path, or --set control.socket=\"\" to run without it";
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).map_err(|e| format!("control socket directory {}: cannot create it: {e} ({fix})", dir.display()))?;
    }
    if path.exists() || std::fs::symlink_metadata(path).is_ok() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!("control socket {}: another haka is running and answers there ({fix})", path.display()));
        }
        std::fs::remove_file(path).map_err(|e| format!("control socket {}: cannot remove the stale socket: {e} ({fix})", path.display()))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| format!("control socket {}: {e} ({fix})", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("control socket {}: cannot set mode 0600: {e}", path.display()))?;
    listener.set_nonblocking(true).map_err(|e| format!("control socket {}: {e}", path.display()))?;
    Ok(Bound { listener, path: path.to_path_buf() })
}

/// The control thread: accepts connections until `stop`.
pub fn serve(listener: UnixListener, live: Arc<Live>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = one(stream, &live);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn one(stream: UnixStream, live: &Live) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(&stream).take_line(&mut line)?;
    let reply = match serde_json::from_str::<Value>(&line) {
        Ok(req) => handle(&req, live),
        Err(e) => Err(format!("bad request (one JSON line expected): {e}")),
    };
    let out = match reply {
        Ok(data) => json!({"ok": true, "data": data}),
        Err(e) => json!({"ok": false, "error": e}),
    };
    let mut w = &stream;
    w.write_all(format!("{out}\n").as_bytes())?;
    w.flush()
}

trait TakeLine {
    fn take_line(self, s: &mut String) -> std::io::Result<usize>;
}

impl<R: BufRead> TakeLine for R {
    /// One line of at most 64 KiB.
    fn take_line(self, s: &mut String) -> std::io::Result<usize> {
        self.take(64 << 10).read_line(s)
    }
}

/// Commands: status, stats, flows {limit}, reload, reopen, loglevel {level}, rules, stop.
pub fn handle(req: &Value, live: &Live) -> Result<Value, String> {
    let cmd = req["cmd"].as_str().unwrap_or("");
    match cmd {
        "status" => Ok(live.status()),
        "stats" => Ok(live.stats()),
        "flows" => {
            let limit = req["limit"].as_u64().unwrap_or(100).min(1_000_000) as usize;
            Ok(live.flows(limit))
        }
        "rules" => Ok(live.rules()),
        "reload" => live.reload().map(|m| json!({ "message": m })),
        "reopen" => live.reopen.reopen_and_wait(std::time::Duration::from_secs(5)).map(|m| json!({ "message": format!("alerts: {m}") })),
        "loglevel" => {
            if let Some(l) = req["level"].as_str() {
                let spec = crate::logging::LogSpec::parse(l)?;
                crate::logging::set(spec);
            }
            Ok(json!({ "loglevel": crate::logging::current().to_string() }))
        }
        "stop" => {
            live.stop.store(true, Ordering::SeqCst);
            Ok(json!({ "message": "stopping" }))
        }
        "" => Err("no command".into()),
        other => Err(format!("unknown command '{other}' (status, stats, flows, reload, reopen, loglevel, rules, stop)")),
    }
}
