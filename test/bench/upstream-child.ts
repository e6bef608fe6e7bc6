// The benchmark's upstream: the cheapest server that still behaves like
// storage for a proxy (reads every body byte, answers 200 with a tiny body,
// keeps connections alive). Run as a child: node upstream-child.js
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

const BODY = Buffer.from('ok\n');
const HEADERS = { 'content-type': 'text/plain', 'content-length': String(BODY.length) };

const server = createServer({ requestTimeout: 0 }, (req, res) => {
  // Consume the body fully before answering, as a store would (and so a
  // proxy's upload path is measured end to end, not cut short).
  req.resume();
  req.once('end', () => {
    res.writeHead(200, HEADERS);
    res.end(BODY);
  });
  req.once('error', () => res.destroy());
});
// Longer than any proxy pool's idle timeout, so the proxies close idle
// upstream connections first (no request ever lands on a closing socket).
server.keepAliveTimeout = 65_000;
server.headersTimeout = 66_000;
server.on('clientError', (_err, socket) => socket.destroy());

server.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ msg: 'listening', port: (server.address() as AddressInfo).port }));
});

const stop = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
