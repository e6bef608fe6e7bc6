import type { DecisionEntry } from '../../src/audit/record.js';
import { sampleEntry } from './audit-records.js';

/** Record i is at 2026-01-01T00:00:00Z + i × 90 s: 120 records span three hours. */
export const MIXED_START = Date.UTC(2026, 0, 1);
export const MIXED_STEP_MS = 90_000;

function placed(jurisdiction: string | null): Pick<DecisionEntry, 'location'> {
  if (jurisdiction === null) return { location: { jurisdictions: [], region: null, signals: [] } };
  return { location: { jurisdictions: [jurisdiction], region: null, signals: [{ source: 'declared', value: jurisdiction, jurisdiction }] } };
}

/**
 * A log with the cases an auditor must tell apart, by i % 6, as the policy
 * engine records them: a read no rule matched (`rule: null`), a write the
 * catch-all `default` refused, an allowed write, a monitor-mode would-block,
 * a write refused for an unknown location, and a read a rule allowed.
 */
export function mixedEntry(i: number): DecisionEntry {
  const ts = new Date(MIXED_START + i * MIXED_STEP_MS).toISOString();
  const read = { operation: 'read', method: 'GET', status: 200 } as const;
  const refused = { decision: 'block', effective: 'refused', status: 403 } as const;
  const cases: Partial<DecisionEntry>[] = [
    { ...read, ...placed('IE'), rule: null, reason: 'read_allowed' },
    { ...refused, ...placed('IE'), rule: 'default', reason: 'jurisdiction_not_allowed' },
    { ...placed('US'), rule: 'user-data-writes', reason: 'jurisdiction_allowed' },
    { ...placed('FR'), rule: 'eu-monitor', mode: 'monitor', decision: 'block', effective: 'forwarded', reason: 'jurisdiction_not_allowed' },
    { ...refused, ...placed(null), rule: 'default', reason: 'unknown_location' },
    { ...read, ...placed('US'), rule: 'us-reads', reason: 'jurisdiction_allowed' },
  ];
  return sampleEntry(i, { ts, upstream: 'demo', decision: 'allow', effective: 'forwarded', mode: 'enforce', operation: 'write', method: 'PUT', ...cases[i % 6] });
}
