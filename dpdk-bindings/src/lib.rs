//! Raw DPDK bindings (placeholder until build.rs lands).
