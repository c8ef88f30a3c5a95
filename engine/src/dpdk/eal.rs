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
        // SAFETY: argv is a NULL-terminated array of valid, leaked C strings;
        // rte_eal_init is called once per process (callers guarantee it).
        let ret = unsafe { dpdk_sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            return Err(format!(
                "EAL initialisation failed ({}); check the EAL arguments: {}",
                super::last_error(),
                args[1..].join(" ")
            ));
        }
        Ok(Eal { _private: () })
    }
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
