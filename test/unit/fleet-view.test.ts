import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { HeartbeatPublisher, MISSED_BEATS, parseHeartbeat, type Heartbeat } from '../../src/fleet/heartbeat.js';
import type { FleetRedis } from '../../src/fleet/redis.js';
import { driftOf, duplicatesOf, formatFleetText, globEscape, type FleetView, type PolicyGroup } from '../../src/fleet/view.js';
import { captureLog } from '../helpers/log-capture.js';

const T0 = Date.parse('2026-11-29T20:00:00.000Z');
const iso = (ms: number) => new Date(ms).toISOString();

function beat(id: string, over: Partial<Heartbeat> = {}): Heartbeat {
  return {
    v: 1,
    id,
    instance: `${id}-i`,
    host: 'h',
    pid: 1,
    version: '0.1.0',
    started_at: iso(T0),
    at: iso(T0 + 60_000),
    heartbeat_seconds: 5,
    drift_grace_seconds: 60,
    policy: { hash: 'a'.repeat(64), loaded_at: iso(T0), shadow_hash: null },
    location: { geoip_age_seconds: null, ip_ranges_age_seconds: null },
    decision_log: { healthy: true, backlog: null },
    lockdown: { active: false, reason: null, set_by: null, set_at: null, verified_at: null },
    ...over,
  };
}

const group = (hash: string, firstSeenMs: number, replicas: string[] = ['r']): PolicyGroup => ({ hash, replicas, first_seen: iso(firstSeenMs) });

describe('driftOf', () => {
  it('one hash (or none) is never drift', () => {
    expect(driftOf([group('a', T0)], 60, T0 + 3_600_000)).toMatchObject({ flagged: false, hashes: 1, since: null });
    expect(driftOf([], 60, T0)).toMatchObject({ flagged: false, hashes: 0 });
  });

  it('two hashes side by side: drift since the newer one appeared, flagged past the grace', () => {
    const policies = [group('old', T0 - 86_400_000), group('new', T0)];
    expect(driftOf(policies, 60, T0 + 59_000)).toMatchObject({ flagged: false, hashes: 2, since: iso(T0) });
    const flagged = driftOf(policies, 60, T0 + 60_000);
    expect(flagged).toMatchObject({ flagged: true, since: iso(T0), grace_seconds: 60 });
    expect(flagged.detail).toMatch(/2 policy hashes live side by side for 60 s \(grace 60 s\)/);
  });

  it('with three hashes, two have coexisted since the second appeared', () => {
    const policies = [group('c', T0 + 30_000), group('a', T0 - 1_000_000), group('b', T0)];
    expect(driftOf(policies, 10, T0 + 5_000)).toMatchObject({ since: iso(T0), flagged: false, hashes: 3 });
    expect(driftOf(policies, 10, T0 + 10_000).flagged).toBe(true);
  });

  it('a grace of 0 flags any coexistence', () => {
    expect(driftOf([group('a', T0), group('b', T0)], 0, T0).flagged).toBe(true);
  });
});

describe('duplicatesOf', () => {
  it('flags an id two live processes beat for, not a restart whose predecessor has stopped beating', () => {
    const restarted = [
      beat('r0', { instance: 'old', started_at: iso(T0), at: iso(T0 + 10_000) }),
      beat('r0', { instance: 'new', started_at: iso(T0 + 12_000), at: iso(T0 + 13_000) }),
    ];
    expect(duplicatesOf(restarted)).toEqual([]);
    const twins = [
      beat('r1', { instance: 'x', started_at: iso(T0), at: iso(T0 + 20_000) }),
      beat('r1', { instance: 'y', started_at: iso(T0 + 5_000), at: iso(T0 + 19_000) }),
      beat('r2'),
    ];
    expect(duplicatesOf(twins)).toEqual(['r1']);
  });
});

describe('globEscape', () => {
  it('escapes SCAN MATCH metacharacters only', () => {
    expect(globEscape('residency:')).toBe('residency:');
    expect(globEscape('a*b?c[d]e\\f')).toBe('a\\*b\\?c\\[d\\]e\\\\f');
  });
});

describe('parseHeartbeat', () => {
  it('accepts a heartbeat and rejects foreign values', () => {
    const b = beat('r0');
    expect(parseHeartbeat(JSON.stringify(b))).toEqual(b);
    for (const bad of ['x', '{}', JSON.stringify({ ...b, v: 2 }), JSON.stringify({ ...b, policy: null })]) expect(parseHeartbeat(bad), bad).toBeNull();
  });
});

describe('formatFleetText', () => {
  const view = (over: Partial<FleetView> = {}): FleetView => ({
    at: iso(T0 + 61_000),
    replicas: [beat('r0'), beat('r1', { lockdown: { active: true, reason: 'x', set_by: 'a@b', set_at: iso(T0), verified_at: null } })],
    policies: [group('a'.repeat(64), T0, ['r0', 'r1'])],
    drift: { flagged: false, hashes: 1, since: null, grace_seconds: 60, detail: 'every replica enforces one policy' },
    duplicates: [],
    lockdown: { active: true, reason: 'incident 7', set_by: 'oncall@laptop', set_at: iso(T0) },
    unreadable: 0,
    ...over,
  });

  it('leads with the lockdown, lists every replica, and names who is not following the switch', () => {
    const text = formatFleetText(view());
    const lines = text.split('\n');
    expect(lines[0]).toBe(`LOCKDOWN ACTIVE since ${iso(T0)} by oncall@laptop: incident 7`);
    expect(lines[1]).toMatch(/^2 live replicas at /);
    expect(lines[2]).toMatch(/^REPLICA\s+HOST\s+VERSION\s+POLICY/);
    expect(lines[3]).toMatch(/^r0\s+h:1\s+0\.1\.0\s+aaaaaaaaaaaa\s+.*off\s+ok\s+.*1 s ago$/);
    expect(text).toMatch(/^drift: none \(every replica enforces one policy\)$/m);
    expect(text).toMatch(/^WARNING: not yet following the switch: r0$/m);
  });

  it('says drift, duplicates and a lifted switch plainly', () => {
    const text = formatFleetText(
      view({
        replicas: [beat('r0')],
        drift: { flagged: true, hashes: 2, since: iso(T0), grace_seconds: 60, detail: 'two' },
        duplicates: ['r0'],
        lockdown: { active: false, reason: 'over', set_by: 'oncall@laptop', set_at: iso(T0) },
      }),
    );
    expect(text).toMatch(/^lockdown: off \(lifted .* by oncall@laptop: over\)$/m);
    expect(text).toMatch(/^DRIFT FLAGGED \(two\)$/m);
    expect(text).toMatch(/^WARNING: replica ids claimed by more than one live process: r0$/m);
    expect(text).not.toMatch(/not yet following/);
  });
});

describe('HeartbeatPublisher', () => {
  const redis = (healthy: boolean, calls: unknown[][] = []): FleetRedis => {
    const pipeline = () => {
      const p = {
        set: (...args: unknown[]) => (calls.push(['set', ...args]), p),
        pexpire: (...args: unknown[]) => (calls.push(['pexpire', ...args]), p),
        exec: async () => [[null, 'OK'], [null, 'OK'], [null, 1]],
      };
      return p;
    };
    return {
      client: { pipeline, del: async (k: string) => (calls.push(['del', k]), 1) } as unknown as Redis,
      key: (n) => 'p:' + n,
      healthy: () => healthy,
      lastError: () => (healthy ? null : 'down'),
      close: async () => {},
    };
  };
  const sources = {
    id: 'r0',
    instance: 'abcd',
    version: '1.2.3',
    heartbeatSeconds: 5,
    driftGraceSeconds: 60,
    policy: () => ({ hash: 'h'.repeat(64), loadedAt: iso(T0), shadowHash: null }),
    decisionLog: () => ({ healthy: true, backlog: 0 }),
    lockdown: () => ({ active: true, record: { active: true, reason: 'r', set_by: 'a@b', set_at: iso(T0) }, verifiedAt: iso(T0 + 1) }),
    geoipBuildEpoch: () => T0 / 1000 - 86_400,
    ipRangesCreatedEpoch: () => {
      throw new Error('broken');
    },
    now: () => T0 + 10_000,
  };

  it('snapshots what the view shows, ages in seconds, broken sources as null', () => {
    const h = new HeartbeatPublisher(redis(true), sources).snapshot();
    expect(h).toMatchObject({
      v: 1,
      id: 'r0',
      instance: 'abcd',
      version: '1.2.3',
      started_at: iso(T0 + 10_000),
      policy: { hash: 'h'.repeat(64), loaded_at: iso(T0), shadow_hash: null },
      location: { geoip_age_seconds: 86_410, ip_ranges_age_seconds: null },
      decision_log: { healthy: true, backlog: 0 },
      lockdown: { active: true, reason: 'r', set_by: 'a@b', set_at: iso(T0), verified_at: iso(T0 + 1) },
      heartbeat_seconds: 5,
      drift_grace_seconds: 60,
    });
    expect(parseHeartbeat(JSON.stringify(h))).toEqual(h);
  });

  it('writes the heartbeat with a TTL of three beats and keeps its policy hash seen; stop removes it', async () => {
    const calls: unknown[][] = [];
    const p = new HeartbeatPublisher(redis(true, calls), sources);
    p.publishNow();
    await p.settled();
    const ttl = 5_000 * MISSED_BEATS;
    expect(calls[0]).toEqual(['set', 'p:replica:r0:abcd', expect.any(String), 'PX', ttl]);
    expect(calls[1]).toEqual(['set', `p:policy-seen:${'h'.repeat(64)}`, String(T0 + 10_000), 'PX', ttl, 'NX']);
    expect(calls[2]).toEqual(['pexpire', `p:policy-seen:${'h'.repeat(64)}`, ttl]);
    await p.stop();
    expect(calls.at(-1)).toEqual(['del', 'p:replica:r0:abcd']);
    p.publishNow();
    await p.settled();
    expect(calls).toHaveLength(4);
  });

  it('skips beats while Redis is down and says so once', async () => {
    const calls: unknown[][] = [];
    const { logger, lines: events } = captureLog();
    const p = new HeartbeatPublisher(redis(false, calls), sources, logger);
    p.publishNow();
    await p.settled();
    p.publishNow();
    await p.settled();
    expect(calls).toEqual([]);
    expect(events).toHaveLength(1);
  });
});
