import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { logLayout } from '../../src/audit/files.js';
import { LogReader } from '../../src/audit/log-reader.js';
import { createDecisionLog, type DecisionLog } from '../../src/audit/writer.js';
import { sampleEntry } from '../helpers/audit-records.js';

let dir: string;
let log: DecisionLog;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'audit-reader-'));
  log = createDecisionLog({ path: join(dir, 'decisions.log'), replica: 'r', rotateBytes: 3000 });
});

afterEach(async () => {
  await log.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('LogReader (the shipper reads the log as its spool)', () => {
  it('reads records in seq order across rotations, never past the given bound', async () => {
    for (let i = 0; i < 25; i++) await log.write(sampleEntry(i));
    const reader = new LogReader(logLayout(join(dir, 'decisions.log')));
    const seen: number[] = [];
    let next = 1;
    while (next <= 20) {
      const batch = await reader.read(next, 20, 3);
      expect(batch.length).toBeGreaterThan(0);
      seen.push(...batch.map((b) => b.seq));
      next = batch.at(-1)!.seq + 1;
    }
    expect(seen).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    // Later records appear as the bound moves; a rotation in between is followed.
    for (let i = 25; i < 40; i++) await log.write(sampleEntry(i));
    const rest = await reader.read(21, 40, 100);
    const more = rest.length < 20 ? await reader.read(rest.at(-1)!.seq + 1, 40, 100) : [];
    const all = [...rest, ...more];
    expect(all.map((b) => b.seq)).toEqual(Array.from({ length: all.length }, (_, i) => i + 21));
    expect(all.length).toBeGreaterThan(0);
    expect(reader.firstAvailable()).toBe(1);
    await reader.close();
  });

  it('repositions on demand (a re-ship from an earlier seq)', async () => {
    for (let i = 0; i < 12; i++) await log.write(sampleEntry(i));
    const reader = new LogReader(logLayout(join(dir, 'decisions.log')));
    await reader.read(1, 12, 12);
    const again = await reader.read(4, 6, 10);
    expect(again.map((b) => b.seq)).toEqual([4, 5, 6]);
    expect(JSON.parse(again[0]!.line)).toMatchObject({ seq: 4, replica: 'r' });
    await reader.close();
  });
});
