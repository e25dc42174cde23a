/* ws_conn.c: connection state machine over the message parser. Owes the
 * peer at most one pong and one close frame at a time, so its output is
 * bounded whatever the peer sends.
 *
 * With permessage-deflate the parser runs in stream mode whatever the
 * caller asked for: compressed pieces go to the inflater as they arrive and
 * are never stored, and the connection itself assembles whole messages
 * (inflated, or plain ones in several pieces) up to max_message. */
#include <string.h>

#include "ws_internal.h"
#include "wsuv_conn.h"

/* Message storage above this is given back once its message is out. */
#define PMD_BUF_KEEP 4096u
#define PMD_BUF_MIN  1024u

enum { TX_IDLE = 0, TX_DEFLATE, TX_PLAIN };

struct wsuv_conn_pmd_s {
  wsuv_deflate_t tx;
  wsuv_inflate_t rx;
  wsuv_allocator_t alloc;
  uint64_t max_message; /* on the inflated (delivered) size */
  size_t threshold;     /* whole messages shorter than this go plain */
  uint8_t stream;       /* the caller wants chunks */
  uint8_t tx_state;     /* TX_*: the message being sent */
  uint8_t rx_open;      /* a message is being received */
  uint8_t rx_type;      /* its event type */
  uint8_t rx_compressed;
  uint8_t rx_fin;        /* its last compressed piece went to the inflater */
  uint8_t rx_first_sent; /* streamed: a chunk of it went out */
  uint8_t rx_done;       /* a message went out: storage may go */
  uint8_t pending;       /* streamed: output owed for input taken */
  const uint8_t *pend_buf;
  size_t pend_off; /* bytes of pend_buf taken when output became owed */
  uint64_t rx_len; /* bytes of the message delivered or assembled */
  wsuv_utf8_t utf8;
  uint8_t *buf; /* the message (whole) or the chunk (streamed) */
  size_t buf_len, buf_cap;
};

static int pmd_init(wsuv_conn_t *c, const wsuv_conn_config_t *cfg,
                    wsuv_parser_config_t *pc) {
  wsuv_conn_pmd_t *P = wsuv__realloc(&cfg->parser.alloc, NULL, sizeof *P);
  if (!P) return WSUV_ENOMEM;
  memset(P, 0, sizeof *P);
  P->alloc = cfg->parser.alloc;
  wsuv_role_t role = cfg->parser.role;
  int r =
      wsuv_deflate_init(&P->tx, role, cfg->pmd, cfg->pmd_options, &P->alloc);
  if (r == 0) r = wsuv_inflate_init(&P->rx, role, cfg->pmd, &P->alloc);
  if (r != 0) {
    wsuv__realloc(&P->alloc, P, 0);
    return r;
  }
  const wsuv_pmd_options_t *o = cfg->pmd_options;
  P->threshold = o && o->threshold ? o->threshold : WSUV_PMD_DEFAULT_THRESHOLD;
  P->max_message = pc->max_message ? pc->max_message : WSUV_DEFAULT_MAX_MESSAGE;
  P->stream = pc->stream != 0;
  /* RFC 7692 6: RSV1 marks a compressed message. */
  pc->rsv_allowed |= WSUV_RSV1;
  /* The parser checks the wire size at each frame header, before any
   * payload (so "too big" never depends on how the input was split): plain
   * messages against max_message, compressed ones against what a message of
   * max_message bytes may take deflated (ws_frame.c, wire_limit). What
   * comes out of the inflater gets max_message exactly. */
  pc->stream = 1;
  c->pmd = P;
  return 0;
}

static void pmd_free(wsuv_conn_t *c) {
  wsuv_conn_pmd_t *P = c->pmd;
  if (!P) return;
  wsuv_deflate_free(&P->tx);
  wsuv_inflate_free(&P->rx);
  if (P->buf) wsuv__realloc(&P->alloc, P->buf, 0);
  wsuv__realloc(&P->alloc, P, 0);
  c->pmd = NULL;
}

int wsuv_conn_init(wsuv_conn_t *c, const wsuv_conn_config_t *cfg) {
  memset(c, 0, sizeof(*c));
  wsuv_parser_config_t pc = cfg->parser;
  int r = cfg->pmd ? pmd_init(c, cfg, &pc) : 0;
  if (r != 0) pc = cfg->parser;
  wsuv_parser_init(&c->parser, &pc);
  c->role = cfg->parser.role;
  c->genmask = cfg->genmask;
  c->genmask_ud = cfg->genmask_ud;
  c->state = WSUV_STATE_OPEN;
  return r;
}

#define OWED_PONG  0
#define OWED_CLOSE WSUV_MAX_CONTROL_PAYLOAD

static uint8_t *owed_buf(wsuv_conn_t *c) {
  if (!c->owed)
    c->owed =
        wsuv__realloc(&c->parser.cfg.alloc, NULL, 2 * WSUV_MAX_CONTROL_PAYLOAD);
  return c->owed;
}

static void owed_release(wsuv_conn_t *c) {
  if (c->owed) wsuv__realloc(&c->parser.cfg.alloc, c->owed, 0);
  c->owed = NULL;
}

void wsuv_conn_free(wsuv_conn_t *c) {
  owed_release(c);
  wsuv_parser_free(&c->parser);
  pmd_free(c);
}

/* Owes a close frame unless one was sent or owed already. Data frames may
 * still go out until the caller takes it (RFC 6455 5.5.1 lets an endpoint
 * finish sending its current message first). Without memory for it, no
 * close frame is owed: WSUV_ENOMEM. */
static int owe_close(wsuv_conn_t *c, const uint8_t *payload, size_t len) {
  if (c->close_sent || c->close_len) return 0;
  uint8_t *o = owed_buf(c);
  if (!o) return WSUV_ENOMEM;
  memcpy(o + OWED_CLOSE, payload, len);
  c->close_len = (uint8_t)(len + 1);
  return 0;
}

static void fail(wsuv_conn_t *c, int err) {
  uint8_t payload[2];
  int code = wsuv_err_close_code(err);
  payload[0] = (uint8_t)(code >> 8);
  payload[1] = (uint8_t)(code & 0xff);
  (void)owe_close(c, payload, sizeof(payload)); /* failing anyway */
  c->error = err;
  c->close_code = code;
  c->state = WSUV_STATE_CLOSED;
}

/* Bookkeeping for a control event the parser returned. */
static void on_event(wsuv_conn_t *c, const wsuv_event_t *ev) {
  switch (ev->type) {
  case WSUV_EV_PING:
    /* RFC 6455 5.5.3: a pong carries the ping's payload; answering only the
     * most recent ping is allowed. After we sent close, no pong is due. */
    if (!c->close_sent && !c->close_len) {
      uint8_t *o = owed_buf(c);
      if (!o) {
        fail(c, WSUV_ENOMEM);
        break;
      }
      memcpy(o + OWED_PONG, ev->data, ev->len);
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
    (void)owe_close(c, payload, plen); /* without memory: TCP close only */
    c->pong_len_set = 0;
    c->close_received = 1;
    c->close_code = ev->close_code;
    c->state = WSUV_STATE_CLOSED;
    break;
  }
  default:
    break;
  }
}

/* ---- Receiving with permessage-deflate --------------------------------- */

static size_t size_limit(uint64_t v) {
  return v < SIZE_MAX ? (size_t)v : SIZE_MAX;
}

/* Sets the message storage to exactly cap bytes. */
static int buf_resize(wsuv_conn_pmd_t *P, size_t cap) {
  uint8_t *nb = wsuv__realloc(&P->alloc, P->buf, cap);
  if (!nb && cap) return WSUV_ENOMEM;
  P->buf = nb;
  P->buf_cap = cap;
  return 0;
}

/* Room for need bytes, growing geometrically but never past limit. */
static int buf_reserve(wsuv_conn_pmd_t *P, size_t need, size_t limit) {
  if (need <= P->buf_cap) return 0;
  if (need > limit) return WSUV_ETOOBIG;
  size_t cap = P->buf_cap > SIZE_MAX / 2 ? SIZE_MAX : P->buf_cap * 2;
  if (cap < PMD_BUF_MIN) cap = PMD_BUF_MIN;
  if (cap > limit) cap = limit;
  if (cap < need) cap = need;
  return buf_resize(P, cap);
}

static void buf_release(wsuv_conn_pmd_t *P) {
  buf_resize(P, 0);
  P->buf_len = 0;
}

/* RFC 6455 8.1 and RFC 7692 6.1: inflated text is UTF-8, checked as it
 * comes out. */
static int rx_text(wsuv_conn_pmd_t *P, const uint8_t *p, size_t n) {
  if (P->rx_type != WSUV_EV_TEXT || n == 0) return 0;
  return wsuv_utf8_feed(&P->utf8, p, n);
}

static void rx_event(wsuv_conn_pmd_t *P, wsuv_event_t *ev, const uint8_t *data,
                     size_t len, int first, int fin) {
  *ev = (wsuv_event_t){.type = (wsuv_event_type_t)P->rx_type,
                       .data = data ? data : (const uint8_t *)"",
                       .len = len,
                       .first = (uint8_t)first,
                       .fin = (uint8_t)fin,
                       .compressed = P->rx_compressed};
  if (fin) {
    P->rx_open = 0;
    P->rx_done = 1;
  }
}

/* A piece of an uncompressed message: the parser checked its size and its
 * UTF-8. */
static int rx_plain(wsuv_conn_pmd_t *P, const wsuv_event_t *pe,
                    wsuv_event_t *ev) {
  if (P->stream || (pe->first && pe->fin)) {
    *ev = *pe; /* in place: zero copy */
    if (pe->fin) P->rx_open = 0;
    return 1;
  }
  int r = buf_reserve(P, P->buf_len + pe->len, size_limit(P->max_message));
  if (r) return r;
  if (pe->len) memcpy(P->buf + P->buf_len, pe->data, pe->len);
  P->buf_len += pe->len;
  if (!pe->fin) return 0;
  rx_event(P, ev, P->buf, P->buf_len, 1, 1);
  return 1;
}

/* Pulls one byte past the limit into the stack: any output means too big,
 * and nothing was allocated for it. */
static int rx_probe(wsuv_conn_pmd_t *P) {
  uint8_t probe;
  ssize_t n = wsuv_inflate_pull(&P->rx, &probe, 1);
  return n < 0 ? (int)n : n > 0 ? WSUV_ETOOBIG : 0;
}

/* Whole messages: inflates everything fed so far into P->buf. */
static int rx_whole(wsuv_conn_pmd_t *P, wsuv_event_t *ev) {
  size_t limit = size_limit(P->max_message);
  int r;
  for (;;) {
    if (P->buf_len == P->buf_cap) {
      if (P->buf_cap >= limit) {
        if ((r = rx_probe(P))) return r;
        break;
      }
      if ((r = buf_reserve(P, P->buf_len + 1, limit))) return r;
    }
    ssize_t n =
        wsuv_inflate_pull(&P->rx, P->buf + P->buf_len, P->buf_cap - P->buf_len);
    if (n < 0) return (int)n;
    if (n == 0) break;
    if ((r = rx_text(P, P->buf + P->buf_len, (size_t)n))) return r;
    P->buf_len += (size_t)n;
  }
  if (!P->rx_fin) return 0;
  if (P->rx_type == WSUV_EV_TEXT && !wsuv_utf8_complete(&P->utf8))
    return WSUV_EUTF8;
  rx_event(P, ev, P->buf, P->buf_len, 1, 1);
  return 1;
}

/* Streamed: hands out the next chunk inflated from what was fed. Returns 1
 * with an event (P->pending says whether more may follow for the same
 * input), 0 when the input is used up without one, or an error. */
static int rx_stream_out(wsuv_conn_pmd_t *P, wsuv_event_t *ev) {
  uint64_t room = P->max_message - P->rx_len;
  ssize_t n = 0;
  int r;
  P->pending = 0;
  if (room == 0) {
    if ((r = rx_probe(P))) return r;
  } else {
    size_t cap =
        room < WSUV_CONN_INFLATE_CHUNK ? (size_t)room : WSUV_CONN_INFLATE_CHUNK;
    if (P->buf_cap < cap && (r = buf_resize(P, cap))) return r;
    n = wsuv_inflate_pull(&P->rx, P->buf, cap);
    if (n < 0) return (int)n;
  }
  if (n == 0 && !P->rx_fin) return 0;
  if ((r = rx_text(P, P->buf, (size_t)n))) return r;
  P->rx_len += (uint64_t)n;
  P->pending = (uint8_t)(wsuv_inflate_busy(&P->rx) != 0);
  int fin = P->rx_fin && !P->pending;
  if (fin && P->rx_type == WSUV_EV_TEXT && !wsuv_utf8_complete(&P->utf8))
    return WSUV_EUTF8;
  rx_event(P, ev, n ? P->buf : NULL, (size_t)n, !P->rx_first_sent, fin);
  P->rx_first_sent = 1;
  return 1;
}

/* A TEXT/BINARY piece from the parser (stream mode). */
static int rx_data(wsuv_conn_pmd_t *P, const wsuv_event_t *pe,
                   wsuv_event_t *ev) {
  if (pe->first) {
    P->rx_open = 1;
    P->rx_type = (uint8_t)pe->type;
    P->rx_compressed = pe->compressed;
    P->rx_fin = 0;
    P->rx_first_sent = 0;
    P->rx_len = 0;
    P->buf_len = 0;
    wsuv_utf8_init(&P->utf8);
  }
  if (!P->rx_compressed) return rx_plain(P, pe, ev);
  int r = wsuv_inflate_feed(&P->rx, pe->data, pe->len, pe->fin);
  if (r) return r;
  P->rx_fin = pe->fin;
  return P->stream ? rx_stream_out(P, ev) : rx_whole(P, ev);
}

static ssize_t feed_fail(wsuv_conn_t *c, int err, wsuv_event_t *ev) {
  fail(c, err);
  c->pmd->pending = 0;
  *ev = (wsuv_event_t){.type = WSUV_EV_NONE,
                       .close_code = wsuv_err_close_code(err)};
  return err;
}

static ssize_t pmd_feed(wsuv_conn_t *c, uint8_t *buf, size_t len,
                        wsuv_event_t *ev) {
  wsuv_conn_pmd_t *P = c->pmd;
  size_t off = 0;
  int r;
  *ev = (wsuv_event_t){.type = WSUV_EV_NONE};
  if (P->pending) {
    /* The inflater reads input taken from this very buffer (wsuv_conn.h). */
    if (buf != P->pend_buf || len < P->pend_off)
      return feed_fail(c, WSUV_EINVAL, ev);
    off = P->pend_off;
    if ((r = rx_stream_out(P, ev)) < 0) return feed_fail(c, r, ev);
    if (r > 0) return P->pending ? 0 : (ssize_t)off;
  } else if (P->rx_done) {
    /* The last message's storage is free again: shrink it when big. */
    P->rx_done = 0;
    if (P->buf_cap > PMD_BUF_KEEP) buf_release(P);
  }
  while (off < len) {
    wsuv_event_t pe;
    ssize_t n = wsuv_parser_feed(&c->parser, buf + off, len - off, &pe);
    if (n < 0) {
      fail(c, (int)n);
      *ev = pe;
      return n;
    }
    off += (size_t)n;
    if (pe.type == WSUV_EV_NONE) break;
    if (pe.type != WSUV_EV_TEXT && pe.type != WSUV_EV_BINARY) {
      *ev = pe;
      on_event(c, ev);
      return (ssize_t)off;
    }
    if ((r = rx_data(P, &pe, ev)) < 0) return feed_fail(c, r, ev);
    if (r == 0) continue;
    if (!P->pending) return (ssize_t)off;
    P->pend_buf = buf;
    P->pend_off = off;
    return 0;
  }
  return (ssize_t)off;
}

ssize_t wsuv_conn_feed(wsuv_conn_t *c, uint8_t *buf, size_t len,
                       wsuv_event_t *ev) {
  if (c->state == WSUV_STATE_CLOSED) {
    memset(ev, 0, sizeof(*ev));
    return (ssize_t)len;
  }
  if (c->pmd) return pmd_feed(c, buf, len, ev);
  ssize_t n = wsuv_parser_feed(&c->parser, buf, len, ev);
  if (n < 0) {
    fail(c, (int)n);
    return n;
  }
  on_event(c, ev);
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
    n += put_frame(c, out + n, WSUV_OP_PONG, c->owed + OWED_PONG, c->pong_len);
    c->pong_len_set = 0;
  }
  if (c->close_len) {
    n += put_frame(c, out + n, WSUV_OP_CLOSE, c->owed + OWED_CLOSE,
                   (size_t)(c->close_len - 1));
    c->close_len = 0;
    c->close_sent = 1;
    if (c->state == WSUV_STATE_OPEN) c->state = WSUV_STATE_CLOSING;
  }
  owed_release(c);
  return n;
}

int wsuv_conn_may_start(const wsuv_conn_t *c) {
  /* RFC 6455 5.5.1: after sending a close frame, send no more data. */
  if (c->close_sent) return WSUV_ECLOSED;
  /* RFC 6455 5.4: no other message inside a fragmented one. */
  return c->streaming ? WSUV_ESTATE : 0;
}

ssize_t wsuv_conn_build_header(wsuv_conn_t *c, uint8_t *out, unsigned opcode,
                               unsigned flags, uint64_t len, uint8_t *mask) {
  if (c->close_sent) return WSUV_ECLOSED;
  switch (opcode) {
  case WSUV_OP_CONT:
    if (!c->streaming) return WSUV_EINVAL;
    break;
  case WSUV_OP_TEXT:
  case WSUV_OP_BINARY: {
    int err = wsuv_conn_may_start(c);
    if (err) return err;
    break;
  }
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
  /* RFC 6455 5.2: no RSV bit without an extension that defines it; RFC 7692
   * 6: RSV1 only on a data message's first frame. */
  if (flags & (WSUV_RSV2 | WSUV_RSV3)) return WSUV_EINVAL;
  if ((flags & WSUV_RSV1) &&
      (!c->pmd || (opcode != WSUV_OP_TEXT && opcode != WSUV_OP_BINARY)))
    return WSUV_EINVAL;
  const uint8_t *key = NULL;
  if (c->role == WSUV_ROLE_CLIENT) {
    c->genmask(c->genmask_ud, mask);
    key = mask;
  }
  if (opcode < WSUV_OP_CLOSE) c->streaming = !(flags & WSUV_FIN);
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
  return owe_close(c, payload, (size_t)n);
}

/* ---- Sending with permessage-deflate ----------------------------------- */

ssize_t wsuv_conn_compress(wsuv_conn_t *c, const uint8_t *in, size_t n,
                           unsigned flags, const uint8_t **out, unsigned *rsv) {
  wsuv_conn_pmd_t *P = c->pmd;
  int first = (flags & WSUV_SEND_FIRST) != 0,
      fin = (flags & WSUV_SEND_FIN) != 0;
  *out = in;
  *rsv = 0;
  /* RFC 6455 5.5.1: after sending a close frame, send no more data. */
  if (c->close_sent) return WSUV_ECLOSED;
  if (n > WSUV__SSIZE_MAX) return WSUV_EINVAL;
  if (!P) return (ssize_t)n;
  if (first != (P->tx_state == TX_IDLE)) return WSUV_ESTATE;
  if (first) {
    int plain = (flags & WSUV_SEND_PLAIN) || (fin && n < P->threshold);
    P->tx_state = plain ? TX_PLAIN : TX_DEFLATE;
  }
  if (P->tx_state == TX_PLAIN) {
    if (fin) P->tx_state = TX_IDLE;
    return (ssize_t)n;
  }
  const uint8_t *z;
  ssize_t r = wsuv_deflate_compress(&P->tx, in, n, fin, &z);
  if (r < 0 || fin) P->tx_state = TX_IDLE;
  if (r < 0) return r;
  /* With no context takeover the stream was just dropped, so sending the
   * original instead leaves no gap in the peer's window. */
  if (first && fin && (size_t)r >= n && P->tx.no_context_takeover)
    return (ssize_t)n;
  *out = z;
  /* RFC 7692 6: RSV1 on the first frame of a compressed message only. */
  *rsv = first ? WSUV_RSV1 : 0;
  return r;
}

void wsuv_conn_trim(wsuv_conn_t *c) {
  wsuv_conn_pmd_t *P = c->pmd;
  wsuv_parser_trim(&c->parser);
  if (!P) return;
  wsuv_deflate_trim(&P->tx);
  if (!P->rx_open && !P->pending) buf_release(P);
}

size_t wsuv_conn_pmd_memory(const wsuv_conn_t *c) {
  const wsuv_conn_pmd_t *P = c->pmd;
  if (!P) return 0;
  return sizeof *P + wsuv_deflate_memory(&P->tx) + P->tx.out_cap +
         wsuv_inflate_memory(&P->rx) + P->buf_cap;
}
