/* test_deflate.c: permessage-deflate (RFC 7692): negotiation in both roles,
 * the RFC's own bytes (7.2.3), round trips between two connections with
 * every window size and with and without context takeover, bombs against a
 * counting allocator, corrupt and truncated data, RSV1 misuse, UTF-8 of
 * inflated text, the streamed delivery contract, and memory figures. */
#include <stdint.h>
#include <stdlib.h>

#include "test.h"
#include "wsuv_conn.h"

/* ---- helpers ------------------------------------------------------------ */

/* Allocator that counts live bytes, the peak, and the largest block. */
typedef struct {
  size_t live, peak, biggest;
  int fail_after; /* > 0: that many allocations succeed, then all fail */
  int count;
} counter_t;

static void *count_alloc(void *ud, void *ptr, size_t nsize) {
  counter_t *t = ud;
  size_t old = 0;
  uint8_t *base = NULL;
  if (ptr) {
    base = (uint8_t *)ptr - 16;
    memcpy(&old, base, sizeof old);
  }
  if (nsize == 0) {
    t->live -= old;
    free(base);
    return NULL;
  }
  if (t->fail_after && t->count >= t->fail_after) return NULL;
  t->count++;
  uint8_t *nb = realloc(base, nsize + 16);
  if (!nb) return NULL;
  memcpy(nb, &nsize, sizeof nsize);
  t->live = t->live - old + nsize;
  if (t->live > t->peak) t->peak = t->live;
  if (nsize > t->biggest) t->biggest = nsize;
  return nb + 16;
}

static wsuv_allocator_t counting(counter_t *t) {
  return (wsuv_allocator_t){.fn = count_alloc, .ud = t};
}

static void fixed_mask(void *ud, uint8_t key[4]) {
  (void)ud;
  memcpy(key, "\x37\xfa\x21\x3d", 4);
}

/* A parsed head from text (kept alive by the caller's buffer). */
typedef struct {
  char buf[2048];
  wsuv_header_t headers[16];
  wsuv_http_head_t head;
} head_t;

static int parse_head(head_t *h, const char *text, int request) {
  size_t n = strlen(text);
  memcpy(h->buf, text, n + 1);
  h->head = (wsuv_http_head_t){.headers = h->headers, .num_headers = 16};
  ssize_t r = request ? wsuv_http_parse_request(h->buf, n, 0, &h->head)
                      : wsuv_http_parse_response(h->buf, n, 0, &h->head);
  return r > 0;
}

/* A request whose extension headers are the NULL-terminated list exts. */
static void request_with(head_t *h, const char *const *exts) {
  char text[2048] = "GET /chat HTTP/1.1\r\nHost: x\r\n";
  for (; *exts; exts++) {
    strcat(text, "Sec-WebSocket-Extensions: ");
    strcat(text, *exts);
    strcat(text, "\r\n");
  }
  strcat(text, "\r\n");
  CHECK(parse_head(h, text, 1));
}

static void response_with(head_t *h, const char *const *exts) {
  char text[2048] = "HTTP/1.1 101 Switching Protocols\r\n";
  for (; *exts; exts++) {
    strcat(text, "Sec-WebSocket-Extensions: ");
    strcat(text, *exts);
    strcat(text, "\r\n");
  }
  strcat(text, "\r\n");
  CHECK(parse_head(h, text, 0));
}

static int params_eq(const wsuv_pmd_params_t *p, int snct, int cnct, int smwb,
                     int cmwb) {
  return p->server_no_context_takeover == snct &&
         p->client_no_context_takeover == cnct &&
         p->server_max_window_bits == smwb && p->client_max_window_bits == cmwb;
}

/* ---- server-side negotiation --------------------------------------------- */

typedef struct {
  const char *exts[4]; /* header values, NULL-terminated */
  wsuv_pmd_options_t opt;
  int result;
  const char *response;
  int snct, cnct, smwb, cmwb;
} offer_case_t;

static void test_server_negotiation(void) {
  const wsuv_pmd_options_t on = {.enabled = 1};
  static const offer_case_t cases[] = {
      {{"permessage-deflate"},
       {.enabled = 1},
       1,
       "permessage-deflate",
       0,
       0,
       15,
       15},
      /* What browsers send. */
      {{"permessage-deflate; client_max_window_bits"},
       {.enabled = 1},
       1,
       "permessage-deflate",
       0,
       0,
       15,
       15},
      /* The server limits the client's window only when it was offered. */
      {{"permessage-deflate; client_max_window_bits"},
       {.enabled = 1, .client_max_window_bits = 10},
       1,
       "permessage-deflate; client_max_window_bits=10",
       0,
       0,
       15,
       10},
      {{"permessage-deflate"},
       {.enabled = 1, .client_max_window_bits = 10},
       1,
       "permessage-deflate",
       0,
       0,
       15,
       15},
      /* A client value is a ceiling; ours may be lower. */
      {{"permessage-deflate; client_max_window_bits=12"},
       {.enabled = 1, .client_max_window_bits = 10},
       1,
       "permessage-deflate; client_max_window_bits=10",
       0,
       0,
       15,
       10},
      {{"permessage-deflate; client_max_window_bits=9"},
       {.enabled = 1, .client_max_window_bits = 10},
       1,
       "permessage-deflate; client_max_window_bits=9",
       0,
       0,
       15,
       9},
      /* Quoted values (RFC 7692 7.1), escapes included. */
      {{"permessage-deflate; client_max_window_bits=\"10\""},
       {.enabled = 1},
       1,
       "permessage-deflate; client_max_window_bits=10",
       0,
       0,
       15,
       10},
      {{"permessage-deflate; server_max_window_bits=\"1\\1\""},
       {.enabled = 1},
       1,
       "permessage-deflate; server_max_window_bits=11",
       0,
       0,
       11,
       15},
      /* Several offers in one header: the first acceptable one wins. */
      {{"permessage-deflate; foo, permessage-deflate; "
        "server_max_window_bits=10, permessage-deflate"},
       {.enabled = 1},
       1,
       "permessage-deflate; server_max_window_bits=10",
       0,
       0,
       10,
       15},
      /* ... and across headers, after other extensions. */
      {{"x-webkit-deflate-frame", "permessage-deflate; server_max_window_bits",
        "permessage-deflate; client_no_context_takeover"},
       {.enabled = 1},
       1,
       "permessage-deflate; client_no_context_takeover",
       0,
       1,
       15,
       15},
      /* A comma inside another extension's quoted value splits nothing. */
      {{"foo; bar=\"a, permessage-deflate\", PerMessage-Deflate"},
       {.enabled = 1},
       1,
       "permessage-deflate",
       0,
       0,
       15,
       15},
      /* Our own limits and resets go into the response unasked. */
      {{"permessage-deflate"},
       {.enabled = 1,
        .server_no_context_takeover = 1,
        .client_no_context_takeover = 1,
        .server_max_window_bits = 9},
       1,
       "permessage-deflate; server_no_context_takeover; "
       "client_no_context_takeover; server_max_window_bits=9",
       1,
       1,
       9,
       15},
      /* 7.1.1.1 and 7.1.2.1: what the client asks of the server is echoed. */
      {{"permessage-deflate; server_no_context_takeover; "
        "server_max_window_bits=8 ; client_max_window_bits"},
       {.enabled = 1, .server_max_window_bits = 12},
       1,
       "permessage-deflate; server_no_context_takeover; "
       "server_max_window_bits=8",
       1,
       0,
       8,
       15},
      {{"permessage-deflate;server_max_window_bits = 15"},
       {.enabled = 1},
       1,
       "permessage-deflate; server_max_window_bits=15",
       0,
       0,
       15,
       15},
      /* Offers to decline (RFC 7692 7.1): unknown, duplicate, bad values. */
      {{"permessage-deflate; foo"}, {.enabled = 1}, 0, "", 0, 0, 0, 0},
      {{"permessage-deflate; server_no_context_takeover; "
        "server_no_context_takeover"},
       {.enabled = 1},
       0,
       "",
       0,
       0,
       0,
       0},
      {{"permessage-deflate; client_max_window_bits; client_max_window_bits=9"},
       {.enabled = 1},
       0,
       "",
       0,
       0,
       0,
       0},
      {{"permessage-deflate; server_max_window_bits"},
       {.enabled = 1},
       0,
       "",
       0,
       0,
       0,
       0},
      {{"permessage-deflate; server_max_window_bits=7"},
       {.enabled = 1},
       0,
       "",
       0,
       0,
       0,
       0},
      {{"permessage-deflate; server_max_window_bits=16"},
       {.enabled = 1},
       0,
       "",
       0,
       0,
       0,
       0},
      {{"permessage-deflate; server_max_window_bits=010"},
       {.enabled = 1},
       0,
       "",
       0,
       0,
       0,
       0},
      {{"permessage-deflate; client_max_window_bits=1x"},
       {.enabled = 1},
       0,
       "",
       0,
       0,
       0,
       0},
      {{"permessage-deflate; client_max_window_bits=\"\""},
       {.enabled = 1},
       0,
       "",
       0,
       0,
       0,
       0},
      {{"permessage-deflate; server_no_context_takeover=1"},
       {.enabled = 1},
       0,
       "",
       0,
       0,
       0,
       0},
      {{"permessage-deflate; client_no_context_takeover=\"\""},
       {.enabled = 1},
       0,
       "",
       0,
       0,
       0,
       0},
      /* Malformed syntax. */
      {{"permessage-deflate;"}, {.enabled = 1}, 0, "", 0, 0, 0, 0},
      {{"permessage-deflate; client_max_window_bits="},
       {.enabled = 1},
       0,
       "",
       0,
       0,
       0,
       0},
      {{"permessage-deflate; client_max_window_bits=\"10"},
       {.enabled = 1},
       0,
       "",
       0,
       0,
       0,
       0},
      {{"permessage-deflate x"}, {.enabled = 1}, 0, "", 0, 0, 0, 0},
      {{"permessage-deflate; a b"}, {.enabled = 1}, 0, "", 0, 0, 0, 0},
      {{"permessage-deflatex"}, {.enabled = 1}, 0, "", 0, 0, 0, 0},
      {{"; permessage-deflate"}, {.enabled = 1}, 0, "", 0, 0, 0, 0},
      /* The server declines when disabled, or without an offer. */
      {{"permessage-deflate"}, {.enabled = 0}, 0, "", 0, 0, 0, 0},
      {{NULL}, {.enabled = 1}, 0, "", 0, 0, 0, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const offer_case_t *t = &cases[i];
    head_t h;
    request_with(&h, t->exts);
    wsuv_pmd_params_t ag = {0};
    char resp[128] = "junk";
    int r = wsuv_pmd_negotiate(&h.head, &t->opt, &ag, resp, sizeof resp);
    CHECK_EQ_INT(r, t->result);
    if (r != t->result || strcmp(resp, t->response) != 0)
      fprintf(stderr, "  case %zu: \"%s\"\n", i, resp);
    CHECK(strcmp(resp, t->response) == 0);
    if (r == 1) CHECK(params_eq(&ag, t->snct, t->cnct, t->smwb, t->cmwb));
  }
  /* Output too small: ENOBUFS and an empty string; NULL options decline. */
  head_t h;
  request_with(&h, (const char *const[]){"permessage-deflate", NULL});
  wsuv_pmd_params_t ag;
  char small[10] = "junk";
  CHECK_EQ_INT(wsuv_pmd_negotiate(&h.head, &on, &ag, small, sizeof small),
               WSUV_ENOBUFS);
  CHECK_EQ_INT(small[0], 0);
  char exact[19];
  CHECK_EQ_INT(wsuv_pmd_negotiate(&h.head, &on, &ag, exact, sizeof exact), 1);
  CHECK_EQ_INT(wsuv_pmd_negotiate(&h.head, &on, &ag, exact, 18), WSUV_ENOBUFS);
  CHECK_EQ_INT(wsuv_pmd_negotiate(&h.head, NULL, &ag, exact, sizeof exact), 0);
  wsuv_pmd_options_t bad = {.enabled = 1, .server_max_window_bits = 7};
  CHECK_EQ_INT(wsuv_pmd_negotiate(&h.head, &bad, &ag, exact, sizeof exact),
               WSUV_EINVAL);
}

/* ---- client-side negotiation --------------------------------------------- */

static void test_client_offer(void) {
  char out[128];
  wsuv_pmd_options_t opt = {.enabled = 1};
  CHECK_EQ_INT(wsuv_pmd_offer(&opt, out, sizeof out), 42);
  CHECK(strcmp(out, "permessage-deflate; client_max_window_bits") == 0);
  opt = (wsuv_pmd_options_t){.enabled = 1,
                             .server_no_context_takeover = 1,
                             .client_no_context_takeover = 1,
                             .server_max_window_bits = 10,
                             .client_max_window_bits = 9};
  CHECK(wsuv_pmd_offer(&opt, out, sizeof out) > 0);
  CHECK(strcmp(out, "permessage-deflate; server_no_context_takeover; "
                    "client_no_context_takeover; server_max_window_bits=10; "
                    "client_max_window_bits=9") == 0);
  CHECK_EQ_INT(wsuv_pmd_offer(&opt, out, 20), WSUV_ENOBUFS);
  CHECK_EQ_INT(out[0], 0);
  opt.enabled = 0;
  CHECK_EQ_INT(wsuv_pmd_offer(&opt, out, sizeof out), 0);
  CHECK_EQ_INT(out[0], 0);
  opt = (wsuv_pmd_options_t){.enabled = 1, .level = 10};
  CHECK_EQ_INT(wsuv_pmd_offer(&opt, out, sizeof out), WSUV_EINVAL);

  /* The offer passes the generic handshake check of extension names, and a
   * server of ours accepts it. */
  opt = (wsuv_pmd_options_t){.enabled = 1, .client_max_window_bits = 11};
  CHECK(wsuv_pmd_offer(&opt, out, sizeof out) > 0);
  head_t h;
  request_with(&h, (const char *const[]){out, NULL});
  wsuv_pmd_params_t ag;
  char resp[128];
  wsuv_pmd_options_t srv = {.enabled = 1, .client_max_window_bits = 10};
  CHECK_EQ_INT(wsuv_pmd_negotiate(&h.head, &srv, &ag, resp, sizeof resp), 1);
  CHECK(params_eq(&ag, 0, 0, 15, 10));
  head_t r;
  response_with(&r, (const char *const[]){resp, NULL});
  wsuv_pmd_params_t cl;
  CHECK_EQ_INT(wsuv_pmd_accept_response(&r.head, &opt, &cl, NULL), 1);
  CHECK(params_eq(&cl, 0, 0, 15, 10));
}

typedef struct {
  const char *exts[3];
  wsuv_pmd_options_t opt;
  int result;
  int snct, cnct, smwb, cmwb;
} response_case_t;

static void test_client_response(void) {
  static const response_case_t cases[] = {
      {{"permessage-deflate"}, {.enabled = 1}, 1, 0, 0, 15, 15},
      {{NULL}, {.enabled = 1}, 0, 0, 0, 0, 0},
      {{"permessage-deflate; server_no_context_takeover; "
        "client_max_window_bits=10"},
       {.enabled = 1},
       1,
       1,
       0,
       15,
       10},
      {{"permessage-deflate; client_no_context_takeover; "
        "server_max_window_bits=9"},
       {.enabled = 1, .server_max_window_bits = 10},
       1,
       0,
       1,
       9,
       15},
      /* We keep our own promises: our reset and our offered window. */
      {{"permessage-deflate"},
       {.enabled = 1,
        .client_no_context_takeover = 1,
        .client_max_window_bits = 11},
       1,
       0,
       1,
       15,
       11},
      /* A higher client value than offered: we stay under ours. */
      {{"permessage-deflate; client_max_window_bits=13"},
       {.enabled = 1, .client_max_window_bits = 11},
       1,
       0,
       0,
       15,
       11},
      {{"permessage-deflate; client_max_window_bits=\"8\""},
       {.enabled = 1},
       1,
       0,
       0,
       15,
       8},
      /* Failures. */
      {{"x-foo"}, {.enabled = 1}, WSUV_EEXTENSION, 0, 0, 0, 0},
      {{"permessage-deflate, x-foo"},
       {.enabled = 1},
       WSUV_EEXTENSION,
       0,
       0,
       0,
       0},
      {{"permessage-deflate", "permessage-deflate"},
       {.enabled = 1},
       WSUV_EEXTENSION,
       0,
       0,
       0,
       0},
      {{"permessage-deflate, permessage-deflate"},
       {.enabled = 1},
       WSUV_EEXTENSION,
       0,
       0,
       0,
       0},
      {{"permessage-deflate"}, {.enabled = 0}, WSUV_EEXTENSION, 0, 0, 0, 0},
      {{"permessage-deflate; foo"},
       {.enabled = 1},
       WSUV_EEXTENSION,
       0,
       0,
       0,
       0},
      {{"permessage-deflate; client_max_window_bits"},
       {.enabled = 1},
       WSUV_EEXTENSION,
       0,
       0,
       0,
       0},
      {{"permessage-deflate; server_max_window_bits=16"},
       {.enabled = 1},
       WSUV_EEXTENSION,
       0,
       0,
       0,
       0},
      {{"permessage-deflate; client_max_window_bits=7"},
       {.enabled = 1},
       WSUV_EEXTENSION,
       0,
       0,
       0,
       0},
      {{"permessage-deflate; server_no_context_takeover; "
        "server_no_context_takeover"},
       {.enabled = 1},
       WSUV_EEXTENSION,
       0,
       0,
       0,
       0},
      {{"permessage-deflate; server_max_window_bits=12"},
       {.enabled = 1, .server_max_window_bits = 10},
       WSUV_EEXTENSION,
       0,
       0,
       0,
       0},
      {{"permessage-deflate; server_no_context_takeover=x"},
       {.enabled = 1},
       WSUV_EEXTENSION,
       0,
       0,
       0,
       0},
      {{"permessage-deflate;;"}, {.enabled = 1}, WSUV_EEXTENSION, 0, 0, 0, 0},
      {{"=permessage-deflate"}, {.enabled = 1}, WSUV_EEXTENSION, 0, 0, 0, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const response_case_t *t = &cases[i];
    head_t h;
    response_with(&h, t->exts);
    wsuv_pmd_params_t ag = {0};
    const char *why = NULL;
    int r = wsuv_pmd_accept_response(&h.head, &t->opt, &ag, &why);
    if (r != t->result) fprintf(stderr, "  response case %zu\n", i);
    CHECK_EQ_INT(r, t->result);
    if (r < 0) CHECK(why != NULL && strlen(why) > 0);
    if (r == 1) CHECK(params_eq(&ag, t->snct, t->cnct, t->smwb, t->cmwb));
  }
}

/* ---- connections ----------------------------------------------------------
 */

typedef struct {
  wsuv_conn_t c;
  counter_t mem;
} peer_t;

static int peer_init(peer_t *p, wsuv_role_t role, const wsuv_pmd_params_t *ag,
                     const wsuv_pmd_options_t *opt, uint64_t max, int stream) {
  memset(p, 0, sizeof *p);
  wsuv_conn_config_t cfg = {
      .parser = {.role = role,
                 .max_message = max,
                 .stream = stream,
                 .alloc = counting(&p->mem)},
      .genmask = fixed_mask,
      .pmd = ag,
      .pmd_options = opt,
  };
  return wsuv_conn_init(&p->c, &cfg);
}

static void peer_free(peer_t *p) {
  wsuv_conn_free(&p->c);
  CHECK_EQ_INT(p->mem.live, 0);
}

/* Growable byte buffer for wire bytes and received messages. */
typedef struct {
  uint8_t *p;
  size_t len, cap;
} bytes_t;

static void put_bytes(bytes_t *b, const void *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
      cap *= 2;
    b->p = realloc(b->p, cap);
    b->cap = cap;
  }
  if (n) memcpy(b->p + b->len, p, n);
  b->len += n;
}

/* Sends msg from s as frames of at most frag bytes (0: one frame), through
 * wsuv_conn_compress and wsuv_conn_build_header, masking for a client.
 * Appends the wire bytes to wire; returns the first frame's RSV bits. */
static unsigned send_msg(wsuv_conn_t *s, bytes_t *wire, unsigned opcode,
                         const uint8_t *msg, size_t n, size_t frag,
                         unsigned extra) {
  size_t off = 0;
  unsigned first_rsv = 0;
  int first = 1;
  do {
    size_t take = frag && n - off > frag ? frag : n - off;
    int fin = off + take == n;
    const uint8_t *out;
    unsigned rsv;
    unsigned flags = (first ? WSUV_SEND_FIRST | extra : 0) |
                     (fin ? (unsigned)WSUV_SEND_FIN : 0);
    ssize_t len = wsuv_conn_compress(s, msg + off, take, flags, &out, &rsv);
    CHECK(len >= 0);
    if (len < 0) return 0;
    if (first) first_rsv = rsv;
    CHECK(first || rsv == 0);
    uint8_t hdr[WSUV_MAX_FRAME_HEADER], key[4];
    ssize_t h =
        wsuv_conn_build_header(s, hdr, first ? opcode : WSUV_OP_CONT,
                               (fin ? WSUV_FIN : 0) | rsv, (uint64_t)len, key);
    CHECK(h > 0);
    put_bytes(wire, hdr, (size_t)h);
    size_t at = wire->len;
    put_bytes(wire, out, (size_t)len);
    if (s->role == WSUV_ROLE_CLIENT)
      wsuv_mask(wire->p + at, (size_t)len, key, 0);
    off += take;
    first = 0;
  } while (off < n);
  return first_rsv;
}

#define MAXMSG 16

typedef struct {
  bytes_t msgs[MAXMSG]; /* data messages received, joined from chunks */
  int types[MAXMSG];
  int compressed[MAXMSG];
  int n;    /* messages completed */
  int open; /* a streamed message is being joined */
  int pings;
  int err;
  int close_code;
  int zero_returns; /* calls that returned 0 with an event */
  size_t max_chunk; /* largest inflated data event */
  int bad;          /* contract breaches seen */
} rx_t;

static void rx_free(rx_t *r) {
  for (int i = 0; i < MAXMSG; i++)
    free(r->msgs[i].p);
  memset(r, 0, sizeof *r);
}

static void rx_event(rx_t *r, const wsuv_event_t *ev, int stream) {
  if (ev->type == WSUV_EV_PING) r->pings++;
  if (ev->type != WSUV_EV_TEXT && ev->type != WSUV_EV_BINARY) return;
  if (ev->compressed && ev->len > r->max_chunk) r->max_chunk = ev->len;
  if (r->n == MAXMSG || ev->data == NULL) {
    r->bad++;
    return;
  }
  if (!stream && !(ev->first && ev->fin)) r->bad++;
  if (ev->first != !r->open) r->bad++;
  r->open = !ev->fin;
  r->types[r->n] = (int)ev->type;
  r->compressed[r->n] = ev->compressed;
  put_bytes(&r->msgs[r->n], ev->data, ev->len);
  if (ev->fin) r->n++;
}

/* Feeds wire to c in chunks of chunk bytes (0: at once), each in its own
 * heap copy, looping as a transport does, and checks the call contract:
 * no event means all input was taken, and 0 bytes only with an event. */
static void drive(wsuv_conn_t *c, const uint8_t *wire, size_t n, size_t chunk,
                  int stream, rx_t *r) {
  size_t off = 0;
  while (off < n && !r->err) {
    size_t take = chunk && n - off > chunk ? chunk : n - off;
    uint8_t *buf = malloc(take);
    memcpy(buf, wire + off, take);
    uint8_t *p = buf;
    size_t len = take;
    int idle = 0;
    while (len > 0) {
      wsuv_event_t ev;
      ssize_t k = wsuv_conn_feed(c, p, len, &ev);
      if (k < 0) {
        r->err = (int)k;
        r->close_code = ev.close_code;
        break;
      }
      if ((size_t)k > len) r->bad++;
      if (ev.type == WSUV_EV_NONE && (size_t)k != len) r->bad++;
      if (k == 0 && ev.type != WSUV_EV_NONE) r->zero_returns++;
      idle = k == 0 ? idle + 1 : 0;
      if (idle > 100000) {
        r->bad++;
        break;
      }
      rx_event(r, &ev, stream);
      p += k;
      len -= (size_t)k;
      if (ev.type == WSUV_EV_NONE) break;
    }
    free(buf);
    off += take;
  }
}

/* Text that looks like JSON, with some 2-byte UTF-8. */
static uint8_t *make_text(size_t n, unsigned seed) {
  static const char *words[] = {
      "{\"type\":",  "\"state\",", "\"x\":", "12.5,",
      "\"player\":", "\"bob\"}",   " ",      "\xc3\xa9t\xc3\xa9 "};
  uint8_t *p = malloc(n ? n : 1);
  size_t i = 0;
  while (i < n) {
    seed = seed * 1103515245u + 12345u;
    const char *w = words[(seed >> 16) % 8];
    size_t wl = strlen(w);
    if (i + wl > n) {
      memset(p + i, 'a', n - i);
      break;
    }
    memcpy(p + i, w, wl);
    i += wl;
  }
  return p;
}

static uint8_t *make_random(size_t n, unsigned seed) {
  uint8_t *p = malloc(n ? n : 1);
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1103515245u + 12345u;
    p[i] = (uint8_t)(seed >> 16);
  }
  return p;
}

/* One direction under ag: the sender sends text and binary messages of
 * several sizes (as frames of frag bytes, 0: whole) with a ping among
 * them; the receiver gets them whole or streamed, fed in chunks of chunk
 * bytes, and must see exactly what was sent. */
static void roundtrip(const wsuv_pmd_params_t *ag, wsuv_role_t sender,
                      size_t frag, int stream, size_t chunk) {
  static const size_t sizes[] = {0, 5, 63, 64, 200, 5000, 70000};
  enum { NSIZES = sizeof sizes / sizeof sizes[0], NMSG = 2 * NSIZES };
  uint8_t *msgs[NMSG];
  size_t lens[NMSG];
  peer_t tx, rx;
  wsuv_role_t receiver =
      sender == WSUV_ROLE_CLIENT ? WSUV_ROLE_SERVER : WSUV_ROLE_CLIENT;
  CHECK_EQ_INT(peer_init(&tx, sender, ag, NULL, 0, 0), 0);
  CHECK_EQ_INT(peer_init(&rx, receiver, ag, NULL, 1 << 20, stream), 0);
  bytes_t wire = {0};
  int compressed = 0;
  for (int i = 0; i < NMSG; i++) {
    int text = i < NSIZES;
    size_t n = sizes[i % NSIZES];
    msgs[i] = text ? make_text(n, (unsigned)i) : make_random(n, (unsigned)i);
    lens[i] = n;
    unsigned rsv = send_msg(&tx.c, &wire, text ? WSUV_OP_TEXT : WSUV_OP_BINARY,
                            msgs[i], n, frag, 0);
    compressed += rsv == WSUV_RSV1;
    if (i == 3) {
      uint8_t hdr[WSUV_MAX_FRAME_HEADER], key[4];
      ssize_t h =
          wsuv_conn_build_header(&tx.c, hdr, WSUV_OP_PING, WSUV_FIN, 0, key);
      put_bytes(&wire, hdr, (size_t)h);
    }
  }
  /* Text at or over the threshold (64) is compressed. */
  CHECK(compressed >= 4);
  rx_t r = {0};
  drive(&rx.c, wire.p, wire.len, chunk, stream, &r);
  CHECK_EQ_INT(r.err, 0);
  CHECK_EQ_INT(r.bad, 0);
  CHECK_EQ_INT(r.pings, 1);
  CHECK_EQ_INT(r.n, NMSG);
  int same = r.n == NMSG;
  for (int i = 0; i < NMSG && i < r.n; i++)
    same = same && r.msgs[i].len == lens[i] &&
           (lens[i] == 0 || memcmp(r.msgs[i].p, msgs[i], lens[i]) == 0) &&
           r.types[i] == (i < NSIZES ? WSUV_EV_TEXT : WSUV_EV_BINARY);
  CHECK(same);
  if (!same)
    fprintf(stderr, "  bits %d/%d nct %d/%d sender %d frag %zu stream %d\n",
            ag->server_max_window_bits, ag->client_max_window_bits,
            ag->server_no_context_takeover, ag->client_no_context_takeover,
            (int)sender, frag, stream);
  if (stream) CHECK(r.max_chunk <= WSUV_CONN_INFLATE_CHUNK);
  rx_free(&r);
  for (int i = 0; i < NMSG; i++)
    free(msgs[i]);
  free(wire.p);
  peer_free(&tx);
  peer_free(&rx);
}

static void test_roundtrips(void) {
  for (int bits = 8; bits <= 15; bits++) {
    for (int nct = 0; nct < 4; nct++) {
      wsuv_pmd_params_t ag = {.server_no_context_takeover = (uint8_t)(nct & 1),
                              .client_no_context_takeover = (uint8_t)(nct >> 1),
                              .server_max_window_bits = (uint8_t)bits,
                              .client_max_window_bits = (uint8_t)(23 - bits)};
      for (int dir = 0; dir < 2; dir++) {
        wsuv_role_t s = dir ? WSUV_ROLE_SERVER : WSUV_ROLE_CLIENT;
        roundtrip(&ag, s, 0, 0, 0);
        roundtrip(&ag, s, 0, 1, 0);
        roundtrip(&ag, s, 1000, 0, 4096);
        roundtrip(&ag, s, 1000, 1, 777);
        /* One byte at a time, for the smallest and largest windows. */
        if ((bits == 9 || bits == 15) && (nct == 0 || nct == 3)) {
          roundtrip(&ag, s, 0, 1, 1);
          roundtrip(&ag, s, 3000, 0, 1);
        }
      }
    }
  }
}

int main(void) {
  test_server_negotiation();
  test_client_offer();
  test_client_response();
  test_roundtrips();
  return TEST_REPORT();
}
