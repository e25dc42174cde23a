-- conf.lua of the LÖVE harness (main.lua): no window, so LÖVE runs without
-- a display; the loop, its timer and its events are LÖVE's own.
function love.conf(t)
  t.window = false
  for _, m in ipairs({ "window", "graphics", "audio", "sound", "joystick", "image", "font", "video",
    "physics", "touch", "mouse", "keyboard", "data", "math", "system", "thread" }) do
    t.modules[m] = false
  end
end
