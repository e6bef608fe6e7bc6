import { afterEach, describe, expect, it, vi } from 'vitest';
import { PinningResolver, type ResolverOptions } from '../../src/location/resolver.js';
import { startDnsServer, type TestDnsServer } from '../helpers/dns-server.js';

// A real DNS server on 127.0.0.1 (random port), answering 127.x addresses.
let servers: TestDnsServer[] = [];
let resolvers: PinningResolver[] = [];
afterEach(async () => {
  for (const r of resolvers) r.close();
  resolvers = [];
  await Promise.all(servers.map((s) => s.close().catch(() => {})));
  servers = [];
});

async function setup(zone: Parameters<typeof startDnsServer>[0], options: ResolverOptions = {}) {
  const server = await startDnsServer(zone);
  servers.push(server);
  const resolver = new PinningResolver({ servers: [server.address], minTtl: 0, timeoutMs: 200, tries: 1, ...options });
  resolvers.push(resolver);
  return { server, resolver };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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
    const { server, resolver } = await setup({ 'up.test': { A: ['127.0.0.2'], ttl: 1 } }, { refreshAt: 0.5 });
    const first = (await resolver.ready('up.test'))!;
    const until = Date.now() + 2600;
    while (Date.now() < until) {
      const now = Date.now();
      const a = resolver.current('up.test');
      expect(a).toBeDefined();
      // Always fresh: never served past its own expiry.
      expect(now).toBeLessThanOrEqual(a!.expiresAt);
      await sleep(20);
    }
    const asked = server.queries.filter((q) => q.type === 'A').map((q) => q.at);
    expect(asked.length).toBeGreaterThanOrEqual(3);
    // The second query went out before the first answer expired.
    expect(asked[1]!).toBeLessThan(first.expiresAt);
  });

  it('follows a changed answer (rebinding 127.0.0.2 → 127.0.0.3) at the next refresh', async () => {
    const onChange = vi.fn();
    const { server, resolver } = await setup({ 'up.test': { A: ['127.0.0.2'], ttl: 1 } }, { onChange });
    expect((await resolver.ready('up.test'))?.addresses).toEqual(['127.0.0.2']);
    server.set('up.test', { A: ['127.0.0.3'], ttl: 1 });
    // Still the pinned answer until the refresh.
    expect(resolver.current('up.test')?.addresses).toEqual(['127.0.0.2']);
    await vi.waitFor(() => expect(resolver.current('up.test')?.addresses).toEqual(['127.0.0.3']), { timeout: 3000, interval: 20 });
    expect(onChange).toHaveBeenCalledTimes(2);
    expect(onChange.mock.calls[1]![1].addresses).toEqual(['127.0.0.2']);
    expect(onChange.mock.calls[1]![2].addresses).toEqual(['127.0.0.3']);
  });

  it('serves the last good answer within grace when the server stops answering, then fails closed, then recovers', async () => {
    const onFailure = vi.fn();
    const { server, resolver } = await setup({ 'up.test': { A: ['127.0.0.2'], ttl: 1 } }, { graceSeconds: 1, onFailure, retryMinMs: 100, retryMaxMs: 200 });
    const answer = (await resolver.ready('up.test'))!;
    server.mode = 'drop';
    // Past expiry but within grace: the stale answer is still served.
    await sleep(answer.expiresAt - Date.now() + 300);
    expect(resolver.current('up.test')).toBe(answer);
    expect(onFailure).toHaveBeenCalled();
    expect((onFailure.mock.calls[0]![1] as NodeJS.ErrnoException).code).toBe('ETIMEOUT');
    // Past expiry + grace: nothing.
    await sleep(answer.expiresAt + 1000 - Date.now() + 100);
    expect(resolver.current('up.test')).toBeUndefined();
    expect(resolver.isPending('up.test')).toBe(false);
    // The server answers again: so does the resolver, by itself.
    server.mode = 'answer';
    await vi.waitFor(() => expect(resolver.current('up.test')?.addresses).toEqual(['127.0.0.2']), { timeout: 3000, interval: 20 });
  });

  it('serves within grace when the server is gone (connection refused), then nothing', async () => {
    const onFailure = vi.fn();
    const { server, resolver } = await setup({ 'up.test': { A: ['127.0.0.2'], ttl: 1 } }, { graceSeconds: 1, onFailure, retryMinMs: 100, retryMaxMs: 200 });
    const answer = (await resolver.ready('up.test'))!;
    await server.close();
    await sleep(answer.expiresAt - Date.now() + 300);
    expect(resolver.current('up.test')).toBe(answer);
    await sleep(answer.expiresAt + 1000 - Date.now() + 100);
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
