-- spec/peers/love_harness/main.lua: runs examples/love/main.lua in LÖVE
-- itself, as a player would, with the screen replaced by a list of the
-- lines love.draw prints (no window here). LÖVE's own love.run drives it:
-- the harness presses space once the example is connected and waits for
-- the echo. With ECHOES = 2, it waits for the connection to come back
-- ("reconnected": the spec restarts the server meanwhile), presses space
-- again and waits for the second echo. Then it lets the idle connection
-- run 60 frames more and quits.
--
--   love spec/peers/love_harness EXAMPLE_DIR URL [ECHOES]
--
-- Prints "screen: <line>" as each line appears (flushed, so the spec can
-- follow), then "frames N", "slowest_ms X" (the longest love.update,
-- network work included) and "echoed N". Exits 0 once all the echoes came,
-- 1 when they did not within 10 s (30 s for two).
-- The global arg is LÖVE's command line: arg[1] is this harness's directory.
local example_dir, url = assert(arg[2], "usage: EXAMPLE_DIR URL"), assert(arg[3], "no URL")
local want = tonumber(arg[4]) or 1
local LIMIT = want > 1 and 30 or 10 -- seconds

local screen = {}
-- love.run calls love.draw only when love.graphics is active: never here.
love.graphics = {
  isActive = function()
    return false
  end,
  print = function(text)
    screen[#screen + 1] = text
  end,
}

assert(loadfile(example_dir .. "/main.lua"))()
local ex = { load = love.load, update = love.update, draw = love.draw, quit = love.quit }

local frames, slowest, started = 0, 0, nil
local printed, echoes, done_at = 0, 0, nil

-- Draws a frame and prints the lines that are new since the last one;
-- reacts to them as a player would.
local function follow()
  screen = {}
  ex.draw()
  for i = printed + 1, #screen do
    local line = screen[i]
    print("screen: " .. line)
    if line == "connected" or line == "reconnected" then
      love.keypressed("space")
    elseif line:match("^< hello at ") then
      echoes = echoes + 1
    end
  end
  printed = #screen
  io.stdout:flush()
end

function love.load()
  started = love.timer.getTime()
  ex.load({ url })
end

function love.update(dt)
  local t0 = love.timer.getTime()
  ex.update(dt)
  local took = love.timer.getTime() - t0
  frames = frames + 1
  if took > slowest then
    slowest = took
  end
  follow()
  if echoes >= want and not done_at then
    done_at = frames
  end
  if (done_at and frames >= done_at + 60) or love.timer.getTime() - started > LIMIT then
    love.event.quit(done_at and 0 or 1)
  end
end

function love.quit()
  print(("frames %d"):format(frames))
  print(("slowest_ms %.3f"):format(slowest * 1000))
  print(("echoed %d"):format(echoes))
  io.stdout:flush()
  return ex.quit()
end
