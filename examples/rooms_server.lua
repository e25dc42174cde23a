-- rooms_server.lua: chat rooms, one per path (/lobby, /games, ...). A
-- message goes to everyone else in its room with wsuv.room, which encodes
-- the frame once for all of them; joins and leaves are announced. Any
-- other request gets a small chat page, so a browser can join.
--
--   lua examples/rooms_server.lua [port] [host]
--
-- Then open http://127.0.0.1:8080/lobby in two browser tabs, or run
-- `bin/wsuv ws://127.0.0.1:8080/lobby` in two terminals.
local wsuv = require "wsuv"

local port = tonumber(arg and arg[1]) or 8080
local host = arg and arg[2] or "127.0.0.1"

local PAGE = [[<!doctype html>
<meta charset="utf-8"><title>wsuv rooms</title>
<pre id="log"></pre>
<form id="f"><input id="msg" autofocus size="60"> <button>send</button></form>
<script>
const log = (t) => { document.getElementById("log").textContent += t + "\n"; };
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") +
  location.host + location.pathname);
ws.onmessage = (ev) => log(ev.data);
ws.onclose = (ev) => log("closed (" + ev.code + ")");
document.getElementById("f").onsubmit = (ev) => {
  ev.preventDefault();
  const m = document.getElementById("msg");
  ws.send(m.value);
  log("me: " + m.value);
  m.value = "";
};
</script>
]]

local rooms = {} -- name -> wsuv.room(), while someone is in it

local server, err = wsuv.listen {
  host = host,
  port = port,
  http = function()
    return 200, { ["Content-Type"] = "text/html; charset=utf-8" }, PAGE
  end,
  on_connect = function(conn)
    local name = conn:request().path:match("^/([%w_-]+)$") or "lobby"
    local room = rooms[name] or wsuv.room()
    rooms[name] = room
    local ip, peer_port = conn:peer()
    local who = ("%s:%s"):format(ip, peer_port)
    room:broadcast(who .. " joined #" .. name)
    room:join(conn)
    conn:send(("welcome to #%s, you are %s; %d here"):format(name, who, room:count()))
    while true do
      local msg, kind = conn:receive()
      if not msg then
        break
      end
      if kind == "text" then
        room:broadcast(who .. ": " .. msg, "text", { except = conn })
      else
        conn:send("this room speaks text")
      end
    end
    room:leave(conn)
    room:broadcast(who .. " left")
    if room:count() == 0 then
      rooms[name] = nil
    end
  end,
}
if not server then
  io.stderr:write("rooms_server: ", err, "\n")
  os.exit(1)
end

print(("wsuv rooms on ws://%s:%d/<room> and http://%s:%d/<room> (Ctrl-C to stop)"):format(host,
  server.port, host, server.port))
io.stdout:flush()
wsuv.run()
