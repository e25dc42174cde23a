-- wsuv.reconnect: a client connection that connects again by itself, with
-- exponential backoff and jitter, when the server goes away
-- (wsuv.connect(url, {reconnect = ...})).
--
-- Design criteria:
-- * The first connect fails as a plain one does (nil, message, code): a
--   wrong URL or a server that is not there shows at once. Reconnecting
--   starts only after a connection was open.
-- * Only drops that may heal are retried: the TCP connection lost (1006),
--   the server going away or restarting (1001, 1011-1014), and failed
--   attempts other than a bad URL or a 4xx answer (but 408 and 429). A
--   refusal's Retry-After is honoured, up to max_delay. A normal close (1000,
--   1005) or a protocol complaint (1002, 1003, 1007-1010) ends it, as
--   retrying would only repeat it. reconnect.retry(code, reason) overrides.
-- * No received message is lost: what the dropped connection delivered is
--   read before the new connection's messages.
-- * Sends are not queued across a drop: while reconnecting send returns
--   nil, "reconnecting", "EAGAIN", and the application decides what to send
--   again (on_reconnect runs once each new connection is open).
-- * A drop is noticed by the next call on the connection: a game loop's
--   poll() each frame, a coroutine waiting in receive(), a send, state().
local core = require "wsuv.core"
local sched = require "wsuv.scheduler"
local conn_mod = require "wsuv.conn"
local deadline_of = conn_mod.deadline_of

local Conn = core.conn_methods
local now = core.now

local R = {}
R.__name = "wsuv.reconnecting"

local RETRY_CODES = { [1001] = true, [1006] = true, [1011] = true, [1012] = true,
  [1013] = true, [1014] = true }

local function default_retry(code)
  return RETRY_CODES[code] == true
end

-- Whether a failed attempt (code, the server's response) may succeed later.
local function attempt_may_heal(code, response)
  if code == "EINVAL" then
    return false
  end
  local status = response and response.status
  return not (status and status >= 400 and status < 500 and status ~= 408 and status ~= 429)
end

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9,
  Oct = 10, Nov = 11, Dec = 12 }

-- Seconds since the epoch of a UTC civil date (days_from_civil, after
-- Howard Hinnant): os.time would read the fields as local time.
local function utc_seconds(y, m, d, hh, mm, ss)
  y = m <= 2 and y - 1 or y
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * (m > 2 and m - 3 or m + 9) + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return ((era * 146097 + doe - 719468) * 24 + hh) * 3600 + mm * 60 + ss
end

-- The seconds a refusal's Retry-After asks to wait (RFC 9110 10.2.3:
-- delta-seconds or an IMF-fixdate), or nil.
local function retry_after(response)
  local v = response and conn_mod.header_map(response.headers)["retry-after"]
  if not v then
    return nil
  end
  v = v:match("^%s*(.-)%s*$")
  if v:match("^%d+$") then
    return tonumber(v)
  end
  local d, mon, y, hh, mm, ss =
    v:match("^%a%a%a, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  if d and MONTHS[mon] then
    local at = utc_seconds(tonumber(y), MONTHS[mon], tonumber(d), tonumber(hh), tonumber(mm),
      tonumber(ss))
    return math.max(at - os.time(), 0)
  end
  return nil
end

-- A number in [0, 1) from OpenSSL's generator: math.random starts from the
-- same seed in every Lua 5.1 and LuaJIT process, so clients restarted
-- together would wait alike, the herd that jitter is there to spread.
local function unit_random()
  local a, b, c = core.random(3):byte(1, 3)
  return (a * 65536 + b * 256 + c) / 16777216
end

local M = {}

local POLICY = {
  delay = 0.5, -- seconds before the first attempt
  max_delay = 30, -- the delay doubles (factor) up to this
  factor = 2,
  jitter = 0.5, -- each wait is delay * (1 - jitter * random)
}
-- Each number's range: its least value, its greatest, and how to say it.
local RANGE = {
  delay = { 0, math.huge, ">= 0" },
  max_delay = { 0, math.huge, ">= 0" },
  factor = { 1, math.huge, ">= 1" },
  jitter = { 0, 1, "in 0..1" },
}

-- The policy from wsuv.connect's reconnect option (true or a table);
-- raises for misuse.
function M.policy(opt)
  if opt == true then
    opt = {}
  elseif type(opt) ~= "table" then
    error("connect: reconnect must be true or a table", 3)
  end
  local p = {}
  for k, default in pairs(POLICY) do
    local v = opt[k]
    local r = RANGE[k]
    if v == nil then
      v = default
    elseif type(v) ~= "number" or v < r[1] or v > r[2] then
      error(("connect: reconnect.%s must be a number %s"):format(k, r[3]), 3)
    end
    p[k] = v
  end
  if opt.attempts ~= nil and (type(opt.attempts) ~= "number" or opt.attempts < 1) then
    error("connect: reconnect.attempts must be a number >= 1", 3)
  end
  for _, k in ipairs({ "on_reconnect", "retry" }) do
    if opt[k] ~= nil and type(opt[k]) ~= "function" then
      error(("connect: reconnect.%s must be a function"):format(k), 3)
    end
  end
  p.attempts, p.on_reconnect, p.retry = opt.attempts, opt.on_reconnect, opt.retry or default_retry
  return p
end

-- rc = M.wrap(conn, connect, policy): conn is open; connect() makes a new
-- connection (as wsuv.connect without reconnect).
function M.wrap(conn, connect, policy)
  return setmetatable({
    _cur = conn, -- the connection in use
    _old = nil, -- a dropped connection whose messages are still to read
    _state = "open", -- "open", "reconnecting" or "closed"
    _connect = connect,
    _policy = policy,
    _wake = {}, -- notified to cut the reconnector's sleep short
    _reconnects = 0,
  }, R)
end

-- Ends it: later calls report "closed", code, reason.
local function finish(self, code, reason)
  self._state, self._code, self._reason = "closed", code, reason
  sched.notify(self)
  sched.notify(self._wake)
end

-- The reconnector: waits, tries, waits longer, until a connection is open,
-- attempts run out, an attempt cannot heal, or close() ends it.
local function reconnect_loop(self)
  local p, delay, attempt = self._policy, self._policy.delay, 0
  local asked = 0 -- what the last refusal's Retry-After asked, up to max_delay
  while self._state == "reconnecting" do
    attempt = attempt + 1
    if p.attempts and attempt > p.attempts then
      return finish(self, self._code, ("gave up after %d attempts: %s"):format(p.attempts,
        self._reason))
    end
    sched.wait(self._wake, now() + math.max(delay * (1 - p.jitter * unit_random()), asked))
    if self._state ~= "reconnecting" then
      return
    end
    local c, err, code, response = self._connect()
    if c and self._state ~= "reconnecting" then
      c:close() -- close() ran meanwhile
      return
    elseif c then
      self._cur, self._state = c, "open"
      self._reconnects = self._reconnects + 1
      sched.notify(self)
      if p.on_reconnect then
        p.on_reconnect(self)
      end
      return
    end
    self._reason = err
    if not attempt_may_heal(code, response) then
      return finish(self, 1006, err)
    end
    delay = math.min(delay * p.factor, p.max_delay)
    asked = math.min(retry_after(response) or 0, p.max_delay)
  end
end

-- The current connection has closed with code, reason (and may still hold
-- messages): reconnect, or end when the drop will not heal.
local function dropped(self, code, reason)
  local cur = self._cur
  self._old, self._cur = cur, nil
  code = code or 1006
  if not self._policy.retry(code, reason) then
    return finish(self, code, reason)
  end
  self._state, self._code, self._reason = "reconnecting", code, reason
  sched.spawn(reconnect_loop, self)
end

-- Notices a drop of the current connection (without taking a message).
local function check(self)
  local cur = self._cur
  if self._state == "open" and cur:state() == "closed" then
    dropped(self, cur:close_status())
  end
end

-- data, kind, ... = rc:try_receive(): as conn:try_receive ("again" while
-- reconnecting), so conn:poll() and conn:messages() serve as they are.
function R:try_receive()
  local old = self._old
  if old then -- the dropped connection's messages first
    local data, kind, a, b = old:try_receive()
    if kind ~= "closed" and kind ~= "again" then
      return data, kind, a, b
    end
    self._old = nil
  end
  local st = self._state
  if st == "closed" then
    return nil, "closed", self._code, self._reason
  elseif st == "reconnecting" then
    return nil, "again"
  end
  local data, kind, a, b = self._cur:try_receive()
  if kind == "closed" then
    dropped(self, a, b)
    return self:try_receive()
  end
  return data, kind, a, b
end

-- msg, kind = rc:receive([timeout]): waits across reconnections.
function R:receive(timeout)
  local deadline = timeout and deadline_of(timeout)
  while true do
    local data, kind, a, b = self:try_receive()
    if kind ~= "again" then
      return data, kind, a, b
    end
    if timeout == 0 then
      return nil, "timeout", "ETIMEDOUT"
    end
    local ok, err, code = sched.wait(self._state == "open" and self._cur or self, deadline)
    if not ok then
      return nil, err, code
    end
  end
end

R.poll = Conn.poll
R.messages = Conn.messages

local function unavailable(self)
  if self._state == "closed" then
    return nil, "closed", self._code, self._reason
  end
  return nil, "reconnecting", "EAGAIN"
end

-- Method key of the connection in use, once a drop has been noticed; while
-- there is none, what unavailable says.
local function on_open(self, key, ...)
  check(self)
  if self._state ~= "open" then
    return unavailable(self)
  end
  local cur = self._cur
  return cur[key](cur, ...)
end

-- ok = rc:send(data[, kind[, opts]]), as conn:send; nil, "reconnecting",
-- "EAGAIN" while there is no connection (nothing is queued for later).
function R:send(...)
  return on_open(self, "send", ...)
end

-- seconds = rc:ping([data[, timeout]]), as conn:ping.
function R:ping(...)
  return on_open(self, "ping", ...)
end

-- rc:close([code[, reason]]): stops reconnecting and closes the connection.
function R:close(code, reason)
  local cur, st = self._cur, self._state
  finish(self, code or 1000, reason or "")
  if st == "open" then
    local ok, peer_code, peer_reason = cur:close(code, reason)
    self._code, self._reason = peer_code, peer_reason
    return ok, peer_code, peer_reason
  end
  return true
end

-- "open", "reconnecting" or "closed"; asking notices a drop.
function R:state()
  check(self)
  return self._state
end

-- The connection in use now (nil while reconnecting), and how many times
-- it has reconnected.
function R:current()
  return self._cur, self._reconnects
end

function R:__tostring()
  return ("wsuv.reconnecting{%s; %d reconnects}"):format(self._state, self._reconnects)
end

-- Any other connection method (request headers, tls_info, queued, flush,
-- writer, ...) goes to the connection in use.
R.__index = function(_, key)
  local m = R[key]
  if m ~= nil or Conn[key] == nil then
    return m
  end
  return function(self, ...)
    local cur = self._cur
    if not cur then
      return unavailable(self)
    end
    return cur[key](cur, ...)
  end
end

return M
