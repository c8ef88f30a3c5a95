-- Land-attack detection (Haka's sample/ruleset/ipv4/security.lua): a packet
-- whose source and destination addresses are equal crashes old stacks.
local ipv4 = require("protocol/ipv4")

haka.rule{
    name = "land attack",
    on = haka.dissectors.ipv4.events.receive_packet,
    eval = function (pkt)
        if pkt.src == pkt.dst then
            haka.alert{
                description = "Land attack detected",
                severity = 'high',
                confidence = 'medium',
                method = {
                    description = "IPv4 packet with the same source and destination address",
                    ref = { "cve/1999-0016" },
                },
                sources = haka.alert.address(pkt.src),
                targets = haka.alert.address(pkt.dst),
            }
            pkt:drop()
        end
    end
}
