-- Haka's buffers (vbuffer, vbuffer_sub, vbuffer_iterator, streams, stream coroutine manager)
-- for "Haka on DPDK", written in LuaJIT. Loaded once per Lua state by the engine
-- (engine/src/lua/mod.rs), which hands the returned module table to haka.lua (H.vbuffer);
-- haka.lua calls M.install(haka) to publish haka.vbuffer_allocate etc.
--
-- Structure (as Haka's C vbuffer): a buffer is a ring of CHUNKS closed by an END SENTINEL.
--   chunk = { p = uint8_t* base, o = offset, size = bytes, anchor = what keeps p alive
--             (an FFI array, or nothing for an external view), nx/pv = ring links,
--             ro = read-only, mod = modified, ctl = nil for data or the kind of a
--             zero-size control chunk: 'end' (sentinel), 'push'/'oldend' (stream push
--             boundaries), 'mark'/'rmark' (iterator marks), 'select' (select hole),
--             eof (sentinel only), ext = token of an external view, and after edits
--             dead = erased, gone = control chunk removed, fwd = where its bytes went }
-- Editing splits chunks and relinks them; bytes are never moved except by flatten/copy.
-- So a stream is pushed chunk by chunk without copying, and a chunk may be an EXTERNAL
-- view over packet bytes (M.external) that is written in place.
--
-- Iterators = { c = chunk, off = offset in it, meter = bytes advanced }: a small table with
-- a metatable, no per-byte closure or table. An iterator stays valid across edits: a split
-- leaves `fwd` on the first half so that an offset past its new end follows to the second
-- half; an erased chunk is `dead` ("invalid buffer iterator", Haka's error); a removed
-- control chunk forwards to its successor.
--
-- Blocking: in a coroutine started by a vbuffer_stream_comanager, an iterator that needs
-- bytes not yet pushed on an unfinished stream yields; the manager resumes it after the
-- next push. Outside such a coroutine the same calls return what is available.
--
-- Errors are raised with level 0 and Haka's exact strings (Haka's C errors carry no
-- position; its tests compare the messages).
local ffi = require("ffi")
local type, tonumber, tostring, error, pairs = type, tonumber, tostring, error, pairs
local setmetatable, getmetatable, rawset = setmetatable, getmetatable, rawset
local floor, huge = math.floor, math.huge
local sfmt, concat = string.format, table.concat
local co_running, co_yield, co_create, co_resume, co_status = coroutine.running, coroutine.yield, coroutine.create, coroutine.resume, coroutine.status

local newproxy = newproxy
local u8arr = ffi.typeof("uint8_t[?]")
local u8p = ffi.typeof("uint8_t*")

local M = {}

local function fail(msg) error(msg, 0) end

---------------------------------------------------------------------------
-- chunks and rings
---------------------------------------------------------------------------
-- (tables made by a constructor naming the keys set next, even while nil: LuaJIT copies a
-- template with their slots, and setting them is a plain store, not a new key inserted, a
-- call out of the trace, for each; the links, ro and ext of a chunk: its first 8 slots as
-- before, when it was sized at once to avoid growing)
local function new_end(eof)
  local none
  local e = { size = 0, ctl = "end", eof = eof, p = none, o = 0, nx = none, pv = none }
  e.nx, e.pv = e, e
  return e
end

local function new_chunk(p, o, size, anchor)
  local none
  return { p = p, o = o, size = size, anchor = anchor, nx = none, pv = none, ro = none, ext = none }
end

-- link the chain first..last (already linked among themselves) before x
local function link_before(x, first, last)
  local prev = x.pv
  prev.nx, first.pv = first, prev
  last.nx, x.pv = x, last
end

local function unlink(c)
  c.pv.nx, c.nx.pv = c.nx, c.pv
end

-- external chunks register into their token so that the engine can end the view
local function ext_register(c)
  local t = c.ext
  if t then t.n = t.n + 1; t.chunks[t.n] = c end
end

local function clone_chunk(c, copy)
  local n
  if copy then
    local a = u8arr(c.size)
    if c.size > 0 then ffi.copy(a, c.p + c.o, c.size) end
    n = new_chunk(a, 0, c.size, a)
  else
    n = new_chunk(c.p, c.o, c.size, c.anchor)
    n.ext = c.ext; ext_register(n)
    n.orig = c.orig
  end
  n.ro, n.mod, n.w = c.ro, c.mod, c.w
  return n
end

-- a removed control chunk forwards its iterators to its successor
local function remove_ctl(c)
  local nx = c.nx
  nx.mod = nx.mod or c.mod
  unlink(c)
  c.gone, c.fwd = true, nx
  return nx
end

---------------------------------------------------------------------------
-- iterators
---------------------------------------------------------------------------
local IT = {}         -- iterator methods
local IT_MT = {}
-- (not a tail call of setmetatable: a trace that starts here and tail-calls a builtin with
-- side effects cannot return to a lower frame ("NYI: return to lower frame"); after a few
-- such aborts LuaJIT blacklisted this function, and then every trace calling it aborted)
local function new_iter(c, off, meter) return (setmetatable({ c = c, off = off, meter = meter or 0 }, IT_MT)) end

-- resolve an iterator after edits (see header); returns chunk, offset
local function fix(it)
  local c, off = it.c, it.off
  if c == nil then fail("empty iterator") end
  -- (fast path, no loop: most iterators need no fixing. The helpers below avoid running a
  -- loop in the common case: a loop inside a short helper aborts the JIT trace of its caller)
  if off <= c.size and not c.dead and not c.gone then return c, off end
  while true do
    if off > c.size then
      local f = c.fwd
      if f == nil or c.gone then fail("invalid buffer iterator") end
      off = off - c.size; c = f
    elseif c.dead then fail("invalid buffer iterator")
    elseif c.gone then c, off = c.fwd, 0
    else break end
  end
  it.c, it.off = c, off
  return c, off
end

-- split at (c, off): returns the chunk that starts at that position (Haka's
-- _vbuffer_iterator_split; `mark` flags the chunk as modified, after a write check)
local function split(c, off, mark)
  if mark then
    if c.ro then fail("read only buffer") end
    c.mod = true
  end
  if off == 0 or c.ctl then return c end
  if off == c.size then return c.nx end
  local n = new_chunk(c.p, c.o + off, c.size - off, c.anchor)
  n.ro, n.mod, n.w, n.ext, n.fwd = c.ro, c.mod, c.w, c.ext, c.fwd
  if c.orig then n.orig, c.orig = c.orig:sub(off + 1), c.orig:sub(1, off) end
  ext_register(n)
  c.size, c.fwd = off, n
  link_before(c.nx, n, n)
  return n
end

-- walk to the end of the ring from c
local function end_of(c)
  if c.ctl == "end" then return c end
  local n = c.nx
  if n.ctl == "end" then return n end
  c = n
  while c.ctl ~= "end" do c = c.nx end
  return c
end

-- move forward n bytes (nil: all); Haka's semantics: stops at the END of the chunk that
-- holds the last byte (so iseof only turns true once an advance finds nothing more)
local function adv(it, n)
  local c, off = fix(it)
  -- a negative size means all (Haka's size_t -1); fractions are truncated
  if n ~= nil then n = floor(n); if n < 0 then n = nil end end
  if n ~= nil and not c.ctl and c.size - off >= n then
    it.off = off + n
    it.meter = it.meter + n
    return n
  end
  local left = n or huge
  local done = 0
  while c.ctl ~= "end" do
    local avail = c.size - off
    if avail >= left then off = off + left; done = done + left; left = 0; break end
    left = left - avail; done = done + avail
    c = c.nx; off = 0
  end
  it.c, it.off = c, off
  it.meter = it.meter + done
  return done
end

-- bytes available from (c, off), counting at most `max`
local function avail_from(c, off, max)
  if not c.ctl then
    local a = c.size - off
    if a >= max then return max end
    if c.nx.ctl == "end" then return a end
  end
  local n = 0
  while c.ctl ~= "end" do
    n = n + c.size - off
    if n >= max then return max end
    c = c.nx; off = 0
  end
  return n
end

-- blocking applies inside a coroutine started by a comanager, on an unfinished stream
local managed = setmetatable({}, { __mode = "k" })
local function can_block(c)
  local co = co_running()
  return co ~= nil and managed[co] == true and not end_of(c).eof
end
-- an iterator on a stream in such a coroutine follows Haka's blocking iterator (e.g. its
-- sub() gives nil rather than an empty sub once the stream has ended)
-- (the stream test first: coroutine.running is not compiled by LuaJIT, and a segment's
-- bytes parsed in place are no stream)
local function blocking(c)
  if end_of(c).stream ~= true then return false end
  local co = co_running()
  return co ~= nil and managed[co] == true
end

local function iseof(it)
  local c = fix(it)
  return c.ctl == "end" and c.eof == true
end

---------------------------------------------------------------------------
-- sub buffers: { b = begin iterator, e = end iterator | nil, n = length | nil }
---------------------------------------------------------------------------
local SUB = {}
-- `#` on a table ignores __len in LuaJIT (Lua 5.1): buffers and subs given to Lua code are
-- userdata proxies (newproxy) mapped to their state table; the library works on states.
local SS = setmetatable({}, { __mode = "k" })  -- sub proxy -> state
local sub_proto = newproxy(true)
local SUB_MT = getmetatable(sub_proto)
local function sst(b, e, n) return { b = b, e = e, n = n } end
local function new_sub(b, e, n)
  local u = newproxy(sub_proto)
  SS[u] = { b = b, e = e, n = n }
  return u
end

-- call f(c, off, len, a, b) for each piece of the sub (module-level f: no closure)
local function walk(s, f, a, b)
  local c, off = fix(s.b)
  local ec, eo
  if s.e then ec, eo = fix(s.e) end
  local rem = s.n or huge
  while rem > 0 do
    if c == ec then
      if eo < off then fail("invalid buffer end") end
      local len = eo - off
      if len > rem then len = rem end
      if len > 0 then f(c, off, len, a, b) end
      return
    end
    if c.ctl == "end" then
      if ec then fail("invalid buffer end") end
      return
    end
    local len = c.size - off
    if len > rem then len = rem end
    if len > 0 then f(c, off, len, a, b) end
    rem = rem - len
    c = c.nx; off = 0
  end
end

local acc = { n = 0 }
local function count_piece(c, off, len) acc.n = acc.n + len end
local function sub_size(s)
  acc.n = 0
  walk(s, count_piece)
  return acc.n
end

-- read up to 8 bytes into tmp (asnumber/asbits)
local tmp = ffi.new("uint8_t[8]")
local function read_piece(c, off, len, max)
  local i = acc.n
  local p = c.p + c.o + off
  for k = 0, len - 1 do
    if i >= max then break end
    tmp[i] = p[k]; i = i + 1
  end
  acc.n = i
end
-- A chunk over packet bytes (an external view) keeps its original bytes at its first
-- write: the engine puts them back before it rewrites the packet with the edits, so that
-- the TCP checksum update (RFC 1624: old bytes out, new bytes in) sees the change.
local function keep_orig(c)
  if c.ext and not c.w and not c.orig then c.orig = ffi.string(c.p + c.o, c.size) end
end
local function write_piece(c, off, len, max)
  if c.ro then fail("read only buffer") end
  keep_orig(c)
  c.mod = true; c.w = true -- bytes written (external_edits)
  local i = acc.n
  local p = c.p + c.o + off
  for k = 0, len - 1 do
    if i >= max then break end
    p[k] = tmp[i]; i = i + 1
  end
  acc.n = i
end

local parts = {}
local function str_piece(c, off, len)
  local i = acc.n + 1
  parts[i] = ffi.string(c.p + c.o + off, len); acc.n = i
end

local function zero_piece(c, off, len)
  if c.ro then fail("read only buffer") end
  keep_orig(c)
  c.mod = true; c.w = true -- bytes written (external_edits)
  ffi.fill(c.p + c.o + off, len, 0)
end

local sstr = { s = nil, i = 0 }
local function setstr_piece(c, off, len)
  local s = sstr.s
  local n = #s - sstr.i
  if n <= 0 then return end
  if len > n then len = n end
  if c.ro then fail("read only buffer") end
  keep_orig(c)
  c.mod = true; c.w = true -- bytes written (external_edits)
  ffi.copy(c.p + c.o + off, ffi.cast("const uint8_t*", s) + sstr.i, len)
  sstr.i = sstr.i + len
end

local function asstring(s)
  -- fast path: one piece, no table
  local c, off = fix(s.b)
  local ec, eo
  if s.e then ec, eo = fix(s.e) end
  if not c.ctl and (c == ec or (eo == 0 and c.nx == ec)) then
    local len = (c == ec) and eo - off or c.size - off
    if len < 0 then fail("invalid buffer end") end
    if s.n and s.n < len then len = s.n end
    return ffi.string(c.p + c.o + off, len)
  end
  acc.n = 0
  walk(s, str_piece)
  local n = acc.n
  local r = concat(parts, "", 1, n)
  for i = 1, n do parts[i] = nil end
  return r
end

-- the k-th byte (0-based) from (c, off): chunk, offset, or nil
local function locate(c, off, k)
  while c.ctl ~= "end" do
    local a = c.size - off
    if k < a then return c, off + k end
    k = k - a
    c = c.nx; off = 0
  end
  return nil
end

local function getbyte_sub(s, i)
  i = tonumber(i)
  if i == nil or i < 1 or i ~= floor(i) then fail("invalid index") end
  if s.n and i > s.n then fail("index out of range") end
  local c, off = fix(s.b)
  local lc, lo = locate(c, off, i - 1)
  if lc == nil then fail("index out of range") end
  if s.e and i > sub_size(s) then fail("index out of range") end
  return lc.p[lc.o + lo], lc
end

local function setbyte_sub(s, i, v)
  local _, lc, lo
  i = tonumber(i)
  if i == nil or i < 1 or i ~= floor(i) then fail("invalid index") end
  if (s.n and i > s.n) or (s.e and i > sub_size(s)) then fail("index out of range") end
  local c, off = fix(s.b)
  lc, lo = locate(c, off, i - 1)
  if lc == nil then fail("index out of range") end
  v = tonumber(v)
  if v == nil then fail("invalid byte value") end
  if lc.ro then fail("read only buffer") end
  keep_orig(lc)
  lc.mod = true; lc.w = true -- bytes written (external_edits)
  lc.p[lc.o + lo] = v % 256
end

---------------------------------------------------------------------------
-- vbuffers: { e = end sentinel }
---------------------------------------------------------------------------
local VB = {}
local VBS = setmetatable({}, { __mode = "k" }) -- buffer proxy -> state { e = sentinel }
local vb_proto = newproxy(true)
local VB_MT = getmetatable(vb_proto)
local function new_buffer(eof) return { e = new_end(eof ~= false) } end
local function pub(st)
  local u = newproxy(vb_proto)
  VBS[u] = st
  return u
end
local function bstate(x)
  local st = VBS[x]
  if st == nil then fail("missing data parameter") end
  return st
end

local function allocate(size, zero)
  size = tonumber(size)
  if size == nil or size < 0 then fail("invalid size") end
  size = floor(size)
  local b = new_buffer()
  if size > 0 then
    local a = u8arr(size) -- ffi.new zero-fills: `zero` costs nothing more
    local c = new_chunk(a, 0, size, a)
    link_before(b.e, c, c)
  end
  return pub(b)
end

local function from_string(s)
  if type(s) ~= "string" then s = tostring(s) end
  local n = #s
  local b = new_buffer()
  if n > 0 then
    local a = u8arr(n)
    ffi.copy(a, s, n)
    local c = new_chunk(a, 0, n, a)
    link_before(b.e, c, c)
  end
  return pub(b)
end

local function isempty(b) return b.e.nx == b.e end

-- does buffer b contain chunk x (circular insertion check)
local function contains(b, x)
  local c = b.e.nx
  if x == b.e then return true end
  while c.ctl ~= "end" do
    if c == x then return true end
    c = c.nx
  end
  return false
end

-- move all chunks of `data` before chunk x; data becomes empty. Returns the first moved
-- chunk or nil.
local function move_all_before(x, data)
  local de = data.e
  if de.nx == de then return nil end
  local first, last = de.nx, de.pv
  de.nx, de.pv = de, de
  link_before(x, first, last)
  return first
end

function VB.pos(self, where)
  self = VBS[self] or self
  if where == nil or where == "begin" then return new_iter(self.e.nx, 0) end
  if where == "end" then return new_iter(self.e, 0) end
  local n = tonumber(where)
  if n == nil then fail(sfmt("unknown buffer position: %s", tostring(where))) end
  local it = new_iter(self.e.nx, 0)
  adv(it, n); it.meter = 0
  return it
end

function VB.sub(self, off, size)
  self = VBS[self] or self
  local b = VB.pos(self, tonumber(off) or 0)
  if size == nil or size == "all" or size == -1 then return new_sub(b, new_iter(self.e, 0)) end
  local n = tonumber(size)
  if n == nil then fail(sfmt("unknown sub buffer mode: %s", tostring(size))) end
  local e = new_iter(b.c, b.off)
  adv(e, n); e.meter = 0
  return new_sub(b, e)
end

function VB.append(self, data)
  self = VBS[self] or self
  data = bstate(data)
  if data == self then fail("circular buffer insertion") end
  if self.e.ro then fail("read only buffer") end
  self.e.mod = true
  move_all_before(self.e, data)
end

local function clone_range(s, copy)
  local out = new_buffer()
  local c, off = fix(s.b)
  local ec, eo
  if s.e then ec, eo = fix(s.e) end
  local rem = s.n or huge
  while rem > 0 and c.ctl ~= "end" or (c == ec and rem > 0) do
    local len
    if c == ec then len = eo - off else len = c.size - off end
    if len > rem then len = rem end
    if not c.ctl and len > 0 then
      local n = clone_chunk(c, false)
      n.o, n.size = c.o + off, len
      if n.orig then n.orig = n.orig:sub(off + 1, off + len) end
      if copy then n = clone_chunk(n, true); n.mod = false end
      link_before(out.e, n, n)
    end
    rem = rem - len
    if c == ec then break end
    c = c.nx; off = 0
  end
  return pub(out)
end

function VB.clone(self, copy)
  self = VBS[self] or self
  return clone_range(sst(new_iter(self.e.nx, 0), new_iter(self.e, 0)), copy == true or copy == "copy")
end

function VB.asstring(self)
  self = VBS[self] or self
  return asstring(sst(new_iter(self.e.nx, 0), new_iter(self.e, 0)))
end

local function buf_modified(b)
  local e = b.e
  if e.mod then return true end
  local c = e.nx
  while c ~= e do
    if c.mod then return true end
    c = c.nx
  end
  return false
end

local function buf_size(b)
  local n, e = 0, b.e
  local c = e.nx
  while c ~= e do n = n + c.size; c = c.nx end
  return n
end

VB_MT.__index = function(u, k)
  local self = VBS[u]
  if type(k) == "number" then
    local e = self.e
    local c = e.nx
    -- fast path: first chunk (a flat buffer); control chunks have size 0
    if k >= 1 and k <= c.size and k == floor(k) then return c.p[c.o + k - 1] end
    return (getbyte_sub(sst(new_iter(c, 0), new_iter(e, 0)), k))
  end
  local m = VB[k]
  if m ~= nil then return m end
  if k == "modified" then return buf_modified(self) end
  return nil
end
VB_MT.__newindex = function(u, k, v)
  local self = VBS[u]
  if type(k) == "number" then
    local c = self.e.nx
    if k >= 1 and k <= c.size and k == floor(k) and not c.ro then
      v = tonumber(v)
      if v == nil then fail("invalid byte value") end
      keep_orig(c)
      c.mod = true; c.w = true -- bytes written (external_edits)
      c.p[c.o + k - 1] = v % 256
      return
    end
    return setbyte_sub(sst(new_iter(c, 0), new_iter(self.e, 0)), k, v)
  end
  fail(sfmt("unknown field '%s'", tostring(k)))
end
-- debug.pprint (engine/lua/lib/debug.lua): Haka prints `userdata vbuffer { modified : BOOL }`
VB.__pprint_info = { kind = "userdata", name = "vbuffer", fields = function(u, add)
  add("modified", buf_modified(VBS[u]))
end }
VB_MT.__len = function(u) return buf_size(VBS[u]) end
VB_MT.__tostring = function(self) return "<vbuffer>" end

---------------------------------------------------------------------------
-- sub buffer methods
---------------------------------------------------------------------------
function SUB.size(self)
  self = SS[self] or self
  return sub_size(self)
end

function SUB.check_size(self, n)
  self = SS[self] or self
  n = tonumber(n) or 0
  local c, off = fix(self.b)
  local max = n
  if self.n and self.n < max then max = self.n end
  if self.e then
    local sz = sub_size(self)
    if sz >= n then return true, n end
    return false, sz
  end
  local a = avail_from(c, off, max)
  if a >= n then return true, n end
  return false, a
end

-- position `off` from the sub's beginning, or its end
local function sub_pos(self, where)
  self = SS[self] or self
  if where == "end" or where == -1 then
    if self.e then local c, off = fix(self.e); return new_iter(c, off) end
    local c, off = fix(self.b)
    local it = new_iter(c, off)
    adv(it, self.n); it.meter = 0
    return it
  end
  local n = 0
  if where ~= nil and where ~= "begin" then
    n = tonumber(where)
    if n == nil then fail(sfmt("unknown buffer position: %s", tostring(where))) end
  end
  local c, off = fix(self.b)
  local it = new_iter(c, off)
  if n > 0 then adv(it, n); it.meter = 0 end
  return it
end
SUB.pos = sub_pos

function SUB.sub(self, off, size)
  self = SS[self] or self
  local b = sub_pos(self, tonumber(off) or 0)
  if size == nil or size == "all" or size == -1 then return new_sub(b, sub_pos(self, "end")) end
  local n = tonumber(size)
  if n == nil then fail(sfmt("unknown sub buffer mode: %s", tostring(size))) end
  return new_sub(b, nil, n)
end

function SUB.zero(self)
  self = SS[self] or self
  walk(self, zero_piece)
end

function SUB.setfixedstring(self, s)
  self = SS[self] or self
  sstr.s, sstr.i = tostring(s), 0
  walk(self, setstr_piece)
  sstr.s = nil
end

-- cut the sub's range out of its ring. Returns (first, last) of the removed chunks (or
-- nil) and the chunk that follows the range. `mark`: write check + modified flags;
-- `keep_ctl`: control chunks (marks) stay in the ring.
local function cut(self, mark, keep_ctl)
  local endc
  if self.e then
    local c, off = fix(self.e)
    endc = split(c, off, mark)
  end
  local bc
  do
    local c, off = fix(self.b)
    bc = split(c, off, mark)
  end
  if not self.e then
    local rem = self.n
    local c = bc
    while true do
      if c.ctl == "end" then endc = c; break end
      if rem <= c.size then
        endc = split(c, rem, mark)
        break
      end
      rem = rem - c.size
      c = c.nx
    end
  end
  -- check that endc follows bc before touching the ring
  local c = bc
  while c ~= endc do
    if c.ctl == "end" then fail("invalid buffer end") end
    c = c.nx
  end
  if bc == endc then return nil, nil, endc end
  local first, last
  c = bc
  while c ~= endc do
    local nx = c.nx
    if not (keep_ctl and c.ctl) then
      unlink(c)
      c.nx, c.pv = nil, nil
      if first == nil then first = c; c.pv = c else last.nx = c; c.pv = last end
      last = c
    end
    c = nx
  end
  if first then first.pv, last.nx = last, first end
  if mark then endc.mod = true end
  return first, last, endc
end

local function kill(first, last)
  local c = first
  while c do
    c.dead = true
    if c == last then break end
    c = c.nx
  end
end

function SUB.erase(self)
  self = SS[self] or self
  local first, last = cut(self, true, true)
  if first then kill(first, last) end
end

-- data of replace/insert/append: a vbuffer, or (an extension of Haka's API, which takes
-- buffers only) a string
local function bdata(d)
  if type(d) == "string" then return VBS[from_string(d)] end
  return bstate(d)
end

function SUB.replace(self, data)
  self = SS[self] or self
  data = bdata(data)
  if contains(data, (fix(self.b))) then fail("circular buffer insertion") end
  local first, last, endc = cut(self, true, true)
  if first then kill(first, last) end
  endc.mod = true
  local ins = move_all_before(endc, data)
  if ins then ins.mod = true end
  self.b = new_iter(ins or endc, 0, self.b.meter)
  self.e, self.n = new_iter(endc, 0), nil
end

function SUB.setstring(self, s) return SUB.replace(self, from_string(s)) end
-- (extensions kept from this engine's earlier stream views: insert before / after the sub)
function SUB.insert(self, data) return IT.insert(sub_pos(self, "begin"), data) end
function SUB.append(self, data) return IT.insert(sub_pos(self, "end"), data) end

function SUB.isflat(self)
  self = SS[self] or self
  local c, off = fix(self.b)
  if self.e then
    local ec, eo = fix(self.e)
    return c == ec or (eo == 0 and c.nx == ec)
  end
  return c.ctl ~= nil or c.size - off >= self.n
end

local function has_ctl(s)
  local c = fix(s.b)
  local ec = s.e and fix(s.e)
  local rem = s.n or huge
  local off = s.b.off
  while rem > 0 and c ~= ec and c.ctl ~= "end" do
    if c.ctl then return true end
    rem = rem - (c.size - off); off = 0
    c = c.nx
  end
  return false
end

function SUB.flatten(self)
  self = SS[self] or self
  if SUB.isflat(self) then return end
  if has_ctl(self) then fail("buffer cannot be flatten") end
  local n = sub_size(self)
  local a = u8arr(n)
  acc.n = 0
  local s = self
  -- copy the bytes, then replace the range by one chunk
  local c, off = fix(s.b)
  local i = 0
  local ec, eo
  if s.e then ec, eo = fix(s.e) end
  while i < n do
    local len = (c == ec) and (eo - off) or (c.size - off)
    if len > n - i then len = n - i end
    if len > 0 then ffi.copy(a + i, c.p + c.o + off, len) end
    i = i + len
    c = c.nx; off = 0
  end
  local flat = new_chunk(a, 0, n, a)
  local first, last, endc = cut(self, false, false)
  local m = false
  local x = first
  while x do
    if x.mod then m = true end
    if x == last then break end
    x = x.nx
  end
  if first then kill(first, last) end
  flat.mod = m
  link_before(endc, flat, flat)
  self.b = new_iter(flat, 0, self.b.meter)
  self.e, self.n = new_iter(endc, 0), nil
end

function SUB.select(self)
  self = SS[self] or self
  local first, last, endc = cut(self, false, false)
  local hole = { size = 0, o = 0, ctl = "select", ro = endc.ro }
  link_before(endc, hole, hole)
  local out = new_buffer()
  if first then link_before(out.e, first, last) end
  return new_iter(hole, 0), pub(out)
end

function SUB.asstring(self) return asstring(SS[self] or self) end
SUB.tostring = SUB.asstring

local function endian_big(endian) return endian == nil or endian == "big" end

function SUB.asnumber(self, endian)
  self = SS[self] or self
  local len = sub_size(self)
  if len > 8 or not (len == 1 or len == 2 or len == 4 or len == 8) then
    fail(sfmt("asnumber: unsupported size %d", len))
  end
  acc.n = 0
  walk(self, read_piece, 8)
  local v = 0
  if endian_big(endian) then
    for i = 0, len - 1 do v = v * 256 + tmp[i] end
    -- Haka: big endian reads are unsigned except 8 bytes (int64)
    if len == 8 and tmp[0] >= 128 then v = v - 2 ^ 64 end
  else
    for i = len - 1, 0, -1 do v = v * 256 + tmp[i] end
    -- Haka: little endian reads of 2, 4 and 8 bytes are signed
    if len > 1 and tmp[len - 1] >= 128 then v = v - 2 ^ (8 * len) end
  end
  return v
end

local function check_fit(v, bits, what)
  if bits >= 64 then return end
  local lim = 2 ^ bits
  if (v < 0 and -v >= lim) or (v >= 0 and v >= lim) then
    fail(sfmt("%s: invalid number, value does not fit in %d %s", what, what == "setnumber" and bits / 8 or bits,
      what == "setnumber" and "bytes" or "bits"))
  end
end

function SUB.setnumber(self, v, endian)
  self = SS[self] or self
  local len = sub_size(self)
  if len > 8 then fail(sfmt("setnumber: unsupported size %d", len)) end
  v = tonumber(v)
  if v == nil then fail("setnumber: number expected") end
  v = floor(v)
  check_fit(v, len * 8, "setnumber")
  if not (len == 1 or len == 2 or len == 4 or len == 8) then fail(sfmt("setnumber: unsupported size %d", len)) end
  if v < 0 then v = v + 2 ^ (8 * len) end
  if endian_big(endian) then
    for i = len - 1, 0, -1 do tmp[i] = v % 256; v = floor(v / 256) end
  else
    for i = 0, len - 1 do tmp[i] = v % 256; v = floor(v / 256) end
  end
  acc.n = 0
  walk(self, write_piece, len)
end

-- bits of byte x at bit offset off (from the MSB in big endian, the LSB in little)
local function getbits(x, off, size, big)
  if big then off = 8 - off - size end
  return floor(x / 2 ^ off) % 2 ^ size
end
local function setbits(x, off, size, v, big)
  if big then off = 8 - off - size end
  local p = 2 ^ off
  local old = floor(x / p) % 2 ^ size
  return x + ((v % 2 ^ size) - old) * p
end

local function bit_range(self, off, bits, what)
  local len = sub_size(self)
  local first = floor(off / 8)
  local last = floor((off + bits + 7) / 8)
  if first >= len then fail(what .. ": invalid bit offset") end
  if last > len then fail(what .. ": invalid bit size") end
  if last > 8 then fail(what .. ": unsupported size") end
  acc.n = 0
  walk(self, read_piece, last)
  return first, last, off % 8
end

function SUB.asbits(self, off, bits, endian)
  self = SS[self] or self
  off, bits = tonumber(off), tonumber(bits)
  if off == nil or bits == nil or off < 0 or bits < 0 then fail("asbits: invalid bit offset") end
  local first, last, o = bit_range(self, off, bits, "asbits")
  local big = endian_big(endian)
  local r, shift = 0, 0
  for i = first, last - 1 do
    local size = bits > 8 - o and 8 - o or bits
    local v = getbits(tmp[i], o, size, big)
    if big then r = r * 2 ^ size + v else r = r + v * 2 ^ shift; shift = shift + size end
    o = 0; bits = bits - size
  end
  return r
end

function SUB.setbits(self, off, bits, v, endian)
  self = SS[self] or self
  off, bits, v = tonumber(off), tonumber(bits), tonumber(v)
  if off == nil or bits == nil or off < 0 or bits < 0 then fail("setbits: invalid bit offset") end
  if v == nil then fail("setbits: number expected") end
  if bits > 64 then fail(sfmt("setbits: unsupported size %d", bits)) end
  v = floor(v)
  check_fit(v, bits, "setbits")
  local first, last, o = bit_range(self, off, bits, "setbits")
  if v < 0 then v = v + 2 ^ bits end
  local big = endian_big(endian)
  for i = first, last - 1 do
    local size = bits > 8 - o and 8 - o or bits
    bits = bits - size
    if big then
      tmp[i] = setbits(tmp[i], o, size, floor(v / 2 ^ bits), true)
    else
      tmp[i] = setbits(tmp[i], o, size, v, false)
      v = floor(v / 2 ^ size)
    end
    o = 0
  end
  acc.n = 0
  walk(self, write_piece, last)
end

function SUB.clone(self, copy) return clone_range(SS[self] or self, copy == true or copy == "copy") end

SUB_MT.__index = function(u, k)
  if type(k) == "number" then return (getbyte_sub(SS[u], k)) end
  return SUB[k]
end
SUB_MT.__newindex = function(u, k, v)
  if type(k) == "number" then return setbyte_sub(SS[u], k, v) end
  fail(sfmt("unknown field '%s'", tostring(k)))
end
SUB_MT.__len = function(u) return sub_size(SS[u]) end
SUB_MT.__tostring = function(self) return "<vbuffer_sub>" end
-- debug.pprint: Haka printed a sub as `userdata vbuffer_sub`
SUB.__pprint_info = { kind = "userdata", name = "vbuffer_sub" }

---------------------------------------------------------------------------
-- iterator methods
---------------------------------------------------------------------------
function IT.copy(self)
  local c, off = fix(self)
  return new_iter(c, off, self.meter)
end

function IT.available(self)
  local c, off = fix(self)
  return avail_from(c, off, huge)
end

function IT.check_available(self, n, nonblocking)
  n = tonumber(n) or 0
  while true do
    local c, off = fix(self)
    local a = avail_from(c, off, n)
    if a >= n then return true, n end
    if nonblocking or not can_block(c) then return false, a end
    co_yield()
  end
end

-- advance(n | 'available' | 'all') -> bytes advanced. Blocking for n and 'all': waits
-- until that many bytes went by or the stream ends.
function IT.advance(self, n)
  if n == "available" then return adv(self, nil) end
  local want
  if n ~= "all" and n ~= nil then
    want = tonumber(n)
    if want == nil then fail("invalid size") end
    if want < 0 then want = nil end
  end
  local done = adv(self, want)
  if want and done == want then return done end
  while not iseof(self) and can_block(self.c) do
    co_yield()
    done = done + adv(self, want and want - done)
    if want and done == want then break end
  end
  return done
end

-- sub(n | 'available' | 'all', split) -> sub buffer from the iterator, which moves past it.
-- Not blocking: what is there ('available' at the end: nil). Blocking (Haka's blocking
-- iterator): waits for n bytes, for the end of the stream ('all') or for any byte
-- ('available'); nil when nothing came before the stream ended.
function IT.sub(self, n, dosplit)
  local c0, off0 = fix(self)
  local want, available
  if n == "available" then available = true
  elseif n ~= "all" and n ~= nil then
    want = tonumber(n)
    if want == nil then fail(sfmt("unknown sub buffer mode: %s", tostring(n))) end
    if want < 0 then want = nil end
  end
  local begin = new_iter(c0, off0)
  if want == 0 then return new_sub(begin, nil, 0) end
  if not blocking(c0) then
    if available and c0.ctl == "end" then return nil end
    adv(self, want)
  else
    local got = adv(self, want)
    while not iseof(self) do
      if available then
        if got > 0 then break end
      elseif want and got == want then break end
      if not can_block(self.c) then break end
      co_yield()
      got = got + adv(self, want and want - got)
    end
    if got == 0 then return nil end
  end
  if dosplit then
    local c, off = fix(self)
    self.c, self.off = split(c, off, false), 0
  end
  return new_sub(begin, new_iter(self.c, self.off))
end

function IT.split(self)
  local c, off = fix(self)
  self.c, self.off = split(c, off, false), 0
end

function IT.insert(self, data)
  data = bdata(data)
  local c, off = fix(self)
  if contains(data, c) then fail("circular buffer insertion") end
  local at = split(c, off, true)
  local first = move_all_before(at, data)
  self.c, self.off = at, 0
  return new_sub(new_iter(first or at, 0), new_iter(at, 0))
end

function IT.mark(self, readonly)
  local c, off = fix(self)
  local at = split(c, off, false)
  local m = { size = 0, o = 0, ctl = readonly and "rmark" or "mark", ro = at.ro }
  link_before(at, m, m)
  self.c, self.off = m, 0
end

function IT.unmark(self)
  local c = self.c
  if c == nil or c.dead or c.gone then fail("invalid buffer iterator") end
  if c.ctl ~= "mark" and c.ctl ~= "rmark" then fail("iterator is not a mark") end
  self.c, self.off = remove_ctl(c), 0
end

function IT.restore(self, data)
  local c = self.c
  if c == nil or c.dead or c.gone then fail("invalid buffer iterator") end
  if c.ctl ~= "select" then fail("invalid restore iterator") end
  if data ~= nil then
    move_all_before(c, bstate(data))
  end
  remove_ctl(c)
  self.c = nil
end

function IT.move_to(self, other)
  if getmetatable(other) ~= IT_MT then fail("invalid source iterator") end
  local c, off = fix(other)
  self.c, self.off = c, off
end

function IT.wait(self)
  local c = fix(self)
  if not blocking(c) then return iseof(self) end
  while true do
    local c2, off = fix(self)
    if avail_from(c2, off, 1) > 0 then return true end
    if not can_block(c2) then return false end
    co_yield()
  end
end

local function foreach_step(it)
  return (IT.sub(it, "available"))
end
function IT.foreach_available(self) return foreach_step, self end

IT_MT.__index = function(self, k)
  local m = IT[k]
  if m ~= nil then return m end
  if k == "iseof" then return iseof(self) end
  return nil
end
IT_MT.__tostring = function(self) return "<vbuffer_iterator>" end
-- debug.pprint: Haka printed an iterator as `userdata vbuffer_iterator`
IT_MT.__pprint_info = { kind = "userdata", name = "vbuffer_iterator" }

---------------------------------------------------------------------------
-- streams
---------------------------------------------------------------------------
local ST = {}
local ST_MT = { __index = function(self, k)
  local m = ST[k]
  if m ~= nil then return m end
  if k == "isfinished" then return self.ds.e.eof == true end
  return nil
end }

local function new_stream()
  local ds = new_buffer(false)
  ds.e.stream = true
  return (setmetatable({ data = pub(ds), ds = ds, pending = {}, reads = {}, udata = {}, last = nil }, ST_MT))
end

-- push(buf[, userdata]) -> iterator at the beginning of the pushed data
function ST.push(self, data, udata)
  if data == self.data then fail("circular buffer insertion") end
  data = bstate(data)
  local old = self.ds.e
  if old.eof then fail("stream marked as finished") end
  -- the old sentinel stays in the ring as a zero-size boundary: an iterator parked at the
  -- end of the stream now stands before the new data and reads on
  local ne = new_end(false)
  ne.ro, ne.push, ne.stream = data.e.ro, true, true
  link_before(old.nx, ne, ne)
  old.ctl = old.push and "push" or "oldend"
  old.push = nil
  local first = move_all_before(ne, data)
  self.ds.e = ne
  local p = self.pending
  p[#p + 1] = ne
  self.udata[ne] = udata
  local cur = new_iter(first or ne, 0)
  self.last = cur
  return cur
end

function ST.finish(self) self.ds.e.eof = true end

function ST.current(self)
  if self.last then return self.last:copy() end
  return new_iter(self.ds.e, 0)
end

local function remove_any(c)
  if c.ctl then remove_ctl(c) else unlink(c); c.dead = true end
end

-- pop() -> buffer of the oldest pushed data that no read/write mark holds, or nil
function ST.pop(self)
  local pending = self.pending
  if #pending == 0 then return nil end
  local e = self.ds.e
  local reads = self.reads
  -- data kept for reading (read-only marks) is dropped once the marks are gone
  if #reads > 0 then
    local c = e.nx
    while c ~= e and #reads > 0 do
      if c.ctl == "mark" or c.ctl == "rmark" then break end
      local nx = c.nx
      if c == reads[1] then table.remove(reads, 1) end
      remove_any(c)
      c = nx
    end
  end
  local p = pending[1]
  local begin = e.nx
  local keep
  if #reads > 0 then begin = reads[#reads].nx; keep = begin end
  local c = begin
  local oldend_seen = false
  while c ~= p do
    if c.ctl == "end" then return nil end -- (cannot happen: p is in the ring)
    local nx = c.nx
    if c.ctl == "oldend" and not oldend_seen then
      oldend_seen = true
      if c == begin then begin = nx end
      if c == keep then keep = nx end
      remove_ctl(c)
    elseif c.ctl == "select" or c.ctl == "mark" then
      return nil
    elseif c.ctl == "rmark" and not keep then
      keep = c
    end
    c = nx
  end
  local out = new_buffer()
  out.e.ro = p.ro
  local udata = self.udata[p]
  self.udata[p] = nil
  table.remove(pending, 1)
  -- move [begin, keep or p) into out
  local stop = keep or p
  if begin ~= stop then
    local first, last = begin, stop.pv
    first.pv.nx, stop.pv = stop, first.pv
    first.pv, last.nx = last, first
    link_before(out.e, first, last)
  end
  if keep then
    c = keep
    while c ~= p do
      if not c.ctl then
        local n = clone_chunk(c, false)
        link_before(out.e, n, n)
        c.ro = true
      end
      c = c.nx
    end
    reads[#reads + 1] = p
  else
    if p ~= e then remove_ctl(p) else p.push = nil end
  end
  return pub(out), udata
end

---------------------------------------------------------------------------
-- sub streams: a stream of sub buffers selected out of their buffers; pop() restores them
---------------------------------------------------------------------------
local SST = {}
local SST_MT = { __index = function(self, k)
  local m = SST[k]
  if m ~= nil then return m end
  if k == "isfinished" then return self.stream.ds.e.eof == true end
  if k == "data" then return self.stream.data end
  return nil
end }

function SST.push(self, sub)
  if SS[sub] == nil then fail("missing data parameter") end
  local ref, extract = SUB.select(sub)
  return ST.push(self.stream, extract, ref)
end

function SST.finish(self) ST.finish(self.stream) end

-- pop() -> sub buffer of the oldest pushed sub, now back in its own buffer (restored with
-- any edit made through the stream), or nil. One push per call (Haka pops all that can be
-- popped and returns one sub spanning them, which is only well formed for a single push).
function SST.pop(self)
  while true do
    local buf, ref = ST.pop(self.stream)
    if buf == nil then return nil end
    local sub
    local bs = VBS[buf]
    if not isempty(bs) then
      local ec = bs.e.pv
      sub = new_sub(new_iter(bs.e.nx, 0), new_iter(ec, ec.size))
    end
    if ref then IT.restore(ref, buf) end
    if sub then return sub end
  end
end

---------------------------------------------------------------------------
-- stream coroutine manager (Haka's vbuffer_stream_comanager)
---------------------------------------------------------------------------
local CM = {}
CM.__index = CM
local comanager = { method = CM }

-- new([stream]): `stream` gives the default position for process() without `current`
function comanager.new(cls, stream)
  if cls ~= comanager then stream = cls end
  return (setmetatable({ _co = {}, _stream = stream }, CM))
end
setmetatable(comanager, { __call = function(cls, stream) return comanager.new(cls, stream) end })

local function entry(f, iter) f(iter) end

-- start(id, f): f(iter) runs in a coroutine at the first process(); its iterator blocks
function CM.start(self, id, f)
  local co = co_create(entry)
  managed[co] = true
  self._co[id] = { co = co, f = f, started = false }
end

function CM.has(self, id) return self._co[id] ~= nil end

function CM.has_pending(self)
  for _, r in pairs(self._co) do if r then return true end end
  return false
end

local function process_one(self, id, r, current)
  if current == nil then
    local st = self._stream
    if st == nil then fail("comanager: no current iterator") end
    current = (st.stream or st).data:pos("end")
  end
  local ok, msg
  if not r.started then
    r.started = true
    ok, msg = co_resume(r.co, r.f, IT.copy(current))
  else
    ok, msg = co_resume(r.co, current)
  end
  if not ok then
    self._co[id] = false
    error(msg, 0)
  end
  if co_status(r.co) == "dead" then self._co[id] = false end
end

-- process(id[, current]): resume one coroutine (current: the stream's new data)
function CM.process(self, id, current)
  local r = self._co[id]
  if r == nil then fail("comanager: unknown id " .. tostring(id)) end
  if r then return process_one(self, id, r, current) end
end

function CM.process_all(self, current)
  for id, r in pairs(self._co) do
    if r then process_one(self, id, r, current) end
  end
end

-- drop every coroutine (e.g. the flow ended)
function CM.clear(self) self._co = {} end

---------------------------------------------------------------------------
-- engine side: external views over packet bytes
---------------------------------------------------------------------------
-- external(ptr, len, writable) -> buffer, token: a vbuffer over `len` bytes at `ptr`
-- (cdata pointer or address) WITHOUT copy. Writes go to that memory (when writable);
-- otherwise "read only buffer". The memory must outlive the view: before it goes away,
-- call external_end(token, 'copy') (chunks still reachable get their own copy, e.g. data
-- kept in a stream) or external_end(token, 'drop') (iterators on them become invalid).
-- `reuse`: a token that external_end has ended (a caller making one view per call, e.g.
-- the engine per stream segment, saves two tables per view); one still in use is not taken.
local function external_state(ptr, len, writable, reuse)
  len = tonumber(len) or 0
  local p = ptr
  if not ffi.istype(u8p, p) then p = ffi.cast(u8p, ptr) end
  local tok = reuse
  if tok == nil or tok.n ~= 0 or tok.live then tok = { chunks = {}, n = 0 } end
  tok.live = true
  local b = new_buffer()
  if len > 0 then
    local c = new_chunk(p, 0, len, nil)
    c.ro = not writable
    c.ext = tok
    ext_register(c)
    link_before(b.e, c, c)
  end
  if not writable then b.e.ro = true end
  return b, tok
end
function M.external(ptr, len, writable, reuse)
  local b, tok = external_state(ptr, len, writable, reuse)
  return pub(b), tok
end
-- external_sub(ptr, len, writable, reuse) -> sub, buffer state, token: the whole view as a
-- sub, without a buffer object (the engine hands each stream segment as a sub; the buffer
-- was an object and a weak table entry per segment that nothing used). Give the state to
-- external_edits.
function M.external_sub(ptr, len, writable, reuse)
  local b, tok = external_state(ptr, len, writable, reuse)
  return VB.sub(b, 0), b, tok
end
-- external_view(ptr, len, writable, reuse) -> buffer state, token: the view alone (no sub);
-- view_iter(state) an iterator at its beginning, view_sub(state) the whole view as a sub
M.external_view = external_state
function M.view_iter(b) return new_iter(b.e.nx, 0) end
function M.view_sub(b) return VB.sub(b, 0) end

-- A message cut by the end of a segment, parsed in place again with the next segment
-- (dissector.lua) rather than through a stream and a coroutine:
-- left_from(c, off, skip, n, share) -> a buffer state of the `n` bytes `skip` bytes after
-- (c, off) (when `share`, clones sharing the bytes: those of an external view are
-- registered in its token, and external_end gives them their own copy, as it does to a
-- stream's; else a writable copy, as a stream is pushed without an external view);
-- left_ring(left, view, share) -> an iterator at the start of `left` once the view's bytes
-- are appended to it after a zero-size boundary (clones when `share`, so that writes reach
-- the view's bytes, with the region for stream_edits; else a copy, and no region).
-- bytes [off, off + len) of chunk c as a chunk of their own: a clone sharing them (share)
-- or a copy
local function piece(c, off, len, share)
  if share then
    local k = clone_chunk(c, false)
    if off > 0 or len < c.size then
      k.o, k.size = c.o + off, len
      if k.orig then k.orig = k.orig:sub(off + 1, off + len) end
    end
    return k
  end
  local a = u8arr(len)
  ffi.copy(a, c.p + c.o + off, len)
  return new_chunk(a, 0, len, a)
end
function M.left_from(c, off, skip, n, share)
  local it = new_iter(c, off)
  if skip > 0 then adv(it, skip) end
  c, off = fix(it)
  local out = new_buffer()
  while n > 0 and c.ctl ~= "end" do
    local len = c.size - off
    if len > n then len = n end
    if not c.ctl and len > 0 then
      local k = piece(c, off, len, share)
      link_before(out.e, k, k)
      n = n - len
    end
    c = c.nx; off = 0
  end
  return out
end
function M.left_ring(left, view, share)
  local e = left.e
  local bnd = { size = 0, ctl = "seg", p = nil, o = 0, nx = nil, pv = nil }
  link_before(e, bnd, bnd)
  local c = view.e.nx
  while c.ctl ~= "end" do
    if not c.ctl and c.size > 0 then
      local k = piece(c, 0, c.size, share)
      link_before(e, k, k)
    end
    c = c.nx
  end
  if share then e.ro = view.e.ro end
  return new_iter(e.nx, 0), share and { bnd, e } or nil
end

local function end_chunk(tok, c, mode)
  if c.ext == tok then
    c.ext = nil
    if mode == "copy" then
      local a = u8arr(c.size)
      if c.size > 0 then ffi.copy(a, c.p + c.o, c.size) end
      c.p, c.o, c.anchor = a, 0, a
    else
      c.p, c.anchor, c.size, c.dead = nil, nil, 0, true
    end
  end
end
-- (the first chunk out of the loop: a view mostly has one, and a loop run on every call
-- kept LuaJIT from compiling the engine's call as one trace, see dissector.lua's
-- parse_in_place)
function M.external_end(tok, mode)
  local list = tok.chunks
  local n = tok.n
  if n > 0 then
    end_chunk(tok, list[1], mode)
    list[1] = nil
    for i = 2, n do
      end_chunk(tok, list[i], mode)
      list[i] = nil
    end
  end
  tok.n = 0
  tok.live = false
end

M.size = function(b) return buf_size(bstate(b)) end
M.modified = function(b) return buf_modified(bstate(b)) end

-- copy_to(buf, dst, cap) -> bytes written, or nil when the buffer is larger than cap
function M.copy_to(b, dst, cap)
  b = bstate(b)
  local n = buf_size(b)
  if n > cap then return nil end
  dst = ffi.cast(u8p, dst)
  local i, e = 0, b.e
  local c = e.nx
  while c ~= e do
    if c.size > 0 then
      if dst + i ~= c.p + c.o then ffi.copy(dst + i, c.p + c.o, c.size) end
      i = i + c.size
    end
    c = c.nx
  end
  return n
end

-- inplace(buf, ptr, len) -> true when the buffer's bytes are exactly [ptr, ptr+len) in
-- order (only in-place writes happened: nothing to copy back)
function M.inplace(b, ptr, len)
  b = bstate(b)
  local p = ffi.cast(u8p, ptr)
  local i, e = 0, b.e
  local c = e.nx
  while c ~= e do
    if c.size > 0 then
      if c.p + c.o ~= p + i then return false end
      i = i + c.size
    end
    c = c.nx
  end
  return i == len
end

-- external_edits(buf, tok, ptr, len) -> nil when the buffer is still exactly the `len`
-- untouched bytes at `ptr` of the external view `tok`, else the edits that turn those bytes
-- into the buffer's content, in the original's offsets and in order: { op, off, len, bytes }
-- with op 1 insert (len 0), 2 erase (no bytes), 3 replace (bytes of the same length: a
-- chunk whose bytes were written in place, flag `w`). The buffer is walked chunk by chunk: a chunk of the view is original
-- data (at offset c.o), any other chunk was inserted. When the view's chunks are no longer
-- in order (a rule moved data around), one replace of everything.
-- (the list is built by add_edit, not by a closure: a closure made per call, "NYI: bytecode
-- FNEW", kept the whole function out of LuaJIT's traces, and it runs once per segment)
local function add_edit(out, op, off, l, bytes, orig)
  out = out or {}
  out[#out + 1] = { op, off, l, bytes, orig }
  return out
end
-- the edits of the chunks from `c` up to `stop` (excluded) against the view's bytes
local function edits_between(c, stop, tok, ptr, len)
  local base = ffi.cast(u8p, ptr)
  local out = nil
  local pos, e = 0, stop
  local first = c
  local pend, pend_off = nil, nil -- inserted chunks gathered before the next original one
  while c ~= e do
    if c.size > 0 then
      local orig = c.ext == tok and c.p == base
      if orig then
        local o = c.o
        if o < pos or o + c.size > len then
          local parts_, k = {}, 0
          local x = first
          while x ~= e do
            if not x.ctl and x.size > 0 then k = k + 1; parts_[k] = ffi.string(x.p + x.o, x.size) end
            x = x.nx
          end
          return { { 3, 0, len, concat(parts_, "", 1, k) } }
        end
        -- bytes erased and others in their place: one replace
        if o > pos and pend then out = add_edit(out, 3, pos, o - pos, concat(pend)); pend = nil
        elseif o > pos then out = add_edit(out, 2, pos, o - pos)
        elseif pend then out = add_edit(out, 1, o, 0, concat(pend)); pend = nil end
        -- (written in place: with the bytes it had, see keep_orig)
        if c.w then out = add_edit(out, 3, o, c.size, ffi.string(c.p + o, c.size), c.orig) end
        pos = o + c.size
      else
        pend = pend or {}
        pend[#pend + 1] = ffi.string(c.p + c.o, c.size)
      end
    end
    c = c.nx
  end
  if pos < len and pend then out = add_edit(out, 3, pos, len - pos, concat(pend))
  elseif pos < len then out = add_edit(out, 2, pos, len - pos)
  elseif pend then out = add_edit(out, 1, len, 0, concat(pend)) end
  return out
end
function M.external_edits(b, tok, ptr, len)
  -- (a buffer, or the state external_sub gave)
  local st = VBS[b]
  if st ~= nil then b = st elseif type(b) ~= "table" or b.e == nil then b = bstate(b) end
  -- (the view's one chunk as it was made, nothing written: no edit, and no loop, see
  -- external_end)
  local e = b.e
  local c = e.nx
  if c.nx == e and not c.ctl and not c.w and c.ext == tok and c.o == 0 and c.size == len
    and c.p == ffi.cast(u8p, ptr) then
    return nil
  end
  return edits_between(c, e, tok, ptr, len)
end

-- stream_push_view(stream, view): pushes a clone of the external view `view` (its chunks
-- share the view's bytes, registered in its token) onto `stream`; returns the iterator at
-- the pushed data and the region, for stream_edits
function M.stream_push_view(stream, view)
  local old = stream.ds.e
  local cur = ST.push(stream, VB.clone(view, false))
  return cur, { old, stream.ds.e }
end
-- stream_edits(region, tok, ptr, len): the edits made to the pushed view's bytes through
-- the stream (as external_edits), nil when none or when the region no longer holds together
function M.stream_edits(region, tok, ptr, len)
  local old, ne = region[1], region[2]
  if old.dead or old.gone or ne.dead or ne.gone then return nil end
  -- the region must still be linked from old to ne
  local c = old.nx
  local guard = 0
  while c ~= ne do
    if c == nil or c.ctl == "end" and c ~= ne then return nil end
    c = c.nx
    guard = guard + 1
    if guard > 1000000 then return nil end
  end
  return edits_between(old.nx, ne, tok, ptr, len)
end

---------------------------------------------------------------------------
-- grammar helpers (engine/lua/grammar.lua): reads without sub objects
---------------------------------------------------------------------------
-- whether the iterator is on a stream (vbuffer_stream's data)
function M.iter_is_stream(it)
  local c = fix(it)
  return end_of(c).stream == true
end

-- up to n bytes from the iterator as a string (never blocks; the iterator does not move)
function M.peek(it, n)
  local c, off = fix(it)
  while c.ctl and c.ctl ~= "end" do c = c.nx; off = 0 end
  if c.ctl == "end" or n <= 0 then return "" end
  local a = c.size - off
  if a >= n then return ffi.string(c.p + c.o + off, n) end
  if c.nx.ctl == "end" then return ffi.string(c.p + c.o + off, a) end
  local k = 0
  while n > 0 and c.ctl ~= "end" do
    if not c.ctl then
      local len = c.size - off
      if len > n then len = n end
      if len > 0 then
        k = k + 1
        parts[k] = ffi.string(c.p + c.o + off, len)
        n = n - len
      end
    end
    c = c.nx; off = 0
  end
  local r = concat(parts, "", 1, k)
  for i = 1, k do parts[i] = nil end
  return r
end

-- the next byte (0..255) from the iterator, or -1 at the end of the data (never blocks)
function M.peek_byte(it)
  local c, off = fix(it)
  while c.ctl ~= "end" do
    if not c.ctl and off < c.size then return c.p[c.o + off] end
    c = c.nx; off = 0
  end
  return -1
end

-- bytes available from the iterator, counting at most max (never blocks)
function M.avail(it, max)
  local c, off = fix(it)
  return avail_from(c, off, max or huge)
end

-- unsigned big (or little) endian number of `size` bytes (1..6) at the iterator, or nil
-- when fewer bytes are there (never blocks; the iterator does not move)
-- (grammar number fields: where an iterator is, and the number at such a place)
function M.pos(it) return fix(it) end
-- the sub of chunk c from offset off to eoff, as iter:sub made it when an iterator at
-- (c, off) moved over those bytes of the chunk (grammar bytes fields made on first read)
function M.sub_in_chunk(c, off, eoff) return new_sub(new_iter(c, off), new_iter(c, eoff)) end
function M.iter_at(c, off) return new_iter(c, off) end
function M.peek_uint_at(c, off, size, little)
  if not c.ctl and c.size - off >= size and not c.dead and not c.gone then
    local p = c.p + c.o + off
    if size == 2 then
      if little then return p[1] * 256 + p[0] end
      return p[0] * 256 + p[1]
    end
    if size == 1 then return p[0] end
    if size == 4 then
      if little then return ((p[3] * 256 + p[2]) * 256 + p[1]) * 256 + p[0] end
      return ((p[0] * 256 + p[1]) * 256 + p[2]) * 256 + p[3]
    end
  end
  return M.peek_uint(new_iter(c, off), size, little)
end
function M.peek_uint(it, size, little)
  local c, off = fix(it)
  while c.ctl and c.ctl ~= "end" do c = c.nx; off = 0 end
  if c.ctl ~= "end" and c.size - off >= size then
    local p = c.p + c.o + off
    if size == 1 then return p[0] end
    if size == 2 then
      if little then return p[1] * 256 + p[0] end
      return p[0] * 256 + p[1]
    end
    if size == 4 then
      if little then return ((p[3] * 256 + p[2]) * 256 + p[1]) * 256 + p[0] end
      return ((p[0] * 256 + p[1]) * 256 + p[2]) * 256 + p[3]
    end
    local v = 0
    if little then
      for i = size - 1, 0, -1 do v = v * 256 + p[i] end
    else
      for i = 0, size - 1 do v = v * 256 + p[i] end
    end
    return v
  end
  if avail_from(c, off, size) < size then return nil end
  local v, mul = 0, 1
  local i = 0
  while i < size do
    if not c.ctl and off < c.size then
      local b = c.p[c.o + off]
      if little then v = v + b * mul; mul = mul * 256 else v = v * 256 + b end
      i = i + 1; off = off + 1
    else
      c = c.nx; off = 0
    end
  end
  return v
end

M.allocate = allocate
M.from = from_string
M.stream = new_stream
M.sub_stream = function() return setmetatable({ stream = new_stream() }, SST_MT) end
M.comanager = comanager
M.is_buffer = function(x) return VBS[x] ~= nil end
M.is_sub = function(x) return SS[x] ~= nil end
M.is_iterator = function(x) return getmetatable(x) == IT_MT end

-- haka.vbuffer_sub(begin, end)
local function sub_between(b, e)
  if getmetatable(b) ~= IT_MT or getmetatable(e) ~= IT_MT then fail("invalid iterator") end
  local bc, bo = fix(b)
  local ec, eo = fix(e)
  return new_sub(new_iter(bc, bo), new_iter(ec, eo))
end
M.sub_between = sub_between

function M.install(haka)
  haka.vbuffer_allocate = function(size, zero) return allocate(size, zero) end
  haka.vbuffer_from = function(s) return from_string(s) end
  haka.vbuffer_sub = sub_between
  haka.vbuffer_stream = new_stream
  haka.vbuffer_sub_stream = M.sub_stream
  haka.vbuffer_stream_comanager = comanager
  -- Haka's blocking iterator wrapper: iterators block by themselves here
  haka.vbuffer_iterator_blocking = function(it) return IT.copy(it) end
end

return M
