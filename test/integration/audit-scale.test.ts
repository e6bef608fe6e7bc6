import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditReport } from '../../src/audit/report.js';
import { generateLogFast } from '../helpers/audit-records.js';
import { assertBuilt, CLI, cleanEnv } from '../helpers/audit-serve.js';

const COUNT = 1_000_000;
const LIMIT_KIB = 150 * 1024;

interface Run {
  code: number | null;
  /** Lines of stdout (counted while streaming, never held whole), the first and last kept. */
  lines: number;
  first: string;
  last: string;
  stdout: string;
  maxRssKib: number;
  ms: number;
}

/** Run the CLI, streaming stdout; the child reports its own peak RSS at exit (RESIDENCY_AUDIT_MAXRSS=1). */
function runAudit(args: string[], keepStdout: boolean): Promise<Run> {
  const started = Date.now();
  const child = spawn(process.execPath, [CLI, 'audit', ...args], { env: cleanEnv({ RESIDENCY_AUDIT_MAXRSS: '1' }), stdio: ['ignore', 'pipe', 'pipe'] });
  let lines = 0;
  let first = '';
  let last = '';
  let partial = '';
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (text: string) => {
    if (keepStdout) stdout += text;
    const parts = (partial + text).split('\n');
    partial = parts.pop()!;
    for (const p of parts) {
      if (lines === 0) first = p;
      last = p;
      lines++;
    }
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (t: string) => (stderr += t));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => {
      const rss = /\{"max_rss_kib":(\d+)\}/.exec(stderr);
      if (!rss) return reject(new Error(`no max_rss_kib on stderr: ${stderr}`));
      resolve({ code, lines, first, last, stdout, maxRssKib: Number(rss[1]), ms: Date.now() - started });
    });
  });
}

describe('audit query and report over 1,000,000 records', () => {
  let dir: string;
  let file: string;

  beforeAll(() => {
    assertBuilt();
    dir = mkdtempSync(join(tmpdir(), 'audit-scale-'));
    file = join(dir, 'decisions.log');
    const started = Date.now();
    const { bytes } = generateLogFast(file, COUNT, { replica: 'scale' });
    console.log(`[audit-scale] generated ${COUNT} records, ${(bytes / 1024 / 1024).toFixed(0)} MiB, in ${Date.now() - started} ms`);
  });

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('query streams the matches in constant memory', async () => {
    const run = await runAudit(['query', file, '--decision', 'block', '--format', 'csv'], false);
    let expected = 0;
    let lastSeq = 0;
    for (let seq = 1; seq <= COUNT; seq++) {
      if (seq % 5 === 0 && seq % 3 !== 0) {
        expected++;
        lastSeq = seq;
      }
    }
    console.log(`[audit-scale] query: ${run.lines - 1} rows in ${run.ms} ms, peak RSS ${(run.maxRssKib / 1024).toFixed(1)} MiB`);
    expect(run.code).toBe(0);
    expect(run.lines - 1).toBe(expected);
    expect(run.first).toBe('ts,replica,seq,decision,effective,mode,operation,method,upstream,jurisdictions,status,rule,reason,id,path\r');
    expect(run.last.split(',')[2]).toBe(String(lastSeq));
    expect(run.maxRssKib).toBeLessThan(LIMIT_KIB);
  });

  it('report aggregates the period and verifies the chain in constant memory', async () => {
    const run = await runAudit(['report', file, '--since', '2026-01-01', '--until', '2026-01-02', '--format', 'json'], true);
    console.log(`[audit-scale] report: ${run.ms} ms, peak RSS ${(run.maxRssKib / 1024).toFixed(1)} MiB`);
    expect(run.code).toBe(0);
    const report = JSON.parse(run.stdout) as AuditReport;
    // Record seq is at 2026-01-01 + seq × 100 ms: the first day holds seq 1..863999.
    const inDay = 863_999;
    let blockedNonUs = 0;
    let monitorBlocks = 0;
    let blocks = 0;
    for (let seq = 1; seq <= inDay; seq++) {
      if (seq % 5 === 0 && seq % 3 !== 0) {
        blocks++;
        if (seq % 7 === 0) monitorBlocks++;
        else blockedNonUs++;
      }
    }
    expect(report.records_read).toBe(COUNT);
    expect(report.records).toBe(inDay);
    expect(report.by_decision).toEqual({ allow: inDay - blocks, block: blocks });
    expect(report.blocked_non_us_writes.total).toBe(blockedNonUs);
    expect(report.monitor_would_block.total).toBe(monitorBlocks);
    expect(report.policies.map((p) => p.hash[0])).toEqual(['a', 'b', 'c']);
    expect(report.policies[0]!.first_seen).toBe('2026-01-01T00:00:00.100Z');
    expect(report.verification).toMatchObject({ ok: true, records: COUNT, errors: 0 });
    expect(report.timeline.buckets.reduce((n, b) => n + b.allow + b.block, 0)).toBe(inDay);
    expect(run.maxRssKib).toBeLessThan(LIMIT_KIB);
  });
});
