import type { FastifyInstance } from 'fastify';
import { createOperationalLog } from '../operational-log.js';
import type { LoadedPolicy } from '../load.js';
import type { AdminRequest, AdminResponse, WorkerMessage } from './protocol.js';
import { isAdminRequest, isMetricsRequest } from './protocol.js';

/**
 * One data-plane process of a `workers` cluster: a whole replica (its own
 * replica id, decision log, policy store and fleet heartbeat) on the listener
 * the primary shares. It binds no admin port: the primary relays admin
 * requests here over IPC and this process answers them with its own admin
 * app, so token checks and auth-failure counts stay exactly as they are.
 */
export async function runWorker(loaded: LoadedPolicy, index: number): Promise<number> {
  const { config } = loaded;
  const env = process.env;
  const logger = createOperationalLog(config).child({ worker: index });
  // The server's packages load in the worker only (the primary relays, it does not serve).
  const { createResidencyProxy } = await import('../server.js');
  const app = createResidencyProxy(config, {
    shadow: loaded.shadow,
    watch: true,
    env,
    logger,
    // Its own replica (`<replica>-w<index>`) in records, heartbeats and `fleet status`, with its own decision log.
    clusterWorker: { index },
  });
  process.on('message', (message: unknown) => {
    if (isAdminRequest(message)) void answerAdmin(app.admin, message);
    else if (isMetricsRequest(message)) {
      app.metrics.registry.getMetricsAsJSON().then(
        (metrics) => send({ type: 'residency:metrics-response', id: message.id, metrics }),
        // No reply: the primary leaves this worker out of the scrape (residency_worker_metrics_up 0) instead of the worker dying.
        (err: unknown) => logger.error({ err: (err as Error).message }, 'metrics could not be gathered for the primary'),
      );
    }
  });

  try {
    const { proxy } = await app.listen();
    send({ type: 'residency:listening', proxy: { address: proxy.address, port: proxy.port }, policy: app.planner().policy.hash });
    logger.info({ proxy: `${proxy.address}:${proxy.port}`, replica: app.replica }, 'worker listening');
  } catch (err) {
    logger.error({ err: (err as Error).message }, 'worker could not start');
    send({ type: 'residency:start-failed', error: (err as Error).message });
    process.disconnect?.();
    return 1;
  }

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (why: string) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal: why }, 'draining in-flight requests');
      app.close().then(
        () => resolve(0),
        (err: unknown) => {
          logger.error({ err: (err as Error).message }, 'shutdown failed');
          resolve(1);
        },
      );
    };
    // The primary sends SIGTERM to drain; a terminal's Ctrl-C (or a supervisor signalling the process
    // group) reaches the workers too: `on`, not `once`, so the second signal does not kill the drain.
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    // A primary that dies closes the channel, and node:cluster then exits this worker at once:
    // its log is left unsealed, as after a crash, and the next start takes it over.
    process.on('SIGHUP', () => app.policy.reload('SIGHUP'));
  }).finally(() => {
    // The IPC channel would keep this process alive after the drain.
    if (process.connected) process.disconnect();
  });
}

function send(message: WorkerMessage): void {
  if (process.connected) process.send?.(message);
}

/** Answer one relayed admin request with this worker's admin app, as if it had arrived on the admin port. */
async function answerAdmin(admin: FastifyInstance, request: AdminRequest): Promise<void> {
  let reply: AdminResponse;
  try {
    const res = await admin.inject({
      method: request.method as 'GET',
      url: request.url,
      headers: request.headers,
      remoteAddress: request.remoteAddress,
    });
    reply = { type: 'residency:admin-response', id: request.id, status: res.statusCode, headers: res.headers, body: res.body };
  } catch (err) {
    reply = { type: 'residency:admin-response', id: request.id, status: 500, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ error: (err as Error).message }) };
  }
  send(reply);
}
