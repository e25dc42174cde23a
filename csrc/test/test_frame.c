/* test_frame.c: frame headers and the message parser. Every input is fed
 * whole, one byte per call, cut at every point (two pieces, and three for
 * short inputs), and again in stream mode; all must give the same events. */
#include "wsuv.h"
#include "test.h"

#include <stdint.h>
#include <stdlib.h>

#define MAXEV 40

typedef struct {
  int type, close_code, compressed;
  uint8_t *data; /* copied */
  size_t len;
} rec_t;

typedef struct {
  rec_t ev[MAXEV];
  int n;
  int err, close_code; /* err 0: no error */
  int open;            /* stream mode: a message's chunks are being joined */
  int bad;             /* broken API invariants seen while feeding */
} log_t;

static void log_free(log_t *l) {
  for (int i = 0; i < l->n; i++)
    free(l->ev[i].data);
  memset(l, 0, sizeof *l);
}

static void expect(log_t *l, int type, const void *data, size_t len) {
  rec_t *r = &l->ev[l->n++];
  *r = (rec_t){.type = type, .len = len, .data = malloc(len ? len : 1)};
  if (len) memcpy(r->data, data, len);
}

static void expect_close(log_t *l, int code, const char *reason) {
  expect(l, WSUV_EV_CLOSE, reason, strlen(reason));
  l->ev[l->n - 1].close_code = code;
}

static int is_data(int type) {
  return type == WSUV_EV_TEXT || type == WSUV_EV_BINARY;
}

/* Records ev, joining stream chunks into one message that is logged at its
 * last chunk, and checks the flags and that streamed data point into the
 * fed chunk. */
static void record(log_t *l, const wsuv_event_t *ev, int stream,
                   const uint8_t *chunk, size_t chunk_len) {
  if (l->n == MAXEV) {
    l->bad++;
    return;
  }
  rec_t *r = &l->ev[l->n];
  if (is_data((int)ev->type)) {
    if (!stream && !(ev->first && ev->fin)) l->bad++;
    if (stream && ev->len &&
        (ev->data < chunk || ev->data + ev->len > chunk + chunk_len))
      l->bad++;
    if (!l->open) {
      if (!ev->first) l->bad++;
      *r = (rec_t){.type = (int)ev->type, .data = malloc(1)};
    } else if (ev->first || (int)ev->type != r->type) {
      l->bad++;
    }
    r->data = realloc(r->data, r->len + ev->len + 1);
    if (ev->len) memcpy(r->data + r->len, ev->data, ev->len);
    r->len += ev->len;
    r->compressed = ev->compressed;
    l->open = !ev->fin;
    if (ev->fin) l->n++;
    return;
  }
  /* Control events go before a message still being streamed. */
  rec_t pending = *r;
  expect(l, (int)ev->type, ev->data, ev->len);
  l->ev[l->n - 1].close_code = ev->type == WSUV_EV_CLOSE ? ev->close_code : 0;
  if (l->open) {
    if (l->n == MAXEV) {
      l->bad++;
      l->n--;
      return;
    }
    l->ev[l->n] = pending;
  }
}

/* Feeds in[0..len) in chunks [pos[i], pos[i+1]), each in its own heap
 * block (so ASan sees any read past it or any pointer kept after it). */
static void feed_cuts(const wsuv_parser_config_t *cfg, const uint8_t *in,
                      size_t len, const size_t *pos, size_t npos, log_t *l) {
  wsuv_parser_t p;
  wsuv_event_t ev;
  memset(l, 0, sizeof *l);
  wsuv_parser_init(&p, cfg);
  if (pos[npos - 1] != len) l->bad++;
  for (size_t i = 0; i + 1 < npos && !l->err; i++) {
    size_t k = pos[i + 1] - pos[i], off = 0;
    uint8_t *b = malloc(k ? k : 1);
    if (k) memcpy(b, in + pos[i], k);
    do {
      ssize_t r = wsuv_parser_feed(&p, b + off, k - off, &ev);
      if (r < 0) {
        l->err = (int)r;
        l->close_code = ev.close_code;
        if (ev.close_code != wsuv_err_close_code((int)r)) l->bad++;
        break;
      }
      if ((size_t)r > k - off) l->bad++;
      off += (size_t)r;
      if (ev.type == WSUV_EV_NONE) {
        if (off != k) l->bad++; /* NONE only once everything is consumed */
        break;
      }
      record(l, &ev, cfg->stream, b, k);
    } while (off < k);
    free(b);
  }
  if (l->err) {
    /* The failure is sticky. */
    uint8_t more[2] = {0x81, 0x00};
    if (wsuv_parser_feed(&p, more, 2, &ev) != l->err ||
        ev.close_code != l->close_code)
      l->bad++;
  } else if (l->open) {
    l->bad++;
  }
  if (l->open) { /* drop a partly streamed message */
    free(l->ev[l->n].data);
    l->open = 0;
  }
  wsuv_parser_free(&p);
}

static int log_eq(const log_t *a, const log_t *want) {
  if (a->bad || a->n != want->n || a->err != want->err ||
      a->close_code != (want->err ? wsuv_err_close_code(want->err) : 0))
    return 0;
  for (int i = 0; i < a->n; i++) {
    const rec_t *x = &a->ev[i], *y = &want->ev[i];
    if (x->type != y->type || x->len != y->len ||
        x->close_code != y->close_code || x->compressed != y->compressed ||
        (x->len && memcmp(x->data, y->data, x->len) != 0))
      return 0;
  }
  return 1;
}

static void log_print(const char *what, const log_t *l) {
  fprintf(stderr, "  %s: err %d close %d bad %d events %d:", what, l->err,
          l->close_code, l->bad, l->n);
  for (int i = 0; i < l->n; i++)
    fprintf(stderr, " [type %d len %zu code %d]", l->ev[i].type, l->ev[i].len,
            l->ev[i].close_code);
  fprintf(stderr, "\n");
}

/* One feeding pattern; reports the first mismatch of each test. */
static int try_cuts(const char *name, const char *how,
                    const wsuv_parser_config_t *cfg, const uint8_t *in,
                    size_t len, const size_t *pos, size_t npos,
                    const log_t *want, int *reported) {
  log_t got;
  feed_cuts(cfg, in, len, pos, npos, &got);
  int ok = log_eq(&got, want);
  if (!ok && !*reported) {
    *reported = 1;
    fprintf(stderr, "%s: %s (stream %d) differs\n", name, how, cfg->stream);
    log_print("got", &got);
    log_print("want", want);
  }
  log_free(&got);
  return ok;
}

static int check_modes(const char *name, const wsuv_parser_config_t *cfg,
                       const uint8_t *in, size_t len, const log_t *want) {
  int reported = 0, fails = 0;
  size_t pos[4] = {0, len};
  if (!try_cuts(name, "whole", cfg, in, len, pos, 2, want, &reported)) fails++;
  size_t *one = malloc((len + 1) * sizeof *one);
  for (size_t i = 0; i <= len; i++)
    one[i] = i;
  if (!try_cuts(name, "1 byte per call", cfg, in, len, one, len + 1, want,
                &reported))
    fails++;
  free(one);
  /* Two pieces at every cut (sampled away from the ends of big inputs). */
  for (size_t c = 0; c <= len; c++) {
    if (len > 4096 && c > 64 && c + 64 < len && c % 1021) continue;
    size_t p2[3] = {0, c, len};
    if (!try_cuts(name, "2 pieces", cfg, in, len, p2, 3, want, &reported)) {
      if (!fails) fprintf(stderr, "  cut at %zu\n", c);
      fails++;
    }
  }
  /* Three pieces, for short inputs. */
  for (size_t c = 0; len <= 40 && c <= len; c++)
    for (size_t d = c; d <= len; d++) {
      size_t p3[4] = {0, c, d, len};
      if (!try_cuts(name, "3 pieces", cfg, in, len, p3, 4, want, &reported))
        fails++;
    }
  return fails;
}

/* Checks all feeding patterns, in message mode and in stream mode. */
static void check_feed(const char *name, const wsuv_parser_config_t *cfg,
                       const uint8_t *in, size_t len, const log_t *want) {
  wsuv_parser_config_t c = *cfg;
  c.stream = 0;
  CHECK_EQ_INT(check_modes(name, &c, in, len, want), 0);
  c.stream = 1;
  CHECK_EQ_INT(check_modes(name, &c, in, len, want), 0);
}

static const wsuv_parser_config_t client = {.role = WSUV_ROLE_CLIENT};
static const wsuv_parser_config_t server = {.role = WSUV_ROLE_SERVER};

#define S(lit) (const uint8_t *)(lit), sizeof(lit) - 1

/* Appends a frame: header, then payload masked with mask when not NULL. */
static size_t put_frame(uint8_t *out, unsigned flags, unsigned op,
                        const void *payload, size_t n, const uint8_t *mask) {
  size_t h = wsuv_frame_build_header(out, flags, op, n, mask);
  if (n) memcpy(out + h, payload, n);
  if (mask) wsuv_mask_scalar(out + h, n, mask, 0);
  return h + n;
}

static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};

static void test_rfc_examples(void) {
  log_t want = {0};
  expect(&want, WSUV_EV_TEXT, "Hello", 5);
  /* RFC 6455 5.7: a single-frame unmasked text message. */
  check_feed("unmasked Hello", &client, S("\x81\x05\x48\x65\x6c\x6c\x6f"),
             &want);
  /* A single-frame masked text message. */
  check_feed("masked Hello", &server,
             S("\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"), &want);
  /* A fragmented unmasked text message. */
  check_feed("fragmented Hel+lo", &client,
             S("\x01\x03\x48\x65\x6c\x80\x02\x6c\x6f"), &want);
  log_free(&want);

  expect(&want, WSUV_EV_PING, "Hello", 5);
  check_feed("unmasked ping", &client, S("\x89\x05\x48\x65\x6c\x6c\x6f"),
             &want);
  log_free(&want);
  expect(&want, WSUV_EV_PONG, "Hello", 5);
  check_feed("masked pong", &server,
             S("\x8a\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"), &want);
  log_free(&want);

  /* 256 bytes and 64 KiB of binary data in a single unmasked frame, and
   * the same masked. */
  static uint8_t in[65536 + 14], payload[65536];
  for (size_t i = 0; i < sizeof payload; i++)
    payload[i] = (uint8_t)(i * 31 + 7);
  memcpy(in, "\x82\x7E\x01\x00", 4);
  memcpy(in + 4, payload, 256);
  expect(&want, WSUV_EV_BINARY, payload, 256);
  check_feed("256 bytes", &client, in, 4 + 256, &want);
  size_t n = put_frame(in, WSUV_FIN, WSUV_OP_BINARY, payload, 256, key);
  check_feed("256 bytes masked", &server, in, n, &want);
  log_free(&want);
  memcpy(in, "\x82\x7F\x00\x00\x00\x00\x00\x01\x00\x00", 10);
  memcpy(in + 10, payload, 65536);
  expect(&want, WSUV_EV_BINARY, payload, 65536);
  check_feed("64 KiB", &client, in, 10 + 65536, &want);
  n = put_frame(in, WSUV_FIN, WSUV_OP_BINARY, payload, 65536, key);
  CHECK_EQ_INT(n, 14 + 65536);
  check_feed("64 KiB masked", &server, in, n, &want);
  log_free(&want);
}

/* Frame sequences: control frames between fragments, empty frames, many
 * messages in one buffer, non-minimal lengths, close frames. */
static void test_sequences(void) {
  log_t want = {0};
  uint8_t in[512];
  size_t n = 0;
  n += put_frame(in + n, 0, WSUV_OP_TEXT, "Hel", 3, key);
  n += put_frame(in + n, WSUV_FIN, WSUV_OP_PING, "x", 1, key);
  n += put_frame(in + n, 0, WSUV_OP_CONT, "", 0, key);
  n += put_frame(in + n, WSUV_FIN, WSUV_OP_PONG, "", 0, key);
  n += put_frame(in + n, WSUV_FIN, WSUV_OP_CONT, "lo", 2, key);
  n += put_frame(in + n, WSUV_FIN, WSUV_OP_BINARY, "\x00\xff", 2, key);
  n += put_frame(in + n, WSUV_FIN, WSUV_OP_CLOSE,
                 "\x03\xe8"
                 "bye",
                 5, key);
  expect(&want, WSUV_EV_PING, "x", 1);
  expect(&want, WSUV_EV_PONG, "", 0);
  expect(&want, WSUV_EV_TEXT, "Hello", 5);
  expect(&want, WSUV_EV_BINARY, "\x00\xff", 2);
  expect_close(&want, 1000, "bye");
  check_feed("control between fragments", &server, in, n, &want);
  log_free(&want);

  /* Empty messages, pings and continuations. */
  expect(&want, WSUV_EV_TEXT, "", 0);
  expect(&want, WSUV_EV_BINARY, "", 0);
  expect(&want, WSUV_EV_PING, "", 0);
  expect(&want, WSUV_EV_PONG, "", 0);
  expect(&want, WSUV_EV_TEXT, "", 0);
  expect(&want, WSUV_EV_TEXT, "ab", 2);
  expect(&want, WSUV_EV_BINARY, "c", 1);
  expect_close(&want, 1005, "");
  check_feed("empty frames", &client,
             S("\x81\x00\x82\x00\x89\x00\x8a\x00"
               "\x01\x00\x80\x00"
               "\x01\x01"
               "a\x00\x00\x80\x01"
               "b"
               "\x02\x00\x00\x00\x80\x01"
               "c\x88\x00"),
             &want);
  log_free(&want);

  /* RFC 6455 5.2: non-minimal lengths are not an error for a receiver. */
  expect(&want, WSUV_EV_TEXT, "Hello", 5);
  expect(&want, WSUV_EV_TEXT, "Hello", 5);
  expect(&want, WSUV_EV_PING, "Hello", 5);
  check_feed("non-minimal lengths", &client,
             S("\x81\x7e\x00\x05Hello"
               "\x81\x7f\x00\x00\x00\x00\x00\x00\x00\x05Hello"
               "\x89\x7e\x00\x05Hello"),
             &want);
  log_free(&want);

  /* A 4-byte character split between fragments; a 125-byte ping. */
  uint8_t ping[125];
  memset(ping, 'p', sizeof ping);
  n = put_frame(in, 0, WSUV_OP_TEXT, "a\xf0\x9f", 3, key);
  n += put_frame(in + n, WSUV_FIN, WSUV_OP_PING, ping, 125, key);
  n += put_frame(in + n, WSUV_FIN, WSUV_OP_CONT, "\x98\x80", 2, key);
  expect(&want, WSUV_EV_PING, ping, 125);
  expect(&want, WSUV_EV_TEXT, "a\xf0\x9f\x98\x80", 5);
  check_feed("utf-8 split across fragments", &server, in, n, &want);
  log_free(&want);

  /* Close frames: with a code and a multi-byte reason, and a bare code. */
  expect_close(&want, 4000, "\xce\xba");
  expect_close(&want, 1001, "");
  check_feed("close", &client, S("\x88\x04\x0f\xa0\xce\xba\x88\x02\x03\xe9"),
             &want);
  log_free(&want);

  /* Compressed messages (RSV1 negotiated) are not UTF-8 checked. */
  wsuv_parser_config_t deflate = {.role = WSUV_ROLE_CLIENT,
                                  .rsv_allowed = WSUV_RSV1};
  expect(&want, WSUV_EV_TEXT, "\xc0\xaf", 2);
  want.ev[0].compressed = 1;
  expect(&want, WSUV_EV_TEXT, "\xff\xfe", 2);
  want.ev[1].compressed = 1;
  expect(&want, WSUV_EV_TEXT, "ok", 2);
  check_feed("compressed", &deflate,
             S("\xc1\x02\xc0\xaf\x41\x01\xff\x80\x01\xfe\x81\x02ok"), &want);
  log_free(&want);
}

typedef struct {
  const char *name;
  wsuv_parser_config_t cfg;
  const char *in;
  size_t len;
  int err;
  int events; /* messages before the failure, all "" TEXT */
} reject_t;

#define R(name, cfg, lit, err)                                                 \
  { name, cfg, lit, sizeof(lit) - 1, err, 0 }
#define CLIENT                                                                 \
  { .role = WSUV_ROLE_CLIENT }
#define SERVER                                                                 \
  { .role = WSUV_ROLE_SERVER }
#define DEFLATE                                                                \
  { .role = WSUV_ROLE_CLIENT, .rsv_allowed = WSUV_RSV1 }

static const reject_t rejects[] = {
    R("RSV1 not negotiated", CLIENT, "\xc1\x00", WSUV_EPROTO),
    R("RSV2", DEFLATE, "\xa1\x00", WSUV_EPROTO),
    R("RSV3", DEFLATE, "\x91\x00", WSUV_EPROTO),
    R("RSV1 on a continuation", DEFLATE, "\x41\x00\xc0\x00", WSUV_EPROTO),
    R("RSV1 on a control frame", DEFLATE, "\xc9\x00", WSUV_EPROTO),
    R("control payload 126", CLIENT, "\x89\x7e\x00\x7e", WSUV_EPROTO),
    R("close payload 126", CLIENT, "\x88\x7e\x00\x7e", WSUV_EPROTO),
    R("fragmented ping", CLIENT, "\x09\x00", WSUV_EPROTO),
    R("fragmented pong", CLIENT, "\x0a\x00", WSUV_EPROTO),
    R("fragmented close", CLIENT, "\x08\x02\x03\xe8", WSUV_EPROTO),
    R("continuation first", CLIENT, "\x80\x00", WSUV_EPROTO),
    R("non-final continuation first", CLIENT, "\x00\x00", WSUV_EPROTO),
    {"continuation after a message", CLIENT, "\x81\x00\x80\x00", 4, WSUV_EPROTO,
     1},
    R("text inside a message", CLIENT,
      "\x01\x01"
      "a\x81\x01"
      "b",
      WSUV_EPROTO),
    R("binary inside a message", CLIENT,
      "\x01\x01"
      "a\x02\x01"
      "b",
      WSUV_EPROTO),
    R("server gets unmasked", SERVER, "\x81\x00", WSUV_EPROTO),
    R("server gets unmasked ping", SERVER, "\x89\x00", WSUV_EPROTO),
    R("client gets masked", CLIENT, "\x81\x80\x00\x00\x00\x00", WSUV_EPROTO),
    R("64-bit length MSB", CLIENT, "\x82\x7f\x80\x00\x00\x00\x00\x00\x00\x00",
      WSUV_EPROTO),
    R("64-bit length all ones", CLIENT,
      "\x82\x7f\xff\xff\xff\xff\xff\xff\xff\xff", WSUV_EPROTO),
    R("63-bit length", CLIENT, "\x82\x7f\x7f\xff\xff\xff\xff\xff\xff\xff",
      WSUV_ETOOBIG),
    R("invalid text", CLIENT, "\x81\x02\xc0\xaf", WSUV_EUTF8),
    R("surrogate", CLIENT, "\x81\x03\xed\xa0\x80", WSUV_EUTF8),
    R("text ends mid-character", CLIENT, "\x81\x01\xe2", WSUV_EUTF8),
    R("fragments end mid-character", CLIENT, "\x01\x01\xe2\x80\x00",
      WSUV_EUTF8),
    R("bad utf-8 in second fragment", CLIENT,
      "\x01\x01"
      "a\x80\x01\xff",
      WSUV_EUTF8),
    R("close with 1 byte", CLIENT, "\x88\x01\x03", WSUV_EPROTO),
    R("close code 999", CLIENT, "\x88\x02\x03\xe7", WSUV_EPROTO),
    R("close code 1005", CLIENT, "\x88\x02\x03\xed", WSUV_EPROTO),
    R("close code 1006", CLIENT, "\x88\x02\x03\xee", WSUV_EPROTO),
    R("close code 5000", CLIENT, "\x88\x02\x13\x88", WSUV_EPROTO),
    R("close reason not utf-8", CLIENT, "\x88\x04\x03\xe8\xc0\xaf", WSUV_EUTF8),
    R("frame over max_frame", ((wsuv_parser_config_t){.max_frame = 10}),
      "\x82\x0b", WSUV_ETOOBIG),
    R("message over max_message", ((wsuv_parser_config_t){.max_message = 10}),
      "\x02\x05"
      "12345\x80\x06",
      WSUV_ETOOBIG),
    R("64-bit frame over the default limit", CLIENT,
      "\x82\x7f\x00\x00\x00\x00\x01\x00\x00\x01", WSUV_ETOOBIG),
};

static void test_rejects(void) {
  for (size_t i = 0; i < sizeof rejects / sizeof rejects[0]; i++) {
    const reject_t *t = &rejects[i];
    log_t want = {0};
    for (int e = 0; e < t->events; e++)
      expect(&want, WSUV_EV_TEXT, "", 0);
    want.err = t->err;
    want.close_code = wsuv_err_close_code(t->err);
    check_feed(t->name, &t->cfg, (const uint8_t *)t->in, t->len, &want);
    log_free(&want);
  }
  /* Every reserved opcode, data (3-7) and control (0xB-0xF). */
  for (unsigned op = 3; op < 16; op++) {
    if (op >= 8 && op <= 0xA) continue;
    log_t want = {.err = WSUV_EPROTO};
    uint8_t in[2] = {(uint8_t)(0x80 | op), 0};
    char name[32];
    snprintf(name, sizeof name, "opcode %u", op);
    check_feed(name, &client, in, 2, &want);
    in[0] = (uint8_t)op; /* and without FIN */
    check_feed(name, &client, in, 2, &want);
  }
  CHECK_EQ_INT(wsuv_err_close_code(WSUV_EPROTO), 1002);
  CHECK_EQ_INT(wsuv_err_close_code(WSUV_EUTF8), 1007);
  CHECK_EQ_INT(wsuv_err_close_code(WSUV_ETOOBIG), 1009);
}

/* Feeds one buffer; returns the result and checks the close code. */
static ssize_t feed1(wsuv_parser_t *p, const char *lit, size_t n,
                     wsuv_event_t *ev) {
  static uint8_t b[256];
  memcpy(b, lit, n);
  ssize_t r = wsuv_parser_feed(p, b, n, ev);
  if (r < 0) CHECK_EQ_INT(ev->close_code, wsuv_err_close_code((int)r));
  return r;
}

#define FEED(p, lit, ev) feed1(p, lit, sizeof(lit) - 1, ev)

/* Errors are detected as soon as the bytes that prove them arrive, before
 * the rest of the frame or message. */
static void test_fail_early(void) {
  wsuv_parser_t p;
  wsuv_event_t ev;
  /* An invalid prefix mid-frame, the frame's end not yet received. */
  wsuv_parser_init(&p, &client);
  CHECK_EQ_INT(FEED(&p,
                    "\x81\x05"
                    "a\xed\xa0",
                    &ev),
               WSUV_EUTF8);
  CHECK_EQ_INT(ev.close_code, 1007);
  wsuv_parser_free(&p);
  /* An invalid prefix in the first fragment, before the second. */
  wsuv_parser_init(&p, &client);
  CHECK_EQ_INT(FEED(&p, "\x01\x02\xf4\x90", &ev), WSUV_EUTF8);
  wsuv_parser_free(&p);
  /* The same, masked, byte by byte: fails at the 0x90. */
  wsuv_parser_init(&p, &server);
  uint8_t in[16];
  size_t n = put_frame(in, 0, WSUV_OP_TEXT, "\xf4\x90", 2, key);
  ssize_t r = 0;
  size_t i;
  for (i = 0; i < n && r >= 0; i++)
    r = wsuv_parser_feed(&p, in + i, 1, &ev);
  CHECK_EQ_INT(r, WSUV_EUTF8);
  CHECK_EQ_INT(i, n);
  wsuv_parser_free(&p);
  /* Too big: fails on the header, before any payload. */
  wsuv_parser_config_t c = {.max_message = 100};
  wsuv_parser_init(&p, &c);
  CHECK_EQ_INT(FEED(&p, "\x82\x65", &ev), WSUV_ETOOBIG);
  CHECK_EQ_INT(ev.close_code, 1009);
  wsuv_parser_free(&p);
  /* Stream mode too: an invalid byte fails at once. */
  c = (wsuv_parser_config_t){.stream = 1};
  wsuv_parser_init(&p, &c);
  CHECK_EQ_INT(FEED(&p,
                    "\x81\x04"
                    "ab",
                    &ev),
               2 + 2);
  CHECK_EQ_INT(ev.type, WSUV_EV_TEXT);
  CHECK_EQ_INT(FEED(&p, "\xc0", &ev), WSUV_EUTF8);
  CHECK_EQ_INT(FEED(&p, "\xaf", &ev), WSUV_EUTF8);
  wsuv_parser_free(&p);
}

/* max_frame and max_message: exactly at the limit passes, one over fails,
 * in both modes. */
static void test_limits(void) {
  static uint8_t in[4096], payload[1000];
  memset(payload, 'z', sizeof payload);
  for (int stream = 0; stream < 2; stream++) {
    wsuv_parser_config_t c = {
        .max_frame = 100, .max_message = 250, .stream = stream};
    log_t want = {0};
    /* 100 + 100 + 50 = 250: at both limits. */
    size_t n = put_frame(in, 0, WSUV_OP_BINARY, payload, 100, NULL);
    n += put_frame(in + n, 0, WSUV_OP_CONT, payload, 100, NULL);
    n += put_frame(in + n, WSUV_FIN, WSUV_OP_CONT, payload, 50, NULL);
    expect(&want, WSUV_EV_BINARY, payload, 250);
    CHECK_EQ_INT(check_modes("at the limits", &c, in, n, &want), 0);
    log_free(&want);
    /* 101 in one frame. */
    n = put_frame(in, WSUV_FIN, WSUV_OP_BINARY, payload, 101, NULL);
    want.err = WSUV_ETOOBIG;
    CHECK_EQ_INT(check_modes("frame one over", &c, in, n, &want), 0);
    /* 100 + 100 + 51 in the message. */
    n = put_frame(in, 0, WSUV_OP_TEXT, payload, 100, NULL);
    n += put_frame(in + n, 0, WSUV_OP_CONT, payload, 100, NULL);
    n += put_frame(in + n, WSUV_FIN, WSUV_OP_CONT, payload, 51, NULL);
    CHECK_EQ_INT(check_modes("message one over", &c, in, n, &want), 0);
    /* The count restarts with each message. */
    want.err = 0;
    n = 0;
    for (int m = 0; m < 3; m++) {
      n += put_frame(in + n, 0, WSUV_OP_BINARY, payload, 100, NULL);
      n += put_frame(in + n, WSUV_FIN, WSUV_OP_CONT, payload, 100, NULL);
      expect(&want, WSUV_EV_BINARY, payload, 200);
    }
    CHECK_EQ_INT(check_modes("limit per message", &c, in, n, &want), 0);
    log_free(&want);
    /* Control frames do not count towards a message. */
    c.max_message = 10;
    c.max_frame = 0;
    n = put_frame(in, 0, WSUV_OP_BINARY, payload, 5, NULL);
    n += put_frame(in + n, WSUV_FIN, WSUV_OP_PING, payload, 125, NULL);
    n += put_frame(in + n, WSUV_FIN, WSUV_OP_CONT, payload, 5, NULL);
    expect(&want, WSUV_EV_PING, payload, 125);
    expect(&want, WSUV_EV_BINARY, payload, 10);
    CHECK_EQ_INT(check_modes("control frames apart", &c, in, n, &want), 0);
    log_free(&want);
  }
}

/* Header encodings at the length boundaries, built, parsed and delivered. */
static void test_lengths(void) {
  static const struct {
    uint64_t len;
    size_t hlen;
  } t[] = {{0, 2},   {1, 2},     {125, 2},    {126, 4},
           {127, 4}, {65535, 4}, {65536, 10}, {70000, 10}};
  static uint8_t in[70000 + 14], payload[70000];
  for (size_t i = 0; i < sizeof payload; i++)
    payload[i] = (uint8_t)(i ^ (i >> 8));
  for (size_t k = 0; k < sizeof t / sizeof t[0]; k++) {
    uint8_t h[WSUV_MAX_FRAME_HEADER];
    wsuv_frame_header_t fh;
    for (int masked = 0; masked < 2; masked++) {
      size_t hl =
          wsuv_frame_build_header(h, WSUV_FIN | WSUV_RSV1, WSUV_OP_BINARY,
                                  t[k].len, masked ? key : NULL);
      CHECK_EQ_INT(hl, t[k].hlen + (masked ? 4 : 0));
      CHECK_EQ_INT(h[0], 0xc2);
      CHECK_EQ_INT(h[1] & 0x80, masked ? 0x80 : 0);
      CHECK_EQ_INT(h[1] & 0x7f, t[k].hlen == 2   ? t[k].len
                                : t[k].hlen == 4 ? 126
                                                 : 127);
      if (t[k].hlen == 4) CHECK_EQ_INT(h[2] << 8 | h[3], t[k].len);
      if (masked) CHECK_MEM(h + hl - 4, key, 4);
      /* Every shorter prefix asks for more bytes. */
      long short_ok = 0;
      for (size_t i = 0; i < hl; i++)
        short_ok += wsuv_frame_parse_header(h, i, &fh) == 0;
      CHECK_EQ_INT(short_ok, hl);
      memset(&fh, 0xaa, sizeof fh);
      CHECK_EQ_INT(wsuv_frame_parse_header(h, hl, &fh), hl);
      CHECK_EQ_INT(fh.fin, 1);
      CHECK_EQ_INT(fh.rsv, WSUV_RSV1);
      CHECK_EQ_INT(fh.opcode, WSUV_OP_BINARY);
      CHECK_EQ_INT(fh.masked, masked);
      CHECK(fh.payload_len == t[k].len);
      if (masked) CHECK_MEM(fh.mask, key, 4);
    }
    /* Through the parser, both roles. */
    size_t len = (size_t)t[k].len;
    log_t want = {0};
    expect(&want, WSUV_EV_BINARY, payload, len);
    char name[40];
    snprintf(name, sizeof name, "length %zu", len);
    size_t n = put_frame(in, WSUV_FIN, WSUV_OP_BINARY, payload, len, NULL);
    check_feed(name, &client, in, n, &want);
    n = put_frame(in, WSUV_FIN, WSUV_OP_BINARY, payload, len, key);
    check_feed(name, &server, in, n, &want);
    log_free(&want);
  }
  /* A 64-bit length: built in network order; the MSB is refused. */
  uint8_t h[WSUV_MAX_FRAME_HEADER];
  wsuv_frame_header_t fh;
  CHECK_EQ_INT(wsuv_frame_build_header(h, WSUV_FIN, WSUV_OP_BINARY,
                                       UINT64_C(0x0102030405060708), NULL),
               10);
  CHECK_MEM(h, "\x82\x7f\x01\x02\x03\x04\x05\x06\x07\x08", 10);
  CHECK_EQ_INT(wsuv_frame_parse_header(h, 10, &fh), 10);
  CHECK(fh.payload_len == UINT64_C(0x0102030405060708));
  h[2] = 0x80;
  CHECK_EQ_INT(wsuv_frame_parse_header(h, 9, &fh), 0);
  CHECK_EQ_INT(wsuv_frame_parse_header(h, 10, &fh), WSUV_EPROTO);
  /* Fields of a reserved opcode are reported, not judged. */
  CHECK_EQ_INT(wsuv_frame_parse_header((const uint8_t *)"\x7b\x00", 2, &fh), 2);
  CHECK_EQ_INT(fh.fin, 0);
  CHECK_EQ_INT(fh.rsv, 0x70);
  CHECK_EQ_INT(fh.opcode, 0xb);
}

/* Return values: one event per call, NONE only when all was consumed;
 * zero-copy delivery where the contract promises it. */
static void test_returns(void) {
  wsuv_parser_t p;
  wsuv_event_t ev;
  uint8_t b[64];
  wsuv_parser_init(&p, &client);
  CHECK_EQ_INT(wsuv_parser_feed(&p, b, 0, &ev), 0);
  CHECK_EQ_INT(ev.type, WSUV_EV_NONE);
  memcpy(b, "\x81\x05Hello\x89\x00\x82\x03xy", 13);
  CHECK_EQ_INT(wsuv_parser_feed(&p, b, 13, &ev), 7);
  CHECK_EQ_INT(ev.type, WSUV_EV_TEXT);
  CHECK(ev.data == b + 2); /* whole frame: zero-copy */
  CHECK_EQ_INT(ev.len, 5);
  CHECK(ev.first && ev.fin && !ev.compressed);
  CHECK_EQ_INT(wsuv_parser_feed(&p, b + 7, 6, &ev), 2);
  CHECK_EQ_INT(ev.type, WSUV_EV_PING);
  CHECK_EQ_INT(ev.len, 0);
  CHECK_EQ_INT(wsuv_parser_feed(&p, b + 9, 4, &ev), 4);
  CHECK_EQ_INT(ev.type, WSUV_EV_NONE);
  memcpy(b, "z", 1);
  CHECK_EQ_INT(wsuv_parser_feed(&p, b, 1, &ev), 1);
  CHECK_EQ_INT(ev.type, WSUV_EV_BINARY);
  CHECK(ev.data != b); /* gathered across calls: the parser's storage */
  CHECK_MEM(ev.data, "xyz", 3);
  wsuv_parser_free(&p);

  /* Masked frames are unmasked in place. */
  wsuv_parser_init(&p, &server);
  size_t n = put_frame(b, WSUV_FIN, WSUV_OP_BINARY, "abcdefghij", 10, key);
  n += put_frame(b + n, WSUV_FIN, WSUV_OP_PING, "ping", 4, key);
  CHECK_EQ_INT(wsuv_parser_feed(&p, b, n, &ev), 16);
  CHECK(ev.data == b + 6);
  CHECK_MEM(b + 6, "abcdefghij", 10);
  CHECK_EQ_INT(wsuv_parser_feed(&p, b + 16, n - 16, &ev), n - 16);
  CHECK_EQ_INT(ev.type, WSUV_EV_PING);
  CHECK(ev.data == b + 22);
  CHECK_MEM(ev.data, "ping", 4);
  wsuv_parser_free(&p);

  /* Stream mode: chunks as they arrive, in place, with first/fin. */
  wsuv_parser_config_t c = {.stream = 1};
  wsuv_parser_init(&p, &c);
  memcpy(b,
         "\x01\x03Hel\x80\x00\x82\x06"
         "abcdef",
         15);
  CHECK_EQ_INT(wsuv_parser_feed(&p, b, 15, &ev), 5);
  CHECK(ev.type == WSUV_EV_TEXT && ev.data == b + 2 && ev.len == 3);
  CHECK(ev.first && !ev.fin);
  CHECK_EQ_INT(wsuv_parser_feed(&p, b + 5, 2, &ev), 2);
  CHECK(ev.type == WSUV_EV_TEXT && ev.len == 0 && !ev.first && ev.fin);
  CHECK_EQ_INT(wsuv_parser_feed(&p, b + 7, 4, &ev), 4);
  CHECK(ev.type == WSUV_EV_BINARY && ev.data == b + 9 && ev.len == 2);
  CHECK(ev.first && !ev.fin);
  CHECK_EQ_INT(wsuv_parser_feed(&p, b + 11, 4, &ev), 4);
  CHECK(ev.type == WSUV_EV_BINARY && ev.data == b + 11 && ev.len == 4);
  CHECK(!ev.first && ev.fin);
  memcpy(b, "\x01\x00\x00\x00\x80\x01x\x81\x00", 9);
  CHECK_EQ_INT(wsuv_parser_feed(&p, b, 9, &ev), 7);
  CHECK(ev.type == WSUV_EV_TEXT && ev.len == 1 && ev.first && ev.fin);
  CHECK_EQ_INT(wsuv_parser_feed(&p, b + 7, 2, &ev), 2);
  CHECK(ev.type == WSUV_EV_TEXT && ev.len == 0 && ev.first && ev.fin);
  wsuv_parser_free(&p);
}

typedef struct {
  long allocs, reallocs, frees;
  size_t max_size;
  int fail;
} counter_t;

static void *count_alloc(void *ud, void *ptr, size_t nsize) {
  counter_t *c = ud;
  if (nsize == 0) {
    if (ptr) c->frees++;
    free(ptr);
    return NULL;
  }
  if (c->fail) return NULL;
  if (nsize > c->max_size) c->max_size = nsize;
  if (ptr)
    c->reallocs++;
  else
    c->allocs++;
  return realloc(ptr, nsize);
}

/* Feeds a fragmented binary message of total bytes in frames of frag bytes;
 * returns the result of the call that completes it. */
static ssize_t feed_fragmented(wsuv_parser_t *p, size_t total, size_t frag,
                               wsuv_event_t *ev) {
  static uint8_t b[70000];
  memset(b + 14, 'q', sizeof b - 14);
  ssize_t r = 0;
  for (size_t done = 0; done < total && r >= 0;) {
    size_t k = total - done < frag ? total - done : frag;
    size_t h =
        wsuv_frame_build_header(b, done + k == total ? WSUV_FIN : 0,
                                done ? WSUV_OP_CONT : WSUV_OP_BINARY, k, NULL);
    memmove(b + h, b + 14, k);
    r = wsuv_parser_feed(p, b, h + k, ev);
    done += k;
  }
  return r;
}

static void test_memory(void) {
  counter_t cnt = {0};
  wsuv_parser_config_t c = {.alloc = {.fn = count_alloc, .ud = &cnt}};
  wsuv_parser_t p;
  wsuv_event_t ev;
  /* A big message's storage is kept for the next message, and freed by
   * wsuv_parser_trim (not in the middle of a message). */
  wsuv_parser_init(&p, &c);
  CHECK_EQ_INT(feed_fragmented(&p, 100000, 50000, &ev), 50000 + 4);
  CHECK(ev.type == WSUV_EV_BINARY && ev.len == 100000);
  CHECK_EQ_INT(cnt.frees, 0);
  CHECK(ev.data[0] == 'q' && ev.data[99999] == 'q');
  CHECK_EQ_INT(wsuv_parser_feed(&p, NULL, 0, &ev), 0);
  CHECK_EQ_INT(cnt.frees, 0);
  long before = cnt.allocs + cnt.reallocs;
  CHECK_EQ_INT(feed_fragmented(&p, 100000, 50000, &ev), 50000 + 4);
  CHECK(ev.type == WSUV_EV_BINARY && ev.len == 100000);
  CHECK_EQ_INT(cnt.allocs + cnt.reallocs, before); /* reused, not grown */
  {
    /* Half a message: trim keeps its storage. */
    uint8_t b[64];
    size_t h = wsuv_frame_build_header(b, 0, WSUV_OP_BINARY, 10, NULL);
    memset(b + h, 'z', 10);
    CHECK_EQ_INT(wsuv_parser_feed(&p, b, h + 10, &ev), (long)(h + 10));
    wsuv_parser_trim(&p);
    CHECK_EQ_INT(cnt.frees, 0);
    h = wsuv_frame_build_header(b, WSUV_FIN, WSUV_OP_CONT, 1, NULL);
    b[h] = 'y';
    CHECK_EQ_INT(wsuv_parser_feed(&p, b, h + 1, &ev), (long)(h + 1));
    CHECK(ev.type == WSUV_EV_BINARY && ev.len == 11 && ev.data[10] == 'y');
  }
  wsuv_parser_trim(&p);
  CHECK_EQ_INT(cnt.frees, 1);
  wsuv_parser_free(&p);
  CHECK_EQ_INT(cnt.frees, 1);
  /* A small one's storage is kept and reused. */
  cnt = (counter_t){0};
  wsuv_parser_init(&p, &c);
  CHECK_EQ_INT(feed_fragmented(&p, 3000, 1000, &ev), 1004);
  long calls = cnt.allocs + cnt.reallocs;
  CHECK(calls >= 1);
  CHECK_EQ_INT(feed_fragmented(&p, 3000, 1000, &ev), 1004);
  CHECK_EQ_INT(ev.len, 3000);
  CHECK_EQ_INT(cnt.allocs + cnt.reallocs, calls);
  CHECK_EQ_INT(cnt.frees, 0);
  wsuv_parser_free(&p);
  CHECK_EQ_INT(cnt.frees, 1);
  wsuv_parser_free(&p); /* twice is harmless */
  CHECK_EQ_INT(cnt.frees, 1);
  /* Geometric growth, never past max_message. */
  cnt = (counter_t){0};
  c.max_message = 200000;
  wsuv_parser_init(&p, &c);
  CHECK_EQ_INT(feed_fragmented(&p, 200000, 10, &ev), 12);
  CHECK_EQ_INT(ev.len, 200000);
  CHECK(cnt.allocs + cnt.reallocs <= 12);
  CHECK(cnt.max_size <= 200000);
  wsuv_parser_free(&p);
  /* Allocation failure: ENOMEM, 1011, and the parser stays failed. */
  cnt = (counter_t){.fail = 1};
  wsuv_parser_init(&p, &c);
  CHECK_EQ_INT(feed_fragmented(&p, 20, 10, &ev), WSUV_ENOMEM);
  CHECK_EQ_INT(ev.close_code, 1011);
  CHECK_EQ_INT(FEED(&p, "\x81\x00", &ev), WSUV_ENOMEM);
  wsuv_parser_free(&p);
  /* Unfragmented whole frames and stream mode allocate nothing. */
  cnt = (counter_t){0};
  wsuv_parser_init(&p, &c);
  CHECK_EQ_INT(FEED(&p,
                    "\x82\x03"
                    "abc",
                    &ev),
               5);
  c.stream = 1;
  wsuv_parser_free(&p);
  wsuv_parser_init(&p, &c);
  CHECK_EQ_INT(feed_fragmented(&p, 3000, 1000, &ev), 1004);
  CHECK(ev.fin && ev.len == 1000);
  CHECK_EQ_INT(cnt.allocs + cnt.reallocs, 0);
  wsuv_parser_free(&p);
  /* A whole ping allocates nothing; one split across two inputs is
   * gathered in a buffer made then and given back by trim. */
  cnt = (counter_t){0};
  c.stream = 0;
  wsuv_parser_init(&p, &c);
  CHECK_EQ_INT(FEED(&p, "\x89\x02hi", &ev), 4);
  CHECK(ev.type == WSUV_EV_PING && ev.len == 2);
  CHECK_EQ_INT(cnt.allocs + cnt.reallocs, 0);
  CHECK_EQ_INT(FEED(&p, "\x89\x05he", &ev), 4);
  CHECK(ev.type == WSUV_EV_NONE);
  CHECK_EQ_INT(cnt.allocs, 1);
  wsuv_parser_trim(&p); /* in the middle of it: kept */
  CHECK_EQ_INT(cnt.frees, 0);
  CHECK_EQ_INT(FEED(&p, "llo", &ev), 3);
  CHECK(ev.type == WSUV_EV_PING && ev.len == 5);
  CHECK_MEM(ev.data, "hello", 5);
  wsuv_parser_trim(&p);
  CHECK_EQ_INT(cnt.frees, 1);
  wsuv_parser_free(&p);
  CHECK_EQ_INT(cnt.frees, 1);
  /* Without memory for it: ENOMEM. */
  cnt = (counter_t){.fail = 1};
  wsuv_parser_init(&p, &c);
  CHECK_EQ_INT(FEED(&p, "\x89\x05he", &ev), WSUV_ENOMEM);
  wsuv_parser_free(&p);
}

int main(void) {
  test_rfc_examples();
  test_sequences();
  test_rejects();
  test_fail_early();
  test_limits();
  test_lengths();
  test_returns();
  test_memory();
  return TEST_REPORT();
}
