import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { AggregatorRegistry } from 'prom-client';
import type { AdminSecurity } from '../admin/config.js';
import { json, mergeFleet, mergeReadiness } from './merge.js';
import type { RelayedAnswer, RelayedRequest, Supervisor, WorkerStatus } from './supervisor.js';

export interface AdminRelayOptions {
  host: string;
  port: number;
  /** Only its TLS is used here: tokens are checked by the worker that answers. */
  security: AdminSecurity;
  supervisor: Supervisor;
  logger: Logger;
}

export interface AdminRelay {
  address: AddressInfo;
  close(): Promise<void>;
}

/** Admin requests being relayed at once; past it, 503 at once (Prometheus and probes need a handful). */
const MAX_IN_FLIGHT = 64;
/** How long a client may take to send a request (head and body): the admin port is not for slow clients. */
const REQUEST_TIMEOUT_MS = 10_000;
/** /metrics gathers every worker's registry; one that does not answer in this time is left out (and shown as 0). */
const METRICS_ASK_MS = 2_000;
const WORKER_UP_HELP =
  '# HELP residency_worker_metrics_up 1 when the worker\'s metrics are in this scrape, 0 when it was not running or did not answer within 2 s.\n# TYPE residency_worker_metrics_up gauge\n';
/** /readyz asks every worker: a stuck one must not hold the answer past what a probe waits. */
const READINESS_ASK_MS = 2_000;
/** Request headers that describe a body: no body is relayed (no admin route takes one). */
const BODY_HEADERS = new Set(['content-length', 'transfer-encoding', 'content-type', 'expect']);

/** Response headers that belong to one connection, not to the relayed answer. */
const HOP_HEADERS = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length', 'date']);

/**
 * The admin port of a `workers` cluster, served by the primary. /healthz is
 * answered here (the primary is alive). Everything else goes to a worker's
 * own admin app over IPC, which checks the token exactly as a single process
 * does; a refusal comes from one worker only, so it is counted once.
 *
 * - /metrics: once one worker accepted the token (it answers the request), every
 *   worker's registry aggregated (prom-client's AggregatorRegistry; each
 *   series carries its `worker` label).
 * - /readyz: every worker asked; ready only when all are; each one listed.
 * - /fleet: every worker asked; every worker's replica shown.
 * - anything else (/policy, …): one worker, taking turns.
 */
export async function startAdminRelay(options: AdminRelayOptions): Promise<AdminRelay> {
  const { supervisor, logger } = options;
  let inFlight = 0;
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    // No admin route reads a body: it is discarded as it arrives, never buffered, never relayed.
    req.resume();
    if (inFlight >= MAX_IN_FLIGHT) return send(req, res, json(503, { error: 'too many admin requests in progress' }));
    inFlight++;
    res.once('close', () => inFlight--);
    answer(req).then(
      (reply) => send(req, res, reply),
      (err: unknown) => {
        logger.error({ err: (err as Error).message, url: req.url }, 'admin request failed');
        send(req, res, json(500, { error: 'internal error' }));
      },
    );
  };
  const tls = options.security.tls;
  const server: Server = tls ? createHttpsServer({ cert: tls.cert, key: tls.key }, handler) : createHttpServer(handler);
  server.requestTimeout = REQUEST_TIMEOUT_MS;
  server.headersTimeout = REQUEST_TIMEOUT_MS;

  async function answer(req: IncomingMessage): Promise<RelayedAnswer> {
    const target = readTarget(req.url ?? '/');
    const path = target.route;
    const method = req.method ?? 'GET';
    if (path === '/healthz' && (method === 'GET' || method === 'HEAD')) return json(200, { status: 'ok' });
    const headers = Object.fromEntries(Object.entries(req.headers).filter(([name]) => !BODY_HEADERS.has(name)));
    const request: RelayedRequest = { method, url: target.relayed, headers, remoteAddress: req.socket.remoteAddress ?? '' };
    const first = supervisor.pick();
    // No worker to check the token: say nothing more than that.
    if (first === null) return json(503, { error: 'no worker is running' });
    if (method === 'GET' && path === '/metrics') return metrics(first, request);
    if (method === 'GET' && path === '/readyz') return everyWorker(first, request, mergeReadiness);
    if (method === 'GET' && path === '/fleet') return everyWorker(first, request, mergeFleet);
    return supervisor.ask(first, request);
  }

  async function metrics(first: number, request: RelayedRequest): Promise<RelayedAnswer> {
    // The worker checks the token on the request itself (a refusal then comes with its body, counted once);
    // its own metrics in the answer are dropped for the aggregate.
    // A worker that does not answer in time is passed over for the next one.
    let probe = await supervisor.ask(first, request, METRICS_ASK_MS);
    for (const next of supervisor.listening().filter((n) => n !== first)) {
      if (probe.status !== 502 && probe.status !== 504) break;
      probe = await supervisor.ask(next, request, METRICS_ASK_MS);
    }
    if (probe.status !== 200) return probe;
    // Every worker's registry that answers in time: one stuck worker costs its own series, not everyone's.
    const workers = supervisor.status().map((w) => w.worker);
    const gathered = await Promise.all(workers.map(async (n) => ({ worker: n, metrics: await supervisor.metricsOf(n, METRICS_ASK_MS) })));
    const registry = AggregatorRegistry.aggregate(gathered.flatMap((g) => (g.metrics === null ? [] : [g.metrics])));
    const up = gathered.map((g) => `residency_worker_metrics_up{worker="${g.worker}"} ${g.metrics === null ? 0 : 1}\n`).join('');
    return { status: 200, headers: { 'content-type': registry.contentType }, body: `${await registry.metrics()}\n${WORKER_UP_HELP}${up}` };
  }

  /** The first worker's answer decides on the token; only then are the others asked. */
  async function everyWorker(
    first: number,
    request: RelayedRequest,
    merge: (workers: readonly WorkerStatus[], answers: ReadonlyMap<number, RelayedAnswer>) => RelayedAnswer,
  ): Promise<RelayedAnswer> {
    const firstAnswer = await supervisor.ask(first, request, READINESS_ASK_MS);
    if (firstAnswer.status === 401 || firstAnswer.status === 403) return firstAnswer;
    const answers = new Map([[first, firstAnswer]]);
    const others = supervisor.listening().filter((n) => n !== first);
    await Promise.all(others.map(async (n) => answers.set(n, await supervisor.ask(n, request, READINESS_ASK_MS))));
    return merge(supervisor.status(), answers);
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    address: server.address() as AddressInfo,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A path the admin app has no route for, and that nothing on the way normalises. */
const UNROUTABLE = '/not-a-route';

/**
 * The route a request target names as one process's Fastify would route it
 * (absolute-form read as its path, percent-encoding decoded), and the target
 * to relay. The worker answers through `inject`, whose URL parser resolves
 * dot segments and backslashes that one process's router never resolves
 * (`/x/../policy` is no route there): such a target is relayed as a path
 * that matches nothing, so the answer is the same 401 or 404.
 */
function readTarget(raw: string): { route: string; relayed: string } {
  const absolute = /^https?:\/\//i.test(raw);
  const originForm = absolute ? raw.replace(/^https?:\/\/[^/?#]*/i, '') || '/' : raw;
  const [rawPath = '/', ...rest] = originForm.split('?');
  const query = rest.length > 0 ? `?${rest.join('?')}` : '';
  if (!rawPath.startsWith('/') || rawPath.startsWith('//') || new URL(rawPath, 'http://admin').pathname !== rawPath) {
    return { route: UNROUTABLE, relayed: UNROUTABLE };
  }
  let route = rawPath;
  try {
    route = decodeURIComponent(rawPath);
  } catch {
    // Not decodable: no route matches it either.
  }
  return { route, relayed: `${rawPath}${query}` };
}

function send(req: IncomingMessage, res: ServerResponse, reply: RelayedAnswer): void {
  for (const [name, value] of Object.entries(reply.headers)) {
    if (value !== undefined && !HOP_HEADERS.has(name.toLowerCase())) res.setHeader(name, value);
  }
  res.statusCode = reply.status;
  res.setHeader('content-length', Buffer.byteLength(reply.body));
  res.end(req.method === 'HEAD' ? undefined : reply.body);
}
