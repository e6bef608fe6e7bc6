import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { canonicalJson, GENESIS_HASH, sealRecord } from '../../src/audit/canonical.js';
import { RECORD_VERSION, type DecisionEntry, type EventEntry, type LogEntry } from '../../src/audit/record.js';
import { entryJson, sealEntry, type ChainFields } from '../../src/audit/serialise.js';
import { verifyLogs } from '../../src/audit/verify.js';
import { createDecisionLog } from '../../src/audit/writer.js';
import { sampleEntry } from '../helpers/audit-records.js';

/** What the writer hashed before sealEntry: the merged object through the generic canonical form. */
const reference = (entry: object, chain: ChainFields) => canonicalJson({ ...entry, v: chain.v, seq: chain.seq, replica: chain.replica, prev: chain.prev });

// Strings JSON.stringify escapes or passes through oddly: quotes, backslashes, controls, lone and paired surrogates, non-BMP.
const oddUnit = fc.oneof(
  fc.constantFrom('"', '\\', '\n', '\u0000', '\u001f', '\u007f', '\u2028', 'é', '😀', '\ud800', '\udfff', '\ud83d\ude00', '/'),
  fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)),
  fc.string({ unit: 'binary', maxLength: 1 }),
);
const text = fc.oneof(fc.string(), fc.string({ unit: oddUnit, maxLength: 12 }), fc.constantFrom('', 'us-east-1', 'allow'));
const num = fc.oneof(fc.integer(), fc.double(), fc.constantFrom(0, -0, 1e21, 1e-7, Number.MAX_SAFE_INTEGER, NaN, Infinity, -Infinity));
const scalar = fc.oneof(text, num, fc.boolean(), fc.constant(null));
/** Anything at all in a slot, including shapes the layouts do not expect (canonicalJson must take those). */
const anything = fc.anything({ withDate: true, withMap: true, withSet: true, withNullPrototype: true, withSparseArray: true, withBoxedValues: true, withTypedArray: true });
/** A value for an optional key: absent, present but undefined, or present. */
const optional = <T>(arb: fc.Arbitrary<T>) => fc.option(fc.oneof(arb, fc.constant(undefined)), { nil: undefined });
/** Mostly the expected shape, sometimes any value at all. */
const shaped = <T>(arb: fc.Arbitrary<T>) => fc.oneof({ weight: 4, arbitrary: arb }, { weight: 1, arbitrary: anything });

const signal = fc.record(
  { source: text, value: text, jurisdiction: fc.oneof(text, fc.constant(null)), region: optional(text), extra: scalar },
  { requiredKeys: ['source', 'value', 'jurisdiction'] },
);
const decisionFields = {
  ts: text,
  id: text,
  policy: text,
  upstream: text,
  method: text,
  path: text,
  bucket: fc.oneof(text, fc.constant(null)),
  operation: text,
  target: shaped(fc.record({ host: text, address: fc.oneof(text, fc.constant(null)), port: optional(num) }, { requiredKeys: ['host', 'address'] })),
  location: shaped(
    fc.record({
      jurisdictions: shaped(fc.array(fc.oneof(text, fc.constant(undefined)), { maxLength: 3 })),
      region: fc.oneof(text, fc.constant(null)),
      signals: shaped(fc.array(shaped(signal), { maxLength: 3 })),
    }),
  ),
  rule: fc.oneof(text, fc.constant(null)),
  mode: text,
  decision: text,
  effective: text,
  reason: text,
  exception: optional(shaped(fc.record({ name: text, ticket: text, expires: text }))),
  lockdown: optional(fc.oneof(fc.constant(true), scalar)),
  shadow: optional(shaped(fc.record({ policy: text, decision: text, rule: fc.oneof(text, fc.constant(null)), reason: text }))),
  principal: optional(text),
  upload: optional(shaped(fc.record({ kind: text, known: fc.boolean() }))),
  status: num,
  bytes_in: num,
  bytes_out: fc.oneof(num, fc.constant(null)),
  duration_ms: num,
  client: text,
  error: optional(text),
};
const decision = fc.record(decisionFields, {
  requiredKeys: ['ts', 'id', 'policy', 'upstream', 'method', 'path', 'bucket', 'operation', 'target', 'location', 'rule', 'mode', 'decision', 'effective', 'reason', 'status', 'bytes_in', 'bytes_out', 'duration_ms', 'client'],
});
/** Keys an entry is not expected to carry, the chain fields and `hash` among them. */
const extras = fc.dictionary(fc.oneof(fc.constantFrom('v', 'seq', 'replica', 'prev', 'hash', 'kind', 'zz', 'B', '_', '0', '10'), fc.string({ maxLength: 4 })), anything, {
  maxKeys: 3,
});
const decisionLike = fc.oneof({ weight: 3, arbitrary: decision }, { weight: 1, arbitrary: fc.tuple(decision, extras).map(([d, x]) => ({ ...d, ...x })) });
const event = fc.record({
  kind: fc.constant('event'),
  event: fc.constant('lockdown'),
  ts: text,
  id: text,
  state: fc.constantFrom('locked', 'lifted'),
  reason: text,
  set_by: text,
  set_at: text,
  trigger: text,
});
/** A forwarded write's outcome record, mostly as the handler makes it. */
const outcome = fc.record(
  {
    kind: fc.constant('outcome'),
    ts: text,
    id: text,
    status: shaped(fc.integer({ min: 100, max: 599 })),
    bytes_in: shaped(fc.nat()),
    bytes_out: shaped(fc.oneof(fc.nat(), fc.constant(null))),
    duration_ms: shaped(num),
    error: optional(shaped(text)),
  },
  { requiredKeys: ['kind', 'ts', 'id', 'status', 'bytes_in', 'bytes_out', 'duration_ms'] },
);
const chain = fc.record({ v: fc.oneof(fc.constant(1), num), seq: num, replica: text, prev: fc.oneof(fc.constant(GENESIS_HASH), text) });

describe('entryJson: canonicalJson of the chained record, without the merged object', () => {
  it('is byte-identical to canonicalJson({ ...entry, v, seq, replica, prev }) for decision-like entries', () => {
    fc.assert(
      fc.property(decisionLike, chain, (entry, c) => {
        expect(entryJson(entry as unknown as LogEntry, c)).toBe(reference(entry, c));
      }),
      { numRuns: 3000 },
    );
  });

  it('is byte-identical for event entries, with or without extra keys', () => {
    fc.assert(
      fc.property(fc.oneof(event, fc.tuple(event, extras).map(([e, x]) => ({ ...e, ...x }))), chain, (entry, c) => {
        expect(entryJson(entry as unknown as LogEntry, c)).toBe(reference(entry, c));
      }),
      { numRuns: 500 },
    );
  });

  it('is byte-identical for outcome entries, with odd values or extra keys', () => {
    fc.assert(
      fc.property(fc.oneof(outcome, fc.tuple(outcome, extras).map(([o, x]) => ({ ...o, ...x }))), chain, (entry, c) => {
        expect(entryJson(entry as unknown as LogEntry, c)).toBe(reference(entry, c));
      }),
      { numRuns: 1000 },
    );
  });

  it('sealEntry gives the line and hash sealRecord gives for the merged object', () => {
    fc.assert(
      fc.property(fc.oneof(decisionLike, event, outcome), chain, (entry, c) => {
        expect(sealEntry(entry as unknown as LogEntry, c)).toEqual(sealRecord({ ...entry, ...c }));
      }),
      { numRuns: 500 },
    );
  });

  it('sees only own enumerable properties, as object spread does', () => {
    const c: ChainFields = { v: 1, seq: 7, replica: 'r', prev: GENESIS_HASH };
    // Inherited: spread and canonicalJson ignore it.
    const inherited = Object.assign(Object.create({ error: 'inherited' }) as DecisionEntry, sampleEntry(1));
    expect(entryJson(inherited, c)).toBe(reference(inherited, c));
    expect(entryJson(inherited, c)).not.toContain('inherited');
    // Own but not enumerable: the same.
    const hidden = sampleEntry(2);
    Object.defineProperty(hidden, 'error', { value: 'hidden', enumerable: false });
    expect(entryJson(hidden, c)).toBe(reference(hidden, c));
    // A nested object with an inherited key, and a getter.
    const nested = sampleEntry(3, { target: Object.assign(Object.create({ port: 1 }) as DecisionEntry['target'], { host: 'h', address: null }) });
    Object.defineProperty(nested, 'client', { get: () => 'from-getter', enumerable: true });
    expect(entryJson(nested, c)).toBe(reference(nested, c));
    // The entry's own chain fields lose to the sink's, as in the spread.
    const clash = { ...sampleEntry(4), seq: 99, prev: 'x' } as unknown as DecisionEntry;
    expect(entryJson(clash, c)).toBe(reference(clash, c));
  });
});

describe('the durable writer with sealEntry', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'audit-serialise-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('writes exactly the lines sealRecord gives for the merged records, and the log verifies', async () => {
    const path = join(dir, 'decisions.log');
    const log = createDecisionLog({ path, replica: 'r1', rotateBytes: 4096 });
    const lockdown: EventEntry = {
      kind: 'event',
      event: 'lockdown',
      ts: '2026-01-01T00:00:00.000Z',
      id: 'e1',
      state: 'locked',
      reason: 'drill "quoted" \u2028',
      set_by: 'ops',
      set_at: '2026-01-01T00:00:00.000Z',
      trigger: 'manual',
    };
    const entries: LogEntry[] = [
      ...Array.from({ length: 30 }, (_, i) => sampleEntry(i)),
      sampleEntry(30, { path: '/b/\u0000"\\\ud800😀', error: 'upstream_reset', principal: 'AKIA', lockdown: true }),
      sampleEntry(31, { exception: { name: 'x', ticket: 'T-1', expires: '2027-01-01T00:00:00Z' }, upload: { kind: 'multipart', known: false } }),
      sampleEntry(32, { shadow: { policy: 'b'.repeat(64), decision: 'block', rule: null, reason: 'jurisdiction_not_allowed' }, duration_ms: NaN }),
      lockdown,
      ...Array.from({ length: 30 }, (_, i) => sampleEntry(40 + i)),
    ];
    // Several batches, so the log rotates and the chain crosses files.
    for (let i = 0; i < entries.length; i += 8) await Promise.all(entries.slice(i, i + 8).map((e) => log.write(e)));
    await log.close();

    const result = await verifyLogs([dir]);
    expect(result.findings.filter((f) => f.severity !== 'note')).toEqual([]);
    expect(result.ok).toBe(true);
    expect(result.records).toBe(entries.length);
    expect(result.files.length).toBeGreaterThan(1);

    // Every line is what the generic path would have written.
    const lines = result.files.flatMap((f) => readFileSync(f.file, 'utf8').split('\n').filter(Boolean));
    let prev = GENESIS_HASH;
    lines.forEach((line, i) => {
      const expected = sealRecord({ ...entries[i]!, v: RECORD_VERSION, seq: i + 1, replica: 'r1', prev });
      expect(line).toBe(expected.line);
      prev = expected.hash;
    });
  });
});
