-- TCP port filter (Haka's sample/filter/tcpfilter.lua, without its deliberate
-- typo): only TCP traffic to or from the allowed ports passes.
local tcp = require("protocol/tcp")

local allowed = { [80] = true, [22] = true }

haka.rule{
    name = "tcp port filter",
    on = haka.dissectors.tcp.events.receive_packet,
    eval = function (pkt)
        if not (allowed[pkt.dstport] or allowed[pkt.srcport]) then
            haka.log.info("filtering tcp %s:%d -> %s:%d", tostring(pkt.ip.src), pkt.srcport,
                tostring(pkt.ip.dst), pkt.dstport)
            pkt:drop()
        end
    end
}
