-- love/main.lua: a LÖVE game loop that never blocks a frame. wsuv.step()
-- runs whatever network work is ready and returns at once; conn:poll()
-- yields only what has already arrived. Space sends a message.
--
--   make build-5.1   # LÖVE 11 runs LuaJIT: the Lua 5.1 build of wsuv.core
--   LUA_PATH="./lua/?.lua;./lua/?/init.lua;;" LUA_CPATH="./.rocks/lib/lua/5.1/?.so;;" \
--     love examples/love [ws://127.0.0.1:8080/]
local wsuv = require "wsuv"

local conn
local lines = {}

function love.load(args)
  -- connect runs the loop until the handshake is done: fine at load time.
  local err
  conn, err = wsuv.connect(args[1] or "ws://127.0.0.1:8080/", { timeout = 3 })
  lines[#lines + 1] = conn and "connected" or ("connect failed: " .. tostring(err))
end

function love.update()
  wsuv.step() -- never blocks
  if conn then
    for msg in conn:poll() do
      lines[#lines + 1] = "< " .. msg
    end
  end
end

function love.keypressed(key)
  if conn and key == "space" then
    conn:send("hello at " .. os.date("%X")) -- queues; step() writes it
  end
end

function love.draw()
  for i, line in ipairs(lines) do
    love.graphics.print(line, 10, 10 + 16 * (i - 1))
  end
end

function love.quit()
  if conn then
    conn:close()
  end
end
