/* uv_tls.c: TLS for the transport, OpenSSL over memory BIOs. libuv moves
 * ciphertext; OpenSSL never touches a socket. Reads feed the shared read
 * buffer's bytes into rbio and decrypt back into the same buffer; writes
 * encrypt queued plaintext into wbio, which uv_conn.c drains into one write.
 *
 * OpenSSL's error queue is per thread and outlives a call, so every call
 * clears it first and every failure drains it into the connection's error
 * message: nothing leaks into the next connection's report. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "uv_internal.h"

struct wsuv_tls_s {
  SSL *ssl;
  BIO *rbio, *wbio; /* owned by ssl */
  int last;         /* SSL_get_error of the last failed call */
  uint8_t done;     /* handshake complete */
};

/* Client contexts are costly (the system CA store is parsed into each), so a
 * loop keeps one per distinct set of options. */
typedef struct tls_cache_s {
  struct tls_cache_s *next;
  SSL_CTX *ctx;
  char key[]; /* the options, serialised */
} tls_cache_t;

static const unsigned char alpn_http11[] = "\x08http/1.1";

/* Fills why with the oldest error in OpenSSL's queue, then empties it. */
static void drain_errors(char *why, size_t cap, const char *fallback) {
  unsigned long e = ERR_get_error();
  const char *reason = e ? ERR_reason_error_string(e) : NULL;
  if (e && ERR_SYSTEM_ERROR(e)) reason = strerror(ERR_GET_REASON(e));
  if (why && cap) {
    if (reason && !strcmp(reason, "wrong version number"))
      snprintf(why, cap, "%s (is the peer speaking TLS?)", reason);
    else if (reason)
      snprintf(why, cap, "%s", reason);
    else if (e)
      snprintf(why, cap, "error %lx", e);
    else
      snprintf(why, cap, "%s", fallback);
  }
  ERR_clear_error();
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int load_ca(SSL_CTX *ctx, const char *ca, char *why, size_t cap) {
  int ok = is_dir(ca) ? SSL_CTX_load_verify_locations(ctx, NULL, ca)
                      : SSL_CTX_load_verify_locations(ctx, ca, NULL);
  if (ok == 1) return 0;
  char reason[128];
  drain_errors(reason, sizeof(reason), "unreadable");
  snprintf(why, cap, "cannot load CA %s: %s", ca, reason);
  return WSUV_ETLS;
}

static int load_pair(SSL_CTX *ctx, const char *cert, const char *key, char *why,
                     size_t cap) {
  char reason[128];
  if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
    drain_errors(reason, sizeof(reason), "unreadable");
    snprintf(why, cap, "cannot load certificate %s: %s", cert, reason);
    return WSUV_ETLS;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key ? key : cert, SSL_FILETYPE_PEM) !=
      1) {
    drain_errors(reason, sizeof(reason), "unreadable");
    snprintf(why, cap, "cannot load key %s: %s", key ? key : cert, reason);
    return WSUV_ETLS;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    drain_errors(NULL, 0, NULL);
    snprintf(why, cap, "key %s does not match certificate %s", key ? key : cert,
             cert);
    return WSUV_ETLS;
  }
  return 0;
}

static int select_alpn(SSL *ssl, const unsigned char **out,
                       unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg) {
  (void)ssl;
  (void)arg;
  /* WebSocket over TLS speaks HTTP/1.1 first (RFC 6455 4.1); a client that
   * offers only h2 gets no ALPN answer rather than a failed handshake. */
  if (SSL_select_next_proto((unsigned char **)out, outlen, alpn_http11,
                            sizeof(alpn_http11) - 1, in,
                            inlen) == OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_OK;
  return SSL_TLSEXT_ERR_NOACK;
}

int wsuv__tls_ctx_new(const wsuv_tls_opts_t *o, int server, SSL_CTX **out,
                      char *why, size_t cap) {
  ERR_clear_error();
  SSL_CTX *ctx =
      SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (!ctx) {
    drain_errors(why, cap, "out of memory");
    return WSUV_ETLS;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  /* Renegotiation is a DoS lever and WebSocket never needs it. */
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  /* Idle connections give their 34 KiB of record buffers back. */
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  int err = 0;
  if (server) {
    if (!o->cert) {
      snprintf(why, cap, "a server needs tls.cert (and tls.key)");
      err = WSUV_EINVAL;
    } else {
      err = load_pair(ctx, o->cert, o->key, why, cap);
    }
    if (!err && o->ca) err = load_ca(ctx, o->ca, why, cap);
    if (!err && o->verify) {
      if (!o->ca) {
        snprintf(why, cap, "verify_client needs tls.ca");
        err = WSUV_EINVAL;
      } else {
        SSL_CTX_set_verify(
            ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        if (!is_dir(o->ca)) {
          STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->ca);
          if (names) SSL_CTX_set_client_CA_list(ctx, names);
        }
      }
    }
    /* Our clients cannot resume sessions; tickets would be wasted bytes. */
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
  } else {
    if (o->ca)
      err = load_ca(ctx, o->ca, why, cap);
    else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
      drain_errors(why, cap, "cannot load the system CA store");
      err = WSUV_ETLS;
    }
    if (!err && o->cert) err = load_pair(ctx, o->cert, o->key, why, cap);
    SSL_CTX_set_verify(ctx, o->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
                       NULL);
    SSL_CTX_set_alpn_protos(ctx, alpn_http11, sizeof(alpn_http11) - 1);
  }
  ERR_clear_error();
  if (err) {
    SSL_CTX_free(ctx);
    return err;
  }
  *out = ctx;
  return 0;
}

SSL_CTX *wsuv__tls_client_ctx(wsuv_loop_t *l, const wsuv_tls_opts_t *o,
                              char *why, size_t cap) {
  char key[1024];
  int n = snprintf(key, sizeof(key), "%d\n%s\n%s\n%s", o->verify,
                   o->ca ? o->ca : "", o->cert ? o->cert : "",
                   o->key ? o->key : "");
  if (n < 0 || (size_t)n >= sizeof(key)) {
    snprintf(why, cap, "TLS file names too long");
    return NULL;
  }
  for (tls_cache_t *e = l->tls_cache; e; e = e->next)
    if (!strcmp(e->key, key)) return e->ctx;
  SSL_CTX *ctx = NULL;
  if (wsuv__tls_ctx_new(o, 0, &ctx, why, cap) != 0) return NULL;
  tls_cache_t *e = malloc(sizeof(*e) + (size_t)n + 1);
  if (!e) {
    SSL_CTX_free(ctx);
    snprintf(why, cap, "out of memory");
    return NULL;
  }
  memcpy(e->key, key, (size_t)n + 1);
  e->ctx = ctx;
  e->next = l->tls_cache;
  l->tls_cache = e;
  return ctx;
}

void wsuv__tls_cache_free(wsuv_loop_t *l) {
  tls_cache_t *e = l->tls_cache, *next;
  for (; e; e = next) {
    next = e->next;
    SSL_CTX_free(e->ctx);
    free(e);
  }
  l->tls_cache = NULL;
}

static int is_ip(const char *host) {
  unsigned char addr[16];
  return uv_inet_pton(AF_INET, host, addr) == 0 ||
         uv_inet_pton(AF_INET6, host, addr) == 0;
}

wsuv_tls_t *wsuv__tls_new(SSL_CTX *ctx, int server, const char *name) {
  ERR_clear_error();
  wsuv_tls_t *t = calloc(1, sizeof(*t));
  if (!t) return NULL;
  t->ssl = SSL_new(ctx);
  t->rbio = BIO_new(BIO_s_mem());
  t->wbio = BIO_new(BIO_s_mem());
  if (!t->ssl || !t->rbio || !t->wbio) {
    BIO_free(t->rbio);
    BIO_free(t->wbio);
    goto fail;
  }
  /* An empty rbio means "more input needed", not end of stream. */
  BIO_set_mem_eof_return(t->rbio, -1);
  SSL_set_bio(t->ssl, t->rbio, t->wbio);
  if (server) {
    SSL_set_accept_state(t->ssl);
  } else {
    SSL_set_connect_state(t->ssl);
    if (name && *name) {
      if (is_ip(name)) {
        /* RFC 6066 3: no SNI for addresses; check the IP SAN instead. */
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), name) != 1)
          goto fail;
      } else if (SSL_set_tlsext_host_name(t->ssl, name) != 1 ||
                 SSL_set1_host(t->ssl, name) != 1) {
        goto fail;
      }
    }
  }
  return t;
fail:
  SSL_free(t->ssl);
  ERR_clear_error();
  free(t);
  return NULL;
}

void wsuv__tls_free(wsuv_tls_t *t) {
  if (!t) return;
  SSL_free(t->ssl); /* and the BIOs */
  free(t);
}

int wsuv__tls_done(const wsuv_tls_t *t) {
  return t->done;
}

/* Empties the error queue before a call on the hot path. ERR_clear_error
 * walks and frees all of the thread's queue slots each time (4% of a server's
 * time in a wss:// echo of small messages), and the queue is nearly always
 * empty already (every failure drains it): peeking first is one lookup. */
static void clear_errors(void) {
  if (ERR_peek_error()) ERR_clear_error();
}

/* Maps a failed call's result: 0 for "wants input", UV_EOF for the peer's
 * close_notify, WSUV_ETLS for a failure. */
static int status_of(wsuv_tls_t *t, int r) {
  int e = SSL_get_error(t->ssl, r);
  switch (e) {
  case SSL_ERROR_WANT_READ:
  case SSL_ERROR_WANT_WRITE: /* wbio is a growing memory BIO: never full */
    clear_errors();
    return 0;
  case SSL_ERROR_ZERO_RETURN:
    clear_errors();
    return UV_EOF;
  default:
    t->last = e;
    return WSUV_ETLS;
  }
}

int wsuv__tls_handshake(wsuv_tls_t *t) {
  if (t->done) return 1;
  clear_errors();
  int r = SSL_do_handshake(t->ssl);
  if (r == 1) {
    t->done = 1;
    return 1;
  }
  r = status_of(t, r);
  return r == UV_EOF ? WSUV_ETLS : r;
}

int wsuv__tls_feed(wsuv_tls_t *t, const uint8_t *p, size_t n) {
  if (n > INT32_MAX) return WSUV_EINVAL;
  return BIO_write(t->rbio, p, (int)n) == (int)n ? 0 : WSUV_ENOMEM;
}

ssize_t wsuv__tls_read(wsuv_tls_t *t, uint8_t *out, size_t cap) {
  clear_errors();
  int r = SSL_read(t->ssl, out, cap > INT32_MAX ? INT32_MAX : (int)cap);
  if (r > 0) return r;
  return status_of(t, r);
}

int wsuv__tls_write(wsuv_tls_t *t, const uint8_t *p, size_t n) {
  while (n > 0) {
    int chunk = n > (1u << 30) ? 1 << 30 : (int)n;
    clear_errors();
    int r = SSL_write(t->ssl, p, chunk);
    if (r <= 0) {
      int s = status_of(t, r);
      return s ? s : WSUV_ETLS; /* Never wants input once done. */
    }
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

int wsuv__tls_input_left(const wsuv_tls_t *t) {
  return SSL_has_pending(t->ssl) || BIO_ctrl_pending(t->rbio) > 0;
}

size_t wsuv__tls_pending(const wsuv_tls_t *t) {
  return BIO_ctrl_pending(t->wbio);
}

size_t wsuv__tls_take(wsuv_tls_t *t, uint8_t *out, size_t cap) {
  int r = BIO_read(t->wbio, out, cap > INT32_MAX ? INT32_MAX : (int)cap);
  return r > 0 ? (size_t)r : 0;
}

/* A memory BIO keeps the largest buffer it ever held: after a 16 MiB
 * message, 16 MiB per direction per connection. An empty BIO whose
 * buffer is over keep bytes is replaced by a fresh one. */
static size_t bio_cap(BIO *b) {
  BUF_MEM *bm = NULL;
  return BIO_get_mem_ptr(b, &bm) == 1 && bm ? bm->max : 0;
}

static BIO *fresh_if_big(BIO *b, size_t keep) {
  BUF_MEM *bm = NULL;
  if (BIO_ctrl_pending(b) || BIO_get_mem_ptr(b, &bm) != 1 || !bm ||
      bm->max <= keep)
    return NULL;
  BIO *n = BIO_new(BIO_s_mem());
  if (n) BIO_set_mem_eof_return(n, -1);
  return n;
}

void wsuv__tls_trim(wsuv_tls_t *t, size_t keep) {
  BIO *r = fresh_if_big(t->rbio, keep);
  if (r) {
    SSL_set0_rbio(t->ssl, r); /* frees the old one */
    t->rbio = r;
  }
  BIO *w = fresh_if_big(t->wbio, keep);
  if (w) {
    SSL_set0_wbio(t->ssl, w);
    t->wbio = w;
  }
}

void wsuv__tls_shutdown(wsuv_tls_t *t) {
  ERR_clear_error();
  if (t->done) SSL_shutdown(t->ssl); /* queues close_notify in wbio */
  ERR_clear_error();
}

void wsuv__tls_explain(wsuv_tls_t *t, char *why, size_t cap) {
  long v = SSL_get_verify_result(t->ssl);
  if (v != X509_V_OK && t->last == SSL_ERROR_SSL) {
    /* The peer's certificate was refused: say why in X.509 terms. */
    snprintf(why, cap, "certificate verify failed: %s",
             X509_verify_cert_error_string(v));
    ERR_clear_error();
    return;
  }
  drain_errors(why, cap,
               t->last == SSL_ERROR_SYSCALL ? "unexpected end of stream"
                                            : "handshake failed");
}

int wsuv__tls_info(wsuv_tls_t *t, wsuv_tls_info_t *info) {
  memset(info, 0, sizeof(*info));
  if (!t->done) return WSUV_ESTATE;
  info->version = SSL_get_version(t->ssl);
  info->cipher = SSL_get_cipher_name(t->ssl);
  const unsigned char *alpn = NULL;
  unsigned alpn_len = 0;
  SSL_get0_alpn_selected(t->ssl, &alpn, &alpn_len);
  info->alpn = (const char *)alpn;
  info->alpn_len = alpn_len;
  X509 *peer = SSL_get1_peer_certificate(t->ssl);
  if (peer) {
    X509_NAME_oneline(X509_get_subject_name(peer), info->peer_subject,
                      sizeof(info->peer_subject));
    X509_free(peer);
  }
  info->verified = peer && SSL_get_verify_result(t->ssl) == X509_V_OK;
  info->buffered = bio_cap(t->rbio) + bio_cap(t->wbio);
  return 0;
}
