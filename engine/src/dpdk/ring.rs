//! rte_ring of mbufs: how the software dispatcher hands packets to the worker
//! that owns their flow (multi-producer, single-consumer).
use super::mbuf::MbufBurst;
use std::ffi::CString;
use std::ptr::NonNull;

pub struct Ring {
    ptr: NonNull<dpdk_sys::rte_ring>,
}

// SAFETY: the ring is created MP/SC: any lcore may enqueue; only the owning
// worker dequeues (the worker code guarantees it).
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Ring {
    /// A ring holding up to `size - 1` mbufs (`size` a power of two).
    pub fn new(name: &str, size: u32, socket: i32) -> Result<Ring, String> {
        let cname = CString::new(name).map_err(|_| "bad ring name".to_string())?;
        // SAFETY: cname outlives the call. RING_F_SC_DEQ: single consumer.
        let ptr = unsafe { dpdk_sys::rte_ring_create(cname.as_ptr(), size, socket, dpdk_sys::RING_F_SC_DEQ) };
        NonNull::new(ptr)
            .map(|ptr| Ring { ptr })
            .ok_or_else(|| format!("cannot create ring {name}: {}", super::last_error()))
    }

    /// Moves as many packets of `burst` as fit into the ring; the rest stay in `burst`.
    #[inline]
    pub fn enqueue(&self, burst: &mut MbufBurst) -> usize {
        let (p, n) = burst.head_ptr();
        // SAFETY: p points to n owned mbuf pointers; the ring takes ownership
        // of the first `sent`, which `consumed` then forgets.
        let sent = unsafe { dpdk_sys::shim_ring_enqueue_burst(self.ptr.as_ptr(), p as *const *mut _, n as u32) };
        burst.consumed(sent as usize);
        sent as usize
    }

    /// Appends up to the free space of `burst` from the ring. Single consumer only.
    #[inline]
    pub fn dequeue(&self, burst: &mut MbufBurst) -> usize {
        let (p, room) = burst.tail_ptr();
        // SAFETY: p has room for `room` pointers; dequeued mbufs become owned by burst.
        let n = unsafe { dpdk_sys::shim_ring_dequeue_burst(self.ptr.as_ptr(), p as *mut *mut _, room as u32) };
        burst.commit(n as usize);
        n as usize
    }

    pub fn count(&self) -> u32 {
        // SAFETY: valid ring.
        unsafe { dpdk_sys::shim_ring_count(self.ptr.as_ptr()) }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Free whatever is still queued, then the ring.
        let mut b = MbufBurst::new();
        while self.dequeue(&mut b) > 0 {
            b.clear();
        }
        // SAFETY: no lcore uses the ring any more (its owners have returned).
        unsafe { dpdk_sys::rte_ring_free(self.ptr.as_ptr()) }
    }
}
