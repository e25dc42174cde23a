-- spec/peers/love_harness/main.lua: runs examples/love/main.lua in LÖVE
-- itself, as a player would, with the screen replaced by a list of the
-- lines love.draw prints (no window here). LÖVE's own love.run drives it:
-- the harness presses space once the example is connected, waits for the
-- echo, lets the idle connection run a while longer, then quits.
--
--   love spec/peers/love_harness EXAMPLE_DIR URL
--
-- Prints "screen: <line>" per drawn line, then "frames N", "slowest_ms X"
-- (the longest love.update, network work included) and "echoed yes|no".
-- Exits 0 once echoed, 1 when nothing came back within 10 s.
-- The global arg is LÖVE's command line: arg[1] is this harness's directory.
local example_dir, url = assert(arg[2], "usage: EXAMPLE_DIR URL"), assert(arg[3], "no URL")

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

local frames, slowest, pressed, echoed_at, started = 0, 0, false, nil, nil
local function lines()
  screen = {}
  ex.draw()
  return screen
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
  local shown = lines()
  if not pressed and shown[1] == "connected" then
    love.keypressed("space")
    pressed = true
  end
  if not echoed_at then
    for _, line in ipairs(shown) do
      if line:match("^< hello at ") then
        echoed_at = frames
      end
    end
  end
  local now = love.timer.getTime()
  if (echoed_at and frames >= echoed_at + 60) or now - started > 10 then
    love.event.quit(echoed_at and 0 or 1)
  end
end

function love.quit()
  for _, line in ipairs(lines()) do
    print("screen: " .. line)
  end
  print(("frames %d"):format(frames))
  print(("slowest_ms %.3f"):format(slowest * 1000))
  print("echoed " .. (echoed_at and "yes" or "no"))
  io.stdout:flush()
  return ex.quit()
end
