import { afterEach, describe, expect, it, vi } from 'vitest';
import { PinningResolver, type ResolverOptions } from '../../src/location/resolver.js';
import { startDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { ManualClock } from '../helpers/manual-clock.js';

// A real DNS server on 127.0.0.1 (random port), answering 127.x addresses; time is a manual clock.
let servers: TestDnsServer[] = [];
let resolvers: PinningResolver[] = [];
afterEach(async () => {
  for (const r of resolvers) r.close();
  resolvers = [];
  await Promise.all(servers.map((s) => s.close().catch(() => {})));
  servers = [];
});

/**
 * A resolver on a manual clock against the real DNS server: only time is
 * faked. `advance` moves the clock and, after each timer it runs, waits (in
 * real time) until every resolution started has its answer or failure, so
 * the clock stands still while the server answers over loopback.
 */
async function setup(zone: Parameters<typeof startDnsServer>[0], options: ResolverOptions = {}) {
  const server = await startDnsServer(zone);
  servers.push(server);
  const clock = new ManualClock();
  let started = 0;
  let finished = 0;
  let waiters: (() => void)[] = [];
  const finish = () => {
    finished++;
    if (finished !== started) return;
    for (const wake of waiters) wake();
    waiters = [];
  };
  /** Resolves once no resolution is in flight. */
  const settled = () => (finished === started ? Promise.resolve() : new Promise<void>((resolve) => waiters.push(resolve)));
  /** The clock's time of each A query (one per resolution). */
  const queriedAt: number[] = [];
  const resolver = new PinningResolver({
    servers: [server.address],
    minTtl: 0,
    timeoutMs: 200,
    tries: 1,
    ...options,
    clock,
    onQuery: (host, kind) => {
      if (kind !== 'AAAA') {
        started++;
        queriedAt.push(clock.now());
      }
      options.onQuery?.(host, kind);
    },
    onAnswer: (host, answer) => {
      options.onAnswer?.(host, answer);
      finish();
    },
    onFailure: (host, err) => {
      options.onFailure?.(host, err);
      finish();
    },
  });
  resolvers.push(resolver);
  const advance = (ms: number) => clock.advance(ms, settled);
  return { server, resolver, clock, advance, settled, queriedAt };
}

/** Ask as requests do, moving the clock 100 ms between asks, until `done` (at most a minute of clock time). */
async function askUntil(done: () => boolean, advance: (ms: number) => Promise<void>, settled: () => Promise<void>) {
  for (let i = 0; i < 600 && !done(); i++) {
    await settled();
    if (done()) return;
    await advance(100);
  }
}

describe('PinningResolver against a DNS server', () => {
  it('answers from cache within the TTL: one query per family, not one per call', async () => {
    const onQuery = vi.fn();
    const { server, resolver } = await setup({ 'up.test': { A: ['127.0.0.2'], ttl: 30 } }, { onQuery });
    expect(resolver.current('up.test')).toBeUndefined();
    expect(resolver.isPending('up.test')).toBe(true);
    const answer = await resolver.ready('up.test');
    expect(answer).toMatchObject({ host: 'up.test', addresses: ['127.0.0.2'], ttl: 30, source: 'dns' });
    expect(answer!.expiresAt - answer!.resolvedAt).toBe(30_000);
    for (let i = 0; i < 10_000; i++) expect(resolver.current('up.test')).toBe(answer);
    expect(server.count('up.test', 'A')).toBe(1);
    expect(server.count('up.test', 'AAAA')).toBe(1);
    expect(onQuery.mock.calls).toEqual([['up.test', 'A'], ['up.test', 'AAAA']]);
  });

  it('clamps TTLs to min_ttl and max_ttl', async () => {
    const { resolver } = await setup({ 'long.test': { A: ['127.0.0.2'], ttl: 86_400 }, 'zero.test': { A: ['127.0.0.3'], ttl: 0 } }, { minTtl: 5, maxTtl: 300 });
    expect((await resolver.ready('long.test'))?.ttl).toBe(300);
    expect((await resolver.ready('zero.test'))?.ttl).toBe(5);
  });

  it('returns A then AAAA addresses; the smallest record TTL applies', async () => {
    const { resolver } = await setup({ 'dual.test': { A: ['127.0.0.2', '127.0.0.3'], AAAA: ['::1'], ttl: 40 } });
    expect(await resolver.ready('dual.test')).toMatchObject({ addresses: ['127.0.0.2', '127.0.0.3', '::1'], ttl: 40 });
  });

  it('refreshes in the background before expiry, so the answer never lapses', async () => {
    const { server, resolver, clock, advance, queriedAt } = await setup({ 'up.test': { A: ['127.0.0.2'], ttl: 1 } }, { refreshAt: 0.5 });
    const first = (await resolver.ready('up.test'))!;
    for (let elapsed = 0; elapsed < 2600; elapsed += 20) {
      const a = resolver.current('up.test');
      expect(a).toBeDefined();
      // Always fresh: never served past its own expiry.
      expect(clock.now()).toBeLessThanOrEqual(a!.expiresAt);
      await advance(20);
    }
    // A query every half TTL, the second well before the first answer expired.
    expect(queriedAt).toEqual([0, 500, 1000, 1500, 2000, 2500].map((ms) => first.resolvedAt + ms));
    expect(queriedAt[1]!).toBeLessThan(first.expiresAt);
    expect(server.count('up.test', 'A')).toBe(6);
  });

  it('follows a changed answer (rebinding 127.0.0.2 → 127.0.0.3) at the next refresh', async () => {
    const onChange = vi.fn();
    const { server, resolver, advance } = await setup({ 'up.test': { A: ['127.0.0.2'], ttl: 1 } }, { onChange });
    expect((await resolver.ready('up.test'))?.addresses).toEqual(['127.0.0.2']);
    server.set('up.test', { A: ['127.0.0.3'], ttl: 1 });
    // Still the pinned answer until the refresh (at 3/4 of the TTL).
    await advance(749);
    expect(resolver.current('up.test')?.addresses).toEqual(['127.0.0.2']);
    await advance(1);
    expect(resolver.current('up.test')?.addresses).toEqual(['127.0.0.3']);
    expect(onChange).toHaveBeenCalledTimes(2);
    expect(onChange.mock.calls[1]![1].addresses).toEqual(['127.0.0.2']);
    expect(onChange.mock.calls[1]![2].addresses).toEqual(['127.0.0.3']);
  });

  it('serves the last good answer within grace when the server stops answering, then fails closed, then recovers', async () => {
    const onFailure = vi.fn();
    // A dropped query takes its timeout in real time: a short one, and retries far enough apart to need few.
    const { server, resolver, clock, advance, settled } = await setup({ 'up.test': { A: ['127.0.0.2'], ttl: 1 } }, { graceSeconds: 1, onFailure, timeoutMs: 100, retryMinMs: 400, retryMaxMs: 800 });
    const answer = (await resolver.ready('up.test'))!;
    server.mode = 'drop';
    // Past expiry but within grace: the stale answer is still served.
    await advance(answer.expiresAt - clock.now() + 300);
    expect(resolver.current('up.test')).toBe(answer);
    expect(onFailure).toHaveBeenCalled();
    expect((onFailure.mock.calls[0]![1] as NodeJS.ErrnoException).code).toBe('ETIMEOUT');
    // Past expiry + grace: nothing.
    await advance(answer.expiresAt + 1000 - clock.now() + 100);
    expect(resolver.current('up.test')).toBeUndefined();
    expect(resolver.isPending('up.test')).toBe(false);
    // The server answers again: so does the resolver, by itself, while the name is asked for.
    await settled();
    server.mode = 'answer';
    await askUntil(() => resolver.current('up.test')?.addresses[0] === '127.0.0.2', advance, settled);
    expect(resolver.current('up.test')?.addresses).toEqual(['127.0.0.2']);
  });

  it('serves within grace when the server is gone (connection refused), then nothing', async () => {
    const onFailure = vi.fn();
    const { server, resolver, clock, advance } = await setup({ 'up.test': { A: ['127.0.0.2'], ttl: 1 } }, { graceSeconds: 1, onFailure, retryMinMs: 100, retryMaxMs: 200 });
    const answer = (await resolver.ready('up.test'))!;
    await server.close();
    await advance(answer.expiresAt - clock.now() + 300);
    expect(resolver.current('up.test')).toBe(answer);
    await advance(answer.expiresAt + 1000 - clock.now() + 100);
    expect(resolver.current('up.test')).toBeUndefined();
    expect(onFailure.mock.calls.length).toBeGreaterThanOrEqual(2);
  });

  it('a name that does not exist: the first attempt settles with no answer', async () => {
    const onFailure = vi.fn();
    const { resolver } = await setup({}, { onFailure });
    expect(await resolver.ready('nowhere.test')).toBeUndefined();
    expect(resolver.isPending('nowhere.test')).toBe(false);
    expect((onFailure.mock.calls[0]![1] as NodeJS.ErrnoException).code).toBe('ENOTFOUND');
  });

  it('SERVFAIL is a failure, not an answer', async () => {
    const onFailure = vi.fn();
    const { server, resolver } = await setup({ 'up.test': { A: ['127.0.0.2'] } }, { onFailure });
    server.mode = 'servfail';
    expect(await resolver.ready('up.test')).toBeUndefined();
    expect((onFailure.mock.calls[0]![1] as NodeJS.ErrnoException).code).toBe('ESERVFAIL');
  });

  it('resolveNow asks at once', async () => {
    const { server, resolver } = await setup({ 'up.test': { A: ['127.0.0.2'], ttl: 300 } });
    await resolver.ready('up.test');
    server.set('up.test', { A: ['127.0.0.4'], ttl: 300 });
    expect((await resolver.resolveNow('up.test'))?.addresses).toEqual(['127.0.0.4']);
    expect(server.count('up.test', 'A')).toBe(2);
  });

  it('IP-literal hosts skip DNS entirely', async () => {
    const { server, resolver } = await setup({});
    expect(resolver.current('127.0.0.9')).toMatchObject({ addresses: ['127.0.0.9'], source: 'literal', expiresAt: Infinity });
    expect(resolver.current('[::1]')?.addresses).toEqual(['::1']);
    expect(resolver.isPending('127.0.0.9')).toBe(false);
    expect(server.queries).toEqual([]);
  });
});

describe('PinningResolver with the system resolver', () => {
  it('uses getaddrinfo (no TTL, so min_ttl) when no servers are configured', async () => {
    const onQuery = vi.fn();
    const resolver = new PinningResolver({ minTtl: 7, onQuery });
    resolvers.push(resolver);
    const answer = await resolver.ready('localhost');
    expect(answer?.source).toBe('system');
    expect(answer?.ttl).toBe(7);
    expect(answer?.addresses.some((a) => a === '127.0.0.1' || a === '::1')).toBe(true);
    expect(onQuery).toHaveBeenCalledWith('localhost', 'lookup');
  });

  it('asks the system for localhost even when DNS servers are configured', async () => {
    const { server, resolver } = await setup({});
    expect((await resolver.ready('localhost'))?.source).toBe('system');
    expect(server.queries).toEqual([]);
  });
});
