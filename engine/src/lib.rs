//! Haka engine: everything between the DPDK ports and the verdict.
//!
//! Layering (only `dpdk` contains `unsafe`):
//! - [`dpdk`]: safe wrapper over `dpdk-sys` (EAL, mempool, ports, mbufs, rings, lcores).
//! - [`wire`]: typed zero-copy views over header bytes (smoltcp style).
//! - [`dissectors`]: every dissector behind one trait, registered by name (packet layers,
//!   flow dissectors); [`dissect`] walks the packet dissectors over a frame into a compact
//!   [`dissect::PacketMeta`].
//! - [`flow`]: canonical flow keys, symmetric hash, per-worker flow table with timer wheel.
//! - [`pipeline`]: the per-packet decision (dissect, flow lookup, verdict), DPDK-free.
//! - [`worker`]: the lcore loop (rx burst, dispatch, pipeline, tx buffers).
//! - [`defrag`], [`fragstage`], [`refrag`]: IP fragment reassembly, its place in the worker
//!   (held fragments, reassembled packets, handover), re-fragmentation.
//! - [`config`], [`stats`], [`pcapfile`], [`app`]: configuration, counters, capture files, binaries.
#![deny(unsafe_code)]

pub mod alert;
pub mod app;
pub mod config;
pub mod conn;
pub mod defrag;
pub mod dispatch;
pub mod dissect;
pub mod dissectors;
pub mod dpdk;
pub mod flow;
pub mod fragstage;
pub mod logging;
pub mod lua;
pub mod ops;
pub mod pcapfile;
pub mod pipeline;
pub mod progress;
pub mod stateful;
pub mod refrag;
pub mod stats;
pub mod stream;
pub mod tcp_edit;
mod test_util;
pub mod wire;
pub mod worker;
