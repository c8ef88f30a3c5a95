//! Rust values of the application dissectors (http, dns, tls) as the plain Lua tables that
//! `engine/lua/app.lua` turns into Haka objects (`K.http_request(raw)`, `K.dns_message(raw)`,
//! ...), the `H.http_*` helpers, and [`load`], which runs app.lua after haka.lua.
//!
//! Raw table layouts (field names are Haka's where Haka had the field):
//! - request and response: `head` (the head bytes as received), `fields` (offset of the first
//!   field), `parts` (where method, uri, version / version, status, reason are), `flags`; see
//!   [`head_table`]. app.lua reads fields and headers out of `head` when asked.
//! - dns: header fields `id, qr, opcode, aa, tc, rd, ra, z, rcode, qdcount, ancount, nscount,
//!   arcount` (flags as booleans), `questions` (array of `{name, type, class}`), `answer`,
//!   `authority`, `additional` (arrays of records). Names are dotted with a trailing dot, as
//!   Haka printed them (`"haka-security.org."`, the root is `""`). `type` is the mnemonic
//!   (`"A"`, `"MX"`, ...) or the number when unknown; `class` is the number (Haka: `class : 1`).
//!   Records: `name, type, class, ttl, length`, `owner` (the owner name, always), and per type:
//!   A `ip` (u32, app.lua makes it an `ipv4.addr`), AAAA `ip` (text), NS/CNAME/PTR/MD/MF/MB/MG/MR
//!   `name` (the target: Haka's record field overwrote the owner name), MX `pref` + `name`,
//!   SOA `mname, rname, serial, refresh, retry, expire, minimum`, MINFO `rname, ename`,
//!   TXT `data` (the strings concatenated, Haka) + `txt` (array of the strings), HINFO `cpu, os`,
//!   WKS `ip` (u32), `proto`, `ports` (bitmap bytes), NULL `data` (bytes), others and data that
//!   does not fit its type `unknown` (bytes).
//! - tls: `sni` (or nil), `version` (legacy_version of the hello), `record_version`,
//!   `max_version` (highest offered, supported_versions considered), `versions`
//!   (supported_versions as sent), `cipher_suites`, `alpn`, `extensions`,
//!   `compression_methods` (arrays of numbers / strings), `session_id` (bytes).
use crate::{dns, http, tls};
use mlua::{Lua, Table};

/// engine/lua/app.lua, run by [`load`].
const APP_LUA: &str = include_str!("../../lua/app.lua");

/// Registry key of the K table (haka.lua internals + app.lua constructors) after [`load`].
pub(crate) const K_REGISTRY_KEY: &str = "haka.K";

/// The raw table of a head for `K.http_request(raw)` / `K.http_response(raw)`: the same
/// values the datapath passes to `RT.app_events` (`head`, the head bytes; `fields`, the
/// 0-based offset of its first field; `parts`, `[start, end)` pairs of the start line's
/// three parts; `flags`: 1 canonical, 2 obs-fold; see [`http::HeadInfo`]).
pub fn head_table(lua: &Lua, h: &http::RawHead) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 4)?;
    t.raw_set("head", lua.create_string(&h.bytes)?)?;
    t.raw_set("fields", h.info.fields_start)?;
    let p = lua.create_table_with_capacity(6, 0)?;
    for (i, (a, b)) in h.info.parts.iter().enumerate() {
        p.raw_set(2 * i + 1, *a)?;
        p.raw_set(2 * i + 2, *b)?;
    }
    t.raw_set("parts", p)?;
    t.raw_set("flags", h.info.canonical as u8 | (h.info.obs_fold as u8) << 1)?;
    Ok(t)
}

fn scanned(bytes: Vec<u8>, is_request: bool) -> mlua::Result<http::RawHead> {
    http::RawHead::scan(bytes, is_request).map_err(|e| mlua::Error::runtime(e.to_string()))
}

/// The raw table of a request (its `to_bytes`, see [`head_table`]).
pub fn request_table(lua: &Lua, r: &http::Request) -> mlua::Result<Table> {
    head_table(lua, &scanned(r.to_bytes(), true)?)
}

/// The raw table of a response (its `to_bytes`, see [`head_table`]).
pub fn response_table(lua: &Lua, r: &http::Response) -> mlua::Result<Table> {
    head_table(lua, &scanned(r.to_bytes(), false)?)
}

/// A DNS name as Haka showed it: dotted, with a trailing dot (`""` for the root).
fn dns_name(n: &dns::Name) -> String {
    if n.is_root() {
        return String::new();
    }
    let mut s = n.to_dotted();
    s.push('.');
    s
}

fn dns_type(lua: &Lua, t: u16) -> mlua::Result<mlua::Value> {
    match dns::type_name(t) {
        Some(n) => Ok(mlua::Value::String(lua.create_string(n)?)),
        None => Ok(mlua::Value::Integer(t as mlua::Integer)),
    }
}

fn record_table(lua: &Lua, r: &dns::Record) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 8)?;
    let owner = dns_name(&r.name);
    t.raw_set("name", owner.as_str())?;
    t.raw_set("owner", owner)?;
    t.raw_set("type", dns_type(lua, r.rtype)?)?;
    t.raw_set("class", r.class)?;
    t.raw_set("ttl", r.ttl)?;
    t.raw_set("length", r.length)?;
    match &r.data {
        dns::RData::A(ip) => t.raw_set("ip", u32::from(*ip))?,
        dns::RData::Aaaa(ip) => t.raw_set("ip", ip.to_string())?,
        dns::RData::Name(n) => t.raw_set("name", dns_name(n))?,
        dns::RData::Mx { preference, exchange } => {
            t.raw_set("pref", *preference)?;
            t.raw_set("name", dns_name(exchange))?;
        }
        dns::RData::Soa(s) => {
            t.raw_set("mname", dns_name(&s.mname))?;
            t.raw_set("rname", dns_name(&s.rname))?;
            t.raw_set("serial", s.serial)?;
            t.raw_set("refresh", s.refresh)?;
            t.raw_set("retry", s.retry)?;
            t.raw_set("expire", s.expire)?;
            t.raw_set("minimum", s.minimum)?;
        }
        dns::RData::Minfo { rmailbx, emailbx } => {
            t.raw_set("rname", dns_name(rmailbx))?;
            t.raw_set("ename", dns_name(emailbx))?;
        }
        dns::RData::Txt(strings) => {
            t.raw_set("data", lua.create_string(strings.concat())?)?;
            let l = lua.create_table_with_capacity(strings.len(), 0)?;
            for (i, s) in strings.iter().enumerate() {
                l.raw_set(i + 1, lua.create_string(s)?)?;
            }
            t.raw_set("txt", l)?;
        }
        dns::RData::Hinfo { cpu, os } => {
            t.raw_set("cpu", lua.create_string(cpu)?)?;
            t.raw_set("os", lua.create_string(os)?)?;
        }
        dns::RData::Wks { address, protocol, bitmap } => {
            t.raw_set("ip", u32::from(*address))?;
            t.raw_set("proto", *protocol)?;
            t.raw_set("ports", lua.create_string(bitmap)?)?;
        }
        dns::RData::Raw(b) => {
            let key = if r.rtype == dns::rtype::NULL { "data" } else { "unknown" };
            t.raw_set(key, lua.create_string(b)?)?;
        }
    }
    Ok(t)
}

fn records_array(lua: &Lua, v: &[dns::Record]) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(v.len(), 0)?;
    for (i, r) in v.iter().enumerate() {
        t.raw_set(i + 1, record_table(lua, r)?)?;
    }
    Ok(t)
}

/// The raw table of a DNS message (see the module docs).
pub fn dns_table(lua: &Lua, m: &dns::Message) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 20)?;
    let h = &m.header;
    t.raw_set("id", h.id)?;
    t.raw_set("qr", h.qr)?;
    t.raw_set("opcode", h.opcode)?;
    t.raw_set("aa", h.aa)?;
    t.raw_set("tc", h.tc)?;
    t.raw_set("rd", h.rd)?;
    t.raw_set("ra", h.ra)?;
    t.raw_set("z", h.z)?;
    t.raw_set("rcode", h.rcode)?;
    t.raw_set("qdcount", h.qdcount)?;
    t.raw_set("ancount", h.ancount)?;
    t.raw_set("nscount", h.nscount)?;
    t.raw_set("arcount", h.arcount)?;
    let qs = lua.create_table_with_capacity(m.questions.len(), 0)?;
    for (i, q) in m.questions.iter().enumerate() {
        let e = lua.create_table_with_capacity(0, 3)?;
        e.raw_set("name", dns_name(&q.name))?;
        e.raw_set("type", dns_type(lua, q.qtype)?)?;
        e.raw_set("class", q.qclass)?;
        qs.raw_set(i + 1, e)?;
    }
    t.raw_set("questions", qs)?;
    t.raw_set("answer", records_array(lua, &m.answers)?)?;
    t.raw_set("authority", records_array(lua, &m.authority)?)?;
    t.raw_set("additional", records_array(lua, &m.additional)?)?;
    Ok(t)
}

/// The raw table of a TLS ClientHello (see the module docs).
pub fn tls_table(lua: &Lua, h: &tls::ClientHello) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 10)?;
    if let Some(s) = &h.sni {
        t.raw_set("sni", s.as_str())?;
    }
    t.raw_set("version", h.legacy_version)?;
    t.raw_set("record_version", h.record_version)?;
    t.raw_set("max_version", h.version)?;
    t.raw_set("versions", lua.create_sequence_from(h.supported_versions.iter().copied())?)?;
    t.raw_set("cipher_suites", lua.create_sequence_from(h.cipher_suites.iter().copied())?)?;
    t.raw_set("alpn", lua.create_sequence_from(h.alpn.iter().map(String::as_str))?)?;
    t.raw_set("extensions", lua.create_sequence_from(h.extensions.iter().copied())?)?;
    t.raw_set("compression_methods", lua.create_sequence_from(h.compression_methods.iter().copied())?)?;
    t.raw_set("session_id", lua.create_string(&h.session_id)?)?;
    Ok(t)
}

/// `http.uri.split` fields; absent components (and an empty path, query or fragment) are nil,
/// as in Haka; `args` (decoded query arguments, the last of a repeated name wins) is always a table.
fn split_uri_table(lua: &Lua, uri: &str) -> mlua::Result<Table> {
    let p = http::split_uri(uri);
    let t = lua.create_table_with_capacity(0, 11)?;
    let opt = |k: &str, v: &Option<String>| -> mlua::Result<()> {
        match v {
            Some(s) => t.raw_set(k, s.as_str()),
            None => Ok(()),
        }
    };
    let nonempty = |k: &str, v: Option<&str>| -> mlua::Result<()> {
        match v {
            Some(s) if !s.is_empty() => t.raw_set(k, s),
            _ => Ok(()),
        }
    };
    opt("scheme", &p.scheme)?;
    opt("authority", &p.authority)?;
    opt("userinfo", &p.userinfo)?;
    opt("user", &p.user)?;
    opt("pass", &p.pass)?;
    opt("host", &p.host)?;
    opt("port", &p.port)?;
    nonempty("path", Some(&p.path))?;
    nonempty("query", p.query.as_deref())?;
    nonempty("fragment", p.fragment.as_deref())?;
    let args = lua.create_table_with_capacity(0, p.args.len())?;
    for (k, v) in &p.args {
        args.raw_set(k.as_str(), v.as_str())?;
    }
    t.raw_set("args", args)?;
    Ok(t)
}

/// `http.cookies.split`: name -> value (the last of a repeated name wins, as in Haka).
fn split_cookies_table(lua: &Lua, value: &str) -> mlua::Result<Table> {
    let c = http::split_cookies(value);
    let t = lua.create_table_with_capacity(0, c.len())?;
    for (k, v) in &c {
        t.raw_set(k.as_str(), v.as_str())?;
    }
    Ok(t)
}

/// Lua bytes as text (invalid UTF-8 replaced, as the HTTP parser does).
fn text(s: &mlua::LuaString) -> String {
    String::from_utf8_lossy(&s.as_bytes()).into_owned()
}

/// Adds the `H.http_*` helpers that app.lua uses.
fn register_helpers(lua: &Lua, h: &Table) -> mlua::Result<()> {
    h.set("http_split_uri", lua.create_function(|lua, uri: mlua::LuaString| split_uri_table(lua, &text(&uri)))?)?;
    // app.lua's header finder, called through the FFI (engine/src/dpdk/lua.rs)
    h.set("http_field_fn", crate::dpdk::http_field_fn() as f64)?;
    // bit i of a head's anomalies (`flags >> 8`) is the (i + 1)-th name
    h.set("http_anomaly_names", lua.create_sequence_from(http::Anomaly::ALL.map(|a| a.name()))?)?;
    h.set("http_normalize_uri", lua.create_function(|_, uri: mlua::LuaString| Ok(http::normalize_uri(&text(&uri))))?)?;
    h.set("http_split_cookies", lua.create_function(|lua, v: mlua::LuaString| split_cookies_table(lua, &text(&v)))?)?;
    Ok(())
}

/// Runs app.lua with `(H, H.K)` (haka.lua publishes its internals as `H.K`) after adding the
/// helpers; keeps K in the registry under [`K_REGISTRY_KEY`] for the Rust side and returns it.
pub(crate) fn load(lua: &Lua, h: &Table) -> mlua::Result<Table> {
    register_helpers(lua, h)?;
    let k: Table = h.get("K")?;
    let k: Table = lua.load(APP_LUA).set_name("@app.lua").call((h.clone(), k))?;
    lua.set_named_registry_value(K_REGISTRY_KEY, &k)?;
    Ok(k)
}

#[cfg(test)]
#[path = "app_tests.rs"]
mod tests;
