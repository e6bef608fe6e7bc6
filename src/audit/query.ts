import type { Writable } from 'node:stream';
import { expandLogArgs, orderLogFiles } from './catalog.js';
import { readLines } from './lines.js';
import { isEvent, isOutcome, type DecisionRecord } from './record.js';

export interface QueryFilter {
  /** Inclusive, ISO 8601 UTC (as records write `ts`). */
  since?: string;
  /** Exclusive. */
  until?: string;
  decision?: string;
  upstream?: string;
  /** An ISO code among the record's jurisdictions, or "unknown" for none. */
  jurisdiction?: string;
  mode?: string;
}

export type QueryFormat = 'json' | 'table' | 'csv';

const DURATION = /^(\d+)(s|m|h|d|w)$/;
const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };
const ISO_8601 = /^(\d{4})-(\d{2})-(\d{2})([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/;

/** What a time bound may be, for messages. */
export const TIME_BOUND_FORMS = 'ISO 8601 (2026-01-31, 2026-01-31T12:00:00Z), a duration back from now (90m, 24h, 7d) or "now"';

/**
 * A time bound from the command line: ISO 8601 (a date is midnight UTC), a
 * duration back from `now` (`90m`, `24h`, `7d`), or `now`. Returns ISO UTC,
 * which compares as text with a record's `ts`.
 */
export function parseTimeBound(text: string, now = Date.now()): string {
  if (text === 'now') return new Date(now).toISOString();
  const d = DURATION.exec(text);
  if (d) return new Date(now - Number(d[1]) * UNIT_MS[d[2]!]!).toISOString();
  // Only ISO 8601: Date.parse also takes "1" (2001) or "2026-02-30" (2 March), silently.
  const iso = ISO_8601.exec(text);
  const day = iso ? new Date(Date.UTC(Number(iso[1]), Number(iso[2]) - 1, Number(iso[3]))) : null;
  const realDay = day !== null && day.getUTCMonth() === Number(iso![2]) - 1 && day.getUTCDate() === Number(iso![3]);
  const ms = realDay ? Date.parse(iso![4] === undefined ? `${text}T00:00:00Z` : text) : NaN;
  if (Number.isNaN(ms)) throw new Error(`"${text}" is not a time: expected ${TIME_BOUND_FORMS}`);
  return new Date(ms).toISOString();
}

export function jurisdictionsOf(record: DecisionRecord): readonly string[] {
  const list = record.location?.jurisdictions;
  return Array.isArray(list) && list.length > 0 ? list : ['unknown'];
}

export function matches(record: DecisionRecord, filter: QueryFilter): boolean {
  // Fleet events match only an unfiltered (or time-only) query.
  if (isEvent(record) && (filter.decision ?? filter.upstream ?? filter.mode ?? filter.jurisdiction) !== undefined) return false;
  if (filter.since !== undefined && !(record.ts >= filter.since)) return false;
  if (filter.until !== undefined && !(record.ts < filter.until)) return false;
  if (filter.decision !== undefined && record.decision !== filter.decision) return false;
  if (filter.upstream !== undefined && record.upstream !== filter.upstream) return false;
  if (filter.mode !== undefined && record.mode !== filter.mode) return false;
  if (filter.jurisdiction !== undefined && !jurisdictionsOf(record).includes(filter.jurisdiction)) return false;
  return true;
}

/**
 * Substrings a matching line must contain, tested before JSON.parse (the
 * expensive part): lines are canonical JSON, so `"decision":"block"` appears
 * verbatim. Necessary, not sufficient: the parsed record is still checked.
 */
function prefilter(filter: QueryFilter): (text: string) => boolean {
  const needles: string[] = [];
  if (filter.decision !== undefined) needles.push(`"decision":${JSON.stringify(filter.decision)}`);
  if (filter.mode !== undefined) needles.push(`"mode":${JSON.stringify(filter.mode)}`);
  if (filter.upstream !== undefined) needles.push(`"upstream":${JSON.stringify(filter.upstream)}`);
  if (filter.jurisdiction !== undefined && filter.jurisdiction !== 'unknown') needles.push(JSON.stringify(filter.jurisdiction));
  return (text) => needles.every((n) => text.includes(n));
}

/**
 * Buffers output and honours backpressure, so a slow reader (a pager, a pipe)
 * does not grow memory. A reader that goes away (`| head`) ends the output
 * quietly: `closed` turns true and the caller stops reading.
 */
export class OutputBuffer {
  private chunks: string[] = [];
  private size = 0;
  closed = false;
  private failure: Error | null = null;

  constructor(private readonly out: Writable) {
    out.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE' && err.code !== 'ERR_STREAM_DESTROYED') this.failure = err;
      this.closed = true;
    });
  }

  async write(text: string): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.closed) return;
    this.chunks.push(text);
    this.size += text.length;
    if (this.size >= 64 * 1024) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.size === 0 || this.closed) return;
    const text = this.chunks.join('');
    this.chunks = [];
    this.size = 0;
    if (!this.out.write(text)) {
      await new Promise<void>((resolve) => {
        const done = () => {
          this.out.off('drain', done);
          this.out.off('close', done);
          this.out.off('error', done);
          resolve();
        };
        this.out.once('drain', done);
        this.out.once('close', done);
        this.out.once('error', done);
      });
    }
  }
}

const COLUMNS = ['ts', 'replica', 'seq', 'decision', 'effective', 'mode', 'operation', 'method', 'upstream', 'jurisdictions', 'status', 'rule', 'reason', 'id', 'path'] as const;
const WIDTHS: Record<(typeof COLUMNS)[number], number> = {
  ts: 24,
  replica: 12,
  seq: 9,
  decision: 8,
  effective: 9,
  mode: 7,
  operation: 9,
  method: 6,
  upstream: 14,
  jurisdictions: 13,
  status: 6,
  rule: 18,
  reason: 24,
  id: 36,
  path: 0,
};

function cells(r: DecisionRecord): string[] {
  return [
    r.ts,
    r.replica,
    String(r.seq),
    r.decision,
    r.effective,
    r.mode,
    r.operation,
    r.method,
    r.upstream,
    jurisdictionsOf(r).join(';'),
    r.status === null ? 'pending' : String(r.status),
    r.rule ?? '',
    r.reason,
    r.id,
    r.path,
  ].map((v) => String(v ?? ''));
}

function csvField(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
}

function tableRow(values: readonly string[]): string {
  return values
    .map((v, i) => {
      const width = WIDTHS[COLUMNS[i]!];
      if (width === 0) return v;
      return v.length > width ? `${v.slice(0, width - 1)}…` : v.padEnd(width);
    })
    .join(' ');
}

export interface QueryStats {
  scanned: number;
  matched: number;
  /** Lines that were not records (reported on stderr by the CLI; `audit verify` says why). */
  unreadable: number;
}

/**
 * Stream the records of `args` (files or directories, in chain order) that
 * match `filter` to `out`: `json` writes the lines as stored (still
 * verifiable), `table` fixed-width columns, `csv` RFC 4180 with a header.
 * Memory is constant: one read chunk, one output buffer.
 */
export async function runQuery(args: readonly string[], filter: QueryFilter, format: QueryFormat, out: Writable): Promise<QueryStats> {
  const { files, missing } = expandLogArgs(args);
  if (missing.length > 0) throw new Error(`no such file: ${missing.join(', ')}`);
  const buffer = new OutputBuffer(out);
  const stats: QueryStats = { scanned: 0, matched: 0, unreadable: 0 };
  const quick = prefilter(filter);
  // A forwarded write's decision (status null) is completed by its outcome
  // record, later in the chain: json passes that line on after the decision,
  // table and csv hold the row until the outcome gives its status. What is
  // held is bounded by the writes in flight when the log was written.
  const awaiting = new Map<string, DecisionRecord | null>();
  if (format === 'table') await buffer.write(`${tableRow(COLUMNS)}\n`);
  if (format === 'csv') await buffer.write(`${COLUMNS.join(',')}\r\n`);
  for (const group of orderLogFiles(files)) {
    for (const file of group) {
      for await (const line of readLines(file.path)) {
        if (buffer.closed) {
          await buffer.flush();
          return stats;
        }
        stats.scanned++;
        if (!line.terminated) continue;
        if (awaiting.size > 0 && line.text.includes('"kind":"outcome"')) {
          const outcome = parseOutcome(line.text);
          const held = outcome === null ? undefined : awaiting.get(outcome.id);
          if (outcome !== null && held !== undefined) {
            awaiting.delete(outcome.id);
            if (format === 'json') await buffer.write(`${line.text}\n`);
            else await writeRow({ ...held!, status: outcome.status, bytes_in: outcome.bytes_in, bytes_out: outcome.bytes_out });
          }
          continue;
        }
        if (!quick(line.text)) continue;
        let record: DecisionRecord;
        try {
          record = JSON.parse(line.text) as DecisionRecord;
        } catch {
          stats.unreadable++;
          continue;
        }
        if (isOutcome(record) || !matches(record, filter)) continue;
        stats.matched++;
        if (record.status === null && typeof record.id === 'string') {
          awaiting.set(record.id, format === 'json' ? null : record);
          if (format !== 'json') continue;
        }
        if (format === 'json') await buffer.write(`${line.text}\n`);
        else await writeRow(record);
      }
    }
  }
  // Decisions whose outcome was never written (the last writes in flight at a crash): shown as pending.
  if (format !== 'json') for (const held of awaiting.values()) await writeRow(held!);
  await buffer.flush();
  return stats;

  function writeRow(record: DecisionRecord): Promise<void> {
    return format === 'csv' ? buffer.write(`${cells(record).map(csvField).join(',')}\r\n`) : buffer.write(`${tableRow(cells(record))}\n`);
  }
}

function parseOutcome(text: string): { id: string; status: number; bytes_in: number; bytes_out: number | null } | null {
  try {
    const record = JSON.parse(text) as Record<string, unknown>;
    return isOutcome(record) ? record : null;
  } catch {
    return null;
  }
}
