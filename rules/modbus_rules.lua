-- Modbus/TCP policy of an ICS operator, on the Modbus dissector written in Lua
-- (rules/modbus.lua, loaded from beside this file). Three rules:
--  1. writes to the protected holding registers (setpoints, 1000-1999): alert and drop the
--     connection;
--  2. a function code outside the ones this plant uses (1-6, 15, 16): alert;
--  3. a unit id not in the allowed list (the PLCs behind the gateway, 1-16): alert and
--     drop the connection.
-- Scripts/bench.sh's case (g) runs it.
--
-- Run:  hakapcap rules/modbus_rules.lua IN.pcap -o OUT.pcap
local here = debug.getinfo(1, 'S').source:match('^@(.*[/\\])') or './'
local modbus = dofile(here .. 'modbus.lua')

local sfmt = string.format
local PROTECTED_FIRST, PROTECTED_LAST = 1000, 1999
local KNOWN = { [1] = true, [2] = true, [3] = true, [4] = true, [5] = true, [6] = true, [15] = true, [16] = true }
local ALLOWED_UNITS = {}
for u = 1, 16 do ALLOWED_UNITS[u] = true end

local function alert(mb, description, severity)
  local flow = mb.flow
  haka.alert{
    description = description,
    severity = severity,
    sources = haka.alert.address(flow.srcip),
    targets = { haka.alert.address(flow.dstip), haka.alert.service(sfmt("tcp/%d", flow.dstport)) },
  }
end

-- 1. Protected registers: no write from the network.
haka.rule{
  name = "modbus: write to protected registers",
  on = haka.dissectors.modbus.events.request,
  eval = function (mb, req)
    local fc = req.function_code
    if fc == 6 or fc == 16 then
      local first = req.address
      local last = first
      if fc == 16 then last = first + req.quantity - 1 end
      if first <= PROTECTED_LAST and last >= PROTECTED_FIRST then
        alert(mb, sfmt("modbus: write to protected registers %d-%d (unit %d)", first, last, req.unit_id), "high")
        mb:drop()
      end
    end
  end
}

-- 2. Unknown function codes (diagnostics, file records, programming...): alert.
haka.rule{
  name = "modbus: unknown function code",
  on = haka.dissectors.modbus.events.request,
  eval = function (mb, req)
    local fc = req.function_code
    if not KNOWN[fc] then
      alert(mb, sfmt("modbus: unknown function code %d (unit %d)", fc, req.unit_id), "medium")
    end
  end
}

-- 3. Unit ids: only the PLCs behind this gateway.
haka.rule{
  name = "modbus: unit id not allowed",
  on = haka.dissectors.modbus.events.request,
  eval = function (mb, req)
    local unit = req.unit_id
    if not ALLOWED_UNITS[unit] then
      alert(mb, sfmt("modbus: unit id %d not allowed", unit), "high")
      mb:drop()
    end
  end
}
