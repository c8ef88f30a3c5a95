-- Haka's additions to the standard `debug` library, for "Haka on DPDK":
--   debug.pprint(obj[, options])   pretty print a value, in Haka's output format
--   debug.hide_underscore          hide filter: keys starting with "_"
--   debug.hide_function            hide filter: function values
--   debug.format_error(msg)        message handler of haka.dissector.pcall
-- Run once per Lua state (engine/src/lua/libs.rs) with the `debug` table as argument.
--
-- Output format (Haka's): one line per value, `NAME : VALUE`, nested values indented by two
-- spaces. Strings are quoted, numbers and booleans plain, functions `function`. A plain
-- table prints `table {` then its entries sorted by tostring(key), then `}`; a class instance
-- (require('class')) prints `class NAME {`, its own fields sorted, then its instance
-- properties, then the properties its class defines (each group sorted, a key printed once),
-- then `}`.
-- A value already being printed higher up prints `recursive value`. At depth 0 a compound
-- value prints its title alone.
--
-- Object protocol (the runtime's own objects, FFI views included): an object describes itself
-- through a descriptor found at key `__pprint_info` of its metatable (tables) or through its
-- __index (cdata):
--   { kind = "class" | "userdata",  -- the word printed before the name
--     name = "HttpRequestResult",   -- the type name
--     tostring = true,              -- optional: print `kind name tostring(obj)` on one line
--     fields = function(obj, add) end }  -- optional: calls add(key, value) for each entry,
--                                         -- in print order (nil values print `nil`)
-- A "class" prints its braces even when empty; a "userdata" without entries prints its
-- title alone (Haka's swig objects behave so).
local debug = ...
local type, tostring, pairs, pcall, getmetatable, rawget = type, tostring, pairs, pcall, getmetatable, rawget
local tconcat, tsort = table.concat, table.sort

function debug.hide_underscore(name, value)
  return type(name) == "string" and name:sub(1, 1) == "_"
end

function debug.hide_function(name, value)
  return type(value) == "function"
end

-- No traceback: Haka appended one only in its debug builds.
function debug.format_error(msg)
  if type(msg) == "string" then return msg end
  return tostring(msg)
end

local function by_string(a, b) return tostring(a) < tostring(b) end

-- keys of t sorted as Haka sorts them (by their string form)
local function sorted_keys(t)
  local keys = {}
  for k in next, t do keys[#keys + 1] = k end
  tsort(keys, by_string)
  return keys
end
debug.sorted_keys = sorted_keys

local function is_hidden(key, value, hide)
  for i = 1, #hide do
    if hide[i](key, value) then return true end
  end
  return false
end

local class_mod -- require('class'), loaded when first needed

-- the descriptor of an object of the runtime, or nil
local function info_of(obj, t)
  if t == "table" then
    local mt = getmetatable(obj)
    if type(mt) == "table" then return rawget(mt, "__pprint_info") end
    return nil
  end
  -- cdata: through its __index (which may raise for unknown keys)
  local ok, info = pcall(function() return obj.__pprint_info end)
  if ok and type(info) == "table" then return info end
  return nil
end

local pp

-- whether a class instance has its own printer (method __pprint(self, indent, out))
local function class_printer(obj)
  local ok, f = pcall(function() return obj.__pprint end)
  return ok and type(f) == "function"
end

local function print_entries(entries, indent, visited, hide, depth, out)
  local sub = indent .. "  "
  for i = 1, entries.n or #entries, 2 do
    local k, v = entries[i], entries[i + 1]
    pp(v, sub, tostring(k), visited, hide, depth - 1, out)
  end
end

-- entries (key, value, key, value...) of a class instance, in Haka's order
local function class_entries(obj, cls, hide)
  local entries, seen = {}, {}
  local function add(k, v)
    if not seen[k] and not is_hidden(k, v, hide) then
      seen[k] = true
      local n = entries.n or 0
      entries[n + 1] = k
      entries[n + 2] = v
      entries.n = n + 2
    end
  end
  local function from_props(props)
    if type(props) ~= "table" then return end
    local keys = sorted_keys(props)
    for i = 1, #keys do
      local k = keys[i]
      if not seen[k] then
        local ok, v = pcall(function() return obj[k] end)
        add(k, ok and v or nil)
      end
    end
  end
  local keys = sorted_keys(obj)
  for i = 1, #keys do
    local k = keys[i]
    -- (__gv: the raw data of the grammar's fields, engine/lua/grammar.lua)
    if k ~= "__property" and k ~= "__gv" then add(k, rawget(obj, k)) end
  end
  from_props(rawget(obj, "__property"))
  -- the properties of the instance's class (Haka prints its class's own, not its ancestors')
  from_props(rawget(cls, "property"))
  return entries
end

pp = function(obj, indent, name, visited, hide, depth, out)
  local t = type(obj)
  local title = name and (indent .. name .. " : ") or ""
  if t == "table" or t == "cdata" or t == "userdata" then
    if visited[obj] then
      out(title .. "recursive value")
      return
    end
    visited[obj] = true
  end

  -- (a userdata with a descriptor, e.g. a vbuffer, prints as a cdata view does)
  if t == "table" or t == "cdata" or (t == "userdata" and info_of(obj, t)) then
    local mt = t == "table" and getmetatable(obj) or nil
    local info = info_of(obj, t)
    if info then
      title = title .. info.kind .. " " .. tostring(info.name)
      if info.tostring then
        out(title .. " " .. tostring(obj))
      elseif depth == 0 then
        out(title)
      else
        local entries = {}
        if info.fields then
          info.fields(obj, function(k, v)
            if not is_hidden(k, v, hide) then
              local n = entries.n or 0
              entries[n + 1] = k
              entries[n + 2] = v
              entries.n = n + 2
            end
          end)
        end
        if (entries.n or 0) == 0 and info.kind ~= "class" then
          out(title)
        else
          out(title .. " {")
          print_entries(entries, indent, visited, hide, depth, out)
          out(indent .. "}")
        end
      end
    elseif t == "cdata" then
      out(title .. "cdata")
    else
      if type(mt) == "table" then
        class_mod = class_mod or require("class")
        if not class_mod.isclass(mt) then mt = nil end
      else
        mt = nil
      end
      if mt then
        title = title .. "class " .. tostring(rawget(mt, "name"))
        if depth == 0 then
          out(title)
        elseif class_printer(obj) then
          obj:__pprint(indent, out) -- a class that prints itself
        else
          out(title .. " {")
          print_entries(class_entries(obj, mt, hide), indent, visited, hide, depth, out)
          out(indent .. "}")
        end
      elseif depth == 0 then
        out(title .. "table")
      else
        out(title .. "table {")
        local keys = sorted_keys(obj)
        local entries = {}
        for i = 1, #keys do
          local k = keys[i]
          local v = rawget(obj, k)
          if not is_hidden(k, v, hide) then
            local n = entries.n or 0
            entries[n + 1] = k
            entries[n + 2] = v
            entries.n = n + 2
          end
        end
        print_entries(entries, indent, visited, hide, depth, out)
        out(indent .. "}")
      end
    end
  elseif t == "userdata" then
    out(title .. "userdata")
  elseif t == "string" then
    out(title .. '"' .. obj .. '"')
  elseif t == "function" or t == "thread" then
    out(title .. t)
  else -- number, boolean, nil
    out(title .. tostring(obj))
  end

  if t == "table" or t == "cdata" or t == "userdata" then visited[obj] = nil end
end

-- debug.pprint(obj[, options]): options.indent (prefix of every line, default ""),
-- options.depth (levels printed; default unlimited), options.hide (a filter function(key,
-- value) -> true to hide, or a list of them), options.title (printed as the name of obj:
-- `title : ...`), options.print (the output function, called with one line; default print).
function debug.pprint(obj, options)
  if options ~= nil and type(options) ~= "table" then
    error("debug.pprint: options must be a table", 2)
  end
  options = options or {}
  local hide = options.hide
  if hide == nil then
    hide = {}
  elseif type(hide) == "function" then
    hide = { hide }
  elseif type(hide) ~= "table" then
    error("debug.pprint: options.hide must be a function or a list of functions", 2)
  end
  local title = options.title
  if title ~= nil then title = tostring(title) end
  pp(obj, options.indent or "", title, {}, hide, options.depth or -1, options.print or print)
end

return debug
