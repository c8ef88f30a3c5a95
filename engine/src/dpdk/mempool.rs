//! Packet-buffer pools.
use std::ffi::CString;
use std::ptr::NonNull;

pub struct Mempool {
    ptr: NonNull<dpdk_sys::rte_mempool>,
    size: u32,
}

// SAFETY: rte_mempool is designed for concurrent use from all lcores.
unsafe impl Send for Mempool {}
// SAFETY: as above.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// A pktmbuf pool of `n` mbufs with `data_room` bytes each (headroom included).
    pub fn new_pktmbuf(name: &str, n: u32, cache: u32, data_room: u16, socket: i32) -> Result<Mempool, String> {
        let cname = CString::new(name).map_err(|_| "bad mempool name".to_string())?;
        // SAFETY: cname outlives the call; DPDK copies the name.
        let ptr = unsafe { dpdk_sys::rte_pktmbuf_pool_create(cname.as_ptr(), n, cache, 0, data_room, socket) };
        NonNull::new(ptr)
            .map(|ptr| Mempool { ptr, size: n })
            .ok_or_else(|| {
                format!(
                    "cannot create a pool of {n} mbufs ({}); give EAL more memory (-m) or lower [mempool] mbufs",
                    super::last_error()
                )
            })
    }

    pub fn as_ptr(&self) -> *mut dpdk_sys::rte_mempool {
        self.ptr.as_ptr()
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    /// Mbufs currently allocated (0 after a clean run: nothing leaked).
    pub fn in_use(&self) -> u32 {
        // SAFETY: the pool is alive for &self.
        unsafe { dpdk_sys::shim_mempool_in_use(self.ptr.as_ptr()) }
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: ports using the pool were closed by their owners first.
        unsafe { dpdk_sys::rte_mempool_free(self.ptr.as_ptr()) }
    }
}
