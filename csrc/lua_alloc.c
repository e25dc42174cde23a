/* lua_alloc.c: the block cache, a thin layer over the Lua state's allocator
 * that keeps big freed blocks (>= WSUV_BCACHE_MIN) for the next big
 * allocation.
 *
 * Why: every message becomes a Lua string, and a 1 MiB string is a block
 * the allocator hands back to the kernel when it is freed. LuaJIT maps
 * every block over 128 KiB afresh and unmaps it on free; glibc trims the
 * top of the heap. The next message then faults in 256 zeroed pages again:
 * measured, a third of the server's time in a 1 MiB echo on LuaJIT.
 *
 * Design criteria:
 * * Every block still comes from the state's own allocator and goes back to
 *   it; the cache only delays a free. A block is handed out again at its
 *   exact size (a bigger one is shrunk first by the allocator itself), so
 *   the allocator is always told the true old size, even of blocks freed
 *   before the cache was there.
 * * Present only while big blocks come and go: every allocation of the
 *   state passes through the layer (+5-9% on Lua 5.4 and up to +29% on
 *   LuaJIT for a loop that only makes small tables and strings). So it goes
 *   in with the first big message, empties when unused and steps out once
 *   empty for IDLE_TICKS (wsuv__bcache_tick): an application of small
 *   messages never has it.
 * * Bounded in bytes, and removed before the state closes (LuaJIT frees its
 *   allocator's arenas only when its own allocator is in place then). */
#include <stdlib.h>

#include "lua_internal.h"

#define BCACHE_SLOTS 64
/* A kept block serves a request of at least 4/5 of its size. */
#define FITS(have, want) ((have) >= (want) && (have) - (want) <= (have) / 5)
#define TICK_MS          100
#define IDLE_TICKS       10 /* empty and unused this long: out of the way */

struct wsuv_bcache_s {
  lua_Alloc f; /* the allocator underneath */
  void *ud;
  size_t limit, held; /* bytes */
  size_t n;           /* blocks kept, oldest first */
  void *blk[BCACHE_SLOTS];
  size_t size[BCACHE_SLOTS];
  unsigned made;       /* big blocks allocated since the last tick */
  unsigned idle_ticks; /* ticks in a row with nothing held or made */
  uint64_t last_tick;  /* ms */
};

static void drop_oldest(wsuv_bcache_t *bc, size_t k) {
  for (size_t i = 0; i < k; i++) {
    bc->f(bc->ud, bc->blk[i], bc->size[i], 0);
    bc->held -= bc->size[i];
  }
  for (size_t i = k; i < bc->n; i++) {
    bc->blk[i - k] = bc->blk[i];
    bc->size[i - k] = bc->size[i];
  }
  bc->n -= k;
}

/* Drops the oldest blocks until at most bytes are held. */
static void hold_at_most(wsuv_bcache_t *bc, size_t bytes) {
  size_t k = 0;
  for (size_t held = bc->held; k < bc->n && held > bytes; k++)
    held -= bc->size[k];
  drop_oldest(bc, k);
}

static void *take(wsuv_bcache_t *bc, size_t want) {
  for (size_t i = bc->n; i-- > 0;) { /* the latest freed is the warmest */
    if (!FITS(bc->size[i], want)) continue;
    void *p = bc->blk[i];
    size_t have = bc->size[i];
    if (have != want) {
      void *q = bc->f(bc->ud, p, have, want);
      if (!q) return NULL; /* the block stays kept */
      p = q;
    }
    bc->held -= have;
    bc->n--;
    for (size_t j = i; j < bc->n; j++) {
      bc->blk[j] = bc->blk[j + 1];
      bc->size[j] = bc->size[j + 1];
    }
    return p;
  }
  return NULL;
}

/* The latest freed are kept at the cost of the oldest: the sizes in use
 * now are the ones to come. */
static int keep(wsuv_bcache_t *bc, void *p, size_t size) {
  if (size > bc->limit) return 0;
  hold_at_most(bc, bc->limit - size);
  if (bc->n == BCACHE_SLOTS) drop_oldest(bc, 1);
  bc->blk[bc->n] = p;
  bc->size[bc->n++] = size;
  bc->held += size;
  return 1;
}

static void *bcache_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  wsuv_bcache_t *bc = ud;
  if (nsize == 0) {
    if (ptr && osize >= WSUV_BCACHE_MIN && keep(bc, ptr, osize)) return NULL;
  } else if (!ptr && nsize >= WSUV_BCACHE_MIN) {
    bc->made++;
    void *p = bc->n ? take(bc, nsize) : NULL;
    if (p) return p;
  }
  /* osize of a new block is Lua 5.4's type tag: passed on as it came. */
  void *p = bc->f(bc->ud, ptr, osize, nsize);
  if (!p && nsize && bc->n) {
    /* Out of memory while holding blocks (an engine's fixed heap): they go
     * back, and the allocator gets a second chance before Lua's error. */
    drop_oldest(bc, bc->n);
    p = bc->f(bc->ud, ptr, osize, nsize);
  }
  return p;
}

/* Whether the state's allocator is this layer (none went on top of it). */
static int on_top(lua_State *L, const wsuv_bcache_t *bc) {
  void *ud;
  return lua_getallocf(L, &ud) == bcache_alloc && ud == bc;
}

void wsuv__bcache_install(lua_State *L, wsuv_lloop_t *ll) {
  if (ll->bcache || ll->bcache_limit == 0) return;
  wsuv_bcache_t *bc = calloc(1, sizeof(*bc));
  if (!bc) return; /* only slower */
  bc->f = lua_getallocf(L, &bc->ud);
  bc->limit = ll->bcache_limit;
  lua_setallocf(L, bcache_alloc, bc);
  ll->bcache = bc;
}

void wsuv__bcache_set_limit(lua_State *L, wsuv_lloop_t *ll, size_t limit) {
  ll->bcache_limit = limit;
  wsuv_bcache_t *bc = ll->bcache;
  if (!bc) return;
  if (limit == 0) {
    wsuv__bcache_remove(L, ll);
    return;
  }
  bc->limit = limit;
  hold_at_most(bc, limit);
}

size_t wsuv__bcache_held(const wsuv_lloop_t *ll) {
  return ll->bcache ? ll->bcache->held : 0;
}

/* A tick in which no big block was made: half the kept blocks go back (an
 * idle server returns the cache within a second; a steady stream of big
 * messages keeps it), and after IDLE_TICKS of them with nothing held the
 * layer steps out of the allocator. */
void wsuv__bcache_tick(lua_State *L, wsuv_lloop_t *ll, uint64_t now_ms) {
  wsuv_bcache_t *bc = ll->bcache;
  if (!bc || now_ms - bc->last_tick < TICK_MS) return;
  bc->last_tick = now_ms;
  unsigned made = bc->made;
  bc->made = 0;
  if (made) {
    bc->idle_ticks = 0;
  } else if (bc->n) {
    drop_oldest(bc, (bc->n + 1) / 2);
  } else if (++bc->idle_ticks >= IDLE_TICKS && on_top(L, bc)) {
    wsuv__bcache_remove(L, ll); /* the next big message puts it back */
  }
}

void wsuv__bcache_remove(lua_State *L, wsuv_lloop_t *ll) {
  wsuv_bcache_t *bc = ll->bcache;
  if (!bc) return;
  drop_oldest(bc, bc->n);
  if (!on_top(L, bc)) {
    /* Another layer went on top of ours: stay, passing everything on. */
    bc->limit = 0;
    ll->bcache = NULL;
    return;
  }
  lua_setallocf(L, bc->f, bc->ud);
  free(bc);
  ll->bcache = NULL;
}
