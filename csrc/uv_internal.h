/* uv_internal.h: the transport (libuv TCP, timers, write queue). It knows
 * nothing of Lua: the binding plugs in through wsuv_hooks_t and the `data`
 * pointer every object carries.
 *
 * Ownership: the transport mallocs each connection and server, and frees it
 * only in libuv's close callback, after calling hooks.freed. The binding
 * never frees them; it drops its pointer in hooks.freed. */
#ifndef WSUV_UV_INTERNAL_H
#define WSUV_UV_INTERNAL_H

#include <openssl/ssl.h>
#include <uv.h>

#include "wsuv.h"
#include "wsuv_conn.h"

#define WSUV_READ_BUFFER_SIZE (64 * 1024)

/* What a waiting sender waits for (wsuv_tconn_t.drain_wanted): the queue
 * at or below high_water, or empty (room for any frame under max_queued).
 * With both wanted, the lower value wins: an early wake is rechecked. */
enum { WSUV_DRAIN_HIGH = 1, WSUV_DRAIN_EMPTY = 2 };
/* A server's payload of this many bytes or more is written from where it
 * is (a pin) rather than copied into the output queue: below it, copying
 * beats pinning. */
#define WSUV_PIN_MIN 4096

typedef struct wsuv_loop_s wsuv_loop_t;
typedef struct wsuv_tconn_s wsuv_tconn_t;
typedef struct wsuv_tserver_s wsuv_tserver_t;
typedef struct wsuv_tls_s wsuv_tls_t;

typedef enum { WSUV_OBJ_CONN = 1, WSUV_OBJ_SERVER } wsuv_obj_kind_t;

/* Common head of connections and servers, so the ready list can hold both. */
typedef struct {
  uint8_t kind;  /* wsuv_obj_kind_t */
  uint8_t ready; /* already on the loop's ready list */
  void *data;    /* the binding's */
} wsuv_obj_t;

/* A payload the binding lends to the write queue (a pinned Lua string). One
 * pin may back many writes (broadcast); release runs when the last is done. */
typedef struct wsuv_pin_s wsuv_pin_t;
struct wsuv_pin_s {
  unsigned refs;
  void (*release)(wsuv_pin_t *pin);
};

typedef struct {
  /* A data or control event on an open connection: TEXT/BINARY chunks,
   * PING, PONG, CLOSE. The binding queues it for Lua. */
  void (*event)(wsuv_tconn_t *c, const wsuv_event_t *ev);
  /* The object is about to be freed. */
  void (*freed)(wsuv_obj_t *o);
} wsuv_hooks_t;

struct wsuv_loop_s {
  uv_loop_t *uv;
  int own_uv; /* we created uv and close it */
  wsuv_hooks_t hooks;
  void *data;                 /* the binding's */
  uv_timer_t wake;            /* bounds one uv_run(UV_RUN_ONCE) */
  uv_timer_t sweep;           /* protocol deadlines and keepalive, unref'd */
  uint8_t *rbuf;              /* the one read buffer every connection shares */
  wsuv_header_t *hdr_scratch; /* HTTP heads are parsed into this, then the
                                 headers found are copied out exactly */
  int rbuf_busy;              /* handed to a read and not returned yet */
  wsuv_obj_t **ready;         /* objects with news for Lua */
  size_t nready, ready_cap;
  wsuv_tconn_t *conns;     /* every live connection, for the sweep */
  wsuv_tconn_t *dirty;     /* connections with output to flush */
  wsuv_tserver_t *servers; /* open listeners */
  size_t nconns;
  int closing;     /* wsuv_loop_close called */
  void *tls_cache; /* client SSL_CTXs by options (uv_tls.c) */
  /* Output buffers for reuse (uv_conn.c): spare[0] of OUT_SMALL bytes,
   * spare[1] of OUT_POOLED. */
  struct {
    uint8_t **bufs;
    size_t n;
  } spare[2];
  size_t out_bytes;      /* in output buffers of pooled sizes, taken */
  struct arena_s *arena; /* broadcast frames (uv_conn.c), or NULL */
};

typedef enum {
  WSUV_PHASE_RESOLVING = 0, /* client: DNS */
  WSUV_PHASE_CONNECTING,    /* client: TCP connect */
  WSUV_PHASE_PROXY,         /* client: waiting for the proxy's tunnel */
  WSUV_PHASE_HANDSHAKE,     /* reading the peer's HTTP head */
  WSUV_PHASE_REQUEST,       /* server: head parsed, waiting for Lua */
  WSUV_PHASE_OPEN,
  WSUV_PHASE_CLOSING, /* close frames exchanged or sent, draining */
  WSUV_PHASE_CLOSED   /* handle closing or closed */
} wsuv_phase_t;

/* Limits and timeouts of a connection; 0 picks the default. */
typedef struct {
  uint64_t max_message;       /* 16 MiB */
  uint64_t max_frame;         /* 0: the parser's wire limit of a message */
  size_t max_head;            /* 8 KiB */
  size_t max_queued;          /* send buffer limit: 16 MiB */
  size_t high_water;          /* senders wait above this: 1 MiB */
  size_t recv_high;           /* stop reading above this many queued: 1 MiB */
  uint64_t connect_timeout;   /* ms: 10 s */
  uint64_t handshake_timeout; /* ms: 10 s */
  uint64_t close_timeout;     /* ms: 5 s */
  uint64_t ping_interval;     /* ms: 0 = no keepalive */
  uint64_t ping_timeout;      /* ms: dead peer after this without a pong */
  uint64_t idle_timeout;      /* ms: 0 = none */
  int stream;                 /* deliver messages in chunks */
  unsigned refs; /* a listener's limits are shared by its connections */
} wsuv_limits_t;

/* What only the opening handshake needs, apart from the connection so that
 * an open server connection does not carry it. */
typedef struct {
  char *head;
  size_t head_len, head_cap, head_parsed; /* parsed: head length once known */
  wsuv_header_t *hdrs;
  wsuv_http_head_t http;
  char *offer_protocols, *offer_extensions; /* client offer */
  char *request; /* client request bytes until connected */
  size_t request_len;
  char key[25];
  uv_getaddrinfo_t *gai;
  struct addrinfo *addrs, *addr_next;
  uv_connect_t creq;
  wsuv_pmd_options_t *pmd_offer; /* client: what we offered, until open */
  char *proxy_request;           /* client: CONNECT to send to the proxy */
  size_t proxy_request_len;
  wsuv_tls_t *tls_later; /* wss:// through a proxy: TLS once tunnelled */
} wsuv_handshake_t;

typedef struct wsuv_seg_s {
  const uint8_t *ptr; /* payload outside out[], or NULL */
  size_t off;         /* offset into out[] when ptr is NULL */
  size_t len;
  wsuv_pin_t *pin; /* keeps ptr alive */
} wsuv_seg_t;

struct wsuv_tconn_s {
  wsuv_obj_t obj;
  wsuv_loop_t *loop;
  wsuv_tserver_t *server;    /* listener that accepted us, or NULL */
  wsuv_tconn_t *next, *prev; /* loop->conns */
  wsuv_tconn_t *next_dirty;
  wsuv_tconn_t *next_pending; /* server's queue of parsed requests */
  uv_tcp_t tcp;
  uint8_t phase; /* wsuv_phase_t; one byte: see tls_bye */
  uint8_t role;  /* wsuv_role_t */
  uint8_t reading, dirty, tcp_open, eof;
  uint8_t shutting;     /* SHUT_* (uv_conn.c): FIN wanted, sent; or output
                           dead after a failed write */
  uint8_t retry;        /* handle closing to try the next address */
  uint8_t ws_inited;    /* ws holds protocol state (upgrade done) */
  uint8_t drain_wanted; /* 0 or WSUV_DRAIN_*: a sender waits */
  uint8_t defer_close;  /* peer closed or failed; reply once Lua has read
                           the messages that came before */
  uint8_t tls_bye;      /* close_notify queued */
  /* (Byte fields together: the struct is 712 bytes, a 720-byte malloc
   * chunk; 10,000 idle connections hold one each.) */
  int error;                /* uv or WSUV code of a failure, or 0 */
  char *why;                /* malloc'd explanation of error */
  wsuv_limits_t *lim;       /* shared, counted by refs */
  wsuv_conn_t ws;           /* protocol state once open */
  wsuv_tls_t *tls;          /* wss://, or NULL */
  char *extensions;         /* negotiated Sec-WebSocket-Extensions, or NULL */
  uint32_t pmd_in, pmd_out; /* compressed messages received, sent */
  wsuv_handshake_t *hs;     /* server: freed once open; client: kept for
                               conn:response() */
  char *protocol;           /* negotiated subprotocol, or NULL */
  /* Output. */
  uint8_t *out;
  size_t out_len, out_cap;
  wsuv_seg_t *segs;
  size_t nsegs, segs_cap;
  size_t queued;      /* bytes not yet written to the socket */
  size_t recv_queued; /* bytes delivered to the binding, unread */
  size_t recv_msgs;   /* messages delivered, unread */
  /* Clock, in uv_now milliseconds. */
  uint64_t deadline; /* of the current phase, or 0 */
  uint64_t last_recv, last_activity, ping_sent;
};

/* Whether wsuv__send writes a payload of len bytes on c from where it is
 * (given a pin) rather than copying it: callers make a pin only then. */
static inline int wsuv__pins(const wsuv_tconn_t *c, size_t len) {
  return c->role == WSUV_ROLE_SERVER && len >= WSUV_PIN_MIN;
}

/* TLS options. Files are PEM; ca is a file or an OpenSSL hashed directory. */
typedef struct {
  const char *cert, *key; /* our certificate chain and key (key: or cert) */
  const char *ca;         /* trust anchors; client default: system store */
  const char *servername; /* client: SNI and name to verify (default host) */
  int verify;             /* client: check the server (default on); server:
                             require a client certificate signed by ca */
} wsuv_tls_opts_t;

typedef struct {
  const char *version, *cipher; /* static strings */
  const char *alpn;             /* not NUL-terminated */
  size_t alpn_len;
  char peer_subject[256]; /* empty without a peer certificate */
  int verified;           /* the peer certificate passed verification */
  size_t buffered;        /* bytes the memory BIOs hold allocated */
} wsuv_tls_info_t;

#define WSUV_MAX_CONNECTIONS 65536

typedef struct {
  wsuv_limits_t lim;
  size_t max_pending;     /* parsed requests waiting for Lua */
  size_t max_connections; /* open at once; 0: the descriptor limit less 64,
                             at most WSUV_MAX_CONNECTIONS */
  SSL_CTX *tls_ctx;       /* taken over by the server when listen succeeds */
  wsuv_pmd_options_t pmd; /* permessage-deflate we accept (enabled = 0: no) */
} wsuv_server_opts_t;

struct wsuv_tserver_s {
  wsuv_obj_t obj;
  wsuv_loop_t *loop;
  uv_tcp_t tcp;
  wsuv_server_opts_t opts;
  wsuv_limits_t *lim;          /* opts.lim, shared with the connections */
  wsuv_tserver_t *next, *prev; /* loop->servers */
  wsuv_tconn_t *pending_head, *pending_tail; /* parsed requests */
  size_t npending;
  size_t nconns; /* accepted and not yet closed */
  int closed;
  SSL_CTX *tls_ctx; /* wss:// listener, or NULL */
};

/* Loop (uv_loop.c). */
int wsuv__loop_init(wsuv_loop_t *l, uv_loop_t *uv, const wsuv_hooks_t *h);
/* Closes every connection and server, runs the loop until handles are gone
 * and frees what the loop holds. */
void wsuv__loop_close(wsuv_loop_t *l);
/* Runs libuv once: timeout_ms < 0 blocks until an event, 0 only polls.
 * Flushes pending output first. Returns nonzero while handles are alive. */
int wsuv__loop_run(wsuv_loop_t *l, int64_t timeout_ms);
/* Frees half of each pool's spare output buffers, or all of them. */
void wsuv__spare_trim(wsuv_loop_t *l, int all);
void wsuv__loop_flush(wsuv_loop_t *l);
/* Writes what c has queued now instead of at the end of the pass (c stays
 * on the dirty list; its turn there finds nothing). */
void wsuv__conn_flush(wsuv_tconn_t *c);
void wsuv__ready(wsuv_loop_t *l, wsuv_obj_t *o);
void wsuv__unready(wsuv_loop_t *l, wsuv_obj_t *o);
uint64_t wsuv__now(wsuv_loop_t *l);
void wsuv__limits_default(wsuv_limits_t *lim);

/* Connections (uv_conn.c). Functions returning int give 0 or a negative
 * uv/WSUV code; on failure nothing was started. */
/* tls_ctx, when not NULL, makes it wss:// (the connection takes a
 * reference); servername is the name to send and verify. */
/* pmd, when enabled, offers permessage-deflate (req->extensions is then
 * replaced by the offer). */
/* An HTTP proxy to tunnel through (CONNECT, RFC 9110 9.3.6): its address,
 * the authority to ask for ("host:port") and Basic credentials
 * ("user:password") or NULL. */
typedef struct {
  const char *host;
  int port;
  const char *authority;
  const char *credentials;
} wsuv_proxy_t;

/* How many connections the descriptor limit leaves room for, 64 kept for
 * the rest of the process (at least 64; SIZE_MAX when unlimited); *limit
 * is the limit itself, 0 when unlimited. */
size_t wsuv__descriptor_room(size_t *limit);

int wsuv__connect(wsuv_loop_t *l, const char *host, int port,
                  const wsuv_client_request_t *req, const wsuv_limits_t *lim,
                  SSL_CTX *tls_ctx, const char *servername,
                  const wsuv_pmd_options_t *pmd, const wsuv_proxy_t *proxy,
                  wsuv_tconn_t **out);
/* Sends one frame. pin, when not NULL, lends data for a zero-copy write
 * (server role); otherwise data is copied. With permessage-deflate, data
 * frames are compressed unless plain is set (on a message's first frame). */
int wsuv__send(wsuv_tconn_t *c, unsigned opcode, unsigned flags,
               const uint8_t *data, size_t len, wsuv_pin_t *pin, int plain);
/* A frame encoded once for many connections (broadcast): unfragmented,
 * uncompressed, server role. Its bytes (the payload too, unless it is big and
 * pinned) live in the loop's arena. */
typedef struct {
  const uint8_t *head, *body; /* body: the pinned payload, or NULL */
  size_t head_len, body_len;
  wsuv_pin_t *head_pin, *body_pin;
} wsuv_shared_frame_t;
/* Encodes f; valid until control returns to the loop. pin, when not NULL,
 * lends a big payload as wsuv__send does. */
int wsuv__share_frame(wsuv_loop_t *l, unsigned opcode, const uint8_t *data,
                      size_t len, wsuv_pin_t *pin, wsuv_shared_frame_t *f);
/* Queues f on c. WSUV_ESTATE: c is in the middle of a fragmented message. */
int wsuv__send_shared(wsuv_tconn_t *c, const wsuv_shared_frame_t *f);
/* Lets go of the loop's broadcast arena (writes may still hold it). */
void wsuv__arena_trim(wsuv_loop_t *l);
/* Starts the closing handshake (code 0: no code). */
int wsuv__close(wsuv_tconn_t *c, int code, const char *reason, size_t len);
/* Closes the socket now, without a closing handshake. */
void wsuv__abort(wsuv_tconn_t *c, int err, const char *why);
/* Server side: upgrade the pending request (101) or answer it over HTTP.
 * extensions NULL: negotiate permessage-deflate per the server's options. */
int wsuv__accept(wsuv_tconn_t *c, const char *protocol, const char *extensions,
                 const wsuv_header_t *extra, size_t nextra);
int wsuv__respond(wsuv_tconn_t *c, int status, const wsuv_header_t *extra,
                  size_t nextra, const char *body, size_t body_len);
/* The binding consumed one delivered message of len bytes. */
void wsuv__consumed(wsuv_tconn_t *c, size_t len);
/* The binding has read every message that came before the peer's close or
 * failure: send the close frame now. */
void wsuv__release_close(wsuv_tconn_t *c);
/* Peer address as text; returns port or -1. */
int wsuv__peer(wsuv_tconn_t *c, char *ip, size_t ipcap);
void wsuv__set_error(wsuv_tconn_t *c, int err, const char *why);
void wsuv__sweep(wsuv_loop_t *l);

/* Servers (uv_conn.c). */
int wsuv__listen(wsuv_loop_t *l, const char *host, int port,
                 const wsuv_server_opts_t *opts, wsuv_tserver_t **out);
wsuv_tconn_t *wsuv__server_pop(wsuv_tserver_t *s);
int wsuv__server_port(wsuv_tserver_t *s);
void wsuv__server_close(wsuv_tserver_t *s);
/* Swaps the listener's certificates; connections that are up keep theirs. */
void wsuv__server_set_tls(wsuv_tserver_t *s, SSL_CTX *ctx);

/* TLS (uv_tls.c). Functions give 0 or a negative WSUV_E* code, and on
 * failure write an explanation into why. */
int wsuv__tls_ctx_new(const wsuv_tls_opts_t *o, int server, SSL_CTX **out,
                      char *why, size_t cap);
/* A client context for o, shared by every connection of the loop with the
 * same options (the loop owns it). NULL on failure. */
SSL_CTX *wsuv__tls_client_ctx(wsuv_loop_t *l, const wsuv_tls_opts_t *o,
                              char *why, size_t cap);
void wsuv__tls_cache_free(wsuv_loop_t *l);
/* name: the client's SNI and the host name or IP address to verify. */
wsuv_tls_t *wsuv__tls_new(SSL_CTX *ctx, int server, const char *name);
void wsuv__tls_free(wsuv_tls_t *t);
int wsuv__tls_done(const wsuv_tls_t *t);
/* Advances the handshake: 1 when complete, 0 when it needs input. */
int wsuv__tls_handshake(wsuv_tls_t *t);
/* Hands received ciphertext to OpenSSL (copied). */
int wsuv__tls_feed(wsuv_tls_t *t, const uint8_t *p, size_t n);
/* Decrypts into out: bytes (> 0), 0 when it needs input, UV_EOF after the
 * peer's close_notify, or WSUV_ETLS. */
ssize_t wsuv__tls_read(wsuv_tls_t *t, uint8_t *out, size_t cap);
/* Whether fed ciphertext or decrypted bytes wait that wsuv__tls_read could
 * return: when not, it would only report that it needs input. */
int wsuv__tls_input_left(const wsuv_tls_t *t);
/* Encrypts all of p (handshake done). */
int wsuv__tls_write(wsuv_tls_t *t, const uint8_t *p, size_t n);
/* Ciphertext waiting to be sent, and taking it. */
size_t wsuv__tls_pending(const wsuv_tls_t *t);
size_t wsuv__tls_take(wsuv_tls_t *t, uint8_t *out, size_t cap);
void wsuv__tls_shutdown(wsuv_tls_t *t); /* queues close_notify */
/* Gives back the BIOs' buffers when empty and over keep bytes. */
void wsuv__tls_trim(wsuv_tls_t *t, size_t keep);
/* Why the last call failed, drained from OpenSSL's error queue. */
void wsuv__tls_explain(wsuv_tls_t *t, char *why, size_t cap);
int wsuv__tls_info(wsuv_tls_t *t, wsuv_tls_info_t *info);

#endif
