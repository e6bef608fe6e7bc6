import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { parseConfigText } from '../../src/load.js';
import { networkLocationSettings } from '../../src/location/network-config.js';
import { UNRESOLVED } from '../../src/location/network-locator.js';
import { LocationService } from '../../src/location/service.js';
import { createMetrics, type Metrics } from '../../src/metrics/registry.js';
import { startDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { ManualClock } from '../helpers/manual-clock.js';
import { startProxy } from '../helpers/proxy.js';

/**
 * The names a `{host}` upstream is sent to are chosen by clients: they must
 * not drive the proxy's DNS load. A real DNS server on loopback answers every
 * name with a 1 s TTL, so refreshes (at 3/4 of the TTL) show within seconds;
 * the service is driven as the data plane drives it (locate, and on a host's
 * first request wait for its answer), with its events counted by the
 * metrics registry. Only time is faked: the service runs on a manual clock
 * that stands still while the server answers over loopback.
 */

const TTL = 1;
const ADDRESS = '127.0.0.2';
const FIXED = 'fixed.test';
const name = (i: number) => `b${i}.store.test`;

let cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  cleanups = [];
});

async function dnsServer(names: number): Promise<TestDnsServer> {
  const dns = await startDnsServer({ [FIXED]: { A: [ADDRESS], ttl: TTL } });
  for (let i = 0; i < names; i++) dns.set(name(i), { A: [ADDRESS], ttl: TTL });
  cleanups.push(() => dns.close());
  return dns;
}

/**
 * A proxy config with one `{host}` upstream and one fixed one, and the
 * service it would run, wired to metrics, on a manual clock. `advance` moves
 * the clock and, after each timer it runs, waits (in real time) until every
 * resolution started has its answer or failure. `queriedAt` is the clock's
 * time of each of the server's queries (by position in `dns.queries`, whose
 * own `at` is real time): every query is received while the clock stands
 * still, before the resolution that sent it finishes.
 */
async function service(dns: TestDnsServer, limits: Record<string, number>) {
  const config = parseConfigText(
    stringify({
      dns: { servers: [dns.address], min_ttl: 0, grace_seconds: 2, timeout: 0.5, attempts: 1, ...limits },
      location: { geoip: { enabled: false } },
      upstreams: [
        { name: 'by-host', url: 'http://{host}:9', provider: 'generic', route: { host: '*.store.test' } },
        { name: 'fixed', url: `http://${FIXED}:9`, provider: 'generic', route: { path_prefix: '/fixed' } },
      ],
    }),
    'dns-bounds.yaml',
  );
  const metrics = createMetrics();
  let maxTracked = 0;
  const clock = new ManualClock();
  // Resolutions sent (servers are configured: an A and an AAAA query each) and finished (an answer or a failure).
  let queries = 0;
  let finished = 0;
  let waiters: (() => void)[] = [];
  const finish = () => {
    finished++;
    if (finished * 2 !== queries) return;
    for (const wake of waiters) wake();
    waiters = [];
  };
  const queriedAt: number[] = [];
  const settled = async () => {
    if (finished * 2 !== queries) await new Promise<void>((resolve) => waiters.push(resolve));
    while (queriedAt.length < dns.queries.length) queriedAt.push(clock.now());
  };
  const location = new LocationService({
    clock,
    settings: networkLocationSettings(config),
    networks: config.networks,
    // The fixed upstream's host: tracked for good, not counted against the cap.
    hosts: [FIXED],
    hostLimits: { maxTrackedHosts: config.dns?.max_tracked_hosts, maxNewHostsPerSecond: config.dns?.max_new_hosts_per_second },
    events: {
      lookup: (source, result) => {
        metrics.locationLookups.inc({ source, result });
        if (source === 'dns') finish();
      },
      dnsQuery: (reason) => {
        queries++;
        metrics.dnsQueries.inc({ reason });
      },
      hostNotTracked: (reason) => metrics.dnsHostsNotTracked.inc({ reason }),
      trackedHosts: (count) => {
        maxTracked = Math.max(maxTracked, count);
        metrics.dnsTrackedHosts.set(count);
      },
    },
  });
  cleanups.push(() => location.close());
  await location.resolved(5000);
  await settled();
  /** Queries for `{host}` names (not the fixed host) at or after `from` (clock time). */
  const hostQueries = (from: number) => dns.queries.filter((q, i) => q.name !== FIXED && queriedAt[i]! >= from).length;
  return {
    location,
    metrics,
    maxTracked: () => maxTracked,
    clock,
    advance: (ms: number) => clock.advance(ms, settled),
    settled,
    queriedAt,
    hostQueries,
  };
}

async function sample(metrics: Metrics, line: string): Promise<number> {
  const text = await metrics.registry.metrics();
  const found = text.split('\n').find((l) => l.startsWith(`${line} `));
  return found === undefined ? Number.NaN : Number(found.slice(line.length + 1));
}

/** A sample's value in a scrape's text (0 when the series is absent). */
function metric(text: string, line: string): number {
  const found = text.split('\n').find((l) => l.startsWith(`${line} `));
  return found === undefined ? 0 : Number(found.slice(line.length + 1));
}

describe('{host} names are bounded (dns.max_tracked_hosts, dns.max_new_hosts_per_second)', () => {
  it('300 distinct names, cap 50: at most 50 tracked; after the client stops, at most one refresh each, then no query at all', async () => {
    const dns = await dnsServer(300);
    const { location, metrics, maxTracked, clock, advance, settled, queriedAt, hostQueries } = await service(dns, { max_tracked_hosts: 50, max_new_hosts_per_second: 100_000 });

    // 300 requests, 20 at a time, each for a name of its own.
    const located: (string | null)[] = [];
    for (let i = 0; i < 300; i += 20) {
      const batch = await Promise.all(Array.from({ length: 20 }, (_, k) => location.locateNow(name(i + k))));
      located.push(...batch.map((l) => l.address));
    }
    await settled();
    const stopped = clock.now();
    // By position, not time: the last answers arrive at the time the client stops.
    const asked = dns.queries.length;
    // Names past the cap are still located (resolved once): every request had its answer.
    expect(located).toEqual(Array.from({ length: 300 }, () => ADDRESS));
    expect(maxTracked()).toBeLessThanOrEqual(50);
    expect(maxTracked()).toBeGreaterThan(0);
    expect(location.resolver.trackedCount).toBeLessThanOrEqual(50);

    // Each name was resolved once (A and AAAA), tracked or not.
    const first = await sample(metrics, 'residency_dns_queries_total{reason="first"}');
    const untracked = await sample(metrics, 'residency_dns_queries_total{reason="untracked"}');
    expect(first - 2).toBeLessThanOrEqual(50 * 2); // the fixed host's first resolution is one of them
    expect(first - 2 + untracked).toBe(300 * 2);
    expect(await sample(metrics, 'residency_dns_hosts_not_tracked_total{reason="cap"}')).toBe(untracked / 2);
    expect(await sample(metrics, 'residency_dns_hosts_not_tracked_total{reason="rate"}')).toBe(0);

    // Three TTLs with no requests.
    await advance(3 * TTL * 1000);
    const after = dns.queries.slice(asked).filter((q) => q.name !== FIXED).length;
    // At most the cap's worth of refreshes (A and AAAA each), and none once the names went unused.
    expect(after).toBeLessThanOrEqual(50 * 2);
    expect(hostQueries(stopped + 2 * TTL * 1000)).toBe(0);
    expect(location.resolver.trackedCount).toBe(0);
    expect(await sample(metrics, 'residency_dns_tracked_hosts')).toBe(0);
    expect(maxTracked()).toBeLessThanOrEqual(50);
    // The configured upstream's host is tracked for good, and still refreshed.
    expect(dns.queries.filter((q, i) => q.name === FIXED && queriedAt[i]! >= stopped + 2 * TTL * 1000).length).toBeGreaterThan(0);
  });

  it('names used again and again are served from cache: one query per refresh, not one per request', async () => {
    const dns = await dnsServer(10);
    const { location, clock, advance, hostQueries } = await service(dns, { max_tracked_hosts: 50 });
    const names = Array.from({ length: 10 }, (_, i) => name(i));
    const started = clock.now();
    let requests = 0;
    // 2.5 s of requests for the same ten names.
    while (clock.now() - started < 2500) {
      const found = await Promise.all(names.map((n) => location.locateNow(n)));
      for (const f of found) expect(f.address).toBe(ADDRESS);
      requests += names.length;
      await advance(5);
    }
    const elapsed = clock.now() - started;
    for (const n of names) {
      // First resolution, then a refresh every 3/4 TTL (A and AAAA each), plus one in flight at the end.
      expect(dns.count(n)).toBeLessThanOrEqual(2 * (Math.ceil(elapsed / (0.75 * TTL * 1000)) + 2));
    }
    expect(requests).toBeGreaterThan(hostQueries(started) * 5);
    expect(location.resolver.trackedCount).toBe(10);

    // Then nobody asks: each is dropped when its answer expires (within 4 s, looked at every 50 ms).
    for (let waited = 0; waited < 4000 && location.resolver.trackedCount !== 0; waited += 50) await advance(50);
    expect(location.resolver.trackedCount).toBe(0);
    const quiet = clock.now();
    await advance(2 * TTL * 1000);
    expect(hostQueries(quiet)).toBe(0);
  });

  it('new names beyond dns.max_new_hosts_per_second are not resolved: their location is unknown, and no query goes out', async () => {
    const dns = await dnsServer(40);
    const { location, metrics, advance } = await service(dns, { max_tracked_hosts: 50, max_new_hosts_per_second: 5 });
    const found = await Promise.all(Array.from({ length: 20 }, (_, i) => location.locateNow(name(i))));
    // One second's worth (the burst) resolved; the rest have no address.
    expect(found.filter((f) => f.address === ADDRESS)).toHaveLength(5);
    expect(found.filter((f) => f === UNRESOLVED)).toHaveLength(15);
    expect(new Set(dns.queries.filter((q) => q.name !== FIXED).map((q) => q.name)).size).toBe(5);
    expect(await sample(metrics, 'residency_dns_hosts_not_tracked_total{reason="rate"}')).toBe(15);
    // Names already resolved are not new: still answered, no token needed.
    for (let i = 0; i < 5; i++) expect((await location.locateNow(name(i))).address).toBe(ADDRESS);
    // Tokens come back over time.
    await advance(1100);
    expect((await location.locateNow(name(30))).address).toBe(ADDRESS);
  });
});

describe('the bounds through the proxy', () => {
  it('dns.max_tracked_hosts and dns.max_new_hosts_per_second reach the data plane, and its metrics say what they did', async () => {
    const dns = await dnsServer(40);
    const proxy = await startProxy({
      dns: { servers: [dns.address], min_ttl: 0, timeout: 0.5, attempts: 1, max_tracked_hosts: 5, max_new_hosts_per_second: 20 },
      location: { geoip: { enabled: false } },
      upstreams: [{ name: 'by-host', url: 'http://{host}:9', provider: 'generic', route: { host: '*.store.test' } }],
    });
    cleanups.push(() => proxy.close());
    const statuses: number[] = [];
    for (let i = 0; i < 40; i++) {
      const res = await request(`${proxy.url}/x`, { headers: { host: name(i) } });
      statuses.push(res.statusCode);
      await res.body.dump();
    }
    // Reads: nothing listens on port 9, so each is a 502, unreachable or unresolved; none is a crash.
    expect(statuses.every((s) => s === 502)).toBe(true);
    const text = await (await fetch(`${proxy.adminUrl}/metrics`)).text();
    expect(metric(text, 'residency_dns_tracked_hosts')).toBeLessThanOrEqual(5);
    expect(metric(text, 'residency_dns_hosts_not_tracked_total{reason="cap"}') + metric(text, 'residency_dns_hosts_not_tracked_total{reason="rate"}')).toBeGreaterThan(0);
  });
});
