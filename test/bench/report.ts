import type { ProfileSummary } from './profile.js';
import type { Scenario, TargetKind } from './scenarios.js';

/** One measured run of one scenario against one target. */
export interface Sample {
  round: number;
  rps: number;
  /** Request body MB/s (10^6 bytes), for uploads. */
  mbps: number | null;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  /** Wall time (1 GiB uploads). */
  seconds: number | null;
  /** Target's RSS before the run and its peak during it (bytes; null where /proc is unreadable). */
  rssBefore: number | null;
  peakRss: number | null;
  errors: number;
  unexpected: number;
  /** CPU cores' worth of other work on the machine during the run (null where /proc is unreadable). */
  foreignCores: number | null;
  /** CPU cores the load generator used (the undici client only; else null). */
  loadCpu?: number | null;
}

export interface Series {
  scenario: string;
  target: string;
  samples: Sample[];
}

export interface TargetSummary {
  name: string;
  kind: TargetKind;
  detail: string;
}

/** Medians over rounds; ratios are medians of per-round (paired) ratios. */
export interface Row {
  scenario: string;
  title: string;
  kind: Scenario['kind'];
  target: string;
  targetKind: TargetKind;
  rounds: number;
  rps: number;
  mbps: number | null;
  p50Ms: number;
  p99Ms: number;
  seconds: number | null;
  rssBeforeMiB: number | null;
  peakRssMiB: number | null;
  /** Median of (peak − before) per round. */
  rssGrowthMiB: number | null;
  vsBare: number | null;
  vsDirect: number | null;
  vsNginx: number | null;
  /** Intercepted-HTTPS comparison: paired ratios to the plain setting and to nginx-tls (absent in older results). */
  vsPlain?: number | null;
  vsNginxTls?: number | null;
  /** Median CPU cores of the undici client. */
  loadCpu?: number | null;
  /** Light load: median of per-round p50/p99 differences to the bare proxy, ms. */
  addedP50Ms: number | null;
  addedP99Ms: number | null;
  errors: number;
  unexpected: number;
  /** Median other work during the runs, CPU cores. */
  foreignCores: number | null;
}

export interface MicroResult {
  name: string;
  nsPerOp: number;
  meanNsPerOp: number;
  rme: number;
  targetNs?: number;
}

export interface LogResult {
  fsync: boolean;
  /** The group-commit window used (the config default); absent in older results. */
  flushMs?: number | null;
  records: number;
  seconds: number;
  perSecond: number;
  concurrency: number;
}

export interface Goal {
  goal: string;
  /** Per residency-proxy setting (or 'all' for micro/log goals): the measured value and verdict. */
  cells: Record<string, { value: string; met: boolean | null; by: string }>;
}

export interface Machine {
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  node: string;
  kernel: string;
  loadTool: string;
  nginx: string | null;
  pinning: string;
  tmpFs: string;
}

export interface BenchResult {
  date: string;
  command: string;
  machine: Machine;
  options: { rounds: number; durationSec: number; warmupSec: number; bigRounds: number; quick: boolean; big: boolean };
  targets: TargetSummary[];
  rows: Row[];
  series: Series[];
  micro: MicroResult[];
  decisionLog: LogResult[];
  goals: Goal[];
  profile: { file: string; setting: string; scenario: string; summary: ProfileSummary } | null;
  /** The first request through a fresh tunnel to hosts never seen before (absent in older results). */
  firstRequest?: FirstRequestResult | null;
  notes: string[];
}

/** Milliseconds: median and slowest over the hosts. */
export interface Spread {
  medianMs: number;
  maxMs: number;
}

export interface FirstRequestResult {
  target: string;
  hosts: number;
  /** A fresh tunnel's first request to a new host: CONNECT, a certificate minted, the name resolved, a new upstream TLS connection. */
  newHost: Spread;
  /** A fresh tunnel's first request to a known host: CONNECT, the cached certificate, pooled upstream connections. */
  newTunnel: Spread;
  /** The second request on the new host's tunnel. */
  warm: Spread;
  errors: number;
  unexpected: number;
}

export function summariseFirst(target: string, t: { newHostMs: number[]; newTunnelMs: number[]; warmMs: number[]; errors: number; unexpected: number }): FirstRequestResult {
  const spread = (xs: number[]): Spread => ({ medianMs: median(xs), maxMs: xs.length === 0 ? NaN : Math.max(...xs) });
  return { target, hosts: t.newHostMs.length, newHost: spread(t.newHostMs), newTunnel: spread(t.newTunnelMs), warm: spread(t.warmMs), errors: t.errors, unexpected: t.unexpected };
}

export const MIB = 1024 * 1024;

export function median(values: readonly number[]): number {
  const xs = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (xs.length === 0) return NaN;
  const mid = Math.floor(xs.length / 2);
  return xs.length % 2 === 1 ? xs[mid]! : (xs[mid - 1]! + xs[mid]!) / 2;
}

/** Median over rounds of a(r)/b(r): drift between rounds cancels out. */
function pairedRatio(a: readonly Sample[], b: readonly Sample[], metric: (s: Sample) => number | null): number | null {
  const byRound = new Map(b.map((s) => [s.round, s]));
  const ratios: number[] = [];
  for (const s of a) {
    const other = byRound.get(s.round);
    const x = metric(s);
    const y = other ? metric(other) : null;
    if (x !== null && y !== null && y > 0) ratios.push(x / y);
  }
  return ratios.length === 0 ? null : median(ratios);
}

function pairedDiff(a: readonly Sample[], b: readonly Sample[], metric: (s: Sample) => number): number | null {
  const byRound = new Map(b.map((s) => [s.round, s]));
  const diffs = a.filter((s) => byRound.has(s.round)).map((s) => metric(s) - metric(byRound.get(s.round)!));
  return diffs.length === 0 ? null : median(diffs);
}

const mib = (v: number | null) => (v === null ? null : v / MIB);
const medianOrNull = (values: (number | null)[]): number | null => {
  const xs = values.filter((v): v is number => v !== null);
  return xs.length === 0 ? null : median(xs);
};

export function summarise(series: readonly Series[], scenarios: readonly Scenario[], targets: readonly TargetSummary[]): Row[] {
  const rows: Row[] = [];
  // The series of this scenario run by a target of this kind (the https scenarios run one residency setting: the plain peer).
  const find = (scenario: string, kind: TargetKind) => series.find((s) => s.scenario === scenario && targets.some((t) => t.name === s.target && t.kind === kind));
  for (const scenario of scenarios) {
    for (const target of targets) {
      const s = series.find((x) => x.scenario === scenario.name && x.target === target.name);
      if (!s || s.samples.length === 0) continue;
      // Throughput ratios on the scenario's own measure: body MB/s for uploads, else req/s (same thing for a fixed body).
      const metric = (x: Sample) => (scenario.kind === 'big' ? x.mbps : x.rps);
      const ratio = (kind: TargetKind) => {
        const other = find(scenario.name, kind);
        return other && other.target !== target.name ? pairedRatio(s.samples, other.samples, metric) : null;
      };
      const https = scenario.kind === 'https';
      const bare = find(scenario.name, 'bare');
      const light = scenario.kind === 'light' && bare && bare.target !== target.name;
      rows.push({
        scenario: scenario.name,
        title: scenario.title,
        kind: scenario.kind,
        target: target.name,
        targetKind: target.kind,
        rounds: s.samples.length,
        rps: median(s.samples.map((x) => x.rps)),
        mbps: medianOrNull(s.samples.map((x) => x.mbps)),
        p50Ms: median(s.samples.map((x) => x.p50Ms)),
        p99Ms: median(s.samples.map((x) => x.p99Ms)),
        seconds: medianOrNull(s.samples.map((x) => x.seconds)),
        rssBeforeMiB: mib(medianOrNull(s.samples.map((x) => x.rssBefore))),
        peakRssMiB: mib(medianOrNull(s.samples.map((x) => x.peakRss))),
        rssGrowthMiB: mib(medianOrNull(s.samples.map((x) => (x.peakRss !== null && x.rssBefore !== null ? x.peakRss - x.rssBefore : null)))),
        vsBare: ratio('bare'),
        vsDirect: ratio('direct'),
        vsNginx: ratio('nginx'),
        vsPlain: https ? ratio('residency') : null,
        vsNginxTls: https ? ratio('nginx-tls') : null,
        loadCpu: medianOrNull(s.samples.map((x) => x.loadCpu ?? null)),
        addedP50Ms: light ? pairedDiff(s.samples, bare.samples, (x) => x.p50Ms) : null,
        addedP99Ms: light ? pairedDiff(s.samples, bare.samples, (x) => x.p99Ms) : null,
        errors: s.samples.reduce((a, x) => a + x.errors, 0),
        unexpected: s.samples.reduce((a, x) => a + x.unexpected, 0),
        foreignCores: medianOrNull(s.samples.map((x) => x.foreignCores)),
      });
    }
  }
  return rows;
}

// ---------------------------------------------------------------------------
// goals (issue #8)

const pctBelow = (value: number, target: number) => `${(((target - value) / target) * 100).toFixed(0)}%`;
const fmtRatio = (v: number) => `${v.toFixed(2)}×`;

function atLeast(value: number | null, target: number, fmt: (v: number) => string, unit = ''): { value: string; met: boolean | null; by: string } {
  if (value === null || !Number.isFinite(value)) return { value: 'n/a', met: null, by: '' };
  const met = value >= target;
  return { value: fmt(value), met, by: met ? '' : `${pctBelow(value, target)} short${unit}` };
}

function atMost(value: number | null, target: number, fmt: (v: number) => string, over: (d: number) => string): { value: string; met: boolean | null; by: string } {
  if (value === null || !Number.isFinite(value)) return { value: 'n/a', met: null, by: '' };
  const met = value <= target;
  return { value: fmt(value), met, by: met ? '' : `${over(value - target)} over` };
}

export function evaluateGoals(rows: readonly Row[], series: readonly Series[], micro: readonly MicroResult[], logs: readonly LogResult[], settings: readonly string[]): Goal[] {
  const row = (scenario: string, target: string) => rows.find((r) => r.scenario === scenario && r.target === target) ?? null;
  const goals: Goal[] = [];
  const perSetting = (goal: string, cell: (setting: string) => { value: string; met: boolean | null; by: string } | null) => {
    const cells: Goal['cells'] = {};
    for (const s of settings) {
      const c = cell(s);
      if (c) cells[s] = c;
    }
    if (Object.keys(cells).length > 0) goals.push({ goal, cells });
  };
  const ratioGoal = (scenario: string, vs: 'vsBare' | 'vsNginx', target: number, label: string) =>
    perSetting(label, (s) => {
      const r = row(scenario, s);
      return r && r[vs] !== null ? atLeast(r[vs], target, fmtRatio) : null;
    });

  ratioGoal('get-small', 'vsBare', 1.0, 'small GET ≥ 1.0× bare @fastify/http-proxy req/s');
  ratioGoal('get-small', 'vsNginx', 0.35, 'small GET ≥ 0.35× nginx req/s');
  ratioGoal('put-16k', 'vsBare', 1.0, '16 KiB PUT ≥ 1.0× bare req/s');
  ratioGoal('put-16k', 'vsNginx', 0.35, '16 KiB PUT ≥ 0.35× nginx req/s');
  perSetting('refused PUT ≥ 2× allowed small PUT req/s (same setting)', (s) => {
    const refused = series.find((x) => x.scenario === 'put-refused' && x.target === s);
    const allowed = series.find((x) => x.scenario === 'put-small' && x.target === s);
    if (!refused || !allowed) return null;
    return atLeast(pairedRatio(refused.samples, allowed.samples, (x) => x.rps), 2, fmtRatio);
  });
  perSetting('light load: added p50 ≤ +0.2 ms vs bare', (s) => {
    const r = row('light', s);
    return r && r.addedP50Ms !== null ? atMost(r.addedP50Ms, 0.2, (v) => `${v >= 0 ? '+' : ''}${v.toFixed(3)} ms`, (d) => `${d.toFixed(3)} ms`) : null;
  });
  perSetting('light load: added p99 ≤ +1 ms vs bare', (s) => {
    const r = row('light', s);
    return r && r.addedP99Ms !== null ? atMost(r.addedP99Ms, 1, (v) => `${v >= 0 ? '+' : ''}${v.toFixed(3)} ms`, (d) => `${d.toFixed(3)} ms`) : null;
  });
  for (const [scenario, label] of [
    ['put-1m', '1 MiB PUT'],
    ['put-1g-length', '1 GiB PUT (Content-Length)'],
    ['put-1g-chunked', '1 GiB PUT (chunked)'],
  ] as const) {
    perSetting(`${label} ≥ 1.0× bare MB/s`, (s) => {
      const r = row(scenario, s);
      return r && r.vsBare !== null ? atLeast(r.vsBare, 1.0, fmtRatio) : null;
    });
    perSetting(`${label} peak RSS ≤ pre-run + 32 MiB`, (s) => {
      const r = row(scenario, s);
      return r && r.rssGrowthMiB !== null ? atMost(r.rssGrowthMiB, 32, (v) => `${v >= 0 ? '+' : ''}${v.toFixed(1)} MiB`, (d) => `${d.toFixed(1)} MiB`) : null;
    });
  }
  const microGoal = (match: RegExp, label: string) => {
    const m = micro.find((x) => match.test(x.name));
    if (!m || m.targetNs === undefined) return;
    const ns = (v: number) => `${Math.round(v).toLocaleString('en-US')} ns`;
    goals.push({ goal: label, cells: { all: atMost(m.nsPerOp, m.targetNs, ns, ns) } });
  };
  microGoal(/^policy decide/, 'micro: policy decide (3 rules + exception) < 1 µs per call');
  microGoal(/^cached network location/, 'micro: network location of a cached address < 2 µs per call');
  microGoal(/^decision record serialise/, 'micro: decision record serialise + SHA-256 < 5 µs per record');
  const durable = logs.find((l) => l.fsync);
  if (durable) {
    goals.push({
      goal: 'decision log ≥ 20,000 records/s with fsync',
      cells: { all: atLeast(durable.perSecond, 20_000, (v) => `${Math.round(v).toLocaleString('en-US')}/s`) },
    });
  }
  return goals;
}

// ---------------------------------------------------------------------------
// rendering

/** Heading of the goal tables ("Targets:" already lists the setups measured). */
export const GOALS_TITLE = 'Performance targets:';

const num = (v: number | null, digits = 0) => (v === null || !Number.isFinite(v) ? '–' : v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }));
const ms = (v: number | null) => (v === null || !Number.isFinite(v) ? '–' : v < 1 ? v.toFixed(3) : v.toFixed(2));
const ratio = (v: number | null) => (v === null ? '–' : `${v.toFixed(2)}×`);
const cores = (v: number | null) => (v === null ? '–' : v.toFixed(2));
const signedMs = (v: number | null) => (v === null ? '–' : `${v >= 0 ? '+' : ''}${v.toFixed(3)}`);

/** Column headers of the main table; the smoke test checks them. */
export const LOAD_COLUMNS = ['scenario', 'target', 'req/s', 'MB/s', 'p50 ms', 'p99 ms', 'peak RSS MiB', '× bare', '× direct', '× nginx', 'errors', 'other CPU'] as const;

function loadCells(r: Row): string[] {
  const errs = r.errors + r.unexpected;
  return [r.title, r.target, num(r.rps), r.mbps === null ? '–' : num(r.mbps, 1), ms(r.p50Ms), ms(r.p99Ms), num(r.peakRssMiB, 1), ratio(r.vsBare), ratio(r.vsDirect), ratio(r.vsNginx), errs === 0 ? '0' : `${r.errors} err, ${r.unexpected} bad status`, cores(r.foreignCores)];
}


const LIGHT_COLUMNS = ['target', 'req/s', 'p50 ms', 'p99 ms', 'added p50 ms vs bare', 'added p99 ms vs bare', 'other CPU'] as const;
const lightCells = (r: Row) => [r.target, num(r.rps), ms(r.p50Ms), ms(r.p99Ms), signedMs(r.addedP50Ms), signedMs(r.addedP99Ms), cores(r.foreignCores)];

/** Columns of the intercepted-HTTPS table; the smoke test checks them. */
export const HTTPS_COLUMNS = ['scenario', 'target', 'req/s', 'p50 ms', 'p99 ms', '× plain', '× nginx-tls', 'client CPU', 'errors', 'other CPU'] as const;
const httpsCells = (r: Row) => {
  const errs = r.errors + r.unexpected;
  return [r.title, r.target, num(r.rps), ms(r.p50Ms), ms(r.p99Ms), ratio(r.vsPlain ?? null), ratio(r.vsNginxTls ?? null), cores(r.loadCpu ?? null), errs === 0 ? '0' : `${r.errors} err, ${r.unexpected} bad status`, cores(r.foreignCores)];
};

function httpsTitle(rows: readonly Row[]): string {
  const plain = rows.find((r) => r.targetKind === 'residency')?.target ?? 'the plain setting';
  return (
    `Intercepted HTTPS: one closed-loop undici client drives all three (same connections and duration as the other load): ${plain} over plain HTTP; ` +
    `intercept-https, the same policy through CONNECT tunnels (TLS to the proxy under a minted certificate, TLS from the proxy to a TLS upstream); ` +
    `nginx-tls, nginx terminating TLS the same way in front of the same TLS upstream. Connections and tunnels are open before the clock starts. ` +
    `"client CPU": the client's CPU cores (near 1.00: the client, not the target, set the pace).`
  );
}

const FIRST_COLUMNS = ['request', 'median ms', 'slowest ms'] as const;
function firstRows(f: FirstRequestResult): string[][] {
  const row = (label: string, x: Spread) => [label, ms(x.medianMs), ms(x.maxMs)];
  return [
    row('first request to a new host on a new tunnel: CONNECT, certificate minted, name resolved, new TLS connection to the upstream', f.newHost),
    row('first request to a known host on a new tunnel: CONNECT, cached certificate, pooled upstream connection', f.newTunnel),
    row('second request on the new host\'s tunnel (warm)', f.warm),
  ];
}
const firstTitle = (f: FirstRequestResult) =>
  `First request to a new host (${f.target}: ${f.hosts} host names never seen before, one at a time, after the load rounds; time at the client)${f.errors + f.unexpected > 0 ? ` [${f.errors} errors, ${f.unexpected} unexpected status]` : ''}:`;

const BIG_COLUMNS = ['scenario', 'target', 'wall s', 'MB/s', 'RSS before MiB', 'peak RSS MiB', 'growth MiB', '× bare', '× direct', '× nginx', 'other CPU'] as const;
const bigCells = (r: Row) => [r.title, r.target, num(r.seconds, 2), num(r.mbps, 1), num(r.rssBeforeMiB, 1), num(r.peakRssMiB, 1), num(r.rssGrowthMiB, 1), ratio(r.vsBare), ratio(r.vsDirect), ratio(r.vsNginx), cores(r.foreignCores)];

function markdownTable(header: readonly string[], body: string[][]): string {
  const esc = (s: string) => s.replace(/\|/g, '\\|');
  return [`| ${header.map(esc).join(' | ')} |`, `| ${header.map(() => '---').join(' | ')} |`, ...body.map((cells) => `| ${cells.map(esc).join(' | ')} |`)].join('\n');
}

function textTable(header: readonly string[], body: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

function verdict(cell: Goal['cells'][string]): string {
  if (cell.met === null) return 'not measured';
  return cell.met ? 'met' : `MISSED (${cell.by})`;
}

function goalCells(goal: Goal, columns: readonly string[]): string[] {
  return [
    goal.goal,
    ...columns.map((c) => {
      const cell = goal.cells[c];
      if (!cell) return '';
      return cell.met === null ? cell.value : `${cell.value} — ${verdict(cell)}`;
    }),
  ];
}

interface Rendered {
  load: [readonly string[], string[][]];
  light: [readonly string[], string[][]];
  big: [readonly string[], string[][]];
  https: [readonly string[], string[][]];
  first: [readonly string[], string[][]];
  micro: [readonly string[], string[][]];
  log: [readonly string[], string[][]];
  goals: [readonly string[], string[][]];
  goalsSingle: [readonly string[], string[][]];
  profileCategories: [readonly string[], string[][]];
  profileTop: [readonly string[], string[][]];
  profileOurs: [readonly string[], string[][]];
}

function tables(result: BenchResult): Rendered {
  const settings = result.targets.filter((t) => t.kind === 'residency').map((t) => t.name);
  const goalColumns = settings.length > 0 ? settings : ['all'];
  const p = result.profile?.summary;
  return {
    load: [LOAD_COLUMNS, result.rows.filter((r) => r.kind === 'load').map(loadCells)],
    light: [LIGHT_COLUMNS, result.rows.filter((r) => r.kind === 'light').map(lightCells)],
    big: [BIG_COLUMNS, result.rows.filter((r) => r.kind === 'big').map(bigCells)],
    https: [HTTPS_COLUMNS, result.rows.filter((r) => r.kind === 'https').map(httpsCells)],
    first: [FIRST_COLUMNS, result.firstRequest ? firstRows(result.firstRequest) : []],
    micro: [['operation', 'ns/op (median)', 'ns/op (mean)', 'budget'], result.micro.map((m) => [m.name, num(m.nsPerOp, 0), num(m.meanNsPerOp, 0), m.targetNs === undefined ? '' : `< ${num(m.targetNs)} ns`])],
    log: [
      ['decision log', 'writers', 'records', 'records/s'],
      result.decisionLog.map((l) => [
        `${l.fsync ? 'fdatasync per group commit' : 'no fsync'}${l.flushMs === undefined || l.flushMs === null ? '' : `, flush_ms ${l.flushMs}`}`,
        String(l.concurrency),
        num(l.records),
        num(l.perSecond),
      ]),
    ],
    goals: [['goal', ...goalColumns], result.goals.filter((g) => g.cells.all === undefined).map((g) => goalCells(g, goalColumns))],
    // Micro-benchmark and decision-log goals have one value, not one per setting.
    goalsSingle: [['goal', 'measured', 'verdict'], result.goals.filter((g) => g.cells.all !== undefined).map((g) => [g.goal, g.cells.all!.value, verdict(g.cells.all!)])],
    profileCategories: [['area (self time)', 'ms', '% of busy'], (p?.categories ?? []).map((c) => [c.category, num(c.ms), `${c.pct.toFixed(1)}%`])],
    profileTop: [['function (self time)', 'where', 'area', '% of busy'], (p?.topSelf ?? []).map((f) => [f.fn, f.where, f.category, `${f.pct.toFixed(1)}%`])],
    profileOurs: [['residency-proxy function (inclusive)', 'where', '% of busy'], (p?.topInclusiveOurs ?? []).map((f) => [f.fn, f.where, `${f.pct.toFixed(1)}%`])],
  };
}

function profileWindow(p: ProfileSummary): string {
  const busy = p.totalMs > 0 ? (100 * p.busyMs) / p.totalMs : 0;
  const span = p.window ? `${((p.window.toMs - p.window.fromMs) / 1000).toFixed(1)} s of steady load after warm-up` : 'whole process lifetime';
  return `${span}, proxy alone on its CPU, main thread busy ${busy.toFixed(0)}%`;
}

function header(result: BenchResult): string[] {
  const m = result.machine;
  const o = result.options;
  return [
    `Machine: ${m.cores} cores, ${m.cpuModel}, ${m.memoryGiB.toFixed(0)} GiB, Linux ${m.kernel}, Node ${m.node}; load: ${m.loadTool}; ${m.nginx ?? 'nginx: not installed'}`,
    `CPU split: ${m.pinning}. Decision log scratch filesystem: ${m.tmpFs}. "other CPU": cores' worth of work by other processes (and steal) during a run, median.`,
    `Run: ${result.date}, \`${result.command}\`: ${o.rounds} round(s) × ${o.durationSec} s per target and scenario after a ${o.warmupSec} s warm-up each; targets in rotated order every round; medians of rounds, ratios are medians of per-round ratios.`,
  ];
}

export function renderText(result: BenchResult): string {
  const t = tables(result);
  const out = [...header(result)];
  if (t.load[1].length > 0) out.push('', textTable(...t.load));
  if (t.light[1].length > 0) out.push('', 'Light load (one connection):', textTable(...t.light));
  if (t.big[1].length > 0) out.push('', 'Streaming 1 GiB uploads:', textTable(...t.big));
  if (t.https[1].length > 0) out.push('', httpsTitle(result.rows.filter((r) => r.kind === 'https')), textTable(...t.https));
  if (result.firstRequest) out.push('', firstTitle(result.firstRequest), textTable(...t.first));
  if (t.micro[1].length > 0) out.push('', textTable(...t.micro));
  if (t.log[1].length > 0) out.push('', textTable(...t.log));
  if (t.goals[1].length > 0) out.push('', GOALS_TITLE, textTable(...t.goals));
  if (t.goalsSingle[1].length > 0) out.push('', textTable(...t.goalsSingle));
  if (result.profile) {
    out.push('', `CPU profile (${result.profile.setting}, ${result.profile.scenario}, ${profileWindow(result.profile.summary)}): ${result.profile.file}`, textTable(...t.profileCategories), '', textTable(...t.profileTop), '', textTable(...t.profileOurs));
  }
  if (result.notes.length > 0) out.push('', 'Notes:', ...result.notes.map((n) => `- ${n}`));
  return out.join('\n');
}

export function renderMarkdown(result: BenchResult): string {
  const t = tables(result);
  const out = [...header(result), '', 'Targets:', '', ...result.targets.map((x) => `- **${x.name}**: ${x.detail}`)];
  if (t.load[1].length > 0) out.push('', markdownTable(...t.load));
  if (t.light[1].length > 0) out.push('', 'Light load (one connection):', '', markdownTable(...t.light));
  if (t.big[1].length > 0) out.push('', 'Streaming 1 GiB uploads (generated body, never held in memory):', '', markdownTable(...t.big));
  if (t.https[1].length > 0) out.push('', httpsTitle(result.rows.filter((r) => r.kind === 'https')), '', markdownTable(...t.https));
  if (result.firstRequest) out.push('', firstTitle(result.firstRequest), '', markdownTable(...t.first));
  if (t.micro[1].length > 0) out.push('', 'Micro-benchmarks (tinybench):', '', markdownTable(...t.micro));
  if (t.log[1].length > 0) out.push('', markdownTable(...t.log));
  if (t.goals[1].length > 0) out.push('', GOALS_TITLE, '', markdownTable(...t.goals));
  if (t.goalsSingle[1].length > 0) out.push('', markdownTable(...t.goalsSingle));
  if (result.profile) {
    out.push('', `CPU profile of ${result.profile.setting} under ${result.profile.scenario}, ${profileWindow(result.profile.summary)} (\`${result.profile.file}\`):`, '', markdownTable(...t.profileCategories), '', markdownTable(...t.profileTop), '', markdownTable(...t.profileOurs));
  }
  if (result.notes.length > 0) out.push('', 'Notes:', '', ...result.notes.map((n) => `- ${n}`));
  return `${out.join('\n')}\n`;
}
