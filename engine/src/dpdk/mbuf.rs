//! Owned packet buffers and fixed-size bursts of them.
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// Packets per rx/tx burst.
pub const BURST: usize = 32;

const RX_RSS_HASH: u64 = 1 << 1; // RTE_MBUF_F_RX_RSS_HASH

/// Where a driver writes the rx timestamp (`rte_dynfield_timestamp`) and the
/// `ol_flags` bit that says it did: -1 / 0 until a port that stamps started.
static TS_OFFSET: AtomicI32 = AtomicI32::new(-1);
static TS_FLAG: AtomicU64 = AtomicU64::new(0);

/// Looks up the rx timestamp field (registered by a driver at start when the
/// timestamp offload was requested); no-op when none registered it.
pub(crate) fn lookup_rx_timestamp() {
    // SAFETY: lookups by NUL-terminated name; a NULL params pointer is allowed.
    let (off, bit) = unsafe {
        (
            dpdk_sys::rte_mbuf_dynfield_lookup(dpdk_sys::RTE_MBUF_DYNFIELD_TIMESTAMP_NAME.as_ptr().cast(), std::ptr::null_mut()),
            dpdk_sys::rte_mbuf_dynflag_lookup(dpdk_sys::RTE_MBUF_DYNFLAG_RX_TIMESTAMP_NAME.as_ptr().cast(), std::ptr::null_mut()),
        )
    };
    if off >= 0 && (0..64).contains(&bit) {
        TS_OFFSET.store(off, Ordering::Relaxed);
        TS_FLAG.store(1u64 << bit, Ordering::Relaxed);
    }
}

/// One packet, owned. Dropping it returns the buffer to its pool; moving it
/// into a [`super::TxBuffer`] hands it to the NIC.
#[repr(transparent)]
pub struct Mbuf(NonNull<dpdk_sys::rte_mbuf>);

// SAFETY: an mbuf is owned by exactly one Mbuf handle; mempools are MT-safe,
// so the handle may move to another lcore (the software dispatcher does).
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Bytes of the first segment (all headers are there).
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        // SAFETY: the mbuf is valid while owned; buf_addr + data_off points to
        // data_len initialised bytes of its buffer.
        unsafe {
            let m = self.0.as_ref();
            std::slice::from_raw_parts((m.buf_addr as *const u8).add(m.data_off as usize), m.data_len as usize)
        }
    }

    /// Writable bytes of the first segment (the mbuf is not shared: refcnt 1 on rx).
    #[inline(always)]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as data(); &mut self guarantees exclusive access.
        unsafe {
            let m = self.0.as_mut();
            std::slice::from_raw_parts_mut((m.buf_addr as *mut u8).add(m.data_off as usize), m.data_len as usize)
        }
    }

    /// Total packet length over all segments.
    #[inline(always)]
    pub fn pkt_len(&self) -> u32 {
        // SAFETY: valid mbuf.
        unsafe { self.0.as_ref().pkt_len }
    }

    /// Port the packet was received on.
    #[inline(always)]
    pub fn port(&self) -> u16 {
        // SAFETY: valid mbuf.
        unsafe { self.0.as_ref().port }
    }

    /// The driver's rx timestamp (net_pcap: the capture time, ns or µs since the
    /// epoch as the driver writes it), when it wrote one.
    #[inline(always)]
    pub fn rx_timestamp(&self) -> Option<u64> {
        let flag = TS_FLAG.load(Ordering::Relaxed);
        if flag == 0 {
            return None;
        }
        // SAFETY: valid mbuf; the dynamic field (8 bytes at TS_OFFSET inside the mbuf
        // structure, registered by DPDK) is read only when its flag says it was written.
        unsafe {
            let m = self.0.as_ref();
            if m.ol_flags & flag == 0 {
                return None;
            }
            let p = (m as *const dpdk_sys::rte_mbuf as *const u8).add(TS_OFFSET.load(Ordering::Relaxed) as usize);
            Some(std::ptr::read_unaligned(p as *const u64))
        }
    }

    /// Writes the rx timestamp as a driver does (a copy of a received packet keeps its
    /// time); no-op when no driver registered the field.
    #[inline(always)]
    pub fn set_rx_timestamp(&mut self, t: u64) {
        let flag = TS_FLAG.load(Ordering::Relaxed);
        if flag == 0 {
            return;
        }
        // SAFETY: valid mbuf we own; the dynamic field is 8 bytes at TS_OFFSET inside the
        // mbuf structure (registered by DPDK, as rx_timestamp reads it).
        unsafe {
            let m = self.0.as_mut();
            let p = (m as *mut dpdk_sys::rte_mbuf as *mut u8).add(TS_OFFSET.load(Ordering::Relaxed) as usize);
            std::ptr::write_unaligned(p as *mut u64, t);
            m.ol_flags |= flag;
        }
    }

    /// The NIC's RSS hash, when the NIC computed one.
    #[inline(always)]
    pub fn rss_hash(&self) -> Option<u32> {
        // SAFETY: valid mbuf; the hash union is read only when the flag says it was written.
        unsafe {
            let m = self.0.as_ref();
            (m.ol_flags & RX_RSS_HASH != 0).then(|| m.__bindgen_anon_2.hash.rss)
        }
    }

    /// Hints the CPU to load the mbuf's header (both its cache lines): a packet another
    /// worker received is in that worker's cache.
    #[inline(always)]
    pub fn prefetch_header(&self) {
        let p = self.0.as_ptr() as *const u8;
        super::prefetch(p);
        super::prefetch(p.wrapping_add(64));
    }

    /// Hints the CPU to load the packet's first cache line.
    #[inline(always)]
    pub fn prefetch_data(&self) {
        // SAFETY: reading buf_addr/data_off of a valid mbuf.
        let p = unsafe {
            let m = self.0.as_ref();
            (m.buf_addr as *const u8).add(m.data_off as usize)
        };
        super::prefetch(p);
    }
}

/// A pool handle workers can hold: the pool outlives every worker (the main
/// lcore frees it after joining them).
#[derive(Clone, Copy)]
pub struct PoolRef(NonNull<dpdk_sys::rte_mempool>);

// SAFETY: rte_mempool is MT-safe; the pointer stays valid while workers run.
unsafe impl Send for PoolRef {}
// SAFETY: as above.
unsafe impl Sync for PoolRef {}

impl PoolRef {
    pub fn of(pool: &super::Mempool) -> PoolRef {
        // SAFETY: Mempool holds a non-null pointer.
        PoolRef(unsafe { NonNull::new_unchecked(pool.as_ptr()) })
    }

    /// A new empty packet (data_len 0), or None when the pool is exhausted.
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: valid pool; the returned mbuf (if any) is owned by us.
        NonNull::new(unsafe { dpdk_sys::shim_pktmbuf_alloc(self.0.as_ptr()) }).map(Mbuf)
    }

    /// Fills the free tail of `burst` with new empty packets, all or none (false: the pool
    /// has fewer left).
    pub fn alloc_bulk(&self, burst: &mut MbufBurst) -> bool {
        let (p, n) = burst.tail_ptr();
        if n == 0 {
            return true;
        }
        // SAFETY: valid pool; `p` points to `n` free slots of the burst, which DPDK fills
        // with owned mbufs only on success (0), committed then.
        if unsafe { dpdk_sys::shim_pktmbuf_alloc_bulk(self.0.as_ptr(), p, n as u32) } != 0 {
            return false;
        }
        burst.commit(n);
        true
    }

    /// Mbufs of this pool currently allocated.
    pub fn in_use(&self) -> u32 {
        // SAFETY: valid pool.
        unsafe { dpdk_sys::shim_mempool_in_use(self.0.as_ptr()) }
    }

    /// A new packet, without headroom, holding `head` then `body` (one
    /// segment), marked as received on `port`; None when the pool is
    /// exhausted or the bytes do not fit one buffer.
    pub fn alloc_concat(&self, head: &[u8], body: &[u8], port: u16) -> Option<Mbuf> {
        let mut m = self.alloc()?;
        let len = head.len().checked_add(body.len())?;
        if !m.set_headroom(0) || !m.resize(len) {
            return None;
        }
        let d = m.data_mut();
        d[..head.len()].copy_from_slice(head);
        d[head.len()..].copy_from_slice(body);
        m.set_port(port);
        Some(m)
    }

    /// A new packet holding a copy of `bytes`, marked as received on `port`
    /// (None when the pool is exhausted or `bytes` does not fit one segment).
    pub fn alloc_with(&self, bytes: &[u8], port: u16) -> Option<Mbuf> {
        let mut m = self.alloc()?;
        if !m.resize(bytes.len()) {
            return None;
        }
        m.data_mut().copy_from_slice(bytes);
        m.set_port(port);
        Some(m)
    }
}

impl Mbuf {
    /// Bytes the first segment can hold from its data start (data + tailroom).
    #[inline]
    pub fn capacity(&self) -> usize {
        // SAFETY: valid mbuf.
        unsafe {
            let m = self.0.as_ref();
            (m.buf_len as usize).saturating_sub(m.data_off as usize)
        }
    }

    /// Sets the length of the packet's first segment, the bytes [`Mbuf::data`]
    /// shows (growing into the tailroom leaves the new bytes unspecified);
    /// `pkt_len` follows. False, unchanged, when it does not fit.
    pub fn resize(&mut self, len: usize) -> bool {
        if len > self.capacity() || len > u16::MAX as usize {
            return false;
        }
        // SAFETY: exclusive access; len within the first segment's buffer; the
        // other segments (a chain, see `chain`) are untouched.
        unsafe {
            let m = self.0.as_mut();
            m.pkt_len = m.pkt_len.saturating_sub(m.data_len as u32) + len as u32;
            m.data_len = len as u16;
        }
        true
    }

    /// Sets the port the packet counts as received on (forged packets).
    pub fn set_port(&mut self, port: u16) {
        // SAFETY: exclusive access to a valid mbuf.
        unsafe { self.0.as_mut().port = port }
    }

    /// True when the packet was allocated from `pool`.
    #[inline(always)]
    pub fn is_from(&self, pool: PoolRef) -> bool {
        // SAFETY: valid mbuf; only the pool pointer is read.
        unsafe { self.0.as_ref().pool == pool.0.as_ptr() }
    }

    /// The pool this packet came from (to allocate more packets like it).
    pub fn pool(&self) -> PoolRef {
        // SAFETY: a valid mbuf always points to the pool it was allocated from,
        // which outlives it.
        PoolRef(unsafe { NonNull::new_unchecked(self.0.as_ref().pool) })
    }

    /// Number of segments (1 unless segments were chained with [`Mbuf::chain`]).
    pub fn segments(&self) -> u16 {
        // SAFETY: valid mbuf.
        unsafe { self.0.as_ref().nb_segs }
    }

    /// True for a packet made of one segment (no `next`).
    pub fn is_single_segment(&self) -> bool {
        // SAFETY: valid mbuf.
        unsafe {
            let m = self.0.as_ref();
            m.nb_segs == 1 && m.next.is_null()
        }
    }

    /// Moves the data start of an empty packet to `headroom` bytes into its
    /// buffer (0: the whole buffer is usable). False, unchanged, when the
    /// packet is not empty or `headroom` is beyond the buffer.
    pub fn set_headroom(&mut self, headroom: u16) -> bool {
        // SAFETY: exclusive access to a valid mbuf; data_off stays within buf_len.
        unsafe {
            let m = self.0.as_mut();
            if m.data_len != 0 || m.nb_segs != 1 || headroom > m.buf_len {
                return false;
            }
            m.data_off = headroom;
        }
        true
    }

    /// Hangs `segs` (single-segment packets) after this single-segment packet,
    /// in order, as the further segments of one valid mbuf chain (`nb_segs`
    /// and `pkt_len` cover them all): whoever frees the chain frees them all.
    /// [`Mbuf::data`] still shows the first segment only. Gives `segs` back,
    /// nothing changed, when a packet is not single-segment or the chain
    /// would not fit the mbuf's counters.
    pub fn chain(&mut self, segs: Vec<Mbuf>) -> Result<(), Vec<Mbuf>> {
        let total: u64 = self.pkt_len() as u64 + segs.iter().map(|s| s.pkt_len() as u64).sum::<u64>();
        if !self.is_single_segment()
            || !segs.iter().all(Mbuf::is_single_segment)
            || segs.len() >= u16::MAX as usize
            || total > u32::MAX as u64
        {
            return Err(segs);
        }
        let mut last = self.0.as_ptr();
        let n = segs.len() as u16;
        for s in segs {
            let p = s.0.as_ptr();
            // Ownership moves into the chain: freed with it (rte_pktmbuf_free walks `next`).
            std::mem::forget(s);
            // SAFETY: `last` is this packet or a segment just moved into its chain,
            // both valid and exclusively ours; `p` is a valid single-segment mbuf.
            unsafe { (*last).next = p };
            last = p;
        }
        // SAFETY: exclusive access; counters now describe the whole chain.
        unsafe {
            let m = self.0.as_mut();
            m.nb_segs = 1 + n;
            m.pkt_len = total as u32;
        }
        Ok(())
    }

    /// Detaches every segment after the first (see [`Mbuf::chain`]) and
    /// returns them as separate packets, in chain order; this packet is left
    /// single-segment.
    pub fn unchain(&mut self) -> Vec<Mbuf> {
        let mut out = Vec::new();
        // SAFETY: exclusive access to the chain: each segment is valid, owned
        // only through this chain, and becomes an independent single-segment
        // packet (next cleared, counters reset) before it is wrapped.
        unsafe {
            let head = self.0.as_mut();
            let mut p = head.next;
            head.next = std::ptr::null_mut();
            head.nb_segs = 1;
            head.pkt_len = head.data_len as u32;
            while let Some(mut seg) = NonNull::new(p) {
                let s = seg.as_mut();
                p = s.next;
                s.next = std::ptr::null_mut();
                s.nb_segs = 1;
                s.pkt_len = s.data_len as u32;
                out.push(Mbuf(seg));
            }
        }
        out
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; it is freed exactly once.
        unsafe { dpdk_sys::shim_pktmbuf_free(self.0.as_ptr()) }
    }
}

/// Up to [`BURST`] owned packets. `slots[..len]` are filled unless taken.
pub struct MbufBurst {
    slots: [Option<Mbuf>; BURST],
    len: usize,
}

impl Default for MbufBurst {
    fn default() -> Self {
        Self::new()
    }
}

impl MbufBurst {
    pub fn new() -> MbufBurst {
        MbufBurst { slots: [const { None }; BURST], len: 0 }
    }

    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline(always)]
    pub fn is_full(&self) -> bool {
        self.len == BURST
    }

    /// Appends a packet; gives it back when the burst is full.
    #[inline(always)]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == BURST {
            return Err(m);
        }
        self.slots[self.len] = Some(m);
        self.len += 1;
        Ok(())
    }

    /// The packet in slot `i`, if present.
    #[inline(always)]
    pub fn get(&self, i: usize) -> Option<&Mbuf> {
        self.slots.get(i).and_then(Option::as_ref)
    }

    /// Takes the packet out of slot `i` (the slot stays counted until `clear`).
    #[inline(always)]
    pub fn take(&mut self, i: usize) -> Option<Mbuf> {
        self.slots.get_mut(i).and_then(Option::take)
    }

    /// The slots, for handing several packets' bytes out at once.
    #[inline(always)]
    pub fn slots_mut(&mut self) -> &mut [Option<Mbuf>] {
        &mut self.slots[..self.len]
    }

    /// Puts a packet back into slot `i` (below `len`, emptied by `take`);
    /// gives it back when the slot is not free.
    #[inline]
    pub fn put(&mut self, i: usize, m: Mbuf) -> Result<(), Mbuf> {
        match self.slots[..self.len].get_mut(i) {
            Some(slot @ None) => {
                *slot = Some(m);
                Ok(())
            }
            _ => Err(m),
        }
    }

    /// Takes the last packet out (its slot no longer counted).
    #[inline(always)]
    pub fn pop(&mut self) -> Option<Mbuf> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        self.slots[self.len].take()
    }

    /// Frees what is left (in one call) and empties the burst.
    pub fn clear(&mut self) {
        // (compacted to the front of the slots, in place: they are pointers)
        let mut n = 0;
        for i in 0..self.len {
            if self.slots[i].is_some() {
                self.slots.swap(n, i);
                n += 1;
            }
        }
        self.len = 0;
        if n > 0 {
            let p = self.slots.as_mut_ptr() as *mut *mut dpdk_sys::rte_mbuf;
            // SAFETY: slots[..n] hold owned mbufs (Option<Mbuf> has the layout of a
            // pointer, see `tail_ptr`); they are freed once here, then forgotten.
            unsafe { dpdk_sys::shim_pktmbuf_free_bulk(p, n as u32) }
            for s in &mut self.slots[..n] {
                std::mem::forget(s.take());
            }
        }
    }

    /// Pointer to the free tail, for PMD/ring calls that fill it.
    pub(super) fn tail_ptr(&mut self) -> (*mut *mut dpdk_sys::rte_mbuf, usize) {
        // Option<Mbuf> has the layout of *mut rte_mbuf (NonNull niche, repr(transparent)).
        let p = self.slots[self.len..].as_mut_ptr() as *mut *mut dpdk_sys::rte_mbuf;
        (p, BURST - self.len)
    }

    /// Records that the PMD wrote `n` valid mbuf pointers at the tail.
    pub(super) fn commit(&mut self, n: usize) {
        debug_assert!(self.len + n <= BURST);
        debug_assert!(self.slots[self.len..self.len + n].iter().all(Option::is_some));
        self.len += n;
    }

    /// Pointer to slots[..len] (all filled) for tx/enqueue.
    pub(super) fn head_ptr(&mut self) -> (*mut *mut dpdk_sys::rte_mbuf, usize) {
        debug_assert!(self.slots[..self.len].iter().all(Option::is_some));
        (self.slots.as_mut_ptr() as *mut *mut dpdk_sys::rte_mbuf, self.len)
    }

    /// The first `n` packets now belong to someone else (NIC, ring): forget
    /// them without freeing, and shift the rest down.
    pub(super) fn consumed(&mut self, n: usize) {
        for s in &mut self.slots[..n] {
            std::mem::forget(s.take());
        }
        self.slots[..self.len].rotate_left(n);
        self.len -= n;
    }
}

impl Drop for MbufBurst {
    fn drop(&mut self) {
        self.clear();
    }
}
