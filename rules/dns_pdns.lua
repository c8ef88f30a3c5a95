-- Passive DNS (Haka's sample/ruleset/dns/pdns.lua): for every A or AAAA record
-- in the answer section of a DNS response (matched with its query), raise a
-- low-severity alert "pdns: NAME -> IP" and log the same line. Nothing is
-- dropped.
--
-- Run:  hakapcap rules/dns_pdns.lua IN.pcap
--       haka -l 0-1 -a PCI0 -a PCI1 -- -r rules/dns_pdns.lua
local dns = require("protocol/dns") -- the dns dissector; UDP port 53 by default

haka.rule{
    name = "dns: passive dns",
    on = haka.dissectors.dns.events.response,
    eval = function (dns, response, query)
        for _, rr in ipairs(response.answer) do
            if rr.type == "A" or rr.type == "AAAA" then
                local line = string.format("pdns: %s -> %s", rr.owner or rr.name, tostring(rr.ip))
                haka.alert{
                    description = line,
                    severity = "low",
                    confidence = "high",
                    sources = haka.alert.address(dns.srcip),
                    targets = haka.alert.address(dns.dstip),
                }
                haka.log.info(line)
            end
        end
    end
}
