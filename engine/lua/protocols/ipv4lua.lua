-- require('protocol/ipv4lua'): an IPv4 dissector written in Lua with the grammar DSL, the
-- rules seeing it as haka.dissectors.ipv4lua (Haka's ipv4lua module, written anew). A packet
-- dissector attached to the raw packet: every IPv4 packet is parsed into the dissector object
-- (fields of the header, `opt` the options' bytes, `payload` the data), whose fields read
-- and write the packet's bytes. The native ipv4 dissector still reassembles fragments and
-- carries the upper dissectors; the engine recomputes the header checksum of a packet whose
-- header a rule wrote.
local ipv4 = require('protocol/ipv4')

local ipv4lua = haka.dissector.new{
  type = haka.helper.PacketDissector,
  name = 'ipv4lua',
}

local addr = {
  get = function(x) return ipv4.addr(x) end,
  set = function(x)
    if type(x) == 'string' then x = ipv4.addr(x) end
    return x.packed
  end,
}
local mult = haka.grammar.converter.mult

ipv4lua.grammar = haka.grammar.new("ipv4lua", function()
  flags = record{
    field('rb', flag),
    field('df', flag),
    field('mf', flag),
  }

  header = record{
    field('version', number(4)),
    field('hdr_len', number(4):convert(mult(4))),
    field('tos', number(8)),
    field('len', number(16)),
    field('id', number(16)),
    field('flags', flags),
    field('frag_offset', number(13):convert(mult(8))),
    field('ttl', number(8)),
    field('proto', number(8)),
    field('checksum', number(16)),
    field('src', number(32):convert(addr, true)),
    field('dst', number(32):convert(addr, true)),
    verify(function(self) return self.version == 4 end, "invalid ipv4 version"),
    verify(function(self) return self.hdr_len >= 20 end, "invalid ipv4 header length"),
    field('opt', bytes():count(function(self) return self.hdr_len - 20 end)),
    field('payload', bytes()),
  }

  export(header)
end).header

-- the header's checksum is right
function ipv4lua.method:verify_checksum()
  local payload = rawget(self, '_payload')
  return ipv4.inet_checksum_compute(payload:sub(0, self.hdr_len)) == 0
end

-- the header's checksum computed again
function ipv4lua.method:compute_checksum()
  self.checksum = 0
  self.checksum = ipv4.inet_checksum_compute(rawget(self, '_payload'):sub(0, self.hdr_len))
end

-- every IPv4 packet, parsed from its IP header on
ipv4lua:attach('packet', function(pkt) return pkt.s.l3 == 4 end, haka._lua_dissectors.l3_payload)

return ipv4lua
