-- require('class'): Haka's class module (doc/ref/class.rst), for "Haka on DPDK".
--
--   local class = require('class')
--   local A = class.class('A')            -- a class (its parent: the base object)
--   local B = class.class('B', A)         -- a subclass
--   function A.method:__init(x) self.x = x end
--   function A.method:get() return self.x end
--   A.property.double = { get = function(self) return 2 * self.x end,
--                         set = function(self, v) self.x = v / 2 end }
--   local b = B:new(21)                    -- instance: calls __init(21)
--   b:get(), b.double, class.isa(b, A), class.classof(b) == B
--   class.super(B).__init(self, ...)      -- a parent's method, from a subclass method
--
-- A class is a table whose metatable is the module's class metatable (class.isclass): its
-- `name`, `super`, `method` (write methods there: they go to the class's own `__method`
-- table), `property` (name -> { get = f(self), set = f(self, v) }) and any class-level field
-- (read through the hierarchy: B.new, B.some_class_field). Instances are tables whose
-- metatable is their class. Reading a missing instance key looks, in order: the instance's
-- dynamic properties (obj:addproperty(name, get, set)), then the classes from the instance's
-- up to the root, each its methods then its property getters, then the nearest `__index`
-- method (class.method.__index = function(self, key) ... end). Writing a key: dynamic
-- property setter, class property setters, the nearest `__newindex` method, else the
-- instance's own field. Special methods: `__init` (constructor), `__tostring`.
-- A dynamic property's getter is called (self, name) and its setter (self, value, name): one
-- descriptor { get, set } may serve several names (the grammar's fields share theirs).
--
-- Lookups are cached per class and the caches are rebuilt after any method or property is
-- added anywhere (Haka built them once, at the first instance access).
local module = {}
local type, pairs, next, rawget, rawset, setmetatable, getmetatable, tostring, error =
  type, pairs, next, rawget, rawset, setmetatable, getmetatable, tostring, error
local sfmt = string.format

-- bumped whenever a method or a property is added: the instance lookup caches are stale
local generation = 0
local function changed() generation = generation + 1 end

-- property tables: adding a property invalidates the caches
local property_mt = {
  __newindex = function(t, k, v)
    rawset(t, k, v)
    changed()
  end,
}
local function new_property_table() return (setmetatable({}, property_mt)) end

-- the metatable of classes
local ClassMeta = {}

-- class-level lookup (B.new, B.name of a parent's field ...): the hierarchy's raw fields
function ClassMeta.__index(cls, key)
  local c = rawget(cls, "super")
  while c do
    local v = rawget(c, key)
    if v ~= nil then return v end
    c = rawget(c, "super")
  end
  return nil
end

function ClassMeta.__tostring(cls)
  return sfmt("<class: %s>", tostring(rawget(cls, "name")))
end

-- views of the methods of a class and its parents: cls.method (writable: defines a method of
-- cls) and class.super(cls) (read only)
local function view_index(view, key)
  local c = rawget(view, "__class")
  while c do
    local v = rawget(c, "__method")[key]
    if v ~= nil then return v end
    c = rawget(c, "super")
  end
  return nil
end
local ReadOnlyView = {
  __index = view_index,
  __newindex = function() error("immutable class", 2) end,
  __tostring = function(view) return sfmt("<class view: %s>", tostring(rawget(view, "__class").name)) end,
}
local MethodView = {
  __index = view_index,
  __newindex = function(view, key, value)
    rawget(view, "__class").__method[key] = value
    changed()
  end,
  __tostring = ReadOnlyView.__tostring,
}

-- The instance lookup tables of cls: `get[name]` the value or getter, `isprop[name]` true when
-- it is a property getter, `index` / `newindex` the nearest __index / __newindex methods,
-- `set[name]` the property setters.
local function lookups(cls)
  local lk = rawget(cls, "__lookups")
  if lk and lk.gen == generation then return lk end
  local get, isprop, set = {}, {}, {}
  local index, newindex
  local c = cls
  while c do
    for name, m in next, rawget(c, "__method") do
      if name == "__index" then
        index = index or m
      elseif get[name] == nil then
        get[name] = m
      end
    end
    newindex = newindex or rawget(c, "__method").__newindex
    for name, p in next, rawget(c, "property") do
      if type(p) == "table" then
        if p.get and get[name] == nil then get[name] = p.get; isprop[name] = true end
        if p.set and set[name] == nil then set[name] = p.set end
      end
    end
    c = rawget(c, "super")
  end
  lk = { gen = generation, get = get, isprop = isprop, set = set, index = index, newindex = newindex }
  rawset(cls, "__lookups", lk)
  return lk
end

local function instance_index(cls)
  return function(self, key)
    local dyn = rawget(self, "__property")
    if dyn then
      local p = dyn[key]
      if p and p.get then return p.get(self, key) end
    end
    local lk = lookups(cls)
    local v = lk.get[key]
    if v ~= nil then
      if lk.isprop[key] then return v(self) end
      return v
    end
    local index = lk.index
    if index then return index(self, key) end
    return nil
  end
end

local function instance_newindex(cls)
  return function(self, key, value)
    local dyn = rawget(self, "__property")
    if dyn then
      local p = dyn[key]
      if p and p.set then return p.set(self, value, key) end
    end
    local lk = lookups(cls)
    local set = lk.set[key]
    if set then return set(self, value) end
    local newindex = lk.newindex
    if newindex then return newindex(self, key, value) end
    rawset(self, key, value)
  end
end

-- "table: 0x..." of a table that has a __tostring
local function address(t)
  local mt = getmetatable(t)
  setmetatable(t, nil)
  local s = tostring(t)
  setmetatable(t, mt)
  return (s:match("0x%x+") or s)
end

function module.new_instance(cls, ...)
  local instance = setmetatable({}, cls)
  instance:__init(...)
  return instance
end

-- the root of every class
local BaseObject = {
  name = "BaseObject",
  new = module.new_instance,
  __class_init = function(self, cls) end, -- called on the parent when a subclass is made
  __method = {
    __init = function(self) end,
    -- a shallow copy of the instance's own fields, same class
    clone = function(self)
      local c = {}
      for k, v in next, self do c[k] = v end
      return (setmetatable(c, getmetatable(self)))
    end,
    -- a property of this instance only
    addproperty = function(self, name, get, set)
      module.own_properties(self)[name] = { get = get, set = set }
    end,
  },
  property = new_property_table(),
}
BaseObject.__index = instance_index(BaseObject)
BaseObject.__newindex = instance_newindex(BaseObject)
BaseObject.__view = setmetatable({ __class = BaseObject }, ReadOnlyView)
BaseObject.method = setmetatable({ __class = BaseObject }, MethodView)
setmetatable(BaseObject, ClassMeta)

function module.class(name, super)
  super = super or BaseObject
  local cls = {
    name = name,
    super = super,
    __method = {},
    property = new_property_table(),
  }
  cls.__view = setmetatable({ __class = cls }, ReadOnlyView)
  cls.method = setmetatable({ __class = cls }, MethodView)
  cls.__index = instance_index(cls)
  cls.__newindex = instance_newindex(cls)
  cls.__tostring = function(self)
    local convert = self.__tostring
    if convert then return (convert(self)) end
    return sfmt("<class instance %s: %s>", tostring(rawget(getmetatable(self), "name")), address(self))
  end
  setmetatable(cls, ClassMeta)
  super:__class_init(cls)
  return cls
end

function module.classof(instance)
  return (getmetatable(instance))
end

-- the methods of cls's parent (read only): class.super(B).__init(self, ...)
function module.super(cls)
  if cls == nil then error("class.super: class expected", 2) end
  return rawget(cls.super, "__view")
end

-- Shared dynamic property tables ("shapes"): the grammar gives every result of the same
-- path through it the same `__property` table (name -> descriptor) rather than one per
-- result, which was a table allocated and collected per parsed message. A shared table is
-- never written: with_property returns the table with one more (or another) property, a
-- shared one found by transition from the old one (the descriptor is the key, as each is
-- made for one name), or the old table itself when it is the instance's own.
local SHAPES = setmetatable({}, { __mode = "k" }) -- shared table -> transitions { [desc] = next }
local nshapes, MAX_SHAPES = 0, 65536
local EMPTY_SHAPE = {}
SHAPES[EMPTY_SHAPE] = {}
module.EMPTY_PROPERTIES = EMPTY_SHAPE
local function copy_props(p)
  local c = {}
  for k, v in next, p do c[k] = v end
  return c
end
function module.with_property(p, name, desc)
  if p == nil then p = EMPTY_SHAPE end
  local tr = SHAPES[p]
  if tr == nil then p[name] = desc; return p end
  local nx = tr[desc]
  if nx ~= nil and nx[name] == desc then return nx end
  nx = copy_props(p)
  nx[name] = desc
  -- (a bounded number: past it, instances get their own tables again)
  if nshapes < MAX_SHAPES and tr[desc] == nil then
    nshapes = nshapes + 1
    SHAPES[nx] = {}
    tr[desc] = nx
  end
  return nx
end
-- whether p is a shared property table (never written; with_property's transitions from a
-- shared table to a shared table are fixed once made)
function module.shared_properties(p) return SHAPES[p] ~= nil end
-- the instance's dynamic property table, made its own (writable)
local function own_props(self)
  local p = rawget(self, "__property")
  if p == nil or SHAPES[p] ~= nil then
    p = p and copy_props(p) or {}
    rawset(self, "__property", p)
  end
  return p
end
module.own_properties = own_props

-- copies src's fields (and dynamic properties) into dst; src loses its dynamic properties
function module.merge(dst, src)
  local psrc = rawget(src, "__property")
  if psrc then
    local pdst = rawget(dst, "__property")
    if not pdst then
      rawset(dst, "__property", psrc)
    else
      for k, v in next, psrc do pdst = module.with_property(pdst, k, v) end
      rawset(dst, "__property", pdst)
    end
    rawset(src, "__property", nil)
  end
  for k, v in pairs(src) do dst[k] = v end
end

function module.isaclass(c, cls)
  while c do
    if c == cls then return true end
    c = c.super
  end
  return false
end

function module.isa(instance, cls)
  return (module.isaclass(module.classof(instance), cls))
end

function module.isclass(cls)
  return getmetatable(cls) == ClassMeta
end

module.BaseObject = BaseObject

return module
