import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { GENESIS_HASH } from '../../src/audit/canonical.js';
import type { Digest } from '../../src/audit/digest.js';
import type { DecisionRecord } from '../../src/audit/record.js';
import { readAnchor, verifyLogs, type Anchor, type VerifyResult } from '../../src/audit/verify.js';
import { createDecisionLog } from '../../src/audit/writer.js';
import { auditCommand } from '../../src/cli/audit.js';
import { generateLog, sampleEntry } from '../helpers/audit-records.js';

/*
 * Two signed logs of 30 records in four files each (rotate_bytes 6000), as
 * in audit-verify.test.ts: F1 = seq 1–8, F2 = 9–16, F3 = 17–24, the active
 * file 25–30. Retention deletes from the head: F1 first.
 */
let root: string;
let logA: string;
let logB: string;
let privateKey: KeyObject;
let publicKey: KeyObject;
const F1 = 'decisions-000000000001-000000000008.log';
const F2 = 'decisions-000000000009-000000000016.log';
let n = 0;

async function writeLog(dir: string, replica: string): Promise<void> {
  const log = createDecisionLog({ path: join(dir, 'decisions.log'), replica, rotateBytes: 6000, signingKey: privateKey });
  for (let i = 0; i < 30; i++) await log.write(sampleEntry(i));
  await log.close();
}

function lines(file: string): string[] {
  return readFileSync(file, 'utf8').split('\n').slice(0, -1);
}

function lastRecord(file: string): DecisionRecord {
  return JSON.parse(lines(file).at(-1)!) as DecisionRecord;
}

/** A copy of `log` with its first rotated file deleted; its digest is kept aside, as an auditor would. */
function withoutFirstFile(log: string): { dir: string; keptDigest: string } {
  const dir = join(root, `case-${++n}`);
  cpSync(log, dir, { recursive: true });
  const keptDigest = join(root, `case-${n}-anchor.digest.json`);
  cpSync(join(dir, `${F1}.digest.json`), keptDigest);
  rmSync(join(dir, F1));
  rmSync(join(dir, `${F1}.digest.json`));
  return { dir, keptDigest };
}

function expectBroken(result: VerifyResult, where: { file: string; line: number; seq: number; code: string }): void {
  expect(result.ok).toBe(false);
  const first = result.firstError!;
  expect({ file: first.file.split('/').pop(), line: first.line, seq: first.seq, code: first.code }).toEqual(where);
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'audit-verify-anchor-'));
  ({ privateKey } = generateKeyPairSync('ed25519'));
  publicKey = createPublicKey(privateKey);
  logA = join(root, 'a');
  logB = join(root, 'b');
  await writeLog(logA, 'replica-a');
  await writeLog(logB, 'replica-b');
});

afterAll(() => {
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('audit verify: history starts at seq 1', () => {
  it('a whole log is intact, and needs no anchor', async () => {
    const result = await verifyLogs([logA], { publicKey });
    expect(result.findings.filter((f) => f.severity !== 'note')).toEqual([]);
    expect(result.ok).toBe(true);
    expect(result.records).toBe(30);
  });

  it('an anchor does not change a whole log', async () => {
    const result = await verifyLogs([logA], { publicKey, anchors: [readAnchor(lastRecord(join(logA, F1)).hash)] });
    expect(result.ok).toBe(true);
    expect(result.findings.map((f) => f.code)).not.toContain('chain_anchor');
  });

  it('the first records of a single file removed: the missing range is named', async () => {
    const dir = join(root, `case-${++n}`);
    mkdirSync(dir);
    const file = join(dir, 'decisions.log');
    generateLog(file, 20, { replica: 'single' });
    writeFileSync(file, lines(file).slice(5).map((l) => `${l}\n`).join(''));
    const result = await verifyLogs([dir]);
    expectBroken(result, { file: 'decisions.log', line: 1, seq: 6, code: 'missing_head' });
    expect(result.firstError!.message).toBe(
      'history starts at seq 6: records 1..5 are missing (deleted or rotated away); pass --anchor to name where retained history starts',
    );
    // One finding for the cut, not one per record after it.
    expect(result.findings.filter((f) => f.severity === 'error')).toHaveLength(1);
  });

  it('only record 1 removed', async () => {
    const dir = join(root, `case-${++n}`);
    mkdirSync(dir);
    const file = join(dir, 'decisions.log');
    generateLog(file, 5, { replica: 'single' });
    writeFileSync(file, lines(file).slice(1).map((l) => `${l}\n`).join(''));
    const result = await verifyLogs([dir]);
    expectBroken(result, { file: 'decisions.log', line: 1, seq: 2, code: 'missing_head' });
    expect(result.firstError!.message).toContain('history starts at seq 2: record 1 is missing');
  });

  it('the first file of a rotated set removed: the rest chains, and is still broken', async () => {
    const { dir } = withoutFirstFile(logA);
    const result = await verifyLogs([dir], { publicKey, requireSignature: true });
    expectBroken(result, { file: F2, line: 1, seq: 9, code: 'missing_head' });
    expect(result.firstError!.message).toContain('history starts at seq 9: records 1..8 are missing (deleted or rotated away)');
    expect(result.findings.filter((f) => f.severity === 'error')).toHaveLength(1);
  });

  it('records cut from the head of a sealed file: the missing head comes first', async () => {
    const dir = join(root, `case-${++n}`);
    cpSync(logA, dir, { recursive: true });
    writeFileSync(join(dir, F1), lines(join(dir, F1)).slice(3).map((l) => `${l}\n`).join(''));
    const result = await verifyLogs([dir], { publicKey });
    expectBroken(result, { file: F1, line: 1, seq: 4, code: 'missing_head' });
    expect(result.findings.map((f) => f.code)).toContain('digest_mismatch');
  });

  it('seq 1 chained to something other than the genesis hash stays a broken chain', async () => {
    const dir = join(root, `case-${++n}`);
    mkdirSync(dir);
    generateLog(join(dir, 'decisions.log'), 3, { prev: 'e'.repeat(64) });
    expectBroken(await verifyLogs([dir], { anchors: [readAnchor('e'.repeat(64))] }), { file: 'decisions.log', line: 1, seq: 1, code: 'chain_broken' });
  });
});

describe('audit verify --anchor', () => {
  it('anchored by the hash of the last deleted record: intact, and says where history starts', async () => {
    const last = lastRecord(join(logA, F1));
    const { dir } = withoutFirstFile(logA);
    const result = await verifyLogs([dir], { publicKey, requireSignature: true, anchors: [readAnchor(last.hash.toUpperCase())] });
    expect(result.findings.filter((f) => f.severity !== 'note')).toEqual([]);
    expect(result.ok).toBe(true);
    expect(result.records).toBe(22);
    expect(result.findings).toContainEqual({
      severity: 'note',
      code: 'chain_anchor',
      file: join(dir, F2),
      line: 1,
      seq: 9,
      message: `history starts at seq 9, anchored by ${last.hash}`,
    });
  });

  it("anchored by the deleted file's digest: intact", async () => {
    const { dir, keptDigest } = withoutFirstFile(logA);
    const anchor = readAnchor(keptDigest, publicKey);
    expect(anchor).toEqual({ hash: lastRecord(join(logA, F1)).hash, seq: 9, source: keptDigest });
    const result = await verifyLogs([dir], { publicKey, anchors: [anchor] });
    expect(result.ok).toBe(true);
    expect(result.findings).toContainEqual(expect.objectContaining({ code: 'chain_anchor', message: `history starts at seq 9, anchored by ${keptDigest}` }));
  });

  it('a wrong anchor is an error: the hash of another record of the deleted file', async () => {
    const { dir } = withoutFirstFile(logA);
    const earlier = JSON.parse(lines(join(logA, F1))[3]!) as DecisionRecord;
    const result = await verifyLogs([dir], { publicKey, anchors: [readAnchor(earlier.hash)] });
    expectBroken(result, { file: F2, line: 1, seq: 9, code: 'missing_head' });
    expect(result.firstError!.message).toMatch(/^history starts at seq 9 \(prev [0-9a-f]{12}…\), which no --anchor names: records 1\.\.8 are missing/);
  });

  it('a digest that seals the right record at another seq does not vouch', async () => {
    const { dir } = withoutFirstFile(logA);
    const digest = JSON.parse(readFileSync(join(logA, `${F1}.digest.json`), 'utf8')) as Digest;
    const shifted: Anchor = { hash: digest.last_hash, seq: digest.last_seq + 2, source: 'shifted.digest.json' };
    const result = await verifyLogs([dir], { anchors: [shifted] });
    expectBroken(result, { file: F2, line: 1, seq: 9, code: 'missing_head' });
    expect(result.firstError!.message).toBe('history starts at seq 9, but the anchor shifted.digest.json ends at seq 9: expected seq 10 after it');
  });

  it("another log's anchor does not vouch", async () => {
    const { dir } = withoutFirstFile(logA);
    const { keptDigest: otherDigest } = withoutFirstFile(logB);
    const result = await verifyLogs([dir], { publicKey, anchors: [readAnchor(otherDigest), readAnchor(lastRecord(join(logB, F1)).hash)] });
    expectBroken(result, { file: F2, line: 1, seq: 9, code: 'missing_head' });
    expect(result.findings.map((f) => f.code)).not.toContain('chain_anchor');
  });

  it('repeated anchors: each log is vouched for by the one naming its first prev', async () => {
    const a = withoutFirstFile(logA);
    const b = withoutFirstFile(logB);
    const both = await verifyLogs([a.dir, b.dir], { publicKey, anchors: [readAnchor(b.keptDigest), readAnchor(a.keptDigest)] });
    expect(both.ok).toBe(true);
    expect(both.findings.filter((f) => f.code === 'chain_anchor').map((f) => [f.file, f.message])).toEqual([
      [join(a.dir, F2), `history starts at seq 9, anchored by ${a.keptDigest}`],
      [join(b.dir, F2), `history starts at seq 9, anchored by ${b.keptDigest}`],
    ]);
    // One anchor leaves the other log unaccounted for.
    const one = await verifyLogs([a.dir, b.dir], { publicKey, anchors: [readAnchor(a.keptDigest)] });
    expect(one.findings.filter((f) => f.severity === 'error').map((f) => [f.file, f.code])).toEqual([[join(b.dir, F2), 'missing_head']]);
  });

  it('refuses anchors that cannot be trusted or do not parse', () => {
    const { keptDigest } = withoutFirstFile(logA);
    const edited = join(root, 'edited.digest.json');
    const digest = JSON.parse(readFileSync(keptDigest, 'utf8')) as Digest;
    writeFileSync(edited, JSON.stringify({ ...digest, last_seq: digest.last_seq + 1 }));
    expect(() => readAnchor(edited)).toThrow('the digest does not match its own hash: it was edited');
    const { privateKey: other } = generateKeyPairSync('ed25519');
    expect(() => readAnchor(keptDigest, createPublicKey(other))).toThrow('bad signature');
    expect(() => readAnchor(GENESIS_HASH)).toThrow('the genesis hash anchors nothing');
    expect(() => readAnchor(join(logA, F2))).toThrow('neither a record hash (64 hex digits) nor a readable digest file');
    expect(() => readAnchor(join(root, 'absent.digest.json'))).toThrow('ENOENT');
    writeFileSync(join(root, 'not-a-digest.json'), '{"last_hash":"x"}');
    expect(() => readAnchor(join(root, 'not-a-digest.json'))).toThrow('not a decision log digest');
  });
});

describe('audit verify --anchor (command line)', () => {
  let out: string[];
  afterEach(() => vi.restoreAllMocks());

  function capture(): void {
    out = [];
    vi.spyOn(console, 'log').mockImplementation((text: string) => void out.push(text));
    vi.spyOn(console, 'error').mockImplementation((text: string) => void out.push(text));
  }

  it('reports the missing head, and accepts an anchored log (--anchor repeats)', async () => {
    const { dir, keptDigest } = withoutFirstFile(logA);
    const last = lastRecord(join(logA, F1)).hash;
    capture();
    expect(await auditCommand(['verify', dir])).toBe(1);
    expect(out).toContain(`BROKEN: first broken record at ${join(dir, F2)}:1 (seq 9): history starts at seq 9: records 1..8 are missing (deleted or rotated away); pass --anchor to name where retained history starts`);

    capture();
    expect(await auditCommand(['verify', dir, '--anchor', 'f'.repeat(64), '--anchor', keptDigest])).toBe(0);
    expect(out).toContain(`NOTE ${join(dir, F2)}:1 (seq 9): history starts at seq 9, anchored by ${keptDigest} [chain_anchor]`);
    expect(out.at(-1)).toMatch(/^INTACT: 22 records in 3 files/);

    capture();
    expect(await auditCommand(['verify', dir, '--anchor', last, '--format', 'json'])).toBe(0);
    const json = JSON.parse(out.join('\n')) as VerifyResult;
    expect(json.findings).toContainEqual(expect.objectContaining({ code: 'chain_anchor', seq: 9 }));
  });

  it('audit report takes the same anchors: a cut log reports BROKEN without one, INTACT with it', async () => {
    const { dir, keptDigest } = withoutFirstFile(logA);
    const window = ['--since', '2000-01-01', '--until', '2100-01-01', '--format', 'json'];
    // report writes its document to stdout in one piece.
    const written = () => {
      const chunks: string[] = [];
      vi.spyOn(process.stdout, 'write').mockImplementation((text: string | Uint8Array) => chunks.push(String(text)) > 0);
      return () => JSON.parse(chunks.join('')) as { verification: { ok: boolean } };
    };
    let report = written();
    expect(await auditCommand(['report', dir, ...window])).toBe(0);
    expect(report().verification.ok).toBe(false);
    vi.restoreAllMocks();
    report = written();
    expect(await auditCommand(['report', dir, ...window, '--anchor', keptDigest])).toBe(0);
    expect(report().verification.ok).toBe(true);
  });

  it('an anchor that is neither a hash nor a digest is a usage error', async () => {
    capture();
    expect(await auditCommand(['verify', logA, '--anchor', join(root, 'absent.digest.json')])).toBe(2);
    expect(out[0]).toMatch(/^--anchor .*absent\.digest\.json: neither a record hash/);
  });
});
