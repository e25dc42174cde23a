-- spec/conn_spec.lua: a client and a server in one process. The client
-- calls run the loop from busted's main thread; the server side runs in
-- wsuv coroutines (on_connect).
local H = require "spec.helper"
local wsuv = require "wsuv"
local compat = require "wsuv.compat"

local servers, clients = {}, {}

local echo = H.echo

local function listen(opts)
  opts = opts or {}
  opts.host, opts.port = "127.0.0.1", 0
  opts.on_connect = opts.on_connect or echo
  local s = assert(wsuv.listen(opts))
  servers[#servers + 1] = s
  return s, ("ws://127.0.0.1:%d/"):format(s.port)
end

local function connect(url, opts)
  local c, err, code, resp = wsuv.connect(url, opts)
  assert(c, tostring(err) .. " " .. tostring(code))
  clients[#clients + 1] = c
  return c, resp
end

local function wait_for(cond, timeout)
  H.wait_for(wsuv, cond, timeout)
end

describe("wsuv connection", function()
  after_each(function()
    H.close_and_check(wsuv, clients, servers)
  end)

  describe("messages", function()
    it("round-trips text, binary and empty messages", function()
      local _, url = listen()
      local c = connect(url)
      local bin = wsuv.core.random(300) .. "\0\255"
      assert.is_true(c:send("héllo"))
      assert.is_true(c:send(bin, "binary"))
      assert.is_true(c:send(""))
      assert.is_true(c:send("", "binary"))
      assert.are.same({ "héllo", "text" }, { c:receive(5) })
      assert.are.same({ bin, "binary" }, { c:receive(5) })
      assert.are.same({ "", "text" }, { c:receive(5) })
      assert.are.same({ "", "binary" }, { c:receive(5) })
    end)

    it("keeps order over many messages of mixed sizes", function()
      local _, url = listen()
      local c = connect(url)
      local sent = {}
      for i = 1, 50 do
        sent[i] = ("%d:"):format(i) .. ("x"):rep(i * 997 % 70000)
        assert.is_true(c:send(sent[i], "binary"))
      end
      for i = 1, 50 do
        local m = c:receive(5)
        assert.are.equal(sent[i], m)
      end
    end)

    it("keeps order and kind over thousands of small and large messages queued unread", function()
      -- Small messages wait in a connection's byte queue, large ones in a
      -- table: sizes around the boundary (256), in batches the reader
      -- drains in part, so the queue grows, wraps and mixes both kinds.
      local sizes = { 0, 1, 7, 40, 41, 255, 256, 257, 300, 5000, 32 }
      local N = 3000
      local function message(i)
        local n = sizes[i % #sizes + 1]
        -- ASCII, so that it is valid text too
        local pair = string.char(33 + i % 90) .. string.char(33 + i % 89)
        return pair:rep(math.floor(n / 2) + 1):sub(1, n)
      end
      local got, bad = 0, nil
      local _, url = listen {
        on_connect = function(conn)
          while got < N do
            local m, kind = conn:receive()
            if not m then
              break
            end
            got = got + 1
            local want_kind = got % 2 == 0 and "text" or "binary"
            if not bad and (m ~= message(got) or kind ~= want_kind) then
              bad = ("message %d: %d bytes %s, wanted %d bytes %s"):format(
                got, #m, kind, #message(got), want_kind)
            end
            if got % 13 == 0 then
              wsuv.sleep(0.001) -- let more arrive while some wait
            end
          end
        end,
      }
      local c = connect(url)
      for i = 1, N do
        assert(c:send(message(i), i % 2 == 0 and "text" or "binary"))
        if i % 500 == 0 then
          wait_for(function()
            return got >= i - 400
          end)
        end
      end
      wait_for(function()
        return got == N or bad ~= nil
      end, 20)
      assert.is_nil(bad)
      assert.are.equal(N, got)
    end)

    it("raises when sending invalid UTF-8 as text, and misuse raises", function()
      local _, url = listen()
      local c = connect(url)
      assert.has_error(function()
        c:send("abc\255")
      end)
      assert.has_error(function()
        c:send(42)
      end)
      assert.has_error(function()
        c:send("x", "blob")
      end)
      -- The same bytes go through as binary, and the connection is fine.
      assert.is_true(c:send("abc\255", "binary"))
      assert.are.same({ "abc\255", "binary" }, { c:receive(5) })
    end)

    it("misuse raises an error naming the mistake at the caller's line", function()
      -- Lua 5.4's send and receive are C methods, the others' Lua: the same
      -- messages either way, pointing at the call rather than into wsuv.
      local _, url = listen()
      local c = connect(url)
      local cases = {
        { 'send: kind must be "text" or "binary"', c.send, c, "x", "blob" },
        { "send: data must be a string, got number", c.send, c, 42 },
        { "send: data must be a string, got nil", c.send, c },
        { "send: options must be a table", c.send, c, "x", "text", 5 },
        { "timeout must be a non-negative number of seconds", c.receive, c, -1 },
        { "timeout must be a non-negative number of seconds", c.receive, c, "5" },
      }
      for _, case in ipairs(cases) do
        local method, args = case[2], { select(3, compat.unpack(case)) }
        local ok, err = pcall(function()
          method(compat.unpack(args)) -- the line the error must name
        end)
        assert.is_false(ok)
        err = tostring(err)
        assert.truthy(err:find(case[1], 1, true), err)
        assert.truthy(err:find("conn_spec.lua:%d+: "), err)
      end
      local ok, err = pcall(c.send, c, "abc\255")
      assert.is_false(ok)
      assert.truthy(tostring(err):find("text is not valid UTF-8", 1, true), tostring(err))
      -- The connection is still fine.
      assert.is_true(c:send("fine", "text", { compress = false }))
      assert.are.same({ "fine", "text" }, { c:receive(5) })
    end)

    it("send after close returns nil, \"closed\"", function()
      local _, url = listen()
      local c = connect(url)
      assert.is_true((c:close()))
      local ok, err = c:send("late")
      assert.is_nil(ok)
      assert.are.equal("closed", err)
    end)

    it("receive(timeout) times out in about the time asked", function()
      local _, url = listen()
      local c = connect(url)
      local t0 = wsuv.now()
      assert.are.same({ nil, "timeout", "ETIMEDOUT" }, { c:receive(0.2) })
      local dt = wsuv.now() - t0
      assert.is_true(dt >= 0.18 and dt < 1.5, "waited " .. dt)
      -- Still usable afterwards.
      c:send("after")
      assert.are.equal("after", (c:receive(5)))
    end)

    it("news that is not a message (a pong) leaves receive waiting for one", function()
      -- The server pings while its handler waits in receive: the pong
      -- wakes the handler's wait, which must go on until the message.
      local results, pongs = {}, 0
      local _, url = listen {
        on_connect = function(conn)
          wsuv.spawn(function()
            for _ = 1, 3 do
              if conn:ping() then
                pongs = pongs + 1
              end
            end
          end)
          local t0 = wsuv.now()
          results[1] = { conn:receive() }
          results[2] = { conn:receive(5) }
          results[3] = { conn:receive(0.2) }
          results.waited = wsuv.now() - t0
        end,
      }
      local c = connect(url)
      wait_for(function()
        return pongs == 3
      end)
      c:send("one")
      c:send("two")
      wait_for(function()
        return results.waited ~= nil
      end)
      assert.are.same({ "one", "text" }, results[1])
      assert.are.same({ "two", "text" }, results[2])
      assert.are.same({ nil, "timeout", "ETIMEDOUT" }, results[3])
    end)

    it("receive(0) polls without waiting", function()
      local _, url = listen()
      local c = connect(url)
      local t0 = wsuv.now()
      assert.are.same({ nil, "timeout", "ETIMEDOUT" }, { c:receive(0) })
      assert.is_true(wsuv.now() - t0 < 0.05)
      c:send("polled")
      local got
      assert.is_true(H.wait_until(wsuv, function()
        got = c:receive(0)
        return got ~= nil
      end, 5))
      assert.are.equal("polled", got)
      assert.are.same({ nil, "timeout", "ETIMEDOUT" }, { c:receive(0) })
    end)

    it("poll() returns what has arrived and never waits", function()
      local _, url = listen()
      local c = connect(url)
      for i = 1, 3 do
        c:send("p" .. i)
      end
      local got = {}
      wait_for(function()
        for m in c:poll() do
          got[#got + 1] = m
        end
        return #got == 3
      end)
      assert.are.same({ "p1", "p2", "p3" }, got)
      local t0 = wsuv.now()
      for _ in c:poll() do
        error("nothing should be left")
      end
      assert.is_true(wsuv.now() - t0 < 0.05)
    end)

    it("ping returns a positive round-trip time", function()
      local _, url = listen()
      local c = connect(url)
      local rtt = c:ping()
      assert.are.equal("number", type(rtt))
      assert.is_true(rtt > 0 and rtt < 5)
      rtt = c:ping("payload", 5)
      assert.is_true(rtt > 0)
      assert.are.equal("payload", select(2, c:pongs()))
      assert.has_error(function()
        c:ping(("x"):rep(126))
      end)
    end)
  end)

  describe("messages() iterator", function()
    local function sender(conn)
      for i = 1, 3 do
        conn:send("m" .. i)
      end
      conn:close(1000, "done")
    end

    it("works in the main thread until the connection closes", function()
      local _, url = listen { on_connect = sender }
      local c = connect(url)
      local got = {}
      for m, kind in c:messages() do
        got[#got + 1] = m .. ":" .. kind
      end
      assert.are.same({ "m1:text", "m2:text", "m3:text" }, got)
      assert.are.same({ nil, "closed", 1000, "done" }, { c:receive() })
    end)

    it("in a wsuv coroutine: works on 5.2+/LuaJIT, raises a clear error on Lua 5.1", function()
      local result
      local _, url = listen {
        on_connect = function(conn)
          conn:send("ready")
          local ok, err = pcall(function()
            local got = {}
            for m in conn:messages() do
              got[#got + 1] = m
            end
            return got
          end)
          result = { ok = ok, err = err }
        end,
      }
      local c = connect(url)
      assert.are.equal("ready", (c:receive(5)))
      wsuv.sleep(0.05)
      c:send("a")
      c:send("b")
      c:close()
      wait_for(function()
        return result ~= nil
      end)
      if compat.yieldable_pcall then
        assert.is_true(result.ok, tostring(result.err))
        assert.are.same({ "a", "b" }, result.err)
      else
        assert.is_false(result.ok)
        assert.truthy(tostring(result.err):find("Lua 5.1", 1, true), tostring(result.err))
        assert.truthy(tostring(result.err):find("conn:receive()", 1, true))
      end
    end)
  end)

  describe("closing", function()
    it("close(4000, \"bye\") from the client reaches the server and is echoed", function()
      local seen
      local _, url = listen {
        on_connect = function(conn)
          seen = { conn:receive() }
        end,
      }
      local c = connect(url)
      local ok, code, reason = c:close(4000, "bye")
      assert.is_true(ok)
      assert.are.equal(4000, code)
      assert.are.equal("string", type(reason))
      wait_for(function()
        return seen ~= nil
      end)
      assert.are.same({ nil, "closed", 4000, "bye" }, seen)
      assert.are.equal("closed", c:state())
      assert.are.same({ nil, "closed", 4000, reason }, { c:receive() })
    end)

    it("close() right after a send does not wait for the unread echo", function()
      -- The echo arrives with the server's close reply; nothing is owed to
      -- the peer once we closed first, so close() returns at once (it took
      -- the 10-second close timeout) and the echo can still be read.
      local _, url = listen()
      local c = connect(url)
      assert.is_true(c:send("last words"))
      local t0 = wsuv.now()
      local ok, code = c:close()
      local took = wsuv.now() - t0
      assert.is_true(ok)
      assert.are.equal(1000, code)
      assert.is_true(took < 2, ("close took %.2f s"):format(took))
      assert.are.same({ "last words", "text" }, { c:receive(0) })
      assert.are.same({ nil, "closed", 1000, "" }, { c:receive(0) })
    end)

    it("close_status says nothing while open, then what receive will report", function()
      local _, url = listen()
      local c = connect(url)
      assert.are.equal(0, select("#", c:close_status()))
      assert.is_true(c:send("echoed"))
      assert.are.equal("echoed", (c:receive(5)))
      assert.is_true(c:send("unread"))
      wsuv.sleep(0.05) -- the echo arrives and stays unread
      c:start_close(4002, "done")
      wait_for(function()
        return c:state() == "closed"
      end)
      -- (the peer's reply echoes the code, with no reason)
      assert.are.same({ 4002, "" }, { c:close_status() })
      assert.are.same({ "unread", "text" }, { c:receive(0) }) -- it took nothing
      assert.are.same({ nil, "closed", 4002, "" }, { c:receive(0) })
    end)

    it("a server-initiated close reaches the client's receive", function()
      local closed
      local _, url = listen {
        on_connect = function(conn)
          closed = { conn:close(4001, "server says bye") }
        end,
      }
      local c = connect(url)
      assert.are.same({ nil, "closed", 4001, "server says bye" }, { c:receive(5) })
      wait_for(function()
        return closed ~= nil
      end)
      assert.is_true(closed[1])
      assert.are.equal(4001, closed[2])
    end)

    it("close validates its arguments", function()
      local _, url = listen()
      local c = connect(url)
      assert.has_error(function()
        c:close("x")
      end)
      assert.has_error(function()
        c:close(1000, 5)
      end)
      assert.has_error(function()
        c:close(999)
      end)
      assert.has_error(function()
        c:close(1000, ("r"):rep(124))
      end)
      assert.is_true((c:close()))
      -- Closing twice is harmless.
      assert.is_true((c:close()))
    end)

    it("a message over the server's max_message closes with 1009", function()
      local server_saw
      local _, url = listen {
        max_message = 1000,
        on_connect = function(conn)
          local saw = {}
          while true do
            local m, _, code = conn:receive()
            saw[#saw + 1] = m or code
            if not m then
              break
            end
          end
          server_saw = saw
        end,
      }
      local c = connect(url)
      assert.is_true(c:send(("x"):rep(1000)))
      assert.is_true(c:send(("x"):rep(2000)))
      local m = c:receive(5)
      assert.is_nil(m) -- nothing echoed: the handler only receives
      local _, err, code = c:receive(5)
      assert.are.equal("closed", err)
      assert.are.equal(1009, code)
      wait_for(function()
        return server_saw ~= nil
      end)
      assert.are.equal(1000, #server_saw[1])
      assert.are.equal(1009, server_saw[2])
      assert.are.equal(2, #server_saw)
    end)

    it("idle_timeout closes an idle connection with 1001", function()
      local _, url = listen { idle_timeout = 0.25 }
      local c = connect(url)
      local t0 = wsuv.now()
      -- Activity keeps it open.
      for _ = 1, 3 do
        wsuv.sleep(0.1)
        c:send("keep")
        assert.are.equal("keep", (c:receive(5)))
      end
      assert.are.equal("open", c:state())
      local _, err, code = c:receive(5)
      local dt = wsuv.now() - t0
      assert.are.equal("closed", err)
      assert.are.equal(1001, code)
      assert.is_true(dt >= 0.5, "closed after " .. dt)
    end)

    it("ping_interval keepalive sends pings and keeps the connection open", function()
      local _, url = listen()
      local c = connect(url, { ping_interval = 0.1, ping_timeout = 2 })
      local before = c:pongs()
      assert.are.same({ nil, "timeout", "ETIMEDOUT" }, { c:receive(0.55) })
      local after = c:pongs()
      assert.is_true(after - before >= 2, "pongs: " .. (after - before))
      assert.are.equal("open", c:state())
      c:send("still here")
      assert.are.equal("still here", (c:receive(5)))
    end)
  end)

  describe("streaming", function()
    it("receives a 1 MiB message in several chunks (stream = true)", function()
      local chunks, fins, kinds
      local _, url = listen {
        stream = true,
        on_connect = function(conn)
          chunks, fins, kinds = {}, {}, {}
          while true do
            local data, kind, fin = conn:receive()
            if not data then
              break
            end
            chunks[#chunks + 1] = data
            fins[#fins + 1] = fin
            kinds[#kinds + 1] = kind
            if fin then
              conn:send("got " .. #table.concat(chunks))
            end
          end
        end,
      }
      local c = connect(url)
      local big = wsuv.core.random(4096):rep(256)
      assert.are.equal(1024 * 1024, #big)
      assert.is_true(c:send(big, "binary"))
      assert.are.equal("got " .. #big, (c:receive(10)))
      assert.is_true(#chunks > 1, "chunks: " .. #chunks)
      assert.are.equal(big, table.concat(chunks))
      for i = 1, #chunks do
        assert.are.equal(i == #chunks, fins[i])
        assert.are.equal("binary", kinds[i])
      end
    end)

    it("sends a message in pieces with conn:writer", function()
      local got
      local _, url = listen {
        stream = true,
        on_connect = function(conn)
          got = {}
          while true do
            local data, kind, fin = conn:receive()
            if not data then
              break
            end
            got[#got + 1] = { data, kind, fin }
            if fin then
              conn:send("fin")
            end
          end
        end,
      }
      local c = connect(url)
      local w = c:writer("text")
      assert.is_true(w:write("hé"))
      assert.is_true(w:write("llo "))
      assert.is_true(w:finish("world"))
      assert.are.equal("fin", (c:receive(5)))
      local whole = {}
      for i, g in ipairs(got) do
        whole[#whole + 1] = g[1]
        assert.are.equal("text", g[2])
        assert.are.equal(i == #got, g[3])
      end
      assert.are.equal("héllo world", table.concat(whole))
      assert.has_error(function()
        w:write("more")
      end)
    end)

    it("a writer's frames arrive as one message on a normal connection", function()
      local _, url = listen()
      local c = connect(url)
      local w = c:writer()
      local parts = {}
      for i = 1, 20 do
        parts[i] = wsuv.core.random(1000 + i)
        assert.is_true(w:write(parts[i]))
      end
      assert.is_true(w:finish())
      assert.are.same({ table.concat(parts), "binary" }, { c:receive(5) })
    end)
  end)

  describe("backpressure", function()
    it("main-thread send reports \"buffer full\" when the peer does not read", function()
      local release = false
      local received = 0
      local _, url = listen {
        max_unread = 16 * 1024,
        on_connect = function(conn)
          while not release do
            wsuv.sleep(0.02)
          end
          while conn:receive() do
            received = received + 1
          end
        end,
      }
      local c = connect(url, { max_queued = 64 * 1024, high_water = 32 * 1024 })
      local chunk = ("b"):rep(32 * 1024)
      local sent, ok, err, code = 0, nil, nil, nil
      for _ = 1, 4000 do
        ok, err, code = c:send(chunk, "binary")
        if not ok then
          break
        end
        sent = sent + 1
      end
      assert.is_nil(ok, "never filled after " .. sent .. " sends")
      assert.are.equal("buffer full", err)
      assert.are.equal("string", type(code))
      assert.is_true(sent > 0)
      local queued, high, limit = c:queued()
      assert.are.equal(32 * 1024, high)
      assert.are.equal(64 * 1024, limit)
      assert.is_true(queued <= limit)
      -- Once the server reads, everything accepted arrives.
      release = true
      c:close()
      wait_for(function()
        return received == sent
      end)
    end)

    it("send in a wsuv coroutine waits for the reader instead of failing", function()
      local N, size = 200, 32 * 1024
      local reading = false
      local got = {}
      local _, url = listen {
        max_unread = 16 * 1024,
        on_connect = function(conn)
          wsuv.sleep(0.3)
          reading = true
          while true do
            local m = conn:receive()
            if not m then
              break
            end
            got[#got + 1] = tonumber(m:match("^(%d+):"))
          end
        end,
      }
      local c = connect(url, { max_queued = 64 * 1024, high_water = 32 * 1024 })
      local results, sent_before_read = {}, nil
      local done = false
      wsuv.spawn(function()
        for i = 1, N do
          local msg = (i .. ":"):rep(1) .. ("s"):rep(size)
          local ok, err = c:send(msg, "binary")
          results[#results + 1] = ok or err
          if not reading then
            sent_before_read = i
          end
        end
        done = true
      end)
      wait_for(function()
        return done
      end, 20)
      for i = 1, N do
        assert.are.equal(true, results[i], "send " .. i)
      end
      assert.is_true(sent_before_read < N, "the sender never waited")
      c:close()
      wait_for(function()
        return #got == N
      end)
      for i = 1, N do
        assert.are.equal(i, got[i])
      end
    end)

    it("a message that fits max_queued only when the queue is empty waits for it", function()
      -- The peer does not read: fillers go until the kernel's buffers are
      -- full and part of one stays queued. A message of exactly max_queued
      -- then fits only an empty queue: in a coroutine, send waits for that
      -- rather than failing (an echo of such messages lost one whenever the
      -- tail of the one before was still queued).
      local MAX, FILL = 1024 * 1024, 64 * 1024
      local release, result, fillers = false, nil, 0
      local _, url = listen {
        max_queued = MAX,
        high_water = 512 * 1024,
        on_connect = function(conn)
          wsuv.sleep(0.002) -- the handshake's response goes first
          while select(1, conn:queued()) == 0 and fillers < 2000 do
            fillers = fillers + 1
            assert(conn:send(("%06d"):format(fillers) .. ("f"):rep(FILL - 6), "binary"))
            wsuv.sleep(0.002) -- a pass: the queue goes to the kernel
          end
          release = true
          local w = conn:writer("binary") -- a writer's frames wait the same way
          result = {
            send = { conn:send(("B"):rep(MAX), "binary") },
            write = { w:write(("W"):rep(MAX)) },
            finish = { w:finish(("w"):rep(MAX)) },
          }
        end,
      }
      local c = connect(url, { max_unread = 64 * 1024, max_message = 4 * MAX })
      wait_for(function()
        return release
      end, 20)
      assert.is_true(fillers > 1 and fillers < 2000, "fillers: " .. fillers)
      for i = 1, fillers do
        local m = c:receive(10)
        assert.are.equal(i, tonumber(m:sub(1, 6)))
      end
      -- (compared as booleans: a failure must not print megabytes)
      assert.is_true(c:receive(10) == ("B"):rep(MAX), "the message of max_queued bytes")
      assert.is_true(c:receive(10) == ("W"):rep(MAX) .. ("w"):rep(MAX), "the writer's message")
      wait_for(function()
        return result ~= nil
      end)
      assert.are.same({ send = { true }, write = { true }, finish = { true } }, result)
    end)

    it("a send waiting for room ends with \"closed\" when the peer goes away", function()
      local MAX, FILL = 1024 * 1024, 64 * 1024
      local waiting, result = false, nil
      local _, url = listen {
        max_queued = MAX,
        high_water = 512 * 1024,
        on_connect = function(conn)
          wsuv.sleep(0.002)
          local n = 0
          while select(1, conn:queued()) == 0 and n < 2000 do
            n = n + 1
            assert(conn:send(("f"):rep(FILL), "binary"))
            wsuv.sleep(0.002)
          end
          waiting = true
          result = { conn:send(("B"):rep(MAX), "binary") }
        end,
      }
      local c = connect(url, { max_unread = 64 * 1024 })
      wait_for(function()
        return waiting
      end, 20)
      wsuv.sleep(0.05)
      assert.is_nil(result, "the send should be waiting for room")
      c:abort() -- the peer goes without reading
      wait_for(function()
        return result ~= nil
      end)
      assert.is_nil(result[1])
      assert.are.equal("closed", result[2])
    end)

    it("a frame larger than max_queued is \"buffer full\" even in a coroutine", function()
      local _, url = listen()
      local c = connect(url, { max_queued = 64 * 1024 })
      local result
      wsuv.spawn(function()
        result = { c:send(("x"):rep(64 * 1024 + 1), "binary") }
      end)
      wait_for(function()
        return result ~= nil
      end)
      assert.are.same({ nil, "buffer full", "EBUFFULL" }, result)
      assert.is_true(c:send("still open"))
    end)

    it("the server stops reading past max_unread and resumes when Lua reads", function()
      local N, size = 400, 16 * 1024
      local buffered, got, sender_done_at_read
      local sender_done = false
      local _, url = listen {
        max_unread = 64 * 1024,
        on_connect = function(conn)
          wsuv.sleep(0.5)
          sender_done_at_read = sender_done
          -- What is queued in Lua now, without running the loop.
          got = {}
          for m in conn:poll() do
            got[#got + 1] = tonumber(m:match("^(%d+):"))
          end
          buffered = #got
          while true do
            local m = conn:receive()
            if not m then
              break
            end
            got[#got + 1] = tonumber(m:match("^(%d+):"))
          end
        end,
      }
      local c = connect(url)
      wsuv.spawn(function()
        for i = 1, N do
          assert(c:send(i .. ":" .. ("r"):rep(size), "binary"))
        end
        sender_done = true
      end)
      wait_for(function()
        return sender_done and got and #got == N
      end, 20)
      assert.is_true(buffered >= 4 and buffered <= 8, "buffered in Lua: " .. buffered)
      assert.is_false(sender_done_at_read)
      for i = 1, N do
        assert.are.equal(i, got[i])
      end
    end)

    it("empty messages count towards max_unread too, and none is lost", function()
      -- 6-byte frames with no payload: counted by payload alone they would
      -- queue without end while the server does not read.
      local N = 50000
      local buffered, count, kinds_ok = nil, 0, true
      local _, url = listen {
        max_unread = 16 * 1024,
        on_connect = function(conn)
          wsuv.sleep(0.5)
          buffered = 0
          for _ in conn:poll() do
            buffered = buffered + 1
          end
          count = buffered
          while true do
            local m, kind = conn:receive()
            if not m then
              break
            end
            kinds_ok = kinds_ok and m == "" and kind == "binary"
            count = count + 1
          end
        end,
      }
      local c = connect(url)
      for _ = 1, N do
        assert(c:send("", "binary"))
      end
      wait_for(function()
        return count == N
      end, 20)
      -- One read's frames (64 KiB / 6 bytes) past the limit at most.
      assert.is_true(buffered < 12000, "buffered in Lua: " .. tostring(buffered))
      assert.is_true(kinds_ok)
    end)
  end)

  describe("server side", function()
    it("conn:request() and conn:data() describe the connection", function()
      local seen = {}
      local _, url = listen {
        on_connect = function(conn)
          local req = conn:request()
          local d = conn:data()
          d.n = (d.n or 0) + 1
          seen[#seen + 1] = {
            path = req.path, query = req.query, method = req.method,
            x = req.headers["x-test"], addr = req.remote_addr,
            port = req.remote_port, same = conn:data() == d, d = d,
            n = conn:data().n,
          }
          echo(conn)
        end,
      }
      local c1 = connect(url .. "room/1?user=bob", { headers = { ["X-Test"] = "yes" } })
      local c2 = connect(url .. "other")
      wait_for(function()
        return #seen == 2
      end)
      table.sort(seen, function(a, b)
        return a.path < b.path
      end)
      local a, b = seen[1], seen[2]
      assert.are.equal("/other", a.path)
      assert.are.equal("", a.query)
      assert.is_nil(a.x)
      assert.are.equal("/room/1", b.path)
      assert.are.equal("user=bob", b.query)
      assert.are.equal("GET", b.method)
      assert.are.equal("yes", b.x)
      assert.are.equal("127.0.0.1", b.addr)
      assert.are.equal("number", type(b.port))
      assert.is_true(a.same and b.same)
      assert.are.equal(1, b.n)
      assert.are_not.equal(a.d, b.d)
      c1:close()
      c2:close()
    end)

    it("__tostring shows the state and the peer", function()
      local s, url = listen()
      local c = connect(url)
      local text = tostring(c)
      assert.truthy(text:find("state=open", 1, true), text)
      assert.truthy(text:find("peer=127.0.0.1:" .. s.port, 1, true), text)
      c:close()
      text = tostring(c)
      assert.truthy(text:find("closed", 1, true), text)
      assert.truthy(tostring(s):find("listening", 1, true))
    end)
  end)

  it("`local c <close>` closes the connection on Lua 5.4", function()
    if _VERSION ~= "Lua 5.4" or rawget(_G, "jit") then
      pending("to-be-closed variables need Lua 5.4")
      return
    end
    local seen
    local _, url = listen {
      on_connect = function(conn)
        seen = { conn:receive() }
      end,
    }
    local chunk = assert(load([[
      local wsuv, url = ...
      local outer
      do
        local c <close> = assert(wsuv.connect(url))
        outer = c
        assert(c:send("inside"))
        assert(c:state() == "open")
      end
      return outer
    ]]))
    local c = chunk(wsuv, url)
    assert.are.equal("closed", c:state())
    wait_for(function()
      return seen ~= nil
    end)
    assert.are.equal("inside", seen[1])
  end)
end)

describe("examples/stream_echo.lua", function()
  it("echoes large messages chunk by chunk, text split mid-character included", function()
    H.with_example(wsuv, "stream_echo.lua", function(url)
      local c = assert(wsuv.connect(url, { max_message = 8 * 1024 * 1024 }))
      local bin = wsuv.core.random(4096):rep(768) .. "tail" -- 3 MiB and 4 bytes
      local text = ("é€x"):rep(100000) -- 600,000 bytes: chunks end inside characters
      assert.is_true(c:send(bin, "binary"))
      assert.is_true(c:send(text))
      assert.is_true(c:send("small"))
      -- (compared as booleans: a failure must not print megabytes)
      local m, kind = c:receive(10)
      assert.are.equal("binary", kind)
      assert.is_true(m == bin, "the 3 MiB message")
      m, kind = c:receive(10)
      assert.are.equal("text", kind)
      assert.is_true(m == text, "the text message")
      assert.are.same({ "small", "text" }, { c:receive(10) })
      c:close()
    end)
  end)
end)
