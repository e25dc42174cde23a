/* two_states.c: a C host with two independent Lua 5.4 states in one process,
 * each with its own wsuv loop (spec/states_spec.lua builds and runs it).
 *
 *   two_states LUA_PATH LUA_CPATH N
 *
 * State A runs an echo server (wsuv.listen on port 0); state B runs a client
 * coroutine that sends N messages to it and checks every echo. Neither state
 * ever blocks: the host drives both by calling each one's tick() (which calls
 * wsuv.step(0)) in turn, so the two loops only meet through the socket. Then
 * the host closes A's lua_State while B's connection is still open: B must
 * see that connection drop, find A's port closed, and still run a server and
 * a client of its own. Every result is printed as "key value" lines; the
 * last line is "OK" (exit 0) or "FAIL <why>" (exit 1). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#define DEADLINE_S 20.0

static const char SERVER[] =
    "local wsuv = require 'wsuv'\n"
    "local received = 0\n"
    "local srv = assert(wsuv.listen{ host = '127.0.0.1', port = 0,\n"
    "  on_connect = function(conn)\n"
    "    while true do\n"
    "      local msg, kind = conn:receive()\n"
    "      if not msg then break end\n"
    "      received = received + 1\n"
    "      conn:send(msg, kind)\n"
    "    end\n"
    "  end })\n"
    "function tick() wsuv.step(0) return 'serving' end\n"
    "function stats()\n"
    "  local s = wsuv.core.stats()\n"
    "  return s.connections, s.servers, received\n"
    "end\n"
    "return srv.port\n";

static const char CLIENT[] =
    "local wsuv = require 'wsuv'\n"
    "local port, n = ...\n"
    "local st = { phase = 'connecting', echoed = 0 }\n"
    "local conn\n"
    "wsuv.spawn(function()\n"
    "  local err, code\n"
    "  conn, err, code = wsuv.connect(('ws://127.0.0.1:%d/'):format(port),\n"
    "                                 { timeout = 5 })\n"
    "  if not conn then\n"
    "    st.phase = 'failed: ' .. tostring(err) .. ' ' .. tostring(code)\n"
    "    return\n"
    "  end\n"
    "  st.phase = 'echoing'\n"
    "  for i = 1, n do\n"
    "    local kind = i % 2 == 0 and 'binary' or 'text'\n"
    "    local data = ('%d:'):format(i) .. ('x'):rep(i * 37 % 3000)\n"
    "    assert(conn:send(data, kind))\n"
    "    local msg, k = conn:receive(5)\n"
    "    if msg == data and k == kind then st.echoed = st.echoed + 1 end\n"
    "  end\n"
    "  st.phase = 'echoed'\n"
    "end)\n"
    "function tick() wsuv.step(0) return st.phase end\n"
    "function stats()\n"
    "  local s = wsuv.core.stats()\n"
    "  return s.connections, s.servers, st.echoed\n"
    "end\n"
    /* After A is gone: B's connection must have dropped, A's port must refuse,
     * and B alone must still serve and connect. */
    "function after_a(old_port)\n"
    "  st.phase = 'after'\n"
    "  wsuv.spawn(function()\n"
    "    local msg, why, code = conn:receive(5)\n"
    "    st.dropped = ('%s %s %s'):format(tostring(msg), tostring(why),\n"
    "                                     tostring(code))\n"
    "    local c, _, ecode = wsuv.connect(\n"
    "      ('ws://127.0.0.1:%d/'):format(old_port), { timeout = 2 })\n"
    "    st.reconnect = c and 'connected' or tostring(ecode)\n"
    "    local srv = assert(wsuv.listen{ host = '127.0.0.1', port = 0,\n"
    "      on_connect = function(sc)\n"
    "        while true do\n"
    "          local m, kind = sc:receive(5)\n"
    "          if not m then break end\n"
    "          sc:send(m, kind)\n"
    "        end\n"
    "      end })\n"
    "    local own = assert(wsuv.connect(\n"
    "      ('ws://127.0.0.1:%d/'):format(srv.port), { timeout = 2 }))\n"
    "    assert(own:send('alone in B'))\n"
    "    st.own_echo = tostring(own:receive(5))\n"
    "    own:close()\n"
    "    srv:close(2)\n"
    "    local s = wsuv.core.stats()\n"
    "    for _ = 1, 100 do\n"
    "      if s.connections + s.servers == 0 then break end\n"
    "      wsuv.sleep(0.01)\n"
    "      s = wsuv.core.stats()\n"
    "    end\n"
    "    st.final = ('%d %d'):format(s.connections, s.servers)\n"
    "    st.phase = 'done'\n"
    "  end)\n"
    "end\n"
    "function result()\n"
    "  return st.dropped, st.reconnect, st.own_echo, st.final\n"
    "end\n";

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_us(long us) {
  struct timespec ts = {.tv_sec = 0, .tv_nsec = us * 1000};
  nanosleep(&ts, NULL);
}

static void fail(const char *name, lua_State *L, const char *what) {
  printf("FAIL %s: %s: %s\n", name, what,
         L && lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?");
  fflush(stdout);
  exit(1);
}

static lua_State *new_state(const char *name, const char *path,
                            const char *cpath) {
  lua_State *L = luaL_newstate();
  if (!L) fail(name, NULL, "luaL_newstate");
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_pushstring(L, path);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, cpath);
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
  return L;
}

/* Runs a chunk with nargs integer arguments; leaves nres results on the
 * stack. */
static void run_chunk(const char *name, lua_State *L, const char *src,
                      int nargs, const lua_Integer *args, int nres) {
  if (luaL_loadbuffer(L, src, strlen(src), name) != LUA_OK)
    fail(name, L, "load");
  for (int i = 0; i < nargs; i++)
    lua_pushinteger(L, args[i]);
  if (lua_pcall(L, nargs, nres, 0) != LUA_OK) fail(name, L, "run");
}

/* Calls the global function fn with one optional integer argument and
 * returns its first result as a string (kept in buf). */
static const char *call(const char *name, lua_State *L, const char *fn,
                        const lua_Integer *arg, char *buf, size_t cap) {
  lua_getglobal(L, fn);
  if (arg) lua_pushinteger(L, *arg);
  if (lua_pcall(L, arg ? 1 : 0, 1, 0) != LUA_OK) fail(name, L, fn);
  const char *s = lua_tostring(L, -1);
  snprintf(buf, cap, "%s", s ? s : "nil");
  lua_pop(L, 1);
  return buf;
}

static void print_stats(const char *name, lua_State *L) {
  lua_getglobal(L, "stats");
  if (lua_pcall(L, 0, 3, 0) != LUA_OK) fail(name, L, "stats");
  printf("%s_stats %lld %lld %lld\n", name, (long long)lua_tointeger(L, -3),
         (long long)lua_tointeger(L, -2), (long long)lua_tointeger(L, -1));
  lua_pop(L, 3);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s LUA_PATH LUA_CPATH N\n", argv[0]);
    return 2;
  }
  lua_Integer n = atoi(argv[3]);
  lua_State *a = new_state("A", argv[1], argv[2]);
  lua_State *b = new_state("B", argv[1], argv[2]);
  if (a == b) fail("host", NULL, "the two states are one");

  run_chunk("A", a, SERVER, 0, NULL, 1);
  lua_Integer port = lua_tointeger(a, -1);
  lua_pop(a, 1);
  printf("A_port %lld\n", (long long)port);
  lua_Integer args[2] = {port, n};
  run_chunk("B", b, CLIENT, 2, args, 0);

  /* Phase 1: alternate the two loops until B has every echo. */
  char pa[64], pb[64];
  double deadline = now_s() + DEADLINE_S;
  long rounds = 0;
  for (;;) {
    call("A", a, "tick", NULL, pa, sizeof(pa));
    call("B", b, "tick", NULL, pb, sizeof(pb));
    rounds++;
    if (strcmp(pb, "echoed") == 0 || strncmp(pb, "failed", 6) == 0) break;
    if (now_s() > deadline) {
      printf("FAIL phase 1 timed out in phase %s\n", pb);
      return 1;
    }
    sleep_us(200);
  }
  printf("B_phase %s\n", pb);
  printf("rounds %ld\n", rounds);
  print_stats("A", a);
  print_stats("B", b);
  fflush(stdout);

  /* Phase 2: close A's state (and with it A's loop) while B's connection
   * is open; only B runs from here on. */
  lua_close(a);
  printf("A_closed\n");
  call("B", b, "after_a", &port, pb, sizeof(pb));
  deadline = now_s() + DEADLINE_S;
  while (strcmp(call("B", b, "tick", NULL, pb, sizeof(pb)), "done") != 0) {
    if (now_s() > deadline) {
      printf("FAIL phase 2 timed out\n");
      return 1;
    }
    sleep_us(200);
  }
  lua_getglobal(b, "result");
  if (lua_pcall(b, 0, 4, 0) != LUA_OK) fail("B", b, "result");
  printf("B_dropped %s\n", lua_tostring(b, -4));
  printf("B_reconnect %s\n", lua_tostring(b, -3));
  printf("B_own_echo %s\n", lua_tostring(b, -2));
  printf("B_final_stats %s\n", lua_tostring(b, -1));
  lua_pop(b, 4);
  lua_close(b);
  printf("B_closed\nOK\n");
  return 0;
}
