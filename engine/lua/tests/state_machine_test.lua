-- Project tests of the state machines (engine/lua/state_machine.lua) and of the Lua dissector
-- classes (engine/lua/dissector.lua), run as a rules file by engine/src/lua/tests.rs
-- (`state_machine_lua_tests`): any failure is a load error.
local class = require('class')

local function eq(a, b, what)
  if a ~= b then error(string.format("%s: expected %s, got %s", what or "value", tostring(b), tostring(a)), 2) end
end
local function fails(pattern, f, ...)
  local ok, err = pcall(f, ...)
  if ok then error("expected an error matching '" .. pattern .. "'", 2) end
  if not tostring(err):find(pattern, 1, true) then
    error(string.format("expected error '%s', got '%s'", pattern, tostring(err)), 2)
  end
end

local tests = {}

-- a machine whose actions log what they do
local function logged()
  local log = {}
  local Ev = haka.state_machine.new_state_type{ events = { 'go', 'stay' } }
  local sm = haka.state_machine.new("logged", function()
    state_type(Ev)
    a = state()
    b = state()
    c = state()
    any:on{ event = events.enter, execute = function(self) log[#log + 1] = "enter*" end }
    any:on{ event = events.leave, execute = function(self) log[#log + 1] = "leave*" end }
    any:on{ event = events.finish, execute = function(self) log[#log + 1] = "finish" end }
    any:on{ event = events.fail, execute = function(self) log[#log + 1] = "fail" end }
    a:on{ event = events.enter, execute = function(self) log[#log + 1] = "enter a" end }
    a:on{ event = events.init, execute = function(self) log[#log + 1] = "init a" end }
    a:on{ event = events.go, when = function(self, x) return x == 1 end, execute = function(self, x) log[#log + 1] = "go1" end, jump = b }
    a:on{ event = events.go, execute = function(self, x) log[#log + 1] = "go" .. tostring(x) end }
    a:on{ event = events.go, execute = function(self, x) log[#log + 1] = "after" end, jump = c }
    b:on{ event = events.go, jump = a }
    b:on{ event = events.leave, execute = function(self) log[#log + 1] = "leave b" end, jump = c }
    c:on{ event = events.go, jump = fail }
    initial(a)
  end)
  return sm, log
end

function tests.order_of_enter_init_and_defaults()
  local sm, log = logged()
  local ctx = {}
  local i = sm:instanciate(ctx)
  eq(table.concat(log, ","), "enter a,init a", "own enter, then init; any's enter not used")
  eq(i.current, "a", "current")
  i:trigger('go', 2)
  eq(table.concat(log, ",", 3), "go2,after,leave*,enter*", "actions until the first jump; defaults elsewhere")
  eq(i.current, "c", "jumped")
end

function tests.when_and_leave_redirect_and_finish()
  local sm, log = logged()
  local i = sm:instanciate({})
  i:trigger('go', 1)
  eq(i.current, "b", "when")
  i:trigger('go')
  -- b's leave redirects the jump to a towards c
  eq(i.current, "c", "leave redirected")
  i:trigger('go')
  eq(table.concat(log, ",", 3), "go1,leave*,enter*,leave b,enter*,fail,leave*,finish", "fail then finish")
  eq(i._instance.failed, true, "failed")
  eq(i._instance.finished, true, "finished")
  eq(i.current, nil, "no current state")
  fails("state machine instance has finished", function() i:trigger('go') end)
  fails("state machine instance has finished", function() i:update('go') end)
end

function tests.unknown_events_are_errors()
  local Ev = haka.state_machine.new_state_type{ events = { 'go' } }
  fails("unknown event 'nope'", function()
    haka.state_machine.new("bad", function()
      state_type(Ev)
      a = state()
      a:on{ event = events.nope, jump = a }
      initial(a)
    end)
  end)
  fails("state machine must have an initial state", function()
    haka.state_machine.new("bad", function() state_type(Ev); a = state() end)
  end)
  fails("cannot create state without prior call to state_type()", function()
    haka.state_machine.new("bad", function() a = state() end)
  end)
  local sm = haka.state_machine.new("ok", function() state_type(Ev); a = state(); initial(a) end)
  local i = sm:instanciate({})
  fails("no event named 'other' on state 'a'", function() i:trigger('other') end)
  i:trigger('go') -- a known event without action: nothing
  eq(i.current, "a", "still there")
  eq(getmetatable(_G), nil, "no metatable left on the globals")
end

function tests.fail_actions_may_jump_on()
  local Ev = haka.state_machine.new_state_type{ events = { 'bad' } }
  local sm = haka.state_machine.new("recover", function()
    state_type(Ev)
    work = state()
    reset = state()
    any:on{ event = events.fail, jump = reset }
    work:on{ event = events.bad, jump = fail }
    initial(work)
  end)
  local i = sm:instanciate({})
  i:trigger('bad')
  eq(i.current, "reset", "fail redirected")
  eq(i._instance.failed, false, "not failed")
end

function tests.timeouts_on_network_time()
  local fired = {}
  local Ev = haka.state_machine.new_state_type{ events = { 'go' } }
  local sm = haka.state_machine.new("timers", function()
    state_type(Ev)
    idle = state()
    busy = state()
    idle:on{ event = events.timeout(2), execute = function(self) fired[#fired + 1] = "idle" end,
      when = function(self) return #fired < 2 end }
    idle:on{ event = events.go, jump = busy }
    busy:on{ event = events.timeout(1), execute = function(self) fired[#fired + 1] = "busy" end, jump = idle }
    initial(idle)
  end)
  local T = haka._timer
  local t0 = haka.network_time().seconds
  local i = sm:instanciate({})
  eq(T.n, 1, "idle's timer runs")
  T.check(t0 + 1)
  eq(#fired, 0, "not yet")
  T.check(t0 + 2.5)
  eq(fired[1], "idle", "fired once")
  T.check(t0 + 10)
  eq(fired[2], "idle", "repeats (once per check)")
  T.check(t0 + 20)
  eq(#fired, 2, "its when is false now")
  i:trigger('go')
  eq(T.n, 1, "idle's timer stopped, busy's started")
  T.check(t0 + 1e9)
  eq(fired[3], "busy", "busy timed out")
  eq(i.current, "idle", "and jumped")
  i:finish()
  eq(T.n, 0, "no timer left once finished")
end

function tests.bidirectional_states_parse_and_report()
  local g = haka.grammar.new("bidi", function()
    req = record{ field('cmd', token('[A-Z]+')), token('\n') }
    resp = record{ field('code', token('[0-9]+')), token('\n') }
    export(req, resp)
  end)
  local seen = {}
  local sm = haka.state_machine.new("bidi", function()
    state_type(BidirectionalState)
    cmd = state(g.req, nil)
    answer = state(nil, g.resp)
    cmd:on{ event = events.up, execute = function(self, res) seen[#seen + 1] = res.cmd end, jump = answer }
    answer:on{ event = events.down, execute = function(self, res) seen[#seen + 1] = res.code end, jump = cmd }
    any:on{ event = events.missing_grammar, execute = function(self, dir) seen[#seen + 1] = "missing " .. dir end }
    initial(cmd)
  end)
  local owner = { protocol_error = function(self, err) seen[#seen + 1] = "perr " .. err.description end }
  local i = sm:instanciate(owner)
  i:update(haka.vbuffer_from("HELO\n"):pos('begin'), 'up')
  i:update(haka.vbuffer_from("250\n"):pos('begin'), 'down')
  i:update(haka.vbuffer_from("250\n"):pos('begin'), 'down')
  i:update(haka.vbuffer_from("helo\n"):pos('begin'), 'up')
  eq(table.concat(seen, ","), "HELO,250,missing down,perr token /[A-Z]+/ doesn't match",
    "events, missing grammar, a parse error without action goes to the owner's protocol_error")
end

function tests.lua_dissector_registration()
  local d = haka.dissector.new{ type = haka.helper.PacketDissector, name = 'test_pkt' }
  d:register_event('hello')
  eq(haka.dissectors.test_pkt.events.hello.name, "test_pkt:hello", "event")
  eq(haka.dissectors.test_pkt.events.receive_packet.name, "test_pkt:receive_packet", "inherited event")
  eq(haka.dissectors.test_pkt.events.protocol_error.name, "test_pkt:protocol_error", "protocol_error event")
  fails("unknown event 'nope' on dissector 'test_pkt'", function() return haka.dissectors.test_pkt.events.nope end)
  fails("dissector 'test_pkt' already defined", function() haka.dissector.new{ type = haka.helper.PacketDissector, name = 'test_pkt' } end)
  fails("dissector 'ipv4' already defined", function() haka.dissector.new{ type = haka.helper.PacketDissector, name = 'ipv4' } end)
  fails("no type defined for dissector 'x'", function() haka.dissector.new{ name = 'x' } end)
  local tcp = require('protocol/tcp_connection')
  local f = haka.dissector.new{ type = tcp.helper.TcpFlowDissector, name = 'test_flow' }
  f:register_streamed_event('content')
  eq(haka.dissectors.test_flow.events.content.lua_streamed, true, "streamed event")
  eq(type(haka.dissectors.test_flow.install), "function", "install action")
  -- the events of the dissector reach the rules, streamed or not
  local got = {}
  haka.rule{ on = haka.dissectors.test_flow.events.content, eval = function(self, sub) got[#got + 1] = sub:asstring() end }
  haka.rule{ on = haka.dissectors.test_flow.events.content, options = { streamed = true },
    eval = function(self, iter)
      local parts = {}
      while iter:wait() do parts[#parts + 1] = iter:sub('available'):asstring() end
      got[#got + 1] = "streamed:" .. table.concat(parts)
    end }
  local obj = f:new({ can_continue = function() return true end })
  local s = haka.vbuffer_sub_stream()
  local b1 = haka.vbuffer_from("abc")
  local cur = s:push(b1:sub())
  obj:trigger('content', s, cur)
  local b2 = haka.vbuffer_from("de")
  cur = s:push(b2:sub())
  s:finish()
  obj:trigger('content', s, cur)
  eq(table.concat(got, "|"), "abc|de|streamed:abcde", "non-streamed per piece, streamed at the end")
end

local names = {}
for k in pairs(tests) do names[#names + 1] = k end
table.sort(names)
for _, k in ipairs(names) do
  local ok, err = pcall(tests[k])
  if not ok then error("state machine test " .. k .. ": " .. tostring(err), 0) end
end
