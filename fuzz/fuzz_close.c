/* fuzz_close.c: close payloads (RFC 6455 5.5.1, 7.4), parse and build.
 *
 * Input: [chunk size][payload...]. The payload is parsed whole (close
 * frames are reassembled before parsing); the chunk size byte doubles as a
 * selector for the build checks. Checks against a reference written here:
 * which codes are valid on the wire; that parse accepts exactly the
 * payloads it should, with the right error otherwise; that reason points
 * into the payload; that build(parse(x)) == x; and that build rejects
 * exactly the codes and reasons it should. */
#include "chunk.h"
#include "wsuv.h"

#include <string.h>

/* RFC 6455 7.4.1/7.4.2 and the IANA registry: codes a peer may send. */
static int ref_code_valid(int code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_chunker_t c;
  fuzz_chunker_init(&c, data, size);
  size_t n = c.n;
  uint8_t *p = malloc(n ? n : 1); /* exact size: ASan sees overreads */
  FUZZ_CHECK(p != NULL);
  if (n) memcpy(p, c.p, n);

  /* Code validity over the whole 16-bit range a payload can carry, and a
   * few values outside it, from the input. */
  int probe = n >= 2 ? (p[0] << 8 | p[1]) : (int)c.chunk * 19;
  FUZZ_CHECK(!wsuv_close_code_valid(probe) == !ref_code_valid(probe));
  FUZZ_CHECK(!wsuv_close_code_valid(-probe) == !ref_code_valid(-probe));
  FUZZ_CHECK(!wsuv_close_code_valid(probe + 65536));

  int code = -1;
  const uint8_t *reason = NULL;
  size_t reason_len = 99999;
  int r = wsuv_close_parse(p, n, &code, &reason, &reason_len);

  int bad_proto = n == 1 || n > WSUV_MAX_CONTROL_PAYLOAD ||
                  (n >= 2 && !ref_code_valid(probe));
  int bad_utf8 = n > 2 && !wsuv_utf8_valid(p + 2, n - 2);
  if (bad_proto && bad_utf8) {
    /* Either fault may be reported first. */
    FUZZ_CHECK(r == WSUV_EPROTO || r == WSUV_EUTF8);
  } else if (bad_proto) {
    FUZZ_CHECK(r == WSUV_EPROTO);
  } else if (bad_utf8) {
    FUZZ_CHECK(r == WSUV_EUTF8);
  } else {
    FUZZ_CHECK(r == 0);
  }

  uint8_t out[WSUV_MAX_CONTROL_PAYLOAD + 16];
  if (r == 0) {
    if (n == 0) {
      /* RFC 6455 7.1.5: no status code received is reported as 1005. */
      FUZZ_CHECK(code == 1005 && reason_len == 0);
      FUZZ_CHECK(wsuv_close_build(out, 1005, "", 0) == 0);
      FUZZ_CHECK(wsuv_close_build(out, 0, NULL, 0) == 0);
    } else {
      FUZZ_CHECK(code == probe);
      FUZZ_CHECK(reason == p + 2 && reason_len == n - 2);
      /* Round trip: building what was parsed gives the same bytes. */
      ssize_t b = wsuv_close_build(out, code, (const char *)reason, reason_len);
      FUZZ_CHECK(b == (ssize_t)n);
      FUZZ_CHECK(memcmp(out, p, n) == 0);
    }
  }

  /* Build from an arbitrary code and reason taken from the input. */
  int bcode = n >= 2 ? probe : (int)c.chunk * 17;
  size_t blen = n > 2 ? n - 2 : 0;
  const char *breason = (const char *)(n > 2 ? p + 2 : p);
  memset(out, 0xA5, sizeof out);
  ssize_t b = wsuv_close_build(out, bcode, breason, blen);
  int empty_code = bcode == 0 || bcode == 1005;
  int bad = empty_code ? blen != 0
                       : (!ref_code_valid(bcode) || blen > 123 ||
                          !wsuv_utf8_valid((const uint8_t *)breason, blen));
  if (bad) {
    FUZZ_CHECK(b == WSUV_EINVAL);
  } else {
    FUZZ_CHECK(b == (empty_code ? 0 : (ssize_t)(2 + blen)));
    for (size_t i = (size_t)b; i < sizeof out; i++)
      FUZZ_CHECK(out[i] == 0xA5); /* nothing written past the payload */
    int code2;
    const uint8_t *reason2;
    size_t len2;
    FUZZ_CHECK(wsuv_close_parse(out, (size_t)b, &code2, &reason2, &len2) == 0);
    FUZZ_CHECK(code2 == (empty_code ? 1005 : bcode) && len2 == blen);
    FUZZ_CHECK(blen == 0 || memcmp(reason2, breason, blen) == 0);
  }
  free(p);
  return 0;
}
