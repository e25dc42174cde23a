-- lua_http.lua: the lua-http peer of the benchmarks (Debian's lua-http on
-- cqueues; bench/run runs it on LuaJIT).
--
--   luajit bench/servers/lua_http.lua [port [mode]]
--
-- port 0 (the default) picks a free one; it listens on 127.0.0.1 and prints
-- "PORT n" once listening. mode "broadcast": a message whose first byte is
-- "B" goes to every connection (a loop over them); anything else is echoed,
-- as in mode "echo" (the default).
local http_server = require "http.server"
local http_headers = require "http.headers"
local websocket = require "http.websocket"

local port = tonumber(arg and arg[1]) or 0
local broadcast = (arg and arg[2]) == "broadcast"
local B = ("B"):byte()
local clients = {}

local function onstream(_, stream)
  local req = assert(stream:get_headers())
  local ws = websocket.new_from_stream(stream, req)
  if not ws then
    local res = http_headers.new()
    res:append(":status", "426")
    stream:write_headers(res, true)
    return
  end
  assert(ws:accept())
  clients[ws] = true
  while true do
    local data, kind = ws:receive()
    if not data then
      break
    end
    if broadcast and data:byte(1) == B then
      for c in pairs(clients) do
        c:send(data, kind)
      end
    else
      ws:send(data, kind)
    end
  end
  clients[ws] = nil
  ws:close()
end

local server = assert(http_server.listen {
  host = "127.0.0.1",
  port = port,
  onstream = onstream,
  onerror = function() end,
})
assert(server:listen())
local _, _, bound = server:localname()
print("PORT " .. bound)
io.stdout:flush()
assert(server:loop())
