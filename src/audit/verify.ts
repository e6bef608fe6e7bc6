import { createHash, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { GENESIS_HASH, lineMatchesHash } from './canonical.js';
import { expandLogArgs, orderLogFiles, type CatalogFile } from './catalog.js';
import { DIGEST_TYPE, digestHash, keyId, signatureValid, type Digest } from './digest.js';
import { describeError } from './errors.js';
import { digestPath } from './files.js';
import { readLines } from './lines.js';
import { plural } from '../text.js';
import type { DecisionRecord } from './record.js';

export type Severity = 'error' | 'warning' | 'note';

/** One thing verification found, located as precisely as it can be. */
export interface Finding {
  severity: Severity;
  /** Stable: hash_mismatch, seq_gap, seq_order, chain_broken, missing_head, torn_tail, digest_*, … */
  code: string;
  file: string;
  line?: number;
  seq?: number;
  message: string;
}

export interface FileSummary {
  file: string;
  replica: string | null;
  first_seq: number | null;
  last_seq: number | null;
  records: number;
  sealed: boolean;
  /** valid | invalid | unsigned | unchecked (signed, no public key given) | null (unsealed). */
  signature: 'valid' | 'invalid' | 'unsigned' | 'unchecked' | null;
}

export interface VerifyResult {
  ok: boolean;
  records: number;
  files: FileSummary[];
  findings: Finding[];
  /** The first error in chain order: the first broken record. */
  firstError: Finding | null;
}

export interface VerifyOptions {
  publicKey?: KeyObject | null;
  requireSignature?: boolean;
  /** Each record that parsed, in chain order (report aggregates over the same pass). */
  onRecord?: (record: DecisionRecord, file: string) => void;
  /** Stop collecting after this many findings (the first is what matters). Default 1000. */
  maxFindings?: number;
  /** Where retained history may start (records before it deleted or rotated away on purpose). */
  anchors?: readonly Anchor[];
}

/**
 * The auditor's word for where retained history starts: the hash of the last
 * record before it, so the first retained record's `prev` must equal it. A
 * digest also knows that record's seq.
 */
export interface Anchor {
  hash: string;
  /** The seq the first retained record must have; null when only the hash is known. */
  seq: number | null;
  /** As the auditor named it, for messages. */
  source: string;
}

interface ChainState {
  /** Next seq expected, null before the first record of a log. */
  expectedSeq: number | null;
  prevHash: string | null;
  replica: string | null;
  /** Previous file's digest hash, undefined when the previous file was unsealed, null before the first file. */
  prevDigest: string | null | undefined;
  prevFile: string | null;
  /** Forwarded writes' decisions (status null) waiting for their outcome record: id → seq. */
  awaiting: Map<string, number>;
  /** The log starts after seq 1: outcomes of decisions before its start are expected. */
  cutHead: boolean;
}

/**
 * Verify log files: every record's hash (over its canonical form), seq
 * continuity and `prev` links within and across files (each log's files in
 * chain order), each sealed file against its digest (first/last seq, count,
 * first prev, last hash, file SHA-256 and size, the digest's own hash, the
 * digest chain, the signature). Each log must start at seq 1 from the genesis
 * hash, or where an anchor says its retained history starts: a log cut at the
 * head is otherwise a chain intact from its first record on, which proves
 * nothing about what came before. After a break the checker resynchronises on
 * the record found, so one tampered line is one finding, not thousands.
 *
 * An unsealed last file is the active file of a live or killed writer: a
 * partial last line there is a torn write that was never acknowledged (a
 * warning). Anywhere else it is an error.
 */
export async function verifyLogs(args: readonly string[], options: VerifyOptions = {}): Promise<VerifyResult> {
  const maxFindings = options.maxFindings ?? 1000;
  const findings: Finding[] = [];
  const files: FileSummary[] = [];
  let records = 0;
  const report = (f: Finding) => {
    if (findings.length < maxFindings) findings.push(f);
  };

  const { files: paths, missing } = expandLogArgs(args);
  for (const m of missing) report({ severity: 'error', code: 'file_missing', file: m, message: 'no such file or directory' });

  for (const group of orderLogFiles(paths)) {
    const state: ChainState = { expectedSeq: null, prevHash: null, replica: null, prevDigest: null, prevFile: null, awaiting: new Map(), cutHead: false };
    for (let i = 0; i < group.length; i++) {
      const summary = await verifyFile(group[i]!, i === group.length - 1, state, options, report);
      records += summary.records;
      files.push(summary);
    }
    if (state.awaiting.size > 0) {
      const n = state.awaiting.size;
      const [first] = state.awaiting.values();
      report({
        severity: 'warning',
        code: 'missing_outcome',
        file: group.at(-1)!.path,
        seq: first!,
        message: `${plural(n, 'forwarded write has', 'forwarded writes have')} a durable decision but no outcome record (the first at seq ${first}): writes in flight when the writer stopped`,
      });
    }
  }
  const firstError = findings.find((f) => f.severity === 'error') ?? null;
  return { ok: firstError === null, records, files, findings, firstError };
}

const RECORD_HASH = /^[0-9a-f]{64}$/;

/**
 * An anchor as given on the command line: a record hash (64 hex digits), or a
 * digest file whose last record is the one before retained history. A digest
 * must match its own hash, and its signature when a public key is given: a
 * forged anchor must not vouch for a cut log.
 */
export function readAnchor(arg: string, publicKey: KeyObject | null = null): Anchor {
  if (RECORD_HASH.test(arg.toLowerCase())) {
    const hash = arg.toLowerCase();
    if (hash === GENESIS_HASH) throw new Error(`--anchor ${arg}: the genesis hash anchors nothing (a log that starts at seq 1 needs no anchor)`);
    return { hash, seq: null, source: hash };
  }
  let digest: Partial<Digest> | null;
  try {
    digest = JSON.parse(readFileSync(arg, 'utf8')) as Partial<Digest> | null;
  } catch (err) {
    throw new Error(`--anchor ${arg}: neither a record hash (64 hex digits) nor a readable digest file (${describeError(err)})`, { cause: err });
  }
  if (
    typeof digest !== 'object' ||
    digest === null ||
    digest.type !== DIGEST_TYPE ||
    typeof digest.last_hash !== 'string' ||
    !RECORD_HASH.test(digest.last_hash) ||
    !Number.isSafeInteger(digest.last_seq)
  ) {
    throw new Error(`--anchor ${arg}: not a decision log digest (expected ${DIGEST_TYPE} with last_seq and last_hash)`);
  }
  const body = digest as Record<string, unknown>;
  if (digestHash(body) !== digest.hash) throw new Error(`--anchor ${arg}: the digest does not match its own hash: it was edited`);
  if (publicKey && digest.signature && !signatureValid(body, publicKey)) throw new Error(`--anchor ${arg}: bad signature: the digest was forged or altered`);
  return { hash: digest.last_hash, seq: digest.last_seq! + 1, source: arg };
}

/**
 * A log whose first record is past seq 1 lost its head, unless an anchor
 * vouches for it: one naming the record's `prev` (and, from a digest, the
 * seq right after the digest's last).
 */
function checkHead(seq: number, prev: string, where: { file: string; line: number; seq: number }, anchors: readonly Anchor[], report: (f: Finding) => void): void {
  const naming = anchors.filter((a) => a.hash === prev);
  const vouching = naming.find((a) => a.seq === null || a.seq === seq);
  if (vouching) {
    report({ severity: 'note', code: 'chain_anchor', ...where, message: `history starts at seq ${seq}, anchored by ${vouching.source}` });
    return;
  }
  const missing = seq === 2 ? 'record 1 is missing' : `records 1..${seq - 1} are missing`;
  const other = naming[0];
  let message: string;
  if (other !== undefined && other.seq !== null) {
    message = `history starts at seq ${seq}, but the anchor ${other.source} ends at seq ${other.seq - 1}: expected seq ${other.seq} after it`;
  } else if (anchors.length > 0) {
    message = `history starts at seq ${seq} (prev ${prev.slice(0, 12)}…), which no --anchor names: ${missing} (deleted or rotated away), or the anchor is another log's`;
  } else {
    message = `history starts at seq ${seq}: ${missing} (deleted or rotated away); pass --anchor to name where retained history starts`;
  }
  report({ severity: 'error', code: 'missing_head', ...where, message });
}

/**
 * Record v2: a forwarded write's decision (status null) is followed, later in
 * its chain, by exactly one outcome naming its id. An outcome with no such
 * decision before it (or a second one) is an error, unless the log starts
 * after seq 1, where the decision may be in the history cut away.
 */
function pairOutcome(record: Record<string, unknown>, where: { file: string; line: number; seq: number }, state: ChainState, report: (f: Finding) => void): void {
  const id = typeof record.id === 'string' ? record.id : null;
  if (id === null) return;
  if (record.kind === 'outcome') {
    if (state.awaiting.delete(id) || state.cutHead) return;
    report({ severity: 'error', code: 'orphan_outcome', ...where, message: `outcome for decision ${id}, which no forwarded write's decision before it in this log is waiting for (inserted, duplicated, or its decision removed)` });
  } else if (record.kind === undefined && record.status === null) {
    state.awaiting.set(id, where.seq);
  }
}

function readDigestFile(file: string): Digest | 'invalid' | null {
  const path = digestPath(file);
  if (!existsSync(path)) return null;
  try {
    const parsed = JSON.parse(readFileSync(path, 'utf8')) as Digest;
    return typeof parsed === 'object' && parsed !== null ? parsed : 'invalid';
  } catch {
    return 'invalid';
  }
}

async function verifyFile(
  entry: CatalogFile,
  isLast: boolean,
  state: ChainState,
  options: VerifyOptions,
  report: (f: Finding) => void,
): Promise<FileSummary> {
  const file = entry.path;
  const digest = readDigestFile(file);
  const sealed = digest !== null;
  const sha = createHash('sha256');
  let bytes = 0;
  let count = 0;
  let firstSeq: number | null = null;
  let firstPrev: string | null = null;
  let lastSeq: number | null = null;
  let lastHash: string | null = null;
  let lastLine = 0;
  let fileReplica: string | null = null;
  let tornLine: number | null = null;

  for await (const line of readLines(file, {
    onChunk: (chunk) => {
      sha.update(chunk);
      bytes += chunk.length;
    },
  })) {
    lastLine = line.number;
    const at = { file, line: line.number };
    if (!line.terminated) {
      tornLine = line.number;
      if (!sealed && isLast) {
        report({ severity: 'warning', code: 'torn_tail', ...at, message: `partial last line (${plural(Buffer.byteLength(line.text), 'byte')}, no newline): a write cut short, never acknowledged` });
      } else {
        report({ severity: 'error', code: 'torn_tail', ...at, message: `partial last line (${plural(Buffer.byteLength(line.text), 'byte')}, no newline): the file was truncated` });
      }
      break;
    }
    let record: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(line.text);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
      record = parsed as Record<string, unknown>;
    } catch {
      report({ severity: 'error', code: 'not_a_record', ...at, message: line.text === '' ? 'blank line' : 'line is not a JSON object' });
      continue;
    }
    const seq = record.seq;
    const hash = record.hash;
    const prev = record.prev;
    if (typeof seq !== 'number' || typeof hash !== 'string' || typeof prev !== 'string') {
      report({ severity: 'error', code: 'not_a_record', ...at, message: 'record lacks seq, prev or hash' });
      continue;
    }
    count++;
    const where = { ...at, seq };
    const replica = typeof record.replica === 'string' ? record.replica : null;

    // Before this record's own checks: records missing before it come first in chain order.
    if (state.expectedSeq === null && seq > 1) {
      state.cutHead = true;
      checkHead(seq, prev, where, options.anchors ?? [], report);
    }
    pairOutcome(record, where, state, report);

    if (!lineMatchesHash(line.text, record, hash)) {
      report({ severity: 'error', code: 'hash_mismatch', ...where, message: `record seq ${seq} does not match its hash: its content was modified` });
    } else if (state.expectedSeq !== null && seq > state.expectedSeq) {
      const n = seq - state.expectedSeq;
      const where2 = count === 1 && state.prevFile ? `after ${state.prevFile}` : 'here';
      report({
        severity: 'error',
        code: 'seq_gap',
        ...where,
        message: `expected seq ${state.expectedSeq}, found ${seq}: ${plural(n, 'record')} missing ${where2} (deleted, or moved out of order)`,
      });
    } else if (state.expectedSeq !== null && seq < state.expectedSeq) {
      report({
        severity: 'error',
        code: 'seq_order',
        ...where,
        message: `seq ${seq} where ${state.expectedSeq} was expected: a record inserted, duplicated or out of order${count === 1 && state.prevFile ? ` (this file overlaps ${state.prevFile})` : ''}`,
      });
    } else if (state.prevHash !== null && prev !== state.prevHash) {
      report({
        severity: 'error',
        code: 'chain_broken',
        ...where,
        message:
          count === 1 && state.prevFile
            ? `first record does not chain to the last record of ${state.prevFile} (prev ${prev.slice(0, 12)}…, expected ${state.prevHash.slice(0, 12)}…)`
            : `prev does not match the hash of the record before it (seq ${seq - 1}): that record was replaced or altered`,
      });
    } else if (state.expectedSeq === null && seq === 1 && prev !== GENESIS_HASH) {
      report({ severity: 'error', code: 'chain_broken', ...where, message: 'seq 1 must chain to the genesis hash (64 zeros)' });
    } else if (replica !== null && fileReplica !== null && replica !== fileReplica) {
      report({ severity: 'error', code: 'replica_mismatch', ...where, message: `record of replica "${replica}" in a file of replica "${fileReplica}"` });
    }

    if (count === 1) {
      firstSeq = seq;
      firstPrev = prev;
      if (state.replica !== null && replica !== null && replica !== state.replica) {
        report({ severity: 'note', code: 'replica_changed', ...where, message: `replica changes from "${state.replica}" to "${replica}" at this file` });
      }
    }
    fileReplica ??= replica;
    state.expectedSeq = seq + 1;
    state.prevHash = hash;
    state.replica = replica ?? state.replica;
    lastSeq = seq;
    lastHash = hash;
    options.onRecord?.(record as unknown as DecisionRecord, file);
  }

  if (count === 0 && tornLine === null) {
    report({ severity: isLast && !sealed ? 'note' : 'warning', code: 'empty', file, message: 'no records' });
  }
  let signature: FileSummary['signature'] = null;
  if (digest === 'invalid') {
    report({ severity: 'error', code: 'digest_invalid', file: digestPath(file), message: 'digest is not valid JSON' });
    state.prevDigest = undefined;
  } else if (digest !== null) {
    signature = checkDigest(digest, file, options, report, {
      count,
      firstSeq,
      firstPrev,
      lastSeq,
      lastHash,
      lastLine,
      replica: fileReplica,
      sha256: sha.digest('hex'),
      bytes,
    });
    if (state.prevDigest !== null && state.prevDigest !== undefined && digest.prev_digest !== state.prevDigest) {
      report({
        severity: 'error',
        code: 'digest_chain',
        file: digestPath(file),
        message: `prev_digest does not match the digest of ${state.prevFile}: a sealed file or its digest was replaced`,
      });
    } else if (state.prevDigest === undefined && state.prevFile !== null) {
      report({ severity: 'error', code: 'digest_missing', file: state.prevFile, message: `not sealed, yet the file after it (${file}) is: its digest was removed` });
    }
    state.prevDigest = typeof digest.hash === 'string' ? digest.hash : undefined;
  } else {
    if (!isLast) report({ severity: 'warning', code: 'unsealed', file, message: 'not sealed (no digest) but not the last file of its log' });
    else report({ severity: 'note', code: 'unsealed', file, message: 'not sealed: the active file (records after the last seal are only chained, not sealed)' });
    state.prevDigest = undefined;
  }
  // After the digest: when sealed, the digest says more precisely what is missing.
  if (entry.named && firstSeq !== null && (entry.named.first !== firstSeq || entry.named.last !== lastSeq)) {
    report({
      severity: 'error',
      code: 'name_mismatch',
      file,
      line: 1,
      seq: firstSeq,
      message: `file name says seq ${entry.named.first}–${entry.named.last}, records are ${firstSeq}–${lastSeq ?? '?'}: the file was replaced or renamed`,
    });
  }

  state.prevFile = file;
  return { file, replica: fileReplica, first_seq: firstSeq, last_seq: lastSeq, records: count, sealed, signature };
}

interface Observed {
  count: number;
  firstSeq: number | null;
  firstPrev: string | null;
  lastSeq: number | null;
  lastHash: string | null;
  lastLine: number;
  replica: string | null;
  sha256: string;
  bytes: number;
}

function checkDigest(
  digest: Digest,
  file: string,
  options: VerifyOptions,
  report: (f: Finding) => void,
  seen: Observed,
): FileSummary['signature'] {
  const dfile = digestPath(file);
  const error = (code: string, message: string, extra: Partial<Finding> = {}) => report({ severity: 'error', code, file, message, ...extra });

  if (typeof digest.hash !== 'string' || digestHash(digest as unknown as Record<string, unknown>) !== digest.hash) {
    report({ severity: 'error', code: 'digest_altered', file: dfile, message: 'the digest does not match its own hash: it was edited' });
  }
  let signature: FileSummary['signature'];
  if (digest.signature) {
    if (options.publicKey) {
      if (digest.signature.key_id !== keyId(options.publicKey)) {
        signature = 'invalid';
        report({ severity: 'error', code: 'signature_key', file: dfile, message: `signed by another key (key_id ${digest.signature.key_id}, expected ${keyId(options.publicKey)})` });
      } else if (signatureValid(digest as unknown as Record<string, unknown>, options.publicKey)) {
        signature = 'valid';
      } else {
        signature = 'invalid';
        report({ severity: 'error', code: 'signature_invalid', file: dfile, message: 'bad signature: the digest was forged or altered' });
      }
    } else {
      signature = 'unchecked';
      if (options.requireSignature) report({ severity: 'error', code: 'signature_unchecked', file: dfile, message: 'signed, but no --public-key to check it with' });
    }
  } else {
    signature = 'unsigned';
    report({ severity: options.requireSignature ? 'error' : 'note', code: 'unsigned', file: dfile, message: 'digest is unsigned' });
  }

  const after = { line: seen.lastLine + 1, ...(seen.lastSeq !== null ? { seq: seen.lastSeq + 1 } : {}) };
  if (seen.lastSeq !== null && digest.last_seq > seen.lastSeq) {
    const n = digest.last_seq - seen.lastSeq;
    error('truncated', `file ends at seq ${seen.lastSeq} (line ${seen.lastLine}) but its digest seals up to seq ${digest.last_seq}: ${plural(n, 'record')} removed from the end`, after);
  } else if (digest.last_seq !== seen.lastSeq) {
    error('digest_mismatch', `digest says last seq ${digest.last_seq}, ${seen.lastSeq === null ? 'the file holds no records' : `the file ends at seq ${seen.lastSeq}`}`, after);
  }
  if (digest.first_seq !== seen.firstSeq) error('digest_mismatch', `digest says first seq ${digest.first_seq}, ${seen.firstSeq === null ? 'the file holds no records' : `the file starts at ${seen.firstSeq}`}`, { line: 1 });
  if (digest.count !== seen.count) error('digest_mismatch', `digest says ${plural(digest.count, 'record')}, the file holds ${seen.count}`);
  if (seen.firstPrev !== null && digest.first_prev !== seen.firstPrev) error('digest_mismatch', 'digest first_prev does not match the first record', { line: 1 });
  if (seen.lastHash !== null && digest.last_hash !== seen.lastHash) error('digest_mismatch', 'digest last_hash does not match the last record', { line: seen.lastLine });
  if (seen.replica !== null && digest.replica !== seen.replica) error('digest_mismatch', `digest is for replica "${digest.replica}", the file holds "${seen.replica}"`);
  if (digest.file_bytes !== seen.bytes || digest.file_sha256 !== seen.sha256) {
    error('digest_mismatch', `file content differs from what was sealed (${plural(seen.bytes, 'byte')}, sealed ${digest.file_bytes}; SHA-256 mismatch)`);
  }
  return signature;
}
