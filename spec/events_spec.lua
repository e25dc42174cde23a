-- spec/events_spec.lua: servers in the event style (on_open, on_message,
-- on_close): no coroutine per connection, messages in order per
-- connection, handlers that wait, errors, close().
local H = require "spec.helper"
local wsuv = require "wsuv"
local sched = require "wsuv.scheduler"

local servers, clients = {}, {}

local function listen(opts)
  opts.host, opts.port = "127.0.0.1", 0
  local s = assert(wsuv.listen(opts))
  servers[#servers + 1] = s
  return s, ("ws://127.0.0.1:%d"):format(s.port)
end

local function connect(url, opts)
  local c = assert(wsuv.connect(url, opts))
  clients[#clients + 1] = c
  return c
end

local function wait_for(cond, timeout)
  H.wait_for(wsuv, cond, timeout)
end

local function echo_message(c, m, k)
  c:send(m, k)
end

describe("wsuv server with on_message", function()
  after_each(function()
    H.close_and_check(wsuv, clients, servers)
    -- Workers and deciders end with their server.
    assert.are.equal(0, sched.count())
  end)

  it("echoes every message in order, between on_open and on_close", function()
    local log = {}
    local _, base = listen {
      on_open = function(c)
        log[c] = { "open" }
      end,
      on_message = function(c, m, k)
        local l = log[c]
        l[#l + 1] = m
        c:send(m, k)
      end,
      on_close = function(c, code, reason)
        local l = log[c]
        l[#l + 1] = ("close %d %s"):format(code, reason)
      end,
    }
    local cs = {}
    for i = 1, 3 do
      cs[i] = connect(base)
    end
    -- Interleaved sends from three clients, some of them binary.
    for n = 1, 200 do
      for i = 1, 3 do
        cs[i]:send(("%d:%d"):format(i, n), n % 2 == 0 and "binary" or "text")
      end
    end
    for i = 1, 3 do
      for n = 1, 200 do
        local m, k = cs[i]:receive(5)
        assert.are.equal(("%d:%d"):format(i, n), m)
        assert.are.equal(n % 2 == 0 and "binary" or "text", k)
      end
      assert.is_true((cs[i]:close(4000 + i, "bye")))
    end
    wait_for(function()
      local n = 0
      for _, l in pairs(log) do
        if l[#l]:match("^close") then
          n = n + 1
        end
      end
      return n == 3
    end)
    local seen = {}
    for _, l in pairs(log) do
      assert.are.equal("open", l[1])
      local i = tonumber(l[2]:match("^(%d):"))
      seen[i] = true
      assert.are.equal(202, #l) -- open, 200 messages, close: once each
      for n = 1, 200 do
        assert.are.equal(("%d:%d"):format(i, n), l[n + 1])
      end
      assert.are.equal(("close %d bye"):format(4000 + i), l[202])
    end
    assert.are.same({ true, true, true }, seen)
  end)

  it("150 connections replying in one pass all get their replies", function()
    -- 150 replies of 1 KB pass the transport's output burst bound: what is
    -- queued is written mid-pass and the buffers are reused.
    local _, base = listen { on_message = echo_message }
    local cs, kb = {}, ("k"):rep(1000)
    for i = 1, 150 do
      cs[i] = connect(base)
    end
    for i = 1, 150 do
      cs[i]:send(kb .. i, "binary")
    end
    for i = 1, 150 do
      local m, k = cs[i]:receive(5)
      assert.are.equal(kb .. i, m)
      assert.are.equal("binary", k)
    end
  end)

  it("keeps no coroutine per connection", function()
    local _, base = listen { on_message = echo_message }
    local before = sched.count()
    local cs = {}
    for i = 1, 30 do
      cs[i] = connect(base)
      cs[i]:send("x" .. i)
    end
    for i = 1, 30 do
      assert.are.equal("x" .. i, (cs[i]:receive(5)))
    end
    -- The acceptor, a pooled decider or two and a few idle workers.
    assert.is_true(sched.count() - before <= 8, "coroutines: " .. sched.count())
  end)

  it("a handler that waits holds up only its own connection, in order", function()
    local order = {}
    local _, base = listen {
      on_message = function(c, m)
        if m:sub(1, 4) == "slow" then
          wsuv.sleep(0.3)
        end
        order[#order + 1] = m
        c:send(m)
      end,
    }
    local a, b = connect(base), connect(base)
    a:send("slow1")
    a:send("a2")
    wsuv.sleep(0.05)
    local t0 = wsuv.now()
    b:send("b1")
    assert.are.equal("b1", (b:receive(5)))
    assert.is_true(wsuv.now() - t0 < 0.25, "b waited for a's handler")
    assert.are.equal("slow1", (a:receive(5)))
    assert.are.equal("a2", (a:receive(5)))
    assert.are.same({ "b1", "slow1", "a2" }, order)
  end)

  it("waits for the queue to drain under backpressure, keeping order", function()
    local big = ("z"):rep(256 * 1024)
    local _, base = listen {
      max_queued = 4 * 1024 * 1024,
      high_water = 256 * 1024,
      on_message = function(c, m)
        -- Ten big replies per message: send must wait between them.
        for i = 1, 10 do
          assert(c:send(m .. i .. big, "binary"))
        end
      end,
    }
    local c = connect(base, { max_message = 1024 * 1024 })
    c:send("p")
    c:send("q")
    for _, p in ipairs({ "p", "q" }) do
      for i = 1, 10 do
        local m = c:receive(10)
        assert.are.equal(p .. i, m:sub(1, #p + #tostring(i)))
        assert.are.equal(#p + #tostring(i) + #big, #m)
      end
    end
  end)

  it("an error in on_message closes that connection with 1011, the server goes on", function()
    local closed = {}
    local _, base = listen {
      on_message = function(c, m)
        if m == "boom" then
          error("kaboom")
        end
        c:send(m)
      end,
      on_close = function(_, code)
        closed[#closed + 1] = code
      end,
    }
    local bad, good = connect(base), connect(base)
    bad:send("boom")
    local _, err, code = bad:receive(5)
    assert.are.equal("closed", err)
    assert.are.equal(1011, code)
    good:send("fine")
    assert.are.equal("fine", (good:receive(5)))
    wait_for(function()
      return #closed == 1
    end)
    assert.are.equal(1011, closed[1])
    local again = connect(base)
    again:send("still here")
    assert.are.equal("still here", (again:receive(5)))
  end)

  it("an error in on_open closes that connection with 1011", function()
    local _, base = listen {
      on_open = function()
        error("no")
      end,
      on_message = echo_message,
    }
    local c = connect(base)
    local _, err, code = c:receive(5)
    assert.are.equal("closed", err)
    assert.are.equal(1011, code)
  end)

  it("on_open may wait; what arrives meanwhile is delivered after it", function()
    local got = {}
    local _, base = listen {
      on_open = function(c)
        wsuv.sleep(0.1)
        got[#got + 1] = "opened"
        c:send("hello")
      end,
      on_message = function(c, m)
        got[#got + 1] = m
        c:send(m)
      end,
    }
    local c = connect(base)
    c:send("early")
    assert.are.equal("hello", (c:receive(5)))
    assert.are.equal("early", (c:receive(5)))
    assert.are.same({ "opened", "early" }, got)
  end)

  it("serves what arrived during on_open as soon as on_open returns", function()
    -- Nothing else happens meanwhile: the loop must not block with the
    -- connection still to serve (it would wait for the next event, the
    -- 100 ms sweep at worst).
    local opened_at, served_at
    local _, base = listen {
      on_open = function()
        wsuv.sleep(0.1)
        opened_at = wsuv.now()
      end,
      on_message = function(c, m)
        served_at = served_at or wsuv.now()
        c:send(m)
      end,
    }
    local c = connect(base)
    c:send("early")
    wsuv.sleep(0.3)
    assert.is_truthy(served_at, "early was not served")
    assert.is_true(served_at - opened_at < 0.03, "served " .. (served_at - opened_at) .. " s late")
    assert.are.equal("early", (c:receive(5)))
  end)

  it("delivers chunks with stream = true", function()
    local chunks = {}
    local _, base = listen {
      stream = true,
      on_message = function(_, data, kind, last)
        chunks[#chunks + 1] = { data, kind, last }
      end,
    }
    local c = connect(base)
    local w = c:writer("text")
    w:write("ab")
    w:write("cd")
    w:finish("e")
    wait_for(function()
      return #chunks > 0 and chunks[#chunks][3] == true
    end)
    local all = {}
    for _, ch in ipairs(chunks) do
      assert.are.equal("text", ch[2])
      all[#all + 1] = ch[1]
    end
    assert.are.equal("abcde", table.concat(all))
  end)

  it("server:close() runs on_close for every client, with 1001", function()
    local codes = {}
    local s, base = listen {
      on_message = echo_message,
      on_close = function(_, code)
        codes[#codes + 1] = code
      end,
    }
    local cs = {}
    for i = 1, 3 do
      cs[i] = connect(base)
      cs[i]:send("x")
      assert.are.equal("x", (cs[i]:receive(5)))
    end
    assert.is_true(s:close())
    assert.are.same({ 1001, 1001, 1001 }, codes)
    for i = 1, 3 do
      local _, err, code = cs[i]:receive(5)
      assert.are.equal("closed", err)
      assert.are.equal(1001, code)
    end
  end)

  it("conn:close() inside on_message runs the closing handshake", function()
    local closed
    local _, base = listen {
      on_message = function(c, m)
        if m == "quit" then
          assert.is_true((c:close(4001, "asked")))
        end
      end,
      on_close = function(_, code)
        closed = code -- the peer's reply: it echoes the code
      end,
    }
    local c = connect(base)
    c:send("quit")
    local _, err, code, reason = c:receive(5)
    assert.are.equal("closed", err)
    assert.are.equal(4001, code)
    assert.are.equal("asked", reason)
    wait_for(function()
      return closed ~= nil
    end)
    assert.are.equal(4001, closed)
  end)

  it("listen checks the event options", function()
    assert.has_error(function()
      wsuv.listen { port = 0, on_message = 1 }
    end, "listen: option 'on_message' must be a function")
    assert.has_error(function()
      wsuv.listen { port = 0, on_message = echo_message, on_connect = H.echo }
    end, "listen: on_connect and on_message exclude each other")
    assert.has_error(function()
      wsuv.listen { port = 0, on_close = function() end }
    end, "listen: on_open and on_close go with on_message")
  end)
end)

describe("conn:flush()", function()
  it("writes what a coroutine queued before it yields", function()
    local s = assert(wsuv.listen { host = "127.0.0.1", port = 0, on_message = echo_message })
    local c = assert(wsuv.connect(("ws://127.0.0.1:%d"):format(s.port)))
    local queued_before, queued_after
    wsuv.spawn(function()
      c:send(("y"):rep(1000))
      queued_before = c:queued()
      c:flush()
      queued_after = c:queued()
    end)
    assert.are.equal(1000, #c:receive(5))
    assert.is_true(queued_before >= 1000)
    assert.are.equal(0, queued_after)
    c:close()
    s:close()
  end)
end)

describe("examples/events_server.lua", function()
  it("runs a chat room: joins, messages and leaves go to everyone", function()
    H.with_example(wsuv, "events_server.lua", function(url)
      local a = assert(wsuv.connect(url))
      assert.truthy((a:receive(5)):match("^guest1 .* joined$"))
      local b = assert(wsuv.connect(url))
      assert.truthy((a:receive(5)):match("^guest2 .* joined$"))
      assert.truthy((b:receive(5)):match("^guest2 .* joined$"))
      b:send("hello")
      assert.truthy((a:receive(5)):match("^guest2 .*: hello$"))
      assert.truthy((b:receive(5)):match("^guest2 .*: hello$"))
      b:close()
      assert.truthy((a:receive(5)):match("^guest2 .* left$"))
      a:close()
    end)
  end)
end)
