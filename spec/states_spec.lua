-- spec/states_spec.lua: two independent Lua 5.4 states in one process, each
-- with its own wsuv loop. spec/host/two_states.c is compiled here with cc
-- against liblua5.4 and loads the 5.4 build of wsuv.core from ./.rocks; the
-- spec is the same on every interpreter that runs busted.
local H = require "spec.helper"

local N = 200
local CORE = "./.rocks/lib/lua/5.4/wsuv/core.so"

local exists = H.exists

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1; echo \"EXIT $?\""))
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("EXIT (%d+)%s*$"))
  return rc, out:gsub("EXIT %d+%s*$", "")
end

-- Why the host cannot be built here, or nil.
local function missing()
  if not exists("/usr/include/lua5.4/lua.h") then
    return "liblua5.4-dev is not installed (no /usr/include/lua5.4/lua.h)"
  end
  if not exists(CORE) then
    return "wsuv.core is not built for Lua 5.4 (" .. CORE .. "): LUAS has no lua5.4"
  end
end

describe("two Lua states in one process (spec/host/two_states.c)", function()
  local why = missing()
  if why then
    io.stderr:write("states_spec: pending: ", why, "\n")
    pending("two Lua states: " .. why)
    return
  end

  local exe
  local build_rc, build_out, run_rc, run_out
  local r = {} -- key -> rest of the line

  lazy_setup(function()
    exe = H.tmpname()
    build_rc, build_out = sh(("cc -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror "
      .. "$(pkg-config --cflags lua5.4) spec/host/two_states.c "
      .. "$(pkg-config --libs lua5.4) -o %s"):format(H.sh_quote(exe)))
    if build_rc ~= 0 then
      return
    end
    run_rc, run_out = sh(("timeout 60 %s %s %s %d"):format(H.sh_quote(exe),
      H.sh_quote("./lua/?.lua;./lua/?/init.lua"), H.sh_quote("./.rocks/lib/lua/5.4/?.so"), N))
    r = H.key_lines(run_out)
  end)

  lazy_teardown(function()
    H.remove(exe)
  end)

  it("the host compiles against liblua5.4", function()
    assert.are.equal(0, build_rc, build_out)
  end)

  it("state B's client gets every echo from state A's server, both driven by step(0)", function()
    assert.are.equal("echoed", r.B_phase, run_out)
    -- Third field: messages the server in A received, echoes B verified.
    assert.are.equal(tostring(N), (r.A_stats or ""):match("(%d+)$"), run_out)
    assert.are.equal(tostring(N), (r.B_stats or ""):match("(%d+)$"), run_out)
    assert.is_true(tonumber(r.rounds) > 1, run_out)
  end)

  it("each state has its own loop: A holds the server, B none", function()
    -- connections servers: A has the listener and the accepted side, B the
    -- client side only.
    assert.are.equal("1 1", (r.A_stats or ""):match("^(%d+ %d+)"), run_out)
    assert.are.equal("1 0", (r.B_stats or ""):match("^(%d+ %d+)"), run_out)
  end)

  it("closing A's lua_State drops B's connection (1006) and A's listener", function()
    assert.is_not_nil(r.A_closed, run_out)
    assert.are.equal("nil closed 1006", r.B_dropped, run_out)
    assert.are.equal("ECONNREFUSED", r.B_reconnect, run_out)
  end)

  it("B keeps working alone, then closes cleanly; the host exits 0", function()
    assert.are.equal("alone in B", r.B_own_echo, run_out)
    assert.are.equal("0 0", r.B_final_stats, run_out)
    assert.is_not_nil(r.B_closed, run_out)
    assert.is_not_nil(r.OK, run_out)
    assert.are.equal(0, run_rc, run_out)
  end)
end)
