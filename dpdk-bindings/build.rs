//! Generates bindings to the system DPDK (found with pkg-config `libdpdk`) and
//! compiles the C shim for DPDK's static-inline functions.
use std::env;
use std::path::PathBuf;

fn fail(msg: &str) -> ! {
    // One line, then stop: cargo shows it as the build error.
    eprintln!("error: {msg}; run scripts/setup.sh");
    println!("cargo:warning={msg}; run scripts/setup.sh");
    std::process::exit(1);
}

fn main() {
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-changed=shim/shim.h");
    let dpdk = match pkg_config::Config::new().atleast_version("22.11").probe("libdpdk") {
        Ok(lib) => lib,
        Err(_) => fail("DPDK >= 22.11 not found by pkg-config (libdpdk)"),
    };
    // The full cflags verbatim: they carry `-include rte_config.h` and `-march`,
    // which rte_memcpy's SSSE3 inlines need.
    let cflags_out = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .unwrap_or_else(|_| fail("pkg-config not found"));
    let cflags: Vec<String> = String::from_utf8_lossy(&cflags_out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();

    let mut cc = cc::Build::new();
    cc.file("shim/shim.c").opt_level(3).flag("-DALLOW_EXPERIMENTAL_API").warnings(false);
    for f in &cflags {
        cc.flag(f);
    }
    cc.compile("haka_dpdk_shim");

    if clang_sys_missing() {
        fail("libclang not found (needed by bindgen)");
    }
    let bindings = bindgen::Builder::default()
        .header("shim/shim.h")
        .clang_args(&cflags)
        .clang_arg("-DALLOW_EXPERIMENTAL_API")
        .allowlist_function("rte_.*|shim_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*|SOCKET_ID_ANY|RING_F_.*")
        .opaque_type("rte_arp_ipv4|rte_arp_hdr")
        .derive_debug(false)
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .unwrap_or_else(|e| fail(&format!("bindgen failed on the DPDK headers: {e}")));
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("bindings.rs");
    bindings
        .write_to_file(&out)
        .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", out.display())));
    // Re-emit the link flags for dependants (pkg-config already printed them for us).
    let _ = dpdk;
}

/// bindgen loads libclang at run time; check it early for a clear message.
fn clang_sys_missing() -> bool {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/libclang-14.so.1",
        "/usr/lib/llvm-14/lib/libclang.so",
        "/usr/lib/llvm-14/lib/libclang-14.so.1",
        "/usr/lib/x86_64-linux-gnu/libclang.so",
    ];
    env::var_os("LIBCLANG_PATH").is_none() && !candidates.iter().any(|p| std::path::Path::new(p).exists())
}
