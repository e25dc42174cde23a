-- spec/limits_spec.lua: the limits and timeouts not covered elsewhere:
-- max_head (431), max_frame (1009), close_timeout on both sides and the
-- handshake_timeout option.
local H = require "spec.helper"
local wsuv = require "wsuv"

describe("limits", function()
  local servers, conns, sockets = {}, {}, {}

  local function listen(opts)
    opts.host, opts.port = "127.0.0.1", 0
    opts.on_connect = opts.on_connect or H.echo
    local s = assert(wsuv.listen(opts))
    servers[#servers + 1] = s
    return s, ("ws://127.0.0.1:%d/"):format(s.port)
  end

  local function connect(url, opts)
    local c, err, code, response = wsuv.connect(url, opts)
    if c then
      conns[#conns + 1] = c
    end
    return c, err, code, response
  end

  after_each(function()
    for _, s in ipairs(sockets) do
      s:close()
    end
    sockets = {}
    for _, c in ipairs(conns) do
      if c:state() ~= "closed" then
        c:abort()
      end
    end
    conns = {}
    for _, s in ipairs(servers) do
      s:close(1)
    end
    servers = {}
    assert.are.same({ 0, 0 }, { H.live(wsuv) })
  end)

  it("a request head over max_head is refused with 431", function()
    local _, url = listen({ max_head = 1024 })
    local c, _, code, response = connect(url, { headers = { ["x-big"] = ("a"):rep(2000) } })
    assert.is_nil(c)
    assert.are.equal("EHANDSHAKE", code)
    assert.are.equal(431, response.status)
    -- The same request under the limit passes.
    local ok = connect(url, { headers = { ["x-big"] = ("a"):rep(500) } })
    assert.is_truthy(ok)
  end)

  it("a frame over max_frame closes with 1009, one at the limit passes", function()
    local _, url = listen({ max_frame = 1000, max_message = 10000 })
    local c = assert(connect(url))
    assert.is_true(c:send(("x"):rep(1000)))
    assert.are.equal(1000, #assert(c:receive(5)))
    assert.is_true(c:send(("x"):rep(1001)))
    local msg, kind, code = c:receive(5)
    assert.is_nil(msg)
    assert.are.equal("closed", kind)
    assert.are.equal(1009, code)
  end)

  it("close() returns after close_timeout when the peer never answers", function()
    -- The server never reads, so its close reply waits behind the unread
    -- message for the server's own (long) close_timeout.
    local _, url = listen({
      close_timeout = 5,
      on_connect = function(conn)
        while conn:state() == "open" do
          wsuv.sleep(0.05)
        end
      end,
    })
    local c = assert(connect(url, { close_timeout = 0.3 }))
    assert.is_true(c:send("unread"))
    local t0 = wsuv.now()
    c:close(1000, "bye")
    local took = wsuv.now() - t0
    assert.is_true(took >= 0.25 and took < 2, "close took " .. took .. " s")
    assert.are.equal("closed", c:state())
  end)

  it("the server's close_timeout bounds how long it waits for Lua to read", function()
    local _, url = listen({
      close_timeout = 0.3,
      on_connect = function(conn)
        while conn:state() == "open" do
          wsuv.sleep(0.05)
        end
      end,
    })
    local c = assert(connect(url, { close_timeout = 5 }))
    assert.is_true(c:send("unread"))
    local t0 = wsuv.now()
    local ok, code = c:close(1000, "bye")
    local took = wsuv.now() - t0
    assert.is_true(ok)
    assert.are.equal(1000, code)
    assert.is_true(took >= 0.25 and took < 2, "close took " .. took .. " s")
  end)

  it("a client that sends no request is dropped after handshake_timeout", function()
    local s = listen({ handshake_timeout = 0.3 })
    local sock = H.raw_connect(s.port)
    sockets[#sockets + 1] = sock
    sock:settimeout(0)
    local t0 = wsuv.now()
    local closed = H.wait_until(wsuv, function()
      local _, err = sock:receive(1)
      return err == "closed"
    end, 3)
    local took = wsuv.now() - t0
    assert.is_true(closed)
    assert.is_true(took >= 0.25 and took < 1.5, "dropped after " .. took .. " s")
  end)
end)
