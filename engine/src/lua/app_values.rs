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
use crate::dissectors::{dns, http, tls};
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

/// `haka`: `[dns] records = "haka"`: AAAA and HINFO left undecoded (`unknown`, their
/// record data) and TXT's `data` the record data as is, as Haka 0.4 (app.lua makes its
/// bytes fields vbuffer_subs).
fn record_table(lua: &Lua, r: &dns::Record, haka: bool) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 8)?;
    let owner = dns_name(&r.name);
    t.raw_set("name", owner.as_str())?;
    t.raw_set("owner", owner)?;
    t.raw_set("type", dns_type(lua, r.rtype)?)?;
    t.raw_set("class", r.class)?;
    t.raw_set("ttl", r.ttl)?;
    t.raw_set("length", r.length)?;
    match &r.data {
        dns::RData::Aaaa(ip) if haka => t.raw_set("unknown", lua.create_string(ip.octets())?)?,
        dns::RData::Hinfo { cpu, os } if haka => {
            // the record data: two <character-string>s (length byte, bytes)
            let mut b = Vec::with_capacity(cpu.len() + os.len() + 2);
            for s in [cpu, os] {
                b.push(s.len() as u8);
                b.extend_from_slice(s);
            }
            t.raw_set("unknown", lua.create_string(b)?)?
        }
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
            if haka {
                // Haka read the record data as text: each string with its length byte
                let mut b = Vec::with_capacity(strings.iter().map(|s| s.len() + 1).sum());
                for s in strings {
                    b.push(s.len() as u8);
                    b.extend_from_slice(s);
                }
                t.raw_set("data", lua.create_string(b)?)?;
            } else {
                t.raw_set("data", lua.create_string(strings.concat())?)?;
            }
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

fn records_array(lua: &Lua, v: &[dns::Record], haka: bool) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(v.len(), 0)?;
    for (i, r) in v.iter().enumerate() {
        t.raw_set(i + 1, record_table(lua, r, haka)?)?;
    }
    Ok(t)
}

/// The raw table of a DNS message (see the module docs).
/// `haka_records`: `[dns] records = "haka"` (see [`record_table`]).
pub fn dns_table(lua: &Lua, m: &dns::Message, haka_records: bool) -> mlua::Result<Table> {
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
    t.raw_set("answer", records_array(lua, &m.answers, haka_records)?)?;
    t.raw_set("authority", records_array(lua, &m.authority, haka_records)?)?;
    t.raw_set("additional", records_array(lua, &m.additional, haka_records)?)?;
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

/// The components of a split uri, as Haka names them (`args` aside).
const URI_FIELDS: [&str; 10] = ["scheme", "authority", "userinfo", "user", "pass", "host", "port", "path", "query", "fragment"];

fn uri_field<'a>(p: &'a mut http::UriParts, k: &str) -> Option<&'a mut Option<String>> {
    Some(match k {
        "scheme" => &mut p.scheme,
        "authority" => &mut p.authority,
        "userinfo" => &mut p.userinfo,
        "user" => &mut p.user,
        "pass" => &mut p.pass,
        "host" => &mut p.host,
        "port" => &mut p.port,
        "path" => &mut p.path,
        "query" => &mut p.query,
        "fragment" => &mut p.fragment,
        _ => return None,
    })
}

/// A string or number field as text (Lua's coercion), anything else as absent.
fn coerced(lua: &Lua, v: mlua::Value) -> Option<String> {
    match v {
        mlua::Value::String(_) | mlua::Value::Integer(_) | mlua::Value::Number(_) => {
            lua.coerce_string(v).ok().flatten().map(|s| text(&s))
        }
        _ => None,
    }
}

/// Writes `p` into the split-uri table `t` (nil for absent components). An `args` table already
/// there is updated in place (Haka's `normalize` changes the values of the same table).
fn write_uri_parts(lua: &Lua, t: &Table, p: &http::UriParts) -> mlua::Result<()> {
    let mut p = p.clone();
    for k in URI_FIELDS {
        let v = uri_field(&mut p, k).and_then(|f| f.take());
        t.raw_set(k, v)?;
    }
    match &p.args {
        Some(args) => {
            let at = match t.raw_get::<mlua::Value>("args")? {
                mlua::Value::Table(at) => at,
                _ => lua.create_table_with_capacity(0, args.len())?,
            };
            for (k, v) in args {
                at.raw_set(k.as_str(), v.as_str())?;
            }
            t.raw_set("args", at)?;
        }
        None => t.raw_set("args", mlua::Nil)?,
    }
    Ok(())
}

/// Reads a split-uri table (as a rule may have changed it) back into [`http::UriParts`]. The
/// arguments (string names) come in the order of `query` where they appear there, then sorted.
fn read_uri_parts(lua: &Lua, t: &Table) -> mlua::Result<http::UriParts> {
    let mut p = http::UriParts::default();
    for k in URI_FIELDS {
        let v = coerced(lua, t.raw_get(k)?);
        if let Some(f) = uri_field(&mut p, k) {
            *f = v;
        }
    }
    if let mlua::Value::Table(at) = t.raw_get::<mlua::Value>("args")? {
        let mut rest: Vec<(String, String)> = Vec::new();
        for (k, v) in at.pairs::<mlua::Value, mlua::Value>().flatten() {
            if let (mlua::Value::String(k), Some(v)) = (&k, coerced(lua, v)) {
                rest.push((text(k), v));
            }
        }
        let mut args = Vec::with_capacity(rest.len());
        for (name, _) in http::split_args(p.query.as_deref().unwrap_or("")) {
            if let Some(i) = rest.iter().position(|(k, _)| *k == name) {
                args.push(rest.swap_remove(i));
            }
        }
        rest.sort();
        args.extend(rest);
        p.args = Some(args);
    }
    Ok(p)
}

/// `http.uri.split` as a table of Haka's fields: absent or empty components are nil, `args`
/// (arguments as written; the last of a repeated name wins) only when there is a query.
fn split_uri_table(lua: &Lua, uri: &str) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 11)?;
    write_uri_parts(lua, &t, &http::split_uri(uri))?;
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
    // Haka's split:normalize() (in place) and tostring(split), on the fields as they are now
    h.set(
        "http_uri_normalize_split",
        lua.create_function(|lua, t: Table| {
            let mut p = read_uri_parts(lua, &t)?;
            p.normalize();
            write_uri_parts(lua, &t, &p)
        })?,
    )?;
    h.set("http_uri_tostring", lua.create_function(|lua, t: Table| Ok(read_uri_parts(lua, &t)?.to_uri()))?)?;
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
