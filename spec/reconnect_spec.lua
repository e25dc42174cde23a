-- spec/reconnect_spec.lua: wsuv.connect(url, {reconnect = ...}), a client
-- that connects again when its server goes away: after a graceful restart
-- (1001) and a killed server process (1006), with backoff, a bound on
-- attempts, on_reconnect, messages from before the drop kept, sends refused
-- while down, close() during the backoff, the game-loop way (step + poll),
-- the drops it must not retry, and Retry-After. Servers are real, on
-- 127.0.0.1: in this process, or examples/echo_server.lua in a child on a
-- fixed port.
local H = require "spec.helper"
local wsuv = require "wsuv"

local servers, conns = {}, {}

local function echo_server(port, opts)
  opts = opts or {}
  opts.host, opts.port = "127.0.0.1", port or 0
  opts.on_connect = opts.on_connect or H.echo
  local s = assert(wsuv.listen(opts))
  servers[#servers + 1] = s
  return s, ("ws://127.0.0.1:%d/"):format(s.port)
end

-- A server whose first connection gets three messages "<words> i" and
-- then goes (ending with how(conn)); later ones get an echo, after hello
-- when given. Returns its URL and a function counting the connections.
local function goes_once(words, how, hello)
  local n = 0
  local _, url = echo_server(nil, {
    on_connect = function(conn)
      n = n + 1
      if n > 1 then
        if hello then
          conn:send(hello)
        end
        return H.echo(conn)
      end
      for i = 1, 3 do
        conn:send(words .. " " .. i)
      end
      how(conn)
    end,
  })
  return url, function()
    return n
  end
end

local function connect(url, policy, opts)
  opts = opts or {}
  opts.reconnect = policy
  local c, err, code = wsuv.connect(url, opts)
  if c then
    conns[#conns + 1] = c
  end
  return c, err, code
end

local function stop(s)
  for i, x in ipairs(servers) do
    if x == s then
      table.remove(servers, i)
    end
  end
  s:close()
end

local function wait_for(cond, timeout)
  H.wait_for(wsuv, cond, timeout)
end

describe("wsuv.connect with reconnect", function()
  after_each(function()
    for i = #conns, 1, -1 do
      table.remove(conns, i):close()
    end
    for i = #servers, 1, -1 do
      table.remove(servers, i):close()
    end
    assert.are.same({ 0, 0 }, { H.live(wsuv) })
  end)

  it("comes back after the server restarts (1001), and on_reconnect runs each time", function()
    local s, url = echo_server()
    local port = s.port
    local seen = {}
    local c = assert(connect(url, {
      delay = 0.05,
      on_reconnect = function(rc)
        seen[#seen + 1] = rc
        assert(rc:send("resubscribe"))
      end,
    }))
    assert.are.equal("open", c:state())
    assert(c:send("one"))
    assert.are.equal("one", (c:receive(5)))
    local first = c:current()
    for round = 1, 2 do
      stop(s)
      -- The server said 1001 (going away): the client waits and tries again.
      assert.are.same({ nil, "reconnecting", "EAGAIN" }, { c:send("lost") })
      assert.are.equal("reconnecting", c:state())
      wsuv.sleep(0.3) -- a few attempts find nothing
      assert.are.equal("reconnecting", c:state())
      assert.is_nil((c:current()))
      s = echo_server(port)
      assert.are.equal("resubscribe", (c:receive(5)))
      assert.are.equal("open", c:state())
      assert.are.equal(round, #seen)
      assert.are.equal(c, seen[round])
      local now_conn, reconnects = c:current()
      assert.are_not.equal(first, now_conn)
      assert.are.equal(round, reconnects)
      assert(c:send("two"))
      assert.are.equal("two", (c:receive(5)))
    end
    -- Methods of the connection in use are at hand.
    assert.are.equal("127.0.0.1", (c:peer()))
    assert.are.equal("wsuv.reconnecting{open; 2 reconnects}", tostring(c))
  end)

  it("comes back over wss://, verifying the server again, with compression agreed again", function()
    local C = H.certs()
    local tls = { cert = C .. "server.pem", key = C .. "server.key" }
    local s = echo_server(nil, { tls = tls, compression = true })
    local port = s.port
    local url = ("wss://127.0.0.1:%d/"):format(port)
    local opts = { tls = { ca = C .. "ca.pem" }, compression = true }
    local c = assert(connect(url, { delay = 0.02 }, opts))
    stop(s)
    assert.are.same({ nil, "timeout", "ETIMEDOUT" }, { c:receive(0.1) })
    echo_server(port, { tls = tls, compression = true })
    wait_for(function()
      c:receive(0)
      return c:state() == "open"
    end)
    local big = ("compressible "):rep(1000)
    assert(c:send(big))
    assert.are.equal(big, (c:receive(5)))
    local info = c:tls_info()
    assert.is_true(info.verified)
    assert.is_table(c:compression())
    assert.is_true(c:compression().sent >= 1)
  end)

  it("comes back after the server's process is killed (1006)", function()
    local port = H.closed_port(wsuv)
    local job = H.start_example(wsuv, "echo_server.lua", port)
    local ok, err = pcall(function()
      local c = assert(connect(("ws://127.0.0.1:%d/"):format(port), { delay = 0.05 }))
      assert(c:send("before"))
      assert.are.equal("before", (c:receive(5)))
      os.execute("kill -KILL " .. job.pid)
      H.stop(job)
      -- receive notices the drop, keeps trying, and gets the next echo.
      assert.are.same({ nil, "timeout", "ETIMEDOUT" }, { c:receive(0.3) })
      assert.are.equal("reconnecting", c:state())
      job = H.start_example(wsuv, "echo_server.lua", port)
      wait_for(function()
        c:receive(0)
        return c:state() == "open"
      end)
      assert(c:send("after"))
      assert.are.equal("after", (c:receive(5)))
    end)
    H.stop(job)
    assert(ok, err)
  end)

  it("reads what the server sent before it went away, then the new connection's", function()
    local url, count = goes_once("last words", function(conn)
      conn:close(1012, "restarting") -- service restart: retried
    end, "hello again")
    local c = assert(connect(url, { delay = 0.05 }))
    wsuv.sleep(0.2) -- the three messages and the close frame have arrived
    local got = {}
    for _ = 1, 4 do
      got[#got + 1] = (c:receive(5))
    end
    assert.are.same({ "last words 1", "last words 2", "last words 3", "hello again" }, got)
    assert.are.equal(2, count())
  end)

  it("keeps what arrived before an abrupt drop that a send noticed first", function()
    local url = goes_once("before the drop", function(conn)
      conn:flush()
      conn:abort() -- no close frame: the client sees 1006
    end)
    local c = assert(connect(url, { delay = 0.05 }))
    wait_for(function()
      return c:current():state() == "closed"
    end)
    -- The send finds the connection gone and starts reconnecting...
    assert.are.same({ nil, "reconnecting", "EAGAIN" }, { c:send("lost") })
    -- ...and the three messages are still read, before the new connection's.
    for i = 1, 3 do
      assert.are.equal("before the drop " .. i, (c:receive(5)))
    end
    wait_for(function()
      return c:state() == "open"
    end)
    assert(c:send("after"))
    assert.are.equal("after", (c:receive(5)))
  end)

  it("waits longer after each failed attempt, and gives up after `attempts`", function()
    local s, url = echo_server()
    local c = assert(connect(url, { delay = 0.1, factor = 2, jitter = 0, attempts = 3 }))
    stop(s)
    local t0 = wsuv.now()
    local msg, err, code, reason = c:receive(10)
    local took = wsuv.now() - t0
    assert.are.same({ nil, "closed", 1001 }, { msg, err, code })
    assert.truthy(reason:find("^gave up after 3 attempts: "), reason)
    assert.truthy(reason:find("refused", 1, true), reason)
    -- 0.1 + 0.2 + 0.4 s of backoff, then the fourth turn gives up.
    assert.is_true(took >= 0.65 and took < 3, "took " .. took)
    assert.are.equal("closed", c:state())
    assert.are.same({ nil, "closed", 1001, reason }, { c:send("x") })
  end)

  it("waits no longer than max_delay between attempts", function()
    local s, url = echo_server()
    local c = assert(connect(url, { delay = 0.1, factor = 10, max_delay = 0.15, jitter = 0,
      attempts = 3 }))
    stop(s)
    local t0 = wsuv.now()
    local msg, err, code = c:receive(10)
    local took = wsuv.now() - t0
    assert.are.same({ nil, "closed", 1001 }, { msg, err, code })
    -- 0.1 + 0.15 + 0.15 s; uncapped it would be 0.1 + 1 + 10.
    assert.is_true(took >= 0.35 and took < 1, "took " .. took)
  end)

  it("does not retry a normal close, a protocol complaint, or a 4xx answer", function()
    for _, case in ipairs({ { 1000, "done" }, { 1008, "policy" }, { 4000, "app" } }) do
      local s, url = echo_server(nil, {
        on_connect = function(conn)
          conn:close(case[1], case[2])
        end,
      })
      local c = assert(connect(url, { delay = 0.01 }))
      assert.are.same({ nil, "closed", case[1], case[2] }, { c:receive(5) })
      assert.are.equal("closed", c:state())
      stop(s)
    end
    -- The first connection must work; a later 403 ends the retries.
    local refuse = false
    local s, url = echo_server(nil, {
      check = function()
        return not refuse, 403
      end,
    })
    local c = assert(connect(url, { delay = 0.01 }))
    refuse = true
    for conn in s:clients() do
      conn:close(1001)
    end
    local msg, err, code, reason = c:receive(5)
    assert.are.same({ nil, "closed", 1006 }, { msg, err, code })
    assert.truthy(reason:find("403", 1, true), reason)
  end)

  -- A server whose handshakes after the first get answers[i] (a status and
  -- its Retry-After, or true to accept); returns its URL and the times
  -- of the handshakes, as the server saw them.
  local function answers_in_turn(answers)
    local times = {}
    local _, url = echo_server(nil, {
      check = function()
        times[#times + 1] = wsuv.now()
        local a = #times > 1 and answers[#times - 1] or true
        if a == true then
          return true
        end
        return false, a[1], a[2] and { ["Retry-After"] = a[2] }
      end,
    })
    return url, times
  end

  local function drop_all(s)
    for conn in s:clients() do
      conn:close(1001)
    end
  end

  it("retries a 408 or 429 answer, waiting as long as Retry-After asks", function()
    local url, times = answers_in_turn({ { 408 }, { 429, "1" }, true })
    local c = assert(connect(url, { delay = 0.05, factor = 1, jitter = 0 }))
    drop_all(servers[#servers])
    -- state() notices the drop, as receive() and send() do.
    wait_for(function()
      return c:state() == "reconnecting"
    end)
    wait_for(function()
      return c:state() == "open" and #times == 4
    end)
    assert(c:send("back"))
    assert.are.equal("back", (c:receive(5)))
    local after_408, after_429 = times[3] - times[2], times[4] - times[3]
    assert.is_true(after_408 < 0.5, "after the 408: " .. after_408)
    -- Without Retry-After it would be the 0.05 s delay again.
    assert.is_true(after_429 >= 0.95 and after_429 < 2, "after the 429: " .. after_429)
  end)

  it("reads Retry-After as an HTTP date too, and waits no longer than max_delay", function()
    local in_2s = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 2)
    local url, times = answers_in_turn({ { 503, in_2s }, { 503, "3600" }, true })
    local c = assert(connect(url, { delay = 0.05, factor = 1, jitter = 0, max_delay = 3 }))
    drop_all(servers[#servers])
    wait_for(function()
      return c:state() == "open" and #times == 4
    end, 15)
    -- Unread, each would be 0.05 s; the date is whole seconds from now.
    local after_date, after_hour = times[3] - times[2], times[4] - times[3]
    assert.is_true(after_date >= 0.95 and after_date < 2.5, "after the date: " .. after_date)
    assert.is_true(after_hour >= 2.95 and after_hour < 4, "after an hour's wait: " .. after_hour)
  end)

  it("reconnect.retry decides which closes are retried", function()
    local calls, n = {}, 0
    local s, url = echo_server(nil, {
      on_connect = function(conn)
        n = n + 1
        conn:send("session " .. n)
        if n == 1 then
          conn:close(4000, "come back")
        else
          H.echo(conn)
        end
      end,
    })
    local c = assert(connect(url, {
      delay = 0.01,
      retry = function(code, reason)
        calls[#calls + 1] = { code, reason }
        return code == 4000
      end,
    }))
    assert.are.equal("session 1", (c:receive(5)))
    assert.are.equal("session 2", (c:receive(5)))
    assert.are.same({ { 4000, "come back" } }, calls)
    stop(s)
  end)

  it("close() during the backoff stops it: no attempt follows", function()
    local attempts = 0
    local s, url = echo_server()
    local port = s.port
    local c = assert(connect(url, { delay = 0.3, jitter = 0 }))
    stop(s)
    assert.are.same({ nil, "timeout", "ETIMEDOUT" }, { c:receive(0.05) })
    assert.are.equal("reconnecting", c:state())
    assert.are.same({ true }, { c:close() })
    echo_server(port, {
      on_connect = function()
        attempts = attempts + 1
      end,
    })
    wsuv.sleep(0.5)
    assert.are.equal(0, attempts)
    assert.are.same({ nil, "closed", 1000, "" }, { c:receive(0) })
  end)

  it("a game loop's step() and poll() carry it through a restart", function()
    local s, url = echo_server()
    local port = s.port
    local c = assert(connect(url, {
      delay = 0.02,
      on_reconnect = function(rc)
        rc:send("back")
      end,
    }))
    stop(s)
    local restarted, got = false, {}
    local deadline = wsuv.now() + 10
    while #got == 0 and wsuv.now() < deadline do
      wsuv.step()
      for msg in c:poll() do
        got[#got + 1] = msg
      end
      if not restarted and c:state() == "reconnecting" then
        echo_server(port)
        restarted = true
      end
    end
    assert.are.same({ "back" }, got)
  end)

  -- math.random starts from one seed in every Lua 5.1 and LuaJIT process:
  -- jitter drawn from it would bring restarted clients back together.
  it("draws its jitter from OpenSSL, leaving the application's math.random alone", function()
    local s, url = echo_server()
    local port = s.port
    local c = assert(connect(url, { delay = 0.01, jitter = 1 }))
    math.randomseed(6455)
    local want = { math.random(), math.random() }
    math.randomseed(6455)
    stop(s)
    wsuv.sleep(0.2) -- several attempts, each with its jitter
    echo_server(port)
    wait_for(function()
      c:receive(0)
      return c:state() == "open"
    end)
    assert.is_true(select(2, c:current()) == 1)
    assert.are.same(want, { math.random(), math.random() })
  end)

  it("the first connect fails as a plain one does; bad options raise", function()
    local port = H.closed_port(wsuv)
    local c, err, code = connect(("ws://127.0.0.1:%d/"):format(port), true)
    assert.is_nil(c)
    assert.are.equal("ECONNREFUSED", code, err)
    local url = ("ws://127.0.0.1:%d/"):format(port)
    assert.has_error(function()
      wsuv.connect(url, { reconnect = "yes" })
    end, "connect: reconnect must be true or a table")
    assert.has_error(function()
      wsuv.connect(url, { reconnect = { delay = -1 } })
    end, "connect: reconnect.delay must be a number >= 0")
    assert.has_error(function()
      wsuv.connect(url, { reconnect = { jitter = 2 } })
    end, "connect: reconnect.jitter must be a number in 0..1")
    assert.has_error(function()
      wsuv.connect(url, { reconnect = { attempts = 0 } })
    end, "connect: reconnect.attempts must be a number >= 1")
    assert.has_error(function()
      wsuv.connect(url, { reconnect = { on_reconnect = 1 } })
    end, "connect: reconnect.on_reconnect must be a function")
  end)
end)
