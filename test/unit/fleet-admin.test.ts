import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { buildAdminApp } from '../../src/admin/app.js';
import { digestToken } from '../../src/admin/auth.js';
import { joinFleet } from '../../src/fleet/member.js';
import { parseConfigText } from '../../src/load.js';
import type { ConfigError } from '../../src/config/load.js';
import { createMetrics, type Metrics } from '../../src/metrics/registry.js';

const TOKEN = 'admin-token-0123456789abcdef';
const BASE = {
  upstreams: [{ name: 's3-us', url: 'http://127.0.0.1:4569', provider: 's3', route: { path_prefix: '/s3-us' }, region: 'us-east-1' }],
};

let app: FastifyInstance | null = null;
afterEach(async () => {
  await app?.close();
  app = null;
});

function build(fleet?: () => Promise<{ status: number; body: unknown }>): { app: FastifyInstance; metrics: Metrics } {
  const metrics = createMetrics();
  const config = parseConfigText(stringify(BASE), 'policy.yaml');
  app = buildAdminApp({
    logger: pino({ level: 'silent' }),
    metrics,
    readiness: [],
    policy: () => ({ hash: 'abc', loadedAt: '2026-11-29T20:00:00.000Z', source: 'policy.yaml', config, shadowHash: null }),
    security: { token: digestToken(TOKEN), metricsToken: null, tls: null },
    ...(fleet ? { fleet } : {}),
  });
  return { app, metrics };
}

describe('/fleet on the admin listener', () => {
  it('serves the fleet view behind the admin token, never cached', async () => {
    const { app, metrics } = build(async () => ({ status: 200, body: { replicas: [] } }));
    const refused = await app.inject({ url: '/fleet' });
    expect(refused.statusCode).toBe(401);
    const failures = await metrics.registry.getSingleMetric('residency_admin_auth_failures_total')!.get();
    expect(failures.values.find((v) => v.labels.endpoint === '/fleet')?.value).toBe(1);
    const ok = await app.inject({ url: '/fleet', headers: { authorization: `Bearer ${TOKEN}` } });
    expect(ok.statusCode).toBe(200);
    expect(ok.headers['cache-control']).toBe('no-store');
    expect(ok.json()).toEqual({ replicas: [] });
  });

  it('passes the status through (503 while Redis is unavailable)', async () => {
    const { app } = build(async () => ({ status: 503, body: { error: 'redis unavailable: x' } }));
    const res = await app.inject({ url: '/fleet', headers: { authorization: `Bearer ${TOKEN}` } });
    expect(res.statusCode).toBe(503);
    expect(res.json()).toEqual({ error: 'redis unavailable: x' });
  });

  it('has no route (and no label value) without the option', async () => {
    const { app, metrics } = build();
    expect((await app.inject({ url: '/fleet', headers: { authorization: `Bearer ${TOKEN}` } })).statusCode).toBe(404);
    const failures = await metrics.registry.getSingleMetric('residency_admin_auth_failures_total')!.get();
    expect(failures.values.map((v) => v.labels.endpoint)).not.toContain('/fleet');
  });
});

describe('fleet member without Redis', () => {
  it('is inert: ready, never locked down, a one-replica view, no redis_up sample', async () => {
    const metrics = createMetrics();
    const member = joinFleet({
      redis: null,
      settings: { heartbeat_seconds: 5, drift_grace_seconds: 60, lockdown_poll_ms: 500 },
      replica: 'solo',
      version: '0.0.0',
      metrics,
      logger: pino({ enabled: false }),
      policy: () => ({ hash: 'h', loadedAt: '2026-11-29T20:00:00.000Z', shadowHash: null }),
      decisionLog: () => ({ healthy: true, backlog: null }),
    });
    await member.start();
    member.announce();
    expect(member.lockdownActive()).toBe(false);
    expect(member.readiness()).toEqual({ ok: true, detail: expect.stringMatching(/^redis not configured/) });
    const view = await member.view();
    expect(view.status).toBe(200);
    expect(view.body).toMatchObject({ fleet: false, self: { id: 'solo', lockdown: { active: false } } });
    const text = await metrics.registry.metrics();
    expect(text).not.toMatch(/^residency_fleet_redis_up /m);
    expect(text).toMatch(/^residency_lockdown_active 0$/m);
    expect(text).toMatch(/^residency_lockdown_changes_total\{state="locked"\} 0$/m);
    await member.close();
  });
});

describe('fleet config', () => {
  it('has defaults', () => {
    const config = parseConfigText(stringify(BASE), 'policy.yaml');
    expect(config.fleet).toEqual({ heartbeat_seconds: 5, drift_grace_seconds: 60, lockdown_poll_ms: 500 });
  });

  it('rejects out-of-range and unknown settings', () => {
    const problems = (fleet: unknown) => {
      try {
        parseConfigText(stringify({ ...BASE, fleet }), 'policy.yaml');
        return [];
      } catch (err) {
        return (err as ConfigError).problems.map((p) => p.path);
      }
    };
    expect(problems({ heartbeat_seconds: 0 })).toEqual(['fleet.heartbeat_seconds']);
    expect(problems({ lockdown_poll_ms: 10 })).toEqual(['fleet.lockdown_poll_ms']);
    expect(problems({ drift_grace_seconds: -1 })).toEqual(['fleet.drift_grace_seconds']);
    expect(problems({ drift_grace: 5 })).toEqual(['fleet.drift_grace']);
  });
});
