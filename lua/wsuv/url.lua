-- wsuv.url: parses ws:// and wss:// URLs (RFC 6455 3).
-- Design criteria: strict (a fragment is an error, as 3 requires), IPv6
-- literals in brackets, default ports 80 and 443, and a Host header value
-- that omits the default port as browsers do.
local M = {}

local default_port = { ws = 80, wss = 443 }

-- host, port ("" when absent) of "host[:port]" or "[v6]:port"; nil when
-- malformed.
local function split_authority(authority)
  if authority:sub(1, 1) == "[" then
    return authority:match("^%[([%x:.%%]+)%]:?(%d*)$")
  end
  return authority:match("^([^:]+):?(%d*)$")
end

-- host as a URL or a Host header writes it: an IPv6 address in brackets.
function M.bracketed(host)
  return host:find(":", 1, true) and ("[" .. host .. "]") or host
end

-- Returns {scheme, host, port, target, host_header, secure} or nil, message.
function M.parse(url)
  if type(url) ~= "string" then
    return nil, "url must be a string"
  end
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then
    return nil, "invalid URL (expected ws://host[:port]/path): " .. url
  end
  scheme = scheme:lower()
  if not default_port[scheme] then
    return nil, "unsupported scheme '" .. scheme .. "' (use ws:// or wss://)"
  end
  if rest:find("#", 1, true) then
    return nil, "a WebSocket URL must not have a fragment"
  end
  local authority, target = rest:match("^([^/?]*)(.*)$")
  if authority:find("@", 1, true) then
    return nil, "user information in a WebSocket URL is not supported"
  end
  local host, port = split_authority(authority)
  if not host or host == "" then
    return nil, "invalid host in URL: " .. url
  end
  port = port ~= "" and tonumber(port) or default_port[scheme]
  if port < 1 or port > 65535 then
    return nil, "port out of range in URL: " .. url
  end
  if target == "" then
    target = "/"
  elseif target:sub(1, 1) == "?" then
    target = "/" .. target
  end
  local host_header = M.bracketed(host)
  if port ~= default_port[scheme] then
    host_header = host_header .. ":" .. port
  end
  return {
    scheme = scheme,
    secure = scheme == "wss",
    host = host,
    port = port,
    target = target,
    host_header = host_header,
  }
end

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h)
    return string.char(tonumber(h, 16))
  end))
end

-- An HTTP proxy's URL, "http://[user:password@]host[:port]" (port 80 by
-- default): {host, port, credentials} or nil, message. The user and
-- password may be percent-encoded; credentials is "user:password" decoded,
-- for Basic authentication.
function M.parse_proxy(proxy)
  if type(proxy) ~= "string" then
    return nil, "proxy must be a URL string"
  end
  local rest = proxy:match("^[hH][tT][tT][pP]://(.*)$")
  if not rest then
    return nil, "proxy: expected http://[user:password@]host[:port]: " .. proxy
  end
  rest = rest:gsub("/$", "")
  local userinfo, hostport = rest:match("^(.*)@([^@]*)$")
  hostport = hostport or rest
  local host, port = split_authority(hostport)
  if hostport:find("/", 1, true) then
    host = nil -- a proxy URL has no path
  end
  port = port and (port ~= "" and tonumber(port) or 80)
  if not host or port < 1 or port > 65535 then
    return nil, "proxy: invalid host or port: " .. proxy
  end
  local credentials
  if userinfo then
    local user, password = userinfo:match("^([^:]*):?(.*)$")
    credentials = unescape(user) .. ":" .. unescape(password)
  end
  return { host = host, port = port, credentials = credentials }
end

local function loopback(host)
  host = host:lower()
  return host == "localhost" or host == "::1" or host:match("^127%.%d+%.%d+%.%d+$") ~= nil
    or host:match("%.localhost$") ~= nil
end

-- Whether NO_PROXY's list ("*", or hosts and domains, comma-separated,
-- each maybe with a leading dot or a :port) covers host.
local function excluded(list, host)
  host = host:lower()
  for entry in (list or ""):gmatch("[^,%s]+") do
    entry = entry:lower():gsub("^%*?%.", ""):gsub(":%d+$", "")
    if entry == "*" or host == entry or host:sub(-#entry - 1) == "." .. entry then
      return true
    end
  end
  return false
end

-- The proxy URL the environment gives for u (a parsed ws:// or wss://
-- URL), as curl reads it: https_proxy for wss://, http_proxy for ws://,
-- then all_proxy; lower case first, and HTTP_PROXY not at all (a CGI
-- request can set it). NO_PROXY excludes hosts, and loopback never goes
-- through a proxy. getenv is os.getenv's stand-in. Returns nil for none.
function M.proxy_from_env(u, getenv)
  if loopback(u.host) then
    return nil
  end
  local function var(name)
    local v = getenv(name) or (name ~= "http_proxy" and getenv(name:upper())) or nil
    return v ~= "" and v or nil
  end
  if excluded(var("no_proxy"), u.host) then
    return nil
  end
  return var(u.secure and "https_proxy" or "http_proxy") or var("all_proxy")
end

-- Splits a request target into path and query (without the '?').
function M.split_target(target)
  local path, query = target:match("^([^?]*)%??(.*)$")
  return path, query
end

return M
