-- spec/limits_spec.lua: the limits and timeouts not covered elsewhere:
-- max_head (431), max_frame (1009), close_timeout on both sides, the
-- handshake_timeout option, max_pending and max_connections (503 with
-- Retry-After) and keepalive dead-peer
-- detection (ping_interval/ping_timeout) on both sides.
local H = require "spec.helper"
local wsuv = require "wsuv"

describe("limits", function()
  local servers, conns, sockets, peers, cores = {}, {}, {}, {}, {}

  local function listen(opts)
    opts.host, opts.port = "127.0.0.1", 0
    opts.on_connect = opts.on_connect or H.echo
    local s = assert(wsuv.listen(opts))
    servers[#servers + 1] = s
    return s, ("ws://127.0.0.1:%d/"):format(s.port)
  end

  local function connect(url, opts)
    return H.connect_kept(wsuv, conns, url, opts)
  end

  after_each(function()
    for _, s in ipairs(sockets) do
      s:close()
    end
    sockets = {}
    for _, p in ipairs(peers) do
      H.stop(p)
    end
    peers = {}
    for _, c in ipairs(cores) do
      if c:state() ~= "closed" then
        c:abort()
      end
    end
    cores = {}
    for _, c in ipairs(conns) do
      if c:state() ~= "closed" then
        c:abort()
      end
    end
    conns = {}
    for _, s in ipairs(servers) do
      s:close(1)
    end
    servers = {}
    assert.are.same({ 0, 0 }, { H.live(wsuv) })
  end)

  it("a request head over max_head is refused with 431", function()
    local _, url = listen({ max_head = 1024 })
    local c, _, code, response = connect(url, { headers = { ["x-big"] = ("a"):rep(2000) } })
    assert.is_nil(c)
    assert.are.equal("EHANDSHAKE", code)
    assert.are.equal(431, response.status)
    -- The same request under the limit passes.
    local ok = connect(url, { headers = { ["x-big"] = ("a"):rep(500) } })
    assert.is_truthy(ok)
  end)

  -- The smaller of max_frame and max_message bounds a one-frame message:
  -- at the bound it passes, one byte over closes with 1009. With max_frame
  -- above max_message (explicit), the message limit still holds.
  for _, case in ipairs({
    { "a frame over max_frame closes with 1009, one at the limit passes", 1000, 10000, 1000 },
    { "a max_frame above max_message still holds messages to max_message (1009)", 20000, 10000,
      10000 },
  }) do
    local name, max_frame, max_message, bound = case[1], case[2], case[3], case[4]
    it(name, function()
      local _, url = listen({ max_frame = max_frame, max_message = max_message })
      local c = assert(connect(url))
      assert.is_true(c:send(("x"):rep(bound)))
      assert.are.equal(bound, #assert(c:receive(5)))
      assert.is_true(c:send(("x"):rep(bound + 1)))
      local msg, kind, code = c:receive(5)
      assert.is_nil(msg)
      assert.are.equal("closed", kind)
      assert.are.equal(1009, code)
    end)
  end

  it("close() returns after close_timeout when the peer never answers", function()
    -- The server never reads, so its close reply waits behind the unread
    -- message for the server's own (long) close_timeout.
    local _, url = listen({
      close_timeout = 5,
      on_connect = function(conn)
        -- Never reads and never closes (returning would close: that answers).
        while conn:state() ~= "closed" do
          wsuv.sleep(0.05)
        end
      end,
    })
    local c = assert(connect(url, { close_timeout = 0.3 }))
    assert.is_true(c:send("unread"))
    local t0 = wsuv.now()
    c:close(1000, "bye")
    local took = wsuv.now() - t0
    assert.is_true(took >= 0.25 and took < 2, "close took " .. took .. " s")
    assert.are.equal("closed", c:state())
  end)

  it("the server's close_timeout bounds how long it waits for Lua to read", function()
    local _, url = listen({
      close_timeout = 0.3,
      on_connect = function(conn)
        -- Never reads and never closes (returning would close: that answers).
        while conn:state() ~= "closed" do
          wsuv.sleep(0.05)
        end
      end,
    })
    local c = assert(connect(url, { close_timeout = 5 }))
    assert.is_true(c:send("unread"))
    local t0 = wsuv.now()
    local ok, code = c:close(1000, "bye")
    local took = wsuv.now() - t0
    assert.is_true(ok)
    assert.are.equal(1000, code)
    assert.is_true(took >= 0.25 and took < 2, "close took " .. took .. " s")
  end)

  -- The peer's close came in the same read as its last message: our reply
  -- waits until that message is read (RFC 6455 5.5.1), and close() must
  -- answer it at once instead of waiting out close_timeout.
  it("close() right after the peer's last message and close answers at once", function()
    local server_end
    local _, url = listen({
      on_connect = function(conn)
        conn:send("last")
        server_end = { conn:close(1000, "") } -- message and close in one write
      end,
    })
    local c = assert(connect(url))
    assert.are.equal("last", (c:receive(5)))
    local t0 = wsuv.now()
    local ok, code = c:close()
    assert.are.same({ true, 1000 }, { ok, code })
    assert.is_true(wsuv.now() - t0 < 1, "close took " .. (wsuv.now() - t0) .. " s")
    assert.is_true(H.wait_until(wsuv, function()
      return server_end ~= nil
    end, 2))
    assert.are.same({ true, 1000 }, { server_end[1], server_end[2] })
  end)

  it("a client that sends no request is dropped after handshake_timeout", function()
    local s = listen({ handshake_timeout = 0.3 })
    local sock = H.raw_connect(s.port)
    sockets[#sockets + 1] = sock
    sock:settimeout(0)
    local t0 = wsuv.now()
    local closed = H.wait_until(wsuv, function()
      local _, err = sock:receive(1)
      return err == "closed"
    end, 3)
    local took = wsuv.now() - t0
    assert.is_true(closed)
    assert.is_true(took >= 0.25 and took < 1.5, "dropped after " .. took .. " s")
  end)
  -- Raw clients that have each sent an upgrade request; none read yet.
  local function raw_requests(port, n)
    local list = {}
    for i = 1, n do
      local sock = H.raw_connect(port)
      sockets[#sockets + 1] = sock
      assert(sock:send(H.UPGRADE))
      sock:settimeout(0)
      list[i] = sock
    end
    return list
  end

  -- Status codes of the responses that have arrived on socks, by index:
  -- waits at most timeout seconds until want of them have, and adds them to
  -- got (the status lines already read) and returns it.
  local function statuses(socks, want, timeout, got)
    got = got or {}
    H.wait_until(wsuv, function()
      local n = 0
      for i, sock in ipairs(socks) do
        if not got[i] then
          local line = sock:receive("*l")
          got[i] = line and tonumber(line:match("^HTTP/1%.1 (%d%d%d) "))
        end
        if got[i] then
          n = n + 1
        end
      end
      return n >= want
    end, timeout)
    return got
  end

  local function count(got, status)
    local n = 0
    for _, v in pairs(got) do
      if v == status then
        n = n + 1
      end
    end
    return n
  end

  it("a burst of requests beyond max_pending: the excess gets 503, retry after 1 s", function()
    -- Six requests arrive before the loop runs, so C parses all of them in
    -- one pass, before the server's Lua coroutine can take any.
    local s = listen({ max_pending = 2 })
    local socks = raw_requests(s.port, 6)
    local got = statuses(socks, 6, 3)
    assert.are.same({ 2, 4 }, { count(got, 101), count(got, 503) })
    -- The two that were queued are real connections: they echo.
    for i, sock in ipairs(socks) do
      local retry_after
      repeat
        local line = assert(sock:receive("*l"))
        retry_after = retry_after or line:match("^Retry%-After: (%d+)$")
      until line == ""
      assert.are.equal(got[i] == 503 and "1" or nil, retry_after)
      if got[i] == 101 then
        assert(sock:send(wsuv.core.encode_frame(1, "hi", { mask = true })))
        local echo = ""
        H.wait_until(wsuv, function()
          local data, _, part = sock:receive(4 - #echo)
          echo = echo .. (data or part)
          return #echo == 4
        end, 3)
        assert.are.equal("\129\2hi", echo)
      end
    end
  end)

  it("a connection beyond max_connections gets 503 with Retry-After, until one leaves", function()
    local s, url = listen({ max_connections = 2 })
    local a, b = assert(connect(url)), assert(connect(url))
    local c, err, code, response = connect(url)
    assert.is_nil(c)
    assert.are.equal("EHANDSHAKE", code, err)
    assert.are.equal(503, response.status)
    assert.are.equal("5", H.header(response, "retry-after"))
    assert.truthy(response.body:find("too many connections", 1, true), response.body)
    -- The two admitted still echo; once one has gone, there is room again.
    assert(b:send("still here"))
    assert.are.equal("still here", (b:receive(3)))
    a:close()
    assert.is_true(H.wait_until(wsuv, function()
      local n = 0
      for _ in s:clients() do
        n = n + 1
      end
      return n == 1
    end, 3))
    c = assert(connect(url))
    assert(c:send("third"))
    assert.are.equal("third", (c:receive(3)))
  end)

  it("max_connections counts connections still in their handshake", function()
    local s = listen({ max_connections = 2 })
    -- Two sockets that have sent nothing hold the two places.
    for _ = 1, 2 do
      sockets[#sockets + 1] = H.raw_connect(s.port)
    end
    wsuv.sleep(0.05)
    local c, _, code, response = connect(("ws://127.0.0.1:%d/"):format(s.port))
    assert.are.same({ nil, "EHANDSHAKE", 503 }, { c, code, response and response.status })
  end)

  it("by default max_connections keeps 64 descriptors spare: the next is answered 503", function()
    -- A child with 160 descriptors admits 96 connections; the 97th would
    -- otherwise come near EMFILE, where libuv drops connections unanswered.
    local job = H.start_job(("ulimit -n 160 && exec %s %s examples/echo_server.lua 0"):format(
      H.lua_env(), H.lua_interpreter()))
    peers[#peers + 1] = job
    local url
    assert.is_true(H.wait_until(wsuv, function()
      url = (H.read_file(job.out) or ""):match("ws://127%.0%.0%.1:%d+/")
      return url ~= nil
    end, 10), "the echo server did not come up")
    for i = 1, 96 do
      assert(connect(url), "connection " .. i)
    end
    local c, _, code, response = connect(url)
    assert.are.same({ nil, "EHANDSHAKE", 503 }, { c, code, response and response.status })
    assert.are.equal("5", H.header(response, "retry-after"))
    assert(conns[96]:send("last"))
    assert.are.equal("last", (conns[96]:receive(3)))
  end)

  it("a max_connections the descriptor limit cannot hold is refused at listen", function()
    -- At EMFILE libuv drops clients unanswered and tells no one: better
    -- to hear it when the server starts.
    local script = "local wsuv = require 'wsuv'; for _, n in ipairs({ 200, 96 }) do "
      .. "local s, err, code = wsuv.listen({ port = 0, max_connections = n, "
      .. "on_connect = function() end }); print(n, s and 'ok' or err, code); "
      .. "if s then s:close() end end"
    local job = H.start_job(("ulimit -n 160 && %s %s"):format(H.lua_env(), H.lua_script(script)))
    local rc, out = H.wait_job(wsuv, job, 10)
    assert.are.equal(0, rc, out)
    assert.truthy(out:find("200\tlisten: max_connections 200 needs more descriptors than "
      .. "`ulimit -n` (160) allows: raise it, or allow at most 96\tEINVAL\n", 1, true), out)
    assert.truthy(out:find("96\tok\tnil\n", 1, true), out)
  end)

  it("max_pending counts the requests Lua has not taken yet (core server)", function()
    local core = wsuv.core
    local s = assert(core.listen("127.0.0.1", 0, { max_pending = 2 }))
    local ok, err = pcall(function()
      local socks = raw_requests(s:port(), 3)
      local got = statuses(socks, 1, 3)
      -- Two wait in the queue (no answer), the third was refused.
      assert.are.same({ 0, 1 }, { count(got, 101), count(got, 503) })
      wsuv.sleep(0.05)
      got = statuses(socks, 1, 0, got)
      assert.are.same({ 0, 1 }, { count(got, 101), count(got, 503) })
      -- Taking one frees a slot: a fourth request is queued, not refused.
      local c = assert(s:try_accept())
      cores[#cores + 1] = c
      assert.are.equal("request", c:state())
      assert(c:accept(nil, nil, nil))
      local more = raw_requests(s:port(), 1)
      socks[4] = more[1]
      wsuv.sleep(0.1)
      got = statuses(socks, 2, 3, got)
      assert.are.same({ 1, 1 }, { count(got, 101), count(got, 503) }, "4th: " .. tostring(got[4]))
      local queued = 0
      while true do
        local q = s:try_accept()
        if not q then
          break
        end
        cores[#cores + 1] = q
        queued = queued + 1
      end
      assert.are.equal(2, queued)
    end)
    s:stop()
    assert(ok, err)
  end)

  it("keepalive: a peer that never answers pings is dropped (server side)", function()
    local result
    local s = listen({
      ping_interval = 0.15,
      ping_timeout = 0.15,
      on_connect = function(conn)
        local t0 = wsuv.now()
        local r = { conn:receive() }
        r.took = wsuv.now() - t0
        r.state = { conn:state() }
        result = r
      end,
    })
    local sock = raw_requests(s.port, 1)[1]
    local bytes = ""
    assert.is_true(H.wait_until(wsuv, function()
      local data, err, part = sock:receive(4096)
      bytes = bytes .. (data or part or "")
      return err == "closed"
    end, 3))
    assert.is_truthy(result)
    -- receive() -> nil, "closed", 1006 (no close frame: the peer is gone),
    -- and the reason says why.
    assert.are.same({ "closed", 1006, "keepalive: no pong from peer" },
      { result[2], result[3], result[4] })
    assert.is_nil(result[1])
    assert.are.same({ "closed", "keepalive: no pong from peer", "ETIMEDOUT" }, result.state)
    -- ping_interval of silence, then ping_timeout without a pong (the
    -- sweep runs every 0.1 s).
    assert.is_true(result.took >= 0.28 and result.took < 0.9, "dropped after " .. result.took)
    -- The peer saw the 101, one empty ping, and then the TCP close.
    local head, frames = bytes:match("^(.-\r\n\r\n)(.*)$")
    assert.is_truthy(head and head:match("^HTTP/1%.1 101 "), bytes)
    assert.are.equal("\137\0", frames)
  end)

  it("keepalive: our client drops a server that never answers pings", function()
    local peer = H.start_server(H.PYTHON .. " " .. H.PEERS .. "raw_server.py --port 0 --mode mute")
    peers[#peers + 1] = peer
    local c = assert(connect(("ws://127.0.0.1:%d/"):format(peer.port),
      { ping_interval = 0.15, ping_timeout = 0.15 }))
    local t0 = wsuv.now()
    local msg, kind, code, reason = c:receive(5)
    local took = wsuv.now() - t0
    assert.is_nil(msg)
    assert.are.same({ "closed", 1006, "keepalive: no pong from peer" }, { kind, code, reason })
    assert.are.same({ "closed", "keepalive: no pong from peer", "ETIMEDOUT" }, { c:state() })
    assert.is_true(took >= 0.28 and took < 0.9, "dropped after " .. took)
  end)

  it("keepalive: a peer that answers stays connected, idle, past the timeout", function()
    local _, url = listen({})
    local c = assert(connect(url, { ping_interval = 0.1, ping_timeout = 0.1 }))
    wsuv.sleep(0.45)
    assert.are.equal("open", c:state())
    -- The keepalive pings went out and their pongs came back.
    assert.is_true(c:pongs() >= 2, "pongs: " .. c:pongs())
    assert.is_true(c:send("still here"))
    assert.are.equal("still here", c:receive(2))
  end)
end)
