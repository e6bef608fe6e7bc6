import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { Pool, request } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connectFleetRedis, type FleetRedis } from '../../src/fleet/redis.js';
import { SharedCache } from '../../src/fleet/shared-cache.js';
import { readBounded } from '../../src/location/request/body.js';
import { BucketRegionDiscovery, createBucketRegionCache } from '../../src/fleet/bucket-discovery.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/upstream.js';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
// One prefix per run, so parallel runs and leftovers never meet.
const PREFIX = `residency-test:${randomUUID()}:`;

async function waitHealthy(redis: FleetRedis, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!redis.healthy()) {
    if (Date.now() > deadline) throw new Error(`redis at ${REDIS_URL} did not become ready: ${redis.lastError()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createNetServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

let redis: FleetRedis;

beforeAll(async () => {
  redis = connectFleetRedis({ url: REDIS_URL, keyPrefix: PREFIX });
  await waitHealthy(redis);
});

afterAll(async () => {
  // Remove every key this run wrote.
  const client = redis.client!;
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `${PREFIX}*`, 'COUNT', 500);
    if (keys.length > 0) await client.del(...keys);
    cursor = next;
  } while (cursor !== '0');
  await redis.close();
});

describe('SharedCache against a real Redis', () => {
  it('what one replica stores, another reads (and keeps locally)', async () => {
    const a = new SharedCache<string | null>({ namespace: 'sc1:', redis, ttlMs: 10_000 });
    const b = new SharedCache<string | null>({ namespace: 'sc1:', redis, ttlMs: 10_000 });
    await a.set('bkt', 'eu-west-1');
    await a.set('none', null);
    expect(await redis.client!.get(PREFIX + 'sc1:bkt')).toBe('"eu-west-1"');
    const pttl = await redis.client!.pttl(PREFIX + 'sc1:bkt');
    expect(pttl).toBeGreaterThan(9_000);
    expect(pttl).toBeLessThanOrEqual(10_000);
    expect(b.peekLocal('bkt')).toBeUndefined();
    expect(await b.get('bkt')).toBe('eu-west-1');
    expect(b.peekLocal('bkt')).toBe('eu-west-1');
    expect(await b.get('none')).toBeNull();
    expect(await b.get('absent')).toBeUndefined();
    await a.delete('bkt');
    expect(await redis.client!.exists(PREFIX + 'sc1:bkt')).toBe(0);
  });

  it('Redis TTL applies to the other replicas', async () => {
    const a = new SharedCache<number>({ namespace: 'sc2:', redis, ttlMs: 10_000 });
    const b = new SharedCache<number>({ namespace: 'sc2:', redis, ttlMs: 10_000 });
    await a.set('short', 7, 150);
    await new Promise((r) => setTimeout(r, 300));
    expect(await b.get('short')).toBeUndefined();
  });

  it('a value the decoder rejects is a miss', async () => {
    await redis.client!.set(PREFIX + 'bucket-region:x', 'not a region!', 'PX', 10_000);
    const cache = createBucketRegionCache(redis, { ttlMs: 10_000 });
    expect(await cache.get('x')).toBeUndefined();
  });

  it('Redis unreachable: local only, counted, fast', async () => {
    const port = await closedPort();
    const dead = connectFleetRedis({ url: `redis://127.0.0.1:${port}`, keyPrefix: PREFIX });
    try {
      const events: string[] = [];
      const cache = new SharedCache<string>({ namespace: 'sc3:', redis: dead, ttlMs: 10_000, onRedisFallback: (op, kind) => events.push(`${op}:${kind}`) });
      const started = performance.now();
      await cache.set('k', 'v');
      expect(await cache.get('k')).toBe('v');
      expect(await cache.get('other')).toBeUndefined();
      expect(performance.now() - started).toBeLessThan(500);
      expect(events).toEqual(['set:unavailable', 'get:unavailable']);

      // Even if the health flag were stale, a failing command falls back, never throws.
      const lying: FleetRedis = { ...dead, healthy: () => true };
      const events2: string[] = [];
      const cache2 = new SharedCache<string>({ namespace: 'sc3:', redis: lying, ttlMs: 10_000, onRedisFallback: (op, kind) => events2.push(`${op}:${kind}`) });
      const t2 = performance.now();
      await cache2.set('k', 'v');
      expect(await cache2.get('missing')).toBeUndefined();
      expect(cache2.peekLocal('k')).toBe('v');
      expect(performance.now() - t2).toBeLessThan(1_500);
      expect(events2).toEqual(['set:error', 'get:error']);
    } finally {
      await dead.close();
    }
  });
});

describe('bucket region discovery', () => {
  let upstream: RecordingUpstream;
  let pool: Pool;
  const REGIONS: Record<string, [number, string | null]> = {
    '/eu-bucket': [200, 'eu-central-1'],
    '/base/eu-bucket': [200, 'eu-central-1'],
    '/moved': [301, 'eu-west-1'],
    '/forbidden': [403, 'us-east-2'],
    '/bad': [400, 'ap-south-1'],
    '/missing': [404, null],
    '/shared': [403, 'eu-north-1'],
  };

  beforeAll(async () => {
    upstream = await startRecordingUpstream({
      hang: (req) => req.url === '/slow',
      respond: (req) => {
        const [status, region] = REGIONS[req.url] ?? [404, null];
        return { status, headers: region === null ? {} : { 'x-amz-bucket-region': region }, body: '' };
      },
    });
    pool = new Pool(upstream.url);
  });
  afterAll(async () => {
    await pool.close();
    await upstream.close();
  });
  afterEach(() => upstream.reset());

  let n = 0;
  /** A fresh cache (own local tier) on the shared Redis, under a namespace unique to the test. */
  const freshNamespace = () => `bucket-region-${++n}:`;
  const cacheIn = (namespace: string) => new SharedCache<string | null>({ namespace, redis, ttlMs: 60_000 });
  const discovery = (cache: SharedCache<string | null>, extra: Partial<ConstructorParameters<typeof BucketRegionDiscovery>[0]> = {}) =>
    new BucketRegionDiscovery({ origin: upstream.url, dispatcher: pool, cache, ...extra });
  const heads = () => upstream.requests.filter((r) => r.method === 'HEAD');

  it('sends HEAD /BUCKET to the upstream and caches the answer', async () => {
    const d = discovery(cacheIn(freshNamespace()));
    expect(await d.discover('eu-bucket')).toBe('eu-central-1');
    expect(heads()).toHaveLength(1);
    const [req] = heads();
    expect(req!.url).toBe('/eu-bucket');
    // The pool decides where it goes and the Host it carries, never the request being planned.
    expect(req!.headers.host).toBe(`127.0.0.1:${upstream.port}`);
    expect(await d.discover('eu-bucket')).toBe('eu-central-1');
    expect(d.cached('eu-bucket')).toBe('eu-central-1');
    expect(heads()).toHaveLength(1);
  });

  it('reads the header from 301, 403 and 400 alike', async () => {
    const d = discovery(cacheIn(freshNamespace()));
    expect(await d.discover('moved')).toBe('eu-west-1');
    expect(await d.discover('forbidden')).toBe('us-east-2');
    expect(await d.discover('bad')).toBe('ap-south-1');
  });

  it('honours the upstream base path', async () => {
    const d = discovery(cacheIn(freshNamespace()), { basePath: '/base/' });
    expect(await d.discover('eu-bucket')).toBe('eu-central-1');
    expect(heads().map((r) => r.url)).toEqual(['/base/eu-bucket']);
  });

  it('concurrent discoveries of one bucket share one HEAD', async () => {
    const d = discovery(cacheIn(freshNamespace()));
    const results = await Promise.all(Array.from({ length: 20 }, () => d.discover('moved')));
    expect(new Set(results)).toEqual(new Set(['eu-west-1']));
    expect(heads()).toHaveLength(1);
  });

  it('two replicas sharing one Redis send one HEAD in total', async () => {
    const ns = freshNamespace();
    const replicaA = discovery(cacheIn(ns));
    const replicaB = discovery(cacheIn(ns));
    expect(await replicaA.discover('shared')).toBe('eu-north-1');
    expect(await replicaB.discover('shared')).toBe('eu-north-1');
    expect(heads()).toHaveLength(1);
    // B now has it locally too.
    expect(replicaB.cached('shared')).toBe('eu-north-1');
  });

  it('createBucketRegionCache shares across replicas the same way', async () => {
    const origin = `${upstream.url}/${randomUUID()}`; // a scope of its own
    const a = new BucketRegionDiscovery({ origin, dispatcher: pool, cache: createBucketRegionCache(redis, { ttlMs: 60_000 }) });
    const b = new BucketRegionDiscovery({ origin, dispatcher: pool, cache: createBucketRegionCache(redis, { ttlMs: 60_000 }) });
    expect(await a.discover('eu-bucket')).toBe('eu-central-1');
    expect(await b.discover('eu-bucket')).toBe('eu-central-1');
    expect(heads()).toHaveLength(1);
  });

  it('no region is null, kept for the negative TTL only', async () => {
    const d = discovery(cacheIn(freshNamespace()), { negativeTtlMs: 200 });
    expect(await d.discover('missing')).toBeNull();
    expect(await d.discover('missing')).toBeNull();
    expect(heads()).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 300));
    expect(await d.discover('missing')).toBeNull();
    expect(heads()).toHaveLength(2);
  });

  it('remember() primes the cache (e.g. after a CreateBucket)', async () => {
    const d = discovery(cacheIn(freshNamespace()));
    await d.remember('new-bucket', 'eu-west-3');
    expect(await d.discover('new-bucket')).toBe('eu-west-3');
    expect(heads()).toHaveLength(0);
    await d.forget('new-bucket');
    expect(d.cached('new-bucket')).toBeUndefined();
  });

  it('a timeout is null, reported, and not cached', async () => {
    const errors: unknown[] = [];
    const d = discovery(cacheIn(freshNamespace()), { timeoutMs: 200, onError: (e) => errors.push(e) });
    const started = performance.now();
    expect(await d.discover('slow')).toBeNull();
    expect(performance.now() - started).toBeLessThan(2_000);
    expect(errors).toHaveLength(1);
    expect(d.cached('slow')).toBeUndefined();
  });

  it('an unreachable upstream is null, reported', async () => {
    const port = await closedPort();
    const deadPool = new Pool(`http://127.0.0.1:${port}`);
    try {
      const errors: unknown[] = [];
      const d = new BucketRegionDiscovery({ origin: `http://127.0.0.1:${port}`, dispatcher: deadPool, cache: cacheIn(freshNamespace()), onError: (e) => errors.push(e) });
      expect(await d.discover('eu-bucket')).toBeNull();
      expect(errors).toHaveLength(1);
    } finally {
      await deadPool.close();
    }
  });

  it('names that could escape the path are never sent', async () => {
    const d = discovery(cacheIn(freshNamespace()));
    for (const name of ['', '.', '..', '../x', 'a/b', '%2e%2e', 'a?b', 'a#b', 'a b', 'x'.repeat(256), 'http://evil.example/']) {
      expect(await d.discover(name)).toBeNull();
    }
    expect(upstream.requests).toHaveLength(0);
  });

  it('Redis unreachable: discovery still works, per replica', async () => {
    const port = await closedPort();
    const dead = connectFleetRedis({ url: `redis://127.0.0.1:${port}`, keyPrefix: PREFIX });
    try {
      let fallbacks = 0;
      const cache = new SharedCache<string | null>({ namespace: 'dead:', redis: dead, ttlMs: 60_000, onRedisFallback: () => fallbacks++ });
      const d = discovery(cache);
      expect(await d.discover('eu-bucket')).toBe('eu-central-1');
      expect(await d.discover('eu-bucket')).toBe('eu-central-1');
      expect(heads()).toHaveLength(1);
      expect(fallbacks).toBeGreaterThan(0);
    } finally {
      await dead.close();
    }
  });
});

describe('readBounded on a live request', () => {
  let server: Server;
  let upstream: RecordingUpstream;
  let pool: Pool;
  let url: string;

  beforeAll(async () => {
    upstream = await startRecordingUpstream();
    pool = new Pool(upstream.url);
    // Inspect up to 1 KiB, then forward exactly the bytes read; refuse larger bodies.
    server = createHttpServer((req, res) => {
      void (async () => {
        const body = await readBounded(req, 1024);
        if (!body.ok) {
          res.writeHead(400, { 'content-type': 'text/plain', connection: 'close' });
          res.end(`refused: ${body.reason} after ${body.bytes.length} bytes\n`);
          return;
        }
        const headers: Record<string, string> = { 'content-length': String(body.bytes.length) };
        const out = await pool.request({ method: 'PUT', path: req.url!, headers, body: body.bytes });
        await out.body.dump();
        res.writeHead(out.statusCode, {
          'x-sha': createHash('sha256').update(body.bytes).digest('hex'),
          'x-client-framing': req.headers['transfer-encoding'] ?? 'length',
        });
        res.end();
      })();
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await pool.close();
    await upstream.close();
  });

  it('forwards exactly the bytes it read (content-length and chunked)', async () => {
    for (const chunked of [false, true]) {
      upstream.reset();
      const payload = randomBytes(700);
      const sha = createHash('sha256').update(payload).digest('hex');
      // A Readable of two chunks has no known length: undici sends it chunked.
      const body = chunked ? Readable.from([payload.subarray(0, 300), payload.subarray(300)]) : payload;
      const res = await request(`${url}/bkt`, { method: 'PUT', body });
      await res.body.dump();
      expect(res.statusCode).toBe(200);
      expect(res.headers['x-sha']).toBe(sha);
      expect(res.headers['x-client-framing']).toBe(chunked ? 'chunked' : 'length');
      expect(upstream.requests).toHaveLength(1);
      expect(upstream.requests[0]!.bodySha256).toBe(sha);
      expect(upstream.requests[0]!.bodyBytes).toBe(700);
    }
  });

  it('a too-large body gets a 400 answer, not a reset', async () => {
    upstream.reset();
    const res = await request(`${url}/bkt`, { method: 'PUT', body: randomBytes(64 * 1024) });
    const text = await res.body.text();
    expect(res.statusCode).toBe(400);
    expect(text).toMatch(/^refused: too_large after \d+ bytes/);
    expect(upstream.requests).toHaveLength(0);
  });
});
