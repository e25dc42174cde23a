/* test_deflate.c: permessage-deflate (RFC 7692): negotiation in both roles,
 * the RFC's own bytes (7.2.3), round trips between two connections with
 * every window size and with and without context takeover, bombs against a
 * counting allocator, corrupt and truncated data, RSV1 misuse, UTF-8 of
 * inflated text, the streamed delivery contract, and memory figures. */
#include <stdint.h>
#include <stdlib.h>

#include "test.h"
#include "test/sized_alloc.h"
#include "wsuv_conn.h"

/* ---- helpers ------------------------------------------------------------ */

/* Allocator that counts live bytes, the peak, and the largest block. */
typedef struct {
  size_t live, peak, biggest;
  int fail_at; /* > 0: allocations from the fail_at-th on fail */
  int count;   /* allocations so far, failed ones included */
} counter_t;

static void *count_alloc(void *ud, void *ptr, size_t nsize) {
  counter_t *t = ud;
  size_t old = sized_size(ptr);
  if (nsize == 0) {
    t->live -= old;
    sized_free(ptr);
    return NULL;
  }
  if (++t->count >= t->fail_at && t->fail_at > 0) return NULL;
  void *p = sized_realloc(ptr, nsize);
  if (!p) return NULL;
  t->live = t->live - old + nsize;
  if (t->live > t->peak) t->peak = t->live;
  if (nsize > t->biggest) t->biggest = nsize;
  return p;
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
    char resp[WSUV_PMD_EXT_MAX] = "junk";
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
  /* The longest response (the fuzzer found it: 128 bytes were documented as
   * enough): all four parameters, 128 characters and the NUL. */
  request_with(&h, (const char *const[]){"permessage-deflate; "
                                         "client_max_window_bits=10; "
                                         "server_no_context_takeover",
                                         NULL});
  wsuv_pmd_options_t all = {.enabled = 1,
                            .client_no_context_takeover = 1,
                            .server_max_window_bits = 10};
  char longest[WSUV_PMD_EXT_MAX];
  CHECK_EQ_INT(wsuv_pmd_negotiate(&h.head, &all, &ag, longest, sizeof longest),
               1);
  CHECK_EQ_INT(strlen(longest), 128);
  CHECK_EQ_INT(wsuv_pmd_negotiate(&h.head, &all, &ag, longest, 128),
               WSUV_ENOBUFS);
  request_with(&h, (const char *const[]){"permessage-deflate", NULL});
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
  int first = 1, ok = 1;
  do {
    size_t take = frag && n - off > frag ? frag : n - off;
    int fin = off + take == n;
    const uint8_t *out;
    unsigned rsv;
    unsigned flags = (first ? WSUV_SEND_FIRST | extra : 0) |
                     (fin ? (unsigned)WSUV_SEND_FIN : 0);
    ssize_t len = wsuv_conn_compress(s, msg + off, take, flags, &out, &rsv);
    if (len < 0) {
      ok = 0;
      break;
    }
    if (first) first_rsv = rsv;
    ok = ok && (first || rsv == 0);
    uint8_t hdr[WSUV_MAX_FRAME_HEADER], key[4];
    ssize_t h =
        wsuv_conn_build_header(s, hdr, first ? opcode : WSUV_OP_CONT,
                               (fin ? WSUV_FIN : 0) | rsv, (uint64_t)len, key);
    ok = ok && h > 0;
    if (h <= 0) break;
    put_bytes(wire, hdr, (size_t)h);
    size_t at = wire->len;
    put_bytes(wire, out, (size_t)len);
    if (s->role == WSUV_ROLE_CLIENT)
      wsuv_mask(wire->p + at, (size_t)len, key, 0);
    off += take;
    first = 0;
  } while (off < n);
  /* RSV1 on the first frame only; every part accepted. */
  CHECK(ok);
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
  static const size_t sizes[] = {0, 5, 31, 32, 200, 5000, 70000};
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
  /* Text at or over the threshold (32) is compressed. */
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

/* ---- RFC 7692 7.2.3: the RFC's own bytes --------------------------------- */

static const wsuv_pmd_params_t takeover = {0, 0, 15, 15};

/* Feeds unmasked server frames (bytes) to a fresh client-role connection
 * under ag and returns what it received. */
static void client_receives(const wsuv_pmd_params_t *ag, int stream,
                            const char *bytes, size_t n, size_t chunk,
                            rx_t *r) {
  peer_t p;
  CHECK_EQ_INT(peer_init(&p, WSUV_ROLE_CLIENT, ag, NULL, 0, stream), 0);
  memset(r, 0, sizeof *r);
  drive(&p.c, (const uint8_t *)bytes, n, chunk, stream, r);
  CHECK_EQ_INT(r->bad, 0);
  peer_free(&p);
}

static int got(const rx_t *r, int i, const char *text) {
  size_t n = strlen(text);
  return r->n > i && r->msgs[i].len == n &&
         (n == 0 || memcmp(r->msgs[i].p, text, n) == 0) &&
         r->types[i] == WSUV_EV_TEXT;
}

static void test_rfc_examples(void) {
  static const struct {
    const char *bytes;
    size_t len;
    int count;
  } ok[] = {
      /* 7.2.3.1: "Hello" in one compressed frame, then fragmented. */
      {"\xc1\x07\xf2\x48\xcd\xc9\xc9\x07\x00", 9, 1},
      {"\x41\x03\xf2\x48\xcd\x80\x04\xc9\xc9\x07\x00", 11, 1},
      /* 7.2.3.2: the second "Hello" refers back into the first. */
      {"\xc1\x07\xf2\x48\xcd\xc9\xc9\x07\x00\xc1\x05\xf2\x00\x11\x00\x00", 16,
       2},
      /* 7.2.3.3: a stored (no compression) block. */
      {"\xc1\x0b\x00\x05\x00\xfa\xff\x48\x65\x6c\x6c\x6f\x00", 13, 1},
      /* 7.2.3.4: a final block and the header byte after it; the window
       * survives it, so the 7.2.3.2 message that follows inflates too. */
      {"\xc1\x08\xf3\x48\xcd\xc9\xc9\x07\x00\x00\xc1\x05\xf2\x00\x11\x00\x00",
       17, 2},
      /* The same without the trailing header byte, as some senders do. */
      {"\xc1\x07\xf3\x48\xcd\xc9\xc9\x07\x00", 9, 1},
      /* 7.2.3.5: two blocks in one message. */
      {"\xc1\x0d\xf2\x48\x05\x00\x00\x00\xff\xff\xca\xc9\xc9\x07\x00", 15, 1},
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    for (int stream = 0; stream < 2; stream++) {
      for (size_t chunk = 0; chunk < 3; chunk++) {
        rx_t r;
        client_receives(&takeover, stream, ok[i].bytes, ok[i].len, chunk, &r);
        CHECK_EQ_INT(r.err, 0);
        CHECK_EQ_INT(r.n, ok[i].count);
        for (int k = 0; k < ok[i].count; k++) {
          CHECK(got(&r, k, "Hello"));
          CHECK(r.compressed[k]);
        }
        rx_free(&r);
      }
    }
  }
  /* 7.2.3.6: the empty block byte is an empty message. */
  rx_t r;
  client_receives(&takeover, 0, "\xc1\x01\x00", 3, 0, &r);
  CHECK(got(&r, 0, ""));
  rx_free(&r);
  client_receives(&takeover, 1, "\xc1\x01\x00", 3, 0, &r);
  CHECK(got(&r, 0, ""));
  rx_free(&r);
  /* A server that agreed to no context takeover must not refer back. */
  wsuv_pmd_params_t reset = {1, 0, 15, 15};
  client_receives(
      &reset, 0,
      "\xc1\x07\xf2\x48\xcd\xc9\xc9\x07\x00\xc1\x05\xf2\x00\x11\x00\x00", 16, 0,
      &r);
  CHECK(got(&r, 0, "Hello"));
  CHECK_EQ_INT(r.err, WSUV_EDEFLATE);
  CHECK_EQ_INT(r.close_code, 1007);
  rx_free(&r);

  /* Our compressor gives the RFC's bytes: 7.2.3.1 and 7.2.3.2. Without
   * context takeover the 7 bytes do not beat "Hello" itself, so it goes
   * plain (the next message cannot miss it in the window). */
  wsuv_pmd_options_t all = {.enabled = 1, .threshold = 1};
  for (int nct = 0; nct < 2; nct++) {
    wsuv_pmd_params_t ag = {(uint8_t)nct, 0, 15, 15};
    peer_t s;
    CHECK_EQ_INT(peer_init(&s, WSUV_ROLE_SERVER, &ag, &all, 0, 0), 0);
    bytes_t wire = {0};
    CHECK_EQ_INT(
        send_msg(&s.c, &wire, WSUV_OP_TEXT, (const uint8_t *)"Hello", 5, 0, 0),
        nct ? 0 : WSUV_RSV1);
    send_msg(&s.c, &wire, WSUV_OP_TEXT, (const uint8_t *)"Hello", 5, 0, 0);
    const char *want =
        nct ? "\x81\x05Hello\x81\x05Hello"
            : "\xc1\x07\xf2\x48\xcd\xc9\xc9\x07\x00\xc1\x05\xf2\x00\x11\x00"
              "\x00";
    CHECK_EQ_INT(wire.len, nct ? 14 : 16);
    CHECK(wire.len >= 14 && memcmp(wire.p, want, wire.len) == 0);
    /* An empty message sent in two empty parts ends as the byte 00. */
    wire.len = 0;
    const uint8_t *out;
    unsigned rsv;
    CHECK_EQ_INT(wsuv_conn_compress(&s.c, NULL, 0, WSUV_SEND_FIRST, &out, &rsv),
                 0);
    CHECK_EQ_INT(rsv, WSUV_RSV1);
    CHECK_EQ_INT(wsuv_conn_compress(&s.c, NULL, 0, WSUV_SEND_FIN, &out, &rsv),
                 1);
    CHECK_EQ_INT(out[0], 0);
    CHECK_EQ_INT(rsv, 0);
    free(wire.p);
    peer_free(&s);
  }
  /* The same straight from the compressor, with an empty message. */
  wsuv_deflate_t d;
  const uint8_t *out;
  CHECK_EQ_INT(wsuv_deflate_init(&d, WSUV_ROLE_SERVER, &takeover, NULL, NULL),
               0);
  CHECK_EQ_INT(wsuv_deflate_compress(&d, NULL, 0, 1, &out), 1);
  CHECK_EQ_INT(out[0], 0);
  CHECK_EQ_INT(wsuv_deflate_compress(&d, (const uint8_t *)"Hello", 5, 1, &out),
               7);
  CHECK_MEM(out, "\xf2\x48\xcd\xc9\xc9\x07\x00", 7);
  CHECK_EQ_INT(wsuv_deflate_compress(&d, NULL, 0, 1, &out), 1);
  CHECK_EQ_INT(out[0], 0);
  /* Parts of one message: a non-final part keeps its sync marker. */
  ssize_t n = wsuv_deflate_compress(&d, (const uint8_t *)"Hel", 3, 0, &out);
  CHECK(n >= 4 && memcmp(out + n - 4, "\x00\x00\xff\xff", 4) == 0);
  CHECK_EQ_INT(wsuv_deflate_compress(&d, NULL, 0, 0, &out), 0);
  CHECK(wsuv_deflate_compress(&d, (const uint8_t *)"lo", 2, 1, &out) > 0);
  wsuv_deflate_free(&d);
}

/* ---- bombs and limits -----------------------------------------------------
 */

/* Compresses n zero bytes at level 9 as one message (about n / 1000). */
static bytes_t zeros_compressed(size_t n) {
  wsuv_pmd_options_t o = {.enabled = 1, .level = 9};
  wsuv_deflate_t d;
  CHECK_EQ_INT(wsuv_deflate_init(&d, WSUV_ROLE_CLIENT, &takeover, &o, NULL), 0);
  uint8_t *zeros = calloc(1, n);
  const uint8_t *out;
  ssize_t len = wsuv_deflate_compress(&d, zeros, n, 1, &out);
  CHECK(len > 0);
  bytes_t b = {0};
  put_bytes(&b, out, (size_t)len);
  free(zeros);
  wsuv_deflate_free(&d);
  return b;
}

/* A client's frame (masked, zero key) with payload p. */
static bytes_t client_frame(unsigned first_byte, const uint8_t *p, size_t n) {
  uint8_t hdr[WSUV_MAX_FRAME_HEADER];
  size_t h = wsuv_frame_build_header(hdr, first_byte & 0xf0u, first_byte & 0xfu,
                                     n, (const uint8_t *)"\0\0\0\0");
  bytes_t b = {0};
  put_bytes(&b, hdr, h);
  put_bytes(&b, p, n);
  return b;
}

static void bomb(size_t inflated, uint64_t limit, int stream, size_t frag) {
  bytes_t z = zeros_compressed(inflated);
  bytes_t wire = {0};
  /* Fragments: RSV1 on the first only. */
  for (size_t off = 0; off < z.len || off == 0;) {
    size_t take = frag && z.len - off > frag ? frag : z.len - off;
    int first = off == 0, fin = off + take == z.len;
    unsigned b = (fin ? 0x80u : 0) | (first ? 0x40u | WSUV_OP_BINARY : 0);
    bytes_t f = client_frame(b, z.p + off, take);
    put_bytes(&wire, f.p, f.len);
    free(f.p);
    off += take;
    if (fin) break;
  }
  peer_t s;
  CHECK_EQ_INT(peer_init(&s, WSUV_ROLE_SERVER, &takeover, NULL, limit, stream),
               0);
  rx_t r = {0};
  drive(&s.c, wire.p, wire.len, 0, stream, &r);
  CHECK_EQ_INT(r.err, WSUV_ETOOBIG);
  CHECK_EQ_INT(r.close_code, 1009);
  CHECK_EQ_INT(r.n, 0);
  /* Nothing beyond the limit was allocated: the message storage stops at
   * it (streamed: at one chunk), and zlib holds its 32 KiB window, its
   * state and the connection's own bookkeeping (under 48 KiB). */
  size_t buf = stream ? WSUV_CONN_INFLATE_CHUNK : (size_t)limit;
  CHECK(s.mem.biggest <= (buf > 40000 ? buf : 40000));
  CHECK(s.mem.peak <= buf + 48 * 1024);
  if (s.mem.peak > buf + 48 * 1024)
    fprintf(stderr, "  bomb peak %zu for limit %zu\n", s.mem.peak,
            (size_t)limit);
  uint8_t out[WSUV_CONN_OUTPUT_MAX];
  CHECK_EQ_INT(wsuv_conn_take_output(&s.c, out, sizeof out), 4);
  CHECK_MEM(out, "\x88\x02\x03\xf1", 4);
  rx_free(&r);
  free(z.p);
  free(wire.p);
  peer_free(&s);
}

static void test_bombs(void) {
  /* About 1 KiB on the wire, 1 MiB inflated, 64 KiB allowed. */
  bytes_t z = zeros_compressed(1 << 20);
  printf("bomb: 1 MiB of zeros compresses to %zu bytes\n", z.len);
  CHECK(z.len < 1200);
  free(z.p);
  bomb(1 << 20, 64 * 1024, 0, 0);
  bomb(1 << 20, 64 * 1024, 1, 0);
  bomb(1 << 20, 64 * 1024, 0, 100);
  bomb(1 << 20, 64 * 1024, 1, 100);
  /* 16 MiB inflated from about 16 KiB, 1 MiB allowed. */
  bomb(16 << 20, 1 << 20, 0, 0);
  bomb(16 << 20, 1 << 20, 1, 4096);
  /* A limit under the default chunk. */
  bomb(1 << 20, 1000, 1, 0);

  /* Exactly at the limit passes; one byte over fails, in both modes. */
  for (int stream = 0; stream < 2; stream++) {
    for (int over = 0; over < 2; over++) {
      size_t limit = 40000;
      bytes_t c = zeros_compressed(limit + (size_t)over);
      bytes_t f = client_frame(0xc2, c.p, c.len);
      peer_t s;
      CHECK_EQ_INT(
          peer_init(&s, WSUV_ROLE_SERVER, &takeover, NULL, limit, stream), 0);
      rx_t r = {0};
      drive(&s.c, f.p, f.len, 0, stream, &r);
      CHECK_EQ_INT(r.err, over ? WSUV_ETOOBIG : 0);
      CHECK_EQ_INT(r.n, over ? 0 : 1);
      if (!over) CHECK_EQ_INT(r.msgs[0].len, limit);
      CHECK(s.mem.biggest <= limit);
      rx_free(&r);
      free(c.p);
      free(f.p);
      peer_free(&s);
    }
  }
  /* On the wire, checked at the frame header: a plain message over the limit
   * fails; a compressed one that inflates under it passes although deflate
   * made it larger (incompressible data stored: 5 bytes of block header
   * more), and one past what a message of the limit may take deflated (an
   * eighth more, and 64 bytes) fails before any of it is inflated. */
  uint8_t plain[101] = {0};
  plain[0] = 0x01; /* a final stored block of 96 bytes */
  plain[1] = 96;
  plain[3] = (uint8_t)~96;
  plain[4] = 0xff;
  uint8_t big[182] = {0}; /* over 100 + 100 / 8 + 64 = 176 */
  for (int i = 0; i < 6; i++) {
    int stream = i & 1, kind = i >> 1; /* plain, compressed, compressed big */
    bytes_t f = kind == 2
                    ? client_frame(0xc2, big, sizeof big)
                    : client_frame(kind ? 0xc2 : 0x82, plain, sizeof plain);
    peer_t s;
    CHECK_EQ_INT(peer_init(&s, WSUV_ROLE_SERVER, &takeover, NULL, 100, stream),
                 0);
    rx_t r = {0};
    drive(&s.c, f.p, f.len, 0, stream, &r);
    if (kind == 1) {
      CHECK_EQ_INT(r.err, 0);
      CHECK_EQ_INT(r.n, 1);
      if (r.n == 1) CHECK_EQ_INT(r.msgs[0].len, 96);
    } else {
      CHECK_EQ_INT(r.err, WSUV_ETOOBIG);
      CHECK_EQ_INT(r.n, 0);
    }
    rx_free(&r);
    free(f.p);
    peer_free(&s);
  }
}

/* ---- corrupt data, RSV1 misuse, UTF-8 --------------------------------------
 */

typedef struct {
  const char *bytes;
  size_t len;
  int err, code;
} fail_case_t;

static void test_failures(void) {
  static const fail_case_t cases[] = {
      /* Block type 3 does not exist. */
      {"\xc1\x03\xff\xff\xff", 5, WSUV_EDEFLATE, 1007},
      /* Truncated: the message stops inside a block. */
      {"\xc1\x03\xf2\x48\xcd", 5, WSUV_EDEFLATE, 1007},
      /* A stored block whose lengths disagree. */
      {"\xc1\x05\x00\x05\x00\xfa\xfe", 7, WSUV_EDEFLATE, 1007},
      /* Two final blocks in a tiny message: the window copy they cost is
       * only allowed once per KiB of input. */
      {"\xc1\x04\x03\x00\x03\x00", 6, WSUV_EDEFLATE, 1007},
      /* RFC 7692 6.1: RSV1 on a continuation frame. */
      {"\x41\x03\xf2\x48\xcd\xc0\x04\xc9\xc9\x07\x00", 11, WSUV_EPROTO, 1002},
      /* RSV1 on a control frame, RSV2 on a data frame. */
      {"\xc9\x00", 2, WSUV_EPROTO, 1002},
      {"\xa1\x00", 2, WSUV_EPROTO, 1002},
      /* Uncompressed text is checked by the parser as before. */
      {"\x81\x02\xc0\xaf", 4, WSUV_EUTF8, 1007},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    for (int stream = 0; stream < 2; stream++) {
      rx_t r;
      client_receives(&takeover, stream, cases[i].bytes, cases[i].len, 0, &r);
      if (r.err != cases[i].err) fprintf(stderr, "  failure case %zu\n", i);
      CHECK_EQ_INT(r.err, cases[i].err);
      CHECK_EQ_INT(r.close_code, cases[i].code);
      rx_free(&r);
    }
  }
  /* Without permessage-deflate RSV1 stays a protocol error. */
  wsuv_conn_t c;
  wsuv_conn_config_t cfg = {.parser = {.role = WSUV_ROLE_CLIENT}};
  CHECK_EQ_INT(wsuv_conn_init(&c, &cfg), 0);
  CHECK(c.pmd == NULL);
  wsuv_event_t ev;
  uint8_t hello[] = "\xc1\x07\xf2\x48\xcd\xc9\xc9\x07\x00";
  CHECK_EQ_INT(wsuv_conn_feed(&c, hello, 9, &ev), WSUV_EPROTO);
  wsuv_conn_free(&c);

  /* The agreed window is what the inflater keeps between messages: a
   * message that refers 300 bytes back into the previous one inflates
   * under 9 window bits and fails under 8. (zlib does not check distances
   * that stay inside the output of one call, which is harmless: memory is
   * bounded by the caller's buffer either way.) */
  uint8_t *rnd = make_random(300, 7);
  wsuv_deflate_t d;
  const uint8_t *out;
  bytes_t wire = {0};
  CHECK_EQ_INT(wsuv_deflate_init(&d, WSUV_ROLE_SERVER, &takeover, NULL, NULL),
               0);
  for (int m = 0; m < 2; m++) {
    ssize_t n = wsuv_deflate_compress(&d, rnd, m ? 100 : 300, 1, &out);
    CHECK(n > 0 && (m == 0 || n < 20));
    uint8_t hdr[WSUV_MAX_FRAME_HEADER];
    size_t h =
        wsuv_frame_build_header(hdr, 0xc0, WSUV_OP_BINARY, (uint64_t)n, NULL);
    put_bytes(&wire, hdr, h);
    put_bytes(&wire, out, (size_t)n);
  }
  for (int bits = 8; bits <= 9; bits++) {
    wsuv_pmd_params_t ag = {0, 0, (uint8_t)bits, 15};
    peer_t p;
    CHECK_EQ_INT(peer_init(&p, WSUV_ROLE_CLIENT, &ag, NULL, 0, 0), 0);
    rx_t r = {0};
    drive(&p.c, wire.p, wire.len, 0, 0, &r);
    CHECK_EQ_INT(r.err, bits == 8 ? WSUV_EDEFLATE : 0);
    CHECK_EQ_INT(r.n, bits == 8 ? 1 : 2);
    if (r.n == 2) CHECK(memcmp(r.msgs[1].p, rnd, 100) == 0);
    rx_free(&r);
    peer_free(&p);
  }
  free(rnd);
  free(wire.p);
  wsuv_deflate_free(&d);
}

/* Sends msg as one compressed text message from a server with threshold 1,
 * and feeds it to a client. */
static void utf8_case(const char *text, size_t n, int stream, int want) {
  wsuv_pmd_options_t all = {.enabled = 1, .threshold = 1};
  peer_t s, c;
  CHECK_EQ_INT(peer_init(&s, WSUV_ROLE_SERVER, &takeover, &all, 0, 0), 0);
  CHECK_EQ_INT(peer_init(&c, WSUV_ROLE_CLIENT, &takeover, NULL, 0, stream), 0);
  bytes_t wire = {0};
  CHECK_EQ_INT(
      send_msg(&s.c, &wire, WSUV_OP_TEXT, (const uint8_t *)text, n, 0, 0),
      WSUV_RSV1);
  rx_t r = {0};
  drive(&c.c, wire.p, wire.len, 0, stream, &r);
  CHECK_EQ_INT(r.err, want);
  if (want) CHECK_EQ_INT(r.close_code, 1007);
  rx_free(&r);
  peer_free(&s);
  peer_free(&c);
  /* As binary the same bytes are fine. */
  wire.len = 0;
  CHECK_EQ_INT(peer_init(&s, WSUV_ROLE_SERVER, &takeover, &all, 0, 0), 0);
  CHECK_EQ_INT(peer_init(&c, WSUV_ROLE_CLIENT, &takeover, NULL, 0, stream), 0);
  send_msg(&s.c, &wire, WSUV_OP_BINARY, (const uint8_t *)text, n, 0, 0);
  drive(&c.c, wire.p, wire.len, 0, stream, &r);
  CHECK_EQ_INT(r.err, 0);
  CHECK(r.n == 1 && r.msgs[0].len == n);
  rx_free(&r);
  free(wire.p);
  peer_free(&s);
  peer_free(&c);
}

static void test_inflated_utf8(void) {
  for (int stream = 0; stream < 2; stream++) {
    utf8_case("ok \xc3\xa9", 5, stream, 0);
    utf8_case("overlong \xc0\xaf", 11, stream, WSUV_EUTF8);
    utf8_case("cut \xc3", 5, stream, WSUV_EUTF8);
    utf8_case("surrogate \xed\xa0\x80", 13, stream, WSUV_EUTF8);
    /* Invalid bytes far into a big message (streamed: a later chunk), and
     * a character split across two chunks. */
    size_t n = 3 * WSUV_CONN_INFLATE_CHUNK;
    char *big = malloc(n);
    memset(big, 'a', n);
    memcpy(big + WSUV_CONN_INFLATE_CHUNK - 1, "\xc3\xa9", 2);
    utf8_case(big, n, stream, 0);
    big[n - 100] = (char)0xff;
    utf8_case(big, n, stream, WSUV_EUTF8);
    free(big);
  }
}

/* ---- the streamed delivery contract ---------------------------------------
 */

static void test_stream_contract(void) {
  wsuv_pmd_options_t all = {.enabled = 1, .threshold = 1};
  peer_t s, c;
  CHECK_EQ_INT(peer_init(&s, WSUV_ROLE_SERVER, &takeover, &all, 0, 0), 0);
  CHECK_EQ_INT(peer_init(&c, WSUV_ROLE_CLIENT, &takeover, NULL, 0, 1), 0);
  size_t n = 100000;
  uint8_t *msg = make_text(n, 3);
  bytes_t wire = {0};
  send_msg(&s.c, &wire, WSUV_OP_TEXT, msg, n, 0, 0);
  size_t frame_len = wire.len;
  put_bytes(&wire, "\x89\x00", 2); /* a ping right after it */
  CHECK(frame_len < 20000);

  /* One buffer holds the frame: the calls return 0 with each chunk but the
   * last, which returns the frame's length; the ping comes next. */
  uint8_t *buf = malloc(wire.len);
  memcpy(buf, wire.p, wire.len);
  size_t total = 0, calls = 0;
  int first_seen = 0;
  wsuv_event_t ev;
  ssize_t k;
  for (;;) {
    k = wsuv_conn_feed(&c.c, buf, wire.len, &ev);
    calls++;
    CHECK_EQ_INT(ev.type, WSUV_EV_TEXT);
    CHECK(ev.len <= WSUV_CONN_INFLATE_CHUNK);
    CHECK_EQ_INT(ev.first, !first_seen);
    first_seen = 1;
    CHECK(ev.len == 0 || memcmp(ev.data, msg + total, ev.len) == 0);
    total += ev.len;
    if (k != 0 || ev.fin || calls > 100) break;
  }
  CHECK_EQ_INT(k, frame_len);
  CHECK(ev.fin);
  CHECK_EQ_INT(total, n);
  CHECK_EQ_INT(calls,
               (n + WSUV_CONN_INFLATE_CHUNK - 1) / WSUV_CONN_INFLATE_CHUNK);
  CHECK_EQ_INT(wsuv_conn_feed(&c.c, buf + k, wire.len - (size_t)k, &ev), 2);
  CHECK_EQ_INT(ev.type, WSUV_EV_PING);

  /* Another buffer while output is owed is refused. */
  memcpy(buf, wire.p, wire.len);
  CHECK_EQ_INT(wsuv_conn_feed(&c.c, buf, frame_len, &ev), 0);
  CHECK_EQ_INT(ev.type, WSUV_EV_TEXT);
  uint8_t other[4] = {0x89, 0};
  CHECK_EQ_INT(wsuv_conn_feed(&c.c, other, 2, &ev), WSUV_EINVAL);
  CHECK_EQ_INT(c.c.state, WSUV_STATE_CLOSED);
  free(buf);
  free(msg);
  free(wire.p);
  peer_free(&s);
  peer_free(&c);
}

/* ---- sending
 * ------------------------------------------------------------------ */

static void test_send_rules(void) {
  peer_t s;
  const uint8_t *out;
  unsigned rsv;
  uint8_t *text = make_text(1000, 1);
  CHECK_EQ_INT(peer_init(&s, WSUV_ROLE_SERVER, &takeover, NULL, 0, 0), 0);
  /* Under the threshold: plain. */
  size_t under = WSUV_PMD_DEFAULT_THRESHOLD - 1;
  CHECK_EQ_INT(wsuv_conn_compress(&s.c, text, under,
                                  WSUV_SEND_FIRST | WSUV_SEND_FIN, &out, &rsv),
               under);
  CHECK(out == text && rsv == 0);
  /* At it: compressed, RSV1. */
  ssize_t n = wsuv_conn_compress(&s.c, text, WSUV_PMD_DEFAULT_THRESHOLD,
                                 WSUV_SEND_FIRST | WSUV_SEND_FIN, &out, &rsv);
  CHECK(n > 0 && out != text && rsv == WSUV_RSV1);
  n = wsuv_conn_compress(&s.c, text, 1000, WSUV_SEND_FIRST | WSUV_SEND_FIN,
                         &out, &rsv);
  CHECK(n > 0 && n < 1000 && out != text && rsv == WSUV_RSV1);
  /* Per message: plain on request, for all its parts. */
  CHECK_EQ_INT(wsuv_conn_compress(&s.c, text, 500,
                                  WSUV_SEND_FIRST | WSUV_SEND_PLAIN, &out,
                                  &rsv),
               500);
  CHECK(out == text && rsv == 0);
  CHECK_EQ_INT(wsuv_conn_compress(&s.c, text, 500, WSUV_SEND_FIN, &out, &rsv),
               500);
  CHECK(out == text && rsv == 0);
  /* Parts out of order. */
  CHECK_EQ_INT(wsuv_conn_compress(&s.c, text, 5, WSUV_SEND_FIN, &out, &rsv),
               WSUV_ESTATE);
  CHECK(wsuv_conn_compress(&s.c, text, 500, WSUV_SEND_FIRST, &out, &rsv) > 0);
  CHECK_EQ_INT(rsv, WSUV_RSV1);
  CHECK_EQ_INT(wsuv_conn_compress(&s.c, text, 5, WSUV_SEND_FIRST, &out, &rsv),
               WSUV_ESTATE);
  CHECK(wsuv_conn_compress(&s.c, text, 500, WSUV_SEND_FIN, &out, &rsv) > 0);
  CHECK_EQ_INT(rsv, 0);
  /* RSV bits in headers: RSV1 on data frames of a pmd connection only. */
  uint8_t hdr[WSUV_MAX_FRAME_HEADER], key[4];
  CHECK_EQ_INT(wsuv_conn_build_header(&s.c, hdr, WSUV_OP_TEXT,
                                      WSUV_FIN | WSUV_RSV1, 5, key),
               2);
  CHECK_EQ_INT(hdr[0], 0xc1);
  CHECK_EQ_INT(wsuv_conn_build_header(&s.c, hdr, WSUV_OP_PING,
                                      WSUV_FIN | WSUV_RSV1, 0, key),
               WSUV_EINVAL);
  CHECK_EQ_INT(
      wsuv_conn_build_header(&s.c, hdr, WSUV_OP_CONT, WSUV_RSV1, 0, key),
      WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_conn_build_header(&s.c, hdr, WSUV_OP_TEXT,
                                      WSUV_FIN | WSUV_RSV2, 0, key),
               WSUV_EINVAL);
  /* After our close, nothing more. */
  CHECK_EQ_INT(wsuv_conn_close(&s.c, 1000, "", 0), 0);
  uint8_t buf[WSUV_CONN_OUTPUT_MAX];
  CHECK(wsuv_conn_take_output(&s.c, buf, sizeof buf) > 0);
  CHECK_EQ_INT(wsuv_conn_compress(&s.c, text, 100,
                                  WSUV_SEND_FIRST | WSUV_SEND_FIN, &out, &rsv),
               WSUV_ECLOSED);
  peer_free(&s);

  /* Without pmd: the input itself, and RSV1 refused in headers. */
  wsuv_conn_t c;
  wsuv_conn_config_t cfg = {.parser = {.role = WSUV_ROLE_SERVER}};
  wsuv_conn_init(&c, &cfg);
  CHECK_EQ_INT(wsuv_conn_compress(&c, text, 1000,
                                  WSUV_SEND_FIRST | WSUV_SEND_FIN, &out, &rsv),
               1000);
  CHECK(out == text && rsv == 0);
  CHECK_EQ_INT(wsuv_conn_build_header(&c, hdr, WSUV_OP_TEXT,
                                      WSUV_FIN | WSUV_RSV1, 5, key),
               WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_conn_pmd_memory(&c), 0);
  wsuv_conn_free(&c);

  /* Data that does not shrink goes plain when the window is not carried
   * over, and compressed when it is (the peer's window needs it). */
  uint8_t *rnd = make_random(1000, 9);
  for (int nct = 0; nct < 2; nct++) {
    wsuv_pmd_params_t ag = {(uint8_t)nct, 0, 15, 15};
    CHECK_EQ_INT(peer_init(&s, WSUV_ROLE_SERVER, &ag, NULL, 0, 0), 0);
    n = wsuv_conn_compress(&s.c, rnd, 1000, WSUV_SEND_FIRST | WSUV_SEND_FIN,
                           &out, &rsv);
    if (nct) {
      CHECK(n == 1000 && out == rnd && rsv == 0);
    } else {
      CHECK(n > 1000 && rsv == WSUV_RSV1);
    }
    peer_free(&s);
  }
  free(rnd);
  free(text);
}

/* ---- memory ---------------------------------------------------------------
 */

/* zlib memory of one stream each way after a message, with context
 * takeover so that the streams stay. */
static void memory_row(int bits, int mem_level) {
  wsuv_pmd_params_t ag = {0, 0, (uint8_t)bits, (uint8_t)bits};
  wsuv_pmd_options_t o = {.enabled = 1, .mem_level = mem_level};
  wsuv_deflate_t d;
  wsuv_inflate_t z;
  const uint8_t *out;
  uint8_t *text = make_text(4000, 5);
  CHECK_EQ_INT(wsuv_deflate_init(&d, WSUV_ROLE_SERVER, &ag, &o, NULL), 0);
  CHECK_EQ_INT(wsuv_inflate_init(&z, WSUV_ROLE_CLIENT, &ag, NULL), 0);
  CHECK_EQ_INT(wsuv_deflate_memory(&d), 0);
  ssize_t n = wsuv_deflate_compress(&d, text, 4000, 1, &out);
  CHECK(n > 0);
  CHECK_EQ_INT(wsuv_inflate_feed(&z, out, (size_t)n, 1), 0);
  uint8_t back[4000];
  size_t have = 0;
  ssize_t k;
  while ((k = wsuv_inflate_pull(&z, back + have, sizeof back - have)) > 0)
    have += (size_t)k;
  CHECK_EQ_INT(have, 4000);
  CHECK(memcmp(back, text, 4000) == 0);
  size_t dm = wsuv_deflate_memory(&d), im = wsuv_inflate_memory(&z);
  /* zlib's own formulas (zconf.h), plus state and our block headers. */
  int zbits = bits == 8 ? 9 : bits;
  size_t dformula = ((size_t)1 << (zbits + 2)) + ((size_t)1 << (mem_level + 9));
  CHECK(dm >= dformula && dm <= dformula + 8192);
  CHECK(im >= ((size_t)1 << bits) && im <= ((size_t)1 << bits) + 8192);
  printf("pmd memory: window bits %2d, memLevel %d: deflate %7zu bytes, "
         "inflate %6zu bytes\n",
         bits, mem_level, dm, im);
  wsuv_deflate_free(&d);
  wsuv_inflate_free(&z);
  free(text);
}

static void test_memory(void) {
  memory_row(15, 8);
  memory_row(15, 4);
  memory_row(12, 5);
  memory_row(10, 8);
  memory_row(10, 1);
  memory_row(9, 8);
  memory_row(9, 1);
  memory_row(8, 1);

  /* Without context takeover: the deflate stream is reset after a message
   * and freed by trim; the inflate stream is freed after each message. */
  wsuv_pmd_params_t none = {1, 1, 15, 15};
  wsuv_deflate_t d;
  wsuv_inflate_t z;
  const uint8_t *out;
  CHECK_EQ_INT(wsuv_deflate_init(&d, WSUV_ROLE_CLIENT, &none, NULL, NULL), 0);
  CHECK_EQ_INT(wsuv_inflate_init(&z, WSUV_ROLE_SERVER, &none, NULL), 0);
  ssize_t n = wsuv_deflate_compress(&d, (const uint8_t *)"Hello", 5, 1, &out);
  CHECK_EQ_INT(n, 7);
  CHECK(wsuv_deflate_memory(&d) > 256 * 1024);
  CHECK_EQ_INT(wsuv_inflate_feed(&z, out, (size_t)n, 1), 0);
  uint8_t back[8];
  CHECK_EQ_INT(wsuv_inflate_pull(&z, back, sizeof back), 5);
  CHECK_EQ_INT(wsuv_inflate_memory(&z), 0);
  wsuv_deflate_trim(&d);
  CHECK_EQ_INT(wsuv_deflate_memory(&d), 0);
  CHECK(d.out == NULL);
  CHECK_EQ_INT(wsuv_deflate_compress(&d, (const uint8_t *)"Hello", 5, 1, &out),
               7);
  CHECK_MEM(out, "\xf2\x48\xcd\xc9\xc9\x07\x00", 7);
  wsuv_deflate_free(&d);
  wsuv_inflate_free(&z);

  /* Whole connections after one message each way: with context takeover
   * the streams stay; without, an idle connection holds no zlib memory. */
  for (int nct = 0; nct < 2; nct++) {
    wsuv_pmd_params_t ag = {(uint8_t)nct, (uint8_t)nct, 15, 15};
    peer_t s, c;
    CHECK_EQ_INT(peer_init(&s, WSUV_ROLE_SERVER, &ag, NULL, 0, 0), 0);
    CHECK_EQ_INT(peer_init(&c, WSUV_ROLE_CLIENT, &ag, NULL, 0, 0), 0);
    size_t idle = wsuv_conn_pmd_memory(&s.c);
    uint8_t *text = make_text(2000, 8);
    bytes_t a = {0}, b = {0};
    send_msg(&s.c, &a, WSUV_OP_TEXT, text, 2000, 0, 0);
    send_msg(&c.c, &b, WSUV_OP_TEXT, text, 2000, 0, 0);
    rx_t r = {0};
    drive(&c.c, a.p, a.len, 0, 0, &r);
    drive(&s.c, b.p, b.len, 0, 0, &r);
    CHECK_EQ_INT(r.n, 2);
    size_t used = wsuv_conn_pmd_memory(&s.c);
    wsuv_conn_trim(&s.c);
    size_t trimmed = wsuv_conn_pmd_memory(&s.c);
    CHECK(trimmed <= used);
    /* Both zlib streams (over 256 KiB) stay with takeover, none without. */
    CHECK(nct ? trimmed == idle : trimmed > 256 * 1024);
    CHECK_EQ_INT(s.mem.live, trimmed);
    printf("pmd memory per connection (%s): %zu bytes before any message, "
           "%zu after one each way, %zu after wsuv_conn_trim\n",
           nct ? "no context takeover" : "context takeover", idle, used,
           trimmed);
    rx_free(&r);
    free(a.p);
    free(b.p);
    free(text);
    peer_free(&s);
    peer_free(&c);
  }
}

/* ---- initialisation and allocation failures --------------------------------
 */

static void test_init_failures(void) {
  peer_t p;
  wsuv_pmd_params_t bad = {0, 0, 7, 15};
  CHECK_EQ_INT(peer_init(&p, WSUV_ROLE_SERVER, &bad, NULL, 0, 0), WSUV_EINVAL);
  CHECK(p.c.pmd == NULL);
  peer_free(&p);
  wsuv_pmd_options_t lvl = {.enabled = 1, .level = 10};
  CHECK_EQ_INT(peer_init(&p, WSUV_ROLE_SERVER, &takeover, &lvl, 0, 0),
               WSUV_EINVAL);
  peer_free(&p);
  /* The small pmd state is the one allocation at init. */
  memset(&p, 0, sizeof p);
  p.mem.fail_at = 1;
  wsuv_conn_config_t cfg1 = {
      .parser = {.role = WSUV_ROLE_SERVER, .alloc = counting(&p.mem)},
      .pmd = &takeover};
  CHECK_EQ_INT(wsuv_conn_init(&p.c, &cfg1), WSUV_ENOMEM);
  CHECK(p.c.pmd == NULL);
  peer_free(&p);
  /* Any later allocation failing (zlib's, the message's): ENOMEM with
   * close code 1011 and nothing leaked; from some count on, the message
   * goes through. */
  bytes_t z = zeros_compressed(100000);
  bytes_t f = client_frame(0xc2, z.p, z.len);
  int ok = 0;
  for (int k = 1; k < 20 && !ok; k++) {
    memset(&p, 0, sizeof p);
    wsuv_conn_config_t cfg = {
        .parser = {.role = WSUV_ROLE_SERVER, .alloc = counting(&p.mem)},
        .pmd = &takeover};
    p.mem.fail_at = k;
    if (wsuv_conn_init(&p.c, &cfg) != 0) {
      wsuv_conn_free(&p.c);
      continue;
    }
    rx_t r = {0};
    drive(&p.c, f.p, f.len, 0, 0, &r);
    if (r.err) {
      CHECK_EQ_INT(r.err, WSUV_ENOMEM);
      CHECK_EQ_INT(r.close_code, 1011);
    } else {
      ok = r.n == 1 && r.msgs[0].len == 100000;
    }
    rx_free(&r);
    wsuv_conn_free(&p.c);
    CHECK_EQ_INT(p.mem.live, 0);
  }
  CHECK(ok);
  free(z.p);
  free(f.p);

  /* The inflater on its own: input while earlier input is pending, and a
   * zero-sized pull. */
  wsuv_inflate_t in;
  CHECK_EQ_INT(wsuv_inflate_init(&in, WSUV_ROLE_CLIENT, &takeover, NULL), 0);
  CHECK(!wsuv_inflate_busy(&in));
  CHECK_EQ_INT(wsuv_inflate_feed(&in, (const uint8_t *)"\xf2\x48\xcd", 3, 0),
               0);
  CHECK(wsuv_inflate_busy(&in));
  CHECK_EQ_INT(wsuv_inflate_feed(&in, (const uint8_t *)"x", 1, 1), WSUV_ESTATE);
  uint8_t o[8];
  CHECK_EQ_INT(wsuv_inflate_pull(&in, o, 0), WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_inflate_pull(&in, o, 1), 1);
  CHECK_EQ_INT(o[0], 'H');
  ssize_t k = wsuv_inflate_pull(&in, o, sizeof o);
  CHECK(k >= 0);
  CHECK_EQ_INT(wsuv_inflate_pull(&in, o, sizeof o), 0);
  CHECK(!wsuv_inflate_busy(&in));
  CHECK_EQ_INT(
      wsuv_inflate_feed(&in, (const uint8_t *)"\xc9\xc9\x07\x00", 4, 1), 0);
  size_t have = 1 + (size_t)k;
  while ((k = wsuv_inflate_pull(&in, o, 1)) > 0)
    have++;
  CHECK_EQ_INT(have, 5);
  CHECK(!wsuv_inflate_busy(&in));
  wsuv_inflate_free(&in);

  /* Any prefix of a stream gives the same output before more input comes,
   * whatever the pull size: zlib may hold decoded output after taking all
   * input, and must be asked for it (the fuzzer found that). */
  uint8_t *text = make_text(3000, 4);
  wsuv_deflate_t d;
  const uint8_t *zp;
  CHECK_EQ_INT(wsuv_deflate_init(&d, WSUV_ROLE_SERVER, &takeover, NULL, NULL),
               0);
  ssize_t zn = wsuv_deflate_compress(&d, text, 3000, 1, &zp);
  CHECK(zn > 8);
  uint8_t *back = malloc(3000);
  for (size_t cut = 1; cut < (size_t)zn; cut += 1 + cut / 4) {
    size_t want = 0;
    for (size_t cap = 4096; cap >= 1; cap /= 8) {
      CHECK_EQ_INT(wsuv_inflate_init(&in, WSUV_ROLE_CLIENT, &takeover, NULL),
                   0);
      CHECK_EQ_INT(wsuv_inflate_feed(&in, zp, cut, 0), 0);
      have = 0;
      while (have < 3000 &&
             (k = wsuv_inflate_pull(&in, back + have,
                                    cap < 3000 - have ? cap : 3000 - have)) > 0)
        have += (size_t)k;
      if (cap == 4096) want = have;
      CHECK_EQ_INT(have, want);
      CHECK(memcmp(back, text, have) == 0);
      wsuv_inflate_free(&in);
    }
  }
  free(back);
  wsuv_deflate_free(&d);
  free(text);
}

int main(void) {
  test_server_negotiation();
  test_client_offer();
  test_client_response();
  test_rfc_examples();
  test_roundtrips();
  test_bombs();
  test_failures();
  test_inflated_utf8();
  test_stream_contract();
  test_send_rules();
  test_memory();
  test_init_failures();
  return TEST_REPORT();
}
