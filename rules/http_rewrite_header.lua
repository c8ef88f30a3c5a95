-- Hide the web server's identity: every HTTP response gets its Server header
-- rewritten to "haka" (added when absent) and a new header
-- "X-Inspected-By: haka". The stream is edited in place: the sequence numbers
-- of the server's later packets, and the acknowledgements the client sends
-- back, are shifted by the size change, so both ends keep a consistent stream.
--
-- Run:  hakapcap rules/http_rewrite_header.lua IN.pcap -o OUT.pcap
--       haka -l 0-1 -a PCI0 -a PCI1 -- -r rules/http_rewrite_header.lua
local http = require("protocol/http")

haka.rule{
    name = "http: rewrite response headers",
    on = haka.dissectors.http.events.response,
    eval = function (http, response)
        response.headers["Server"] = "haka"
        response.headers["X-Inspected-By"] = "haka"
    end
}
