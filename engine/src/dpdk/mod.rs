//! Safe layer over `dpdk-sys`: the only module of the engine with `unsafe`.
//!
//! Ownership follows Haka's model: an [`Mbuf`] owns one packet buffer and
//! frees it on drop; moving it into a [`TxBuffer`] hands it to the NIC.
#![allow(unsafe_code)]

mod eal;
mod lua;
mod mbuf;
mod mempool;
mod port;
mod ring;
mod telemetry;

pub use eal::{
    launch_on, lcore_id, main_lcore, pdump_init, prefetch, prefetch_write, shared_config, socket_id_any, thread_cpu_ns, tsc, tsc_hz,
    wait_all_lcores, worker_lcores, Eal,
};
pub use lua::{http_field_fn, new_lua_with_ffi, regex_addr, regex_find_fn, EngineHandoff};
// Crate-only: these take a raw `lua_State` address (see their contracts).
pub(crate) use lua::{arm_interrupt, disarm_interrupt, raw_state, set_hook_check, HookCheck};
pub use mbuf::{Mbuf, MbufBurst, PoolRef, BURST};
pub use mempool::Mempool;
pub use port::{available_ports, port_stats, finish_tx_time_log, start_tx_time_log, Port, PortInfo, PortSettings, PortStats, RxQueue, TxBuffer};
pub use ring::Ring;
pub use telemetry::register_telemetry;

use std::ffi::CStr;

/// DPDK's message for its last error on this lcore.
pub(crate) fn last_error() -> String {
    // SAFETY: shim_errno reads the per-lcore rte_errno; rte_strerror returns a
    // pointer to a static or thread-local NUL-terminated string.
    unsafe {
        let e = dpdk_sys::shim_errno();
        CStr::from_ptr(dpdk_sys::rte_strerror(e)).to_string_lossy().into_owned()
    }
}

/// Message for a negative errno return value.
pub(crate) fn errno_str(ret: i32) -> String {
    // SAFETY: rte_strerror returns a valid NUL-terminated string for any value.
    unsafe { CStr::from_ptr(dpdk_sys::rte_strerror(-ret)).to_string_lossy().into_owned() }
}
