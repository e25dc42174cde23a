-- wsuv_echo.lua: the wsuv peer of the benchmarks, written as a user would
-- write an echo server (examples/echo_server.lua), plus a broadcast mode.
--
--   lua5.4|luajit bench/servers/wsuv_echo.lua [port [mode]]
--
-- port 0 (the default) picks a free one; it listens on 127.0.0.1 and prints
-- "PORT n" once listening. mode "broadcast": a message whose first byte is
-- "B" goes to every connection (server:broadcast: one frame for all);
-- anything else is echoed, as in mode "echo" (the default). mode "deflate":
-- the echo with permessage-deflate (`compression = true`, its defaults).
-- With WSUV_STYLE=events in the environment the same server is written in
-- the event style (on_message: no coroutine per connection).
-- WSUV_BLOCK_CACHE=n sets wsuv.block_cache(n) (0: off), to measure the
-- block cache against its absence in one run.
local wsuv = require "wsuv"
local block_cache = os.getenv("WSUV_BLOCK_CACHE")
if block_cache then
  wsuv.block_cache(assert(tonumber(block_cache), "WSUV_BLOCK_CACHE: a number"))
end

local port = tonumber(arg and arg[1]) or 0
local mode = arg and arg[2]
local broadcast = mode == "broadcast"
-- mode "tls": wss:// with the certificate and key named by BENCH_CERT and
-- BENCH_KEY (bench/run makes them).
local tls
if mode == "tls" then
  tls = { cert = os.getenv("BENCH_CERT"), key = os.getenv("BENCH_KEY") }
end
local B = ("B"):byte()

local server
local opts = {
  host = "127.0.0.1",
  port = port,
  max_message = 64 * 1024 * 1024,
  compression = mode == "deflate", -- permessage-deflate with its defaults
  tls = tls,
}
if os.getenv("WSUV_STYLE") == "events" then
  opts.on_message = function(c, m, k)
    if broadcast and m:byte(1) == B then
      return server:broadcast(m, k)
    end
    c:send(m, k)
  end
else
  -- The reply is written out here rather than shared with on_message: a
  -- call more under the handler grows every connection's coroutine stack
  -- on Lua 5.4 (800 bytes more per idle connection, measured).
  opts.on_connect = function(c)
    while true do
      local m, k = c:receive()
      if not m then
        break
      end
      if broadcast and m:byte(1) == B then
        server:broadcast(m, k)
      else
        c:send(m, k)
      end
    end
  end
end
local err
server, err = wsuv.listen(opts)
if not server then
  io.stderr:write("wsuv_echo: ", tostring(err), "\n")
  os.exit(1)
end
print("PORT " .. server.port)
io.stdout:flush()
wsuv.run()
