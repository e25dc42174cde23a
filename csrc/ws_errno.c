/* ws_errno.c: names, messages and close codes from WSUV_ERRNO_MAP. */
#include "ws_internal.h"

const char *wsuv_err_name(int err) {
  switch (err) {
#define WSUV_XX(name, val, msg, close)                                         \
  case WSUV_##name:                                                            \
    return #name;
    WSUV_ERRNO_MAP(WSUV_XX)
#undef WSUV_XX
  default:
    return "UNKNOWN";
  }
}

const char *wsuv_strerror(int err) {
  switch (err) {
#define WSUV_XX(name, val, msg, close)                                         \
  case WSUV_##name:                                                            \
    return msg;
    WSUV_ERRNO_MAP(WSUV_XX)
#undef WSUV_XX
  default:
    return "unknown error";
  }
}

int wsuv_err_close_code(int err) {
  switch (err) {
#define WSUV_XX(name, val, msg, close)                                         \
  case WSUV_##name:                                                            \
    return close;
    WSUV_ERRNO_MAP(WSUV_XX)
#undef WSUV_XX
  default:
    return 1011; /* RFC 6455 7.4.1: internal error */
  }
}
