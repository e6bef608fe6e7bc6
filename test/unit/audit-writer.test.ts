import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { appendFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GENESIS_HASH, recordHash, sha256Hex } from '../../src/audit/canonical.js';
import { signatureValid, type Digest } from '../../src/audit/digest.js';
import { DecisionLogCodes, DecisionLogError } from '../../src/audit/errors.js';
import { RECORD_VERSION, type DecisionRecord } from '../../src/audit/record.js';
import { verifyLogs } from '../../src/audit/verify.js';
import { createDecisionLog, nodeFileOps, type DecisionLog, type DecisionLogOptions, type FileOps } from '../../src/audit/writer.js';
import { generateLog, sampleEntry } from '../helpers/audit-records.js';
import { captureLog } from '../helpers/log-capture.js';

let dir: string;
let path: string;
const open: DecisionLog[] = [];

/** Long enough for the log to notice a rename (its probe runs every 20 ms here, the directory watch sooner). */
const noticed = () => new Promise((resolve) => setTimeout(resolve, 60));

function make(options: Partial<DecisionLogOptions> = {}): DecisionLog {
  const log = createDecisionLog({ path, replica: 'r1', probeMs: 20, ...options });
  open.push(log);
  return log;
}

/** The open flags of this process's descriptor for `file`, from /proc (Linux). */
function activeFileFlags(file: string): number {
  for (const fd of readdirSync('/proc/self/fd')) {
    let target: string;
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue;
    }
    if (target !== file) continue;
    const info = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
    const octal = /^flags:\s+([0-7]+)$/m.exec(info);
    if (octal) return parseInt(octal[1]!, 8);
  }
  throw new Error(`${file} is not open in this process`);
}

function records(file = path): DecisionRecord[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as DecisionRecord);
}

const errnoError = (code: string) => Object.assign(new Error(`${code}: injected`), { code });

/** File ops that fail on demand: `failWrite` after writing `partial` bytes, `failSync`. */
function faultyOps() {
  const state = { failWrite: null as string | null, partial: 0, failSync: null as string | null, syncs: 0, writes: 0 };
  const ops: FileOps = {
    ...nodeFileOps,
    async write(fd, buffer, offset, length) {
      state.writes++;
      if (state.failWrite) {
        if (state.partial > 0) {
          const n = Math.min(state.partial, length);
          state.partial = 0;
          return nodeFileOps.write(fd, buffer, offset, n);
        }
        throw errnoError(state.failWrite);
      }
      return nodeFileOps.write(fd, buffer, offset, length);
    },
    async fdatasync(fd) {
      state.syncs++;
      if (state.failSync) throw errnoError(state.failSync);
      return nodeFileOps.fdatasync(fd);
    },
  };
  return { ops, state };
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'audit-writer-'));
  path = join(dir, 'decisions.log');
});

afterEach(async () => {
  for (const log of open.splice(0)) await log.close().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
});

describe('durable decision log: group commit', () => {
  it('durability fdatasync: resolves every write only after the fsync covering it, with few fsyncs for many writes', async () => {
    const { ops, state } = faultyOps();
    let syncedThrough = 0;
    const tracking: FileOps = {
      ...ops,
      async fdatasync(fd) {
        await ops.fdatasync(fd);
        syncedThrough = Math.max(syncedThrough, records().at(-1)?.seq ?? 0);
      },
    };
    const log = make({ fileOps: tracking, flushMs: 2, durability: 'fdatasync' });
    const resolvedBeforeSync: number[] = [];
    await Promise.all(
      Array.from({ length: 500 }, (_, i) =>
        log.write(sampleEntry(i)).then(() => {
          if (syncedThrough < i + 1) resolvedBeforeSync.push(i + 1);
        }),
      ),
    );
    expect(resolvedBeforeSync).toEqual([]);
    expect(state.syncs).toBeGreaterThanOrEqual(1);
    expect(state.syncs).toBeLessThan(20);
    expect(log.committedSeq()).toBe(500);
  });

  it('durability o_dsync (the default): the active file is opened O_DSYNC, each write resolves only after the write(2) covering it returned, and no batch calls fdatasync', async () => {
    const { ops, state } = faultyOps();
    let writtenThrough = 0;
    const tracking: FileOps = {
      ...ops,
      async write(fd, buffer, offset, length) {
        const n = await ops.write(fd, buffer, offset, length);
        writtenThrough = Math.max(writtenThrough, records().at(-1)?.seq ?? 0);
        return n;
      },
    };
    const log = make({ fileOps: tracking, flushMs: 2 });
    const resolvedBeforeWrite: number[] = [];
    await Promise.all(
      Array.from({ length: 500 }, (_, i) =>
        log.write(sampleEntry(i)).then(() => {
          if (writtenThrough < i + 1) resolvedBeforeWrite.push(i + 1);
        }),
      ),
    );
    expect(resolvedBeforeWrite).toEqual([]);
    expect(state.writes).toBeGreaterThanOrEqual(1);
    expect(state.writes).toBeLessThan(20);
    expect(state.syncs).toBe(0);
    // The kernel's own view of the open file: O_DSYNC (octal 010000) among its flags.
    const flags = activeFileFlags(path);
    expect(flags & 0o10000).toBe(0o10000);
  });

  it('chains seq and prev from the genesis hash, hash over the canonical record, line = canonical + hash', async () => {
    const log = make();
    for (let i = 0; i < 5; i++) await log.write(sampleEntry(i));
    const lines = readFileSync(path, 'utf8').split('\n').filter(Boolean);
    let prev = GENESIS_HASH;
    lines.forEach((line, i) => {
      const r = JSON.parse(line) as DecisionRecord;
      expect(r.seq).toBe(i + 1);
      expect(r.prev).toBe(prev);
      expect(r.replica).toBe('r1');
      expect(r.v).toBe(RECORD_VERSION);
      expect(recordHash(r as unknown as Record<string, unknown>)).toBe(r.hash);
      // The line without its trailing hash field is exactly the hashed text.
      expect(sha256Hex(line.replace(/,"hash":"[0-9a-f]{64}"\}$/, '}'))).toBe(r.hash);
      prev = r.hash;
    });
  });

  it('without fsync, acknowledges after write(2) and never syncs', async () => {
    const { ops, state } = faultyOps();
    const log = make({ fileOps: ops, fsync: false });
    await Promise.all(Array.from({ length: 50 }, (_, i) => log.write(sampleEntry(i))));
    expect(state.syncs).toBe(0);
    expect(records()).toHaveLength(50);
  });
});

describe('durable decision log: restart, torn tail, lock', () => {
  it('resumes seq and prev from the tail after a restart (sealed at shutdown, rotated at start)', async () => {
    let log = make();
    for (let i = 0; i < 3; i++) await log.write(sampleEntry(i));
    await log.close();
    expect(existsSync(`${path}.digest.json`)).toBe(true);
    log = make();
    await log.write(sampleEntry(3));
    await log.close();
    const names = readdirSync(dir).sort();
    expect(names).toContain('decisions-000000000001-000000000003.log');
    expect(names).toContain('decisions-000000000001-000000000003.log.digest.json');
    const first = records(join(dir, 'decisions-000000000001-000000000003.log'));
    const second = records();
    expect(second[0]!.seq).toBe(4);
    expect(second[0]!.prev).toBe(first.at(-1)!.hash);
    expect((await verifyLogs([dir])).ok).toBe(true);
  });

  it('cuts a torn last line (a write never acknowledged) and continues the chain after a crash', () => {
    // What kill -9 mid-write leaves: three records, then half a line, and the dead writer's lock.
    generateLog(path, 3, { replica: 'r1' });
    appendFileSync(path, '{"v":1,"seq":4,"ts":"2026-');
    writeFileSync(`${path}.lock`, '999999999\n');
    const { logger, lines } = captureLog();
    const log = make({ logger });
    expect(lines.some((l) => l.msg.includes('torn'))).toBe(true);
    return log.write(sampleEntry(3)).then(() => {
      const all = records();
      expect(all.map((r) => r.seq)).toEqual([1, 2, 3, 4]);
      expect(all[3]!.prev).toBe(all[2]!.hash);
    });
  });

  it('a new replica name seals the old name\'s unsealed file and chains on', async () => {
    generateLog(path, 3, { replica: 'old-name' });
    const log = make({ replica: 'new-name' });
    await log.write(sampleEntry(3));
    await log.close();
    const digest = JSON.parse(readFileSync(join(dir, 'decisions-000000000001-000000000003.log.digest.json'), 'utf8')) as Digest;
    expect(digest).toMatchObject({ replica: 'old-name', reason: 'replica', first_seq: 1, last_seq: 3 });
    expect(records()[0]).toMatchObject({ seq: 4, replica: 'new-name' });
    const result = await verifyLogs([dir]);
    expect(result.ok).toBe(true);
    expect(result.findings).toContainEqual(expect.objectContaining({ code: 'replica_changed', seq: 4 }));
  });

  it('refuses to start on a log whose last record was altered', async () => {
    const log = make();
    await log.write(sampleEntry(0));
    await log.close();
    rmSync(`${path}.digest.json`);
    writeFileSync(path, readFileSync(path, 'utf8').replace('"status":200', '"status":201'));
    expect(() => make()).toThrow(expect.objectContaining({ code: DecisionLogCodes.CORRUPT }));
  });

  it('a second writer on the same log is refused while the first one lives', () => {
    make();
    expect(() => createDecisionLog({ path, replica: 'r1' })).toThrow(expect.objectContaining({ code: DecisionLogCodes.LOCKED }));
  });

  it('takes over a stale lock (the previous process died)', () => {
    writeFileSync(`${path}.lock`, '999999999\n');
    expect(() => make()).not.toThrow();
  });

  it('finishes a rotation a crash interrupted: seals the renamed file before going on', async () => {
    // Crash right after the rename of a rotation: a rotated file without digest, no active file.
    generateLog(join(dir, 'decisions-000000000001-000000000004.log'), 4, { replica: 'r1' });
    const log = make();
    expect(existsSync(join(dir, 'decisions-000000000001-000000000004.log.digest.json'))).toBe(true);
    await log.write(sampleEntry(4));
    await log.close();
    expect(records()[0]!.seq).toBe(5);
    const result = await verifyLogs([dir]);
    expect(result.findings.filter((f) => f.severity === 'error')).toEqual([]);
  });
});

describe('durable decision log: rotation and seals', () => {
  it('rotates by size; every file sealed; chain continuous across files; signatures verify', async () => {
    const { privateKey } = generateKeyPairSync('ed25519');
    const log = make({ rotateBytes: 4000, signingKey: privateKey });
    for (let i = 0; i < 40; i++) await log.write(sampleEntry(i));
    await log.close();
    const rotated = readdirSync(dir).filter((n) => /^decisions-\d+-\d+\.log$/.test(n)).sort();
    expect(rotated.length).toBeGreaterThanOrEqual(5);
    let prevDigest = GENESIS_HASH;
    let prevHash = GENESIS_HASH;
    for (const name of [...rotated, 'decisions.log']) {
      const digest = JSON.parse(readFileSync(join(dir, `${name}.digest.json`), 'utf8')) as Digest;
      const recs = records(join(dir, name));
      expect(digest.first_seq).toBe(recs[0]!.seq);
      expect(digest.last_seq).toBe(recs.at(-1)!.seq);
      expect(digest.count).toBe(recs.length);
      expect(digest.first_prev).toBe(prevHash);
      expect(digest.last_hash).toBe(recs.at(-1)!.hash);
      expect(digest.file_sha256).toBe(sha256Hex(readFileSync(join(dir, name))));
      expect(digest.prev_digest).toBe(prevDigest);
      expect(signatureValid(digest as unknown as Record<string, unknown>, createPublicKey(privateKey))).toBe(true);
      prevDigest = digest.hash;
      prevHash = digest.last_hash;
    }
    const result = await verifyLogs([dir], { publicKey: createPublicKey(privateKey), requireSignature: true });
    expect(result.findings.filter((f) => f.severity !== 'note')).toEqual([]);
    expect(result.records).toBe(40);
  });

  it('rotates by time, on the write path and when idle', async () => {
    let now = Date.UTC(2026, 0, 1);
    const log = make({ rotateSeconds: 60, now: () => now });
    await log.write(sampleEntry(0));
    now += 61_000;
    await log.write(sampleEntry(1)); // rotates before writing
    expect(readdirSync(dir)).toContain('decisions-000000000001-000000000001.log');
    now += 61_000;
    // Idle: the housekeeping timer seals the file without a write.
    await new Promise((r) => setTimeout(r, 100));
    expect(readdirSync(dir)).toContain('decisions-000000000002-000000000002.log');
    await log.write(sampleEntry(2));
    await log.close();
    expect((await verifyLogs([dir])).ok).toBe(true);
  });
});

describe('durable decision log: failures', () => {
  it('a failed write rejects, turns unhealthy, cuts the partial batch, and recovers by itself with no seq gap', async () => {
    const { ops, state } = faultyOps();
    const { logger, lines } = captureLog();
    const errors = () => lines.filter((l) => l.msg === 'decision log write failed');
    const log = make({ fileOps: ops, logger });
    await log.write(sampleEntry(0));
    const sizeBefore = statSync(path).size;

    state.failWrite = 'ENOSPC';
    state.partial = 100; // a short write first, then ENOSPC: a torn batch on disk
    const failed = await Promise.allSettled([log.write(sampleEntry(1)), log.write(sampleEntry(2))]);
    expect(failed.map((f) => f.status)).toEqual(['rejected', 'rejected']);
    expect((failed[0] as PromiseRejectedResult).reason).toBeInstanceOf(DecisionLogError);
    expect((failed[0] as PromiseRejectedResult).reason.code).toBe(DecisionLogCodes.WRITE_FAILED);
    expect(errors()).toEqual([expect.objectContaining({ level: 'error', code: DecisionLogCodes.WRITE_FAILED })]);
    expect(log.healthy()).toBe(false);
    expect(statSync(path).size).toBeGreaterThan(sizeBefore); // the torn bytes are there until recovery

    // Still failing: writes reject fast, health stays false.
    await expect(log.write(sampleEntry(3))).rejects.toBeInstanceOf(DecisionLogError);
    expect(log.healthy()).toBe(false);

    state.failWrite = null;
    // The probe (every 20 ms here) notices the disk is back.
    await expect.poll(() => log.healthy(), { timeout: 2000 }).toBe(true);
    expect(statSync(path).size).toBe(sizeBefore);
    await log.write(sampleEntry(4));
    const all = records();
    expect(all.map((r) => r.seq)).toEqual([1, 2]);
    expect(all[1]!.prev).toBe(all[0]!.hash);
    expect(all[1]!.id).toBe(sampleEntry(4).id);
  });

  it('durability fdatasync: an fsync error fails the batch and everything queued behind it', async () => {
    const { ops, state } = faultyOps();
    const log = make({ fileOps: ops, flushMs: 0, durability: 'fdatasync' });
    await log.write(sampleEntry(0));
    state.failSync = 'EIO';
    const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => log.write(sampleEntry(i + 1))));
    expect(results.every((r) => r.status === 'rejected')).toBe(true);
    state.failSync = null;
    await expect.poll(() => log.healthy(), { timeout: 2000 }).toBe(true);
    await log.write(sampleEntry(99));
    expect(records().map((r) => r.seq)).toEqual([1, 2]);
  });

  it('a moved-away active file is a failure; recovery continues in a new file that chains on', async () => {
    const log = make();
    await log.write(sampleEntry(0));
    renameSync(path, join(dir, 'moved.log'));
    await noticed();
    await expect(log.write(sampleEntry(1))).rejects.toMatchObject({ code: DecisionLogCodes.WRITE_FAILED });
    await expect.poll(() => log.healthy(), { timeout: 2000 }).toBe(true);
    await log.write(sampleEntry(2));
    const moved = records(join(dir, 'moved.log'));
    const now = records();
    expect(now[0]!.seq).toBe(2);
    expect(now[0]!.prev).toBe(moved[0]!.hash);
  });

  it('a replaced active file (same path, another inode) is a failure; nothing is written to the impostor', async () => {
    const log = make();
    await log.write(sampleEntry(0));
    renameSync(path, join(dir, 'original.log'));
    writeFileSync(path, '');
    await noticed();
    await expect(log.write(sampleEntry(1))).rejects.toMatchObject({ code: DecisionLogCodes.WRITE_FAILED });
    expect(readFileSync(path, 'utf8')).toBe('');
    expect(records(join(dir, 'original.log')).map((r) => r.seq)).toEqual([1]);
  });

  /** File ops that count path checks (stat), fstats and the directory watch's renames; `watch` replaces the real watch. */
  function countingOps(watch: FileOps['watch'] = nodeFileOps.watch) {
    const counts = { stat: 0, fstat: 0, renamesSeen: 0 };
    const ops: FileOps = {
      ...nodeFileOps,
      stat(p) {
        counts.stat++;
        return nodeFileOps.stat(p);
      },
      async fstat(fd) {
        counts.fstat++;
        return nodeFileOps.fstat(fd);
      },
      watch: (d, onRename, onLost) =>
        watch(
          d,
          (name) => {
            counts.renamesSeen++;
            onRename(name);
          },
          onLost,
        ),
    };
    return { ops, counts };
  }

  it('with the directory watched, steady batches do not stat the path; a rename there makes the next batch check it', async () => {
    const { ops, counts } = countingOps();
    // No probe during the test: only the watch can make a batch check.
    const log = make({ fileOps: ops, probeMs: 60_000 });
    for (let i = 0; i < 5; i++) await log.write(sampleEntry(i));
    expect(counts).toEqual({ stat: 1, fstat: 0, renamesSeen: 0 });

    renameSync(path, join(dir, 'moved.log'));
    await expect.poll(() => counts.renamesSeen).toBeGreaterThan(0);
    await expect(log.write(sampleEntry(5))).rejects.toMatchObject({ code: DecisionLogCodes.WRITE_FAILED });
    expect(counts.stat).toBe(2);
    expect(records(join(dir, 'moved.log')).map((r) => r.seq)).toEqual([1, 2, 3, 4, 5]);
  });

  it('renames of other files in the directory (digests, a cursor, other workers\' logs) do not make a batch check the path', async () => {
    const { ops, counts } = countingOps();
    const log = make({ fileOps: ops, probeMs: 60_000 });
    await log.write(sampleEntry(0));
    writeFileSync(join(dir, 'cursor.tmp'), '{}');
    renameSync(join(dir, 'cursor.tmp'), join(dir, 'cursor.json'));
    await expect.poll(() => counts.renamesSeen).toBeGreaterThan(0);
    await log.write(sampleEntry(1));
    expect(counts.stat).toBe(1);
  });

  it('where the directory cannot be watched, every batch checks the path', async () => {
    const { ops, counts } = countingOps(() => null);
    const log = make({ fileOps: ops, probeMs: 60_000 });
    for (let i = 0; i < 5; i++) await log.write(sampleEntry(i));
    expect(counts).toEqual({ stat: 5, fstat: 0, renamesSeen: 0 });
    renameSync(path, join(dir, 'moved.log'));
    await expect(log.write(sampleEntry(5))).rejects.toMatchObject({ code: DecisionLogCodes.WRITE_FAILED });
  });

  it('a watch that sees nothing (a network filesystem): the probe makes a batch check the path at least once an interval', async () => {
    const { ops, counts } = countingOps(() => ({ close() {} }));
    const log = make({ fileOps: ops, probeMs: 20 });
    await log.write(sampleEntry(0));
    renameSync(path, join(dir, 'moved.log'));
    await noticed();
    await expect(log.write(sampleEntry(1))).rejects.toMatchObject({ code: DecisionLogCodes.WRITE_FAILED });
    expect(counts.renamesSeen).toBe(0);
  });

  it('a watch that fails falls back to a check per batch, and says so', async () => {
    let lose: (err: Error) => void = () => {};
    const { ops, counts } = countingOps((d, onRename, onLost) => {
      lose = onLost;
      return nodeFileOps.watch(d, onRename, onLost);
    });
    const logged = captureLog();
    const log = make({ fileOps: ops, probeMs: 60_000, logger: logged.logger });
    await log.write(sampleEntry(0));
    lose(Object.assign(new Error('watch lost'), { code: 'EACCES' }));
    expect(logged.lines.some((l) => l.msg.includes('directory watch failed'))).toBe(true);
    renameSync(path, join(dir, 'moved.log'));
    await expect(log.write(sampleEntry(1))).rejects.toMatchObject({ code: DecisionLogCodes.WRITE_FAILED });
    expect(counts.stat).toBe(2);
  });

  it('closes every directory watch it opened, including one opened by a recovery during close', async () => {
    const { ops, state } = faultyOps();
    const watches = { opened: 0, closed: 0 };
    const counted: FileOps = {
      ...ops,
      watch(d, onRename, onLost) {
        const watcher = nodeFileOps.watch(d, onRename, onLost);
        if (watcher === null) return null;
        watches.opened++;
        return {
          close() {
            watches.closed++;
            watcher.close();
          },
        };
      },
    };
    const log = make({ fileOps: counted, probeMs: 60_000 });
    await log.write(sampleEntry(0));
    state.failWrite = 'EIO';
    await expect(log.write(sampleEntry(1))).rejects.toMatchObject({ code: DecisionLogCodes.WRITE_FAILED });
    state.failWrite = null;
    await log.close();
    expect(watches.opened).toBe(2);
    expect(watches.closed).toBe(2);
  });

  it('fail_open operations are answered while the log is down and written, in order, once it is back', async () => {
    const { ops, state } = faultyOps();
    const log = make({ fileOps: ops, failOpen: ['read'] });
    await log.write(sampleEntry(1)); // a write
    state.failWrite = 'EIO';
    const read = sampleEntry(3); // i % 3 === 0: a read
    expect(read.operation).toBe('read');
    await expect(log.write(read)).resolves.toBeUndefined();
    await expect(log.write(sampleEntry(4))).rejects.toBeInstanceOf(DecisionLogError);
    expect(log.heldCount()).toBe(1);
    expect(log.healthy()).toBe(false);
    state.failWrite = null;
    await expect.poll(() => records().length, { timeout: 2000 }).toBe(2);
    expect(records()[1]!.id).toBe(read.id);
    expect(log.heldCount()).toBe(0);
  });

  it('a lazy record (a write\'s outcome) rides with the next batch instead of forcing one, and is written within LAZY_FLUSH_MS alone', async () => {
    const { ops, state } = faultyOps();
    const log = make({ fileOps: ops });
    await log.write(sampleEntry(1));
    const writesBefore = state.writes;
    // Alone: not written at once, but within the lazy window.
    let lazyDone = false;
    const lazy = log.write(sampleEntry(2), { lazy: true }).then(() => (lazyDone = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(lazyDone).toBe(false);
    expect(state.writes).toBe(writesBefore);
    await lazy;
    expect(state.writes).toBe(writesBefore + 1);
    // Beside an urgent record: one write carries both, in chain order.
    const outcome = log.write(sampleEntry(3), { lazy: true });
    await log.write(sampleEntry(4));
    await outcome;
    expect(state.writes).toBe(writesBefore + 2);
    expect(records().map((r) => r.seq)).toEqual([1, 2, 3, 4]);
  });

  it('close writes a lazy record still waiting', async () => {
    const log = make();
    const lazy = log.write(sampleEntry(1), { lazy: true });
    await log.close();
    await lazy;
    expect(records().map((r) => r.seq)).toEqual([1]);
  });

  it('rejects writes after close', async () => {
    const log = make();
    await log.close();
    await expect(log.write(sampleEntry(0))).rejects.toMatchObject({ code: DecisionLogCodes.CLOSED });
  });
});
