//! `hakactl [--socket PATH] COMMAND`: status, stats, flows, reload, loglevel, rules, stop
//! of a running haka, through its control socket.

fn main() {
    std::process::exit(haka_engine::ops::ctl::hakactl_main(std::env::args().collect()));
}
