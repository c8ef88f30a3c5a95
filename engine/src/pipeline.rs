//! The per-packet decision, free of DPDK so it is unit-testable: dissect,
//! find the flow, decide. One `Pipeline` per worker (it owns the flow table).
use crate::config::{Config, Verdict};
use crate::dissect::{dissect, DissectOptions, LinkType, Malformed, L3};
use crate::flow::{Direction, EndReason, Flow, FlowId, FlowKey, FlowPacket, FlowTable, Observed, Side};
use crate::stats::{Counters, DropReason};

/// What a worker needs to decide on a packet, computed once by whichever
/// worker sees it first (the dispatcher reuses it when it owns the flow).
#[derive(Clone, Copy, Debug)]
pub enum Class {
    /// An IP packet: its flow key, hash, sender and TCP flags, ready for the flow table.
    Flow(FlowPacket),
    /// An IP fragment, to be reassembled (only when `[defrag] enabled`): its address-only
    /// key and hash (every fragment of a datagram has the same), see `crate::fragstage`.
    /// Batched like `Flow` if it is decided on as is.
    Fragment(FlowPacket),
    /// Not IP (ARP, LLDP, ...): no flow, accepted.
    NonIp,
    Malformed(Malformed),
}

impl Class {
    /// The flow hash (dispatch), if the packet has a flow.
    #[inline(always)]
    pub fn flow_hash(&self) -> Option<u64> {
        match self {
            Class::Flow(p) | Class::Fragment(p) => Some(p.hash),
            _ => None,
        }
    }

    /// True for a fragment to be reassembled.
    #[inline(always)]
    pub fn is_fragment(&self) -> bool {
        matches!(self, Class::Fragment(_))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Accept,
    Drop(DropReason),
}

/// Packets per batch: one rx burst.
pub const BATCH: usize = 32;

#[derive(Clone, Copy)]
enum Kind {
    /// Index into `Batch::flows`.
    Flow(u8),
    NonIp,
    Malformed(Malformed),
}

/// Up to [`BATCH`] packets this worker decides on together, so that the flow
/// table overlaps the cache misses of all their lookups (`observe_burst`).
/// Flow packets are stored contiguously as they come, ready for the table.
pub struct Batch {
    kind: [Kind; BATCH],
    /// Caller's tag per packet (its slot in the rx burst).
    tag: [u8; BATCH],
    decision: [Decision; BATCH],
    n: usize,
    flows: [FlowPacket; BATCH],
    n_flows: usize,
    observed: [Observed; BATCH],
    /// Decided on since the last `clear` (see [`Batch::is_decided`]).
    decided: bool,
}

const NO_KEY: FlowKey = FlowKey { lo_addr: [0; 16], hi_addr: [0; 16], lo_port: 0, hi_port: 0, vlan: 0, proto: 0 };

impl Default for Batch {
    fn default() -> Self {
        Batch {
            kind: [Kind::NonIp; BATCH],
            tag: [0; BATCH],
            decision: [Decision::Accept; BATCH],
            n: 0,
            flows: [FlowPacket { key: NO_KEY, hash: 0, sender: Side::Lo, tcp_flags: None, bytes: 0 }; BATCH],
            n_flows: 0,
            observed: [Observed { id: 0, dir: Direction::Up, created: false }; BATCH],
            decided: false,
        }
    }
}

impl Batch {
    pub fn clear(&mut self) {
        self.n = 0;
        self.n_flows = 0;
        self.decided = false;
    }

    /// Whether [`Pipeline::decide_batch`] (or `decide_batch_owned`) ran on the batch since
    /// it was last cleared.
    pub fn is_decided(&self) -> bool {
        self.decided
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn is_full(&self) -> bool {
        self.n == BATCH
    }

    /// Adds a classified packet; `tag` comes back with its decision.
    #[inline(always)]
    pub fn push(&mut self, tag: u8, class: Class) {
        debug_assert!(self.n < BATCH && !self.decided);
        self.kind[self.n] = match class {
            Class::Flow(p) | Class::Fragment(p) => {
                self.flows[self.n_flows] = p;
                self.n_flows += 1;
                Kind::Flow(self.n_flows as u8 - 1)
            }
            Class::NonIp => Kind::NonIp,
            Class::Malformed(m) => Kind::Malformed(m),
        };
        self.tag[self.n] = tag;
        self.n += 1;
    }

    /// The flow (id, direction) of packet `j` after [`Pipeline::decide_batch`], if it has one.
    #[inline(always)]
    pub fn flow_of(&self, j: usize) -> Option<(FlowId, Direction)> {
        match self.kind[j] {
            Kind::Flow(k) => Some((self.observed[k as usize].id, self.observed[k as usize].dir)),
            _ => None,
        }
    }

    /// Whether the flow table created the flow of packet `j` for it.
    #[inline(always)]
    pub fn flow_created(&self, j: usize) -> bool {
        match self.kind[j] {
            Kind::Flow(k) => self.observed[k as usize].created,
            _ => false,
        }
    }

    /// Overrides the decision of packet `j` (rules run after the flow stage).
    #[inline(always)]
    pub fn set_decision(&mut self, j: usize, d: Decision) {
        self.decision[j] = d;
    }

    /// (tag, decision) of packet `j` after [`Pipeline::decide_batch`].
    #[inline(always)]
    pub fn result(&self, j: usize) -> (u8, Decision) {
        (self.tag[j], self.decision[j])
    }
}

pub struct Pipeline {
    link: LinkType,
    opts: DissectOptions,
    malformed_verdict: Verdict,
    table: FlowTable,
    /// Fragments are classified `Class::Fragment` (reassembled by the worker).
    defrag: bool,
}

/// Flows examined per expiry step (bounded work per loop iteration).
const EXPIRE_BUDGET: usize = 64;

impl Pipeline {
    pub fn new(cfg: &Config, link: LinkType) -> Pipeline {
        Pipeline {
            link,
            opts: DissectOptions { ipv4_checksum: cfg.datapath.ipv4_checksum },
            malformed_verdict: cfg.datapath.malformed,
            table: FlowTable::new(cfg.flow_table_config()),
            defrag: cfg.defrag.enabled,
        }
    }

    /// Dissects a frame of `len` bytes on the wire and prepares its flow lookup.
    #[inline(always)]
    pub fn classify(&self, frame: &[u8], len: u32) -> Class {
        match dissect(frame, self.link, &self.opts) {
            Ok(m) => self.classify_dissected(&m, len),
            Err(m) => Class::Malformed(m),
        }
    }

    /// [`classify`](Self::classify), with the dissection it made (for the stages after the
    /// flow table: a packet is dissected once).
    #[inline(always)]
    pub fn classify_meta(&self, frame: &[u8], len: u32, out: &mut Option<crate::dissect::PacketMeta>) -> Class {
        match dissect(frame, self.link, &self.opts) {
            Ok(m) => {
                let meta = out.insert(m);
                self.classify_dissected(meta, len)
            }
            Err(m) => {
                *out = None;
                Class::Malformed(m)
            }
        }
    }

    #[inline(always)]
    fn classify_dissected(&self, meta: &crate::dissect::PacketMeta, len: u32) -> Class {
        if let L3::Other(_) = meta.l3 {
            return Class::NonIp;
        }
        let (key, sender) = FlowKey::from_meta(meta);
        let tcp_flags = (meta.proto == 6 && meta.has_l4).then_some(meta.tcp_flags);
        let hash = key.hash();
        // Start loading the flow's index bucket now: by the time the batch is
        // looked up, after the rest of the burst is classified, it is in cache.
        let p = FlowPacket { key, hash, sender, tcp_flags, bytes: len };
        if meta.fragment && self.defrag {
            return Class::Fragment(p);
        }
        self.table.prefetch(hash);
        Class::Flow(p)
    }

    /// The link type of the frames this pipeline dissects.
    pub fn link(&self) -> LinkType {
        self.link
    }

    /// The full dissection of a frame, for the rules (which need every offset).
    #[inline]
    pub fn meta(&self, frame: &[u8]) -> Option<crate::dissect::PacketMeta> {
        dissect(frame, self.link, &self.opts).ok()
    }

    /// Decides on every packet of the batch; flow lookups are done together.
    pub fn decide_batch(&mut self, b: &mut Batch, now_ms: u64, c: &mut Counters) {
        if b.n_flows > 0 {
            self.table.observe_burst(&b.flows[..b.n_flows], now_ms, &mut b.observed[..b.n_flows]);
        }
        for i in 0..b.n {
            b.decision[i] = self.decide(b.kind[i], &b.observed, c);
        }
        b.decided = true;
    }

    /// [`decide_batch`](Self::decide_batch) for worker `me` of several (software dispatch):
    /// a packet whose flow this worker's table does not hold and that `owner(hash)` (the
    /// owner table, asked only then) gives to another worker is taken out of the batch and
    /// returned with its owner, as (tag, owner), to be handed over. A flow the table holds
    /// is this worker's (a claim never changes, and a worker creates only flows it owns),
    /// so the packets of known flows cost no ownership lookup.
    pub fn decide_batch_owned(
        &mut self,
        b: &mut Batch,
        now_ms: u64,
        c: &mut Counters,
        me: usize,
        mut owner: impl FnMut(u64) -> usize,
    ) -> arrayvec::ArrayVec<(u8, usize), BATCH> {
        let mut others = arrayvec::ArrayVec::new();
        let foreign = if b.n_flows > 0 {
            self.table.observe_burst_owned(&b.flows[..b.n_flows], now_ms, &mut b.observed[..b.n_flows], &mut |h| owner(h) == me)
        } else {
            0
        };
        let mut kept = 0;
        for i in 0..b.n {
            if let Kind::Flow(k) = b.kind[i] {
                if foreign >> k & 1 != 0 {
                    // (claimed by now: a second look reads the slot just loaded)
                    others.push((b.tag[i], owner(b.flows[k as usize].hash)));
                    continue;
                }
            }
            b.kind[kept] = b.kind[i];
            b.tag[kept] = b.tag[i];
            b.decision[kept] = self.decide(b.kind[i], &b.observed, c);
            kept += 1;
        }
        b.n = kept;
        b.decided = true;
        others
    }

    /// The decision on a packet of kind `kind` once its flow is observed.
    #[inline(always)]
    fn decide(&self, kind: Kind, observed: &[Observed; BATCH], c: &mut Counters) -> Decision {
        c.processed += 1;
        match kind {
            Kind::Flow(k) => {
                c.flows_created += observed[k as usize].created as u64;
                c.accepted += 1;
                Decision::Accept
            }
            Kind::NonIp => {
                c.non_ip += 1;
                c.accepted += 1;
                Decision::Accept
            }
            Kind::Malformed(m) => self.malformed(m, c),
        }
    }

    fn malformed(&self, m: Malformed, c: &mut Counters) -> Decision {
        c.malformed[m.index()] += 1;
        match self.malformed_verdict {
            Verdict::Accept => {
                c.accepted += 1;
                Decision::Accept
            }
            Verdict::Drop => {
                c.drop(DropReason::Malformed);
                Decision::Drop(DropReason::Malformed)
            }
        }
    }

    /// Classifies and decides on one packet (tests, slow paths).
    pub fn process(&mut self, frame: &[u8], now_ms: u64, c: &mut Counters) -> Decision {
        let mut b = Batch::default();
        b.push(0, self.classify(frame, frame.len() as u32));
        self.decide_batch(&mut b, now_ms, c);
        b.decision[0]
    }

    /// One bounded step of flow expiry; keeps the flow counters current.
    /// The ids of the flows that ended are appended to `ended`.
    pub fn expire(&mut self, now_ms: u64, c: &mut Counters, ended: &mut Vec<FlowId>) {
        let mut expired = 0;
        self.table.expire(now_ms, EXPIRE_BUDGET, &mut |id: FlowId, _f: &Flow, r: EndReason| {
            if r == EndReason::Timeout {
                expired += 1;
            }
            ended.push(id);
        });
        c.flows_expired += expired;
        let t = self.table.counters();
        c.flows_evicted = t.evicted;
        c.flows_active = self.table.len() as u64;
    }

    pub fn flows(&self) -> &FlowTable {
        &self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 54];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&40u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        let mut sum: u32 = 0;
        for i in (0..20).step_by(2) {
            sum += u16::from_be_bytes([ip[i], ip[i + 1]]) as u32;
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        let tcp = &mut f[34..54];
        tcp[0..2].copy_from_slice(&sport.to_be_bytes());
        tcp[2..4].copy_from_slice(&dport.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        f
    }

    #[test]
    fn both_directions_one_flow_and_verdicts() {
        let cfg = Config::default();
        let mut p = Pipeline::new(&cfg, LinkType::Ethernet);
        let mut c = Counters::default();
        let a = tcp_frame([198, 18, 0, 1], [198, 18, 0, 2], 40000, 80, 0x02);
        let b = tcp_frame([198, 18, 0, 2], [198, 18, 0, 1], 80, 40000, 0x12);
        assert_eq!(p.process(&a, 0, &mut c), Decision::Accept);
        assert_eq!(p.process(&b, 1, &mut c), Decision::Accept);
        assert_eq!(c.flows_created, 1);
        assert_eq!(p.flows().len(), 1);
        // Truncated: malformed, dropped by default.
        assert_eq!(p.process(&a[..40], 2, &mut c), Decision::Drop(DropReason::Malformed));
        assert_eq!(c.malformed_total(), 1);
        // ARP is not IP: accepted, no flow.
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(p.process(&arp, 3, &mut c), Decision::Accept);
        assert_eq!(c.non_ip, 1);
        assert_eq!(c.processed, 4);
        assert_eq!(c.accepted, 3);
    }

    #[test]
    fn batch_owned_hands_out_the_flows_of_other_workers_in_order() {
        let cfg = Config::default();
        let mut p = Pipeline::new(&cfg, LinkType::Ethernet);
        let mut c = Counters::default();
        let frames: Vec<Vec<u8>> = (0..6u8).map(|i| tcp_frame([198, 18, 0, i], [198, 18, 1, 1], 1000, 80, 0x02)).collect();
        let hashes: Vec<u64> = frames.iter().map(|f| p.classify(f, f.len() as u32).flow_hash().unwrap()).collect();
        // worker 0 of 3: flows 1 and 4 are worker 2's, flow 3 worker 1's
        let owner = |h: u64| match hashes.iter().position(|&x| x == h) {
            Some(1) | Some(4) => 2,
            Some(3) => 1,
            _ => 0,
        };
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        let mut b = Batch::default();
        for (i, f) in frames.iter().enumerate() {
            b.push(10 + i as u8, p.classify(f, f.len() as u32));
        }
        b.push(20, p.classify(&arp, 42));
        let others = p.decide_batch_owned(&mut b, 0, &mut c, 0, owner);
        assert_eq!(others.as_slice(), &[(11, 2), (13, 1), (14, 2)]);
        assert!(b.is_decided());
        let kept: Vec<u8> = (0..b.len()).map(|j| b.result(j).0).collect();
        assert_eq!(kept, [10, 12, 15, 20]);
        assert!((0..3).all(|j| b.flow_created(j) && b.flow_of(j).is_some()));
        assert!(b.flow_of(3).is_none());
        assert_eq!((c.processed, c.flows_created, p.flows().len()), (4, 3, 3));
        b.clear();
        assert!(!b.is_decided());
    }

    #[test]
    fn batch_decides_like_one_by_one() {
        let cfg = Config::default();
        let mut one = Pipeline::new(&cfg, LinkType::Ethernet);
        let mut many = Pipeline::new(&cfg, LinkType::Ethernet);
        let (mut c1, mut c2) = (Counters::default(), Counters::default());
        let mut frames = Vec::new();
        for i in 0..40u8 {
            frames.push(tcp_frame([198, 18, 0, i % 7], [198, 18, 1, 1], 1000 + i as u16 % 5, 80, 0x10));
            frames.push(tcp_frame([198, 18, 1, 1], [198, 18, 0, i % 7], 80, 1000 + i as u16 % 5, 0x10));
        }
        frames.push(vec![0u8; 3]);
        let mut expected = Vec::new();
        for f in &frames {
            expected.push(one.process(f, 5, &mut c1));
        }
        let mut got = Vec::new();
        for chunk in frames.chunks(BATCH) {
            let mut b = Batch::default();
            for (t, f) in chunk.iter().enumerate() {
                b.push(t as u8, many.classify(f, f.len() as u32));
            }
            many.decide_batch(&mut b, 5, &mut c2);
            for j in 0..b.len() {
                got.push(b.result(j).1);
            }
        }
        assert_eq!(got, expected);
        assert_eq!(c1, c2);
        assert_eq!(c2.flows_created, 35);
        let f: Vec<_> = many.flows().iter().map(|(_, f)| (f.key, f.packets, f.bytes)).collect();
        let g: Vec<_> = one.flows().iter().map(|(_, f)| (f.key, f.packets, f.bytes)).collect();
        assert_eq!(f, g);
    }

    #[test]
    fn fragments_are_classified_for_reassembly_when_enabled() {
        let mut frag = tcp_frame([198, 18, 0, 1], [198, 18, 0, 2], 1000, 80, 0x10);
        frag[14 + 6] = 0x20; // MF
        frag[24..26].copy_from_slice(&[0, 0]);
        let c = crate::wire::checksum::compute(&frag[14..34]);
        frag[24..26].copy_from_slice(&c.to_be_bytes());
        let whole = tcp_frame([198, 18, 0, 1], [198, 18, 0, 2], 1000, 80, 0x10);
        let mut cfg = Config::default();
        let p = Pipeline::new(&cfg, LinkType::Ethernet);
        let class = p.classify(&frag, frag.len() as u32);
        assert!(class.is_fragment(), "{class:?}");
        match class {
            // Address-only key: every fragment of the datagram goes to one worker.
            Class::Fragment(fp) => assert_eq!((fp.key.lo_port, fp.key.hi_port, fp.key.proto), (0, 0, 6)),
            other => panic!("{other:?}"),
        }
        assert!(class.flow_hash().is_some());
        assert!(!p.classify(&whole, whole.len() as u32).is_fragment());
        cfg.defrag.enabled = false;
        let p = Pipeline::new(&cfg, LinkType::Ethernet);
        assert!(matches!(p.classify(&frag, frag.len() as u32), Class::Flow(_)));
        // Decided on as is (e.g. reassembly disabled), a fragment is an ordinary flow packet.
        let mut p = Pipeline::new(&Config::default(), LinkType::Ethernet);
        let mut b = Batch::default();
        b.push(0, p.classify(&frag, frag.len() as u32));
        let mut cnt = Counters::default();
        p.decide_batch(&mut b, 0, &mut cnt);
        assert_eq!(b.result(0), (0, Decision::Accept));
        assert_eq!(cnt.flows_created, 1);
    }

    #[test]
    fn malformed_accept_verdict() {
        let mut cfg = Config::default();
        cfg.datapath.malformed = Verdict::Accept;
        let mut p = Pipeline::new(&cfg, LinkType::Ethernet);
        let mut c = Counters::default();
        assert_eq!(p.process(&[0u8; 5], 0, &mut c), Decision::Accept);
        assert_eq!(c.malformed_total(), 1);
    }

    #[test]
    fn idle_flows_expire() {
        let mut cfg = Config::default();
        cfg.flows.udp_timeout = 1;
        cfg.flows.tcp_syn_timeout = 1;
        let mut p = Pipeline::new(&cfg, LinkType::Ethernet);
        let mut c = Counters::default();
        p.process(&tcp_frame([198, 18, 0, 1], [198, 18, 0, 2], 1, 2, 0x02), 0, &mut c);
        for t in (0..5000).step_by(100) {
            p.expire(t, &mut c, &mut Vec::new());
        }
        assert_eq!(c.flows_expired, 1);
        assert_eq!(c.flows_active, 0);
    }
}
