import type { Redis } from 'ioredis';
import { POLICY_SEEN_NAMESPACE, REPLICA_NAMESPACE, parseHeartbeat, type Heartbeat } from './heartbeat.js';
import { readLockdown, type LockdownRecord } from './lockdown.js';
import { columns, plural } from '../text.js';

/**
 * The fleet as Redis sees it: every live heartbeat (SCAN on the prefix),
 * the policy hashes they enforce, whether two hashes have been live side by
 * side longer than the grace period (drift), and the lockdown switch. Used
 * by /fleet and `residency-proxy fleet status`; read-only.
 */

export const DEFAULT_DRIFT_GRACE_SECONDS = 60;

export interface PolicyGroup {
  hash: string;
  /** Replica ids enforcing it. */
  replicas: string[];
  /** When the hash was first live in the fleet (see heartbeat.ts), else the earliest load time among its replicas. */
  first_seen: string;
}

export interface FleetView {
  at: string;
  replicas: Heartbeat[];
  policies: PolicyGroup[];
  drift: {
    flagged: boolean;
    /** How many distinct active policy hashes are live. */
    hashes: number;
    /** Since when two or more have been live side by side; null with one (or none). */
    since: string | null;
    grace_seconds: number;
    detail: string;
  };
  /** Replica ids more than one live process claims. */
  duplicates: string[];
  /** The switch as stored; null when it was never set (or Redis lost it). */
  lockdown: LockdownRecord | null;
  /** Keys under the replica namespace that did not parse as heartbeats. */
  unreadable: number;
}

export interface ReadFleetOptions {
  /** Default: the largest `drift_grace_seconds` the replicas report, else 60. */
  driftGraceSeconds?: number;
  now?: () => number;
}

/** Escape SCAN MATCH glob characters, so a prefix like `team[a]:` matches only itself. */
export function globEscape(text: string): string {
  return text.replace(/[\\*?[\]]/g, (c) => `\\${c}`);
}

/** Read the fleet view. Throws when Redis cannot be read. */
export async function readFleetView(client: Redis, key: (name: string) => string, options: ReadFleetOptions = {}): Promise<FleetView> {
  const nowMs = (options.now ?? Date.now)();
  const match = globEscape(key(REPLICA_NAMESPACE)) + '*';
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await client.scan(cursor, 'MATCH', match, 'COUNT', 500);
    keys.push(...batch);
    cursor = next;
  } while (cursor !== '0');

  const replicas: Heartbeat[] = [];
  let unreadable = 0;
  for (let i = 0; i < keys.length; i += 500) {
    const chunk = keys.slice(i, i + 500);
    const texts = await client.mget(...chunk);
    for (const text of texts) {
      // null: expired between SCAN and MGET, which is simply not live.
      if (text === null) continue;
      const beat = parseHeartbeat(text);
      if (beat === null) unreadable++;
      else replicas.push(beat);
    }
  }
  replicas.sort((a, b) => a.id.localeCompare(b.id) || a.started_at.localeCompare(b.started_at) || a.instance.localeCompare(b.instance));

  const byHash = new Map<string, Heartbeat[]>();
  for (const r of replicas) byHash.set(r.policy.hash, [...(byHash.get(r.policy.hash) ?? []), r]);
  const hashes = [...byHash.keys()];
  const seen = hashes.length > 0 ? await client.mget(...hashes.map((h) => key(POLICY_SEEN_NAMESPACE + h))) : [];
  const policies: PolicyGroup[] = hashes.map((hash, i) => {
    const members = byHash.get(hash)!;
    const stored = Number(seen[i]);
    // Missing (Redis restarted, or the first beat is in flight): the load times are the best evidence left.
    const fallback = Math.min(...members.map((m) => Date.parse(m.policy.loaded_at)).filter(Number.isFinite), nowMs);
    const firstSeen = Number.isFinite(stored) && stored > 0 ? stored : fallback;
    return { hash, replicas: [...new Set(members.map((m) => m.id))], first_seen: new Date(firstSeen).toISOString() };
  });
  policies.sort((a, b) => b.replicas.length - a.replicas.length || a.first_seen.localeCompare(b.first_seen) || a.hash.localeCompare(b.hash));

  const reported = replicas.map((r) => r.drift_grace_seconds).filter((g) => typeof g === 'number' && g >= 0);
  const grace = options.driftGraceSeconds ?? (reported.length > 0 ? Math.max(...reported) : DEFAULT_DRIFT_GRACE_SECONDS);
  const drift = driftOf(policies, grace, nowMs);

  return {
    at: new Date(nowMs).toISOString(),
    replicas,
    policies,
    drift,
    duplicates: duplicatesOf(replicas),
    lockdown: await readLockdown(client, key),
    unreadable,
  };
}

/**
 * Two or more hashes have been live side by side since the second-earliest
 * first-seen time among the live hashes: the earliest was already there when
 * the next one appeared, and both still are.
 */
export function driftOf(policies: readonly PolicyGroup[], graceSeconds: number, nowMs: number): FleetView['drift'] {
  if (policies.length < 2) {
    return { flagged: false, hashes: policies.length, since: null, grace_seconds: graceSeconds, detail: policies.length === 1 ? 'every replica enforces one policy' : 'no live replicas' };
  }
  const times = policies.map((p) => Date.parse(p.first_seen)).sort((a, b) => a - b);
  const since = times[1]!;
  const seconds = Math.max(0, Math.round((nowMs - since) / 1000));
  const flagged = nowMs - since >= graceSeconds * 1000;
  const detail = flagged
    ? `${policies.length} policy hashes live side by side for ${seconds} s (grace ${graceSeconds} s): replicas enforce different policies`
    : `${policies.length} policy hashes live for ${seconds} s, within the ${graceSeconds} s grace (a rollout in progress?)`;
  return { flagged, hashes: policies.length, since: new Date(since).toISOString(), grace_seconds: graceSeconds, detail };
}

/**
 * Ids claimed by two live processes at once. A replica restarted after a
 * crash leaves its predecessor's key until it expires; that one stopped
 * beating before the new one started, so it is not a duplicate.
 */
export function duplicatesOf(replicas: readonly Heartbeat[]): string[] {
  const byId = new Map<string, Heartbeat[]>();
  for (const r of replicas) byId.set(r.id, [...(byId.get(r.id) ?? []), r]);
  const out: string[] = [];
  for (const [id, group] of byId) {
    if (group.length < 2) continue;
    const newestStart = group.map((r) => r.started_at).sort().at(-1)!;
    if (group.filter((r) => r.at >= newestStart).length > 1) out.push(id);
  }
  return out.sort();
}

/** The view as a terminal table, for `fleet status --format text`. */
export function formatFleetText(view: FleetView): string {
  const lines: string[] = [];
  const lock = view.lockdown;
  lines.push(
    lock?.active
      ? `LOCKDOWN ACTIVE since ${lock.set_at} by ${lock.set_by}: ${lock.reason}`
      : `lockdown: off${lock ? ` (lifted ${lock.set_at} by ${lock.set_by}: ${lock.reason})` : ''}`,
  );
  lines.push(`${plural(view.replicas.length, 'live replica')} at ${view.at}`);
  const rows = [['REPLICA', 'HOST', 'VERSION', 'POLICY', 'LOADED', 'LOCKDOWN', 'LOG', 'STARTED', 'SEEN']];
  const nowMs = Date.parse(view.at);
  for (const r of view.replicas) {
    rows.push([
      r.id,
      `${r.host}:${r.pid}`,
      r.version,
      r.policy.hash.slice(0, 12),
      r.policy.loaded_at,
      r.lockdown.active ? 'ACTIVE' : 'off',
      r.decision_log.healthy ? 'ok' : 'FAILING',
      r.started_at,
      `${Math.max(0, Math.round((nowMs - Date.parse(r.at)) / 1000))} s ago`,
    ]);
  }
  lines.push(...columns(rows));
  lines.push(`policies: ${view.policies.map((p) => `${p.hash.slice(0, 12)} (${p.replicas.length}, first seen ${p.first_seen})`).join(', ') || 'none'}`);
  lines.push(`${view.drift.flagged ? 'DRIFT FLAGGED' : 'drift: none'} (${view.drift.detail})`);
  if (view.duplicates.length > 0) lines.push(`WARNING: replica ids claimed by more than one live process: ${view.duplicates.join(', ')}`);
  if (view.unreadable > 0) lines.push(`WARNING: ${plural(view.unreadable, 'heartbeat key')} could not be read`);
  const notLocked = view.replicas.filter((r) => r.lockdown.active !== (lock?.active ?? false));
  if (notLocked.length > 0) {
    lines.push(`WARNING: not yet following the switch: ${notLocked.map((r) => r.id).join(', ')}`);
  }
  return lines.join('\n');
}
