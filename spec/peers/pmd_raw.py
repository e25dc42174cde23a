#!/usr/bin/python3
"""Raw permessage-deflate (RFC 7692) peers for testing wsuv (stdlib only):
hand-made compressed frames, decompression bombs and broken negotiation.

  /usr/bin/python3 pmd_raw.py client PORT --attack MODE [--offer EXT]
      [--path PATH] [--timeout SECS] [--size N]
  /usr/bin/python3 pmd_raw.py server --port 0 --attack MODE
      [--extensions EXT] [--hold SECS] [--lifetime SECS]

client: connects to 127.0.0.1:PORT, offers Sec-WebSocket-Extensions EXT
(default "permessage-deflate"; "none" offers nothing), and prints
  STATUS <http status>
  EXTENSIONS <the response's Sec-WebSocket-Extensions, or "none">
then runs the attack and reads what the server sends until a close frame,
EOF or --timeout (default 10 s):
  MESSAGE <text|binary> <compressed 0|1> <length> <sha1 of the payload>
      [echo-ok | echo-bad: whether it equals what attack echo sent]
  CLOSE <code> <ms since the attack started> [reason]   (or EOF <ms> / TIMEOUT)
  SENT <bytes of the attack written before the server stopped reading>
and exits 0.

server: prints "PORT <n>", answers every handshake with 101 and, unless EXT
is "none" (the default), "Sec-WebSocket-Extensions: EXT" (EXT is sent as
given, so it can break RFC 7692), then runs the attack; it reads the
client's frames and logs "CLOSE <code>" when the client's close frame
arrives (answering it with a close frame), and "EOF" when the client
hangs up.  Each connection is held at most --hold s (default 15).  A
request header "X-Pmd-Extensions: EXT" or "X-Pmd-Attack: MODE" overrides
--extensions or --attack for that connection.

Compressed frames use zlib's raw deflate with a sync flush whose trailing
00 00 ff ff is removed (RFC 7692 7.2.1), a fresh stream per message.

Attack modes (in both roles):
  none             nothing (negotiation only)
  echo             (client) sends six compressed messages: a JSON-like text
                   (2 KiB); the same in 3 fragments with a ping between two;
                   a binary; the text in 1-byte fragments; the text ended by
                   a final block (BFINAL, tail kept, RFC 7692 7.2.3.4); the
                   text in two frames each ending with a sync flush; then
                   close 1000.  (server) echoes each message compressed (with
                   the window and context takeover that EXT agreed).
  incompressible   (client) one binary message of --size random bytes
                   (default 1 MiB), compressed: deflate stores it, so it
                   takes more bytes on the wire than it has (printed as
                   "WIRE <n>"); then close 1000
  incompressible-over  the same with --size + 1 bytes
  bomb             one binary frame of ~1 MiB that inflates to --bomb-mib MiB
                   of zeros (default 1000)
  bomb-fragments   a binary message of --bomb-mib fragments, each ~1 KiB
                   inflating to 1 MiB of zeros (default 1024: 1 GiB)
  corrupt          a compressed text frame holding invalid deflate data
  truncated        a compressed text frame whose deflate data stops inside a
                   stored block
  bad-utf8         a compressed text frame that inflates to C0 AF
  rsv1-continuation  a plain text frame (fin=0) then a continuation frame
                   with RSV1 set
  rsv1-ping        a ping with RSV1 set
  rsv1-plain       a compressed text frame (whether or not permessage-deflate
                   was agreed: use with --offer none / --extensions none)
"""
import argparse
import base64
import hashlib
import os
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import zlib

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TAIL = b"\x00\x00\xff\xff"
MODES = ["none", "echo", "incompressible", "incompressible-over", "bomb", "bomb-fragments", "corrupt", "truncated", "bad-utf8",
         "rsv1-continuation", "rsv1-ping", "rsv1-plain"]
ARGS = None


def out(line):
    print(line, flush=True)


def accept_key(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def json_text(n):
    """About n bytes of JSON-like text (compresses well)."""
    items, size, i = [], 2, 0
    while size < n:
        item = '{"id":%d,"name":"player%d","x":%d,"y":%d}' % (i, i % 97, i * 7 % 1000,
                                                            i * 13 % 1000)
        items.append(item)
        size += len(item) + 1
        i += 1
    return ("[" + ",".join(items) + "]").encode()


def deflate(data, wbits=15):
    """One message's payload: raw deflate, sync flush, tail removed."""
    c = zlib.compressobj(6, zlib.DEFLATED, -max(9, wbits))
    d = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert d.endswith(TAIL)
    return d[:-4]


def zeros_chunk():
    """~1 KiB of deflate data that inflates to 1 MiB of zeros, ending at a
    byte boundary with an empty stored block (a full flush: no reference to
    earlier data), so that copies of it chain into one deflate stream."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(b"\x00" * (1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)


def mask_bytes(data, key):
    if not data:
        return data
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def frame(opcode, payload, fin=True, rsv1=False, masked=False):
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    m = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, m | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, m | 126, n)
    else:
        head = struct.pack("!BBQ", b0, m | 127, n)
    if masked:
        key = os.urandom(4)
        return head + key + mask_bytes(payload, key)
    return head + payload


def attack_frames(mode, masked, wbits=15):
    """The frames of an attack, as a list of byte strings."""
    f = lambda *a, **k: frame(*a, masked=masked, **k)  # noqa: E731
    if mode == "bomb":
        return [f(2, zeros_chunk() * (ARGS.bomb_mib or 1000), rsv1=True)]
    if mode == "bomb-fragments":
        chunk = zeros_chunk()
        n = ARGS.bomb_mib or 1024
        return [f(2 if i == 0 else 0, chunk, fin=i == n - 1, rsv1=i == 0) for i in range(n)]
    if mode == "corrupt":
        # BTYPE 11 (reserved): not a deflate block.
        return [f(1, b"\xff\xff\xff\xff\xff\xff", rsv1=True)]
    if mode == "truncated":
        # A stored block announcing 100 bytes with 10 present: the message
        # (with the 00 00 ff ff the receiver appends) ends inside it.
        stored = b"\x00\x64\x00\x9b\xff" + b"a" * 10
        return [f(1, deflate(b"first ") + TAIL + stored, rsv1=True)]
    if mode == "bad-utf8":
        return [f(1, deflate(b"ok \xc0\xaf", wbits), rsv1=True)]
    if mode == "rsv1-continuation":
        return [f(1, b"hello", fin=False), f(0, b" world", rsv1=True)]
    if mode == "rsv1-ping":
        return [f(9, b"ping", rsv1=True)]
    if mode == "rsv1-plain":
        return [f(1, deflate(b"hello hello hello hello hello hello", wbits), rsv1=True)]
    return []


class Reader:
    """Frames from a socket: (fin, rsv1, opcode, payload); None at EOF."""

    def __init__(self, sock, buf=b""):
        self.s, self.buf = sock, buf

    def need(self, n):
        while len(self.buf) < n:
            d = self.s.recv(1 << 20)
            if not d:
                return False
            self.buf += d
        return True

    def next(self):
        if not self.need(2):
            return None
        b0, b1 = self.buf[0], self.buf[1]
        n, off = b1 & 0x7F, 2
        if n == 126:
            if not self.need(4):
                return None
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            if not self.need(10):
                return None
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        key = None
        if b1 & 0x80:
            if not self.need(off + 4):
                return None
            key, off = self.buf[off:off + 4], off + 4
        if not self.need(off + n):
            return None
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        if key:
            payload = mask_bytes(payload, key)
        return bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, payload


def pmd_params(ext):
    """Parameters of a permessage-deflate element (no validation)."""
    p = {}
    if not ext or ext == "none":
        return None
    parts = [x.strip() for x in ext.split(",")[0].split(";")]
    if parts[0] != "permessage-deflate":
        return None
    for item in parts[1:]:
        k, _, v = item.partition("=")
        p[k.strip()] = v.strip().strip('"') or True
    return p


class Messages:
    """Reassembles and inflates the peer's messages."""

    def __init__(self, reader, wbits, no_takeover):
        self.r, self.wbits, self.no_takeover = reader, wbits, no_takeover
        self.inflater = None

    def inflate(self, data):
        if self.inflater is None or self.no_takeover:
            self.inflater = zlib.decompressobj(-self.wbits)
        return self.inflater.decompress(data + TAIL)

    def next(self):
        """("message", opcode, compressed, payload) | ("close", code, reason)
        | ("control", opcode, payload) | None at EOF."""
        parts, first = [], None
        while True:
            f = self.r.next()
            if f is None:
                return None
            fin, rsv1, op, payload = f
            if op >= 8:
                if op == 8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    return ("close", code, payload[2:].decode("utf-8", "replace"))
                if op == 9:
                    return ("control", op, payload)
                continue
            if first is None:
                first = (op, rsv1)
            parts.append(payload)
            if fin:
                data = b"".join(parts)
                if first[1]:
                    data = self.inflate(data)
                return ("message", first[0], first[1], data)


# ---- client -----------------------------------------------------------------

def run_client():
    s = socket.create_connection(("127.0.0.1", ARGS.port), timeout=ARGS.timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
           % (ARGS.path, ARGS.port, key))
    if ARGS.offer != "none":
        req += "Sec-WebSocket-Extensions: %s\r\n" % ARGS.offer
    s.sendall((req + "\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            out("EOF before response")
            return 0
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    out("STATUS %s" % lines[0].split(" ")[1])
    exts = [v.strip() for k, _, v in (l.partition(":") for l in lines[1:])
            if k.strip().lower() == "sec-websocket-extensions"]
    out("EXTENSIONS %s" % (", ".join(exts) if exts else "none"))
    if not lines[0].split(" ")[1] == "101":
        return 0
    params = pmd_params(exts[0] if exts else None) or {}
    swb = int(params.get("server_max_window_bits", 15))
    cwb = int(params.get("client_max_window_bits", 15)) if params.get(
        "client_max_window_bits") not in (None, True) else 15
    reader = Reader(s, rest)
    msgs = Messages(reader, swb, "server_no_context_takeover" in params)
    expected = []
    if ARGS.attack == "echo":
        text = json_text(2000)
        binary = bytes(range(256)) * 8
        comp = deflate(text, cwb)
        third = len(comp) // 3
        f = lambda *a, **k: frame(*a, masked=True, **k)  # noqa: E731
        # 1. whole; 2. in 3 fragments with a ping between two of them
        frames = [f(1, comp, rsv1=True),
                  f(1, comp[:third], fin=False, rsv1=True),
                  f(0, comp[third:2 * third], fin=False),
                  f(9, b"between"),
                  f(0, comp[2 * third:])]
        # 3. binary
        frames.append(f(2, deflate(binary, cwb), rsv1=True))
        # 4. one byte per fragment
        frames += [f(1 if i == 0 else 0, comp[i:i + 1], fin=i == len(comp) - 1, rsv1=i == 0)
                   for i in range(len(comp))]
        # 5. ended by a final block (BFINAL, RFC 7692 7.2.3.4), tail kept
        c = zlib.compressobj(6, zlib.DEFLATED, -max(9, cwb))
        frames.append(f(1, c.compress(text) + c.flush(zlib.Z_FINISH), rsv1=True))
        # 6. two frames, each ending with a sync flush (only the last tail
        # removed)
        c = zlib.compressobj(6, zlib.DEFLATED, -max(9, cwb))
        a = c.compress(text[:1000]) + c.flush(zlib.Z_SYNC_FLUSH)
        b = c.compress(text[1000:]) + c.flush(zlib.Z_SYNC_FLUSH)
        frames += [f(1, a, fin=False, rsv1=True), f(0, b[:-4])]
        frames.append(f(8, struct.pack("!H", 1000)))
        expected = [text, text, binary, text, text, text]
    elif ARGS.attack.startswith("incompressible"):
        data = os.urandom(ARGS.size + (ARGS.attack == "incompressible-over"))
        c = zlib.compressobj(6, zlib.DEFLATED, -max(9, cwb))
        z = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
        out("WIRE %d" % (len(z) - 4))
        frames = [frame(2, z[:-4], rsv1=True, masked=True),
                  frame(8, struct.pack("!H", 1000), masked=True)]
        expected = [data]
    else:
        frames = attack_frames(ARGS.attack, True, cwb)
    t0 = time.monotonic()
    sent = [0]

    def send():
        try:
            for fr in frames:
                s.sendall(fr)
                sent[0] += len(fr)
        except OSError:
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    deadline = t0 + ARGS.timeout
    result = "TIMEOUT"
    try:
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            m = msgs.next()
            ms = int((time.monotonic() - t0) * 1000)
            if m is None:
                result = "EOF %d" % ms
                break
            if m[0] == "close":
                result = "CLOSE %d %d %s" % (m[1], ms, m[2])
                try:
                    s.sendall(frame(8, struct.pack("!H", m[1]), masked=True))
                except OSError:
                    pass
                break
            if m[0] == "message":
                kind = "text" if m[1] == 1 else "binary"
                echo = ""
                if expected:
                    echo = " echo-ok" if expected.pop(0) == m[3] else " echo-bad"
                out("MESSAGE %s %d %d %s%s" % (kind, int(m[2]), len(m[3]),
                                              hashlib.sha1(m[3]).hexdigest(), echo))
    except socket.timeout:
        pass
    except OSError as e:
        result = "EOF %d %s" % (int((time.monotonic() - t0) * 1000), e.__class__.__name__)
    out(result)
    sender.join(1)
    out("SENT %d" % sent[0])
    s.close()
    return 0


# ---- server -----------------------------------------------------------------

class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        end = time.monotonic() + ARGS.hold
        s.settimeout(ARGS.hold)
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                d = s.recv(4096)
                if not d or len(buf) > 65536:
                    return
                buf += d
            head, rest = buf.split(b"\r\n\r\n", 1)
            key, ext, attack = "", ARGS.extensions, ARGS.attack
            for line in head.decode("latin-1").split("\r\n")[1:]:
                k, _, v = line.partition(":")
                k, v = k.strip().lower(), v.strip()
                if k == "sec-websocket-key":
                    key = v
                elif k == "sec-websocket-extensions":
                    out("OFFER %s" % v)
                elif k == "x-pmd-extensions":
                    ext = v
                elif k == "x-pmd-attack" and v in MODES:
                    attack = v
            resp = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n" % accept_key(key))
            if ext != "none":
                resp += "Sec-WebSocket-Extensions: %s\r\n" % ext
            s.sendall((resp + "\r\n").encode())
            params = pmd_params(ext) or {}
            swb = int(params.get("server_max_window_bits", 15))
            cwb = params.get("client_max_window_bits", 15)
            cwb = 15 if cwb is True else int(cwb)
            msgs = Messages(Reader(s, rest), cwb, "client_no_context_takeover" in params)
            deflater = None
            for fr in attack_frames(attack, False, swb):
                s.sendall(fr)
            while time.monotonic() < end:
                s.settimeout(max(0.01, end - time.monotonic()))
                m = msgs.next()
                if m is None:
                    out("EOF")
                    return
                if m[0] == "close":
                    out("CLOSE %d %s" % (m[1], m[2]))
                    s.sendall(frame(8, struct.pack("!H", m[1]) if m[1] != 1005 else b""))
                    return
                if m[0] == "control":
                    s.sendall(frame(10, m[2]))
                    continue
                out("MESSAGE %s %d %d" % ("text" if m[1] == 1 else "binary", int(m[2]),
                                          len(m[3])))
                if attack == "echo":
                    if deflater is None or "server_no_context_takeover" in params:
                        deflater = zlib.compressobj(6, zlib.DEFLATED, -max(9, swb))
                    d = deflater.compress(m[3]) + deflater.flush(zlib.Z_SYNC_FLUSH)
                    s.sendall(frame(m[1], d[:-4], rsv1=True))
        except OSError as e:
            out("ERROR %s" % e.__class__.__name__)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def run_server():
    srv = Server(("127.0.0.1", ARGS.port), Handler)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    out("PORT %d" % srv.server_address[1])
    stop.wait(ARGS.lifetime if ARGS.lifetime > 0 else None)
    srv.shutdown()
    srv.server_close()
    return 0


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="role", required=True)
    c = sub.add_parser("client")
    c.add_argument("port", type=int)
    c.add_argument("--offer", default="permessage-deflate")
    c.add_argument("--path", default="/")
    c.add_argument("--timeout", type=float, default=10)
    c.add_argument("--size", type=int, default=1 << 20)
    srv = sub.add_parser("server")
    srv.add_argument("--port", type=int, default=0)
    srv.add_argument("--extensions", default="none")
    srv.add_argument("--hold", type=float, default=15)
    srv.add_argument("--lifetime", type=float, default=600)
    for p in (c, srv):
        p.add_argument("--attack", default="none", choices=MODES)
        p.add_argument("--bomb-mib", type=int, default=None)
    ARGS = ap.parse_args()
    return run_client() if ARGS.role == "client" else run_server()


if __name__ == "__main__":
    sys.exit(main())
