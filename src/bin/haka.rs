//! `haka [EAL args] -- [-c haka.toml] [--stats-file PATH]`: the inline/passive daemon (foreground).
fn main() {
    std::process::exit(haka_engine::app::haka_main(std::env::args().collect()));
}
