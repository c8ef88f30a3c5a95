-- Haka 0.4 Lua API runtime for "Haka on DPDK".
-- Loaded once per Lua state with (H, burst_addr): H holds the Rust helpers
-- (log, alert, regex, ipv6 parse/format, now, worker), burst_addr the address of the
-- engine's #[repr(C)] burst struct (engine/src/lua/mod.rs `Burst`, layout mirrored below).
local H, burst_addr = ...
local ffi = require("ffi")
local bit = require("bit")
local band, bor, lshift, rshift, bnot = bit.band, bit.bor, bit.lshift, bit.rshift, bit.bnot
local type, tostring, error, pairs, ipairs, select, setmetatable = type, tostring, error, pairs, ipairs, select, setmetatable
local sfmt = string.format
-- functions Rust calls (engine/src/lua/mod.rs), and the runtime's own tables
local RT = {}

-- The generated burst loop inlines every rule into one trace: raise the recorder limits
-- (defaults: maxrecord 4000 IR, maxsnap 500) so that ten-odd rules still compile. Not the
-- constants (maxirconst, 500): raised to 4000, the whole path from a segment to a Lua
-- dissector's rules compiled as one trace, but its side traces then failed to compile
-- ("NYI: register coalescing too complex", retried some 250 times each) and every message
-- leaving it ran in the interpreter: case (g) was 15-25% slower.
if jit and jit.opt then
  jit.opt.start("maxtrace=4000", "maxrecord=40000", "maxsnap=4000", "maxmcode=8192", "maxside=400", "loopunroll=60",
    "hotloop=56")
end

ffi.cdef[[
typedef struct hk_slot {
  uint8_t *data;
  uint32_t len;
  uint32_t flow_id;
  uint32_t vlan;
  uint16_t l3_off, l4_off, payload_off, payload_len;
  uint16_t ip_len;
  uint8_t l3, proto, has_l4, dir, fragment;
  uint8_t verdict;
  uint8_t modified;
  uint8_t flags;
  uint8_t _pad[2];
  uint32_t ts_sec, ts_nsec;
  uint32_t pkt_id;
  uint32_t _pad2;
} hk_slot;
typedef struct hk_burst {
  uint32_t n;
  uint32_t cur;
  uint32_t errors;
  uint32_t rewrites;
  uint32_t forged;
  uint32_t suppressed;
  uint32_t proto_errors;
  uint32_t _pad3;
  hk_slot s[256];
} hk_burst;
typedef struct { hk_slot *s; } hk_packet_view;
typedef struct { hk_slot *s; } hk_eth_view;
typedef struct { hk_slot *s; } hk_ipv4_view;
typedef struct { hk_slot *s; } hk_ipv4_flags;
typedef struct { hk_slot *s; } hk_ipv6_view;
typedef struct { hk_slot *s; } hk_tcp_view;
typedef struct { hk_slot *s; } hk_tcp_flags;
typedef struct { hk_slot *s; } hk_udp_view;
typedef struct { hk_slot *s; } hk_icmp_view;
typedef struct { uint32_t a; } hk_ipv4_addr;
typedef struct { uint32_t _net; uint32_t _mask; uint8_t _bits; } hk_ipv4_network;
typedef struct { uint8_t b[16]; } hk_ipv6_addr;
typedef struct { uint8_t *p; int32_t len; hk_slot *s; } hk_buf;
int memcmp(const void *a, const void *b, size_t n);
]]

local MAX_BURST = 256
assert(ffi.sizeof("hk_slot") == H.slot_size and ffi.sizeof("hk_burst") == H.burst_size,
  "haka.lua: burst layout differs from the Rust one")
local B = ffi.cast("hk_burst*", burst_addr)
local S = B.s
local S0 = ffi.cast("hk_slot*", B.s)

-- modified bit (mirrored in Rust): a rule wrote into the packet; Rust then recomputes its
-- checksums when it leaves (Haka: any header write invalidates the checksum, which is
-- computed again when the packet is sent, even when the rule wrote the checksum field)
local MOD = 1
-- slot flags: ipv4 dont_reassemble, a packet the rules forged (packet.create), already
-- injected or sent
local F_NOREASM, F_FORGED, F_SENT = 1, 2, 4
-- passive (pass-through) mode: the packets are read only (Haka: "read only buffer")
local READ_ONLY = H.read_only and true or false
local function writable(s)
  if READ_ONLY and band(s.flags, F_FORGED) == 0 then error("read only buffer", 0) end
end

-- pkt.data tables of the current burst, by slot address (emptied when a burst starts)
local PDATA, PDATA_USED = {}, false
local forge_reset -- (forging, below)
-- H.l4_undissected[proto]: under `[rules] dissectors = "required"`, the rules file did not
-- load that L4 protocol's module (RT.finish). Haka then never dissects the L4 header, so a
-- header write (e.g. NAT on pkt.dst) recomputes the IP checksum only: bit 4 keeps the L4 one.
H.l4_undissected = {}
local function touch(s, bits)
  if not bits and H.l4_undissected[s.proto] then bits = MOD + 4 end
  s.modified = bor(s.modified, bits or MOD)
end

local function be16(b, o) return (bor(lshift(b[o], 8), b[o + 1])) end
local function be32(b, o) return b[o] * 16777216 + b[o + 1] * 65536 + b[o + 2] * 256 + b[o + 3] end
local function put16(b, o, v) b[o] = band(rshift(v, 8), 0xff); b[o + 1] = band(v, 0xff) end
local function put32(b, o, v)
  v = v % 4294967296
  b[o] = math.floor(v / 16777216) % 256; b[o + 1] = math.floor(v / 65536) % 256
  b[o + 2] = math.floor(v / 256) % 256; b[o + 3] = v % 256
end
local function num(v, what)
  local n = tonumber(v)
  if n == nil then error(sfmt("%s: number expected, got %s", what, type(v)), 3) end
  -- Haka's header fields are unsigned (its bindings refuse a negative number)
  if n < 0 then error("number must not be negative", 0) end
  return n
end

-- ones-complement partial sum of n bytes at p
local function csum(p, n, acc)
  acc = acc or 0
  local i = 0
  while i + 1 < n do acc = acc + p[i] * 256 + p[i + 1]; i = i + 2 end
  if i < n then acc = acc + p[i] * 256 end
  return acc
end
local function cfinish(acc)
  while acc > 0xffff do acc = (acc % 65536) + math.floor(acc / 65536) end
  return (band(bnot(acc), 0xffff))
end

-- debug.pprint descriptors (engine/lua/lib/debug.lua: the object protocol). A view's or a
-- userdata-like object's fields: `keys` printed in that order, each read as obj[key].
local function pp_userdata(name, keys)
  local fields
  if keys then
    fields = function(obj, add)
      for i = 1, #keys do local k = keys[i]; add(k, obj[k]) end
    end
  end
  return { kind = "userdata", name = name, fields = fields }
end
local function pp_sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

---------------------------------------------------------------------------
-- haka core
---------------------------------------------------------------------------
haka = haka or {}
local worker = H.worker
-- Haka's print separates its arguments with a space (Lua's: a tab)
do
  local lua_print, n_args = print, select
  print = function(...)
    local n = n_args("#", ...)
    if n <= 1 then return lua_print(...) end
    local t = { ... }
    for i = 1, n do t[i] = tostring(t[i]) end
    return lua_print(table.concat(t, " ", 1, n))
  end
end
-- buffers (engine/lua/vbuffer.lua): haka.vbuffer_allocate, vbuffer_from, vbuffer_stream, ...
H.vbuffer.install(haka)

-- logging
local levels = { fatal = 0, error = 1, warning = 2, info = 3, debug = 4, trace = 5 }
local loglevel = levels.info
local function fmtmsg(fmt, ...)
  if select('#', ...) == 0 then return (tostring(fmt)) end
  local ok, m = pcall(sfmt, tostring(fmt), ...)
  if ok then return m end
  return (tostring(fmt))
end
-- Lines read as Haka's: "LEVEL SECTION: message"; haka.log's section is "external".
-- (Haka printed the level `warning` as "warn")
local level_text = { warning = "warn" }
-- per-section levels (haka --loglevel / [log] level / hakactl loglevel "info,http=debug")
local section_level = {}
local function mklog(section)
  local t = {}
  for name, lvl in pairs(levels) do
    local text = level_text[name] or name
    t[name] = function(fmt, ...)
      if lvl <= (section_level[section] or loglevel) then
        H.log(text, section, fmtmsg(fmt, ...))
      end
    end
  end
  return t
end
local log_root = mklog("external")
haka.log = setmetatable(log_root, { __call = function(_, fmt, ...) log_root.info(fmt, ...) end })
function haka.log_section(name) return (mklog(name)) end
function haka.setloglevel(level)
  local l = levels[level]
  if l == nil then error("invalid log level '" .. tostring(level) .. "'", 2) end
  loglevel = l
end
local log = haka.log_section("core")
-- the engine's levels: the default one and { section = level } (names as in `levels`)
function RT.set_log_levels(default, sections)
  if default and levels[default] then loglevel = levels[default] end
  section_level = {}
  for k, v in pairs(sections or {}) do
    if levels[v] then section_level[k] = levels[v] end
  end
end
-- print(): Haka's (the values separated by one space), into the worker's log buffer:
-- printed lines stay in order with the log lines and the alerts (one ordered stdout, as
-- Haka's single thread wrote it)
do
  local tostring, select, concat, find, sub = tostring, select, table.concat, string.find, string.sub
  function print(...)
    local n = select('#', ...)
    local t = {}
    for i = 1, n do
      local s = tostring((select(i, ...)))
      -- Haka printed each value with printf("%s"): the text ends at a NUL byte
      local z = find(s, "\0", 1, true)
      t[i] = z and sub(s, 1, z - 1) or s
    end
    H.print(concat(t, " "))
  end
end

-- time
local time_mt = {}
time_mt.__index = time_mt
-- Haka's form: ctime()'s, in local time ("Mon Nov  4 15:49:27 2013")
time_mt.__tostring = function(t) return (os.date("%a %b %e %H:%M:%S %Y", t.secs)) end
time_mt.__pprint_info = { kind = "userdata", name = "time", tostring = true }
function haka.time(secs)
  secs = tonumber(secs) or 0
  local s = math.floor(secs)
  return (setmetatable({ secs = s, nsecs = math.floor((secs - s) * 1e9), seconds = secs }, time_mt))
end
-- a time from whole seconds and nanoseconds (packet stamps, exact to the ns)
local function time_of(s, ns)
  return (setmetatable({ secs = s, nsecs = ns, seconds = s + ns / 1e9 }, time_mt))
end

-- Timers on the network time (state machine timeouts, engine/lua/state_machine.lua): when n > 0,
-- check(t) runs before the rules of each packet, t its capture time in seconds.
haka._timer = { n = 0, check = function() end }
function haka.current_thread() return worker end
function haka.capture_mode() return READ_ONLY and "passthrough" or "normal" end
function haka.abort() error("haka.abort()", 2) end

-- events
local Event = {}
Event.__index = Event
local all_events = {}
local function new_event(name, continue)
  local e = setmetatable({ name = name, listeners = {}, continue = continue }, Event)
  all_events[name] = e
  return e
end
haka.event = { Event = Event }
local function always() return true end
haka.events = {
  started = new_event("haka:started", always),
  exiting = new_event("haka:exiting", always),
}
local function is_event(e) return getmetatable(e) == Event end

-- rules
-- prefilter = { uri = "x", headers = { ["User-Agent"] = { "a", "b" } }, ... } of an HTTP
-- request or response rule (engine/src/prefilter.rs): the substrings (ASCII
-- case-insensitive) one of which must occur for eval to run. Normalized to a list of
-- { field, header name or false, lowercase pattern }.
local PREFILTER_FIELDS = {
  ["http:request"] = { method = true, uri = true, version = true, headers = true },
  ["http:response"] = { version = true, status = true, reason = true, headers = true },
}
-- "rule 'name' key", for the errors of a rule's key
local function rule_key(name, key)
  return "rule" .. (name and (" '" .. tostring(name) .. "'") or "") .. " " .. key
end
local function bad_header_name(n)
  return type(n) ~= "string" or n == "" or n:find("[%c%s:]") ~= nil
end
local function check_prefilter(on, pf, name)
  local what = rule_key(name, "prefilter")
  local fields = PREFILTER_FIELDS[on.name]
  if not fields then error(what .. ": only for http request and response events", 3) end
  if type(pf) ~= "table" then error(what .. " must be a table", 3) end
  local out = {}
  local function add(field, hname, v)
    local list = type(v) == "table" and v or { v }
    if #list == 0 then error(sfmt("%s: %s: no pattern", what, field), 4) end
    for _, p in ipairs(list) do
      if type(p) == "number" then p = tostring(p) end
      if type(p) ~= "string" or p == "" then
        error(sfmt("%s: %s: patterns must be non-empty strings", what, field), 4)
      end
      out[#out + 1] = { field, hname or false, string.lower(p) }
    end
  end
  for k, v in pairs(pf) do
    if not fields[k] then
      local names = {}
      for f in pairs(fields) do names[#names + 1] = f end
      table.sort(names)
      error(sfmt("%s: unknown field '%s' (%s)", what, tostring(k), table.concat(names, ", ")), 3)
    end
    if k == "headers" then
      if type(v) ~= "table" then error(what .. ": headers must be a table { name = pattern(s) }", 3) end
      for hname, hv in pairs(v) do
        if bad_header_name(hname) then
          error(sfmt("%s: invalid header name '%s'", what, tostring(hname)), 3)
        end
        add("headers", string.lower(hname), hv)
      end
    else
      add(k, nil, v)
    end
  end
  if #out == 0 then error(what .. ": no pattern", 3) end
  return out
end

-- set_headers = { Server = "haka", ["X-Powered-By"] = false } of an HTTP request or
-- response rule: fields the engine sets (false: removes) on each message the rule runs
-- for, before any Lua rule sees it (engine/src/http.rs set_fields). Normalized to a list
-- of { name, value or nil }, in name order. The framing fields are refused: the body
-- would no longer be delimited as the parser reads it.
local FRAMING = { ["content-length"] = true, ["transfer-encoding"] = true }
local function check_set_headers(on, sets, name)
  local what = rule_key(name, "set_headers")
  if not PREFILTER_FIELDS[on.name] then error(what .. ": only for http request and response events", 3) end
  if type(sets) ~= "table" then error(what .. " must be a table { name = value or false }", 3) end
  local out = {}
  for k, v in pairs(sets) do
    if bad_header_name(k) then
      error(sfmt("%s: invalid header name '%s'", what, tostring(k)), 3)
    end
    if FRAMING[string.lower(k)] then error(sfmt("%s: '%s' cannot be set (it frames the body)", what, k), 3) end
    if type(v) == "number" then v = tostring(v) end
    if v ~= false and type(v) ~= "string" then
      error(sfmt("%s: value of '%s' must be a string, or false to remove the field", what, k), 3)
    end
    if v and v:find("[\r\n]") then error(sfmt("%s: value of '%s' contains CR or LF", what, k), 3) end
    out[#out + 1] = { k, v or nil }
  end
  if #out == 0 then error(what .. ": no field", 3) end
  table.sort(out, function(a, b) return a[1] < b[1] end)
  return out
end

-- Faulty rules contained ([rules] disable_after_errors / disable_after_timeouts within
-- disable_window seconds) and per-rule alert rate limits (haka.rule{ alert_rate = { count,
-- seconds } }, default [rules] alert_rate): each rule's eval runs through a guard that
-- records it as the running rule (RT.running.rule) for the time of the call, so that an
-- error caught further out (RT.run, or the engine for connection and application events:
-- RT.blame) and an alert (haka.alert) know their rule. A disabled rule's guard returns at
-- once. No pcall per call: an error leaves RT.running.rule set to the failing rule.
RT.running = { rule = false }
RT.rules = {}
RT.n_disabled = 0
RT.GUARD_SRC = [[
local rec, running, eval = ...
return function(a, b, c, d, e)
  if rec.off then return end
  rec.hits = rec.hits + 1
  running.rule = rec
  local ret = eval(a, b, c, d, e)
  running.rule = false
  return ret
end]]
function RT.guard(r, event_name, eval, level)
  local info = debug.getinfo(level + 1, "Sl")
  local src = info and info.source or "?"
  if string.sub(src, 1, 1) == "@" then src = string.sub(src, 2) end
  local where = src .. ":" .. tostring(info and info.currentline or 0)
  local rate = r.alert_rate
  if rate ~= nil and (type(rate) ~= "table" or type(rate[1]) ~= "number" or type(rate[2]) ~= "number"
      or rate[1] < 0 or rate[2] <= 0) then
    error("rule alert_rate must be { count, seconds } (count >= 0, seconds > 0)", level + 1)
  end
  local id = r.id
  if id ~= nil and (type(id) ~= "number" or id % 1 ~= 0 or id < 1 or id > 4294967295) then
    error("rule id must be an integer between 1 and 4294967295", level + 1)
  end
  local rec = {
    name = r.name ~= nil and tostring(r.name) or nil, where = where, event = event_name, hits = 0, id = id,
    total_errors = 0, errors = 0, timeouts = 0, since = 0, off = false,
    rate_count = rate and rate[1] or H.alert_rate_count, rate_seconds = rate and rate[2] or H.alert_rate_seconds,
    window = -1, alerts = 0, suppressed = 0,
  }
  RT.rules[#RT.rules + 1] = rec
  local running = RT.running
  -- A prototype of its own per rule (loadstring each time): the guard's call of the rule
  -- stays monomorphic for LuaJIT's traces. (A rule running inside another one, rare,
  -- clears the running rule when it returns: an error of the outer one is then counted,
  -- not charged to it.)
  local guarded = loadstring(RT.GUARD_SRC, "=rule guard")(rec, running, eval)
  -- (a streamed rule's listener is also called at the end of its stream)
  if RT._streamed.listeners[eval] then RT._streamed.listeners[guarded] = true end
  return guarded
end
-- An error was caught: the running rule (if any) is charged with it, and disabled past
-- the configured counts within the window (logged, counted: rules_disabled).
function RT.blame(err)
  local rec = RT.running.rule
  RT.running.rule = false
  if not rec or rec.off then return RT.n_disabled end
  local now = H.now()
  if now - rec.since > H.rule_disable_window then
    rec.since, rec.errors, rec.timeouts = now, 0, 0
  end
  rec.errors = rec.errors + 1
  rec.total_errors = rec.total_errors + 1
  local timeout = type(err) == "string" and string.find(err, "instruction budget exceeded", 1, true) ~= nil
  if timeout then rec.timeouts = rec.timeouts + 1 end
  local ne, nt = H.rule_disable_errors, H.rule_disable_timeouts
  if (ne > 0 and rec.errors >= ne) or (nt > 0 and rec.timeouts >= nt) then
    rec.off = true
    RT.n_disabled = RT.n_disabled + 1
    log.warning("rule '%s' (%s) disabled: %d %s in %d s, last: %s", rec.name or rec.where, rec.event,
      timeout and rec.timeouts or rec.errors, timeout and "budget overruns" or "errors",
      H.rule_disable_window, tostring(err))
  end
  return RT.n_disabled
end
-- Whether an alert of rule `rec` at time `t` (s; 0: now) goes over its rate (then counted).
function RT.alert_suppressed(rec, t)
  if t == 0 then t = H.now() end
  local w = math.floor(t / rec.rate_seconds)
  if w ~= rec.window then rec.window, rec.alerts = w, 0 end
  rec.alerts = rec.alerts + 1
  if rec.alerts <= rec.rate_count then return false end
  rec.suppressed = rec.suppressed + 1
  B.suppressed = B.suppressed + 1
  return true
end

-- Streamed rules (`options = { streamed = true }`, Haka's streamed events: tcp_connection
-- receive_data, http request_data / response_data / receive_data): the rule runs as a
-- coroutine over a stream of the data (one per object, event and direction: a connection's
-- direction, an HTTP message's body), resumed as data arrives; its iterators block until
-- more data or the end of the stream. RT._streamed.make wraps such a rule into a listener
-- called (obj, data, dir) with each piece of data, and with data nil at the end of the
-- stream (RT._streamed.finish). The stream holds a copy of the data, except for a TCP
-- stream's receive_data when it is writable: RT._streamed.ext is then the segment's external
-- view, pushed without copy, and what the rules change in the bytes of THIS segment becomes
-- stream edits once they have run (RT.conn_data); changes to earlier data (already sent) are
-- lost (see README).
RT._streamed = {
  events = { ["tcp_connection:receive_data"] = true, ["http:request_data"] = true,
    ["http:response_data"] = true, ["http:receive_data"] = true },
  listeners = setmetatable({}, { __mode = "k" }),
}
-- Lua dissectors (engine/lua/dissector.lua fills the handlers): the classes registered by
-- kind, the packet dissectors attached to native ones, the one a next_dissector policy of a
-- native dissector selected for the current packet (psel), and Lua protocol errors (counted
-- in B.proto_errors for the engine's stats).
RT.LD = { tcp = 0, udp = 0, packet = 0, attached = {}, psel = nil }
haka._lua_dissectors = RT.LD
function RT.LD.registered(cls, kind)
  if kind == 'tcp' or kind == 'udp' or kind == 'packet' then RT.LD[kind] = RT.LD[kind] + 1 end
end
function RT.LD.count_protocol_error() B.proto_errors = B.proto_errors + 1 end
function RT.LD.current_ext() return RT._streamed.ext end
function RT.LD.attach(cls, parent, sel, payload)
  local ok = { packet = true, ipv4 = true, ipv6 = true, tcp = true, udp = true }
  if not ok[parent] then error("attach: unknown parent dissector '" .. tostring(parent) .. "'", 3) end
  local a = RT.LD.attached
  a[#a + 1] = { cls = cls, parent = parent, sel = sel, payload = payload }
end
function RT._streamed.make(on, g)
  local VB = H.vbuffer
  local w
  w = function(obj, data, dir)
    local key = dir and (on.name .. dir) or on.name
    local cs = rawget(obj, "_costreams")
    if not cs then cs = {}; rawset(obj, "_costreams", cs) end
    local c = cs[key]
    if not c then
      local st = VB.stream()
      c = { s = st, cm = VB.comanager.new(st) }
      cs[key] = c
    end
    if data ~= nil and c.last ~= data and not c.idle then
      c.last = data
      local str = data:asstring()
      -- the data held for the object's streamed rules, against [rules] streamed_hold_kb
      local held = (rawget(obj, "_coheld") or 0) + #str
      rawset(obj, "_coheld", held)
      if held > H.streamed_hold_bytes then
        RT._streamed.over_cap(obj)
        if H.streamed_over_cap_drop then c.idle = true; return end
        for _, o in pairs(cs) do o.capped = true end -- every stream of the object ends here
      else
        c.bytes = (c.bytes or 0) + #str
        local ext = RT._streamed.ext
        if ext and ext.data == data then
          local region
          c.cur, region = VB.stream_push_view(c.s, ext.buf)
          ext.regions[#ext.regions + 1] = region
        else
          c.cur = c.s:push(VB.from(str))
        end
      end
    end
    if c.capped then data = nil end
    if data ~= nil then
      if c.idle then return end -- (no coroutine left to read it: not kept)
    elseif not c.done then
      c.done = true
      c.s:finish()
      c.cur = nil
    end
    if not c.cm:has(w) then c.cm:start(w, function(iter) return g(obj, iter, dir) end) end
    c.cm:process(w, c.cur)
    if not c.cm:has_pending() then c.idle = true end
  end
  RT._streamed.listeners[w] = true
  return w
end
-- The end of the stream of `on` for `obj` (and `dir`): its streamed rules run to their end;
-- the next data starts a new stream.
function RT._streamed.finish(on, obj, dir)
  local cont = on.continue
  for _, l in ipairs(on.listeners) do
    if RT._streamed.listeners[l] then
      l(obj, nil, dir)
      if not cont(obj) then break end
    end
  end
  local cs = rawget(obj, "_costreams")
  local key = dir and (on.name .. dir) or on.name
  local c = cs and cs[key]
  if c then
    cs[key] = nil
    -- (its bytes are no longer held)
    rawset(obj, "_coheld", (rawget(obj, "_coheld") or 0) - (c.bytes or 0))
  end
end

-- rules and policies the rules file registered (Haka: "no registered rule" when none)
local n_registered = 0

-- Per-rule counters (hakactl rules, /metrics): hits and errors of each rule's guard
-- (RT.guard), plain Lua numbers in this worker's state. An error is counted when it is
-- caught (RT.blame). { { name, where, event, hits, errors }, ... } in registration order.
function RT.rule_stats()
  local out = {}
  for i, rec in ipairs(RT.rules) do
    out[i] = { rec.name or "", rec.where, rec.event or "", rec.hits, rec.total_errors }
  end
  return out
end
function haka.rule(r)
  if type(r) ~= "table" then error("rule parameter must be a table", 2) end
  local on = r.on
  if r.hook ~= nil then
    log.warning("rule%s: 'hook' is deprecated, use 'on'", r.name and (" '" .. r.name .. "'") or "")
    on = on or r.hook
  end
  if not is_event(on) then error("rule on must be an event", 2) end
  local sets = r.set_headers ~= nil and check_set_headers(on, r.set_headers, r.name) or nil
  if type(r.eval) ~= "function" and not (sets and r.eval == nil) then error("rule eval must be a function", 2) end
  local pf = r.prefilter ~= nil and check_prefilter(on, r.prefilter, r.name) or nil
  local eval = r.eval
  -- (a Lua dissector's streamed event wraps its listeners: engine/lua/dissector.lua)
  if eval and on.wrap then eval = on.wrap(eval, r.options) end
  if eval and type(r.options) == "table" and r.options.streamed and RT._streamed.events[on.name] then
    eval = RT._streamed.make(on, eval)
    on.streamed = true
  end
  table.insert(on.listeners, eval and RT.guard(r, on.name, eval, 2) or function() end)
  n_registered = n_registered + 1
  local j = #on.listeners
  if pf then
    on.prefilters = on.prefilters or {}
    on.prefilters[j] = pf
  end
  if sets then
    on.set_headers = on.set_headers or {}
    on.set_headers[j] = { sets = sets, engine_only = r.eval == nil }
    on.n_set_headers = (on.n_set_headers or 0) + #sets
    if on.n_set_headers > 64 then error("rule set_headers: more than 64 fields set on one event", 2) end
  end
end

local RuleGroup = {}
RuleGroup.__index = RuleGroup
function RuleGroup:rule(r)
  local f = r
  if type(r) == "table" then f = r.eval end
  if type(f) ~= "function" then error("rule eval must be a function", 2) end
  local name = type(r) == "table" and r.name or nil
  if self.name and name == nil then name = tostring(self.name) .. "#" .. tostring(#self.rules + 1) end
  table.insert(self.rules, RT.guard({ name = name }, self.event and self.event.name, f, 2))
  n_registered = n_registered + 1
end
function haka.rule_group(args)
  if type(args) ~= "table" then error("rule_group parameter must be a table", 2) end
  local on = args.on
  if args.hook ~= nil then
    log.warning("rule_group%s: 'hook' is deprecated, use 'on'", args.name and (" '" .. args.name .. "'") or "")
    on = on or args.hook
  end
  if not is_event(on) then error("rule_group on must be an event", 2) end
  local g = setmetatable({ name = args.name, rules = {}, init = args.init, continue = args.continue,
    final = args.final or args.fini, event = on }, RuleGroup)
  local cont = on.continue
  table.insert(on.listeners, function(...)
    if g.init then g.init(...) end
    for _, rule in ipairs(g.rules) do
      local ret = rule(...)
      if not cont(...) then return end
      if g.continue and not g.continue(ret, ...) then return end
    end
    if g.final then g.final(...) end
  end)
  return g
end

---------------------------------------------------------------------------
-- policies (src/haka/lua/policy.lua semantics: last eligible policy wins)
---------------------------------------------------------------------------
local Policy = {}
Policy.__index = Policy
local all_policies = {}
local policy = {}
local function new_policy(name)
  local p = setmetatable({ name = name, policies = {} }, Policy)
  table.insert(all_policies, p)
  return p
end
function Policy:insert(name, criteria, actions)
  local lin = {}
  for k, v in pairs(criteria) do table.insert(lin, { name = k, value = v }) end
  table.insert(self.policies, { name = name, criteria = lin, actions = actions })
end
local crit_mt = { __call = function(self, v) return (self.check(v)) end }
local function criterion(check) return (setmetatable({ check = check }, crit_mt)) end
-- haka.policy.learn(haka.policy.set | haka.policy.range): a criterion that starts empty and,
-- while haka.policy.learning is true, matches any value and grows with the values of the
-- policies that are eligible; otherwise it matches the values learnt (set: the same value,
-- range: between the least and the greatest).
local learn_mt = { __call = function(self, v) return (self.check(v)) end }
function Policy:apply(p)
  local values = p.values
  local qualified
  local pols = self.policies
  for k = 1, #pols do
    local pol = pols[k]
    local eligible = true
    local crit = pol.criteria
    local learnt -- learning mode: { criterion, value, ... } learnt if the policy is eligible
    for c = 1, #crit do
      local cv = crit[c].value
      local v = values[crit[c].name]
      local mt = getmetatable(cv)
      if mt == crit_mt then
        if not cv.check(v) then eligible = false; break end
      elseif mt == learn_mt then
        if policy.learning then
          if v == nil then eligible = false; break end
          learnt = learnt or {}
          learnt[#learnt + 1] = cv; learnt[#learnt + 1] = v
        elseif not cv.check(v) then
          eligible = false; break
        end
      elseif v ~= cv then
        eligible = false; break
      end
    end
    if eligible then
      qualified = pol
      if learnt then
        for c = 1, #learnt, 2 do learnt[c].learn(learnt[c + 1]) end
      end
    end
  end
  if qualified then
    local desc = p.desc or {}
    for _, a in ipairs(qualified.actions) do a(self, p.ctx, values, desc) end
  end
end
function policy.set(list)
  local set = {}
  for _, m in pairs(list) do set[m] = true end
  return (criterion(function(v) return set[v] == true end))
end
function policy.range(min, max)
  if not (min <= max) then error("invalid bounds", 2) end
  return (criterion(function(v) return v ~= nil and v >= min and v <= max end))
end
function policy.outofrange(min, max)
  if not (min <= max) then error("invalid bounds", 2) end
  return (criterion(function(v) return v ~= nil and (v < min or v > max) end))
end
function policy.learn(kind)
  local c = setmetatable({}, learn_mt)
  if kind == policy.set then
    local set = {}
    c.check = function(v) return v ~= nil and set[v] == true end
    c.learn = function(v) set[v] = true end
  elseif kind == policy.range then
    local min, max
    c.check = function(v) return v ~= nil and min ~= nil and v >= min and v <= max end
    c.learn = function(v)
      if min == nil then min, max = v, v
      elseif v < min then min = v
      elseif v > max then max = v end
    end
  else
    local what = "this"
    for k, f in pairs(policy) do if f == kind then what = "haka.policy." .. k; break end end
    error(sfmt("cannot learn on %s criterion", what), 2)
  end
  return c
end
policy.learning = false
function policy.present() return (criterion(function(v) return v ~= nil end)) end
function policy.absent() return (criterion(function(v) return v == nil end)) end
function policy.new(name) return (new_policy(name)) end
function policy.drop(pol, ctx, values, desc) ctx:drop() end
function policy.accept(pol, ctx, values, desc) end
function policy.alert(a)
  return function(pol, ctx, values, desc)
    local al = {}
    for k, v in pairs(a or {}) do al[k] = v end
    for k, v in pairs(desc) do if al[k] == nil then al[k] = v end end
    if not al.description then al.description = pol.name end
    haka.alert(al)
  end
end
function policy.log(section, level, message, ...)
  local args = { ... }
  local n = select('#', ...)
  if type(section) == "string" then
    -- policy.log(level?, fmt, ...) convenience: haka.policy.log("fmt", ...) logs at info
    local fmt = section
    local rest = { level, message, ... }
    return function() haka.log.info(fmt, unpack(rest, 1, n + 2)) end
  end
  return function() section[level](message, unpack(args, 1, n)) end
end
setmetatable(policy, { __call = function(_, p)
  if type(p) ~= "table" then error("policy parameter must be a table", 2) end
  if getmetatable(p.on) ~= Policy then error("policy on must be a Policy", 2) end
  local actions = p.action
  if type(actions) == "function" then
    actions = { actions }
  elseif type(actions) == "table" then
    for _, f in ipairs(actions) do
      if type(f) ~= "function" then error("policy action must be a function or a list of functions", 2) end
    end
  else
    error("policy action must be a function or a list of functions", 2)
  end
  local on, name = p.on, p.name
  local crit = {}
  for k, v in pairs(p) do if k ~= "on" and k ~= "name" and k ~= "action" then crit[k] = v end end
  on:insert(name, crit, actions)
  n_registered = n_registered + 1
end })
haka.policy = policy

---------------------------------------------------------------------------
-- alerts
---------------------------------------------------------------------------
local alert_node_mt = {}
local function alert_node(kind, ...)
  local l = {}
  for i = 1, select('#', ...) do l[#l + 1] = tostring((select(i, ...))) end
  return (setmetatable({ type = kind, list = l }, alert_node_mt))
end
local function render_nodes(v)
  if v == nil then return nil end
  local out = {}
  local function one(n)
    if getmetatable(n) == alert_node_mt then
      out[#out + 1] = n.type .. ": " .. table.concat(n.list, ", ")
    else
      out[#out + 1] = tostring(n)
    end
  end
  if getmetatable(v) == alert_node_mt or type(v) ~= "table" then one(v) else for _, n in ipairs(v) do one(n) end end
  return out
end
local function tsecs(t)
  if t == nil then return nil end
  if type(t) == "number" then return t end
  if type(t) == "table" and t.seconds then return t.seconds end
  return (tonumber(t))
end
local function flatten_alert(a)
  local f = {}
  f.start_time = tsecs(a.start_time)
  f.end_time = tsecs(a.end_time)
  if a.description ~= nil then f.description = tostring(a.description) end
  if a.severity ~= nil then f.severity = tostring(a.severity) end
  if a.confidence ~= nil then f.confidence = tostring(a.confidence) end
  if a.completion ~= nil then f.completion = tostring(a.completion) end
  if type(a.method) == "table" then
    if a.method.description ~= nil then f.method_description = tostring(a.method.description) end
    local r = a.method.ref
    if r ~= nil then
      local l = {}
      if type(r) == "table" then for _, x in ipairs(r) do l[#l + 1] = tostring(x) end else l[1] = tostring(r) end
      f.method_ref = l
    end
  end
  f.sources = render_nodes(a.sources)
  f.targets = render_nodes(a.targets)
  if a.ref ~= nil then
    local l = {}
    local r = a.ref
    if type(r) ~= "table" or r.id then r = { r } end
    for _, x in ipairs(r) do
      if type(x) == "table" and x.id then l[#l + 1] = x.id else l[#l + 1] = tonumber(x) end
    end
    f.refs = l
  end
  return f
end
local Alert = {}
Alert.__index = Alert
local in_burst = false
local function cur_pkt() if in_burst then return B.cur else return -1 end end
-- the current packet's time (the capture's offline), else the latest packet's
function haka.network_time()
  if in_burst then
    local s = S[B.cur]
    if s.ts_sec > 0 then return (time_of(s.ts_sec, s.ts_nsec)) end
  end
  return (haka.time(H.now()))
end
function Alert:update(a)
  if type(a) ~= "table" then error("alert update parameter must be a table", 2) end
  local f = flatten_alert(a)
  f.id = self.id
  f.update = true
  f.pkt = cur_pkt()
  RT.alert_meta(f)
  H.alert(f)
end
local alert = {}
-- (what haka.alert returns for a suppressed alert: updating it does nothing)
RT.suppressed_alert = setmetatable({ id = 0, update = function() end }, Alert)
setmetatable(alert, { __call = function(_, a)
  if type(a) ~= "table" then error("alert parameter must be a table", 2) end
  local rule = RT.running.rule
  if rule and rule.rate_count > 0 and RT.alert_suppressed(rule, in_burst and S[B.cur].ts_sec or 0) then
    return RT.suppressed_alert
  end
  local f = flatten_alert(a)
  f.pkt = cur_pkt()
  RT.alert_meta(f)
  local id = H.alert(f)
  return (setmetatable({ id = id }, Alert))
end })
function alert.address(...) return (alert_node("address", ...)) end
function alert.service(...) return (alert_node("service", ...)) end
haka.alert = alert

---------------------------------------------------------------------------
-- buffers (payload views)
---------------------------------------------------------------------------
local buf_ct = ffi.typeof("hk_buf")
local buf_m = {}
function buf_m.sub(self, off, len)
  off = off or 0
  if off < 0 or off > self.len then error("sub: offset out of range", 2) end
  local rest = self.len - off
  if len == nil or len < 0 or len > rest then len = rest end
  return (buf_ct(self.p + off, len, self.s))
end
function buf_m.asstring(self) return (ffi.string(self.p, self.len)) end
buf_m.tostring = buf_m.asstring
function buf_m.setstring(self, str)
  writable(self.s)
  str = tostring(str)
  if #str > self.len then error("setstring: the packet cannot grow (" .. #str .. " > " .. self.len .. ")", 2) end
  ffi.copy(self.p, str, #str)
  touch(self.s)
end
buf_m.setfixedstring = buf_m.setstring
function buf_m.size(self) return self.len end
-- Haka prints a payload as `userdata vbuffer { modified : BOOL }`: here, whether a rule
-- modified the packet
buf_m.__pprint_info = { kind = "userdata", name = "vbuffer", fields = function(b, add)
  add("modified", b.s.modified ~= 0)
end }
-- __index of a byte view (p, len): v[i] reads byte i (1-based), other keys are methods.
local function byte_view_index(methods)
  return function(self, k)
    if type(k) == "number" then
      if k >= 1 and k <= self.len then return self.p[k - 1] end
      return nil
    end
    return methods[k]
  end
end
local function view_len(self) return self.len end
ffi.metatype("hk_buf", {
  __len = view_len,
  __index = byte_view_index(buf_m),
  __newindex = function(self, k, v)
    if type(k) ~= "number" or k < 1 or k > self.len then error("buffer index out of range", 2) end
    writable(self.s)
    self.p[k - 1] = num(v, "buffer byte")
    touch(self.s)
  end,
  __tostring = function(self) return (ffi.string(self.p, self.len)) end,
})

---------------------------------------------------------------------------
-- packet payloads: Haka vbuffers, external views over the packet's bytes (no copy),
-- created on first read of `payload` (one per packet and view kind, kept for the burst).
-- At the end of the burst (RT.run) or of a stateful call (end_call), PLD.finish() ends
-- each view: in-place writes mark the packet modified (checksums recomputed by Rust); a
-- buffer whose chunks are no longer its original bytes in order (erase, insert, replace)
-- becomes a REWRITE { slot, offset of the payload in the frame, its old length, new
-- bytes } that Rust applies to the frame (engine/src/lua/mod.rs `rewrite_payload`: mbuf
-- resized, IP/UDP lengths and checksums fixed). Then external_end(tok, 'copy'): a rule
-- that kept the buffer reads a copy, never the freed mbuf.
---------------------------------------------------------------------------
local VBM = H.vbuffer
-- (one table for this section's state and functions: the main chunk is near LuaJIT's
-- limit of 200 locals)
local PLD = { n = 0, rewrites = {} }
do
local vb_external, vb_external_end, vb_inplace, vb_modified = VBM.external, VBM.external_end, VBM.inplace, VBM.modified
local PAY = {}
-- kinds: 0 frame, 1 ethernet payload, 2 IP payload, 3 L4 payload. A write into an IP
-- payload leaves the L4 checksum as the bytes say (bit 4, Haka: only the dissector whose
-- payload changed recomputes its checksum), unless something else modified the packet.
function PLD.touch(s, kind)
  if kind == 2 and band(s.modified, MOD) == 0 then touch(s, MOD + 4) else touch(s) end
end
function PLD.buf(s, kind, p, n)
  -- a new packet's payload is the forging view (it grows: payload:append)
  if band(s.flags, F_FORGED) ~= 0 then return (buf_ct(p, n, s)) end
  for i = 1, PLD.n do
    local r = PAY[i]
    if r.s == s and r.kind == kind then return r.buf end
  end
  local buf, tok = vb_external(p, n, true)
  PLD.n = PLD.n + 1
  PAY[PLD.n] = { s = s, kind = kind, buf = buf, tok = tok, p = p, n = n }
  return buf
end
function PLD.finish()
  local REWRITES = PLD.rewrites
  for i = 1, PLD.n do
    local r = PAY[i]
    PAY[i] = nil
    local s = r.s
    local ok, inplace = pcall(vb_inplace, r.buf, r.p, r.n)
    if ok and inplace then
      if vb_modified(r.buf) then PLD.touch(s, r.kind) end
    elseif ok then
      PLD.touch(s, r.kind)
      local str = r.buf:asstring()
      if #str == r.n then
        ffi.copy(r.p, str, r.n) -- same size (e.g. setstring): written in place
      else
        REWRITES[#REWRITES + 1] = { tonumber(s - S0), tonumber(r.p - s.data), r.n, str, s.modified }
        B.rewrites = #REWRITES
      end
    end
    vb_external_end(r.tok, "copy")
  end
  PLD.n = 0
end
-- views of an aborted run (their memory may be gone): ended without reading it
function PLD.drop()
  for i = 1, PLD.n do
    vb_external_end(PAY[i].tok, "drop")
    PAY[i] = nil
  end
  PLD.n = 0
end
end

---------------------------------------------------------------------------
-- ipv4 addresses / networks
---------------------------------------------------------------------------
local addr_ct = ffi.typeof("hk_ipv4_addr")
local addr_pp = { kind = "userdata", name = "addr", tostring = true }
local net_ct = ffi.typeof("hk_ipv4_network")
local function parse_ipv4(str)
  local a, b, c, d = string.match(str, "^%s*(%d+)%.(%d+)%.(%d+)%.(%d+)%s*$")
  a, b, c, d = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
  if not a or a > 255 or b > 255 or c > 255 or d > 255 then return nil end
  return a * 16777216 + b * 65536 + c * 256 + d
end
local function ipv4_addr(a, b, c, d)
  if type(a) == "string" then
    local v = parse_ipv4(a)
    if not v then error("invalid IPv4 address format", 0) end
    return (addr_ct(v))
  elseif type(a) == "number" and b ~= nil then
    b, c, d = tonumber(b), tonumber(c), tonumber(d)
    if not (b and c and d) then error("invalid IPv4 address format", 0) end
    if a < 0 or b < 0 or c < 0 or d < 0 then error("number must not be negative", 0) end
    if a > 255 or b > 255 or c > 255 or d > 255 then error("invalid IPv4 address format", 0) end
    return (addr_ct(((a * 256 + b) * 256 + c) * 256 + d))
  elseif type(a) == "number" then
    return (addr_ct(a % 4294967296))
  elseif ffi.istype(addr_ct, a) then
    return (addr_ct(a.a))
  end
  error("invalid IPv4 address", 2)
end
local function addr_str(v)
  return (sfmt("%d.%d.%d.%d", math.floor(v / 16777216) % 256, math.floor(v / 65536) % 256, math.floor(v / 256) % 256, v % 256))
end
local function as_addr(x)
  if ffi.istype(addr_ct, x) then return x.a end
  if type(x) == "string" then
    local v = parse_ipv4(x)
    if v then return v end
  end
  return nil
end
ffi.metatype("hk_ipv4_addr", {
  __eq = function(x, y) local a, b = as_addr(x), as_addr(y); return a ~= nil and a == b end,
  __lt = function(x, y) return as_addr(x) < as_addr(y) end,
  __le = function(x, y) return as_addr(x) <= as_addr(y) end,
  __tostring = function(x) return (addr_str(x.a)) end,
  __concat = function(x, y) return tostring(x) .. tostring(y) end,
  __index = function(x, k)
    if k == "packed" then return x.a end
    if k == "__pprint_info" then return addr_pp end
    return nil
  end,
})
local function mask_of(bits) if bits == 0 then return 0 end return (4294967296 - 2 ^ (32 - bits)) end
local function ipv4_network(a, m)
  local base, bits
  if type(a) == "string" and m == nil then
    local s, b = string.match(a, "^%s*([%d%.]+)/(%d+)%s*$")
    bits = tonumber(b)
    base = s and parse_ipv4(s)
    if not base or not bits or bits > 32 then error("invalid IPv4 network format '" .. a .. "'", 2) end
  else
    base = as_addr(a) or (type(a) == "number" and a)
    bits = tonumber(m)
    if not base or not bits or bits < 0 or bits > 32 then error("invalid IPv4 network", 2) end
  end
  -- kept as given, host bits too (Haka prints ipv4.network(10.0.0.1, 8) as 10.0.0.1/8)
  return (net_ct(base % 4294967296, mask_of(bits), bits))
end
local net_m = {}
net_m.__pprint_info = { kind = "userdata", name = "network", tostring = true }
function net_m.contains(self, a)
  local v = as_addr(a)
  if v == nil then return false end
  return band(v, self._mask) == band(self._net, self._mask)
end
ffi.metatype("hk_ipv4_network", {
  __index = function(self, k)
    if k == "net" then return (addr_ct(self._net)) end
    if k == "mask" then return self._bits end
    return net_m[k]
  end,
  __tostring = function(self) return addr_str(self._net) .. "/" .. self._bits end,
  __eq = function(x, y) return ffi.istype(net_ct, x) and ffi.istype(net_ct, y) and x._net == y._net and x._bits == y._bits end,
})

-- ipv6 addresses
local a6_ct = ffi.typeof("hk_ipv6_addr")
local function ipv6_addr(x)
  if ffi.istype(a6_ct, x) then return x end
  if type(x) == "string" then
    local raw = H.ipv6_parse(x)
    if raw == nil then error("invalid IPv6 address format '" .. x .. "'", 2) end
    local a = a6_ct()
    ffi.copy(a.b, raw, 16)
    return a
  end
  error("invalid IPv6 address", 2)
end
local function a6_eq(x, y)
  if type(x) == "string" then x = H.ipv6_parse(x); if not x then return false end; x = ipv6_addr(x) end
  if type(y) == "string" then local r = H.ipv6_parse(y); if not r then return false end; y = a6_ct(); ffi.copy(y.b, r, 16) end
  if not ffi.istype(a6_ct, x) or not ffi.istype(a6_ct, y) then return false end
  return ffi.C.memcmp(x.b, y.b, 16) == 0
end
ffi.metatype("hk_ipv6_addr", {
  __index = { __pprint_info = addr_pp },
  __eq = a6_eq,
  __tostring = function(x) return (H.ipv6_fmt(ffi.string(x.b, 16))) end,
  __concat = function(x, y) return tostring(x) .. tostring(y) end,
})

-- the data after the link header of a packet view (the IP packet): a Lua packet dissector
-- attached to the packet parses it (engine/lua/dissector.lua)
function RT.LD.l3_payload(v)
  local s = v.s
  return (PLD.buf(s, 1, s.data + s.l3_off, s.len - s.l3_off))
end

---------------------------------------------------------------------------
-- dissector views
---------------------------------------------------------------------------
haka.dissectors = {}
local function new_dissector(name)
  local d = { name = name, events = {}, policies = {} }
  local cont = function(v) return v.s.verdict == 0 end
  d.events.receive_packet = new_event(name .. ":receive_packet", cont)
  d.events.send_packet = new_event(name .. ":send_packet", cont)
  d.events.protocol_error = new_event(name .. ":protocol_error", cont)
  d.policies.next_dissector = new_policy(name .. ":next_dissector")
  d.policies.next_dissector.name = "next_dissector"
  haka.dissectors[name] = d
  return d
end
for _, n in ipairs({ "packet", "ethernet", "ipv4", "ipv6", "tcp", "udp", "icmp" }) do new_dissector(n) end
-- the datagram the upper dissectors see (Haka's ipv4 module; fragments reassembled)
for _, n in ipairs({ "ipv4", "ipv6" }) do
  local d = haka.dissectors[n]
  d.events.receive_packet_reassembled = new_event(n .. ":receive_packet_reassembled", function(v) return v.s.verdict == 0 end)
end
haka.dissector = { opposite_direction = function(d) if d == "up" then return "down" end return "up" end }
-- ([rules] lua_protocol_error and streamed_hold_kb, for engine/lua/dissector.lua)
haka.dissector.protocol_error_drop = H.lua_protocol_error_drop ~= false
haka.dissector.hold_bytes = H.streamed_hold_bytes
haka.dissector.in_place_parsing = H.lua_in_place_parsing ~= false
-- haka.dissector.pcall(dissector, f) (Haka): f() protected; on an error, logs it (section
-- lua, "NAME: message") and returns dissector:error() (which drops it); else f's first result.
local log_lua = haka.log_section("lua")
function haka.dissector.pcall(self, f)
  local ok, r = xpcall(f, debug.format_error)
  if not ok and r ~= nil then
    log_lua.error("%s: %s", tostring(self.name), tostring(r))
    return self:error()
  end
  return r
end

-- forging (set below): out(s, mode) queues a forged packet (mode 1 inject, 2 send)
local forge = {}
local function common_methods(m)
  function m.drop(self) self.s.verdict = 1 end
  function m.error(self) self.s.verdict = 1 end -- Haka's Dissector:error(): drop
  -- a received packet is sent by the engine after the rules: nothing to do here; a packet
  -- the rules made (packet.create) leaves after the packet being processed
  function m.send(self)
    local s = self.s
    if band(s.flags, F_FORGED) ~= 0 then forge.out(s, 2) end
  end
  function m.inject(self)
    local s = self.s
    if band(s.flags, F_FORGED) == 0 then error("inject: only a new packet (packet.create) can be injected", 2) end
    forge.out(s, 1)
  end
  function m.state(self) return "normal" end
  function m.can_continue(self) return self.s.verdict == 0 end
  function m.select_next_dissector(self, d) RT.LD.psel = d end
  return m
end
-- Builds an ffi view metatype: base(s) returns the header pointer.
local function packet_time(s)
  if s.ts_sec == 0 then return (haka.time(H.now())) end
  return (time_of(s.ts_sec, s.ts_nsec))
end
-- debug.pprint prints a view as Haka printed its swig objects: `userdata NAME { ... }`, the
-- fields sorted by name; our additions that Haka's object did not have are left out
-- (every view reads its packet's timestamp and tcp/udp their ip's src and dst, as Haka's
-- did through their parents, but Haka printed them on the packet only). ipv4's
-- dont_reassemble is Haka's own field: printed.
local PP_ADDED = { packet = { direction = true }, tcp = { ip = true, src = true, dst = true, timestamp = true },
  udp = { ip = true, src = true, dst = true, timestamp = true }, icmp = { ip = true, timestamp = true },
  ipv4 = { timestamp = true }, ipv6 = { timestamp = true }, ethernet = { timestamp = true } }
-- Dissector parents (Haka 0.4: Dissector:parent([n | name]), the `_parent` and
-- `_next_dissector` fields): the views of the packet's own slot, V[name][slot index], so
-- that the same parent is the same object (`==`). ipv4/ipv6 sit on the packet as in Haka.
local V -- the per-slot views (burst dispatcher, below)
local S0 = ffi.cast("hk_slot*", S)
local VIEW_CT = {} -- name -> ctype, for a slot outside the burst array
local PARENT = { ethernet = "packet", ipv4 = "packet", ipv6 = "packet", tcp = "ip", udp = "ip", icmp = "ip" }
local function view_for(name, s)
  local i = tonumber(s - S0)
  if V and i >= 0 and i < MAX_BURST then return V[name][i] end
  return (VIEW_CT[name](s))
end
local function parent_name(name, s)
  local p = PARENT[name]
  if p == "ip" then p = s.l3 == 4 and "ipv4" or "ipv6" end
  return p
end
local L4_NAME = { [6] = "tcp", [17] = "udp", [1] = "icmp", [58] = "icmp" }
local function next_name(name, s)
  if name == "packet" or name == "ethernet" then
    if s.l3 == 4 then return "ipv4" elseif s.l3 == 6 then return "ipv6" end
  elseif (name == "ipv4" or name == "ipv6") and s.has_l4 == 1 then
    return L4_NAME[s.proto]
  end
  return nil
end
local function make_view(ctype, get, set, methods, base, name, flagset, parent)
  flagset = flagset or {}
  VIEW_CT[name] = ffi.typeof(ctype)
  get._parent = function(s)
    local p = parent_name(name, s)
    if p then return (view_for(p, s)) end
    return nil
  end
  get._next_dissector = function(s)
    local n = next_name(name, s)
    if n then return (view_for(n, s)) end
    return nil
  end
  -- parent() / parent(n): n levels up (nil above the packet); parent("name"): the nearest
  -- parent of that name, or nil
  function methods.parent(self, which)
    local s = self.s
    local p = name
    if which == nil then which = 1 end
    if type(which) == "number" then
      for _ = 1, which do
        p = parent_name(p, s)
        if p == nil then return nil end
      end
      return (view_for(p, s))
    end
    repeat
      p = parent_name(p, s)
      if p == which then return (view_for(p, s)) end
    until p == nil
    return nil
  end
  -- every dissector reads its packet's time (Haka: through its parents)
  if get.timestamp == nil then get.timestamp = packet_time end
  local keys, added = {}, PP_ADDED[name] or {}
  for _, k in ipairs(pp_sorted_keys(get)) do
    if not added[k] then keys[#keys + 1] = k end
  end
  methods.__pprint_info = pp_userdata(name, keys)
  ffi.metatype(ctype, {
    __index = function(self, k)
      local g = get[k]
      if g then local s = self.s; return (g(s, base(s))) end
      local f = methods[k]
      if f == nil then
        -- Haka 0.4: a dissector reads its parent's fields (tcp.ttl is its ip's)
        if parent and type(k) == "string" then return parent(self.s)[k] end
        error(sfmt("%s: unknown field '%s'", name, tostring(k)), 0)
      end
      return f
    end,
    __newindex = function(self, k, v)
      local s = self.s
      local f = set[k]
      if not f then
        local g = flagset[k]
        if g then return g(s, v) end
        error(sfmt("%s: field '%s' is not writable", name, tostring(k)), 2)
      end
      writable(s)
      f(s, base(s), v)
      touch(s)
    end,
    __tostring = function(self) return "<" .. name .. ">" end,
  })
end
local function l3base(s) return s.data + s.l3_off end
local function l4base(s) return s.data + s.l4_off end
local function l2base(s) return s.data end

local packet_view_ct, eth_ct, ipv4_ct, ipv4f_ct = ffi.typeof("hk_packet_view"), ffi.typeof("hk_eth_view"), ffi.typeof("hk_ipv4_view"), ffi.typeof("hk_ipv4_flags")
local ipv6_ct, tcp_ct, tcpf_ct = ffi.typeof("hk_ipv6_view"), ffi.typeof("hk_tcp_view"), ffi.typeof("hk_tcp_flags")
local udp_ct, icmp_ct = ffi.typeof("hk_udp_view"), ffi.typeof("hk_icmp_view")

-- packet (raw frame)
do
  local get, set, m = {}, {}, common_methods({})
  get.payload = function(s) return (PLD.buf(s, 0, s.data, s.len)) end
  -- Haka's packet id: the packet's number (1, 2, ...) in this worker's input
  get.id = function(s) return s.pkt_id end
  -- a table per packet for the rules (Haka's packet.data), made on first use
  get.data = function(s)
    local k = tonumber(ffi.cast("uintptr_t", s))
    local t = PDATA[k]
    if t == nil then t = {}; PDATA[k] = t; PDATA_USED = true end
    return t
  end
  get.name = function() return "packet" end
  get.direction = function(s) return s.dir == 0 and "up" or "down" end
  make_view("hk_packet_view", get, set, m, l2base, "packet")
end

-- ethernet
local function mac_str(b, o) return (sfmt("%02x:%02x:%02x:%02x:%02x:%02x", b[o], b[o + 1], b[o + 2], b[o + 3], b[o + 4], b[o + 5])) end
local function mac_set(b, o, v)
  local t = { string.match(tostring(v), "^(%x%x)[:-](%x%x)[:-](%x%x)[:-](%x%x)[:-](%x%x)[:-](%x%x)$") }
  if #t ~= 6 then error("invalid MAC address '" .. tostring(v) .. "'", 3) end
  for i = 1, 6 do b[o + i - 1] = tonumber(t[i], 16) end
end
do
  local get, set, m = {}, {}, common_methods({})
  get.dst = function(s, b) return (mac_str(b, 0)) end
  get.src = function(s, b) return (mac_str(b, 6)) end
  get.type = function(s) return (be16(s.data, s.l3_off - 2)) end
  get.vlan = function(s) return s.vlan end
  get.name = function() return "ethernet" end
  get.payload = function(s) return (PLD.buf(s, 1, s.data + s.l3_off, s.len - s.l3_off)) end
  set.dst = function(s, b, v) mac_set(b, 0, v) end
  set.src = function(s, b, v) mac_set(b, 6, v) end
  set.type = function(s, b, v) put16(s.data, s.l3_off - 2, num(v, "type")) end
  make_view("hk_eth_view", get, set, m, l2base, "ethernet")
end

-- ipv4
do
  local get, set, m = {}, {}, common_methods({})
  get.version = function(s, b) return (rshift(b[0], 4)) end
  get.hdr_len = function(s, b) return band(b[0], 0x0f) * 4 end
  get.tos = function(s, b) return b[1] end
  get.len = function(s, b) return (be16(b, 2)) end
  get.id = function(s, b) return (be16(b, 4)) end
  get.frag_offset = function(s, b) return band(be16(b, 6), 0x1fff) * 8 end
  get.ttl = function(s, b) return b[8] end
  get.proto = function(s, b) return b[9] end
  get.checksum = function(s, b) return (be16(b, 10)) end
  get.src = function(s, b) return (addr_ct(be32(b, 12))) end
  get.dst = function(s, b) return (addr_ct(be32(b, 16))) end
  get.flags = function(s) return (ipv4f_ct(s)) end
  get.name = function() return "ipv4" end
  -- Haka's flag: do not hold this packet for reassembly (read by the engine after a
  -- fragment's receive_packet rules; packets the rules inject are never reassembled)
  get.dont_reassemble = function(s) return band(s.flags, F_NOREASM) ~= 0 end
  local flagset = {
    dont_reassemble = function(s, v)
      if v then s.flags = bor(s.flags, F_NOREASM) else s.flags = band(s.flags, bnot(F_NOREASM)) end
    end,
  }
  get.payload = function(s, b)
    local hl = band(b[0], 0x0f) * 4
    local n = s.ip_len - hl
    if s.l3_off + s.ip_len > s.len then n = s.len - s.l3_off - hl end
    if n < 0 then n = 0 end
    return (PLD.buf(s, 2, b + hl, n))
  end
  set.version = function(s, b, v) b[0] = bor(band(b[0], 0x0f), lshift(band(num(v, "version"), 0xf), 4)) end
  set.hdr_len = function(s, b, v) b[0] = bor(band(b[0], 0xf0), band(math.floor(num(v, "hdr_len") / 4), 0xf)) end
  set.tos = function(s, b, v) b[1] = num(v, "tos") end
  set.len = function(s, b, v) put16(b, 2, num(v, "len")) end
  set.id = function(s, b, v) put16(b, 4, num(v, "id")) end
  set.frag_offset = function(s, b, v) put16(b, 6, bor(band(be16(b, 6), 0xe000), band(math.floor(num(v, "frag_offset") / 8), 0x1fff))) end
  set.ttl = function(s, b, v) b[8] = num(v, "ttl") end
  set.proto = function(s, b, v) b[9] = num(v, "proto") end
  set.checksum = function(s, b, v) put16(b, 10, num(v, "checksum")); touch(s) end
  set.src = function(s, b, v) local a = as_addr(v) or error("src: IPv4 address expected", 3); put32(b, 12, a) end
  set.dst = function(s, b, v) local a = as_addr(v) or error("dst: IPv4 address expected", 3); put32(b, 16, a) end
  local function hlen(s, b) return (math.min(band(b[0], 0x0f) * 4, s.len - s.l3_off)) end
  function m.verify_checksum(self)
    local s = self.s
    local b = l3base(s)
    return cfinish(csum(b, hlen(s, b))) == 0
  end
  function m.compute_checksum(self)
    local s = self.s
    writable(s)
    local b = l3base(s)
    put16(b, 10, 0)
    put16(b, 10, cfinish(csum(b, hlen(s, b))))
    touch(s)
  end
  make_view("hk_ipv4_view", get, set, m, l3base, "ipv4", flagset)
  local fbits = { rb = 0x8000, df = 0x4000, mf = 0x2000 }
  local ipv4_flags_pp = pp_userdata("ipv4_flags", { "all", "df", "mf", "rb" })
  ffi.metatype("hk_ipv4_flags", {
    __index = function(self, k)
      local b = l3base(self.s)
      local f = be16(b, 6)
      if k == "all" then return (rshift(f, 13)) end
      local m = fbits[k]
      if m then return band(f, m) ~= 0 end
      if k == "__pprint_info" then return ipv4_flags_pp end
      return nil
    end,
    __newindex = function(self, k, v)
      local s = self.s
      writable(s)
      local b = l3base(s)
      local f = be16(b, 6)
      if k == "all" then
        f = bor(band(f, 0x1fff), lshift(band(num(v, "flags.all"), 7), 13))
      else
        local m = fbits[k]
        if not m then error("ipv4.flags: unknown flag '" .. tostring(k) .. "'", 2) end
        if v then f = bor(f, m) else f = band(f, bnot(m)) end
      end
      put16(b, 6, f)
      touch(s)
    end,
  })
end

-- ipv6
do
  local get, set, m = {}, {}, common_methods({})
  get.version = function(s, b) return (rshift(b[0], 4)) end
  get.traffic_class = function(s, b) return (bor(lshift(band(b[0], 0xf), 4), rshift(b[1], 4))) end
  get.flow_label = function(s, b) return band(b[1], 0xf) * 65536 + b[2] * 256 + b[3] end
  get.payload_length = function(s, b) return (be16(b, 4)) end
  get.len = function(s, b) return be16(b, 4) + 40 end
  get.next_header = function(s, b) return b[6] end
  get.proto = function(s) return s.proto end
  get.hop_limit = function(s, b) return b[7] end
  get.src = function(s, b) local a = a6_ct(); ffi.copy(a.b, b + 8, 16); return a end
  get.dst = function(s, b) local a = a6_ct(); ffi.copy(a.b, b + 24, 16); return a end
  get.name = function() return "ipv6" end
  get.payload = function(s, b)
    local n = s.ip_len - 40
    if s.l3_off + s.ip_len > s.len then n = s.len - s.l3_off - 40 end
    if n < 0 then n = 0 end
    return (PLD.buf(s, 2, b + 40, n))
  end
  set.version = function(s, b, v) b[0] = bor(band(b[0], 0x0f), lshift(band(num(v, "version"), 0xf), 4)) end
  set.traffic_class = function(s, b, v)
    v = num(v, "traffic_class")
    b[0] = bor(band(b[0], 0xf0), band(rshift(v, 4), 0xf)); b[1] = bor(band(b[1], 0x0f), lshift(band(v, 0xf), 4))
  end
  set.flow_label = function(s, b, v)
    v = num(v, "flow_label")
    b[1] = bor(band(b[1], 0xf0), band(rshift(v, 16), 0xf)); b[2] = band(rshift(v, 8), 0xff); b[3] = band(v, 0xff)
  end
  set.payload_length = function(s, b, v) put16(b, 4, num(v, "payload_length")) end
  set.next_header = function(s, b, v) b[6] = num(v, "next_header") end
  set.hop_limit = function(s, b, v) b[7] = num(v, "hop_limit") end
  set.src = function(s, b, v) ffi.copy(b + 8, ipv6_addr(v).b, 16) end
  set.dst = function(s, b, v) ffi.copy(b + 24, ipv6_addr(v).b, 16) end
  make_view("hk_ipv6_view", get, set, m, l3base, "ipv6")
end

local function ip_view_of(s)
  if s.l3 == 4 then return (ipv4_ct(s)) end
  return (ipv6_ct(s))
end
-- L4 segment length (from the L4 header to the end of the IP payload)
local function l4len(s)
  local n = s.l3_off + s.ip_len - s.l4_off
  if s.l3_off + s.ip_len > s.len then n = s.len - s.l4_off end
  return n
end
local function pseudo_sum(s, proto, len)
  local b = l3base(s)
  if s.l3 == 4 then
    return (csum(b + 12, 8, proto + len))
  end
  return (csum(b + 8, 32, proto + len))
end
local function l4_payload(s)
  local n = s.payload_len
  if s.payload_off + n > s.len then n = s.len - s.payload_off end
  if n < 0 then n = 0 end
  return (PLD.buf(s, 3, s.data + s.payload_off, n))
end

-- tcp
do
  local get, set, m = {}, {}, common_methods({})
  get.srcport = function(s, b) return (be16(b, 0)) end
  get.dstport = function(s, b) return (be16(b, 2)) end
  get.seq = function(s, b) return (be32(b, 4)) end
  get.ack_seq = function(s, b) return (be32(b, 8)) end
  get.hdr_len = function(s, b) return rshift(b[12], 4) * 4 end
  get.res = function(s, b) return (band(b[12], 0x0f)) end
  get.window_size = function(s, b) return (be16(b, 14)) end
  get.checksum = function(s, b) return (be16(b, 16)) end
  get.urgent_pointer = function(s, b) return (be16(b, 18)) end
  get.flags = function(s) return (tcpf_ct(s)) end
  get.ip = function(s) return (ip_view_of(s)) end
  -- Haka 0.4: a dissector reads its parent's fields (tcp.src is the ip's)
  get.src = function(s) return ip_view_of(s).src end
  get.dst = function(s) return ip_view_of(s).dst end
  get.payload = function(s) return (l4_payload(s)) end
  get.name = function() return "tcp" end
  set.srcport = function(s, b, v) put16(b, 0, num(v, "srcport")) end
  set.dstport = function(s, b, v) put16(b, 2, num(v, "dstport")) end
  set.seq = function(s, b, v) put32(b, 4, num(v, "seq")) end
  set.ack_seq = function(s, b, v) put32(b, 8, num(v, "ack_seq")) end
  set.hdr_len = function(s, b, v) b[12] = bor(band(b[12], 0x0f), lshift(band(math.floor(num(v, "hdr_len") / 4), 0xf), 4)) end
  set.res = function(s, b, v) b[12] = bor(band(b[12], 0xf0), band(num(v, "res"), 0xf)) end
  set.window_size = function(s, b, v) put16(b, 14, num(v, "window_size")) end
  set.checksum = function(s, b, v) put16(b, 16, num(v, "checksum")); touch(s) end
  set.urgent_pointer = function(s, b, v) put16(b, 18, num(v, "urgent_pointer")) end
  function m.verify_checksum(self)
    local s = self.s
    local n = l4len(s)
    return cfinish(csum(l4base(s), n, pseudo_sum(s, 6, n))) == 0
  end
  function m.compute_checksum(self)
    local s = self.s
    writable(s)
    local b, n = l4base(s), l4len(s)
    put16(b, 16, 0)
    put16(b, 16, cfinish(csum(b, n, pseudo_sum(s, 6, n))))
    touch(s)
  end
  make_view("hk_tcp_view", get, set, m, l4base, "tcp", nil, ip_view_of)
  local fl = { fin = 1, syn = 2, rst = 4, psh = 8, ack = 16, urg = 32, ecn = 64, cwr = 128 }
  local tcp_flags_pp = pp_userdata("tcp_flags", { "ack", "all", "cwr", "ecn", "fin", "psh", "rst", "syn", "urg" })
  ffi.metatype("hk_tcp_flags", {
    __index = function(self, k)
      local b = l4base(self.s)
      if k == "all" then return b[13] end
      local f = fl[k]
      if f then return band(b[13], f) ~= 0 end
      if k == "__pprint_info" then return tcp_flags_pp end
      return nil
    end,
    __newindex = function(self, k, v)
      local s = self.s
      writable(s)
      local b = l4base(s)
      if k == "all" then
        b[13] = num(v, "flags.all")
      else
        local f = fl[k]
        if not f then error("tcp.flags: unknown flag '" .. tostring(k) .. "'", 2) end
        if v then b[13] = bor(b[13], f) else b[13] = band(b[13], bnot(f)) end
      end
      touch(s)
    end,
  })
end

-- udp
do
  local get, set, m = {}, {}, common_methods({})
  get.srcport = function(s, b) return (be16(b, 0)) end
  get.dstport = function(s, b) return (be16(b, 2)) end
  get.length = function(s, b) return (be16(b, 4)) end
  get.checksum = function(s, b) return (be16(b, 6)) end
  get.ip = function(s) return (ip_view_of(s)) end
  get.src = function(s) return ip_view_of(s).src end
  get.dst = function(s) return ip_view_of(s).dst end
  get.payload = function(s) return (l4_payload(s)) end
  get.name = function() return "udp" end
  set.srcport = function(s, b, v) put16(b, 0, num(v, "srcport")) end
  set.dstport = function(s, b, v) put16(b, 2, num(v, "dstport")) end
  set.length = function(s, b, v) put16(b, 4, num(v, "length")) end
  set.checksum = function(s, b, v) put16(b, 6, num(v, "checksum")); touch(s) end
  function m.verify_checksum(self)
    local s = self.s
    local b = l4base(s)
    if s.l3 == 4 and be16(b, 6) == 0 then return true end
    local n = be16(b, 4)
    if n > l4len(s) then return false end
    return cfinish(csum(b, n, pseudo_sum(s, 17, n))) == 0
  end
  function m.compute_checksum(self)
    local s = self.s
    writable(s)
    local b = l4base(s)
    local n = math.min(be16(b, 4), l4len(s))
    put16(b, 6, 0)
    local c = cfinish(csum(b, n, pseudo_sum(s, 17, n)))
    if c == 0 then c = 0xffff end
    put16(b, 6, c)
    touch(s)
  end
  make_view("hk_udp_view", get, set, m, l4base, "udp", nil, ip_view_of)
end

-- icmp (ICMPv4; ICMPv6 messages are presented through the same view)
do
  local get, set, m = {}, {}, common_methods({})
  get.type = function(s, b) return b[0] end
  get.code = function(s, b) return b[1] end
  get.checksum = function(s, b) return (be16(b, 2)) end
  get.ip = function(s) return (ip_view_of(s)) end
  get.payload = function(s)
    local n = l4len(s) - 4
    if n < 0 then n = 0 end
    return (PLD.buf(s, 3, s.data + s.l4_off + 4, n))
  end
  get.name = function() return "icmp" end
  set.type = function(s, b, v) b[0] = num(v, "type") end
  set.code = function(s, b, v) b[1] = num(v, "code") end
  set.checksum = function(s, b, v) put16(b, 2, num(v, "checksum")); touch(s) end
  function m.verify_checksum(self)
    local s = self.s
    local n = l4len(s)
    if s.l3 == 6 then return cfinish(csum(l4base(s), n, pseudo_sum(s, 58, n))) == 0 end
    return cfinish(csum(l4base(s), n)) == 0
  end
  function m.compute_checksum(self)
    local s = self.s
    writable(s)
    local b, n = l4base(s), l4len(s)
    put16(b, 2, 0)
    if s.l3 == 6 then put16(b, 2, cfinish(csum(b, n, pseudo_sum(s, 58, n))))
    else put16(b, 2, cfinish(csum(b, n))) end
    touch(s)
  end
  make_view("hk_icmp_view", get, set, m, l4base, "icmp", nil, ip_view_of)
end

---------------------------------------------------------------------------
-- forging: haka.dissectors.packet.create(), ipv4/tcp/udp/icmp.create(), :inject(), :send()
-- A new packet is a slot of its own (FSLOTS, made once and reused from one burst to the
-- next) over a Lua-owned byte array, so the same views read and write it. :inject() and
-- :send() fix its lengths and checksums and queue a copy of its bytes (FOUT); the engine
-- takes them after the call (RT.take_forged, only when B.forged > 0) and sends them after
-- the packet being processed: an injected one goes through the rules first, as a received
-- packet (never reassembled), a sent one leaves as it is. Nothing here runs unless a rule
-- forges.
---------------------------------------------------------------------------
do
local MAX_FORGED = 64        -- new packets per burst (or per connection event)
local FORGE_CAP, FORGE_MAX = 2048, 65535
local FSLOTS, FBY = {}, {}   -- FSLOTS[i] = { slot, buf, cap, old }; FBY[slot address] = it
local FNEXT = 0
local FOUT = {}              -- pending: bytes, mode, origin packet index, ...
local u8arr = ffi.typeof("uint8_t[?]")
local function slot_key(s) return (tonumber(ffi.cast("uintptr_t", s))) end
forge_reset = function() FNEXT = 0 end
-- grows the packet of forged slot s by n zero bytes; returns the offset of the new bytes
local function forge_grow(s, n)
  local f = FBY[slot_key(s)]
  if not f then error("not a new packet", 3) end
  local len = s.len
  local need = len + n
  if need > FORGE_MAX then error("packet too large", 3) end
  if need > f.cap then
    local cap = math.min(math.max(f.cap * 2, need), FORGE_MAX)
    local nb = u8arr(cap)
    ffi.copy(nb, f.buf, len)
    -- (views taken before keep pointing into the old array: kept alive)
    f.old[#f.old + 1] = f.buf
    f.buf, f.cap = nb, cap
    s.data = nb
  end
  ffi.fill(s.data + len, n)
  s.len = need
  return len
end
local function forged_slot(x, what)
  local s = type(x) == "cdata" and x.s
  if not s or band(s.flags, F_FORGED) == 0 or band(s.flags, F_SENT) ~= 0 then
    error(what .. ": a new packet expected (haka.dissectors.packet.create())", 3)
  end
  return s
end
-- haka.dissectors.packet.create([size]): a new packet, its link header the current packet's
-- (else an Ethernet header, zero addresses), then `size` zero bytes
local function packet_create(size)
  size = math.floor(tonumber(size) or 0)
  if size < 0 then error("number must not be negative", 0) end
  if FNEXT >= MAX_FORGED then error("too many new packets (" .. MAX_FORGED .. " per packet burst)", 2) end
  FNEXT = FNEXT + 1
  local f = FSLOTS[FNEXT]
  if not f then
    local arr = ffi.new("hk_slot[1]")
    f = { arr = arr, slot = arr + 0, buf = u8arr(FORGE_CAP), cap = FORGE_CAP, old = {} }
    FSLOTS[FNEXT] = f
    FBY[slot_key(f.slot)] = f
  end
  f.old = {}
  local s = f.slot
  ffi.fill(s, ffi.sizeof("hk_slot"))
  s.data = f.buf
  s.flags = F_FORGED
  local hl, cur = 14, nil
  if in_burst and B.cur < MAX_BURST then
    cur = S[B.cur]
    if cur.data ~= nil and cur.l3_off <= cur.len then hl = cur.l3_off else cur = nil end
  end
  s.len = 0
  forge_grow(s, hl + size)
  if cur then
    -- (the link header's addresses are zero, as Haka's new packets': only its layout, e.g.
    -- a VLAN tag, is the current packet's)
    ffi.copy(s.data, cur.data, hl)
    if hl >= 14 then ffi.fill(s.data, 12) end
    s.ts_sec, s.ts_nsec, s.dir, s.vlan = cur.ts_sec, cur.ts_nsec, cur.dir, cur.vlan
  else
    put16(s.data, 12, 0x0800)
  end
  s.l3_off = hl
  s.payload_off = hl
  return (packet_view_ct(s))
end
haka.dissectors.packet.create = function(size) return (packet_create(size)) end

-- ipv4.create(pkt): an IPv4 header (version 4, 20 bytes, the rest zero) after the packet's
local function ipv4_create(pkt)
  local s = forged_slot(pkt, "ipv4.create")
  if s.l3 ~= 0 then error("ipv4.create: the packet has an IP header already", 2) end
  local off = forge_grow(s, 20)
  local b = s.data + off
  b[0] = 0x45
  put16(b, 2, 20)
  -- the link header says IPv4 (Ethernet and Linux cooked: its last two bytes)
  if off >= 14 and off == s.l3_off then put16(s.data, off - 2, 0x0800) end
  s.l3, s.l3_off, s.ip_len = 4, off, 20
  s.payload_off, s.payload_len = off + 20, 0
  return (ipv4_ct(s))
end
haka.dissectors.ipv4.create = function(pkt) return (ipv4_create(pkt)) end

-- tcp/udp/icmp.create(ip[, init]): the header after the IPv4 header, init's fields set
local function l4_create(ip, proto, hlen, what, init, ct)
  local s = forged_slot(ip, what)
  if s.l3 ~= 4 then error(what .. ": an IPv4 packet expected (haka.dissectors.ipv4.create())", 3) end
  if s.has_l4 ~= 0 then error(what .. ": the packet has a transport header already", 3) end
  local off = forge_grow(s, hlen)
  local b = s.data + off
  s.data[s.l3_off + 9] = proto
  s.proto, s.has_l4, s.l4_off = proto, 1, off
  s.payload_off, s.payload_len = off + hlen, 0
  s.ip_len = s.len - s.l3_off
  put16(s.data + s.l3_off, 2, s.ip_len)
  if proto == 6 then b[12] = 0x50 end
  if proto == 17 then put16(b, 4, 8) end
  local v = ct(s)
  if init ~= nil then
    if type(init) ~= "table" then error(what .. ": table expected for the initial fields", 3) end
    for k, x in pairs(init) do v[k] = x end
  end
  return v
end
haka.dissectors.tcp.create = function(ip, init) return (l4_create(ip, 6, 20, "tcp.create", init, tcp_ct)) end
haka.dissectors.udp.create = function(ip, init) return (l4_create(ip, 17, 8, "udp.create", init, udp_ct)) end
haka.dissectors.icmp.create = function(ip, init) return (l4_create(ip, 1, 4, "icmp.create", init, icmp_ct)) end

-- payload:append(data) on a new packet's payload (which ends the packet): data is a
-- string, a payload or a buffer (haka.vbuffer_*)
local function bytes_of(x)
  if type(x) == "string" then return x end
  if ffi.istype(buf_ct, x) then return (ffi.string(x.p, x.len)) end
  if type(x) == "table" or type(x) == "userdata" then
    local ok, str = pcall(function() return x:asstring() end)
    if ok and type(str) == "string" then return str end
  end
  error("append: string or buffer expected", 3)
end
function buf_m.append(self, data)
  local s = self.s
  if s == nil or band(s.flags, F_FORGED) == 0 then
    writable(s)
    error("append: the packet cannot grow (only a new packet's payload can)", 2)
  end
  local str = bytes_of(data)
  local at = self.p - s.data
  if at + self.len ~= s.len then error("append: only at the end of the packet", 2) end
  local off = forge_grow(s, #str)
  ffi.copy(s.data + off, str, #str)
  self.p, self.len = s.data + at, self.len + #str
  if s.has_l4 ~= 0 then s.payload_len = s.payload_len + #str end
  if s.l3 ~= 0 then s.ip_len = s.len - s.l3_off end
  touch(s)
  return self
end
-- payload:clone(): a copy, as a buffer
function buf_m.clone(self)
  local str = ffi.string(self.p, self.len)
  if haka.vbuffer_from then return (haka.vbuffer_from(str)) end
  return str
end

-- queues forged slot s: lengths and checksums (Haka: computed when the packet is forged)
function forge.out(s, mode)
  if band(s.flags, F_SENT) ~= 0 then error("packet already sent", 3) end
  if s.l3 == 4 then
    local b = s.data + s.l3_off
    s.ip_len = s.len - s.l3_off
    put16(b, 2, s.ip_len)
    if s.has_l4 ~= 0 then
      local p = s.proto
      if p == 17 then put16(s.data + s.l4_off, 4, s.len - s.l4_off) end
      if p == 6 then tcp_ct(s):compute_checksum()
      elseif p == 17 then udp_ct(s):compute_checksum()
      elseif p == 1 then icmp_ct(s):compute_checksum() end
    end
    ipv4_ct(s):compute_checksum()
  end
  s.flags = bor(s.flags, F_SENT)
  local k = #FOUT
  FOUT[k + 1] = ffi.string(s.data, s.len)
  FOUT[k + 2] = mode
  FOUT[k + 3] = in_burst and B.cur or 0
  B.forged = B.forged + 1
end
function forge.take()
  local o = FOUT
  FOUT = {}
  B.forged = 0
  return o
end
end -- forging

---------------------------------------------------------------------------
-- modules for require()
---------------------------------------------------------------------------
local ipv4_mod = haka.dissectors.ipv4
ipv4_mod.addr = ipv4_addr
ipv4_mod.network = ipv4_network
function ipv4_mod.inet_checksum_compute(buf)
  if ffi.istype(buf_ct, buf) then return (cfinish(csum(buf.p, buf.len))) end
  local str = (VBM.is_buffer(buf) or VBM.is_sub(buf)) and buf:asstring() or tostring(buf)
  return (cfinish(csum(ffi.cast("const uint8_t*", str), #str)))
end
function policy.ipv4_in_network(net)
  if type(net) == "string" then net = ipv4_network(net) end
  return (criterion(function(v) return v ~= nil and net:contains(v) end))
end
ipv4_mod.ipv4_in_network = policy.ipv4_in_network
haka.dissectors.ipv6.addr = ipv6_addr

local preload = package.preload
-- the buffer module's engine side (external views, copy_to, ...); for tests and Lua tools
preload["haka/vbuffer"] = function() return H.vbuffer end

-- Haka's Lua utilities available to rules: string.safe_format(str[, eol]) (printable ASCII
-- kept, other bytes as \xNN, LF kept when eol), table.merge/append/copy, sorted_pairs.
do
  local byte, char, concat = string.byte, string.char, table.concat
  function string.safe_format(str, eol)
    local out = {}
    for i = 1, #str do
      local b = byte(str, i)
      if b >= 0x20 and b <= 0x7e then out[i] = char(b)
      elseif eol and b == 0x0a then out[i] = "\n"
      else out[i] = sfmt("\\x%.2x", b) end
    end
    return concat(out)
  end
  function table.merge(dst, src) for k, v in pairs(src) do dst[k] = v end end
  function table.append(dst, src) for _, v in ipairs(src) do dst[#dst + 1] = v end end
  function table.copy(src)
    local dst = {}
    for k, v in pairs(src) do dst[k] = v end
    return dst
  end
  function sorted_pairs(t, cmp)
    cmp = cmp or function(a, b) return tostring(a) < tostring(b) end
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    table.sort(keys, cmp)
    local i = 0
    return function()
      i = i + 1
      local k = keys[i]
      if k ~= nil then return k, t[k] end
    end
  end
end
preload["protocol/ipv4"] = function() return ipv4_mod end
preload["protocol/ipv6"] = function() return haka.dissectors.ipv6 end
preload["protocol/tcp"] = function() return haka.dissectors.tcp end
preload["protocol/udp"] = function() return haka.dissectors.udp end
preload["protocol/icmp"] = function() return haka.dissectors.icmp end
preload["protocol/ethernet"] = function() return haka.dissectors.ethernet end
preload["protocol/raw"] = function() return haka.dissectors.packet end
preload["protocol/packet"] = preload["protocol/raw"]

-- regexp/pcre: Haka's regexp module on PCRE2 (engine/src/lua/regexp.rs: `%` stands for `\`,
-- MULTILINE always, CASE_INSENSITIVE = 1, EXTENDED = 2). H.regex_compile gives a userdata with
-- find(string) -> start, end (0-based, end exclusive) and sink() -> a stream matcher with
-- feed(string, eof) -> state, first, last (stream offsets this feed registered, or -1),
-- state(), processed() (bytes fed) and start() (offset of the partial match or of the match).
-- States are Haka's: 1 match, 0 no match, -2 partial.
do
  local VBM = H.vbuffer
  local is_sub, is_buffer, is_iterator = VBM.is_sub, VBM.is_buffer, VBM.is_iterator
  local sub_between = VBM.sub_between
  local MATCH, PARTIAL = 1, -2
  local re = { CASE_INSENSITIVE = 1, EXTENDED = 2 }
  local RE_FIND, RE_OUT -- regexp:match(string) through the FFI (set by the first re:compile)

  local function tostr(x)
    if type(x) == "string" then return x end
    if x == nil then error("expected string argument, got nil", 0) end
    if ffi.istype(buf_ct, x) then return (ffi.string(x.p, x.len)) end
    if VBM.is_buffer(x) or VBM.is_sub(x) then return (x:asstring()) end
    return (tostring(x))
  end

  -- haka.regexp_result(): first/last (0-based, last exclusive; -1 when unset), and the
  -- older offset/size
  local RES_MT = { __index = function(t, k)
    local f, l = rawget(t, "first"), rawget(t, "last")
    if k == "offset" then return f end
    if k == "size" then if f < 0 or l < 0 then return -1 end return l - f end
  end }
  haka.regexp_result = function() return (setmetatable({ first = -1, last = -1 }, RES_MT)) end

  local Rx, Sink = {}, {}
  Rx.__index, Sink.__index = Rx, Sink
  Rx.__tostring = function(self) return "<regexp " .. self.pattern .. ">" end
  Sink.__tostring = function() return "<regexp_sink>" end

  function Rx:create_sink() return (setmetatable({ _s = self._rx:sink() }, Sink)) end
  Rx.get_sink = Rx.create_sink  -- the name Haka's doc uses

  -- sink:feed(string, eof, result) -> matched (result.first/.last set as they are found);
  -- sink:feed(vbuffer|sub, eof) -> matched, begin iterator, end iterator (those in this data)
  function Sink:feed(data, eof, result)
    local s = self._s
    eof = eof and true or false
    if data == nil then
      if eof and s:state() == PARTIAL then s:feed("", true) end
      return s:state() == MATCH
    end
    if is_sub(data) or is_buffer(data) then
      if s:state() == MATCH then return true end
      local base = s:processed()
      local st, first, last = s:feed(data:asstring(), eof)
      local mb, me
      if first >= base then mb = data:pos(first - base) end
      if last >= base then me = data:pos(last - base) end
      return st == MATCH, mb, me
    end
    local st, first, last = s:feed(tostr(data), eof)
    if result then
      if first >= 0 then result.first = first end
      if last >= 0 then result.last = last end
    end
    return st == MATCH
  end
  function Sink:ispartial() return self._s:state() == PARTIAL end

  -- iterator at stream offset `off`: in `sub` (fed from offset `base`) or after `begin`
  local function pos_at(sub, base, begin, begin_off, off)
    if off >= base then return sub:pos(off - base) end
    if begin and off >= begin_off then
      local it = begin:copy(); it:advance(off - begin_off); return it
    end
    return nil
  end

  -- match on an iterator (blocking on a stream): feeds what is available until a match, the
  -- start of a pending match marked so that the stream keeps it; the iterator moves past the
  -- match (to the end of the data when none)
  local function iter_match(self, input, createsub, readonly)
    if readonly == nil then
      readonly = haka.packet_mode ~= nil and haka.packet_mode() == "passthrough"
    end
    local s = self._rx:sink()
    local begin, begin_off, mark
    for sub in input:foreach_available() do
      local base = s:processed()
      local st, _, last = s:feed(sub:asstring(), input.iseof)
      if createsub then
        if st == PARTIAL or st == MATCH then
          local off = s:start()
          if begin == nil or begin_off ~= off then
            local nb = pos_at(sub, base, begin, begin_off, off)
            if mark then mark:unmark(); mark = nil end
            begin, begin_off = nb, off
            if st == PARTIAL and nb then
              mark = nb:copy(); mark:mark(readonly); begin = mark
            end
          end
        else
          begin, begin_off = nil, nil
          if mark then mark:unmark(); mark = nil end
        end
      end
      if st == MATCH then
        local me = pos_at(sub, base, begin, begin_off, last)
        if mark then mark:unmark() end
        if me then input:move_to(me) end
        if createsub then
          if begin and me then return sub_between(begin, me) end
          return nil
        end
        return true
      end
    end
    if mark then mark:unmark() end
    if createsub then return nil end
    return false
  end

  -- regexp:match(string) -> match, begin, end (0-based, end exclusive) | nil, -1, -1
  -- regexp:match(vbuffer|sub) -> sub | nil; regexp:match(iterator, createsub, readonly)
  function Rx:match(input, createsub, readonly)
    if type(input) == "string" then
      -- (through the FFI: no handle on the string and the userdata per call; an error
      -- of the matcher, -1, is raised by the userdata's find below)
      local out = RE_OUT
      local r = RE_FIND(self._p, input, #input, out)
      if r == 0 then return nil, -1, -1 end
      if r == 1 then
        local b, e = out[0], out[1]
        return string.sub(input, b + 1, e), b, e
      end
    end
    if is_iterator(input) then return iter_match(self, input, createsub, readonly) end
    if is_sub(input) or is_buffer(input) then
      local b, e = self._rx:find(input:asstring())
      if b == nil then return nil end
      return input:sub(b, e - b)
    end
    local str = tostr(input)
    local b, e = self._rx:find(str)
    if b == nil then return nil, -1, -1 end
    return string.sub(str, b + 1, e), b, e
  end

  -- compiled patterns cached per (options, pattern) (bounded: a rule building patterns from
  -- traffic cannot grow it without limit)
  local cache, ncache = {}, 0
  function re:compile(pattern, options)
    if pattern == nil then error("nil argument", 0) end
    pattern = tostr(pattern)
    options = tonumber(options) or 0
    local key = options .. ":" .. pattern
    local c = cache[key]
    if c then return c end
    local rx, err, addr = H.regex_compile(pattern, options)
    if not rx then error(err, 0) end
    if not RE_FIND then
      RE_FIND = ffi.cast("int32_t (*)(const void *, const char *, int32_t, int32_t *)", H.regex_find_fn)
      RE_OUT = ffi.new("int32_t[2]")
    end
    -- (_p: the pattern's address for RE_FIND, valid while _rx is)
    c = setmetatable({ _rx = rx, _p = ffi.cast("const void *", addr), pattern = pattern }, Rx)
    if ncache >= 1024 then cache, ncache = {}, 0 end
    cache[key] = c; ncache = ncache + 1
    return c
  end
  -- re:match(pattern, string|vbuffer|sub|iterator, options[, createsub])
  function re:match(pattern, input, options, createsub)
    return self:compile(pattern, options):match(input, createsub)
  end
  preload["regexp/pcre"] = function() return { re = re } end
end

-- >>> K: internals for engine/lua/app.lua (application dissector objects), which Rust runs
-- right after this chunk with (H, H.K) and which adds its constructors to this same table
-- (K.http_session, K.http_request, K.dns_message, ...: see app.lua's header). The dispatcher
-- below may use them once the rules are loaded.
local K = { new_event = new_event, new_policy = new_policy, buf_ct = buf_ct, criterion = criterion }
H.K = K
-- <<< K

---------------------------------------------------------------------------
-- burst dispatcher (generated after the rules are loaded)
---------------------------------------------------------------------------
V = {}
for _, k in ipairs({ "packet", "ethernet", "ipv4", "ipv6", "tcp", "udp", "icmp" }) do V[k] = {} end
for i = 0, MAX_BURST - 1 do
  local p = S + i
  V.packet[i] = packet_view_ct(p); V.ethernet[i] = eth_ct(p); V.ipv4[i] = ipv4_ct(p); V.ipv6[i] = ipv6_ct(p)
  V.tcp[i] = tcp_ct(p); V.udp[i] = udp_ct(p); V.icmp[i] = icmp_ct(p)
end

RT.vbuffer = H.vbuffer
local loop = function() end
local has_rules = false
local errs = {}
local MAX_ERROR_MESSAGES = H.max_error_messages or 16

---------------------------------------------------------------------------
-- stateful dissectors: tcp_connection, udp_connection (engine/src/dissectors/tcp_connection, udp_connection; engine/src/conn)
-- Rust tracks the connections and calls the RT.conn_* functions below once per
-- packet that has stateful events; the flow objects live in FLOWS[id].
---------------------------------------------------------------------------
-- action bits returned to Rust (mirrored in engine/src/lua/mod.rs)
-- ACT_EDITS: heads or stream bytes rewritten; ACT_STREAM_EDITS: stream bytes (RT.take_edits)
local ACT_DROP, ACT_RESET, ACT_HALFRESET, ACT_EDITS, ACT_PKT_DROP, ACT_STREAM_EDITS = 1, 2, 4, 8, 16, 32
local APP_SHIFT = 8 -- bits 8..11: application dissector selected (its id in Rust's registry)
-- application dissectors by name -> registry id (engine/src/dissectors REGISTRY; RT.set_app)
local APP_CODES = {}
local STATE_NAMES = { [0] = "syn", "syn_sent", "syn_received", "established", "fin_wait_1", "fin_wait_2",
  "closing", "timed_wait", "reset" }
local DIRS = { [0] = "up", "down" }

local FLOWS = {}
local ACT = 0      -- actions of the current call
local CUR = nil    -- flow of the current call
local APPSEL = 0
-- A connection over the data held for its streamed rules: counted, and dropped unless
-- [rules] streamed_over_cap = "accept" (RT._streamed.make).
function RT._streamed.over_cap(obj)
  if rawget(obj, "_cocapped") then return end
  rawset(obj, "_cocapped", true)
  ACT = bor(ACT, 64 --[[STREAMED_OVER_CAP]], H.streamed_over_cap_drop and ACT_DROP or 0)
end

local function conn_dissector(name)
  local d = { name = name, events = {}, policies = {} }
  local cont = function(flow) return not flow._dropped end
  for _, e in ipairs({ "new_connection", "receive_packet", "receive_data", "end_connection" }) do
    d.events[e] = new_event(name .. ":" .. e, cont)
  end
  for _, p in ipairs({ "next_dissector", "new_connection", "no_connection_found", "unexpected_packet", "invalid_handshake" }) do
    d.policies[p] = new_policy(name .. ":" .. p)
    d.policies[p].name = p
  end
  haka.dissectors[name] = d
  return d
end
local TCPC = conn_dissector("tcp_connection")
local UDPC = conn_dissector("udp_connection")

local Flow = {}
local flow_mt = {
  __index = function(self, k)
    if k == "state" then return STATE_NAMES[rawget(self, "_state")] end
    if k == "srcip" or k == "dstip" then
      -- IPv4 addresses are kept as numbers (_sa, _da) until first read: most flows are
      -- never asked, and each address object is an allocation
      local v = rawget(self, k == "srcip" and "_sa" or "_da")
      if v == nil then return nil end
      v = addr_ct(v)
      rawset(self, k, v)
      return v
    end
    return Flow[k]
  end,
  __tostring = function(self)
    return sfmt("<%s %s:%d -> %s:%d>", self.name, tostring(self.srcip), self.srcport, tostring(self.dstip), self.dstport)
  end,
}
local function flow_act(self, bits)
  if self == CUR then ACT = bor(ACT, bits) else self._pending = bor(self._pending or 0, bits) end
end
function Flow:drop() self._dropped = true; flow_act(self, ACT_DROP) end
function Flow:error() self:drop() end -- Haka's Dissector:error() (haka.dissector.pcall)
function Flow:reset()
  if self.proto ~= 6 then error("reset: not a TCP connection", 2) end
  self._dropped = true; flow_act(self, ACT_RESET)
end
function Flow:halfreset()
  if self.proto ~= 6 then error("halfreset: not a TCP connection", 2) end
  self._dropped = true; flow_act(self, ACT_HALFRESET)
end
-- Haka's restart: once this packet's rules have run, the connection ends (end_connection,
-- no RST) and the packet is handled again as if there were none (a SYN opens a new
-- connection). Action bit 128 (ACT_RESTART in Rust; no new local: the main chunk is near
-- LuaJIT's limit).
function Flow:restart() flow_act(self, 128) end
-- Packets are never held back, so there is nothing to flush: kept for API compatibility.
function Flow:send() end
function Flow:select_next_dissector(name)
  if RT.LD.select_flow and (type(name) == "table" or (type(name) == "string" and not APP_CODES[name]
      and haka.dissector.lua_classes and haka.dissector.lua_classes[name])) then
    return RT.LD.select_flow(self, name)
  end
  local c = APP_CODES[name]
  if not c then
    local names = {}
    for n in pairs(APP_CODES) do names[#names + 1] = n end
    table.sort(names)
    error("unknown next dissector '" .. tostring(name) .. "' (" .. table.concat(names, ", ") .. ")", 2)
  end
  self._app = name
  if self == CUR then APPSEL = c end
end
function Flow:alert(a) return haka.alert(a) end
function Flow:can_continue() return not self._dropped end

local function new_flow(id, proto, dir)
  -- the packet of the current call is in slot 0; dir is its connection direction
  local s = S[0]
  local b = s.data
  local sp, dp = be16(b, s.l4_off), be16(b, s.l4_off + 2)
  -- every field in the constructor, with room for the keys set later (_http, _pending,
  -- _dropped, ...): the table is sized once. srcip/dstip: see flow_mt.
  local f = setmetatable({ id = id, proto = proto, name = proto == 6 and "tcp_connection" or "udp_connection",
    _state = 3, _sa = false, _da = false, srcport = 0, dstport = 0, _http = false, _pending = false,
    _dropped = false }, flow_mt)
  local a, z
  if s.l3 == 4 then
    a, z = be32(b, s.l3_off + 12), be32(b, s.l3_off + 16)
  else
    local ip = ip_view_of(s)
    a, z = ip.src, ip.dst
  end
  if dir ~= 0 then a, z, sp, dp = z, a, dp, sp end
  f.srcport, f.dstport = sp, dp
  if s.l3 == 4 then
    f._sa, f._da = a, z
  else
    f._sa, f._da = nil, nil
    rawset(f, "srcip", a)
    rawset(f, "dstip", z)
  end
  FLOWS[id] = f
  return f
end

-- The SIEM fields of an alert (EVE rule, signature_id, app_proto, http / dns / tls):
-- read only when an alert is raised. The running rule (RT.guard), and what the flow of
-- the current call or packet knows of its application (its Lua flow object, if any:
-- the http exchange, the DNS message, the TLS ClientHello). A field that cannot be
-- read is left out.
function RT.alert_app(f, fl)
  local http = rawget(fl, "_http")
  if http then
    f.app_proto = "http"
    local req, resp = http.request, http.response
    if req then
      f.http_method, f.http_url = req.method, req.uri
      local h = req.headers
      f.http_hostname, f.http_user_agent = h["Host"], h["User-Agent"]
    end
    if resp then f.http_status = tonumber(resp.status) end
    return
  end
  local q = rawget(fl, "_dnsmsg")
  if q then
    f.app_proto = "dns"
    local question = q.question
    if question then f.dns_rrname, f.dns_rrtype = question.name, question.type end
    return
  end
  local tls = rawget(fl, "_tls")
  if tls then
    f.app_proto = "tls"
    local hello = tls.client_hello
    if hello then f.tls_sni = hello.sni end
    return
  end
  local app = rawget(fl, "_app")
  if type(app) == "string" then f.app_proto = app end
end
function RT.alert_meta(f)
  local rec = RT.running.rule
  if rec then f.rule, f.rule_id = rec.name or rec.where, rec.id end
  local fl = CUR
  if fl == nil and in_burst then fl = FLOWS[S[B.cur].flow_id] end
  if type(fl) == "table" then pcall(RT.alert_app, f, fl) end
end

local function fire(ev, a, b, c)
  local l = ev.listeners
  local cont = ev.continue
  for j = 1, #l do
    l[j](a, b, c)
    if not cont(a, b) then return end
  end
end
-- fire for the listeners selected by the prefilters (engine/src/prefilter.rs): bit j - 1
-- for listener j up to 31, bit 31 for those after it
local function fire_selected(ev, rules, a, b)
  local l = ev.listeners
  local cont = ev.continue
  for j = 1, #l do
    if band(rules, j <= 31 and lshift(1, j - 1) or 0x80000000) ~= 0 then
      l[j](a, b)
      if not cont(a, b) then return end
    end
  end
end
local function policy_values(f)
  return { srcip = f.srcip, dstip = f.dstip, srcport = f.srcport, dstport = f.dstport, port = f.dstport }
end

-- (K.http_lazy_cancel once an application dissector is loaded: RT.set_app)
RT.http_lazy_cancel = function() end
local function begin_call(id)
  if PLD.n > 0 then PLD.drop() end
  -- (a request deferred by a call a rule error ended: its bytes are gone)
  RT.http_lazy_cancel()
  forge_reset()
  local f = FLOWS[id]
  CUR = f
  in_burst = true
  B.cur = 0
  if haka._timer.n > 0 and S[0].ts_sec > 0 then haka._timer.check(S[0].ts_sec + S[0].ts_nsec * 1e-9) end
  ACT = 0
  APPSEL = 0
  if f and f._pending then ACT = f._pending; f._pending = nil end
  return f
end
local function end_call(f)
  CUR = nil
  in_burst = false
  if PLD.n > 0 then PLD.finish() end
  local r = ACT
  if APPSEL ~= 0 then r = bor(r, lshift(APPSEL, APP_SHIFT)) end
  return r
end

-- bits: 1 created, 2 fire receive_packet, 4 picked up
function RT.conn_packet(id, proto, dir, state, bits)
  local D = proto == 6 and TCPC or UDPC
  local f = begin_call(id)
  if band(bits, 1) ~= 0 or f == nil then
    f = new_flow(id, proto, dir)
    CUR = f
    f._state = state
    local p = { ctx = f, values = policy_values(f) }
    if band(bits, 4) ~= 0 then
      D.policies.no_connection_found:apply(p)
    end
    if not f._dropped then D.policies.new_connection:apply(p) end
    if not f._dropped then
      local view = proto == 6 and V.tcp[0] or V.udp[0]
      fire(D.events.new_connection, f, view)
    end
    if not f._dropped then D.policies.next_dissector:apply(p) end
    -- Haka: a TCP packet dropped while its connection is made (new_connection, the
    -- policies) drops the connection; a UDP one just the packet
    if proto == 6 and not f._dropped and not (V.tcp[0]):can_continue() then f:drop() end
  end
  f._state = state
  if band(bits, 2) ~= 0 and not f._dropped then
    local view = proto == 6 and V.tcp[0] or V.udp[0]
    fire(D.events.receive_packet, f, view, DIRS[dir])
  end
  if band(bits, 3) ~= 0 and not (proto == 6 and V.tcp[0] or V.udp[0]):can_continue() then
    ACT = bor(ACT, ACT_PKT_DROP)
  end
  return end_call(f)
end

-- stream / datagram data: a view of len bytes at address addr (valid during the call)
local EDITS = {}
ffi.cdef[[ typedef struct { uint8_t *p; int32_t len; int32_t off; } hk_sbuf; ]]
local sbuf_ct = ffi.typeof("hk_sbuf")
local sbuf_m = {}
function sbuf_m.sub(self, off, len)
  off = off or 0
  if off < 0 or off > self.len then error("sub: offset out of range", 2) end
  local rest = self.len - off
  if len == nil or len < 0 or len > rest then len = rest end
  return (sbuf_ct(self.p + off, len, self.off < 0 and -1 or self.off + off))
end
function sbuf_m.asstring(self) return (ffi.string(self.p, self.len)) end
sbuf_m.tostring = sbuf_m.asstring
function sbuf_m.size(self) return self.len end
sbuf_m.__pprint_info = pp_userdata("vbuffer_sub")
-- (orig: a replace of bytes written in place, the bytes they had: see vbuffer's keep_orig)
local function edit(op, off, len, str, orig)
  if off < 0 then error("data not modifiable (call http:enable_data_modification() in the request/response event)", 3) end
  if str ~= nil then str = tostring(str) end
  EDITS[#EDITS + 1] = { op, off, len, str, orig }
  ACT = bor(ACT, ACT_EDITS + ACT_STREAM_EDITS)
end
-- Stream modification (Haka's vbuffer_sub:replace/erase and iterator:insert).
function sbuf_m.replace(self, str) edit(3, self.off, self.len, str) end
function sbuf_m.erase(self) edit(2, self.off, self.len) end
function sbuf_m.insert(self, str) edit(1, self.off, 0, str) end
function sbuf_m.append(self, str) edit(1, self.off + self.len, 0, str) end
ffi.metatype("hk_sbuf", {
  __len = view_len,
  __index = byte_view_index(sbuf_m),
  __tostring = function(self) return (ffi.string(self.p, self.len)) end,
})
local u8p = ffi.typeof("uint8_t*")
local function sbuf_at(addr, len) return (sbuf_ct(ffi.cast(u8p, addr), len, 0)) end
local K_CONN = { sbuf_at = sbuf_at, fire = fire, begin_call = begin_call, end_call = end_call, FLOWS = FLOWS }

-- receive_data: the data (len bytes at addr, valid during the call) as Haka gives it, a
-- vbuffer_sub over an external view of those bytes (no copy). TCP streams are writable
-- unless `ro` (passive mode: Haka's "read only buffer"); after the rules, the changes
-- become stream edits (VBM.external_edits: erase / insert / replace at offsets of the data,
-- applied by Rust with seq/ack shifting). UDP datagrams are read only here (a rule edits
-- a datagram through pkt.payload).
function RT.conn_data(id, proto, dir, addr, len, ro, eof)
  local D = proto == 6 and TCPC or UDPC
  local f = begin_call(id)
  if eof then
    -- the end of the direction's stream (FIN): its streamed rules run to their end
    if f and not f._dropped then
      local ok, err = pcall(RT._streamed.finish, D.events.receive_data, f, DIRS[dir])
      -- (and a Lua dissector's stream of that direction)
      local h = rawget(f, "_lua_next")
      if ok and h and h._receive_data and not f._dropped then h:_receive_data(nil, DIRS[dir]) end
      if not ok then
        if H.rule_error_drops then FLOWS[id] = nil end
        CUR = nil
        in_burst = false
        error(err, 0)
      end
    end
    return end_call(f)
  end
  if f and not f._dropped then
    if proto == 17 then
      -- (udp_connection, as Haka: the udp packet, slot 0)
      fire(D.events.receive_data, f, V.udp[0], DIRS[dir])
      return end_call(f)
    end
    local writable = proto == 6 and not ro
    local p = ffi.cast(u8p, addr)
    -- Only a Lua dissector reads the segment (no rule on receive_data): it gets the view
    -- itself, a sub of it is made only when it needs one; no dissector on this flow:
    -- nothing to make.
    local rd = D.events.receive_data.listeners
    local lua_only = proto == 6 and #rd == 1 and rd[1] == RT.LD.tcp_listener
    local h = lua_only and rawget(f, "_lua_next")
    if lua_only and not (h and h._receive_view) then return end_call(f) end
    -- (one token for every segment's view: each is ended below, before the next)
    local data, buf, tok
    if lua_only then
      buf, tok = VBM.external_view(p, len, writable, RT.conn_tok)
    else
      data, buf, tok = VBM.external_sub(p, len, writable, RT.conn_tok)
    end
    RT.conn_tok = tok
    local ext
    if writable and D.events.receive_data.streamed then
      -- (one table for every call: nothing keeps it past the call)
      ext = RT.conn_ext
      if not ext then ext = { regions = {} }; RT.conn_ext = ext end
      ext.buf, ext.data = buf, data
      RT._streamed.ext = ext
    end
    local ok, err
    if lua_only then
      ok, err = pcall(h._receive_view, h, buf, len, DIRS[dir])
    else
      ok, err = pcall(fire, D.events.receive_data, f, data, DIRS[dir])
    end
    RT._streamed.ext = nil
    if ok and writable then
      local ed = VBM.external_edits(buf, tok, p, len)
      if ed then
        for i = 1, #ed do local e = ed[i]; edit(e[1], e[2], e[3], e[4], e[5]) end
      end
      -- (streamed rules: the edits of this segment's bytes in their stream)
      if ext then
        for r = 1, #ext.regions do
          local sed = VBM.stream_edits(ext.regions[r], tok, p, len)
          if sed then
            for i = 1, #sed do local e = sed[i]; edit(e[1], e[2], e[3], e[4], e[5]) end
          end
        end
      end
    end
    if ext then
      local rg = ext.regions
      for i = #rg, 1, -1 do rg[i] = nil end
      ext.buf, ext.data = nil, nil
    end
    VBM.external_end(tok, "copy")
    if not ok then
      -- (Haka closes a TCP connection whose stream rule failed: Rust forgets it too
      -- when errors drop, see StatefulStage::tcp_data; a new object if it comes back)
      if proto == 6 and H.rule_error_drops then FLOWS[id] = nil end
      CUR = nil
      in_burst = false
      error(err, 0)
    end
  end
  return end_call(f)
end

function RT.conn_end(id, proto)
  RT.http_lazy_cancel()
  local f = FLOWS[id]
  if not f then return 0 end
  FLOWS[id] = nil
  CUR = f
  ACT = 0
  f._state = proto == 6 and (f._state == 8 and 8 or 7) or f._state
  local D = proto == 6 and TCPC or UDPC
  in_burst = true
  B.cur = 0
  local ok, err = pcall(fire, D.events.end_connection, f)
  local h = rawget(f, "_lua_next")
  if ok and h and h._end then ok, err = pcall(h._end, h) end
  in_burst = false
  CUR = nil
  if not ok then error(err, 0) end
  return 0
end

function RT.take_edits()
  local e = EDITS
  EDITS = {}
  return e
end

-- application dissectors (http, dns, tls; objects from app.lua through K): Rust parses,
-- RT.app_events fires the events of one packet's data in stream order.
-- Heads rewritten by the rules of the current RT.app_events call, returned by it after
-- its bits: (event index, head bytes, body to modify, then a, b, v: the first head may
-- come as "replace its bytes [a, b) by v" instead of its bytes, see K.http_edit) for the
-- first, then a table of the others' (event index, head bytes, body to modify) if any.
-- Reused (no table per head).
local HEADS, NHEADS = {}, 0
-- Whether HTTP body events have rules (set by RT.stateful_info, after the rules load).
local HTTP_BODY_RULES = false
-- Whether the HTTP anomaly event has rules (same).
local HTTP_ANOMALY_RULES = false
local APPK = nil -- K of app.lua, set by RT.set_app
local function default_policy(dissector, name, port)
  -- inserted first: a user policy on the same point (declared later) wins
  local pol = dissector.policies.next_dissector
  for _, p in ipairs(pol.policies) do if p.name == "default " .. name then return end end
  local crit = { { name = "port", value = port } }
  table.insert(pol.policies, 1, { name = "default " .. name, criteria = crit, default_app = name, port = port,
    actions = { function(_, ctx) ctx:select_next_dissector(name) end } })
end
-- Haka's default next_dissector policies: { name, connection dissector, server port } (from
-- the registry, RT.set_app)
local APP_DEFAULTS = {}
-- Haka's modules load the ones they stand on (protocol/http requires tcp_connection,
-- which requires tcp, which requires ipv4): which were loaded, directly or through
-- another, tells Rust the dissector chain of `[rules] dissectors = "required"`.
local MODULE_DEPS = {
  ["protocol/http"] = { "protocol/tcp_connection" }, ["protocol/tls"] = { "protocol/tcp_connection" },
  ["protocol/dns"] = { "protocol/udp_connection" },
  ["protocol/tcp_connection"] = { "protocol/tcp" }, ["protocol/udp_connection"] = { "protocol/udp" },
  ["protocol/tcp"] = { "protocol/ipv4" }, ["protocol/udp"] = { "protocol/ipv4" },
  ["protocol/icmp"] = { "protocol/ipv4" },
}
local LOADED_MODULES = {}
-- The raw dissector's next_dissector point ends with an unconditional accept policy (it
-- wins over Haka's default "unknown dissector" drop).
function RT.packet_next_accepts()
  local pp = haka.dissectors.packet.policies.next_dissector.policies
  local last = pp[#pp]
  if not (last and #last.criteria == 0 and #last.actions > 0) then return false end
  for _, a in ipairs(last.actions) do if a ~= policy.accept then return false end end
  return true
end
local function track_modules()
  for mod, loader in pairs(preload) do
    if mod:sub(1, 9) == "protocol/" then
      preload[mod] = function(...)
        LOADED_MODULES[mod] = true
        for _, dep in ipairs(MODULE_DEPS[mod] or {}) do require(dep) end
        return loader(...)
      end
    end
  end
end
function RT.set_app(K, registry)
  local names = {}
  for i, r in ipairs(registry) do
    local name = r[1]
    APP_CODES[name] = i
    names[i] = name
    for j = 2, #r, 2 do
      APP_DEFAULTS[#APP_DEFAULTS + 1] = { name, r[j] == 6 and TCPC or UDPC, r[j + 1] }
    end
    -- a dissector's module loads the connection dissector it stands on
    if r[2] and not MODULE_DEPS["protocol/" .. name] then
      MODULE_DEPS["protocol/" .. name] = { r[2] == 6 and "protocol/tcp_connection" or "protocol/udp_connection" }
    end
  end
  track_modules()
  APPK = K
  K.flow_alive = function(f) return not rawget(f, "_dropped") end
  K.http_lazy_build = function(http, j) return (RT.http_lazy_build(http, j)) end
  RT.http_lazy_cancel = K.http_lazy_cancel
  for _, name in ipairs(names) do
    local mod = "protocol/" .. name
    local orig = preload[mod]
    if orig then
      preload[mod] = function(...)
        for _, d in ipairs(APP_DEFAULTS) do
          if d[1] == name then default_policy(d[2], name, d[3]) end
        end
        return orig(...)
      end
    end
  end
end
local function app_has_listeners()
  local any = false
  for _, d in ipairs(APP_DEFAULTS) do
    local D = haka.dissectors[d[1]]
    local used = false
    if D then for _, ev in pairs(D.events) do if #ev.listeners > 0 then used = true end end end
    if used then default_policy(d[2], d[1], d[3]); any = true end
  end
  for _, d in ipairs({ TCPC, UDPC }) do
    if #d.policies.next_dissector.policies > 0 then any = true end
  end
  return any
end

local function session(f, key, make)
  local s = rawget(f, key)
  if not s then s = make(f); rawset(f, key, s) end
  return s
end

-- http:enable_data_modification() (Haka): the message's body becomes editable; it is
-- re-framed as chunks (Content-Length removed, Transfer-Encoding: chunked) so that its
-- size may change; a body already chunked is re-chunked the same way, its own chunk
-- framing removed (as Haka did); one with another transfer coding (read until the end of
-- the stream) keeps its framing. Returns 0 (not modified), 1 (re-chunked) or 2 (framing
-- kept): the mode Rust frames the body with.
local function dm_reset(http, dir)
  local t = rawget(http, "_dm")
  if t then t[dir] = nil; if not t[0] and not t[1] then rawset(http, "_dm", nil) end end
end
local function dm_enable(http, msg, dir)
  if not rawget(http, "_data_modification") then return 0 end
  rawset(http, "_data_modification", nil)
  -- (no rule reads the body, so none changes it: the message is left as it is)
  if not HTTP_BODY_RULES then return 0 end
  local h = msg.headers
  local te, mode = h["Transfer-Encoding"], 1
  if te == nil then
    h["Content-Length"] = nil
    h["Transfer-Encoding"] = "chunked"
  elseif not string.find(string.lower(te), "chunked%s*$") then
    mode = 2
  end
  local t = rawget(http, "_dm") or {}
  t[dir] = true
  rawset(http, "_dm", t)
  return mode
end

-- Arguments: id, dir, n, the address of n event records (hk_appev, written by
-- LuaEngine::app_events; no varargs, so that this function is compiled by the JIT) and
-- `tabs`, the raw tables of DNS and TLS events (nil when there are none). Per kind:
-- 1 request / 2 response: `p`, `len` the head bytes, `fields` the offset of the first
-- field, a1..c2 the start line's three parts ([start, end) pairs), `flags` (1 canonical,
-- 2 obs-fold, the anomalies from bit 8: K.http_anomaly_names), `rules` the
-- listeners that run (-1 all, else bits: engine/src/prefilter.rs);
-- 7 / 8 a prior request / response head (no rule ran for it): same fields, no rule runs;
-- 3 body data: `p`, `len`, `off` the offset in the packet's payload or -1;
-- 4 dns query: tabs[a1]; 5 dns response: tabs[a1], flags 1 when matched;
-- 6 tls ClientHello: tabs[a1].
ffi.cdef[[ typedef struct { int32_t kind, len, fields, a1, a2, b1, b2, c1, c2, flags, rules; double p, off; } hk_appev; ]]
local appev_p = ffi.typeof("const hk_appev *")
local EVS, EVS_ADDR = nil, -1
-- event kinds (written as numbers below: the main chunk is near LuaJIT's 200 locals):
-- 1 request, 2 response, 3 data, 4 dns query, 5 dns response, 6 tls hello, 7 / 8 prior request / response
-- The body data events of an HTTP message (request_data / response_data, receive_data).
function RT.fire_body(f, http, buf, dir)
  local HTTP = haka.dissectors.http
  fire(dir == 0 and HTTP.events.request_data or HTTP.events.response_data, http, buf)
  if not f._dropped then fire(HTTP.events.receive_data, http, buf, DIRS[dir]) end
end
-- The message of head record `e` (kind 1, 2, 7 or 8), made http.request (a new exchange)
-- or http.response of the flow's http session; returns the session and the message.
local function http_head(f, is_req, e)
  local http = session(f, "_http", APPK.http_session)
  -- (the head's bytes, copied by app.lua into an FFI buffer: no Lua string interned)
  local msg = APPK.http_message(is_req, nil, e.fields,
    e.a1, e.a2, e.b1, e.b2, e.c1, e.c2, e.flags, ffi.cast(u8p, e.p), e.len)
  if is_req then
    APPK.http_lazy_cancel()
    http.request = msg
    http.response = nil
  else
    http.response = msg
  end
  return http, msg
end
-- The prior request of event record j (kind 7) of the current call, made http.request when
-- a rule first reads it (K.http_defer_request): a response rule that does not read it
-- costs no message (a copy of its bytes and a table).
function RT.http_lazy_build(http, j)
  local e = EVS[j]
  local msg = APPK.http_message(true, nil, e.fields,
    e.a1, e.a2, e.b1, e.b2, e.c1, e.c2, e.flags, ffi.cast(u8p, e.p), e.len)
  http.request = msg
  return msg
end
-- A DNS header field `k` a rule sets to `v` in the message of the current datagram (slot
-- 0), written into its bytes: { byte, shift, bits } per field. Returns the value as read
-- back (flags as booleans). Passive mode: "read only buffer".
RT.dns_fields = { id = { 0, 0, 16 }, qr = { 2, 7, 1 }, opcode = { 2, 3, 4 }, aa = { 2, 2, 1 }, tc = { 2, 1, 1 },
  rd = { 2, 0, 1 }, ra = { 3, 7, 1 }, z = { 3, 4, 3 }, rcode = { 3, 0, 4 }, qdcount = { 4, 0, 16 },
  ancount = { 6, 0, 16 }, nscount = { 8, 0, 16 }, arcount = { 10, 0, 16 } }
function RT.dns_write(k, v)
  local d = RT.dns_fields[k]
  local s = S0
  writable(s)
  local n = v
  if d[3] == 1 and type(v) == "boolean" then n = v and 1 or 0 end
  n = num(n, k)
  if n % 1 ~= 0 or n >= 2 ^ d[3] then error(sfmt("invalid value for field '%s'", k), 0) end
  if s.payload_len < 12 then error("read only buffer", 0) end
  local p = s.data + s.payload_off + d[1]
  if d[3] == 16 then
    put16(p, 0, n)
  else
    local mask = lshift(2 ^ d[3] - 1, d[2])
    p[0] = bor(band(p[0], bnot(mask)), lshift(n, d[2]))
  end
  touch(s)
  if d[3] == 1 then return n == 1 end
  return n
end
-- Handlers of the parsed messages of the application dissectors, by record kind (the
-- `kind` of their Rust `Message::to_lua`): (flow, record, raw table, K).
RT.message_handlers = {
  [4] = function(f, ev, raw, K) -- dns query
    local dns = session(f, "_dns", K.dns_session)
    -- (over UDP the message is the current datagram: its header fields are writable)
    local msg = K.dns_message(raw, f.proto == 17 and RT.dns_write)
    rawset(f, "_dnsmsg", msg) -- (its question, for alerts: RT.alert_meta)
    fire(haka.dissectors.dns.events.query, dns, msg)
    if msg._dropped then
      ACT = bor(ACT, ACT_PKT_DROP)
    elseif not f._dropped then
      -- awaited only once sent (Haka records it after its rules: a dropped query's
      -- response is a "mismatching response")
      local q = rawget(f, "_dnsq")
      if not q then q = { _ring = {}, _n = 0 }; rawset(f, "_dnsq", q) end
      q[msg.id] = msg
      -- at most [dns] pending_queries awaited: the oldest is forgotten (a ring)
      local n = q._n + 1
      q._n = n
      local slot = n % H.dns_pending_queries
      local old = q._ring[slot]
      if old and old ~= msg and q[old.id] == old then q[old.id] = nil end
      q._ring[slot] = msg
      -- sent: the response's rules get it read only (Haka: "read only buffer")
      rawset(msg, "_sent", true)
    end
  end,
  [5] = function(f, ev, raw, K) -- dns response (flags: its query was seen)
    local dns = session(f, "_dns", K.dns_session)
    local msg = K.dns_message(raw, f.proto == 17 and RT.dns_write)
    rawset(f, "_dnsmsg", msg)
    local q = rawget(f, "_dnsq")
    local query = q and q[msg.id]
    if q then q[msg.id] = nil end
    -- (Rust matched the response to a query it saw, by the id as received; a query whose
    -- id a rule rewrote is matched here only, by the id it was sent with)
    if not query or (ev.flags == 0 and not rawget(query, "_rid")) then
      haka.alert{ description = "dns: mismatching response", severity = "low" }
      ACT = bor(ACT, ACT_PKT_DROP)
    else
      fire(haka.dissectors.dns.events.response, dns, msg, query)
      if msg._dropped then ACT = bor(ACT, ACT_PKT_DROP) end
    end
  end,
  [6] = function(f, ev, raw, K) -- tls ClientHello
    local tls = session(f, "_tls", K.tls_session)
    local hello = K.tls_hello(raw)
    tls.client_hello = hello
    fire(haka.dissectors.tls.events.client_hello, tls, hello)
  end,
}
function RT.app_events(id, dir, n, evaddr, tabs, proto, state)
  NHEADS = 0
  local f = begin_call(id)
  if not f then
    -- The application was selected by port in Rust (RT.app_ports): the flow object is
    -- made at its first event, from the current packet (slot 0).
    f = new_flow(id, proto, dir)
    f._state = state
    CUR = f
  end
  if not APPK then return end_call(f) end
  local K = APPK
  local HTTP = haka.dissectors.http
  -- (the record array moves only when Rust grows it: cast once per address, so that no
  -- pointer is allocated per call; records are read field by field, no reference kept)
  if evaddr ~= EVS_ADDR then EVS, EVS_ADDR = ffi.cast(appev_p, evaddr), evaddr end
  local evs = EVS
  for i = 1, n do
    if f._dropped then break end
    local j = i - 1
    local k = evs[j].kind
    if k == 7 --[[prior_request]] and not HTTP_BODY_RULES then
      -- a request whose rules did not run (prefilters), for the rules of the events after
      -- it: built if one reads http.request (no body rule keeps it past its response)
      K.http_defer_request(session(f, "_http", K.http_session), j)
    elseif k == 7 --[[prior_request]] or k == 8 --[[prior_response]] then
      -- a head whose rules did not run (prefilters), for the rules of the events after it
      http_head(f, k == 7 --[[prior_request]], evs[j])
    elseif k == 1 --[[request]] or k == 2 --[[response]] then
      local is_req = k == 1 --[[request]]
      local http, msg = http_head(f, is_req, evs[j])
      dm_reset(http, dir)
      local rules = evs[j].rules
      local ev = is_req and HTTP.events.request or HTTP.events.response
      local an = rshift(evs[j].flags, 8)
      if an ~= 0 and HTTP_ANOMALY_RULES then
        -- the message's anomalies first: a rule may drop it before its own rules run
        local names = K.http_anomaly_names
        for b = 1, #names do
          if band(an, lshift(1, b - 1)) ~= 0 then
            fire(HTTP.events.anomaly, http, names[b])
            if not K.app_continue(http, msg) then rules = 0; break end
          end
        end
      end
      if rules == -1 then fire(ev, http, msg) elseif rules ~= 0 then fire_selected(ev, rules, http, msg) end
      local dm = dm_enable(http, msg, dir)
      local modified = K.http_modified(msg)
      if modified or dm ~= 0 then
        -- (a head left as it is, its body to be modified: no bytes, dm its mode)
        local h = NHEADS * 6
        local ea, eb, ev
        if h == 0 and modified then ea, eb, ev = K.http_edit(msg) end
        HEADS[h + 1], HEADS[h + 3], HEADS[h + 4], HEADS[h + 5], HEADS[h + 6] = i, dm, ea, eb, ev
        if ea or not modified then HEADS[h + 2] = false else HEADS[h + 2] = K.http_serialize(msg) end
        NHEADS = NHEADS + 1
        ACT = bor(ACT, ACT_EDITS)
      end
      -- the exchange is over unless body rules are to read it (response_data sees
      -- http.request and http.response): keep idle connections small (the Lua heap is
      -- swept per object); the next request replaces them otherwise
      if not is_req and not HTTP_BODY_RULES and not rawget(http, "_dm") then
        K.http_lazy_cancel()
        http.request = nil; http.response = nil
      end
    elseif k == 9 --[[message end]] then
      -- the end of a message's body: its streamed rules run to their end
      local http = session(f, "_http", K.http_session)
      local d = evs[j].flags
      RT._streamed.finish(d == 0 and HTTP.events.request_data or HTTP.events.response_data, http)
      if not f._dropped then RT._streamed.finish(HTTP.events.receive_data, http, DIRS[d]) end
    elseif k == 3 --[[data]] then
      local http = session(f, "_http", K.http_session)
      -- editable only when its message's body is being modified and the bytes are in
      -- the current packet (c: their offset in its payload)
      local dmt = rawget(http, "_dm")
      local off = evs[j].off
      local editable = dmt and dmt[dir] and off >= 0
      local p, len = ffi.cast(u8p, evs[j].p), evs[j].len
      local buf = sbuf_ct(p, len, editable and off or -1)
      -- streamed rules read an editable body through a stream: the bytes are pushed as an
      -- external view of the packet (as RT.conn_data does) and what they change in them
      -- becomes edits of this packet's payload (off: the bytes' offset in it)
      local ext, tok
      if editable then
        local _, xbuf
        _, xbuf, tok = VBM.external_sub(p, len, true, RT.body_tok)
        RT.body_tok = tok
        ext = { regions = {}, buf = xbuf, data = buf }
        RT._streamed.ext = ext
      end
      local ok, err = true, nil
      if not ext then
        RT.fire_body(f, http, buf, dir)
      else
        -- (the view is ended whatever happens)
        ok, err = pcall(RT.fire_body, f, http, buf, dir)
        RT._streamed.ext = nil
        if ok then
          for r = 1, #ext.regions do
            local sed = VBM.stream_edits(ext.regions[r], tok, p, len)
            if sed then
              for x = 1, #sed do local e = sed[x]; edit(e[1], off + e[2], e[3], e[4], e[5]) end
            end
          end
        end
        VBM.external_end(tok, "copy")
      end
      if not ok then error(err, 0) end
    else
      -- a parsed message (Rust: dissectors::Message, its kind and table)
      local h = RT.message_handlers[k]
      if h then h(f, evs[j], tabs[evs[j].a1], K) end
    end
  end
  -- (a deferred request no response event ended: its message now, while its bytes are there)
  K.http_lazy_flush()
  local n = NHEADS
  NHEADS = 0
  if n == 0 then return end_call(f) end
  local r = end_call(f)
  if n == 1 then return r, HEADS[1], HEADS[2] or nil, HEADS[3], HEADS[4], HEADS[5], HEADS[6] end
  local rest = {}
  for k = 1, n - 1 do
    rest[3 * k - 2], rest[3 * k - 1], rest[3 * k] = HEADS[6 * k + 1], HEADS[6 * k + 2], HEADS[6 * k + 3]
  end
  return r, HEADS[1], HEADS[2] or nil, HEADS[3], HEADS[4], HEADS[5], HEADS[6], rest
end

-- Whether the connection dissector D runs no rule of its own: no listener on its events and
-- no policy but default application selections (default_policy), at least one.
local function apps_by_port_only(D)
  for _, ev in pairs(D.events) do if #ev.listeners > 0 then return false end end
  local any = false
  for _, p in pairs(D.policies) do
    for _, e in ipairs(p.policies) do
      if not e.default_app then return false end
      any = true
    end
  end
  return any
end

-- The default application selections installed: protocol, server port and application
-- code (1 http, 2 dns, 3 tls), three numbers each. With bits 1024 / 2048 of
-- RT.stateful_info, Rust applies them itself (no Lua call per new connection).
function RT.app_ports()
  local out = {}
  for _, d in ipairs({ { TCPC, 6 }, { UDPC, 17 } }) do
    for _, e in ipairs(d[1].policies.next_dissector.policies) do
      if e.default_app then
        out[#out + 1] = d[2]; out[#out + 1] = e.port; out[#out + 1] = APP_CODES[e.default_app]
      end
    end
  end
  return out
end

-- Which stateful events have listeners (Rust skips the work for the others).
-- bits: 1 tcp new/receive/end, 2 tcp receive_data, 4 udp new/receive/end, 8 udp receive_data,
-- 16 tcp policies, 32 udp policies, 64 application dissectors, 128 / 256 / 512 http body /
-- request / response rules, 1024 / 2048 tcp / udp: only default application selections
-- (see RT.app_ports), 4096 http anomaly rules, 8192 / 16384 / 32768: protocol/ipv4,
-- tcp_connection, udp_connection loaded (track_modules), 65536: packet next_dissector accepts,
-- 131072 / 262144: streamed tcp receive_data / http body rules
function RT.stateful_info()
  local b = 0
  local function has(ev) return #ev.listeners > 0 end
  local function pol(p) return #p.policies > 0 end
  if has(TCPC.events.new_connection) or has(TCPC.events.receive_packet) or has(TCPC.events.end_connection) then b = bor(b, 1) end
  if has(TCPC.events.receive_data) then b = bor(b, 2) end
  if has(UDPC.events.new_connection) or has(UDPC.events.receive_packet) or has(UDPC.events.end_connection) then b = bor(b, 4) end
  if has(UDPC.events.receive_data) then b = bor(b, 8) end
  for _, p in pairs(TCPC.policies) do if pol(p) then b = bor(b, 16) end end
  for _, p in pairs(UDPC.policies) do if pol(p) then b = bor(b, 32) end end
  if app_has_listeners() then b = bor(b, 64) end
  local H_ = haka.dissectors.http
  HTTP_BODY_RULES = H_ and (#H_.events.request_data.listeners > 0 or #H_.events.response_data.listeners > 0
      or #H_.events.receive_data.listeners > 0) or false
  if HTTP_BODY_RULES then b = bor(b, 128) end
  if H_ and #H_.events.request.listeners > 0 then b = bor(b, 256) end
  if H_ and #H_.events.response.listeners > 0 then b = bor(b, 512) end
  HTTP_ANOMALY_RULES = H_ and #H_.events.anomaly.listeners > 0 or false
  if HTTP_ANOMALY_RULES then b = bor(b, 4096) end
  if apps_by_port_only(TCPC) then b = bor(b, 1024) end
  if apps_by_port_only(UDPC) then b = bor(b, 2048) end
  if LOADED_MODULES["protocol/ipv4"] then b = bor(b, 8192) end
  if LOADED_MODULES["protocol/tcp_connection"] then b = bor(b, 16384) end
  if LOADED_MODULES["protocol/udp_connection"] then b = bor(b, 32768) end
  if RT.packet_next_accepts() then b = bor(b, 65536) end
  if TCPC.events.receive_data.streamed then b = bor(b, 131072) end
  if H_ and (H_.events.request_data.streamed or H_.events.response_data.streamed
      or H_.events.receive_data.streamed) then b = bor(b, 262144) end
  return b
end
-- The prefilters and header sets of the HTTP request and response rules, for
-- engine/src/prefilter.rs: { n_request_listeners, n_response_listeners, patterns, sets }
-- where each pattern is { event (1 request, 2 response), listener index, field, header
-- name or false, pattern } and each set { event, listener index, name, the rule has no
-- eval, value (nil: remove) }.
function RT.http_prefilters()
  local H_ = haka.dissectors.http
  if not H_ then return { 0, 0, {}, {} } end
  local out, sets = {}, {}
  for ev, e in ipairs({ H_.events.request, H_.events.response }) do
    for j, pf in pairs(e.prefilters or {}) do
      for _, p in ipairs(pf) do out[#out + 1] = { ev, j, p[1], p[2], p[3] } end
    end
    for j, s in pairs(e.set_headers or {}) do
      for _, f in ipairs(s.sets) do sets[#sets + 1] = { ev, j, f[1], s.engine_only, f[2] } end
    end
  end
  return { #H_.events.request.listeners, #H_.events.response.listeners, out, sets }
end
preload["protocol/tcp_connection"] = function() return TCPC end
preload["protocol/udp_connection"] = function() return UDPC end


local function gen_event(code, env, name, ev, view)
  local l = ev.listeners
  if #l == 0 then return end
  local var = "T_" .. name:gsub("[^%w]", "_")
  env[#env + 1] = { var, l }
  if #l <= 64 then
    -- unrolled with constant indices: every call site stays monomorphic for the JIT
    for j = 1, #l do
      code[#code + 1] = sfmt("%s[%d](%s) if s.verdict ~= 0 then goto done end", var, j, view)
    end
  else
    code[#code + 1] = sfmt("for j = 1, #%s do %s[j](%s) if s.verdict ~= 0 then goto done end end", var, var, view)
  end
end
local function gen_policy(code, env, name, pol, view, fields)
  if #pol.policies == 0 then return end
  local var = "P_" .. name
  local vals = "VALS_" .. name
  env[#env + 1] = { var, pol }
  env[#env + 1] = { vals, { ctx = false, values = {}, desc = {} } }
  for k, f in pairs(fields) do code[#code + 1] = sfmt("%s.values.%s = %s", vals, k, f) end
  code[#code + 1] = sfmt("%s.ctx = %s %s:apply(%s) if s.verdict ~= 0 then goto done end", vals, view, var, vals)
end

-- The listeners that feed the Lua flow dissectors (engine/lua/dissector.lua), last on the
-- connection dissectors' receive_data: Haka's receive_data, then the next dissector.
function RT.LD.hook_flows()
  local LD = RT.LD
  if LD.tcp > 0 and not LD.tcp_hooked then
    LD.tcp_hooked = true
    local ev = TCPC.events.receive_data
    -- (RT.conn_data calls the dissector's _receive_view itself when this is the only
    -- listener)
    LD.tcp_listener = function(flow, data, dir)
      local h = rawget(flow, "_lua_next")
      if h and h._receive_data then h:_receive_data(data, dir) end
    end
    ev.listeners[#ev.listeners + 1] = LD.tcp_listener
    -- (the end of each stream is wanted: conn_data's eof calls)
    ev.streamed = true
  end
  if LD.udp > 0 and not LD.udp_hooked then
    LD.udp_hooked = true
    local ev = UDPC.events.receive_data
    ev.listeners[#ev.listeners + 1] = function(flow, pkt, dir)
      local h = rawget(flow, "_lua_next")
      if h and h._receive_datagram then h:_receive_datagram(pkt, dir) end
    end
  end
end
-- The code of the packet dissectors written in Lua for level `parent` ('packet', 'ipv4',
-- ...): the attached ones whose events have rules, then (after a next_dissector policy,
-- `policy` true) the one the policy selected.
function RT.LD.gen(c, env, parent, view, policy)
  local LD = RT.LD
  if LD.packet == 0 then return end
  for k, a in ipairs(LD.attached) do
    if a.parent == parent and RT.LD.wanted(a.cls) then
      local var = "LDA_" .. parent .. "_" .. k
      local cls, sel, pay = a.cls, a.sel, a.payload
      env[#env + 1] = { var, function(v)
        if sel(v) then haka.dissector._run_packet(cls, v, pay) end
      end }
      c[#c + 1] = sfmt("%s(%s) if s.verdict ~= 0 then goto done end", var, view)
    end
  end
  if policy then
    if not RT.LD.psel_run then
      RT.LD.psel_run = function(v)
        local d = RT.LD.psel
        RT.LD.psel = nil
        if type(d) == "table" and d.class then d = d.class end
        haka.dissector._run_packet(d, v)
      end
    end
    env[#env + 1] = { "LDSEL", RT.LD }
    env[#env + 1] = { "LDSEL_RUN", RT.LD.psel_run }
    c[#c + 1] = sfmt("if LDSEL.psel ~= nil then LDSEL_RUN(%s) if s.verdict ~= 0 then goto done end end", view)
  end
end
-- whether a Lua packet dissector has anything to run for: rules on its events or policies
-- (its own or, through them, its next dissectors')
function RT.LD.wanted(cls)
  for _, ev in pairs(rawget(cls, "events") or {}) do
    if #ev.listeners > 0 then return true end
  end
  local pol = rawget(cls, "policies")
  if pol and #pol.next_dissector.policies > 0 then return true end
  return cls.always == true
end
function RT.finish()
  if n_registered == 0 and H.first_load() then log.warning("no registered rule") end
  RT.LD.hook_flows()
  RT.flow_sizes(0, 0, 0) -- (what the rules file reached from the globals: shared, see there)
  if H.required_chain then
    H.l4_undissected = { [6] = not LOADED_MODULES["protocol/tcp"], [17] = not LOADED_MODULES["protocol/udp"],
      [1] = not LOADED_MODULES["protocol/icmp"] }
  else
    H.l4_undissected = {}
  end
  local D = haka.dissectors
  local code, env = {}, {}
  local function sect(build)
    local c = {}
    build(c)
    return c
  end
  local pkt = sect(function(c)
    gen_event(c, env, "packet_recv", D.packet.events.receive_packet, "VP[i]")
    RT.LD.gen(c, env, "packet", "VP[i]", false)
  end)
  local eth = sect(function(c) gen_event(c, env, "eth_recv", D.ethernet.events.receive_packet, "VE[i]") end)
  -- Haka's ipv4 event model (s.fragment, see Pass in lua/mod.rs): receive_packet for each
  -- packet received (fragments included), receive_packet_reassembled for each datagram
  -- the upper dissectors see (0: both; 1: a fragment, the first only; 2: a reassembled
  -- datagram, the second only).
  local ip4r = sect(function(c) gen_event(c, env, "ipv4_recv", D.ipv4.events.receive_packet, "V4[i]") end)
  local ip6r = sect(function(c) gen_event(c, env, "ipv6_recv", D.ipv6.events.receive_packet, "V6[i]") end)
  local ip4 = sect(function(c)
    gen_event(c, env, "ipv4_reasm", D.ipv4.events.receive_packet_reassembled, "V4[i]")
    gen_policy(c, env, "ipv4", D.ipv4.policies.next_dissector, "V4[i]", { proto = "s.proto" })
    RT.LD.gen(c, env, "ipv4", "V4[i]", #D.ipv4.policies.next_dissector.policies > 0)
  end)
  local ip6 = sect(function(c)
    gen_event(c, env, "ipv6_reasm", D.ipv6.events.receive_packet_reassembled, "V6[i]")
    gen_policy(c, env, "ipv6", D.ipv6.policies.next_dissector, "V6[i]", { proto = "s.proto" })
    RT.LD.gen(c, env, "ipv6", "V6[i]", #D.ipv6.policies.next_dissector.policies > 0)
  end)
  local l4 = {}
  for _, p in ipairs({ { "tcp", "VT", "6" }, { "udp", "VU", "17" }, { "icmp", "VI", "1 or p == 58" } }) do
    local name, view, cond = p[1], p[2] .. "[i]", p[3]
    local c = {}
    gen_event(c, env, name .. "_recv", D[name].events.receive_packet, view)
    if name ~= "icmp" then
      gen_policy(c, env, name, D[name].policies.next_dissector, view,
        { srcport = "be16(s.data, s.l4_off)", dstport = "be16(s.data, s.l4_off + 2)" })
      RT.LD.gen(c, env, name, view, #D[name].policies.next_dissector.policies > 0)
    end
    gen_event(c, env, name .. "_send", D[name].events.send_packet, view)
    if #c > 0 then l4[#l4 + 1] = { cond, c } end
  end
  local ip4s = sect(function(c) gen_event(c, env, "ipv4_send", D.ipv4.events.send_packet, "V4[i]") end)
  local ip6s = sect(function(c) gen_event(c, env, "ipv6_send", D.ipv6.events.send_packet, "V6[i]") end)
  local eths = sect(function(c) gen_event(c, env, "eth_send", D.ethernet.events.send_packet, "VE[i]") end)
  local pkts = sect(function(c) gen_event(c, env, "packet_send", D.packet.events.send_packet, "VP[i]") end)
  has_rules = #env > 0
  -- Haka's chain without protocol/ipv4 ([rules] dissectors = "required"): after the
  -- packet rules, the raw dissector's "unknown dissector" policy alerts and drops the
  -- packet (Rust does it when no packet rule runs).
  if H.required_chain and not LOADED_MODULES["protocol/ipv4"] and not RT.packet_next_accepts() and has_rules then
    env[#env + 1] = { "UNKNOWN_IPV4", function(s)
      haka.alert{ description = "dropping unknown dissector 'ipv4'" }
      s.verdict = 1
    end }
    pkt[#pkt + 1] = "if s.l3 == 4 then UNKNOWN_IPV4(s) goto done end"
  end

  local body = {}
  local function add(t) for _, l in ipairs(t) do body[#body + 1] = l end end
  body[#body + 1] = "if s.fragment ~= 2 then"
  add(pkt)
  if #eth > 0 then body[#body + 1] = "if s.l3_off >= 14 then"; add(eth); body[#body + 1] = "end" end
  if #ip4r > 0 then body[#body + 1] = "if s.l3 == 4 then"; add(ip4r); body[#body + 1] = "end" end
  if #ip6r > 0 then body[#body + 1] = "if s.l3 == 6 then"; add(ip6r); body[#body + 1] = "end" end
  body[#body + 1] = "end"
  body[#body + 1] = "if s.fragment == 1 then goto done end"
  if #ip4 > 0 then body[#body + 1] = "if s.l3 == 4 then"; add(ip4); body[#body + 1] = "end" end
  if #ip6 > 0 then body[#body + 1] = "if s.l3 == 6 then"; add(ip6); body[#body + 1] = "end" end
  if #l4 > 0 then
    body[#body + 1] = "if s.has_l4 == 1 then local p = s.proto"
    for k, e in ipairs(l4) do
      body[#body + 1] = (k == 1 and "if " or "elseif ") .. "p == " .. e[1] .. " then"
      add(e[2])
    end
    body[#body + 1] = "end end"
  end
  if #ip4s > 0 then body[#body + 1] = "if s.l3 == 4 then"; add(ip4s); body[#body + 1] = "end" end
  if #ip6s > 0 then body[#body + 1] = "if s.l3 == 6 then"; add(ip6s); body[#body + 1] = "end" end
  if #eths > 0 then body[#body + 1] = "if s.l3_off >= 14 then"; add(eths); body[#body + 1] = "end" end
  add(pkts)

  local src = { "local E, B, S, VP, VE, V4, V6, VT, VU, VI, be16 = ..." }
  for k, e in ipairs(env) do src[#src + 1] = sfmt("local %s = E[%d]", e[1], k) end
  -- (the due timers of the state machines first: haka._timer)
  src[#src + 1] = "local TM = haka._timer"
  src[#src + 1] = "return function(i0, n) for i = i0, n - 1 do B.cur = i do local s = S[i]"
  src[#src + 1] = "if TM.n > 0 and s.ts_sec > 0 then TM.check(s.ts_sec + s.ts_nsec * 1e-9) end"
  for _, l in ipairs(body) do src[#src + 1] = l end
  src[#src + 1] = "end ::done:: end end"
  local vals = {}
  for k, e in ipairs(env) do vals[k] = e[2] end
  local chunk, err = loadstring(table.concat(src, "\n"), "=haka-dispatch")
  if not chunk then error("internal dispatcher error: " .. tostring(err)) end
  loop = chunk(vals, B, S, V.packet, V.ethernet, V.ipv4, V.ipv6, V.tcp, V.udp, V.icmp, be16)
  -- (second result: a fragment before reassembly has something to run)
  return has_rules, #pkt + #eth + #ip4r + #ip6r > 0
end

-- One call per burst. Errors are caught with one pcall around the loop and the loop
-- resumes at the next packet; the failing packet gets verdict 2.
local pcall = pcall
-- Runs the packets of the burst from index `start` (0-based) on. Returns nil, or the index
-- to resume from when a rule ran the heap out of memory (that packet's verdict and error
-- are not recorded here: the engine does it): the engine then frees or recreates the state
-- before the rest of the burst, rather than refusing it too.
function RT.run(start)
  local n = B.n
  local i = start or 0
  if i == 0 then
    if PLD.n > 0 then PLD.drop() end
    RT.http_lazy_cancel()
    if PDATA_USED then PDATA = {}; PDATA_USED = false end
    forge_reset()
  end
  in_burst = true
  while i < n do
    local ok, err = pcall(loop, i, n)
    if ok then break end
    local c = B.cur
    if type(err) == "string" and string.find(err, "not enough memory", 1, true) then
      -- The heap is full: nothing may be allocated here, not even the reference to the
      -- packet's slot that S[c] makes when this runs interpreted (the error would escape
      -- and fail the rest of the burst). The engine gives packet c the rule-error verdict
      -- and counts the error.
      in_burst = false
      return c + 1
    end
    S[c].verdict = 2
    i = c + 1
    B.errors = B.errors + 1
    RT.blame(err)
    pcall(H.fresh_budget) -- (never raises)
    if #errs < MAX_ERROR_MESSAGES then errs[#errs + 1] = tostring(err) end
  end
  in_burst = false
  if PLD.n > 0 then PLD.finish() end
  return nil
end

-- the payload rewrites of the last run or stateful call (B.rewrites of them): see PLD.finish
function RT.take_rewrites()
  local r = PLD.rewrites
  PLD.rewrites = {}
  B.rewrites = 0
  return r
end
function RT.take_forged() return (forge.take()) end

function RT.take_errors()
  local e = errs
  errs = {}
  return e, RT.n_disabled
end

-- The bytes each flow's Lua object holds (what the rules and Lua dissectors keep on it),
-- for the flow memory budget: the worker calls this between bursts, while the Lua heap
-- is large, for up to max_flows flows per call, resuming where the last call stopped.
-- Returns a reused array { id1, bytes1, id2, bytes2, ... }. The walk counts the tables,
-- strings, cdata and coroutines reachable from the flow object, once each, but not
-- metatables, functions, or what the rules file reached from the globals when it loaded
-- (modules, classes, configuration: shared, not the flow's). A flow whose objects number
-- more than node_budget is reported at over_bytes (over any cap).
-- (its own function: the main chunk is at LuaJIT's 200 locals)
RT.flow_sizes = (function ()
  local SEEN = setmetatable({}, { __mode = "k" })
  local SHARED = setmetatable({}, { __mode = "k" })
  local shared_done = false
  local stack, out = {}, {}
  local cursor = nil
  local gen = 0
  local sizeof, istype, typeof = ffi.sizeof, type, ffi.typeof
  -- LuaJIT (GC64) object sizes: table header, array slot, hash node, string header,
  -- cdata header, a coroutine with its initial stack
  local TAB, SLOT, NODE, STR, CD, THREAD = 64, 8, 24, 24, 16, 1024
  local function mark_shared(root)
    local n, top = 0, 1
    stack[1] = root
    while top > 0 and n < 200000 do
      local t = stack[top]; stack[top] = nil; top = top - 1
      if not SHARED[t] then
        SHARED[t] = true
        n = n + 1
        for k, v in next, t do
          if istype(v) == "table" and not SHARED[v] then top = top + 1; stack[top] = v end
          if istype(k) == "table" and not SHARED[k] then top = top + 1; stack[top] = k end
        end
      end
    end
    for i = top, 1, -1 do stack[i] = nil end
  end
  local function size_of(root, budget)
    gen = gen + 1
    SEEN[root] = gen
    local bytes, nodes, top = 0, 0, 1
    stack[1] = root
    while top > 0 do
      local o = stack[top]; stack[top] = nil; top = top - 1
      local tp = istype(o)
      if tp == "string" then
        bytes = bytes + STR + #o
      elseif tp == "cdata" then
        local ok, n = pcall(sizeof, o)
        bytes = bytes + CD + (ok and n or 8)
      elseif tp == "thread" then
        bytes = bytes + THREAD
      elseif tp == "table" then
        nodes = nodes + 1
        if nodes > budget then
          for i = top, 1, -1 do stack[i] = nil end
          return nil
        end
        local alen = #o
        bytes = bytes + TAB + alen * SLOT
        for k, v in next, o do
          if istype(k) ~= "number" or k < 1 or k > alen then bytes = bytes + NODE end
          local tv = istype(v)
          if tv == "string" or tv == "cdata" or tv == "thread" or tv == "table" then
            if SEEN[v] ~= gen and not SHARED[v] then SEEN[v] = gen; top = top + 1; stack[top] = v end
          end
          local tk = istype(k)
          if tk == "string" then
            -- (key strings are interned, shared with every table using the name)
          elseif tk == "table" or tk == "cdata" then
            if SEEN[k] ~= gen and not SHARED[k] then SEEN[k] = gen; top = top + 1; stack[top] = k end
          end
        end
      end
    end
    return bytes
  end
  return function (max_flows, node_budget, over_bytes)
    if not shared_done then
      -- (at load, RT.finish: before any flow object exists, so none is taken for shared)
      shared_done = true
      SHARED[FLOWS] = true
      mark_shared(_G)
      mark_shared(package.loaded)
    end
    local n = 0
    if cursor ~= nil and FLOWS[cursor] == nil then cursor = nil end
    local id, f = next(FLOWS, cursor)
    while id ~= nil and n < max_flows do
      local b = size_of(f, node_budget)
      n = n + 1
      out[2 * n - 1] = id
      out[2 * n] = b or over_bytes
      cursor = id
      id, f = next(FLOWS, cursor)
    end
    if id == nil then cursor = nil end
    for i = 2 * n + 1, #out do out[i] = nil end
    return out
  end
end)()

function RT.fire(name)
  local ev = all_events[name]
  if not ev then return end
  for _, f in ipairs(ev.listeners) do f() end
end

return RT
