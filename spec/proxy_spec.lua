-- spec/proxy_spec.lua: wsuv.connect(url, {proxy = "http://..."}) through a
-- real HTTP proxy, Debian's tinyproxy, run as a child on 127.0.0.1 with
-- Basic credentials: ws:// and wss:// (TLS with the server, inside the
-- tunnel), the proxy's refusals (407 without credentials, its answer when
-- the server is not there), a proxy that is not there, never answers,
-- answers past max_head or sends bytes before the server could,
-- the command line's --proxy; and which proxy the environment names.
local H = require "spec.helper"
local wsuv = require "wsuv"
local cli = require "wsuv.cli"

local TINYPROXY = "/usr/bin/tinyproxy"
-- A stand-in proxy that misbehaves (reads CONNECT as it reads a handshake).
local RAW = H.PYTHON .. " " .. H.PEERS .. "raw_server.py --port 0 --hold 10 --mode "

describe("connect through an HTTP proxy", function()
  local absent = H.missing("proxy_spec", TINYPROXY, "tinyproxy")
  if absent then
    pending(absent)
    return
  end

  local proxy, proxy_port, conf
  local servers, conns = {}, {}
  local C = H.certs()

  lazy_setup(function()
    proxy_port = H.closed_port(wsuv)
    conf = H.tmpname()
    local f = assert(io.open(conf, "w"))
    f:write(table.concat({
      "Port " .. proxy_port,
      "Listen 127.0.0.1",
      "Timeout 30",
      "Allow 127.0.0.1",
      "MaxClients 20",
      "LogLevel Connect",
      "BasicAuth alice s3cr-t",
    }, "\n"), "\n")
    f:close()
    proxy = H.start_job(("exec %s -d -c %s"):format(TINYPROXY, H.sh_quote(conf)))
    local socket = require "socket"
    assert(H.wait_until(wsuv, function()
      local s = socket.tcp()
      local ok = s:connect("127.0.0.1", proxy_port)
      s:close()
      return ok ~= nil
    end, 10), "tinyproxy did not come up: " .. (H.read_file(proxy.out) or ""))
  end)

  lazy_teardown(function()
    H.stop(proxy)
    H.remove(conf)
  end)

  after_each(function()
    H.close_and_check(wsuv, conns, servers)
  end)

  -- The proxy's URL; by default with the password percent-encoded, as a
  -- URL may carry it ("-" as %2D).
  local function via(user)
    return ("http://%s127.0.0.1:%d"):format(user or "alice:s3cr%2Dt@", proxy_port)
  end

  -- An echo server that also reports the Host its clients asked for.
  local function echo_server(opts)
    opts = opts or {}
    opts.host, opts.port = "127.0.0.1", 0
    opts.on_connect = function(conn)
      conn:send("host " .. conn:request().headers.host)
      H.echo(conn)
    end
    local s = assert(wsuv.listen(opts))
    servers[#servers + 1] = s
    return s
  end

  local function connect(url, opts)
    return H.connect_kept(wsuv, conns, url, opts)
  end

  it("tunnels ws:// with Basic credentials: the server sees its own Host", function()
    local s = echo_server()
    local c, err = connect(("ws://127.0.0.1:%d/chat"):format(s.port), { proxy = via() })
    assert(c, err)
    assert.are.equal("host 127.0.0.1:" .. s.port, (c:receive(5)))
    assert(c:send(("x"):rep(100000)))
    assert.are.equal(("x"):rep(100000), (c:receive(5)))
    -- The TCP peer is the proxy.
    assert.are.equal(proxy_port, select(2, c:peer()))
    assert.truthy((H.read_file(proxy.out) or ""):find("CONNECT 127.0.0.1:" .. s.port, 1, true))
  end)

  it("tunnels wss://: TLS with the server, verified, compression agreed", function()
    local s = echo_server({ tls = { cert = C .. "server.pem", key = C .. "server.key" },
      compression = true })
    local c, err = connect(("wss://localhost:%d/"):format(s.port), { proxy = via(),
      tls = { ca = C .. "ca.pem" }, compression = true })
    assert(c, err)
    assert.are.equal("TLSv1.3", c:tls_info().version)
    assert.truthy(c:compression())
    assert.are.equal("host localhost:" .. s.port, (c:receive(5)))
    assert(c:send("through"))
    assert.are.equal("through", (c:receive(5)))
    -- A certificate for another name is still refused through the tunnel.
    local bad, berr, code = connect(("wss://127.0.0.1:%d/"):format(s.port), { proxy = via(),
      tls = { ca = C .. "other-ca.pem" } })
    assert.is_nil(bad)
    assert.are.equal("ETLS", code, berr)
  end)

  it("reports the proxy's refusal of missing or wrong credentials, with its response", function()
    local s = echo_server()
    local url = ("ws://127.0.0.1:%d/"):format(s.port)
    -- tinyproxy answers wrong credentials with 401, not 407.
    for user, status in pairs({ [""] = 407, ["alice:wrong@"] = 401 }) do
      local c, err, code, response = connect(url, { proxy = via(user) })
      assert.is_nil(c)
      assert.are.same({ "proxy: answered with status " .. status, "EPROXY" }, { err, code })
      assert.are.equal(status, response.status)
      local challenge = H.header(response, "proxy-authenticate")
      if status == 407 then
        assert.truthy(challenge and challenge:find("^Basic"), tostring(challenge))
      end
    end
  end)

  it("reports the proxy's answer when the server is not there", function()
    local url = ("ws://127.0.0.1:%d/"):format(H.closed_port(wsuv))
    local c, err, code, response = connect(url, { proxy = via() })
    assert.is_nil(c)
    assert.are.equal("EPROXY", code, err)
    assert.is_true(response.status >= 500 and response.status <= 599, tostring(response.status))
  end)

  it("fails plainly when the proxy is not there, never answers, or its URL is bad", function()
    local s = echo_server()
    local url = ("ws://127.0.0.1:%d/"):format(s.port)
    local closed = ("http://127.0.0.1:%d"):format(H.closed_port(wsuv))
    local c, err, code = connect(url, { proxy = closed })
    assert.are.same({ nil, "connect: connection refused", "ECONNREFUSED" }, { c, err, code })
    -- A proxy that reads CONNECT and never answers: it times out.
    local silent = H.start_server(RAW .. "silent")
    local t0 = wsuv.now()
    c, err, code = connect(url, { proxy = "http://127.0.0.1:" .. silent.port, timeout = 0.5 })
    local took = wsuv.now() - t0
    H.stop(silent)
    assert.are.same({ nil, "proxy: timed out", "ETIMEDOUT" }, { c, err, code })
    assert.is_true(took >= 0.45 and took < 3, "took " .. took)
    -- One whose answer goes on past max_head, and one that sends bytes down
    -- the tunnel before the server could have.
    for mode, want in pairs({ ["big-head"] = { "EHEADTOOBIG", "proxy: " },
      ["tunnel-junk"] = { "EPROXY", "proxy: sent bytes past its answer" } }) do
      local bad = H.start_server(RAW .. mode)
      c, err, code = connect(url, { proxy = "http://127.0.0.1:" .. bad.port, max_head = 4096 })
      H.stop(bad)
      assert.are.same({ nil, want[1] }, { c, code }, mode .. ": " .. tostring(err))
      assert.are.equal(want[2], err:sub(1, #want[2]))
    end
    c, err, code = connect(url, { proxy = "socks5://127.0.0.1:1080" })
    assert.are.same({ nil, "EINVAL" }, { c, code })
    assert.truthy(err:find("expected http://", 1, true), err)
    c, err, code = connect(url, { proxy = via() .. "/path" })
    assert.are.same({ nil, "EINVAL" }, { c, code })
    assert.truthy(err:find("invalid host or port", 1, true), err)
  end)

  it("the command line goes through it with -x", function()
    local s = echo_server()
    local out = {}
    local sink = {
      write = function(self, ...)
        for _, v in ipairs({ ... }) do
          out[#out + 1] = tostring(v)
        end
        return self
      end,
      flush = function() end,
    }
    local rc = cli.main({ "-x", via(), "-w", "0.3", ("ws://127.0.0.1:%d/"):format(s.port), "hi" },
      { lines = function()
        return function() end
      end }, sink, sink)
    assert.are.equal(0, rc, table.concat(out))
    assert.are.equal(("host 127.0.0.1:%d\nhi\n"):format(s.port), table.concat(out))
  end)
end)

describe("the proxy from the environment (proxy = true)", function()
  local url = require "wsuv.url"
  local function env(t)
    return function(name)
      return t[name]
    end
  end
  local function via(address, vars)
    return url.proxy_from_env(assert(url.parse(address)), env(vars))
  end

  it("reads https_proxy for wss://, http_proxy for ws://, then all_proxy, as curl does", function()
    local all = { https_proxy = "http://s:1", http_proxy = "http://p:1", ALL_PROXY = "http://a:1" }
    assert.are.equal("http://s:1", via("wss://example.com/", all))
    assert.are.equal("http://p:1", via("ws://example.com:8080/", all))
    assert.are.equal("http://S:1", via("wss://example.com/", { HTTPS_PROXY = "http://S:1" }))
    assert.are.equal("http://a:1", via("ws://example.com/", { ALL_PROXY = "http://a:1" }))
    -- HTTP_PROXY is a CGI request's header ("httpoxy"): never read.
    assert.is_nil(via("ws://example.com/", { HTTP_PROXY = "http://evil:1" }))
    assert.is_nil(via("wss://example.com/", { https_proxy = "" }))
    assert.is_nil(via("wss://example.com/", {}))
  end)

  it("leaves out NO_PROXY's hosts and domains, and loopback always", function()
    local vars = { https_proxy = "http://s:1",
      no_proxy = "internal.example, .corp.example:443,10.0.0.1" }
    for _, direct in ipairs({ "wss://internal.example/", "wss://a.internal.example/",
      "wss://corp.example/", "wss://x.corp.example/", "wss://10.0.0.1/", "wss://127.0.0.1:9/",
      "wss://127.8.9.10/", "wss://localhost/", "wss://LocalHost/", "wss://[::1]:9/",
      "wss://app.localhost/" }) do
      assert.is_nil(via(direct, vars), direct)
    end
    for _, proxied in ipairs({ "wss://notinternal.example/", "wss://example.com/",
      "wss://10.0.0.10/" }) do
      assert.are.equal("http://s:1", via(proxied, vars), proxied)
    end
    assert.is_nil(via("wss://example.com/", { https_proxy = "http://s:1", NO_PROXY = "*" }))
  end)

  it("goes straight to a loopback server whatever the environment says", function()
    local s = assert(wsuv.listen({ host = "127.0.0.1", port = 0, on_connect = H.echo }))
    local dead = "http://127.0.0.1:" .. H.closed_port(wsuv)
    local script = ("local wsuv = require 'wsuv'; local c = assert(wsuv.connect("
      .. "'ws://127.0.0.1:%d/', { proxy = true })); c:send('direct'); "
      .. "local m, k = c:receive(5); print(m, k); c:close()"):format(s.port)
    local job = H.start_job(("env http_proxy=%s all_proxy=%s %s %s"):format(dead, dead,
      H.lua_env(), H.lua_script(script)))
    local rc, out = H.wait_job(wsuv, job, 10)
    s:close()
    assert.are.equal(0, rc, out)
    assert.are.equal("direct\ttext\n", out)
  end)
end)
