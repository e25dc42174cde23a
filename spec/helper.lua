-- spec/helper.lua: shared by every spec (busted's --helper).
-- Peers run as separate processes on 127.0.0.1 and are stopped by PID.
-- WSUV_GC_STRESS=1 runs every spec with an aggressive collector.
local H = {}
local luassert = require "luassert"

H.PYTHON = "/usr/bin/python3"
H.NODE = "env NODE_PATH=/usr/share/nodejs node"
H.PEERS = "spec/peers/"
TEST_TIMEOUT = tonumber(os.getenv("TEST_TIMEOUT") or "") or 30

if os.getenv("WSUV_GC_STRESS") == "1" then
  collectgarbage("setpause", 0)
end

-- The interpreter running the specs, to start child Lua processes with.
function H.lua_interpreter()
  local i = -1
  while arg and arg[i - 1] do
    i = i - 1
  end
  return arg and arg[i] or "lua"
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local s = f:read("*a")
  f:close()
  return s
end
H.read_file = read_file

-- The "key rest" lines of a host's report, as a table key -> rest.
function H.key_lines(text)
  local r = {}
  for line in text:gmatch("[^\n]+") do
    local key, rest = line:match("^(%S+)%s*(.*)$")
    if key then
      r[key] = rest
    end
  end
  return r
end

-- Whether a file can be opened for reading.
function H.exists(path)
  local f = io.open(path, "rb")
  if f then
    f:close()
  end
  return f ~= nil
end

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
H.sh_quote = sh_quote

-- Temporary files and directories the specs made and have not removed yet:
-- name -> "file" or "dir". Each is removed (H.remove) once its user is done
-- with it; H.cleanup removes the rest when busted exits.
local made = {}

-- A new temporary name from os.tmpname, which creates the file; with dir
-- true, the file is removed for the caller to make a directory there.
function H.tmpname(dir)
  local name = os.tmpname()
  if dir then
    os.remove(name)
  end
  made[name] = dir and "dir" or "file"
  return name
end

-- A shell command running the Lua code text in this interpreter, from a
-- file (the sanitizers' host takes no -e); the file goes at cleanup.
function H.lua_script(text)
  local name = H.tmpname()
  local f = assert(io.open(name, "w"))
  f:write(text)
  f:close()
  return H.lua_interpreter() .. " " .. sh_quote(name)
end

-- Removes temporary files or directories; nil arguments are skipped.
function H.remove(...)
  for i = 1, select("#", ...) do
    local name = select(i, ...)
    if name then
      if made[name] == "dir" then
        os.execute("rm -rf " .. sh_quote(name))
      else
        os.remove(name)
      end
      made[name] = nil
    end
  end
end

-- Starts a server command in the background; waits (at most 15 s) for its
-- "PORT n" line. Returns {pid=, port=, log=} or raises. H.stop stops it
-- and removes its log.
function H.start_server(cmd)
  local out, pidfile = H.tmpname(), H.tmpname()
  os.execute(("%s > %s 2>&1 & echo $! > %s"):format(cmd, out, pidfile))
  local pid = tonumber(read_file(pidfile))
  H.remove(pidfile)
  if not pid then
    H.remove(out)
  end
  assert(pid, "could not start: " .. cmd)
  local deadline = os.time() + 15
  while os.time() <= deadline do
    local text = read_file(out) or ""
    local port = text:match("PORT (%d+)")
    if port then
      return { pid = pid, port = tonumber(port), log = out }
    end
    os.execute("sleep 0.05")
  end
  local log = read_file(out) or ""
  H.stop({ pid = pid, log = out })
  error("server did not report its port: " .. cmd .. "\n" .. log)
end

-- Stops a process from H.start_server or H.start_job and removes its
-- files: read p.log or p.out first.
function H.stop(p)
  if p then
    if p.pid then
      os.execute("kill " .. p.pid .. " 2>/dev/null")
      p.pid = nil
    end
    H.remove(p.log, p.out, p.rc)
  end
end

-- Runs a command in the background (for a peer client talking to our
-- server, while our loop runs in this process). H.finished(job) polls it;
-- H.stop(job) ends one that has not finished.
function H.start_job(cmd)
  local out, rc, pidfile = H.tmpname(), H.tmpname(), H.tmpname()
  os.remove(rc)
  os.execute(("(%s; echo $? > %s) > %s 2>&1 & echo $! > %s"):format(cmd, rc, out, pidfile))
  local pid = tonumber(read_file(pidfile))
  H.remove(pidfile)
  return { pid = pid, out = out, rc = rc }
end

-- An env command prefix that lets a child Lua find wsuv as this process
-- does (LUA_*_5_4 too, which Lua 5.4 reads first).
function H.lua_env()
  local path, cpath = sh_quote(package.path), sh_quote(package.cpath)
  return ("env LUA_PATH=%s LUA_CPATH=%s LUA_PATH_5_4=%s LUA_CPATH_5_4=%s"):format(path, cpath,
    path, cpath)
end

-- Starts examples/<name> in a child process on port (0: a free one) and
-- waits for the ws:// URL it prints. Returns the job (H.stop ends it) and
-- the URL; raises, with the child's output, when it does not come up.
function H.start_example(wsuv, name, port)
  local job = H.start_job(("exec %s %s examples/%s %d"):format(H.lua_env(), H.lua_interpreter(),
    name, port))
  local url
  if not H.wait_until(wsuv, function()
    url = (read_file(job.out) or ""):match("ws://127%.0%.0%.1:%d+/")
    return url ~= nil
  end, 10) then
    local out = read_file(job.out) or ""
    H.stop(job)
    error("examples/" .. name .. " did not come up:\n" .. out)
  end
  return job, url
end

-- Runs examples/<name> on a free port, calls fn(url) and stops it; an error
-- in fn is raised after the child is gone.
function H.with_example(wsuv, name, fn)
  local job, url = H.start_example(wsuv, name, 0)
  local ok, err = pcall(fn, url)
  H.stop(job)
  assert(ok, err)
end

-- A port that was free a moment ago: nothing listens there now (for a
-- refused connection, or a server to start later on a known port).
function H.closed_port(wsuv)
  local s = assert(wsuv.listen { host = "127.0.0.1", port = 0, on_connect = function() end })
  local port = s.port
  s:close()
  return port
end

-- Returns exit status, output once the job finished; nil otherwise. Once
-- it has finished, its files are removed and the results kept in the job.
function H.finished(job)
  if not job.status then
    local rc = read_file(job.rc)
    if not (rc and rc:match("%d")) then
      return nil
    end
    job.status, job.output = tonumber(rc:match("%d+")), read_file(job.out) or ""
    H.remove(job.out, job.rc)
  end
  return job.status, job.output
end

-- Drives the wsuv loop until the job ends (or timeout seconds pass, when
-- it is stopped). Returns exit status, output.
function H.wait_job(wsuv, job, timeout)
  local deadline = wsuv.now() + (timeout or TEST_TIMEOUT)
  while wsuv.now() < deadline do
    local rc, out = H.finished(job)
    if rc then
      return rc, out
    end
    wsuv.sleep(0.02)
  end
  local out = read_file(job.out) or ""
  H.stop(job)
  return nil, out .. "\n(timed out)"
end

-- Counts "ok"/"not ok" lines of a TAP text.
function H.tap_counts(text)
  local ok, bad = 0, 0
  for line in text:gmatch("[^\n]+") do
    if line:match("^not ok") then
      bad = bad + 1
    elseif line:match("^ok") then
      ok = ok + 1
    end
  end
  return ok, bad
end

-- Runs the loop until cond() is true or timeout seconds pass.
function H.wait_until(wsuv, cond, timeout)
  local deadline = wsuv.now() + (timeout or 5)
  while not cond() do
    if wsuv.now() > deadline then
      return false
    end
    wsuv.sleep(0.01)
  end
  return true
end

-- As H.wait_until, failing the test when cond is not reached (10 s by
-- default).
function H.wait_for(wsuv, cond, timeout)
  luassert.is_true(H.wait_until(wsuv, cond, timeout or 10), "condition not reached in time")
end

-- Lets the loop settle, then reports live connections and servers; every
-- spec's after_each asserts both are 0 (no leaked handles).
function H.live(wsuv)
  H.wait_until(wsuv, function()
    local s = wsuv.core.stats()
    return s.connections == 0 and s.servers == 0
  end, 6)
  local s = wsuv.core.stats()
  return s.connections, s.servers
end

-- The echo handler every spec's server uses. The while form, not
-- conn:messages(), so that it runs on Lua 5.1 too.
function H.echo(conn)
  while true do
    local msg, kind = conn:receive()
    if not msg then
      break
    end
    conn:send(msg, kind)
  end
end

-- A raw TCP client (LuaSocket, from Debian's lua-socket) for bad peers.
function H.raw_connect(port)
  local socket = require "socket"
  local s = assert(socket.tcp())
  s:settimeout(5)
  assert(s:connect("127.0.0.1", port))
  return s
end

H.UPGRADE = table.concat({
  "GET / HTTP/1.1",
  "Host: 127.0.0.1",
  "Upgrade: websocket",
  "Connection: Upgrade",
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
  "Sec-WebSocket-Version: 13",
  "", "",
}, "\r\n")

-- wsuv.connect(url, opts), keeping an opened connection in list (for an
-- after_each to close).
function H.connect_kept(wsuv, list, url, opts)
  local c, err, code, response = wsuv.connect(url, opts)
  if c then
    list[#list + 1] = c
  end
  return c, err, code, response
end

-- Empties a list of connections, closing those still open (after_each).
function H.close_all(conns)
  for i = #conns, 1, -1 do
    local c = table.remove(conns, i)
    if c:state() ~= "closed" then
      c:close()
    end
  end
end

-- after_each's teardown: closes the connections still open, then the
-- servers, emptying both lists in place.
function H.close_everything(conns, servers)
  H.close_all(conns)
  for i = #servers, 1, -1 do
    table.remove(servers, i):close()
  end
end

-- The usual after_each: closes everything, then asserts that no
-- connection or server outlived the test.
function H.close_and_check(wsuv, conns, servers)
  H.close_everything(conns, servers)
  luassert.are.same({ 0, 0 }, { H.live(wsuv) })
end

-- The value of header name (any case) in a response's flat list
-- {name, value, ...}, or nil.
function H.header(response, name)
  local list = response.headers
  for i = 1, #list - 1, 2 do
    if list[i]:lower() == name then
      return list[i + 1]
    end
  end
end

-- When path is missing: says so on stderr (CI's log keeps it) and returns
-- the text for the spec's pending(); nil when it is there.
function H.missing(spec, path, package)
  if H.exists(path) then
    return nil
  end
  io.stderr:write(spec, ": pending: ", path, " is not installed (.ci/deps)\n")
  return package .. " is not installed: .ci/deps could not install it"
end

-- Test certificates (spec/peers/gen_certs.sh), made once per process in a
-- temporary directory (H.cleanup removes it). Returns that directory, with
-- a trailing slash.
local cert_dir
function H.certs()
  if not cert_dir then
    local d = H.tmpname(true)
    assert(os.execute("sh " .. H.PEERS .. "gen_certs.sh " .. d .. " >/dev/null 2>&1"))
    assert(read_file(d .. "/server.pem"), "gen_certs.sh made no certificates")
    cert_dir = d .. "/"
  end
  return cert_dir
end

-- Removes every temporary file and directory not removed yet. Run when
-- busted exits, after the last spec file.
function H.cleanup()
  for name in pairs(made) do
    H.remove(name)
  end
  cert_dir = nil
end

local has_busted, busted = pcall(require, "busted")
if has_busted and busted.subscribe then
  busted.subscribe({ "exit" }, function()
    H.cleanup()
    return nil, true -- let the other subscribers run
  end)
end

package.loaded["spec.helper"] = H
return H
