-- luv_idle.lua: the floor of (4) for a server with a Lua coroutine per
-- connection: a WebSocket echo on luv (Debian's lua-luv, libuv's own
-- binding) as small as one can write it. Each connection is a luv TCP
-- handle, its read callback and a coroutine running the handler, which
-- reads the request, answers the handshake and echoes single-frame
-- messages. wsuv.core is used only for the codec (the accept key, and
-- decoding and encoding the one echo of (4)); nothing of wsuv stays with a
-- connection. bench/run runs it in scenario (4) only, on Lua 5.4 and on
-- LuaJIT: what a connection costs there is a coroutine, a socket and a
-- closure, before any WebSocket state.
--
--   lua5.4|luajit bench/servers/luv_idle.lua [port]
--
-- port 0 (the default) picks a free one; it listens on 127.0.0.1 and prints
-- "PORT n" once listening. It checks nothing a real server must (the
-- request, fragments, control frames, close): it is a floor, not a server.
local uv = require "luv"
local core = require "wsuv.core"

local server = uv.new_tcp()
assert(server:bind("127.0.0.1", tonumber(arg and arg[1]) or 0))

local yield = coroutine.yield

-- Reads the request head; returns its Sec-WebSocket-Key, or nil once the
-- peer went away. The head is garbage once this returns. The answer is
-- written from the handler's frame, not from here: a C call one frame
-- deeper grows the coroutine's stack for good (measured, 10,000 idle
-- connections: 90-150 bytes more per connection on Lua 5.4 and LuaJIT).
local function read_key()
  local head = ""
  while not head:find("\r\n\r\n", 1, true) do
    local data = yield()
    if not data then
      return nil
    end
    head = head .. data
  end
  return head:match("\n[Ss]ec%-[Ww]eb[Ss]ocket%-[Kk]ey: *([^\r\n]+)") or ""
end

local function handler(c)
  local key = read_key()
  if not key then
    c:close()
    return
  end
  c:write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    .. "Sec-WebSocket-Accept: " .. core.accept_key(key) .. "\r\n\r\n")
  local pending = ""
  while true do
    local data = yield()
    if not data then
      break
    end
    pending = pending .. data
    local f = core.decode_frame(pending)
    if f then
      pending = ""
      c:write(core.encode_frame(f.opcode == 1 and "text" or "binary", f.payload))
    end
  end
  c:close()
end

assert(server:listen(4096, function(err)
  if err then
    return
  end
  local c = uv.new_tcp()
  if not server:accept(c) then
    c:close()
    return
  end
  local co = coroutine.create(handler)
  coroutine.resume(co, c)
  c:read_start(function(_, data)
    coroutine.resume(co, data)
  end)
end))

print("PORT " .. server:getsockname().port)
io.stdout:flush()
uv.run()
