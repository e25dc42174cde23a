/* chunk.h: shared helpers for the libFuzzer targets in fuzz/.
 *
 * Parsers must give the same answer however their input is split, so every
 * target feeds its input in chunks (uWebSockets' makeChunked): the first
 * input byte picks the chunk size and the rest is the data. Chunk size 0
 * means "all at once"; sizes 1..255 exercise every split a peer (or TCP)
 * could produce, including one byte at a time.
 *
 * Checks abort() with a message, so libFuzzer records the input as a crash
 * even in builds where assert() is compiled out. */
#ifndef WSUV_FUZZ_CHUNK_H
#define WSUV_FUZZ_CHUNK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsuv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A function rather than a statement macro, so that a target's size as
 * clang-tidy counts it is its own logic, not the expansions. */
static inline void fuzz_check(int ok, const char *file, int line,
                              const char *what) {
  if (ok) return;
  fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
  abort();
}

#define FUZZ_CHECK(cond) fuzz_check((cond) != 0, __FILE__, __LINE__, #cond)

typedef struct {
  const uint8_t *p; /* data not yet handed out */
  size_t n;         /* its length */
  size_t chunk;     /* chunk size; 0 means everything in one chunk */
} fuzz_chunker_t;

/* Takes the chunk size from data[0]; the data is the rest. */
static inline void fuzz_chunker_init(fuzz_chunker_t *c, const uint8_t *data,
                                     size_t size) {
  c->chunk = size ? data[0] : 0;
  c->p = size ? data + 1 : data;
  c->n = size ? size - 1 : 0;
}

/* Hands out the next chunk. Returns 0 once the data is used up. */
static inline int fuzz_chunker_next(fuzz_chunker_t *c, const uint8_t **p,
                                    size_t *n) {
  if (c->n == 0) return 0;
  size_t take = c->chunk && c->chunk < c->n ? c->chunk : c->n;
  *p = c->p;
  *n = take;
  c->p += take;
  c->n -= take;
  return 1;
}

/* Consumes one configuration byte from the front of the data (0 if none). */
static inline uint8_t fuzz_take_byte(const uint8_t **data, size_t *size) {
  if (*size == 0) return 0;
  uint8_t b = **data;
  (*data)++;
  (*size)--;
  return b;
}

/* ---- HTTP heads (fuzz_handshake_req.c, fuzz_handshake_resp.c) ---------- */

typedef ssize_t (*fuzz_http_parse_fn)(const char *, size_t, size_t,
                                      wsuv_http_head_t *);

/* Whether p[0..n) lies inside buf[0..len). */
static inline int fuzz_within(const char *p, size_t n, const char *buf,
                              size_t len) {
  return p >= buf && n <= len && (size_t)(p - buf) <= len - n;
}

static inline int fuzz_is_ows(char c) {
  return c == ' ' || c == '\t';
}

/* Checks a head parsed from buf[0..len): every pointer inside it, names
 * non-empty, values trimmed and free of CR/LF, list tokens well formed,
 * lookups by name consistent. */
static inline void fuzz_http_check_head(const wsuv_http_head_t *h,
                                        const char *buf, size_t len,
                                        size_t capacity, int request) {
  FUZZ_CHECK(h->num_headers <= capacity);
  FUZZ_CHECK(h->version_minor >= 0 && h->version_minor <= 9);
  if (request) {
    FUZZ_CHECK(h->method_len > 0 &&
               fuzz_within(h->method, h->method_len, buf, len));
    FUZZ_CHECK(h->target_len > 0 &&
               fuzz_within(h->target, h->target_len, buf, len));
  } else {
    FUZZ_CHECK(h->status >= 0 && h->status <= 999); /* 3DIGIT */
    FUZZ_CHECK(h->reason_len == 0 ||
               fuzz_within(h->reason, h->reason_len, buf, len));
  }
  for (size_t i = 0; i < h->num_headers; i++) {
    const wsuv_header_t *e = &h->headers[i];
    FUZZ_CHECK(e->name_len > 0 && fuzz_within(e->name, e->name_len, buf, len));
    FUZZ_CHECK(memchr(e->name, ':', e->name_len) == NULL);
    FUZZ_CHECK(e->value_len == 0 ||
               fuzz_within(e->value, e->value_len, buf, len));
    if (e->value_len) {
      FUZZ_CHECK(!fuzz_is_ows(e->value[0]));
      FUZZ_CHECK(!fuzz_is_ows(e->value[e->value_len - 1]));
      FUZZ_CHECK(memchr(e->value, '\r', e->value_len) == NULL);
      FUZZ_CHECK(memchr(e->value, '\n', e->value_len) == NULL);
    }
    /* The first header of this name is at or before this one. */
    char name[64];
    if (e->name_len < sizeof name) {
      memcpy(name, e->name, e->name_len);
      name[e->name_len] = '\0';
      int k = wsuv_http_find(h, name, 0);
      FUZZ_CHECK(k >= 0 && (size_t)k <= i);
      FUZZ_CHECK(wsuv_http_find(h, name, i) == (int)i);
    }
    /* List elements: non-empty, trimmed, inside the value, and without
     * commas unless quoted (RFC 7230 3.2.6: quoted strings keep them). */
    const char *cur = e->value, *end = e->value + e->value_len, *tok;
    size_t tok_len, guard = 0;
    while (wsuv_token_next(&cur, end, &tok, &tok_len)) {
      FUZZ_CHECK(tok_len > 0 &&
                 fuzz_within(tok, tok_len, e->value, e->value_len));
      FUZZ_CHECK(!fuzz_is_ows(tok[0]) && !fuzz_is_ows(tok[tok_len - 1]));
      FUZZ_CHECK(memchr(tok, ',', tok_len) == NULL ||
                 memchr(tok, '"', tok_len) != NULL);
      FUZZ_CHECK(++guard <= e->value_len);
    }
  }
}

/* Parses data as it would arrive: the prefix grows by chunk bytes (0: all
 * at once) and is re-parsed each time, as a server does with its read
 * buffer, until the parser gives an answer. Each prefix is an exact-size
 * copy so that ASan catches a read past it. The answer must not depend on
 * the split: a head found early is the head found in the whole input, and
 * input found malformed early stays malformed. Returns the whole input's
 * result with *h filled from a copy kept in *keep (caller frees). */
static inline ssize_t fuzz_http_parse_chunked(fuzz_http_parse_fn parse,
                                              const uint8_t *data, size_t n,
                                              size_t chunk, size_t max_head,
                                              wsuv_http_head_t *h,
                                              char **keep) {
  size_t cap = h->num_headers;
  size_t eff_max = max_head ? max_head : WSUV_DEFAULT_MAX_HEAD;
  ssize_t early = 0;
  size_t at = 0;
  while (at < n) {
    at = chunk && chunk < n - at ? at + chunk : n;
    char *buf = malloc(at);
    FUZZ_CHECK(buf != NULL);
    memcpy(buf, data, at);
    h->num_headers = cap;
    early = parse(buf, at, max_head, h);
    if (early > 0) {
      FUZZ_CHECK((size_t)early <= at && (size_t)early <= eff_max);
      fuzz_http_check_head(h, buf, (size_t)early, cap,
                           parse == wsuv_http_parse_request);
    }
    free(buf);
    if (early != 0) break;
    /* Incomplete is only allowed below the limit. */
    FUZZ_CHECK(at < eff_max);
  }
  char *buf = malloc(n ? n : 1);
  FUZZ_CHECK(buf != NULL);
  if (n) memcpy(buf, data, n);
  h->num_headers = cap;
  ssize_t r = parse(buf, n, max_head, h);
  if (early > 0) {
    FUZZ_CHECK(r == early);
  } else if (early < 0) {
    FUZZ_CHECK(r < 0);
  } else {
    FUZZ_CHECK(r == 0);
  }
  FUZZ_CHECK(r >= 0 || r == WSUV_EHTTP || r == WSUV_EHEADTOOBIG);
  if (r > 0)
    fuzz_http_check_head(h, buf, (size_t)r, cap,
                         parse == wsuv_http_parse_request);
  *keep = buf;
  return r;
}

#endif
