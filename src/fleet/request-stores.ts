import type { Dispatcher } from 'undici';
import type { StoredLocation } from '../location/request/uploads.js';
import type { Signal, SignalSource } from '../location/signals.js';
import type { Upstream } from '../plan/route.js';
import { BucketRegionDiscovery, createBucketRegionCache } from './bucket-discovery.js';
import type { FleetRedis } from './redis.js';
import { SharedCache, type SharedCacheOptions } from './shared-cache.js';

export type { StoredLocation };

/**
 * What the data plane remembers between requests, shared through the fleet
 * Redis when one is configured: bucket regions it discovered, and the
 * location a multipart upload or a resumable session was decided on, so
 * that the requests continuing it are decided on the same location.
 */

/**
 * How long an upload's location is kept: Cloud Storage resumable sessions
 * expire after a week; S3 multipart uploads have no expiry, but a week
 * covers any upload that is still making progress.
 */
export const UPLOAD_TTL_MS = 7 * 24 * 60 * 60 * 1000;
/** Default for discovered regions (each upstream sets its own TTLs). */
const REGION_TTL_MS = 24 * 60 * 60 * 1000;

export interface RequestStores {
  /** The upstream's discovery, when it has discovery on; one per compiled upstream, using that upstream's pool. */
  discoveryFor(upstream: Upstream): BucketRegionDiscovery | null;
  /** Multipart uploads and resumable sessions → the location they were decided on. */
  readonly uploads: SharedCache<StoredLocation>;
}

export interface RequestStoresOptions {
  /** The fleet connection, or null for this replica only. */
  redis: FleetRedis | null;
  /** The configured upstream's own pool (Forwarder.dispatcherFor). */
  dispatcherFor: (upstream: Upstream) => Dispatcher;
  onDiscoveryError?: (upstream: Upstream, err: unknown) => void;
  onRedisFallback?: SharedCacheOptions<unknown>['onRedisFallback'];
}

export function createRequestStores(options: RequestStoresOptions): RequestStores {
  const fallback = options.onRedisFallback ? { onRedisFallback: options.onRedisFallback } : {};
  // One region cache for every upstream: keys carry the upstream's origin, and what was learned survives reloads.
  const regions = createBucketRegionCache(options.redis, { ttlMs: REGION_TTL_MS, ...fallback });
  const uploads = new SharedCache<StoredLocation>({
    namespace: 'upload:',
    redis: options.redis,
    ttlMs: UPLOAD_TTL_MS,
    encode: (v) => JSON.stringify(v),
    decode: decodeStoredLocation,
    ...fallback,
  });
  // Weak: a reload replaces the upstream objects, and their discoveries go with them.
  const discoveries = new WeakMap<Upstream, BucketRegionDiscovery | null>();
  return {
    uploads,
    discoveryFor(upstream) {
      let d = discoveries.get(upstream);
      if (d === undefined) {
        const settings = upstream.discovery;
        d =
          settings === null
            ? null
            : new BucketRegionDiscovery({
                origin: upstream.url.origin,
                basePath: upstream.basePath,
                dispatcher: options.dispatcherFor(upstream),
                cache: regions,
                ttlMs: settings.ttlMs,
                negativeTtlMs: settings.negativeTtlMs,
                timeoutMs: settings.timeoutMs,
                ...(options.onDiscoveryError ? { onError: (err: unknown) => options.onDiscoveryError!(upstream, err) } : {}),
              });
        discoveries.set(upstream, d);
      }
      return d;
    },
  };
}

const MAX_SIGNALS = 64;
const SOURCE = /^[a-z][a-z0-9:-]{0,31}$/;
const JURISDICTION = /^[A-Z]{2}$/;

/**
 * A stored location as Redis holds it; anything malformed is a miss (undefined),
 * and a miss decides the continuing request on an unknown location.
 */
export function decodeStoredLocation(text: string): StoredLocation | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof doc !== 'object' || doc === null) return undefined;
  const { bucket, signals, decision } = doc as Record<string, unknown>;
  if (!(bucket === null || (typeof bucket === 'string' && bucket.length <= 1024))) return undefined;
  if (decision !== 'allow' && decision !== 'block') return undefined;
  if (!Array.isArray(signals) || signals.length > MAX_SIGNALS) return undefined;
  const out: Signal[] = [];
  for (const s of signals as unknown[]) {
    if (typeof s !== 'object' || s === null) return undefined;
    const { source, value, jurisdiction, region } = s as Record<string, unknown>;
    if (typeof source !== 'string' || !SOURCE.test(source)) return undefined;
    if (typeof value !== 'string' || value.length > 256) return undefined;
    if (!(jurisdiction === null || (typeof jurisdiction === 'string' && JURISDICTION.test(jurisdiction)))) return undefined;
    if (!(region === undefined || (typeof region === 'string' && region.length <= 64))) return undefined;
    out.push({ source: source as SignalSource, value, jurisdiction, ...(region === undefined ? {} : { region }) });
  }
  return { bucket, signals: out, decision };
}
