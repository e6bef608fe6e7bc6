import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, statSync, writeFileSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sealRecord } from '../../src/audit/canonical.js';
import { digestHash, sealDigest, type Digest, type DigestBody } from '../../src/audit/digest.js';
import type { DecisionRecord } from '../../src/audit/record.js';
import { verifyLogs, type VerifyResult } from '../../src/audit/verify.js';
import { createDecisionLog } from '../../src/audit/writer.js';
import { sampleEntry } from '../helpers/audit-records.js';

/*
 * One signed log of 30 records in four files (rotate_bytes 6000):
 *   decisions-000000000001-000000000008.log  (+ digest)   F1
 *   decisions-000000000009-000000000016.log  (+ digest)   F2
 *   decisions-000000000017-000000000024.log  (+ digest)   F3
 *   decisions.log, seq 25–30, sealed at shutdown          ACTIVE
 * Each test copies it, tampers with the copy and checks that verification
 * fails at the right file, line and seq.
 */
let root: string;
let fixture: string;
let otherReplica: string;
let publicKey: KeyObject;
let privateKey: KeyObject;
const F1 = 'decisions-000000000001-000000000008.log';
const F2 = 'decisions-000000000009-000000000016.log';
const F3 = 'decisions-000000000017-000000000024.log';
let n = 0;

async function writeLog(dir: string, replica: string, count: number, key: KeyObject | null): Promise<void> {
  const log = createDecisionLog({ path: join(dir, 'decisions.log'), replica, rotateBytes: 6000, signingKey: key });
  for (let i = 0; i < count; i++) await log.write(sampleEntry(i));
  await log.close();
}

function copy(): string {
  const dir = join(root, `case-${++n}`);
  cpSync(fixture, dir, { recursive: true });
  return dir;
}

function lines(file: string): string[] {
  return readFileSync(file, 'utf8').split('\n').slice(0, -1);
}

function writeLines(file: string, text: string[]): void {
  writeFileSync(file, text.map((l) => `${l}\n`).join(''));
}

function editDigest(file: string, edit: (d: Digest) => void, rehash: boolean): void {
  const digest = JSON.parse(readFileSync(`${file}.digest.json`, 'utf8')) as Digest;
  edit(digest);
  if (rehash) digest.hash = digestHash(digest as unknown as Record<string, unknown>);
  writeFileSync(`${file}.digest.json`, JSON.stringify(digest, null, 2));
}

async function check(dir: string, options: { requireSignature?: boolean; key?: KeyObject | null } = {}): Promise<VerifyResult> {
  return verifyLogs([dir], { publicKey: options.key === undefined ? publicKey : options.key, requireSignature: options.requireSignature ?? false });
}

function expectBroken(result: VerifyResult, where: { file: string; line?: number; seq?: number; code: string }): void {
  expect(result.ok).toBe(false);
  const first = result.firstError!;
  expect({ file: first.file.split('/').pop(), line: first.line, seq: first.seq, code: first.code }).toEqual({
    file: where.file,
    line: where.line,
    seq: where.seq,
    code: where.code,
  });
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'audit-verify-'));
  fixture = join(root, 'fixture');
  otherReplica = join(root, 'other');
  ({ privateKey } = generateKeyPairSync('ed25519'));
  publicKey = createPublicKey(privateKey);
  await writeLog(fixture, 'replica-a', 30, privateKey);
  await writeLog(otherReplica, 'replica-b', 30, privateKey);
  expect(readdirSync(fixture).sort()).toEqual(
    [F1, `${F1}.digest.json`, F2, `${F2}.digest.json`, F3, `${F3}.digest.json`, 'decisions.log', 'decisions.log.digest.json'].sort(),
  );
});

afterAll(() => {
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('audit verify: an intact log', () => {
  it('passes, signatures valid, with and without --require-signature', async () => {
    const result = await check(fixture, { requireSignature: true });
    expect(result.findings.filter((f) => f.severity !== 'note')).toEqual([]);
    expect(result.ok).toBe(true);
    expect(result.records).toBe(30);
    expect(result.files.map((f) => f.signature)).toEqual(['valid', 'valid', 'valid', 'valid']);
  });

  it('files given in any order are checked in chain order', async () => {
    const dir = fixture;
    const result = await verifyLogs([join(dir, 'decisions.log'), join(dir, F3), join(dir, F1), join(dir, F2)], { publicKey });
    expect(result.ok).toBe(true);
  });

  it('without a public key, signatures are "unchecked" and the log still passes', async () => {
    const result = await check(fixture, { key: null });
    expect(result.ok).toBe(true);
    expect(result.files.map((f) => f.signature)).toEqual(['unchecked', 'unchecked', 'unchecked', 'unchecked']);
  });
});

describe('audit verify: record manipulation is located', () => {
  it('modified field', async () => {
    const dir = copy();
    const l = lines(join(dir, F2));
    l[2] = l[2]!.replace('"status":200', '"status":201').replace('"status":403', '"status":200');
    writeLines(join(dir, F2), l);
    expectBroken(await check(dir), { file: F2, line: 3, seq: 11, code: 'hash_mismatch' });
  });

  it('modified field with the record re-hashed (a forger who knows the scheme)', async () => {
    const dir = copy();
    const l = lines(join(dir, F2));
    const record = JSON.parse(l[2]!) as Omit<DecisionRecord, 'hash'> & { hash?: string };
    delete record.hash;
    record.decision = record.decision === 'allow' ? 'block' : 'allow';
    l[2] = sealRecord(record).line;
    writeLines(join(dir, F2), l);
    // The record itself is consistent; the next one no longer chains to it.
    expectBroken(await check(dir), { file: F2, line: 4, seq: 12, code: 'chain_broken' });
  });

  it('deleted line', async () => {
    const dir = copy();
    const l = lines(join(dir, F2));
    l.splice(2, 1);
    writeLines(join(dir, F2), l);
    const result = await check(dir);
    expectBroken(result, { file: F2, line: 3, seq: 12, code: 'seq_gap' });
    expect(result.firstError!.message).toContain('expected seq 11, found 12');
  });

  it('inserted line (a copy of an earlier record)', async () => {
    const dir = copy();
    const l = lines(join(dir, F2));
    l.splice(3, 0, l[1]!);
    writeLines(join(dir, F2), l);
    expectBroken(await check(dir), { file: F2, line: 4, seq: 10, code: 'seq_order' });
  });

  it('reordered lines', async () => {
    const dir = copy();
    const l = lines(join(dir, F2));
    [l[2], l[3]] = [l[3]!, l[2]!];
    writeLines(join(dir, F2), l);
    expectBroken(await check(dir), { file: F2, line: 3, seq: 12, code: 'seq_gap' });
  });

  it('truncated tail of a sealed file: a partial last line', async () => {
    const dir = copy();
    const file = join(dir, F2);
    truncateSync(file, statSync(file).size - 20);
    expectBroken(await check(dir), { file: F2, line: 8, seq: undefined as unknown as number, code: 'torn_tail' });
  });

  it('truncated tail of a sealed file: whole last lines removed', async () => {
    const dir = copy();
    const l = lines(join(dir, F2));
    writeLines(join(dir, F2), l.slice(0, -2));
    const result = await check(dir);
    expectBroken(result, { file: F2, line: 7, seq: 15, code: 'truncated' });
    expect(result.firstError!.message).toContain('2 records removed from the end');
  });

  it('whole last lines removed from the sealed active file', async () => {
    const dir = copy();
    const l = lines(join(dir, 'decisions.log'));
    writeLines(join(dir, 'decisions.log'), l.slice(0, -1));
    expectBroken(await check(dir), { file: 'decisions.log', line: 6, seq: 30, code: 'truncated' });
  });

  it('a torn tail of the unsealed active file (kill -9 mid-write) is a warning, not a failure', async () => {
    const dir = copy();
    unlinkSync(join(dir, 'decisions.log.digest.json'));
    const file = join(dir, 'decisions.log');
    truncateSync(file, statSync(file).size - 20);
    const result = await check(dir);
    expect(result.ok).toBe(true);
    expect(result.findings).toContainEqual(expect.objectContaining({ severity: 'warning', code: 'torn_tail', line: 6 }));
  });

  it('a whole file deleted from the middle', async () => {
    const dir = copy();
    rmSync(join(dir, F2));
    rmSync(join(dir, `${F2}.digest.json`));
    const result = await check(dir);
    expectBroken(result, { file: F3, line: 1, seq: 17, code: 'seq_gap' });
    expect(result.firstError!.message).toContain('8 records missing');
  });
});

describe('audit verify: swapped files', () => {
  it("a rotated file replaced by another replica's (with its digest)", async () => {
    const dir = copy();
    cpSync(join(otherReplica, F2), join(dir, F2));
    cpSync(join(otherReplica, `${F2}.digest.json`), join(dir, `${F2}.digest.json`));
    expectBroken(await check(dir), { file: F2, line: 1, seq: 9, code: 'chain_broken' });
  });

  it("a rotated file replaced by another replica's (log only)", async () => {
    const dir = copy();
    cpSync(join(otherReplica, F2), join(dir, F2));
    expectBroken(await check(dir), { file: F2, line: 1, seq: 9, code: 'chain_broken' });
  });

  it('a rotated file replaced by an older one of the same log', async () => {
    const dir = copy();
    cpSync(join(dir, F1), join(dir, F2));
    cpSync(join(dir, `${F1}.digest.json`), join(dir, `${F2}.digest.json`));
    expectBroken(await check(dir), { file: F2, line: 1, seq: 1, code: 'seq_order' });
  });
});

describe('audit verify: forged digests', () => {
  it('changed count, digest hash left as it was', async () => {
    const dir = copy();
    editDigest(join(dir, F2), (d) => (d.count = 7), false);
    expectBroken(await check(dir), { file: `${F2}.digest.json`, code: 'digest_altered' } as never);
  });

  it('changed count with the digest hash recomputed: the signature fails', async () => {
    const dir = copy();
    editDigest(join(dir, F2), (d) => (d.count = 7), true);
    const result = await check(dir);
    expectBroken(result, { file: `${F2}.digest.json`, code: 'signature_invalid' } as never);
    expect(result.findings).toContainEqual(expect.objectContaining({ code: 'digest_mismatch', message: expect.stringContaining('7 records') }));
  });

  it('changed final hash with the digest hash recomputed, unsigned log: the file content gives it away', async () => {
    const dir = copy();
    editDigest(join(dir, F2), (d) => {
      d.last_hash = 'f'.repeat(64);
      d.signature = null;
    }, true);
    const result = await check(dir);
    expectBroken(result, { file: F2, line: 8, code: 'digest_mismatch' } as never);
  });

  it('signed by another key', async () => {
    const dir = copy();
    const { privateKey: attacker } = generateKeyPairSync('ed25519');
    const digest = JSON.parse(readFileSync(join(dir, `${F2}.digest.json`), 'utf8')) as Digest;
    const { hash: _h, signature: _s, ...body } = digest;
    writeFileSync(join(dir, `${F2}.digest.json`), JSON.stringify(sealDigest(body as DigestBody, attacker)));
    expectBroken(await check(dir), { file: `${F2}.digest.json`, code: 'signature_key' } as never);
  });

  it('a bad signature value', async () => {
    const dir = copy();
    editDigest(join(dir, F2), (d) => (d.signature!.value = Buffer.alloc(64, 7).toString('base64')), false);
    expectBroken(await check(dir), { file: `${F2}.digest.json`, code: 'signature_invalid' } as never);
  });

  it('a digest removed from the middle of the chain', async () => {
    const dir = copy();
    rmSync(join(dir, `${F2}.digest.json`));
    expectBroken(await check(dir), { file: F2, code: 'digest_missing' } as never);
  });

  it('unsigned digests: reported, failing only with --require-signature', async () => {
    const dir = join(root, 'unsigned');
    await writeLog(dir, 'replica-u', 12, null);
    const relaxed = await verifyLogs([dir], { publicKey });
    expect(relaxed.ok).toBe(true);
    expect(relaxed.files.every((f) => f.signature === 'unsigned')).toBe(true);
    const strict = await verifyLogs([dir], { publicKey, requireSignature: true });
    expect(strict.ok).toBe(false);
    expect(strict.firstError!.code).toBe('unsigned');
  });
});
