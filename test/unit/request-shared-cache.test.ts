import { describe, expect, it } from 'vitest';
import type { FleetRedis } from '../../src/fleet/redis.js';
import { hashKey, SharedCache } from '../../src/fleet/shared-cache.js';

function clock(start = 1_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

/** A FleetRedis whose client must never be touched (unhealthy), or is absent. */
function fakeRedis(opts: { client: boolean; healthy: boolean }): FleetRedis {
  const client = opts.client
    ? (new Proxy({}, { get: () => () => { throw new Error('client used'); } }) as unknown as FleetRedis['client'])
    : null;
  return { client, key: (n) => 'pfx:' + n, healthy: () => opts.healthy, lastError: () => null, close: async () => {} };
}

describe('SharedCache (local tier)', () => {
  it('stores, expires on TTL, and distinguishes a cached null from a miss', async () => {
    const c = clock();
    const cache = new SharedCache<string | null>({ namespace: 'ns:', redis: null, ttlMs: 100, now: c.now });
    await cache.set('a', 'eu-west-1');
    await cache.set('b', null, 50);
    expect(await cache.get('a')).toBe('eu-west-1');
    expect(await cache.get('b')).toBeNull();
    expect(await cache.get('c')).toBeUndefined();
    c.advance(60);
    expect(await cache.get('b')).toBeUndefined();
    expect(cache.peekLocal('a')).toBe('eu-west-1');
    c.advance(40);
    expect(cache.peekLocal('a')).toBeUndefined();
    expect(cache.localSize).toBe(0);
  });

  it('evicts the least recently used entry past the bound', async () => {
    const cache = new SharedCache<number>({ namespace: 'ns:', redis: null, ttlMs: 10_000, maxLocalEntries: 3 });
    await cache.set('a', 1);
    await cache.set('b', 2);
    await cache.set('c', 3);
    expect(cache.peekLocal('a')).toBe(1); // a is now the most recent
    await cache.set('d', 4);
    expect(cache.peekLocal('b')).toBeUndefined();
    expect(cache.peekLocal('a')).toBe(1);
    expect(cache.localSize).toBe(3);
  });

  it('delete and clearLocal', async () => {
    const cache = new SharedCache<number>({ namespace: 'ns:', redis: null, ttlMs: 10_000 });
    await cache.set('a', 1);
    await cache.delete('a');
    expect(await cache.get('a')).toBeUndefined();
    await cache.set('b', 2);
    cache.clearLocal();
    expect(cache.peekLocal('b')).toBeUndefined();
  });

  it('an unhealthy Redis is skipped, counted, and never used', async () => {
    const events: string[] = [];
    const cache = new SharedCache<number>({
      namespace: 'ns:',
      redis: fakeRedis({ client: true, healthy: false }),
      ttlMs: 1000,
      onRedisFallback: (op, kind) => events.push(`${op}:${kind}`),
    });
    await cache.set('a', 1);
    expect(await cache.get('a')).toBe(1); // local hit: Redis not consulted
    expect(await cache.get('missing')).toBeUndefined();
    await cache.delete('a');
    expect(events).toEqual(['set:unavailable', 'get:unavailable', 'delete:unavailable']);
  });

  it('Redis not configured: nothing counted', async () => {
    const events: string[] = [];
    const cache = new SharedCache<number>({ namespace: 'ns:', redis: fakeRedis({ client: false, healthy: false }), ttlMs: 1000, onRedisFallback: (op) => events.push(op) });
    await cache.set('a', 1);
    expect(await cache.get('b')).toBeUndefined();
    expect(events).toEqual([]);
  });

  it('keys go through the fleet prefix', () => {
    const cache = new SharedCache<number>({ namespace: 'bucket-region:', redis: fakeRedis({ client: true, healthy: true }), ttlMs: 1000 });
    expect(cache.redisKey('x')).toBe('pfx:bucket-region:x');
  });

  it('rejects a non-positive TTL', () => {
    expect(() => new SharedCache<number>({ namespace: 'ns:', redis: null, ttlMs: 0 })).toThrow();
  });

  it('hashKey is fixed-length and unambiguous across part boundaries', () => {
    expect(hashKey('a', 'bc')).toMatch(/^[0-9a-f]{64}$/);
    expect(hashKey('a', 'bc')).not.toBe(hashKey('ab', 'c'));
    expect(hashKey('a:b')).not.toBe(hashKey('a', 'b'));
  });
});
