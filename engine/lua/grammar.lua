-- Haka's grammar DSL (haka.grammar) for "Haka on DPDK", written anew in LuaJIT.
-- Loaded once per Lua state by the engine (engine/src/lua/libs.rs), after haka.lua and the
-- class module.
--
--   local g = haka.grammar.new("name", function ()
--     header = record{ field('len', number(16)), field('data', bytes():count(...)) }
--     export(header)
--   end)
--   local result, err = g.header:parse(iter[, result[, user]])
--   local result, err = g.header:create(iter[, result], init)
--
-- Two layers, as in Haka:
--  * the description: entities (Record, Sequence, Union, Try, Branch, Array, Number, Bytes,
--    Token, ...: class instances, each modifier returns a modified copy) that the definition
--    function builds in a special environment where every named rule is reached through a
--    proxy (late binding: inheritance with extend(), recursion with define());
--  * the compiled form: a graph of DG nodes with Haka's shape (DGCompoundStart, DGRecordStart,
--    DGToken, ... linked by `_next`), kept for introspection and `dump_graph`, and for each
--    entity a parse closure built ONCE at compile time (`node.fn`; a record's is generated
--    Lua source, one call site per child). Parsing is recursive descent over those
--    closures: no closure and no table is made per byte, the per-parse allocations are the
--    context and the results themselves (a table per record/array element, its raw field
--    data, and the vbuffer subs of the bytes fields of a stream; off a stream, a bytes
--    field's sub is made when it is first read).
--
-- Parse errors (ctx:error, a token that does not match, a failed const/verify, missing data)
-- are values: the closures return them up to the nearest try{} (which backtracks) or to
-- parse(), which returns (result, error). Errors raised by Lua code (user callbacks) are Lua
-- errors and propagate.
--
-- Results are class instances (class Result, or the caller's own object): a field is a
-- dynamic property whose descriptor is shared by all the results of the same grammar node
-- ({ get, set }, made at compile time); the raw data (the vbuffer sub of a number, the string
-- of a token) is kept per result in its `__gv` table. Reading a number reads the data each
-- time and writing it writes the data (Haka's semantics: a modification of a parsed field is
-- a modification of the packet or stream).
local class = require('class')
local VBM = require('haka/vbuffer')
local rem = require('regexp/pcre').re

local type, pairs, ipairs, rawget, rawset, setmetatable, getmetatable, tostring, select, error, next =
  type, pairs, ipairs, rawget, rawset, setmetatable, getmetatable, tostring, select, error, next
local sfmt, ceil, floor = string.format, math.ceil, math.floor
local vpeek, vavail, vpeek_byte, is_stream = VBM.peek, VBM.avail, VBM.peek_byte, VBM.iter_is_stream
local sub_between = VBM.sub_between
-- (tables made per parse are sized at once: growing them rehashes and leaves garbage)
local tnew = require("table.new")

local grammar = {}
local grammar_int = {}
local log = haka.log_section("grammar")

local function readonly_mode()
  return haka.capture_mode ~= nil and haka.capture_mode() == "passthrough"
end

---------------------------------------------------------------------------
-- converters
---------------------------------------------------------------------------
grammar.converter = {}
function grammar.converter.mult(val)
  return {
    get = function(x) return x * val end,
    set = function(x)
      if x % val ~= 0 then error(sfmt("invalid value, it must be a multiple of %d", val)) end
      return x / val
    end,
  }
end
grammar.converter.bool = {
  get = function(x) return x ~= 0 end,
  set = function(x) if x then return 1 else return 0 end end,
}
function grammar.converter.tonumber(format, base)
  return {
    get = function(x) return tonumber(x, base) end,
    set = function(x) return sfmt(format, x) end,
  }
end
grammar.converter.string = {
  get = function(x) return x and x:asstring() end,
  set = function(x) return x end,
}
grammar_int.converter = grammar.converter

---------------------------------------------------------------------------
-- results
---------------------------------------------------------------------------
local Result = class.class('Result')
local ArrayResult = class.class('ArrayResult', Result)
grammar.result = { Result = Result, ArrayResult = ArrayResult }

local GV = "__gv"
local with_property, is_shared, EMPTY_SHAPE = class.with_property, class.shared_properties, class.EMPTY_PROPERTIES
-- (a Result is made by a table constructor naming the keys the parse sets next, raw data,
-- property table, validate table, user, parent, even while nil: LuaJIT then copies a
-- template with their slots, and setting them is a plain store, not a new key inserted
-- (a call out of the trace, and a rehash past the first 8 keys) for every result)
local function new_result()
  local none
  return (setmetatable({ __gv = none, __property = none, _validate = none, _user = none, _parent = none,
    validate = none }, Result))
end
-- a new result of class rc (the default Result without calling its constructor)
local function result_of(rc)
  if rc == nil or rc == Result then return new_result() end
  return rc:new()
end
local function is_instance(res)
  local mt = getmetatable(res)
  return mt ~= nil and class.isclass(mt)
end
local function gv_of(res)
  local t = rawget(res, GV)
  -- (slot 1: the chunk of the first number field; one hash slot per number field)
  if not t then t = tnew(2, 8); rawset(res, GV, t) end
  return t
end
-- a field of `res` backed by descriptor `desc` (shared by the node) and raw data `raw`
local function set_field(res, name, desc, raw)
  local gv = gv_of(res)
  -- (storing nil under a missing key inserts the key all the same)
  if raw ~= nil or gv[name] ~= nil then gv[name] = raw end
  if is_instance(res) then
    -- (a table shared by the results of the same path through the grammar: class.lua)
    local p = rawget(res, "__property")
    if p == nil or p[name] ~= desc then
      -- (the descriptor caches its last transition between shared tables, desc[1] -> desc[2]:
      -- a field is mostly set on the same shape, and the lookups of with_property are skipped;
      -- the name is checked as a descriptor may serve several)
      local from = p or EMPTY_SHAPE
      local nx = desc[2]
      if desc[1] == from and nx[name] == desc then
        -- (nx: from and this field)
      else
        nx = with_property(p, name, desc)
        if is_shared(from) and is_shared(nx) then desc[1], desc[2] = from, nx end
      end
      rawset(res, "__property", nx)
    end
  else
    -- a plain table: the value as parsed
    rawset(res, name, (desc.get(res, name)))
  end
end
-- writes `v` into field `name` of res through its descriptor
local function assign(res, name, desc, v)
  desc.set(res, v, name)
  if not is_instance(res) then rawset(res, name, (desc.get(res, name))) end
end

function ArrayResult.method:_init(iter, entity, create)
  rawset(self, '_begin', iter)
  rawset(self, '_entity', entity)
  rawset(self, '_create', create)
end
function ArrayResult.method:remove(el)
  local index
  if type(el) == 'number' then
    index = el
  else
    for i, value in ipairs(self) do
      if value == el then index = i; break end
    end
  end
  if not index or rawget(self, index) == nil then return end
  local sub = rawget(rawget(self, index), '_sub')
  if sub then sub:erase() end
  table.remove(self, index)
end
function ArrayResult.method:append(init)
  local create = rawget(self, '_create')
  if not create then error("missing create function in array options") end
  local vbuf, result = create(rawget(self, '_entity'), init)
  local n = #self
  local at
  if n > 0 then
    local last = rawget(rawget(self, n), '_sub')
    at = last:pos('end')
  else
    at = rawget(self, '_begin'):copy()
  end
  local sub = at:insert(vbuf)
  if type(result) == 'table' then rawset(result, '_sub', sub) end
  rawset(self, n + 1, result)
end

---------------------------------------------------------------------------
-- parse errors
---------------------------------------------------------------------------
local ParseError = class.class("ParseError")
grammar.ParseError = ParseError
local function field_label(node)
  if not node then return "<unknown>" end
  if node.name then return sfmt("'%s'", tostring(node.name)) end
  if node.id ~= nil then return tostring(node.id) end
  return "<unknown>"
end
function ParseError.method:__tostring()
  local f = rawget(self, 'field')
  return sfmt("parse error at byte %d for field %s in %s: %s",
    self.position and self.position.meter or 0, field_label(f),
    tostring(f and f.rule or "<unknown>"), tostring(self.description))
end
function ParseError.method:context()
  local it = self.position:copy()
  local s = it:sub(100)
  return sfmt("parse error context: %s...", string.safe_format(s and s:asstring() or ""))
end
ParseError.property.rule = { get = function(self) local f = rawget(self, 'field'); return f and f.rule end }
ParseError.property.iterator = { get = function(self) return rawget(self, 'position') end }
rawset(ParseError, '__concat', function(a, b) return tostring(a) .. tostring(b) end)

---------------------------------------------------------------------------
-- parse context
---------------------------------------------------------------------------
local Ctx = {}
local CTX_MT = {}
CTX_MT.__index = function(self, k)
  local m = Ctx[k]
  if m ~= nil then return m end
  if k == 'init' then return rawget(self, '_inits') ~= nil end
  if k == 'current_init' then
    local inits = rawget(self, '_inits')
    if inits then return inits[self._n] end
    return nil
  end
  if k == 'top' then return self._results[1] end
  if k == 'prev_result' then return self._results[self._n - 1] end
  return nil
end
grammar.context_methods = Ctx

local function revalidate(self)
  local validate = rawget(self, '_validate')
  if not validate then return end
  local todo = {}
  for f, arg in pairs(validate) do todo[#todo + 1] = f; todo[#todo + 1] = arg end
  for i = 1, #todo, 2 do validate[todo[i]] = nil end
  for i = 1, #todo, 2 do todo[i](todo[i + 1]) end
end

local function new_ctx(iter, user, init, root)
  local ctx = setmetatable({
    iter = iter, _bitoffset = 0, _results = { root }, _n = 1, user = user,
    _validate = {}, _error = false, streaming = is_stream(iter),
  }, CTX_MT)
  -- (8 fields: one hash part of 8 slots; `readonly` only matters on a stream, `_rec` (the
  -- recursion depth) is absent at 0)
  if ctx.streaming then ctx.readonly = readonly_mode() end
  if init ~= nil then ctx._inits = { init } end
  iter.meter = 0
  rawset(root, '_validate', ctx._validate)
  rawset(root, '_user', user)
  return ctx
end

function Ctx.result(self, idx)
  local n = self._n
  idx = idx or -1
  if idx < 0 then idx = n + 1 + idx end
  if idx <= 0 or idx > n then error("invalid result index", 2) end
  return self._results[idx]
end

-- pushes a new result (its init: the current init's field `name`)
local function push(ctx, res, name)
  local n = ctx._n
  rawset(res, '_validate', ctx._validate)
  rawset(res, '_user', ctx.user)
  rawset(res, '_parent', ctx._results[n])
  ctx._results[n + 1] = res
  ctx._n = n + 1
  local inits = ctx._inits
  if inits then
    local cur = inits[n]
    if type(cur) == 'table' and name ~= nil then inits[n + 1] = cur[name] else inits[n + 1] = nil end
  end
  return res
end
local function pop(ctx)
  local n = ctx._n
  ctx._results[n] = nil
  local inits = ctx._inits
  if inits then inits[n] = nil end
  ctx._n = n - 1
end
local function popto(ctx, n)
  while ctx._n > n do pop(ctx) end
end
Ctx.push = function(self, res, name) return push(self, res or new_result(), name) end
Ctx.pop = pop

function Ctx.error(self, description, ...)
  if self._error then error("multiple parse errors raised", 2) end
  if select('#', ...) > 0 then description = sfmt(tostring(description), ...) end
  local e = setmetatable({ position = self.iter:copy(), description = description }, ParseError)
  self._error = e
  return e
end

-- the next byte, or -1 at the end of the data (waits for it on a stream)
function Ctx.lookahead(self)
  local iter = self.iter
  if self.streaming then iter:wait() end
  return vpeek_byte(iter)
end

function Ctx.mark(self, readonly)
  local m = self.iter:copy()
  m:mark(readonly)
  local marks = rawget(self, '_marks')
  if not marks then marks = {}; self._marks = marks end
  marks[#marks + 1] = m
end
function Ctx.unmark(self)
  local marks = rawget(self, '_marks')
  local m = marks and marks[#marks]
  if m then marks[#marks] = nil; m:unmark() end
end

-- error `fmt` at the current position, reported by `node`
local function fail(ctx, node, fmt, ...)
  local e = Ctx.error(ctx, fmt, ...)
  rawset(e, 'field', node)
  return e
end
-- "not enough data" where a parse off a stream reaches the end of its data: on a stream it
-- would wait for more there (the in-place parsing of dissector.lua then parses the message
-- again with the next segment); grammar._starved(err) tells such an error
local last_starved = false
local function starve(ctx, node)
  local e = fail(ctx, node, "not enough data")
  last_starved = e
  return e
end
function grammar._starved(err) return err ~= nil and err == last_starved end
-- the error raised by a user callback (ctx:error), attributed to node
local function pending(ctx, node)
  local e = ctx._error
  if e and rawget(e, 'field') == nil then rawset(e, 'field', node) end
  return e
end

-- retain: on a stream, a mark keeps the data from here until released
local function retain(ctx)
  if not ctx.streaming then return nil end
  local iter = ctx.iter
  iter:wait()
  local m = iter:copy()
  m:mark(ctx.readonly)
  return m
end
local function release(m) if m then m:unmark() end end

-- runs the apply callbacks of node on value (Haka's do_apply)
local function do_apply(node, value, ctx)
  local applies = node._post_apply
  if not applies then return nil end
  local res = ctx._results[ctx._n]
  local conv = node.converter
  if conv then value = conv.get(value) end
  -- (the first one out of the loop: see dissector.lua's parse_in_place)
  applies[1](value, res, ctx)
  if ctx._error then return pending(ctx, node) end
  for i = 2, #applies do
    applies[i](value, res, ctx)
    if ctx._error then return pending(ctx, node) end
  end
  return nil
end

---------------------------------------------------------------------------
-- DG nodes (Haka's graph shape)
---------------------------------------------------------------------------
local dg = {}
grammar.dg = dg

dg.Entity = class.class('DGEntity')
function dg.Entity.method:__init(gid, rule, id)
  self.gid = gid
  self.rule = rule
  self.id = id
end
function dg.Entity.method:_nexts(list)
  if self._next then list[#list + 1] = self._next end
end
function dg.Entity.method:_add(nxt, set)
  if set[self] then return end
  set[self] = true
  local nexts = {}
  self:_nexts(nexts)
  for _, e in ipairs(nexts) do e:_add(nxt, set) end
  if not self._next then self._next = nxt end
end
function dg.Entity.method:add(nxt) self:_add(nxt, {}) end
function dg.Entity.method:convert(converter, memoize)
  self.converter = converter
  self.memoize = memoize or false
end
function dg.Entity.method:validate(validate) self._validate = validate end
function dg.Entity.method:add_apply(apply)
  if not self._post_apply then self._post_apply = {} end
  self._post_apply[#self._post_apply + 1] = apply
end

-- parse(iter[, result[, user]]) -> result, error
function dg.Entity.method:parse(iter, result, user)
  if iter == nil then error("parse: missing iterator", 2) end
  local root = result
  if root == nil then root = result_of(self.resultclass) end
  local ctx = new_ctx(iter, user, nil, root)
  if rawget(root, 'validate') == nil then rawset(root, 'validate', revalidate) end
  local err = self.fn(ctx)
  if err then
    log.debug("%s", tostring(err))
    return root, err
  end
  return root, nil
end

-- create(iter[, result], init) -> result, error: the fields written from `init`
function dg.Entity.method:create(iter, a, b)
  if iter == nil then error("create: missing iterator", 2) end
  local result, init
  if select('#', a, b) >= 2 and b ~= nil then
    result, init = a, b
  elseif a ~= nil and not is_instance(a) then
    init = a
  else
    result = a
  end
  local root = result
  if root == nil then root = result_of(self.resultclass) end
  local ctx = new_ctx(iter, nil, init or {}, root)
  ctx.creating = true
  if rawget(root, 'validate') == nil then rawset(root, 'validate', revalidate) end
  local err = self.fn(ctx)
  return root, err
end

function dg.Entity.method:_dump_graph_descr() return nil end
function dg.Entity.method:_dump_graph_options() return "" end
function dg.Entity.method:_dump_graph_node(file, ref)
  local label = sfmt("%d: ", self.gid or 0)
  local cname = class.classof(self).name
  if self.name then label = sfmt("%s%s: %s", label, cname, tostring(self.name)) else label = label .. cname end
  local ext = self:_dump_graph_descr()
  if ext then label = sfmt("%s\\n%s", label, ext) end
  label = label:gsub('"', '\\"')
  file:write(sfmt('%s [label="%s"%s];\n', ref[self], label, self:_dump_graph_options()))
end
function dg.Entity.method:_dump_graph_edges(file, ref)
  if self._next then
    self._next:_dump_graph(file, ref)
    file:write(sfmt('%s -> %s;\n', ref[self], ref[self._next]))
  end
end
function dg.Entity.method:_dump_graph(file, ref)
  if not ref[self] then
    ref[self] = sfmt("N_%d", ref._index)
    ref._index = ref._index + 1
    self:_dump_graph_node(file, ref)
    return self:_dump_graph_edges(file, ref)
  end
end
function dg.Entity.method:dump_graph(file)
  file:write("digraph grammar {\n")
  local ref = { _index = 1 }
  self:_dump_graph(file, ref)
  file:write("}\n")
end

dg.Control = class.class('DGControl', dg.Entity)
function dg.Control.method:_dump_graph_options() return ',fillcolor="#dddddd",style="filled"' end
dg.CompoundStart = class.class('DGCompoundStart', dg.Control)
function dg.CompoundStart.method:__init(gid, rule, id, resultclass)
  class.super(dg.CompoundStart).__init(self, gid, rule, id)
  self.resultclass = resultclass or Result
end
dg.CompoundFinish = class.class('DGCompoundFinish', dg.Control)
dg.Recurs = class.class('DGRecurs', dg.Control)
function dg.Recurs.method:__init(gid, rule, id, recurs)
  class.super(dg.Recurs).__init(self, gid, rule, id)
  self._recurs = recurs
end
function dg.Recurs.method:_dump_graph_edges(file, ref)
  self._recurs:_dump_graph(file, ref)
  file:write(sfmt('%s -> %s [label="recursion"];\n', ref[self], ref[self._recurs]))
  if self._next then
    self._next:_dump_graph(file, ref)
    file:write(sfmt('%s -> %s [label="finish"];\n', ref[self], ref[self._next]))
  end
end
dg.ResultPop = class.class('DGResultPop', dg.Control)
local function named_class(name, parent)
  local c = class.class(name, parent)
  c.method.__init = function(self, gid, rule, id, nm, resultclass)
    class.super(c).__init(self, gid, rule, id, resultclass)
    self.name = nm
  end
  return c
end
dg.RecordStart = named_class('DGRecordStart', dg.CompoundStart)
dg.RecordFinish = class.class('DGRecordFinish', dg.CompoundFinish)
dg.UnionStart = named_class('DGUnionStart', dg.CompoundStart)
dg.UnionRestart = class.class('DGUnionRestart', dg.Control)
dg.UnionFinish = class.class('DGUnionFinish', dg.CompoundFinish)
dg.TryStart = named_class('DGTryStart', dg.CompoundStart)
function dg.TryStart.method:_dump_graph_edges(file, ref)
  dg.Entity.method._dump_graph_edges(self, file, ref)
  if self._catch then
    self._catch:_dump_graph(file, ref)
    file:write(sfmt('%s -> %s [label="catch"];\n', ref[self], ref[self._catch]))
  end
end
dg.TryFinish = class.class('DGTryFinish', dg.CompoundFinish)
dg.ArrayStart = named_class('DGArrayStart', dg.CompoundStart)
dg.ArrayPush = class.class('DGArrayPush', dg.Control)
dg.ArrayPop = class.class('DGArrayPop', dg.Control)
dg.Error = class.class('DGError', dg.Control)
function dg.Error.method:_dump_graph_options() return ',fillcolor="#ee0000",style="filled"' end
function dg.Error.method:_dump_graph_descr() return self.msg end
dg.Execute = class.class('DGExecute', dg.Control)
dg.Retain = class.class('DGRetain', dg.Control)
dg.Release = class.class('DGRelease', dg.Control)
dg.Empty = class.class('DGEmpty', dg.Control)
dg.Branch = class.class('DGBranch', dg.Control)
function dg.Branch.method:__init(gid, rule, id, selector)
  class.super(dg.Branch).__init(self, gid, rule, id)
  self.selector = selector
  self.cases = {}
end
function dg.Branch.method:case(key, entity) self.cases[key] = entity end
function dg.Branch.method:_nexts(list)
  for _, v in pairs(self.cases) do list[#list + 1] = v end
  return dg.Entity.method._nexts(self, list)
end
function dg.Branch.method:_dump_graph_edges(file, ref)
  for name, case in pairs(self.cases) do
    case:_dump_graph(file, ref)
    file:write(sfmt('%s -> %s [label="%s"];\n', ref[self], ref[case], tostring(name)))
  end
  if self._next then
    self._next:_dump_graph(file, ref)
    file:write(sfmt('%s -> %s [label="default"];\n', ref[self], ref[self._next]))
  end
end
dg.Primitive = class.class('DGPrimitive', dg.Entity)
local function primitive_class(name)
  local c = class.class(name, dg.Primitive)
  return c
end
dg.Number = primitive_class('DGNumber')
function dg.Number.method:_dump_graph_descr() return sfmt("%d bits (%s endian)", self.size, self.endian or 'big') end
dg.Bits = primitive_class('DGBits')
dg.Bytes = primitive_class('DGBytes')
dg.Token = primitive_class('DGToken')
function dg.Token.method:_dump_graph_descr() return sfmt("/%s/", string.safe_format(self.pattern)) end

---------------------------------------------------------------------------
-- field descriptors (made at compile time, one per named node)
---------------------------------------------------------------------------
-- Layers a node's converter, memoize and validate over the raw accessors getraw(self) and
-- setraw(self, v) (Haka's genproperty).
local function make_desc(node, name, getraw, setraw)
  local fget, fset = getraw, setraw
  local conv = node.converter
  if conv then
    local g0, s0 = fget, fset
    fget = function(self) return conv.get(g0(self)) end
    fset = function(self, v) return s0(self, conv.set(v)) end
  end
  if node.memoize then
    local mkey = name .. "\0memo"
    local g0, s0 = fget, fset
    fget = function(self)
      local gv = gv_of(self)
      local v = gv[mkey]
      if v == nil then v = g0(self); gv[mkey] = v end
      return v
    end
    fset = function(self, v)
      gv_of(self)[mkey] = nil
      return s0(self, v)
    end
  end
  local validate = node._validate
  if validate then
    local g0, s0 = fget, fset
    fget = function(self)
      local pend = self._validate
      if pend and pend[validate] then
        pend[validate] = nil
        validate(self)
      end
      return g0(self)
    end
    fset = function(self, v)
      local pend = self._validate
      if v == nil then
        if pend then pend[validate] = self end
      else
        if pend then pend[validate] = nil end
        return s0(self, v)
      end
    end
  end
  return { get = fget, set = fset }
end

---------------------------------------------------------------------------
-- description entities
---------------------------------------------------------------------------
local Entity = class.class('Entity')
grammar_int.Entity = Entity

local function copy_list(t)
  local c = {}
  for i = 1, #t do c[i] = t[i] end
  return c
end
function Entity.method:clone()
  local c = {}
  for k, v in next, self do c[k] = v end
  setmetatable(c, getmetatable(self))
  if rawget(self, '_apply') then rawset(c, '_apply', copy_list(self._apply)) end
  return c
end
function Entity.method:_as(name)
  local c = self:clone()
  c.named = name
  return c
end
function Entity.method:convert(converter, memoize)
  local c = self:clone()
  c._converter = converter
  c._memoize = memoize or c._memoize
  return c
end
function Entity.method:validate(validate)
  local c = self:clone()
  c._validate = validate
  return c
end
function Entity.method:memoize()
  local c = self:clone()
  c._memoize = true
  return c
end
function Entity.method:apply(apply)
  local c = self:clone()
  if not rawget(c, '_apply') then rawset(c, '_apply', {}) end
  c._apply[#c._apply + 1] = apply
  return c
end
function Entity.method:const(value)
  local apply
  if type(value) ~= 'function' then
    apply = function(v, res, ctx)
      if v ~= value then ctx:error("incorrect value, expected '%s' got '%s'", tostring(value), tostring(v)) end
    end
  else
    apply = function(v, res, ctx)
      local ref = value(res, ctx)
      if v ~= ref then ctx:error("incorrect value, expected '%s' got '%s'", tostring(ref), tostring(v)) end
    end
  end
  return self:apply(apply)
end
-- Haka's older option style: entity:options{ count = ..., untilcond = ..., ... }
function Entity.method:options(opts)
  local c = self
  for k, v in pairs(opts) do
    local m = c[k]
    if type(m) ~= 'function' then error(sfmt("unknown option '%s'", tostring(k)), 2) end
    c = m(c, v)
  end
  return c
end
function Entity.method:property_setup(item)
  if self._converter or self._memoize then item:convert(self._converter, self._memoize) end
  if self._validate then item:validate(self._validate) end
end
function Entity.method:post_setup(item)
  if self._apply then
    for _, a in ipairs(self._apply) do item:add_apply(a) end
  end
end
function Entity.method:compile_setup(item)
  self:property_setup(item)
  self:post_setup(item)
end
function Entity.method:compile(env, rule, id)
  if env == nil then
    -- a standalone entity (haka.grammar.record{...}:compile())
    env = grammar.GrammarEnv:new(grammar.Grammar:new("<anonymous>"))
  end
  return self:do_compile(env, rule, id)
end

-- compile environment: gid counter, rules being compiled (recursion)
local GrammarEnv = class.class("GrammarEnv")
grammar.GrammarEnv = GrammarEnv
function GrammarEnv.method:__init(g)
  self._grammar = g
  self._gid = 0
  self._inprogress = {}
end
function GrammarEnv.method:gid()
  self._gid = self._gid + 1
  return self._gid
end

local Compound = class.class('Compound', Entity)
grammar_int.Compound = Compound
function Compound.method:result(resultclass)
  local c = self:clone()
  c.resultclass = resultclass
  return c
end
function Compound.method:compile(env, rule, id)
  if env == nil then env = GrammarEnv:new(grammar.Grammar:new("<anonymous>")) end
  local compound = dg.CompoundStart:new(env:gid(), rule, id, self.resultclass)
  local key = self.rule
  local prev
  if key then
    prev = env._inprogress[key]
    env._inprogress[key] = { node = compound, named = self.named }
  end
  local ret = self:do_compile(env, rule, id)
  if key then env._inprogress[key] = prev end
  compound:add(ret)
  compound:add(dg.CompoundFinish:new(env:gid(), rule, id))
  compound.fn = ret.fn
  return compound
end

---------------------------------------------------------------------------
-- record, sequence
---------------------------------------------------------------------------
local Record = class.class('Record', Compound)
grammar_int.Record = Record
function Record.method:__init(entities)
  self.entities = entities
  self.extra_entities = {}
end
function Record.method:extra(functions)
  local c = self:clone()
  local ex = {}
  for k, v in pairs(self.extra_entities or {}) do ex[k] = v end
  for name, f in pairs(functions) do
    if type(name) ~= 'string' then error("record extra need to be named", 2) end
    ex[name] = f
  end
  c.extra_entities = ex
  return c
end

-- The parse closure of a record of n <= UNROLL_MAX children is made from Lua source
-- generated for it (load), each child called at its own call site: a loop calling a
-- different closure at each turn aborted LuaJIT's traces ("loop unroll limit reached"),
-- and the parse of every message ran in the interpreter. (One function per record, not
-- per number of children: the records of a grammar sharing one had their traces guard on
-- which child closures they called, and leave them for the others.)
local UNROLL_MAX = 48
local unpack = unpack
local function unrolled_record(n)
  local make
  local args, calls = { "name", "resultclass", "desc", "extras", "applies", "finish", "retain_data" }, {}
  for i = 1, n do
    args[#args + 1] = "f" .. i
    calls[i] = sfmt("  err = f%d(ctx)\n  if err then popto(ctx, base); release(m); return err end\n", i)
  end
  local src = table.concat({
    "local retain, release, push, pop, popto, result_of, set_field, do_apply, pairs = ...\n",
    "return function(", table.concat(args, ", "), ")\n",
    "return function(ctx)\n",
    "  local m = retain_data and retain(ctx)\n",
    "  local base = ctx._n\n",
    "  local res, err\n",
    "  if name then\n",
    "    local parent = ctx._results[base]\n",
    "    res = push(ctx, result_of(resultclass), name)\n",
    "    if desc then set_field(parent, name, desc, res) else parent[name] = res end\n",
    "  end\n",
    table.concat(calls),
    "  res = ctx._results[ctx._n]\n",
    "  if name then pop(ctx) end\n",
    "  if extras then\n",
    "    for ename, f in pairs(extras) do set_field(res, ename, f, nil) end\n",
    "  end\n",
    "  if applies then\n",
    "    err = do_apply(finish, res, ctx)\n",
    "    if err then release(m); return err end\n",
    "  end\n",
    "  release(m)\n",
    "  return nil\n",
    "end\nend\n" })
  make = assert(load(src, sfmt("=grammar record/%d", n)))(retain, release, push, pop, popto, result_of, set_field, do_apply, pairs)
  return make
end
local function record_fn(node, fns, name, resultclass, extras, retain_data)
  local n = #fns
  local applies = node._finish._post_apply
  local conv = node.converter
  local desc
  if name and conv then
    desc = make_desc(node, name, function(self) return gv_of(self)[name] end,
      function(self, v) gv_of(self)[name] = v end)
  end
  local finish = node._finish
  if n <= UNROLL_MAX then
    return unrolled_record(n)(name, resultclass, desc, extras, applies, finish, retain_data, unpack(fns, 1, n))
  end
  return function(ctx)
    local m = retain_data and retain(ctx)
    local base = ctx._n
    local res
    if name then
      local parent = ctx._results[base]
      res = push(ctx, result_of(resultclass), name)
      if desc then set_field(parent, name, desc, res) else parent[name] = res end
    end
    for i = 1, n do
      local err = fns[i](ctx)
      if err then
        popto(ctx, base)
        release(m)
        return err
      end
    end
    res = ctx._results[ctx._n]
    if name then pop(ctx) end
    if extras then
      for ename, f in pairs(extras) do
        set_field(res, ename, f, nil)
      end
    end
    if applies then
      local err = do_apply(finish, res, ctx)
      if err then release(m); return err end
    end
    release(m)
    return nil
  end
end

local function compile_children(self, env, rule, iter, seq)
  local fns = {}
  for i, entity in ipairs(self.entities) do
    if seq and entity.named then
      log.warning("named element '%s' are not supported in sequence", tostring(entity.named))
    end
    local nxt = entity:compile(env, self.rule or rule, i)
    iter:add(nxt)
    iter = nxt
    fns[i] = nxt.fn
  end
  return fns, iter
end

-- extra fields: descriptors calling f(result)
local function extra_descs(extras)
  local out
  for name, f in pairs(extras or {}) do
    out = out or {}
    out[name] = { get = function(self) return f(self) end }
  end
  return out
end

function Record.method:do_compile(env, rule, id)
  local ret = dg.Retain:new(env:gid())
  ret.readonly = readonly_mode()
  local start = dg.RecordStart:new(env:gid(), rule, id, self.named, self.resultclass)
  self:property_setup(start)
  ret:add(start)
  local fns, last = compile_children(self, env, rule, start, false)
  local pop_ = dg.RecordFinish:new(env:gid())
  pop_._pop = self.named ~= nil
  self:post_setup(pop_)
  pop_._extra = self.extra_entities
  last:add(pop_)
  last:add(dg.Release:new(env:gid()))
  start._finish = pop_
  ret.fn = record_fn(start, fns, self.named, rawget(self, 'resultclass') and self.resultclass,
    extra_descs(self.extra_entities), true)
  return ret
end

local Sequence = class.class('Sequence', Compound)
grammar_int.Sequence = Sequence
function Sequence.method:__init(entities) self.entities = entities end
function Sequence.method:do_compile(env, rule, id)
  local ret = dg.RecordStart:new(env:gid(), rule, id, self.named, self.resultclass)
  self:property_setup(ret)
  local fns, last = compile_children(self, env, rule, ret, true)
  local pop_ = dg.RecordFinish:new(env:gid())
  pop_._pop = self.named ~= nil
  self:post_setup(pop_)
  last:add(pop_)
  ret._finish = pop_
  ret.fn = record_fn(ret, fns, self.named, rawget(self, 'resultclass') and self.resultclass, nil, false)
  return ret
end

---------------------------------------------------------------------------
-- union: each entity parsed from the same start; the data ends at the longest one
---------------------------------------------------------------------------
local Union = class.class('Union', Compound)
grammar_int.Union = Union
function Union.method:__init(entities) self.entities = entities end
function Union.method:do_compile(env, rule, id)
  local ret = dg.UnionStart:new(env:gid(), rule, id, self.named, self.resultclass)
  local fns = {}
  for i, entity in ipairs(self.entities) do
    local nxt = entity:compile(env, self.rule or rule, i)
    ret:add(nxt)
    ret:add(dg.UnionRestart:new(env:gid()))
    fns[i] = nxt.fn
  end
  local fin = dg.UnionFinish:new(env:gid())
  self:post_setup(fin)
  ret:add(fin)
  local name, rc, n = self.named, rawget(self, 'resultclass') and self.resultclass, #fns
  ret.fn = function(ctx)
    local iter = ctx.iter
    local m = ctx.streaming and retain(ctx)
    local base = ctx._n
    if name then
      local parent = ctx._results[base]
      local res = push(ctx, result_of(rc), name)
      parent[name] = res
    end
    local start, startbo = iter:copy(), ctx._bitoffset
    local smeter = iter.meter
    local maxit, maxbo, maxbits = iter:copy(), startbo, -1
    for i = 1, n do
      local err = fns[i](ctx)
      if err then popto(ctx, base); release(m); return err end
      local bits = (iter.meter - smeter) * 8 + ctx._bitoffset
      if bits > maxbits then maxbits = bits; maxit = iter:copy(); maxbo = ctx._bitoffset end
      iter:move_to(start)
      iter.meter = smeter
      ctx._bitoffset = startbo
    end
    iter:move_to(maxit)
    iter.meter = maxit.meter
    ctx._bitoffset = maxbo
    local res = ctx._results[ctx._n]
    if name then pop(ctx) end
    local err = do_apply(fin, res, ctx)
    release(m)
    return err
  end
  return ret
end

---------------------------------------------------------------------------
-- try: the first case that parses
---------------------------------------------------------------------------
local Try = class.class('Try', Compound)
grammar_int.Try = Try
function Try.method:__init(cases) self.cases = cases end

-- merges the result of an unnamed try case into its parent
local function merge_result(dst, src)
  for k, v in pairs(src) do
    if k ~= GV and k ~= '__property' and k ~= '_validate' and k ~= '_parent' and k ~= '_user' then
      dst[k] = v
    end
  end
  local gv = rawget(src, GV)
  if gv then
    local d = gv_of(dst)
    -- (number fields: the chunk is src's first one unless given, see field_chunk)
    local sb = gv[1]
    if d[1] == nil then d[1] = sb end
    local db = d[1]
    for k, v in pairs(gv) do
      if k ~= 1 then
        d[k] = v
        if type(k) == 'string' and k:sub(-4) == "\0off" then
          local name = k:sub(1, -5)
          if gv[name] == nil then
            if sb ~= db then d[name] = sb else d[name] = nil end
          end
        end
      end
    end
  end
  local props = rawget(src, '__property')
  if props then
    if is_instance(dst) then
      local p = rawget(dst, '__property')
      for k, v in pairs(props) do p = with_property(p, k, v) end
      rawset(dst, '__property', p)
    else
      for k, v in pairs(props) do rawset(dst, k, (v.get(dst, k))) end
    end
  end
end

function Try.method:do_compile(env, rule, id)
  local finish = dg.TryFinish:new(env:gid(), self.rule or rule, id)
  finish.name = self.named
  self:post_setup(finish)
  local first, prev
  local fns = {}
  for i, entity in ipairs(self.cases) do
    local nxt = entity:compile(env, self.rule or rule, i)
    local t = dg.TryStart:new(env:gid(), self.rule or rule, id, self.named, self.resultclass)
    t:add(nxt)
    t:add(finish)
    if prev then prev._catch = t end
    prev = t
    first = first or t
    fns[i] = nxt.fn
  end
  if not first then error("cannot create a try element without any case") end
  prev._catch = dg.Error:new(env:gid(), self.rule or rule, id)
  prev._catch.msg = "cannot find a successful try case"
  local name, rc, n = self.named, rawget(self, 'resultclass') and self.resultclass, #fns
  local errnode = prev._catch
  first.fn = function(ctx)
    local iter = ctx.iter
    local m = ctx.streaming and retain(ctx)
    local base = ctx._n
    local start, startbo, smeter = iter:copy(), ctx._bitoffset, iter.meter
    for i = 1, n do
      local res = push(ctx, result_of(rc), name)
      local err = fns[i](ctx)
      if not err then
        res = ctx._results[base + 1]
        popto(ctx, base)
        local parent = ctx._results[base]
        err = do_apply(finish, res, ctx)
        if err then release(m); return err end
        if name then parent[name] = res else merge_result(parent, res) end
        release(m)
        return nil
      end
      -- backtrack
      log.debug("catched: %s", tostring(err))
      popto(ctx, base)
      ctx._error = false
      iter:move_to(start)
      iter.meter = smeter
      ctx._bitoffset = startbo
    end
    release(m)
    return fail(ctx, errnode, "cannot find a successful try case")
  end
  return first
end

---------------------------------------------------------------------------
-- branch, optional
---------------------------------------------------------------------------
local Branch = class.class('Branch', Compound)
grammar_int.Branch = Branch
function Branch.method:__init(cases, select_)
  self.selector = select_
  self.cases = { default = 'error' }
  for k, v in pairs(cases) do self.cases[k] = v end
end
function Branch.method:do_compile(env, rule, id)
  local ret = dg.Branch:new(env:gid(), rule, id, self.selector)
  local fns = {}
  for key, entity in pairs(self.cases) do
    if key ~= 'default' then
      local nxt = entity:compile(env, self.rule or rule, key)
      ret:case(key, nxt)
      fns[key] = nxt.fn
    end
  end
  local default = self.cases.default
  local deffn
  if default == 'error' then
    local e = dg.Error:new(env:gid(), self.rule or rule, id)
    e.msg = "invalid case"
    ret._next = e
    deffn = function(ctx) return fail(ctx, e, "invalid case") end
  elseif default ~= 'continue' then
    local nxt = default:compile(env, self.rule or rule, 'default')
    ret._next = nxt
    deffn = nxt.fn
  end
  local selector = self.selector
  if type(selector) ~= 'function' then error("branch selector must be a function", 2) end
  ret.fn = function(ctx)
    local key = selector(ctx._results[ctx._n], ctx)
    if ctx._error then return pending(ctx, ret) end
    local f = key ~= nil and fns[key] or deffn
    if f then return f(ctx) end
    return nil
  end
  return ret
end

---------------------------------------------------------------------------
-- array
---------------------------------------------------------------------------
local Array = class.class('Array', Compound)
grammar_int.Array = Array
function Array.method:__init(entity) self.entity = entity end
function Array.method:count(size)
  local c = self:clone()
  local sizefunc
  if type(size) ~= 'function' then sizefunc = function() return size end else sizefunc = size end
  c.more = function(array, ctx) return #array < sizefunc(ctx:result(-2), ctx) end
  c._bycount = true
  return c
end
function Array.method:untilcond(condition)
  local c = self:clone()
  c._bycount = false
  c.more = function(array, ctx)
    local n = #array
    if n == 0 then return not condition(nil, ctx) end
    return not condition(array[n], ctx)
  end
  return c
end
function Array.method:whilecond(condition)
  local c = self:clone()
  c._bycount = false
  c.more = function(array, ctx)
    local n = #array
    if n == 0 then return condition(nil, ctx) and true or false end
    return condition(array[n], ctx) and true or false
  end
  return c
end
function Array.method:creation(f)
  local c = self:clone()
  c.create = f
  return c
end
function Array.method:do_compile(env, rule, id)
  local start = dg.ArrayStart:new(env:gid(), rule, id, self.named, self.resultclass or ArrayResult)
  start.create = self.create
  -- (an array ended by its count, not by a condition that may look at the data after it:
  -- see the in-place parse of engine/lua/dissector.lua)
  start.bycount = self._bycount == true
  self:property_setup(start)
  local loop = dg.Branch:new(env:gid(), nil, nil, self.more)
  local pushn = dg.ArrayPush:new(env:gid(), rule, id)
  local inner = self.entity:compile(env, self.rule or rule, id)
  local popn = dg.ArrayPop:new(env:gid())
  local finish = dg.ResultPop:new(env:gid())
  start.entity = inner
  pushn:add(inner)
  pushn:add(popn)
  pushn:add(loop)
  loop:case(true, pushn)
  loop:add(finish)
  start:add(loop)
  local more = self.more
  if type(more) ~= 'function' then
    error("array needs a count, untilcond or whilecond", 2)
  end
  local name, rc, create = self.named, rawget(self, 'resultclass') and self.resultclass, self.create
  local innerfn = inner.fn
  local conv = start.converter
  local desc
  if name and conv then
    desc = make_desc(start, name, function(self) return gv_of(self)[name] end, nil)
  end
  start.fn = function(ctx)
    local iter = ctx.iter
    local base = ctx._n
    local parent = ctx._results[base]
    local arr
    if name then
      arr = (rc or ArrayResult):new()
      if arr._init then arr:_init(iter:copy(), inner, create) end
      push(ctx, arr, name)
      if desc then set_field(parent, name, desc, arr) else parent[name] = arr end
    else
      arr = push(ctx, {}, nil)
    end
    local tracked = name and class.isa(arr, ArrayResult)
    while true do
      local go = more(arr, ctx)
      if ctx._error then popto(ctx, base); return pending(ctx, start) end
      if not go then break end
      local ebegin = tracked and iter:copy()
      local k = #arr + 1
      local elem = push(ctx, new_result(), k)
      rawset(arr, k, elem)
      local err = innerfn(ctx)
      if err then popto(ctx, base); return err end
      popto(ctx, base + 1)
      if tracked then
        rawset(elem, '_sub', sub_between(ebegin, iter))
        if ctx.streaming then iter:split() end
      end
    end
    popto(ctx, base)
    return nil
  end
  return start
end

---------------------------------------------------------------------------
-- number, flag, bits (padding, align)
---------------------------------------------------------------------------
local Number = class.class('Number', Entity)
grammar_int.Number = Number
function Number.method:__init(bits, endian)
  self.bits = bits
  self.endian = endian or 'big'
end
function Number.method:endianness(endian)
  local c = self:clone()
  c.endian = endian
  return c
end

local function read_number(sub, bo, bits, endian)
  if bo == 0 and bits % 8 == 0 then
    local size = bits / 8
    if size == 1 or size == 2 or size == 4 or size == 8 then return sub:asnumber(endian) end
  end
  return sub:asbits(bo, bits, endian)
end
local function write_number(sub, bo, bits, endian, v)
  if bo == 0 and bits % 8 == 0 then
    local size = bits / 8
    if size == 1 or size == 2 or size == 4 or size == 8 then return sub:setnumber(v, endian) end
  end
  return sub:setbits(bo, bits, v, endian)
end
local vpeek_uint = VBM.peek_uint
local is_iter = VBM.is_iterator
local vpeek_uint_at, vpos, viter_at = VBM.peek_uint_at, VBM.pos, VBM.iter_at
-- the number of `bits` at iterator `it` (bit offset bo): read in place when it is whole
-- bytes (as sub:asnumber reads them: little endian 2 and 4 bytes signed), else through a sub
local function number_at(it, bo, bits, endian)
  if bo == 0 and bits % 8 == 0 and bits <= 32 then
    local size = bits / 8
    local little = endian == 'little'
    local v = vpeek_uint(it, size, little)
    if v ~= nil then
      if little and size > 1 and v >= 2 ^ (bits - 1) then v = v - 2 ^ bits end
      return v
    end
  end
  local size = ceil((bo + bits) / 8)
  return read_number(it:copy():sub(size), bo, bits, endian)
end

-- A number field keeps where its data is as the chunk and offset of an iterator at its first
-- byte: the offset in gv[name .. "\0off"], the chunk in gv[name] only when it is not the
-- result's first one, gv[1] (one hash slot per field in the common case of a message in one
-- chunk; see field_chunk). No iterator object per field: one is made from them for the rare
-- reads the in-place read does not cover, and for writes.
local function field_chunk(gv, name)
  local c = gv[name]
  if c == nil then return gv[1] end
  return c
end
grammar_int.field_chunk = field_chunk
local function number_fn(node)
  local bits, endian, name = node.size, node.endian, node.name
  local bkey = name and (name .. "\0bits")
  local okey = name and (name .. "\0off")
  local applies = node._post_apply
  local size0 = bits / 8
  local whole = bits % 8 == 0 and bits <= 32
  local little = endian == 'little'
  local desc
  if name then
    desc = make_desc(node, name,
      function(self)
        local gv = gv_of(self)
        local bo = gv[bkey] or 0
        if bo == 0 and whole then
          local v = vpeek_uint_at(field_chunk(gv, name), gv[okey], size0, little)
          if v ~= nil then
            if little and size0 > 1 and v >= 2 ^ (bits - 1) then v = v - 2 ^ bits end
            return v
          end
        end
        return number_at(viter_at(field_chunk(gv, name), gv[okey]), bo, bits, endian)
      end,
      function(self, v)
        local gv = gv_of(self)
        local bo = gv[bkey] or 0
        return write_number(viter_at(field_chunk(gv, name), gv[okey]):sub(ceil((bo + bits) / 8)), bo, bits, endian, v)
      end)
  end
  local validate = node._validate
  return function(ctx)
    local iter = ctx.iter
    local bo = ctx._bitoffset
    local total = bo + bits
    local size = ceil(total / 8)
    local bit = total % 8
    if ctx.streaming then
      if not iter:check_available(size) then return fail(ctx, node, "not enough data") end
    elseif vavail(iter, size) < size then
      return starve(ctx, node)
    end
    local c, off
    if name or applies then c, off = vpos(iter) end
    if bit ~= 0 then iter:advance(size - 1) else iter:advance(size) end
    ctx._bitoffset = bit
    if name then
      local res = ctx._results[ctx._n]
      local gv = gv_of(res)
      gv[okey] = off
      if bo ~= 0 then gv[bkey] = bo elseif gv[bkey] ~= nil then gv[bkey] = nil end
      local base = gv[1]
      if base == nil then gv[1] = c; base = c end
      set_field(res, name, desc, c ~= base and c or nil)
      if ctx.creating then
        local init = ctx.current_init
        if type(init) == 'table' then
          local iv = init[name]
          if iv ~= nil then
            assign(res, name, desc, iv)
          elseif validate then
            res._validate[validate] = res
          end
        elseif validate then
          res._validate[validate] = res
        end
      end
    end
    if applies then
      local v
      if bo == 0 and whole then v = vpeek_uint_at(c, off, size0, little) end
      if v ~= nil then
        if little and size0 > 1 and v >= 2 ^ (bits - 1) then v = v - 2 ^ bits end
      else
        v = number_at(viter_at(c, off), bo, bits, endian)
      end
      return do_apply(node, v, ctx)
    end
    return nil
  end
end
function Number.method:do_compile(env, rule, id)
  local ret = dg.Number:new(env:gid(), rule, id)
  ret.size, ret.endian, ret.name = self.bits, self.endian, self.named
  self:compile_setup(ret)
  ret.fn = number_fn(ret)
  return ret
end

local Bits = class.class('Bits', Entity)
grammar_int.Bits = Bits
function Bits.method:__init(bits) self.bits = bits end
function Bits.method:do_compile(env, rule, id)
  local ret = dg.Bits:new(env:gid(), rule, id)
  local bits = self.bits
  local sizef = type(bits) == 'function' and bits or function() return bits end
  ret.size = sizef
  ret.fn = function(ctx)
    local n = sizef(ctx._results[ctx._n], ctx)
    if ctx._error then return pending(ctx, ret) end
    local total = ctx._bitoffset + n
    local size, bit = ceil(total / 8), total % 8
    local adv = bit ~= 0 and size - 1 or size
    if adv > 0 then
      local iter = ctx.iter
      if ctx.streaming then
        if not iter:check_available(adv) then return fail(ctx, ret, "not enough data") end
      elseif vavail(iter, adv) < adv then
        return starve(ctx, ret)
      end
      iter:advance(adv)
    end
    ctx._bitoffset = bit
    return nil
  end
  return ret
end

---------------------------------------------------------------------------
-- bytes, text
---------------------------------------------------------------------------
local Bytes = class.class('Bytes', Entity)
grammar_int.Bytes = Bytes
function Bytes.method:chunked(callback)
  local c = self:clone()
  c._chunked = callback
  return c
end
function Bytes.method:count(count)
  local c = self:clone()
  if c._untiltoken ~= nil then error("bytes can't have both count and untiltoken", 2) end
  if type(count) ~= 'function' then c._count = function() return count end else c._count = count end
  return c
end
function Bytes.method:untiltoken(token)
  local c = self:clone()
  if c._count ~= nil then error("bytes can't have both count and untiltoken", 2) end
  c._untiltoken = token
  return c
end

local sub_in_chunk = VBM.sub_in_chunk
local function bytes_fn(node)
  local name, sizef, untilre, chunkedf = node.name, node.size, node.untilre, node.chunked_callback
  local conv = node.converter
  local desc
  -- A named bytes field of a Result parsed off a stream (a segment parsed in place, a
  -- datagram, a buffer), with no converter, validate or apply, whose bytes lie in one
  -- chunk: its sub is made when the field is first read (most never are), from where the
  -- bytes were, as iter:sub would have made it during the parse (the same iterators: they
  -- follow later edits alike), then kept. Until then the field keeps two offsets (the chunk
  -- as a number field's, see field_chunk); written, it holds the value given, as a plain
  -- field. (A sub was a proxy, its state, two iterators and a weak table entry per message.)
  local lazy, okey, ekey, skey
  if name and not conv and not node._validate and not node._post_apply and not untilre and not chunkedf then
    okey, ekey, skey = name .. "\0off", name .. "\0end", name .. "\0sub"
    lazy = {
      get = function(self)
        local gv = gv_of(self)
        local off = gv[okey]
        if off == nil then return gv[skey] end
        local sub = sub_in_chunk(field_chunk(gv, name), off, gv[ekey])
        gv[skey], gv[okey], gv[ekey] = sub, nil, nil
        return sub
      end,
      set = function(self, v)
        local gv = gv_of(self)
        gv[skey], gv[okey], gv[ekey] = v, nil, nil
      end,
    }
  end
  if name and conv then
    desc = make_desc(node, name,
      function(self) return gv_of(self)[name] end,
      function(self, v)
        local gv = gv_of(self)
        local sub = gv[name]
        if type(v) == 'string' and sub then sub:setstring(v)
        elseif VBM.is_buffer(v) and sub then sub:replace(v)
        else gv[name] = v end
      end)
  end
  local function create_property(ctx, res, sub)
    if name then
      if desc then set_field(res, name, desc, sub) else res[name] = sub end
      if ctx.creating then
        local init = ctx.current_init
        local iv = type(init) == 'table' and init[name]
        if iv and sub then
          if type(iv) == 'string' then sub:setstring(iv) else sub:replace(iv) end
        end
      end
    end
  end
  local slow
  local function simple(ctx)
    if ctx._bitoffset ~= 0 then return fail(ctx, node, "byte primitive requires aligned bits") end
    local iter = ctx.iter
    local res = ctx._results[ctx._n]
    local size
    if sizef then
      size = sizef(res, ctx)
      if ctx._error then return pending(ctx, node) end
      size = tonumber(size)
      if size == nil then return fail(ctx, node, "byte count must be a number") end
      if size < 0 then return fail(ctx, node, "byte count must not be negative, got %d", size) end
    else
      size = 'all'
    end
    -- the simple case
    if not chunkedf and not untilre then
      if lazy and size ~= 'all' and size > 0 and not ctx.streaming and not ctx.creating
        and getmetatable(res) == Result then
        local c, off = vpos(iter)
        if not c.ctl and c.size - off >= size then
          iter:advance(size)
          local gv = gv_of(res)
          gv[okey], gv[ekey] = off, off + size
          if gv[skey] ~= nil then gv[skey] = nil end
          local base = gv[1]
          if base == nil then gv[1] = c; base = c end
          set_field(res, name, lazy, c ~= base and c or nil)
          return nil
        end
      end
      local sub
      if size ~= 'all' then
        if ctx.streaming then
          if size > 0 and not iter:check_available(size) then return fail(ctx, node, "not enough data") end
        elseif vavail(iter, size) < size then
          return starve(ctx, node)
        end
      end
      sub = iter:sub(size)
      create_property(ctx, res, sub)
      return do_apply(node, sub, ctx)
    end
    return slow(ctx, iter, res, size)
  end
  -- chunked or until a token: the closure `chunk` of this path is not in the simple one,
  -- whose return would otherwise close upvalues ("NYI: bytecode UCLO" aborted its trace)
  function slow(ctx, iter, res, size)
    if chunkedf and size == 0 then
      chunkedf(res, nil, true, ctx)
      return ctx._error and pending(ctx, node) or nil
    end
    local function chunk(sub, isend)
      if chunkedf then chunkedf(res, sub, isend, ctx) end
    end
    local begin = iter:copy()
    local last_chunked, sink
    local marked = false
    if untilre then
      sink = untilre:create_sink()
      if ctx.streaming then begin:mark(ctx.readonly); marked = true end
    end
    while size == 'all' or size > 0 do
      iter:wait()
      local sub
      if size ~= 'all' then
        local ok, avail = iter:check_available(size, true)
        if ok then sub = iter:sub(size, true) else sub = iter:sub('available') end
        size = size - (avail or 0)
      else
        sub = iter:sub('available')
      end
      if untilre then
        local match, mbegin = sink:feed(sub, sub == nil)
        if mbegin then
          last_chunked = last_chunked or sub:pos('begin')
          chunk(sub_between(last_chunked, mbegin), match or iter.iseof)
          last_chunked = mbegin
        end
        if not match and not sink:ispartial() and last_chunked then
          chunk(sub_between(last_chunked, sub and sub:pos('begin') or iter), iter.iseof)
          last_chunked = nil
        end
        if not last_chunked and sub then chunk(sub, iter.iseof) end
        if match then
          iter:move_to(last_chunked)
          -- (the iterator went back: its meter counts from where the bytes began)
          iter.meter = begin.meter + sub_between(begin, iter):size()
          if not mbegin then chunk(nil, true) end
          break
        end
      else
        chunk(sub, size == 0 or iter.iseof)
      end
      if ctx._error then
        if marked then begin:unmark() end
        return pending(ctx, node)
      end
      if not sub then break end
    end
    if marked then begin:unmark() end
    if ctx._error then return pending(ctx, node) end
    if not chunkedf then
      local sub = sub_between(begin, iter)
      create_property(ctx, res, sub)
      return do_apply(node, sub, ctx)
    end
    return nil
  end
  return simple
end
function Bytes.method:__init(count)
  if count ~= nil then
    if type(count) ~= 'function' then self._count = function() return count end else self._count = count end
  end
end
function Bytes.method:do_compile(env, rule, id)
  local untilre
  if self._untiltoken then untilre = rem:compile("(?:" .. self._untiltoken .. ")") end
  local ret = dg.Bytes:new(env:gid(), rule, id)
  ret.size, ret.untilre, ret.name, ret.chunked_callback = self._count, untilre, self.named, self._chunked
  self:compile_setup(ret)
  ret.fn = bytes_fn(ret)
  return ret
end

---------------------------------------------------------------------------
-- token, raw_token
---------------------------------------------------------------------------
local Token = class.class('Token', Entity)
grammar_int.Token = Token
function Token.method:__init(pattern, raw)
  self.pattern = pattern
  self.raw = raw
end

local MATCH, PARTIAL = 1, -2
local function token_fn(node)
  local name, raw, pattern, re = node.name, node.raw, node.pattern, node.re
  local rx = re._rx
  local applies = node._post_apply
  local conv = node.converter
  local skey = name and (name .. "\0sub")
  local lkey = name and (name .. "\0end")
  local desc
  if name then
    if raw then
      desc = make_desc({ _validate = node._validate }, name, function(self) return gv_of(self)[name] end, nil)
    else
      desc = make_desc({ _validate = node._validate, memoize = false }, name,
        function(self) return gv_of(self)[name] end,
        function(self, v)
          local gv = gv_of(self)
          gv[name] = v
          if conv then v = conv.set(v) end
          v = tostring(v)
          local b = rx:find(v)
          if b ~= 0 then error(sfmt("token value '%s' does not verify /%s/", v, pattern)) end
          local sub = gv[skey]
          if is_iter(sub) then
            -- (the token's bytes: its first byte and length, made a sub when first written)
            sub = sub_between(sub, gv[lkey])
            gv[skey], gv[lkey] = sub, nil
          end
          sub:setstring(v)
        end)
    end
  end
  local need = name or applies
  return function(ctx)
    local iter = ctx.iter
    local res = ctx._results[ctx._n]
    local begin, mend, str
    if not ctx.streaming then
      -- the data is all there: a window from the iterator, grown while the match may continue
      local n = 256
      local len
      while true do
        local s = vpeek(iter, n)
        local b, e = rx:find(s)
        local full = #s < n
        if b == 0 and (e < #s or full) then len = e; str = e < #s and s:sub(1, e) or s; break end
        if full then break end
        n = n * 4
      end
      if not len then return fail(ctx, node, "token /%s/ doesn't match", pattern) end
      if need then begin = iter:copy() end
      if len > 0 then iter:advance(len) end
      mend = iter
      if name and not raw and not applies then
        -- a string field: its bytes are kept as two iterators (no sub object)
        local v = str
        if conv then v = conv.get(v) end
        set_field(res, name, desc, v)
        local gv = rawget(res, GV)
        gv[skey], gv[lkey] = begin, iter:copy()
        return nil
      end
    else
      -- a stream: fed as it comes (the start of the token kept by a mark)
      local sink = rx:sink()
      local ok = false
      while true do
        iter:wait()
        if not begin then
          begin = iter:copy()
          begin:mark(ctx.readonly)
        end
        local sub = iter:sub('available')
        local st, _, last
        if sub then st, _, last = sink:feed(sub:asstring(), false) else st, _, last = sink:feed("", true) end
        if st == MATCH then
          if sink:start() == 0 then
            local e = begin:copy()
            e:advance(last)
            iter:move_to(e)
            iter.meter = e.meter
            ok = true
          end
          break
        elseif st ~= PARTIAL or sink:start() ~= 0 or not sub then
          break
        end
      end
      begin:unmark()
      if not ok then
        iter:move_to(begin)
        iter.meter = begin.meter
        return fail(ctx, node, "token /%s/ doesn't match", pattern)
      end
      iter:split()
      mend = iter
    end
    if need then
      local result = sub_between(begin, mend)
      if raw then
        if name then set_field(res, name, desc, result) end
        return do_apply(node, result, ctx)
      end
      str = str or result:asstring()
      local err = do_apply(node, str, ctx)
      if err then return err end
      if name then
        local v = str
        if conv then v = conv.get(v) end
        set_field(res, name, desc, v)
        local gv = rawget(res, GV)
        gv[skey], gv[lkey] = result, nil
      end
    end
    return nil
  end
end
function Token.method:do_compile(env, rule, id)
  if not self.re then self.re = rem:compile("^(?:" .. self.pattern .. ")") end
  local ret = dg.Token:new(env:gid(), rule, id)
  ret.pattern, ret.re, ret.name, ret.raw = self.pattern, self.re, self.named, self.raw
  self:compile_setup(ret)
  ret.fn = token_fn(ret)
  return ret
end

---------------------------------------------------------------------------
-- execute, verify, retain, release, empty, fail
---------------------------------------------------------------------------
local Execute = class.class('Execute', Entity)
grammar_int.Execute = Execute
function Execute.method:__init(func) self.func = func end
function Execute.method:do_compile(env, rule, id)
  local ret = dg.Execute:new(env:gid(), rule, id)
  local func = self.func
  ret.callback = func
  -- (a callback for its effects: see the in-place parse of engine/lua/dissector.lua)
  ret.effects = true
  ret.fn = function(ctx)
    func(ctx._results[ctx._n], ctx)
    if ctx._error then return pending(ctx, ret) end
    return nil
  end
  return ret
end

local Verify = class.class('Verify', Entity)
function Verify.method:__init(func, msg) self.func = func; self.msg = msg end
function Verify.method:do_compile(env, rule, id)
  local ret = dg.Execute:new(env:gid(), rule, id)
  local func, msg = self.func, self.msg or "verify failed"
  ret.callback = func
  ret.fn = function(ctx)
    local ok = func(ctx._results[ctx._n], ctx)
    if ctx._error then return pending(ctx, ret) end
    if not ok then return fail(ctx, ret, "%s", msg) end
    return nil
  end
  return ret
end

local Retain = class.class('Retain', Entity)
grammar_int.Retain = Retain
function Retain.method:__init(readonly) self.readonly = readonly end
function Retain.method:do_compile(env, rule, id)
  local ret = dg.Retain:new(env:gid())
  local ro = self.readonly
  ret.fn = function(ctx)
    if ctx.streaming then ctx.iter:wait(); ctx:mark(ro) end
    return nil
  end
  return ret
end
local Release = class.class('Release', Entity)
grammar_int.Release = Release
function Release.method:do_compile(env, rule, id)
  local ret = dg.Release:new(env:gid())
  ret.fn = function(ctx)
    if ctx.streaming then ctx:unmark() end
    return nil
  end
  return ret
end

local Empty = class.class('Empty', Entity)
grammar_int.Empty = Empty
local function noop() return nil end
function Empty.method:do_compile(env, rule, id)
  local ret = dg.Empty:new(env:gid(), rule, id)
  ret.fn = noop
  return ret
end

local Error = class.class('Error', Entity)
grammar_int.Error = Error
function Error.method:__init(msg) self.msg = msg end
function Error.method:do_compile(env, rule, id)
  local ret = dg.Error:new(env:gid(), rule, id)
  local msg = self.msg or "parse error"
  ret.msg = msg
  ret.fn = function(ctx) return fail(ctx, ret, "%s", msg) end
  return ret
end

---------------------------------------------------------------------------
-- proxies: a named rule, resolved when the grammar is compiled
---------------------------------------------------------------------------
local GrammarProxy = class.class("GrammarProxy", Entity)
grammar_int.GrammarProxy = GrammarProxy
function GrammarProxy.method:__init(target) self._target = target end
function GrammarProxy.method:do_compile(env, rule, id)
  local target = self._target
  local entity = env._grammar._rules[target]
  if not entity or (class.isa(entity, GrammarProxy) and entity._target == target) then
    error(sfmt("undefined entity: %s", target))
  end
  local inprog = env._inprogress[target]
  if inprog and class.isa(entity, Compound) then
    -- recursion: a reference to the compound being compiled
    if self.named ~= nil and self.named ~= inprog.named then
      error(sfmt("recursive rule '%s' cannot be renamed", target))
    end
    local node = dg.Recurs:new(env:gid(), rule, id, inprog.node)
    local tnode = inprog.node
    node.fn = function(ctx)
      local depth = rawget(ctx, '_rec') or 0
      if depth >= grammar.max_recursion then error("grammar max recursion reached") end
      ctx._rec = depth + 1
      local err = tnode.fn(ctx)
      ctx._rec = depth
      return err
    end
    return node
  end
  local c = entity:clone()
  if self.named then c.named = self.named end
  if rawget(self, '_apply') then
    if not rawget(c, '_apply') then rawset(c, '_apply', {}) end
    for _, a in ipairs(self._apply) do c._apply[#c._apply + 1] = a end
  end
  if self._converter then c._converter = self._converter end
  if self._memoize then c._memoize = self._memoize end
  if self._validate then c._validate = self._validate end
  if rawget(self, 'resultclass') then c.resultclass = self.resultclass end
  return c:compile(env, rule, id)
end
-- modifiers only meaningful on some entities are forwarded at compile time
for _, m in ipairs({ "count", "untilcond", "whilecond", "creation", "chunked", "untiltoken", "endianness", "extra" }) do
  GrammarProxy.method[m] = function(self, ...)
    local args = { n = select('#', ...), ... }
    local c = self:clone()
    local mods = rawget(self, '_mods')
    local nm = {}
    if mods then for i = 1, #mods do nm[i] = mods[i] end end
    nm[#nm + 1] = { m, args }
    rawset(c, '_mods', nm)
    return c
  end
end
do
  local base = GrammarProxy.method.do_compile
  GrammarProxy.method.do_compile = function(self, env, rule, id)
    local mods = rawget(self, '_mods')
    if not mods then return base(self, env, rule, id) end
    local target = env._grammar._rules[self._target]
    if not target or (class.isa(target, GrammarProxy) and target._target == self._target) then
      error(sfmt("undefined entity: %s", self._target))
    end
    local c = target
    for _, mod in ipairs(mods) do c = c[mod[1]](c, unpack(mod[2], 1, mod[2].n)) end
    -- compile the modified entity as the proxy would
    local saved = env._grammar._rules[self._target]
    local proxy = self:clone()
    rawset(proxy, '_mods', nil)
    env._grammar._rules[self._target] = c
    local ok, r = pcall(base, proxy, env, rule, id)
    env._grammar._rules[self._target] = saved
    if not ok then error(r, 0) end
    return r
  end
end

---------------------------------------------------------------------------
-- the DSL
---------------------------------------------------------------------------
function grammar_int.record(entities) return Record:new(entities) end
function grammar_int.sequence(entities) return Sequence:new(entities) end
function grammar_int.union(entities) return Union:new(entities) end
function grammar_int.try(cases) return Try:new(cases) end
function grammar_int.branch(cases, select_) return Branch:new(cases, select_) end
function grammar_int.optional(entity, present)
  return Branch:new({ [true] = entity, default = 'continue' }, function(res, ctx)
    return present(res, ctx) and true or false
  end)
end
function grammar_int.array(entity) return Array:new(entity) end
function grammar_int.number(bits, endian) return Number:new(bits, endian) end
function grammar_int.token(pattern) return Token:new(pattern, false) end
function grammar_int.raw_token(pattern) return Token:new(pattern, true) end
grammar_int.flag = grammar_int.number(1):convert(grammar.converter.bool, false)
function grammar_int.bytes(count) return Bytes:new(count) end
function grammar_int.align(size)
  return Bits:new(function(res, ctx)
    local r = (ctx.iter.meter * 8 + ctx._bitoffset) % size
    if r > 0 then return size - r end
    return 0
  end)
end
function grammar_int.padding(args)
  if args.align then return grammar_int.align(args.align) end
  if args.size then return Bits:new(args.size) end
  error("padding needs align or size", 2)
end
function grammar_int.field(name, field) return field:_as(name) end
function grammar_int.verify(func, msg) return Verify:new(func, msg) end
function grammar_int.execute(func) return Execute:new(func) end
function grammar_int.retain(readonly) return Retain:new(readonly) end
grammar_int.release = Release:new()
function grammar_int.empty() return Empty:new() end
function grammar_int.fail(msg) return Error:new(msg) end
grammar_int.text = grammar_int.bytes():convert(grammar.converter.string, true)

---------------------------------------------------------------------------
-- grammars
---------------------------------------------------------------------------
local Grammar = class.class("Grammar")
grammar.Grammar = Grammar
function Grammar.method:__init(name)
  rawset(self, '_name', name)
  rawset(self, '_rules', {})
  rawset(self, '_exports', {})
end
function Grammar.method:dump_graph(file)
  file:write("digraph grammar {\n")
  local ref = { _index = 1 }
  local names = {}
  for name in pairs(self._exports) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local rule = self._exports[name]
    if type(rule) == 'table' and rule._dump_graph then
      file:write(sfmt("subgraph cluster_%s { label=%s \n", name, name))
      rule:_dump_graph(file, ref)
      file:write("}\n")
    end
  end
  file:write("}\n")
end
function Grammar.method:__index(name)
  local ret = rawget(self, '_exports')[name]
  if not ret then error(sfmt("unknown grammar public rule '%s'", tostring(name)), 2) end
  return ret
end
function Grammar.method:__newindex(key, value) error("read-only table", 2) end
function Grammar.method:export(...)
  local n = select('#', ...)
  local args = { ... }
  for i = 1, n do
    local proxy = args[i]
    if not class.isa(proxy, GrammarProxy) then error("can only export named rules", 3) end
    self._exports[proxy._target] = true
  end
end
function Grammar.method:extend(...)
  local n = select('#', ...)
  local args = { ... }
  for i = 1, n do
    local g = args[i]
    for k, v in pairs(g._rules) do self._rules[k] = v end
    for k in pairs(g._exports) do self._exports[k] = true end
  end
end
function Grammar.method:define(...)
  local n = select('#', ...)
  local args = { ... }
  for i = 1, n do
    local name = args[i]
    self._rules[name] = GrammarProxy:new(name)
  end
end

-- the environment of a grammar definition
local function grammar_env(gr, old_mt)
  local scope = {
    export = function(...) gr:export(...) end,
    extend = function(...) gr:extend(...) end,
    define = function(...) gr:define(...) end,
  }
  local old_index = old_mt and old_mt.__index
  return {
    __index = function(self, name)
      local ret = scope[name]
      if ret ~= nil then return ret end
      ret = grammar_int[name]
      if ret ~= nil then return ret end
      ret = gr._rules[name]
      if ret then
        if class.isa(ret, GrammarProxy) and ret._target == name then return ret end
        return GrammarProxy:new(name)
      end
      if old_index then
        if type(old_index) == 'function' then return old_index(self, name) end
        return old_index[name]
      end
      return nil
    end,
    __newindex = function(self, key, value)
      if grammar_int[key] ~= nil or scope[key] ~= nil then
        error(sfmt("'%s' is reserved in the grammar scope", tostring(key)), 2)
      end
      if class.isa(value, Entity) then
        gr._rules[key] = value
        value.rule = key
      else
        rawset(self, key, value)
      end
    end,
  }
end

grammar.max_recursion = 10
grammar.debug = false
grammar.all = setmetatable({}, { __mode = "v" }) -- the grammars made (--dump-dissector-graph)

function grammar.new(name, def)
  if type(def) ~= 'function' then error("grammar definition must be a function", 2) end
  local g = Grammar:new(name)
  local env = getfenv(def)
  local old_mt = getmetatable(env)
  setmetatable(env, grammar_env(g, old_mt))
  local ok, err = pcall(def)
  setmetatable(env, old_mt)
  if not ok then error(err, 0) end
  local no_export = true
  local names = {}
  for n in pairs(g._exports) do names[#names + 1] = n end
  table.sort(names, function(a, b) return tostring(a) < tostring(b) end)
  for _, n in ipairs(names) do
    local value = g._rules[n]
    if not value then error("exported rule must be registered in the grammar: " .. tostring(n), 2) end
    local genv = GrammarEnv:new(g)
    g._exports[n] = value:compile(genv)
    no_export = false
  end
  if no_export then log.warning("grammar '%s' does not have any exported element", tostring(name)) end
  grammar.all[#grammar.all + 1] = g
  if grammar.debug then
    local f = io.open(sfmt("%s-grammar.dot", name), "w+")
    if f then g:dump_graph(f); f:close() end
  end
  return g
end

-- the DSL's constructors, also reachable as haka.grammar.record{...} etc.
for k, v in pairs(grammar_int) do
  if grammar[k] == nil then grammar[k] = v end
end

haka.grammar = grammar
return grammar
