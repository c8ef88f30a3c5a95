//! Log levels: Haka's (fatal, error, warning, info, debug, trace), a default one and
//! per-section ones (`haka.log_section(NAME)` in the rules; `core` for the engine's own
//! lines). Written as `LEVEL[,SECTION=LEVEL...]` (`info,http=debug`) by `haka --loglevel`,
//! `[log] level` and `hakactl loglevel`.
//!
//! The process keeps one [`LogSpec`]; a change bumps a generation that each worker
//! compares between its bursts (one relaxed load) and then applies to its rules' state
//! (taking the spec with `try_lock`: a worker never waits on it).
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

pub const LEVELS: [&str; 6] = ["fatal", "error", "warning", "info", "debug", "trace"];

/// A level's rank (0 fatal .. 5 trace); `warn` is accepted for `warning`.
pub fn level_rank(name: &str) -> Option<u8> {
    let name = if name == "warn" { "warning" } else { name };
    LEVELS.iter().position(|l| *l == name).map(|i| i as u8)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSpec {
    /// One of [`LEVELS`].
    pub default: String,
    /// (section, level) pairs.
    pub sections: Vec<(String, String)>,
}

impl Default for LogSpec {
    fn default() -> Self {
        LogSpec { default: "info".into(), sections: Vec::new() }
    }
}

impl LogSpec {
    /// `LEVEL[,SECTION=LEVEL...]`; a list of `SECTION=LEVEL` alone keeps the default `info`.
    pub fn parse(text: &str) -> Result<LogSpec, String> {
        let mut spec = LogSpec::default();
        let bad = |v: &str| format!("unknown log level '{v}' (levels: {})", LEVELS.join(", "));
        for (i, part) in text.split(',').map(str::trim).enumerate() {
            if part.is_empty() {
                return Err(format!("empty entry in log level '{text}'"));
            }
            match part.split_once('=') {
                Some((sec, lvl)) => {
                    let (sec, lvl) = (sec.trim(), lvl.trim());
                    if sec.is_empty() || !sec.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '/') {
                        return Err(format!("bad log section '{sec}' in '{text}'"));
                    }
                    let r = level_rank(lvl).ok_or_else(|| bad(lvl))?;
                    spec.sections.retain(|(s, _)| s != sec);
                    spec.sections.push((sec.to_string(), LEVELS[r as usize].to_string()));
                }
                None if i == 0 => {
                    let r = level_rank(part).ok_or_else(|| bad(part))?;
                    spec.default = LEVELS[r as usize].to_string();
                }
                None => return Err(format!("'{part}' in '{text}': only the first entry is a bare level (then SECTION=LEVEL)")),
            }
        }
        Ok(spec)
    }

    /// Whether a line of `level` in `section` is shown.
    pub fn enabled(&self, level: &str, section: &str) -> bool {
        let lvl = self.sections.iter().find(|(s, _)| s == section).map_or(self.default.as_str(), |(_, l)| l.as_str());
        level_rank(level).unwrap_or(0) <= level_rank(lvl).unwrap_or(3)
    }
}

impl std::fmt::Display for LogSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.default)?;
        for (s, l) in &self.sections {
            write!(f, ",{s}={l}")?;
        }
        Ok(())
    }
}

static GENERATION: AtomicU64 = AtomicU64::new(0);
/// The `core` section's level (the engine's own lines), for a check without a lock.
static CORE_LEVEL: AtomicU8 = AtomicU8::new(3);
static SPEC: Mutex<Option<LogSpec>> = Mutex::new(None);

/// Sets the process's levels (workers apply them between bursts).
pub fn set(spec: LogSpec) {
    let core = level_rank(spec.sections.iter().find(|(s, _)| s == "core").map_or(&spec.default, |(_, l)| l)).unwrap_or(3);
    CORE_LEVEL.store(core, Ordering::Relaxed);
    if let Ok(mut s) = SPEC.lock() {
        *s = Some(spec);
    }
    GENERATION.fetch_add(1, Ordering::Release);
}

/// Bumped by every [`set`].
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// The current levels.
pub fn current() -> LogSpec {
    SPEC.lock().ok().and_then(|s| s.clone()).unwrap_or_default()
}

/// The current levels, or None when another thread holds them right now (workers: try
/// again after the next burst).
pub fn try_current() -> Option<LogSpec> {
    match SPEC.try_lock() {
        Ok(s) => Some(s.clone().unwrap_or_default()),
        Err(_) => None,
    }
}

/// Whether the engine's own lines (section `core`) of `level` are shown.
pub fn core_enabled(level: &str) -> bool {
    level_rank(level).unwrap_or(0) <= CORE_LEVEL.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_levels() {
        let s = LogSpec::parse("debug,http=trace, core=warn").unwrap();
        assert_eq!(s.default, "debug");
        assert_eq!(s.sections, vec![("http".into(), "trace".into()), ("core".into(), "warning".into())]);
        assert_eq!(s.to_string(), "debug,http=trace,core=warning");
        assert!(s.enabled("trace", "http") && !s.enabled("trace", "tcp") && !s.enabled("info", "core"));
        assert_eq!(LogSpec::parse("http=debug").unwrap().default, "info");
        for bad in ["loud", "info,,", "info,http=loud", "info,debug", "=info"] {
            let e = LogSpec::parse(bad).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
