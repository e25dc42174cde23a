#!/usr/bin/env node
// Echo server built on node ws (Debian node-ws 8.11).
//
//   NODE_PATH=/usr/share/nodejs node node_echo_server.js --port 0
//       [--subprotocols a,b] [--compression | --deflate PARAMS] [--max-size N]
//       [--tls CERT KEY] [--path-check PATH] [--lifetime SECS]
//
// --compression turns on ws' permessage-deflate defaults (threshold 1 KiB).
// --deflate PARAMS turns it on with threshold 0 (every message compressed)
// and PARAMS: "default" or a comma-separated list of
// server_no_context_takeover, client_no_context_takeover,
// server_max_window_bits=N, client_max_window_bits=N (ws' perMessageDeflate
// serverNoContextTakeover, clientNoContextTakeover, serverMaxWindowBits,
// clientMaxWindowBits), level=N (zlibDeflateOptions.level).
//
// Prints "PORT <n>" once listening; exits 0 on SIGTERM/SIGINT (or after
// --lifetime seconds, default 600, 0 = forever).
// Same commands as py_echo_server.py: close:<code>:<reason>, ping:<data>,
// frag:<n>:<text>, subprotocol?, headers?, path?, inflated? (the number of
// compressed messages received on this connection, or "none"); everything
// else is echoed with the same type.
'use strict';
const fs = require('fs');
const http = require('http');
const https = require('https');
const { WebSocketServer } = require('ws');
// Not exported by ws' package.json: loaded by its path (the same module).
const PerMessageDeflate = require(require('path').join(
  require('path').dirname(require.resolve('ws')), 'lib', 'permessage-deflate.js'));

// Counts compressed messages (decompress is called once per frame of one).
const decompress = PerMessageDeflate.prototype.decompress;
PerMessageDeflate.prototype.decompress = function (data, fin, cb) {
  if (fin) this.inflated = (this.inflated || 0) + 1;
  return decompress.call(this, data, fin, cb);
};

// "default" | "a,b=N,..." -> ws' perMessageDeflate options, threshold 0.
function deflateOptions(spec) {
  const names = {
    server_no_context_takeover: 'serverNoContextTakeover',
    client_no_context_takeover: 'clientNoContextTakeover',
    server_max_window_bits: 'serverMaxWindowBits',
    client_max_window_bits: 'clientMaxWindowBits',
  };
  const o = { threshold: 0 };
  for (const item of spec.split(',').map((x) => x.trim())) {
    if (item === '' || item === 'default') continue;
    const [k, v] = item.split('=');
    if (k === 'level') o.zlibDeflateOptions = { level: parseInt(v, 10) };
    else if (names[k]) o[names[k]] = v === undefined ? true : parseInt(v, 10);
    else { console.error('unknown deflate parameter ' + k); process.exit(2); }
  }
  return o;
}

function parseArgs(argv) {
  const a = { port: 0, subprotocols: [], compression: false,
              maxSize: 32 * 1024 * 1024, tls: null, pathCheck: null, lifetime: 600 };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k === '--port') a.port = parseInt(argv[++i], 10);
    else if (k === '--subprotocols') a.subprotocols = argv[++i].split(',').filter(Boolean);
    else if (k === '--compression') a.compression = true;
    else if (k === '--no-compression') a.compression = false;
    else if (k === '--deflate') a.compression = deflateOptions(argv[++i]);
    else if (k === '--max-size') a.maxSize = parseInt(argv[++i], 10);
    else if (k === '--tls') { a.tls = [argv[i + 1], argv[i + 2]]; i += 2; }
    else if (k === '--path-check') a.pathCheck = argv[++i];
    else if (k === '--lifetime') a.lifetime = parseFloat(argv[++i]);
    else { console.error('unknown option ' + k); process.exit(2); }
  }
  return a;
}

const args = parseArgs(process.argv.slice(2));

const server = args.tls
  ? https.createServer({ cert: fs.readFileSync(args.tls[0]), key: fs.readFileSync(args.tls[1]) })
  : http.createServer();
server.on('request', (req, res) => { res.writeHead(426); res.end('websocket only\n'); });

const wss = new WebSocketServer({
  server,
  perMessageDeflate: args.compression,
  maxPayload: args.maxSize,
  clientTracking: true,
  verifyClient: args.pathCheck === null ? undefined : (info, cb) => {
    const path = info.req.url.split('?')[0];
    if (path === args.pathCheck) cb(true); else cb(false, 404, 'Not Found');
  },
  // select the first of OUR subprotocols that the client offers
  handleProtocols: (offered) => {
    for (const p of args.subprotocols) if (offered.has(p)) return p;
    return false;
  },
});

function splitFragments(text, n) {
  n = Math.max(1, n);
  const chars = Array.from(text); // do not split surrogate pairs
  const size = Math.ceil(chars.length / n);
  const out = [];
  for (let i = 0; i < n; i++) out.push(chars.slice(i * size, (i + 1) * size).join(''));
  return out;
}

wss.on('connection', (ws, req) => {
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => {
    if (!isBinary) {
      const msg = data.toString('utf8');
      if (msg.startsWith('close:')) {
        const rest = msg.slice(6);
        const i = rest.indexOf(':');
        const code = parseInt(i < 0 ? rest : rest.slice(0, i), 10);
        ws.close(code, i < 0 ? '' : rest.slice(i + 1));
        return;
      }
      if (msg.startsWith('ping:')) {
        const payload = msg.slice(5);
        const onPong = (d) => {
          if (d.toString('utf8') !== payload) return;
          ws.off('pong', onPong);
          ws.send('pong:' + payload);
        };
        ws.on('pong', onPong);
        ws.ping(payload);
        return;
      }
      if (msg.startsWith('frag:')) {
        const rest = msg.slice(5);
        const i = rest.indexOf(':');
        const parts = splitFragments(i < 0 ? '' : rest.slice(i + 1), parseInt(rest, 10));
        parts.forEach((p, j) => ws.send(p, { binary: false, fin: j === parts.length - 1 }));
        return;
      }
      if (msg === 'subprotocol?') { ws.send(ws.protocol || 'none'); return; }
      if (msg === 'headers?') { ws.send(JSON.stringify(req.headers)); return; }
      if (msg === 'path?') { ws.send(req.url); return; }
      if (msg === 'inflated?') {
        const pmd = ws._extensions[PerMessageDeflate.extensionName];
        ws.send(pmd ? String(pmd.inflated || 0) : 'none');
        return;
      }
      ws.send(msg);
      return;
    }
    ws.send(data, { binary: true });
  });
});

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  for (const ws of wss.clients) ws.terminate();
  wss.close();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
if (args.lifetime > 0) setTimeout(() => { console.error('lifetime expired'); stop(); }, args.lifetime * 1000).unref();

server.listen(args.port, '127.0.0.1', () => {
  process.stdout.write('PORT ' + server.address().port + '\n');
});
