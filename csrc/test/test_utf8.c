/* test_utf8.c: the incremental validator against classic vectors, against
 * its scalar twin, and against a plain reference decoder written here. */
#include "wsuv.h"
#include "test.h"

#include <stdint.h>

/* Reference: whether the code points an L-byte sequence could still reach
 * ([lo, hi]) include a valid one, i.e. one in [min, U+10FFFF] that is not a
 * surrogate. */
static int ref_feasible(uint32_t lo, uint32_t hi, uint32_t min) {
  if (lo < min) lo = min;
  if (hi > 0x10FFFF) hi = 0x10FFFF;
  if (lo > hi) return 0;
  return lo < 0xD800 || hi > 0xDFFF;
}

/* Reference decoder, written for clarity, not speed. Returns the index of
 * the first byte after which s cannot be a prefix of valid UTF-8, or -1 if
 * it can; *complete tells whether s ends at a code point boundary. */
static long ref_scan(const uint8_t *s, size_t n, int *complete) {
  size_t i = 0;
  *complete = 0;
  while (i < n) {
    uint8_t b = s[i];
    int need;
    uint32_t cp, min;
    if (b < 0x80) {
      i++;
      continue;
    } else if ((b & 0xE0) == 0xC0) {
      need = 1, cp = b & 0x1Fu, min = 0x80;
    } else if ((b & 0xF0) == 0xE0) {
      need = 2, cp = b & 0x0Fu, min = 0x800;
    } else if ((b & 0xF8) == 0xF0) {
      need = 3, cp = b & 0x07u, min = 0x10000;
    } else {
      return (long)i; /* continuation byte or F8..FF as a lead */
    }
    for (int have = 0;; have++) {
      int bits = 6 * (need - have);
      uint32_t lo = cp << bits, hi = lo | ((1u << bits) - 1);
      if (!ref_feasible(lo, hi, min)) return (long)i;
      if (have == need) break;
      if (i + 1 >= n) return -1; /* a valid but unfinished prefix */
      i++;
      if ((s[i] & 0xC0) != 0x80) return (long)i;
      cp = cp << 6 | (s[i] & 0x3Fu);
    }
    i++;
  }
  *complete = 1;
  return -1;
}

/* Index of the first byte whose feed fails, byte by byte, or -1. */
static long first_fail(int (*feed)(wsuv_utf8_t *, const uint8_t *, size_t),
                       const uint8_t *s, size_t n, int *complete) {
  wsuv_utf8_t v;
  wsuv_utf8_init(&v);
  long at = -1;
  for (size_t i = 0; i < n; i++) {
    if (feed(&v, s + i, 1) != 0) {
      at = (long)i;
      break;
    }
  }
  *complete = wsuv_utf8_complete(&v);
  return at;
}

/* Whole-buffer feed: 0 or WSUV_EUTF8, and completeness. */
static int feed_whole(int (*feed)(wsuv_utf8_t *, const uint8_t *, size_t),
                      const uint8_t *s, size_t n, int *complete) {
  wsuv_utf8_t v;
  wsuv_utf8_init(&v);
  int r = feed(&v, s, n);
  *complete = wsuv_utf8_complete(&v);
  return r;
}

typedef struct {
  const char *name;
  const char *s;
  size_t n;
  long fail_at; /* -1: a valid prefix */
  int complete;
} vec_t;

#define V(name, lit, fail, complete)                                           \
  { name, lit, sizeof lit - 1, fail, complete }

static const vec_t vectors[] = {
    V("empty", "", -1, 1),
    V("ascii", "Hello, world", -1, 1),
    V("U+0080", "\xC2\x80", -1, 1),
    V("U+07FF", "\xDF\xBF", -1, 1),
    V("U+0800", "\xE0\xA0\x80", -1, 1),
    V("U+D7FF", "\xED\x9F\xBF", -1, 1),
    V("U+E000", "\xEE\x80\x80", -1, 1),
    V("U+FFFF", "\xEF\xBF\xBF", -1, 1),
    V("U+10000", "\xF0\x90\x80\x80", -1, 1),
    V("U+10FFFF", "\xF4\x8F\xBF\xBF", -1, 1),
    V("kosme", "\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5", -1, 1),
    V("overlong / 2", "\xC0\xAF", 0, 0),
    V("overlong / 3", "\xE0\x80\xAF", 1, 0),
    V("overlong / 4", "\xF0\x80\x80\xAF", 1, 0),
    V("overlong U+07FF 3", "\xE0\x9F\xBF", 1, 0),
    V("overlong U+FFFF 4", "\xF0\x8F\xBF\xBF", 1, 0),
    V("C1", "\xC1\xBF", 0, 0),
    V("surrogate D800", "\xED\xA0\x80", 1, 0),
    V("surrogate DFFF", "\xED\xBF\xBF", 1, 0),
    V("surrogate pair", "\xED\xA0\x80\xED\xB0\x80", 1, 0),
    V("U+110000", "\xF4\x90\x80\x80", 1, 0),
    V("F5", "\xF5\x80\x80\x80", 0, 0),
    V("FE", "\xFE", 0, 0),
    V("FF", "\xFF", 0, 0),
    V("lone continuation", "\x80", 0, 0),
    V("lone BF", "a\xBF", 1, 0),
    V("2 continuations", "\x80\xBF", 0, 0),
    V("truncated 2", "\xC2", -1, 0),
    V("truncated 3", "\xE2\x82", -1, 0),
    V("truncated 4", "\xF0\x9F\x98", -1, 0),
    V("truncated then ascii",
      "\xE2\x82"
      "a",
      2, 0),
    V("lead then lead", "\xC2\xC2\x80", 1, 0),
    V("5-byte form", "\xF8\x88\x80\x80\x80", 0, 0),
    V("invalid after ascii words",
      "abcdefghijklmnopqrstuvwxyz\xC3\xA9"
      "0123456789abcdef\xFF",
      44, 0),
    V("valid after ascii words",
      "abcdefghijklmnop\xF0\x9F\x98\x80"
      "qrstuvwxyz012345",
      -1, 1),
};

static void test_vectors(void) {
  for (size_t k = 0; k < sizeof vectors / sizeof vectors[0]; k++) {
    const vec_t *t = &vectors[k];
    const uint8_t *s = (const uint8_t *)t->s;
    int c1, c2, c3, c4, c5;
    long ref = ref_scan(s, t->n, &c1);
    long fast = first_fail(wsuv_utf8_feed, s, t->n, &c2);
    long slow = first_fail(wsuv_utf8_feed_scalar, s, t->n, &c3);
    int rf = feed_whole(wsuv_utf8_feed, s, t->n, &c4);
    int rs = feed_whole(wsuv_utf8_feed_scalar, s, t->n, &c5);
    if (ref != t->fail_at || fast != t->fail_at || slow != t->fail_at)
      fprintf(stderr, "vector %s: ref %ld fast %ld scalar %ld want %ld\n",
              t->name, ref, fast, slow, t->fail_at);
    CHECK_EQ_INT(ref, t->fail_at);
    CHECK_EQ_INT(fast, t->fail_at);
    CHECK_EQ_INT(slow, t->fail_at);
    CHECK_EQ_INT(rf, t->fail_at < 0 ? 0 : WSUV_EUTF8);
    CHECK_EQ_INT(rs, t->fail_at < 0 ? 0 : WSUV_EUTF8);
    CHECK_EQ_INT(c1, t->complete);
    CHECK_EQ_INT(c2, t->complete);
    CHECK_EQ_INT(c4, t->complete);
    CHECK_EQ_INT(wsuv_utf8_valid(s, t->n), t->fail_at < 0 && t->complete);
  }
}

/* Compares fast, scalar and reference on s: status, completeness and,
 * byte by byte, the failing index. Returns the number of disagreements. */
static long compare_all(const uint8_t *s, size_t n, int bytewise) {
  int cref, cf, cs;
  long ref = ref_scan(s, n, &cref);
  int want = ref < 0 ? 0 : WSUV_EUTF8;
  long bad = 0;
  if (feed_whole(wsuv_utf8_feed, s, n, &cf) != want) bad++;
  if (feed_whole(wsuv_utf8_feed_scalar, s, n, &cs) != want) bad++;
  if (ref < 0 && (cf != cref || cs != cref)) bad++;
  if (bytewise) {
    int c;
    if (first_fail(wsuv_utf8_feed_scalar, s, n, &c) != ref) bad++;
  }
  return bad;
}

/* Every 1-, 2- and 3-byte sequence, bare and between ASCII runs so the fast
 * path sees it inside and after an 8-byte word. */
static void test_exhaustive(void) {
  uint8_t buf[32];
  long bad1 = 0, bad2 = 0, bad3 = 0, badpad = 0;
  memset(buf, 'a', sizeof buf);
  for (unsigned a = 0; a < 256; a++) {
    buf[0] = (uint8_t)a;
    bad1 += compare_all(buf, 1, 1);
    for (unsigned b = 0; b < 256; b++) {
      buf[1] = (uint8_t)b;
      bad2 += compare_all(buf, 2, 1);
      for (unsigned c = 0; c < 256; c++) {
        buf[2] = (uint8_t)c;
        bad3 += compare_all(buf, 3, 1);
      }
    }
  }
  /* "aaaaa" seq "aaaaaaaaaaa": fast words straddle and follow seq. */
  memset(buf, 'a', sizeof buf);
  for (uint32_t x = 0; x < (1u << 24); x++) {
    buf[5] = (uint8_t)(x >> 16);
    buf[6] = (uint8_t)(x >> 8);
    buf[7] = (uint8_t)x;
    badpad += compare_all(buf, 19, 0);
  }
  CHECK_EQ_INT(bad1, 0);
  CHECK_EQ_INT(bad2, 0);
  CHECK_EQ_INT(bad3, 0);
  CHECK_EQ_INT(badpad, 0);
}

static uint32_t rng = 0x9e3779b9u;

static uint32_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 17;
  rng ^= rng << 5;
  return rng;
}

static size_t put_cp(uint8_t *p, uint32_t cp) {
  if (cp < 0x80) {
    p[0] = (uint8_t)cp;
    return 1;
  }
  if (cp < 0x800) {
    p[0] = (uint8_t)(0xC0 | cp >> 6);
    p[1] = (uint8_t)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    p[0] = (uint8_t)(0xE0 | cp >> 12);
    p[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
    p[2] = (uint8_t)(0x80 | (cp & 0x3F));
    return 3;
  }
  p[0] = (uint8_t)(0xF0 | cp >> 18);
  p[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
  p[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
  p[3] = (uint8_t)(0x80 | (cp & 0x3F));
  return 4;
}

/* Random mostly-valid strings (long ASCII runs, encoded code points, rare
 * noise), checked whole and fed in random chunks. */
static void test_random(void) {
  static uint8_t s[600];
  long bad = 0, bad_chunks = 0, valid = 0, invalid = 0;
  for (int iter = 0; iter < 50000; iter++) {
    size_t n = 0, target = rnd() % 500;
    while (n < target) {
      uint32_t r = rnd() % 100;
      if (r < 60) {
        size_t run = rnd() % 20;
        for (size_t i = 0; i < run; i++)
          s[n++] = (uint8_t)(0x20 + rnd() % 95);
      } else if (r < 99 || iter % 2) {
        uint32_t cp = rnd() % 0x110000;
        if (cp >= 0xD800 && cp <= 0xDFFF) cp -= 0x800;
        n += put_cp(s + n, cp);
      } else {
        s[n++] = (uint8_t)rnd();
      }
    }
    int cref;
    long ref = ref_scan(s, n, &cref);
    if (ref < 0 && cref)
      valid++;
    else
      invalid++;
    bad += compare_all(s, n, iter % 8 == 0);
    /* Chunked: the same verdict wherever the input is cut. */
    wsuv_utf8_t v;
    wsuv_utf8_init(&v);
    int r = 0;
    for (size_t off = 0; off < n;) {
      size_t k = 1 + rnd() % 40;
      if (k > n - off) k = n - off;
      r = wsuv_utf8_feed(&v, s + off, k);
      off += k;
    }
    if ((r != 0) != (ref >= 0) || (ref < 0 && wsuv_utf8_complete(&v) != cref))
      bad_chunks++;
  }
  CHECK_EQ_INT(bad, 0);
  CHECK_EQ_INT(bad_chunks, 0);
  CHECK(valid > 10000); /* the generator exercises both outcomes */
  CHECK(invalid > 1000);
}

static void test_incremental(void) {
  /* A 4-byte character split across feeds is fine, but not complete until
   * its last byte. */
  wsuv_utf8_t v;
  wsuv_utf8_init(&v);
  CHECK_EQ_INT(wsuv_utf8_feed(&v, (const uint8_t *)"ab\xF0\x9F", 4), 0);
  CHECK(!wsuv_utf8_complete(&v));
  CHECK_EQ_INT(wsuv_utf8_feed(&v, (const uint8_t *)"\x98", 1), 0);
  CHECK(!wsuv_utf8_complete(&v));
  CHECK_EQ_INT(wsuv_utf8_feed(&v,
                              (const uint8_t *)"\x80"
                                               "cdefghijkl",
                              11),
               0);
  CHECK(wsuv_utf8_complete(&v));
  /* An invalid prefix fails at once, before any later byte. */
  wsuv_utf8_init(&v);
  CHECK_EQ_INT(wsuv_utf8_feed(&v, (const uint8_t *)"\xF4", 1), 0);
  CHECK_EQ_INT(wsuv_utf8_feed(&v, (const uint8_t *)"\x90", 1), WSUV_EUTF8);
  /* Failure is sticky, even for plain ASCII words. */
  CHECK_EQ_INT(wsuv_utf8_feed(&v, (const uint8_t *)"abcdefghijklmnop", 16),
               WSUV_EUTF8);
  CHECK_EQ_INT(wsuv_utf8_feed_scalar(&v, (const uint8_t *)"a", 1), WSUV_EUTF8);
  CHECK_EQ_INT(wsuv_utf8_feed(&v, NULL, 0), WSUV_EUTF8);
  CHECK(!wsuv_utf8_complete(&v));
  /* Zero bytes change nothing. */
  wsuv_utf8_init(&v);
  CHECK_EQ_INT(wsuv_utf8_feed(&v, NULL, 0), 0);
  CHECK(wsuv_utf8_complete(&v));
  CHECK(wsuv_utf8_valid(NULL, 0));
}

int main(void) {
  test_vectors();
  test_incremental();
  test_random();
  test_exhaustive();
  return TEST_REPORT();
}
