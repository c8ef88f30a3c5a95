//! Canonical flow key and symmetric hash.
use crate::dissect::PacketMeta;

/// Which endpoint of the canonical key sent a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Lo,
    Hi,
}

/// Direction of a packet within its flow: Up = client to server (the client is
/// the sender of the flow's first packet), Down = server to client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Up = 0,
    Down = 1,
}

/// Canonical 5-tuple + VLAN. The (addr, port) endpoint that compares lower is `lo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub lo_addr: [u8; 16],
    pub hi_addr: [u8; 16],
    pub lo_port: u16,
    pub hi_port: u16,
    pub vlan: u32,
    pub proto: u8,
}

// Odd 64-bit constants (wyhash's secret) for the folded-multiply mixer.
const P0: u64 = 0xa076_1d64_78bd_642f;
const P1: u64 = 0xe703_7ed1_a0b4_28db;
const P2: u64 = 0x8ebc_6af0_9c88_c6e3;
const P3: u64 = 0x5899_65cc_7537_4cc3;

/// Per-process hash seed: with a fixed hash, someone who knows it could craft
/// keys that all land in one bucket (or on one worker). Set once at startup,
/// before any worker runs; 0 (the default) keeps tests deterministic.
static HASH_SEED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sets the seed of [`FlowKey::hash`]; call before the workers start (every
/// worker must hash alike, or flows would be split).
pub fn set_hash_seed(seed: u64) {
    HASH_SEED.store(seed, std::sync::atomic::Ordering::Relaxed);
}

/// A random seed from the standard library's per-process hasher keys.
pub fn random_hash_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

/// Folded multiply: full 64x64->128 product, high half xor low half.
#[inline(always)]
fn mum(a: u64, b: u64) -> u64 {
    let r = (a as u128).wrapping_mul(b as u128);
    (r as u64) ^ ((r >> 64) as u64)
}

#[inline(always)]
fn words(a: &[u8; 16]) -> (u64, u64) {
    let v = u128::from_le_bytes(*a);
    (v as u64, (v >> 64) as u64)
}

impl FlowKey {
    /// Canonical key of a packet and the endpoint that sent it. Endpoints are ordered
    /// by (address, port), the address compared as a big-endian number (i.e. bytewise);
    /// when both endpoints are equal (land attack) the sender is `Side::Lo`.
    #[inline]
    pub fn from_meta(meta: &PacketMeta) -> (FlowKey, Side) {
        let src = (u128::from_be_bytes(meta.src_addr), meta.src_port);
        let dst = (u128::from_be_bytes(meta.dst_addr), meta.dst_port);
        if src <= dst {
            let key = FlowKey {
                lo_addr: meta.src_addr,
                hi_addr: meta.dst_addr,
                lo_port: meta.src_port,
                hi_port: meta.dst_port,
                vlan: meta.vlan,
                proto: meta.proto,
            };
            (key, Side::Lo)
        } else {
            let key = FlowKey {
                lo_addr: meta.dst_addr,
                hi_addr: meta.src_addr,
                lo_port: meta.dst_port,
                hi_port: meta.src_port,
                vlan: meta.vlan,
                proto: meta.proto,
            };
            (key, Side::Hi)
        }
    }

    /// Fast, well-mixed 64-bit hash of the canonical key (so identical for both
    /// directions). All bits, the low ones included, are usable: the dispatcher takes
    /// `hash % workers`, the table its low bits for the bucket and top bits for the tag.
    #[inline]
    pub fn hash(&self) -> u64 {
        let (a0, a1) = words(&self.lo_addr);
        let (b0, b1) = words(&self.hi_addr);
        let c = (self.lo_port as u64) | (self.hi_port as u64) << 16 | (self.vlan as u64) << 32;
        let seed = HASH_SEED.load(std::sync::atomic::Ordering::Relaxed);
        let h0 = mum(a0 ^ P0 ^ seed, a1 ^ P1);
        let h1 = mum(b0 ^ P2, b1 ^ P3);
        let h2 = mum(c ^ P1, (self.proto as u64) ^ P2);
        mum(h0 ^ h1.rotate_left(23) ^ P0, h2 ^ P3)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dissect::L3;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut x = [0u8; 16];
        x[10] = 0xff;
        x[11] = 0xff;
        x[12..].copy_from_slice(&a);
        x
    }

    /// A TCP/UDP-shaped packet between two endpoints (shared by the flow tests);
    /// IPv4-mapped addresses make it IPv4, others IPv6.
    pub(crate) fn meta(src: [u8; 16], sp: u16, dst: [u8; 16], dp: u16, proto: u8, vlan: u32) -> PacketMeta {
        let v4_mapped = src[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
        PacketMeta {
            l3: if v4_mapped { L3::Ipv4 } else { L3::Ipv6 },
            vlan,
            l3_offset: 14,
            l4_offset: 34,
            payload_offset: 54,
            payload_len: 0,
            proto,
            has_l4: true,
            fragment: false,
            src_addr: src,
            dst_addr: dst,
            src_port: sp,
            dst_port: dp,
            tcp_flags: 0,
            ip_len: 40,
        }
    }

    #[test]
    fn both_directions_same_key_and_hash() {
        let a = v4([10, 0, 0, 1]);
        let b = v4([192, 168, 1, 7]);
        let (k1, s1) = FlowKey::from_meta(&meta(a, 40000, b, 80, 6, 0));
        let (k2, s2) = FlowKey::from_meta(&meta(b, 80, a, 40000, 6, 0));
        assert_eq!(k1, k2);
        assert_eq!(k1.hash(), k2.hash());
        assert_ne!(s1, s2);
        assert_eq!(s1, Side::Lo);
        assert_eq!(k1.lo_addr, a);
        assert_eq!(k1.lo_port, 40000);
    }

    #[test]
    fn same_address_ordered_by_port() {
        let a = v4([10, 0, 0, 1]);
        let (k1, s1) = FlowKey::from_meta(&meta(a, 9000, a, 80, 17, 0));
        let (k2, s2) = FlowKey::from_meta(&meta(a, 80, a, 9000, 17, 0));
        assert_eq!(k1, k2);
        assert_eq!((k1.lo_port, k1.hi_port), (80, 9000));
        assert_eq!((s1, s2), (Side::Hi, Side::Lo));
    }

    #[test]
    fn land_attack_is_lo() {
        let a = v4([10, 0, 0, 1]);
        let (k, s) = FlowKey::from_meta(&meta(a, 80, a, 80, 6, 0));
        assert_eq!(s, Side::Lo);
        assert_eq!(k.lo_addr, k.hi_addr);
    }

    #[test]
    fn vlan_proto_family_change_the_key() {
        let a = v4([10, 0, 0, 1]);
        let b = v4([10, 0, 0, 2]);
        let (k, _) = FlowKey::from_meta(&meta(a, 1, b, 2, 6, 0));
        let (kv, _) = FlowKey::from_meta(&meta(a, 1, b, 2, 6, 5));
        let (kp, _) = FlowKey::from_meta(&meta(a, 1, b, 2, 17, 0));
        let mut a6 = [0u8; 16];
        a6[15] = 1; // ::1 vs ::ffff:10.0.0.1
        let (k6, _) = FlowKey::from_meta(&meta(a6, 1, b, 2, 6, 0));
        for other in [kv, kp, k6] {
            assert_ne!(k, other);
            assert_ne!(k.hash(), other.hash());
        }
    }

    /// Chi-square-ish balance check: every bucket within 5% of the mean.
    fn assert_balanced(hashes: &[u64], what: &str) {
        for n in 2..=8u64 {
            let mut c = vec![0usize; n as usize];
            for h in hashes {
                c[(h % n) as usize] += 1;
            }
            let mean = hashes.len() as f64 / n as f64;
            for (i, &x) in c.iter().enumerate() {
                let dev = (x as f64 - mean).abs() / mean;
                assert!(dev < 0.05, "{what}: mod {n} bucket {i} has {x} (mean {mean})");
            }
        }
        // bits as used by the table (bucket from the high half, tag from bits 16..32),
        // also among the flows of one worker of 4 (hash % 4 == 0)
        for worker_only in [false, true] {
            let mine: Vec<u64> = hashes.iter().copied().filter(|h| !worker_only || h % 4 == 0).collect();
            let mut c = vec![0usize; 1024];
            for h in &mine {
                c[((h >> 32) & 1023) as usize] += 1;
            }
            let mean = mine.len() / 1024;
            assert!(c.iter().all(|&x| x > mean / 3 && x < mean * 3), "{what}: bucket bits skewed");
            let mut c = [0usize; 128];
            for h in &mine {
                c[((h >> 25) & 127) as usize] += 1;
            }
            let mean = mine.len() / 128;
            assert!(c.iter().all(|&x| x > mean * 2 / 3 && x < mean * 3 / 2), "{what}: tag bits skewed");
        }
    }

    #[test]
    fn distribution_is_balanced() {
        // sequential client ports, one server (a typical replay / scan)
        let srv = v4([192, 168, 0, 1]);
        let cli = v4([10, 1, 2, 3]);
        let h: Vec<u64> = (0..100_000u32)
            .map(|i| FlowKey::from_meta(&meta(cli, 1024 + (i % 60000) as u16, srv, 80 + (i / 60000) as u16, 6, 0)).0.hash())
            .collect();
        assert_balanced(&h, "ports");
        // sequential client addresses, fixed ports
        let h: Vec<u64> = (0..100_000u32)
            .map(|i| {
                let c = v4((0x0a00_0000 + i).to_be_bytes());
                FlowKey::from_meta(&meta(c, 5353, srv, 53, 17, 0)).0.hash()
            })
            .collect();
        assert_balanced(&h, "v4 addrs");
        // IPv6 addresses differing in the interface id
        let h: Vec<u64> = (0..100_000u64)
            .map(|i| {
                let mut c = [0x20u8, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                c[8..].copy_from_slice(&i.to_be_bytes());
                let mut s = c;
                s[15] ^= 0xff;
                s[7] = 1;
                FlowKey::from_meta(&meta(c, 443, s, 50000, 6, 0)).0.hash()
            })
            .collect();
        assert_balanced(&h, "v6 addrs");
        // VLAN only
        let h: Vec<u64> = (0..100_000u32)
            .map(|i| FlowKey::from_meta(&meta(cli, 1, srv, 2, 6, i)).0.hash())
            .collect();
        assert_balanced(&h, "vlan");
    }
}
