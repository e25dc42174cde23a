-- stream_echo.lua: an echo for large messages that never holds one whole.
-- With stream = true, receive returns each message in chunks as they arrive
-- (at most one read, 64 KiB, each), and conn:writer sends the echo as one
-- fragmented message. Memory stays at a chunk per connection whatever the
-- message size, and on LuaJIT, whose allocator maps every string over
-- 128 KiB afresh, a 1 MiB echo runs about 1.8x faster than with whole
-- messages (README, "Large messages").
--
--   lua examples/stream_echo.lua [port] [host]
local wsuv = require "wsuv"

local port = tonumber(arg and arg[1]) or 8080
local host = arg and arg[2] or "127.0.0.1"

local server, err = wsuv.listen {
  host = host,
  port = port,
  stream = true,
  max_message = 1024 * 1024 * 1024, -- checked over all chunks; none is kept
  on_connect = function(conn)
    local w -- the echo of the message being received
    while true do
      local chunk, kind, last = conn:receive()
      if not chunk then
        break
      end
      w = w or conn:writer(kind)
      if last then
        w:finish(chunk)
        w = nil
      else
        w:write(chunk)
      end
    end
  end,
}
if not server then
  io.stderr:write("stream_echo: ", err, "\n")
  os.exit(1)
end

print(("wsuv streaming echo on ws://%s:%d/ (Ctrl-C to stop)"):format(host, server.port))
io.stdout:flush()
wsuv.run()
