import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { Agent, request } from 'undici';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadPolicy } from '../../src/load.js';
import { createResidencyProxy, type ResidencyProxy } from '../../src/server.js';
import { decisionsOf } from '../helpers/proxy.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/upstream.js';

const policyYaml = (upstreamUrl: string, logFile: string, allow: string) => `
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
decision_log: { path: ${JSON.stringify(logFile)} }
allowed_jurisdictions: ${allow}
upstreams:
  - { name: eu, url: "${upstreamUrl}", provider: s3, route: { path_prefix: /eu, strip_prefix: true }, region: eu-west-1 }
`;

describe('policy hot reload', () => {
  let dir: string;
  let upstream: RecordingUpstream;
  let app: ResidencyProxy;
  let base: string;
  let logFile: string;

  async function start(file: string): Promise<void> {
    const loaded = loadPolicy(file);
    app = createResidencyProxy(loaded.config, { logger: pino({ level: 'silent' }), watch: true, shadow: loaded.shadow, awaitOutcomes: true });
    const { proxy } = await app.listen();
    base = `http://127.0.0.1:${proxy.port}`;
  }
  const put = async (dispatcher?: Agent) => {
    const res = await request(`${base}/eu/bucket/key`, { method: 'PUT', body: 'data', ...(dispatcher ? { dispatcher } : {}) });
    await res.body.dump();
    return res.statusCode;
  };
  const until = async (check: () => boolean | Promise<boolean>, ms = 5_000) => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (await check()) return;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error('condition not met in time');
  };
  const metric = async (name: string) => {
    const text = await app.metrics.registry.getSingleMetricAsString(name);
    return text;
  };

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'residency-reload-'));
    logFile = join(dir, 'decisions.log');
    upstream = await startRecordingUpstream();
  });
  afterEach(async () => {
    await app?.close();
    await upstream.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('applies a valid change (atomic rename, as editors save) without dropping a request under load', async () => {
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, policyYaml(upstream.url, logFile, '[US]'));
    await start(file);
    expect(await put()).toBe(403);
    const oldHash = app.policy.status().hash;

    const agent = new Agent({ connections: 8 });
    const statuses: number[] = [];
    const errors: unknown[] = [];
    let running = true;
    const loop = (async () => {
      while (running) {
        try {
          statuses.push(await put(agent));
        } catch (err) {
          errors.push(err);
        }
      }
    })();
    await new Promise((r) => setTimeout(r, 150));
    writeFileSync(join(dir, 'policy.yaml.tmp'), policyYaml(upstream.url, logFile, '[US, IE]'));
    renameSync(join(dir, 'policy.yaml.tmp'), file);
    await until(() => app.policy.status().hash !== oldHash);
    await new Promise((r) => setTimeout(r, 150));
    running = false;
    await loop;
    await agent.close();

    expect(errors).toEqual([]);
    expect(new Set(statuses)).toEqual(new Set([403, 200]));
    // Once the new policy answered, the old one never did again.
    expect(statuses.slice(statuses.indexOf(200))).not.toContain(403);
    expect(await put()).toBe(200);
    expect(app.policy.status().lastAttempt).toMatchObject({ ok: true, trigger: expect.stringMatching(/file change|poll/) });
    expect(await metric('residency_policy_reloads_total')).toMatch(/residency_policy_reloads_total\{result="success"\} 2/);
    // Each record names the policy that decided it.
    const hashes = new Set(decisionsOf(readFileSync(logFile, 'utf8')).map((r) => r.policy));
    expect(hashes).toEqual(new Set([oldHash, app.policy.status().hash]));
  });

  it('keeps the last good policy when the new file is invalid, and says so', async () => {
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, policyYaml(upstream.url, logFile, '[US]'));
    await start(file);
    const hash = app.policy.status().hash;
    writeFileSync(file, policyYaml(upstream.url, logFile, '[USA]') + 'mode: sometimes\n');
    const attempt = app.policy.reload('test');
    expect(attempt.ok).toBe(false);
    expect(attempt.problems).toEqual([
      `${file}: mode: "sometimes" is not allowed (expected one of enforce, monitor, warn)`,
      `${file}: allowed_jurisdictions[0]: "USA" is not an ISO 3166-1 alpha-2 code (expected a two-letter country code such as US, DE, IE)`,
    ]);
    expect(app.policy.status()).toMatchObject({ hash, lastAttempt: { ok: false } });
    expect(await put()).toBe(403);
    expect(await metric('residency_policy_reloads_total')).toMatch(/result="failure"\} 1/);
    // A missing file is a failure too, not a crash.
    rmSync(file);
    expect(app.policy.reload('test').problems[0]).toMatch(/policy\.yaml: \(file\): file not found/);
    expect(app.policy.status().hash).toBe(hash);
  });

  it('detects a Kubernetes ConfigMap-style symlink swap', async () => {
    // ConfigMap volumes: policy.yaml → ..data/policy.yaml, ..data → ..2026_v1; an update swaps ..data.
    const mount = join(dir, 'mount');
    mkdirSync(join(mount, '..v1'), { recursive: true });
    mkdirSync(join(mount, '..v2'), { recursive: true });
    writeFileSync(join(mount, '..v1', 'policy.yaml'), policyYaml(upstream.url, logFile, '[US]'));
    writeFileSync(join(mount, '..v2', 'policy.yaml'), policyYaml(upstream.url, logFile, '[US, IE]'));
    symlinkSync('..v1', join(mount, '..data'));
    symlinkSync(join('..data', 'policy.yaml'), join(mount, 'policy.yaml'));
    await start(join(mount, 'policy.yaml'));
    expect(await put()).toBe(403);
    symlinkSync('..v2', join(mount, '..data_tmp'));
    renameSync(join(mount, '..data_tmp'), join(mount, '..data'));
    await until(async () => (await put()) === 200);
  });

  it('reports settings that need a restart instead of ignoring them', async () => {
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, policyYaml(upstream.url, logFile, '[US]'));
    await start(file);
    writeFileSync(file, policyYaml(upstream.url, logFile, '[US]').replace('listen: { host: 127.0.0.1, port: 0 }', 'listen: { host: 127.0.0.1, port: 1 }'));
    expect(app.policy.reload('test')).toMatchObject({ ok: true, restartRequired: ['listen'] });
    // A policy change on top still needs the restart (the listener runs as started)...
    writeFileSync(file, policyYaml(upstream.url, logFile, '[US, IE]').replace('listen: { host: 127.0.0.1, port: 0 }', 'listen: { host: 127.0.0.1, port: 1 }'));
    expect(app.policy.reload('test')).toMatchObject({ ok: true, restartRequired: ['listen'] });
    // ...and reverting the restart-only setting needs none: it matches what runs.
    writeFileSync(file, policyYaml(upstream.url, logFile, '[US]'));
    expect(app.policy.reload('test')).toMatchObject({ ok: true, restartRequired: [] });
  });

  it('an in-flight request finishes under the policy it started with', async () => {
    await upstream.close();
    upstream = await startRecordingUpstream({ delayMs: 600 });
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, policyYaml(upstream.url, logFile, '[US, IE]'));
    await start(file);
    const oldHash = app.policy.status().hash;
    const inFlight = put();
    await upstream.waitFor(() => upstream.requests.length === 1);
    writeFileSync(file, policyYaml(upstream.url, logFile, '[US]'));
    app.policy.reload('test');
    expect(app.policy.status().hash).not.toBe(oldHash);
    expect(await inFlight).toBe(200);
    expect(await put()).toBe(403);
    const records = decisionsOf(readFileSync(logFile, 'utf8'));
    expect(records.map((r) => [r.decision, r.policy === oldHash])).toEqual([
      ['allow', true],
      ['block', false],
    ]);
  });
});
