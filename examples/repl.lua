-- repl.lua: the interactive way to prototype a client. Start Lua with this
-- file loaded, then type calls; each one runs the event loop until done:
--
--   lua -i examples/repl.lua
--   > c = wsuv.connect("ws://127.0.0.1:8080/")
--   > c:send("hi")
--   > c:receive()          --> hi   text
--   > c:close()
wsuv = require "wsuv" -- a global on purpose: the REPL user types it
print("wsuv " .. wsuv._VERSION .. " loaded as the global `wsuv`; try wsuv.connect(url)")
