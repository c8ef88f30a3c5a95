//! Hash index of the flow table: fixed-size, cache-line buckets of 8 (tag, slab index)
//! pairs, linear probing between buckets with per-bucket overflow counts (no
//! tombstones, never rehashes, never allocates after creation).
//!
//! A lookup reads the home bucket (one cache line) and then the slab entries whose
//! 16-bit tag matches: about one slab access per lookup. A bucket is probed past only
//! when its overflow count says that some entry homed at or before it lives further.

/// Slots per bucket.
const SLOTS: usize = 8;
/// Tag of an empty slot.
const EMPTY: u16 = 0;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    tags: [u16; SLOTS],
    ids: [u32; SLOTS],
    /// Number of entries that probed past this bucket (homed here or before, living after).
    overflow: u32,
}

impl Bucket {
    const NEW: Bucket = Bucket { tags: [EMPTY; SLOTS], ids: [0; SLOTS], overflow: 0 };

    /// Bit k set iff `tags[k] == tag`.
    #[inline(always)]
    fn matches(&self, tag: u16) -> u32 {
        let mut m = 0u32;
        for k in 0..SLOTS {
            m |= ((self.tags[k] == tag) as u32) << k;
        }
        m
    }
}

pub(crate) struct FlowIndex {
    buckets: Vec<Bucket>,
    mask: usize,
}

impl FlowIndex {
    /// An index for up to `capacity` entries, at most half of its slots used.
    pub fn with_capacity(capacity: usize) -> FlowIndex {
        let n = (capacity * 2).div_ceil(SLOTS).next_power_of_two().max(2);
        FlowIndex { buckets: vec![Bucket::NEW; n], mask: n - 1 }
    }

    pub fn memory_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Bucket>()
    }

    #[inline(always)]
    fn split(&self, hash: u64) -> (usize, u16) {
        let tag = (hash >> 48) as u16;
        (hash as usize & self.mask, if tag == EMPTY { 1 } else { tag })
    }

    /// Prefetches the home bucket of `hash` (issue it for a whole burst first, so
    /// the cache misses overlap).
    #[inline(always)]
    pub fn prefetch(&self, hash: u64) {
        crate::dpdk::prefetch(&self.buckets[hash as usize & self.mask] as *const Bucket);
    }

    /// The first index in the home bucket whose tag matches `hash` (prefetch helper).
    #[inline(always)]
    pub fn candidate(&self, hash: u64) -> Option<u32> {
        let (b, tag) = self.split(hash);
        let bk = &self.buckets[b];
        let m = bk.matches(tag);
        (m != 0).then(|| bk.ids[m.trailing_zeros() as usize])
    }

    /// The index stored for `hash` for which `eq` holds.
    #[inline(always)]
    pub fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let (mut b, tag) = self.split(hash);
        loop {
            let bk = &self.buckets[b];
            let mut m = bk.matches(tag);
            while m != 0 {
                let id = bk.ids[m.trailing_zeros() as usize];
                if eq(id) {
                    return Some(id);
                }
                m &= m - 1;
            }
            if bk.overflow == 0 {
                return None;
            }
            b = (b + 1) & self.mask;
        }
    }

    /// Adds `id` under `hash` (the caller guarantees it is not there and that the
    /// index holds fewer than its capacity).
    #[inline]
    pub fn insert(&mut self, hash: u64, id: u32) {
        let (mut b, tag) = self.split(hash);
        loop {
            let bk = &mut self.buckets[b];
            let free = bk.matches(EMPTY);
            if free != 0 {
                let k = free.trailing_zeros() as usize;
                bk.tags[k] = tag;
                bk.ids[k] = id;
                return;
            }
            bk.overflow += 1;
            b = (b + 1) & self.mask;
        }
    }

    /// Removes `id`, stored under `hash`. Returns false if it was not there.
    #[inline]
    pub fn remove(&mut self, hash: u64, id: u32) -> bool {
        let (home, tag) = self.split(hash);
        let mut b = home;
        loop {
            let bk = &mut self.buckets[b];
            let mut m = bk.matches(tag);
            while m != 0 {
                let k = m.trailing_zeros() as usize;
                if bk.ids[k] == id {
                    bk.tags[k] = EMPTY;
                    // undo the overflow counts of the buckets probed past
                    let mut p = home;
                    while p != b {
                        self.buckets[p].overflow -= 1;
                        p = (p + 1) & self.mask;
                    }
                    return true;
                }
                m &= m - 1;
            }
            if bk.overflow == 0 {
                return false;
            }
            b = (b + 1) & self.mask;
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.matches(EMPTY).count_zeros() as usize - (32 - SLOTS)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_insert_find_remove_with_overflow() {
        let mut ix = FlowIndex::with_capacity(32); // 8 buckets
        assert_eq!(ix.buckets.len(), 8);
        // 20 entries all homed at bucket 3 with the same tag: two overflow buckets
        let h = |_: u32| 3u64 | (0xabcd << 48);
        for i in 0..20 {
            ix.insert(h(i), i);
        }
        assert_eq!(ix.len(), 20);
        assert_eq!(ix.buckets[3].overflow, 12);
        assert_eq!(ix.buckets[4].overflow, 4);
        for i in 0..20 {
            assert_eq!(ix.find(h(i), |id| id == i), Some(i));
        }
        assert_eq!(ix.find(h(0), |id| id == 99), None);
        // a different home bucket sees no entry
        assert_eq!(ix.find(2 | (0xabcd << 48), |_| true), None);
        for i in (0..20).step_by(2) {
            assert!(ix.remove(h(i), i));
        }
        assert!(!ix.remove(h(0), 0));
        assert_eq!(ix.len(), 10);
        for i in 0..20 {
            assert_eq!(ix.find(h(i), |id| id == i).is_some(), i % 2 == 1, "{i}");
        }
        for i in (1..20).step_by(2) {
            assert!(ix.remove(h(i), i));
        }
        assert!(ix.buckets.iter().all(|b| b.overflow == 0));
        assert_eq!(ix.len(), 0);
        // zero tag is remapped, not confused with empty
        ix.insert(5, 77);
        assert_eq!(ix.find(5, |id| id == 77), Some(77));
    }

    #[test]
    fn index_wraps_around() {
        let mut ix = FlowIndex::with_capacity(32);
        for i in 0..12 {
            ix.insert(7 | (1 << 48), i);
        }
        assert_eq!(ix.buckets[0].tags.iter().filter(|&&t| t != EMPTY).count(), 4);
        for i in 0..12 {
            assert_eq!(ix.find(7 | (1 << 48), |id| id == i), Some(i));
            assert!(ix.remove(7 | (1 << 48), i));
        }
        assert_eq!(ix.buckets[7].overflow, 0);
    }
}
