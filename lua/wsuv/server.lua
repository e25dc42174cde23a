-- wsuv.server: listeners, the opening handshake's policy, and fan-out.
--
-- Design criteria:
-- * C parses and validates the request; every decision (path, origin,
--   subprotocol, authentication, plain HTTP answers) is Lua, run in its own
--   coroutine per request so a check may wait on another service.
-- * One coroutine per connection: on_connect(conn) runs in a fresh one,
--   not in the one that decided its request (see handle), and the
--   connection is closed when it returns.
-- * broadcast encodes once and pins the payload once for every receiver.
-- * close() is graceful and bounded: 1001 to every client, then wait.
local core = require "wsuv.core"
local sched = require "wsuv.scheduler"
local url = require "wsuv.url"
local conn_mod = require "wsuv.conn"
local compat = require "wsuv.compat"
local room = require "wsuv.room"

local Server = {}
Server.__index = Server
Server.__name = "wsuv.server"

-- The request is decided from a brief view of it (target, upgrade,
-- subprotocols, origin); the full request table is built only for hooks that
-- take it, or later by conn:request(), so an accepted connection keeps one
-- string instead of a table of headers.
local function choose_protocol(opts, offered, c)
  local p = opts.protocols
  if p == nil then
    return nil
  end
  local theirs = conn_mod.tokens(offered)
  if type(p) == "function" then
    return p(theirs, c:request())
  end
  -- Our order is the preference; the client's list says what it speaks.
  for _, ours in ipairs(p) do
    for _, t in ipairs(theirs) do
      if ours == t then
        return ours
      end
    end
  end
  return nil
end

local function origin_allowed(opts, origin, c)
  local o = opts.origins
  if o == nil then
    return true
  end
  if type(o) == "function" then
    return o(origin, c:request()) and true or false
  end
  for _, allowed in ipairs(o) do
    if allowed == origin then
      return true
    end
  end
  return false
end

-- Answers a request that is not upgraded; false: the connection is done.
local function respond(c, status, headers, body)
  c:respond(status, headers, body or "")
  return false
end

-- An application's handler raised while it served c: report it, and close
-- c with 1011 if it is still open.
local function handler_failed(c, what, err)
  io.stderr:write("wsuv: error in ", what, ": ", tostring(err), "\n")
  if c and c:state() == "open" then
    c:start_close(1011, "internal error")
  end
end

-- The guard of a connection's handler (sched.spawn_guarded): once it has
-- returned, close as conn:close would but without waiting, as its
-- coroutine has ended; after an error, 1011 if still open.
local function handler_done(c, ok, err)
  if ok then
    return conn_mod.begin_close(c, 1000, "")
  end
  handler_failed(c, "on_connect", err)
end

-- A FIFO of connections, q[q.head .. q.tail]: the accepted requests
-- waiting for a decider, and the on_message connections with news.
local function new_queue()
  return { head = 1, tail = 0 }
end

local function push(q, c)
  local t = q.tail + 1
  q.tail = t
  q[t] = c
end

-- The oldest entry, or nil when empty.
local function take(q)
  local h = q.head
  if h > q.tail then
    return nil
  end
  local c = q[h]
  q[h] = nil
  if h == q.tail then
    q.head, q.tail = 1, 0 -- emptied: reuse the array from its start
  else
    q.head = h + 1
  end
  return c
end

local function is_empty(q)
  return q.head > q.tail
end

-- ---- on_message: connections without a coroutine of their own ----------
-- The scheduler tells the server of each connection with news
-- (Server:news); the connections queue, and at the end of the pass one
-- worker coroutine takes them in turn and hands every message that has
-- arrived to on_message. A handler that waits (send under backpressure,
-- a ping, a sleep) keeps its worker, and the next worker takes the rest of
-- the queue; a connection is served by one worker at a time, so its
-- messages are handled in order. Idle workers are kept, a few of them.
local try_receive = core.conn_methods.try_receive
local POLL, yield, running = sched.POLL, coroutine.yield, coroutine.running
local STOP = {} -- resumes an idle worker to end it
local MAX_IDLE_WORKERS = 4

-- Hands c's messages to on_message until none is left, then on_close once
-- it is closed.
local function serve(self, w, c)
  w.conn = c
  local on_message = self.opts.on_message
  local data, kind, a, b = try_receive(c)
  while data do
    on_message(c, data, kind, a)
    data, kind, a, b = try_receive(c)
  end
  self.queued[c] = nil
  w.conn = nil
  if kind ~= "again" then -- closed: no more news from it
    sched.unwatch(c)
    local on_close = self.opts.on_close
    if on_close then
      on_close(c, a, b)
    end
  end
end

local function worker(self, w)
  local q, idle = self.evq, self.idle_workers
  while true do
    local c = take(q)
    if c then
      serve(self, w, c)
    elseif #idle >= MAX_IDLE_WORKERS or self._s:closed() then
      return
    else
      idle[#idle + 1] = running()
      if yield(POLL) == STOP then
        return
      end
    end
  end
end

-- The guard of a worker: an error in on_message or on_close is reported,
-- and the connection being served is closed with 1011; another worker
-- takes the rest of the queue.
local function worker_done(w, ok, err)
  if ok then
    return
  end
  local self, c = w.server, w.conn
  if c then
    self.queued[c] = nil
  end
  handler_failed(c, "on_message or on_close", err)
  self:touch()
end

function Server:touch()
  if not self.touched then
    self.touched = true
    sched.touch(self)
  end
end

-- (scheduler) news on connection c: queue it unless it is queued or being
-- served already (its worker reads again before it lets go).
function Server:news(c)
  local queued = self.queued
  if queued[c] then
    return
  end
  queued[c] = true
  push(self.evq, c)
  self:touch()
end

-- (scheduler) runs workers until the queue is empty: an idle one first,
-- else a new one; a worker whose handler waits leaves the rest to the next.
function Server:drive()
  self.touched = false
  local idle = self.idle_workers
  while not is_empty(self.evq) do
    local co = idle[#idle]
    if co then
      idle[#idle] = nil
      sched.resume(co)
    else
      local w = { server = self }
      sched.start(worker_done, w, worker, self, w)
    end
  end
end

-- Starts delivering an accepted connection's messages to on_message, after
-- on_open (which may wait) has returned.
local function open_events(self, c)
  local on_open = self.opts.on_open
  if on_open then
    local ok, err = compat.pcall(on_open, c)
    if not ok then
      handler_failed(c, "on_open", err)
    end
  end
  sched.watch(c, self)
  self:news(c) -- what arrived during on_open, or its close
end

-- Decides one request: true once accepted, else after answering it.
local function decide(self, c)
  local opts = self.opts
  -- The connection keeps the request record (peer address and port, raw
  -- head) that request_brief made; conn:request() builds the table from it
  -- when first asked.
  local target, upgrade, _, offered, origin = c:request_brief()
  if upgrade ~= true then
    local req = c:request()
    if req.refuse_status then
      return respond(c, req.refuse_status, nil, req.refuse_reason .. "\n")
    end
    if opts.http then
      local ok, status, headers, body = compat.pcall(opts.http, req)
      if not ok then
        io.stderr:write("wsuv: error in http hook: ", tostring(status), "\n")
        return respond(c, 500, nil, "internal error\n")
      end
      return respond(c, status or 200, headers, body)
    end
    return respond(c, 426, nil, "this is a WebSocket endpoint\n")
  end
  if opts.path and url.split_target(target) ~= opts.path then
    return respond(c, 404, nil, "not found\n")
  end
  if not origin_allowed(opts, origin, c) then
    return respond(c, 403, nil, "origin not allowed\n")
  end
  if opts.check then
    local ok, allow, status, headers, body = compat.pcall(opts.check, c:request())
    if not ok then
      io.stderr:write("wsuv: error in check hook: ", tostring(allow), "\n")
      return respond(c, 500, nil, "internal error\n")
    end
    if not allow then
      return respond(c, status or 403, headers, body or "forbidden\n")
    end
  end
  local protocol = choose_protocol(opts, offered, c)
  return c:accept(protocol, nil, opts.response_headers)
end

-- Where a handler runs: in a fresh coroutine, not in the one that decided
-- (hooks, C calls), whose stack the deciding left grown. Lua 5.4 never
-- shrinks a stack below 3x what is in use, nor Lua 5.1 one of 85 slots:
-- per idle connection that kept 1,360 bytes of stack instead of 720 on
-- 5.4, and cost 3,779-3,807 bytes in all against 2,960-2,980 on 5.1.
-- (LuaJIT measures the same either way.) Deciders are pooled, so a
-- handshake still creates one coroutine.

local function handle(self, c)
  if not decide(self, c) then
    return
  end
  if self.opts.on_message then
    return open_events(self, c)
  end
  if self.opts.on_connect then
    -- No xpcall under the handler: the guard reports an error and closes
    -- the connection once the coroutine has ended.
    sched.spawn_guarded(handler_done, c, self.opts.on_connect, c)
    return
  end
  local q = self.accepted
  q[#q + 1] = c
  sched.notify(self)
end

-- A decider takes accepted connections from self.pending one at a time,
-- decides each and starts its handler; idle deciders wait for more, so a
-- handshake creates one coroutine (the handler's, none with on_message).
-- * self.pending is a queue (new_queue): table.remove(t, 1) moved the whole
--   array per handshake.
-- * self.free counts deciders that will take from the queue without being
--   asked again: idle (waiting on the queue) or started and not yet run.
-- * A decider that is about to decide while more wait behind it makes sure
--   another decider will take them, in case its handshake waits (a hook):
--   it starts one when none is free. So there are about as many deciders as
--   handshakes that wait at once, not one per connection of a burst.
-- * Notifying the queue wakes every idle decider, once per pass however
--   many connections it got (sched.notify).
-- * At most MAX_IDLE_DECIDERS stay idle; the others end.
local decider
local MAX_IDLE_DECIDERS = 4

-- Makes sure some decider will take what is queued.
local function call_decider(self)
  if self.free == 0 then
    self.free = 1
    sched.spawn(decider, self)
  else
    sched.notify(self.pending)
  end
end

function decider(self)
  self.free = self.free - 1
  while true do
    local c = take(self.pending)
    if c then
      if not is_empty(self.pending) then
        call_decider(self)
      end
      handle(self, c)
    elseif self._s:closed() then
      return
    else
      if self.free >= MAX_IDLE_DECIDERS then
        return -- enough wait already (a burst of hooks that waited)
      end
      self.free = self.free + 1
      sched.wait(self.pending)
      self.free = self.free - 1
    end
  end
end

local function acceptor(self)
  local s = self._s
  while not s:closed() do
    local c = s:try_accept()
    if c then
      push(self.pending, c)
      call_decider(self)
    else
      sched.wait(s)
    end
  end
  sched.notify(self.pending) -- idle deciders end
end

local M = {}

-- server = wsuv.listen{host, port, path, protocols, origins, check, http,
-- on_connect, limits...} -> server | nil, msg, code
function M.listen(opts)
  if type(opts) ~= "table" then
    error("listen: expected an options table", 2)
  end
  for _, k in ipairs({ "on_connect", "on_message", "on_open", "on_close", "check", "http" }) do
    if opts[k] ~= nil and type(opts[k]) ~= "function" then
      error("listen: option '" .. k .. "' must be a function", 2)
    end
  end
  if opts.on_connect and opts.on_message then
    error("listen: on_connect and on_message exclude each other", 2)
  end
  if (opts.on_open or opts.on_close) and not opts.on_message then
    error("listen: on_open and on_close go with on_message", 2)
  end
  local s, err, code = core.listen(opts.host or "127.0.0.1", opts.port or 0, opts)
  if not s then
    return nil, err, code
  end
  local self = setmetatable({ _s = s, opts = opts, accepted = {} }, Server)
  self.pending, self.free = new_queue(), 0
  if opts.on_message then
    self.evq = new_queue()
    self.queued = setmetatable({}, { __mode = "k" }) -- conn -> queued or served
    self.idle_workers = {}
    self.touched = false
  end
  self.port = s:port()
  self.host = opts.host or "127.0.0.1"
  self.secure = opts.tls and true or false
  sched.spawn(acceptor, self)
  return self
end

-- conn = server:accept([timeout]): next upgraded connection, when no
-- on_connect handler is set. nil, "closed" once the server is closed.
function Server:accept(timeout)
  local deadline = timeout and sched.now() + timeout
  while true do
    local q = self.accepted
    if #q > 0 then
      return table.remove(q, 1)
    end
    if self._s:closed() then
      return nil, "closed", "ECLOSED"
    end
    local ok, err, code = sched.wait(self, deadline)
    if not ok then
      return nil, err, code
    end
  end
end

-- ok = server:reload_tls{cert, key[, ca, verify_client]}: new certificates for
-- the connections that follow; open ones keep theirs. nil, msg, code when
-- the files do not load (the old certificates stay in use).
function Server:reload_tls(tls)
  if type(tls) ~= "table" then
    error("reload_tls: expected a table", 2)
  end
  return self._s:set_tls(tls)
end

-- sent, skipped = server:broadcast(data[, kind[, {close_slow = bool, except = conn}]])
function Server:broadcast(data, kind, opts)
  local s = self._s
  local sent, skipped, code = room.broadcast(s.broadcast, s, data, kind, opts)
  return sent, skipped, code -- not a tail call: room.broadcast blames our caller
end

-- for conn in server:clients() do ... end
function Server:clients()
  local list, i = self._s:clients(), 0
  return function()
    i = i + 1
    return list[i]
  end
end

-- server:close([timeout]): stop listening, close every client with 1001,
-- and return once they are gone (or after timeout seconds, default 5).
function Server:close(timeout)
  local s = self._s
  -- Take the clients first: stopping the listener detaches them from it.
  local list = s:clients()
  if not s:closed() then
    s:stop()
    sched.notify(s)
    sched.notify(self)
  end
  for _, c in ipairs(list) do
    c:start_close(1001, "server closing")
  end
  for _, c in ipairs(self.accepted) do
    c:start_close(1001, "server closing")
  end
  self.accepted = {}
  core.flush()
  local deadline = sched.now() + (timeout or 5)
  for _, c in ipairs(list) do
    while c:state() ~= "closed" do
      local ok = sched.wait(c, deadline)
      if not ok then
        c:abort()
        break
      end
    end
  end
  -- on_close has run for every client (their news came during the waits):
  -- idle workers end; busy ones end once their handler returns.
  local idle = self.idle_workers
  while idle and #idle > 0 do
    local co = idle[#idle]
    idle[#idle] = nil
    sched.resume(co, STOP)
  end
  return true
end

function Server:__tostring()
  return ("wsuv.server{host=%s; port=%d; %s}"):format(self.host, self.port,
    self._s:closed() and "closed" or "listening")
end

return M
