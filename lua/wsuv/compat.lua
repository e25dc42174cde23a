-- wsuv.compat: the only Lua file that papers over version differences
-- (5.1, 5.2, 5.3, 5.4, LuaJIT), so the rest of wsuv passes luacheck's
-- std = "min".
local M = {}

-- luacheck: ignore 113 143
M.unpack = table.unpack or unpack
M.pack = table.pack or function(...)
  return { n = select("#", ...), ... }
end

-- coroutine.running() returns nil in the main thread on 5.1/LuaJIT and
-- (co, true) on 5.2+: true when the caller is the main thread.
function M.is_main()
  local co, ismain = coroutine.running()
  return co == nil or ismain == true, co
end

-- Coroutines that only stand in for pcall on Lua 5.1 (see M.pcall): a wait
-- inside one belongs to the scheduler coroutine that runs it.
M.transparent = setmetatable({}, { __mode = "k" })

-- pcall/xpcall through which a coroutine may yield. 5.2+ and LuaJIT can do
-- that natively; plain Lua 5.1 cannot, so f runs in a coroutine whose yields
-- are passed on to the caller's resumer.
local native = _VERSION ~= "Lua 5.1" or rawget(_G, "jit") ~= nil
M.yieldable_pcall = native

function M.xpcall(f, handler, ...)
  if native then
    -- 5.2+ and LuaJIT pass the arguments on: no closure, no argument table
    -- (both would live as long as a connection's handler).
    return xpcall(f, handler, ...)
  end
  local co = coroutine.create(f)
  M.transparent[co] = true
  local res = M.pack(coroutine.resume(co, ...))
  while true do
    if not res[1] then
      return false, handler(debug.traceback(co, res[2]))
    end
    if coroutine.status(co) == "dead" then
      return true, M.unpack(res, 2, res.n)
    end
    res = M.pack(coroutine.resume(co, coroutine.yield(M.unpack(res, 2, res.n))))
  end
end

function M.pcall(f, ...)
  return M.xpcall(f, function(e)
    return e
  end, ...)
end

return M
