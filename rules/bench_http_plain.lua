-- HTTP benchmark policy in plain Haka 0.4 Lua (scripts/bench.sh, case (f)):
-- the five rules of rules/bench_http.lua (case (e)) without its prefilters
-- and with the header rewrite in Lua, so that every request and response is
-- handed to Lua. Over the sessions of scripts/gen_http_pcap.py (some URIs
-- hold "/admin" or an encoded "union select", some clients are sqlmap or
-- Nikto, some responses are 500s).
local http = require("protocol/http") -- registers haka.dissectors.http; port 80 by default

-- 1. No admin pages from outside: reset the connection.
haka.rule{
    name = "bench: /admin",
    on = haka.dissectors.http.events.request,
    eval = function (http, request)
        if request.uri:find("/admin", 1, true) then
            http:reset()
        end
    end
}

-- 2. Known attack tool: alert and drop the connection.
haka.rule{
    name = "bench: sqlmap user-agent",
    on = haka.dissectors.http.events.request,
    eval = function (http, request)
        local ua = request.headers["User-Agent"]
        if ua and ua:find("sqlmap", 1, true) then
            haka.alert{ description = "sqlmap", severity = "medium" }
            http:drop()
        end
    end
}

-- 3. SQL injection keyword in the URI, after undoing the usual encodings of
--    the space ("%20", "+"): alert only.
haka.rule{
    name = "bench: union select",
    on = haka.dissectors.http.events.request,
    eval = function (http, request)
        local uri = request.uri:lower():gsub("%%20", " "):gsub("%+", " ")
        if uri:find("union select", 1, true) then
            haka.alert{ description = "sqli", severity = "high" }
        end
    end
}

-- 4. Hide the server's identity: rewrite a response header.
haka.rule{
    name = "bench: Server header",
    on = haka.dissectors.http.events.response,
    eval = function (http, response)
        response.headers["Server"] = "haka"
    end
}

-- 5. Log server errors (status may be a string, as in Haka, or a number).
haka.rule{
    name = "bench: 500",
    on = haka.dissectors.http.events.response,
    eval = function (http, response)
        if tonumber(response.status) == 500 then
            haka.log.warning("server error")
        end
    end
}
