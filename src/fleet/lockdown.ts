import { hostname, userInfo } from 'node:os';
import type { Redis } from 'ioredis';
import { silentLogger, type OperationalLogger } from '../log.js';
import { parseJsonObject, type FleetRedis } from './redis.js';

/**
 * The fleet-wide emergency lockdown. One key, `<prefix>lockdown`, holds the
 * switch as JSON: `{active, reason, set_by, set_at}`. `fleet lockdown` and
 * `fleet lift` write it and PUBLISH on `<prefix>lockdown:events` in one
 * MULTI. Every replica follows it:
 *
 * - a message on the channel triggers an immediate re-read (the message only
 *   says "look now": reading the key keeps the order right whatever arrives
 *   first, a message or a poll);
 * - polling every `pollMs` backs the subscription up (a message missed while
 *   the subscriber reconnected, a Redis blip);
 * - at start-up the key is read before the listeners open, bounded by a short
 *   timeout so a down Redis never blocks a start.
 *
 * A lift is written as `active: false`, never as a deleted key: a key that is
 * missing means "unknown" (Redis restarted empty, or was flushed), and an
 * unknown state keeps the last known one — a lockdown is never lifted by
 * losing Redis. A locked-down replica that finds the key missing writes its
 * last known record back (SET NX, so an operator's lift always wins), so
 * replicas that start later start locked down too.
 */

export const LOCKDOWN_KEY = 'lockdown';
export const LOCKDOWN_CHANNEL = 'lockdown:events';

export interface LockdownRecord {
  readonly active: boolean;
  readonly reason: string;
  /** user@host of whoever set or lifted it. */
  readonly set_by: string;
  readonly set_at: string;
}

export type LockdownTrigger = 'startup' | 'message' | 'poll';

export interface LockdownChange {
  readonly active: boolean;
  readonly previous: boolean;
  readonly trigger: LockdownTrigger;
  readonly record: LockdownRecord;
}

export interface LockdownState {
  readonly active: boolean;
  /** The record the state came from; null before one was ever read. */
  readonly record: LockdownRecord | null;
  /** When the key was last read successfully (ISO); null when never. */
  readonly verifiedAt: string | null;
}

export interface LockdownWatcherOptions {
  redis: FleetRedis;
  /** Poll interval backing up the subscription, ms. */
  pollMs: number;
  /** How long start() waits for Redis before starting with the state unknown (not locked), ms. */
  startupTimeoutMs?: number;
  /** Called once per change of this replica's state, after it took effect. */
  onChange?: (change: LockdownChange) => void;
  /** Called for every new record, also one that keeps the state (a lockdown re-issued with a new reason). */
  onRecord?: (record: LockdownRecord) => void;
  /** The operational log; default: silent. */
  logger?: OperationalLogger;
  now?: () => number;
}

/** Parse the key's value; null for anything that is not a lockdown record. */
export function parseLockdownRecord(text: string): LockdownRecord | null {
  const v = parseJsonObject(text);
  if (v === null) return null;
  if (typeof v.active !== 'boolean' || typeof v.reason !== 'string' || typeof v.set_by !== 'string' || typeof v.set_at !== 'string') return null;
  return { active: v.active, reason: v.reason, set_by: v.set_by, set_at: v.set_at };
}

/** user@host for `set_by`: who ran the command, from where. */
export function operatorIdentity(): string {
  let user: string;
  try {
    user = userInfo().username;
  } catch {
    // No passwd entry (a container running as an arbitrary UID).
    user = process.env.USER ?? process.env.LOGNAME ?? `uid-${process.getuid?.() ?? 'unknown'}`;
  }
  return `${user}@${hostname()}`;
}

/** Read the switch; null when the key is missing or unreadable. Throws when Redis cannot be asked. */
export async function readLockdown(client: Redis, key: (name: string) => string): Promise<LockdownRecord | null> {
  const text = await client.get(key(LOCKDOWN_KEY));
  return text === null ? null : parseLockdownRecord(text);
}

/** Set or lift the switch and tell every replica, atomically (MULTI: SET + PUBLISH). Returns how many subscribers got the message. */
export async function writeLockdown(client: Redis, key: (name: string) => string, record: LockdownRecord): Promise<number> {
  const text = JSON.stringify(record);
  const results = await client.multi().set(key(LOCKDOWN_KEY), text).publish(key(LOCKDOWN_CHANNEL), text).exec();
  if (results === null) throw new Error('lockdown: the transaction was aborted');
  for (const [err] of results) if (err) throw err;
  const published = results[1]?.[1];
  return typeof published === 'number' ? published : 0;
}

export class LockdownWatcher {
  private isActive = false;
  private record: LockdownRecord | null = null;
  private verifiedAt: string | null = null;
  private poll: NodeJS.Timeout | null = null;
  private reading: Promise<void> | null = null;
  /** A read asked for while one was in flight (its trigger, for the log), run right after it. */
  private again: LockdownTrigger | null = null;
  private closed = false;
  /** So a Redis outage is logged once, not every poll. */
  private failing = false;
  private lastBadText: string | null = null;
  private unsubscribe: (() => void) | null = null;
  private readonly now: () => number;
  private readonly logger: OperationalLogger;

  constructor(private readonly options: LockdownWatcherOptions) {
    this.now = options.now ?? Date.now;
    this.logger = options.logger ?? silentLogger;
  }

  /** Read per request by every planner: a plain field, no I/O. */
  active(): boolean {
    return this.isActive;
  }

  state(): LockdownState {
    return { active: this.isActive, record: this.record, verifiedAt: this.verifiedAt };
  }

  /**
   * Read the switch once (waiting for Redis at most `startupTimeoutMs`), then
   * follow it. Never rejects: without Redis the replica starts unlocked and
   * picks a lockdown up as soon as Redis answers.
   */
  async start(): Promise<void> {
    const { redis } = this.options;
    if (redis.client === null) return;
    const ready = await waitReady(redis, this.options.startupTimeoutMs ?? 1_500);
    if (ready) await this.read('startup');
    else this.logger.warn({ error: redis.lastError() }, 'fleet lockdown state unknown at start-up: redis unavailable; starting without lockdown');
    if (this.closed) return;
    const sub = redis.subscriber?.() ?? null;
    if (sub !== null) {
      const channel = redis.key(LOCKDOWN_CHANNEL);
      const onMessage = (from: string, message: string) => {
        if (from !== channel || this.closed) return;
        if (redis.healthy()) {
          this.refresh('message');
          return;
        }
        // The command connection is down but the message got through: it carries the record.
        const record = parseLockdownRecord(message);
        if (record !== null) this.apply(record, 'message');
      };
      sub.on('message', onMessage);
      sub.subscribe(channel).catch((err: unknown) => {
        // Polling still applies every change; only the one-message latency is lost.
        if (!this.closed) this.logger.warn({ error: (err as Error).message }, 'fleet lockdown: subscribe failed; relying on polling');
      });
      this.unsubscribe = () => {
        sub.off('message', onMessage);
        sub.unsubscribe(channel).catch(() => {});
      };
    }
    this.poll = setInterval(() => this.refresh('poll'), this.options.pollMs);
    this.poll.unref();
  }

  /** Re-read the key now; reads never overlap (one more runs after the current if asked meanwhile). */
  refresh(trigger: LockdownTrigger): void {
    if (this.closed) return;
    if (this.reading !== null) {
      // A message during a poll's read must still be read after it: the poll may have read too early.
      if (this.again !== 'message') this.again = trigger;
      return;
    }
    this.reading = this.read(trigger).finally(() => {
      this.reading = null;
      const next = this.again;
      this.again = null;
      if (next !== null) this.refresh(next);
    });
  }

  close(): void {
    this.closed = true;
    this.unsubscribe?.();
    this.unsubscribe = null;
    if (this.poll) clearInterval(this.poll);
    this.poll = null;
  }

  private async read(trigger: LockdownTrigger): Promise<void> {
    const { redis } = this.options;
    const client = redis.client;
    if (client === null) return;
    if (!redis.healthy()) {
      // The last known state stays in force; nothing to do until Redis is back.
      this.noteFailure(redis.lastError() ?? 'redis unavailable');
      return;
    }
    let text: string | null;
    try {
      text = await client.get(redis.key(LOCKDOWN_KEY));
    } catch (err) {
      this.noteFailure((err as Error).message);
      return;
    }
    if (this.closed) return;
    if (this.failing) {
      this.failing = false;
      this.logger.info({ active: this.isActive }, 'fleet lockdown state readable again');
    }
    this.verifiedAt = new Date(this.now()).toISOString();
    if (text === null) {
      await this.restore(client);
      return;
    }
    const record = parseLockdownRecord(text);
    if (record === null) {
      if (text !== this.lastBadText) {
        this.lastBadText = text;
        this.logger.error({ active: this.isActive }, 'fleet lockdown key holds no valid record; keeping the last known state');
      }
      return;
    }
    this.lastBadText = null;
    this.apply(record, trigger);
  }

  /** The key is missing: Redis lost it. Put back what this replica knows, unless someone wrote it meanwhile. */
  private async restore(client: Redis): Promise<void> {
    const record = this.record;
    if (record === null || !record.active) return;
    try {
      const ok = await client.set(this.options.redis.key(LOCKDOWN_KEY), JSON.stringify(record), 'NX');
      if (ok === 'OK') this.logger.warn(record, 'fleet lockdown key was missing from redis (restarted or flushed?); restored the last known lockdown');
    } catch (err) {
      this.noteFailure((err as Error).message);
    }
  }

  private apply(record: LockdownRecord, trigger: LockdownTrigger): void {
    const previous = this.isActive;
    const known = this.record;
    this.record = record;
    this.isActive = record.active;
    if (record.active !== previous) this.options.onChange?.({ active: record.active, previous, trigger, record });
    // After the state took effect: a heartbeat sent from here must already show it.
    const same = known !== null && known.active === record.active && known.reason === record.reason && known.set_by === record.set_by && known.set_at === record.set_at;
    if (!same) this.options.onRecord?.(record);
  }

  private noteFailure(error: string): void {
    if (this.failing) return;
    this.failing = true;
    this.logger.warn({ active: this.isActive, error }, 'fleet lockdown state cannot be read; keeping the last known state');
  }
}

/** Resolves true once the command connection is ready, false after `timeoutMs`. */
export function waitReady(redis: FleetRedis, timeoutMs: number): Promise<boolean> {
  const client = redis.client;
  if (client === null) return Promise.resolve(false);
  if (redis.healthy()) return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      clearTimeout(timer);
      client.off('ready', onReady);
      // connectFleetRedis registered its 'ready' listener first, so healthy() is already true here.
      resolve(ok);
    };
    const onReady = () => done(true);
    const timer = setTimeout(() => done(false), timeoutMs);
    client.on('ready', onReady);
  });
}
