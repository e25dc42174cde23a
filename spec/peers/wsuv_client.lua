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
local P = dofile((arg[0]:match("^(.*/)") or "./") .. "peer_opts.lua")

local function hwm()
  local f = io.open("/proc/self/status")
  local s = f and f:read("*a") or ""
  if f then
    f:close()
  end
  return tonumber(s:match("VmHWM:%s*(%d+)")) or -1
end

local url = arg[1]
local opts = P.parse(2, { timeout = 5 }, {
  ["--compression"] = P.compression,
  ["--max-message"] = P.number("max_message"),
  ["--timeout"] = P.number("timeout"),
  ["--header"] = function(o, v)
    o.headers = o.headers or {}
    local name, value = v:match("^([^=]+)=(.*)$")
    o.headers[name] = value
  end,
}, "wsuv_client.lua")

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
