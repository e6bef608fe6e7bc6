import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { DecisionEntry, OutcomeEntry } from '../../src/audit/record.js';
import { verifyLogs } from '../../src/audit/verify.js';
import { generateLog, sampleEntry } from '../helpers/audit-records.js';

/**
 * Record v2: a forwarded write's decision (status null) comes before the
 * write, its outcome after. verify pairs them within the chain.
 */
const dir = mkdtempSync(join(tmpdir(), 'audit-outcomes-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const decision = (i: number): DecisionEntry => sampleEntry(i, { method: 'PUT', operation: 'write', decision: 'allow', effective: 'forwarded', status: null });
const outcome = (i: number): OutcomeEntry => ({ kind: 'outcome', ts: sampleEntry(i).ts, id: sampleEntry(i).id, status: 200, bytes_in: 5, bytes_out: 3, duration_ms: 1 });

/** A log from a script of entries: generateLog builds record i with `entries[i - 1]`. */
function log(name: string, entries: readonly (DecisionEntry | OutcomeEntry)[]): string {
  const file = join(dir, `${name}.log`);
  generateLog(file, entries.length, { entry: (i) => entries[i - 1] as DecisionEntry });
  return file;
}

describe('decisions and their outcomes', () => {
  it('each decision with its outcome later in the chain verifies', async () => {
    const result = await verifyLogs([log('paired', [decision(1), decision(2), outcome(1), sampleEntry(3), outcome(2)])]);
    expect(result.ok).toBe(true);
    expect(result.findings.filter((f) => f.code === 'missing_outcome' || f.code === 'orphan_outcome')).toEqual([]);
  });

  it('an outcome no decision waits for is an error, and so is a second outcome', async () => {
    const orphan = await verifyLogs([log('orphan', [decision(1), outcome(2)])]);
    expect(orphan.ok).toBe(false);
    expect(orphan.firstError).toMatchObject({ code: 'orphan_outcome', seq: 2 });
    const twice = await verifyLogs([log('twice', [decision(1), outcome(1), outcome(1)])]);
    expect(twice.firstError).toMatchObject({ code: 'orphan_outcome', seq: 3 });
    const before = await verifyLogs([log('before', [outcome(1), decision(1)])]);
    expect(before.firstError).toMatchObject({ code: 'orphan_outcome', seq: 1 });
  });

  it('a decision whose outcome never came (a crash) is a warning naming where', async () => {
    const result = await verifyLogs([log('crash', [decision(1), decision(2), outcome(2)])]);
    expect(result.ok).toBe(true);
    expect(result.findings).toContainEqual(expect.objectContaining({ severity: 'warning', code: 'missing_outcome', seq: 1 }));
  });
});
