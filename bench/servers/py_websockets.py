"""py_websockets.py: the python3-websockets peer of the benchmarks (Debian's
python3-websockets, asyncio, run with /usr/bin/python3).

    /usr/bin/python3 bench/servers/py_websockets.py [port [mode]]

port 0 (the default) picks a free one; it listens on 127.0.0.1 and prints
"PORT n" once listening. mode "broadcast": a message whose first byte is "B"
goes to every connection (websockets.broadcast); anything else is echoed, as
in mode "echo" (the default). mode "deflate": the echo with permessage-deflate
(compression="deflate", the library's defaults).
"""
import asyncio
import os
import ssl
import sys

import websockets

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 0
MODE = sys.argv[2] if len(sys.argv) > 2 else "echo"
BROADCAST = MODE == "broadcast"
DEFLATE = MODE == "deflate"
# mode "tls": wss:// with the certificate and key named by BENCH_CERT and
# BENCH_KEY (bench/run makes them).
TLS = MODE == "tls"
CLIENTS = set()


def is_marked(msg):
    if isinstance(msg, bytes):
        return msg[:1] == b"B"
    return msg[:1] == "B"


async def handler(ws, path=None):
    CLIENTS.add(ws)
    try:
        async for msg in ws:
            if BROADCAST and is_marked(msg):
                websockets.broadcast(CLIENTS, msg)
            else:
                await ws.send(msg)
    except websockets.ConnectionClosed:
        pass
    finally:
        CLIENTS.discard(ws)


def tls_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.environ["BENCH_CERT"], os.environ["BENCH_KEY"])
    return ctx


async def main():
    server = await websockets.serve(
        handler,
        "127.0.0.1",
        PORT,
        max_size=64 * 1024 * 1024,
        compression="deflate" if DEFLATE else None,
        ssl=tls_context() if TLS else None,
        ping_interval=None,
        backlog=512,
    )
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    await asyncio.Future()


asyncio.run(main())
