#!/usr/bin/python3
"""Autobahn-style RFC 6455 conformance client (stdlib only, raw sockets).

  /usr/bin/python3 conformance.py ws://127.0.0.1:PORT/path
      [--filter SUBSTR] [--max-message N] [--timeout SECS] [--list] [-v]

--filter matches a substring of "<id> <description>"; a leading ^ anchors it
at the start (e.g. --filter '^2.1 ' selects exactly case 2.1).  --list prints
the selected cases without connecting.

Targets a server that echoes every text and binary message unchanged and
answers pings.  Every case uses a fresh TCP connection, performs the opening
handshake itself (checking Sec-WebSocket-Accept), writes crafted masked
frames and checks the server's reaction within a per-case timeout (default
2 s): echoes, pongs, or a close frame with an expected code followed by the
server closing TCP.  Output is TAP; exit status 0 iff every selected case
passes.  Case ids follow Autobahn's section numbers (1 framing, 2 pings,
3 reserved bits, 4 opcodes, 5 fragmentation, 6 UTF-8, 7 close, 9 sizes,
10 limits); sub-numbers are ours.
"""
import base64
import fcntl
import hashlib
import os
import socket
import struct
import sys
import termios
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONT, TEXT, BIN, CLOSE, PING, PONG = 0, 1, 2, 8, 9, 10
OPNAMES = {0: "cont", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}
TIMEOUT = 2.0


class Fail(Exception):
    pass


class Closed(Exception):
    pass


def frame(opcode, payload=b"", fin=True, rsv=0, mask=True, length=None):
    """Encode one frame; rsv is a 3-bit value (4=RSV1, 2=RSV2, 1=RSV3)."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0xF)
    mbit = 0x80 if mask else 0
    if n < 126:
        hdr = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return hdr + payload
    key = os.urandom(4)
    return hdr + key + apply_mask(payload, key)


def apply_mask(data, key):
    if not data:
        return b""
    n = len(data)
    k = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(data, "big") ^ k).to_bytes(n, "big")


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


def arm_reset(sock, limit=5.0):
    """Makes closing sock send a TCP reset (SO_LINGER 0), once the peer's
    kernel has acknowledged every byte sent (TIOCOUTQ is 0), for at most
    limit seconds: a reset discards what is still unsent, and under load
    that was the tail of the messages the peer had to get first."""
    deadline = time.monotonic() + limit
    unacked = bytearray(4)
    while time.monotonic() < deadline:
        fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, unacked)
        if struct.unpack("i", unacked)[0] == 0:
            break
        time.sleep(0.001)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class Conn:
    def __init__(self, host, port, path, timeout):
        self.deadline = time.monotonic() + timeout
        self.buf = b""
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16))
        req = (b"GET " + path.encode() + b" HTTP/1.1\r\n"
               b"Host: " + ("%s:%d" % (host, port)).encode() + b"\r\n"
               b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: " + key + b"\r\n"
               b"Sec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(req)
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise Fail("connection closed during handshake")
            if len(self.buf) > 65536:
                raise Fail("handshake response too large")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if lines[0].split(" ")[1:2] != ["101"]:
            raise Fail("handshake status: %r" % lines[0])
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        want = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        if hdrs.get("sec-websocket-accept") != want:
            raise Fail("bad Sec-WebSocket-Accept %r" % hdrs.get("sec-websocket-accept"))
        if hdrs.get("upgrade", "").lower() != "websocket":
            raise Fail("bad Upgrade header %r" % hdrs.get("upgrade"))
        if "sec-websocket-extensions" in hdrs:
            raise Fail("server accepted an extension nobody offered")
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout

    # -- low level -------------------------------------------------------
    def _fill(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Fail("timeout")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            raise Fail("timeout")
        except ConnectionResetError:
            return False
        if not data:
            return False
        self.buf += data
        return True

    def _need(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise Closed()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def write(self, data, chop=None, pause=0.0):
        try:
            if not chop:
                self.sock.sendall(data)
                return
            for i in range(0, len(data), chop):
                self.sock.sendall(data[i:i + chop])
                if pause:
                    self.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may legitimately have failed the connection

    def send(self, opcode, payload=b"", chop=None, pause=0.0, **kw):
        self.write(frame(opcode, payload, **kw), chop, pause)

    def sleep(self, t):
        time.sleep(t)
        self.deadline += t

    def read_frame(self):
        b0, b1 = self._need(2)
        fin, rsv, op = b0 >> 7, (b0 >> 4) & 7, b0 & 0xF
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._need(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._need(8))[0]
        if b1 & 0x80:
            raise Fail("server sent a masked frame")
        if rsv:
            raise Fail("server frame has RSV bits %d" % rsv)
        if op >= 8 and (n > 125 or not fin):
            raise Fail("server sent a bad control frame")
        if op not in OPNAMES:
            raise Fail("server sent reserved opcode %d" % op)
        return fin, op, self._need(n)

    def read_message(self):
        """Next message: a control frame, or a reassembled data message.
        Pings from the server are answered and skipped."""
        msg_op, parts = None, []
        while True:
            fin, op, data = self.read_frame()
            if op == PING:
                self.send(PONG, data)
                continue
            if op >= 8:
                if msg_op is not None and op == CLOSE:
                    raise Fail("close in the middle of a fragmented echo")
                return op, data
            if op == CONT and msg_op is None:
                raise Fail("server sent continuation without a message")
            if op != CONT and msg_op is not None:
                raise Fail("server started a new message inside a fragmented one")
            if msg_op is None:
                msg_op = op
            parts.append(data)
            if fin:
                return msg_op, b"".join(parts)

    # -- expectations ----------------------------------------------------
    def expect(self, opcode, payload):
        try:
            op, data = self.read_message()
        except Closed:
            raise Fail("connection closed, expected %s" % OPNAMES[opcode])
        if op == CLOSE and opcode != CLOSE:
            raise Fail("expected %s, got close %s" % (OPNAMES[opcode], describe_close(data)))
        if op != opcode:
            raise Fail("expected %s, got %s" % (OPNAMES[opcode], OPNAMES[op]))
        if data != payload:
            raise Fail("%s payload mismatch: %d bytes %r..., expected %d bytes %r..."
                       % (OPNAMES[op], len(data), data[:20], len(payload), payload[:20]))

    def expect_close(self, codes, allow_empty=False, reply=True):
        """Next message must be a close with a code in `codes` (None in codes
        or allow_empty accepts an empty payload); then we answer the close
        and the server must close TCP."""
        try:
            op, data = self.read_message()
        except Closed:
            raise Fail("TCP closed without a close frame (expected %s)" % fmt_codes(codes))
        if op != CLOSE:
            raise Fail("expected close %s, got %s (%d bytes)" % (fmt_codes(codes), OPNAMES[op], len(data)))
        if not data:
            if not allow_empty:
                raise Fail("expected close %s, got empty close" % fmt_codes(codes))
        else:
            if len(data) == 1:
                raise Fail("server close payload has 1 byte")
            code = struct.unpack("!H", data[:2])[0]
            if code not in codes:
                raise Fail("expected close %s, got %s" % (fmt_codes(codes), describe_close(data)))
            try:
                data[2:].decode("utf-8")
            except UnicodeDecodeError:
                raise Fail("server close reason is not UTF-8")
        if reply:
            self.send(CLOSE, data[:2])
        self.expect_eof()

    def expect_eof(self):
        while True:
            try:
                fin, op, data = self.read_frame()
            except Closed:
                return
            raise Fail("server sent %s after close" % OPNAMES[op])

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def describe_close(data):
    if len(data) < 2:
        return "(empty)" if not data else "(1 byte)"
    return "%d %r" % (struct.unpack("!H", data[:2])[0], data[2:60])


def fmt_codes(codes):
    return "/".join(str(c) if c is not None else "empty" for c in codes)


# ---------------------------------------------------------------------------
# cases: list of (id, description, function(conn))
CASES = []


def case(cid, desc):
    def deco(fn):
        CASES.append((cid, desc, fn))
        return fn
    return deco


def add(cid, desc, fn):
    CASES.append((cid, desc, fn))


def echo_case(op, payload, chop=None, pause=0.0):
    def fn(c):
        c.send(op, payload, chop=chop, pause=pause)
        c.expect(PONG if op == PING else op, payload)
        c.send(CLOSE, close_payload(1000))
        c.expect_close([1000], allow_empty=True, reply=False)
    return fn


def fail_case(frames, codes, before=()):
    """Send `frames` (list of raw bytes), expect the messages in `before`
    ((opcode, payload) pairs), then a close with one of `codes`."""
    def fn(c):
        for f in frames:
            c.write(f)
        for op, payload in before:
            c.expect(op, payload)
        c.expect_close(codes)
    return fn


def text_payload(n):
    return (b"*" * n) if n < 1000 else (b"0123456789abcdef" * (n // 16 + 1))[:n]


# 1.x framing
SIZES = [0, 125, 126, 127, 128, 65535, 65536, 1 << 20]
for sec, op, kind in ((1, TEXT, "text"), (2, BIN, "binary")):
    for i, n in enumerate(SIZES, 1):
        data = text_payload(n) if op == TEXT else (bytes(range(256)) * (n // 256 + 1))[:n]
        add("1.%d.%d" % (sec, i), "%s %d bytes" % (kind, n), echo_case(op, data))
    data = text_payload(65536) if op == TEXT else os.urandom(65536)
    add("1.%d.9" % sec, "%s 65536 bytes in chops of 997" % kind,
        echo_case(op, data, chop=997, pause=0.001))
    add("1.%d.10" % sec, "%s 125 bytes written one byte at a time" % kind,
        echo_case(op, data[:125], chop=1, pause=0.001))
    add("1.%d.11" % sec, "%s 126 bytes (16-bit length) in chops of 3" % kind,
        echo_case(op, data[:126], chop=3, pause=0.002))

# 2.x pings
add("2.1", "ping 0 bytes", echo_case(PING, b""))
add("2.2", "ping 125 bytes text payload", echo_case(PING, b"p" * 125))
add("2.3", "ping binary payload", echo_case(PING, bytes([0, 255, 254, 253, 252, 251, 0, 255])))
add("2.4", "ping 125 bytes binary payload", echo_case(PING, bytes(range(125))))
add("2.5", "ping 126 bytes -> 1002", fail_case([frame(PING, b"x" * 126)], [1002]))
add("2.6", "ping 125 bytes in chops of 1", echo_case(PING, b"q" * 125, chop=1, pause=0.001))
add("2.7", "fragmented ping (FIN=0) -> 1002", fail_case([frame(PING, b"abc", fin=False)], [1002]))


@case("2.8", "unsolicited pong ignored, then ping answered")
def _(c):
    c.send(PONG, b"unsolicited")
    c.send(PING, b"after-pong")
    c.expect(PONG, b"after-pong")


@case("2.9", "unsolicited empty pong ignored, then text echoed")
def _(c):
    c.send(PONG)
    c.send(TEXT, b"still alive")
    c.expect(TEXT, b"still alive")


@case("2.10", "10 pings in a row answered in order")
def _(c):
    for i in range(10):
        c.send(PING, b"ping-%d" % i)
    for i in range(10):
        c.expect(PONG, b"ping-%d" % i)


@case("2.11", "10 pings in a row, chopped, answered in order")
def _(c):
    for i in range(10):
        c.send(PING, b"chop-%d" % i, chop=2, pause=0.001)
    for i in range(10):
        c.expect(PONG, b"chop-%d" % i)


# 3.x reserved bits
add("3.1", "text with RSV1 -> 1002", fail_case([frame(TEXT, b"hello", rsv=4)], [1002]))
add("3.2", "text, then text with RSV2, then ping -> echo, 1002",
    fail_case([frame(TEXT, b"ok"), frame(TEXT, b"bad", rsv=2), frame(PING, b"p")],
              [1002], before=[(TEXT, b"ok")]))
add("3.3", "text, then text with RSV3, then ping -> echo, 1002",
    fail_case([frame(TEXT, b"ok"), frame(TEXT, b"bad", rsv=1), frame(PING, b"p")],
              [1002], before=[(TEXT, b"ok")]))
add("3.4", "text, text RSV1+RSV2, ping (chopped) -> echo, 1002",
    fail_case([frame(TEXT, b"ok") + frame(TEXT, b"bad", rsv=6) + frame(PING, b"p")],
              [1002], before=[(TEXT, b"ok")]))
add("3.5", "binary with RSV1+RSV3 -> 1002", fail_case([frame(BIN, bytes(range(8)), rsv=5)], [1002]))
add("3.6", "ping with RSV2+RSV3 -> 1002 (no pong)", fail_case([frame(PING, b"p", rsv=3)], [1002]))
add("3.7", "close with all RSV bits -> 1002", fail_case([frame(CLOSE, close_payload(1000), rsv=7)], [1002]))
add("3.8", "pong with RSV1 -> 1002", fail_case([frame(PONG, b"p", rsv=4)], [1002]))
add("3.9", "binary with RSV1 -> 1002", fail_case([frame(BIN, b"\x00\x01", rsv=4)], [1002]))

# 4.x reserved opcodes
for sec, ops in ((1, (3, 4, 5, 6, 7)), (2, (11, 12, 13, 14, 15))):
    for i, op in enumerate(ops, 1):
        if i <= 2:
            add("4.%d.%d" % (sec, i), "reserved opcode %d -> 1002" % op,
                fail_case([frame(op, b"" if i == 1 else b"reserved")], [1002]))
        else:
            add("4.%d.%d" % (sec, i), "text, reserved opcode %d, ping -> echo, 1002" % op,
                fail_case([frame(TEXT, b"first"), frame(op, b"reserved"), frame(PING, b"p")],
                          [1002], before=[(TEXT, b"first")]))

# 5.x fragmentation
add("5.1", "ping fragmented into 2 frames -> 1002",
    fail_case([frame(PING, b"frag", fin=False), frame(CONT, b"ment")], [1002]))
add("5.2", "pong fragmented into 2 frames -> 1002",
    fail_case([frame(PONG, b"frag", fin=False), frame(CONT, b"ment")], [1002]))


def frag_echo(op, parts, chop=None, pause=0.0):
    def fn(c):
        for i, p in enumerate(parts):
            c.send(op if i == 0 else CONT, p, fin=i == len(parts) - 1, chop=chop, pause=pause)
        c.expect(op, b"".join(parts))
    return fn


add("5.3", "text in 2 fragments", frag_echo(TEXT, [b"frag", b"ment"]))
add("5.4", "text in 2 fragments, chopped", frag_echo(TEXT, [b"frag", b"ment"], chop=1, pause=0.001))
add("5.5", "binary in 2 fragments", frag_echo(BIN, [b"\x00\x01", b"\xfe\xff"]))
add("5.6", "text in 200 one-byte fragments", frag_echo(TEXT, [b"%d" % (i % 10) for i in range(200)]))
add("5.7", "binary in 100 one-byte fragments", frag_echo(BIN, [bytes([i]) for i in range(100)]))


@case("5.8", "text in 2 fragments with a ping in between")
def _(c):
    c.send(TEXT, b"frag", fin=False)
    c.send(PING, b"between")
    c.send(CONT, b"ment")
    c.expect(PONG, b"between")
    c.expect(TEXT, b"fragment")


@case("5.9", "text in 2 fragments with a ping in between, chopped")
def _(c):
    data = frame(TEXT, b"frag", fin=False) + frame(PING, b"between") + frame(CONT, b"ment")
    c.write(data, chop=1, pause=0.001)
    c.expect(PONG, b"between")
    c.expect(TEXT, b"fragment")


@case("5.10", "fragments and pings with pauses (pongs come first)")
def _(c):
    c.send(TEXT, b"a", fin=False)
    c.send(CONT, b"b", fin=False)
    c.send(PING, b"p1")
    c.expect(PONG, b"p1")
    c.sleep(0.3)
    c.send(CONT, b"c", fin=False)
    c.send(CONT, b"d", fin=False)
    c.send(PING, b"p2")
    c.expect(PONG, b"p2")
    c.sleep(0.3)
    c.send(CONT, b"e")
    c.expect(TEXT, b"abcde")


add("5.11", "continuation (FIN=1) with nothing to continue -> 1002",
    fail_case([frame(CONT, b"orphan")], [1002]))
add("5.12", "continuation (FIN=0) with nothing to continue -> 1002",
    fail_case([frame(CONT, b"orphan", fin=False)], [1002]))
add("5.13", "text echoed, then orphan continuation -> 1002",
    fail_case([frame(TEXT, b"ok"), frame(CONT, b"orphan"), frame(TEXT, b"never")],
              [1002], before=[(TEXT, b"ok")]))
add("5.14", "new text frame inside a fragmented message -> 1002",
    fail_case([frame(TEXT, b"frag", fin=False), frame(TEXT, b"ment")], [1002]))
add("5.15", "new binary frame inside a fragmented text -> 1002",
    fail_case([frame(TEXT, b"frag", fin=False), frame(BIN, b"ment", fin=False)], [1002]))
add("5.16", "fragmented close -> 1002",
    fail_case([frame(CLOSE, close_payload(1000), fin=False), frame(CONT, b"")], [1002]))
add("5.17", "ping with FIN=0 inside a fragmented text -> 1002",
    fail_case([frame(TEXT, b"frag", fin=False), frame(PING, b"p", fin=False)], [1002]))

# 6.x UTF-8
add("6.1.1", "text 0 bytes", echo_case(TEXT, b""))
add("6.1.2", "text of 3 empty fragments", frag_echo(TEXT, [b"", b"", b""]))
add("6.1.3", "empty, non-empty, empty fragments", frag_echo(TEXT, [b"", b"middle", b""]))
add("6.1.4", "binary of 3 empty fragments", frag_echo(BIN, [b"", b"", b""]))

KOSME = "κόσμε".encode()
VALID = [
    ("Greek kosme", KOSME),
    ("4-byte chars", "𝄞🎉😀".encode()),
    ("U+0080", "\u0080".encode()),
    ("U+07FF", "\u07ff".encode()),
    ("U+0800", "\u0800".encode()),
    ("U+FFFF", "\uffff".encode()),
    ("U+10000", "\U00010000".encode()),
    ("U+10FFFF", "\U0010ffff".encode()),
    ("U+D7FF", "\ud7ff".encode()),
    ("U+E000", "\ue000".encode()),
    ("U+FFFD", "\ufffd".encode()),
    ("U+FFFE noncharacter", "\ufffe".encode()),
    ("mixed scripts", "Hello-µ@ßöäüàá-UTF-8!!".encode()),
    ("NUL byte", b"a\x00b"),
]
for i, (name, data) in enumerate(VALID, 1):
    add("6.2.%d" % i, "valid UTF-8: %s" % name, echo_case(TEXT, data))

INVALID = [
    ("overlong '/' C0 AF", b"\xc0\xaf"),
    ("overlong '/' E0 80 AF", b"\xe0\x80\xaf"),
    ("overlong '/' F0 80 80 AF", b"\xf0\x80\x80\xaf"),
    ("overlong NUL C0 80", b"\xc0\x80"),
    ("overlong U+07FF E0 9F BF", b"\xe0\x9f\xbf"),
    ("surrogate U+D800 ED A0 80", b"\xed\xa0\x80"),
    ("surrogate U+DFFF ED BF BF", b"\xed\xbf\xbf"),
    ("surrogate pair ED A0 80 ED B0 80", b"\xed\xa0\x80\xed\xb0\x80"),
    ("U+110000 F4 90 80 80", b"\xf4\x90\x80\x80"),
    ("lone continuation 80", b"\x80"),
    ("lone continuation after text", b"abc\xbf"),
    ("truncated C3 at message end", b"abc\xc3"),
    ("truncated E2 82 at message end", b"\xe2\x82"),
    ("truncated F0 9F 8E at message end", b"\xf0\x9f\x8e"),
    ("0xFE", b"\xfe"),
    ("0xFF", b"\xff"),
    ("5-byte sequence F8 88 80 80 80", b"\xf8\x88\x80\x80\x80"),
    ("kosme + invalid + ascii", KOSME + b"\xed\xa0\x80edited"),
]
for i, (name, data) in enumerate(INVALID, 1):
    add("6.3.%d" % i, "invalid UTF-8 -> 1007: %s" % name, fail_case([frame(TEXT, data)], [1007]))

# split valid multi-byte text across fragments at every byte position
SPLIT_TEXT = "aκό€𝄞z".encode()
for i in range(1, len(SPLIT_TEXT)):
    add("6.4.%d" % i, "valid text split into 2 fragments at byte %d" % i,
        frag_echo(TEXT, [SPLIT_TEXT[:i], SPLIT_TEXT[i:]]))
add("6.4.%d" % len(SPLIT_TEXT), "valid text fragmented at every byte",
    frag_echo(TEXT, [SPLIT_TEXT[i:i + 1] for i in range(len(SPLIT_TEXT))]))
add("6.4.%d" % (len(SPLIT_TEXT) + 1), "valid text in one frame written one byte at a time",
    echo_case(TEXT, SPLIT_TEXT, chop=1, pause=0.001))

# invalid UTF-8 spread across fragments (message completed)
add("6.5.1", "invalid UTF-8 across fragments (F4 | 90 80 80) -> 1007",
    fail_case([frame(TEXT, KOSME + b"\xf4", fin=False), frame(CONT, b"\x90\x80\x80")], [1007]))
add("6.5.2", "invalid UTF-8 in last fragment -> 1007",
    fail_case([frame(TEXT, KOSME, fin=False), frame(CONT, b"\xc0\xaf")], [1007]))
add("6.5.3", "message ends inside a multi-byte char across fragments -> 1007",
    fail_case([frame(TEXT, b"abc", fin=False), frame(CONT, b"\xe2\x82")], [1007]))

# fail fast: the message is never completed, the server must fail on what it has
add("6.6.1", "fail fast: first fragment (FIN=0) with C0 AF -> 1007",
    fail_case([frame(TEXT, b"\xc0\xaf", fin=False)], [1007]))
add("6.6.2", "fail fast: first fragment (FIN=0) kosme + ED A0 80 -> 1007",
    fail_case([frame(TEXT, KOSME + b"\xed\xa0\x80", fin=False)], [1007]))
add("6.6.3", "fail fast: valid fragment, then fragment (FIN=0) with F4 90 80 80 -> 1007",
    fail_case([frame(TEXT, KOSME, fin=False), frame(CONT, b"\xf4\x90\x80\x80", fin=False)], [1007]))
add("6.6.4", "fail fast: first fragment (FIN=0) with 0xFF -> 1007",
    fail_case([frame(TEXT, b"ok\xff", fin=False)], [1007]))

# 7.x close handling


@case("7.1.1", "text echoed, then clean close")
def _(c):
    c.send(TEXT, b"Hello World!")
    c.expect(TEXT, b"Hello World!")
    c.send(CLOSE, close_payload(1000))
    c.expect_close([1000], allow_empty=True, reply=False)


@case("7.1.2", "second close after close is ignored")
def _(c):
    c.send(CLOSE, close_payload(1000))
    c.send(CLOSE, close_payload(1001))
    c.expect_close([1000], allow_empty=True, reply=False)


@case("7.1.3", "ping after close is ignored")
def _(c):
    c.send(CLOSE, close_payload(1000))
    c.send(PING, b"ignored")
    c.expect_close([1000], allow_empty=True, reply=False)


@case("7.1.4", "text after close is ignored")
def _(c):
    c.send(CLOSE, close_payload(1000))
    c.send(TEXT, b"ignored")
    c.expect_close([1000], allow_empty=True, reply=False)


@case("7.1.5", "text fragment, then close: clean close")
def _(c):
    c.send(TEXT, b"frag", fin=False)
    c.send(CLOSE, close_payload(1000))
    c.send(CONT, b"ment")
    c.expect_close([1000], allow_empty=True, reply=False)


@case("7.1.6", "256 KiB text then close: echo, then clean close")
def _(c):
    data = text_payload(256 * 1024)
    c.write(frame(TEXT, data) + frame(CLOSE, close_payload(1000)))
    c.expect(TEXT, data)
    c.expect_close([1000], allow_empty=True, reply=False)


def close_case(payload, codes, allow_empty=False):
    def fn(c):
        c.send(CLOSE, payload)
        c.expect_close(codes, allow_empty=allow_empty, reply=False)
    return fn


add("7.3.1", "close with empty payload", close_case(b"", [1000], allow_empty=True))
add("7.3.2", "close with 1-byte payload -> 1002", close_case(b"\x03", [1002]))
add("7.3.3", "close 1000, no reason", close_case(close_payload(1000), [1000]))
add("7.3.4", "close 1000 with reason", close_case(close_payload(1000, b"Hello World!"), [1000]))
add("7.3.5", "close 1000 with 123-byte reason", close_case(close_payload(1000, b"*" * 123), [1000]))
add("7.3.6", "close with 124-byte reason (payload 126) -> 1002",
    close_case(close_payload(1000, b"*" * 124), [1002]))
add("7.5.1", "close reason with invalid UTF-8 -> 1007",
    close_case(close_payload(1000, KOSME + b"\xed\xa0\x80edited"), [1007]))
add("7.5.2", "close reason truncated UTF-8 -> 1007",
    close_case(close_payload(1000, b"bye\xc3"), [1007]))

VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
               3000, 3999, 4000, 4999]
for i, code in enumerate(VALID_CODES, 1):
    add("7.7.%d" % i, "close with valid code %d" % code,
        close_case(close_payload(code), [code, 1000]))
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
for i, code in enumerate(INVALID_CODES, 1):
    add("7.9.%d" % i, "close with invalid code %d -> 1002" % code,
        close_case(close_payload(code), [1002]))

# 9.x sizes (lite)
for i, n in enumerate([64 << 10, 256 << 10, 1 << 20, 4 << 20], 1):
    add("9.1.%d" % i, "text %d KiB" % (n >> 10), echo_case(TEXT, text_payload(n)))
    add("9.2.%d" % i, "binary %d KiB" % (n >> 10), echo_case(BIN, os.urandom(n)))
add("9.3.1", "text 1 MiB in 64 fragments",
    frag_echo(TEXT, [text_payload(16384)] * 64))
add("9.4.1", "unmasked text frame -> 1002", fail_case([frame(TEXT, b"unmasked", mask=False)], [1002]))
add("9.4.2", "unmasked ping -> 1002", fail_case([frame(PING, b"unmasked", mask=False)], [1002]))
add("9.4.3", "text echoed, then unmasked binary -> 1002",
    fail_case([frame(TEXT, b"ok"), frame(BIN, b"unmasked", mask=False)],
              [1002], before=[(TEXT, b"ok")]))


def limit_cases(n):
    add("10.1.1", "binary of exactly --max-message %d bytes echoed" % n,
        echo_case(BIN, os.urandom(n)))
    add("10.1.2", "binary of %d bytes (limit+1) -> 1009" % (n + 1),
        fail_case([frame(BIN, os.urandom(n + 1))], [1009]))
    half = n // 2 + 1
    add("10.1.3", "fragmented text totalling %d bytes (limit+1) -> 1009" % (n + 1),
        fail_case([frame(TEXT, b"x" * half, fin=False), frame(CONT, b"y" * (n + 1 - half))], [1009]))


# ---------------------------------------------------------------------------
def parse_url(url):
    if not url.startswith("ws://"):
        sys.exit("only ws:// URLs are supported")
    rest = url[5:]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    if not host:
        host, port = hostport, "80"
    return host.strip("[]"), int(port), "/" + path


def main():
    global TIMEOUT
    args = sys.argv[1:]
    url, filt, verbose, list_only, max_msg = None, None, False, False, None
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--filter":
            filt = args[i + 1]; i += 1
        elif a == "--timeout":
            TIMEOUT = float(args[i + 1]); i += 1
        elif a == "--max-message":
            max_msg = int(args[i + 1]); i += 1
        elif a == "--list":
            list_only = True
        elif a == "-v":
            verbose = True
        elif url is None and not a.startswith("-"):
            url = a
        else:
            sys.exit("usage: conformance.py ws://127.0.0.1:PORT/path [--filter S] "
                     "[--max-message N] [--timeout SECS] [--list] [-v]")
        i += 1
    if max_msg is not None:
        limit_cases(max_msg)
    def selected(c):
        line = c[0] + " " + c[1]
        if not filt:
            return True
        return line.startswith(filt[1:]) if filt.startswith("^") else filt in line
    cases = [c for c in CASES if selected(c)]
    if list_only:
        for cid, desc, _ in cases:
            print(cid, desc)
        return 0
    if url is None:
        sys.exit("missing URL")
    host, port, path = parse_url(url)
    print("1..%d" % len(cases), flush=True)
    failed = []
    for n, (cid, desc, fn) in enumerate(cases, 1):
        t0 = time.monotonic()
        c = None
        try:
            c = Conn(host, port, path, TIMEOUT)
            fn(c)
            ok, why = True, ""
        except Fail as e:
            ok, why = False, str(e)
        except (OSError, Closed) as e:
            ok, why = False, "%s: %s" % (type(e).__name__, e)
        finally:
            if c:
                c.close()
        took = time.monotonic() - t0
        line = "%s %d - %s %s" % ("ok" if ok else "not ok", n, cid, desc)
        if not ok:
            line += " # " + why
            failed.append(cid)
        elif verbose:
            line += " # %.3fs" % took
        print(line, flush=True)
    print("# %d/%d passed%s" % (len(cases) - len(failed), len(cases),
                                (", failed: " + " ".join(failed)) if failed else ""),
          flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
