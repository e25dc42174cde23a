-- spec/badpeer_spec.lua: misbehaving peers. Our client against
-- spec/peers/raw_server.py in every mode, a refused connection, and our
-- server (examples/echo_server.lua in a child process, so that blocking
-- LuaSocket calls here cannot stall it) against raw TCP abuse.
local H = require "spec.helper"
local wsuv = require "wsuv"

local RAW = H.PYTHON .. " " .. H.PEERS .. "raw_server.py --port 0 --hold 10 --mode "

-- The peer sent "one" and "two" and reset while this process was blocked:
-- our send meets the reset first (it fails, or reports "closed"), and the
-- two messages must still arrive, then closed 1006 with the write's error.
local function send_into_reset(conn)
  local ok, err = conn:send("x")
  assert(ok or err == "closed", err)
  local got, why = {}, nil
  for i = 1, 3 do
    local msg, what, code, reason = conn:receive(5)
    got[i], why = msg or (what .. " " .. tostring(code)), reason
  end
  assert.are.same({ "one", "two", "closed 1006" }, got)
  assert.is_truthy(why:find("^write: "), why) -- the failure that ended it
end

describe("our client against a misbehaving server", function()
  local servers, conns = {}, {}

  local function raw_server(mode)
    local s = H.start_server(RAW .. mode)
    servers[#servers + 1] = s
    return ("ws://127.0.0.1:%d/"):format(s.port)
  end

  local function connect(url, opts)
    local conn, err, code, response = wsuv.connect(url, opts or { timeout = 5 })
    if conn then
      conns[#conns + 1] = conn
    end
    return conn, err, code, response
  end

  after_each(function()
    H.close_all(conns)
    for i = #servers, 1, -1 do
      H.stop(table.remove(servers, i))
    end
    assert.are.same({ 0, 0 }, { H.live(wsuv) })
  end)

  local function refused(mode, opts)
    local url = raw_server(mode)
    local conn, err, code, response = connect(url, opts)
    assert.is_nil(conn)
    assert.are.equal("string", type(err))
    assert.are.equal("EHANDSHAKE", code, err)
    return err, response
  end

  it("garbage instead of a response: EHTTP (malformed HTTP head)", function()
    local url = raw_server("garbage")
    local conn, err, code = connect(url)
    assert.is_nil(conn)
    assert.are.equal("string", type(err))
    assert.are.equal("EHTTP", code, err)
  end)

  it("a wrong Sec-WebSocket-Accept: EHANDSHAKE", function()
    refused("bad-accept")
  end)

  it("403 instead of 101: EHANDSHAKE with the response", function()
    local err, response = refused("no-101")
    assert.is_truthy(err:find("403", 1, true), err)
    assert.are.equal("table", type(response))
    assert.are.equal(403, response.status)
    assert.are.equal("go away", response.body)
  end)

  it("an unoffered subprotocol: EHANDSHAKE", function()
    refused("protocol")
    refused("protocol", { protocols = { "chat" }, timeout = 5 })
  end)

  it("an unknown extension: EHANDSHAKE", function()
    refused("extension")
  end)

  for _, mode in ipairs({ "silent", "half" }) do
    it(mode .. " server: the connect timeout fires", function()
      local url = raw_server(mode)
      local t0 = wsuv.now()
      local conn, err, code = connect(url, { timeout = 0.5 })
      local took = wsuv.now() - t0
      assert.is_nil(conn)
      assert.are.equal("string", type(err))
      assert.are.equal("ETIMEDOUT", code, err)
      assert.is_true(took >= 0.4, "gave up after " .. took .. " s")
      assert.is_true(took < 1.5, "gave up after " .. took .. " s")
    end)
  end

  local after_open = {
    { mode = "masked", code = 1002, what = "a masked frame from the server" },
    { mode = "reserved-op", code = 1002, what = "a reserved opcode" },
    { mode = "bad-utf8", code = 1007, what = "invalid UTF-8 in a text message" },
    { mode = "close-1002", code = 1002, reason = "nope", what = "the server's close 1002" },
    { mode = "drop", code = 1006, what = "TCP closed without a close frame" },
    { mode = "huge", code = 1009, what = "a 2^40-byte frame header" },
  }
  for _, case in ipairs(after_open) do
    it(case.mode .. ": " .. case.what .. " -> closed " .. case.code, function()
      local url = raw_server(case.mode)
      local conn, err, code = connect(url)
      assert(conn, tostring(err) .. " " .. tostring(code))
      local msg, what, ccode, reason = conn:receive(5)
      assert.is_nil(msg)
      assert.are.equal("closed", what, tostring(ccode))
      assert.are.equal(case.code, ccode, tostring(reason))
      if case.reason then
        assert.are.equal(case.reason, reason)
      end
      -- Nothing more arrives, and closing again is harmless.
      msg, what = conn:receive(0)
      assert.is_nil(msg)
      assert.are.equal("closed", what)
      assert.is_true((conn:close()))
      assert.are.equal("closed", conn:state())
    end)
  end

  it("the connect timeout counts from the call, after time spent outside the loop", function()
    local srv = assert(wsuv.listen {
      host = "127.0.0.1",
      port = 0,
      on_connect = function(c)
        while c:receive() do
        end
      end,
    })
    local url = ("ws://127.0.0.1:%d/"):format(srv.port)
    local ok, err = pcall(function()
      local c = assert(connect(url, { timeout = 1 }))
      assert.is_true((c:close()))
      -- The application is busy elsewhere (here: a blocking sleep) for longer
      -- than the timeout, without running the loop.
      os.execute("sleep 1.3")
      local t0 = wsuv.now()
      local conn, cerr, code = connect(url, { timeout = 1 })
      assert(conn, ("connect failed after %.3f s: %s %s"):format(wsuv.now() - t0,
        tostring(cerr), tostring(code)))
      assert.is_true((conn:close()))
    end)
    srv:close()
    assert(ok, err)
  end)

  -- The peer sends two messages and resets. Our process is blocked (not
  -- just a coroutine) while that happens, so the next write meets the
  -- reset before the loop has read the messages: they must still arrive,
  -- then the failure.
  for _, tls in ipairs({ false, true }) do
    local scheme = tls and "wss" or "ws"
    it(("messages the peer sent before a reset arrive though our write fails first (%s://)"):format(
      scheme), function()
      local C = tls and H.certs()
      local tls_args = tls and (" --cert %sserver.pem --key %sserver.key"):format(C, C) or ""
      local url = raw_server("reset" .. tls_args):gsub("^ws", scheme)
      local conn = assert(connect(url, { timeout = 5, tls = tls and { insecure = true } or nil }))
      os.execute("sleep 0.6")
      send_into_reset(conn)
    end)
  end

  it("a port where nothing listens: ECONNREFUSED", function()
    local srv = assert(wsuv.listen { host = "127.0.0.1", port = 0 })
    local port = srv.port
    srv:close()
    local conn, err, code = connect(("ws://127.0.0.1:%d/"):format(port), { timeout = 2 })
    assert.is_nil(conn)
    assert.are.equal("string", type(err))
    assert.are.equal("ECONNREFUSED", code, err)
  end)
end)

-- The server side of the reset cases above: the client
-- (spec/peers/reset_client.py) sends two messages and resets while this
-- process is blocked, so our server's next write meets the reset before
-- the loop has read the messages.
describe("our server when the client resets", function()
  for _, tls in ipairs({ false, true }) do
    local scheme = tls and "wss" or "ws"
    it(("messages a client sent before its reset arrive though our write fails first (%s://)")
      :format(scheme), function()
      local C = tls and H.certs()
      local srv = assert(wsuv.listen {
        host = "127.0.0.1",
        port = 0,
        tls = tls and { cert = C .. "server.pem", key = C .. "server.key" } or nil,
      })
      local job = H.start_job(("%s %sreset_client.py --port %d --delay 0.3%s"):format(
        H.PYTHON, H.PEERS, srv.port, tls and " --tls" or ""))
      local ok, err = pcall(function()
        local conn = assert(srv:accept(5))
        os.execute("sleep 0.8") -- the client sends and resets meanwhile
        send_into_reset(conn)
        local rc, out = H.wait_job(wsuv, job, 5)
        assert.are.equal(0, rc, out)
        assert.is_truthy(out:find("RESET", 1, true), out)
      end)
      H.stop(job)
      srv:close()
      assert(ok, err)
      assert.are.same({ 0, 0 }, { H.live(wsuv) })
    end)
  end
end)

describe("our server against raw TCP abuse", function()
  local proc, port
  local sockets = {}

  lazy_setup(function()
    local out, pidfile = H.tmpname(), H.tmpname()
    os.execute(("%s %s examples/echo_server.lua 0 > %s 2>&1 & echo $! > %s"):format(
      H.lua_env(), H.lua_interpreter(), out, pidfile))
    proc = { pid = tonumber(H.read_file(pidfile)), log = out }
    H.remove(pidfile)
    assert(proc.pid, "could not start examples/echo_server.lua")
    local deadline = os.time() + 15
    while os.time() <= deadline do
      port = tonumber((H.read_file(out) or ""):match("ws://127%.0%.0%.1:(%d+)/"))
      if port then
        break
      end
      os.execute("sleep 0.05")
    end
    assert(port, "echo server did not start:\n" .. (H.read_file(out) or ""))
  end)

  lazy_teardown(function()
    H.stop(proc)
  end)

  local function raw()
    local s = H.raw_connect(port)
    sockets[#sockets + 1] = s
    return s
  end

  -- Everything the server sends until it closes (or timeout seconds pass);
  -- the second result is "closed" once the server closed the connection
  -- (gracefully or by a reset), "timeout" otherwise.
  local function read_all(s, timeout)
    s:settimeout(timeout or 5)
    local data, err, partial = s:receive("*a")
    if data then
      return data, "closed"
    end
    return partial, err
  end

  -- The server is still alive and serving: a normal client gets an echo.
  local function still_echoes()
    -- Run our loop once first: a blocking LuaSocket wait may have kept it
    -- idle for seconds, and a connect deadline would then be computed from
    -- the loop's stale clock (see "the connect timeout counts from the call").
    wsuv.sleep(0.01)
    local conn, err, code = wsuv.connect(("ws://127.0.0.1:%d/"):format(port), { timeout = 5 })
    assert(conn, "server gone? " .. tostring(err) .. " " .. tostring(code)
      .. "\n" .. (H.read_file(proc.log) or ""))
    local ok, got = pcall(function()
      assert(conn:send("still here"))
      return (conn:receive(5))
    end)
    conn:close()
    assert(ok, got)
    assert.are.equal("still here", got)
  end

  after_each(function()
    for i = #sockets, 1, -1 do
      table.remove(sockets, i):close()
    end
    assert.are.same({ 0, 0 }, { H.live(wsuv) })
  end)

  it("serves a normal client", function()
    still_echoes()
  end)

  it("answers garbage with HTTP 400 and closes", function()
    local s = raw()
    assert(s:send("\22\3\1\0\165\1\0\0\161\3\3 not http at all\r\n\r\n"))
    local data, err = read_all(s)
    assert.are.equal("closed", err, data)
    assert.is_truthy(data:match("^HTTP/1%.1 400 "), data)
    still_echoes()
  end)

  it("answers a plain GET with 426 Upgrade Required and closes", function()
    local s = raw()
    assert(s:send("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"))
    local data, err = read_all(s)
    assert.are.equal("closed", err, data)
    assert.is_truthy(data:match("^HTTP/1%.1 426 "), data)
    still_echoes()
  end)

  it("upgrades a raw handshake, then serves others while it idles", function()
    local s = raw()
    assert(s:send(H.UPGRADE))
    s:settimeout(5)
    local line = assert(s:receive("*l"))
    assert.is_truthy(line:match("^HTTP/1%.1 101 "), line)
    still_echoes()
  end)

  it("closes a half-sent request after the handshake timeout (10 s)", function()
    local s = raw()
    local half = H.UPGRADE:sub(1, 40)
    assert(s:send(half))
    local t0 = wsuv.now()
    -- Meanwhile the server keeps serving others.
    still_echoes()
    local _, err = read_all(s, 13)
    local took = wsuv.now() - t0
    assert.are.equal("closed", err)
    assert.is_true(took > 8 and took < 12.5, "closed after " .. took .. " s")
    still_echoes()
  end)
end)
