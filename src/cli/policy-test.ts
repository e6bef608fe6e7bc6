import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { buildPlanner, loadPolicy } from '../load.js';
import { placeSignals, type Signal, type SignalSource } from '../location/signals.js';
import type { Plan } from '../plan/plan.js';

/**
 * `policy test`: decision test cases written in YAML next to the policy.
 *
 *   policy: example.yaml            # relative to this file
 *   now: 2026-11-29T00:00:00Z       # optional clock, for exceptions
 *   cases:
 *     - name: US write is allowed
 *       request: { method: PUT, url: http://proxy.local/s3-us/bucket/key }
 *       assume: { declared: eu-west-1, signals: [{ source: network:geoip, value: 203.0.113.9, jurisdiction: DE }] }
 *       expect: { decision: allow, reason: jurisdiction_allowed, rule: user-data-writes }
 */
export interface CaseResult {
  name: string;
  file: string;
  passed: boolean;
  /** Field → [expected, actual] for each mismatch. */
  mismatches: Record<string, [unknown, unknown]>;
  error?: string;
}

interface TestCase {
  name?: unknown;
  request?: { method?: unknown; url?: unknown; headers?: Record<string, unknown> };
  assume?: { declared?: unknown; signals?: unknown; replace_declared?: unknown };
  expect?: Record<string, unknown>;
}

const EXPECTABLE = ['decision', 'effective', 'reason', 'rule', 'mode', 'upstream', 'operation', 'bucket', 'region', 'jurisdictions', 'status', 'exception', 'shadow'] as const;

export function runPolicyTestFile(file: string): CaseResult[] {
  const doc = parseYaml(readFileSync(file, 'utf8')) as { policy?: unknown; now?: unknown; cases?: unknown };
  if (typeof doc?.policy !== 'string') throw new Error(`${file}: policy: is required (expected the path of the config under test)`);
  if (!Array.isArray(doc.cases)) throw new Error(`${file}: cases: is required (expected a list of test cases)`);
  const now = doc.now === undefined ? Date.now() : Date.parse(String(doc.now));
  if (Number.isNaN(now)) throw new Error(`${file}: now: "${String(doc.now)}" is not a timestamp (expected RFC 3339)`);
  const loaded = loadPolicy(resolve(dirname(file), doc.policy));
  const planner = buildPlanner(loaded.config, loaded.shadow, () => now);

  return (doc.cases as TestCase[]).map((c, i) => {
    const name = typeof c.name === 'string' ? c.name : `cases[${i}]`;
    try {
      const plan = planner.plan(toInput(c, i));
      const actual = summarize(plan);
      const mismatches: Record<string, [unknown, unknown]> = {};
      for (const [key, expected] of Object.entries(c.expect ?? {})) {
        if (!(EXPECTABLE as readonly string[]).includes(key)) throw new Error(`cases[${i}].expect.${key}: unknown field (expected one of ${EXPECTABLE.join(', ')})`);
        const got = actual[key as keyof typeof actual];
        if (JSON.stringify(got) !== JSON.stringify(expected)) mismatches[key] = [expected, got];
      }
      if (c.expect === undefined) throw new Error(`cases[${i}].expect: is required`);
      return { name, file, passed: Object.keys(mismatches).length === 0, mismatches };
    } catch (err) {
      return { name, file, passed: false, mismatches: {}, error: (err as Error).message };
    }
  });
}

function toInput(c: TestCase, i: number) {
  const method = String(c.request?.method ?? '').toUpperCase();
  const url = String(c.request?.url ?? '');
  if (!method || !url) throw new Error(`cases[${i}].request: needs method and url`);
  const hostHeader = Object.entries(c.request?.headers ?? {}).find(([k]) => k.toLowerCase() === 'host')?.[1];
  let target = url;
  let host = typeof hostHeader === 'string' ? hostHeader : undefined;
  if (/^https?:\/\//i.test(url)) {
    const parsed = new URL(url);
    target = parsed.pathname + parsed.search;
    host ??= parsed.host;
  }
  if (!host) throw new Error(`cases[${i}].request: give an absolute url or a Host header`);
  const assume = c.assume;
  if (assume === undefined) return { method, target, host };
  const signals: Signal[] = [];
  if (assume.declared !== undefined) signals.push(...placeSignals('declared', String(assume.declared)));
  if (assume.signals !== undefined) {
    if (!Array.isArray(assume.signals)) throw new Error(`cases[${i}].assume.signals: expected a list`);
    for (const s of assume.signals as Record<string, unknown>[]) {
      const source = String(s.source) as SignalSource;
      if (s.jurisdiction !== undefined) signals.push({ source, value: String(s.value ?? s.jurisdiction), jurisdiction: String(s.jurisdiction) });
      else signals.push(...placeSignals(source, String(s.value)));
    }
  }
  // Assuming a declared location replaces the config's; extra signals add to it.
  const replaceDeclared = assume.replace_declared === true || assume.declared !== undefined;
  return { method, target, host, assume: { signals, replaceDeclared } };
}

function summarize(plan: Plan) {
  if (plan.kind === 'reject') return { status: plan.status, decision: null, reason: plan.code };
  const d = plan.decision;
  return {
    decision: d.action,
    effective: d.effective,
    reason: d.reason,
    rule: d.rule,
    mode: d.mode,
    upstream: plan.route.upstream.name,
    operation: plan.operation,
    bucket: plan.bucket,
    region: plan.location.region,
    jurisdictions: d.jurisdictions,
    status: d.effective === 'refused' ? 403 : null,
    exception: d.exception?.name ?? null,
    shadow: plan.shadow === null ? null : plan.shadow.action,
  };
}

export function formatText(results: CaseResult[]): string {
  const lines: string[] = [];
  for (const r of results) {
    lines.push(`${r.passed ? '✓' : '✗'} ${r.name}`);
    if (r.error) lines.push(`    error: ${r.error}`);
    for (const [key, [expected, actual]] of Object.entries(r.mismatches)) {
      lines.push(`    ${key}:`, `      - expected: ${JSON.stringify(expected)}`, `      + actual:   ${JSON.stringify(actual)}`);
    }
  }
  const failed = results.filter((r) => !r.passed).length;
  lines.push('', `${results.length - failed} passed, ${failed} failed`);
  return lines.join('\n');
}

export function formatJunit(results: CaseResult[]): string {
  const esc = (s: string) => s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const byFile = new Map<string, CaseResult[]>();
  for (const r of results) byFile.set(r.file, [...(byFile.get(r.file) ?? []), r]);
  const failures = results.filter((r) => !r.passed).length;
  const suites = [...byFile].map(([file, rs]) => {
    const cases = rs.map((r) => {
      if (r.passed) return `    <testcase classname="${esc(file)}" name="${esc(r.name)}"/>`;
      const detail = r.error ?? Object.entries(r.mismatches).map(([k, [e, a]]) => `${k}: expected ${JSON.stringify(e)}, actual ${JSON.stringify(a)}`).join('\n');
      return `    <testcase classname="${esc(file)}" name="${esc(r.name)}">\n      <failure message="${esc(detail.split('\n')[0] ?? '')}">${esc(detail)}</failure>\n    </testcase>`;
    });
    const f = rs.filter((r) => !r.passed).length;
    return `  <testsuite name="${esc(file)}" tests="${rs.length}" failures="${f}">\n${cases.join('\n')}\n  </testsuite>`;
  });
  return `<?xml version="1.0" encoding="UTF-8"?>\n<testsuites name="residency-proxy policy test" tests="${results.length}" failures="${failures}">\n${suites.join('\n')}\n</testsuites>`;
}
