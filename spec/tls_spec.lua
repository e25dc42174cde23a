-- spec/tls_spec.lua: wss:// with certificates made at test time
-- (spec/peers/gen_certs.sh): our client against our server, verification
-- failures, mutual TLS, reloading certificates, and peers that do not
-- speak TLS or never finish it. Interop with python3-websockets and node
-- ws over TLS is in spec/interop_spec.lua.
local H = require "spec.helper"
local wsuv = require "wsuv"

local C = H.certs()
local SERVER_TLS = { cert = C .. "server.pem", key = C .. "server.key" }
local CLIENT_TLS = { ca = C .. "ca.pem" }

describe("wss://", function()
  local servers, conns, sockets = {}, {}, {}

  local function listen(opts)
    opts.port = 0
    opts.on_connect = opts.on_connect or H.echo
    local s = assert(wsuv.listen(opts))
    servers[#servers + 1] = s
    return s
  end

  local function connect(port, tls, opts)
    opts = opts or {}
    opts.tls = tls or CLIENT_TLS
    opts.timeout = opts.timeout or 5
    local c, err, code = wsuv.connect(("wss://%s:%d/"):format(opts.host or "127.0.0.1", port), opts)
    if c then
      conns[#conns + 1] = c
    end
    return c, err, code
  end

  -- A raw TCP socket that never blocks the loop: reads wait by stepping it.
  local function raw(port)
    local s = H.raw_connect(port)
    s:settimeout(0)
    sockets[#sockets + 1] = s
    return s
  end

  -- Reads until the peer closes; returns the bytes, or nil on timeout.
  local function read_until_closed(s, timeout)
    local got, closed = {}, false
    local ok = H.wait_until(wsuv, function()
      local data, err, partial = s:receive(65536)
      data = data or partial
      if data and #data > 0 then
        got[#got + 1] = data
      end
      closed = err == "closed"
      return closed
    end, timeout)
    return ok and table.concat(got) or nil
  end

  -- Runs spec/peers/tls_probe.py against our server; returns rc, output.
  local function probe(mode, port)
    local cmd = ("%s %stls_probe.py %s %d %sca.pem"):format(H.PYTHON, H.PEERS, mode, port, C)
    return H.wait_job(wsuv, H.start_job(cmd), 20)
  end

  after_each(function()
    for i = #sockets, 1, -1 do
      table.remove(sockets, i):close()
    end
    H.close_and_check(wsuv, conns, servers)
  end)

  it("echoes text, binary and a 16 MiB message; reports TLS 1.2+ and http/1.1", function()
    local s = listen { tls = SERVER_TLS }
    assert.is_true(s.secure)
    local c = assert(connect(s.port))
    assert.is_true(c:send("hello"))
    assert.are.same({ "hello", "text" }, { c:receive(5) })
    local big = ("0123456789abcdef"):rep(1024 * 1024)
    assert.is_true(c:send(big, "binary"))
    local got, kind = c:receive(30)
    assert.are.equal("binary", kind)
    assert(got == big, "16 MiB echo differs")
    local info = c:tls_info()
    assert.is_truthy(info.version == "TLSv1.3" or info.version == "TLSv1.2", info.version)
    assert.are.equal("http/1.1", info.alpn)
    assert.is_true(info.verified)
    assert.is_truthy(info.peer:find("CN=127.0.0.1", 1, true), info.peer)
    local ok, code = c:close(1000)
    assert.are.same({ true, 1000 }, { ok, code })
  end)

  it("verifies against a CA directory and by host name (localhost)", function()
    local s = listen { tls = SERVER_TLS }
    local dir = C .. "cadir"
    os.execute(("mkdir -p %s && cp %sca.pem %s/ && openssl rehash %s >/dev/null 2>&1")
      :format(dir, C, dir, dir))
    local c, err = connect(s.port, { ca = dir })
    assert(c, err)
    c:close()
    c, err = connect(s.port, CLIENT_TLS, { host = "localhost" })
    assert(c, err)
    assert.is_true(c:tls_info().verified)
  end)

  local refusals = {
    { "an unknown CA", "server", { ca = C .. "other-ca.pem" }, "unable to get local issuer" },
    { "the system CA store only", "server", {}, "unable to get local issuer" },
    { "a self-signed certificate", "self", CLIENT_TLS, "self%-signed certificate" },
    { "an expired certificate", "expired", CLIENT_TLS, "certificate has expired" },
    { "a certificate for another host", "wronghost", CLIENT_TLS, "IP address mismatch" },
  }
  for _, case in ipairs(refusals) do
    local name, cert, tls, pattern = case[1], case[2], case[3], case[4]
    it("refuses " .. name .. " with a message that says why", function()
      local s = listen { tls = { cert = C .. cert .. ".pem", key = C .. cert .. ".key" } }
      local c, err, code = connect(s.port, tls)
      assert.is_nil(c)
      assert.are.equal("ETLS", code)
      assert.is_truthy(err:find("^tls: certificate verify failed: .*" .. pattern), err)
    end)
  end

  it("checks a DNS name too: localhost against a cert for other.example", function()
    local s = listen { tls = { cert = C .. "wronghost.pem", key = C .. "wronghost.key" } }
    local c, err, code = connect(s.port, CLIENT_TLS, { host = "localhost" })
    assert.is_nil(c)
    assert.are.equal("ETLS", code)
    assert.is_truthy(err:find("hostname mismatch", 1, true), err)
  end)

  it("connects with insecure = true, and with servername naming the cert's host", function()
    local s = listen { tls = { cert = C .. "wronghost.pem", key = C .. "wronghost.key" } }
    local c = assert(connect(s.port, { insecure = true }))
    assert.is_false(c:tls_info().verified)
    c:close()
    c = assert(connect(s.port, { ca = C .. "ca.pem", servername = "other.example" }))
    assert.is_true(c:tls_info().verified)
    assert.is_true(c:send("sni"))
    assert.are.equal("sni", (c:receive(5)))
  end)

  it("mutual TLS: a client without a certificate is refused, one with it is known", function()
    local peer
    local s = listen {
      tls = {
        cert = SERVER_TLS.cert, key = SERVER_TLS.key, ca = C .. "ca.pem", verify_client = true,
      },
      on_connect = function(conn)
        peer = conn:tls_info().peer
        H.echo(conn)
      end,
    }
    local c, err, code = connect(s.port)
    assert.is_nil(c)
    assert.are.equal("ETLS", code)
    assert.is_truthy(err:find("certificate required", 1, true), err)
    local mine = { ca = C .. "ca.pem", cert = C .. "client.pem", key = C .. "client.key" }
    c = assert(connect(s.port, mine))
    assert.is_true(c:send("me"))
    assert.are.equal("me", (c:receive(5)))
    assert.is_truthy(peer and peer:find("CN=wsuv-client", 1, true), tostring(peer))
  end)

  it("reload_tls swaps the certificate for new connections; a bad reload keeps the old", function()
    local s = listen { tls = SERVER_TLS }
    local old = assert(connect(s.port))
    assert.is_true(s:reload_tls { cert = C .. "server2.pem", key = C .. "server2.key" })
    local new = assert(connect(s.port))
    assert.is_truthy(new:tls_info().peer:find("CN=reloaded", 1, true))
    assert.is_truthy(old:tls_info().peer:find("CN=127.0.0.1", 1, true))
    assert.is_true(old:send("still here"))
    assert.are.equal("still here", (old:receive(5)))
    local ok, err, code = s:reload_tls { cert = C .. "missing.pem", key = C .. "server.key" }
    assert.is_nil(ok)
    assert.are.equal("ETLS", code)
    assert.is_truthy(err:find("No such file", 1, true), err)
    ok, err, code = s:reload_tls { cert = C .. "server.pem", key = C .. "client.key" }
    assert.is_nil(ok)
    assert.are.equal("ETLS", code)
    assert.is_truthy(err:find("mismatch", 1, true), err)
    local after = assert(connect(s.port))
    assert.is_truthy(after:tls_info().peer:find("CN=reloaded", 1, true))
  end)

  it("listen reports unreadable certificates; a server without cert is misuse", function()
    local tls = { cert = C .. "nope.pem", key = C .. "nope.key" }
    local s, err, code = wsuv.listen { port = 0, tls = tls }
    assert.is_nil(s)
    assert.are.equal("ETLS", code)
    assert.is_truthy(err:find("nope.pem", 1, true) and err:find("No such file", 1, true), err)
    assert.has_error(function()
      wsuv.listen { port = 0, tls = { key = C .. "server.key" } }
    end)
  end)

  it("TLS to a plain-text port fails with a hint, and the server keeps serving", function()
    local plain = listen {}
    local c, err, code = connect(plain.port)
    assert.is_nil(c)
    assert.are.equal("ETLS", code)
    assert.is_truthy(err:find("is the peer speaking TLS", 1, true), err)
    local ok = wsuv.connect(("ws://127.0.0.1:%d/"):format(plain.port))
    assert.is_truthy(ok)
    ok:close()
  end)

  it("plain HTTP, garbage and a silent client on a TLS port are closed cleanly", function()
    local s = listen { tls = SERVER_TLS, handshake_timeout = 0.3 }
    local http = raw(s.port)
    assert(http:send(H.UPGRADE))
    local garbage = raw(s.port)
    assert(garbage:send(("\22\3\1\0\5garbage"):rep(50)))
    local silent = raw(s.port)
    local t0 = wsuv.now()
    -- None gets a WebSocket answer; each is closed (an alert at most).
    for _, sock in ipairs({ http, garbage }) do
      local got = read_until_closed(sock, 5)
      assert.is_truthy(got, "not closed")
      assert.is_nil(got:find("HTTP/1.1 101", 1, true))
    end
    assert.are.equal("", read_until_closed(silent, 5))
    assert.is_true(wsuv.now() - t0 < 3)
    -- A half-finished TLS handshake is bounded by handshake_timeout too.
    local c = assert(connect(s.port))
    assert.is_true(c:send("after the abuse"))
    assert.are.equal("after the abuse", (c:receive(5)))
  end)

  it("a client's TLS handshake that never finishes times out", function()
    -- A TCP listener that never answers the ClientHello.
    local sock = require("socket").bind("127.0.0.1", 0)
    local _, port = sock:getsockname()
    local t0 = wsuv.now()
    local c, err, code = connect(port, CLIENT_TLS, { handshake_timeout = 0.3 })
    sock:close()
    assert.is_nil(c)
    assert.are.equal("ETIMEDOUT", code)
    assert.is_truthy(err:find("tls: handshake timed out", 1, true), err)
    assert.is_true(wsuv.now() - t0 < 3)
  end)

  it("ends with close_notify before the TCP FIN (a python ssl peer sees a clean EOF)", function()
    local s = listen {
      tls = SERVER_TLS,
      on_connect = function(conn)
        conn:receive()
        conn:close(1000, "bye")
      end,
    }
    local rc, out = probe("close-notify", s.port)
    assert.are.equal(0, rc, out)
    assert.is_truthy(out:find("clean close_notify", 1, true), out)
  end)

  -- In a child process: a SIGPIPE would end the process that serves.
  it("survives peers that send a close frame and reset at once (no SIGPIPE)", function()
    local child = H.start_server(("exec %s %schaos_server.lua --port 0 --cert %s --key %s"):format(
      H.lua_interpreter(), H.PEERS, SERVER_TLS.cert, SERVER_TLS.key))
    local rc, out = probe("close-reset", child.port)
    local alive = os.execute("kill -0 " .. child.pid .. " 2>/dev/null")
    local log = H.read_file(child.log) or ""
    H.stop(child)
    assert.is_true(alive == true or alive == 0, "the server died: " .. out .. "\n" .. log)
    assert.are.equal(0, rc, out)
    assert.is_truthy(out:find("echoes after 200", 1, true), out)
  end)

  for _, case in ipairs({
    { "renegotiate", "refuses a TLS 1.2 renegotiation and keeps serving", "renegotiation refused" },
    { "tls11", "refuses TLS 1.1 and older, and keeps serving", "tls 1.1 refused" },
  }) do
    it(case[2], function()
      local s = listen { tls = SERVER_TLS }
      local rc, out = probe(case[1], s.port)
      assert.are.equal(0, rc, out)
      assert.is_truthy(out:find(case[3], 1, true), out)
      local c = assert(connect(s.port))
      assert.is_true(c:send("x"))
      assert.are.equal("x", (c:receive(5)))
    end)
  end

  it("examples/wss_server.lua serves wss:// with compression and reloads on request", function()
    -- The example prints a URL, not "PORT n": give it a port that was free.
    local probe_sock = require("socket").bind("127.0.0.1", 0)
    local _, port = probe_sock:getsockname()
    probe_sock:close()
    local job = H.start_job(("exec %s examples/wss_server.lua %sserver.pem %sserver.key %d")
      :format(H.lua_interpreter(), C, C, port))
    local ok, err = pcall(function()
      local c
      assert(H.wait_until(wsuv, function()
        c = connect(port, CLIENT_TLS, { compression = true })
        return c ~= nil
      end, 10), "examples/wss_server.lua did not come up")
      assert.is_true(c:send("hi"))
      assert.are.equal("hi", (c:receive(5)))
      assert.is_truthy(c:compression(), "compression not negotiated")
      assert.is_true(c:send("reload"))
      assert.are.equal("reloaded", (c:receive(5)))
      c:close()
    end)
    H.stop(job)
    assert(ok, err)
  end)

  it("gives TLS buffers back after a big message once the connection is idle", function()
    local server_conn
    local s = listen {
      tls = SERVER_TLS,
      max_message = 8 * 1024 * 1024,
      on_connect = function(conn)
        server_conn = conn
        H.echo(conn)
      end,
    }
    local c = assert(connect(s.port, CLIENT_TLS, { max_message = 8 * 1024 * 1024 }))
    local big = ("0123456789abcdef"):rep(256 * 1024) -- 4 MiB
    assert.is_true(c:send(big, "binary"))
    assert.are.equal(#big, #assert(c:receive(10)))
    -- Busy: buffers over 256 KiB are dropped as soon as they drain.
    assert.is_true(c:tls_info().buffered <= 600 * 1024, c:tls_info().buffered)
    wsuv.sleep(1.4) -- idle: the sweep trims what is left
    assert.is_true(c:tls_info().buffered < 64 * 1024, c:tls_info().buffered)
    assert.is_true(server_conn:tls_info().buffered < 64 * 1024, server_conn:tls_info().buffered)
    assert.is_true(c:send("still works"))
    assert.are.equal("still works", (c:receive(5)))
  end)
end)
