/* test_mask.c: wsuv_mask and wsuv_mask_copy against the scalar twin, and
 * the scalar twin against RFC 6455 5.3 directly. */
#include "wsuv.h"
#include "test.h"

#include <stdint.h>

static uint32_t rng_state = 0x12345678u;

static uint8_t rnd8(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return (uint8_t)(rng_state >> 24);
}

static void test_rfc_vector(void) {
  /* RFC 6455 5.7: "Hello" masked with 37 fa 21 3d. */
  const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
  const uint8_t want[5] = {0x7f, 0x9f, 0x4d, 0x51, 0x58};
  uint8_t a[5], b[5], c[5];
  memcpy(a, "Hello", 5);
  memcpy(b, "Hello", 5);
  CHECK_EQ_INT(wsuv_mask(a, 5, key, 0), 1);
  CHECK_EQ_INT(wsuv_mask_scalar(b, 5, key, 0), 1);
  CHECK_EQ_INT(wsuv_mask_copy(c, (const uint8_t *)"Hello", 5, key, 0), 1);
  CHECK_MEM(a, want, 5);
  CHECK_MEM(b, want, 5);
  CHECK_MEM(c, want, 5);
  /* In two pieces, carrying the key position. */
  memcpy(a, "Hello", 5);
  size_t pos = wsuv_mask(a, 3, key, 0);
  CHECK_EQ_INT(pos, 3);
  CHECK_EQ_INT(wsuv_mask(a + 3, 2, key, pos), 1);
  CHECK_MEM(a, want, 5);
}

#define MAXLEN 300
#define SLACK  40 /* room for misalignment and guard bytes */

/* For every length, key offset and misalignment: the scalar twin follows
 * the RFC formula, wsuv_mask and wsuv_mask_copy equal it, neither touches a
 * byte outside the range, and masking twice restores the input. */
static void test_twins(void) {
  static uint8_t src[MAXLEN + SLACK], a[MAXLEN + SLACK], b[MAXLEN + SLACK],
      c[MAXLEN + SLACK];
  uint8_t key[4];
  long bad_formula = 0, bad_fast = 0, bad_copy = 0, bad_ret = 0, bad_guard = 0,
       bad_twice = 0, bad_split = 0, cases = 0;
  for (size_t len = 0; len <= MAXLEN; len++) {
    for (size_t off = 0; off < 4; off++) {
      for (size_t mis = 0; mis < 16; mis += (mis < 8 ? 1 : 7)) {
        size_t mis2 = (mis * 5 + 3) % 16; /* copy: a different alignment */
        for (int i = 0; i < 4; i++)
          key[i] = rnd8();
        for (size_t i = 0; i < sizeof src; i++)
          src[i] = rnd8();
        memcpy(a, src, sizeof a);
        memcpy(b, src, sizeof b);
        memcpy(c, src, sizeof c);
        size_t want_ret = (off + len) & 3;
        size_t rb = wsuv_mask_scalar(b + mis, len, key, off);
        size_t ra = wsuv_mask(a + mis, len, key, off);
        size_t rc = wsuv_mask_copy(c + mis2, src + mis, len, key, off);
        for (size_t i = 0; i < len; i++)
          if (b[mis + i] != (uint8_t)(src[mis + i] ^ key[(off + i) % 4]))
            bad_formula++;
        if (memcmp(a, b, sizeof a) != 0) bad_fast++;
        if (memcmp(c + mis2, b + mis, len) != 0) bad_copy++;
        if (ra != want_ret || rb != want_ret || rc != want_ret) bad_ret++;
        if (memcmp(a, src, mis) != 0 ||
            memcmp(a + mis + len, src + mis + len, sizeof a - mis - len) != 0 ||
            memcmp(c, src, mis2) != 0 ||
            memcmp(c + mis2 + len, src + mis2 + len, sizeof c - mis2 - len) !=
                0)
          bad_guard++;
        wsuv_mask(a + mis, len, key, off);
        if (memcmp(a, src, sizeof a) != 0) bad_twice++;
        /* Split at a random point, carrying the returned key position. */
        size_t cut = len ? rnd8() % (len + 1) : 0;
        memcpy(a, src, sizeof a);
        size_t pos = wsuv_mask(a + mis, cut, key, off);
        wsuv_mask(a + mis + cut, len - cut, key, pos);
        if (memcmp(a, b, sizeof a) != 0) bad_split++;
        cases++;
      }
    }
  }
  CHECK(cases == 301 * 4 * 10);
  CHECK_EQ_INT(bad_formula, 0);
  CHECK_EQ_INT(bad_fast, 0);
  CHECK_EQ_INT(bad_copy, 0);
  CHECK_EQ_INT(bad_ret, 0);
  CHECK_EQ_INT(bad_guard, 0);
  CHECK_EQ_INT(bad_twice, 0);
  CHECK_EQ_INT(bad_split, 0);
}

/* Offsets outside 0..3 are taken modulo 4. */
static void test_offset_wraps(void) {
  const uint8_t key[4] = {1, 2, 4, 8};
  uint8_t a[7] = {0}, b[7] = {0};
  CHECK_EQ_INT(wsuv_mask(a, 7, key, 5), (5 + 7) & 3);
  CHECK_EQ_INT(wsuv_mask_scalar(b, 7, key, 1), (1 + 7) & 3);
  CHECK_MEM(a, b, 7);
  CHECK_EQ_INT(a[0], 2);
}

/* A large buffer, where the wide paths do nearly all the work. */
static void test_large(void) {
  enum { N = 1 << 16 };
  static uint8_t a[N + 3], b[N + 3];
  const uint8_t key[4] = {0xde, 0xad, 0xbe, 0xef};
  for (size_t i = 0; i < sizeof a; i++)
    a[i] = b[i] = (uint8_t)(i * 7);
  for (size_t off = 0; off < 4; off++) {
    CHECK_EQ_INT(wsuv_mask(a + 3, N, key, off), off);
    CHECK_EQ_INT(wsuv_mask_scalar(b + 3, N, key, off), off);
    CHECK_MEM(a, b, sizeof a);
  }
}

int main(void) {
  test_rfc_vector();
  test_twins();
  test_offset_wraps();
  test_large();
  return TEST_REPORT();
}
