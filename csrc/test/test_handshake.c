/* test_handshake.c: HTTP head parser, handshake checks and builders
 * (RFC 6455 1.3, 4.1, 4.2; RFC 7230 3). Every parse runs on an exactly sized
 * heap copy of its input, so ASan reports any read past len. */
#include "wsuv.h"
#include "test.h"

#include <stdlib.h>

#define CAP 32

static const char RFC_REQUEST[] =
    "GET /chat HTTP/1.1\r\n"
    "Host: server.example.com\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Origin: http://example.com\r\n"
    "Sec-WebSocket-Protocol: chat, superchat\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "\r\n";

static const char RFC_RESPONSE[] =
    "HTTP/1.1 101 Switching Protocols\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    "Sec-WebSocket-Protocol: chat\r\n"
    "\r\n";

static const char RFC_KEY[] = "dGhlIHNhbXBsZSBub25jZQ==";
static const char RFC_ACCEPT[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/* Parsed heads keep pointers into their input, so each test owns one. */
typedef struct {
  char *buf;
  wsuv_header_t headers[CAP];
  wsuv_http_head_t head;
} parsed_t;

static ssize_t parse_n(parsed_t *p, const char *s, size_t len, size_t max_head,
                       size_t cap, int request) {
  free(p->buf);
  p->buf = malloc(len ? len : 1);
  if (len) memcpy(p->buf, s, len);
  memset(&p->head, 0, sizeof p->head);
  p->head.headers = p->headers;
  p->head.num_headers = cap;
  return request ? wsuv_http_parse_request(p->buf, len, max_head, &p->head)
                 : wsuv_http_parse_response(p->buf, len, max_head, &p->head);
}

static ssize_t parse_req(parsed_t *p, const char *s) {
  return parse_n(p, s, strlen(s), 0, CAP, 1);
}

static ssize_t parse_res(parsed_t *p, const char *s) {
  return parse_n(p, s, strlen(s), 0, CAP, 0);
}

static int span_is(const char *p, size_t n, const char *s) {
  return p != NULL && n == strlen(s) && memcmp(p, s, n) == 0;
}

static int header_is(const wsuv_http_head_t *h, size_t k, const char *name,
                     const char *value) {
  return k < h->num_headers &&
         span_is(h->headers[k].name, h->headers[k].name_len, name) &&
         span_is(h->headers[k].value, h->headers[k].value_len, value);
}

static void test_accept_key(void) {
  char out[29];
  CHECK_EQ_INT(wsuv_accept_key(RFC_KEY, strlen(RFC_KEY), out), 0);
  CHECK(strcmp(out, RFC_ACCEPT) == 0);
  CHECK_EQ_INT(wsuv_accept_key(RFC_KEY, 0, out), WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_accept_key(NULL, 24, out), WSUV_EINVAL);
  char big[200];
  memset(big, 'A', sizeof big);
  CHECK_EQ_INT(wsuv_accept_key(big, sizeof big, out), WSUV_EINVAL);

  /* RFC 6455 4.1's example nonce bytes 0x01..0x10. */
  uint8_t nonce[16];
  for (int i = 0; i < 16; i++)
    nonce[i] = (uint8_t)(i + 1);
  char key[25];
  memset(key, 'x', sizeof key);
  wsuv_handshake_key(nonce, key);
  CHECK(strcmp(key, "AQIDBAUGBwgJCgsMDQ4PEA==") == 0);
}

static void test_rfc_request(void) {
  parsed_t p = {0};
  size_t len = strlen(RFC_REQUEST);
  CHECK_EQ_INT(parse_req(&p, RFC_REQUEST), len);
  const wsuv_http_head_t *h = &p.head;
  CHECK(span_is(h->method, h->method_len, "GET"));
  CHECK(span_is(h->target, h->target_len, "/chat"));
  CHECK_EQ_INT(h->version_minor, 1);
  CHECK_EQ_INT(h->num_headers, 7);
  CHECK(header_is(h, 0, "Host", "server.example.com"));
  CHECK(header_is(h, 3, "Sec-WebSocket-Key", RFC_KEY));
  CHECK(header_is(h, 6, "Sec-WebSocket-Version", "13"));
  CHECK_EQ_INT(wsuv_http_find(h, "sec-websocket-key", 0), 3);
  CHECK_EQ_INT(wsuv_http_find(h, "ORIGIN", 0), 4);
  CHECK_EQ_INT(wsuv_http_find(h, "Host", 1), -1);
  CHECK_EQ_INT(wsuv_http_find(h, "Cookie", 0), -1);
  CHECK(wsuv_http_has_token(h, "Sec-WebSocket-Protocol", "superchat"));
  CHECK(!wsuv_http_has_token(h, "Sec-WebSocket-Protocol", "super"));

  const char *key = NULL, *why = NULL;
  size_t key_len = 0;
  CHECK_EQ_INT(wsuv_handshake_check_request(h, &key, &key_len, &why), 0);
  CHECK(span_is(key, key_len, RFC_KEY));

  /* Every proper prefix is incomplete; bytes after the head are not ours. */
  for (size_t k = 0; k < len; k++)
    CHECK_EQ_INT(parse_n(&p, RFC_REQUEST, k, 0, CAP, 1), 0);
  char more[sizeof RFC_REQUEST + 5];
  memcpy(more, RFC_REQUEST, len);
  memcpy(more + len, "\x81\x85xyz", 5);
  CHECK_EQ_INT(parse_n(&p, more, len + 5, 0, CAP, 1), len);
  /* An incomplete parse leaves the capacity, so h can be reused as is. */
  wsuv_header_t hs[CAP];
  wsuv_http_head_t h2 = {.headers = hs, .num_headers = CAP};
  CHECK_EQ_INT(wsuv_http_parse_request(RFC_REQUEST, 40, 0, &h2), 0);
  CHECK_EQ_INT(h2.num_headers, CAP);
  CHECK_EQ_INT(wsuv_http_parse_request(RFC_REQUEST, len, 0, &h2), len);
  CHECK_EQ_INT(h2.num_headers, 7);
  free(p.buf);
}

/* Same request with bare LF line ends (RFC 7230 3.5), extra whitespace
 * around values, an empty value and a leading empty line. */
static void test_lenient(void) {
  parsed_t p = {0};
  const char *s = "\r\nGET / HTTP/1.1\n"
                  "Host:h\n"
                  "X-Empty:   \t\n"
                  "X-Pad: \t a  b \t\n"
                  "X-High: caf\xc3\xa9\n"
                  "\n";
  CHECK_EQ_INT(parse_req(&p, s), strlen(s));
  CHECK(span_is(p.head.target, p.head.target_len, "/"));
  CHECK_EQ_INT(p.head.num_headers, 4);
  CHECK(header_is(&p.head, 0, "Host", "h"));
  CHECK(header_is(&p.head, 1, "X-Empty", ""));
  CHECK(header_is(&p.head, 2, "X-Pad", "a  b"));
  CHECK(header_is(&p.head, 3, "X-High", "caf\xc3\xa9"));
  for (size_t k = 0; k < strlen(s); k++)
    CHECK_EQ_INT(parse_n(&p, s, k, 0, CAP, 1), 0);
  CHECK_EQ_INT(parse_req(&p, "GET / HTTP/1.0\r\n\r\n"), 18);
  CHECK_EQ_INT(p.head.version_minor, 0);
  CHECK_EQ_INT(p.head.num_headers, 0);
  free(p.buf);
}

static void test_malformed(void) {
  static const char *bad[] = {
      "GET  / HTTP/1.1\r\n\r\n",               /* two spaces */
      " GET / HTTP/1.1\r\n\r\n",               /* leading space */
      "GET /\x01 HTTP/1.1\r\n\r\n",            /* control in target */
      "GET / HTTP/2.0\r\n\r\n",                /* not HTTP/1.x */
      "GET / HTTP/1.10\r\n\r\n",               /* two-digit minor */
      "GET / http/1.1\r\n\r\n",                /* case-sensitive name */
      "GET / HTTP/1.1 \r\n\r\n",               /* trailing space */
      "GET / HTTP/1.1\rX\r\n\r\n",             /* lone CR */
      "G(T / HTTP/1.1\r\n\r\n",                /* non-tchar method */
      "GET / HTTP/1.1\r\nHost\r\n\r\n",        /* missing colon */
      "GET / HTTP/1.1\r\nHost : h\r\n\r\n",    /* space before colon */
      "GET / HTTP/1.1\r\n: h\r\n\r\n",         /* empty name */
      "GET / HTTP/1.1\r\nHo\"st: h\r\n\r\n",   /* non-tchar name */
      "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",     /* CR inside value */
      "GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n",    /* DEL inside value */
      "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",  /* obs-fold */
      "GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", /* obs-fold, HTAB */
      "GET / HTTP/1.1\r\n Host: h\r\n\r\n",    /* space before first field */
      "GET / HTTP/1.1\r\nX: a\r\n\r\r\n",      /* bad blank line */
  };
  parsed_t p = {0};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ssize_t r = parse_req(&p, bad[i]);
    if (r != WSUV_EHTTP) fprintf(stderr, "case %zu: %zd\n", i, r);
    CHECK_EQ_INT(r, WSUV_EHTTP);
  }
  /* NUL inside a value (strlen would stop there). */
  static const char nul[] = "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n";
  CHECK_EQ_INT(parse_n(&p, nul, sizeof nul - 1, 0, CAP, 1), WSUV_EHTTP);
  /* Malformed input is reported as soon as it is seen. */
  CHECK_EQ_INT(parse_req(&p, "GET / HTTP/1.1\r\nX\x01"), WSUV_EHTTP);
  CHECK_EQ_INT(parse_req(&p, "\x16\x03\x01"), WSUV_EHTTP); /* TLS hello */
  /* A request is not a response and the other way round. */
  CHECK_EQ_INT(parse_res(&p, "GET / HTTP/1.1\r\n\r\n"), WSUV_EHTTP);
  CHECK_EQ_INT(parse_req(&p, "HTTP/1.1 200 OK\r\n\r\n"), WSUV_EHTTP);
  free(p.buf);
}

static void test_response_parse(void) {
  parsed_t p = {0};
  size_t len = strlen(RFC_RESPONSE);
  CHECK_EQ_INT(parse_res(&p, RFC_RESPONSE), len);
  CHECK_EQ_INT(p.head.status, 101);
  CHECK_EQ_INT(p.head.version_minor, 1);
  CHECK(span_is(p.head.reason, p.head.reason_len, "Switching Protocols"));
  CHECK(p.head.method == NULL);
  CHECK_EQ_INT(p.head.num_headers, 4);
  CHECK(header_is(&p.head, 2, "Sec-WebSocket-Accept", RFC_ACCEPT));
  for (size_t k = 0; k < len; k++)
    CHECK_EQ_INT(parse_n(&p, RFC_RESPONSE, k, 0, CAP, 0), 0);

  const char *s = "HTTP/1.0 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad";
  CHECK_EQ_INT(parse_res(&p, s), strlen(s) - 3);
  CHECK_EQ_INT(p.head.status, 400);
  CHECK_EQ_INT(p.head.version_minor, 0);
  CHECK(span_is(p.head.reason, p.head.reason_len, "Bad Request"));
  CHECK(header_is(&p.head, 0, "Content-Length", "3"));

  CHECK_EQ_INT(parse_res(&p, "HTTP/1.1 204 \r\n\r\n"), 17);
  CHECK_EQ_INT(p.head.status, 204);
  CHECK_EQ_INT(p.head.reason_len, 0);
  CHECK_EQ_INT(parse_res(&p, "HTTP/1.1 204\r\n\r\n"), 16);
  CHECK_EQ_INT(p.head.reason_len, 0);
  CHECK_EQ_INT(parse_res(&p, "HTTP/1.1 20 OK\r\n\r\n"), WSUV_EHTTP);
  CHECK_EQ_INT(parse_res(&p, "HTTP/1.1 2000 OK\r\n\r\n"), WSUV_EHTTP);
  CHECK_EQ_INT(parse_res(&p, "HTTP/1.1 abc OK\r\n\r\n"), WSUV_EHTTP);
  CHECK_EQ_INT(parse_res(&p, "HTTP/1.1 200 O\x01K\r\n\r\n"), WSUV_EHTTP);
  CHECK_EQ_INT(parse_res(&p, "HTTP/1.1 200 OK\r\n"), 0);
  free(p.buf);
}

/* A request whose head is exactly total bytes long. */
static char *padded_request(size_t total) {
  const char *pre = "GET / HTTP/1.1\r\nX-Pad: ";
  const char *post = "\r\n\r\n";
  size_t fixed = strlen(pre) + strlen(post);
  char *s = malloc(total + 1);
  strcpy(s, pre);
  memset(s + strlen(pre), 'a', total - fixed);
  strcpy(s + total - strlen(post), post);
  return s;
}

static void test_limits(void) {
  parsed_t p = {0};
  char *s = padded_request(WSUV_DEFAULT_MAX_HEAD);
  CHECK_EQ_INT(parse_req(&p, s), WSUV_DEFAULT_MAX_HEAD);
  CHECK_EQ_INT(parse_n(&p, s, WSUV_DEFAULT_MAX_HEAD - 1, 0, CAP, 1), 0);
  free(s);
  s = padded_request(WSUV_DEFAULT_MAX_HEAD + 1);
  CHECK_EQ_INT(parse_req(&p, s), WSUV_EHEADTOOBIG);
  CHECK_EQ_INT(parse_n(&p, s, WSUV_DEFAULT_MAX_HEAD - 1, 0, CAP, 1), 0);
  CHECK_EQ_INT(parse_n(&p, s, WSUV_DEFAULT_MAX_HEAD, 0, CAP, 1),
               WSUV_EHEADTOOBIG);
  /* A bigger max_head takes it. */
  CHECK_EQ_INT(parse_n(&p, s, strlen(s), 10000, CAP, 1),
               WSUV_DEFAULT_MAX_HEAD + 1);
  free(s);

  /* Custom max_head, on the RFC request. */
  size_t len = strlen(RFC_REQUEST);
  CHECK_EQ_INT(parse_n(&p, RFC_REQUEST, len, len, CAP, 1), len);
  CHECK_EQ_INT(parse_n(&p, RFC_REQUEST, len, len - 1, CAP, 1),
               WSUV_EHEADTOOBIG);
  CHECK_EQ_INT(parse_n(&p, RFC_REQUEST, len - 2, len - 1, CAP, 1), 0);
  CHECK_EQ_INT(parse_n(&p, RFC_REQUEST, 50, 50, CAP, 1), WSUV_EHEADTOOBIG);
  /* Endless empty lines or garbage without an end are bounded too. */
  char *crlf = malloc(9000);
  for (size_t i = 0; i < 9000; i += 2)
    memcpy(crlf + i, "\r\n", 2);
  CHECK_EQ_INT(parse_n(&p, crlf, 9000, 0, CAP, 1), WSUV_EHEADTOOBIG);
  free(crlf);

  /* Header count: the capacity is the cap. */
  CHECK_EQ_INT(parse_n(&p, RFC_REQUEST, len, 0, 7, 1), len);
  CHECK_EQ_INT(parse_n(&p, RFC_REQUEST, len, 0, 6, 1), WSUV_EHEADTOOBIG);
  CHECK_EQ_INT(parse_n(&p, RFC_REQUEST, len, 0, 0, 1), WSUV_EHEADTOOBIG);
  CHECK_EQ_INT(parse_n(&p, "GET / HTTP/1.1\r\n\r\n", 18, 0, 0, 1), 18);
  /* It is known before the head is complete. */
  CHECK_EQ_INT(parse_n(&p, "GET / HTTP/1.1\r\nA: 1\r\nB", 23, 0, 1, 1),
               WSUV_EHEADTOOBIG);
  free(p.buf);
}

/* A small deterministic mutation fuzz: whatever the bytes, the result is
 * one of the documented values, pointers stay inside the input, and a head
 * that parses has every proper prefix incomplete. */
static void test_mutations(void) {
  parsed_t p = {0};
  uint32_t seed = 12345;
  char buf[sizeof RFC_REQUEST];
  size_t len = strlen(RFC_REQUEST);
  int ok_heads = 0, bad = 0;
  for (int iter = 0; iter < 3000; iter++) {
    memcpy(buf, RFC_REQUEST, len);
    for (int m = 0; m < 3; m++) {
      seed = seed * 1103515245u + 12345u;
      size_t at = (seed >> 8) % len;
      static const char alphabet[] = "\r\n :\t\0\x7f\x80"
                                     "aZ,\"";
      buf[at] = alphabet[(seed >> 20) % (sizeof alphabet - 1)];
    }
    ssize_t r = parse_n(&p, buf, len, 0, CAP, 1);
    if (!(r == 0 || r == WSUV_EHTTP || (r > 0 && (size_t)r <= len))) bad++;
    if (r <= 0) continue;
    ok_heads++;
    for (size_t k = 0; k < p.head.num_headers; k++) {
      const wsuv_header_t *hd = &p.head.headers[k];
      if (hd->name < p.buf || hd->name + hd->name_len > p.buf + r ||
          hd->value < p.buf || hd->value + hd->value_len > p.buf + r)
        bad++;
    }
    const char *key, *why = NULL;
    size_t key_len;
    int c = wsuv_handshake_check_request(&p.head, &key, &key_len, &why);
    if (!(c == 0 || c == 400 || c == 426 || c == WSUV_ENOTUPGRADE)) bad++;
    if (c != 0 && why == NULL) bad++;
    char copy[sizeof RFC_REQUEST];
    memcpy(copy, buf, len);
    for (size_t k = 0; k < (size_t)r; k++)
      if (parse_n(&p, copy, k, 0, CAP, 1) != 0) bad++;
  }
  CHECK_EQ_INT(bad, 0);
  CHECK(ok_heads > 100); /* the mutations did leave some heads valid */
  free(p.buf);
}

static void test_tokens(void) {
  const char *list = " , a ,, b\t,x; q=\"1,2\" ;r=\"\\\"\" ,c,";
  const char *cur = list, *end = list + strlen(list), *tok;
  size_t n;
  CHECK_EQ_INT(wsuv_token_next(&cur, end, &tok, &n), 1);
  CHECK(span_is(tok, n, "a"));
  CHECK_EQ_INT(wsuv_token_next(&cur, end, &tok, &n), 1);
  CHECK(span_is(tok, n, "b"));
  CHECK_EQ_INT(wsuv_token_next(&cur, end, &tok, &n), 1);
  CHECK(span_is(tok, n, "x; q=\"1,2\" ;r=\"\\\"\""));
  CHECK_EQ_INT(wsuv_token_next(&cur, end, &tok, &n), 1);
  CHECK(span_is(tok, n, "c"));
  CHECK_EQ_INT(wsuv_token_next(&cur, end, &tok, &n), 0);
  CHECK_EQ_INT(wsuv_token_next(&cur, end, &tok, &n), 0);
  cur = list;
  CHECK_EQ_INT(wsuv_token_next(&cur, list, &tok, &n), 0);

  parsed_t p = {0};
  CHECK(parse_req(&p, "GET / HTTP/1.1\r\n"
                      "Connection: keep-alive\r\n"
                      "X: 1\r\n"
                      "connection:  close ,UPGRADE\r\n"
                      "Upgrade: h2c, WebSocket\r\n"
                      "Y: upgrader, up grade\r\n"
                      "\r\n") > 0);
  CHECK(wsuv_http_has_token(&p.head, "Connection", "upgrade"));
  CHECK(wsuv_http_has_token(&p.head, "CONNECTION", "Keep-Alive"));
  CHECK(wsuv_http_has_token(&p.head, "connection", "close"));
  CHECK(wsuv_http_has_token(&p.head, "Upgrade", "websocket"));
  CHECK(!wsuv_http_has_token(&p.head, "Y", "upgrade"));
  CHECK(!wsuv_http_has_token(&p.head, "Y", "up"));
  CHECK(wsuv_http_has_token(&p.head, "Y", "up grade"));
  CHECK(!wsuv_http_has_token(&p.head, "Missing", "x"));
  CHECK_EQ_INT(wsuv_http_find(&p.head, "Connection", 0), 0);
  CHECK_EQ_INT(wsuv_http_find(&p.head, "Connection", 1), 2);
  CHECK_EQ_INT(wsuv_http_find(&p.head, "Connection", 3), -1);
  CHECK_EQ_INT(wsuv_http_find(&p.head, "Connection", 99), -1);
  free(p.buf);
}

/* Runs check_request on the RFC request with its header lines replaced. */
static void check_req(const char *line, const char *headers, int expect,
                      const char *why_expect, int lineno) {
  char req[1024];
  snprintf(req, sizeof req, "%s\r\n%s\r\n", line, headers);
  parsed_t p = {0};
  ssize_t r = parse_req(&p, req);
  CHECK(r > 0);
  const char *key = NULL, *why = NULL;
  size_t key_len = 0;
  int c = wsuv_handshake_check_request(&p.head, &key, &key_len, &why);
  if (c != expect || (why_expect && (!why || strcmp(why, why_expect) != 0)))
    fprintf(stderr, "check_req from line %d: %d (%s)\n", lineno, c,
            why ? why : "-");
  CHECK_EQ_INT(c, expect);
  if (why_expect) CHECK(why != NULL && strcmp(why, why_expect) == 0);
  if (expect == 0) CHECK(key_len == 24 && key != NULL);
  free(p.buf);
}

#define GOOD_HOST         "Host: h\r\n"
#define GOOD_UPG          "Upgrade: websocket\r\nConnection: Upgrade\r\n"
#define GOOD_KEY          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
#define GOOD_VER          "Sec-WebSocket-Version: 13\r\n"
#define GET               "GET /chat HTTP/1.1"
#define CR(line, h, e, w) check_req(line, h, e, w, __LINE__)

static void test_check_request(void) {
  CR(GET, GOOD_HOST GOOD_UPG GOOD_KEY GOOD_VER, 0, NULL);
  /* Token lists, mixed case and repeated headers. */
  CR(GET,
     "host: h\r\nUPGRADE: WebSocket\r\nconnection: keep-alive\r\n"
     "Connection: foo ,  UpGrade\r\n" GOOD_KEY GOOD_VER,
     0, NULL);
  CR(GET,
     GOOD_HOST "Upgrade: h2c, websocket\r\n"
               "Connection: keep-alive, Upgrade\r\n" GOOD_KEY GOOD_VER,
     0, NULL);
  /* Key pad bits are not checked (see key_valid). */
  CR(GET,
     GOOD_HOST GOOD_UPG
     "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAB==\r\n" GOOD_VER,
     0, NULL);

  CR(GET, GOOD_HOST GOOD_KEY GOOD_VER, WSUV_ENOTUPGRADE,
     "no Upgrade: websocket header");
  CR("GET / HTTP/1.1", "Host: h\r\n", WSUV_ENOTUPGRADE, NULL);
  CR("POST / HTTP/1.0", "Content-Length: 0\r\n", WSUV_ENOTUPGRADE, NULL);
  CR(GET, GOOD_HOST "Upgrade: h2c\r\nConnection: Upgrade\r\n" GOOD_KEY GOOD_VER,
     WSUV_ENOTUPGRADE, NULL);
  CR("POST /chat HTTP/1.1", GOOD_HOST GOOD_UPG GOOD_KEY GOOD_VER, 400,
     "method must be GET");
  CR("get /chat HTTP/1.1", GOOD_HOST GOOD_UPG GOOD_KEY GOOD_VER, 400,
     "method must be GET");
  CR("GET /chat HTTP/1.0", GOOD_HOST GOOD_UPG GOOD_KEY GOOD_VER, 400,
     "HTTP/1.1 or later required");
  CR(GET, GOOD_UPG GOOD_KEY GOOD_VER, 400, "missing Host header");
  CR(GET, GOOD_HOST GOOD_HOST GOOD_UPG GOOD_KEY GOOD_VER, 400,
     "duplicate Host header");
  CR(GET, GOOD_HOST "Upgrade: websocket\r\n" GOOD_KEY GOOD_VER, 400,
     "Connection header lacks the upgrade token");
  CR(GET,
     GOOD_HOST
     "Upgrade: websocket\r\nConnection: keep-alive\r\n" GOOD_KEY GOOD_VER,
     400, "Connection header lacks the upgrade token");
  CR(GET,
     GOOD_HOST
     "Upgrade: websocket\r\nConnection: upgraded\r\n" GOOD_KEY GOOD_VER,
     400, "Connection header lacks the upgrade token");
  CR(GET, GOOD_HOST GOOD_UPG GOOD_VER, 400, "missing Sec-WebSocket-Key");
  CR(GET, GOOD_HOST GOOD_UPG GOOD_KEY GOOD_KEY GOOD_VER, 400,
     "duplicate Sec-WebSocket-Key");

  static const char *bad_keys[] = {
      "dGhlIHNhbXBsZSBub25jZQ=",   /* 23 chars */
      "dGhlIHNhbXBsZSBub25jZQ===", /* 25 chars */
      "dGhlIHNhbXBsZSBub25jZQ",    /* no padding */
      "dGhlIHNhbXBsZSBub25jZQAA",  /* 18 bytes, no padding */
      "dGhlIHNhbXBsZSBub25jZ===",  /* '=' too early */
      "dGhlIHNhbXBsZSBub25jZ-==",  /* base64url */
      "dGhlIHNhbXBsZS Bub25jZQ==", /* space inside */
      "dGhlIHNhbXBsZSBub25jZQ=A",  /* bad padding */
      "AAAAAAAAAAAAAAAAAAAAAAAA",  /* 18 bytes */
      "c2hvcnQ=",                  /* 5 bytes */
      "",
  };
  for (size_t i = 0; i < sizeof bad_keys / sizeof bad_keys[0]; i++) {
    char hdrs[256];
    snprintf(hdrs, sizeof hdrs,
             GOOD_HOST GOOD_UPG "Sec-WebSocket-Key: %s\r\n" GOOD_VER,
             bad_keys[i]);
    CR(GET, hdrs, 400, "Sec-WebSocket-Key must decode to 16 bytes");
  }

  CR(GET, GOOD_HOST GOOD_UPG GOOD_KEY "Sec-WebSocket-Version: 8\r\n", 426,
     "Sec-WebSocket-Version must be 13");
  CR(GET, GOOD_HOST GOOD_UPG GOOD_KEY "Sec-WebSocket-Version: 13, 8\r\n", 426,
     NULL);
  CR(GET, GOOD_HOST GOOD_UPG GOOD_KEY "Sec-WebSocket-Version: 130\r\n", 426,
     NULL);
  CR(GET, GOOD_HOST GOOD_UPG GOOD_KEY GOOD_VER GOOD_VER, 426, NULL);
  CR(GET, GOOD_HOST GOOD_UPG GOOD_KEY, 426, "missing Sec-WebSocket-Version");

  /* why may be NULL. */
  parsed_t p = {0};
  CHECK(parse_req(&p, "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n") > 0);
  CHECK_EQ_INT(wsuv_handshake_check_request(&p.head, NULL, NULL, NULL), 400);
  free(p.buf);
}

/* Runs check_response on a response built from header lines. */
static void check_res(const char *status_line, const char *headers,
                      const char *protocols, const char *extensions, int expect,
                      const char *why_expect, int lineno) {
  char res[1024];
  snprintf(res, sizeof res, "%s\r\n%s\r\n", status_line, headers);
  parsed_t p = {0};
  CHECK(parse_res(&p, res) > 0);
  const char *why = NULL;
  int c = wsuv_handshake_check_response(&p.head, RFC_KEY, protocols, extensions,
                                        &why);
  if (c != expect || (why_expect && (!why || strcmp(why, why_expect) != 0)))
    fprintf(stderr, "check_res from line %d: %d (%s)\n", lineno, c,
            why ? why : "-");
  CHECK_EQ_INT(c, expect);
  if (why_expect) CHECK(why != NULL && strcmp(why, why_expect) == 0);
  free(p.buf);
}

#define S101                   "HTTP/1.1 101 Switching Protocols"
#define R_UPG                  "Upgrade: websocket\r\nConnection: Upgrade\r\n"
#define R_ACC                  "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
#define CS(s, h, pr, ex, e, w) check_res(s, h, pr, ex, e, w, __LINE__)
#define PMD                    "permessage-deflate"

static void test_check_response(void) {
  parsed_t p = {0};
  CHECK(parse_res(&p, RFC_RESPONSE) > 0);
  CHECK_EQ_INT(wsuv_handshake_check_response(&p.head, RFC_KEY,
                                             "chat, superchat", NULL, NULL),
               0);
  free(p.buf);

  CS(S101, R_UPG R_ACC, NULL, NULL, 0, NULL);
  CS(S101, "upgrade: WebSocket\r\nconnection: keep-alive, upgrade\r\n" R_ACC,
     "chat", NULL, 0, NULL);
  CS("HTTP/1.1 200 OK", R_UPG R_ACC, NULL, NULL, WSUV_EHANDSHAKE,
     "expected status 101");
  CS("HTTP/1.1 400 Bad Request", "", NULL, NULL, WSUV_EHANDSHAKE,
     "expected status 101");
  CS(S101, "Connection: Upgrade\r\n" R_ACC, NULL, NULL, WSUV_EHANDSHAKE,
     "missing Upgrade: websocket");
  CS(S101, "Upgrade: websocket\r\n" R_ACC, NULL, NULL, WSUV_EHANDSHAKE,
     "missing Connection: upgrade");
  CS(S101, R_UPG, NULL, NULL, WSUV_EHANDSHAKE, "missing Sec-WebSocket-Accept");
  CS(S101, R_UPG R_ACC R_ACC, NULL, NULL, WSUV_EHANDSHAKE,
     "duplicate Sec-WebSocket-Accept");
  CS(S101, R_UPG "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo\r\n", NULL,
     NULL, WSUV_EHANDSHAKE, "Sec-WebSocket-Accept does not match the key");
  CS(S101, R_UPG "Sec-WebSocket-Accept: S3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n", NULL,
     NULL, WSUV_EHANDSHAKE, "Sec-WebSocket-Accept does not match the key");

  /* Protocols. */
  CS(S101, R_UPG R_ACC "Sec-WebSocket-Protocol: superchat\r\n",
     "chat,superchat", NULL, 0, NULL);
  CS(S101, R_UPG R_ACC "Sec-WebSocket-Protocol: chat\r\n", NULL, NULL,
     WSUV_EHANDSHAKE, "server selected a protocol that was not offered");
  CS(S101, R_UPG R_ACC "Sec-WebSocket-Protocol: other\r\n", "chat, superchat",
     NULL, WSUV_EHANDSHAKE, "server selected a protocol that was not offered");
  CS(S101, R_UPG R_ACC "Sec-WebSocket-Protocol: Chat\r\n", "chat", NULL,
     WSUV_EHANDSHAKE, NULL);
  CS(S101, R_UPG R_ACC "Sec-WebSocket-Protocol: chat, superchat\r\n",
     "chat, superchat", NULL, WSUV_EHANDSHAKE, NULL);
  CS(S101, R_UPG R_ACC "Sec-WebSocket-Protocol: \r\n", "chat", NULL,
     WSUV_EHANDSHAKE, NULL);
  CS(S101,
     R_UPG R_ACC "Sec-WebSocket-Protocol: chat\r\n"
                 "Sec-WebSocket-Protocol: chat\r\n",
     "chat", NULL, WSUV_EHANDSHAKE, "more than one Sec-WebSocket-Protocol");

  /* Extensions: names only, parameters (quoted or not) are ignored. */
  const char *offer = PMD "; client_max_window_bits, x-webkit-deflate-frame";
  CS(S101, R_UPG R_ACC "Sec-WebSocket-Extensions: " PMD "\r\n", offer, NULL,
     WSUV_EHANDSHAKE, "server accepted an extension that was not offered");
  CS(S101,
     R_UPG R_ACC "Sec-WebSocket-Extensions: " PMD
                 "; server_max_window_bits=\"10\"; client_max_window_bits=10"
                 "\r\n",
     NULL, offer, 0, NULL);
  CS(S101,
     R_UPG R_ACC "Sec-WebSocket-Extensions: Permessage-Deflate ;x=\"a,b;c\", "
                 "x-webkit-deflate-frame\r\n"
                 "Sec-WebSocket-Extensions: " PMD "\r\n",
     NULL, offer, 0, NULL);
  CS(S101, R_UPG R_ACC "Sec-WebSocket-Extensions: x-foo\r\n", NULL, offer,
     WSUV_EHANDSHAKE, "server accepted an extension that was not offered");
  CS(S101,
     R_UPG R_ACC "Sec-WebSocket-Extensions: " PMD "\r\n"
                 "Sec-WebSocket-Extensions: x-foo; a=1\r\n",
     NULL, offer, WSUV_EHANDSHAKE, NULL);
  /* client_max_window_bits is a parameter in the offer, not a name. */
  CS(S101, R_UPG R_ACC "Sec-WebSocket-Extensions: client_max_window_bits\r\n",
     NULL, offer, WSUV_EHANDSHAKE, NULL);
  CS(S101, R_UPG R_ACC "Sec-WebSocket-Extensions: ; x=1\r\n", NULL, offer,
     WSUV_EHANDSHAKE, "malformed Sec-WebSocket-Extensions");
  CS(S101, R_UPG R_ACC "Sec-WebSocket-Extensions: \"" PMD "\"\r\n", NULL, offer,
     WSUV_EHANDSHAKE, "malformed Sec-WebSocket-Extensions");
  CS(S101, R_UPG R_ACC "Sec-WebSocket-Extensions: , ,\r\n", NULL, offer, 0,
     NULL);
}

/* Checks out[0..len) parses back as a complete request or response. */
static ssize_t reparse(parsed_t *p, const char *out, ssize_t len, int request) {
  if (len <= 0) return len;
  return parse_n(p, out, (size_t)len, 0, CAP, request);
}

/* Every capacity below the needed one gives ENOBUFS, on an exact-size heap
 * buffer so ASan sees any write past cap. */
typedef ssize_t (*build_fn)(char *out, size_t cap, const void *arg);

static int enobufs_everywhere(build_fn fn, const void *arg, size_t need) {
  int bad = 0;
  for (size_t cap = 0; cap < need; cap++) {
    char *out = malloc(cap ? cap : 1);
    if (fn(out, cap, arg) != WSUV_ENOBUFS) bad++;
    free(out);
  }
  char *out = malloc(need);
  if (fn(out, need, arg) != (ssize_t)need) bad++;
  free(out);
  return bad;
}

static const wsuv_header_t EXTRA[] = {
    {"X-Token", 7, "abc def", 7},
    {"Set-Cookie", 10, "a=b", 3},
};

static ssize_t build_101(char *out, size_t cap, const void *arg) {
  (void)arg;
  return wsuv_handshake_build_response(out, cap, RFC_KEY, 24, "chat",
                                       PMD "; server_no_context_takeover",
                                       EXTRA, 2);
}

static void test_build_response(void) {
  char out[512];
  parsed_t p = {0};
  ssize_t n = build_101(out, sizeof out, NULL);
  CHECK(n > 0);
  CHECK_EQ_INT(reparse(&p, out, n, 0), n);
  CHECK_EQ_INT(p.head.status, 101);
  CHECK(span_is(p.head.reason, p.head.reason_len, "Switching Protocols"));
  CHECK_EQ_INT(p.head.num_headers, 7);
  CHECK(header_is(&p.head, 0, "Upgrade", "websocket"));
  CHECK(header_is(&p.head, 1, "Connection", "Upgrade"));
  CHECK(header_is(&p.head, 2, "Sec-WebSocket-Accept", RFC_ACCEPT));
  CHECK(header_is(&p.head, 3, "Sec-WebSocket-Protocol", "chat"));
  CHECK(header_is(&p.head, 4, "Sec-WebSocket-Extensions",
                  PMD "; server_no_context_takeover"));
  CHECK(header_is(&p.head, 5, "X-Token", "abc def"));
  CHECK(header_is(&p.head, 6, "Set-Cookie", "a=b"));
  CHECK_EQ_INT(
      wsuv_handshake_check_response(&p.head, RFC_KEY, "chat", PMD, NULL), 0);
  CHECK_MEM(out + n - 4, "\r\n\r\n", 4);
  CHECK_EQ_INT(enobufs_everywhere(build_101, NULL, (size_t)n), 0);

  /* The RFC 1.3 response, byte for byte, minus the protocol. */
  n = wsuv_handshake_build_response(out, sizeof out, RFC_KEY, 24, NULL, "",
                                    NULL, 0);
  const char *want = "HTTP/1.1 101 Switching Protocols\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                     "\r\n";
  CHECK_EQ_INT(n, strlen(want));
  CHECK_MEM(out, want, strlen(want));

  /* Injection and bad input. */
  wsuv_header_t bad[] = {
      {"X-A", 3, "a\r\nInjected: 1", 14},
      {"X-A", 3, "a\nb", 3},
      {"X-A", 3, "a\0b", 3},
      {"X-A\r\nB", 6, "1", 1},
      {"X A", 3, "1", 1},
      {"", 0, "1", 1},
      {"X:A", 3, "1", 1},
      {"X-A", 3, NULL, 0},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CHECK_EQ_INT(wsuv_handshake_build_response(out, sizeof out, RFC_KEY, 24,
                                               NULL, NULL, &bad[i], 1),
                 WSUV_EINVAL);
    CHECK_EQ_INT(
        wsuv_http_build_response(out, sizeof out, 404, &bad[i], 1, NULL, 0),
        WSUV_EINVAL);
  }
  CHECK_EQ_INT(wsuv_handshake_build_response(out, sizeof out, RFC_KEY, 24,
                                             "chat\r\nX: 1", NULL, NULL, 0),
               WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_handshake_build_response(out, sizeof out, RFC_KEY, 24,
                                             "a, b", NULL, NULL, 0),
               WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_handshake_build_response(out, sizeof out, RFC_KEY, 24, NULL,
                                             PMD "\r\nX: 1", NULL, 0),
               WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_handshake_build_response(out, sizeof out, RFC_KEY, 23, NULL,
                                             NULL, NULL, 0),
               WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_handshake_build_response(out, sizeof out, "x", 1, NULL,
                                             NULL, NULL, 0),
               WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_handshake_build_response(out, sizeof out, NULL, 24, NULL,
                                             NULL, NULL, 0),
               WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_handshake_build_response(out, sizeof out, RFC_KEY, 24, NULL,
                                             NULL, NULL, 1),
               WSUV_EINVAL);
  free(p.buf);
}

typedef struct {
  int status;
  const wsuv_header_t *extra;
  size_t num_extra;
  const char *body;
} http_args_t;

static ssize_t build_http(char *out, size_t cap, const void *arg) {
  const http_args_t *a = arg;
  return wsuv_http_build_response(out, cap, a->status, a->extra, a->num_extra,
                                  a->body, a->body ? strlen(a->body) : 0);
}

static void test_http_response(void) {
  static const struct {
    int status;
    const char *reason;
  } reasons[] = {
      {200, "OK"},
      {204, "No Content"},
      {400, "Bad Request"},
      {401, "Unauthorized"},
      {403, "Forbidden"},
      {404, "Not Found"},
      {405, "Method Not Allowed"},
      {426, "Upgrade Required"},
      {429, "Too Many Requests"},
      {431, "Request Header Fields Too Large"},
      {500, "Internal Server Error"},
      {503, "Service Unavailable"},
      {299, "Unknown"},
      {999, "Unknown"},
  };
  char out[512];
  parsed_t p = {0};
  for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++) {
    http_args_t a = {reasons[i].status, NULL, 0, NULL};
    ssize_t n = build_http(out, sizeof out, &a);
    CHECK(n > 0);
    CHECK_EQ_INT(reparse(&p, out, n, 0), n);
    CHECK_EQ_INT(p.head.status, reasons[i].status);
    CHECK(span_is(p.head.reason, p.head.reason_len, reasons[i].reason));
    CHECK(wsuv_http_has_token(&p.head, "Connection", "close"));
    int cl = wsuv_http_find(&p.head, "Content-Length", 0);
    if (reasons[i].status == 204) {
      CHECK_EQ_INT(cl, -1); /* RFC 7230 3.3.2 */
    } else {
      CHECK(cl >= 0 && header_is(&p.head, (size_t)cl, "Content-Length", "0"));
    }
    int v = wsuv_http_find(&p.head, "Sec-WebSocket-Version", 0);
    CHECK_EQ_INT(v >= 0, reasons[i].status == 426);
  }

  /* Body, extras, Content-Length. */
  http_args_t a = {404, EXTRA, 2, "no such room\n"};
  ssize_t n = build_http(out, sizeof out, &a);
  const char *want = "HTTP/1.1 404 Not Found\r\n"
                     "Content-Length: 13\r\n"
                     "Connection: close\r\n"
                     "X-Token: abc def\r\n"
                     "Set-Cookie: a=b\r\n"
                     "\r\n"
                     "no such room\n";
  CHECK_EQ_INT(n, strlen(want));
  CHECK_MEM(out, want, strlen(want));
  CHECK_EQ_INT(reparse(&p, out, n, 0), n - 13);
  CHECK_EQ_INT(enobufs_everywhere(build_http, &a, (size_t)n), 0);

  /* 426 with the caller's own Sec-WebSocket-Version: only one is sent. */
  wsuv_header_t ver = {"sec-websocket-version", 21, "13, 8", 5};
  http_args_t b = {426, &ver, 1, "upgrade"};
  n = build_http(out, sizeof out, &b);
  CHECK_EQ_INT(reparse(&p, out, n, 0), n - 7);
  int first = wsuv_http_find(&p.head, "Sec-WebSocket-Version", 0);
  CHECK(first >= 0 &&
        header_is(&p.head, (size_t)first, "sec-websocket-version", "13, 8"));
  CHECK_EQ_INT(
      wsuv_http_find(&p.head, "Sec-WebSocket-Version", (size_t)first + 1), -1);
  CHECK_EQ_INT(enobufs_everywhere(build_http, &b, (size_t)n), 0);

  /* Misuse. */
  wsuv_header_t cl = {"Content-Length", 14, "5", 1};
  wsuv_header_t te = {"transfer-encoding", 17, "chunked", 7};
  CHECK_EQ_INT(wsuv_http_build_response(out, sizeof out, 200, &cl, 1, "x", 1),
               WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_http_build_response(out, sizeof out, 200, &te, 1, "x", 1),
               WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_http_build_response(out, sizeof out, 99, NULL, 0, NULL, 0),
               WSUV_EINVAL);
  CHECK_EQ_INT(
      wsuv_http_build_response(out, sizeof out, 1000, NULL, 0, NULL, 0),
      WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_http_build_response(out, sizeof out, 200, NULL, 0, NULL, 3),
               WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_http_build_response(out, sizeof out, 204, NULL, 0, "x", 1),
               WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_http_build_response(out, 0, 200, NULL, 0, NULL, 0),
               WSUV_ENOBUFS);
  free(p.buf);
}

static ssize_t build_req(char *out, size_t cap, const void *arg) {
  return wsuv_handshake_build_request(out, cap, arg, RFC_KEY);
}

static void test_build_request(void) {
  char out[1024];
  parsed_t p = {0};
  wsuv_client_request_t r = {
      .host = "server.example.com",
      .target = "/chat",
      .origin = "http://example.com",
      .protocols = "chat, superchat",
  };
  /* The RFC 1.3 request, byte for byte. */
  ssize_t n = wsuv_handshake_build_request(out, sizeof out, &r, RFC_KEY);
  const char *want = "GET /chat HTTP/1.1\r\n"
                     "Host: server.example.com\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "Origin: http://example.com\r\n"
                     "Sec-WebSocket-Protocol: chat, superchat\r\n"
                     "\r\n";
  CHECK_EQ_INT(n, strlen(want));
  CHECK_MEM(out, want, strlen(want));

  r.target = "/chat?room=1&x=%20";
  r.extensions = PMD "; client_max_window_bits";
  r.headers = EXTRA;
  r.num_headers = 2;
  n = build_req(out, sizeof out, &r);
  CHECK(n > 0);
  CHECK_EQ_INT(reparse(&p, out, n, 1), n);
  CHECK(span_is(p.head.target, p.head.target_len, "/chat?room=1&x=%20"));
  CHECK(header_is(&p.head, 7, "Sec-WebSocket-Extensions",
                  PMD "; client_max_window_bits"));
  CHECK(header_is(&p.head, 8, "X-Token", "abc def"));
  const char *key, *why = NULL;
  size_t key_len;
  CHECK_EQ_INT(wsuv_handshake_check_request(&p.head, &key, &key_len, &why), 0);
  CHECK(span_is(key, key_len, RFC_KEY));
  CHECK_EQ_INT(enobufs_everywhere(build_req, &r, (size_t)n), 0);

  /* Defaults: target "/", no optional headers. */
  wsuv_client_request_t m = {.host = "h:80"};
  n = build_req(out, sizeof out, &m);
  CHECK_EQ_INT(reparse(&p, out, n, 1), n);
  CHECK(span_is(p.head.target, p.head.target_len, "/"));
  CHECK_EQ_INT(p.head.num_headers, 5);
  CHECK_EQ_INT(wsuv_handshake_check_request(&p.head, NULL, NULL, NULL), 0);

  /* Injection and bad input. */
  wsuv_client_request_t bad = {.host = "h\r\nX: 1"};
  CHECK_EQ_INT(build_req(out, sizeof out, &bad), WSUV_EINVAL);
  bad = (wsuv_client_request_t){.host = "h", .target = "/a b"};
  CHECK_EQ_INT(build_req(out, sizeof out, &bad), WSUV_EINVAL);
  bad = (wsuv_client_request_t){.host = "h", .target = "/a\r\n"};
  CHECK_EQ_INT(build_req(out, sizeof out, &bad), WSUV_EINVAL);
  bad = (wsuv_client_request_t){.host = "h", .target = ""};
  CHECK_EQ_INT(build_req(out, sizeof out, &bad), WSUV_EINVAL);
  bad = (wsuv_client_request_t){.host = "h", .origin = "o\nX: 1"};
  CHECK_EQ_INT(build_req(out, sizeof out, &bad), WSUV_EINVAL);
  bad = (wsuv_client_request_t){.host = "h", .protocols = "a\r\n"};
  CHECK_EQ_INT(build_req(out, sizeof out, &bad), WSUV_EINVAL);
  bad = (wsuv_client_request_t){.host = "h", .extensions = "a\rb"};
  CHECK_EQ_INT(build_req(out, sizeof out, &bad), WSUV_EINVAL);
  wsuv_header_t inj = {"X-A", 3, "1\r\nHost: evil", 14};
  bad = (wsuv_client_request_t){.host = "h", .headers = &inj, .num_headers = 1};
  CHECK_EQ_INT(build_req(out, sizeof out, &bad), WSUV_EINVAL);
  bad = (wsuv_client_request_t){.host = NULL};
  CHECK_EQ_INT(build_req(out, sizeof out, &bad), WSUV_EINVAL);
  bad = (wsuv_client_request_t){.host = ""};
  CHECK_EQ_INT(build_req(out, sizeof out, &bad), WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_handshake_build_request(out, sizeof out, NULL, RFC_KEY),
               WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_handshake_build_request(out, sizeof out, &m, "short"),
               WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_handshake_build_request(out, sizeof out, &m, NULL),
               WSUV_EINVAL);
  free(p.buf);
}

/* Client and server together: a fresh key through every step. */
static void test_round_trip(void) {
  uint8_t nonce[16];
  for (int i = 0; i < 16; i++)
    nonce[i] = (uint8_t)(0xf0 ^ (i * 37));
  char key[25];
  wsuv_handshake_key(nonce, key);
  CHECK_EQ_INT(strlen(key), 24);
  char req[512], res[512];
  wsuv_client_request_t r = {
      .host = "example.com:8080", .protocols = "v2, v1", .extensions = PMD};
  ssize_t n = wsuv_handshake_build_request(req, sizeof req, &r, key);
  CHECK(n > 0);
  parsed_t pq = {0}, ps = {0};
  CHECK_EQ_INT(reparse(&pq, req, n, 1), n);
  const char *k;
  size_t klen;
  CHECK_EQ_INT(wsuv_handshake_check_request(&pq.head, &k, &klen, NULL), 0);
  n = wsuv_handshake_build_response(res, sizeof res, k, klen, "v1", PMD, NULL,
                                    0);
  CHECK(n > 0);
  CHECK_EQ_INT(reparse(&ps, res, n, 0), n);
  CHECK_EQ_INT(
      wsuv_handshake_check_response(&ps.head, key, "v2, v1", PMD, NULL), 0);
  /* Another key's response is refused. */
  nonce[0] ^= 1;
  char other[25];
  wsuv_handshake_key(nonce, other);
  CHECK_EQ_INT(
      wsuv_handshake_check_response(&ps.head, other, "v2, v1", PMD, NULL),
      WSUV_EHANDSHAKE);
  free(pq.buf);
  free(ps.buf);
}

int main(void) {
  test_accept_key();
  test_rfc_request();
  test_lenient();
  test_malformed();
  test_response_parse();
  test_limits();
  test_mutations();
  test_tokens();
  test_check_request();
  test_check_response();
  test_build_response();
  test_http_response();
  test_build_request();
  test_round_trip();
  return TEST_REPORT();
}
