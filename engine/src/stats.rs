//! Counters. Each worker keeps plain `Counters` on its own stack and publishes
//! them (relaxed stores, no read-modify-write) into its cache-padded
//! `SharedCounters`, which the main lcore reads.
use crate::dissect::Malformed;
use crossbeam_utils::CachePadded;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a packet was not forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Malformed packet with `malformed = "drop"` (details in `malformed`).
    Malformed,
    /// The NIC refused it at transmit (tx queue full).
    TxFull,
    /// The owning worker's dispatch ring was full.
    DispatchRingFull,
    /// A packet handed over as a copy found no mbuf left at its owner.
    DispatchNoBuffer,
    /// Inline mode but the input port has no pair.
    NoOutputPort,
    /// A Lua rule dropped it (`pkt:drop()`, a drop policy).
    Rule,
    /// A Lua rule raised an error on it and `rules.rule_error = "drop"`.
    RuleError,
    /// Its connection was dropped or reset by a rule (`flow:drop()`, `reset()`).
    FlowDropped,
    /// TCP packet without a connection and `[tcp] no_connection_found = "drop"`.
    NoConnection,
    /// Its out-of-order data went over a stream buffer cap and `[tcp] over_cap = "drop"`.
    StreamOverCap,
    /// SYN or SYN-ACK on an established connection and `[tcp] unexpected_packet = "drop"`.
    TcpUnexpected,
    /// An IP fragment whose datagram was invalid (overlap, out of bounds, malformed,
    /// over the reassembly limits).
    FragmentInvalid,
    /// An IP fragment whose datagram never completed (timed out, evicted, or still
    /// incomplete when the worker stopped).
    FragmentIncomplete,
    /// An IP fragment whose reassembled datagram could not be built or re-fragmented
    /// (no large mbuf left, too big for one, re-fragmentation failed).
    FragmentNoBuffer,
    /// An IPv4 packet while the rules file did not load protocol/ipv4, under
    /// `[rules] dissectors = "required"` (Haka: "dropping unknown dissector").
    UnknownDissector,
    /// A malformed DNS datagram with `[dns] protocol_error = "drop"` (a stream's protocol
    /// error drops its connection: `FlowDropped`).
    ProtocolError,
    /// Its connection went over a flow memory cap (`[memory]`) with `over_cap = "drop"`.
    MemoryCap,
}

impl DropReason {
    pub const COUNT: usize = 17;
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::Malformed,
        DropReason::TxFull,
        DropReason::DispatchRingFull,
        DropReason::DispatchNoBuffer,
        DropReason::NoOutputPort,
        DropReason::Rule,
        DropReason::RuleError,
        DropReason::FlowDropped,
        DropReason::NoConnection,
        DropReason::StreamOverCap,
        DropReason::TcpUnexpected,
        DropReason::FragmentInvalid,
        DropReason::FragmentIncomplete,
        DropReason::FragmentNoBuffer,
        DropReason::UnknownDissector,
        DropReason::ProtocolError,
        DropReason::MemoryCap,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::TxFull => "tx_full",
            DropReason::DispatchRingFull => "dispatch_ring_full",
            DropReason::DispatchNoBuffer => "dispatch_no_buffer",
            DropReason::NoOutputPort => "no_output_port",
            DropReason::Rule => "rule",
            DropReason::RuleError => "rule_error",
            DropReason::FlowDropped => "flow_dropped",
            DropReason::NoConnection => "no_connection",
            DropReason::StreamOverCap => "stream_over_cap",
            DropReason::TcpUnexpected => "tcp_unexpected",
            DropReason::FragmentInvalid => "fragment_invalid",
            DropReason::FragmentIncomplete => "fragment_incomplete",
            DropReason::FragmentNoBuffer => "fragment_no_buffer",
            DropReason::UnknownDissector => "unknown_dissector",
            DropReason::ProtocolError => "protocol_error",
            DropReason::MemoryCap => "memory_cap",
        }
    }
}

/// Counters of the stateful layer (connections, streams, application dissectors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stateful {
    TcpConnections,
    TcpPickedUp,
    UdpConnections,
    ConnectionsEnded,
    ConnectionsActive,
    StreamBufferedBytes,
    OverlapConflicts,
    StreamOverCap,
    /// Connections that went over the data held for their streamed rules.
    StreamedOverCap,
    Retransmissions,
    StreamEdits,
    StreamEditsRefused,
    /// Segments added by splitting segments that stream edits grew past `[tcp] mtu`.
    SplitSegments,
    ResetsSent,
    HttpRequests,
    HttpResponses,
    HttpErrors,
    /// HTTP heads whose event has rules but none ran: their prefilters did not match.
    HttpPrefiltered,
    /// Irregularities the HTTP parser tolerated (one per kind per head), then per kind
    /// ([`crate::dissectors::http::Anomaly`], in its order).
    HttpAnomalies,
    HttpAnomalyRequestTargetSpaces,
    HttpAnomalyHttp09Request,
    HttpAnomalyLowercaseVersion,
    HttpAnomalyRequestLineWhitespace,
    HttpAnomalyRequestTargetControl,
    HttpAnomalyObsFold,
    HttpAnomalyBareLf,
    HttpAnomalyDuplicateContentLength,
    HttpAnomalySpaceBeforeColon,
    DnsQueries,
    DnsResponses,
    DnsErrors,
    TlsClientHellos,
    TlsErrors,
    TcpUnexpected,
    /// Protocol errors of the dissectors written in Lua (`haka.dissector.new`): a grammar
    /// parse error no action handled, data that could not be parsed (engine/lua/dissector.lua).
    LuaProtocolErrors,
    /// The flow memory budget (`conn::memory`): bytes held by the connections now, the
    /// most so far, caps reached (which cap; which part held the most), then per class
    /// (tcp, udp, http, dns, tls) connections, their bytes and the most one held.
    MemoryHeldBytes,
    MemoryPeakBytes,
    MemoryFlowCapHits,
    MemoryWorkerCapHits,
    MemoryCapHitsStream,
    MemoryCapHitsParser,
    /// Caps reached mostly by the flow's Lua objects, and the bytes of Lua objects
    /// charged to the connections now (measured by the worker's scan, `[memory] lua_scan_mb`).
    MemoryCapHitsLua,
    MemoryLuaBytes,
    MemoryTcpConnections,
    MemoryTcpBytes,
    MemoryTcpMaxBytes,
    MemoryUdpConnections,
    MemoryUdpBytes,
    MemoryUdpMaxBytes,
    MemoryHttpConnections,
    MemoryHttpBytes,
    MemoryHttpMaxBytes,
    MemoryDnsConnections,
    MemoryDnsBytes,
    MemoryDnsMaxBytes,
    MemoryTlsConnections,
    MemoryTlsBytes,
    MemoryTlsMaxBytes,
}

impl Stateful {
    pub const COUNT: usize = 58;
    pub const ALL: [Stateful; Stateful::COUNT] = [
        Stateful::TcpConnections,
        Stateful::TcpPickedUp,
        Stateful::UdpConnections,
        Stateful::ConnectionsEnded,
        Stateful::ConnectionsActive,
        Stateful::StreamBufferedBytes,
        Stateful::OverlapConflicts,
        Stateful::StreamOverCap,
        Stateful::StreamedOverCap,
        Stateful::Retransmissions,
        Stateful::StreamEdits,
        Stateful::StreamEditsRefused,
        Stateful::SplitSegments,
        Stateful::ResetsSent,
        Stateful::HttpRequests,
        Stateful::HttpResponses,
        Stateful::HttpErrors,
        Stateful::HttpPrefiltered,
        Stateful::HttpAnomalies,
        Stateful::HttpAnomalyRequestTargetSpaces,
        Stateful::HttpAnomalyHttp09Request,
        Stateful::HttpAnomalyLowercaseVersion,
        Stateful::HttpAnomalyRequestLineWhitespace,
        Stateful::HttpAnomalyRequestTargetControl,
        Stateful::HttpAnomalyObsFold,
        Stateful::HttpAnomalyBareLf,
        Stateful::HttpAnomalyDuplicateContentLength,
        Stateful::HttpAnomalySpaceBeforeColon,
        Stateful::DnsQueries,
        Stateful::DnsResponses,
        Stateful::DnsErrors,
        Stateful::TlsClientHellos,
        Stateful::TlsErrors,
        Stateful::TcpUnexpected,
        Stateful::LuaProtocolErrors,
        Stateful::MemoryHeldBytes,
        Stateful::MemoryPeakBytes,
        Stateful::MemoryFlowCapHits,
        Stateful::MemoryWorkerCapHits,
        Stateful::MemoryCapHitsStream,
        Stateful::MemoryCapHitsParser,
        Stateful::MemoryCapHitsLua,
        Stateful::MemoryLuaBytes,
        Stateful::MemoryTcpConnections,
        Stateful::MemoryTcpBytes,
        Stateful::MemoryTcpMaxBytes,
        Stateful::MemoryUdpConnections,
        Stateful::MemoryUdpBytes,
        Stateful::MemoryUdpMaxBytes,
        Stateful::MemoryHttpConnections,
        Stateful::MemoryHttpBytes,
        Stateful::MemoryHttpMaxBytes,
        Stateful::MemoryDnsConnections,
        Stateful::MemoryDnsBytes,
        Stateful::MemoryDnsMaxBytes,
        Stateful::MemoryTlsConnections,
        Stateful::MemoryTlsBytes,
        Stateful::MemoryTlsMaxBytes,
    ];

    /// Memory class `class`'s counter `k` (0 connections, 1 bytes, 2 max bytes).
    pub fn memory_class(class: usize, k: usize) -> Stateful {
        Stateful::ALL[Stateful::MemoryTcpConnections as usize + 3 * class + k]
    }

    /// The counter of an HTTP anomaly kind.
    pub fn http_anomaly(a: crate::dissectors::http::Anomaly) -> Stateful {
        Stateful::ALL[Stateful::HttpAnomalies as usize + 1 + a as usize]
    }

    pub fn name(self) -> &'static str {
        match self {
            Stateful::TcpConnections => "tcp_connections",
            Stateful::TcpPickedUp => "tcp_picked_up",
            Stateful::UdpConnections => "udp_connections",
            Stateful::ConnectionsEnded => "connections_ended",
            Stateful::ConnectionsActive => "connections_active",
            Stateful::StreamBufferedBytes => "stream_buffered_bytes",
            Stateful::OverlapConflicts => "overlap_conflicts",
            Stateful::StreamOverCap => "stream_over_cap",
            Stateful::StreamedOverCap => "streamed_over_cap",
            Stateful::Retransmissions => "retransmissions",
            Stateful::StreamEdits => "stream_edits",
            Stateful::StreamEditsRefused => "stream_edits_refused",
            Stateful::SplitSegments => "split_segments",
            Stateful::ResetsSent => "resets_sent",
            Stateful::HttpRequests => "http_requests",
            Stateful::HttpResponses => "http_responses",
            Stateful::HttpErrors => "http_errors",
            Stateful::HttpPrefiltered => "http_prefiltered",
            Stateful::HttpAnomalies => "http_anomalies",
            Stateful::HttpAnomalyRequestTargetSpaces => "http_anomaly_request_target_spaces",
            Stateful::HttpAnomalyHttp09Request => "http_anomaly_http09_request",
            Stateful::HttpAnomalyLowercaseVersion => "http_anomaly_lowercase_version",
            Stateful::HttpAnomalyRequestLineWhitespace => "http_anomaly_request_line_whitespace",
            Stateful::HttpAnomalyRequestTargetControl => "http_anomaly_request_target_control",
            Stateful::HttpAnomalyObsFold => "http_anomaly_obs_fold",
            Stateful::HttpAnomalyBareLf => "http_anomaly_bare_lf",
            Stateful::HttpAnomalyDuplicateContentLength => "http_anomaly_duplicate_content_length",
            Stateful::HttpAnomalySpaceBeforeColon => "http_anomaly_space_before_colon",
            Stateful::DnsQueries => "dns_queries",
            Stateful::DnsResponses => "dns_responses",
            Stateful::DnsErrors => "dns_errors",
            Stateful::TlsClientHellos => "tls_client_hellos",
            Stateful::TlsErrors => "tls_errors",
            Stateful::TcpUnexpected => "tcp_unexpected",
            Stateful::LuaProtocolErrors => "lua_protocol_errors",
            Stateful::MemoryHeldBytes => "memory_held_bytes",
            Stateful::MemoryPeakBytes => "memory_peak_bytes",
            Stateful::MemoryFlowCapHits => "memory_flow_cap_hits",
            Stateful::MemoryWorkerCapHits => "memory_worker_cap_hits",
            Stateful::MemoryCapHitsStream => "memory_cap_hits_stream",
            Stateful::MemoryCapHitsParser => "memory_cap_hits_parser",
            Stateful::MemoryCapHitsLua => "memory_cap_hits_lua",
            Stateful::MemoryLuaBytes => "memory_lua_bytes",
            Stateful::MemoryTcpConnections => "memory_tcp_connections",
            Stateful::MemoryTcpBytes => "memory_tcp_bytes",
            Stateful::MemoryTcpMaxBytes => "memory_tcp_max_bytes",
            Stateful::MemoryUdpConnections => "memory_udp_connections",
            Stateful::MemoryUdpBytes => "memory_udp_bytes",
            Stateful::MemoryUdpMaxBytes => "memory_udp_max_bytes",
            Stateful::MemoryHttpConnections => "memory_http_connections",
            Stateful::MemoryHttpBytes => "memory_http_bytes",
            Stateful::MemoryHttpMaxBytes => "memory_http_max_bytes",
            Stateful::MemoryDnsConnections => "memory_dns_connections",
            Stateful::MemoryDnsBytes => "memory_dns_bytes",
            Stateful::MemoryDnsMaxBytes => "memory_dns_max_bytes",
            Stateful::MemoryTlsConnections => "memory_tls_connections",
            Stateful::MemoryTlsBytes => "memory_tls_bytes",
            Stateful::MemoryTlsMaxBytes => "memory_tls_max_bytes",
        }
    }
}

/// The stateful counters, indexed by [`Stateful`] (a type of its own: arrays longer than 32
/// have no `Default`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatefulCounts(pub [u64; Stateful::COUNT]);

impl Default for StatefulCounts {
    fn default() -> Self {
        StatefulCounts([0; Stateful::COUNT])
    }
}

impl std::ops::Deref for StatefulCounts {
    type Target = [u64; Stateful::COUNT];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for StatefulCounts {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// One worker's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets taken from a port by this worker.
    pub rx: u64,
    /// Packets handed to the owning worker (software dispatch) / received from others.
    pub dispatched_out: u64,
    pub dispatched_in: u64,
    /// Packets this worker decided on (its own flows), and those accepted.
    pub processed: u64,
    pub accepted: u64,
    /// Packets the NIC took for transmission.
    pub tx: u64,
    pub dropped: [u64; DropReason::COUNT],
    pub malformed: [u64; Malformed::COUNT],
    pub non_ip: u64,
    pub flows_created: u64,
    pub flows_expired: u64,
    pub flows_evicted: u64,
    pub flows_active: u64,
    /// Thread CPU time of the worker (set at exit).
    pub cpu_ns: u64,
    /// Lua: packets handed to rules, rule errors (runtime errors, budget and
    /// memory interruptions included), rules state reloads and failed reloads.
    pub lua_packets: u64,
    pub rule_errors: u64,
    pub rule_budget_exceeded: u64,
    pub rule_memory_exceeded: u64,
    pub rules_reloaded: u64,
    pub rules_reload_failed: u64,
    /// Stateful layer, indexed by [`Stateful`].
    pub stateful: StatefulCounts,
    /// IP fragment reassembly (`crate::fragstage`): fragments taken by this worker's
    /// reassembly, datagrams reassembled, fragments rejected (invalid), incomplete
    /// datagrams timed out and evicted, fragments held now (a gauge), reassembled
    /// datagrams handed to the worker owning their flow, modified datagrams re-fragmented.
    pub frag_fragments: u64,
    pub frag_reassembled: u64,
    pub frag_invalid: u64,
    pub frag_timed_out: u64,
    pub frag_evicted: u64,
    pub frag_held: u64,
    pub frag_handed_over: u64,
    pub frag_refragmented: u64,
    /// Rules disabled for failing repeatedly (`[rules] disable_after_errors`), and alerts
    /// not raised for going over their rule's rate (`alert_rate`).
    pub rules_disabled: u64,
    pub alerts_suppressed: u64,
}

const FIXED: usize = 28;
const SLOTS: usize = FIXED + DropReason::COUNT + Malformed::COUNT + Stateful::COUNT;
const MAL: usize = FIXED + DropReason::COUNT;
const STF: usize = MAL + Malformed::COUNT;

impl Counters {
    pub fn drop(&mut self, r: DropReason) {
        self.dropped[r as usize] += 1;
    }

    pub fn add(&mut self, k: Stateful, n: u64) {
        self.stateful[k as usize] += n;
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    pub fn malformed_total(&self) -> u64 {
        self.malformed.iter().sum()
    }

    fn to_slots(self) -> [u64; SLOTS] {
        let mut s = [0u64; SLOTS];
        s[..FIXED].copy_from_slice(&[
            self.rx,
            self.dispatched_out,
            self.dispatched_in,
            self.processed,
            self.accepted,
            self.tx,
            self.non_ip,
            self.flows_created,
            self.flows_expired,
            self.flows_evicted,
            self.flows_active,
            self.cpu_ns,
            self.lua_packets,
            self.rule_errors,
            self.rule_budget_exceeded,
            self.rule_memory_exceeded,
            self.rules_reloaded,
            self.rules_reload_failed,
            self.frag_fragments,
            self.frag_reassembled,
            self.frag_invalid,
            self.frag_timed_out,
            self.frag_evicted,
            self.frag_held,
            self.frag_handed_over,
            self.frag_refragmented,
            self.rules_disabled,
            self.alerts_suppressed,
        ]);
        s[FIXED..FIXED + DropReason::COUNT].copy_from_slice(&self.dropped);
        s[MAL..STF].copy_from_slice(&self.malformed);
        s[STF..].copy_from_slice(&self.stateful.0);
        s
    }

    fn from_slots(s: &[u64; SLOTS]) -> Counters {
        let mut c = Counters {
            rx: s[0],
            dispatched_out: s[1],
            dispatched_in: s[2],
            processed: s[3],
            accepted: s[4],
            tx: s[5],
            non_ip: s[6],
            flows_created: s[7],
            flows_expired: s[8],
            flows_evicted: s[9],
            flows_active: s[10],
            cpu_ns: s[11],
            lua_packets: s[12],
            rule_errors: s[13],
            rule_budget_exceeded: s[14],
            rule_memory_exceeded: s[15],
            rules_reloaded: s[16],
            rules_reload_failed: s[17],
            frag_fragments: s[18],
            frag_reassembled: s[19],
            frag_invalid: s[20],
            frag_timed_out: s[21],
            frag_evicted: s[22],
            frag_held: s[23],
            frag_handed_over: s[24],
            frag_refragmented: s[25],
            rules_disabled: s[26],
            alerts_suppressed: s[27],
            ..Counters::default()
        };
        c.dropped.copy_from_slice(&s[FIXED..FIXED + DropReason::COUNT]);
        c.malformed.copy_from_slice(&s[MAL..STF]);
        c.stateful.copy_from_slice(&s[STF..]);
        c
    }

    /// Publishes the flow memory budget's figures (gauges, set after each burst).
    pub fn set_memory(&mut self, m: &crate::conn::memory::FlowMemory) {
        let st = &mut self.stateful;
        st[Stateful::MemoryHeldBytes as usize] = m.held as u64;
        st[Stateful::MemoryPeakBytes as usize] = m.peak as u64;
        st[Stateful::MemoryFlowCapHits as usize] = m.flow_cap_hits;
        st[Stateful::MemoryWorkerCapHits as usize] = m.worker_cap_hits;
        st[Stateful::MemoryCapHitsStream as usize] = m.stream_cap_hits;
        st[Stateful::MemoryCapHitsParser as usize] = m.parser_cap_hits;
        st[Stateful::MemoryCapHitsLua as usize] = m.lua_cap_hits;
        st[Stateful::MemoryLuaBytes as usize] = m.lua_held as u64;
        for (i, u) in m.classes.iter().enumerate() {
            st[Stateful::memory_class(i, 0) as usize] = u.connections;
            st[Stateful::memory_class(i, 1) as usize] = u.bytes;
            st[Stateful::memory_class(i, 2) as usize] = u.max_bytes;
        }
    }

    /// Sum of several workers' counters.
    /// (The most one connection held, per memory class, is the most of any worker.)
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a Counters>) -> Counters {
        let mut acc = [0u64; SLOTS];
        let mut max = [0u64; crate::conn::memory::CLASSES];
        for c in all {
            for (a, v) in acc.iter_mut().zip(c.to_slots()) {
                *a += v;
            }
            for (i, m) in max.iter_mut().enumerate() {
                *m = (*m).max(c.stateful[Stateful::memory_class(i, 2) as usize]);
            }
        }
        let mut c = Counters::from_slots(&acc);
        for (i, m) in max.into_iter().enumerate() {
            c.stateful[Stateful::memory_class(i, 2) as usize] = m;
        }
        c
    }

    pub fn to_json(&self) -> Value {
        let mut dropped = Map::new();
        for r in DropReason::ALL {
            dropped.insert(r.name().into(), self.dropped[r as usize].into());
        }
        let mut malformed = Map::new();
        for m in Malformed::ALL {
            malformed.insert(m.name().into(), self.malformed[m.index()].into());
        }
        let mut stateful = Map::new();
        for k in Stateful::ALL {
            stateful.insert(k.name().into(), self.stateful[k as usize].into());
        }
        let mut memory = Map::new();
        for (i, name) in crate::conn::memory::CLASS_NAMES.iter().enumerate() {
            let [n, bytes, max] = [0, 1, 2].map(|k| self.stateful[Stateful::memory_class(i, k) as usize]);
            memory.insert(
                (*name).into(),
                json!({
                    "connections": n,
                    "bytes": bytes,
                    "bytes_per_connection": if n > 0 { bytes / n } else { 0 },
                    "max_connection_bytes": max,
                }),
            );
        }
        json!({
            "stateful": stateful,
            "memory_by_protocol": memory,
            "rx": self.rx,
            "tx": self.tx,
            "processed": self.processed,
            "accepted": self.accepted,
            "dropped": self.dropped_total(),
            "dropped_by_reason": dropped,
            "malformed": self.malformed_total(),
            "malformed_by_reason": malformed,
            "non_ip": self.non_ip,
            "dispatched_out": self.dispatched_out,
            "dispatched_in": self.dispatched_in,
            "flows_created": self.flows_created,
            "flows_expired": self.flows_expired,
            "flows_evicted": self.flows_evicted,
            "flows_active": self.flows_active,
            "cpu_seconds": self.cpu_ns as f64 / 1e9,
            "lua_packets": self.lua_packets,
            "rule_errors": self.rule_errors,
            "rule_budget_exceeded": self.rule_budget_exceeded,
            "rule_memory_exceeded": self.rule_memory_exceeded,
            "rules_reloaded": self.rules_reloaded,
            "rules_reload_failed": self.rules_reload_failed,
            "rules_disabled": self.rules_disabled,
            "alerts_suppressed": self.alerts_suppressed,
            "defrag": {
                "fragments": self.frag_fragments,
                "reassembled": self.frag_reassembled,
                "invalid": self.frag_invalid,
                "timed_out": self.frag_timed_out,
                "evicted": self.frag_evicted,
                "held": self.frag_held,
                "handed_over": self.frag_handed_over,
                "refragmented": self.frag_refragmented,
            },
        })
    }
}

/// A worker's published counters, alone on its cache lines.
pub struct SharedCounters {
    slots: CachePadded<[AtomicU64; SLOTS]>,
}

impl Default for SharedCounters {
    fn default() -> Self {
        SharedCounters { slots: CachePadded::new([const { AtomicU64::new(0) }; SLOTS]) }
    }
}

impl SharedCounters {
    /// Called only by the owning worker.
    pub fn publish(&self, c: &Counters) {
        for (slot, v) in self.slots.iter().zip(c.to_slots()) {
            slot.store(v, Relaxed);
        }
    }

    pub fn snapshot(&self) -> Counters {
        let mut s = [0u64; SLOTS];
        for (v, slot) in s.iter_mut().zip(self.slots.iter()) {
            *v = slot.load(Relaxed);
        }
        Counters::from_slots(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_snapshot_roundtrip_and_sum() {
        let mut c = Counters {
            rx: 5,
            tx: 3,
            flows_created: 2,
            cpu_ns: 7,
            rules_reload_failed: 9,
            frag_fragments: 11,
            frag_refragmented: 13,
            ..Default::default()
        };
        c.drop(DropReason::TxFull);
        c.malformed[Malformed::TcpTruncated.index()] = 4;
        let s = SharedCounters::default();
        s.publish(&c);
        assert_eq!(s.snapshot(), c);
        let t = Counters::sum([&c, &c]);
        assert_eq!(t.rx, 10);
        assert_eq!(t.dropped[DropReason::TxFull as usize], 2);
        assert_eq!(t.malformed_total(), 8);
        let j = t.to_json();
        assert_eq!(j["malformed_by_reason"]["tcp_truncated"], 8);
        assert_eq!(j["dropped_by_reason"]["tx_full"], 2);
        assert_eq!(j["defrag"]["fragments"], 22);
        assert_eq!(j["defrag"]["refragmented"], 26);
        c.drop(DropReason::FragmentNoBuffer);
        s.publish(&c);
        assert_eq!(s.snapshot(), c);
        assert_eq!(c.to_json()["dropped_by_reason"]["fragment_no_buffer"], 1);
    }

    #[test]
    fn stateful_counters_are_in_order_and_one_per_http_anomaly() {
        for (i, k) in Stateful::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i, "{}", k.name());
        }
        for a in crate::dissectors::http::Anomaly::ALL {
            assert_eq!(Stateful::http_anomaly(a).name(), format!("http_anomaly_{}", a.name()));
        }
    }
}
