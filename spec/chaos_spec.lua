-- spec/chaos_spec.lua: a randomised soak (spec/peers/chaos.py) against a
-- wsuv echo server in a child process (spec/peers/chaos_server.lua, run by
-- this spec's interpreter), in both styles: good traffic fragmented and
-- sliced at random, protocol errors that must get their close codes,
-- sockets dropped or reset at any point, slow readers, bad HTTP. Afterwards
-- no connection may be left open and the server's Lua heap must be back
-- where it was after the first round.
local H = require "spec.helper"

local SECONDS = tonumber(os.getenv("WSUV_CHAOS_SECONDS") or "") or 4
local SEED = tonumber(os.getenv("WSUV_CHAOS_SEED") or "") or 6455

-- Runs chaos.py against a fresh server; returns its exit status and output.
local function soak(style)
  local server = H.start_server(("exec %s %schaos_server.lua --port 0 --style %s"):format(
    H.lua_interpreter(), H.PEERS, style))
  local cmd = "%s %schaos.py --port %d --seconds %s --rounds 2 --seed %d 2>&1; echo rc=$?"
  local p = io.popen(cmd:format(H.PYTHON, H.PEERS, server.port, SECONDS, SEED))
  local out = p:read("*a")
  p:close()
  local alive = os.execute("kill -0 " .. server.pid .. " 2>/dev/null")
  local log = H.read_file(server.log) or ""
  H.stop(server)
  return tonumber(out:match("rc=(%d+)%s*$")), out, alive == true or alive == 0, log
end

describe("chaos.py against a wsuv echo server", function()
  for _, style in ipairs({ "connect", "events" }) do
    it(style .. " style: every session as RFC 6455 says, nothing left behind", function()
      local rc, out, alive, log = soak(style)
      assert.is_true(alive, "the server died:\n" .. log)
      local passed, failed = H.tap_counts(out)
      assert.are.equal(0, rc, out .. "\nserver log:\n" .. log)
      assert.are.equal(0, failed, out)
      assert.are.equal(12, passed, out) -- 5 behaviours and a heap check, 2 rounds
    end)
  end
end)
