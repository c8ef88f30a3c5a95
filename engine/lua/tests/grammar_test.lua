-- Project tests of the grammar DSL (engine/lua/grammar.lua), run as a rules file by
-- engine/src/lua/tests.rs (`grammar_lua_tests`): any failure is a load error.
local class = require('class')

local function eq(a, b, what)
  if a ~= b then error(string.format("%s: expected %s, got %s", what or "value", tostring(b), tostring(a)), 2) end
end
local function fails(pattern, f, ...)
  local ok, err = pcall(f, ...)
  if ok then error("expected an error matching '" .. pattern .. "'", 2) end
  if not tostring(err):find(pattern, 1, true) then
    error(string.format("expected error '%s', got '%s'", pattern, tostring(err)), 2)
  end
end
local function hex(s) return (s:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)) end
local function buf(s) return haka.vbuffer_from(s) end

-- runs f(iter) in a comanager over a stream fed with `chunks` (Haka's blocking iterators)
local function streamed(chunks, f)
  local stream = haka.vbuffer_stream()
  local cm = haka.vbuffer_stream_comanager:new(stream)
  cm:start(0, f)
  for i, d in ipairs(chunks) do
    local cur = stream:push(haka.vbuffer_from(d))
    if i == #chunks then stream:finish() end
    cm:process_all(cur)
  end
end

local tests = {}

function tests.numbers_endianness_bits_and_write_back()
  local g = haka.grammar.new("num", function()
    elem = record{
      field('a', number(8)),
      field('b', number(16)),
      field('c', number(16, 'little')),
      field('d', number(4)),
      field('e', number(12)),
      field('f', number(24)),
      field('g', number(1)),
      field('h', number(7)),
    }
    export(elem)
  end)
  local b = buf(hex("01" .. "0203" .. "0405" .. "abcd" .. "010203" .. "ff"))
  local r, err = g.elem:parse(b:pos('begin'))
  eq(err, nil, "no error")
  eq(r.a, 1, "a"); eq(r.b, 0x0203, "b big endian"); eq(r.c, 0x0504, "c little endian")
  eq(r.d, 0xa, "d 4 bits"); eq(r.e, 0xbcd, "e 12 bits"); eq(r.f, 0x010203, "f 24 bits")
  eq(r.g, 1, "g"); eq(r.h, 0x7f, "h")
  -- fields write the data
  r.b = 0xbeef
  r.d = 0x5
  r.h = 0
  eq(b:sub(1, 2):asstring(), hex("beef"), "b written")
  eq(b:sub(5, 1):asstring(), hex("5b"), "d written, e kept")
  eq(r.e, 0xbcd, "e unchanged")
  eq(b:sub(10, 1):asstring(), hex("80"), "h written, g kept")
  fails("does not fit", function() r.a = 256 end)
end

-- number fields keep where their data is (chunk and offset, not an iterator each): reads and
-- writes follow the data when edits split or move the chunk before them
function tests.number_fields_follow_edits_of_their_buffer()
  local g = haka.grammar.new("numedit", function()
    elem = record{ field('a', number(16)), field('s', bytes():count(2)), field('b', number(16)), field('c', number(8)) }
    export(elem)
  end)
  local b = buf(hex("0102" .. "aaaa" .. "0304" .. "05"))
  local r, err = g.elem:parse(b:pos('begin'))
  eq(err, nil, "no error")
  -- bytes inserted at the start and before the bytes field (its chunk split)
  b:pos('begin'):insert(haka.vbuffer_from("xy"))
  r.s:insert(haka.vbuffer_from("pq"))
  eq(r.a, 0x0102, "a"); eq(r.b, 0x0304, "b after the edits"); eq(r.c, 5, "c")
  r.b = 0x0a0b
  r.c = 0x0c
  eq(b:sub(0):asstring(), "xy" .. hex("0102") .. "pq" .. hex("aaaa0a0b0c"), "written where the data went")
  -- a number whose bytes span two chunks
  local two = haka.vbuffer_from(hex("01"))
  two:append(haka.vbuffer_from(hex("02" .. "aaaa" .. "0304" .. "05")))
  r = g.elem:parse(two:pos('begin'))
  eq(r.a, 0x0102, "a over two chunks")
  r.a = 0x0908
  eq(two:sub(0, 2):asstring(), hex("0908"), "written over two chunks")
end

-- a bytes field of a message parsed off a stream is made when first read: the same sub at
-- every read, over the field's bytes where edits made before that read moved them; written,
-- the field holds the value given (the buffer is not changed by the assignment)
function tests.bytes_fields_are_made_on_first_read()
  local g = haka.grammar.new("lazybytes", function()
    elem = record{ field('a', number(8)), field('s', bytes():count(3)), field('b', number(8)) }
    export(elem)
  end)
  local b = buf(hex("01" .. "616263" .. "02"))
  local r, err = g.elem:parse(b:pos('begin'))
  eq(err, nil, "no error")
  b:pos('begin'):insert(haka.vbuffer_from("xy"))
  local s = r.s
  eq(s:asstring(), "abc", "the field's bytes after an edit before them")
  eq(r.s, s, "the same sub at every read")
  s:setfixedstring("ABC")
  eq(b:sub(0):asstring(), "xy" .. hex("01") .. "ABC" .. hex("02"), "written through the sub")
  eq(r.b, 2, "the next field")
  r.s = "other"
  eq(r.s, "other", "assigned: the value given")
  eq(b:sub(0):asstring(), "xy" .. hex("01") .. "ABC" .. hex("02"), "the buffer unchanged by the assignment")
  -- bytes over two chunks
  local two = haka.vbuffer_from(hex("0161"))
  two:append(haka.vbuffer_from(hex("626302")))
  r = g.elem:parse(two:pos('begin'))
  eq(r.s:asstring(), "abc", "over two chunks")
  eq(r.b, 2, "after them")
  -- an empty field, and one never read while the buffer is edited after it
  local g0 = haka.grammar.new("lazybytes0", function()
    elem = record{ field('n', number(8)), field('s', bytes():count(function(res) return res.n end)), field('b', number(8)) }
    export(elem)
  end)
  r = g0.elem:parse(buf(hex("00" .. "07")):pos('begin'))
  eq(r.s:asstring(), "", "empty")
  eq(r.b, 7, "after the empty field")
  local b2 = buf(hex("02" .. "6162" .. "07"))
  r = g0.elem:parse(b2:pos('begin'))
  b2:pos('end'):insert(haka.vbuffer_from("z"))
  eq(r.s:asstring(), "ab", "read after an edit past it")
end

function tests.not_enough_data_is_a_parse_error()
  local g = haka.grammar.new("short", function()
    elem = record{ field('a', number(8)), field('b', number(32)) }
    export(elem)
  end)
  local r, err = g.elem:parse(buf("\1\2"):pos('begin'))
  eq(class.classof(err).name, "ParseError", "a ParseError")
  eq(tostring(err), "parse error at byte 1 for field 'b' in elem: not enough data", "message")
  eq(err.rule, "elem", "rule")
  eq(err.description, "not enough data", "description")
  eq(err.iterator.meter, 1, "position")
  eq("x " .. err, "x " .. tostring(err), "concatenation")
  eq(r.a, 1, "what was parsed is kept")
end

function tests.flag_and_converters()
  local g = haka.grammar.new("conv", function()
    elem = record{
      field('f1', flag), field('f2', flag), field('pad', number(6)),
      field('len', number(8):convert(haka.grammar.converter.mult(4))),
      field('n', token('[0-9]+'):convert(haka.grammar.converter.tonumber("%d", 10))),
      token(' '),
      field('t', bytes():count(3):convert(haka.grammar.converter.string, true)),
    }
    export(elem)
  end)
  local b = buf(hex("80") .. "\5" .. "123 abc")
  local r, err = g.elem:parse(b:pos('begin'))
  eq(err, nil, "no error")
  eq(r.f1, true, "flag set"); eq(r.f2, false, "flag clear")
  eq(r.len, 20, "mult")
  eq(r.n, 123, "tonumber")
  eq(r.t, "abc", "string converter")
  r.f2 = true
  eq(b:sub(0, 1):asstring(), hex("c0"), "flag written")
  r.len = 32
  eq(b:sub(1, 1):asstring(), "\8", "mult written")
  fails("multiple of 4", function() r.len = 7 end)
  r.n = 456
  eq(b:sub(2, 3):asstring(), "456", "tonumber written")
  r.t = "xyz"
  eq(b:sub(6):asstring(), "xyz", "text written")
  eq(r.t, "xyz", "memoized value dropped on write")
end

function tests.tokens_raw_tokens_and_their_errors()
  local g = haka.grammar.new("tok", function()
    elem = record{
      field('word', token('[a-z]+')),
      token(' +'),
      field('raw', raw_token('[0-9]+')),
      token('\r?\n'),
    }
    export(elem)
  end)
  local b = buf("hello  42\r\n")
  local r, err = g.elem:parse(b:pos('begin'))
  eq(err, nil, "no error")
  eq(r.word, "hello", "token")
  eq(r.raw:asstring(), "42", "raw token is a sub")
  r.word = "bye"
  eq(b:sub():asstring(), "bye  42\r\n", "token written (size changes)")
  fails("token value 'BYE' does not verify /[a-z]+/", function() r.word = "BYE" end)
  local _, e2 = g.elem:parse(buf("hello x\n"):pos('begin'))
  eq(tostring(e2), "parse error at byte 6 for field 'raw' in elem: token /[0-9]+/ doesn't match", "no match")
  -- a token matches at the iterator only (not later in the data)
  local _, e3 = g.elem:parse(buf("\nhello 1\n"):pos('begin'))
  eq(e3.description, "token /[a-z]+/ doesn't match", "anchored")
  -- a long token (bigger than the first window)
  local long = string.rep("a", 3000)
  local r4, e4 = g.elem:parse(buf(long .. " 7\n"):pos('begin'))
  eq(e4, nil, "long token")
  eq(#r4.word, 3000, "long token length")
end

function tests.bytes_count_until_chunked()
  local g = haka.grammar.new("bytes", function()
    elem = record{
      field('len', number(8)),
      field('data', bytes():count(function(self) return self.len end)),
      field('head', bytes():untiltoken('\r\n\r\n')),
      token('\r\n\r\n'),
      field('rest', bytes()),
    }
    neg = record{ field('data', bytes():count(function() return -1 end)) }
    export(elem, neg)
  end)
  local r, err = g.elem:parse(buf("\3abcA: b\r\nC: d\r\n\r\nbody"):pos('begin'))
  eq(err, nil, "no error")
  eq(r.data:asstring(), "abc", "count")
  eq(r.head:asstring(), "A: b\r\nC: d", "untiltoken")
  eq(r.rest:asstring(), "body", "rest")
  local _, e2 = g.elem:parse(buf("\9ab"):pos('begin'))
  eq(e2.description, "not enough data", "count beyond the data")
  local _, e3 = g.neg:parse(buf("x"):pos('begin'))
  eq(e3.description, "byte count must not be negative, got -1", "negative count")
  -- chunked, on a stream cut anywhere
  local parts = {}
  local c = haka.grammar.new("chunks", function()
    elem = record{
      bytes():untiltoken('END'):chunked(function(res, sub, last) if sub then parts[#parts + 1] = sub:asstring() end end),
      token('END'),
      field('tail', bytes()),
    }
    export(elem)
  end)
  local res
  streamed({ "ab", "cE", "N", "Dxy" }, function(iter) res = c.elem:parse(iter) end)
  eq(table.concat(parts), "abc", "chunks before the token")
  eq(res.tail:asstring(), "xy", "after the token")
end

function tests.records_named_extra_apply_const()
  local applied = {}
  local g = haka.grammar.new("rec", function()
    inner = record{ field('x', number(8)), field('y', number(8)) }
      :extra{ sum = function(self) return self.x + self.y end }
      :apply(function(value, parent) applied[#applied + 1] = value.x end)
    elem = record{
      field('in', inner),
      field('magic', number(8)):const(0x2a),
      field('v', number(8)):const(function(res) return res['in'].x end),
    }
    export(elem)
  end)
  local r, err = g.elem:parse(buf("\1\2\42\1"):pos('begin'))
  eq(err, nil, "no error")
  eq(r['in'].x, 1, "nested record"); eq(r['in'].sum, 3, "extra field")
  eq(applied[1], 1, "apply ran")
  local _, e2 = g.elem:parse(buf("\1\2\43\1"):pos('begin'))
  eq(e2.description, "incorrect value, expected '42' got '43'", "const")
  local _, e3 = g.elem:parse(buf("\1\2\42\2"):pos('begin'))
  eq(e3.description, "incorrect value, expected '1' got '2'", "const function")
end

function tests.sequence_union_try_branch_optional()
  local g = haka.grammar.new("ctl", function()
    kind = record{
      field('type', number(8)),
      branch({
        [1] = field('small', number(8)),
        [2] = field('big', number(16)),
        [3] = empty(),
      }, function(self) return self.type end),
    }
    tolerant = record{
      field('type', number(8)),
      branch({ [1] = field('small', number(8)), default = 'continue' }, function(self) return self.type end),
      branch({ [1] = field('small2', number(8)), default = field('other', number(8)) }, function(self) return self.type end),
    }
    opt = record{
      field('has', flag), number(7),
      optional(field('val', number(8)), function(self) return self.has end),
    }
    alt = try{
      record{ token('GET '), field('get', token('[^ ]+')) },
      record{ token('PUT '), field('put', token('[^ ]+')) },
    }
    seq = sequence{ token('a'), token('b') }
    un = record{ union{ field('w', number(16)), field('hi', number(8)) }, field('next', number(8)) }
    export(kind, tolerant, opt, alt, seq, un)
  end)
  local r = g.kind:parse(buf("\2\1\2"):pos('begin'))
  eq(r.big, 0x0102, "branch case")
  local _, e = g.kind:parse(buf("\9\1"):pos('begin'))
  eq(e.description, "invalid case", "no case, no default")
  r = g.kind:parse(buf("\3"):pos('begin'))
  eq(r.type, 3, "empty case")
  r = g.tolerant:parse(buf("\7\5"):pos('begin'))
  eq(r.small, nil, "continue"); eq(r.other, 5, "default entity")
  r = g.opt:parse(buf("\128\9"):pos('begin'))
  eq(r.val, 9, "optional present")
  r = g.opt:parse(buf("\0"):pos('begin'))
  eq(r.val, nil, "optional absent")
  r = g.alt:parse(buf("PUT /x"):pos('begin'))
  eq(r.put, "/x", "second try case"); eq(r.get, nil, "failed case left nothing")
  local _, e2 = g.alt:parse(buf("DEL /x"):pos('begin'))
  eq(e2.description, "cannot find a successful try case", "no case")
  local _, e3 = g.seq:parse(buf("ab"):pos('begin'))
  eq(e3, nil, "sequence")
  r = g.un:parse(buf("\1\2\3"):pos('begin'))
  eq(r.w, 0x0102, "union long"); eq(r.hi, 1, "union short"); eq(r.next, 3, "after the longest")
end

function tests.arrays_count_until_while_create_remove_append()
  local g = haka.grammar.new("arr", function()
    item = record{ field('v', number(8)) }
    counted = record{
      field('n', number(8)),
      field('items', array(item):count(function(self) return self.n end)
        :creation(function(entity, init)
          local vb = haka.vbuffer_allocate(1)
          return vb, entity:create(vb:pos('begin'), init)
        end)),
      field('tail', bytes()),
    }
    untilz = record{ field('items', array(item):untilcond(function(elem) return elem and elem.v == 0 end)) }
    whilesmall = record{ field('items', array(item):whilecond(function(elem) return elem == nil or elem.v < 10 end)) }
    export(counted, untilz, whilesmall)
  end)
  local b = buf("\3\10\20\30XY")
  local r, err = g.counted:parse(b:pos('begin'))
  eq(err, nil, "no error")
  eq(#r.items, 3, "count"); eq(r.items[2].v, 20, "element")
  r.items:remove(r.items[2])
  r.items:append({ v = 99 })
  eq(b:sub():asstring(), "\3\10\30\99XY", "removed and appended in the data")
  eq(#r.items, 3, "array updated")
  r = g.untilz:parse(buf("\1\2\0\5"):pos('begin'))
  eq(#r.items, 3, "untilcond")
  r = g.whilesmall:parse(buf("\1\2\11\5"):pos('begin'))
  eq(#r.items, 3, "whilecond (the element that fails the test is parsed)")
end

function tests.create_from_init()
  local g = haka.grammar.new("create", function()
    hdr = record{
      field('a', number(8)),
      field('b', number(4)), field('c', number(12)),
      field('d', number(16)):validate(function(self) self.d = self.a * 2 end),
    }
    export(hdr)
  end)
  local vb = haka.vbuffer_allocate(5)
  local r = g.hdr:create(vb:pos('begin'), { a = 7, b = 1, c = 0x234 })
  eq(vb:sub():asstring(), hex("07123400") .. "\0", "init written")
  eq(r.d, 14, "validated on read")
  eq(vb:sub(3, 2):asstring(), hex("000e"), "validator wrote the data")
  r.a = 8
  r.d = nil
  r:validate()
  eq(vb:sub(3, 2):asstring(), hex("0010"), "validate() runs the pending validators")
end

function tests.align_padding_execute_verify_fail()
  local seen
  local g = haka.grammar.new("misc", function()
    elem = record{
      field('a', number(3)),
      align(8),
      field('b', number(8)),
      padding{ size = 16 },
      field('c', number(8)),
      execute(function(self, ctx) seen = ctx:result(1).c; eq(ctx:lookahead(), 0x44, "lookahead") end),
      verify(function(self) return self.c == 0x33 end, "c must be 0x33"),
    }
    bad = record{ number(8), fail("never valid") }
    export(elem, bad)
  end)
  local r, err = g.elem:parse(buf("\255\17\0\0\51\68"):pos('begin'))
  eq(err, nil, "no error")
  eq(r.a, 7, "a"); eq(r.b, 17, "aligned"); eq(r.c, 0x33, "padding")
  eq(seen, 0x33, "execute")
  local _, e2 = g.elem:parse(buf("\255\17\0\0\52\68"):pos('begin'))
  eq(e2.description, "c must be 0x33", "verify")
  local _, e3 = g.bad:parse(buf("\1"):pos('begin'))
  eq(tostring(e3), "parse error at byte 1 for field 2 in bad: never valid", "fail")
end

function tests.recursion_and_its_limit()
  local g = haka.grammar.new("tree", function()
    define("node")
    node = record{
      field('n', number(8)),
      field('kids', array(node):count(function(self) return self.n end)),
    }
    export(node)
  end)
  local r, err = g.node:parse(buf("\2\1\0\0"):pos('begin'))
  eq(err, nil, "no error")
  eq(r.kids[1].kids[1].n, 0, "nested")
  fails("grammar max recursion reached", function() g.node:parse(buf(string.rep("\1", 40)):pos('begin')) end)
end

function tests.definition_errors()
  fails("'record' is reserved in the grammar scope", function()
    haka.grammar.new("x", function() record = number(8) end)
  end)
  fails("can only export named rules", function()
    haka.grammar.new("x", function() export(number(8)) end)
  end)
  fails("undefined entity: nothing", function()
    haka.grammar.new("x", function() define("nothing"); a = record{ nothing }; export(a) end)
  end)
  local g = haka.grammar.new("x", function() a = number(8); export(a) end)
  fails("unknown grammar public rule 'b'", function() return g.b end)
  fails("bytes can't have both count and untiltoken", function() haka.grammar.bytes():count(1):untiltoken("x") end)
  -- the definition leaves the global environment as it was
  eq(rawget(_G, 'a'), nil, "no global left")
  eq(getmetatable(_G), nil, "no metatable left")
end

function tests.streams_block_until_data_comes()
  local g = haka.grammar.new("stream", function()
    msg = record{
      field('len', number(16)),
      field('body', bytes():count(function(self) return self.len end)),
      field('word', token('[a-z]+')),
      token(';'),
    }
    export(msg)
  end)
  local res, err
  streamed({ "\0", "\5he", "llo", "wor", "ld", ";" }, function(iter) res, err = g.msg:parse(iter) end)
  eq(err, nil, "no error")
  eq(res.len, 5, "number across chunks")
  eq(res.body:asstring(), "hello", "bytes across chunks")
  eq(res.word, "world", "token across chunks")
  -- the stream ends before the message: a parse error
  streamed({ "\0\9ab" }, function(iter) res, err = g.msg:parse(iter) end)
  eq(err and err.description, "not enough data", "cut message")
end

function tests.records_retain_stream_data_sequences_do_not()
  local g = haka.grammar.new("retain", function()
    r = record{ token('first'), token('second') }
    s = sequence{ token('first'), token('second') }
    export(r, s)
  end)
  for _, name in ipairs({ 'r', 's' }) do
    local stream = haka.vbuffer_stream()
    local cm = haka.vbuffer_stream_comanager:new(stream)
    cm:start(0, function(iter) g[name]:parse(iter) end)
    cm:process_all(stream:push(haka.vbuffer_from("first")))
    local popped = stream:pop()
    if name == 'r' then eq(popped, nil, "record retains") else eq(popped:sub():asstring(), "first", "sequence releases") end
  end
end

-- malformed input: random data through a grammar without callbacks gives results or parse
-- errors, never a Lua error
function tests.random_input_never_raises()
  local g = haka.grammar.new("fuzz", function()
    opt = record{ field('kind', number(8)), field('len', number(8)),
      field('data', bytes():count(function(self) return self.len end)) }
    msg = record{
      field('version', number(4)), field('ihl', number(4)),
      field('n', number(8)),
      field('opts', array(opt):count(function(self) return self.n % 4 end)),
      branch({ [0] = field('a', token('[a-z]+')), [1] = field('b', number(32)) },
        function(self) return self.version % 3 end),
      try{ token('X'), field('tail', bytes()) },
    }
    export(msg)
  end)
  local seed = 12345
  local function rnd(n) seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n end
  for _ = 1, 500 do
    local t = {}
    for i = 1, rnd(24) do t[i] = string.char(rnd(256)) end
    local ok, r, err = pcall(g.msg.parse, g.msg, buf(table.concat(t)):pos('begin'))
    if not ok then error("Lua error on random input: " .. tostring(r)) end
    if err ~= nil then eq(class.classof(err).name, "ParseError", "only parse errors") end
  end
end

function tests.inheritance_overrides_rules()
  local base = haka.grammar.new("base", function()
    word = token('[a-z]+')
    line = record{ field('w', word), token('\n') }
    export(line)
  end)
  local derived = haka.grammar.new("derived", function()
    extend(base)
    word = token('[0-9]+')
  end)
  eq(base.line:parse(buf("abc\n"):pos('begin')).w, "abc", "base")
  eq(derived.line:parse(buf("123\n"):pos('begin')).w, "123", "overridden")
  local _, e = derived.line:parse(buf("abc\n"):pos('begin'))
  eq(e ~= nil, true, "the base rule is gone")
end

local names = {}
for k in pairs(tests) do names[#names + 1] = k end
table.sort(names)
for _, k in ipairs(names) do
  local ok, err = pcall(tests[k])
  if not ok then error("grammar test " .. k .. ": " .. tostring(err), 0) end
end
