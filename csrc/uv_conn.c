/* uv_conn.c: WebSocket connections and listeners over libuv TCP.
 *
 * Reads land in the loop's one shared buffer and are consumed before
 * read_cb returns: the parser unmasks in place and the binding copies each
 * message out. Only a partial message is kept per connection (inside the
 * parser). Writes are corked: frames queue as segments (bytes in out[], or
 * lent payloads) and go out in one vectored write per flush. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "uv_internal.h"

#define MAX_HEADERS WSUV_DEFAULT_MAX_HEADERS
#define OUT_SMALL   256  /* output buffers of these sizes are recycled: */
#define OUT_POOLED  2048 /* a pass's small replies need no more */
#define SPARE_MAX   256  /* ... at most this many of each per loop */
#define OUT_BURST   (256 * 1024) /* their bytes held before a flush */
/* What an unread message counts for in recv_queued besides its payload (a
 * Lua string and a queue slot): a peer sending empty messages to a server
 * that does not read them still meets max_unread. */
#define MSG_OVERHEAD    64
#define MAX_REJECT_BODY (64 * 1024)
#define STACK_BUFS      16
#define TRIM_MS         1000         /* idle time before big buffers go back */
#define TLS_KEEP        (256 * 1024) /* BIO buffers kept while busy */

/* wsuv_tconn_t.shutting: the write side's end. */
enum {
  SHUT_WANTED = 1, /* FIN once the queue drains */
  SHUT_SENT,       /* FIN sent (or close_notify and FIN) */
  SHUT_DEAD        /* a write failed: output is dropped, input read out */
};

typedef struct {
  uv_write_t req;
  wsuv_tconn_t *c;
  uint8_t *out;
  wsuv_seg_t *segs;
  size_t out_cap;
  size_t nsegs;
  size_t bytes;
} wreq_t;

static void close_handle(wsuv_tconn_t *c);
static void finish(wsuv_tconn_t *c);
static void handle_input(wsuv_tconn_t *c, uint8_t *buf, size_t len);
static void proxy_head(wsuv_tconn_t *c);
static void try_next_addr(wsuv_tconn_t *c);
static int flush_conn(wsuv_tconn_t *c);
static void out_free(wsuv_loop_t *l, uint8_t *out, size_t cap);

void wsuv__set_error(wsuv_tconn_t *c, int err, const char *why) {
  if (c->error) return; /* The first cause is the one to report. */
  c->error = err;
  free(c->why);
  c->why = NULL;
  if (why) {
    size_t n = strlen(why);
    c->why = malloc(n + 1);
    if (c->why) memcpy(c->why, why, n + 1);
  }
}

static void set_errorf(wsuv_tconn_t *c, int err, const char *op,
                       const char *what) {
  char msg[256];
  snprintf(msg, sizeof(msg), "%s: %s", op, what);
  wsuv__set_error(c, err, msg);
}

static const char *errstr(int err) {
  return err <= -30000 ? wsuv_strerror(err) : uv_strerror(err);
}

static void genmask(void *ud, uint8_t key[4]) {
  (void)ud;
  /* RFC 6455 5.3: mask keys MUST come from a strong source of entropy. */
  if (RAND_bytes(key, 4) != 1)
    abort(); /* No entropy: continuing would leak predictable masks. */
}

static void limits_release(wsuv_limits_t *lim) {
  if (lim && --lim->refs == 0) free(lim);
}

/* lim: a client's own limits (copied); shared: a listener's, referenced. */
static wsuv_tconn_t *conn_new(wsuv_loop_t *l, wsuv_role_t role,
                              const wsuv_limits_t *lim, wsuv_limits_t *shared) {
  wsuv_tconn_t *c = calloc(1, sizeof(*c));
  if (!c) return NULL;
  c->hs = calloc(1, sizeof(*c->hs));
  if (!c->hs) {
    free(c);
    return NULL;
  }
  c->obj.kind = WSUV_OBJ_CONN;
  c->loop = l;
  c->role = role;
  if (shared) {
    c->lim = shared;
  } else {
    c->lim = calloc(1, sizeof(*c->lim));
    if (!c->lim) {
      free(c->hs);
      free(c);
      return NULL;
    }
    if (lim) *c->lim = *lim;
    wsuv__limits_default(c->lim);
    c->lim->refs = 0;
  }
  c->lim->refs++;
  if (uv_tcp_init(l->uv, &c->tcp) != 0) {
    limits_release(c->lim);
    free(c->hs);
    free(c);
    return NULL;
  }
  c->tcp.data = c;
  c->tcp_open = 1;
  c->next = l->conns;
  if (l->conns) l->conns->prev = c;
  l->conns = c;
  l->nconns++;
  c->last_recv = c->last_activity = wsuv__now(l);
  return c;
}

static void unlink_conn(wsuv_tconn_t *c) {
  wsuv_loop_t *l = c->loop;
  if (c->prev)
    c->prev->next = c->next;
  else if (l->conns == c)
    l->conns = c->next;
  else
    return; /* Not linked. */
  if (c->next) c->next->prev = c->prev;
  c->next = c->prev = NULL;
  l->nconns--;
}

static void unlink_dirty(wsuv_tconn_t *c) {
  if (!c->dirty) return;
  wsuv_tconn_t **p = &c->loop->dirty;
  while (*p && *p != c)
    p = &(*p)->next_dirty;
  if (*p) *p = c->next_dirty;
  c->dirty = 0;
}

static void unlink_pending(wsuv_tconn_t *c) {
  wsuv_tserver_t *s = c->server;
  if (!s) return;
  wsuv_tconn_t **p = &s->pending_head, *prev = NULL;
  while (*p && *p != c) {
    prev = *p;
    p = &(*p)->next_pending;
  }
  if (!*p) return;
  *p = c->next_pending;
  if (s->pending_tail == c) s->pending_tail = prev;
  c->next_pending = NULL;
  s->npending--;
}

static void release_segs(wsuv_seg_t *segs, size_t n) {
  if (!segs) return; /* the implicit segment: no pins */
  for (size_t i = 0; i < n; i++) {
    wsuv_pin_t *pin = segs[i].pin;
    if (pin && --pin->refs == 0) pin->release(pin);
  }
}

static void free_handshake(wsuv_tconn_t *c) {
  wsuv_handshake_t *hs = c->hs;
  if (!hs) return;
  if (hs->gai) hs->gai->data = NULL; /* gai_cb frees it. */
  if (hs->addrs) uv_freeaddrinfo(hs->addrs);
  free(hs->head);
  free(hs->hdrs);
  free(hs->offer_protocols);
  free(hs->offer_extensions);
  free(hs->request);
  free(hs->pmd_offer);
  free(hs->proxy_request);
  wsuv__tls_free(hs->tls_later);
  free(hs);
  c->hs = NULL;
}

static void close_cb(uv_handle_t *h) {
  wsuv_tconn_t *c = h->data;
  wsuv_loop_t *l = c->loop;
  if (c->retry) {
    /* A failed attempt: the handle is gone, try the next address. */
    c->retry = 0;
    uv_tcp_init(l->uv, &c->tcp);
    c->tcp.data = c;
    c->tcp_open = 1;
    try_next_addr(c);
    return;
  }
  wsuv__unready(l, &c->obj);
  if (l->hooks.freed) l->hooks.freed(&c->obj);
  release_segs(c->segs, c->nsegs);
  free(c->segs);
  out_free(l, c->out, c->out_cap);
  free(c->why);
  free(c->protocol);
  free(c->extensions);
  free_handshake(c);
  if (c->ws_inited) wsuv_conn_free(&c->ws);
  wsuv__tls_free(c->tls);
  limits_release(c->lim);
  free(c);
}

/* Closes the socket now; close_cb frees c. */
static void close_handle(wsuv_tconn_t *c) {
  int closing_already = !c->tcp_open;
  if (closing_already && !c->retry) return;
  c->retry = 0; /* Aborted between two connect attempts: just go. */
  c->tcp_open = 0;
  if (c->ws_inited) c->ws.state = WSUV_STATE_CLOSED;
  c->phase = WSUV_PHASE_CLOSED;
  unlink_conn(c);
  unlink_dirty(c);
  /* Off the server now: it clears c->server only on the connections still
   * listed, and its close callback, which frees it, may run before ours. */
  unlink_pending(c);
  if (c->server) c->server->nconns--;
  c->server = NULL;
  wsuv__ready(c->loop, &c->obj);
  if (!closing_already) uv_close((uv_handle_t *)&c->tcp, close_cb);
}

void wsuv__abort(wsuv_tconn_t *c, int err, const char *why) {
  if (err) wsuv__set_error(c, err, why);
  if (c->hs && c->hs->gai) uv_cancel((uv_req_t *)c->hs->gai);
  close_handle(c);
}

static void fail(wsuv_tconn_t *c, int err, const char *op) {
  set_errorf(c, err, op, errstr(err));
  close_handle(c);
}

/* A write failed. After a reset by the peer, what it sent before the reset
 * may still wait in the socket, unread: closing now would lose those
 * messages. So output is dropped from here on (SHUT_DEAD: writes are sunk,
 * no FIN) and input is read to its end; on_eof, or close_timeout, closes the
 * handle, and the failure is reported after the messages. */
static void write_failed(wsuv_tconn_t *c, int err) {
  if (!c->tcp_open) return;
  set_errorf(c, err, "write", errstr(err));
  if (c->shutting == SHUT_DEAD) return;
  if ((err != UV_EPIPE && err != UV_ECONNRESET) || !c->ws_inited || c->eof) {
    close_handle(c);
    return;
  }
  c->shutting = SHUT_DEAD;
  if (c->phase == WSUV_PHASE_OPEN) c->phase = WSUV_PHASE_CLOSING;
  if (!c->ws.close_received) c->ws.close_code = 1006;
  c->deadline = wsuv__now(c->loop) + c->lim->close_timeout;
  c->drain_wanted = 0;
  wsuv__ready(c->loop, &c->obj); /* Lua learns that sending is over */
}

/* ---- Output ------------------------------------------------------------ */

/* Output buffers live only while a connection has something to send, and
 * most are small: the loop recycles those of OUT_SMALL and OUT_POOLED bytes
 * instead of a malloc and free per connection per pass. A connection starts
 * with a small one, so a pass in which 10,000 connections each queue a
 * short reply takes 2.5 MB rather than 20 MB. */
static int out_pool(size_t cap) {
  return cap == OUT_SMALL ? 0 : cap == OUT_POOLED ? 1 : -1;
}

static void out_free(wsuv_loop_t *l, uint8_t *out, size_t cap) {
  if (!out) return;
  int k = out_pool(cap);
  if (k >= 0) l->out_bytes -= cap;
  if (k >= 0 && l->spare[k].n < SPARE_MAX) {
    if (!l->spare[k].bufs)
      l->spare[k].bufs = malloc(SPARE_MAX * sizeof(*l->spare[k].bufs));
    if (l->spare[k].bufs) {
      l->spare[k].bufs[l->spare[k].n++] = out;
      return;
    }
  }
  free(out);
}

static uint8_t *out_take(wsuv_loop_t *l, size_t cap) {
  int k = out_pool(cap);
  uint8_t *p = l->spare[k].n ? l->spare[k].bufs[--l->spare[k].n] : malloc(cap);
  if (p) l->out_bytes += cap;
  return p;
}

void wsuv__spare_trim(wsuv_loop_t *l, int all) {
  for (int k = 0; k < 2; k++) {
    size_t left = all ? 0 : l->spare[k].n / 2;
    while (l->spare[k].n > left)
      free(l->spare[k].bufs[--l->spare[k].n]);
    if (!l->spare[k].n) {
      free(l->spare[k].bufs);
      l->spare[k].bufs = NULL;
    }
  }
}

static uint8_t *out_reserve(wsuv_tconn_t *c, size_t n) {
  wsuv_loop_t *l = c->loop;
  if (!c->out && n <= OUT_POOLED) {
    /* When the output buffers of the pass pass OUT_BURST (10,000
     * connections replying at once), what they hold is written first, so
     * they come back for reuse and a burst's memory stays bounded; a pass of
     * a hundred connections never gets there. Only before c queues anything
     * (not dirty): what its caller is building must not move. */
    if (l->out_bytes >= OUT_BURST && !c->dirty) wsuv__loop_flush(l);
    size_t cap = n <= OUT_SMALL ? OUT_SMALL : OUT_POOLED;
    c->out = out_take(l, cap);
    if (!c->out) return NULL;
    c->out_cap = cap;
  }
  if (c->out_cap - c->out_len < n) {
    size_t need = c->out_len + n;
    if (need < c->out_len) return NULL;
    if (c->out_cap == OUT_SMALL && need <= OUT_POOLED) {
      uint8_t *big = out_take(l, OUT_POOLED);
      if (!big) return NULL;
      memcpy(big, c->out, c->out_len);
      out_free(l, c->out, c->out_cap);
      c->out = big;
      c->out_cap = OUT_POOLED;
      return c->out + c->out_len;
    }
    size_t cap = c->out_cap ? c->out_cap : OUT_POOLED;
    while (cap < need)
      cap = cap * 2 > cap ? cap * 2 : need;
    uint8_t *p = realloc(c->out, cap);
    if (!p) return NULL;
    if (out_pool(c->out_cap) >= 0) l->out_bytes -= c->out_cap; /* not pooled */
    c->out = p;
    c->out_cap = cap;
  }
  return c->out + c->out_len;
}

/* Until a payload is pinned, the output is out[0..out_len) alone: nsegs is
 * 1 and no list is built (most passes never pin anything). */
static wsuv_seg_t *out_segs(wsuv_tconn_t *c, wsuv_seg_t *one) {
  if (c->segs) return c->segs;
  *one = (wsuv_seg_t){.ptr = NULL, .off = 0, .len = c->out_len, .pin = NULL};
  return one;
}

/* Makes room for n more segments in the list. */
static int seg_room(wsuv_tconn_t *c, size_t n) {
  if (!c->segs) {
    c->segs = malloc(8 * sizeof(*c->segs));
    if (!c->segs) return WSUV_ENOMEM;
    c->segs_cap = 8;
    if (c->nsegs) c->segs[0] = (wsuv_seg_t){.off = 0, .len = c->out_len};
  }
  if (c->segs_cap - c->nsegs >= n) return 0;
  size_t cap = c->segs_cap * 2;
  while (cap - c->nsegs < n)
    cap *= 2;
  wsuv_seg_t *s = realloc(c->segs, cap * sizeof(*s));
  if (!s) return WSUV_ENOMEM;
  c->segs = s;
  c->segs_cap = cap;
  return 0;
}

static int seg_push(wsuv_tconn_t *c, const uint8_t *ptr, size_t off, size_t len,
                    wsuv_pin_t *pin) {
  if (len == 0) return 0;
  if (!c->segs && !ptr) {
    c->nsegs = 1; /* out[] grows at its end: still one range */
    return 0;
  }
  if (c->segs && c->nsegs) {
    wsuv_seg_t *last = &c->segs[c->nsegs - 1];
    /* Contiguous bytes in out[], or in one pinned buffer: one segment. */
    if (!ptr ? !last->ptr && last->off + last->len == off
             : last->ptr && last->pin == pin && last->ptr + last->len == ptr) {
      last->len += len;
      return 0;
    }
  }
  if (seg_room(c, 1) != 0) return WSUV_ENOMEM;
  c->segs[c->nsegs++] =
      (wsuv_seg_t){.ptr = ptr, .off = off, .len = len, .pin = pin};
  if (pin) pin->refs++;
  return 0;
}

/* Queues the n bytes just written at out_reserve()'s pointer. */
static int out_commit(wsuv_tconn_t *c, size_t n) {
  size_t off = c->out_len;
  c->out_len += n;
  c->queued += n;
  return seg_push(c, NULL, off, n, NULL);
}

/* Appends bytes to out[] as a segment. */
static int out_append(wsuv_tconn_t *c, const void *p, size_t n) {
  uint8_t *dst = out_reserve(c, n);
  if (!dst) return WSUV_ENOMEM;
  memcpy(dst, p, n);
  return out_commit(c, n);
}

static void mark_dirty(wsuv_tconn_t *c) {
  if (c->dirty || !c->tcp_open) return;
  c->dirty = 1;
  c->next_dirty = c->loop->dirty;
  c->loop->dirty = c;
}

/* Moves control frames the protocol owes into the output. */
static void queue_owed(wsuv_tconn_t *c) {
  if (!c->ws_inited || !wsuv_conn_want_write(&c->ws)) return;
  uint8_t *dst = out_reserve(c, WSUV_CONN_OUTPUT_MAX);
  if (!dst) return;
  out_commit(c, wsuv_conn_take_output(&c->ws, dst, WSUV_CONN_OUTPUT_MAX));
  mark_dirty(c);
}

static void do_shutdown(wsuv_tconn_t *c);

static void after_write(wsuv_tconn_t *c) {
  /* Wake senders waiting to drain, and only them: waking on every write
   * resumed each connection's reader for nothing (1,000 per broadcast). */
  if (c->drain_wanted &&
      c->queued <=
          (c->drain_wanted == WSUV_DRAIN_HIGH ? c->lim->high_water : 0)) {
    c->drain_wanted = 0;
    wsuv__ready(c->loop, &c->obj);
  }
  if (c->shutting && c->queued == 0) do_shutdown(c);
}

static void write_cb(uv_write_t *req, int status) {
  wreq_t *w = (wreq_t *)req;
  wsuv_tconn_t *c = w->c;
  release_segs(w->segs, w->nsegs);
  free(w->segs);
  out_free(c->loop, w->out, w->out_cap);
  c->queued -= w->bytes;
  free(w);
  if (status < 0) {
    write_failed(c, status);
    return;
  }
  if (c->tcp_open) after_write(c);
}

static void reset_output(wsuv_tconn_t *c) {
  c->nsegs = 0;
  c->out_len = 0;
  out_free(c->loop, c->out, c->out_cap); /* idle connections hold none */
  c->out = NULL;
  c->out_cap = 0;
  if (c->segs_cap > 0) {
    free(c->segs);
    c->segs = NULL;
    c->segs_cap = 0;
  }
}

/* Writes bufs (total bytes, all counted in c->queued): uv_try_write first,
 * then one uv_write for the rest, whose request takes out and segs. Returns
 * 1 when everything went at once (out and segs stay the caller's), 0 when a
 * write is pending (they were taken), or an error (c failed; they stay the
 * caller's). */
static int submit(wsuv_tconn_t *c, uv_buf_t *bufs, size_t n, size_t total,
                  uint8_t *out, size_t out_cap, wsuv_seg_t *segs,
                  size_t nsegs) {
  size_t done = 0;
  if (c->tcp.write_queue_size == 0 && c->shutting != SHUT_DEAD) {
    int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, (unsigned)n);
    if (r > 0)
      done = (size_t)r;
    else if (r < 0 && r != UV_EAGAIN && r != UV_ENOSYS) {
      write_failed(c, r);
      if (!c->tcp_open) return r;
    }
  }
  if (c->shutting == SHUT_DEAD) done = total; /* Dropped, as if written. */
  c->queued -= done;
  if (done == total) return 1;
  size_t first = 0, skip = done;
  while (skip >= bufs[first].len) {
    skip -= bufs[first].len;
    first++;
  }
  bufs[first].base += skip;
  bufs[first].len -= skip;
  wreq_t *w = malloc(sizeof(*w));
  if (!w) {
    fail(c, UV_ENOMEM, "write");
    return UV_ENOMEM;
  }
  *w = (wreq_t){.c = c,
                .out = out,
                .out_cap = out_cap,
                .segs = segs,
                .nsegs = nsegs,
                .bytes = total - done};
  int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs + first,
                   (unsigned)(n - first), write_cb);
  if (r < 0) {
    c->queued -= w->bytes;
    free(w);
    write_failed(c, r);
    return c->tcp_open ? 1 : r;
  }
  return 0;
}

/* Sends the ciphertext OpenSSL has produced. Returns as submit() does (1
 * also when there was none). Small output (most messages) goes through a
 * stack buffer and is copied to the heap only if the socket does not take
 * it all at once. */
static int send_cipher(wsuv_tconn_t *c) {
  uint8_t stack[4096], *buf = stack;
  size_t n = wsuv__tls_pending(c->tls);
  if (!n || !c->tcp_open) return 1;
  if (n > sizeof(stack) || c->tcp.write_queue_size) {
    buf = malloc(n);
    if (!buf) {
      fail(c, UV_ENOMEM, "write");
      return UV_ENOMEM;
    }
  }
  n = wsuv__tls_take(c->tls, buf, n);
  wsuv__tls_trim(c->tls, TLS_KEEP); /* after a big message */
  if (buf == stack) {
    uv_buf_t b = uv_buf_init((char *)buf, (unsigned)n);
    int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (r == (int)n) return 1;
    if (r < 0 && r != UV_EAGAIN && r != UV_ENOSYS) {
      write_failed(c, r);
      return c->tcp_open ? 1 : r;
    }
    size_t done = r > 0 ? (size_t)r : 0;
    buf = malloc(n - done);
    if (!buf) {
      fail(c, UV_ENOMEM, "write");
      return UV_ENOMEM;
    }
    memcpy(buf, stack + done, n - done);
    n -= done;
  }
  uv_buf_t b = uv_buf_init((char *)buf, (unsigned)n);
  c->queued += n;
  int r = submit(c, &b, 1, n, buf, 0, NULL, 0);
  if (r != 0) free(buf);
  return r;
}

static void tls_fail(wsuv_tconn_t *c) {
  char why[224];
  wsuv__tls_explain(c->tls, why, sizeof(why));
  set_errorf(c, WSUV_ETLS, "tls", why);
  if (c->ws_inited) c->ws.close_code = 1006;
  send_cipher(c); /* An alert tells the peer why. */
  close_handle(c);
}

/* Encrypts the queued plaintext once the handshake is done; until then,
 * advances the handshake and keeps it queued. */
static int flush_tls(wsuv_tconn_t *c) {
  if (!wsuv__tls_done(c->tls)) {
    if (c->phase < WSUV_PHASE_HANDSHAKE) return 0; /* Not connected yet. */
    int r = wsuv__tls_handshake(c->tls);
    if (r < 0) {
      tls_fail(c);
      return r;
    }
    if (r == 0) return send_cipher(c) < 0 ? WSUV_ETLS : 0;
  }
  size_t total = 0, nsegs = c->nsegs;
  wsuv_seg_t one, *segs = out_segs(c, &one);
  for (size_t i = 0; i < nsegs; i++) {
    wsuv_seg_t *s = &segs[i];
    int err =
        wsuv__tls_write(c->tls, s->ptr ? s->ptr : c->out + s->off, s->len);
    if (err) {
      tls_fail(c);
      return err;
    }
    total += s->len;
  }
  release_segs(c->segs, nsegs);
  c->queued -= total;
  reset_output(c);
  int r = send_cipher(c);
  if (r == 1 && nsegs) after_write(c);
  return r < 0 ? r : 0;
}

static int flush_conn(wsuv_tconn_t *c) {
  if (!c->tcp_open) return 0;
  if (c->tls) return flush_tls(c);
  if (!c->nsegs) return 0;
  uv_buf_t stack[STACK_BUFS], *bufs = stack;
  size_t n = c->nsegs, total = 0;
  if (n > STACK_BUFS) {
    bufs = malloc(n * sizeof(*bufs));
    if (!bufs) return WSUV_ENOMEM;
  }
  wsuv_seg_t one, *segs = out_segs(c, &one);
  for (size_t i = 0; i < n; i++) {
    wsuv_seg_t *s = &segs[i];
    const uint8_t *p = s->ptr ? s->ptr : c->out + s->off;
    bufs[i] = uv_buf_init((char *)p, (unsigned)s->len);
    total += s->len;
  }
  int r = submit(c, bufs, n, total, c->out, c->out_cap, c->segs,
                 c->segs ? c->nsegs : 0);
  if (bufs != stack) free(bufs);
  if (r == 1) {
    /* Everything went at once: nothing was allocated for the write. */
    release_segs(c->segs, c->nsegs);
    reset_output(c);
    after_write(c);
  } else if (r == 0) {
    c->out = NULL; /* The write request owns them now. */
    c->out_len = c->out_cap = 0;
    c->segs = NULL;
    c->nsegs = c->segs_cap = 0;
  }
  return r < 0 ? r : 0;
}

void wsuv__conn_flush(wsuv_tconn_t *c) {
  flush_conn(c);
}

void wsuv__loop_flush(wsuv_loop_t *l) {
  while (l->dirty) {
    wsuv_tconn_t *c = l->dirty;
    l->dirty = c->next_dirty;
    c->dirty = 0;
    flush_conn(c);
  }
}

static void shutdown_cb(uv_shutdown_t *req, int status) {
  wsuv_tconn_t *c = req->data;
  free(req);
  (void)status;
  /* Keep reading until the peer closes too, bounded by the deadline. */
  if (c && c->tcp_open && c->eof) close_handle(c);
}

static void do_shutdown(wsuv_tconn_t *c) {
  if (c->shutting >= SHUT_SENT || !c->tcp_open) return;
  if (c->tls && !c->tls_bye && wsuv__tls_done(c->tls)) {
    c->tls_bye = 1;
    wsuv__tls_shutdown(c->tls);      /* close_notify, then the TCP FIN */
    if (send_cipher(c) != 1) return; /* write_cb brings us back */
    if (c->shutting >= SHUT_SENT || !c->tcp_open) return;
  }
  c->shutting = SHUT_SENT;
  uv_shutdown_t *req = malloc(sizeof(*req));
  if (!req || uv_shutdown(req, (uv_stream_t *)&c->tcp, shutdown_cb) != 0) {
    free(req);
    close_handle(c);
    return;
  }
  req->data = c;
}

/* Closes gracefully: write what is queued, send FIN, wait for the peer's. */
static void finish(wsuv_tconn_t *c) {
  if (!c->tcp_open) return;
  if (c->phase < WSUV_PHASE_CLOSING) c->phase = WSUV_PHASE_CLOSING;
  if (!c->shutting) {
    c->shutting = SHUT_WANTED;
    c->deadline = wsuv__now(c->loop) + c->lim->close_timeout;
  }
  queue_owed(c);
  mark_dirty(c);
  if (c->queued == 0) do_shutdown(c);
}

/* Whether c may queue len more bytes now (its phase, max_queued); if so,
 * first queues the control frames the protocol owes. */
static int send_begin(wsuv_tconn_t *c, size_t len) {
  if (c->phase != WSUV_PHASE_OPEN)
    return c->phase > WSUV_PHASE_OPEN ? WSUV_ECLOSED : WSUV_ESTATE;
  if (len > c->lim->max_queued || c->queued > c->lim->max_queued - len)
    return WSUV_EBUFFULL;
  if (!c->defer_close) queue_owed(c);
  return 0;
}

int wsuv__send(wsuv_tconn_t *c, unsigned opcode, unsigned flags,
               const uint8_t *data, size_t len, wsuv_pin_t *pin, int plain) {
  int err = send_begin(c, len);
  if (err) return err;
  if (c->ws.pmd && opcode < WSUV_OP_CLOSE) {
    /* permessage-deflate: compressed output lives in the connection until
     * the next call, so it is copied into the queue (never pinned). */
    const uint8_t *out = NULL;
    unsigned rsv = 0;
    unsigned sf = (opcode != WSUV_OP_CONT ? WSUV_SEND_FIRST : 0) |
                  (flags & WSUV_FIN ? WSUV_SEND_FIN : 0) |
                  (plain ? WSUV_SEND_PLAIN : 0);
    ssize_t n = wsuv_conn_compress(&c->ws, data, len, sf, &out, &rsv);
    if (n < 0) return (int)n;
    if (out != data) pin = NULL;
    data = out;
    len = (size_t)n;
    flags |= rsv;
    if (rsv) c->pmd_out++;
  }
  uint8_t hdr[WSUV_MAX_FRAME_HEADER], key[4];
  ssize_t h = wsuv_conn_build_header(&c->ws, hdr, opcode, flags, len, key);
  if (h < 0) return (int)h;
  if (pin && wsuv__pins(c, len)) {
    err = out_append(c, hdr, (size_t)h); /* the payload stays in place */
    if (!err) {
      c->queued += len;
      err = seg_push(c, data, 0, len, pin);
    }
  } else {
    /* Header and payload copied into one reservation, one segment; a
     * client's payload is masked on the way (RFC 6455 5.3). */
    uint8_t *dst = out_reserve(c, (size_t)h + len);
    if (!dst) return WSUV_ENOMEM;
    memcpy(dst, hdr, (size_t)h);
    if (c->role == WSUV_ROLE_CLIENT)
      wsuv_mask_copy(dst + h, data, len, key, 0);
    else if (len)
      memcpy(dst + h, data, len);
    err = out_commit(c, (size_t)h + len);
  }
  if (opcode == WSUV_OP_TEXT || opcode == WSUV_OP_BINARY ||
      opcode == WSUV_OP_CONT)
    c->last_activity = uv_now(c->loop->uv); /* pass start: close enough */
  if (opcode == WSUV_OP_CLOSE) {
    c->phase = WSUV_PHASE_CLOSING;
    c->deadline = wsuv__now(c->loop) + c->lim->close_timeout;
  }
  mark_dirty(c);
  return err;
}

/* ---- Broadcast --------------------------------------------------------- */

/* Frames encoded once for many connections live in an arena the loop owns
 * and every receiver's write pins. Consecutive broadcasts of a pass sit side
 * by side in it, so a receiver's frames stay one segment, with no copy on
 * our side. Once no write holds the arena, the next broadcast starts over
 * at its beginning: one allocation serves pass after pass. */
#define ARENA_SIZE (64u << 10)

typedef struct arena_s {
  wsuv_pin_t base;
  size_t len, cap;
  uint8_t data[];
} arena_t;

static void arena_release(wsuv_pin_t *p) {
  free(p);
}

void wsuv__arena_trim(wsuv_loop_t *l) {
  arena_t *a = l->arena;
  l->arena = NULL;
  if (a && --a->base.refs == 0) arena_release(&a->base);
}

int wsuv__share_frame(wsuv_loop_t *l, unsigned opcode, const uint8_t *data,
                      size_t len, wsuv_pin_t *pin, wsuv_shared_frame_t *f) {
  int separate = pin && len >= WSUV_PIN_MIN;
  size_t need = WSUV_MAX_FRAME_HEADER + (separate ? 0 : len);
  arena_t *a = l->arena;
  if (a && a->base.refs == 1) a->len = 0; /* no write holds it */
  if (!a || a->cap - a->len < need) {
    wsuv__arena_trim(l);
    size_t cap = need > ARENA_SIZE ? need : ARENA_SIZE;
    a = malloc(sizeof(*a) + cap);
    if (!a) return WSUV_ENOMEM;
    a->base = (wsuv_pin_t){.refs = 1, .release = arena_release};
    a->len = 0;
    a->cap = cap;
    l->arena = a;
  }
  uint8_t *dst = a->data + a->len;
  size_t h = wsuv_frame_build_header(dst, WSUV_FIN, opcode, len, NULL);
  if (!separate && len) memcpy(dst + h, data, len);
  *f = (wsuv_shared_frame_t){.head = dst,
                             .head_len = h + (separate ? 0 : len),
                             .head_pin = &a->base,
                             .body = separate ? data : NULL,
                             .body_len = separate ? len : 0,
                             .body_pin = separate ? pin : NULL};
  a->len += f->head_len;
  return 0;
}

int wsuv__send_shared(wsuv_tconn_t *c, const wsuv_shared_frame_t *f) {
  size_t total = f->head_len + f->body_len;
  int err = send_begin(c, total);
  if (!err) err = wsuv_conn_may_start(&c->ws); /* open: ws is set up */
  if (err) return err;
  if (seg_room(c, 2) != 0) return WSUV_ENOMEM; /* both segments or none */
  seg_push(c, f->head, 0, f->head_len, f->head_pin);
  seg_push(c, f->body, 0, f->body_len, f->body_pin);
  c->queued += total;
  c->last_activity = uv_now(c->loop->uv);
  mark_dirty(c);
  return 0;
}

int wsuv__close(wsuv_tconn_t *c, int code, const char *reason, size_t len) {
  if (c->defer_close) {
    wsuv__release_close(c); /* The peer closed first: just answer. */
    return 0;
  }
  if (c->phase != WSUV_PHASE_OPEN) {
    if (c->phase < WSUV_PHASE_OPEN && c->tcp_open) {
      wsuv__abort(c, WSUV_ECLOSED, "closed before the handshake finished");
      return 0;
    }
    return WSUV_ECLOSED;
  }
  int err = wsuv_conn_close(&c->ws, code, reason, len);
  if (err) return err;
  queue_owed(c);
  c->phase = WSUV_PHASE_CLOSING;
  c->deadline = wsuv__now(c->loop) + c->lim->close_timeout;
  return 0;
}

/* ---- Input ------------------------------------------------------------- */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  wsuv_tconn_t *c = h->data;
  wsuv_loop_t *l = c->loop;
  (void)suggested;
  if (!l->rbuf) l->rbuf = malloc(WSUV_READ_BUFFER_SIZE);
  if (!l->rbuf || l->rbuf_busy) {
    *buf = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS */
    return;
  }
  l->rbuf_busy = 1;
  *buf = uv_buf_init((char *)l->rbuf, WSUV_READ_BUFFER_SIZE);
}

static void on_eof(wsuv_tconn_t *c, int err) {
  c->eof = 1;
  if (c->phase == WSUV_PHASE_CLOSING && c->ws_inited && c->ws.close_received) {
    /* The closing handshake is complete; the TCP close is ours too. */
    close_handle(c);
    return;
  }
  if (c->shutting >= SHUT_SENT) {
    close_handle(c); /* We sent FIN, or cannot write: the peer's ends it. */
    return;
  }
  if (err == UV_EOF) err = UV_ECONNRESET;
  const char *what = c->phase >= WSUV_PHASE_OPEN
                         ? "connection closed without a close frame"
                         : "connection closed during the handshake";
  set_errorf(c, err, c->phase >= WSUV_PHASE_OPEN ? "receive" : "handshake",
             what);
  if (c->ws_inited) c->ws.close_code = 1006;
  close_handle(c);
}

/* Ciphertext in buf (the loop's read buffer) goes to OpenSSL, and the
 * plaintext comes back into the same buffer, one record at a time. */
static void tls_input(wsuv_tconn_t *c, uint8_t *buf, size_t len) {
  if (wsuv__tls_feed(c->tls, buf, len) != 0) {
    fail(c, UV_ENOMEM, "tls");
    return;
  }
  if (!wsuv__tls_done(c->tls)) {
    int r = wsuv__tls_handshake(c->tls);
    if (r < 0) {
      tls_fail(c);
      return;
    }
    if (r == 0) {
      send_cipher(c);
      return;
    }
    mark_dirty(c); /* Plaintext queued meanwhile (the request) can go. */
  }
  while (c->tcp_open) {
    ssize_t n = wsuv__tls_read(c->tls, buf, WSUV_READ_BUFFER_SIZE);
    if (n > 0) {
      handle_input(c, buf, (size_t)n);
      /* Not another SSL_read only to hear that it wants input. */
      if (!wsuv__tls_input_left(c->tls)) break;
      continue;
    }
    if (n == 0) break;
    if (n == UV_EOF) {
      on_eof(c, UV_EOF);
      return;
    }
    tls_fail(c);
    return;
  }
  if (c->tcp_open) send_cipher(c);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  wsuv_tconn_t *c = s->data;
  wsuv_loop_t *l = c->loop;
  if (buf->base == (char *)l->rbuf) l->rbuf_busy = 0;
  if (nread == 0) return;
  if (nread < 0) {
    on_eof(c, (int)nread);
    return;
  }
  c->last_recv = uv_now(l->uv); /* updated after the poll */
  if (c->tls)
    tls_input(c, (uint8_t *)buf->base, (size_t)nread);
  else
    handle_input(c, (uint8_t *)buf->base, (size_t)nread);
}

static int start_reading(wsuv_tconn_t *c) {
  if (c->reading || !c->tcp_open) return 0;
  int err = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
  if (err == 0) c->reading = 1;
  return err;
}

static void stop_reading(wsuv_tconn_t *c) {
  if (!c->reading) return;
  uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
}

void wsuv__consumed(wsuv_tconn_t *c, size_t len) {
  len += MSG_OVERHEAD;
  c->recv_queued = len > c->recv_queued ? 0 : c->recv_queued - len;
  if (c->recv_msgs) c->recv_msgs--;
  if (!c->reading && c->tcp_open && c->phase >= WSUV_PHASE_OPEN &&
      c->recv_queued <= c->lim->recv_high / 2)
    start_reading(c);
}

void wsuv__release_close(wsuv_tconn_t *c) {
  if (!c->defer_close || !c->tcp_open) return;
  c->defer_close = 0;
  queue_owed(c);
  /* RFC 6455 7.1.1: the server closes the TCP connection first; a client
   * waits for it, bounded by the close timeout. A failed connection is
   * closed by whichever side failed it. */
  if (c->role == WSUV_ROLE_SERVER || c->error) {
    finish(c);
  } else {
    c->phase = WSUV_PHASE_CLOSING;
    c->deadline = wsuv__now(c->loop) + c->lim->close_timeout;
    mark_dirty(c);
  }
}

/* No more input will be processed: the peer closed, or broke the protocol.
 * Messages before that are still owed an answer, so the close frame waits
 * until Lua has read them (bounded by the close timeout). */
static void end_input(wsuv_tconn_t *c) {
  c->defer_close = 1;
  wsuv__ready(c->loop, &c->obj);
  /* When we closed first, our close frame went already and the peer's
   * ends the handshake: nothing is owed, and conn:close() must not wait
   * for Lua to read what is left (it stays readable). */
  if (c->recv_msgs && c->obj.data && c->phase != WSUV_PHASE_CLOSING) {
    stop_reading(c);
    c->deadline = wsuv__now(c->loop) + c->lim->close_timeout;
    return;
  }
  wsuv__release_close(c);
}

static void feed_frames(wsuv_tconn_t *c, uint8_t *buf, size_t len) {
  wsuv_loop_t *l = c->loop;
  while (len > 0 && c->tcp_open) {
    wsuv_event_t ev;
    ssize_t n = wsuv_conn_feed(&c->ws, buf, len, &ev);
    if (n < 0) {
      set_errorf(c, (int)n, "receive", wsuv_strerror((int)n));
      end_input(c);
      return;
    }
    buf += n;
    len -= (size_t)n;
    if (ev.type == WSUV_EV_NONE) break;
    if (ev.type == WSUV_EV_TEXT || ev.type == WSUV_EV_BINARY) {
      if (c->phase != WSUV_PHASE_OPEN && c->recv_queued > c->lim->recv_high)
        continue; /* We are closing and nobody reads: drop. */
      c->recv_queued += ev.len + MSG_OVERHEAD;
      c->recv_msgs++;
      if (ev.compressed && ev.first) c->pmd_in++;
      c->last_activity = c->last_recv;
    } else if (ev.type == WSUV_EV_PONG) {
      c->ping_sent = 0;
    }
    if (l->hooks.event) l->hooks.event(c, &ev);
    if (ev.type == WSUV_EV_CLOSE) {
      end_input(c);
      return;
    }
    if (ev.type == WSUV_EV_PING) queue_owed(c);
    wsuv__ready(l, &c->obj);
  }
  if (c->recv_queued > c->lim->recv_high && c->tcp_open &&
      c->phase == WSUV_PHASE_OPEN)
    stop_reading(c); /* Backpressure: nobody reads what we deliver. */
}

/* Starts the WebSocket protocol; pmd: the agreed permessage-deflate, or
 * NULL. Returns 0, or an error after which c must be failed. */
static int open_ws(wsuv_tconn_t *c, const wsuv_pmd_params_t *pmd,
                   const wsuv_pmd_options_t *pmd_opts) {
  wsuv_conn_config_t cfg = {
      .parser = {.role = c->role,
                 .max_message = c->lim->max_message,
                 .max_frame = c->lim->max_frame,
                 .stream = c->lim->stream},
      .genmask = genmask,
      .pmd = pmd,
      .pmd_options = pmd_opts,
  };
  int err = wsuv_conn_init(&c->ws, &cfg);
  if (err) {
    wsuv_conn_free(&c->ws);
    return err;
  }
  c->ws_inited = 1;
  c->phase = WSUV_PHASE_OPEN;
  c->deadline = 0;
  c->last_activity = c->last_recv = wsuv__now(c->loop);
  return 0;
}

/* Points the parsed head's strings from the buffer at old to the copy at p. */
static void rebase_head(wsuv_tconn_t *c, const char *old, char *p) {
  wsuv_http_head_t *h = &c->hs->http;
#define REBASE(field)                                                          \
  if (field) field = p + (field - old)
  REBASE(h->method);
  REBASE(h->target);
  REBASE(h->reason);
  for (size_t i = 0; i < h->num_headers; i++) {
    REBASE(h->headers[i].name);
    REBASE(h->headers[i].value);
  }
#undef REBASE
}

/* Appends input to the head buffer, bounded by max_head plus one read. A
 * parsed head can still grow (a refusal's body; with TLS, records that
 * follow the request): the buffer is then copied, and the parsed strings
 * moved along. */
static int head_append(wsuv_tconn_t *c, const uint8_t *buf, size_t len) {
  if (c->hs->head_cap - c->hs->head_len < len) {
    size_t need = c->hs->head_len + len;
    if (need > c->lim->max_head + WSUV_READ_BUFFER_SIZE + MAX_REJECT_BODY)
      return WSUV_EHEADTOOBIG;
    /* Most heads arrive in one read: start at their size. */
    size_t cap = c->hs->head_cap ? c->hs->head_cap : (need + 63) & ~(size_t)63;
    while (cap < need)
      cap *= 2;
    char *p = malloc(cap);
    if (!p) return WSUV_ENOMEM;
    if (c->hs->head_len) memcpy(p, c->hs->head, c->hs->head_len);
    if (c->hs->head_parsed) rebase_head(c, c->hs->head, p);
    free(c->hs->head);
    c->hs->head = p;
    c->hs->head_cap = cap;
  }
  memcpy(c->hs->head + c->hs->head_len, buf, len);
  c->hs->head_len += len;
  return 0;
}

/* Parses the head into the loop's scratch array; a complete head keeps an
 * exact-size copy of its headers (a few hundred bytes, not 64 slots). */
static ssize_t parse_head(wsuv_tconn_t *c) {
  wsuv_loop_t *l = c->loop;
  if (!l->hdr_scratch) {
    l->hdr_scratch = malloc(MAX_HEADERS * sizeof(*l->hdr_scratch));
    if (!l->hdr_scratch) return WSUV_ENOMEM;
  }
  memset(&c->hs->http, 0, sizeof(c->hs->http));
  c->hs->http.headers = l->hdr_scratch;
  c->hs->http.num_headers = MAX_HEADERS;
  size_t len = c->hs->head_len;
  ssize_t n = c->role == WSUV_ROLE_SERVER
                  ? wsuv_http_parse_request(c->hs->head, len, c->lim->max_head,
                                            &c->hs->http)
                  : wsuv_http_parse_response(c->hs->head, len, c->lim->max_head,
                                             &c->hs->http);
  if (n <= 0) {
    c->hs->http.headers = NULL;
    c->hs->http.num_headers = 0;
    return n;
  }
  size_t k = c->hs->http.num_headers;
  free(c->hs->hdrs);
  c->hs->hdrs = malloc((k ? k : 1) * sizeof(*c->hs->hdrs));
  if (!c->hs->hdrs) return WSUV_ENOMEM;
  memcpy(c->hs->hdrs, l->hdr_scratch, k * sizeof(*c->hs->hdrs));
  c->hs->http.headers = c->hs->hdrs;
  return n;
}

/* retry_after: seconds, for a refusal that may pass (503), or NULL. */
static void server_reject(wsuv_tconn_t *c, int status, const char *why,
                          const char *retry_after) {
  wsuv_header_t h = {"Retry-After", 11, retry_after,
                     retry_after ? strlen(retry_after) : 0};
  set_errorf(c, WSUV_EHANDSHAKE, "handshake", why);
  c->phase = WSUV_PHASE_REQUEST; /* So respond accepts it. */
  wsuv__respond(c, status, retry_after ? &h : NULL, retry_after ? 1 : 0, why,
                strlen(why));
}

static void server_head(wsuv_tconn_t *c) {
  ssize_t n = parse_head(c);
  if (n == 0) return;
  if (n < 0) {
    if (n == WSUV_EHEADTOOBIG)
      server_reject(c, 431, "request head too large", NULL);
    else
      server_reject(c, 400, "malformed request", NULL);
    return;
  }
  c->hs->head_parsed = (size_t)n;
  stop_reading(c);
  wsuv_tserver_t *s = c->server;
  if (!s || s->closed) {
    server_reject(c, 503, "server is closing", NULL);
    return;
  }
  /* nconns counts this one: the refused are answered, not dropped. A
   * queue of requests drains in moments; a full server, when someone
   * leaves. */
  if (s->nconns > s->opts.max_connections) {
    server_reject(c, 503, "too many connections", "5");
    return;
  }
  if (s->npending >= s->opts.max_pending) {
    server_reject(c, 503, "too many pending connections", "1");
    return;
  }
  c->phase = WSUV_PHASE_REQUEST;
  if (s->pending_tail)
    s->pending_tail->next_pending = c;
  else
    s->pending_head = c;
  s->pending_tail = c;
  s->npending++;
  wsuv__ready(c->loop, &s->obj);
}

static size_t content_length(const wsuv_http_head_t *h) {
  int i = wsuv_http_find(h, "content-length", 0);
  if (i < 0) return 0;
  size_t v = 0;
  const wsuv_header_t *hd = &h->headers[i];
  for (size_t k = 0; k < hd->value_len; k++) {
    char ch = hd->value[k];
    if (ch < '0' || ch > '9' || v > MAX_REJECT_BODY) return MAX_REJECT_BODY;
    v = v * 10 + (size_t)(ch - '0');
  }
  return v > MAX_REJECT_BODY ? MAX_REJECT_BODY : v;
}

/* Keeps the response head for the binding, at its exact size: an open
 * connection should not hold handshake buffers. */
static void shrink_head(wsuv_tconn_t *c) {
  size_t n = c->hs->http.num_headers;
  size_t *offs = malloc((2 * n + 2) * sizeof(*offs));
  if (!offs) return;
  for (size_t i = 0; i < n; i++) {
    offs[2 * i] = (size_t)(c->hs->hdrs[i].name - c->hs->head);
    offs[2 * i + 1] = (size_t)(c->hs->hdrs[i].value - c->hs->head);
  }
  offs[2 * n] =
      c->hs->http.reason ? (size_t)(c->hs->http.reason - c->hs->head) : 0;
  char *head = realloc(c->hs->head, c->hs->head_parsed);
  wsuv_header_t *hdrs = realloc(c->hs->hdrs, (n ? n : 1) * sizeof(*hdrs));
  if (head) {
    c->hs->head = head;
    c->hs->head_len = c->hs->head_cap = c->hs->head_parsed;
  }
  if (hdrs) c->hs->hdrs = hdrs;
  c->hs->http.headers = c->hs->hdrs;
  for (size_t i = 0; i < n; i++) {
    c->hs->hdrs[i].name = c->hs->head + offs[2 * i];
    c->hs->hdrs[i].value = c->hs->head + offs[2 * i + 1];
  }
  if (c->hs->http.reason) c->hs->http.reason = c->hs->head + offs[2 * n];
  free(offs);
  free(c->hs->offer_protocols);
  free(c->hs->offer_extensions);
  c->hs->offer_protocols = c->hs->offer_extensions = NULL;
}

/* Feeds the bytes that followed the HTTP head in the same reads, in place:
 * the parser copies what it keeps, so nothing points into head afterwards. */
static void feed_rest(wsuv_tconn_t *c) {
  size_t rest = c->hs->head_len - c->hs->head_parsed;
  if (rest) feed_frames(c, (uint8_t *)c->hs->head + c->hs->head_parsed, rest);
  c->hs->head_len = c->hs->head_parsed;
}

/* The first header named name, as a malloc'd string; NULL if absent. */
static char *header_dup(const wsuv_http_head_t *h, const char *name) {
  int i = wsuv_http_find(h, name, 0);
  if (i < 0) return NULL;
  const wsuv_header_t *hd = &h->headers[i];
  char *s = malloc(hd->value_len + 1);
  if (s) {
    memcpy(s, hd->value, hd->value_len);
    s[hd->value_len] = 0;
  }
  return s;
}

/* A refusal: "<op>: <who> with status N"; the parsed head stays for
 * conn:response(). */
static void fail_status(wsuv_tconn_t *c, int err, const char *op,
                        const char *who) {
  char msg[64];
  snprintf(msg, sizeof(msg), "%s with status %d", who, c->hs->http.status);
  set_errorf(c, err, op, msg);
  close_handle(c);
}

static void client_head(wsuv_tconn_t *c) {
  ssize_t n = parse_head(c);
  if (n == 0) return;
  if (n < 0) {
    fail(c, (int)n, "handshake");
    return;
  }
  c->hs->head_parsed = (size_t)n;
  if (c->hs->http.status != 101) {
    /* Keep reading the body (bounded) so the caller can see it. */
    size_t want = content_length(&c->hs->http);
    if (c->hs->head_len - c->hs->head_parsed < want && !c->eof) return;
    fail_status(c, WSUV_EHANDSHAKE, "handshake", "server answered");
    return;
  }
  const char *why = NULL;
  if (wsuv_handshake_check_response(&c->hs->http, c->hs->key,
                                    c->hs->offer_protocols,
                                    c->hs->offer_extensions, &why) != 0) {
    set_errorf(c, WSUV_EHANDSHAKE, "handshake", why ? why : "invalid");
    close_handle(c);
    return;
  }
  wsuv_pmd_params_t agreed;
  int pmd = 0;
  if (c->hs->pmd_offer) {
    pmd =
        wsuv_pmd_accept_response(&c->hs->http, c->hs->pmd_offer, &agreed, &why);
    if (pmd < 0) {
      set_errorf(c, WSUV_EEXTENSION, "handshake", why ? why : "extension");
      close_handle(c);
      return;
    }
  }
  c->protocol = header_dup(&c->hs->http, "sec-websocket-protocol");
  if (pmd) c->extensions = header_dup(&c->hs->http, "sec-websocket-extensions");
  int err = open_ws(c, pmd ? &agreed : NULL, c->hs->pmd_offer);
  free(c->hs->pmd_offer);
  c->hs->pmd_offer = NULL;
  if (err) {
    fail(c, err, "handshake");
    return;
  }
  wsuv__ready(c->loop, &c->obj);
  feed_rest(c); /* Before shrinking: frames may follow the 101. */
  shrink_head(c);
}

static void handle_input(wsuv_tconn_t *c, uint8_t *buf, size_t len) {
  switch (c->phase) {
  case WSUV_PHASE_HANDSHAKE:
  case WSUV_PHASE_REQUEST: {
    int err = head_append(c, buf, len);
    if (err) {
      if (c->role == WSUV_ROLE_SERVER && c->phase == WSUV_PHASE_HANDSHAKE)
        server_reject(c, 431, "request head too large", NULL);
      else
        fail(c, err, "handshake");
      return;
    }
    if (c->phase == WSUV_PHASE_HANDSHAKE) {
      if (c->role == WSUV_ROLE_SERVER)
        server_head(c);
      else
        client_head(c);
    }
    return;
  }
  case WSUV_PHASE_PROXY:
    if (head_append(c, buf, len) != 0) {
      fail(c, WSUV_EHEADTOOBIG, "proxy");
      return;
    }
    proxy_head(c);
    return;
  case WSUV_PHASE_OPEN:
  case WSUV_PHASE_CLOSING:
    if (!c->ws_inited ||
        (c->shutting == SHUT_SENT && c->ws.state == WSUV_STATE_CLOSED))
      return; /* Draining until the peer's FIN. */
    feed_frames(c, buf, len);
    return;
  default:
    return;
  }
}

/* ---- Client ------------------------------------------------------------ */

/* Writes an HTTP head we made (*head, then freed) and reads the answer,
 * within the handshake timeout. */
static void send_head(wsuv_tconn_t *c, char **head, size_t len,
                      const char *op) {
  c->deadline = wsuv__now(c->loop) + c->lim->handshake_timeout;
  int err = out_append(c, *head, len);
  free(*head);
  *head = NULL;
  if (!err) err = start_reading(c);
  if (err) {
    fail(c, err, op);
    return;
  }
  mark_dirty(c);
  flush_conn(c);
}

/* The proxy's answer to CONNECT: a 2xx opens the tunnel, and the WebSocket
 * handshake (after TLS's, for wss://) goes through it as if the server
 * were connected directly. Anything else fails the connection, its
 * response kept for conn:response(). */
static void proxy_head(wsuv_tconn_t *c) {
  ssize_t n = parse_head(c);
  if (n == 0) return;
  if (n < 0) {
    fail(c, (int)n, "proxy");
    return;
  }
  c->hs->head_parsed = (size_t)n;
  int status = c->hs->http.status;
  if (status < 200 || status > 299) {
    fail_status(c, WSUV_EPROXY, "proxy", "answered");
    return;
  }
  /* Nothing may follow: the server speaks second in both protocols the
   * tunnel carries, and only once our request has gone. */
  if (c->hs->head_len > (size_t)n) {
    set_errorf(c, WSUV_EPROXY, "proxy", "sent bytes past its answer");
    close_handle(c);
    return;
  }
  free(c->hs->hdrs);
  c->hs->hdrs = NULL;
  memset(&c->hs->http, 0, sizeof(c->hs->http));
  c->hs->head_len = c->hs->head_parsed = 0;
  c->tls = c->hs->tls_later;
  c->hs->tls_later = NULL;
  c->phase = WSUV_PHASE_HANDSHAKE;
  send_head(c, &c->hs->request, c->hs->request_len, "connect");
}

static void connect_cb(uv_connect_t *req, int status) {
  wsuv_tconn_t *c = req->data;
  if (c->phase != WSUV_PHASE_CONNECTING || !c->tcp_open) return;
  if (status < 0) {
    if (c->hs->addr_next) {
      /* close_cb re-inits the handle and tries the next address. */
      c->retry = 1;
      c->tcp_open = 0;
      uv_close((uv_handle_t *)&c->tcp, close_cb);
      return;
    }
    fail(c, status, "connect");
    return;
  }
  uv_freeaddrinfo(c->hs->addrs);
  c->hs->addrs = c->hs->addr_next = NULL;
  /* Small frames (and TLS handshake flights) must not wait for Nagle. */
  uv_tcp_nodelay(&c->tcp, 1);
  if (c->hs->proxy_request) {
    c->phase = WSUV_PHASE_PROXY;
    send_head(c, &c->hs->proxy_request, c->hs->proxy_request_len, "proxy");
    return;
  }
  c->phase = WSUV_PHASE_HANDSHAKE;
  send_head(c, &c->hs->request, c->hs->request_len, "connect");
}

static void try_next_addr(wsuv_tconn_t *c) {
  while (c->hs->addr_next) {
    struct addrinfo *ai = c->hs->addr_next;
    c->hs->addr_next = ai->ai_next;
    c->hs->creq.data = c;
    int err = uv_tcp_connect(&c->hs->creq, &c->tcp, ai->ai_addr, connect_cb);
    if (err == 0) {
      c->phase = WSUV_PHASE_CONNECTING;
      return;
    }
    if (!c->hs->addr_next) {
      fail(c, err, "connect");
      return;
    }
  }
  fail(c, UV_EADDRNOTAVAIL, "connect");
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  wsuv_tconn_t *c = req->data;
  free(req);
  if (!c) { /* The connection went away meanwhile. */
    if (res) uv_freeaddrinfo(res);
    return;
  }
  c->hs->gai = NULL;
  if (!c->tcp_open) {
    if (res) uv_freeaddrinfo(res);
    return;
  }
  if (status < 0) {
    fail(c, status, "resolve");
    return;
  }
  c->hs->addrs = c->hs->addr_next = res;
  try_next_addr(c);
}

static char *dupstr(const char *s) {
  if (!s) return NULL;
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

/* "CONNECT authority HTTP/1.1" with Host and, given credentials
 * ("user:password"), Proxy-Authorization: Basic; NULL for an authority
 * that would break the head. */
static char *proxy_request(const wsuv_proxy_t *p, size_t *len) {
  if (strpbrk(p->authority, "\r\n ")) return NULL;
  size_t nc = p->credentials ? strlen(p->credentials) : 0;
  size_t cap = 2 * strlen(p->authority) + 4 * ((nc + 2) / 3) + 128;
  char *r = malloc(cap);
  if (!r) return NULL;
  int n = snprintf(r, cap, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", p->authority,
                   p->authority);
  if (p->credentials) {
    n += snprintf(r + n, cap - (size_t)n, "Proxy-Authorization: Basic ");
    n += EVP_EncodeBlock((unsigned char *)r + n,
                         (const unsigned char *)p->credentials, (int)nc);
    n += snprintf(r + n, cap - (size_t)n, "\r\n");
  }
  n += snprintf(r + n, cap - (size_t)n, "\r\n");
  *len = (size_t)n;
  return r;
}

int wsuv__connect(wsuv_loop_t *l, const char *host, int port,
                  const wsuv_client_request_t *req_in, const wsuv_limits_t *lim,
                  SSL_CTX *tls_ctx, const char *servername,
                  const wsuv_pmd_options_t *pmd, const wsuv_proxy_t *proxy,
                  wsuv_tconn_t **out) {
  wsuv_client_request_t offer_req = *req_in, *req = &offer_req;
  char offer[WSUV_PMD_EXT_MAX];
  if (pmd && pmd->enabled) {
    ssize_t n = wsuv_pmd_offer(pmd, offer, sizeof(offer));
    if (n < 0) return (int)n;
    req->extensions = offer;
  }
  uint8_t nonce[16];
  if (RAND_bytes(nonce, sizeof(nonce)) != 1) return UV_EIO;
  wsuv_tconn_t *c = conn_new(l, WSUV_ROLE_CLIENT, lim, NULL);
  if (!c) return UV_ENOMEM;
  if (tls_ctx) {
    c->tls = wsuv__tls_new(tls_ctx, 0, servername ? servername : host);
    if (!c->tls) {
      wsuv__abort(c, WSUV_ETLS, NULL);
      c->obj.data = NULL;
      return WSUV_ETLS;
    }
  }
  wsuv_handshake_key(nonce, c->hs->key);
  size_t cap = 1024;
  for (;;) {
    c->hs->request = malloc(cap);
    if (!c->hs->request) {
      wsuv__abort(c, UV_ENOMEM, "connect: out of memory");
      return UV_ENOMEM;
    }
    ssize_t n =
        wsuv_handshake_build_request(c->hs->request, cap, req, c->hs->key);
    if (n >= 0) {
      c->hs->request_len = (size_t)n;
      break;
    }
    free(c->hs->request);
    c->hs->request = NULL;
    if (n != WSUV_ENOBUFS || cap >= c->lim->max_head * 8) {
      wsuv__abort(c, (int)n, NULL);
      c->obj.data = NULL;
      return (int)n;
    }
    cap *= 2;
  }
  c->hs->offer_protocols = dupstr(req->protocols);
  c->hs->offer_extensions = dupstr(req->extensions);
  if (pmd && pmd->enabled) {
    c->hs->pmd_offer = malloc(sizeof(*pmd));
    if (!c->hs->pmd_offer) {
      wsuv__abort(c, UV_ENOMEM, NULL);
      c->obj.data = NULL;
      return UV_ENOMEM;
    }
    *c->hs->pmd_offer = *pmd;
  }
  if (proxy) {
    c->hs->proxy_request = proxy_request(proxy, &c->hs->proxy_request_len);
    if (!c->hs->proxy_request) {
      wsuv__abort(c, WSUV_EINVAL, NULL);
      c->obj.data = NULL;
      return WSUV_EINVAL;
    }
    /* TLS is with the server, inside the tunnel: it starts once the
     * proxy has opened it. */
    c->hs->tls_later = c->tls;
    c->tls = NULL;
    host = proxy->host;
    port = proxy->port;
  }
  c->phase = WSUV_PHASE_RESOLVING;
  c->deadline = wsuv__now(l) + c->lim->connect_timeout;
  c->hs->gai = malloc(sizeof(*c->hs->gai));
  char portstr[16];
  snprintf(portstr, sizeof(portstr), "%d", port);
  struct addrinfo hints;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int err = c->hs->gai ? 0 : UV_ENOMEM;
  if (!err) {
    c->hs->gai->data = c;
    err = uv_getaddrinfo(l->uv, c->hs->gai, gai_cb, host, portstr, &hints);
  }
  if (err) {
    free(c->hs->gai);
    c->hs->gai = NULL;
    wsuv__abort(c, err, NULL);
    return err;
  }
  *out = c;
  return 0;
}

/* ---- Server ------------------------------------------------------------ */

/* Room the extra headers need in a built head ("name: value\r\n"). */
static size_t extra_size(const wsuv_header_t *extra, size_t n) {
  size_t size = 0;
  for (size_t i = 0; i < n; i++)
    size += extra[i].name_len + extra[i].value_len + 4;
  return size;
}

int wsuv__accept(wsuv_tconn_t *c, const char *protocol, const char *extensions,
                 const wsuv_header_t *extra, size_t nextra) {
  if (c->phase != WSUV_PHASE_REQUEST || !c->tcp_open)
    return c->tcp_open ? WSUV_ESTATE : WSUV_ECLOSED;
  const char *key = NULL, *why = NULL;
  size_t key_len = 0;
  int st = wsuv_handshake_check_request(&c->hs->http, &key, &key_len, &why);
  if (st != 0) return WSUV_ESTATE; /* Not an upgrade: respond() is the way. */
  wsuv_pmd_params_t agreed;
  const wsuv_pmd_options_t *pmd_opts = NULL;
  char ext[WSUV_PMD_EXT_MAX];
  int pmd = 0;
  if (!extensions && c->server && c->server->opts.pmd.enabled) {
    pmd_opts = &c->server->opts.pmd;
    pmd = wsuv_pmd_negotiate(&c->hs->http, pmd_opts, &agreed, ext, sizeof(ext));
    if (pmd < 0) return pmd;
    if (pmd) extensions = ext;
  }
  size_t cap = 512 + extra_size(extra, nextra) +
               (protocol ? strlen(protocol) : 0) +
               (extensions ? strlen(extensions) : 0);
  uint8_t *dst = out_reserve(c, cap);
  if (!dst) return WSUV_ENOMEM;
  ssize_t n = wsuv_handshake_build_response(
      (char *)dst, cap, key, key_len, protocol, extensions, extra, nextra);
  if (n < 0) return (int)n;
  out_commit(c, (size_t)n);
  unlink_pending(c);
  c->protocol = dupstr(protocol);
  if (pmd) c->extensions = dupstr(extensions);
  int err = open_ws(c, pmd ? &agreed : NULL, pmd_opts);
  if (err) {
    fail(c, err, "accept");
    return err;
  }
  mark_dirty(c);
  feed_rest(c); /* A client may send frames right behind its request. */
  free_handshake(c);
  if (c->tcp_open && c->recv_queued <= c->lim->recv_high) start_reading(c);
  return 0;
}

int wsuv__respond(wsuv_tconn_t *c, int status, const wsuv_header_t *extra,
                  size_t nextra, const char *body, size_t body_len) {
  if (c->phase != WSUV_PHASE_REQUEST || !c->tcp_open)
    return c->tcp_open ? WSUV_ESTATE : WSUV_ECLOSED;
  size_t cap = 512 + extra_size(extra, nextra) + body_len;
  uint8_t *dst = out_reserve(c, cap);
  if (!dst) return WSUV_ENOMEM;
  ssize_t n = wsuv_http_build_response((char *)dst, cap, status, extra, nextra,
                                       body, body_len);
  if (n < 0) return (int)n;
  out_commit(c, (size_t)n);
  unlink_pending(c);
  c->phase = WSUV_PHASE_CLOSING;
  /* Read on (and discard) so the peer's FIN is seen. */
  start_reading(c);
  finish(c);
  return 0;
}

int wsuv__peer(wsuv_tconn_t *c, char *ip, size_t ipcap) {
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  if (!c->tcp_open ||
      uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
    return -1;
  if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    uv_ip6_name(a, ip, ipcap);
    return ntohs(a->sin6_port);
  }
  struct sockaddr_in *a = (struct sockaddr_in *)&ss;
  uv_ip4_name(a, ip, ipcap);
  return ntohs(a->sin_port);
}

static void server_close_cb(uv_handle_t *h) {
  wsuv_tserver_t *s = h->data;
  wsuv_loop_t *l = s->loop;
  if (s->prev)
    s->prev->next = s->next;
  else if (l->servers == s)
    l->servers = s->next;
  if (s->next) s->next->prev = s->prev;
  if (s->loop->hooks.freed) s->loop->hooks.freed(&s->obj);
  wsuv__unready(s->loop, &s->obj);
  SSL_CTX_free(s->tls_ctx);
  limits_release(s->lim);
  free(s);
}

size_t wsuv__descriptor_room(size_t *limit) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
      rl.rlim_cur > SIZE_MAX) {
    *limit = 0;
    return SIZE_MAX;
  }
  *limit = (size_t)rl.rlim_cur;
  return rl.rlim_cur > 128 ? (size_t)rl.rlim_cur - 64 : 64;
}

/* Below the descriptor limit, so that a full server answers 503: at
 * EMFILE libuv accepts and closes what waits, dropping it unanswered and
 * telling no one. */
static size_t default_max_connections(void) {
  size_t limit, room = wsuv__descriptor_room(&limit);
  return room < WSUV_MAX_CONNECTIONS ? room : WSUV_MAX_CONNECTIONS;
}

static void connection_cb(uv_stream_t *ls, int status) {
  wsuv_tserver_t *s = ls->data;
  if (status < 0 || s->closed) return;
  /* Out of memory here leaves the connection unaccepted, and libuv stops
   * watching the listener until an accept: nothing to accept it with. */
  wsuv_tconn_t *c = conn_new(s->loop, WSUV_ROLE_SERVER, NULL, s->lim);
  if (!c) return;
  c->phase = WSUV_PHASE_HANDSHAKE;
  c->deadline = wsuv__now(s->loop) + c->lim->handshake_timeout;
  /* Accepted before anything else may fail, so the listener goes on. */
  if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0) {
    close_handle(c);
    return;
  }
  c->server = s;
  s->nconns++;
  if ((s->tls_ctx && !(c->tls = wsuv__tls_new(s->tls_ctx, 1, NULL))) ||
      start_reading(c) != 0) {
    close_handle(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
}

int wsuv__listen(wsuv_loop_t *l, const char *host, int port,
                 const wsuv_server_opts_t *opts, wsuv_tserver_t **out) {
  struct sockaddr_storage ss;
  if (!strcmp(host, "localhost")) host = "127.0.0.1";
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)
    return UV_EINVAL;
  wsuv_tserver_t *s = calloc(1, sizeof(*s));
  if (!s) return UV_ENOMEM;
  s->obj.kind = WSUV_OBJ_SERVER;
  s->loop = l;
  s->opts = *opts;
  s->opts.tls_ctx = NULL;
  wsuv__limits_default(&s->opts.lim);
  s->lim = malloc(sizeof(*s->lim));
  if (!s->lim) {
    free(s);
    return UV_ENOMEM;
  }
  *s->lim = s->opts.lim;
  s->lim->refs = 1;
  if (!s->opts.max_pending) s->opts.max_pending = 1024;
  if (!s->opts.max_connections)
    s->opts.max_connections = default_max_connections();
  uv_tcp_init(l->uv, &s->tcp);
  s->tcp.data = s;
  int err = uv_tcp_bind(&s->tcp, (struct sockaddr *)&ss, 0);
  if (!err) err = uv_listen((uv_stream_t *)&s->tcp, 511, connection_cb);
  s->next = l->servers;
  if (l->servers) l->servers->prev = s;
  l->servers = s;
  if (err) {
    s->closed = 1;
    uv_close((uv_handle_t *)&s->tcp, server_close_cb);
    return err;
  }
  s->tls_ctx = opts->tls_ctx;
  *out = s;
  return 0;
}

int wsuv__server_port(wsuv_tserver_t *s) {
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  if (uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&ss, &len) != 0) return -1;
  if (ss.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

wsuv_tconn_t *wsuv__server_pop(wsuv_tserver_t *s) {
  wsuv_tconn_t *c = s->pending_head;
  if (!c) return NULL;
  s->pending_head = c->next_pending;
  if (!s->pending_head) s->pending_tail = NULL;
  c->next_pending = NULL;
  s->npending--;
  return c;
}

void wsuv__server_close(wsuv_tserver_t *s) {
  if (s->closed) return;
  s->closed = 1;
  /* Requests not yet taken are refused; accepted connections belong to
   * their owners, who close them (the Lua server sends 1001). */
  while (s->pending_head) {
    wsuv_tconn_t *c = wsuv__server_pop(s);
    server_reject(c, 503, "server is closing", NULL);
  }
  for (wsuv_tconn_t *c = s->loop->conns; c; c = c->next)
    if (c->server == s) c->server = NULL;
  uv_close((uv_handle_t *)&s->tcp, server_close_cb);
}

void wsuv__server_set_tls(wsuv_tserver_t *s, SSL_CTX *ctx) {
  /* Each connection holds a reference to the context it started with. */
  SSL_CTX_free(s->tls_ctx);
  s->tls_ctx = ctx;
}

/* ---- Deadlines --------------------------------------------------------- */

static void sweep_conn(wsuv_tconn_t *c, uint64_t now) {
  if (c->defer_close && c->deadline && now >= c->deadline) {
    wsuv__release_close(c); /* Lua did not read in time. */
    return;
  }
  if (c->deadline && now >= c->deadline) {
    switch (c->phase) {
    case WSUV_PHASE_RESOLVING:
    case WSUV_PHASE_CONNECTING:
      c->hs->addr_next = NULL;
      wsuv__abort(c, UV_ETIMEDOUT, "connect: timed out");
      return;
    case WSUV_PHASE_PROXY:
      wsuv__abort(c, UV_ETIMEDOUT, "proxy: timed out");
      return;
    case WSUV_PHASE_HANDSHAKE:
    case WSUV_PHASE_REQUEST:
      wsuv__abort(c, UV_ETIMEDOUT,
                  c->tls && !wsuv__tls_done(c->tls) ? "tls: handshake timed out"
                                                    : "handshake: timed out");
      return;
    default:
      /* The peer did not finish the closing handshake in time. */
      if (!c->ws.close_received)
        wsuv__set_error(c, UV_ETIMEDOUT, "close: timed out");
      close_handle(c);
      return;
    }
  }
  if (c->phase != WSUV_PHASE_OPEN) return;
  wsuv_limits_t *lim = c->lim;
  if (!c->queued && now - c->last_activity >= TRIM_MS) {
    wsuv_conn_trim(&c->ws); /* An idle connection keeps no big buffers. */
    if (c->tls) wsuv__tls_trim(c->tls, 0);
  }
  if (lim->idle_timeout && now - c->last_activity >= lim->idle_timeout) {
    wsuv__set_error(c, UV_ETIMEDOUT, "idle timeout");
    wsuv__close(c, 1001, "idle timeout", 12);
    wsuv__ready(c->loop, &c->obj);
    return;
  }
  if (!lim->ping_interval) return;
  if (c->ping_sent) {
    if (now - c->ping_sent >= lim->ping_timeout)
      wsuv__abort(c, UV_ETIMEDOUT, "keepalive: no pong from peer");
  } else if (now - c->last_recv >= lim->ping_interval) {
    if (wsuv__send(c, WSUV_OP_PING, WSUV_FIN, (const uint8_t *)"", 0, NULL,
                   0) == 0)
      c->ping_sent = now;
  }
}

void wsuv__sweep(wsuv_loop_t *l) {
  uint64_t now = wsuv__now(l);
  wsuv_tconn_t *next;
  for (wsuv_tconn_t *c = l->conns; c; c = next) {
    next = c->next;
    sweep_conn(c, now);
  }
  wsuv__loop_flush(l);
  /* Half the spare output buffers each sweep (100 ms): a burst's go back
   * within a second, a steady load keeps about what it uses. */
  wsuv__spare_trim(l, 0);
  /* A broadcast arena no write holds is let go: one after a big message
   * stays no longer than this. */
  if (l->arena && l->arena->base.refs == 1) wsuv__arena_trim(l);
}
