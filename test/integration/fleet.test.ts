import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { DecisionRecord } from '../../src/audit/record.js';
import type { FleetEvent } from '../../src/fleet/member.js';
import type { FleetView } from '../../src/fleet/view.js';
import { loadPolicy } from '../../src/load.js';
import { createResidencyProxy, type ResidencyProxy } from '../../src/server.js';
import { haveRedisServer, startRedis, type TestRedis } from '../helpers/audit-redis.js';
import { CLI, assertBuilt, cleanEnv, send, serve, type ServedProxy } from '../helpers/audit-serve.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/upstream.js';

/**
 * Issue #9 phase 2: replicas sharing one real Redis (a test-owned
 * redis-server on a random loopback port, so it can be killed mid-run).
 * Three proxies run in-process (each with its own registry, decision log and
 * policy file, so one can be changed); a fourth is the built CLI's `serve`,
 * started during a lockdown. `fleet` commands run as the built CLI.
 */

const PREFIX = `fleet-test:${randomUUID().slice(0, 8)}:`;
const IDS = ['proxy-a', 'proxy-b', 'proxy-c'] as const;
/** A write to EU storage: the monitor rule would block it, so it is forwarded, unless the fleet is locked down. */
const WOULD_BLOCK = '/eu/bucket/key';
const ALLOWED = '/us/bucket/key';

interface Member {
  id: string;
  dir: string;
  file: string;
  logFile: string;
  app: ResidencyProxy;
  port: number;
  adminUrl: string;
  events: FleetEvent[];
}

let redis: TestRedis;
let upstream: RecordingUpstream;
let root: string;
const members: Member[] = [];

function policyDoc(logFile: string, extraRules: Record<string, unknown>[] = []) {
  return {
    listen: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0 },
    decision_log: { path: logFile, flush_ms: 0 },
    log_level: 'info',
    limits: { shutdown_grace_ms: 2_000 },
    redis: { url: redis.url, key_prefix: PREFIX },
    fleet: { heartbeat_seconds: 0.5, drift_grace_seconds: 1, lockdown_poll_ms: 500 },
    upstreams: [
      { name: 'us', url: upstream.url, provider: 's3', route: { path_prefix: '/us', strip_prefix: true }, region: 'us-east-1' },
      { name: 'eu', url: upstream.url, provider: 's3', route: { path_prefix: '/eu', strip_prefix: true }, region: 'eu-west-1' },
    ],
    rules: [...extraRules, { name: 'eu-trial', match: { operations: ['write'] }, allow_jurisdictions: ['US'], mode: 'monitor' }],
  };
}

async function startMember(id: string): Promise<Member> {
  const dir = join(root, id);
  mkdirSync(dir);
  const file = join(dir, 'config.yaml');
  const logFile = join(dir, 'decisions.log');
  writeFileSync(file, stringify(policyDoc(logFile)));
  const loaded = loadPolicy(file);
  const events: FleetEvent[] = [];
  const app = createResidencyProxy(loaded.config, {
    logger: pino({ level: 'silent' }),
    replica: id,
    watch: true,
    onFleetEvent: (e) => events.push(e),
    awaitOutcomes: true,
  });
  const { proxy, admin } = await app.listen();
  return { id, dir, file, logFile, app, port: proxy.port, adminUrl: `http://127.0.0.1:${admin.port}`, events };
}

function logLines(logFile: string): Record<string, unknown>[] {
  if (!existsSync(logFile)) return [];
  return readFileSync(logFile, 'utf8')
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

function decisions(logFile: string): DecisionRecord[] {
  return logLines(logFile).filter((r) => typeof r.decision === 'string') as unknown as DecisionRecord[];
}

async function getJson<T>(url: string): Promise<{ status: number; body: T }> {
  const res = await fetch(url);
  return { status: res.status, body: (await res.json()) as T };
}

async function metric(m: Member, line: string): Promise<string | undefined> {
  const text = await (await fetch(`${m.adminUrl}/metrics`)).text();
  return text.split('\n').find((l) => l.startsWith(line));
}

/** The built CLI, asynchronously: the proxies in this process must keep running meanwhile. */
function runFleet(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, 'fleet', ...args, '--redis', redis.url, '--key-prefix', PREFIX], {
      env: cleanEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (t: string) => (stdout += t));
    child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr += t));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 5_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
      last = v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${String(last)})`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

const statuses = (path: string) => Promise.all(members.map((m) => send(m.port, 'PUT', path, 'x').then((a) => a.status)));
const lockdownEvents = (m: Member, state: 'locked' | 'lifted') => m.events.filter((e) => e.type === 'lockdown' && e.state === state);

beforeAll(async () => {
  if (!haveRedisServer()) throw new Error('redis-server is not on the PATH (the fleet tests need a test-owned Redis they can kill)');
  assertBuilt();
  root = mkdtempSync(join(tmpdir(), 'residency-proxy-fleet-'));
  redis = await startRedis();
  upstream = await startRecordingUpstream();
  for (const id of IDS) members.push(await startMember(id));
});

afterAll(async () => {
  for (const m of members) await m.app.close().catch(() => {});
  await upstream?.close();
  await redis?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('fleet view', () => {
  it('/fleet and `fleet status` list every live replica, one policy, no drift', async () => {
    const view = await until('three heartbeats', async () => {
      const { body } = await getJson<FleetView>(`${members[0]!.adminUrl}/fleet`);
      return body.replicas?.length === 3 ? body : undefined;
    });
    expect(view.replicas.map((r) => r.id)).toEqual([...IDS]);
    expect(new Set(view.replicas.map((r) => r.policy.hash)).size).toBe(1);
    expect(view.replicas[0]).toMatchObject({ version: expect.any(String), decision_log: { healthy: true }, lockdown: { active: false }, heartbeat_seconds: 0.5 });
    expect(view.drift).toMatchObject({ flagged: false, hashes: 1, grace_seconds: 1 });
    expect(view.duplicates).toEqual([]);

    const json = await runFleet(['status', '--format', 'json']);
    expect(json.code, json.stderr).toBe(0);
    expect((JSON.parse(json.stdout) as FleetView).replicas.map((r) => r.id)).toEqual([...IDS]);
    const text = await runFleet(['status']);
    expect(text.code, text.stderr).toBe(0);
    for (const id of IDS) expect(text.stdout).toContain(id);
    expect(text.stdout).toMatch(/^lockdown: off/m);
    expect(text.stdout).toMatch(/^drift: none/m);
  });

  it('flags drift once two policies outlive the grace, and clears it when they agree again', async () => {
    const c = members[2]!;
    const before = c.app.planner().policy.hash;
    const original = readFileSync(c.file, 'utf8');
    writeFileSync(c.file, stringify(policyDoc(c.logFile, [{ name: 'extra', match: { operations: ['write'], paths: ['/nothing/**'] }, allow_jurisdictions: ['US'] }])));
    await until('proxy-c to hot-reload', async () => c.app.planner().policy.hash !== before);
    const changed = c.app.planner().policy.hash;

    const drifted = await until('drift to be flagged', async () => {
      const { body } = await getJson<FleetView>(`${members[0]!.adminUrl}/fleet`);
      return body.drift.flagged ? body : undefined;
    });
    expect(drifted.drift.hashes).toBe(2);
    expect(drifted.policies.find((p) => p.hash === changed)?.replicas).toEqual(['proxy-c']);
    expect(drifted.policies.find((p) => p.hash === before)?.replicas).toEqual(['proxy-a', 'proxy-b']);
    const status = await runFleet(['status']);
    expect(status.code, status.stdout + status.stderr).toBe(3);
    expect(status.stdout).toMatch(/^DRIFT FLAGGED/m);

    writeFileSync(c.file, original);
    await until('proxy-c to reload back', async () => c.app.planner().policy.hash === before);
    await until('drift to clear', async () => {
      const { body } = await getJson<FleetView>(`${members[0]!.adminUrl}/fleet`);
      return body.drift.hashes === 1 && !body.drift.flagged;
    });
    expect((await runFleet(['status'])).code).toBe(0);
  });
});

describe('fleet lockdown', () => {
  let late: ServedProxy | null = null;
  afterAll(async () => {
    await late?.kill('SIGKILL');
  });

  it('turns would-blocks into refusals on every replica within a second, recorded and counted; lift restores', async () => {
    expect(await statuses(WOULD_BLOCK)).toEqual([200, 200, 200]);

    const set = await runFleet(['lockdown', '--reason', 'incident 9: suspected exfiltration', '--by', 'oncall@test']);
    expect(set.code, set.stdout + set.stderr).toBe(0);
    expect(set.stdout).toMatch(/^LOCKDOWN SET by oncall@test/m);
    expect(set.stdout).toMatch(/3\/3 live replicas confirmed/);
    for (const m of members) {
      const [event] = lockdownEvents(m, 'locked');
      expect(event, m.id).toMatchObject({ reason: 'incident 9: suspected exfiltration', set_by: 'oncall@test', replica: m.id });
      // Applied within one second of being set (pub/sub; polling is the fallback).
      const e = event as Extract<FleetEvent, { type: 'lockdown' }>;
      expect(Date.parse(e.at) - Date.parse(e.set_at), m.id).toBeLessThan(1_000);
    }
    expect(await statuses(WOULD_BLOCK)).toEqual([403, 403, 403]);
    // An allowed write is still allowed: lockdown enforces the policy, it does not stop all traffic.
    expect(await statuses(ALLOWED)).toEqual([200, 200, 200]);

    for (const m of members) {
      const refused = decisions(m.logFile).filter((r) => r.path === '/bucket/key' && r.effective === 'refused');
      expect(refused.length, m.id).toBe(1);
      expect(refused[0], m.id).toMatchObject({ lockdown: true, mode: 'enforce', decision: 'block', rule: 'eu-trial', replica: m.id });
      expect(await metric(m, 'residency_lockdown_changes_total{state="locked"}')).toBe('residency_lockdown_changes_total{state="locked"} 1');
      expect(await metric(m, 'residency_lockdown_active')).toBe('residency_lockdown_active 1');
      const { body } = await getJson<{ checks: Record<string, { ok: boolean; detail: string }> }>(`${m.adminUrl}/readyz`);
      expect(body.checks.fleet).toMatchObject({ ok: true, detail: expect.stringMatching(/^redis ok; LOCKDOWN ACTIVE .* incident 9/) });
    }

    const lift = await runFleet(['lift', '--reason', 'incident 9 contained', '--by', 'oncall@test']);
    expect(lift.code, lift.stdout + lift.stderr).toBe(0);
    for (const m of members) {
      const e = lockdownEvents(m, 'lifted')[0] as Extract<FleetEvent, { type: 'lockdown' }> | undefined;
      expect(e, m.id).toMatchObject({ reason: 'incident 9 contained' });
      expect(Date.parse(e!.at) - Date.parse(e!.set_at)).toBeLessThan(1_000);
      expect(await metric(m, 'residency_lockdown_changes_total{state="lifted"}')).toBe('residency_lockdown_changes_total{state="lifted"} 1');
      expect(await metric(m, 'residency_lockdown_active')).toBe('residency_lockdown_active 0');
    }
    expect(await statuses(WOULD_BLOCK)).toEqual([200, 200, 200]);
    const after = decisions(members[0]!.logFile).at(-1)!;
    expect(after).toMatchObject({ effective: 'forwarded', mode: 'monitor' });
    expect(after.lockdown).toBeUndefined();
    // Set and lift are chained into every replica's decision log, between the decisions.
    for (const m of members) {
      const events = logLines(m.logFile).filter((r) => r.kind === 'event');
      expect(events.map((e) => [e.event, e.state, e.reason, e.set_by]), m.id).toEqual([
        ['lockdown', 'locked', 'incident 9: suspected exfiltration', 'oncall@test'],
        ['lockdown', 'lifted', 'incident 9 contained', 'oncall@test'],
      ]);
    }
  });

  it('a replica started while the lockdown is set starts locked down', async () => {
    const set = await runFleet(['lockdown', '--reason', 'incident 10', '--by', 'oncall@test']);
    expect(set.code, set.stdout + set.stderr).toBe(0);

    const dir = join(root, 'late');
    mkdirSync(dir);
    const file = join(dir, 'config.yaml');
    writeFileSync(file, stringify(policyDoc(join(dir, 'decisions.log'))));
    late = await serve(file);
    // The very first request, with no time for a poll or a message: the switch was read before listening.
    expect((await send(late.port, 'PUT', WOULD_BLOCK, 'x')).status).toBe(403);
    const applied = late.logs.findIndex((l) => typeof l.msg === 'string' && l.msg.startsWith('fleet lockdown applied'));
    const listening = late.logs.findIndex((l) => l.msg === 'residency-proxy listening');
    expect(applied).toBeGreaterThanOrEqual(0);
    expect(late.logs[applied]).toMatchObject({ component: 'fleet', trigger: 'startup', reason: 'incident 10' });
    expect(applied).toBeLessThan(listening);
    const record = decisions(join(dir, 'decisions.log')).at(-1)!;
    expect(record).toMatchObject({ lockdown: true, effective: 'refused' });

    // A graceful stop removes its heartbeat at once.
    await late.kill('SIGTERM');
    late = null;
    const { body } = await getJson<FleetView>(`${members[0]!.adminUrl}/fleet`);
    expect(body.replicas.map((r) => r.id)).toEqual([...IDS]);
  });

  it('Redis killed mid-run: traffic flows under the last known state; when Redis returns, heartbeats reappear and a lift applies', async () => {
    // Still locked down from the previous case.
    expect(await statuses(WOULD_BLOCK)).toEqual([403, 403, 403]);
    const port = redis.port;
    await redis.stop();

    for (const m of members) {
      await until(`${m.id} to notice`, async () => (await metric(m, 'residency_fleet_redis_up')) === 'residency_fleet_redis_up 0');
      const ready = await getJson<{ ready: boolean; checks: Record<string, { ok: boolean; detail: string }> }>(`${m.adminUrl}/readyz`);
      expect(ready.status, m.id).toBe(200);
      expect(ready.body.checks.fleet).toMatchObject({ ok: true, detail: expect.stringMatching(/^redis unavailable: .*LOCKDOWN ACTIVE.*\(last known\)$/) });
      expect((await fetch(`${m.adminUrl}/fleet`)).status).toBe(503);
      expect(await metric(m, 'residency_lockdown_active')).toBe('residency_lockdown_active 1');
    }
    // Past several poll intervals without Redis: nothing lifted, nothing stuck.
    await new Promise((r) => setTimeout(r, 1_200));
    expect(await statuses(WOULD_BLOCK)).toEqual([403, 403, 403]);
    expect(await statuses(ALLOWED)).toEqual([200, 200, 200]);
    expect(members.every((m) => m.events.some((e) => e.type === 'redis' && !e.up))).toBe(true);
    expect((await runFleet(['status'])).code).toBe(1);

    // Back, empty (no persistence): the lockdown must not be lost with it.
    redis = await startRedis(port);
    const view = await until(
      'heartbeats to reappear',
      async () => {
        const r = await runFleet(['status', '--format', 'json']);
        if (r.code !== 0) return undefined;
        const v = JSON.parse(r.stdout) as FleetView;
        return v.replicas.length === 3 && v.lockdown?.active ? v : undefined;
      },
      15_000,
      200,
    );
    expect(view.replicas.map((r) => r.id)).toEqual([...IDS]);
    expect(view.lockdown).toMatchObject({ active: true, reason: 'incident 10' });
    for (const m of members) expect(await metric(m, 'residency_fleet_redis_up')).toBe('residency_fleet_redis_up 1');
    expect(await statuses(WOULD_BLOCK)).toEqual([403, 403, 403]);

    const lift = await runFleet(['lift', '--reason', 'incident 10 over']);
    expect(lift.code, lift.stdout + lift.stderr).toBe(0);
    expect(await statuses(WOULD_BLOCK)).toEqual([200, 200, 200]);
    for (const m of members) {
      expect(await metric(m, 'residency_lockdown_active')).toBe('residency_lockdown_active 0');
      expect(await metric(m, 'residency_lockdown_changes_total{state="lifted"}')).toBe('residency_lockdown_changes_total{state="lifted"} 2');
      const e = lockdownEvents(m, 'lifted').at(-1) as Extract<FleetEvent, { type: 'lockdown' }>;
      expect(e).toMatchObject({ reason: 'incident 10 over' });
      // Within a second after the restart too (the subscriber re-subscribed; polling backs it up).
      expect(Date.parse(e.at) - Date.parse(e.set_at), m.id).toBeLessThan(1_000);
    }
  });
});
