import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { startProxy, type RunningProxy } from '../helpers/proxy.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/upstream.js';

/**
 * The shipped monitoring files against real Prometheus tooling: promtool
 * checks and unit-tests the rules and lints a real scrape; a real
 * `prometheus` scrapes the proxy (with the scrape token, as in
 * deploy/prometheus/scrape.yaml) and answers queries about real traffic.
 *
 * promtool and prometheus come from Debian's `prometheus` package, which
 * .ci/run installs. Without them these tests fail; they never skip.
 */

const deploy = (path: string) => fileURLToPath(new URL(`../../deploy/prometheus/${path}`, import.meta.url));

/** Why `name` cannot run, or null when it can. */
function toolMissing(name: 'promtool' | 'prometheus'): Error | null {
  const probe = spawnSync(name, ['--version'], { encoding: 'utf8' });
  if (!probe.error) return null;
  return new Error(
    `${name} is not installed or not on PATH (${(probe.error as NodeJS.ErrnoException).code}). ` +
      "These tests need Prometheus's own tools: install Debian's package with " +
      '`apt-get update && apt-get install -y prometheus` (.ci/run installs it in CI).',
  );
}

/** Called first in every test, so a missing tool fails each test with the reason (never a skip). */
function requireTool(name: 'promtool' | 'prometheus'): void {
  const missing = toolMissing(name);
  if (missing) throw missing;
}

function promtool(args: string[], input?: string): { status: number | null; output: string } {
  const r = spawnSync('promtool', args, { encoding: 'utf8', ...(input === undefined ? {} : { input }), timeout: 60_000 });
  if (r.error) throw r.error;
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

function upstreamsFor(url: string) {
  return [
    { name: 's3-us', url, provider: 's3', route: { path_prefix: '/us', strip_prefix: true }, region: 'us-east-1' },
    { name: 's3-eu', url, provider: 's3', route: { path_prefix: '/eu', strip_prefix: true }, region: 'eu-west-1' },
    { name: 's3-trial', url, provider: 's3', route: { path_prefix: '/trial', strip_prefix: true }, region: 'eu-central-1' },
  ];
}
const RULES = [
  { name: 'trial', match: { upstreams: ['s3-trial'] }, allow_jurisdictions: ['US'], mode: 'monitor' },
  { name: 'user-data', match: { operations: ['write'] }, allow_jurisdictions: ['US'], mode: 'enforce' },
];

async function put(proxy: RunningProxy, path: string): Promise<number> {
  const res = await fetch(`${proxy.url}${path}`, { method: 'PUT', body: 'payload' });
  await res.arrayBuffer();
  return res.status;
}

let upstream: RecordingUpstream;
const dir = mkdtempSync(join(tmpdir(), 'residency-prometheus-'));
beforeAll(async () => {
  upstream = await startRecordingUpstream();
});
afterAll(async () => {
  await upstream?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('promtool on the shipped files', () => {
  it('check rules: alerts.yaml is valid', () => {
    requireTool('promtool');
    const r = promtool(['check', 'rules', deploy('alerts.yaml')]);
    expect(r.output).toContain('SUCCESS');
    expect(r.status, r.output).toBe(0);
  });

  it('test rules: every alert fires and stays quiet where its unit tests say', () => {
    requireTool('promtool');
    const r = promtool(['test', 'rules', deploy('alerts.test.yaml')]);
    expect(r.status, r.output).toBe(0);
    expect(r.output).toContain('SUCCESS');
  });

  it('check config: the scrape example is a valid Prometheus config', () => {
    requireTool('promtool');
    // --syntax-only: the example names secret files that exist only where Prometheus runs.
    const r = promtool(['check', 'config', '--syntax-only', deploy('scrape.yaml')]);
    expect(r.status, r.output).toBe(0);
  });

  it('check metrics: a real scrape after traffic passes the naming lint', async () => {
    requireTool('promtool');
    const proxy = await startProxy({ upstreams: upstreamsFor(upstream.url), rules: RULES });
    try {
      expect(await put(proxy, '/us/b/k')).toBe(200);
      expect(await put(proxy, '/eu/b/k')).toBe(403);
      expect(await put(proxy, '/trial/b/k')).toBe(200);
      await fetch(`${proxy.url}/nowhere`);
      const scrape = await (await fetch(`${proxy.adminUrl}/metrics`)).text();
      expect(scrape).toContain('residency_request_duration_seconds_bucket');
      const r = promtool(['check', 'metrics'], scrape);
      // promtool prints one line per problem; none is the only acceptable answer.
      expect(r.output.trim()).toBe('');
      expect(r.status).toBe(0);
    } finally {
      await proxy.close();
    }
  });
});

describe('a real Prometheus scraping the proxy', () => {
  let proxy: RunningProxy;
  let prometheus: ChildProcess | null = null;
  let promUrl = '';
  let promLog = '';

  beforeAll(async () => {
    // Each test reports a missing binary itself (see requireTool).
    if (toolMissing('prometheus')) return;
    const scrapeToken = `scrape-${Date.now()}-0123456789abcdef`;
    writeFileSync(join(dir, 'admin-token'), `admin-${Date.now()}-0123456789abcdef\n`);
    writeFileSync(join(dir, 'scrape-token'), `${scrapeToken}\n`);
    proxy = await startProxy({
      admin: { host: '127.0.0.1', port: 0, token_file: join(dir, 'admin-token'), metrics_token_file: join(dir, 'scrape-token') },
      upstreams: upstreamsFor(upstream.url),
      rules: RULES,
    });

    // The shipped example, pointed at this proxy, scraping every second.
    const config = parse(readFileSync(deploy('scrape.yaml'), 'utf8')) as {
      global: Record<string, string>;
      rule_files: string[];
      scrape_configs: { job_name: string; static_configs: { targets: string[] }[]; authorization: { credentials_file: string } }[];
    };
    copyFileSync(deploy('alerts.yaml'), join(dir, 'alerts.yaml'));
    config.global = { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' };
    config.rule_files = [join(dir, 'alerts.yaml')];
    const job = config.scrape_configs.find((j) => j.job_name === 'residency-proxy')!;
    job.static_configs = [{ targets: [new URL(proxy.adminUrl).host] }];
    job.authorization.credentials_file = join(dir, 'scrape-token');
    writeFileSync(join(dir, 'prometheus.yml'), stringify(config));

    const port = await freePort();
    promUrl = `http://127.0.0.1:${port}`;
    prometheus = spawn(
      'prometheus',
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'tsdb')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const keep = (chunk: Buffer) => {
      promLog = (promLog + chunk.toString('utf8')).slice(-8_000);
    };
    prometheus.stdout!.on('data', keep);
    prometheus.stderr!.on('data', keep);
    await waitFor('prometheus ready', async () => {
      if (prometheus!.exitCode !== null) throw new Error(`prometheus exited with ${prometheus!.exitCode}:\n${promLog}`);
      const res = await fetch(`${promUrl}/-/ready`).catch(() => null);
      return res?.status === 200;
    });
  });

  afterAll(async () => {
    const child = prometheus;
    if (child?.pid !== undefined && child.exitCode === null) {
      const exited = once(child, 'exit');
      process.kill(child.pid, 'SIGTERM');
      const timer = setTimeout(() => {
        if (child.exitCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
      }, 10_000);
      await exited;
      clearTimeout(timer);
    }
    await proxy?.close();
  });

  async function query(promql: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]> {
    const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(promql)}`);
    const body = (await res.json()) as { status: string; error?: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
    if (body.status !== 'success') throw new Error(`query ${promql}: ${body.error}`);
    return body.data.result;
  }

  it('scrapes the proxy with the scrape token', async () => {
    requireTool('prometheus');
    await waitFor('up == 1', async () => (await query('up{job="residency-proxy"}'))[0]?.value[1] === '1');
  });

  it('shows allowed, blocked and would-block writes in residency_decisions_total with the right labels', async () => {
    requireTool('prometheus');
    for (let i = 0; i < 3; i++) expect(await put(proxy, `/us/bucket-${i}/object`)).toBe(200);
    for (let i = 0; i < 2; i++) expect(await put(proxy, `/eu/bucket-${i}/object`)).toBe(403);
    expect(await put(proxy, '/trial/bucket/object')).toBe(200);

    const promql = 'residency_decisions_total{job="residency-proxy"}';
    const expected = [
      { upstream: 's3-eu', operation: 'write', decision: 'block', mode: 'enforce', jurisdiction: 'IE', reason: 'jurisdiction_not_allowed', value: '2' },
      { upstream: 's3-trial', operation: 'write', decision: 'block', mode: 'monitor', jurisdiction: 'DE', reason: 'jurisdiction_not_allowed', value: '1' },
      { upstream: 's3-us', operation: 'write', decision: 'allow', mode: 'enforce', jurisdiction: 'US', reason: 'jurisdiction_allowed', value: '3' },
    ];
    let seen: unknown = null;
    await waitFor(`${promql} to show the writes`, async () => {
      const result = await query(promql);
      seen = result
        .map(({ metric, value }) => ({
          upstream: metric.upstream,
          operation: metric.operation,
          decision: metric.decision,
          mode: metric.mode,
          jurisdiction: metric.jurisdiction,
          reason: metric.reason,
          value: value[1],
        }))
        .sort((a, b) => String(a.upstream).localeCompare(String(b.upstream)));
      return JSON.stringify(seen) === JSON.stringify(expected);
    }).catch((err: Error) => {
      throw new Error(`${err.message}; last seen ${JSON.stringify(seen)}`);
    });

    const [series] = await query(promql);
    expect(series!.metric).toMatchObject({ job: 'residency-proxy', instance: new URL(proxy.adminUrl).host });
  });

  it('carries the fleet policy version the dashboard counts', async () => {
    requireTool('prometheus');
    const result = await query('count by (hash) (residency_policy_info{job="residency-proxy"})');
    expect(result.map((r) => [r.metric.hash, r.value[1]])).toEqual([[proxy.app.planner().policy.hash, '1']]);
  });

  it('loads every shipped alert rule and evaluates it against real series without errors', async () => {
    requireTool('prometheus');
    type Rule = { name: string; health: string; lastError?: string; lastEvaluation: string };
    let rules: Rule[] = [];
    await waitFor('every rule evaluated', async () => {
      const res = (await (await fetch(`${promUrl}/api/v1/rules`)).json()) as { data: { groups: { name: string; rules: Rule[] }[] } };
      rules = res.data.groups.flatMap((g) => g.rules);
      return rules.length > 0 && rules.every((r) => !r.lastEvaluation.startsWith('0001-'));
    });
    const names = (parse(readFileSync(deploy('alerts.yaml'), 'utf8')) as { groups: { rules: { alert: string }[] }[] }).groups
      .flatMap((g) => g.rules)
      .map((r) => r.alert);
    expect(rules.map((r) => r.name).sort()).toEqual([...names].sort());
    for (const r of rules) expect({ name: r.name, health: r.health, lastError: r.lastError ?? '' }).toEqual({ name: r.name, health: 'ok', lastError: '' });
  });
});

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 45_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** A port the OS says is free on loopback (Prometheus takes a port number, not 0). */
async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
