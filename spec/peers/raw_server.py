#!/usr/bin/python3
"""Misbehaving WebSocket server for testing clients (stdlib only).

  /usr/bin/python3 raw_server.py --port 0 --mode MODE [--lifetime SECS]
                                 [--cert PEM --key PEM]

Prints "PORT <n>" once listening, serves every connection in a thread until
SIGTERM/SIGINT (or --lifetime seconds, default 600, 0 = forever), exits 0.
Each connection is held at most --hold seconds (default 30).

Modes (the handshake is read first in every mode):
  garbage      reply to the handshake with 64 random bytes
  bad-accept   101 response with a wrong Sec-WebSocket-Accept
  no-101       "HTTP/1.1 403 Forbidden", body "go away", Content-Length 7
  silent       never respond (holds the connection)
  half         send half of a 101 response, then stall
  masked       valid handshake, then a masked text frame "hello"
  reserved-op  valid handshake, then a frame with opcode 3
  bad-utf8     valid handshake, then a text frame C0 AF
  close-1002   valid handshake, then close frame 1002 "nope"
  drop         valid handshake, then TCP close without a close frame
  huge         valid handshake, then a binary header announcing 2^40 bytes
  protocol     handshake answering Sec-WebSocket-Protocol: unoffered
  extension    handshake answering Sec-WebSocket-Extensions: x-unknown
  mute         valid handshake, then reads and ignores everything: never a
               pong, never a close reply (a dead peer for keepalive tests)
  reset        valid handshake; 0.3 s later text frames "one" and "two",
               then, as soon as the client's kernel has acknowledged them,
               a TCP reset (SO_LINGER 0)
As an HTTP proxy answering CONNECT (the request is read as a handshake is):
  tunnel-junk  "200 Connection established", then bytes before the client
               has sent any
  big-head     "200" and a header line that never ends (20 KiB)
With --cert and --key it speaks TLS (wss://).
After the misbehaviour the server reads (and discards) until the client
closes; a client close frame gets a close reply (except in `drop` and
`mute`).
"""
import argparse
import base64
import hashlib
import os
import signal
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time

sys.dont_write_bytecode = True
from conformance import arm_reset  # noqa: E402

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MODES = ["garbage", "bad-accept", "no-101", "silent", "half", "masked", "reserved-op",
         "bad-utf8", "close-1002", "drop", "huge", "protocol", "extension", "mute", "reset",
         "tunnel-junk", "big-head"]
ARGS = None


def accept_key(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def response(key, extra=""):
    return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s\r\n"
            % (accept_key(key), extra)).encode()


def frame(opcode, payload, fin=True):
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        return struct.pack("!BB", b0, n) + payload
    if n < 65536:
        return struct.pack("!BBH", b0, 126, n) + payload
    return struct.pack("!BBQ", b0, 127, n) + payload


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        end = time.monotonic() + ARGS.hold
        s.settimeout(ARGS.hold)
        if ARGS.cert:
            try:
                s.do_handshake()
            except OSError:
                return
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                d = s.recv(4096)
                if not d or len(buf) > 65536:
                    return
                buf += d
        except OSError:
            return
        head, rest = buf.split(b"\r\n\r\n", 1)
        key = ""
        for line in head.decode("latin-1").split("\r\n")[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "sec-websocket-key":
                key = v.strip()
        mode = ARGS.mode
        try:
            if mode == "garbage":
                s.sendall(os.urandom(64))
            elif mode == "bad-accept":
                s.sendall(response(base64.b64encode(os.urandom(16)).decode()))
            elif mode == "no-101":
                s.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n"
                          b"Content-Length: 7\r\nConnection: close\r\n\r\ngo away")
            elif mode == "silent":
                pass
            elif mode == "tunnel-junk":
                s.sendall(b"HTTP/1.1 200 Connection established\r\n\r\njunk")
            elif mode == "big-head":
                s.sendall(b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 20480)
            elif mode == "half":
                r = response(key)
                s.sendall(r[:len(r) // 2])
            elif mode == "protocol":
                s.sendall(response(key, "Sec-WebSocket-Protocol: unoffered\r\n"))
            elif mode == "extension":
                s.sendall(response(key, "Sec-WebSocket-Extensions: x-unknown\r\n"))
            else:
                s.sendall(response(key))
                if mode == "masked":
                    mkey = os.urandom(4)
                    data = bytes(b ^ mkey[i % 4] for i, b in enumerate(b"hello"))
                    s.sendall(bytes([0x81, 0x80 | 5]) + mkey + data)
                elif mode == "reserved-op":
                    s.sendall(frame(3, b"reserved"))
                elif mode == "bad-utf8":
                    s.sendall(frame(1, b"\xc0\xaf"))
                elif mode == "close-1002":
                    s.sendall(frame(8, struct.pack("!H", 1002) + b"nope"))
                elif mode == "drop":
                    s.shutdown(socket.SHUT_RDWR)
                    return
                elif mode == "huge":
                    s.sendall(struct.pack("!BBQ", 0x82, 127, 1 << 40) + b"\x00" * 16)
                elif mode == "reset":
                    time.sleep(0.3)
                    s.sendall(frame(1, b"one") + frame(1, b"two"))
                    arm_reset(s)
                    return
                elif mode == "mute":
                    while time.monotonic() < end and s.recv(65536):
                        pass
                    return
            self.drain(s, rest, end, mode)
        except OSError:
            pass

    def drain(self, s, buf, end, mode):
        """Discard input until the client closes; answer a client close frame
        with a close frame (when a handshake was completed) and hang up."""
        ws_mode = mode not in ("garbage", "bad-accept", "no-101", "silent", "half")
        while time.monotonic() < end:
            if ws_mode and len(buf) >= 2 and buf[0] & 0x0F == 8:
                n = buf[1] & 0x7F
                if n < 126 and len(buf) >= 2 + (4 if buf[1] & 0x80 else 0) + n:
                    if mode != "close-1002":  # close-1002 already sent its close
                        s.sendall(frame(8, b""))
                    return
            s.settimeout(max(0.01, end - time.monotonic()))
            d = s.recv(65536)
            if not d:
                return
            buf = (buf + d)[-4096:] if not ws_mode else (buf + d)
            if ws_mode and len(buf) > 2 and buf[0] & 0x0F != 8:
                buf = self.skip_frames(buf)

    @staticmethod
    def skip_frames(buf):
        # drop complete non-close frames from the front of buf
        while len(buf) >= 2 and buf[0] & 0x0F != 8:
            n, off = buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, off = struct.unpack("!H", buf[2:4])[0], 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, off = struct.unpack("!Q", buf[2:10])[0], 10
            off += 4 if buf[1] & 0x80 else 0
            if len(buf) < off + n:
                break
            buf = buf[off + n:]
        return buf


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--mode", required=True, choices=MODES)
    ap.add_argument("--hold", type=float, default=30)
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
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    print("PORT %d" % srv.server_address[1], flush=True)
    stop.wait(ARGS.lifetime if ARGS.lifetime > 0 else None)
    srv.shutdown()
    srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
