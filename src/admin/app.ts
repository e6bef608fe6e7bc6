import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Metrics } from '../metrics/registry.js';

/** A named readiness check: ok, plus a short reason when not. */
export interface ReadinessCheck {
  name: string;
  check: () => { ok: boolean; detail?: string };
}

export interface AdminOptions {
  logger: Logger;
  metrics: Metrics;
  readiness: readonly ReadinessCheck[];
}

/**
 * The admin listener, on its own port (loopback by default): Prometheus
 * metrics, liveness and readiness. Nothing here touches the data plane.
 */
export function buildAdminApp(options: AdminOptions): FastifyInstance {
  const app = Fastify({ loggerInstance: options.logger as FastifyBaseLogger, logController: new LogController({ disableRequestLogging: true }) });

  app.get('/metrics', async (_request, reply) => {
    reply.header('content-type', options.metrics.registry.contentType);
    return options.metrics.registry.metrics();
  });

  app.get('/healthz', async () => ({ status: 'ok' }));

  app.get('/readyz', async (_request, reply) => {
    const checks: Record<string, { ok: boolean; detail?: string }> = {};
    let ready = true;
    for (const c of options.readiness) {
      const result = c.check();
      checks[c.name] = result;
      if (!result.ok) ready = false;
    }
    reply.code(ready ? 200 : 503);
    return { ready, checks };
  });
  return app;
}
