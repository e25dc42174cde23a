-- wsuv: WebSocket (RFC 6455) for Lua over libuv.
--
-- Design criteria:
-- * One obvious way: connect/listen, then send/receive/close on a
--   connection. Calls that wait yield inside a wsuv coroutine and run the
--   loop anywhere else (main chunk, REPL), so the same code prototypes
--   interactively and serves thousands of connections.
-- * Never block a game frame: step() returns at once, conn:poll() never waits.
-- * Expected failures return nil, message, code; misuse raises.
-- * Every limit has a safe default and an option.
local core = require "wsuv.core"
local sched = require "wsuv.scheduler"
local url = require "wsuv.url"
local conn_mod = require "wsuv.conn"
local server = require "wsuv.server"
local room = require "wsuv.room"
local reconnect = require "wsuv.reconnect"

local M = {
  _VERSION = core.version,
  core = core,
}

M.spawn = sched.spawn
M.run = sched.run
M.step = sched.step
M.sleep = sched.sleep
M.now = sched.now
M.listen = server.listen
M.room = room.new

-- limit, held = wsuv.block_cache([limit]): the block cache keeps big blocks
-- (128 KiB and more) that Lua frees, up to limit bytes (32 MiB by default),
-- for the next big string: a received big message then costs no fresh
-- pages. It goes in with the first big message and gives back what it holds
-- when unused for a while; 0 turns it off.
function M.block_cache(limit)
  if limit ~= nil and (type(limit) ~= "number" or limit < 0) then
    error("block_cache: limit must be a number >= 0", 2)
  end
  return core.block_cache(limit)
end

-- Sets the function that reports errors raised inside coroutines:
-- fn(co, err). The default writes the traceback to stderr.
function M.on_error(fn)
  if type(fn) ~= "function" then
    error("on_error: expected a function", 2)
  end
  sched.on_error = fn
end

local limit_keys = {
  "max_message", "max_frame", "max_head", "max_queued", "high_water",
  "max_unread", "connect_timeout", "handshake_timeout", "close_timeout",
  "ping_interval", "ping_timeout", "idle_timeout", "stream",
}

-- conn = wsuv.connect(url[, opts]) -> conn | nil, msg, code[, response]
-- With opts.reconnect, conn is a wsuv.reconnecting (lua/wsuv/reconnect.lua).
function M.connect(address, opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("connect: options must be a table", 2)
  end
  opts = opts or {}
  if opts.reconnect then
    local policy = reconnect.policy(opts.reconnect)
    local plain = {}
    for k, v in pairs(opts) do
      plain[k] = v
    end
    plain.reconnect = nil
    local function again()
      return M.connect(address, plain)
    end
    local c, err, code, response = again()
    if not c then
      return nil, err, code, response
    end
    return reconnect.wrap(c, again, policy)
  end
  local u, err = url.parse(address)
  if not u then
    return nil, "connect: " .. err, "EINVAL"
  end
  local tls = opts.tls
  if tls ~= nil and type(tls) ~= "table" then
    error("connect: tls must be a table", 2)
  end
  local protocols = opts.protocols
  if protocols ~= nil then
    if type(protocols) ~= "table" then
      error("connect: protocols must be a list of strings", 2)
    end
    protocols = table.concat(protocols, ", ")
    if protocols == "" then
      protocols = nil
    end
  end
  local copts = {
    host_header = u.host_header,
    target = u.target,
    origin = opts.origin,
    protocols = protocols,
    headers = opts.headers,
    tls = u.secure and (tls or {}) or nil,
    compression = opts.compression,
  }
  local proxy = opts.proxy
  if proxy == true then
    proxy = url.proxy_from_env(u, os.getenv)
  end
  if proxy ~= nil and proxy ~= false then
    local p, perr = url.parse_proxy(proxy)
    if not p then
      return nil, "connect: " .. perr, "EINVAL"
    end
    copts.proxy_host, copts.proxy_port, copts.proxy_credentials = p.host, p.port, p.credentials
    copts.proxy_authority = url.bracketed(u.host) .. ":" .. u.port
  end
  for _, k in ipairs(limit_keys) do
    copts[k] = opts[k]
  end
  if opts.timeout then
    copts.connect_timeout = copts.connect_timeout or opts.timeout
    copts.handshake_timeout = copts.handshake_timeout or opts.timeout
  end
  local c, cerr, code = core.connect(u.host, u.port, copts)
  if not c then
    return nil, cerr, code
  end
  return conn_mod.wait_open(c)
end

return M
