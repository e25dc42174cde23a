-- echo_server.lua: the smallest wsuv server. Every message comes back as it
-- was sent (text as text, binary as binary). This is what `make demo` runs.
--
--   lua examples/echo_server.lua [port] [host]
--
-- Then connect with examples/client.lua, `wsuv ws://127.0.0.1:8080/`, or a
-- browser console: new WebSocket("ws://127.0.0.1:8080/").
local wsuv = require "wsuv"

local port = tonumber(arg and arg[1]) or 8080
local host = arg and arg[2] or "127.0.0.1"

local server, err = wsuv.listen {
  host = host,
  port = port,
  on_connect = function(conn)
    -- A while loop rather than conn:messages(), so this runs on Lua 5.1 too.
    while true do
      local msg, kind = conn:receive()
      if not msg then
        break
      end
      conn:send(msg, kind)
    end
  end,
}
if not server then
  io.stderr:write("echo_server: ", err, "\n")
  os.exit(1)
end

print(("wsuv echo server on ws://%s:%d/ (Ctrl-C to stop)"):format(host, server.port))
io.stdout:flush()
wsuv.run()
