import http from 'node:http';
import { createRequestHandler, type HandlerDeps } from './handler.js';
import { checkRequest } from './hygiene.js';
import { lingerOnClose } from './linger.js';
import { errorResponse, type ErrorDetails, type ErrorResponse } from './refuse.js';

export interface DataPlaneOptions extends HandlerDeps {
  maxHeaders: number;
}

/**
 * One request's way through the proxy, on Node's raw request and response:
 * hygiene, then plan, then refuse or forward. The Fastify route hands every
 * request here untouched (no body parsing, no URL rewriting), whether the
 * route is `serve`'s own or the plugin's inside someone else's app.
 */
export interface DataPlane {
  serve(req: http.IncomingMessage, res: http.ServerResponse): void;
  /** An answer before planning, in the format of the provider the request names; the connection closes. */
  reject(req: http.IncomingMessage, res: http.ServerResponse, details: Omit<ErrorDetails, 'title'>): void;
  /** From now on every request is refused 503 and responses in progress end their connection. */
  beginClose(): void;
}

/** The methods a storage API uses; anything else is answered 405 before any planning. */
const METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'POST', 'PATCH', 'DELETE']);

export function createDataPlane(options: DataPlaneOptions): DataPlane {
  const { metrics, logger } = options;
  const handle = createRequestHandler(options);
  let closing = false;
  // Responses in progress, so a shutdown can end their connections with them.
  const inFlight = new Set<http.ServerResponse>();
  const forget = function (this: http.ServerResponse) {
    inFlight.delete(this);
  };

  /** The provider whose format a refusal before planning takes, when the request names a route (else problem+json). */
  const providerOf = (req: http.IncomingMessage) => {
    const host = req.headers.host;
    return options.planner().providerFor(typeof host === 'string' ? host : undefined, req.url ?? '/');
  };

  const reject: DataPlane['reject'] = (req, res, details) => {
    metrics.rejectedRequests.inc({ code: details.code });
    const out = errorResponse(providerOf(req), { ...details, title: http.STATUS_CODES[details.status] ?? 'Bad request' });
    // After a framing refusal the body boundaries cannot be trusted (RFC 9112 §6.3): close, with a linger.
    lingerOnClose(req, { maxBytes: options.limits.refusalDrainBytes, maxMs: options.limits.refusalLingerMs });
    answerAndClose(res, out);
  };

  /** A bug, not a request problem: logged, and answered 500 if nothing was sent yet. */
  function failed(err: unknown, req: http.IncomingMessage, res: http.ServerResponse): void {
    logger.error({ err: { message: (err as Error)?.message ?? String(err) }, method: req.method }, 'request handler failed');
    if (res.headersSent || res.destroyed) {
      res.destroy();
      return;
    }
    answerAndClose(res, errorResponse(providerOf(req), { status: 500, code: 'internal_error', title: 'Internal Server Error', detail: 'the proxy failed to handle this request' }));
  }

  return {
    reject,
    serve(req, res) {
      inFlight.add(res);
      res.once('close', forget);
      const refusal = checkRequest(req, { maxHeaders: options.maxHeaders });
      if (refusal) return reject(req, res, refusal);
      if (!METHODS.has(req.method!)) return reject(req, res, { status: 405, code: 'method_not_allowed', detail: `method ${req.method} is not supported` });
      if (closing) return reject(req, res, { status: 503, code: 'shutting_down', detail: 'the proxy is shutting down; retry on another replica' });
      handle(req, res).catch((err: unknown) => failed(err, req, res));
    },
    beginClose() {
      closing = true;
      // A keep-alive connection would otherwise stay open after its in-flight
      // response, holding the shutdown for the keep-alive timeout. Responses
      // still in progress end their connection instead: `Connection: close`
      // if the head is not out yet, else a close once the response is written.
      for (const res of inFlight) {
        if (!res.headersSent) res.shouldKeepAlive = false;
        else res.once('finish', () => res.req.socket.destroySoon());
      }
    },
  };
}

/** An answer after which the connection closes. */
function answerAndClose(res: http.ServerResponse, out: ErrorResponse): void {
  res.writeHead(out.status, { ...out.headers, connection: 'close', 'content-length': Buffer.byteLength(out.body) });
  res.end(out.body);
}
