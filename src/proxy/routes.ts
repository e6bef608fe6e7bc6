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

/**
 * Node sends 100 Continue at once when the server has no `checkContinue`
 * listener. Under `prefix` (every path for '') the data plane sends it once
 * the decision allows the write, so a refused client never sends its body;
 * other paths get theirs at once, as before. A server that already handles
 * `checkContinue` keeps its own handling.
 */
export function holdContinueForDecisions(server: Server, prefix: string): void {
  if (server.listenerCount('checkContinue') > 0) return;
  const ours = (url: string) => prefix === '' || url === prefix || url.startsWith(`${prefix}/`) || url.startsWith(`${prefix}?`);
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    if (!ours(req.url ?? '/')) res.writeContinue();
    server.emit('request', req, res);
  });
}
