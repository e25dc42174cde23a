/* fuzz_frame.c: the message parser (wsuv_parser_feed), RFC 6455 5.
 *
 * Input: [chunk size][config][bytes from the peer...]. The config byte picks
 * the role (masked input for a server, unmasked for a client), whole
 * messages or streamed chunks, whether RSV1 is allowed, a small max_message
 * so the limits are hit, and an allocator that refuses to grow.
 *
 * Checks: consumed <= len and progress is made; every event is well formed
 * (types, first/fin, sizes within limits, close codes valid, text is UTF-8,
 * data pointers inside the input or the parser's storage); after an error
 * the parser stays failed with the same code and the matching close code;
 * storage never exceeds a message's wire limit (max_message, or for a
 * compressed message an eighth more and 64 bytes) and is all freed; and
 * feeding the input
 * in chunks gives the same messages and the same outcome as feeding it all
 * at once. */
#include "chunk.h"
#include "test/sized_alloc.h"
#include "wsuv.h"

#include <string.h>

/* Allocator that tracks live bytes, so growth can be bounded and leaks
 * found even without LeakSanitizer. */
typedef struct {
  size_t live;  /* bytes currently allocated */
  size_t limit; /* largest single allocation allowed */
  int refuse;   /* nonzero: every allocation after the first fails */
  int count;    /* allocations so far */
} track_t;

static void *track_alloc(void *ud, void *ptr, size_t nsize) {
  track_t *t = ud;
  size_t old = sized_size(ptr);
  if (nsize == 0) {
    t->live -= old;
    sized_free(ptr);
    return NULL;
  }
  FUZZ_CHECK(nsize <= t->limit);
  if (t->refuse && t->count > 0) return NULL;
  t->count++;
  void *p = sized_realloc(ptr, nsize);
  if (!p) return NULL;
  t->live = t->live - old + nsize;
  return p;
}

/* What a run observed, serialised so two runs can be compared. */
typedef struct {
  uint8_t *log;
  size_t len, cap;
  int err; /* final feed result when negative, else 0 */
} trace_t;

static void trace_put(trace_t *t, const void *p, size_t n) {
  if (t->len + n > t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 256;
    while (cap < t->len + n)
      cap *= 2;
    t->log = realloc(t->log, cap);
    FUZZ_CHECK(t->log != NULL);
    t->cap = cap;
  }
  if (n) memcpy(t->log + t->len, p, n);
  t->len += n;
}

/* The most bytes a message may have as delivered: max_message, and for a
 * compressed one (RSV1) what deflate may add to max_message bytes, an eighth
 * and 64 bytes (wsuv.h); the caller limits its inflated size. */
static uint64_t wire_max(const wsuv_parser_config_t *cfg, int compressed) {
  return cfg->max_message + (compressed ? cfg->max_message / 8 + 64 : 0);
}

/* A streamed message being put together from its chunks. */
typedef struct {
  int open;       /* a message has started */
  int type;       /* its event type */
  int compressed; /* its first chunk had RSV1 */
  uint8_t *buf;   /* its data so far */
  size_t len;
  wsuv_utf8_t utf8; /* text chunks so far are a valid prefix */
} msg_t;

static void msg_add(msg_t *m, const uint8_t *p, size_t n) {
  if (!n) return;
  m->buf = realloc(m->buf, m->len + n);
  FUZZ_CHECK(m->buf != NULL);
  memcpy(m->buf + m->len, p, n);
  m->len += n;
}

static int in_range(const uint8_t *d, size_t n, const void *base, size_t cap) {
  const uint8_t *b = base;
  return b && d >= b && n <= cap && (size_t)(d - b) <= cap - n;
}

static void record(trace_t *t, int type, int close_code, const uint8_t *d,
                   size_t n) {
  uint8_t head[1 + sizeof(int) + sizeof(size_t)];
  head[0] = (uint8_t)type;
  memcpy(head + 1, &close_code, sizeof close_code);
  memcpy(head + 1 + sizeof(int), &n, sizeof n);
  trace_put(t, head, sizeof head);
  trace_put(t, d, n);
}

/* Checks one event and adds completed messages and control frames to t. */
static void check_event(const wsuv_parser_t *p, const wsuv_event_t *ev,
                        const uint8_t *in, size_t in_len, msg_t *m,
                        trace_t *t) {
  const wsuv_parser_config_t *cfg = &p->cfg;
  if (ev->len) {
    FUZZ_CHECK(ev->data != NULL);
    /* Data lives in the fed buffer or in the parser's own storage. */
    FUZZ_CHECK(in_range(ev->data, ev->len, in, in_len) ||
               in_range(ev->data, ev->len, p->buf, p->buf_cap) ||
               in_range(ev->data, ev->len, p->ctrl, WSUV_MAX_CONTROL_PAYLOAD));
  }
  switch (ev->type) {
  case WSUV_EV_PING:
  case WSUV_EV_PONG:
    FUZZ_CHECK(ev->len <= WSUV_MAX_CONTROL_PAYLOAD);
    FUZZ_CHECK(ev->first && ev->fin);
    record(t, ev->type, 0, ev->data, ev->len);
    return;
  case WSUV_EV_CLOSE:
    /* RFC 6455 7.1.5/7.4: a code valid on the wire, or 1005 for none; the
     * reason is what is left of at most 125 bytes, and it is UTF-8. */
    FUZZ_CHECK(ev->close_code == 1005 ? ev->len == 0
                                      : wsuv_close_code_valid(ev->close_code));
    FUZZ_CHECK(ev->len <= WSUV_MAX_CONTROL_PAYLOAD - 2);
    FUZZ_CHECK(wsuv_utf8_valid(ev->data ? ev->data : in, ev->len));
    record(t, ev->type, ev->close_code, ev->data, ev->len);
    return;
  case WSUV_EV_TEXT:
  case WSUV_EV_BINARY:
    break;
  default:
    FUZZ_CHECK(!"unknown event type");
  }
  /* RFC 7692: only a negotiated RSV1 marks a message compressed. */
  FUZZ_CHECK(!ev->compressed || (cfg->rsv_allowed & WSUV_RSV1));
  if (!cfg->stream) {
    FUZZ_CHECK(ev->first && ev->fin);
    FUZZ_CHECK(ev->len <= wire_max(cfg, ev->compressed));
    if (ev->type == WSUV_EV_TEXT && !ev->compressed)
      FUZZ_CHECK(wsuv_utf8_valid(ev->data ? ev->data : in, ev->len));
    record(t, ev->type, 0, ev->data, ev->len);
    return;
  }
  /* Streamed: chunks of one message share a type, only the first has
   * first set, and together they stay within its wire limit. */
  FUZZ_CHECK(ev->first == !m->open);
  if (!m->open) {
    m->open = 1;
    m->type = ev->type;
    m->compressed = ev->compressed;
    m->len = 0;
    wsuv_utf8_init(&m->utf8);
  }
  FUZZ_CHECK((int)ev->type == m->type);
  msg_add(m, ev->data, ev->len);
  FUZZ_CHECK(m->len <= wire_max(cfg, m->compressed));
  int text = ev->type == WSUV_EV_TEXT && !ev->compressed;
  if (text && ev->len)
    FUZZ_CHECK(wsuv_utf8_feed_scalar(&m->utf8, ev->data, ev->len) == 0);
  if (ev->fin) {
    if (text) FUZZ_CHECK(wsuv_utf8_complete(&m->utf8));
    record(t, ev->type, 0, m->buf, m->len);
    m->open = 0;
  }
}

/* Feeds data (a copy, since the parser unmasks in place) in chunks of
 * chunk bytes (0: all at once) and records what happened in t. */
static void run(const wsuv_parser_config_t *base, int refuse, size_t chunk,
                const uint8_t *data, size_t size, trace_t *t) {
  /* The reassembly buffer stays within a message's wire limit; the buffer
   * for a split control payload is WSUV_MAX_CONTROL_PAYLOAD whatever the
   * limit. */
  size_t wire = (size_t)wire_max(base, (base->rsv_allowed & WSUV_RSV1) != 0);
  size_t limit = wire;
  if (limit < WSUV_MAX_CONTROL_PAYLOAD) limit = WSUV_MAX_CONTROL_PAYLOAD;
  track_t tr = {.limit = limit, .refuse = refuse};
  wsuv_parser_config_t cfg = *base;
  cfg.alloc.fn = track_alloc;
  cfg.alloc.ud = &tr;
  wsuv_parser_t p;
  wsuv_parser_init(&p, &cfg);
  msg_t m = {0};
  size_t off = 0;
  while (off < size && !t->err) {
    size_t n = chunk && chunk < size - off ? chunk : size - off;
    uint8_t *buf = malloc(n); /* exact size: ASan sees any overread */
    FUZZ_CHECK(buf != NULL);
    memcpy(buf, data + off, n);
    size_t pos = 0;
    int idle = 0;
    while (pos < n) {
      wsuv_event_t ev;
      ssize_t r = wsuv_parser_feed(&p, buf + pos, n - pos, &ev);
      if (r < 0) {
        FUZZ_CHECK(strcmp(wsuv_err_name((int)r), "UNKNOWN") != 0);
        FUZZ_CHECK(ev.close_code == wsuv_err_close_code((int)r));
        FUZZ_CHECK(ev.type == WSUV_EV_NONE);
        t->err = (int)r;
        /* The parser stays failed, with the same error. */
        wsuv_event_t ev2;
        uint8_t more[2] = {0x81, 0x00};
        FUZZ_CHECK(wsuv_parser_feed(&p, more, sizeof more, &ev2) == r);
        FUZZ_CHECK(ev2.type == WSUV_EV_NONE);
        break;
      }
      FUZZ_CHECK((size_t)r <= n - pos);
      if (ev.type == WSUV_EV_NONE) {
        /* No event: all input was taken and more is needed. */
        FUZZ_CHECK((size_t)r == n - pos);
      } else {
        check_event(&p, &ev, buf + pos, n - pos, &m, t);
      }
      /* An event may consume nothing (a zero-length frame whose header was
       * buffered earlier), but not forever. */
      idle = r == 0 ? idle + 1 : 0;
      FUZZ_CHECK(idle < 4);
      pos += (size_t)r;
      /* At most the reassembly buffer and the control payload buffer. */
      FUZZ_CHECK(tr.live <= wire + WSUV_MAX_CONTROL_PAYLOAD);
    }
    free(buf);
    off += n;
  }
  wsuv_parser_free(&p);
  FUZZ_CHECK(tr.live == 0);
  free(m.buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const uint64_t max_messages[4] = {1, 125, 300, 70000};
  fuzz_chunker_t c;
  fuzz_chunker_init(&c, data, size);
  uint8_t conf = fuzz_take_byte(&c.p, &c.n);
  wsuv_parser_config_t cfg = {
      .role = conf & 1 ? WSUV_ROLE_SERVER : WSUV_ROLE_CLIENT,
      .stream = (conf >> 1) & 1,
      .rsv_allowed = conf & 4 ? WSUV_RSV1 : 0,
      .max_message = max_messages[(conf >> 3) & 3],
  };
  if (conf & 0x20) cfg.max_frame = cfg.max_message / 2 + 1;
  int refuse = (conf & 0xC0) == 0xC0;

  trace_t chunked = {0}, whole = {0};
  run(&cfg, refuse, c.chunk, c.p, c.n, &chunked);
  run(&cfg, refuse, 0, c.p, c.n, &whole);
  /* However the bytes are split, the same messages and the same outcome.
   * (A refusing allocator fails at a split-dependent point, so skip.) */
  if (!refuse) {
    FUZZ_CHECK(chunked.err == whole.err);
    FUZZ_CHECK(chunked.len == whole.len);
    FUZZ_CHECK(!whole.len || memcmp(chunked.log, whole.log, whole.len) == 0);
  }
  free(chunked.log);
  free(whole.log);
  return 0;
}
