#!/usr/bin/python3
"""Interop client built on python3-websockets (Debian 10.4).

  /usr/bin/python3 py_client.py URL [--ca FILE] [--subprotocol NAME]
      [--no-compression | --deflate PARAMS] [--timeout SECS]

Connects to an echo server (ws:// or wss://) and runs a fixed list of cases,
printing TAP.  Exit status 0 iff every case passed.  Whole run is bounded by
--timeout (default 60 s); each case by 10 s.

--deflate PARAMS runs the permessage-deflate cases instead (DEFLATE_CASES),
offering "default" (websockets' own offer) or a comma-separated list of
server_no_context_takeover, client_no_context_takeover,
server_max_window_bits=N, client_max_window_bits[=N] (the arguments of
ClientPerMessageDeflateFactory).  The "extension" case prints the server's
Sec-WebSocket-Extensions as "# extension: <value>" and the "inflated" case
prints "# inflated: <n>", the number of compressed messages received.
"""
import argparse
import asyncio
import os
import ssl
import sys

import websockets
from websockets import frames
from websockets.extensions.permessage_deflate import (ClientPerMessageDeflateFactory,
                                                      PerMessageDeflate)

_decode = PerMessageDeflate.decode
INFLATED = [0]


def counting_decode(self, frame, *, max_size=None):
    """PerMessageDeflate.decode, counting compressed messages (RSV1 set on
    the first frame of a text or binary message)."""
    if frame.rsv1 and frame.opcode in (frames.OP_TEXT, frames.OP_BINARY):
        INFLATED[0] += 1
    return _decode(self, frame, max_size=max_size)


PerMessageDeflate.decode = counting_decode

CASE_TIMEOUT = 10


async def roundtrip(ws, msg):
    await ws.send(msg)
    got = await asyncio.wait_for(ws.recv(), CASE_TIMEOUT)
    if type(got) is not type(msg):
        return "type mismatch: sent %s got %s" % (type(msg).__name__, type(got).__name__)
    if got != msg:
        return "payload mismatch (%d vs %d bytes)" % (len(got), len(msg))
    return None


def echo(msg):
    return lambda ws, a: roundtrip(ws, msg)


def echo_made(make):
    """echo of make(), made when the case runs (big payloads)."""
    return lambda ws, a: roundtrip(ws, make())


async def fragmented(ws, a):
    parts = ["frag", "mented ", "mess", "age ✓"]
    await ws.send(parts)  # an iterable is sent as one fragmented message
    got = await asyncio.wait_for(ws.recv(), CASE_TIMEOUT)
    return None if got == "".join(parts) else "got %r" % (got,)


async def fragmented_binary(ws, a):
    parts = [b"\x00\x01", b"", b"\x02\x03\xff"]
    await ws.send(parts)
    got = await asyncio.wait_for(ws.recv(), CASE_TIMEOUT)
    return None if got == b"".join(parts) else "got %r" % (got,)


async def ping(ws, a):
    waiter = await ws.ping(b"abc")
    await asyncio.wait_for(waiter, CASE_TIMEOUT)  # resolved by a pong with payload "abc"
    return None


async def subprotocol(ws, a):
    if a.subprotocol and ws.subprotocol != a.subprotocol:
        return "negotiated %r, wanted %r" % (ws.subprotocol, a.subprotocol)
    if not a.subprotocol and ws.subprotocol:
        return "server chose %r although none was offered" % ws.subprotocol
    return None


async def close(ws, a):
    await asyncio.wait_for(ws.close(4000, "bye"), CASE_TIMEOUT)
    if ws.close_code != 4000:
        return "server close code %r reason %r" % (ws.close_code, ws.close_reason)
    return None


CASES = [
    ("text", echo("hello")),
    ("utf-8 text", echo("héllo wörld ✓ 🎉")),
    ("binary all 256 byte values", echo(bytes(range(256)))),
    ("empty text", echo("")),
    ("empty binary", echo(b"")),
    ("16 MiB binary", echo_made(lambda: os.urandom(16 << 20))),
    ("1 MiB text", echo(("abcdefghijklmnop" * 65536))),
    ("fragmented text", fragmented),
    ("fragmented binary", fragmented_binary),
    ("ping abc -> pong", ping),
    ("subprotocol", subprotocol),
    ("close 4000 bye", close),
]


def json_text(n):
    """About n bytes of JSON-like text: repetitive, so it compresses."""
    items, size, i = [], 2, 0
    while size < n:
        item = '{"id":%d,"name":"player%d","x":%d,"y":%d,"alive":true}' % (
            i, i % 97, i * 7 % 1000, i * 13 % 1000)
        items.append(item)
        size += len(item) + 1
        i += 1
    return "[" + ",".join(items) + "]"


async def fragmented_json(ws, a):
    parts = [json_text(100), json_text(200), "", json_text(50) + " ✓"]
    await ws.send(parts)
    got = await asyncio.wait_for(ws.recv(), CASE_TIMEOUT)
    return None if got == "".join(parts) else "got %d bytes" % len(got)


async def extension(ws, a):
    ext = ws.response_headers.get("Sec-WebSocket-Extensions")
    print("# extension: %s" % ext, flush=True)
    if not ext or not ext.startswith("permessage-deflate"):
        return "permessage-deflate not negotiated"
    if not any(isinstance(e, PerMessageDeflate) for e in ws.extensions):
        return "websockets does not use permessage-deflate"
    return None


async def inflated(ws, a):
    print("# inflated: %d" % INFLATED[0], flush=True)
    return None if INFLATED[0] > 0 else "no compressed message received"


DEFLATE_CASES = [
    ("extension", extension),
    ("json text", echo(json_text(2000))),
    ("1 MiB text", echo_made(lambda: json_text(1 << 20))),
    ("256 KiB binary", echo_made(lambda: os.urandom(256 << 10))),
    ("fragmented text", fragmented_json),
    ("empty text", echo("")),
    ("inflated", inflated),
    ("close 4000 bye", close),
]


def deflate_factory(spec):
    """"a,b=N,..." -> ClientPerMessageDeflateFactory."""
    kw = {}
    for item in spec.split(","):
        item = item.strip()
        if item:
            name, eq, value = item.partition("=")
            kw[name] = int(value) if eq else True
    return ClientPerMessageDeflateFactory(**kw)


async def run(a):
    kw = {"max_size": 64 << 20, "open_timeout": 10, "close_timeout": 5}
    if a.url.startswith("wss://"):
        ctx = ssl.create_default_context(cafile=a.ca) if a.ca else ssl.create_default_context()
        kw["ssl"] = ctx
    if a.subprotocol:
        kw["subprotocols"] = [a.subprotocol]
    if a.no_compression:
        kw["compression"] = None
    cases = CASES
    if a.deflate is not None:
        cases = DEFLATE_CASES
        if a.deflate != "default":
            kw["compression"] = None
            kw["extensions"] = [deflate_factory(a.deflate)]
    print("1..%d" % len(cases), flush=True)
    failed = 0
    try:
        ws = await websockets.connect(a.url, **kw)
    except Exception as e:
        for i, (name, _) in enumerate(cases, 1):
            print("not ok %d - %s # connect failed: %r" % (i, name, e), flush=True)
        return len(cases)
    try:
        for i, (name, fn) in enumerate(cases, 1):
            try:
                err = await asyncio.wait_for(fn(ws, a), CASE_TIMEOUT)
            except asyncio.TimeoutError:
                err = "timeout"
            except Exception as e:
                err = repr(e)
            if err:
                failed += 1
                print("not ok %d - %s # %s" % (i, name, err), flush=True)
            else:
                print("ok %d - %s" % (i, name), flush=True)
    finally:
        ws.transport.abort() if not ws.closed else None
    return failed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--ca")
    ap.add_argument("--subprotocol")
    ap.add_argument("--no-compression", action="store_true")
    ap.add_argument("--deflate", metavar="PARAMS")
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()
    try:
        failed = asyncio.run(asyncio.wait_for(run(a), a.timeout))
    except asyncio.TimeoutError:
        print("Bail out! overall timeout", flush=True)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
