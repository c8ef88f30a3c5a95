//! `hakapcap RULES.lua IN.pcap [-o OUT.pcap]`: the datapath run offline through net_pcap.

// Lua objects (LuaJIT allocates through mlua, i.e. the global allocator) and the
// stateful layer's buffers churn small and large blocks together: glibc's malloc
// spent its time consolidating. mimalloc measured several times faster here.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Version line: package version, git revision, DPDK version it was built against.
const BUILD: &str = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("HAKA_GIT_REV"), ", DPDK ", env!("HAKA_DPDK_VERSION"), ")");

fn main() {
    std::process::exit(haka_engine::app::hakapcap_main(std::env::args().collect(), BUILD));
}
