-- Dissectors written in Lua (haka.dissector.new) for "Haka on DPDK", written anew.
-- Loaded once per Lua state by the engine (engine/src/lua/libs.rs), after grammar.lua and
-- state_machine.lua.
--
--   local d = haka.dissector.new{ type = tcp_connection.helper.TcpFlowDissector, name = 'smtp' }
--   d:register_event('command')                 -- haka.dissectors.smtp.events.command
--   d:register_streamed_event('mail_content')   -- rules may take it with options.streamed
--   d.grammar = haka.grammar.new(...)
--   d.state_machine = haka.state_machine.new(...)  -- instanciated per dissector object
--   d:install_tcp_rule(25)                      -- or a next_dissector policy:
--   haka.policy{ on = haka.dissectors.tcp_connection.policies.next_dissector, port = 25,
--                action = haka.dissectors.smtp.install }
--
-- Dissector classes (haka.helper, Haka's):
--  * PacketDissector: one object per packet, over the payload of a native dissector (the
--    packet, ipv4, ipv6, tcp, udp): receive_packet, send_packet; parse_payload(pkt, payload)
--    parses (by default with the class's `grammar` field, the object being the result).
--    Installed by a next_dissector policy of ipv4/ipv6/tcp/udp (action = ...install) or
--    attached to a native dissector with `cls:attach(parent_name, select)`.
--  * FlowDissector, and over the connection dissectors:
--    tcp_connection.helper.TcpFlowDissector: one object per connection, fed with the
--    connection's reassembled stream, one vbuffer stream per direction; by default a
--    coroutine per direction runs receive_streamed(iter, direction) (the state machine's
--    update until the end of the stream), its iterator blocking until more data comes;
--    udp_connection.helper.UdpFlowDissector: receive(payload, direction, pkt) per datagram.
-- Every Lua dissector has a `protocol_error` event; a grammar parse error nobody handles
-- (a BidirectionalState without parse_error action, a packet that does not parse) is a
-- protocol error: the event fires, it is counted, and the packet or the connection is
-- dropped (`[rules] lua_protocol_error = "drop"`, or "accept": dissection stops, the
-- traffic goes on). Errors raised by Lua code in a dissector are logged ("lua: NAME: ...")
-- and drop, as Haka's dissector.pcall.
local class = require('class')
local VBM = require('haka/vbuffer')
local sfmt = string.format
local type, pairs, ipairs, rawget, rawset, error, select, pcall, setmetatable, tostring =
  type, pairs, ipairs, rawget, rawset, error, select, pcall, setmetatable, tostring

local dissector = haka.dissector
local helper = haka.helper or {}
haka.helper = helper
local LD = haka._lua_dissectors -- engine hooks (engine/lua/haka.lua)
local log = haka.log_section("dissector")
local log_lua = haka.log_section("lua")
local Event = haka.event.Event

local function new_event(name, continue)
  return setmetatable({ name = name, listeners = {}, continue = continue }, Event)
end

---------------------------------------------------------------------------
-- base class
---------------------------------------------------------------------------
local Dissector = class.class('Dissector')
helper.Dissector = Dissector
Dissector.auto_state_machine = true
-- event definitions of the helper classes, inherited by the dissectors made of them
rawset(Dissector, '_evdefs', { { name = 'protocol_error' } })

local function evdefs_of(cls)
  local chain = {}
  local c = cls
  while c do
    chain[#chain + 1] = c
    c = rawget(c, 'super')
  end
  local out, seen = {}, {}
  for i = #chain, 1, -1 do
    local defs = rawget(chain[i], '_evdefs')
    if defs then
      for _, d in ipairs(defs) do
        if not seen[d.name] then seen[d.name] = true; out[#out + 1] = d end
      end
    end
  end
  return out
end

function Dissector.method:__init(parent)
  rawset(self, '_parent', parent)
  local cls = class.classof(self)
  if cls.state_machine and cls.auto_state_machine then
    self.state = cls.state_machine:instanciate(self)
  end
end

Dissector.property.name = { get = function(self) return class.classof(self).name end }

-- a field the dissector does not have: its parent's (Haka)
function Dissector.method:__index(name)
  if type(name) == 'string' and name:sub(1, 1) ~= '_' then
    local parent = rawget(self, '_parent')
    if parent ~= nil then
      local ok, v = pcall(function() return parent[name] end)
      if ok then return v end
    end
  end
  return nil
end

function Dissector.method:get(name)
  local it = self
  while it do
    if it.name == name then return it end
    it = rawget(it, '_parent')
  end
  return nil
end

-- (fixed arguments: LuaJIT does not compile a vararg forwarded from a frame the trace did
-- not enter ("NYI: bytecode VARG"), which aborted the trace of every event; more than 6
-- arguments take the vararg path)
-- (up to four listeners called without a loop: a loop run on every event kept the path
-- from the engine's call to the rules from compiling as one trace, see parse_in_place)
local function fire(self, ev, a, b, c, d, e, f)
  local l = ev.listeners
  local n = #l
  if n == 0 then return end
  l[1](self, a, b, c, d, e, f)
  if n == 1 or not self:can_continue() then return end
  l[2](self, a, b, c, d, e, f)
  if n == 2 or not self:can_continue() then return end
  l[3](self, a, b, c, d, e, f)
  if n == 3 or not self:can_continue() then return end
  l[4](self, a, b, c, d, e, f)
  if n == 4 or not self:can_continue() then return end
  for i = 5, n do
    l[i](self, a, b, c, d, e, f)
    if not self:can_continue() then return end
  end
end
local function fire_var(self, ev, ...)
  local l = ev.listeners
  for i = 1, #l do
    l[i](self, ...)
    if not self:can_continue() then return end
  end
end

function Dissector.method:trigger(name, a, b, c, d, e, f, g, ...)
  local ev = class.classof(self).events[name]
  if g ~= nil then return fire_var(self, ev, a, b, c, d, e, f, g, ...) end
  return fire(self, ev, a, b, c, d, e, f)
end

function Dissector.method:can_continue() return true end
function Dissector.method:continue()
  if not self:can_continue() then haka.abort() end
end
function Dissector.method:alert(a) return haka.alert(a) end
function Dissector.method:drop() error("not implemented") end
function Dissector.method:error() return self:drop() end
function Dissector.method:send() end
function Dissector.method:install_criterion() return {} end
function Dissector.method:select_next_dissector(d)
  rawset(self, '_next_dissector', d)
end

-- a protocol error of this dissector (e.g. a grammar parse error): counted, the
-- protocol_error event, then the configured verdict
function Dissector.method:protocol_error(err)
  if rawget(self, '_protocol_error') then return end
  rawset(self, '_protocol_error', err or true)
  if LD then LD.count_protocol_error() end
  local ev = class.classof(self).events.protocol_error
  fire(self, ev, err)
  log.debug("%s: protocol error: %s", tostring(self.name), tostring(err))
  if dissector.protocol_error_drop ~= false then
    if self:can_continue() then self:drop() end
  else
    self:_detach()
  end
end
function Dissector.method:_detach() rawset(self, '_detached', true) end

-- register_event(name[, continue[, signal[, options]]])
function Dissector.register_event(cls, name, continue, signal, options)
  local defs = rawget(cls, '_evdefs')
  if not defs then defs = {}; rawset(cls, '_evdefs', defs) end
  defs[#defs + 1] = { name = name, streamed = signal == 'streamed', options = options }
  local events = rawget(cls, 'events')
  if events then
    rawset(events, name, dissector._make_event(cls, name, signal == 'streamed'))
  end
end
function Dissector.register_streamed_event(cls, name, continue, options)
  return Dissector.register_event(cls, name, continue, 'streamed', options)
end

-- Haka's stream_wrapper: a streamed rule runs as a coroutine over `stream`, resumed with
-- each new data (`current`); the other rules get the data available at `current`
local function streamed(self, stream, f, current, ...)
  if (not current or not current:check_available(1, true)) and not stream.isfinished then return end
  local cos = rawget(self, '_costream')
  if not cos then cos = {}; rawset(self, '_costream', cos) end
  local cm = cos[stream]
  if not cm then cm = haka.vbuffer_stream_comanager:new(stream); cos[stream] = cm end
  if not cm:has(f) then
    local args = { n = select('#', ...), ... }
    cm:start(f, function(iter) return f(self, iter, unpack(args, 1, args.n)) end)
  end
  local cur
  if current then cur = current:copy() end
  cm:process(f, cur)
end
local function stream_wrapper(f, options)
  if options and options.streamed then
    return function(self, stream, current, ...) return streamed(self, stream, f, current, ...) end
  end
  return function(self, stream, current, ...)
    if (not current or not current:check_available(1, true)) and not stream.isfinished then return end
    if current then
      local sub = current:copy():sub('available')
      if sub then return f(self, sub, ...) end
    end
  end
end

function dissector._make_event(cls, name, is_streamed)
  local ev = new_event(sfmt("%s:%s", cls.name, name), function(self) return self:can_continue() end)
  if is_streamed then
    ev.wrap = stream_wrapper
    ev.lua_streamed = true
  end
  ev.dissector = cls
  return ev
end

---------------------------------------------------------------------------
-- haka.dissector.new
---------------------------------------------------------------------------
local registry = {}
dissector.lua_classes = registry

local function setup(cls, name)
  local events = setmetatable({}, {
    __index = function(_, k) error(sfmt("unknown event '%s' on dissector '%s'", tostring(k), name), 2) end,
  })
  rawset(cls, 'events', events)
  for _, d in ipairs(evdefs_of(cls)) do
    rawset(events, d.name, dissector._make_event(cls, d.name, d.streamed))
  end
  rawset(cls, 'options', {})
  local pol = haka.policy.new(sfmt("%s next dissector", name))
  pol.name = "next_dissector"
  rawset(cls, 'policies', { next_dissector = pol })
  local entry = {
    name = name, events = events, policies = rawget(cls, 'policies'), class = cls,
    create = function(...) return cls:create(...) end,
    install = function(policy, ctx, values, desc) return ctx:select_next_dissector(cls) end,
  }
  haka.dissectors[name] = entry
  registry[name] = cls
end

function dissector.new(args)
  if type(args) ~= 'table' then error("dissector.new expects a table", 2) end
  local name, base = args.name, args.type
  if type(name) ~= 'string' then error("no name defined for dissector", 2) end
  if not base then error(sfmt("no type defined for dissector '%s'", name), 2) end
  if not class.isclass(base) or not class.isaclass(base, Dissector) then
    error(sfmt("invalid type for dissector '%s'", name), 2)
  end
  if rawget(haka.dissectors, name) ~= nil then error(sfmt("dissector '%s' already defined", name), 2) end
  local cls = class.class(name, base)
  setup(cls, name)
  if haka.mode ~= 'console' then log.debug("register new dissector '%s'", name) end
  local kind = rawget(base, '_kind') or base._kind
  if LD then LD.registered(cls, kind) end
  return cls
end

-- dissector.pcall(self, f): f() protected; an error is logged ("lua: NAME: msg") and the
-- dissector errors (drops)
function dissector.pcall(self, f)
  local ok, r = xpcall(f, debug.format_error)
  if not ok and r ~= nil then
    if r ~= "haka.abort()" and not tostring(r):find("haka.abort()", 1, true) then
      log_lua.error("%s: %s", tostring(self.name), tostring(r))
    end
    return self:error()
  end
  return r
end

---------------------------------------------------------------------------
-- packet dissectors
---------------------------------------------------------------------------
local PacketDissector = class.class('PacketDissector', Dissector)
helper.PacketDissector = PacketDissector
dissector.PacketDissector = PacketDissector
rawset(PacketDissector, '_kind', 'packet')
rawset(PacketDissector, '_evdefs', { { name = 'receive_packet' }, { name = 'send_packet' } })

function PacketDissector.method:__init(parent)
  class.super(PacketDissector).__init(self, parent)
end
function PacketDissector.method:can_continue()
  if rawget(self, '_dropped') then return false end
  local p = rawget(self, '_parent')
  return p == nil or p:can_continue()
end
function PacketDissector.method:drop()
  rawset(self, '_dropped', true)
  local p = rawget(self, '_parent')
  if p then return p:drop() end
end
function PacketDissector.method:send()
  local p = rawget(self, '_parent')
  if p then return p:send() end
end
function PacketDissector.method:inject()
  local p = rawget(self, '_parent')
  if p then return p:inject() end
end
-- the data this dissector parses: its parent's payload
function PacketDissector.method:_payload_of(pkt)
  local f = rawget(self, '_payload_fn')
  if f then return f(pkt) end
  return pkt.payload
end
function PacketDissector.method:parse(pkt)
  local payload = self:_payload_of(pkt)
  rawset(self, '_payload', payload)
  return self:parse_payload(pkt, payload)
end
-- default: the class's grammar (a compiled entity) parses the payload into the object
function PacketDissector.method:parse_payload(pkt, payload)
  local g = class.classof(self).grammar
  if not g then error("not implemented") end
  local _, err = g:parse(payload:pos("begin"), self)
  return err
end
function PacketDissector.method:forge_payload(pkt, payload) end
function PacketDissector.method:receive()
  local pkt = rawget(self, '_parent')
  local cls = class.classof(self)
  local err = self:parse(pkt)
  if err then return self:protocol_error(err) end
  fire(self, cls.events.receive_packet)
  if not self:can_continue() then return end
  local pol = cls.policies.next_dissector
  if #pol.policies > 0 then
    pol:apply{ values = self:install_criterion(), ctx = self }
  end
  local nd = rawget(self, '_next_dissector')
  if nd and self:can_continue() then
    rawset(self, '_next_dissector', nil)
    if class.isclass(nd) then nd = nd:new(self) end
    if nd.receive then dissector.pcall(nd, function() return nd:receive() end) end
  end
  if not self:can_continue() then return end
  fire(self, cls.events.send_packet)
  self:forge_payload(pkt, rawget(self, '_payload'))
end

-- attach(parent, select[, payload]): this packet dissector runs on every packet of the
-- native dissector `parent` ('packet', 'ipv4', 'ipv6', 'tcp', 'udp', 'icmp') for which
-- select(view) is true; payload(view) gives the data it parses (default: view.payload)
function PacketDissector.attach(cls, parent, select_, payload)
  if not LD then error("attach: no engine support") end
  LD.attach(cls, parent, select_ or function() return true end, payload)
end

-- runs packet dissector `cls` over native view `view` (engine/lua/haka.lua)
function dissector._run_packet(cls, view, payload_fn)
  local self = cls:new(view)
  if payload_fn then rawset(self, '_payload_fn', payload_fn) end
  return dissector.pcall(self, function() return self:receive() end)
end

---------------------------------------------------------------------------
-- flow dissectors
---------------------------------------------------------------------------
local FlowDissector = class.class('FlowDissector', Dissector)
helper.FlowDissector = FlowDissector
dissector.FlowDissector = FlowDissector

function FlowDissector.method:__init(flow)
  class.super(FlowDissector).__init(self, flow)
  self.flow = flow
end
function FlowDissector.method:can_continue()
  local f = rawget(self, 'flow')
  return f ~= nil and not rawget(self, '_detached') and f:can_continue()
end
function FlowDissector.method:drop()
  local f = rawget(self, 'flow')
  if f then f:drop() end
end
function FlowDissector.method:reset()
  local f = rawget(self, 'flow')
  if f then f:reset() end
end
function FlowDissector.method:halfreset()
  local f = rawget(self, 'flow')
  if f then f:halfreset() end
end
function FlowDissector.method:send() end
FlowDissector.property.connection = { get = function(self) return rawget(self, 'flow') end }

-- dissect(flow): this dissector takes the flow's data from now on
function FlowDissector.dissect(cls, flow)
  return flow:select_next_dissector(cls:new(flow))
end

-- TCP: the connection's two streams
local TcpFlowDissector = class.class('TcpFlowDissector', FlowDissector)
rawset(TcpFlowDissector, '_kind', 'tcp')
dissector.TcpFlowDissector = TcpFlowDissector

-- a next_dissector policy of `conn` (tcp_connection, udp_connection) installing `cls` on `port`
local function install_on_port(cls, conn, port)
  haka.policy{
    on = haka.dissectors[conn].policies.next_dissector,
    name = cls.name,
    port = port,
    action = haka.dissectors[cls.name].install,
  }
end

function TcpFlowDissector.install_tcp_rule(cls, port)
  install_on_port(cls, 'tcp_connection', port)
end

-- default: the state machine's update over the stream until its end
function TcpFlowDissector.method:receive_streamed(iter, direction)
  local sm = self.state
  if not sm then error("no state machine defined") end
  local st = rawget(self, '_streams')[direction]
  while iter:wait() do
    local inst = sm._instance
    -- (bytes of the data just pushed that the in-place path already parsed; the split puts
    -- the iterator at the start of a chunk, so that the mark of the next record goes
    -- before it: in passthrough mode a pop moves the chunks before a read-only mark out of
    -- the stream, and the iterator must not be at the end of one of them)
    local skip = st.skip
    if skip > 0 then st.skip = 0; iter:advance(skip); iter:split() end
    if inst.finished then
      -- the machine is over: the rest of the stream is not dissected
      iter:advance('available')
    elseif skip > 0 and not iter:check_available(1, true) then
      -- (nothing left after them)
      st.partial = false
    else
      iter.meter = 0
      sm:update(iter, direction)
      if not self:can_continue() then return end
      -- (the iterator leaves the chunk the message ended in, which may be at its very end
      -- (e.g. after a number): the stream's pop releases parsed chunks at the next segment
      -- and the iterator must not stay in one)
      iter:split()
      -- (every byte pushed is parsed: the next segment may be parsed in place)
      if not iter:check_available(1, true) then st.partial = false end
      if iter.meter == 0 and not sm._instance.finished then
        -- (nothing parsed: the data would never be consumed)
        return self:protocol_error("no progress in the stream")
      end
    end
  end
end

-- The in-place path: while no message is pending in the direction's stream (st.partial),
-- the default receive_streamed's work on a segment is done on the segment's own bytes,
-- with no stream, coroutine or mark: each message the current BidirectionalState's
-- grammar parses whole triggers its event as the state machine's update would. Only for
-- grammars whose parse cannot depend on bytes after the message (no token, no bytes
-- until a token, chunked or to the end, no try, no array ended by a condition: numbers,
-- counted bytes, records, branches, counted arrays...) and that run no execute()
-- callback (the other callbacks, verify, selectors, counts, apply, are expected to only
-- read the result, and not to look past the message with ctx:lookahead). A message that does not parse there (cut by the end of the segment, or
-- invalid) and everything after it in that direction, until the stream path has parsed
-- all it holds, goes through the stream as before (the bytes already parsed are skipped
-- there; the failed message's reading callbacks run again). Returns the bytes parsed, nil when
-- the dissector stopped.
local BidirectionalState = haka.state_machine.BidirectionalState
local default_receive_streamed = TcpFlowDissector.method.receive_streamed
local DG = haka.grammar.dg
-- whether the compiled grammar entity `g` may be parsed in place (cached in the entity)
local function in_place_ok(g)
  local ok = rawget(g, '_in_place')
  if ok ~= nil then return ok end
  ok = true
  local seen, todo = {}, { g }
  while #todo > 0 do
    local n = table.remove(todo)
    if not seen[n] then
      seen[n] = true
      -- (a try may take another case when a longer one is cut by the end of the segment, an
      -- array ended by a condition may look at the bytes after it)
      if class.isa(n, DG.Token) or (class.isa(n, DG.Bytes) and (n.size == nil or n.untilre or n.chunked_callback))
        or class.isa(n, DG.TryStart) or (class.isa(n, DG.ArrayStart) and not n.bycount)
        or rawget(n, 'effects') then
        ok = false
        break
      end
      local list = {}
      n:_nexts(list)
      if rawget(n, '_catch') then list[#list + 1] = n._catch end
      if rawget(n, '_recurs') then list[#list + 1] = n._recurs end
      for _, x in ipairs(list) do todo[#todo + 1] = x end
    end
  end
  rawset(g, '_in_place', ok)
  return ok
end
-- one message parsed in place: the bytes it took (0: none, the rest goes through the
-- stream, or waits for the next segment when the second value is true: the message is cut
-- by the end of the data; false: the machine is over, nil: the dissector stopped)
local starved = haka.grammar._starved
local function parse_one(self, sm, it, direction)
  local inst = sm._instance
  if inst.finished then return false end
  local cur = inst.current
  if not cur or class.classof(cur) ~= BidirectionalState then return 0 end
  local g = cur._grammar[direction]
  if not g or not in_place_ok(g) then return 0 end
  local res, err = g:parse(it, nil, self)
  local n = it.meter
  if err or n == 0 then return 0, starved(err) end
  sm:trigger(direction, res)
  if not self:can_continue() then return nil end
  return n
end
-- (it: an iterator at the segment's first byte, total: its size)
-- (the first message is parsed out of the loop: a segment mostly holds one, and a loop run
-- on every call kept LuaJIT from compiling the path from the engine's call down to the
-- rules as one trace ("inner loop in root trace"): the callers were blacklisted and ran in
-- the interpreter)
-- (returns the bytes parsed, and whether the next message is cut by the end of the data)
local function parse_in_place(self, it, total, direction)
  if total <= 0 then return 0 end
  local sm = rawget(self, 'state')
  local n, cut = parse_one(self, sm, it, direction)
  if not n then return n == false and total or nil end
  local done = n
  if n == 0 then return 0, cut end
  if done >= total then return done end
  while done < total do
    n, cut = parse_one(self, sm, it, direction)
    if not n then return n == false and total or nil end
    if n == 0 then return done, cut end
    done = done + n
  end
  return done
end
local format_error = debug.format_error

-- the state of the stream of one direction
local function stream_state(self, direction)
  local ss = rawget(self, '_streams')
  if not ss then ss = {}; rawset(self, '_streams', ss) end
  local st = ss[direction]
  if not st then
    -- (the stream and its coroutine manager are made when the stream path first runs: a
    -- connection whose messages all parse in place never needs them)
    st = { stream = false, cm = false, held = 0, skip = 0, partial = false }
    ss[direction] = st
  end
  return st
end
-- A message cut by the end of a segment whose bytes are all there (the parse only ran out
-- of data) is kept, `left` (its bytes, at most LEFT_MAX), and parsed in place again from
-- its start with the next segment's bytes after them (its reading callbacks run again, as
-- the stream path's would); it goes through the stream (with what follows it in the
-- direction) when it is longer, invalid, or when the in-place path no longer applies.
-- (Through a stream and a coroutine, made per cut message, a cut frame cost about 50 us.)
local LEFT_MAX = 4096
-- the in-place path for `total` bytes from iterator `it` (`leftn` of them kept from the
-- previous segment, the rest this segment's) when it applies: true when they are all
-- parsed (or the dissector stopped, or a cut message is kept), false for the stream, and
-- then true when the stream needs the kept bytes first (nothing of them was parsed).
-- `share`: see VBM.left_from; nil: a cut message is not kept (the stream takes it)
local function try_in_place(self, st, it, total, direction, leftn, share)
  if st.partial or dissector.in_place_parsing == false or not rawget(self, 'state')
    or self.receive_streamed ~= default_receive_streamed then
    return false, leftn > 0
  end
  local c0, o0 = VBM.pos(it)
  local ok, done, cut = xpcall(parse_in_place, format_error, self, it, total, direction)
  if not ok then
    if done ~= nil and not tostring(done):find("haka.abort()", 1, true) then
      log_lua.error("%s: %s", tostring(self.name), tostring(done))
    end
    self:error()
    return true
  end
  if done == nil or done >= total then return true end
  if cut and share ~= nil and total - done <= LEFT_MAX then
    st.left, st.leftn = VBM.left_from(c0, o0, done, total - done, share), total - done
    return true
  end
  -- the rest goes through the stream, from the message the segment cut
  st.partial = true
  if done < leftn then st.skip = 0; return false, true end
  st.skip = done - leftn
  return false
end
-- the kept bytes of a cut message (a copy), for the stream
local function left_bytes(left, leftn)
  return haka.vbuffer_from(VBM.peek(VBM.view_iter(left), leftn))
end
local receive_stream

-- the stream of one direction; data: the segment's bytes (a vbuffer_sub), nil at the end
function TcpFlowDissector.method:_receive_data(data, direction)
  if rawget(self, '_detached') then return end
  local st = stream_state(self, direction)
  if st.over then return end
  local left = st.left
  if left then
    -- (a cut message kept by _receive_view: the stream takes it, then the data, or its end)
    st.left = nil
    st.partial = true
    return receive_stream(self, st, data, direction, left_bytes(left, st.leftn), st.leftn)
  end
  if data ~= nil and try_in_place(self, st, data:pos('begin'), #data, direction, 0, nil) then return end
  return receive_stream(self, st, data, direction)
end

-- The engine's call for a TCP segment that no rule but this dissector reads (haka.lua's
-- RT.conn_data): `view`, the segment's external view (a buffer state of vbuffer.lua) of
-- `len` bytes; the segment's sub, what _receive_data takes, is only made when the stream
-- path needs it.
local receive_data = TcpFlowDissector.method._receive_data
local function view_sub(view)
  local data = VBM.view_sub(view)
  -- (the stream path pushes the view itself, not a copy, when it gets the engine's data)
  local ext = LD and LD.current_ext()
  if ext and ext.buf == view then ext.data = data end
  return data
end
function TcpFlowDissector.method:_receive_view(view, len, direction)
  -- (a class of its own _receive_data gets the sub, as from the listener)
  if self._receive_data ~= receive_data then return self:_receive_data(view_sub(view), direction) end
  if rawget(self, '_detached') then return end
  local st = stream_state(self, direction)
  if st.over then return end
  -- (the writes of the rules reach the segment's bytes through the stream when the engine
  -- gave the view for it, see view_sub)
  local ext = LD and LD.current_ext()
  local share = ext ~= nil and ext.buf == view
  local left = st.left
  if not left then
    if try_in_place(self, st, VBM.view_iter(view), len, direction, 0, share) then return end
    return receive_stream(self, st, view_sub(view), direction)
  end
  -- the message the previous segment cut: parsed again from its kept bytes, this
  -- segment's after them
  local leftn = st.leftn
  st.left = nil
  local it, region = VBM.left_ring(left, view, share)
  if region then ext.regions[#ext.regions + 1] = region end
  local done, first = try_in_place(self, st, it, leftn + len, direction, leftn, share)
  if done then return end
  return receive_stream(self, st, view_sub(view), direction, first and left_bytes(left, leftn) or nil, leftn)
end

-- (prefix: bytes pushed before data, from which the stream's parse starts: a cut message
-- kept by the in-place path, of `prefixn` bytes)
function receive_stream(self, st, data, direction, prefix, prefixn)
  if not st.stream then
    -- (the end of a direction with no stream: the default receive_streamed would only see
    -- an empty stream end)
    if data == nil and prefix == nil and self.receive_streamed == default_receive_streamed then return end
    local s = haka.vbuffer_stream()
    st.stream, st.cm = s, haka.vbuffer_stream_comanager:new(s)
  end
  -- the data no mark holds any more is released (not before: the edits of the previous
  -- segment were taken from the stream after its call)
  while true do
    local b = st.stream:pop()
    if not b then break end
    st.held = st.held - #b
  end
  local cur
  if prefix ~= nil and not st.stream.isfinished then
    cur = st.stream:push(prefix)
    st.held = st.held + prefixn
  end
  if data ~= nil then
    if st.stream.isfinished then return end
    local ext = LD and LD.current_ext()
    local n = #data
    local c
    if ext and ext.data == data then
      local region
      c, region = VBM.stream_push_view(st.stream, ext.buf)
      ext.regions[#ext.regions + 1] = region
    else
      c = st.stream:push(haka.vbuffer_from(data:asstring()))
    end
    cur = cur or c
    st.held = st.held + n
  else
    if st.stream.isfinished then return end
    st.stream:finish()
  end
  local cm = st.cm
  if not cm:has(1) then
    cm:start(1, function(iter) return self:receive_streamed(iter, direction) end)
  end
  local was_partial = st.partial
  dissector.pcall(self, function() return cm:process(1, cur) end)
  local cap = dissector.hold_bytes or 1048576
  if st.held > cap and self:can_continue() then
    st.over = true
    return self:protocol_error(sfmt("more than %d bytes held in the %s stream", cap, direction))
  end
  -- The message the in-place path left to the stream (cut by the segment's end) and all
  -- after it are parsed: the stream and its coroutine (waiting for data at the top of
  -- receive_streamed, holding nothing) are let go, the next segment is parsed in place and
  -- a later cut message gets new ones. (Kept, a suspended coroutine and its stream per
  -- direction of most connections were traversed by every cycle of the collector; a split
  -- frame cost ~50 us of worker time.)
  if was_partial and not st.partial and data ~= nil then
    st.stream, st.cm, st.held = false, false, 0
  end
end

-- UDP: one call per datagram
local UdpFlowDissector = class.class('UdpFlowDissector', FlowDissector)
rawset(UdpFlowDissector, '_kind', 'udp')
dissector.UdpFlowDissector = UdpFlowDissector

function UdpFlowDissector.install_udp_rule(cls, port)
  install_on_port(cls, 'udp_connection', port)
end
-- default: the state machine's update with the datagram (or the grammar's parse)
function UdpFlowDissector.method:receive(payload, direction, pkt)
  local sm = self.state
  if sm then
    if sm._instance.finished then return end
    return sm:update(payload:pos('begin'), direction, pkt)
  end
  local g = class.classof(self).grammar
  if g then
    local _, err = g:parse(payload:pos('begin'), self)
    if err then return self:protocol_error(err) end
    return
  end
  error("not implemented")
end
function UdpFlowDissector.method:_receive_datagram(pkt, direction)
  if rawget(self, '_detached') then return end
  return dissector.pcall(self, function() return self:receive(pkt.payload, direction, pkt) end)
end

-- the end of the connection: the state machine finishes
function FlowDissector.method:_end()
  local sm = rawget(self, 'state')
  if sm and not sm._instance.finished then
    dissector.pcall(self, function() return sm:finish() end)
  end
end

-- flow:select_next_dissector(d) with a Lua dissector (class, name, registry entry or object)
if LD then
  function LD.select_flow(flow, x)
    local cls = x
    if type(x) == 'string' then cls = registry[x] end
    if type(cls) == 'table' and not class.isclass(cls) and not class.isa(cls, Dissector) and rawget(cls, 'class') then
      cls = rawget(cls, 'class')
    end
    local inst = cls
    if class.isclass(cls) then inst = cls:new(flow) end
    if type(inst) ~= 'table' or not class.isa(inst, FlowDissector) then
      error("select_next_dissector: a flow dissector expected", 3)
    end
    rawset(flow, '_lua_next', inst)
  end
end

-- the connection dissectors' helpers (require('protocol/tcp_connection').helper)
local function add_helper(name, key, cls)
  local d = rawget(haka.dissectors, name)
  if d then
    d.helper = d.helper or {}
    d.helper[key] = cls
  end
end
add_helper('tcp_connection', 'TcpFlowDissector', TcpFlowDissector)
add_helper('udp_connection', 'UdpFlowDissector', UdpFlowDissector)
helper.TcpFlowDissector = TcpFlowDissector
helper.UdpFlowDissector = UdpFlowDissector

-- a parse error a BidirectionalState has no action for is the owner's protocol error
do
  local BS = haka.state_machine.BidirectionalState
  local base = BS.method._update
  -- (fixed arguments, a vararg path beyond 4 extra ones: see fire)
  BS.method._update = function(self, instance, payload, direction, a, b, c, d, e, ...)
    if e ~= nil then return base(self, instance, payload, direction, a, b, c, d, e, ...) end
    local g = self._grammar[direction]
    if g then
      local list = self._compiled and self._compiled.parse_error
      if not list or #list == 0 then
        local res, err = g:parse(payload, nil, instance.owner)
        if err then
          local owner = instance.owner
          if type(owner) == 'table' and type(owner.protocol_error) == 'function' then
            return owner:protocol_error(err)
          end
          error(tostring(err), 0)
        end
        return instance:trigger(direction, res, a, b, c, d)
      end
    end
    return base(self, instance, payload, direction, a, b, c, d)
  end
end

-- --dump-dissector-graph: the Graphviz text of every grammar and state machine made so far,
-- as { file name, dot text } pairs, in the order they were made. Haka's file names:
-- NAME-grammar.dot and NAME-state-machine.dot (NAME's characters other than letters,
-- digits, '_', '.' and '-' as '_'; a name made twice gets -2, -3 ...).
function dissector._dump_graphs()
  local out, used = {}, {}
  local function add(name, suffix, obj)
    local base = tostring(name):gsub('[^%w_.-]', '_') .. suffix
    local file, n = base .. '.dot', 1
    while used[file] do n = n + 1; file = sfmt('%s-%d.dot', base, n) end
    used[file] = true
    local buf = {}
    obj:dump_graph({ write = function(_, ...) for i = 1, select('#', ...) do buf[#buf + 1] = select(i, ...) end end })
    out[#out + 1] = { file, table.concat(buf) }
  end
  -- (weak lists: a grammar nothing holds any more may have left a hole)
  local function each(list, f)
    local keys = {}
    for k in pairs(list) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do f(list[k]) end
  end
  each(haka.grammar.all, function(g) add(rawget(g, '_name'), '-grammar', g) end)
  each(haka.state_machine.all, function(m) add(m.name, '-state-machine', m) end)
  return out
end

return dissector
