-- HTTP benchmark policy (scripts/bench.sh, case (e)): five HTTP rules of the
-- kinds a web-facing IPS runs, over the sessions of scripts/gen_http_pcap.py
-- (some URIs hold "/admin" or an encoded "union select", some clients are
-- sqlmap or Nikto, some responses are 500s). Haka 0.4 API, written as this
-- engine runs it fastest (README, Rules: prefilters and set_headers): each
-- detection rule names a substring its match needs (`prefilter`), checked on
-- the head before any Lua runs, and the header rewrite is done by the engine
-- (`set_headers`). A message that selects no Lua rule is not handed to Lua.
-- The same rules in plain Lua: rules/bench_http_plain.lua (case (f)).
local http = require("protocol/http") -- registers haka.dissectors.http; port 80 by default

-- 1. No admin pages from outside: reset the connection.
haka.rule{
    name = "bench: /admin",
    on = haka.dissectors.http.events.request,
    prefilter = { uri = "/admin" },
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
    prefilter = { headers = { ["User-Agent"] = "sqlmap" } },
    eval = function (http, request)
        local ua = request.headers["User-Agent"]
        if ua and ua:find("sqlmap", 1, true) then
            haka.alert{ description = "sqlmap", severity = "medium" }
            http:drop()
        end
    end
}

-- 3. SQL injection keyword in the URI, after undoing the usual encodings of
--    the space ("%20", "+"): alert only. "union" must be in the URI as sent
--    for the decoded one to hold "union select": the prefilter loses nothing.
haka.rule{
    name = "bench: union select",
    on = haka.dissectors.http.events.request,
    prefilter = { uri = "union" },
    eval = function (http, request)
        local uri = request.uri:lower():gsub("%%20", " "):gsub("%+", " ")
        if uri:find("union select", 1, true) then
            haka.alert{ description = "sqli", severity = "high" }
        end
    end
}

-- 4. Hide the server's identity: rewrite a response header (set by the engine).
haka.rule{
    name = "bench: Server header",
    on = haka.dissectors.http.events.response,
    set_headers = { Server = "haka" },
}

-- 5. Log server errors (status may be a string, as in Haka, or a number).
haka.rule{
    name = "bench: 500",
    on = haka.dissectors.http.events.response,
    prefilter = { status = "500" },
    eval = function (http, response)
        if tonumber(response.status) == 500 then
            haka.log.warning("server error")
        end
    end
}
