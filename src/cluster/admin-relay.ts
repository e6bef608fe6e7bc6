import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { AggregatorRegistry, PrometheusContentType } from 'prom-client';
import type { AdminSecurity } from '../admin/config.js';
import { json, mergeFleet, mergeReadiness } from './merge.js';
import type { RelayedAnswer, RelayedRequest, Supervisor, WorkerStatus } from './supervisor.js';

export interface AdminRelayOptions {
  host: string;
  port: number;
  /** Only its TLS is used here: tokens are checked by the worker that answers. */
  security: AdminSecurity;
  supervisor: Supervisor;
  aggregator: AggregatorRegistry<PrometheusContentType>;
  logger: Logger;
}

export interface AdminRelay {
  address: AddressInfo;
  close(): Promise<void>;
}

/** Admin requests carry no bodies worth more than this (lockdown reasons, small JSON). */
const MAX_BODY_BYTES = 1024 * 1024;

/** Response headers that belong to one connection, not to the relayed answer. */
const HOP_HEADERS = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length', 'date']);

/**
 * The admin port of a `workers` cluster, served by the primary. /healthz is
 * answered here (the primary is alive). Everything else goes to a worker's
 * own admin app over IPC, which checks the token exactly as a single process
 * does; a refusal comes from one worker only, so it is counted once.
 *
 * - /metrics: once one worker accepted the token (a HEAD probe), every
 *   worker's registry aggregated (prom-client's AggregatorRegistry; each
 *   series carries its `worker` label).
 * - /readyz: every worker asked; ready only when all are; each one listed.
 * - /fleet: every worker asked; every worker's replica shown.
 * - anything else (/policy, …): one worker, taking turns.
 */
export async function startAdminRelay(options: AdminRelayOptions): Promise<AdminRelay> {
  const { supervisor, logger } = options;
  const handler = (req: IncomingMessage, res: ServerResponse) => {
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

  async function answer(req: IncomingMessage): Promise<RelayedAnswer> {
    const path = new URL(req.url ?? '/', 'http://admin').pathname;
    const method = req.method ?? 'GET';
    if (path === '/healthz' && (method === 'GET' || method === 'HEAD')) return json(200, { status: 'ok' });
    const body = await readBody(req);
    if (body === null) return json(413, { error: `request body over ${MAX_BODY_BYTES} bytes` });
    const request: RelayedRequest = { method, url: req.url ?? '/', headers: req.headers, body, remoteAddress: req.socket.remoteAddress ?? '' };
    const first = supervisor.pick();
    // No worker to check the token: say nothing more than that.
    if (first === null) return json(503, { error: 'no worker is running' });
    if (method === 'GET' && path === '/metrics') return metrics(first, request);
    if (method === 'GET' && path === '/readyz') return everyWorker(first, request, mergeReadiness);
    if (method === 'GET' && path === '/fleet') return everyWorker(first, request, mergeFleet);
    return supervisor.ask(first, request);
  }

  async function metrics(first: number, request: RelayedRequest): Promise<RelayedAnswer> {
    const probe = await supervisor.ask(first, { ...request, method: 'HEAD' });
    if (probe.status !== 200) return probe;
    try {
      return { status: 200, headers: { 'content-type': options.aggregator.contentType }, body: await options.aggregator.clusterMetrics() };
    } catch (err) {
      return json(503, { error: `metrics could not be gathered from every worker: ${(err as Error).message}` });
    }
  }

  /** The first worker's answer decides on the token; only then are the others asked. */
  async function everyWorker(
    first: number,
    request: RelayedRequest,
    merge: (workers: readonly WorkerStatus[], answers: ReadonlyMap<number, RelayedAnswer>) => RelayedAnswer,
  ): Promise<RelayedAnswer> {
    const firstAnswer = await supervisor.ask(first, request);
    if (firstAnswer.status === 401 || firstAnswer.status === 403) return firstAnswer;
    const answers = new Map([[first, firstAnswer]]);
    const others = supervisor.listening().filter((n) => n !== first);
    await Promise.all(others.map(async (n) => answers.set(n, await supervisor.ask(n, request))));
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

/** The body as text; null past the limit. */
async function readBody(req: IncomingMessage): Promise<string | null> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of req) {
    bytes += (chunk as Buffer).length;
    if (bytes > MAX_BODY_BYTES) return null;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function send(req: IncomingMessage, res: ServerResponse, reply: RelayedAnswer): void {
  for (const [name, value] of Object.entries(reply.headers)) {
    if (value !== undefined && !HOP_HEADERS.has(name.toLowerCase())) res.setHeader(name, value);
  }
  res.statusCode = reply.status;
  res.setHeader('content-length', Buffer.byteLength(reply.body));
  res.end(req.method === 'HEAD' ? undefined : reply.body);
}
