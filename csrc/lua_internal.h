/* lua_internal.h: shared by the binding's files (lua_*.c). */
#ifndef WSUV_LUA_INTERNAL_H
#define WSUV_LUA_INTERNAL_H

#include "lua_compat.h"
#include "uv_internal.h"

#define WSUV_LOOP_MT   "wsuv.loop"
#define WSUV_CONN_MT   "wsuv.conn"
#define WSUV_SERVER_MT "wsuv.server"

/* The loop lives inside its userdata, which the registry anchors. */
typedef struct {
  wsuv_loop_t loop;
  lua_State *L; /* the thread inside the current call into the binding */
  int closed;
  int *woken; /* anchors of objects freed with news: ready() hands them */
  size_t nwoken, woken_cap;
  /* Large messages not yet taken, of every connection, wait in one table
   * (a registry ref): a connection holds slot numbers, so an idle one
   * holds no table. Slots are reused, latest freed first. */
  int inbox;
  int inbox_top;   /* highest slot used since the inbox was made */
  size_t nqueued;  /* messages in it */
  int *free_slots; /* freed slots below inbox_top */
  size_t nfree, free_cap;
  uint8_t *qfree[2]; /* spare message FIFOs, small and large, linked */
  size_t nqfree[2];  /* (see queue_push in lua_conn.c) */
  size_t unpaced;    /* bytes of big messages the collector was not told of
                        (pace_collector in lua_conn.c) */
  struct wsuv_bcache_s *bcache; /* lua_alloc.c, once installed */
  size_t bcache_limit;          /* bytes; 0: no block cache */
} wsuv_lloop_t;

/* The head of a queued message's record: FLAG_* bits, and its length,
 * the bytes following inline; or with FLAG_SLOT, its inbox slot. */
typedef struct {
  uint32_t n;
  uint32_t flags;
} wsuv_qrec_t;

/* Box of a connection: outlives the transport object, so a closed
 * connection still answers with "closed", its code and reason. */
#define WSUV_LCONN_MAGIC 0x77737563u /* "wsuc": see check_conn */

typedef struct {
  uint32_t magic;  /* WSUV_LCONN_MAGIC */
  wsuv_tconn_t *c; /* NULL once the transport freed it */
  wsuv_lloop_t *ll;
  int anchor; /* registry ref to this userdata while c lives */
  /* Messages delivered and not yet taken, oldest first: records
   * (wsuv_qrec_t) in a byte FIFO, from the first message until it empties
   * (q is NULL when nothing waits).
   * A small message waits inline and becomes a Lua string when taken; a
   * large one waits in the inbox. */
  uint8_t *q;
  uint32_t qhead, qtail, qcap; /* bytes: q[qhead] is the oldest record */
  int close_code;              /* final code once known, else 0 */
  int close_reason;            /* registry ref of the reason string */
  int error;                   /* uv/WSUV code of a failure */
  int why;                     /* registry ref of the failure message */
  int info;                    /* registry ref: client response table */
  int pong;                    /* registry ref of the last pong payload */
  int request;    /* registry ref: server side, the request record (from
                     request_brief), then the table conn:request() made */
  unsigned pongs; /* pongs received */
  wsuv_role_t role;
  uint8_t stream;
} wsuv_lconn_t;

typedef struct {
  wsuv_tserver_t *s;
  wsuv_lloop_t *ll;
  int anchor;
  int port;
} wsuv_lserver_t;

wsuv_lloop_t *wsuv__lua_loop(lua_State *L);

/* The block cache (lua_alloc.c): big blocks the Lua state frees are kept
 * for its next big allocation. */
#define WSUV_BCACHE_MIN           (128 * 1024)
#define WSUV_BCACHE_DEFAULT_LIMIT (32 * 1024 * 1024)
typedef struct wsuv_bcache_s wsuv_bcache_t;
void wsuv__bcache_install(lua_State *L, wsuv_lloop_t *ll);
/* limit 0 removes the cache, giving back what it holds. */
void wsuv__bcache_set_limit(lua_State *L, wsuv_lloop_t *ll, size_t limit);
size_t wsuv__bcache_held(const wsuv_lloop_t *ll);
void wsuv__bcache_tick(lua_State *L, wsuv_lloop_t *ll, uint64_t now_ms);
void wsuv__bcache_remove(lua_State *L, wsuv_lloop_t *ll);
void wsuv__lua_hooks(wsuv_hooks_t *h);
void wsuv__lua_qpool_free(wsuv_lloop_t *ll);
int wsuv__lua_push_error(lua_State *L, int err, const char *msg);
void wsuv__lua_conn_open(lua_State *L);
wsuv_lconn_t *wsuv__lua_new_conn(lua_State *L, wsuv_lloop_t *ll,
                                 wsuv_tconn_t *c);
int wsuv__lua_connect(lua_State *L);
int wsuv__lua_listen(lua_State *L);
/* Rooms (lua/wsuv/room.lua): a Lua table keyed by server connections. */
int wsuv__lua_room_join(lua_State *L);
int wsuv__lua_room_count(lua_State *L);
int wsuv__lua_room_broadcast(lua_State *L);
int wsuv__lua_parse_request(lua_State *L);
/* Pushes core._ffi_send (lua_conn.c, ffi_send). */
void wsuv__lua_push_ffi_send(lua_State *L);
#if LUA_VERSION_NUM >= 504
int wsuv__lua_fast_methods(lua_State *L);
#endif

#endif
