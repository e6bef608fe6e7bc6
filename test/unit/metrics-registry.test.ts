import { describe, expect, it } from 'vitest';
import { DURATION_BUCKETS, createMetrics, readPackageVersion, type Metrics } from '../../src/metrics/registry.js';

/** The metric names contract (ARCHITECTURE.md, README "Metrics"): adding or renaming one is a decision, not an accident. */
const CONTRACT: Record<string, { type: string; labels: string[] }> = {
  residency_decisions_total: { type: 'counter', labels: ['upstream', 'operation', 'decision', 'mode', 'jurisdiction', 'reason'] },
  residency_shadow_decisions_total: { type: 'counter', labels: ['rule', 'decision'] },
  residency_fail_open_total: { type: 'counter', labels: ['reason'] },
  residency_dns_tracked_hosts: { type: 'gauge', labels: [] },
  residency_dns_queries_total: { type: 'counter', labels: ['reason'] },
  residency_dns_hosts_not_tracked_total: { type: 'counter', labels: ['reason'] },
  residency_request_duration_seconds: { type: 'histogram', labels: ['upstream', 'decision'] },
  residency_upstream_bytes_total: { type: 'counter', labels: ['upstream', 'direction'] },
  residency_upstream_errors_total: { type: 'counter', labels: ['upstream', 'kind'] },
  residency_location_lookups_total: { type: 'counter', labels: ['source', 'result'] },
  residency_location_source_reloads_total: { type: 'counter', labels: ['source', 'result'] },
  residency_location_source_info: { type: 'gauge', labels: ['source', 'version', 'built'] },
  residency_policy_reloads_total: { type: 'counter', labels: ['result'] },
  residency_policy_info: { type: 'gauge', labels: ['hash'] },
  residency_policy_loaded_timestamp_seconds: { type: 'gauge', labels: [] },
  residency_decision_log_records_total: { type: 'counter', labels: [] },
  residency_decision_log_errors_total: { type: 'counter', labels: [] },
  residency_decision_log_backlog: { type: 'gauge', labels: [] },
  residency_decision_log_last_flush_timestamp_seconds: { type: 'gauge', labels: [] },
  residency_rejected_requests_total: { type: 'counter', labels: ['code'] },
  residency_geoip_database_age_seconds: { type: 'gauge', labels: [] },
  residency_ip_ranges_age_seconds: { type: 'gauge', labels: [] },
  residency_build_info: { type: 'gauge', labels: ['version', 'node'] },
  residency_admin_auth_failures_total: { type: 'counter', labels: ['endpoint'] },
  residency_lockdown_changes_total: { type: 'counter', labels: ['state'] },
  residency_lockdown_active: { type: 'gauge', labels: [] },
  residency_fleet_redis_up: { type: 'gauge', labels: [] },
  residency_tunnels_open: { type: 'gauge', labels: [] },
  residency_tls_certificates_minted_total: { type: 'counter', labels: [] },
  residency_tls_certificate_cache_hits_total: { type: 'counter', labels: [] },
  residency_tls_handshake_failures_total: { type: 'counter', labels: ['listener', 'reason'] },
};

/** Sample lines (not comments) of one metric in the exposition text. */
async function samples(metrics: Metrics, name: string): Promise<string[]> {
  const text = await metrics.registry.metrics();
  return text.split('\n').filter((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
}

describe('metric definitions', () => {
  it('exports exactly the contract metrics, with their types and label names', async () => {
    const metrics = createMetrics({ version: '1.2.3' });
    const json = await metrics.registry.getMetricsAsJSON();
    const ours = json.filter((m) => m.name.startsWith('residency_'));
    expect(ours.map((m) => m.name).sort()).toEqual(Object.keys(CONTRACT).sort());
    for (const m of ours) {
      expect(m.type, m.name).toBe(CONTRACT[m.name]!.type);
      // labelNames is not in prom-client's types, but it is what decides cardinality.
      const labelNames = (metrics.registry.getSingleMetric(m.name) as unknown as { labelNames: string[] }).labelNames;
      expect([...labelNames].sort(), m.name).toEqual([...CONTRACT[m.name]!.labels].sort());
    }
  });

  it('follows Prometheus naming: counters end in _total, nothing else does, units are base units', async () => {
    const json = await createMetrics().registry.getMetricsAsJSON();
    for (const m of json) {
      if (String(m.type) === 'counter') expect(m.name, m.name).toMatch(/_total$/);
      else expect(m.name, m.name).not.toMatch(/_total$/);
      expect(m.name, m.name).not.toMatch(/_(milliseconds|ms|kilobytes|megabytes)(_|$)/);
      expect(m.help.length, `${m.name} HELP`).toBeGreaterThan(20);
    }
  });

  it('keeps registries per instance', async () => {
    const a = createMetrics();
    const b = createMetrics();
    a.decisionLogRecords.inc();
    expect(await samples(a, 'residency_decision_log_records_total')).toEqual(['residency_decision_log_records_total 1']);
    expect(await samples(b, 'residency_decision_log_records_total')).toEqual(['residency_decision_log_records_total 0']);
  });

  it('has latency buckets from sub-millisecond to tens of seconds, ascending', () => {
    expect(DURATION_BUCKETS[0]).toBeLessThan(0.001);
    expect(DURATION_BUCKETS.at(-1)).toBeGreaterThanOrEqual(30);
    expect([...DURATION_BUCKETS].sort((x, y) => x - y)).toEqual(DURATION_BUCKETS);
  });

  it('starts known label values at 0 so the first failure is an increase', async () => {
    const metrics = createMetrics();
    expect(await samples(metrics, 'residency_policy_reloads_total')).toEqual([
      'residency_policy_reloads_total{result="success"} 0',
      'residency_policy_reloads_total{result="failure"} 0',
    ]);
  });
});

describe('residency_build_info', () => {
  it('carries the version passed in and the running Node.js version', async () => {
    const metrics = createMetrics({ version: '9.8.7' });
    expect(await samples(metrics, 'residency_build_info')).toEqual([`residency_build_info{version="9.8.7",node="${process.version}"} 1`]);
  });

  it('reads the version from package.json when asked', () => {
    expect(readPackageVersion()).toMatch(/^\d+\.\d+\.\d+/);
  });
});

describe('evidence gauges', () => {
  const NOW_MS = 1_800_000_000_000;
  const now = () => NOW_MS;

  it('have no sample at all without a source (absent means unknown; 0 would read as fresh)', async () => {
    const metrics = createMetrics({ now });
    for (const name of [
      'residency_geoip_database_age_seconds',
      'residency_ip_ranges_age_seconds',
      'residency_decision_log_backlog',
      'residency_decision_log_last_flush_timestamp_seconds',
    ]) {
      expect(await samples(metrics, name), name).toEqual([]);
      // Still declared, so dashboards and promtool see the name and its HELP.
      expect(await metrics.registry.metrics()).toContain(`# TYPE ${name} gauge`);
    }
  });

  it('read their getters at scrape time', async () => {
    let backlog = 3;
    const metrics = createMetrics({
      now,
      evidence: {
        geoipBuildEpoch: () => NOW_MS / 1000 - 86_400,
        ipRangesCreatedEpoch: () => NOW_MS / 1000 - 3_600,
        decisionLogBacklog: () => backlog,
        decisionLogLastFlushEpoch: () => NOW_MS / 1000 - 2,
      },
    });
    expect(await samples(metrics, 'residency_geoip_database_age_seconds')).toEqual(['residency_geoip_database_age_seconds 86400']);
    expect(await samples(metrics, 'residency_ip_ranges_age_seconds')).toEqual(['residency_ip_ranges_age_seconds 3600']);
    expect(await samples(metrics, 'residency_decision_log_backlog')).toEqual(['residency_decision_log_backlog 3']);
    expect(await samples(metrics, 'residency_decision_log_last_flush_timestamp_seconds')).toEqual([
      `residency_decision_log_last_flush_timestamp_seconds ${NOW_MS / 1000 - 2}`,
    ]);
    backlog = 40;
    expect(await samples(metrics, 'residency_decision_log_backlog')).toEqual(['residency_decision_log_backlog 40']);
  });

  it('drop the sample when a source goes unknown, returns garbage or throws, and never break the scrape', async () => {
    let epoch: number | null = NOW_MS / 1000 - 10;
    const metrics = createMetrics({
      now,
      evidence: {
        geoipBuildEpoch: () => epoch,
        decisionLogBacklog: () => Number.NaN,
        ipRangesCreatedEpoch: () => {
          throw new Error('file vanished');
        },
      },
    });
    expect(await samples(metrics, 'residency_geoip_database_age_seconds')).toEqual(['residency_geoip_database_age_seconds 10']);
    epoch = null;
    expect(await samples(metrics, 'residency_geoip_database_age_seconds')).toEqual([]);
    expect(await samples(metrics, 'residency_decision_log_backlog')).toEqual([]);
    expect(await samples(metrics, 'residency_ip_ranges_age_seconds')).toEqual([]);
    expect(await metrics.registry.metrics()).toContain('residency_decisions_total');
  });

  it('never report a negative age for a build date in the future (clock skew)', async () => {
    const metrics = createMetrics({ now, evidence: { geoipBuildEpoch: () => NOW_MS / 1000 + 60 } });
    expect(await samples(metrics, 'residency_geoip_database_age_seconds')).toEqual(['residency_geoip_database_age_seconds 0']);
  });
});
