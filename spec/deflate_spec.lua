-- spec/deflate_spec.lua: permessage-deflate (RFC 7692) at the Lua level.
-- (1) our client against python3-websockets and node ws echo servers, with
-- every offer we can make and with peers that impose parameters; (2) their
-- clients against our server imposing parameters; (3) negotiation edge cases
-- against our server over raw sockets; (4) servers whose answer breaks RFC
-- 7692; (5) decompression bombs and bad compressed data against both roles.
-- Peers are separate processes on 127.0.0.1 (spec/peers/README.md); where a
-- spec blocks on a raw socket, or measures memory, our side runs in a child
-- process too (spec/peers/wsuv_server.lua, wsuv_client.lua).
local H = require "spec.helper"
local wsuv = require "wsuv"

local PMD_RAW = H.PYTHON .. " " .. H.PEERS .. "pmd_raw.py"
local MiB = 1024 * 1024

-- About n bytes of JSON-like text (repetitive, so it compresses).
local function json_text(n)
  local items, size, i = {}, 2, 0
  while size < n do
    local item = ('{"id":%d,"name":"player%d","x":%d,"y":%d,"alive":true}'):format(
      i, i % 97, i * 7 % 1000, i * 13 % 1000)
    items[#items + 1] = item
    size = size + #item + 1
    i = i + 1
  end
  return "[" .. table.concat(items, ",") .. "]"
end

local JSON = json_text(2000)
local BIG = json_text(MiB)
local RANDOM
do
  local blocks = {}
  for i = 1, 64 do
    blocks[i] = wsuv.core.random(4096) -- incompressible
  end
  RANDOM = table.concat(blocks)
end

-- "permessage-deflate; a; b=10" -> { "permessage-deflate", a = true, b = 10 }
-- (quoted values unquoted). nil stays nil.
local function ext_params(ext)
  if not ext then
    return nil
  end
  local t = {}
  for part in (ext .. ";"):gmatch("([^;]*);") do
    part = part:match("^%s*(.-)%s*$")
    if not t[1] then
      t[1] = part
    else
      local k, v = part:match('^([%w_]+)%s*=%s*"?([^"]*)"?$')
      if k then
        t[k] = tonumber(v) or v
      else
        t[part] = true
      end
    end
  end
  return t
end

-- The environment that lets a child Lua find wsuv as this process does.
local function lua_cmd(script)
  return ("%s %s %s"):format(H.lua_env(), H.lua_interpreter(), H.PEERS .. script)
end

-- Peak and current resident set size of a process, in KiB.
local function memory_of(pid)
  local s = H.read_file("/proc/" .. pid .. "/status") or ""
  return tonumber(s:match("VmHWM:%s*(%d+)")), tonumber(s:match("VmRSS:%s*(%d+)"))
end

-- Resets a process's peak RSS to its current RSS (Linux 4.0+), so that the
-- next reading of VmHWM is the peak of what happens from now on; when that
-- is not allowed, the peak stays the one since the process started.
local function reset_peak(pid)
  local f = io.open("/proc/" .. pid .. "/clear_refs", "w")
  if f then
    f:write("5")
    f:close()
  end
end

-- Runs a command to its end; returns its output.
local function run(cmd)
  local f = assert(io.popen(cmd .. " 2>&1"))
  local out = f:read("*a")
  f:close()
  return out
end

-------------------------------------------------------------------------------
-- (1) our client -> their echo servers.

-- The parameters our offer puts on the wire for a compression table
-- (window bits of 15 are the default: server_max_window_bits is then left
-- out, client_max_window_bits is sent without a value).
local function wire_offer(o)
  local smwb = o.server_max_window_bits
  local cmwb = o.client_max_window_bits
  return {
    snct = o.server_no_context_takeover, cnct = o.client_no_context_takeover,
    smwb = smwb and smwb < 15 and smwb or nil,
    cmwb = cmwb and cmwb < 15 and cmwb or true,
  }
end

-- What each peer answers to an offer, from its documented behaviour.
-- python websockets' default factory: server_max_window_bits=12 and
-- client_max_window_bits=12 unless the offer asks for less.
local function python_default_answer(o)
  local w = wire_offer(o)
  return {
    "permessage-deflate",
    server_no_context_takeover = w.snct, client_no_context_takeover = w.cnct,
    server_max_window_bits = math.min(w.smwb or 12, 12),
    client_max_window_bits = math.min(w.cmwb == true and 12 or w.cmwb, 12),
  }
end

-- node ws without limits: echoes what was asked; drops a valueless
-- client_max_window_bits.
local function node_default_answer(o)
  local w = wire_offer(o)
  return {
    "permessage-deflate",
    server_no_context_takeover = w.snct, client_no_context_takeover = w.cnct,
    server_max_window_bits = w.smwb,
    client_max_window_bits = w.cmwb ~= true and w.cmwb or nil,
  }
end

local function offers_for(answer, bits)
  local list = {
    { name = "defaults", compression = true },
    { name = "client_no_context_takeover", compression = { client_no_context_takeover = true } },
    { name = "server_no_context_takeover", compression = { server_no_context_takeover = true } },
    { name = "both no_context_takeover, level 9, mem_level 1, threshold 1",
      compression = { client_no_context_takeover = true, server_no_context_takeover = true,
        level = 9, mem_level = 1, threshold = 1 } },
  }
  for b = bits, 15 do
    list[#list + 1] = { name = "client_max_window_bits=" .. b, bits = b, side = "client",
      compression = { client_max_window_bits = b } }
    list[#list + 1] = { name = "server_max_window_bits=" .. b, bits = b, side = "server",
      compression = { server_max_window_bits = b } }
  end
  for _, o in ipairs(list) do
    local t = o.compression == true and {} or o.compression
    o.expect = answer(t)
  end
  return list
end

local PEER_SERVERS = {
  { name = "python websockets (defaults)",
    cmd = H.PYTHON .. " " .. H.PEERS .. "py_echo_server.py --port 0",
    -- CPython's zlib refuses a raw deflate window of 8 bits.
    offers = offers_for(python_default_answer, 9) },
  { name = "python websockets (no limits)",
    cmd = H.PYTHON .. " " .. H.PEERS .. "py_echo_server.py --port 0 --deflate default",
    offers = { { name = "defaults", compression = true, expect = { "permessage-deflate" } } } },
  { name = "python websockets imposing every parameter",
    cmd = H.PYTHON .. " " .. H.PEERS .. "py_echo_server.py --port 0 --deflate "
      .. "server_no_context_takeover,client_no_context_takeover,"
      .. "server_max_window_bits=9,client_max_window_bits=10",
    offers = { { name = "defaults", compression = true, expect = {
      "permessage-deflate", server_no_context_takeover = true, client_no_context_takeover = true,
      server_max_window_bits = 9, client_max_window_bits = 10 } } } },
  { name = "node ws (threshold 0)",
    cmd = H.NODE .. " " .. H.PEERS .. "node_echo_server.js --port 0 --deflate default",
    offers = offers_for(node_default_answer, 8) },
  { name = "node ws imposing every parameter",
    cmd = H.NODE .. " " .. H.PEERS .. "node_echo_server.js --port 0 --deflate "
      .. "server_no_context_takeover,client_no_context_takeover,"
      .. "server_max_window_bits=10,client_max_window_bits=11",
    offers = {
      { name = "defaults", compression = true, expect = {
        "permessage-deflate", server_no_context_takeover = true, client_no_context_takeover = true,
        server_max_window_bits = 10, client_max_window_bits = 11 } },
    } },
  { name = "python websockets over TLS", tls = true,
    cmd = H.PYTHON .. " " .. H.PEERS .. "py_echo_server.py --port 0",
    offers = { { name = "client_max_window_bits=10", compression = { client_max_window_bits = 10 },
      expect = { "permessage-deflate", server_max_window_bits = 12,
        client_max_window_bits = 10 } } } },
  { name = "node ws over TLS", tls = true,
    cmd = H.NODE .. " " .. H.PEERS .. "node_echo_server.js --port 0 --deflate default",
    offers = { { name = "server_no_context_takeover",
      compression = { server_no_context_takeover = true },
      expect = { "permessage-deflate", server_no_context_takeover = true } } } },
  { name = "python websockets without compression",
    cmd = H.PYTHON .. " " .. H.PEERS .. "py_echo_server.py --port 0 --no-compression",
    offers = { { name = "defaults", compression = true, declined = true } } },
  { name = "node ws without compression",
    cmd = H.NODE .. " " .. H.PEERS .. "node_echo_server.js --port 0",
    offers = { { name = "server_no_context_takeover", declined = true,
      compression = { server_no_context_takeover = true } } } },
}

for _, peer in ipairs(PEER_SERVERS) do
  describe("our client (compression) -> " .. peer.name .. " echo server", function()
    local server, url
    local conns = {}
    local memory = {}

    local tls
    lazy_setup(function()
      local certs = peer.tls and H.certs()
      server = H.start_server(peer.cmd .. (peer.tls and
        (" --tls %sserver.pem %sserver.key"):format(certs, certs) or ""))
      url = ("%s://127.0.0.1:%d/"):format(peer.tls and "wss" or "ws", server.port)
      tls = peer.tls and { ca = certs .. "ca.pem" } or nil
    end)

    lazy_teardown(function()
      H.stop(server)
    end)

    after_each(function()
      H.close_all(conns)
      assert.are.same({ 0, 0 }, { H.live(wsuv) })
    end)

    local function connect(compression)
      local conn, err, code = wsuv.connect(url,
        { timeout = 5, compression = compression, tls = tls })
      assert(conn, tostring(err) .. " " .. tostring(code))
      conns[#conns + 1] = conn
      return conn
    end

    local function counters(conn)
      local c = conn:compression()
      assert(c, "permessage-deflate is not in use")
      return c.received, c.sent
    end

    -- Sends data, expects it back exactly; our `sent` counter must grow by
    -- sent_delta, `received` by one (both peers compress every message).
    local function roundtrip(conn, data, kind, opts, sent_delta)
      local r0, s0 = counters(conn)
      assert.is_true(conn:send(data, kind, opts))
      local got, gkind = conn:receive(10)
      assert(got, "receive: " .. tostring(gkind))
      assert.are.equal(kind, gkind)
      assert(got == data, ("payload mismatch: %d bytes sent, %d received"):format(#data, #got))
      local r1, s1 = counters(conn)
      assert.are.equal(s0 + sent_delta, s1, "messages we sent compressed")
      assert.are.equal(r0 + 1, r1, "compressed messages we received")
    end

    for _, offer in ipairs(peer.offers) do
      if offer.declined then
        it("offer " .. offer.name .. ": declined, messages go plain", function()
          local conn = connect(offer.compression)
          assert.is_nil(conn:compression())
          assert.is_true(conn:send(JSON))
          assert.are.equal(JSON, (conn:receive(10)))
          assert.is_true(conn:send("inflated?"))
          assert.are.equal("none", (conn:receive(10)))
          assert.is_true(conn:close())
        end)
      else
        it("offer " .. offer.name .. ": negotiates, compresses both ways, echoes exactly",
          function()
            local conn = connect(offer.compression)
            local info = conn:compression()
            assert(info, "permessage-deflate was not negotiated")
            assert.are.same(offer.expect, ext_params(info.extension), info.extension)
            assert.are.same({ 0, 0 }, { info.received, info.sent })
            roundtrip(conn, JSON, "text", nil, 1)
            memory[offer.name] = conn:compression().memory
            assert.is_true(memory[offer.name] > 0)
            roundtrip(conn, BIG, "text", nil, 1)
            -- Incompressible: without context takeover on our side (nothing
            -- to keep in step with the peer's window) it goes plain.
            local own_nct = offer.expect.client_no_context_takeover
            roundtrip(conn, RANDOM, "binary", nil, own_nct and 0 or 1)
            -- Fragmented: compressed as one message, RSV1 on the first frame;
            -- a ping (never compressed) between two of its frames.
            local w = conn:writer("text")
            local r0, s0 = counters(conn)
            assert.is_true(w:write(JSON:sub(1, 700)))
            assert(conn:ping("mid-message", 5), "no pong to a ping between fragments")
            assert.is_true(w:write(""))
            assert.is_true(w:write(JSON:sub(701, 1500)))
            assert.is_true(w:finish(JSON:sub(1501)))
            local got, kind = conn:receive(10)
            assert.are.equal("text", kind)
            assert(got == JSON, "fragmented message mismatch")
            assert.are.same({ r0 + 1, s0 + 1 }, { counters(conn) })
            -- Empty: sent plain (below the threshold), comes back compressed.
            roundtrip(conn, "", "text", nil, 0)
            roundtrip(conn, "", "binary", nil, 0)
            -- compress = false: plain on the wire, whatever its size.
            roundtrip(conn, JSON, "text", { compress = false }, 0)
            roundtrip(conn, RANDOM, "binary", { compress = false }, 0)
            -- The peer's own count of compressed messages it received.
            -- JSON, BIG, the fragmented one, and RANDOM unless it went plain.
            local _, sent = counters(conn)
            assert.are.equal(own_nct and 3 or 4, sent)
            assert.is_true(conn:send("inflated?"))
            assert.are.equal(tostring(sent), (conn:receive(10)))
            assert.is_true(conn:close())
          end)
      end
    end

    if #peer.offers > 4 then
      it("a smaller window takes less zlib memory", function()
        local low = peer.offers[5].bits
        local function m(side, b)
          return assert(memory[side .. "_max_window_bits=" .. b], "no figure for " .. b)
        end
        -- Our deflate window (client side) and our inflate window (server).
        assert.is_true(m("client", low) < m("client", 15), "client window")
        assert.is_true(m("server", low) < m("server", 15), "server window")
        local prev = m("client", low)
        for b = low + 1, 15 do
          assert.is_true(m("client", b) >= prev, "client window " .. b)
          prev = m("client", b)
        end
      end)
    end
  end)
end

-------------------------------------------------------------------------------
-- (2) their clients -> our server. Each client runs DEFLATE_CASES of
-- spec/peers/py_client.py / node_client.js (--deflate) and prints TAP.

local CLIENT_CASES = {
  "extension", "json text", "1 MiB text", "256 KiB binary", "fragmented text", "empty text",
  "inflated", "close 4000 bye",
}

local PMD = "permessage-deflate"
-- Our server's options, the client's offer, and the answer RFC 7692 makes
-- of them (both clients offer client_max_window_bits without a value).
local SERVER_VARIANTS = {
  { name = "defaults", compression = true, expect = { PMD } },
  { name = "server_no_context_takeover", compression = { server_no_context_takeover = true },
    expect = { PMD, server_no_context_takeover = true } },
  { name = "client_no_context_takeover", compression = { client_no_context_takeover = true },
    expect = { PMD, client_no_context_takeover = true } },
  { name = "server_max_window_bits=9", compression = { server_max_window_bits = 9 },
    expect = { PMD, server_max_window_bits = 9 } },
  { name = "server_max_window_bits=12", compression = { server_max_window_bits = 12 },
    expect = { PMD, server_max_window_bits = 12 } },
  { name = "server_max_window_bits=15", compression = { server_max_window_bits = 15 },
    expect = { PMD } },
  { name = "client_max_window_bits=9", compression = { client_max_window_bits = 9 },
    expect = { PMD, client_max_window_bits = 9 } },
  { name = "client_max_window_bits=15", compression = { client_max_window_bits = 15 },
    expect = { PMD } },
  { name = "defaults, client offers server_no_context_takeover, server_max_window_bits=10",
    compression = true, offer = "server_no_context_takeover,server_max_window_bits=10",
    expect = { PMD, server_no_context_takeover = true, server_max_window_bits = 10 } },
  { name = "defaults, over TLS", compression = true, tls = true, expect = { PMD } },
  { name = "client_max_window_bits=10, client offers client_no_context_takeover, "
    .. "client_max_window_bits=11",
    compression = { client_max_window_bits = 10 },
    offer = "client_no_context_takeover,client_max_window_bits=11",
    expect = { PMD, client_no_context_takeover = true, client_max_window_bits = 10 } },
}

local PEER_CLIENTS = {
  { name = "python websockets client", cmd = H.PYTHON .. " " .. H.PEERS .. "py_client.py" },
  { name = "node ws client", cmd = H.NODE .. " " .. H.PEERS .. "node_client.js" },
}

describe("their clients (compression) -> our server", function()
  local runs = {} -- [peer name][variant name] = { rc, out, tap = {}, server = {} }
  local servers = {}

  -- All clients run at once, each against the listener of its variant,
  -- told apart by the request path.
  lazy_setup(function()
    local jobs = {}
    local ok, err = pcall(function()
      for vi, v in ipairs(SERVER_VARIANTS) do
        local seen = {}
        local certs = v.tls and H.certs()
        local srv = assert(wsuv.listen {
          host = "127.0.0.1",
          port = 0,
          compression = v.compression,
          tls = v.tls and { cert = certs .. "server.pem", key = certs .. "server.key" } or nil,
          on_connect = function(conn)
            local rec = { extension = conn:compression() and conn:compression().extension }
            seen[conn:request().path] = rec
            while true do
              local msg, kind = conn:receive()
              if not msg then
                break
              end
              conn:send(msg, kind)
              rec.info = conn:compression()
            end
          end,
        })
        servers[#servers + 1] = srv
        for pi, peer in ipairs(PEER_CLIENTS) do
          local r = { seen = seen, path = ("/c%d/v%d"):format(pi, vi) }
          runs[peer.name] = runs[peer.name] or {}
          runs[peer.name][v.name] = r
          r.job = H.start_job(("%s %s://127.0.0.1:%d%s --deflate %s%s"):format(
            peer.cmd, v.tls and "wss" or "ws", srv.port, r.path, v.offer or "default",
            v.tls and " --ca " .. certs .. "ca.pem" or ""))
          jobs[#jobs + 1] = r
        end
      end
      local deadline = wsuv.now() + 60
      local pending = #jobs
      while pending > 0 and wsuv.now() < deadline do
        wsuv.sleep(0.02)
        pending = 0
        for _, r in ipairs(jobs) do
          if not r.rc then
            r.rc, r.out = H.finished(r.job)
            pending = pending + (r.rc and 0 or 1)
          end
        end
      end
    end)
    for _, r in ipairs(jobs) do
      H.stop(r.job)
    end
    for _, srv in ipairs(servers) do
      srv:close()
    end
    assert(ok, err)
    for _, r in ipairs(jobs) do
      r.tap = {}
      for line in (r.out or ""):gmatch("[^\n]+") do
        local n = line:match("^not ok %d+ %- (.-) # ") or line:match("^not ok %d+ %- (.*)$")
        if n then
          r.tap[n] = { ok = false, line = line }
        else
          n = line:match("^ok %d+ %- (.*)$")
          if n then
            r.tap[n] = { ok = true, line = line }
          end
        end
        r.extension = r.extension or line:match("^# extension: (.*)$")
        r.inflated = r.inflated or tonumber(line:match("^# inflated: (%d+)$"))
      end
    end
  end)

  after_each(function()
    assert.are.same({ 0, 0 }, { H.live(wsuv) })
  end)

  for _, peer in ipairs(PEER_CLIENTS) do
    for _, v in ipairs(SERVER_VARIANTS) do
      it(peer.name .. " -> our server with " .. v.name, function()
        local r = runs[peer.name][v.name]
        local out = tostring(r.out)
        assert.are.equal(0, r.rc, out)
        for _, name in ipairs(CLIENT_CASES) do
          assert(r.tap[name], "case " .. name .. " did not report\n" .. out)
          assert(r.tap[name].ok, r.tap[name].line)
        end
        local ok, bad = H.tap_counts(out)
        assert.are.same({ #CLIENT_CASES, 0 }, { ok, bad }, out)
        -- What was negotiated, seen from both ends.
        assert.are.same(v.expect, ext_params(r.extension), out)
        local rec = r.seen[r.path]
        assert(rec and rec.info, "our server saw no messages on " .. r.path)
        assert.are.equal(r.extension, rec.extension)
        assert.are.equal(r.extension, rec.info.extension)
        -- The client compressed its 5 messages (the empty one too); we
        -- compressed the 4 longer than the threshold, but sent the random
        -- one plain when our side has no context takeover.
        assert.are.equal(5, rec.info.received, out)
        local plain = v.expect.server_no_context_takeover and 1 or 0
        assert.are.equal(4 - plain, rec.info.sent, out)
        assert.are.equal(rec.info.sent, r.inflated, "messages the client inflated")
      end)
    end
  end
end)

-------------------------------------------------------------------------------
-- Our client against our server: many messages through one pair of
-- windows, and what is never compressed.

describe("our client (compression) -> our server (compression)", function()
  local servers, conns = {}, {}

  after_each(function()
    H.close_all(conns)
    for i = #servers, 1, -1 do
      table.remove(servers, i):close()
    end
    assert.are.same({ 0, 0 }, { H.live(wsuv) })
  end)

  -- A listener and a client connected to it; limits: {server = opts,
  -- client = opts} merged into the listen and connect options.
  local function pair(server_compression, on_connect, limits)
    local sopts = {
      host = "127.0.0.1", port = 0, compression = server_compression,
      on_connect = on_connect or H.echo,
    }
    local copts = { timeout = 5, compression = true }
    for k, v in pairs(limits and limits.server or {}) do
      sopts[k] = v
    end
    for k, v in pairs(limits and limits.client or {}) do
      copts[k] = v
    end
    local srv = assert(wsuv.listen(sopts))
    servers[#servers + 1] = srv
    local conn, err, code = wsuv.connect(("ws://127.0.0.1:%d/"):format(srv.port), copts)
    assert(conn, tostring(err) .. " " .. tostring(code))
    conns[#conns + 1] = conn
    return srv, conn
  end

  local variants = {
    { "defaults", true },
    { "no context takeover both ways",
      { server_no_context_takeover = true, client_no_context_takeover = true } },
    { "9-bit windows, level 9, mem_level 1",
      { server_max_window_bits = 9, client_max_window_bits = 9, level = 9, mem_level = 1 } },
  }
  for _, v in ipairs(variants) do
    it("300 messages of random sizes, kinds and fragments echo exactly (" .. v[1] .. ")",
      function()
        local seed = os.time()
        math.randomseed(seed)
        local _, conn = pair(v[2])
        local i = 0
        while i < 300 do
          i = i + 1
          local n = i % 50 == 0 and math.random(50000, 200000) or math.random(0, 3000)
          local kind = math.random(4) == 1 and "binary" or "text"
          local at = math.random(1, #BIG - n)
          local data = kind == "text" and BIG:sub(at, at + n - 1)
            or (RANDOM .. RANDOM):sub(1, n)
          local opts = math.random(4) == 1 and { compress = false } or nil
          if math.random(5) == 1 then
            local w = conn:writer(kind, opts)
            local pos = 1
            while pos <= #data do
              local len = math.random(0, 700)
              assert.is_true(w:write(data:sub(pos, pos + len - 1)))
              pos = pos + len
            end
            assert.is_true(w:finish())
          else
            assert.is_true(conn:send(data, kind, opts))
          end
          local got, gkind = conn:receive(10)
          assert(got == data, ("message %d (%d bytes, seed %d): mismatch %s"):format(
            i, n, seed, tostring(got and #got or gkind)))
          assert.are.equal(kind, gkind)
        end
        local info = conn:compression()
        assert(info.sent > 100 and info.received > 100,
          ("compressed: %d sent, %d received"):format(info.sent, info.received))
        assert.is_true(conn:close())
      end)
  end

  it("compression options out of range raise", function()
    local srv = pair(true)
    local url = ("ws://127.0.0.1:%d/"):format(srv.port)
    local bad = {
      { server_max_window_bits = 16 }, { server_max_window_bits = 7 },
      { client_max_window_bits = 16 }, { client_max_window_bits = 7 },
      { level = 10 }, { mem_level = 10 }, { threshold = -1 }, "yes", 1,
    }
    for _, c in ipairs(bad) do
      local ok, err = pcall(wsuv.connect, url, { timeout = 5, compression = c })
      assert.is_false(ok, "connect accepted compression = " .. tostring(c))
      assert.truthy(tostring(err):find("compression", 1, true) or
        tostring(err):find("threshold", 1, true), err)
      ok = pcall(wsuv.listen, { host = "127.0.0.1", port = 0, compression = c })
      assert.is_false(ok, "listen accepted compression = " .. tostring(c))
    end
    assert.are.equal(1, wsuv.core.stats().servers, "a refused listen left a server behind")
  end)

  it("level = 0 and mem_level = 0 raise (README: 1-9)", function()
    local srv = pair(true)
    local url = ("ws://127.0.0.1:%d/"):format(srv.port)
    for _, c in ipairs({ { level = 0 }, { mem_level = 0 } }) do
      local ok, conn = pcall(wsuv.connect, url, { timeout = 5, compression = c })
      if ok then
        conns[#conns + 1] = conn
      end
      assert.is_false(ok, "accepted " .. next(c) .. " = 0")
      assert.is_false((pcall(wsuv.listen, { host = "127.0.0.1", port = 0, compression = c })))
    end
  end)

  -- Sends data of each size in turn; returns how many went compressed.
  local function compressed_count(conn, sizes)
    local before = conn:compression().sent
    for _, n in ipairs(sizes) do
      local data = JSON:sub(1, n)
      assert.is_true(conn:send(data))
      assert.are.equal(data, (conn:receive(5)))
    end
    return conn:compression().sent - before
  end

  it("threshold: shorter messages go plain (default 32)", function()
    local srv, conn = pair(true)
    local url = ("ws://127.0.0.1:%d/"):format(srv.port)
    assert.are.equal(0, compressed_count(conn, { 0, 1, 31 }))
    assert.are.equal(2, compressed_count(conn, { 32, 33 }))
    for _, t in ipairs({ { 1, { 0 }, { 1, 2 } }, { 100, { 0, 50, 99 }, { 100, 2000 } } }) do
      local c2 = assert(wsuv.connect(url, { timeout = 5, compression = { threshold = t[1] } }))
      conns[#conns + 1] = c2
      assert.are.equal(0, compressed_count(c2, t[2]), "threshold " .. t[1])
      assert.are.equal(#t[3], compressed_count(c2, t[3]), "threshold " .. t[1])
    end
    -- threshold = 0: no message is shorter than 0 bytes.
    local c0 = assert(wsuv.connect(url, { timeout = 5, compression = { threshold = 0 } }))
    conns[#conns + 1] = c0
    assert.are.equal(1, compressed_count(c0, { 20 }))
    assert.are.equal(1, compressed_count(c0, { 1 }))
  end)

  it("max_message holds on the inflated size, to the byte, on both sides", function()
    local text = BIG:sub(1, 10000)
    local function exchange(conn)
      assert.is_true(conn:send(text))
      assert.are.equal(text, (conn:receive(5)))
      local info = conn:compression()
      assert.are.same({ 1, 1 }, { info.received, info.sent }) -- both ways compressed
      assert.is_true(conn:send(BIG:sub(1, 10001)))
      local msg, what, code = conn:receive(5)
      assert.is_nil(msg)
      assert.are.same({ "closed", 1009 }, { what, code })
    end
    -- Our server at 10000 bytes: it fails the connection.
    local server_saw
    local _, conn = pair(true, function(c)
      H.echo(c)
      server_saw = select(3, c:receive(0))
    end, { server = { max_message = 10000 } })
    exchange(conn)
    assert(H.wait_until(wsuv, function()
      return server_saw ~= nil
    end, 5))
    assert.are.equal(1009, server_saw)
    -- Our client at 10000 bytes: the echo of 10001 bytes fails it.
    _, conn = pair(true, nil, { client = { max_message = 10000 } })
    exchange(conn)
  end)

  it("broadcast is sent plain; the same message by conn:send is compressed", function()
    local ready = false
    local srv, conn = pair(true, function(c)
      ready = true
      while c:receive() do
      end
    end)
    assert(H.wait_until(wsuv, function()
      return ready
    end, 5))
    assert.are.equal(1, (srv:broadcast(JSON)))
    assert.are.equal(JSON, (conn:receive(5)))
    assert.are.equal(0, conn:compression().received)
    -- The control: our server compresses what it sends itself.
    local sconn = srv:clients()()
    assert(sconn, "no server-side connection")
    assert.is_true(sconn:send(JSON))
    assert.are.equal(JSON, (conn:receive(5)))
    assert.are.equal(1, conn:compression().received)
    assert.is_true(conn:close())
  end)
end)

-------------------------------------------------------------------------------
-- (3) negotiation edge cases: raw handshakes against our server, which runs
-- in a child process (spec/peers/wsuv_server.lua) so that blocking LuaSocket
-- calls here cannot stall it.

-- Starts wsuv_server.lua with extra arguments; returns {pid, port, log}.
local function start_our_server(args)
  return H.start_server(lua_cmd("wsuv_server.lua") .. " --port 0 " .. args)
end

-- Sends an upgrade request with one Sec-WebSocket-Extensions header per
-- entry of offers; returns the status and the list of
-- Sec-WebSocket-Extensions values of the response.
local function handshake(port, offers)
  local s = H.raw_connect(port)
  local req = {
    "GET / HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket", "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
  }
  for _, o in ipairs(offers) do
    req[#req + 1] = "Sec-WebSocket-Extensions: " .. o
  end
  req[#req + 1] = "\r\n"
  assert(s:send(table.concat(req, "\r\n")))
  local line = assert(s:receive("*l"))
  local status = tonumber(line:match("^HTTP/1%.1 (%d%d%d)"))
  local exts = {}
  while true do
    line = assert(s:receive("*l"))
    if line == "" then
      break
    end
    local name, value = line:match("^([^:]+):%s*(.-)%s*$")
    if name and name:lower() == "sec-websocket-extensions" then
      exts[#exts + 1] = value
    end
  end
  s:close()
  return status, exts
end

-- Runs pmd_raw.py as a client of port; returns its output and the parsed
-- close line: code, ms (nil when the server sent no close).
local function raw_client(port, attack, offer, timeout)
  local cmd = ("%s client %d --attack %s --timeout %g"):format(PMD_RAW, port, attack,
    timeout or 10)
  if offer then
    cmd = cmd .. " --offer " .. H.sh_quote(offer)
  end
  local out = run(cmd)
  local code, ms = out:match("\nCLOSE (%d+) (%d+)")
  return out, tonumber(code), tonumber(ms)
end

describe("negotiation against our server", function()
  local on, off, strict

  lazy_setup(function()
    on = start_our_server("--compression on")
    off = start_our_server("--compression off")
    strict = start_our_server("--compression "
      .. "client_no_context_takeover,server_max_window_bits=10,client_max_window_bits=9")
  end)

  lazy_teardown(function()
    H.stop(on)
    H.stop(off)
    H.stop(strict)
  end)

  -- offers -> expected answer (nil: declined, 101 without the header).
  local cases = {
    { "one offer", { "permessage-deflate" }, { PMD } },
    { "client_max_window_bits without value (15: left out of the answer)",
      { "permessage-deflate; client_max_window_bits" }, { PMD } },
    { "several offers: the first acceptable wins",
      { "permessage-deflate; server_max_window_bits=10, permessage-deflate" },
      { PMD, server_max_window_bits = 10 } },
    { "an unknown parameter skips the offer",
      { "permessage-deflate; x_foo=1, permessage-deflate; client_no_context_takeover" },
      { PMD, client_no_context_takeover = true } },
    { "a duplicate parameter skips the offer",
      { "permessage-deflate; server_no_context_takeover; server_no_context_takeover, "
        .. "permessage-deflate; server_max_window_bits=11" },
      { PMD, server_max_window_bits = 11 } },
    { "a duplicate alone: declined",
      { "permessage-deflate; client_max_window_bits=10; client_max_window_bits=10" }, nil },
    { "a value on a flag: declined", { "permessage-deflate; server_no_context_takeover=1" }, nil },
    { "client_max_window_bits=7: declined", { "permessage-deflate; client_max_window_bits=7" },
      nil },
    { "client_max_window_bits=16: declined", { "permessage-deflate; client_max_window_bits=16" },
      nil },
    { "client_max_window_bits=x: declined", { "permessage-deflate; client_max_window_bits=x" },
      nil },
    { "client_max_window_bits=09 (leading zero): declined",
      { "permessage-deflate; client_max_window_bits=09" }, nil },
    { "server_max_window_bits without value: declined",
      { "permessage-deflate; server_max_window_bits" }, nil },
    { "a bad value, then a good offer: the good one",
      { "permessage-deflate; client_max_window_bits=16, "
        .. "permessage-deflate; client_max_window_bits=12" },
      { PMD, client_max_window_bits = 12 } },
    { "quoted values", { 'permessage-deflate; client_max_window_bits="10"; '
      .. 'server_max_window_bits="9"' },
      { PMD, client_max_window_bits = 10, server_max_window_bits = 9 } },
    { "spaces around ; and =", { "permessage-deflate ; server_max_window_bits = 12" },
      { PMD, server_max_window_bits = 12 } },
    { "a malformed element is skipped", { "permessage-deflate;, permessage-deflate" }, { PMD } },
    { "other extensions are ignored",
      { "x-webkit-deflate-frame, permessage-deflate; client_no_context_takeover" },
      { PMD, client_no_context_takeover = true } },
    { "offers over two header lines",
      { "permessage-deflate; bogus", "permessage-deflate; server_no_context_takeover" },
      { PMD, server_no_context_takeover = true } },
    { "no offer: no extension", {}, nil },
  }
  for _, case in ipairs(cases) do
    it(case[1], function()
      local status, exts = handshake(on.port, case[2])
      assert.are.equal(101, status)
      if case[3] then
        assert.are.equal(1, #exts, table.concat(exts, " | "))
        assert.are.same(case[3], ext_params(exts[1]), exts[1])
      else
        assert.are.same({}, exts)
      end
    end)
  end

  it("compression off: the offer is declined", function()
    local status, exts = handshake(off.port, { "permessage-deflate; client_max_window_bits" })
    assert.are.equal(101, status)
    assert.are.same({}, exts)
  end)

  it("a server imposing parameters (RFC 7692 7.1.2.2: no client window unless offered)",
    function()
      local imposed = { PMD, client_no_context_takeover = true, server_max_window_bits = 10 }
      local _, exts = handshake(strict.port, { "permessage-deflate" })
      assert.are.same(imposed, ext_params(exts[1]), exts[1])
      imposed.client_max_window_bits = 9
      _, exts = handshake(strict.port, { "permessage-deflate; client_max_window_bits" })
      assert.are.same(imposed, ext_params(exts[1]), exts[1])
      _, exts = handshake(strict.port,
        { "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12" })
      assert.are.same(imposed, ext_params(exts[1]), exts[1])
      -- An offer below our limit: the offer's value.
      _, exts = handshake(strict.port,
        { "permessage-deflate; server_max_window_bits=8; client_max_window_bits=8" })
      imposed.server_max_window_bits, imposed.client_max_window_bits = 8, 8
      assert.are.same(imposed, ext_params(exts[1]), exts[1])
    end)

  -- The agreed parameters are the ones used: hand-made frames (a fresh
  -- deflate stream per message, windows as agreed) are echoed compressed.
  local echo_offers = {
    { "quoted values", 'permessage-deflate; client_max_window_bits="10"; '
      .. 'server_max_window_bits="9"', "on" },
    { "the second of several offers",
      "permessage-deflate; x_foo, permessage-deflate; server_no_context_takeover", "on" },
    { "a server imposing parameters", "permessage-deflate; client_max_window_bits", "strict" },
  }
  for _, e in ipairs(echo_offers) do
    it("hand-made compressed messages (fragmented around a ping, 1-byte frames, BFINAL, "
      .. "two flushes) after " .. e[1] .. " are echoed compressed", function()
      local srv = e[3] == "on" and on or strict
      local out, code = raw_client(srv.port, "echo", e[2])
      local n = 0
      for compressed, ok in out:gmatch("\nMESSAGE %a+ (%d) %d+ %x+ echo%-(%a+)") do
        assert.are.same({ "1", "ok" }, { compressed, ok }, out)
        n = n + 1
      end
      assert.are.equal(6, n, out)
      assert.are.equal(1000, code, out)
    end)
  end
end)

-------------------------------------------------------------------------------
-- (4) our client against servers whose answer breaks RFC 7692 (one
-- pmd_raw.py server; each connection asks for its answer with a header).

describe("our client against a bad permessage-deflate answer", function()
  local server, url
  local conns = {}

  lazy_setup(function()
    server = H.start_server(PMD_RAW .. " server --port 0 --hold 10")
    url = ("ws://127.0.0.1:%d/"):format(server.port)
  end)

  lazy_teardown(function()
    H.stop(server)
  end)

  after_each(function()
    H.close_all(conns)
    assert.are.same({ 0, 0 }, { H.live(wsuv) })
  end)

  local function connect(answer, compression, attack)
    local conn, err, code = wsuv.connect(url, {
      timeout = 5, compression = compression,
      headers = { ["X-Pmd-Extensions"] = answer, ["X-Pmd-Attack"] = attack },
    })
    if conn then
      conns[#conns + 1] = conn
    end
    return conn, err, code
  end

  local bad = {
    { "a parameter we did not offer (unknown)", "permessage-deflate; x_unknown" },
    { "a duplicate parameter",
      "permessage-deflate; server_no_context_takeover; server_no_context_takeover" },
    { "server_max_window_bits=7", "permessage-deflate; server_max_window_bits=7" },
    { "server_max_window_bits=16", "permessage-deflate; server_max_window_bits=16" },
    { "server_max_window_bits=x", "permessage-deflate; server_max_window_bits=x" },
    { "client_max_window_bits=7", "permessage-deflate; client_max_window_bits=7" },
    { "client_max_window_bits without a value", "permessage-deflate; client_max_window_bits" },
    { "a value on a flag", "permessage-deflate; client_no_context_takeover=1" },
    { "permessage-deflate twice", "permessage-deflate, permessage-deflate" },
    { "server_max_window_bits above our offer", "permessage-deflate; server_max_window_bits=12",
      { server_max_window_bits = 10 } },
  }
  for _, case in ipairs(bad) do
    it(case[1] .. ": EEXTENSION", function()
      local conn, err, code = connect(case[2], case[3] or true)
      assert.is_nil(conn)
      assert.are.equal("string", type(err))
      assert.are.equal("EEXTENSION", code, err)
    end)
  end

  it("permessage-deflate although we did not offer it: EHANDSHAKE (RFC 6455 4.1)", function()
    -- The README promises EEXTENSION for answers that break RFC 7692; an
    -- unoffered extension is refused by the RFC 6455 check first.
    local conn, err, code = connect("permessage-deflate", false)
    assert.is_nil(conn)
    assert.are.equal("string", type(err))
    assert.are.equal("EHANDSHAKE", code, err)
  end)

  local good = {
    { "server_no_context_takeover that we did not ask for",
      "permessage-deflate; server_no_context_takeover" },
    { "client_max_window_bits=10 (our offer had no value)",
      "permessage-deflate; client_max_window_bits=10" },
    { "server_max_window_bits=9 and client_no_context_takeover",
      "permessage-deflate; server_max_window_bits=9; client_no_context_takeover" },
  }
  for _, case in ipairs(good) do
    it("accepts " .. case[1] .. " and compresses as agreed", function()
      local conn, err, code = connect(case[2], true, "echo")
      assert(conn, tostring(err) .. " " .. tostring(code))
      local info = assert(conn:compression())
      assert.are.equal(case[2], info.extension)
      local i = 0
      while i < 3 do
        i = i + 1
        assert.is_true(conn:send(JSON))
        assert.are.equal(JSON, (conn:receive(5)))
      end
      assert.is_true(conn:send(RANDOM, "binary"))
      assert(conn:receive(5) == RANDOM, "binary echo")
      -- The peer compresses every echo; we send the random one plain when
      -- our side has no context takeover.
      info = conn:compression()
      local plain = ext_params(case[2]).client_no_context_takeover and 1 or 0
      assert.are.same({ 4, 4 - plain }, { info.received, info.sent })
      assert.is_true(conn:close())
    end)
  end
end)

-------------------------------------------------------------------------------
-- (5) decompression bombs and bad compressed data, against both roles.

local BOMB_GROWTH_KB = 100 * 1024 -- peak RSS may grow by less than 100 MiB

describe("bombs and bad data against our server", function()
  local limited, default

  lazy_setup(function()
    limited = start_our_server("--compression on --max-message " .. MiB)
    default = start_our_server("--compression on")
  end)

  lazy_teardown(function()
    H.stop(limited)
    H.stop(default)
  end)

  local bombs = {
    { "bomb", "one ~1 MiB frame inflating to 1000 MiB" },
    { "bomb-fragments", "1024 frames of ~1 KiB each inflating to 1 MiB (1 GiB)" },
  }
  for _, b in ipairs(bombs) do
    for _, which in ipairs({ "limited", "default" }) do
      local limit = which == "limited" and "max_message 1 MiB" or "the default max_message"
      it(b[2] .. ", " .. limit .. ": 1009 at once, bounded memory", function()
        local srv = which == "limited" and limited or default
        reset_peak(srv.pid)
        local hwm0 = memory_of(srv.pid)
        assert(hwm0, "no /proc/" .. srv.pid .. "/status")
        local out, code, ms = raw_client(srv.port, b[1])
        local hwm1 = memory_of(srv.pid)
        assert.are.equal(1009, code, out)
        assert(ms < 2000, ("1009 after %d ms"):format(ms))
        assert(hwm1 - hwm0 < BOMB_GROWTH_KB,
          ("peak RSS grew by %d KiB (%d -> %d)"):format(hwm1 - hwm0, hwm0, hwm1))
        print(("# server, %s, %s: 1009 after %d ms, peak RSS %d -> %d KiB"):format(
          b[1], limit, ms, hwm0, hwm1))
        -- The server is still alive and well.
        out, code = raw_client(srv.port, "echo")
        assert.are.equal(6, select(2, out:gsub("echo%-ok", "")), out)
        assert.are.equal(1000, code, out)
      end)
    end
  end

  local bad = {
    { "corrupt", "invalid deflate data", 1007 },
    { "truncated", "deflate data ending inside a stored block", 1007 },
    { "bad-utf8", "compressed text that inflates to invalid UTF-8", 1007 },
    { "rsv1-continuation", "RSV1 on a continuation frame", 1002 },
    { "rsv1-ping", "RSV1 on a ping", 1002 },
    { "rsv1-plain", "RSV1 when permessage-deflate was not negotiated", 1002, "none" },
  }
  for _, case in ipairs(bad) do
    it(case[2] .. " -> " .. case[3], function()
      local out, code = raw_client(limited.port, case[1], case[4])
      assert.are.equal(case[3], code, out)
    end)
  end

  -- Deflate stores incompressible data, 5 bytes more per block: such a
  -- message of max_message bytes is over the limit on the wire, but not
  -- inflated, which is what max_message limits.
  it("an incompressible message of max_message bytes, longer deflated, is echoed", function()
    local out, code = raw_client(limited.port, "incompressible")
    local wire = tonumber(out:match("\nWIRE (%d+)"))
    assert(wire and wire > MiB, out)
    assert.truthy(out:find("\nMESSAGE binary %d " .. MiB .. " %x+ echo%-ok"), out)
    assert.are.equal(1000, code, out)
    out, code = raw_client(limited.port, "incompressible-over")
    assert.are.equal(1009, code, out)
  end)

  it("the same compressed frame is fine once negotiated", function()
    local out, code = raw_client(limited.port, "rsv1-plain", nil, 0.3)
    assert.truthy(out:find("\nMESSAGE text 1 35 ", 1, true), out)
    assert.is_nil(code, out) -- no close: the server waits for more
  end)
end)

local bombs_against_client = {
  { "bomb", "one ~1 MiB frame inflating to 1000 MiB" },
  { "bomb-fragments", "1024 frames of ~1 KiB each inflating to 1 MiB (1 GiB)" },
}

describe("bombs and bad data against our client", function()
  local server, url
  local conns = {}

  lazy_setup(function()
    server = H.start_server(PMD_RAW .. " server --port 0 --hold 10 --extensions "
      .. H.sh_quote("permessage-deflate"))
    url = ("ws://127.0.0.1:%d/"):format(server.port)
  end)

  lazy_teardown(function()
    H.stop(server)
  end)

  after_each(function()
    H.close_all(conns)
    assert.are.same({ 0, 0 }, { H.live(wsuv) })
  end)

  -- Our client in a child process (wsuv_client.lua), so that its peak RSS
  -- is its own.
  for _, b in ipairs(bombs_against_client) do
    it(b[2] .. ", max_message 1 MiB: 1009 at once, bounded memory", function()
      local log0 = #(H.read_file(server.log) or "")
      local out = run(("%s %s --compression on --max-message %d --timeout 5 --header %s"):format(
        lua_cmd("wsuv_client.lua"), H.sh_quote(url), MiB, "X-Pmd-Attack=" .. b[1]))
      out = "\n" .. out
      assert.truthy(out:find("\nOPEN permessage-deflate\n", 1, true), out)
      local code, ms = out:match("\nCLOSED (%d+) (%d+)")
      assert.are.equal(1009, tonumber(code), out)
      assert(tonumber(ms) < 2000, ("1009 after %d ms"):format(ms))
      local hwm0, hwm1 = out:match("\nVMHWM (%d+) (%d+)")
      hwm0, hwm1 = tonumber(hwm0), tonumber(hwm1)
      assert(hwm0 and hwm0 > 0, out)
      assert(hwm1 - hwm0 < BOMB_GROWTH_KB,
        ("peak RSS grew by %d KiB (%d -> %d)"):format(hwm1 - hwm0, hwm0, hwm1))
      print(("# client, %s: 1009 after %d ms, peak RSS %d -> %d KiB"):format(
        b[1], ms, hwm0, hwm1))
      -- The peer got our close frame with 1009.
      assert(H.wait_until(wsuv, function()
        return (H.read_file(server.log) or ""):find("CLOSE 1009", log0 + 1, true)
      end, 5), H.read_file(server.log))
    end)
  end

  it("stream = true: a bomb's chunks stop at max_message, then 1009", function()
    local conn, err, code = wsuv.connect(url, {
      timeout = 5, compression = true, stream = true, max_message = MiB,
      headers = { ["X-Pmd-Attack"] = "bomb" },
    })
    assert(conn, tostring(err) .. " " .. tostring(code))
    conns[#conns + 1] = conn
    local total, chunks, what, ccode = 0, 0
    while true do
      local chunk, kind, c = conn:receive(5)
      if not chunk then
        what, ccode = kind, c
        break
      end
      assert.are.equal("binary", kind)
      total, chunks = total + #chunk, chunks + 1
    end
    assert.are.same({ "closed", 1009 }, { what, ccode })
    assert(total <= MiB, ("%d bytes in %d chunks"):format(total, chunks))
  end)

  local bad = {
    { "corrupt", "invalid deflate data", 1007 },
    { "truncated", "deflate data ending inside a stored block", 1007 },
    { "bad-utf8", "compressed text that inflates to invalid UTF-8", 1007 },
    { "rsv1-continuation", "RSV1 on a continuation frame", 1002 },
    { "rsv1-ping", "RSV1 on a ping", 1002 },
    { "rsv1-plain", "RSV1 when permessage-deflate was not negotiated", 1002, false },
  }
  for _, case in ipairs(bad) do
    it(case[2] .. " -> " .. case[3], function()
      local compression = case[4] == nil and true or case[4]
      local conn, err, code = wsuv.connect(url, {
        timeout = 5, compression = compression,
        headers = { ["X-Pmd-Attack"] = case[1],
          ["X-Pmd-Extensions"] = compression and "permessage-deflate" or "none" },
      })
      assert(conn, tostring(err) .. " " .. tostring(code))
      conns[#conns + 1] = conn
      local msg, what, ccode, reason = conn:receive(5)
      assert.is_nil(msg)
      assert.are.equal("closed", what, tostring(ccode))
      assert.are.equal(case[3], ccode, tostring(reason))
    end)
  end
end)
