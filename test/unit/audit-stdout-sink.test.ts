import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GENESIS_HASH, sealRecord } from '../../src/audit/canonical.js';
import { RECORD_VERSION, type DecisionRecord } from '../../src/audit/record.js';
import { createStdoutSink, type StdoutSinkOptions } from '../../src/audit/stdout-sink.js';
import { verifyLogs } from '../../src/audit/verify.js';
import { sampleEntry } from '../helpers/audit-records.js';

const errnoError = (code: string) => Object.assign(new Error(`${code}: injected`), { code });

/** A stand-in for write(2) on stdout: records what was written; `next` scripts the coming calls. */
function fakeStdout() {
  const state = { out: '', calls: 0, next: [] as ({ fail: string } | { accept: number })[] };
  const writeSync: NonNullable<StdoutSinkOptions['writeSync']> = (buffer, offset, length) => {
    state.calls++;
    const step = state.next.shift();
    if (step && 'fail' in step) throw errnoError(step.fail);
    const n = step ? Math.min(step.accept, length) : length;
    state.out += buffer.subarray(offset, offset + n).toString('utf8');
    return n;
  };
  return { state, writeSync };
}

const parse = (out: string) =>
  out
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as DecisionRecord);

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'audit-stdout-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('stdout decision sink', () => {
  it('writes one turn of records in one write, in order, chained; each resolves after its bytes are out', async () => {
    const { state, writeSync } = fakeStdout();
    const sink = createStdoutSink({ replica: 'r1', writeSync });
    const seenAtResolve: number[] = [];
    await Promise.all(Array.from({ length: 20 }, (_, i) => sink.write(sampleEntry(i)).then(() => seenAtResolve.push(parse(state.out).length))));
    expect(state.calls).toBe(1);
    expect(seenAtResolve.every((n) => n === 20)).toBe(true);

    await sink.write(sampleEntry(20));
    expect(state.calls).toBe(2);
    const lines = state.out.split('\n').filter(Boolean);
    let prev = GENESIS_HASH;
    lines.forEach((line, i) => {
      const expected = sealRecord({ ...sampleEntry(i), v: RECORD_VERSION, seq: i + 1, replica: 'r1', prev });
      expect(line).toBe(expected.line);
      prev = expected.hash;
    });
    // What a collector keeps verifies.
    writeFileSync(join(dir, 'decisions.log'), state.out);
    expect((await verifyLogs([dir])).ok).toBe(true);
  });

  it('waits out EAGAIN and short writes (a full non-blocking pipe)', async () => {
    const { state, writeSync } = fakeStdout();
    state.next = [{ accept: 10 }, { fail: 'EAGAIN' }, { accept: 100 }, { fail: 'EAGAIN' }];
    const sink = createStdoutSink({ replica: 'r1', writeSync });
    await Promise.all([sink.write(sampleEntry(0)), sink.write(sampleEntry(1))]);
    expect(parse(state.out).map((r) => r.seq)).toEqual([1, 2]);
    expect(sink.healthy()).toBe(true);
  });

  it('a failed write rejects the records not out whole; the chain goes on from the last one out', async () => {
    const { state, writeSync } = fakeStdout();
    const errors: Error[] = [];
    const sink = createStdoutSink({ replica: 'r1', writeSync, onError: (e) => errors.push(e) });
    const firstLine = sealRecord({ ...sampleEntry(0), v: RECORD_VERSION, seq: 1, replica: 'r1', prev: GENESIS_HASH }).line;
    // The first record and half of the second get out, then the pipe breaks.
    state.next = [{ accept: Buffer.byteLength(firstLine) + 1 + 40 }, { fail: 'EPIPE' }];
    const results = await Promise.allSettled([0, 1, 2].map((i) => sink.write(sampleEntry(i))));
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected']);
    expect((results[1] as PromiseRejectedResult).reason).toMatchObject({ code: 'EPIPE' });
    expect(errors).toHaveLength(1);
    expect(sink.healthy()).toBe(false);

    // The pipe works again: the torn line is ended first, and seq 2 follows seq 1.
    await sink.write(sampleEntry(3));
    expect(sink.healthy()).toBe(true);
    const lines = state.out.split('\n');
    expect(lines[0]).toBe(firstLine);
    expect(lines[1]).toHaveLength(40);
    const last = JSON.parse(lines[2]!) as DecisionRecord;
    expect(last).toMatchObject({ seq: 2, prev: parse(firstLine)[0]!.hash, id: sampleEntry(3).id });
  });

  it('a write that fails with nothing out rejects the whole turn and reuses its seqs', async () => {
    const { state, writeSync } = fakeStdout();
    state.next = [{ fail: 'EIO' }];
    const sink = createStdoutSink({ replica: 'r1', writeSync });
    const results = await Promise.allSettled([sink.write(sampleEntry(0)), sink.write(sampleEntry(1))]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    await sink.write(sampleEntry(2));
    expect(parse(state.out)).toMatchObject([{ seq: 1, prev: GENESIS_HASH, id: sampleEntry(2).id }]);
  });

  it('close() writes what is pending', async () => {
    const { state, writeSync } = fakeStdout();
    const sink = createStdoutSink({ replica: 'r1', writeSync });
    const written = sink.write(sampleEntry(0));
    await sink.close();
    expect(parse(state.out)).toHaveLength(1);
    await written;
  });
});
