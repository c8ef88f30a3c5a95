//! EAL initialisation, lcores and time.
use std::ffi::{c_int, c_void, CString};

/// An initialised EAL. Dropping it runs `rte_eal_cleanup` (after everything
/// else using DPDK has been dropped).
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Initialises the EAL with `args` (args[0] is the program name).
    /// Errors are one line; EAL's own log says more.
    pub fn init(args: &[String]) -> Result<Eal, String> {
        let cstrings: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_str()).map_err(|_| format!("EAL argument contains a NUL byte: {a:?}")))
            .collect::<Result<_, _>>()?;
        // EAL keeps pointers into argv for the life of the process: leak them.
        let mut argv: Vec<*mut std::ffi::c_char> = cstrings.into_iter().map(|c| c.into_raw()).collect();
        let argc = argv.len() as c_int;
        argv.push(std::ptr::null_mut());
        let argv = Box::leak(argv.into_boxed_slice());
        // EAL prints usage text and log lines on failure; capture them so the
        // error is one line, and replay them on success.
        let capture = OutputCapture::start();
        // SAFETY: argv is a NULL-terminated array of valid, leaked C strings;
        // rte_eal_init is called once per process (callers guarantee it).
        let ret = unsafe { dpdk_sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        let text = capture.map(OutputCapture::finish).unwrap_or_default();
        if ret < 0 {
            // EAL's informational lines say nothing of the failure: prefer a line that
            // reads as an error, else the first line that is not one of them.
            let info = |l: &str| {
                l.is_empty()
                    || l.starts_with("EAL: Detected")
                    || l.starts_with("EAL: Selected")
                    || l.starts_with("EAL: Physical")
                    || l.starts_with("EAL: Multi-process socket")
                    || l.starts_with("EAL: FATAL")
                    || l.starts_with("Usage:")
            };
            let errorish = |l: &str| {
                let l = l.to_ascii_lowercase();
                ["cannot", "failed", "error", "unable", "no available", "not ", "unrecognized", "invalid", "permission", "denied"]
                    .iter()
                    .any(|w| l.contains(w))
            };
            let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !info(l)).collect();
            let cause = lines
                .iter()
                .copied()
                .find(|l| errorish(l))
                .or_else(|| lines.first().copied())
                .map(|l| l.strip_prefix(&format!("{}: ", args[0])).unwrap_or(l).to_string())
                .unwrap_or_else(super::last_error);
            return Err(format!("EAL initialisation failed: {cause} (EAL arguments: {})", args[1..].join(" ")));
        }
        eprint!("{text}");
        Ok(Eal { _private: () })
    }
}

/// Whether EAL runs with a shared configuration that secondary processes can attach to
/// (`dpdk-dumpcap`, `dpdk-proc-info`): not with `--no-shconf` or `--in-memory`.
pub fn shared_config(eal_args: &[String]) -> bool {
    !eal_args.iter().any(|a| a == "--no-shconf" || a == "--in-memory")
}

/// Lets `dpdk-dumpcap` (a secondary process of the same `--file-prefix`) capture this
/// primary process's ports: pdump's multi-process handler is registered (its rx/tx
/// callbacks are installed only while a capture runs). Call once, after EAL init.
pub fn pdump_init() -> Result<(), String> {
    // SAFETY: plain call without arguments; EAL is initialised (an `Eal` exists) and
    // this runs once, on the main thread, before the workers start.
    let ret = unsafe { dpdk_sys::rte_pdump_init() };
    if ret < 0 {
        return Err(format!("rte_pdump_init: {}", super::last_error()));
    }
    Ok(())
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: all lcores have returned and DPDK objects were released by
        // their owners before the Eal handle (it is dropped last).
        unsafe {
            dpdk_sys::rte_eal_cleanup();
        }
    }
}

/// Redirects the process's stdout and stderr (fds 1 and 2) into an unlinked
/// temporary file until `finish`.
struct OutputCapture {
    file: std::fs::File,
    saved_out: c_int,
    saved_err: c_int,
}

impl OutputCapture {
    fn start() -> Option<OutputCapture> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        // An anonymous file (O_TMPFILE), else a new one (O_EXCL, 0600) unlinked at once:
        // never a predictable name opened with truncation (a planted symlink).
        let dir = std::env::temp_dir();
        let file = match std::fs::OpenOptions::new().read(true).write(true).mode(0o600).custom_flags(libc::O_TMPFILE).open(&dir) {
            Ok(f) => f,
            Err(_) => {
                let path = dir.join(format!("haka-eal-{}.log", std::process::id()));
                let f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path).ok()?;
                let _ = std::fs::remove_file(&path);
                f
            }
        };
        // SAFETY: dup/dup2 on valid descriptors; stdio is flushed first so
        // nothing buffered lands in the wrong place.
        unsafe {
            libc::fflush(std::ptr::null_mut());
            let saved_out = libc::dup(1);
            let saved_err = libc::dup(2);
            if saved_out < 0 || saved_err < 0 {
                return None;
            }
            libc::dup2(file.as_raw_fd(), 1);
            libc::dup2(file.as_raw_fd(), 2);
            Some(OutputCapture { file, saved_out, saved_err })
        }
    }

    fn finish(mut self) -> String {
        use std::io::{Read, Seek};
        // SAFETY: restores the descriptors saved by start().
        unsafe {
            libc::fflush(std::ptr::null_mut());
            libc::dup2(self.saved_out, 1);
            libc::dup2(self.saved_err, 2);
            libc::close(self.saved_out);
            libc::close(self.saved_err);
        }
        let mut text = String::new();
        let _ = self.file.rewind();
        let _ = self.file.read_to_string(&mut text);
        text
    }
}

/// Id of the calling lcore.
pub fn lcore_id() -> u32 {
    // SAFETY: reads a per-thread variable.
    unsafe { dpdk_sys::shim_lcore_id() }
}

pub fn main_lcore() -> u32 {
    // SAFETY: plain getter, valid after EAL init.
    unsafe { dpdk_sys::rte_get_main_lcore() }
}

/// Enabled lcores other than the main one, in order.
pub fn worker_lcores() -> Vec<u32> {
    let mut out = Vec::new();
    // SAFETY: rte_get_next_lcore iterates the EAL's lcore config; valid after init.
    let mut id = unsafe { dpdk_sys::rte_get_next_lcore(u32::MAX, 1, 0) };
    while id < dpdk_sys::RTE_MAX_LCORE {
        out.push(id);
        // SAFETY: as above.
        id = unsafe { dpdk_sys::rte_get_next_lcore(id, 1, 0) };
    }
    out
}

pub fn socket_id_any() -> i32 {
    dpdk_sys::SOCKET_ID_ANY
}

/// Time stamp counter: one instruction, for per-burst clocks.
#[inline(always)]
pub fn tsc() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86_64.
    unsafe { core::arch::x86_64::_rdtsc() }
}

pub fn tsc_hz() -> u64 {
    // SAFETY: plain getter, valid after EAL init.
    unsafe { dpdk_sys::shim_tsc_hz() }
}

/// Prefetches the cache line at `ptr` into all cache levels.
#[inline(always)]
pub fn prefetch<T>(ptr: *const T) {
    // SAFETY: prefetch is a hint; any address is allowed, it never faults.
    unsafe { core::arch::x86_64::_mm_prefetch(ptr as *const i8, core::arch::x86_64::_MM_HINT_T0) }
}

/// Asks for the cache line at `ptr` in a state it can be written in (PREFETCHW): a line
/// another core read last is then taken over before the store that needs it.
#[inline(always)]
pub fn prefetch_write<T>(ptr: *const T) {
    // SAFETY: prefetchw is a hint; any address is allowed, it never faults, and it
    // changes no register or memory contents.
    unsafe { core::arch::asm!("prefetchw [{0}]", in(reg) ptr, options(nostack, preserves_flags, readonly)) }
}

type Job = Box<dyn FnOnce() -> i32 + Send>;

extern "C" fn run_job(arg: *mut c_void) -> c_int {
    // SAFETY: arg is the Box<Job> leaked by launch_on, consumed exactly once here.
    let job: Box<Job> = unsafe { Box::from_raw(arg as *mut Job) };
    // A panic must not unwind into C.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || job())) {
        Ok(rc) => rc,
        Err(_) => {
            eprintln!("haka: error: worker on lcore {} panicked", lcore_id());
            -1
        }
    }
}

/// Runs `f` on worker lcore `lcore` (which must be idle).
pub fn launch_on(lcore: u32, f: impl FnOnce() -> i32 + Send + 'static) -> Result<(), String> {
    let job: Box<Job> = Box::new(Box::new(f));
    let arg = Box::into_raw(job) as *mut c_void;
    // SAFETY: run_job has the lcore_function_t signature and takes ownership of arg.
    let ret = unsafe { dpdk_sys::rte_eal_remote_launch(Some(run_job), arg, lcore) };
    if ret != 0 {
        // SAFETY: the launch failed, so run_job will never see arg: reclaim it.
        drop(unsafe { Box::from_raw(arg as *mut Job) });
        return Err(format!("cannot launch a worker on lcore {lcore}: {}", super::errno_str(ret)));
    }
    Ok(())
}

/// Waits for every worker lcore to return.
pub fn wait_all_lcores() {
    // SAFETY: called from the main lcore after launching.
    unsafe { dpdk_sys::rte_eal_mp_wait_lcore() }
}

/// CPU time consumed by the calling thread, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
