// Network location on the hot path. Run: npx vitest bench --project unit test/bench/location.bench.ts
//
// The figure that matters is "warm locate": what every request pays once its
// upstream's DNS answer and located address are cached (target: well under 2 µs).
import { afterAll, bench, describe } from 'vitest';
import { GeoIp } from '../../src/location/geoip.js';
import { NetworkLocator } from '../../src/location/network-locator.js';
import { SiteNetworks } from '../../src/location/networks.js';
import { PrefixTable } from '../../src/location/prefix-table.js';
import { CloudRanges, parseRangeFile } from '../../src/location/ranges.js';
import { PinningResolver } from '../../src/location/resolver.js';
import { startDnsServer } from '../helpers/dns-server.js';

// Deterministic pseudo-random numbers (no Math.random: comparable runs).
let seed = 0x5eed;
const rand = () => {
  // mulberry32
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = Math.imul(seed ^ (seed >>> 15), seed | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
};
const v4 = (n: number) => `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
const hex = () => Math.floor(rand() * 65536).toString(16);

// A cloud range table of realistic size: ~60k IPv4 and ~20k IPv6 prefixes in AWS format.
const REGIONS = ['us-east-1', 'eu-west-1', 'eu-central-1', 'ap-southeast-2', 'sa-east-1'];
const prefixes = Array.from({ length: 60_000 }, () => {
  const len = 16 + Math.floor(rand() * 13);
  const start = ((Math.floor(rand() * 2 ** 32) >>> (32 - len)) << (32 - len)) >>> 0;
  return { ip_prefix: `${v4(start)}/${len}`, region: REGIONS[Math.floor(rand() * REGIONS.length)]!, service: 'AMAZON' };
});
const ipv6Prefixes = Array.from({ length: 20_000 }, () => ({ ipv6_prefix: `2600:${hex()}:${hex()}::/48`, region: REGIONS[Math.floor(rand() * REGIONS.length)]!, service: 'AMAZON' }));
let t = performance.now();
const ranges = CloudRanges.fromParsed([
  parseRangeFile(JSON.stringify({ syncToken: '1', createDate: '2024-01-01-00-00-00', prefixes, ipv6_prefixes: ipv6Prefixes }), 'synthetic.json'),
]);
ranges.lookup('1.2.3.4'); // build the table now, not in the first measured call
console.log(`cloud ranges: ${ranges.size} prefixes parsed and built in ${(performance.now() - t).toFixed(0)} ms`);

t = performance.now();
const geoip = await GeoIp.open();
console.log(`GeoIP: bundled database opened and verified in ${(performance.now() - t).toFixed(0)} ms`);
const sites = SiteNetworks.fromConfig({ '10.20.0.0/16': 'US', '10.30.0.0/16': { jurisdiction: 'IE', region: 'eu-west-1' } });

const dns = await startDnsServer({ 'store.test': { A: ['127.0.0.2', '127.0.0.3'], ttl: 3600 } });
const resolver = new PinningResolver({ servers: [dns.address], minTtl: 0 });
await resolver.ready('store.test');
const locator = new NetworkLocator({ resolver, geoip, ranges, sites });
const roundRobin = new NetworkLocator({ resolver, geoip, ranges, sites, pick: 'round-robin' });
// A cache of one: every distinct address is a miss (the cost of a first request to a new address).
const cold = new NetworkLocator({ resolver, geoip, ranges, sites, cacheSize: 1 });
locator.locate('store.test');
roundRobin.locate('store.test');

const addresses = Array.from({ length: 4096 }, () => v4(Math.floor(rand() * 2 ** 32)));
const addresses6 = Array.from({ length: 4096 }, () => `2600:${hex()}:${hex()}:${hex()}::${hex()}`);
const table = new PrefixTable<number>();
prefixes.forEach((p, i) => table.add(p.ip_prefix, i));
ipv6Prefixes.forEach((p, i) => table.add(p.ipv6_prefix, i));
table.lookup('1.2.3.4');

// For scale: one Map read, the floor for any per-request lookup.
const hosts = ['store.test', 'other.test', 'third.test', 'fourth.test'];
const baseline = new Map(hosts.map((h, k) => [h, k]));
// Results go somewhere, so the JIT cannot drop the calls.
export let sink: unknown;

afterAll(async () => {
  resolver.close();
  geoip.close();
  await dns.close();
});

let i = 0;
// 1000 calls per sample so the harness's own per-sample cost does not swamp
// a sub-microsecond body: ns per call = the mean in ms × 1000.
describe('per request (warm), ×1000 per sample', () => {
  bench('warm locate (DNS name, first address) ×1000', () => {
    for (let k = 0; k < 1000; k++) sink = locator.locate('store.test');
  });
  bench('warm locate (round-robin over 2 addresses) ×1000', () => {
    for (let k = 0; k < 1000; k++) sink = roundRobin.locate('store.test');
  });
  bench('baseline: Map.get of a string key ×1000', () => {
    for (let k = 0; k < 1000; k++) sink = baseline.get(hosts[k & 3]!);
  });
});

describe('per new address (cold)', () => {
  bench('locateAddress miss: site + 80k-prefix ranges + GeoIP', () => {
    sink = cold.locateAddress(addresses[i++ & 4095]!);
  });
  bench('GeoIP country lookup (bundled DB)', () => {
    sink = geoip.country(addresses[i++ & 4095]!);
  });
});

describe('prefix table (80k prefixes), ×1000 per sample', () => {
  bench('IPv4 lookup ×1000', () => {
    for (let k = 0; k < 1000; k++) sink = table.lookup(addresses[i++ & 4095]!);
  });
  bench('IPv6 lookup ×1000', () => {
    for (let k = 0; k < 1000; k++) sink = table.lookup(addresses6[i++ & 4095]!);
  });
});
