-- wss_server.lua: an echo server over TLS with permessage-deflate. Send it
-- the text "reload" and it reads its certificate files again, as after a
-- renewal, without dropping the connections it has.
--
--   lua examples/wss_server.lua CERT KEY [port] [host]
--
-- For a quick test, make a throw-away CA and certificate with
-- `sh spec/peers/gen_certs.sh /tmp/certs`, run
-- `lua examples/wss_server.lua /tmp/certs/server.pem /tmp/certs/server.key`,
-- and connect with `bin/wsuv --ca /tmp/certs/ca.pem wss://127.0.0.1:8443/ hi`.
local wsuv = require "wsuv"

local cert, key = arg and arg[1], arg and arg[2]
if not cert or not key then
  io.stderr:write("usage: lua examples/wss_server.lua CERT KEY [port] [host]\n")
  os.exit(2)
end
local port = tonumber(arg[3]) or 8443
local host = arg[4] or "127.0.0.1"
local tls = { cert = cert, key = key }

local server, err
server, err = wsuv.listen {
  host = host,
  port = port,
  tls = tls,
  compression = true,
  on_connect = function(conn)
    local info, ip, peer_port = conn:tls_info(), conn:peer()
    local pmd = conn:compression()
    print(("%s:%d %s %s, compression: %s"):format(ip, peer_port, info.version, info.cipher,
      pmd and pmd.extension or "off"))
    while true do
      local msg, kind = conn:receive()
      if not msg then
        break
      end
      if msg == "reload" then
        local ok, rerr = server:reload_tls(tls)
        conn:send(ok and "reloaded" or ("reload failed: " .. rerr))
      else
        conn:send(msg, kind)
      end
    end
  end,
}
if not server then
  io.stderr:write("wss_server: ", err, "\n")
  os.exit(1)
end

print(("wsuv echo server on wss://%s:%d/ (Ctrl-C to stop)"):format(host, server.port))
io.stdout:flush()
wsuv.run()
