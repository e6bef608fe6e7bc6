import { appendFileSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { request } from 'undici';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { loadPolicy } from '../../src/load.js';
import { PolicyStore } from '../../src/reload.js';
import { createResidencyProxy, type ResidencyProxy } from '../../src/server.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/upstream.js';

const SETTLE_MS = 600;

/*
 * A policy rewritten in place in two writes: the first half is valid on its
 * own (IE allowed everywhere), the second adds the rule that keeps writes to
 * the eu upstream in the US. Loaded halfway, IE writes would go through.
 */
const firstHalf = (upstreamUrl: string, logFile: string, settleMs = SETTLE_MS) => `
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
decision_log: { path: ${JSON.stringify(logFile)} }
reload: { settle_ms: ${settleMs} }
allowed_jurisdictions: [US, IE]
upstreams:
  - { name: eu, url: "${upstreamUrl}", provider: s3, route: { path_prefix: /eu, strip_prefix: true }, region: eu-west-1 }
`;
const secondHalf = `rules:
  - { name: eu-writes-stay-home, match: { upstreams: [eu], operations: [write] }, allow_jurisdictions: [US] }
`;
const initial = (upstreamUrl: string, logFile: string, settleMs = SETTLE_MS) =>
  firstHalf(upstreamUrl, logFile, settleMs).replace('allowed_jurisdictions: [US, IE]', 'allowed_jurisdictions: [US]');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('policy reload waits for the file to settle', () => {
  let dir: string;
  let file: string;
  let logFile: string;
  let upstream: RecordingUpstream;
  let app: ResidencyProxy | null = null;
  let base: string;

  async function start(): Promise<void> {
    const loaded = loadPolicy(file);
    app = createResidencyProxy(loaded.config, { logger: pino({ level: 'silent' }), watch: true, shadow: loaded.shadow, awaitOutcomes: true });
    const { proxy } = await app.listen();
    base = `http://127.0.0.1:${proxy.port}`;
  }
  const put = async () => {
    const res = await request(`${base}/eu/bucket/key`, { method: 'PUT', body: 'data' });
    await res.body.dump();
    return res.statusCode;
  };
  const successfulReloads = async () => {
    const text = await app!.metrics.registry.getSingleMetricAsString('residency_policy_reloads_total');
    return Number(/residency_policy_reloads_total\{result="success"\} (\d+)/.exec(text)?.[1] ?? 0);
  };
  /** Watch the active policy and the answers to an IE write until `stop` says so. */
  async function observe(stop: () => boolean, ms = 5_000): Promise<{ hashes: Set<string>; statuses: Set<number> }> {
    const hashes = new Set<string>();
    const statuses = new Set<number>();
    const end = Date.now() + ms;
    while (!stop()) {
      if (Date.now() > end) throw new Error('condition not met in time');
      hashes.add(app!.policy.status().hash);
      statuses.add(await put());
      await sleep(20);
    }
    return { hashes, statuses };
  }

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'residency-reload-settle-'));
    // Apart, so only the policy's own writes are events in its directory.
    mkdirSync(join(dir, 'policy'));
    file = join(dir, 'policy', 'policy.yaml');
    logFile = join(dir, 'decisions.log');
    upstream = await startRecordingUpstream();
  });
  afterEach(async () => {
    await app?.close();
    app = null;
    await upstream.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a file rewritten in place in two writes 450 ms apart: the valid, weaker first half is never active', async () => {
    writeFileSync(file, initial(upstream.url, logFile));
    await start();
    const initialHash = app!.policy.status().hash;
    expect(await put()).toBe(403);

    writeFileSync(file, firstHalf(upstream.url, logFile));
    const firstWrite = performance.now();
    const duringFirstHalf = await observe(() => performance.now() - firstWrite >= 450);
    appendFileSync(file, secondHalf);
    const secondWrite = performance.now();
    const untilLoaded = await observe(() => app!.policy.status().hash !== initialHash);
    const loadedAfter = performance.now() - secondWrite;

    expect(duringFirstHalf).toEqual({ hashes: new Set([initialHash]), statuses: new Set([403]) });
    expect(untilLoaded).toEqual({ hashes: new Set([initialHash]), statuses: new Set([403]) });
    expect(loadedAfter).toBeGreaterThanOrEqual(SETTLE_MS);
    expect(app!.policy.status().hash).toBe(loadPolicyHash(file));
    expect(await put()).toBe(403);
    // Start-up and the full file: the half was never loaded, not even between two looks.
    expect(await successfulReloads()).toBe(2);
    expect(app!.policy.status().lastAttempt).toMatchObject({ ok: true, trigger: expect.stringMatching(/file change|poll/) });
  });

  it('a single atomic rename is loaded once it has settled', async () => {
    writeFileSync(file, initial(upstream.url, logFile));
    await start();
    const initialHash = app!.policy.status().hash;
    writeFileSync(`${file}.tmp`, firstHalf(upstream.url, logFile));
    renameSync(`${file}.tmp`, file);
    const renamed = performance.now();
    const untilLoaded = await observe(() => app!.policy.status().hash !== initialHash);
    const loadedAfter = performance.now() - renamed;

    expect(untilLoaded.statuses).toEqual(new Set([403]));
    expect(loadedAfter).toBeGreaterThanOrEqual(SETTLE_MS);
    expect(loadedAfter).toBeLessThan(SETTLE_MS + 2_000);
    expect(await put()).toBe(200);
    expect(await successfulReloads()).toBe(2);
  });

  it('a decision log busy in the same directory does not hold the reload back until the next poll', async () => {
    logFile = join(dir, 'policy', 'decisions.log');
    writeFileSync(file, initial(upstream.url, logFile));
    await start();
    const initialHash = app!.policy.status().hash;
    writeFileSync(`${file}.tmp`, firstHalf(upstream.url, logFile));
    renameSync(`${file}.tmp`, file);
    const renamed = performance.now();
    // Every answer appends to the log: a stream of events in the watched directory.
    await observe(() => app!.policy.status().hash !== initialHash);
    expect(performance.now() - renamed).toBeLessThan(SETTLE_MS + 1_500);
  });

  it('SIGHUP (an explicit reload) loads at once, and the settled change is not loaded twice', async () => {
    writeFileSync(file, initial(upstream.url, logFile));
    await start();
    const initialHash = app!.policy.status().hash;
    writeFileSync(file, firstHalf(upstream.url, logFile));
    expect(app!.policy.reload('SIGHUP')).toMatchObject({ ok: true });
    expect(app!.policy.status().hash).not.toBe(initialHash);
    expect(await put()).toBe(200);
    await sleep(SETTLE_MS + 400);
    expect(await successfulReloads()).toBe(2);
  });

  it('settle_ms: 0 loads a change as soon as it is seen', async () => {
    writeFileSync(file, initial(upstream.url, logFile, 0));
    await start();
    const initialHash = app!.policy.status().hash;
    writeFileSync(file, firstHalf(upstream.url, logFile, 0));
    const written = performance.now();
    await observe(() => app!.policy.status().hash !== initialHash);
    expect(performance.now() - written).toBeLessThan(SETTLE_MS);
  });
});

function loadPolicyHash(file: string): string {
  const store = new PolicyStore({ file }, loadPolicy(file));
  return store.status().hash;
}

describe('the settle clock (injected)', () => {
  let dir: string;
  let file: string;
  let store: PolicyStore | null = null;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'residency-reload-clock-'));
    file = join(dir, 'policy.yaml');
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
  });
  afterEach(() => {
    store?.close();
    store = null;
    vi.useRealTimers();
    rmSync(dir, { recursive: true, force: true });
  });

  const policy = (allow: string) => `
decision_log: { path: ${JSON.stringify(join(dir, 'decisions.log'))} }
allowed_jurisdictions: ${allow}
upstreams:
  - { name: eu, url: "http://127.0.0.1:1", provider: s3, route: { path_prefix: /eu }, region: eu-west-1 }
`;

  it('content that keeps changing is not loaded; it is once unchanged for the settle time', () => {
    writeFileSync(file, policy('[US]'));
    const loads: string[] = [];
    store = new PolicyStore({ file, pollMs: 100, debounceMs: 10, settleMs: 500, clock: () => Date.now(), onReload: (a) => loads.push(a.trigger) }, loadPolicy(file));
    store.watch();
    // A new version every 300 ms, seen by every poll: never 500 ms unchanged.
    const versions = ['[US, IE]', '[US, DE]', '[US, FR]', '[US, IE, DE]', '[US, IE, FR]'];
    for (const allow of versions) {
      writeFileSync(file, policy(allow));
      vi.advanceTimersByTime(300);
    }
    expect(loads).toEqual([]);
    expect(store.config().allowed_jurisdictions).toEqual(['US']);
    // The last version, first seen by the poll at most 100 ms after it was written.
    vi.advanceTimersByTime(300);
    expect(loads).toEqual(['poll']);
    expect(store.config().allowed_jurisdictions).toEqual(['US', 'IE', 'FR']);
  });

  it('content changed back to what is loaded is not reloaded', () => {
    writeFileSync(file, policy('[US]'));
    const loads: string[] = [];
    store = new PolicyStore({ file, pollMs: 100, debounceMs: 10, settleMs: 500, clock: () => Date.now(), onReload: (a) => loads.push(a.trigger) }, loadPolicy(file));
    store.watch();
    writeFileSync(file, policy('[US, IE]'));
    vi.advanceTimersByTime(250);
    writeFileSync(file, policy('[US]'));
    vi.advanceTimersByTime(2_000);
    expect(loads).toEqual([]);
  });
});
