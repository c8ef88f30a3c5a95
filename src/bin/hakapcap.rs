//! `hakapcap RULES.lua IN.pcap [-o OUT.pcap]`: the datapath run offline through net_pcap.
fn main() {
    std::process::exit(haka_engine::app::hakapcap_main(std::env::args().collect()));
}
