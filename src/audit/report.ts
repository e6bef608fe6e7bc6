import type { KeyObject } from 'node:crypto';
import { jurisdictionsOf } from './query.js';
import { isDecision, type DecisionRecord } from './record.js';
import { verifyLogs, type Anchor, type Finding, type VerifyResult } from './verify.js';

export interface ReportOptions {
  since: string;
  until: string;
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

export interface AuditReport {
  generated_at: string;
  since: string;
  until: string;
  files: number;
  /** Records read (all files), and those inside [since, until). */
  records_read: number;
  records: number;
  by_decision: Record<string, number>;
  by_effective: Record<string, number>;
  by_mode: Record<string, number>;
  by_jurisdiction: Record<string, number>;
  by_upstream: Record<string, number>;
  blocked_non_us_writes: { total: number; by_jurisdiction: Record<string, number>; by_upstream: Record<string, number> };
  monitor_would_block: { total: number; by_rule: Record<string, number>; by_jurisdiction: Record<string, number> };
  top_reasons: { rule: string; reason: string; count: number }[];
  policies: ({ hash: string } & Seen)[];
  timeline: { bucket_seconds: number; buckets: TimelineBucket[] };
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

function bump(map: Record<string, number>, key: string, by = 1): void {
  map[key] = (map[key] ?? 0) + by;
}

/**
 * One streaming pass over the files: the chain is verified and the records
 * inside [since, until) are aggregated. Memory depends on the number of
 * distinct upstreams, jurisdictions, rules and policies, not on the records.
 */
export async function buildReport(args: readonly string[], options: ReportOptions): Promise<AuditReport> {
  const now = options.now ?? Date.now;
  const sinceMs = Date.parse(options.since);
  const untilMs = Date.parse(options.until);
  const span = Math.max(1, (untilMs - sinceMs) / 1000);
  const bucketSeconds = BUCKET_CHOICES_S.find((s) => span / s <= MAX_BUCKETS) ?? Math.ceil(span / MAX_BUCKETS);
  const bucketCount = Math.max(1, Math.ceil(span / bucketSeconds));
  const allow = new Array<number>(bucketCount).fill(0);
  const block = new Array<number>(bucketCount).fill(0);

  const r: AuditReport = {
    generated_at: new Date(now()).toISOString(),
    since: options.since,
    until: options.until,
    files: 0,
    records_read: 0,
    records: 0,
    by_decision: {},
    by_effective: {},
    by_mode: {},
    by_jurisdiction: {},
    by_upstream: {},
    blocked_non_us_writes: { total: 0, by_jurisdiction: {}, by_upstream: {} },
    monitor_would_block: { total: 0, by_rule: {}, by_jurisdiction: {} },
    top_reasons: [],
    policies: [],
    timeline: { bucket_seconds: bucketSeconds, buckets: [] },
    verification: { ok: false, records: 0, files: 0, sealed: 0, signatures: {}, first_error: null, errors: 0, warnings: 0 },
  };
  const reasons = new Map<string, number>();
  const policies = new Map<string, Seen>();

  const onRecord = (rec: DecisionRecord) => {
    r.records_read++;
    // Fleet events (lockdown set/lift) and write outcomes are chained and verified, not counted as decisions.
    if (!isDecision(rec)) return;
    if (typeof rec.ts !== 'string' || !(rec.ts >= options.since && rec.ts < options.until)) return;
    r.records++;
    bump(r.by_decision, String(rec.decision));
    bump(r.by_effective, String(rec.effective));
    bump(r.by_mode, String(rec.mode));
    bump(r.by_upstream, String(rec.upstream));
    const jurisdictions = jurisdictionsOf(rec);
    for (const j of jurisdictions) bump(r.by_jurisdiction, j);
    if (rec.operation === 'write' && rec.decision === 'block' && rec.effective === 'refused' && jurisdictions.some((j) => j !== 'US')) {
      r.blocked_non_us_writes.total++;
      for (const j of jurisdictions) if (j !== 'US') bump(r.blocked_non_us_writes.by_jurisdiction, j);
      bump(r.blocked_non_us_writes.by_upstream, String(rec.upstream));
    }
    if (rec.mode === 'monitor' && rec.decision === 'block') {
      r.monitor_would_block.total++;
      bump(r.monitor_would_block.by_rule, rec.rule ?? 'default');
      for (const j of jurisdictions) bump(r.monitor_would_block.by_jurisdiction, j);
    }
    const reasonKey = `${rec.rule ?? 'default'}\u0000${rec.reason}`;
    reasons.set(reasonKey, (reasons.get(reasonKey) ?? 0) + 1);
    const seen = policies.get(rec.policy);
    if (seen) {
      if (rec.ts < seen.first_seen) seen.first_seen = rec.ts;
      if (rec.ts > seen.last_seen) seen.last_seen = rec.ts;
      seen.count++;
    } else {
      policies.set(rec.policy, { first_seen: rec.ts, last_seen: rec.ts, count: 1 });
    }
    const index = Math.floor((Date.parse(rec.ts) - sinceMs) / 1000 / bucketSeconds);
    if (index >= 0 && index < bucketCount) (rec.decision === 'block' ? block : allow)[index]!++;
  };

  const verification: VerifyResult = await verifyLogs(args, {
    onRecord,
    ...(options.publicKey ? { publicKey: options.publicKey } : {}),
    ...(options.requireSignature ? { requireSignature: true } : {}),
    ...(options.anchors ? { anchors: options.anchors } : {}),
  });
  r.files = verification.files.length;
  r.top_reasons = [...reasons.entries()]
    .map(([key, count]) => {
      const [rule, reason] = key.split('\u0000') as [string, string];
      return { rule, reason, count };
    })
    .sort((a, b) => b.count - a.count || a.rule.localeCompare(b.rule))
    .slice(0, 10);
  r.policies = [...policies.entries()].map(([hash, seen]) => ({ hash, ...seen })).sort((a, b) => a.first_seen.localeCompare(b.first_seen));
  r.timeline.buckets = allow.map((a, i) => ({ start: new Date(sinceMs + i * bucketSeconds * 1000).toISOString(), allow: a, block: block[i]! }));
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
// rendering

function sorted(map: Record<string, number>): [string, number][] {
  return Object.entries(map).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
}

function mdEscape(text: string): string {
  return text.replace(/[|\\`*_[\]<>]/g, (c) => `\\${c}`);
}

function mdTable(headers: string[], rows: (string | number)[][]): string {
  if (rows.length === 0) return '_none_\n';
  const line = (cells: (string | number)[]) => `| ${cells.map((c) => mdEscape(String(c))).join(' | ')} |`;
  return `${[line(headers), `|${headers.map(() => '---').join('|')}|`, ...rows.map(line)].join('\n')}\n`;
}

function verificationLine(v: AuditReport['verification']): string {
  const sig = Object.entries(v.signatures)
    .map(([k, n]) => `${n} ${k}`)
    .join(', ');
  const head = v.ok ? 'INTACT' : 'BROKEN';
  const where = v.first_error
    ? ` First broken: ${v.first_error.file}${v.first_error.line !== undefined ? ` line ${v.first_error.line}` : ''}${v.first_error.seq !== undefined ? ` seq ${v.first_error.seq}` : ''}: ${v.first_error.message}.`
    : '';
  return `${head}: ${v.records} records in ${v.files} files (${v.sealed} sealed${sig ? `; digests: ${sig}` : ''}); ${v.errors} errors, ${v.warnings} warnings.${where}`;
}

export function renderMarkdown(r: AuditReport): string {
  const out: string[] = [];
  out.push(`# Decision log report\n`);
  out.push(`Period: ${r.since} to ${r.until} (generated ${r.generated_at})\n`);
  out.push(`**Chain verification:** ${mdEscape(verificationLine(r.verification))}\n`);
  out.push(`Records in the period: **${r.records}** (of ${r.records_read} read from ${r.files} files)\n`);
  out.push(`## Decisions\n`);
  out.push(mdTable(['decision', 'records'], sorted(r.by_decision)));
  out.push(`\n## Effective outcome\n`);
  out.push(mdTable(['effective', 'records'], sorted(r.by_effective)));
  out.push(`\n## Modes\n`);
  out.push(mdTable(['mode', 'records'], sorted(r.by_mode)));
  out.push(`\n## Jurisdictions\n`);
  out.push(mdTable(['jurisdiction', 'records'], sorted(r.by_jurisdiction)));
  out.push(`\n## Upstreams\n`);
  out.push(mdTable(['upstream', 'records'], sorted(r.by_upstream)));
  out.push(`\n## Blocked non-US write attempts: ${r.blocked_non_us_writes.total}\n`);
  out.push(mdTable(['jurisdiction', 'attempts'], sorted(r.blocked_non_us_writes.by_jurisdiction)));
  out.push('\n');
  out.push(mdTable(['upstream', 'attempts'], sorted(r.blocked_non_us_writes.by_upstream)));
  out.push(`\n## Would have been blocked (monitor mode): ${r.monitor_would_block.total}\n`);
  out.push(mdTable(['rule', 'records'], sorted(r.monitor_would_block.by_rule)));
  out.push('\n');
  out.push(mdTable(['jurisdiction', 'records'], sorted(r.monitor_would_block.by_jurisdiction)));
  out.push(`\n## Top reasons\n`);
  out.push(mdTable(['rule', 'reason', 'records'], r.top_reasons.map((t) => [t.rule, t.reason, t.count])));
  out.push(`\n## Policy versions in force\n`);
  out.push(mdTable(['policy (SHA-256)', 'first seen', 'last seen', 'records'], r.policies.map((p) => [p.hash, p.first_seen, p.last_seen, p.count])));
  out.push(`\n## Decisions over time (${r.timeline.bucket_seconds} s buckets)\n`);
  out.push(mdTable(['from', 'allow', 'block'], r.timeline.buckets.filter((b) => b.allow + b.block > 0).map((b) => [b.start, b.allow, b.block])));
  return out.join('\n');
}

function esc(text: string | number): string {
  return String(text).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

function htmlTable(headers: string[], rows: (string | number)[][]): string {
  if (rows.length === 0) return '<p class="none">none</p>';
  const head = `<tr>${headers.map((h) => `<th>${esc(h)}</th>`).join('')}</tr>`;
  const body = rows.map((row) => `<tr>${row.map((c) => `<td${typeof c === 'number' ? ' class="n"' : ''}>${esc(c)}</td>`).join('')}</tr>`).join('');
  return `<table>${head}${body}</table>`;
}

/** Stacked bars (allow below, block on top) per bucket, drawn inline: the file has no external resources. */
function timelineSvg(r: AuditReport): string {
  const buckets = r.timeline.buckets;
  const width = 900;
  const height = 240;
  const left = 56;
  const bottom = 28;
  const plotW = width - left - 8;
  const plotH = height - bottom - 12;
  const max = Math.max(1, ...buckets.map((b) => b.allow + b.block));
  const barW = plotW / Math.max(1, buckets.length);
  const y = (v: number) => 12 + plotH - (v / max) * plotH;
  const bars = buckets
    .map((b, i) => {
      const x = left + i * barW + 1;
      const w = Math.max(1, barW - 2);
      const allowTop = y(b.allow);
      const blockTop = y(b.allow + b.block);
      const title = `${b.start}: ${b.allow} allow, ${b.block} block`;
      return (
        `<g><title>${esc(title)}</title>` +
        `<rect x="${x.toFixed(1)}" y="${allowTop.toFixed(1)}" width="${w.toFixed(1)}" height="${(12 + plotH - allowTop).toFixed(1)}" fill="#3b82f6"/>` +
        `<rect x="${x.toFixed(1)}" y="${blockTop.toFixed(1)}" width="${w.toFixed(1)}" height="${(allowTop - blockTop).toFixed(1)}" fill="#dc2626"/></g>`
      );
    })
    .join('');
  const ticks = [0, 0.5, 1]
    .map((f) => {
      const v = Math.round(max * f);
      return `<text x="${left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${v}</text><line x1="${left}" x2="${width - 8}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#ddd"/>`;
    })
    .join('');
  const first = buckets[0]?.start ?? r.since;
  const last = r.until;
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${width} ${height}" width="100%" role="img" aria-label="decisions over time">` +
    `<style>text{font:11px sans-serif;fill:#444}</style>${ticks}${bars}` +
    `<text x="${left}" y="${height - 8}">${esc(first)}</text><text x="${width - 8}" y="${height - 8}" text-anchor="end">${esc(last)}</text>` +
    `</svg>`
  );
}

export function renderHtml(r: AuditReport): string {
  const v = r.verification;
  const section = (title: string, body: string) => `<section><h2>${esc(title)}</h2>${body}</section>`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Decision log report ${esc(r.since)} – ${esc(r.until)}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:960px;color:#222;padding:0 1rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.2rem .6rem;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}.ok{color:#166534}.bad{color:#b91c1c}
.none{color:#777}code{font-size:12px}.legend span{display:inline-block;width:10px;height:10px;margin:0 .3rem 0 1rem}
</style></head><body>
<h1>Decision log report</h1>
<p>Period ${esc(r.since)} to ${esc(r.until)}; generated ${esc(r.generated_at)}.</p>
<p class="${v.ok ? 'ok' : 'bad'}"><strong>Chain verification:</strong> ${esc(verificationLine(v))}</p>
<p>Records in the period: <strong>${r.records}</strong> (of ${r.records_read} read from ${r.files} files).</p>
${section('Decisions over time', `${timelineSvg(r)}<p class="legend"><span style="background:#3b82f6"></span>allow<span style="background:#dc2626"></span>block (${r.timeline.bucket_seconds} s buckets)</p>`)}
${section('Decisions', htmlTable(['decision', 'records'], sorted(r.by_decision)) + htmlTable(['effective', 'records'], sorted(r.by_effective)))}
${section('Modes', htmlTable(['mode', 'records'], sorted(r.by_mode)))}
${section('Jurisdictions', htmlTable(['jurisdiction', 'records'], sorted(r.by_jurisdiction)))}
${section('Upstreams', htmlTable(['upstream', 'records'], sorted(r.by_upstream)))}
${section(`Blocked non-US write attempts: ${r.blocked_non_us_writes.total}`, htmlTable(['jurisdiction', 'attempts'], sorted(r.blocked_non_us_writes.by_jurisdiction)) + htmlTable(['upstream', 'attempts'], sorted(r.blocked_non_us_writes.by_upstream)))}
${section(`Would have been blocked (monitor mode): ${r.monitor_would_block.total}`, htmlTable(['rule', 'records'], sorted(r.monitor_would_block.by_rule)) + htmlTable(['jurisdiction', 'records'], sorted(r.monitor_would_block.by_jurisdiction)))}
${section('Top reasons', htmlTable(['rule', 'reason', 'records'], r.top_reasons.map((t) => [t.rule, t.reason, t.count])))}
${section('Policy versions in force', htmlTable(['policy (SHA-256)', 'first seen', 'last seen', 'records'], r.policies.map((p) => [p.hash, p.first_seen, p.last_seen, p.count])))}
</body></html>
`;
}
