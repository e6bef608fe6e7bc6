import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { buildAdminApp, type AdminOptions } from '../../src/admin/app.js';
import { digestToken } from '../../src/admin/auth.js';
import type { AdminSecurity } from '../../src/admin/config.js';
import type { Config } from '../../src/config/load.js';
import { parseConfigText } from '../../src/load.js';
import { createMetrics, type Metrics } from '../../src/metrics/registry.js';

const ADMIN = 'admin-token-0123456789abcdef';
const SCRAPE = 'scrape-token-0123456789abcdef';

const CONFIG = parseConfigText(
  stringify({
    allowed_jurisdictions: ['US'],
    mode: 'monitor',
    upstreams: [
      { name: 's3-us', url: 'http://127.0.0.1:4569/base', provider: 's3', route: { path_prefix: '/s3-us', strip_prefix: true }, region: 'us-east-1' },
      { name: 'blob-eu', url: 'http://127.0.0.1:10000', provider: 'azure', route: { host: 'blob-eu.internal' }, jurisdiction: 'IE', buckets: { 'us-archive': 'US' } },
    ],
    rules: [
      { name: 'user-data', match: { upstreams: ['s3-us'], paths: ['/users/**'] }, allow_jurisdictions: ['US', 'CA'], mode: 'enforce' },
      { name: 'reads-too', match: { operations: ['read'] } },
    ],
  }),
  'policy.yaml',
);

let app: FastifyInstance | null = null;
afterEach(async () => {
  await app?.close();
  app = null;
});

function build(security: Partial<AdminSecurity> = {}, config: Config = CONFIG): { app: FastifyInstance; metrics: Metrics } {
  const metrics = createMetrics({ version: '0.0.0-test' });
  const options: AdminOptions = {
    logger: pino({ level: 'silent' }),
    metrics,
    readiness: [{ name: 'config', check: () => ({ ok: true }) }],
    policy: () => ({ hash: 'abc123', loadedAt: '2026-11-29T20:00:00.000Z', source: 'policy.yaml', config, shadowHash: null }),
    security: { token: null, metricsToken: null, tls: null, ...security },
  };
  app = buildAdminApp(options);
  return { app, metrics };
}

const auth = (token: string) => ({ authorization: `Bearer ${token}` });

async function failures(metrics: Metrics): Promise<Record<string, number>> {
  const json = await metrics.registry.getSingleMetric('residency_admin_auth_failures_total')!.get();
  return Object.fromEntries(json.values.map((v) => [String(v.labels.endpoint), v.value]));
}

describe('admin app without tokens (loopback default)', () => {
  it('serves every endpoint', async () => {
    const { app } = build();
    for (const url of ['/metrics', '/healthz', '/readyz', '/policy']) {
      expect((await app.inject({ url })).statusCode, url).toBe(200);
    }
    expect((await app.inject({ url: '/nope' })).statusCode).toBe(404);
  });
});

describe('admin app with an admin token', () => {
  it('answers /healthz without a token', async () => {
    const { app } = build({ token: digestToken(ADMIN) });
    const res = await app.inject({ url: '/healthz' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ status: 'ok' });
  });

  it('refuses everything else without the token: 401, no detail, WWW-Authenticate: Bearer, counted by endpoint', async () => {
    const { app, metrics } = build({ token: digestToken(ADMIN) });
    const attempts: [string, Record<string, string>][] = [
      ['/metrics', {}],
      ['/readyz', auth('wrong-token-0123456789abcdef')],
      ['/policy', { authorization: `Basic ${Buffer.from(`x:${ADMIN}`).toString('base64')}` }],
      ['/policy', auth(`${ADMIN}x`)],
      // Unknown paths are refused too, so probing does not map the listener.
      ['/debug/pprof', {}],
    ];
    for (const [url, headers] of attempts) {
      const res = await app.inject({ url, headers });
      expect(res.statusCode, url).toBe(401);
      expect(res.headers['www-authenticate']).toBe('Bearer');
      expect(res.body).toBe('{}');
    }
    expect(await failures(metrics)).toEqual({ '/metrics': 1, '/readyz': 1, '/policy': 2, other: 1 });
  });

  it('serves everything with the token', async () => {
    const { app, metrics } = build({ token: digestToken(ADMIN) });
    for (const url of ['/metrics', '/readyz', '/policy']) {
      expect((await app.inject({ url, headers: auth(ADMIN) })).statusCode, url).toBe(200);
    }
    expect((await app.inject({ url: '/metrics', method: 'HEAD', headers: auth(ADMIN) })).statusCode).toBe(200);
    expect(await failures(metrics)).toEqual({ '/metrics': 0, '/readyz': 0, '/policy': 0, other: 0 });
  });

  it('accepts the scrape token on /metrics only', async () => {
    const { app } = build({ token: digestToken(ADMIN), metricsToken: digestToken(SCRAPE) });
    const scrape = await app.inject({ url: '/metrics', headers: auth(SCRAPE) });
    expect(scrape.statusCode).toBe(200);
    expect(scrape.body).toContain('residency_admin_auth_failures_total');
    expect((await app.inject({ url: '/metrics', headers: auth(ADMIN) })).statusCode).toBe(200);
    expect((await app.inject({ url: '/policy', headers: auth(SCRAPE) })).statusCode).toBe(401);
    expect((await app.inject({ url: '/readyz', headers: auth(SCRAPE) })).statusCode).toBe(401);
  });
});

describe('admin app with only a scrape token', () => {
  it('protects /metrics and leaves the rest as on a plain loopback listener', async () => {
    const { app } = build({ metricsToken: digestToken(SCRAPE) });
    expect((await app.inject({ url: '/metrics' })).statusCode).toBe(401);
    expect((await app.inject({ url: '/metrics', headers: auth(SCRAPE) })).statusCode).toBe(200);
    expect((await app.inject({ url: '/policy' })).statusCode).toBe(200);
  });
});

describe('/policy', () => {
  it('shows hash, load time, source, the rules as enforced and the upstreams', async () => {
    const { app } = build();
    const res = await app.inject({ url: '/policy' });
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.json()).toEqual({
      hash: 'abc123',
      shadow_hash: null,
      loaded_at: '2026-11-29T20:00:00.000Z',
      source: 'policy.yaml',
      defaults: { allowed_jurisdictions: ['US'], mode: 'monitor', unknown_location: 'block' },
      rules: [
        {
          name: 'user-data',
          match: { upstreams: ['s3-us'], operations: ['write'], methods: null, paths: ['/users/**'] },
          allow_jurisdictions: ['US', 'CA'],
          mode: 'enforce',
          unknown_location: 'block',
        },
        {
          name: 'reads-too',
          match: { upstreams: null, operations: ['read'], methods: null, paths: null },
          allow_jurisdictions: ['US'],
          mode: 'monitor',
          unknown_location: 'block',
        },
        {
          name: 'default',
          match: { upstreams: null, operations: ['write'], methods: null, paths: null },
          allow_jurisdictions: ['US'],
          mode: 'monitor',
          unknown_location: 'block',
        },
      ],
      upstreams: [
        {
          name: 's3-us',
          provider: 's3',
          url: 'http://127.0.0.1:4569/base',
          route: { host: null, path_prefix: '/s3-us', strip_prefix: true },
          region: 'us-east-1',
          jurisdiction: null,
          buckets: {},
        },
        {
          name: 'blob-eu',
          provider: 'azure',
          url: 'http://127.0.0.1:10000/',
          route: { host: 'blob-eu.internal', path_prefix: null, strip_prefix: false },
          region: null,
          jurisdiction: 'IE',
          buckets: { 'us-archive': 'US' },
        },
      ],
    });
  });

  it('never shows URL credentials or query strings, even if a config carried them', async () => {
    // The config check refuses credentials in URLs; this is the second line of defence.
    const leaky = { ...CONFIG, upstreams: [{ ...CONFIG.upstreams[0]!, url: 'https://AKIAEXAMPLE:s3cr3t@storage.internal/p?sig=SIGNATURE' }] } as Config;
    const { app } = build({}, leaky);
    const body = (await app.inject({ url: '/policy' })).body;
    expect(body).toContain('"url":"https://storage.internal/p"');
    for (const secret of ['AKIAEXAMPLE', 's3cr3t', 'SIGNATURE']) expect(body).not.toContain(secret);
  });
});
