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
  const handler = (request: FastifyRequest, reply: FastifyReply) => {
    reply.hijack();
    plane.serve(request.raw, reply.raw);
  };
  // HEAD is one of `all`'s methods: Fastify must not add its own HEAD for GET.
  app.all('/', { exposeHeadRoute: false }, handler);
  app.all('/*', { exposeHeadRoute: false }, handler);
  // Methods Fastify does not route (PROPFIND, made-up ones) still get the data plane's answer (405, in the provider's format).
  app.setNotFoundHandler(handler);
}
