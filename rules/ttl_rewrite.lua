-- TTL rewrite: every IPv4 packet leaves with the same TTL, which hides the
-- hop count and the sender's OS defaults from the other side. The header
-- checksum is recomputed before transmission.
local ipv4 = require("protocol/ipv4")

local TTL = 33

haka.rule{
    name = "ttl rewrite",
    on = haka.dissectors.ipv4.events.receive_packet,
    eval = function (pkt)
        pkt.ttl = TTL
    end
}
