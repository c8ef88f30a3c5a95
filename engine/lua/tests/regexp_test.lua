-- Project tests of the regexp module (require("regexp/pcre"), engine/src/lua/regexp.rs and
-- haka.lua), run as a rules file by engine/src/lua/tests.rs (`regexp_lua_tests`): any failure
-- is a load error naming the test.
local re = require("regexp/pcre").re

local function eq(a, b, what)
  if a ~= b then error(string.format("%s: expected %s, got %s", what or "value", tostring(b), tostring(a)), 2) end
end

local tests = {}

function tests.string_match_returns()
  local m, b, e = re:match("b(a+)r", "foo baar foo")
  eq(m, "baar", "match"); eq(b, 4, "begin"); eq(e, 8, "end")
  local n, nb, ne = re:match("zzz", "foo")
  eq(n, nil, "no match"); eq(nb, -1, "no begin"); eq(ne, -1, "no end")
  local rx = re:compile("%d+")
  eq(rx:match("ab 123 c"), "123", "compiled")
  eq(re:compile("%d+"), rx, "cached per pattern")
end

function tests.pcre_syntax()
  eq(re:match("(%w)%1", "abccd"), "cc", "backreference")
  eq(re:match("(?P<q>['\"]).*?(?P=q)", [[x 'a' "b"]]), "'a'", "named backreference, lazy")
  eq(re:match("foo(?=bar)", "foobaz foobar"), "foo", "lookahead")
  eq(select(2, re:match("foo(?=bar)", "foobaz foobar")), 7, "lookahead position")
  eq(select(2, re:match("(?<!x)foo", "xfoo foo")), 5, "negative lookbehind")
  eq(re:match("a%00b", "xa\0b"), "a\0b", "octal NUL")
  eq(re:match("%101%x42", "zAB"), "AB", "octal and hex escapes")
  eq(re:match("100%%", "it is 100%"), "100%", "%% is a literal %")
  eq(re:match("^b$", "a\nb\nc"), "b", "multiline by default")
  eq(re:match("a++b", "aab"), "aab", "possessive")
end

function tests.options()
  eq(re:match("camel case", "CaMeL CaSe"), nil, "case sensitive")
  eq(re:match("camel case", "CaMeL CaSe", re.CASE_INSENSITIVE), "CaMeL CaSe", "case insensitive")
  eq(re:match("a b  c # comment", "abc", re.EXTENDED), "abc", "extended")
  eq(re:match("A B", "xab", re.CASE_INSENSITIVE + re.EXTENDED), "ab", "both")
end

function tests.bad_pattern()
  local ok, err = pcall(function() return re:compile("?") end)
  eq(ok, false, "compile fails")
  eq(err, "PCRE compilation failed with error 'quantifier does not follow a repeatable item' at offset 0", "message")
  ok, err = pcall(function() return re:match("(ab", "ab") end)
  eq(ok, false, "match fails")
  eq(err:match("^PCRE compilation failed with error '.*' at offset 3$") ~= nil, true, "message: " .. err)
  eq(pcall(function() return re:compile(nil) end), false, "nil pattern")
end

function tests.vbuffer_and_sub()
  local b = haka.vbuffer_from("bar fo")
  b:append(haka.vbuffer_from("o bar"))
  local rx = re:compile("o+ b")
  local s = rx:match(b)
  eq(s:asstring(), "oo b", "match on a vbuffer gives a sub")
  s:setfixedstring("OO B")
  eq(b:sub():asstring(), "bar fOO Bar", "the sub is a view of the buffer")
  eq(rx:match(b:sub(7)), nil, "no match in a sub")
  eq(re:match("%s(B)", b:sub(2), 0):asstring(), " B", "module match on a sub")
end

function tests.iterator()
  local b = haka.vbuffer_from("<p>x</p>")
  b:append(haka.vbuffer_from("<p class=a>y</p>"))
  local it = b:pos("begin")
  local rx = re:compile("</?p( [^>]*)?>")
  local got = {}
  while true do
    local s = rx:match(it, true)
    if not s then break end
    got[#got + 1] = s:asstring()
  end
  eq(table.concat(got, ","), "<p>,</p>,<p class=a>,</p>", "subs")
  it = b:pos("begin")
  eq(rx:match(it), true, "boolean without createsub")
  eq(it:sub(1):asstring(), "x", "the iterator is after the match")
  eq(rx:match(it), true, "second")
  eq(re:match("zz", it, 0, true), nil, "no match")
  eq(it.iseof, true, "no match: the iterator is at the end")
end

function tests.blocking_iterator_over_chunks()
  local stream = haka.vbuffer_stream()
  local mgr = haka.vbuffer_stream_comanager:new(stream)
  local rx = re:compile("(%w+)=%1;")
  local got = {}
  mgr:start(0, function(iter)
    while true do
      local s = rx:match(iter, true)
      if not s then break end
      got[#got + 1] = s:asstring()
    end
  end)
  local data = { "x abc=a", "bc; yy=", "yy; z=q;", "" }
  for i, d in ipairs(data) do
    local cur = stream:push(haka.vbuffer_from(d))
    if i == #data then stream:finish() end
    mgr:process_all(cur)
    while stream:pop() do end
  end
  eq(table.concat(got, ","), "abc=abc;,yy=yy;", "matches spanning chunks")
end

function tests.sink_three_chunks()
  local rx = re:compile("foo%d+bar")
  local sink = rx:create_sink()
  local r = haka.regexp_result()
  eq(sink:feed("xx fo", false, r), false, "chunk 1")
  eq(sink:ispartial(), true, "partial after chunk 1")
  eq(r.first, 3, "first registered")
  eq(sink:feed("o12", false, r), false, "chunk 2")
  eq(sink:ispartial(), true, "still partial")
  eq(sink:feed("3bar tail", true, r), true, "chunk 3 matches")
  eq(sink:ispartial(), false, "not partial once matched")
  eq(r.first, 3, "first"); eq(r.last, 12, "last")
  eq(r.offset, 3, "offset"); eq(r.size, 9, "size")
  eq(sink:feed("more", true), true, "stays matched")
end

function tests.sink_partial_and_eof()
  local sink = re:compile("abc"):create_sink()
  eq(sink:feed("aaa", true), false, "no match")
  eq(sink:ispartial(), true, "a partial match at the end")
  sink = re:compile("abc"):create_sink()
  eq(sink:feed("aaax", false), false, "no match")
  eq(sink:ispartial(), false, "no partial")
  -- a match that could still grow waits for the next chunk (or the end)
  sink = re:compile("fo+"):create_sink()
  local r = haka.regexp_result()
  eq(sink:feed("a foo", false, r), false, "fo+ may grow")
  eq(sink:ispartial(), true, "partial")
  eq(sink:feed("o", true, r), true, "end of stream")
  eq(r.first, 2, "first"); eq(r.last, 6, "last")
  -- no match: result untouched
  r = haka.regexp_result()
  eq(re:compile("bar"):create_sink():feed("foo", true, r), false, "no match")
  eq(r.first, -1, "first unset"); eq(r.last, -1, "last unset")
end

function tests.sink_on_subs()
  local sink = re:compile("lo w"):create_sink()
  local a, b = haka.vbuffer_from("hello"), haka.vbuffer_from(" world")
  local m, mb, me = sink:feed(a:sub(), false)
  eq(m, false, "chunk 1"); eq(sink:ispartial(), true, "partial")
  eq(mb:sub(2):asstring(), "lo", "begin iterator in chunk 1"); eq(me, nil, "no end yet")
  m, mb, me = sink:feed(b:sub(), true)
  eq(m, true, "match"); eq(mb, nil, "begin was in chunk 1")
  eq(me:sub('all'):asstring(), "orld", "end iterator in chunk 2")
end

local names = {}
for k in pairs(tests) do names[#names + 1] = k end
table.sort(names)
for _, k in ipairs(names) do
  local ok, err = pcall(tests[k])
  if not ok then error("regexp test " .. k .. ": " .. tostring(err), 0) end
end
