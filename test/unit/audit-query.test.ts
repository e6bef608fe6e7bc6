import { appendFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { DecisionRecord } from '../../src/audit/record.js';
import { matches, parseTimeBound, runQuery, type QueryFilter, type QueryFormat } from '../../src/audit/query.js';
import { buildReport, renderHtml, renderMarkdown, type AuditReport } from '../../src/audit/report.js';
import { auditCommand } from '../../src/cli/audit.js';
import { generateLog, sampleEntry } from '../helpers/audit-records.js';
import { mixedEntry } from '../helpers/audit-report-log.js';

let dir: string;
let file: string;
const COUNT = 300;

async function query(filter: QueryFilter, format: QueryFormat = 'json'): Promise<string> {
  const out = new PassThrough();
  let text = '';
  out.on('data', (c: Buffer) => (text += c.toString()));
  await runQuery([file], filter, format, out);
  return text;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'audit-query-'));
  file = join(dir, 'decisions.log');
  // Record i: ts 2026-01-01T00:00:00Z + i s; every 5th in IE; monitor mode for i % 7 === 0.
  generateLog(file, COUNT, { entry: (i) => sampleEntry(i, i % 7 === 0 ? { mode: 'monitor', effective: 'forwarded' } : {}) });
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('parseTimeBound', () => {
  it('accepts ISO dates and times, and durations back from now', () => {
    expect(parseTimeBound('2026-01-31')).toBe('2026-01-31T00:00:00.000Z');
    expect(parseTimeBound('2026-01-31T12:30:00+01:00')).toBe('2026-01-31T11:30:00.000Z');
    expect(parseTimeBound('24h', Date.UTC(2026, 1, 2))).toBe('2026-02-01T00:00:00.000Z');
    expect(parseTimeBound('7d', Date.UTC(2026, 1, 8))).toBe('2026-02-01T00:00:00.000Z');
    expect(() => parseTimeBound('yesterday')).toThrow(/not a time/);
  });

  it('accepts now, and refuses what only looks like a time', () => {
    expect(parseTimeBound('now', Date.UTC(2026, 1, 2))).toBe('2026-02-02T00:00:00.000Z');
    // Date.parse would read these as 2001-01-01 and 2026-03-02.
    for (const text of ['1', '2026-02-30', 'March 7']) expect(() => parseTimeBound(text)).toThrow(`"${text}" is not a time: expected ISO 8601`);
  });
});

describe('audit query', () => {
  it('filters by decision, upstream, jurisdiction, mode and time (since inclusive, until exclusive)', async () => {
    const all = (await query({})).trim().split('\n').map((l) => JSON.parse(l) as DecisionRecord);
    expect(all).toHaveLength(COUNT);
    const expectSame = async (filter: QueryFilter) => {
      const got = (await query(filter)).trim().split('\n').filter(Boolean).map((l) => (JSON.parse(l) as DecisionRecord).seq);
      expect(got).toEqual(all.filter((r) => matches(r, filter)).map((r) => r.seq));
      return got;
    };
    const blocked = await expectSame({ decision: 'block' });
    expect(blocked.length).toBeGreaterThan(0);
    expect(blocked.every((s) => s % 5 === 0 && s % 3 !== 0)).toBe(true);
    expect(await expectSame({ jurisdiction: 'IE' })).toHaveLength(COUNT / 5);
    await expectSame({ upstream: 'demo-us' });
    const monitor = await expectSame({ mode: 'monitor' });
    expect(monitor.every((s) => s % 7 === 0)).toBe(true);
    const window = await expectSame({ since: '2026-01-01T00:00:10.000Z', until: '2026-01-01T00:00:20.000Z' });
    expect(window).toEqual([10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
    expect(await expectSame({ decision: 'block', jurisdiction: 'US' })).toEqual([]);
  });

  it('json output is the stored lines (still verifiable)', async () => {
    const out = await query({ since: '2026-01-01T00:00:01.000Z', until: '2026-01-01T00:00:02.000Z' });
    expect(out).toMatch(/^\{"bucket":"bucket","bytes_in":5,.*"seq":1,.*"hash":"[0-9a-f]{64}"\}\n$/);
  });

  it('csv: header, one row per record, RFC 4180 quoting', async () => {
    const out = await query({ decision: 'block', until: '2026-01-01T00:00:11.000Z' }, 'csv');
    const rows = out.split('\r\n').filter(Boolean);
    expect(rows[0]).toBe('ts,replica,seq,decision,effective,mode,operation,method,upstream,jurisdictions,status,rule,reason,id,path');
    expect(rows.slice(1).map((r) => r.split(',')[2])).toEqual(['5', '10']);
    expect(rows[1]).toContain(',block,refused,enforce,write,PUT,demo-eu,IE,403,user-data-writes,jurisdiction_not_allowed,');
  });

  it('table: a header and aligned rows', async () => {
    const out = await query({ decision: 'block', until: '2026-01-01T00:00:11.000Z' }, 'table');
    const rows = out.trim().split('\n');
    expect(rows).toHaveLength(3);
    expect(rows[0]).toMatch(/^ts\s+replica\s+seq\s+decision/);
    expect(rows[1]!.indexOf('block')).toBe(rows[0]!.indexOf('decision'));
  });
});

describe('audit report', () => {
  it('aggregates the period, lists policy versions, and carries the chain check', async () => {
    const report = await buildReport([file], { since: '2026-01-01T00:00:00.000Z', until: '2026-01-01T00:01:40.000Z', now: () => 0 });
    // Records 1..99 fall in the first 100 s (record i at i seconds).
    expect(report.records).toBe(99);
    expect(report.records_read).toBe(COUNT);
    const inPeriod = Array.from({ length: 99 }, (_, k) => k + 1);
    const blockedNonUs = inPeriod.filter((i) => i % 5 === 0 && i % 3 !== 0 && i % 7 !== 0).length;
    const monitorBlocks = inPeriod.filter((i) => i % 7 === 0 && i % 5 === 0 && i % 3 !== 0).length;
    expect(report.blocked_non_us_writes.total).toBe(blockedNonUs);
    expect(report.blocked_non_us_writes.by_jurisdiction).toEqual({ IE: blockedNonUs });
    expect(report.monitor_would_block.total).toBe(monitorBlocks);
    expect(report.by_jurisdiction).toEqual({ US: 99 - 19, IE: 19 });
    expect(report.by_decision.block).toBe(inPeriod.filter((i) => i % 5 === 0 && i % 3 !== 0).length);
    expect(report.policies).toEqual([{ hash: 'a'.repeat(64), first_seen: '2026-01-01T00:00:01.000Z', last_seen: '2026-01-01T00:01:39.000Z', count: 99 }]);
    expect(report.top_reasons[0]).toEqual({ rule: 'user-data-writes', operation: 'write', reason: 'jurisdiction_allowed', count: expect.any(Number) });
    expect(report.verification.ok).toBe(true);
    expect(report.timeline.buckets.reduce((n, b) => n + b.allow + b.block, 0)).toBe(99);

    const md = renderMarkdown(report);
    expect(md).toContain('**Chain verification:** INTACT');
    expect(md).toContain(`## Blocked non-US write attempts: ${blockedNonUs}`);

    const html = renderHtml(report);
    expect(html).toContain('<svg');
    // Self-contained: nothing fetched from elsewhere.
    expect(html).not.toMatch(/<script|<link|<img|src=|href=|url\(|@import/i);
  });
});

describe('audit report for an auditor', () => {
  let mixed: string;
  let errors: string[];

  beforeAll(() => {
    mixed = join(dir, 'mixed.log');
    generateLog(mixed, 120, { entry: mixedEntry });
  });

  afterEach(() => {
    vi.restoreAllMocks();
  });

  /** Run `audit report` with the JSON document written to a file; usage errors land in `errors`. */
  async function reportCli(args: string[]): Promise<{ code: number; report: AuditReport | null }> {
    errors = [];
    vi.spyOn(console, 'error').mockImplementation((text: string) => void errors.push(text));
    const out = join(dir, 'report.json');
    rmSync(out, { force: true });
    const code = await auditCommand(['report', ...args, '--format', 'json', '--out', out]);
    return { code, report: code === 0 ? (JSON.parse(readFileSync(out, 'utf8')) as AuditReport) : null };
  }

  it('covers the whole log without --since and --until, and takes --until now', async () => {
    const whole = await buildReport([file], { now: () => 0 });
    expect(whole).toMatchObject({ records: COUNT, since: '2026-01-01T00:00:01.000Z', until: '2026-01-01T00:05:00.000Z', bounds: { since: 'first_record', until: 'last_record' } });
    expect(whole.timeline.buckets.reduce((n, b) => n + b.allow + b.block, 0)).toBe(COUNT);
    expect(renderMarkdown(whole)).toContain('Period: the whole log, from the first record (2026-01-01 00:00:01 UTC) to the last record (2026-01-01 00:05:00 UTC, included).');

    let run = await reportCli([file]);
    expect(run.code).toBe(0);
    expect(run.report!.records).toBe(COUNT);
    run = await reportCli([file, '--until', 'now']);
    expect(run.code).toBe(0);
    expect(run.report).toMatchObject({ records: COUNT, since: '2026-01-01T00:00:01.000Z', bounds: { since: 'first_record', until: 'given' } });
    run = await reportCli([file, '--since', '2026-01-01T00:01:00Z']);
    expect(run.report).toMatchObject({ records: COUNT - 59, until: '2026-01-01T00:05:00.000Z', bounds: { since: 'given', until: 'last_record' } });
    // A --since after the log's end is an empty period, not an inverted one.
    run = await reportCli([file, '--since', '2027-01-01']);
    expect(run.report).toMatchObject({ records: 0, since: '2027-01-01T00:00:00.000Z', until: '2027-01-01T00:00:00.000Z' });
  });

  it('counts every record of the whole log, also those out of time order', async () => {
    const file2 = join(dir, 'unordered.log');
    // Record 2 was timed just before record 1 (two requests racing to the log); record 3 after a clock step back.
    const ts: Record<number, string> = { 2: '2026-01-01T00:00:00.999Z', 3: '2025-12-31T00:00:00.000Z' };
    generateLog(file2, 10, { entry: (i) => sampleEntry(i, ts[i] ? { ts: ts[i] } : {}) });
    const report = await buildReport([file2], {});
    expect(report.records).toBe(10);
    expect(report.timeline.buckets.reduce((n, b) => n + b.allow + b.block, 0)).toBe(9);
    expect(report.timeline.outside).toBe(1);
    expect(renderHtml(report)).toContain('1 decision with times outside this range is counted in the tables but not drawn.');
  });

  it('a bad --since or --until names the flag and what it expects', async () => {
    expect((await reportCli([file, '--since', 'yesterday'])).code).toBe(2);
    expect(errors[0]).toMatch(/^--since "yesterday" is not a time: expected ISO 8601 \(2026-01-31, 2026-01-31T12:00:00Z\), a duration back from now \(90m, 24h, 7d\) or "now"/);
    expect((await reportCli([file, '--until', '2026-02-30'])).code).toBe(2);
    expect(errors[0]).toMatch(/^--until "2026-02-30" is not a time: expected ISO 8601/);
    expect((await reportCli([file, '--since', '2026-01-02', '--until', '2026-01-01'])).code).toBe(2);
    expect(errors[0]).toMatch(/^--since \(2026-01-02T00:00:00.000Z\) must be before --until \(2026-01-01T00:00:00.000Z\)/);
  });

  it('reports reads no rule matched as such, apart from writes the catch-all default rule decided', async () => {
    const report = await buildReport([mixed], {});
    // As the records hold them: rule null for the reads, "default" for the writes.
    expect(report.top_reasons).toContainEqual({ rule: null, operation: 'read', reason: 'read_allowed', count: 20 });
    expect(report.top_reasons).toContainEqual({ rule: 'default', operation: 'write', reason: 'jurisdiction_not_allowed', count: 20 });
    const md = renderMarkdown(report);
    expect(md).toContain('| none matched (a read: allowed) | read | read\\_allowed | a read no rule covers: allowed | 20 |');
    expect(md).toContain('| default (catch-all for writes no rule matched) | write | jurisdiction\\_not\\_allowed |');
    expect(md).not.toContain('| default |');
  });

  it('counts jurisdictions by reads and writes and by what became of them, and labels every row', async () => {
    const report = await buildReport([mixed], {});
    expect(report.jurisdictions).toEqual({
      IE: { read: { allowed: 20, refused: 0, would_block: 0 }, write: { allowed: 0, refused: 20, would_block: 0 } },
      US: { read: { allowed: 20, refused: 0, would_block: 0 }, write: { allowed: 20, refused: 0, would_block: 0 } },
      FR: { read: { allowed: 0, refused: 0, would_block: 0 }, write: { allowed: 0, refused: 0, would_block: 20 } },
      unknown: { read: { allowed: 0, refused: 0, would_block: 0 }, write: { allowed: 0, refused: 20, would_block: 0 } },
    });
    const md = renderMarkdown(report);
    expect(md).toContain('| jurisdiction | reads allowed | reads refused | reads would-block | writes allowed | writes refused | writes would-block |');
    expect(md).toContain('| unknown (not placed) | 0 | 0 | 0 | 0 | 20 | 0 |');
    expect(md).toContain('**By rule**\n\n| rule | would-block decisions |\n|---|---|\n| eu-monitor | 20 |');

    // A period without would-blocks says so once, in words.
    const quiet = await buildReport([file], { since: '2026-01-01T00:00:00.000Z', until: '2026-01-01T00:00:30.000Z' });
    expect(quiet.monitor_would_block.total).toBe(0);
    expect(renderMarkdown(quiet)).toContain('## Would have been blocked (monitor mode): 0\n\nRequests a rule in monitor mode would have refused');
    expect(renderMarkdown(quiet)).toMatch(/monitor mode\): 0\n\n[^\n]+\n\nNone in this period\.\n/);
    const html = renderHtml(quiet);
    expect(html).not.toMatch(/>\s*none\s*</i);
    expect(html.match(/None in this period\./g)).toHaveLength(1);
  });

  it('the chart has round UTC times on its axis and states the interval as a caption', async () => {
    const html = renderHtml(await buildReport([mixed], {}));
    const svg = html.slice(html.indexOf('<svg'), html.indexOf('</svg>'));
    expect(svg).not.toMatch(/\d{4}-\d{2}-\d{2}T/);
    const ticks = [...svg.matchAll(/<tspan[^>]*>([^<]*)<\/tspan>/g)].map((m) => m[1]);
    expect(ticks).toEqual(['00:00', '2026-01-01', '00:30', '01:00', '01:30', '02:00', '02:30', '03:00']);
    expect(html).toContain('<figcaption>Each bar counts the decisions of 5 minutes; times are UTC.</figcaption>');
    const legend = html.slice(html.indexOf('<p class="legend">'), html.indexOf('</p>', html.indexOf('<p class="legend">'))).replace(/<[^>]*>/g, ' ');
    expect(legend.trim()).toMatch(/^allowed\s+blocked \(refused, or forwarded as a would-block\)$/);
  });

  it('says 1 record, 1 file, 1 line', async () => {
    const one = join(dir, 'one.log');
    generateLog(one, 1);
    const report = await buildReport([one], {});
    expect(renderMarkdown(report)).toContain('INTACT: 1 record in 1 file (0 sealed); 0 errors, 0 warnings.');
    expect(renderMarkdown(report)).toContain('Decisions in the period: 1 (of 1 record read from 1 file;');

    const out: string[] = [];
    vi.spyOn(console, 'log').mockImplementation((text: string) => void out.push(text));
    vi.spyOn(console, 'error').mockImplementation((text: string) => void out.push(text));
    expect(await auditCommand(['verify', one])).toBe(0);
    expect(out).toContain(`${one}: seq 1–1 (1 record), unsealed, replica gen`);
    expect(out.at(-1)).toBe('INTACT: 1 record in 1 file');

    appendFileSync(one, 'not a record\n');
    vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    expect(await auditCommand(['query', one])).toBe(0);
    expect(out.at(-1)).toBe('1 line was not a record (run "audit verify")');
  });
});
