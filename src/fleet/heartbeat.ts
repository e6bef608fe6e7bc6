import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { silentLogger, type OperationalLogger } from '../log.js';
import type { LockdownState } from './lockdown.js';
import { parseJsonObject, type FleetRedis } from './redis.js';

/**
 * Each replica's heartbeat: a key `<prefix>replica:<id>:<instance>` holding
 * what the fleet view shows, refreshed every `heartbeat_seconds` and expiring
 * after three missed beats, so a replica that dies leaves the view on its
 * own. The instance (random per process start) keeps two processes that
 * claim one replica id (a restart racing its predecessor's key, or two
 * processes on one host) from overwriting each other; the view reports ids
 * that are live twice.
 *
 * Beside it, `<prefix>policy-seen:<hash>` records when a policy hash was
 * first live in the fleet (SET NX, kept alive by every beat of a replica
 * enforcing it, gone three beats after the last one stopped). The view
 * derives drift from it: how long two hashes have been live side by side,
 * independent of any one replica's restarts or of anyone watching.
 */

export const REPLICA_NAMESPACE = 'replica:';
export const POLICY_SEEN_NAMESPACE = 'policy-seen:';
/** A heartbeat expires after this many missed beats. */
export const MISSED_BEATS = 3;

export interface Heartbeat {
  v: 1;
  /** The replica id: the `replica` field of its decision records. */
  id: string;
  /** Random per process start. */
  instance: string;
  host: string;
  pid: number;
  version: string;
  started_at: string;
  /** When this heartbeat was written. */
  at: string;
  heartbeat_seconds: number;
  drift_grace_seconds: number;
  policy: { hash: string; loaded_at: string; shadow_hash: string | null };
  /** Ages of the location databases in use, seconds; null when none is loaded (or not reported). */
  location: { geoip_age_seconds: number | null; ip_ranges_age_seconds: number | null };
  decision_log: { healthy: boolean; backlog: number | null };
  lockdown: { active: boolean; reason: string | null; set_by: string | null; set_at: string | null; verified_at: string | null };
}

export interface HeartbeatSources {
  id: string;
  version: string;
  heartbeatSeconds: number;
  driftGraceSeconds: number;
  policy: () => { hash: string; loadedAt: string; shadowHash: string | null };
  decisionLog: () => { healthy: boolean; backlog: number | null };
  lockdown: () => LockdownState;
  /** Unix seconds the GeoIP database in use was built. */
  geoipBuildEpoch?: () => number | null;
  /** Unix seconds the oldest cloud IP-range file in use was published. */
  ipRangesCreatedEpoch?: () => number | null;
  now?: () => number;
  /** Default: random. */
  instance?: string;
}

export function heartbeatKey(id: string, instance: string): string {
  return `${REPLICA_NAMESPACE}${id}:${instance}`;
}

/** Parse a heartbeat; null for anything that is not one (another version, a foreign key). */
export function parseHeartbeat(text: string): Heartbeat | null {
  const value = parseJsonObject(text);
  if (value === null) return null;
  const h = value as Partial<Heartbeat>;
  if (h.v !== 1 || typeof h.id !== 'string' || typeof h.instance !== 'string' || typeof h.at !== 'string') return null;
  if (typeof h.policy !== 'object' || h.policy === null || typeof h.policy.hash !== 'string') return null;
  return h as Heartbeat;
}

export class HeartbeatPublisher {
  readonly instance: string;
  private readonly startedAt: string;
  private readonly now: () => number;
  private timer: NodeJS.Timeout | null = null;
  private inFlight: Promise<void> | null = null;
  private again = false;
  private failing = false;
  private stopped = false;

  constructor(
    private readonly redis: FleetRedis,
    private readonly sources: HeartbeatSources,
    private readonly logger: OperationalLogger = silentLogger,
  ) {
    this.now = sources.now ?? Date.now;
    this.instance = sources.instance ?? randomBytes(4).toString('hex');
    this.startedAt = new Date(this.now()).toISOString();
  }

  get key(): string {
    return this.redis.key(heartbeatKey(this.sources.id, this.instance));
  }

  get ttlMs(): number {
    return Math.round(this.sources.heartbeatSeconds * 1000 * MISSED_BEATS);
  }

  /** What this replica would publish now (also /fleet's "self" while Redis is down). */
  snapshot(): Heartbeat {
    const s = this.sources;
    const nowMs = this.now();
    const policy = s.policy();
    const log = s.decisionLog();
    const lockdown = s.lockdown();
    const age = (get?: () => number | null): number | null => {
      let epoch: number | null = null;
      try {
        epoch = get?.() ?? null;
      } catch {
        // A broken source reads as "unknown", as in the metrics.
      }
      return epoch === null || !Number.isFinite(epoch) ? null : Math.max(0, Math.round(nowMs / 1000 - epoch));
    };
    return {
      v: 1,
      id: s.id,
      instance: this.instance,
      host: hostname(),
      pid: process.pid,
      version: s.version,
      started_at: this.startedAt,
      at: new Date(nowMs).toISOString(),
      heartbeat_seconds: s.heartbeatSeconds,
      drift_grace_seconds: s.driftGraceSeconds,
      policy: { hash: policy.hash, loaded_at: policy.loadedAt, shadow_hash: policy.shadowHash },
      location: { geoip_age_seconds: age(s.geoipBuildEpoch), ip_ranges_age_seconds: age(s.ipRangesCreatedEpoch) },
      decision_log: { healthy: log.healthy, backlog: log.backlog },
      lockdown: {
        active: lockdown.active,
        reason: lockdown.record?.reason ?? null,
        set_by: lockdown.record?.set_by ?? null,
        set_at: lockdown.record?.set_at ?? null,
        verified_at: lockdown.verifiedAt,
      },
    };
  }

  /** Publish now and every heartbeat_seconds. */
  start(): void {
    if (this.redis.client === null || this.timer !== null) return;
    this.stopped = false;
    this.publishNow();
    this.timer = setInterval(() => this.publishNow(), Math.round(this.sources.heartbeatSeconds * 1000));
    this.timer.unref();
  }

  /** Publish at once (a reload or a lockdown change should not wait for the next beat). Never overlaps itself. */
  publishNow(): void {
    if (this.stopped || this.redis.client === null) return;
    if (this.inFlight !== null) {
      this.again = true;
      return;
    }
    this.inFlight = this.publish().finally(() => {
      this.inFlight = null;
      if (this.again) {
        this.again = false;
        this.publishNow();
      }
    });
  }

  /** Resolves when the beat in flight (if any) is done; for tests and close. */
  async settled(): Promise<void> {
    while (this.inFlight !== null) await this.inFlight;
  }

  /** Stop beating and remove this replica's key, so the view drops it at once. Never rejects. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.settled();
    const client = this.redis.client;
    if (client === null || !this.redis.healthy()) return;
    try {
      await client.del(this.key);
    } catch {
      // It expires on its own within three beats.
    }
  }

  private async publish(): Promise<void> {
    const client = this.redis.client;
    if (client === null) return;
    if (!this.redis.healthy()) {
      this.noteFailure(this.redis.lastError() ?? 'redis unavailable');
      return;
    }
    const beat = this.snapshot();
    const ttl = this.ttlMs;
    const seen = this.redis.key(POLICY_SEEN_NAMESPACE + beat.policy.hash);
    try {
      const results = await client
        .pipeline()
        .set(this.key, JSON.stringify(beat), 'PX', ttl)
        .set(seen, String(Date.parse(beat.at)), 'PX', ttl, 'NX')
        .pexpire(seen, ttl)
        .exec();
      const failed = results?.find(([err]) => err !== null)?.[0];
      if (failed) throw failed;
    } catch (err) {
      this.noteFailure((err as Error).message);
      return;
    }
    if (this.failing) {
      this.failing = false;
      this.logger.info({ key: this.key }, 'fleet heartbeat published again');
    }
  }

  private noteFailure(error: string): void {
    if (this.failing) return;
    this.failing = true;
    this.logger.warn({ error }, 'fleet heartbeat not published: redis unavailable (traffic is not affected)');
  }
}
