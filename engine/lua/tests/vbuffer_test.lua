-- Project tests of the buffer module (engine/lua/vbuffer.lua), run as a rules file by
-- engine/src/lua/tests.rs (`vbuffer_lua_tests`): any failure is a load error.
local ffi = require("ffi")
local VB = require("haka/vbuffer")

local function eq(a, b, what)
  if a ~= b then error(string.format("%s: expected %s, got %s", what or "value", tostring(b), tostring(a)), 2) end
end
local function fails(msg, f, ...)
  local ok, err = pcall(f, ...)
  if ok then error("expected error '" .. msg .. "'", 2) end
  if err ~= msg then error(string.format("expected error '%s', got '%s'", msg, tostring(err)), 2) end
end

local tests = {}

function tests.basics()
  local b = haka.vbuffer_from("hello world")
  eq(#b, 11, "size")
  eq(b[1], 104, "b[1]")
  eq(b.modified, false, "fresh buffer not modified")
  b[1] = 72
  eq(b:sub(0, 5):asstring(), "Hello", "setbyte")
  eq(b.modified, true, "modified after setbyte")
  local z = haka.vbuffer_allocate(4)
  eq(z:sub():asstring(), "\0\0\0\0", "allocate zeroes")
  fails("index out of range", function() return b[12] end)
  eq(b:sub(6):asstring(), "world", "sub to the end")
  eq(b:sub(6, 3):sub(1, 'all'):asstring(), "or", "sub of sub")
  eq(b:sub(0, 5):pos('end'):sub('all'):asstring(), " world", "sub:pos end")
  eq(#b:sub(3, 100), 8, "sub capped at the end")
end

function tests.erase_insert_replace()
  local b = haka.vbuffer_from("0123456789")
  b:sub(2, 3):erase()
  eq(b:sub():asstring(), "0156789", "erase")
  eq(b.modified, true, "modified after erase")
  local it = b:pos(2)
  local ins = it:insert(haka.vbuffer_from("ab"))
  eq(b:sub():asstring(), "01ab56789", "insert")
  eq(ins:asstring(), "ab", "insert returns the inserted sub")
  eq(it:sub(2):asstring(), "56", "iterator after the insertion")
  local s = b:sub(4, 3)
  s:replace(haka.vbuffer_from("XYZW"))
  eq(b:sub():asstring(), "01abXYZW89", "replace")
  eq(s:asstring(), "XYZW", "the sub covers the replacement")
  s:setstring("-")
  eq(b:sub():asstring(), "01ab-89", "setstring")
  b:sub(0, 2):setfixedstring("xyz")
  eq(b:sub():asstring(), "xyab-89", "setfixedstring keeps the size")
  local tail = haka.vbuffer_from("!")
  b:append(tail)
  eq(b:sub():asstring(), "xyab-89!", "append")
  eq(#tail, 0, "appended buffer emptied")
  b:sub(1, 3):zero()
  eq(b:sub():asstring(), "x\0\0\0-89!", "zero")
  -- flatten makes one chunk, same bytes
  local s2 = b:sub()
  eq(s2:isflat(), false, "many chunks")
  s2:flatten()
  eq(s2:isflat(), true, "flat")
  eq(b:sub():asstring(), "x\0\0\0-89!", "flatten keeps the bytes")
  -- clone shares or copies
  local c1, c2 = b:clone(), b:clone(true)
  b[1] = 65
  eq(c1[1], 65, "shared clone sees writes")
  eq(c2[1], 120, "copied clone does not")
  fails("circular buffer insertion", function() b:pos(1):insert(b) end)
  fails("circular buffer insertion", function() b:append(b) end)
  fails("circular buffer insertion", function() b:sub(0, 1):replace(b) end)
end

function tests.iterators()
  local b = haka.vbuffer_from("abcdef")
  local it = b:pos('begin')
  eq(it:available(), 6, "available")
  eq(it:advance(2), 2, "advance")
  eq(it.meter, 2, "meter")
  eq(select(2, it:check_available(10)), 4, "check_available short")
  eq(it:check_available(3), true, "check_available ok")
  local c = it:copy()
  eq(it:sub(3):asstring(), "cde", "iterator sub")
  eq(c:sub('available'):asstring(), "cdef", "sub available")
  eq(c:sub('available'), nil, "nothing more available")
  eq(c.iseof, true, "eof at the end of a buffer")
  local n = 0
  for s in b:pos(1):foreach_available() do n = n + #s end
  eq(n, 5, "foreach_available")
  -- a split keeps iterators past the cut valid
  local far = b:pos(4)
  b:pos(1):insert(haka.vbuffer_from("++"))
  eq(far:sub(2):asstring(), "ef", "iterator after a split")
  -- marks and select/restore
  local m = b:pos(3)
  m:mark()
  eq(m:sub(1):asstring(), "b", "read through a mark")
  fails("iterator is not a mark", function() b:pos(0):unmark() end)
  local ref, sel = b:sub(1, 2):select()
  eq(sel:sub():asstring(), "++", "selected")
  eq(b:sub():asstring(), "abcdef", "selected data left the buffer")
  sel:sub(0, 1):setstring("*")
  ref:restore(sel)
  eq(b:sub():asstring(), "a*+bcdef", "restored")
  fails("invalid restore iterator", function() b:pos(0):restore(haka.vbuffer_from("x")) end)
end

function tests.invalidation()
  local b = haka.vbuffer_from("toto")
  local pos = b:pos(0)
  pos:advance(2)
  b:sub(1, 3):erase()
  fails("invalid buffer iterator", function() pos:advance(1) end)
  local b2 = haka.vbuffer_from("abcdef")
  local keep = b2:pos(5)
  b2:sub(1, 2):erase()
  eq(keep:sub(1):asstring(), "f", "iterator after an erased range stays valid")
end

function tests.numbers_and_bits()
  local b = haka.vbuffer_from("\1\2\3\4\255\254\0\0\0\0\0\0\0\1")
  eq(b:sub(0, 1):asnumber(), 1, "u8")
  eq(b:sub(0, 2):asnumber(), 0x0102, "be16")
  eq(b:sub(0, 2):asnumber('little'), 0x0201, "le16")
  eq(b:sub(0, 4):asnumber('big'), 0x01020304, "be32")
  eq(b:sub(0, 4):asnumber('little'), 0x04030201, "le32")
  eq(b:sub(4, 2):asnumber('big'), 0xfffe, "be16 unsigned")
  eq(b:sub(4, 2):asnumber("little"), -257, "le16 signed (Haka)")
  eq(b:sub(6, 8):asnumber(), 1, "be64")
  fails("asnumber: unsupported size 3", function() b:sub(0, 3):asnumber() end)
  fails("asnumber: unsupported size 10", function() b:sub(0, 10):asnumber() end)
  local s = b:sub(0, 4)
  s:setnumber(0xdeadbeef)
  eq(s:asnumber(), 0xdeadbeef, "setnumber be")
  eq(b[1], 0xde, "setnumber be layout")
  s:setnumber(0x11223344, 'little')
  eq(b[1], 0x44, "setnumber le layout")
  b:sub(0, 2):setnumber(-1)
  eq(b:sub(0, 2):asnumber(), 0xffff, "setnumber negative")
  fails("setnumber: invalid number, value does not fit in 1 bytes", function() b:sub(0, 1):setnumber(256) end)
  -- numbers across chunks
  local x = haka.vbuffer_from("\18")
  x:append(haka.vbuffer_from("\52"))
  eq(x:sub():asnumber(), 0x1234, "number across two chunks")
  x:sub():setnumber(0xabcd)
  eq(x[1] * 256 + x[2], 0xabcd, "setnumber across two chunks")
  -- bits: big endian counts from the most significant bit
  local f = haka.vbuffer_from("\69\0") -- 0100 0101
  eq(f:sub():asbits(0, 4), 4, "version nibble")
  eq(f:sub():asbits(4, 4), 5, "ihl nibble")
  eq(f:sub():asbits(0, 4, 'little'), 5, "little endian: low bits first")
  eq(f:sub():asbits(4, 8), 0x50, "bits across bytes")
  f:sub():setbits(4, 4, 6)
  eq(f[1], 0x46, "setbits big")
  f:sub():setbits(0, 4, 9, 'little')
  eq(f[1], 0x49, "setbits little")
  f:sub():setbits(4, 8, 0xab)
  eq(f[1] * 256 + f[2], 0x4ab0, "setbits across bytes")
  fails("asbits: invalid bit offset", function() haka.vbuffer_allocate(0):sub():asbits(8, 6) end)
  fails("asbits: invalid bit size", function() haka.vbuffer_allocate(2):sub():asbits(12, 24) end)
  fails("setbits: unsupported size 2000", function() haka.vbuffer_allocate(8):sub():setbits(12, 2000, 2000) end)
  fails("setbits: invalid number, value does not fit in 4 bits", function() f:sub():setbits(0, 4, 16) end)
end

function tests.streams_blocking()
  local stream = haka.vbuffer_stream()
  local mgr = haka.vbuffer_stream_comanager:new(stream)
  local got = {}
  mgr:start("a", function(iter)
    while true do
      local s = iter:sub(6)
      if not s then break end
      got[#got + 1] = s:asstring()
    end
  end)
  local lines = 0
  mgr:start("b", function(iter)
    eq(iter:check_available(9), true, "check_available blocks until 9 bytes")
    lines = lines + 1
    iter:advance('all')
    lines = lines + 1
  end)
  for _, piece in ipairs({ "abc", "defgh", "ijklmnop" }) do
    local cur = stream:push(haka.vbuffer_from(piece))
    mgr:process_all(cur)
  end
  eq(#got, 2, "two full subs before the end")
  eq(got[2], "ghijkl", "sub over three pushes")
  eq(lines, 1, "b waits for the end")
  eq(mgr:has_pending(), true, "coroutines still waiting")
  stream:finish()
  mgr:process_all()
  eq(got[3], "mnop", "the rest at the end of the stream")
  eq(lines, 2, "b done")
  eq(mgr:has_pending(), false, "all done")
  fails("stream marked as finished", function() stream:push(haka.vbuffer_from("x")) end)
  -- pop returns the pushed data in order
  eq(stream:pop():sub():asstring(), "abc", "pop 1")
  eq(stream:pop():sub():asstring(), "defgh", "pop 2")
  eq(stream:pop():sub():asstring(), "ijklmnop", "pop 3")
  eq(stream:pop(), nil, "nothing left")
  -- outside a comanager coroutine, iterators do not block
  local s2 = haka.vbuffer_stream()
  local it = s2:push(haka.vbuffer_from("xy"))
  eq(it:advance(5), 2, "non-blocking advance")
  eq(it.iseof, false, "stream not finished")
  s2:push(haka.vbuffer_from("z"))
  eq(it:sub('available'):asstring(), "z", "an iterator at the end reads later pushes")
  -- a read/write mark holds pop back
  local m = s2.data:pos(1)
  m:mark()
  eq(s2:pop(), nil, "mark blocks pop")
  m:unmark()
  eq(s2:pop():sub():asstring(), "xy", "pop after unmark")
  -- an error in a coroutine comes out of process
  local s3 = haka.vbuffer_stream()
  local m3 = haka.vbuffer_stream_comanager:new(s3)
  m3:start(1, function(iter) iter:advance(1); error("boom", 0) end)
  local ok, err = pcall(m3.process, m3, 1, s3:push(haka.vbuffer_from("q")))
  eq(ok, false, "error raised"); eq(err, "boom", "error message")
end

function tests.sub_stream()
  local pkt1 = haka.vbuffer_from("HDR1payload-one")
  local pkt2 = haka.vbuffer_from("HDR2payload-two")
  local ss = haka.vbuffer_sub_stream()
  ss:push(pkt1:sub(4))
  ss:push(pkt2:sub(4))
  eq(ss.data:sub():asstring(), "payload-onepayload-two", "sub stream data")
  eq(pkt1:sub():asstring(), "HDR1", "selected out of the packet")
  ss.data:sub(0, 7):setfixedstring("PAYLOAD")
  local s = ss:pop()
  eq(s:asstring(), "PAYLOAD-one", "popped sub")
  eq(pkt1:sub():asstring(), "HDR1PAYLOAD-one", "restored with the edit")
  eq(pkt1.modified, true, "packet modified")
  ss:pop()
  eq(pkt2:sub():asstring(), "HDR2payload-two", "second packet restored")
end

function tests.external()
  local mem = ffi.new("uint8_t[8]")
  ffi.copy(mem, "ABCDEFGH", 8)
  local b, tok = VB.external(mem, 8, true)
  eq(b:sub():asstring(), "ABCDEFGH", "external view reads")
  eq(b.modified, false, "not modified")
  b:sub(0, 2):setfixedstring("ab")
  eq(ffi.string(mem, 8), "abCDEFGH", "in-place write reaches the memory")
  eq(b.modified, true, "modified")
  eq(VB.inplace(b, mem, 8), true, "same layout: nothing to copy back")
  b:pos(4):insert(haka.vbuffer_from("__"))
  eq(VB.inplace(b, mem, 8), false, "layout changed")
  local out = ffi.new("uint8_t[16]")
  eq(VB.copy_to(b, out, 16), 10, "copy_to size")
  eq(ffi.string(out, 10), "abCD__EFGH", "copy_to bytes")
  eq(VB.copy_to(b, out, 4), nil, "copy_to refuses a small buffer")
  -- read-only view
  local r = VB.external(mem, 8, false)
  fails("read only buffer", function() r[1] = 0 end)
  fails("read only buffer", function() r:sub(0, 1):erase() end)
  -- a view kept in a stream outlives the memory with external_end(tok, 'copy')
  local st = haka.vbuffer_stream()
  local b2, tok2 = VB.external(mem, 4, true)
  local it = st:push(b2)
  VB.external_end(tok2, "copy")
  ffi.fill(mem, 8, 0)
  eq(it:sub(4):asstring(), "abCD", "copied out before the memory went away")
  -- 'drop' invalidates
  local b3, tok3 = VB.external(mem, 4, true)
  local it3 = b3:pos(1)
  VB.external_end(tok3, "drop")
  fails("invalid buffer iterator", function() it3:advance(1) end)
  VB.external_end(tok, "drop")
end

function tests.odd_arguments()
  local b = haka.vbuffer_from("abcdef")
  eq(b:sub(-3):asstring(), "", "negative offset: to the end (Haka's size_t)")
  eq(b:sub(1, -2):asstring(), "bcdef", "negative size: all")
  eq(b:sub(1.7, 2.2):asstring(), "bc", "fractions truncated")
  fails("invalid index", function() return b[0] end)
  fails("missing data parameter", function() b:append("x") end)
  fails("unknown buffer position: middle", function() b:pos("middle") end)
  fails("unknown sub buffer mode: some", function() b:pos(0):sub("some") end)
  local other = haka.vbuffer_from("zz")
  fails("invalid buffer end", function() haka.vbuffer_sub(b:pos(2), other:pos(1)):asstring() end)
  fails("invalid buffer end", function() haka.vbuffer_sub(b:pos(4), b:pos(2)):erase() end)
  eq(b:sub():asstring(), "abcdef", "nothing erased by a refused erase")
end

local names = {}
for k in pairs(tests) do names[#names + 1] = k end
table.sort(names)
for _, k in ipairs(names) do
  local ok, err = pcall(tests[k])
  if not ok then error("vbuffer test " .. k .. ": " .. tostring(err), 0) end
end
