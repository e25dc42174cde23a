-- spec/browser_spec.lua: a real browser against our server. Debian's
-- chromium, headless, loads a page that the server's http hook serves on
-- GET /; the page opens ws://127.0.0.1:PORT/ws, sends text, binary (an
-- ArrayBuffer), a 1 MiB message and non-ASCII text, checks every echo, and
-- sends a report; the server closes with 1000 "done", and the page reports
-- how its close event saw that on a second connection. Both sides are
-- checked: what the server received and what the page saw. Three servers:
-- plain ws:// (declining the browser's permessage-deflate offer), ws://
-- with compression, and wss:// (https:// page) with compression, whose
-- certificate chromium accepts by its public key's hash only. chromium is
-- started in a session of its own, and killed with everything it started.
local H = require "spec.helper"
local wsuv = require "wsuv"

local CHROMIUM = "/usr/bin/chromium"
local UNICODE = "héllo wörld · κόσμε · 日本語 · 🎉"
local BIG = 1024 * 1024

-- Bytes (i * 7) % 256 for i = 0 .. n-1 (period 256), as the page builds them.
local function pattern(n)
  local t = {}
  for i = 0, 255 do
    t[#t + 1] = string.char(i * 7 % 256)
  end
  return (table.concat(t):rep(math.floor(n / 256)))
end

local function bytes_0_255()
  local t = {}
  for i = 0, 255 do
    t[#t + 1] = string.char(i)
  end
  return table.concat(t)
end

local PAGE = [[
<!doctype html>
<html><head><meta charset="utf-8"><title>wsuv browser spec</title></head>
<body><script>
"use strict";
const URL = "@SCHEME@://127.0.0.1:@PORT@/ws";
const UNICODE = "@UNICODE@";
function pattern(n) {
  const a = new Uint8Array(n);
  for (let i = 0; i < n; i++) a[i] = (i * 7) & 255;
  return a;
}
function same(a, b) {
  if (a.byteLength !== b.byteLength) return false;
  const x = new Uint8Array(a), y = new Uint8Array(b);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}
const steps = [
  { name: "text", data: "hello from the browser" },
  { name: "binary", data: new Uint8Array(256).map((_, i) => i) },
  { name: "big", data: pattern(@BIG@) },
  { name: "unicode", data: UNICODE },
];
const report = { steps: {}, errors: [] };
const ws = new WebSocket(URL);
ws.binaryType = "arraybuffer";
let i = 0;
function next() {
  if (i === steps.length) {
    report.extensions = ws.extensions;
    report.protocol = ws.protocol;
    ws.send("REPORT " + JSON.stringify(report));
    return;
  }
  const d = steps[i].data;
  ws.send(typeof d === "string" ? d : d.buffer);
}
ws.onopen = next;
ws.onmessage = (ev) => {
  const d = steps[i].data;
  report.steps[steps[i].name] = typeof d === "string"
    ? ev.data === d
    : ev.data instanceof ArrayBuffer && same(ev.data, d.buffer);
  i++;
  next();
};
ws.onerror = () => report.errors.push("error event");
ws.onclose = (ev) => {
  const info = JSON.stringify({ code: ev.code, reason: ev.reason, wasClean: ev.wasClean });
  const w2 = new WebSocket(URL);
  w2.onopen = () => { w2.send("CLOSED " + info); w2.close(1000, "bye"); };
};
</script></body></html>
]]

-- Starts cmd in a new session (so that its process group and session are
-- its own), output to log. Returns the session id (the started pid).
local function start_session(cmd, log)
  local pidfile = H.tmpname()
  os.execute(("setsid %s > %s 2>&1 < /dev/null & echo $! > %s"):format(cmd, H.sh_quote(log),
    H.sh_quote(pidfile)))
  local pid = tonumber(H.read_file(pidfile))
  H.remove(pidfile)
  return assert(pid, "could not start " .. cmd)
end

local function lines_of(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return out:gmatch("[^\n]+")
end

-- Whether pid is a process that still runs (a zombie has exited; reaping
-- it is its new parent's business).
local function running(pid)
  local stat = H.read_file("/proc/" .. pid .. "/stat")
  local state = stat and stat:match("%) (%a)")
  return state ~= nil and state ~= "Z"
end

-- Pids of the running processes in session sid, and of those whose command
-- line names dir (chromium's crash handler starts a session of its own, but
-- its arguments name the profile directory). /proc is read here rather than
-- with grep, whose own arguments would name dir too.
local function leftovers(sid, dir)
  local pids, seen = {}, {}
  for line in lines_of(("pgrep -s %d"):format(sid)) do
    local pid = tonumber(line)
    if pid and not seen[pid] then
      seen[pid] = true
      if running(pid) then
        pids[#pids + 1] = pid
      end
    end
  end
  for name in lines_of("ls /proc") do
    local pid = tonumber(name)
    if pid and not seen[pid] then
      local cmdline = H.read_file("/proc/" .. name .. "/cmdline") or ""
      if cmdline:find(dir, 1, true) and running(pid) then
        pids[#pids + 1] = pid
      end
    end
  end
  return pids
end

-- KILL to the session's process group and to the crash handler (the
-- profile is thrown away, so nothing needs a graceful exit). Returns the
-- pids still alive 3 s later (none, normally).
local function kill_session(sid, dir)
  local deadline = wsuv.now() + 3
  local pids = leftovers(sid, dir)
  while #pids > 0 and wsuv.now() < deadline do
    os.execute(("kill -KILL -%d %s 2>/dev/null"):format(sid, table.concat(pids, " ")))
    wsuv.sleep(0.05)
    pids = leftovers(sid, dir)
  end
  return pids
end

-- base64 of the SHA-256 of the certificate's public key (SubjectPublicKeyInfo,
-- DER), which --ignore-certificate-errors-spki-list takes.
local function spki_hash(cert)
  local p = assert(io.popen(("openssl x509 -in %s -pubkey -noout | openssl pkey -pubin -outform der"
    .. " | openssl dgst -sha256 -binary | openssl base64 -A"):format(H.sh_quote(cert))))
  local hash = p:read("*a")
  p:close()
  return assert(hash:match("^[%w+/=]+$"), "no SPKI hash of " .. cert)
end

-- variant: {name, tls = bool, compression = bool}
local function against(variant)
  local st = { received = {}, ends = {}, requests = {} }
  local expected = {
    { kind = "text", data = "hello from the browser" },
    { kind = "binary", data = bytes_0_255() },
    { kind = "binary", data = pattern(BIG) },
    { kind = "text", data = UNICODE },
  }
  local sid, left, log, profile, took

  local function handle(conn)
    local req = conn:request()
    st.requests[#st.requests + 1] = req
    while true do
      local msg, kind, code, reason = conn:receive()
      if not msg then
        st.ends[#st.ends + 1] = { code = code, reason = reason }
        break
      end
      if kind == "text" and msg:sub(1, 7) == "REPORT " then
        st.report = msg:sub(8)
        st.compression, st.tls = conn:compression(), conn:tls_info()
        st.close_ok, st.close_code = conn:close(1000, "done")
      elseif kind == "text" and msg:sub(1, 7) == "CLOSED " then
        st.closeinfo = msg:sub(8)
      else
        local n = #st.received + 1
        local want = expected[n]
        st.received[n] = { kind = kind, len = #msg,
          same = want ~= nil and want.kind == kind and want.data == msg }
        conn:send(msg, kind)
      end
    end
  end

  local scheme = variant.tls and "https" or "http"
  lazy_setup(function()
    local C = variant.tls and H.certs()
    local srv = assert(wsuv.listen {
      host = "127.0.0.1",
      port = 0,
      path = "/ws",
      tls = C and { cert = C .. "server.pem", key = C .. "server.key" } or nil,
      compression = variant.compression,
      http = function(req)
        if req.path == "/" then
          local page = PAGE:gsub("@(%u+)@", {
            PORT = tostring(st.port), UNICODE = UNICODE, BIG = tostring(BIG),
            SCHEME = variant.tls and "wss" or "ws",
          })
          return 200, { ["Content-Type"] = "text/html; charset=utf-8" }, page
        end
        return 404, { ["Content-Type"] = "text/plain" }, "not found\n"
      end,
    })
    st.port = srv.port
    -- The accept loop in a coroutine of its own; one more per connection.
    wsuv.spawn(function()
      while true do
        local conn = srv:accept()
        if not conn then
          break
        end
        wsuv.spawn(handle, conn)
      end
    end)
    log, profile = H.tmpname(), H.tmpname(true)
    assert(os.execute("mkdir -p " .. H.sh_quote(profile)))
    local t0 = wsuv.now()
    -- HOME and XDG dirs in the profile: nothing is written outside it.
    local q = H.sh_quote(profile)
    sid = start_session(table.concat({
      "env", "HOME=" .. q, "XDG_CONFIG_HOME=" .. q, "XDG_CACHE_HOME=" .. q,
      CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
      "--user-data-dir=" .. H.sh_quote(profile),
      "--no-first-run", "--no-default-browser-check", "--disable-extensions",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--disable-dev-shm-usage", "--mute-audio",
      C and "--ignore-certificate-errors-spki-list=" .. spki_hash(C .. "server.pem") or "",
      ("%s://127.0.0.1:%d/"):format(scheme, srv.port),
    }, " "), log)
    local ok, err = pcall(function()
      H.wait_until(wsuv, function()
        return st.closeinfo ~= nil and #st.ends >= 2
      end, 20)
    end)
    took = wsuv.now() - t0
    left = kill_session(sid, profile)
    srv:close(2)
    H.remove(profile)
    assert(ok, err)
  end)

  lazy_teardown(function()
    H.remove(log)
  end)

  after_each(function()
    assert.are.same({ 0, 0 }, { H.live(wsuv) })
  end)

  local function diag()
    return ("after %.1f s; chromium output:\n%s"):format(took or -1, H.read_file(log) or "")
  end

  it("loads the page and upgrades to /ws, offering permessage-deflate", function()
    assert.is_truthy(st.requests[1], diag())
    local req = st.requests[1]
    assert.are.equal("/ws", req.path)
    assert.are.equal(("%s://127.0.0.1:%d"):format(scheme, st.port), req.origin)
    assert.is_truthy((req.headers["user-agent"] or ""):find("Chrome", 1, true), diag())
    local offered = req.headers["sec-websocket-extensions"] or ""
    assert.is_truthy(offered:find("permessage-deflate", 1, true), offered)
  end)

  it("the server received text, binary, 1 MiB and non-ASCII text intact", function()
    assert.are.equal(4, #st.received, diag())
    for i, want in ipairs(expected) do
      local got = st.received[i]
      assert.are.same({ kind = want.kind, len = #want.data, same = true }, got, "message " .. i)
    end
  end)

  it("the page got every echo back intact, with no error", function()
    assert.is_truthy(st.report, diag())
    assert.is_truthy(st.report:find(
      '"steps":{"text":true,"binary":true,"big":true,"unicode":true}', 1, true), st.report)
    assert.is_truthy(st.report:find('"errors":[]', 1, true), st.report)
  end)

  if variant.compression then
    it("permessage-deflate is agreed, and both sides compress", function()
      assert.is_truthy(st.report, diag())
      local ext = st.report:match('"extensions":"([^"]*)"')
      assert.is_truthy(ext and ext:find("^permessage%-deflate"), st.report)
      assert.is_table(st.compression, diag())
      assert.are.equal(ext, st.compression.extension)
      -- chromium compressed its four messages at least (and the report);
      -- we, three: the 22-byte text is under the default threshold of 32.
      assert.is_true(st.compression.received >= 4, "received " .. st.compression.received)
      assert.are.equal(3, st.compression.sent)
    end)
  else
    it("we decline permessage-deflate: the browser reports no extension", function()
      assert.is_truthy(st.report, diag())
      assert.is_truthy(st.report:find('"extensions":""', 1, true), st.report)
      assert.is_nil(st.compression)
    end)
  end

  if variant.tls then
    it("the page and its WebSocket came over TLS 1.3", function()
      assert.is_table(st.tls, diag())
      assert.are.equal("TLSv1.3", st.tls.version)
    end)
  end

  it("the closing handshake is clean on both sides", function()
    -- Our close(1000, "done") got the browser's 1000 back...
    assert.are.same({ true, 1000 }, { st.close_ok, st.close_code })
    -- ...and the page's close event saw a clean 1000 "done".
    assert.are.equal('{"code":1000,"reason":"done","wasClean":true}', st.closeinfo, diag())
    -- The page's second connection closed with 1000 "bye".
    assert.are.same({ code = 1000, reason = "bye" }, st.ends[2])
  end)

  it("leaves no chromium process behind", function()
    assert.are.same({}, left, "processes left of session " .. tostring(sid))
  end)
end

describe("a real browser (headless chromium) against our server", function()
  local absent = H.missing("browser_spec", CHROMIUM, "chromium")
  if absent then
    pending(absent)
    return
  end
  for _, variant in ipairs({
    { name = "ws://" },
    { name = "ws:// with permessage-deflate", compression = true },
    { name = "wss:// with permessage-deflate", tls = true, compression = true },
  }) do
    describe(variant.name, function()
      against(variant)
    end)
  end
end)
