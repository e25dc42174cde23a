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
 * a server can write the payload from where it already is (zero copy).
 *
 * permessage-deflate (RFC 7692): give the agreed parameters in cfg.pmd.
 * Received messages are then inflated before they are handed out, with
 * max_message applying to the inflated size; messages we send go through
 * wsuv_conn_compress() before their headers are built. See the comments on
 * wsuv_conn_feed() and wsuv_conn_compress(). Without cfg.pmd a connection
 * behaves as before and holds one NULL pointer more. */
#ifndef WSUV_CONN_H
#define WSUV_CONN_H

#include "wsuv.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fills key with 4 bytes from a strong source (RFC 6455 5.3). */
typedef void (*wsuv_genmask_cb)(void *ud, uint8_t key[4]);

typedef struct {
  wsuv_parser_config_t parser; /* role, limits, allocator; with pmd, stream
                                  chooses how inflated data is delivered */
  wsuv_genmask_cb genmask;     /* required for WSUV_ROLE_CLIENT */
  void *genmask_ud;
  const wsuv_pmd_params_t *pmd;          /* agreed permessage-deflate, or NULL;
                                            copied */
  const wsuv_pmd_options_t *pmd_options; /* level, mem_level, threshold;
                                            NULL: defaults; copied */
} wsuv_conn_config_t;

typedef enum {
  WSUV_STATE_OPEN = 0, /* both directions open */
  WSUV_STATE_CLOSING,  /* we sent a close frame, waiting for the peer's */
  WSUV_STATE_CLOSED    /* close frames crossed, or the connection failed */
} wsuv_conn_state_t;

#define WSUV_CONN_OUTPUT_MAX (2 * (WSUV_MAX_FRAME_HEADER + 125))

typedef struct wsuv_conn_pmd_s wsuv_conn_pmd_t;

typedef struct {
  wsuv_parser_t parser;
  wsuv_genmask_cb genmask;
  void *genmask_ud;
  wsuv_role_t role;
  wsuv_conn_state_t state;
  uint8_t close_sent;     /* a close frame was taken or built */
  uint8_t close_received; /* the peer's close frame has arrived */
  uint8_t pong_len_set;   /* a pong is owed (payload at owed[0]) */
  uint8_t pong_len;
  uint8_t close_len; /* close frame owed: payload length + 1, or 0 */
  uint8_t streaming; /* a data message we send is started and not finished */
  /* Payloads of the owed pong (owed[0..125)) and close (owed[125..250)),
   * allocated only while a frame is owed: an idle connection holds none. */
  uint8_t *owed;
  int close_code;       /* peer's code (1005 if none), or ours on failure */
  int error;            /* WSUV_E* the connection failed with, or 0 */
  wsuv_conn_pmd_t *pmd; /* private: permessage-deflate state, or NULL */
} wsuv_conn_t;

/* Initialises c for an open connection (after the opening handshake).
 * Returns 0; with cfg->pmd, WSUV_ENOMEM (the small pmd state is allocated
 * here, the zlib streams on first use) or WSUV_EINVAL for parameters or
 * options out of range. After a failure c holds nothing, and
 * wsuv_conn_free is still safe. */
WSUV_EXTERN int wsuv_conn_init(wsuv_conn_t *c, const wsuv_conn_config_t *cfg);
/* Frees what the parser and the pmd state hold. */
WSUV_EXTERN void wsuv_conn_free(wsuv_conn_t *c);

/* Consumes up to len bytes of buf (unmasking in place) and sets *ev, as
 * wsuv_parser_feed does. On a ping it also owes a pong (only the most recent
 * is kept, as RFC 6455 5.5.3 allows); on a close it owes the close reply and
 * the state becomes CLOSED. On a protocol error it owes a close frame with
 * the matching code, returns the negative WSUV_E* code and the state becomes
 * CLOSED. Once CLOSED, input is discarded (returns len, WSUV_EV_NONE).
 *
 * With permessage-deflate, TEXT and BINARY events carry the inflated data
 * (ev->compressed tells that the message came compressed), text is UTF-8
 * checked after inflating (WSUV_EUTF8, 1007), corrupt data fails with
 * WSUV_EDEFLATE (1007), and more than max_message bytes, inflated or on
 * the wire, with WSUV_ETOOBIG (1009), without allocating beyond
 * max_message.
 * - Whole messages (cfg.parser.stream == 0): ev->data is the message, in
 *   storage the connection owns, valid until the next call.
 * - Streamed (cfg.parser.stream != 0): inflated data comes in chunks of at
 *   most WSUV_CONN_INFLATE_CHUNK bytes, in storage the connection owns,
 *   valid until the next call (an uncompressed message comes as the parser
 *   delivers it, in place); first and fin mark the message's ends (the last
 *   chunk may be empty). One compressed piece of input can inflate to many
 *   chunks: while the connection still has output for input it has taken,
 *   the call returns 0 with the event, and the caller must call again with
 *   the same buf and len (after handling the event). The call that hands
 *   out the last chunk for that input returns the count of everything
 *   consumed, as usual. So the usual loop, "handle ev; buf += n; len -= n;
 *   stop at WSUV_EV_NONE", works unchanged, as long as buf's bytes stay in
 *   place until it moves past them. Another buf while output is owed fails
 *   with WSUV_EINVAL. */
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
 * WSUV_EINVAL for a control frame over 125 bytes or unfragmented, an
 * unknown opcode, RSV2/RSV3, RSV1 other than on a TEXT/BINARY frame of a
 * connection with permessage-deflate, or a CONTINUATION frame with no
 * message started; WSUV_ESTATE for a TEXT/BINARY frame while a message
 * started without FIN is unfinished (RFC 6455 5.4: its frames may only be
 * interleaved with control frames). Sending a close frame this way moves
 * the state on. */
WSUV_EXTERN ssize_t wsuv_conn_build_header(wsuv_conn_t *c, uint8_t *out,
                                           unsigned opcode, unsigned flags,
                                           uint64_t len, uint8_t *mask);

/* Whether a new data message (TEXT/BINARY) may start now, as
 * wsuv_conn_build_header would judge it: 0, WSUV_ECLOSED once a close frame
 * was sent, or WSUV_ESTATE while a message started without FIN is
 * unfinished. For frames encoded once for many connections (broadcast). */
WSUV_EXTERN int wsuv_conn_may_start(const wsuv_conn_t *c);

/* Flags for wsuv_conn_compress. */
enum {
  WSUV_SEND_FIRST = 1, /* first part of a message */
  WSUV_SEND_FIN = 2,   /* last part of a message */
  WSUV_SEND_PLAIN = 4  /* on the first part: send this message uncompressed */
};

/* Largest inflated chunk a streamed connection hands out. */
#define WSUV_CONN_INFLATE_CHUNK (16u * 1024u)

/* Prepares n bytes of in, a whole TEXT/BINARY message (WSUV_SEND_FIRST |
 * WSUV_SEND_FIN) or the next part of a fragmented one, for sending. Sets
 * *out to the payload to frame and *rsv to the RSV bits for its header:
 * WSUV_RSV1 on the first frame of a compressed message only (RFC 7692 6),
 * 0 otherwise. Then build the header with wsuv_conn_build_header(c, hdr,
 * opcode, (fin ? WSUV_FIN : 0) | *rsv, returned length, mask). Control frames
 * are never compressed and do not go through here.
 *
 * Without permessage-deflate, or for a message sent plain (WSUV_SEND_PLAIN,
 * or a whole message shorter than the threshold), *out is in itself. A
 * compressed payload lives in storage the connection owns, valid until the
 * next call to wsuv_conn_compress, wsuv_conn_trim or wsuv_conn_free: copy
 * it (a client masks it into its write buffer anyway) before the next call
 * if the write is asynchronous. A whole message that does not shrink goes
 * plain when our side agreed to no context takeover (only then is the
 * window not shared with the next message).
 *
 * Returns the payload length; WSUV_ECLOSED once a close frame was sent;
 * WSUV_ESTATE for a first part while a message is unfinished or a later
 * part without one; WSUV_ENOMEM or WSUV_EINVAL from zlib (then the message
 * cannot be finished: fail the connection). */
WSUV_EXTERN ssize_t wsuv_conn_compress(wsuv_conn_t *c, const uint8_t *in,
                                       size_t n, unsigned flags,
                                       const uint8_t **out, unsigned *rsv);

/* Gives back storage kept between messages: the parser's reassembly
 * buffer (see wsuv_parser_trim), the compression output, the
 * inflate buffers, and the deflate stream when our side agreed to no context
 * takeover (reset, not freed, after each message, so that busy connections
 * do not reallocate 256 KiB per message). Call when no pointer from
 * wsuv_conn_compress or from an event is in use any more, e.g. once writes
 * have completed on an idle connection. zlib streams that carry context to
 * the next message stay; the inflate stream of a peer without context
 * takeover is already freed after each message. */
WSUV_EXTERN void wsuv_conn_trim(wsuv_conn_t *c);

/* Bytes the permessage-deflate state holds now: zlib streams and windows
 * both ways, compression output and inflate buffers. 0 without pmd. */
WSUV_EXTERN size_t wsuv_conn_pmd_memory(const wsuv_conn_t *c);

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
