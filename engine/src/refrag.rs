//! IP re-fragmentation: splits a (reassembled, possibly modified) datagram back into
//! fragments. Pure functions over byte slices, no DPDK; used by
//! [`crate::fragstage`] when a rule modified a reassembled datagram that must leave as
//! fragments again.
//!
//! - IPv4 (RFC 791): the first fragment carries the whole header; later ones the fixed
//!   header plus the options whose "copied" bit is set, padded with End-of-Options to a
//!   multiple of 4 bytes. Fragment payloads are multiples of 8 bytes (but the last). DF and
//!   the identification are kept from the datagram; a datagram that is itself a fragment
//!   keeps its offset base and its MF on the last piece.
//! - IPv6 (RFC 8200): the unfragmentable part (fixed header and the extension headers
//!   before the original Fragment header, `unfrag_len` bytes) heads every fragment, then a
//!   Fragment header with the given identification, then the piece.
//!
//! A datagram that fits the MTU as it is comes back as one packet, unchanged.
#![deny(unsafe_code)]

use crate::wire::ipv6::{is_ext_header, MAX_EXT_HEADERS};
use crate::wire::{ip_proto, Ipv4Packet, Ipv6ExtHeader, Ipv6FragmentHeader};

/// Why a datagram could not be re-fragmented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefragError {
    /// Not a well-formed datagram (lengths, header length, options, extension headers).
    BadPacket,
    /// The MTU leaves no room for 8 bytes of payload after the headers.
    MtuTooSmall,
    /// Offsets would exceed the 13-bit fragment offset field.
    TooLong,
}

const IPV4_FIXED: usize = 20;
const IPV6_FIXED: usize = 40;
const MAX_OFFSET: usize = 0x1fff * 8;

/// Splits the IPv4 datagram `datagram` (bytes from the IP header; bytes beyond its total
/// length are ignored) into fragments of at most `mtu` bytes each, IP header included.
pub fn refragment_ipv4(datagram: &[u8], mtu: usize) -> Result<Vec<Vec<u8>>, RefragError> {
    let ip = Ipv4Packet::new_checked(datagram).map_err(|_| RefragError::BadPacket)?;
    let hl = ip.header_len();
    let total = ip.total_len() as usize;
    if hl < IPV4_FIXED || total < hl || total > datagram.len() {
        return Err(RefragError::BadPacket);
    }
    if total <= mtu {
        return Ok(vec![datagram[..total].to_vec()]);
    }
    let copied = copied_options(&datagram[IPV4_FIXED..hl])?;
    let later_hl = IPV4_FIXED + copied.len();
    let first_room = mtu.saturating_sub(hl) & !7;
    let later_room = mtu.saturating_sub(later_hl) & !7;
    if first_room == 0 || later_room == 0 {
        return Err(RefragError::MtuTooSmall);
    }
    let df = ip.dont_frag();
    let base = ip.frag_offset() as usize;
    let last_mf = ip.more_frags();
    let payload = &datagram[hl..total];
    let mut out = Vec::with_capacity(payload.len() / later_room + 2);
    let mut off = 0;
    while off < payload.len() {
        let (hlen, room) = if off == 0 { (hl, first_room) } else { (later_hl, later_room) };
        let end = (off + room).min(payload.len());
        let last = end == payload.len();
        if base + off > MAX_OFFSET {
            return Err(RefragError::TooLong);
        }
        let mut f = Vec::with_capacity(hlen + end - off);
        f.extend_from_slice(&datagram[..IPV4_FIXED]);
        if off == 0 {
            f.extend_from_slice(&datagram[IPV4_FIXED..hl]);
        } else {
            f.extend_from_slice(&copied);
        }
        f.extend_from_slice(&payload[off..end]);
        let mut v = Ipv4Packet::new_unchecked(&mut f[..]);
        v.set_version_ihl((hlen / 4) as u8);
        v.set_total_len((hlen + end - off) as u16);
        v.set_frag(df, !last || last_mf, (base + off) as u16);
        v.fill_checksum();
        out.push(f);
        off = end;
    }
    Ok(out)
}

/// The options of `opts` (IPv4 header bytes after the fixed 20) whose copied bit is set,
/// padded with End-of-Options to a multiple of 4 bytes.
fn copied_options(opts: &[u8]) -> Result<Vec<u8>, RefragError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,     // End of Options
            1 => i += 1,    // No-Operation: not copied
            kind => {
                let len = *opts.get(i + 1).ok_or(RefragError::BadPacket)? as usize;
                if len < 2 || i + len > opts.len() {
                    return Err(RefragError::BadPacket);
                }
                if kind & 0x80 != 0 {
                    out.extend_from_slice(&opts[i..i + len]);
                }
                i += len;
            }
        }
    }
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    Ok(out)
}

/// Position of the Fragment header (= length of the unfragmentable part, fixed header
/// included) and the identification of an IPv6 fragment (bytes from the IPv6 header);
/// None when it has no Fragment header.
pub fn ipv6_fragment_info(ip: &[u8]) -> Option<(usize, u32)> {
    let mut nh = *ip.get(6)?;
    let mut off = IPV6_FIXED;
    for _ in 0..=MAX_EXT_HEADERS {
        let rest = ip.get(off..)?;
        if nh == ip_proto::IPV6_FRAGMENT {
            let f = Ipv6FragmentHeader::new_checked(rest).ok()?;
            return Some((off, f.ident()));
        }
        if !is_ext_header(nh) {
            return None;
        }
        let h = Ipv6ExtHeader::new_checked(rest, nh).ok()?;
        nh = h.next_header();
        off += h.header_len();
    }
    None
}

/// Splits the IPv6 datagram `datagram` (bytes from the IPv6 header; bytes beyond its
/// payload length are ignored) into fragments of at most `mtu` bytes each: the first
/// `unfrag_len` bytes (fixed header and unfragmentable extension headers) head every
/// fragment, followed by a Fragment header with identification `ident`.
pub fn refragment_ipv6(datagram: &[u8], unfrag_len: usize, ident: u32, mtu: usize) -> Result<Vec<Vec<u8>>, RefragError> {
    if datagram.len() < IPV6_FIXED || datagram[0] >> 4 != 6 {
        return Err(RefragError::BadPacket);
    }
    let end = IPV6_FIXED + u16::from_be_bytes([datagram[4], datagram[5]]) as usize;
    if end > datagram.len() || unfrag_len < IPV6_FIXED || unfrag_len > end {
        return Err(RefragError::BadPacket);
    }
    if end <= mtu {
        return Ok(vec![datagram[..end].to_vec()]);
    }
    // The next-header byte that names the first fragmentable header.
    let mut nh_pos = 6;
    let mut off = IPV6_FIXED;
    let mut count = 0;
    while off < unfrag_len {
        let nh = datagram[nh_pos];
        if !is_ext_header(nh) || nh == ip_proto::IPV6_FRAGMENT || count == MAX_EXT_HEADERS {
            return Err(RefragError::BadPacket);
        }
        let h = Ipv6ExtHeader::new_checked(&datagram[off..end], nh).map_err(|_| RefragError::BadPacket)?;
        nh_pos = off;
        off += h.header_len();
        count += 1;
    }
    if off != unfrag_len {
        return Err(RefragError::BadPacket);
    }
    let inner_nh = datagram[nh_pos];
    let payload = &datagram[unfrag_len..end];
    let room = mtu.saturating_sub(unfrag_len + Ipv6FragmentHeader::<&[u8]>::LEN) & !7;
    if room == 0 {
        return Err(RefragError::MtuTooSmall);
    }
    let mut out = Vec::with_capacity(payload.len() / room + 1);
    let mut off = 0;
    while off < payload.len() {
        let stop = (off + room).min(payload.len());
        if off > MAX_OFFSET {
            return Err(RefragError::TooLong);
        }
        let more = stop < payload.len();
        let mut f = Vec::with_capacity(unfrag_len + 8 + stop - off);
        f.extend_from_slice(&datagram[..unfrag_len]);
        f[nh_pos] = ip_proto::IPV6_FRAGMENT;
        f.push(inner_nh);
        f.push(0);
        f.extend_from_slice(&((off as u16) | more as u16).to_be_bytes());
        f.extend_from_slice(&ident.to_be_bytes());
        f.extend_from_slice(&payload[off..stop]);
        let pl = (f.len() - IPV6_FIXED) as u16;
        f[4..6].copy_from_slice(&pl.to_be_bytes());
        out.push(f);
        off = stop;
    }
    Ok(out)
}

/// Haka overlaps: the IPv4 fragment `frag` (bytes from its IP header) cut to the part
/// `[offset, offset + len)` of its datagram's payload, with its offset, MF (set unless the
/// part ends the datagram's `total` payload bytes), total length and checksum updated.
/// None when `frag` does not hold that part.
pub fn cut_ipv4_fragment(frag: &[u8], offset: usize, len: usize, total: usize) -> Option<Vec<u8>> {
    let ip = Ipv4Packet::new_checked(frag).ok()?;
    let hl = ip.header_len();
    let data = ip.payload();
    let from = offset.checked_sub(ip.frag_offset() as usize)?;
    let part = data.get(from..from.checked_add(len)?)?;
    let mut out = Vec::with_capacity(hl + len);
    out.extend_from_slice(frag.get(..hl)?);
    out.extend_from_slice(part);
    set_ipv4_fragment(&mut out, offset, offset + len < total)?;
    Some(out)
}

/// Sets the offset (bytes, a multiple of 8), MF, total length (the slice's length) and
/// checksum of an IPv4 fragment.
fn set_ipv4_fragment(p: &mut [u8], offset: usize, more: bool) -> Option<()> {
    if !offset.is_multiple_of(8) || offset > MAX_OFFSET || p.len() > 65535 {
        return None;
    }
    let len = p.len() as u16;
    let mut ip = Ipv4Packet::new_unchecked(p);
    let df = ip.dont_frag();
    ip.set_total_len(len);
    ip.set_frag(df, more, offset as u16);
    ip.fill_checksum();
    Some(())
}

/// `[defrag] refragment = "haka"`: Haka 0.4 sent a modified datagram as its original
/// fragments, each with its share of the data, grown or shrunk by the edits made in it.
/// `parts` are the fragments that made `datagram` (bytes from their IP headers), in offset
/// order, tiling its original payload; `datagram` is the datagram as the rules left it.
/// The changed span is found as what lies between the longest common prefix and suffix
/// of the old and new payloads; a fragment boundary inside it moves with it (an insertion
/// exactly at a boundary goes to the earlier fragment, as Haka's buffers did), one after it
/// shifts by the size change. The first fragment takes the datagram's header; later ones
/// keep theirs (their options) with the datagram's addresses, TOS, identification, TTL and
/// protocol. None (the caller re-fragments to the MTU) when a boundary would not be a
/// multiple of 8, a fragment would exceed 65535 bytes, or `parts` do not tile the payload.
pub fn refragment_ipv4_haka(datagram: &[u8], parts: &[&[u8]]) -> Option<Vec<Vec<u8>>> {
    let dg = Ipv4Packet::new_checked(datagram).ok()?;
    let hl = dg.header_len();
    let total = dg.total_len() as usize;
    let new = datagram.get(hl..total)?;
    let mut old = Vec::new();
    let mut bounds = Vec::with_capacity(parts.len());
    for p in parts {
        let ip = Ipv4Packet::new_checked(*p).ok()?;
        if ip.frag_offset() as usize != old.len() {
            return None;
        }
        bounds.push(old.len());
        old.extend_from_slice(ip.payload());
    }
    let (ol, nl) = (old.len(), new.len());
    let pre = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let room = ol.min(nl) - pre;
    let suf = old.iter().rev().zip(new.iter().rev()).take(room).take_while(|(a, b)| a == b).count();
    let (old_end, new_end) = (ol - suf, nl - suf);
    let grows = nl > ol;
    let moved: Vec<usize> = bounds
        .iter()
        .map(|&b| {
            if b < pre || (b == pre && !(old_end == pre && grows)) {
                b
            } else if b >= old_end {
                b + nl - ol
            } else {
                b.clamp(pre, new_end)
            }
        })
        .collect();
    let mut out = Vec::with_capacity(parts.len());
    for (k, p) in parts.iter().enumerate() {
        let start = moved[k];
        let stop = moved.get(k + 1).copied().unwrap_or(nl);
        if stop < start {
            return None;
        }
        if stop == start && k > 0 {
            continue; // (emptied by an erase)
        }
        let mut f = if k == 0 {
            datagram.get(..hl)?.to_vec()
        } else {
            let ip = Ipv4Packet::new_checked(*p).ok()?;
            let mut h = p.get(..ip.header_len())?.to_vec();
            h[1] = datagram[1];
            h[4..6].copy_from_slice(&datagram[4..6]);
            h[8..10].copy_from_slice(&datagram[8..10]);
            h[12..20].copy_from_slice(&datagram[12..20]);
            h
        };
        f.extend_from_slice(&new[start..stop]);
        set_ipv4_fragment(&mut f, start, stop < nl)?;
        out.push(f);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defrag::{DefragConfig, DefragResult, Defragmenter};
    use crate::wire::checksum;

    const SRC4: [u8; 4] = [198, 18, 0, 1];
    const DST4: [u8; 4] = [198, 18, 0, 2];

    /// IPv4/UDP datagram with `opts` as IP options (a multiple of 4 bytes) and `len` bytes of data.
    fn udp_v4(opts: &[u8], len: usize) -> Vec<u8> {
        let hl = 20 + opts.len();
        let total = hl + 8 + len;
        let mut p = vec![0u8; total];
        p[0] = 0x40 | (hl / 4) as u8;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
        p[8] = 64;
        p[9] = ip_proto::UDP;
        p[12..16].copy_from_slice(&SRC4);
        p[16..20].copy_from_slice(&DST4);
        p[20..hl].copy_from_slice(opts);
        p[hl..hl + 2].copy_from_slice(&1234u16.to_be_bytes());
        p[hl + 2..hl + 4].copy_from_slice(&53u16.to_be_bytes());
        p[hl + 4..hl + 6].copy_from_slice(&((8 + len) as u16).to_be_bytes());
        for (i, b) in p[hl + 8..].iter_mut().enumerate() {
            *b = (i * 31 + 7) as u8;
        }
        let c = checksum::l4_v4(&SRC4, &DST4, ip_proto::UDP, &p[hl..]);
        p[hl + 6..hl + 8].copy_from_slice(&c.to_be_bytes());
        Ipv4Packet::new_unchecked(&mut p[..]).fill_checksum();
        p
    }

    fn reassemble4(frags: &[Vec<u8>]) -> Vec<u8> {
        let mut d = Defragmenter::new(DefragConfig::default());
        let mut done = None;
        for (i, f) in frags.iter().enumerate() {
            match d.push_ipv4(f, 0) {
                DefragResult::Complete { packet, fragments } => {
                    assert_eq!(i + 1, frags.len());
                    assert_eq!(fragments, frags.len());
                    done = Some(packet);
                }
                DefragResult::Pending => assert!(i + 1 < frags.len()),
                other => panic!("fragment {i}: {other:?}"),
            }
        }
        done.expect("complete")
    }

    #[test]
    fn refrag_v4_round_trip_and_layout() {
        let d = udp_v4(&[], 4000);
        for mtu in [68, 100, 576, 1500, 2000, 4027] {
            let frags = refragment_ipv4(&d, mtu).unwrap();
            assert!(frags.len() > 1, "mtu {mtu}");
            let mut expect_off = 0;
            for (i, f) in frags.iter().enumerate() {
                let ip = Ipv4Packet::new_checked(&f[..]).unwrap();
                assert!(f.len() <= mtu);
                assert_eq!(ip.total_len() as usize, f.len());
                assert!(ip.verify_checksum());
                assert_eq!(ip.ident(), 0x4242);
                assert_eq!(ip.ttl(), 64);
                assert_eq!(ip.frag_offset() as usize, expect_off);
                assert_eq!(ip.more_frags(), i + 1 < frags.len());
                if i + 1 < frags.len() {
                    assert_eq!(ip.payload().len() % 8, 0);
                    // Fragments are as large as the MTU allows.
                    assert!(f.len() + 8 > mtu);
                }
                expect_off += ip.payload().len();
            }
            assert_eq!(reassemble4(&frags), d, "mtu {mtu}");
        }
    }

    /// `d` as fragments of `chunk` payload bytes (the last shorter).
    fn pieces(d: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        let hl = Ipv4Packet::new_checked(d).unwrap().header_len();
        let payload = &d[hl..];
        let mut out = Vec::new();
        for (k, c) in payload.chunks(chunk).enumerate() {
            let mut f = d[..hl].to_vec();
            f.extend_from_slice(c);
            set_ipv4_fragment(&mut f, k * chunk, (k + 1) * chunk < payload.len()).unwrap();
            out.push(f);
        }
        out
    }

    /// `d` with its payload changed by `edit`, its total length and checksum fixed.
    fn edited(d: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut payload = d[20..].to_vec();
        edit(&mut payload);
        let mut out = d[..20].to_vec();
        out.extend_from_slice(&payload);
        let len = out.len() as u16;
        let mut ip = Ipv4Packet::new_unchecked(&mut out[..]);
        ip.set_total_len(len);
        ip.set_ttl(9);
        ip.fill_checksum();
        out
    }

    fn sizes(frags: &[Vec<u8>]) -> Vec<usize> {
        frags.iter().map(|f| Ipv4Packet::new_checked(&f[..]).unwrap().payload().len()).collect()
    }

    #[test]
    fn refrag_haka_each_fragment_keeps_its_share() {
        let d = udp_v4(&[], 4000); // 4008 payload bytes
        let parts = pieces(&d, 1480);
        let refs: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
        let check = |new: &[u8], want: &[usize]| {
            let out = refragment_ipv4_haka(new, &refs).expect("refragmented");
            assert_eq!(sizes(&out), want);
            for (i, f) in out.iter().enumerate() {
                let ip = Ipv4Packet::new_checked(&f[..]).unwrap();
                assert!(ip.verify_checksum());
                assert_eq!(ip.ttl(), 9, "the datagram's header fields");
                assert_eq!(ip.more_frags(), i + 1 < out.len());
            }
            assert_eq!(reassemble4(&out), new, "fragments make the new datagram");
        };
        // Unchanged payload: the same cut.
        check(&edited(&d, |_| {}), &[1480, 1480, 1048]);
        // 8 bytes inserted exactly at the first boundary: the first fragment takes them (Haka).
        check(&edited(&d, |p| drop(p.splice(1480..1480, *b"HAKAHAKA"))), &[1488, 1480, 1048]);
        // Inside the second one: it grows.
        check(&edited(&d, |p| drop(p.splice(2000..2000, [0xee; 16]))), &[1480, 1496, 1048]);
        // 8 bytes erased from the last one: it shrinks; bytes changed in place: same cut.
        check(&edited(&d, |p| drop(p.drain(3000..3008))), &[1480, 1480, 1040]);
        check(&edited(&d, |p| p[10] ^= 0xff), &[1480, 1480, 1048]);
        // A change across a boundary: the boundary stays within the changed span.
        check(&edited(&d, |p| p.splice(1400..1600, [0x11; 216]).for_each(drop)), &[1480, 1496, 1048]);
        // An odd size change would leave a later offset off a multiple of 8: refused.
        assert!(refragment_ipv4_haka(&edited(&d, |p| drop(p.splice(10..10, [1, 2, 3]))), &refs).is_none());
        // ... but in the last fragment it is fine.
        check(&edited(&d, |p| drop(p.splice(3500..3500, [1, 2, 3]))), &[1480, 1480, 1051]);
        // Parts that do not tile the datagram: refused.
        assert!(refragment_ipv4_haka(&d, &[refs[0], refs[2]]).is_none());
        assert!(refragment_ipv4_haka(&d[..10], &refs).is_none());
    }

    #[test]
    fn cut_fragment_to_a_part() {
        let d = udp_v4(&[], 4000);
        let parts = pieces(&d, 1480);
        let f = cut_ipv4_fragment(&parts[1], 1488, 1472, 4008).unwrap();
        let ip = Ipv4Packet::new_checked(&f[..]).unwrap();
        assert_eq!((ip.frag_offset(), ip.more_frags(), ip.total_len()), (1488, true, 20 + 1472));
        assert!(ip.verify_checksum());
        assert_eq!(ip.payload(), &parts[1][28..]);
        let f = cut_ipv4_fragment(&parts[2], 2960, 1048, 4008).unwrap();
        assert!(!Ipv4Packet::new_checked(&f[..]).unwrap().more_frags());
        // Not held by that fragment / not a multiple of 8: None.
        assert!(cut_ipv4_fragment(&parts[1], 1400, 100, 4008).is_none());
        assert!(cut_ipv4_fragment(&parts[1], 1480, 2000, 4008).is_none());
        assert!(cut_ipv4_fragment(&parts[1], 1484, 8, 4008).is_none());
        assert!(cut_ipv4_fragment(&[0x45, 0], 0, 0, 0).is_none());
    }

    #[test]
    fn refrag_v4_fits_is_unchanged_and_padding_ignored() {
        let d = udp_v4(&[], 100);
        assert_eq!(refragment_ipv4(&d, 1500).unwrap(), vec![d.clone()]);
        let mut padded = d.clone();
        padded.extend_from_slice(&[0xee; 10]);
        assert_eq!(refragment_ipv4(&padded, 128).unwrap(), vec![d]);
    }

    #[test]
    fn refrag_v4_options_copied_bit() {
        // Loose source route (0x83, copied), record route (0x07, not copied), NOP, EOL.
        let opts = [0x83, 7, 4, 198, 18, 9, 9, 0x07, 7, 4, 0, 0, 0, 0, 1, 0];
        let d = udp_v4(&opts, 3000);
        let frags = refragment_ipv4(&d, 1500).unwrap();
        assert_eq!(frags.len(), 3);
        assert_eq!(&frags[0][20..36], &opts);
        for f in &frags[1..] {
            let ip = Ipv4Packet::new_checked(&f[..]).unwrap();
            assert_eq!(ip.header_len(), 28);
            assert_eq!(ip.options(), &[0x83, 7, 4, 198, 18, 9, 9, 0]);
            assert!(ip.verify_checksum());
        }
        assert_eq!(reassemble4(&frags), d);
    }

    #[test]
    fn refrag_v4_keeps_df_and_fragment_base() {
        let mut d = udp_v4(&[], 2000);
        // A datagram that is itself a middle fragment at offset 800 with MF and DF set.
        Ipv4Packet::new_unchecked(&mut d[..]).set_frag(true, true, 800);
        let frags = refragment_ipv4(&d, 600).unwrap();
        let last = frags.len() - 1;
        for (i, f) in frags.iter().enumerate() {
            let ip = Ipv4Packet::new_checked(&f[..]).unwrap();
            assert!(ip.dont_frag());
            assert!(ip.more_frags(), "fragment {i} of {last}: MF kept on the last one too");
            assert!(ip.frag_offset() >= 800);
        }
    }

    #[test]
    fn refrag_v4_errors() {
        let d = udp_v4(&[], 3000);
        assert_eq!(refragment_ipv4(&d, 27), Err(RefragError::MtuTooSmall));
        assert_eq!(refragment_ipv4(&d[..10], 1500), Err(RefragError::BadPacket));
        let mut short = d.clone();
        short.truncate(2000);
        assert_eq!(refragment_ipv4(&short, 1500), Err(RefragError::BadPacket));
        let mut bad_opt = udp_v4(&[0x83, 9, 0, 0], 3000);
        Ipv4Packet::new_unchecked(&mut bad_opt[..]).fill_checksum();
        assert_eq!(refragment_ipv4(&bad_opt, 1500), Err(RefragError::BadPacket));
        let mut far = d.clone();
        Ipv4Packet::new_unchecked(&mut far[..]).set_frag(false, false, 65000);
        assert_eq!(refragment_ipv4(&far, 1500), Err(RefragError::TooLong));
    }

    const SRC6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const DST6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    /// IPv6/UDP datagram, with a Hop-by-Hop header (unfragmentable) when `hbh`, and a
    /// Destination Options header (fragmentable) when `dst`.
    fn udp_v6(hbh: bool, dst: bool, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[7] = 64;
        p[8..24].copy_from_slice(&SRC6);
        p[24..40].copy_from_slice(&DST6);
        let mut nh_pos = 6;
        if hbh {
            p[nh_pos] = ip_proto::HOP_BY_HOP;
            nh_pos = p.len();
            p.extend_from_slice(&[0, 0, 1, 4, 0, 0, 0, 0]);
        }
        if dst {
            p[nh_pos] = ip_proto::IPV6_DEST_OPTS;
            nh_pos = p.len();
            p.extend_from_slice(&[0, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        }
        p[nh_pos] = ip_proto::UDP;
        let udp = p.len();
        p.extend_from_slice(&1234u16.to_be_bytes());
        p.extend_from_slice(&53u16.to_be_bytes());
        p.extend_from_slice(&((8 + len) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend((0..len).map(|i| (i * 13) as u8));
        let c = checksum::l4_v6(&SRC6, &DST6, ip_proto::UDP, &p[udp..]);
        p[udp + 6..udp + 8].copy_from_slice(&c.to_be_bytes());
        let pl = (p.len() - 40) as u16;
        p[4..6].copy_from_slice(&pl.to_be_bytes());
        p
    }

    #[test]
    fn refrag_v6_round_trip() {
        for (hbh, dst) in [(false, false), (true, false), (false, true), (true, true)] {
            let d = udp_v6(hbh, dst, 3000);
            let unfrag = if hbh { 48 } else { 40 };
            for mtu in [1280, 1500, 2000] {
                let frags = refragment_ipv6(&d, unfrag, 0xabcd1234, mtu).unwrap();
                assert!(frags.len() > 1);
                let mut dfr = Defragmenter::new(DefragConfig::default());
                let mut got = None;
                for (i, f) in frags.iter().enumerate() {
                    assert!(f.len() <= mtu);
                    assert_eq!(ipv6_fragment_info(f), Some((unfrag, 0xabcd1234)));
                    match dfr.push_ipv6(f, 0) {
                        DefragResult::Complete { packet, .. } => got = Some(packet),
                        DefragResult::Pending => assert!(i + 1 < frags.len()),
                        other => panic!("{other:?}"),
                    }
                }
                assert_eq!(got.as_deref(), Some(&d[..]), "hbh={hbh} dst={dst} mtu={mtu}");
            }
        }
    }

    #[test]
    fn refrag_v6_errors_and_info() {
        let d = udp_v6(true, false, 3000);
        assert_eq!(refragment_ipv6(&d, 44, 1, 1500), Err(RefragError::BadPacket));
        assert_eq!(refragment_ipv6(&d, 30, 1, 1500), Err(RefragError::BadPacket));
        assert_eq!(refragment_ipv6(&d, 48, 1, 60), Err(RefragError::MtuTooSmall));
        assert_eq!(refragment_ipv6(&d[..20], 40, 1, 1500), Err(RefragError::BadPacket));
        assert_eq!(refragment_ipv6(&d, 48, 1, 4000).unwrap(), vec![d.clone()]);
        assert_eq!(ipv6_fragment_info(&d), None);
        assert_eq!(ipv6_fragment_info(&[0u8; 3]), None);
    }

    #[test]
    fn refrag_never_panics_on_garbage() {
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let base4 = udp_v4(&[0x83, 7, 4, 1, 2, 3, 4, 0], 600);
        let base6 = udp_v6(true, true, 600);
        for _ in 0..20_000 {
            let mut p = if next() % 2 == 0 { base4.clone() } else { base6.clone() };
            for _ in 0..(next() % 6) {
                let i = (next() as usize) % p.len();
                p[i] = next() as u8;
            }
            p.truncate((next() as usize) % (p.len() + 1));
            let mtu = (next() % 1600) as usize;
            let _ = refragment_ipv4(&p, mtu);
            let _ = refragment_ipv6(&p, (next() % 100) as usize, 7, mtu);
            let _ = ipv6_fragment_info(&p);
        }
    }
}
