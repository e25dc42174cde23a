#!/usr/bin/python3
"""TLS probes against a wss:// server on 127.0.0.1 (stdlib + openssl CLI).

  tls_probe.py close-notify PORT CA   WebSocket echo + close, then expects the
                                      server's close_notify before TCP EOF
  tls_probe.py renegotiate PORT CA    TLS 1.2 renegotiation must be refused
  tls_probe.py tls11 PORT CA          a TLS 1.1 client must be refused
  tls_probe.py close-reset PORT CA    200 times, 8 side by side: WebSocket
                                      handshake, a close frame, then TCP
                                      closed or reset without waiting (the
                                      server's reply and close_notify hit a
                                      dead socket); then an echo must work

Prints one result line and exits 0 when the server behaved, 1 otherwise.
"""
import base64
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time


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


def close_reset(port, ca):
    ctx = ssl.create_default_context(cafile=ca)
    gone = []

    def peer(n):
        for i in range(n):
            try:
                raw = socket.create_connection(("127.0.0.1", port), timeout=10)
                s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
                ws_handshake(s)
                s.sendall(frame(8, b"\x03\xe8"))
            except (OSError, SystemExit) as e:
                gone.append(str(e))
                return
            time.sleep(0.002 * (i % 3))  # the server may have read it, or not
            if i % 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()

    # Side by side, so that the server's replies are late for some of them.
    threads = [threading.Thread(target=peer, args=(25,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if gone:
        print("the server is gone: %s" % gone[0])
        return 1
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                        server_hostname="127.0.0.1")
    data = ws_handshake(s)
    s.sendall(frame(1, b"still there?"))
    while len(data) < 14:
        chunk = s.recv(4096)
        if not chunk:
            print("closed instead of echoing")
            return 1
        data += chunk
    if data[2:14] != b"still there?":
        print("echo differs: %r" % data)
        return 1
    print("echoes after 200 close-and-reset peers")
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
              "tls11": tls11, "close-reset": close_reset}[mode](port, ca))
