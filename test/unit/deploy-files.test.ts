import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { createMetrics } from '../../src/metrics/registry.js';

/**
 * The shipped dashboard, alerts and scrape example must only use metrics
 * the proxy exports: a renamed metric would otherwise leave an empty panel
 * or an alert that can never fire, silently.
 */

const read = (path: string) => readFileSync(new URL(`../../deploy/${path}`, import.meta.url), 'utf8');

const KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'offset', 'inf', 'nan']);

/** Metric names a PromQL expression selects (functions, keywords, labels, strings, numbers and Grafana variables removed). */
export function metricNames(expr: string): string[] {
  const s = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\boffset\s+-?\w+/g, ' ')
    .replace(/\$\w+/g, ' ')
    .replace(/(?<![\w:])\d+(\.\d+)?(e[+-]?\d+)?(?![\w:])/gi, ' ');
  const names: string[] = [];
  for (const m of s.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const rest = s.slice(m.index + m[0].length).trimStart();
    if (rest.startsWith('(') || KEYWORDS.has(m[0].toLowerCase())) continue;
    names.push(m[0]);
  }
  return names;
}

async function exported(): Promise<{ known: (name: string) => boolean }> {
  const json = await createMetrics().registry.getMetricsAsJSON();
  const names = new Set(json.map((m) => m.name));
  const histograms = new Set(json.filter((m) => ['histogram', 'summary'].includes(String(m.type))).map((m) => m.name));
  // `up` is Prometheus's own per-target series.
  names.add('up');
  return {
    known: (name) => names.has(name) || [...histograms].some((h) => name === `${h}_bucket` || name === `${h}_sum` || name === `${h}_count`),
  };
}

describe('metricNames (the PromQL reader these checks rely on)', () => {
  it('finds selectors and skips everything else', () => {
    expect(metricNames('histogram_quantile(0.99, sum by (le, upstream) (rate(a_bucket{job=~"$job", x="y(z)"}[$__rate_interval])))')).toEqual(['a_bucket']);
    expect(metricNames('count by (job) (count by (job, hash) (b)) > 1')).toEqual(['b']);
    expect(metricNames('(c unless c offset 10m) and on (job, instance) (up offset 10m)')).toEqual(['c', 'c', 'up']);
    expect(metricNames('d > 30 * 86400 or vector(0) / 1e3')).toEqual(['d']);
    expect(metricNames('time() - e_timestamp_seconds{job=~"$job"}')).toEqual(['e_timestamp_seconds']);
    expect(metricNames('sum(f) by (instance) * on (x) group_left (y) g')).toEqual(['f', 'g']);
  });
});

interface Panel {
  type: string;
  title: string;
  id: number;
  datasource?: { type?: string; uid?: string };
  gridPos: { x: number; w: number; h: number; y: number };
  targets?: { expr: string; datasource?: { uid?: string } }[];
  panels?: Panel[];
}

describe('deploy/grafana/residency-proxy.json', () => {
  const dashboard = JSON.parse(read('grafana/residency-proxy.json')) as {
    uid: string;
    title: string;
    panels: Panel[];
    templating: { list: { name: string; type: string; query: unknown; datasource?: { uid?: string } }[] };
  };
  const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]).filter((p) => p.type !== 'row');
  const exprs = panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));

  it('is a dashboard with a stable uid', () => {
    expect(dashboard.uid).toBe('residency-proxy');
    expect(dashboard.title).toBe('residency-proxy');
    expect(panels.length).toBeGreaterThan(10);
    expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length);
  });

  it('takes its data source from a template variable, never a hard-coded one', () => {
    const variable = dashboard.templating.list.find((v) => v.name === 'datasource');
    expect(variable).toMatchObject({ type: 'datasource', query: 'prometheus' });
    for (const p of panels) {
      expect(p.datasource, p.title).toEqual({ type: 'prometheus', uid: '${datasource}' });
      for (const t of p.targets ?? []) expect(t.datasource?.uid ?? '${datasource}', p.title).toBe('${datasource}');
    }
    for (const v of dashboard.templating.list.filter((v) => v.type === 'query')) expect(v.datasource?.uid, v.name).toBe('${datasource}');
    const uids = [...JSON.stringify(dashboard).matchAll(/"uid":"([^"]*)"/g)].map((m) => m[1]);
    expect(new Set(uids)).toEqual(new Set(['residency-proxy', '${datasource}', '-- Grafana --']));
  });

  it('queries only metrics the proxy exports', async () => {
    const { known } = await exported();
    expect(exprs.length).toBeGreaterThan(20);
    for (const { panel, expr } of exprs) {
      const names = metricNames(expr);
      expect(names.length, `${panel}: ${expr}`).toBeGreaterThan(0);
      for (const name of names) expect(known(name), `${panel}: ${name} is not exported`).toBe(true);
    }
    for (const v of dashboard.templating.list.filter((v) => v.type === 'query')) {
      const query = (v.query as { query: string }).query;
      const name = /label_values\(\s*([a-zA-Z_:][\w:]*)/.exec(query)?.[1];
      expect(name && known(name), `variable ${v.name}: ${query}`).toBe(true);
    }
  });

  it('has the panels security teams asked for', () => {
    const all = exprs.map((e) => e.expr).join('\n');
    const titles = panels.map((p) => p.title);
    expect(all).toContain('count by (hash) (residency_policy_info');
    expect(all).toMatch(/sum by \(decision, mode\) \(rate\(residency_decisions_total/);
    expect(all).toMatch(/sum by \(jurisdiction\) \(rate\(residency_decisions_total/);
    expect(all).toMatch(/topk\(10, sum by \(reason\)/);
    expect(all).toMatch(/histogram_quantile\(0\.99, .*residency_request_duration_seconds_bucket/);
    for (const name of [
      'residency_shadow_decisions_total',
      'residency_upstream_errors_total',
      'residency_decision_log_errors_total',
      'residency_decision_log_backlog',
      'residency_decision_log_last_flush_timestamp_seconds',
      'residency_geoip_database_age_seconds',
      'residency_ip_ranges_age_seconds',
      'residency_policy_loaded_timestamp_seconds',
      'residency_fail_open_total',
    ]) {
      expect(all, name).toContain(name);
    }
    expect(titles).toEqual(expect.arrayContaining(['Blocked writes per upstream', 'Would-block per upstream', 'Top decision reasons', 'Fleet policy versions']));
  });

  it('lays panels out on the 24-column grid', () => {
    for (const p of dashboard.panels) expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
  });
});

interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  labels: { severity: string };
  annotations: { summary: string; description: string; runbook: string };
}

describe('deploy/prometheus/alerts.yaml', () => {
  const rules = (parse(read('prometheus/alerts.yaml')) as { groups: { rules: AlertRule[] }[] }).groups.flatMap((g) => g.rules);

  it('has the alerts the runbook promises, each with a severity and runbook text', () => {
    expect(rules.map((r) => r.alert)).toEqual(
      expect.arrayContaining([
        'ResidencyWriteBlocked',
        'ResidencyWouldBlockInMonitorMode',
        'ResidencyFailOpen',
        'ResidencyDecisionLogFailing',
        'ResidencyDecisionLogBacklogGrowing',
        'ResidencyUnknownLocationHigh',
        'ResidencyGeoIPDatabaseStale',
        'ResidencyPolicyHashMismatch',
        'ResidencyProxyDown',
      ]),
    );
    expect(new Set(rules.map((r) => r.alert)).size).toBe(rules.length);
    const severity = Object.fromEntries(rules.map((r) => [r.alert, r.labels.severity]));
    expect(severity).toMatchObject({
      ResidencyWriteBlocked: 'info',
      ResidencyWouldBlockInMonitorMode: 'warning',
      ResidencyFailOpen: 'critical',
      ResidencyDecisionLogFailing: 'critical',
      ResidencyDecisionLogBacklogGrowing: 'critical',
      ResidencyProxyDown: 'critical',
    });
    for (const r of rules) {
      expect(['info', 'warning', 'critical'], r.alert).toContain(r.labels.severity);
      for (const key of ['summary', 'description', 'runbook'] as const) expect(r.annotations[key]?.length ?? 0, `${r.alert} ${key}`).toBeGreaterThan(20);
    }
  });

  it('uses only metrics the proxy exports', async () => {
    const { known } = await exported();
    for (const r of rules) {
      for (const name of metricNames(r.expr)) expect(known(name), `${r.alert}: ${name} is not exported`).toBe(true);
    }
  });

  it('has a promtool test that fires and one that does not, for every alert', () => {
    const tests = (parse(read('prometheus/alerts.test.yaml')) as {
      rule_files: string[];
      tests: { alert_rule_test?: { alertname: string; exp_alerts: unknown[] }[] }[];
    });
    expect(tests.rule_files).toEqual(['alerts.yaml']);
    const cases = tests.tests.flatMap((t) => t.alert_rule_test ?? []);
    for (const r of rules) {
      const mine = cases.filter((c) => c.alertname === r.alert);
      expect(mine.some((c) => c.exp_alerts.length > 0), `${r.alert} firing`).toBe(true);
      expect(mine.some((c) => c.exp_alerts.length === 0), `${r.alert} not firing`).toBe(true);
    }
  });
});

describe('deploy/prometheus/scrape.yaml', () => {
  const config = parse(read('prometheus/scrape.yaml')) as {
    rule_files: string[];
    scrape_configs: { job_name: string; metrics_path: string; authorization?: { type: string; credentials_file?: string; credentials?: string } }[];
  };

  it('scrapes the job the alerts select, with a bearer token from a file', () => {
    const job = config.scrape_configs.find((j) => j.job_name === 'residency-proxy');
    expect(job).toBeDefined();
    expect(job!.metrics_path).toBe('/metrics');
    expect(job!.authorization?.type).toBe('Bearer');
    expect(job!.authorization?.credentials_file).toMatch(/^\//);
    expect(job!.authorization?.credentials).toBeUndefined();
    expect(config.rule_files).toContain('alerts.yaml');
    expect(read('prometheus/alerts.yaml')).toContain('up{job="residency-proxy"}');
  });
});
