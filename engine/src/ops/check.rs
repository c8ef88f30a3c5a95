//! Checks before start (`haka --check`, and every start before EAL): every path haka
//! writes, the memory the flow tables and pools need, the EAL arguments; and the one-line
//! explanation of an EAL failure (its cause and the fix).
use crate::config::Config;
use std::path::Path;

/// A file haka will write (stats file, EVE file): it must be creatable or writable.
/// Nothing is left behind by the check.
pub fn writable_file(path: &Path, what: &str) -> Result<(), String> {
    if path.is_dir() {
        return Err(format!("{what} {}: is a directory", path.display()));
    }
    if path.exists() {
        return std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(|_| ())
            .map_err(|e| format!("{what} {}: not writable: {e}", path.display()));
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(format!("{what} {}: directory {} does not exist", path.display(), dir.display()));
    }
    let probe = dir.join(format!(".haka-check-{}", std::process::id()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!("{what} {}: cannot create it in {}: {e}", path.display(), dir.display())),
    }
}

/// The control socket's directory: exists and is writable, or can be made.
pub fn socket_dir(path: &Path) -> Result<(), String> {
    let fix = "set [control] socket, or --set control.socket=\"\" to run without it";
    let mut dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    // (the nearest existing ancestor must let us make the rest)
    while !dir.exists() {
        match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => dir = p.to_path_buf(),
            _ => break,
        }
    }
    if !dir.is_dir() {
        return Err(format!("control socket {}: {} is not a directory ({fix})", path.display(), dir.display()));
    }
    let probe = dir.join(format!(".haka-check-{}", std::process::id()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!("control socket {}: cannot write in {}: {e} ({fix})", path.display(), dir.display())),
    }
}

/// A `/proc/meminfo` value, in bytes (None when absent).
fn meminfo(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(&format!("{key}:")))?;
    let mut it = line.split_whitespace().skip(1);
    let v: u64 = it.next()?.parse().ok()?;
    Some(if it.next() == Some("kB") { v * 1024 } else { v })
}

fn human(bytes: u128) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    }
}

/// Bytes one flow of the flow table (and its connection slot) takes.
pub fn bytes_per_flow(cfg: &Config) -> u128 {
    let mut small = cfg.flow_table_config();
    small.capacity = 4096;
    let t = crate::flow::FlowTable::new(small);
    (t.memory_bytes() as u128).div_ceil(4096) + std::mem::size_of::<usize>() as u128
}

/// Worker lcores the EAL arguments give (`-l`, `--lcores`, `-c`; 1 when none).
pub fn lcores_in_args(args: &[String]) -> usize {
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        let (opt, val) = match a.split_once('=') {
            Some((o, v)) if o.starts_with("--") => (o.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let next = it.peek().map(|s| s.to_string());
        let val = || val.clone().or(next.clone());
        match opt.as_str() {
            "-l" | "--lcores" => {
                if let Some(v) = val() {
                    return parse_lcore_list(&v).map(|l| l.len()).unwrap_or(1).max(1);
                }
            }
            "-c" => {
                if let Some(v) = val() {
                    let mask = u128::from_str_radix(v.trim_start_matches("0x"), 16).unwrap_or(1);
                    return (mask.count_ones() as usize).max(1);
                }
            }
            _ if a.starts_with("-l") && a.len() > 2 => return parse_lcore_list(&a[2..]).map(|l| l.len()).unwrap_or(1).max(1),
            _ => {}
        }
    }
    1
}

/// `0-3,5` (also `0-3@0` style groups are taken by their first number list).
fn parse_lcore_list(s: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.split('@').next().unwrap_or("").trim_matches(|c| c == '(' || c == ')');
        if part.is_empty() {
            return Err(format!("bad lcore list '{s}'"));
        }
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().map_err(|_| format!("bad lcore list '{s}'"))?, b.parse().map_err(|_| format!("bad lcore list '{s}'"))?);
                if b < a {
                    return Err(format!("bad lcore list '{s}'"));
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| format!("bad lcore list '{s}'"))?),
        }
    }
    Ok(out)
}

/// The EAL memory the arguments give, bytes: `-m`/`--socket-mem`, else with `--no-huge`
/// EAL's 64 MiB, else the free hugepages (None: unknown).
fn eal_memory(args: &[String]) -> Option<u128> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-m" || a == "--socket-mem" {
            let v = it.next()?;
            let mb: u128 = v.split(',').filter_map(|x| x.trim().parse::<u128>().ok()).sum();
            return Some(mb << 20);
        }
        if let Some(v) = a.strip_prefix("--socket-mem=").or_else(|| a.strip_prefix("-m").filter(|v| !v.is_empty())) {
            let mb: u128 = v.split(',').filter_map(|x| x.trim().parse::<u128>().ok()).sum();
            return Some(mb << 20);
        }
    }
    if args.iter().any(|a| a == "--no-huge") {
        return Some(64 << 20);
    }
    let free = meminfo("HugePages_Free")? as u128;
    let size = meminfo("Hugepagesize")? as u128;
    Some(free * size)
}

/// The flow tables and mbuf pools against the memory they need: one line naming the key,
/// the bytes needed and what there is.
pub fn memory(cfg: &Config, eal_args: &[String]) -> Result<(), String> {
    let workers = lcores_in_args(eal_args) as u128;
    let per_flow = bytes_per_flow(cfg);
    let flows = cfg.flows.capacity as u128;
    let need = flows * per_flow * workers;
    let avail = meminfo("MemAvailable").map(|b| b as u128);
    if let Some(avail) = avail {
        if need > avail {
            return Err(format!(
                "flows.capacity = {}: {} workers x {} flows x {per_flow} bytes = {need} bytes ({}) needed, {} available; lower flows.capacity",
                cfg.flows.capacity,
                workers,
                cfg.flows.capacity,
                human(need),
                human(avail)
            ));
        }
    }
    // Packet pools live in EAL memory.
    let per_mbuf = cfg.mempool.data_room as u128 + 128 + 64;
    let pool = cfg.mempool.mbufs as u128 * per_mbuf;
    let reasm = if cfg.defrag.enabled { cfg.defrag.reassembly_mbufs as u128 * (65535 + 128 + 64) } else { 0 };
    if let Some(eal) = eal_memory(eal_args) {
        if pool + reasm > eal {
            let what = if cfg.mempool.mbufs > 0 && pool > reasm {
                format!("mempool.mbufs = {}: {} mbufs x {per_mbuf} bytes", cfg.mempool.mbufs, cfg.mempool.mbufs)
            } else {
                format!("defrag.reassembly_mbufs = {}: {} mbufs x 65727 bytes", cfg.defrag.reassembly_mbufs, cfg.defrag.reassembly_mbufs)
            };
            return Err(format!(
                "{what} (with the other pool: {} bytes, {}) do not fit the {} EAL has (-m or free hugepages); lower it or give EAL more memory",
                pool + reasm,
                human(pool + reasm),
                human(eal)
            ));
        }
    }
    Ok(())
}

/// EAL options haka knows and whether each takes a value.
const EAL_OPTS: &[(&str, bool)] = &[
    ("-l", true), ("--lcores", true), ("-c", true), ("-n", true), ("-m", true), ("-a", true), ("--allow", true),
    ("-b", true), ("--block", true), ("--vdev", true), ("-d", true), ("--file-prefix", true), ("--socket-mem", true),
    ("--socket-limit", true), ("--huge-dir", true), ("--proc-type", true), ("--log-level", true), ("--iova-mode", true),
    ("--main-lcore", true), ("--base-virtaddr", true), ("--mbuf-pool-ops-name", true), ("--trace", true),
    ("--trace-dir", true), ("--trace-bufsz", true), ("--trace-mode", true), ("--service-corelist", true), ("-S", true),
    ("-s", true), ("--service-coremask", true), ("--syslog", false), ("--huge-unlink", false), ("--in-memory", false),
    ("--no-huge", false), ("--no-pci", false), ("--no-hpet", false), ("--no-shconf", false), ("--no-telemetry", false),
    ("--telemetry", false), ("--match-allocations", false), ("--legacy-mem", false), ("--single-file-segments", false),
    ("--create-uio-dev", false), ("--vfio-intr", true), ("--vfio-vf-token", true), ("--force-max-simd-bitwidth", true),
    ("-v", false), ("--no-pci", false), ("--record-core-cycles", false),
];

/// DPDK-capable kernel drivers a PCI device can be bound to.
const DPDK_DRIVERS: [&str; 4] = ["vfio-pci", "igb_uio", "uio_pci_generic", "mlx5_core"];

/// The EAL arguments (without argv[0]): known options, values where needed, lcores that
/// exist, PCI devices that exist and are bound to a DPDK driver, hugepages when used.
pub fn eal_args(args: &[String]) -> Result<(), String> {
    let mut i = 0;
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as u32;
    while i < args.len() {
        let a = &args[i];
        let (opt, inline) = match a.split_once('=') {
            Some((o, v)) if o.starts_with("--") => (o.to_string(), Some(v.to_string())),
            _ if a.len() > 2 && a.starts_with('-') && !a.starts_with("--") => (a[..2].to_string(), Some(a[2..].to_string())),
            _ => (a.clone(), None),
        };
        let Some(&(_, takes)) = EAL_OPTS.iter().find(|(o, _)| *o == opt) else {
            return Err(format!("EAL argument '{a}': unknown option (EAL arguments go before `--`, haka's after it)"));
        };
        let val = if takes {
            match inline {
                Some(v) => Some(v),
                None => {
                    i += 1;
                    Some(args.get(i).cloned().ok_or_else(|| format!("EAL argument '{a}': needs a value"))?)
                }
            }
        } else {
            None
        };
        let v = val.unwrap_or_default();
        match opt.as_str() {
            "-l" | "--lcores" => {
                let l = parse_lcore_list(&v).map_err(|e| format!("EAL argument {opt} {v}: {e}"))?;
                if let Some(bad) = l.iter().find(|&&c| c >= cpus) {
                    return Err(format!("EAL argument {opt} {v}: lcore {bad} does not exist (this machine has CPUs 0-{})", cpus - 1));
                }
            }
            "-m" | "-n" => {
                v.parse::<u64>().map_err(|_| format!("EAL argument {opt} {v}: not a number"))?;
            }
            "-a" | "--allow" => pci_device(&v)?,
            "--vdev" if v.is_empty() => return Err("EAL argument --vdev: empty device".into()),
            _ => {}
        }
        i += 1;
    }
    if !args.iter().any(|a| a == "--no-huge") {
        hugepages()?;
    }
    Ok(())
}

/// A `-a` device: exists, bound to a DPDK driver.
fn pci_device(spec: &str) -> Result<(), String> {
    let addr = spec.split(',').next().unwrap_or(spec);
    let full = if addr.matches(':').count() == 1 { format!("0000:{addr}") } else { addr.to_string() };
    let dev = Path::new("/sys/bus/pci/devices").join(&full);
    if !dev.exists() {
        return Err(format!("EAL argument -a {spec}: no PCI device {full} (list them with dpdk-devbind.py --status)"));
    }
    let driver = std::fs::read_link(dev.join("driver")).ok().and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()));
    match driver {
        Some(d) if DPDK_DRIVERS.contains(&d.as_str()) => Ok(()),
        Some(d) => Err(format!(
            "PCI device {full} is bound to the kernel driver {d}, not a DPDK one: dpdk-devbind.py --bind=vfio-pci {full} (after modprobe vfio-pci)"
        )),
        None => Err(format!("PCI device {full} is bound to no driver: dpdk-devbind.py --bind=vfio-pci {full} (after modprobe vfio-pci)")),
    }
}

fn hugetlbfs_mounted() -> bool {
    std::fs::read_to_string("/proc/mounts").map(|m| m.lines().any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"))).unwrap_or(false)
}

const HUGEPAGE_FIX: &str = "mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages && echo 1024 > /proc/sys/vm/nr_hugepages (or give EAL --no-huge)";

/// Hugepages usable by EAL.
fn hugepages() -> Result<(), String> {
    if !hugetlbfs_mounted() {
        return Err(format!("hugepages are not mounted (no hugetlbfs): {HUGEPAGE_FIX}"));
    }
    if meminfo("HugePages_Total").unwrap_or(0) == 0 {
        return Err(format!("no hugepages reserved (HugePages_Total is 0): {HUGEPAGE_FIX}"));
    }
    if meminfo("HugePages_Free").unwrap_or(0) == 0 {
        return Err("no free hugepages (another DPDK process holds them, or leftover files in /dev/hugepages: rm /dev/hugepages/rtemap_*)".into());
    }
    Ok(())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0")))
        .unwrap_or(true)
}

/// One line for an EAL initialisation failure: `err` (EAL's own cause) followed by the
/// cause found here and its fix.
pub fn explain_eal_failure(err: &str, args: &[String]) -> String {
    let args = args.get(1..).unwrap_or_default();
    let why = if !is_root() {
        Some("haka is not running as root: run it as root (sudo haka ...)".to_string())
    } else if let Err(e) = eal_args(args) {
        Some(e)
    } else if err.contains("file-prefix") || err.contains("lock") || err.contains("Cannot create lock") {
        Some("another DPDK process uses the same runtime directory: give EAL --file-prefix NAME (or --in-memory)".into())
    } else {
        None
    };
    match why {
        Some(w) => format!("{err}; cause: {w}"),
        None => err.to_string(),
    }
}

/// With no port: the `-a` devices not bound to a DPDK driver, if any, else a generic fix.
pub fn explain_no_ports(args: &[String]) -> String {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = if a == "-a" || a == "--allow" { it.next().cloned() } else { a.strip_prefix("--allow=").or_else(|| a.strip_prefix("-a").filter(|v| !v.is_empty())).map(str::to_string) };
        if let Some(v) = v {
            if let Err(e) = pci_device(&v) {
                return format!("no DPDK ports: {e}");
            }
        }
    }
    "no DPDK ports: bind a NIC to a DPDK driver (dpdk-devbind.py --bind=vfio-pci ADDRESS) and pass -a ADDRESS, or add --vdev devices".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcores_and_eal_options() {
        let a = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(lcores_in_args(&a("-l 0-1 --no-huge")), 2);
        assert_eq!(lcores_in_args(&a("-l0,2,4")), 3);
        assert_eq!(lcores_in_args(&a("-c 0xf")), 4);
        assert_eq!(lcores_in_args(&a("--no-huge")), 1);
        assert!(eal_args(&a("-l 0 --no-huge --no-shconf -m 512 --no-pci --vdev net_null0")).is_ok());
        let e = eal_args(&a("--bogus --no-huge")).unwrap_err();
        assert!(e.contains("--bogus") && e.contains("unknown option"), "{e}");
        let e = eal_args(&a("-l 0-100000 --no-huge")).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        let e = eal_args(&a("-m lots --no-huge")).unwrap_err();
        assert!(e.contains("not a number"), "{e}");
        let e = eal_args(&a("-a 0000:ff:1f.7 --no-huge")).unwrap_err();
        assert!(e.contains("dpdk-devbind"), "{e}");
    }

    #[test]
    fn flow_capacity_refused_with_bytes() {
        let mut cfg = Config::default();
        cfg.flows.capacity = 4_000_000_000;
        let e = memory(&cfg, &["-l".into(), "0".into()]).unwrap_err();
        assert!(e.starts_with("flows.capacity = 4000000000:") && e.contains("bytes") && !e.contains('\n'), "{e}");
        cfg.flows.capacity = 1024;
        cfg.mempool.mbufs = 1_000_000;
        let e = memory(&cfg, &["--no-huge".into(), "-m".into(), "256".into()]).unwrap_err();
        assert!(e.starts_with("mempool.mbufs = 1000000:"), "{e}");
        cfg.mempool.mbufs = 0;
        assert!(memory(&cfg, &["--no-huge".into(), "-m".into(), "512".into()]).is_ok());
    }
}
