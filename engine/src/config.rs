//! Configuration: `conf/haka.toml` (TOML, serde). Every key has a default, so
//! running without a file works; unknown keys and bad values are rejected
//! with one line naming the file, line and key.
use serde::Deserialize;
use std::path::Path;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub eal: EalConfig,
    pub datapath: DatapathConfig,
    pub ports: PortsConfig,
    pub mempool: MempoolConfig,
    pub flows: FlowsConfig,
    pub rules: RulesConfig,
    pub alerts: crate::alert::AlertsConfig,
    pub tcp: TcpConfig,
    pub http: HttpConfig,
    pub tls: TlsConfig,
    pub dns: DnsConfig,
    pub defrag: DefragSection,
    pub memory: MemoryConfigSection,
    pub control: ControlConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
}

/// `[memory]`: the flow memory budget, every byte a worker holds for its connections
/// (stream reassembly and history, application parser state) under one cap per flow
/// and one per worker (see `conn::memory`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfigSection {
    /// Bytes one connection may hold, KiB.
    pub flow_kb: u64,
    /// Bytes all the connections of a worker may hold, MiB.
    pub worker_mb: u64,
    /// A connection whose growth goes over a cap: "drop" it (alert, state freed,
    /// later packets dropped) or "accept" (alert, state freed, its data passes
    /// uninspected).
    pub over_cap: Verdict,
    /// The flows' Lua objects (what rules keep on a flow) are measured and charged to
    /// their flow while the worker's Lua heap is over this many MiB (0: always): a scan
    /// of a few hundred flows every 100 ms, between bursts.
    pub lua_scan_mb: u64,
}

impl Default for MemoryConfigSection {
    fn default() -> Self {
        MemoryConfigSection { flow_kb: 1024, worker_mb: 512, over_cap: Verdict::Drop, lua_scan_mb: 16 }
    }
}

/// `[control]`: the control socket `hakactl` talks to.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Unix socket path (mode 0600); "" runs without it.
    pub socket: String,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig { socket: crate::ops::control::DEFAULT_SOCKET.into() }
    }
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `ADDRESS:PORT` serving `GET /metrics` (e.g. "127.0.0.1:9477"); none: off.
    pub listen: Option<String>,
}

/// `[log]`: log levels.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `LEVEL[,SECTION=LEVEL...]` (fatal, error, warning, info, debug, trace); `haka
    /// --loglevel` overrides it, `hakactl loglevel` changes it while haka runs.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into() }
    }
}

/// `[tcp]`: connection tracking and stream reassembly (the stateful layer runs for
/// workers whose rules use tcp_connection, udp_connection or an application dissector,
/// or when `no_connection_found = "drop"`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// TCP packet of a connection whose SYN was not seen: "pickup" (track it from
    /// there) or "drop" (Haka: alert and drop).
    pub no_connection_found: crate::dissectors::tcp_connection::NoConnection,
    /// SYN or SYN-ACK on an established connection (retransmitted handshake): "accept"
    /// (counted) or "drop" (Haka: alert and drop).
    pub unexpected_packet: Verdict,
    /// Inspected bytes kept per direction to compare retransmissions with, KiB (0: off).
    pub retransmission_check_kb: u64,
    /// Out-of-order bytes buffered per direction of a connection, KiB.
    pub stream_buffer_per_flow_kb: u64,
    /// Out-of-order bytes buffered by all the connections of a worker, MiB.
    pub stream_buffer_per_worker_mb: u64,
    /// Verdict for a segment whose out-of-order data does not fit the buffers.
    pub over_cap: Verdict,
    /// Flags of the RSTs `reset()` forges: "rst_ack" (RST+ACK with the acknowledgement
    /// number) or "rst" (Haka: RST alone, acknowledgement 0, no DF).
    pub reset_flags: ResetFlags,
    /// Checksum of a TCP segment rewritten by a stream edit or a sequence shift:
    /// "update" (RFC 1624, incrementally: a segment that arrived with a bad checksum keeps a
    /// bad one) or "recompute" (Haka: computed again over the segment).
    pub edit_checksum: EditChecksum,
    /// A dropped (or reset) connection's state lasts until it closes or this many
    /// seconds pass (Haka: 60); then a new SYN on its addresses and ports is a new
    /// connection. UDP: the next datagram after the timeout.
    pub drop_timeout: u64,
    /// Largest IP packet a stream edit may make: a segment the edits grew past it is split
    /// (what does not fit leaves in new segments right after it, as Haka did); 0: never.
    pub mtu: u32,
}

/// `[tcp] reset_flags`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ResetFlags {
    /// RST+ACK, the acknowledgement number set (as a stack answers a segment with an ACK).
    #[default]
    RstAck,
    /// RST alone, acknowledgement 0, IPv4 DF clear: Haka's forged reset.
    Rst,
}

/// `[tcp] edit_checksum`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EditChecksum {
    /// Updated incrementally for the bytes that changed.
    #[default]
    Update,
    /// Computed again over the whole segment (Haka).
    Recompute,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            no_connection_found: crate::dissectors::tcp_connection::NoConnection::Pickup,
            unexpected_packet: Verdict::Accept,
            retransmission_check_kb: 16,
            stream_buffer_per_flow_kb: 256,
            stream_buffer_per_worker_mb: 64,
            over_cap: Verdict::Drop,
            reset_flags: ResetFlags::RstAck,
            edit_checksum: EditChecksum::Update,
            drop_timeout: 60,
            mtu: 1500,
        }
    }
}

/// The `section.key` set on line `line` (1-based) of a TOML text, and the key, for error
/// messages.
fn key_at(text: &str, line: usize) -> Option<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let l = lines.get(line.checked_sub(1)?)?.trim();
    let key = l.split_once('=')?.0.trim();
    if key.is_empty() || key.starts_with('[') || key.contains('"') {
        return None;
    }
    let section = lines[..line - 1].iter().rev().map(|l| l.trim()).find(|l| l.starts_with('['));
    let path = match section {
        Some(s) => format!("{}.{key}", s.trim_matches(|c| c == '[' || c == ']').trim()),
        None => key.to_string(),
    };
    Some((path, key.to_string()))
}

/// The line of `text` that sets the key a validation message starts with
/// (`section.key = value: ...`), if any.
fn line_of_key(text: &str, msg: &str) -> Option<usize> {
    let path = msg.split([' ', ':']).next()?;
    let (sec, key) = path.split_once('.')?;
    let mut in_sec = false;
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.starts_with('[') {
            in_sec = l.trim_matches(|c| c == '[' || c == ']').trim() == sec;
        } else if in_sec && l.split_once('=').is_some_and(|(k, _)| k.trim() == key) {
            return Some(i + 1);
        }
    }
    None
}

/// `[http]`: the HTTP dissector.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Malformed HTTP: "drop" (Haka: alert and drop the connection) or "accept"
    /// (alert, stop parsing the connection, let it through).
    pub protocol_error: Verdict,
    /// A tolerated irregularity (`crate::dissectors::http::Anomaly`; the message is parsed and
    /// inspected all the same): "alert", "ignore" (counted only) or "drop" (alert and
    /// drop the connection).
    pub anomaly: AnomalyAction,
    /// An HTTP/0.9 request line (`GET /x`, no version): "accept" (parsed, flagged as the
    /// anomaly `http09_request`) or "error" (a protocol error, as Haka).
    pub http09: Http09,
    /// A request or response head cut by the end of its stream (FIN): "ignore" (the
    /// connection closed mid-message) or "error" (a protocol error, "invalid http
    /// header", as Haka).
    pub truncated_head: TruncatedHead,
    /// A NUL byte in a header field value: "error" (a protocol error, "invalid http
    /// header": C servers end the value there, so they would not read what the rules
    /// read) or "accept" (part of the value, as Haka).
    pub binary_header: BinaryHeader,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            protocol_error: Verdict::Drop,
            anomaly: AnomalyAction::Alert,
            http09: Http09::Accept,
            truncated_head: TruncatedHead::Ignore,
            binary_header: BinaryHeader::Error,
        }
    }
}

/// `[http] truncated_head`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TruncatedHead {
    #[default]
    Ignore,
    Error,
}

/// `[http] binary_header`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BinaryHeader {
    #[default]
    Error,
    Accept,
}

/// `[http] http09`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Http09 {
    #[default]
    Accept,
    Error,
}

/// `[tls]`: the TLS dissector (ClientHello).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The largest ClientHello read, bytes (default: the largest the protocol allows,
    /// 131396, over as many records as it takes). A longer hello is a protocol error.
    pub max_hello_bytes: usize,
    /// A malformed or too long ClientHello: alert, then "drop" the connection or
    /// "accept" it (uninspected from there).
    pub protocol_error: Verdict,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig { max_hello_bytes: crate::dissectors::tls::MAX_HANDSHAKE_LEN, protocol_error: Verdict::Drop }
    }
}

/// `[dns]`: the DNS dissector.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// A message with more questions is a protocol error (servers answer FORMERR to
    /// more than one; each question costs parsing and a Lua object).
    pub max_questions: u16,
    /// Queries remembered per connection to match their responses (the oldest is
    /// forgotten first; its response is then a "mismatching response").
    pub pending_queries: u32,
    /// A malformed message: alert, then "drop" it (the datagram; over TCP, the
    /// connection) or "accept" it.
    pub protocol_error: Verdict,
    /// Which record types are decoded (see [`DnsRecords`]).
    pub records: DnsRecords,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig { max_questions: 16, pending_queries: 64, protocol_error: Verdict::Drop, records: DnsRecords::Extended }
    }
}

/// `[dns] records`: "extended" decodes AAAA and HINFO too; "haka" decodes only the types
/// Haka 0.4 decoded, the others' data being `unknown`, a vbuffer_sub as Haka's bytes
/// fields (also NULL's `data` and WKS's `ports`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DnsRecords {
    #[default]
    Extended,
    Haka,
}

/// `[http] anomaly`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AnomalyAction {
    #[default]
    Alert,
    Ignore,
    Drop,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EalConfig {
    /// EAL arguments used before those given on the command line.
    pub args: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Bump in the wire: accepted packets leave on the paired port.
    #[default]
    Inline,
    /// Tap/SPAN: inspect and count, never transmit.
    Passive,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    #[default]
    Drop,
    Accept,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MainLcoreWorker {
    /// The main lcore runs a worker only when EAL got at most 2 lcores.
    #[default]
    Auto,
    Yes,
    No,
}

/// `[datapath] dispatch`: how the flows are shared out between the workers.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DispatchMode {
    /// Symmetric RSS on NICs that support it, else the software dispatcher.
    #[default]
    Auto,
    /// The input already delivers every flow, both directions, on one queue index (per-queue
    /// capture files split by flow, AF_PACKET fanout by hash, a NIC's symmetric RSS that haka
    /// does not program): each worker owns the flows of the queues it polls, no rings.
    Queue,
}

/// `[datapath] dispatch_full`: what a worker does with packets of another worker's
/// flows when that worker's dispatch ring is full.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DispatchFull {
    /// `wait` when the input can wait (hakapcap, net_pcap ports reading capture files),
    /// else `drop`.
    #[default]
    Auto,
    /// Keep them and stop reading the input until they are handed over (nothing lost).
    Wait,
    /// Drop them (counted `dispatch_ring_full`) and keep reading.
    Drop,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatapathConfig {
    pub mode: Mode,
    /// Verdict for malformed or truncated packets.
    pub malformed: Verdict,
    /// Verify IPv4 header checksums.
    pub ipv4_checksum: bool,
    pub main_lcore_worker: MainLcoreWorker,
    /// Seconds between stats lines on stdout (0: none).
    pub stats_interval: u64,
    /// Size of each worker's dispatch ring (power of two).
    pub dispatch_ring_size: u32,
    pub dispatch: DispatchMode,
    pub dispatch_full: DispatchFull,
    /// hakapcap with `-o` under `mode = "passive"`: packets are written out (inline) but
    /// the rules see them and their streams read only, as Haka's `--pass-through`. Not a
    /// config key.
    #[serde(skip)]
    pub pass_through: bool,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        DatapathConfig {
            mode: Mode::Inline,
            malformed: Verdict::Drop,
            ipv4_checksum: true,
            main_lcore_worker: MainLcoreWorker::Auto,
            stats_interval: 10,
            dispatch_ring_size: 4096,
            dispatch: DispatchMode::Auto,
            dispatch_full: DispatchFull::Auto,
            pass_through: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PortsConfig {
    /// Port pairs forwarding to each other; empty: 0<->1, 2<->3, ...
    /// `[n, n]` sends a port's packets back out of itself.
    pub pairs: Vec<[u16; 2]>,
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
    pub promiscuous: bool,
    /// Symmetric RSS across workers when the device supports it.
    pub rss: bool,
    /// Let `dpdk-dumpcap` capture the ports (DPDK's pdump; needs EAL's shared config).
    pub pdump: bool,
}

impl Default for PortsConfig {
    fn default() -> Self {
        PortsConfig { pairs: Vec::new(), rx_descriptors: 1024, tx_descriptors: 1024, promiscuous: true, rss: true, pdump: true }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MempoolConfig {
    /// Mbufs in the packet pool; 0 sizes it from ports, queues and workers.
    pub mbufs: u32,
    pub cache_size: u32,
    /// Bytes per mbuf including 128 bytes of headroom.
    pub data_room: u16,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig { mbufs: 0, cache_size: 256, data_room: 2176 }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FlowsConfig {
    /// Maximum flows tracked per worker; beyond it the oldest idle flow is evicted.
    pub capacity: u32,
    /// Idle timeouts, seconds.
    pub tcp_syn_timeout: u64,
    pub tcp_established_timeout: u64,
    pub tcp_closing_timeout: u64,
    pub udp_timeout: u64,
    pub other_timeout: u64,
}

impl Default for FlowsConfig {
    fn default() -> Self {
        FlowsConfig {
            capacity: 262_144,
            tcp_syn_timeout: 30,
            tcp_established_timeout: 3600,
            tcp_closing_timeout: 60,
            udp_timeout: 120,
            other_timeout: 30,
        }
    }
}

/// `[defrag]`: IP fragment reassembly (per worker, see `crate::fragstage`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DefragSection {
    /// Reassemble fragments before rules see them (false: fragments are inspected one by
    /// one, tracked by addresses only).
    pub enabled: bool,
    /// Datagrams being reassembled at most, per worker (the oldest is evicted beyond).
    pub max_datagrams: u32,
    /// Bytes buffered for reassembly at most, per worker.
    pub max_bytes: u64,
    /// Original fragments (mbufs) held at most, per worker, until their datagram is
    /// complete; the oldest datagram is evicted beyond. Added to the packet pool's size.
    pub max_fragments: u32,
    /// Seconds after its first fragment an incomplete datagram is released (dropped).
    pub timeout: f64,
    /// Large (64 KiB) mbufs for reassembled datagrams, shared by all workers.
    pub reassembly_mbufs: u32,
    /// Overlapping fragments: alert and drop the datagram, or Haka's trimming.
    pub overlap: FragOverlap,
    /// How a datagram a rule modified leaves.
    pub refragment: Refragment,
}

/// `[defrag] overlap`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FragOverlap {
    /// Any overlap (but an identical duplicate) drops the datagram with an alert: the
    /// bytes the rules see cannot differ from those the receiver keeps (evasion defence).
    #[default]
    Drop,
    /// Haka 0.4: data of the fragment with the lowest offset wins (at equal offsets, the
    /// latest), covered parts are cut from the later ones and fully covered fragments are
    /// dropped silently; a fragment at or after the last fragment's offset is alerted
    /// ("invalid ipv4 fragment") and dropped alone.
    Haka,
}

/// `[defrag] refragment`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Refragment {
    /// Re-fragmented to the largest original fragment's size (which fits the path).
    #[default]
    Mtu,
    /// Haka 0.4: each original fragment keeps its share of the datagram, growing or
    /// shrinking with the rules' edits in it (it may then exceed the MTU); falls back to
    /// `mtu` when an edit leaves a fragment boundary off a multiple of 8 bytes.
    Haka,
}

impl Default for DefragSection {
    fn default() -> Self {
        DefragSection {
            enabled: true,
            max_datagrams: 1024,
            max_bytes: 16 << 20,
            max_fragments: 1024,
            timeout: 30.0,
            reassembly_mbufs: 256,
            overlap: FragOverlap::Drop,
            refragment: Refragment::Mtu,
        }
    }
}

impl DefragSection {
    /// The reassembly table's bounds.
    pub fn defrag_config(&self) -> crate::defrag::DefragConfig {
        crate::defrag::DefragConfig {
            max_datagrams: self.max_datagrams as usize,
            max_bytes: self.max_bytes as usize,
            timeout_ms: ((self.timeout * 1000.0).ceil() as u64).max(1),
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.max_datagrams == 0 || self.max_datagrams > 1 << 20 {
            return Err(format!("defrag.max_datagrams = {}: must be between 1 and 1048576", self.max_datagrams));
        }
        if self.max_bytes < 65536 || self.max_bytes > 1 << 32 {
            return Err(format!("defrag.max_bytes = {}: must be between 65536 and 4294967296", self.max_bytes));
        }
        if self.max_fragments < 2 || self.max_fragments > 1 << 20 {
            return Err(format!("defrag.max_fragments = {}: must be between 2 and 1048576", self.max_fragments));
        }
        if !(self.timeout.is_finite() && self.timeout >= 0.001 && self.timeout <= 3600.0) {
            return Err(format!("defrag.timeout = {}: must be between 0.001 and 3600 seconds", self.timeout));
        }
        if self.reassembly_mbufs < 1 || self.reassembly_mbufs > 65536 {
            return Err(format!("defrag.reassembly_mbufs = {}: must be between 1 and 65536", self.reassembly_mbufs));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Lua rules file (`haka -r` overrides it); none: every packet is accepted.
    pub file: Option<std::path::PathBuf>,
    /// Verdict for a packet whose rule raised a Lua error (Haka drops).
    pub rule_error: Verdict,
    /// Lua VM instructions a worker may spend in rules per burst before the
    /// running rule is interrupted (a runaway loop).
    pub instruction_budget: u64,
    /// Lua memory per worker, MiB; beyond it the worker's rules state is rebuilt.
    pub memory_limit_mb: u64,
    /// Which dissectors run: "all" (every built-in one, whatever the rules file loads)
    /// or "required" (Haka: only those the rules file `require`s, directly or through
    /// another module).
    pub dissectors: DissectorChain,
    /// Rule errors are logged at most once per this many seconds (the others are
    /// counted); 0: every error, as Haka.
    pub error_log_interval: u64,
    /// Data held per connection for streamed rules (`options.streamed`), KiB.
    pub streamed_hold_kb: u64,
    /// A connection over `streamed_hold_kb`: "drop" it, or "accept" (its streamed rules
    /// end with what they read; later data goes to the plain rules only).
    pub streamed_over_cap: Verdict,
    /// A rule that fails this many times within `disable_window` seconds is disabled
    /// (logged, counted `rules_disabled`); 0: never (Haka).
    pub disable_after_errors: u32,
    /// A rule that overruns `instruction_budget` this many times within the window is
    /// disabled; 0: never.
    pub disable_after_timeouts: u32,
    pub disable_window: u32,
    /// Default alert rate of every rule, `[count, seconds]`: beyond `count` alerts in a
    /// window of `seconds` (packet time), a rule's alerts are suppressed (counted
    /// `alerts_suppressed`); count 0: no limit. A rule's `alert_rate` overrides it.
    pub alert_rate: [u32; 2],
    /// A protocol error of a dissector written in Lua (a grammar parse error nobody
    /// handles): "drop" the packet or the connection, or "accept" (the dissector stops,
    /// the traffic goes on). Counted (`lua_protocol_errors`) either way.
    pub lua_protocol_error: Verdict,
    /// A TCP dissector written in Lua parses each segment's complete messages right on the
    /// segment's bytes (no stream, coroutine or mark; faster); false: every message goes
    /// through the direction's stream as in Haka, whose grammar callbacks then run in
    /// Haka's order when a message spans several segments (see README, "Differences from
    /// Haka").
    pub lua_in_place_parsing: bool,
}

/// `[rules] dissectors`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DissectorChain {
    /// Every built-in dissector runs; connections are tracked when a rule or a
    /// `[tcp]` setting needs it.
    #[default]
    All,
    /// As in Haka: IPv4 packets when protocol/ipv4 is not loaded are alerted
    /// ("dropping unknown dissector 'ipv4'") and dropped; TCP / UDP connections are
    /// tracked only when protocol/tcp_connection / udp_connection is loaded.
    Required,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            file: None,
            rule_error: Verdict::Drop,
            instruction_budget: 100_000_000,
            memory_limit_mb: 256,
            dissectors: DissectorChain::All,
            error_log_interval: 1,
            streamed_hold_kb: 1024,
            streamed_over_cap: Verdict::Drop,
            disable_after_errors: 1000,
            disable_after_timeouts: 3,
            disable_window: 10,
            alert_rate: [1000, 1],
            lua_protocol_error: Verdict::Drop,
            lua_in_place_parsing: true,
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read config: {e}", path.display()))?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, String> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let msg = e.message().replace('\n', " ");
            match line {
                Some(l) => match key_at(text, l) {
                    // (a bad value's message names the value only; an unknown key's names it)
                    Some((path, key)) if !msg.contains(&format!("`{key}`")) => format!("{origin}:{l}: {path}: {msg}"),
                    _ => format!("{origin}:{l}: {msg}"),
                },
                None => format!("{origin}: {msg}"),
            }
        })?;
        cfg.validate().map_err(|m| match line_of_key(text, &m) {
            Some(l) => format!("{origin}:{l}: {m}"),
            None => format!("{origin}: {m}"),
        })?;
        Ok(cfg)
    }

    /// Reads `path` (None: the defaults), then applies `--set section.key=value` overrides
    /// (the value in TOML syntax, or a bare string), each checked as it comes: an error
    /// names the override.
    pub fn load_with(path: Option<&Path>, sets: &[String]) -> Result<Config, String> {
        let (text, origin) = match path {
            Some(p) => (std::fs::read_to_string(p).map_err(|e| format!("{}: cannot read config: {e}", p.display()))?, p.display().to_string()),
            None => (String::new(), "(defaults)".to_string()),
        };
        let mut cfg = Config::parse(&text, &origin)?;
        if sets.is_empty() {
            return Ok(cfg);
        }
        let mut doc: toml::Table = toml::from_str(&text).map_err(|e| format!("{origin}: {}", e.message()))?;
        for s in sets {
            let (k, v) = s.split_once('=').ok_or_else(|| format!("--set {s}: expected section.key=value"))?;
            let (sec, key) = k.trim().split_once('.').ok_or_else(|| format!("--set {s}: expected section.key=value"))?;
            let (sec, key, v) = (sec.trim(), key.trim(), v.trim());
            if sec.is_empty() || key.is_empty() {
                return Err(format!("--set {s}: expected section.key=value"));
            }
            let value = toml::from_str::<toml::Table>(&format!("v = {v}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(v.to_string()));
            let section = doc.entry(sec.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(section) = section.as_table_mut() else {
                return Err(format!("--set {s}: {sec} is not a section"));
            };
            section.insert(key.to_string(), value);
            cfg = toml::Value::Table(doc.clone())
                .try_into::<Config>()
                .map_err(|e| format!("--set {s}: {}", e.message().replace('\n', " ")))?;
            cfg.validate().map_err(|m| format!("--set {s}: {m}"))?;
        }
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        let d = &self.datapath;
        if !d.dispatch_ring_size.is_power_of_two() || d.dispatch_ring_size < 64 {
            return Err(format!(
                "datapath.dispatch_ring_size = {}: must be a power of two >= 64",
                d.dispatch_ring_size
            ));
        }
        let p = &self.ports;
        for (name, v) in [("ports.rx_descriptors", p.rx_descriptors), ("ports.tx_descriptors", p.tx_descriptors)] {
            if v < 32 {
                return Err(format!("{name} = {v}: must be at least 32"));
            }
        }
        let m = &self.mempool;
        if m.data_room < 256 + 128 {
            return Err(format!("mempool.data_room = {}: must be at least 384", m.data_room));
        }
        if m.cache_size > 512 {
            return Err(format!("mempool.cache_size = {}: must be at most 512", m.cache_size));
        }
        self.alerts.validate()?;
        if self.tcp.mtu != 0 && !(576..=65535).contains(&self.tcp.mtu) {
            return Err(format!("tcp.mtu = {}: must be 0 (never split) or between 576 and 65535", self.tcp.mtu));
        }
        if self.tcp.retransmission_check_kb > 1024 {
            return Err(format!(
                "tcp.retransmission_check_kb = {}: must be between 0 and 1024",
                self.tcp.retransmission_check_kb
            ));
        }
        if self.tcp.stream_buffer_per_flow_kb == 0 || self.tcp.stream_buffer_per_flow_kb > 1 << 20 {
            return Err(format!(
                "tcp.stream_buffer_per_flow_kb = {}: must be between 1 and 1048576",
                self.tcp.stream_buffer_per_flow_kb
            ));
        }
        if self.tcp.stream_buffer_per_worker_mb == 0 || self.tcp.stream_buffer_per_worker_mb > 1 << 16 {
            return Err(format!(
                "tcp.stream_buffer_per_worker_mb = {}: must be between 1 and 65536",
                self.tcp.stream_buffer_per_worker_mb
            ));
        }
        if self.dns.max_questions == 0 {
            return Err("dns.max_questions = 0: must be between 1 and 65535".into());
        }
        if self.dns.pending_queries == 0 || self.dns.pending_queries > 65536 {
            return Err(format!("dns.pending_queries = {}: must be between 1 and 65536", self.dns.pending_queries));
        }
        let mem = &self.memory;
        if mem.flow_kb < 16 || mem.flow_kb > 1 << 22 {
            return Err(format!("memory.flow_kb = {}: must be between 16 and 4194304", mem.flow_kb));
        }
        if mem.lua_scan_mb > 1 << 20 {
            return Err(format!("memory.lua_scan_mb = {}: must be between 0 and 1048576", mem.lua_scan_mb));
        }
        if mem.worker_mb == 0 || mem.worker_mb > 1 << 20 {
            return Err(format!("memory.worker_mb = {}: must be between 1 and 1048576", mem.worker_mb));
        }
        if mem.flow_kb > mem.worker_mb << 10 {
            return Err(format!(
                "memory.flow_kb = {}: must not exceed memory.worker_mb ({} MiB)",
                mem.flow_kb, mem.worker_mb
            ));
        }
        let r = &self.rules;
        if r.instruction_budget < 1000 {
            return Err(format!("rules.instruction_budget = {}: must be at least 1000", r.instruction_budget));
        }
        if r.disable_window == 0 {
            return Err("rules.disable_window = 0: must be at least 1 second".into());
        }
        if r.alert_rate[1] == 0 {
            return Err(format!("rules.alert_rate = [{}, 0]: the window must be at least 1 second", r.alert_rate[0]));
        }
        if r.memory_limit_mb < 8 {
            return Err(format!("rules.memory_limit_mb = {}: must be at least 8", r.memory_limit_mb));
        }
        self.defrag.validate()?;
        crate::logging::LogSpec::parse(&self.log.level).map_err(|e| format!("log.level = \"{}\": {e}", self.log.level))?;
        if let Some(l) = &self.metrics.listen {
            l.parse::<std::net::SocketAddr>()
                .map_err(|_| format!("metrics.listen = \"{l}\": not an ADDRESS:PORT (e.g. \"127.0.0.1:9477\")"))?;
        }
        if !self.control.socket.is_empty() && !self.control.socket.starts_with('/') {
            return Err(format!("control.socket = \"{}\": must be an absolute path (or \"\" for none)", self.control.socket));
        }
        let f = &self.flows;
        if f.capacity == 0 {
            return Err("flows.capacity = 0: must be at least 1".into());
        }
        for (name, v) in [
            ("flows.tcp_syn_timeout", f.tcp_syn_timeout),
            ("flows.tcp_established_timeout", f.tcp_established_timeout),
            ("flows.tcp_closing_timeout", f.tcp_closing_timeout),
            ("flows.udp_timeout", f.udp_timeout),
            ("flows.other_timeout", f.other_timeout),
        ] {
            if v == 0 {
                return Err(format!("{name} = 0: must be at least 1 second"));
            }
        }
        Ok(())
    }

    pub fn conn_config(&self) -> crate::conn::ConnConfig {
        crate::conn::ConnConfig {
            no_connection_found: self.tcp.no_connection_found,
            unexpected_drop: self.tcp.unexpected_packet == Verdict::Drop,
            conflict_history: (self.tcp.retransmission_check_kb as usize) << 10,
            max_buffered_per_flow: (self.tcp.stream_buffer_per_flow_kb as usize) << 10,
            max_buffered_per_worker: (self.tcp.stream_buffer_per_worker_mb as usize) << 20,
            over_cap_drop: self.tcp.over_cap == Verdict::Drop,
            required_chain: self.rules.dissectors == DissectorChain::Required,
            read_only_streams: self.datapath.mode == Mode::Passive || self.datapath.pass_through,
            bare_resets: self.tcp.reset_flags == ResetFlags::Rst,
            recompute_checksums: self.tcp.edit_checksum == EditChecksum::Recompute,
            drop_timeout_s: self.tcp.drop_timeout,
            mtu: self.tcp.mtu as usize,
            memory: crate::conn::memory::MemoryConfig {
                per_flow: (self.memory.flow_kb as usize) << 10,
                per_worker: (self.memory.worker_mb as usize) << 20,
                over_cap_drop: self.memory.over_cap == Verdict::Drop,
                lua_scan_bytes: (self.memory.lua_scan_mb as usize) << 20,
            },
        }
    }

    pub fn flow_table_config(&self) -> crate::flow::FlowTableConfig {
        let f = &self.flows;
        crate::flow::FlowTableConfig {
            capacity: f.capacity as usize,
            timeouts: crate::flow::FlowTimeouts {
                tcp_syn_ms: f.tcp_syn_timeout * 1000,
                tcp_established_ms: f.tcp_established_timeout * 1000,
                tcp_closing_ms: f.tcp_closing_timeout * 1000,
                udp_ms: f.udp_timeout * 1000,
                other_ms: f.other_timeout * 1000,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(Config::parse("", "t.toml").unwrap(), Config::default());
    }

    #[test]
    fn shipped_config_parses_and_matches_defaults_where_documented() {
        let text = include_str!("../../conf/haka.toml");
        let cfg = Config::parse(text, "conf/haka.toml").unwrap();
        assert_eq!(cfg.datapath, DatapathConfig::default());
        assert_eq!(cfg.flows, FlowsConfig::default());
        assert_eq!(cfg.mempool, MempoolConfig::default());
        assert_eq!(cfg.rules, RulesConfig::default());
        assert_eq!(cfg.alerts, crate::alert::AlertsConfig::default());
        assert_eq!(cfg.defrag, DefragSection::default());
        assert_eq!(cfg.http, HttpConfig::default());
    }

    #[test]
    fn http_section() {
        let cfg = Config::parse("[http]\nanomaly = \"ignore\"\nprotocol_error = \"accept\"\n", "x.toml").unwrap();
        assert_eq!((cfg.http.anomaly, cfg.http.protocol_error), (AnomalyAction::Ignore, Verdict::Accept));
        assert_eq!(Config::parse("[http]\nanomaly = \"drop\"\n", "x.toml").unwrap().http.anomaly, AnomalyAction::Drop);
        let cfg = Config::parse("[http]\nhttp09 = \"error\"\ntruncated_head = \"error\"\n[dns]\nrecords = \"haka\"\n", "x.toml").unwrap();
        assert_eq!((cfg.http.http09, cfg.http.truncated_head, cfg.dns.records), (Http09::Error, TruncatedHead::Error, DnsRecords::Haka));
        let d = Config::default();
        assert_eq!((d.http.http09, d.http.truncated_head, d.dns.records), (Http09::Accept, TruncatedHead::Ignore, DnsRecords::Extended));
        assert_eq!(d.http.binary_header, BinaryHeader::Error);
        let cfg = Config::parse("[http]\nbinary_header = \"accept\"\n", "x.toml").unwrap();
        assert_eq!(cfg.http.binary_header, BinaryHeader::Accept);
        let e = Config::parse("[http]\nanomaly = \"log\"\n", "x.toml").unwrap_err();
        assert!(e.starts_with("x.toml:2: http.anomaly: ") && e.contains("`log`") && !e.contains('\n'), "{e}");
        // an unknown key's message names it already
        let e = Config::parse("[http]\nanomalies = \"drop\"\n", "x.toml").unwrap_err();
        assert!(e.starts_with("x.toml:2: unknown field `anomalies`"), "{e}");
    }

    #[test]
    fn defrag_section() {
        let cfg = Config::parse("[defrag]\nenabled = false\ntimeout = 0.25\nmax_fragments = 64\n", "x.toml").unwrap();
        assert!(!cfg.defrag.enabled);
        assert_eq!(cfg.defrag.max_fragments, 64);
        assert_eq!(cfg.defrag.defrag_config().timeout_ms, 250);
        // Integer seconds are fine too.
        let cfg = Config::parse("[defrag]\ntimeout = 5\n", "x.toml").unwrap();
        assert_eq!(cfg.defrag.defrag_config().timeout_ms, 5000);
        assert_eq!(Config::default().defrag.defrag_config(), crate::defrag::DefragConfig::default());
        let e = Config::parse("[defrag]\nmax_datagram = 3\n", "x.toml").unwrap_err();
        assert!(e.starts_with("x.toml:2:") && e.contains("max_datagram"), "{e}");
        for bad in ["timeout = 0", "timeout = -1", "max_datagrams = 0", "max_bytes = 100", "max_fragments = 1", "reassembly_mbufs = 0"] {
            let e = Config::parse(&format!("[defrag]\n{bad}\n"), "x.toml").unwrap_err();
            let key = bad.split(' ').next().unwrap();
            assert!(e.contains(&format!("defrag.{key}")), "{bad}: {e}");
        }
        assert_eq!((cfg.defrag.overlap, cfg.defrag.refragment), (FragOverlap::Drop, Refragment::Mtu));
        let cfg = Config::parse("[defrag]\noverlap = \"haka\"\nrefragment = \"haka\"\n", "x.toml").unwrap();
        assert_eq!((cfg.defrag.overlap, cfg.defrag.refragment), (FragOverlap::Haka, Refragment::Haka));
        assert!(Config::parse("[defrag]\noverlap = \"first\"\n", "x.toml").is_err());
        let e = Config::parse("[defrag]\nenabled = 1\n", "x.toml").unwrap_err();
        assert!(e.starts_with("x.toml:2:"), "{e}");
    }

    #[test]
    fn range_errors_name_the_line_and_set_overrides() {
        let e = Config::parse("[datapath]\nmode = \"inline\"\n[flows]\nudp_timeout = 5\ncapacity = 0\n", "x.toml").unwrap_err();
        assert!(e.starts_with("x.toml:5: flows.capacity = 0:"), "{e}");
        let e = Config::parse("[log]\nlevel = \"loud\"\n", "x.toml").unwrap_err();
        assert!(e.starts_with("x.toml:2: log.level"), "{e}");
        let e = Config::parse("[metrics]\nlisten = \"nowhere\"\n", "x.toml").unwrap_err();
        assert!(e.starts_with("x.toml:2: metrics.listen"), "{e}");
        let c = Config::load_with(None, &["flows.capacity=1024".into(), "alerts.eve_file=/tmp/e.json".into(), "control.socket=\"\"".into()]).unwrap();
        assert_eq!(c.flows.capacity, 1024);
        assert_eq!(c.alerts.eve_file.as_deref(), Some(std::path::Path::new("/tmp/e.json")));
        assert_eq!(c.control.socket, "");
        let e = Config::load_with(None, &["flows.capacity=0".into()]).unwrap_err();
        assert!(e.starts_with("--set flows.capacity=0: flows.capacity = 0"), "{e}");
        let e = Config::load_with(None, &["flows.bogus=1".into()]).unwrap_err();
        assert!(e.starts_with("--set flows.bogus=1:") && e.contains("bogus"), "{e}");
        let e = Config::load_with(None, &["flows".into()]).unwrap_err();
        assert!(e.contains("section.key=value"), "{e}");
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = Config::parse("[datapath]\nmode = \"inline\"\nbogus = 1\n", "x.toml").unwrap_err();
        assert!(e.starts_with("x.toml:3:"), "{e}");
        assert!(e.contains("bogus"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn unknown_section_rejected() {
        let e = Config::parse("[nope]\n", "x.toml").unwrap_err();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Config::parse("[datapath]\nmode = \"sideways\"\n", "x.toml").unwrap_err();
        assert!(e.starts_with("x.toml:2:") && e.contains("sideways"), "{e}");
        let e = Config::parse("[flows]\ncapacity = 0\n", "x.toml").unwrap_err();
        assert!(e.contains("flows.capacity"), "{e}");
        let e = Config::parse("[flows]\nudp_timeout = -3\n", "x.toml").unwrap_err();
        assert!(e.starts_with("x.toml:2:"), "{e}");
        let e = Config::parse("[datapath]\ndispatch_ring_size = 1000\n", "x.toml").unwrap_err();
        assert!(e.contains("datapath.dispatch_ring_size"), "{e}");
        let e = Config::parse("[ports]\npairs = [[0]]\n", "x.toml").unwrap_err();
        assert!(e.starts_with("x.toml:2:"), "{e}");
        let e = Config::parse("[tcp]\nmtu = 100\n", "x.toml").unwrap_err();
        assert!(e.contains("tcp.mtu = 100"), "{e}");
        for ok in ["0", "576", "9000"] {
            let c = Config::parse(&format!("[tcp]\nmtu = {ok}\n"), "x.toml").unwrap();
            assert_eq!(c.conn_config().mtu, ok.parse::<usize>().unwrap());
        }
    }

    #[test]
    fn values_are_read() {
        let cfg = Config::parse(
            "[eal]\nargs = [\"-l\", \"0-1\"]\n[datapath]\nmode = \"passive\"\nmalformed = \"accept\"\n[ports]\npairs = [[0, 1]]\n[flows]\nudp_timeout = 5\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(cfg.eal.args, vec!["-l", "0-1"]);
        assert_eq!(cfg.datapath.mode, Mode::Passive);
        assert_eq!(cfg.datapath.malformed, Verdict::Accept);
        assert_eq!(cfg.ports.pairs, vec![[0, 1]]);
        assert_eq!(cfg.flow_table_config().timeouts.udp_ms, 5000);
    }
}
