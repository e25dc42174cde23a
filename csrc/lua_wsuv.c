/* lua_wsuv.c: luaopen_wsuv_core. The loop (one per Lua state, in the
 * registry), and the pure codec functions the specs check against the RFC
 * examples. C never yields and never calls Lua code: the loop reports which
 * objects have news (loop:ready()) and lua/wsuv/scheduler.lua resumes the
 * coroutines waiting on them. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "lua_internal.h"

#define LOOP_KEY "wsuv.loop.instance"

static int l_loop_gc(lua_State *L) {
  wsuv_lloop_t *ll = luaL_checkudata(L, 1, WSUV_LOOP_MT);
  if (!ll->closed) {
    ll->L = L;
    ll->closed = 1; /* Hooks must not touch a closing Lua state. */
    wsuv__loop_close(&ll->loop);
    wsuv__bcache_remove(L, ll);
    free(ll->woken);
    ll->woken = NULL;
    free(ll->free_slots);
    ll->free_slots = NULL;
    wsuv__lua_qpool_free(ll);
  }
  return 0;
}

wsuv_lloop_t *wsuv__lua_loop(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, LOOP_KEY);
  wsuv_lloop_t *ll = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (ll) {
    if (ll->closed) luaL_error(L, "wsuv: the loop is closed");
    ll->L = L;
    return ll;
  }
  ll = lua_newuserdata(L, sizeof(*ll));
  memset(ll, 0, sizeof(*ll));
  wsuv_hooks_t hooks;
  wsuv__lua_hooks(&hooks);
  int err = wsuv__loop_init(&ll->loop, NULL, &hooks);
  if (err) luaL_error(L, "wsuv: cannot create the loop: %s", uv_strerror(err));
  ll->loop.data = ll;
  ll->L = L;
  ll->bcache_limit = WSUV_BCACHE_DEFAULT_LIMIT;
  lua_newtable(L);
  ll->inbox = luaL_ref(L, LUA_REGISTRYINDEX);
  luaL_setmetatable(L, WSUV_LOOP_MT);
  lua_setfield(L, LUA_REGISTRYINDEX, LOOP_KEY);
  return ll;
}

/* core.run(timeout) -> alive. timeout in seconds: nil blocks until an
 * event, 0 only polls. */
static int l_run(lua_State *L) {
  wsuv_lloop_t *ll = wsuv__lua_loop(L);
  int64_t ms = -1;
  if (!lua_isnoneornil(L, 1)) {
    lua_Number t = luaL_checknumber(L, 1);
    ms = t <= 0 ? 0 : (int64_t)(t * 1000.0 + 0.999);
  }
  if (ll->nwoken) ms = 0; /* News are waiting: poll only. */
  int alive = wsuv__loop_run(&ll->loop, ms);
  wsuv__bcache_tick(L, ll, uv_now(ll->loop.uv));
  lua_pushboolean(L, alive);
  return 1;
}

/* core.ready([t]) -> array of connections and servers with news, or nil.
 * With an empty table t (the scheduler reuses its lists), fills t[1..n]
 * instead and returns n, 0 when none: a pass makes no garbage. */
static int l_ready(lua_State *L) {
  wsuv_lloop_t *ll = wsuv__lua_loop(L);
  wsuv_loop_t *l = &ll->loop;
  int fill = lua_istable(L, 1);
  if (!fill && !l->nready && !ll->nwoken) return 0;
  if (fill)
    lua_settop(L, 1);
  else
    lua_createtable(L, (int)(l->nready + ll->nwoken), 0);
  int n = 0;
  for (size_t i = 0; i < ll->nwoken; i++) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, ll->woken[i]);
    lua_rawseti(L, -2, ++n);
    luaL_unref(L, LUA_REGISTRYINDEX, ll->woken[i]);
  }
  ll->nwoken = 0;
  for (size_t i = 0; i < l->nready; i++) {
    wsuv_obj_t *o = l->ready[i];
    o->ready = 0;
    int anchor = LUA_NOREF;
    if (o->data && o->kind == WSUV_OBJ_CONN)
      anchor = ((wsuv_lconn_t *)o->data)->anchor;
    else if (o->data)
      anchor = ((wsuv_lserver_t *)o->data)->anchor;
    if (anchor == LUA_NOREF) continue;
    lua_rawgeti(L, LUA_REGISTRYINDEX, anchor);
    lua_rawseti(L, -2, ++n);
  }
  l->nready = 0;
  if (fill) lua_pushinteger(L, n);
  return 1;
}

static int l_flush(lua_State *L) {
  wsuv_lloop_t *ll = wsuv__lua_loop(L);
  wsuv__loop_flush(&ll->loop);
  return 0;
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
  return 1;
}

/* core.stats() -> {connections = n, servers = n, handles = n} */
static int l_stats(lua_State *L) {
  wsuv_lloop_t *ll = wsuv__lua_loop(L);
  int servers = 0;
  for (wsuv_tserver_t *s = ll->loop.servers; s; s = s->next)
    servers++;
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, (lua_Integer)ll->loop.nconns);
  lua_setfield(L, -2, "connections");
  lua_pushinteger(L, servers);
  lua_setfield(L, -2, "servers");
  lua_pushboolean(L, uv_loop_alive(ll->loop.uv));
  lua_setfield(L, -2, "alive");
  return 1;
}

/* core.block_cache([limit]) -> limit, held: the block cache's limit in
 * bytes (0: off, and what it holds goes back), after setting it. */
static int l_block_cache(lua_State *L) {
  wsuv_lloop_t *ll = wsuv__lua_loop(L);
  if (!lua_isnoneornil(L, 1)) {
    lua_Number n = luaL_checknumber(L, 1);
    luaL_argcheck(L, n >= 0, 1, "limit must be >= 0");
    wsuv__bcache_set_limit(L, ll,
                           n > (lua_Number)SIZE_MAX ? SIZE_MAX : (size_t)n);
  }
  lua_pushnumber(L, (lua_Number)ll->bcache_limit);
  lua_pushnumber(L, (lua_Number)wsuv__bcache_held(ll));
  return 2;
}

/* ---- Codec ------------------------------------------------------------- */

static int push_wsuv_error(lua_State *L, int err) {
  lua_pushnil(L);
  lua_pushstring(L, wsuv_strerror(err));
  lua_pushstring(L, wsuv_err_name(err));
  return 3;
}

/* core.accept_key(key) -> Sec-WebSocket-Accept */
static int l_accept_key(lua_State *L) {
  size_t len;
  const char *key = luaL_checklstring(L, 1, &len);
  char out[29];
  if (wsuv_accept_key(key, len, out) != 0)
    return push_wsuv_error(L, WSUV_EINVAL);
  lua_pushstring(L, out);
  return 1;
}

/* core.random(n) -> n bytes from OpenSSL's CSPRNG */
static int l_random(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0 && n <= 4096, 1, "0..4096 bytes");
  unsigned char buf[4096];
  if (RAND_bytes(buf, (int)n) != 1)
    return luaL_error(L, "random: RAND_bytes failed");
  lua_pushlstring(L, (const char *)buf, (size_t)n);
  return 1;
}

static unsigned opcode_arg(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TNUMBER) {
    lua_Integer op = lua_tointeger(L, idx);
    luaL_argcheck(L, op >= 0 && op <= 15, idx, "opcode 0..15");
    return (unsigned)op;
  }
  static const char *const names[] = {"continuation", "text", "binary", "close",
                                      "ping",         "pong", NULL};
  static const unsigned codes[] = {0, 1, 2, 8, 9, 10};
  return codes[luaL_checkoption(L, idx, NULL, names)];
}

/* core.encode_frame(opcode, payload[, {fin=, rsv=, mask=}]) -> bytes
 * mask: a 4-byte key string, or true for a random one. */
static int l_encode_frame(lua_State *L) {
  unsigned opcode = opcode_arg(L, 1);
  size_t len;
  const char *payload = luaL_checklstring(L, 2, &len);
  unsigned flags = WSUV_FIN;
  uint8_t key[4], *mask = NULL;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_getfield(L, 3, "fin");
    if (!lua_isnil(L, -1) && !lua_toboolean(L, -1)) flags = 0;
    lua_getfield(L, 3, "rsv");
    flags |= ((unsigned)lua_tointeger(L, -1) & 7u) << 4;
    lua_getfield(L, 3, "mask");
    if (lua_type(L, -1) == LUA_TSTRING) {
      size_t kl;
      const char *k = lua_tolstring(L, -1, &kl);
      luaL_argcheck(L, kl == 4, 3, "mask must be 4 bytes");
      memcpy(key, k, 4);
      mask = key;
    } else if (lua_toboolean(L, -1)) {
      if (RAND_bytes(key, 4) != 1)
        return luaL_error(L, "encode_frame: RAND_bytes failed");
      mask = key;
    }
    lua_pop(L, 3);
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  uint8_t hdr[WSUV_MAX_FRAME_HEADER];
  size_t h = wsuv_frame_build_header(hdr, flags, opcode, len, mask);
  luaL_addlstring(&b, (const char *)hdr, h);
  if (mask) {
    uint8_t chunk[1024];
    size_t off = 0;
    while (off < len) {
      size_t n = len - off < sizeof(chunk) ? len - off : sizeof(chunk);
      wsuv_mask_copy(chunk, (const uint8_t *)payload + off, n, key, off & 3);
      luaL_addlstring(&b, (const char *)chunk, n);
      off += n;
    }
  } else {
    luaL_addlstring(&b, payload, len);
  }
  luaL_pushresult(&b);
  return 1;
}

/* core.decode_frame(bytes) -> {fin, rsv, opcode, masked, mask, length,
 * header_length, payload (unmasked, when complete)} | nil (incomplete) |
 * nil, msg, code */
static int l_decode_frame(lua_State *L) {
  size_t len;
  const uint8_t *p = (const uint8_t *)luaL_checklstring(L, 1, &len);
  wsuv_frame_header_t h;
  ssize_t n = wsuv_frame_parse_header(p, len, &h);
  if (n < 0) return push_wsuv_error(L, (int)n);
  if (n == 0) return 0;
  lua_createtable(L, 0, 8);
  lua_pushboolean(L, h.fin);
  lua_setfield(L, -2, "fin");
  lua_pushinteger(L, h.rsv >> 4);
  lua_setfield(L, -2, "rsv");
  lua_pushinteger(L, h.opcode);
  lua_setfield(L, -2, "opcode");
  lua_pushboolean(L, h.masked);
  lua_setfield(L, -2, "masked");
  if (h.masked) {
    lua_pushlstring(L, (const char *)h.mask, 4);
    lua_setfield(L, -2, "mask");
  }
  lua_pushnumber(L, (lua_Number)h.payload_len);
  lua_setfield(L, -2, "length");
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "header_length");
  if (len - (size_t)n >= h.payload_len) {
    size_t pl = (size_t)h.payload_len;
    uint8_t *tmp = malloc(pl ? pl : 1);
    if (!tmp) return luaL_error(L, "decode_frame: out of memory");
    memcpy(tmp, p + n, pl);
    if (h.masked) wsuv_mask(tmp, pl, h.mask, 0);
    lua_pushlstring(L, (const char *)tmp, pl);
    free(tmp);
    lua_setfield(L, -2, "payload");
  }
  return 1;
}

/* core.mask(data, key[, offset]) -> data XOR key */
static int l_mask(lua_State *L) {
  size_t len, kl;
  const char *data = luaL_checklstring(L, 1, &len);
  const char *key = luaL_checklstring(L, 2, &kl);
  lua_Integer off = luaL_optinteger(L, 3, 0);
  luaL_argcheck(L, kl == 4, 2, "mask key must be 4 bytes");
  luaL_argcheck(L, off >= 0, 3, "offset must be >= 0");
  uint8_t *tmp = malloc(len ? len : 1);
  if (!tmp) return luaL_error(L, "mask: out of memory");
  wsuv_mask_copy(tmp, (const uint8_t *)data, len, (const uint8_t *)key,
                 (size_t)off & 3);
  lua_pushlstring(L, (const char *)tmp, len);
  free(tmp);
  return 1;
}

static int l_utf8_valid(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_pushboolean(L, wsuv_utf8_valid((const uint8_t *)s, len));
  return 1;
}

/* core.parse_close(payload) -> code, reason | nil, msg, code */
static int l_parse_close(lua_State *L) {
  size_t len;
  const uint8_t *p = (const uint8_t *)luaL_checklstring(L, 1, &len);
  int code;
  const uint8_t *reason;
  size_t rlen;
  int err = wsuv_close_parse(p, len, &code, &reason, &rlen);
  if (err) return push_wsuv_error(L, err);
  lua_pushinteger(L, code);
  lua_pushlstring(L, (const char *)reason, rlen);
  return 2;
}

/* core.build_close(code[, reason]) -> payload | nil, msg, code */
static int l_build_close(lua_State *L) {
  int code = (int)luaL_checkinteger(L, 1);
  size_t rlen = 0;
  const char *reason = luaL_optlstring(L, 2, "", &rlen);
  uint8_t out[125];
  ssize_t n = wsuv_close_build(out, code, reason, rlen);
  if (n < 0) return push_wsuv_error(L, (int)n);
  lua_pushlstring(L, (const char *)out, (size_t)n);
  return 1;
}

/* core.close_code_valid(code) -> boolean */
static int l_close_code_valid(lua_State *L) {
  lua_pushboolean(L, wsuv_close_code_valid((int)luaL_checkinteger(L, 1)));
  return 1;
}

/* core.strerror(code) -> message, name */
static int l_strerror(lua_State *L) {
  int err = (int)luaL_checkinteger(L, 1);
  lua_pushstring(L, err <= -30000 ? wsuv_strerror(err) : uv_strerror(err));
  lua_pushstring(L, err <= -30000 ? wsuv_err_name(err) : uv_err_name(err));
  return 2;
}

static const luaL_Reg functions[] = {
    {"run", l_run},
    {"ready", l_ready},
    {"flush", l_flush},
    {"now", l_now},
    {"stats", l_stats},
    {"block_cache", l_block_cache},
    {"connect", wsuv__lua_connect},
    {"listen", wsuv__lua_listen},
    {"room_join", wsuv__lua_room_join},
    {"room_count", wsuv__lua_room_count},
    {"room_broadcast", wsuv__lua_room_broadcast},
    {"accept_key", l_accept_key},
    {"parse_request", wsuv__lua_parse_request},
    {"random", l_random},
    {"encode_frame", l_encode_frame},
    {"decode_frame", l_decode_frame},
    {"mask", l_mask},
    {"utf8_valid", l_utf8_valid},
    {"parse_close", l_parse_close},
    {"build_close", l_build_close},
    {"close_code_valid", l_close_code_valid},
    {"strerror", l_strerror},
#if LUA_VERSION_NUM >= 504
    {"_fast_methods", wsuv__lua_fast_methods},
#endif
    {NULL, NULL}};

/* libuv writes with write(2), so a write to a peer that has reset raises
 * SIGPIPE, whose default action ends the process: a wss:// peer that sent
 * its close frame and reset killed the server as it wrote close_notify.
 * Ignore it, as LuaSocket, Python and node do, unless the host has chosen
 * a disposition of its own; the write then fails with EPIPE, which ends
 * only that connection. */
static void ignore_sigpipe(void) {
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) != 0 || sa.sa_handler != SIG_DFL) return;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = SIG_IGN;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGPIPE, &sa, NULL);
}

WSUV_EXTERN int luaopen_wsuv_core(lua_State *L);

int luaopen_wsuv_core(lua_State *L) {
  ignore_sigpipe();
  luaL_newmetatable(L, WSUV_LOOP_MT);
  lua_pushcfunction(L, l_loop_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  wsuv__lua_conn_open(L);
  lua_newtable(L);
  luaL_setfuncs(L, functions, 0);
  /* The method tables, so lua/wsuv/conn.lua can add the waiting methods. */
  luaL_getmetatable(L, WSUV_CONN_MT);
  lua_getfield(L, -1, "__index");
  lua_setfield(L, -3, "conn_methods");
  lua_setfield(L, -2, "conn_metatable");
  luaL_getmetatable(L, WSUV_SERVER_MT);
  lua_getfield(L, -1, "__index");
  lua_setfield(L, -3, "server_methods");
  lua_pop(L, 1);
  lua_newtable(L);
#define WSUV_XX(name, val, msg, close)                                         \
  lua_pushinteger(L, val);                                                     \
  lua_setfield(L, -2, #name);
  WSUV_ERRNO_MAP(WSUV_XX)
#undef WSUV_XX
  lua_setfield(L, -2, "errors");
  wsuv__lua_push_ffi_send(L);
  lua_setfield(L, -2, "_ffi_send");
  lua_pushliteral(L, "0.1.0");
  lua_setfield(L, -2, "version");
  return 1;
}
