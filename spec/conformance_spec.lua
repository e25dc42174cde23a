-- spec/conformance_spec.lua: runs the raw-socket conformance client
-- (spec/peers/conformance.py, Autobahn-style, RFC 6455) against a wsuv echo
-- server running in this process, and reports every case as its own test.
local H = require "spec.helper"
local wsuv = require "wsuv"

-- Above the suite's 4 MiB size cases; the 10.1.x cases probe exactly it.
local MAX_MESSAGE = 5 * 1024 * 1024
local SCRIPT = H.PYTHON .. " " .. H.PEERS .. "conformance.py"

-- The case list, known without connecting (--list), so that every case can
-- be declared as an `it` before the suite has run.
local function list_cases()
  local p = assert(io.popen(SCRIPT .. " --list --max-message " .. MAX_MESSAGE .. " 2>&1"))
  local text = p:read("*a")
  p:close()
  local cases = {}
  for line in text:gmatch("[^\n]+") do
    local id, desc = line:match("^(%d[%d%.]*) (.*)$")
    if id then
      cases[#cases + 1] = { id = id, desc = desc }
    end
  end
  return cases, text
end

local echo = H.echo

describe("conformance.py against a wsuv echo server", function()
  local cases, listing = list_cases()
  local results -- id -> {ok = bool, line = string}
  local run_rc, run_out

  lazy_setup(function()
    results = {}
    local srv = assert(wsuv.listen {
      host = "127.0.0.1",
      port = 0,
      path = "/echo",
      max_message = MAX_MESSAGE,
      on_connect = echo,
    })
    local job = H.start_job(("%s ws://127.0.0.1:%d/echo --max-message %d"):format(
      SCRIPT, srv.port, MAX_MESSAGE))
    local ok, err = pcall(function()
      run_rc, run_out = H.wait_job(wsuv, job, 120)
    end)
    H.stop(job)
    srv:close()
    assert(ok, err)
    for line in (run_out or ""):gmatch("[^\n]+") do
      local bad_id = line:match("^not ok %d+ %- (%S+)")
      local ok_id = line:match("^ok %d+ %- (%S+)")
      if bad_id or ok_id then
        results[bad_id or ok_id] = { ok = ok_id ~= nil, line = line }
      end
    end
  end)

  after_each(function()
    assert.are.same({ 0, 0 }, { H.live(wsuv) })
  end)

  it("lists its cases (180 + 3 limit cases)", function()
    assert.are.equal(183, #cases, listing)
  end)

  for _, c in ipairs(cases) do
    it(c.id .. " " .. c.desc, function()
      local r = results[c.id]
      assert(r, "case " .. c.id .. " did not report (exit " .. tostring(run_rc)
        .. ")\n" .. tostring(run_out))
      assert(r.ok, r.line)
    end)
  end

  it("exits 0 with every case passing", function()
    local ok, bad = H.tap_counts(run_out or "")
    assert.are.same({ 183, 0 }, { ok, bad }, run_out)
    assert.are.equal(0, run_rc, run_out)
  end)
end)
