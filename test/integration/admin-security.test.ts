import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { ConfigError } from '../../src/config/load.js';
import { createResidencyProxy, parseConfigText } from '../../src/server.js';
import { startProxy, type RunningProxy } from '../helpers/proxy.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/upstream.js';

/** The admin listener over real sockets: tokens from a file and from the environment, TLS, refusing to start unprotected. */

const ADMIN_TOKEN = randomBytes(24).toString('hex');
const SCRAPE_TOKEN = randomBytes(24).toString('hex');
const SCRAPE_ENV = 'RESIDENCY_TEST_SCRAPE_TOKEN';

const dir = mkdtempSync(join(tmpdir(), 'residency-admin-security-'));
let upstream: RecordingUpstream;

function upstreams(url: string) {
  return [
    { name: 's3-us', url, provider: 's3', route: { path_prefix: '/us', strip_prefix: true }, region: 'us-east-1' },
    { name: 's3-eu', url, provider: 's3', route: { path_prefix: '/eu', strip_prefix: true }, region: 'eu-west-1' },
  ];
}

beforeAll(async () => {
  upstream = await startRecordingUpstream();
});
afterAll(async () => {
  await upstream?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('admin listener with an admin token (file) and a scrape token (environment)', () => {
  let proxy: RunningProxy;
  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

  beforeAll(async () => {
    writeFileSync(join(dir, 'admin-token'), `${ADMIN_TOKEN}\n`, { mode: 0o600 });
    process.env[SCRAPE_ENV] = SCRAPE_TOKEN;
    proxy = await startProxy({
      admin: { host: '127.0.0.1', port: 0, token_file: join(dir, 'admin-token'), metrics_token_env: SCRAPE_ENV },
      upstreams: upstreams(upstream.url),
    });
  });
  afterAll(async () => {
    await proxy?.close();
    delete process.env[SCRAPE_ENV];
  });

  it('answers /healthz to anyone', async () => {
    const res = await fetch(`${proxy.adminUrl}/healthz`);
    expect(res.status).toBe(200);
  });

  it('refuses /metrics, /readyz and /policy without a token: 401, WWW-Authenticate: Bearer, no detail', async () => {
    for (const path of ['/metrics', '/readyz', '/policy']) {
      const res = await fetch(`${proxy.adminUrl}${path}`, { headers: bearer('not-the-token-at-all-00000000') });
      expect(res.status, path).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Bearer');
      expect(await res.text()).toBe('{}');
    }
  });

  it('lets Prometheus scrape with the scrape token, and counts the refusals', async () => {
    const res = await fetch(`${proxy.adminUrl}/metrics`, { headers: bearer(SCRAPE_TOKEN) });
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toMatch(/^residency_admin_auth_failures_total\{endpoint="\/metrics"\} [1-9]/m);
    expect(text).toMatch(/^residency_admin_auth_failures_total\{endpoint="\/policy"\} [1-9]/m);
  });

  it('shows the active policy to the admin token, never the tokens', async () => {
    await fetch(`${proxy.url}/eu/b/k`, { method: 'PUT', body: 'x' });
    expect((await fetch(`${proxy.adminUrl}/policy`, { headers: bearer(SCRAPE_TOKEN) })).status).toBe(401);
    const res = await fetch(`${proxy.adminUrl}/policy`, { headers: bearer(ADMIN_TOKEN) });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { hash: string; loaded_at: string; source: string; upstreams: { name: string }[]; rules: { name: string }[] };
    expect(body.hash).toBe(proxy.app.planner().policy.hash);
    expect(body.source).toBe('test.yaml');
    expect(Date.parse(body.loaded_at)).toBeGreaterThan(Date.now() - 60_000);
    expect(body.upstreams.map((u) => u.name)).toEqual(['s3-us', 's3-eu']);
    expect(body.rules.map((r) => r.name)).toEqual(['default']);

    const everything = [
      JSON.stringify(body),
      await (await fetch(`${proxy.adminUrl}/readyz`, { headers: bearer(ADMIN_TOKEN) })).text(),
      await (await fetch(`${proxy.adminUrl}/metrics`, { headers: bearer(ADMIN_TOKEN) })).text(),
      proxy.decisionLogText(),
    ].join('\n');
    expect(everything).not.toContain(ADMIN_TOKEN);
    expect(everything).not.toContain(SCRAPE_TOKEN);
  });

  it('exports the policy load time and build info', async () => {
    const text = await (await fetch(`${proxy.adminUrl}/metrics`, { headers: bearer(SCRAPE_TOKEN) })).text();
    const loaded = Number(/^residency_policy_loaded_timestamp_seconds (\S+)$/m.exec(text)?.[1]);
    expect(loaded).toBeGreaterThan(Date.now() / 1000 - 60);
    expect(loaded).toBeLessThanOrEqual(Date.now() / 1000);
    expect(text).toMatch(new RegExp(`^residency_build_info\\{version="\\d+\\.\\d+\\.\\d+[^"]*",node="${process.version}"\\} 1$`, 'm'));
  });
});

describe('refusing to start unprotected', () => {
  const config = (admin: Record<string, unknown>) =>
    stringify({ listen: { host: '127.0.0.1', port: 0 }, admin, decision_log: { path: join(dir, 'never.log') }, upstreams: upstreams(upstream.url) });

  it('refuses a non-loopback admin bind without a token before anything listens', () => {
    expect(() => parseConfigText(config({ host: '0.0.0.0', port: 0 }), 'prod.yaml')).toThrow(
      'prod.yaml: admin.host: binding 0.0.0.0 requires admin.token_file or admin.token_env (expected a token source)',
    );
  });

  it('refuses to start when the named token is not there', () => {
    const parsed = parseConfigText(config({ host: '127.0.0.1', port: 0, token_env: 'RESIDENCY_TEST_UNSET_TOKEN' }), 'prod.yaml');
    let error: unknown;
    try {
      createResidencyProxy(parsed, { logger: pino({ level: 'silent' }), env: {} });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toBe(
      'prod.yaml: admin.token_env: environment variable RESIDENCY_TEST_UNSET_TOKEN is not set (expected the token in that variable)',
    );
  });
});

describe('admin listener over TLS', () => {
  let proxy: RunningProxy;
  let certPem: string;

  beforeAll(async () => {
    const { cert, key } = selfSignedCertificate();
    certPem = cert;
    writeFileSync(join(dir, 'admin.crt'), cert);
    writeFileSync(join(dir, 'admin.key'), key, { mode: 0o600 });
    writeFileSync(join(dir, 'tls-token'), ADMIN_TOKEN);
    proxy = await startProxy({
      admin: { host: '127.0.0.1', port: 0, token_file: join(dir, 'tls-token'), tls: { cert_file: join(dir, 'admin.crt'), key_file: join(dir, 'admin.key') } },
      upstreams: upstreams(upstream.url),
    });
  });
  afterAll(async () => {
    await proxy?.close();
  });

  const get = (path: string, headers: Record<string, string> = {}) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const port = Number(new URL(proxy.adminUrl).port);
      const req = httpsRequest({ host: '127.0.0.1', port, path, ca: certPem, headers }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end();
    });

  it('serves HTTPS with the configured certificate, tokens still required', async () => {
    expect((await get('/healthz')).status).toBe(200);
    expect((await get('/metrics')).status).toBe(401);
    const scrape = await get('/metrics', { authorization: `Bearer ${ADMIN_TOKEN}` });
    expect(scrape.status).toBe(200);
    expect(scrape.body).toContain('residency_decisions_total');
  });

  it('does not speak plain HTTP on the TLS port', async () => {
    await expect(fetch(`${proxy.adminUrl}/healthz`)).rejects.toThrow();
  });
});

/**
 * A throwaway self-signed P-256 certificate for 127.0.0.1, built in-process
 * (a few DER structures signed with node:crypto), so the test needs no
 * openssl binary and no private key checked into the repository.
 */
function selfSignedCertificate(): { cert: string; key: string } {
  const der = (tag: number, content: Buffer): Buffer => {
    if (content.length < 0x80) return Buffer.concat([Buffer.from([tag, content.length]), content]);
    const len: number[] = [];
    for (let n = content.length; n > 0; n >>= 8) len.unshift(n & 0xff);
    return Buffer.concat([Buffer.from([tag, 0x80 | len.length, ...len]), content]);
  };
  const seq = (...items: Buffer[]) => der(0x30, Buffer.concat(items));
  const oid = (dotted: string) => {
    const [a = 0, b = 0, ...rest] = dotted.split('.').map(Number);
    const out = [40 * a + b];
    for (const v of rest) {
      const enc: number[] = [];
      for (let x = v; ; x >>= 7) {
        enc.unshift(x & 0x7f);
        if (x < 0x80) break;
      }
      out.push(...enc.map((byte, i) => (i < enc.length - 1 ? byte | 0x80 : byte)));
    }
    return der(0x06, Buffer.from(out));
  };
  const utcTime = (d: Date) => der(0x17, Buffer.from(`${d.toISOString().replace(/[-:T]/g, '').slice(2, 14)}Z`));
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const ecdsaSha256 = seq(oid('1.2.840.10045.4.3.2'));
  const name = seq(der(0x31, seq(oid('2.5.4.3'), der(0x0c, Buffer.from('residency-proxy admin test')))));
  const serial = randomBytes(8);
  serial[0]! &= 0x7f;
  const subjectAltName = seq(oid('2.5.29.17'), der(0x04, seq(der(0x87, Buffer.from([127, 0, 0, 1])))));
  const tbs = seq(
    der(0xa0, der(0x02, Buffer.from([2]))),
    der(0x02, serial),
    ecdsaSha256,
    name,
    seq(utcTime(new Date(Date.now() - 60_000)), utcTime(new Date(Date.now() + 86_400_000))),
    name,
    publicKey.export({ type: 'spki', format: 'der' }),
    der(0xa3, seq(subjectAltName)),
  );
  const certificate = seq(tbs, ecdsaSha256, der(0x03, Buffer.concat([Buffer.from([0]), sign('sha256', tbs, privateKey)])));
  const cert = `-----BEGIN CERTIFICATE-----\n${certificate.toString('base64').match(/.{1,64}/g)!.join('\n')}\n-----END CERTIFICATE-----\n`;
  return { cert, key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string };
}
