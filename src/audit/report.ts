import type { KeyObject } from 'node:crypto';
import { DEFAULT_RULE, type Reason } from '../policy/engine.js';
import { expandLogArgs } from './catalog.js';
import { readFirstLine, readTail } from './lines.js';
import { plural } from '../text.js';
import { jurisdictionsOf } from './query.js';
import { isDecision, type DecisionRecord } from './record.js';
import { verifyLogs, type Anchor, type Finding, type VerifyResult } from './verify.js';

export interface ReportOptions {
  /** Inclusive, ISO UTC. Absent: from the log's first record. */
  since?: string | undefined;
  /** Exclusive, ISO UTC. Absent: to the log's last record (included). */
  until?: string | undefined;
  publicKey?: KeyObject | null;
  requireSignature?: boolean;
  /** Where retained history starts (see verify's --anchor). */
  anchors?: readonly Anchor[];
  now?: () => number;
}

interface Seen {
  first_seen: string;
  last_seen: string;
  count: number;
}

export interface TimelineBucket {
  start: string;
  allow: number;
  block: number;
}

/** What became of decisions: allowed, refused (blocked in enforce mode), or would-block (blocked in monitor or warn mode, forwarded anyway). */
export interface Outcomes {
  allowed: number;
  refused: number;
  would_block: number;
}

export interface AuditReport {
  generated_at: string;
  /** Decisions counted have since <= ts < until; a bound taken from the log (see `bounds`) includes every record on its side. */
  since: string;
  until: string;
  /** Where each bound came from: the command line, or the log's first / last record (then `until` is that record's time, included). */
  bounds: { since: 'given' | 'first_record'; until: 'given' | 'last_record' };
  files: number;
  /** Records read (all files), and the decisions among them inside the period. */
  records_read: number;
  records: number;
  by_decision: Record<string, number>;
  by_effective: Record<string, number>;
  by_mode: Record<string, number>;
  /** Decisions per jurisdiction; a decision whose target was placed in several counts in each. */
  by_jurisdiction: Record<string, number>;
  /** The same, split into reads and writes and by what became of them. */
  jurisdictions: Record<string, { read: Outcomes; write: Outcomes }>;
  by_upstream: Record<string, number>;
  blocked_non_us_writes: { total: number; by_jurisdiction: Record<string, number>; by_upstream: Record<string, number> };
  monitor_would_block: { total: number; by_rule: Record<string, number>; by_jurisdiction: Record<string, number> };
  /** `rule` as records hold it: null for a read no rule matched, `default` for the catch-all that decides writes no rule matched. */
  top_reasons: { rule: string | null; operation: string; reason: string; count: number }[];
  policies: ({ hash: string } & Seen)[];
  /** `outside`: decisions counted whose time falls outside the chart (records out of time order at an edge taken from the log). */
  timeline: { bucket_seconds: number; buckets: TimelineBucket[]; outside: number };
  verification: {
    ok: boolean;
    records: number;
    files: number;
    sealed: number;
    signatures: Record<string, number>;
    first_error: Finding | null;
    errors: number;
    warnings: number;
  };
}

const BUCKET_CHOICES_S = [60, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400, 30 * 86_400];
const MAX_BUCKETS = 60;

/** The key a read no rule matched is counted under where keys are rule names (records hold `rule: null`). */
const NO_RULE = '(no rule)';

/** How a rule reads in the report: the records' null and `default` are not rule names an auditor would find in the policy. */
function ruleLabel(rule: string | null): string {
  if (rule === null || rule === NO_RULE) return 'none matched (a read: allowed)';
  if (rule === DEFAULT_RULE) return 'default (catch-all for writes no rule matched)';
  return rule;
}

function bump(map: Record<string, number>, key: string, by = 1): void {
  map[key] = (map[key] ?? 0) + by;
}

/**
 * The earliest and latest record times in the files, from each file's first
 * and last line only (no full read): where the whole log's period starts and
 * ends when no bound is given.
 */
function logTimeRange(args: readonly string[]): { first: string | null; last: string | null } {
  let first: string | null = null;
  let last: string | null = null;
  const tsOf = (line: string | null | undefined): string | null => {
    const ts = (JSON.parse(line ?? 'null') as { ts?: unknown } | null)?.ts;
    return typeof ts === 'string' && !Number.isNaN(Date.parse(ts)) ? ts : null;
  };
  for (const file of expandLogArgs(args).files) {
    try {
      const head = tsOf(readFirstLine(file)?.text);
      const tail = tsOf(readTail(file).lastLine) ?? head;
      if (head !== null && (first === null || head < first)) first = head;
      if (tail !== null && (last === null || tail > last)) last = tail;
    } catch {
      // Unreadable, or not a record: the verification reports it.
    }
  }
  return { first, last };
}

/**
 * One streaming pass over the files: the chain is verified and the decisions
 * inside the period are aggregated. Memory depends on the number of distinct
 * upstreams, jurisdictions, rules and policies, not on the records.
 */
export async function buildReport(args: readonly string[], options: ReportOptions): Promise<AuditReport> {
  const now = options.now ?? Date.now;
  const generatedAt = new Date(now()).toISOString();
  const log = options.since === undefined || options.until === undefined ? logTimeRange(args) : { first: null, last: null };
  let until = options.until ?? log.last ?? generatedAt;
  let since = options.since ?? log.first ?? until;
  // A bound given beyond the other end of the log: the period is empty, not inverted.
  if (options.until === undefined && until < since) until = since;
  if (options.since === undefined && since > until) since = until;
  const inPeriod = (ts: string) => (options.since === undefined || ts >= since) && (options.until === undefined || ts < until);

  const span = Math.max(1, (Date.parse(until) - Date.parse(since)) / 1000);
  const bucketSeconds = BUCKET_CHOICES_S.find((s) => span / s <= MAX_BUCKETS) ?? Math.ceil(span / MAX_BUCKETS);
  const bucketMs = bucketSeconds * 1000;
  // An edge taken from the log is widened to whole buckets, so records a little out of time order there are still drawn.
  const chartStart = options.since === undefined ? Math.floor(Date.parse(since) / bucketMs) * bucketMs : Date.parse(since);
  const chartEnd = options.until === undefined ? Math.ceil((Date.parse(until) + 1) / bucketMs) * bucketMs : Date.parse(until);
  const bucketCount = Math.max(1, Math.ceil((chartEnd - chartStart) / bucketMs));
  const allow = new Array<number>(bucketCount).fill(0);
  const block = new Array<number>(bucketCount).fill(0);

  const r: AuditReport = {
    generated_at: generatedAt,
    since,
    until,
    bounds: { since: options.since === undefined ? 'first_record' : 'given', until: options.until === undefined ? 'last_record' : 'given' },
    files: 0,
    records_read: 0,
    records: 0,
    by_decision: {},
    by_effective: {},
    by_mode: {},
    by_jurisdiction: {},
    jurisdictions: {},
    by_upstream: {},
    blocked_non_us_writes: { total: 0, by_jurisdiction: {}, by_upstream: {} },
    monitor_would_block: { total: 0, by_rule: {}, by_jurisdiction: {} },
    top_reasons: [],
    policies: [],
    timeline: { bucket_seconds: bucketSeconds, buckets: [], outside: 0 },
    verification: { ok: false, records: 0, files: 0, sealed: 0, signatures: {}, first_error: null, errors: 0, warnings: 0 },
  };
  const reasons = new Map<string, { rule: string | null; operation: string; reason: string; count: number }>();
  const policies = new Map<string, Seen>();

  const onRecord = (rec: DecisionRecord) => {
    r.records_read++;
    // Fleet events (lockdown set/lift) and write outcomes are chained and verified, not counted as decisions.
    if (!isDecision(rec)) return;
    if (typeof rec.ts !== 'string' || !inPeriod(rec.ts)) return;
    r.records++;
    bump(r.by_decision, String(rec.decision));
    bump(r.by_effective, String(rec.effective));
    bump(r.by_mode, String(rec.mode));
    bump(r.by_upstream, String(rec.upstream));
    const jurisdictions = jurisdictionsOf(rec);
    const outcome: keyof Outcomes = rec.decision !== 'block' ? 'allowed' : rec.effective === 'refused' ? 'refused' : 'would_block';
    for (const j of jurisdictions) {
      bump(r.by_jurisdiction, j);
      const row = (r.jurisdictions[j] ??= { read: { allowed: 0, refused: 0, would_block: 0 }, write: { allowed: 0, refused: 0, would_block: 0 } });
      row[rec.operation === 'read' ? 'read' : 'write'][outcome]++;
    }
    if (rec.operation === 'write' && rec.decision === 'block' && rec.effective === 'refused' && jurisdictions.some((j) => j !== 'US')) {
      r.blocked_non_us_writes.total++;
      for (const j of jurisdictions) if (j !== 'US') bump(r.blocked_non_us_writes.by_jurisdiction, j);
      bump(r.blocked_non_us_writes.by_upstream, String(rec.upstream));
    }
    if (rec.mode === 'monitor' && rec.decision === 'block') {
      r.monitor_would_block.total++;
      bump(r.monitor_would_block.by_rule, rec.rule ?? NO_RULE);
      for (const j of jurisdictions) bump(r.monitor_would_block.by_jurisdiction, j);
    }
    const rule = rec.rule ?? null;
    const reasonKey = JSON.stringify([rule, rec.operation, rec.reason]);
    const tally = reasons.get(reasonKey);
    if (tally) tally.count++;
    else reasons.set(reasonKey, { rule, operation: String(rec.operation), reason: String(rec.reason), count: 1 });
    const seen = policies.get(rec.policy);
    if (seen) {
      if (rec.ts < seen.first_seen) seen.first_seen = rec.ts;
      if (rec.ts > seen.last_seen) seen.last_seen = rec.ts;
      seen.count++;
    } else {
      policies.set(rec.policy, { first_seen: rec.ts, last_seen: rec.ts, count: 1 });
    }
    const index = Math.floor((Date.parse(rec.ts) - chartStart) / bucketMs);
    if (index >= 0 && index < bucketCount) (rec.decision === 'block' ? block : allow)[index]!++;
    else r.timeline.outside++;
  };

  const verification: VerifyResult = await verifyLogs(args, {
    onRecord,
    ...(options.publicKey ? { publicKey: options.publicKey } : {}),
    ...(options.requireSignature ? { requireSignature: true } : {}),
    ...(options.anchors ? { anchors: options.anchors } : {}),
  });
  r.files = verification.files.length;
  r.top_reasons = [...reasons.values()].sort((a, b) => b.count - a.count || ruleLabel(a.rule).localeCompare(ruleLabel(b.rule))).slice(0, 10);
  r.policies = [...policies.entries()].map(([hash, seen]) => ({ hash, ...seen })).sort((a, b) => a.first_seen.localeCompare(b.first_seen));
  r.timeline.buckets = allow.map((a, i) => ({ start: new Date(chartStart + i * bucketMs).toISOString(), allow: a, block: block[i]! }));
  const signatures: Record<string, number> = {};
  for (const f of verification.files) if (f.signature) bump(signatures, f.signature);
  r.verification = {
    ok: verification.ok,
    records: verification.records,
    files: verification.files.length,
    sealed: verification.files.filter((f) => f.sealed).length,
    signatures,
    first_error: verification.firstError,
    errors: verification.findings.filter((f) => f.severity === 'error').length,
    warnings: verification.findings.filter((f) => f.severity === 'warning').length,
  };
  return r;
}

// ---------------------------------------------------------------------------
// rendering: one document model, written out as Markdown or HTML

function jurisdictionLabel(j: string): string {
  return j === 'unknown' ? 'unknown (not placed)' : j;
}

const REASONS: Record<Reason, string> = {
  jurisdiction_allowed: 'placed only in allowed jurisdictions',
  jurisdiction_not_allowed: 'placed in a jurisdiction the rule does not allow',
  unknown_location: 'location unknown: nothing placed the target',
  location_conflict: 'placed both inside and outside the allowed jurisdictions',
  read_allowed: 'a read no rule covers: allowed',
  exception_allowed: 'allowed by a time-limited exception',
  exception_blocked: 'blocked by a time-limited exception',
  tunnel_not_routed: 'a tunnel (CONNECT) to a host no upstream serves: refused',
};

/** "2026-01-01 00:00:00 UTC": the records' ISO times, easier on the eye. */
function readableTime(iso: string): string {
  return iso.replace('T', ' ').replace(/(\.000)?Z$/, ' UTC');
}

/** A number of seconds in the largest unit that divides it: "5 minutes", "1 day". */
function duration(seconds: number): string {
  const units: [number, string][] = [
    [86_400, 'day'],
    [3600, 'hour'],
    [60, 'minute'],
    [1, 'second'],
  ];
  const [size, unit] = units.find(([s]) => seconds % s === 0)!;
  return plural(seconds / size, unit);
}

interface Table {
  caption?: string;
  headers: string[];
  rows: (string | number)[][];
}

interface Section {
  title: string;
  /** What the section counts, for a reader without the README. */
  text: string;
  tables: Table[];
  /** Said instead of the tables when they have no rows. */
  empty: string;
}

function sorted(map: Record<string, number>, label: (key: string) => string = (k) => k): [string, number][] {
  return Object.entries(map)
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .map(([k, n]) => [label(k), n]);
}

function periodText(r: AuditReport): string {
  const from = r.bounds.since === 'given' ? readableTime(r.since) : `the first record (${readableTime(r.since)})`;
  const to = r.bounds.until === 'given' ? `${readableTime(r.until)} (excluded)` : `the last record (${readableTime(r.until)}, included)`;
  const whole = r.bounds.since !== 'given' && r.bounds.until !== 'given' ? 'the whole log, ' : '';
  return `Period: ${whole}from ${from} to ${to}. Generated ${readableTime(r.generated_at)}.`;
}

function verificationLine(v: AuditReport['verification']): string {
  const sig = Object.entries(v.signatures)
    .map(([k, n]) => `${n} ${k}`)
    .join(', ');
  const head = v.ok ? 'INTACT' : 'BROKEN';
  const where = v.first_error
    ? ` First broken: ${v.first_error.file}${v.first_error.line !== undefined ? ` line ${v.first_error.line}` : ''}${v.first_error.seq !== undefined ? ` seq ${v.first_error.seq}` : ''}: ${v.first_error.message}.`
    : '';
  return `${head}: ${plural(v.records, 'record')} in ${plural(v.files, 'file')} (${v.sealed} sealed${sig ? `; digests: ${sig}` : ''}); ${plural(v.errors, 'error')}, ${plural(v.warnings, 'warning')}.${where}`;
}

function countsText(r: AuditReport): string {
  return `Decisions in the period: ${r.records} (of ${plural(r.records_read, 'record')} read from ${plural(r.files, 'file')}; write outcomes and fleet events are verified, not counted as decisions).`;
}

function sections(r: AuditReport): Section[] {
  const outcomes = (o: Outcomes) => [o.allowed, o.refused, o.would_block];
  return [
    {
      title: 'Decisions',
      text: 'What the policy decided (allow or block), and what the proxy did: a block is refused in enforce mode, and forwarded anyway in monitor and warn mode.',
      tables: [
        { caption: 'By decision', headers: ['decision', 'decisions'], rows: sorted(r.by_decision) },
        { caption: 'By what the proxy did', headers: ['request was', 'decisions'], rows: sorted(r.by_effective) },
      ],
      empty: 'No decisions in this period.',
    },
    {
      title: 'Modes',
      text: 'The mode of the rule that decided: enforce refuses what it blocks; monitor forwards it and records it; warn forwards it with a warning to the client.',
      tables: [{ headers: ['mode', 'decisions'], rows: sorted(r.by_mode) }],
      empty: 'No decisions in this period.',
    },
    {
      title: 'Jurisdictions',
      text:
        'Decisions by the jurisdiction where the target of the request was placed, reads apart from writes. A target placed in several jurisdictions counts once in each. ' +
        'Refused: blocked and not sent (enforce mode). Would-block: blocked by a rule in monitor or warn mode, and sent anyway.',
      tables: [
        {
          headers: ['jurisdiction', 'reads allowed', 'reads refused', 'reads would-block', 'writes allowed', 'writes refused', 'writes would-block'],
          rows: sorted(r.by_jurisdiction).map(([j]) => [jurisdictionLabel(j), ...outcomes(r.jurisdictions[j]!.read), ...outcomes(r.jurisdictions[j]!.write)]),
        },
      ],
      empty: 'No decisions in this period.',
    },
    {
      title: 'Upstreams',
      text: 'Decisions by the storage service (upstream) the request was for.',
      tables: [{ headers: ['upstream', 'decisions'], rows: sorted(r.by_upstream) }],
      empty: 'No decisions in this period.',
    },
    {
      title: `Blocked non-US write attempts: ${r.blocked_non_us_writes.total}`,
      text: 'Writes refused because their target was placed, at least in part, outside the US or could not be placed.',
      tables: [
        { caption: 'By jurisdiction', headers: ['jurisdiction', 'refused writes'], rows: sorted(r.blocked_non_us_writes.by_jurisdiction, jurisdictionLabel) },
        { caption: 'By upstream', headers: ['upstream', 'refused writes'], rows: sorted(r.blocked_non_us_writes.by_upstream) },
      ],
      empty: 'None in this period.',
    },
    {
      title: `Would have been blocked (monitor mode): ${r.monitor_would_block.total}`,
      text: 'Requests a rule in monitor mode would have refused: they were forwarded and recorded. Enforcing these rules would refuse this traffic.',
      tables: [
        { caption: 'By rule', headers: ['rule', 'would-block decisions'], rows: sorted(r.monitor_would_block.by_rule, ruleLabel) },
        { caption: 'By jurisdiction', headers: ['jurisdiction', 'would-block decisions'], rows: sorted(r.monitor_would_block.by_jurisdiction, jurisdictionLabel) },
      ],
      empty: 'None in this period.',
    },
    {
      title: 'Top reasons',
      text: 'The most frequent (rule, operation, reason) combinations. A read no rule covers is allowed without a rule; a write no rule covers is decided by the catch-all rule "default".',
      tables: [{ headers: ['rule', 'operation', 'reason', 'meaning', 'decisions'], rows: r.top_reasons.map((t) => [ruleLabel(t.rule), t.operation, t.reason, REASONS[t.reason as Reason] ?? '', t.count]) }],
      empty: 'No decisions in this period.',
    },
    {
      title: 'Policy versions in force',
      text: 'Each policy by its SHA-256, with its first and last decision in the period.',
      tables: [{ headers: ['policy (SHA-256)', 'first decision', 'last decision', 'decisions'], rows: r.policies.map((p) => [p.hash, readableTime(p.first_seen), readableTime(p.last_seen), p.count]) }],
      empty: 'No decisions in this period.',
    },
  ];
}

const BLOCK_TEXT = 'blocked (refused, or forwarded as a would-block)';

/** The interval each bar (or row) covers, said once, in words. */
function timelineCaption(r: AuditReport, item: 'bar' | 'row'): string {
  const { outside } = r.timeline;
  const note = outside > 0 ? ` ${plural(outside, 'decision')} with times outside this range ${outside === 1 ? 'is' : 'are'} counted in the tables but not drawn.` : '';
  return `Each ${item} counts the decisions of ${duration(r.timeline.bucket_seconds)}; times are UTC.${note}`;
}

function mdEscape(text: string): string {
  return text.replace(/[|\\`*_[\]<>]/g, (c) => `\\${c}`);
}

function mdTable(t: Table): string {
  const line = (cells: (string | number)[]) => `| ${cells.map((c) => mdEscape(String(c))).join(' | ')} |`;
  const caption = t.caption ? `**${mdEscape(t.caption)}**\n\n` : '';
  return `${caption}${[line(t.headers), `|${t.headers.map(() => '---').join('|')}|`, ...t.rows.map(line)].join('\n')}\n`;
}

function mdSection(s: Section): string {
  const body = s.tables.every((t) => t.rows.length === 0) ? `${s.empty}\n` : s.tables.map(mdTable).join('\n');
  return `## ${mdEscape(s.title)}\n\n${mdEscape(s.text)}\n\n${body}`;
}

export function renderMarkdown(r: AuditReport): string {
  const timeline: Section = {
    title: 'Decisions over time',
    text: `${timelineCaption(r, 'row')} Intervals without decisions are left out.`,
    tables: [{ headers: ['from', 'allowed', BLOCK_TEXT], rows: r.timeline.buckets.filter((b) => b.allow + b.block > 0).map((b) => [readableTime(b.start), b.allow, b.block]) }],
    empty: 'No decisions in this period.',
  };
  return [
    `# Decision log report\n\n${mdEscape(periodText(r))}\n\n**Chain verification:** ${mdEscape(verificationLine(r.verification))}\n\n${mdEscape(countsText(r))}\n`,
    ...[...sections(r), timeline].map(mdSection),
  ].join('\n');
}

function esc(text: string | number): string {
  return String(text).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

function htmlTable(t: Table): string {
  const caption = t.caption ? `<caption>${esc(t.caption)}</caption>` : '';
  const head = `<tr>${t.headers.map((h) => `<th>${esc(h)}</th>`).join('')}</tr>`;
  const body = t.rows.map((row) => `<tr>${row.map((c) => `<td${typeof c === 'number' ? ' class="n"' : ''}>${esc(c)}</td>`).join('')}</tr>`).join('');
  return `<table>${caption}${head}${body}</table>`;
}

function htmlSection(s: Section): string {
  const body = s.tables.every((t) => t.rows.length === 0) ? `<p class="empty">${esc(s.empty)}</p>` : s.tables.map(htmlTable).join('');
  return `<section><h2>${esc(s.title)}</h2><p>${esc(s.text)}</p>${body}</section>`;
}

const TICK_STEPS_S = [1, 5, 10, 15, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86_400, 2 * 86_400, 7 * 86_400, 14 * 86_400, 30 * 86_400, 91 * 86_400, 365 * 86_400];
const MAX_TICKS = 8;

/** Axis ticks at round UTC times: the time of day, and the date under the first tick and wherever the day changes. */
function timeTicks(startMs: number, endMs: number): { ms: number; lines: string[] }[] {
  const span = (endMs - startMs) / 1000;
  const step = (TICK_STEPS_S.find((s) => span / s <= MAX_TICKS) ?? Math.ceil(span / MAX_TICKS)) * 1000;
  const ticks: { ms: number; lines: string[] }[] = [];
  let lastDate = '';
  for (let ms = Math.ceil(startMs / step) * step; ms <= endMs; ms += step) {
    const iso = new Date(ms).toISOString();
    const date = iso.slice(0, 10);
    const time = step >= 86_400_000 ? null : iso.slice(11, step >= 60_000 ? 16 : 19);
    ticks.push({ ms, lines: time === null ? [date] : date === lastDate ? [time] : [time, date] });
    lastDate = date;
  }
  return ticks;
}

/** Stacked bars (allowed below, blocked on top) per interval, drawn inline: the file has no external resources. */
function timelineSvg(r: AuditReport): string {
  const buckets = r.timeline.buckets;
  const width = 900;
  const height = 260;
  const left = 56;
  const right = 24;
  const top = 12;
  const bottom = 40;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const max = Math.max(1, ...buckets.map((b) => b.allow + b.block));
  const barW = plotW / Math.max(1, buckets.length);
  const y = (v: number) => top + plotH - (v / max) * plotH;
  const bars = buckets
    .map((b, i) => {
      const x = left + i * barW + 1;
      const w = Math.max(1, barW - 2);
      const allowTop = y(b.allow);
      const blockTop = y(b.allow + b.block);
      const title = `${readableTime(b.start)}: ${b.allow} allowed, ${b.block} blocked`;
      return (
        `<g><title>${esc(title)}</title>` +
        `<rect x="${x.toFixed(1)}" y="${allowTop.toFixed(1)}" width="${w.toFixed(1)}" height="${(top + plotH - allowTop).toFixed(1)}" fill="#3b82f6"/>` +
        `<rect x="${x.toFixed(1)}" y="${blockTop.toFixed(1)}" width="${w.toFixed(1)}" height="${(allowTop - blockTop).toFixed(1)}" fill="#dc2626"/></g>`
      );
    })
    .join('');
  const yTicks = [...new Set([0, Math.round(max / 2), max])]
    .map(
      (v) =>
        `<text x="${left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${v}</text>` +
        `<line x1="${left}" x2="${width - right}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#ddd"/>`,
    )
    .join('');
  const startMs = Date.parse(buckets[0]?.start ?? r.since);
  const endMs = startMs + Math.max(1, buckets.length) * r.timeline.bucket_seconds * 1000;
  const xTicks = timeTicks(startMs, endMs)
    .map(({ ms, lines }) => {
      const x = left + ((ms - startMs) / (endMs - startMs)) * plotW;
      // Labels at the ends are anchored inwards so they stay inside the picture.
      const anchor = x < left + 30 ? 'start' : x > width - right - 30 ? 'end' : 'middle';
      const text = lines.map((l, i) => `<tspan x="${x.toFixed(1)}" dy="${i === 0 ? 0 : 13}">${esc(l)}</tspan>`).join('');
      return `<line x1="${x.toFixed(1)}" x2="${x.toFixed(1)}" y1="${top + plotH}" y2="${top + plotH + 4}" stroke="#444"/><text y="${top + plotH + 16}" text-anchor="${anchor}">${text}</text>`;
    })
    .join('');
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${width} ${height}" width="100%" role="img" aria-label="decisions over time, allowed and blocked">` +
    `<style>text{font:11px sans-serif;fill:#444}</style>${yTicks}${bars}` +
    `<line x1="${left}" x2="${width - right}" y1="${top + plotH}" y2="${top + plotH}" stroke="#444"/>${xTicks}` +
    `<text transform="translate(12 ${top + plotH / 2}) rotate(-90)" text-anchor="middle">decisions</text>` +
    `</svg>`
  );
}

export function renderHtml(r: AuditReport): string {
  const v = r.verification;
  const chart =
    `<section><h2>Decisions over time</h2><figure>${timelineSvg(r)}` +
    `<p class="legend"><span style="background:#3b82f6"></span>allowed<span style="background:#dc2626"></span>${esc(BLOCK_TEXT)}</p>` +
    `<figcaption>${esc(timelineCaption(r, 'bar'))}</figcaption></figure></section>`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Decision log report ${esc(readableTime(r.since))} – ${esc(readableTime(r.until))}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:960px;color:#222;padding:0 1rem}
table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #ccc;padding:.2rem .6rem;text-align:left}
caption{text-align:left;font-weight:600;padding:.2rem 0}td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#166534}.bad{color:#b91c1c}.empty{color:#555;font-style:italic}figure{margin:0}figcaption{color:#444}
.legend span{display:inline-block;width:10px;height:10px;margin:0 .3rem 0 1rem}.legend span:first-child{margin-left:0}
</style></head><body>
<h1>Decision log report</h1>
<p>${esc(periodText(r))}</p>
<p class="${v.ok ? 'ok' : 'bad'}"><strong>Chain verification:</strong> ${esc(verificationLine(v))}</p>
<p>${esc(countsText(r))}</p>
${[chart, ...sections(r).map(htmlSection)].join('\n')}
</body></html>
`;
}
