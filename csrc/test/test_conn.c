/* test_conn.c: the connection state machine (ws_conn.c): pongs owed,
 * the closing handshake, failure close codes, masking of what a client
 * sends, and data refused once a close frame went out. */
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "wsuv_conn.h"

static void fixed_mask(void *ud, uint8_t key[4]) {
  (void)ud;
  memcpy(key, "\x37\xfa\x21\x3d", 4);
}

static void init(wsuv_conn_t *c, wsuv_role_t role) {
  wsuv_conn_config_t cfg = {.parser = {.role = role}, .genmask = fixed_mask};
  wsuv_conn_init(c, &cfg);
}

/* Feeds bytes (a copy, since the parser unmasks in place) and returns the
 * first event's type, or the negative error. */
static int feed(wsuv_conn_t *c, const char *bytes, size_t n, wsuv_event_t *ev) {
  uint8_t buf[256];
  memcpy(buf, bytes, n);
  ssize_t r = wsuv_conn_feed(c, buf, n, ev);
  return r < 0 ? (int)r : (int)ev->type;
}

static void test_ping_owes_pong(void) {
  wsuv_conn_t c;
  wsuv_event_t ev;
  init(&c, WSUV_ROLE_CLIENT);
  CHECK(!wsuv_conn_want_write(&c));
  /* RFC 6455 5.7: unmasked ping "Hello" from a server. */
  CHECK_EQ_INT(feed(&c, "\x89\x05Hello", 7, &ev), WSUV_EV_PING);
  CHECK(wsuv_conn_want_write(&c));
  uint8_t out[WSUV_CONN_OUTPUT_MAX];
  size_t n = wsuv_conn_take_output(&c, out, sizeof(out));
  /* A client's pong is masked: the RFC's masked pong example. */
  CHECK_EQ_INT(n, 11);
  CHECK_MEM(out, "\x8a\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", 11);
  CHECK(!wsuv_conn_want_write(&c));
  wsuv_conn_free(&c);
}

static void test_only_latest_pong(void) {
  wsuv_conn_t c;
  wsuv_event_t ev;
  init(&c, WSUV_ROLE_SERVER);
  feed(&c, "\x89\x81\0\0\0\0a", 7, &ev);
  feed(&c, "\x89\x81\0\0\0\0b", 7, &ev);
  uint8_t out[WSUV_CONN_OUTPUT_MAX];
  size_t n = wsuv_conn_take_output(&c, out, sizeof(out));
  CHECK_EQ_INT(n, 3);
  CHECK_MEM(out,
            "\x8a\x01"
            "b",
            3);
  wsuv_conn_free(&c);
}

static void test_peer_close_is_echoed(void) {
  wsuv_conn_t c;
  wsuv_event_t ev;
  init(&c, WSUV_ROLE_SERVER);
  /* Masked close 1000 "bye" with a zero key. */
  CHECK_EQ_INT(feed(&c,
                    "\x88\x85\0\0\0\0\x03\xe8"
                    "bye",
                    11, &ev),
               WSUV_EV_CLOSE);
  CHECK_EQ_INT(ev.close_code, 1000);
  CHECK_EQ_INT(c.state, WSUV_STATE_CLOSED);
  /* Data may still go out before the owed close is taken (5.5.1). */
  uint8_t hdr[WSUV_MAX_FRAME_HEADER], key[4];
  CHECK(wsuv_conn_build_header(&c, hdr, WSUV_OP_TEXT, WSUV_FIN, 2, key) > 0);
  uint8_t out[WSUV_CONN_OUTPUT_MAX];
  size_t n = wsuv_conn_take_output(&c, out, sizeof(out));
  CHECK_EQ_INT(n, 4);
  CHECK_MEM(out, "\x88\x02\x03\xe8", 4);
  CHECK_EQ_INT(wsuv_conn_build_header(&c, hdr, WSUV_OP_TEXT, WSUV_FIN, 2, key),
               WSUV_ECLOSED);
  /* Input after the close is discarded. */
  CHECK_EQ_INT(feed(&c, "\x81\x80\0\0\0\0", 6, &ev), WSUV_EV_NONE);
  wsuv_conn_free(&c);
}

static void test_empty_close_is_answered_empty(void) {
  wsuv_conn_t c;
  wsuv_event_t ev;
  init(&c, WSUV_ROLE_SERVER);
  CHECK_EQ_INT(feed(&c, "\x88\x80\0\0\0\0", 6, &ev), WSUV_EV_CLOSE);
  CHECK_EQ_INT(ev.close_code, 1005);
  uint8_t out[WSUV_CONN_OUTPUT_MAX];
  CHECK_EQ_INT(wsuv_conn_take_output(&c, out, sizeof(out)), 2);
  CHECK_MEM(out, "\x88\x00", 2);
  wsuv_conn_free(&c);
}

static void test_failures_close_with_code(void) {
  static const struct {
    const char *bytes;
    size_t len;
    int err, code;
  } cases[] = {
      {"\x81\x05Hello", 7, WSUV_EPROTO, 1002},    /* unmasked to server */
      {"\x83\x80\0\0\0\0", 6, WSUV_EPROTO, 1002}, /* reserved opcode */
      {"\x81\x82\0\0\0\0\xc0\xaf", 8, WSUV_EUTF8, 1007}, /* overlong */
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    wsuv_conn_t c;
    wsuv_event_t ev;
    init(&c, WSUV_ROLE_SERVER);
    CHECK_EQ_INT(feed(&c, cases[i].bytes, cases[i].len, &ev), cases[i].err);
    CHECK_EQ_INT(c.state, WSUV_STATE_CLOSED);
    CHECK_EQ_INT(c.close_code, cases[i].code);
    uint8_t out[WSUV_CONN_OUTPUT_MAX];
    CHECK_EQ_INT(wsuv_conn_take_output(&c, out, sizeof(out)), 4);
    CHECK_EQ_INT((out[2] << 8) | out[3], cases[i].code);
    wsuv_conn_free(&c);
  }
}

static void test_our_close(void) {
  wsuv_conn_t c;
  wsuv_event_t ev;
  init(&c, WSUV_ROLE_CLIENT);
  CHECK_EQ_INT(wsuv_conn_close(&c, 1004, "", 0), WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_conn_close(&c, 1000, "\xc0\xaf", 2), WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_conn_close(&c, 4000, "bye", 3), 0);
  CHECK_EQ_INT(wsuv_conn_close(&c, 4000, "bye", 3), WSUV_ECLOSED);
  uint8_t out[WSUV_CONN_OUTPUT_MAX];
  size_t n = wsuv_conn_take_output(&c, out, sizeof(out));
  CHECK_EQ_INT(n, 2 + 4 + 5);
  CHECK_EQ_INT(out[0], 0x88);
  CHECK_EQ_INT(out[1], 0x85); /* masked, 5 bytes */
  CHECK_EQ_INT(c.state, WSUV_STATE_CLOSING);
  /* No pong is owed once we sent close. */
  feed(&c, "\x89\x00", 2, &ev);
  CHECK(!wsuv_conn_want_write(&c));
  CHECK_EQ_INT(feed(&c, "\x88\x02\x0f\xa0", 4, &ev), WSUV_EV_CLOSE);
  CHECK_EQ_INT(ev.close_code, 4000);
  CHECK_EQ_INT(c.state, WSUV_STATE_CLOSED);
  CHECK(!wsuv_conn_want_write(&c)); /* Our close already went out. */
  wsuv_conn_free(&c);
}

static void test_control_frame_limits(void) {
  wsuv_conn_t c;
  init(&c, WSUV_ROLE_SERVER);
  uint8_t hdr[WSUV_MAX_FRAME_HEADER], key[4];
  CHECK_EQ_INT(
      wsuv_conn_build_header(&c, hdr, WSUV_OP_PING, WSUV_FIN, 126, key),
      WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_conn_build_header(&c, hdr, WSUV_OP_PING, 0, 1, key),
               WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_conn_build_header(&c, hdr, 3, WSUV_FIN, 1, key),
               WSUV_EINVAL);
  CHECK_EQ_INT(
      wsuv_conn_build_header(&c, hdr, WSUV_OP_BINARY, WSUV_FIN, 256, key), 4);
  CHECK_MEM(hdr, "\x82\x7e\x01\x00", 4);
  wsuv_conn_free(&c);
}

/* RFC 6455 5.4: a fragmented message's frames come in a row, with only
 * control frames between them. */
static void test_fragmented_send_order(void) {
  wsuv_conn_t c;
  init(&c, WSUV_ROLE_SERVER);
  uint8_t hdr[WSUV_MAX_FRAME_HEADER], key[4];
  CHECK_EQ_INT(wsuv_conn_build_header(&c, hdr, WSUV_OP_CONT, WSUV_FIN, 1, key),
               WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_conn_may_start(&c), 0);
  CHECK_EQ_INT(wsuv_conn_build_header(&c, hdr, WSUV_OP_TEXT, 0, 1, key), 2);
  CHECK_EQ_INT(wsuv_conn_may_start(&c), WSUV_ESTATE);
  CHECK_EQ_INT(
      wsuv_conn_build_header(&c, hdr, WSUV_OP_BINARY, WSUV_FIN, 1, key),
      WSUV_ESTATE);
  CHECK_EQ_INT(wsuv_conn_build_header(&c, hdr, WSUV_OP_TEXT, WSUV_FIN, 1, key),
               WSUV_ESTATE);
  CHECK_EQ_INT(wsuv_conn_build_header(&c, hdr, WSUV_OP_PING, WSUV_FIN, 1, key),
               2);
  CHECK_EQ_INT(wsuv_conn_build_header(&c, hdr, WSUV_OP_CONT, 0, 1, key), 2);
  CHECK_EQ_INT(wsuv_conn_build_header(&c, hdr, WSUV_OP_CONT, WSUV_FIN, 1, key),
               2);
  CHECK_MEM(hdr, "\x80\x01", 2);
  /* The message is finished: a new one may start, a continuation may not. */
  CHECK_EQ_INT(wsuv_conn_build_header(&c, hdr, WSUV_OP_CONT, WSUV_FIN, 1, key),
               WSUV_EINVAL);
  CHECK_EQ_INT(wsuv_conn_may_start(&c), 0);
  CHECK_EQ_INT(
      wsuv_conn_build_header(&c, hdr, WSUV_OP_BINARY, WSUV_FIN, 1, key), 2);
  CHECK_EQ_INT(wsuv_conn_build_header(&c, hdr, WSUV_OP_CLOSE, WSUV_FIN, 0, key),
               2);
  CHECK_EQ_INT(wsuv_conn_may_start(&c), WSUV_ECLOSED);
  wsuv_conn_free(&c);
}

/* An allocator that fails every allocation when *ud is nonzero. */
static void *flaky_alloc(void *ud, void *ptr, size_t nsize) {
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  return *(int *)ud ? NULL : realloc(ptr, nsize);
}

/* Pong and close payloads take memory only while a frame is owed, so an
 * idle connection holds none; without that memory a ping fails the
 * connection with ENOMEM (close code 1011) instead of losing the pong. */
static void test_owed_memory(void) {
  int fail_alloc = 0;
  wsuv_conn_config_t cfg = {
      .parser = {.role = WSUV_ROLE_SERVER,
                 .alloc = {.fn = flaky_alloc, .ud = &fail_alloc}},
      .genmask = fixed_mask};
  wsuv_conn_t c;
  wsuv_event_t ev;
  wsuv_conn_init(&c, &cfg);
  CHECK(c.owed == NULL);
  feed(&c, "\x89\x81\0\0\0\0a", 7, &ev);
  CHECK(c.owed != NULL);
  uint8_t out[WSUV_CONN_OUTPUT_MAX];
  CHECK_EQ_INT(wsuv_conn_take_output(&c, out, sizeof(out)), 3);
  CHECK(c.owed == NULL);
  fail_alloc = 1;
  CHECK_EQ_INT(feed(&c, "\x89\x81\0\0\0\0b", 7, &ev), WSUV_EV_PING);
  CHECK_EQ_INT(c.error, WSUV_ENOMEM);
  CHECK_EQ_INT(c.close_code, 1011);
  CHECK(c.state == WSUV_STATE_CLOSED);
  CHECK(!wsuv_conn_want_write(&c));
  CHECK_EQ_INT(wsuv_conn_close(&c, 1000, "", 0), WSUV_ENOMEM);
  wsuv_conn_free(&c);
}

int main(void) {
  test_ping_owes_pong();
  test_only_latest_pong();
  test_peer_close_is_echoed();
  test_empty_close_is_answered_empty();
  test_failures_close_with_code();
  test_our_close();
  test_control_frame_limits();
  test_fragmented_send_order();
  test_owed_memory();
  return TEST_REPORT();
}
