-- Haka's state machines (haka.state_machine) for "Haka on DPDK", written anew in Lua.
-- Loaded once per Lua state by the engine (engine/src/lua/libs.rs), after grammar.lua.
--
--   local sm = haka.state_machine.new("name", function ()
--     state_type(BidirectionalState)          -- or a State subclass, or { events, update }
--     idle = state(g.request, g.response)     -- states; their arguments depend on the type
--     idle:on{ event = events.up, when = f, execute = f, jump = other }
--     any:on{ event = events.fail, execute = f }  -- actions of every state lacking its own
--     initial(idle)
--   end)
--   local inst = sm:instanciate(context)      -- actions get `context` as first argument
--   inst:update(...)                          -- the state type's update
--   inst:trigger('event', ...)
--
-- Semantics (Haka's state machine, lib/haka/state_machine.c):
--  * instanciate enters the initial state (its `enter` actions) then runs its `init` actions;
--  * an event runs the state's actions for it in order: each whose `when` is true (or has no
--    `when`) executes; the first that has a `jump` ends the list and the machine goes there;
--  * a state lacking actions for an event uses the `any` actions for it;
--  * going to a state: the current state's `leave` actions (one of them may redirect the
--    jump), then the new state's `enter` actions (one may jump on), then its timers start;
--  * `fail`: the current state's `fail` actions (one may jump to a state: the machine goes
--    on), then the machine finishes as failed; `finish`: `leave` then `finish` actions, and the
--    instance is over (`_instance.finished`; further events are errors);
--  * `timeout(secs)`: repeating timers of the current state on the network time (the
--    capture's time offline), stopped when the state is left. They fire before the rules of
--    the next packet whose time is past them (haka._timer, checked by the engine).
local class = require('class')
local sfmt = string.format
local type, pairs, ipairs, error, select, rawget, setmetatable, getmetatable =
  type, pairs, ipairs, error, select, rawget, setmetatable, getmetatable

local module = {}
local log = haka.log_section("state_machine")

---------------------------------------------------------------------------
-- timers on the network time (shared by every instance of the Lua state)
---------------------------------------------------------------------------
-- haka._timer: { n = active timers, check(now) }: the engine calls check(packet time) before
-- the rules of a packet when n > 0 (engine/lua/haka.lua).
local TIMER = haka._timer or { n = 0 }
haka._timer = TIMER
local timers = {}     -- active timer -> true
-- the earliest deadline of the active timers (or earlier: a stopped timer's): check() does
-- nothing before it, so that packets cost one comparison
local next_deadline = math.huge
local function now()
  local t = haka.network_time()
  return t.seconds or 0
end
local function timer_start(list, tm)
  timers[tm] = true
  if tm.deadline < next_deadline then next_deadline = tm.deadline end
  TIMER.n = TIMER.n + 1
  list[#list + 1] = tm
end
local function timer_stop_all(list)
  for i = #list, 1, -1 do
    local tm = list[i]
    if timers[tm] then timers[tm] = nil; TIMER.n = TIMER.n - 1 end
    tm.stopped = true
    list[i] = nil
  end
end

---------------------------------------------------------------------------
-- states
---------------------------------------------------------------------------
local BASE_EVENTS = { 'init', 'enter', 'leave', 'fail', 'finish', 'timeouts' }

local State = class.class('State')
module.State = State

-- the events of a state class: Haka's defaults plus each class's `_events`
local function events_of(cls)
  local set = {}
  for _, e in ipairs(BASE_EVENTS) do set[e] = true end
  local c = cls
  while c do
    local evs = rawget(c, '_events')
    if type(evs) == 'table' then
      for _, e in ipairs(evs) do set[e] = true end
    end
    c = rawget(c, 'super')
  end
  return set
end

function State.method:__init(name)
  self._actions = {}
  if name ~= nil then self._name = name end
end

local function event_name(ev)
  if type(ev) == 'table' then return ev.name, ev.timeout end
  return ev, nil
end

function State.method:on(args)
  if type(args) ~= 'table' then error("state:on expects a table", 2) end
  local evs = args.events
  if evs == nil then evs = { args.event } end
  if #evs == 0 then error("missing event", 2) end
  if args.when ~= nil and type(args.when) ~= 'function' then error("when must be a function", 2) end
  if args.execute ~= nil and type(args.execute) ~= 'function' then error("execute must be a function", 2) end
  if args.jump ~= nil and not class.isa(args.jump, State) then error("jump must be a state", 2) end
  local valid
  if not rawget(self, '_any') then valid = events_of(class.classof(self)) end
  for _, ev in ipairs(evs) do
    local name, timeout = event_name(ev)
    if type(name) ~= 'string' then error("invalid event", 2) end
    if valid and not valid[name] then error(sfmt("unknown event '%s'", name), 2) end
    if name == 'timeouts' and type(timeout) ~= 'number' then error("timeout needs a number of seconds", 2) end
    local list = self._actions[name]
    if not list then list = {}; self._actions[name] = list end
    list[#list + 1] = { when = args.when, execute = args.execute, jump = args.jump, timeout = timeout }
  end
end

-- base State: update(event, ...) triggers that event
function State.method:_update(instance, event, ...)
  return instance:trigger(event, ...)
end

function State.method:_dump_graph(file)
  for ev, list in pairs(self._actions) do
    for _, a in ipairs(list) do
      if a.jump then
        local label = ev
        if a.timeout then label = sfmt("timeout(%s)", tostring(a.timeout)) end
        file:write(sfmt('%s -> %s [label="%s"];\n', tostring(self._name), tostring(a.jump._name), label))
      end
    end
  end
end

-- a state of data parsed in both directions: state(grammar_up, grammar_down)
local BidirectionalState = class.class('BidirectionalState', State)
BidirectionalState._events = { 'up', 'down', 'parse_error', 'missing_grammar' }
module.BidirectionalState = BidirectionalState
module.BidirectionnalState = BidirectionalState

local function is_compiled(g)
  return type(g) == 'table' and type(g.parse) == 'function'
end
function BidirectionalState.method:__init(gup, gdown)
  class.super(BidirectionalState).__init(self)
  if gup ~= nil and not is_compiled(gup) then error("state expects an exported element of a grammar", 3) end
  if gdown ~= nil and not is_compiled(gdown) then error("state expects an exported element of a grammar", 3) end
  self._grammar = { up = gup, down = gdown }
end

-- update(payload, direction, ...): parses the payload with the direction's grammar, then
-- triggers `up`/`down` with the result (or `parse_error` with the error, or
-- `missing_grammar` when the state has no grammar for that direction)
function BidirectionalState.method:_update(instance, payload, direction, ...)
  local g = self._grammar[direction]
  if not g then
    return instance:trigger('missing_grammar', direction, payload, ...)
  end
  local res, err = g:parse(payload, nil, instance.owner)
  if err then
    return instance:trigger('parse_error', err, ...)
  end
  return instance:trigger(direction, res, ...)
end

function module.new_state_type(args)
  args = args or {}
  local parent = args.parent or State
  if not class.isaclass(parent, State) then error("state type parent must extend State", 2) end
  local cls = class.class(args.name or 'CustomState', parent)
  cls._events = args.events or {}
  if args.update then
    local update = args.update
    cls.method._update = function(self, instance, ...) return update(self, instance, ...) end
  end
  return cls
end

---------------------------------------------------------------------------
-- state machines
---------------------------------------------------------------------------
local StateMachine = class.class('StateMachine')
module.StateMachine = StateMachine

function StateMachine.method:__init(name)
  self.name = name
  self._states = {}
  local any = State:new("any")
  any._any = true
  self._default = any
  self._fail = State:new("fail")
  self._finish = State:new("finish")
end

-- the actions of each state, any's filling the events a state has none for
function StateMachine.method:compile()
  if not self._initial then error("state machine must have an initial state", 3) end
  local found = false
  local unused = {}
  for name, s in pairs(self._states) do
    if s == self._initial then found = true else unused[name] = true end
  end
  if not found then error("state machine has an unknown initial state", 3) end
  local any = self._default._actions
  for name, s in pairs(self._states) do
    local own = s._actions
    local c = {}
    for ev, list in pairs(own) do c[ev] = list end
    for ev, list in pairs(any) do
      if c[ev] == nil or #c[ev] == 0 then c[ev] = list end
    end
    s._compiled = c
    s._events_set = events_of(class.classof(s))
    for _, list in pairs(own) do
      for _, a in ipairs(list) do
        if a.jump and a.jump._name then unused[a.jump._name] = nil end
      end
    end
  end
  for _, list in pairs(any) do
    for _, a in ipairs(list) do
      if a.jump and a.jump._name then unused[a.jump._name] = nil end
    end
  end
  for name in pairs(unused) do
    log.warning("state machine %s never jump on state: %s", tostring(self.name), tostring(name))
  end
end

function StateMachine.method:instanciate(owner)
  return module.StateMachineInstance:new(self, owner)
end

function StateMachine.method:dump_graph(file)
  file:write('digraph state_machine {\n')
  file:write('fail [fillcolor="#ee0000",style="filled"]\n')
  file:write('finish [fillcolor="#00ee00",style="filled"]\n')
  file:write(sfmt('%s [fillcolor="#00d7ff",style="filled"]\n', tostring(self._initial._name)))
  local names = {}
  for name in pairs(self._states) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do self._states[name]:_dump_graph(file) end
  for ev, list in pairs(self._default._actions) do
    for _, a in ipairs(list) do
      if a.jump then
        for _, name in ipairs(names) do
          file:write(sfmt('%s -> %s [label="%s",style="dashed"];\n', name, tostring(a.jump._name), ev))
        end
      end
    end
  end
  file:write("}\n")
end

---------------------------------------------------------------------------
-- instances
---------------------------------------------------------------------------
local Instance = class.class('StateMachineInstance')
module.StateMachineInstance = Instance

Instance.property.current = {
  get = function(self) return self._instance.state end,
}

-- runs the actions `list` with (owner, ...): the jump of the first taken action with one
-- (fixed arguments: a forwarded vararg aborts LuaJIT's traces, see dissector.lua's fire;
-- more than 6 take run_var)
-- (the first action out of the loop: most events have one, and a loop run on every event
-- kept the path from the engine's call to the rules from compiling as one trace, see
-- dissector.lua's parse_in_place)
local function run(list, owner, x1, x2, x3, x4, x5, x6)
  if not list then return nil end
  local n = #list
  if n == 0 then return nil end
  local a = list[1]
  if not a.when or a.when(owner, x1, x2, x3, x4, x5, x6) then
    if a.execute then a.execute(owner, x1, x2, x3, x4, x5, x6) end
    if a.jump then return a.jump end
  end
  if n == 1 then return nil end
  for i = 2, n do
    local a = list[i]
    if not a.when or a.when(owner, x1, x2, x3, x4, x5, x6) then
      if a.execute then a.execute(owner, x1, x2, x3, x4, x5, x6) end
      if a.jump then return a.jump end
    end
  end
  return nil
end
local function run_var(list, owner, ...)
  if not list then return nil end
  for i = 1, #list do
    local a = list[i]
    if not a.when or a.when(owner, ...) then
      if a.execute then a.execute(owner, ...) end
      if a.jump then return a.jump end
    end
  end
  return nil
end

function Instance.method:__init(machine, owner)
  assert(machine, "state machine description required")
  assert(owner, "state machine context required")
  self._state_machine = machine
  self.owner = owner
  self._instance = { state = nil, current = nil, finished = false, failed = false, in_transition = false, timers = {} }
  local inst = self._instance
  self:_enter(machine._initial)
  local cur = inst.current
  if cur and not inst.finished then
    run(cur._compiled.init, owner)
  end
end

function Instance.method:_goto(st)
  local sm = self._state_machine
  if st == sm._fail or st._name == 'fail' and not sm._states.fail then return self:_fail() end
  if st == sm._finish or st._name == 'finish' and not sm._states.finish then return self:_finish() end
  return self:_enter(st)
end

function Instance.method:_leave()
  local inst = self._instance
  local cur = inst.current
  if not cur then return nil end
  timer_stop_all(inst.timers)
  local ns = run(cur._compiled.leave, self.owner)
  inst.current = nil
  return ns
end

local function fire_timer(tm)
  local self = tm.instance
  local inst = self._instance
  if inst.in_transition or tm.stopped then return end
  local ns = run(tm.actions, self.owner)
  if ns then self:_goto(ns) end
end

function Instance.method:_enter(st)
  local inst = self._instance
  local was = inst.in_transition
  inst.in_transition = true
  local ns = self:_leave()
  if ns then
    self:_goto(ns)
    inst.in_transition = was
    return
  end
  inst.current = st
  inst.state = st._name
  ns = run(st._compiled.enter, self.owner)
  if ns then
    self:_goto(ns)
    inst.in_transition = was
    return
  end
  local touts = st._compiled.timeouts
  if touts and #touts > 0 and inst.current == st then
    local t0 = now()
    for _, a in ipairs(touts) do
      timer_start(inst.timers, { instance = self, actions = { a }, period = a.timeout,
        deadline = t0 + a.timeout, fire = fire_timer })
    end
  end
  inst.in_transition = was
end

function Instance.method:_finish()
  local inst = self._instance
  local cur = inst.current
  if cur then
    self:_leave()
    run(cur._compiled.finish, self.owner)
  end
  inst.current = nil
  inst.state = nil
  inst.finished = true
end

function Instance.method:_fail()
  local inst = self._instance
  local cur = inst.current
  if cur then
    local ns = run(cur._compiled.fail, self.owner)
    local sm = self._state_machine
    if ns and ns ~= sm._fail and ns._name ~= 'fail' then return self:_goto(ns) end
  end
  inst.failed = true
  return self:_finish()
end

-- (fixed arguments, a vararg path beyond 6: see run)
function Instance.method:update(x1, x2, x3, x4, x5, x6, x7, ...)
  local inst = self._instance
  local cur = inst.current
  if not cur or inst.finished then error("state machine instance has finished", 2) end
  if x7 ~= nil then return cur:_update(self, x1, x2, x3, x4, x5, x6, x7, ...) end
  return cur:_update(self, x1, x2, x3, x4, x5, x6)
end

function Instance.method:trigger(name, x1, x2, x3, x4, x5, x6, x7, ...)
  local inst = self._instance
  local cur = inst.current
  if not cur or inst.finished then error("state machine instance has finished", 2) end
  if not cur._events_set[name] then
    error(sfmt("no event named '%s' on state '%s'", tostring(name), tostring(cur._name)), 2)
  end
  local ns
  if x7 ~= nil then
    ns = run_var(cur._compiled[name], self.owner, x1, x2, x3, x4, x5, x6, x7, ...)
  else
    ns = run(cur._compiled[name], self.owner, x1, x2, x3, x4, x5, x6)
  end
  if ns then self:_goto(ns) end
end

function Instance.method:finish()
  local inst = self._instance
  if inst.finished then return end
  return self:_finish()
end

-- timers due at `t` (network seconds): each fires once, its next deadline a period later
function TIMER.check(t)
  if t < next_deadline then return end
  local due
  local nd = math.huge
  for tm in pairs(timers) do
    if tm.deadline <= t then
      due = due or {}
      due[#due + 1] = tm
    elseif tm.deadline < nd then
      nd = tm.deadline
    end
  end
  next_deadline = nd
  if not due then return end
  table.sort(due, function(a, b) return a.deadline < b.deadline end)
  for _, tm in ipairs(due) do
    if timers[tm] then
      local d = tm.deadline
      repeat d = d + tm.period until d > t or tm.period <= 0
      tm.deadline = d
      if d < next_deadline then next_deadline = d end
      tm.fire(tm)
    end
  end
end

---------------------------------------------------------------------------
-- definition environment
---------------------------------------------------------------------------
local function sm_env(machine, old_mt)
  local scope = {}
  scope.state_type = function(t)
    if class.isclass(t) then
      if not class.isaclass(t, State) then error("state type must be of type State", 2) end
      machine._state_type = t
    elseif type(t) == 'table' then
      machine._state_type = module.new_state_type(t)
    else
      error("state type must be of type State", 2)
    end
  end
  scope.initial = function(s) machine._initial = s end
  scope.state = function(...)
    if not machine._state_type then error("cannot create state without prior call to state_type()", 2) end
    return machine._state_type:new(...)
  end
  scope.finish = machine._finish
  scope.fail = machine._fail
  scope.any = machine._default
  local events = {}
  events.timeout = function(secs) return { name = "timeouts", timeout = secs } end
  setmetatable(events, {
    __index = function(_, name) return { name = name } end,
    __newindex = function() error("events is a read only table", 2) end,
  })
  scope.events = events
  scope.State = State
  scope.BidirectionalState = BidirectionalState
  scope.BidirectionnalState = BidirectionalState
  local old_index = old_mt and old_mt.__index
  return {
    __index = function(self, name)
      local r = scope[name]
      if r ~= nil then return r end
      r = machine._states[name]
      if r ~= nil then return r end
      if old_index then
        if type(old_index) == 'function' then return old_index(self, name) end
        return old_index[name]
      end
      return nil
    end,
    __newindex = function(self, key, value)
      if scope[key] ~= nil then error(sfmt("'%s' is reserved in the state machine scope", tostring(key)), 2) end
      if class.isa(value, State) then
        value._name = key
        machine._states[key] = value
      else
        rawset(self, key, value)
      end
    end,
  }
end

module.all = setmetatable({}, { __mode = "v" })
module.debug = false

function module.new(name, def)
  if type(def) ~= 'function' then error("state machine definition must by a function", 2) end
  local machine = StateMachine:new(name)
  local env = getfenv(def)
  local old_mt = getmetatable(env)
  setmetatable(env, sm_env(machine, old_mt))
  local ok, err = pcall(def)
  setmetatable(env, old_mt)
  if not ok then error(err, 0) end
  machine:compile()
  module.all[#module.all + 1] = machine
  if module.debug then
    local f = io.open(sfmt("%s-state-machine.dot", name), "w+")
    if f then machine:dump_graph(f); f:close() end
  end
  return machine
end

setmetatable(module, { __call = function(_, name, def) return module.new(name, def) end })
haka.state_machine = module
return module
