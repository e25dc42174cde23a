/* wsuv_conn.h: the sans-IO connection state machine (ws_conn.c), part of the
 * public C API. It sits on the message parser and adds what every endpoint
 * must do whatever its I/O: answer pings, run the closing handshake, fail the
 * connection with the right close code, and mask what a client sends.
 *
 * Bytes in: wsuv_conn_feed() returns one event per call, like the parser.
 * Bytes out: control frames the protocol owes the peer (a pong, the close
 * reply) wait in the connection, at most one of each, and the caller drains
 * them with wsuv_conn_take_output() before writing its next data frame. Data
 * frames are written by the caller as wsuv_conn_build_header() + payload, so
 * a server can write the payload from where it already is (zero copy). */
#ifndef WSUV_CONN_H
#define WSUV_CONN_H

#include "wsuv.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fills key with 4 bytes from a strong source (RFC 6455 5.3). */
typedef void (*wsuv_genmask_cb)(void *ud, uint8_t key[4]);

typedef struct {
  wsuv_parser_config_t parser; /* role, limits, allocator */
  wsuv_genmask_cb genmask;     /* required for WSUV_ROLE_CLIENT */
  void *genmask_ud;
} wsuv_conn_config_t;

typedef enum {
  WSUV_STATE_OPEN = 0, /* both directions open */
  WSUV_STATE_CLOSING,  /* we sent a close frame, waiting for the peer's */
  WSUV_STATE_CLOSED    /* close frames crossed, or the connection failed */
} wsuv_conn_state_t;

#define WSUV_CONN_OUTPUT_MAX (2 * (WSUV_MAX_FRAME_HEADER + 125))

typedef struct {
  wsuv_parser_t parser;
  wsuv_genmask_cb genmask;
  void *genmask_ud;
  wsuv_role_t role;
  wsuv_conn_state_t state;
  uint8_t close_sent;     /* a close frame was taken or built */
  uint8_t close_received; /* the peer's close frame has arrived */
  uint8_t pong_len_set;   /* a pong is owed (payload in pong[]) */
  uint8_t pong_len;
  uint8_t pong[125];
  uint8_t close_len; /* close frame owed: payload length + 1, or 0 */
  uint8_t close_payload[125];
  int close_code; /* peer's code (1005 if none), or ours on failure */
  int error;      /* WSUV_E* the connection failed with, or 0 */
} wsuv_conn_t;

/* Initialises c for an open connection (after the opening handshake). */
WSUV_EXTERN void wsuv_conn_init(wsuv_conn_t *c, const wsuv_conn_config_t *cfg);
/* Frees what the parser holds. */
WSUV_EXTERN void wsuv_conn_free(wsuv_conn_t *c);

/* Consumes up to len bytes of buf (unmasking in place) and sets *ev, as
 * wsuv_parser_feed does. On a ping it also owes a pong (only the most recent
 * is kept, as RFC 6455 5.5.3 allows); on a close it owes the close reply and
 * the state becomes CLOSED. On a protocol error it owes a close frame with
 * the matching code, returns the negative WSUV_E* code and the state becomes
 * CLOSED. Once CLOSED, input is discarded (returns len, WSUV_EV_NONE). */
WSUV_EXTERN ssize_t wsuv_conn_feed(wsuv_conn_t *c, uint8_t *buf, size_t len,
                                   wsuv_event_t *ev);

/* Nonzero when control frames are owed to the peer. */
WSUV_EXTERN int wsuv_conn_want_write(const wsuv_conn_t *c);
/* Moves the owed control frames (pong first, then close) into out, masked
 * for a client. cap must be at least WSUV_CONN_OUTPUT_MAX. Returns the number
 * of bytes written (0 when nothing is owed). */
WSUV_EXTERN size_t wsuv_conn_take_output(wsuv_conn_t *c, uint8_t *out,
                                         size_t cap);

/* Builds the header of a frame we send, in out (WSUV_MAX_FRAME_HEADER
 * bytes). For a client it draws a mask key into mask (4 bytes) and the
 * caller must mask the payload with it; for a server mask is left alone.
 * Returns the header length; WSUV_ECLOSED once a close frame was sent
 * (a close that is only owed does not stop data: take it when done);
 * WSUV_EINVAL for a control frame over 125 bytes or unfragmented, or an
 * unknown opcode. Sending a close frame this way moves the state on. */
WSUV_EXTERN ssize_t wsuv_conn_build_header(wsuv_conn_t *c, uint8_t *out,
                                           unsigned opcode, unsigned flags,
                                           uint64_t len, uint8_t *mask);

/* Starts the closing handshake: owes a close frame with code and reason
 * (code 0: no payload). Returns 0; WSUV_ECLOSED if a close was already
 * sent; WSUV_EINVAL for a code not valid on the wire or a reason over 123
 * bytes or not UTF-8. */
WSUV_EXTERN int wsuv_conn_close(wsuv_conn_t *c, int code, const char *reason,
                                size_t reason_len);

#ifdef __cplusplus
}
#endif
#endif /* WSUV_CONN_H */
