-- Block web scanners by User-Agent (Haka's sample/ruleset/http/security.lua
-- "web-scanner" rule): an HTTP request whose User-Agent contains one of the
-- names below raises an alert and the connection is reset (RST forged toward
-- the client and the server; the request never reaches the server).
--
-- Run:  hakapcap rules/http_block_ua.lua IN.pcap -o OUT.pcap
--       haka -l 0-1 -a PCI0 -a PCI1 -- -r rules/http_block_ua.lua
local http = require("protocol/http") -- the http dissector; port 80 by default

-- Substrings looked for in the User-Agent, case-insensitively.
local scanners = { "sqlmap", "nikto", "w3af", "nessus", "dirbuster", "masscan", "zgrab" }

haka.rule{
    name = "http: scanner user-agent",
    on = haka.dissectors.http.events.request,
    eval = function (http, request)
        local ua = request.headers["User-Agent"]
        if not ua then return end
        local lower = ua:lower()
        for _, name in ipairs(scanners) do
            if lower:find(name, 1, true) then
                haka.alert{
                    description = string.format("http: scanner user-agent '%s' (%s)", ua, name),
                    severity = "medium",
                    confidence = "high",
                    method = { description = "known web scanner identified by its User-Agent" },
                    sources = haka.alert.address(http.srcip),
                    targets = {
                        haka.alert.address(http.dstip),
                        haka.alert.service(string.format("tcp/%d", http.dstport)),
                    },
                }
                http:reset()
                return
            end
        end
    end
}
