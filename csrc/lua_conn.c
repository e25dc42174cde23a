/* lua_conn.c: connection and server userdata. Every method here returns at
 * once; lua/wsuv/conn.lua and server.lua wait (yield, or run the loop) and
 * retry. Messages wait per connection until Lua takes them: a small one's
 * bytes in the connection's queue, a large one copied out of the read
 * buffer straight into a Lua string. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "lua_internal.h"

#define FLAG_TEXT 1
#define FLAG_FIN  2
#define FLAG_SLOT 4 /* the message waits in the inbox (see queue_push) */

static const char *const phase_names[] = {
    "connecting", "connecting", "connecting", "handshake",
    "request",    "open",       "closing",    "closed"};

/* Upvalues of every method (see new_class). */
#define KIND_TEXT      lua_upvalueindex(1)
#define KIND_BINARY    lua_upvalueindex(2)
#define STR_AGAIN      lua_upvalueindex(3)
#define METHOD_STRINGS 3

/* The upvalues above, in order (see new_class). */
static void push_method_strings(lua_State *L) {
  lua_pushliteral(L, "text");
  lua_pushliteral(L, "binary");
  lua_pushliteral(L, "again");
}

/* Every method call checks its argument. A full userdata of exactly our
 * size carrying our tag is one of ours (only C can write a userdata's
 * bytes, and only this file writes the tag): two API calls, where
 * luaL_checkudata looks the metatable up by name and compares. */
static wsuv_lconn_t *test_conn(lua_State *L, int idx) {
  wsuv_lconn_t *b = lua_touserdata(L, idx); /* light userdata: length 0 */
  if (b && lua_rawlen(L, idx) == sizeof(*b) && b->magic == WSUV_LCONN_MAGIC)
    return b;
  return NULL;
}

static wsuv_lconn_t *check_conn(lua_State *L) {
  wsuv_lconn_t *b = test_conn(L, 1);
  if (b) {
    b->ll->L = L;
    return b;
  }
  return luaL_checkudata(L, 1, WSUV_CONN_MT); /* raises the usual error */
}

static wsuv_lserver_t *check_server(lua_State *L) {
  wsuv_lserver_t *b = luaL_checkudata(L, 1, WSUV_SERVER_MT);
  b->ll->L = L;
  return b;
}

static void unref(lua_State *L, int *ref) {
  if (*ref != LUA_NOREF && *ref != LUA_REFNIL)
    luaL_unref(L, LUA_REGISTRYINDEX, *ref);
  *ref = LUA_NOREF;
}

static void set_ref_string(lua_State *L, int *ref, const void *p, size_t n) {
  unref(L, ref);
  lua_pushlstring(L, (const char *)p, n);
  *ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

static void push_ref(lua_State *L, int ref) {
  if (ref == LUA_NOREF || ref == LUA_REFNIL)
    lua_pushnil(L);
  else
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
}

/* Pushes {name1, value1, name2, value2, ...} of a parsed head. */
static void push_header_list(lua_State *L, const wsuv_http_head_t *h) {
  lua_createtable(L, (int)(h->num_headers * 2), 0);
  for (size_t i = 0; i < h->num_headers; i++) {
    lua_pushlstring(L, h->headers[i].name, h->headers[i].name_len);
    lua_rawseti(L, -2, (int)(2 * i + 1));
    lua_pushlstring(L, h->headers[i].value, h->headers[i].value_len);
    lua_rawseti(L, -2, (int)(2 * i + 2));
  }
}

/* Client: {status, reason, headers, body} of the server's response. */
static void push_response(lua_State *L, wsuv_tconn_t *c) {
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, c->hs->http.status);
  lua_setfield(L, -2, "status");
  lua_pushlstring(L, c->hs->http.reason ? c->hs->http.reason : "",
                  c->hs->http.reason_len);
  lua_setfield(L, -2, "reason");
  push_header_list(L, &c->hs->http);
  lua_setfield(L, -2, "headers");
  size_t body = c->hs->head_len > c->hs->head_parsed
                    ? c->hs->head_len - c->hs->head_parsed
                    : 0;
  if (c->hs->http.status == 101) body = 0;
  lua_pushlstring(L, c->hs->head + c->hs->head_parsed, body);
  lua_setfield(L, -2, "body");
}

/* ---- The message queue (see wsuv_lloop_t.inbox) ----------------------- */

static int slot_alloc(wsuv_lloop_t *ll) {
  ll->nqueued++;
  return ll->nfree ? ll->free_slots[--ll->nfree] : ++ll->inbox_top;
}

/* After a burst the inbox's array stays as large as the burst was: once
 * nothing is queued, a large one is replaced by a new table. */
#define INBOX_KEEP 4096

static void slot_free(lua_State *L, wsuv_lloop_t *ll, int slot) {
  if (--ll->nqueued == 0 && ll->inbox_top > INBOX_KEEP) {
    lua_newtable(L);
    lua_rawseti(L, LUA_REGISTRYINDEX, ll->inbox);
    ll->inbox_top = 0;
    free(ll->free_slots); /* as large as the burst too */
    ll->free_slots = NULL;
    ll->nfree = ll->free_cap = 0;
    return;
  }
  if (ll->nfree == ll->free_cap) {
    size_t cap = ll->free_cap ? ll->free_cap * 2 : 64;
    int *f = realloc(ll->free_slots, cap * sizeof(*f));
    if (!f) return; /* the slot is never reused: harmless */
    ll->free_slots = f;
    ll->free_cap = cap;
  }
  ll->free_slots[ll->nfree++] = slot;
}

/* A small message waits in its connection's FIFO and becomes a Lua string
 * when taken, where one in the inbox costs two table stores and two loads
 * (bench (2), 32-byte messages: the inbox path was about 5% of the 5.4
 * server). Past this size the second copy costs more than those. */
#define INLINE_MAX 256
/* A FIFO starts small: 10,000 connections that each get a message in one
 * pass (bench (4)'s echo) would otherwise hold 10 MB at once, which stays
 * resident after it is freed (1 KiB FIFOs read 540 B more per idle
 * connection). Freed FIFOs of the two sizes below are kept per loop for
 * reuse (up to QPOOL_MAX each), so a message in flight costs no malloc,
 * and one that grew to QBUF_LARGE (16 messages of 32 bytes fit) serves the
 * next burst of any connection without growing again. */
#define QBUF_SMALL 64
#define QBUF_LARGE 1024
#define QPOOL_MAX  256
#define QBUF_LIMIT ((uint32_t)1 << 30) /* record bytes queued, at most */

/* A pooled buffer's first bytes hold the next free one (a list threaded
 * through the free buffers). */
static uint8_t *qbuf_take(wsuv_lloop_t *ll, int large) {
  uint8_t *p = ll->qfree[large];
  if (p) {
    memcpy(&ll->qfree[large], p, sizeof(uint8_t *));
    ll->nqfree[large]--;
  }
  return p;
}

static void qbuf_put(wsuv_lloop_t *ll, uint8_t *p, uint32_t cap) {
  int large = cap == QBUF_LARGE;
  if ((!large && cap != QBUF_SMALL) || ll->nqfree[large] >= QPOOL_MAX ||
      ll->closed) {
    free(p);
    return;
  }
  memcpy(p, &ll->qfree[large], sizeof(uint8_t *));
  ll->qfree[large] = p;
  ll->nqfree[large]++;
}

void wsuv__lua_qpool_free(wsuv_lloop_t *ll) {
  for (int large = 0; large < 2; large++) {
    uint8_t *p;
    while ((p = qbuf_take(ll, large)))
      free(p);
  }
}

/* Appends a record of payload bytes data[0..len) inline, or with data NULL
 * of the inbox slot len; 0, or -1 when out of memory. */
static int queue_push(wsuv_lconn_t *b, int flags, const uint8_t *data,
                      uint32_t len) {
  uint32_t need = (uint32_t)sizeof(wsuv_qrec_t) + (data ? len : 0);
  if (!b->q) {
    uint32_t cap = QBUF_LARGE;
    b->q = need <= cap ? qbuf_take(b->ll, 1) : NULL;
    if (!b->q) {
      cap = QBUF_SMALL;
      b->q = need <= cap ? qbuf_take(b->ll, 0) : NULL;
    }
    if (!b->q) {
      while (cap < need)
        cap *= 2;
      b->q = malloc(cap);
      if (!b->q) return -1;
    }
    b->qcap = cap;
    b->qhead = b->qtail = 0;
  } else if (b->qcap - b->qtail < need) {
    uint32_t used = b->qtail - b->qhead;
    if (used + need > QBUF_LIMIT) return -1;
    if (used + need <= b->qcap / 2) { /* taken records left room */
      memmove(b->q, b->q + b->qhead, used);
    } else {
      uint32_t cap = b->qcap * 2;
      while (cap < used + need)
        cap *= 2;
      uint8_t *q = malloc(cap);
      if (!q) return -1;
      memcpy(q, b->q + b->qhead, used);
      qbuf_put(b->ll, b->q, b->qcap);
      b->q = q;
      b->qcap = cap;
    }
    b->qhead = 0;
    b->qtail = used;
  }
  wsuv_qrec_t r = {len, (uint32_t)flags};
  memcpy(b->q + b->qtail, &r, sizeof(r));
  if (data) memcpy(b->q + b->qtail + sizeof(r), data, len);
  b->qtail += need;
  return 0;
}

/* Removes the oldest record (b->q must be set); pushes its message unless
 * L is NULL, and sets *len to its length. Its flags. */
static int queue_pop(lua_State *L, wsuv_lconn_t *b, size_t *len) {
  wsuv_lloop_t *ll = b->ll;
  wsuv_qrec_t r;
  memcpy(&r, b->q + b->qhead, sizeof(r));
  *len = 0;
  uint32_t size = (uint32_t)sizeof(r);
  if (!(r.flags & FLAG_SLOT)) {
    if (L) lua_pushlstring(L, (const char *)b->q + b->qhead + size, r.n);
    size += r.n;
    *len = r.n;
  } else if (L) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, ll->inbox);
    lua_rawgeti(L, -1, (int)r.n);
    lua_pushnil(L);
    lua_rawseti(L, -3, (int)r.n);
    lua_remove(L, -2);
    *len = lua_rawlen(L, -1);
    slot_free(L, ll, (int)r.n);
  }
  b->qhead += size;
  if (b->qhead == b->qtail) { /* emptied: an idle connection holds none */
    qbuf_put(ll, b->q, b->qcap);
    b->q = NULL;
  }
  return (int)r.flags;
}

/* ---- Hooks from the transport ------------------------------------------ */

/* Lua 5.1 and LuaJIT pace their collector per allocation, not per byte:
 * a 16 MiB string buys no more of its work than a 16-byte one, so big
 * messages pile up as garbage (220-370 MB of RSS in a LuaJIT echo of 16 MiB
 * messages, 14 of them freed at once) and each new one maps and zeroes
 * fresh pages, past the block cache. Every PACE_BYTES of big messages, the
 * collector is told of them, as Lua 5.2+ count them anyway; what it frees
 * then refills the block cache (PACE_BYTES is half its default limit). */
#define PACE_BYTES (16u * 1024 * 1024)

static void pace_collector(lua_State *L, wsuv_lloop_t *ll, size_t len) {
#if LUA_VERSION_NUM == 501
  if (len < WSUV_BCACHE_MIN) return; /* paced well enough by count */
  ll->unpaced += len;
  if (ll->unpaced < PACE_BYTES) return;
  size_t kib = ll->unpaced >> 10;
  ll->unpaced = 0;
  /* A step restarts a collector stopped by collectgarbage("stop"). LuaJIT
   * tells whether it runs (option 9, its LUA_GCISRUNNING: 0 when stopped);
   * plain Lua 5.1 has no such option (-1) and cannot tell. */
  if (lua_gc(L, 9, 0) == 0) return;
  lua_gc(L, LUA_GCSTEP, kib > INT_MAX ? INT_MAX : (int)kib);
#else
  (void)L;
  (void)ll;
  (void)len;
#endif
}

static void hook_event(wsuv_tconn_t *c, const wsuv_event_t *ev) {
  wsuv_lconn_t *b = c->obj.data;
  if (!b || b->ll->closed) return;
  lua_State *L = b->ll->L;
  switch (ev->type) {
  case WSUV_EV_TEXT:
  case WSUV_EV_BINARY: {
    wsuv_lloop_t *ll = b->ll;
    int flags =
        (ev->type == WSUV_EV_TEXT ? FLAG_TEXT : 0) | (ev->fin ? FLAG_FIN : 0);
    if (ev->len <= INLINE_MAX) {
      if (queue_push(b, flags, ev->data, (uint32_t)ev->len) != 0)
        wsuv__abort(c, WSUV_ENOMEM, "out of memory for a message");
      break;
    }
    int slot = slot_alloc(ll);
    if (queue_push(b, flags | FLAG_SLOT, NULL, (uint32_t)slot) != 0) {
      slot_free(L, ll, slot);
      wsuv__abort(c, WSUV_ENOMEM, "out of memory for a message");
      break;
    }
    if (ev->len >= WSUV_BCACHE_MIN && !ll->bcache) wsuv__bcache_install(L, ll);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ll->inbox);
    lua_pushlstring(L, (const char *)ev->data, ev->len);
    lua_rawseti(L, -2, slot);
    lua_pop(L, 1);
    pace_collector(L, ll, ev->len);
    break;
  }
  case WSUV_EV_PONG:
    set_ref_string(L, &b->pong, ev->data, ev->len);
    b->pongs++;
    break;
  case WSUV_EV_CLOSE:
    b->close_code = ev->close_code;
    set_ref_string(L, &b->close_reason, ev->data, ev->len);
    break;
  default:
    break;
  }
}

/* The close code of a connection that ended without the peer's close. */
static int failure_code(int err, int ws_code) {
  if (err <= -30000 && err != WSUV_ECLOSED && err != WSUV_EHANDSHAKE)
    return wsuv_err_close_code(err);
  return ws_code ? ws_code : 1006;
}

static void capture_final(lua_State *L, wsuv_lconn_t *b, wsuv_tconn_t *c) {
  b->error = c->error;
  if (c->why) set_ref_string(L, &b->why, c->why, strlen(c->why));
  if (!b->close_code) {
    b->close_code = failure_code(c->error, c->ws_inited ? c->ws.close_code : 0);
    const char *r = c->why ? c->why : "connection closed";
    set_ref_string(L, &b->close_reason, r, strlen(r));
  }
  if (c->role == WSUV_ROLE_CLIENT && c->hs && c->hs->head_parsed &&
      b->info == LUA_NOREF) {
    push_response(L, c);
    b->info = luaL_ref(L, LUA_REGISTRYINDEX);
  }
}

/* The object's waiters must still learn that it is gone: its anchor moves
 * to the loop's woken list, which the next core.ready() hands out (and
 * releases). */
static void wake_freed(wsuv_lloop_t *ll, int *anchor) {
  if (ll->nwoken == ll->woken_cap) {
    size_t cap = ll->woken_cap ? ll->woken_cap * 2 : 16;
    int *w = realloc(ll->woken, cap * sizeof(*w));
    if (!w) {
      unref(ll->L, anchor);
      return;
    }
    ll->woken = w;
    ll->woken_cap = cap;
  }
  ll->woken[ll->nwoken++] = *anchor;
  *anchor = LUA_NOREF;
}

static void hook_freed(wsuv_obj_t *o) {
  if (!o->data) return;
  if (o->kind == WSUV_OBJ_SERVER) {
    wsuv_lserver_t *b = o->data;
    b->s = NULL;
    if (!b->ll->closed) wake_freed(b->ll, &b->anchor);
    return;
  }
  wsuv_lconn_t *b = o->data;
  wsuv_tconn_t *c = (wsuv_tconn_t *)o;
  b->c = NULL;
  if (b->ll->closed) return;
  capture_final(b->ll->L, b, c);
  wake_freed(b->ll, &b->anchor);
}

void wsuv__lua_hooks(wsuv_hooks_t *h) {
  h->event = hook_event;
  h->freed = hook_freed;
}

/* ---- Connections ------------------------------------------------------- */

wsuv_lconn_t *wsuv__lua_new_conn(lua_State *L, wsuv_lloop_t *ll,
                                 wsuv_tconn_t *c) {
#if LUA_VERSION_NUM >= 504
  wsuv_lconn_t *b = lua_newuserdatauv(L, sizeof(*b), 0); /* no user value */
#else
  wsuv_lconn_t *b = lua_newuserdata(L, sizeof(*b));
#endif
  memset(b, 0, sizeof(*b));
  b->magic = WSUV_LCONN_MAGIC;
  b->c = c;
  b->ll = ll;
  b->close_reason = b->why = b->info = b->pong = b->request = LUA_NOREF;
  b->role = c->role;
  b->stream = (uint8_t)c->lim->stream;
  luaL_setmetatable(L, WSUV_CONN_MT);
  lua_pushvalue(L, -1);
  b->anchor = luaL_ref(L, LUA_REGISTRYINDEX);
  c->obj.data = b;
  return b;
}

/* Whether the connection will deliver no more messages. */
static int conn_done(wsuv_lconn_t *b) {
  wsuv_tconn_t *c = b->c;
  if (!c) return 1;
  if (c->phase < WSUV_PHASE_OPEN) return 0;
  return !c->ws_inited || c->ws.state == WSUV_STATE_CLOSED;
}

static int push_closed(lua_State *L, wsuv_lconn_t *b) {
  wsuv_tconn_t *c = b->c;
  int code = b->close_code;
  lua_pushnil(L);
  lua_pushliteral(L, "closed");
  if (!code && c)
    code = failure_code(c->error, c->ws_inited ? c->ws.close_code : 0);
  lua_pushinteger(L, code ? code : 1006);
  if (b->close_reason != LUA_NOREF)
    push_ref(L, b->close_reason);
  else if (c && c->why)
    lua_pushstring(L, c->why);
  else
    lua_pushliteral(L, "");
  return 4;
}

/* What try_receive returns, without "again": the number of values pushed,
 * or 0 when nothing has arrived and the connection is open. */
static int receive_now(lua_State *L, wsuv_lconn_t *b) {
  if (b->q) {
    size_t len;
    int flags = queue_pop(L, b, &len);
    if (b->c) wsuv__consumed(b->c, len);
    lua_pushvalue(L, flags & FLAG_TEXT ? KIND_TEXT : KIND_BINARY);
    if (b->stream) {
      lua_pushboolean(L, flags & FLAG_FIN);
      return 3;
    }
    return 2;
  }
  if (b->c && b->c->defer_close)
    wsuv__release_close(b->c); /* Everything before the close was read. */
  if (conn_done(b)) return push_closed(L, b);
  return 0;
}

/* data, kind[, fin] | nil, "again" | nil, "closed", code, reason */
static int l_conn_try_receive(lua_State *L) {
  int n = receive_now(L, check_conn(L));
  if (n) return n;
  lua_pushnil(L);
  lua_pushvalue(L, STR_AGAIN); /* once per wait: no interning lookup */
  return 2;
}

int wsuv__lua_push_error(lua_State *L, int err, const char *msg) {
  lua_pushnil(L);
  if (msg)
    lua_pushstring(L, msg);
  else
    lua_pushstring(L, err <= -30000 ? wsuv_strerror(err) : uv_strerror(err));
  lua_pushstring(L, err <= -30000 ? wsuv_err_name(err) : uv_err_name(err));
  return 3;
}

typedef struct {
  wsuv_pin_t base;
  lua_State *L;
  wsuv_lloop_t *ll;
  int ref;
} lpin_t;

static void pin_release(wsuv_pin_t *p) {
  lpin_t *pin = (lpin_t *)p;
  if (!pin->ll->closed) luaL_unref(pin->ll->L, LUA_REGISTRYINDEX, pin->ref);
  free(pin);
}

/* Pins the string at idx for the write queue; refs start at 1 (ours). */
static lpin_t *pin_string(lua_State *L, wsuv_lloop_t *ll, int idx) {
  lpin_t *pin = malloc(sizeof(*pin));
  if (!pin) return NULL;
  pin->base.refs = 1;
  pin->base.release = pin_release;
  pin->ll = ll;
  lua_pushvalue(L, idx);
  pin->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return pin;
}

static void pin_drop(lpin_t *pin) {
  if (pin && --pin->base.refs == 0) pin->base.release(&pin->base);
}

static unsigned check_opcode(lua_State *L, int idx) {
  static const char *const names[] = {"text", "binary", "continuation",
                                      "ping", "pong",   NULL};
  static const unsigned codes[] = {WSUV_OP_TEXT, WSUV_OP_BINARY, WSUV_OP_CONT,
                                   WSUV_OP_PING, WSUV_OP_PONG};
  /* The two kinds of every message first: per-message cost. */
  if (lua_type(L, idx) == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    if (n == 6 && memcmp(s, "binary", 6) == 0) return WSUV_OP_BINARY;
    if (n == 4 && memcmp(s, "text", 4) == 0) return WSUV_OP_TEXT;
  }
  return codes[luaL_checkoption(L, idx, "text", names)];
}

static int send_error(lua_State *L, int err) {
  if (err == WSUV_EBUFFULL) return wsuv__lua_push_error(L, err, "buffer full");
  if (err == WSUV_ECLOSED) return wsuv__lua_push_error(L, err, "closed");
  if (err == WSUV_ESTATE)
    return wsuv__lua_push_error(L, err, "a streamed message is unfinished");
  return wsuv__lua_push_error(L, err, NULL);
}

/* After a frame went into c's queue: whether the queue is now above
 * high_water; then the connection becomes ready when it drains below. */
static int over_high_water(wsuv_tconn_t *c) {
  if (c->queued <= c->lim->high_water) return 0;
  c->drain_wanted = WSUV_DRAIN_HIGH;
  return 1;
}

/* Queues the string at idx as one frame: 0, or a WSUV error. *over: the
 * queue is now above high_water (and the connection becomes ready when it
 * drains below). */
static int queue_frame(lua_State *L, wsuv_lconn_t *b, int idx, unsigned opcode,
                       int fin, int plain, int *over) {
  size_t len;
  const char *data = lua_tolstring(L, idx, &len);
  if (!b->c) return WSUV_ECLOSED;
  if (opcode == WSUV_OP_TEXT && fin &&
      !wsuv_utf8_valid((const uint8_t *)data, len))
    return luaL_argerror(L, idx, "text is not valid UTF-8");
  lpin_t *pin = NULL;
  if (wsuv__pins(b->c, len)) pin = pin_string(L, b->ll, idx);
  int err = wsuv__send(b->c, opcode, fin ? WSUV_FIN : 0, (const uint8_t *)data,
                       len, pin ? &pin->base : NULL, plain);
  pin_drop(pin);
  if (err) return err;
  *over = over_high_water(b->c);
  return 0;
}

/* conn:send_frame(data, kind, fin, plain) -> true, over | nil, msg, code
 * (over: see queue_frame). Data that is not a string: nil, false (the
 * caller raises, with its own name for the error). */
static int l_conn_send(lua_State *L) {
  wsuv_lconn_t *b = check_conn(L);
  if (lua_type(L, 2) != LUA_TSTRING) { /* nil, false: Lua raises */
    lua_pushnil(L);
    lua_pushboolean(L, 0);
    return 2;
  }
  unsigned opcode = check_opcode(L, 3);
  int fin = lua_isnoneornil(L, 4) || lua_toboolean(L, 4);
  int over = 0;
  int err = queue_frame(L, b, 2, opcode, fin, lua_toboolean(L, 5), &over);
  if (err) return send_error(L, err);
  lua_pushboolean(L, 1);
  lua_pushboolean(L, over);
  return 2;
}

/* conn:send's usual case on LuaJIT, called through the FFI by conn.lua
 * (core._ffi_send points to a pointer to it). A compiled trace calls it
 * with no Lua frame: called as a C function, a send that followed a
 * receive made LuaJIT grow each handler's coroutine stack (440 bytes), and
 * each message left the trace to call it. box is the connection's
 * userdata payload (conn.lua checks its metatable first), data a Lua
 * string's bytes. It does only what needs no Lua state: a text or binary
 * message with no options, not pinned (see queue_frame); wsuv__send
 * compresses it as for any other send.
 * n is the length, or -1 - the length for binary: three arguments, because
 * an interpreted FFI call sits one slot higher than a C function's.
 * Returns 0: queued, the queue under high_water; 1: queued, over it; -1:
 * not for this path (conn.lua goes the usual way); else the WSUV error of
 * the send (conn.lua sends again only after WSUV_EBUFFULL, which
 * send_begin returns before anything changed). */
static int ffi_send(void *box, const char *data, ptrdiff_t n) {
  wsuv_lconn_t *b = box;
  wsuv_tconn_t *c = b->c;
  int binary = n < 0;
  size_t len = (size_t)(binary ? -1 - n : n);
  if (!c || wsuv__pins(c, len) ||
      (!binary && !wsuv_utf8_valid((const uint8_t *)data, len)))
    return -1;
  int err = wsuv__send(c, binary ? WSUV_OP_BINARY : WSUV_OP_TEXT, WSUV_FIN,
                       (const uint8_t *)data, len, NULL, 0);
  return err ? err : over_high_water(c);
}

static int (*const ffi_send_ptr)(void *, const char *, ptrdiff_t) = ffi_send;

/* conn:_send_failed(err) -> nil, msg, code: what conn:send returns for the
 * WSUV error err of a send (ffi_send's). */
static int l_conn_send_failed(lua_State *L) {
  check_conn(L);
  return send_error(L, (int)luaL_checkinteger(L, 2));
}

void wsuv__lua_push_ffi_send(lua_State *L) {
  lua_pushlightuserdata(L, (void *)&ffi_send_ptr);
}

#if LUA_VERSION_NUM >= 504
/* The upvalues of conn:send and conn:receive below, after the strings of
 * every method: conn.lua's send_finish or receive_wait, and the scheduler
 * module (its `current`: a wsuv coroutine is running). */
#  define LUA_REST  lua_upvalueindex(METHOD_STRINGS + 1)
#  define SCHEDULER lua_upvalueindex(METHOD_STRINGS + 2)

/* The continuation of a lua_callk: what the Lua function returned. */
static int returned_k(lua_State *L, int status, lua_KContext base) {
  (void)status;
  return lua_gettop(L) - (int)base;
}

/* conn:send(data[, kind[, opts]]) on Lua 5.4, where a Lua method calling
 * send_frame made two calls per message and this makes one (bench scenario
 * (2), on_connect: 1.40-1.47M msg/s before, 1.50-1.61M with conn:receive
 * below). The usual case ends here: the frame queued, the queue under
 * high_water, a scheduler coroutine running (the loop writes when it
 * yields). Anything else (a full queue, a queue over
 * high_water, no coroutine: write now) goes on in conn.lua's send_finish,
 * under lua_callk so that it may wait; C itself never yields. Lua 5.1 and
 * LuaJIT have no lua_callk and keep the Lua method. */
static int l_conn_send_message(lua_State *L) {
  wsuv_lconn_t *b = check_conn(L);
  unsigned opcode = WSUV_OP_TEXT;
  if (!lua_isnoneornil(L, 3)) {
    if (lua_rawequal(L, 3, KIND_BINARY))
      opcode = WSUV_OP_BINARY;
    else if (!lua_rawequal(L, 3, KIND_TEXT))
      return luaL_error(L, "send: kind must be \"text\" or \"binary\"");
  }
  int plain = 0;
  if (!lua_isnoneornil(L, 4)) {
    if (!lua_istable(L, 4))
      return luaL_error(L, "send: options must be a table");
    lua_getfield(L, 4, "compress");
    plain = lua_isboolean(L, -1) && !lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  if (lua_type(L, 2) != LUA_TSTRING)
    return luaL_error(L, "send: data must be a string, got %s",
                      lua_isnone(L, 2) ? "nil" : luaL_typename(L, 2));
  int over = 0;
  int err = queue_frame(L, b, 2, opcode, 1, plain, &over);
  if (!err && !over) {
    if (lua_getfield(L, SCHEDULER, "current") != LUA_TNIL) {
      lua_pushboolean(L, 1);
      return 1;
    }
    lua_pop(L, 1);
  }
  int base = lua_gettop(L);
  lua_pushvalue(L, LUA_REST);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, opcode == WSUV_OP_BINARY ? KIND_BINARY : KIND_TEXT);
  lua_pushboolean(L, plain);
  if (err) {
    send_error(L, err);
  } else {
    lua_pushboolean(L, 1);
    lua_pushboolean(L, over);
    lua_pushnil(L);
  }
  lua_callk(L, 7, LUA_MULTRET, base, returned_k);
  return returned_k(L, LUA_OK, base);
}

/* The wait of conn:receive on Lua 5.4, with the connection, its timeout
 * and the deadline (or nil) at 1..3: conn.lua's receive_wait waits once
 * for news and returns nothing, or nil, "timeout", "ETIMEDOUT"; then the
 * message is taken here, or the wait goes on. The loop is C's so that a
 * wake makes no try_receive call through Lua. */
static int receive_k(lua_State *L, int status, lua_KContext ctx);

/* After one wait: the number of values to return, or 0 to wait again. */
static int receive_woken(lua_State *L) {
  if (lua_gettop(L) > 3) return lua_gettop(L) - 3; /* the wait failed */
  wsuv_lconn_t *b = lua_touserdata(L, 1);
  b->ll->L = L;
  return receive_now(L, b);
}

static int receive_loop(lua_State *L) {
  for (;;) {
    lua_pushvalue(L, LUA_REST);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 3);
    lua_callk(L, 2, LUA_MULTRET, 0, receive_k);
    int n = receive_woken(L); /* the wait returned without yielding */
    if (n) return n;
  }
}

static int receive_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  int n = receive_woken(L);
  return n ? n : receive_loop(L);
}

/* conn:receive([timeout]) on Lua 5.4, for the same reason as conn:send: a
 * message that has arrived, or the end of a closed connection, returns
 * from here; a wait goes on in receive_loop. */
static int l_conn_receive(lua_State *L) {
  wsuv_lconn_t *b = check_conn(L);
  int timed = !lua_isnoneornil(L, 2);
  if (timed && (lua_type(L, 2) != LUA_TNUMBER || lua_tonumber(L, 2) < 0))
    return luaL_error(L, "timeout must be a non-negative number of seconds");
  int n = receive_now(L, b);
  if (n) return n;
  lua_Number timeout = timed ? lua_tonumber(L, 2) : -1;
  if (timeout == 0) { /* receive(0) polls */
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    lua_pushliteral(L, "ETIMEDOUT");
    return 3;
  }
  lua_settop(L, 2);
  if (timed) /* the clock of core.now */
    lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9 + timeout);
  else
    lua_pushnil(L);
  return receive_loop(L);
}

/* core._fast_methods(send_finish, receive_wait, scheduler) -> conn:send,
 * conn:receive (Lua 5.4 only). */
int wsuv__lua_fast_methods(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_checktype(L, 3, LUA_TTABLE);
  for (int i = 0; i < 2; i++) {
    push_method_strings(L);
    lua_pushvalue(L, 1 + i);
    lua_pushvalue(L, 3);
    lua_pushcclosure(L, i == 0 ? l_conn_send_message : l_conn_receive,
                     METHOD_STRINGS + 2);
  }
  return 2;
}
#endif

/* conn:flush(): writes what is queued now rather than at the end of the
 * loop's pass (a game loop that wants a message out before a long frame). */
static int l_conn_flush(lua_State *L) {
  wsuv_lconn_t *b = check_conn(L);
  if (b->c && b->c->dirty) wsuv__conn_flush(b->c);
  return 0;
}

/* conn:queued([empty]) -> bytes queued, high water mark, limit. Above the
 * high water mark, the connection becomes ready when the queue drains below
 * it; with empty true, when the queue is empty (a sender waiting for room
 * for a frame that does not fit under the limit yet). */
static int l_conn_queued(lua_State *L) {
  wsuv_lconn_t *b = check_conn(L);
  wsuv_tconn_t *c = b->c;
  int empty = lua_toboolean(L, 2);
  if (c && c->queued > (empty ? 0 : c->lim->high_water)) {
    uint8_t want = empty ? WSUV_DRAIN_EMPTY : WSUV_DRAIN_HIGH;
    if (!c->drain_wanted || want < c->drain_wanted) c->drain_wanted = want;
  }
  lua_pushinteger(L, c ? (lua_Integer)c->queued : 0);
  lua_pushinteger(L, c ? (lua_Integer)c->lim->high_water : 0);
  lua_pushinteger(L, c ? (lua_Integer)c->lim->max_queued : 0);
  return 3;
}

/* conn:close([code[, reason]]) -> true | nil, msg, code */
static int l_conn_close(lua_State *L) {
  wsuv_lconn_t *b = check_conn(L);
  int code = (int)luaL_optinteger(L, 2, 1000);
  size_t len = 0;
  const char *reason = luaL_optlstring(L, 3, "", &len);
  if (!b->c) return send_error(L, WSUV_ECLOSED);
  int err = wsuv__close(b->c, code, reason, len);
  if (err == WSUV_EINVAL)
    return luaL_error(L, "close: invalid code %d or reason", code);
  if (err) return send_error(L, err);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:abort() closes the socket at once. Also __gc and __close. */
static int l_conn_abort(lua_State *L) {
  wsuv_lconn_t *b = check_conn(L);
  if (b->c) wsuv__abort(b->c, WSUV_ECLOSED, "aborted");
  return 0;
}

static int l_conn_gc(lua_State *L) {
  wsuv_lconn_t *b = luaL_checkudata(L, 1, WSUV_CONN_MT);
  if (b->c) return 0; /* Anchored while open; cannot happen. */
  while (b->q) {      /* messages nobody took */
    size_t len;
    if (b->ll->closed) {
      queue_pop(NULL, b, &len);
      continue;
    }
    queue_pop(L, b, &len);
    lua_pop(L, 1);
  }
  unref(L, &b->close_reason);
  unref(L, &b->why);
  unref(L, &b->info);
  unref(L, &b->pong);
  unref(L, &b->request);
  return 0;
}

/* conn:state() -> phase, error message, error name */
static int l_conn_state(lua_State *L) {
  wsuv_lconn_t *b = check_conn(L);
  wsuv_tconn_t *c = b->c;
  int err = c ? c->error : b->error;
  const char *phase = c ? phase_names[c->phase] : "closed";
  if (c && c->phase == WSUV_PHASE_OPEN && c->ws_inited &&
      c->ws.state != WSUV_STATE_OPEN)
    phase = "closing";
  lua_pushstring(L, phase);
  if (!err) return 1;
  if (c && c->why)
    lua_pushstring(L, c->why);
  else if (!c && b->why != LUA_NOREF)
    push_ref(L, b->why);
  else
    lua_pushstring(L, err <= -30000 ? wsuv_strerror(err) : uv_strerror(err));
  lua_pushstring(L, err <= -30000 ? wsuv_err_name(err) : uv_err_name(err));
  return 3;
}

/* conn:close_status() -> code, reason once closed (what receive reports
 * after the last message), else nothing. Takes no message: conn:close()
 * leaves unread ones readable. */
static int l_conn_close_status(lua_State *L) {
  wsuv_lconn_t *b = check_conn(L);
  if (!conn_done(b)) return 0;
  push_closed(L, b); /* nil, "closed", code, reason: the last two */
  return 2;
}

static int l_conn_peer(lua_State *L) {
  wsuv_lconn_t *b = check_conn(L);
  char ip[64];
  int port = b->c ? wsuv__peer(b->c, ip, sizeof(ip)) : -1;
  if (port < 0) return 0;
  lua_pushstring(L, ip);
  lua_pushinteger(L, port);
  return 2;
}

static int l_conn_protocol(lua_State *L) {
  wsuv_lconn_t *b = check_conn(L);
  if (!b->c || !b->c->protocol) return 0;
  lua_pushstring(L, b->c->protocol);
  return 1;
}

/* Server side, before the upgrade: method, target, minor, header list. */
/* Pushes whether h is an upgrade: true, false (plain HTTP), or the status
 * to refuse it with; then why. */
static void push_upgrade(lua_State *L, const wsuv_http_head_t *h) {
  const char *key = NULL, *why = NULL;
  size_t key_len = 0;
  int st = wsuv_handshake_check_request(h, &key, &key_len, &why);
  if (st == 0)
    lua_pushboolean(L, 1);
  else if (st == WSUV_ENOTUPGRADE)
    lua_pushboolean(L, 0);
  else
    lua_pushinteger(L, st);
  lua_pushstring(L, why ? why : "");
}

/* method, target, minor, header list, upgrade, why */
static int push_request(lua_State *L, const wsuv_http_head_t *h) {
  lua_pushlstring(L, h->method, h->method_len);
  lua_pushlstring(L, h->target, h->target_len);
  lua_pushinteger(L, h->version_minor);
  push_header_list(L, h);
  push_upgrade(L, h);
  return 6;
}

static int l_conn_request(lua_State *L) {
  wsuv_lconn_t *b = check_conn(L);
  wsuv_tconn_t *c = b->c;
  if (!c || c->role != WSUV_ROLE_SERVER || !c->hs || !c->hs->head_parsed)
    return 0;
  return push_request(L, &c->hs->http);
}

/* Pushes every value of the headers named name joined with ", ", or nil. */
static void push_joined(lua_State *L, const wsuv_http_head_t *h,
                        const char *name) {
  int n = 0;
  for (int i = wsuv_http_find(h, name, 0); i >= 0;
       i = wsuv_http_find(h, name, (size_t)i + 1)) {
    if (n++) lua_pushliteral(L, ", ");
    lua_pushlstring(L, h->headers[i].value, h->headers[i].value_len);
  }
  if (n)
    lua_concat(L, 2 * n - 1);
  else
    lua_pushnil(L);
}

/* conn:request_brief() -> target, upgrade, why, protocols, origin, record:
 * what the server's policy needs without building the request table, and
 * the record to build it from later (peer, then the raw head for
 * core.parse_request). */
static int l_conn_request_brief(lua_State *L) {
  wsuv_lconn_t *b = check_conn(L);
  wsuv_tconn_t *c = b->c;
  if (!c || c->role != WSUV_ROLE_SERVER || !c->hs || !c->hs->head_parsed)
    return 0;
  lua_pushlstring(L, c->hs->http.target, c->hs->http.target_len);
  push_upgrade(L, &c->hs->http);
  push_joined(L, &c->hs->http, "sec-websocket-protocol");
  push_joined(L, &c->hs->http, "origin");
  /* The request record: "ip\0port\0" then the raw head, one string (what
   * conn:request() is made from; the connection keeps it). */
  char ip[64];
  int port = wsuv__peer(c, ip, sizeof(ip));
  luaL_Buffer rec;
  luaL_buffinit(L, &rec);
  if (port >= 0) {
    luaL_addstring(&rec, ip);
    luaL_addchar(&rec, '\0');
    lua_pushinteger(L, port);
    luaL_addvalue(&rec);
  } else {
    luaL_addchar(&rec, '\0');
  }
  luaL_addchar(&rec, '\0');
  luaL_addlstring(&rec, c->hs->head, c->hs->head_parsed);
  luaL_pushresult(&rec);
  if (b->request == LUA_NOREF) { /* kept in the box: no table entry */
    lua_pushvalue(L, -1);
    b->request = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  return 6;
}

/* conn:request_kept([value]) -> what the connection keeps of its request:
 * the record request_brief made, or the table conn:request() built from
 * it and stores here; nil on a client. */
static int l_conn_request_kept(lua_State *L) {
  wsuv_lconn_t *b = check_conn(L);
  if (lua_gettop(L) >= 2 && b->request != LUA_NOREF) {
    lua_settop(L, 2);
    lua_rawseti(L, LUA_REGISTRYINDEX, b->request);
    return 0;
  }
  push_ref(L, b->request);
  return 1;
}

/* core.parse_request(raw) -> as conn:request_head(), or nil, msg */
int wsuv__lua_parse_request(lua_State *L) {
  size_t len;
  const char *raw = luaL_checklstring(L, 1, &len);
  wsuv_header_t hdrs[WSUV_DEFAULT_MAX_HEADERS];
  wsuv_http_head_t h;
  memset(&h, 0, sizeof(h));
  h.headers = hdrs;
  h.num_headers = WSUV_DEFAULT_MAX_HEADERS;
  ssize_t n = wsuv_http_parse_request(raw, len, len + 1, &h);
  if (n <= 0) return wsuv__lua_push_error(L, n ? (int)n : WSUV_EHTTP, NULL);
  return push_request(L, &h);
}

/* Client side: the server's response table, also after a refusal. */
static int l_conn_response(lua_State *L) {
  wsuv_lconn_t *b = check_conn(L);
  wsuv_tconn_t *c = b->c;
  if (b->info != LUA_NOREF) {
    push_ref(L, b->info);
    return 1;
  }
  if (!c || c->role != WSUV_ROLE_CLIENT || !c->hs || !c->hs->head_parsed)
    return 0;
  push_response(L, c);
  return 1;
}

static void check_headers(lua_State *L, int idx, wsuv_header_t *h, size_t *n) {
  size_t cap = *n;
  *n = 0;
  if (lua_isnoneornil(L, idx)) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (*n == cap) luaL_error(L, "too many headers");
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "headers must map strings to strings");
    h[*n].name = lua_tolstring(L, -2, &h[*n].name_len);
    h[*n].value = lua_tolstring(L, -1, &h[*n].value_len);
    (*n)++;
    lua_pop(L, 1);
  }
}

/* conn:accept([protocol[, extensions[, headers]]]) -> true | nil, msg */
static int l_conn_accept(lua_State *L) {
  wsuv_lconn_t *b = check_conn(L);
  const char *protocol = luaL_optstring(L, 2, NULL);
  const char *extensions = luaL_optstring(L, 3, NULL);
  wsuv_header_t extra[32];
  size_t n = 32;
  check_headers(L, 4, extra, &n);
  if (!b->c) return send_error(L, WSUV_ECLOSED);
  int err = wsuv__accept(b->c, protocol, extensions, extra, n);
  if (err == WSUV_EINVAL)
    return luaL_error(L, "accept: invalid protocol or header");
  if (err) return wsuv__lua_push_error(L, err, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:respond(status[, headers[, body]]) -> true | nil, msg */
static int l_conn_respond(lua_State *L) {
  wsuv_lconn_t *b = check_conn(L);
  int status = (int)luaL_checkinteger(L, 2);
  wsuv_header_t extra[32];
  size_t n = 32, body_len = 0;
  check_headers(L, 3, extra, &n);
  const char *body = luaL_optlstring(L, 4, "", &body_len);
  if (status < 100 || status > 999)
    return luaL_argerror(L, 2, "HTTP status out of range");
  if (!b->c) return send_error(L, WSUV_ECLOSED);
  int err = wsuv__respond(b->c, status, extra, n, body, body_len);
  if (err == WSUV_EINVAL) return luaL_error(L, "respond: invalid header");
  if (err) return wsuv__lua_push_error(L, err, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:pongs() -> count of pongs received, last pong payload */
static int l_conn_pongs(lua_State *L) {
  wsuv_lconn_t *b = check_conn(L);
  lua_pushinteger(L, (lua_Integer)b->pongs);
  push_ref(L, b->pong);
  return 2;
}

static int l_conn_tostring(lua_State *L) {
  wsuv_lconn_t *b = luaL_checkudata(L, 1, WSUV_CONN_MT);
  wsuv_tconn_t *c = b->c;
  char ip[64] = "?";
  int port = c ? wsuv__peer(c, ip, sizeof(ip)) : -1;
  const char *phase = c ? phase_names[c->phase] : "closed";
  if (port >= 0)
    lua_pushfstring(L, "wsuv.conn{state=%s; peer=%s:%d; proto=\"%s\"}", phase,
                    ip, port, c && c->protocol ? c->protocol : "");
  else
    lua_pushfstring(L, "wsuv.conn{state=%s}", phase);
  return 1;
}

/* ---- Options ----------------------------------------------------------- */

static uint64_t opt_u64(lua_State *L, int idx, const char *k, uint64_t def) {
  lua_getfield(L, idx, k);
  uint64_t v = def;
  if (!lua_isnil(L, -1)) {
    lua_Number n = lua_tonumber(L, -1);
    if (!lua_isnumber(L, -1) || n < 0)
      luaL_error(L, "option '%s' must be a non-negative number", k);
    v = (uint64_t)n;
  }
  lua_pop(L, 1);
  return v;
}

/* Timeouts are given in seconds and kept in milliseconds. */
static uint64_t opt_ms(lua_State *L, int idx, const char *k) {
  lua_getfield(L, idx, k);
  uint64_t v = 0;
  if (!lua_isnil(L, -1)) {
    lua_Number n = lua_tonumber(L, -1);
    if (!lua_isnumber(L, -1) || n < 0)
      luaL_error(L, "option '%s' must be a non-negative number", k);
    v = (uint64_t)(n * 1000.0 + 0.5);
    if (v == 0 && n > 0) v = 1;
  }
  lua_pop(L, 1);
  return v;
}

static const char *opt_str(lua_State *L, int idx, const char *k) {
  lua_getfield(L, idx, k);
  const char *s = NULL;
  if (!lua_isnil(L, -1)) {
    s = lua_tostring(L, -1);
    if (!s || lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "option '%s' must be a string", k);
  }
  lua_pop(L, 1); /* Still referenced by the options table. */
  return s;
}

static void read_limits(lua_State *L, int idx, wsuv_limits_t *lim) {
  memset(lim, 0, sizeof(*lim));
  if (lua_isnoneornil(L, idx)) return;
  lim->max_message = opt_u64(L, idx, "max_message", 0);
  lim->max_frame = opt_u64(L, idx, "max_frame", 0);
  lim->max_head = (size_t)opt_u64(L, idx, "max_head", 0);
  lim->max_queued = (size_t)opt_u64(L, idx, "max_queued", 0);
  lim->high_water = (size_t)opt_u64(L, idx, "high_water", 0);
  lim->recv_high = (size_t)opt_u64(L, idx, "max_unread", 0);
  lim->connect_timeout = opt_ms(L, idx, "connect_timeout");
  lim->handshake_timeout = opt_ms(L, idx, "handshake_timeout");
  lim->close_timeout = opt_ms(L, idx, "close_timeout");
  lim->ping_interval = opt_ms(L, idx, "ping_interval");
  lim->ping_timeout = opt_ms(L, idx, "ping_timeout");
  lim->idle_timeout = opt_ms(L, idx, "idle_timeout");
  lua_getfield(L, idx, "stream");
  lim->stream = lua_toboolean(L, -1);
  lua_pop(L, 1);
}

static int opt_bool(lua_State *L, int idx, const char *k) {
  lua_getfield(L, idx, k);
  int v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

/* Reads opts.compression (true, false or a table) into o; raises for
 * values out of range. */
static void read_pmd(lua_State *L, int idx, wsuv_pmd_options_t *o) {
  memset(o, 0, sizeof(*o));
  lua_getfield(L, idx, "compression");
  int t = lua_gettop(L);
  if (lua_isnil(L, t) || (lua_isboolean(L, t) && !lua_toboolean(L, t))) {
    lua_pop(L, 1);
    return;
  }
  o->enabled = 1;
  if (lua_istable(L, t)) {
    o->server_no_context_takeover =
        (uint8_t)opt_bool(L, t, "server_no_context_takeover");
    o->client_no_context_takeover =
        (uint8_t)opt_bool(L, t, "client_no_context_takeover");
    o->server_max_window_bits =
        (uint8_t)opt_u64(L, t, "server_max_window_bits", 0);
    o->client_max_window_bits =
        (uint8_t)opt_u64(L, t, "client_max_window_bits", 0);
    /* In C a zero field means "default"; from Lua, 0 is a value: level
     * and mem_level 0 are out of range, threshold 0 compresses all. */
    uint64_t level = opt_u64(L, t, "level", WSUV_PMD_DEFAULT_LEVEL);
    uint64_t mem = opt_u64(L, t, "mem_level", WSUV_PMD_DEFAULT_MEM_LEVEL);
    if (level < 1 || level > 9 || mem < 1 || mem > 9)
      luaL_error(L, "option 'compression': level and mem_level must be 1..9");
    o->level = (int)level;
    o->mem_level = (int)mem;
    o->threshold = (size_t)opt_u64(L, t, "threshold", 0);
    lua_getfield(L, t, "threshold");
    if (!lua_isnil(L, -1) && o->threshold == 0) o->threshold = 1;
    lua_pop(L, 1);
  } else if (!lua_isboolean(L, t)) {
    luaL_error(L, "option 'compression' must be a boolean or a table");
  }
  lua_pop(L, 1);
  char offer[WSUV_PMD_EXT_MAX];
  if (wsuv_pmd_offer(o, offer, sizeof(offer)) < 0)
    luaL_error(L, "option 'compression': window bits must be 8..15, level "
                  "and mem_level 1..9");
}

/* Reads opts.tls (a table) into o; returns 0 when there is none. Strings
 * stay referenced by the options table for the duration of the call. */
/* Reads the TLS options table at t into o. */
static void tls_fields(lua_State *L, int t, wsuv_tls_opts_t *o, int server) {
  o->cert = opt_str(L, t, "cert");
  o->key = opt_str(L, t, "key");
  o->ca = opt_str(L, t, "ca");
  o->servername = opt_str(L, t, "servername");
  o->verify =
      server ? opt_bool(L, t, "verify_client") : !opt_bool(L, t, "insecure");
}

static int read_tls(lua_State *L, int idx, wsuv_tls_opts_t *o, int server) {
  memset(o, 0, sizeof(*o));
  lua_getfield(L, idx, "tls");
  int on =
      !lua_isnil(L, -1) && !(lua_isboolean(L, -1) && !lua_toboolean(L, -1));
  if (on && lua_isboolean(L, -1)) {
    o->verify = !server; /* tls = true: all defaults */
  } else if (on) {
    if (!lua_istable(L, -1)) luaL_error(L, "option 'tls' must be a table");
    tls_fields(L, lua_gettop(L), o, server);
  }
  lua_pop(L, 1);
  return on;
}

static int push_tls_error(lua_State *L, const char *op, int err,
                          const char *why) {
  lua_pushnil(L);
  lua_pushfstring(L, "%s: tls: %s", op, why);
  lua_pushstring(L, wsuv_err_name(err));
  return 3;
}

/* core.connect(host, port, opts) -> conn | nil, msg, code
 * opts: host_header, target, origin, protocols, extensions, headers,
 * proxy_host, proxy_port, proxy_authority, proxy_credentials, and
 * the limits of read_limits. */
int wsuv__lua_connect(lua_State *L) {
  wsuv_lloop_t *ll = wsuv__lua_loop(L);
  const char *host = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  wsuv_limits_t lim;
  read_limits(L, 3, &lim);
  wsuv_client_request_t req = {
      .host = opt_str(L, 3, "host_header"),
      .target = opt_str(L, 3, "target"),
      .origin = opt_str(L, 3, "origin"),
      .protocols = opt_str(L, 3, "protocols"),
      .extensions = opt_str(L, 3, "extensions"),
  };
  if (!req.host) req.host = host;
  if (!req.target) req.target = "/";
  wsuv_header_t extra[32];
  size_t n = 32;
  lua_getfield(L, 3, "headers");
  check_headers(L, lua_gettop(L), extra, &n);
  req.headers = extra;
  req.num_headers = n;
  if (port <= 0 || port > 65535)
    return luaL_argerror(L, 2, "port out of range");
  wsuv_pmd_options_t pmd;
  read_pmd(L, 3, &pmd);
  wsuv_tls_opts_t tls;
  SSL_CTX *ctx = NULL;
  if (read_tls(L, 3, &tls, 0)) {
    char why[256];
    ctx = wsuv__tls_client_ctx(&ll->loop, &tls, why, sizeof(why));
    if (!ctx) return push_tls_error(L, "connect", WSUV_ETLS, why);
  }
  wsuv_proxy_t proxy = {
      .host = opt_str(L, 3, "proxy_host"),
      .port = (int)opt_u64(L, 3, "proxy_port", 0),
      .authority = opt_str(L, 3, "proxy_authority"),
      .credentials = opt_str(L, 3, "proxy_credentials"),
  };
  if (proxy.host && (proxy.port <= 0 || proxy.port > 65535 || !proxy.authority))
    return luaL_error(L, "connect: proxy_port and proxy_authority are needed");
  wsuv_tconn_t *c = NULL;
  int err = wsuv__connect(&ll->loop, host, port, &req, &lim, ctx,
                          tls.servername, &pmd, proxy.host ? &proxy : NULL, &c);
  lua_pop(L, 1);
  if (err == WSUV_EINVAL)
    return luaL_error(L, "connect: invalid header or option value");
  if (err) return wsuv__lua_push_error(L, err, NULL);
  wsuv__lua_new_conn(L, ll, c);
  return 1;
}

/* ---- Servers ----------------------------------------------------------- */

/* core.listen(host, port, opts) -> server | nil, msg, code */
int wsuv__lua_listen(lua_State *L) {
  wsuv_lloop_t *ll = wsuv__lua_loop(L);
  const char *host = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2);
  if (port < 0 || port > 65535) return luaL_argerror(L, 2, "port out of range");
  wsuv_server_opts_t opts;
  memset(&opts, 0, sizeof(opts));
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    read_limits(L, 3, &opts.lim);
    opts.max_pending = (size_t)opt_u64(L, 3, "max_pending", 0);
    opts.max_connections = (size_t)opt_u64(L, 3, "max_connections", 0);
    read_pmd(L, 3, &opts.pmd);
    wsuv_tls_opts_t tls;
    char why[256];
    if (read_tls(L, 3, &tls, 1)) {
      int e = wsuv__tls_ctx_new(&tls, 1, &opts.tls_ctx, why, sizeof(why));
      if (e == WSUV_EINVAL) return luaL_error(L, "listen: tls: %s", why);
      if (e) return push_tls_error(L, "listen", e, why);
    }
  }
  size_t limit, room = wsuv__descriptor_room(&limit);
  if (opts.max_connections > room) {
    /* Past the limit clients would be dropped unanswered: say so now. */
    SSL_CTX_free(opts.tls_ctx);
    lua_pushnil(L);
    lua_pushfstring(L,
                    "listen: max_connections %d needs more descriptors than "
                    "`ulimit -n` (%d) allows: raise it, or allow at most %d",
                    opts.max_connections > INT_MAX ? INT_MAX
                                                   : (int)opts.max_connections,
                    (int)limit, (int)room);
    lua_pushstring(L, "EINVAL");
    return 3;
  }
  wsuv_tserver_t *s = NULL;
  int err = wsuv__listen(&ll->loop, host, port, &opts, &s);
  if (err) {
    SSL_CTX_free(opts.tls_ctx);
    lua_pushnil(L);
    lua_pushfstring(L, "listen: %s", uv_strerror(err));
    lua_pushstring(L, uv_err_name(err));
    return 3;
  }
  wsuv_lserver_t *b = lua_newuserdata(L, sizeof(*b));
  memset(b, 0, sizeof(*b));
  b->s = s;
  b->ll = ll;
  b->port = wsuv__server_port(s);
  luaL_setmetatable(L, WSUV_SERVER_MT);
  lua_pushvalue(L, -1);
  b->anchor = luaL_ref(L, LUA_REGISTRYINDEX);
  s->obj.data = b;
  return 1;
}

/* server:set_tls(opts) -> true | nil, msg, code: new certificates for new
 * connections; open ones keep theirs. */
static int l_server_set_tls(lua_State *L) {
  wsuv_lserver_t *b = check_server(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  wsuv_tls_opts_t tls;
  memset(&tls, 0, sizeof(tls));
  tls_fields(L, 2, &tls, 1);
  if (!b->s || !b->s->tls_ctx)
    return wsuv__lua_push_error(L, WSUV_ESTATE, "not a TLS listener");
  char why[256];
  SSL_CTX *ctx = NULL;
  int e = wsuv__tls_ctx_new(&tls, 1, &ctx, why, sizeof(why));
  if (e) return push_tls_error(L, "set_tls", e, why);
  wsuv__server_set_tls(b->s, ctx);
  lua_pushboolean(L, 1);
  return 1;
}

/* server:try_accept() -> conn in state "request", or nil */
static int l_server_try_accept(lua_State *L) {
  wsuv_lserver_t *b = check_server(L);
  if (!b->s) return 0;
  wsuv_tconn_t *c = wsuv__server_pop(b->s);
  if (!c) return 0;
  wsuv__lua_new_conn(L, b->ll, c);
  return 1;
}

static int l_server_port(lua_State *L) {
  wsuv_lserver_t *b = check_server(L);
  lua_pushinteger(L, b->port);
  return 1;
}

/* server:stop() stops listening; connections stay (Lua closes them). */
static int l_server_stop(lua_State *L) {
  wsuv_lserver_t *b = check_server(L);
  if (b->s) wsuv__server_close(b->s);
  return 0;
}

static int l_server_closed(lua_State *L) {
  wsuv_lserver_t *b = check_server(L);
  lua_pushboolean(L, !b->s || b->s->closed);
  return 1;
}

/* ---- Broadcasts: one frame for many server connections ----------------- */

typedef struct {
  wsuv_shared_frame_t f;
  lpin_t *pin;
  wsuv_tconn_t *except; /* skipped without counting, or NULL */
  int close_slow;       /* a receiver over max_queued is aborted */
  lua_Integer sent, skipped;
} bcast_t;

/* Checks the arguments of a broadcast, data at idx, then kind, close_slow,
 * except, and encodes its frame once: every receiver's write points at it.
 * Broadcasts are never compressed. Returns 0 or a WSUV error. */
static int bcast_begin(lua_State *L, wsuv_lloop_t *ll, int idx, bcast_t *bc) {
  size_t len;
  const char *data = luaL_checklstring(L, idx, &len);
  unsigned opcode = check_opcode(L, idx + 1);
  if (opcode != WSUV_OP_TEXT && opcode != WSUV_OP_BINARY)
    return luaL_argerror(L, idx + 1, "text or binary");
  if (opcode == WSUV_OP_TEXT && !wsuv_utf8_valid((const uint8_t *)data, len))
    return luaL_argerror(L, idx, "text is not valid UTF-8");
  bc->close_slow = lua_toboolean(L, idx + 2);
  bc->except = NULL;
  if (!lua_isnoneornil(L, idx + 3)) {
    wsuv_lconn_t *e = luaL_checkudata(L, idx + 3, WSUV_CONN_MT);
    bc->except = e->c;
  }
  bc->sent = bc->skipped = 0;
  bc->pin = len >= WSUV_PIN_MIN ? pin_string(L, ll, idx) : NULL;
  int err = wsuv__share_frame(&ll->loop, opcode, (const uint8_t *)data, len,
                              bc->pin ? &bc->pin->base : NULL, &bc->f);
  if (err) pin_drop(bc->pin);
  return err;
}

static void bcast_to(bcast_t *bc, wsuv_tconn_t *c) {
  if (c == bc->except) return;
  int err = wsuv__send_shared(c, &bc->f);
  if (err == 0) {
    bc->sent++;
    return;
  }
  bc->skipped++;
  if (err == WSUV_EBUFFULL && bc->close_slow)
    wsuv__abort(c, WSUV_EBUFFULL, "send buffer full");
}

static int bcast_end(lua_State *L, bcast_t *bc) {
  pin_drop(bc->pin);
  lua_pushinteger(L, bc->sent);
  lua_pushinteger(L, bc->skipped);
  return 2;
}

/* server:broadcast(data[, kind[, close_slow[, except]]]) -> sent, skipped */
static int l_server_broadcast(lua_State *L) {
  wsuv_lserver_t *b = check_server(L);
  bcast_t bc;
  int err = bcast_begin(L, b->ll, 2, &bc);
  if (err) return wsuv__lua_push_error(L, err, NULL);
  wsuv_tconn_t *next;
  for (wsuv_tconn_t *c = b->ll->loop.conns; c && b->s; c = next) {
    next = c->next; /* bcast_to may close c */
    if (c->server == b->s && c->phase == WSUV_PHASE_OPEN && c->obj.data)
      bcast_to(&bc, c);
  }
  return bcast_end(L, &bc);
}

/* Rooms (lua/wsuv/room.lua) are Lua tables whose keys are connections.
 * A member that is no longer open will never be again: it is removed when
 * met (clearing a field is allowed during lua_next). */
static wsuv_tconn_t *room_member(lua_State *L, int set, int key) {
  wsuv_lconn_t *b = test_conn(L, key);
  if (b && b->c && b->c->phase == WSUV_PHASE_OPEN && b->c->ws_inited &&
      b->c->ws.state == WSUV_STATE_OPEN)
    return b->c;
  lua_pushvalue(L, key);
  lua_pushnil(L);
  lua_rawset(L, set);
  return NULL;
}

/* core.room_join(set, conn) -> true | nil, "closed", "ECLOSED" | false
 * for a client's connection (Lua raises) */
int wsuv__lua_room_join(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  wsuv_lconn_t *b = luaL_checkudata(L, 2, WSUV_CONN_MT);
  if (b->role != WSUV_ROLE_SERVER) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_pushvalue(L, 2);
  lua_pushboolean(L, 1);
  lua_rawset(L, 1);
  if (!room_member(L, 1, 2))
    return wsuv__lua_push_error(L, WSUV_ECLOSED, "closed");
  lua_pushboolean(L, 1);
  return 1;
}

/* core.room_count(set) -> open members (removing the others) */
int wsuv__lua_room_count(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer n = 0;
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    lua_pop(L, 1);
    if (room_member(L, 1, lua_gettop(L))) n++;
  }
  lua_pushinteger(L, n);
  return 1;
}

/* core.room_broadcast(set, data, kind, close_slow, except) -> sent, skipped */
int wsuv__lua_room_broadcast(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  bcast_t bc;
  int err = bcast_begin(L, wsuv__lua_loop(L), 2, &bc);
  if (err) return wsuv__lua_push_error(L, err, NULL);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    lua_pop(L, 1);
    wsuv_tconn_t *c = room_member(L, 1, lua_gettop(L));
    if (c) bcast_to(&bc, c);
  }
  return bcast_end(L, &bc);
}

/* server:clients() -> array of open connections */
static int l_server_clients(lua_State *L) {
  wsuv_lserver_t *b = check_server(L);
  lua_newtable(L);
  int i = 1;
  for (wsuv_tconn_t *c = b->ll->loop.conns; c && b->s; c = c->next) {
    wsuv_lconn_t *cb = c->obj.data;
    if (c->server != b->s || c->phase != WSUV_PHASE_OPEN || !cb) continue;
    lua_rawgeti(L, LUA_REGISTRYINDEX, cb->anchor);
    lua_rawseti(L, -2, i++);
  }
  return 1;
}

static int l_server_tostring(lua_State *L) {
  wsuv_lserver_t *b = luaL_checkudata(L, 1, WSUV_SERVER_MT);
  lua_pushfstring(L, "wsuv.server{port=%d; %s}", b->port,
                  b->s && !b->s->closed ? "listening" : "closed");
  return 1;
}

/* conn:compression() -> {extension = header value, memory = bytes,
 * received = n, sent = n (compressed messages)}, or nil when
 * permessage-deflate is not in use. */
static int l_conn_compression(lua_State *L) {
  wsuv_lconn_t *b = luaL_checkudata(L, 1, WSUV_CONN_MT);
  wsuv_tconn_t *c = b->c;
  if (!c || !c->ws_inited || !c->ws.pmd) return 0;
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, (lua_Integer)c->pmd_in);
  lua_setfield(L, -2, "received");
  lua_pushinteger(L, (lua_Integer)c->pmd_out);
  lua_setfield(L, -2, "sent");
  lua_pushstring(L, c->extensions ? c->extensions : "permessage-deflate");
  lua_setfield(L, -2, "extension");
  lua_pushinteger(L, (lua_Integer)wsuv_conn_pmd_memory(&c->ws));
  lua_setfield(L, -2, "memory");
  return 1;
}

/* conn:tls_info() -> {version, cipher, alpn, peer, verified, buffered} or
 * nil */
static int l_conn_tls_info(lua_State *L) {
  wsuv_lconn_t *b = luaL_checkudata(L, 1, WSUV_CONN_MT);
  wsuv_tls_info_t info;
  if (!b->c || !b->c->tls || wsuv__tls_info(b->c->tls, &info) != 0) return 0;
  lua_createtable(L, 0, 5);
  lua_pushstring(L, info.version);
  lua_setfield(L, -2, "version");
  lua_pushstring(L, info.cipher);
  lua_setfield(L, -2, "cipher");
  if (info.alpn_len) {
    lua_pushlstring(L, info.alpn, info.alpn_len);
    lua_setfield(L, -2, "alpn");
  }
  if (info.peer_subject[0]) {
    lua_pushstring(L, info.peer_subject);
    lua_setfield(L, -2, "peer");
  }
  lua_pushboolean(L, info.verified);
  lua_setfield(L, -2, "verified");
  lua_pushinteger(L, (lua_Integer)info.buffered);
  lua_setfield(L, -2, "buffered");
  return 1;
}

static const luaL_Reg conn_methods[] = {{"try_receive", l_conn_try_receive},
                                        {"send_frame", l_conn_send},
                                        {"_send_failed", l_conn_send_failed},
                                        {"queued", l_conn_queued},
                                        {"flush", l_conn_flush},
                                        {"start_close", l_conn_close},
                                        {"abort", l_conn_abort},
                                        {"state", l_conn_state},
                                        {"close_status", l_conn_close_status},
                                        {"peer", l_conn_peer},
                                        {"protocol", l_conn_protocol},
                                        {"request_head", l_conn_request},
                                        {"request_brief", l_conn_request_brief},
                                        {"request_kept", l_conn_request_kept},
                                        {"response", l_conn_response},
                                        {"accept", l_conn_accept},
                                        {"respond", l_conn_respond},
                                        {"pongs", l_conn_pongs},
                                        {"tls_info", l_conn_tls_info},
                                        {"compression", l_conn_compression},
                                        {NULL, NULL}};

static const luaL_Reg server_methods[] = {{"try_accept", l_server_try_accept},
                                          {"port", l_server_port},
                                          {"stop", l_server_stop},
                                          {"closed", l_server_closed},
                                          {"broadcast", l_server_broadcast},
                                          {"clients", l_server_clients},
                                          {"set_tls", l_server_set_tls},
                                          {NULL, NULL}};

/* Every method gets "text", "binary" and "again" as upvalues (KIND_TEXT,
 * KIND_BINARY, STR_AGAIN): pushing a string by value skips
 * lua_pushstring's interning lookup, once per message. */
static void new_class(lua_State *L, const char *name, const luaL_Reg *methods,
                      lua_CFunction gc, lua_CFunction tostring) {
  luaL_newmetatable(L, name);
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__name");
  lua_newtable(L);
  push_method_strings(L);
  luaL_setfuncs(L, methods, METHOD_STRINGS);
  lua_setfield(L, -2, "__index");
  if (gc) {
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pushcfunction(L, tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
}

void wsuv__lua_conn_open(lua_State *L) {
  new_class(L, WSUV_CONN_MT, conn_methods, l_conn_gc, l_conn_tostring);
  new_class(L, WSUV_SERVER_MT, server_methods, NULL, l_server_tostring);
}
