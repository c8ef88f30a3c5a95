//! DNS messages (`dns::parse`, what the dissector does with a UDP datagram).
//! Oracles: the `dns` dissector reports for the datagram what `parse` gives; names hold
//! at most 255 bytes in labels of at most 63; round trip: a parsed message written back
//! (uncompressed, by the encoder below) parses to the same header, questions and
//! records (RDLENGTH aside, which decompression changes).
#![no_main]
use haka_engine::dissectors::dns::{parse, DnsDissector, DnsEvent, Message, Name, RData, Record};
use haka_engine::dissectors::{Dissector, AppEvent, Events, Settings};
use libfuzzer_sys::fuzz_target;

fn name(out: &mut Vec<u8>, n: &Name) {
    out.extend_from_slice(n.as_wire());
}

fn strings(out: &mut Vec<u8>, v: &[Vec<u8>]) {
    for s in v {
        out.push(s.len() as u8);
        out.extend_from_slice(s);
    }
}

fn rdata(d: &RData) -> Vec<u8> {
    let mut o = Vec::new();
    match d {
        RData::A(a) => o.extend_from_slice(&a.octets()),
        RData::Aaaa(a) => o.extend_from_slice(&a.octets()),
        RData::Name(n) => name(&mut o, n),
        RData::Soa(s) => {
            name(&mut o, &s.mname);
            name(&mut o, &s.rname);
            for v in [s.serial, s.refresh, s.retry, s.expire, s.minimum] {
                o.extend_from_slice(&v.to_be_bytes());
            }
        }
        RData::Mx { preference, exchange } => {
            o.extend_from_slice(&preference.to_be_bytes());
            name(&mut o, exchange);
        }
        RData::Minfo { rmailbx, emailbx } => {
            name(&mut o, rmailbx);
            name(&mut o, emailbx);
        }
        RData::Txt(v) => strings(&mut o, v),
        RData::Hinfo { cpu, os } => strings(&mut o, &[cpu.clone(), os.clone()]),
        RData::Wks { address, protocol, bitmap } => {
            o.extend_from_slice(&address.octets());
            o.push(*protocol);
            o.extend_from_slice(bitmap);
        }
        RData::Raw(b) => o.extend_from_slice(b),
    }
    o
}

fn encode(m: &Message) -> Vec<u8> {
    let h = &m.header;
    let mut o = Vec::new();
    o.extend_from_slice(&h.id.to_be_bytes());
    o.push((h.qr as u8) << 7 | (h.opcode & 15) << 3 | (h.aa as u8) << 2 | (h.tc as u8) << 1 | h.rd as u8);
    o.push((h.ra as u8) << 7 | (h.z & 7) << 4 | (h.rcode & 15));
    for n in [m.questions.len(), m.answers.len(), m.authority.len(), m.additional.len()] {
        o.extend_from_slice(&(n as u16).to_be_bytes());
    }
    for q in &m.questions {
        name(&mut o, &q.name);
        o.extend_from_slice(&q.qtype.to_be_bytes());
        o.extend_from_slice(&q.qclass.to_be_bytes());
    }
    for (_, r) in m.records() {
        name(&mut o, &r.name);
        o.extend_from_slice(&r.rtype.to_be_bytes());
        o.extend_from_slice(&r.class.to_be_bytes());
        o.extend_from_slice(&r.ttl.to_be_bytes());
        let d = rdata(&r.data);
        o.extend_from_slice(&(d.len() as u16).to_be_bytes());
        o.extend_from_slice(&d);
    }
    o
}

fn check_name(n: &Name) {
    let w = n.as_wire();
    assert!(w.len() <= 255 && w.last() == Some(&0), "{w:?}");
    let mut i = 0;
    while w[i] != 0 {
        assert!(w[i] <= 63, "label of {} bytes", w[i]);
        i += 1 + w[i] as usize;
    }
    assert_eq!(i + 1, w.len());
}

/// Record types whose data the parser decodes: raw data of one of them (it did not decode)
/// may decode, or fail, once moved elsewhere in a message (its pointers then point elsewhere).
fn typed(t: u16) -> bool {
    matches!(t, 1..=16 | 28)
}

fn same_record(a: &Record, b: &Record) -> bool {
    (&a.name, a.rtype, a.class, a.ttl, &a.data) == (&b.name, b.rtype, b.class, b.ttl, &b.data)
}

fuzz_target!(|data: &[u8]| {
    let r = parse(data);
    let mut d = DnsDissector::new(&Settings::default(), 17);
    let mut ev = Events::default();
    d.receive_datagram(0, data, &mut ev);
    assert_eq!(ev.list.len(), 1);
    match (&r, &ev.list[0]) {
        (Ok(m), AppEvent::Message(e)) => {
            let e = e.as_any().downcast_ref::<DnsEvent>().expect("a DNS event");
            assert_eq!(&e.msg, m);
        }
        (Err(_), AppEvent::Error(_)) => {}
        // ([dns] max_questions: a message with more questions is the dissector's error)
        (Ok(m), AppEvent::Error(_)) if m.questions.len() > Settings::default().dns_max_questions as usize => {}
        (r, e) => panic!("parse {r:?} but the dissector reported {e:?}"),
    }
    let Ok(m) = r else { return };
    for q in &m.questions {
        check_name(&q.name);
    }
    for (_, rec) in m.records() {
        check_name(&rec.name);
        if let RData::Name(n) = &rec.data {
            check_name(n);
        }
    }
    if m.records().any(|(_, r)| typed(r.rtype) && matches!(r.data, RData::Raw(_))) {
        return;
    }
    let bytes = encode(&m);
    let again = parse(&bytes).unwrap_or_else(|e| panic!("re-encoded message does not parse: {e} ({bytes:?})"));
    assert_eq!(again.header, m.header);
    assert_eq!(again.questions, m.questions);
    assert_eq!(again.trailing, 0);
    let (a, b): (Vec<_>, Vec<_>) = (m.records().collect(), again.records().collect());
    assert_eq!(a.len(), b.len());
    for ((sa, ra), (sb, rb)) in a.iter().zip(&b) {
        assert_eq!(sa, sb);
        assert!(same_record(ra, rb), "record changed by the round trip: {ra:?} -> {rb:?}");
    }
});
