-- spec/peers/wsuv_server.lua: a wsuv echo server in its own process, for
-- specs whose blocking raw sockets would stall a server in the spec's loop,
-- and to read the server's memory (/proc/<pid>/status) from outside.
--
--   lua wsuv_server.lua [--port N] [--compression SPEC] [--max-message N]
--       [--max-frame N] [--lifetime SECS]
--
-- SPEC: "off" (the default), "on", or a comma-separated list of the
-- `compression` table's fields: flags by name, numbers as name=N, e.g.
-- "server_no_context_takeover,client_max_window_bits=9,threshold=1".
-- Prints "PORT <n>" once listening; runs until killed or --lifetime (600 s).
-- Echoes every message; the text "compression?" is answered with
-- "<extension>|<received>|<sent>|<memory>" from conn:compression(), or
-- "none". When a connection ends it prints
-- "END <close code> <received> <sent>" (counts from conn:compression()).
local wsuv = require "wsuv"
local P = dofile((arg[0]:match("^(.*/)") or "./") .. "peer_opts.lua")

local opts = P.parse(1, { port = 0, lifetime = 600 }, {
  ["--port"] = P.number("port"),
  ["--compression"] = P.compression,
  ["--max-message"] = P.number("max_message"),
  ["--max-frame"] = P.number("max_frame"),
  ["--lifetime"] = P.number("lifetime"),
}, "wsuv_server.lua")

local function counts(conn)
  local c = conn:compression()
  return c and c.received or 0, c and c.sent or 0
end

local server = assert(wsuv.listen {
  host = "127.0.0.1",
  port = opts.port,
  compression = opts.compression,
  max_message = opts.max_message,
  max_frame = opts.max_frame,
  on_connect = function(conn)
    local received, sent = counts(conn)
    while true do
      local msg, kind, code = conn:receive()
      if not msg then
        print(("END %s %d %d"):format(tostring(code), received, sent))
        io.stdout:flush()
        break
      end
      if msg == "compression?" then
        local c = conn:compression()
        conn:send(c and ("%s|%d|%d|%d"):format(c.extension, c.received, c.sent, c.memory)
          or "none")
      else
        conn:send(msg, kind)
      end
      received, sent = counts(conn)
    end
  end,
})
print("PORT " .. server.port)
io.stdout:flush()
wsuv.spawn(function()
  wsuv.sleep(opts.lifetime)
  os.exit(0)
end)
wsuv.run()
