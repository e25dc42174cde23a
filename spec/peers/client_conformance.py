#!/usr/bin/python3
"""Autobahn-style RFC 6455 conformance server for testing *clients* (stdlib
only, raw sockets).

  /usr/bin/python3 client_conformance.py --port 0 [--max-message N]
      [--timeout SECS] [--lifetime SECS] [--list]

Prints "PORT <n>" once listening.  The client under test connects to
ws://127.0.0.1:<n>/case/<id> once per case and runs an echo loop: every text
and binary message it receives is sent back unchanged, until the connection
closes; a text message "close:<code>:<reason>" makes it close with that code
and reason instead.  The server completes the handshake (checking the
client's request), then does what the case says (frames of every size,
fragments with pings in between, reserved bits and opcodes, bad UTF-8, close
codes, masked frames) and checks the client's side: every client frame
masked, each echo and pong exact, the close code expected, and the client
closing TCP properly afterwards (after failing the connection it closes by
itself; after a clean closing handshake it closes once the server has).

Each finished case prints one TAP line, in the order cases finish:
  ok <n> - <id> <description>
  not ok <n> - <id> <description> # <why>
where <n> is the case's number in --list.  --list prints
  <id> <code> <description>
where <code> is the close code the client application should report
(receive() -> nil, "closed", code).  With --max-message N (the client's
limit) three limit cases are added.  Runs until SIGTERM/SIGINT or
--lifetime seconds (default 600).
"""
import argparse
import base64
import hashlib
import os
import signal
import socket
import socketserver
import struct
import sys
import threading
import time

# The frame codec, payloads and UTF-8/close-code vectors are the server-side
# suite's (conformance.py, next to this file); no __pycache__ in the tree.
sys.dont_write_bytecode = True
from conformance import (CLOSE, CONT, GUID, INVALID, INVALID_CODES, KOSME, OPNAMES,
                         PING, PONG, SPLIT_TEXT, TEXT, BIN, VALID, VALID_CODES,
                         apply_mask, close_payload, describe_close, frame,
                         text_payload)

TIMEOUT = 2.0
LOCK = threading.Lock()


class Fail(Exception):
    pass


class Closed(Exception):
    pass


def sframe(opcode, payload=b"", **kw):
    """A server frame: unmasked unless mask=True is given."""
    kw.setdefault("mask", False)
    return frame(opcode, payload, **kw)


class Peer:
    """The server side of one client connection."""

    def __init__(self, sock, buf, timeout):
        self.sock = sock
        self.buf = buf
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.keys = []  # mask keys of the client's frames

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
            raise Fail("client reset the connection (RST) instead of closing it")
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
            pass  # the client may legitimately have failed the connection

    def send(self, opcode, payload=b"", chop=None, pause=0.0, **kw):
        self.write(sframe(opcode, payload, **kw), chop, pause)

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
        # RFC 6455 5.1: a client MUST mask every frame it sends.
        if not b1 & 0x80:
            raise Fail("client sent an unmasked %s frame" % OPNAMES.get(op, op))
        key = self._need(4)
        self.keys.append(key)
        if rsv:
            raise Fail("client frame has RSV bits %d" % rsv)
        if op not in OPNAMES:
            raise Fail("client sent reserved opcode %d" % op)
        if op >= 8 and (n > 125 or not fin):
            raise Fail("client sent a bad control frame")
        return fin, op, apply_mask(self._need(n), key)

    def read_message(self):
        """Next message: a control frame, or a reassembled data message.
        Pings from the client are answered and skipped."""
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
                raise Fail("client sent continuation without a message")
            if op != CONT and msg_op is not None:
                raise Fail("client started a new message inside a fragmented one")
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

    def read_close(self, codes):
        """The next message must be a close frame with a code in codes (None
        in codes: an empty payload). Returns its payload."""
        try:
            op, data = self.read_message()
        except Closed:
            raise Fail("TCP closed without a close frame (expected %s)" % fmt_codes(codes))
        if op != CLOSE:
            raise Fail("expected close %s, got %s (%d bytes)"
                       % (fmt_codes(codes), OPNAMES[op], len(data)))
        if not data:
            if None not in codes:
                raise Fail("expected close %s, got an empty close" % fmt_codes(codes))
            return data
        if len(data) == 1:
            raise Fail("client close payload has 1 byte")
        code = struct.unpack("!H", data[:2])[0]
        if code not in codes:
            raise Fail("expected close %s, got %s" % (fmt_codes(codes), describe_close(data)))
        try:
            data[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise Fail("client close reason is not UTF-8")
        return data

    def expect_eof(self, what):
        while True:
            try:
                _, op, _ = self.read_frame()
            except Closed:
                return
            except Fail as e:
                if str(e) == "timeout":
                    raise Fail("client did not close TCP " + what)
                raise
            raise Fail("client sent %s after its close frame" % OPNAMES[op])

    def expect_fail(self, codes):
        """The client fails the connection: a close with one of codes, then
        it closes TCP by itself (RFC 6455 7.1.7) and sends nothing more."""
        self.read_close(codes)
        self.expect_eof("after failing the connection")

    def server_close(self, code=1000, reason=b"", expect=None):
        """A clean closing handshake started by us: the client must echo the
        code (RFC 6455 5.5.1), then close TCP once we have (7.1.1)."""
        if code is None:
            self.send(CLOSE, b"")
        else:
            self.send(CLOSE, close_payload(code, reason))
        self.finish_close([code] if expect is None else expect)

    def finish_close(self, codes):
        self.read_close(codes)
        self.sock.shutdown(socket.SHUT_WR)
        self.expect_eof("after the server closed")


def fmt_codes(codes):
    return "/".join(str(c) if c is not None else "empty" for c in codes)


# ---------------------------------------------------------------------------
# cases: (id, expected application close code, description, function(peer))
CASES = []


def add(cid, code, desc, fn):
    CASES.append((cid, code, desc, fn))


def echo_case(op, payload, chop=None, pause=0.0):
    def fn(p):
        p.send(op, payload, chop=chop, pause=pause)
        p.expect(PONG if op == PING else op, payload)
        p.server_close(1000)
    return fn


def fail_case(frames, code, before=(), chop=None):
    """Write frames (raw bytes), expect the echoes in before ((opcode,
    payload) pairs), then the client fails the connection with code."""
    def fn(p):
        p.write(b"".join(frames), chop=chop, pause=0.001 if chop else 0.0)
        for op, payload in before:
            p.expect(op, payload)
        p.expect_fail([code])
    return fn


def frag_echo(op, parts, chop=None, pause=0.0):
    def fn(p):
        data = b"".join(sframe(op if i == 0 else CONT, part, fin=i == len(parts) - 1)
                        for i, part in enumerate(parts))
        p.write(data, chop=chop, pause=pause)
        p.expect(op, b"".join(parts))
        p.server_close(1000)
    return fn


def binary_payload(n):
    return (bytes(range(256)) * (n // 256 + 1))[:n]


def case_handshake(p):
    p.send(TEXT, b"hello")
    p.expect(TEXT, b"hello")
    p.server_close(1000, b"bye")


add("0.1", 1000, "opening handshake request is valid, then text echoed", case_handshake)

# 1.x framing
SIZES = [0, 125, 126, 127, 128, 65535, 65536, 1 << 20]
for sec, op, kind, gen in ((1, TEXT, "text", text_payload), (2, BIN, "binary", binary_payload)):
    for i, n in enumerate(SIZES, 1):
        add("1.%d.%d" % (sec, i), 1000, "%s %d bytes" % (kind, n), echo_case(op, gen(n)))
    add("1.%d.9" % sec, 1000, "%s 65536 bytes written in chops of 997" % kind,
        echo_case(op, gen(65536), chop=997, pause=0.0005))
    add("1.%d.10" % sec, 1000, "%s 125 bytes written one byte at a time" % kind,
        echo_case(op, gen(125), chop=1, pause=0.0005))
    add("1.%d.11" % sec, 1000, "%s 126 bytes (16-bit length) in chops of 3" % kind,
        echo_case(op, gen(126), chop=3, pause=0.0005))

# 2.x pings: a masked pong with the same payload
add("2.1", 1000, "ping 0 bytes -> pong", echo_case(PING, b""))
add("2.2", 1000, "ping 125 bytes text payload -> pong", echo_case(PING, b"p" * 125))
add("2.3", 1000, "ping binary payload -> pong", echo_case(PING, bytes([0, 255, 254, 253, 0, 1])))
add("2.4", 1000, "ping 125 bytes binary payload -> pong", echo_case(PING, bytes(range(125))))
add("2.5", 1002, "ping 126 bytes -> 1002", fail_case([sframe(PING, b"x" * 126)], 1002))
add("2.6", 1000, "ping 125 bytes written one byte at a time -> pong",
    echo_case(PING, b"q" * 125, chop=1, pause=0.0005))
add("2.7", 1002, "fragmented ping (FIN=0) -> 1002",
    fail_case([sframe(PING, b"abc", fin=False)], 1002))


def case_unsolicited_pong(p):
    p.send(PONG, b"unsolicited")
    p.send(TEXT, b"after-pong")
    p.expect(TEXT, b"after-pong")
    p.server_close(1000)


def case_unsolicited_empty_pong(p):
    p.send(PONG)
    p.send(PING, b"after-pong")
    p.expect(PONG, b"after-pong")
    p.server_close(1000)


def case_ten_pings(p):
    p.write(b"".join(sframe(PING, b"ping-%d" % i) for i in range(10)))
    for i in range(10):
        p.expect(PONG, b"ping-%d" % i)
    p.server_close(1000)


add("2.8", 1000, "unsolicited pong ignored, then text echoed", case_unsolicited_pong)
add("2.9", 1000, "unsolicited empty pong ignored, then ping answered", case_unsolicited_empty_pong)
add("2.10", 1000, "10 pings in one write answered in order", case_ten_pings)

# 3.x reserved bits
add("3.1", 1002, "text with RSV1 -> 1002", fail_case([sframe(TEXT, b"hello", rsv=4)], 1002))
add("3.2", 1002, "text, then text with RSV2, then ping -> echo, 1002",
    fail_case([sframe(TEXT, b"ok"), sframe(TEXT, b"bad", rsv=2), sframe(PING, b"p")],
              1002, before=[(TEXT, b"ok")]))
add("3.3", 1002, "text, then text with RSV3, then ping -> echo, 1002",
    fail_case([sframe(TEXT, b"ok"), sframe(TEXT, b"bad", rsv=1), sframe(PING, b"p")],
              1002, before=[(TEXT, b"ok")]))
add("3.4", 1002, "text, text RSV1+RSV2, ping, written byte by byte -> echo, 1002",
    fail_case([sframe(TEXT, b"ok"), sframe(TEXT, b"bad", rsv=6), sframe(PING, b"p")],
              1002, before=[(TEXT, b"ok")], chop=1))
add("3.5", 1002, "binary with RSV1+RSV3 -> 1002",
    fail_case([sframe(BIN, bytes(range(8)), rsv=5)], 1002))
add("3.6", 1002, "ping with RSV2+RSV3 -> 1002 (no pong)",
    fail_case([sframe(PING, b"p", rsv=3)], 1002))
add("3.7", 1002, "close with all RSV bits -> 1002",
    fail_case([sframe(CLOSE, close_payload(1000), rsv=7)], 1002))
add("3.8", 1002, "pong with RSV1 -> 1002", fail_case([sframe(PONG, b"p", rsv=4)], 1002))

# 4.x reserved opcodes
for sec, ops in ((1, (3, 4, 5, 6, 7)), (2, (11, 12, 13, 14, 15))):
    for i, rop in enumerate(ops, 1):
        if i <= 2:
            add("4.%d.%d" % (sec, i), 1002, "reserved opcode %d -> 1002" % rop,
                fail_case([sframe(rop, b"" if i == 1 else b"reserved")], 1002))
        else:
            add("4.%d.%d" % (sec, i), 1002, "text, reserved opcode %d, ping -> echo, 1002" % rop,
                fail_case([sframe(TEXT, b"first"), sframe(rop, b"reserved"), sframe(PING, b"p")],
                          1002, before=[(TEXT, b"first")]))

# 5.x fragmentation
add("5.1", 1002, "ping fragmented into 2 frames -> 1002",
    fail_case([sframe(PING, b"frag", fin=False), sframe(CONT, b"ment")], 1002))
add("5.2", 1002, "pong fragmented into 2 frames -> 1002",
    fail_case([sframe(PONG, b"frag", fin=False), sframe(CONT, b"ment")], 1002))
add("5.3", 1000, "text in 2 fragments", frag_echo(TEXT, [b"frag", b"ment"]))
add("5.4", 1000, "text in 2 fragments, written byte by byte",
    frag_echo(TEXT, [b"frag", b"ment"], chop=1, pause=0.0005))
add("5.5", 1000, "binary in 2 fragments", frag_echo(BIN, [b"\x00\x01", b"\xfe\xff"]))
add("5.6", 1000, "text in 200 one-byte fragments",
    frag_echo(TEXT, [b"%d" % (i % 10) for i in range(200)]))
add("5.7", 1000, "binary in 100 one-byte fragments", frag_echo(BIN, [bytes([i]) for i in range(100)]))


def case_frag_ping(p):
    p.write(sframe(TEXT, b"frag", fin=False) + sframe(PING, b"between") + sframe(CONT, b"ment"))
    p.expect(PONG, b"between")
    p.expect(TEXT, b"fragment")
    p.server_close(1000)


def case_frag_ping_chopped(p):
    data = sframe(TEXT, b"frag", fin=False) + sframe(PING, b"between") + sframe(CONT, b"ment")
    p.write(data, chop=1, pause=0.0005)
    p.expect(PONG, b"between")
    p.expect(TEXT, b"fragment")
    p.server_close(1000)


def case_frag_pings_paused(p):
    p.send(BIN, b"a", fin=False)
    p.send(CONT, b"b", fin=False)
    p.send(PING, b"p1")
    p.expect(PONG, b"p1")
    p.sleep(0.05)
    p.send(CONT, b"c", fin=False)
    p.send(PING, b"p2")
    p.send(PING, b"p3")
    p.expect(PONG, b"p2")
    p.expect(PONG, b"p3")
    p.sleep(0.05)
    p.send(CONT, b"d")
    p.expect(BIN, b"abcd")
    p.server_close(1000)


add("5.8", 1000, "text in 2 fragments with a ping in between (pong first)", case_frag_ping)
add("5.9", 1000, "text in 2 fragments with a ping in between, byte by byte", case_frag_ping_chopped)
add("5.10", 1000, "binary fragments and pings with pauses (pongs come first)",
    case_frag_pings_paused)
add("5.11", 1002, "continuation (FIN=1) with nothing to continue -> 1002",
    fail_case([sframe(CONT, b"orphan")], 1002))
add("5.12", 1002, "continuation (FIN=0) with nothing to continue -> 1002",
    fail_case([sframe(CONT, b"orphan", fin=False)], 1002))
add("5.13", 1002, "text echoed, then orphan continuation -> 1002",
    fail_case([sframe(TEXT, b"ok"), sframe(CONT, b"orphan"), sframe(TEXT, b"never")],
              1002, before=[(TEXT, b"ok")]))
add("5.14", 1002, "new text frame inside a fragmented message -> 1002",
    fail_case([sframe(TEXT, b"frag", fin=False), sframe(TEXT, b"ment")], 1002))
add("5.15", 1002, "new binary frame inside a fragmented text -> 1002",
    fail_case([sframe(TEXT, b"frag", fin=False), sframe(BIN, b"ment", fin=False)], 1002))
add("5.16", 1002, "fragmented close -> 1002",
    fail_case([sframe(CLOSE, close_payload(1000), fin=False), sframe(CONT, b"")], 1002))
add("5.17", 1002, "ping with FIN=0 inside a fragmented text -> 1002",
    fail_case([sframe(TEXT, b"frag", fin=False), sframe(PING, b"p", fin=False)], 1002))

# 6.x UTF-8
add("6.1.1", 1000, "text 0 bytes", echo_case(TEXT, b""))
add("6.1.2", 1000, "text of 3 empty fragments", frag_echo(TEXT, [b"", b"", b""]))
add("6.1.3", 1000, "empty, non-empty, empty text fragments", frag_echo(TEXT, [b"", b"middle", b""]))
for i, (name, data) in enumerate(VALID, 1):
    add("6.2.%d" % i, 1000, "valid UTF-8 echoed: %s" % name, echo_case(TEXT, data))
for i, (name, data) in enumerate(INVALID, 1):
    add("6.3.%d" % i, 1007, "invalid UTF-8 -> 1007: %s" % name, fail_case([sframe(TEXT, data)], 1007))
for i in range(1, len(SPLIT_TEXT)):
    add("6.4.%d" % i, 1000, "valid text split into 2 fragments at byte %d" % i,
        frag_echo(TEXT, [SPLIT_TEXT[:i], SPLIT_TEXT[i:]]))
add("6.4.%d" % len(SPLIT_TEXT), 1000, "valid text fragmented at every byte",
    frag_echo(TEXT, [SPLIT_TEXT[i:i + 1] for i in range(len(SPLIT_TEXT))]))
add("6.5.1", 1007, "invalid UTF-8 across fragments (F4 | 90 80 80) -> 1007",
    fail_case([sframe(TEXT, KOSME + b"\xf4", fin=False), sframe(CONT, b"\x90\x80\x80")], 1007))
add("6.5.2", 1007, "invalid UTF-8 in the last fragment -> 1007",
    fail_case([sframe(TEXT, KOSME, fin=False), sframe(CONT, b"\xc0\xaf")], 1007))
add("6.5.3", 1007, "message ends inside a multi-byte char across fragments -> 1007",
    fail_case([sframe(TEXT, b"abc", fin=False), sframe(CONT, b"\xe2\x82")], 1007))
# fail fast: the message is never finished, the client must fail on what it has
add("6.6.1", 1007, "fail fast: first fragment (FIN=0) with C0 AF -> 1007",
    fail_case([sframe(TEXT, b"\xc0\xaf", fin=False)], 1007))
add("6.6.2", 1007, "fail fast: first fragment (FIN=0) kosme + ED A0 80 -> 1007",
    fail_case([sframe(TEXT, KOSME + b"\xed\xa0\x80", fin=False)], 1007))
add("6.6.3", 1007, "fail fast: valid fragment, then fragment (FIN=0) F4 90 80 80 -> 1007",
    fail_case([sframe(TEXT, KOSME, fin=False), sframe(CONT, b"\xf4\x90\x80\x80", fin=False)],
              1007))
# the classic invalid vectors split between two fragments (never two valid halves)
n = 0
for name, data in INVALID:
    if len(data) < 2:
        continue
    n += 1
    cut = len(data) // 2
    add("6.7.%d" % n, 1007, "invalid UTF-8 split across 2 fragments -> 1007: %s" % name,
        fail_case([sframe(TEXT, data[:cut], fin=False), sframe(CONT, data[cut:])], 1007))

# 7.x close handling


def case_text_then_close(p):
    p.send(TEXT, b"Hello World!")
    p.expect(TEXT, b"Hello World!")
    p.server_close(1000, b"bye")


def case_close_then_ping(p):
    p.write(sframe(CLOSE, close_payload(1000)) + sframe(PING, b"ignored"))
    p.finish_close([1000])


def case_close_then_text(p):
    p.write(sframe(CLOSE, close_payload(1000)) + sframe(TEXT, b"ignored"))
    p.finish_close([1000])


def case_fragment_close_fragment(p):
    p.write(sframe(TEXT, b"frag", fin=False) + sframe(CLOSE, close_payload(1000))
            + sframe(CONT, b"ment"))
    p.finish_close([1000])


def case_text_and_close_one_write(p):
    data = text_payload(256 * 1024)
    p.write(sframe(TEXT, data) + sframe(CLOSE, close_payload(1000)))
    p.expect(TEXT, data)
    p.finish_close([1000])


def case_client_closes(p):
    p.send(TEXT, b"close:4001:bye")
    data = p.read_close([4001])
    if data[2:] != b"bye":
        raise Fail("client close reason %r, expected 'bye'" % data[2:])
    p.send(CLOSE, data[:2])
    p.sock.shutdown(socket.SHUT_WR)
    p.expect_eof("after the server closed")


add("7.1.1", 1000, "text echoed, then clean close started by the server", case_text_then_close)
add("7.1.2", 1000, "ping after the server's close is not answered", case_close_then_ping)
add("7.1.3", 1000, "text after the server's close is not delivered", case_close_then_text)
add("7.1.4", 1000, "text fragment, close, continuation: clean close", case_fragment_close_fragment)
add("7.1.5", 1000, "256 KiB text and close in one write: echo first, then close",
    case_text_and_close_one_write)
add("7.1.6", 4001, "client-initiated close 4001 'bye': masked, then TCP closed",
    case_client_closes)


def close_case(payload, codes, fail=False):
    def fn(p):
        p.send(CLOSE, payload)
        if fail:
            p.expect_fail(codes)
        else:
            p.finish_close(codes)
    return fn


add("7.3.1", 1005, "close with an empty payload -> empty close", close_case(b"", [None]))
add("7.3.2", 1002, "close with a 1-byte payload -> 1002", close_case(b"\x03", [1002], fail=True))
add("7.3.3", 1000, "close 1000, no reason", close_case(close_payload(1000), [1000]))
add("7.3.4", 1000, "close 1000 with a reason", close_case(close_payload(1000, b"Hello!"), [1000]))
add("7.3.5", 1000, "close 1000 with a 123-byte reason",
    close_case(close_payload(1000, b"*" * 123), [1000]))
add("7.3.6", 1002, "close with a 124-byte reason (payload 126) -> 1002",
    close_case(close_payload(1000, b"*" * 124), [1002], fail=True))
add("7.5.1", 1007, "close reason with invalid UTF-8 -> 1007",
    close_case(close_payload(1000, KOSME + b"\xed\xa0\x80edited"), [1007], fail=True))
add("7.5.2", 1007, "close reason with truncated UTF-8 -> 1007",
    close_case(close_payload(1000, b"bye\xc3"), [1007], fail=True))
for i, code in enumerate(VALID_CODES, 1):
    add("7.7.%d" % i, code, "close with valid code %d -> echoed" % code,
        close_case(close_payload(code, b"reason"), [code]))
for i, code in enumerate(INVALID_CODES, 1):
    add("7.9.%d" % i, 1002, "close with invalid code %d -> 1002" % code,
        close_case(close_payload(code), [1002], fail=True))

# 9.x sizes and masking


def case_mask_keys(p):
    for i in range(10):
        p.send(TEXT, b"message %d" % i)
        p.expect(TEXT, b"message %d" % i)
    p.server_close(1000)
    keys = p.keys[:10]
    if len(set(keys)) < 8:
        raise Fail("client mask keys repeat: %d distinct of 10" % len(set(keys)))


add("9.1.1", 1000, "text 256 KiB", echo_case(TEXT, text_payload(256 << 10)))
add("9.1.2", 1000, "binary 256 KiB", echo_case(BIN, os.urandom(256 << 10)))
add("9.3.1", 1000, "text 1 MiB in 64 fragments", frag_echo(TEXT, [text_payload(16384)] * 64))
add("9.4.1", 1002, "masked text frame from the server -> 1002",
    fail_case([sframe(TEXT, b"masked", mask=True)], 1002))
add("9.4.2", 1002, "masked ping from the server -> 1002",
    fail_case([sframe(PING, b"masked", mask=True)], 1002))
add("9.4.3", 1002, "text echoed, then masked binary -> 1002",
    fail_case([sframe(TEXT, b"ok"), sframe(BIN, b"masked", mask=True)],
              1002, before=[(TEXT, b"ok")]))
add("9.5.1", 1000, "10 client frames use fresh mask keys", case_mask_keys)


def limit_cases(n):
    add("10.1.1", 1000, "binary of exactly the client's max_message (%d bytes) echoed" % n,
        echo_case(BIN, os.urandom(n)))
    add("10.1.2", 1009, "binary of %d bytes (limit+1) -> 1009" % (n + 1),
        fail_case([sframe(BIN, os.urandom(n + 1))], 1009))
    half = n // 2 + 1
    add("10.1.3", 1009, "fragmented text totalling %d bytes (limit+1) -> 1009" % (n + 1),
        fail_case([sframe(TEXT, b"x" * half, fin=False), sframe(CONT, b"y" * (n + 1 - half))],
                  1009))


# ---------------------------------------------------------------------------
def read_request(sock, port):
    """Reads and checks the client's opening handshake (RFC 6455 4.1).
    Returns (path, key, bytes after the head)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = sock.recv(4096)
        if not d:
            raise Closed()
        buf += d
        if len(buf) > 65536:
            raise Fail("request head too large")
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[0] != "GET" or parts[2] != "HTTP/1.1":
        raise Fail("bad request line %r" % lines[0])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs.setdefault(k.strip().lower(), []).append(v.strip())
    one = {k: v[0] for k, v in hdrs.items()}
    if one.get("host") not in ("127.0.0.1:%d" % port,):
        raise Fail("bad Host header %r" % one.get("host"))
    if one.get("upgrade", "").lower() != "websocket":
        raise Fail("bad Upgrade header %r" % one.get("upgrade"))
    if "upgrade" not in [t.strip().lower() for t in one.get("connection", "").split(",")]:
        raise Fail("bad Connection header %r" % one.get("connection"))
    if one.get("sec-websocket-version") != "13":
        raise Fail("bad Sec-WebSocket-Version %r" % one.get("sec-websocket-version"))
    key = one.get("sec-websocket-key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except ValueError:
        raise Fail("Sec-WebSocket-Key is not 16 base64 bytes: %r" % key)
    if "sec-websocket-extensions" in one:
        raise Fail("client offered extensions nobody asked for")
    return parts[1], key, rest


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(ARGS.timeout)
        port = self.server.server_address[1]
        try:
            path, key, rest = read_request(s, port)
        except Fail as e:
            s.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            report(None, "request", str(e))
            return
        except (OSError, Closed):
            return
        cid = path[len("/case/"):] if path.startswith("/case/") else None
        index = INDEX.get(cid)
        if index is None:
            s.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            return
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        s.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept).encode())
        peer = Peer(s, rest, ARGS.timeout)
        try:
            CASES[index][3](peer)
            why = None
        except Fail as e:
            why = str(e)
        except Closed:
            why = "TCP closed unexpectedly"
        except OSError as e:
            why = "%s: %s" % (type(e).__name__, e)
        report(index, cid, why)


def report(index, cid, why):
    with LOCK:
        if index is None:
            print("not ok 0 - %s # %s" % (cid, why), flush=True)
            return
        _, _, desc, _ = CASES[index]
        line = "%s %d - %s %s" % ("not ok" if why else "ok", index + 1, cid, desc)
        print(line + (" # " + why if why else ""), flush=True)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


ARGS = None
INDEX = {}


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--max-message", type=int)
    ap.add_argument("--timeout", type=float, default=TIMEOUT)
    ap.add_argument("--lifetime", type=float, default=600)
    ap.add_argument("--list", action="store_true")
    ARGS = ap.parse_args()
    if ARGS.max_message is not None:
        limit_cases(ARGS.max_message)
    for i, c in enumerate(CASES):
        INDEX[c[0]] = i
    if ARGS.list:
        for cid, code, desc, _ in CASES:
            print(cid, code, desc)
        return 0
    srv = Server(("127.0.0.1", ARGS.port), Handler)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    print("PORT %d" % srv.server_address[1], flush=True)
    print("1..%d" % len(CASES), flush=True)
    stop.wait(ARGS.lifetime if ARGS.lifetime > 0 else None)
    srv.shutdown()
    srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
