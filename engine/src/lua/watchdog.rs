//! Runaway-rule and memory watchdog.
//!
//! LuaJIT's count hook only fires in the interpreter; compiled traces ignore it unless
//! LuaJIT is built with `LUAJIT_ENABLE_CHECKHOOK` (then every compiled loop checks the hook
//! mask). The vendored LuaJIT is built that way (`.cargo/config.toml` sets `STATIC_CC`).
//! A single process-wide thread wakes every millisecond; for each engine whose Lua call has
//! been running for more than one tick it arms a one-instruction count hook
//! (`lua_sethook` is async-safe in LuaJIT). The hook runs on the worker thread; the
//! engine's check disarms it (under the same lock as arming, so `lua_sethook` calls never
//! race) and decides: budget time elapsed, or heap over the cap, raises a
//! Lua error in the running rule (caught by the burst pcall); otherwise execution goes on.
//! Without any arming, compiled code runs at full speed (the check is one load + branch
//! per loop iteration; no measurable difference in the burst benchmark).
//!
//! Limits: the budget is wall time (`instruction_budget` ns, i.e. ~1 instruction/ns), not a
//! VM instruction count: LuaJIT cannot count instructions inside traces. Resolution is the
//! 1 ms tick (and the OS scheduling the watchdog thread: on a machine whose cores are all
//! busy-polling, interruption waits for the thread to run). A rule blocked inside a C
//! function (e.g. a huge regex match in Rust) is interrupted only when it returns to Lua.
//! Without `LUAJIT_ENABLE_CHECKHOOK` (e.g. system LuaJIT), a JIT-compiled infinite loop is
//! NOT interrupted (verified: the test hangs); interpreted code still is.

use crate::dpdk;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Nanoseconds since the process-wide watchdog epoch (monotonic, never 0 after start).
pub(crate) fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let e = EPOCH.get_or_init(Instant::now);
    e.elapsed().as_nanos() as u64 + 1
}

/// Shared between an engine (worker thread) and the watchdog thread.
pub(crate) struct Watch {
    /// Raw `lua_State` address; 0 while no state is live. The engine takes the lock before
    /// closing a state, the watchdog holds it while arming.
    pub state: Mutex<usize>,
    /// `now_ns()` when the current Lua call started; 0 when idle.
    pub since: AtomicU64,
    /// Set when the watchdog armed the hook; cleared by [`Watch::disarm`].
    pub armed: AtomicBool,
}

impl Watch {
    /// Removes the hook if the watchdog armed it (serialized with arming by the lock).
    pub fn disarm(&self) {
        if self.armed.load(Ordering::Acquire) {
            self.disarm_now();
        }
    }

    /// Removes the hook unconditionally (called from the hook itself).
    pub fn disarm_now(&self) {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        dpdk::disarm_interrupt(*st);
        self.armed.store(false, Ordering::Release);
    }
}

const TICK: Duration = Duration::from_millis(1);
/// [`TICK`] in nanoseconds: a hook that fires in a call younger than this was armed for an
/// earlier call (the arming raced with that call's end) and is ignored.
pub(crate) const TICK_NS: u64 = 1_000_000;

fn registry() -> &'static Mutex<Vec<Weak<Watch>>> {
    static REG: OnceLock<Mutex<Vec<Weak<Watch>>>> = OnceLock::new();
    REG.get_or_init(|| {
        let spawned = std::thread::Builder::new().name("lua-watchdog".into()).spawn(watchdog_loop);
        if let Err(e) = spawned {
            eprintln!("lua watchdog: cannot start thread: {e}");
        }
        Mutex::new(Vec::new())
    })
}

pub(crate) fn register(w: &Arc<Watch>) {
    let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
    r.retain(|x| x.strong_count() > 0);
    r.push(Arc::downgrade(w));
}

fn watchdog_loop() {
    loop {
        std::thread::sleep(TICK);
        let list: Vec<Arc<Watch>> = {
            let r = registry().lock().unwrap_or_else(|p| p.into_inner());
            r.iter().filter_map(|w| w.upgrade()).collect()
        };
        let now = now_ns();
        for w in list {
            let since = w.since.load(Ordering::Acquire);
            if since != 0 && now.saturating_sub(since) >= TICK.as_nanos() as u64 {
                let st = w.state.lock().unwrap_or_else(|p| p.into_inner());
                if w.since.load(Ordering::Acquire) != 0 {
                    dpdk::arm_interrupt(*st);
                    w.armed.store(true, Ordering::Release);
                }
            }
        }
    }
}
