-- spec/peers/chaos_client.lua: a soak of our client against
-- spec/peers/chaos_serve.py, in its own process.
--
--   lua chaos_client.lua PORT [--seconds S] [--workers W] [--seed X] [--tls 1]
--
-- W coroutines (8) run sessions back to back for S seconds (3), each
-- choosing a behaviour of the server by the request path: echo (random
-- messages up to 64 KiB, fragmented and pinged by the server, each echo
-- checked), violation (14 ways: the close code RFC 6455 asks for), close
-- (the server's code and reason), abrupt (a half response, a half frame,
-- a reset: a clean failure, no hang), http (403, 404, 503, junk: connect
-- fails with EHANDSHAKE or EHTTP), slow (a server that reads nothing for a
-- while: nothing lost). Prints TAP, one line per behaviour, then one that
-- no connection is left and that the Lua heap is back near where it was
-- after a first, unmeasured second; exits 0 iff all pass.
local wsuv = require "wsuv"
local compat = require "wsuv.compat" -- a pcall a wait may yield through, on Lua 5.1 too
local P = dofile((arg[0]:match("^(.*/)") or "./") .. "peer_opts.lua")

local port = tonumber(arg[1])
local opts = P.parse(2, { seconds = 3, workers = 8, seed = 1 }, {
  ["--seconds"] = P.number("seconds"),
  ["--workers"] = P.number("workers"),
  ["--seed"] = P.number("seed"),
  ["--tls"] = P.number("tls"), -- wss:// (chaos_serve.py --cert, not verified)
}, "chaos_client.lua")
math.randomseed(opts.seed)

local LIMIT = 65536 -- chaos_serve.py's LIMIT
local URL = (opts.tls == 1 and "wss" or "ws") .. "://127.0.0.1:" .. port
-- The close code for each of chaos_serve.py's VIOLATIONS, in order.
local VIOLATION_CODES = {
  1002, 1002, 1002, 1002, 1002, 1002, 1002, 1007, 1007, 1002, 1002, 1007, 1009, 1002,
}
local CLOSE_CODES = { 1000, 1001, 1011, 3000, 4999 }

local function random_bytes(n)
  local t = {}
  for i = 1, n do
    t[i] = string.char(math.random(0, 255))
  end
  return table.concat(t)
end

local function random_text(n)
  local t = {}
  local size = 0
  while size < n do
    local r = math.random()
    local c
    if r < 0.8 then
      c = string.char(math.random(0x20, 0x7e))
    elseif r < 0.95 then
      c = "é"
    else
      c = "€"
    end
    t[#t + 1] = c
    size = size + #c
  end
  return table.concat(t)
end

local function random_message()
  local r = math.random()
  local n = r < 0.1 and 0 or r < 0.6 and math.random(1, 125) or r < 0.9 and math.random(126, 4096)
    or math.random(4097, LIMIT)
  if math.random() < 0.5 then
    return random_text(math.min(n, LIMIT - 3)), "text"
  end
  return random_bytes(n), "binary"
end

local function connect(path)
  return wsuv.connect(URL .. path, { timeout = 5, max_message = LIMIT, tls = { insecure = true } })
end

-- Each returns nil when the session went as it should, else why not.
local sessions = {}

-- Sends n messages and checks their echoes, in order.
local function exchange(conn, n)
  for _ = 1, n do
    local msg, kind = random_message()
    local ok, err = conn:send(msg, kind)
    if not ok then
      return "send: " .. tostring(err)
    end
    local got, gkind, code, reason = conn:receive(5)
    if got ~= msg or gkind ~= kind then
      return ("echo of %d bytes (%s): got %s %s %s %s"):format(#msg, kind,
        got and #got or "nil", tostring(gkind), tostring(code), tostring(reason))
    end
  end
end

function sessions.echo()
  local conn, err = connect("/echo")
  if not conn then
    return "connect: " .. tostring(err)
  end
  local why = exchange(conn, math.random(1, 10))
  if why then
    conn:close()
    return why
  end
  local ok, code = conn:close(1000)
  if not ok or code ~= 1000 then
    return ("close: %s %s"):format(tostring(ok), tostring(code))
  end
end

-- The sessions where the server ends it: connects to path, checks one
-- echo, then the next receive must report the close with code (and reason,
-- when given). what names the session in the failure.
local function ended_by_server(path, what, code, reason)
  local conn, err = connect(path)
  if not conn then
    return "connect: " .. tostring(err)
  end
  local why = exchange(conn, 1)
  if why then
    conn:close()
    return why
  end
  local msg, gwhat, gcode, greason = conn:receive(5)
  if msg ~= nil or gwhat ~= "closed" or gcode ~= code or (reason and greason ~= reason) then
    conn:close()
    return ("%s: got %s %s %s %s, wanted closed %d"):format(what, tostring(msg), tostring(gwhat),
      tostring(gcode), tostring(greason), code)
  end
end

function sessions.violation()
  local k = math.random(0, #VIOLATION_CODES - 1)
  return ended_by_server("/violation/" .. k, "violation " .. k, VIOLATION_CODES[k + 1])
end

function sessions.close()
  local want = CLOSE_CODES[math.random(#CLOSE_CODES)]
  return ended_by_server("/close/" .. want, "server close " .. want, want, "bye " .. want)
end

function sessions.abrupt()
  local where = ({ "head", "frame", "reset" })[math.random(3)]
  if where ~= "head" then
    return ended_by_server("/abrupt/" .. where, "abrupt " .. where, 1006)
  end
  local conn, err, code = connect("/abrupt/head")
  if conn or (code ~= "EHANDSHAKE" and code ~= "EHTTP" and code ~= "ECONNRESET") then
    if conn then
      conn:close()
    end
    return ("half a 101: %s %s %s"):format(tostring(conn), tostring(err), tostring(code))
  end
end

function sessions.http()
  local status = ({ "403", "404", "503", "junk" })[math.random(4)]
  local conn, err, code = connect("/http/" .. status)
  if conn or (code ~= "EHANDSHAKE" and code ~= "EHTTP") then
    if conn then
      conn:close()
    end
    return ("http %s: %s %s %s"):format(status, tostring(conn), tostring(err), tostring(code))
  end
end

function sessions.slow()
  local conn, err = connect("/slow")
  if not conn then
    return "connect: " .. tostring(err)
  end
  local sent = {}
  for i = 1, math.random(20, 200) do
    sent[i] = random_bytes(math.random(0, 2000))
    local ok, serr = conn:send(sent[i], "binary")
    if not ok then
      conn:close()
      return "send: " .. tostring(serr)
    end
  end
  for i = 1, #sent do
    local got = conn:receive(5)
    if got ~= sent[i] then
      conn:close()
      return ("slow: message %d of %d lost or changed"):format(i, #sent)
    end
  end
  conn:close(1000)
end

local NAMES = { "echo", "violation", "close", "abrupt", "http", "slow" }
local WEIGHTS = { echo = 4, violation = 3, close = 2, abrupt = 2, http = 1, slow = 1 }
local pick = {}
for _, name in ipairs(NAMES) do
  for _ = 1, WEIGHTS[name] do
    pick[#pick + 1] = name
  end
end

local counts, failures = {}, {}
for _, name in ipairs(NAMES) do
  counts[name], failures[name] = { 0, 0 }, {}
end

local function run_for(seconds)
  local deadline = wsuv.now() + seconds
  for _ = 1, opts.workers do
    wsuv.spawn(function()
      while wsuv.now() < deadline do
        local name = pick[math.random(#pick)]
        local ok, why = compat.pcall(sessions[name])
        if not ok then
          why = "raised: " .. tostring(why)
        end
        local c = counts[name]
        if why then
          c[2] = c[2] + 1
          if #failures[name] < 5 then
            failures[name][#failures[name] + 1] = why
          end
        else
          c[1] = c[1] + 1
        end
      end
    end)
  end
  wsuv.run()
end

local function settled_heap()
  local deadline = wsuv.now() + 10
  while wsuv.core.stats().connections > 0 and wsuv.now() < deadline do
    wsuv.sleep(0.05)
  end
  -- LuaJIT counts its compiled traces in the heap, and TLS paths compile
  -- late: flush them, they are code, not what a session left behind.
  local jit = rawget(_G, "jit")
  if jit then
    jit.flush()
  end
  collectgarbage("collect")
  collectgarbage("collect")
  return wsuv.core.stats().connections, collectgarbage("count")
end

run_for(1) -- warm up: pools, traces, the first heap
local _, heap0 = settled_heap()
for name in pairs(counts) do
  counts[name], failures[name] = { 0, 0 }, {}
end
run_for(opts.seconds)
local n, bad = 0, 0
for _, name in ipairs(NAMES) do
  local c = counts[name]
  n = n + 1
  local ok = c[2] == 0 and c[1] > 0
  bad = bad + (ok and 0 or 1)
  print(("%s %d - %s sessions, %d passed, %d failed"):format(ok and "ok" or "not ok", n, name,
    c[1], c[2]))
  for _, why in ipairs(failures[name]) do
    print("#   " .. why)
  end
end
local left, heap1 = settled_heap()
n = n + 1
local grown = heap1 - heap0
local ok = left == 0 and grown <= 256
bad = bad + (ok and 0 or 1)
print(("%s %d - %d connections left, Lua heap %+d KiB since the warm-up"):format(
  ok and "ok" or "not ok", n, left, math.floor(grown + 0.5)))
print("1.." .. n)
os.exit(bad == 0 and 0 or 1)
