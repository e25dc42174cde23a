#!/usr/bin/python3
"""A WebSocket client that sends two messages and then resets (stdlib only;
frames from conformance.py).

  /usr/bin/python3 reset_client.py --port N [--tls] [--delay SECS]

Connects to 127.0.0.1:N (over TLS without verifying the certificate, with
--tls), upgrades, waits --delay seconds (default 0.3), sends the masked text
frames "one" and "two" in one write and, once the server's kernel has
acknowledged them, closes the socket with SO_LINGER 0: the server gets a
TCP reset (and, over TLS, no close_notify). Exits 0 once it has reset, 1
if the upgrade failed. The server's side of
spec/badpeer_spec.lua's reset cases: raw_server.py --mode reset is the
client's.
"""
import argparse
import base64
import os
import socket
import ssl
import sys
import time

from conformance import TEXT, arm_reset, frame  # masked with a fresh key by default


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls", action="store_true")
    p.add_argument("--delay", type=float, default=0.3)
    args = p.parse_args()
    raw = socket.create_connection(("127.0.0.1", args.port), timeout=10)
    s = raw
    if args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n" % (args.port, key)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    if not head.startswith(b"HTTP/1.1 101 "):
        sys.stderr.write("reset_client: no upgrade: %r\n" % head[:200])
        return 1
    time.sleep(args.delay)
    s.sendall(frame(TEXT, b"one") + frame(TEXT, b"two"))
    # wrap_socket took raw's descriptor: s is the socket either way.
    arm_reset(s)
    s.close()  # the reset; closing an SSLSocket sends no close_notify
    print("RESET")
    return 0


if __name__ == "__main__":
    sys.exit(main())
