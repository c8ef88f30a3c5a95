-- Forbidden URIs: an HTTP request whose URI contains one of the keywords below
-- raises an alert and the connection is reset (RST forged toward both ends).
-- Tested by tests/stateful.rs (sample_http_uri_block_resets_forbidden_uris); meant
-- for the lab too: curl gets a reset for /forbidden while other pages still load.
--
-- Run:  hakapcap rules/http_uri_block.lua IN.pcap -o OUT.pcap
--       haka -l 0-1 -a PCI0 -a PCI1 -- -r rules/http_uri_block.lua
local http = require("protocol/http")

local keywords = { "/forbidden", "/admin", "/etc/passwd" }

haka.rule{
    name = "http: forbidden uri",
    on = haka.dissectors.http.events.request,
    eval = function (http, request)
        for _, k in ipairs(keywords) do
            if request.uri:find(k, 1, true) then
                haka.alert{
                    description = string.format("http: forbidden uri %s", request.uri),
                    severity = "medium",
                    sources = haka.alert.address(http.srcip),
                    targets = haka.alert.service(string.format("tcp/%d", http.dstport)),
                }
                http:reset()
                return
            end
        end
    end
}
