//! Per-worker flow tracking.
//!
//! CONTRACT (shared with pipeline.rs / worker.rs):
//! - `FlowKey::from_meta(&PacketMeta) -> (FlowKey, Side)`: canonical key (endpoints sorted,
//!   so both directions give the same key) and which endpoint sent this packet.
//! - `FlowKey::hash(&self) -> u64`: fast hash, identical for both directions (the key is
//!   canonical). Used both by the software dispatcher (worker = hash % workers) and by the table.
//! - `FlowTable::observe(...)`: lookup-or-create in O(1), counters updated, no allocation.
//! - `FlowTable::expire(now, budget, on_end)`: incremental expiry (timer wheel), bounded work.
//!
//! Additions (flow branch):
//! - `FlowTable::observe_burst(&[FlowPacket], now, &mut [Observed])`: same results as
//!   `observe` per packet, with the cache misses of a burst overlapped (faster on big tables).
//! - `observe_with` / `observe_burst_with(.., on_evict)`: report flows evicted at capacity
//!   (`EndReason::Evicted`) before their slot is reused.
//! - `FlowTable::remove(id)`, `prefetch(hash)`, `with_wheel(cfg, tick_ms, slots)`,
//!   `FlowTimeouts::of(&Flow)`, `Flow::direction(Side)`, `FlowTable::entry_bytes()`.
//! - Expiry precision: a flow ends between its deadline (last_seen + timeout) and one
//!   wheel tick (250 ms by default) later, provided `expire` keeps up.
mod index;
pub mod key;
pub mod table;
pub mod wheel;

pub use key::{Direction, FlowKey, Side};
pub use table::{flow_uid, EndReason, Flow, FlowId, FlowPacket, FlowTable, FlowTableConfig, FlowTimeouts, Observed, TableCounters, TcpPhase};
