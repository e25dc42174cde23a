-- wsuv.scheduler: coroutines over the libuv loop.
--
-- Design criteria:
-- * Only Lua yields, and only coroutines this scheduler owns: a wait yields a
--   private sentinel, so a user's own coroutine.wrap iterators never see it.
-- * Outside an owned coroutine (the main chunk, a REPL, a foreign coroutine)
--   a wait runs the loop itself until its object has news or its deadline
--   passes. Blocking-style calls therefore work anywhere, and the other
--   coroutines keep running meanwhile.
-- * The loop never calls Lua code: after each pass, core.ready() lists the
--   objects with news, and the waiters on them are resumed here.
-- * An error in one coroutine is reported with its traceback and never stops
--   the loop or the other coroutines.
local core = require "wsuv.core"
local compat = require "wsuv.compat"

local M = {}

local POLL = {} -- the sentinel a waiting coroutine yields
-- A waiting coroutine must stay reachable from here: nothing else may hold
-- it, and a collected waiter would be a silently lost connection.
-- our coroutines: true, or the guard of a guarded one (M.spawn_guarded)
local owned = setmetatable({}, { __mode = "k" })
local guard_values = setmetatable({}, { __mode = "k" }) -- co -> its guard's value
-- A wait's token: a table { co, obj, deadline } when it has a deadline
-- (sleepers hold it), else the object waited on itself (or FOREVER): most
-- waits have no deadline, and then no table is made per wait.
local waiting = {} -- co -> token of its wait (strong)
local waiters = setmetatable({}, { __mode = "k" }) -- obj -> { co = token }
-- obj -> the coroutine parked on it (M.park: no deadline, token obj), the
-- usual single waiter of a connection: no set table per connection. It is
-- left in place after a wake; waiting[co] ~= obj tells that it is stale.
local parked = setmetatable({}, { __mode = "k" })
local FOREVER = {} -- the token of a wait on nothing, without a deadline
-- obj -> its owner (M.watch): told of every news of obj, whoever waits.
local watchers = setmetatable({}, { __mode = "k" })
-- M.watch calls not undone by M.unwatch: while none is, a pass skips the
-- watchers lookup (once per message at 1 in flight). An entry collected
-- with its object leaves it high, which only costs that lookup.
local nwatched = 0
local touched = {} -- owners to drive at the end of this pass (M.touch)
local sleepers = {} -- tokens with a deadline, unsorted
local runnable = {} -- { co, args } to start or continue
local notified = {} -- Lua objects with news (see M.notify)
-- obj -> the notified list it is on: one entry per object per list, however
-- often it is notified before the list is walked.
local notified_on = setmetatable({}, { __mode = "k" })
local live = 0 -- owned coroutines not finished
local current -- the owned coroutine being resumed
-- M.current: the same, for a cheap "inside the scheduler" test on hot
-- paths (it stays set in a foreign coroutine nested in an owned one).

M.now = core.now

-- Reports an error from a coroutine; replace to log elsewhere.
function M.on_error(co, err)
  io.stderr:write("wsuv: error in coroutine: ", debug.traceback(co, tostring(err)), "\n")
end

-- Forgets a coroutine that ended; runs its guard, if any, with ok and
-- the error (with the coroutine's traceback). Returns whether it had one.
local function finish(co, ok, err)
  local guard = owned[co]
  owned[co] = nil
  waiting[co] = nil
  live = live - 1
  if guard == true then
    return false
  end
  local value = guard_values[co]
  guard_values[co] = nil
  if not ok then
    err = debug.traceback(co, tostring(err))
  end
  local gok, gerr = pcall(guard, value, ok, err)
  if not gok then
    io.stderr:write("wsuv: guard failed: ", tostring(gerr), "\n")
  end
  return true
end

local co_resume = coroutine.resume

local function resume(co, ...)
  local outer = current
  current = co
  M.current = co
  local ok, err = co_resume(co, ...)
  current = outer
  M.current = outer
  if not ok then
    if finish(co, false, err) then
      return -- the guard had the error
    end
    local rok, rerr = pcall(M.on_error, co, err)
    if not rok then
      io.stderr:write("wsuv: error handler failed: ", tostring(rerr), "\n")
    end
  elseif err == POLL then
    return -- waiting: the usual case, no status check
  elseif coroutine.status(co) == "dead" then
    finish(co, true)
  else
    -- A plain coroutine.yield() inside a wsuv coroutine: run it again soon.
    runnable[#runnable + 1] = { co, n = 0 }
  end
end

-- Whether the running coroutine is one of ours (so a wait may yield).
function M.in_scheduler()
  if current == nil then
    return false -- no owned coroutine is running at all
  end
  local co, ismain = coroutine.running()
  if co == current then
    return true
  end
  return co ~= nil and not ismain and (owned[co] ~= nil or compat.transparent[co] == true)
end

-- obj: what the wait was on (nil for a sleep).
local function wake(co, token, obj, why)
  if waiting[co] ~= token then
    return
  end
  waiting[co] = nil
  -- Out of the set whatever woke it: an entry left there holds its token,
  -- which is obj itself or a table naming it, and Lua 5.1 and LuaJIT have no
  -- ephemerons, so a value that reaches its weak key keeps both for good
  -- (LuaJIT: about 500 bytes per connection a long-lived coroutine waited
  -- on with a deadline, found by spec/peers/chaos_client.lua).
  if obj then
    local set = waiters[obj]
    if set then
      set[co] = nil
    end
  end
  resume(co, why)
end

local function wake_obj(obj)
  local p = parked[obj]
  if p ~= nil and waiting[p] == obj then
    waiting[p] = nil
    resume(p, "ready")
  end
  local set = waiters[obj]
  if not set then
    return
  end
  local co, token = next(set)
  if co == nil then
    return
  end
  if next(set, co) == nil then
    -- One waiter, the usual case: no list to build. (The set cannot be
    -- walked while waking: a woken coroutine may wait on obj again.)
    wake(co, token, obj, "ready")
    return
  end
  local list = {}
  for c, t in pairs(set) do
    list[#list + 1] = c
    list[#list + 1] = t
  end
  for i = 1, #list, 2 do
    wake(list[i], list[i + 1], obj, "ready")
  end
end

-- A pass walks lists (runnable, notified, touched, core.ready's) that grow
-- while they are walked: each walk takes its list and puts an empty one in
-- its place, clearing entries as it goes, and gives the list back. Lists are
-- reused rather than made per pass, so a pass makes no garbage of its own
-- (a pass nested in a walk takes another; one left by an error is
-- collected).
local emptied = {}

local function fresh_list()
  local n = #emptied
  if n == 0 then
    return {}
  end
  local t = emptied[n]
  emptied[n] = nil
  return t
end

local function give_back(list)
  if #emptied < 8 then
    emptied[#emptied + 1] = list
  end
end

-- Whether a pass has queued work for the next one.
local function work_queued()
  return runnable[1] ~= nil or notified[1] ~= nil or touched[1] ~= nil
end

local function run_runnable()
  while runnable[1] ~= nil do
    local batch = runnable
    runnable = fresh_list()
    for i = 1, #batch do
      local r = batch[i]
      batch[i] = nil
      resume(r[1], compat.unpack(r, 2, r.n + 1))
    end
    give_back(batch)
  end
end

local function expire_sleepers(now)
  local i = 1
  while i <= #sleepers do
    local token = sleepers[i]
    if waiting[token.co] ~= token then
      sleepers[i] = sleepers[#sleepers]
      sleepers[#sleepers] = nil
    elseif token.deadline <= now then
      sleepers[i] = sleepers[#sleepers]
      sleepers[#sleepers] = nil
      wake(token.co, token, token.obj, "timeout")
    else
      i = i + 1
    end
  end
end

local function next_deadline()
  local d
  for i = 1, #sleepers do
    local t = sleepers[i]
    if waiting[t.co] == t and (not d or t.deadline < d) then
      d = t.deadline
    end
  end
  return d
end

-- One pass: start runnable coroutines, run libuv once (at most until
-- timeout seconds, nil = until something happens), resume the waiters of
-- objects with news and of passed deadlines. Returns whether watch had news
-- and whether libuv still has work.
local function pass(timeout, watch, watch_deadline)
  run_runnable()
  local d = next_deadline()
  if watch_deadline and (not d or watch_deadline < d) then
    d = watch_deadline
  end
  if d then
    local left = d - core.now()
    if left < 0 then
      left = 0
    end
    if not timeout or left < timeout then
      timeout = left
    end
  end
  if work_queued() then
    timeout = 0 -- news, or owners to drive (a server's on_open returned)
  end
  local alive = core.run(timeout)
  local hit = false
  local ready = fresh_list()
  local n = core.ready(ready) -- fills it: no array per pass
  if n > 0 then
    for i = 1, n do
      local obj = ready[i]
      ready[i] = nil
      if obj == watch then
        hit = true
      end
      -- wake_obj's usual case inlined (once per message at 1 in flight)
      local p = parked[obj]
      if waiters[obj] then
        wake_obj(obj)
      elseif p ~= nil and waiting[p] == obj then
        waiting[p] = nil
        resume(p, "ready")
      end
      if nwatched > 0 then
        local owner = watchers[obj]
        if owner ~= nil then
          owner:news(obj)
        end
      end
    end
  end
  give_back(ready)
  while notified[1] ~= nil do
    local list = notified
    notified = fresh_list()
    for i = 1, #list do
      local obj = list[i]
      list[i] = nil
      if notified_on[obj] == list then
        notified_on[obj] = nil -- the list is reused once walked
      end
      if obj == watch then
        hit = true
      end
      wake_obj(obj)
    end
    give_back(list)
  end
  while touched[1] ~= nil do
    local list = touched
    touched = fresh_list()
    for i = 1, #list do
      local owner = list[i]
      list[i] = nil
      owner:drive()
    end
    give_back(list)
  end
  if #sleepers > 0 then
    expire_sleepers(core.now())
  end
  run_runnable()
  return hit, alive
end

-- Wakes whoever waits on a Lua-side object (a server's accept queue), at
-- the end of this pass: a notify wakes every waiter, so notifying again
-- before then changes nothing.
function M.notify(obj)
  if notified_on[obj] ~= notified then
    notified_on[obj] = notified
    notified[#notified + 1] = obj
  end
end

local function enlist(co, obj, token)
  waiting[co] = token
  local set = waiters[obj]
  if not set then
    set = {}
    waiters[obj] = set
  end
  set[co] = token
end

-- The yield of a wait without a deadline, split in two so that the caller
-- yields from its own frame: if M.park(obj, coroutine.running()) is true,
-- the caller must coroutine.yield(M.POLL) next. An idle connection's
-- handler then waits one frame shallower (a coroutine's stack is most of
-- its memory). The caller passes the running coroutine: called from
-- park's frame, coroutine.running (a C function) would sit deep enough to
-- make LuaJIT grow a new coroutine's stack (see conn.lua, wait_message).
M.POLL = POLL
function M.park(obj, running_co)
  -- in_scheduler()'s usual case inlined: this runs for every message
  -- that finds its connection's queue empty.
  local co = current
  if co == nil or (co ~= running_co and not M.in_scheduler()) then
    return false
  end
  local p = parked[obj]
  if p == co then
    waiting[co] = obj -- parked here before: the usual case
  elseif p == nil or waiting[p] ~= obj then
    parked[obj] = co
    waiting[co] = obj
  else
    enlist(co, obj, obj) -- a second coroutine parked on obj
  end
  return true
end

-- Waits for news on obj (a connection, a server, or a notified table) or
-- until deadline (absolute, M.now() seconds). Returns true, or nil,
-- "timeout", "ETIMEDOUT". obj may be nil to just sleep.
function M.wait(obj, deadline)
  if M.in_scheduler() then
    local co = current
    local token = obj or FOREVER
    if deadline then
      token = { co = co, obj = obj, deadline = deadline }
    end
    if obj then
      enlist(co, obj, token)
    else
      waiting[co] = token
    end
    if deadline then
      sleepers[#sleepers + 1] = token
    end
    local why = coroutine.yield(POLL)
    if why == "timeout" then
      return nil, "timeout", "ETIMEDOUT"
    end
    return true
  end
  -- The main thread, a REPL or a foreign coroutine: drive the loop here.
  while true do
    local hit, alive = pass(nil, obj, deadline)
    if hit then
      return true
    end
    if deadline and core.now() >= deadline then
      return nil, "timeout", "ETIMEDOUT"
    end
    if not alive and not deadline and not work_queued() and not next_deadline() then
      return nil, "nothing left that could wake this wait", "EDEADLK"
    end
  end
end

-- A new coroutine of ours running fn; guard: true, or see spawn_guarded.
local function adopt(fn, guard, value)
  local co = coroutine.create(fn)
  owned[co] = guard
  guard_values[co] = value
  live = live + 1
  return co
end

-- Starts fn(...) in a new coroutine on the next pass. Returns the coroutine.
function M.spawn(fn, ...)
  if type(fn) ~= "function" then
    error("spawn: expected a function, got " .. type(fn), 2)
  end
  local co = adopt(fn, true)
  runnable[#runnable + 1] = compat.pack(co, ...)
  runnable[#runnable].n = select("#", ...)
  return co
end

-- Like spawn; when fn returns or raises, guard(value, ok, err) runs outside
-- the coroutine (err with the coroutine's traceback, and on_error is not
-- called). A server's handler runs this way rather than inside xpcall: no
-- frame stays under the handler, whose idle stack then fits Lua 5.4's
-- first 40 slots (640 bytes less per connection than under xpcall).
function M.spawn_guarded(guard, value, fn, ...)
  local co = M.spawn(fn, ...)
  owned[co] = guard
  guard_values[co] = value
  return co
end

-- Event delivery without a coroutine per object (a server's on_message):
-- after M.watch(obj, owner), each pass that finds news on obj calls
-- owner:news(obj) outside any coroutine, whoever waits on obj. An owner
-- that has work calls M.touch(owner) (once per pass: it keeps its own
-- flag), and owner:drive() runs once the pass has delivered every news,
-- also outside any coroutine; it may run workers with M.start and
-- M.resume. A worker idles by yielding M.POLL without waiting on anything:
-- then only its owner resumes it.
function M.watch(obj, owner)
  if watchers[obj] == nil then
    nwatched = nwatched + 1
  end
  watchers[obj] = owner
end

function M.unwatch(obj)
  if watchers[obj] ~= nil then
    nwatched = nwatched - 1
  end
  watchers[obj] = nil
end

function M.touch(owner)
  touched[#touched + 1] = owner
end

-- Starts fn(...) in a new owned coroutine at once (like spawn_guarded),
-- from outside any owned coroutine. Returns the coroutine.
function M.start(guard, value, fn, ...)
  local co = adopt(fn, guard, value)
  resume(co, ...)
  return co
end

-- Resumes an idle worker (see M.watch) with the given values.
M.resume = resume

-- Sleeps for s seconds (yields in a coroutine, runs the loop elsewhere).
function M.sleep(s)
  if type(s) ~= "number" then
    error("sleep: expected seconds, got " .. type(s), 2)
  end
  M.wait(nil, core.now() + s)
end

-- Runs ready work once without blocking longer than timeout (default 0):
-- the per-frame call of a game loop.
function M.step(timeout)
  pass(timeout or 0)
  return live
end

-- Runs until every spawned coroutine has finished. Returns true, or nil and
-- a message when coroutines wait on something that can no longer happen.
function M.run()
  while live > 0 do
    local _, alive = pass(nil)
    if live > 0 and not alive and not work_queued() and not next_deadline() then
      return nil, ("%d coroutine(s) wait on something that cannot happen"):format(live)
    end
  end
  return true
end

-- Number of spawned coroutines that have not finished.
function M.count()
  return live
end

return M
