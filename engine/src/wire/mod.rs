//! Typed zero-copy views over header bytes (in the style of smoltcp's `wire`).
//!
//! Each protocol has a view `Foo<T: AsRef<[u8]>> { buffer: T }`:
//! - `new_unchecked(buffer)`: no check; getters then panic if the buffer is too short.
//! - `new_checked(buffer) -> Result<Self, Malformed>`: length (and basic sanity) checks, after
//!   which every getter is in bounds and never panics.
//! - getters read big-endian fields; setters (for `T: AsMut<[u8]>`) write them.
//!
//! This module also holds the Internet checksum (RFC 1071) helpers shared by IPv4, TCP,
//! UDP, ICMP and ICMPv6, including the pseudo-header sums and the RFC 1624 incremental
//! update used when rewriting a single field.

pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

pub use ethernet::{ethertype, EthernetFrame, VlanTag};
pub use icmp::{Icmpv4Packet, Icmpv6Packet};
pub use ipv4::Ipv4Packet;
pub use ipv6::{Ipv6ExtHeader, Ipv6FragmentHeader, Ipv6Packet};
pub use tcp::TcpSegment;
pub use udp::UdpPacket;

/// IP protocol numbers / IPv6 next-header values used by the dissectors.
pub mod ip_proto {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const IPV6_ROUTING: u8 = 43;
    pub const IPV6_FRAGMENT: u8 = 44;
    pub const GRE: u8 = 47;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const IPV6_NO_NEXT: u8 = 59;
    pub const IPV6_DEST_OPTS: u8 = 60;
    pub const SCTP: u8 = 132;
    pub const MOBILITY: u8 = 135;
    pub const HIP: u8 = 139;
    pub const SHIM6: u8 = 140;
}

/// Reads a big-endian u16 at `at` (panics if out of bounds: callers check lengths first).
#[inline(always)]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads a big-endian u32 at `at` (panics if out of bounds: callers check lengths first).
#[inline(always)]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline(always)]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Internet checksum primitives (RFC 1071 / RFC 1624).
///
/// Sums are carried as unfolded `u32` "partial sums" so that several pieces (pseudo-header,
/// header, payload) can be combined with [`checksum::combine`] before the final
/// [`checksum::finish`]. Any odd-length piece must be the last one (RFC 1071 pads it with a
/// zero byte).
pub mod checksum {
    /// Ones-complement partial sum of `data` (16-bit big-endian words, odd byte zero-padded).
    #[inline(always)]
    pub fn sum(data: &[u8]) -> u32 {
        fold64(sum64(data)).swap_bytes() as u32
    }

    /// Unfolded sum of `data` read as little-endian 16-bit words (8 bytes per step, no byte
    /// swap per word): folding it modulo 0xffff gives the ones-complement sum of the
    /// big-endian words with its two bytes swapped (RFC 1071, byte order independence).
    /// The odd last byte is the low byte of its word, as it is the high byte of the
    /// big-endian word.
    #[inline(always)]
    fn sum64(data: &[u8]) -> u64 {
        let mut acc: u64 = 0;
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            acc += (w & 0xffff_ffff) + (w >> 32);
        }
        let rem = chunks.remainder();
        let mut words = rem.chunks_exact(2);
        for c in &mut words {
            acc += u16::from_le_bytes([c[0], c[1]]) as u64;
        }
        if let [b] = words.remainder() {
            acc += *b as u64;
        }
        acc
    }

    /// True when the ones-complement sum of `data` is 0xffff, i.e. `data` includes a correct
    /// checksum (IPv4 header, ICMPv4 message). Cheaper than `compute(data) == 0`.
    #[inline(always)]
    pub fn verify(data: &[u8]) -> bool {
        // The folded sum is in 1..=0xffff for a non-zero accumulator and congruent to it
        // modulo 0xffff: it is 0xffff exactly when the accumulator is a non-zero multiple.
        let acc = sum64(data);
        acc != 0 && acc.is_multiple_of(0xffff)
    }

    #[inline(always)]
    fn fold64(mut acc: u64) -> u16 {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
        acc = (acc & 0xffff_ffff) + (acc >> 32);
        acc = (acc & 0xffff) + (acc >> 16);
        acc = (acc & 0xffff) + (acc >> 16);
        acc = (acc & 0xffff) + (acc >> 16);
        acc as u16
    }

    /// Folds a partial sum to 16 bits (ones-complement, end-around carry).
    #[inline(always)]
    pub fn fold(sum: u32) -> u16 {
        fold64(sum as u64)
    }

    /// Combines partial sums (each of an even-length piece, except possibly the last).
    #[inline(always)]
    pub fn combine(sums: &[u32]) -> u32 {
        let mut acc: u64 = 0;
        for &s in sums {
            acc += s as u64;
        }
        fold64(acc) as u32
    }

    /// Final checksum value to store in a header: complement of the folded sum.
    #[inline(always)]
    pub fn finish(sum: u32) -> u16 {
        !fold(sum)
    }

    /// Checksum of `data` alone (IPv4 header, ICMPv4): `finish(sum(data))`.
    /// Compute with the checksum field zeroed; verifying over the data including the
    /// stored checksum yields 0.
    #[inline]
    pub fn compute(data: &[u8]) -> u16 {
        finish(sum(data))
    }

    /// IPv4 pseudo-header partial sum (RFC 793/768): src, dst, zero, protocol, L4 length.
    #[inline]
    pub fn pseudo_header_v4(src: &[u8; 4], dst: &[u8; 4], proto: u8, l4_len: u16) -> u32 {
        let acc = u16::from_be_bytes([src[0], src[1]]) as u32
            + u16::from_be_bytes([src[2], src[3]]) as u32
            + u16::from_be_bytes([dst[0], dst[1]]) as u32
            + u16::from_be_bytes([dst[2], dst[3]]) as u32
            + proto as u32
            + l4_len as u32;
        fold(acc) as u32
    }

    /// IPv6 pseudo-header partial sum (RFC 8200 §8.1): src, dst, 32-bit upper-layer length,
    /// zero, next header.
    #[inline]
    pub fn pseudo_header_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, l4_len: u32) -> u32 {
        combine(&[
            sum(src),
            sum(dst),
            (l4_len >> 16) + (l4_len & 0xffff),
            next_header as u32,
        ])
    }

    /// Checksum of an L4 segment over IPv4 (TCP, UDP...): the segment's checksum field must
    /// be zero when computing; verifying a correct segment (field filled) yields 0.
    /// Returns the raw value (the UDP "0 means none" rule is applied by `UdpPacket`).
    #[inline]
    pub fn l4_v4(src: &[u8; 4], dst: &[u8; 4], proto: u8, segment: &[u8]) -> u16 {
        let ph = pseudo_header_v4(src, dst, proto, segment.len() as u16);
        finish(combine(&[ph, sum(segment)]))
    }

    /// Checksum of an L4 segment over IPv6 (TCP, UDP, ICMPv6); see [`l4_v4`].
    #[inline]
    pub fn l4_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, segment: &[u8]) -> u16 {
        let ph = pseudo_header_v6(src, dst, next_header, segment.len() as u32);
        finish(combine(&[ph, sum(segment)]))
    }

    /// RFC 1624 incremental update: new checksum after a 16-bit word of the covered data
    /// changed from `old` to `new` (HC' = ~(~HC + ~m + m')).
    #[inline]
    pub fn update16(cksum: u16, old: u16, new: u16) -> u16 {
        !fold((!cksum) as u32 + (!old) as u32 + new as u32)
    }

    /// RFC 1624 incremental update for a 32-bit value (e.g. an IPv4 address), as two words.
    #[inline]
    pub fn update32(cksum: u16, old: u32, new: u32) -> u16 {
        let acc =
            (!cksum) as u32 + (!(old >> 16) as u16) as u32 + (!(old as u16)) as u32 + (new >> 16) + (new & 0xffff);
        !fold(acc)
    }

    /// RFC 1624 incremental update for an arbitrary even-length span (e.g. an IPv6 address).
    /// `old` and `new` must have the same even length.
    #[inline]
    pub fn update_bytes(cksum: u16, old: &[u8], new: &[u8]) -> u16 {
        debug_assert_eq!(old.len(), new.len());
        let acc = (!cksum) as u64 + (!fold(sum(old))) as u64 + sum(new) as u64;
        !fold64(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::checksum::*;

    /// Reference: straightforward 16-bit word sum.
    fn ref_sum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        let mut i = 0;
        while i + 1 < data.len() {
            acc += u16::from_be_bytes([data[i], data[i + 1]]) as u32;
            i += 2;
        }
        if i < data.len() {
            acc += (data[i] as u32) << 8;
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn wire_checksum_rfc1071_example() {
        // RFC 1071 §3 example: 00 01 f2 03 f4 f5 f6 f7 -> sum ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&d)), 0xddf2);
        assert_eq!(compute(&d), !0xddf2);
    }

    #[test]
    fn wire_checksum_matches_reference_all_lengths() {
        let mut x: u32 = 0x1234_5678;
        let mut buf = [0u8; 300];
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        for len in 0..buf.len() {
            assert_eq!(fold(sum(&buf[..len])), ref_sum(&buf[..len]), "len {len}");
            assert_eq!(verify(&buf[..len]), ref_sum(&buf[..len]) == 0xffff, "len {len}");
            // Make it valid: append the checksum word (even lengths only).
            if len % 2 == 0 {
                let mut v = buf[..len].to_vec();
                v.extend_from_slice(&compute(&buf[..len]).to_be_bytes());
                assert!(verify(&v) || v.iter().all(|&b| b == 0), "len {len}");
            }
        }
        assert!(!verify(&[]) && !verify(&[0, 0]) && verify(&[0xff, 0xff]) && verify(&[0, 0, 0xff, 0xff]));
        let ff = [0xffu8; 257];
        for len in 0..ff.len() {
            assert_eq!(fold(sum(&ff[..len])), ref_sum(&ff[..len]), "len {len}");
        }
    }

    #[test]
    fn wire_checksum_incremental_update() {
        let mut d = [
            0x45u8, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
            0x00, 0xc7,
        ];
        let c = compute(&d);
        // Change TTL/protocol word.
        let old = u16::from_be_bytes([d[8], d[9]]);
        d[8] = 0x3f;
        let new = u16::from_be_bytes([d[8], d[9]]);
        assert_eq!(update16(c, old, new), compute(&d));
        // Change source address.
        let c = compute(&d);
        let old = u32::from_be_bytes([d[12], d[13], d[14], d[15]]);
        d[12..16].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(update32(c, old, 0x0a01_0203), compute(&d));
        let c = compute(&d);
        let old = [d[16], d[17], d[18], d[19]];
        d[16..20].copy_from_slice(&[172, 16, 255, 254]);
        assert_eq!(update_bytes(c, &old, &d[16..20]), compute(&d));
    }
}
