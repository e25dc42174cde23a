#!/usr/bin/env node
// Interop client built on node ws (Debian node-ws 8.11).
//
//   NODE_PATH=/usr/share/nodejs node node_client.js URL [--ca FILE]
//       [--subprotocol NAME] [--no-compression | --deflate PARAMS] [--timeout SECS]
//
// Connects to an echo server (ws:// or wss://), runs a fixed list of cases and
// prints TAP.  Exit status 0 iff every case passed.  Each case is bounded by
// 10 s, the whole run by --timeout (default 60 s).
//
// --deflate PARAMS runs the permessage-deflate cases instead (DEFLATE_CASES)
// with threshold 0 (every message compressed), offering "default" (ws' own
// offer) or a comma-separated list of server_no_context_takeover,
// client_no_context_takeover, server_max_window_bits=N,
// client_max_window_bits=N.  The "extension" case prints the server's
// Sec-WebSocket-Extensions as "# extension: <value>" and the "inflated" case
// prints "# inflated: <n>", the number of compressed messages received.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const WebSocket = require('ws');
// Not exported by ws' package.json: loaded by its path (the same module).
const PerMessageDeflate = require(path.join(
  path.dirname(require.resolve('ws')), 'lib', 'permessage-deflate.js'));

// Counts compressed messages (decompress is called once per frame of one).
let inflatedCount = 0;
const decompress = PerMessageDeflate.prototype.decompress;
PerMessageDeflate.prototype.decompress = function (data, fin, cb) {
  if (fin) inflatedCount++;
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
    if (!names[k]) { console.error('unknown deflate parameter ' + k); process.exit(2); }
    o[names[k]] = v === undefined ? true : parseInt(v, 10);
  }
  return o;
}

const CASE_TIMEOUT = 10000;
const a = { url: null, ca: null, subprotocol: null, compression: true, deflate: false, timeout: 60 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const k = argv[i];
  if (k === '--ca') a.ca = argv[++i];
  else if (k === '--subprotocol') a.subprotocol = argv[++i];
  else if (k === '--no-compression') a.compression = false;
  else if (k === '--deflate') { a.compression = deflateOptions(argv[++i]); a.deflate = true; }
  else if (k === '--timeout') a.timeout = parseFloat(argv[++i]);
  else if (!k.startsWith('-') && a.url === null) a.url = k;
  else {
    console.error('usage: node_client.js URL [--ca FILE] [--subprotocol NAME] [--no-compression | --deflate PARAMS]');
    process.exit(2);
  }
}
if (!a.url) { console.error('missing URL'); process.exit(2); }

setTimeout(() => { console.log('Bail out! overall timeout'); process.exit(1); }, a.timeout * 1000).unref();

// message queue so cases can await the next message
const queue = [];
let waiter = null;
function nextMessage() {
  if (queue.length) return Promise.resolve(queue.shift());
  return new Promise((resolve) => { waiter = resolve; });
}
function withTimeout(p, ms) {
  let t;
  return Promise.race([p, new Promise((_, rej) => { t = setTimeout(() => rej(new Error('timeout')), ms); })])
    .finally(() => clearTimeout(t));
}

function sameMessage(got, data, isBinary) {
  if (got.isBinary !== isBinary) return `type mismatch: sent ${isBinary ? 'binary' : 'text'}`;
  const want = Buffer.isBuffer(data) ? data : Buffer.from(data, 'utf8');
  if (!got.data.equals(want)) return `payload mismatch (${got.data.length} vs ${want.length} bytes)`;
  return null;
}

function echo(data, isBinary) {
  return async (ws) => {
    ws.send(data, { binary: isBinary });
    return sameMessage(await nextMessage(), data, isBinary);
  };
}

function fragmented(parts, isBinary) {
  return async (ws) => {
    parts.forEach((p, i) => ws.send(p, { binary: isBinary, fin: i === parts.length - 1 }));
    const whole = isBinary ? Buffer.concat(parts) : parts.join('');
    return sameMessage(await nextMessage(), whole, isBinary);
  };
}

// About n bytes of JSON-like text: repetitive, so it compresses.
function jsonText(n) {
  const items = [];
  let size = 2;
  for (let i = 0; size < n; i++) {
    const item = `{"id":${i},"name":"player${i % 97}","x":${i * 7 % 1000},"y":${i * 13 % 1000},"alive":true}`;
    items.push(item);
    size += item.length + 1;
  }
  return '[' + items.join(',') + ']';
}

const closeCase = (ws) => new Promise((resolve) => {
  ws.once('close', (code, reason) => resolve(code === 4000 ? null : `server close code ${code} reason '${reason}'`));
  ws.close(4000, 'bye');
});

let responseExtensions;
const DEFLATE_CASES = [
  ['extension', async (ws) => {
    console.log(`# extension: ${responseExtensions}`);
    if (!responseExtensions || !responseExtensions.startsWith('permessage-deflate')) return 'permessage-deflate not negotiated';
    if (!ws._extensions[PerMessageDeflate.extensionName]) return 'ws does not use permessage-deflate';
    return null;
  }],
  ['json text', echo(jsonText(2000), false)],
  ['1 MiB text', (ws) => echo(jsonText(1 << 20), false)(ws)],
  ['256 KiB binary', (ws) => echo(crypto.randomBytes(256 << 10), true)(ws)],
  ['fragmented text', fragmented([jsonText(100), jsonText(200), '', jsonText(50) + ' ✓'], false)],
  ['empty text', echo('', false)],
  ['inflated', async () => {
    console.log(`# inflated: ${inflatedCount}`);
    return inflatedCount > 0 ? null : 'no compressed message received';
  }],
  ['close 4000 bye', closeCase],
];

const CASES = [
  ['text', echo('hello', false)],
  ['utf-8 text', echo('héllo wörld ✓ 🎉', false)],
  ['binary all 256 byte values', echo(Buffer.from([...Array(256).keys()]), true)],
  ['empty text', echo('', false)],
  ['empty binary', echo(Buffer.alloc(0), true)],
  ['16 MiB binary', (ws) => echo(crypto.randomBytes(16 << 20), true)(ws)],
  ['1 MiB text', echo('abcdefghijklmnop'.repeat(65536), false)],
  ['fragmented text', fragmented(['frag', 'mented ', 'mess', 'age ✓'], false)],
  ['fragmented binary', fragmented([Buffer.from([0, 1]), Buffer.alloc(0), Buffer.from([2, 3, 255])], true)],
  ['ping abc -> pong', (ws) => new Promise((resolve) => {
    const onPong = (d) => {
      if (d.toString() !== 'abc') return;
      ws.off('pong', onPong);
      resolve(null);
    };
    ws.on('pong', onPong);
    ws.ping('abc');
  })],
  ['subprotocol', async (ws) => {
    if (a.subprotocol && ws.protocol !== a.subprotocol) return `negotiated '${ws.protocol}', wanted '${a.subprotocol}'`;
    if (!a.subprotocol && ws.protocol) return `server chose '${ws.protocol}' although none was offered`;
    return null;
  }],
  ['close 4000 bye', closeCase],
];

async function main() {
  const cases = a.deflate ? DEFLATE_CASES : CASES;
  console.log(`1..${cases.length}`);
  const opts = { perMessageDeflate: a.compression, maxPayload: 64 << 20, handshakeTimeout: 10000 };
  if (a.ca) opts.ca = fs.readFileSync(a.ca);
  const ws = new WebSocket(a.url, a.subprotocol ? [a.subprotocol] : [], opts);
  ws.on('upgrade', (res) => { responseExtensions = res.headers['sec-websocket-extensions']; });
  ws.on('message', (data, isBinary) => {
    const m = { data: Buffer.isBuffer(data) ? data : Buffer.concat(data), isBinary };
    if (waiter) { const w = waiter; waiter = null; w(m); } else queue.push(m);
  });
  ws.on('error', (e) => { if (!opened) connectErr = e; });
  let opened = false, connectErr = null;
  try {
    await withTimeout(new Promise((resolve, reject) => {
      ws.once('open', () => { opened = true; resolve(); });
      ws.once('close', () => reject(connectErr || new Error('closed before open')));
    }), CASE_TIMEOUT);
  } catch (e) {
    cases.forEach(([name], i) => console.log(`not ok ${i + 1} - ${name} # connect failed: ${e.message}`));
    return cases.length;
  }
  let failed = 0;
  for (let i = 0; i < cases.length; i++) {
    const [name, fn] = cases[i];
    let err;
    try { err = await withTimeout(Promise.resolve(fn(ws)), CASE_TIMEOUT); } catch (e) { err = e.message; }
    if (err) { failed++; console.log(`not ok ${i + 1} - ${name} # ${err}`); } else console.log(`ok ${i + 1} - ${name}`);
  }
  ws.terminate();
  return failed;
}

main().then((failed) => process.exit(failed ? 1 : 0), (e) => { console.log(`Bail out! ${e}`); process.exit(1); });
