-- rules/bench_http_common.lua written as this engine runs it fastest (scripts/bench.sh,
-- case (i), second line): the same six rules, each with the substring its match needs
-- (`prefilter`, README: Rules, prefilters and set_headers), checked by the engine on the
-- head as received before any Lua runs; a message that selects no Lua rule is not handed
-- to Lua. The evals are those of the plain file: same alerts, logs and packets out.
local http = require("protocol/http") -- registers haka.dissectors.http; port 80 by default
local re = require("regexp/pcre").re

-- 1. No admin pages from outside: reset the connection.
haka.rule{
    name = "common: /admin",
    on = haka.dissectors.http.events.request,
    prefilter = { uri = "/admin" },
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
    prefilter = { headers = { ["User-Agent"] = { "sqlmap", "Nikto" } } },
    eval = function (http, request)
        local ua = request.headers["User-Agent"]
        if ua and (ua:find("sqlmap", 1, true) or ua:find("Nikto", 1, true)) then
            haka.alert{ description = "scanner: " .. ua, severity = "medium" }
            http:drop()
        end
    end
}

-- 3. SQL injection in the URI, whatever encoding of the space: a regexp. Its match
--    holds "union" as sent.
local sqli = re:compile("union(%s|%%20|%+)+select", re.CASE_INSENSITIVE)
haka.rule{
    name = "common: union select",
    on = haka.dissectors.http.events.request,
    prefilter = { uri = "union" },
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
    prefilter = { uri = "/api/" },
    eval = function (http, request)
        if request.uri:find("/api/", 1, true) and not request.headers["Cookie"] then
            haka.log.info("api call without a session cookie")
        end
    end
}

-- 5. The nginx fleet (half the responses): add a security header. The prefilter also
--    lets `nginx/1.22.1` through: the eval keeps the exact match (a `set_headers` would
--    add the header to those too).
haka.rule{
    name = "common: nginx responses",
    on = haka.dissectors.http.events.response,
    prefilter = { headers = { Server = "nginx" } },
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
    prefilter = { status = "500" },
    eval = function (http, response)
        if tonumber(response.status) == 500 then
            haka.log.warning("server error")
        end
    end
}
