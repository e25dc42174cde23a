-- wsuv.cli: the `wsuv` command-line client.
--
-- Design criteria: a tool for poking at a server by hand or from a script.
-- `wsuv URL msg...` sends each message and prints what comes back; with no
-- messages it sends each line of standard input. Replies are printed as they
-- arrive while it waits (--wait seconds after each message). --follow then
-- keeps printing what arrives until the server closes (a feed), and
-- --reconnect comes back when the server goes away. --listen turns it
-- around: a server that prints what its clients send (and --echo sends it
-- back), to try a client against.
local wsuv = require "wsuv"
local url = require "wsuv.url"

local M = {}

local usage = [[
usage: wsuv [options] ws[s]://host[:port]/path [message ...]
       wsuv -l [host:]port [--echo] [--once] [-p NAME] [--cert FILE --key FILE]
  -p, --protocol NAME   offer a subprotocol (repeatable)
  -H, --header "K: V"   add a request header (repeatable)
  -w, --wait SECONDS    how long to wait for replies after each message (1)
  -b, --binary          send messages as binary
  -f, --follow          after sending, print what arrives until the server closes
  -r, --reconnect       connect again when the server goes away (with --follow)
      --ca FILE         trust this CA (PEM file or directory) for wss://
      --cert FILE       client certificate for wss:// (with --key)
      --key FILE        its private key
  -k, --insecure        do not verify the server's certificate
  -x, --proxy URL       through an HTTP proxy: http://[user:password@]host[:port]
                        (default: https_proxy or http_proxy, as curl; "" for none)
  -l, --listen [HOST:]PORT
                        serve instead (on 127.0.0.1 unless HOST; port 0: any
                        free one): print each client's messages as "#N text";
                        -p lists the subprotocols to accept, --cert and --key
                        make it wss://
  -e, --echo            with --listen, send each message back
  -1, --once            with --listen, serve one client, then exit
  -h, --help            this text
With no message arguments, each line of standard input is sent.]]

local function parse_args(args)
  local o = { protocols = {}, headers = {}, messages = {}, wait = 1, tls = {} }
  local tls_files = { ["--ca"] = "ca", ["--cert"] = "cert", ["--key"] = "key" }
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "-h" or a == "--help" then
      o.help = true
    elseif a == "-p" or a == "--protocol" then
      i = i + 1
      o.protocols[#o.protocols + 1] = args[i]
    elseif a == "-H" or a == "--header" then
      i = i + 1
      local k, v = (args[i] or ""):match("^([^:]+):%s*(.*)$")
      if not k then
        return nil, "bad header: " .. tostring(args[i])
      end
      o.headers[k] = v
    elseif a == "-w" or a == "--wait" then
      i = i + 1
      o.wait = tonumber(args[i])
      if not o.wait then
        return nil, "--wait needs a number"
      end
    elseif a == "-b" or a == "--binary" then
      o.binary = true
    elseif a == "-f" or a == "--follow" then
      o.follow = true
    elseif a == "-r" or a == "--reconnect" then
      o.reconnect = true
    elseif a == "-l" or a == "--listen" then
      i = i + 1
      local host, port = (args[i] or ""):match("^(.-):?(%d+)$")
      if not port or tonumber(port) > 65535 then
        return nil, "--listen needs [host:]port"
      end
      host = host:match("^%[(.*)%]$") or host -- [::1]:8080
      o.listen = { host = host ~= "" and host or "127.0.0.1", port = tonumber(port) }
    elseif a == "-e" or a == "--echo" then
      o.echo = true
    elseif a == "-1" or a == "--once" then
      o.once = true
    elseif tls_files[a] then
      i = i + 1
      if not args[i] then
        return nil, a .. " needs a file name"
      end
      o.tls[tls_files[a]] = args[i]
    elseif a == "-k" or a == "--insecure" then
      o.tls.insecure = true
    elseif a == "-x" or a == "--proxy" then
      i = i + 1
      if not args[i] then
        return nil, a .. " needs a URL"
      end
      o.proxy = args[i]
    elseif not o.url then
      o.url = a
    else
      o.messages[#o.messages + 1] = a
    end
    i = i + 1
  end
  return o
end

local function shown(msg, kind)
  return kind == "binary" and ("<binary %d bytes>"):format(#msg) or msg
end

local function drain(conn, wait, out)
  local deadline = wsuv.now() + wait
  while true do
    local left = deadline - wsuv.now()
    if left <= 0 then
      return true
    end
    local msg, kind, code, reason = conn:receive(left < math.huge and left or nil)
    if msg then
      out:write(shown(msg, kind), "\n")
      out:flush()
    elseif kind == "closed" then
      out:write(("closed by server: %s %s\n"):format(tostring(code), reason or ""))
      return false
    else
      return true
    end
  end
end

-- --listen: serves until killed (or, with --once, until its one client
-- has gone). Returns the exit status.
local function serve(o, stdout, stderr)
  local tls = (o.tls.cert or o.tls.key) and { cert = o.tls.cert, key = o.tls.key } or nil
  local n, server = 0, nil
  local function say(fmt, ...)
    stdout:write(fmt:format(...), "\n")
    stdout:flush()
  end
  local err, code
  server, err, code = wsuv.listen({
    host = o.listen.host,
    port = o.listen.port,
    protocols = #o.protocols > 0 and o.protocols or nil,
    tls = tls,
    max_connections = o.once and 1 or nil,
    on_connect = function(conn)
      n = n + 1
      local id = n
      local ip, port = conn:peer()
      local proto = conn:protocol()
      say("#%d open %s:%s %s%s", id, tostring(ip), tostring(port), conn:request().target,
        proto and (" (" .. proto .. ")") or "")
      while true do
        local msg, kind, ccode, reason = conn:receive()
        if not msg then
          say("#%d closed %s %s", id, tostring(ccode), reason or "")
          break
        end
        say("#%d %s", id, shown(msg, kind))
        if o.echo then
          conn:send(msg, kind)
        end
      end
      if o.once then
        server:close()
      end
    end,
  })
  if not server then
    stderr:write("wsuv: ", err, " (", tostring(code), ")\n")
    return 1
  end
  say("listening on %s://%s:%d/", tls and "wss" or "ws", url.bracketed(o.listen.host), server.port)
  wsuv.run()
  return 0
end

-- Returns the process exit status.
function M.main(args, stdin, stdout, stderr)
  stdin, stdout, stderr = stdin or io.stdin, stdout or io.stdout, stderr or io.stderr
  local o, err = parse_args(args or {})
  if o and o.listen and not o.help then
    return serve(o, stdout, stderr)
  end
  if not o or o.help or not o.url then
    stderr:write(err and (err .. "\n") or "", usage, "\n")
    return (o and o.help) and 0 or 2
  end
  local conn, msg, code = wsuv.connect(o.url, {
    protocols = #o.protocols > 0 and o.protocols or nil,
    headers = o.headers,
    tls = o.tls,
    proxy = (o.proxy == nil) or (o.proxy ~= "" and o.proxy),
    reconnect = o.reconnect and {
      on_reconnect = function()
        stderr:write("wsuv: reconnected\n")
      end,
    } or nil,
  })
  if not conn then
    stderr:write("wsuv: ", msg, " (", tostring(code), ")\n")
    return 1
  end
  local kind = o.binary and "binary" or "text"
  local open = true
  local function send(m)
    local ok, serr = conn:send(m, kind)
    if not ok then
      stderr:write("wsuv: send: ", serr, "\n")
      return false
    end
    return drain(conn, o.wait, stdout)
  end
  if #o.messages > 0 then
    for _, m in ipairs(o.messages) do
      open = send(m)
      if not open then
        break
      end
    end
  else
    for line in stdin:lines() do
      open = send(line)
      if not open then
        break
      end
    end
  end
  if open and o.follow then
    open = drain(conn, math.huge, stdout)
  end
  if open then
    conn:close(1000, "bye")
  end
  return 0
end

return M
