-- bench/transport.lua: what TLS and permessage-deflate cost, measured
-- against plain ws:// in the same run (issues 4 and 5). A wsuv client and a
-- wsuv echo server run in one process, so each figure includes both ends;
-- the ratios to the plain row are what to read.
--
--   lua5.4 bench/transport.lua CERTDIR/ [--quick]
--
-- Per transport: handshakes/s (connect + close), round trips/s of 32-byte
-- messages, MiB/s of 1 MiB binary echoes (random, incompressible), MiB/s of
-- 1 MiB JSON-like text echoes, and for deflate the bytes on the wire per
-- JSON message (from the compressed size of one message).
local wsuv = require "wsuv"
local C = assert(arg[1], "usage: transport.lua CERTDIR/ [--quick]")
local quick = arg[2] == "--quick"
local scale = quick and 0.25 or 1

local function json_text(n)
  local parts, i = {}, 0
  while #table.concat(parts) < n do
    i = i + 1
    parts[#parts + 1] = ('{"id":%d,"user":"player%d","x":%d,"y":%d,"state":"running"},'):format(
      i, i % 97, (i * 7919) % 1000, (i * 104729) % 1000)
    if #parts % 64 == 0 then
      parts = { table.concat(parts) }
    end
  end
  return table.concat(parts):sub(1, n)
end

local function random_bytes(n)
  local out = {}
  for i = 1, math.ceil(n / 4096) do
    out[i] = wsuv.core.random(4096)
  end
  return table.concat(out):sub(1, n)
end

local transports = {
  { name = "ws", scheme = "ws" },
  { name = "wss", scheme = "wss", server = { tls = { cert = C .. "server.pem", key = C .. "server.key" } },
    client = { tls = { ca = C .. "ca.pem" } } },
  { name = "ws+deflate", scheme = "ws", server = { compression = true }, client = { compression = true } },
  { name = "ws+deflate (window 9, mem_level 4)", scheme = "ws",
    server = { compression = { server_max_window_bits = 9, client_max_window_bits = 9, mem_level = 4 } },
    client = { compression = { client_max_window_bits = 9, server_max_window_bits = 9, mem_level = 4 } } },
}

local function merge(a, b)
  local t = {}
  for k, v in pairs(a or {}) do
    t[k] = v
  end
  for k, v in pairs(b or {}) do
    t[k] = v
  end
  return t
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

local function measure(tr)
  local srv = assert(wsuv.listen(merge(tr.server, { port = 0, on_connect = echo, max_message = 64 * 1024 * 1024 })))
  local url = tr.scheme .. "://127.0.0.1:" .. srv.port .. "/"
  local copts = merge(tr.client, { max_message = 64 * 1024 * 1024 })
  local r = {}
  wsuv.spawn(function()
    -- Handshakes: connect and close, one at a time.
    local n, t0 = math.floor(300 * scale), wsuv.now()
    for _ = 1, n do
      assert(wsuv.connect(url, copts)):close()
    end
    r.handshakes = n / (wsuv.now() - t0)
    local c = assert(wsuv.connect(url, copts))
    -- zlib memory of a connection that exchanged a few 4 KiB JSON messages
    -- and then sat idle (deflate buffers are trimmed after 1 s).
    local json4k = json_text(4096)
    for _ = 1, 10 do
      c:send(json4k)
      c:receive()
    end
    wsuv.sleep(1.3)
    local info = c:compression()
    r.memory = info and info.memory
    -- Round trips of 32-byte text.
    local small = ("x"):rep(32)
    n, t0 = math.floor(20000 * scale), wsuv.now()
    for _ = 1, n do
      c:send(small)
      c:receive()
    end
    r.rtt = n / (wsuv.now() - t0)
    -- 1 MiB echoes.
    for _, case in ipairs({ { "bin", random_bytes(1024 * 1024), "binary" }, { "json", json_text(1024 * 1024), "text" } }) do
      local data = case[2]
      n, t0 = math.floor(60 * scale), wsuv.now()
      for _ = 1, n do
        c:send(data, case[3])
        local got = c:receive()
        assert(got == data, "echo differs")
      end
      r[case[1]] = n / (wsuv.now() - t0)
    end
    c:close()
    srv:close()
  end)
  wsuv.run()
  return r
end

-- Transports take turns within each repeat, so noise spreads over all of
-- them; each figure is the median of the repeats.
local repeats = quick and 1 or 3
local runs = {}
for rep = 1, repeats do
  for i, tr in ipairs(transports) do
    runs[i] = runs[i] or {}
    runs[i][rep] = measure(tr)
    io.stderr:write(("  repeat %d: %s\n"):format(rep, tr.name))
  end
end
local function median(list, k)
  local v = {}
  for j, r in ipairs(list) do
    v[j] = r[k]
  end
  if #v == 0 or v[1] == nil then
    return nil
  end
  table.sort(v)
  return v[math.floor((#v + 1) / 2)]
end
local results = {}
for i = 1, #transports do
  results[i] = {}
  for _, k in ipairs({ "handshakes", "rtt", "bin", "json", "memory" }) do
    results[i][k] = median(runs[i], k)
  end
end

local base = results[1]
print(("| transport | handshakes/s | 32 B round trips/s | 1 MiB binary echo MiB/s | 1 MiB JSON echo MiB/s"
  .. " | idle zlib memory per connection (client side) |"))
print("|---|---|---|---|---|---|")
for i, tr in ipairs(transports) do
  local r = results[i]
  local function cell(k, fmt)
    local v = fmt:format(r[k])
    if i > 1 then
      v = v .. (" (%.2f×)"):format(r[k] / base[k])
    end
    return v
  end
  print(("| %s | %s | %s | %s | %s | %s |"):format(tr.name, cell("handshakes", "%.0f"), cell("rtt", "%.0f"),
    cell("bin", "%.0f"), cell("json", "%.0f"),
    r.memory and ("%.0f KiB"):format(r.memory / 1024) or "-"))
end
