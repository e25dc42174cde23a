/* raw_echo.c: a plain TCP echo server on libuv, the ceiling of the echo and
 * throughput benchmarks (bench/run drives it with `loadgen --raw`). No
 * WebSocket at all: every byte read is written back, without a copy in user
 * space. Each read lands in a 256 KiB block from a free list; uv_try_write
 * sends it at once when it can, and otherwise the block itself is handed to
 * uv_write and returns to the free list when written. Reading pauses while
 * more than 8 blocks of a connection wait to be written.
 *
 *   raw_echo [port]     port 0 (the default) picks a free one
 *
 * Listens on 127.0.0.1 and prints "PORT n" once listening. */
#define _GNU_SOURCE
#include <uv.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK      (256u << 10)
#define MAX_QUEUED 8 /* blocks in flight per connection before pausing */

typedef struct block_s {
  uv_write_t req;
  struct block_s *next; /* free list */
  struct client_s *client;
  char data[BLOCK];
} block_t;

typedef struct client_s {
  uv_tcp_t tcp;
  int queued; /* blocks being written */
  int paused;
  int closing;
} client_t;

static block_t *free_blocks;

static block_t *block_get(void) {
  block_t *b = free_blocks;
  if (b) {
    free_blocks = b->next;
    return b;
  }
  return malloc(sizeof *b);
}

static void block_put(block_t *b) {
  if (!b) return;
  b->next = free_blocks;
  free_blocks = b;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  block_t *b = block_get();
  *buf = b ? uv_buf_init(b->data, BLOCK) : uv_buf_init(NULL, 0);
}

static block_t *block_of(const uv_buf_t *buf) {
  return (block_t *)(buf->base - offsetof(block_t, data));
}

static void on_closed(uv_handle_t *h) {
  client_t *c = h->data;
  if (c->queued == 0)
    free(c);
  else
    c->closing = 1; /* freed by the last write callback */
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void on_written(uv_write_t *req, int status) {
  block_t *b = (block_t *)req;
  client_t *c = b->client;
  block_put(b);
  c->queued--;
  if (c->closing) {
    if (c->queued == 0) free(c);
    return;
  }
  if (status < 0 || uv_is_closing((uv_handle_t *)&c->tcp)) return;
  if (c->paused && c->queued < MAX_QUEUED / 2) {
    c->paused = 0;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  }
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  client_t *c = s->data;
  block_t *b = buf->base ? block_of(buf) : NULL;
  if (n <= 0 || !b) {
    if (b) block_put(b);
    if (n < 0 && !uv_is_closing((uv_handle_t *)s))
      uv_close((uv_handle_t *)s, on_closed);
    return;
  }
  uv_buf_t out = uv_buf_init(b->data, (unsigned)n);
  if (c->queued == 0) { /* nothing queued: the bytes may go out now */
    int r = uv_try_write(s, &out, 1);
    if (r == n) {
      block_put(b);
      return;
    }
    if (r < 0 && r != UV_EAGAIN) {
      block_put(b);
      uv_close((uv_handle_t *)s, on_closed);
      return;
    }
    if (r > 0) out = uv_buf_init(b->data + r, (unsigned)(n - r));
  }
  b->client = c;
  c->queued++;
  if (uv_write(&b->req, s, &out, 1, on_written) != 0) {
    c->queued--;
    block_put(b);
    uv_close((uv_handle_t *)s, on_closed);
    return;
  }
  if (c->queued >= MAX_QUEUED) {
    c->paused = 1;
    uv_read_stop(s);
  }
}

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0) return;
  client_t *c = calloc(1, sizeof *c);
  if (!c) return;
  uv_tcp_init(server->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    uv_close((uv_handle_t *)&c->tcp, on_closed);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 0;
  signal(SIGPIPE, SIG_IGN); /* a peer that resets ends its connection only */
  uv_loop_t *loop = uv_default_loop();
  uv_tcp_t server;
  struct sockaddr_in addr;
  uv_tcp_init(loop, &server);
  uv_ip4_addr("127.0.0.1", port, &addr);
  int err = uv_tcp_bind(&server, (struct sockaddr *)&addr, 0);
  if (!err) err = uv_listen((uv_stream_t *)&server, 511, on_connection);
  if (err) {
    fprintf(stderr, "raw_echo: listen: %s\n", uv_strerror(err));
    return 1;
  }
  struct sockaddr_storage ss;
  int len = sizeof ss;
  uv_tcp_getsockname(&server, (struct sockaddr *)&ss, &len);
  printf("PORT %d\n", ntohs(((struct sockaddr_in *)&ss)->sin_port));
  fflush(stdout);
  return uv_run(loop, UV_RUN_DEFAULT);
}
