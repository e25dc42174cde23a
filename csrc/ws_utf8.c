/* ws_utf8.c: incremental UTF-8 validation (RFC 3629), as RFC 6455 8.1
 * requires for text messages.
 *
 * A DFA in the style of Bjoern Hoehrmann's decoder: each byte maps to a
 * class, and (state, class) to the next state. The states encode which
 * continuation bytes may follow, so overlongs (C0, C1, E0 80..9F, F0 80..8F),
 * surrogates (ED A0..BF) and code points over U+10FFFF (F4 90..BF, F5..FF)
 * are rejected at the first byte that rules out every valid completion.
 * wsuv_utf8_t.state holds the DFA state: 0 at a code point boundary. */
#include "ws_internal.h"

enum {
  S_ACCEPT = 0, /* at a boundary */
  S_REJECT = 1, /* sticky failure */
  S_CONT1 = 2,  /* one continuation byte (80..BF) left */
  S_CONT2 = 3,  /* two left */
  S_CONT3 = 4,  /* three left */
  S_E0 = 5,     /* after E0: A0..BF, then one (no overlong 3-byte) */
  S_ED = 6,     /* after ED: 80..9F, then one (no surrogates) */
  S_F0 = 7,     /* after F0: 90..BF, then two (no overlong 4-byte) */
  S_F4 = 8      /* after F4: 80..8F, then two (nothing over U+10FFFF) */
};

/* Byte classes: 0 ASCII, 1 80..8F, 2 90..9F, 3 A0..BF, 4 C2..DF, 5 E0,
 * 6 E1..EC EE..EF, 7 ED, 8 F0, 9 F1..F3, 10 F4, 11 never valid. */
static const uint8_t utf8_class[256] = {
    0,  0,  0, 0, 0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 00 */
    0,  0,  0, 0, 0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 10 */
    0,  0,  0, 0, 0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 20 */
    0,  0,  0, 0, 0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 30 */
    0,  0,  0, 0, 0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 40 */
    0,  0,  0, 0, 0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 50 */
    0,  0,  0, 0, 0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 60 */
    0,  0,  0, 0, 0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 70 */
    1,  1,  1, 1, 1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  /* 80 */
    2,  2,  2, 2, 2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 90 */
    3,  3,  3, 3, 3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  /* A0 */
    3,  3,  3, 3, 3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  /* B0 */
    11, 11, 4, 4, 4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  /* C0 */
    4,  4,  4, 4, 4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  /* D0 */
    5,  6,  6, 6, 6,  6,  6,  6,  6,  6,  6,  6,  6,  7,  6,  6,  /* E0 */
    8,  9,  9, 9, 10, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, /* F0 */
};

/* Columns are the byte classes above. */
#define A  S_ACCEPT
#define R  S_REJECT
#define C1 S_CONT1
#define C2 S_CONT2
#define C3 S_CONT3
#define E0 S_E0
#define ED S_ED
#define F0 S_F0
#define F4 S_F4
/* clang-format off */
static const uint8_t utf8_next[9][12] = {
  /*            00  80  90  A0  C2  E0  E1  ED  F0  F1  F4  -- */
  [S_ACCEPT] = {A , R , R , R , C1, E0, C2, ED, F0, C3, F4, R},
  [S_REJECT] = {R , R , R , R , R , R , R , R , R , R , R , R},
  [S_CONT1]  = {R , A , A , A , R , R , R , R , R , R , R , R},
  [S_CONT2]  = {R , C1, C1, C1, R , R , R , R , R , R , R , R},
  [S_CONT3]  = {R , C2, C2, C2, R , R , R , R , R , R , R , R},
  [S_E0]     = {R , R , R , C1, R , R , R , R , R , R , R , R},
  [S_ED]     = {R , C1, C1, R , R , R , R , R , R , R , R , R},
  [S_F0]     = {R , R , C2, C2, R , R , R , R , R , R , R , R},
  [S_F4]     = {R , C2, R , R , R , R , R , R , R , R , R , R},
};
/* clang-format on */
#undef A
#undef R
#undef C1
#undef C2
#undef C3
#undef E0
#undef ED
#undef F0
#undef F4

void wsuv_utf8_init(wsuv_utf8_t *v) {
  v->state = S_ACCEPT;
}

int wsuv_utf8_feed_scalar(wsuv_utf8_t *v, const uint8_t *p, size_t n) {
  uint32_t s = v->state;
  for (size_t i = 0; i < n && s != S_REJECT; i++)
    s = utf8_next[s][utf8_class[p[i]]];
  v->state = s;
  return s == S_REJECT ? WSUV_EUTF8 : 0;
}

int wsuv_utf8_feed(wsuv_utf8_t *v, const uint8_t *p, size_t n) {
  uint32_t s = v->state;
  size_t i = 0;
  while (i < n && s != S_REJECT) {
    if (s == S_ACCEPT) {
      /* At a boundary, skip whole words of ASCII: no byte has its top bit. */
      while (n - i >= 8 &&
             (wsuv__load64(p + i) & UINT64_C(0x8080808080808080)) == 0)
        i += 8;
      if (i == n) break;
    }
    s = utf8_next[s][utf8_class[p[i]]];
    i++;
  }
  v->state = s;
  return s == S_REJECT ? WSUV_EUTF8 : 0;
}

int wsuv_utf8_complete(const wsuv_utf8_t *v) {
  return v->state == S_ACCEPT;
}

int wsuv_utf8_valid(const uint8_t *p, size_t n) {
  wsuv_utf8_t v;
  wsuv_utf8_init(&v);
  return wsuv_utf8_feed(&v, p, n) == 0 && wsuv_utf8_complete(&v);
}
