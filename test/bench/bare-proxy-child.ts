// The "bare" peer (a Node reverse proxy, no policy): Fastify 5 + @fastify/http-proxy (undici
// via @fastify/reply-from) with defaults, logging off. Run as a child:
// node bare-proxy-child.js http://127.0.0.1:UPSTREAM_PORT
import httpProxy from '@fastify/http-proxy';
import Fastify from 'fastify';

const upstream = process.argv[2];
if (upstream === undefined) {
  console.error('usage: bare-proxy-child UPSTREAM_URL');
  process.exit(2);
}

// Timeouts off as in residency-proxy (uploads may take minutes); nothing else tuned.
const app = Fastify({ logger: false, requestTimeout: 0, connectionTimeout: 0, keepAliveTimeout: 5_000 });
await app.register(httpProxy, { upstream, http2: false });
await app.listen({ host: '127.0.0.1', port: 0 });
const address = app.server.address();
console.log(JSON.stringify({ msg: 'listening', port: typeof address === 'object' && address !== null ? address.port : 0 }));

const stop = () => {
  app.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
