/* wsuv.h: the public C API of the wsuv protocol core (RFC 6455, sans-IO).
 *
 * The core takes bytes in and hands events out, by pull: one call consumes
 * input and returns at most one event, and the caller loops. It owns no
 * sockets, clocks or threads and has no global state; every state struct is
 * allocated by the caller, and the only growth goes through a per-instance
 * allocator and is capped by a configured limit.
 *
 * Return convention (picohttpparser's): a count of bytes (>= 0), or a negative
 * WSUV_E* code. Negative codes sit in -30001.. so they never collide with
 * libuv's (-1..-4095), which the transport passes through unchanged.
 */
#ifndef WSUV_H
#define WSUV_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h> /* ssize_t */

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#  define WSUV_EXTERN __attribute__((visibility("default")))
#else
#  define WSUV_EXTERN
#endif

/* Errors: name, value, message, close code a connection fails with. */
#define WSUV_ERRNO_MAP(XX)                                                     \
  XX(EPROTO, -30001, "protocol violation", 1002)                               \
  XX(EUTF8, -30002, "invalid UTF-8 in text", 1007)                             \
  XX(ETOOBIG, -30003, "message exceeds limit", 1009)                           \
  XX(ENOMEM, -30004, "out of memory", 1011)                                    \
  XX(ECLOSED, -30005, "connection is closed", 1006)                            \
  XX(EHTTP, -30006, "malformed HTTP head", 1002)                               \
  XX(EHEADTOOBIG, -30007, "HTTP head exceeds limit", 1009)                     \
  XX(EHANDSHAKE, -30008, "handshake failed", 1002)                             \
  XX(ENOBUFS, -30009, "output buffer too small", 1011)                         \
  XX(EINVAL, -30010, "invalid argument", 1011)                                 \
  XX(ENOTUPGRADE, -30011, "not a WebSocket upgrade", 1002)                     \
  XX(EEXTENSION, -30012, "extension negotiation failed", 1010)                 \
  XX(EDEFLATE, -30013, "invalid compressed data", 1007)                        \
  XX(ESTATE, -30014, "not allowed in this state", 1011)                        \
  XX(EBUFFULL, -30015, "send buffer full", 1011)                               \
  XX(ETLS, -30016, "TLS failure", 1015)                                        \
  XX(EPROXY, -30017, "proxy refused the tunnel", 1006)

typedef enum {
#define WSUV_XX(name, val, msg, close) WSUV_##name = val,
  WSUV_ERRNO_MAP(WSUV_XX)
#undef WSUV_XX
} wsuv_errno_t;

/* "EPROTO" for WSUV_EPROTO; "UNKNOWN" for codes outside the map. Static. */
WSUV_EXTERN const char *wsuv_err_name(int err);
/* "protocol violation" for WSUV_EPROTO; "unknown error" otherwise. Static. */
WSUV_EXTERN const char *wsuv_strerror(int err);
/* The close code a connection that hit err fails with (1002 for EPROTO,
 * 1007 for EUTF8, 1009 for ETOOBIG, ...); 1011 for unknown codes. */
WSUV_EXTERN int wsuv_err_close_code(int err);

/* Allocation. One function, as lua_Alloc: ptr NULL allocates, nsize 0 frees
 * (and returns NULL), otherwise reallocates. A NULL fn means libc. */
typedef void *(*wsuv_alloc_cb)(void *ud, void *ptr, size_t nsize);
typedef struct {
  wsuv_alloc_cb fn; /* NULL: malloc/realloc/free */
  void *ud;         /* passed to fn */
} wsuv_allocator_t;

#define WSUV_DEFAULT_MAX_MESSAGE (16u * 1024u * 1024u)
#define WSUV_DEFAULT_MAX_HEAD    8192u
#define WSUV_DEFAULT_MAX_HEADERS 64u
#define WSUV_MAX_FRAME_HEADER    14u  /* 2 + 8 length + 4 mask */
#define WSUV_MAX_CONTROL_PAYLOAD 125u /* RFC 6455 5.5 */

/* Opcodes (RFC 6455 5.2). */
enum {
  WSUV_OP_CONT = 0x0,
  WSUV_OP_TEXT = 0x1,
  WSUV_OP_BINARY = 0x2,
  WSUV_OP_CLOSE = 0x8,
  WSUV_OP_PING = 0x9,
  WSUV_OP_PONG = 0xA
};

/* First-byte flag bits. */
enum { WSUV_FIN = 0x80, WSUV_RSV1 = 0x40, WSUV_RSV2 = 0x20, WSUV_RSV3 = 0x10 };

typedef enum { WSUV_ROLE_CLIENT = 0, WSUV_ROLE_SERVER = 1 } wsuv_role_t;

/* ---- Masking (ws_mask.c) ---------------------------------------------- */

/* XORs len bytes of buf in place with key, starting at key position offset
 * (0..3), so a payload can be unmasked in pieces. Returns the key position
 * after the last byte ((offset + len) & 3). wsuv_mask uses the fastest path
 * the build has; wsuv_mask_scalar is its plain twin, byte by byte. */
WSUV_EXTERN size_t wsuv_mask(uint8_t *buf, size_t len, const uint8_t key[4],
                             size_t offset);
WSUV_EXTERN size_t wsuv_mask_scalar(uint8_t *buf, size_t len,
                                    const uint8_t key[4], size_t offset);
/* As wsuv_mask, but reads src and writes dst (which may not overlap). */
WSUV_EXTERN size_t wsuv_mask_copy(uint8_t *dst, const uint8_t *src, size_t len,
                                  const uint8_t key[4], size_t offset);

/* ---- UTF-8 (ws_utf8.c) ------------------------------------------------- */

/* Incremental validator: carries state across chunks (fragments). */
typedef struct {
  uint32_t state; /* 0: at a code point boundary; see ws_utf8.c */
} wsuv_utf8_t;

WSUV_EXTERN void wsuv_utf8_init(wsuv_utf8_t *v);
/* Feeds n bytes. Returns 0 while the input so far is a prefix of valid UTF-8,
 * WSUV_EUTF8 as soon as it cannot be (overlongs, surrogates, > U+10FFFF, bad
 * continuation). After an error the validator stays failed. The _scalar twin
 * has no ASCII fast path; both must agree on every input. */
WSUV_EXTERN int wsuv_utf8_feed(wsuv_utf8_t *v, const uint8_t *p, size_t n);
WSUV_EXTERN int wsuv_utf8_feed_scalar(wsuv_utf8_t *v, const uint8_t *p,
                                      size_t n);
/* Nonzero when everything fed so far is complete, valid UTF-8. */
WSUV_EXTERN int wsuv_utf8_complete(const wsuv_utf8_t *v);
/* Whole-string check: nonzero when p[0..n) is valid UTF-8. */
WSUV_EXTERN int wsuv_utf8_valid(const uint8_t *p, size_t n);

/* ---- Frames (ws_frame.c) ----------------------------------------------- */

typedef struct {
  uint8_t fin;          /* 1 for the last frame of a message */
  uint8_t rsv;          /* RSV1..3 bits as in the first byte (0x70 mask) */
  uint8_t opcode;       /* WSUV_OP_* or a reserved value */
  uint8_t masked;       /* MASK bit */
  uint8_t mask[4];      /* masking key when masked */
  uint64_t payload_len; /* decoded 7/16/64-bit length */
} wsuv_frame_header_t;

/* Decodes one frame header from buf without validating its meaning.
 * Returns the header length (2..14) and fills *h; 0 when more bytes are
 * needed; WSUV_EPROTO when a 64-bit length has its top bit set. */
WSUV_EXTERN ssize_t wsuv_frame_parse_header(const uint8_t *buf, size_t len,
                                            wsuv_frame_header_t *h);

/* Writes a frame header into out (at least WSUV_MAX_FRAME_HEADER bytes):
 * flags is WSUV_FIN and/or WSUV_RSV*, the shortest length encoding is used,
 * and mask (4 bytes) is appended when not NULL. Returns its length. The
 * payload is not touched: a client masks it with wsuv_mask(_copy). */
WSUV_EXTERN size_t wsuv_frame_build_header(uint8_t *out, unsigned flags,
                                           unsigned opcode, uint64_t len,
                                           const uint8_t *mask);

/* ---- Close payloads (ws_close.c) --------------------------------------- */

/* Whether code may appear in a close frame on the wire (RFC 6455 7.4 and the
 * IANA registry): 1000-1003, 1007-1014, 3000-4999. */
WSUV_EXTERN int wsuv_close_code_valid(int code);
/* Parses a received close payload. Empty: *code = 1005, empty reason.
 * Returns 0; WSUV_EPROTO for a 1-byte payload, a payload over 125 bytes or a
 * code not valid on the wire; WSUV_EUTF8 for a reason that is not UTF-8.
 * *reason points into p. */
WSUV_EXTERN int wsuv_close_parse(const uint8_t *p, size_t n, int *code,
                                 const uint8_t **reason, size_t *reason_len);
/* Builds a close payload into out (at least 125 bytes). code 0 or 1005 gives
 * an empty payload (reason must then be empty). Returns the payload length;
 * WSUV_EINVAL for a code not valid on the wire, a reason over 123 bytes, or a
 * reason that is not UTF-8. */
WSUV_EXTERN ssize_t wsuv_close_build(uint8_t *out, int code, const char *reason,
                                     size_t reason_len);

/* ---- Message parser (ws_frame.c) --------------------------------------- */

typedef struct {
  wsuv_role_t role; /* SERVER: input must be masked; CLIENT: must not */
  /* 0: WSUV_DEFAULT_MAX_MESSAGE; over it: ETOOBIG. A compressed message
   * (RSV1 allowed and set) may take max_message / 8 + 64 bytes more on the
   * wire, what deflate may add to incompressible data: its inflated size is
   * the caller's to limit. */
  uint64_t max_message;
  uint64_t max_frame;   /* 0: the wire limit of a message */
  unsigned rsv_allowed; /* RSV bits an extension allows on a message's first
                           frame (WSUV_RSV1 for permessage-deflate) */
  int stream;           /* nonzero: deliver data in chunks as they arrive */
  wsuv_allocator_t alloc;
} wsuv_parser_config_t;

typedef enum {
  WSUV_EV_NONE = 0, /* more input needed */
  WSUV_EV_TEXT,     /* data: a whole message, or a chunk when streaming */
  WSUV_EV_BINARY,
  WSUV_EV_PING, /* data: the ping payload (<= 125 bytes) */
  WSUV_EV_PONG,
  WSUV_EV_CLOSE /* close_code and data/len = reason (already checked) */
} wsuv_event_type_t;

typedef struct {
  wsuv_event_type_t type;
  const uint8_t *data; /* into the fed buffer or the parser's own storage;
                          valid until the next call on the parser */
  size_t len;
  uint8_t first;      /* first chunk of a message (always 1 unstreamed) */
  uint8_t fin;        /* last chunk of a message (always 1 unstreamed) */
  uint8_t compressed; /* RSV1 was set on the message's first frame; the
                         payload is not UTF-8 checked then */
  int close_code;     /* for WSUV_EV_CLOSE; and after an error, the code
                         to fail the connection with */
} wsuv_event_t;

typedef struct wsuv_parser_s wsuv_parser_t;

/* Parser state. Caller-allocated; fields are private. */
struct wsuv_parser_s {
  wsuv_parser_config_t cfg;
  int state; /* private */
  int err;   /* sticky error once failed */
  uint8_t hdr[WSUV_MAX_FRAME_HEADER];
  uint8_t hdr_len;
  wsuv_frame_header_t frame; /* frame being read */
  uint64_t frame_left;       /* payload bytes of it not yet read */
  size_t mask_pos;
  uint8_t msg_opcode; /* TEXT/BINARY of the message in progress, or 0 */
  uint8_t msg_compressed;
  uint8_t msg_first_sent; /* streaming: first chunk already delivered */
  uint64_t msg_len;       /* bytes of the message so far */
  wsuv_utf8_t utf8;
  uint8_t *buf; /* reassembly storage (via cfg.alloc) */
  size_t buf_len, buf_cap;
  uint8_t *ctrl; /* a control payload split across inputs is gathered
                   here (WSUV_MAX_CONTROL_PAYLOAD bytes, allocated on the
                   first split one, released by trim) */
  size_t ctrl_len;
};

/* Initialises p with cfg (copied; zero fields get defaults). */
WSUV_EXTERN void wsuv_parser_init(wsuv_parser_t *p,
                                  const wsuv_parser_config_t *cfg);
/* Frees reassembly storage. p may be re-initialised afterwards. */
WSUV_EXTERN void wsuv_parser_free(wsuv_parser_t *p);
/* Frees the reassembly storage, which is otherwise kept from one message to
 * the next (up to max_message), unless a message is being reassembled.
 * Call it on idle connections; event data from the last call is invalid
 * afterwards. */
WSUV_EXTERN void wsuv_parser_trim(wsuv_parser_t *p);
/* Consumes up to len bytes of buf. Unmasks payload in place, so buf is not
 * const. Returns the number of bytes consumed (>= 0) and sets *ev (ev->type
 * is WSUV_EV_NONE when all input was consumed and more is needed), or a
 * negative WSUV_E* code after which the connection must be failed with
 * ev->close_code; the parser then stays failed. Payload pointers in *ev stay
 * valid until the next call. */
WSUV_EXTERN ssize_t wsuv_parser_feed(wsuv_parser_t *p, uint8_t *buf, size_t len,
                                     wsuv_event_t *ev);

/* ---- HTTP heads and the opening handshake (ws_handshake.c) -------------- */

typedef struct {
  const char *name; /* as received; compare case-insensitively */
  size_t name_len;
  const char *value; /* leading and trailing whitespace trimmed */
  size_t value_len;
} wsuv_header_t;

typedef struct {
  const char *method; /* request only */
  size_t method_len;
  const char *target; /* request only: request-target, path and query */
  size_t target_len;
  int version_minor;  /* 1 for HTTP/1.1 */
  int status;         /* response only */
  const char *reason; /* response only */
  size_t reason_len;
  wsuv_header_t *headers; /* in: caller's array; repeated headers kept */
  size_t num_headers;     /* in: its capacity; out: how many were parsed */
} wsuv_http_head_t;

/* Parse an HTTP/1.x request or response head. All pointers point into buf.
 * Returns the head length including the blank line (> 0) when complete; 0
 * when incomplete and len < max_head (0: WSUV_DEFAULT_MAX_HEAD);
 * WSUV_EHEADTOOBIG when no head ends within max_head bytes or there are more
 * headers than capacity; WSUV_EHTTP when malformed. */
WSUV_EXTERN ssize_t wsuv_http_parse_request(const char *buf, size_t len,
                                            size_t max_head,
                                            wsuv_http_head_t *h);
WSUV_EXTERN ssize_t wsuv_http_parse_response(const char *buf, size_t len,
                                             size_t max_head,
                                             wsuv_http_head_t *h);

/* Index of the first header named name (case-insensitive) at or after start,
 * or -1. */
WSUV_EXTERN int wsuv_http_find(const wsuv_http_head_t *h, const char *name,
                               size_t start);
/* Nonzero when some header named name holds token in its comma-separated
 * list (case-insensitive), across repeated headers. */
WSUV_EXTERN int wsuv_http_has_token(const wsuv_http_head_t *h, const char *name,
                                    const char *token);
/* Iterates a comma-separated list: sets *tok and *tok_len to the next non-empty
 * element with whitespace trimmed and advances *cur. Returns 1 when it set a
 * token, 0 at end. */
WSUV_EXTERN int wsuv_token_next(const char **cur, const char *end,
                                const char **tok, size_t *tok_len);

/* Sec-WebSocket-Accept for key: base64(SHA-1(key + GUID)), 28 characters
 * and a NUL written to out (at least 29 bytes). Returns 0, or WSUV_EINVAL. */
WSUV_EXTERN int wsuv_accept_key(const char *key, size_t key_len, char *out);
/* Sec-WebSocket-Key from 16 random bytes (the caller draws them from a
 * strong source): 24 characters and a NUL written to out (>= 25 bytes). */
WSUV_EXTERN void wsuv_handshake_key(const uint8_t nonce[16], char *out);

/* Checks a parsed request against RFC 6455 4.2.1. Returns 0 for a valid
 * upgrade and points *key at Sec-WebSocket-Key; WSUV_ENOTUPGRADE for a plain
 * HTTP request (no "Upgrade: websocket"); otherwise the HTTP status to refuse
 * with: 400 (bad method, version, Host, Connection, key) or 426 (a
 * Sec-WebSocket-Version other than 13). *why, when not NULL, is set to a
 * static explanation on failure. */
WSUV_EXTERN int wsuv_handshake_check_request(const wsuv_http_head_t *req,
                                             const char **key, size_t *key_len,
                                             const char **why);

/* Builds a 101 response for key: Upgrade, Connection, Sec-WebSocket-Accept,
 * and Sec-WebSocket-Protocol / -Extensions when not NULL, then extra headers.
 * Returns its length, or WSUV_ENOBUFS when cap is too small, WSUV_EINVAL for
 * a bad key or a header value containing CR or LF. */
WSUV_EXTERN ssize_t wsuv_handshake_build_response(
    char *out, size_t cap, const char *key, size_t key_len,
    const char *protocol, const char *extensions, const wsuv_header_t *extra,
    size_t num_extra);

/* Builds a plain HTTP/1.1 response with the standard reason phrase,
 * Content-Length and "Connection: close" (and "Sec-WebSocket-Version: 13"
 * for 426), then extra headers and body. Returns its length, WSUV_ENOBUFS,
 * or WSUV_EINVAL. */
WSUV_EXTERN ssize_t wsuv_http_build_response(char *out, size_t cap, int status,
                                             const wsuv_header_t *extra,
                                             size_t num_extra, const char *body,
                                             size_t body_len);

typedef struct {
  const char *host;             /* Host header value: "example.com:8080" */
  const char *target;           /* "/chat?room=1" */
  const char *origin;           /* or NULL */
  const char *protocols;        /* comma-separated, or NULL */
  const char *extensions;       /* Sec-WebSocket-Extensions offer, or NULL */
  const wsuv_header_t *headers; /* extra headers */
  size_t num_headers;
} wsuv_client_request_t;

/* Builds the client's GET request with key (from wsuv_handshake_key).
 * Returns its length, WSUV_ENOBUFS, or WSUV_EINVAL (CR/LF in a value). */
WSUV_EXTERN ssize_t wsuv_handshake_build_request(char *out, size_t cap,
                                                 const wsuv_client_request_t *r,
                                                 const char *key);

/* Checks the server's response: status 101, "Upgrade: websocket",
 * "Connection: upgrade", Sec-WebSocket-Accept matching key, a
 * Sec-WebSocket-Protocol that is one of offered_protocols (or none), and
 * extensions whose names are all in offered_extensions. Returns 0, or
 * WSUV_EHANDSHAKE with *why (when not NULL) set to a static explanation. */
WSUV_EXTERN int wsuv_handshake_check_response(const wsuv_http_head_t *res,
                                              const char *key,
                                              const char *offered_protocols,
                                              const char *offered_extensions,
                                              const char **why);

/* ---- permessage-deflate (ws_deflate.c, RFC 7692) ------------------------ */

/* What both sides agreed on in the opening handshake (RFC 7692 7.1). Window
 * bits are 8..15 (15 when the parameter was absent). */
typedef struct {
  uint8_t server_no_context_takeover; /* the server resets after each message */
  uint8_t client_no_context_takeover; /* the client resets after each message */
  uint8_t server_max_window_bits;     /* LZ77 window of what the server sends */
  uint8_t client_max_window_bits;     /* LZ77 window of what the client sends */
} wsuv_pmd_params_t;

#define WSUV_PMD_DEFAULT_LEVEL     1 /* zlib level: fastest, see ws_deflate.c */
#define WSUV_PMD_DEFAULT_MEM_LEVEL 8 /* zlib's default */
#define WSUV_PMD_DEFAULT_THRESHOLD 32u /* bytes; see ws_deflate.c */

/* What we offer (client) or accept (server), and how we compress. Zero
 * fields take defaults, so a zeroed struct with enabled = 1 means "plain
 * permessage-deflate". Window bits are 0 (no limit: 15) or 8..15. */
typedef struct {
  int enabled;                        /* 0: never negotiate the extension */
  uint8_t server_no_context_takeover; /* ask for / impose a server reset */
  uint8_t client_no_context_takeover; /* ask for / impose a client reset */
  uint8_t server_max_window_bits;     /* client: ask the server to stay under
                                         it; server: our own limit */
  uint8_t client_max_window_bits;     /* client: our own limit (offered with
                                         the value); server: limit imposed on
                                         a client that offers the parameter */
  int level;                          /* 1..9; 0: WSUV_PMD_DEFAULT_LEVEL */
  int mem_level;                      /* 1..9; 0: WSUV_PMD_DEFAULT_MEM_LEVEL */
  size_t threshold; /* messages shorter than this are sent plain;
                       0: WSUV_PMD_DEFAULT_THRESHOLD (1: compress all) */
} wsuv_pmd_options_t;

/* Room for any response or offer wsuv_pmd_negotiate/wsuv_pmd_offer write,
 * with its NUL: all four parameters with values come to 128 characters. */
#define WSUV_PMD_EXT_MAX 160

/* Server side. Reads every Sec-WebSocket-Extensions header of req, skips
 * other extensions and permessage-deflate offers with unknown, duplicate or
 * malformed parameters (RFC 7692 5 and 7.1), and accepts the first offer it
 * can honour under opt. On acceptance fills *agreed and writes the response
 * header value, NUL-terminated, into response_ext (cap bytes;
 * WSUV_PMD_EXT_MAX always suffices), e.g. "permessage-deflate;
 * client_max_window_bits=10". Returns 1 when accepted, 0 when declined
 * (response_ext is then ""; send no extension header), WSUV_ENOBUFS when cap is
 * too small, WSUV_EINVAL for options out of range. */
WSUV_EXTERN int wsuv_pmd_negotiate(const wsuv_http_head_t *req,
                                   const wsuv_pmd_options_t *opt,
                                   wsuv_pmd_params_t *agreed,
                                   char *response_ext, size_t cap);

/* Client side. Writes the offer for opt, NUL-terminated, into out (cap
 * bytes; WSUV_PMD_EXT_MAX always suffices), always with client_max_window_bits
 * so that the server may limit our window. Returns its length (0 and "" when
 * opt->enabled is 0), WSUV_ENOBUFS or WSUV_EINVAL. */
WSUV_EXTERN ssize_t wsuv_pmd_offer(const wsuv_pmd_options_t *opt, char *out,
                                   size_t cap);

/* Client side: checks the server's Sec-WebSocket-Extensions against the
 * offer made from opt (RFC 7692 7.1). Returns 1 with *agreed filled when the
 * server accepted, 0 when it sent no extension, or WSUV_EEXTENSION with *why
 * (when not NULL) set to a static explanation: an unknown extension,
 * permessage-deflate twice or when not offered, an unknown, duplicate or
 * malformed parameter, window bits out of range or above the offer, or
 * client_max_window_bits when it was not offered. The connection must then
 * be failed (close code 1010). */
WSUV_EXTERN int wsuv_pmd_accept_response(const wsuv_http_head_t *res,
                                         const wsuv_pmd_options_t *opt,
                                         wsuv_pmd_params_t *agreed,
                                         const char **why);

/* zlib memory accounting, shared by both stream kinds. Private. */
typedef struct {
  wsuv_allocator_t alloc;
  size_t mem; /* bytes held now: zlib's state and window, our stream */
  size_t cap; /* allocations beyond this fail (Z_MEM_ERROR -> ENOMEM) */
} wsuv_zmem_t;

/* Compressor for the messages one side sends. Caller-allocated; the zlib
 * stream is allocated on first use, through alloc. */
typedef struct {
  wsuv_zmem_t zm;
  void *z;      /* private: zlib stream, or NULL */
  uint8_t *out; /* output storage (via alloc), owned by the context */
  size_t out_cap;
  int level; /* zlib level */
  uint8_t mem_level;
  uint8_t window_bits; /* as agreed (8..15); zlib is given 9 for 8 */
  uint8_t no_context_takeover;
  uint8_t in_message; /* a message was started and not finished */
} wsuv_deflate_t;

/* Sets d up for the messages role sends under agreed (the server_* or the
 * client_* half), with opt's level and mem_level (opt may be NULL). Does not
 * allocate. Returns 0 or WSUV_EINVAL for parameters out of range. */
WSUV_EXTERN int wsuv_deflate_init(wsuv_deflate_t *d, wsuv_role_t role,
                                  const wsuv_pmd_params_t *agreed,
                                  const wsuv_pmd_options_t *opt,
                                  const wsuv_allocator_t *alloc);
/* Frees the stream and the output storage. d may be re-initialised. */
WSUV_EXTERN void wsuv_deflate_free(wsuv_deflate_t *d);
/* Compresses n bytes of in, the next part of the message being sent (the
 * first call starts a message; fin ends it), with a sync flush so that the
 * peer can inflate every part as it arrives. At fin the trailing 00 00 ff ff
 * is removed (RFC 7692 7.2.1), and an empty result becomes the single byte
 * 00 (7.2.3.6); then the stream is reset when our side agreed to no context
 * takeover (it keeps its memory; see wsuv_deflate_trim). Sets *out to the
 * payload, in storage owned by d that stays valid until the next call on d.
 * Returns its length (0 for a non-final empty part), WSUV_ENOMEM, or
 * WSUV_EINVAL when n is too large to bound. After an error the stream is reset
 * and the message must be abandoned (the connection failed). */
WSUV_EXTERN ssize_t wsuv_deflate_compress(wsuv_deflate_t *d, const uint8_t *in,
                                          size_t n, int fin,
                                          const uint8_t **out);
/* Frees the output storage (invalidating the last *out), and the zlib
 * stream too when it carries nothing to the next message (no context
 * takeover, no message in progress). For connections gone idle. */
WSUV_EXTERN void wsuv_deflate_trim(wsuv_deflate_t *d);
/* Bytes of zlib state and window d holds now (counted through alloc; the
 * output storage, d->out_cap bytes, is not included). 0 before first use. */
WSUV_EXTERN size_t wsuv_deflate_memory(const wsuv_deflate_t *d);

/* Decompressor for the messages the peer sends: bounded and pull-style. */
typedef struct {
  wsuv_zmem_t zm;
  void *z; /* private: zlib stream and input state, or NULL */
  uint8_t window_bits;
  uint8_t no_context_takeover;
} wsuv_inflate_t;

/* Sets z up for the messages the peer of role sends under agreed. Does not
 * allocate. Returns 0 or WSUV_EINVAL. */
WSUV_EXTERN int wsuv_inflate_init(wsuv_inflate_t *z, wsuv_role_t role,
                                  const wsuv_pmd_params_t *agreed,
                                  const wsuv_allocator_t *alloc);
WSUV_EXTERN void wsuv_inflate_free(wsuv_inflate_t *z);
/* Hands z the next n compressed bytes of the current message (the first
 * call starts one; fin marks its last part). z reads them in place: in must
 * stay valid and unchanged until wsuv_inflate_pull has returned 0. Returns 0;
 * WSUV_ESTATE while earlier input is not used up; WSUV_ENOMEM. */
WSUV_EXTERN int wsuv_inflate_feed(wsuv_inflate_t *z, const uint8_t *in,
                                  size_t n, int fin);
/* Inflates into out, at most cap (> 0) bytes. Returns the number written
 * (> 0: call again), or 0 once the input fed so far is used up: after fin
 * that means the message is complete (00 00 ff ff appended, RFC 7692 7.2.2),
 * and the stream is reset or freed when the peer agreed to no context
 * takeover. WSUV_EDEFLATE for corrupt data (close 1007), WSUV_ENOMEM. zlib's
 * own memory is bounded by the window, and output never exceeds cap, so a
 * caller that stops pulling at its limit allocates nothing beyond it. */
WSUV_EXTERN ssize_t wsuv_inflate_pull(wsuv_inflate_t *z, uint8_t *out,
                                      size_t cap);
/* Nonzero while the input fed so far may still give output or, after fin,
 * has not completed the message: pull again. 0 once it is used up. */
WSUV_EXTERN int wsuv_inflate_busy(const wsuv_inflate_t *z);
/* Bytes of zlib state and window z holds now (0 while idle when freed). */
WSUV_EXTERN size_t wsuv_inflate_memory(const wsuv_inflate_t *z);

#ifdef __cplusplus
}
#endif
#endif /* WSUV_H */
