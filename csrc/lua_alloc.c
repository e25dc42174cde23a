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
 * * Installed on the first big message (an application of small messages
 *   never has it), bounded in bytes, emptied when unused (wsuv__bcache_tick)
 *   and removed before the state closes (LuaJIT frees its allocator's arenas
 *   only when its own allocator is in place then). */
#include <stdlib.h>

#include "lua_internal.h"

#define BCACHE_SLOTS 64
/* A kept block serves a request of at least 4/5 of its size. */
#define FITS(have, want) ((have) >= (want) && (have) - (want) <= (have) / 5)
#define TICK_MS          100

struct wsuv_bcache_s {
  lua_Alloc f; /* the allocator underneath */
  void *ud;
  size_t limit, held; /* bytes */
  size_t n;           /* blocks kept, oldest first */
  void *blk[BCACHE_SLOTS];
  size_t size[BCACHE_SLOTS];
  unsigned hits;      /* since the last tick */
  uint64_t last_tick; /* ms */
};

static void drop_oldest(wsuv_bcache_t *bc, size_t k) {
  for (size_t i = 0; i < k; i++)
    bc->f(bc->ud, bc->blk[i], bc->size[i], 0);
  for (size_t i = k; i < bc->n; i++) {
    bc->blk[i - k] = bc->blk[i];
    bc->size[i - k] = bc->size[i];
  }
  bc->n -= k;
  bc->held = 0;
  for (size_t i = 0; i < bc->n; i++)
    bc->held += bc->size[i];
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
    bc->hits++;
    return p;
  }
  return NULL;
}

/* The latest freed are kept at the cost of the oldest: the sizes in use
 * now are the ones to come. */
static int keep(wsuv_bcache_t *bc, void *p, size_t size) {
  if (size > bc->limit) return 0;
  size_t k = 0;
  for (size_t held = bc->held; k < bc->n && size > bc->limit - held; k++)
    held -= bc->size[k];
  if (bc->n - k == BCACHE_SLOTS) k++;
  if (k) drop_oldest(bc, k);
  bc->blk[bc->n] = p;
  bc->size[bc->n++] = size;
  bc->held += size;
  return 1;
}

static void *bcache_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  wsuv_bcache_t *bc = ud;
  if (nsize == 0) {
    if (ptr && osize >= WSUV_BCACHE_MIN && keep(bc, ptr, osize)) return NULL;
  } else if (!ptr && nsize >= WSUV_BCACHE_MIN && bc->n) {
    void *p = take(bc, nsize);
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

void wsuv__bcache_install(lua_State *L, wsuv_lloop_t *ll) {
  if (ll->bcache || ll->bcache_limit == 0) return;
  wsuv_bcache_t *bc = calloc(1, sizeof(*bc));
  if (!bc) return; /* only slower */
  bc->f = lua_getallocf(L, &bc->ud);
  bc->limit = ll->bcache_limit;
  lua_setallocf(L, bcache_alloc, bc);
  ll->bcache = bc;
}

void wsuv__bcache_set_limit(wsuv_lloop_t *ll, size_t limit) {
  ll->bcache_limit = limit;
  wsuv_bcache_t *bc = ll->bcache;
  if (!bc) return;
  bc->limit = limit;
  size_t k = 0;
  for (size_t held = bc->held; k < bc->n && held > limit; k++)
    held -= bc->size[k];
  drop_oldest(bc, k);
}

size_t wsuv__bcache_held(const wsuv_lloop_t *ll) {
  return ll->bcache ? ll->bcache->held : 0;
}

/* Unused for a tick: half the kept blocks go back (an idle server returns
 * the cache within a second; a steady stream of big messages keeps it). */
void wsuv__bcache_tick(wsuv_lloop_t *ll, uint64_t now_ms) {
  wsuv_bcache_t *bc = ll->bcache;
  if (!bc || now_ms - bc->last_tick < TICK_MS) return;
  bc->last_tick = now_ms;
  if (bc->hits == 0 && bc->n) drop_oldest(bc, (bc->n + 1) / 2);
  bc->hits = 0;
}

void wsuv__bcache_remove(lua_State *L, wsuv_lloop_t *ll) {
  wsuv_bcache_t *bc = ll->bcache;
  if (!bc) return;
  drop_oldest(bc, bc->n);
  void *ud;
  if (lua_getallocf(L, &ud) != bcache_alloc || ud != bc) {
    /* Another layer went on top of ours: stay, passing everything on. */
    bc->limit = 0;
    ll->bcache = NULL;
    return;
  }
  lua_setallocf(L, bc->f, bc->ud);
  free(bc);
  ll->bcache = NULL;
}
