-- spec/peers/chaos_server.lua: the echo server that spec/peers/chaos.py
-- hammers, in its own process so its memory can be read from outside.
--
--   lua chaos_server.lua [--port N] [--style connect|events]
--       [--max-message N] [--compression SPEC] [--cert PEM --key PEM]
--       [--lifetime SECS]
--
-- Prints "PORT <n>" once listening. Echoes every message, with the
-- on_connect loop of examples/echo_server.lua, or with --style events the
-- on_message handler of examples/events_server.lua; --compression as in
-- wsuv_server.lua, --cert and --key for wss://. A plain GET /stats is
-- answered with "connections <n> lua_kb <k> rss_kb <r> malloc_kb <m>": the
-- connections still open besides this request, the Lua heap after a full
-- collection, RSS, and on LuaJIT what malloc has in use, so the client can
-- tell whether anything outlived its peer.
local wsuv = require "wsuv"
local P = dofile((arg[0]:match("^(.*/)") or "./") .. "peer_opts.lua")

local opts = P.parse(1, { port = 0, lifetime = 600, max_message = 65536 }, {
  ["--port"] = P.number("port"),
  ["--style"] = function(o, v)
    o.events = v == "events"
  end,
  ["--max-message"] = P.number("max_message"),
  ["--compression"] = P.compression,
  ["--cert"] = function(o, v)
    o.cert = v
  end,
  ["--key"] = function(o, v)
    o.key = v
  end,
  ["--lifetime"] = P.number("lifetime"),
}, "chaos_server.lua")

local function rss_kb()
  local f = io.open("/proc/self/status")
  local text = f and f:read("*a") or ""
  if f then
    f:close()
  end
  return tonumber(text:match("VmRSS:%s*(%d+)")) or -1
end

-- Bytes malloc holds in use (C's side: connections, buffers), where
-- LuaJIT's FFI can ask glibc; -1 elsewhere.
local malloc_kb = function()
  return -1
end
local has_ffi, ffi = pcall(require, "ffi")
if has_ffi then
  ffi.cdef([[struct chaos_mallinfo2 { size_t arena, ordblks, smblks, hblks, hblkhd,
    usmblks, fsmblks, uordblks, fordblks, keepcost; };
    struct chaos_mallinfo2 mallinfo2(void);]])
  malloc_kb = function()
    local m = ffi.C.mallinfo2()
    return math.floor(tonumber(m.uordblks + m.hblkhd) / 1024)
  end
end

local listen = {
  host = "127.0.0.1",
  port = opts.port,
  max_message = opts.max_message,
  compression = opts.compression,
  tls = opts.cert and { cert = opts.cert, key = opts.key } or nil,
  http = function(request)
    if request.path ~= "/stats" then
      return 404, nil, "not found\n"
    end
    collectgarbage("collect")
    collectgarbage("collect") -- a second pass for objects finalized in the first
    local s = wsuv.core.stats()
    return 200, { ["content-type"] = "text/plain" },
      ("connections %d lua_kb %d rss_kb %d malloc_kb %d\n"):format(
        s.connections - 1, math.floor(collectgarbage("count")), rss_kb(), malloc_kb())
  end,
}
if opts.events then
  listen.on_message = function(conn, msg, kind)
    conn:send(msg, kind)
  end
else
  listen.on_connect = function(conn)
    while true do
      local msg, kind = conn:receive()
      if not msg then
        break
      end
      conn:send(msg, kind)
    end
  end
end

local server = assert(wsuv.listen(listen))
print("PORT " .. server.port)
io.stdout:flush()
wsuv.spawn(function()
  wsuv.sleep(opts.lifetime)
  os.exit(0)
end)
wsuv.run()
