-- spec/codec_spec.lua: the pure codec functions of wsuv.core against the
-- examples of RFC 6455 (1.3 accept key, 5.7 frames, 7.4 close codes).
local H = require "spec.helper"
local wsuv = require "wsuv"
local core = wsuv.core

local function hex(s)
  return (s:gsub(".", function(c)
    return ("%02x "):format(c:byte())
  end):gsub(" $", ""))
end

local function unhex(s)
  return (s:gsub("%s", ""):gsub("%x%x", function(h)
    return string.char(tonumber(h, 16))
  end))
end

describe("wsuv.core codec", function()
  after_each(function()
    assert.are.same({ 0, 0 }, { H.live(wsuv) })
  end)

  describe("accept_key", function()
    it("matches RFC 6455 1.3", function()
      assert.are.equal("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
        core.accept_key("dGhlIHNhbXBsZSBub25jZQ=="))
    end)
    it("differs for a different key", function()
      local k = core.accept_key("AQIDBAUGBwgJCgsMDQ4PEA==")
      assert.are.equal(28, #k)
      assert.are_not.equal("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", k)
    end)
  end)

  describe("encode_frame (RFC 6455 5.7)", function()
    it("encodes an unmasked text frame", function()
      assert.are.equal("81 05 48 65 6c 6c 6f", hex(core.encode_frame("text", "Hello")))
    end)
    it("encodes a masked text frame", function()
      local f = core.encode_frame("text", "Hello", { mask = unhex("37fa213d") })
      assert.are.equal("81 85 37 fa 21 3d 7f 9f 4d 51 58", hex(f))
    end)
    it("encodes fragments (fin=false, continuation)", function()
      assert.are.equal("01 03 48 65 6c", hex(core.encode_frame("text", "Hel", { fin = false })))
      assert.are.equal("80 02 6c 6f", hex(core.encode_frame("continuation", "lo")))
    end)
    it("encodes an unmasked ping and its pong", function()
      assert.are.equal("89 05 48 65 6c 6c 6f", hex(core.encode_frame("ping", "Hello")))
      assert.are.equal("8a 05 48 65 6c 6c 6f", hex(core.encode_frame(10, "Hello")))
    end)
    it("uses a 16-bit length for 256 bytes", function()
      local f = core.encode_frame("binary", ("x"):rep(256))
      assert.are.equal("82 7e 01 00", hex(f:sub(1, 4)))
      assert.are.equal(4 + 256, #f)
    end)
    it("uses a 64-bit length for 65536 bytes", function()
      local f = core.encode_frame("binary", ("y"):rep(65536))
      assert.are.equal("82 7f 00 00 00 00 00 01 00 00", hex(f:sub(1, 10)))
      assert.are.equal(10 + 65536, #f)
    end)
    it("uses the 7-bit and 16-bit boundaries exactly", function()
      assert.are.equal("82 7d", hex(core.encode_frame("binary", ("a"):rep(125)):sub(1, 2)))
      assert.are.equal("82 7e 00 7e", hex(core.encode_frame("binary", ("a"):rep(126)):sub(1, 4)))
      assert.are.equal("82 7e ff ff", hex(core.encode_frame("binary", ("a"):rep(65535)):sub(1, 4)))
    end)
    it("sets rsv bits", function()
      assert.are.equal("c1 00", hex(core.encode_frame("text", "", { rsv = 4 })))
    end)
    it("a random mask sets the mask bit and differs between frames", function()
      local a = core.encode_frame("binary", ("z"):rep(32), { mask = true })
      local b = core.encode_frame("binary", ("z"):rep(32), { mask = true })
      assert.are.equal(0x80, a:byte(2) - a:byte(2) % 0x80)
      assert.are.equal(2 + 4 + 32, #a)
      assert.are_not.equal(a, b)
    end)
  end)

  describe("decode_frame", function()
    it("decodes the unmasked example", function()
      local f = core.decode_frame(unhex("810548656c6c6f"))
      assert.is_true(f.fin)
      assert.are.equal(1, f.opcode)
      assert.are.equal(0, f.rsv)
      assert.is_false(f.masked)
      assert.are.equal(5, f.length)
      assert.are.equal(2, f.header_length)
      assert.are.equal("Hello", f.payload)
    end)
    it("decodes and unmasks the masked example", function()
      local f = core.decode_frame(unhex("818537fa213d7f9f4d5158"))
      assert.is_true(f.masked)
      assert.are.equal(unhex("37fa213d"), f.mask)
      assert.are.equal(6, f.header_length)
      assert.are.equal("Hello", f.payload)
    end)
    it("decodes a fragment start", function()
      local f = core.decode_frame(unhex("010348656c"))
      assert.is_false(f.fin)
      assert.are.equal(1, f.opcode)
      assert.are.equal("Hel", f.payload)
    end)
    it("round-trips 256 and 65536 byte binary frames", function()
      for _, n in ipairs({ 0, 1, 125, 126, 256, 65535, 65536 }) do
        local data = core.random(math.min(n, 4096)):rep(math.ceil(n / 4096) + 1):sub(1, n)
        for _, opts in ipairs({ {}, { mask = true } }) do
          local f = core.decode_frame(core.encode_frame("binary", data, opts))
          assert.are.equal(2, f.opcode)
          assert.are.equal(n, f.length)
          assert.are.equal(data, f.payload)
          assert.are.equal(opts.mask == true, f.masked)
        end
      end
    end)
    it("returns nil for an incomplete header", function()
      assert.is_nil(core.decode_frame(""))
      assert.is_nil(core.decode_frame(unhex("81")))
      assert.is_nil(core.decode_frame(unhex("827e01")))
      assert.is_nil(core.decode_frame(unhex("8285")))
    end)
    it("reports the header but no payload while it is incomplete", function()
      local f = core.decode_frame(unhex("827e0100") .. ("x"):rep(10))
      assert.are.equal(256, f.length)
      assert.are.equal(4, f.header_length)
      assert.is_nil(f.payload)
    end)
  end)

  describe("mask", function()
    local key = unhex("37fa213d")
    it("matches the RFC example", function()
      assert.are.equal(unhex("7f9f4d5158"), core.mask("Hello", key))
    end)
    it("is its own inverse", function()
      local data = core.random(1000)
      assert.are_not.equal(data, core.mask(data, key))
      assert.are.equal(data, core.mask(core.mask(data, key), key))
    end)
    it("continues at an offset", function()
      local data = core.random(103)
      local whole = core.mask(data, key)
      for split = 0, 9 do
        local joined = core.mask(data:sub(1, split), key)
          .. core.mask(data:sub(split + 1), key, split)
        assert.are.equal(whole, joined)
      end
      -- Offset 4 is the same as offset 0.
      assert.are.equal(core.mask("abcdef", key), core.mask("abcdef", key, 4))
      assert.are_not.equal(core.mask("abcdef", key), core.mask("abcdef", key, 1))
    end)
    it("handles the empty string and rejects a bad key", function()
      assert.are.equal("", core.mask("", key))
      assert.has_error(function()
        core.mask("abc", "xyz")
      end)
    end)
  end)

  describe("utf8_valid", function()
    local valid = {
      "", "Hello", "κόσμε", "\194\128", "\223\191", "\224\160\128", "\239\191\191",
      "\240\144\128\128", "\244\143\191\191", "\237\159\191", "\238\128\128",
      "a\0b", ("é"):rep(1000),
    }
    local invalid = {
      "\128", "\191", "\192\128", "\193\191", "\224\128\128", "\240\128\128\128",
      "\237\160\128", "\237\191\191", "\244\144\128\128", "\245\128\128\128",
      "\255", "\254", "\194", "\226\130", "\240\144\128", "κόσμε\237\160\128edited",
      "\206\186\225\189\185\207\131\206\188\206\181\237\160\128\101\100\105\116\101\100",
      ("é"):rep(1000) .. "\195",
    }
    it("accepts valid UTF-8", function()
      for _, s in ipairs(valid) do
        assert.is_true(core.utf8_valid(s), hex(s))
      end
    end)
    it("rejects invalid UTF-8 (overlong, surrogates, > U+10FFFF, truncated)", function()
      for _, s in ipairs(invalid) do
        assert.is_false(core.utf8_valid(s), hex(s))
      end
    end)
  end)

  describe("close payloads", function()
    it("parse_close reads code and reason", function()
      local code, reason = core.parse_close("\003\232bye")
      assert.are.equal(1000, code)
      assert.are.equal("bye", reason)
      code, reason = core.parse_close("\015\160")
      assert.are.equal(4000, code)
      assert.are.equal("", reason)
    end)
    it("parse_close reads an empty payload as 1005", function()
      assert.are.equal(1005, (core.parse_close("")))
    end)
    it("parse_close fails on a 1-byte payload", function()
      local ok, msg, code = core.parse_close("\003")
      assert.is_nil(ok)
      assert.are.equal("string", type(msg))
      assert.are.equal("string", type(code))
    end)
    it("parse_close fails on codes not allowed on the wire", function()
      for _, c in ipairs({ 0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535 }) do
        local payload = string.char(math.floor(c / 256), c % 256)
        assert.is_nil((core.parse_close(payload)), tostring(c))
      end
    end)
    it("parse_close fails on an invalid UTF-8 reason and an oversized payload", function()
      assert.is_nil((core.parse_close("\003\232\255")))
      assert.is_nil((core.parse_close("\003\232" .. ("a"):rep(124))))
      assert.are.equal(1000, (core.parse_close("\003\232" .. ("a"):rep(123))))
    end)
    it("build_close builds code and reason", function()
      assert.are.equal("\003\232bye", core.build_close(1000, "bye"))
      assert.are.equal("\015\160", core.build_close(4000))
      assert.are.equal("", core.build_close(1005))
    end)
    it("build_close round-trips through parse_close", function()
      for _, c in ipairs({ 1000, 1001, 1002, 1003, 1007, 1011, 3000, 4999 }) do
        local code, reason = core.parse_close(core.build_close(c, "r" .. c))
        assert.are.equal(c, code)
        assert.are.equal("r" .. c, reason)
      end
    end)
    it("build_close refuses invalid codes and reasons", function()
      for _, c in ipairs({ 999, 1004, 1006, 1015, 2000, 5000 }) do
        local ok, msg = core.build_close(c, "x")
        assert.is_nil(ok, tostring(c))
        assert.are.equal("string", type(msg))
      end
      assert.is_nil((core.build_close(1000, ("a"):rep(124))))
      assert.are.equal(125, #core.build_close(1000, ("a"):rep(123)))
      assert.is_nil((core.build_close(1000, "\255")))
      assert.is_nil((core.build_close(1005, "reason without a code")))
    end)
  end)

  describe("close_code_valid", function()
    local cases = {
      [0] = false, [999] = false, [1000] = true, [1001] = true, [1002] = true,
      [1003] = true, [1004] = false, [1005] = false, [1006] = false,
      [1007] = true, [1008] = true, [1009] = true, [1010] = true, [1011] = true,
      [1012] = true, [1013] = true, [1014] = true, [1015] = false, [1016] = false,
      [2000] = false, [2999] = false, [3000] = true, [3999] = true,
      [4000] = true, [4999] = true, [5000] = false, [65535] = false,
    }
    it("follows RFC 6455 7.4 and the IANA registry", function()
      for code, want in pairs(cases) do
        assert.are.equal(want, core.close_code_valid(code), tostring(code))
      end
    end)
  end)

  describe("random", function()
    it("returns the requested number of bytes", function()
      assert.are.equal(16, #core.random(16))
      assert.are.equal(0, #core.random(0))
      assert.are.equal(4096, #core.random(4096))
    end)
    it("two draws differ", function()
      assert.are_not.equal(core.random(16), core.random(16))
    end)
    it("rejects out-of-range sizes", function()
      assert.has_error(function()
        core.random(-1)
      end)
      assert.has_error(function()
        core.random(4097)
      end)
    end)
  end)

  describe("stats", function()
    it("counts connections and servers", function()
      local s = core.stats()
      assert.are.equal("number", type(s.connections))
      assert.are.equal("number", type(s.servers))
      local server = assert(wsuv.listen { port = 0 })
      assert.are.equal(s.servers + 1, core.stats().servers)
      server:close()
    end)
  end)
end)
