//! TCP stream modification and packet forging (pure, DPDK-free).
//!
//! A Lua rule may edit a TCP stream the Haka way (insert, erase or replace bytes of the data
//! just received). The engine then rewrites the packet and must keep both endpoints consistent:
//! later sequence numbers of that direction move by the net number of bytes added, and the
//! acknowledgement numbers (and SACK edges) of the opposite direction, which count bytes of the
//! *modified* stream, must be converted back to the sender's original numbering.
//!
//! Pieces:
//! - [`Edit`] + [`apply_edits`]: edits of one packet's payload, in original payload offsets.
//! - [`SeqShift`]: per-direction record of the edits so far, in sequence space; maps sequence
//!   numbers forward ([`SeqShift::map_seq`]) and acknowledgements back ([`SeqShift::unmap_ack`]).
//! - [`rewrite_tcp`]: in-place rewrite of a frame (payload, seq, ack, SACK, lengths, checksums).
//! - [`forge_tcp`] / [`forge_rst`]: build a fresh segment of a connection from one of its
//!   packets (resets, injected data).
//!
//! Per-packet use, direction D with shift `sd`, opposite direction O with shift `so`:
//! 1. `new_seq = sd.map_seq(seq)` — *before* recording this packet's own edits, so bytes
//!    inserted at the start of this payload are carried by this packet;
//! 2. `apply_edits(payload, &edits, &mut scratch)` then `sd.record_edits(seq, payload.len(), &edits)`;
//! 3. `rewrite_tcp(buf, len, &meta, &TcpRewrite { payload: Some(&scratch), seq: Some(new_seq),
//!    ack: None, ack_map: Some(&so) })` — the ACK field and the SACK edges go through
//!    `so.unmap_ack`;
//! 4. `so.forget_before(so.unmap_ack(ack))`: data of O acknowledged by this packet is never
//!    referenced again, its edits are folded into a constant offset (keeps `so` short).
//!
//! Retransmissions: [`SeqShift::map_seq`] of an old sequence number uses only the edits before
//! it, so an unedited retransmission is placed where its bytes are in the modified stream. The
//! caller must not record the edits of retransmitted data twice (Haka drops retransmissions of
//! data it already forwarded, `tcp-stream.c`); `record` refuses an edit overlapping a recorded
//! one or lying before an edit already folded away (acknowledged data).
//!
//! Nothing here allocates except [`apply_edits`] growing the caller's reusable output `Vec`.
//! Nothing panics: every offset read from a frame or a [`PacketMeta`] is checked first.
#![deny(unsafe_code)]

use std::fmt;

use arrayvec::ArrayVec;

use crate::dissect::{PacketMeta, L3};
use crate::wire::tcp::flags;
use crate::wire::{be16, be32, checksum, ethertype, ip_proto, put16, put32, Ipv4Packet, Ipv6Packet, TcpSegment};

/// Sequence-space window: edits more than 2^30 bytes behind the newest one are folded into a
/// constant offset (no TCP peer can still retransmit or acknowledge them: the largest window,
/// with window scale 14, is below 2^30), and no single edit may be larger.
pub const SEQ_WINDOW: u32 = 1 << 30;

/// Why an edit, a rewrite or a forge was refused. Nothing is modified when one is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EditError {
    /// Edit number `index` reaches outside the payload: `[at, at + len)` is not within `0..=payload_len`.
    OutOfRange { index: usize, at: usize, len: usize, payload_len: usize },
    /// Edit number `index` starts before the end of the previous one: edits must be sorted by
    /// position and must not overlap.
    Overlap { index: usize, at: usize, prev_end: usize },
    /// A length is beyond what the headers (or sequence space) can carry.
    TooLong { len: usize, max: usize },
    /// The buffer cannot hold the result.
    NoRoom { need: usize, cap: usize },
    /// The packet is not an unfragmented TCP segment over IPv4 or IPv6.
    NotTcp,
    /// The frame does not match its [`PacketMeta`]; names the field at fault.
    Inconsistent(&'static str),
    /// [`SeqShift`]: the edit overlaps one recorded before (e.g. a retransmission edited twice).
    ShiftOverlap { at: u32 },
    /// [`SeqShift`]: the edit lies before an edit already folded (acknowledged data), or more than
    /// [`SEQ_WINDOW`] behind the newest edit.
    ShiftTooOld { at: u32 },
}

impl fmt::Display for EditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EditError::OutOfRange { index, at, len, payload_len } => write!(
                f,
                "edit #{index} (offset {at}, length {len}) is outside the {payload_len}-byte payload"
            ),
            EditError::Overlap { index, at, prev_end } => write!(
                f,
                "edit #{index} at offset {at} overlaps or precedes the previous edit (ending at {prev_end}); edits must be sorted and disjoint"
            ),
            EditError::TooLong { len, max } => write!(f, "length {len} exceeds the maximum {max}"),
            EditError::NoRoom { need, cap } => write!(f, "result needs {need} bytes, buffer holds {cap}"),
            EditError::NotTcp => write!(f, "not an unfragmented TCP segment over IPv4/IPv6"),
            EditError::Inconsistent(what) => write!(f, "frame does not match its metadata: {what}"),
            EditError::ShiftOverlap { at } => {
                write!(f, "stream edit at sequence {at} overlaps an edit already made")
            }
            EditError::ShiftTooOld { at } => {
                write!(f, "stream edit at sequence {at} is before acknowledged (already folded) data")
            }
        }
    }
}

impl std::error::Error for EditError {}

/// Serial-number difference `a - b` (RFC 1982): positive when `a` is after `b`.
#[inline(always)]
fn sdiff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

// ---- payload edits ---------------------------------------------------------------------------

/// One edit of a packet's payload. Offsets are in the **original** payload (before any edit of
/// the same list), which is what the stream layer sees and what [`SeqShift`] records; a list
/// must be sorted by offset and the edited ranges disjoint (see [`validate_edits`]).
///
/// `B` is the byte container: `Vec<u8>` (owned, the default) or `&[u8]` (borrowed, no copy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit<B = Vec<u8>> {
    /// Insert `bytes` before the original byte `at` (`at == payload.len()`: append).
    Insert { at: usize, bytes: B },
    /// Remove the original bytes `at..at + len`.
    Erase { at: usize, len: usize },
    /// Replace the original bytes `at..at + len` by `bytes` (any length).
    Replace { at: usize, len: usize, bytes: B },
}

impl<B: AsRef<[u8]>> Edit<B> {
    /// Original offset where the edit starts.
    pub fn at(&self) -> usize {
        match *self {
            Edit::Insert { at, .. } | Edit::Erase { at, .. } | Edit::Replace { at, .. } => at,
        }
    }

    /// Number of original bytes removed.
    pub fn removed(&self) -> usize {
        match *self {
            Edit::Insert { .. } => 0,
            Edit::Erase { len, .. } | Edit::Replace { len, .. } => len,
        }
    }

    /// Bytes put in their place.
    pub fn inserted(&self) -> &[u8] {
        match self {
            Edit::Insert { bytes, .. } | Edit::Replace { bytes, .. } => bytes.as_ref(),
            Edit::Erase { .. } => &[],
        }
    }
}

/// Checks an edit list against a payload of `payload_len` bytes and returns the edited length.
///
/// Rules: each edit's range `[at, at + removed)` lies within `0..=payload_len`; edits are sorted
/// and disjoint, i.e. each starts at or after the end of the previous one. Several inserts at the
/// same offset are allowed (applied in list order), and an insert may precede an erase/replace
/// starting at the same offset (the inserted bytes come first).
pub fn validate_edits<B: AsRef<[u8]>>(payload_len: usize, edits: &[Edit<B>]) -> Result<usize, EditError> {
    let mut prev_end = 0usize;
    let mut out_len = payload_len;
    for (index, e) in edits.iter().enumerate() {
        let (at, len) = (e.at(), e.removed());
        let end = at.checked_add(len).filter(|&end| end <= payload_len).ok_or(EditError::OutOfRange {
            index,
            at,
            len,
            payload_len,
        })?;
        if at < prev_end {
            return Err(EditError::Overlap { index, at, prev_end });
        }
        prev_end = end;
        // out_len >= len: the removed ranges are disjoint parts of the payload.
        out_len = (out_len - len)
            .checked_add(e.inserted().len())
            .ok_or(EditError::TooLong { len: usize::MAX, max: i32::MAX as usize })?;
    }
    if out_len > i32::MAX as usize || payload_len > i32::MAX as usize {
        return Err(EditError::TooLong { len: out_len.max(payload_len), max: i32::MAX as usize });
    }
    Ok(out_len)
}

/// Applies `edits` (see [`Edit`] and [`validate_edits`] for the rules) to `payload`, writing the
/// result to `out` (cleared first; keep it across packets so its capacity is reused). Returns the
/// length change (bytes added, negative when removed). On error `out` is left untouched.
pub fn apply_edits<B: AsRef<[u8]>>(payload: &[u8], edits: &[Edit<B>], out: &mut Vec<u8>) -> Result<i32, EditError> {
    let out_len = validate_edits(payload.len(), edits)?;
    out.clear();
    out.reserve(out_len);
    let mut pos = 0usize;
    for e in edits {
        // In bounds: validated above (pos <= at <= at + removed <= payload.len()).
        let at = e.at();
        out.extend_from_slice(payload.get(pos..at).unwrap_or(&[]));
        out.extend_from_slice(e.inserted());
        pos = at + e.removed();
    }
    out.extend_from_slice(payload.get(pos..).unwrap_or(&[]));
    Ok(out_len as i32 - payload.len() as i32)
}

// ---- sequence shift --------------------------------------------------------------------------

/// One recorded edit: original sequence range `[at, at + removed)` replaced by `inserted` bytes
/// (insert: `removed == 0`; erase: `inserted == 0`; merged edits: both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rec {
    at: u32,
    removed: u32,
    inserted: u32,
}

impl Rec {
    #[inline(always)]
    fn end(&self) -> u32 {
        self.at.wrapping_add(self.removed)
    }

    /// Net shift (mod 2^32) of everything after the record.
    #[inline(always)]
    fn delta(&self) -> u32 {
        self.inserted.wrapping_sub(self.removed)
    }
}

/// Per-direction record of the stream edits made so far, in sequence space, and the mappings
/// between the original stream (what the sender numbers) and the modified stream (what the
/// receiver sees).
///
/// Semantics of a recorded edit (original range `[at, at+removed)` replaced by `inserted` bytes):
/// - [`map_seq`](Self::map_seq)`(x)` is where the original byte `x` (or a segment starting at `x`)
///   goes: `x` plus the net delta of every edit before it. An insertion at exactly `x` counts
///   (its bytes come before byte `x`); an erase starting at `x` does not. Bytes that were erased
///   or replaced map into their replacement (clamped), which matters only to retransmissions cut
///   at different boundaries.
/// - [`unmap_ack`](Self::unmap_ack)`(a)` converts an acknowledgement of the modified stream back
///   to the original numbering: an ack inside inserted (or replacement) bytes maps to the
///   insertion point (the original bytes after it are not delivered yet); an ack reaching the end
///   of a replacement, or the point where bytes were erased, acknowledges the whole original range
///   (erased bytes will never be delivered, so the sender must not retransmit them).
///
/// Comparisons use serial-number arithmetic, so everything works across the 2^32 wrap as long
/// as the recorded edits span less than 2^31 bytes, which the bounding below guarantees.
///
/// Bounding: at most [`SeqShift::CAPACITY`] records, no allocation (the struct is about 230
/// bytes; a flow can keep it boxed and create it on the first edit, `None` being the identity).
/// - [`forget_before`](Self::forget_before) (call it with each acknowledgement of this direction)
///   folds edits lying entirely before the acknowledged point into a constant offset;
/// - edits more than [`SEQ_WINDOW`] behind the newest edit are folded the same way;
/// - when still full, the two neighbouring records separated by the smallest gap are merged into
///   one: mapping stays exact everywhere outside the merged span (in particular at the packet
///   boundaries around it) and is approximate inside it.
///
/// Folded edits make positions before them approximate: they are acknowledged or far out of any
/// window, so no valid segment refers to them.
#[derive(Clone, Debug, Default)]
pub struct SeqShift {
    /// Sorted by position (serial order); ties: insertions before an erase at the same place.
    /// One spare slot: a record is inserted first, then the list is shrunk back to CAPACITY.
    recs: ArrayVec<Rec, { SeqShift::CAPACITY + 1 }>,
    /// Net delta (mod 2^32) of the folded records.
    folded: u32,
    /// End of the newest folded record: edits before it are refused (they would be counted
    /// twice, e.g. a retransmission of acknowledged data edited again).
    floor: Option<u32>,
    /// Number of merges forced by a full list (approximations), for stats.
    merges: u32,
}

impl SeqShift {
    /// Maximum number of distinct edit records kept.
    pub const CAPACITY: usize = 16;

    pub fn new() -> Self {
        Self::default()
    }

    /// True when no edit was ever recorded (or they cancelled out after folding): sequence
    /// numbers pass unchanged. The fast path.
    #[inline(always)]
    pub fn is_identity(&self) -> bool {
        self.recs.is_empty() && self.folded == 0
    }

    /// Net number of bytes added to the stream so far (mod 2^32, as a signed value): the shift of
    /// everything after the last edit.
    pub fn total_delta(&self) -> i32 {
        self.recs.iter().fold(self.folded, |acc, r| acc.wrapping_add(r.delta())) as i32
    }

    /// Number of edit records currently held (at most [`Self::CAPACITY`]).
    pub fn len(&self) -> usize {
        self.recs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    /// Number of forced merges so far (each makes positions inside the merged span approximate).
    pub fn merges(&self) -> u32 {
        self.merges
    }

    /// Original sequence number -> sequence number in the modified stream (see the type docs).
    #[inline]
    pub fn map_seq(&self, seq: u32) -> u32 {
        let mut off = self.folded;
        for r in &self.recs {
            let d = sdiff(seq, r.at);
            if d < 0 {
                break;
            }
            let d = d as u32;
            if d < r.removed {
                // Inside a removed/replaced range: into the replacement, clamped.
                return r.at.wrapping_add(off).wrapping_add(d.min(r.inserted));
            }
            off = off.wrapping_add(r.delta());
        }
        seq.wrapping_add(off)
    }

    /// Acknowledgement number on the modified stream -> original numbering (see the type docs).
    /// Inlined for the usual case, a connection without edits (every ACK is mapped).
    #[inline(always)]
    pub fn unmap_ack(&self, ack: u32) -> u32 {
        if self.recs.is_empty() {
            return ack.wrapping_sub(self.folded);
        }
        self.unmap_ack_records(ack)
    }

    fn unmap_ack_records(&self, ack: u32) -> u32 {
        let mut off = self.folded;
        for r in &self.recs {
            let k = sdiff(ack, r.at.wrapping_add(off));
            if k < 0 {
                break;
            }
            let k = k as u32;
            if k < r.inserted {
                return r.at;
            }
            // At or past the end of the replacement: the whole original range is delivered
            // (for an erase, the ack reached the point where the bytes were removed). A record
            // starting right there (same modified position) is looked at next.
            off = off.wrapping_add(r.delta());
        }
        ack.wrapping_sub(off)
    }

    /// Records `delta` bytes inserted before original byte `at` (`delta > 0`) or `-delta` original
    /// bytes removed from `at` on (`delta < 0`). `0` is a no-op.
    pub fn record(&mut self, at: u32, delta: i32) -> Result<(), EditError> {
        if delta >= 0 {
            self.record_replace(at, 0, delta as u32)
        } else {
            self.record_replace(at, delta.unsigned_abs(), 0)
        }
    }

    /// Records the original range `[at, at + removed)` replaced by `inserted` bytes.
    /// Equal lengths shift nothing and are not recorded.
    pub fn record_replace(&mut self, at: u32, removed: u32, inserted: u32) -> Result<(), EditError> {
        if removed == inserted {
            return Ok(());
        }
        let rec = Self::make_rec(at, removed, inserted)?;
        self.check(&rec)?;
        self.insert(rec);
        Ok(())
    }

    /// Records the edits of one packet whose payload (of `payload_len` bytes) starts at original
    /// sequence `payload_seq`; the same list as given to [`apply_edits`]. All or nothing: on error
    /// nothing is recorded. Returns the length change.
    pub fn record_edits<B: AsRef<[u8]>>(
        &mut self,
        payload_seq: u32,
        payload_len: usize,
        edits: &[Edit<B>],
    ) -> Result<i32, EditError> {
        if payload_len > SEQ_WINDOW as usize {
            return Err(EditError::TooLong { len: payload_len, max: SEQ_WINDOW as usize });
        }
        let out_len = validate_edits(payload_len, edits)?;
        // Dry run against what is already recorded (the new ones are disjoint among themselves).
        for e in edits {
            if e.removed() != e.inserted().len() {
                let rec = Self::edit_rec(payload_seq, e)?;
                self.check(&rec)?;
            }
        }
        for e in edits {
            if e.removed() != e.inserted().len() {
                let rec = Self::edit_rec(payload_seq, e)?;
                self.insert(rec);
            }
        }
        Ok(out_len as i32 - payload_len as i32)
    }

    /// Data before original sequence `acked` is acknowledged: fold the edits lying strictly before
    /// it into the constant offset (later edits before a folded one are refused). An insertion
    /// exactly at `acked` is kept: an ack inside its bytes also maps to `acked`.
    ///
    /// Call it only with acceptable acknowledgements (not beyond the data sent, as the TCP state
    /// tracks): a bogus ack far ahead would fold edits that later acks still need. It never
    /// refuses anything by itself, so a bogus ack cannot make later edits fail.
    pub fn forget_before(&mut self, acked: u32) {
        while let Some(r) = self.recs.first().copied() {
            if sdiff(acked, r.end()) <= 0 {
                break;
            }
            self.fold_front();
        }
    }

    fn make_rec(at: u32, removed: u32, inserted: u32) -> Result<Rec, EditError> {
        let big = removed.max(inserted);
        if big > SEQ_WINDOW {
            return Err(EditError::TooLong { len: big as usize, max: SEQ_WINDOW as usize });
        }
        Ok(Rec { at, removed, inserted })
    }

    fn edit_rec<B: AsRef<[u8]>>(payload_seq: u32, e: &Edit<B>) -> Result<Rec, EditError> {
        // Offsets and lengths are <= payload_len <= SEQ_WINDOW (checked by the caller).
        let at = payload_seq.wrapping_add(e.at() as u32);
        Self::make_rec(at, e.removed() as u32, e.inserted().len() as u32)
    }

    /// Index where `rec` goes: after every record before it, and after insertions at the same
    /// position (a new erase or insertion there comes after them).
    fn slot(&self, rec: &Rec) -> usize {
        self.recs
            .iter()
            .position(|r| {
                let d = sdiff(r.at, rec.at);
                d > 0 || (d == 0 && r.removed > 0)
            })
            .unwrap_or(self.recs.len())
    }

    fn check(&self, rec: &Rec) -> Result<(), EditError> {
        let too_old = EditError::ShiftTooOld { at: rec.at };
        if let Some(f) = self.floor {
            let d = sdiff(rec.at, f);
            // More than a window "behind" the floor means far ahead of it after wrapping.
            if d < 0 && d >= -(SEQ_WINDOW as i32) {
                return Err(too_old);
            }
        }
        if let Some(last) = self.recs.last() {
            if sdiff(last.at, rec.at) > SEQ_WINDOW as i32 {
                return Err(too_old);
            }
        }
        let i = self.slot(rec);
        let overlap = EditError::ShiftOverlap { at: rec.at };
        if let Some(prev) = i.checked_sub(1).and_then(|p| self.recs.get(p)) {
            if sdiff(rec.at, prev.end()) < 0 {
                return Err(overlap);
            }
        }
        if let Some(next) = self.recs.get(i) {
            if sdiff(next.at, rec.end()) < 0 {
                return Err(overlap);
            }
        }
        Ok(())
    }

    /// Inserts a checked record, then restores the bounds (window folding, merging).
    fn insert(&mut self, rec: Rec) {
        // Fold the oldest if the spare slot is taken (cannot happen: the list is shrunk back to
        // CAPACITY after each insertion; kept so that `insert` can never panic).
        if self.recs.is_full() {
            self.fold_front();
        }
        let i = self.slot(&rec);
        self.recs.insert(i, rec);
        if self.floor.is_some_and(|f| sdiff(rec.at, f) < 0) {
            self.floor = None; // far ahead of a stale floor (see `check`)
        }
        // Window: fold records ending more than SEQ_WINDOW behind the newest.
        if let Some(newest) = self.recs.last().map(|r| r.at) {
            while self.recs.len() > 1 && self.recs.first().is_some_and(|r| sdiff(newest, r.end()) > SEQ_WINDOW as i32) {
                self.fold_front();
            }
        }
        while self.recs.len() > Self::CAPACITY {
            self.merge_closest();
        }
    }

    fn fold_front(&mut self) {
        if self.recs.is_empty() {
            return;
        }
        let r = self.recs.remove(0);
        self.folded = self.folded.wrapping_add(r.delta());
        match self.floor {
            Some(f) if sdiff(r.end(), f) <= 0 => {}
            _ => self.floor = Some(r.end()),
        }
    }

    /// Merges the two neighbouring records separated by the smallest gap (the oldest pair on ties).
    fn merge_closest(&mut self) {
        let mut best: Option<(usize, u32)> = None;
        for i in 1..self.recs.len() {
            let gap = self.recs[i].at.wrapping_sub(self.recs[i - 1].end());
            if best.is_none_or(|(_, g)| gap < g) {
                best = Some((i - 1, gap));
            }
        }
        let Some((i, gap)) = best else { return };
        let b = self.recs.remove(i + 1);
        let a = &mut self.recs[i];
        // Exact outside [a.at, b.end): same total delta; the gap is kept on both sides.
        a.removed = a.removed.wrapping_add(gap).wrapping_add(b.removed);
        a.inserted = a.inserted.wrapping_add(gap).wrapping_add(b.inserted);
        self.merges = self.merges.wrapping_add(1);
    }
}

// ---- frame rewriting -------------------------------------------------------------------------

/// Offsets of a TCP segment inside a frame, checked against the frame bytes.
#[derive(Clone, Copy, Debug)]
struct TcpLayout {
    v6: bool,
    l3: usize,
    l4: usize,
    /// Payload offset (= l4 + TCP header length).
    po: usize,
    plen: usize,
}

/// Checks that `frame` holds the unfragmented TCP segment `meta` describes and returns its
/// layout. Every later index into the frame is within `..po + plen`.
fn tcp_layout(frame: &[u8], meta: &PacketMeta) -> Result<TcpLayout, EditError> {
    let v6 = match meta.l3 {
        L3::Ipv4 => false,
        L3::Ipv6 => true,
        L3::Other(_) => return Err(EditError::NotTcp),
    };
    if meta.proto != ip_proto::TCP || !meta.has_l4 || meta.fragment {
        return Err(EditError::NotTcp);
    }
    let (l3, l4, po, plen) =
        (meta.l3_offset as usize, meta.l4_offset as usize, meta.payload_offset as usize, meta.payload_len as usize);
    let ip_end = l3 + meta.ip_len as usize;
    if po + plen != ip_end || ip_end > frame.len() {
        return Err(EditError::Inconsistent("payload offset/length vs IP length"));
    }
    if l4 + TcpSegment::<&[u8]>::MIN_HEADER_LEN > po {
        return Err(EditError::Inconsistent("TCP header offset"));
    }
    let hl = ((frame[l4 + 12] >> 4) as usize) * 4;
    if l4 + hl != po {
        return Err(EditError::Inconsistent("TCP data offset"));
    }
    let ip = &frame[l3..ip_end];
    if v6 {
        if l4 < l3 + Ipv6Packet::<&[u8]>::HEADER_LEN || ip[0] >> 4 != 6 {
            return Err(EditError::Inconsistent("IPv6 header"));
        }
        if be16(ip, 4) as usize + Ipv6Packet::<&[u8]>::HEADER_LEN != ip.len() {
            return Err(EditError::Inconsistent("IPv6 payload length"));
        }
        if l4 == l3 + Ipv6Packet::<&[u8]>::HEADER_LEN && ip[6] != ip_proto::TCP {
            return Err(EditError::Inconsistent("IPv6 next header"));
        }
    } else {
        if l4 < l3 + Ipv4Packet::<&[u8]>::MIN_HEADER_LEN || ip[0] >> 4 != 4 {
            return Err(EditError::Inconsistent("IPv4 header"));
        }
        if ((ip[0] & 0x0f) as usize) * 4 != l4 - l3 {
            return Err(EditError::Inconsistent("IPv4 header length"));
        }
        if be16(ip, 2) as usize != ip.len() || ip[9] != ip_proto::TCP {
            return Err(EditError::Inconsistent("IPv4 total length/protocol"));
        }
    }
    Ok(TcpLayout { v6, l3, l4, po, plen })
}

/// What [`rewrite_tcp`] changes; `Default` changes nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpRewrite<'a> {
    /// New TCP payload (replaces the old one and drops any Ethernet padding).
    pub payload: Option<&'a [u8]>,
    /// New sequence number.
    pub seq: Option<u32>,
    /// New acknowledgement number (written as is, whatever the ACK flag).
    pub ack: Option<u32>,
    /// The opposite direction's shift: SACK block edges (option kind 5) are converted with its
    /// [`SeqShift::unmap_ack`], and so is the acknowledgement number when `ack` is `None` and
    /// the ACK flag is set.
    pub ack_map: Option<&'a SeqShift>,
    /// With `payload`: how many of its first and last bytes are the old payload's, when the
    /// caller knows (its edits' extent): the checksum update then skips comparing them.
    pub unchanged: Option<(usize, usize)>,
    /// The TCP checksum computed again over the rewritten segment (Haka) instead of updated.
    pub recompute: bool,
}

/// Rewrites, in place, the TCP segment `meta` describes in `buf[..len]`; `buf` is the whole
/// usable buffer (e.g. the mbuf data room), so the frame may grow up to `buf.len()`.
/// Returns the new frame length.
///
/// Changes: payload (frame cut right after it: Ethernet padding dropped; NICs pad short frames
/// on transmit), IPv4 total length + header checksum or IPv6 payload length (extension headers
/// kept), seq, ack, SACK edges, and the TCP checksum. Checksums are updated incrementally
/// (RFC 1624), so a segment that arrived with a bad checksum keeps a bad one: the engine never
/// launders corrupted data. The urgent pointer is left as is.
///
/// Errors (nothing modified): `len > buf.len()`, `meta` not matching the frame, not TCP, an IP
/// length over 65535 ([`EditError::TooLong`]) or a frame not fitting `buf` ([`EditError::NoRoom`]).
pub fn rewrite_tcp(buf: &mut [u8], len: usize, meta: &PacketMeta, rw: &TcpRewrite<'_>) -> Result<usize, EditError> {
    let frame = buf.get(..len).ok_or(EditError::Inconsistent("frame length beyond buffer"))?;
    let TcpLayout { v6, l3, l4, po, plen } = tcp_layout(frame, meta)?;
    let (new_plen, new_len) = match rw.payload {
        Some(p) => (p.len(), po + p.len()),
        None => (plen, len),
    };
    // IPv4: total length; IPv6: payload length (header excluded, extension headers included).
    let ip_hdr = if v6 { Ipv6Packet::<&[u8]>::HEADER_LEN } else { 0 };
    let new_ip_field = po - l3 - ip_hdr + new_plen;
    if new_ip_field > u16::MAX as usize {
        return Err(EditError::TooLong { len: new_ip_field, max: u16::MAX as usize });
    }
    if new_len > buf.len() {
        return Err(EditError::NoRoom { need: new_len, cap: buf.len() });
    }
    let old_seg_len = (po - l4 + plen) as u16;
    let new_seg_len = (po - l4 + new_plen) as u16;

    // TCP checksum, incrementally: HC' = ~(~HC + ~old + new) over every changed piece.
    let old_ck = be16(buf, l4 + 16);
    put16(buf, l4 + 16, 0);
    let mut parts: [u32; 7] = [(!old_ck) as u32, (!checksum::fold(checksum::sum(&buf[l4..po]))) as u32, 0, 0, 0, 0, 0];
    if let Some(p) = rw.payload {
        let (removed, added, from) = payload_change_sums(&buf[po..po + plen], p, rw.unchanged);
        parts[2] = (!checksum::fold(removed)) as u32;
        parts[3] = added;
        parts[4] = (!old_seg_len) as u32;
        parts[5] = new_seg_len as u32;
        buf[po + from..new_len].copy_from_slice(&p[from..]);
    }

    // Header fields.
    let tcp_flags = buf[l4 + 13];
    if let Some(s) = rw.seq {
        put32(buf, l4 + 4, s);
    }
    match (rw.ack, rw.ack_map) {
        (Some(a), _) => put32(buf, l4 + 8, a),
        (None, Some(m)) if tcp_flags & flags::ACK != 0 => {
            let a = be32(buf, l4 + 8);
            put32(buf, l4 + 8, m.unmap_ack(a));
        }
        _ => {}
    }
    if let Some(m) = rw.ack_map {
        shift_sack(&mut buf[l4 + 20..po], m);
    }
    parts[6] = checksum::sum(&buf[l4..po]);
    put16(buf, l4 + 16, checksum::finish(checksum::combine(&parts)));

    // IP lengths.
    if rw.payload.is_some() {
        let new_field = new_ip_field as u16;
        if v6 {
            put16(buf, l3 + 4, new_field);
        } else {
            let old_field = be16(buf, l3 + 2);
            put16(buf, l3 + 2, new_field);
            let c = checksum::update16(be16(buf, l3 + 10), old_field, new_field);
            put16(buf, l3 + 10, c);
        }
    }
    if rw.recompute {
        // (the segment ends with its payload: Ethernet padding after it is not summed)
        recompute_tcp_checksum(&mut buf[..po + new_plen], v6, l3, l4);
    }
    Ok(new_len)
}

/// The TCP checksum of the segment at `l4` (to the end of `buf`) computed again, from the
/// IP header's addresses at `l3`.
fn recompute_tcp_checksum(buf: &mut [u8], v6: bool, l3: usize, l4: usize) {
    if v6 {
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src.copy_from_slice(&buf[l3 + 8..l3 + 24]);
        dst.copy_from_slice(&buf[l3 + 24..l3 + 40]);
        TcpSegment::new_unchecked(&mut buf[l4..]).fill_checksum_v6(&src, &dst);
    } else {
        let s4 = [buf[l3 + 12], buf[l3 + 13], buf[l3 + 14], buf[l3 + 15]];
        let d4 = [buf[l3 + 16], buf[l3 + 17], buf[l3 + 18], buf[l3 + 19]];
        TcpSegment::new_unchecked(&mut buf[l4..]).fill_checksum_v4(&s4, &d4);
    }
}

/// Whether the TCP checksum of the segment at `l4` (IP header at `l3`) is right.
fn tcp_checksum_ok(buf: &[u8], v6: bool, l3: usize, l4: usize) -> bool {
    let seg = TcpSegment::new_unchecked(&buf[l4..]);
    if v6 {
        let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
        src.copy_from_slice(&buf[l3 + 8..l3 + 24]);
        dst.copy_from_slice(&buf[l3 + 24..l3 + 40]);
        seg.verify_checksum_v6(&src, &dst)
    } else {
        let s4 = [buf[l3 + 12], buf[l3 + 13], buf[l3 + 14], buf[l3 + 15]];
        let d4 = [buf[l3 + 16], buf[l3 + 17], buf[l3 + 18], buf[l3 + 19]];
        seg.verify_checksum_v4(&s4, &d4)
    }
}

/// Sets the IP length field of the packet at `l3` to `ip_len` (IPv4: total length and header
/// checksum; IPv6: payload length) and fills the TCP checksum (a wrong one stays wrong: `ok`).
fn finish_split_frame(f: &mut [u8], v6: bool, l3: usize, l4: usize, ok: bool) {
    let ip_len = f.len() - l3;
    if v6 {
        put16(f, l3 + 4, (ip_len - Ipv6Packet::<&[u8]>::HEADER_LEN) as u16);
    } else {
        put16(f, l3 + 2, ip_len as u16);
        Ipv4Packet::new_unchecked(&mut f[l3..]).fill_checksum();
    }
    recompute_tcp_checksum(f, v6, l3, l4);
    if !ok {
        let c = be16(f, l4 + 16);
        put16(f, l4 + 16, !c);
    }
}

/// Splits a TCP segment whose IP packet (`frame[..len]`, IP header at `l3`, TCP header at
/// `l4`) is longer than `mtu` bytes, as Haka's TCP forge did when stream edits made a
/// segment grow past the MTU: the frame keeps what fits (its new length is returned), FIN
/// and PSH cleared; the rest leaves in new frames (into `extra`, in order), each a copy of
/// the frame's link and IP headers (IPv4 identification 0) with a 20-byte TCP header (no
/// options), the sequence number moved on, the original FIN and PSH on the last one. The
/// checksums are computed; a segment whose TCP checksum was wrong gets wrong ones (the
/// engine never launders corrupted data). Nothing happens (`len` is returned) when the
/// packet fits, when `mtu` leaves no room for payload, or the frame is not consistent.
pub fn split_tcp(frame: &mut [u8], len: usize, v6: bool, l3: usize, l4: usize, mtu: usize, extra: &mut Vec<Vec<u8>>) -> usize {
    const TCP_MIN: usize = 20;
    if len > frame.len() || l4 + TCP_MIN > len || l3 >= l4 || len - l3 <= mtu {
        return len;
    }
    let po = l4 + ((frame[l4 + 12] >> 4) as usize) * 4;
    if po > len || po - l3 >= mtu || l4 - l3 + TCP_MIN >= mtu {
        return len;
    }
    let ok = tcp_checksum_ok(&frame[..len], v6, l3, l4);
    let first = mtu - (po - l3);
    let flags_at = l4 + 13;
    let orig_flags = frame[flags_at];
    let seq = be32(frame, l4 + 4);
    let last_flags = flags::FIN | flags::PSH;
    let mut at = po + first;
    let per = mtu - (l4 - l3 + TCP_MIN);
    while at < len {
        let n = per.min(len - at);
        let mut f = Vec::with_capacity(l4 + TCP_MIN + n);
        f.extend_from_slice(&frame[..l4 + TCP_MIN]);
        f.extend_from_slice(&frame[at..at + n]);
        if !v6 {
            put16(&mut f, l3 + 4, 0);
        }
        put32(&mut f, l4 + 4, seq.wrapping_add((at - po) as u32));
        f[l4 + 12] = (5 << 4) | (f[l4 + 12] & 0x0f);
        f[flags_at] = if at + n < len { orig_flags & !last_flags } else { orig_flags };
        finish_split_frame(&mut f, v6, l3, l4, ok);
        extra.push(f);
        at += n;
    }
    frame[flags_at] = orig_flags & !last_flags;
    let new_len = po + first;
    finish_split_frame(&mut frame[..new_len], v6, l3, l4, ok);
    new_len
}

/// The checksum change of a payload rewritten from `old` to `new`: the partial sums of the
/// bytes that go and of the bytes that come, and the offset of the first byte that differs
/// (nothing before it is rewritten). Only what lies between the common prefix and the
/// common suffix changed; the suffix moves, which changes its sum only when it moves by an
/// odd number of bytes (its bytes swap halves of their 16-bit words). An edit in a head is
/// then summed over a few bytes, where summing both payloads was two passes over them.
/// The payload starts at an even offset of the segment (the TCP header is whole words).
fn payload_change_sums(old: &[u8], new: &[u8], known: Option<(usize, usize)>) -> (u32, u32, usize) {
    let (pre, suf) = match known {
        Some((p, q)) => {
            let pre = p.min(old.len()).min(new.len());
            (pre, q.min(old.len() - pre).min(new.len() - pre))
        }
        None => {
            let pre = common_prefix(old, new);
            (pre, common_suffix(&old[pre..], &new[pre..]))
        }
    };
    let (gone, come) = (&old[pre..old.len() - suf], &new[pre..new.len() - suf]);
    // partial sum of `piece` placed at byte offset `at` of the payload
    let at = |piece: &[u8], at: usize| {
        let s = checksum::fold(checksum::sum(piece));
        (if at % 2 == 1 { s.swap_bytes() } else { s }) as u32
    };
    let (mut removed, mut added) = (at(gone, pre), at(come, pre));
    if (gone.len() + come.len()) % 2 == 1 {
        let tail = &old[old.len() - suf..];
        removed = checksum::combine(&[removed, at(tail, pre + gone.len())]);
        added = checksum::combine(&[added, at(tail, pre + come.len())]);
    }
    (removed, added, pre)
}

/// 32 bytes of `a` and `b` from `i` are equal (four word compares, no call to memcmp).
#[inline(always)]
fn same32(a: &[u8], b: &[u8], i: usize) -> bool {
    let w = |s: &[u8], k: usize| u64::from_ne_bytes(s[i + k..i + k + 8].try_into().unwrap_or_default());
    (w(a, 0) ^ w(b, 0)) | (w(a, 8) ^ w(b, 8)) | (w(a, 16) ^ w(b, 16)) | (w(a, 24) ^ w(b, 24)) == 0
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 32 <= n && same32(a, b, i) {
        i += 32;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[a.len() - n..], &b[b.len() - n..]);
    let mut i = 0;
    while i + 32 <= n && same32(a, b, n - i - 32) {
        i += 32;
    }
    while i < n && a[n - i - 1] == b[n - i - 1] {
        i += 1;
    }
    i
}

/// [`rewrite_tcp`] for a segment whose payload stays as it is, the case of every packet of a
/// connection after an edit: its sequence number becomes `seq` and its acknowledgement number
/// (with the ACK flag) goes through `ack_map.unmap_ack`; the checksum is updated for those two
/// words alone (RFC 1624), without a pass over the header. A segment carrying SACK blocks
/// takes the general path (their edges move too). Errors as `rewrite_tcp`; nothing is
/// modified then.
pub fn shift_tcp(buf: &mut [u8], meta: &PacketMeta, seq: u32, ack_map: &SeqShift, recompute: bool) -> Result<(), EditError> {
    let len = buf.len();
    let TcpLayout { l4, po, .. } = tcp_layout(buf, meta)?;
    // (recomputing, a segment whose numbers do not move is left as it is)
    let moves = be32(buf, l4 + 4) != seq
        || (buf[l4 + 13] & flags::ACK != 0 && ack_map.unmap_ack(be32(buf, l4 + 8)) != be32(buf, l4 + 8));
    if (recompute && moves) || has_sack(&buf[l4 + 20..po]) {
        let rw = TcpRewrite { payload: None, seq: Some(seq), ack: None, ack_map: Some(ack_map), unchanged: None, recompute };
        return rewrite_tcp(buf, len, meta, &rw).map(|_| ());
    }
    let mut ck = be16(buf, l4 + 16);
    let old_seq = be32(buf, l4 + 4);
    if old_seq != seq {
        put32(buf, l4 + 4, seq);
        ck = checksum::update32(ck, old_seq, seq);
    }
    if buf[l4 + 13] & flags::ACK != 0 {
        let old_ack = be32(buf, l4 + 8);
        let ack = ack_map.unmap_ack(old_ack);
        if ack != old_ack {
            put32(buf, l4 + 8, ack);
            ck = checksum::update32(ck, old_ack, ack);
        }
    }
    put16(buf, l4 + 16, ck);
    Ok(())
}

/// Whether the TCP options `opts` hold a SACK option (kind 5); a malformed list counts as
/// holding one (the general path then handles it as it does).
fn has_sack(opts: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&kind) = opts.get(i) {
        match kind {
            0 => return false,
            1 => i += 1,
            5 => return true,
            _ => match opts.get(i + 1) {
                Some(&l) if l >= 2 => i += l as usize,
                _ => return true,
            },
        }
    }
    false
}

/// Converts the SACK block edges (option kind 5) found in the TCP options `opts` with
/// `map.unmap_ack`. Stops at the end-of-list option or at a malformed length (options after it
/// cannot be located; the segment is otherwise left alone).
fn shift_sack(opts: &mut [u8], map: &SeqShift) {
    let mut i = 0;
    while let Some(&kind) = opts.get(i) {
        match kind {
            0 => return,
            1 => i += 1,
            _ => {
                let Some(&olen) = opts.get(i + 1) else { return };
                let olen = olen as usize;
                if olen < 2 || i + olen > opts.len() {
                    return;
                }
                if kind == 5 && (olen - 2).is_multiple_of(8) {
                    let mut e = i + 2;
                    while e + 4 <= i + olen {
                        let v = be32(opts, e);
                        put32(opts, e, map.unmap_ack(v));
                        e += 4;
                    }
                }
                i += olen;
            }
        }
    }
}

// ---- forging ---------------------------------------------------------------------------------

/// A segment to forge with [`forge_tcp`].
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpForge<'a> {
    /// `false`: same addresses and ports as the template (goes on to the template's receiver);
    /// `true`: MACs, addresses and ports swapped (goes back to the template's sender).
    pub toward_sender: bool,
    pub seq: u32,
    pub ack: u32,
    /// TCP flags byte (see [`crate::wire::tcp::flags`]).
    pub flags: u8,
    pub window: u16,
    pub payload: &'a [u8],
    /// IPv4 Don't Fragment bit.
    pub dont_fragment: bool,
}

/// Ethernet framing is recognised from the L3 offset (14, 18 or 22: 0 to 2 VLAN tags) with the
/// IP ethertype just before it; other link headers (raw IP, DLT_NULL, Linux SLL) are copied as
/// they are (they carry no destination to swap).
fn is_ethernet(template: &[u8], l3: usize, v6: bool) -> bool {
    let want = if v6 { ethertype::IPV6 } else { ethertype::IPV4 };
    matches!(l3, 14 | 18 | 22) && template.get(l3 - 2..l3).is_some_and(|t| u16::from_be_bytes([t[0], t[1]]) == want)
}

/// Builds a fresh TCP segment of the template's connection into `out` and returns its length.
///
/// Link header: the template's (Ethernet + VLAN tags, or raw/NULL/SLL), Ethernet MACs swapped
/// when `toward_sender`. IPv4: 20-byte header, TOS 0, id 0, DF, TTL 64; IPv6: no extension
/// header, traffic class and flow label 0, hop limit 64. TCP: 20-byte header (no options),
/// urgent pointer 0. All checksums computed. No padding.
///
/// Errors: template not a TCP packet of IPv4/IPv6 ([`EditError::NotTcp`]), template shorter than
/// its link header, payload too long for the IP length, `out` too small ([`EditError::NoRoom`]).
pub fn forge_tcp(template: &[u8], meta: &PacketMeta, spec: &TcpForge<'_>, out: &mut [u8]) -> Result<usize, EditError> {
    let v6 = match meta.l3 {
        L3::Ipv4 => false,
        L3::Ipv6 => true,
        L3::Other(_) => return Err(EditError::NotTcp),
    };
    if meta.proto != ip_proto::TCP || !meta.has_l4 {
        return Err(EditError::NotTcp);
    }
    let l3 = meta.l3_offset as usize;
    let l2 = template.get(..l3).ok_or(EditError::Inconsistent("template shorter than its link header"))?;
    let ip_hl = if v6 { Ipv6Packet::<&[u8]>::HEADER_LEN } else { Ipv4Packet::<&[u8]>::MIN_HEADER_LEN };
    let seg_len = TcpSegment::<&[u8]>::MIN_HEADER_LEN + spec.payload.len();
    let ip_field = if v6 { seg_len } else { ip_hl + seg_len };
    if ip_field > u16::MAX as usize {
        return Err(EditError::TooLong { len: ip_field, max: u16::MAX as usize });
    }
    let l4 = l3 + ip_hl;
    let total = l4 + seg_len;
    let cap = out.len();
    let out = out.get_mut(..total).ok_or(EditError::NoRoom { need: total, cap })?;

    out[..l3].copy_from_slice(l2);
    if spec.toward_sender && is_ethernet(template, l3, v6) {
        out[..6].copy_from_slice(&l2[6..12]);
        out[6..12].copy_from_slice(&l2[..6]);
    }
    let (src, dst) = if spec.toward_sender { (meta.dst_addr, meta.src_addr) } else { (meta.src_addr, meta.dst_addr) };
    let (sport, dport) =
        if spec.toward_sender { (meta.dst_port, meta.src_port) } else { (meta.src_port, meta.dst_port) };
    let (ip, seg) = out[l3..].split_at_mut(ip_hl);

    {
        let mut t = TcpSegment::new_unchecked(&mut *seg);
        t.set_src_port(sport);
        t.set_dst_port(dport);
        t.set_seq_number(spec.seq);
        t.set_ack_number(spec.ack);
        t.set_data_offset(5);
        t.set_flags(spec.flags);
        t.set_window(spec.window);
        t.set_checksum(0);
        t.set_urgent(0);
    }
    seg[TcpSegment::<&[u8]>::MIN_HEADER_LEN..].copy_from_slice(spec.payload);

    if v6 {
        let mut p = Ipv6Packet::new_unchecked(&mut *ip);
        p.set_version_tc_flow(0, 0);
        p.set_payload_len(ip_field as u16);
        p.set_next_header(ip_proto::TCP);
        p.set_hop_limit(64);
        p.set_src_addr(src);
        p.set_dst_addr(dst);
        TcpSegment::new_unchecked(&mut *seg).fill_checksum_v6(&src, &dst);
    } else {
        let s4 = [src[12], src[13], src[14], src[15]];
        let d4 = [dst[12], dst[13], dst[14], dst[15]];
        let mut p = Ipv4Packet::new_unchecked(&mut *ip);
        p.set_version_ihl(5);
        p.set_dscp_ecn(0, 0);
        p.set_total_len(ip_field as u16);
        p.set_ident(0);
        p.set_frag(spec.dont_fragment, false, 0);
        p.set_ttl(64);
        p.set_protocol(ip_proto::TCP);
        p.set_src_addr(s4);
        p.set_dst_addr(d4);
        p.fill_checksum();
        TcpSegment::new_unchecked(&mut *seg).fill_checksum_v4(&s4, &d4);
    }
    Ok(total)
}

/// Builds a RST+ACK (window 0, no payload, DF) of the template's connection; see
/// [`forge_tcp`]. `bare`: Haka's form instead, the RST flag alone, acknowledgement 0 (`ack`
/// ignored), DF clear.
///
/// Which numbers (so that the receiving host accepts it: RFC 5961 wants `seq` exactly at its
/// next expected byte), with `sd`/`so` the shifts of the template's direction and the opposite:
/// - toward the template's receiver (`toward_sender = false`): `seq = sd.map_seq(template seq)`
///   (the template dropped; add the length of its forwarded payload if it was sent on),
///   `ack = so.unmap_ack(template ack)`;
/// - toward the template's sender (`toward_sender = true`): `seq = template ack` (already in the
///   sender's view, no mapping), `ack = template seq + payload length (+1 for SYN, +1 for FIN)`
///   (the sender's own numbering, no mapping).
pub fn forge_rst(
    template: &[u8],
    meta: &PacketMeta,
    toward_sender: bool,
    seq: u32,
    ack: u32,
    bare: bool,
    out: &mut [u8],
) -> Result<usize, EditError> {
    let (flags, ack) = if bare { (flags::RST, 0) } else { (flags::RST | flags::ACK, ack) };
    let spec = TcpForge { toward_sender, seq, ack, flags, window: 0, payload: &[], dont_fragment: !bare };
    forge_tcp(template, meta, &spec, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dissect::{dissect, DissectOptions, LinkType};
    use crate::wire::ethertype;

    // ---- helpers ---------------------------------------------------------------------------

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

        fn below(&mut self, n: u64) -> u64 {
            if n == 0 {
                0
            } else {
                self.next() % n
            }
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }

        /// Random bytes, random length below `max`.
        fn rbytes(&mut self, max: u64) -> Vec<u8> {
            let n = self.below(max) as usize;
            self.bytes(n)
        }
    }

    const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
    const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
    const SRC4: [u8; 4] = [198, 18, 0, 1];
    const DST4: [u8; 4] = [198, 18, 0, 2];
    const SRC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    /// A TCP frame description for the builder below.
    #[derive(Clone)]
    struct Spec {
        v6: bool,
        /// VLAN ids, outermost first (0 to 2).
        vlans: Vec<u16>,
        /// IPv6 hop-by-hop header of 8 bytes before TCP.
        hbh: bool,
        /// IPv4 options (multiple of 4 bytes).
        ip_opts: Vec<u8>,
        tcp_opts: Vec<u8>,
        seq: u32,
        ack: u32,
        flags: u8,
        payload: Vec<u8>,
        /// Ethernet padding bytes appended after the IP packet.
        pad: usize,
        /// Raw IP (no Ethernet header).
        raw: bool,
    }

    fn spec(v6: bool, payload: &[u8]) -> Spec {
        Spec {
            v6,
            vlans: vec![],
            hbh: false,
            ip_opts: vec![],
            tcp_opts: vec![],
            seq: 1000,
            ack: 5000,
            flags: flags::ACK | flags::PSH,
            payload: payload.to_vec(),
            pad: 0,
            raw: false,
        }
    }

    /// Builds the frame with correct lengths and checksums (using the wire views; what is
    /// tested is the rewriting, and results are verified with etherparse and a naive sum).
    fn build(s: &Spec) -> Vec<u8> {
        let mut f = Vec::new();
        if !s.raw {
            f.extend_from_slice(&MAC_B);
            f.extend_from_slice(&MAC_A);
            for (i, &vid) in s.vlans.iter().enumerate() {
                let tpid = if i == 0 && s.vlans.len() == 2 { ethertype::QINQ } else { ethertype::VLAN };
                f.extend_from_slice(&tpid.to_be_bytes());
                f.extend_from_slice(&(0x6000 | vid).to_be_bytes());
            }
            f.extend_from_slice(&(if s.v6 { ethertype::IPV6 } else { ethertype::IPV4 }).to_be_bytes());
        }
        let mut tcp = vec![0u8; 20];
        {
            let mut t = TcpSegment::new_unchecked(&mut tcp[..]);
            t.set_src_port(40000);
            t.set_dst_port(80);
            t.set_seq_number(s.seq);
            t.set_ack_number(s.ack);
            t.set_data_offset(5 + (s.tcp_opts.len() / 4) as u8);
            t.set_flags(s.flags);
            t.set_window(29200);
        }
        tcp.extend_from_slice(&s.tcp_opts);
        tcp.extend_from_slice(&s.payload);
        if s.v6 {
            let ext = if s.hbh { 8 } else { 0 };
            let mut ip = vec![0u8; 40];
            {
                let mut p = Ipv6Packet::new_unchecked(&mut ip[..]);
                p.set_version_tc_flow(0, 0xbeef);
                p.set_payload_len((ext + tcp.len()) as u16);
                p.set_next_header(if s.hbh { ip_proto::HOP_BY_HOP } else { ip_proto::TCP });
                p.set_hop_limit(60);
                p.set_src_addr(SRC6);
                p.set_dst_addr(DST6);
            }
            if s.hbh {
                ip.extend_from_slice(&[ip_proto::TCP, 0, 1, 4, 0, 0, 0, 0]); // PadN
            }
            TcpSegment::new_unchecked(&mut tcp[..]).fill_checksum_v6(&SRC6, &DST6);
            f.extend_from_slice(&ip);
        } else {
            let hl = 20 + s.ip_opts.len();
            let mut ip = vec![0u8; hl];
            {
                let mut p = Ipv4Packet::new_unchecked(&mut ip[..]);
                p.set_version_ihl((hl / 4) as u8);
                p.set_total_len((hl + tcp.len()) as u16);
                p.set_ident(0x4242);
                p.set_frag(true, false, 0);
                p.set_ttl(60);
                p.set_protocol(ip_proto::TCP);
                p.set_src_addr(SRC4);
                p.set_dst_addr(DST4);
            }
            ip[20..].copy_from_slice(&s.ip_opts);
            Ipv4Packet::new_unchecked(&mut ip[..]).fill_checksum();
            TcpSegment::new_unchecked(&mut tcp[..]).fill_checksum_v4(&SRC4, &DST4);
            f.extend_from_slice(&ip);
        }
        f.extend_from_slice(&tcp);
        f.extend(std::iter::repeat_n(0u8, s.pad));
        f
    }

    fn link(raw: bool) -> LinkType {
        if raw {
            LinkType::RawIp
        } else {
            LinkType::Ethernet
        }
    }

    fn meta_of(f: &[u8], raw: bool) -> PacketMeta {
        dissect(f, link(raw), &DissectOptions::default()).expect("dissect")
    }

    /// Naive ones-complement sum over pseudo-header + segment (independent of `wire::checksum`):
    /// 0xffff for a valid segment.
    fn naive_verify_sum(src: &[u8], dst: &[u8], seg: &[u8]) -> u16 {
        let mut b = Vec::new();
        b.extend_from_slice(src);
        b.extend_from_slice(dst);
        if src.len() == 4 {
            b.extend_from_slice(&[0, 6]);
            b.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        } else {
            b.extend_from_slice(&(seg.len() as u32).to_be_bytes());
            b.extend_from_slice(&[0, 0, 0, 6]);
        }
        b.extend_from_slice(seg);
        if b.len() % 2 == 1 {
            b.push(0);
        }
        let mut acc: u64 = 0;
        for w in b.chunks(2) {
            acc += u16::from_be_bytes([w[0], w[1]]) as u64;
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    /// Checks a frame end to end: our dissector (IPv4 header checksum verified), etherparse
    /// (independent parser: lengths, TCP checksum recomputed by etherparse equals the stored one),
    /// and the naive sum. Returns the meta.
    fn assert_valid(f: &[u8], raw: bool) -> PacketMeta {
        let m = meta_of(f, raw);
        assert!(m.has_l4 && m.proto == 6, "{m:?}");
        let l4 = m.l4_offset as usize;
        let seg = &f[l4..m.l3_offset as usize + m.ip_len as usize];
        let (src, dst): (&[u8], &[u8]) = match m.l3 {
            L3::Ipv4 => (&m.src_addr[12..], &m.dst_addr[12..]),
            _ => (&m.src_addr[..], &m.dst_addr[..]),
        };
        assert_eq!(naive_verify_sum(src, dst, seg), 0xffff, "naive TCP checksum");
        let ep = if raw { etherparse::SlicedPacket::from_ip(f) } else { etherparse::SlicedPacket::from_ethernet(f) }
            .expect("etherparse");
        let Some(etherparse::TransportSlice::Tcp(t)) = ep.transport else { panic!("etherparse: no TCP") };
        assert_eq!(t.payload().len(), m.payload_len as usize);
        let want = match ep.net.as_ref().unwrap() {
            etherparse::NetSlice::Ipv4(ip) => {
                let h = ip.header();
                assert_eq!(h.total_len() as usize, m.ip_len as usize);
                assert_eq!(etherparse::checksum::Sum16BitWords::new().add_slice(h.slice()).ones_complement(), 0);
                t.calc_checksum_ipv4(h.source(), h.destination()).unwrap()
            }
            etherparse::NetSlice::Ipv6(ip) => {
                let h = ip.header();
                t.calc_checksum_ipv6(h.source(), h.destination()).unwrap()
            }
            _ => panic!("not ip"),
        };
        assert_eq!(t.checksum(), want, "etherparse TCP checksum");
        m
    }

    fn tcp_fields(f: &[u8], m: &PacketMeta) -> (u32, u32, u8, Vec<u8>) {
        let t = TcpSegment::new_checked(&f[m.l4_offset as usize..]).unwrap();
        let p = f[m.payload_offset as usize..m.payload_offset as usize + m.payload_len as usize].to_vec();
        (t.seq_number(), t.ack_number(), t.flags(), p)
    }

    fn ins(at: usize, b: &str) -> Edit {
        Edit::Insert { at, bytes: b.as_bytes().to_vec() }
    }

    fn era(at: usize, len: usize) -> Edit {
        Edit::Erase { at, len }
    }

    fn rep(at: usize, len: usize, b: &str) -> Edit {
        Edit::Replace { at, len, bytes: b.as_bytes().to_vec() }
    }

    fn edited(payload: &str, edits: &[Edit]) -> (String, i32) {
        let mut out = Vec::new();
        let d = apply_edits(payload.as_bytes(), edits, &mut out).unwrap();
        (String::from_utf8(out).unwrap(), d)
    }

    /// Straightforward reference for valid edit lists.
    fn naive_apply(payload: &[u8], edits: &[Edit]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut pos = 0;
        for e in edits {
            while pos < e.at() {
                out.push(payload[pos]);
                pos += 1;
            }
            out.extend_from_slice(e.inserted());
            pos += e.removed();
        }
        out.extend_from_slice(&payload[pos..]);
        out
    }

    // ---- apply_edits ------------------------------------------------------------------------

    #[test]
    fn tcp_edit_apply_single_edits_start_middle_end() {
        let p = "0123456789";
        assert_eq!(edited(p, &[]), (p.to_string(), 0));
        assert_eq!(edited(p, &[ins(0, "ab")]), ("ab0123456789".into(), 2));
        assert_eq!(edited(p, &[ins(5, "ab")]), ("01234ab56789".into(), 2));
        assert_eq!(edited(p, &[ins(10, "ab")]), ("0123456789ab".into(), 2));
        assert_eq!(edited(p, &[era(0, 3)]), ("3456789".into(), -3));
        assert_eq!(edited(p, &[era(4, 2)]), ("01236789".into(), -2));
        assert_eq!(edited(p, &[era(7, 3)]), ("0123456".into(), -3));
        assert_eq!(edited(p, &[era(0, 10)]), ("".into(), -10));
        assert_eq!(edited(p, &[rep(0, 2, "xyz")]), ("xyz23456789".into(), 1));
        assert_eq!(edited(p, &[rep(4, 3, "x")]), ("0123x789".into(), -2));
        assert_eq!(edited(p, &[rep(8, 2, "XY")]), ("01234567XY".into(), 0));
        assert_eq!(edited(p, &[rep(10, 0, "!")]), ("0123456789!".into(), 1));
        assert_eq!(edited(p, &[era(10, 0)]), (p.to_string(), 0));
        assert_eq!(edited("", &[ins(0, "new")]), ("new".into(), 3));
    }

    #[test]
    fn tcp_edit_apply_multiple_edits_in_original_offsets() {
        let p = "GET /index.html HTTP/1.1\r\n";
        let edits = [ins(0, "<"), era(4, 1), rep(5, 5, "INDEX"), ins(15, "?x=1"), era(16, 5), rep(24, 2, "\n")];
        let (s, d) = edited(p, &edits);
        assert_eq!(s, "<GET INDEX.html?x=1 1.1\n");
        assert_eq!(d, s.len() as i32 - p.len() as i32);
        // Same offset: inserts in list order, then the erase of the bytes at that offset.
        assert_eq!(edited("0123456789", &[ins(3, "a"), ins(3, "b"), era(3, 2)]), ("012ab56789".into(), 0));
        // An insert right after an erased range.
        assert_eq!(edited("0123456789", &[era(3, 2), ins(5, "X")]), ("012X56789".into(), -1));
        // Borrowed bytes.
        let b: [Edit<&[u8]>; 2] = [Edit::Insert { at: 1, bytes: b"--" }, Edit::Replace { at: 2, len: 1, bytes: b"" }];
        let mut out = vec![9; 50];
        assert_eq!(apply_edits(b"abc", &b, &mut out), Ok(1));
        assert_eq!(out, b"a--b");
    }

    #[test]
    fn tcp_edit_apply_errors_name_the_edit() {
        let p = b"0123456789";
        let mut out = b"keep".to_vec();
        let e = apply_edits(p, &[ins(2, "x"), ins(11, "y")], &mut out).unwrap_err();
        assert_eq!(e, EditError::OutOfRange { index: 1, at: 11, len: 0, payload_len: 10 });
        assert!(e.to_string().contains("edit #1"), "{e}");
        assert_eq!(out, b"keep", "output untouched on error");
        assert_eq!(
            apply_edits(p, &[era(8, 3)], &mut out).unwrap_err(),
            EditError::OutOfRange { index: 0, at: 8, len: 3, payload_len: 10 }
        );
        assert!(matches!(apply_edits(p, &[era(usize::MAX, 2)], &mut out), Err(EditError::OutOfRange { index: 0, .. })));
        assert!(matches!(apply_edits(p, &[era(1, usize::MAX)], &mut out), Err(EditError::OutOfRange { index: 0, .. })));
        // Unsorted.
        assert_eq!(
            apply_edits(p, &[ins(5, "a"), ins(2, "b")], &mut out).unwrap_err(),
            EditError::Overlap { index: 1, at: 2, prev_end: 5 }
        );
        // Overlapping ranges, and an insert inside an erased range.
        assert_eq!(
            apply_edits(p, &[era(2, 4), rep(5, 1, "z")], &mut out).unwrap_err(),
            EditError::Overlap { index: 1, at: 5, prev_end: 6 }
        );
        assert_eq!(
            apply_edits(p, &[era(2, 4), ins(3, "z")], &mut out).unwrap_err(),
            EditError::Overlap { index: 1, at: 3, prev_end: 6 }
        );
        assert_eq!(
            apply_edits(p, &[era(3, 2), ins(3, "z")], &mut out).unwrap_err(),
            EditError::Overlap { index: 1, at: 3, prev_end: 5 }
        );
        assert_eq!(out, b"keep");
    }

    #[test]
    fn tcp_edit_apply_random_matches_reference_never_panics() {
        let mut rng = XorShift(0x5eed_1234_abcd_0001);
        let mut out = Vec::new();
        for _ in 0..20_000 {
            let len = rng.below(40) as usize;
            let payload = rng.bytes(len);
            let n = rng.below(6) as usize;
            let mut edits = Vec::new();
            let mut pos = 0usize;
            let valid = rng.below(4) != 0;
            for _ in 0..n {
                let (at, l) = if valid {
                    let at = pos + rng.below((len - pos.min(len)) as u64 + 1) as usize;
                    let l = rng.below((len - at.min(len)) as u64 + 1) as usize;
                    (at, l)
                } else {
                    (rng.below(50) as usize, rng.below(50) as usize)
                };
                let b = rng.rbytes(5);
                let e = match rng.below(3) {
                    0 => Edit::Insert { at, bytes: b },
                    1 => Edit::Erase { at, len: l },
                    _ => Edit::Replace { at, len: l, bytes: b },
                };
                pos = at + e.removed();
                edits.push(e);
            }
            match apply_edits(&payload, &edits, &mut out) {
                Ok(d) => {
                    let want = naive_apply(&payload, &edits);
                    assert_eq!(out, want);
                    assert_eq!(d, want.len() as i32 - len as i32);
                    assert_eq!(validate_edits(len, &edits), Ok(want.len()));
                }
                Err(e) => {
                    assert!(!valid, "valid list refused: {e} {edits:?}");
                    assert!(matches!(e, EditError::OutOfRange { .. } | EditError::Overlap { .. }));
                }
            }
        }
    }

    // ---- SeqShift ---------------------------------------------------------------------------

    #[test]
    fn tcp_edit_shift_identity() {
        let s = SeqShift::new();
        assert!(s.is_identity() && s.is_empty());
        for x in [0u32, 1, 0x7fff_ffff, 0x8000_0000, u32::MAX] {
            assert_eq!(s.map_seq(x), x);
            assert_eq!(s.unmap_ack(x), x);
        }
        let mut s = SeqShift::new();
        s.record(10, 0).unwrap();
        s.record_replace(10, 4, 4).unwrap();
        assert!(s.is_identity(), "same-length edits shift nothing");
        // Small enough to sit in a per-flow structure (allocated only for modified flows).
        assert!(std::mem::size_of::<SeqShift>() <= 256, "{}", std::mem::size_of::<SeqShift>());
    }

    #[test]
    fn tcp_edit_shift_insert_erase_replace_semantics() {
        let mut s = SeqShift::new();
        s.record(1000, 5).unwrap();
        assert!(!s.is_identity());
        assert_eq!((s.map_seq(500), s.map_seq(999), s.map_seq(1000), s.map_seq(1500)), (500, 999, 1005, 1505));
        // Acks: inside the inserted bytes -> insertion point.
        for a in 1000..=1005 {
            assert_eq!(s.unmap_ack(a), 1000, "ack {a}");
        }
        assert_eq!((s.unmap_ack(999), s.unmap_ack(1006), s.unmap_ack(1505)), (999, 1001, 1500));

        let mut s = SeqShift::new();
        s.record(1000, -10).unwrap();
        assert_eq!((s.map_seq(999), s.map_seq(1000), s.map_seq(1005), s.map_seq(1010)), (999, 1000, 1000, 1000));
        assert_eq!(s.map_seq(1011), 1001);
        // The ack reaching the erase point acknowledges the erased bytes (never delivered).
        assert_eq!((s.unmap_ack(999), s.unmap_ack(1000), s.unmap_ack(1001)), (999, 1010, 1011));
        assert_eq!(s.total_delta(), -10);

        let mut s = SeqShift::new();
        s.record_replace(1000, 4, 10).unwrap();
        assert_eq!((s.map_seq(1000), s.map_seq(1002), s.map_seq(1004), s.map_seq(1005)), (1000, 1002, 1010, 1011));
        assert_eq!(
            (s.unmap_ack(1000), s.unmap_ack(1009), s.unmap_ack(1010), s.unmap_ack(1011)),
            (1000, 1000, 1004, 1005)
        );
        let mut s = SeqShift::new();
        s.record_replace(1000, 10, 4).unwrap();
        assert_eq!((s.map_seq(1003), s.map_seq(1008), s.map_seq(1010)), (1003, 1004, 1004));
        assert_eq!((s.unmap_ack(1003), s.unmap_ack(1004), s.unmap_ack(1005)), (1000, 1010, 1011));
    }

    #[test]
    fn tcp_edit_shift_packet_protocol_and_retransmission() {
        // P1 [100,110) inserts 3 bytes at its start; P2 [110,120) appends 2 bytes at its end;
        // P3 [120,130) erases its first 4 bytes; P4 [130,140) untouched.
        let mut s = SeqShift::new();
        assert_eq!(s.map_seq(100), 100); // P1's new seq, computed before recording its edits
        s.record_edits(100, 10, &[ins(0, "abc")]).unwrap();
        assert_eq!(s.map_seq(110), 113);
        s.record_edits(110, 10, &[ins(10, "yz")]).unwrap();
        assert_eq!(s.map_seq(120), 125);
        assert_eq!(s.record_edits(120, 10, &[era(0, 4)]), Ok(-4));
        assert_eq!(s.map_seq(130), 131);
        // Retransmissions of old data map with the edits before them only.
        assert_eq!((s.map_seq(100), s.map_seq(105), s.map_seq(110)), (103, 108, 113));
        // Acks of the receiver at packet boundaries of the modified stream.
        assert_eq!((s.unmap_ack(100), s.unmap_ack(113), s.unmap_ack(131)), (100, 110, 130));
        // At P3's erase point: the erased bytes count as delivered.
        assert_eq!(s.unmap_ack(125), 124);
        assert_eq!(s.unmap_ack(123), 120, "inside the bytes appended to P2");
        // Editing already-edited data again is refused, atomically.
        let before = (s.map_seq(150), s.len());
        assert!(s.record_edits(120, 10, &[ins(9, "q"), era(2, 1)]).unwrap_err().to_string().contains("edit #1"));
        assert_eq!(s.record_edits(118, 10, &[era(2, 1), ins(9, "q")]), Err(EditError::ShiftOverlap { at: 120 }));
        assert_eq!((s.map_seq(150), s.len()), before);
        // Acknowledged data cannot be edited any more; folded edits keep the offset.
        s.forget_before(s.unmap_ack(125)); // 124
        assert_eq!(s.len(), 1, "P1's and P2's inserts folded; P3's erase ends at the ack: kept");
        assert_eq!(s.record(110, 1), Err(EditError::ShiftTooOld { at: 110 }));
        assert_eq!(s.record(119, -1), Err(EditError::ShiftTooOld { at: 119 }));
        assert_eq!((s.map_seq(130), s.unmap_ack(131), s.map_seq(124)), (131, 130, 125));
        s.forget_before(140);
        assert!(s.is_empty() && !s.is_identity());
        assert_eq!((s.map_seq(140), s.unmap_ack(141), s.total_delta()), (141, 140, 1));
        // A stale (older) ack changes nothing; the floor is the end of the last folded edit.
        s.forget_before(120);
        assert_eq!((s.map_seq(140), s.len()), (141, 0));
        assert_eq!(s.record(123, 1), Err(EditError::ShiftTooOld { at: 123 }));
        s.record(140, 1).unwrap();
        assert_eq!(s.map_seq(140), 142);
        // A bogus ack far ahead folds, but does not make later edits fail.
        s.forget_before(0x4000_0000);
        s.record(150, -2).unwrap();
        assert_eq!((s.map_seq(149), s.map_seq(150), s.map_seq(152)), (151, 152, 152));
    }

    #[test]
    fn tcp_edit_shift_wraparound() {
        let mut s = SeqShift::new();
        s.record(0xffff_fff0, 20).unwrap();
        s.record(0x10, -5).unwrap();
        s.record_replace(0x30, 2, 7).unwrap();
        assert_eq!(s.map_seq(0xffff_ffef), 0xffff_ffef);
        assert_eq!(s.map_seq(0xffff_fff0), 0x4);
        assert_eq!(s.map_seq(0xffff_ffff), 0x13);
        assert_eq!(s.map_seq(0x0), 0x14);
        assert_eq!(s.map_seq(0x10), 0x24);
        assert_eq!(s.map_seq(0x15), 0x24);
        assert_eq!(s.map_seq(0x30), 0x3f);
        assert_eq!(s.map_seq(0x32), 0x3f + 7);
        assert_eq!(s.unmap_ack(0xffff_fff0), 0xffff_fff0);
        assert_eq!(s.unmap_ack(0x3), 0xffff_fff0);
        assert_eq!(s.unmap_ack(0x4), 0xffff_fff0);
        assert_eq!(s.unmap_ack(0x14), 0x0);
        assert_eq!(s.unmap_ack(0x24), 0x15);
        assert_eq!(s.unmap_ack(0x3f + 7), 0x32);
        assert_eq!(s.total_delta(), 20);
        // The order of recording does not matter (sorted by serial position).
        let mut t = SeqShift::new();
        t.record_replace(0x30, 2, 7).unwrap();
        t.record(0x10, -5).unwrap();
        t.record(0xffff_fff0, 20).unwrap();
        for x in (0xffff_ff00u32..=0xffff_ffff).chain(0..0x100) {
            assert_eq!(t.map_seq(x), s.map_seq(x), "{x:#x}");
            assert_eq!(t.unmap_ack(x), s.unmap_ack(x), "{x:#x}");
        }
    }

    /// Reference model: builds the modified stream explicitly (each original byte's modified
    /// position; removed bytes remember the end of their replacement) and checks map_seq for every
    /// surviving byte, every packet's new seq, and unmap_ack for every modified position.
    #[test]
    fn tcp_edit_shift_matches_stream_model() {
        let mut rng = XorShift(0x0dd_ba11_cafe_f00d);
        for round in 0..300 {
            // Near the 2^32 wrap, anywhere, and across the 2^31 serial midpoint.
            let isn: u32 = match round % 3 {
                0 => u32::MAX - rng.below(3000) as u32,
                1 => rng.next() as u32,
                _ => 0x7fff_ff00,
            };
            let mut s = SeqShift::new();
            // Per original byte: modified position if it survives, else Err(end of its replacement).
            let mut mpos: Vec<Result<u32, u32>> = Vec::new();
            let mut mcur = isn; // next modified position
            let mut ocur = 0usize; // next original offset
            let npk = 1 + rng.below(12) as usize;
            for _ in 0..npk {
                let plen = rng.below(40) as usize;
                let seq = isn.wrapping_add(ocur as u32);
                // Random valid edits (few enough never to merge).
                let mut edits = Vec::new();
                let mut pos = 0usize;
                for _ in 0..rng.below(3) {
                    let at = pos + rng.below((plen - pos) as u64 + 1) as usize;
                    let l = rng.below((plen - at).min(6) as u64 + 1) as usize;
                    let b = vec![b'#'; rng.below(6) as usize];
                    let e = match rng.below(3) {
                        0 => Edit::Insert { at, bytes: b },
                        1 => Edit::Erase { at, len: l },
                        _ => Edit::Replace { at, len: l, bytes: b },
                    };
                    pos = at + e.removed();
                    edits.push(e);
                }
                let new_seq = s.map_seq(seq);
                assert_eq!(new_seq, mcur, "packet's new seq = where its output starts");
                // Model.
                let mut i = 0usize;
                for e in &edits {
                    while i < e.at() {
                        mpos.push(Ok(mcur));
                        mcur = mcur.wrapping_add(1);
                        i += 1;
                    }
                    let rep_end = mcur.wrapping_add(e.inserted().len() as u32);
                    for k in 0..e.removed() {
                        // Same-length replacement: no shift, byte for byte (not recorded).
                        mpos.push(if e.removed() == e.inserted().len() {
                            Ok(mcur.wrapping_add(k as u32))
                        } else {
                            Err(rep_end)
                        });
                    }
                    i += e.removed();
                    mcur = rep_end;
                }
                while i < plen {
                    mpos.push(Ok(mcur));
                    mcur = mcur.wrapping_add(1);
                    i += 1;
                }
                s.record_edits(seq, plen, &edits).unwrap();
                ocur += plen;
            }
            assert_eq!(s.merges(), 0);
            assert_eq!(s.map_seq(isn.wrapping_add(ocur as u32)), mcur, "end of stream");
            for (o, p) in mpos.iter().enumerate() {
                if let Ok(p) = p {
                    assert_eq!(s.map_seq(isn.wrapping_add(o as u32)), *p, "round {round} byte {o}");
                }
            }
            // ack_ref(a): the first original byte not delivered by modified ack a.
            let total = mcur.wrapping_sub(isn);
            for k in 0..=total {
                let a = isn.wrapping_add(k);
                let delivered = |p: &Result<u32, u32>| match *p {
                    Ok(m) => sdiff(a, m) > 0,
                    Err(end) => sdiff(a, end) >= 0,
                };
                let first = mpos.iter().position(|p| !delivered(p)).unwrap_or(mpos.len());
                assert_eq!(s.unmap_ack(a), isn.wrapping_add(first as u32), "round {round} ack +{k}");
            }
        }
    }

    #[test]
    fn tcp_edit_shift_bounded_with_acks() {
        // 10k packets of 100 bytes, each gets 1 byte inserted at its start; the receiver acks
        // 5 packets behind: the list stays short and mapping stays exact.
        let mut s = SeqShift::new();
        let isn = 0xffff_0000u32; // wraps during the run
        for i in 0..10_000u32 {
            let seq = isn.wrapping_add(i * 100);
            assert_eq!(s.map_seq(seq), seq.wrapping_add(i));
            s.record_edits(seq, 100, &[ins(0, "x")]).unwrap();
            if i >= 5 {
                let acked_mod = isn.wrapping_add((i - 5) * 101);
                let acked = s.unmap_ack(acked_mod);
                assert_eq!(acked, isn.wrapping_add((i - 5) * 100));
                s.forget_before(acked);
            }
            assert!(s.len() <= 7, "len {}", s.len());
        }
        assert_eq!(s.merges(), 0);
        assert_eq!(s.total_delta(), 10_000);
    }

    #[test]
    fn tcp_edit_shift_bounded_without_acks_merges_closest() {
        let mut s = SeqShift::new();
        // 16 edits 1000 apart, then a 17th close to the 5th: that pair merges.
        for i in 0..16u32 {
            s.record(10_000 + i * 1000, 1).unwrap();
        }
        assert_eq!((s.len(), s.merges()), (16, 0));
        s.record(14_010, -3).unwrap();
        assert_eq!((s.len(), s.merges()), (16, 1));
        // Exact outside the merged span [14000, 14013).
        for x in (9_000u32..14_000).chain(14_013..30_000) {
            let before_edits = (0..16u32).filter(|i| 10_000 + i * 1000 <= x).count() as u32;
            let erased = if x >= 14_013 { 3 } else { 0 };
            assert_eq!(s.map_seq(x), x + before_edits - erased, "{x}");
            assert_eq!(s.unmap_ack(s.map_seq(x)), x, "{x}");
        }
        // Thousands of edits with no ack: bounded, exact past the last edit, monotone.
        let mut rng = XorShift(99);
        let mut s = SeqShift::new();
        let mut pos = 0xfff0_0000u32;
        let mut total: i64 = 0;
        for _ in 0..5000 {
            pos = pos.wrapping_add(1 + rng.below(3000) as u32);
            let d = rng.below(21) as i32 - 10;
            s.record(pos, d).unwrap();
            total += d as i64;
            pos = pos.wrapping_add(d.unsigned_abs() * (d < 0) as u32);
            assert!(s.len() <= SeqShift::CAPACITY);
        }
        assert!(s.merges() > 0);
        assert_eq!(s.total_delta() as i64, total);
        let after = pos.wrapping_add(1);
        assert_eq!(s.map_seq(after), after.wrapping_add(total as u32));
        assert_eq!(s.unmap_ack(after.wrapping_add(total as u32)), after);
        let mut prev = s.map_seq(0xfff0_0000);
        for k in (0..3_000_000u32).step_by(97) {
            let m = s.map_seq(0xfff0_0000u32.wrapping_add(k));
            assert!(sdiff(m, prev) >= 0, "map_seq monotone at {k}");
            prev = m;
        }
    }

    #[test]
    fn tcp_edit_shift_window_folding_over_many_wraps() {
        // One edit every 2^28 bytes for 4 full wraps of the sequence space and no ack: old
        // edits fold once 2^30 behind the newest; mapping after the newest stays exact.
        let mut s = SeqShift::new();
        let mut total: u32 = 0;
        for i in 0..64u32 {
            let at = i.wrapping_mul(1 << 28);
            assert_eq!(s.map_seq(at.wrapping_add(1)), at.wrapping_add(1).wrapping_add(total));
            s.record(at, 7).unwrap();
            total = total.wrapping_add(7);
            assert!(s.len() <= 5, "len {}", s.len());
            assert_eq!(s.map_seq(at.wrapping_add(1)), at.wrapping_add(1).wrapping_add(total));
            assert_eq!(s.unmap_ack(at.wrapping_add(100).wrapping_add(total)), at.wrapping_add(100));
        }
        assert_eq!(s.merges(), 0);
        // Far too old relative to the newest edit.
        let newest = 63u32.wrapping_mul(1 << 28);
        assert_eq!(
            s.record(newest.wrapping_sub(SEQ_WINDOW + 10), 1),
            Err(EditError::ShiftTooOld { at: newest.wrapping_sub(SEQ_WINDOW + 10) })
        );
        assert!(matches!(s.record_replace(newest.wrapping_add(10), SEQ_WINDOW + 1, 0), Err(EditError::TooLong { .. })));
        assert_eq!(
            s.record(newest.wrapping_add(10), i32::MIN),
            Err(EditError::TooLong { len: 1 << 31, max: SEQ_WINDOW as usize })
        );
    }

    #[test]
    fn tcp_edit_shift_random_ops_never_panic() {
        let mut rng = XorShift(0xabad_1dea);
        for _ in 0..200 {
            let mut s = SeqShift::new();
            let base = rng.next() as u32;
            for _ in 0..300 {
                let x =
                    if rng.below(4) == 0 { rng.next() as u32 } else { base.wrapping_add(rng.below(1 << 20) as u32) };
                match rng.below(6) {
                    0 => {
                        let _ = s.record(x, rng.next() as i32 >> rng.below(32));
                    }
                    1 => {
                        let _ = s.record_replace(x, rng.below(100) as u32, rng.below(100) as u32);
                    }
                    2 => s.forget_before(x),
                    3 => {
                        let _ = s.record_edits(
                            x,
                            rng.below(100) as usize,
                            &[ins(rng.below(120) as usize, "ab"), era(rng.below(120) as usize, 3)],
                        );
                    }
                    _ => {
                        let _ = (s.map_seq(x), s.unmap_ack(x), s.total_delta());
                    }
                }
                assert!(s.len() <= SeqShift::CAPACITY);
            }
        }
    }

    // ---- rewrite_tcp ------------------------------------------------------------------------

    /// Rewrites `f` in a buffer of `cap` bytes; returns the new frame.
    fn rewrite(f: &[u8], raw: bool, cap: usize, rw: &TcpRewrite<'_>) -> Result<Vec<u8>, EditError> {
        let m = meta_of(f, raw);
        let mut buf = vec![0xeeu8; cap.max(f.len())];
        buf[..f.len()].copy_from_slice(f);
        let buf = &mut buf[..cap];
        let n = rewrite_tcp(buf, f.len(), &m, rw)?;
        Ok(buf[..n].to_vec())
    }

    #[test]
    fn split_tcp_cuts_a_grown_segment_at_the_mtu_as_haka_did() {
        for v6 in [false, true] {
            for (n, mtu) in [(1500usize, 1500usize), (3000, 1500), (10, 1500), (700, 576)] {
                let payload: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
                let mut sp = spec(v6, &payload);
                sp.tcp_opts = vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]; // NOP NOP timestamps
                sp.flags = flags::ACK | flags::PSH | flags::FIN;
                let f = build(&sp);
                let m = meta_of(&f, false);
                let (l3, l4) = (m.l3_offset as usize, m.l4_offset as usize);
                let mut buf = f.clone();
                let mut extra = Vec::new();
                let len = split_tcp(&mut buf, f.len(), v6, l3, l4, mtu, &mut extra);
                if f.len() - l3 <= mtu {
                    assert_eq!((len, extra.len()), (f.len(), 0), "fits: untouched");
                    assert_eq!(buf, f);
                    continue;
                }
                assert!(!extra.is_empty());
                let first = &buf[..len];
                let fm = assert_valid(first, false);
                assert_eq!(fm.ip_len as usize, mtu, "v6 {v6} n {n}: the first fills the MTU");
                let (seq, ack, fl, mut got) = tcp_fields(first, &fm);
                assert_eq!((seq, fl & (flags::FIN | flags::PSH)), (1000, 0), "FIN and PSH move to the last");
                let mut next = seq.wrapping_add(got.len() as u32);
                for (k, e) in extra.iter().enumerate() {
                    let em = assert_valid(e, false);
                    assert!(em.ip_len as usize <= mtu);
                    assert_eq!(em.l4_offset as usize + 20, em.payload_offset as usize, "no TCP options");
                    if !v6 {
                        assert_eq!(be16(e, l3 + 4), 0, "IPv4 identification 0");
                    }
                    let (s2, a2, f2, p2) = tcp_fields(e, &em);
                    assert_eq!((s2, a2), (next, ack));
                    let last = k + 1 == extra.len();
                    assert_eq!(f2 & (flags::FIN | flags::PSH) != 0, last);
                    next = next.wrapping_add(p2.len() as u32);
                    got.extend_from_slice(&p2);
                }
                assert_eq!(got, payload, "the bytes, in order, once");
            }
        }
        // a wrong checksum stays wrong in every piece
        let f = build(&spec(false, &[7u8; 2000]));
        let m = meta_of(&f, false);
        let mut bad = f.clone();
        let l4 = m.l4_offset as usize;
        bad[l4 + 16] ^= 0x55;
        let mut extra = Vec::new();
        let len = split_tcp(&mut bad, f.len(), false, m.l3_offset as usize, l4, 1500, &mut extra);
        assert!(!tcp_checksum_ok(&bad[..len], false, m.l3_offset as usize, l4));
        assert!(!tcp_checksum_ok(&extra[0], false, m.l3_offset as usize, l4));
        // no room for payload, inconsistent offsets: untouched
        let mut g = f.clone();
        assert_eq!(split_tcp(&mut g, f.len(), false, m.l3_offset as usize, l4, 40, &mut extra), f.len());
        assert_eq!(split_tcp(&mut g, f.len() + 1, false, m.l3_offset as usize, l4, 1500, &mut extra), f.len() + 1);
        assert_eq!(g, f);
    }

    #[test]
    fn recompute_gives_a_bad_checksum_a_valid_one_update_keeps_it_bad() {
        for v6 in [false, true] {
            let mut f = build(&spec(v6, b"hello, world"));
            let m = meta_of(&f, false);
            let ck = m.l4_offset as usize + 16;
            f[ck] ^= 0x5a; // offloaded (wrong) checksum, as in captures taken on loopback
            let rw = TcpRewrite { payload: Some(b"HELLO"), seq: Some(7), recompute: true, ..Default::default() };
            let g = rewrite(&f, false, f.len() + 64, &rw).unwrap();
            assert_valid(&g, false);
            let rw = TcpRewrite { payload: Some(b"HELLO"), seq: Some(7), ..Default::default() };
            let g = rewrite(&f, false, f.len() + 64, &rw).unwrap();
            let gm = meta_of(&g, false);
            let seg = &g[gm.l4_offset as usize..gm.l3_offset as usize + gm.ip_len as usize];
            let (src, dst): (&[u8], &[u8]) =
                if v6 { (&gm.src_addr[..], &gm.dst_addr[..]) } else { (&gm.src_addr[12..], &gm.dst_addr[12..]) };
            assert_ne!(naive_verify_sum(src, dst, seg), 0xffff, "update keeps a bad checksum bad");
            // a shift that moves nothing leaves the segment as it is, recomputing or not
            let mut h = f.clone();
            let seq = be32(&h, m.l4_offset as usize + 4);
            shift_tcp(&mut h, &m, seq, &SeqShift::default(), true).unwrap();
            assert_eq!(h, f);
            shift_tcp(&mut h, &m, seq.wrapping_add(3), &SeqShift::default(), true).unwrap();
            assert_valid(&h, false);
        }
    }

    #[test]
    fn tcp_edit_rewrite_v4_payload_seq_ack() {
        let f = build(&spec(false, b"hello, world"));
        assert_valid(&f, false);
        for new in [&b"HELLO"[..], b"hello, brave new world!", b"", b"x", b"hello, world"] {
            let rw = TcpRewrite { payload: Some(new), seq: Some(0xdead_beef), ack: Some(77), ..Default::default() };
            let g = rewrite(&f, false, 2048, &rw).unwrap();
            let m = assert_valid(&g, false);
            assert_eq!(g.len(), 14 + 20 + 20 + new.len());
            assert_eq!(m.ip_len as usize, 40 + new.len());
            assert_eq!(tcp_fields(&g, &m), (0xdead_beef, 77, flags::ACK | flags::PSH, new.to_vec()));
            // Everything else as before.
            assert_eq!(g[..14], f[..14]);
            assert_eq!(g[14 + 4..14 + 10], f[14 + 4..14 + 10], "id, flags, ttl, proto");
            assert_eq!(g[14 + 12..14 + 20], f[14 + 12..14 + 20], "addresses");
            assert_eq!(g[34..38], f[34..38], "ports");
            assert_eq!(g[34 + 12..34 + 16], f[34 + 12..34 + 16], "offset, flags, window");
        }
        // Only seq/ack: the payload stays.
        let g = rewrite(&f, false, f.len(), &TcpRewrite { seq: Some(1), ..Default::default() }).unwrap();
        let m = assert_valid(&g, false);
        assert_eq!(tcp_fields(&g, &m), (1, 5000, flags::ACK | flags::PSH, b"hello, world".to_vec()));
        // Nothing: identical.
        assert_eq!(rewrite(&f, false, f.len(), &TcpRewrite::default()).unwrap(), f);
    }

    #[test]
    fn rewrite_tcp_of_an_edited_payload_keeps_the_checksum_right() {
        // The checksum is updated over the changed region only (and the moved tail when it
        // moves by an odd count): payloads edited at random places, by even and odd
        // amounts, at the start, the end, into and from nothing, must give valid frames.
        let mut rng = XorShift(0xc0ff_ee00_1234_5678);
        for round in 0..800 {
            let v6 = round % 2 == 1;
            let old: Vec<u8> = (0..rng.below(1500)).map(|_| rng.below(4) as u8 + b'a').collect();
            let at = rng.below(old.len() as u64 + 1) as usize;
            let cut = rng.below((old.len() - at) as u64 + 1) as usize;
            let ins: Vec<u8> = (0..rng.below(40)).map(|_| rng.next() as u8).collect();
            let new: Vec<u8> = [&old[..at], &ins[..], &old[at + cut..]].concat();
            let f = build(&spec(v6, &old));
            // the extent found by comparing, and the one an edit list gives
            let known = Some((at, old.len() - at - cut));
            for unchanged in [None, known] {
                let rw = TcpRewrite { payload: Some(&new), seq: Some(rng.next() as u32), unchanged, ..Default::default() };
                let g = rewrite(&f, false, 4096, &rw).unwrap();
                let m = assert_valid(&g, false);
                assert_eq!(tcp_fields(&g, &m).3, new, "round {round}");
            }
        }
    }

    #[test]
    fn shift_tcp_gives_what_rewrite_tcp_gives() {
        // Random seq/ack/shifts on v4 and v6 segments with no options, timestamps, or SACK
        // blocks: the same bytes as the general path, checksums valid.
        let mut rng = XorShift(0x5eed_1234);
        let sack = vec![1, 1, 5, 10, 0, 0, 0x13, 0x88, 0, 0, 0x17, 0x70];
        let ts = vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
        for round in 0..600u32 {
            let mut sp = spec(round % 2 == 1, &rng.bytes((round % 50) as usize));
            sp.tcp_opts = [vec![], ts.clone(), sack.clone()][(round / 2 % 3) as usize].clone();
            sp.seq = rng.next() as u32;
            sp.ack = rng.next() as u32;
            sp.flags = if round % 7 == 0 { flags::SYN } else { flags::ACK | flags::PSH };
            let f = build(&sp);
            let m = meta_of(&f, false);
            let mut map = SeqShift::default();
            let at = sp.ack.wrapping_sub(rng.below(3000) as u32);
            map.record(at, rng.below(200) as i32 - 100).unwrap();
            let seq = if round % 5 == 0 { sp.seq } else { rng.next() as u32 };
            let want = rewrite(&f, false, f.len(), &TcpRewrite { seq: Some(seq), ack_map: Some(&map), ..Default::default() }).unwrap();
            let mut got = f.clone();
            shift_tcp(&mut got, &m, seq, &map, false).unwrap();
            assert_valid(&got, false);
            let l4 = m.l4_offset as usize;
            let ck = l4 + 16..l4 + 18;
            assert_eq!((&got[..ck.start], &got[ck.end..]), (&want[..ck.start], &want[ck.end..]), "round {round}");
        }
        // a frame that is not TCP: refused, unchanged
        let f = build(&spec(false, b"x"));
        let mut um = meta_of(&f, false);
        um.proto = 17;
        let mut g = f.clone();
        assert_eq!(shift_tcp(&mut g, &um, 1, &SeqShift::default(), false), Err(EditError::NotTcp));
        assert_eq!(g, f);
    }

    #[test]
    fn tcp_edit_rewrite_v4_options_vlan_and_padding() {
        // IPv4 options, TCP options, one VLAN tag, short payload padded to the 60-byte minimum.
        let mut sp = spec(false, b"abc");
        sp.vlans = vec![42];
        sp.ip_opts = vec![1, 1, 1, 0]; // NOP NOP NOP EOL
        sp.tcp_opts = vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]; // NOP NOP timestamps
        sp.pad = 5;
        let f = build(&sp);
        let m0 = assert_valid(&f, false);
        assert_eq!(f.len(), m0.payload_offset as usize + 3 + sp.pad);
        let g = rewrite(&f, false, 200, &TcpRewrite { payload: Some(b"abcdefgh"), ..Default::default() }).unwrap();
        let m = assert_valid(&g, false);
        assert_eq!(g.len(), m0.payload_offset as usize + 8, "padding dropped");
        assert_eq!(m.vlan, 42);
        assert_eq!(g[m.l4_offset as usize + 20..m.payload_offset as usize], sp.tcp_opts[..], "options kept");
        assert_eq!(tcp_fields(&g, &m).3, b"abcdefgh");
        // Shrinking also drops the padding.
        let g = rewrite(&f, false, f.len(), &TcpRewrite { payload: Some(b"a"), ..Default::default() }).unwrap();
        assert_eq!(g.len(), m0.payload_offset as usize + 1);
        assert_valid(&g, false);
        // seq only: padding kept, frame length unchanged.
        let g = rewrite(&f, false, f.len(), &TcpRewrite { seq: Some(9), ..Default::default() }).unwrap();
        assert_eq!(g.len(), f.len());
        assert_eq!(assert_valid(&g, false).payload_len, 3);
    }

    #[test]
    fn tcp_edit_rewrite_v6_qinq_ext_header() {
        let mut sp = spec(true, b"GET / HTTP/1.1\r\n\r\n");
        sp.vlans = vec![100, 200];
        sp.hbh = true;
        sp.pad = 3;
        let f = build(&sp);
        let m0 = assert_valid(&f, false);
        assert_eq!(m0.l4_offset as usize, 22 + 40 + 8);
        let body = b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n";
        let g = rewrite(&f, false, 256, &TcpRewrite { payload: Some(body), seq: Some(3), ack: Some(4), ..Default::default() })
            .unwrap();
        let m = assert_valid(&g, false);
        assert_eq!(m.l4_offset, m0.l4_offset, "extension header kept");
        assert_eq!(m.ip_len as usize, 40 + 8 + 20 + body.len());
        assert_eq!(u16::from_be_bytes([g[22 + 4], g[22 + 5]]) as usize, 8 + 20 + body.len());
        assert_eq!(tcp_fields(&g, &m), (3, 4, flags::ACK | flags::PSH, body.to_vec()));
        assert_eq!(g.len(), m.payload_offset as usize + body.len());
        assert_eq!(m.vlan, 100 << 12 | 200);
        // Odd payload lengths on IPv6 too.
        for n in [0usize, 1, 7, 1000] {
            let p = vec![0x5a; n];
            let g = rewrite(&f, false, 2048, &TcpRewrite { payload: Some(&p), ..Default::default() }).unwrap();
            assert_eq!(assert_valid(&g, false).payload_len as usize, n);
        }
    }

    #[test]
    fn tcp_edit_rewrite_raw_ip() {
        let mut sp = spec(false, b"raw");
        sp.raw = true;
        let f = build(&sp);
        assert_valid(&f, true);
        let g = rewrite(&f, true, 100, &TcpRewrite { payload: Some(b"rawer"), ..Default::default() }).unwrap();
        assert_eq!(tcp_fields(&g, &assert_valid(&g, true)).3, b"rawer");
    }

    #[test]
    fn tcp_edit_rewrite_capacity_and_errors_leave_frame_untouched() {
        let f = build(&spec(false, b"0123456789"));
        let m = meta_of(&f, false);
        let mut buf = f.clone();
        buf.extend_from_slice(&[0xee; 3]);
        let orig = buf.clone();
        let grown = b"0123456789ABCD"; // +4 > 3 spare bytes
        let rw = TcpRewrite { payload: Some(grown), seq: Some(5), ..Default::default() };
        assert_eq!(
            rewrite_tcp(&mut buf, f.len(), &m, &rw),
            Err(EditError::NoRoom { need: f.len() + 4, cap: f.len() + 3 })
        );
        assert_eq!(buf, orig, "untouched");
        let rw = TcpRewrite { payload: Some(b"0123456789ABC"), ..Default::default() };
        assert_eq!(rewrite_tcp(&mut buf, f.len(), &m, &rw), Ok(f.len() + 3), "exactly fits");
        // len beyond the buffer.
        let mut small = f.clone();
        assert!(matches!(
            rewrite_tcp(&mut small, f.len() + 1, &m, &TcpRewrite::default()),
            Err(EditError::Inconsistent(_))
        ));
        // Too long for IPv4.
        let big = vec![0u8; 65536 - 40];
        let mut buf = vec![0u8; 70_000];
        buf[..f.len()].copy_from_slice(&f);
        let rw = TcpRewrite { payload: Some(&big), ..Default::default() };
        assert_eq!(rewrite_tcp(&mut buf, f.len(), &m, &rw), Err(EditError::TooLong { len: 65536, max: 65535 }));
        let rw = TcpRewrite { payload: Some(&big[1..]), ..Default::default() };
        assert_eq!(rewrite_tcp(&mut buf, f.len(), &m, &rw), Ok(14 + 65535));
        // Not TCP.
        let mut um = m;
        um.proto = ip_proto::UDP;
        let mut b2 = f.clone();
        assert_eq!(rewrite_tcp(&mut b2, f.len(), &um, &TcpRewrite::default()), Err(EditError::NotTcp));
        um = m;
        um.l3 = L3::Other(0x0806);
        assert_eq!(rewrite_tcp(&mut b2, f.len(), &um, &TcpRewrite::default()), Err(EditError::NotTcp));
        // Meta of another frame.
        let other = build(&spec(false, b"01"));
        let om = meta_of(&other, false);
        assert!(matches!(rewrite_tcp(&mut b2, f.len(), &om, &TcpRewrite::default()), Err(EditError::Inconsistent(_))));
        let v6 = build(&spec(true, b"0123456789"));
        let m6 = meta_of(&v6, false);
        assert!(matches!(rewrite_tcp(&mut b2, f.len(), &m6, &TcpRewrite::default()), Err(EditError::Inconsistent(_))));
        assert_eq!(b2, f);
    }

    #[test]
    fn tcp_edit_rewrite_keeps_a_bad_checksum_bad() {
        let mut f = build(&spec(false, b"payload!"));
        let ck = u16::from_be_bytes([f[34 + 16], f[34 + 17]]);
        f[34 + 16..34 + 18].copy_from_slice(&ck.wrapping_add(1).to_be_bytes());
        let err = naive_verify_sum(&SRC4, &DST4, &f[34..]);
        assert_ne!(err, 0xffff);
        let g = rewrite(
            &f,
            false,
            200,
            &TcpRewrite { payload: Some(b"longer payload"), seq: Some(1), ..Default::default() },
        )
        .unwrap();
        let m2 = meta_of(&g, false);
        assert_eq!(m2.payload_len, 14);
        assert_eq!(naive_verify_sum(&SRC4, &DST4, &g[34..]), err, "same error carried over");
    }

    #[test]
    fn tcp_edit_rewrite_sack_and_ack_mapping() {
        // The opposite direction (this packet's ack space) had 10 bytes inserted at 5000 and
        // 4 bytes erased at 6000 (original numbering).
        let mut so = SeqShift::new();
        so.record(5000, 10).unwrap();
        so.record(6000, -4).unwrap();
        // Modified-stream numbers as the receiver of that stream sees them.
        // 6010 is where the 4 bytes were erased (original 6000 + 10 inserted before it).
        let (ack_m, l1, r1, l2, r2) = (4990u32, 5100u32, 5200u32, 6010u32, 6506u32);
        for odd in [false, true] {
            let mut sp = spec(true, b"");
            sp.ack = ack_m;
            sp.flags = flags::ACK;
            // SACK with 2 blocks (18 bytes) + NOPs; `odd` puts it at an odd offset.
            let mut o = if odd { vec![1] } else { vec![1, 1] };
            o.extend_from_slice(&[5, 18]);
            for v in [l1, r1, l2, r2] {
                o.extend_from_slice(&v.to_be_bytes());
            }
            while o.len() % 4 != 0 {
                o.push(0);
            }
            sp.tcp_opts = o.clone();
            let f = build(&sp);
            assert_valid(&f, false);
            let g = rewrite(&f, false, f.len(), &TcpRewrite { ack_map: Some(&so), ..Default::default() }).unwrap();
            let m = assert_valid(&g, false);
            let (_, ack, _, _) = tcp_fields(&g, &m);
            assert_eq!(ack, 4990, "before the edits: unchanged");
            let base = m.l4_offset as usize + 20 + if odd { 3 } else { 4 };
            let edges: Vec<u32> = (0..4).map(|i| be32(&g, base + 4 * i)).collect();
            assert_eq!(edges, vec![5090, 5190, 6004, 6500], "odd={odd}");
            // A higher ack gets mapped too; an explicit ack wins.
            let mut sp2 = sp.clone();
            sp2.ack = 5010;
            let f2 = build(&sp2);
            let g2 = rewrite(&f2, false, f2.len(), &TcpRewrite { ack_map: Some(&so), ..Default::default() }).unwrap();
            assert_eq!(tcp_fields(&g2, &assert_valid(&g2, false)).1, 5000);
            let g3 =
                rewrite(&f2, false, f2.len(), &TcpRewrite { ack: Some(1), ack_map: Some(&so), ..Default::default() })
                    .unwrap();
            assert_eq!(tcp_fields(&g3, &assert_valid(&g3, false)).1, 1);
            // Without the ACK flag the ack field is left alone (SACK edges still mapped).
            let mut sp4 = sp2.clone();
            sp4.flags = flags::PSH;
            let f4 = build(&sp4);
            let g4 = rewrite(&f4, false, f4.len(), &TcpRewrite { ack_map: Some(&so), ..Default::default() }).unwrap();
            assert_eq!(tcp_fields(&g4, &assert_valid(&g4, false)).1, 5010);
        }
        // Malformed options: no panic, left alone after the bad one.
        let mut sp = spec(false, b"x");
        sp.tcp_opts = vec![5, 1, 5, 10, 0, 0, 0x13, 0x88, 0, 0, 0, 0];
        let f = build(&sp);
        let g = rewrite(&f, false, f.len(), &TcpRewrite { ack_map: Some(&so), ..Default::default() }).unwrap();
        let m = assert_valid(&g, false);
        assert_eq!(g[m.l4_offset as usize + 20..m.payload_offset as usize], sp.tcp_opts[..]);
        sp.tcp_opts = vec![5, 40, 0, 0];
        let f = build(&sp);
        let g = rewrite(&f, false, f.len(), &TcpRewrite { ack_map: Some(&so), ..Default::default() }).unwrap();
        assert_valid(&g, false);
    }

    /// Full per-packet flow: edits applied to a payload, seq mapped, opposite direction's acks
    /// mapped back; checks the modified stream seen by the receiver is contiguous.
    #[test]
    fn tcp_edit_end_to_end_two_packets() {
        let mut sd = SeqShift::new();
        let so = SeqShift::new();
        let mut scratch = Vec::new();
        let p1 = build(&Spec { seq: 0xffff_fffa, ..spec(false, b"user=alice&pw=secret") });
        let p2 = build(&Spec { seq: 0xffff_fffa_u32.wrapping_add(20), ..spec(false, b"&next=1") });
        let mut received = Vec::new();
        let mut next_seq = None;
        for (f, edits) in [(&p1, vec![rep(5, 5, "bob"), era(14, 6), ins(20, "REDACTED")]), (&p2, vec![ins(0, "&x=y")])]
        {
            let m = meta_of(f, false);
            let (seq, _, _, payload) = tcp_fields(f, &m);
            let new_seq = sd.map_seq(seq);
            apply_edits(&payload, &edits, &mut scratch).unwrap();
            sd.record_edits(seq, payload.len(), &edits).unwrap();
            let mut buf = vec![0u8; 1500];
            buf[..f.len()].copy_from_slice(f);
            let rw = TcpRewrite { payload: Some(&scratch), seq: Some(new_seq), ack: None, ack_map: Some(&so), unchanged: None, recompute: false };
            let n = rewrite_tcp(&mut buf, f.len(), &m, &rw).unwrap();
            let g = &buf[..n];
            let gm = assert_valid(g, false);
            let (s2, _, _, pl) = tcp_fields(g, &gm);
            if let Some(ns) = next_seq {
                assert_eq!(s2, ns, "contiguous modified stream");
            }
            next_seq = Some(s2.wrapping_add(pl.len() as u32));
            received.extend_from_slice(&pl);
        }
        assert_eq!(received, b"user=bob&pw=REDACTED&x=y&next=1");
        // The receiver's ack of everything maps back to the end of the original data.
        assert_eq!(sd.unmap_ack(next_seq.unwrap()), 0xffff_fffa_u32.wrapping_add(27));
    }

    // ---- forging ----------------------------------------------------------------------------

    fn forge_check(template: &[u8], raw: bool, toward_sender: bool, v6: bool) -> (Vec<u8>, PacketMeta) {
        let tm = meta_of(template, raw);
        let mut out = [0u8; 200];
        let n = forge_rst(template, &tm, toward_sender, 0x1111_2222, 0x3333_4444, false, &mut out).unwrap();
        let g = out[..n].to_vec();
        let m = assert_valid(&g, raw);
        assert_eq!(n, tm.l3_offset as usize + if v6 { 40 } else { 20 } + 20, "no payload, no options");
        assert_eq!(m.payload_len, 0);
        let t = TcpSegment::new_checked(&g[m.l4_offset as usize..]).unwrap();
        assert_eq!((t.seq_number(), t.ack_number(), t.flags()), (0x1111_2222, 0x3333_4444, flags::RST | flags::ACK));
        assert_eq!((t.window(), t.header_len(), t.urgent()), (0, 20, 0));
        assert_eq!(m.vlan, tm.vlan);
        if toward_sender {
            assert_eq!(
                (m.src_addr, m.dst_addr, m.src_port, m.dst_port),
                (tm.dst_addr, tm.src_addr, tm.dst_port, tm.src_port)
            );
            if !raw {
                assert_eq!((&g[..6], &g[6..12]), (&template[6..12], &template[..6]), "MACs swapped");
            }
        } else {
            assert_eq!(
                (m.src_addr, m.dst_addr, m.src_port, m.dst_port),
                (tm.src_addr, tm.dst_addr, tm.src_port, tm.dst_port)
            );
            if !raw {
                assert_eq!(g[..12], template[..12]);
            }
        }
        assert_eq!(
            g[12..tm.l3_offset.max(12) as usize],
            template[12..tm.l3_offset.max(12) as usize],
            "VLAN tags/ethertype kept"
        );
        let l3 = m.l3_offset as usize;
        if v6 {
            assert_eq!((g[l3] >> 4, g[l3 + 6], g[l3 + 7]), (6, ip_proto::TCP, 64));
            assert_eq!(u32::from_be_bytes([g[l3], g[l3 + 1], g[l3 + 2], g[l3 + 3]]) & 0x0fff_ffff, 0);
        } else {
            let ip = Ipv4Packet::new_checked(&g[l3..]).unwrap();
            assert_eq!(
                (ip.header_len(), ip.ttl(), ip.ident(), ip.dont_frag(), ip.more_frags()),
                (20, 64, 0, true, false)
            );
            assert!(ip.verify_checksum());
        }
        (g, m)
    }

    #[test]
    fn tcp_edit_forge_rst_bare_is_hakas_form() {
        let t = build(&spec(false, b"tmpl"));
        let tm = meta_of(&t, false);
        let mut out = [0u8; 200];
        let n = forge_rst(&t, &tm, true, 7, 9, true, &mut out).unwrap();
        let m = assert_valid(&out[..n], false);
        let seg = TcpSegment::new_checked(&out[m.l4_offset as usize..n]).unwrap();
        assert_eq!((seg.seq_number(), seg.ack_number(), seg.flags()), (7, 0, flags::RST));
        let ip = Ipv4Packet::new_checked(&out[m.l3_offset as usize..n]).unwrap();
        assert_eq!((ip.dont_frag(), ip.ident(), ip.ttl()), (false, 0, 64));
        assert!(ip.verify_checksum());
    }

    #[test]
    fn tcp_edit_forge_rst_v4_v6_both_directions() {
        let mut sp = spec(false, b"data");
        sp.vlans = vec![7];
        sp.tcp_opts = vec![1, 1, 1, 1];
        let t4 = build(&sp);
        let mut sp6 = spec(true, b"data6");
        sp6.hbh = true;
        sp6.vlans = vec![3, 4];
        let t6 = build(&sp6);
        for dir in [false, true] {
            forge_check(&t4, false, dir, false);
            forge_check(&t6, false, dir, true);
            let mut sp = spec(false, b"");
            sp.raw = true;
            forge_check(&build(&sp), true, dir, false);
            let mut sp = spec(true, b"");
            sp.raw = true;
            forge_check(&build(&sp), true, dir, true);
            let mut sp = spec(false, b"");
            sp.pad = 6;
            forge_check(&build(&sp), false, dir, false);
        }
        // Spot values.
        let (g, m) = forge_check(&t4, false, true, false);
        assert_eq!((&m.src_addr[12..], &m.dst_addr[12..], m.src_port, m.dst_port), (&DST4[..], &SRC4[..], 80, 40000));
        assert_eq!((&g[..6], &g[6..12]), (&MAC_A[..], &MAC_B[..]));
    }

    #[test]
    fn tcp_edit_forge_tcp_with_payload_and_errors() {
        let t = build(&spec(true, b"tmpl"));
        let tm = meta_of(&t, false);
        let spec_ = TcpForge {
            toward_sender: true,
            seq: 1,
            ack: 2,
            flags: flags::PSH | flags::ACK,
            window: 512,
            payload: b"HTTP/1.1 403 Forbidden\r\n\r\n",
            dont_fragment: true,
        };
        let mut out = vec![0u8; 1500];
        let n = forge_tcp(&t, &tm, &spec_, &mut out).unwrap();
        let m = assert_valid(&out[..n], false);
        let (s, a, fl, p) = tcp_fields(&out[..n], &m);
        assert_eq!((s, a, fl, p.as_slice()), (1, 2, flags::PSH | flags::ACK, spec_.payload));
        assert_eq!(TcpSegment::new_checked(&out[m.l4_offset as usize..n]).unwrap().window(), 512);
        // Errors.
        let need = n;
        assert_eq!(forge_tcp(&t, &tm, &spec_, &mut out[..need - 1]), Err(EditError::NoRoom { need, cap: need - 1 }));
        let big = vec![0u8; 65535 - 19];
        assert!(matches!(
            forge_tcp(&t, &tm, &TcpForge { payload: &big, ..spec_ }, &mut vec![0; 70_000]),
            Err(EditError::TooLong { .. })
        ));
        let mut um = tm;
        um.proto = ip_proto::UDP;
        assert_eq!(forge_rst(&t, &um, false, 0, 0, false, &mut out), Err(EditError::NotTcp));
        um = tm;
        um.has_l4 = false;
        assert_eq!(forge_rst(&t, &um, false, 0, 0, false, &mut out), Err(EditError::NotTcp));
        assert!(matches!(forge_rst(&t[..10], &tm, false, 0, 0, false, &mut out), Err(EditError::Inconsistent(_))));
    }

    // ---- independent cross-check with scapy ---------------------------------------------------

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Scapy recomputes every checksum and length of our rewritten/forged frames; they must
    /// equal ours. Skipped when python3 or scapy is missing.
    #[test]
    fn tcp_edit_scapy_cross_check() {
        let ok = std::process::Command::new("/usr/bin/python3")
            .args(["-c", "import scapy.all"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("scapy not available: skipped");
            return;
        }
        let mut frames = Vec::new();
        let mut sp = spec(false, b"hello");
        sp.vlans = vec![9];
        sp.pad = 10;
        let f = build(&sp);
        frames.push(
            rewrite(
                &f,
                false,
                300,
                &TcpRewrite { payload: Some(b"hello scapy!"), seq: Some(0xfffffff0), ..Default::default() },
            )
            .unwrap(),
        );
        let mut sp = spec(true, b"hello6");
        sp.hbh = true;
        let f6 = build(&sp);
        frames.push(
            rewrite(&f6, false, 300, &TcpRewrite { payload: Some(b"odd"), ack: Some(3), ..Default::default() })
                .unwrap(),
        );
        let mut out = [0u8; 200];
        for (t, dir) in [(&f, true), (&f6, false), (&f6, true)] {
            let n = forge_rst(t, &meta_of(t, false), dir, 10, 20, false, &mut out).unwrap();
            frames.push(out[..n].to_vec());
        }
        let script = r#"
import sys
from scapy.all import Ether, IP, IPv6, TCP
for line in sys.stdin:
    raw = bytes.fromhex(line.strip())
    p = Ether(raw)
    q = Ether(raw)
    if IP in q:
        del q[IP].chksum; del q[IP].len
    if IPv6 in q:
        del q[IPv6].plen
    del q[TCP].chksum
    q = Ether(bytes(q))
    ok = bytes(q) == raw
    print("ok" if ok else "diff %s %s" % (bytes(q).hex(), raw.hex()))
"#;
        use std::io::Write;
        let mut child = std::process::Command::new("/usr/bin/python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            let mut stdin = child.stdin.take().unwrap();
            for fr in &frames {
                writeln!(stdin, "{}", hex(fr)).unwrap();
            }
        }
        let o = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), frames.len(), "{text}");
        for l in lines {
            assert_eq!(l, "ok");
        }
    }

    // ---- never panic ------------------------------------------------------------------------

    #[test]
    fn tcp_edit_random_frames_and_metas_never_panic() {
        let mut rng = XorShift(0x1234_5678_9abc_def1);
        let mut out = vec![0u8; 3000];
        let mut scratch = Vec::new();
        let mut shift = SeqShift::new();
        shift.record(5, 3).unwrap();
        let mut ok_rewrites = 0;
        for i in 0..30_000 {
            // A valid frame, possibly mutated, or random bytes.
            let mut sp = spec(rng.below(2) == 0, &rng.rbytes(60));
            sp.vlans = (0..rng.below(3)).map(|_| rng.below(4095) as u16).collect();
            sp.hbh = rng.below(2) == 0;
            sp.pad = rng.below(20) as usize;
            let k = rng.below(4) as usize;
            sp.tcp_opts = rng.bytes(4 * k);
            let mut f = if i % 5 == 4 { rng.rbytes(120) } else { build(&sp) };
            let valid_ck = i % 5 != 4 && rng.below(2) == 0;
            if !valid_ck {
                for _ in 0..rng.below(4) {
                    if !f.is_empty() {
                        let k = rng.below(f.len() as u64) as usize;
                        f[k] ^= 1 << rng.below(8);
                    }
                }
            }
            // Meta: dissected (when possible) or random garbage.
            let mut m = match dissect(&f, LinkType::Ethernet, &DissectOptions { ipv4_checksum: false }) {
                Ok(m) => m,
                Err(_) => meta_of(&build(&spec(false, b"zz")), false),
            };
            if rng.below(4) == 0 {
                m.l3_offset = rng.below(80) as u16;
                m.l4_offset = rng.below(120) as u16;
                m.payload_offset = rng.below(160) as u16;
                m.payload_len = rng.below(200) as u16;
                m.ip_len = rng.below(200) as u16;
                m.l3 = [L3::Ipv4, L3::Ipv6, L3::Other(1)][rng.below(3) as usize];
                m.has_l4 = rng.below(4) != 0;
            }
            let cap = f.len() + rng.below(80) as usize;
            let mut buf = vec![0u8; cap];
            buf[..f.len()].copy_from_slice(&f);
            let np = rng.rbytes(100);
            let rw = TcpRewrite {
                payload: if rng.below(3) == 0 { None } else { Some(&np) },
                seq: Some(rng.next() as u32),
                ack: if rng.below(2) == 0 { None } else { Some(rng.next() as u32) },
                ack_map: if rng.below(2) == 0 { None } else { Some(&shift) },
                // any extent, even a wrong one: never a panic
                unchanged: if rng.below(2) == 0 { None } else { Some((rng.below(200) as usize, rng.below(200) as usize)) },
                recompute: rng.below(2) == 0,
            };
            let len = if rng.below(10) == 0 { rng.below(cap as u64 + 10) as usize } else { f.len() };
            if let Ok(n) = rewrite_tcp(&mut buf, len, &m, &rw) {
                ok_rewrites += 1;
                assert!(n <= cap);
                if valid_ck && i % 5 != 4 && len == f.len() && rw.unchanged.is_none() {
                    // From a valid frame: still a valid frame.
                    assert_valid(&buf[..n], false);
                }
            }
            let _ = forge_rst(&f, &m, rng.below(2) == 0, 1, 2, false, &mut out[..rng.below(120) as usize]);
            let _ = forge_tcp(&f, &m, &TcpForge { payload: &np, ..Default::default() }, &mut out);
            let _ = apply_edits(&np, &[era(rng.below(120) as usize, rng.below(50) as usize)], &mut scratch);
        }
        assert!(ok_rewrites > 5_000, "{ok_rewrites}");
    }
}
