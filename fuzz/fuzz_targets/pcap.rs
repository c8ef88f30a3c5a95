//! Capture files (`pcapfile`): classic pcap in both byte orders and precisions, pcapng.
//! Oracles: round trip (parse -> `to_pcap_bytes` -> parse gives the same link type and
//! packets); on a classic pcap, `record_times_ns` finds one time per packet `parse`
//! found, and `restamp` then `record_times_ns` gives the times set (at the file's
//! precision) without changing a packet; errors are one line.
#![no_main]
use haka_engine::pcapfile::{record_times_ns, restamp, Capture};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cap = match Capture::parse(data) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.contains('\n'), "error of more than one line: {e:?}");
            return;
        }
    };
    let again = Capture::parse(&cap.to_pcap_bytes()).expect("a written capture parses");
    assert_eq!(again, cap, "round trip");
    let classic = matches!(u32::from_le_bytes(data[..4].try_into().unwrap()), 0xa1b2c3d4 | 0xa1b23c4d | 0xd4c3b2a1 | 0x4d3cb2a1);
    if !classic {
        return;
    }
    let times = record_times_ns(data).expect("times of a capture that parses");
    assert_eq!(times.len(), cap.packets.len());
    let nano = matches!(u32::from_le_bytes(data[..4].try_into().unwrap()), 0xa1b23c4d | 0x4d3cb2a1);
    let set: Vec<u64> = (0..times.len() as u64).map(|i| 1_600_000_000_000_000_000 + i * 1_234_567).collect();
    let mut b = data.to_vec();
    restamp(&mut b, &set).expect("restamp of a capture that parses");
    let got = record_times_ns(&b).unwrap();
    let want: Vec<u64> = set.iter().map(|&t| if nano { t } else { t / 1000 * 1000 }).collect();
    assert_eq!(got, want);
    assert_eq!(Capture::parse(&b).unwrap(), cap, "restamp changed a packet");
});
