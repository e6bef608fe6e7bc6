import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { DecisionRecord } from '../../src/audit/record.js';
import { createShipper, SHIP_SCRIPT } from '../../src/audit/shipper.js';
import { createDecisionLog } from '../../src/audit/writer.js';
import { freePort, haveRedisServer, startRedis, type TestRedis } from '../helpers/audit-redis.js';
import { sampleEntry } from '../helpers/audit-records.js';
import { assertBuilt, proxyConfig, runCli, send, serve, writeConfig, type ServedProxy } from '../helpers/audit-serve.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/upstream.js';

/** Records `traffic(count)` writes: one per refused /eu write, a decision and an outcome per forwarded /us write. */
function recordsFor(count: number): number {
  const eu = Math.ceil(count / 4);
  return eu + 2 * (count - eu);
}

async function traffic(port: number, count: number, tag: string): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: 8 });
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      const answer = await send(port, 'PUT', `/${i % 4 === 0 ? 'eu' : 'us'}/bucket/${tag}-${i}.txt`, 'x', agent);
      expect([200, 403]).toContain(answer.status);
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  agent.destroy();
}

async function waitFor(predicate: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The stream as (seq, record line) in stream order. */
async function streamEntries(redis: Redis, key: string): Promise<{ replica: string; seq: number; record: string }[]> {
  const entries = await redis.xrange(key, '-', '+');
  return entries.map(([, fields]) => {
    const f: Record<string, string> = {};
    for (let i = 0; i < fields.length; i += 2) f[fields[i]!] = fields[i + 1]!;
    return { replica: f.replica!, seq: Number(f.seq), record: f.record! };
  });
}

/** Every record line of a log directory, by seq. */
function localLines(logDir: string): Map<number, string> {
  const out = new Map<number, string>();
  for (const name of readdirSync(logDir)) {
    if (!name.endsWith('.log')) continue;
    for (const line of readFileSync(join(logDir, name), 'utf8').split('\n')) {
      if (line) out.set((JSON.parse(line) as DecisionRecord).seq, line);
    }
  }
  return out;
}

describe.skipIf(!haveRedisServer())('decision stream: shipping to Redis', () => {
  let dir: string;
  let upstream: RecordingUpstream;
  let redisServer: TestRedis | null = null;
  let proxy: ServedProxy | null = null;
  const prefix = `residency-test-${randomUUID().slice(0, 8)}:`;

  beforeAll(async () => {
    assertBuilt();
    dir = mkdtempSync(join(tmpdir(), 'audit-redis-'));
    upstream = await startRecordingUpstream();
  });

  afterEach(async () => {
    await proxy?.kill('SIGKILL');
    proxy = null;
    await redisServer?.stop();
    redisServer = null;
  });

  afterAll(async () => {
    await upstream?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('ships in order; while Redis is down the local log spools; after it returns everything arrives once, in order', async () => {
    redisServer = await startRedis();
    const { url, port: redisPort } = redisServer;
    const logDir = join(dir, 'shipped');
    const key = `${prefix}decisions`;
    const config = writeConfig(
      dir,
      'redis.yaml',
      proxyConfig(upstream.url, { path: join(logDir, 'decisions.log'), rotate_bytes: 32 * 1024, stream: { key: 'decisions', maxlen: 100_000 } }, {
        redis: { url, key_prefix: prefix },
      }),
    );
    proxy = await serve(config);
    let client = new Redis(url, { maxRetriesPerRequest: 1 });
    try {
      await traffic(proxy.port, 100, 'up');
      const up = recordsFor(100);
      await waitFor(async () => (await client.xlen(key)) === up);
      expect((await streamEntries(client, key)).map((e) => e.seq)).toEqual(Array.from({ length: up }, (_, i) => i + 1));
    } finally {
      client.disconnect();
    }

    // Redis goes away in the middle of traffic: requests are unaffected, records stay in the local log.
    const started = Date.now();
    const load = traffic(proxy.port, 150, 'down');
    await new Promise((r) => setTimeout(r, 40));
    await redisServer.stop();
    redisServer = null;
    await load;
    const elapsed = Date.now() - started;
    console.log(`[audit-redis] 150 requests with Redis down took ${elapsed} ms`);
    await new Promise((r) => setTimeout(r, 300));
    expect(proxy.logs.some((l) => l.component === 'shipper' && String(l.msg).includes('shipping paused'))).toBe(true);
    const cursor = JSON.parse(readFileSync(join(logDir, 'decisions.log.cursor.json'), 'utf8')) as { seq: number };
    const beforeOutage = recordsFor(100);
    const total = beforeOutage + recordsFor(150);
    expect(cursor.seq).toBeGreaterThanOrEqual(beforeOutage);
    expect(cursor.seq).toBeLessThan(total);

    // Back on the same port, empty (no persistence): the shipper notices and sends everything again, once.
    redisServer = await startRedis(redisPort);
    client = new Redis(url, { maxRetriesPerRequest: 1 });
    try {
      await waitFor(async () => (await client.xlen(key)) >= total);
      await traffic(proxy.port, 10, 'after');
      await waitFor(async () => (await client.xlen(key)) >= total + recordsFor(10));
      await new Promise((r) => setTimeout(r, 300));
      const entries = await streamEntries(client, key);
      expect(entries.map((e) => e.seq)).toEqual(Array.from({ length: total + recordsFor(10) }, (_, i) => i + 1));
      const local = localLines(logDir);
      for (const e of entries) expect(e.record).toBe(local.get(e.seq));
      expect(new Set(entries.map((e) => e.replica)).size).toBe(1);
      expect(await client.hget(`${key}:shipped`, entries[0]!.replica)).toBe(String(total + recordsFor(10)));
    } finally {
      client.disconnect();
    }

    await proxy.kill('SIGTERM');
    proxy = null;

    // audit export writes per-replica files that audit verify accepts.
    const out = join(dir, 'export');
    const exported = runCli(['audit', 'export', '--redis', url, '--stream', key, '--out', out]);
    expect(exported.status).toBe(0);
    const shipped = recordsFor(100) + recordsFor(150) + recordsFor(10);
    expect(exported.stdout).toContain(`seq 1–${shipped}, ${shipped} records`);
    const verify = runCli(['audit', 'verify', out]);
    expect(verify.stdout).toContain(`INTACT: ${shipped} records`);
    expect(verify.status).toBe(0);
  });

  it('starts while Redis is down and catches up when it appears', async () => {
    const port = await freePort();
    const logDir = join(dir, 'late');
    const log = createDecisionLog({ path: join(logDir, 'decisions.log'), replica: 'r-late' });
    const key = `${prefix}late`;
    const shipper = createShipper({ log, redisUrl: `redis://127.0.0.1:${port}`, streamKey: key, maxlen: 1000, retryMaxMs: 200 });
    try {
      shipper.start();
      for (let i = 0; i < 30; i++) await log.write(sampleEntry(i));
      await new Promise((r) => setTimeout(r, 300));
      expect(shipper.backlog()).toBe(30);
      redisServer = await startRedis(port);
      await waitFor(async () => shipper.backlog() === 0);
      const client = new Redis(redisServer.url, { maxRetriesPerRequest: 1 });
      try {
        expect((await streamEntries(client, key)).map((e) => e.seq)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
      } finally {
        client.disconnect();
      }
    } finally {
      await shipper.close();
      await log.close();
    }
  });

  it('exactly once: the script skips what Redis already holds; a stale cursor re-sends nothing', async () => {
    redisServer = await startRedis();
    const client = new Redis(redisServer.url, { maxRetriesPerRequest: 1 });
    const key = `${prefix}idem`;
    const logDir = join(dir, 'idem');
    const log = createDecisionLog({ path: join(logDir, 'decisions.log'), replica: 'r-idem' });
    try {
      // The script itself: a retried batch adds nothing twice.
      const first = (await client.eval(SHIP_SCRIPT, 2, `${key}-raw`, `${key}-raw:shipped`, 'r', 100, 1, 'a', 2, 'b')) as number[];
      const retry = (await client.eval(SHIP_SCRIPT, 2, `${key}-raw`, `${key}-raw:shipped`, 'r', 100, 1, 'a', 2, 'b', 3, 'c')) as number[];
      expect(first).toEqual([2, 2]);
      expect(retry).toEqual([3, 1]);
      expect(await client.xlen(`${key}-raw`)).toBe(3);

      for (let i = 0; i < 40; i++) await log.write(sampleEntry(i));
      let shipper = createShipper({ log, redisUrl: redisServer.url, streamKey: key, maxlen: 1000 });
      shipper.start();
      await waitFor(async () => shipper.backlog() === 0 && (await client.xlen(key)) === 40);
      await shipper.close();
      // A cursor from an older run (a crash before it was saved): Redis's own record wins.
      writeFileSync(log.layout.cursor, JSON.stringify({ replica: 'r-idem', stream: key, seq: 5 }));
      for (let i = 40; i < 50; i++) await log.write(sampleEntry(i));
      shipper = createShipper({ log, redisUrl: redisServer.url, streamKey: key, maxlen: 1000 });
      expect(shipper.backlog()).toBe(45);
      shipper.start();
      await waitFor(async () => shipper.backlog() === 0);
      await shipper.close();
      const entries = await streamEntries(client, key);
      expect(entries.map((e) => e.seq)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
      expect(existsSync(log.layout.cursor)).toBe(true);
    } finally {
      client.disconnect();
      await log.close();
    }
  });
});
