/* ws_internal.h: private declarations shared by the sans-IO core (ws_*.c).
 * Nothing here is part of the public API. */
#ifndef WS_INTERNAL_H
#define WS_INTERNAL_H

#include "wsuv.h"

#include <stdlib.h>
#include <string.h>

/* Largest value a byte count returned as ssize_t may take. */
#define WSUV__SSIZE_MAX ((size_t)-1 >> 1)

/* Native-order unaligned loads and stores. memcpy is the only portable way
 * to reinterpret bytes without alignment or aliasing UB; compilers turn it
 * into a single move. */
static inline uint64_t wsuv__load64(const void *p) {
  uint64_t v;
  memcpy(&v, p, sizeof v);
  return v;
}

static inline void wsuv__store64(void *p, uint64_t v) {
  memcpy(p, &v, sizeof v);
}

/* Network (big-endian) order, as frame lengths and close codes are sent.
 * Built from bytes, so they do not depend on the host's byte order. */
static inline uint16_t wsuv__load16be(const uint8_t *p) {
  return (uint16_t)((unsigned)p[0] << 8 | (unsigned)p[1]);
}

static inline uint64_t wsuv__load64be(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = v << 8 | p[i];
  return v;
}

static inline void wsuv__store16be(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

static inline void wsuv__store64be(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--) {
    p[i] = (uint8_t)v;
    v >>= 8;
  }
}

/* The one allocation entry point: a->fn when set, else libc. Same contract
 * as wsuv_alloc_cb (nsize 0 frees and returns NULL). */
static inline void *wsuv__realloc(const wsuv_allocator_t *a, void *ptr,
                                  size_t nsize) {
  if (a->fn) return a->fn(a->ud, ptr, nsize);
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  return realloc(ptr, nsize);
}

#endif /* WS_INTERNAL_H */
