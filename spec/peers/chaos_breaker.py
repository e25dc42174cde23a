#!/usr/bin/python3
"""Breaks RFC 6455 against chaos_serve.py, to show that its soak would catch a
client that does (stdlib only; frames from conformance.py).

  /usr/bin/python3 chaos_breaker.py --port N

Three sessions, each of which chaos_serve.py must end with the close code
4001 and the reason naming the breach: an unmasked frame, a pong for no ping,
and a close code other than the one the server closed with. Prints TAP;
exits 0 iff all three were caught.
"""
import argparse
import base64
import os
import socket
import struct
import sys

sys.dont_write_bytecode = True
from conformance import CLOSE, PONG, TEXT, close_payload, frame  # noqa: E402

# (request path, what to send after the upgrade, the reason 4001 must give)
BREACHES = [
    ("/echo", frame(TEXT, b"hello", mask=False), "unmasked frame"),
    ("/echo", frame(PONG, b"no ping"), "pong does not match the ping"),
    ("/close/1000", frame(TEXT, b"hello") + frame(CLOSE, close_payload(1001)),
     "closed with 1001, not 1000"),
]


def read_frames(s):
    """The (opcode, payload) of every frame until the server closes TCP (or
    stays silent past the socket's timeout)."""
    buf, frames = b"", []
    while True:
        try:
            d = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            d = b""
        if not d:
            return frames
        buf += d
        while len(buf) >= 2:
            n, at = buf[1] & 0x7F, 2
            if n == 126:
                n, at = (struct.unpack("!H", buf[2:4])[0], 4) if len(buf) >= 4 else (None, 0)
            elif n == 127:
                n, at = (struct.unpack("!Q", buf[2:10])[0], 10) if len(buf) >= 10 else (None, 0)
            if n is None or len(buf) < at + n:
                break
            frames.append((buf[0] & 0x0F, buf[at:at + n]))
            buf = buf[at + n:]


def session(port, path, data):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n" % (path, port, key)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            return None
        head += chunk
    s.sendall(data)
    closes = [p for op, p in read_frames(s) if op == CLOSE and len(p) >= 2]
    s.close()
    # The last close frame is the server's answer to the breach.
    return (struct.unpack("!H", closes[-1][:2])[0], closes[-1][2:].decode()) if closes else None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    port = p.parse_args().port
    bad = 0
    for i, (path, data, reason) in enumerate(BREACHES, 1):
        got = session(port, path, data)
        ok = got == (4001, reason)
        bad += not ok
        print("%s %d - %s: closed %s" % ("ok" if ok else "not ok", i, reason, got))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
