//! Timer wheel for incremental flow expiry.
//!
//! A ring of `slots` lists, one per tick. A node is filed in the slot of the tick at
//! which it should be looked at again; the lists are intrusive (circular, doubly linked
//! through `u32` node indices stored in the nodes themselves), so filing and unfiling
//! are O(1) and never allocate. A two-level bitmap of non-empty slots makes finding
//! the next due slot a few bit operations.
//!
//! The wheel is lazy: it does not know real deadlines. Its owner files a node at the
//! tick of the deadline known at filing time and, when the slot comes due, checks the
//! real deadline and either ends the node or files it again.
//!
//! Window invariant: every filed node has a tick in `[cursor, cursor + slots - 1]`, so a
//! slot position maps to exactly one tick. Deadlines past the horizon are filed in the
//! last slot of the window and re-filed when it comes due.

/// "No node" / "not filed".
pub(crate) const NIL: u32 = u32::MAX;

/// Largest supported ring (one summary word of 64 words of 64 bits).
pub const MAX_SLOTS: usize = 4096;

/// Per-node wheel links, embedded in the node.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Links {
    pub next: u32,
    pub prev: u32,
    /// Slot the node is filed in, `NIL` when not filed.
    pub slot: u32,
}

impl Links {
    pub const UNFILED: Links = Links { next: NIL, prev: NIL, slot: NIL };
}

pub(crate) trait WheelNode {
    fn links(&self) -> &Links;
    fn links_mut(&mut self) -> &mut Links;
}

pub(crate) struct Wheel {
    tick_ms: u64,
    mask: usize,
    /// First node of each slot's circular list (`head.prev` is the tail), `NIL` if empty.
    heads: Vec<u32>,
    /// Bit `s` set iff slot `s` is non-empty.
    words: Vec<u64>,
    /// Bit `w` set iff `words[w] != 0`.
    summary: u64,
    /// Next tick to process: every tick before it has been processed.
    cursor: u64,
    filed: usize,
}

impl Wheel {
    /// `slots` must be a power of two in `64..=MAX_SLOTS`, `tick_ms` >= 1.
    pub fn new(tick_ms: u64, slots: usize) -> Wheel {
        assert!(tick_ms >= 1, "wheel tick must be >= 1 ms");
        assert!(
            slots.is_power_of_two() && (64..=MAX_SLOTS).contains(&slots),
            "wheel slots must be a power of two in 64..={MAX_SLOTS}"
        );
        Wheel {
            tick_ms,
            mask: slots - 1,
            heads: vec![NIL; slots],
            words: vec![0; slots / 64],
            summary: 0,
            cursor: 0,
            filed: 0,
        }
    }

    pub fn memory_bytes(&self) -> usize {
        self.heads.capacity() * std::mem::size_of::<u32>() + self.words.capacity() * std::mem::size_of::<u64>()
    }

    pub fn tick_ms(&self) -> u64 {
        self.tick_ms
    }

    pub fn slots(&self) -> usize {
        self.mask + 1
    }

    #[cfg(test)]
    pub fn filed(&self) -> usize {
        self.filed
    }

    /// Tick containing `ms`.
    #[inline]
    pub fn tick_of(&self, ms: u64) -> u64 {
        ms / self.tick_ms
    }

    /// First tick at whose start `deadline_ms` has passed.
    #[inline]
    pub fn deadline_tick(&self, deadline_ms: u64) -> u64 {
        deadline_ms.div_ceil(self.tick_ms)
    }

    /// The tick a node asking for `tick` would be filed at now (clamped to the window).
    #[inline]
    pub fn clamp(&self, tick: u64) -> u64 {
        tick.clamp(self.cursor, self.cursor + self.mask as u64)
    }

    #[inline]
    fn set_bit(&mut self, s: usize) {
        self.words[s >> 6] |= 1 << (s & 63);
        self.summary |= 1 << (s >> 6);
    }

    #[inline]
    fn clear_bit(&mut self, s: usize) {
        let w = s >> 6;
        self.words[w] &= !(1 << (s & 63));
        if self.words[w] == 0 {
            self.summary &= !(1 << w);
        }
    }

    /// First non-empty slot at position >= `p`, without wrapping.
    #[inline]
    fn find_from(&self, p: usize) -> Option<usize> {
        let w = p >> 6;
        let m = self.words[w] & (!0u64 << (p & 63));
        if m != 0 {
            return Some((w << 6) | m.trailing_zeros() as usize);
        }
        let above = if w + 1 < 64 { self.summary & (!0u64 << (w + 1)) } else { 0 };
        if above != 0 {
            let w2 = above.trailing_zeros() as usize;
            return Some((w2 << 6) | self.words[w2].trailing_zeros() as usize);
        }
        None
    }

    /// Earliest non-empty slot at or after the cursor, and its tick.
    #[inline]
    fn first_slot(&self) -> Option<(usize, u64)> {
        if self.summary == 0 {
            return None;
        }
        let p = (self.cursor as usize) & self.mask;
        let s = match self.find_from(p) {
            Some(s) => s,
            None => self.find_from(0)?,
        };
        let tick = self.cursor + (s.wrapping_sub(p) & self.mask) as u64;
        Some((s, tick))
    }

    /// Files node `i` (not currently filed) at `tick`, clamped to the window, at the
    /// tail of its slot. `now_ms` lets an empty wheel move its cursor forward.
    #[inline]
    pub fn insert<N: WheelNode>(&mut self, nodes: &mut [N], i: u32, tick: u64, now_ms: u64) {
        if self.filed == 0 {
            // Nothing filed: the window can jump to the present at no cost.
            self.cursor = self.cursor.max(self.tick_of(now_ms));
        }
        let s = (self.clamp(tick) as usize) & self.mask;
        let head = self.heads[s];
        if head == NIL {
            *nodes[i as usize].links_mut() = Links { next: i, prev: i, slot: s as u32 };
            self.heads[s] = i;
            self.set_bit(s);
        } else {
            let tail = nodes[head as usize].links().prev;
            *nodes[i as usize].links_mut() = Links { next: head, prev: tail, slot: s as u32 };
            nodes[tail as usize].links_mut().next = i;
            nodes[head as usize].links_mut().prev = i;
        }
        self.filed += 1;
    }

    /// Unfiles node `i` (which must be filed).
    #[inline]
    pub fn remove<N: WheelNode>(&mut self, nodes: &mut [N], i: u32) {
        let l = *nodes[i as usize].links();
        debug_assert!(l.slot != NIL, "removing an unfiled node");
        let s = l.slot as usize;
        if l.next == i {
            self.heads[s] = NIL;
            self.clear_bit(s);
        } else {
            nodes[l.prev as usize].links_mut().next = l.next;
            nodes[l.next as usize].links_mut().prev = l.prev;
            if self.heads[s] == i {
                self.heads[s] = l.next;
            }
        }
        *nodes[i as usize].links_mut() = Links::UNFILED;
        self.filed -= 1;
    }

    /// The first node of the earliest non-empty slot and that slot's tick, or None
    /// when nothing is filed.
    #[inline]
    pub fn first(&self) -> Option<(u32, u64)> {
        self.first_slot().map(|(s, t)| (self.heads[s], t))
    }

    /// Unfiles and returns the first node of the earliest slot whose tick is
    /// `<= now_tick`, advancing the cursor over empty slots; None when nothing is due
    /// (the cursor is then `now_tick + 1`).
    pub fn pop_due<N: WheelNode>(&mut self, nodes: &mut [N], now_tick: u64) -> Option<u32> {
        if self.cursor > now_tick {
            return None;
        }
        let slots = self.mask as u64 + 1;
        if now_tick - self.cursor >= slots {
            // The whole window is overdue (expire was not called for a long time): slide
            // it to end at `now_tick`. Every filed node stays due, and what gets re-filed
            // lands in a later slot as the cursor moves on.
            self.cursor = now_tick + 1 - slots;
        }
        match self.first_slot() {
            Some((s, tick)) if tick <= now_tick => {
                self.cursor = tick;
                let i = self.heads[s];
                self.remove(nodes, i);
                Some(i)
            }
            _ => {
                self.cursor = now_tick + 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct N(Links);
    impl WheelNode for N {
        fn links(&self) -> &Links {
            &self.0
        }
        fn links_mut(&mut self) -> &mut Links {
            &mut self.0
        }
    }

    fn nodes(n: usize) -> Vec<N> {
        (0..n).map(|_| N(Links::UNFILED)).collect()
    }

    #[test]
    fn wheel_pops_in_tick_order_fifo_within_slot() {
        let mut w = Wheel::new(10, 64);
        let mut ns = nodes(6);
        w.insert(&mut ns, 0, 5, 0);
        w.insert(&mut ns, 1, 3, 0);
        w.insert(&mut ns, 2, 5, 0);
        w.insert(&mut ns, 3, 200, 0); // beyond the horizon: clamped to tick 63
        w.insert(&mut ns, 4, 3, 0);
        assert_eq!(w.first(), Some((1, 3)));
        assert_eq!(w.pop_due(&mut ns, 2), None);
        let mut got = vec![];
        while let Some(i) = w.pop_due(&mut ns, 63) {
            got.push(i);
        }
        assert_eq!(got, vec![1, 4, 0, 2, 3]);
        assert_eq!(w.filed(), 0);
        assert!(ns.iter().all(|n| n.0.slot == NIL));
    }

    #[test]
    fn wheel_remove_middle_and_wrap() {
        let mut w = Wheel::new(1, 64);
        let mut ns = nodes(4);
        for i in 0..3 {
            w.insert(&mut ns, i, 10, 0);
        }
        w.remove(&mut ns, 1);
        w.remove(&mut ns, 0);
        assert_eq!(w.first(), Some((2, 10)));
        assert_eq!(w.pop_due(&mut ns, 10), Some(2));
        assert_eq!(w.pop_due(&mut ns, 60), None);
        // cursor is now 61: tick 100 maps to slot 36 < 61 % 64, found by wrapping
        w.insert(&mut ns, 3, 100, 60);
        assert_eq!(w.first(), Some((3, 100)));
        assert_eq!(w.pop_due(&mut ns, 99), None);
        assert_eq!(w.pop_due(&mut ns, 100), Some(3));
    }

    #[test]
    fn wheel_window_slides_after_long_gap() {
        let mut w = Wheel::new(1, 64);
        let mut ns = nodes(2);
        w.insert(&mut ns, 0, 5, 0);
        w.insert(&mut ns, 1, 50, 0);
        // huge jump: both overdue, popped in window order
        assert_eq!(w.pop_due(&mut ns, 1_000_000), Some(0));
        // re-filing one far ahead while the window is behind: clamped, found again later
        w.insert(&mut ns, 0, 2_000_000, 1_000_000);
        assert_eq!(w.pop_due(&mut ns, 1_000_000), Some(1));
        assert_eq!(w.pop_due(&mut ns, 1_000_000), None);
        assert_eq!(w.first(), Some((0, 1_000_004)));
        assert_eq!(w.pop_due(&mut ns, 1_000_004), Some(0));
    }
}
