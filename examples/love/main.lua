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
local shown_state = "open"

function love.load(args)
  -- connect runs the loop until the handshake is done: fine at load time.
  -- reconnect: if the server goes away later, the connection comes back by
  -- itself (poll() each frame notices the drop, step() runs the attempts).
  local err
  conn, err = wsuv.connect(args[1] or "ws://127.0.0.1:8080/", {
    timeout = 3,
    reconnect = {
      on_reconnect = function()
        lines[#lines + 1] = "reconnected"
      end,
    },
  })
  lines[#lines + 1] = conn and "connected" or ("connect failed: " .. tostring(err))
end

function love.update()
  wsuv.step() -- never blocks
  if conn then
    for msg in conn:poll() do
      lines[#lines + 1] = "< " .. msg
    end
    local state = conn:state() -- "open", "reconnecting" or "closed"
    if state ~= shown_state and state ~= "open" then
      lines[#lines + 1] = state .. "..."
    end
    shown_state = state
  end
end

function love.keypressed(key)
  if conn and key == "space" then
    -- Queues (step() writes it); while reconnecting, nil, "reconnecting".
    local ok, err = conn:send("hello at " .. os.date("%X"))
    if not ok then
      lines[#lines + 1] = "not sent: " .. err
    end
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
