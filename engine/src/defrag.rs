//! IPv4 and IPv6 fragment reassembly (one [`Defragmenter`] per worker).
//!
//! Overlaps, by default: overlapping or out-of-bounds fragments invalidate the datagram:
//! every fragment buffered for it is dropped and [`DefragResult::Invalid`] is returned; the
//! caller raises the alert "invalid ipv4 fragment (...)" and drops the packet. With
//! [`Defragmenter::set_haka_overlaps`] (IPv4), Haka 0.4's handling instead (its ipv4 module
//! and its fragment_overlap captures): fragments are kept as they come; the datagram is
//! complete when the fragments, by offset, leave no gap up to the end given by the last
//! one; the lowest offset's data wins (at equal offsets, the latest fragment's); a fragment
//! at or after the last one's offset is rejected ([`DefragError::AfterLast`], the caller
//! alerts "invalid ipv4 fragment"); [`Defragmenter::pieces`] tells which part each fragment
//! gave.
//! Kept from Haka:
//! - `dont_reassemble` is a per-packet decision of the caller: it simply does not call
//!   [`Defragmenter::push_ipv4`] for such packets.
//!
//! Added over Haka (which kept incomplete datagrams forever): a timeout measured from the
//! first fragment ([`Defragmenter::expire`]), and hard bounds on the number of datagrams in
//! progress and on the buffered bytes (the oldest datagram is evicted when full).
//!
//! Allocation: fragments are rare, so this module allocates (one `Vec` per buffered
//! fragment, one per reassembled datagram). Memory stays bounded by [`DefragConfig`]: every
//! buffered fragment is accounted as its payload length plus [`FRAGMENT_OVERHEAD`] bytes,
//! plus the stored header of the datagram, and `bytes <= max_bytes` always holds. The fixed
//! per-datagram state (a few hundred bytes) is bounded by `max_datagrams`; the age queue and
//! the release notices are bounded too (compaction, cap).
//!
//! Caller protocol (holding the original fragments, e.g. to transmit them later): after each
//! push, [`Defragmenter::last_datagram`] names the datagram concerned (`Pending`: hold the
//! fragment under that id; `Complete`: the held fragments of that id are the datagram's;
//! `Invalid`: drop them and alert); [`Defragmenter::take_released`] reports datagrams freed by
//! the timeout or eviction (release or drop their held fragments).
//!
//! Choices:
//! - A fragment identical to one already buffered (same offset, same bytes) is a benign
//!   retransmission: it is absorbed ([`DefragResult::Pending`], counter `duplicates`) and
//!   counted in the `fragments` of the final [`DefragResult::Complete`] (so a caller that
//!   holds every `Pending` fragment knows how many it holds). A fragment at an already used
//!   offset with different bytes or length is an [`DefragError::Overlap`]. A copy arriving
//!   after its datagram completed starts a new datagram (which then times out).
//! - A non-last fragment (MF set) whose payload is empty or not a multiple of 8 bytes is
//!   [`DefragError::Malformed`]; that fragment alone is rejected (the datagram is kept).
//! - Two last fragments disagreeing on the end, data beyond the end given by the last
//!   fragment, or a datagram longer than 65535 bytes: [`DefragError::OutOfBounds`].
//! - The reassembled header is the one of the offset-0 fragment (IPv4 options included;
//!   IPv6 unfragmentable extension headers included).
//! - IPv6 atomic fragments (offset 0, M=0, RFC 6946) are returned `Complete` at once with the
//!   Fragment header removed, without touching the table.
//! - IPv6 key: (src, dst, identification) as RFC 8200 (the next header is taken from the
//!   offset-0 fragment).
//! - Time is expected to be monotonic; if it goes backwards, expiry is only delayed.
#![deny(unsafe_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::wire::ipv6::{is_ext_header, MAX_EXT_HEADERS};
use crate::wire::{ip_proto, Ipv4Packet, Ipv6ExtHeader, Ipv6FragmentHeader, Ipv6Packet};

/// Bytes accounted per buffered fragment on top of its payload (allocation and tree node).
pub const FRAGMENT_OVERHEAD: usize = 64;

/// Largest IPv4 total length / IPv6 payload length.
const MAX_IP_LEN: usize = 65535;

const IPV6_HEADER_LEN: usize = 40;

/// Bounds of one [`Defragmenter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefragConfig {
    /// Datagrams in progress at most (0 disables reassembly: every fragment is `Capacity`).
    pub max_datagrams: usize,
    /// Bytes buffered at most (payload + headers + [`FRAGMENT_OVERHEAD`] per fragment).
    pub max_bytes: usize,
    /// An incomplete datagram is released this long after its first fragment (0: at the
    /// next push for it or the next `expire`, i.e. no reassembly across time).
    pub timeout_ms: u64,
}

impl Default for DefragConfig {
    /// 1024 datagrams, 16 MiB, 30 s (the Linux `ipfrag_time` default).
    fn default() -> Self {
        DefragConfig {
            max_datagrams: 1024,
            max_bytes: 16 << 20,
            timeout_ms: 30_000,
        }
    }
}

/// Why a fragment was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefragError {
    /// The fragment overlaps one already buffered (datagram dropped).
    Overlap,
    /// The fragment reaches beyond 65535 bytes or beyond the end given by the last fragment,
    /// or two last fragments disagree (datagram dropped).
    OutOfBounds,
    /// Unparsable packet, or a non-last fragment with an empty or non-multiple-of-8 payload
    /// (only this packet is rejected).
    Malformed,
    /// The datagram cannot fit in `max_bytes` / `max_datagrams` even after evicting the
    /// older ones (datagram dropped).
    Capacity,
    /// Haka overlaps only: a fragment at or after the offset of the datagram's last
    /// fragment (MF clear), the last itself excepted (only this packet is rejected; Haka's
    /// "invalid ipv4 fragment").
    AfterLast,
}

/// Haka overlaps: one part of a completed datagram, taken from one pushed fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Which push of the datagram it comes from (0: the first fragment pushed for it,
    /// counting every `Pending` one and the completing one).
    pub arrival: u32,
    /// Payload offset and length in the datagram.
    pub offset: usize,
    pub len: usize,
}

/// Haka overlaps: fragments buffered per datagram at most (the completion check walks
/// them on every push).
pub const MAX_HAKA_FRAGMENTS: usize = 1024;

/// Haka overlaps: one buffered fragment.
#[derive(Debug)]
struct HakaFrag {
    off: usize,
    data: Vec<u8>,
    arrival: u32,
}

/// Outcome of pushing one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefragResult {
    /// Not a fragment: the caller processes the packet as is.
    NotFragment,
    /// Fragment buffered (or an identical duplicate absorbed); the datagram is incomplete.
    Pending,
    /// The datagram is complete. `packet` is the whole IP datagram: IPv4 with MF=0, offset 0,
    /// total length and header checksum recomputed; IPv6 with the Fragment header removed and
    /// the payload length fixed. `fragments` is the number of packets pushed for it (this
    /// one included, duplicates included).
    Complete { packet: Vec<u8>, fragments: usize },
    /// Rejected; see [`DefragError`] for whether the datagram was dropped.
    Invalid(DefragError),
}

/// Identifies one datagram of a [`Defragmenter`] (never reused by it), so that a caller
/// holding the original fragments can group them: see [`Defragmenter::last_datagram`] and
/// [`Defragmenter::take_released`].
pub type DatagramId = u64;

/// Why an incomplete datagram was released outside of a push result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// Older than `timeout_ms` (by [`Defragmenter::expire`] or when a new fragment arrived).
    TimedOut,
    /// Evicted to make room for another datagram.
    Evicted,
}

/// Counters of one [`Defragmenter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefragCounters {
    /// Datagrams reassembled (IPv6 atomic fragments not included).
    pub completed: u64,
    /// Packets rejected with [`DefragResult::Invalid`].
    pub invalid: u64,
    /// Incomplete datagrams released by the timeout.
    pub timed_out: u64,
    /// Incomplete datagrams evicted to make room.
    pub evicted: u64,
    /// Identical duplicate fragments absorbed.
    pub duplicates: u64,
    /// Release notices discarded because the caller did not take them
    /// (see [`Defragmenter::take_released`]).
    pub notices_lost: u64,
    /// Datagrams in progress now.
    pub in_progress: usize,
    /// Bytes accounted now (see [`DefragConfig::max_bytes`]).
    pub bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    V4 {
        src: [u8; 4],
        dst: [u8; 4],
        proto: u8,
        id: u16,
    },
    V6 {
        src: [u8; 16],
        dst: [u8; 16],
        id: u32,
    },
}

#[derive(Debug)]
struct Datagram {
    /// Creation sequence number (matches the live entry of the age queue).
    seq: u64,
    created_ms: u64,
    /// Header of the offset-0 fragment (IPv6: with the next-header byte already patched);
    /// empty until it arrives.
    header: Vec<u8>,
    has_header: bool,
    /// Payload length of the datagram, known once the last fragment arrived.
    total: Option<usize>,
    /// offset -> payload bytes; the ranges never overlap.
    frags: BTreeMap<usize, Vec<u8>>,
    /// Sum of the buffered payload lengths.
    received: usize,
    /// Largest end offset buffered.
    max_end: usize,
    /// Bytes accounted for this datagram.
    accounted: usize,
    /// Packets pushed for this datagram (duplicates included).
    pushes: usize,
    /// Haka overlaps: the fragments by offset (at equal offsets, the latest first); may
    /// overlap. `frags` is unused then.
    list: Vec<HakaFrag>,
    /// Haka overlaps: offset of the last fragment (MF clear).
    last_off: Option<usize>,
}

/// One parsed fragment.
struct Frag<'a> {
    key: Key,
    /// Header bytes as they would head the reassembled datagram.
    header: &'a [u8],
    /// IPv6: (position of the next-header byte pointing to the Fragment header, value to
    /// write there).
    nh_patch: Option<(usize, u8)>,
    /// Header bytes counted in the length field (IPv4: the whole header; IPv6: the
    /// unfragmentable extension headers), for the 65535 bound.
    counted_header: usize,
    offset: usize,
    data: &'a [u8],
    more: bool,
}

/// Bounded IPv4/IPv6 reassembly table (one per worker, not shared).
#[derive(Debug)]
pub struct Defragmenter {
    config: DefragConfig,
    table: HashMap<Key, Datagram>,
    /// Datagrams by creation order (seq, key); entries whose datagram is gone or was
    /// recreated (seq mismatch) are stale and skipped. Compacted when mostly stale.
    ages: VecDeque<(u64, Key)>,
    next_seq: u64,
    counters: DefragCounters,
    /// Datagram concerned by the last push.
    last: Option<DatagramId>,
    /// Timed-out / evicted datagrams not yet taken by the caller (bounded).
    released: VecDeque<(DatagramId, Released)>,
    /// Haka's overlap handling (`[defrag] overlap = "haka"`).
    haka: bool,
    /// Haka overlaps: the parts of the datagram the last push completed.
    pieces: Vec<Piece>,
    /// Haka overlaps: fragments the last push discarded as lying after the last fragment.
    discarded: usize,
}

impl Defragmenter {
    pub fn new(config: DefragConfig) -> Self {
        Defragmenter {
            config,
            table: HashMap::new(),
            ages: VecDeque::new(),
            next_seq: 0,
            counters: DefragCounters::default(),
            last: None,
            released: VecDeque::new(),
            haka: false,
            pieces: Vec::new(),
            discarded: 0,
        }
    }

    /// Haka's overlap handling (see `crate::config::FragOverlap::Haka`) instead of
    /// dropping datagrams with overlapping fragments.
    pub fn set_haka_overlaps(&mut self, on: bool) {
        self.haka = on;
    }

    /// Haka overlaps: after a `Complete`, the parts of the datagram in offset order and the
    /// push each comes from (pushes not listed contributed nothing). Empty otherwise.
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// Haka overlaps: fragments of the datagram the last push discarded because the
    /// fragment it pushed was the last one and they lay at or after its offset (the caller
    /// alerts; their packets are not among the `pieces`).
    pub fn discarded(&self) -> usize {
        self.discarded
    }

    /// The datagram concerned by the last `push_ipv4` / `push_ipv6`: the one a `Pending`
    /// fragment joined, the one `Complete` returned, or the one an `Invalid` dropped. `None`
    /// for `NotFragment`, IPv6 atomic fragments, and rejections that touched no datagram.
    pub fn last_datagram(&self) -> Option<DatagramId> {
        self.last
    }

    /// Takes the oldest notice of an incomplete datagram released by the timeout or by
    /// eviction, so that the caller can release the fragments it holds for it. At most
    /// `max(max_datagrams, 64)` notices are kept; older ones are discarded (`notices_lost`).
    pub fn take_released(&mut self) -> Option<(DatagramId, Released)> {
        self.released.pop_front()
    }

    fn notify(&mut self, id: DatagramId, why: Released) {
        if self.released.len() >= self.config.max_datagrams.max(64) {
            self.released.pop_front();
            self.counters.notices_lost += 1;
        }
        self.released.push_back((id, why));
        match why {
            Released::TimedOut => self.counters.timed_out += 1,
            Released::Evicted => self.counters.evicted += 1,
        }
    }

    pub fn config(&self) -> &DefragConfig {
        &self.config
    }

    /// Current counters (`in_progress` and `bytes` are live values).
    pub fn counters(&self) -> DefragCounters {
        DefragCounters {
            in_progress: self.table.len(),
            ..self.counters
        }
    }

    /// Pushes one IPv4 packet (bytes from the IP header; trailing padding beyond the total
    /// length is ignored). Non-fragments (MF clear and offset 0) are `NotFragment`.
    pub fn push_ipv4(&mut self, ip_packet: &[u8], now_ms: u64) -> DefragResult {
        self.last = None;
        self.pieces.clear();
        self.discarded = 0;
        let ip = match Ipv4Packet::new_checked(ip_packet) {
            Ok(ip) => ip,
            Err(_) => return self.reject(DefragError::Malformed),
        };
        if !ip.is_fragment() {
            return DefragResult::NotFragment;
        }
        let hl = ip.header_len();
        let frag = Frag {
            key: Key::V4 {
                src: ip.src_addr(),
                dst: ip.dst_addr(),
                proto: ip.protocol(),
                id: ip.ident(),
            },
            header: &ip_packet[..hl],
            nh_patch: None,
            counted_header: hl,
            offset: ip.frag_offset() as usize,
            data: ip.payload(),
            more: ip.more_frags(),
        };
        self.push(frag, now_ms)
    }

    /// Pushes one IPv6 packet (bytes from the IPv6 header; trailing bytes beyond the payload
    /// length are ignored). Packets without a Fragment header are `NotFragment`; the
    /// extension headers before the Fragment header form the unfragmentable part.
    pub fn push_ipv6(&mut self, ip_packet: &[u8], now_ms: u64) -> DefragResult {
        self.last = None;
        self.pieces.clear();
        self.discarded = 0;
        let ip = match Ipv6Packet::new_checked(ip_packet) {
            Ok(ip) => ip,
            Err(_) => return self.reject(DefragError::Malformed),
        };
        let payload = ip.payload();
        let mut nh = ip.next_header();
        let mut nh_pos = 6usize;
        let mut off = 0usize;
        let mut count = 0usize;
        while nh != ip_proto::IPV6_FRAGMENT {
            if !is_ext_header(nh) {
                return DefragResult::NotFragment;
            }
            if count == MAX_EXT_HEADERS {
                return self.reject(DefragError::Malformed);
            }
            count += 1;
            let rest = payload.get(off..).unwrap_or(&[]);
            let h = match Ipv6ExtHeader::new_checked(rest, nh) {
                Ok(h) => h,
                Err(_) => return self.reject(DefragError::Malformed),
            };
            nh_pos = IPV6_HEADER_LEN + off;
            nh = h.next_header();
            off += h.header_len();
        }
        let rest = payload.get(off..).unwrap_or(&[]);
        let fh = match Ipv6FragmentHeader::new_checked(rest) {
            Ok(f) => f,
            Err(_) => return self.reject(DefragError::Malformed),
        };
        let header_end = IPV6_HEADER_LEN + off;
        let data = rest.get(Ipv6FragmentHeader::<&[u8]>::LEN..).unwrap_or(&[]);
        let frag = Frag {
            key: Key::V6 {
                src: ip.src_addr(),
                dst: ip.dst_addr(),
                id: fh.ident(),
            },
            header: ip_packet.get(..header_end).unwrap_or(&[]),
            nh_patch: Some((nh_pos, fh.next_header())),
            counted_header: off,
            offset: fh.frag_offset() as usize,
            data,
            more: fh.more_frags(),
        };
        if frag.offset == 0 && !frag.more {
            // Atomic fragment (RFC 6946): reassembled on its own, the table is not touched.
            if frag.counted_header + frag.data.len() > MAX_IP_LEN {
                return self.reject(DefragError::OutOfBounds);
            }
            let mut packet = Vec::with_capacity(frag.header.len() + frag.data.len());
            packet.extend_from_slice(frag.header);
            patch_nh(&mut packet, frag.nh_patch);
            packet.extend_from_slice(frag.data);
            finish_ipv6(&mut packet);
            return DefragResult::Complete { packet, fragments: 1 };
        }
        self.push(frag, now_ms)
    }

    /// Releases the incomplete datagrams whose first fragment is at least `timeout_ms` old.
    /// Returns how many were released (counted `timed_out`). Work is proportional to the
    /// number released (plus stale queue entries skipped).
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let mut n = 0;
        while let Some(key) = self.oldest_live() {
            let expired = self
                .table
                .get(&key)
                .is_some_and(|d| d.created_ms.saturating_add(self.config.timeout_ms) <= now_ms);
            if !expired {
                break;
            }
            if let Some(d) = self.remove(&key) {
                self.notify(d.seq, Released::TimedOut);
            }
            n += 1;
        }
        n
    }

    /// Evicts the oldest datagram in progress (a [`Released::Evicted`] notice, counted
    /// `evicted`), e.g. when the caller runs short of room for the fragments it holds.
    /// False when there is none.
    pub fn evict_one(&mut self) -> bool {
        match self.oldest_live() {
            Some(k) => {
                if let Some(d) = self.remove(&k) {
                    self.notify(d.seq, Released::Evicted);
                }
                true
            }
            None => false,
        }
    }

    fn reject(&mut self, e: DefragError) -> DefragResult {
        self.counters.invalid += 1;
        DefragResult::Invalid(e)
    }

    /// Drops the datagram of `key` (if any) and rejects the packet.
    fn drop_datagram(&mut self, key: &Key, e: DefragError) -> DefragResult {
        if let Some(d) = self.remove(key) {
            self.last = Some(d.seq);
        }
        self.reject(e)
    }

    fn remove(&mut self, key: &Key) -> Option<Datagram> {
        let d = self.table.remove(key)?;
        self.counters.bytes = self.counters.bytes.saturating_sub(d.accounted);
        Some(d)
    }

    /// Key of the oldest datagram in progress (stale queue entries are discarded).
    fn oldest_live(&mut self) -> Option<Key> {
        while let Some(&(seq, key)) = self.ages.front() {
            if self.table.get(&key).is_some_and(|d| d.seq == seq) {
                return Some(key);
            }
            self.ages.pop_front();
        }
        None
    }

    /// Evicts the oldest datagram unless it is `keep`; false when nothing could be evicted.
    fn evict_oldest(&mut self, keep: &Key) -> bool {
        match self.oldest_live() {
            Some(k) if k != *keep => {
                if let Some(d) = self.remove(&k) {
                    self.notify(d.seq, Released::Evicted);
                }
                true
            }
            _ => false,
        }
    }

    fn push(&mut self, f: Frag<'_>, now_ms: u64) -> DefragResult {
        let key = f.key;
        let end = f.offset + f.data.len();
        if f.counted_header + end > MAX_IP_LEN {
            return self.drop_datagram(&key, DefragError::OutOfBounds);
        }
        if f.more && (f.data.is_empty() || !f.data.len().is_multiple_of(8)) {
            return self.reject(DefragError::Malformed);
        }

        // A timed-out datagram must not absorb new fragments: release it first.
        if self
            .table
            .get(&key)
            .is_some_and(|d| d.created_ms.saturating_add(self.config.timeout_ms) <= now_ms)
        {
            if let Some(d) = self.remove(&key) {
                self.notify(d.seq, Released::TimedOut);
            }
        }
        if self.haka && matches!(key, Key::V4 { .. }) {
            // (Haka had no IPv6: IPv6 keeps the overlap check)
            return self.push_haka(f, now_ms);
        }

        // Checks against the datagram in progress (read-only).
        let mut need = f.data.len() + FRAGMENT_OVERHEAD;
        match self.table.get(&key) {
            Some(d) => {
                if !f.more {
                    if d.total.is_some_and(|t| t != end) || d.max_end > end {
                        return self.drop_datagram(&key, DefragError::OutOfBounds);
                    }
                } else if d.total.is_some_and(|t| end > t) {
                    return self.drop_datagram(&key, DefragError::OutOfBounds);
                }
                if let Some((&po, pd)) = d.frags.range(..=f.offset).next_back() {
                    if po == f.offset {
                        if pd.as_slice() == f.data {
                            if let Some(d) = self.table.get_mut(&key) {
                                d.pushes += 1;
                                self.last = Some(d.seq);
                            }
                            self.counters.duplicates += 1;
                            return DefragResult::Pending;
                        }
                        return self.drop_datagram(&key, DefragError::Overlap);
                    }
                    if po + pd.len() > f.offset {
                        return self.drop_datagram(&key, DefragError::Overlap);
                    }
                }
                if let Some((&no, _)) = d.frags.range(f.offset + 1..).next() {
                    if no < end {
                        return self.drop_datagram(&key, DefragError::Overlap);
                    }
                }
                if f.offset == 0 && !d.has_header {
                    need += f.header.len();
                }
            }
            None => {
                if f.offset == 0 {
                    need += f.header.len();
                }
            }
        }

        if let Err(r) = self.make_room(&key, need, now_ms) {
            return r;
        }
        let Some(d) = self.table.get_mut(&key) else {
            return self.reject(DefragError::Capacity);
        };
        if f.offset == 0 && !d.has_header {
            d.header.extend_from_slice(f.header);
            patch_nh(&mut d.header, f.nh_patch);
            d.has_header = true;
        }
        d.frags.insert(f.offset, f.data.to_vec());
        d.received += f.data.len();
        d.max_end = d.max_end.max(end);
        if !f.more {
            d.total = Some(end);
        }
        d.accounted += need;
        d.pushes += 1;
        self.last = Some(d.seq);
        self.counters.bytes += need;

        if !(d.has_header && d.total == Some(d.received)) {
            return DefragResult::Pending;
        }

        // Complete: no overlap and every range within [0, total), so the ranges tile it.
        let Some(d) = self.remove(&key) else {
            return self.reject(DefragError::Capacity);
        };
        let total = d.received;
        let v4 = matches!(key, Key::V4 { .. });
        let counted = if v4 {
            d.header.len()
        } else {
            d.header.len().saturating_sub(IPV6_HEADER_LEN)
        };
        if counted + total > MAX_IP_LEN {
            return self.reject(DefragError::OutOfBounds);
        }
        let mut packet = Vec::with_capacity(d.header.len() + total);
        packet.extend_from_slice(&d.header);
        for data in d.frags.values() {
            packet.extend_from_slice(data);
        }
        finish_header(&mut packet, v4, counted + total);
        self.counters.completed += 1;
        DefragResult::Complete {
            packet,
            fragments: d.pushes,
        }
    }
}

impl Defragmenter {
    /// Room for `need` more bytes in the datagram of `key` (created if new): the oldest
    /// other datagrams are evicted first. Err: the rejection to return.
    fn make_room(&mut self, key: &Key, need: usize, now_ms: u64) -> Result<(), DefragResult> {
        // Room: datagram count, then bytes (the oldest others are evicted first).
        if need > self.config.max_bytes {
            return Err(self.drop_datagram(key, DefragError::Capacity));
        }
        if !self.table.contains_key(key) {
            if self.config.max_datagrams == 0 {
                return Err(self.reject(DefragError::Capacity));
            }
            while self.table.len() >= self.config.max_datagrams {
                if !self.evict_oldest(key) {
                    return Err(self.reject(DefragError::Capacity));
                }
            }
        }
        while self.counters.bytes + need > self.config.max_bytes {
            if !self.evict_oldest(key) {
                return Err(self.drop_datagram(key, DefragError::Capacity));
            }
        }

        // Insert.
        if !self.table.contains_key(key) {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.table.insert(
                *key,
                Datagram {
                    seq,
                    created_ms: now_ms,
                    header: Vec::new(),
                    has_header: false,
                    total: None,
                    frags: BTreeMap::new(),
                    received: 0,
                    max_end: 0,
                    accounted: 0,
                    pushes: 0,
                    list: Vec::new(),
                    last_off: None,
                },
            );
            self.ages.push_back((seq, *key));
            if self.ages.len() > 2 * self.table.len() + 16 {
                let table = &self.table;
                self.ages.retain(|(s, k)| table.get(k).is_some_and(|d| d.seq == *s));
            }
        }
        Ok(())
    }

    /// `push` with Haka's overlap handling (`haka`): fragments are kept as they come, and
    /// the datagram is built, when complete, the way Haka 0.4's ipv4 module did it.
    fn push_haka(&mut self, f: Frag<'_>, now_ms: u64) -> DefragResult {
        let key = f.key;
        let end = f.offset + f.data.len();
        let (last_off, n) = match self.table.get(&key) {
            Some(d) => (d.last_off, d.list.len()),
            None => (None, 0),
        };
        if last_off.is_some_and(|lo| f.offset >= lo) {
            // At or after the last fragment: Haka alerted and dropped this one.
            return self.reject(DefragError::AfterLast);
        }
        if n >= MAX_HAKA_FRAGMENTS {
            return self.drop_datagram(&key, DefragError::Capacity);
        }
        let mut need = f.data.len() + FRAGMENT_OVERHEAD;
        if f.offset == 0 {
            need += f.header.len();
        }
        if let Err(r) = self.make_room(&key, need, now_ms) {
            return r;
        }
        let Some(d) = self.table.get_mut(&key) else {
            return self.reject(DefragError::Capacity);
        };
        if f.offset == 0 {
            // (the latest offset-0 fragment sorts first: its header heads the datagram)
            d.header.clear();
            d.header.extend_from_slice(f.header);
            patch_nh(&mut d.header, f.nh_patch);
            d.has_header = true;
        }
        let arrival = d.pushes as u32;
        let at = d.list.partition_point(|h| h.off < f.offset);
        d.list.insert(at, HakaFrag { off: f.offset, data: f.data.to_vec(), arrival });
        if !f.more {
            // The last fragment: the ones at or after it are invalid.
            let before = d.list.len();
            d.list.retain(|h| h.off < f.offset || h.arrival == arrival);
            self.discarded = before - d.list.len();
            d.last_off = Some(f.offset);
            d.total = Some(end);
        }
        d.received += f.data.len();
        d.accounted += need;
        d.pushes += 1;
        self.last = Some(d.seq);
        self.counters.bytes += need;

        let Some(total) = d.total else { return DefragResult::Pending };
        let mut covered = 0;
        for h in &d.list {
            if h.off > covered {
                return DefragResult::Pending;
            }
            covered = covered.max(h.off + h.data.len());
        }
        if covered < total || !d.has_header {
            return DefragResult::Pending;
        }
        let Some(d) = self.remove(&key) else {
            return self.reject(DefragError::Capacity);
        };
        let v4 = matches!(key, Key::V4 { .. });
        let counted = if v4 { d.header.len() } else { d.header.len().saturating_sub(IPV6_HEADER_LEN) };
        if counted + total > MAX_IP_LEN {
            return self.reject(DefragError::OutOfBounds);
        }
        let mut packet = Vec::with_capacity(d.header.len() + total);
        packet.extend_from_slice(&d.header);
        // Each fragment gives what the ones before it (by offset) did not.
        let mut pos = 0;
        for h in &d.list {
            let start = h.off.max(pos);
            let stop = (h.off + h.data.len()).min(total);
            if stop <= start {
                continue;
            }
            packet.extend_from_slice(&h.data[start - h.off..stop - h.off]);
            self.pieces.push(Piece { arrival: h.arrival, offset: start, len: stop - start });
            pos = stop;
        }
        finish_header(&mut packet, v4, counted + total);
        self.counters.completed += 1;
        DefragResult::Complete { packet, fragments: d.pushes }
    }
}

fn patch_nh(header: &mut [u8], patch: Option<(usize, u8)>) {
    if let Some((pos, nh)) = patch {
        if let Some(b) = header.get_mut(pos) {
            *b = nh;
        }
    }
}

/// The header of a reassembled datagram of `len` bytes (IPv4: total length, no fragment
/// flags, checksum; IPv6: see [`finish_ipv6`]).
fn finish_header(packet: &mut [u8], v4: bool, len: usize) {
    if v4 {
        let mut ip = Ipv4Packet::new_unchecked(packet);
        let df = ip.dont_frag();
        ip.set_total_len(len as u16);
        ip.set_frag(df, false, 0);
        ip.fill_checksum();
    } else {
        finish_ipv6(packet);
    }
}

/// Sets the IPv6 payload length of a reassembled packet (callers checked it fits).
fn finish_ipv6(packet: &mut [u8]) {
    let pl = packet.len().saturating_sub(IPV6_HEADER_LEN).min(MAX_IP_LEN) as u16;
    if packet.len() >= IPV6_HEADER_LEN {
        Ipv6Packet::new_unchecked(packet).set_payload_len(pl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum;

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
        fn shuffle<T>(&mut self, v: &mut [T]) {
            for i in (1..v.len()).rev() {
                let j = self.below(i + 1);
                v.swap(i, j);
            }
        }
    }

    const SRC4: [u8; 4] = [10, 0, 0, 1];
    const DST4: [u8; 4] = [10, 0, 0, 2];

    fn cfg() -> DefragConfig {
        DefragConfig {
            max_datagrams: 16,
            max_bytes: 1 << 20,
            timeout_ms: 1000,
        }
    }

    /// A whole IPv4/UDP datagram with `len` bytes of UDP payload, valid checksums.
    fn udp_v4(id: u16, len: usize) -> Vec<u8> {
        let total = 20 + 8 + len;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&id.to_be_bytes());
        p[8] = 64;
        p[9] = ip_proto::UDP;
        p[12..16].copy_from_slice(&SRC4);
        p[16..20].copy_from_slice(&DST4);
        p[20..22].copy_from_slice(&1234u16.to_be_bytes());
        p[22..24].copy_from_slice(&53u16.to_be_bytes());
        p[24..26].copy_from_slice(&((8 + len) as u16).to_be_bytes());
        for (i, b) in p[28..].iter_mut().enumerate() {
            *b = (i * 7 + id as usize) as u8;
        }
        let c = checksum::l4_v4(&SRC4, &DST4, ip_proto::UDP, &p[20..]);
        p[26..28].copy_from_slice(&c.to_be_bytes());
        Ipv4Packet::new_unchecked(&mut p[..]).fill_checksum();
        p
    }

    /// Fragments an IPv4 datagram (20-byte header) into pieces of `chunk` payload bytes.
    fn frag_v4(dgram: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        let payload = &dgram[20..];
        let mut out = Vec::new();
        let mut off = 0;
        while off < payload.len() {
            let end = (off + chunk).min(payload.len());
            out.push(raw_frag_v4(&dgram[..20], off, &payload[off..end], end < payload.len()));
            off = end;
        }
        out
    }

    fn raw_frag_v4(header: &[u8], offset: usize, data: &[u8], more: bool) -> Vec<u8> {
        let mut p = header.to_vec();
        p.extend_from_slice(data);
        let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
        ip.set_total_len((20 + data.len()) as u16);
        ip.set_frag(false, more, offset as u16);
        ip.fill_checksum();
        p
    }

    fn haka() -> Defragmenter {
        let mut d = Defragmenter::new(cfg());
        d.set_haka_overlaps(true);
        d
    }

    /// Haka overlaps, Haka's own captures: fragment_overlap_1 (the second fragment lies
    /// inside the first: dropped silently, the first's bytes win) and fragment_overlap_2
    /// (the second lies after the last fragment's offset: discarded with an alert when the
    /// last comes, the datagram completes with the last's bytes).
    #[test]
    fn haka_overlaps_as_haka() {
        let dg = udp_v4(5, 16);
        let h = &dg[..20];
        let mut d = haka();
        assert_eq!(d.push_ipv4(&raw_frag_v4(h, 0, &dg[20..36], true), 0), DefragResult::Pending);
        assert_eq!(d.push_ipv4(&raw_frag_v4(h, 8, &[b'x'; 8], true), 0), DefragResult::Pending);
        let DefragResult::Complete { packet, fragments } = d.push_ipv4(&raw_frag_v4(h, 16, &dg[36..44], false), 0) else {
            panic!("complete")
        };
        assert_eq!((packet, fragments), (dg.clone(), 3));
        let p = |arrival, offset, len| Piece { arrival, offset, len };
        assert_eq!(d.pieces(), &[p(0, 0, 16), p(2, 16, 8)]);
        assert_eq!(d.discarded(), 0);

        let mut d = haka();
        assert_eq!(d.push_ipv4(&raw_frag_v4(h, 0, &dg[20..28], true), 0), DefragResult::Pending);
        assert_eq!(d.push_ipv4(&raw_frag_v4(h, 16, &[b'A'; 8], true), 0), DefragResult::Pending);
        let DefragResult::Complete { packet, .. } = d.push_ipv4(&raw_frag_v4(h, 8, &dg[28..44], false), 0) else {
            panic!("complete")
        };
        assert_eq!(packet, dg);
        assert_eq!(d.discarded(), 1);
        assert_eq!(d.pieces(), &[p(0, 0, 8), p(2, 8, 16)]);
        // A fragment at or after the last one's offset: alone rejected, datagram kept.
        let mut d = haka();
        assert_eq!(d.push_ipv4(&raw_frag_v4(h, 8, &dg[28..44], false), 0), DefragResult::Pending);
        assert_eq!(d.push_ipv4(&raw_frag_v4(h, 16, &[0; 8], true), 0), DefragResult::Invalid(DefragError::AfterLast));
        assert_eq!(d.push_ipv4(&raw_frag_v4(h, 8, &dg[28..44], false), 0), DefragResult::Invalid(DefragError::AfterLast));
        assert!(matches!(d.push_ipv4(&raw_frag_v4(h, 0, &dg[20..28], true), 0), DefragResult::Complete { .. }));
        // The default drops such datagrams.
        let mut d = Defragmenter::new(cfg());
        d.push_ipv4(&raw_frag_v4(h, 0, &dg[20..36], true), 0);
        assert_eq!(d.push_ipv4(&raw_frag_v4(h, 8, &[b'x'; 8], true), 0), DefragResult::Invalid(DefragError::Overlap));
        assert!(d.pieces().is_empty());
    }

    /// Haka overlaps: the lowest offset wins, at equal offsets the latest; partly covered
    /// fragments give only what is not covered yet; data beyond the end is ignored.
    #[test]
    fn haka_overlaps_precedence() {
        let dg = udp_v4(9, 40); // 48 payload bytes
        let h = &dg[..20];
        let mut d = haka();
        let mut later = dg[36..60].to_vec(); // [16, 40)
        later[0] ^= 1;
        assert_eq!(d.push_ipv4(&raw_frag_v4(h, 16, &later, true), 0), DefragResult::Pending);
        let mut stale = dg[20..44].to_vec(); // [0, 24), replaced by a later copy at offset 0
        stale[0] ^= 1;
        assert_eq!(d.push_ipv4(&raw_frag_v4(h, 0, &stale, true), 0), DefragResult::Pending);
        assert_eq!(d.push_ipv4(&raw_frag_v4(h, 0, &dg[20..44], true), 0), DefragResult::Pending);
        let DefragResult::Complete { packet, fragments } = d.push_ipv4(&raw_frag_v4(h, 40, &dg[60..68], false), 0) else {
            panic!("complete")
        };
        assert_eq!((packet, fragments), (dg.clone(), 4));
        let p = |arrival, offset, len| Piece { arrival, offset, len };
        assert_eq!(d.pieces(), &[p(2, 0, 24), p(0, 24, 16), p(3, 40, 8)]);
        assert_eq!(d.counters().bytes, 0);
        // Bounded: a datagram of too many fragments is dropped.
        let mut d = haka();
        for i in 0..MAX_HAKA_FRAGMENTS {
            assert_eq!(d.push_ipv4(&raw_frag_v4(h, 8, &[i as u8; 8], true), 0), DefragResult::Pending);
        }
        assert_eq!(d.push_ipv4(&raw_frag_v4(h, 8, &[0; 8], true), 0), DefragResult::Invalid(DefragError::Capacity));
        assert_eq!(d.counters().in_progress, 0);
    }

    const SRC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    /// IPv6/UDP datagram; with `dest_opts`, an 8-byte Destination Options header precedes UDP.
    fn udp_v6(len: usize, dest_opts: bool) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[6] = if dest_opts {
            ip_proto::IPV6_DEST_OPTS
        } else {
            ip_proto::UDP
        };
        p[7] = 64;
        p[8..24].copy_from_slice(&SRC6);
        p[24..40].copy_from_slice(&DST6);
        if dest_opts {
            p.extend_from_slice(&[ip_proto::UDP, 0, 1, 4, 0, 0, 0, 0]);
        }
        let udp_at = p.len();
        p.extend_from_slice(&1234u16.to_be_bytes());
        p.extend_from_slice(&53u16.to_be_bytes());
        p.extend_from_slice(&((8 + len) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend((0..len).map(|i| (i * 13) as u8));
        let c = checksum::l4_v6(&SRC6, &DST6, ip_proto::UDP, &p[udp_at..]);
        p[udp_at + 6..udp_at + 8].copy_from_slice(&c.to_be_bytes());
        let pl = (p.len() - 40) as u16;
        p[4..6].copy_from_slice(&pl.to_be_bytes());
        p
    }

    /// Fragments an IPv6 datagram: `unfrag` bytes after the fixed header stay in every
    /// fragment (the last of them, or the fixed header, points to the Fragment header).
    fn frag_v6(dgram: &[u8], unfrag: usize, id: u32, chunk: usize) -> Vec<Vec<u8>> {
        let hdr_end = 40 + unfrag;
        // Next-header byte pointing at the fragmentable part.
        let nh_pos = if unfrag == 0 { 6 } else { 40 };
        let inner_nh = dgram[nh_pos];
        let payload = &dgram[hdr_end..];
        let mut out = Vec::new();
        let mut off = 0;
        while off < payload.len() {
            let end = (off + chunk).min(payload.len());
            let mut p = dgram[..hdr_end].to_vec();
            p[nh_pos] = ip_proto::IPV6_FRAGMENT;
            let more = end < payload.len();
            p.push(inner_nh);
            p.push(0);
            p.extend_from_slice(&((off as u16) | more as u16).to_be_bytes());
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&payload[off..end]);
            let pl = (p.len() - 40) as u16;
            p[4..6].copy_from_slice(&pl.to_be_bytes());
            out.push(p);
            off = end;
        }
        out
    }

    fn push_all4(d: &mut Defragmenter, frags: &[Vec<u8>], now: u64) -> Vec<DefragResult> {
        frags.iter().map(|f| d.push_ipv4(f, now)).collect()
    }

    fn check_complete(results: &[DefragResult], expect: &[u8], n: usize) {
        for r in &results[..results.len() - 1] {
            assert_eq!(*r, DefragResult::Pending);
        }
        match results.last() {
            Some(DefragResult::Complete { packet, fragments }) => {
                assert_eq!(*fragments, n);
                assert_eq!(packet.as_slice(), expect);
            }
            other => panic!("expected Complete, got {other:?}"),
        }
    }

    #[test]
    fn defrag_v4_in_order_reverse_shuffled() {
        let dgram = udp_v4(0x1234, 3000 - 28);
        assert_eq!(dgram.len(), 3000);
        let frags = frag_v4(&dgram, 1480);
        assert_eq!(frags.len(), 3);
        let mut rng = XorShift(0x9e3779b97f4a7c15);
        let mut orders = vec![frags.clone(), frags.iter().rev().cloned().collect::<Vec<_>>()];
        let small = frag_v4(&dgram, 128);
        for _ in 0..20 {
            let mut s = small.clone();
            rng.shuffle(&mut s);
            orders.push(s);
        }
        for order in orders {
            let mut d = Defragmenter::new(cfg());
            let res = push_all4(&mut d, &order, 0);
            check_complete(&res, &dgram, order.len());
            if let Some(DefragResult::Complete { packet, .. }) = res.last() {
                let ip = Ipv4Packet::new_checked(&packet[..]).unwrap();
                assert!(ip.verify_checksum());
                assert!(!ip.is_fragment());
                assert_eq!(ip.total_len(), 3000);
            }
            let c = d.counters();
            assert_eq!((c.completed, c.in_progress, c.bytes, c.invalid), (1, 0, 0, 0));
        }
    }

    #[test]
    fn defrag_v4_interleaved_datagrams_and_df_kept() {
        let a = udp_v4(1, 2000);
        let mut b = udp_v4(2, 2500);
        // DF on the first fragment of b (odd, but the flag must survive reassembly).
        let fa = frag_v4(&a, 800);
        let mut fb = frag_v4(&b, 800);
        fb[0][6] |= 0x40;
        Ipv4Packet::new_unchecked(&mut fb[0][..]).fill_checksum();
        b[6] |= 0x40;
        Ipv4Packet::new_unchecked(&mut b[..]).fill_checksum();
        let mut d = Defragmenter::new(cfg());
        let mut done = Vec::new();
        for i in 0..fa.len().max(fb.len()) {
            for f in [fa.get(i), fb.get(i)].into_iter().flatten() {
                if let DefragResult::Complete { packet, .. } = d.push_ipv4(f, 5) {
                    done.push(packet);
                }
            }
        }
        assert_eq!(done.len(), 2);
        assert!(done.contains(&a) && done.contains(&b));
    }

    #[test]
    fn defrag_v6_fragment_header() {
        let mut rng = XorShift(77);
        for dest_opts in [false, true] {
            let dgram = udp_v6(3000, dest_opts);
            let unfrag = if dest_opts { 8 } else { 0 };
            let frags = frag_v6(&dgram, unfrag, 0xdeadbeef, 1232);
            let mut orders = vec![frags.clone(), frags.iter().rev().cloned().collect::<Vec<_>>()];
            let mut s = frag_v6(&dgram, unfrag, 7, 64);
            rng.shuffle(&mut s);
            orders.push(s);
            for order in orders {
                let mut d = Defragmenter::new(cfg());
                let res: Vec<_> = order.iter().map(|f| d.push_ipv6(f, 0)).collect();
                check_complete(&res, &dgram, order.len());
                assert_eq!(d.counters().in_progress, 0);
            }
        }
        // Different identifications are different datagrams.
        let dgram = udp_v6(100, false);
        let f1 = frag_v6(&dgram, 0, 1, 64);
        let f2 = frag_v6(&dgram, 0, 2, 64);
        let mut d = Defragmenter::new(cfg());
        assert_eq!(d.push_ipv6(&f1[0], 0), DefragResult::Pending);
        assert_eq!(d.push_ipv6(&f2[1], 0), DefragResult::Pending);
        assert_eq!(d.counters().in_progress, 2);
    }

    #[test]
    fn defrag_v6_atomic_fragment() {
        let dgram = udp_v6(100, true);
        let frags = frag_v6(&dgram, 8, 9, 4096);
        assert_eq!(frags.len(), 1);
        let mut d = Defragmenter::new(cfg());
        assert_eq!(
            d.push_ipv6(&frags[0], 0),
            DefragResult::Complete {
                packet: dgram,
                fragments: 1
            }
        );
        assert_eq!(d.counters().in_progress, 0);
    }

    #[test]
    fn defrag_not_fragment() {
        let mut d = Defragmenter::new(cfg());
        assert_eq!(d.push_ipv4(&udp_v4(1, 100), 0), DefragResult::NotFragment);
        assert_eq!(d.push_ipv6(&udp_v6(100, false), 0), DefragResult::NotFragment);
        assert_eq!(d.push_ipv6(&udp_v6(100, true), 0), DefragResult::NotFragment);
        assert_eq!(d.counters(), DefragCounters::default());
    }

    #[test]
    fn defrag_overlap_drops_datagram() {
        let dgram = udp_v4(3, 2972);
        let frags = frag_v4(&dgram, 1480);
        let mut d = Defragmenter::new(cfg());
        assert_eq!(d.push_ipv4(&frags[0], 0), DefragResult::Pending);
        assert_eq!(d.push_ipv4(&frags[2], 0), DefragResult::Pending);
        // Starts inside fragment 0.
        let bad = raw_frag_v4(&dgram[..20], 1000, &dgram[1020..1820], true);
        assert_eq!(d.push_ipv4(&bad, 0), DefragResult::Invalid(DefragError::Overlap));
        let c = d.counters();
        assert_eq!((c.in_progress, c.bytes, c.invalid), (0, 0, 1));
        // The datagram is gone: the missing middle fragment does not complete anything.
        assert_eq!(d.push_ipv4(&frags[1], 0), DefragResult::Pending);
        // Ends inside the next fragment.
        let mut d = Defragmenter::new(cfg());
        assert_eq!(d.push_ipv4(&frags[1], 0), DefragResult::Pending);
        let bad = raw_frag_v4(&dgram[..20], 0, &dgram[20..1516], true);
        assert_eq!(d.push_ipv4(&bad, 0), DefragResult::Invalid(DefragError::Overlap));
        assert_eq!(d.counters().in_progress, 0);
        // Same offset, different content.
        let mut d = Defragmenter::new(cfg());
        assert_eq!(d.push_ipv4(&frags[1], 0), DefragResult::Pending);
        let mut other = frags[1].clone();
        let last = other.len() - 1;
        other[last] ^= 0xff;
        assert_eq!(d.push_ipv4(&other, 0), DefragResult::Invalid(DefragError::Overlap));
        assert_eq!(d.counters().in_progress, 0);
        // IPv6 too.
        let d6 = udp_v6(1000, false);
        let f6 = frag_v6(&d6, 0, 5, 512);
        let mut bad6 = frag_v6(&d6, 0, 5, 256)[1].clone(); // offset 256, inside f6[0]
        bad6[43] |= 1; // M stays set
        let mut d = Defragmenter::new(cfg());
        assert_eq!(d.push_ipv6(&f6[0], 0), DefragResult::Pending);
        assert_eq!(d.push_ipv6(&bad6, 0), DefragResult::Invalid(DefragError::Overlap));
        assert_eq!(d.counters().in_progress, 0);
    }

    #[test]
    fn defrag_out_of_bounds() {
        let dgram = udp_v4(4, 100);
        let mut d = Defragmenter::new(cfg());
        let first = raw_frag_v4(&dgram[..20], 0, &dgram[20..60], true);
        assert_eq!(d.push_ipv4(&first, 0), DefragResult::Pending);
        // 65528 + 16 > 65535.
        let far = raw_frag_v4(&dgram[..20], 65528, &[0u8; 16], false);
        assert_eq!(d.push_ipv4(&far, 0), DefragResult::Invalid(DefragError::OutOfBounds));
        assert_eq!(d.counters().in_progress, 0, "the whole datagram is dropped");
        // Data beyond the end given by the last fragment, and two different ends.
        let mut d = Defragmenter::new(cfg());
        let last = raw_frag_v4(&dgram[..20], 80, &[1u8; 8], false);
        assert_eq!(d.push_ipv4(&last, 0), DefragResult::Pending);
        let beyond = raw_frag_v4(&dgram[..20], 88, &[1u8; 8], true);
        assert_eq!(d.push_ipv4(&beyond, 0), DefragResult::Invalid(DefragError::OutOfBounds));
        let mut d = Defragmenter::new(cfg());
        assert_eq!(d.push_ipv4(&last, 0), DefragResult::Pending);
        let last2 = raw_frag_v4(&dgram[..20], 96, &[1u8; 8], false);
        assert_eq!(d.push_ipv4(&last2, 0), DefragResult::Invalid(DefragError::OutOfBounds));
        // IPv6: offset 65528 + 16 bytes.
        let d6 = udp_v6(100, false);
        let mut f = frag_v6(&d6, 0, 1, 8)[0].clone();
        f[42..44].copy_from_slice(&65528u16.to_be_bytes());
        f.extend_from_slice(&[0u8; 8]);
        let pl = (f.len() - 40) as u16;
        f[4..6].copy_from_slice(&pl.to_be_bytes());
        let mut d = Defragmenter::new(cfg());
        assert_eq!(d.push_ipv6(&f, 0), DefragResult::Invalid(DefragError::OutOfBounds));
    }

    #[test]
    fn defrag_malformed_fragment() {
        let dgram = udp_v4(5, 100);
        let mut d = Defragmenter::new(cfg());
        let odd = raw_frag_v4(&dgram[..20], 0, &dgram[20..33], true);
        assert_eq!(d.push_ipv4(&odd, 0), DefragResult::Invalid(DefragError::Malformed));
        let empty = raw_frag_v4(&dgram[..20], 8, &[], true);
        assert_eq!(d.push_ipv4(&empty, 0), DefragResult::Invalid(DefragError::Malformed));
        assert_eq!(d.counters().in_progress, 0);
    }

    #[test]
    fn defrag_duplicate_absorbed() {
        let dgram = udp_v4(6, 2972);
        let frags = frag_v4(&dgram, 1480);
        let mut d = Defragmenter::new(cfg());
        assert_eq!(d.push_ipv4(&frags[1], 0), DefragResult::Pending);
        assert_eq!(d.push_ipv4(&frags[1], 0), DefragResult::Pending);
        assert_eq!(d.push_ipv4(&frags[0], 0), DefragResult::Pending);
        assert_eq!(d.push_ipv4(&frags[0], 0), DefragResult::Pending);
        let r = d.push_ipv4(&frags[2], 0);
        assert_eq!(
            r,
            DefragResult::Complete {
                packet: dgram,
                fragments: 5
            }
        );
        let c = d.counters();
        assert_eq!((c.duplicates, c.completed, c.invalid), (2, 1, 0));
    }

    #[test]
    fn defrag_timeout_expire() {
        let dgram = udp_v4(7, 2972);
        let frags = frag_v4(&dgram, 1480);
        let mut d = Defragmenter::new(cfg());
        assert_eq!(d.push_ipv4(&frags[0], 100), DefragResult::Pending);
        assert_eq!(d.push_ipv4(&frags[1], 500), DefragResult::Pending);
        assert!(d.counters().bytes > 0);
        assert_eq!(d.expire(1099), 0);
        assert_eq!(d.counters().in_progress, 1);
        assert_eq!(d.expire(1100), 1);
        let c = d.counters();
        assert_eq!((c.timed_out, c.in_progress, c.bytes), (1, 0, 0));
        assert_eq!(d.expire(5000), 0);
        // The late last fragment starts a new datagram.
        assert_eq!(d.push_ipv4(&frags[2], 1200), DefragResult::Pending);
        // A stale datagram is also released on push (without expire()).
        assert_eq!(d.push_ipv4(&frags[0], 2200), DefragResult::Pending);
        assert_eq!(d.counters().timed_out, 2);
        assert_eq!(d.push_ipv4(&frags[1], 2300), DefragResult::Pending);
        assert!(matches!(d.push_ipv4(&frags[2], 2400), DefragResult::Complete { .. }));
    }

    #[test]
    fn defrag_capacity_eviction() {
        // Datagram count.
        let mut d = Defragmenter::new(DefragConfig {
            max_datagrams: 2,
            ..cfg()
        });
        let dg: Vec<_> = (1..=3).map(|id| udp_v4(id, 2972)).collect();
        let fr: Vec<_> = dg.iter().map(|g| frag_v4(g, 1480)).collect();
        for (i, f) in fr.iter().enumerate() {
            assert_eq!(d.push_ipv4(&f[0], i as u64), DefragResult::Pending);
        }
        let c = d.counters();
        assert_eq!((c.evicted, c.in_progress), (1, 2));
        for (i, f) in fr.iter().enumerate().skip(1) {
            assert_eq!(d.push_ipv4(&f[1], 10), DefragResult::Pending);
            assert_eq!(
                d.push_ipv4(&f[2], 10),
                DefragResult::Complete {
                    packet: dg[i].clone(),
                    fragments: 3
                }
            );
        }
        // Datagram 1 was evicted: its remaining fragments do not complete it.
        assert_eq!(d.push_ipv4(&fr[0][1], 20), DefragResult::Pending);
        assert_eq!(d.push_ipv4(&fr[0][2], 20), DefragResult::Pending);

        // Bytes: room for one fragment of 1480 bytes (+ header + overhead) only.
        let mut d = Defragmenter::new(DefragConfig {
            max_bytes: 2000,
            ..cfg()
        });
        assert_eq!(d.push_ipv4(&fr[0][0], 0), DefragResult::Pending);
        assert_eq!(d.push_ipv4(&fr[1][0], 1), DefragResult::Pending);
        let c = d.counters();
        assert_eq!((c.evicted, c.in_progress), (1, 1));
        assert!(c.bytes <= 2000);
        // The datagram itself does not fit: dropped, Capacity.
        assert_eq!(d.push_ipv4(&fr[1][1], 2), DefragResult::Invalid(DefragError::Capacity));
        let c = d.counters();
        assert_eq!((c.in_progress, c.bytes), (0, 0));

        // No datagrams allowed at all.
        let mut d = Defragmenter::new(DefragConfig {
            max_datagrams: 0,
            ..cfg()
        });
        assert_eq!(d.push_ipv4(&fr[0][0], 0), DefragResult::Invalid(DefragError::Capacity));
    }

    #[test]
    fn defrag_datagram_ids_and_release_notices() {
        let mut d = Defragmenter::new(DefragConfig {
            max_datagrams: 2,
            ..cfg()
        });
        let fr: Vec<_> = (1..=3).map(|id| frag_v4(&udp_v4(id, 2972), 1480)).collect();
        assert_eq!(d.push_ipv4(&fr[0][0], 0), DefragResult::Pending);
        let a = d.last_datagram().unwrap();
        assert_eq!(d.push_ipv4(&fr[0][1], 0), DefragResult::Pending);
        assert_eq!(d.last_datagram(), Some(a));
        assert_eq!(d.push_ipv4(&fr[0][1], 0), DefragResult::Pending); // duplicate
        assert_eq!(d.last_datagram(), Some(a));
        assert_eq!(d.push_ipv4(&fr[1][0], 0), DefragResult::Pending);
        let b = d.last_datagram().unwrap();
        assert_ne!(a, b);
        assert_eq!(d.take_released(), None);
        // A third datagram evicts the first.
        assert_eq!(d.push_ipv4(&fr[2][0], 0), DefragResult::Pending);
        let c = d.last_datagram().unwrap();
        assert_eq!(d.take_released(), Some((a, Released::Evicted)));
        assert_eq!(d.take_released(), None);
        // Completion and invalidation name the datagram in last_datagram().
        assert_eq!(d.push_ipv4(&fr[1][1], 0), DefragResult::Pending);
        assert!(matches!(d.push_ipv4(&fr[1][2], 0), DefragResult::Complete { .. }));
        assert_eq!(d.last_datagram(), Some(b));
        let bad = raw_frag_v4(&fr[2][0][..20], 8, &[0u8; 8], true);
        assert_eq!(d.push_ipv4(&bad, 0), DefragResult::Invalid(DefragError::Overlap));
        assert_eq!(d.last_datagram(), Some(c));
        assert_eq!(d.push_ipv4(&udp_v4(9, 10), 0), DefragResult::NotFragment);
        assert_eq!(d.last_datagram(), None);
        // Timeout, through expire() and through a late fragment.
        assert_eq!(d.push_ipv4(&fr[0][0], 10), DefragResult::Pending);
        let e = d.last_datagram().unwrap();
        assert_eq!(d.push_ipv4(&fr[1][0], 20), DefragResult::Pending);
        let f = d.last_datagram().unwrap();
        assert_eq!(d.expire(1010), 1);
        assert_eq!(d.take_released(), Some((e, Released::TimedOut)));
        assert_eq!(d.push_ipv4(&fr[1][1], 5000), DefragResult::Pending);
        assert_ne!(d.last_datagram(), Some(f));
        assert_eq!(d.take_released(), Some((f, Released::TimedOut)));
        let k = d.counters();
        assert_eq!((k.evicted, k.timed_out, k.notices_lost), (1, 2, 0));

        // Notices are bounded when never taken.
        let mut d = Defragmenter::new(DefragConfig {
            max_datagrams: 1,
            ..cfg()
        });
        for id in 0..200u16 {
            let f = frag_v4(&udp_v4(id, 100), 64);
            assert_eq!(d.push_ipv4(&f[0], 0), DefragResult::Pending);
        }
        let k = d.counters();
        assert_eq!((k.evicted, k.notices_lost), (199, 199 - 64));
        assert_eq!(d.released.len(), 64);
    }

    #[test]
    fn defrag_evict_one_oldest_first() {
        let mut d = Defragmenter::new(cfg());
        assert!(!d.evict_one());
        let fr: Vec<_> = (1..=2).map(|id| frag_v4(&udp_v4(id, 2972), 1480)).collect();
        assert_eq!(d.push_ipv4(&fr[0][0], 0), DefragResult::Pending);
        let a = d.last_datagram().unwrap();
        assert_eq!(d.push_ipv4(&fr[1][0], 1), DefragResult::Pending);
        let b = d.last_datagram().unwrap();
        assert!(d.evict_one());
        assert_eq!(d.take_released(), Some((a, Released::Evicted)));
        // The evicted datagram is gone: its remaining fragments do not complete it.
        assert_eq!(d.push_ipv4(&fr[0][1], 2), DefragResult::Pending);
        assert_eq!(d.push_ipv4(&fr[0][2], 2), DefragResult::Pending);
        // The other one still completes.
        assert_eq!(d.push_ipv4(&fr[1][1], 3), DefragResult::Pending);
        assert!(matches!(d.push_ipv4(&fr[1][2], 3), DefragResult::Complete { fragments: 3, .. }));
        assert_eq!(d.last_datagram(), Some(b));
        let k = d.counters();
        assert_eq!((k.evicted, k.in_progress, k.completed), (1, 1, 1));
    }

    #[test]
    fn defrag_age_queue_stays_bounded() {
        let mut d = Defragmenter::new(cfg());
        // An old incomplete datagram stays at the front while many others complete.
        let old = frag_v4(&udp_v4(0, 200), 64);
        assert_eq!(d.push_ipv4(&old[0], 0), DefragResult::Pending);
        for id in 1..2000u16 {
            let g = udp_v4(id, 200);
            let res = push_all4(&mut d, &frag_v4(&g, 64), 1);
            assert!(matches!(res.last(), Some(DefragResult::Complete { .. })));
        }
        assert!(d.ages.len() <= 2 * d.table.len() + 17);
        assert_eq!(d.counters().in_progress, 1);
    }

    #[test]
    fn defrag_v4_options_and_padding() {
        // Original datagram with a 4-byte option (IHL 6); options are only in the first
        // fragment, later fragments carry a 20-byte header; the last one has padding.
        let plain = udp_v4(8, 1000);
        let mut dgram = plain[..20].to_vec();
        dgram[0] = 0x46;
        dgram.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
        dgram.extend_from_slice(&plain[20..]);
        let total = dgram.len() as u16;
        dgram[2..4].copy_from_slice(&total.to_be_bytes());
        Ipv4Packet::new_unchecked(&mut dgram[..]).fill_checksum();
        let payload = &dgram[24..];
        let mut first = dgram[..24].to_vec();
        first.extend_from_slice(&payload[..512]);
        let mut ip = Ipv4Packet::new_unchecked(&mut first[..]);
        ip.set_total_len(24 + 512);
        ip.set_frag(false, true, 0);
        ip.fill_checksum();
        let mut last = raw_frag_v4(&plain[..20], 512, &payload[512..], false);
        last.extend_from_slice(&[0xee; 10]); // Ethernet-style padding, outside total length
        let mut d = Defragmenter::new(cfg());
        assert_eq!(d.push_ipv4(&last, 0), DefragResult::Pending);
        assert_eq!(d.counters().bytes, payload.len() - 512 + FRAGMENT_OVERHEAD);
        assert_eq!(
            d.push_ipv4(&first, 0),
            DefragResult::Complete {
                packet: dgram.clone(),
                fragments: 2
            }
        );
        assert_eq!(d.counters().bytes, 0);
    }

    #[test]
    fn defrag_garbage_is_malformed() {
        let mut d = Defragmenter::new(cfg());
        for p in [&[][..], &[0x45][..], &[0x45; 19][..], &[0x60; 39][..]] {
            assert_eq!(d.push_ipv4(p, 0), DefragResult::Invalid(DefragError::Malformed));
            assert_eq!(d.push_ipv6(p, 0), DefragResult::Invalid(DefragError::Malformed));
        }
        // IPv6 Fragment header cut short.
        let mut f = frag_v6(&udp_v6(100, false), 0, 1, 64)[0].clone();
        f.truncate(44);
        f[4..6].copy_from_slice(&4u16.to_be_bytes());
        assert_eq!(d.push_ipv6(&f, 0), DefragResult::Invalid(DefragError::Malformed));
        assert_eq!(d.counters().in_progress, 0);
    }

    /// Property: random split points (multiples of 8), random duplicates, random order,
    /// IPv4 and IPv6 interleaved: exactly one byte-exact Complete per split datagram, no Invalid.
    #[test]
    fn defrag_random_splits_reassemble_exactly() {
        let mut rng = XorShift(0xfeed_f00d_1234_5678);
        for round in 0..300u32 {
            let len = 1 + rng.below(6000);
            let g4 = udp_v4(round as u16, len);
            let unfrag = if round % 2 == 0 { 8 } else { 0 };
            let g6 = udp_v6(len, unfrag == 8);
            // IPv6 fragment header template: the unfragmentable part + Fragment header.
            let tmpl6 = frag_v6(&g6, unfrag, round, 1 << 16)[0][..40 + unfrag + 8].to_vec();
            let mut pieces: Vec<(bool, Vec<u8>)> = Vec::new();
            let mut split = [false; 2];
            let mut dups = 0usize;
            for (v6, g, hdr) in [(false, &g4, 20), (true, &g6, 40 + unfrag)] {
                let payload_len = g.len() - hdr;
                let mut cuts = vec![0usize];
                while *cuts.last().unwrap() < payload_len {
                    let step = 8 * (1 + rng.below(200));
                    cuts.push((cuts.last().unwrap() + step).min(payload_len));
                }
                split[v6 as usize] = cuts.len() > 2;
                if !split[v6 as usize] {
                    continue; // a single piece is not a fragment (IPv6 atomic: tested elsewhere)
                }
                for w in cuts.windows(2) {
                    let (a, b) = (w[0], w[1]);
                    let more = b < payload_len;
                    let p = if v6 {
                        let mut p = tmpl6.clone();
                        p[40 + unfrag + 2..40 + unfrag + 4].copy_from_slice(&((a as u16) | more as u16).to_be_bytes());
                        p.extend_from_slice(&g[hdr + a..hdr + b]);
                        let pl = (p.len() - 40) as u16;
                        p[4..6].copy_from_slice(&pl.to_be_bytes());
                        p
                    } else {
                        raw_frag_v4(&g[..20], a, &g[20 + a..20 + b], more)
                    };
                    if rng.below(5) == 0 {
                        pieces.push((v6, p.clone()));
                        dups += 1;
                    }
                    pieces.push((v6, p));
                }
            }
            rng.shuffle(&mut pieces);
            let mut d = Defragmenter::new(cfg());
            let mut done = Vec::new();
            for (v6, p) in &pieces {
                match if *v6 { d.push_ipv6(p, 0) } else { d.push_ipv4(p, 0) } {
                    DefragResult::Complete { packet, .. } => done.push(packet),
                    DefragResult::Pending => {}
                    other => panic!("round {round}: {other:?}"),
                }
            }
            let mut want = Vec::new();
            if split[0] {
                want.push(g4.clone());
            }
            if split[1] {
                want.push(g6.clone());
            }
            // Duplicates arriving after completion start a new datagram (which may even
            // complete again when every piece was duplicated): the result is still exact.
            done.sort();
            done.dedup();
            want.sort();
            assert_eq!(done, want, "round {round}");
            let c = d.counters();
            assert_eq!(c.invalid, 0, "round {round}");
            assert!(c.in_progress <= dups, "round {round}");
            d.expire(u64::MAX);
            assert_eq!((d.counters().in_progress, d.counters().bytes), (0, 0));
        }
    }

    #[test]
    fn defrag_fuzz_never_panics() {
        let mut rng = XorShift(0x1234_5678_9abc_def1);
        let config = DefragConfig {
            max_datagrams: 8,
            max_bytes: 32 * 1024,
            timeout_ms: 50,
        };
        let mut d = Defragmenter::new(config);
        let seeds4: Vec<Vec<u8>> = (0..4).flat_map(|id| frag_v4(&udp_v4(id, 1500), 512)).collect();
        let seeds6: Vec<Vec<u8>> = (0..4)
            .flat_map(|id| {
                frag_v6(
                    &udp_v6(1500, id % 2 == 0),
                    if id % 2 == 0 { 8 } else { 0 },
                    id as u32,
                    512,
                )
            })
            .collect();
        for i in 0..20_000u64 {
            let v6 = rng.next() & 1 == 1;
            let seeds = if v6 { &seeds6 } else { &seeds4 };
            let mut p = seeds[rng.below(seeds.len())].clone();
            match rng.below(4) {
                0 => {
                    // Garbage of random length with a plausible version nibble.
                    let n = rng.below(120);
                    p = (0..n).map(|_| rng.next() as u8).collect();
                    if let Some(b) = p.first_mut() {
                        *b = if v6 { 0x60 } else { 0x45 | (*b & 0x0f) };
                    }
                }
                1 => {
                    let n = rng.below(p.len() + 1);
                    p.truncate(n);
                }
                _ => {
                    // Mutate a few header bytes (lengths, offsets, flags, next headers).
                    for _ in 0..1 + rng.below(4) {
                        let at = rng.below(60.min(p.len()));
                        p[at] = rng.next() as u8;
                    }
                }
            }
            let _ = if v6 { d.push_ipv6(&p, i) } else { d.push_ipv4(&p, i) };
            if i % 97 == 0 {
                d.expire(i);
            }
            let c = d.counters();
            assert!(c.bytes <= config.max_bytes);
            assert!(c.in_progress <= config.max_datagrams);
        }
        d.expire(u64::MAX);
        let c = d.counters();
        assert_eq!((c.in_progress, c.bytes), (0, 0));
    }

    mod pcap {
        use super::super::*;
        use crate::pcapfile::{Capture, LINKTYPE_ETHERNET};
        use std::path::PathBuf;

        fn ip_packets(name: &str) -> Option<Vec<Vec<u8>>> {
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/data/haka-pcaps/modules/protocol/ipv4/test")
                .join(name);
            let cap = match Capture::read(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("skipping {name}: {e}");
                    return None;
                }
            };
            let skip = if cap.link_type == LINKTYPE_ETHERNET { 14 } else { 0 };
            Some(
                cap.packets
                    .iter()
                    .map(|p| p.get(skip..).unwrap_or(&[]).to_vec())
                    .collect(),
            )
        }

        fn run(name: &str) -> Option<Vec<DefragResult>> {
            let pkts = ip_packets(name)?;
            let mut d = Defragmenter::new(DefragConfig::default());
            Some(pkts.iter().map(|p| d.push_ipv4(p, 0)).collect())
        }

        #[test]
        fn defrag_pcap_fragment() {
            let Some(res) = run("fragment.pcap") else { return };
            let complete: Vec<_> = res
                .iter()
                .filter_map(|r| match r {
                    DefragResult::Complete { packet, fragments } => Some((packet, *fragments)),
                    _ => None,
                })
                .collect();
            assert!(!complete.is_empty(), "{res:?}");
            assert!(res.iter().all(|r| !matches!(r, DefragResult::Invalid(_))), "{res:?}");
            let pending = res.iter().filter(|r| **r == DefragResult::Pending).count();
            let absorbed: usize = complete.iter().map(|(_, n)| n - 1).sum();
            assert_eq!(pending, absorbed, "every fragment ends in a complete datagram");
            assert_eq!(complete.len(), 4);
            for (packet, _) in complete {
                check_icmp_datagram(packet);
            }
        }

        /// Byte-exactness on real traffic: the reassembled ICMP message checksum verifies.
        fn check_icmp_datagram(packet: &[u8]) {
            let ip = Ipv4Packet::new_checked(packet).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!(ip.total_len() as usize, packet.len());
            assert!(!ip.is_fragment());
            assert_eq!(ip.protocol(), ip_proto::ICMP);
            assert!(crate::wire::Icmpv4Packet::new_checked(ip.payload())
                .unwrap()
                .verify_checksum());
        }

        #[test]
        fn defrag_pcap_overlap_exact() {
            use DefragResult::{Invalid, Pending};
            let Some(res) = run("fragment_overlap_1.pcap") else {
                return;
            };
            // [0,16) then [8,16): overlap, datagram dropped; the last fragment starts anew.
            assert_eq!(res, vec![Pending, Invalid(DefragError::Overlap), Pending]);
            let Some(res) = run("fragment_overlap_2.pcap") else {
                return;
            };
            // [0,8), [16,24), then [8,32) covers the second.
            assert_eq!(res, vec![Pending, Pending, Invalid(DefragError::Overlap)]);
        }

        #[test]
        fn defrag_pcap_overrun() {
            // 41 fragments of a 60008-byte ICMP message (still within 65535).
            let Some(res) = run("fragment_overrun.pcap") else {
                return;
            };
            let (last, rest) = res.split_last().unwrap();
            assert!(rest.iter().all(|r| *r == DefragResult::Pending));
            match last {
                DefragResult::Complete { packet, fragments } => {
                    assert_eq!((*fragments, packet.len()), (41, 60028));
                    check_icmp_datagram(packet);
                }
                other => panic!("{other:?}"),
            }
        }

        #[test]
        fn defrag_pcap_overlap() {
            let Some(res) = run("fragment_overlap_1.pcap") else {
                return;
            };
            assert!(res.contains(&DefragResult::Invalid(DefragError::Overlap)), "{res:?}");
        }

        #[test]
        fn defrag_pcap_incomplete() {
            let Some(res) = run("fragment_incomplete.pcap") else {
                return;
            };
            assert!(
                res.iter().all(|r| !matches!(r, DefragResult::Complete { .. })),
                "{res:?}"
            );
            assert!(res.contains(&DefragResult::Pending), "{res:?}");
        }
    }
}
