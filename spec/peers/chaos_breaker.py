#!/usr/bin/python3
"""Breaks RFC 6455 against chaos_serve.py, to show that its soak would catch a
client that does (stdlib only; the upgrade and frames from conformance.py).

  /usr/bin/python3 chaos_breaker.py --port N

Three sessions, each of which chaos_serve.py must end with the close code
4001 and the reason naming the breach: an unmasked frame, a pong for no ping,
and a close code other than the one the server closed with. Prints TAP;
exits 0 iff all three were caught.
"""
import argparse
import struct
import sys

sys.dont_write_bytecode = True
from conformance import CLOSE, PONG, TEXT, Closed, Conn, Fail, close_payload, frame  # noqa: E402

# (request path, what to send after the upgrade, the reason 4001 must give)
BREACHES = [
    ("/echo", frame(TEXT, b"hello", mask=False), "unmasked frame"),
    ("/echo", frame(PONG, b"no ping"), "pong does not match the ping"),
    ("/close/1000", frame(TEXT, b"hello") + frame(CLOSE, close_payload(1001)),
     "closed with 1001, not 1000"),
]


def session(port, path, data):
    """Upgrades (conformance.Conn), sends data, and returns the (code,
    reason) of the last close frame the server sent before it closed TCP or
    went silent: its answer to the breach."""
    try:
        c = Conn("127.0.0.1", port, path, 5.0)
    except (Fail, OSError) as e:
        return "no upgrade: %s" % e
    c.write(data)
    last = None
    try:
        while True:
            _, op, payload = c.read_frame()
            if op == CLOSE and len(payload) >= 2:
                last = (struct.unpack("!H", payload[:2])[0], payload[2:].decode())
    except (Closed, Fail):
        pass
    c.sock.close()
    return last


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
