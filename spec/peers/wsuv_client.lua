-- spec/peers/wsuv_client.lua: a wsuv client in its own process, so that a
-- spec can read how much memory it took (its peak RSS) while a peer
-- attacks it.
--
--   lua wsuv_client.lua URL [--compression SPEC] [--max-message N] [--timeout SECS]
--       [--header NAME=VALUE]...
--
-- SPEC as in wsuv_server.lua. Prints "OPEN <extension or none>" once
-- connected (or "FAILED <code> <message>"), "MESSAGE <kind> <length>" for
-- every message, then "CLOSED <code> <ms from open to closed> <reason>",
-- and "VMHWM <kB before connecting> <kB at the end>" (peak resident set
-- size, /proc/self/status). Exits 0.
local wsuv = require "wsuv"

local function compression_of(spec)
  if spec == nil or spec == "off" then
    return nil
  end
  if spec == "on" then
    return true
  end
  local t = {}
  for item in spec:gmatch("[^,]+") do
    local k, v = item:match("^%s*([%w_]+)%s*=%s*(%d+)%s*$")
    if k then
      t[k] = tonumber(v)
    else
      t[item:match("^%s*(.-)%s*$")] = true
    end
  end
  return t
end

local function hwm()
  local f = io.open("/proc/self/status")
  local s = f and f:read("*a") or ""
  if f then
    f:close()
  end
  return tonumber(s:match("VmHWM:%s*(%d+)")) or -1
end

local url = arg[1]
local opts = { timeout = 5 }
local i = 2
while arg[i] do
  local k, v = arg[i], arg[i + 1]
  if k == "--compression" then
    opts.compression = compression_of(v)
  elseif k == "--max-message" then
    opts.max_message = tonumber(v)
  elseif k == "--timeout" then
    opts.timeout = tonumber(v)
  elseif k == "--header" then
    opts.headers = opts.headers or {}
    local name, value = v:match("^([^=]+)=(.*)$")
    opts.headers[name] = value
  else
    io.stderr:write("wsuv_client.lua: unknown option ", tostring(k), "\n")
    os.exit(2)
  end
  i = i + 2
end

local before = hwm()
local conn, err, code = wsuv.connect(url, opts)
if not conn then
  print(("FAILED %s %s"):format(tostring(code), tostring(err)))
  os.exit(0)
end
local c = conn:compression()
print("OPEN " .. (c and c.extension or "none"))
io.stdout:flush()
local t0 = wsuv.now()
while true do
  local msg, kind, ccode, reason = conn:receive(opts.timeout)
  if not msg then
    print(("CLOSED %s %d %s"):format(tostring(ccode), math.floor((wsuv.now() - t0) * 1000),
      tostring(reason or kind)))
    break
  end
  print(("MESSAGE %s %d"):format(kind, #msg))
  io.stdout:flush()
end
conn:close()
print(("VMHWM %d %d"):format(before, hwm()))
