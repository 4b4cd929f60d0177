'use strict';
// A Node Socket.IO v4 broadcast server: every client joins room "all". POST /broadcast with
// {"count": N, "size": bytes} emits N "bench" events {seq, sent, pad} to the room, then answers.
// Usage: node socketio_server.js --port 8093
const http = require('http');
const { performance } = require('perf_hooks');
const { Server } = require('socket.io');

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const host = arg('--host', '127.0.0.1');
const port = Number(arg('--port', '8093'));
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

let io;

function broadcast(count, size) {
  const pad = 'x'.repeat(size);
  const started = performance.now();
  for (let seq = 0; seq < count; seq++) {
    io.to('all').emit('bench', { seq, sent: nowSeconds(), pad });
  }
  return { events: count, clients: io.engine.clientsCount, elapsed_s: (performance.now() - started) / 1000 };
}

const server = http.createServer((req, res) => {
  if (req.url.startsWith('/socket.io/')) return; // handled by Socket.IO's own listener
  if (req.method === 'POST' && req.url === '/broadcast') {
    readJson(req, (err, body) => {
      if (err) return reply(res, 400, { error: 'bad json' });
      reply(res, 200, broadcast(Number(body.count || 1), Number(body.size || 0)));
    });
  } else if (req.url === '/healthz') {
    reply(res, 200, { clients: io.engine.clientsCount });
  } else {
    reply(res, 404, { error: 'not found' });
  }
});

io = new Server(server, { cors: { origin: '*' } });
io.on('connection', (socket) => {
  socket.join('all');
});

for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
server.listen(port, host, () => console.log(`node socketio_server listening on ${host}:${port}`));
