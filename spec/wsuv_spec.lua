-- spec/wsuv_spec.lua: the scheduler (spawn, run, step, sleep, on_error),
-- blocking-style calls from the REPL and from foreign coroutines.
local H = require "spec.helper"
local wsuv = require "wsuv"
local sched = require "wsuv.scheduler"

local default_on_error = sched.on_error

local echo = H.echo

-- A server on a free port whose handler echoes; returns it and its URL.
local function echo_server()
  local server = assert(wsuv.listen {
    host = "127.0.0.1", port = 0,
    on_connect = function(conn)
      echo(conn)
    end,
  })
  return server, ("ws://127.0.0.1:%d/"):format(server.port)
end

describe("wsuv scheduler", function()
  after_each(function()
    sched.on_error = default_on_error
    assert.are.same({ 0, 0 }, { H.live(wsuv) })
  end)

  it("run() returns once every spawned coroutine has finished", function()
    local done = {}
    for i = 1, 3 do
      wsuv.spawn(function(n)
        wsuv.sleep(0.02 * n)
        done[#done + 1] = n
      end, i)
    end
    assert.are.equal(3, sched.count())
    assert.is_true(wsuv.run())
    assert.are.equal(3, #done)
    assert.are.equal(0, sched.count())
  end)

  it("run() with nothing to do returns at once", function()
    local t0 = wsuv.now()
    assert.is_true(wsuv.run())
    assert.is_true(wsuv.now() - t0 < 0.05)
  end)

  it("spawn passes arguments and rejects a non-function", function()
    local got
    wsuv.spawn(function(...)
      got = { select("#", ...), ... }
    end, 1, nil, "x")
    wsuv.run()
    assert.are.same({ 3, 1, nil, "x" }, got)
    assert.has_error(function()
      wsuv.spawn(42)
    end)
    assert.has_error(function()
      wsuv.sleep("soon")
    end)
  end)

  it("step() returns at once when there is no work, and runs ready work", function()
    local t0 = wsuv.now()
    assert.are.equal(0, wsuv.step())
    assert.is_true(wsuv.now() - t0 < 0.05)
    local ran, woke = false, false
    wsuv.spawn(function()
      ran = true
      wsuv.sleep(0.1)
      woke = true
    end)
    -- A step starts the coroutine, which then sleeps: step still returns.
    t0 = wsuv.now()
    assert.are.equal(1, wsuv.step())
    assert.is_true(ran)
    assert.is_false(woke)
    assert.is_true(wsuv.now() - t0 < 0.05)
    -- Steps keep it going until it finishes.
    assert.is_true(H.wait_until(wsuv, function()
      return wsuv.step(0.01) == 0
    end, 5))
    assert.is_true(woke)
  end)

  it("sleep wakes coroutines in deadline order", function()
    local order = {}
    for _, d in ipairs({ 0.15, 0.05, 0.1, 0.0, 0.12 }) do
      wsuv.spawn(function()
        wsuv.sleep(d)
        order[#order + 1] = d
      end)
    end
    local t0 = wsuv.now()
    wsuv.run()
    assert.are.same({ 0.0, 0.05, 0.1, 0.12, 0.15 }, order)
    local dt = wsuv.now() - t0
    assert.is_true(dt >= 0.14 and dt < 1, "took " .. dt)
  end)

  it("sleep in the main thread runs the loop for other coroutines", function()
    local ticks = 0
    wsuv.spawn(function()
      for _ = 1, 5 do
        wsuv.sleep(0.01)
        ticks = ticks + 1
      end
    end)
    wsuv.sleep(0.2)
    assert.are.equal(5, ticks)
  end)

  it("an error in a coroutine goes to on_error with a traceback; others continue", function()
    local reports = {}
    wsuv.on_error(function(co, err)
      reports[#reports + 1] = { co = co, err = err, tb = debug.traceback(co, tostring(err)) }
    end)
    local finished = false
    local function explode()
      wsuv.sleep(0.01)
      error("boom in coroutine")
    end
    local bad = wsuv.spawn(function()
      explode()
    end)
    wsuv.spawn(function()
      wsuv.sleep(0.05)
      finished = true
    end)
    assert.is_true(wsuv.run())
    assert.is_true(finished)
    assert.are.equal(1, #reports)
    assert.are.equal(bad, reports[1].co)
    assert.truthy(tostring(reports[1].err):find("boom in coroutine", 1, true))
    assert.truthy(reports[1].tb:find("stack traceback", 1, true))
    local tb = reports[1].tb
    assert.truthy(tb:find("explode", 1, true) or tb:find("wsuv_spec", 1, true), tb)
    assert.has_error(function()
      wsuv.on_error("not a function")
    end)
  end)

  it("a failing on_error handler does not stop the loop", function()
    wsuv.on_error(function()
      error("handler broke")
    end)
    local after = false
    wsuv.spawn(function()
      error("first")
    end)
    wsuv.spawn(function()
      wsuv.sleep(0.01)
      after = true
    end)
    assert.is_true(wsuv.run())
    assert.is_true(after)
  end)

  it("spawn_guarded runs the guard when the coroutine returns or raises", function()
    local seen, reported = {}, false
    sched.on_error = function()
      reported = true
    end
    local function guard(value, ok, err)
      seen[#seen + 1] = { value, ok, err }
    end
    sched.spawn_guarded(guard, "a", function(x)
      wsuv.sleep(0.01)
      assert(x == 1)
    end, 1)
    sched.spawn_guarded(guard, "b", function()
      wsuv.sleep(0.02)
      error("guarded failure")
    end)
    assert.is_true(wsuv.run())
    assert.is_false(reported)
    assert.are.equal(2, #seen)
    assert.are.same({ "a", true }, { seen[1][1], seen[1][2] })
    assert.are.same({ "b", false }, { seen[2][1], seen[2][2] })
    assert.truthy(seen[2][3]:find("guarded failure", 1, true))
    assert.truthy(seen[2][3]:find("stack traceback", 1, true))
  end)

  it("a plain coroutine.yield() inside a wsuv coroutine just continues", function()
    local steps = {}
    wsuv.spawn(function()
      steps[#steps + 1] = 1
      coroutine.yield("ignored")
      steps[#steps + 1] = 2
    end)
    assert.is_true(wsuv.run())
    assert.are.same({ 1, 2 }, steps)
  end)

  it("notifying an object many times before the pass ends wakes its waiters once", function()
    local q, wakes, stop = {}, 0, false
    local co = wsuv.spawn(function()
      while not stop do
        sched.wait(q)
        wakes = wakes + 1
      end
    end)
    wsuv.step() -- the waiter starts and waits on q
    for _ = 1, 100 do
      sched.notify(q)
    end
    wsuv.step()
    assert.are.equal(1, wakes)
    -- Each later pass's notify wakes it again (the scheduler reuses its
    -- lists: a notify must not be taken for one already queued).
    local other = {}
    for round = 2, 20 do
      for _ = 1, round % 3 do
        sched.notify(other) -- passes that walk notified lists without q
        wsuv.step()
      end
      sched.notify(q)
      sched.notify(q)
      wsuv.step()
      assert.are.equal(round, wakes)
    end
    stop = true
    sched.notify(q)
    assert.is_true(wsuv.run())
    assert.are.equal("dead", coroutine.status(co))
  end)

  describe("with connections", function()
    -- Lua 5.1 and LuaJIT have no ephemerons: a scheduler table entry whose
    -- value reaches its weak key kept both alive, about 800 bytes per
    -- connection a long-lived coroutine had waited on with a deadline.
    it("a long-lived coroutine's connections are collected once dropped", function()
      local server, url = echo_server()
      local seen = setmetatable({}, { __mode = "k" })
      wsuv.spawn(function()
        for i = 1, 50 do
          local c = assert(wsuv.connect(url, { timeout = 5 }))
          seen[c] = true
          assert.is_true(c:send("m" .. i))
          assert.are.equal("m" .. i, (c:receive(5)))
          c:close()
        end
        server:close()
      end)
      assert.is_true(wsuv.run())
      assert.are.same({ 0, 0 }, { H.live(wsuv) })
      collectgarbage("collect")
      collectgarbage("collect")
      local left = 0
      for _ in pairs(seen) do
        left = left + 1
      end
      assert.are.equal(0, left)
    end)

    it("a foreign coroutine calling receive runs the loop itself", function()
      local server = assert(wsuv.listen {
        host = "127.0.0.1", port = 0,
        on_connect = function(conn)
          local m = conn:receive()
          wsuv.sleep(0.05)
          conn:send("reply to " .. m)
          for i = 1, 3 do
            conn:send("item " .. i)
          end
          echo(conn)
        end,
      })
      local c = assert(wsuv.connect(("ws://127.0.0.1:%d/"):format(server.port)))
      c:send("foreign")
      local co = coroutine.create(function()
        return c:receive(5)
      end)
      local ok, m, kind = coroutine.resume(co)
      assert.is_true(ok)
      assert.are.equal("reply to foreign", m)
      assert.are.equal("text", kind)
      assert.are.equal("dead", coroutine.status(co))
      -- A user's iterator coroutine sees only its own yields.
      local gen = coroutine.wrap(function()
        for _ = 1, 3 do
          coroutine.yield((c:receive(5)))
        end
        return "end"
      end)
      assert.are.same({ "item 1", "item 2", "item 3", "end" }, { gen(), gen(), gen(), gen() })
      c:close()
      server:close()
    end)

    it("two wsuv coroutines exchange messages while the main thread is in run()", function()
      local server = assert(wsuv.listen {
        host = "127.0.0.1", port = 0,
        on_connect = function(conn)
          while true do
            local m = conn:receive()
            if not m then
              break
            end
            conn:send(tostring(tonumber(m) + 1))
          end
        end,
      })
      local last, closed
      wsuv.spawn(function()
        local c = assert(wsuv.connect(("ws://127.0.0.1:%d/"):format(server.port)))
        local n = 0
        for _ = 1, 20 do
          c:send(tostring(n))
          n = tonumber((c:receive()))
        end
        last = n
        closed = { c:close(1000, "done") }
        server:close()
      end)
      local t0 = wsuv.now()
      assert.is_true(wsuv.run())
      assert.is_true(wsuv.now() - t0 < 10)
      assert.are.equal(20, last)
      assert.are.same({ true, 1000 }, { closed[1], closed[2] })
    end)

    it("a coroutine waiting on a second connection is not woken by the first", function()
      local server, url = echo_server()
      local got, done, a, b = {}, false, nil, nil
      wsuv.spawn(function() -- a failure closes both rather than hanging
        for _ = 1, 50 do
          if done then
            return
          end
          wsuv.sleep(0.1)
        end
        a:close()
        b:close()
      end)
      wsuv.spawn(function()
        a = assert(wsuv.connect(url))
        b = assert(wsuv.connect(url))
        a:send("a1")
        got[#got + 1] = a:receive() -- waits on a, woken by a
        -- a's echoes of a2, a3 arrive while this waits on b only.
        a:send("a2")
        a:send("a3")
        wsuv.spawn(function()
          wsuv.sleep(0.2)
          b:send("b1")
        end)
        got[#got + 1] = b:receive() -- no deadline: the park path
        done = true
        got[#got + 1] = a:receive(5)
        got[#got + 1] = a:receive(5)
        a:close()
        b:close()
        server:close()
      end)
      assert.is_true(wsuv.run())
      assert.are.same({ "a1", "b1", "a2", "a3" }, got)
    end)

    it("two coroutines waiting on one connection each get a message", function()
      local server, url = echo_server()
      local c = assert(wsuv.connect(url))
      local got = {}
      for i = 1, 2 do
        wsuv.spawn(function()
          got[i] = c:receive() -- both park on c, no deadline
        end)
      end
      wsuv.step()
      c:send("x")
      c:send("y")
      wsuv.spawn(function()
        for _ = 1, 50 do -- until both have one (or 5 s), then end the run
          if got[1] and got[2] then
            break
          end
          wsuv.sleep(0.1)
        end
        c:close()
        server:close()
      end)
      assert.is_true(wsuv.run())
      table.sort(got)
      assert.are.same({ "x", "y" }, got)
    end)

    it("receive inside a user's coroutine.wrap within a wsuv coroutine", function()
      local server, url = echo_server()
      local got
      wsuv.spawn(function()
        local c = assert(wsuv.connect(url))
        local gen = coroutine.wrap(function()
          for i = 1, 3 do
            c:send("m" .. i)
            coroutine.yield((c:receive(5))) -- not ours: the loop runs here
          end
        end)
        got = { gen(), gen(), gen() }
        c:close()
        server:close()
      end)
      assert.is_true(wsuv.run())
      assert.are.same({ "m1", "m2", "m3" }, got)
    end)

    it("run() reports coroutines waiting on something that cannot happen", function()
      local server = assert(wsuv.listen { host = "127.0.0.1", port = 0, on_connect = echo })
      local c = assert(wsuv.connect(("ws://127.0.0.1:%d/"):format(server.port)))
      c:close()
      server:close()
      local never, woken = {}, false
      wsuv.spawn(function()
        sched.wait(never) -- nobody notifies this table
        woken = true
      end)
      local ok, err = wsuv.run()
      assert.is_nil(ok)
      assert.truthy(err:find("1 coroutine(s) wait on something that cannot happen", 1, true), err)
      -- Wake it so no coroutine is left behind for later specs.
      sched.notify(never)
      assert.is_true(wsuv.run())
      assert.is_true(woken)
      assert.are.equal(0, sched.count())
    end)
  end)

  describe("REPL", function()
    local echo_proc

    after_each(function()
      H.stop(echo_proc)
      echo_proc = nil
    end)

    local function start_echo()
      local url
      echo_proc, url = H.start_example(wsuv, "echo_server.lua", 0)
      return url
    end

    it("lua -i examples/repl.lua connects, sends, receives and closes line by line", function()
      local lua = H.lua_interpreter()
      local url = start_echo()
      local script = table.concat({
        ("c = assert(wsuv.connect(%q))"):format(url),
        'c:send("hi")',
        "print(c:receive())",
        "print(c:close())",
        'print("REPL-DONE")',
      }, "\n") .. "\n"
      local input = H.tmpname()
      local f = assert(io.open(input, "wb"))
      f:write(script)
      f:close()
      local p = assert(io.popen(("%s %s -i examples/repl.lua < %s 2>&1"):format(H.lua_env(), lua,
        input)))
      local out = p:read("*a")
      p:close()
      H.remove(input)
      if not out:find("REPL-DONE", 1, true) and rawget(_G, "jit") then
        pending("luajit -i did not run the piped lines: " .. out)
        return
      end
      assert.truthy(out:find("loaded as the global `wsuv`", 1, true), out)
      assert.truthy(out:find("hi\ttext", 1, true), out)
      assert.truthy(out:find("true\t1000", 1, true), out)
    end)
  end)
end)
