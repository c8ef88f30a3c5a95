-- Lab rules (tests/lab_http_ips.sh): HTTP on the lab server's port 8080, reset
-- requests whose URI contains "forbidden", rewrite response headers.
local http = require("protocol/http")
haka.policy{ on = haka.dissectors.tcp_connection.policies.next_dissector, name = "http on 8080",
  port = 8080, action = http.install }
haka.rule{ on = http.events.request, eval = function(h, request)
  if request.uri:find("forbidden", 1, true) then
    haka.alert{ description = "forbidden uri " .. request.uri, severity = "medium" }
    h:reset()
  end
end }
haka.rule{ on = http.events.response, eval = function(h, response)
  response.headers["Server"] = "haka-ips"
  response.headers["X-Inspected-By"] = "haka"
end }
