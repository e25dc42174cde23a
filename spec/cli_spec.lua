-- spec/cli_spec.lua: the `wsuv` command-line client (lua/wsuv/cli.lua),
-- called in this process against in-process servers (its blocking calls
-- run the loop, so the servers' coroutines keep running), and bin/wsuv
-- as a child process reading standard input.
local H = require "spec.helper"
local wsuv = require "wsuv"
local cli = require "wsuv.cli"
local compat = require "wsuv.compat"

-- A file-like sink for stdout/stderr.
local function sink()
  local parts = {}
  return {
    write = function(self, ...)
      for _, v in ipairs({ ... }) do
        parts[#parts + 1] = tostring(v)
      end
      return self
    end,
    flush = function() end,
    text = function()
      return table.concat(parts)
    end,
  }
end

-- A stdin whose lines() yields the given lines.
local function lines_of(list)
  return {
    lines = function()
      local i = 0
      return function()
        i = i + 1
        return list[i]
      end
    end,
  }
end

describe("the wsuv command-line client", function()
  local servers = {}
  local C = H.certs()

  local function listen(opts)
    opts.port = opts.port or 0
    opts.on_connect = opts.on_connect or function(conn)
      while true do
        local msg, kind = conn:receive()
        if not msg then
          break
        end
        conn:send("echo:" .. msg, kind)
      end
    end
    local s = assert(wsuv.listen(opts))
    servers[#servers + 1] = s
    return s
  end

  local function run(args, stdin)
    local out, err = sink(), sink()
    local rc = cli.main(args, stdin or lines_of({}), out, err)
    return rc, out.text(), err.text()
  end

  after_each(function()
    H.close_and_check(wsuv, {}, servers)
  end)

  it("--follow prints what the server pushes until it closes", function()
    local s = listen {
      on_connect = function(conn)
        for i = 1, 3 do
          wsuv.sleep(0.05)
          conn:send("tick " .. i)
        end
        conn:close(1000, "done")
      end,
    }
    local rc, out, err = run({ "-f", "-w", "0", "ws://127.0.0.1:" .. s.port .. "/" })
    assert.are.equal(0, rc, err)
    assert.are.equal("tick 1\ntick 2\ntick 3\nclosed by server: 1000 done\n", out)
  end)

  it("--follow --reconnect carries on when the server restarts", function()
    local function feed(words, last)
      return function(conn)
        conn:send(words)
        if last then
          conn:close(1000, "done")
        else
          conn:receive()
        end
      end
    end
    local s = listen { on_connect = feed("before the restart") }
    local port = s.port
    wsuv.spawn(function()
      wsuv.sleep(0.2)
      s:close() -- 1001 to the client: it tries again
      table.remove(servers)
      listen { port = port, on_connect = feed("after the restart", true) }
    end)
    local finished = false
    wsuv.spawn(function() -- a watchdog: the client retries for ever
      local give_up = wsuv.now() + 15
      while not finished and wsuv.now() < give_up do
        wsuv.sleep(0.05)
      end
      if not finished then
        for i = #servers, 1, -1 do
          table.remove(servers, i):close()
        end
        listen { port = port, on_connect = feed("watchdog", true) }
      end
    end)
    local rc, out, err = run({ "-f", "-r", "-w", "0", "ws://127.0.0.1:" .. port .. "/" })
    finished = true
    assert.are.equal(0, rc, err)
    assert.are.equal("before the restart\nafter the restart\nclosed by server: 1000 done\n", out)
    assert.are.equal("wsuv: reconnected\n", err)
  end)

  it("sends its message arguments and prints each reply", function()
    local s = listen {}
    local rc, out, err = run({ "-w", "0.5", "ws://127.0.0.1:" .. s.port .. "/", "one", "two" })
    assert.are.equal(0, rc, err)
    assert.are.equal("echo:one\necho:two\n", out)
  end)

  it("sends standard input line by line; binary replies are summarised", function()
    local s = listen {}
    local args = { "-b", "-w", "0.5", "ws://127.0.0.1:" .. s.port }
    local rc, out, err = run(args, lines_of({ "abc", "de" }))
    assert.are.equal(0, rc, err)
    assert.are.equal("<binary 8 bytes>\n<binary 7 bytes>\n", out)
  end)

  it("speaks wss:// with --ca, and refuses an unknown CA unless --insecure", function()
    local s = listen { tls = { cert = C .. "server.pem", key = C .. "server.key" } }
    local url = "wss://127.0.0.1:" .. s.port .. "/"
    local rc, out, err = run({ "--ca", C .. "ca.pem", "-w", "0.5", url, "secure" })
    assert.are.equal(0, rc, err)
    assert.are.equal("echo:secure\n", out)
    rc, out, err = run({ "--ca", C .. "other-ca.pem", url, "x" })
    assert.are.equal(1, rc)
    assert.are.equal("", out)
    assert.is_truthy(err:find("certificate verify failed", 1, true), err)
    rc, out, err = run({ "-k", "-w", "0.5", url, "anyway" })
    assert.are.equal(0, rc, err)
    assert.are.equal("echo:anyway\n", out)
  end)

  it("reports the server closing, refused connections and bad usage", function()
    local s = listen {
      on_connect = function(conn)
        conn:receive()
        conn:close(4000, "enough")
      end,
    }
    local rc, out = run({ "-w", "2", "ws://127.0.0.1:" .. s.port, "hi", "never sent" })
    assert.are.equal(0, rc)
    assert.are.equal("closed by server: 4000 enough\n", out)
    local port = s.port
    s:close()
    table.remove(servers)
    local _, err
    rc, _, err = run({ "ws://127.0.0.1:" .. port, "x" })
    assert.are.equal(1, rc)
    assert.is_truthy(err:find("ECONNREFUSED", 1, true), err)
    rc, _, err = run({})
    assert.are.equal(2, rc)
    assert.is_truthy(err:find("usage", 1, true))
    rc = run({ "--ca" })
    assert.are.equal(2, rc)
  end)

  -- Runs `wsuv -l ... --once` in this process while client(url, keep)
  -- runs in a wsuv coroutine, handing the connections it opens to keep;
  -- returns its status, output and errors once it has ended. A failing
  -- client's connections are closed, so that the server ends all the same.
  local function serve(args, client)
    local out, err = sink(), sink()
    local failure
    wsuv.spawn(function()
      local url
      assert(H.wait_until(wsuv, function()
        url = out.text():match("listening on (wss?://%S+)")
        return url ~= nil
      end, 5), "no listening line")
      local kept = {}
      local ok, e = compat.pcall(client, url, function(c)
        kept[#kept + 1] = c
        return c
      end)
      if not ok then
        failure = e
        for _, c in ipairs(kept) do
          c:close()
        end
        if #kept == 0 then
          local c = wsuv.connect(url, { tls = { insecure = true } })
          if c then
            c:close()
          end
        end
      end
    end)
    local rc = cli.main(args, lines_of({}), out, err)
    wsuv.run()
    assert(not failure, failure)
    return rc, out.text(), err.text()
  end

  it("--listen prints what a client sends, --echo sends it back, --once ends", function()
    local rc, out, err = serve({ "-l", "0", "--echo", "--once", "-p", "chat" }, function(url, keep)
      local c = keep(assert(wsuv.connect(url .. "room?x=1", { protocols = { "chat" } })))
      assert.are.equal("chat", c:protocol())
      assert(c:send("hi"))
      assert.are.same({ "hi", "text" }, { c:receive(3) })
      assert(c:send("\0\1", "binary"))
      assert.are.same({ "\0\1", "binary" }, { c:receive(3) })
      -- One client at a time with --once: the next is told to come back.
      local other, _, code, response = wsuv.connect(url)
      assert.are.same({ nil, "EHANDSHAKE", 503 }, { other, code, response.status })
      c:close(1000, "done")
    end)
    assert.are.equal(0, rc, err)
    local port = out:match("listening on ws://127%.0%.0%.1:(%d+)/\n")
    assert.truthy(port, out)
    assert.truthy(out:find("\n#1 open 127%.0%.0%.1:%d+ /room%?x=1 %(chat%)\n"), out)
    assert.truthy(out:find("\n#1 hi\n#1 <binary 2 bytes>\n#1 closed 1000 done\n$"), out)
  end)

  it("--listen with --cert and --key serves wss://", function()
    local rc, out = serve({ "-l", "127.0.0.1:0", "--once", "--cert", C .. "server.pem", "--key",
      C .. "server.key" }, function(url, keep)
      local c = keep(assert(wsuv.connect(url, { tls = { ca = C .. "ca.pem",
        servername = "localhost" } })))
      assert.are.equal("TLSv1.3", c:tls_info().version)
      assert(c:send("secret"))
      c:close()
    end)
    assert.are.equal(0, rc)
    assert.truthy(out:find("^listening on wss://127%.0%.0%.1:%d+/\n"), out)
    assert.truthy(out:find("\n#1 secret\n", 1), out)
  end)

  it("--listen refuses a bad address, and a port already taken", function()
    local rc, _, err = run({ "-l", "nope" })
    assert.are.equal(2, rc)
    assert.truthy(err:find("--listen needs [host:]port", 1, true), err)
    local s = listen {}
    rc, _, err = run({ "-l", tostring(s.port) })
    assert.are.equal(1, rc)
    assert.truthy(err:find("EADDRINUSE", 1, true), err)
  end)

  it("bin/wsuv runs as a command and reads stdin", function()
    local s = listen {}
    local lua = H.lua_interpreter()
    local cmd = ("printf 'x\\ny\\n' | %s bin/wsuv -w 0.3 ws://127.0.0.1:%d/"):format(lua, s.port)
    local rc, out = H.wait_job(wsuv, H.start_job(cmd), 20)
    assert.are.equal(0, rc, out)
    assert.are.equal("echo:x\necho:y\n", out)
  end)
end)
