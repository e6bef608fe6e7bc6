import { arrayJson, canonicalJson, sealCanonical } from './canonical.js';
import { boundedMemo } from './memo.js';
import { RECORD_VERSION, isOutcome, type DecisionRecord, type LogEntry, type OutcomeEntry } from './record.js';

/**
 * The canonical JSON of a chained record, written straight from the entry
 * and its chain fields: the hot-path twin of
 * `canonicalJson({ ...entry, v, seq, replica, prev })`, byte for byte, without
 * building the merged object or sorting its keys on every call.
 *
 * The key sets of a decision record and of its nested objects are known, so
 * each is sorted once here. Any object carrying a key a layout does not know
 * (an event entry, a future field), and any value of another type than the
 * layout expects, is written by canonicalJson itself: the layouts only save
 * time, the canonical rule stays in one place.
 */

/** Canonical JSON of one value. */
type Write = (value: unknown) => string;

/** The fields the sink adds to an entry. */
export type ChainFields = Pick<DecisionRecord, 'v' | 'seq' | 'replica' | 'prev'>;

/** An object layout known in advance: keys in canonical order, each with the writer of its value. */
class Layout {
  private readonly slots = new Map<string, number>();
  private readonly openers: string[];
  private readonly prefixes: string[];
  private readonly writers: Write[];
  /** One undefined per key: copied per call (cheaper than filling a new array). */
  private readonly empty: unknown[];

  constructor(fields: Record<string, Write>) {
    // The same order canonicalJson's keys.sort() gives: UTF-16 code units.
    const keys = Object.keys(fields).sort();
    keys.forEach((key, i) => this.slots.set(key, i));
    this.openers = keys.map((key) => `{${JSON.stringify(key)}:`);
    this.prefixes = keys.map((key) => `,${JSON.stringify(key)}:`);
    this.writers = keys.map((key) => fields[key]!);
    this.empty = keys.map(() => undefined);
  }

  slot(key: string): number {
    return this.slots.get(key)!;
  }

  /**
   * The object's own enumerable values by slot (the properties canonicalJson
   * and object spread see), or null when it has a key this layout does not know.
   */
  values(object: object): unknown[] | null {
    const values = this.empty.slice();
    let count = 0;
    // for-in, not Object.keys: V8 reads the values through its enum cache, about twice as fast.
    for (const key in object) {
      const slot = this.slots.get(key);
      if (slot === undefined) return null;
      values[slot] = (object as Record<string, unknown>)[key];
      count++;
    }
    // for-in also visits inherited enumerable keys, which spread and canonicalJson ignore: then the slow path.
    return count === Object.keys(object).length ? values : null;
  }

  /** `{…}` in slot order, leaving out undefined values as canonicalJson does. */
  write(values: readonly unknown[]): string {
    let out = '';
    for (let i = 0; i < values.length; i++) {
      const value = values[i];
      if (value === undefined) continue;
      // `{"key":` opens, `,"key":` continues: one piece less per field (a record is ~100 pieces of rope to flatten).
      out += (out === '' ? this.openers[i]! : this.prefixes[i]!) + this.writers[i]!(value);
    }
    return out === '' ? '{}' : `${out}}`;
  }
}

/** What canonicalJson writes as `{…}` from its own keys: any object but an array. */
const isKeyed = (value: unknown): value is object => value !== null && typeof value === 'object' && !Array.isArray(value);

/** An object of a known layout; anything else through canonicalJson. */
function objectOf(fields: Record<string, Write>): Write {
  const layout = new Layout(fields);
  return (value) => {
    const values = isKeyed(value) ? layout.values(value) : null;
    return values === null ? canonicalJson(value) : layout.write(values);
  };
}

/** An array whose items have one writer. */
function arrayOf(item: Write): Write {
  return (value) => (Array.isArray(value) ? arrayJson(value, item) : canonicalJson(value));
}

/** Quote, backslash, controls (which JSON.stringify escapes) and any surrogate (it escapes lone ones): those strings take JSON.stringify. */
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

/**
 * Strings, numbers, booleans, null, as canonicalJson writes them. A string
 * JSON.stringify would not escape is just quoted, and a finite number is
 * String(n) (the same Number::toString): both several times cheaper than a
 * JSON.stringify call. Anything else takes canonicalJson.
 */
function scalar(value: unknown): string {
  if (typeof value === 'string') return NEEDS_ESCAPE.test(value) ? JSON.stringify(value) : `"${value}"`;
  if (typeof value === 'number') return Number.isFinite(value) ? String(value) : 'null';
  if (value === null) return 'null';
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  return canonicalJson(value);
}

/**
 * A field whose strings come from the config and policy (upstream, rule,
 * reason, region…): few distinct values, so their JSON text is remembered
 * (bounded, so even a field fed by clients could not grow it).
 */
const labelText = boundedMemo(scalar, 1024);
const label: Write = (value) => (typeof value === 'string' ? labelText(value) : scalar(value));

const signal = objectOf({ source: label, value: label, jurisdiction: label, region: label, bucket: scalar });

type RecordFields = Record<keyof Omit<DecisionRecord, 'hash'>, Write>;

const recordFields: RecordFields = {
  v: scalar,
  seq: scalar,
  ts: scalar,
  id: scalar,
  replica: label,
  policy: label,
  upstream: label,
  method: label,
  path: scalar,
  bucket: scalar,
  operation: label,
  target: objectOf({ host: label, address: label }),
  location: objectOf({ jurisdictions: arrayOf(label), region: label, signals: arrayOf(signal), unplaced: scalar }),
  rule: label,
  mode: label,
  decision: label,
  effective: label,
  reason: label,
  exception: objectOf({ name: scalar, ticket: scalar, expires: scalar }),
  lockdown: scalar,
  shadow: objectOf({ policy: label, decision: label, rule: label, reason: label }),
  principal: scalar,
  principal_verified: scalar,
  tunnel: objectOf({ host: scalar, user: scalar }),
  body: label,
  upload: objectOf({ kind: scalar, known: scalar }),
  status: scalar,
  bytes_in: scalar,
  bytes_out: scalar,
  duration_ms: scalar,
  client: scalar,
  error: scalar,
  prev: scalar,
};

type OutcomeFields = Record<keyof OutcomeEntry | keyof ChainFields, Write>;

const outcomeFields: OutcomeFields = {
  kind: label,
  v: scalar,
  seq: scalar,
  ts: scalar,
  id: scalar,
  replica: label,
  status: scalar,
  bytes_in: scalar,
  bytes_out: scalar,
  duration_ms: scalar,
  error: label,
  prev: scalar,
};

/** A record layout with the slots of its chain fields. */
function chained(fields: Record<keyof ChainFields, Write> & Record<string, Write>) {
  const layout = new Layout(fields);
  return { layout, v: layout.slot('v'), seq: layout.slot('seq'), replica: layout.slot('replica'), prev: layout.slot('prev') };
}

const decisionRecord = chained(recordFields);
/** A forwarded write's outcome: one per write, so it gets its own layout too. */
const outcomeRecord = chained(outcomeFields);

/** `canonicalJson({ ...entry, ...chain })`, without the merged object. */
export function entryJson(entry: LogEntry, chain: ChainFields): string {
  const known = isOutcome(entry) ? outcomeRecord : decisionRecord;
  const values = known.layout.values(entry);
  // Not an entry of a known shape (an event, an extra key): the generic path.
  if (values === null) return canonicalJson({ ...entry, v: chain.v, seq: chain.seq, replica: chain.replica, prev: chain.prev });
  // Later spread properties win: the chain fields replace any the entry carried.
  values[known.v] = chain.v;
  values[known.seq] = chain.seq;
  values[known.replica] = chain.replica;
  values[known.prev] = chain.prev;
  return known.layout.write(values);
}

/** sealRecord({ ...entry, ...chain }), without the merged object: the line to write and its hash. */
export function sealEntry(entry: LogEntry, chain: ChainFields): { line: string; hash: string } {
  return sealCanonical(entryJson(entry, chain));
}

/** A place in a log's chain: the last record's seq and hash. */
export interface ChainPoint {
  seq: number;
  hash: string;
}

/** The record that follows `after` in `replica`'s chain: its line, seq and hash (what both sinks write). */
export function sealNext(entry: LogEntry, replica: string, after: ChainPoint): { line: string; seq: number; hash: string } {
  const seq = after.seq + 1;
  const { line, hash } = sealEntry(entry, { v: RECORD_VERSION, seq, replica, prev: after.hash });
  return { line, seq, hash };
}

/** A batch of lines as the bytes to write: each line ends with a newline (`head` goes first). */
export function linesBuffer(items: readonly { line: string }[], head = ''): Buffer {
  const lines = items.map((item) => item.line);
  // The trailing '' gives the final newline inside join: one flat string, no extra copy.
  lines.push('');
  return Buffer.from(head + lines.join('\n'));
}
