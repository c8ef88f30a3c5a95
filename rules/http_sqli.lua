-- SQL-injection detection by keyword scoring (Haka's sample/sqli,
-- sqli-fine-grained.lua): every query argument of the URI (request.split_uri.args: as
-- written, nil without a query) and every cookie (request.split_cookies) is decoded
-- (uri arguments first %-decoded with + as space; then lower case, SQL comments /*...*/ removed, null bytes dropped, white space
-- collapsed), then scored: each SQL keyword, function or comment marker found
-- adds its weight. A value scoring at or above the threshold raises an alert
-- with the score and the connection is dropped (http:drop(): this request and
-- every later packet of the connection are dropped).
--
-- Run:  hakapcap rules/http_sqli.lua IN.pcap -o OUT.pcap
--       haka -l 0-1 -a PCI0 -a PCI1 -- -r rules/http_sqli.lua
local http = require("protocol/http")

local threshold = 8

-- { pattern (Lua pattern, matched on the decoded value), weight }
local patterns = {
    -- keywords
    { "select", 4 }, { "union", 4 }, { "insert", 4 }, { "update", 4 }, { "delete", 4 },
    { "drop", 4 }, { "from", 2 }, { "where", 2 }, { "table", 2 }, { "exec", 4 },
    { "sleep%s*%(", 4 }, { "benchmark%s*%(", 4 },
    -- functions
    { "ascii%s*%(", 4 }, { "char%s*%(", 4 }, { "concat%s*%(", 4 }, { "substring%s*%(", 4 },
    { "length%s*%(", 2 },
    -- comments, quotes, tautologies
    { "%-%-", 4 }, { "#", 2 }, { "/%*", 4 }, { "'", 2 }, { ";", 2 },
    { "or%s+1%s*=%s*1", 6 }, { "'%s*or%s*'", 6 },
}

-- A query argument's value as the server sees it (split_uri.args are as written).
local function unescape(v)
    v = v:gsub("+", " ")
    return (v:gsub("%%(%x%x)", function (h) return string.char(tonumber(h, 16)) end))
end

-- Haka's httpdecode.lua helpers, applied in order.
local function decode(v)
    v = v:lower()
    v = v:gsub("%z", "")                -- null bytes
    v = v:gsub("/%*.-%*/", "")          -- inline comments: un/**/ion -> union
    v = v:gsub("%%(%x%x)", function (h) return string.char(tonumber(h, 16)) end) -- double encoding
    v = v:gsub("%s+", " ")              -- white space
    return v
end

local function score(v)
    local s, hits = 0, {}
    for _, p in ipairs(patterns) do
        if v:find(p[1]) then
            s = s + p[2]
            hits[#hits + 1] = p[1]
        end
    end
    return s, hits
end

haka.rule{
    name = "http: sql injection",
    on = haka.dissectors.http.events.request,
    eval = function (http, request)
        local where = {
            { "uri argument", request.split_uri.args or {}, unescape },
            { "cookie", request.split_cookies, tostring },
        }
        for _, w in ipairs(where) do
            for name, value in pairs(w[2]) do
                local s = score(decode(w[3](tostring(value))))
                if s >= threshold then
                    haka.alert{
                        description = string.format("http: sqli in %s '%s' (score %d)", w[1], tostring(name), s),
                        severity = "high",
                        confidence = s >= 2 * threshold and "high" or "medium",
                        method = { description = "SQL keywords in a request parameter", ref = { "cwe/89" } },
                        sources = haka.alert.address(http.srcip),
                        targets = haka.alert.service(string.format("tcp/%d", http.dstport)),
                    }
                    http:drop()
                    return
                end
            end
        end
    end
}
