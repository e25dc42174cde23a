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

return M
