-- wsuv.conn: the waiting methods of a connection.
--
-- Design criteria:
-- * The C userdata is the connection: these methods are added to its
--   method table, so a connection costs no Lua table of its own.
-- * Each method loops over a non-blocking C primitive and waits through the
--   scheduler (yield in a wsuv coroutine, run the loop elsewhere).
-- * On Lua 5.4 send and receive are C methods that go on here only to wait
--   (send_finish, receive_wait): one call per message instead of two.
-- * Expected failures return nil, message, code; misuse raises.
-- * send never blocks a game loop: outside a wsuv coroutine it queues and
--   reports "buffer full" past the limit; inside one it waits for room
--   under the limit, and after queueing for the queue to drain below the
--   high-water mark.
local core = require "wsuv.core"
local sched = require "wsuv.scheduler"
local compat = require "wsuv.compat"

local Conn = core.conn_methods
local now = core.now
-- The per-message primitives, called directly rather than looked up
-- through the userdata's metatable on every message.
local try_receive, send_frame = Conn.try_receive, Conn.send_frame
local park, yield, POLL = sched.park, coroutine.yield, sched.POLL
local running = coroutine.running

local url = require "wsuv.url"

-- Per-connection Lua state lives in the C box or in weak tables, not in a
-- table per connection: an idle server connection should cost as little as
-- possible. A request is kept as one string (its raw head and the peer
-- address, conn:request_kept()) and becomes a table the first time
-- conn:request() is called.
local datas = setmetatable({}, { __mode = "k" }) -- conn -> conn:data()

local function deadline_of(timeout)
  if timeout == nil then
    return nil
  end
  if type(timeout) ~= "number" or timeout < 0 then
    error("timeout must be a non-negative number of seconds", 3)
  end
  return now() + timeout
end

local function closed_result(self)
  local _, kind, code, reason = self:try_receive()
  if kind == "closed" then
    return nil, "closed", code, reason
  end
  return nil, "closed", 1006, ""
end

-- msg, kind = conn:receive([timeout])
-- Returns the next message and "text" or "binary" (and, for a streaming
-- connection, whether it is the message's last chunk); nil, "timeout",
-- "ETIMEDOUT"; or nil, "closed", code, reason once closed. receive(0) polls.
-- One wait of receive: for news on the connection or until deadline (nil:
-- none). Returns nothing, or nil, "timeout", "ETIMEDOUT". On Lua 5.4 the C
-- conn:receive calls it (csrc/lua_conn.c, receive_loop) and takes the
-- message itself. A coroutine's stack is most of an idle connection's
-- memory, so it yields from here (M.park) rather than in sched.wait.
local function receive_wait(self, deadline)
  if deadline == nil and park(self, running()) then
    yield(POLL)
    return
  end
  local ok, err, code = sched.wait(self, deadline)
  if not ok then
    return nil, err, code
  end
end

-- The waiting part of receive (Lua 5.1 and LuaJIT), reached by a tail call.
-- It parks and yields from its own frame, not through receive_wait: LuaJIT
-- grows a coroutine's stack from 47 slots to 102 (440 bytes more per idle
-- connection) for a C call whose arguments end more than 15 slots above
-- the coroutine's first frame, or 12 when a compiled trace calls it (the
-- trace stitches in a 3-slot frame). Under receive_wait, the bench echo
-- handler's coroutine.running sat at 16; here it sits at 11.
local function wait_message(self, timeout, deadline)
  while true do
    if timeout == 0 then
      return nil, "timeout", "ETIMEDOUT"
    end
    if deadline == nil and park(self, running()) then
      yield(POLL)
    else
      local ok, err, code = sched.wait(self, deadline)
      if not ok then
        return nil, err, code
      end
    end
    local data, kind, a, b = try_receive(self)
    if kind ~= "again" then
      return data, kind, a, b
    end
  end
end

function Conn:receive(timeout)
  local deadline = timeout and deadline_of(timeout)
  local data, kind, a, b = try_receive(self)
  if kind ~= "again" then
    return data, kind, a, b
  end
  return wait_message(self, timeout, deadline)
end

-- for msg, kind in conn:messages() do ... end: until the connection closes.
-- Plain Lua 5.1 cannot yield inside a for iterator (LuaJIT and 5.2+ can):
-- there a wait inside a wsuv coroutine raises a clear error instead.
function Conn:messages()
  return function()
    if not compat.yieldable_pcall and sched.in_scheduler() then
      local data, kind, fin = self:try_receive()
      if data then
        return data, kind, fin
      elseif kind == "again" then
        error("conn:messages() cannot wait inside a for loop on Lua 5.1; "
          .. "use `while true do local msg = conn:receive() ... end`", 2)
      end
      return nil
    end
    local data, kind, fin = self:receive()
    if data then
      return data, kind, fin
    end
  end
end

-- for msg, kind in conn:poll() do ... end: what has arrived, never waits.
function Conn:poll()
  return function()
    local data, kind, fin = self:try_receive()
    if data then
      return data, kind, fin
    end
  end
end

-- In a wsuv coroutine, waits while more than high_water bytes are queued
-- (with empty, until nothing is).
local function wait_drain(self, empty)
  while true do
    local queued, high = self:queued(empty)
    if queued <= (empty and 0 or high) then
      return true
    end
    local st = self:state()
    if st ~= "open" then
      return closed_result(self)
    end
    sched.wait(self)
  end
end

-- After a frame went into the queue: in a coroutine, wait while the queue
-- is over high_water (one frame may overshoot it); elsewhere, write now, as
-- nobody else will run the loop soon.
local function after_send(self, over)
  if over then
    if sched.in_scheduler() then
      return wait_drain(self)
    end
  elseif sched.current then
    return true -- inside a wsuv coroutine: the loop writes when it yields
  end
  core.flush()
  return true
end

-- After send_frame refused a frame (err, code): for "buffer full", in a
-- wsuv coroutine, a frame that fits under max_queued waits until the queue
-- is empty and goes then; only a frame larger than max_queued itself stays
-- "buffer full" there. (Without this, an echo of messages near max_queued
-- lost one whenever the tail of the one before was still queued.) Any
-- other refusal is returned as it is.
local function send_when_room(self, data, kind, fin, plain, err, code)
  if code ~= "EBUFFULL" or not sched.in_scheduler() then
    return nil, err, code
  end
  local _, _, max = self:queued()
  if #data > max then
    return nil, err, code
  end
  while true do
    local ok, werr, wcode = wait_drain(self, true)
    if not ok then
      return nil, werr, wcode
    end
    local sok, over, scode = send_frame(self, data, kind, fin, plain)
    if sok or scode ~= "EBUFFULL" then
      return sok, over, scode
    end
  end
end

-- The rest of conn:send once send_frame has queued the frame (ok, over) or
-- refused it (nil, err, code): wait for room, wait for the queue to drain,
-- or write now outside the scheduler.
local function send_finish(self, data, kind, plain, ok, over, code)
  if not ok then
    ok, over, code = send_when_room(self, data, kind, true, plain, over, code)
    if not ok then
      return nil, over, code
    end
  end
  return after_send(self, over)
end

-- ok = conn:send(data[, kind[, opts]]) with kind "text" (default) or
-- "binary". Returns true, or nil, "buffer full" | "closed", code.
function Conn:send(data, kind, opts)
  if kind ~= nil and kind ~= "text" and kind ~= "binary" then
    error("send: kind must be \"text\" or \"binary\"", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("send: options must be a table", 2)
  end
  local plain = opts and opts.compress == false
  local ok, over, code = send_frame(self, data, kind or "text", true, plain)
  if ok and not over and sched.current then
    return true -- the usual case: the loop writes when the coroutine yields
  end
  if over == false and not ok then -- send_frame checks the type: no type() per message
    error("send: data must be a string, got " .. type(data), 2)
  end
  return send_finish(self, data, kind or "text", plain, ok, over, code)
end

-- Lua 5.4: send and receive are C methods, one call per message where
-- these make two (csrc/lua_conn.c, l_conn_send_message); they go on in
-- send_finish and receive_wait when there is more to do. Lua 5.1 and
-- LuaJIT keep the Lua methods: C there cannot call Lua code that yields.
if core._fast_methods then
  Conn.send, Conn.receive = core._fast_methods(send_finish, receive_wait, sched)
end

-- LuaJIT: the usual message goes through the FFI (csrc/lua_conn.c,
-- ffi_send), which a compiled trace calls with no Lua frame: as a C
-- function, send_frame sat above the 12 slots wait_message describes, and
-- each message left the trace to call it. Anything else (options, a
-- refusal to wait on, a large message a server pins) goes the Lua way.
-- With the JIT off (`luajit -joff`, iOS) the FFI call is interpreted and
-- costs 8% of (2), but the Lua way's send_frame sits high enough there to
-- grow the stack on the first echo (2,686 bytes per idle connection against
-- 2,019): one path on LuaJIT, the one CI runs, is kept for both.
local has_ffi, ffi = pcall(require, "ffi")
if rawget(_G, "jit") and has_ffi and core._ffi_send then
  local ffi_send = ffi.cast("int (**)(void *, const char *, ptrdiff_t)", core._ffi_send)[0]
  local conn_mt, send_lua, send_failed = core.conn_metatable, Conn.send, Conn._send_failed
  function Conn:send(data, kind, opts)
    if opts == nil and type(data) == "string" and getmetatable(self) == conn_mt
      and (kind == nil or kind == "text" or kind == "binary") then
      local r = ffi_send(self, data, kind == "binary" and -1 - #data or #data)
      if r == 0 and sched.current then
        return true -- the usual case: the loop writes when the coroutine yields
      elseif r == 0 or r == 1 then
        return after_send(self, r == 1)
      elseif r ~= -1 then
        local _, err, code = send_failed(self, r)
        return send_finish(self, data, kind or "text", false, nil, err, code)
      end
    end
    return send_lua(self, data, kind, opts)
  end
end

-- Streaming send: w = conn:writer([kind[, opts]]); w:write(chunk) ...;
-- w:finish([last]) sends a message whose size is not known in advance, one
-- frame per chunk. opts.compress = false sends it uncompressed.
function Conn:writer(kind, opts)
  kind = kind or "binary"
  if kind ~= "text" and kind ~= "binary" then
    error("writer: kind must be \"text\" or \"binary\"", 2)
  end
  local conn, started, done = self, false, false
  local w = {}
  local function frame(chunk, fin)
    if done then
      error("writer: message already finished", 3)
    end
    if type(chunk) ~= "string" then
      error("writer: chunk must be a string", 3)
    end
    local plain = not started and opts and opts.compress == false
    local fkind = started and "continuation" or kind
    local ok, over, code = conn:send_frame(chunk, fkind, fin, plain)
    if not ok then
      ok, over, code = send_when_room(conn, chunk, fkind, fin, plain, over, code)
      if not ok then
        return nil, over, code
      end
    end
    started = true
    done = fin
    return after_send(conn, over)
  end
  function w.write(_, chunk)
    return frame(chunk, false)
  end
  function w.finish(_, chunk)
    return frame(chunk or "", true)
  end
  return w
end

-- rtt = conn:ping([data[, timeout]]): seconds until the matching pong.
function Conn:ping(data, timeout)
  if data == nil then
    data = core.random(8)
  elseif type(data) ~= "string" or #data > 125 then
    error("ping: data must be a string of at most 125 bytes", 2)
  end
  local deadline = deadline_of(timeout or 30)
  local t0 = now()
  local ok, err, code = self:send_frame(data, "ping", true)
  if not ok then
    return nil, err, code
  end
  after_send(self)
  while true do
    local _, last = self:pongs()
    if last == data then
      return now() - t0
    end
    if self:state() ~= "open" then
      return closed_result(self)
    end
    ok, err, code = sched.wait(self, deadline)
    if not ok then
      return nil, err, code
    end
  end
end

-- ok, code, reason = conn:close([code[, reason]]): runs the closing
-- handshake (bounded by close_timeout) and returns the peer's code.
-- close without the wait: answers, starts the closing handshake or drops
-- the socket, whichever the state calls for, and writes it out.
local function begin_close(self, code, reason)
  local st = self:state()
  if st == "request" then
    self:respond(503, nil, "closed")
  elseif st == "open" or st == "closing" then
    -- "closing" may be a peer's close whose reply waits until we have read
    -- what came before it: closing means we are done reading, so answer.
    self:start_close(code or 1000, reason or "")
  elseif st ~= "closed" then
    self:abort()
  end
  after_send(self)
end

function Conn:close(code, reason)
  if code ~= nil and type(code) ~= "number" then
    error("close: code must be a number", 2)
  end
  if reason ~= nil and type(reason) ~= "string" then
    error("close: reason must be a string", 2)
  end
  begin_close(self, code, reason)
  while self:state() ~= "closed" do
    sched.wait(self)
  end
  -- The peer's code without taking a message: unread ones stay readable.
  return true, self:close_status()
end

-- For Lua 5.4's `local conn <close> = ...`.
core.conn_metatable.__close = function(self)
  if self:state() ~= "closed" then
    self:close()
  end
end

local M = {}

-- deadline = M.deadline_of(timeout): for waiting methods of other objects
-- (lua/wsuv/reconnect.lua); raises at their caller for a bad timeout.
M.deadline_of = deadline_of

local function lower_headers(list)
  local map = {}
  for i = 1, #list, 2 do
    local name = list[i]:lower()
    local value = list[i + 1]
    map[name] = map[name] and (map[name] .. ", " .. value) or value
  end
  return map
end

-- name (lower case) -> value of a flat header list {name, value, ...}; a
-- repeated header's values joined with ", " (a response's headers too).
M.header_map = lower_headers

-- The comma-separated tokens of a header value, trimmed.
function M.tokens(value)
  local out = {}
  for tok in (value or ""):gmatch("[^,]+") do
    tok = tok:match("^%s*(.-)%s*$")
    if tok ~= "" then
      out[#out + 1] = tok
    end
  end
  return out
end

-- The request table from a record (see Conn:request in the README).
function M.build_request(record)
  local a = record:find("\0", 1, true)
  local b = record:find("\0", a + 1, true)
  local ip, port, raw = record:sub(1, a - 1), record:sub(a + 1, b - 1), record:sub(b + 1)
  local method, target, minor, list, upgrade, why = core.parse_request(raw)
  local path, query = url.split_target(target)
  local headers = lower_headers(list)
  return {
    method = method,
    target = target,
    path = path,
    query = query,
    version = "1." .. minor,
    headers = headers,
    header_list = list,
    upgrade = upgrade == true,
    refuse_status = type(upgrade) == "number" and upgrade or nil,
    refuse_reason = why,
    protocols = M.tokens(headers["sec-websocket-protocol"]),
    origin = headers.origin,
    remote_addr = ip ~= "" and ip or nil,
    remote_port = tonumber(port),
  }
end

-- request = conn:request(): the client's HTTP request (server side).
function Conn:request()
  local r = self:request_kept()
  if type(r) == "string" then
    r = M.build_request(r)
    self:request_kept(r)
  end
  return r
end

-- t = conn:data(): a table for the application's own per-connection state.
function Conn:data()
  local d = datas[self]
  if not d then
    d = {}
    datas[self] = d
  end
  return d
end

M.begin_close = begin_close

-- Waits until a client connection is open; returns conn or nil, msg, code,
-- response (the server's refusal: status, reason, headers, body).
function M.wait_open(c)
  while true do
    local st, msg, ename = c:state()
    if st == "open" or st == "closing" then
      return c
    end
    if st == "closed" then
      return nil, msg or "connect: connection closed", ename or "ECLOSED", c:response()
    end
    sched.wait(c)
  end
end

return M
