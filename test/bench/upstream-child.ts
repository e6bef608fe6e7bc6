// The benchmark's upstream: the cheapest server that still behaves like
// storage for a proxy (reads every body byte, answers 200 with a tiny body,
// keeps connections alive). Run as a child: node upstream-child.js
// With '{"certFile":…,"keyFile":…,"names":[…]}': the same over HTTPS, plus a
// DNS server (UDP, loopback) that answers those names with 127.0.0.1, so a
// proxy reaches "real" S3 host names here, as storage would be reached.
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo } from 'node:net';

interface TlsOptions {
  certFile: string;
  keyFile: string;
  names: string[];
}
const tls = process.argv[2] === undefined ? null : (JSON.parse(process.argv[2]) as TlsOptions);

const BODY = Buffer.from('ok\n');
const HEADERS = { 'content-type': 'text/plain', 'content-length': String(BODY.length) };

const handle = (req: IncomingMessage, res: ServerResponse) => {
  // Consume the body fully before answering, as a store would (and so a
  // proxy's upload path is measured end to end, not cut short).
  req.resume();
  req.once('end', () => {
    res.writeHead(200, HEADERS);
    res.end(BODY);
  });
  req.once('error', () => res.destroy());
};
const server = tls
  ? createTlsServer({ requestTimeout: 0, cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile) }, handle)
  : createServer({ requestTimeout: 0 }, handle);
// Longer than any proxy pool's idle timeout, so the proxies close idle
// upstream connections first (no request ever lands on a closing socket).
server.keepAliveTimeout = 65_000;
server.headersTimeout = 66_000;
server.on('clientError', (_err, socket) => socket.destroy());
server.on('tlsClientError', () => {});

// Loaded only here: the plain upstream needs no DNS.
const dns = tls ? await (await import('../helpers/dns-server.js')).startDnsServer(Object.fromEntries(tls.names.map((n) => [n, { A: ['127.0.0.1'] }]))) : null;

server.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ msg: 'listening', port: (server.address() as AddressInfo).port, ...(dns ? { dns: dns.address } : {}) }));
});

const stop = () => {
  void dns?.close();
  server.close(() => process.exit(0));
  server.closeAllConnections();
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
