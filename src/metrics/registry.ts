import { readFileSync } from 'node:fs';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * One registry per app instance (never prom-client's global one), so tests
 * and several instances in one process do not collide. Labels are a small
 * fixed set: no paths, buckets, clients or decision ids, so the number of
 * series is bounded by the config (upstreams, rules), never by traffic.
 *
 * Names follow Prometheus conventions: base units (`_seconds`, `_bytes`),
 * counters end in `_total`, timestamps are `_timestamp_seconds` (Unix time).
 */
export interface Metrics {
  readonly registry: Registry;
  readonly decisions: Counter<'upstream' | 'operation' | 'decision' | 'mode' | 'jurisdiction' | 'reason'>;
  readonly shadowDecisions: Counter<'rule' | 'decision'>;
  readonly failOpen: Counter<'reason'>;
  readonly requestDuration: Histogram<'upstream' | 'decision'>;
  readonly upstreamBytes: Counter<'upstream' | 'direction'>;
  readonly upstreamErrors: Counter<'upstream' | 'kind'>;
  readonly locationLookups: Counter<'source' | 'result'>;
  /** Location source reloads (GeoIP file changes; range files and site networks with the policy), by source and result. */
  readonly locationSourceReloads: Counter<'source' | 'result'>;
  /** `{host}` names tracked (refreshed in the background) now; at most dns.max_tracked_hosts. */
  readonly dnsTrackedHosts: Gauge;
  /** DNS queries for upstream names by reason: first, refresh, untracked. */
  readonly dnsQueries: Counter<'reason'>;
  /** `{host}` names not tracked, by reason: cap (resolved once), rate (not resolved). */
  readonly dnsHostsNotTracked: Counter<'reason'>;
  readonly policyReloads: Counter<'result'>;
  readonly policyInfo: Gauge<'hash'>;
  readonly policyLoadedTimestamp: Gauge;
  readonly decisionLogRecords: Counter;
  readonly decisionLogErrors: Counter;
  readonly rejectedRequests: Counter<'code'>;
  readonly adminAuthFailures: Counter<'endpoint'>;
  /** Fleet lockdown switches applied by this replica, by the state it switched to (locked, lifted). */
  readonly lockdownChanges: Counter<'state'>;
  readonly lockdownActive: Gauge;
  /** 1/0 while Redis is configured; no sample without Redis (single-process mode is not "down"). */
  readonly fleetRedisUp: Gauge;
  /** Forward-proxy tunnels (CONNECT) open now. */
  readonly tunnelsOpen: Gauge;
  /** Interception certificates minted, and cached ones reused. */
  readonly certificatesMinted: Counter;
  readonly certificateCacheHits: Counter;
  /** TLS handshakes that failed, by listener (data_plane, tunnel) and a bounded reason. */
  readonly tlsHandshakeFailures: Counter<'listener' | 'reason'>;
}

/**
 * Where the evidence behind decisions comes from, read at scrape time so the
 * modules that own it need not know prom-client. Every getter is optional;
 * a getter that is missing, returns null or throws yields no sample at all
 * (absent, not 0: a 0 age would read as "perfectly fresh").
 */
export interface EvidenceSources {
  /** When the GeoIP database in use was built, Unix seconds. */
  geoipBuildEpoch?: () => number | null;
  /** The `createDate` of the oldest cloud IP-range file in use, Unix seconds. */
  ipRangesCreatedEpoch?: () => number | null;
  /** Decision records accepted but not yet durable. */
  decisionLogBacklog?: () => number | null;
  /** When the decision log was last flushed to durable storage, Unix seconds. */
  decisionLogLastFlushEpoch?: () => number | null;
  /** The location databases in use (GeoIP, each cloud range file): `residency_location_source_info`. */
  locationSources?: () => readonly { readonly source: string; readonly version: string; readonly built: string }[];
}

export interface MetricsOptions {
  /** The package version, read by the caller at startup (not here at import time). */
  version?: string;
  evidence?: EvidenceSources;
  /** Wall clock in milliseconds, for the age gauges; injectable for tests. */
  now?: () => number;
  /**
   * Labels on every series of this registry: `{ worker: "2" }` in a cluster
   * worker, so the primary's aggregation keeps each worker's series apart.
   */
  defaultLabels?: Readonly<Record<string, string>>;
}

/**
 * Request latency buckets, sub-millisecond to a minute: a refusal or an
 * allowed small write through a nearby upstream takes well under a
 * millisecond of proxy time, while a large upload streams for tens of
 * seconds. Sixteen buckets per (upstream, decision) keeps the histogram cheap.
 */
export const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export function createMetrics(options: MetricsOptions = {}): Metrics {
  const registry = new Registry();
  if (options.defaultLabels) registry.setDefaultLabels({ ...options.defaultLabels });
  collectDefaultMetrics({ register: registry });
  // prom-client's totals of these are gauges named `_total`, which Prometheus
  // reserves for counters (promtool check metrics flags them). The same
  // numbers remain as sum(nodejs_active_handles) etc. over the `type` label.
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
    registry.removeSingleMetric(name);
  }
  const registers = [registry];
  const evidence = options.evidence ?? {};
  const now = options.now ?? Date.now;

  /**
   * A gauge read from a getter at scrape time. The sample is removed while
   * the value is unknown, so "no data" is distinguishable from a real 0.
   */
  const sourced = (name: string, help: string, read: () => number | null) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        let value: number | null = null;
        try {
          value = read();
        } catch {
          // A broken source must not break the whole scrape; absent says "unknown".
        }
        if (value === null || !Number.isFinite(value)) this.remove({});
        else this.set(value);
      },
    });
  const getter = (get: (() => number | null) | undefined) => get ?? (() => null);
  const age = (get: (() => number | null) | undefined) => () => {
    const epoch = getter(get)();
    return epoch === null ? null : Math.max(0, now() / 1000 - epoch);
  };

  sourced(
    'residency_geoip_database_age_seconds',
    'Seconds since the GeoIP database in use was built; absent when no GeoIP database is loaded. Location evidence from an old database may be wrong.',
    age(evidence.geoipBuildEpoch),
  );
  sourced(
    'residency_ip_ranges_age_seconds',
    'Seconds since the oldest cloud provider IP-range file in use was published (its createDate); absent when none is loaded.',
    age(evidence.ipRangesCreatedEpoch),
  );
  sourced(
    'residency_decision_log_backlog',
    'Decision records accepted but not yet durable in the decision log; absent when the sink does not report it. Growing means the log cannot keep up.',
    getter(evidence.decisionLogBacklog),
  );
  sourced(
    'residency_decision_log_last_flush_timestamp_seconds',
    'Unix time of the last flush of the decision log to durable storage; absent when the sink does not report it.',
    getter(evidence.decisionLogLastFlushEpoch),
  );
  new Gauge({
    name: 'residency_location_source_info',
    help: 'Always 1 per location database in use: source (geoip, cloud-range), version (the GeoIP database kind, e.g. ip-location-db-country-ipv4-ipv6 or geolite2-country; provider:syncToken or changeNumber of a range file) and built (its build or creation date, ISO 8601; empty when the file has none).',
    labelNames: ['source', 'version', 'built'],
    registers,
    collect() {
      this.reset();
      let sources: ReturnType<NonNullable<EvidenceSources['locationSources']>> = [];
      try {
        sources = evidence.locationSources?.() ?? [];
      } catch {
        // As for the evidence gauges: a broken source yields no sample, not a failed scrape.
      }
      for (const s of sources) this.set({ source: s.source, version: s.version, built: s.built }, 1);
    },
  });
  new Gauge({
    name: 'residency_build_info',
    help: 'Always 1; the version label is the residency-proxy release, node the Node.js version running it.',
    labelNames: ['version', 'node'],
    registers,
  }).set({ version: options.version ?? 'unknown', node: process.version }, 1);

  const metrics: Metrics = {
    registry,
    decisions: new Counter({
      name: 'residency_decisions_total',
      help: 'Requests decided by the policy, by upstream, operation (read/write), decision (allow/block), mode of the deciding rule, jurisdiction found (an ISO 3166-1 code; "multiple" when several, "unknown" when none: the decision record lists them) and reason. decision="block" with mode="monitor" or "warn" was forwarded anyway.',
      labelNames: ['upstream', 'operation', 'decision', 'mode', 'jurisdiction', 'reason'],
      registers,
    }),
    shadowDecisions: new Counter({
      name: 'residency_shadow_decisions_total',
      help: 'Decisions of rules in monitor mode, which are recorded but not enforced, by rule and decision; decision="block" is a would-block: a request the rule would refuse in enforce mode.',
      labelNames: ['rule', 'decision'],
      registers,
    }),
    failOpen: new Counter({
      name: 'residency_fail_open_total',
      help: 'Requests forwarded without a complete decision or record because the proxy was configured to fail open, by reason. Any increase means residency was not enforced for those requests.',
      labelNames: ['reason'],
      registers,
    }),
    requestDuration: new Histogram({
      name: 'residency_request_duration_seconds',
      help: 'Seconds from request received until the upstream response headers arrived (forwarded) or the refusal was decided (refused), by upstream and decision.',
      labelNames: ['upstream', 'decision'],
      buckets: DURATION_BUCKETS,
      registers,
    }),
    upstreamBytes: new Counter({
      name: 'residency_upstream_bytes_total',
      help: 'Body bytes sent to (direction="out") and received from (direction="in") upstreams.',
      labelNames: ['upstream', 'direction'],
      registers,
    }),
    upstreamErrors: new Counter({
      name: 'residency_upstream_errors_total',
      help: 'Forwarding failures by upstream and kind (unreachable, timeout, reset, client_aborted).',
      labelNames: ['upstream', 'kind'],
      registers,
    }),
    locationLookups: new Counter({
      name: 'residency_location_lookups_total',
      help: 'Location lookups by signal source and result (hit: the source placed the target, miss: it could not, error: the lookup failed). discovered: per request that needed a bucket region; dns: per resolution of an upstream name (background refreshes included); site, cloud-range, geoip: per address located (cached until the address or the source changes), not per request.',
      labelNames: ['source', 'result'],
      registers,
    }),
    locationSourceReloads: new Counter({
      name: 'residency_location_source_reloads_total',
      help: 'Location source reloads by source (geoip: the database file changed; cloud-range, site: with each policy reload) and result (success, failure). On failure the last good source stays in use.',
      labelNames: ['source', 'result'],
      registers,
    }),
    dnsTrackedHosts: new Gauge({
      name: 'residency_dns_tracked_hosts',
      help: 'Host names {host} upstreams were asked for that are tracked now: resolved and refreshed in the background while requests use them, forgotten when unused at expiry. At most dns.max_tracked_hosts; the configured upstreams\' own hosts are always tracked and not counted.',
      registers,
    }),
    dnsQueries: new Counter({
      name: 'residency_dns_queries_total',
      help: 'DNS queries sent for upstream names (A and AAAA one each; one per system resolver lookup), by reason: first (a name\'s first resolution, tracked from then on), refresh (a tracked name re-resolved before its TTL ran out, or retried after a failure), untracked (a {host} name past dns.max_tracked_hosts, resolved once).',
      labelNames: ['reason'],
      registers,
    }),
    dnsHostsNotTracked: new Counter({
      name: 'residency_dns_hosts_not_tracked_total',
      help: 'Host names {host} upstreams were asked for that the proxy did not track, by reason: cap (dns.max_tracked_hosts reached: resolved once, its answer kept for its TTL and not refreshed; counted per resolution), rate (dns.max_new_hosts_per_second spent: not resolved, so the location is unknown and writes fail closed, reads get 502; counted per request).',
      labelNames: ['reason'],
      registers,
    }),
    policyReloads: new Counter({
      name: 'residency_policy_reloads_total',
      help: 'Policy loads by result (success, failure); a failed reload keeps the last good policy.',
      labelNames: ['result'],
      registers,
    }),
    policyInfo: new Gauge({
      name: 'residency_policy_info',
      help: 'Always 1; the hash label is the SHA-256 of the active policy (the "policy" field of decision records). Replicas with different hashes enforce different policies.',
      labelNames: ['hash'],
      registers,
    }),
    policyLoadedTimestamp: new Gauge({
      name: 'residency_policy_loaded_timestamp_seconds',
      help: 'Unix time the active policy was loaded.',
      registers,
    }),
    decisionLogRecords: new Counter({
      name: 'residency_decision_log_records_total',
      help: 'Decision records written to the decision log.',
      registers,
    }),
    decisionLogErrors: new Counter({
      name: 'residency_decision_log_errors_total',
      help: 'Decision records that could not be written; each such request was answered 503 (fail closed).',
      registers,
    }),
    rejectedRequests: new Counter({
      name: 'residency_rejected_requests_total',
      help: 'Requests refused before any decision (malformed, unrouted, smuggling shapes), by code.',
      labelNames: ['code'],
      registers,
    }),
    adminAuthFailures: new Counter({
      name: 'residency_admin_auth_failures_total',
      help: 'Admin requests refused 401 for a missing or wrong bearer token, by endpoint ("other" for unknown paths).',
      labelNames: ['endpoint'],
      registers,
    }),
    lockdownChanges: new Counter({
      name: 'residency_lockdown_changes_total',
      help: 'Fleet-wide lockdown switches this replica applied, by the state it switched to (locked, lifted). Under lockdown every rule enforces, unknown locations are refused and allow-exceptions are suspended.',
      labelNames: ['state'],
      registers,
    }),
    lockdownActive: new Gauge({
      name: 'residency_lockdown_active',
      help: '1 while a fleet-wide lockdown is in force on this replica, else 0.',
      registers,
    }),
    fleetRedisUp: new Gauge({
      name: 'residency_fleet_redis_up',
      help: 'Whether the fleet Redis (heartbeats, lockdown, shared caches) is reachable: 1 or 0; absent when Redis is not configured. At 0 traffic still flows, with the last known lockdown state.',
      registers,
    }),
    tunnelsOpen: new Gauge({
      name: 'residency_tunnels_open',
      help: 'Forward-proxy tunnels (CONNECT, intercepted) open now.',
      registers,
    }),
    certificatesMinted: new Counter({
      name: 'residency_tls_certificates_minted_total',
      help: 'Certificates minted from the operator CA for intercepted hosts (a host seen first, or its certificate renewed or evicted).',
      registers,
    }),
    certificateCacheHits: new Counter({
      name: 'residency_tls_certificate_cache_hits_total',
      help: 'Tunnels served with an interception certificate already minted.',
      registers,
    }),
    tlsHandshakeFailures: new Counter({
      name: 'residency_tls_handshake_failures_total',
      help: 'TLS handshakes with clients that failed, by listener (data_plane: listen.tls; tunnel: an intercepted CONNECT) and reason (client_rejected_certificate, client_reset, client_closed, protocol, timeout, handshake, other; no_request: closed right after the handshake with no request). A client that does not trust the operator CA shows as client_closed, no_request or client_rejected_certificate.',
      labelNames: ['listener', 'reason'],
      registers,
    }),
  };
  // Label values known in advance start at 0, so the first failure is an
  // increase() that alerts can see rather than a series born at 1.
  for (const result of ['success', 'failure']) metrics.policyReloads.inc({ result }, 0);
  for (const state of ['locked', 'lifted']) metrics.lockdownChanges.inc({ state }, 0);
  for (const source of ['geoip', 'cloud-range', 'site']) {
    for (const result of ['success', 'failure']) metrics.locationSourceReloads.inc({ source, result }, 0);
  }
  for (const reason of ['first', 'refresh', 'untracked']) metrics.dnsQueries.inc({ reason }, 0);
  for (const reason of ['cap', 'rate']) metrics.dnsHostsNotTracked.inc({ reason }, 0);
  // No sample until the fleet module says Redis is configured (a label-less gauge starts at 0).
  metrics.fleetRedisUp.remove({});
  return metrics;
}

/**
 * The package version for `residency_build_info`, read when called (at
 * startup), not at import. package.json is two levels up from both
 * src/metrics/ and dist/metrics/.
 */
export function readPackageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}
