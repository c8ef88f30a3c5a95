//! Flow table throughput: `observe` per packet (hash included) over 1k and 64k live
//! flows, replayed in order (pcap-like: each packet of a different flow) and in random
//! order; plus the datapath mix (observe + expire every burst) and a SYN flood
//! (every packet creates a flow and evicts one).
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use haka_engine::dissect::{PacketMeta, L3};
use haka_engine::flow::{Direction, FlowKey, FlowPacket, FlowTable, FlowTableConfig, FlowTimeouts, Observed, Side};

const CAPACITY: usize = 65536;
/// Packets per criterion iteration.
const BATCH: usize = 4096;
/// Simulated clock: 1 ms per this many packets (~13 Mpps).
const PKTS_PER_MS: usize = 13_000;

#[derive(Clone, Copy)]
struct Pkt {
    key: FlowKey,
    side: Side,
    flags: Option<u8>,
    bytes: u32,
}

fn timeouts() -> FlowTimeouts {
    FlowTimeouts { tcp_syn_ms: 5_000, tcp_established_ms: 3_600_000, tcp_closing_ms: 30_000, udp_ms: 60_000, other_ms: 30_000 }
}

fn table() -> FlowTable {
    FlowTable::new(FlowTableConfig { capacity: CAPACITY, timeouts: timeouts() })
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn v4(a: u32) -> [u8; 16] {
    let mut x = [0u8; 16];
    x[10] = 0xff;
    x[11] = 0xff;
    x[12..].copy_from_slice(&a.to_be_bytes());
    x
}

/// Packet `i` of a flow population: 80% TCP, 20% UDP, random direction.
fn packet(flow: u32, rng: &mut Rng, tcp_flags: u8) -> Pkt {
    let r = rng.next();
    let tcp = !flow.is_multiple_of(5);
    let (c, s) = (v4(0x0a00_0000 ^ flow.wrapping_mul(2_654_435_761)), v4(0xc0a8_0000 + flow % 251));
    let (cp, sp) = (1024 + (flow % 60_000) as u16, if tcp { 443 } else { 53 });
    let up = r & 1 == 0;
    let meta = PacketMeta {
        l3: L3::Ipv4,
        vlan: 0,
        l3_offset: 14,
        l4_offset: 34,
        payload_offset: 54,
        payload_len: 0,
        proto: if tcp { 6 } else { 17 },
        has_l4: true,
        fragment: false,
        src_addr: if up { c } else { s },
        dst_addr: if up { s } else { c },
        src_port: if up { cp } else { sp },
        dst_port: if up { sp } else { cp },
        tcp_flags,
        ip_len: 40,
    };
    let (key, side) = FlowKey::from_meta(&meta);
    Pkt { key, side, flags: tcp.then_some(tcp_flags), bytes: 64 + (r >> 8) as u32 % 1400 }
}

/// One packet per flow, flows in creation order (a pcap replay cycling through them).
fn in_order(n: u32) -> Vec<Pkt> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..n).map(|f| packet(f, &mut rng, 0x18)).collect()
}

/// 256k packets (12 MB, about what an mbuf pool recycles), each of a random flow
/// among `n`. (A much longer array would mostly measure its own streaming through L3.)
fn random_order(n: u32) -> Vec<Pkt> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let flows = in_order(n);
    (0..1 << 18).map(|_| flows[(rng.next() % n as u64) as usize]).collect()
}

struct Replay {
    t: FlowTable,
    pkts: Vec<Pkt>,
    pos: usize,
    count: usize,
    now: u64,
}

impl Replay {
    /// A table holding all `n` flows (created in order), replaying `pkts`.
    fn new(n: u32, pkts: Vec<Pkt>) -> Replay {
        let mut t = table();
        for p in in_order(n) {
            t.observe(&p.key, p.key.hash(), p.side, 1_000_000, p.flags, p.bytes);
        }
        Replay { t, pkts, pos: 0, count: 0, now: 1_000_000 }
    }

    /// Bursts of 32 through `observe_burst` (building the burst array included).
    #[inline(always)]
    fn burst_n(&mut self, n: usize) {
        let mut out = [Observed { id: 0, dir: Direction::Up, created: false }; 32];
        for _ in 0..n / 32 {
            let mut burst = [FlowPacket { key: self.pkts[0].key, hash: 0, sender: Side::Lo, tcp_flags: None, bytes: 0 }; 32];
            for b in burst.iter_mut() {
                let p = &self.pkts[self.pos];
                self.pos += 1;
                if self.pos == self.pkts.len() {
                    self.pos = 0;
                }
                *b = FlowPacket { key: p.key, hash: p.key.hash(), sender: p.side, tcp_flags: p.flags, bytes: p.bytes };
            }
            self.count += 32;
            if self.count >= PKTS_PER_MS {
                self.count -= PKTS_PER_MS;
                self.now += 1;
            }
            self.t.observe_burst(&burst, self.now, &mut out);
            black_box(&out);
        }
    }

    #[inline(always)]
    fn observe_n(&mut self, n: usize) {
        for _ in 0..n {
            let p = &self.pkts[self.pos];
            self.pos += 1;
            if self.pos == self.pkts.len() {
                self.pos = 0;
            }
            self.count += 1;
            if self.count == PKTS_PER_MS {
                self.count = 0;
                self.now += 1;
            }
            black_box(self.t.observe(&p.key, p.key.hash(), p.side, self.now, p.flags, p.bytes));
        }
    }
}

fn bench_observe(c: &mut Criterion) {
    let mut g = c.benchmark_group("flow_observe");
    g.throughput(Throughput::Elements(BATCH as u64));
    for &(n, label) in &[(1024u32, "1k"), (65536u32, "64k")] {
        for (order, pkts) in [("in_order", in_order(n)), ("random", random_order(n))] {
            let mut r = Replay::new(n, pkts);
            g.bench_function(BenchmarkId::new(format!("{order}/one_by_one"), label), |b| b.iter(|| r.observe_n(BATCH)));
            g.bench_function(BenchmarkId::new(format!("{order}/burst32"), label), |b| b.iter(|| r.burst_n(BATCH)));
            assert_eq!(r.t.counters().created, n as u64, "no flow recreated");
            assert_eq!(r.t.len(), n as usize);
        }
    }
    g.finish();

    // Worker loop shape: bursts of 32 packets, then expire(now, 64).
    let mut g = c.benchmark_group("flow_datapath");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut r = Replay::new(65536, random_order(65536));
    g.bench_function("random_64k_burst32_with_expire", |b| {
        b.iter(|| {
            for _ in 0..BATCH / 32 {
                r.burst_n(32);
                let now = r.now;
                black_box(r.t.expire(now, 64, &mut |_, _, _| {}));
            }
        })
    });
    g.finish();

    // SYN flood at capacity: every packet creates a flow and evicts the oldest.
    let mut g = c.benchmark_group("flow_syn_flood");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut t = table();
    let mut rng = Rng(7);
    let mut flow = 0u32;
    let mut now = 1_000_000u64;
    let mut flood: Vec<Pkt> = Vec::with_capacity(BATCH);
    g.bench_function("new_flow_each_packet_64k", |b| {
        b.iter_batched_ref(
            || {
                flood.clear();
                for _ in 0..BATCH {
                    flow = flow.wrapping_add(1);
                    flood.push(packet(flow, &mut rng, 0x02));
                }
                std::mem::take(&mut flood)
            },
            |pkts| {
                now += 1;
                for p in pkts.iter() {
                    black_box(t.observe(&p.key, p.key.hash(), p.side, now, p.flags, p.bytes));
                }
            },
            criterion::BatchSize::LargeInput,
        )
    });
    assert_eq!(t.len(), CAPACITY);
    g.bench_function("new_flow_each_packet_64k_burst32", |b| {
        b.iter_batched_ref(
            || {
                flood.clear();
                for _ in 0..BATCH {
                    flow = flow.wrapping_add(1);
                    let p = packet(flow, &mut rng, 0x02);
                    flood.push(p);
                }
                std::mem::take(&mut flood)
            },
            |pkts| {
                now += 1;
                let mut out = [Observed { id: 0, dir: Direction::Up, created: false }; 32];
                for c in pkts.chunks(32) {
                    let mut burst = [FlowPacket { key: c[0].key, hash: 0, sender: Side::Lo, tcp_flags: None, bytes: 0 }; 32];
                    for (b, p) in burst.iter_mut().zip(c) {
                        *b = FlowPacket { key: p.key, hash: p.key.hash(), sender: p.side, tcp_flags: p.flags, bytes: p.bytes };
                    }
                    t.observe_burst(&burst[..c.len()], now, &mut out);
                    black_box(&out);
                }
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
    assert_eq!(t.len(), CAPACITY);
    assert!(t.counters().evicted > 0);

    let t = table();
    println!(
        "flow table: entry {} B, capacity {}: memory {} B = {:.1} B/flow (index {:.1} B/flow)",
        FlowTable::entry_bytes(),
        CAPACITY,
        t.memory_bytes(),
        t.memory_bytes() as f64 / CAPACITY as f64,
        (t.memory_bytes() - CAPACITY * FlowTable::entry_bytes()) as f64 / CAPACITY as f64,
    );
}

criterion_group!(benches, bench_observe);
criterion_main!(benches);
