import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { assertBuilt, proxyConfig, runCli, send, serve, writeConfig, type ServedProxy } from '../helpers/audit-serve.js';
import { decisionsOf } from '../helpers/proxy.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/upstream.js';

// `workers: 2`: the built CLI as a primary with two forked data-plane workers on one listener.

const TOKEN = 'workers-test-admin-token-0123456789';
const ENV = { RESIDENCY_REPLICA: 'itest', WORKERS_TEST_ADMIN_TOKEN: TOKEN };
/** The run's private Redis (test/global-setup.ts). */
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

interface AdminAnswer {
  status: number;
  text: string;
  headers: Headers;
}

/** One raw request on its own socket; the answer's text up to the first response's end of head (the body may never finish). */
async function rawAdmin(port: number, text: string): Promise<string> {
  const socket = connect(port, '127.0.0.1');
  socket.write(text);
  socket.setEncoding('latin1');
  let answer = '';
  try {
    await new Promise<void>((resolve, reject) => {
      socket.on('data', (chunk: string) => {
        answer += chunk;
        if (answer.includes('\r\n\r\n')) resolve();
      });
      socket.on('error', reject);
      socket.setTimeout(5_000, () => reject(new Error(`no answer in 5 s; got ${JSON.stringify(answer)}`)));
    });
  } finally {
    socket.destroy();
  }
  return answer;
}

async function admin(port: number, path: string, token: string | null = TOKEN): Promise<AdminAnswer> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers: token === null ? {} : { authorization: `Bearer ${token}` } });
  return { status: res.status, text: await res.text(), headers: res.headers };
}

interface ReadyBody {
  ready: boolean;
  workers: { worker: number; pid: number | null; state: string; ready: boolean }[];
}

/** The sum over every worker of one metric's samples whose labels include all of `labels`; and the worker labels seen. */
function samples(text: string, name: string, labels: Record<string, string> = {}): { sum: number; workers: string[] } {
  let sum = 0;
  const workers = new Set<string>();
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)\{(.*)\} (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const has = Object.entries(labels).every(([k, v]) => m[2]!.includes(`${k}="${v}"`));
    if (!has) continue;
    sum += Number(m[3]);
    const worker = /worker="(\d+)"/.exec(m[2]!);
    if (worker) workers.add(worker[1]!);
  }
  return { sum, workers: [...workers].sort() };
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('serve with workers: 2', () => {
  let dir: string;
  let upstream: RecordingUpstream;
  const running = new Set<ServedProxy>();
  const workerPids = new Set<number>();

  beforeAll(async () => {
    assertBuilt();
    dir = mkdtempSync(join(tmpdir(), 'residency-workers-'));
    upstream = await startRecordingUpstream();
  });

  afterEach(async () => {
    // A failed test must not leave the primary or a worker running.
    for (const proxy of running) await proxy.kill('SIGKILL');
    running.clear();
    for (const pid of workerPids) if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
    workerPids.clear();
  });

  afterAll(async () => {
    await upstream?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('serves one port from two workers, each its own replica and log; one admin port; restarts a killed worker; drains on SIGTERM', async () => {
    const logFile = join(dir, 'decisions.log');
    const configFile = writeConfig(
      dir,
      'workers.yaml',
      proxyConfig(upstream.url, { path: logFile }, {
        workers: 2,
        admin: { host: '127.0.0.1', port: 0, token_env: 'WORKERS_TEST_ADMIN_TOKEN' },
        demo_upstream: { host: '127.0.0.1', port: 0 },
      }),
    );
    const proxy = await serve(configFile, ENV);
    running.add(proxy);
    const readiness = async () => JSON.parse((await admin(proxy.adminPort, '/readyz')).text) as ReadyBody;

    // /readyz lists both workers, ready.
    const ready = await until('both workers ready', async () => {
      const body = await readiness();
      return body.ready ? body : undefined;
    });
    expect(ready.workers.map((w) => [w.worker, w.state, w.ready])).toEqual([
      [1, 'listening', true],
      [2, 'listening', true],
    ]);
    for (const w of ready.workers) workerPids.add(w.pid!);

    // Many requests, each on its own connection: the cluster hands connections to the workers in turn.
    const allowed = 40;
    const refused = 10;
    for (let i = 0; i < allowed; i++) expect((await send(proxy.port, 'PUT', `/us/bucket/k${i}`, 'hello')).status).toBe(200);
    for (let i = 0; i < refused; i++) expect((await send(proxy.port, 'PUT', `/eu/bucket/k${i}`, 'hello')).status).toBe(403);

    // Each worker wrote its own log, as its own replica.
    const logs = [1, 2].map((k) => decisionsOf(readFileSync(join(dir, `decisions.w${k}.log`), 'utf8')));
    expect(logs[0]!.length).toBeGreaterThan(0);
    expect(logs[1]!.length).toBeGreaterThan(0);
    expect(logs[0]!.length + logs[1]!.length).toBe(allowed + refused);
    expect(new Set(logs[0]!.map((r) => r.replica))).toEqual(new Set(['itest-w1']));
    expect(new Set(logs[1]!.map((r) => r.replica))).toEqual(new Set(['itest-w2']));

    // /metrics: every worker's registry, each series labelled with its worker.
    const metrics = await admin(proxy.adminPort, '/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.headers.get('content-type')).toContain('text/plain');
    const decided = samples(metrics.text, 'residency_decisions_total');
    expect(decided.workers).toEqual(['1', '2']);
    expect(decided.sum).toBe(allowed + refused);
    expect(samples(metrics.text, 'residency_build_info').workers).toEqual(['1', '2']);

    // Tokens are checked by a worker's own admin app, exactly as in one process: refused once, counted once.
    expect((await admin(proxy.adminPort, '/metrics', null)).status).toBe(401);
    const refusedReady = await admin(proxy.adminPort, '/readyz', 'wrong-token-wrong-token');
    expect(refusedReady.status).toBe(401);
    expect(refusedReady.headers.get('www-authenticate')).toBe('Bearer');
    expect(refusedReady.text).toBe('{}');
    expect((await admin(proxy.adminPort, '/healthz', null)).status).toBe(200);
    const afterRefusals = (await admin(proxy.adminPort, '/metrics')).text;
    expect(samples(afterRefusals, 'residency_admin_auth_failures_total', { endpoint: '/metrics' }).sum).toBe(1);
    expect(samples(afterRefusals, 'residency_admin_auth_failures_total', { endpoint: '/readyz' }).sum).toBe(1);

    // Other admin routes are relayed to a worker.
    const policy = await admin(proxy.adminPort, '/policy');
    expect(policy.status).toBe(200);
    expect(JSON.parse(policy.text)).toHaveProperty('hash');
    // /fleet without Redis: every worker's replica.
    const fleet = JSON.parse((await admin(proxy.adminPort, '/fleet')).text) as { replicas: { id: string }[]; workers: { worker: number }[] };
    expect(fleet.replicas.map((r) => r.id)).toEqual(['itest-w1', 'itest-w2']);
    expect(fleet.workers.map((w) => w.worker)).toEqual([1, 2]);

    // The demo upstream runs once, in the primary.
    expect(proxy.logs.filter((l) => l.msg === 'demo upstream listening (stores nothing)').map((l) => l.role)).toEqual(['primary']);

    // A worker killed by its PID is restarted (after a back-off), and the pair serves again.
    const victim = ready.workers[0]!.pid!;
    process.kill(victim, 'SIGKILL');
    const restarted = await until('worker 1 restarted', async () => {
      const body = await readiness();
      const w1 = body.workers[0]!;
      return body.ready && w1.pid !== victim ? body : undefined;
    });
    for (const w of restarted.workers) workerPids.add(w.pid!);
    expect(proxy.logs.some((l) => l.msg === 'worker exited unexpectedly; restarting it' && l.worker === 1 && l.signal === 'SIGKILL')).toBe(true);
    for (let i = 0; i < 10; i++) expect((await send(proxy.port, 'PUT', `/us/bucket/after${i}`, 'hello')).status).toBe(200);

    // SIGTERM to the primary drains both workers; it exits 0 in time.
    const signalledAt = Date.now();
    proxy.child.kill('SIGTERM');
    const exit = await proxy.exited;
    running.delete(proxy);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(Date.now() - signalledAt).toBeLessThan(10_000);
    for (const pid of restarted.workers.map((w) => w.pid!)) expect(pidAlive(pid)).toBe(false);

    // audit verify, given the config, finds and verifies both workers' logs (the restarted worker continued its chain).
    const verified = runCli(['audit', 'verify', '--config', configFile]);
    expect(verified.stdout).toMatch(/^== worker 1: .*decisions\.w1\.log$/m);
    expect(verified.stdout).toMatch(/^== worker 2: .*decisions\.w2\.log$/m);
    expect(verified.stdout).toContain('ALL INTACT: 2 logs');
    expect(verified.status, verified.stdout + verified.stderr).toBe(0);
    const asJson = JSON.parse(runCli(['audit', 'verify', logFile, '--format', 'json']).stdout) as { ok: boolean; logs: { worker: number; ok: boolean; records: number }[] };
    expect(asJson.ok).toBe(true);
    expect(asJson.logs.map((l) => [l.worker, l.ok])).toEqual([
      [1, true],
      [2, true],
    ]);
  });

  it('the admin relay: answers without waiting for a body, routes targets as one process does, and survives a worker dying under admin load', async () => {
    const configFile = writeConfig(
      dir,
      'relay.yaml',
      proxyConfig(upstream.url, { path: join(dir, 'relay-decisions.log') }, { workers: 2, admin: { host: '127.0.0.1', port: 0, token_env: 'WORKERS_TEST_ADMIN_TOKEN' } }),
    );
    const proxy = await serve(configFile, ENV);
    running.add(proxy);
    const ready = await until('both workers ready', async () => {
      const body = JSON.parse((await admin(proxy.adminPort, '/readyz')).text) as ReadyBody;
      return body.ready ? body : undefined;
    });
    for (const w of ready.workers) workerPids.add(w.pid!);

    // A body that never finishes arriving: answered at once (no admin route reads one), as one process answers.
    const slow = await rawAdmin(proxy.adminPort, 'POST /policy HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nabc');
    expect(slow).toMatch(/^HTTP\/1\.1 401 /);
    const slowWithToken = await rawAdmin(proxy.adminPort, `GET /policy HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Length: 1000000\r\n\r\nabc`);
    expect(slowWithToken).toMatch(/^HTTP\/1\.1 200 /);

    // Dot segments are no route in one process's router: not resolved into one on the way to a worker either.
    // (Raw bytes: fetch would resolve the dot segments before sending.)
    expect(await rawAdmin(proxy.adminPort, `GET /x/../policy HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\n\r\n`)).toMatch(/^HTTP\/1\.1 404 /);
    expect(await rawAdmin(proxy.adminPort, 'GET /x/../policy HTTP/1.1\r\nHost: x\r\n\r\n')).toMatch(/^HTTP\/1\.1 401 /);
    // An encoded /metrics is /metrics, aggregated over every worker.
    expect(samples((await admin(proxy.adminPort, '/%6detrics')).text, 'residency_build_info').workers).toEqual(['1', '2']);
    // A refused scrape comes with the body one process gives it.
    expect((await admin(proxy.adminPort, '/metrics', null)).text).toBe('{}');

    // A stuck worker costs its own series only: the scrape comes back with the other's, and says which is missing.
    const stuck = ready.workers[1]!.pid!;
    process.kill(stuck, 'SIGSTOP');
    try {
      const startedAt = Date.now();
      const partial = await admin(proxy.adminPort, '/metrics');
      expect(partial.status).toBe(200);
      // At most two 2 s waits (the token check passed over, then the gathering), well under the 10 s a stuck ask once took.
      expect(Date.now() - startedAt).toBeLessThan(8_000);
      expect(samples(partial.text, 'residency_build_info').workers).toEqual(['1']);
      expect(partial.text).toContain('residency_worker_metrics_up{worker="1"} 1');
      expect(partial.text).toContain('residency_worker_metrics_up{worker="2"} 0');
    } finally {
      process.kill(stuck, 'SIGCONT');
    }

    // Scrapes and probes in flight while a worker dies: the primary answers for it and stays up.
    let stop = false;
    const loops = Array.from({ length: 64 }, async () => {
      while (!stop) await admin(proxy.adminPort, ['/metrics', '/readyz', '/policy', '/fleet'][Math.floor(Math.random() * 4)]!).catch(() => undefined);
    });
    await new Promise((r) => setTimeout(r, 300));
    process.kill(ready.workers[0]!.pid!, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 1_500));
    stop = true;
    await Promise.all(loops);
    expect(pidAlive(proxy.child.pid!)).toBe(true);
    const back = await until('worker 1 back', async () => {
      const body = JSON.parse((await admin(proxy.adminPort, '/readyz')).text) as ReadyBody;
      return body.ready ? body : undefined;
    });
    for (const w of back.workers) workerPids.add(w.pid!);
    for (let i = 0; i < 6; i++) expect((await send(proxy.port, 'PUT', `/us/bucket/relay${i}`, 'hello')).status).toBe(200);
  });

  it('with Redis, /fleet lists every worker as a live replica', async () => {
    const prefix = `workers-test:${process.pid}-${Date.now()}:`;
    const configFile = writeConfig(
      dir,
      'fleet.yaml',
      proxyConfig(upstream.url, { path: join(dir, 'fleet-decisions.log') }, { workers: 2, redis: { url: REDIS_URL, key_prefix: prefix }, fleet: { heartbeat_seconds: 1 } }),
    );
    const proxy = await serve(configFile, ENV);
    running.add(proxy);
    const fleet = await until('both heartbeats in Redis', async () => {
      const answer = await admin(proxy.adminPort, '/fleet', null);
      const body = JSON.parse(answer.text) as { replicas?: { id: string; pid: number }[]; workers: { worker: number; pid: number; status: number }[] };
      return answer.status === 200 && body.replicas?.length === 2 ? body : undefined;
    });
    for (const w of fleet.workers) workerPids.add(w.pid);
    expect(fleet.replicas!.map((r) => r.id)).toEqual(['itest-w1', 'itest-w2']);
    expect(fleet.replicas!.map((r) => r.pid).sort()).toEqual(fleet.workers.map((w) => w.pid).sort());
    expect(fleet.workers.map((w) => [w.worker, w.status])).toEqual([
      [1, 200],
      [2, 200],
    ]);
    proxy.child.kill('SIGTERM');
    expect(await proxy.exited).toEqual({ code: 0, signal: null });
    running.delete(proxy);
  });

  it('exits non-zero when a worker cannot start at all (its port is taken)', async () => {
    const blocker: Server = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as { port: number }).port;
    try {
      const configFile = writeConfig(dir, 'taken.yaml', proxyConfig(upstream.url, { path: join(dir, 'taken-decisions.log') }, { workers: 2, listen: { host: '127.0.0.1', port } }));
      const started = serve(configFile, ENV);
      await expect(started).rejects.toThrow(/exited \(1\) before listening/);
      const message = (await started.catch((err: Error) => err.message)) as string;
      expect(message).toContain('residency-proxy could not start');
      expect(message).toMatch(/worker \d could not start/);
    } finally {
      await new Promise<void>((resolve) => blocker.close(() => resolve()));
    }
  });
});
