//! Per-worker flow tracking.
//!
//! CONTRACT (shared with pipeline.rs / worker.rs):
//! - `FlowKey::from_meta(&PacketMeta) -> (FlowKey, Side)`: canonical key (endpoints sorted,
//!   so both directions give the same key) and which endpoint sent this packet.
//! - `FlowKey::hash(&self) -> u64`: fast hash, identical for both directions (the key is
//!   canonical). Used both by the software dispatcher (worker = hash % workers) and by the table.
//! - `FlowTable::observe(...)`: lookup-or-create in O(1), counters updated, no allocation.
//! - `FlowTable::expire(now, budget, on_end)`: incremental expiry (timer wheel), bounded work.
mod index;
pub mod key;
pub mod table;
pub mod wheel;

pub use key::{Direction, FlowKey, Side};
pub use table::{EndReason, Flow, FlowId, FlowPacket, FlowTable, FlowTableConfig, FlowTimeouts, Observed, TableCounters, TcpPhase};
