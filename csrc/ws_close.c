/* ws_close.c: close frame payloads (RFC 6455 5.5.1, 7.4). */
#include "ws_internal.h"

int wsuv_close_code_valid(int code) {
  /* RFC 6455 7.4.1: 1004, 1005, 1006 and 1015 are reserved and MUST NOT be
   * sent; 1012-1014 were registered with IANA later (RFC 6455 11.7);
   * 3000-4999 belong to libraries and applications; the rest is unassigned. */
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

int wsuv_close_parse(const uint8_t *p, size_t n, int *code,
                     const uint8_t **reason, size_t *reason_len) {
  *reason = p;
  *reason_len = 0;
  if (n == 0) {
    /* RFC 6455 7.1.5: no status code received reads as 1005. */
    *code = 1005;
    return 0;
  }
  /* RFC 6455 5.5.1: a body starts with a 2-byte code; 5.5: at most 125. */
  if (n == 1 || n > WSUV_MAX_CONTROL_PAYLOAD) return WSUV_EPROTO;
  int c = wsuv__load16be(p);
  /* RFC 6455 7.4: a code not allowed on the wire is a protocol error. */
  if (!wsuv_close_code_valid(c)) return WSUV_EPROTO;
  /* RFC 6455 5.5.1: the reason is UTF-8 (8.1: invalid fails with 1007). */
  if (!wsuv_utf8_valid(p + 2, n - 2)) return WSUV_EUTF8;
  *code = c;
  *reason = p + 2;
  *reason_len = n - 2;
  return 0;
}

ssize_t wsuv_close_build(uint8_t *out, int code, const char *reason,
                         size_t reason_len) {
  if (reason_len && !reason) return WSUV_EINVAL;
  if (code == 0 || code == 1005) return reason_len ? WSUV_EINVAL : 0;
  if (!wsuv_close_code_valid(code)) return WSUV_EINVAL;
  /* RFC 6455 5.5: 2 code bytes + reason fit the 125-byte control limit. */
  if (reason_len > WSUV_MAX_CONTROL_PAYLOAD - 2) return WSUV_EINVAL;
  if (!wsuv_utf8_valid((const uint8_t *)reason, reason_len)) return WSUV_EINVAL;
  wsuv__store16be(out, (uint16_t)code);
  if (reason_len) memcpy(out + 2, reason, reason_len);
  return (ssize_t)(reason_len + 2);
}
