-- spec/valgrind/scenario.lua: one process that walks the transport's paths
-- (plain and TLS echo, large messages, refused certificates, mutual TLS,
-- abuse of a TLS port, aborts mid-handshake, protocol errors, broadcasts
-- and rooms, a full server's 503, server close), for `make valgrind-lua`:
-- valgrind must report no error and no definite leak.
-- Usage: lua5.4 scenario.lua CERTDIR/
local wsuv = require "wsuv"
local C = assert(arg[1], "usage: scenario.lua CERTDIR/")

local steps = 0
local function step(name, ok, detail)
  steps = steps + 1
  if not ok then
    error(("step %d (%s) failed: %s"):format(steps, name, tostring(detail)), 2)
  end
end

local function echo(conn)
  while true do
    local msg, kind = conn:receive()
    if not msg then
      break
    end
    conn:send(msg, kind)
  end
end

local function scenario()
  local tls = { cert = C .. "server.pem", key = C .. "server.key" }
  local plain = assert(wsuv.listen { port = 0, on_connect = echo })
  local secure = assert(wsuv.listen { port = 0, tls = tls, on_connect = echo })
  local mutual = assert(wsuv.listen {
    port = 0, on_connect = echo,
    tls = { cert = tls.cert, key = tls.key, ca = C .. "ca.pem", verify_client = true },
  })
  local ca = { ca = C .. "ca.pem" }

  for _, url in ipairs({ "ws://127.0.0.1:" .. plain.port, "wss://127.0.0.1:" .. secure.port }) do
    local c = assert(wsuv.connect(url, { tls = ca }))
    local big = ("x"):rep(3 * 1024 * 1024 + 7)
    step("send", c:send(big, "binary"))
    local got = c:receive()
    step("big echo " .. url, got == big, got and #got)
    -- Big messages of changing sizes: the block cache (csrc/lua_alloc.c)
    -- hands freed blocks out again, shrunk to fit.
    local function echo_once(i, n)
      local m = (string.char(65 + i)):rep(n)
      step("send " .. n, c:send(m, "binary"))
      step("echo " .. n, c:receive() == m)
    end
    for i, n in ipairs({ 1048576, 1048476, 900000, 2097152, 200000, 1048576 }) do
      echo_once(i, n)
      collectgarbage()
    end
    local w = c:writer("text")
    w:write("frag")
    w:finish("ment")
    step("fragments", c:receive() == "fragment")
    step("ping", c:ping("p"))
    step("close", c:close(1000, "bye"))
  end

  local other = { ca = C .. "other-ca.pem" }
  local c, err = wsuv.connect("wss://127.0.0.1:" .. secure.port, { tls = other })
  step("wrong CA refused", not c and err:find("verify failed"), err)
  c, err = wsuv.connect("wss://127.0.0.1:" .. mutual.port, { tls = ca })
  step("client cert required", not c, err)
  c = assert(wsuv.connect("wss://127.0.0.1:" .. mutual.port, {
    tls = { ca = C .. "ca.pem", cert = C .. "client.pem", key = C .. "client.key" },
  }))
  step("mutual echo", c:send("m") and c:receive() == "m")
  c, err = wsuv.connect("wss://127.0.0.1:" .. plain.port, { tls = ca })
  step("tls to plain port", not c, err)
  c, err = wsuv.connect("ws://127.0.0.1:" .. secure.port)
  step("plain to tls port", not c, err)
  step("reload", secure:reload_tls { cert = C .. "server2.pem", key = C .. "server2.key" })
  step("bad reload", not secure:reload_tls { cert = C .. "missing.pem" })

  -- Aborted mid-handshake (TLS and HTTP), and a peer that breaks the protocol.
  local pending = assert(wsuv.core.connect("127.0.0.1", secure.port, { tls = ca }))
  wsuv.sleep(0.01)
  pending:abort()
  pending = assert(wsuv.core.connect("127.0.0.1", plain.port, {}))
  pending:abort()
  c = assert(wsuv.connect("ws://127.0.0.1:" .. plain.port))
  -- Text that is not UTF-8, in two frames (only a whole message is
  -- checked on our side): the server fails the connection with 1007.
  step("stray bytes sent",
    c:send_frame("\255", "text", false) and c:send_frame("", "continuation", true))
  local msg, what, code = c:receive(2)
  step("invalid text closes", msg == nil and code == 1007, tostring(what) .. tostring(code))
  -- A continuation with no message to continue is refused before it leaves.
  local ok, _, ecode = c:send_frame("x", "continuation", true)
  step("stray continuation refused", ok == nil and ecode ~= nil)

  -- Broadcasts of one pass share a buffer, big ones a pinned string.
  local bs = assert(wsuv.listen { port = 0, on_connect = function(conn) conn:receive() end })
  local rs = {}
  for i = 1, 3 do
    rs[i] = assert(wsuv.connect("ws://127.0.0.1:" .. bs.port))
  end
  while #bs._s:clients() < 3 do
    wsuv.sleep(0.01)
  end
  local bigb = ("b"):rep(10000)
  for i = 1, 20 do
    bs:broadcast(i % 5 == 0 and bigb or ("m" .. i))
  end
  for i = 1, 3 do
    local n = 0
    for j = 1, 20 do
      n = n + (rs[i]:receive(5) == (j % 5 == 0 and bigb or ("m" .. j)) and 1 or 0)
    end
    step("broadcasts " .. i, n == 20, n)
  end
  -- A room: one frame for its members but the sender; a member that
  -- closes is dropped as the room is walked.
  local room = wsuv.room()
  for conn in bs:clients() do
    room:join(conn)
  end
  local sender = bs._s:clients()[1]
  step("room broadcast", room:broadcast(bigb, "binary", { except = sender }) == 2)
  local got = 0
  for i = 1, 3 do
    local m = rs[i]:receive(0.2)
    got = got + (m == bigb and 1 or 0)
  end
  step("room delivered", got == 2, got)
  rs[3]:close()
  while room:count() > 2 do
    wsuv.sleep(0.01)
  end
  step("room dropped a closed member", room:count() == 2)
  bs:close()

  -- The event style: messages queue (a connection's queue grows past its
  -- first buffer), handlers run in workers, one waits; 150
  -- connections replying in one pass pass the output burst bound (their
  -- buffers are written mid-pass and reused); unread messages of a closed
  -- connection are released.
  local es = assert(wsuv.listen {
    port = 0,
    on_message = function(conn, m)
      if m == "wait" then
        wsuv.sleep(0.01)
      end
      conn:send(m, "binary")
    end,
  })
  local ec = assert(wsuv.connect("ws://127.0.0.1:" .. es.port))
  ec:send("wait")
  for i = 1, 120 do
    ec:send("e" .. i)
  end
  local ok_order = ec:receive(5) == "wait"
  for i = 1, 120 do
    ok_order = ok_order and ec:receive(5) == "e" .. i
  end
  step("events in order", ok_order)
  local many, kb = {}, ("k"):rep(1000)
  for i = 1, 150 do
    many[i] = assert(wsuv.connect("ws://127.0.0.1:" .. es.port))
  end
  for i = 1, 150 do
    many[i]:send(kb .. i)
  end
  local n = 0
  for i = 1, 150 do
    n = n + (many[i]:receive(5) == kb .. i and 1 or 0)
  end
  step("burst of replies", n == 150, n)
  for i = 1, 150 do
    many[i]:abort()
  end
  -- Messages nobody reads, small (in the connection's queue) and large
  -- (inbox slots): they go with the connection.
  do
    local unread = assert(wsuv.connect("ws://127.0.0.1:" .. es.port))
    for i = 1, 20 do
      unread:send(i % 4 == 0 and ("u"):rep(300) .. i or "u" .. i)
    end
    step("unread echoes arrive", unread:receive(5) == "u1")
    wsuv.sleep(0.05)
    unread:abort()
  end
  collectgarbage()
  ec:close()
  es:close()

  -- A full server answers 503 with Retry-After, and has room again once
  -- a client leaves.
  do
    local full = assert(wsuv.listen { port = 0, max_connections = 1, on_connect = echo })
    local url = "ws://127.0.0.1:" .. full.port
    local first = assert(wsuv.connect(url))
    local refused, _, why, response = wsuv.connect(url)
    local retry_after
    for i = 1, response and #response.headers or 0, 2 do
      if response.headers[i] == "Retry-After" then
        retry_after = response.headers[i + 1]
      end
    end
    step("full server refuses", not refused and why == "EHANDSHAKE" and response.status == 503
      and retry_after == "5", tostring(why) .. " " .. tostring(retry_after))
    first:close()
    local again = assert(wsuv.connect(url))
    step("room again", again:send("r") and again:receive(5) == "r")
    again:close()
    full:close()
  end

  -- Connections left open when the servers close.
  local open = {}
  for i = 1, 5 do
    open[i] = assert(wsuv.connect("wss://127.0.0.1:" .. secure.port, { tls = { insecure = true } }))
  end
  plain:close()
  secure:close()
  mutual:close()
  for i = 1, 5 do
    step("server closed " .. i, open[i]:receive(5) == nil)
  end
end

-- The state closes with the block cache holding blocks: they go back, and
-- the state's own allocator is in place for its last frees. (Unused for a
-- second, the cache steps out of the allocator: it is filled last.)
local function fill_block_cache()
  local s = assert(wsuv.listen { port = 0, on_connect = echo })
  local c = assert(wsuv.connect("ws://127.0.0.1:" .. s.port))
  local function echo_big()
    local m = ("z"):rep(1048576)
    return c:send(m, "binary") and c:receive() == m
  end
  step("last big echo", echo_big())
  collectgarbage()
  local _, held = wsuv.block_cache()
  step("block cache holds blocks at exit", held > 0, held)
  c:abort()
  s:close(0)
end

wsuv.spawn(function()
  local ok, err = pcall(function()
    scenario()
    fill_block_cache()
  end)
  if not ok then
    io.stderr:write(tostring(err), "\n")
    os.exit(1)
  end
end)
wsuv.run()
print(("scenario: %d steps passed"):format(steps))
