-- spec/block_cache_spec.lua: the block cache (csrc/lua_alloc.c) recycles the
-- big blocks Lua frees; messages must come through whole whatever sizes
-- follow each other, it must hold no more than its limit, and give back
-- what it holds when unused or turned off.
local H = require "spec.helper"
local wsuv = require "wsuv"

local KiB, MiB = 1024, 1024 * 1024
local DEFAULT = 32 * MiB

-- A payload of n bytes that differs from every other one of the run.
local serial = 0
local function payload(n)
  serial = serial + 1
  local head = ("<%d:%d>"):format(serial, n)
  local body = (string.char(serial % 251) .. "wsuv"):rep(math.ceil(n / 5))
  return (head .. body):sub(1, n)
end

describe("block cache", function()
  local server, conn

  before_each(function()
    server = assert(wsuv.listen({ host = "127.0.0.1", port = 0, on_connect = H.echo,
      max_message = 8 * MiB }))
    conn = assert(wsuv.connect(("ws://127.0.0.1:%d/"):format(server.port),
      { max_message = 8 * MiB }))
  end)

  after_each(function()
    wsuv.block_cache(DEFAULT)
    conn:close()
    server:close(1)
    assert.are.same({ 0, 0 }, { H.live(wsuv) })
  end)

  -- Echoes messages of the given sizes; true when every one came back
  -- whole, else the index of the first that did not.
  local function echo_all(sizes)
    for i, n in ipairs(sizes) do
      -- (In a function of its own, so that neither string outlives it.)
      local whole = (function()
        local sent = payload(n)
        assert(conn:send(sent, "binary"))
        return conn:receive(10) == sent
      end)()
      if not whole then
        return i
      end
      collectgarbage() -- the big strings go to the cache now
    end
    return true
  end

  it("keeps big freed blocks, up to its limit, and messages stay whole", function()
    assert.are.same({ DEFAULT }, { (wsuv.block_cache()) })
    -- Same sizes, slightly smaller (a kept block shrunk to fit), much
    -- smaller (no fit), bigger, small, and back.
    local sizes = { MiB, MiB, MiB - 100, 900 * KiB, 700 * KiB, 2 * MiB, 200 * KiB, 64 * KiB, MiB,
      3 * MiB + 1 }
    assert.is_true(echo_all(sizes))
    local _, held = wsuv.block_cache()
    assert.is_true(held >= MiB, "held " .. held)
    assert.is_true(held <= DEFAULT, "held " .. held)
  end)

  -- Echoes count messages of #tail + 8 bytes, each a new string (a number,
  -- then tail), without a collection in between; after each, observe().
  local function echo_numbered(tail, count, observe)
    for i = 1, count do
      local sent = ("%08d%s"):format(i, tail)
      assert(conn:send(sent, "binary"))
      assert.is_true(conn:receive(10) == sent, "message " .. i)
      if observe then
        observe()
      end
    end
  end

  -- Lua 5.1 and LuaJIT pace their collector per allocation, not per byte:
  -- left alone, garbage 4 MiB messages piled up (43-60 MiB of heap here;
  -- 220-370 MB of a LuaJIT server's RSS in a 16 MiB echo). wsuv tells their
  -- collector of big messages (csrc/lua_conn.c, pace_collector), with the
  -- cache or without; Lua 5.2+ count bytes themselves.
  for _, limit in ipairs({ DEFAULT, 0 }) do
    it(("keeps garbage big messages from piling up in the Lua heap (cache limit %d)"):format(
      limit), function()
      wsuv.block_cache(limit)
      local tail = payload(4 * MiB):sub(9)
      collectgarbage()
      local base, peak = collectgarbage("count") * KiB, 0
      echo_numbered(tail, 40, function()
        peak = math.max(peak, collectgarbage("count") * KiB - base)
      end)
      assert.is_true(peak < 32 * MiB, ("the heap grew by %.1f MiB"):format(peak / MiB))
    end)
  end

  -- A host that runs the collector itself (a game engine, per frame) stops
  -- it; the collector steps above must not restart it. Plain Lua 5.1 cannot
  -- tell a stopped collector (README, "Limits").
  it("leaves a stopped collector stopped", function()
    if not pcall(collectgarbage, "isrunning") then
      pending("plain Lua 5.1 cannot tell a stopped collector")
      return
    end
    local tail = payload(2 * MiB):sub(9)
    collectgarbage()
    collectgarbage("stop")
    local ok, err = pcall(function()
      echo_numbered(tail, 6) -- 24 MiB of messages received: past PACE_BYTES
      assert.is_false(collectgarbage("isrunning"))
    end)
    collectgarbage("restart")
    assert(ok, err)
  end)

  it("stays under a smaller limit", function()
    wsuv.block_cache(3 * MiB)
    assert.is_true(echo_all({ MiB, MiB, MiB, MiB, 2 * MiB, MiB, MiB }))
    local limit, held = wsuv.block_cache()
    assert.are.equal(3 * MiB, limit)
    assert.is_true(held > 0 and held <= 3 * MiB, "held " .. held)
  end)

  it("keeps at most 64 blocks, however many fit under its limit", function()
    assert.is_true(echo_all({ MiB })) -- the first big message puts it in
    local function churn() -- 100 strings of 150 KiB and more, then garbage
      local t = {}
      for i = 1, 100 do
        t[i] = ("s"):rep(150 * KiB) .. i
      end
      return #t
    end
    churn()
    collectgarbage()
    local _, held = wsuv.block_cache()
    assert.is_true(held > 60 * 150 * KiB and held <= 64 * (150 * KiB + 256), "held " .. held)
  end)

  it("gives back what it holds once unused", function()
    assert.is_true(echo_all({ MiB, MiB, 2 * MiB }))
    local _, held = wsuv.block_cache()
    assert.is_true(held > 0, "held " .. held)
    -- Half goes back each 100 ms without a big allocation.
    assert.is_true(H.wait_until(wsuv, function()
      return select(2, wsuv.block_cache()) == 0
    end, 3))
  end)

  it("turned off, holds nothing and messages stay whole", function()
    assert.is_true(echo_all({ MiB, MiB }))
    assert.is_true(select(2, wsuv.block_cache()) > 0)
    assert.are.same({ 0, 0 }, { wsuv.block_cache(0) })
    assert.is_true(echo_all({ MiB, MiB, 2 * MiB, MiB }))
    assert.are.same({ 0, 0 }, { wsuv.block_cache() })
    -- On again: it comes back with the next big message.
    wsuv.block_cache(DEFAULT)
    assert.is_true(echo_all({ MiB, MiB }))
    assert.is_true(select(2, wsuv.block_cache()) > 0)
  end)

  it("refuses a limit that is not a number >= 0", function()
    assert.has_error(function()
      wsuv.block_cache(-1)
    end, "block_cache: limit must be a number >= 0")
    assert.has_error(function()
      wsuv.block_cache("1")
    end, "block_cache: limit must be a number >= 0")
    assert.has_error(function()
      wsuv.block_cache(0 / 0)
    end)
  end)
end)

describe("block cache at exit", function()
  it("leaves the Lua state's allocator as it found it when the state closes", function()
    -- A child fills the cache and closes its state (os.exit(0, true)): the
    -- cache gives its blocks back and steps aside before the state's last
    -- frees (make valgrind-lua checks the same under valgrind).
    local script = [[
      local wsuv = require "wsuv"
      -- (The echo in a function of its own: on LuaJIT and 5.1 the three
      -- strings are one, which a local of the handler would keep.)
      local function echo_once(c) c:send((c:receive())) end
      local s = assert(wsuv.listen({ port = 0, on_connect = function(c)
        echo_once(c); c:receive()
      end }))
      local c = assert(wsuv.connect("ws://127.0.0.1:" .. s.port))
      local big = ("b"):rep(1048576)
      assert(c:send(big)); assert(c:receive() == big)
      big = nil
      collectgarbage(); collectgarbage()
      local _, held = wsuv.block_cache()
      io.write("held ", held, "\n")
      c:close(); s:close(1)
      os.exit(0, true)
    ]]
    local file = H.tmpname()
    local f = assert(io.open(file, "w"))
    f:write(script)
    f:close()
    local rc, out = H.wait_job(wsuv, H.start_job(H.lua_interpreter() .. " " .. file), 20)
    H.remove(file)
    assert.are.equal(0, rc, out)
    local held = tonumber(out:match("held (%d+)"))
    assert.is_true(held and held >= 1048576, out)
  end)
end)

-- spec/host/sized_alloc.c: a Lua 5.4 state on a strict, bounded allocator of
-- the host's own, as an engine gives one (built here with cc, like
-- spec/states_spec.lua's host).
describe("block cache over a host's own allocator (spec/host/sized_alloc.c)", function()
  local core = "./.rocks/lib/lua/5.4/wsuv/core.so"
  if not (H.exists("/usr/include/lua5.4/lua.h") and H.exists(core)) then
    pending("needs liblua5.4-dev and the Lua 5.4 build of wsuv.core")
    return
  end

  local r, out = {}, ""
  lazy_setup(function()
    local exe = H.tmpname()
    local cmd = ("cc -std=c99 -Wall -Wextra -Werror -Icsrc/test $(pkg-config --cflags lua5.4) "
      .. "spec/host/sized_alloc.c $(pkg-config --libs lua5.4) -o %s 2>&1 "
      .. "&& timeout 60 %s %s %s 2>&1")
      :format(H.sh_quote(exe), H.sh_quote(exe), H.sh_quote("./lua/?.lua;./lua/?/init.lua"),
        H.sh_quote("./.rocks/lib/lua/5.4/?.so"))
    local p = assert(io.popen(cmd))
    out = p:read("*a")
    p:close()
    H.remove(exe)
    r = H.key_lines(out)
  end)

  it("tells the allocator every block's true size, and messages stay whole", function()
    assert.are.equal("10/10", r.whole, out)
    assert.are.equal("0", r.mismatches, out)
    assert.are.equal("1", r.wrapped, out)
  end)

  it("gives its blocks back when the allocator runs out, before Lua would fail", function()
    assert.is_true((tonumber(r.held) or 0) >= 8 * MiB, out)
    assert.is_true((tonumber(r.refusals) or 0) >= 1, out)
    assert.are.equal(tostring(10 * MiB), r.big, out)
  end)

  it("steps out of the allocator once unused, and comes back with a big message", function()
    assert.are.equal("true false true", r.wrapped_busy_idle_again, out)
  end)

  it("leaves no byte behind once the state is closed", function()
    assert.are.equal("0", r.live_after_close, out)
    assert.is_not_nil(out:find("\nOK\n", 1, true), out)
  end)
end)
