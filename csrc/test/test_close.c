/* test_close.c: close codes and payloads (RFC 6455 5.5.1, 7.4), and the
 * error table they are reported with. */
#include "wsuv.h"
#include "test.h"

static void test_code_valid(void) {
  static const struct {
    int code, valid;
  } t[] = {
      {0, 0},    {999, 0},  {1000, 1},  {1001, 1}, {1002, 1}, {1003, 1},
      {1004, 0}, {1005, 0}, {1006, 0},  {1007, 1}, {1008, 1}, {1009, 1},
      {1010, 1}, {1011, 1}, {1012, 1},  {1013, 1}, {1014, 1}, {1015, 0},
      {1016, 0}, {2000, 0}, {2999, 0},  {3000, 1}, {3999, 1}, {4000, 1},
      {4999, 1}, {5000, 0}, {65535, 0}, {-1, 0},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    if (wsuv_close_code_valid(t[i].code) != t[i].valid)
      fprintf(stderr, "close code %d\n", t[i].code);
    CHECK_EQ_INT(wsuv_close_code_valid(t[i].code), t[i].valid);
  }
}

static int parse(const char *p, size_t n, int *code, const uint8_t **reason,
                 size_t *rlen) {
  return wsuv_close_parse((const uint8_t *)p, n, code, reason, rlen);
}

static void test_parse(void) {
  int code = -1;
  const uint8_t *reason = NULL;
  size_t rlen = 99;
  const char *body = "\x03\xe8"
                     "bye";
  CHECK_EQ_INT(parse(body, 5, &code, &reason, &rlen), 0);
  CHECK_EQ_INT(code, 1000);
  CHECK(reason == (const uint8_t *)body + 2);
  CHECK_EQ_INT(rlen, 3);
  CHECK_MEM(reason, "bye", 3);
  /* Empty: 1005, no reason (RFC 6455 7.1.5). */
  code = -1;
  rlen = 99;
  CHECK_EQ_INT(parse("", 0, &code, &reason, &rlen), 0);
  CHECK_EQ_INT(code, 1005);
  CHECK_EQ_INT(rlen, 0);
  /* Code only. */
  CHECK_EQ_INT(parse("\x0f\xa0", 2, &code, &reason, &rlen), 0);
  CHECK_EQ_INT(code, 4000);
  CHECK_EQ_INT(rlen, 0);
  /* 1 byte: no room for a code. */
  CHECK_EQ_INT(parse("\x03", 1, &code, &reason, &rlen), WSUV_EPROTO);
  /* ... even when the byte after it would make a valid code. */
  CHECK_EQ_INT(parse("\x03\xe8", 1, &code, &reason, &rlen), WSUV_EPROTO);
  /* Codes that must not appear on the wire. */
  CHECK_EQ_INT(parse("\x03\xe7", 2, &code, &reason, &rlen), WSUV_EPROTO);
  CHECK_EQ_INT(parse("\x03\xed", 2, &code, &reason, &rlen), WSUV_EPROTO);
  CHECK_EQ_INT(parse("\x03\xee", 2, &code, &reason, &rlen), WSUV_EPROTO);
  CHECK_EQ_INT(parse("\x03\xf7", 2, &code, &reason, &rlen), WSUV_EPROTO);
  CHECK_EQ_INT(parse("\x00\x00", 2, &code, &reason, &rlen), WSUV_EPROTO);
  CHECK_EQ_INT(parse("\x13\x88", 2, &code, &reason, &rlen), WSUV_EPROTO);
  /* A reason that is not UTF-8: 1007 (RFC 6455 8.1). */
  CHECK_EQ_INT(parse("\x03\xe8\xc0\xaf", 4, &code, &reason, &rlen), WSUV_EUTF8);
  CHECK_EQ_INT(parse("\x03\xe8"
                     "ab\xed\xa0\x80",
                     7, &code, &reason, &rlen),
               WSUV_EUTF8);
  CHECK_EQ_INT(parse("\x03\xe8\xe2\x82", 4, &code, &reason, &rlen),
               WSUV_EUTF8); /* truncated at the end */
  /* A valid multi-byte reason. */
  CHECK_EQ_INT(parse("\x03\xe9\xce\xba\xe1\xbd\xb9", 7, &code, &reason, &rlen),
               0);
  CHECK_EQ_INT(code, 1001);
  CHECK_EQ_INT(rlen, 5);
  /* Over 125 bytes. */
  uint8_t big[126];
  memset(big, 'x', sizeof big);
  big[0] = 0x03, big[1] = 0xe8;
  CHECK_EQ_INT(wsuv_close_parse(big, 125, &code, &reason, &rlen), 0);
  CHECK_EQ_INT(rlen, 123);
  CHECK_EQ_INT(wsuv_close_parse(big, 126, &code, &reason, &rlen), WSUV_EPROTO);
}

static void test_build(void) {
  uint8_t out[WSUV_MAX_CONTROL_PAYLOAD];
  CHECK_EQ_INT(wsuv_close_build(out, 1000, "bye", 3), 5);
  CHECK_MEM(out,
            "\x03\xe8"
            "bye",
            5);
  CHECK_EQ_INT(wsuv_close_build(out, 4999, NULL, 0), 2);
  CHECK_MEM(out, "\x13\x87", 2);
  CHECK_EQ_INT(wsuv_close_build(out, 0, NULL, 0), 0);
  CHECK_EQ_INT(wsuv_close_build(out, 1005, "", 0), 0);
  CHECK_EQ_INT(wsuv_close_build(out, 1005, "x", 1), WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_close_build(out, 0, "x", 1), WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_close_build(out, 1006, NULL, 0), WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_close_build(out, 1004, NULL, 0), WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_close_build(out, 1015, NULL, 0), WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_close_build(out, 999, NULL, 0), WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_close_build(out, 5000, NULL, 0), WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_close_build(out, 1000, "\xff", 1), WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_close_build(out, 1000, NULL, 1), WSUV_EINVAL);
  char reason[124];
  memset(reason, 'r', sizeof reason);
  CHECK_EQ_INT(wsuv_close_build(out, 1000, reason, 123), 125);
  CHECK_EQ_INT(wsuv_close_build(out, 1000, reason, 124), WSUV_EINVAL);
}

/* What build writes, parse reads back, for every code on the wire. */
static void test_round_trip(void) {
  uint8_t out[WSUV_MAX_CONTROL_PAYLOAD];
  const char *reason = "going \xce\xba";
  long bad = 0, n = 0;
  for (int code = 0; code < 70000; code++) {
    if (!wsuv_close_code_valid(code)) {
      if (wsuv_close_build(out, code, "", 0) !=
          (code == 0 || code == 1005 ? 0 : WSUV_EINVAL))
        bad++;
      continue;
    }
    ssize_t len = wsuv_close_build(out, code, reason, strlen(reason));
    int got = 0;
    const uint8_t *r = NULL;
    size_t rlen = 0;
    if (len != (ssize_t)strlen(reason) + 2 ||
        wsuv_close_parse(out, (size_t)len, &got, &r, &rlen) != 0 ||
        got != code || rlen != strlen(reason) || memcmp(r, reason, rlen) != 0)
      bad++;
    n++;
  }
  CHECK_EQ_INT(bad, 0);
  CHECK_EQ_INT(n, 4 + 8 + 2000);
}

static void test_errno(void) {
  CHECK(strcmp(wsuv_err_name(WSUV_EPROTO), "EPROTO") == 0);
  CHECK(strcmp(wsuv_err_name(WSUV_EBUFFULL), "EBUFFULL") == 0);
  CHECK(strcmp(wsuv_err_name(-1), "UNKNOWN") == 0);
  CHECK(strcmp(wsuv_strerror(WSUV_EUTF8), "invalid UTF-8 in text") == 0);
  CHECK(strcmp(wsuv_strerror(0), "unknown error") == 0);
  CHECK_EQ_INT(wsuv_err_close_code(WSUV_EPROTO), 1002);
  CHECK_EQ_INT(wsuv_err_close_code(WSUV_EUTF8), 1007);
  CHECK_EQ_INT(wsuv_err_close_code(WSUV_ETOOBIG), 1009);
  CHECK_EQ_INT(wsuv_err_close_code(WSUV_ENOMEM), 1011);
  CHECK_EQ_INT(wsuv_err_close_code(WSUV_EEXTENSION), 1010);
  CHECK_EQ_INT(wsuv_err_close_code(WSUV_ETLS), 1015);
  CHECK(strcmp(wsuv_err_name(WSUV_EPROXY), "EPROXY") == 0);
  CHECK_EQ_INT(wsuv_err_close_code(12345), 1011);
  /* Every entry has a distinct name and a message. */
  int count = 0;
#define WSUV_XX(name, val, msg, close)                                         \
  CHECK(strcmp(wsuv_err_name(val), #name) == 0);                               \
  CHECK(strcmp(wsuv_strerror(val), msg) == 0);                                 \
  CHECK_EQ_INT(wsuv_err_close_code(val), close);                               \
  count++;
  WSUV_ERRNO_MAP(WSUV_XX)
#undef WSUV_XX
  CHECK_EQ_INT(count, 17);
}

int main(void) {
  test_code_valid();
  test_parse();
  test_build();
  test_round_trip();
  test_errno();
  return TEST_REPORT();
}
