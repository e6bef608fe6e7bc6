import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { Metrics } from '../metrics/registry.js';
import { bearerToken, tokenAccepted } from './auth.js';
import type { AdminSecurity } from './config.js';
import { policyView, type ActivePolicy } from './policy-view.js';

/** A named readiness check: ok, plus a short reason when not. */
export interface ReadinessCheck {
  name: string;
  check: () => { ok: boolean; detail?: string };
}

export interface AdminOptions {
  logger: Logger;
  metrics: Metrics;
  readiness: readonly ReadinessCheck[];
  /** The policy in effect, for /policy (a function: a reload swaps it). */
  policy: () => ActivePolicy;
  /**
   * Tokens and TLS, already read (see loadAdminSecurity). Default: no token,
   * plain HTTP, which the config check allows only on a loopback bind.
   */
  security?: AdminSecurity;
  /**
   * The fleet view for /fleet (Redis-backed, see src/fleet/member.ts): a
   * status and a JSON body. Absent: no /fleet route.
   */
  fleet?: () => Promise<{ status: number; body: unknown }>;
}

/** Endpoints by name, for the auth-failure label; anything else is "other" (bounded). */
const ENDPOINTS = new Set(['/metrics', '/readyz', '/policy']);

/**
 * The admin listener, on its own port (loopback by default): Prometheus
 * metrics, liveness, readiness and the active policy. Nothing here touches
 * the data plane. With a token configured, everything but /healthz needs
 * `Authorization: Bearer <token>`; /metrics also accepts the scrape token.
 */
export function buildAdminApp(options: AdminOptions): FastifyInstance {
  const { metrics, logger } = options;
  const security = options.security ?? { token: null, metricsToken: null, tls: null };
  const common = {
    loggerInstance: logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
  };
  // Fastify types an HTTPS instance differently; callers only use the shared surface.
  const app = (
    security.tls ? Fastify({ ...common, https: { cert: security.tls.cert, key: security.tls.key } }) : Fastify(common)
  ) as unknown as FastifyInstance;

  // Known label values start at 0, so the first refusal is visible to increase().
  // /fleet is a label value only where the route exists.
  const endpoints = options.fleet ? new Set([...ENDPOINTS, '/fleet']) : ENDPOINTS;
  for (const endpoint of [...endpoints, 'other']) metrics.adminAuthFailures.inc({ endpoint }, 0);

  const adminTokens = security.token ? [security.token] : [];
  const metricsTokens = [...adminTokens, ...(security.metricsToken ? [security.metricsToken] : [])];

  // onRequest runs for unknown paths too, so a 404 does not reveal anything to a caller without a token.
  app.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    const route = request.routeOptions.url;
    if (route === '/healthz') return;
    const accepted = route === '/metrics' ? metricsTokens : adminTokens;
    if (accepted.length === 0) return;
    if (tokenAccepted(bearerToken(request.headers.authorization), accepted)) return;
    const endpoint = route !== undefined && endpoints.has(route) ? route : 'other';
    metrics.adminAuthFailures.inc({ endpoint });
    logger.warn({ endpoint, client: request.ip }, 'admin request refused: missing or wrong bearer token');
    // No detail: which of "missing", "malformed" or "wrong" helps only an attacker.
    await reply.code(401).header('www-authenticate', 'Bearer').header('cache-control', 'no-store').send({});
    return reply;
  });

  app.get('/metrics', async (_request, reply) => {
    reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
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

  app.get('/policy', async (_request, reply) => {
    reply.header('cache-control', 'no-store');
    return policyView(options.policy());
  });

  const fleet = options.fleet;
  if (fleet) {
    // Token-protected like /policy (the onRequest hook): it names every replica, host and policy hash.
    app.get('/fleet', async (_request, reply) => {
      const { status, body } = await fleet();
      reply.code(status).header('cache-control', 'no-store');
      return body;
    });
  }
  return app;
}
