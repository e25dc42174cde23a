/* loadgen.c: the WebSocket load generator of the peer benchmarks (bench/run).
 *
 * One thread, one libuv loop, many client connections. It speaks WebSocket
 * with wsuv's own sans-IO core (the handshake builder and checker, frame
 * headers, masking, the message parser), so it dogfoods the codec while it
 * loads a server. Every client frame is masked with a fresh random key, and
 * every echoed payload is compared byte for byte with what was sent: a server
 * that drops, reorders or corrupts a message cannot look fast, because the
 * run fails with a count of mismatches.
 *
 * Scenarios (issue 6):
 *   echo        N connections, K messages in flight each: messages/s and the
 *               round-trip time (p50/p99), e.g. 100 x 1 or 100 x 16, 32 bytes
 *   throughput  the same machinery with one connection and big messages
 *               (1 MiB, 16 MiB): MB/s of echoed payload
 *   idle        N idle connections: handshakes/s and the server's memory per
 *               connection (VmRSS of --server-pid before and after, / N)
 *   broadcast   N receivers; connection 0 sends messages that start with "B",
 *               which the server sends to every connection: deliveries/s and
 *               the delivery latency (send to arrival at each receiver)
 * With --raw it speaks plain TCP (no handshake, no framing) to the raw echo
 * server, the ceiling for echo and throughput: echoes are counted by length.
 *
 * Measurement: after --warmup seconds, the window opens at the next
 * completion (an echo or a delivery) and closes at the first completion
 * after --duration more seconds; rates are completions in between divided by
 * the time between, so a few slow big messages are counted exactly. The
 * generator's own CPU time (getrusage) and the server's (/proc/PID/stat) over
 * the window are reported, to show which side was the bottleneck.
 *
 * Output: "key value" lines on stdout (bench/run parses them); errors on
 * stderr. Exit status 0, 1 when the run failed (mismatch, error, timeout),
 * 2 for bad usage.
 *
 * With --deflate each connection offers permessage-deflate, fails unless the
 * server accepts, and then sends and reads through a wsuv_conn_t, which
 * compresses every message and inflates the server's.
 *
 * With --tls it speaks wss://: plaintext gathers in c->plain, conn_flush()
 * encrypts it through OpenSSL memory BIOs, and conn_on_bytes() decrypts
 * before the usual handling. */
#define _GNU_SOURCE
#include "wsuv.h"
#include "wsuv_conn.h"

#include <openssl/ssl.h>
#include <uv.h>

#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define SRC_WINDOW  65536u /* random offsets into the source buffer */
#define READ_BUF    (256u << 10)
#define MAX_HEAD    4096u /* handshake response */
#define BCAST_RING  1024u /* broadcasts in flight, at most */
#define BCAST_LEN   32u   /* bytes per broadcast message */
#define MAX_MESSAGE (64u << 20)
#define DRAIN_MS    250u /* after the window */
#define HIST_SUB    64u  /* sub-buckets per power of two (1.6% precision) */
#define HIST_SIZE   (HIST_SUB * 48u)

typedef enum { SC_ECHO, SC_THROUGHPUT, SC_IDLE, SC_BROADCAST } scenario_t;

typedef struct {
  scenario_t sc;
  const char *host;
  int port;
  int conns;       /* connections (receivers for broadcast) */
  int inflight;    /* messages in flight per connection (broadcasts) */
  size_t size;     /* payload bytes per message */
  double warmup;   /* seconds before the window opens */
  double duration; /* seconds of the window */
  double timeout;  /* the whole run fails after this many seconds */
  int raw;         /* plain TCP, no WebSocket */
  int deflate;     /* offer permessage-deflate and require it */
  int tls;         /* wss://: TLS through OpenSSL memory BIOs */
  int sources;     /* 127.0.0.1 .. 127.0.0.<sources> as source addresses */
  int concurrency; /* handshakes in progress at once */
  int warm_conns;  /* idle: connections opened before the RSS baseline */
  double settle;   /* idle: seconds to wait before reading RSS after */
  int server_pid;  /* for RSS and CPU; 0: not measured */
} opts_t;

typedef struct {
  char *data;
  size_t len, cap;
} buf_t;

typedef struct {
  uint32_t off;    /* offset into the source buffer */
  uint32_t len;    /* payload bytes */
  uint64_t t_sent; /* uv_hrtime() */
} msg_t;

enum { C_CONNECTING, C_HANDSHAKE, C_OPEN, C_CLOSED };

typedef struct gen_s gen_t;

typedef struct {
  uv_tcp_t tcp;
  uv_connect_t creq;
  uv_write_t wreq;
  gen_t *g;
  int id;
  int state;
  int writing; /* wbuf is being written by uv_write */
  buf_t out;   /* bytes queued while wbuf is in flight */
  buf_t wbuf;  /* bytes handed to uv_write */
  buf_t head;  /* the handshake response so far */
  char key[25];
  wsuv_conn_t ws; /* the protocol state once open (compresses with --deflate) */
  SSL *ssl;       /* --tls */
  BIO *rbio, *wbio;
  buf_t plain; /* --tls: plaintext waiting for SSL_write */
  msg_t *ring; /* messages in flight, oldest first */
  unsigned ring_head, ring_count;
  size_t raw_got;    /* raw: bytes of the oldest message received */
  uint64_t next_seq; /* broadcast: next sequence number expected */
  int oneshot_done;  /* idle: its one echo came back */
} conn_t;

typedef enum {
  PH_CONNECT,
  PH_WARMUP,
  PH_MEASURE,
  PH_SETTLE,
  PH_DRAIN,
  PH_DONE
} phase_t;

typedef struct {
  uint64_t count[HIST_SIZE];
  uint64_t n;
} hist_t;

struct gen_s {
  opts_t o;
  uv_loop_t *loop;
  uv_timer_t timer;    /* phase timer */
  uv_timer_t deadline; /* --timeout */
  conn_t *conns;
  int nconns; /* allocated */
  int started, opened, failed_open, closed;
  int open_target; /* connections to open in this batch */
  void (*on_opened)(gen_t *g);
  phase_t phase;
  uint64_t t_phase; /* start of the current phase */
  uint64_t t_first, t_last, count, bytes;
  uint64_t t_read; /* while handling a read: when it arrived, else 0 */
  uint64_t mismatches, errors, closed_early;
  uint64_t inflight_total;
  int oneshot_pending;
  hist_t hist;
  /* CPU at the window's edges */
  double gen_cpu[2], srv_cpu[2], sys_cpu[2]; /* at the window's start, end */
  /* idle */
  uint64_t t_hs0, t_hs1;
  long rss_before, rss_after;
  /* broadcast */
  uint64_t bc_next;               /* next sequence number to send */
  uint64_t bc_t_sent[BCAST_RING]; /* by seq % BCAST_RING */
  uint32_t bc_left[BCAST_RING];   /* receivers still to get it */
  uint64_t bc_outstanding;
  SSL_CTX *tls_ctx;    /* --tls */
  char tls_cipher[64]; /* what the first connection negotiated */
  uint8_t *src;        /* random bytes, no 'B' (the broadcast marker) */
  size_t src_len;
  uint64_t rng[4];
  int failed;
};

static uint8_t read_buf[READ_BUF];

/* ---- small helpers ------------------------------------------------------ */

static void fail(gen_t *g, const char *fmt, ...) {
  va_list ap;
  if (g->errors++ < 10) {
    fputs("loadgen: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
  }
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) {
    fprintf(stderr, "loadgen: out of memory (%zu bytes)\n", n);
    exit(1);
  }
  return p;
}

static void buf_reserve(buf_t *b, size_t extra) {
  if (b->len + extra <= b->cap) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra)
    cap *= 2;
  char *p = realloc(b->data, cap);
  if (!p) {
    fprintf(stderr, "loadgen: out of memory (%zu bytes)\n", cap);
    exit(1);
  }
  b->data = p;
  b->cap = cap;
}

static void buf_free(buf_t *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

/* xoshiro256**: mask keys, handshake nonces, message offsets. Seeded from
 * getrandom; RFC 6455's "strong source of entropy" matters for browsers
 * talking to proxies, not for a load generator on loopback. */
static uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(gen_t *g) {
  uint64_t *s = g->rng;
  uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return r;
}

static void rng_seed(gen_t *g) {
  if (getrandom(g->rng, sizeof g->rng, 0) != (ssize_t)sizeof g->rng) {
    fprintf(stderr, "loadgen: getrandom: %s\n", strerror(errno));
    exit(1);
  }
  g->rng[0] |= 1;
}

static double cpu_self(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

/* utime + stime of pid in seconds, or -1. */
static double cpu_of(int pid) {
  if (pid <= 0) return -1;
  char path[64], line[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(line, 1, sizeof line - 1, f);
  fclose(f);
  line[n] = 0;
  char *p = strrchr(line, ')'); /* the command name may hold spaces */
  if (!p) return -1;
  unsigned long ut = 0, st = 0;
  /* After ")": state is field 3; utime and stime are fields 14 and 15. */
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
             &st) != 2)
    return -1;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* Busy CPU seconds of the whole machine (all CPUs), from /proc/stat, or
 * -1: user + nice + system + irq + softirq + steal. */
static double cpu_all(void) {
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return -1;
  unsigned long long v[8] = {0};
  int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
                 &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
  fclose(f);
  if (n < 7) return -1;
  return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) /
         (double)sysconf(_SC_CLK_TCK);
}

/* VmRSS of pid in KiB, or -1. */
static long rss_of(int pid) {
  if (pid <= 0) return -1;
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  long kb = -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
  fclose(f);
  return kb;
}

static void raise_nofile(int want) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  rlim_t need = (rlim_t)want + 64;
  if (rl.rlim_cur >= need) return;
  if (rl.rlim_max < need) rl.rlim_max = need; /* works as root */
  rl.rlim_cur = need;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    fprintf(stderr, "loadgen: RLIMIT_NOFILE is %lu, %d connections need more\n",
            (unsigned long)rl.rlim_cur, want);
  }
}

static void snapshot(gen_t *g, int end) {
  g->gen_cpu[end] = cpu_self();
  g->srv_cpu[end] = cpu_of(g->o.server_pid);
  g->sys_cpu[end] = cpu_all();
}

/* ---- latency histogram (log-linear, HDR-style) -------------------------- */

static unsigned hist_index(uint64_t v) {
  if (v < 2 * HIST_SUB) return (unsigned)v;
  unsigned msb = 63u - (unsigned)__builtin_clzll(v);
  unsigned shift = msb - 6u; /* keep the top 7 bits: mantissa in [64, 128) */
  unsigned idx = shift * HIST_SUB + (unsigned)(v >> shift);
  return idx < HIST_SIZE ? idx : HIST_SIZE - 1;
}

static uint64_t hist_value(unsigned idx) { /* middle of the bucket */
  if (idx < 2 * HIST_SUB) return idx;
  unsigned shift = idx / HIST_SUB - 1u;
  uint64_t mant = idx - shift * HIST_SUB;
  return (mant << shift) + ((1ull << shift) >> 1);
}

static void hist_add(hist_t *h, uint64_t ns) {
  h->count[hist_index(ns)]++;
  h->n++;
}

static double hist_pct(const hist_t *h, double pct) {
  if (!h->n) return 0;
  uint64_t rank = (uint64_t)ceil(pct / 100.0 * (double)h->n), seen = 0;
  if (rank < 1) rank = 1;
  for (unsigned i = 0; i < HIST_SIZE; i++) {
    seen += h->count[i];
    if (seen >= rank) return (double)hist_value(i);
  }
  return (double)hist_value(HIST_SIZE - 1);
}

/* ---- writing ------------------------------------------------------------ */

static void conn_flush(conn_t *c);
static void tls_encrypt(conn_t *c);

static void on_write(uv_write_t *req, int status) {
  conn_t *c = req->data;
  c->writing = 0;
  c->wbuf.len = 0;
  if (status < 0) {
    if (c->state != C_CLOSED && c->g->phase < PH_DRAIN)
      fail(c->g, "conn %d: write: %s", c->id, uv_strerror(status));
    return;
  }
  conn_flush(c);
}

/* Sends what is queued: uv_try_write first, then the rest with uv_write;
 * while that write is in flight, new bytes gather in c->out. */
static void conn_flush(conn_t *c) {
  if (c->ssl && c->state != C_CLOSED) tls_encrypt(c);
  if (c->writing || c->out.len == 0 || c->state == C_CLOSED) return;
  uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
  int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
  if (n == (int)c->out.len) {
    c->out.len = 0;
    return;
  }
  if (n < 0 && n != UV_EAGAIN) {
    if (c->g->phase < PH_DRAIN)
      fail(c->g, "conn %d: write: %s", c->id, uv_strerror(n));
    c->out.len = 0;
    return;
  }
  size_t done = n > 0 ? (size_t)n : 0;
  buf_t t = c->wbuf;
  c->wbuf = c->out;
  c->out = t;
  c->out.len = 0;
  c->writing = 1;
  c->wreq.data = c;
  b = uv_buf_init(c->wbuf.data + done, (unsigned)(c->wbuf.len - done));
  int err = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
  if (err) {
    c->writing = 0;
    fail(c->g, "conn %d: write: %s", c->id, uv_strerror(err));
  }
}

/* Where bytes leave (with --tls, as plaintext that conn_flush encrypts). */
static char *conn_write_bytes(conn_t *c, size_t n) {
  buf_t *b = c->ssl ? &c->plain : &c->out;
  buf_reserve(b, n);
  char *p = b->data + b->len;
  b->len += n;
  return p;
}

/* --tls: moves the ciphertext OpenSSL has made into c->out. */
static void tls_drain(conn_t *c) {
  size_t n;
  while ((n = BIO_ctrl_pending(c->wbio)) > 0) {
    buf_reserve(&c->out, n);
    int r = BIO_read(c->wbio, c->out.data + c->out.len, (int)n);
    if (r <= 0) break;
    c->out.len += (size_t)r;
  }
}

/* --tls: encrypts the queued plaintext once the TLS handshake is done. */
static void tls_encrypt(conn_t *c) {
  if (SSL_is_init_finished(c->ssl) && c->plain.len) {
    int r = SSL_write(c->ssl, c->plain.data, (int)c->plain.len);
    if (r != (int)c->plain.len) fail(c->g, "conn %d: SSL_write failed", c->id);
    c->plain.len = 0;
  }
  tls_drain(c);
}

/* Queues one message of len bytes: a masked binary frame (compressed with
 * --deflate), or the bare bytes with --raw. */
static void send_payload(conn_t *c, const uint8_t *payload, size_t len) {
  gen_t *g = c->g;
  if (g->o.raw) {
    memcpy(conn_write_bytes(c, len), payload, len);
    return;
  }
  uint8_t hdr[WSUV_MAX_FRAME_HEADER], key[4];
  const uint8_t *z; /* the payload, or its compressed form */
  unsigned rsv;
  ssize_t k = wsuv_conn_compress(&c->ws, payload, len,
                                 WSUV_SEND_FIRST | WSUV_SEND_FIN, &z, &rsv);
  ssize_t h = k < 0 ? k
                    : wsuv_conn_build_header(&c->ws, hdr, WSUV_OP_BINARY,
                                             WSUV_FIN | rsv, (uint64_t)k, key);
  if (h < 0) {
    fail(g, "conn %d: send: %s", c->id, wsuv_strerror((int)h));
    exit(1);
  }
  uint8_t *p = (uint8_t *)conn_write_bytes(c, (size_t)(h + k));
  memcpy(p, hdr, (size_t)h);
  wsuv_mask_copy(p + h, z, (size_t)k, key, 0);
}

/* The clock, read once per read: every message of one read arrived at the
 * same time, and a clock read per message was a quarter of the generator's
 * time in the broadcast scenario (clock_gettime is slow on some VMs). */
static uint64_t now_ns(gen_t *g) {
  return g->t_read ? g->t_read : uv_hrtime();
}

/* Echo scenarios: sends the next message and remembers it. */
static void send_message(conn_t *c) {
  gen_t *g = c->g;
  unsigned cap = (unsigned)g->o.inflight;
  msg_t *m = &c->ring[(c->ring_head + c->ring_count) % cap];
  m->off = (uint32_t)(rng_next(g) % SRC_WINDOW);
  m->len = (uint32_t)g->o.size;
  m->t_sent = now_ns(c->g);
  c->ring_count++;
  g->inflight_total++;
  send_payload(c, g->src + m->off, m->len);
}

static void send_close(conn_t *c) {
  if (c->g->o.raw || c->state != C_OPEN) return;
  if (wsuv_conn_close(&c->ws, 1000, NULL, 0) != 0) return;
  uint8_t out[WSUV_CONN_OUTPUT_MAX];
  size_t n = wsuv_conn_take_output(&c->ws, out, sizeof out);
  memcpy(conn_write_bytes(c, n), out, n);
}

/* ---- the measurement window --------------------------------------------- */

static void finish(gen_t *g);
static void start_drain(gen_t *g);

/* Called at every completion (an echo or a delivery) of len bytes sent at
 * t_sent; returns whether to send another message. */
static int completed(gen_t *g, uint64_t t_sent, size_t len) {
  uint64_t now = now_ns(g);
  switch (g->phase) {
  case PH_WARMUP:
    if (now - g->t_phase >= (uint64_t)(g->o.warmup * 1e9)) {
      g->phase = PH_MEASURE;
      g->t_first = g->t_last = now;
      g->count = g->bytes = 0;
      snapshot(g, 0);
    }
    return 1;
  case PH_MEASURE:
    g->count++;
    g->bytes += len;
    g->t_last = now;
    hist_add(&g->hist, now - t_sent);
    if (now - g->t_first >= (uint64_t)(g->o.duration * 1e9) && g->count >= 2) {
      start_drain(g);
      return 0;
    }
    return 1;
  default:
    return 0;
  }
}

static void maybe_done_draining(gen_t *g) {
  if (g->phase == PH_DRAIN && g->inflight_total == 0 && g->bc_outstanding == 0)
    finish(g);
}

/* After the window, echoes still in flight get 250 ms to come back (and be
 * verified); a slow server's last big messages are not waited for. */
static void on_drain_timeout(uv_timer_t *t) {
  finish(t->data); /* not an error */
}

static void start_drain(gen_t *g) {
  g->phase = PH_DRAIN;
  snapshot(g, 1);
  uv_timer_start(&g->timer, on_drain_timeout, DRAIN_MS, 0);
  maybe_done_draining(g);
}

/* ---- receiving ---------------------------------------------------------- */

static void conn_close(conn_t *c);
static void idle_echoed(gen_t *g);
static void bc_delivered(conn_t *c, const uint8_t *p, size_t n);

/* An echo of the oldest message in flight arrived (its bytes already
 * checked). */
static void echoed(conn_t *c) {
  gen_t *g = c->g;
  msg_t *m = &c->ring[c->ring_head];
  c->ring_head = (c->ring_head + 1) % (unsigned)g->o.inflight;
  c->ring_count--;
  g->inflight_total--;
  if (g->o.sc == SC_IDLE) {
    c->oneshot_done = 1;
    idle_echoed(g);
    return;
  }
  if (completed(g, m->t_sent, m->len)) send_message(c);
  maybe_done_draining(g);
}

static void on_message(conn_t *c, const uint8_t *p, size_t n) {
  gen_t *g = c->g;
  if (g->o.sc == SC_BROADCAST) {
    bc_delivered(c, p, n);
    return;
  }
  if (c->ring_count == 0) {
    g->mismatches++;
    fail(g, "conn %d: unexpected message of %zu bytes", c->id, n);
    return;
  }
  msg_t *m = &c->ring[c->ring_head];
  if (n != m->len || memcmp(p, g->src + m->off, n) != 0) {
    g->mismatches++;
    fail(g, "conn %d: echo differs (%zu bytes, sent %u)", c->id, n, m->len);
  }
  echoed(c);
}

/* --raw: the echo is a byte stream; match it against the messages in flight
 * in order, however the kernel splits it. */
static void on_raw_bytes(conn_t *c, const uint8_t *p, size_t n) {
  gen_t *g = c->g;
  while (n > 0) {
    if (c->ring_count == 0) {
      g->mismatches++;
      fail(g, "conn %d: %zu unexpected bytes", c->id, n);
      return;
    }
    msg_t *m = &c->ring[c->ring_head];
    size_t want = m->len - c->raw_got, k = n < want ? n : want;
    if (memcmp(p, g->src + m->off + c->raw_got, k) != 0) {
      g->mismatches++;
      fail(g, "conn %d: echoed bytes differ", c->id);
    }
    p += k;
    n -= k;
    c->raw_got += k;
    if (c->raw_got == m->len) {
      c->raw_got = 0;
      echoed(c);
    }
  }
}

static void on_frames(conn_t *c, uint8_t *p, size_t n) {
  gen_t *g = c->g;
  while (n > 0 || c->state == C_OPEN) {
    wsuv_event_t ev;
    /* Without compression the parser alone will do (the generator answers
     * no pings): wsuv_conn_feed's bookkeeping cost 4% of (5)'s rate. */
    ssize_t r = g->o.deflate ? wsuv_conn_feed(&c->ws, p, n, &ev)
                             : wsuv_parser_feed(&c->ws.parser, p, n, &ev);
    if (r < 0) {
      fail(g, "conn %d: bad frames from the server: %s", c->id,
           wsuv_strerror((int)r));
      conn_close(c);
      return;
    }
    p += r;
    n -= (size_t)r;
    switch (ev.type) {
    case WSUV_EV_NONE:
      return;
    case WSUV_EV_TEXT:
    case WSUV_EV_BINARY:
      on_message(c, ev.data, ev.len);
      break;
    case WSUV_EV_CLOSE:
      if (g->phase < PH_DRAIN) {
        g->closed_early++;
        fail(g, "conn %d: server closed with %d", c->id, ev.close_code);
      }
      conn_close(c);
      return;
    default: /* pings and pongs: none expected, none answered */
      break;
    }
  }
}

static void opened(conn_t *c);
static void batch_progress(gen_t *g);

static void genmask(void *ud, uint8_t key[4]) {
  uint64_t r = rng_next(ud);
  memcpy(key, &r, 4);
}

/* What --deflate offers: plain permessage-deflate. */
static const wsuv_pmd_options_t PMD_OFFER = {.enabled = 1};

/* Sets up c->ws once the server's 101 is checked; with --deflate the server
 * must have accepted the offer, and c->ws then compresses and inflates. */
static int ws_open(conn_t *c, const wsuv_http_head_t *h, const char **why) {
  wsuv_pmd_params_t agreed;
  if (c->g->o.deflate) {
    int r = wsuv_pmd_accept_response(h, &PMD_OFFER, &agreed, why);
    if (r == 0) *why = "the server declined permessage-deflate";
    if (r != 1) return 0;
  }
  wsuv_conn_config_t cfg = {
      .parser = {.role = WSUV_ROLE_CLIENT, .max_message = MAX_MESSAGE},
      .genmask = genmask,
      .genmask_ud = c->g,
      .pmd = c->g->o.deflate ? &agreed : NULL};
  if (wsuv_conn_init(&c->ws, &cfg) != 0) {
    *why = "out of memory for the protocol state";
    return 0;
  }
  return 1;
}

static void on_handshake_bytes(conn_t *c, uint8_t *p, size_t n) {
  gen_t *g = c->g;
  buf_reserve(&c->head, n);
  memcpy(c->head.data + c->head.len, p, n);
  c->head.len += n;
  wsuv_header_t hs[32];
  wsuv_http_head_t h = {.headers = hs, .num_headers = 32};
  ssize_t r = wsuv_http_parse_response(c->head.data, c->head.len, MAX_HEAD, &h);
  if (r == 0) return;
  const char *why = "malformed response";
  if (r < 0 ||
      wsuv_handshake_check_response(
          &h, c->key, NULL, g->o.deflate ? "permessage-deflate" : NULL, &why) ||
      !ws_open(c, &h, &why)) {
    fail(g, "conn %d: handshake: %s (status %d)", c->id, why,
         r > 0 ? h.status : 0);
    g->failed_open++;
    conn_close(c);
    batch_progress(g);
    return;
  }
  size_t rest = c->head.len - (size_t)r;
  uint8_t *extra = NULL;
  if (rest) { /* frames right after the 101: none expected, but legal */
    extra = xmalloc(rest);
    memcpy(extra, c->head.data + r, rest);
  }
  buf_free(&c->head);
  opened(c);
  if (rest) on_frames(c, extra, rest);
  free(extra);
}

/* Where bytes arrive (with --tls, decrypted first). */
static void dispatch_bytes(conn_t *c, uint8_t *p, size_t n) {
  if (c->state == C_HANDSHAKE)
    on_handshake_bytes(c, p, n);
  else if (c->g->o.raw)
    on_raw_bytes(c, p, n);
  else
    on_frames(c, p, n);
}

/* --tls: ciphertext in, plaintext out to dispatch_bytes. */
static void tls_on_bytes(conn_t *c, uint8_t *p, size_t n) {
  static uint8_t plain[READ_BUF];
  BIO_write(c->rbio, p, (int)n);
  if (!SSL_is_init_finished(c->ssl)) {
    int r = SSL_do_handshake(c->ssl);
    if (r <= 0 && SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ) {
      fail(c->g, "conn %d: TLS handshake failed", c->id);
      c->g->failed_open++;
      conn_close(c);
      batch_progress(c->g);
      return;
    }
  }
  while (c->state != C_CLOSED && SSL_is_init_finished(c->ssl)) {
    int r = SSL_read(c->ssl, plain, sizeof plain);
    if (r <= 0) break;
    dispatch_bytes(c, plain, (size_t)r);
  }
}

static void conn_on_bytes(conn_t *c, uint8_t *p, size_t n) {
  c->g->t_read = uv_hrtime();
  if (c->ssl)
    tls_on_bytes(c, p, n);
  else
    dispatch_bytes(c, p, n);
  conn_flush(c);
  /* Broadcasts this read let go out in one write, not one each. */
  if (c->g->o.sc == SC_BROADCAST) conn_flush(&c->g->conns[0]);
  c->g->t_read = 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  (void)h;
  (void)suggested;
  *b = uv_buf_init((char *)read_buf, READ_BUF);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  conn_t *c = s->data;
  if (n > 0) {
    conn_on_bytes(c, (uint8_t *)b->base, (size_t)n);
    return;
  }
  if (n == 0) return;
  if (c->g->phase < PH_DRAIN) {
    c->g->closed_early++;
    fail(c->g, "conn %d: read: %s", c->id, uv_strerror((int)n));
  }
  int handshaking = c->state == C_HANDSHAKE;
  conn_close(c);
  if (handshaking) {
    c->g->failed_open++;
    batch_progress(c->g);
  }
}

static void on_closed(uv_handle_t *h) {
  (void)h;
}

static void conn_close(conn_t *c) {
  if (c->state == C_CLOSED) return;
  c->state = C_CLOSED;
  gen_t *g = c->g;
  g->inflight_total -= c->ring_count;
  c->ring_count = 0;
  uv_read_stop((uv_stream_t *)&c->tcp);
  if (!uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, on_closed);
  /* Every connection gone while measuring (the server died): stop now
   * rather than at --timeout. */
  if (++g->closed == g->started && g->phase > PH_CONNECT &&
      g->phase < PH_DRAIN) {
    fail(g, "every connection closed");
    g->failed = 1;
    finish(g);
    return;
  }
  maybe_done_draining(g);
}

/* ---- opening connections ------------------------------------------------ */

static void start_connect(gen_t *g);

static void batch_progress(gen_t *g) {
  if (g->started < g->open_target) start_connect(g);
  if (g->opened + g->failed_open == g->open_target && g->on_opened) {
    void (*cb)(gen_t *) = g->on_opened;
    g->on_opened = NULL;
    cb(g);
  }
}

static void opened(conn_t *c) {
  gen_t *g = c->g;
  if (c->ssl && !g->tls_cipher[0])
    snprintf(g->tls_cipher, sizeof g->tls_cipher, "%s %s",
             SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl));
  c->state = C_OPEN;
  g->opened++;
  batch_progress(g);
}

static void on_connect(uv_connect_t *req, int status) {
  conn_t *c = req->data;
  gen_t *g = c->g;
  if (status < 0) {
    fail(g, "conn %d: connect: %s", c->id, uv_strerror(status));
    g->failed_open++;
    conn_close(c);
    batch_progress(g);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  c->tcp.data = c;
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  if (g->o.tls) {
    c->ssl = SSL_new(g->tls_ctx);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (!c->ssl || !c->rbio || !c->wbio) {
      fail(g, "conn %d: out of memory for TLS", c->id);
      exit(1);
    }
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_connect_state(c->ssl);
    SSL_do_handshake(c->ssl); /* the ClientHello, sent by conn_flush */
  }
  if (g->o.raw) {
    opened(c);
    return;
  }
  uint8_t nonce[16];
  for (int i = 0; i < 16; i += 8) {
    uint64_t r = rng_next(g);
    memcpy(nonce + i, &r, 8);
  }
  wsuv_handshake_key(nonce, c->key);
  char host[64], req_buf[512];
  snprintf(host, sizeof host, "%s:%d", g->o.host, g->o.port);
  char offer[WSUV_PMD_EXT_MAX];
  if (g->o.deflate && wsuv_pmd_offer(&PMD_OFFER, offer, sizeof offer) < 0) {
    fail(g, "permessage-deflate offer");
    exit(1);
  }
  wsuv_client_request_t r = {
      .host = host, .target = "/", .extensions = g->o.deflate ? offer : NULL};
  ssize_t len =
      wsuv_handshake_build_request(req_buf, sizeof req_buf, &r, c->key);
  if (len < 0) {
    fail(g, "handshake request: %s", wsuv_strerror((int)len));
    exit(1);
  }
  c->state = C_HANDSHAKE;
  memcpy(conn_write_bytes(c, (size_t)len), req_buf, (size_t)len);
  conn_flush(c);
}

/* Opens connection number g->started. With --sources > 1 it binds to
 * 127.0.0.<1 + id % sources> first; IP_BIND_ADDRESS_NO_PORT lets the kernel
 * pick the port at connect time, so ports are shared across destinations. */
static void start_connect(gen_t *g) {
  int in_progress = g->started - g->opened - g->failed_open;
  while (g->started < g->open_target && in_progress < g->o.concurrency) {
    conn_t *c = &g->conns[g->started];
    memset(c, 0, sizeof *c);
    c->g = g;
    c->id = g->started++;
    in_progress++;
    c->state = C_CONNECTING;
    c->ring = xmalloc(sizeof(msg_t) * (size_t)g->o.inflight);
    uv_tcp_init(g->loop, &c->tcp);
    c->tcp.data = c;
    if (g->o.sources > 1) {
      int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      int one = 1;
      struct sockaddr_in src = {.sin_family = AF_INET};
      src.sin_addr.s_addr =
          htonl(0x7f000001u + (uint32_t)(c->id % g->o.sources));
      if (fd < 0 ||
          setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
                     sizeof one) != 0 ||
          bind(fd, (struct sockaddr *)&src, sizeof src) != 0 ||
          uv_tcp_open(&c->tcp, fd) != 0) {
        fail(g, "conn %d: socket/bind: %s", c->id, strerror(errno));
        if (fd >= 0) close(fd);
        g->failed_open++;
        g->closed++;
        c->state = C_CLOSED;
        uv_close((uv_handle_t *)&c->tcp, on_closed);
        continue;
      }
    }
    struct sockaddr_in dst;
    uv_ip4_addr(g->o.host, g->o.port, &dst);
    c->creq.data = c;
    int err =
        uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&dst, on_connect);
    if (err) {
      fail(g, "conn %d: connect: %s", c->id, uv_strerror(err));
      g->failed_open++;
      g->closed++;
      c->state = C_CLOSED;
      uv_close((uv_handle_t *)&c->tcp, on_closed);
    }
  }
}

/* Opens connections [g->started, g->started + n) and calls cb when every
 * one of them is open or failed. */
static void open_batch(gen_t *g, int n, void (*cb)(gen_t *)) {
  g->open_target = g->started + n;
  g->on_opened = cb;
  g->phase = PH_CONNECT;
  start_connect(g);
  batch_progress(g);
}

/* ---- scenarios ---------------------------------------------------------- */

static void flush_all(gen_t *g) {
  for (int i = 0; i < g->started; i++)
    conn_flush(&g->conns[i]);
}

static void begin_window(gen_t *g) {
  g->phase = PH_WARMUP;
  g->t_phase = uv_hrtime();
}

static void echo_opened(gen_t *g) {
  if (g->failed_open) {
    finish(g);
    return;
  }
  begin_window(g);
  for (int i = 0; i < g->started; i++)
    for (int k = 0; k < g->o.inflight; k++)
      send_message(&g->conns[i]);
  flush_all(g);
}

/* idle: warm-up batch, baseline RSS, the measured batch, one echo on each,
 * settle, RSS again. */
static void idle_measured_opened(gen_t *g);

static void idle_send_oneshots(gen_t *g, int from, int to) {
  g->oneshot_pending = to - from;
  for (int i = from; i < to; i++) {
    conn_t *c = &g->conns[i];
    if (c->state != C_OPEN) {
      g->oneshot_pending--;
      continue;
    }
    send_message(c);
    conn_flush(c);
  }
  if (g->oneshot_pending == 0) idle_echoed(g);
}

static void idle_warm_opened(gen_t *g) {
  if (g->failed_open) {
    finish(g);
    return;
  }
  g->phase = PH_WARMUP; /* oneshots of the warm batch */
  idle_send_oneshots(g, 0, g->started);
}

static void on_settled(uv_timer_t *t) {
  gen_t *g = t->data;
  g->rss_after = rss_of(g->o.server_pid);
  finish(g);
}

static void idle_echoed(gen_t *g) {
  if (g->oneshot_pending > 0 && --g->oneshot_pending > 0) return;
  if (g->phase == PH_WARMUP) {
    g->phase = PH_CONNECT;
    g->rss_before = rss_of(g->o.server_pid);
    snapshot(g, 0);
    g->t_hs0 = uv_hrtime();
    open_batch(g, g->o.conns, idle_measured_opened);
  } else if (g->phase == PH_MEASURE) {
    g->phase = PH_SETTLE;
    uv_timer_start(&g->timer, on_settled, (uint64_t)(g->o.settle * 1000), 0);
  }
}

static void idle_measured_opened(gen_t *g) {
  g->t_hs1 = uv_hrtime();
  snapshot(g, 1);
  if (g->failed_open) {
    finish(g);
    return;
  }
  g->phase = PH_MEASURE; /* oneshots of the measured batch */
  idle_send_oneshots(g, g->o.warm_conns, g->started);
}

/* broadcast: connection 0 sends; the server sends each broadcast to every
 * connection, connection 0 included. Payload: "B", the sequence number (8
 * bytes, little endian), then source bytes picked by the sequence number. */
static void bc_fill(const gen_t *g, uint64_t seq, uint8_t *p) {
  p[0] = 'B';
  for (int i = 0; i < 8; i++)
    p[1 + i] = (uint8_t)(seq >> (8 * i));
  memcpy(p + 9, g->src + (seq * 2654435761u) % SRC_WINDOW, BCAST_LEN - 9);
}

static void bc_send(gen_t *g) {
  conn_t *c = &g->conns[0];
  uint8_t p[BCAST_LEN];
  uint64_t seq = g->bc_next++;
  bc_fill(g, seq, p);
  g->bc_t_sent[seq % BCAST_RING] = now_ns(g);
  g->bc_left[seq % BCAST_RING] = (uint32_t)g->started;
  g->bc_outstanding++;
  send_payload(c, p, BCAST_LEN);
  if (!g->t_read) conn_flush(c); /* else once the read is handled */
}

static void bc_delivered(conn_t *c, const uint8_t *p, size_t n) {
  gen_t *g = c->g;
  uint64_t seq = c->next_seq++;
  uint8_t want[BCAST_LEN];
  bc_fill(g, seq, want);
  if (n != BCAST_LEN || memcmp(p, want, BCAST_LEN) != 0 || seq >= g->bc_next) {
    g->mismatches++;
    fail(g, "conn %d: broadcast %llu differs or is out of order", c->id,
         (unsigned long long)seq);
    return;
  }
  unsigned slot = (unsigned)(seq % BCAST_RING);
  int more = completed(g, g->bc_t_sent[slot], n);
  if (--g->bc_left[slot] == 0) {
    g->bc_outstanding--;
    if (more || g->phase < PH_DRAIN) bc_send(g);
    maybe_done_draining(g);
  }
}

static void bc_opened(gen_t *g) {
  if (g->failed_open) {
    finish(g);
    return;
  }
  begin_window(g);
  for (int k = 0; k < g->o.inflight; k++)
    bc_send(g);
}

/* ---- the end ------------------------------------------------------------ */

static void on_timeout(uv_timer_t *t) {
  gen_t *g = t->data;
  fail(g, "timed out after %.0f s in phase %d (%d of %d connections open)",
       g->o.timeout, (int)g->phase, g->opened, g->open_target);
  g->failed = 1;
  if (g->phase == PH_MEASURE) {
    snapshot(g, 1);
  }
  finish(g);
}

static void close_all(gen_t *g) {
  for (int i = 0; i < g->started; i++) {
    conn_t *c = &g->conns[i];
    if (c->state == C_CLOSED) continue;
    send_close(c);
    if (!c->writing && c->out.len) { /* best effort, no waiting */
      uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
      uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    }
    conn_close(c);
  }
}

static void finish(gen_t *g) {
  if (g->phase == PH_DONE) return;
  g->phase = PH_DONE;
  uv_timer_stop(&g->timer);
  uv_timer_stop(&g->deadline);
  close_all(g);
  uv_close((uv_handle_t *)&g->timer, NULL);
  uv_close((uv_handle_t *)&g->deadline, NULL);
}

static const char *sc_name(scenario_t sc) {
  static const char *names[] = {"echo", "throughput", "idle", "broadcast"};
  return names[sc];
}

static int report(gen_t *g) {
  const opts_t *o = &g->o;
  printf("scenario %s\n", sc_name(o->sc));
  printf("raw %d\n", o->raw);
  printf("deflate %d\n", o->deflate);
  printf("tls %d\n", o->tls);
  printf("conns %d\n", o->conns);
  printf("inflight %d\n", o->inflight);
  printf("size %zu\n", o->size);
  double gen_cpu = g->gen_cpu[1] - g->gen_cpu[0];
  double srv_cpu = g->srv_cpu[0] >= 0 ? g->srv_cpu[1] - g->srv_cpu[0] : -1;
  /* Whatever else ran on the machine meanwhile: all busy CPU time minus
   * ours and the server's. High values mean a noisy measurement. */
  double other = g->sys_cpu[0] >= 0 ? g->sys_cpu[1] - g->sys_cpu[0] - gen_cpu -
                                          (srv_cpu > 0 ? srv_cpu : 0)
                                    : -1;
  if (o->sc == SC_IDLE) {
    double secs = (double)(g->t_hs1 - g->t_hs0) * 1e-9;
    printf("handshakes %d\n", g->opened - o->warm_conns);
    printf("handshake_secs %.4f\n", secs);
    printf("handshakes_per_s %.1f\n",
           secs > 0 ? (double)(g->opened - o->warm_conns) / secs : 0);
    printf("rss_before_kib %ld\n", g->rss_before);
    printf("rss_after_kib %ld\n", g->rss_after);
    if (g->rss_before > 0 && g->rss_after > 0)
      printf("bytes_per_conn %.0f\n",
             (double)(g->rss_after - g->rss_before) * 1024.0 / o->conns);
    if (secs > 0) {
      gen_cpu /= secs;
      other /= secs;
      if (srv_cpu >= 0) srv_cpu /= secs;
    }
  } else {
    double secs = (double)(g->t_last - g->t_first) * 1e-9;
    printf("window_secs %.4f\n", secs);
    printf("completions %llu\n", (unsigned long long)g->count);
    double rate = secs > 0 ? (double)g->count / secs : 0;
    printf("%s %.1f\n",
           o->sc == SC_BROADCAST ? "deliveries_per_s" : "msgs_per_s", rate);
    printf("mb_per_s %.2f\n", secs > 0 ? (double)g->bytes / secs / 1e6 : 0);
    printf("p50_us %.1f\n", hist_pct(&g->hist, 50) / 1e3);
    printf("p99_us %.1f\n", hist_pct(&g->hist, 99) / 1e3);
    printf("max_us %.1f\n", hist_pct(&g->hist, 100) / 1e3);
    double window = (double)(g->t_last - g->t_first) * 1e-9;
    if (window > 0) {
      gen_cpu /= window;
      other /= window;
      if (srv_cpu >= 0) srv_cpu /= window;
    }
  }
  printf("gen_cpu_pct %.1f\n", gen_cpu * 100);
  printf("server_cpu_pct %.1f\n", srv_cpu >= 0 ? srv_cpu * 100 : -1.0);
  printf("other_cpu_pct %.1f\n", other >= 0 ? other * 100 : 0.0);
  if (g->tls_cipher[0]) printf("tls_cipher %s\n", g->tls_cipher);
  printf("mismatches %llu\n", (unsigned long long)g->mismatches);
  printf("errors %llu\n", (unsigned long long)g->errors);
  int ok = !g->failed && g->mismatches == 0 && g->errors == 0 &&
           (o->sc == SC_IDLE || g->count >= 2);
  printf("ok %d\n", ok);
  return ok ? 0 : 1;
}

/* ---- command line ------------------------------------------------------- */

static void usage(void) {
  fputs("usage: loadgen echo|throughput|idle|broadcast --port N [options]\n"
        "  --host A          server address (127.0.0.1)\n"
        "  --conns N         connections, or receivers for broadcast\n"
        "  --inflight K      messages (broadcasts) in flight per connection\n"
        "  --size B          payload bytes (k/m suffixes: 1m = 1 MiB)\n"
        "  --warmup S        seconds before measuring (1)\n"
        "  --duration S      seconds measured (3)\n"
        "  --timeout S       fail after S seconds (120)\n"
        "  --raw             plain TCP to the raw echo server\n"
        "  --sources N       use 127.0.0.1..N as source addresses\n"
        "  --concurrency N   handshakes in progress at once (64)\n"
        "  --warm-conns N    idle: connections before the RSS baseline (50)\n"
        "  --settle S        idle: seconds before the second RSS reading (1)\n"
        "  --server-pid P    read the server's RSS and CPU from /proc\n"
        "  --deflate         offer permessage-deflate; fail if not accepted\n"
        "  --tls             wss:// (TLS, the server's certificate not "
        "checked)\n",
        stderr);
  exit(2);
}

static size_t parse_size(const char *s) {
  char *end;
  double v = strtod(s, &end);
  if (*end == 'k' || *end == 'K') v *= 1024;
  if (*end == 'm' || *end == 'M') v *= 1024 * 1024;
  if (v < 1 || v > (double)MAX_MESSAGE) usage();
  return (size_t)v;
}

static void defaults(opts_t *o, scenario_t sc) {
  *o = (opts_t){.sc = sc,
                .host = "127.0.0.1",
                .conns = 100,
                .inflight = 1,
                .size = 32,
                .warmup = 1,
                .duration = 3,
                .timeout = 120,
                .sources = 1,
                .concurrency = 64,
                .warm_conns = 50,
                .settle = 1};
  if (sc == SC_THROUGHPUT) {
    o->conns = 1;
    o->size = 1u << 20;
  }
  if (sc == SC_IDLE) o->conns = 10000;
  if (sc == SC_BROADCAST) {
    o->conns = 1000;
    o->inflight = 16;
  }
}

/* Options that take a value, and where it goes. */
typedef enum { O_INT, O_DOUBLE, O_SIZE, O_STR } otype_t;
typedef struct {
  const char *name;
  otype_t type;
  size_t field; /* offsetof(opts_t, ...) */
} option_t;

static const option_t options[] = {
    {"--host", O_STR, offsetof(opts_t, host)},
    {"--port", O_INT, offsetof(opts_t, port)},
    {"--conns", O_INT, offsetof(opts_t, conns)},
    {"--inflight", O_INT, offsetof(opts_t, inflight)},
    {"--size", O_SIZE, offsetof(opts_t, size)},
    {"--warmup", O_DOUBLE, offsetof(opts_t, warmup)},
    {"--duration", O_DOUBLE, offsetof(opts_t, duration)},
    {"--timeout", O_DOUBLE, offsetof(opts_t, timeout)},
    {"--sources", O_INT, offsetof(opts_t, sources)},
    {"--concurrency", O_INT, offsetof(opts_t, concurrency)},
    {"--warm-conns", O_INT, offsetof(opts_t, warm_conns)},
    {"--settle", O_DOUBLE, offsetof(opts_t, settle)},
    {"--server-pid", O_INT, offsetof(opts_t, server_pid)},
};

static void set_option(opts_t *o, const char *name, const char *v) {
  for (size_t k = 0; k < sizeof options / sizeof options[0]; k++) {
    if (strcmp(name, options[k].name) != 0) continue;
    char *field = (char *)o + options[k].field;
    switch (options[k].type) {
    case O_INT:
      *(int *)(void *)field = atoi(v);
      break;
    case O_DOUBLE:
      *(double *)(void *)field = atof(v);
      break;
    case O_SIZE:
      *(size_t *)(void *)field = parse_size(v);
      break;
    case O_STR:
      *(const char **)(void *)field = v;
      break;
    }
    return;
  }
  usage();
}

static void parse_args(opts_t *o, int argc, char **argv) {
  static const char *names[] = {"echo", "throughput", "idle", "broadcast"};
  int sc = -1;
  for (int i = 0; argc > 1 && i < 4; i++)
    if (!strcmp(argv[1], names[i])) sc = i;
  if (sc < 0) usage();
  defaults(o, (scenario_t)sc);
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--raw")) {
      o->raw = 1;
    } else if (!strcmp(a, "--deflate")) {
      o->deflate = 1;
    } else if (!strcmp(a, "--tls")) {
      o->tls = 1;
    } else if (i + 1 < argc) {
      set_option(o, a, argv[++i]);
    } else {
      usage();
    }
  }
  if (o->port <= 0 || o->conns < 1 || o->inflight < 1 || o->sources < 1 ||
      o->sources > 250 || o->concurrency < 1 || o->warm_conns < 0 ||
      (o->raw && (o->deflate || o->tls)))
    usage();
  if (o->sc == SC_BROADCAST) {
    if (o->raw || o->inflight > (int)BCAST_RING) usage();
    o->size = BCAST_LEN;
  }
  if (o->sc == SC_IDLE) {
    if (o->raw) usage();
    o->inflight = 1;
  }
}

int main(int argc, char **argv) {
  static gen_t gen;
  gen_t *g = &gen;
  parse_args(&g->o, argc, argv);
  /* libuv writes with write(2): a server that resets must end a connection
   * (EPIPE), not the generator. */
  signal(SIGPIPE, SIG_IGN);
  rng_seed(g);
  g->nconns = g->o.conns + (g->o.sc == SC_IDLE ? g->o.warm_conns : 0);
  raise_nofile(g->nconns);
  g->conns = calloc((size_t)g->nconns, sizeof(conn_t));
  g->src_len = g->o.size + SRC_WINDOW;
  g->src = xmalloc(g->src_len);
  for (size_t i = 0; i < g->src_len; i += 8) {
    uint64_t r = rng_next(g);
    for (size_t k = 0; k < 8 && i + k < g->src_len; k++) {
      uint8_t b = (uint8_t)(r >> (8 * k));
      g->src[i + k] = b == 'B' ? 'b' : b;
    }
  }
  if (!g->conns) usage();

  if (g->o.tls) {
    /* A benchmark of the server, not of trust: any certificate will do. */
    g->tls_ctx = SSL_CTX_new(TLS_client_method());
    if (!g->tls_ctx) {
      fprintf(stderr, "loadgen: SSL_CTX_new failed\n");
      return 1;
    }
    SSL_CTX_set_verify(g->tls_ctx, SSL_VERIFY_NONE, NULL);
  }
  g->loop = uv_default_loop();
  uv_timer_init(g->loop, &g->timer);
  uv_timer_init(g->loop, &g->deadline);
  g->timer.data = g->deadline.data = g;
  uv_timer_start(&g->deadline, on_timeout, (uint64_t)(g->o.timeout * 1000), 0);

  switch (g->o.sc) {
  case SC_ECHO:
  case SC_THROUGHPUT:
    open_batch(g, g->o.conns, echo_opened);
    break;
  case SC_IDLE:
    open_batch(g, g->o.warm_conns, idle_warm_opened);
    break;
  case SC_BROADCAST:
    open_batch(g, g->o.conns, bc_opened);
    break;
  }
  uv_run(g->loop, UV_RUN_DEFAULT);
  int status = report(g);
  for (int i = 0; i < g->started; i++) {
    conn_t *c = &g->conns[i];
    wsuv_conn_free(&c->ws); /* zeroed until open: still safe */
    buf_free(&c->out);
    buf_free(&c->wbuf);
    buf_free(&c->head);
    free(c->ring);
  }
  free(g->conns);
  free(g->src);
  uv_loop_close(g->loop);
  return status;
}
