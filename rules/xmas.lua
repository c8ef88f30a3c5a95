-- Xmas-scan detection (Haka's sample/ruleset/tcp/security.lua): a TCP segment
-- with FIN, PSH and URG set is a stealth scan probe: alert and drop it.
local tcp = require("protocol/tcp")

haka.rule{
    name = "xmas scan",
    on = haka.dissectors.tcp.events.receive_packet,
    eval = function (pkt)
        local flags = pkt.flags
        if flags.fin and flags.psh and flags.urg then
            haka.alert{
                description = "Xmas attack detected",
                severity = 'high',
                confidence = 'medium',
                method = {
                    description = "TCP segment with FIN, PSH and URG set (Xmas scan)",
                    ref = { "cve/1999-0124" },
                },
                sources = haka.alert.address(pkt.ip.src),
                targets = {
                    haka.alert.address(pkt.ip.dst),
                    haka.alert.service(string.format("tcp/%d", pkt.dstport)),
                },
            }
            pkt:drop()
        end
    end
}
