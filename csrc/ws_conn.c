/* ws_conn.c: connection state machine over the message parser. Owes the
 * peer at most one pong and one close frame at a time, so its output is
 * bounded whatever the peer sends. */
#include <string.h>

#include "wsuv_conn.h"

void wsuv_conn_init(wsuv_conn_t *c, const wsuv_conn_config_t *cfg) {
  memset(c, 0, sizeof(*c));
  wsuv_parser_init(&c->parser, &cfg->parser);
  c->role = cfg->parser.role;
  c->genmask = cfg->genmask;
  c->genmask_ud = cfg->genmask_ud;
  c->state = WSUV_STATE_OPEN;
}

void wsuv_conn_free(wsuv_conn_t *c) {
  wsuv_parser_free(&c->parser);
}

/* Owes a close frame unless one was sent or owed already. Data frames may
 * still go out until the caller takes it (RFC 6455 5.5.1 lets an endpoint
 * finish sending its current message first). */
static void owe_close(wsuv_conn_t *c, const uint8_t *payload, size_t len) {
  if (c->close_sent || c->close_len) return;
  memcpy(c->close_payload, payload, len);
  c->close_len = (uint8_t)(len + 1);
}

static void fail(wsuv_conn_t *c, int err) {
  uint8_t payload[2];
  int code = wsuv_err_close_code(err);
  payload[0] = (uint8_t)(code >> 8);
  payload[1] = (uint8_t)(code & 0xff);
  owe_close(c, payload, sizeof(payload));
  c->error = err;
  c->close_code = code;
  c->state = WSUV_STATE_CLOSED;
}

ssize_t wsuv_conn_feed(wsuv_conn_t *c, uint8_t *buf, size_t len,
                       wsuv_event_t *ev) {
  if (c->state == WSUV_STATE_CLOSED) {
    memset(ev, 0, sizeof(*ev));
    return (ssize_t)len;
  }
  ssize_t n = wsuv_parser_feed(&c->parser, buf, len, ev);
  if (n < 0) {
    fail(c, (int)n);
    return n;
  }
  switch (ev->type) {
  case WSUV_EV_PING:
    /* RFC 6455 5.5.3: a pong carries the ping's payload; answering only the
     * most recent ping is allowed. After we sent close, no pong is due. */
    if (!c->close_sent && !c->close_len) {
      memcpy(c->pong, ev->data, ev->len);
      c->pong_len = (uint8_t)ev->len;
      c->pong_len_set = 1;
    }
    break;
  case WSUV_EV_CLOSE: {
    /* RFC 6455 5.5.1: reply with a close frame, echoing the status code.
     * 1005 means the peer sent none, so neither do we. */
    uint8_t payload[2];
    size_t plen = 0;
    if (ev->close_code != 1005) {
      payload[0] = (uint8_t)(ev->close_code >> 8);
      payload[1] = (uint8_t)(ev->close_code & 0xff);
      plen = 2;
    }
    owe_close(c, payload, plen);
    c->pong_len_set = 0;
    c->close_received = 1;
    c->close_code = ev->close_code;
    c->state = WSUV_STATE_CLOSED;
    break;
  }
  default:
    break;
  }
  return n;
}

int wsuv_conn_want_write(const wsuv_conn_t *c) {
  return c->pong_len_set || c->close_len;
}

static size_t put_frame(wsuv_conn_t *c, uint8_t *out, unsigned opcode,
                        const uint8_t *payload, size_t len) {
  uint8_t key[4];
  const uint8_t *mask = NULL;
  if (c->role == WSUV_ROLE_CLIENT) {
    c->genmask(c->genmask_ud, key);
    mask = key;
  }
  size_t h = wsuv_frame_build_header(out, WSUV_FIN, opcode, len, mask);
  if (mask)
    wsuv_mask_copy(out + h, payload, len, key, 0);
  else
    memcpy(out + h, payload, len);
  return h + len;
}

size_t wsuv_conn_take_output(wsuv_conn_t *c, uint8_t *out, size_t cap) {
  size_t n = 0;
  if (cap < WSUV_CONN_OUTPUT_MAX) return 0;
  if (c->pong_len_set) {
    n += put_frame(c, out + n, WSUV_OP_PONG, c->pong, c->pong_len);
    c->pong_len_set = 0;
  }
  if (c->close_len) {
    n += put_frame(c, out + n, WSUV_OP_CLOSE, c->close_payload,
                   (size_t)(c->close_len - 1));
    c->close_len = 0;
    c->close_sent = 1;
    if (c->state == WSUV_STATE_OPEN) c->state = WSUV_STATE_CLOSING;
  }
  return n;
}

ssize_t wsuv_conn_build_header(wsuv_conn_t *c, uint8_t *out, unsigned opcode,
                               unsigned flags, uint64_t len, uint8_t *mask) {
  /* RFC 6455 5.5.1: after sending a close frame, send no more data. */
  if (c->close_sent) return WSUV_ECLOSED;
  switch (opcode) {
  case WSUV_OP_CONT:
  case WSUV_OP_TEXT:
  case WSUV_OP_BINARY:
    break;
  case WSUV_OP_CLOSE:
  case WSUV_OP_PING:
  case WSUV_OP_PONG:
    /* RFC 6455 5.5: control frames are short and never fragmented. */
    if (len > WSUV_MAX_CONTROL_PAYLOAD || !(flags & WSUV_FIN))
      return WSUV_EINVAL;
    break;
  default:
    return WSUV_EINVAL;
  }
  const uint8_t *key = NULL;
  if (c->role == WSUV_ROLE_CLIENT) {
    c->genmask(c->genmask_ud, mask);
    key = mask;
  }
  if (opcode == WSUV_OP_CLOSE) {
    c->close_sent = 1;
    if (c->state == WSUV_STATE_OPEN) c->state = WSUV_STATE_CLOSING;
  }
  return (ssize_t)wsuv_frame_build_header(out, flags, opcode, len, key);
}

int wsuv_conn_close(wsuv_conn_t *c, int code, const char *reason,
                    size_t reason_len) {
  uint8_t payload[125];
  if (c->close_sent || c->close_len) return WSUV_ECLOSED;
  ssize_t n = 0;
  if (code != 0) {
    n = wsuv_close_build(payload, code, reason, reason_len);
    if (n < 0) return (int)n;
  } else if (reason_len > 0) {
    return WSUV_EINVAL;
  }
  owe_close(c, payload, (size_t)n);
  return 0;
}
