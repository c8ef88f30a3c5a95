//! Dissector throughput: bursts of 32 pre-built frames (as a DPDK rx burst would hand them
//! over), reported per packet via `Throughput::Elements(32)`.
//!
//! Cases: `<frames>/ipv4_cksum` store the 32 results (`Option<PacketMeta>`) like a burst
//! array; `eth_ipv4_tcp/fold_fields` reads a few fields instead (no 60-byte result copy);
//! `harness_baseline` is the loop/store cost without dissecting.
//!
//! Two groups: `dissect` (wall time, criterion's default) and `dissect_cpu` (same cases,
//! measured in thread CPU time, which stays meaningful when the machine is shared/loaded).
//!
//! Run: `cargo bench --bench dissect -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use haka_engine::dissect::{dissect, DissectOptions, LinkType, PacketMeta};
use haka_engine::wire::{Ipv4Packet, Ipv6Packet, TcpSegment, UdpPacket};

const BURST: usize = 32;

fn eth(ethertype: u16, vlan: Option<u16>) -> Vec<u8> {
    let mut v = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    if let Some(vid) = vlan {
        v.extend_from_slice(&0x8100u16.to_be_bytes());
        v.extend_from_slice(&vid.to_be_bytes());
    }
    v.extend_from_slice(&ethertype.to_be_bytes());
    v
}

fn tcp(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut v = vec![0u8; 20 + payload];
    let mut t = TcpSegment::new_unchecked(&mut v[..]);
    t.set_src_port(sport);
    t.set_dst_port(dport);
    t.set_seq_number(0x1234_5678);
    t.set_ack_number(0x9abc_def0);
    t.set_data_offset(5);
    t.set_flags(0x18);
    t.set_window(65535);
    v
}

fn udp(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut v = vec![0u8; 8 + payload];
    let mut u = UdpPacket::new_unchecked(&mut v[..]);
    u.set_src_port(sport);
    u.set_dst_port(dport);
    u.set_len((8 + payload) as u16);
    v
}

fn ipv4(i: u8, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 20];
    let mut ip = Ipv4Packet::new_unchecked(&mut v[..]);
    ip.set_version_ihl(5);
    ip.set_total_len((20 + l4.len()) as u16);
    ip.set_frag(true, false, 0);
    ip.set_ttl(64);
    ip.set_protocol(proto);
    ip.set_src_addr([10, 0, 0, i]);
    ip.set_dst_addr([192, 168, 1, 1]);
    ip.fill_checksum();
    v.extend_from_slice(l4);
    v
}

fn ipv6(i: u8, nh: u8, l4: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 40];
    let mut ip = Ipv6Packet::new_unchecked(&mut v[..]);
    ip.set_version_tc_flow(0, 0);
    ip.set_payload_len(l4.len() as u16);
    ip.set_next_header(nh);
    ip.set_hop_limit(64);
    ip.set_src_addr([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, i]);
    ip.set_dst_addr([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    v.extend_from_slice(l4);
    v
}

fn eth_ipv4_tcp(i: usize) -> Vec<u8> {
    [eth(0x0800, None), ipv4(i as u8, 6, &tcp(40000 + i as u16, 443, 64))].concat()
}

fn eth_vlan_ipv4_udp(i: usize) -> Vec<u8> {
    [
        eth(0x0800, Some(100)),
        ipv4(i as u8, 17, &udp(50000 + i as u16, 53, 40)),
    ]
    .concat()
}

fn eth_ipv6_tcp(i: usize) -> Vec<u8> {
    [eth(0x86dd, None), ipv6(i as u8, 6, &tcp(40000 + i as u16, 80, 64))].concat()
}

fn burst(make: impl Fn(usize) -> Vec<u8>) -> Vec<Vec<u8>> {
    (0..BURST).map(make).collect()
}

#[inline(never)]
fn run(frames: &[Vec<u8>], opts: &DissectOptions, out: &mut [Option<PacketMeta>; BURST]) {
    for (f, o) in frames.iter().zip(out.iter_mut()) {
        *o = dissect(black_box(f), LinkType::Ethernet, opts).ok();
    }
}

fn cases() -> [(&'static str, Vec<Vec<u8>>); 4] {
    let mixed: Vec<Vec<u8>> = (0..BURST)
        .map(|i| match i % 3 {
            0 => eth_ipv4_tcp(i),
            1 => eth_vlan_ipv4_udp(i),
            _ => eth_ipv6_tcp(i),
        })
        .collect();
    let cases = [
        ("eth_ipv4_tcp", burst(eth_ipv4_tcp)),
        ("eth_vlan_ipv4_udp", burst(eth_vlan_ipv4_udp)),
        ("eth_ipv6_tcp", burst(eth_ipv6_tcp)),
        ("mixed", mixed),
    ];
    for (_, frames) in &cases {
        for f in frames {
            assert!(
                dissect(f, LinkType::Ethernet, &DissectOptions::default())
                    .unwrap()
                    .has_l4
            );
        }
    }
    cases
}

fn run_group<M: Measurement>(mut g: BenchmarkGroup<'_, M>) {
    let cases = cases();
    let with_ck = DissectOptions { ipv4_checksum: true };
    let without_ck = DissectOptions { ipv4_checksum: false };
    g.throughput(Throughput::Elements(BURST as u64));
    let mut out = [None; BURST];
    for (name, frames) in &cases {
        g.bench_function(format!("{name}/ipv4_cksum"), |b| {
            b.iter(|| {
                run(frames, &with_ck, &mut out);
                black_box(&out);
            })
        });
    }
    let base = dissect(&cases[0].1[0], LinkType::Ethernet, &with_ck).unwrap();
    // Harness cost alone: iterate the burst and store a (precomputed) meta per frame.
    g.bench_function("harness_baseline", |b| {
        b.iter(|| {
            for (f, o) in cases[0].1.iter().zip(out.iter_mut()) {
                let f = black_box(f);
                let mut m = base;
                m.src_port = f[40] as u16;
                *o = Some(m);
            }
            black_box(&out);
        })
    });
    // Consumer reading a few fields (like a flow-key builder) instead of storing the metas.
    g.bench_function("eth_ipv4_tcp/fold_fields", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for f in cases[0].1.iter() {
                if let Ok(m) = dissect(black_box(f), LinkType::Ethernet, &with_ck) {
                    acc = acc.wrapping_add(m.src_port as u64 ^ m.payload_len as u64 ^ m.src_addr[15] as u64);
                }
            }
            black_box(acc);
        })
    });
    g.bench_function("eth_ipv4_tcp/no_cksum", |b| {
        b.iter(|| {
            run(&cases[0].1, &without_ck, &mut out);
            black_box(&out);
        })
    });
    g.finish();
}

fn bench_dissect(c: &mut Criterion) {
    run_group(c.benchmark_group("dissect"));
}

fn bench_dissect_cpu(c: &mut Criterion<ThreadCpuTime>) {
    run_group(c.benchmark_group("dissect_cpu"));
}

/// Thread CPU time (CLOCK_THREAD_CPUTIME_ID): excludes time the thread was preempted.
struct ThreadCpuTime;

fn thread_cpu_ns() -> u64 {
    haka_engine::dpdk::thread_cpu_ns()
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, i: u64) -> u64 {
        thread_cpu_ns().saturating_sub(i)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &NsFormatter
    }
}

struct NsFormatter;

impl ValueFormatter for NsFormatter {
    fn scale_values(&self, _typical: f64, _values: &mut [f64]) -> &'static str {
        "ns"
    }
    fn scale_throughputs(&self, _typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let n = match *t {
            Throughput::Elements(n) | Throughput::ElementsAndBytes { elements: n, .. } => n,
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) | Throughput::Bits(n) => n,
        } as f64;
        for v in values {
            *v = n * 1e3 / *v; // per-µs -> millions per second
        }
        "Melem/s"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

criterion_group!(wall, bench_dissect);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = bench_dissect_cpu
}
criterion_main!(wall, cpu);
