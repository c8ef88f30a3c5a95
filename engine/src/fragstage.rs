//! IP fragments in the worker: reassembly before classification, the reassembled
//! packet's trip to the worker owning its flow, and what leaves when it is accepted.
//!
//! Design:
//! - Each worker has its own [`Defragmenter`] (no sharing). The dispatcher and NICs hash
//!   fragments by addresses only (the dissector gives them an address-only flow key), so all
//!   fragments of a datagram reach one worker: the *reassembling* worker.
//! - `Pending` fragments stay in this worker, their mbufs held in a side table keyed by the
//!   defragmenter's datagram id (bounded by `defrag.max_fragments`: beyond it the oldest
//!   datagram is evicted). Datagrams released by timeout or eviction (`take_released`),
//!   or invalid, have their held mbufs freed and counted.
//! - On completion, ONE *carrier* mbuf is allocated from a dedicated pool of large (64 KiB,
//!   no headroom) mbufs: the first fragment's link header followed by the reassembled IP
//!   datagram. The original fragments are hung after it as the further segments of one
//!   valid mbuf chain ([`Mbuf::chain`]): the carrier *is* the datagram plus its originals, so
//!   they travel together, through a dispatch ring too, and whoever frees the carrier (a
//!   drop verdict, a full ring, shutdown) frees every original with it: nothing can leak.
//!   Carriers are recognised by their pool ([`Mbuf::is_from`]); everything that reads
//!   packet bytes sees only the first segment, the reassembled frame.
//! - The carrier is classified like any packet (now with its ports); when another worker
//!   owns that flow (`crate::dispatch::OwnerTable`), the carrier is handed to it over its
//!   dispatch ring. The
//!   owner treats it as any packet (flow table, rules). Accepted: the carrier is unchained
//!   and the ORIGINAL fragments are transmitted, byte for byte; if a rule modified the
//!   datagram, it is re-fragmented ([`crate::refrag`]) to the largest original fragment's
//!   size, into the original mbufs (or new ones from their pool when needed).
//! - Shutdown: fragments and carriers handed to another worker are counted in a shared
//!   `inflight` counter (incremented before the enqueue, decremented by the receiver after
//!   it processed them, so after any carrier that processing produced was counted). Once
//!   every worker stopped polling ports, a worker leaves its final drain only when its ring
//!   is empty and `inflight` is 0: no carrier is left in a ring.
//!
//! Only fragments pay for this (a dissection more, a few allocations per datagram); the
//! normal path costs a `Class` match and a pool-pointer comparison on accepted packets.
//!
//! Limits: a reassembled frame must fit one large mbuf (65535 bytes, link header
//! included); fragments must be single-segment mbufs (no scattered rx). With NIC RSS
//! (`dispatch=rss`, no software rings) the carrier stays on the reassembling worker.
//! Rules: each fragment gets Haka's per-fragment events (ipv4 `receive_packet`) through
//! the `inspect` callback of [`FragStage::on_fragment`], on the reassembling worker, before
//! it joins its datagram; the carrier gets `receive_packet_reassembled` and the upper
//! dissectors (`crate::lua::Pass`). A fragment on which those rules set Haka's
//! `dont_reassemble` flag goes on alone, not reassembled ([`FragInspect::Alone`]). Packets
//! the rules inject never come here (the worker batches them directly, as if the flag were
//! set). `[defrag] enabled = false`
//! turns reassembly off.
//!
//! `[defrag] overlap = "haka"`: the defragmenter says which part of the datagram each
//! fragment gave ([`crate::defrag::Piece`]); the originals are cut to those parts (covered
//! ones dropped) before being chained, so that what leaves unmodified is what Haka sent.
//! `[defrag] refragment = "haka"`: a modified datagram leaves as its fragments, each with
//! its share ([`crate::refrag::refragment_ipv4_haka`]).
use crate::alert::{alert_id, unix_time_now, Alert, AlertQueue, FlowInfo, ALERT_ID_COUNTER_BITS};
use crate::defrag::{DatagramId, DefragConfig, DefragError, DefragResult, Defragmenter};
use crate::dissect::{PacketMeta, L3};
use crate::dpdk::{Mbuf, MbufBurst, PoolRef, Ring};
use crate::pipeline::{Class, Pipeline};
use crate::refrag::{cut_ipv4_fragment, ipv6_fragment_info, refragment_ipv4, refragment_ipv4_haka, refragment_ipv6};
use crate::stats::{Counters, DropReason};
use crate::dispatch::owner_of;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// What a worker needs to reassemble.
#[derive(Clone, Copy)]
pub struct FragPlan {
    pub config: DefragConfig,
    /// Original fragments held at most by one worker.
    pub max_fragments: usize,
    /// The large mbufs for reassembled datagrams (carriers).
    pub pool: PoolRef,
    /// `[defrag] overlap = "haka"` (IPv4).
    pub haka_overlaps: bool,
    /// `[defrag] refragment = "haka"` (IPv4).
    pub haka_refragment: bool,
}

/// What the rules decided on one fragment (Haka's per-fragment `receive_packet`), see
/// [`FragStage::on_fragment`].
pub enum FragInspect {
    /// Reassemble it (its bytes possibly modified by the rules).
    Keep,
    /// A rule dropped it (or failed on it): it is dropped, counted with this reason.
    Drop(DropReason),
    /// A rule set Haka's `dont_reassemble` on it: it goes on alone, as it is.
    Alone,
}

struct Held {
    frags: Vec<Mbuf>,
    since_ms: u64,
}

/// One worker's fragment stage.
pub struct FragStage<'a> {
    me: usize,
    workers: usize,
    /// Who owns each flow (software dispatch).
    owners: Option<crate::dispatch::Owners>,
    defrag: Defragmenter,
    held: HashMap<DatagramId, Held>,
    held_mbufs: usize,
    max_held: usize,
    pool: PoolRef,
    alerts: Arc<AlertQueue>,
    alert_seq: u64,
    inflight: &'a AtomicI64,
    timeout_ms: u64,
    last_expire_ms: u64,
    next_sweep_ms: u64,
    haka_refragment: bool,
}

/// Alert ids of this stage: above the rules' ids of the same worker.
const ALERT_ID_BASE: u64 = 1 << (ALERT_ID_COUNTER_BITS - 1);

fn addr_text(meta: &PacketMeta, a: &[u8; 16]) -> String {
    match meta.l3 {
        L3::Ipv4 => std::net::Ipv4Addr::new(a[12], a[13], a[14], a[15]).to_string(),
        _ => std::net::Ipv6Addr::from(*a).to_string(),
    }
}

impl<'a> FragStage<'a> {
    /// `owners`: who owns each flow, with software dispatch (see `crate::dispatch`).
    pub fn new(
        plan: &FragPlan,
        me: usize,
        workers: usize,
        owners: Option<crate::dispatch::Owners>,
        alerts: Arc<AlertQueue>,
        inflight: &'a AtomicI64,
    ) -> Self {
        let mut defrag = Defragmenter::new(plan.config);
        defrag.set_haka_overlaps(plan.haka_overlaps);
        FragStage {
            me,
            workers,
            owners,
            defrag,
            held: HashMap::new(),
            held_mbufs: 0,
            max_held: plan.max_fragments.max(2),
            pool: plan.pool,
            alerts,
            alert_seq: 0,
            inflight,
            timeout_ms: plan.config.timeout_ms,
            last_expire_ms: 0,
            next_sweep_ms: 0,
            haka_refragment: plan.haka_refragment,
        }
    }

    /// True for a reassembled datagram carrying its original fragments.
    #[inline(always)]
    pub fn is_carrier(&self, m: &Mbuf) -> bool {
        m.is_from(self.pool)
    }

    /// Bytes of the packet on the wire (a carrier's chain also holds its originals).
    #[inline(always)]
    pub fn wire_len(&self, m: &Mbuf) -> u32 {
        if self.is_carrier(m) {
            m.data().len() as u32
        } else {
            m.pkt_len()
        }
    }

    /// True for what another worker counted in `inflight` when handing it over.
    #[inline(always)]
    pub fn is_tracked(&self, m: &Mbuf, class: &Class) -> bool {
        class.is_fragment() || self.is_carrier(m)
    }

    /// The receiver processed `n` tracked packets taken from its ring.
    pub fn done_tracked(&self, n: i64) {
        if n > 0 {
            self.inflight.fetch_sub(n, Ordering::SeqCst);
        }
    }

    /// A fragment (`class` is `Class::Fragment`) this worker took from a port or its ring.
    /// Returns a reassembled datagram (a carrier) and its class when it completed and this
    /// worker owns its flow; the caller batches it like any packet. Everything else
    /// (held, handed over, dropped) is dealt with here. `inspect` runs the rules on the
    /// fragment itself (Haka's per-fragment ipv4 `receive_packet`) on the worker that
    /// reassembles it, before it joins its datagram.
    #[allow(clippy::too_many_arguments)]
    pub fn on_fragment(
        &mut self,
        mut m: Mbuf,
        class: &Class,
        now: u64,
        pipeline: &Pipeline,
        rings: Option<&[Ring]>,
        c: &mut Counters,
        inspect: &mut dyn FnMut(&mut Mbuf, &PacketMeta) -> FragInspect,
    ) -> Option<(Mbuf, Class)> {
        let Class::Fragment(fp) = *class else {
            return Some((m, *class));
        };
        if let Some(rings) = rings {
            let owner = owner_of(fp.hash, self.workers);
            if owner != self.me {
                self.hand_over(m, owner, rings, c);
                return None;
            }
        }
        c.frag_fragments += 1;
        let meta = match pipeline.meta(m.data()) {
            Some(meta) if m.is_single_segment() => meta,
            _ => {
                drop(m);
                c.frag_invalid += 1;
                c.drop(DropReason::FragmentInvalid);
                return None;
            }
        };
        match inspect(&mut m, &meta) {
            FragInspect::Keep => {}
            FragInspect::Drop(reason) => {
                drop(m);
                c.drop(reason);
                return None;
            }
            FragInspect::Alone => return Some((m, Class::Flow(fp))),
        }
        // (a rule may have changed the header)
        let Some(meta) = pipeline.meta(m.data()) else {
            drop(m);
            c.frag_invalid += 1;
            c.drop(DropReason::FragmentInvalid);
            return None;
        };
        // Room to hold one more original: evict the oldest datagrams.
        while self.held_mbufs >= self.max_held && self.defrag.evict_one() {
            self.collect_released(c);
        }
        if self.held_mbufs >= self.max_held {
            drop(m);
            c.frag_invalid += 1;
            c.drop(DropReason::FragmentInvalid);
            return None;
        }
        let l3 = meta.l3_offset as usize;
        let ip = m.data().get(l3..).unwrap_or(&[]);
        let result = match meta.l3 {
            L3::Ipv4 => self.defrag.push_ipv4(ip, now),
            _ => self.defrag.push_ipv6(ip, now),
        };
        let id = self.defrag.last_datagram();
        self.collect_released(c);
        match result {
            DefragResult::NotFragment => Some((m, Class::Flow(fp))),
            DefragResult::Pending => {
                self.alert_discarded(&meta);
                match id {
                    Some(id) => {
                        self.held.entry(id).or_insert_with(|| Held { frags: Vec::new(), since_ms: now }).frags.push(m);
                        self.held_mbufs += 1;
                    }
                    None => {
                        drop(m);
                        c.frag_invalid += 1;
                        c.drop(DropReason::FragmentInvalid);
                    }
                }
                c.frag_held = self.held_mbufs as u64;
                None
            }
            DefragResult::Complete { packet, .. } => {
                self.alert_discarded(&meta);
                let mut originals = id.and_then(|id| self.take_held(id)).unwrap_or_default();
                originals.push(m);
                c.frag_held = self.held_mbufs as u64;
                if !self.defrag.pieces().is_empty() {
                    originals = self.cut_to_pieces(originals, pipeline, c);
                    if originals.is_empty() {
                        return None;
                    }
                }
                self.carrier(originals, &packet, pipeline, rings, c)
            }
            DefragResult::Invalid(DefragError::AfterLast) => {
                // Haka: this fragment alone is alerted and dropped.
                drop(m);
                c.frag_invalid += 1;
                c.drop(DropReason::FragmentInvalid);
                self.alert(&meta, None);
                None
            }
            DefragResult::Invalid(e) => {
                let mut n = 1;
                drop(m);
                if let Some(h) = id.and_then(|id| self.take_held(id)) {
                    n += h.len();
                }
                c.frag_held = self.held_mbufs as u64;
                c.frag_invalid += 1;
                c.dropped[DropReason::FragmentInvalid as usize] += n as u64;
                let why = match e {
                    DefragError::Overlap => Some("overlap"),
                    DefragError::OutOfBounds => Some("out of bounds"),
                    DefragError::Malformed | DefragError::Capacity | DefragError::AfterLast => None,
                };
                if let Some(why) = why {
                    self.alert(&meta, Some(why));
                }
                None
            }
        }
    }

    /// Haka overlaps: one alert per fragment the last push discarded (it lay after the
    /// datagram's last fragment).
    fn alert_discarded(&mut self, meta: &PacketMeta) {
        for _ in 0..self.defrag.discarded() {
            self.alert(meta, None);
        }
    }

    /// Haka overlaps: the fragments of a completed datagram become what Haka sent: each
    /// cut to the part of the datagram taken from it, in offset order; those that gave
    /// nothing (covered by others) are dropped.
    fn cut_to_pieces(&mut self, originals: Vec<Mbuf>, pipeline: &Pipeline, c: &mut Counters) -> Vec<Mbuf> {
        let pieces = self.defrag.pieces().to_vec();
        let total = pieces.last().map_or(0, |p| p.offset + p.len);
        let n = originals.len();
        let mut slots: Vec<Option<Mbuf>> = originals.into_iter().map(Some).collect();
        let mut out = Vec::with_capacity(pieces.len());
        for p in &pieces {
            let Some(mut m) = slots.get_mut(p.arrival as usize).and_then(Option::take) else { continue };
            let Some(l3) = pipeline.meta(m.data()).map(|mm| mm.l3_offset as usize) else { continue };
            let Some(cut) = m.data().get(l3..).and_then(|ip| cut_ipv4_fragment(ip, p.offset, p.len, total)) else {
                continue;
            };
            let unchanged = m.data().get(l3..l3 + cut.len()).is_some_and(|b| b == cut.as_slice())
                && m.data().len() == l3 + cut.len();
            if !unchanged {
                if !m.resize(l3 + cut.len()) {
                    continue;
                }
                m.data_mut()[l3..].copy_from_slice(&cut);
            }
            out.push(m);
        }
        let dropped = (n - out.len()) as u64;
        if out.len() != pieces.len() {
            // (cannot happen: every piece comes from a held fragment) all dropped
            c.dropped[DropReason::FragmentInvalid as usize] += n as u64;
            return Vec::new();
        }
        c.dropped[DropReason::FragmentInvalid as usize] += dropped;
        out
    }

    /// Builds the carrier of a complete datagram and sends it to its flow's owner, or
    /// returns it (with its class) when that is this worker.
    fn carrier(
        &mut self,
        originals: Vec<Mbuf>,
        packet: &[u8],
        pipeline: &Pipeline,
        rings: Option<&[Ring]>,
        c: &mut Counters,
    ) -> Option<(Mbuf, Class)> {
        let n = originals.len() as u64;
        let first = &originals[0];
        let l3 = pipeline.meta(first.data()).map_or(0, |m| m.l3_offset as usize);
        let link = first.data().get(..l3).unwrap_or(&[]);
        let Some(mut carrier) = self.pool.alloc_concat(link, packet, first.port()) else {
            c.dropped[DropReason::FragmentNoBuffer as usize] += n;
            return None;
        };
        if carrier.chain(originals).is_err() {
            c.dropped[DropReason::FragmentNoBuffer as usize] += n;
            return None;
        }
        c.frag_reassembled += 1;
        let class = pipeline.classify(carrier.data(), carrier.data().len() as u32);
        if class.is_fragment() {
            // A fragment inside a fragment (nested IPv6 Fragment headers): refused.
            c.frag_invalid += 1;
            c.dropped[DropReason::FragmentInvalid as usize] += n;
            return None;
        }
        if let (Some(rings), Some(hash), Some(owners)) = (rings, class.flow_hash(), self.owners.as_ref()) {
            let owner = owners.owner(hash, self.me);
            if owner != self.me {
                if self.hand_over(carrier, owner, rings, c) {
                    c.frag_handed_over += 1;
                }
                return None;
            }
        }
        Some((carrier, class))
    }

    /// Enqueues a fragment or a carrier on worker `owner`'s ring, counted in `inflight`.
    fn hand_over(&mut self, m: Mbuf, owner: usize, rings: &[Ring], c: &mut Counters) -> bool {
        let Some(ring) = rings.get(owner) else {
            c.drop(DropReason::DispatchRingFull);
            return false;
        };
        let packets = if self.is_carrier(&m) { m.segments() as u64 - 1 } else { 1 };
        self.inflight.fetch_add(1, Ordering::SeqCst);
        let mut b = MbufBurst::new();
        let _ = b.push(m);
        if ring.enqueue(&mut b) == 1 {
            c.dispatched_out += 1;
            true
        } else {
            // `b` frees it (a carrier with its originals).
            self.inflight.fetch_sub(1, Ordering::SeqCst);
            c.dropped[DropReason::DispatchRingFull as usize] += packets;
            false
        }
    }

    fn take_held(&mut self, id: DatagramId) -> Option<Vec<Mbuf>> {
        let h = self.held.remove(&id)?;
        self.held_mbufs -= h.frags.len();
        Some(h.frags)
    }

    /// Frees the fragments of datagrams the defragmenter released (timeout, eviction).
    fn collect_released(&mut self, c: &mut Counters) {
        while let Some((id, _why)) = self.defrag.take_released() {
            if let Some(frags) = self.take_held(id) {
                c.dropped[DropReason::FragmentIncomplete as usize] += frags.len() as u64;
            }
        }
        let k = self.defrag.counters();
        c.frag_timed_out = k.timed_out;
        c.frag_evicted = k.evicted;
        c.frag_held = self.held_mbufs as u64;
    }

    /// An accepted carrier: unchains it and returns what must be transmitted: the
    /// original fragments, or, when a rule `modified` the datagram, its re-fragmentation.
    /// Empty when re-fragmentation failed (everything freed and counted).
    pub fn release(&mut self, mut carrier: Mbuf, modified: bool, pipeline: &Pipeline, c: &mut Counters) -> Vec<Mbuf> {
        let originals = carrier.unchain();
        if !modified || originals.is_empty() {
            return originals;
        }
        let n = originals.len() as u64;
        let originals = if self.haka_refragment {
            match refragment_haka_into(&carrier, originals, pipeline) {
                Ok(out) => {
                    c.frag_refragmented += 1;
                    return out;
                }
                Err(originals) => originals,
            }
        } else {
            originals
        };
        match refragment_into(&carrier, originals, pipeline) {
            Some(out) => {
                c.frag_refragmented += 1;
                out
            }
            None => {
                c.accepted = c.accepted.saturating_sub(1);
                c.dropped[DropReason::FragmentNoBuffer as usize] += n;
                Vec::new()
            }
        }
    }

    /// Periodic work (every loop iteration; does something at most once per ms): releases
    /// timed-out datagrams, and once a second frees held fragments older than any timeout
    /// (a safety net: they are normally released through `take_released`).
    pub fn housekeeping(&mut self, now: u64, c: &mut Counters) {
        if now == self.last_expire_ms {
            return;
        }
        self.last_expire_ms = now;
        if self.defrag.expire(now) > 0 {
            self.collect_released(c);
        }
        if now >= self.next_sweep_ms {
            self.next_sweep_ms = now + 1000;
            let limit = self.timeout_ms + 1000;
            let stale: Vec<DatagramId> =
                self.held.iter().filter(|(_, h)| h.since_ms + limit <= now).map(|(id, _)| *id).collect();
            for id in stale {
                if let Some(frags) = self.take_held(id) {
                    c.dropped[DropReason::FragmentIncomplete as usize] += frags.len() as u64;
                }
            }
            c.frag_held = self.held_mbufs as u64;
        }
    }

    /// The worker stops: frees every held fragment (counted as incomplete).
    pub fn shutdown(&mut self, c: &mut Counters) {
        for (_, h) in self.held.drain() {
            c.dropped[DropReason::FragmentIncomplete as usize] += h.frags.len() as u64;
        }
        self.held_mbufs = 0;
        let k = self.defrag.counters();
        c.frag_timed_out = k.timed_out;
        c.frag_evicted = k.evicted;
        c.frag_held = 0;
    }

    /// Haka's alert for an invalid fragment; `why` is added to the description (Haka's
    /// own text has none).
    fn alert(&mut self, meta: &PacketMeta, why: Option<&str>) {
        self.alert_seq += 1;
        let family = if meta.l3 == L3::Ipv4 { "ipv4" } else { "ipv6" };
        let src = addr_text(meta, &meta.src_addr);
        let dst = addr_text(meta, &meta.dst_addr);
        let a = Alert {
            id: alert_id(self.me, ALERT_ID_BASE | self.alert_seq),
            time_secs: unix_time_now(),
            description: Some(match why {
                Some(why) => format!("invalid {family} fragment ({why})"),
                None => format!("invalid {family} fragment"),
            }),
            severity: Some("low".into()),
            sources: vec![src.clone()],
            targets: vec![dst.clone()],
            flow: Some(FlowInfo { proto: meta.proto, src, sport: 0, dst, dport: 0 }),
            worker: self.me,
            ..Alert::default()
        };
        let _ = self.alerts.push(a);
    }
}

/// `[defrag] refragment = "haka"` (IPv4): the modified datagram of `carrier` leaves as its
/// fragments, each with its share (see [`refragment_ipv4_haka`]), written into the
/// original mbufs. Err: not possible, the originals are given back untouched.
fn refragment_haka_into(carrier: &Mbuf, mut originals: Vec<Mbuf>, pipeline: &Pipeline) -> Result<Vec<Mbuf>, Vec<Mbuf>> {
    let Some(frames) = haka_frames(carrier, &mut originals, pipeline) else { return Err(originals) };
    let mut out = Vec::with_capacity(frames.len());
    let port = carrier.port();
    for (mut m, f) in originals.into_iter().zip(&frames) {
        if !m.resize(f.len()) {
            // (an mbuf holds any IPv4 packet: cannot happen) nothing leaves
            return Ok(Vec::new());
        }
        m.data_mut().copy_from_slice(f);
        m.set_port(port);
        out.push(m);
    }
    Ok(out)
}

/// The frames of [`refragment_haka_into`], in offset order, with `originals` sorted the
/// same way and cut to as many (identical duplicates dropped).
fn haka_frames(carrier: &Mbuf, originals: &mut Vec<Mbuf>, pipeline: &Pipeline) -> Option<Vec<Vec<u8>>> {
    let data = carrier.data();
    let meta = pipeline.meta(data)?;
    if meta.l3 != L3::Ipv4 {
        return None;
    }
    let l3 = meta.l3_offset as usize;
    let link = data.get(..l3)?;
    let ip = data.get(l3..l3 + meta.ip_len as usize)?;
    let mut order: Vec<(usize, usize, usize)> = Vec::with_capacity(originals.len());
    for (i, o) in originals.iter().enumerate() {
        let om = pipeline.meta(o.data())?;
        let oip = o.data().get(om.l3_offset as usize..om.l3_offset as usize + om.ip_len as usize)?;
        let off = crate::wire::Ipv4Packet::new_checked(oip).ok()?.frag_offset() as usize;
        order.push((off, i, om.l3_offset as usize));
    }
    order.sort_unstable();
    // (identical duplicates, absorbed by the reassembly, leave once)
    order.dedup_by_key(|e| e.0);
    let mut parts: Vec<&[u8]> = Vec::with_capacity(order.len());
    for &(_, i, ol3) in &order {
        let d = originals[i].data();
        let om = pipeline.meta(d)?;
        parts.push(d.get(ol3..ol3 + om.ip_len as usize)?);
    }
    let frags = refragment_ipv4_haka(ip, &parts)?;
    // One mbuf per output frame: the originals in offset order (an emptied one is freed).
    let mut slots: Vec<Option<Mbuf>> = std::mem::take(originals).into_iter().map(Some).collect();
    let mut kept: Vec<Mbuf> = order.iter().filter_map(|&(_, i, _)| slots[i].take()).collect();
    kept.truncate(frags.len());
    *originals = kept;
    if originals.len() != frags.len() {
        return None;
    }
    Some(frags.into_iter().map(|f| [link, f.as_slice()].concat()).collect())
}

/// Re-fragments the (modified) datagram of `carrier` to the largest original's IP size,
/// into the original mbufs (new ones from their pool when more are needed).
fn refragment_into(carrier: &Mbuf, originals: Vec<Mbuf>, pipeline: &Pipeline) -> Option<Vec<Mbuf>> {
    let data = carrier.data();
    let meta = pipeline.meta(data)?;
    let l3 = meta.l3_offset as usize;
    let link = data.get(..l3)?;
    let ip = data.get(l3..l3 + meta.ip_len as usize)?;
    let mut mtu = 0;
    let mut v6_info = None;
    for o in &originals {
        let om = pipeline.meta(o.data())?;
        mtu = mtu.max(om.ip_len as usize);
        if meta.l3 == L3::Ipv6 && v6_info.is_none() {
            v6_info = o.data().get(om.l3_offset as usize..).and_then(ipv6_fragment_info);
        }
    }
    let frags = match meta.l3 {
        L3::Ipv4 => refragment_ipv4(ip, mtu).ok()?,
        L3::Ipv6 => {
            let (unfrag, ident) = v6_info?;
            refragment_ipv6(ip, unfrag, ident, mtu).ok()?
        }
        L3::Other(_) => return None,
    };
    let pool = originals.first()?.pool();
    let port = carrier.port();
    let mut spare = originals.into_iter();
    let mut out = Vec::with_capacity(frags.len());
    for f in &frags {
        let len = link.len() + f.len();
        let mut m = loop {
            match spare.next() {
                Some(mut o) => {
                    if o.resize(len) {
                        break o;
                    }
                }
                None => {
                    let mut o = pool.alloc()?;
                    if !o.resize(len) {
                        return None;
                    }
                    break o;
                }
            }
        };
        let d = m.data_mut();
        d[..link.len()].copy_from_slice(link);
        d[link.len()..].copy_from_slice(f);
        m.set_port(port);
        out.push(m);
    }
    Some(out)
}
