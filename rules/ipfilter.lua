-- IP blacklist filter (Haka's sample/filter/ipfilter.lua, extended to both
-- directions): drop every packet from or to a blacklisted address, with an alert.
local ipv4 = require("protocol/ipv4")

local blacklist = {
    ipv4.network("192.168.10.10/32"),
}

local function blacklisted(addr)
    for _, net in ipairs(blacklist) do
        if net:contains(addr) then
            return true
        end
    end
    return false
end

haka.rule{
    name = "ip blacklist",
    on = haka.dissectors.ipv4.events.receive_packet,
    eval = function (pkt)
        if blacklisted(pkt.src) or blacklisted(pkt.dst) then
            haka.alert{
                description = "packet from or to a blacklisted address",
                severity = 'medium',
                sources = haka.alert.address(pkt.src),
                targets = haka.alert.address(pkt.dst),
            }
            pkt:drop()
        end
    end
}
