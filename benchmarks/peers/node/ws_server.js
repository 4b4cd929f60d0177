'use strict';
// A Node `ws` broadcast server: every client of /ws is in the room. POST /broadcast with
// {"count": N, "size": bytes} sends N events to every open client, each event encoded once into
// one Buffer shared by all sends, then answers. Usage: node ws_server.js --port 8092
const http = require('http');
const { performance } = require('perf_hooks');
const { WebSocketServer, WebSocket } = require('ws');

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const host = arg('--host', '127.0.0.1');
const port = Number(arg('--port', '8092'));
const nowSeconds = () => (performance.timeOrigin + performance.now()) / 1000;

function readJson(req, done) {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    try {
      done(null, JSON.parse(Buffer.concat(chunks).toString() || '{}'));
    } catch (err) {
      done(err);
    }
  });
}

function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

let wss;

function broadcast(count, size) {
  const pad = 'x'.repeat(size);
  const started = performance.now();
  let sent = 0;
  for (let seq = 0; seq < count; seq++) {
    const event = { type: 'event', topic: 'bench:all', event: 'bench', data: { seq, sent: nowSeconds(), pad } };
    const buf = Buffer.from(JSON.stringify(event));
    for (const client of wss.clients) {
      if (client.readyState === WebSocket.OPEN) {
        client.send(buf, { binary: false });
        sent++;
      }
    }
  }
  return { events: count, clients: wss.clients.size, sent, elapsed_s: (performance.now() - started) / 1000 };
}

const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/broadcast') {
    readJson(req, (err, body) => {
      if (err) return reply(res, 400, { error: 'bad json' });
      reply(res, 200, broadcast(Number(body.count || 1), Number(body.size || 0)));
    });
  } else if (req.url === '/healthz') {
    reply(res, 200, { clients: wss.clients.size });
  } else {
    reply(res, 404, { error: 'not found' });
  }
});

wss = new WebSocketServer({ server, path: '/ws' });
wss.on('connection', (ws) => {
  ws.on('error', () => {});
});

for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
server.listen(port, host, () => console.log(`node ws_server listening on ${host}:${port}`));
