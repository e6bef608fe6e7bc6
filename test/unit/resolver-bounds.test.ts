import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { PinningResolver, TokenBucket, type DnsQueryReason, type NotTrackedReason, type ResolverOptions } from '../../src/location/resolver.js';

describe('TokenBucket', () => {
  it('starts full, spends one token a take, and refuses when empty', () => {
    const bucket = new TokenBucket(5, 5, 0);
    expect(Array.from({ length: 7 }, () => bucket.take(0))).toEqual([true, true, true, true, true, false, false]);
  });

  it('refills at the rate, never above the burst', () => {
    const bucket = new TokenBucket(10, 10, 0);
    for (let i = 0; i < 10; i++) bucket.take(0);
    expect(bucket.take(50)).toBe(false); // half a token
    expect(bucket.take(100)).toBe(true); // one
    expect(bucket.take(100)).toBe(false);
    // An hour idle saves up one burst, not 36,000 tokens.
    const taken = Array.from({ length: 12 }, () => bucket.take(3_600_000)).filter(Boolean).length;
    expect(taken).toBe(10);
  });

  it('a rate below one a second still lets one through (burst 1), then one every 1/rate seconds', () => {
    const bucket = new TokenBucket(0.5, 1, 0);
    expect(bucket.take(0)).toBe(true);
    expect(bucket.take(1000)).toBe(false);
    expect(bucket.take(2000)).toBe(true);
  });

  it('a clock that steps back refills nothing', () => {
    const bucket = new TokenBucket(1, 1, 10_000);
    expect(bucket.take(10_000)).toBe(true);
    expect(bucket.take(5_000)).toBe(false);
    expect(bucket.take(10_500)).toBe(false);
    expect(bucket.take(11_000)).toBe(true);
  });
});

/**
 * The resolver with a stand-in for the system resolver (no sockets) and fake
 * timers: TTLs are min_ttl (1 s), refreshes due at 3/4 of it.
 */
describe('PinningResolver bounds on asked-for names', () => {
  let resolver: PinningResolver;
  let lookups: string[];
  let queries: [string, DnsQueryReason][];
  let notTracked: [string, NotTrackedReason][];
  let tracked: number[];
  let failing: Set<string>;

  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
    lookups = [];
    queries = [];
    notTracked = [];
    tracked = [];
    failing = new Set();
  });
  afterEach(() => {
    resolver.close();
    vi.useRealTimers();
  });

  function make(options: ResolverOptions = {}) {
    resolver = new PinningResolver({
      minTtl: 1,
      graceSeconds: 1,
      lookup: async (host) => {
        lookups.push(host);
        if (failing.has(host)) throw Object.assign(new Error(`${host}: not found`), { code: 'ENOTFOUND' });
        return [{ address: '127.0.0.2', family: 4 }];
      },
      onQueryReason: (host, _kind, reason) => queries.push([host, reason]),
      onNotTracked: (host, reason) => notTracked.push([host, reason]),
      onTracked: (count) => tracked.push(count),
      ...options,
    });
    return resolver;
  }

  /** As the locator asks: once, and again after the first answer. */
  async function ask(host: string) {
    const first = resolver.answer(host);
    if (first !== 'pending') return first;
    await resolver.ready(host);
    return resolver.answer(host);
  }

  const count = (host: string) => lookups.filter((h) => h === host).length;

  it('tracks at most maxTracked names; past it a name is resolved once, served for its TTL, never refreshed', async () => {
    make({ maxTracked: 2 });
    resolver.track('fixed.test'); // configured: not counted
    for (const host of ['a.test', 'b.test', 'c.test']) expect(await ask(host)).toMatchObject({ addresses: ['127.0.0.2'] });
    expect(resolver.hosts).toEqual(['fixed.test', 'a.test', 'b.test']);
    expect(resolver.trackedCount).toBe(2);
    expect(Math.max(...tracked)).toBe(2);
    expect(notTracked).toEqual([['c.test', 'cap']]);
    expect(queries.filter(([h]) => h === 'c.test')).toEqual([['c.test', 'untracked']]);
    // Within its TTL: from cache, no query.
    for (let i = 0; i < 100; i++) expect(resolver.current('c.test')).toBeDefined();
    expect(count('c.test')).toBe(1);
    // Past its TTL it is gone; asked again (a slot is still taken), it is resolved once more.
    await vi.advanceTimersByTimeAsync(1100);
    expect(count('c.test')).toBe(1);
    await ask('c.test');
    expect(count('c.test')).toBe(2);
  });

  it('refreshes a tracked name only while it is asked for; an unused one is dropped when its answer expires', async () => {
    make();
    await ask('used.test');
    await ask('idle.test');
    // Asked for within each TTL: refreshed before every expiry, never lapses.
    for (let t = 0; t < 4000; t += 100) {
      expect(resolver.current('used.test')).toBeDefined();
      await vi.advanceTimersByTimeAsync(100);
    }
    expect(count('used.test')).toBeGreaterThanOrEqual(5);
    // idle.test: the ask after its first answer earns one refresh; then nobody asked, so it was dropped at expiry.
    expect(count('idle.test')).toBe(2);
    expect(resolver.hosts).toEqual(['used.test']);
    expect(resolver.trackedCount).toBe(1);
    expect(queries.filter(([h]) => h === 'idle.test').map(([, r]) => r)).toEqual(['first', 'refresh']);
  });

  it('an idle name asked for again before it expires is refreshed at once, and kept', async () => {
    make();
    await ask('back.test');
    await vi.advanceTimersByTimeAsync(800); // refresh due: the ask above earned it
    await vi.advanceTimersByTimeAsync(800); // due again, unasked: left to expire
    expect(count('back.test')).toBe(2);
    expect(resolver.current('back.test')).toBeDefined();
    await vi.advanceTimersByTimeAsync(0);
    expect(count('back.test')).toBe(3);
    await vi.advanceTimersByTimeAsync(500);
    expect(resolver.hosts).toEqual(['back.test']);
  });

  it('a name that does not resolve is not retried once nobody asks for it', async () => {
    make({ retryMinMs: 100, retryMaxMs: 400 });
    failing.add('nowhere.test');
    expect(await ask('nowhere.test')).toBeUndefined();
    await vi.advanceTimersByTimeAsync(10_000);
    // The first attempt, and the retry the failed request's ask earned.
    expect(count('nowhere.test')).toBe(2);
    expect(resolver.hosts).toEqual([]);
    expect(resolver.trackedCount).toBe(0);
  });

  it('rate-limits first resolutions of names not tracked; refused names get no answer and no query', async () => {
    make({ maxNewPerSecond: 2 });
    resolver.track('fixed.test'); // configured: takes no token
    expect(resolver.answer('n1.test')).toBe('pending');
    expect(resolver.answer('n2.test')).toBe('pending');
    expect(resolver.answer('n3.test')).toBeUndefined();
    expect(resolver.isPending('n3.test')).toBe(false);
    expect(notTracked).toEqual([
      ['n3.test', 'rate'],
      ['n3.test', 'rate'],
    ]);
    await vi.advanceTimersByTimeAsync(0);
    expect(lookups.sort()).toEqual(['fixed.test', 'n1.test', 'n2.test']);
    // Known names need no token.
    expect(resolver.current('n1.test')).toBeDefined();
    // Half a second: one token back.
    await vi.advanceTimersByTimeAsync(500);
    expect(resolver.answer('n3.test')).toBe('pending');
    expect(resolver.answer('n4.test')).toBeUndefined();
  });

  it('IP literals take no token and no slot', async () => {
    make({ maxTracked: 1, maxNewPerSecond: 1 });
    for (let i = 1; i <= 5; i++) expect(resolver.current(`10.0.0.${i}`)?.addresses).toEqual([`10.0.0.${i}`]);
    expect(resolver.trackedCount).toBe(0);
    expect(notTracked).toEqual([]);
    expect(resolver.answer('name.test')).toBe('pending');
  });
});
