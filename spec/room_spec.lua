-- spec/room_spec.lua: wsuv.room(), a set of server connections that one
-- frame is broadcast to (a chat room): join, leave, members dropped once
-- they close, except (not back to the sender), two servers (ws:// and
-- wss://) in one room, close_slow, and misuse. Also server:broadcast's
-- except. Real clients over real sockets on 127.0.0.1.
local H = require "spec.helper"
local wsuv = require "wsuv"
local unpack = require("wsuv.compat").unpack

local servers, clients = {}, {}

local function connect(url, opts)
  local c = assert(wsuv.connect(url, opts))
  clients[#clients + 1] = c
  return c
end

local function wait_for(cond, timeout)
  H.wait_for(wsuv, cond, timeout)
end

-- A server whose every connection joins room; a text message from one
-- member goes to the others ("chat"); handler errors are kept in errs.
local function chat_server(room, opts)
  opts = opts or {}
  opts.host, opts.port = "127.0.0.1", 0
  opts.on_connect = function(conn)
    assert(room:join(conn))
    while true do
      local msg, kind = conn:receive()
      if not msg then
        break
      end
      room:broadcast(msg, kind, { except = conn })
    end
  end
  local s = assert(wsuv.listen(opts))
  servers[#servers + 1] = s
  return s, ("%s://127.0.0.1:%d/"):format(opts.tls and "wss" or "ws", s.port)
end

-- Opens n clients to url and waits until room counts them all.
local function join(room, url, n)
  local list = {}
  for i = 1, n do
    list[i] = connect(url)
  end
  wait_for(function()
    return room:count() == n
  end)
  return unpack(list, 1, n)
end

describe("wsuv.room", function()
  after_each(function()
    H.close_and_check(wsuv, clients, servers)
  end)

  it("sends a member's message to every other member, not back to the sender", function()
    local room = wsuv.room()
    local _, url = chat_server(room)
    local a, b, c = join(room, url, 3)
    assert.are.equal("wsuv.room{3}", tostring(room))
    assert(a:send("hello from a"))
    assert.are.same({ "hello from a", "text" }, { b:receive(5) })
    assert.are.same({ "hello from a", "text" }, { c:receive(5) })
    local big = wsuv.core.random(4096):rep(25) -- 100 KiB: pinned, not copied
    assert(c:send(big, "binary"))
    assert.are.same({ big, "binary" }, { a:receive(5) })
    assert.are.same({ big, "binary" }, { b:receive(5) })
    -- Nothing came back to the senders.
    assert.are.same({ nil, "timeout", "ETIMEDOUT" }, { a:receive(0.2) })
    assert.are.same({ nil, "timeout", "ETIMEDOUT" }, { c:receive(0) })
  end)

  it("counts, lists and sends only to open members; a closed one is dropped", function()
    local room = wsuv.room()
    local s, url = chat_server(room)
    local a, b, c = join(room, url, 3)
    local members = {}
    for conn in room:clients() do
      members[#members + 1] = conn
      assert.is_true(room:has(conn))
    end
    assert.are.equal(3, #members)
    b:close()
    wait_for(function()
      return room:count() == 2
    end)
    local n = 0
    for conn in room:clients() do
      n = n + 1
      assert.are.equal("open", conn:state())
    end
    assert.are.equal(2, n)
    assert.are.same({ 2, 0 }, { room:broadcast("to the two left") })
    assert.are.equal("to the two left", (a:receive(5)))
    assert.are.equal("to the two left", (c:receive(5)))
    -- The server closing everything empties the room.
    s:close()
    table.remove(servers)
    wait_for(function()
      return room:count() == 0
    end)
    assert.are.same({ 0, 0 }, { room:broadcast("nobody") })
  end)

  it("join twice is join once; leave removes; a closed connection cannot join", function()
    local room, other = wsuv.room(), wsuv.room()
    local seen = {}
    local s = assert(wsuv.listen {
      host = "127.0.0.1",
      port = 0,
      on_connect = function(conn)
        seen[#seen + 1] = conn
        H.echo(conn)
      end,
    })
    servers[#servers + 1] = s
    local url = ("ws://127.0.0.1:%d/"):format(s.port)
    local a, b = connect(url), connect(url)
    wait_for(function()
      return #seen == 2
    end)
    local sa, sb = seen[1], seen[2]
    assert.is_true(room:join(sa))
    assert.is_true(room:join(sa))
    assert.is_true(room:join(sb))
    assert.is_true(other:join(sb)) -- a connection may be in several rooms
    assert.are.equal(2, room:count())
    assert.is_true(room:leave(sa))
    assert.is_false(room:leave(sa))
    assert.is_false(room:has(sa))
    assert.are.same({ 1, 0 }, { room:broadcast("only b") })
    assert.are.equal("only b", (b:receive(5)))
    assert.are.same({ nil, "timeout", "ETIMEDOUT" }, { a:receive(0.2) })
    assert.are.same({ 1, 0 }, { other:broadcast("b again") })
    assert.are.equal("b again", (b:receive(5)))
    a:close()
    wait_for(function()
      return sa:state() == "closed"
    end)
    assert.are.same({ nil, "closed", "ECLOSED" }, { room:join(sa) })
    assert.are.equal(1, room:count())
  end)

  it("serves an event-style server (on_open, on_message) as well", function()
    local room = wsuv.room()
    local s = assert(wsuv.listen {
      host = "127.0.0.1",
      port = 0,
      on_open = function(conn)
        room:join(conn)
      end,
      on_message = function(conn, msg, kind)
        room:broadcast(msg, kind, { except = conn })
      end,
    })
    servers[#servers + 1] = s
    local a, b = join(room, ("ws://127.0.0.1:%d/"):format(s.port), 2)
    assert(a:send("event style"))
    assert.are.same({ "event style", "text" }, { b:receive(5) })
    assert.are.same({ nil, "timeout", "ETIMEDOUT" }, { a:receive(0.2) })
  end)

  it("one room spans a ws:// and a wss:// server", function()
    local C = H.certs()
    local room = wsuv.room()
    local _, plain = chat_server(room)
    local tls = { cert = C .. "server.pem", key = C .. "server.key" }
    local _, secure = chat_server(room, { tls = tls })
    local a = connect(plain)
    local b = connect(secure, { tls = { ca = C .. "ca.pem" } })
    local c = connect(secure, { tls = { ca = C .. "ca.pem" } })
    wait_for(function()
      return room:count() == 3
    end)
    assert(b:send("over TLS"))
    assert.are.same({ "over TLS", "text" }, { a:receive(5) })
    assert.are.same({ "over TLS", "text" }, { c:receive(5) })
    assert(a:send("in the clear"))
    assert.are.same({ "in the clear", "text" }, { b:receive(5) })
    assert.are.same({ "in the clear", "text" }, { c:receive(5) })
  end)

  it("skips a member over max_queued, or drops it with close_slow", function()
    local room = wsuv.room()
    local seen = {}
    local s = assert(wsuv.listen {
      host = "127.0.0.1",
      port = 0,
      max_queued = 64 * 1024,
      high_water = 32 * 1024,
      on_connect = function(conn)
        seen[#seen + 1] = conn
        assert(room:join(conn))
        conn:receive() -- until closed
      end,
    })
    servers[#servers + 1] = s
    local url = ("ws://127.0.0.1:%d/"):format(s.port)
    local a = connect(url)
    wait_for(function()
      return room:count() == 1
    end)
    local chunk = ("r"):rep(1000)
    -- All in one pass: nothing is written, so the queue fills up.
    local tally
    wsuv.spawn(function()
      local sent, skipped = 0, 0
      for _ = 1, 100 do
        local n, k = room:broadcast(chunk)
        sent, skipped = sent + n, skipped + k
      end
      tally = { sent, skipped }
    end)
    wait_for(function()
      return tally ~= nil
    end)
    assert.is_true(tally[1] >= 60 and tally[1] <= 65, "sent " .. tally[1])
    assert.are.equal(100, tally[1] + tally[2])
    for _ = 1, tally[1] do
      assert.are.equal(chunk, (a:receive(5)))
    end
    local dropped
    wsuv.spawn(function()
      for _ = 1, 100 do
        room:broadcast(chunk, "text", { close_slow = true })
      end
      dropped = true
    end)
    wait_for(function()
      return dropped
    end)
    local m, err, code
    repeat
      m, err, code = a:receive(5)
    until m == nil
    assert.are.same({ "closed", 1006 }, { err, code })
    assert.are.equal(0, room:count())
  end)

  it("raises for misuse: a client's connection, not a connection, bad text", function()
    local room = wsuv.room()
    local _, url = chat_server(room)
    local a = connect(url)
    assert.has_error(function()
      room:join(a)
    end, "room:join: only a server's connections can join a room (a client masks each frame"
      .. " it sends, so one frame cannot serve many)")
    assert.has_error(function()
      room:join("a")
    end, "room:join: a connection expected, got string")
    assert.has_error(function()
      room:broadcast(42)
    end, "broadcast: data must be a string")
    assert.has_error(function()
      room:broadcast("\255")
    end)
    assert.has_error(function()
      room:broadcast("x", "ping")
    end)
  end)

  it("holds no connection alive: a member is collected once nothing else holds it", function()
    local room = wsuv.room()
    local _, url = chat_server(room)
    connect(url)
    wait_for(function()
      return room:count() == 1
    end)
    H.close_all(clients)
    wait_for(function()
      collectgarbage()
      return next(room._set) == nil
    end)
  end)

  it("server:broadcast's except reaches every client but the one named", function()
    local s = assert(wsuv.listen {
      host = "127.0.0.1",
      port = 0,
      on_connect = function(conn)
        while true do
          local msg = conn:receive()
          if not msg then
            break
          end
          servers[1]:broadcast(msg, "text", { except = conn })
        end
      end,
    })
    servers[#servers + 1] = s
    local url = ("ws://127.0.0.1:%d/"):format(s.port)
    local a, b, c = connect(url), connect(url), connect(url)
    wait_for(function()
      local n = 0
      for _ in s:clients() do
        n = n + 1
      end
      return n == 3
    end)
    assert(b:send("from b"))
    assert.are.equal("from b", (a:receive(5)))
    assert.are.equal("from b", (c:receive(5)))
    assert.are.same({ nil, "timeout", "ETIMEDOUT" }, { b:receive(0.2) })
  end)
end)
