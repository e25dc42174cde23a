-- luv_echo.lua: a raw TCP echo written in Lua on luv (Debian's lua-luv,
-- libuv's own Lua binding), the floor of any server that runs Lua code for
-- each message: one libuv read callback into Lua and one write per read, no
-- WebSocket, no coroutine. bench/run drives it with `loadgen --raw`, like the
-- raw echo in C, on Lua 5.4 and on LuaJIT.
--
--   lua5.4|luajit bench/servers/luv_echo.lua [port]
--
-- port 0 (the default) picks a free one; it listens on 127.0.0.1 and prints
-- "PORT n" once listening. As raw_echo.c does, it writes at once when nothing
-- is queued (try_write) and stops reading while more than 2 MiB wait.
local uv = require "luv"

local HIGH = 2 * 1024 * 1024

local server = uv.new_tcp()
assert(server:bind("127.0.0.1", tonumber(arg and arg[1]) or 0))

local function serve(c)
  local paused = false
  local on_read
  local function on_written()
    if paused and c:get_write_queue_size() < HIGH / 2 then
      paused = false
      c:read_start(on_read)
    end
  end
  on_read = function(err, data)
    if err or not data then
      c:close()
      return
    end
    if c:get_write_queue_size() == 0 then
      local n = c:try_write(data)
      if n == #data then
        return
      end
      if n and n > 0 then
        data = data:sub(n + 1)
      end
    end
    c:write(data, on_written)
    if c:get_write_queue_size() > HIGH then
      paused = true
      c:read_stop()
    end
  end
  c:read_start(on_read)
end

assert(server:listen(1024, function(err)
  if err then
    return
  end
  local c = uv.new_tcp()
  if server:accept(c) then
    c:nodelay(true)
    serve(c)
  else
    c:close()
  end
end))

print("PORT " .. server:getsockname().port)
io.stdout:flush()
uv.run()
