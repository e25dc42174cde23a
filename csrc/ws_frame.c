/* ws_frame.c: frame headers (RFC 6455 5.2) and the message parser: bytes in,
 * one event out per call, resumable at any byte boundary. */
#include "ws_internal.h"

enum {
  ST_HEADER = 0, /* reading a frame header (maybe partly in p->hdr) */
  ST_DATA,       /* reading a TEXT/BINARY/CONT payload */
  ST_CTRL,       /* reading a control payload (maybe partly in p->ctrl) */
  ST_FAILED
};

/* Reassembly storage is kept from one message to the next: freeing a big
 * buffer after each message made every large message fault in fresh pages
 * (half the time of a 16 MiB echo). wsuv_parser_trim gives it back. */
#define BUF_MIN_CAP 1024u

ssize_t wsuv_frame_parse_header(const uint8_t *buf, size_t len,
                                wsuv_frame_header_t *h) {
  if (len < 2) return 0;
  unsigned len7 = buf[1] & 0x7Fu;
  size_t need = 2u +
                (len7 == 126   ? 2u
                 : len7 == 127 ? 8u
                               : 0u) +
                (buf[1] & 0x80u ? 4u : 0u);
  uint64_t plen = len7;
  if (len7 == 127) {
    if (len < 10) return 0;
    plen = wsuv__load64be(buf + 2);
    /* RFC 6455 5.2: the most significant bit of a 64-bit length MUST be 0. */
    if (plen >> 63) return WSUV_EPROTO;
  }
  if (len < need) return 0;
  if (len7 == 126) plen = wsuv__load16be(buf + 2);
  h->fin = (uint8_t)(buf[0] >> 7);
  h->rsv = (uint8_t)(buf[0] & 0x70u);
  h->opcode = (uint8_t)(buf[0] & 0x0Fu);
  h->masked = (uint8_t)(buf[1] >> 7);
  if (h->masked)
    memcpy(h->mask, buf + need - 4, 4);
  else
    memset(h->mask, 0, 4);
  h->payload_len = plen;
  return (ssize_t)need;
}

size_t wsuv_frame_build_header(uint8_t *out, unsigned flags, unsigned opcode,
                               uint64_t len, const uint8_t *mask) {
  uint8_t mbit = mask ? 0x80 : 0;
  size_t n;
  out[0] = (uint8_t)((flags & 0xF0u) | (opcode & 0x0Fu));
  /* RFC 6455 5.2: the minimal number of bytes MUST be used for the length. */
  if (len < 126) {
    out[1] = (uint8_t)(mbit | len);
    n = 2;
  } else if (len <= 0xFFFF) {
    out[1] = (uint8_t)(mbit | 126);
    wsuv__store16be(out + 2, (uint16_t)len);
    n = 4;
  } else {
    out[1] = (uint8_t)(mbit | 127);
    wsuv__store64be(out + 2, len);
    n = 10;
  }
  if (mask) {
    memcpy(out + n, mask, 4);
    n += 4;
  }
  return n;
}

/* The most bytes a message may take on the wire. A compressed one (RFC
 * 7692) may take more than it inflates to: deflate stores incompressible
 * data with 5 bytes per block, and fixed Huffman codes take up to 9 bits a
 * byte. An eighth more and 64 bytes covers any encoder, so a peer's
 * incompressible message of max_message bytes passes; its inflated size is
 * the caller's to limit. */
static uint64_t wire_limit(uint64_t max_message, int compressed) {
  if (!compressed) return max_message;
  uint64_t slack = max_message / 8 + 64;
  return max_message > UINT64_MAX - slack ? UINT64_MAX : max_message + slack;
}

void wsuv_parser_init(wsuv_parser_t *p, const wsuv_parser_config_t *cfg) {
  *p = (wsuv_parser_t){.state = ST_HEADER};
  if (cfg) p->cfg = *cfg;
  if (!p->cfg.max_message) p->cfg.max_message = WSUV_DEFAULT_MAX_MESSAGE;
  if (!p->cfg.max_frame)
    p->cfg.max_frame =
        wire_limit(p->cfg.max_message, (p->cfg.rsv_allowed & WSUV_RSV1) != 0);
}

static void buf_release(wsuv_parser_t *p) {
  if (p->buf) wsuv__realloc(&p->cfg.alloc, p->buf, 0);
  p->buf = NULL;
  p->buf_len = p->buf_cap = 0;
}

static void ctrl_release(wsuv_parser_t *p) {
  if (p->ctrl) wsuv__realloc(&p->cfg.alloc, p->ctrl, 0);
  p->ctrl = NULL;
}

void wsuv_parser_free(wsuv_parser_t *p) {
  buf_release(p);
  ctrl_release(p);
}

void wsuv_parser_trim(wsuv_parser_t *p) {
  if (!p->msg_opcode) buf_release(p); /* not in the middle of a message */
  if (p->state != ST_CTRL) ctrl_release(p);
}

/* Makes room for n more bytes in p->buf, growing geometrically but never
 * past the message's wire limit (the frame header check already bounds the
 * total): how the input was split must not change what is delivered. */
static int buf_reserve(wsuv_parser_t *p, size_t n) {
  if (n > SIZE_MAX - p->buf_len) return WSUV_ETOOBIG;
  size_t need = p->buf_len + n;
  if (need <= p->buf_cap) return 0;
  uint64_t wire = wire_limit(p->cfg.max_message, p->msg_compressed);
  size_t limit = wire < SIZE_MAX ? (size_t)wire : SIZE_MAX;
  if (need > limit) return WSUV_ETOOBIG;
  size_t cap = p->buf_cap > SIZE_MAX / 2 ? SIZE_MAX : p->buf_cap * 2;
  if (cap < BUF_MIN_CAP) cap = BUF_MIN_CAP;
  if (cap > limit) cap = limit;
  if (cap < need) cap = need;
  uint8_t *nb = wsuv__realloc(&p->cfg.alloc, p->buf, cap);
  if (!nb) return WSUV_ENOMEM;
  p->buf = nb;
  p->buf_cap = cap;
  return 0;
}

/* Reads header bytes; returns 1 with p->frame filled, 0 when all of src
 * went into p->hdr, or a negative error. *used is set in every case. */
static int read_header(wsuv_parser_t *p, const uint8_t *src, size_t avail,
                       size_t *used) {
  size_t have = p->hdr_len;
  ssize_t r;
  if (have == 0) {
    /* Common case: parse straight from the input, no copy. */
    r = wsuv_frame_parse_header(src, avail, &p->frame);
    if (r > 0) *used = (size_t)r;
  } else {
    size_t take = sizeof p->hdr - have;
    if (take > avail) take = avail;
    memcpy(p->hdr + have, src, take);
    r = wsuv_frame_parse_header(p->hdr, have + take, &p->frame);
    if (r > 0) *used = (size_t)r - have;
  }
  if (r > 0) {
    p->hdr_len = 0;
    return 1;
  }
  *used = 0;
  if (r < 0) return (int)r;
  /* Incomplete: fewer than WSUV_MAX_FRAME_HEADER bytes in all, keep them. */
  size_t take = sizeof p->hdr - have;
  if (take > avail) take = avail;
  memcpy(p->hdr + have, src, take);
  p->hdr_len = (uint8_t)(have + take);
  *used = take;
  return 0;
}

/* Checks a complete header against the connection's state. */
static int frame_check(const wsuv_parser_t *p) {
  const wsuv_frame_header_t *f = &p->frame;
  if (f->opcode & 0x8u) {
    /* RFC 6455 5.2: opcodes 0xB-0xF are reserved; 5.2 says a recipient
     * receiving one MUST fail the connection. */
    if (f->opcode > WSUV_OP_PONG) return WSUV_EPROTO;
    /* RFC 6455 5.5: control frames MUST NOT be fragmented and MUST have a
     * payload of 125 bytes or less. */
    if (!f->fin || f->payload_len > WSUV_MAX_CONTROL_PAYLOAD)
      return WSUV_EPROTO;
    /* RFC 6455 5.2: RSV bits MUST be 0 unless an extension defines them;
     * RFC 7692 6: permessage-deflate defines RSV1 on data frames only. */
    if (f->rsv) return WSUV_EPROTO;
  } else {
    /* RFC 6455 5.2: opcodes 3-7 are reserved for further data frames. */
    if (f->opcode > WSUV_OP_BINARY) return WSUV_EPROTO;
    if (f->opcode == WSUV_OP_CONT) {
      /* RFC 6455 5.4: a continuation belongs to a started message. */
      if (!p->msg_opcode) return WSUV_EPROTO;
      /* RFC 7692 6.1: RSV1 is set on the first frame of a message only. */
      if (f->rsv) return WSUV_EPROTO;
    } else {
      /* RFC 6455 5.4: fragments of different messages MUST NOT interleave. */
      if (p->msg_opcode) return WSUV_EPROTO;
      /* RFC 6455 5.2: RSV bits the negotiated extensions do not define MUST
       * fail the connection. */
      if (f->rsv & ~(p->cfg.rsv_allowed & 0x70u)) return WSUV_EPROTO;
    }
  }
  /* RFC 6455 5.1: a server MUST fail on an unmasked frame, a client on a
   * masked one (5.3 for the client side). */
  if (p->cfg.role == WSUV_ROLE_SERVER ? !f->masked : f->masked)
    return WSUV_EPROTO;
  if (!(f->opcode & 0x8u)) {
    /* RFC 6455 10.4: limit frame and message sizes; 7.4.1: 1009. Checked
     * on the 64-bit length, before anything is sized from it. */
    if (f->payload_len > p->cfg.max_frame) return WSUV_ETOOBIG;
    uint64_t room = p->cfg.max_message;
    if (f->opcode == WSUV_OP_CONT) {
      if (p->msg_compressed) room = wire_limit(room, 1);
      room -= p->msg_len;
    } else if (f->rsv & WSUV_RSV1) {
      room = wire_limit(room, 1);
    }
    if (f->payload_len > room) return WSUV_ETOOBIG;
  }
  return 0;
}

/* Sets up the parser for the payload of the frame just read. */
static void frame_begin(wsuv_parser_t *p) {
  const wsuv_frame_header_t *f = &p->frame;
  p->frame_left = f->payload_len;
  p->mask_pos = 0;
  if (f->opcode & 0x8u) {
    p->ctrl_len = 0;
    p->state = ST_CTRL;
    return;
  }
  if (f->opcode != WSUV_OP_CONT) {
    p->msg_opcode = f->opcode;
    p->msg_compressed = (f->rsv & WSUV_RSV1) != 0;
    p->msg_first_sent = 0;
    p->msg_len = 0;
    p->buf_len = 0;
    wsuv_utf8_init(&p->utf8);
  }
  p->msg_len += f->payload_len;
  p->state = ST_DATA;
}

/* Payload bytes of the current frame available in avail input bytes. */
static size_t frame_take(const wsuv_parser_t *p, size_t avail) {
  return p->frame_left < avail ? (size_t)p->frame_left : avail;
}

static void unmask(wsuv_parser_t *p, uint8_t *d, size_t n) {
  if (p->frame.masked)
    p->mask_pos = wsuv_mask(d, n, p->frame.mask, p->mask_pos);
}

static int ctrl_event(const wsuv_parser_t *p, const uint8_t *data, size_t len,
                      wsuv_event_t *ev) {
  ev->first = ev->fin = 1;
  ev->data = data;
  ev->len = len;
  switch (p->frame.opcode) {
  case WSUV_OP_PING:
    ev->type = WSUV_EV_PING;
    return 1;
  case WSUV_OP_PONG:
    ev->type = WSUV_EV_PONG;
    return 1;
  default: {
    int code;
    /* RFC 6455 5.5.1 and 7.4: 1-byte bodies and bad codes are protocol
     * errors, a reason that is not UTF-8 fails with 1007 (8.1). */
    int r = wsuv_close_parse(data, len, &code, &ev->data, &ev->len);
    if (r) return r;
    ev->type = WSUV_EV_CLOSE;
    ev->close_code = code;
    return 1;
  }
  }
}

/* Control payload: zero-copy when it is all in the input, else gathered
 * in p->ctrl. Returns 1 with an event, 0 for more input, or an error. */
static int ctrl_step(wsuv_parser_t *p, uint8_t *src, size_t avail, size_t *used,
                     wsuv_event_t *ev) {
  size_t n = frame_take(p, avail);
  const uint8_t *data = src;
  size_t len = n;
  if (p->ctrl_len || n < p->frame_left) {
    if (!p->ctrl) {
      p->ctrl = wsuv__realloc(&p->cfg.alloc, NULL, WSUV_MAX_CONTROL_PAYLOAD);
      if (!p->ctrl) return WSUV_ENOMEM;
    }
    if (p->frame.masked)
      p->mask_pos = wsuv_mask_copy(p->ctrl + p->ctrl_len, src, n, p->frame.mask,
                                   p->mask_pos);
    else if (n)
      memcpy(p->ctrl + p->ctrl_len, src, n);
    p->ctrl_len += n;
    data = p->ctrl;
    len = p->ctrl_len;
  } else {
    unmask(p, src, n);
  }
  *used = n;
  p->frame_left -= n;
  if (p->frame_left) return 0;
  p->state = ST_HEADER;
  return ctrl_event(p, data, len, ev);
}

static int msg_is_text(const wsuv_parser_t *p) {
  /* RFC 7692 6.1: compressed text is validated after inflating. */
  return p->msg_opcode == WSUV_OP_TEXT && !p->msg_compressed;
}

/* Fills ev with (a chunk of) the current message; ends it when fin. */
static int msg_event(wsuv_parser_t *p, const uint8_t *data, size_t len, int fin,
                     wsuv_event_t *ev) {
  /* RFC 6455 8.1: a text message MUST be whole UTF-8 at its end. */
  if (fin && msg_is_text(p) && !wsuv_utf8_complete(&p->utf8)) return WSUV_EUTF8;
  ev->type = p->msg_opcode == WSUV_OP_TEXT ? WSUV_EV_TEXT : WSUV_EV_BINARY;
  ev->data = data ? data : (const uint8_t *)"";
  ev->len = len;
  ev->first = !p->msg_first_sent;
  ev->fin = (uint8_t)(fin != 0);
  ev->compressed = p->msg_compressed;
  p->msg_first_sent = 1;
  if (fin) {
    p->msg_opcode = 0;
    p->msg_len = 0;
  }
  return 1;
}

/* Validates n just-unmasked text bytes as soon as they arrive. */
static int text_feed(wsuv_parser_t *p, const uint8_t *d, size_t n) {
  /* RFC 6455 8.1: fail on invalid UTF-8 as soon as it is seen. */
  if (msg_is_text(p) && n) return wsuv_utf8_feed(&p->utf8, d, n);
  return 0;
}

/* Data payload, stream mode: each piece is delivered in place. */
static int stream_step(wsuv_parser_t *p, uint8_t *src, size_t avail,
                       size_t *used, wsuv_event_t *ev) {
  size_t n = frame_take(p, avail);
  unmask(p, src, n);
  int r = text_feed(p, src, n);
  if (r) return r;
  *used = n;
  p->frame_left -= n;
  if (p->frame_left == 0) p->state = ST_HEADER;
  int fin = p->frame_left == 0 && p->frame.fin;
  if (n == 0 && !fin) return 0; /* empty non-final fragment: nothing to say */
  return msg_event(p, src, n, fin, ev);
}

/* Data payload, whole messages: zero-copy for an unfragmented frame that is
 * all in the input, else reassembled in p->buf. */
static int data_step(wsuv_parser_t *p, uint8_t *src, size_t avail, size_t *used,
                     wsuv_event_t *ev) {
  if (p->cfg.stream) return stream_step(p, src, avail, used, ev);
  size_t n = frame_take(p, avail);
  int r;
  *used = 0;
  if (p->frame.opcode != WSUV_OP_CONT && p->frame.fin &&
      p->frame_left == p->frame.payload_len && n == p->frame_left) {
    unmask(p, src, n);
    if ((r = text_feed(p, src, n))) return r;
    *used = n;
    p->frame_left = 0;
    p->state = ST_HEADER;
    return msg_event(p, src, n, 1, ev);
  }
  if (n) {
    if ((r = buf_reserve(p, n))) return r;
    uint8_t *dst = p->buf + p->buf_len;
    if (p->frame.masked)
      p->mask_pos = wsuv_mask_copy(dst, src, n, p->frame.mask, p->mask_pos);
    else
      memcpy(dst, src, n);
    p->buf_len += n;
    if ((r = text_feed(p, dst, n))) return r;
  }
  *used = n;
  p->frame_left -= n;
  if (p->frame_left) return 0;
  p->state = ST_HEADER;
  if (!p->frame.fin) return 0;
  size_t len = p->buf_len;
  p->buf_len = 0; /* storage is reused; ev->data stays valid until then */
  return msg_event(p, p->buf, len, 1, ev);
}

static ssize_t fail(wsuv_parser_t *p, int err, wsuv_event_t *ev) {
  p->err = err;
  p->state = ST_FAILED;
  buf_release(p);
  ev->type = WSUV_EV_NONE;
  ev->data = NULL;
  ev->len = 0;
  ev->close_code = wsuv_err_close_code(err);
  return err;
}

ssize_t wsuv_parser_feed(wsuv_parser_t *p, uint8_t *buf, size_t len,
                         wsuv_event_t *ev) {
  *ev = (wsuv_event_t){.type = WSUV_EV_NONE};
  if (p->err) return fail(p, p->err, ev);
  if (len > WSUV__SSIZE_MAX) len = WSUV__SSIZE_MAX;
  size_t off = 0;
  for (;;) {
    size_t used = 0;
    int r;
    if (p->state == ST_HEADER) {
      if (off == len) break;
      r = read_header(p, buf + off, len - off, &used);
      off += used;
      if (r < 0) return fail(p, r, ev);
      if (r == 0) break;
      if ((r = frame_check(p))) return fail(p, r, ev);
      frame_begin(p);
      continue; /* a zero-length payload completes right away */
    }
    if (p->frame_left && off == len) break;
    if (p->state == ST_CTRL)
      r = ctrl_step(p, buf + off, len - off, &used, ev);
    else
      r = data_step(p, buf + off, len - off, &used, ev);
    off += used;
    if (r < 0) return fail(p, r, ev);
    if (r > 0) return (ssize_t)off;
  }
  return (ssize_t)off;
}
