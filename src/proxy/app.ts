import http from 'node:http';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Metrics } from '../metrics/registry.js';
import { createRequestHandler, type HandlerDeps } from './handler.js';
import { checkRequest } from './hygiene.js';
import { lingerOnClose } from './linger.js';
import { errorResponse } from './refuse.js';

export interface ProxyAppOptions extends HandlerDeps {
  logger: Logger;
  metrics: Metrics;
  maxHeaders: number;
  maxHeaderBytes: number;
}

/** Fastify's methods with a body-less default; anything else never reaches a route. */
const METHODS = ['GET', 'HEAD', 'OPTIONS', 'PUT', 'POST', 'PATCH', 'DELETE'];

/**
 * The data-plane Fastify app. Request hygiene runs on the raw request before
 * Fastify sees it (Node's parser has already dropped what it keeps only in
 * rawHeaders); CONNECT is answered 405 on the socket: never an open proxy.
 */
export function buildProxyApp(options: ProxyAppOptions): FastifyInstance {
  const { metrics, logger } = options;
  const handle = createRequestHandler(options);
  const reject = (req: http.IncomingMessage, res: http.ServerResponse, status: number, code: string, detail: string) => {
    metrics.rejectedRequests.inc({ code });
    const out = errorResponse(null, { status, code, title: http.STATUS_CODES[status] ?? 'Bad request', detail });
    // After a framing refusal the body boundaries cannot be trusted (RFC 9112 §6.3): close, with a linger.
    lingerOnClose(req, { maxBytes: options.limits.refusalDrainBytes, maxMs: options.limits.refusalLingerMs });
    res.writeHead(status, { ...out.headers, connection: 'close', 'content-length': Buffer.byteLength(out.body) });
    res.end(out.body);
  };

  // Responses in progress, so a shutdown can end their connections with them.
  const inFlight = new Set<http.ServerResponse>();

  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    // Request logs would carry query strings (presigned signatures); the decision log is the record.
    logController: new LogController({ disableRequestLogging: true }),
    requestIdHeader: false,
    return503OnClosing: true,
    // Uploads can take minutes; the upstream timeouts bound what matters.
    requestTimeout: 0,
    connectionTimeout: 0,
    keepAliveTimeout: 5_000,
    serverFactory(fastifyHandler) {
      const server = http.createServer(
        { maxHeaderSize: options.maxHeaderBytes, requestTimeout: 0 },
        (req, res) => {
          inFlight.add(res);
          res.once('close', () => inFlight.delete(res));
          const refusal = checkRequest(req, { maxHeaders: options.maxHeaders });
          if (refusal) return reject(req, res, refusal.status, refusal.code, refusal.detail);
          if (!METHODS.includes(req.method!)) return reject(req, res, 405, 'method_not_allowed', `method ${req.method} is not supported`);
          fastifyHandler(req, res);
        },
      );
      // One more than the limit, so a request over the limit is seen, not silently cut.
      server.maxHeadersCount = options.maxHeaders + 1;
      // The decision comes first; handleRequest sends 100 Continue only for a write it forwards.
      server.on('checkContinue', (req, res) => server.emit('request', req, res));
      server.on('connect', (_req, socket) => {
        metrics.rejectedRequests.inc({ code: 'connect_not_allowed' });
        const body = JSON.stringify({ title: 'Method Not Allowed', status: 405, detail: 'CONNECT is not supported: this is a reverse proxy, not a tunnel' });
        socket.end(
          `HTTP/1.1 405 Method Not Allowed\r\ncontent-type: application/problem+json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
        );
      });
      return server;
    },
  });

  // Draining: close() only drops idle connections, and Node keeps a keep-alive
  // connection open after its in-flight response, so each keep-alive client
  // would hold the shutdown for keepAliveTimeout. Responses still in progress
  // end their connection instead: `Connection: close` if the head is not out
  // yet, else a close once the response has been written.
  app.addHook('preClose', (done) => {
    for (const res of inFlight) {
      if (!res.headersSent) res.shouldKeepAlive = false;
      else res.once('finish', () => res.req.socket.destroySoon());
    }
    done();
  });

  // Bodies are never parsed: they stream to the upstream untouched.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', function passThrough(_request, _payload, done) {
    done(null);
  });
  app.route({
    method: METHODS,
    url: '*',
    exposeHeadRoute: false,
    handler: function proxyRoute(request, reply) {
      reply.hijack();
      return handle(request.raw, reply.raw);
    },
  });
  return app;
}
