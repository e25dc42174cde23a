/* fuzz_twins.c: every fast path against its plain twin (STYLE.md 5).
 *
 * Input: [chunk size][key 4][offset][misalignment][bytes...].
 * Masking: wsuv_mask and wsuv_mask_copy must produce what wsuv_mask_scalar
 * does, byte for byte, from any key position, at any alignment, for any
 * length, and masking in chunks must equal masking in one go; each returns
 * the key position after the last byte. The bytes around the buffer must
 * be left alone. UTF-8: wsuv_utf8_feed and wsuv_utf8_feed_scalar must give
 * the same result after every chunk, from any alignment. */
#include "chunk.h"
#include "wsuv.h"

#include <string.h>

#define GUARD 32 /* bytes checked on each side of a masked buffer */

/* Every byte of the region outside buf[0..n) still holds the fill. */
static void check_outside(const uint8_t *region, size_t region_len,
                          const uint8_t *buf, size_t n) {
  size_t from = (size_t)(buf - region);
  for (size_t i = 0; i < region_len; i++)
    if (i < from || i >= from + n) FUZZ_CHECK(region[i] == 0xA5);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_chunker_t c;
  fuzz_chunker_init(&c, data, size);
  if (c.n < 6) return 0;
  uint8_t key[4];
  memcpy(key, c.p, 4);
  size_t offset = c.p[4] & 3u;
  size_t align = c.p[5] & 15u;
  c.p += 6;
  c.n -= 6;
  const uint8_t *in = c.p;
  size_t n = c.n;

  /* Region: guard, up to 15 bytes of misalignment, the buffer, guard. */
  size_t region_len = GUARD + 16 + n + GUARD;
  uint8_t *want = malloc(n ? n : 1);
  uint8_t *r1 = malloc(region_len), *r2 = malloc(region_len);
  FUZZ_CHECK(want && r1 && r2);
  memset(r1, 0xA5, region_len);
  memset(r2, 0xA5, region_len);
  uint8_t *b1 = r1 + GUARD + align, *b2 = r2 + GUARD + align;

  /* The scalar twin is the definition. */
  if (n) memcpy(want, in, n);
  size_t end = wsuv_mask_scalar(want, n, key, offset);
  FUZZ_CHECK(end == ((offset + n) & 3u));
  for (size_t i = 0; i < n; i++)
    FUZZ_CHECK(want[i] == (uint8_t)(in[i] ^ key[(offset + i) & 3u]));

  /* In place, in one go. */
  if (n) memcpy(b1, in, n);
  FUZZ_CHECK(wsuv_mask(b1, n, key, offset) == end);
  FUZZ_CHECK(n == 0 || memcmp(b1, want, n) == 0);
  check_outside(r1, region_len, b1, n);

  /* Copying, to a differently aligned destination. */
  uint8_t *b3 = r2 + GUARD + ((align + 7) & 15u);
  FUZZ_CHECK(wsuv_mask_copy(b3, in, n, key, offset) == end);
  FUZZ_CHECK(n == 0 || memcmp(b3, want, n) == 0);
  check_outside(r2, region_len, b3, n);

  /* In place, chunk by chunk, carrying the key position. */
  memset(r2, 0xA5, region_len);
  if (n) memcpy(b2, in, n);
  size_t pos = offset, done = 0;
  const uint8_t *p;
  size_t k;
  while (fuzz_chunker_next(&c, &p, &k)) {
    pos = wsuv_mask(b2 + done, k, key, pos);
    done += k;
    FUZZ_CHECK(pos == ((offset + done) & 3u));
  }
  FUZZ_CHECK(n == 0 || memcmp(b2, want, n) == 0);
  check_outside(r2, region_len, b2, n);

  /* UTF-8, fast path against scalar, chunk by chunk from the same
   * misaligned copy. */
  if (n) memcpy(b1, in, n);
  wsuv_utf8_t fast, plain;
  wsuv_utf8_init(&fast);
  wsuv_utf8_init(&plain);
  fuzz_chunker_init(&c, data, size);
  c.p += 6, c.n -= 6; /* same chunk size, same bytes as above */
  done = 0;
  while (fuzz_chunker_next(&c, &p, &k)) {
    int rf = wsuv_utf8_feed(&fast, b1 + done, k);
    int rp = wsuv_utf8_feed_scalar(&plain, b1 + done, k);
    FUZZ_CHECK(rf == rp);
    FUZZ_CHECK(!wsuv_utf8_complete(&fast) == !wsuv_utf8_complete(&plain));
    done += k;
  }
  FUZZ_CHECK(!wsuv_utf8_valid(b1, n) == !wsuv_utf8_complete(&plain));

  free(want);
  free(r1);
  free(r2);
  return 0;
}
