/* ws_handshake.c: HTTP/1.x heads and the WebSocket opening handshake
 * (RFC 6455 section 4, RFC 7230 section 3).
 *
 * The parser works as picohttpparser does: no allocation, every pointer it
 * returns points into the caller's buffer, and it is stateless, so the caller
 * simply calls again with more bytes. It never reads past len (nor past
 * max_head), so it can be fed arbitrary bytes. The builders write into the
 * caller's buffer and check every append against its capacity.
 */
#include "wsuv.h"

#include <limits.h>
#include <string.h>

#include <openssl/evp.h>

#define WS_GUID     "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_GUID_LEN 36u
#define WS_KEY_LEN  24u  /* base64 of 16 bytes */
#define WS_MAX_KEY  128u /* longest key wsuv_accept_key hashes */

/* Parse results besides the negative WSUV_E* codes. */
enum { P_MORE = 0, P_OK = 1 };

/* tchar (RFC 7230 3.2.6): the characters of a token. */
static int is_tchar(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
      (c >= '0' && c <= '9'))
    return 1;
  switch (c) {
  case '!':
  case '#':
  case '$':
  case '%':
  case '&':
  case '\'':
  case '*':
  case '+':
  case '-':
  case '.':
  case '^':
  case '_':
  case '`':
  case '|':
  case '~':
    return 1;
  default:
    return 0;
  }
}

static int is_ows(unsigned char c) {
  return c == ' ' || c == '\t';
}

/* field-vchar, SP or HTAB (RFC 7230 3.2): what a value or reason may hold.
 * Bytes >= 0x80 are obs-text, which recipients accept. */
static int is_text(unsigned char c) {
  return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static unsigned char lower(unsigned char c) {
  return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

static int equal_ci(const char *a, size_t alen, const char *b, size_t blen) {
  if (alen != blen) return 0;
  for (size_t i = 0; i < alen; i++)
    if (lower((unsigned char)a[i]) != lower((unsigned char)b[i])) return 0;
  return 1;
}

/* Parsing. Each step takes the bytes p[0..n) and a position *i, and returns
 * P_OK having advanced *i, P_MORE when it ran out of bytes, or WSUV_EHTTP. */

/* Line ends are CRLF; RFC 7230 3.5 lets a recipient accept a bare LF. */
static int parse_eol(const unsigned char *p, size_t n, size_t *i) {
  if (*i >= n) return P_MORE;
  if (p[*i] == '\n') {
    (*i)++;
    return P_OK;
  }
  if (p[*i] != '\r') return WSUV_EHTTP;
  if (*i + 1 >= n) return P_MORE;
  if (p[*i + 1] != '\n') return WSUV_EHTTP;
  *i += 2;
  return P_OK;
}

/* "HTTP/1." DIGIT: only HTTP/1.x has this head syntax. */
static int parse_version(const unsigned char *p, size_t n, size_t *i,
                         int *minor) {
  static const char lit[] = "HTTP/1.";
  for (size_t k = 0; k < sizeof lit - 1; k++, (*i)++) {
    if (*i >= n) return P_MORE;
    if (p[*i] != (unsigned char)lit[k]) return WSUV_EHTTP;
  }
  if (*i >= n) return P_MORE;
  if (p[*i] < '0' || p[*i] > '9') return WSUV_EHTTP;
  *minor = p[*i] - '0';
  (*i)++;
  return P_OK;
}

/* request-line = method SP request-target SP HTTP-version CRLF
 * (RFC 7230 3.1.1). */
static int parse_request_line(const unsigned char *p, size_t n, size_t *pi,
                              wsuv_http_head_t *h) {
  size_t i = *pi;
  /* RFC 7230 3.5: a server SHOULD ignore empty lines before the
   * request-line. max_head still bounds how many. */
  while (i < n && (p[i] == '\r' || p[i] == '\n')) {
    int r = parse_eol(p, n, &i);
    if (r != P_OK) return r;
  }
  size_t start = i;
  while (i < n && is_tchar(p[i]))
    i++;
  if (i >= n) return P_MORE;
  if (p[i] != ' ' || i == start) return WSUV_EHTTP;
  h->method = (const char *)p + start;
  h->method_len = i - start;
  start = ++i;
  /* The request-target holds no whitespace or controls (RFC 3986). */
  while (i < n && p[i] > 0x20 && p[i] < 0x7f)
    i++;
  if (i >= n) return P_MORE;
  if (p[i] != ' ' || i == start) return WSUV_EHTTP;
  h->target = (const char *)p + start;
  h->target_len = i - start;
  i++;
  int r = parse_version(p, n, &i, &h->version_minor);
  if (r == P_OK) r = parse_eol(p, n, &i);
  if (r == P_OK) *pi = i;
  return r;
}

/* status-line = HTTP-version SP status-code SP reason-phrase CRLF
 * (RFC 7230 3.1.2). The reason may be empty; like most clients we also take
 * a status line whose SP before the empty reason is missing. */
static int parse_status_line(const unsigned char *p, size_t n, size_t *pi,
                             wsuv_http_head_t *h) {
  size_t i = *pi;
  int r = parse_version(p, n, &i, &h->version_minor);
  if (r != P_OK) return r;
  if (i >= n) return P_MORE;
  if (p[i++] != ' ') return WSUV_EHTTP;
  int status = 0;
  for (int d = 0; d < 3; d++, i++) {
    if (i >= n) return P_MORE;
    if (p[i] < '0' || p[i] > '9') return WSUV_EHTTP;
    status = status * 10 + (p[i] - '0');
  }
  if (i >= n) return P_MORE;
  size_t reason = i;
  if (p[i] == ' ') {
    reason = ++i;
    while (i < n && is_text(p[i]))
      i++;
  }
  h->status = status;
  h->reason = (const char *)p + reason;
  h->reason_len = i - reason;
  r = parse_eol(p, n, &i);
  if (r == P_OK) *pi = i;
  return r;
}

/* header-field = field-name ":" OWS field-value OWS (RFC 7230 3.2), up to
 * and including the blank line. Stores at most h->num_headers fields and
 * sets *count on success. */
static int parse_headers(const unsigned char *p, size_t n, size_t *pi,
                         wsuv_http_head_t *h, size_t *count) {
  size_t i = *pi, k = 0;
  for (;;) {
    if (i >= n) return P_MORE;
    if (p[i] == '\r' || p[i] == '\n') {
      int r = parse_eol(p, n, &i);
      if (r == P_OK) {
        *pi = i;
        *count = k;
      }
      return r;
    }
    /* RFC 7230 3.2.4: obs-fold is obsolete and a server MUST reject it (or
     * unfold it); a user agent MUST replace it. We reject it on both sides,
     * along with whitespace before the first field (RFC 7230 3). */
    if (is_ows(p[i])) return WSUV_EHTTP;
    if (k == h->num_headers) return WSUV_EHEADTOOBIG;
    size_t name = i;
    while (i < n && is_tchar(p[i]))
      i++;
    if (i >= n) return P_MORE;
    /* RFC 7230 3.2.4: whitespace between field-name and colon MUST be
     * rejected with 400; an empty name is no field-name at all. */
    if (p[i] != ':' || i == name) return WSUV_EHTTP;
    size_t name_len = i - name;
    i++;
    while (i < n && is_ows(p[i]))
      i++;
    size_t value = i, value_end = i;
    while (i < n && p[i] != '\r' && p[i] != '\n') {
      unsigned char c = p[i++];
      /* Controls other than HTAB (NUL, a lone CR, ...) are not
       * field-content (RFC 7230 3.2). */
      if (!is_text(c)) return WSUV_EHTTP;
      if (!is_ows(c)) value_end = i;
    }
    int r = parse_eol(p, n, &i);
    if (r != P_OK) return r;
    h->headers[k].name = (const char *)p + name;
    h->headers[k].name_len = name_len;
    h->headers[k].value = (const char *)p + value;
    h->headers[k].value_len = value_end - value;
    k++;
  }
}

/* Only the first max_head bytes are looked at, so a head that has not ended
 * by then is too big however the bytes arrive. num_headers is written only
 * on success, so an incomplete head can be retried with the same h. */
static ssize_t parse_head(const char *buf, size_t len, size_t max_head,
                          wsuv_http_head_t *h, int request) {
  if (max_head == 0) max_head = WSUV_DEFAULT_MAX_HEAD;
  size_t n = len < max_head ? len : max_head;
  const unsigned char *p = (const unsigned char *)buf;
  size_t i = 0, count = 0;
  h->method = h->target = h->reason = NULL;
  h->method_len = h->target_len = h->reason_len = 0;
  h->version_minor = 0;
  h->status = 0;
  int r = request ? parse_request_line(p, n, &i, h)
                  : parse_status_line(p, n, &i, h);
  if (r == P_OK) r = parse_headers(p, n, &i, h, &count);
  if (r == P_MORE) return len >= max_head ? WSUV_EHEADTOOBIG : 0;
  if (r < 0) return r;
  h->num_headers = count;
  return (ssize_t)i;
}

ssize_t wsuv_http_parse_request(const char *buf, size_t len, size_t max_head,
                                wsuv_http_head_t *h) {
  return parse_head(buf, len, max_head, h, 1);
}

ssize_t wsuv_http_parse_response(const char *buf, size_t len, size_t max_head,
                                 wsuv_http_head_t *h) {
  return parse_head(buf, len, max_head, h, 0);
}

int wsuv_http_find(const wsuv_http_head_t *h, const char *name, size_t start) {
  size_t name_len = strlen(name);
  for (size_t k = start; k < h->num_headers && k <= INT_MAX; k++)
    if (equal_ci(h->headers[k].name, h->headers[k].name_len, name, name_len))
      return (int)k;
  return -1;
}

static size_t count_headers(const wsuv_http_head_t *h, const char *name,
                            int *first) {
  size_t count = 0;
  *first = wsuv_http_find(h, name, 0);
  for (int k = *first; k >= 0; k = wsuv_http_find(h, name, (size_t)k + 1))
    count++;
  return count;
}

/* Elements may be quoted strings (extension parameters), whose commas do
 * not split the list (RFC 7230 3.2.6, 7). */
int wsuv_token_next(const char **cur, const char *end, const char **tok,
                    size_t *tok_len) {
  const char *p = *cur;
  while (p < end && (*p == ',' || is_ows((unsigned char)*p)))
    p++;
  if (p >= end) {
    *cur = end;
    return 0;
  }
  const char *start = p;
  int quoted = 0;
  for (; p < end; p++) {
    if (quoted && *p == '\\' && p + 1 < end) {
      p++;
    } else if (*p == '"') {
      quoted = !quoted;
    } else if (!quoted && *p == ',') {
      break;
    }
  }
  const char *stop = p;
  while (stop > start && is_ows((unsigned char)stop[-1]))
    stop--;
  *tok = start;
  *tok_len = (size_t)(stop - start);
  *cur = p;
  return 1;
}

int wsuv_http_has_token(const wsuv_http_head_t *h, const char *name,
                        const char *token) {
  size_t token_len = strlen(token);
  for (int k = wsuv_http_find(h, name, 0); k >= 0;
       k = wsuv_http_find(h, name, (size_t)k + 1)) {
    const char *cur = h->headers[k].value;
    const char *end = cur + h->headers[k].value_len;
    const char *tok;
    size_t tok_len;
    while (wsuv_token_next(&cur, end, &tok, &tok_len))
      if (equal_ci(tok, tok_len, token, token_len)) return 1;
  }
  return 0;
}

/* Keys and accepts. */

static int b64_char(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* RFC 6455 4.1 and 4.2.1 (5): the key is the base64 of a 16-byte nonce, so
 * 22 alphabet characters and "==". The pad bits of the last character are
 * not checked (RFC 4648 3.5 leaves that to the decoder): the value still
 * decodes to 16 bytes, and some clients draw the characters at random. */
static int key_valid(const char *key, size_t len) {
  if (key == NULL || len != WS_KEY_LEN) return 0;
  for (size_t i = 0; i < WS_KEY_LEN - 2; i++)
    if (!b64_char((unsigned char)key[i])) return 0;
  return key[22] == '=' && key[23] == '=';
}

int wsuv_accept_key(const char *key, size_t key_len, char *out) {
  unsigned char buf[WS_MAX_KEY + WS_GUID_LEN];
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  if (out == NULL) return WSUV_EINVAL;
  out[0] = '\0';
  if (key == NULL || key_len == 0 || key_len > WS_MAX_KEY) return WSUV_EINVAL;
  /* RFC 6455 4.2.2 (5.4): SHA-1 of the key as sent, then the GUID. */
  memcpy(buf, key, key_len);
  memcpy(buf + key_len, WS_GUID, WS_GUID_LEN);
  if (!EVP_Digest(buf, key_len + WS_GUID_LEN, md, &md_len, EVP_sha1(), NULL) ||
      md_len != 20)
    return WSUV_EINVAL;
  EVP_EncodeBlock((unsigned char *)out, md, 20);
  return 0;
}

void wsuv_handshake_key(const uint8_t nonce[16], char *out) {
  EVP_EncodeBlock((unsigned char *)out, nonce, 16);
}

/* Server side: checking the request. */

static int fail(const char **why, const char *msg, int code) {
  if (why) *why = msg;
  return code;
}

int wsuv_handshake_check_request(const wsuv_http_head_t *req, const char **key,
                                 size_t *key_len, const char **why) {
  int k;
  /* Without "Upgrade: websocket" this is plain HTTP for the caller. */
  if (!wsuv_http_has_token(req, "Upgrade", "websocket"))
    return fail(why, "no Upgrade: websocket header", WSUV_ENOTUPGRADE);
  /* RFC 6455 4.2.1 (1): an HTTP/1.1 or higher GET request. Methods are
   * case-sensitive (RFC 7230 3.1.1). */
  if (req->method_len != 3 || memcmp(req->method, "GET", 3) != 0)
    return fail(why, "method must be GET", 400);
  if (req->version_minor < 1)
    return fail(why, "HTTP/1.1 or later required", 400);
  /* RFC 6455 4.2.1 (2); RFC 7230 5.4: a server MUST respond 400 to a request
   * without a Host or with more than one. */
  size_t n = count_headers(req, "Host", &k);
  if (n == 0) return fail(why, "missing Host header", 400);
  if (n > 1) return fail(why, "duplicate Host header", 400);
  /* RFC 6455 4.2.1 (4). */
  if (!wsuv_http_has_token(req, "Connection", "upgrade"))
    return fail(why, "Connection header lacks the upgrade token", 400);
  /* RFC 6455 4.2.1 (5): one key that decodes to 16 bytes. */
  n = count_headers(req, "Sec-WebSocket-Key", &k);
  if (n == 0) return fail(why, "missing Sec-WebSocket-Key", 400);
  if (n > 1) return fail(why, "duplicate Sec-WebSocket-Key", 400);
  const wsuv_header_t *kh = &req->headers[k];
  if (!key_valid(kh->value, kh->value_len))
    return fail(why, "Sec-WebSocket-Key must decode to 16 bytes", 400);
  /* RFC 6455 4.2.1 (6) and 4.4: any version but 13 gets 426 and our
   * Sec-WebSocket-Version. */
  n = count_headers(req, "Sec-WebSocket-Version", &k);
  if (n == 0) return fail(why, "missing Sec-WebSocket-Version", 426);
  if (n > 1 || req->headers[k].value_len != 2 ||
      memcmp(req->headers[k].value, "13", 2) != 0)
    return fail(why, "Sec-WebSocket-Version must be 13", 426);
  if (key) *key = kh->value;
  if (key_len) *key_len = kh->value_len;
  return 0;
}

/* Building heads. A writer with a sticky error: every append is checked
 * against the capacity, and after a failure nothing more is written. */

typedef struct {
  char *out;
  size_t cap, len;
  int err;
} ws_writer_t;

static void put(ws_writer_t *w, const char *s, size_t n) {
  if (w->err) return;
  if (n > w->cap - w->len) {
    w->err = WSUV_ENOBUFS;
    return;
  }
  if (n) memcpy(w->out + w->len, s, n);
  w->len += n;
}

static void put_str(ws_writer_t *w, const char *s) {
  put(w, s, strlen(s));
}

static void put_uint(ws_writer_t *w, size_t v) {
  char digits[3 * sizeof v];
  size_t n = sizeof digits;
  do {
    digits[--n] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  put(w, digits + n, sizeof digits - n);
}

static void put_header(ws_writer_t *w, const char *name, const char *value) {
  put_str(w, name);
  put(w, ": ", 2);
  put_str(w, value);
  put(w, "\r\n", 2);
}

static void put_extras(ws_writer_t *w, const wsuv_header_t *extra, size_t num) {
  for (size_t k = 0; k < num; k++) {
    put(w, extra[k].name, extra[k].name_len);
    put(w, ": ", 2);
    put(w, extra[k].value, extra[k].value_len);
    put(w, "\r\n", 2);
  }
}

static ssize_t finish(const ws_writer_t *w) {
  return w->err ? w->err : (ssize_t)w->len;
}

/* A value we write must be field-content (RFC 7230 3.2): above all no CR or
 * LF, which would let it inject headers, and no NUL. */
static int value_valid(const char *s, size_t n) {
  if (s == NULL) return 0;
  for (size_t i = 0; i < n; i++)
    if (!is_text((unsigned char)s[i])) return 0;
  return 1;
}

static int token_valid(const char *s, size_t n) {
  if (s == NULL || n == 0) return 0;
  for (size_t i = 0; i < n; i++)
    if (!is_tchar((unsigned char)s[i])) return 0;
  return 1;
}

static int extras_valid(const wsuv_header_t *extra, size_t num) {
  if (num > 0 && extra == NULL) return 0;
  for (size_t k = 0; k < num; k++)
    if (!token_valid(extra[k].name, extra[k].name_len) ||
        !value_valid(extra[k].value, extra[k].value_len))
      return 0;
  return 1;
}

/* NULL or "" means "none"; anything else must be a valid value. */
static int optional_valid(const char *s) {
  return s == NULL || value_valid(s, strlen(s));
}

static int present(const char *s) {
  return s != NULL && s[0] != '\0';
}

static int extras_have(const wsuv_header_t *extra, size_t num,
                       const char *name) {
  for (size_t k = 0; k < num; k++)
    if (equal_ci(extra[k].name, extra[k].name_len, name, strlen(name)))
      return 1;
  return 0;
}

ssize_t wsuv_handshake_build_response(char *out, size_t cap, const char *key,
                                      size_t key_len, const char *protocol,
                                      const char *extensions,
                                      const wsuv_header_t *extra,
                                      size_t num_extra) {
  char accept[29];
  if (!key_valid(key, key_len) || !extras_valid(extra, num_extra) ||
      !optional_valid(extensions) || wsuv_accept_key(key, key_len, accept))
    return WSUV_EINVAL;
  /* RFC 6455 4.2.2 (5.3): the server selects one subprotocol, a token. */
  if (present(protocol) && !token_valid(protocol, strlen(protocol)))
    return WSUV_EINVAL;
  ws_writer_t w = {out, cap, 0, 0};
  /* RFC 6455 4.2.2 (5): status 101, Upgrade, Connection, Accept. */
  put_str(&w, "HTTP/1.1 101 Switching Protocols\r\n"
              "Upgrade: websocket\r\n"
              "Connection: Upgrade\r\n");
  put_header(&w, "Sec-WebSocket-Accept", accept);
  if (present(protocol)) put_header(&w, "Sec-WebSocket-Protocol", protocol);
  if (present(extensions))
    put_header(&w, "Sec-WebSocket-Extensions", extensions);
  put_extras(&w, extra, num_extra);
  put(&w, "\r\n", 2);
  return finish(&w);
}

static const char *reason_phrase(int status) {
  switch (status) {
  case 101:
    return "Switching Protocols";
  case 200:
    return "OK";
  case 204:
    return "No Content";
  case 301:
    return "Moved Permanently";
  case 302:
    return "Found";
  case 304:
    return "Not Modified";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 426:
    return "Upgrade Required";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 503:
    return "Service Unavailable";
  default:
    return "Unknown";
  }
}

ssize_t wsuv_http_build_response(char *out, size_t cap, int status,
                                 const wsuv_header_t *extra, size_t num_extra,
                                 const char *body, size_t body_len) {
  if (status < 100 || status > 999 || !extras_valid(extra, num_extra) ||
      (body == NULL && body_len > 0))
    return WSUV_EINVAL;
  /* We frame the body ourselves: a second Content-Length, or a
   * Transfer-Encoding beside it, would let a peer read the message
   * differently from us (RFC 7230 3.3.3). */
  if (extras_have(extra, num_extra, "Content-Length") ||
      extras_have(extra, num_extra, "Transfer-Encoding"))
    return WSUV_EINVAL;
  /* RFC 7230 3.3.2 and 3.3.3: 1xx, 204 and 304 responses have no body, and a
   * server MUST NOT send Content-Length in a 1xx or 204 response. */
  int bodiless = status < 200 || status == 204 || status == 304;
  if (bodiless && body_len > 0) return WSUV_EINVAL;
  ws_writer_t w = {out, cap, 0, 0};
  put(&w, "HTTP/1.1 ", 9);
  put_uint(&w, (size_t)status);
  put(&w, " ", 1);
  put_str(&w, reason_phrase(status));
  put(&w, "\r\n", 2);
  if (!bodiless) {
    put_str(&w, "Content-Length: ");
    put_uint(&w, body_len);
    put(&w, "\r\n", 2);
  }
  put_str(&w, "Connection: close\r\n");
  /* RFC 6455 4.4: a 426 carries the versions the server supports. */
  if (status == 426 && !extras_have(extra, num_extra, "Sec-WebSocket-Version"))
    put_str(&w, "Sec-WebSocket-Version: 13\r\n");
  put_extras(&w, extra, num_extra);
  put(&w, "\r\n", 2);
  put(&w, body, body_len);
  return finish(&w);
}

/* Client side: the request and the check of the response. */

ssize_t wsuv_handshake_build_request(char *out, size_t cap,
                                     const wsuv_client_request_t *r,
                                     const char *key) {
  if (r == NULL || !present(r->host) || !optional_valid(r->host) ||
      !optional_valid(r->origin) || !optional_valid(r->protocols) ||
      !optional_valid(r->extensions) ||
      !extras_valid(r->headers, r->num_headers))
    return WSUV_EINVAL;
  if (key == NULL || !key_valid(key, strlen(key))) return WSUV_EINVAL;
  const char *target = r->target ? r->target : "/";
  size_t target_len = strlen(target);
  /* The request-target holds no whitespace or controls (RFC 7230 3.1.1). */
  if (target_len == 0) return WSUV_EINVAL;
  for (size_t i = 0; i < target_len; i++)
    if ((unsigned char)target[i] <= 0x20 || (unsigned char)target[i] >= 0x7f)
      return WSUV_EINVAL;
  ws_writer_t w = {out, cap, 0, 0};
  /* RFC 6455 4.1: GET, HTTP/1.1, Host, Upgrade, Connection, Key, Version. */
  put(&w, "GET ", 4);
  put(&w, target, target_len);
  put_str(&w, " HTTP/1.1\r\n");
  put_header(&w, "Host", r->host);
  put_str(&w, "Upgrade: websocket\r\n"
              "Connection: Upgrade\r\n");
  put_header(&w, "Sec-WebSocket-Key", key);
  put_str(&w, "Sec-WebSocket-Version: 13\r\n");
  if (present(r->origin)) put_header(&w, "Origin", r->origin);
  if (present(r->protocols))
    put_header(&w, "Sec-WebSocket-Protocol", r->protocols);
  if (present(r->extensions))
    put_header(&w, "Sec-WebSocket-Extensions", r->extensions);
  put_extras(&w, r->headers, r->num_headers);
  put(&w, "\r\n", 2);
  return finish(&w);
}

/* The name of an extension element "name; param=value": what precedes the
 * first ';', trimmed. Returns 0 when that is not a token. */
static int extension_name(const char *tok, size_t len, const char **name,
                          size_t *name_len) {
  size_t n = 0;
  while (n < len && tok[n] != ';')
    n++;
  while (n > 0 && is_ows((unsigned char)tok[n - 1]))
    n--;
  *name = tok;
  *name_len = n;
  return token_valid(tok, n);
}

static int extension_offered(const char *offered, const char *name,
                             size_t name_len) {
  if (offered == NULL) return 0;
  const char *cur = offered, *end = offered + strlen(offered);
  const char *tok, *oname;
  size_t tok_len, oname_len;
  while (wsuv_token_next(&cur, end, &tok, &tok_len))
    if (extension_name(tok, tok_len, &oname, &oname_len) &&
        equal_ci(oname, oname_len, name, name_len))
      return 1;
  return 0;
}

/* RFC 6455 4.1 (6): every extension in the response MUST have been offered;
 * names are compared, parameters are the extension's business. */
static int check_extensions(const wsuv_http_head_t *res, const char *offered,
                            const char **why) {
  for (int k = wsuv_http_find(res, "Sec-WebSocket-Extensions", 0); k >= 0;
       k = wsuv_http_find(res, "Sec-WebSocket-Extensions", (size_t)k + 1)) {
    const char *cur = res->headers[k].value;
    const char *end = cur + res->headers[k].value_len;
    const char *tok, *name;
    size_t tok_len, name_len;
    while (wsuv_token_next(&cur, end, &tok, &tok_len)) {
      if (!extension_name(tok, tok_len, &name, &name_len))
        return fail(why, "malformed Sec-WebSocket-Extensions", WSUV_EHANDSHAKE);
      if (!extension_offered(offered, name, name_len))
        return fail(why, "server accepted an extension that was not offered",
                    WSUV_EHANDSHAKE);
    }
  }
  return 0;
}

/* RFC 6455 4.1 (7): at most one subprotocol, and one that was offered.
 * Subprotocol names are compared exactly. */
static int check_protocol(const wsuv_http_head_t *res, const char *offered,
                          const char **why) {
  int k;
  size_t n = count_headers(res, "Sec-WebSocket-Protocol", &k);
  if (n == 0) return 0;
  if (n > 1)
    return fail(why, "more than one Sec-WebSocket-Protocol", WSUV_EHANDSHAKE);
  const wsuv_header_t *h = &res->headers[k];
  if (offered != NULL) {
    const char *cur = offered, *end = offered + strlen(offered), *tok;
    size_t tok_len;
    while (wsuv_token_next(&cur, end, &tok, &tok_len))
      if (tok_len == h->value_len && memcmp(tok, h->value, tok_len) == 0)
        return 0;
  }
  return fail(why, "server selected a protocol that was not offered",
              WSUV_EHANDSHAKE);
}

int wsuv_handshake_check_response(const wsuv_http_head_t *res, const char *key,
                                  const char *offered_protocols,
                                  const char *offered_extensions,
                                  const char **why) {
  /* RFC 6455 4.1 (1): any status but 101 means no WebSocket. */
  if (res->status != 101)
    return fail(why, "expected status 101", WSUV_EHANDSHAKE);
  /* RFC 6455 4.1 (2) and (3). */
  if (!wsuv_http_has_token(res, "Upgrade", "websocket"))
    return fail(why, "missing Upgrade: websocket", WSUV_EHANDSHAKE);
  if (!wsuv_http_has_token(res, "Connection", "upgrade"))
    return fail(why, "missing Connection: upgrade", WSUV_EHANDSHAKE);
  /* RFC 6455 4.1 (4): the accept MUST be the hash of our key. */
  char accept[29];
  if (key == NULL || wsuv_accept_key(key, strlen(key), accept) != 0)
    return fail(why, "invalid Sec-WebSocket-Key", WSUV_EHANDSHAKE);
  int k;
  size_t n = count_headers(res, "Sec-WebSocket-Accept", &k);
  if (n == 0) return fail(why, "missing Sec-WebSocket-Accept", WSUV_EHANDSHAKE);
  if (n > 1)
    return fail(why, "duplicate Sec-WebSocket-Accept", WSUV_EHANDSHAKE);
  if (res->headers[k].value_len != 28 ||
      memcmp(res->headers[k].value, accept, 28) != 0)
    return fail(why, "Sec-WebSocket-Accept does not match the key",
                WSUV_EHANDSHAKE);
  int r = check_extensions(res, offered_extensions, why);
  if (r == 0) r = check_protocol(res, offered_protocols, why);
  return r;
}
