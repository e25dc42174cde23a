-- client.lua: connect, send, receive and close from the main chunk. No
-- coroutine and no explicit loop: each call runs the event loop until done.
--
--   lua examples/client.lua [ws://127.0.0.1:8080/] [message]
local wsuv = require "wsuv"

local url = arg and arg[1] or "ws://127.0.0.1:8080/"
local text = arg and arg[2] or "hello from wsuv"

-- proxy = true: through https_proxy / http_proxy when the environment names
-- one, as curl does (never for 127.0.0.1 or localhost).
local conn, err, code = wsuv.connect(url, { timeout = 5, proxy = true })
if not conn then
  io.stderr:write(("client: %s (%s)\n"):format(err, code))
  os.exit(1)
end
print("connected: " .. tostring(conn))

assert(conn:send(text))
local msg, kind = conn:receive(5)
print(("received %s: %s"):format(tostring(kind), tostring(msg)))

print(("ping round trip: %.3f ms"):format(assert(conn:ping()) * 1000))

local _, peer_code = conn:close(1000, "bye")
print("closed, server replied with code " .. tostring(peer_code))
