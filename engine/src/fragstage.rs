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
//!   owns that flow (`owner_of`), the carrier is handed to it over its dispatch ring. The
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
//! Haka's per-packet `dont_reassemble` flag (ipv4 views) is kept but comes too late for a
//! received fragment: rules run after reassembly. Packets the rules inject never come here
//! (the worker batches them directly, as if the flag were set). `[defrag] enabled = false`
//! turns reassembly off.
use crate::alert::{alert_id, unix_time_now, Alert, AlertQueue, FlowInfo, ALERT_ID_COUNTER_BITS};
use crate::defrag::{DatagramId, DefragConfig, DefragError, DefragResult, Defragmenter};
use crate::dissect::{PacketMeta, L3};
use crate::dpdk::{Mbuf, MbufBurst, PoolRef, Ring};
use crate::pipeline::{Class, Pipeline};
use crate::refrag::{ipv6_fragment_info, refragment_ipv4, refragment_ipv6};
use crate::stats::{Counters, DropReason};
use crate::worker::owner_of;
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
}

struct Held {
    frags: Vec<Mbuf>,
    since_ms: u64,
}

/// One worker's fragment stage.
pub struct FragStage<'a> {
    me: usize,
    workers: usize,
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
    pub fn new(plan: &FragPlan, me: usize, workers: usize, alerts: Arc<AlertQueue>, inflight: &'a AtomicI64) -> Self {
        FragStage {
            me,
            workers,
            defrag: Defragmenter::new(plan.config),
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
    /// (held, handed over, dropped) is dealt with here.
    pub fn on_fragment(
        &mut self,
        m: Mbuf,
        class: &Class,
        now: u64,
        pipeline: &Pipeline,
        rings: Option<&[Ring]>,
        c: &mut Counters,
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
                let mut originals = id.and_then(|id| self.take_held(id)).unwrap_or_default();
                originals.push(m);
                c.frag_held = self.held_mbufs as u64;
                self.carrier(originals, &packet, pipeline, rings, c)
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
                    DefragError::Malformed | DefragError::Capacity => None,
                };
                if let Some(why) = why {
                    self.alert(&meta, why);
                }
                None
            }
        }
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
        if let (Some(rings), Some(hash)) = (rings, class.flow_hash()) {
            let owner = owner_of(hash, self.workers);
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

    /// Haka's alert for an invalid fragment (the datagram is dropped).
    fn alert(&mut self, meta: &PacketMeta, why: &str) {
        self.alert_seq += 1;
        let family = if meta.l3 == L3::Ipv4 { "ipv4" } else { "ipv6" };
        let src = addr_text(meta, &meta.src_addr);
        let dst = addr_text(meta, &meta.dst_addr);
        let a = Alert {
            id: alert_id(self.me, ALERT_ID_BASE | self.alert_seq),
            time_secs: unix_time_now(),
            description: Some(format!("invalid {family} fragment ({why})")),
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
