/* fuzz_handshake_req.c: the server's side of the opening handshake:
 * wsuv_http_parse_request, then wsuv_handshake_check_request (RFC 6455
 * 4.2.1), then the response built for it.
 *
 * Input: [chunk size][config][request bytes...]. The config byte picks the
 * header array's capacity and max_head, so both limits are hit. The request
 * arrives in chunks and is re-parsed as it grows (chunk.h).
 *
 * Checks: the answer does not depend on the split; a parsed head's pointers
 * all lie inside the input; check_request answers 0, ENOTUPGRADE, 400 or 426
 * and explains refusals; an accepted key is 24 bytes of the input; and the
 * 101 response built for an accepted request (with its first subprotocol)
 * parses and passes wsuv_handshake_check_response, as a client would check
 * it. A refusal's plain response parses with its status too. */
#include "chunk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const size_t max_heads[4] = {0, 64, 256, 1024};
  fuzz_chunker_t c;
  fuzz_chunker_init(&c, data, size);
  uint8_t conf = fuzz_take_byte(&c.p, &c.n);
  size_t capacity = (conf & 15u) + 1u;
  size_t max_head = max_heads[(conf >> 4) & 3u];

  wsuv_header_t headers[16];
  wsuv_http_head_t req = {.headers = headers, .num_headers = capacity};
  char *buf;
  ssize_t r = fuzz_http_parse_chunked(wsuv_http_parse_request, c.p, c.n,
                                      c.chunk, max_head, &req, &buf);
  if (r <= 0) {
    free(buf);
    return 0;
  }

  const char *key = NULL, *why = NULL;
  size_t key_len = 0;
  int st = wsuv_handshake_check_request(&req, &key, &key_len, &why);
  FUZZ_CHECK(st == 0 || st == WSUV_ENOTUPGRADE || st == 400 || st == 426);
  char out[2048];
  if (st != 0) {
    FUZZ_CHECK(why != NULL && strlen(why) > 0);
    if (st == WSUV_ENOTUPGRADE) {
      free(buf);
      return 0;
    }
    /* The refusal a server sends back is a well-formed response. */
    ssize_t n = wsuv_http_build_response(out, sizeof out, st, NULL, 0, why,
                                         strlen(why));
    FUZZ_CHECK(n > 0 && (size_t)n <= sizeof out);
    wsuv_header_t rh[16];
    wsuv_http_head_t res = {.headers = rh, .num_headers = 16};
    FUZZ_CHECK(wsuv_http_parse_response(out, (size_t)n, 0, &res) > 0);
    FUZZ_CHECK(res.status == st);
    free(buf);
    return 0;
  }

  FUZZ_CHECK(key_len == 24 && fuzz_within(key, key_len, buf, (size_t)r));
  char key_z[25], accept[29];
  memcpy(key_z, key, 24);
  key_z[24] = '\0';
  FUZZ_CHECK(wsuv_accept_key(key, key_len, accept) == 0);
  FUZZ_CHECK(strlen(accept) == 28);

  /* Offer: the request's first Sec-WebSocket-Protocol header; choose its
   * first element, as a server preferring the client's order would. */
  char offered[256] = "", chosen[256] = "";
  int k = wsuv_http_find(&req, "Sec-WebSocket-Protocol", 0);
  if (k >= 0 && headers[k].value_len < sizeof offered) {
    memcpy(offered, headers[k].value, headers[k].value_len);
    offered[headers[k].value_len] = '\0';
    const char *cur = offered, *tok;
    size_t tok_len;
    if (wsuv_token_next(&cur, offered + strlen(offered), &tok, &tok_len)) {
      memcpy(chosen, tok, tok_len);
      chosen[tok_len] = '\0';
    }
  }
  const char *proto = chosen[0] ? chosen : NULL;
  ssize_t n = wsuv_handshake_build_response(out, sizeof out, key, key_len,
                                            proto, NULL, NULL, 0);
  if (n == WSUV_EINVAL) {
    /* Only a subprotocol that cannot be sent back as a token. */
    FUZZ_CHECK(proto != NULL);
    free(buf);
    return 0;
  }
  FUZZ_CHECK(n > 0 && (size_t)n <= sizeof out);
  wsuv_header_t rh[16];
  wsuv_http_head_t res = {.headers = rh, .num_headers = 16};
  FUZZ_CHECK(wsuv_http_parse_response(out, (size_t)n, 0, &res) == n);
  FUZZ_CHECK(res.status == 101);
  const char *cwhy = NULL;
  int cr = wsuv_handshake_check_response(&res, key_z, proto ? offered : NULL,
                                         NULL, &cwhy);
  if (cr != 0) {
    fprintf(stderr, "check_response refused our own 101: %s\n",
            cwhy ? cwhy : "?");
    abort();
  }
  free(buf);
  return 0;
}
