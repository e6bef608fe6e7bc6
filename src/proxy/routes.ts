import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { DataPlane } from './data-plane.js';

/**
 * The data plane as Fastify routes: one catch-all (and its root) whose
 * handler takes over the raw request and response. Registered in its own
 * encapsulated context, so the parser below and the not-found handler stay
 * ours when the plugin sits in someone else's app.
 *
 * What Fastify does before the handler: routing (the path is matched, never
 * rewritten: the handler reads `req.url` as sent) and the hooks of the
 * enclosing contexts (`onRequest`, `preParsing`, `preValidation`,
 * `preHandler`), which may refuse before any decision. What it does not:
 * read the body. The one content-type parser accepts every type and reads
 * nothing, so the body is still unread when the handler streams it upstream.
 */
export function registerDataPlane(app: FastifyInstance, plane: DataPlane): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, _payload, done) => done(null));
  const handler = onDataPlane(plane);
  // HEAD is one of `all`'s methods: Fastify must not add its own HEAD for GET.
  app.all('/', { exposeHeadRoute: false }, handler);
  app.all('/*', { exposeHeadRoute: false }, handler);
  // Methods Fastify does not route (PROPFIND, made-up ones) still get the data plane's answer (405, in the provider's format).
  app.setNotFoundHandler(handler);
}

/** A Fastify handler that hands the raw request and response to the data plane (Fastify sends nothing itself). */
export function onDataPlane(plane: DataPlane): (request: FastifyRequest, reply: FastifyReply) => void {
  return (request, reply) => {
    reply.hijack();
    plane.serve(request.raw, reply.raw);
  };
}

/** The prefixes whose 100 Continue waits for a decision, per server this module installed its `checkContinue` on. */
const HELD_PREFIXES = new WeakMap<Server, string[]>();

/**
 * Node sends 100 Continue at once when the server has no `checkContinue`
 * listener. Under `prefix` (every path for '') the data plane sends it once
 * the decision allows the write, so a refused client never sends its body;
 * other paths get theirs at once, as before. One listener per server serves
 * every prefix registered on it (the plugin registered twice). A server that
 * already handles `checkContinue` itself keeps its own handling.
 */
export function holdContinueForDecisions(server: Server, prefix: string): void {
  const held = HELD_PREFIXES.get(server);
  if (held !== undefined) {
    held.push(prefix);
    return;
  }
  if (server.listenerCount('checkContinue') > 0) return;
  const prefixes = [prefix];
  HELD_PREFIXES.set(server, prefixes);
  const under = (url: string, p: string) => p === '' || url === p || url.startsWith(`${p}/`) || url.startsWith(`${p}?`);
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? '/';
    if (!prefixes.some((p) => under(url, p))) res.writeContinue();
    server.emit('request', req, res);
  });
}
