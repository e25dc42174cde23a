/* fuzz_utf8.c: the incremental UTF-8 validator (RFC 3629, RFC 6455 8.1)
 * against a plain reference written here, which must agree exactly.
 *
 * Input: [chunk size][bytes...]. The bytes are fed to wsuv_utf8_feed and
 * wsuv_utf8_feed_scalar chunk by chunk. After each chunk, both must report
 * failure exactly when the reference says no valid UTF-8 text starts with
 * the bytes so far ("as soon as it cannot be"), stay failed afterwards, and
 * at the end report completeness as the reference does. wsuv_utf8_valid on
 * the whole input must agree too.
 *
 * The reference decodes code points arithmetically instead of with a state
 * table: after each byte of a sequence it computes the range of code points
 * the sequence could still complete to, and fails when no value in that
 * range is a scalar value of the right length (no overlongs, no surrogates,
 * nothing over U+10FFFF). */
#include "chunk.h"
#include "wsuv.h"

#include <string.h>

/* Whether some completion of a len-byte sequence whose leading bits give
 * code points in [lo, hi] is a valid, shortest-form scalar value. */
static int viable(uint32_t lo, uint32_t hi, int len) {
  static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
  static const uint32_t max_cp[5] = {0, 0x7F, 0x7FF, 0xFFFF, 0x10FFFF};
  uint32_t a = lo > min_cp[len] ? lo : min_cp[len];
  uint32_t b = hi < max_cp[len] ? hi : max_cp[len];
  if (a > b) return 0;
  /* Every candidate is a surrogate (U+D800..U+DFFF). */
  if (a >= 0xD800 && b <= 0xDFFF) return 0;
  return 1;
}

/* Returns the offset of the first byte at which p[0..n) stops being a
 * prefix of valid UTF-8, or n when it is one; *complete is set when it
 * also ends on a code point boundary. */
static size_t ref_first_bad(const uint8_t *p, size_t n, int *complete) {
  size_t i = 0;
  *complete = 0;
  while (i < n) {
    uint8_t b = p[i];
    int len;
    uint32_t cp;
    if (b < 0x80) {
      i++;
      continue;
    } else if ((b & 0xE0) == 0xC0) {
      len = 2, cp = b & 0x1Fu;
    } else if ((b & 0xF0) == 0xE0) {
      len = 3, cp = b & 0x0Fu;
    } else if ((b & 0xF8) == 0xF0) {
      len = 4, cp = b & 0x07u;
    } else {
      return i; /* a continuation byte or F8..FF cannot start a sequence */
    }
    for (int k = 0;; k++) {
      int left = len - 1 - k; /* continuation bytes still to come */
      uint32_t lo = cp << (6 * left);
      uint32_t hi = lo | ((1u << (6 * left)) - 1u);
      if (!viable(lo, hi, len)) return i + (size_t)k;
      if (left == 0) break;
      if (i + (size_t)k + 1 >= n) return n; /* incomplete at the end */
      uint8_t c = p[i + (size_t)k + 1];
      if ((c & 0xC0) != 0x80) return i + (size_t)k + 1;
      cp = cp << 6 | (c & 0x3Fu);
    }
    i += (size_t)len;
  }
  *complete = 1;
  return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_chunker_t c;
  fuzz_chunker_init(&c, data, size);
  const uint8_t *all = c.p;
  size_t total = c.n;

  int complete;
  size_t bad = ref_first_bad(all, total, &complete);
  int valid = bad == total && complete;
  FUZZ_CHECK(!wsuv_utf8_valid(all, total) == !valid);

  wsuv_utf8_t fast, plain;
  wsuv_utf8_init(&fast);
  wsuv_utf8_init(&plain);
  FUZZ_CHECK(wsuv_utf8_complete(&fast) && wsuv_utf8_complete(&plain));
  const uint8_t *p;
  size_t n, fed = 0;
  while (fuzz_chunker_next(&c, &p, &n)) {
    /* A private copy of exactly n bytes: ASan sees any read past it. */
    uint8_t *chunk = malloc(n);
    FUZZ_CHECK(chunk != NULL);
    memcpy(chunk, p, n);
    int rf = wsuv_utf8_feed(&fast, chunk, n);
    int rp = wsuv_utf8_feed_scalar(&plain, chunk, n);
    free(chunk);
    fed += n;
    int want = bad < fed ? WSUV_EUTF8 : 0;
    if (rf != want || rp != want) {
      fprintf(stderr, "after %zu bytes: fast %d, scalar %d, reference %d\n",
              fed, rf, rp, want);
      abort();
    }
    /* Completeness mid-stream: the bytes so far end on a boundary. */
    int comp_so_far;
    size_t bad_so_far = ref_first_bad(all, fed, &comp_so_far);
    int want_complete = bad_so_far == fed && comp_so_far;
    FUZZ_CHECK(!wsuv_utf8_complete(&fast) == !want_complete);
    FUZZ_CHECK(!wsuv_utf8_complete(&plain) == !want_complete);
  }
  FUZZ_CHECK(!wsuv_utf8_complete(&fast) == !valid);
  FUZZ_CHECK(!wsuv_utf8_complete(&plain) == !valid);
  /* Failure is sticky: even an empty or ASCII feed keeps reporting it. */
  if (bad < total) {
    FUZZ_CHECK(wsuv_utf8_feed(&fast, (const uint8_t *)"a", 1) == WSUV_EUTF8);
    FUZZ_CHECK(wsuv_utf8_feed_scalar(&plain, (const uint8_t *)"a", 1) ==
               WSUV_EUTF8);
  }
  return 0;
}
