-- require('check'): Haka's argument checks, for "Haka on DPDK".
--
--   check.assert(cond, message[, level])   error(message) when cond is false or nil
--   check.type(n, value, t[, level])        error "invalid parameter N, expected T" unless
--                                           type(value) == t
--   check.types(n, value, { t1, t2 }[, level])  same, for one of several types
--                                           ("expected t1 or t2")
--   check.error(message[, level])           error(message)
--
-- The error is reported `level` frames above the function that called the check (default 0:
-- that function's caller, as Haka does), so that a library function checking its arguments
-- blames the code that called it.
local module = {}
local type, error, ipairs, sfmt, tconcat = type, error, ipairs, string.format, table.concat

-- error() levels: 1 is this module's function, 2 the function calling the check, 3 its caller
local BASE = 3

function module.error(message, level)
  error(message, (level or 0) + BASE)
end

function module.type(n, value, t, level)
  if type(value) ~= t then
    error(sfmt("invalid parameter %d, expected %s", n, t), (level or 0) + BASE)
  end
end

function module.types(n, value, types, level)
  local vt = type(value)
  for _, t in ipairs(types) do
    if vt == t then return end
  end
  error(sfmt("invalid parameter %d, expected %s", n, tconcat(types, " or ")), (level or 0) + BASE)
end

function module.assert(cond, message, level)
  if not cond then
    error(message, (level or 0) + BASE)
  end
end

return module
