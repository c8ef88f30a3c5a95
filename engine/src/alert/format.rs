//! Text renderings of an [`Alert`]: Haka's pretty and oneline formats, EVE JSON, syslog.
//!
//! The pretty/oneline layout reproduces Haka's `alert_tostring()` (`lib/haka/alert.c`) as
//! used by the `alert/file` module (`modules/alert/file/main.c`: `"alert: %s%ls\n"` with
//! indent `"\n\t"` for pretty and `" "` for oneline) and by `alert/syslog`
//! (`modules/alert/syslog/main.c`: `syslog(LOG_NOTICE, "alert: %s%ls", update ? "update " : "", ...)`
//! with indent `" "`). Times are rendered like `ctime_r()` without the trailing newline,
//! in UTC (Haka used the local time zone).

use std::fmt::Write as _;

use serde::Serialize;

use super::Alert;

/// Broken-down UTC time (proleptic Gregorian calendar).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    pub hour: u32,
    pub min: u32,
    pub sec: u32,
    /// 0 = Sunday
    pub weekday: u32,
    pub micros: u32,
}

impl UtcTime {
    /// Splits a unix time in seconds (fractional part = sub-second) into calendar fields.
    /// Non-finite inputs are treated as 0 (the epoch).
    pub fn from_unix(secs: f64) -> UtcTime {
        let secs = if secs.is_finite() { secs } else { 0.0 };
        let mut whole = secs.floor() as i64;
        let mut micros = ((secs - secs.floor()) * 1e6).round() as i64;
        if micros >= 1_000_000 {
            whole += 1;
            micros -= 1_000_000;
        }
        let days = whole.div_euclid(86_400);
        let sod = whole.rem_euclid(86_400);
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        UtcTime {
            year,
            month,
            day,
            hour: (sod / 3600) as u32,
            min: (sod % 3600 / 60) as u32,
            sec: (sod % 60) as u32,
            weekday: (days + 4).rem_euclid(7) as u32,
            micros: micros as u32,
        }
    }
}

const WDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `ctime_r()` layout without the newline, in local time: `"Thu Nov 24 18:22:48 1986"`.
pub fn ctime_string(secs: f64) -> String {
    // local time, as Haka's ctime(): the zone's offset at that instant (TZ, /etc/localtime)
    use chrono::{Offset, TimeZone};
    let offset = chrono::Local
        .timestamp_opt(secs.floor() as i64, 0)
        .single()
        .map_or(0, |t| t.offset().fix().local_minus_utc());
    let t = UtcTime::from_unix(secs + offset as f64);
    format!(
        "{} {}{:3} {:02}:{:02}:{:02} {}",
        WDAYS[t.weekday as usize],
        MONTHS[t.month as usize - 1],
        t.day,
        t.hour,
        t.min,
        t.sec,
        t.year
    )
}

/// Suricata EVE timestamp: `"2026-11-24T22:03:01.123456+0000"` (UTC).
pub fn eve_timestamp(secs: f64) -> String {
    let t = UtcTime::from_unix(secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+0000",
        t.year, t.month, t.day, t.hour, t.min, t.sec, t.micros
    )
}

/// RFC 3164 header timestamp: `"Nov  4 22:03:01"` (UTC).
pub fn syslog_timestamp(secs: f64) -> String {
    let t = UtcTime::from_unix(secs);
    format!(
        "{} {:2} {:02}:{:02}:{:02}",
        MONTHS[t.month as usize - 1],
        t.day,
        t.hour,
        t.min,
        t.sec
    )
}

/// Haka's node type and value of a source/target entry: as the rule gave it
/// (`"address: 10.0.0.1"`, `"service: 22, ssh"` from `haka.alert.address` /
/// `haka.alert.service`), else `"service"` for `proto/port` text, `"address"` otherwise.
pub fn node_type(entry: &str) -> (&'static str, &str) {
    for kind in ["address", "service"] {
        if let Some(v) = entry.strip_prefix(kind).and_then(|r| r.strip_prefix(": ")) {
            return (kind, v);
        }
    }
    (if entry.contains('/') { "service" } else { "address" }, entry)
}

/// The values of entries (EVE carries the addresses and services themselves).
fn node_values(nodes: &[String]) -> Vec<&str> {
    nodes.iter().map(|n| node_type(n).1).collect()
}

/// Haka's `alert_tostring(id, time, alert, header, indent, colored=false)`.
///
/// Each entry of `sources`/`targets` is rendered as its own node
/// (`"<indent>\t<address|service>: <entry>"`).
pub fn alert_tostring(a: &Alert, header: &str, indent: &str) -> String {
    let mut s = String::with_capacity(256);
    // `write!` into a String cannot fail.
    let _ = write!(s, "{header}id = {}", a.id);
    let _ = write!(s, "{indent}time = {}", ctime_string(a.time_secs));
    if let Some(t) = a.start_time {
        let _ = write!(s, "{indent}start time = {}", ctime_string(t));
    }
    if let Some(t) = a.end_time {
        let _ = write!(s, "{indent}end time = {}", ctime_string(t));
    }
    if let Some(v) = &a.severity {
        let _ = write!(s, "{indent}severity = {v}");
    }
    if let Some(v) = &a.confidence {
        let _ = write!(s, "{indent}confidence = {v}");
    }
    if let Some(v) = &a.completion {
        let _ = write!(s, "{indent}completion = {v}");
    }
    if let Some(v) = &a.description {
        let _ = write!(s, "{indent}description = {v}");
    }
    if a.method_description.is_some() || !a.method_ref.is_empty() {
        let _ = write!(s, "{indent}method = {{");
        if let Some(v) = &a.method_description {
            let _ = write!(s, "{indent}\tdescription = {v}");
        }
        if !a.method_ref.is_empty() {
            let _ = write!(s, "{indent}\tref = {{");
            push_list(&mut s, &a.method_ref);
            s.push_str(" }");
        }
        let _ = write!(s, "{indent}}}");
    }
    for (name, nodes) in [("sources", &a.sources), ("targets", &a.targets)] {
        if !nodes.is_empty() {
            let _ = write!(s, "{indent}{name} = {{");
            for n in nodes {
                let (kind, v) = node_type(n);
                let _ = write!(s, "{indent}\t{kind}: {v}");
            }
            let _ = write!(s, "{indent}}}");
        }
    }
    if !a.refs.is_empty() {
        let _ = write!(s, "{indent}refs = {{");
        for (i, r) in a.refs.iter().enumerate() {
            if i != 0 {
                s.push(',');
            }
            let _ = write!(s, " {r}");
        }
        s.push_str(" }");
    }
    s
}

/// Haka's `alert_stringlist_append`: `" a, b, c"`.
fn push_list(s: &mut String, items: &[String]) {
    for (i, it) in items.iter().enumerate() {
        if i != 0 {
            s.push(',');
        }
        s.push(' ');
        s.push_str(it);
    }
}

fn update_prefix(a: &Alert) -> &'static str {
    if a.update {
        "update "
    } else {
        ""
    }
}

/// `alert/file` pretty format, newline-terminated:
/// `"alert: [update ]id = N\n\ttime = ...\n\tseverity = ...\n"`.
pub fn pretty(a: &Alert) -> String {
    let mut s = format!(
        "alert: {}{}",
        update_prefix(a),
        alert_tostring(a, "", "\n\t")
    );
    s.push('\n');
    s
}

/// `alert/file` oneline format (indent `" "`), without a trailing newline.
pub fn oneline(a: &Alert) -> String {
    format!("alert: {}{}", update_prefix(a), alert_tostring(a, "", " "))
}

/// The message part logged by the syslog output (`alert/syslog`): same as [`oneline`].
pub fn syslog_message(a: &Alert) -> String {
    oneline(a)
}

/// LOG_LOCAL0 (16) * 8 + LOG_NOTICE (5).
pub const SYSLOG_PRI: u8 = 16 * 8 + 5;

/// A full RFC 3164 datagram as glibc's `syslog()` would send it with
/// `openlog("haka", LOG_PID, LOG_LOCAL0)`: `"<133>Nov 24 22:03:01 haka[PID]: alert: ..."`
/// (Haka's oneline message).
pub fn syslog_datagram(a: &Alert, pid: u32, now_secs: f64) -> String {
    syslog_datagram_with(&syslog_message(a), pid, now_secs)
}

/// The same datagram with `message` (`[alerts] syslog_format = "eve"`: the EVE line).
pub fn syslog_datagram_with(message: &str, pid: u32, now_secs: f64) -> String {
    format!("<{SYSLOG_PRI}>{} haka[{pid}]: {message}", syslog_timestamp(now_secs))
}

/// EVE `"proto"` text (Suricata naming), or the number for other protocols.
pub fn proto_name(p: u8) -> serde_json::Value {
    match p {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        58 => "IPv6-ICMP".into(),
        132 => "SCTP".into(),
        n => n.into(),
    }
}

#[derive(Serialize)]
struct EveMethod<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(rename = "ref")]
    refs: &'a [String],
}

#[derive(Serialize)]
struct EveAlert<'a> {
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
    id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    severity: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    confidence: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<String>,
    method: EveMethod<'a>,
    sources: Vec<&'a str>,
    targets: Vec<&'a str>,
    #[serde(rename = "ref")]
    refs: &'a [u64],
}

#[derive(Serialize)]
struct EveLine<'a> {
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    flow_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    in_iface: Option<&'a str>,
    event_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_ip: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dest_ip: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dest_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proto: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    direction: Option<&'a str>,
    alert: EveAlert<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_proto: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<&'a super::HttpMeta>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns: Option<&'a super::DnsMeta>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<&'a super::TlsMeta>,
    worker: usize,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    update: bool,
}

/// One EVE JSON object (no trailing newline). Keys in Suricata order:
/// `timestamp[, flow_id][, in_iface], event_type, src_ip, src_port, dest_ip, dest_port, proto,
/// direction, alert[, app_proto][, http | dns | tls], worker[, update]`; `alert` starts with
/// Suricata's `action[, signature_id, signature]` and our `rule`, then Haka's keys.
/// Flow keys are omitted when the alert has no flow; `None` strings are omitted;
/// `method`, `sources`, `targets` and `ref` are always present (possibly empty).
pub fn eve_json(a: &Alert) -> String {
    let f = a.flow.as_ref();
    let m = &a.siem;
    let line = EveLine {
        timestamp: eve_timestamp(a.time_secs),
        flow_id: m.flow_id,
        in_iface: m.in_iface.as_deref(),
        event_type: "alert",
        src_ip: f.map(|f| f.src.as_str()),
        src_port: f.map(|f| f.sport),
        dest_ip: f.map(|f| f.dst.as_str()),
        dest_port: f.map(|f| f.dport),
        proto: f.map(|f| proto_name(f.proto)),
        direction: a.direction.as_deref(),
        alert: EveAlert {
            action: if m.blocked { "blocked" } else { "allowed" },
            signature_id: m.signature_id,
            // (Suricata's rule message: the description, else the rule)
            signature: a.description.as_deref().or(m.rule.as_deref()),
            rule: m.rule.as_deref(),
            id: a.id,
            severity: a.severity.as_deref(),
            confidence: a.confidence.as_deref(),
            completion: a.completion.as_deref(),
            description: a.description.as_deref(),
            start_time: a.start_time.map(eve_timestamp),
            end_time: a.end_time.map(eve_timestamp),
            method: EveMethod {
                description: a.method_description.as_deref(),
                refs: &a.method_ref,
            },
            sources: node_values(&a.sources),
            targets: node_values(&a.targets),
            refs: &a.refs,
        },
        app_proto: m.app_proto.as_deref(),
        http: m.http.as_ref(),
        dns: m.dns.as_ref(),
        tls: m.tls.as_ref(),
        worker: a.worker,
        update: a.update,
    };
    // Serializing plain strings/numbers into a String cannot fail.
    serde_json::to_string(&line).unwrap_or_default()
}
