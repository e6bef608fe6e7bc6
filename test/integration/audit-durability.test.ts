import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { Agent } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { DecisionRecord } from '../../src/audit/record.js';
import { assertBuilt, proxyConfig, runCli, send, serve, writeConfig, type Answer, type ServedProxy } from '../helpers/audit-serve.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/upstream.js';

/** Every record id, and every decided path, in every file of the log directory (a torn last line is skipped). */
function recorded(dir: string): { ids: Set<string>; paths: Set<string> } {
  const ids = new Set<string>();
  const paths = new Set<string>();
  for (const name of readdirSync(dir)) {
    if (!name.endsWith('.log')) continue;
    for (const line of readFileSync(join(dir, name), 'utf8').split('\n')) {
      if (line === '') continue;
      try {
        const record = JSON.parse(line) as DecisionRecord;
        ids.add(record.id);
        if (typeof record.path === 'string') paths.add(record.path);
      } catch {
        // The torn tail of the killed writer.
      }
    }
  }
  return { ids, paths };
}

/**
 * Concurrent PUTs (allowed to /us, refused to /eu) until the proxy dies.
 * Returns every final answer a client received.
 */
async function load(port: number, concurrency: number, until: Promise<unknown>, onFirst: () => void): Promise<Answer[]> {
  const answers: Answer[] = [];
  let stop = false;
  void until.then(() => (stop = true));
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const worker = async (w: number) => {
    for (let i = 0; !stop && i < 100_000; i++) {
      const region = i % 4 === 0 ? 'eu' : 'us';
      try {
        answers.push(await send(port, 'PUT', `/${region}/bucket/w${w}-${i}.txt`, 'hello', agent));
        if (answers.length === 1) onFirst();
      } catch {
        return; // the proxy is gone
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
  agent.destroy();
  return answers;
}

describe('decision log durability under kill -9', () => {
  let dir: string;
  let upstream: RecordingUpstream;
  let proxy: ServedProxy | null = null;

  beforeAll(async () => {
    assertBuilt();
    dir = mkdtempSync(join(tmpdir(), 'audit-durability-'));
    upstream = await startRecordingUpstream();
  });

  afterEach(async () => {
    await proxy?.kill('SIGKILL');
    proxy = null;
  });

  afterAll(async () => {
    await upstream?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  // Three kill points; each run restarts on the same directory, so the chain also has to survive the crashes.
  it.each([
    { run: 1, killAfterMs: 300 + Math.floor(Math.random() * 300) },
    { run: 2, killAfterMs: 800 + Math.floor(Math.random() * 400) },
    { run: 3, killAfterMs: 1400 + Math.floor(Math.random() * 500) },
  ])('run $run: every answered request has its record, and the log verifies', async ({ run, killAfterMs }) => {
    const logDir = join(dir, 'log');
    // A small rotation size: kills also land around rotations and seals.
    const config = writeConfig(dir, `run-${run}.yaml`, proxyConfig(upstream.url, { path: join(logDir, 'decisions.log'), rotate_bytes: 256 * 1024 }));
    proxy = await serve(config);
    upstream.reset();
    // The kill point counts from the first answer, so a slow machine still gets load before the kill.
    let started = 0;
    let startKillClock!: () => void;
    const killed = new Promise<void>((resolve) => {
      startKillClock = () => {
        started = Date.now();
        setTimeout(() => {
          proxy!.child.kill('SIGKILL');
          resolve();
        }, killAfterMs);
      };
    });
    const answers = await load(proxy.port, 32, killed, startKillClock);
    await proxy.exited;
    proxy = null;

    const { ids, paths } = recorded(logDir);
    const decided = answers.filter((a) => a.decisionId !== undefined);
    const missing = decided.filter((a) => !ids.has(a.decisionId!));
    console.log(
      `[audit-durability] run ${run}: killed after ${killAfterMs} ms (load ran ${Date.now() - started} ms); ` +
        `${decided.length} answers (${decided.filter((a) => a.status === 200).length} × 200, ${decided.filter((a) => a.status === 403).length} × 403), ` +
        `${ids.size} records on disk, ${missing.length} answered without a record`,
    );
    expect(decided.length).toBeGreaterThan(20);
    expect(answers.every((a) => a.status === 200 || a.status === 403)).toBe(true);
    expect(missing).toEqual([]);
    // No stored write without a durable decision: every request whose body reached the storage (the
    // proxy strips /us) was decided on disk first. (A write's head may go out while its decision is
    // being made durable; no body byte follows until it is, so a head alone stores nothing.)
    const unrecorded = upstream.requests.filter((r) => (r.bodyBytes > 0 || r.complete) && !paths.has(r.url));
    console.log(`[audit-durability] run ${run}: ${upstream.requests.length} requests reached the upstream, ${unrecorded.length} without a durable decision`);
    expect(upstream.requests.length).toBeGreaterThan(0);
    expect(unrecorded).toEqual([]);

    // Whatever the kill left behind verifies; a torn tail of the unsealed active file is only a warning.
    const verify = runCli(['audit', 'verify', logDir]);
    expect(verify.stdout).toContain('INTACT');
    expect(verify.status).toBe(0);
  });
});
