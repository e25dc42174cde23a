-- .luacheckrc: `make lint` runs `luacheck .` with this file.
std = "min" -- only globals every Lua version has (5.1-5.4, LuaJIT)
max_line_length = 100
include_files = {
  "lua/**/*.lua",
  "spec/**/*.lua",
  "examples/**/*.lua",
  "bin/wsuv",
  "*.rockspec",
  ".luacheckrc",
  ".busted",
}
exclude_files = { ".rocks/**", "build/**" }

files["spec"] = { std = "+busted", globals = { "TEST_TIMEOUT" } }
files["examples/love"] = { globals = { "love" } }
files["spec/peers/love_harness"] = { globals = { "love" } }
-- The only Lua file with version shims, and the only one allowed to ignore
-- warnings: 113 (undefined global: unpack, setfenv, loadstring on 5.2+) and
-- 143 (undefined field of a global: table.unpack on 5.1). `make luacheck`
-- also fails on "luacheck:" inline directives in any other file (STYLE.md 14).
files["lua/wsuv/compat.lua"] = { ignore = { "113", "143" } }
files["*.rockspec"] = { std = "+rockspec" }
files[".luacheckrc"] = { std = "+luacheckrc" }

-- The REPL example sets the global the user types.
files["examples/repl.lua"] = { globals = { "wsuv" } }
