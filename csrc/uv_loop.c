/* uv_loop.c: one wsuv loop per Lua state (or per engine), over an own or a
 * borrowed uv_loop_t. No process-wide state: two loops never share
 * anything. */
#include <stdlib.h>
#include <string.h>

#include "uv_internal.h"

#define SWEEP_INTERVAL_MS 100

static void wake_cb(uv_timer_t *t) {
  (void)t; /* Its only job is to end uv_run(UV_RUN_ONCE). */
}

static void sweep_cb(uv_timer_t *t) {
  wsuv__sweep(t->data);
}

void wsuv__limits_default(wsuv_limits_t *lim) {
  if (!lim->max_message) lim->max_message = WSUV_DEFAULT_MAX_MESSAGE;
  /* max_frame stays 0 unless set: the parser then takes a message's wire
   * limit, which lets a compressed frame exceed max_message by what deflate
   * may add (ws_frame.c). */
  if (!lim->max_head) lim->max_head = WSUV_DEFAULT_MAX_HEAD;
  if (!lim->max_queued) lim->max_queued = 16u * 1024 * 1024;
  if (!lim->high_water) lim->high_water = 1024u * 1024;
  if (lim->high_water > lim->max_queued) lim->high_water = lim->max_queued;
  if (!lim->recv_high) lim->recv_high = 1024u * 1024;
  if (!lim->connect_timeout) lim->connect_timeout = 10000;
  if (!lim->handshake_timeout) lim->handshake_timeout = 10000;
  if (!lim->close_timeout) lim->close_timeout = 5000;
  if (lim->ping_interval && !lim->ping_timeout)
    lim->ping_timeout = lim->ping_interval;
}

int wsuv__loop_init(wsuv_loop_t *l, uv_loop_t *uv, const wsuv_hooks_t *h) {
  memset(l, 0, sizeof(*l));
  l->hooks = *h;
  if (uv) {
    l->uv = uv;
  } else {
    l->uv = malloc(sizeof(*l->uv));
    if (!l->uv) return UV_ENOMEM;
    int err = uv_loop_init(l->uv);
    if (err) {
      free(l->uv);
      return err;
    }
    l->own_uv = 1;
  }
  uv_timer_init(l->uv, &l->wake);
  uv_timer_init(l->uv, &l->sweep);
  l->wake.data = l;
  l->sweep.data = l;
  uv_timer_start(&l->sweep, sweep_cb, SWEEP_INTERVAL_MS, SWEEP_INTERVAL_MS);
  /* Neither timer may keep the loop alive on its own. */
  uv_unref((uv_handle_t *)&l->wake);
  uv_unref((uv_handle_t *)&l->sweep);
  return 0;
}

uint64_t wsuv__now(wsuv_loop_t *l) {
  /* uv_now is cached at the start of each loop pass; Lua may have spent a
   * while outside the loop since, and deadlines count from the call. */
  uv_update_time(l->uv);
  return uv_now(l->uv);
}

void wsuv__ready(wsuv_loop_t *l, wsuv_obj_t *o) {
  if (o->ready) return;
  if (l->nready == l->ready_cap) {
    size_t cap = l->ready_cap ? l->ready_cap * 2 : 16;
    wsuv_obj_t **r = realloc(l->ready, cap * sizeof(*r));
    if (!r)
      return; /* The waiter then finds out at its next deadline or event. */
    l->ready = r;
    l->ready_cap = cap;
  }
  l->ready[l->nready++] = o;
  o->ready = 1;
}

void wsuv__unready(wsuv_loop_t *l, wsuv_obj_t *o) {
  if (!o->ready) return;
  for (size_t i = 0; i < l->nready; i++) {
    if (l->ready[i] == o) {
      l->ready[i] = l->ready[--l->nready];
      break;
    }
  }
  o->ready = 0;
}

int wsuv__loop_run(wsuv_loop_t *l, int64_t timeout_ms) {
  wsuv__loop_flush(l);
  if (l->nready) timeout_ms = 0; /* News are waiting: poll only. */
  if (timeout_ms == 0) return uv_run(l->uv, UV_RUN_NOWAIT);
  if (timeout_ms > 0) {
    uv_timer_start(&l->wake, wake_cb, (uint64_t)timeout_ms, 0);
    uv_ref((uv_handle_t *)&l->wake);
  }
  int alive = uv_run(l->uv, UV_RUN_ONCE);
  uv_timer_stop(&l->wake);
  uv_unref((uv_handle_t *)&l->wake);
  return alive;
}

static void walk_close_cb(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

void wsuv__loop_close(wsuv_loop_t *l) {
  l->closing = 1;
  for (wsuv_tserver_t *s = l->servers; s; s = s->next)
    wsuv__server_close(s);
  while (l->conns)
    wsuv__abort(l->conns, WSUV_ECLOSED, "loop closed");
  uv_timer_stop(&l->sweep);
  uv_close((uv_handle_t *)&l->wake, NULL);
  uv_close((uv_handle_t *)&l->sweep, NULL);
  uv_run(l->uv, UV_RUN_NOWAIT);
  if (l->own_uv) {
    /* Servers close through their own close callbacks; anything left over
     * (a handle the binding leaked) is closed here so the loop can go. */
    uv_walk(l->uv, walk_close_cb, NULL);
    uv_run(l->uv, UV_RUN_DEFAULT);
    uv_loop_close(l->uv);
    free(l->uv);
  }
  wsuv__tls_cache_free(l);
  free(l->ready);
  free(l->rbuf);
  wsuv__spare_trim(l, 1);
  wsuv__arena_trim(l);
  free(l->hdr_scratch);
  l->hdr_scratch = NULL;
  l->ready = NULL;
  l->rbuf = NULL;
}
