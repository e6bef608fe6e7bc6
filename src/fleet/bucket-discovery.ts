import type { Dispatcher } from 'undici';
import { REGION_ID, regionFromRedirect } from '../location/request/s3-region.js';
import type { FleetRedis } from './redis.js';
import { SharedCache, type SharedCacheOptions } from './shared-cache.js';

/**
 * Bucket → region discovery for S3: ask the upstream itself with
 * `HEAD /BUCKET`, whose answer carries `x-amz-bucket-region` whether the
 * bucket is ours (200), someone else's (403), elsewhere (301) or the request
 * is unacceptable (400). The request goes only through the dispatcher the
 * caller passes, which must be the configured upstream's pool: nothing from
 * the client request chooses where it goes. Results are shared through the
 * fleet cache; concurrent discoveries of one bucket share one HEAD.
 */
export interface BucketRegionDiscoveryOptions {
  /** The upstream's origin (scheme://host:port), which scopes cache keys: one bucket name, one namespace per endpoint. */
  readonly origin: string;
  /** The upstream URL's path without a trailing slash ('' for the root). */
  readonly basePath?: string;
  /** The configured upstream's pool. */
  readonly dispatcher: Dispatcher;
  /** Shared cache of region id, or null for "asked, no region" (namespace e.g. 'bucket-region:'). */
  readonly cache: SharedCache<string | null>;
  /** How long a found region is kept; default: the cache's TTL. */
  readonly ttlMs?: number;
  /** How long "no region" (no header, 404) is kept; 0 keeps nothing. Default 60 s. */
  readonly negativeTtlMs?: number;
  /** Bound on the HEAD; default 5 s. */
  readonly timeoutMs?: number;
  /** A HEAD that failed (transport, timeout): for a metric or log. Not cached. */
  readonly onError?: (err: unknown) => void;
}

// Any name S3 accepts in a path, legacy ones included; never '/', '%', '..'.
const PATH_BUCKET = /^[A-Za-z0-9._-]{1,255}$/;
export class BucketRegionDiscovery {
  private readonly inflight = new Map<string, Promise<string | null>>();
  private readonly basePath: string;
  private readonly negativeTtlMs: number;
  private readonly timeoutMs: number;

  constructor(private readonly options: BucketRegionDiscoveryOptions) {
    this.basePath = (options.basePath ?? '').replace(/\/+$/, '');
    this.negativeTtlMs = options.negativeTtlMs ?? 60_000;
    this.timeoutMs = options.timeoutMs ?? 5_000;
  }

  /** What the local tier knows, synchronously: region, null (asked, none), undefined (not known here). */
  cached(bucket: string): string | null | undefined {
    return this.options.cache.peekLocal(this.key(bucket));
  }

  /** The bucket's region, or null when it could not be found out (the caller treats that as unknown). Never rejects. */
  discover(bucket: string): Promise<string | null> {
    if (!PATH_BUCKET.test(bucket) || bucket === '.' || bucket === '..') return Promise.resolve(null);
    const key = this.key(bucket);
    const running = this.inflight.get(key);
    if (running !== undefined) return running;
    const p = this.lookup(bucket, key).finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }

  /** Record a region learned elsewhere (a successful CreateBucket, a redirect). */
  async remember(bucket: string, region: string): Promise<void> {
    if (!PATH_BUCKET.test(bucket) || !REGION_ID.test(region)) return;
    await this.options.cache.set(this.key(bucket), region, this.options.ttlMs);
  }

  /** Drop what is known (e.g. after DeleteBucket). */
  async forget(bucket: string): Promise<void> {
    await this.options.cache.delete(this.key(bucket));
  }

  private key(bucket: string): string {
    return `${this.options.origin}|${bucket}`;
  }

  private async lookup(bucket: string, key: string): Promise<string | null> {
    const known = await this.options.cache.get(key);
    if (known !== undefined) return known;
    let region: string | null;
    try {
      region = await this.head(bucket);
    } catch (err) {
      this.options.onError?.(err);
      return null;
    }
    if (region !== null) await this.options.cache.set(key, region, this.options.ttlMs);
    else if (this.negativeTtlMs > 0) await this.options.cache.set(key, null, this.negativeTtlMs);
    return region;
  }

  private async head(bucket: string): Promise<string | null> {
    const res = await this.options.dispatcher.request({
      method: 'HEAD',
      path: `${this.basePath}/${bucket}`,
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
      signal: AbortSignal.timeout(this.timeoutMs),
    });
    await res.body.dump().catch(() => {});
    return regionFromRedirect(res.statusCode, res.headers, null);
  }
}

/** The shared cache discovery uses: namespace 'bucket-region:', values a region id or null, anything else read as a miss. */
export function createBucketRegionCache(
  redis: FleetRedis | null,
  options: { readonly ttlMs: number; readonly onRedisFallback?: SharedCacheOptions<string | null>['onRedisFallback'] },
): SharedCache<string | null> {
  return new SharedCache<string | null>({
    namespace: 'bucket-region:',
    redis,
    ttlMs: options.ttlMs,
    ...(options.onRedisFallback ? { onRedisFallback: options.onRedisFallback } : {}),
    encode: (v) => (v === null ? '' : v),
    // '' is the stored "no region"; a value that is not a region id is a miss.
    decode: (s) => (s === '' ? null : REGION_ID.test(s) ? s : undefined),
  });
}
