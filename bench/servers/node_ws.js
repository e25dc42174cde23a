// node_ws.js: the node `ws` peer of the benchmarks. WS_MODULE names the ws
// package to load: /usr/share/nodejs/ws (Debian's node-ws, the baseline), or
// bench/npm/node_modules/ws (npm's ws, which finds bufferutil beside it,
// when `BENCH_NPM=1 bench/deps` installed them). An explicit path, so the
// two can never be mixed up by node's module lookup.
//
//   node bench/servers/node_ws.js [port [mode]]
//
// port 0 (the default) picks a free one; it listens on 127.0.0.1 and prints
// "PORT n" once listening. mode "broadcast": a message whose first byte is
// "B" goes to every open connection (wss.clients.forEach send); anything
// else is echoed, as in mode "echo" (the default). mode "deflate": the
// echo with permessage-deflate (perMessageDeflate: true, ws's defaults).
'use strict';
const WebSocket = require(process.env.WS_MODULE || 'ws');

const port = Number(process.argv[2] || 0);
const mode = process.argv[3];
const broadcast = mode === 'broadcast';
const deflate = mode === 'deflate';
const B = 'B'.charCodeAt(0);

// mode "tls": wss:// with the certificate and key named by BENCH_CERT and
// BENCH_KEY (bench/run makes them), on node's https server.
const tls = mode === 'tls';
const https = tls ? require('https').createServer({
  cert: require('fs').readFileSync(process.env.BENCH_CERT),
  key: require('fs').readFileSync(process.env.BENCH_KEY),
}) : null;

const wss = new WebSocket.Server({
  ...(tls ? { server: https } : { host: '127.0.0.1', port }),
  maxPayload: 64 * 1024 * 1024,
  perMessageDeflate: deflate, // true: ws's defaults (threshold 1024 bytes)
});

wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    if (broadcast && data.length > 0 && data[0] === B) {
      wss.clients.forEach((c) => {
        if (c.readyState === WebSocket.OPEN) c.send(data, { binary: isBinary });
      });
    } else {
      ws.send(data, { binary: isBinary });
    }
  });
  ws.on('error', () => {});
});

if (tls) {
  https.listen(port, '127.0.0.1', () => {
    process.stdout.write(`PORT ${https.address().port}\n`);
  });
} else {
  wss.on('listening', () => {
    process.stdout.write(`PORT ${wss.address().port}\n`);
  });
}
