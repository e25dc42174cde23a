/* bench_core.c: micro-benchmarks of the sans-IO core's hot paths.
 *
 * Unmasking (wsuv_mask against its scalar twin), UTF-8 validation (ASCII
 * and mixed multi-byte text, fast path against scalar twin) and parsing of
 * many small masked frames in the server role. Each row reports throughput
 * and its ratio to memcpy over the same amount of data, measured in the same
 * run, so the numbers compare across machines. Each measurement repeats the
 * work for at least 0.2 s and the best of 5 is kept.
 *
 * Usage: bench_core [--quick]   (--quick: one pass each, for callgrind) */
#define _POSIX_C_SOURCE 200809L
#include "wsuv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BUF_SIZE  (1u << 20) /* 1 MiB */
#define MIN_TIME  0.2        /* seconds per measurement */
#define BEST_OF   5
#define FRAME_LEN 16u /* payload bytes per frame in the parse benchmark */

static int quick;

/* Keeps the compiler from discarding work whose result is unused. */
static void escape(const void *p) {
  __asm__ volatile("" : : "r"(p) : "memory");
}
static volatile unsigned long sink;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef void (*work_fn)(void *ctx);

/* Best time of one call of fn, in seconds. */
static double measure(work_fn fn, void *ctx) {
  if (quick) {
    double t0 = now();
    fn(ctx);
    return now() - t0;
  }
  fn(ctx); /* warm up caches and branch predictors */
  double best = 1e30;
  for (int round = 0; round < BEST_OF; round++) {
    long iters = 0;
    double t0 = now(), t;
    do {
      fn(ctx);
      iters++;
      t = now() - t0;
    } while (t < MIN_TIME);
    if (t / (double)iters < best) best = t / (double)iters;
  }
  return best;
}

typedef struct {
  uint8_t *src, *dst;
  size_t len;
  uint8_t key[4];
  wsuv_parser_t *parser;
  size_t frames; /* frames parsed per call (checked) */
} ctx_t;

static void do_memcpy(void *v) {
  ctx_t *c = v;
  memcpy(c->dst, c->src, c->len);
  escape(c->dst);
}

static void do_mask(void *v) {
  ctx_t *c = v;
  sink += wsuv_mask(c->src, c->len, c->key, 1);
  escape(c->src);
}

static void do_mask_scalar(void *v) {
  ctx_t *c = v;
  sink += wsuv_mask_scalar(c->src, c->len, c->key, 1);
  escape(c->src);
}

static void do_mask_copy(void *v) {
  ctx_t *c = v;
  sink += wsuv_mask_copy(c->dst, c->src, c->len, c->key, 1);
  escape(c->dst);
}

static void do_utf8(void *v) {
  ctx_t *c = v;
  escape(c->src);
  sink += (unsigned long)wsuv_utf8_valid(c->src, c->len);
}

static void do_utf8_scalar(void *v) {
  ctx_t *c = v;
  wsuv_utf8_t u;
  wsuv_utf8_init(&u);
  escape(c->src);
  sink += (unsigned long)(wsuv_utf8_feed_scalar(&u, c->src, c->len) == 0 &&
                          wsuv_utf8_complete(&u));
}

static void do_parse(void *v) {
  ctx_t *c = v;
  size_t off = 0, events = 0;
  while (off < c->len) {
    wsuv_event_t ev;
    ssize_t r = wsuv_parser_feed(c->parser, c->src + off, c->len - off, &ev);
    if (r < 0) {
      fprintf(stderr, "parse failed: %s\n", wsuv_strerror((int)r));
      exit(1);
    }
    off += (size_t)r;
    if (ev.type != WSUV_EV_NONE) {
      events++;
      sink += ev.len;
    }
  }
  c->frames = events;
}

/* Text of mixed widths: ASCII, Greek (2 bytes), CJK and the euro sign
 * (3 bytes), emoji (4 bytes), repeated to fill the buffer. */
static void fill_mixed(uint8_t *p, size_t n) {
  static const char sample[] = "Hello, κόσμε! 世界 € 😀 naïve café — ok. ";
  size_t k = sizeof sample - 1, i = 0;
  while (i + k <= n) {
    memcpy(p + i, sample, k);
    i += k;
  }
  memset(p + i, ' ', n - i); /* pad with ASCII, still valid */
}

/* Masked binary frames of FRAME_LEN bytes, as a client sends them. */
static size_t fill_frames(uint8_t *p, size_t n, const uint8_t key[4]) {
  size_t i = 0, count = 0;
  const size_t each = 2 + 4 + FRAME_LEN;
  while (i + each <= n) {
    i += wsuv_frame_build_header(p + i, WSUV_FIN, WSUV_OP_BINARY, FRAME_LEN,
                                 key);
    for (size_t j = 0; j < FRAME_LEN; j++)
      p[i + j] = (uint8_t)(j * 7u);
    wsuv_mask(p + i, FRAME_LEN, key, 0);
    i += FRAME_LEN;
    count++;
  }
  return count;
}

static void row(const char *name, double secs, size_t bytes, double base_gbs,
                size_t frames) {
  double gbs = (double)bytes / secs / 1e9;
  if (frames)
    printf("%-28s %9.3f %12.2f %9.2fx\n", name, gbs,
           (double)frames / secs / 1e6, gbs / base_gbs);
  else
    printf("%-28s %9.3f %12s %9.2fx\n", name, gbs, "-", gbs / base_gbs);
}

/* Runs every row; returns the exit status. */
static int bench(ctx_t *cp) {
  ctx_t c = *cp;
  if (!c.src || !c.dst) return 1;
  for (size_t i = 0; i < BUF_SIZE; i++)
    c.src[i] = (uint8_t)(i * 131u + 7u);

  printf("wsuv core micro-benchmarks: 1 MiB buffers, best of %d, "
         ">= %.1f s each%s\n\n",
         BEST_OF, MIN_TIME, quick ? " (quick: one pass)" : "");
  printf("%-28s %9s %12s %10s\n", "benchmark", "GB/s", "M frames/s",
         "vs memcpy");

  double t = measure(do_memcpy, &c);
  double base = (double)BUF_SIZE / t / 1e9;
  row("memcpy (baseline)", t, BUF_SIZE, base, 0);
  row("wsuv_mask", measure(do_mask, &c), BUF_SIZE, base, 0);
  row("wsuv_mask_scalar", measure(do_mask_scalar, &c), BUF_SIZE, base, 0);
  row("wsuv_mask_copy", measure(do_mask_copy, &c), BUF_SIZE, base, 0);

  memset(c.src, 'a', BUF_SIZE);
  for (size_t i = 0; i < BUF_SIZE; i += 64)
    c.src[i] = (uint8_t)(' ' + i % 90u);
  row("utf8 valid, ASCII", measure(do_utf8, &c), BUF_SIZE, base, 0);
  row("utf8 scalar, ASCII", measure(do_utf8_scalar, &c), BUF_SIZE, base, 0);
  fill_mixed(c.src, BUF_SIZE);
  if (!wsuv_utf8_valid(c.src, BUF_SIZE)) {
    fprintf(stderr, "mixed sample is not valid UTF-8\n");
    return 1;
  }
  row("utf8 valid, mixed", measure(do_utf8, &c), BUF_SIZE, base, 0);
  row("utf8 scalar, mixed", measure(do_utf8_scalar, &c), BUF_SIZE, base, 0);

  /* Frames: the parser unmasks in place, so every pass flips the payload
   * between masked and clear; both are valid binary frames. */
  size_t frames = fill_frames(c.src, BUF_SIZE, c.key);
  c.len = frames * (2 + 4 + FRAME_LEN);
  wsuv_parser_t parser;
  wsuv_parser_config_t cfg = {.role = WSUV_ROLE_SERVER};
  wsuv_parser_init(&parser, &cfg);
  c.parser = &parser;
  t = measure(do_parse, &c);
  if (c.frames != frames) {
    fprintf(stderr, "parsed %zu frames, expected %zu\n", c.frames, frames);
    return 1;
  }
  row("parse 16-byte masked frames", t, c.len, base, frames);
  wsuv_parser_free(&parser);

  printf("\n(%zu frames of %u payload bytes per pass; sink %lu)\n", frames,
         FRAME_LEN, (unsigned long)(sink & 1u));
  return 0;
}

int main(int argc, char **argv) {
  quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
  ctx_t c = {.len = BUF_SIZE, .key = {0x37, 0xfa, 0x21, 0x3d}};
  c.src = malloc(BUF_SIZE);
  c.dst = malloc(BUF_SIZE);
  int status = bench(&c);
  free(c.src);
  free(c.dst);
  return status;
}
