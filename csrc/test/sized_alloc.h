/* sized_alloc.h: blocks that carry their size in a 16-byte prefix, for the
 * counting allocators of the C tests and the fuzzers (a wsuv_allocator_t
 * is not told the old size of a block), and for spec/host/sized_alloc.c's
 * strict Lua allocator (which checks the old size Lua is told). */
#ifndef WSUV_SIZED_ALLOC_H
#define WSUV_SIZED_ALLOC_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The size of a block from sized_realloc, 0 for NULL. */
static inline size_t sized_size(const void *ptr) {
  size_t n = 0;
  if (ptr) memcpy(&n, (const uint8_t *)ptr - 16, sizeof n);
  return n;
}

static inline void sized_free(void *ptr) {
  if (ptr) free((uint8_t *)ptr - 16);
}

/* realloc for nsize > 0: NULL, with ptr untouched, when out of memory. */
static inline void *sized_realloc(void *ptr, size_t nsize) {
  uint8_t *nb = realloc(ptr ? (uint8_t *)ptr - 16 : NULL, nsize + 16);
  if (!nb) return NULL;
  memcpy(nb, &nsize, sizeof nsize);
  return nb + 16;
}

#endif
