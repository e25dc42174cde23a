-- wsuv.url: parses ws:// and wss:// URLs (RFC 6455 3).
-- Design criteria: strict (a fragment is an error, as 3 requires), IPv6
-- literals in brackets, default ports 80 and 443, and a Host header value
-- that omits the default port as browsers do.
local M = {}

local default_port = { ws = 80, wss = 443 }

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
  local host, port
  if authority:sub(1, 1) == "[" then
    host, port = authority:match("^%[([%x:.%%]+)%]:?(%d*)$")
  else
    host, port = authority:match("^([^:]+):?(%d*)$")
  end
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
  local bracketed = host:find(":", 1, true) and ("[" .. host .. "]") or host
  local host_header = bracketed
  if port ~= default_port[scheme] then
    host_header = bracketed .. ":" .. port
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

-- Splits a request target into path and query (without the '?').
function M.split_target(target)
  local path, query = target:match("^([^?]*)%??(.*)$")
  return path, query
end

return M
