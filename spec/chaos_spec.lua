-- spec/chaos_spec.lua: a randomised soak (spec/peers/chaos.py) against a
-- wsuv echo server in a child process (spec/peers/chaos_server.lua, run by
-- this spec's interpreter), in both styles, over ws://, wss:// and with
-- permessage-deflate: good traffic fragmented and sliced at random,
-- protocol errors that must get their close codes, sockets dropped or reset
-- at any point (TLS handshakes too), slow readers, bad HTTP. Afterwards
-- no connection may be left open and the server's Lua heap must be back
-- where it was after the first round. And the mirror: our client in a
-- child process (spec/peers/chaos_client.lua) against a server that
-- fragments, pings, breaks the protocol, closes and drops at random
-- (spec/peers/chaos_serve.py).
local H = require "spec.helper"

local SECONDS = tonumber(os.getenv("WSUV_CHAOS_SECONDS") or "") or 3
local SEED = tonumber(os.getenv("WSUV_CHAOS_SEED") or "") or 6455

-- Runs chaos.py against a fresh server (extra: its options and chaos.py's
-- for the transport); returns its exit status and output, whether the
-- server was still alive, and its log.
local function soak(style, server_args, client_args)
  local server = H.start_server(("exec %s %schaos_server.lua --port 0 --style %s %s"):format(
    H.lua_interpreter(), H.PEERS, style, server_args))
  local cmd = "%s %schaos.py --port %d --seconds %s --rounds 2 --seed %d %s 2>&1; echo rc=$?"
  local p = io.popen(cmd:format(H.PYTHON, H.PEERS, server.port, SECONDS, SEED, client_args))
  local out = p:read("*a")
  p:close()
  local alive = os.execute("kill -0 " .. server.pid .. " 2>/dev/null")
  local log = H.read_file(server.log) or ""
  H.stop(server)
  return tonumber(out:match("rc=(%d+)%s*$")), out, alive == true or alive == 0, log
end

describe("chaos.py against a wsuv echo server", function()
  local C = H.certs()
  local tls = ("--cert %sserver.pem --key %sserver.key"):format(C, C)
  for _, case in ipairs({
    { "connect", "ws://", "", "" },
    { "events", "ws://", "", "" },
    { "connect", "wss:// with permessage-deflate", tls .. " --compression on", "--tls --deflate" },
    { "events", "permessage-deflate", "--compression on", "--deflate" },
  }) do
    local style, transport, server_args, client_args = case[1], case[2], case[3], case[4]
    local name = ("%s style, %s: every session as the RFCs say, nothing left behind")
    it(name:format(style, transport), function()
      local rc, out, alive, log = soak(style, server_args, client_args)
      assert.is_true(alive, "the server died:\n" .. out .. "\n" .. log)
      local passed, failed = H.tap_counts(out)
      assert.are.equal(0, rc, out .. "\nserver log:\n" .. log)
      assert.are.equal(0, failed, out)
      assert.are.equal(12, passed, out) -- 5 behaviours and a heap check, 2 rounds
    end)
  end
end)

-- Runs client (a command with a %d for the port) against a fresh
-- chaos_serve.py (server_args: its options); returns the client's exit
-- status and output, and its TAP counts.
local function against_chaos_serve(server_args, client)
  local server = H.start_server(("exec %s %schaos_serve.py --port 0 %s"):format(H.PYTHON, H.PEERS,
    server_args))
  local p = io.popen(client:format(server.port) .. " 2>&1; echo rc=$?")
  local out = p:read("*a")
  p:close()
  H.stop(server)
  local passed, failed = H.tap_counts(out)
  return tonumber(out:match("rc=(%d+)%s*$")), out, passed, failed
end

describe("chaos_client.lua against a rough server (chaos_serve.py)", function()
  local C = H.certs()
  for _, tls in ipairs({ false, true }) do
    local name = "our client over %s: every session as RFC 6455 says, nothing left behind"
    it(name:format(tls and "wss://" or "ws://"), function()
      local client = ("%s %schaos_client.lua %%d --seconds %s --seed %d --tls %d"):format(
        H.lua_interpreter(), H.PEERS, SECONDS, SEED, tls and 1 or 0)
      local rc, out, passed, failed = against_chaos_serve(
        tls and ("--cert %sserver.pem --key %sserver.key"):format(C, C) or "", client)
      assert.are.equal(0, rc, out)
      assert.are.equal(0, failed, out)
      assert.are.equal(7, passed, out) -- 6 behaviours and a heap check
    end)
  end

  -- The soak fails a client that breaks the protocol only through these
  -- 4001 closes: a client without them would pass every session.
  it("chaos_serve.py closes a client that breaks RFC 6455 with 4001 and the breach", function()
    local rc, out, passed, failed = against_chaos_serve("",
      ("%s %schaos_breaker.py --port %%d"):format(H.PYTHON, H.PEERS))
    assert.are.equal(0, rc, out)
    assert.are.equal(0, failed, out)
    assert.are.equal(3, passed, out) -- an unmasked frame, a pong for no ping, a wrong close code
  end)
end)
