import { createHash } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import type { DecisionEntry } from '../../src/audit/record.js';
import { GENESIS_HASH, sealRecord } from '../../src/audit/canonical.js';

/** A plausible decision entry (what the handler hands the sink), varied by `i`. */
export function sampleEntry(i: number, overrides: Partial<DecisionEntry> = {}): DecisionEntry {
  const eu = i % 5 === 0;
  return {
    ts: new Date(Date.UTC(2026, 0, 1) + i * 1000).toISOString(),
    id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
    policy: 'a'.repeat(64),
    upstream: eu ? 'demo-eu' : 'demo-us',
    method: i % 3 === 0 ? 'GET' : 'PUT',
    path: `/bucket/object-${i}.txt`,
    bucket: 'bucket',
    operation: i % 3 === 0 ? 'read' : 'write',
    target: { host: '127.0.0.1:9000', address: null },
    location: {
      jurisdictions: [eu ? 'IE' : 'US'],
      region: eu ? 'eu-west-1' : 'us-east-1',
      signals: [{ source: 'declared', value: eu ? 'eu-west-1' : 'us-east-1', jurisdiction: eu ? 'IE' : 'US', region: eu ? 'eu-west-1' : 'us-east-1' }],
    },
    rule: 'user-data-writes',
    mode: 'enforce',
    decision: eu && i % 3 !== 0 ? 'block' : 'allow',
    effective: eu && i % 3 !== 0 ? 'refused' : 'forwarded',
    reason: eu ? (i % 3 === 0 ? 'read_allowed' : 'jurisdiction_not_allowed') : i % 3 === 0 ? 'read_allowed' : 'jurisdiction_allowed',
    status: eu && i % 3 !== 0 ? 403 : 200,
    bytes_in: 5,
    bytes_out: 3,
    duration_ms: 0.25,
    client: '127.0.0.1',
    ...overrides,
  };
}

/**
 * Write a chained log of `count` records straight to `file` (no fsync, big
 * buffered writes): the fast way to make the multi-GB-style inputs the
 * query/report tests need. `entry(i)` builds record i; seq starts at `firstSeq`.
 */
export function generateLog(
  file: string,
  count: number,
  options: { replica?: string; firstSeq?: number; prev?: string; entry?: (i: number) => DecisionEntry } = {},
): { lastHash: string; lastSeq: number; bytes: number } {
  const replica = options.replica ?? 'gen';
  const build = options.entry ?? sampleEntry;
  let prev = options.prev ?? GENESIS_HASH;
  let seq = (options.firstSeq ?? 1) - 1;
  let bytes = 0;
  const fd = openSync(file, 'w');
  try {
    let chunk: string[] = [];
    let size = 0;
    for (let i = 0; i < count; i++) {
      seq++;
      const { line, hash } = sealRecord({ ...build(seq), v: 1, seq, replica, prev });
      prev = hash;
      chunk.push(line);
      size += line.length + 1;
      if (size >= 4 * 1024 * 1024) {
        bytes += writeSync(fd, `${chunk.join('\n')}\n`);
        chunk = [];
        size = 0;
      }
    }
    if (chunk.length > 0) bytes += writeSync(fd, `${chunk.join('\n')}\n`);
  } finally {
    closeSync(fd);
  }
  return { lastHash: prev, lastSeq: seq, bytes };
}

/**
 * The record of `generateLog`'s shape written straight as canonical JSON
 * (keys in sorted order by construction) and hashed: several times faster
 * than building and sorting objects, for million-record fixtures. `audit
 * verify` re-derives every hash from the parsed record, so a template that
 * drifted from the canonical form would fail the tests that use it.
 */
export function generateLogFast(file: string, count: number, options: { replica?: string; start?: number } = {}): { lastHash: string; bytes: number } {
  const replica = JSON.stringify(options.replica ?? 'gen');
  const start = options.start ?? Date.UTC(2026, 0, 1);
  const policies = ['a'.repeat(64), 'b'.repeat(64), 'c'.repeat(64)];
  let prev = GENESIS_HASH;
  let bytes = 0;
  const fd = openSync(file, 'w');
  try {
    let chunk = '';
    for (let seq = 1; seq <= count; seq++) {
      const eu = seq % 5 === 0;
      const read = seq % 3 === 0;
      const block = eu && !read;
      const monitor = seq % 7 === 0;
      const j = eu ? 'IE' : 'US';
      const region = eu ? 'eu-west-1' : 'us-east-1';
      const reason = read ? 'read_allowed' : eu ? 'jurisdiction_not_allowed' : 'jurisdiction_allowed';
      // A policy change a third and two thirds of the way through.
      const policy = policies[Math.floor((seq - 1) / Math.ceil(count / 3))]!;
      const ts = new Date(start + seq * 100).toISOString();
      const body =
        `{"bucket":"bucket","bytes_in":5,"bytes_out":3,"client":"127.0.0.1","decision":"${block ? 'block' : 'allow'}","duration_ms":0.25,` +
        `"effective":"${block && !monitor ? 'refused' : 'forwarded'}","id":"00000000-0000-4000-8000-${String(seq).padStart(12, '0')}",` +
        `"location":{"jurisdictions":["${j}"],"region":"${region}","signals":[{"jurisdiction":"${j}","region":"${region}","source":"declared","value":"${region}"}]},` +
        `"method":"${read ? 'GET' : 'PUT'}","mode":"${monitor ? 'monitor' : 'enforce'}","operation":"${read ? 'read' : 'write'}",` +
        `"path":"/bucket/object-${seq}.txt","policy":"${policy}","prev":"${prev}","reason":"${reason}","replica":${replica},` +
        `"rule":"user-data-writes","seq":${seq},"status":${block && !monitor ? 403 : 200},"target":{"address":null,"host":"127.0.0.1:9000"},` +
        `"ts":"${ts}","upstream":"${eu ? 'demo-eu' : 'demo-us'}","v":1}`;
      prev = createHash('sha256').update(body).digest('hex');
      chunk += `${body.slice(0, -1)},"hash":"${prev}"}\n`;
      if (chunk.length >= 4 * 1024 * 1024) {
        bytes += writeSync(fd, chunk);
        chunk = '';
      }
    }
    if (chunk.length > 0) bytes += writeSync(fd, chunk);
  } finally {
    closeSync(fd);
  }
  return { lastHash: prev, bytes };
}
