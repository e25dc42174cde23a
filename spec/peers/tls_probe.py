#!/usr/bin/python3
"""TLS probes against a wss:// server on 127.0.0.1 (stdlib + openssl CLI).

  tls_probe.py close-notify PORT CA   WebSocket echo + close, then expects the
                                      server's close_notify before TCP EOF
  tls_probe.py renegotiate PORT CA    TLS 1.2 renegotiation must be refused
  tls_probe.py tls11 PORT CA          a TLS 1.1 client must be refused

Prints one result line and exits 0 when the server behaved, 1 otherwise.
"""
import base64
import os
import socket
import ssl
import subprocess
import sys


def ws_handshake(s):
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n" % key).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("closed during handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise SystemExit("no 101: %r" % head[:80])
    return head.split(b"\r\n\r\n", 1)[1]


def frame(opcode, payload):
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


def close_notify(port, ca):
    ctx = ssl.create_default_context(cafile=ca)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="127.0.0.1",
                        suppress_ragged_eofs=False)
    rest = ws_handshake(s)
    s.sendall(frame(1, b"x"))
    data = rest
    while len(data) < 2 or data[0] & 0x0F != 8:
        chunk = s.recv(4096)
        if not chunk:
            print("server closed before its close frame")
            return 1
        data += chunk
        if len(data) >= 2 and data[0] & 0x0F != 8:
            data = data[2 + (data[1] & 0x7F):]  # skip a short data frame
    s.sendall(frame(8, data[2:4]))
    try:
        while s.recv(4096):
            pass
    except ssl.SSLEOFError as e:
        print("TCP EOF without close_notify: %s" % e)
        return 1
    print("clean close_notify")
    return 0


def s_client(port, ca, args, stdin):
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                        "-CAfile", ca] + args, input=stdin, capture_output=True,
                       timeout=15)
    return (p.stdout + p.stderr).decode(errors="replace")


def renegotiate(port, ca):
    out = s_client(port, ca, ["-tls1_2"], b"R\n")
    if "RENEGOTIATING" in out and "no renegotiation" in out:
        print("renegotiation refused")
        return 0
    print("unexpected s_client output:\n" + out)
    return 1


def tls11(port, ca):
    out = s_client(port, ca, ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"], b"")
    if "alert protocol version" in out:
        print("tls 1.1 refused")
        return 0
    print("unexpected s_client output:\n" + out)
    return 1


if __name__ == "__main__":
    mode, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    sys.exit({"close-notify": close_notify, "renegotiate": renegotiate,
              "tls11": tls11}[mode](port, ca))
