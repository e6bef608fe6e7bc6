import { hashKey } from '../location/request/uploads.js';
import type { FleetRedis } from './redis.js';

/**
 * A TTL cache in two tiers: an in-process Map (always) and the fleet's Redis
 * (when configured and healthy), so what one replica learned (a bucket's
 * region, a multipart upload's decision) is known to the others. Redis is
 * never required: any failure falls back to the local tier, reported only
 * through `onRedisFallback` (for a metric), never thrown.
 */
export interface SharedCacheOptions<V> {
  /** Key namespace inside the fleet prefix, e.g. 'bucket-region:'. */
  namespace: string;
  /** Null (or a FleetRedis without a client) for local-only. */
  redis: FleetRedis | null;
  /** Default time to live, ms. */
  ttlMs: number;
  /** Local tier bound; the least recently used entry goes first. Default 10 000. */
  maxLocalEntries?: number;
  /** Value ↔ string for Redis; default JSON. decode returns undefined for a value it rejects (treated as a miss). */
  encode?: (value: V) => string;
  decode?: (text: string) => V | undefined;
  /** Called when Redis was configured but not used: 'unavailable' (not healthy, skipped) or 'error' (a command failed). */
  onRedisFallback?: (op: 'get' | 'set' | 'delete', kind: 'unavailable' | 'error', err?: unknown) => void;
  /** Clock, for tests. */
  now?: () => number;
}

interface LocalEntry<V> {
  value: V;
  expires: number;
}

export class SharedCache<V> {
  private readonly local = new Map<string, LocalEntry<V>>();
  private readonly maxLocal: number;
  private readonly now: () => number;
  private readonly encode: (value: V) => string;
  private readonly decode: (text: string) => V | undefined;

  constructor(private readonly options: SharedCacheOptions<V>) {
    if (!(options.ttlMs > 0)) throw new Error('shared cache: ttlMs must be positive');
    this.maxLocal = options.maxLocalEntries ?? 10_000;
    this.now = options.now ?? Date.now;
    this.encode = options.encode ?? ((v) => JSON.stringify(v));
    this.decode = options.decode ?? ((s) => JSON.parse(s) as V);
  }

  /** The local tier only: synchronous, for the request path's fast check. */
  peekLocal(key: string): V | undefined {
    const e = this.local.get(key);
    if (e === undefined) return undefined;
    if (e.expires <= this.now()) {
      this.local.delete(key);
      return undefined;
    }
    // Refresh recency: Map order is the eviction order.
    this.local.delete(key);
    this.local.set(key, e);
    return e.value;
  }

  /** Local, then Redis (a Redis hit is kept locally for its remaining TTL). */
  async get(key: string): Promise<V | undefined> {
    const hit = this.peekLocal(key);
    if (hit !== undefined) return hit;
    const client = this.client('get');
    if (client === null) return undefined;
    const k = this.redisKey(key);
    try {
      const results = await client.pipeline().get(k).pttl(k).exec();
      const [getErr, text] = results?.[0] ?? [null, null];
      const [, pttl] = results?.[1] ?? [null, -2];
      if (getErr) throw getErr;
      if (typeof text !== 'string') return undefined;
      let value: V | undefined;
      try {
        value = this.decode(text);
      } catch {
        value = undefined;
      }
      if (value === undefined) return undefined;
      const remaining = typeof pttl === 'number' && pttl > 0 ? Math.min(pttl, this.options.ttlMs) : this.options.ttlMs;
      this.setLocal(key, value, remaining);
      return value;
    } catch (err) {
      this.options.onRedisFallback?.('get', 'error', err);
      return undefined;
    }
  }

  /** Store in both tiers; resolves once Redis answered (or was skipped). Never rejects. */
  async set(key: string, value: V, ttlMs: number = this.options.ttlMs): Promise<void> {
    const ttl = Math.max(1, Math.round(ttlMs));
    this.setLocal(key, value, ttl);
    const client = this.client('set');
    if (client === null) return;
    try {
      await client.set(this.redisKey(key), this.encode(value), 'PX', ttl);
    } catch (err) {
      this.options.onRedisFallback?.('set', 'error', err);
    }
  }

  async delete(key: string): Promise<void> {
    this.local.delete(key);
    const client = this.client('delete');
    if (client === null) return;
    try {
      await client.del(this.redisKey(key));
    } catch (err) {
      this.options.onRedisFallback?.('delete', 'error', err);
    }
  }

  clearLocal(): void {
    this.local.clear();
  }

  get localSize(): number {
    return this.local.size;
  }

  /** The full Redis key for `key` (prefix + namespace + key). */
  redisKey(key: string): string {
    const redis = this.options.redis;
    const name = this.options.namespace + key;
    return redis === null ? name : redis.key(name);
  }

  private client(op: 'get' | 'set' | 'delete') {
    const redis = this.options.redis;
    if (redis === null || redis.client === null) return null;
    if (!redis.healthy()) {
      this.options.onRedisFallback?.(op, 'unavailable');
      return null;
    }
    return redis.client;
  }

  private setLocal(key: string, value: V, ttlMs: number): void {
    this.local.delete(key);
    this.local.set(key, { value, expires: this.now() + ttlMs });
    while (this.local.size > this.maxLocal) {
      const oldest = this.local.keys().next();
      if (oldest.done) break;
      this.local.delete(oldest.value);
    }
  }
}

export { hashKey };
