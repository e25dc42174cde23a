-- wsuv.room: a set of server connections to broadcast to, such as a chat
-- room or a game's match, across any of the loop's servers (ws:// and
-- wss:// together).
--
-- Design criteria:
-- * A broadcast encodes its frame once and pins the payload once for every
--   member, as server:broadcast does (csrc/lua_conn.c, bcast_*).
-- * No bookkeeping when a connection closes: a member that is no longer
--   open is dropped the next time the room is walked, and the set's keys
--   are weak, so a room never keeps a connection alive.
-- * Only server connections: a client masks each frame it sends with a key
--   of its own, so one frame cannot serve several.
local core = require "wsuv.core"
local sched = require "wsuv.scheduler"

local Room = {}
Room.__index = Room
Room.__name = "wsuv.room"

local M = {}

-- The body of room:broadcast and server:broadcast, whose C primitive is
-- fn(target, data, kind, close_slow, except). Outside the scheduler's pass
-- (a game loop's frame, a REPL) the frames are written at once.
function M.broadcast(fn, target, data, kind, opts)
  if type(data) ~= "string" then
    error("broadcast: data must be a string", 3)
  end
  local sent, skipped, code = fn(target, data, kind or "text", opts and opts.close_slow,
    opts and opts.except)
  if not sched.in_scheduler() then
    core.flush()
  end
  return sent, skipped, code
end

-- room = wsuv.room()
function M.new()
  return setmetatable({ _set = setmetatable({}, { __mode = "k" }) }, Room)
end

-- true = room:join(conn); nil, "closed", "ECLOSED" when conn is not open.
-- Joining twice is joining once.
function Room:join(conn)
  if type(conn) ~= "userdata" then
    error("room:join: a connection expected, got " .. type(conn), 2)
  end
  local ok, err, code = core.room_join(self._set, conn)
  if ok == false then
    error("room:join: only a server's connections can join a room (a client masks each frame"
      .. " it sends, so one frame cannot serve many)", 2)
  end
  return ok, err, code
end

-- room:has(conn): whether conn is a member and open.
function Room:has(conn)
  return self._set[conn] ~= nil and conn:state() == "open"
end

-- was_member = room:leave(conn)
function Room:leave(conn)
  local was = self:has(conn)
  self._set[conn] = nil
  return was
end

-- n = room:count(): open members.
function Room:count()
  return core.room_count(self._set)
end

-- for conn in room:clients() do ... end: the open members, in no order.
function Room:clients()
  core.room_count(self._set) -- drops members that closed
  local list, n = {}, 0
  for conn in pairs(self._set) do
    n = n + 1
    list[n] = conn
  end
  local i = 0
  return function()
    i = i + 1
    return list[i]
  end
end

-- sent, skipped = room:broadcast(data[, kind[, {close_slow = bool, except = conn}]])
-- except: a member not to send to (the sender of a chat message, say).
function Room:broadcast(data, kind, opts)
  local sent, skipped, code = M.broadcast(core.room_broadcast, self._set, data, kind, opts)
  return sent, skipped, code -- not a tail call: M.broadcast blames our caller
end

function Room:__tostring()
  return ("wsuv.room{%d}"):format(core.room_count(self._set))
end

return M
