-- Modbus/TCP dissector written with Haka's grammar DSL and a state machine (no Rust).
-- Use it from a rules file (rules/modbus_rules.lua does):
--   local modbus = dofile('rules/modbus.lua')   -- path relative to where haka runs
-- or copy it at the top of your rules file. It installs itself on TCP port 502.
--
-- Every frame is an ADU: the MBAP header (transaction_id, protocol_id = 0, length, unit_id)
-- then the PDU (function_code and its data). `length` counts unit_id and the PDU: 2 to
-- 254 (an ADU is at most 260 bytes); a frame whose fields disagree with it, a protocol_id
-- other than 0 or a length out of range is a parse error, hence the dissector's
-- protocol_error (counted `lua_protocol_errors`, [rules] lua_protocol_error verdict).
--
-- Events (the first argument is the dissector object: flow, drop(), reset(), alert(...)):
--   haka.dissectors.modbus.events.request  (modbus, req)    client -> server ADU
--   haka.dissectors.modbus.events.response (modbus, resp)   server -> client ADU
-- Fields of req / resp (numbers unless said; a write changes the bytes in the stream):
--   transaction_id, protocol_id, length, unit_id, function_code, and by function code:
--   1-4 (read coils, discrete inputs, holding registers, input registers)
--      request:  address, quantity;          response: byte_count, values (bytes)
--   5, 6 (write single coil, register)
--      request and response: address, value
--   15, 16 (write multiple coils, registers)
--      request:  address, quantity, byte_count, values (bytes);  response: address, quantity
--   function_code >= 0x80 in a response: exception_code (the request's code is fc - 0x80)
--   any other code: data (bytes: the rest of the PDU)
local tcp_connection = require('protocol/tcp_connection')

local modbus = haka.dissector.new{ type = tcp_connection.helper.TcpFlowDissector, name = 'modbus' }
modbus:register_event('request')
modbus:register_event('response')

modbus.MAX_LENGTH = 254 -- unit id + PDU (253): an ADU of 260 bytes
modbus.READS = { [1] = true, [2] = true, [3] = true, [4] = true }
modbus.WRITES = { [5] = true, [6] = true, [15] = true, [16] = true }
modbus.names = {
  [1] = 'read_coils', [2] = 'read_discrete_inputs', [3] = 'read_holding_registers',
  [4] = 'read_input_registers', [5] = 'write_single_coil', [6] = 'write_single_register',
  [15] = 'write_multiple_coils', [16] = 'write_multiple_registers',
}

local MAX = modbus.MAX_LENGTH
local function check_length(v, res, ctx)
  if v < 2 or v > MAX then ctx:error("invalid MBAP length %d (2 to %d)", v, MAX) end
end
-- the PDU must end where the MBAP length says (6 header bytes before unit_id)
local function adu_end(res, ctx)
  return ctx.iter.meter == 6 + res.length
end
-- the PDU's case: its function code, 'exception' for a response's code >= 0x80
local function fc_of(res) return res.function_code end
local function response_case(res)
  local fc = res.function_code
  if fc >= 0x80 then return 'exception' end
  return fc
end
local function rest_of_pdu(res) return res.length - 2 end
local function values_count(res) return res.byte_count end

modbus.grammar = haka.grammar.new('modbus', function ()
  mbap = record{
    field('transaction_id', number(16)),
    field('protocol_id', number(16)):const(0),
    field('length', number(16)):apply(check_length),
    field('unit_id', number(8)),
    field('function_code', number(8)),
  }
  other = record{ field('data', bytes():count(rest_of_pdu)) }
  address_quantity = record{ field('address', number(16)), field('quantity', number(16)) }
  address_value = record{ field('address', number(16)), field('value', number(16)) }
  write_multiple_request = record{
    field('address', number(16)), field('quantity', number(16)),
    field('byte_count', number(8)),
    -- (the byte count and the MBAP length must agree before the values are read)
    verify(function (res) return res.byte_count == res.length - 7 end, "byte count does not match the MBAP length"),
    field('values', bytes():count(values_count)),
  }
  read_response = record{
    field('byte_count', number(8)),
    verify(function (res) return res.byte_count == res.length - 3 end, "byte count does not match the MBAP length"),
    field('values', bytes():count(values_count)),
  }
  exception = record{ field('exception_code', number(8)) }

  request = record{
    mbap,
    branch({
      [1] = address_quantity, [2] = address_quantity, [3] = address_quantity, [4] = address_quantity,
      [5] = address_value, [6] = address_value,
      [15] = write_multiple_request, [16] = write_multiple_request,
      default = other,
    }, fc_of),
    verify(adu_end, "PDU size does not match the MBAP length"),
  }
  response = record{
    mbap,
    branch({
      [1] = read_response, [2] = read_response, [3] = read_response, [4] = read_response,
      [5] = address_value, [6] = address_value,
      [15] = address_quantity, [16] = address_quantity,
      exception = exception,
      default = other,
    }, response_case),
    verify(adu_end, "PDU size does not match the MBAP length"),
  }
  export(request, response)
end)

modbus.state_machine = haka.state_machine.new('modbus', function ()
  state_type(BidirectionalState)
  session = state(modbus.grammar.request, modbus.grammar.response)
  session:on{ event = events.up, execute = function (self, req) self:trigger('request', req) end }
  session:on{ event = events.down, execute = function (self, resp) self:trigger('response', resp) end }
  initial(session)
end)

modbus:install_tcp_rule(502)

return modbus
