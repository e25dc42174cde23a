-- events_server.lua: a chat room in the event style. Every message goes to
-- everyone in the room; joins and leaves are announced. No coroutine is
-- kept per connection (listen's on_message), so an idle member costs about
-- 1.5 KB of server memory.
--
--   lua examples/events_server.lua [port] [host]
--
-- Then open two clients: `bin/wsuv ws://127.0.0.1:8080/` in two terminals.
local wsuv = require "wsuv"

local port = tonumber(arg and arg[1]) or 8080
local host = arg and arg[2] or "127.0.0.1"

local server, err
local names = setmetatable({}, { __mode = "k" }) -- conn -> its name
local count = 0

server, err = wsuv.listen {
  host = host,
  port = port,
  on_open = function(conn)
    count = count + 1
    local ip, peer_port = conn:peer()
    names[conn] = ("guest%d (%s:%s)"):format(count, ip, peer_port)
    server:broadcast(names[conn] .. " joined")
  end,
  on_message = function(conn, msg, kind)
    if kind == "text" then
      server:broadcast(names[conn] .. ": " .. msg)
    else
      conn:send("this room speaks text", "text")
    end
  end,
  on_close = function(conn)
    server:broadcast(names[conn] .. " left")
  end,
}
if not server then
  io.stderr:write("events_server: ", err, "\n")
  os.exit(1)
end

print(("wsuv chat room on ws://%s:%d/ (Ctrl-C to stop)"):format(host, server.port))
io.stdout:flush()
wsuv.run()
