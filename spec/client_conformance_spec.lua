-- spec/client_conformance_spec.lua: our client against the raw-socket
-- conformance server (spec/peers/client_conformance.py, Autobahn-style
-- client cases, RFC 6455). Each case is one connection to /case/<id> running
-- an echo loop; the python server judges the wire (masking, echoes, pongs,
-- close codes, who closes TCP) and the spec also checks what the application
-- saw: receive() ending with nil, "closed" and the case's close code.
local H = require "spec.helper"
local wsuv = require "wsuv"

-- The client's limit; the server's 10.1.x cases probe exactly it.
local MAX_MESSAGE = 2 * 1024 * 1024
local SCRIPT = H.PYTHON .. " " .. H.PEERS .. "client_conformance.py"

-- The case list, known without connecting (--list): id, close code, text.
local function list_cases()
  local p = assert(io.popen(SCRIPT .. " --list --max-message " .. MAX_MESSAGE .. " 2>&1"))
  local text = p:read("*a")
  p:close()
  local cases = {}
  for line in text:gmatch("[^\n]+") do
    local id, code, desc = line:match("^(%d[%d%.]*) (%d+) (.*)$")
    if id then
      cases[#cases + 1] = { id = id, code = tonumber(code), desc = desc }
    end
  end
  return cases, text
end

-- One case: an echo loop until the connection closes. A text message
-- "close:<code>:<reason>" asks us to close instead. Returns how it ended.
local function run_case(port, id)
  local url = ("ws://127.0.0.1:%d/case/%s"):format(port, id)
  local conn, err, code = wsuv.connect(url, { timeout = 5, max_message = MAX_MESSAGE })
  if not conn then
    return { kind = "connect: " .. tostring(err), code = code }
  end
  local deadline = wsuv.now() + 5
  while true do
    local left = deadline - wsuv.now()
    local msg, kind, ccode = conn:receive(left > 0 and left or 0)
    if not msg then
      if kind ~= "closed" then
        conn:abort()
      end
      return { kind = kind, code = ccode }
    end
    local want, reason = msg:match("^close:(%d+):(.*)$")
    if kind == "text" and want then
      local _, peer_code = conn:close(tonumber(want), reason)
      return { kind = conn:state(), code = peer_code }
    end
    conn:send(msg, kind)
  end
end

describe("our client against client_conformance.py", function()
  local cases, listing = list_cases()
  local verdicts = {} -- id -> {ok = bool, line = string}
  local seen = {} -- id -> what our application saw
  local log, refused = "", {}

  lazy_setup(function()
    local srv = H.start_server(SCRIPT .. " --port 0 --max-message " .. MAX_MESSAGE)
    local ok, err = pcall(function()
      for _, c in ipairs(cases) do
        seen[c.id] = run_case(srv.port, c.id)
      end
      -- A case's verdict is printed once the server side of it has ended.
      H.wait_until(wsuv, function()
        log = H.read_file(srv.log) or ""
        local n = 0
        for line in log:gmatch("[^\n]+") do
          if line:match("^ok %d+ %- ") or line:match("^not ok [1-9]%d* %- ") then
            n = n + 1
          end
        end
        return n >= #cases
      end, 10)
    end)
    H.stop(srv)
    assert(ok, err)
    for line in log:gmatch("[^\n]+") do
      local bad_id = line:match("^not ok %d+ %- (%S+)")
      local ok_id = line:match("^ok %d+ %- (%S+)")
      if bad_id or ok_id then
        verdicts[bad_id or ok_id] = { ok = ok_id ~= nil, line = line }
      end
      if line:match("^not ok 0 ") then
        refused[#refused + 1] = line
      end
    end
  end)

  after_each(function()
    assert.are.same({ 0, 0 }, { H.live(wsuv) })
  end)

  it("lists its cases", function()
    assert.are.equal(189, #cases, listing)
  end)

  for _, c in ipairs(cases) do
    it(c.id .. " " .. c.desc, function()
      local v = verdicts[c.id]
      assert(v, "case " .. c.id .. " has no verdict\n" .. log)
      assert(v.ok, v.line)
      local s = seen[c.id]
      assert.are.same({ "closed", c.code }, { s.kind, s.code },
        "what the application saw in case " .. c.id)
    end)
  end

  it("every case passes on the wire and in the application", function()
    local passed = 0
    for _, c in ipairs(cases) do
      local v, s = verdicts[c.id], seen[c.id]
      if v and v.ok and s.kind == "closed" and s.code == c.code then
        passed = passed + 1
      end
    end
    io.stderr:write(("client conformance: %d/%d passed\n"):format(passed, #cases))
    assert.are.same({}, refused, "requests the server refused")
    assert.are.equal(#cases, passed, log)
  end)
end)
