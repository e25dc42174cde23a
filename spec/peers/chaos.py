#!/usr/bin/python3
"""Randomised soak of an echo server (stdlib only, raw sockets).

  /usr/bin/python3 chaos.py --port N [--seconds S] [--workers W] [--seed X]
      [--max-message N] [--rounds R] [--only NAME,...] [--tls] [--deflate]

Targets spec/peers/chaos_server.lua on 127.0.0.1 (over wss:// with --tls;
with --deflate, permessage-deflate must be agreed, most messages are sent
compressed, and four compression errors join the violations). W threads run sessions
back to back for S seconds per round; each session picks one behaviour:

  good       messages of random kind and size (up to max-message), split
             into random fragments with pings between them, written in
             random slices and pipelined; every echo and pong is checked
             byte for byte and in order; ends with a close handshake (1000),
             or by dropping the socket
  violation  zero to three good messages, then one protocol error (bad
             mask bit, RSV, opcode, control frame, fragmentation, UTF-8,
             close payload, a message over max-message): the echoes of the
             good messages come first, then a close frame with the code
             RFC 6455 requires (1002, 1007, 1009), then TCP end
  abrupt     the socket is closed or reset mid-request, mid-frame,
             mid-message, or right after a close frame (with --tls also
             in, or instead of, the TLS handshake)
  slow       up to 200 messages written without reading, then read back:
             none may be lost or reordered
  http       garbage, a plain GET and an oversized head get 400, 404 and
             431 (then TCP end)

Between rounds and at the end, GET /stats must show no connection left and
the server's Lua heap (after a full collection) back near where it was after
the first round; RSS is reported. Output is TAP, one line per behaviour per
round, one per heap check; exit status 0 iff all pass. A seed makes each
worker's choices repeatable (thread timing is not).
"""
import argparse
import base64
import hashlib
import random
import socket
import ssl
import struct
import sys
import threading
import time
import zlib

TIMEOUT = 10.0

# The frame codec is the conformance suite's (conformance.py, next to this
# file); no __pycache__ in the tree.
sys.dont_write_bytecode = True
from conformance import BIN, CLOSE, CONT, GUID, PING, PONG, TEXT, close_payload, frame  # noqa: E402


TAIL = b"\x00\x00\xff\xff"  # RFC 7692: the end of a sync flush, not sent
ARGS = None  # the command line: --tls and --deflate apply to every Conn


class Fail(Exception):
    pass


def random_text(rng, nbytes):
    """Valid UTF-8 of about nbytes bytes, ASCII and 2, 3, 4-byte chars."""
    parts, size = [], 0
    while size < nbytes:
        r = rng.random()
        if r < 0.7:
            c = chr(rng.randint(0x20, 0x7E))
        elif r < 0.85:
            c = chr(rng.randint(0x80, 0x7FF))
        elif r < 0.95:
            c = chr(rng.choice([rng.randint(0x800, 0xD7FF), rng.randint(0xE000, 0xFFFD)]))
        else:
            c = chr(rng.randint(0x10000, 0x10FFFF))
        b = c.encode("utf-8")
        parts.append(b)
        size += len(b)
    return b"".join(parts)


def random_size(rng, max_message):
    r = rng.random()
    if r < 0.05:
        return 0
    if r < 0.55:
        return rng.randint(1, 125)
    if r < 0.9:
        return rng.randint(126, min(65535, max_message))
    return rng.randint(min(65536, max_message), max_message)


def connect(port):
    """A TCP socket to the server, wrapped in TLS with --tls (the server's
    certificate is not checked: it is a throw-away one)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if ARGS.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        sock = ctx.wrap_socket(sock)
    return sock


class Conn:
    def __init__(self, port, rng):
        self.rng = rng
        self.sock = connect(port)
        self.buf = b""
        self.pmd = False  # permessage-deflate agreed

    def send(self, data, slices=True):
        """Writes data, in random slices when slices is set."""
        if not slices or self.rng.random() < 0.5:
            self.sock.sendall(data)
            return
        i = 0
        while i < len(data):
            n = self.rng.choice([1, 2, 3, 7, 64, 1000, 4096, 65536])
            self.sock.sendall(data[i:i + n])
            i += n
            if self.rng.random() < 0.02:
                time.sleep(0.001)

    def read_some(self):
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise Fail("timed out waiting for the server")
        except ConnectionResetError:
            raise Fail("connection reset by the server")
        except ssl.SSLEOFError:
            chunk = b""  # TCP end without close_notify
        if not chunk:
            raise EOFError()
        self.buf += chunk

    def read_exact(self, n):
        while len(self.buf) < n:
            self.read_some()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def handshake(self, path="/"):
        key = base64.b64encode(self.rng.randbytes(16))
        req = (b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n")
        if ARGS.deflate:
            req += b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        self.send(req + b"\r\n")
        head = self.read_head()
        if not head.startswith(b"HTTP/1.1 101"):
            raise Fail("handshake answered " + repr(head[:40]))
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        if b"sec-websocket-accept: " + accept.lower() not in head.lower():
            raise Fail("wrong Sec-WebSocket-Accept")
        if ARGS.deflate:
            ext = [line.split(b":", 1)[1].strip() for line in head.lower().split(b"\r\n")
                   if line.startswith(b"sec-websocket-extensions:")]
            if not ext or not ext[0].startswith(b"permessage-deflate"):
                raise Fail("permessage-deflate not agreed: %r" % ext)
            params = dict((p.split(b"=") + [b""])[:2] for p in
                          (x.strip() for x in ext[0].split(b";")[1:]))
            self.pmd = True
            self.reset_out = b"client_no_context_takeover" in params
            self.bits = int(params.get(b"client_max_window_bits") or 15)
            self.deflater = zlib.compressobj(wbits=-self.bits)
            self.inflater = zlib.decompressobj(wbits=-15)

    def compress(self, payload):
        """payload as the body of a compressed message (RSV1)."""
        if self.reset_out:
            self.deflater = zlib.compressobj(wbits=-self.bits)
        z = self.deflater.compress(payload) + self.deflater.flush(zlib.Z_SYNC_FLUSH)
        return z[:-4] if z.endswith(TAIL) else z

    def read_head(self):
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 65536:
                raise Fail("response head too long")
            self.read_some()
        i = self.buf.index(b"\r\n\r\n") + 4
        head, self.buf = self.buf[:i], self.buf[i:]
        return head

    def read_frame(self):
        """fin, opcode, payload, compressed (RSV1, where permessage-deflate
        allows it: the first frame of a data message)."""
        b0, b1 = self.read_exact(2)
        if b1 & 0x80:
            raise Fail("server frame is masked")
        opcode = b0 & 0x0F
        rsv1 = bool(b0 & 0x40) and self.pmd and opcode in (TEXT, BIN)
        if b0 & (0x30 if rsv1 else 0x70):
            raise Fail("server frame has RSV bits")
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self.read_exact(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.read_exact(8))[0]
        return bool(b0 & 0x80), opcode, self.read_exact(n), rsv1

    def read_message(self, pongs):
        """The next data message (opcode, payload), or ("close", code); pongs
        received on the way are appended to pongs."""
        parts, op, compressed = [], None, False
        while True:
            fin, opcode, payload, rsv1 = self.read_frame()
            if opcode == PONG:
                pongs.append(payload)
                continue
            if opcode == PING:
                self.send(frame(PONG, payload), slices=False)
                continue
            if opcode == CLOSE:
                if len(payload) == 1:
                    raise Fail("server close payload of 1 byte")
                code = struct.unpack("!H", payload[:2])[0] if payload else 1005
                return "close", code
            if op is None:
                if opcode == CONT:
                    raise Fail("server continuation without a message")
                op, compressed = opcode, rsv1
            elif opcode != CONT:
                raise Fail("server interleaved a new message")
            parts.append(payload)
            if fin:
                data = b"".join(parts)
                if compressed:
                    try:
                        data = self.inflater.decompress(data + TAIL)
                    except zlib.error as e:
                        raise Fail("server's compressed message does not inflate: %s" % e)
                return op, data

    def expect_end(self):
        """TCP end (EOF or reset) within TIMEOUT, ignoring any bytes."""
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            try:
                if not self.sock.recv(65536):
                    return
            except (ConnectionResetError, ssl.SSLError):
                return
            except socket.timeout:
                break
        raise Fail("server did not close TCP")

    def abort(self, reset=False):
        if reset:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def message_frames(conn, rng, op, payload, pings):
    """The frames of one message, fragmented at random, with pings (whose
    payloads are appended to pings) between fragments; compressed most of
    the time where permessage-deflate was agreed."""
    rsv = 0
    if conn.pmd and rng.random() < 0.8:
        payload, rsv = conn.compress(payload), 4
    cuts = sorted(rng.randint(0, len(payload)) for _ in range(rng.choice([0, 0, 1, 2, 5])))
    pieces, prev = [], 0
    for c in cuts + [len(payload)]:
        pieces.append(payload[prev:c])
        prev = c
    out = []
    for i, piece in enumerate(pieces):
        out.append(frame(op if i == 0 else CONT, piece, fin=i == len(pieces) - 1,
                         rsv=rsv if i == 0 else 0))
        if rng.random() < 0.15:
            p = rng.randbytes(rng.randint(0, 125))
            pings.append(p)
            out.append(frame(PING, p))
    return b"".join(out)


def exchange(conn, rng, count, max_message):
    """Sends count good messages, pipelined, and checks the echoes."""
    sent_left = count
    pending, pings, pongs = [], [], []
    while sent_left or pending:
        window = rng.randint(1, 5)
        while sent_left and len(pending) < window:
            size = random_size(rng, max_message)
            if rng.random() < 0.5:
                op, payload = TEXT, random_text(rng, size)[:max_message]
                while True:  # trimmed mid-character: drop bytes until valid
                    try:
                        payload.decode("utf-8")
                        break
                    except UnicodeDecodeError:
                        payload = payload[:-1]
            else:
                op, payload = BIN, rng.randbytes(size)
            conn.send(message_frames(conn, rng, op, payload, pings))
            pending.append((op, payload))
            sent_left -= 1
        op, payload = pending.pop(0)
        got = conn.read_message(pongs)
        if got[0] == "close":
            raise Fail("server closed with %d instead of echoing" % got[1])
        if got != (op, payload):
            raise Fail("echo differs: sent op %d %d bytes, got op %d %d bytes"
                       % (op, len(payload), got[0], len(got[1])))
    # Pongs answer pings in order; the last ones may still be on the way.
    while len(pongs) < len(pings):
        fin, opcode, payload, _ = conn.read_frame()
        if opcode != PONG:
            raise Fail("expected a pong, got opcode %d" % opcode)
        pongs.append(payload)
    if pongs != pings:
        raise Fail("pongs differ from the pings")


def s_good(port, rng, max_message):
    c = Conn(port, rng)
    try:
        c.handshake()
        exchange(c, rng, rng.randint(1, 12), max_message)
        if rng.random() < 0.2:
            c.abort(reset=rng.random() < 0.5)
            return
        c.send(frame(CLOSE, close_payload(1000, b"bye")))
        got = c.read_message([])
        if got != ("close", 1000):
            raise Fail("close answered with %r" % (got,))
        c.expect_end()
    finally:
        c.sock.close()


def violations(conn, rng, max_message):
    """(name, a function making the bytes to send, accepted close codes).
    Only the chosen one is built: a compressed one advances the deflate
    context, which must hold only what the server was sent."""
    f = frame
    rsv_op = rng.choice([TEXT, BIN, PING])
    rsv_bad = [1, 2, 3, 5, 6, 7] if conn.pmd and rsv_op != PING else range(1, 8)
    bad_utf8 = rng.choice([b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xff", b"\xe2\x82"])
    ok_text = random_text(rng, rng.randint(0, 50))
    over = rng.randint(max_message + 1, max_message + 5000)
    half = max_message // 2
    return [
        ("unmasked frame", lambda: f(TEXT, b"hi", mask=False), [1002]),
        ("RSV bits", lambda: f(rsv_op, b"x", rsv=rng.choice(rsv_bad)), [1002]),
        ("reserved opcode", lambda: f(rng.choice([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]), b"x"),
         [1002]),
        ("ping over 125 bytes", lambda: f(PING, b"p" * rng.randint(126, 300)), [1002]),
        ("fragmented ping", lambda: f(PING, b"p", fin=False) + f(CONT, b"q"), [1002]),
        ("continuation first", lambda: f(CONT, b"x"), [1002]),
        ("new message inside one", lambda: f(TEXT, b"a", fin=False) + f(BIN, b"b"), [1002]),
        ("invalid UTF-8", lambda: f(TEXT, ok_text + bad_utf8), [1007]),
        ("invalid UTF-8 across fragments",
         lambda: f(TEXT, ok_text + bad_utf8[:1], fin=False) + f(CONT, bad_utf8[1:] + b"z"), [1007]),
        ("truncated UTF-8 at the end", lambda: f(TEXT, ok_text + b"\xe2\x82"), [1007]),
        ("close code not allowed",
         lambda: f(CLOSE, close_payload(rng.choice([0, 999, 1004, 1005, 1006, 1015, 1016, 2999,
                                                    5000]))),
         [1002]),
        ("close payload of 1 byte", lambda: f(CLOSE, b"\x03"), [1002]),
        ("close reason not UTF-8", lambda: f(CLOSE, close_payload(1000, bad_utf8)), [1007]),
        ("message over max_message", lambda: f(BIN, b"\0" * over), [1009]),
        ("fragments over max_message",
         lambda: f(BIN, b"\0" * half, fin=False) + f(CONT, b"\0" * (over - half)), [1009]),
        ("64-bit length with the top bit set",
         lambda: struct.pack("!BBQ", 0x82, 0xFF, 1 << 63) + b"\0\0\0\0", [1002, 1009]),
    ] + ([
        ("RSV1 on a continuation", lambda: f(TEXT, b"a", fin=False) + f(CONT, b"b", rsv=4),
         [1002]),
        ("compressed data that does not inflate", lambda: f(BIN, b"\xff\xff\xff\xff", rsv=4),
         [1007]),
        ("compressed text that inflates to invalid UTF-8",
         lambda: f(TEXT, conn.compress(ok_text + bad_utf8), rsv=4), [1007]),
        ("compressed message that inflates over max_message",
         lambda: f(BIN, conn.compress(b"\0" * over), rsv=4), [1009]),
    ] if conn.pmd else [])


def s_violation(port, rng, max_message):
    c = Conn(port, rng)
    name = "handshake"
    try:
        c.handshake()
        n = rng.randint(0, 3)
        if n:
            exchange(c, rng, n, max_message)
        name, make, codes = rng.choice(violations(c, rng, max_message))
        try:
            c.send(make())
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the server may fail the connection before reading all of it
        try:
            got = c.read_message([])
        except EOFError:
            raise Fail(name + ": TCP closed without a close frame")
        if got[0] != "close" or got[1] not in codes:
            raise Fail("%s: got %r, wanted close %s" % (name, got, codes))
        c.expect_end()
    except Fail as e:
        raise Fail(name + ": " + str(e)) if not str(e).startswith(name) else e
    finally:
        c.sock.close()


def s_abrupt(port, rng, max_message):
    where = rng.choice(["request", "header", "payload", "message", "close"]
                       + (["tls"] if ARGS.tls else []))
    reset = rng.random() < 0.5
    if where == "tls":  # a TLS record cut short, or bytes that are not TLS
        sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(100)
        sock.sendall(hello[:rng.randint(1, len(hello))] if rng.random() < 0.7
                     else rng.randbytes(rng.randint(1, 300)))
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        return
    c = Conn(port, rng)
    if where == "request":
        c.sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: webso"[:rng.randint(1, 40)])
        c.abort(reset)
        return
    c.handshake()
    payload = rng.randbytes(rng.randint(1, 3000))
    whole = frame(BIN, payload)
    if where == "header":
        c.sock.sendall(whole[:1])
    elif where == "payload":
        c.sock.sendall(whole[:rng.randint(2, len(whole) - 1)])
    elif where == "message":
        c.sock.sendall(whole)
    else:
        c.sock.sendall(frame(CLOSE, close_payload(1000)))
    if rng.random() < 0.5:
        time.sleep(0.002)
    c.abort(reset)


def s_slow(port, rng, max_message):
    c = Conn(port, rng)
    try:
        c.handshake()
        sent, total = [], 0
        while len(sent) < rng.randint(20, 200) and total < 200000:
            payload = rng.randbytes(rng.choice([0, 1, 30, 500, 4000]))
            c.sock.sendall(frame(BIN, payload))
            sent.append(payload)
            total += len(payload)
        time.sleep(rng.uniform(0.05, 0.3))
        for i, payload in enumerate(sent):
            got = c.read_message([])
            if got != (BIN, payload):
                raise Fail("slow reader: message %d of %d lost or changed" % (i + 1, len(sent)))
        c.send(frame(CLOSE, close_payload(1000)))
        if c.read_message([]) != ("close", 1000):
            raise Fail("slow reader: close not answered with 1000")
        c.expect_end()
    finally:
        c.sock.close()


def s_http(port, rng, max_message):
    c = Conn(port, rng)
    try:
        kind = rng.choice(["garbage", "get", "huge"])
        if kind == "garbage":
            sent = bytes(rng.randint(1, 255) for _ in range(rng.randint(1, 200))) + b"\r\n\r\n"
            want = b"HTTP/1.1 400"
        elif kind == "get":
            sent = b"GET /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            want = b"HTTP/1.1 404"
        else:
            sent = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n"
            want = b"HTTP/1.1 431"
        c.send(sent)
        try:
            head = c.read_head()
        except EOFError:
            raise Fail("http %s: closed without an answer (%d bytes sent: %s...)"
                       % (kind, len(sent), sent[:48].hex()))
        if not head.startswith(want):
            raise Fail("http %s: answered %r" % (kind, head[:30]))
        c.expect_end()
    finally:
        c.sock.close()


BEHAVIOURS = [("good", s_good, 4), ("violation", s_violation, 3), ("abrupt", s_abrupt, 2),
              ("slow", s_slow, 1), ("http", s_http, 1)]


def stats(port):
    s = connect(port)
    s.sendall(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
        if b"malloc_kb" in data and data.endswith(b"\n"):
            break
    s.close()
    body = data.split(b"\r\n\r\n", 1)[1].decode().split()
    return {body[i]: int(body[i + 1]) for i in range(0, len(body), 2)}


def settled(port):
    """Stats once every chaos connection has ended (or after TIMEOUT)."""
    deadline = time.time() + TIMEOUT
    while True:
        st = stats(port)
        if st["connections"] == 0 or time.time() > deadline:
            return st
        time.sleep(0.1)


def run_round(port, seconds, workers, seed, max_message, behaviours):
    counts = {name: [0, 0] for name, _, _ in behaviours}
    failures = {name: [] for name, _, _ in behaviours}
    lock = threading.Lock()
    deadline = time.time() + seconds
    weighted = [b for b in behaviours for _ in range(b[2])]

    def worker(i):
        rng = random.Random(seed * 1000 + i)
        while time.time() < deadline:
            name, fn, _ = rng.choice(weighted)
            try:
                fn(port, rng, max_message)
                ok, why = True, None
            except Fail as e:
                ok, why = False, str(e)
            except EOFError:
                ok, why = False, "server closed TCP unexpectedly"
            except OSError as e:
                ok, why = False, "socket error: %s" % e
            with lock:
                counts[name][0 if ok else 1] += 1
                if not ok and len(failures[name]) < 5:
                    failures[name].append(why)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counts, failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-message", type=int, default=65536)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--heap-slack-kb", type=int, default=256)
    ap.add_argument("--only", help="comma-separated behaviours to run (default: all)")
    ap.add_argument("--tls", action="store_true", help="wss:// (the server's --cert and --key)")
    ap.add_argument("--deflate", action="store_true",
                    help="offer permessage-deflate (the server's --compression on): fail without")
    a = ap.parse_args()
    global ARGS
    ARGS = a
    behaviours = [b for b in BEHAVIOURS if not a.only or b[0] in a.only.split(",")]
    n, bad = 0, 0
    base = stats(a.port)
    print("# before: %s" % base)
    first = None
    for r in range(1, a.rounds + 1):
        counts, failures = run_round(a.port, a.seconds, a.workers, a.seed + r, a.max_message,
                                     behaviours)
        for name, _, _ in behaviours:
            good, failed = counts[name]
            n += 1
            status = "ok" if failed == 0 and good > 0 else "not ok"
            bad += status == "not ok"
            print("%s %d - round %d: %s sessions, %d passed, %d failed"
                  % (status, n, r, name, good, failed))
            for why in failures[name]:
                print("#   %s" % why)
        st = settled(a.port)
        print("# after round %d: %s" % (r, st))
        n += 1
        if st["connections"] != 0:
            bad += 1
            print("not ok %d - round %d: %d connections still open" % (n, r, st["connections"]))
        elif first is None:
            first = st
            print("ok %d - round %d: every connection ended" % (n, r))
        else:
            grown = st["lua_kb"] - first["lua_kb"]
            ok = grown <= a.heap_slack_kb
            bad += not ok
            print("%s %d - round %d: every connection ended, Lua heap %+d KiB since round 1 "
                  "(RSS %+d KiB)" % ("ok" if ok else "not ok", n, r, grown,
                                      st["rss_kb"] - first["rss_kb"]))
    print("1..%d" % n)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
