#!/usr/bin/python3
"""A WebSocket server that treats its clients roughly, for a soak of our
client (spec/peers/chaos_client.lua). Stdlib only.

  /usr/bin/python3 chaos_serve.py --port 0 [--lifetime SECS] [--cert PEM --key PEM]

Prints "PORT <n>"; serves each connection in a thread until SIGTERM or
--lifetime (default 600 s), over TLS with --cert and --key. The request path chooses the behaviour, so the
client knows what to expect:

  /echo             echoes every message, each cut into random fragments
                    written in random slices with pings between them (the
                    pongs must match); a close is answered with its code
  /violation/K      echoes the first message, then breaks RFC 6455 in way K
                    (0..13, see VIOLATIONS); the client must close with the
                    listed code
  /close/CODE       echoes the first message, then closes with CODE and the
                    reason "bye CODE"; the client must answer with CODE
  /abrupt/WHERE     drops the connection: "head" (half a 101 response),
                    "frame" (half a frame), "reset" (a TCP reset once the
                    client's kernel has acknowledged the first echo)
  /http/STATUS      answers STATUS (403, 404, 503) or garbage ("junk")
                    instead of 101
  /slow             reads nothing for 0.3 s, then echoes as /echo

A client that breaks the protocol (an unmasked frame, a wrong pong, a close
code other than asked) is closed with 4001 and the reason.
"""
import argparse
import base64
import hashlib
import random
import signal
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time

sys.dont_write_bytecode = True
from conformance import (BIN, CLOSE, CONT, GUID, PING, PONG, TEXT, apply_mask,  # noqa: E402
                         arm_reset, close_payload, frame)

LIMIT = 65536  # the client's max_message (chaos_client.lua)
# (bytes after the handshake and the first echo, the client's close code)
VIOLATIONS = [
    (frame(TEXT, b"masked"), 1002),                                   # masked by the server
    (frame(TEXT, b"x", rsv=4, mask=False), 1002),                     # RSV1, nothing negotiated
    (frame(3, b"x", mask=False), 1002),                               # reserved opcode
    (frame(PING, b"p" * 126, mask=False), 1002),                      # control over 125 bytes
    (frame(PING, b"p", fin=False, mask=False), 1002),                 # fragmented control
    (frame(CONT, b"x", mask=False), 1002),                            # continuation first
    (frame(TEXT, b"a", fin=False, mask=False) + frame(BIN, b"b", mask=False), 1002),
    (frame(TEXT, b"ok \xc0\xaf", mask=False), 1007),                  # invalid UTF-8
    (frame(TEXT, b"ok \xe2", fin=False, mask=False) + frame(CONT, b"(", mask=False), 1007),
    (frame(CLOSE, close_payload(1005), mask=False), 1002),            # code not for the wire
    (frame(CLOSE, b"\x03", mask=False), 1002),                        # 1-byte close payload
    (frame(CLOSE, close_payload(1000, b"\xff"), mask=False), 1007),   # reason not UTF-8
    (frame(BIN, b"\0" * (LIMIT + 1), mask=False), 1009),              # over max_message
    (struct.pack("!BBQ", 0x82, 127, 1 << 63), 1002),                  # 64-bit length, top bit
]
ARGS = None


class Broke(Exception):
    """The client broke the protocol: close it with 4001 and this reason."""


class Peer:
    def __init__(self, sock, rng):
        self.s, self.rng, self.buf = sock, rng, b""

    def write(self, data):
        """data in random slices."""
        i = 0
        while i < len(data):
            n = self.rng.choice([1, 5, 100, 4096, 65536, 1 << 20])
            self.s.sendall(data[i:i + n])
            i += n

    def need(self, n):
        while len(self.buf) < n:
            d = self.s.recv(65536)
            if not d:
                raise EOFError()
            self.buf += d

    def take(self, n):
        self.need(n)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def head(self):
        while b"\r\n\r\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise EOFError()
            self.buf += d
        i = self.buf.index(b"\r\n\r\n") + 4
        h, self.buf = self.buf[:i], self.buf[i:]
        return h

    def frame(self):
        b0, b1 = self.take(2)
        if not b1 & 0x80:
            raise Broke("unmasked frame")
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self.take(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.take(8))[0]
        key = self.take(4)
        data = apply_mask(self.take(n), key)
        return bool(b0 & 0x80), b0 & 0x0F, data

    def send_message(self, op, payload, pings):
        """op/payload in random fragments with pings between them."""
        cuts = sorted(self.rng.randint(0, len(payload)) for _ in range(self.rng.choice([0, 1, 3])))
        pieces, prev = [], 0
        for c in cuts + [len(payload)]:
            pieces.append(payload[prev:c])
            prev = c
        out = []
        for i, piece in enumerate(pieces):
            out.append(frame(op if i == 0 else CONT, piece, fin=i == len(pieces) - 1, mask=False))
            if self.rng.random() < 0.2:
                p = self.rng.randbytes(self.rng.randint(0, 125))
                pings.append(p)
                out.append(frame(PING, p, mask=False))
        self.write(b"".join(out))

    def echo(self, count=None, want_close=None):
        """Echoes messages (count of them, or until the client closes).
        Returns the client's close code, or None after count messages."""
        pings, parts, op = [], [], None
        while True:
            fin, opcode, payload = self.frame()
            if opcode == PING:
                self.s.sendall(frame(PONG, payload, mask=False))
            elif opcode == PONG:
                if not pings or pings.pop(0) != payload:
                    raise Broke("pong does not match the ping")
            elif opcode == CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                if want_close is not None and code != want_close:
                    raise Broke("closed with %d, not %d" % (code, want_close))
                self.s.sendall(frame(CLOSE, payload[:2], mask=False))
                return code
            else:
                if op is None:
                    op = opcode
                parts.append(payload)
                if fin:
                    self.send_message(op, b"".join(parts), pings)
                    parts, op = [], None
                    if count is not None:
                        count -= 1
                        if count == 0:
                            return None


def answer_upgrade(peer, head):
    key = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
           if line.lower().startswith(b"sec-websocket-key:")]
    accept = base64.b64encode(hashlib.sha1(key[0] + GUID).digest())
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        s.settimeout(15)
        if ARGS.cert:
            try:
                s.do_handshake()
            except OSError:
                return
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = Peer(s, random.Random())
        try:
            head = peer.head()
            path = head.split(b" ")[1].decode()
            parts = path.strip("/").split("/")
            what = parts[0]
            if what == "http":
                if parts[1] == "junk":
                    s.sendall(b"\x00\xffjunk\r\n\r\n")
                else:
                    s.sendall(("HTTP/1.1 %s Nope\r\nContent-Length: 4\r\n\r\nnope"
                               % parts[1]).encode())
                return
            ok = answer_upgrade(peer, head)
            if what == "abrupt" and parts[1] == "head":
                s.sendall(ok[:len(ok) // 2])
                return
            peer.write(ok)
            if what == "abrupt":
                peer.echo(1)
                if parts[1] == "frame":
                    s.sendall(frame(BIN, b"x" * 1000, mask=False)[:500])
                else:
                    arm_reset(s)
                return
            if what == "slow":
                time.sleep(0.3)
                peer.echo()
            elif what == "echo":
                peer.echo()
            elif what == "violation":
                data, code = VIOLATIONS[int(parts[1])]
                peer.echo(1)
                try:
                    s.sendall(data)
                except OSError:
                    return
                peer.echo(want_close=code)
            elif what == "close":
                code = int(parts[1])
                peer.echo(1)
                s.sendall(frame(CLOSE, close_payload(code, b"bye %d" % code), mask=False))
                peer.echo(want_close=code)
        except Broke as e:
            try:
                s.sendall(frame(CLOSE, close_payload(4001, str(e).encode()[:120]), mask=False))
            except OSError:
                pass
        except (EOFError, OSError):
            pass


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--lifetime", type=float, default=600)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ARGS = ap.parse_args()
    srv = Server(("127.0.0.1", ARGS.port), Handler)
    if ARGS.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(ARGS.cert, ARGS.key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    print("PORT %d" % srv.server_address[1], flush=True)
    stop.wait(ARGS.lifetime if ARGS.lifetime > 0 else None)
    srv.shutdown()
    srv.server_close()


if __name__ == "__main__":
    main()
