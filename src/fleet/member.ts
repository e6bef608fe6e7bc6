import type { OperationalLogger } from '../log.js';
import type { Metrics } from '../metrics/registry.js';
import { HeartbeatPublisher, type Heartbeat } from './heartbeat.js';
import { LockdownWatcher, type LockdownChange, type LockdownTrigger } from './lockdown.js';
import { connectFleetRedis, type FleetRedis } from './redis.js';
import { readFleetView } from './view.js';

/**
 * This replica as a member of the fleet, on its one Redis connection: its
 * heartbeat, the lockdown switch it follows, and what /fleet and /readyz
 * say about them. Without `redis` configured every part is inert and the
 * replica runs on its own; with Redis down, traffic keeps flowing under the
 * last known lockdown state. Nothing here is on a request's path except
 * `lockdownActive()`, a field read.
 */

export interface FleetSettings {
  heartbeat_seconds: number;
  drift_grace_seconds: number;
  lockdown_poll_ms: number;
}

/** What a replica tells its operator (and, once the decision log can hold events, its auditor). */
export type FleetEvent =
  | {
      type: 'lockdown';
      /** The state this replica switched to. */
      state: 'locked' | 'lifted';
      trigger: LockdownTrigger;
      reason: string;
      set_by: string;
      set_at: string;
      replica: string;
      /** When this replica applied it. */
      at: string;
    }
  | { type: 'redis'; up: boolean; error: string | null; replica: string; at: string };

export interface FleetMemberOptions {
  /** The replica's one fleet connection (see connectFleetRedis); null: fleet features off. Its owner closes it, after close() here. */
  redis: FleetRedis | null;
  settings: FleetSettings;
  replica: string;
  version: string;
  metrics: Pick<Metrics, 'lockdownChanges' | 'lockdownActive' | 'fleetRedisUp'>;
  /** The operational log (heartbeat and lockdown watcher included). */
  logger: OperationalLogger;
  onFleetEvent?: (event: FleetEvent) => void;
  policy: () => { hash: string; loadedAt: string; shadowHash: string | null };
  decisionLog: () => { healthy: boolean; backlog: number | null };
  /** Location database ages for the heartbeat (Unix seconds, as in EvidenceSources); absent: reported as null. */
  geoipBuildEpoch?: () => number | null;
  ipRangesCreatedEpoch?: () => number | null;
  /** How long start() waits for Redis to read the lockdown switch, ms. */
  startupTimeoutMs?: number;
}

export interface FleetResponse {
  status: number;
  body: unknown;
}

export interface FleetMember {
  /** Per request: whether a fleet-wide lockdown is in force here. */
  lockdownActive(): boolean;
  /** The /readyz check: always ok (Redis is optional); the detail says what is missing. */
  readiness(): { ok: boolean; detail: string };
  /** The /fleet response. */
  view(): Promise<FleetResponse>;
  /** Read the lockdown switch (bounded wait) and follow it; call before listening. */
  start(): Promise<void>;
  /** Start heartbeats; call once listening. */
  announce(): void;
  /** Publish the heartbeat now (after a policy reload). */
  refresh(): void;
  /** Stop following the switch and remove the heartbeat; call before the connection is closed. */
  close(): Promise<void>;
}

export function joinFleet(options: FleetMemberOptions): FleetMember {
  const { metrics, replica, settings, logger } = options;
  const emit = (event: FleetEvent) => {
    try {
      options.onFleetEvent?.(event);
    } catch (err) {
      logger.error({ error: (err as Error).message }, 'fleet event callback failed');
    }
  };
  const configured = options.redis !== null && options.redis.client !== null;
  const redis = options.redis ?? connectFleetRedis(null);
  let wasUp = redis.healthy();
  metrics.lockdownActive.set(0);
  if (configured) metrics.fleetRedisUp.set(wasUp ? 1 : 0);
  // Events arrive asynchronously, after watcher and heartbeat below exist.
  const unwatch = redis.watchState?.((up, error) => {
    metrics.fleetRedisUp.set(up ? 1 : 0);
    if (up === wasUp) return;
    wasUp = up;
    if (up) logger.info({ lockdown: watcher.active() }, 'fleet redis connected');
    else logger.warn({ error, lockdown: watcher.active() }, 'fleet redis unavailable; traffic continues with the last known lockdown state');
    emit({ type: 'redis', up, error, replica, at: new Date().toISOString() });
    // A replica back in touch says so at once rather than at the next beat.
    if (up) heartbeat.publishNow();
  });

  const watcher = new LockdownWatcher({
    redis,
    pollMs: settings.lockdown_poll_ms,
    ...(options.startupTimeoutMs !== undefined ? { startupTimeoutMs: options.startupTimeoutMs } : {}),
    onChange(change: LockdownChange) {
      const state = change.active ? 'locked' : 'lifted';
      metrics.lockdownChanges.inc({ state });
      metrics.lockdownActive.set(change.active ? 1 : 0);
      const { reason, set_by, set_at } = change.record;
      logger.warn(
        { reason, set_by, set_at, trigger: change.trigger },
        change.active
          ? 'fleet lockdown applied: every rule enforces, unknown locations are refused, allow-exceptions are suspended'
          : 'fleet lockdown lifted: rules enforce as configured again',
      );
      emit({ type: 'lockdown', state, trigger: change.trigger, reason, set_by, set_at, replica, at: new Date().toISOString() });
    },
    // Every new record (a change, or a lockdown re-issued with a new reason) goes out at once, so `fleet lockdown` can confirm it.
    onRecord: () => heartbeat.publishNow(),
    logger,
  });

  const heartbeat = new HeartbeatPublisher(
    redis,
    {
      id: replica,
      version: options.version,
      heartbeatSeconds: settings.heartbeat_seconds,
      driftGraceSeconds: settings.drift_grace_seconds,
      policy: options.policy,
      decisionLog: options.decisionLog,
      lockdown: () => watcher.state(),
      ...(options.geoipBuildEpoch ? { geoipBuildEpoch: options.geoipBuildEpoch } : {}),
      ...(options.ipRangesCreatedEpoch ? { ipRangesCreatedEpoch: options.ipRangesCreatedEpoch } : {}),
    },
    logger,
  );

  const lockdownText = () => {
    const s = watcher.state();
    if (!s.active) return 'lockdown off';
    return `LOCKDOWN ACTIVE since ${s.record?.set_at ?? '?'} by ${s.record?.set_by ?? '?'}: ${s.record?.reason ?? ''}`;
  };
  const self = (): Heartbeat => heartbeat.snapshot();

  return {
    lockdownActive: () => watcher.active(),
    readiness() {
      if (!configured) return { ok: true, detail: 'redis not configured: this replica runs on its own (no fleet view, no lockdown)' };
      if (!redis.healthy()) return { ok: true, detail: `redis unavailable: ${redis.lastError() ?? 'unknown error'}; ${lockdownText()} (last known)` };
      return { ok: true, detail: `redis ok; ${lockdownText()}` };
    },
    async view() {
      if (redis.client === null) {
        return { status: 200, body: { fleet: false, detail: 'redis is not configured: this replica runs on its own', self: self() } };
      }
      if (!redis.healthy()) {
        return { status: 503, body: { error: `redis unavailable: ${redis.lastError() ?? 'unknown error'}`, self: self(), lockdown: watcher.state() } };
      }
      try {
        const view = await readFleetView(redis.client, redis.key, { driftGraceSeconds: settings.drift_grace_seconds });
        return { status: 200, body: { ...view, self: { id: replica, instance: heartbeat.instance } } };
      } catch (err) {
        return { status: 503, body: { error: `redis unavailable: ${(err as Error).message}`, self: self(), lockdown: watcher.state() } };
      }
    },
    start: () => watcher.start(),
    announce: () => heartbeat.start(),
    refresh: () => heartbeat.publishNow(),
    async close() {
      unwatch?.();
      watcher.close();
      await heartbeat.stop();
    },
  };
}
