import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DecisionRecord } from '../../src/audit/record.js';
import { matches, parseTimeBound, runQuery, type QueryFilter, type QueryFormat } from '../../src/audit/query.js';
import { buildReport, renderHtml, renderMarkdown } from '../../src/audit/report.js';
import { generateLog, sampleEntry } from '../helpers/audit-records.js';

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
    expect(report.top_reasons[0]).toEqual({ rule: 'user-data-writes', reason: 'jurisdiction_allowed', count: expect.any(Number) });
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
