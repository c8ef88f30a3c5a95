//! hakapcap's progress line, on a terminal only (stderr a tty): packets, share of the
//! input file read, rate. Shown once a replay has taken a few seconds, refreshed every
//! second in place; nothing at all is printed when stderr is not a terminal (scripts,
//! tests and the Haka suite compare outputs).
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A replay shorter than this prints nothing (`HAKAPCAP_PROGRESS_AFTER`, in seconds,
/// sets it: tests show the line on short replays with 0).
const SHOW_AFTER: Duration = Duration::from_secs(2);

fn show_after() -> Duration {
    std::env::var("HAKAPCAP_PROGRESS_AFTER")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
        .map(Duration::from_secs_f64)
        .unwrap_or(SHOW_AFTER)
}
const EVERY: Duration = Duration::from_secs(1);

pub struct Progress {
    input: PathBuf,
    size: u64,
    packets: u64,
    started: Instant,
    show_after: Duration,
    last: Instant,
    last_rx: u64,
    /// /proc/self/fdinfo entry of the descriptor net_pcap reads the input with (its `pos:`
    /// is how far the file was read); found at the first refresh.
    fdinfo: Option<Option<PathBuf>>,
    shown: bool,
}

impl Progress {
    /// A progress line for replaying `input` (`packets` in it), when stderr is a terminal.
    pub fn on_terminal(input: &Path, packets: u64) -> Option<Progress> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let size = std::fs::metadata(input).map(|m| m.len()).unwrap_or(0);
        let now = Instant::now();
        Some(Progress {
            input: input.to_path_buf(),
            size,
            packets,
            started: now,
            show_after: show_after(),
            last: now,
            last_rx: 0,
            fdinfo: None,
            shown: false,
        })
    }

    /// Called often (each control tick): refreshes the line at most once a second.
    pub fn tick(&mut self, rx: u64) {
        let now = Instant::now();
        if now.duration_since(self.started) < self.show_after || (self.shown && now.duration_since(self.last) < EVERY) {
            return;
        }
        let rate = (rx - self.last_rx.min(rx)) as f64 / now.duration_since(self.last).as_secs_f64().max(1e-3);
        self.last = now;
        self.last_rx = rx;
        self.show(rx, rate, false);
    }

    /// The input is over: a last line (when one was shown) with the average rate.
    pub fn finish(&mut self, rx: u64) {
        if self.shown {
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            self.show(rx, rx as f64 / secs, true);
            self.shown = false;
        }
    }

    fn show(&mut self, rx: u64, rate: f64, done: bool) {
        let read = if rx >= self.packets { Some(self.size) } else { self.file_pos() };
        let pct = match read {
            Some(pos) if self.size > 0 => 100.0 * pos.min(self.size) as f64 / self.size as f64,
            // (no position known: packets are a fair proxy)
            _ => 100.0 * rx as f64 / self.packets.max(1) as f64,
        };
        let what = if done { format!("in {:.1}s, ", self.started.elapsed().as_secs_f64()) } else { String::new() };
        let line = format!(
            "\rhakapcap: {}: {rx}/{} packets, {pct:.1}% of the file read, {what}{} packets/s\x1b[K{}",
            self.input.display(),
            self.packets,
            human(rate),
            if done { "\n" } else { "" }
        );
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line.as_bytes());
        let _ = err.flush();
        self.shown = true;
    }

    /// How far the input file was read, from the kernel's view of net_pcap's descriptor.
    fn file_pos(&mut self) -> Option<u64> {
        if self.fdinfo.is_none() {
            self.fdinfo = Some(input_fdinfo(&self.input));
        }
        let path = self.fdinfo.as_ref()?.as_ref()?;
        let text = std::fs::read_to_string(path).ok()?;
        text.lines().find_map(|l| l.strip_prefix("pos:")).and_then(|v| v.trim().parse().ok())
    }
}

/// The fdinfo file of this process's descriptor open on `input`, if any.
fn input_fdinfo(input: &Path) -> Option<PathBuf> {
    let want = std::fs::canonicalize(input).ok()?;
    std::fs::read_dir("/proc/self/fd").ok()?.flatten().find_map(|e| {
        (std::fs::read_link(e.path()).ok()? == want).then(|| Path::new("/proc/self/fdinfo").join(e.file_name()))
    })
}

/// 1234567.0 -> "1.23M".
fn human(x: f64) -> String {
    match x {
        x if x >= 1e6 => format!("{:.2}M", x / 1e6),
        x if x >= 1e3 => format!("{:.1}k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_rates() {
        assert_eq!(human(12.0), "12");
        assert_eq!(human(45_600.0), "45.6k");
        assert_eq!(human(1_234_567.0), "1.23M");
    }

    #[test]
    fn finds_an_open_files_position() {
        let p = std::env::temp_dir().join(format!("haka-progress-{}", std::process::id()));
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let mut f = std::fs::File::open(&p).unwrap();
        let mut buf = [0u8; 1000];
        std::io::Read::read_exact(&mut f, &mut buf).unwrap();
        let info = input_fdinfo(&p).expect("fd found");
        let text = std::fs::read_to_string(info).unwrap();
        assert!(text.contains("pos:\t1000"), "{text}");
        std::fs::remove_file(&p).unwrap();
    }
}
