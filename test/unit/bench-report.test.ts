import { describe, expect, it } from 'vitest';
import { evaluateGoals, GOALS_TITLE, renderMarkdown, renderText, type BenchResult, type Row } from '../bench/report.js';
import { FEATURES, SETTINGS } from '../bench/settings.js';

// The report is read by people who never saw the tracker: it says what is measured, not which issue asked.
const ISSUE = /issue\s*#?\s*\d|#\d/i;

const row = (over: Partial<Row>): Row => ({
  scenario: 'get-small',
  title: 'small GET',
  kind: 'load',
  target: 'monitor',
  targetKind: 'residency',
  rounds: 1,
  rps: 1000,
  mbps: null,
  p50Ms: 1,
  p99Ms: 2,
  seconds: null,
  rssBeforeMiB: null,
  peakRssMiB: null,
  rssGrowthMiB: null,
  vsBare: 1.1,
  vsDirect: 0.5,
  vsNginx: 0.4,
  addedP50Ms: null,
  addedP99Ms: null,
  errors: 0,
  unexpected: 0,
  foreignCores: null,
  ...over,
});

function result(): BenchResult {
  const rows = [row({}), row({ scenario: 'light', title: 'light load', kind: 'light', addedP50Ms: 0.1, addedP99Ms: 0.5 })];
  const micro = [
    { name: 'policy decide (3 rules + exception)', nsPerOp: 300, meanNsPerOp: 310, rme: 1, targetNs: 1_000 },
    { name: 'cached network location (NetworkLocator.locate, warm)', nsPerOp: 40, meanNsPerOp: 41, rme: 1, targetNs: 2_000 },
    { name: 'decision record serialise + SHA-256 (sealEntry)', nsPerOp: 9_000, meanNsPerOp: 9_100, rme: 1, targetNs: 5_000 },
  ];
  const decisionLog = [{ fsync: true, flushMs: 0, records: 1000, seconds: 0.05, perSecond: 20_000, concurrency: 256 }];
  return {
    date: '2026-12-07T00:00:00.000Z',
    command: 'npm run bench',
    machine: { cpuModel: 'cpu', cores: 2, memoryGiB: 4, node: 'v20', kernel: '6', loadTool: 'autocannon', nginx: null, pinning: 'none', tmpFs: 'tmpfs' },
    options: { rounds: 1, durationSec: 1, warmupSec: 1, bigRounds: 1, quick: true, big: false },
    targets: SETTINGS.map((s) => ({ name: s.name, kind: 'residency' as const, detail: s.summary })),
    rows,
    series: [],
    micro,
    decisionLog,
    goals: evaluateGoals(rows, [], micro, decisionLog, ['monitor']),
    profile: null,
    notes: [],
  };
}

describe('benchmark report', () => {
  it('heads the goals with what they are, and names no issue number', () => {
    for (const text of [renderText(result()), renderMarkdown(result())]) {
      expect(text).toContain(GOALS_TITLE);
      expect(text).toContain('micro: policy decide (3 rules + exception) < 1 µs per call');
      expect(text).toContain('small GET ≥ 1.0× bare @fastify/http-proxy req/s');
      expect(text).not.toMatch(ISSUE);
    }
  });

  it('describes every setting and feature without an issue number', () => {
    for (const { summary } of [...SETTINGS, ...Object.values(FEATURES)]) expect(summary).not.toMatch(ISSUE);
  });
});
