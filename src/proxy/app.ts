import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import tls from 'node:tls';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Metrics } from '../metrics/registry.js';
import type { DataPlane } from './data-plane.js';
import { errorResponse, type ErrorResponse } from './refuse.js';
import { holdContinueForDecisions, onDataPlane, registerDataPlane } from './routes.js';
import type { DataPlaneTls } from './tls-listener.js';
import { handleConnect, isTunnelSocket, PROXY_CHALLENGE, proxyUser, type TunnelDeps } from './tunnel.js';

export interface ProxyAppOptions {
  /** Where every routed request goes. */
  plane: DataPlane;
  logger: Logger;
  metrics: Metrics;
  maxHeaders: number;
  maxHeaderBytes: number;
  /** `limits.client_header_timeout_ms`: how long a request head may take (default 30 s). */
  headersTimeoutMs?: number;
  /** HTTPS on the listener (`listen.tls`); absent: plain HTTP. */
  tls?: DataPlaneTls | null;
  /** Forward-proxy mode (`forward_proxy`): CONNECT is intercepted, absolute-form http:// targets accepted. Absent: CONNECT is answered 405. */
  tunnels?: Omit<TunnelDeps, 'inject'> | null;
  /** `node`: requests skip Fastify and go straight to the data plane (only to measure what the Fastify front costs). */
  front?: 'fastify' | 'node';
}

/** The data-plane server: listen, then close (draining in-flight requests). */
export interface ProxyApp {
  readonly server: http.Server;
  /** The Fastify application the server's requests go through. */
  readonly fastify: FastifyInstance;
  listen(at: { host: string; port: number }): Promise<AddressInfo>;
  close(): Promise<void>;
}

/** Idle keep-alive connections are closed after this long (the clients' pools reconnect). */
const KEEP_ALIVE_MS = 5_000;

/**
 * The data plane as a Fastify application on a server of our own making
 * (`serverFactory`): Node's server keeps what the proxy relies on below the
 * framework (header limits and timeouts, `checkContinue` so 100 Continue
 * waits for the decision, CONNECT, parse errors answered in our format,
 * HTTP/1.1 only), and Fastify routes every request to the data plane's
 * catch-all route. Absolute-form targets of forward-proxy clients are read
 * as origin-form before routing; CONNECT is intercepted or answered 405 on
 * the socket: never an open proxy.
 */
export function buildProxyApp(options: ProxyAppOptions): ProxyApp {
  const { metrics, logger } = options;
  const tunnels = options.tunnels ?? null;
  const headersTimeout = options.headersTimeoutMs ?? 30_000;
  /** With `listen.tls`: the TLS listener, whose connections the HTTP server serves once decrypted. */
  let secureListener: tls.Server | null = null;
  /** Forward-proxy mode: each accepted connection's client address, for the record of a CONNECT refused after the client left. */
  const clientAddresses = new WeakMap<object, string>();
  const plane = options.plane;
  const viaNode = options.front === 'node';
  /** Fastify's request entry (router, hooks, route handler), handed over by the server factory. */
  let route: ((req: http.IncomingMessage, res: http.ServerResponse) => void) | null = null;

  const server = http.createServer(
    // Uploads can take minutes: the upstream timeouts bound what matters. The request head is
    // bounded explicitly (with requestTimeout 0, Node would leave it unbounded too): a client that
    // connects, or opens a tunnel, and never completes a head is closed.
    {
      maxHeaderSize: options.maxHeaderBytes,
      requestTimeout: 0,
      headersTimeout: headersTimeout,
      // Node checks the timeout on this interval (30 s by default): often enough that it holds.
      connectionsCheckingInterval: Math.min(1_000, headersTimeout),
      keepAliveTimeout: KEEP_ALIVE_MS,
    },
    (req, res) => {
      // A forward proxy's plain-HTTP client (HTTP_PROXY) names the origin in the target: read it as origin-form.
      if (tunnels !== null && /^http:\/\//i.test(req.url!)) {
        // Proxy users, when configured, are asked of every client that uses the proxy as a proxy.
        if (tunnels.users !== null && proxyUser(tunnels.users, req.headers['proxy-authorization']) === null) {
          res.setHeader('proxy-authenticate', PROXY_CHALLENGE);
          return plane.reject(req, res, { status: 407, code: 'proxy_auth_required', detail: 'this proxy needs Proxy-Authorization (Basic)' });
        }
        const problem = toOriginForm(req);
        if (problem !== null) return plane.reject(req, res, { status: 400, code: 'bad_absolute_target', detail: problem });
      }
      // A target the router cannot read as a path (`*`, `host:port`) is still the data plane's to answer.
      if (viaNode || req.url!.charCodeAt(0) !== SLASH) return plane.serve(req, res);
      route!(req, res);
    },
  );
  // One more than the limit, so a request over the limit is seen, not silently cut.
  server.maxHeadersCount = options.maxHeaders + 1;
  // The decision comes first; handleRequest sends 100 Continue only for a write it forwards.
  holdContinueForDecisions(server, '');
  if (tunnels !== null) server.on('connection', (socket: Socket) => clientAddresses.set(socket, socket.remoteAddress ?? ''));
  server.on('connect', (req: http.IncomingMessage, socket: Socket, head: Buffer) => {
    // Node hands a CONNECT's socket over with no error listener: a client
    // that resets it would otherwise take the whole process down.
    socket.on('error', discardSocketError);
    if (tunnels !== null && !isTunnelSocket(socket)) {
      const client = clientAddresses.get(socket) ?? socket.remoteAddress ?? '';
      handleConnect({ ...tunnels, inject: (secure) => server.emit('connection', secure) }, req, socket, head, client).catch((err: unknown) => {
        logger.error({ err: { message: (err as Error)?.message ?? String(err) } }, 'tunnel handling failed');
        socket.destroy();
      });
      return;
    }
    metrics.rejectedRequests.inc({ code: 'connect_not_allowed' });
    const detail = tunnels === null ? 'CONNECT is not supported: this is a reverse proxy, not a tunnel' : 'a tunnel cannot be opened inside a tunnel';
    endWith(socket, errorResponse(null, { status: 405, code: 'connect_not_allowed', title: 'Method Not Allowed', detail }));
  });

  const toDataPlane = onDataPlane(plane);
  const fastify = Fastify({
    serverFactory: (handler) => {
      route = handler;
      return server;
    },
    // Our refusals, in the provider's format, for what the parser or the router cannot read.
    clientErrorHandler: (err, socket) => answerClientError(err as NodeJS.ErrnoException, socket as Socket),
    frameworkErrors: (_err, request, reply) => toDataPlane(request, reply),
    // Shutdown answers come from the data plane (503 in the provider's format).
    return503OnClosing: false,
    // Nothing reads Fastify's parsed query: the planner reads the target as sent.
    routerOptions: { querystringParser: () => ({}) },
  });
  // Every method is bodyless to this app: Fastify then never looks at Content-Type (it would answer
  // 415 to one it cannot parse, or to an empty one), and the request reaches the data plane as sent.
  for (const method of fastify.supportedMethods) fastify.addHttpMethod(method, { hasBody: false, overrideExisting: true });
  fastify.register(async (scope) => registerDataPlane(scope, plane));

  function answerClientError(err: NodeJS.ErrnoException, socket: Socket): void {
    // A request Node's parser could not read: answer once, then close. As
    // Node itself does, never when a response has started on this socket
    // (the answer would corrupt it).
    const inProgress = (socket as Socket & { _httpMessage?: { headersSent: boolean } | null })._httpMessage;
    if (err.code === 'ECONNRESET' || !socket.writable || inProgress?.headersSent) {
      socket.destroy();
      return;
    }
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : err.code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW' ? 413 : 400;
    const code = status === 431 ? 'headers_too_large' : status === 408 ? 'request_timeout' : 'malformed_request';
    metrics.rejectedRequests.inc({ code });
    endWith(socket, errorResponse(null, { status, code, title: http.STATUS_CODES[status]!, detail: 'the request could not be parsed as HTTP/1.1' }));
  }

  return {
    server,
    fastify,
    listen: async (at) => {
      await fastify.ready();
      const listener = options.tls ? createSecureListener(options.tls) : server;
      return new Promise<AddressInfo>((resolve, reject) => {
        listener.once('error', reject);
        listener.listen(at.port, at.host, () => {
          listener.off('error', reject);
          // The HTTP server itself does not listen then: 'listening' starts its header and request
          // timeout checks, which it otherwise runs only for connections it accepted itself.
          if (listener !== server) server.emit('listening');
          resolve(listener.address() as AddressInfo);
        });
      });
    },
    close: async () => {
      // Node's close() stops accepting and drops idle connections; the data plane ends the busy ones after their response.
      plane.beginClose();
      options.tls?.close();
      const listener = secureListener ?? server;
      if (listener.listening) {
        // The TLS listener's close waits for its connections; the HTTP server only drops its idle ones.
        if (listener !== server) server.closeIdleConnections();
        await new Promise<void>((resolve) => listener.close(() => resolve()));
      }
      // Fastify's own onClose hooks (it never listened itself, so it leaves the server alone).
      await fastify.close();
    },
  };

  function createSecureListener(certificates: DataPlaneTls): tls.Server {
    const listener = tls.createServer(certificates.serverOptions(), (socket) => server.emit('connection', socket));
    listener.on('tlsClientError', (err: NodeJS.ErrnoException, socket) => {
      metrics.tlsHandshakeFailures.inc({ listener: 'data_plane', reason: err.code === 'ECONNRESET' ? 'client_reset' : 'handshake' });
      socket.destroy();
    });
    certificates.watch(listener);
    secureListener = listener;
    return listener;
  }
}

const SLASH = 0x2f;

/**
 * `GET http://host/path` from a forward proxy's client: the target's
 * authority must be the Host header's (RFC 9112 §3.2.2 lets the target win;
 * refusing a mismatch leaves nothing for the two readings to disagree on),
 * and the request goes on in origin-form. Returns what is wrong, or null.
 */
function toOriginForm(req: http.IncomingMessage): string | null {
  if (!URL.canParse(req.url!)) return 'the absolute-form target is not a URL';
  const url = new URL(req.url!);
  if (url.username !== '' || url.password !== '') return 'the target carries credentials';
  const host = (req.headers.host ?? '').toLowerCase().replace(/:80$/, '');
  if (host !== url.host) return `the target names ${url.host} but the Host header says ${req.headers.host ?? 'nothing'}`;
  // The path exactly as sent (the URL parser would resolve dot segments and re-encode): hygiene and planning read it as usual.
  const rest = req.url!.slice('http://'.length);
  const start = rest.search(/[/?]/);
  const path = start === -1 ? '/' : rest.slice(start);
  req.url = path.startsWith('/') ? path : `/${path}`;
  return null;
}

/** A tunnel socket's error after we have given up on it: nothing left to answer, nothing to log. */
function discardSocketError(): void {}

/** An answer written on a bare socket (no response object: a CONNECT, a request the parser could not read), then the close. */
function endWith(socket: Socket, out: ErrorResponse): void {
  const head = Object.entries(out.headers).map(([name, value]) => `${name}: ${value}\r\n`).join('');
  socket.end(`HTTP/1.1 ${out.status} ${http.STATUS_CODES[out.status]}\r\n${head}content-length: ${Buffer.byteLength(out.body)}\r\nconnection: close\r\n\r\n${out.body}`);
}
