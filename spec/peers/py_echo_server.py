#!/usr/bin/python3
"""Echo server built on python3-websockets (Debian 10.4, legacy asyncio API).

Run with /usr/bin/python3 (the Debian interpreter that has websockets):
  /usr/bin/python3 py_echo_server.py --port 0 [--subprotocols a,b]
      [--no-compression | --deflate PARAMS] [--max-size N] [--tls CERT KEY]
      [--path-check PATH] [--lifetime SECS]

--deflate PARAMS configures permessage-deflate instead of websockets'
defaults (server_max_window_bits=12, client_max_window_bits=12): PARAMS is
"default" (no limits) or a comma-separated list of server_no_context_takeover,
client_no_context_takeover, server_max_window_bits=N, client_max_window_bits=N
(N = 9..15), require_client_max_window_bits; these are the arguments of
websockets' ServerPerMessageDeflateFactory.

Prints "PORT <n>" once listening; exits 0 on SIGTERM/SIGINT (or after
--lifetime seconds, default 600, 0 = forever).

Commands (text messages):
  close:<code>:<reason>  server closes with that code and reason
  ping:<data>            server pings with <data>; on pong sends "pong:<data>"
  frag:<n>:<text>        server sends <text> as a message of n fragments
  subprotocol?           replies with the negotiated subprotocol or "none"
  headers?               replies with JSON of the request headers (lowercased)
  path?                  replies with the request path (incl. query)
  inflated?              replies with the number of compressed messages
                         received so far on this connection, or "none"
                         without permessage-deflate
Everything else is echoed with the same type (text/binary).
"""
import argparse
import asyncio
import http
import json
import signal
import ssl
import sys

import websockets
from websockets.extensions.permessage_deflate import (PerMessageDeflate,
                                                      ServerPerMessageDeflateFactory)
from websockets import frames

_decode = PerMessageDeflate.decode


def counting_decode(self, frame, *, max_size=None):
    """PerMessageDeflate.decode, counting compressed messages (RSV1 set on
    the first frame of a text or binary message)."""
    if frame.rsv1 and frame.opcode in (frames.OP_TEXT, frames.OP_BINARY):
        self.inflated = getattr(self, "inflated", 0) + 1
    return _decode(self, frame, max_size=max_size)


PerMessageDeflate.decode = counting_decode


def split_fragments(text, n):
    n = max(1, n)
    size = -(-len(text) // n) if text else 0
    parts = [text[i * size:(i + 1) * size] for i in range(n)] if size else [""] * n
    return parts


def deflate_params(spec):
    """"default" or "a,b=N,..." -> keyword arguments of the factories."""
    kw = {}
    for item in spec.split(","):
        item = item.strip()
        if not item or item == "default":
            continue
        name, eq, value = item.partition("=")
        kw[name] = int(value) if eq else True
    return kw


async def handler(ws, *_):
    try:
        async for msg in ws:
            if isinstance(msg, str):
                if msg.startswith("close:"):
                    _, code, reason = (msg.split(":", 2) + [""])[:3]
                    await ws.close(int(code), reason)
                    return
                if msg.startswith("ping:"):
                    data = msg[5:]
                    waiter = await ws.ping(data.encode())
                    await asyncio.wait_for(waiter, 10)
                    await ws.send("pong:" + data)
                    continue
                if msg.startswith("frag:"):
                    _, n, text = (msg.split(":", 2) + [""])[:3]
                    await ws.send(split_fragments(text, int(n)))
                    continue
                if msg == "subprotocol?":
                    await ws.send(ws.subprotocol or "none")
                    continue
                if msg == "headers?":
                    hdrs = {}
                    for k, v in ws.request_headers.raw_items():
                        k = k.lower()
                        hdrs[k] = hdrs[k] + ", " + v if k in hdrs else v
                    await ws.send(json.dumps(hdrs))
                    continue
                if msg == "path?":
                    await ws.send(ws.path)
                    continue
                if msg == "inflated?":
                    pmd = [e for e in ws.extensions if isinstance(e, PerMessageDeflate)]
                    await ws.send(str(getattr(pmd[0], "inflated", 0)) if pmd else "none")
                    continue
            await ws.send(msg)
    except (websockets.ConnectionClosed, asyncio.TimeoutError):
        pass


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--subprotocols", default="")
    ap.add_argument("--no-compression", action="store_true")
    ap.add_argument("--deflate", metavar="PARAMS")
    ap.add_argument("--max-size", type=int, default=32 * 1024 * 1024)
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    ap.add_argument("--path-check", metavar="PATH",
                    help="reject (404) handshakes whose path differs")
    ap.add_argument("--lifetime", type=float, default=600)
    a = ap.parse_args()

    ctx = None
    if a.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.tls[0], a.tls[1])

    async def process_request(path, headers):
        if a.path_check is not None and path.split("?")[0] != a.path_check:
            return http.HTTPStatus.NOT_FOUND, [], b"not found\n"
        return None

    def select_subprotocol(client_protos, server_protos):
        # first of OUR list that the client offers
        for p in server_protos:
            if p in client_protos:
                return p
        return None

    subprotocols = [p for p in a.subprotocols.split(",") if p] or None
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))

    compression = {"compression": None if a.no_compression else "deflate"}
    if a.deflate is not None:
        compression = {"compression": None, "extensions": [
            ServerPerMessageDeflateFactory(**deflate_params(a.deflate))]}

    async with websockets.serve(
        handler, "127.0.0.1", a.port, ssl=ctx,
        subprotocols=subprotocols,
        select_subprotocol=select_subprotocol,
        **compression,
        max_size=a.max_size, max_queue=64,
        process_request=process_request,
        close_timeout=2,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print("PORT %d" % port, flush=True)
        try:
            await asyncio.wait_for(stop, a.lifetime if a.lifetime > 0 else None)
        except asyncio.TimeoutError:
            print("lifetime expired", file=sys.stderr)
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except asyncio.TimeoutError:
        pass
    sys.exit(0)
