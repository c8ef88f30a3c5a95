-- Application dissector objects (http, dns, tls) of the Haka 0.4 Lua API, for "Haka on DPDK".
--
-- Run once per Lua state right after haka.lua, by engine/src/lua/app_values.rs `load`, with
-- (H, K):
--   H  the Rust helpers table; app_values.rs adds H.http_split_uri, H.http_normalize_uri and
--      H.http_split_cookies (thin wrappers over engine/src/http.rs).
--   K  haka.lua internals (new_event, new_policy, buf_ct, criterion). This chunk adds the
--      constructors that the event dispatcher (tcp_connection / udp_connection, haka.lua) calls,
--      and returns K:
--
--   K.http_session(flow) -> http      per-connection object, first argument of the http events
--   K.dns_session(flow)  -> dns       same for dns events, K.tls_session(flow) for tls
--   K.http_message(is_req, head, fields, a1, a2, b1, b2, c1, c2, flags, p, len) -> request or response
--                                     from the head bytes (see http_message below)
--   K.http_request(raw)  -> request   raw: app_values.rs `request_table` (same values, a table)
--   K.http_response(raw) -> response  raw: app_values.rs `response_table`
--   K.http_modified(msg) -> bool      true when a rule changed the start line or a header
--   K.http_serialize(msg)-> string    the head to put on the wire (original bytes if unmodified)
--   K.http_edit(msg)     -> a, b, v   when the only change is one field value rewritten in
--                                     place: replace bytes [a, b) of the head as received by v
--   K.dns_message(raw, write) -> msg  raw: app_values.rs `dns_table`; write: RT.dns_write or nil (header
--                                     fields then written into the datagram); msg:drop() sets msg._dropped
--   K.tls_hello(raw)     -> hello     raw: app_values.rs `tls_table`
--   K.app_continue(sess, msg) -> bool continue check of the app events (false once sess or msg
--                                     was dropped, or K.flow_alive(flow) says the flow is gone)
--   K.flow_alive                      optional hook the dispatcher may set: function(flow) -> bool
--   K.http_defer_request(http, j)     http.request becomes the request of event record j, built
--                                     by K.http_lazy_build(http, j) (set by the dispatcher) when
--                                     first read; K.http_lazy_cancel() forgets it,
--                                     K.http_lazy_flush() builds it if still pending
--
-- Session objects (http, dns, tls) delegate unknown keys to their flow (Haka's parent
-- delegation): http.srcip, http.dstport, ... read the flow; flow methods are bound, so that
-- http:foo(...) calls flow:foo(...). http:drop() and http:reset() mark the session
-- (_dropped = true) and call flow:drop() / flow:reset().
--
-- Policy actions haka.dissectors.{http,dns,tls}.install(pol, ctx, values, desc) call
-- ctx:select_next_dissector(name): the dispatcher passes its tcp_connection / udp_connection
-- flow object as ctx and must implement select_next_dissector.
local H, K = ...
local type, tostring, tonumber, error, setmetatable, getmetatable, rawget, rawset =
  type, tostring, tonumber, error, setmetatable, getmetatable, rawget, rawset
local sfmt, slower, sfind, ssub, sgsub = string.format, string.lower, string.find, string.sub, string.gsub
local tconcat, tremove = table.concat, table.remove
local new_event = K.new_event
local D = haka.dissectors
local ipv4_addr = D.ipv4.addr

---------------------------------------------------------------------------
-- pairs() honours __pairs (LuaJIT without LUA52COMPAT ignores it), so that Haka rules that
-- iterate `pairs(request.headers)` get the header names and values in order. Plain tables
-- behave as before (same `next` iterator, so JIT-compiled pairs loops stay compiled).
---------------------------------------------------------------------------
do
  local rawpairs = pairs
  pairs = function(t)
    local mt = getmetatable(t)
    if type(mt) == "table" then
      local p = rawget(mt, "__pairs")
      if p ~= nil then return p(t) end
    end
    return rawpairs(t)
  end
end

-- debug.pprint (engine/lua/lib/debug.lua, its object protocol): these objects print as Haka
-- printed its grammar results, `class NAME { ... }`.
local function by_string(a, b) return tostring(a) < tostring(b) end
local function sorted(keys)
  table.sort(keys, by_string)
  return keys
end
local function pp_class(name, fields) return { kind = "class", name = name, fields = fields } end
-- the entries of a plain table, sorted by key
local function pp_plain(t, add)
  local keys = {}
  for k in next, t do keys[#keys + 1] = k end
  sorted(keys)
  for i = 1, #keys do add(keys[i], t[keys[i]]) end
end

local function strval(v, what, level)
  local tv = type(v)
  if tv == "string" then return v end
  if tv == "number" then return (tostring(v)) end
  error(sfmt("%s: string expected, got %s", what, tv), level + 1)
end

---------------------------------------------------------------------------
-- events continue check and sessions
---------------------------------------------------------------------------
local function app_continue(sess, msg)
  if type(sess) == "table" then
    if rawget(sess, "_dropped") then return false end
    local alive = K.flow_alive
    if alive ~= nil then
      local f = rawget(sess, "flow")
      if f ~= nil and not alive(f) then return false end
    end
  end
  if type(msg) == "table" and rawget(msg, "_dropped") then return false end
  return true
end
K.app_continue = app_continue

local Session = {}
function Session.drop(self)
  rawset(self, "_dropped", true)
  local f = rawget(self, "flow")
  if f ~= nil then f:drop() end
end
function Session.reset(self)
  rawset(self, "_dropped", true)
  local f = rawget(self, "flow")
  if f ~= nil then f:reset() end
end
function Session.enable_data_modification(self) rawset(self, "_data_modification", true) end
-- Haka 0.4 Dissector:parent(): the flow (any argument: there is one parent level here)
function Session.parent(self) return (rawget(self, "flow")) end
function Session.can_continue(self) return (app_continue(self)) end
Session.error = Session.drop -- Haka's Dissector:error() (haka.dissector.pcall)

-- The request of the exchange whose response is being handled, when no rule ran for it
-- (prefilters): built only if something reads `http.request` (the bytes stay Rust's for
-- the current call). LAZY_REQ is its session, LAZY_J its event record; K.http_lazy_build
-- (haka.lua) makes the message.
local LAZY_REQ, LAZY_J = nil, 0
local function lazy_request(sess)
  LAZY_REQ = nil
  return (K.http_lazy_build(sess, LAZY_J))
end
-- http.request of `sess` is the request of event record j, built when first read.
function K.http_defer_request(sess, j)
  rawset(sess, "request", nil)
  rawset(sess, "response", nil)
  LAZY_REQ, LAZY_J = sess, j
end
-- The deferred request is no longer the exchange's (a new head, the exchange is over).
function K.http_lazy_cancel() LAZY_REQ = nil end
-- End of the call that deferred it: built now if still pending (kept for later calls).
function K.http_lazy_flush()
  local s = LAZY_REQ
  if s ~= nil then lazy_request(s) end
end

local session_mt = {
  __index = function(self, k)
    if k == "request" and self == LAZY_REQ then return (lazy_request(self)) end
    local m = Session[k]
    if m ~= nil then return m end
    local flow = rawget(self, "flow")
    if k == "connection" then return flow end -- Haka 0.2/0.3 name of the flow
    if flow == nil then return nil end
    local v = flow[k]
    if type(v) == "function" then
      -- flow method: bind it once per session so that sess:k(...) calls flow:k(...)
      local bound = rawget(self, "_bound")
      if bound == nil then bound = {}; rawset(self, "_bound", bound) end
      local b = bound[k]
      if b == nil or bound[b] ~= v then
        b = function(s, ...)
          if s == self then return v(flow, ...) end
          return v(s, ...)
        end
        bound[k] = b
        bound[b] = v
      end
      return b
    end
    return v
  end,
  __tostring = function(self) return "<" .. tostring(rawget(self, "name")) .. " session>" end,
}
local tnew = require("table.new")
local function new_session(name, flow)
  -- room for request and response (http) or client_hello: no resize when they are set
  local s = tnew(0, 4)
  s.name, s.flow = name, flow
  return (setmetatable(s, session_mt))
end
function K.http_session(flow) return (new_session("http", flow)) end
function K.dns_session(flow) return (new_session("dns", flow)) end
function K.tls_session(flow) return (new_session("tls", flow)) end

---------------------------------------------------------------------------
-- http: uri and cookies helpers
---------------------------------------------------------------------------
local function self_call(s) return s end

local Uri = {}
-- Haka's tostring(split): scheme, user:pass and port only with a host, the query rebuilt from
-- args (engine/src/http.rs UriParts::to_uri).
local function uri_tostring(u) return (H.http_uri_tostring(u)) end
-- (Haka's split has `args` only when there is a query)
local uri_mt = { __index = Uri, __tostring = uri_tostring, __call = self_call,
  __pprint_info = pp_class("HttpUriSplit", function(u, add)
    pp_plain(u, function(k, v)
      if k ~= "args" or rawget(u, "query") ~= nil then add(k, v) end
    end)
  end) }
local function uri_split(uri)
  uri = strval(uri, "http.uri.split", 2)
  return (setmetatable(H.http_split_uri(uri), uri_mt))
end
-- Haka's split:normalize(): normalizes the fields in place (as they are now) and returns the
-- split uri; tostring() of the result is the normalized uri.
function Uri.normalize(self)
  H.http_uri_normalize_split(self)
  return self
end
Uri.tostring = uri_tostring
local function uri_normalize(uri)
  uri = strval(uri, "http.uri.normalize", 2)
  return (H.http_normalize_uri(uri))
end

local cookies_mt = {
  __tostring = function(c)
    local out = {}
    for k, v in next, c do out[#out + 1] = tostring(k) .. "=" .. tostring(v) end
    return (tconcat(out, "; "))
  end,
  __call = self_call,
  __pprint_info = pp_class("HttpCookiesSplit", pp_plain),
}
local function cookies_split(line)
  if line == nil then line = "" end
  line = strval(line, "http.cookies.split", 2)
  return (setmetatable(H.http_split_cookies(line), cookies_mt))
end

---------------------------------------------------------------------------
-- http: messages and their headers
---------------------------------------------------------------------------
-- A request or response is one table whose array part holds its state (slots M_*), so that
-- building it is one allocation: the head as received (or as rewritten in place),
-- the positions of its start line's three parts, and caches filled when a rule first
-- reads them (start-line fields, headers object, header list, cookies, split uri). Rule
-- data (`request.foo = x`) goes to the hash part, created only then.
--
-- The head as received is a copy of Rust's bytes in an FFI buffer (M_HEAD a HEADBUF):
-- no Lua string is interned for it (hashing a few hundred bytes that look alike from one
-- message to the next, collisions included, cost more than the rules' own work). It
-- becomes a Lua string (head_str) only when a rule needs more than a start-line field, a
-- header lookup or one in-place rewrite; the fields read are cut from it (head_sub).
-- The headers object (its message at index 0, created on first access) reads the head
-- (fields from index M_OFF + 1; M_OFF is the index of the start line's "\n") until a rule
-- needs more than a lookup or an in-place rewrite: then the message's M_LIST, the header
-- list in order (entries { name, value, lowercase name }), is built and is the source of
-- truth from then on. FL_CANON: every field is "name: value\r\n", so that rewriting one in
-- place gives the bytes a full re-serialisation would; otherwise a write builds the list.
local M_HEAD, M_OFF, M_FLAGS, M_P1, M_P2, M_F1, M_LMOD, M_HDRS, M_HMOD, M_LIST, M_COOK, M_SPLIT, M_EDIT =
  1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13, 14, 15 -- M_F1 .. M_F1 + 2: the start line's fields
-- (15 slots at most: with index 0, 16 is the largest array LuaJIT allocates with its table)
local FL_CANON, FL_FOLD, FL_REQ = 1, 2, 4
local P17 = 131072 -- positions (< 2^17: heads are at most 64 KiB) packed three per number
-- the names of the HTTP anomalies (engine/src/http.rs Anomaly), bit i - 1 of flags >> 8 for
-- the i-th, read by the dispatcher (haka.lua)
K.http_anomaly_names = H.http_anomaly_names

local Headers = {}
local headers_mt = {}
local sbyte = string.byte
local band = require("bit").band
local ffi = require("ffi")
-- (its length inside: the message's array stays at 15 slots)
local HEADBUF = ffi.typeof("struct { int32_t n; char b[?]; }")
local fstring, fcopy = ffi.string, ffi.copy

-- The head as a Lua string (made from the FFI copy once, when first needed).
local function head_str(m)
  local s = m[M_HEAD]
  if type(s) ~= "string" then
    s = fstring(s.b, s.n)
    m[M_HEAD] = s
  end
  return s
end
-- Bytes i .. j (1-based, inclusive, as string.sub) of the head, j < i + 1 giving "".
local function head_sub(m, i, j)
  local s = m[M_HEAD]
  if type(s) == "string" then return (ssub(s, i, j)) end
  local n = s.n
  if j > n then j = n end
  if i < 1 then i = 1 end
  if j < i then return "" end
  return (fstring(s.b + (i - 1), j - i + 1))
end
local function head_len(m)
  local s = m[M_HEAD]
  if type(s) == "string" then return #s end
  return s.n
end

-- names already checked (bounded: rules use a few names)
local NAME_OK, NAME_OKS = {}, 0
local function check_name(name, level)
  if NAME_OK[name] then return end
  if type(name) ~= "string" then
    error(sfmt("http headers: header name must be a string, got %s", type(name)), level + 1)
  end
  if name == "" or sfind(name, "[%c%s:]") then
    error(sfmt("http headers: invalid header name '%s'", name), level + 1)
  end
  if NAME_OKS >= 512 then NAME_OK, NAME_OKS = {}, 0 end
  NAME_OK[name] = true
  NAME_OKS = NAME_OKS + 1
end
local function touched(m)
  m[M_HMOD] = true
  m[M_COOK] = false -- the message's split_cookies, cached
end

-- A field value rewritten in place in a head still as received is first only recorded
-- (lazy_set): M_HMOD holds the positions a + e * P17 (the value's bytes are a + 1 .. e - 2
-- of the head), M_EDIT the new value. It is applied to the head string when the head is read again, or handed to
-- Rust as is (K.http_edit), which splices it into the bytes it holds: no head string is
-- built for the common "set one header" rule.
local function apply_edit(m)
  local v = m[M_EDIT]
  if v then
    local pos = m[M_HMOD]
    local a = pos % P17
    local e = (pos - a) / P17
    local s = head_str(m)
    m[M_HEAD] = ssub(s, 1, a) .. v .. ssub(s, e - 1)
    m[M_HMOD] = true
    m[M_EDIT] = false
  end
end

-- Whether a field could have this name (a colon would match across a name and a value).
local function lookup_name_ok(k)
  return k ~= "" and not sfind(k, ":", 1, true)
end

-- The value of the field whose bytes after the colon start at index a and whose line
-- ends with the "\n" at index e: without the line's CR and surrounding spaces and tabs.
local function field_value(s, a, e)
  local b = e - 1
  if sbyte(s, b) == 13 then b = b - 1 end
  while a <= b do
    local c = sbyte(s, a)
    if c ~= 32 and c ~= 9 then break end
    a = a + 1
  end
  while b >= a do
    local c = sbyte(s, b)
    if c ~= 32 and c ~= 9 then break end
    b = b - 1
  end
  return (ssub(s, a, b))
end

-- First field named `name` whose line starts at index `from` + 1 or later (case-insensitive):
-- index after its colon, index of its line's "\n", value start and end (inclusive). Found
-- by engine/src/http.rs find_field through the FFI: no loop and no string here.
local http_field = ffi.cast("int32_t (*)(const char *, int32_t, int32_t, const char *, int32_t, int32_t *)",
  H.http_field_fn)
local FIELD = ffi.new("int32_t[4]")
local function lazy_find(m, name, from)
  if m[M_EDIT] then apply_edit(m) end
  local s, r = m[M_HEAD]
  if type(s) == "string" then
    r = http_field(s, #s, from, name, #name, FIELD)
  else
    r = http_field(s.b, s.n, from, name, #name, FIELD)
  end
  if r == 0 then return nil end
  return FIELD[0], FIELD[1], FIELD[2], FIELD[3]
end

local function materialize(m)
  local l = m[M_LIST]
  if l then return l end
  if m[M_EDIT] then apply_edit(m) end
  local s = head_str(m)
  local i = m[M_OFF] + 1
  local n = 0
  l = {}
  while true do
    local e = sfind(s, "\n", i, true)
    if e == nil then break end
    local c = sbyte(s, i)
    if c == 13 or c == 10 then break end -- the empty line
    if c == 32 or c == 9 then
      -- obs-fold: continues the previous value, joined by a space
      local cont, f = field_value(s, i, e), l[n]
      if f ~= nil and cont ~= "" then f[2] = f[2] == "" and cont or (f[2] .. " " .. cont) end
    else
      local colon = sfind(s, ":", i, true)
      local ne = colon - 1
      while sbyte(s, ne) == 32 or sbyte(s, ne) == 9 do ne = ne - 1 end -- `Host : x` (tolerated)
      local name = ssub(s, i, ne)
      n = n + 1
      l[n] = { name, field_value(s, colon + 1, e), slower(name) }
    end
    i = e + 1
  end
  m[M_LIST] = l
  return l
end

headers_mt.__index = function(h, k)
  if type(k) == "string" then
    local f = Headers[k]
    if f ~= nil then return f end
    local m = rawget(h, 0)
    local l = m[M_LIST]
    if not l then
      if not lookup_name_ok(k) then return nil end
      local a, _, vs, ve = lazy_find(m, k, m[M_OFF])
      if a == nil then return nil end
      return (head_sub(m, vs, ve))
    end
    local lk = slower(k)
    for i = 1, #l do
      local e = l[i]
      if e[3] == lk then return e[2] end
    end
    return nil
  elseif type(k) == "number" then
    local e = materialize(rawget(h, 0))[k]
    if e ~= nil then return { name = e[1], value = e[2] } end
  end
  return nil
end

-- In place in the head (canonical heads): h[name] = value for a name present once, or
-- absent (appended before the empty line). Returns false when the list is needed. The
-- first such rewrite of a head still as received is only recorded (M_EDIT), an append
-- as the insertion of the whole field line.
local function lazy_set(m, name, value)
  if m[M_LIST] or band(m[M_FLAGS], FL_CANON) == 0 then return false end
  if sfind(value, "\r", 1, true) or sfind(value, "\n", 1, true) then return false end
  local a, e = lazy_find(m, name, m[M_OFF])
  local s
  if a == nil then
    if not m[M_HMOD] then
      -- the head is still as received: record the insertion of the line before the final
      -- "\r\n" (bytes a + 1 .. e - 2, none, replaced by it: see apply_edit, K.http_edit)
      local n = head_len(m)
      touched(m)
      m[M_HMOD] = (n - 2) + n * P17
      m[M_EDIT] = name .. ": " .. value .. "\r\n"
      return true
    end
    s = head_str(m)
    s = ssub(s, 1, #s - 2) .. name .. ": " .. value .. "\r\n\r\n"
  else
    if lazy_find(m, name, e) ~= nil then return false end -- duplicates
    -- canonical: "name: value\r\n", the value from a + 1 to e - 2
    if e - a - 2 == #value and head_sub(m, a + 1, e - 2) == value then return true end
    if not m[M_HMOD] then
      -- the head is still as received: record the edit (positions valid in those bytes)
      touched(m)
      m[M_HMOD] = a + e * P17
      m[M_EDIT] = value
      return true
    end
    s = head_str(m)
    s = ssub(s, 1, a) .. value .. ssub(s, e - 1)
  end
  m[M_HEAD] = s
  touched(m)
  return true
end

-- h[name] = value: replaces the first `name` header in place (its name spelling kept) and
-- removes the later ones; appends when absent. h[name] = nil removes every `name` header.
headers_mt.__newindex = function(h, name, value)
  check_name(name, 2)
  local m = rawget(h, 0)
  local lk
  if value == nil then
    lk = slower(name)
    local l = materialize(m)
    local removed = false
    for i = #l, 1, -1 do
      if l[i][3] == lk then tremove(l, i); removed = true end
    end
    if removed then touched(m) end
    return
  end
  if type(value) ~= "string" then -- (the message is built only for other types)
    value = strval(value, "http headers: value of '" .. name .. "'", 2)
  end
  if lazy_set(m, name, value) then return end
  lk = slower(name)
  local l = materialize(m)
  local first
  for i = 1, #l do
    if l[i][3] == lk then first = i; break end
  end
  if first == nil then
    l[#l + 1] = { name, value, lk }
    touched(m)
    return
  end
  local changed = false
  for i = #l, first + 1, -1 do
    if l[i][3] == lk then tremove(l, i); changed = true end
  end
  local e = l[first]
  if e[2] ~= value then e[2] = value; changed = true end
  if changed then touched(m) end
end

local function headers_iter(h)
  local l = materialize(rawget(h, 0))
  local i = 0
  return function()
    i = i + 1
    local e = l[i]
    if e ~= nil then return e[1], e[2] end
    return nil
  end
end
headers_mt.__pairs = function(h) return headers_iter(h), h, nil end
-- Haka: one entry per name (the first value), sorted
headers_mt.__pprint_info = pp_class("HeaderResult", function(h, add)
  local l = materialize(rawget(h, 0))
  local names, first = {}, {}
  for i = 1, #l do
    local lk = l[i][3]
    if first[lk] == nil then
      first[lk] = l[i][2]
      names[#names + 1] = l[i][1]
    end
  end
  sorted(names)
  for i = 1, #names do add(names[i], first[slower(names[i])]) end
end)
headers_mt.__tostring = function(h)
  local out = {}
  local l = materialize(rawget(h, 0))
  for i = 1, #l do out[#out + 1] = l[i][1] .. ": " .. l[i][2] end
  return (tconcat(out, "\n"))
end

-- for name, value in headers:pairs() do ... end (in order, original name case)
function Headers.pairs(h) return headers_iter(h), h, nil end
-- appends `name: value` (even if `name` is present)
function Headers.add(h, name, value)
  check_name(name, 2)
  value = strval(value, "http headers: value of '" .. name .. "'", 2)
  local m = rawget(h, 0)
  local l = materialize(m)
  l[#l + 1] = { name, value, slower(name) }
  touched(m)
end
-- every value of `name`, in order
function Headers.get_all(h, name)
  local lk = slower(strval(name, "http headers: get_all", 2))
  local l, out = materialize(rawget(h, 0)), {}
  for i = 1, #l do
    if l[i][3] == lk then out[#out + 1] = l[i][2] end
  end
  return out
end

local function headers_of(m)
  local h = m[M_HDRS]
  if not h then
    h = tnew(1, 0) -- array part [0], [1], with the table: one allocation
    h[0] = m
    setmetatable(h, headers_mt)
    m[M_HDRS] = h
  end
  return h
end

---------------------------------------------------------------------------
-- http: request and response
---------------------------------------------------------------------------
local function no_ws(v, what, level)
  v = strval(v, what, level + 1)
  if v == "" or sfind(v, "[%s%c]") then
    error(sfmt("%s: invalid value '%s' (empty or contains white space or control characters)", what, v), level + 1)
  end
  return v
end
local function strip_http(v) -- "HTTP/1.1" -> "1.1" (Haka's version field has no "HTTP/")
  if ssub(v, 1, 5) == "HTTP/" then return (ssub(v, 6)) end
  return v
end

-- start-line fields: their index (1..3) and setter (validates, normalises) per name
local req_fields = { method = 1, uri = 2, version = 3 }
local resp_fields = { version = 1, status = 2, reason = 3 }
local req_set = {
  method = function(v) return (no_ws(v, "http request: method", 3)) end,
  uri = function(v) return (no_ws(v, "http request: uri", 3)) end,
  version = function(v) return (strip_http(no_ws(v, "http request: version", 3))) end,
}
local resp_set = {
  version = req_set.version,
  status = function(v)
    if type(v) == "number" then
      if v % 1 ~= 0 or v < 0 or v > 999 then error(sfmt("http response: invalid status %s", tostring(v)), 3) end
      return (sfmt("%03d", v))
    end
    v = strval(v, "http response: status", 3)
    if not sfind(v, "^%d%d%d$") then error(sfmt("http response: invalid status '%s'", v), 3) end
    return v
  end,
  reason = function(v)
    v = strval(v, "http response: reason", 3)
    if sfind(v, "[\r\n]") then error("http response: reason contains CR or LF", 3) end
    return v
  end,
}
local readonly = { headers = true, split_uri = true, split_cookies = true }

-- Start-line field i (1..3) of m: cached, or cut from the head. A version (the request's
-- third part, the response's first) loses its "HTTP/".
local function start_field(m, i)
  local v = m[M_F1 + i - 1]
  if v then return v end
  local p1, p2 = m[M_P1], m[M_P2]
  local a, b, skip
  if i == 1 then
    a = p1 % P17; b = (p1 - a) / P17 % P17
  elseif i == 2 then
    a = math.floor(p1 / (P17 * P17)); b = p2 % P17
  else
    local q = (p2 - p2 % P17) / P17
    a = q % P17; b = (q - a) / P17
  end
  local version = band(m[M_FLAGS], FL_REQ) ~= 0 and 3 or 1
  skip = i == version and 5 or 0
  v = head_sub(m, a + 1 + skip, b)
  m[M_F1 + i - 1] = v
  return v
end

-- Haka's order: the start-line fields and headers, with the rule data, sorted; then split_cookies
-- and split_uri (Haka's properties). Once a rule changed the start line, Haka's result held
-- its fields as properties: they come last.
local function message_pp(name, line, props)
  return pp_class(name, function(m, add)
    local moved = m[M_LMOD]
    local l = { "headers" }
    if not moved then
      for i = 1, #line do l[#l + 1] = line[i] end
    end
    for k in next, m do
      if type(k) ~= "number" then l[#l + 1] = k end
    end
    sorted(l)
    for i = 1, #l do add(l[i], m[l[i]]) end
    for i = 1, #props do add(props[i], m[props[i]]) end
    if moved then
      for i = 1, #line do add(line[i], m[line[i]]) end
    end
  end)
end

local function message_mt(kind, fields, setters, extra_get)
  return {
    __index = function(m, k)
      local i = fields[k]
      if i ~= nil then return (start_field(m, i)) end
      if k == "headers" then return (headers_of(m)) end
      if k == "split_cookies" then
        local c = m[M_COOK]
        if not c then
          local vals = headers_of(m):get_all(kind == "request" and "Cookie" or "Set-Cookie")
          c = cookies_split(tconcat(vals, "; "))
          m[M_COOK] = c
        end
        return c
      end
      if extra_get then return (extra_get(m, k)) end
      return nil
    end,
    __newindex = function(m, k, v)
      local set = setters[k]
      if set then
        v = set(v)
        local i = fields[k]
        if start_field(m, i) ~= v then
          m[M_F1 + i - 1] = v
          m[M_LMOD] = true
          if k == "uri" then m[M_SPLIT] = false end
        end
        return
      end
      if readonly[k] then
        error(sfmt("http %s: field '%s' cannot be assigned (modify its content instead)", kind, tostring(k)), 2)
      end
      rawset(m, k, v) -- rule data
    end,
    __tostring = function(m) return "<http " .. kind .. ">" end,
    __pprint_info = kind == "request"
      and message_pp("HttpRequestResult", { "method", "uri", "version" }, { "split_cookies", "split_uri" })
      or message_pp("HttpResponseResult", { "reason", "status", "version" }, { "split_cookies" }),
  }
end

local request_mt = message_mt("request", req_fields, req_set, function(m, k)
  if k == "split_uri" then
    -- property (Haka 0.4: request.split_uri) and method (request:split_uri()) alike
    local s = m[M_SPLIT]
    if not s then
      s = uri_split(start_field(m, 2))
      m[M_SPLIT] = s
    end
    return s
  end
  return nil
end)
local response_mt = message_mt("response", resp_fields, resp_set, nil)

-- A request (is_req) or response from its head bytes as received (the string `head`, or
-- when head is nil the `len` bytes at pointer `p`, copied), validated by engine/src/http.rs: `fields` is the 0-based offset of its first field, a1..c2 the 0-based
-- [start, end) of method, uri, version (request) or version, status, reason (response),
-- flags: 1 canonical, 2 obs-fold, anomalies from bit 8 (see http.rs HeadInfo). Versions start
-- with "HTTP/" (in any case) or are empty (an HTTP/0.9 request).
local function http_message(is_req, head, fields, a1, a2, b1, b2, c1, c2, flags, p, len)
  if head == nil then
    head = HEADBUF(len)
    head.n = len
    fcopy(head.b, p, len)
  end
  local m = setmetatable({ head, fields, is_req and flags + FL_REQ or flags,
    a1 + (a2 + b1 * P17) * P17, b2 + (c1 + c2 * P17) * P17,
    false, false, false, false, false, false, false, false, false, false }, is_req and request_mt or response_mt)
  if band(flags, FL_FOLD) ~= 0 then materialize(m) end
  return m
end
K.http_message = http_message

local function from_raw(is_req, raw)
  local p = raw.parts
  return (http_message(is_req, raw.head, raw.fields, p[1], p[2], p[3], p[4], p[5], p[6], raw.flags))
end
function K.http_request(raw) return (from_raw(true, raw)) end
function K.http_response(raw) return (from_raw(false, raw)) end

local function http_modified(m)
  return m[M_LMOD] or m[M_HMOD]
end
K.http_modified = function(m) return (http_modified(m) and true or false) end

local function crlf_to_space(s) return (sgsub(s, "[\r\n]", " ")) end

-- The rewrite of a message whose only change is one field value rewritten in place:
-- the 0-based [start, end) of the bytes to replace in the head as received, and the new
-- value; nil otherwise (then K.http_serialize).
function K.http_edit(m)
  if m[M_EDIT] and not m[M_LMOD] then
    local pos = m[M_HMOD]
    local a = pos % P17
    return a, (pos - a) / P17 - 2, m[M_EDIT]
  end
  return nil
end

function K.http_serialize(m)
  if m[M_EDIT] then apply_edit(m) end
  local lmod = m[M_LMOD]
  local s, off = head_str(m), m[M_OFF]
  if not http_modified(m) then return s end
  local line
  if not lmod then
    line = ssub(s, 1, off) -- the start line as received (with the empty lines before it)
  else
    local f1, f2, f3 = start_field(m, 1), start_field(m, 2), start_field(m, 3)
    if band(m[M_FLAGS], FL_REQ) ~= 0 then
      if f3 == "" then line = f1 .. " " .. f2 .. "\r\n" -- HTTP/0.9: no version
      else line = f1 .. " " .. f2 .. " HTTP/" .. f3 .. "\r\n" end
    else
      line = "HTTP/" .. f1 .. " " .. f2 .. " " .. crlf_to_space(f3) .. "\r\n"
    end
  end
  local l = m[M_LIST]
  if not l then -- fields rewritten in place
    if not lmod then return s end
    return line .. ssub(s, off + 1)
  end
  local out = { line }
  for i = 1, #l do
    local e = l[i]
    out[#out + 1] = e[1] .. ": " .. crlf_to_space(e[2]) .. "\r\n"
  end
  out[#out + 1] = "\r\n"
  return (tconcat(out))
end

---------------------------------------------------------------------------
-- dns
---------------------------------------------------------------------------
local DnsMsg = {}
function DnsMsg.drop(self) rawset(self, "_dropped", true) end

-- debug.pprint of a message: Haka's DnsResult, its sections `class ArrayResult` of
-- `class Result` records, built when printed (proxies over the message's own tables).
-- Left out: our additions `questions`, `z` and a record's `owner` and `txt`.
local DNS_HEADER = { "aa", "ancount", "arcount", "id", "nscount", "opcode", "qdcount", "qr", "question",
  "ra", "rcode", "rd", "tc" }
local DNS_SECTIONS = { additional = true, answer = true, authority = true }
local DNS_HIDDEN = { questions = true, z = true, _dropped = true, _h = true, _w = true, _sent = true, _rid = true }
for i = 1, #DNS_HEADER do DNS_HIDDEN[DNS_HEADER[i]] = true end
local RECORD_ADDED = { owner = true, txt = true }
local record_pp_mt = { __pprint_info = pp_class("Result", function(p, add)
  -- Haka: the undecoded bytes first (a field of the record), then the decoded ones
  local r = p[1]
  if r.unknown ~= nil then add("unknown", r.unknown) end
  local keys = {}
  for k in next, r do
    if k ~= "unknown" and not RECORD_ADDED[k] then keys[#keys + 1] = k end
  end
  sorted(keys)
  for i = 1, #keys do add(keys[i], r[keys[i]]) end
end) }
local function record_pp(r)
  if type(r) ~= "table" then return r end
  return (setmetatable({ r }, record_pp_mt))
end
local array_pp_mt = { __pprint_info = pp_class("ArrayResult", function(p, add)
  local list = p[1]
  local keys = {}
  for k in next, list do keys[#keys + 1] = k end
  sorted(keys)
  for i = 1, #keys do add(keys[i], record_pp(list[keys[i]])) end
end) }
-- The header fields live in m._h: a rule's write goes through __newindex, into the
-- datagram (m._w: RT.dns_write, over UDP). A message already sent (the query a response
-- rule gets) is read only, as Haka's: "read only buffer".
local DNS_FIELDS = { id = true, qr = true, opcode = true, aa = true, tc = true, rd = true, ra = true, z = true,
  rcode = true, qdcount = true, ancount = true, nscount = true, arcount = true }
local dns_mt = { __tostring = function() return "<dns message>" end,
  __index = function(m, k)
    local v = rawget(m, "_h")[k]
    if v ~= nil then return v end
    return DnsMsg[k]
  end,
  __newindex = function(m, k, v)
    if rawget(m, "_sent") then error("read only buffer", 0) end
    if DNS_FIELDS[k] then
      local w = rawget(m, "_w")
      if w then v = w(k, v) end
      rawget(m, "_h")[k] = v
      -- (a query sent with another id: its response is matched in Lua, see haka.lua)
      if k == "id" then rawset(m, "_rid", true) end
    else
      rawset(m, k, v)
    end
  end,
  __pprint_info = pp_class("DnsResult", function(m, add)
    local keys = {}
    for k in next, m do
      if not DNS_HIDDEN[k] then keys[#keys + 1] = k end
    end
    sorted(keys)
    for i = 1, #keys do
      local k = keys[i]
      local v = m[k]
      if DNS_SECTIONS[k] and type(v) == "table" then v = setmetatable({ v }, array_pp_mt) end
      add(k, v)
    end
    for i = 1, #DNS_HEADER do
      local k = DNS_HEADER[i]
      if k == "question" then add(k, record_pp(m[k])) else add(k, m[k]) end
    end
  end) }

-- [dns] records = "haka": the bytes fields are vbuffer_subs, as Haka's grammar gave them
local HAKA_RECORDS = H.dns_haka_records
local function bytes_sub(s) return haka.vbuffer_from(s):sub() end
local function dns_records(list)
  for i = 1, #list do
    local r = list[i]
    if type(r.ip) == "number" then r.ip = ipv4_addr(r.ip) end -- A and WKS: haka ipv4.addr
    if HAKA_RECORDS then
      if r.unknown then r.unknown = bytes_sub(r.unknown) end
      if r.ports then r.ports = bytes_sub(r.ports) end
      if r.type == "NULL" and r.data then r.data = bytes_sub(r.data) end
    end
  end
  return list
end
function K.dns_message(raw, write)
  local h = {}
  for k in next, DNS_FIELDS do h[k] = raw[k]; raw[k] = nil end
  raw._h, raw._w = h, write or false
  raw.answer = dns_records(raw.answer or {})
  raw.authority = dns_records(raw.authority or {})
  raw.additional = dns_records(raw.additional or {})
  raw.questions = raw.questions or {}
  raw.question = raw.questions[1]
  return (setmetatable(raw, dns_mt))
end

---------------------------------------------------------------------------
-- tls
---------------------------------------------------------------------------
local hello_mt = { __tostring = function(h) return "<tls client_hello " .. tostring(h.sni) .. ">" end }
function K.tls_hello(raw) return (setmetatable(raw, hello_mt)) end

---------------------------------------------------------------------------
-- dissector modules
---------------------------------------------------------------------------
local function next_dissector_action(name)
  -- policy action: the dispatcher calls it with its flow object as ctx
  return function(pol, ctx, values, desc) ctx:select_next_dissector(name) end
end

local http = {
  name = "http",
  events = {
    request = new_event("http:request", app_continue),
    response = new_event("http:response", app_continue),
    request_data = new_event("http:request_data", app_continue),
    response_data = new_event("http:response_data", app_continue),
    receive_data = new_event("http:receive_data", app_continue),
    -- (http, name): a tolerated irregularity of the head just parsed (http.request or
    -- http.response), before that message's event
    anomaly = new_event("http:anomaly", app_continue),
  },
  policies = {},
  install = next_dissector_action("http"),
  uri = { split = uri_split, normalize = uri_normalize },
  cookies = { split = cookies_split },
}
D.http = http

local dns = {
  name = "dns",
  events = {
    query = new_event("dns:query", app_continue),
    response = new_event("dns:response", app_continue),
  },
  policies = {},
  install = next_dissector_action("dns"),
}
D.dns = dns

local tls = {
  name = "tls",
  events = { client_hello = new_event("tls:client_hello", app_continue) },
  policies = {},
  install = next_dissector_action("tls"),
}
D.tls = tls

local preload = package.preload
preload["protocol/http"] = function() return http end
preload["protocol/dns"] = function() return dns end
preload["protocol/tls"] = function() return tls end

return K
