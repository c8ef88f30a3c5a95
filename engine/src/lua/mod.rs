//! Lua rule engine (Haka 0.4 API) on LuaJIT through mlua.
//!
//! Design (see /work/shared/dpdk-notes.md section 4): ONE Rust->Lua call per burst.
//! Rust fills a `#[repr(C)]` [`Burst`] struct that lives in the engine (boxed, stable
//! address, handed to Lua once at load as a number and `ffi.cast` there) with one slot per
//! packet: data address, length, offsets from the dissector, and out-fields `verdict` and
//! `modified`. The Lua dispatcher (engine/lua/haka.lua) is generated after the rules are
//! loaded and contains only the events that have rules; per-slot FFI views
//! (`ffi.metatype`) give the dissector fields without per-packet garbage. After the call
//! Rust recomputes the checksums of modified packets.
//!
//! Only `crate::dpdk::lua` contains `unsafe` (state creation, raw state address, hook).
//!
//! Errors: one `pcall` around the burst loop; after an error the loop resumes at the next
//! packet and the failing one gets the rule-error verdict. Runaway rules: see
//! [`watchdog`] (time-based budget, needs LuaJIT built with `LUAJIT_ENABLE_CHECKHOOK`, which
//! `.cargo/config.toml` arranges for the vendored build). Memory: mlua's allocator limit
//! (hard cap) plus a state reset from the rules file when live data stays high.
//!
//! JIT notes (measured, see the report in the commit log): the library code avoids tail
//! calls in the view getters (LuaJIT counts them towards `loopunroll` and aborted the burst
//! trace: 10 rules went from 2176 to 26 ns/packet), and `jit.opt` limits are raised in
//! haka.lua so that the whole rule set inlines into the burst trace.

mod alert_record;
pub mod app_values;
mod libs;
pub mod regexp;
mod watchdog;

#[cfg(test)]
mod tests;

pub use alert_record::Alert;

use crate::dissect::{PacketMeta, L3};
use crate::dpdk;
use crate::wire::checksum;
use mlua::{Function, Lua, Table};
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use watchdog::{now_ns, Watch};

/// Largest number of packets handed to Lua in one call (bigger slices are chunked).
pub const MAX_BURST: usize = 256;

const HAKA_LUA: &str = include_str!("../../lua/haka.lua");
/// Haka's buffers (vbuffer, iterators, streams, comanager), run before haka.lua, which gets
/// its module table as `H.vbuffer` and publishes `haka.vbuffer_*`.
const VBUFFER_LUA: &str = include_str!("../../lua/vbuffer.lua");

/// `modified` bit written by Lua (mirrored in haka.lua): a rule wrote into the packet.
/// Its checksums are then recomputed, whatever the rule wrote in them (Haka's semantics:
/// any header write invalidates the checksum, computed again when the packet leaves).
const MOD_ANY: u8 = 1;
/// Only an IP payload was written: its L4 checksum stays as the bytes say (Haka: only the
/// dissector whose payload changed recomputes its checksum).
const MOD_KEEP_L4_CSUM: u8 = 4;

/// One application event for `RT.app_events` (layout mirrored by `hk_appev` in
/// haka.lua; see there for the fields of each kind).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct AppEv {
    kind: i32,
    len: i32,
    fields: i32,
    a1: i32,
    a2: i32,
    b1: i32,
    b2: i32,
    c1: i32,
    c2: i32,
    flags: i32,
    /// Heads: the listeners that run (`crate::dissectors::http::prefilter`; -1 all; 0 for prior heads).
    rules: i32,
    p: f64,
    off: f64,
}

/// Per-packet slot shared with Lua (layout mirrored by `hk_slot` in haka.lua).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Slot {
    data: u64,
    len: u32,
    flow_id: u32,
    vlan: u32,
    l3_off: u16,
    l4_off: u16,
    payload_off: u16,
    payload_len: u16,
    ip_len: u16,
    l3: u8,
    proto: u8,
    has_l4: u8,
    dir: u8,
    fragment: u8,
    verdict: u8,
    modified: u8,
    /// Lua-side flags (haka.lua: dont_reassemble, forged, sent).
    flags: u8,
    _pad: [u8; 2],
    /// Capture time (`pkt.timestamp`): seconds since the epoch and nanoseconds.
    ts_sec: u32,
    ts_nsec: u32,
    /// `pkt.id`: the packet's number among those this engine handed to the rules (1, 2, ...).
    pkt_id: u32,
    _pad2: u32,
}

#[repr(C)]
struct Burst {
    n: u32,
    cur: u32,
    errors: u32,
    /// Payload rewrites recorded by the rules (`RT.take_rewrites`), 0 when none.
    rewrites: u32,
    /// Packets the rules forged (inject/send) and the engine did not take yet.
    forged: u32,
    /// Alerts the rules did not raise for going over their rule's rate, not yet counted
    /// by the engine (`haka.lua`: RT.alert_suppressed).
    suppressed: u32,
    /// Protocol errors of the Lua dissectors (engine/lua/dissector.lua), cumulative.
    proto_errors: u32,
    _pad3: u32,
    s: [Slot; MAX_BURST],
}

const _: () = assert!(std::mem::size_of::<Slot>() == 56);
const _: () = assert!(std::mem::size_of::<Burst>() == 32 + 56 * MAX_BURST);

/// A packet a rule forged (`haka.dissectors.packet.create()` ... `:inject()` / `:send()`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForgedPacket {
    /// The whole frame (link header, IP datagram), lengths and checksums set.
    pub data: Vec<u8>,
    /// `inject()`: to be received (rules, connection tracking) after the packet that made
    /// it; else `send()`: to leave as it is after that packet.
    pub inject: bool,
    /// Index, in the slice handed to [`LuaEngine::run_burst`], of the packet whose rule
    /// made it (0 for the stateful events, which see one packet).
    pub origin: usize,
}

/// Engine options.
#[derive(Clone, Debug)]
pub struct LuaOptions {
    /// Verdict of a packet whose rule raised an error: drop (Haka's behaviour) or accept.
    pub rule_error_drop: bool,
    /// Budget of one Lua call (a burst, or the rest of it after an error), in VM
    /// instructions, enforced as time at ~1 instruction/ns (see [`watchdog`] docs):
    /// a rule running longer is interrupted with an error. 0 disables.
    pub instruction_budget: u64,
    /// Cap on the Lua heap of this worker's state; 0 disables. Allocations beyond it fail
    /// with a Lua "not enough memory" error (rule error); a heap that stays above 7/8 of it
    /// after a burst and a full GC gets the state recreated from the rules file.
    pub memory_limit_bytes: usize,
    /// Rule errors are logged at most once per interval (the others are counted and
    /// their number logged with the next one); zero: every error, as Haka.
    pub error_log_interval: Duration,
    /// `[rules] dissectors = "required"`: Haka's chain (see `crate::config::DissectorChain`).
    pub required_chain: bool,
    /// Passive (pass-through) mode: packets are read only, a rule's write raises
    /// "read only buffer" (Haka's behaviour) and `haka.capture_mode()` is "passthrough".
    pub read_only: bool,
    /// `[dns] records = "haka"`: DNS records as Haka 0.4 gave them (AAAA and HINFO
    /// undecoded, bytes fields as vbuffer_subs; see `crate::config::DnsRecords`).
    pub dns_haka_records: bool,
    /// Data held per connection for streamed rules, bytes (`[rules] streamed_hold_kb`),
    /// and whether a connection over it is dropped (else its streamed rules end).
    pub streamed_hold_bytes: usize,
    pub streamed_over_cap_drop: bool,
    /// `[dns] pending_queries`: DNS queries awaited per connection.
    pub dns_pending_queries: u32,
    /// `[rules] disable_after_errors`, `disable_after_timeouts`, `disable_window`.
    pub disable_after_errors: u32,
    pub disable_after_timeouts: u32,
    pub disable_window: u32,
    /// `[rules] alert_rate`.
    pub alert_rate: [u32; 2],
    /// `[rules] lua_protocol_error = "drop"`: a Lua dissector's protocol error drops.
    pub lua_protocol_error_drop: bool,
    /// `[rules] lua_in_place_parsing`: Lua TCP dissectors parse complete messages on the
    /// segment's bytes (false: through the stream, Haka's callback order).
    pub lua_in_place_parsing: bool,
    /// Names of the ports by port id: alerts' `in_iface`.
    pub port_names: Vec<String>,
}

impl Default for LuaOptions {
    fn default() -> Self {
        LuaOptions {
            rule_error_drop: true,
            instruction_budget: 100_000_000,
            memory_limit_bytes: 256 << 20,
            error_log_interval: Duration::from_secs(1),
            required_chain: false,
            read_only: false,
            dns_haka_records: false,
            streamed_hold_bytes: 1 << 20,
            streamed_over_cap_drop: true,
            dns_pending_queries: 64,
            disable_after_errors: 0,
            disable_after_timeouts: 0,
            disable_window: 10,
            alert_rate: [0, 1],
            lua_protocol_error_drop: true,
            lua_in_place_parsing: true,
            port_names: Vec::new(),
        }
    }
}

/// Verdict of one packet after the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LuaVerdict {
    Accept,
    Drop,
}

/// One packet of a burst handed to [`LuaEngine::run_burst`].
pub struct LuaPacket<'a> {
    pub data: &'a mut [u8],
    /// (a reference: a copy per packet measured ~30 instructions)
    pub meta: &'a PacketMeta,
    /// 0 = up, 1 = down.
    pub dir: u8,
    pub flow_id: u32,
    /// The flow's id in alerts ([`crate::flow::flow_uid`]; 0: none) and the port the
    /// packet came in on (its name in alerts: [`LuaOptions::port_names`]).
    pub flow_uid: u64,
    pub port: u16,
    /// Out: set by `run_burst`.
    pub verdict: LuaVerdict,
    /// Out: true when a rule wrote into the packet (checksums were then recomputed).
    pub modified: bool,
    /// Out: true when a rule raised an error on this packet (its verdict is then
    /// the configured `rule_error` verdict).
    pub error: bool,
    /// Capture time: seconds since the epoch and nanoseconds ((0, 0): unknown).
    pub ts: (u64, u32),
    /// Out: a rule changed the size of a payload (erase, insert, replace with another
    /// length): the caller rebuilds the frame ([`rebuild_payload`]), which fixes the
    /// lengths and checksums (they are not fixed in `data`, which cannot grow).
    pub rewrite: Option<Box<PayloadRewrite>>,
    /// Which of Haka's ipv4 events the packet gets (see [`Pass`]).
    pub pass: Pass,
    /// Haka's `dont_reassemble` (ipv4): in, the flag the rules read; out, as they left it.
    pub dont_reassemble: bool,
}

/// `Slot::flags` bit of `dont_reassemble` (haka.lua: F_NOREASM).
const SLOT_NOREASM: u8 = 1;

/// Haka's ipv4 event model for a packet handed to the rules: each packet received gets
/// `receive_packet`; each datagram the upper dissectors see gets `receive_packet_reassembled`
/// then the tcp/udp/icmp events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pass {
    /// A whole packet: both.
    #[default]
    Whole = 0,
    /// A fragment before reassembly: the packet, ethernet and ipv4 `receive_packet` only.
    Fragment = 1,
    /// A reassembled datagram (its fragments had their own pass): `receive_packet_reassembled`
    /// and what follows it.
    Reassembled = 2,
}

impl<'a> LuaPacket<'a> {
    pub fn new(data: &'a mut [u8], meta: &'a PacketMeta, dir: u8, flow_id: u32) -> LuaPacket<'a> {
        LuaPacket {
            data,
            meta,
            dir,
            flow_id,
            flow_uid: 0,
            port: 0,
            verdict: LuaVerdict::Accept,
            modified: false,
            error: false,
            ts: (0, 0),
            rewrite: None,
            pass: Pass::Whole,
            dont_reassemble: false,
        }
    }
}

/// A packet payload a rule resized: the `old_len` bytes at `offset` in the frame become
/// `bytes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadRewrite {
    pub offset: usize,
    pub old_len: usize,
    pub bytes: Vec<u8>,
    /// The packet's `modified` bits (which checksums to recompute, see [`MOD_ANY`]).
    pub bits: u8,
}

/// Totals of one `run_burst` call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BurstOutcome {
    pub accepted: u32,
    pub dropped: u32,
    pub modified: u32,
    pub rule_errors: u32,
}

/// Engine counters (cumulative).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LuaCounters {
    pub bursts: u64,
    pub packets: u64,
    /// Rule runtime errors (including budget and memory interruptions).
    pub rule_errors: u64,
    pub budget_exceeded: u64,
    pub memory_exceeded: u64,
    /// States recreated from the rules file because the heap stayed over the cap.
    pub memory_resets: u64,
    pub alerts: u64,
    pub reloads: u64,
    /// Rules disabled for failing repeatedly, and alerts over their rule's rate.
    pub rules_disabled: u64,
    pub alerts_suppressed: u64,
    /// Protocol errors of the dissectors written in Lua.
    pub protocol_errors: u64,
}

struct Shared {
    worker: usize,
    alerts: RefCell<Box<dyn FnMut(Alert)>>,
    next_alert: Cell<u64>,
    alert_count: Cell<u64>,
    /// Metadata of the packets of the current burst (for the alert flow).
    metas: RefCell<Vec<PacketCtx>>,
    /// (flow uid, input port) of the packet the next stateful calls are about.
    flow_ctx: Cell<(u64, u16)>,
    port_names: Vec<String>,
    /// Alerts raised during the current packet's processing, held until its fate is known
    /// (their `action`: [`LuaEngine::release_alerts`]), each with the log lines written
    /// after it (so that alerts and lines come out in the order they were made).
    pending: RefCell<Vec<(Alert, Vec<u8>)>>,
    /// `haka.log` lines not yet written: written once per burst ([`LuaEngine::flush_logs`]),
    /// not one write per line.
    logs: RefCell<Vec<u8>>,
    /// Time of the latest packet handed to the rules (seconds since the epoch; 0:
    /// none yet): `haka.network_time()`, the capture's time offline.
    packet_time: Cell<(u64, u32)>,
    /// Where the log lines go when set ([`LuaEngine::set_console`]): the worker queues
    /// them with its alerts, so that both are printed in the order they were raised.
    /// It hands back what it could not take.
    console: RefCell<Option<Console>>,
    /// Messages of rule errors kept per burst (the others are only counted): all of
    /// them when every error is logged (`error_log_interval` 0, as Haka).
    max_error_messages: usize,
    /// `rules.rule_error` drops (a TCP stream rule's error then closes its connection).
    rule_error_drop: bool,
    required_chain: bool,
    /// Passive mode: the packets are read only ([`LuaOptions::read_only`]).
    read_only: bool,
    /// `LuaOptions::dns_haka_records`.
    dns_haka_records: bool,
    streamed_hold_bytes: usize,
    streamed_over_cap_drop: bool,
    dns_pending_queries: u32,
    disable: [u32; 3],
    alert_rate: [u32; 2],
    lua_protocol_error_drop: bool,
    lua_in_place_parsing: bool,
}

/// What an alert names of the packet it was raised on.
#[derive(Clone, Copy)]
struct PacketCtx {
    meta: PacketMeta,
    dir: u8,
    flow_uid: u64,
    port: u16,
}

/// A console sink: takes log text, hands it back if it cannot take it.
pub type Console = Box<dyn FnMut(Vec<u8>) -> Option<Vec<u8>>>;

/// `haka.log` output buffered beyond this is written at once.
const LOG_BUFFER: usize = 64 * 1024;

impl Shared {
    fn flush_logs(&self) {
        let mut l = self.logs.borrow_mut();
        if l.is_empty() {
            return;
        }
        if let Some(last) = self.pending.borrow_mut().last_mut() {
            // (after a held alert: they wait for it)
            last.1.extend_from_slice(&l);
            l.clear();
            return;
        }
        let text = std::mem::take(&mut *l);
        drop(l);
        self.emit_logs(text);
    }

    /// The flow id and input port of the packet `p`, in `siem`.
    fn packet_siem(&self, p: &PacketCtx, siem: &mut crate::alert::Siem) {
        siem.flow_id = (p.flow_uid != 0).then_some(p.flow_uid);
        siem.in_iface = self.port_names.get(p.port as usize).cloned();
    }

    /// An alert raised: held until [`Shared::release`] (the lines logged before it come
    /// out before it).
    fn raise(&self, a: Alert) {
        self.flush_logs();
        self.pending.borrow_mut().push((a, Vec::new()));
    }

    /// Hands the held alerts to the alert output, each `blocked(slot)` or not, with the
    /// lines logged after each.
    fn release(&self, blocked: impl Fn(i64) -> bool) {
        if self.pending.borrow().is_empty() {
            return;
        }
        let held = std::mem::take(&mut *self.pending.borrow_mut());
        for (mut a, text) in held {
            a.siem.blocked = blocked(a.pkt);
            if let Ok(mut cb) = self.alerts.try_borrow_mut() {
                cb(a);
            }
            if !text.is_empty() {
                self.emit_logs(text);
            }
        }
    }

    fn emit_logs(&self, text: Vec<u8>) {
        let mut text = text;
        if let Ok(mut c) = self.console.try_borrow_mut() {
            if let Some(f) = c.as_mut() {
                match f(text) {
                    None => return,
                    Some(back) => text = back,
                }
            }
        }
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&text).and_then(|_| out.flush());
        text.clear();
        let mut l = self.logs.borrow_mut();
        if l.is_empty() && l.capacity() < text.capacity() {
            *l = text; // keep the buffer's capacity
        }
    }
}

struct State {
    lua: Lua,
    run: Function,
    take_errors: Function,
    /// `RT.blame`: charges the running rule with an error caught by the engine.
    blame: Function,
    fire: Function,
    /// `RT.rule_stats` / `RT.set_log_levels` (hakactl rules / loglevel).
    rule_stats: Function,
    flow_sizes: Function,
    set_log_levels: Function,
    has_packet_rules: bool,
    /// Some rule runs on a fragment before reassembly (`Pass::Fragment`).
    has_fragment_rules: bool,
    conn_packet: Function,
    conn_data: Function,
    conn_end: Function,
    take_edits: Function,
    take_rewrites: Function,
    take_forged: Function,
    app_events: Function,
    stateful: u32,
    /// `RT.app_ports`: (protocol, server port, application code).
    app_ports: Vec<(u8, u16, u32)>,
    http_prefilters: crate::dissectors::http::prefilter::HttpPrefilters,
    /// The collector's current pause (see [`GC_PAUSE_SMALL_HEAP`]).
    gc_pause: i32,
}

/// The collector's pause (how far the heap grows, in percent of the live data, before a
/// new cycle) while the heap is under a quarter of the memory cap: twice Lua's default,
/// which halves the marking and sweeping per byte allocated (the HTTP benchmark's
/// rules allocate a few hundred bytes per message; +6-12% there). Back to the default
/// above a quarter of the cap, so that a heap growing 4x between cycles cannot hit it.
const GC_PAUSE_SMALL_HEAP: i32 = 400;
const GC_PAUSE_DEFAULT: i32 = 200;

fn set_gc_pause(lua: &Lua, pause: i32) {
    lua.gc_set_mode(mlua::state::GcMode::Incremental(mlua::state::GcIncParams::default().pause(pause)));
}

/// One rule's counters ([`LuaEngine::rule_stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RuleStat {
    /// `name` given to haka.rule (empty when none).
    pub name: String,
    /// FILE:LINE of the haka.rule call.
    pub location: String,
    /// The event it is on (`tcp:receive_packet`, `http:request`, ...).
    pub event: String,
    pub hits: u64,
    pub errors: u64,
}

/// One Lua rule engine per worker (create it on the worker's thread; it is `!Send`).
pub struct LuaEngine {
    path: PathBuf,
    opts: LuaOptions,
    worker: usize,
    burst: Box<Burst>,
    shared: Rc<Shared>,
    watch: Arc<Watch>,
    check: dpdk::HookCheck,
    st: State,
    counters: LuaCounters,
    last_log: Option<Instant>,
    suppressed: u64,
    /// Log section of rule errors: "lua", "tcp" during tcp_connection receive_data
    /// (Haka's tcp_connection logs the errors of its stream rules under its section).
    err_section: &'static str,
    /// Heads rewritten by the last `app_events` call (see `drain_heads`).
    heads: Vec<(usize, Option<Vec<u8>>, u8)>,
    /// The event records of the current `app_events` call (Lua reads them by address).
    app_evs: Vec<AppEv>,
    /// `counters.memory_exceeded` at the last memory check.
    mem_checked: u64,
    /// `pkt.id` of the latest packet handed to the rules.
    next_pkt_id: u32,
    /// Rules the current state disabled, counted already.
    disabled_seen: u64,
}

/// `bytes` with `[a, b)` replaced by `v` (None for a range outside of it).
fn splice(bytes: &[u8], a: i64, b: i64, v: &[u8]) -> Option<Vec<u8>> {
    let (a, b) = (usize::try_from(a).ok()?, usize::try_from(b).ok()?);
    if a > b || b > bytes.len() {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() - (b - a) + v.len());
    out.extend_from_slice(&bytes[..a]);
    out.extend_from_slice(v);
    out.extend_from_slice(&bytes[b..]);
    Some(out)
}

/// First line of an mlua error, which for Lua errors is `FILE:LINE: message`.
fn one_line(e: &mlua::Error) -> String {
    let s = match e {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::RuntimeError(m) => m.clone(),
        mlua::Error::MemoryError(m) => m.clone(),
        mlua::Error::CallbackError { cause, .. } => return one_line(cause),
        other => other.to_string(),
    };
    s.lines().next().unwrap_or("").trim().to_string()
}

fn addr_string(meta: &PacketMeta, a: &[u8; 16]) -> String {
    match meta.l3 {
        L3::Ipv4 => std::net::Ipv4Addr::new(a[12], a[13], a[14], a[15]).to_string(),
        _ => std::net::Ipv6Addr::from(*a).to_string(),
    }
}

/// The strings of a Lua sequence (other values skipped).
fn str_list(v: mlua::Value) -> Vec<String> {
    match v {
        mlua::Value::Table(l) => l.sequence_values::<String>().filter_map(|v| v.ok()).collect(),
        _ => Vec::new(),
    }
}

/// The alert of a `haka.alert{...}` table (flattened by haka.lua). One pass over its keys:
/// looking each known key up would make a Lua string per key, per alert. Values of the
/// wrong type are ignored, as absent keys are.
fn alert_from_table(lua: &Lua, sh: &Shared, t: &Table) -> Alert {
    use mlua::{FromLua, Value};
    let text = |v: Value| String::from_lua(v, lua).ok();
    let num = |v: Value| f64::from_lua(v, lua).ok();
    let mut a = Alert { worker: sh.worker, ..Alert::default() };
    let (mut id, mut start, mut pkt) = (None, None, -1i64);
    let mut rule_id: Option<u32> = None;
    let (mut http, mut dns, mut tls) =
        (crate::alert::HttpMeta::default(), crate::alert::DnsMeta { kind: "query", ..Default::default() }, None);
    for (k, v) in t.pairs::<Value, Value>().flatten() {
        let Value::String(k) = k else { continue };
        match &k.as_bytes()[..] {
            // the SIEM fields (RT.alert_meta)
            b"rule" => a.siem.rule = text(v),
            b"rule_id" => rule_id = u32::from_lua(v, lua).ok(),
            b"app_proto" => a.siem.app_proto = text(v),
            b"http_hostname" => http.hostname = text(v),
            b"http_url" => http.url = text(v),
            b"http_user_agent" => http.http_user_agent = text(v),
            b"http_method" => http.http_method = text(v),
            b"http_status" => http.status = u16::from_lua(v, lua).ok(),
            b"dns_rrname" => dns.rrname = text(v),
            b"dns_rrtype" => dns.rrtype = text(v),
            b"tls_sni" => tls = Some(crate::alert::TlsMeta { sni: text(v) }),
            b"update" => a.update = bool::from_lua(v, lua).unwrap_or(false),
            b"id" => id = u64::from_lua(v, lua).ok(),
            b"start_time" => {
                start = num(v);
                a.start_time_secs = start;
            }
            b"end_time" => a.end_time_secs = num(v),
            b"description" => a.description = text(v).unwrap_or_default(),
            b"severity" => a.severity = text(v).unwrap_or_default(),
            b"confidence" => a.confidence = text(v).unwrap_or_default(),
            b"completion" => a.completion = text(v).unwrap_or_default(),
            b"method_description" => a.method_description = text(v).unwrap_or_default(),
            b"method_ref" => a.method_ref = str_list(v),
            b"sources" => a.sources = str_list(v),
            b"targets" => a.targets = str_list(v),
            b"refs" => {
                if let Value::Table(l) = v {
                    a.refs = l.sequence_values::<f64>().filter_map(|v| v.ok()).map(|v| v as u64).collect();
                }
            }
            b"pkt" => pkt = i64::from_lua(v, lua).unwrap_or(-1),
            _ => {}
        }
    }
    a.id = if a.update {
        id.unwrap_or(0)
    } else {
        let n = sh.next_alert.get() + 1;
        sh.next_alert.set(n);
        ((sh.worker as u64) << 48) | n
    };
    a.time_secs = start.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
    });
    a.siem.signature_id = rule_id.or_else(|| a.siem.rule.as_deref().map(crate::alert::signature_id_of));
    match a.siem.app_proto.as_deref() {
        Some("http") if http != crate::alert::HttpMeta::default() => a.siem.http = Some(http),
        Some("dns") if dns.rrname.is_some() || dns.rrtype.is_some() => a.siem.dns = Some(dns),
        Some("tls") => a.siem.tls = tls,
        _ => {}
    }
    a.pkt = pkt;
    if pkt >= 0 {
        if let Some(p) = sh.metas.borrow().get(pkt as usize) {
            let m = &p.meta;
            if !matches!(m.l3, L3::Other(_)) {
                a.flow =
                    Some((addr_string(m, &m.src_addr), m.src_port, addr_string(m, &m.dst_addr), m.dst_port, m.proto));
            }
            a.direction = Some(if p.dir == 0 { "up" } else { "down" }.to_string());
            sh.packet_siem(p, &mut a.siem);
        }
    }
    a
}

fn helpers(lua: &Lua, sh: &Rc<Shared>) -> mlua::Result<Table> {
    let h = lua.create_table()?;
    let worker = sh.worker;
    h.set("worker", worker)?;
    h.set("max_error_messages", sh.max_error_messages)?;
    h.set("rule_error_drops", sh.rule_error_drop)?;
    h.set("required_chain", sh.required_chain)?;
    h.set("slot_size", std::mem::size_of::<Slot>())?;
    h.set("read_only", sh.read_only)?;
    h.set("dns_haka_records", sh.dns_haka_records)?;
    h.set("streamed_hold_bytes", sh.streamed_hold_bytes)?;
    h.set("streamed_over_cap_drop", sh.streamed_over_cap_drop)?;
    h.set("dns_pending_queries", sh.dns_pending_queries)?;
    h.set("rule_disable_errors", sh.disable[0])?;
    h.set("rule_disable_timeouts", sh.disable[1])?;
    h.set("rule_disable_window", sh.disable[2])?;
    h.set("alert_rate_count", sh.alert_rate[0])?;
    h.set("alert_rate_seconds", sh.alert_rate[1])?;
    h.set("lua_protocol_error_drop", sh.lua_protocol_error_drop)?;
    h.set("lua_in_place_parsing", sh.lua_in_place_parsing)?;
    h.set("burst_size", std::mem::size_of::<Burst>())?;
    let sh_log = Rc::clone(sh);
    h.set(
        "log",
        lua.create_function(move |_, (level, section, msg): (mlua::LuaString, mlua::LuaString, mlua::LuaString)| {
            {
                // Haka's log line: "LEVEL SECTION: message".
                let mut l = sh_log.logs.borrow_mut();
                l.extend_from_slice(&level.as_bytes());
                l.push(b' ');
                l.extend_from_slice(&section.as_bytes());
                l.extend_from_slice(b": ");
                l.extend_from_slice(&msg.as_bytes());
                l.push(b'\n');
                if l.len() < LOG_BUFFER {
                    return Ok(());
                }
            }
            sh_log.flush_logs();
            Ok(())
        })?,
    )?;
    // Lua's print, into the same buffer as the log lines (kept in order with the alerts)
    let sh_print = Rc::clone(sh);
    h.set(
        "print",
        lua.create_function(move |_, line: mlua::LuaString| {
            let full = {
                let mut l = sh_print.logs.borrow_mut();
                l.extend_from_slice(&line.as_bytes());
                l.push(b'\n');
                l.len() >= LOG_BUFFER
            };
            if full {
                sh_print.flush_logs();
            }
            Ok(())
        })?,
    )?;
    // true for the first rules load of the process only (load-time notices logged once,
    // not again by every worker's state)
    static FIRST_LOAD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
    h.set("first_load", lua.create_function(|_, ()| Ok(FIRST_LOAD.swap(false, Ordering::AcqRel)))?)?;
    let sh2 = Rc::clone(sh);
    h.set(
        "alert",
        lua.create_function(move |lua, t: Table| {
            let a = alert_from_table(lua, &sh2, &t);
            let id = a.id;
            sh2.alert_count.set(sh2.alert_count.get() + 1);
            sh2.raise(a);
            Ok(id)
        })?,
    )?;
    // regexp:match(string)'s matcher, called through the FFI (engine/src/dpdk/lua.rs)
    h.set("regex_find_fn", crate::dpdk::regex_find_fn() as f64)?;
    h.set(
        "regex_compile",
        lua.create_function(|lua, (pat, opts): (mlua::LuaString, Option<i64>)| {
            match regexp::Compiled::new(&pat.as_bytes(), opts.unwrap_or(0)) {
                Ok(r) => {
                    let r = Rc::new(r);
                    let addr = crate::dpdk::regex_addr(&r) as f64;
                    Ok((Some(lua.create_userdata(regexp::LuaRegexp(r))?), None, Some(addr)))
                }
                Err(e) => Ok((None, Some(e), None)),
            }
        })?,
    )?;
    h.set(
        "ipv6_parse",
        lua.create_function(|lua, s: String| match s.trim().parse::<std::net::Ipv6Addr>() {
            Ok(a) => Ok(Some(lua.create_string(a.octets())?)),
            Err(_) => Ok(None),
        })?,
    )?;
    h.set(
        "ipv6_fmt",
        lua.create_function(|_, s: mlua::LuaString| {
            let b = s.as_bytes();
            let mut o = [0u8; 16];
            if b.len() == 16 {
                o.copy_from_slice(&b);
            }
            Ok(std::net::Ipv6Addr::from(o).to_string())
        })?,
    )?;
    let sh_now = Rc::clone(sh);
    h.set(
        "now",
        lua.create_function(move |_, ()| {
            let (s, ns) = sh_now.packet_time.get();
            if s > 0 {
                return Ok(s as f64 + ns as f64 / 1e9);
            }
            Ok(std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0))
        })?,
    )?;
    Ok(h)
}

/// Runs `f` with the watchdog watching this call.
fn watched<R>(watch: &Watch, check: &dpdk::HookCheck, f: impl FnOnce() -> R) -> R {
    watched_grace(watch, check, 0, f)
}

/// Loading the runtime and the rules file gets `LOAD_GRACE_NS` on top of the budget: a
/// worker thread descheduled on a busy machine must not fail to start.
const LOAD_GRACE_NS: u64 = 2_000_000_000;

fn watched_grace<R>(watch: &Watch, check: &dpdk::HookCheck, grace_ns: u64, f: impl FnOnce() -> R) -> R {
    watch.since.store(now_ns() + grace_ns, Ordering::Release);
    dpdk::set_hook_check(Some(Rc::clone(check)));
    let r = f();
    watch.since.store(0, Ordering::Release);
    watch.disarm();
    dpdk::set_hook_check(None);
    r
}

/// `RT.http_prefilters()` (validated by haka.lua) as the engine's prefilters and header sets.
fn http_prefilters(t: Table) -> crate::dissectors::http::prefilter::HttpPrefilters {
    use crate::dissectors::http::FieldSet;
    use crate::dissectors::http::prefilter::{EventFilter, Field, HttpPrefilters, Pattern};
    let n = |i: usize| t.get::<usize>(i).unwrap_or(0);
    let mut rules: [Vec<(usize, Vec<Pattern>)>; 2] = [Vec::new(), Vec::new()];
    let entries: Option<Table> = t.get(3).ok();
    for e in entries.iter().flat_map(|l| l.sequence_values::<Table>().flatten()) {
        let (Ok(ev), Ok(j), Ok(field), Ok(pat)) =
            (e.get::<usize>(1), e.get::<usize>(2), e.get::<String>(3), e.get::<mlua::BString>(5))
        else {
            continue;
        };
        let field = match (ev, field.as_str()) {
            (_, "headers") => Field::Header(e.get::<mlua::BString>(4).map(|b| b.to_vec()).unwrap_or_default()),
            (1, "method") | (2, "version") => Field::Part(0),
            (1, "uri") | (2, "status") => Field::Part(1),
            (1, "version") | (2, "reason") => Field::Part(2),
            _ => continue,
        };
        let Some(list) = rules.get_mut(ev.wrapping_sub(1)) else { continue };
        let p = Pattern { field, needle: pat.to_vec() };
        match list.iter_mut().find(|(k, _)| *k == j) {
            Some((_, ps)) => ps.push(p),
            None => list.push((j, vec![p])),
        }
    }
    // t[4]: header sets { event, listener, name, no eval, value (absent: remove) }
    let mut sets: [Vec<(usize, Vec<FieldSet>, bool)>; 2] = [Vec::new(), Vec::new()];
    let entries: Option<Table> = t.get(4).ok();
    for e in entries.iter().flat_map(|l| l.sequence_values::<Table>().flatten()) {
        let (Ok(ev), Ok(j), Ok(name)) = (e.get::<usize>(1), e.get::<usize>(2), e.get::<mlua::BString>(3)) else {
            continue;
        };
        let engine_only = e.get::<bool>(4).unwrap_or(false);
        let value = e.get::<Option<mlua::BString>>(5).ok().flatten().map(|v| v.to_vec());
        let Some(list) = sets.get_mut(ev.wrapping_sub(1)) else { continue };
        let f = FieldSet { name: name.to_vec(), value };
        match list.iter_mut().find(|(k, ..)| *k == j) {
            Some((_, fs, _)) => fs.push(f),
            None => list.push((j, vec![f], engine_only)),
        }
    }
    let [req, resp] = rules;
    let [req_sets, resp_sets] = sets;
    HttpPrefilters {
        request: EventFilter::new(n(1), req, req_sets),
        response: EventFilter::new(n(2), resp, resp_sets),
    }
}

fn build_state(
    path: &Path,
    sh: &Rc<Shared>,
    burst_addr: usize,
    watch: &Arc<Watch>,
    check: &dpdk::HookCheck,
    prev_raw: usize,
    memory_limit: usize,
) -> Result<State, String> {
    let lua = dpdk::new_lua_with_ffi();
    if memory_limit > 0 {
        // Hard cap: mlua's allocator fails allocations beyond it ("not enough memory",
        // a catchable Lua error). Works with the vendored LuaJIT; if it did not, the
        // watchdog check and the after-burst check still apply.
        let _ = lua.set_memory_limit(memory_limit);
    }
    let raw = dpdk::raw_state(&lua);
    *watch.state.lock().unwrap_or_else(|p| p.into_inner()) = raw;
    let r = watched_grace(watch, check, LOAD_GRACE_NS, || -> Result<State, String> {
        let h = helpers(&lua, sh).map_err(|e| format!("haka.lua:0: {}", one_line(&e)))?;
        // RT.run, resuming a burst after a rule error: the rest of the burst gets a fresh
        // budget (and a watchdog hook armed before is ignored, see the check).
        let w = Arc::clone(watch);
        let fresh = lua.create_function(move |_, ()| {
            if w.since.load(Ordering::Acquire) != 0 {
                w.since.store(now_ns(), Ordering::Release);
            }
            Ok(())
        });
        h.set("fresh_budget", fresh.map_err(|e| one_line(&e))?).map_err(|e| one_line(&e))?;
        let vb: Table = lua.load(VBUFFER_LUA).set_name("@vbuffer.lua").call(()).map_err(|e| one_line(&e))?;
        h.set("vbuffer", vb).map_err(|e| one_line(&e))?;
        let rt: Table =
            lua.load(HAKA_LUA).set_name("@haka.lua").call((h.clone(), burst_addr as f64)).map_err(|e| one_line(&e))?;
        // application dissector objects (engine/lua/app.lua), run with (H, K)
        let k = app_values::load(&lua, &h).map_err(|e| one_line(&e))?;
        // ... and the registry of application dissectors: { name, proto, port, proto, port, ... }
        let registry = lua
            .create_sequence_from(crate::dissectors::REGISTRY.iter().map(|r| {
                let mut e: Vec<mlua::Value> = vec![mlua::Value::String(lua.create_string(r.name)?)];
                for &(proto, port) in r.default_ports {
                    e.push(mlua::Value::Integer(proto as i64));
                    e.push(mlua::Value::Integer(port as i64));
                }
                lua.create_sequence_from(e)
            }).collect::<mlua::Result<Vec<_>>>().map_err(|e| one_line(&e))?)
            .map_err(|e| one_line(&e))?;
        rt.get::<Function>("set_app").and_then(|f| f.call::<()>((k, registry))).map_err(|e| one_line(&e))?;
        // Haka's Lua libraries: debug.pprint ..., require('class'), require('check')
        libs::load(&lua).map_err(|e| one_line(&e))?;
        // As Haka: the rules file's folder comes first on the module path, so that a rules
        // file finds the Lua dissectors beside it (`require('smtp')` loads rules/smtp.lua).
        libs::add_module_dir(&lua, path.parent()).map_err(|e| one_line(&e))?;
        let src = std::fs::read(path).map_err(|e| format!("{}:0: cannot read rules file: {e}", path.display()))?;
        lua.load(&src[..]).set_name(format!("@{}", path.display())).exec().map_err(|e| one_line(&e))?;
        let finish: Function = rt.get("finish").map_err(|e| one_line(&e))?;
        let (has, has_frag): (bool, bool) = finish.call(()).map_err(|e| one_line(&e))?;
        let get = |k: &str| rt.get::<Function>(k).map_err(|e| one_line(&e));
        let stateful: u32 = get("stateful_info")?.call(()).map_err(|e| one_line(&e))?;
        let ports: Vec<u32> = get("app_ports")?.call(()).map_err(|e| one_line(&e))?;
        let app_ports = ports.chunks_exact(3).map(|p| (p[0] as u8, p[1] as u16, p[2])).collect();
        let http_prefilters = http_prefilters(get("http_prefilters")?.call(()).map_err(|e| one_line(&e))?);
        set_gc_pause(&lua, GC_PAUSE_SMALL_HEAP);
        Ok(State {
            run: get("run")?,
            take_errors: get("take_errors")?,
            blame: get("blame")?,
            fire: get("fire")?,
            rule_stats: get("rule_stats")?,
            flow_sizes: get("flow_sizes")?,
            set_log_levels: get("set_log_levels")?,
            has_packet_rules: has,
            has_fragment_rules: has_frag,
            conn_packet: get("conn_packet")?,
            conn_data: get("conn_data")?,
            conn_end: get("conn_end")?,
            take_edits: get("take_edits")?,
            take_rewrites: get("take_rewrites")?,
            take_forged: get("take_forged")?,
            app_events: get("app_events")?,
            stateful,
            app_ports,
            http_prefilters,
            gc_pause: GC_PAUSE_SMALL_HEAP,
            lua: lua.clone(),
        })
    });
    if r.is_err() {
        *watch.state.lock().unwrap_or_else(|p| p.into_inner()) = prev_raw;
        dpdk::disarm_interrupt(raw);
    }
    r
}

impl LuaEngine {
    /// Loads the rules file into a new Lua state. Errors are one line, `FILE:LINE: message`.
    pub fn load(
        rules_path: &Path,
        opts: &LuaOptions,
        worker: usize,
        alerts: Box<dyn FnMut(Alert)>,
    ) -> Result<LuaEngine, String> {
        let shared = Rc::new(Shared {
            worker,
            alerts: RefCell::new(alerts),
            next_alert: Cell::new(0),
            alert_count: Cell::new(0),
            metas: RefCell::new(Vec::with_capacity(MAX_BURST)),
            flow_ctx: Cell::new((0, 0)),
            port_names: opts.port_names.clone(),
            pending: RefCell::new(Vec::new()),
            logs: RefCell::new(Vec::new()),
            packet_time: Cell::new((0, 0)),
            console: RefCell::new(None),
            max_error_messages: if opts.error_log_interval.is_zero() { MAX_BURST } else { 16 },
            rule_error_drop: opts.rule_error_drop,
            required_chain: opts.required_chain,
            read_only: opts.read_only,
            dns_haka_records: opts.dns_haka_records,
            streamed_hold_bytes: opts.streamed_hold_bytes,
            streamed_over_cap_drop: opts.streamed_over_cap_drop,
            dns_pending_queries: opts.dns_pending_queries,
            disable: [opts.disable_after_errors, opts.disable_after_timeouts, opts.disable_window.max(1)],
            alert_rate: [opts.alert_rate[0], opts.alert_rate[1].max(1)],
            lua_protocol_error_drop: opts.lua_protocol_error_drop,
            lua_in_place_parsing: opts.lua_in_place_parsing,
        });
        let burst = Box::new(Burst { n: 0, cur: 0, errors: 0, rewrites: 0, forged: 0, suppressed: 0, proto_errors: 0, _pad3: 0, s: [Slot::default(); MAX_BURST] });
        let burst_addr = &*burst as *const Burst as usize;
        let watch = Arc::new(Watch {
            state: Mutex::new(0),
            since: std::sync::atomic::AtomicU64::new(0),
            armed: std::sync::atomic::AtomicBool::new(false),
        });
        watchdog::register(&watch);
        let check: dpdk::HookCheck = {
            let w = Arc::clone(&watch);
            let budget_ns = opts.instruction_budget;
            let mem_kb = opts.memory_limit_bytes / 1024;
            Rc::new(move |kb: usize| {
                w.disarm_now();
                let since = w.since.load(Ordering::Acquire);
                let now = now_ns();
                if since != 0 && now.saturating_sub(since) < watchdog::TICK_NS {
                    // Armed for an earlier call, which ended while the watchdog armed it:
                    // the watchdog arms only calls older than a tick. Not this call's.
                    return None;
                }
                if budget_ns > 0 && since != 0 && now.saturating_sub(since) > budget_ns {
                    // the rest of the burst (resumed after this error) gets a fresh budget
                    w.since.store(now, Ordering::Release);
                    return Some(format!("instruction budget exceeded ({budget_ns} instructions)"));
                }
                if mem_kb > 0 && kb > mem_kb {
                    return Some(format!("memory limit exceeded ({} KiB > {} KiB)", kb, mem_kb));
                }
                None
            })
        };
        let st = build_state(rules_path, &shared, burst_addr, &watch, &check, 0, opts.memory_limit_bytes)?;
        Ok(LuaEngine {
            path: rules_path.to_path_buf(),
            opts: opts.clone(),
            worker,
            burst,
            shared,
            watch,
            check,
            st,
            counters: LuaCounters::default(),
            last_log: None,
            suppressed: 0,
            err_section: "lua",
            heads: Vec::new(),
            app_evs: Vec::with_capacity(64), // its address is cached by Lua: grown rarely
            mem_checked: 0,
            next_pkt_id: 0,
            disabled_seen: 0,
        })
    }

    /// False when no packet event or packet policy has a rule: the worker need not call Lua.
    /// After each burst (the worker calls it): writes the burst's `haka.log` lines and
    /// adjusts the collector's pause to the heap size.
    /// Writes the log lines the rules made so far (before an alert raised outside them).
    pub fn flush_logs(&self) {
        self.shared.release(|_| false);
        self.shared.flush_logs();
    }

    /// Hands the alerts raised since the last call to the alert output, with EVE action
    /// "blocked" when `blocked` (the packet or its connection was dropped).
    pub fn release_alerts(&mut self, blocked: bool) {
        self.shared.release(|_| blocked);
    }

    /// The flow id ([`crate::flow::flow_uid`]) and input port of the packet the next
    /// stateful calls are about (their alerts name them).
    pub fn set_flow_context(&mut self, flow_uid: u64, port: u16) {
        self.shared.flow_ctx.set((flow_uid, port));
    }

    pub fn after_burst(&mut self) {
        self.shared.release(|_| false);
        self.shared.flush_logs();
        let limit = self.opts.memory_limit_bytes;
        if limit == 0 {
            return;
        }
        let used = self.st.lua.used_memory();
        let want = if used > limit / 4 {
            GC_PAUSE_DEFAULT
        } else if used < limit / 8 {
            GC_PAUSE_SMALL_HEAP
        } else {
            self.st.gc_pause
        };
        if want != self.st.gc_pause {
            set_gc_pause(&self.st.lua, want);
            self.st.gc_pause = want;
        }
    }

    /// The collector's current pause (percent).
    pub fn gc_pause(&self) -> i32 {
        self.st.gc_pause
    }

    /// What the HTTP rules do with `head` (see [`crate::dissectors::http::prefilter`]): the listeners Lua
    /// runs (0: no call) and whether the selected rules' `set_headers` change it (the new
    /// head then in `out`).
    pub fn http_apply(&self, head: &crate::dissectors::http::RawHead, out: &mut Vec<u8>) -> (u32, bool) {
        self.st.http_prefilters.apply(head, out)
    }

    pub fn has_packet_rules(&self) -> bool {
        self.st.has_packet_rules
    }

    /// Whether a fragment has rules to run before reassembly (packet, ethernet or ip
    /// `receive_packet`): else the engine does not hand fragments to Lua.
    pub fn has_fragment_rules(&self) -> bool {
        self.st.has_packet_rules && self.st.has_fragment_rules
    }

    pub fn counters(&self) -> LuaCounters {
        let mut c = self.counters;
        c.alerts = self.shared.alert_count.get();
        c.alerts_suppressed += self.burst.suppressed as u64;
        c.protocol_errors = self.burst.proto_errors as u64;
        c
    }

    /// Folds the alerts suppressed since the last call into the counters (the Lua side
    /// counts them in a 32-bit field).
    fn fold_suppressed(&mut self) {
        self.counters.alerts_suppressed += self.burst.suppressed as u64;
        self.burst.suppressed = 0;
    }

    /// Counts the rules Lua disabled, `n` in all for the current state.
    fn note_disabled(&mut self, n: u32) {
        if n as u64 > self.disabled_seen {
            self.counters.rules_disabled += n as u64 - self.disabled_seen;
            self.disabled_seen = n as u64;
        }
    }

    pub fn rule_errors(&self) -> u64 {
        self.counters.rule_errors
    }

    /// The Graphviz text of each grammar and state machine the rules made, as
    /// (file name, dot text): Haka's names, `NAME-grammar.dot` and `NAME-state-machine.dot`
    /// (`--dump-dissector-graph`; engine/lua/dissector.lua).
    pub fn dissector_graphs(&self) -> Result<Vec<(String, String)>, String> {
        let f: Function = self
            .st
            .lua
            .load("return haka.dissector._dump_graphs")
            .eval()
            .map_err(|e| one_line(&e))?;
        let list: Vec<Table> = f.call(()).map_err(|e| one_line(&e))?;
        list.iter()
            .map(|t| Ok((t.get::<String>(1)?, t.get::<String>(2)?)))
            .collect::<mlua::Result<Vec<_>>>()
            .map_err(|e| one_line(&e))
    }

    /// Lua heap size of this worker's state.
    pub fn used_memory(&self) -> usize {
        self.st.lua.used_memory()
    }

    /// Loads the rules file into a fresh state; on failure the old state stays and the
    /// error (`FILE:LINE: message`) is returned.
    pub fn reload(&mut self) -> Result<(), String> {
        let old_raw = dpdk::raw_state(&self.st.lua);
        let burst_addr = &*self.burst as *const Burst as usize;
        let st = build_state(
            &self.path,
            &self.shared,
            burst_addr,
            &self.watch,
            &self.check,
            old_raw,
            self.opts.memory_limit_bytes,
        )?;
        self.st = st;
        self.burst.forged = 0;
        self.disabled_seen = 0;
        self.counters.reloads += 1;
        Ok(())
    }

    /// Swaps in `new`, an engine of the same rules file built off this thread
    /// ([`dpdk::EngineHandoff`]), as [`reload`](Self::reload) would have built it here: the
    /// alert sink, console, counters and alert ids carry over; the old state is closed.
    /// Cheap (no Lua runs): a worker calls it between two bursts.
    pub fn adopt(&mut self, mut new: LuaEngine) {
        // (between bursts no alert is held; any would leave before the swap)
        self.release_alerts(false);
        self.shared.flush_logs();
        // the sinks are the worker's: the new engine was built with placeholders
        std::mem::swap(&mut *self.shared.alerts.borrow_mut(), &mut *new.shared.alerts.borrow_mut());
        std::mem::swap(&mut *self.shared.console.borrow_mut(), &mut *new.shared.console.borrow_mut());
        new.shared.next_alert.set(self.shared.next_alert.get());
        new.shared.alert_count.set(self.shared.alert_count.get() + new.shared.alert_count.get());
        new.shared.packet_time.set(self.shared.packet_time.get());
        // what the new state printed at load, through the worker's console now
        new.shared.flush_logs();
        self.fold_suppressed();
        new.burst.proto_errors = self.burst.proto_errors;
        new.counters = self.counters;
        new.counters.reloads += 1;
        new.last_log = self.last_log;
        new.suppressed = self.suppressed;
        new.mem_checked = self.mem_checked;
        new.next_pkt_id = self.next_pkt_id;
        // (the old engine, dropped here, clears its watch: the watchdog forgets its state)
        *self = new;
    }

    fn fire(&mut self, name: &str) -> Result<(), String> {
        let f = self.st.fire.clone();
        let r = watched(&self.watch, &self.check, || f.call::<()>(name));
        self.shared.release(|_| false);
        r.map_err(|e| {
            let m = one_line(&e);
            self.counters.rule_errors += 1;
            self.log_error(&m);
            m
        })
    }

    /// The bytes held by up to `max_flows` flows' Lua objects (`RT.flow_sizes`: resumes
    /// where the last call stopped), into `out` as (flow id, bytes). A flow with more
    /// than `node_budget` Lua objects is reported at `over_bytes`. Between bursts only.
    pub fn flow_sizes(&mut self, max_flows: usize, node_budget: usize, over_bytes: usize, out: &mut Vec<(u32, usize)>) {
        out.clear();
        let f = self.st.flow_sizes.clone();
        let r = watched(&self.watch, &self.check, || f.call::<Table>((max_flows, node_budget, over_bytes as f64)));
        match r {
            Ok(t) => {
                let n = t.raw_len();
                for i in (1..n).step_by(2) {
                    let id = t.raw_get::<f64>(i).unwrap_or(-1.0);
                    let b = t.raw_get::<f64>(i + 1).unwrap_or(0.0);
                    if id >= 0.0 {
                        out.push((id as u32, b as usize));
                    }
                }
            }
            Err(e) => self.log_error(&format!("flow memory scan: {}", one_line(&e))),
        }
    }

    /// Each rule's hit and error counters since the rules were (re)loaded, in the order
    /// the rules file registered them.
    pub fn rule_stats(&self) -> Vec<RuleStat> {
        let t: Table = match self.st.rule_stats.call(()) {
            Ok(t) => t,
            Err(_) => return Vec::new(),
        };
        t.sequence_values::<Table>()
            .filter_map(|r| r.ok())
            .map(|r| RuleStat {
                name: r.get::<String>(1).unwrap_or_default(),
                location: r.get::<String>(2).unwrap_or_default(),
                event: r.get::<String>(3).unwrap_or_default(),
                hits: r.get::<f64>(4).unwrap_or(0.0) as u64,
                errors: r.get::<f64>(5).unwrap_or(0.0) as u64,
            })
            .collect()
    }

    /// Sets the rules' log levels (haka.log sections): the default level and per-section ones.
    pub fn set_log_levels(&self, spec: &crate::logging::LogSpec) {
        let sections = self.st.lua.create_table().ok();
        if let Some(t) = &sections {
            for (k, v) in &spec.sections {
                let _ = t.set(k.as_str(), v.as_str());
            }
        }
        let _ = self.st.set_log_levels.call::<()>((spec.default.as_str(), sections));
    }

    /// Runs the `haka.events.started` rules.
    pub fn fire_started(&mut self) -> Result<(), String> {
        self.fire("haka:started")
    }

    /// Runs the `haka.events.exiting` rules.
    pub fn fire_exiting(&mut self) -> Result<(), String> {
        self.fire("haka:exiting")
    }

    fn log_error(&mut self, msg: &str) {
        let now = Instant::now();
        // Haka's line for a rule error: "error lua: message".
        if self.last_log.is_none_or(|t| now.duration_since(t) >= self.opts.error_log_interval) {
            {
                use std::io::Write;
                let mut l = self.shared.logs.borrow_mut();
                let _ = if self.suppressed > 0 {
                    writeln!(l, "error {}: {} ({} more errors suppressed)", self.err_section, msg, self.suppressed)
                } else {
                    writeln!(l, "error {}: {}", self.err_section, msg)
                };
            }
            self.last_log = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
    }

    /// Runs the rules over a burst: ONE call into Lua per `MAX_BURST` packets. Every packet
    /// gets a verdict and a `modified` flag; modified packets get valid checksums.
    pub fn run_burst(&mut self, pkts: &mut [LuaPacket<'_>]) -> BurstOutcome {
        let mut out = BurstOutcome::default();
        if !self.st.has_packet_rules {
            for p in pkts.iter_mut() {
                p.verdict = LuaVerdict::Accept;
                p.modified = false;
            }
            out.accepted = pkts.len() as u32;
            return out;
        }
        for chunk in pkts.chunks_mut(MAX_BURST) {
            self.run_chunk(chunk, &mut out);
        }
        out
    }

    fn run_chunk(&mut self, pkts: &mut [LuaPacket<'_>], out: &mut BurstOutcome) {
        let n = pkts.len().min(MAX_BURST);
        {
            let mut metas = self.shared.metas.borrow_mut();
            metas.clear();
            for (slot, p) in self.burst.s.iter_mut().zip(pkts.iter_mut()) {
                self.next_pkt_id = self.next_pkt_id.wrapping_add(1).max(1);
                fill_slot(slot, p, self.next_pkt_id);
                if p.ts.0 > 0 {
                    self.shared.packet_time.set(p.ts);
                }
                metas.push(PacketCtx { meta: *p.meta, dir: p.dir, flow_uid: p.flow_uid, port: p.port });
            }
        }
        self.burst.n = n as u32;
        self.burst.cur = 0;
        self.burst.errors = 0;
        self.burst.rewrites = 0;
        self.counters.bursts += 1;
        self.counters.packets += n as u64;
        let mut start = 0u32;
        loop {
            let run = self.st.run.clone();
            match watched(&self.watch, &self.check, || run.call::<Option<u32>>(start)) {
                Ok(Some(next)) if (next as usize) <= n && next > start => {
                    // A rule ran the heap out of memory at packet next - 1: free or recreate
                    // the state now (as after a burst), so that the rest is not refused too.
                    self.burst.s[next as usize - 1].verdict = 2;
                    self.count_error("not enough memory");
                    self.collect_errors();
                    self.check_memory(true);
                    if next as usize == n {
                        break;
                    }
                    start = next;
                }
                Ok(_) => break,
                Err(e) => {
                    // An error outside the per-packet pcall (e.g. an interruption between two
                    // packets): the packets not yet processed get the rule-error verdict.
                    let cur = (self.burst.cur as usize).min(n);
                    for s in &mut self.burst.s[cur..n] {
                        if s.verdict == 0 {
                            s.verdict = 2;
                        }
                    }
                    // (counted here: `burst.errors` holds the errors RT.run recorded itself)
                    let m = one_line(&e);
                    self.count_error(&m);
                    break;
                }
            }
        }
        self.collect_errors();
        if self.burst.rewrites > 0 {
            for (slot, rw) in self.take_rewrites() {
                if let Some(p) = pkts.get_mut(slot) {
                    p.rewrite = Some(Box::new(rw));
                }
            }
        }
        // the alerts of the burst: "blocked" when their packet is dropped
        let error_drops = self.opts.rule_error_drop;
        let s = &self.burst.s;
        self.shared.release(|pkt| {
            usize::try_from(pkt).ok().and_then(|i| s.get(i)).is_some_and(|s| match s.verdict {
                0 => false,
                2 => error_drops,
                _ => true,
            })
        });
        for (s, p) in self.burst.s.iter().zip(pkts.iter_mut()) {
            p.error = s.verdict == 2;
            p.verdict = match s.verdict {
                0 => LuaVerdict::Accept,
                2 => {
                    out.rule_errors += 1;
                    if self.opts.rule_error_drop {
                        LuaVerdict::Drop
                    } else {
                        LuaVerdict::Accept
                    }
                }
                _ => LuaVerdict::Drop,
            };
            p.modified = s.modified & MOD_ANY != 0;
            p.dont_reassemble = s.flags & SLOT_NOREASM != 0;
            if p.modified {
                out.modified += 1;
                if p.rewrite.is_none() {
                    fix_checksums(p.data, p.meta, s.modified);
                }
            }
            match p.verdict {
                LuaVerdict::Accept => out.accepted += 1,
                LuaVerdict::Drop => out.dropped += 1,
            }
        }
        self.check_memory_since_last();
    }

    /// Counts and logs the rule errors of the current burst that the Lua side recorded
    /// (`RT.take_errors`).
    fn collect_errors(&mut self) {
        if self.burst.errors > 0 {
            let (msgs, disabled): (Vec<String>, u32) = self
                .st
                .take_errors
                .call::<(Table, u32)>(())
                .map(|(t, n)| (t.sequence_values::<String>().filter_map(|v| v.ok()).collect(), n))
                .unwrap_or_default();
            self.note_disabled(disabled);
            let extra = (self.burst.errors as usize).saturating_sub(msgs.len());
            for m in &msgs {
                self.count_error(m);
            }
            self.counters.rule_errors += extra as u64;
            self.burst.errors = 0;
        }
    }

    fn count_error(&mut self, m: &str) {
        self.counters.rule_errors += 1;
        if m.contains("instruction budget exceeded") {
            self.counters.budget_exceeded += 1;
        } else if m.contains("memory limit exceeded") || m.contains("not enough memory") {
            self.counters.memory_exceeded += 1;
        }
        self.log_error(m);
    }

    /// After a burst of packet rules or of the stateful stage's calls (connection, data and
    /// application events): `check_memory`, with the allocation failures since the last
    /// check, so that rules that leak per connection or message cannot leave every later
    /// event failing either. A recreated state has lost its flow objects: a flow gets a new
    /// one at its next event (new_connection fires again for it), and rule data kept on the
    /// old one is gone.
    pub fn check_memory_since_last(&mut self) {
        self.fold_suppressed();
        self.check_memory(self.counters.memory_exceeded != self.mem_checked);
    }

    /// After a burst: a heap still above 7/8 of the cap after a full GC (live data kept by
    /// the rules, e.g. growing global tables), or above half of it when allocations failed
    /// in this burst, gets the state recreated from the rules file. An episode already
    /// counted by an in-burst allocation failure is not counted twice.
    fn check_memory(&mut self, mem_errors: bool) {
        self.recreate_if_full(mem_errors);
        self.mem_checked = self.counters.memory_exceeded;
    }

    fn recreate_if_full(&mut self, mem_errors: bool) {
        let limit = self.opts.memory_limit_bytes;
        let soft = limit - limit / 8;
        if limit == 0 || (!mem_errors && self.st.lua.used_memory() <= soft) {
            return;
        }
        let _ = self.st.lua.gc_collect();
        let used = self.st.lua.used_memory();
        if used <= soft && !(mem_errors && used > limit / 2) {
            return;
        }
        if !mem_errors {
            self.counters.memory_exceeded += 1;
        }
        self.counters.memory_resets += 1;
        match self.reload() {
            Ok(()) => {
                self.counters.reloads -= 1;
                println!(
                    "[worker {}] error: Lua memory {} KiB over the limit of {} KiB: state recreated from {}",
                    self.worker,
                    used / 1024,
                    limit / 1024,
                    self.path.display()
                );
            }
            Err(e) => {
                println!("[worker {}] error: Lua memory over the limit; recreating the state failed: {e}", self.worker)
            }
        }
    }
}

/// Flow actions a stateful rule asked for (bits returned by the `RT.conn_*` calls,
/// mirrored in haka.lua).
pub mod act {
    pub const DROP: u32 = 1;
    pub const RESET: u32 = 2;
    pub const HALFRESET: u32 = 4;
    pub const EDITS: u32 = 8;
    pub const PACKET_DROP: u32 = 16;
    /// Stream bytes were rewritten (`take_edits`); EDITS is set too.
    pub const STREAM_EDITS: u32 = 32;
    /// The connection went over the data held for its streamed rules (counted; DROP
    /// is set too when `[rules] streamed_over_cap = "drop"`).
    pub const STREAMED_OVER_CAP: u32 = 64;
    /// `flow:restart()`: the connection ends, its packet starts anew.
    pub const RESTART: u32 = 128;
    /// Bits 8..11: application dissector selected by the rules (see `app_of`).
    pub const APP_SHIFT: u32 = 8;
    pub fn app_of(bits: u32) -> u32 {
        (bits >> APP_SHIFT) & 0xf
    }
}

/// `RT.stateful_info` bits: which stateful events have rules.
pub mod stateful {
    pub const TCP_EVENTS: u32 = 1;
    pub const TCP_DATA: u32 = 2;
    pub const UDP_EVENTS: u32 = 4;
    pub const UDP_DATA: u32 = 8;
    pub const TCP_POLICIES: u32 = 16;
    pub const UDP_POLICIES: u32 = 32;
    /// Set by the app dissectors' modules (http, dns, tls) when required.
    pub const APPS: u32 = 64;
    /// Streamed rules (`options.streamed`) on tcp_connection receive_data: the end of each
    /// direction's stream is signalled ([`LuaEngine::conn_data_end`](super::LuaEngine::conn_data_end)).
    pub const TCP_STREAMED: u32 = 131072;
    /// Streamed rules on HTTP body events: message ends are handed to Lua.
    pub const HTTP_STREAMED: u32 = 262144;
    /// Rules read HTTP bodies (request_data, response_data, receive_data).
    pub const HTTP_DATA: u32 = 128;
    /// Rules listen to HTTP requests / responses (messages nobody listens to are not
    /// handed to Lua).
    pub const HTTP_REQUEST: u32 = 256;
    pub const HTTP_RESPONSE: u32 = 512;
    /// The TCP / UDP connection policies are only default application selections and no
    /// rule listens to the connection events: the stage selects the application by port
    /// ([`LuaEngine::app_ports`]) and the Lua flow object is made at its first
    /// application event.
    pub const TCP_APPS_BY_PORT: u32 = 1024;
    pub const UDP_APPS_BY_PORT: u32 = 2048;
    /// Rules listen to HTTP anomalies (heads that have some are handed to Lua).
    pub const HTTP_ANOMALY: u32 = 4096;
    /// The rules file loaded protocol/ipv4, tcp_connection, udp_connection (directly or
    /// through a module standing on it): the chain of `[rules] dissectors = "required"`.
    pub const IPV4_LOADED: u32 = 8192;
    pub const TCP_CONNECTION_LOADED: u32 = 16384;
    pub const UDP_CONNECTION_LOADED: u32 = 32768;
    /// The raw dissector's `next_dissector` policy point ends with an unconditional
    /// `haka.policy.accept`: no "unknown dissector" drop (Haka: the last policy wins).
    pub const PACKET_NEXT_ACCEPT: u32 = 65536;
}

/// `RT.conn_packet` bits.
pub mod connbits {
    pub const CREATED: u32 = 1;
    pub const RECEIVE: u32 = 2;
    pub const PICKED_UP: u32 = 4;
}

/// Result of a stateful call: action bits, or a rule error (already logged and counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnCall {
    Done(u32),
    Error,
}

impl LuaEngine {
    /// Bits of [`stateful`]: which stateful events the rules listen to.
    pub fn stateful_info(&self) -> u32 {
        self.st.stateful
    }

    /// The default application selections (protocol, server port, application code as in
    /// [`act::app_of`]) that the stage applies itself under [`stateful::TCP_APPS_BY_PORT`] /
    /// [`stateful::UDP_APPS_BY_PORT`].
    pub fn app_ports(&self) -> &[(u8, u16, u32)] {
        &self.st.app_ports
    }

    /// Sends the log lines to `console` from now on (else they go to stdout).
    pub fn set_console(&mut self, console: Console) {
        *self.shared.console.borrow_mut() = Some(console);
    }

    /// The capture time of the packet the next stateful calls are about (seconds since
    /// the epoch and nanoseconds; (0, 0): unknown): `pkt.timestamp`, `haka.network_time()`.
    pub fn set_packet_time(&mut self, ts: (u64, u32)) {
        if ts.0 > 0 {
            self.shared.packet_time.set(ts);
        }
    }

    /// Makes `data` the current packet (Lua's slot 0) for a stateful call.
    fn set_current(&mut self, data: &mut [u8], meta: &PacketMeta, dir: u8, flow_id: u32) {
        let mut p = LuaPacket::new(data, meta, dir, flow_id);
        p.ts = self.shared.packet_time.get();
        fill_slot(&mut self.burst.s[0], &mut p, 0);
        self.burst.n = 1;
        self.set_current_meta(meta, dir);
    }

    /// The packet whose flow the alerts of the next stateful call name.
    fn set_current_meta(&mut self, meta: &PacketMeta, dir: u8) {
        let (flow_uid, port) = self.shared.flow_ctx.get();
        let mut metas = self.shared.metas.borrow_mut();
        metas.clear();
        metas.push(PacketCtx { meta: *meta, dir, flow_uid, port });
    }

    fn conn_call(&mut self, f: Function, args: impl mlua::IntoLuaMulti) -> ConnCall {
        let r = watched(&self.watch, &self.check, || f.call::<u32>(args));
        match r {
            Ok(bits) => ConnCall::Done(bits),
            Err(e) => {
                let m = one_line(&e);
                self.event_failed(&m);
                ConnCall::Error
            }
        }
    }

    /// new_connection / receive_packet (and the connection policies) for the packet in
    /// `data`; `dir` is the connection direction (0 up), `bits` [`connbits`].
    /// Modifications a rule makes to the packet get their checksums fixed.
    pub fn conn_packet(
        &mut self,
        data: &mut [u8],
        meta: &PacketMeta,
        flow_id: u32,
        dir: u8,
        state: u8,
        bits: u32,
    ) -> ConnCall {
        self.set_current(data, meta, dir, flow_id);
        let f = self.st.conn_packet.clone();
        self.burst.rewrites = 0;
        let r = self.conn_call(f, (flow_id, meta.proto, dir, state, bits));
        if self.burst.rewrites > 0 {
            // (the stateful stage edits streams, not single packets: a size change of a
            // packet's payload by a tcp_connection/udp_connection rule is not applied)
            let _ = self.take_rewrites();
            self.log_rewrite_refused();
        }
        let m = self.burst.s[0].modified;
        if m & MOD_ANY != 0 {
            fix_checksums(data, meta, m);
        }
        r
    }

    /// receive_data with `bytes` (stream data in order, or a datagram's payload) of the
    /// packet `meta` (alerts name its flow).
    /// udp_connection `receive_data` for datagram `data` (the whole packet): as Haka, the
    /// rules get the udp packet (`pkt.payload` is the datagram's payload).
    pub fn conn_datagram(&mut self, flow_id: u32, data: &mut [u8], meta: &PacketMeta, dir: u8) -> ConnCall {
        self.set_current(data, meta, dir, flow_id);
        let f = self.st.conn_data.clone();
        self.burst.rewrites = 0;
        let r = self.conn_call(f, (flow_id, meta.proto, dir, 0.0, 0u32));
        if self.burst.rewrites > 0 {
            // (as conn_packet: a size change of the datagram's payload is not applied here)
            let _ = self.take_rewrites();
            self.log_rewrite_refused();
        }
        // (the datagram's bytes written in place, e.g. by a dissector written in Lua)
        let m = self.burst.s[0].modified;
        if m & MOD_ANY != 0 {
            fix_checksums(data, meta, m);
        }
        r
    }

    /// `read_only`: the rules may not modify the data (passive mode: Haka's "read only
    /// buffer" error); else their modifications come back as edits ([`act::EDITS`]).
    pub fn conn_data(&mut self, flow_id: u32, meta: &PacketMeta, dir: u8, bytes: &[u8], read_only: bool) -> ConnCall {
        self.set_current_meta(meta, dir);
        let f = self.st.conn_data.clone();
        if meta.proto == 6 {
            self.err_section = "tcp";
        }
        let r = self.conn_call(f, (flow_id, meta.proto, dir, bytes.as_ptr() as usize as f64, bytes.len() as u32, read_only));
        self.err_section = "lua";
        r
    }

    /// The end of direction `dir`'s stream (FIN): streamed receive_data rules run to their end.
    pub fn conn_data_end(&mut self, flow_id: u32, meta: &PacketMeta, dir: u8) -> ConnCall {
        self.set_current_meta(meta, dir);
        let f = self.st.conn_data.clone();
        self.err_section = "tcp";
        let r = self.conn_call(f, (flow_id, meta.proto, dir, 0.0, 0u32, true, true));
        self.err_section = "lua";
        r
    }

    /// The payload rewrites the last call recorded: (slot, rewrite).
    fn take_rewrites(&mut self) -> Vec<(usize, PayloadRewrite)> {
        self.burst.rewrites = 0;
        let t: Table = match self.st.take_rewrites.call(()) {
            Ok(t) => t,
            Err(_) => return Vec::new(),
        };
        let mut out = Vec::new();
        for e in t.sequence_values::<Table>().flatten() {
            let slot: usize = e.get(1).unwrap_or(usize::MAX);
            let offset: usize = e.get(2).unwrap_or(0);
            let old_len: usize = e.get(3).unwrap_or(0);
            let Ok(bytes) = e.get::<mlua::LuaString>(4) else { continue };
            let bits: u8 = e.get(5).unwrap_or(MOD_ANY);
            // one rewrite per packet (a second view of the same packet resized too: the
            // first wins, the offsets of the other no longer hold)
            if out.iter().any(|(s, _)| *s == slot) {
                self.log_rewrite_refused();
                continue;
            }
            out.push((slot, PayloadRewrite { offset, old_len, bytes: bytes.as_bytes().to_vec(), bits }));
        }
        out
    }

    fn log_rewrite_refused(&mut self) {
        use std::sync::atomic::{AtomicBool, Ordering};
        static LOGGED: AtomicBool = AtomicBool::new(false);
        if !LOGGED.swap(true, Ordering::Relaxed) {
            println!("payload size change not applied (in a stateful event, or a second payload view of the packet resized; logged once)");
        }
    }

    /// end_connection, then forget the flow's Lua object. `meta`: the packet that ended
    /// it, if any (alerts then name its flow).
    pub fn conn_end(&mut self, flow_id: u32, proto: u8, meta: Option<(&PacketMeta, u8)>) -> ConnCall {
        {
            let (flow_uid, port) = self.shared.flow_ctx.get();
            let mut metas = self.shared.metas.borrow_mut();
            metas.clear();
            if let Some((m, d)) = meta {
                metas.push(PacketCtx { meta: *m, dir: d, flow_uid, port });
            }
        }
        let f = self.st.conn_end.clone();
        self.conn_call(f, (flow_id, proto))
    }

    /// Whether rules forged packets (`:inject()`, `:send()`) not taken yet: a field read,
    /// no call into Lua.
    #[inline]
    pub fn has_forged(&self) -> bool {
        self.burst.forged != 0
    }

    /// The packets the rules forged since the last call, in the order they were made.
    /// Calls into Lua only when there are some.
    pub fn take_forged(&mut self) -> Vec<ForgedPacket> {
        if self.burst.forged == 0 {
            return Vec::new();
        }
        let items: Vec<mlua::Value> = match self.st.take_forged.call::<Vec<mlua::Value>>(()) {
            Ok(v) => v,
            Err(e) => {
                self.burst.forged = 0;
                let m = one_line(&e);
                self.count_error(&m);
                return Vec::new();
            }
        };
        self.burst.forged = 0;
        let mut out = Vec::with_capacity(items.len() / 3);
        for t in items.chunks_exact(3) {
            let (mlua::Value::String(data), Some(mode), Some(origin)) = (&t[0], t[1].as_i64(), t[2].as_i64()) else {
                continue;
            };
            out.push(ForgedPacket {
                data: data.as_bytes().to_vec(),
                inject: mode == 1,
                origin: usize::try_from(origin).unwrap_or(0),
            });
        }
        out
    }

    /// Whether a rule error drops the packet (`rules.rule_error`).
    pub fn rule_error_drops(&self) -> bool {
        self.opts.rule_error_drop
    }

    /// A new alert of the engine itself (not of a rule): the log lines before it are
    /// flushed first (they come out before it), its id and time are set, it is counted.
    fn engine_alert(&mut self, description: &str) -> Alert {
        self.shared.flush_logs();
        let sh = &self.shared;
        let n = sh.next_alert.get() + 1;
        sh.next_alert.set(n);
        sh.alert_count.set(sh.alert_count.get() + 1);
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        Alert {
            id: ((sh.worker as u64) << 48) | n,
            time_secs: now,
            description: description.to_string(),
            worker: sh.worker,
            ..Alert::default()
        }
    }

    /// An alert with a description only, as Haka's own policies raise some
    /// ("dropping unknown dissector 'ipv4'").
    pub fn raise_bare_alert(&mut self, description: &str) {
        let a = self.engine_alert(description);
        self.shared.raise(a);
        self.shared.release(|_| false);
    }

    /// An alert raised by the engine itself (not by a rule), on the flow of `meta`.
    pub fn raise_alert(&mut self, description: &str, severity: &str, meta: &PacketMeta, dir: u8) {
        self.raise_alert_with(description, severity, meta, dir, false);
    }

    /// [`LuaEngine::raise_alert`] with, for `endpoints`, the packet's source and
    /// destination as Haka's tcp_connection policies describe them (sources: its source
    /// address and `tcp/PORT`, targets: its destination's).
    pub fn raise_alert_with(&mut self, description: &str, severity: &str, meta: &PacketMeta, dir: u8, endpoints: bool) {
        let mut a = self.engine_alert(description);
        a.severity = severity.to_string();
        if !matches!(meta.l3, L3::Other(_)) {
            a.flow = Some((
                addr_string(meta, &meta.src_addr),
                meta.src_port,
                addr_string(meta, &meta.dst_addr),
                meta.dst_port,
                meta.proto,
            ));
            a.direction = Some(if dir == 0 { "up" } else { "down" }.to_string());
            if endpoints {
                let proto = if meta.proto == 6 { "tcp" } else { "udp" };
                a.sources = vec![
                    format!("address: {}", addr_string(meta, &meta.src_addr)),
                    format!("service: {proto}/{}", meta.src_port),
                ];
                a.targets = vec![
                    format!("address: {}", addr_string(meta, &meta.dst_addr)),
                    format!("service: {proto}/{}", meta.dst_port),
                ];
            }
            let (flow_uid, port) = self.shared.flow_ctx.get();
            self.shared.packet_siem(&PacketCtx { meta: *meta, dir, flow_uid, port }, &mut a.siem);
        }
        // (held: its action is the packet's fate, see StatefulStage::packet)
        self.shared.raise(a);
    }

    /// Fires the application events `events[i]` for each `i` of `idx` (HTTP request/response/
    /// data, DNS query/response, TLS ClientHello) of one packet's data, in order.
    /// `body_offs[k]`: for a body event `idx[k]`, the offset of its bytes in the current
    /// packet's payload (-1: not in it), so that rules can edit them.
    /// The packet in `data` becomes the current one (alerts name its flow; a flow object
    /// not made yet is made from it, with `state`).
    #[allow(clippy::too_many_arguments)]
    pub fn app_events(
        &mut self,
        data: &mut [u8],
        meta: &PacketMeta,
        flow_id: u32,
        dir: u8,
        state: u8,
        events: &[crate::dissectors::AppEvent],
        idx: &[usize],
        body_offs: &[i64],
    ) -> ConnCall {
        use crate::dissectors::AppEvent;
        use mlua::Value;
        self.set_current(data, meta, dir, flow_id);
        // One record per event in `self.app_evs` (read by Lua through its address: no
        // varargs, so RT.app_events is JIT-compiled, and no Lua string created from Rust:
        // each is a protected call that allocates); DNS and TLS events add their raw
        // table to `tabs`.
        let lua = self.st.lua.clone();
        let haka_records = self.shared.dns_haka_records;
        let recs = &mut self.app_evs;
        recs.clear();
        let mut build = || -> mlua::Result<Value> {
            let mut tabs: Vec<Table> = Vec::new();
            for (k, &i) in idx.iter().enumerate() {
                let mut r = AppEv::default();
                let mut table = |t: Table, r: &mut AppEv| {
                    tabs.push(t);
                    r.a1 = tabs.len() as i32;
                };
                // heads: kind 1 request, 2 response (their rules run), 7 / 8 prior request /
                // response head (none)
                let (head, rules, kind) = match &events[i] {
                    AppEvent::Head { head, rules, .. } => (Some(head), *rules as i32, if head.is_request { 1 } else { 2 }),
                    AppEvent::PriorHead(head) => (Some(head), 0, if head.is_request { 7 } else { 8 }),
                    _ => (None, 0, 0),
                };
                if let Some(head) = head {
                    let h = &head.info;
                    r.kind = kind;
                    r.rules = rules;
                    r.p = head.bytes.as_ptr() as usize as f64;
                    r.len = head.bytes.len() as i32;
                    r.fields = h.fields_start as i32;
                    [r.a1, r.a2, r.b1, r.b2, r.c1, r.c2] = [
                        h.parts[0].0 as i32,
                        h.parts[0].1 as i32,
                        h.parts[1].0 as i32,
                        h.parts[1].1 as i32,
                        h.parts[2].0 as i32,
                        h.parts[2].1 as i32,
                    ];
                    r.flags = h.canonical as i32 | (h.obs_fold as i32) << 1 | (h.anomalies as i32) << 8;
                } else {
                    match &events[i] {
                        AppEvent::Body { data, .. } => {
                            r.kind = 3;
                            r.p = data.as_ptr() as usize as f64;
                            r.len = data.len().min(i32::MAX as usize) as i32;
                            r.off = body_offs.get(k).copied().unwrap_or(-1) as f64;
                        }
                        AppEvent::MessageEnd { dir, .. } => {
                            r.kind = 9;
                            r.flags = *dir as i32;
                        }
                        AppEvent::Message(m) => {
                            let l = m.to_lua(&lua, &crate::dissectors::LuaContext { dns_haka_records: haka_records })?;
                            r.kind = l.kind;
                            r.flags = l.flags;
                            table(l.table, &mut r);
                        }
                        _ => {}
                    }
                }
                recs.push(r);
            }
            Ok(if tabs.is_empty() { Value::Nil } else { Value::Table(lua.create_sequence_from(tabs)?) })
        };
        let tabs = match build() {
            Ok(t) => t,
            Err(e) => {
                let m = one_line(&e);
                self.event_failed(&m);
                return ConnCall::Error;
            }
        };
        let f = self.st.app_events.clone();
        // Returns its bits, then the first rewritten head (its event's position, 1-based,
        // its bytes or nil, whether its body is to be modified, and when the bytes are nil
        // a, b, v: replace bytes [a, b) of the head as received by v) and, if there are
        // more, a table of the others' (position, bytes, body modified). Fixed results:
        // read from the Lua stack, nothing allocated but the head bytes.
        self.heads.clear();
        let addr = self.app_evs.as_ptr() as usize as f64;
        type Ret = (
            u32,
            Option<i64>,
            Option<mlua::BString>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<mlua::BString>,
            Option<Table>,
        );
        let args = (flow_id, dir, idx.len(), addr, tabs, meta.proto, state);
        // Haka ran the application dissectors inside the connection's: their rule errors
        // are logged under its section ("error udp: read only buffer")
        self.err_section = if meta.proto == 17 { "udp" } else { "tcp" };
        let r = watched(&self.watch, &self.check, || f.call::<Ret>(args));
        // (DNS header fields written into the datagram, RT.dns_write)
        let m = self.burst.s[0].modified;
        if m & MOD_ANY != 0 {
            fix_checksums(data, meta, m);
        }
        match r {
            Ok((bits, i, head, dm, a, b, v, rest)) => {
                if let Some(i) = i.filter(|&i| i > 0) {
                    let k = i as usize - 1;
                    let bytes = match (head, a, b, v) {
                        (Some(h), ..) => Some(h.into()),
                        (None, Some(a), Some(b), Some(v)) => idx.get(k).and_then(|&e| match &events[e] {
                            AppEvent::Head { head, .. } => splice(&head.bytes, a, b, &v[..]),
                            _ => None,
                        }),
                        _ => None,
                    };
                    let dm = dm.unwrap_or(0).clamp(0, 2) as u8;
                    if bytes.is_some() || dm != 0 {
                        self.heads.push((k, bytes, dm));
                    }
                }
                if let Some(rest) = rest {
                    let v: Vec<Value> = rest.sequence_values().flatten().collect();
                    for h in v.chunks(3) {
                        // (bytes: false when only the body is to be modified)
                        if let [Value::Integer(i), b, dm] = h {
                            let bytes = match b {
                                Value::String(b) => Some(b.as_bytes().to_vec()),
                                _ => None,
                            };
                            let dm = match dm {
                                Value::Integer(d) => (*d).clamp(0, 2) as u8,
                                _ => 0,
                            };
                            if *i > 0 && (bytes.is_some() || dm != 0) {
                                self.heads.push((*i as usize - 1, bytes, dm));
                            }
                        }
                    }
                }
                self.err_section = "lua";
                ConnCall::Done(bits)
            }
            Err(e) => {
                let m = one_line(&e);
                self.event_failed(&m);
                self.err_section = "lua";
                ConnCall::Error
            }
        }
    }

    /// A connection/data/application event call failed: counted and logged; when the heap
    /// is full, it is collected or the state recreated at once (`check_memory`), so that
    /// the next events of the burst do not fail on it too.
    fn event_failed(&mut self, m: &str) {
        if let Ok(n) = self.st.blame.call::<u32>(m) {
            self.note_disabled(n);
        }
        self.count_error(m);
        if self.counters.memory_exceeded != self.mem_checked {
            self.check_memory(true);
        }
    }

    /// Heads (request or status line + fields) rewritten by the rules of the last
    /// `app_events` call: (position of the event in `idx`, the new head bytes or None when
    /// the head is left as it is, whether the message's body is to be modified: 0 no, 1
    /// re-framed as chunks, 2 modified in its own framing: read until the end of the stream).
    /// Drained: the list's memory is kept for the next call.
    pub fn drain_heads(&mut self) -> std::vec::Drain<'_, (usize, Option<Vec<u8>>, u8)> {
        self.heads.drain(..)
    }

    /// The stream edits recorded by the last call (after it returned [`act::EDITS`]).
    /// Offsets are those of the views the rules edited (relative to the data handed to
    /// them, or to the packet's payload for HTTP bodies).
    /// The stream edits the rules made, in the data's offsets. Bytes the rules wrote in
    /// place (in the packet) come with the bytes they had, into `originals` as (offset,
    /// bytes): the caller puts them back before applying the edits, so that the checksum
    /// update sees what changed.
    pub fn take_edits(&mut self, originals: &mut Vec<(usize, Vec<u8>)>) -> Vec<crate::tcp_edit::Edit> {
        use crate::tcp_edit::Edit;
        let t: Table = match self.st.take_edits.call(()) {
            Ok(t) => t,
            Err(_) => return Vec::new(),
        };
        let mut out = Vec::new();
        for e in t.sequence_values::<Table>().flatten() {
            let op: u8 = e.get(1).unwrap_or(0);
            let off: usize = e.get(2).unwrap_or(0);
            let len: usize = e.get(3).unwrap_or(0);
            let bytes: Option<mlua::LuaString> = e.get(4).ok();
            let bytes = bytes.map(|b| b.as_bytes().to_vec()).unwrap_or_default();
            if let Ok(Some(orig)) = e.get::<Option<mlua::LuaString>>(5) {
                originals.push((off, orig.as_bytes().to_vec()));
            }
            // op codes of haka.lua's edit(): 1 insert, 2 erase, 3 replace
            out.push(match op {
                1 => Edit::Insert { at: off, bytes },
                2 => Edit::Erase { at: off, len },
                _ => Edit::Replace { at: off, len, bytes },
            });
        }
        out
    }
}

impl Drop for LuaEngine {
    fn drop(&mut self) {
        self.shared.release(|_| false);
        self.shared.flush_logs();
        *self.watch.state.lock().unwrap_or_else(|p| p.into_inner()) = 0;
    }
}

/// Fills a slot, keeping only offsets that are in bounds of the data (so the Lua views
/// never read outside the buffer, whatever the metadata says). Field by field, in place:
/// a slot built and then copied measured ~25 instructions more per packet.
#[inline(always)]
fn fill_slot(s: &mut Slot, p: &mut LuaPacket<'_>, pkt_id: u32) {
    let m = p.meta;
    let len = p.data.len().min(u32::MAX as usize);
    let l3o = m.l3_offset as usize;
    let mut l3 = match m.l3 {
        L3::Ipv4 => 4u8,
        L3::Ipv6 => 6,
        L3::Other(_) => 0,
    };
    if l3 == 4 && (l3o + 20 > len || l3o + ((p.data[l3o] & 0x0f) as usize) * 4 > len) {
        l3 = 0;
    }
    if l3 == 6 && l3o + 40 > len {
        l3 = 0;
    }
    let l4o = m.l4_offset as usize;
    let need = match m.proto {
        6 => 20,
        17 => 8,
        1 | 58 => 4,
        _ => usize::MAX,
    };
    let has_l4 = l3 != 0 && m.has_l4 && need != usize::MAX && l4o >= l3o && l4o.saturating_add(need) <= len;
    let payload_in = (m.payload_offset as usize) <= len;
    s.data = p.data.as_mut_ptr() as u64;
    s.len = len as u32;
    s.flow_id = p.flow_id;
    s.vlan = m.vlan;
    s.l3_off = if l3o <= len { m.l3_offset } else { 0 };
    s.l4_off = m.l4_offset;
    s.payload_off = if payload_in { m.payload_offset } else { len as u16 };
    s.payload_len = if payload_in { m.payload_len } else { 0 };
    s.ip_len = m.ip_len;
    s.l3 = l3;
    s.proto = m.proto;
    s.has_l4 = has_l4 as u8;
    s.dir = p.dir;
    s.fragment = p.pass as u8;
    s.verdict = 0;
    s.modified = 0;
    s.flags = if p.dont_reassemble { SLOT_NOREASM } else { 0 };
    s.ts_sec = p.ts.0 as u32;
    s.ts_nsec = p.ts.1;
    s.pkt_id = pkt_id;
}

/// Recomputes the IPv4 header checksum and the TCP/UDP/ICMP/ICMPv6 checksum of a
/// modified packet (also when a rule wrote a checksum field: Haka's semantics).
fn fix_checksums(data: &mut [u8], meta: &PacketMeta, bits: u8) {
    let l3 = meta.l3_offset as usize;
    let (seg_end, v4) = match meta.l3 {
        L3::Ipv4 => {
            let Some(&b0) = data.get(l3) else { return };
            let ihl = ((b0 & 0x0f) as usize) * 4;
            if ihl < 20 || l3 + ihl > data.len() {
                return;
            }
            data[l3 + 10] = 0;
            data[l3 + 11] = 0;
            let c = checksum::compute(&data[l3..l3 + ihl]);
            data[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
            let tot = u16::from_be_bytes([data[l3 + 2], data[l3 + 3]]) as usize;
            ((l3 + tot).min(data.len()), true)
        }
        L3::Ipv6 => {
            if l3 + 40 > data.len() {
                return;
            }
            let pl = u16::from_be_bytes([data[l3 + 4], data[l3 + 5]]) as usize;
            ((l3 + 40 + pl).min(data.len()), false)
        }
        L3::Other(_) => return,
    };
    if !meta.has_l4 || bits & MOD_KEEP_L4_CSUM != 0 {
        return;
    }
    let l4 = meta.l4_offset as usize;
    if l4 >= seg_end {
        return;
    }
    let (mut s4, mut d4, mut s6, mut d6) = ([0u8; 4], [0u8; 4], [0u8; 16], [0u8; 16]);
    if v4 {
        s4.copy_from_slice(&data[l3 + 12..l3 + 16]);
        d4.copy_from_slice(&data[l3 + 16..l3 + 20]);
    } else {
        s6.copy_from_slice(&data[l3 + 8..l3 + 24]);
        d6.copy_from_slice(&data[l3 + 24..l3 + 40]);
    }
    let (off, min) = match meta.proto {
        6 => (16, 20),
        17 => (6, 8),
        1 if v4 => (2, 4),
        58 if !v4 => (2, 4),
        _ => return,
    };
    let mut end = seg_end;
    if seg_end - l4 < min {
        return;
    }
    if meta.proto == 17 {
        let ulen = u16::from_be_bytes([data[l4 + 4], data[l4 + 5]]) as usize;
        if ulen >= 8 && l4 + ulen <= seg_end {
            end = l4 + ulen;
        }
        if v4 && data[l4 + 6] == 0 && data[l4 + 7] == 0 {
            return; // no checksum in use
        }
    }
    data[l4 + off] = 0;
    data[l4 + off + 1] = 0;
    let seg = &data[l4..end];
    let mut c = match (meta.proto, v4) {
        (1, _) => checksum::compute(seg),
        (p, true) => checksum::l4_v4(&s4, &d4, p, seg),
        (p, false) => checksum::l4_v6(&s6, &d6, p, seg),
    };
    if meta.proto == 17 && c == 0 {
        c = 0xffff;
    }
    data[l4 + off..l4 + off + 2].copy_from_slice(&c.to_be_bytes());
}

/// Rebuilds the frame `frame` (dissected as `meta`) with the payload rewrite `rw` into
/// `out`: bytes before and after the payload kept, the IPv4 total length / IPv6 payload
/// length and the UDP length grown or shrunk when the payload is inside them, checksums
/// recomputed. False (out unspecified) when the rewrite does not fit the frame or the new
/// lengths do not fit their fields.
pub fn rebuild_payload(frame: &[u8], meta: &PacketMeta, rw: &PayloadRewrite, out: &mut Vec<u8>) -> bool {
    let end = match rw.offset.checked_add(rw.old_len) {
        Some(e) if e <= frame.len() => e,
        _ => return false,
    };
    out.clear();
    out.extend_from_slice(&frame[..rw.offset]);
    out.extend_from_slice(&rw.bytes);
    out.extend_from_slice(&frame[end..]);
    let delta = rw.bytes.len() as i64 - rw.old_len as i64;
    let l3 = meta.l3_offset as usize;
    let grow = |v: usize| -> Option<u16> { u16::try_from(v as i64 + delta).ok() };
    let mut fix = false;
    match meta.l3 {
        L3::Ipv4 => {
            let Some(&b0) = frame.get(l3) else { return true };
            let ihl = ((b0 & 0x0f) as usize) * 4;
            if rw.offset >= l3 + ihl && l3 + 20 <= frame.len() {
                let tot = u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]) as usize;
                let Some(t) = grow(tot) else { return false };
                out[l3 + 2..l3 + 4].copy_from_slice(&t.to_be_bytes());
                fix = true;
            }
        }
        L3::Ipv6 => {
            if rw.offset >= l3 + 40 && l3 + 40 <= frame.len() {
                let pl = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]) as usize;
                let Some(t) = grow(pl) else { return false };
                out[l3 + 4..l3 + 6].copy_from_slice(&t.to_be_bytes());
                fix = true;
            }
        }
        L3::Other(_) => {}
    }
    let l4 = meta.l4_offset as usize;
    if fix && meta.has_l4 && meta.proto == 17 && rw.offset >= l4 + 8 && l4 + 8 <= frame.len() {
        let ul = u16::from_be_bytes([frame[l4 + 4], frame[l4 + 5]]) as usize;
        let Some(u) = grow(ul) else { return false };
        out[l4 + 4..l4 + 6].copy_from_slice(&u.to_be_bytes());
    }
    if fix {
        fix_checksums(out, meta, rw.bits | MOD_ANY);
    }
    true
}

impl std::fmt::Debug for LuaEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LuaEngine").field("path", &self.path).field("worker", &self.worker).finish()
    }
}
