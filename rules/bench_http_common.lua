-- HTTP policy as an operator would write it, in plain Haka 0.4 Lua, whose
-- rules match common traffic (scripts/bench.sh, case (i), on the capture of
-- `scripts/gen_http_pcap.py --irregular`): every request and response is
-- handed to Lua, the API rule reads a header on 15% of requests, and the
-- Server rule rewrites half of the responses (`Server: nginx`).
local http = require("protocol/http") -- registers haka.dissectors.http; port 80 by default
local re = require("regexp/pcre").re

-- 1. No admin pages from outside: reset the connection.
haka.rule{
    name = "common: /admin",
    on = haka.dissectors.http.events.request,
    eval = function (http, request)
        if request.uri:find("/admin", 1, true) then
            haka.alert{ description = "admin page", severity = "low" }
            http:reset()
        end
    end
}

-- 2. Known scanners by User-Agent: alert and drop the connection.
haka.rule{
    name = "common: scanner user-agent",
    on = haka.dissectors.http.events.request,
    eval = function (http, request)
        local ua = request.headers["User-Agent"]
        if ua and (ua:find("sqlmap", 1, true) or ua:find("Nikto", 1, true)) then
            haka.alert{ description = "scanner: " .. ua, severity = "medium" }
            http:drop()
        end
    end
}

-- 3. SQL injection in the URI, whatever encoding of the space: a regexp.
local sqli = re:compile("union(%s|%%20|%+)+select", re.CASE_INSENSITIVE)
haka.rule{
    name = "common: union select",
    on = haka.dissectors.http.events.request,
    eval = function (http, request)
        if sqli:match(request.uri) then
            haka.alert{ description = "sqli in uri", severity = "high" }
        end
    end
}

-- 4. The API needs a session: log API calls without a cookie.
haka.rule{
    name = "common: api without cookie",
    on = haka.dissectors.http.events.request,
    eval = function (http, request)
        if request.uri:find("/api/", 1, true) and not request.headers["Cookie"] then
            haka.log.info("api call without a session cookie")
        end
    end
}

-- 5. The nginx fleet (half the responses): add a security header.
haka.rule{
    name = "common: nginx responses",
    on = haka.dissectors.http.events.response,
    eval = function (http, response)
        if response.headers["Server"] == "nginx" then
            response.headers["X-Content-Type-Options"] = "nosniff"
        end
    end
}

-- 6. Log server errors (status may be a string, as in Haka, or a number).
haka.rule{
    name = "common: 500",
    on = haka.dissectors.http.events.response,
    eval = function (http, response)
        if tonumber(response.status) == 500 then
            haka.log.warning("server error")
        end
    end
}
