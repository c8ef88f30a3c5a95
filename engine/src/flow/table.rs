//! The per-worker flow table: fixed capacity, no locks, no allocation after creation.
use super::key::{Direction, FlowKey, Side};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTimeouts {
    pub tcp_syn_ms: u64,
    pub tcp_established_ms: u64,
    pub tcp_closing_ms: u64,
    pub udp_ms: u64,
    pub other_ms: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct FlowTableConfig {
    /// Hard maximum of tracked flows; at capacity the oldest idle flow is evicted.
    pub capacity: usize,
    pub timeouts: FlowTimeouts,
}

/// Coarse TCP phase, enough to choose the idle timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpPhase {
    /// Only SYNs seen so far (or not TCP).
    New,
    Established,
    /// FIN or RST seen.
    Closing,
}

pub type FlowId = u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    Timeout,
    Evicted,
}

#[derive(Clone, Debug)]
pub struct Flow {
    pub key: FlowKey,
    /// The endpoint that sent the first packet (the client).
    pub client: Side,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub tcp: TcpPhase,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    pub id: FlowId,
    pub dir: Direction,
    pub created: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableCounters {
    pub created: u64,
    pub expired: u64,
    pub evicted: u64,
}

pub struct FlowTable {}
