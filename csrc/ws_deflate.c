/* ws_deflate.c: permessage-deflate (RFC 7692): negotiation of the
 * Sec-WebSocket-Extensions parameters for both roles, and the zlib streams
 * that compress what we send and inflate what the peer sends.
 *
 * Inflating is pull-style and bounded: the caller hands over compressed
 * bytes and pulls output into a buffer of the size it chooses, so a message
 * limit holds on the inflated size without ever allocating past it. zlib's
 * own memory is bounded by the window and memLevel, counted through the
 * per-instance allocator, and capped.
 *
 * Defaults, measured on JSON game-state messages (123 bytes on average,
 * context takeover, 15 window bits, one core):
 * - level 1: 19.9% of the input at 1.55 us per message; level 6 gives 17.1%
 *   at 2.3 us, level 9 17.0% at 6.8 us. Nearly all of the bandwidth win is
 *   there at level 1, for two thirds of the CPU, so we favour speed.
 * - threshold 32: without a shared window, messages of 32 bytes or less grow
 *   (by 2 bytes); with one, a 32-byte message still shrinks to 7 bytes but
 *   saves less than the TCP/IP headers it travels with, while both ends pay
 *   a zlib call. From 64 bytes up it saves 50 bytes and more. Set 1 to
 *   compress everything.
 * - Without context takeover the deflate stream is reset, not freed, after
 *   each message: both cost about 5 us, but freeing and reallocating its
 *   256 KiB made glibc return it to the system and fault it back in, 337 us
 *   per message. wsuv_deflate_trim frees it when the caller knows the
 *   connection is idle. The inflate stream (40 KiB) is freed after each
 *   message instead: that costs nothing measurable (1.6 us either way). */
#include "ws_internal.h"

#include <limits.h>

#include <zlib.h>

#define PMD_NAME "permessage-deflate"

/* ---- Parsing Sec-WebSocket-Extensions (RFC 6455 9.1, RFC 7230 3.2.6) ---- */

/* tchar (RFC 7230 3.2.6). */
static int is_tchar(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
      (c >= '0' && c <= '9'))
    return 1;
  return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int is_ows(unsigned char c) {
  return c == ' ' || c == '\t';
}

/* qdtext and the second byte of a quoted-pair (RFC 7230 3.2.6). */
static int is_qdtext(unsigned char c) {
  return c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) ||
         (c >= 0x5d && c <= 0x7e) || c >= 0x80;
}

static int is_quoted_pair_char(unsigned char c) {
  return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int equal_ci(const char *a, size_t alen, const char *b) {
  size_t blen = strlen(b);
  if (alen != blen) return 0;
  for (size_t i = 0; i < alen; i++) {
    unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
    if (x >= 'A' && x <= 'Z') x = (unsigned char)(x + ('a' - 'A'));
    if (x != y) return 0;
  }
  return 1;
}

static size_t skip_ows(const char *p, size_t i, size_t n) {
  while (i < n && is_ows((unsigned char)p[i]))
    i++;
  return i;
}

static size_t skip_token(const char *p, size_t i, size_t n) {
  while (i < n && is_tchar((unsigned char)p[i]))
    i++;
  return i;
}

typedef struct {
  const char *name;
  size_t name_len;
  const char *val; /* without the quotes; escapes still in place */
  size_t val_len;
  int has_val, quoted;
} ext_param_t;

/* An element "name *( OWS ; OWS token [ OWS = OWS (token | quoted) ] )", as
 * wsuv_token_next cut it from the list (trimmed, commas in quotes kept). */
typedef struct {
  const char *p;
  size_t n, i; /* text and position after the name or the last param */
} ext_elem_t;

/* Reads the name; returns 0 when the element does not start with a token. */
static int elem_open(ext_elem_t *e, const char *p, size_t n, const char **name,
                     size_t *name_len) {
  e->p = p;
  e->n = n;
  e->i = skip_token(p, 0, n);
  *name = p;
  *name_len = e->i;
  return e->i > 0;
}

static int quoted_value(ext_elem_t *e, size_t *j, ext_param_t *prm) {
  const char *p = e->p;
  size_t s = ++*j;
  while (*j < e->n && p[*j] != '"') {
    unsigned char c = (unsigned char)p[*j];
    if (c == '\\') {
      if (*j + 1 >= e->n || !is_quoted_pair_char((unsigned char)p[*j + 1]))
        return 0;
      *j += 2;
    } else if (is_qdtext(c)) {
      ++*j;
    } else {
      return 0;
    }
  }
  if (*j >= e->n) return 0; /* unterminated */
  prm->val = p + s;
  prm->val_len = *j - s;
  prm->quoted = 1;
  ++*j;
  return 1;
}

/* Next parameter. Returns 1 with *prm, 0 at the end, -1 when malformed. */
static int elem_param(ext_elem_t *e, ext_param_t *prm) {
  const char *p = e->p;
  size_t j = skip_ows(p, e->i, e->n);
  if (j == e->n) return 0;
  if (p[j] != ';') return -1;
  j = skip_ows(p, j + 1, e->n);
  size_t s = j;
  j = skip_token(p, j, e->n);
  if (j == s) return -1;
  *prm = (ext_param_t){.name = p + s, .name_len = j - s};
  j = skip_ows(p, j, e->n);
  if (j < e->n && p[j] == '=') {
    j = skip_ows(p, j + 1, e->n);
    prm->has_val = 1;
    if (j < e->n && p[j] == '"') {
      if (!quoted_value(e, &j, prm)) return -1;
    } else {
      s = j;
      j = skip_token(p, j, e->n);
      if (j == s) return -1;
      prm->val = p + s;
      prm->val_len = j - s;
    }
  }
  e->i = j;
  return 1;
}

/* RFC 7692 7.1.2.1 and 7.1.2.2: a decimal integer 8..15 without leading
 * zeros; a quoted-string value must be that after unescaping (7.1). Returns
 * the value, or -1. */
static int window_bits_value(const ext_param_t *prm) {
  int v = 0, digits = 0;
  for (size_t k = 0; k < prm->val_len; k++) {
    char c = prm->val[k];
    if (prm->quoted && c == '\\') c = prm->val[++k];
    if (c < '0' || c > '9' || (digits == 0 && c == '0') || ++digits > 2)
      return -1;
    v = v * 10 + (c - '0');
  }
  return v >= 8 && v <= 15 ? v : -1;
}

/* The parameters of one permessage-deflate element. */
typedef struct {
  uint8_t snct, cnct;      /* *_no_context_takeover present */
  uint8_t smwb_seen, smwb; /* server_max_window_bits and its value */
  uint8_t cmwb_seen, cmwb; /* client_max_window_bits, value or 0 */
} pmd_ext_t;

static const char *flag_param(const ext_param_t *prm, uint8_t *seen) {
  /* RFC 7692 7.1: a parameter twice, or a value where none is defined,
   * makes the offer (or response) invalid. */
  if (*seen) return "duplicate permessage-deflate parameter";
  if (prm->has_val) return "value on a permessage-deflate flag parameter";
  *seen = 1;
  return NULL;
}

static const char *bits_param(const ext_param_t *prm, uint8_t *seen,
                              uint8_t *val, int need_value) {
  if (*seen) return "duplicate permessage-deflate parameter";
  *seen = 1;
  if (!prm->has_val)
    return need_value ? "window bits parameter without value" : NULL;
  int v = window_bits_value(prm);
  if (v < 0) return "window bits not an integer in 8..15";
  *val = (uint8_t)v;
  return NULL;
}

/* Reads the rest of e as permessage-deflate parameters. response: the
 * server's answer, where client_max_window_bits needs a value (7.1.2.2).
 * Returns NULL, or why the element is unacceptable. */
static const char *pmd_params(ext_elem_t *e, int response, pmd_ext_t *x) {
  ext_param_t prm;
  int r;
  *x = (pmd_ext_t){0};
  while ((r = elem_param(e, &prm)) == 1) {
    const char *why;
    if (equal_ci(prm.name, prm.name_len, "server_no_context_takeover"))
      why = flag_param(&prm, &x->snct);
    else if (equal_ci(prm.name, prm.name_len, "client_no_context_takeover"))
      why = flag_param(&prm, &x->cnct);
    else if (equal_ci(prm.name, prm.name_len, "server_max_window_bits"))
      why = bits_param(&prm, &x->smwb_seen, &x->smwb, 1);
    else if (equal_ci(prm.name, prm.name_len, "client_max_window_bits"))
      why = bits_param(&prm, &x->cmwb_seen, &x->cmwb, response);
    else
      why = "unknown permessage-deflate parameter";
    if (why) return why;
  }
  return r < 0 ? "malformed Sec-WebSocket-Extensions" : NULL;
}

/* Walks the elements of every Sec-WebSocket-Extensions header in order. */
typedef struct {
  const wsuv_http_head_t *h;
  size_t next; /* index of the next header to look at */
  const char *cur, *end;
} ext_iter_t;

static int iter_next(ext_iter_t *it, const char **el, size_t *len) {
  for (;;) {
    if (it->cur && wsuv_token_next(&it->cur, it->end, el, len)) return 1;
    int k = wsuv_http_find(it->h, "Sec-WebSocket-Extensions", it->next);
    if (k < 0) {
      it->cur = NULL;
      it->next = it->h->num_headers;
      return 0;
    }
    it->next = (size_t)k + 1;
    it->cur = it->h->headers[k].value;
    it->end = it->cur + it->h->headers[k].value_len;
  }
}

/* ---- Negotiation (RFC 7692 5 and 7.1) ----------------------------------- */

static int bits_opt_valid(uint8_t b) {
  return b == 0 || (b >= 8 && b <= 15);
}

static int options_valid(const wsuv_pmd_options_t *o) {
  return bits_opt_valid(o->server_max_window_bits) &&
         bits_opt_valid(o->client_max_window_bits) && o->level >= 0 &&
         o->level <= 9 && o->mem_level >= 0 && o->mem_level <= 9;
}

/* 0 (no limit) reads as 15. */
static uint8_t bits_or_15(uint8_t b) {
  return b ? b : 15;
}

static uint8_t min_u8(uint8_t a, uint8_t b) {
  return a < b ? a : b;
}

typedef struct {
  char *out;
  size_t cap, len;
  int err;
} ext_writer_t;

static void put(ext_writer_t *w, const char *s) {
  size_t n = strlen(s);
  if (w->err) return;
  /* One byte stays free for the NUL. */
  if (w->cap == 0 || n > w->cap - 1 - w->len) {
    w->err = WSUV_ENOBUFS;
    return;
  }
  memcpy(w->out + w->len, s, n);
  w->len += n;
  w->out[w->len] = '\0';
}

/* "; name" or "; name=v" (v is 8..15). */
static void put_bits(ext_writer_t *w, const char *name, int with_value,
                     uint8_t v) {
  char num[4] = {'=', '1', (char)('0' + v % 10), '\0'};
  put(w, "; ");
  put(w, name);
  if (!with_value) return;
  if (v < 10) {
    num[1] = num[2];
    num[2] = '\0';
  }
  put(w, num);
}

static void writer_init(ext_writer_t *w, char *out, size_t cap) {
  *w = (ext_writer_t){out, out ? cap : 0, 0, 0};
  if (w->cap) out[0] = '\0';
}

/* What the server answers to an acceptable offer x: the offer's requests,
 * tightened by ours. Writes the response into w. */
static void server_agree(const pmd_ext_t *x, const wsuv_pmd_options_t *opt,
                         wsuv_pmd_params_t *ag, ext_writer_t *w) {
  /* 7.1.1.1: a server that accepts server_no_context_takeover MUST say so;
   * it may also impose it on itself. 7.1.1.2: the server may always add
   * client_no_context_takeover; echoing a client's hint binds it, which lets
   * us drop the inflate window between messages. */
  ag->server_no_context_takeover =
      (uint8_t)(x->snct || opt->server_no_context_takeover);
  ag->client_no_context_takeover =
      (uint8_t)(x->cnct || opt->client_no_context_takeover);
  /* 7.1.2.1: the server's window is at most the offer's value, and the
   * server may choose a smaller one unasked. */
  uint8_t smwb = min_u8(x->smwb_seen ? x->smwb : 15,
                        bits_or_15(opt->server_max_window_bits));
  ag->server_max_window_bits = smwb;
  /* 7.1.2.2: the client's window may only be limited when it offered
   * client_max_window_bits, to at most the offered value. */
  uint8_t cmwb = 15;
  if (x->cmwb_seen)
    cmwb =
        min_u8(x->cmwb ? x->cmwb : 15, bits_or_15(opt->client_max_window_bits));
  ag->client_max_window_bits = cmwb;

  put(w, PMD_NAME);
  if (ag->server_no_context_takeover) put(w, "; server_no_context_takeover");
  if (ag->client_no_context_takeover) put(w, "; client_no_context_takeover");
  if (x->smwb_seen || smwb < 15) put_bits(w, "server_max_window_bits", 1, smwb);
  if (x->cmwb_seen && cmwb < 15) put_bits(w, "client_max_window_bits", 1, cmwb);
}

int wsuv_pmd_negotiate(const wsuv_http_head_t *req,
                       const wsuv_pmd_options_t *opt, wsuv_pmd_params_t *agreed,
                       char *response_ext, size_t cap) {
  ext_writer_t w;
  writer_init(&w, response_ext, cap);
  if (opt == NULL || !opt->enabled) return 0;
  if (!options_valid(opt) || agreed == NULL) return WSUV_EINVAL;
  ext_iter_t it = {.h = req};
  const char *el, *name;
  size_t len, name_len;
  while (iter_next(&it, &el, &len)) {
    ext_elem_t e;
    pmd_ext_t x;
    /* RFC 6455 9.1: other extensions are someone else's; RFC 7692 7.1: a
     * server MUST decline an offer with an unknown, duplicate or invalid
     * parameter, and may then accept a later one (5.1). */
    if (!elem_open(&e, el, len, &name, &name_len) ||
        !equal_ci(name, name_len, PMD_NAME) || pmd_params(&e, 0, &x))
      continue;
    server_agree(&x, opt, agreed, &w);
    if (w.err) {
      writer_init(&w, response_ext, cap);
      return WSUV_ENOBUFS;
    }
    return 1;
  }
  return 0;
}

/* The values our offer carries, 0 where it carries none. */
static uint8_t offered_bits(uint8_t b) {
  return b >= 8 && b < 15 ? b : 0;
}

ssize_t wsuv_pmd_offer(const wsuv_pmd_options_t *opt, char *out, size_t cap) {
  ext_writer_t w;
  writer_init(&w, out, cap);
  if (opt == NULL || !opt->enabled) return 0;
  if (!options_valid(opt)) return WSUV_EINVAL;
  uint8_t smwb = offered_bits(opt->server_max_window_bits);
  uint8_t cmwb = offered_bits(opt->client_max_window_bits);
  put(&w, PMD_NAME);
  if (opt->server_no_context_takeover) put(&w, "; server_no_context_takeover");
  if (opt->client_no_context_takeover) put(&w, "; client_no_context_takeover");
  if (smwb) put_bits(&w, "server_max_window_bits", 1, smwb);
  /* 7.1.2.2: always offered, so the server may shrink our window. */
  put_bits(&w, "client_max_window_bits", cmwb != 0, cmwb);
  if (w.err) {
    writer_init(&w, out, cap);
    return WSUV_ENOBUFS;
  }
  return (ssize_t)w.len;
}

static int ext_fail(const char **why, const char *msg) {
  if (why) *why = msg;
  return WSUV_EEXTENSION;
}

/* RFC 7692 7.1: what the client makes of the server's accepted parameters.
 * Returns NULL or why the connection must fail. */
static const char *client_agree(const pmd_ext_t *x,
                                const wsuv_pmd_options_t *opt,
                                wsuv_pmd_params_t *ag) {
  uint8_t smwb = offered_bits(opt->server_max_window_bits);
  uint8_t cmwb = offered_bits(opt->client_max_window_bits);
  /* 7.1.2.1: the server's window may not exceed what we asked for. */
  if (x->smwb_seen && smwb && x->smwb > smwb)
    return "server_max_window_bits above the offer";
  ag->server_no_context_takeover = x->snct;
  /* 7.1.1.2: we keep our own promise even if the server did not ask. */
  ag->client_no_context_takeover =
      (uint8_t)(x->cnct || opt->client_no_context_takeover);
  /* A server that ignored our limit uses up to 15 (we inflate with that). */
  ag->server_max_window_bits = x->smwb_seen ? x->smwb : 15;
  /* 7.1.2.2: with a value in the offer we promised to stay under it, and
   * the server may lower it further; a higher answer is harmless. */
  uint8_t mine = cmwb ? cmwb : 15;
  ag->client_max_window_bits = x->cmwb_seen ? min_u8(x->cmwb, mine) : mine;
  return NULL;
}

int wsuv_pmd_accept_response(const wsuv_http_head_t *res,
                             const wsuv_pmd_options_t *opt,
                             wsuv_pmd_params_t *agreed, const char **why) {
  ext_iter_t it = {.h = res};
  const char *el, *name;
  size_t len, name_len;
  pmd_ext_t x;
  int found = 0;
  if (opt && opt->enabled && !options_valid(opt))
    return ext_fail(why, "invalid permessage-deflate options");
  while (iter_next(&it, &el, &len)) {
    ext_elem_t e;
    if (!elem_open(&e, el, len, &name, &name_len))
      return ext_fail(why, "malformed Sec-WebSocket-Extensions");
    /* RFC 6455 4.1 (6): only offered extensions may come back. */
    if (!equal_ci(name, name_len, PMD_NAME) || opt == NULL || !opt->enabled)
      return ext_fail(why, "server accepted an extension that was not offered");
    /* RFC 7692 5.1: one permessage-deflate per response. */
    if (found) return ext_fail(why, "permessage-deflate accepted twice");
    found = 1;
    const char *bad = pmd_params(&e, 1, &x);
    if (bad) return ext_fail(why, bad);
  }
  if (!found) return 0;
  wsuv_pmd_params_t ag;
  const char *bad = client_agree(&x, opt, &ag);
  if (bad) return ext_fail(why, bad);
  if (agreed) *agreed = ag;
  return 1;
}

/* ---- zlib memory ----------------------------------------------------- */

/* Every block carries its size in front, so zfree can count it; 16 bytes
 * keep zlib's blocks as aligned as malloc's. */
#define ZHDR 16u

static void *zm_alloc(wsuv_zmem_t *m, size_t n) {
  if (n > SIZE_MAX - ZHDR) return NULL;
  n += ZHDR;
  if (n > m->cap - m->mem) return NULL;
  uint8_t *p = wsuv__realloc(&m->alloc, NULL, n);
  if (!p) return NULL;
  memcpy(p, &n, sizeof n);
  m->mem += n;
  return p + ZHDR;
}

static void zm_free(wsuv_zmem_t *m, void *ptr) {
  if (!ptr) return;
  uint8_t *p = (uint8_t *)ptr - ZHDR;
  size_t n;
  memcpy(&n, p, sizeof n);
  m->mem -= n;
  wsuv__realloc(&m->alloc, p, 0);
}

static voidpf z_alloc(voidpf opaque, uInt items, uInt size) {
  if (size && items > SIZE_MAX / size) return Z_NULL;
  return zm_alloc(opaque, (size_t)items * size);
}

static void z_free(voidpf opaque, voidpf ptr) {
  zm_free(opaque, ptr);
}

static void zm_init(wsuv_zmem_t *m, const wsuv_allocator_t *alloc, size_t cap) {
  m->alloc = alloc ? *alloc : (wsuv_allocator_t){0};
  m->mem = 0;
  m->cap = cap;
}

static int bits_valid(uint8_t b) {
  return b >= 8 && b <= 15;
}

/* ---- Compression (RFC 7692 7.2.1) -------------------------------------- */

/* Output storage above this is given back at the next message. */
#define OUT_KEEP_MAX (64u * 1024u)

int wsuv_deflate_init(wsuv_deflate_t *d, wsuv_role_t role,
                      const wsuv_pmd_params_t *agreed,
                      const wsuv_pmd_options_t *opt,
                      const wsuv_allocator_t *alloc) {
  memset(d, 0, sizeof *d);
  if (agreed == NULL || (opt && !options_valid(opt))) return WSUV_EINVAL;
  int server = role == WSUV_ROLE_SERVER;
  uint8_t bits =
      server ? agreed->server_max_window_bits : agreed->client_max_window_bits;
  if (!bits_valid(bits)) return WSUV_EINVAL;
  d->window_bits = bits;
  d->no_context_takeover = server ? agreed->server_no_context_takeover
                                  : agreed->client_no_context_takeover;
  d->level = opt && opt->level ? opt->level : WSUV_PMD_DEFAULT_LEVEL;
  d->mem_level = (uint8_t)(opt && opt->mem_level ? opt->mem_level
                                                 : WSUV_PMD_DEFAULT_MEM_LEVEL);
  /* zlib's deflate needs (1 << (windowBits + 2)) + (1 << (memLevel + 9))
   * bytes plus its state (zconf.h); twice that and 64 KiB leave room for
   * other zlib builds, yet still bound it. */
  size_t need = ((size_t)1 << (bits + 2)) + ((size_t)1 << (d->mem_level + 9));
  zm_init(&d->zm, alloc, 2 * need + 64 * 1024);
  return 0;
}

static void deflate_end(wsuv_deflate_t *d) {
  if (!d->z) return;
  deflateEnd(d->z);
  zm_free(&d->zm, d->z);
  d->z = NULL;
}

void wsuv_deflate_free(wsuv_deflate_t *d) {
  deflate_end(d);
  if (d->out) wsuv__realloc(&d->zm.alloc, d->out, 0);
  d->out = NULL;
  d->out_cap = 0;
  d->in_message = 0;
}

size_t wsuv_deflate_memory(const wsuv_deflate_t *d) {
  return d->zm.mem;
}

static int deflate_start(wsuv_deflate_t *d) {
  z_stream *zs = zm_alloc(&d->zm, sizeof *zs);
  if (!zs) return WSUV_ENOMEM;
  memset(zs, 0, sizeof *zs);
  zs->zalloc = z_alloc;
  zs->zfree = z_free;
  zs->opaque = &d->zm;
  /* zlib refuses windowBits 8 for raw deflate. With 9 its matches reach
   * back at most 512 - 262 = 250 bytes (MAX_DIST), so a peer that agreed to
   * a 256-byte window can still inflate everything we send. */
  int bits = d->window_bits == 8 ? 9 : d->window_bits;
  int r = deflateInit2(zs, d->level, Z_DEFLATED, -bits, d->mem_level,
                       Z_DEFAULT_STRATEGY);
  if (r != Z_OK) {
    zm_free(&d->zm, zs);
    return r == Z_MEM_ERROR ? WSUV_ENOMEM : WSUV_EINVAL;
  }
  d->z = zs;
  return 0;
}

/* Makes d->out hold at least need bytes; gives back storage a big message
 * left behind. */
static int out_reserve(wsuv_deflate_t *d, size_t need) {
  if (need <= d->out_cap && !(d->out_cap > OUT_KEEP_MAX && need < OUT_KEEP_MAX))
    return 0;
  uint8_t *p = wsuv__realloc(&d->zm.alloc, d->out, need);
  if (!p) return WSUV_ENOMEM;
  d->out = p;
  d->out_cap = need;
  return 0;
}

/* After a message: a sender that agreed to no context takeover starts each
 * message with an empty window (RFC 7692 7.1.1). Reset, not freed: see the
 * top of this file. */
static void deflate_end_message(wsuv_deflate_t *d) {
  d->in_message = 0;
  if (d->no_context_takeover && d->z && deflateReset(d->z) != Z_OK)
    deflate_end(d);
}

void wsuv_deflate_trim(wsuv_deflate_t *d) {
  if (d->out) wsuv__realloc(&d->zm.alloc, d->out, 0);
  d->out = NULL;
  d->out_cap = 0;
  if (d->no_context_takeover && !d->in_message) deflate_end(d);
}

/* Runs deflate over n bytes of in with a sync flush at the end, appending
 * to d->out from *len. */
static int deflate_run(wsuv_deflate_t *d, const uint8_t *in, size_t n,
                       size_t *len) {
  z_stream *zs = d->z;
  size_t left = n;
  zs->avail_in = 0;
  for (;;) {
    if (zs->avail_in == 0 && left) {
      uInt take = left > UINT_MAX ? UINT_MAX : (uInt)left;
      zs->next_in = (Bytef *)(uintptr_t)in;
      zs->avail_in = take;
      in += take;
      left -= take;
    }
    /* zlib: keep more than 6 bytes free under a sync flush, or it may emit
     * the marker twice. */
    if (d->out_cap - *len < 16) {
      size_t cap = d->out_cap > SIZE_MAX / 2 ? SIZE_MAX : d->out_cap * 2;
      if (out_reserve(d, cap)) return WSUV_ENOMEM;
    }
    size_t room = d->out_cap - *len;
    zs->next_out = d->out + *len;
    zs->avail_out = room > UINT_MAX ? UINT_MAX : (uInt)room;
    uInt before = zs->avail_out;
    int r = deflate(zs, left ? Z_NO_FLUSH : Z_SYNC_FLUSH);
    *len += before - zs->avail_out;
    /* Z_BUF_ERROR only means there was nothing left to flush. */
    if (r != Z_OK && r != Z_BUF_ERROR) return WSUV_EINVAL;
    if (!left && zs->avail_in == 0 && zs->avail_out != 0) return 0;
  }
}

ssize_t wsuv_deflate_compress(wsuv_deflate_t *d, const uint8_t *in, size_t n,
                              int fin, const uint8_t **out) {
  static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
  *out = (const uint8_t *)"";
  /* Bounds the output (about n + n / 1000) well inside ssize_t. */
  if (n > WSUV__SSIZE_MAX / 2 || (n > 0 && in == NULL)) return WSUV_EINVAL;
  if (n == 0 && !fin) {
    d->in_message = 1;
    return 0;
  }
  int r;
  if (!d->z && (r = deflate_start(d)) != 0) return r;
  /* deflateBound covers the data and a final block; 16 more cover the
   * sync flush, so one deflate call normally does. */
  size_t need = (size_t)deflateBound(d->z, (uLong)n) + 16;
  size_t len = 0;
  if ((r = out_reserve(d, need)) != 0 ||
      (r = deflate_run(d, in, n, &len)) != 0) {
    deflate_end(d);
    d->in_message = 0;
    return r;
  }
  d->in_message = 1;
  if (fin) {
    /* RFC 7692 7.2.1: a sync flush ends in an empty stored block; drop its
     * 00 00 ff ff, which the receiver appends again (7.2.2). Nothing new to
     * flush leaves no output, and an empty block's header byte stands in
     * (7.2.3.6). */
    if (len >= 4 && memcmp(d->out + len - 4, tail, 4) == 0)
      len -= 4;
    else if (len == 0)
      d->out[len++] = 0x00;
    deflate_end_message(d);
  }
  *out = d->out;
  return (ssize_t)len;
}

/* ---- Decompression (RFC 7692 7.2.2) ------------------------------------ */

/* Stream state beyond zlib's: the input handed over but not yet given to
 * zlib (z_stream counts in uInt), and where the message stands. */
typedef struct {
  z_stream zs;
  const uint8_t *in;
  size_t in_len;
  size_t fed;     /* compressed bytes of this message so far (saturating) */
  uint8_t active; /* a message is in progress */
  uint8_t fin;    /* its last part was fed */
  uint8_t tail;   /* 00 00 ff ff given to zlib */
  uint8_t clean;  /* it ended with a final block and nothing after it */
  uint8_t full;   /* the last pull filled its buffer: maybe more output */
  unsigned ends;  /* final blocks seen in this message */
  int err;        /* error found after output that was handed out first */
} inflate_state_t;

static int input_left(const inflate_state_t *s) {
  return s->in_len > 0 || s->zs.avail_in > 0;
}

int wsuv_inflate_init(wsuv_inflate_t *z, wsuv_role_t role,
                      const wsuv_pmd_params_t *agreed,
                      const wsuv_allocator_t *alloc) {
  memset(z, 0, sizeof *z);
  if (agreed == NULL) return WSUV_EINVAL;
  /* We inflate what the peer sends: the other half of the parameters. */
  int server = role == WSUV_ROLE_SERVER;
  uint8_t bits =
      server ? agreed->client_max_window_bits : agreed->server_max_window_bits;
  if (!bits_valid(bits)) return WSUV_EINVAL;
  z->window_bits = bits;
  z->no_context_takeover = server ? agreed->client_no_context_takeover
                                  : agreed->server_no_context_takeover;
  /* inflate holds its state (about 7 KiB) and one window; restarting
   * after a final block briefly copies the window once more. */
  zm_init(&z->zm, alloc, 2 * ((size_t)1 << bits) + 64 * 1024);
  return 0;
}

static void inflate_end(wsuv_inflate_t *z) {
  inflate_state_t *s = z->z;
  if (!s) return;
  inflateEnd(&s->zs);
  zm_free(&z->zm, s);
  z->z = NULL;
}

void wsuv_inflate_free(wsuv_inflate_t *z) {
  inflate_end(z);
}

size_t wsuv_inflate_memory(const wsuv_inflate_t *z) {
  return z->zm.mem;
}

int wsuv_inflate_busy(const wsuv_inflate_t *z) {
  const inflate_state_t *s = z->z;
  return s && s->active && (s->err || s->full || input_left(s) || s->fin);
}

static int inflate_start(wsuv_inflate_t *z) {
  inflate_state_t *s = zm_alloc(&z->zm, sizeof *s);
  if (!s) return WSUV_ENOMEM;
  memset(s, 0, sizeof *s);
  s->zs.zalloc = z_alloc;
  s->zs.zfree = z_free;
  s->zs.opaque = &z->zm;
  /* Raw inflate takes windowBits 8 (only deflate refuses it), so the
   * window kept between calls is the agreed one: a peer reaching further
   * back into earlier messages fails ("invalid distance too far back"). */
  int r = inflateInit2(&s->zs, -(int)z->window_bits);
  if (r != Z_OK) {
    zm_free(&z->zm, s);
    return r == Z_MEM_ERROR ? WSUV_ENOMEM : WSUV_EINVAL;
  }
  z->z = s;
  return 0;
}

int wsuv_inflate_feed(wsuv_inflate_t *z, const uint8_t *in, size_t n, int fin) {
  inflate_state_t *s = z->z;
  if (n > 0 && in == NULL) return WSUV_EINVAL;
  if (s && (input_left(s) || s->fin)) return WSUV_ESTATE;
  int r;
  if (!s) {
    if ((r = inflate_start(z)) != 0) return r;
    s = z->z;
  }
  s->in = in;
  s->in_len = n;
  s->fin = (uint8_t)(fin != 0);
  s->active = 1;
  s->fed = n > SIZE_MAX - s->fed ? SIZE_MAX : s->fed + n;
  return 0;
}

static void inflate_end_message(wsuv_inflate_t *z) {
  inflate_state_t *s = z->z;
  /* RFC 7692 8.2.3-style reset: a peer that agreed to no context takeover
   * starts every message with an empty window, so ours can go; freeing it
   * leaves an idle connection without zlib memory. */
  if (z->no_context_takeover) {
    inflate_end(z);
    return;
  }
  s->active = s->fin = s->tail = s->clean = s->full = 0;
  s->ends = 0;
  s->fed = 0;
}

/* A final block ended zlib's stream (RFC 7692 7.2.3.4). Later blocks may
 * still follow and refer back (7.2.1), so start a new stream over the same
 * window. Copying the window costs up to 2 << bits per final block, so final
 * blocks are allowed once per message plus once per KiB of its input: that
 * keeps the work per input byte near a normal inflate's. */
static int inflate_restart(wsuv_inflate_t *z, inflate_state_t *s) {
  if (++s->ends > 1 + s->fed / 1024) return WSUV_EDEFLATE;
  int more = input_left(s) || !s->fin;
  if (!more) {
    /* The message ends with the final block; no tail is needed. */
    s->tail = s->clean = 1;
  }
  uint8_t *dict = NULL;
  uInt dict_len = 0;
  if (more || !z->no_context_takeover) {
    dict = zm_alloc(&z->zm, (size_t)1 << z->window_bits);
    if (!dict) return WSUV_ENOMEM;
    inflateGetDictionary(&s->zs, dict, &dict_len);
  }
  int r = inflateReset(&s->zs);
  if (r == Z_OK && dict_len) r = inflateSetDictionary(&s->zs, dict, dict_len);
  zm_free(&z->zm, dict);
  return r == Z_OK ? 0 : WSUV_EDEFLATE;
}

/* Gives zlib its next input: the fed bytes, then the tail. Returns 0 when
 * there is none. */
static int next_input(inflate_state_t *s) {
  static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
  if (s->zs.avail_in) return 1;
  if (s->in_len) {
    uInt take = s->in_len > UINT_MAX ? UINT_MAX : (uInt)s->in_len;
    s->zs.next_in = (Bytef *)(uintptr_t)s->in;
    s->zs.avail_in = take;
    s->in += take;
    s->in_len -= take;
    return 1;
  }
  if (s->fin && !s->tail) {
    /* RFC 7692 7.2.2: append 00 00 ff ff to the message's payload. */
    s->zs.next_in = (Bytef *)(uintptr_t)tail;
    s->zs.avail_in = sizeof tail;
    s->tail = 1;
    return 1;
  }
  return 0;
}

static ssize_t inflate_fail(wsuv_inflate_t *z, int err) {
  inflate_end(z);
  return err;
}

/* One inflate step. Returns 0 or the error it ran into. */
static int inflate_step(wsuv_inflate_t *z, inflate_state_t *s) {
  z_stream *zs = &s->zs;
  uInt in_before = zs->avail_in, out_before = zs->avail_out;
  /* Z_BLOCK once the tail is in: zlib then stops at the block boundary
   * where it must be when the message ends. */
  int r = inflate(zs, s->tail ? Z_BLOCK : Z_SYNC_FLUSH);
  if (r == Z_STREAM_END) return inflate_restart(z, s);
  if (r == Z_MEM_ERROR) return WSUV_ENOMEM;
  if (r != Z_OK && r != Z_BUF_ERROR) return WSUV_EDEFLATE;
  /* With input and room zlib always moves (a stop at a block boundary
   * resumes on the next call); guard the loop all the same. Without input
   * it may rightly have nothing left. */
  if (in_before && zs->avail_in == in_before && zs->avail_out == out_before)
    return WSUV_EDEFLATE;
  return 0;
}

ssize_t wsuv_inflate_pull(wsuv_inflate_t *z, uint8_t *out, size_t cap) {
  inflate_state_t *s = z->z;
  if (!s || !s->active) return 0;
  if (cap == 0 || out == NULL) return WSUV_EINVAL;
  if (s->err) return inflate_fail(z, s->err);
  if (cap > UINT_MAX) cap = UINT_MAX;
  z_stream *zs = &s->zs;
  zs->next_out = out;
  zs->avail_out = (uInt)cap;
  /* After a pull that filled its buffer zlib may still hold output with all
   * input taken, so it is asked once more even without input. */
  int err = 0, held = s->full;
  while (!err && zs->avail_out > 0 && (next_input(s) || held)) {
    held = 0;
    err = inflate_step(z, s);
  }
  size_t got = cap - zs->avail_out;
  s->full = zs->avail_out == 0;
  /* All input and the tail are in. RFC 7692 7.2.1: a message ends right
   * after the empty stored block we appended, at a block boundary; anything
   * else is a truncated or corrupt message. */
  if (!err && !s->full && !input_left(s) && s->tail) {
    if (!s->clean && !(zs->data_type & 128)) {
      err = WSUV_EDEFLATE;
    } else {
      inflate_end_message(z);
      return (ssize_t)got;
    }
  }
  if (!err) return (ssize_t)got;
  /* What inflated before the error goes out first, so that the outcome (a
   * UTF-8 or size error in it, say) does not depend on how the input was
   * split; the error comes with the next pull. */
  if (!got) return inflate_fail(z, err);
  s->err = err;
  return (ssize_t)got;
}
