//! Root build script: build information for `--version`, and one clear line
//! when DPDK is missing (before the long bindings build fails further down).
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    match pkg_config::Config::new().cargo_metadata(false).atleast_version("22.11").probe("libdpdk") {
        Ok(lib) => println!("cargo:rustc-env=HAKA_DPDK_VERSION={}", lib.version),
        Err(_) => {
            eprintln!("error: DPDK >= 22.11 not found by pkg-config (libdpdk); run scripts/setup.sh");
            std::process::exit(1);
        }
    }
    let git = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=HAKA_GIT_REV={git}");
}
