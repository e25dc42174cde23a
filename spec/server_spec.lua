-- spec/server_spec.lua: wsuv.listen's policy hooks (path, origins,
-- protocols, check, http), accept(), clients(), broadcast() and close().
local H = require "spec.helper"
local wsuv = require "wsuv"

local servers, clients = {}, {}

local echo = H.echo

local function listen(opts)
  opts = opts or {}
  opts.host, opts.port = "127.0.0.1", 0
  if opts.on_connect == nil and not opts.no_handler then
    opts.on_connect = echo
  end
  opts.no_handler = nil
  local s = assert(wsuv.listen(opts))
  servers[#servers + 1] = s
  return s, ("ws://127.0.0.1:%d"):format(s.port)
end

local function connect(url, opts)
  return H.connect_kept(wsuv, clients, url, opts)
end

local function wait_for(cond, timeout)
  H.wait_for(wsuv, cond, timeout)
end

-- Opens count connections to url at once (each in its own coroutine) and
-- waits for all of them; returns them in order.
local function connect_at_once(url, count)
  local opened, n = {}, 0
  for i = 1, count do
    wsuv.spawn(function()
      opened[i] = assert(connect(url))
      n = n + 1
    end)
  end
  wait_for(function()
    return n == count
  end)
  return opened
end

-- An on_message echo server, with more listen options opts; its requests
-- are decided in pooled coroutines on every VM. Returns its URL and a
-- function that counts the coroutines started since (the server's, once
-- its clients' have ended).
local function events_echo_server(opts)
  local sched = require "wsuv.scheduler"
  local live_before = sched.count()
  opts = opts or {}
  opts.no_handler = true
  opts.on_message = function(c, m, k)
    c:send(m, k)
  end
  local _, base = listen(opts)
  return base, function()
    return sched.count() - live_before
  end
end

-- A server (listen options opts) whose handlers only hold their
-- connections, and two clients: held[1] is c1's connection on the server,
-- held[2] c2's.
local function two_held_clients(opts)
  local held = {}
  opts = opts or {}
  opts.on_connect = function(c)
    held[#held + 1] = c
    c:receive()
  end
  local s, base = listen(opts)
  local c1 = assert(connect(base))
  wait_for(function()
    return #held == 1
  end)
  local c2 = assert(connect(base))
  wait_for(function()
    return #held == 2
  end)
  return s, c1, c2, held
end

local function http_get(url)
  local cmd
  if os.execute("command -v curl >/dev/null 2>&1") == 0 or
      os.execute("command -v curl >/dev/null 2>&1") == true then
    cmd = "curl -s -i --max-time 10 " .. H.sh_quote(url)
  else
    cmd = H.PYTHON .. " -c " .. H.sh_quote([[
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=10)
except urllib.error.HTTPError as e:
    r = e
print("HTTP/1.1 %d %s" % (r.status if hasattr(r, "status") else r.code, r.reason))
for k, v in r.headers.items():
    print("%s: %s" % (k, v))
print()
sys.stdout.write(r.read().decode())
]]) .. " " .. H.sh_quote(url)
  end
  local job = H.start_job(cmd)
  local rc, out = H.wait_job(wsuv, job, 15)
  assert.are.equal(0, rc, out)
  return out
end

describe("wsuv server", function()
  after_each(function()
    H.close_and_check(wsuv, clients, servers)
  end)

  describe("opening handshake policy", function()
    it("refuses a path mismatch with 404", function()
      local _, base = listen { path = "/chat" }
      local c, err, code, resp = connect(base .. "/other")
      assert.is_nil(c)
      assert.are.equal("string", type(err))
      assert.are.equal("string", type(code))
      assert.are.equal(404, resp.status)
      local ok = assert(connect(base .. "/chat?x=1"))
      ok:send("in")
      assert.are.equal("in", (ok:receive(5)))
    end)

    it("checks the Origin against a list (403 otherwise)", function()
      local _, base = listen { origins = { "https://good.example", "https://also.example" } }
      assert(connect(base .. "/", { origin = "https://also.example" }))
      local c, _, _, resp = connect(base .. "/", { origin = "https://evil.example" })
      assert.is_nil(c)
      assert.are.equal(403, resp.status)
      c, _, _, resp = connect(base .. "/")
      assert.is_nil(c)
      assert.are.equal(403, resp.status)
    end)

    it("checks the Origin with a function", function()
      local seen
      local _, base = listen {
        origins = function(origin, req)
          seen = req.path
          return origin and origin:match("%.example$") ~= nil
        end,
      }
      assert(connect(base .. "/p", { origin = "https://a.example" }))
      assert.are.equal("/p", seen)
      local c, _, _, resp = connect(base .. "/", { origin = "https://a.example.evil" })
      assert.is_nil(c)
      assert.are.equal(403, resp.status)
    end)

    it("chooses a subprotocol from a list by the server's preference", function()
      local server_proto = {}
      local _, base = listen {
        protocols = { "chat.v2", "chat" },
        on_connect = function(conn)
          server_proto[#server_proto + 1] = conn:protocol() or "none"
          echo(conn)
        end,
      }
      local c = assert(connect(base, { protocols = { "chat", "chat.v2" } }))
      assert.are.equal("chat.v2", c:protocol())
      local c2 = assert(connect(base, { protocols = { "chat", "other" } }))
      assert.are.equal("chat", c2:protocol())
      local c3 = assert(connect(base, { protocols = { "other" } }))
      assert.is_nil(c3:protocol())
      local c4 = assert(connect(base))
      assert.is_nil(c4:protocol())
      wait_for(function()
        return #server_proto == 4
      end)
      table.sort(server_proto)
      assert.are.same({ "chat", "chat.v2", "none", "none" }, server_proto)
    end)

    it("chooses a subprotocol with a function", function()
      local offered_seen, server_proto
      local _, base = listen {
        protocols = function(offered, req)
          offered_seen = offered
          assert(req.headers)
          return offered[#offered]
        end,
        on_connect = function(conn)
          server_proto = conn:protocol()
          echo(conn)
        end,
      }
      local c = assert(connect(base, { protocols = { "a", "b", "c" } }))
      assert.are.equal("c", c:protocol())
      assert.are.same({ "a", "b", "c" }, offered_seen)
      wait_for(function()
        return server_proto ~= nil
      end)
      assert.are.equal("c", server_proto)
    end)

    it("a check hook refuses with a custom status and body", function()
      local _, base = listen {
        check = function(req)
          if req.headers.authorization == "Bearer good" then
            return true
          end
          return false, 401, { ["WWW-Authenticate"] = "Bearer" }, "no"
        end,
      }
      local c, err, code, resp = connect(base)
      assert.is_nil(c)
      assert.are.equal("string", type(err))
      assert.are.equal("string", type(code))
      assert.are.equal(401, resp.status)
      assert.are.equal("no", resp.body)
      local www
      for i = 1, #resp.headers, 2 do
        if resp.headers[i]:lower() == "www-authenticate" then
          www = resp.headers[i + 1]
        end
      end
      assert.are.equal("Bearer", www)
      local ok = assert(connect(base, { headers = { Authorization = "Bearer good" } }))
      ok:send("authorized")
      assert.are.equal("authorized", (ok:receive(5)))
    end)

    it("a check hook may wait before deciding", function()
      local checks = 0
      local _, base = listen {
        check = function(req)
          wsuv.sleep(0.05)
          checks = checks + 1
          return req.query == "token=1"
        end,
      }
      local t0 = wsuv.now()
      local c = assert(connect(base .. "/?token=1"))
      assert.is_true(wsuv.now() - t0 >= 0.045)
      c:send("waited")
      assert.are.equal("waited", (c:receive(5)))
      local bad, _, _, resp = connect(base .. "/?token=2")
      assert.is_nil(bad)
      assert.are.equal(403, resp.status)
      assert.are.equal(2, checks)
    end)

    it("requests whose check hooks wait are decided side by side", function()
      local _, base = listen {
        check = function()
          wsuv.sleep(0.3)
          return true
        end,
      }
      local t0 = wsuv.now()
      local opened = connect_at_once(base, 5)
      -- One after another would take 1.5 s.
      assert.is_true(wsuv.now() - t0 < 1.2, "checks ran one after another")
      for i = 1, 5 do
        opened[i]:send("c" .. i)
        assert.are.equal("c" .. i, (opened[i]:receive(5)))
      end
      -- A later request is decided too (on Lua 5.4 by an idle decider).
      local late = assert(connect(base))
      late:send("late")
      assert.are.equal("late", (late:receive(5)))
    end)

    it("a burst of requests is decided by a few coroutines, not one per request", function()
      local base, server_coroutines = events_echo_server()
      local opened = connect_at_once(base, 200)
      -- Every client's coroutine has ended; what is left is the server's:
      -- its acceptor, its deciders and at most 4 idle workers. Starting a
      -- decider per request of a burst left dozens here (and every new
      -- request then woke them all).
      local n = server_coroutines()
      assert.is_true(n <= 8, n .. " coroutines")
      for i = 1, 200, 20 do
        opened[i]:send("m" .. i)
        assert.are.equal("m" .. i, (opened[i]:receive(5)))
      end
    end)

    it("after a burst of check hooks that waited, at most 4 deciders stay", function()
      local base, server_coroutines = events_echo_server {
        check = function()
          wsuv.sleep(0.05)
          return true
        end,
      }
      local t0 = wsuv.now()
      connect_at_once(base, 40)
      -- Side by side: one after another would take 2 s.
      assert.is_true(wsuv.now() - t0 < 1, "checks ran one after another")
      -- The acceptor, idle deciders (at most 4) and idle workers (at most 4).
      local n = server_coroutines()
      assert.is_true(n <= 9, n .. " coroutines")
      -- Those left still decide the next requests.
      local late = assert(connect(base))
      late:send("late")
      assert.are.equal("late", (late:receive(5)))
    end)

    it("a check hook that raises refuses with 500", function()
      local _, base = listen {
        check = function()
          error("check exploded")
        end,
      }
      local c, _, _, resp = connect(base)
      assert.is_nil(c)
      assert.are.equal(500, resp.status)
    end)
  end)

  describe("plain HTTP", function()
    it("the http hook answers a plain GET", function()
      local seen
      local _, base = listen {
        http = function(req)
          seen = req
          return 200, { ["Content-Type"] = "text/plain" }, "hello from " .. req.path
        end,
      }
      local out = http_get(("http://127.0.0.1:%d/page?q=1"):format(servers[1].port))
      assert.truthy(out:match("^HTTP/1%.1 200"), out)
      assert.truthy(out:lower():find("content-type: text/plain", 1, true), out)
      assert.truthy(out:find("hello from /page", 1, true), out)
      assert.are.equal("GET", seen.method)
      assert.are.equal("q=1", seen.query)
      assert.is_false(seen.upgrade)
      -- WebSocket clients still connect.
      local c = assert(connect(base))
      c:send("ws")
      assert.are.equal("ws", (c:receive(5)))
    end)

    it("answers a plain GET with 426 by default", function()
      local s = listen()
      local out = http_get(("http://127.0.0.1:%d/"):format(s.port))
      assert.truthy(out:match("^HTTP/1%.1 426"), out)
    end)
  end)

  describe("accept()", function()
    it("hands out connections when there is no on_connect", function()
      local s, base = listen { no_handler = true }
      assert.are.same({ nil, "timeout", "ETIMEDOUT" }, { s:accept(0.05) })
      local c = assert(connect(base .. "/acc"))
      local sc = assert(s:accept(5))
      assert.are.equal("/acc", sc:request().path)
      assert.are.equal("open", sc:state())
      sc:send("from accept")
      assert.are.equal("from accept", (c:receive(5)))
      c:send("to accept")
      assert.are.equal("to accept", (sc:receive(5)))
      sc:close(4002, "done")
      assert.are.same({ nil, "closed", 4002, "done" }, { c:receive(5) })
      s:close()
      assert.are.same({ nil, "closed", "ECLOSED" }, { s:accept(1) })
    end)

    it("accept() in a wsuv coroutine waits for the next client", function()
      local s, base = listen { no_handler = true }
      local got
      wsuv.spawn(function()
        local sc = assert(s:accept())
        got = sc:receive()
        sc:close()
      end)
      local c = assert(connect(base))
      c:send("spawned accept")
      wait_for(function()
        return got ~= nil
      end)
      assert.are.equal("spawned accept", got)
    end)
  end)

  describe("clients() and broadcast()", function()
    it("reaches every client, also with a 100 KiB payload", function()
      local s, base = listen()
      local cs = {}
      for i = 1, 3 do
        cs[i] = assert(connect(base))
      end
      wait_for(function()
        local n = 0
        for _ in s:clients() do
          n = n + 1
        end
        return n == 3
      end)
      for conn in s:clients() do
        assert.are.equal("open", conn:state())
      end
      assert.are.same({ 3, 0 }, { s:broadcast("hello all") })
      local big = wsuv.core.random(4096):rep(25)
      assert.are.same({ 3, 0 }, { s:broadcast(big, "binary") })
      for i = 1, 3 do
        assert.are.same({ "hello all", "text" }, { cs[i]:receive(5) })
        assert.are.same({ big, "binary" }, { cs[i]:receive(5) })
      end
      assert.has_error(function()
        s:broadcast("\255")
      end)
      -- A client that left is no longer counted.
      cs[1]:close()
      wait_for(function()
        local n = 0
        for _ in s:clients() do
          n = n + 1
        end
        return n == 2
      end)
      assert.are.equal(2, (s:broadcast("two")))
      assert.are.equal("two", (cs[2]:receive(5)))
      assert.are.equal("two", (cs[3]:receive(5)))
    end)

    it("broadcast from a wsuv coroutine", function()
      local s, base = listen()
      local c1, c2 = assert(connect(base)), assert(connect(base))
      local result
      wsuv.spawn(function()
        while #s._s:clients() < 2 do
          wsuv.sleep(0.01)
        end
        result = { s:broadcast("from coroutine") }
      end)
      assert.are.equal("from coroutine", (c1:receive(5)))
      assert.are.equal("from coroutine", (c2:receive(5)))
      assert.are.same({ 2, 0 }, result)
    end)

    -- Broadcasts of one pass share one buffer and each receiver's run of
    -- them goes out as one range: a connection's own sends, big payloads
    -- (sent from the Lua string) and later passes must keep their places.
    it("many broadcasts in one pass, mixed with own sends, arrive in order", function()
      local s, c1, c2, held = two_held_clients()
      local big = wsuv.core.random(4096) .. wsuv.core.random(1904)
      local want1, want2 = {}, {}
      local function expect(m, k, both)
        want1[#want1 + 1] = { m, k }
        if both then
          want2[#want2 + 1] = { m, k }
        end
      end
      local done
      wsuv.spawn(function()
        for pass = 1, 3 do
          for i = 1, 150 do
            local m = ("p%d b%d "):format(pass, i) .. ("x"):rep(i % 40)
            assert.are.same({ 2, 0 }, { s:broadcast(m) })
            expect(m, "text", true)
            if i % 50 == 0 then
              assert.is_true(held[1]:send("own " .. i))
              expect("own " .. i, "text")
              assert.are.same({ 2, 0 }, { s:broadcast(big .. i, "binary") })
              expect(big .. i, "binary", true)
            end
          end
          wsuv.sleep(0.05)
        end
        done = true
      end)
      local function receive_all(c, n)
        local got = {}
        for i = 1, n do
          local m, k = c:receive(5)
          assert.truthy(m, k)
          got[i] = { m, k }
        end
        return got
      end
      assert.are.same(want1, receive_all(c1, #want1))
      assert.are.same(want2, receive_all(c2, #want2))
      wait_for(function()
        return done
      end)
    end)

    -- More than one arena (64 KiB) of broadcasts in one pass: the second
    -- arena's frames must not be merged with the first's.
    it("a pass with more broadcasts than one buffer holds keeps them in order", function()
      local s, c1, c2 = two_held_clients()
      local want = {}
      wsuv.spawn(function()
        for i = 1, 3000 do
          want[i] = ("broadcast %d "):format(i) .. ("y"):rep(i % 23)
          assert.are.same({ 2, 0 }, { s:broadcast(want[i]) })
        end
      end)
      for _, c in ipairs({ c1, c2 }) do
        for i = 1, 3000 do
          local m = c:receive(5)
          if m ~= want[i] then
            assert.are.equal(want[i], m) -- reported once, not 3000 times
          end
        end
      end
    end)

    it("a receiver over max_queued is skipped, or dropped with close_slow", function()
      local s, c1, c2 = two_held_clients({ max_queued = 64 * 1024, high_water = 32 * 1024 })
      local chunk = ("q"):rep(1000)
      -- In one pass nothing is written, so both queues fill up together.
      local function fill(opts)
        local sent, last = 0, nil
        for _ = 1, 100 do
          last = { s:broadcast(chunk, "text", opts) }
          sent = sent + last[1]
          if last[1] == 0 then
            break
          end
        end
        return sent / 2, last
      end
      local n, last
      wsuv.spawn(function()
        n, last = fill()
      end)
      wait_for(function()
        return n ~= nil
      end)
      assert.are.same({ 0, 2 }, last)
      assert.is_true(n >= 60 and n <= 65, "sent " .. n .. " per receiver")
      for _, c in ipairs({ c1, c2 }) do
        for _ = 1, n do
          assert.are.equal(chunk, (c:receive(5)))
        end
      end
      -- close_slow: the first broadcast that finds them full drops them.
      n, last = nil, nil
      wsuv.spawn(function()
        n, last = fill({ close_slow = true })
      end)
      wait_for(function()
        return n ~= nil
      end)
      assert.are.same({ 0, 2 }, last)
      for _, c in ipairs({ c1, c2 }) do
        local m, err, code
        repeat
          m, err, code = c:receive(5)
        until m == nil
        assert.are.same({ "closed", 1006 }, { err, code })
      end
      assert.are.equal(0, (s:broadcast("nobody left")))
    end)

    -- RFC 6455 5.4: another message may not come between the frames of a
    -- fragmented one, so a connection in the middle of conn:writer() is
    -- skipped by broadcast and refused by send, and its message stays whole.
    it("skips a connection in the middle of a streamed message", function()
      local s, c1, c2, held = two_held_clients()
      local w = held[1]:writer("text")
      assert.is_true(w:write("part one, "))
      assert.are.same({ 1, 1 }, { s:broadcast("news") })
      local ok, err, code = held[1]:send("cut in")
      assert.is_nil(ok)
      assert.are.equal("a streamed message is unfinished", err)
      assert.are.equal("ESTATE", code)
      assert.is_true(w:finish("part two"))
      assert.are.same({ 2, 0 }, { s:broadcast("after") })
      assert.are.same({ "part one, part two", "text" }, { c1:receive(5) })
      assert.are.equal("after", (c1:receive(5)))
      assert.are.equal("news", (c2:receive(5)))
      assert.are.equal("after", (c2:receive(5)))
    end)
  end)

  describe("close()", function()
    it("closes every client with 1001 and returns", function()
      local s, base = listen()
      local cs = {}
      for i = 1, 3 do
        cs[i] = assert(connect(base))
        cs[i]:send("x")
        assert.are.equal("x", (cs[i]:receive(5)))
      end
      local t0 = wsuv.now()
      assert.is_true(s:close())
      assert.is_true(wsuv.now() - t0 < 4)
      for i = 1, 3 do
        local _, err, code = cs[i]:receive(5)
        assert.are.equal("closed", err)
        assert.are.equal(1001, code)
      end
      assert.truthy(tostring(s):find("closed", 1, true))
      -- New clients are refused.
      local c, _, code = wsuv.connect(base, { timeout = 2 })
      assert.is_nil(c)
      assert.are.equal("string", type(code))
    end)
  end)

  describe("errors", function()
    it("an error in on_connect closes that connection with 1011, the server goes on", function()
      local _, base = listen {
        on_connect = function(conn)
          local m = conn:receive()
          if m == "boom" then
            error("kaboom")
          end
          conn:send(m)
          echo(conn)
        end,
      }
      local bad = assert(connect(base))
      bad:send("boom")
      local _, err, code = bad:receive(5)
      assert.are.equal("closed", err)
      assert.are.equal(1011, code)
      local good = assert(connect(base))
      good:send("fine")
      assert.are.equal("fine", (good:receive(5)))
    end)

    it("listen validates its options", function()
      assert.has_error(function()
        wsuv.listen("x")
      end)
      assert.has_error(function()
        wsuv.listen { port = 0, on_connect = 5 }
      end)
      local a = assert(wsuv.listen { host = "127.0.0.1", port = 0 })
      servers[#servers + 1] = a
      local s, err, code = wsuv.listen { host = "127.0.0.1", port = a.port }
      assert.is_nil(s)
      assert.are.equal("string", type(err))
      assert.are.equal("EADDRINUSE", code)
    end)
  end)
end)

-- A connection closed just before its server: both handles' close
-- callbacks wait for the next pass, and libuv runs the later one (the
-- server's, which frees it) first. The connection must not reach back into
-- the freed server then (a use after free that make asan-lua reports).
describe("a server closed right after one of its connections", function()
  it("lets go of it in either order", function()
    local core = wsuv.core
    local s = assert(core.listen("127.0.0.1", 0, {}))
    local sock = H.raw_connect(s:port())
    assert(sock:send(H.UPGRADE))
    local c
    H.wait_until(wsuv, function()
      c = s:try_accept()
      return c ~= nil
    end, 5)
    assert(c, "the upgrade request never arrived")
    c:abort()
    s:stop()
    assert.are.same({ 0, 0 }, { H.live(wsuv) })
    assert.are.equal("closed", c:state())
    assert.is_true(s:closed())
    sock:close()
  end)
end)
