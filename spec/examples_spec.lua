-- spec/examples_spec.lua: the examples the README points to, run as a user
-- runs them, against examples/echo_server.lua in a child process:
-- examples/client.lua from the command line, examples/rooms_server.lua with
-- three clients in two rooms, examples/c_client.c (the core
-- alone, from C; compiled here into a temporary file), and examples/love in
-- LÖVE 11 itself (Debian's love, LuaJIT inside), headless, driven by LÖVE's
-- own loop through spec/peers/love_harness. (The REPL is in wsuv_spec.lua.)
local H = require "spec.helper"
local wsuv = require "wsuv"

local LOVE = "/usr/bin/love"

-- LÖVE 11 runs LuaJIT: it loads the plain Lua 5.1 build, whatever this
-- process loads.
local LOVE_ENV = ("env LUA_PATH=%s LUA_CPATH=%s"):format(
  H.sh_quote("./lua/?.lua;./lua/?/init.lua;;"), H.sh_quote("./.rocks/lib/lua/5.1/?.so;;"))

-- Runs cmd to its end; returns its exit status and output.
local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1; echo rc=$?"))
  local out = p:read("*a")
  p:close()
  return tonumber(out:match("rc=(%d+)%s*$")), out
end

describe("examples", function()
  it("client.lua connects, gets its message back, pings and closes with 1000", function()
    H.with_example(wsuv, "echo_server.lua", function(url)
      local rc, out = run(("%s timeout 20 %s examples/client.lua %s %s"):format(H.lua_env(),
        H.lua_interpreter(), H.sh_quote(url), H.sh_quote("héllo, echo")))
      assert.are.equal(0, rc, out)
      assert.truthy(out:find("connected: ", 1, true), out)
      assert.truthy(out:find("received text: héllo, echo\n", 1, true), out)
      local ms = tonumber(out:match("ping round trip: ([%d.]+) ms"))
      assert.is_true(ms ~= nil and ms >= 0 and ms < 5000, out)
      assert.truthy(out:find("closed, server replied with code 1000\n", 1, true), out)
    end)
  end)

  it("client.lua reports a refused connection and exits 1", function()
    local port = H.closed_port(wsuv)
    local rc, out = run(("%s timeout 20 %s examples/client.lua ws://127.0.0.1:%d/"):format(
      H.lua_env(), H.lua_interpreter(), port))
    assert.are.equal(1, rc, out)
    assert.truthy(out:find("client: connect: connection refused", 1, true), out)
  end)

  it("rooms_server.lua keeps each room's talk in the room, and serves its page", function()
    H.with_example(wsuv, "rooms_server.lua", function(url)
      local a = assert(wsuv.connect(url .. "lobby"))
      local welcome = a:receive(5)
      assert.truthy(welcome:match("^welcome to #lobby, you are 127%.0%.0%.1:%d+; 1 here$"), welcome)
      local b = assert(wsuv.connect(url .. "lobby"))
      local c = assert(wsuv.connect(url .. "games"))
      local b_who = b:receive(5):match("you are (%S+);")
      assert.are.equal(b_who .. " joined #lobby", (a:receive(5)))
      assert.truthy(c:receive(5):find("^welcome to #games, .*; 1 here$"))
      assert(b:send("hi lobby"))
      assert.are.equal(b_who .. ": hi lobby", (a:receive(5)))
      assert(c:send("hi games"))
      -- Nothing crosses rooms, and nothing comes back to its sender.
      assert.are.same({ nil, "timeout", "ETIMEDOUT" }, { a:receive(0.2) })
      assert.are.same({ nil, "timeout", "ETIMEDOUT" }, { b:receive(0) })
      assert.are.same({ nil, "timeout", "ETIMEDOUT" }, { c:receive(0) })
      b:close()
      assert.are.equal(b_who .. " left", (a:receive(5)))
      a:close()
      c:close()
      local rc, page = run(("curl -s --max-time 10 %s"):format(H.sh_quote(
        url:gsub("^ws:", "http:") .. "lobby")))
      assert.are.equal(0, rc, page)
      assert.truthy(page:find("new WebSocket(", 1, true), page)
    end)
  end)

  describe("c_client.c on the core alone", function()
    local exe, build_rc, build_out
    lazy_setup(function()
      exe = H.tmpname()
      build_rc, build_out = run(("cc -std=c99 -Wall -Wextra -Werror -O1 -Icsrc examples/c_client.c"
        .. " csrc/ws_*.c -lcrypto -lz -o %s"):format(H.sh_quote(exe)))
    end)
    lazy_teardown(function()
      H.remove(exe)
    end)

    it("compiles without a warning", function()
      assert.are.equal(0, build_rc, build_out)
    end)

    it("connects, gets its message back and closes with 1000, one step per frame", function()
      H.with_example(wsuv, "echo_server.lua", function(url)
        local port = url:match(":(%d+)/")
        local rc, out = run(("timeout 20 %s %s %s"):format(H.sh_quote(exe), port,
          H.sh_quote("héllo from C")))
        assert.are.equal(0, rc, out)
        assert.truthy(out:find("connected: " .. url .. "\n", 1, true), out)
        assert.truthy(out:find("received text: héllo from C\n", 1, true), out)
        assert.truthy(out:find("closed, server replied with code 1000\n", 1, true), out)
        local frames = tonumber(out:match("frames: (%d+)"))
        assert.is_true(frames ~= nil and frames >= 2, out)
      end)
    end)

    it("reports a refused connection and exits 1", function()
      local port = H.closed_port(wsuv)
      local rc, out = run(("timeout 20 %s %d"):format(H.sh_quote(exe), port))
      assert.are.equal(1, rc, out)
      assert.truthy(out:find("c_client: connect: Connection refused", 1, true), out)
    end)

    it("gives up on a server that accepts and never answers, after 5 s", function()
      -- It reads the request and never answers.
      local silent = H.start_server(H.PYTHON .. " " .. H.PEERS
        .. "raw_server.py --port 0 --hold 10 --mode silent")
      local t0 = wsuv.now()
      local rc, out = run(("timeout 20 %s %d"):format(H.sh_quote(exe), silent.port))
      local took = wsuv.now() - t0
      H.stop(silent)
      assert.are.equal(1, rc, out)
      assert.truthy(out:find("c_client: timeout: no reply within 5 s", 1, true), out)
      assert.is_false(out:find("connected:", 1, true) ~= nil, out)
      assert.is_true(took >= 4.9 and took < 8, "took " .. took)
    end)
  end)

  describe("love/main.lua in LÖVE", function()
    local absent = H.missing("examples_spec", LOVE, "love")
    if absent then
      pending(absent)
      return
    end
    if not H.exists("./.rocks/lib/lua/5.1/wsuv/core.so") then
      pending("needs the Lua 5.1 build of wsuv.core (make build-5.1): LÖVE runs LuaJIT")
      return
    end

    it("connects at load, echoes what space sends, and never stalls a frame", function()
      H.with_example(wsuv, "echo_server.lua", function(url)
        local rc, out = run(("%s timeout 30 %s %slove_harness %s %s"):format(LOVE_ENV, LOVE,
          H.PEERS, "examples/love", H.sh_quote(url)))
        assert.are.equal(0, rc, out)
        assert.truthy(out:find("screen: connected\n", 1, true), out)
        assert.truthy(out:match("screen: < hello at %d%d:%d%d:%d%d\n"), out)
        assert.truthy(out:find("echoed 1\n", 1, true), out)
        -- 60 idle frames after the echo: a step() that waited for input
        -- would hang there (and timeout 30 would fail the run).
        local frames = tonumber(out:match("frames (%d+)"))
        assert.is_true(frames ~= nil and frames >= 61, out)
        -- The longest love.update, connect excluded (that is love.load):
        -- a quarter of a second would be a visible stall.
        local slowest = tonumber(out:match("slowest_ms ([%d.]+)"))
        assert.is_true(slowest ~= nil and slowest < 250, out)
      end)
    end)

    -- The server's process is killed and started again on its port while
    -- the game runs; the example's connection (reconnect = {...}) comes
    -- back by itself, frame after frame, and echoes again.
    it("comes back by itself when its server is killed and restarted", function()
      local port = H.closed_port(wsuv)
      local echo = H.start_example(wsuv, "echo_server.lua", port)
      local game = H.start_job(("%s timeout 60 %s %slove_harness examples/love %s 2"):format(
        LOVE_ENV, LOVE, H.PEERS, H.sh_quote(("ws://127.0.0.1:%d/"):format(port))))
      local function screen_has(pattern)
        return H.wait_until(wsuv, function()
          return (H.read_file(game.out) or ""):find(pattern) ~= nil
        end, 20)
      end
      local ok, err = pcall(function()
        assert(screen_has("screen: < hello at "), "no first echo")
        H.stop(echo)
        assert(screen_has("screen: reconnecting%.%.%."), "the drop went unnoticed")
        echo = H.start_example(wsuv, "echo_server.lua", port)
        local rc, out = H.wait_job(wsuv, game, 40)
        assert.are.equal(0, rc, out)
        local _, n = out:gsub("screen: < hello at %d%d:%d%d:%d%d\n", "")
        assert.are.equal(2, n, out)
        assert.truthy(out:find("screen: reconnected\n", 1, true), out)
        local slowest = tonumber(out:match("slowest_ms ([%d.]+)"))
        assert.is_true(slowest ~= nil and slowest < 250, out)
      end)
      H.stop(echo)
      H.stop(game)
      assert(ok, err)
    end)
  end)
end)
