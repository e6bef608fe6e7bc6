import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { parseConfigText } from '../../src/load.js';
import { GeoIp } from '../../src/location/geoip.js';
import { NetworkLocator, UNRESOLVED, type NetworkLocation } from '../../src/location/network-locator.js';
import { SiteNetworks } from '../../src/location/networks.js';
import { CloudRanges, parseRangeFile } from '../../src/location/ranges.js';
import { PinningResolver } from '../../src/location/resolver.js';
import { toLocation } from '../../src/location/signals.js';
import { compilePolicy, decide } from '../../src/policy/engine.js';
import { startDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { ipLocationDbCountry, maxmindCountry } from '../helpers/mmdb-writer.js';

// GeoIP (generated): 127.0.0.2 → US, 127.0.0.3 → DE, 127.0.0.4 → IE (MaxMind schema: registered US).
// Cloud ranges: 127.0.0.4/32 is AWS eu-west-1, 127.0.0.6/32 AWS us-east-1.
const RANGES = CloudRanges.fromParsed([
  parseRangeFile(
    JSON.stringify({
      syncToken: '1',
      createDate: '2024-01-01-00-00-00',
      prefixes: [
        { ip_prefix: '127.0.0.4/32', region: 'eu-west-1', service: 'S3' },
        { ip_prefix: '127.0.0.6/32', region: 'us-east-1', service: 'S3' },
      ],
      ipv6_prefixes: [],
    }),
    'ip-ranges.json',
  ),
]);

let dir: string;
let dns: TestDnsServer;
let resolver: PinningResolver;
let geoip: GeoIp;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'locator-test-'));
  await writeFile(join(dir, 'country.mmdb'), maxmindCountry());
  geoip = await GeoIp.open({ path: join(dir, 'country.mmdb') });
  dns = await startDnsServer({
    'us.test': { A: ['127.0.0.2'], ttl: 60 },
    'de.test': { A: ['127.0.0.3'], ttl: 60 },
    'ie.test': { A: ['127.0.0.4'], ttl: 60 },
    'multi.test': { A: ['127.0.0.2', '127.0.0.3'], ttl: 60 },
    'moving.test': { A: ['127.0.0.2'], ttl: 1 },
  });
  resolver = new PinningResolver({ servers: [dns.address], minTtl: 0, timeoutMs: 200, tries: 1 });
});
afterEach(async () => {
  resolver.close();
  geoip.close();
  await dns.close();
  await rm(dir, { recursive: true, force: true });
});

async function located(locator: NetworkLocator, host: string): Promise<NetworkLocation> {
  const first = locator.locate(host);
  if (first !== 'pending') return first;
  await locator.ready(host);
  const then = locator.locate(host);
  if (then === 'pending') throw new Error('still pending after ready');
  return then;
}

describe('NetworkLocator', () => {
  it('is pending until the first answer, then locates the pinned address', async () => {
    const locator = new NetworkLocator({ resolver, geoip, ranges: RANGES });
    expect(locator.locate('de.test')).toBe('pending');
    await locator.ready('de.test');
    expect(locator.locate('de.test')).toEqual({ address: '127.0.0.3', signals: [{ source: 'network:geoip', value: '127.0.0.3', jurisdiction: 'DE' }] });
  });

  it('site networks beat GeoIP and cloud ranges: the only network signal', async () => {
    const sites = SiteNetworks.fromConfig({ '127.0.0.0/30': 'US', '127.0.0.4/32': { jurisdiction: 'IE', region: 'eu-west-1' } });
    const locator = new NetworkLocator({ resolver, geoip, ranges: RANGES, sites });
    // GeoIP says DE; the operator says this network is theirs, in the US.
    expect(await located(locator, 'de.test')).toEqual({ address: '127.0.0.3', signals: [{ source: 'network:site', value: '127.0.0.0/30', jurisdiction: 'US' }] });
    expect((await located(locator, 'ie.test')).signals).toEqual([{ source: 'network:site', value: '127.0.0.4/32', jurisdiction: 'IE', region: 'eu-west-1' }]);
  });

  it('cloud ranges and GeoIP both contribute otherwise; GeoIP uses the located country, not the registered one', async () => {
    const locator = new NetworkLocator({ resolver, geoip, ranges: RANGES });
    expect((await located(locator, 'ie.test')).signals).toEqual([
      { source: 'network:cloud-range', value: 'aws:eu-west-1', jurisdiction: 'IE', region: 'eu-west-1' },
      { source: 'network:geoip', value: '127.0.0.4', jurisdiction: 'IE' },
    ]);
    // Only a range: one signal.
    expect(locator.locateAddress('127.0.0.6').signals).toEqual([
      { source: 'network:cloud-range', value: 'aws:us-east-1', jurisdiction: 'US', region: 'us-east-1' },
      { source: 'network:geoip', value: '127.0.0.6', jurisdiction: null },
    ]);
    // Disagreeing sources reach the policy as a conflict.
    const usRange = CloudRanges.fromParsed([
      parseRangeFile(JSON.stringify({ syncToken: '1', createDate: '2024-01-01-00-00-00', prefixes: [{ ip_prefix: '127.0.0.3/32', region: 'us-east-1' }], ipv6_prefixes: [] }), 'r.json'),
    ]);
    const disagreeing = new NetworkLocator({ resolver, geoip, ranges: usRange }).locateAddress('127.0.0.3');
    expect(toLocation(disagreeing.signals).jurisdictions).toEqual(['US', 'DE']);
    const config = parseConfigText('allowed_jurisdictions: [US]\nupstreams:\n  - name: s\n    url: http://de.test\n    route: { path_prefix: /s }\n', 'p.yaml');
    const decision = decide(compilePolicy(config), { upstream: 's', operation: 'write', method: 'PUT', path: '/k' }, toLocation(disagreeing.signals).jurisdictions);
    expect(decision).toMatchObject({ action: 'block', reason: 'location_conflict' });
  });

  it('signals are for the chosen address: first by default, round-robin on request', async () => {
    const first = new NetworkLocator({ resolver, geoip });
    expect((await located(first, 'multi.test')).address).toBe('127.0.0.2');
    expect((await located(first, 'multi.test')).address).toBe('127.0.0.2');
    const rr = new NetworkLocator({ resolver, geoip, pick: 'round-robin' });
    const seen = [await located(rr, 'multi.test'), await located(rr, 'multi.test'), await located(rr, 'multi.test')];
    expect(seen.map((l) => [l.address, l.signals[0]!.jurisdiction])).toEqual([['127.0.0.2', 'US'], ['127.0.0.3', 'DE'], ['127.0.0.2', 'US']]);
  });

  it('a warm locate answers from cache: the same frozen object, no query', async () => {
    const locator = new NetworkLocator({ resolver, geoip, ranges: RANGES });
    const warm = await located(locator, 'us.test');
    const queries = dns.queries.length;
    for (let i = 0; i < 1000; i++) expect(locator.locate('us.test')).toBe(warm);
    expect(Object.isFrozen(warm)).toBe(true);
    expect(Object.isFrozen(warm.signals)).toBe(true);
    expect(dns.queries.length).toBe(queries);
  });

  it('rebinding US → EU: the next locate returns the new address with its own signals, and the policy refuses it', async () => {
    const config = parseConfigText(
      'allowed_jurisdictions: [US]\nupstreams:\n  - name: store\n    url: http://moving.test:9000\n    route: { path_prefix: /s }\n    jurisdiction: US\n',
      'policy.yaml',
    );
    const policy = compilePolicy(config);
    const facts = { upstream: 'store', operation: 'write' as const, method: 'PUT', path: '/b/k' };
    const locator = new NetworkLocator({ resolver, geoip, ranges: RANGES });
    const before = await located(locator, 'moving.test');
    expect(before.address).toBe('127.0.0.2');
    expect(decide(policy, facts, toLocation(before.signals).jurisdictions).action).toBe('allow');

    dns.set('moving.test', { A: ['127.0.0.3'], ttl: 1 });
    await vi.waitFor(() => expect((locator.locate('moving.test') as NetworkLocation).address).toBe('127.0.0.3'), { timeout: 3000, interval: 20 });
    const after = locator.locate('moving.test') as NetworkLocation;
    expect(after.signals).toEqual([{ source: 'network:geoip', value: '127.0.0.3', jurisdiction: 'DE' }]);
    const decision = decide(policy, facts, toLocation(after.signals).jurisdictions);
    expect(decision).toMatchObject({ action: 'block', reason: 'jurisdiction_not_allowed', jurisdictions: ['DE'] });
  });

  it('no usable answer: no address, no signal, so the location is unknown', async () => {
    const locator = new NetworkLocator({ resolver, geoip });
    expect(await located(locator, 'missing.test')).toBe(UNRESOLVED);
    const config = parseConfigText('upstreams:\n  - name: s\n    url: http://missing.test\n    route: { path_prefix: /s }\n', 'p.yaml');
    const decision = decide(compilePolicy(config), { upstream: 's', operation: 'write', method: 'PUT', path: '/k' }, toLocation(UNRESOLVED.signals).jurisdictions);
    expect(decision).toMatchObject({ action: 'block', reason: 'unknown_location' });
  });

  it('IP-literal upstreams are located without DNS', async () => {
    const locator = new NetworkLocator({ resolver, geoip });
    expect(locator.locate('127.0.0.4')).toEqual({ address: '127.0.0.4', signals: [{ source: 'network:geoip', value: '127.0.0.4', jurisdiction: 'IE' }] });
    expect(dns.queries).toEqual([]);
  });

  it('a GeoIP reload starts a new generation: cached results are recomputed', async () => {
    const locator = new NetworkLocator({ resolver, geoip });
    expect((await located(locator, 'us.test')).signals[0]!.jurisdiction).toBe('US');
    const generation = locator.generation;
    await writeFile(join(dir, 'country.mmdb'), ipLocationDbCountry({ '127.0.0.2/32': 'CA' }));
    expect(await geoip.reload()).toBe(true);
    expect(locator.generation).not.toBe(generation);
    expect((await located(locator, 'us.test')).signals[0]!.jurisdiction).toBe('CA');
  });

  it('new site/range tables (a config reload) replace cached results', async () => {
    const locator = new NetworkLocator({ resolver, geoip });
    expect((await located(locator, 'ie.test')).signals).toHaveLength(1);
    locator.setTables({ ranges: RANGES, sites: SiteNetworks.fromConfig({}) });
    expect((await located(locator, 'ie.test')).signals.map((s) => s.source)).toEqual(['network:cloud-range', 'network:geoip']);
  });
});
