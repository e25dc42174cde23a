/* fuzz_deflate.c: permessage-deflate (RFC 7692): the inflate path of a
 * server connection, our compressor against it, and the negotiation.
 *
 * Input: [chunk size][config][data...]. The config's low two bits pick a
 * mode:
 * 0 frames: the data is a list of [ctl][len][payload] segments, each made
 *   into a masked frame (RSV1 on a message's first frame unless ctl says
 *   plain; sometimes a ping before it, sometimes RSV1 where it is illegal),
 *   so arbitrary bytes reach the inflater as compressed messages.
 * 1 raw: the data is the wire bytes themselves.
 * 2 round trip: the data, cut into up to four messages, is compressed by a
 *   client connection and must come out of the server's unchanged.
 * 3 negotiation: the data's lines are Sec-WebSocket-Extensions values of a
 *   request (server side) and of a response (client side).
 * The other config bits pick streamed or whole delivery, a small
 * max_message, the client's window bits and its no_context_takeover.
 *
 * Checks: the feed contract (no event means all input was taken; a call
 * takes nothing only with an event, and not forever); events are well
 * formed (chunks within WSUV_CONN_INFLATE_CHUNK, messages within
 * max_message, text valid UTF-8, first/fin in order); memory stays within
 * max_message plus zlib's bound and is all freed; errors carry their close
 * code; the chunked feed gives the same messages and outcome as the whole;
 * round trips are exact; negotiated parameters are in range, the response
 * the server writes is accepted by our client with the same parameters, and
 * connections start with them. */
#include "chunk.h"
#include "test/sized_alloc.h"
#include "wsuv_conn.h"

#include <string.h>

typedef struct {
  size_t live, peak;
} track_t;

static void *track_alloc(void *ud, void *ptr, size_t nsize) {
  track_t *t = ud;
  size_t old = sized_size(ptr);
  if (nsize == 0) {
    t->live -= old;
    sized_free(ptr);
    return NULL;
  }
  void *p = sized_realloc(ptr, nsize);
  if (!p) return NULL;
  t->live = t->live - old + nsize;
  if (t->live > t->peak) t->peak = t->live;
  return p;
}

typedef struct {
  uint8_t *p;
  size_t len, cap;
} buf_t;

static void buf_put(buf_t *b, const void *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
      cap *= 2;
    b->p = realloc(b->p, cap);
    FUZZ_CHECK(b->p != NULL);
    b->cap = cap;
  }
  if (n) memcpy(b->p + b->len, p, n);
  b->len += n;
}

/* What a run observed, serialised so that two runs can be compared. */
typedef struct {
  buf_t log;
  buf_t msg;    /* the message being joined */
  int open;     /* a message has started */
  int type;     /* its event type */
  int messages; /* completed */
  int err;
} trace_t;

typedef struct {
  wsuv_role_t role;
  int stream;
  uint64_t max_message;
  wsuv_pmd_params_t ag;
  wsuv_pmd_options_t opt;
} setup_t;

static void log_put(buf_t *log, int type, const uint8_t *p, size_t n) {
  uint8_t head[1 + sizeof n];
  head[0] = (uint8_t)type;
  memcpy(head + 1, &n, sizeof n);
  buf_put(log, head, sizeof head);
  buf_put(log, p, n);
}

static void record(trace_t *t, int type, const uint8_t *p, size_t n) {
  log_put(&t->log, type, p, n);
}

static void check_event(const setup_t *s, const wsuv_event_t *ev, trace_t *t) {
  if (ev->len) FUZZ_CHECK(ev->data != NULL);
  if (ev->type == WSUV_EV_PING || ev->type == WSUV_EV_PONG ||
      ev->type == WSUV_EV_CLOSE) {
    FUZZ_CHECK(ev->len <= WSUV_MAX_CONTROL_PAYLOAD);
    record(t, ev->type, ev->data, ev->len);
    return;
  }
  FUZZ_CHECK(ev->type == WSUV_EV_TEXT || ev->type == WSUV_EV_BINARY);
  if (!s->stream) FUZZ_CHECK(ev->first && ev->fin);
  if (ev->compressed && s->stream)
    FUZZ_CHECK(ev->len <= WSUV_CONN_INFLATE_CHUNK);
  FUZZ_CHECK(ev->first == !t->open);
  if (!t->open) {
    t->open = 1;
    t->type = ev->type;
    t->msg.len = 0;
  }
  FUZZ_CHECK((int)ev->type == t->type);
  buf_put(&t->msg, ev->data, ev->len);
  FUZZ_CHECK(t->msg.len <= s->max_message);
  if (!ev->fin) return;
  t->open = 0;
  t->messages++;
  if (ev->type == WSUV_EV_TEXT)
    FUZZ_CHECK(
        wsuv_utf8_valid(t->msg.p ? t->msg.p : (const uint8_t *)"", t->msg.len));
  record(t, ev->type, t->msg.p, t->msg.len);
}

/* Feeds one chunk (its own heap copy, so ASan sees overreads) as a
 * transport does. Returns 0 to go on, or the error. */
static int feed_chunk(const setup_t *s, wsuv_conn_t *c, const uint8_t *data,
                      size_t n, trace_t *t) {
  uint8_t *buf = malloc(n ? n : 1);
  FUZZ_CHECK(buf != NULL);
  memcpy(buf, data, n);
  size_t pos = 0;
  int idle = 0, err = 0;
  while (pos < n) {
    wsuv_event_t ev;
    ssize_t r = wsuv_conn_feed(c, buf + pos, n - pos, &ev);
    if (r < 0) {
      FUZZ_CHECK(ev.type == WSUV_EV_NONE);
      FUZZ_CHECK(ev.close_code == wsuv_err_close_code((int)r));
      FUZZ_CHECK(c->state == WSUV_STATE_CLOSED && c->error == (int)r);
      err = (int)r;
      break;
    }
    FUZZ_CHECK((size_t)r <= n - pos);
    if (ev.type == WSUV_EV_NONE) {
      FUZZ_CHECK((size_t)r == n - pos);
      break;
    }
    check_event(s, &ev, t);
    /* 0 bytes with an event: more chunks are owed for the same input;
     * bounded by what max_message lets out of it. */
    idle = r == 0 ? idle + 1 : 0;
    FUZZ_CHECK(idle <= 8 + (int)(s->max_message / WSUV_CONN_INFLATE_CHUNK));
    pos += (size_t)r;
  }
  free(buf);
  return err;
}

/* Runs wire through a fresh connection in chunks of chunk bytes. */
static void run(const setup_t *s, const uint8_t *wire, size_t n, size_t chunk,
                trace_t *t) {
  track_t tr = {0};
  wsuv_conn_config_t cfg = {
      .parser = {.role = s->role,
                 .max_message = s->max_message,
                 .stream = s->stream,
                 .alloc = {.fn = track_alloc, .ud = &tr}},
      .pmd = &s->ag,
      .pmd_options = &s->opt,
  };
  wsuv_conn_t c;
  FUZZ_CHECK(wsuv_conn_init(&c, &cfg) == 0);
  size_t off = 0;
  while (off < n && !t->err) {
    size_t take = chunk && chunk < n - off ? chunk : n - off;
    t->err = feed_chunk(s, &c, wire + off, take, t);
    off += take;
    /* Message storage up to max_message (streamed: a chunk), the inflate
     * window and state (zlib cap: 2 windows + 64 KiB), bookkeeping. */
    size_t bound = (size_t)s->max_message + WSUV_CONN_INFLATE_CHUNK +
                   2 * ((size_t)1 << s->ag.client_max_window_bits) + 80 * 1024;
    FUZZ_CHECK(tr.live <= bound);
  }
  wsuv_conn_free(&c);
  FUZZ_CHECK(tr.live == 0);
}

static void compare(const setup_t *s, const uint8_t *wire, size_t n,
                    size_t chunk) {
  trace_t a = {0}, b = {0};
  run(s, wire, n, chunk, &a);
  run(s, wire, n, 0, &b);
  /* However the bytes are split: the same messages, the same outcome.
   * One exception: zlib checks a match's distance against the window only
   * when it reaches back before the current inflate() call's output, so a
   * peer that breaks an agreed window under 15 bits fails (EDEFLATE) at a
   * point, or at all, depending on the split. Then the run that failed
   * first saw a prefix of the other's messages. (No match reaches beyond a
   * 15-bit window.) */
  int same = a.err == b.err && a.log.len == b.log.len &&
             (!a.log.len || memcmp(a.log.p, b.log.p, a.log.len) == 0);
  if (!same) {
    FUZZ_CHECK(s->ag.client_max_window_bits < 15);
    trace_t *f = &a, *o = &b;
    if (b.err == WSUV_EDEFLATE &&
        (a.err != WSUV_EDEFLATE || b.log.len < a.log.len)) {
      f = &b;
      o = &a;
    }
    FUZZ_CHECK(f->err == WSUV_EDEFLATE);
    FUZZ_CHECK(f->log.len <= o->log.len);
    FUZZ_CHECK(!f->log.len || memcmp(f->log.p, o->log.p, f->log.len) == 0);
  }
  free(a.log.p);
  free(a.msg.p);
  free(b.log.p);
  free(b.msg.p);
}

/* Mode 0: [ctl][len][payload] segments into masked frames. ctl: bit 0 fin,
 * bit 1 text, bit 2 plain (no RSV1 on a first frame), bit 3 a ping first,
 * bit 4 RSV1 on a continuation (illegal), bit 5 a zero mask key, bit 7
 * length in 16-byte units. */
static void frames_from(const uint8_t *p, size_t n, buf_t *wire) {
  static const uint8_t keys[2][4] = {{0x37, 0xfa, 0x21, 0x3d}, {0, 0, 0, 0}};
  int open = 0;
  while (n >= 2) {
    uint8_t ctl = p[0];
    size_t len = ctl & 0x80 ? (size_t)p[1] * 16 : p[1];
    p += 2;
    n -= 2;
    if (len > n) len = n;
    const uint8_t *key = keys[(ctl >> 5) & 1];
    uint8_t hdr[WSUV_MAX_FRAME_HEADER];
    if (ctl & 8)
      buf_put(wire, hdr,
              wsuv_frame_build_header(hdr, WSUV_FIN, WSUV_OP_PING, 0, key));
    unsigned op = open ? WSUV_OP_CONT : ctl & 2 ? WSUV_OP_TEXT : WSUV_OP_BINARY;
    unsigned flags = ctl & 1 ? WSUV_FIN : 0;
    if ((!open && !(ctl & 4)) || (open && (ctl & 16))) flags |= WSUV_RSV1;
    buf_put(wire, hdr, wsuv_frame_build_header(hdr, flags, op, len, key));
    size_t at = wire->len;
    buf_put(wire, p, len);
    wsuv_mask(wire->p + at, len, key, 0);
    open = !(ctl & 1);
    p += len;
    n -= len;
  }
}

static void genmask(void *ud, uint8_t key[4]) {
  (void)ud;
  memcpy(key, "\x11\x22\x33\x44", 4);
}

/* Mode 2: up to four messages cut from the data (the first bytes give the
 * cuts and the fragment size), compressed by a client connection. */
static void round_trip(setup_t *s, const uint8_t *p, size_t n, size_t chunk) {
  uint8_t cuts = fuzz_take_byte(&p, &n), frag = fuzz_take_byte(&p, &n);
  uint8_t level = fuzz_take_byte(&p, &n);
  s->opt.threshold = (size_t)(level >> 4);
  s->opt.level = 1 + (level & 7);
  s->opt.mem_level = 1 + ((level >> 3) & 1) * 7;
  s->max_message = 1 << 20;
  wsuv_conn_config_t cfg = {.parser = {.role = WSUV_ROLE_CLIENT},
                            .genmask = genmask,
                            .pmd = &s->ag,
                            .pmd_options = &s->opt};
  wsuv_conn_t c;
  FUZZ_CHECK(wsuv_conn_init(&c, &cfg) == 0);
  buf_t wire = {0}, want = {0};
  size_t off = 0;
  for (int m = 0; m < 4 && (off < n || m == 0); m++) {
    size_t len = m == 3 ? n - off : ((size_t)((cuts >> (2 * m)) & 3) * n) / 4;
    if (len > n - off) len = n - off;
    size_t f = frag ? frag : len;
    for (size_t at = 0; at < len || at == 0; at += f) {
      size_t take = len - at < f ? len - at : f;
      unsigned flags = (at == 0 ? (unsigned)WSUV_SEND_FIRST : 0) |
                       (at + take == len ? (unsigned)WSUV_SEND_FIN : 0);
      const uint8_t *out;
      unsigned rsv;
      ssize_t k = wsuv_conn_compress(&c, p + off + at, take, flags, &out, &rsv);
      FUZZ_CHECK(k >= 0);
      uint8_t hdr[WSUV_MAX_FRAME_HEADER], key[4];
      unsigned op = at ? WSUV_OP_CONT : WSUV_OP_BINARY;
      ssize_t h = wsuv_conn_build_header(
          &c, hdr, op, (flags & WSUV_SEND_FIN ? WSUV_FIN : 0) | rsv,
          (uint64_t)k, key);
      FUZZ_CHECK(h > 0);
      buf_put(&wire, hdr, (size_t)h);
      size_t w = wire.len;
      buf_put(&wire, out, (size_t)k);
      wsuv_mask(wire.p + w, (size_t)k, key, 0);
      if (take == 0) break;
    }
    log_put(&want, WSUV_EV_BINARY, p + off, len);
    off += len;
  }
  wsuv_conn_free(&c);
  trace_t got = {0};
  run(s, wire.p, wire.len, chunk, &got);
  FUZZ_CHECK(got.err == 0);
  FUZZ_CHECK(got.log.len == want.len);
  FUZZ_CHECK(!want.len || memcmp(got.log.p, want.p, want.len) == 0);
  free(got.log.p);
  free(got.msg.p);
  free(wire.p);
  free(want.p);
}

/* Mode 3: each line of the data is a Sec-WebSocket-Extensions value. */
static size_t head_from(char *out, size_t cap, const char *first,
                        const uint8_t *p, size_t n) {
  size_t len = strlen(first);
  memcpy(out, first, len);
  while (n > 0 && len + 64 < cap) {
    const uint8_t *nl = memchr(p, '\n', n);
    size_t line = nl ? (size_t)(nl - p) : n;
    if (line > cap - len - 64) line = cap - len - 64;
    memcpy(out + len, "Sec-WebSocket-Extensions: ", 26);
    len += 26;
    memcpy(out + len, p, line);
    len += line;
    memcpy(out + len, "\r\n", 2);
    len += 2;
    size_t used = nl ? line + 1 : line;
    p += used;
    n -= used;
  }
  memcpy(out + len, "\r\n", 2);
  return len + 2;
}

static int params_valid(const wsuv_pmd_params_t *a) {
  return a->server_max_window_bits >= 8 && a->server_max_window_bits <= 15 &&
         a->client_max_window_bits >= 8 && a->client_max_window_bits <= 15 &&
         a->server_no_context_takeover <= 1 &&
         a->client_no_context_takeover <= 1;
}

/* A connection pair starts with the agreed parameters, and a message
 * crosses it. */
static void pair_check(const wsuv_pmd_params_t *ag) {
  setup_t s = {.role = WSUV_ROLE_SERVER, .max_message = 1 << 16, .ag = *ag};
  s.opt.enabled = 1;
  static const uint8_t msg[] = "{\"a\":1,\"a\":1,\"a\":1,\"a\":1,\"a\":1}";
  round_trip(&s, msg, sizeof msg - 1, 7);
}

static void negotiation(uint8_t conf, const uint8_t *p, size_t n) {
  static const uint8_t bits[4] = {0, 8, 10, 15};
  wsuv_pmd_options_t opt = {
      .enabled = 1,
      .server_no_context_takeover = (uint8_t)((conf >> 2) & 1),
      .client_no_context_takeover = (uint8_t)((conf >> 3) & 1),
      .server_max_window_bits = bits[(conf >> 4) & 3],
      .client_max_window_bits = bits[(conf >> 6) & 3],
  };
  char text[4096 + 256];
  wsuv_header_t hs[16];
  wsuv_http_head_t h = {.headers = hs, .num_headers = 16};
  size_t len =
      head_from(text, sizeof text, "GET / HTTP/1.1\r\nHost: x\r\n", p, n);
  if (wsuv_http_parse_request(text, len, sizeof text, &h) > 0) {
    wsuv_pmd_params_t ag;
    char resp[WSUV_PMD_EXT_MAX];
    int r = wsuv_pmd_negotiate(&h, &opt, &ag, resp, sizeof resp);
    FUZZ_CHECK(r == 0 || r == 1);
    FUZZ_CHECK(r == 1 || resp[0] == '\0');
    if (r == 1) {
      FUZZ_CHECK(params_valid(&ag));
      /* Our client, offering everything, accepts the answer as is. */
      char rtext[512];
      wsuv_header_t rh[4];
      wsuv_http_head_t res = {.headers = rh, .num_headers = 4};
      size_t rlen = head_from(rtext, sizeof rtext, "HTTP/1.1 101 OK\r\n",
                              (const uint8_t *)resp, strlen(resp));
      FUZZ_CHECK(wsuv_http_parse_response(rtext, rlen, 0, &res) > 0);
      wsuv_pmd_options_t any = {.enabled = 1};
      wsuv_pmd_params_t cl;
      FUZZ_CHECK(wsuv_pmd_accept_response(&res, &any, &cl, NULL) == 1);
      FUZZ_CHECK(memcmp(&cl, &ag, sizeof ag) == 0);
      pair_check(&ag);
    }
  }
  /* The same lines as a server's response, checked by a client. */
  len = head_from(text, sizeof text, "HTTP/1.1 101 OK\r\n", p, n);
  h.num_headers = 16;
  if (wsuv_http_parse_response(text, len, sizeof text, &h) > 0) {
    wsuv_pmd_params_t ag;
    const char *why = NULL;
    int r = wsuv_pmd_accept_response(&h, &opt, &ag, &why);
    FUZZ_CHECK(r == 0 || r == 1 || r == WSUV_EEXTENSION);
    if (r < 0) FUZZ_CHECK(why != NULL);
    if (r == 1) {
      FUZZ_CHECK(params_valid(&ag));
      pair_check(&ag);
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const uint64_t max_messages[4] = {1, 200, 5000, 70000};
  static const uint8_t window[4] = {15, 8, 9, 12};
  fuzz_chunker_t c;
  fuzz_chunker_init(&c, data, size);
  uint8_t conf = fuzz_take_byte(&c.p, &c.n);
  int mode = conf & 3;
  if (mode == 3) {
    negotiation(conf, c.p, c.n);
    return 0;
  }
  setup_t s = {
      .role = WSUV_ROLE_SERVER,
      .stream = (conf >> 2) & 1,
      .max_message = max_messages[(conf >> 3) & 3],
      .ag = {.server_max_window_bits = 15,
             .client_no_context_takeover = (uint8_t)((conf >> 5) & 1),
             .client_max_window_bits = window[(conf >> 6) & 3]},
      .opt = {.enabled = 1},
  };
  if (mode == 2) {
    round_trip(&s, c.p, c.n, c.chunk);
    return 0;
  }
  buf_t wire = {0};
  if (mode == 0)
    frames_from(c.p, c.n, &wire);
  else
    buf_put(&wire, c.p, c.n);
  compare(&s, wire.p, wire.len, c.chunk);
  free(wire.p);
  return 0;
}
