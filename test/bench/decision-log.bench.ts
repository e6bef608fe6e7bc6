/*
 * Decision-log write throughput: records/s the durable writer sustains with
 * many writes in flight (as under concurrent requests), with fsync group
 * commit and without fsync. Not part of `npm test`; run with
 *
 *   npx vitest bench --run --project unit test/bench/decision-log.bench.ts
 *
 * Each iteration writes RECORDS records keeping IN_FLIGHT write() calls
 * pending; records/s = iterations/s × RECORDS (printed at the end).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, bench, describe } from 'vitest';
import { createDecisionLog, type DecisionLog } from '../../src/audit/writer.js';
import { sampleEntry } from '../helpers/audit-records.js';

const RECORDS = 5_000;
const IN_FLIGHT = 256;
const dir = mkdtempSync(join(tmpdir(), 'decision-log-bench-'));
const results = new Map<string, { records: number; ms: number }>();

function openLog(name: string, fsync: boolean, flushMs: number): DecisionLog {
  return createDecisionLog({ path: join(dir, name, 'decisions.log'), replica: 'bench', fsync, flushMs, rotateBytes: 256 * 1024 * 1024 });
}

/** Write RECORDS records with IN_FLIGHT writes outstanding at any time. */
async function burst(log: DecisionLog, name: string): Promise<void> {
  const started = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < RECORDS) await log.write(sampleEntry(next++));
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  const r = results.get(name) ?? { records: 0, ms: 0 };
  r.records += RECORDS;
  r.ms += performance.now() - started;
  results.set(name, r);
}

const logs = {
  fsync: openLog('fsync', true, 2),
  fsync0: openLog('fsync0', true, 0),
  nofsync: openLog('nofsync', false, 2),
};

afterAll(async () => {
  for (const log of Object.values(logs)) await log.close();
  rmSync(dir, { recursive: true, force: true });
  for (const [name, r] of results) console.log(`${name}: ${Math.round((r.records / r.ms) * 1000).toLocaleString('en-US')} records/s sustained`);
});

describe(`decision log: ${RECORDS} records, ${IN_FLIGHT} writes in flight`, () => {
  bench('fsync group commit (flush_ms 2)', () => burst(logs.fsync, 'fsync group commit (flush_ms 2)'), { iterations: 10, time: 0, warmupIterations: 1 });
  bench('fsync group commit (flush_ms 0)', () => burst(logs.fsync0, 'fsync group commit (flush_ms 0)'), { iterations: 10, time: 0, warmupIterations: 1 });
  bench('no fsync (flush_ms 2)', () => burst(logs.nofsync, 'no fsync (flush_ms 2)'), { iterations: 10, time: 0, warmupIterations: 1 });
});
