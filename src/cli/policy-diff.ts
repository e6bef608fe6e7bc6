import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { DecisionRecord } from '../audit/record.js';
import type { Config } from '../config/load.js';
import { toLocation } from '../location/signals.js';
import { compilePolicy, decide, type Policy } from '../policy/engine.js';
import { columns, plural } from '../text.js';

/**
 * `policy diff`: re-decide every recorded request under a candidate policy,
 * using the location signals recorded at the time, and report what would
 * change. Streams the log: memory stays flat whatever its size.
 */
export interface Flip {
  from: 'allow' | 'block';
  to: 'allow' | 'block';
  upstream: string;
  rule: string;
  jurisdiction: string;
}

export interface DiffReport {
  records: number;
  unreadable: number;
  unchanged: number;
  allowToBlock: number;
  blockToAllow: number;
  /** "from→to upstream rule jurisdiction" → count. */
  groups: Map<string, { flip: Flip; count: number; samples: string[] }>;
}

const SAMPLES = 3;

export async function diffLogs(files: readonly string[], candidate: Config, current: Config | null): Promise<DiffReport> {
  const next = compilePolicy(candidate);
  const before: Policy | null = current === null ? null : compilePolicy(current);
  const report: DiffReport = { records: 0, unreadable: 0, unchanged: 0, allowToBlock: 0, blockToAllow: 0, groups: new Map() };
  for (const file of files) {
    const lines = createInterface({ input: createReadStream(file), crlfDelay: Infinity });
    for await (const line of lines) {
      if (line.length === 0) continue;
      let record: DecisionRecord;
      try {
        record = JSON.parse(line) as DecisionRecord;
      } catch {
        report.unreadable++;
        continue;
      }
      if (typeof record.upstream !== 'string' || record.location === undefined) {
        // Digest or other non-decision lines.
        continue;
      }
      // A tunnel to a host no upstream serves is refused by routing, not by any policy rule.
      if (record.reason === 'tunnel_not_routed') continue;
      report.records++;
      const facts = {
        upstream: record.upstream,
        operation: record.operation,
        method: record.method,
        path: record.path,
        bucket: (record as { bucket?: string | null }).bucket ?? null,
        // Only a principal whose signature the proxy verified ever counted.
        principal: (record as { principal_verified?: boolean }).principal_verified === true ? ((record as { principal?: string | null }).principal ?? null) : null,
      };
      const { jurisdictions, unplaced } = toLocation(record.location.signals);
      const at = Date.parse(record.ts);
      const was = before === null ? record.decision : decide(before, facts, jurisdictions, at, false, unplaced).action;
      const now = decide(next, facts, jurisdictions, at, false, unplaced);
      if (was === now.action) {
        report.unchanged++;
        continue;
      }
      if (now.action === 'block') report.allowToBlock++;
      else report.blockToAllow++;
      const flip: Flip = {
        from: was,
        to: now.action,
        upstream: record.upstream,
        rule: now.rule ?? '(none)',
        jurisdiction: jurisdictions.length === 0 ? 'unknown' : jurisdictions.join(','),
      };
      const key = `${flip.from}→${flip.to} ${flip.upstream} ${flip.rule} ${flip.jurisdiction}`;
      const group = report.groups.get(key) ?? { flip, count: 0, samples: [] };
      group.count++;
      if (group.samples.length < SAMPLES) group.samples.push(record.id);
      report.groups.set(key, group);
    }
  }
  return report;
}

export function formatDiff(report: DiffReport): string {
  const lines = [
    `${plural(report.records, 'record')} replayed: ${report.unchanged} unchanged, ${report.allowToBlock} allow→block, ${report.blockToAllow} block→allow` +
      (report.unreadable > 0 ? `, ${plural(report.unreadable, 'unreadable line')} skipped` : ''),
  ];
  const groups = [...report.groups.values()].sort((a, b) => b.count - a.count);
  if (groups.length > 0) {
    const header = ['change', 'count', 'upstream', 'rule (candidate)', 'jurisdiction', 'sample decision ids'];
    const rows = groups.map((g) => [`${g.flip.from}→${g.flip.to}`, String(g.count), g.flip.upstream, g.flip.rule, g.flip.jurisdiction, g.samples.join(' ')]);
    lines.push('', ...columns([header, ...rows], [1]));
  }
  return lines.join('\n');
}
