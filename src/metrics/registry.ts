import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * One registry per app instance (never prom-client's global one), so tests
 * and several instances in one process do not collide. Labels are a small
 * fixed set: no paths, buckets, clients or decision ids.
 */
export interface Metrics {
  readonly registry: Registry;
  readonly decisions: Counter<'upstream' | 'operation' | 'decision' | 'mode' | 'jurisdiction' | 'reason'>;
  readonly requestDuration: Histogram<'upstream' | 'decision'>;
  readonly upstreamBytes: Counter<'upstream' | 'direction'>;
  readonly upstreamErrors: Counter<'upstream' | 'kind'>;
  readonly locationLookups: Counter<'source' | 'result'>;
  readonly policyReloads: Counter<'result'>;
  readonly policyInfo: Gauge<'hash'>;
  readonly decisionLogRecords: Counter;
  readonly decisionLogErrors: Counter;
  readonly rejectedRequests: Counter<'code'>;
}

/** Sub-millisecond to tens of seconds: refusals take microseconds, large uploads minutes. */
export const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];
  return {
    registry,
    decisions: new Counter({
      name: 'residency_decisions_total',
      help: 'Decisions taken, by upstream, operation, decision (allow/block), mode, jurisdiction found and reason.',
      labelNames: ['upstream', 'operation', 'decision', 'mode', 'jurisdiction', 'reason'],
      registers,
    }),
    requestDuration: new Histogram({
      name: 'residency_request_duration_seconds',
      help: 'Time from request received to response headers sent, by upstream and decision.',
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
      help: 'Forwarding failures by upstream and kind (unreachable, timeout, reset).',
      labelNames: ['upstream', 'kind'],
      registers,
    }),
    locationLookups: new Counter({
      name: 'residency_location_lookups_total',
      help: 'Location lookups by signal source and result (hit, miss, error).',
      labelNames: ['source', 'result'],
      registers,
    }),
    policyReloads: new Counter({
      name: 'residency_policy_reloads_total',
      help: 'Policy loads by result (success, failure).',
      labelNames: ['result'],
      registers,
    }),
    policyInfo: new Gauge({
      name: 'residency_policy_info',
      help: 'Always 1; the hash label identifies the active policy.',
      labelNames: ['hash'],
      registers,
    }),
    decisionLogRecords: new Counter({
      name: 'residency_decision_log_records_total',
      help: 'Decision records written to the decision log.',
      registers,
    }),
    decisionLogErrors: new Counter({
      name: 'residency_decision_log_errors_total',
      help: 'Decision records that could not be written.',
      registers,
    }),
    rejectedRequests: new Counter({
      name: 'residency_rejected_requests_total',
      help: 'Requests refused before any decision (malformed, unrouted, smuggling shapes), by code.',
      labelNames: ['code'],
      registers,
    }),
  };
}
