/* fuzz_handshake_resp.c: the client's side of the opening handshake:
 * wsuv_http_parse_response, then wsuv_handshake_check_response (RFC 6455
 * 4.1) for the key of RFC 6455 1.3.
 *
 * Input: [chunk size][config][response bytes...]. The config byte picks the
 * header capacity, max_head, and whether subprotocols and extensions were
 * offered. The response arrives in chunks and is re-parsed as it grows.
 *
 * Checks: the answer does not depend on the split; a parsed head's pointers
 * lie inside the input; and check_response accepts only what RFC 6455 4.1
 * allows, re-derived here: status 101, the Upgrade and Connection tokens,
 * exactly one Sec-WebSocket-Accept equal to the key's hash, at most one
 * subprotocol and only an offered one, no extension unless offered. */
#include "chunk.h"

#define KEY    "dGhlIHNhbXBsZSBub25jZQ=="
#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

static size_t count(const wsuv_http_head_t *h, const char *name) {
  size_t n = 0;
  for (int k = wsuv_http_find(h, name, 0); k >= 0;
       k = wsuv_http_find(h, name, (size_t)k + 1))
    n++;
  return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const size_t max_heads[4] = {0, 64, 256, 1024};
  fuzz_chunker_t c;
  fuzz_chunker_init(&c, data, size);
  uint8_t conf = fuzz_take_byte(&c.p, &c.n);
  size_t capacity = (conf & 15u) + 1u;
  size_t max_head = max_heads[(conf >> 4) & 3u];
  const char *protocols = conf & 0x40 ? "chat, superchat" : NULL;
  const char *extensions =
      conf & 0x80 ? "permessage-deflate; client_max_window_bits" : NULL;

  wsuv_header_t headers[16];
  wsuv_http_head_t res = {.headers = headers, .num_headers = capacity};
  char *buf;
  ssize_t r = fuzz_http_parse_chunked(wsuv_http_parse_response, c.p, c.n,
                                      c.chunk, max_head, &res, &buf);
  if (r <= 0) {
    free(buf);
    return 0;
  }

  char accept[29];
  FUZZ_CHECK(wsuv_accept_key(KEY, strlen(KEY), accept) == 0);
  FUZZ_CHECK(strcmp(accept, ACCEPT) == 0); /* RFC 6455 1.3 */

  const char *why = NULL;
  int st =
      wsuv_handshake_check_response(&res, KEY, protocols, extensions, &why);
  if (st != 0) {
    FUZZ_CHECK(st == WSUV_EHANDSHAKE);
    FUZZ_CHECK(why != NULL && strlen(why) > 0);
    free(buf);
    return 0;
  }
  FUZZ_CHECK(res.status == 101);
  FUZZ_CHECK(wsuv_http_has_token(&res, "Upgrade", "websocket"));
  FUZZ_CHECK(wsuv_http_has_token(&res, "Connection", "upgrade"));
  FUZZ_CHECK(count(&res, "Sec-WebSocket-Accept") == 1);
  int k = wsuv_http_find(&res, "Sec-WebSocket-Accept", 0);
  FUZZ_CHECK(headers[k].value_len == 28 &&
             memcmp(headers[k].value, ACCEPT, 28) == 0);
  size_t np = count(&res, "Sec-WebSocket-Protocol");
  FUZZ_CHECK(np <= 1);
  if (np == 1) {
    FUZZ_CHECK(protocols != NULL);
    k = wsuv_http_find(&res, "Sec-WebSocket-Protocol", 0);
    const wsuv_header_t *p = &headers[k];
    FUZZ_CHECK((p->value_len == 4 && memcmp(p->value, "chat", 4) == 0) ||
               (p->value_len == 9 && memcmp(p->value, "superchat", 9) == 0));
  }
  if (!extensions) {
    /* Nothing offered: any extension header must list nothing. */
    for (k = wsuv_http_find(&res, "Sec-WebSocket-Extensions", 0); k >= 0;
         k = wsuv_http_find(&res, "Sec-WebSocket-Extensions", (size_t)k + 1)) {
      const char *cur = headers[k].value, *tok;
      size_t tok_len;
      FUZZ_CHECK(!wsuv_token_next(&cur, headers[k].value + headers[k].value_len,
                                  &tok, &tok_len));
    }
  }
  free(buf);
  return 0;
}
