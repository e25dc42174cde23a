/* c_client.c: a WebSocket client in C on wsuv's sans-IO core, for engines
 * that link the core without Lua (build/libwsuv_core.a, csrc/wsuv.h and
 * csrc/wsuv_conn.h). A non-blocking socket and one client_step() per frame,
 * as a game loop would call it: no thread, no libuv, no global state (two
 * clients could run side by side). It connects, sends one text message,
 * prints the echo and closes with 1000; examples/echo_server.lua answers.
 *
 *   make examples-c
 *   build/examples/c_client [port [message]]
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "wsuv.h"
#include "wsuv_conn.h"

typedef enum { CONNECTING, HANDSHAKE, OPEN, DONE } phase_t;

typedef struct {
  int fd;
  phase_t phase;
  char host[64]; /* Host header: "127.0.0.1:8080" */
  char key[25];  /* our Sec-WebSocket-Key */
  char head[WSUV_DEFAULT_MAX_HEAD];
  size_t head_len;
  wsuv_conn_t ws; /* protocol state once open */
  int ws_inited;
  uint8_t out[65536]; /* bytes the socket has not taken yet */
  size_t out_len;
  /* What the application reads. */
  char echo[1024]; /* the last message, cut to fit */
  size_t echo_len;
  int echoed;
  int close_code; /* the peer's, once its close frame arrived; else 0 */
  char error[128];
} client_t;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void fail(client_t *c, const char *what, const char *why) {
  if (!c->error[0]) snprintf(c->error, sizeof c->error, "%s: %s", what, why);
  c->phase = DONE;
}

/* Client frames are masked with keys a peer cannot predict (RFC 6455
 * 10.3): OpenSSL's generator, which the core links anyway. */
static void genmask(void *ud, uint8_t key[4]) {
  (void)ud;
  if (RAND_bytes(key, 4) != 1) abort();
}

static int queue(client_t *c, const void *p, size_t n) {
  if (n > sizeof c->out - c->out_len) return WSUV_EBUFFULL;
  memcpy(c->out + c->out_len, p, n);
  c->out_len += n;
  return 0;
}

static int client_open(client_t *c, const char *ip, int port) {
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1) return -1;
  snprintf(c->host, sizeof c->host, "%s:%d", ip, port);
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  if (c->fd < 0 || fcntl(c->fd, F_SETFL, O_NONBLOCK) != 0) return -1;
  if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0 &&
      errno != EINPROGRESS)
    return -1;
  c->phase = CONNECTING;
  return 0;
}

/* Queues one whole text message: header, then the payload masked with the
 * key the header carries. */
static int client_send(client_t *c, const char *msg, size_t n) {
  uint8_t hdr[WSUV_MAX_FRAME_HEADER], mask[4];
  ssize_t h =
      wsuv_conn_build_header(&c->ws, hdr, WSUV_OP_TEXT, WSUV_FIN, n, mask);
  if (h < 0) return (int)h;
  if ((size_t)h + n > sizeof c->out - c->out_len) return WSUV_EBUFFULL;
  queue(c, hdr, (size_t)h);
  wsuv_mask_copy(c->out + c->out_len, (const uint8_t *)msg, n, mask, 0);
  c->out_len += n;
  return 0;
}

static void on_frames(client_t *c, uint8_t *buf, size_t len) {
  while (len > 0 && c->phase == OPEN) {
    wsuv_event_t ev;
    ssize_t n = wsuv_conn_feed(&c->ws, buf, len, &ev);
    if (n < 0) { /* the close frame the core owes goes out next step */
      snprintf(c->error, sizeof c->error, "%s", wsuv_strerror((int)n));
      return;
    }
    if (ev.type == WSUV_EV_TEXT || ev.type == WSUV_EV_BINARY) {
      c->echo_len = ev.len < sizeof c->echo ? ev.len : sizeof c->echo - 1;
      memcpy(c->echo, ev.data, c->echo_len);
      c->echoed = 1;
    } else if (ev.type == WSUV_EV_CLOSE) {
      c->close_code = ev.close_code;
    } else if (ev.type == WSUV_EV_NONE) {
      return; /* pings are answered by the core: see wsuv_conn_take_output */
    }
    buf += n;
    len -= (size_t)n;
  }
}

/* The opening handshake: the response head, then whatever frames came with
 * it in the same read. */
static void on_head(client_t *c, const uint8_t *buf, size_t len) {
  wsuv_header_t hdrs[WSUV_DEFAULT_MAX_HEADERS];
  wsuv_http_head_t res = {.headers = hdrs,
                          .num_headers = WSUV_DEFAULT_MAX_HEADERS};
  const char *why = NULL;
  if (len > sizeof c->head - c->head_len) {
    fail(c, "handshake", "response head too big");
    return;
  }
  memcpy(c->head + c->head_len, buf, len);
  c->head_len += len;
  ssize_t n = wsuv_http_parse_response(c->head, c->head_len, 0, &res);
  if (n == 0) return; /* more to come */
  if (n < 0) {
    fail(c, "handshake", wsuv_strerror((int)n));
    return;
  }
  if (wsuv_handshake_check_response(&res, c->key, NULL, NULL, &why) != 0) {
    fail(c, "handshake", why);
    return;
  }
  wsuv_conn_config_t cfg = {.parser = {.role = WSUV_ROLE_CLIENT},
                            .genmask = genmask};
  if (wsuv_conn_init(&c->ws, &cfg) != 0) {
    fail(c, "handshake", "wsuv_conn_init failed");
    return;
  }
  c->ws_inited = 1;
  c->phase = OPEN;
  on_frames(c, (uint8_t *)c->head + n, c->head_len - (size_t)n);
}

/* One frame's worth of network work; never blocks. */
static void client_step(client_t *c) {
  if (c->phase == CONNECTING) {
    struct pollfd p = {.fd = c->fd, .events = POLLOUT};
    int err = 0;
    socklen_t l = sizeof err;
    if (poll(&p, 1, 0) <= 0) return; /* not yet */
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err) {
      fail(c, "connect", strerror(err));
      return;
    }
    uint8_t nonce[16];
    char req[1024];
    wsuv_client_request_t r = {.host = c->host, .target = "/"};
    if (RAND_bytes(nonce, sizeof nonce) != 1) abort();
    wsuv_handshake_key(nonce, c->key);
    ssize_t n = wsuv_handshake_build_request(req, sizeof req, &r, c->key);
    if (n < 0 || queue(c, req, (size_t)n) != 0) {
      fail(c, "handshake", "request");
      return;
    }
    c->phase = HANDSHAKE;
  }
  /* Output: control frames the protocol owes (pongs, close replies), then
   * as much as the socket takes. */
  if (c->phase == OPEN && wsuv_conn_want_write(&c->ws) &&
      sizeof c->out - c->out_len >= WSUV_CONN_OUTPUT_MAX)
    c->out_len += wsuv_conn_take_output(&c->ws, c->out + c->out_len,
                                        sizeof c->out - c->out_len);
  while (c->out_len > 0 && c->phase != DONE) {
    ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        fail(c, "send", strerror(errno));
      break;
    }
    memmove(c->out, c->out + n, c->out_len - (size_t)n);
    c->out_len -= (size_t)n;
  }
  /* Input, until the socket has nothing more now. */
  while (c->phase == HANDSHAKE || c->phase == OPEN) {
    uint8_t buf[16384];
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        fail(c, "recv", strerror(errno));
      return;
    }
    if (n == 0) { /* the server ends the TCP connection after the close */
      if (!c->close_code)
        fail(c, "recv", "connection closed without a close frame");
      c->phase = DONE;
      return;
    }
    if (c->phase == HANDSHAKE)
      on_head(c, buf, (size_t)n);
    else
      on_frames(c, buf, (size_t)n);
  }
}

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 8080;
  const char *text = argc > 2 ? argv[2] : "hello from C";
  client_t *c = calloc(1, sizeof *c);
  int sent = 0, closing = 0, frames = 0;
  double start = now_ms(), longest = 0;
  if (!c || client_open(c, "127.0.0.1", port) != 0) {
    fprintf(stderr, "c_client: %s\n", strerror(errno));
    return 1;
  }
  /* The game loop: a step, then the rest of a (1 ms) frame. */
  while (c->phase != DONE) {
    double t0 = now_ms(), took;
    client_step(c);
    took = now_ms() - t0;
    if (took > longest) longest = took;
    frames++;
    if (c->phase == OPEN && !sent) {
      printf("connected: ws://%s/\n", c->host);
      if (client_send(c, text, strlen(text)) != 0) fail(c, "send", "queue");
      sent = 1;
    }
    if (c->echoed && !closing) {
      printf("received text: %.*s\n", (int)c->echo_len, c->echo);
      wsuv_conn_close(&c->ws, 1000, "bye", 3);
      closing = 1;
    }
    if (now_ms() - start > 5000) fail(c, "timeout", "no reply within 5 s");
    nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
  }
  close(c->fd);
  if (c->ws_inited) wsuv_conn_free(&c->ws);
  if (c->error[0] && !c->close_code) {
    fprintf(stderr, "c_client: %s\n", c->error);
    free(c);
    return 1;
  }
  printf("closed, server replied with code %d\n", c->close_code);
  printf("frames: %d, longest step: %.3f ms\n", frames, longest);
  int ok = c->echoed && c->close_code == 1000;
  free(c);
  return ok ? 0 : 1;
}
