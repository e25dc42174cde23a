-- spec/interop_spec.lua: wsuv against independent WebSocket implementations
-- (python3-websockets 10.4 and node ws 8.11), in both directions:
-- (a) our client against their echo servers, (b) their interop clients
-- against a wsuv echo server running in this process.
local H = require "spec.helper"
local wsuv = require "wsuv"
local compat = require "wsuv.compat"

-- Runs fn() in a wsuv coroutine and drives the loop until it returns;
-- errors (assertion failures included) are raised again here.
local function in_co(fn, timeout)
  local done, ok, err = false, nil, nil
  wsuv.spawn(function()
    ok, err = compat.pcall(fn)
    done = true
  end)
  assert(H.wait_until(wsuv, function()
    return done
  end, timeout or 60), "coroutine did not finish")
  if not ok then
    error(err, 0)
  end
end

-- n pseudo-random bytes: 256 distinct random 4 KiB blocks, picked at random.
local function random_bytes(n)
  local blocks = {}
  for b = 1, 256 do
    local bytes = {}
    for i = 1, 4096 do
      bytes[i] = math.random(0, 255)
    end
    local parts = {}
    for i = 1, 4096, 256 do
      parts[#parts + 1] = string.char(compat.unpack(bytes, i, i + 255))
    end
    blocks[b] = table.concat(parts)
  end
  local out = {}
  for i = 1, math.ceil(n / 4096) do
    out[i] = blocks[math.random(1, 256)]
  end
  return table.concat(out):sub(1, n)
end

local function all_bytes()
  local t = {}
  for i = 0, 255 do
    t[#t + 1] = string.char(i)
  end
  return table.concat(t)
end

local UTF8 = "h\195\169llo w\195\182rld \226\156\147 \240\159\142\137" -- héllo wörld ✓ 🎉

local PEER_SERVERS = {
  { name = "python websockets", cmd = H.PYTHON .. " " .. H.PEERS
    .. "py_echo_server.py --port 0 --no-compression --subprotocols chat,superchat" },
  { name = "node ws", cmd = H.NODE .. " " .. H.PEERS
    .. "node_echo_server.js --port 0 --subprotocols chat,superchat" },
}

-- Every case runs over ws:// and over wss:// (certificates made at test
-- time by spec/peers/gen_certs.sh; the peers load them with --tls).
local CERTS = H.certs()
local TRANSPORTS = {
  { name = "", scheme = "ws" },
  { name = " over TLS", scheme = "wss",
    server_args = (" --tls %sserver.pem %sserver.key"):format(CERTS, CERTS),
    client_args = (" --ca %sca.pem"):format(CERTS), tls = { ca = CERTS .. "ca.pem" } },
}

for _, peer in ipairs(PEER_SERVERS) do
  for _, tr in ipairs(TRANSPORTS) do
    describe("our client -> " .. peer.name .. " echo server" .. tr.name, function()
      local server, url
      local conns = {}

      -- Connects and remembers the connection so after_each closes it even
      -- when the test failed half-way.
      local function connect(opts)
        opts = opts or { timeout = 5 }
        opts.tls = tr.tls
        local conn, err, code = wsuv.connect(url, opts)
        assert(conn, tostring(err) .. " " .. tostring(code))
        conns[#conns + 1] = conn
        return conn
      end

      local function roundtrip(conn, data, kind)
        assert.is_true(conn:send(data, kind))
        local got, gkind = conn:receive(10)
        assert(got, "receive: " .. tostring(gkind))
        assert.are.equal(kind or "text", gkind)
        assert(got == data, ("payload mismatch: %d bytes sent, %d received"):format(#data, #got))
      end

      lazy_setup(function()
        server = H.start_server(peer.cmd .. (tr.server_args or ""))
        url = ("%s://127.0.0.1:%d/"):format(tr.scheme, server.port)
      end)

      lazy_teardown(function()
        H.stop(server)
      end)

      after_each(function()
        H.close_all(conns)
        assert.are.same({ 0, 0 }, { H.live(wsuv) })
      end)

      it("echoes text, UTF-8 text, all 256 byte values, empty text and binary", function()
        local conn = connect()
        roundtrip(conn, "hello", "text")
        roundtrip(conn, UTF8, "text")
        roundtrip(conn, all_bytes(), "binary")
        roundtrip(conn, "", "text")
        roundtrip(conn, "", "binary")
        assert.is_true(conn:close())
      end)

      it("echoes a 16 MiB random binary message and a 1 MiB text exactly", function()
        local big = random_bytes(16 * 1024 * 1024)
        local text = ("abcdefghijklmnop"):rep(65536)
        in_co(function()
          local conn = connect()
          roundtrip(conn, big, "binary")
          roundtrip(conn, text, "text")
          assert.is_true(conn:close())
        end)
      end)

      it("delivers a message we send fragmented (conn:writer) whole", function()
        local conn = connect()
        local w = conn:writer("text")
        assert.is_true(w:write("frag"))
        assert.is_true(w:write("mented "))
        assert.is_true(w:write(""))
        assert.is_true(w:finish("message \226\156\147"))
        local got, kind = conn:receive(10)
        assert.are.equal("fragmented message \226\156\147", got)
        assert.are.equal("text", kind)
        local b = conn:writer("binary")
        assert.is_true(b:write("\0\1"))
        assert.is_true(b:finish("\2\255"))
        got, kind = conn:receive(10)
        assert.are.equal("\0\1\2\255", got)
        assert.are.equal("binary", kind)
        assert.is_true(conn:close())
      end)

      it("receives a server-fragmented message whole", function()
        local conn = connect()
        assert.is_true(conn:send("frag:3:hello world"))
        local got, kind = conn:receive(10)
        assert.are.equal("hello world", got)
        assert.are.equal("text", kind)
        assert.is_true(conn:close())
      end)

      it("measures a ping rtt and answers the server's ping with a pong", function()
        local conn = connect()
        local rtt, err = conn:ping("abc", 10)
        assert(rtt, "ping: " .. tostring(err))
        assert.is_true(rtt > 0)
        assert.is_true(rtt < 5)
        assert.is_true(conn:send("ping:abc"))
        local got, kind = conn:receive(10)
        assert.are.equal("pong:abc", got)
        assert.are.equal("text", kind)
        assert.is_true(conn:close())
      end)

      it("reports the server's close code and reason", function()
        local conn = connect()
        assert.is_true(conn:send("close:4001:bye"))
        local msg, what, code, reason = conn:receive(10)
        assert.is_nil(msg)
        assert.are.same({ "closed", 4001, "bye" }, { what, code, reason })
        -- Closing again is harmless and reports the same code.
        local ok, pcode, preason = conn:close()
        assert.are.same({ true, 4001, "bye" }, { ok, pcode, preason })
        assert.are.equal("closed", conn:state())
      end)

      it("runs our closing handshake and returns the peer's code", function()
        local conn = connect()
        roundtrip(conn, "before close", "text")
        local ok, code = conn:close(4000, "done")
        assert.is_true(ok)
        assert.are.equal(4000, code)
        assert.are.equal("closed", conn:state())
      end)

      it("negotiates a subprotocol", function()
        local conn = connect({ protocols = { "superchat" }, timeout = 5 })
        assert.are.equal("superchat", conn:protocol())
        assert.is_true(conn:send("subprotocol?"))
        assert.are.equal("superchat", (conn:receive(10)))
        assert.is_true(conn:close())
        -- Several offered: the server's preference (chat first) wins.
        conn = connect({ protocols = { "superchat", "chat" }, timeout = 5 })
        assert.are.equal("chat", conn:protocol())
        assert.is_true(conn:close())
        -- None offered: none chosen.
        conn = connect()
        assert.is_nil(conn:protocol())
        assert.is_true(conn:send("subprotocol?"))
        assert.are.equal("none", (conn:receive(10)))
        assert.is_true(conn:close())
      end)
    end)
  end
end

-- (b) their clients against our server.
local CLIENT_CASES = {
  "text", "utf-8 text", "binary all 256 byte values", "empty text", "empty binary",
  "16 MiB binary", "1 MiB text", "fragmented text", "fragmented binary",
  "ping abc -> pong", "subprotocol", "close 4000 bye",
}

local echo = H.echo

local PEER_CLIENTS = {
  { name = "python websockets client", cmd = H.PYTHON .. " " .. H.PEERS .. "py_client.py" },
  { name = "node ws client", cmd = H.NODE .. " " .. H.PEERS .. "node_client.js" },
}

for _, peer in ipairs(PEER_CLIENTS) do
  local variants = {
    { name = "" },
    { name = " (subprotocol chat)", protocol = "chat" },
    { name = " over TLS", tls = TRANSPORTS[2] },
  }
  for _, variant in ipairs(variants) do
    describe(peer.name .. " -> our echo server" .. variant.name, function()
      local results, rc, out = {}, nil, ""

      lazy_setup(function()
        local srv = assert(wsuv.listen {
          host = "127.0.0.1",
          port = 0,
          protocols = variant.protocol and { variant.protocol } or nil,
          tls = variant.tls and { cert = CERTS .. "server.pem", key = CERTS .. "server.key" },
          on_connect = echo,
        })
        local scheme = variant.tls and "wss" or "ws"
        local cmd = ("%s %s://127.0.0.1:%d/"):format(peer.cmd, scheme, srv.port)
        if variant.tls then
          cmd = cmd .. variant.tls.client_args
        end
        if variant.protocol then
          cmd = cmd .. " --subprotocol " .. variant.protocol
        end
        local job = H.start_job(cmd)
        local ok, err = pcall(function()
          rc, out = H.wait_job(wsuv, job, 90)
        end)
        H.stop(job)
        srv:close()
        assert(ok, err)
        for line in (out or ""):gmatch("[^\n]+") do
          local n = line:match("^not ok %d+ %- (.-) # ") or line:match("^not ok %d+ %- (.*)$")
          if n then
            results[n] = { ok = false, line = line }
          else
            n = line:match("^ok %d+ %- (.*)$")
            if n then
              results[n] = { ok = true, line = line }
            end
          end
        end
      end)

      after_each(function()
        assert.are.same({ 0, 0 }, { H.live(wsuv) })
      end)

      for _, name in ipairs(CLIENT_CASES) do
        it(name, function()
          local r = results[name]
          assert(r, "case did not report (exit " .. tostring(rc) .. ")\n" .. tostring(out))
          assert(r.ok, r.line)
        end)
      end

      it("exits 0 with every case passing", function()
        local ok, bad = H.tap_counts(out or "")
        assert.are.same({ #CLIENT_CASES, 0 }, { ok, bad }, out)
        assert.are.equal(0, rc, out)
      end)
    end)
  end
end
