import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Reader } from 'maxmind';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { describeDatabase, detectSchema, GeoIp, GeoIpError } from '../../src/location/geoip.js';
import { isIsoAlpha2 } from '../../src/location/iso3166.js';
import { float, ipLocationDbCountry, maxmindCountry, uint16, uint64, writeMmdb, type MmdbValue } from '../helpers/mmdb-writer.js';

// MaxMind's official test databases, when the workspace provides them (never committed here).
const OFFICIAL = fileURLToPath(new URL('../../../shared/fixtures/geoip/', import.meta.url));
const officialPresent = existsSync(join(OFFICIAL, 'GeoIP2-Country-Test.mmdb'));

let dir: string;
let opened: GeoIp[] = [];
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'geoip-test-'));
});
afterEach(async () => {
  for (const g of opened) g.close();
  opened = [];
  await rm(dir, { recursive: true, force: true });
});

async function open(bytes: Buffer, options: Parameters<typeof GeoIp.open>[0] = {}, name = 'db.mmdb'): Promise<GeoIp> {
  const path = join(dir, name);
  await writeFile(path, bytes);
  const g = await GeoIp.open({ path, ...options });
  opened.push(g);
  return g;
}

async function openError(bytes: Buffer, options: Parameters<typeof GeoIp.open>[0] = {}): Promise<string> {
  const path = join(dir, 'bad.mmdb');
  await writeFile(path, bytes);
  try {
    opened.push(await GeoIp.open({ path, ...options }));
  } catch (err) {
    expect(err).toBeInstanceOf(GeoIpError);
    expect((err as GeoIpError).code).toBe('RESIDENCY_ERR_GEOIP_INVALID');
    return (err as Error).message;
  }
  throw new Error('expected the database to be refused');
}

describe('the bundled CC0 database', () => {
  it('opens and locates well-known addresses (lookups only)', async () => {
    const g = await GeoIp.open();
    opened.push(g);
    expect(g.info.schema).toBe('ip-location-db');
    expect(g.info.databaseType).toMatch(/^country/);
    expect(g.info.name).toBe('GeoIP country (ip-location-db, IPv4+IPv6)');
    expect(g.info.label).toBe('ip-location-db-country-ipv4-ipv6');
    expect(g.info.buildEpoch.getTime()).toBeGreaterThan(Date.UTC(2024, 0, 1));
    expect(g.info.buildEpoch.getTime()).toBeLessThan(Date.now() + 86_400_000);
    expect(g.country('8.8.8.8')).toBe('US');
    expect(g.country('2001:4860:4860::8888')).toBe('US');
    expect(g.country('80.156.0.1')).toBe('DE');
    // 1.1.1.1 is AU (APNIC) or US (Cloudflare) depending on the data: any real code.
    expect(isIsoAlpha2(g.country('1.1.1.1') ?? '')).toBe(true);
    // The database has no ::ffff:0:0/96 alias; mapped addresses are looked up as IPv4.
    expect(g.country('::ffff:8.8.8.8')).toBe('US');
    expect(g.country('127.0.0.1')).toBeNull();
    expect(g.country('not-an-address')).toBeNull();
    expect(g.signal('80.156.0.1')).toEqual({ source: 'network:geoip', value: '80.156.0.1', jurisdiction: 'DE' });
    expect(g.signal('10.0.0.1')).toEqual({ source: 'network:geoip', value: '10.0.0.1', jurisdiction: null });
  });

  it('is found through the package, not a path of this machine', () => {
    expect(GeoIp.defaultPath()).toMatch(/@ip-location-db[\\/]geo-whois-asn-country-mmdb[\\/]geo-whois-asn-country\.mmdb$/);
  });
});

describe('database names', () => {
  it.each([
    ['country ipvAll', 'ip-location-db', 'GeoIP country (ip-location-db, IPv4+IPv6)', 'ip-location-db-country-ipv4-ipv6'],
    ['country ipv4', 'ip-location-db', 'GeoIP country (ip-location-db, IPv4)', 'ip-location-db-country-ipv4'],
    ['City IPv6', 'ip-location-db', 'GeoIP city (ip-location-db, IPv6)', 'ip-location-db-city-ipv6'],
    ['GeoLite2-Country', 'maxmind', 'GeoIP country (MaxMind GeoLite2)', 'geolite2-country'],
    ['GeoIP2-City', 'maxmind', 'GeoIP city (MaxMind GeoIP2)', 'geoip2-city'],
    ['DBIP-Country-Lite', 'maxmind', 'GeoIP country (DB-IP)', 'dbip-country'],
  ] as const)('%s: a name for people and a fixed lowercase label', (type, schema, name, label) => {
    expect(describeDatabase(type, schema)).toEqual({ name, label });
  });

  it("a database read with a forced schema keeps its own type out of the label", async () => {
    expect(describeDatabase('Acme Geo 2031 {"x"}', 'maxmind')).toEqual({ name: 'GeoIP database "Acme Geo 2031 {\\"x\\"}" (read as maxmind)', label: 'other-maxmind' });
    const g = await open(maxmindCountry({}, { databaseType: 'Custom' }), { schema: 'ip-location-db' });
    expect(g.info.label).toBe('other-ip-location-db');
  });
});

describe('the test MMDB writer', () => {
  it('writes databases the maxmind reader reads, in both schemas', () => {
    const ild = new Reader(ipLocationDbCountry());
    expect(ild.metadata.databaseType).toBe('country ipvAll');
    expect(ild.get('127.0.0.2')).toEqual({ country_code: 'US' });
    expect(ild.get('127.0.0.3')).toEqual({ country_code: 'DE' });
    expect(ild.get('::2')).toEqual({ country_code: 'FR' });
    expect(ild.get('127.0.0.9')).toBeNull();
    const mm = new Reader(maxmindCountry());
    expect(mm.metadata.databaseType).toBe('GeoIP2-Country');
    expect(mm.get('127.0.0.4')).toMatchObject({ country: { iso_code: 'IE' }, registered_country: { iso_code: 'US' } });
    // aliasMappedIpv4: the mapped form reaches the IPv4 subtree.
    expect(mm.get('::ffff:127.0.0.4')).toMatchObject({ country: { iso_code: 'IE' } });
  });

  it.each([24, 28, 32] as const)('round-trips every data type with %i-bit records, IPv4 and IPv6 trees', (recordSize) => {
    const value: MmdbValue = {
      text: 'Zürich ✓',
      long: 'x'.repeat(300),
      small: 7,
      big: 4_000_000_000,
      neg: -12,
      dbl: 2.5,
      flt: float(1.5),
      u16: uint16(65535),
      u64: uint64(2n ** 60n),
      u128: 2n ** 100n,
      yes: true,
      no: false,
      list: [1, 'two', [3]],
      bytes: Uint8Array.from([0, 1, 255]),
      nested: { a: { b: { c: 'd' } } },
    };
    for (const ipVersion of [4, 6] as const) {
      const r = new Reader(writeMmdb([['0.0.0.0/0', 'default'], ['10.0.0.0/8', value], ['10.1.2.3/32', 'host']], { databaseType: 'Test', recordSize, ipVersion }));
      expect(r.metadata.recordSize).toBe(recordSize);
      expect(r.get('1.2.3.4')).toBe('default');
      // The reader counts an IPv4 prefix from the IPv4 subtree, in either tree.
      expect(r.getWithPrefixLength('10.1.2.3')).toEqual(['host', 32]);
      const got = r.get('10.200.0.1') as Record<string, unknown>;
      expect({ ...got, bytes: [...(got.bytes as Buffer)] }).toEqual({
        ...value,
        flt: 1.5,
        u16: 65535,
        u64: 2n ** 60n,
        bytes: [0, 1, 255],
      });
    }
  });
});

describe('GeoIp', () => {
  it('reads ip-location-db files by country_code', async () => {
    const g = await open(ipLocationDbCountry());
    expect(g.info.schema).toBe('ip-location-db');
    expect(g.country('127.0.0.2')).toBe('US');
    expect(g.country('127.0.0.3')).toBe('DE');
    expect(g.country('::2')).toBe('FR');
    expect(g.country('127.0.0.9')).toBeNull();
  });

  it('reads MaxMind files by country.iso_code, never registered_country', async () => {
    const g = await open(maxmindCountry());
    expect(g.info.schema).toBe('maxmind');
    expect(g.country('127.0.0.2')).toBe('US');
    // Located in IE, registered to a US owner: IE.
    expect(g.country('127.0.0.4')).toBe('IE');
    expect(g.country('::ffff:127.0.0.4')).toBe('IE');
    // Only a registered country: nothing.
    expect(g.country('127.0.0.5')).toBeNull();
  });

  it('detects the schema from database_type, or takes it from options', async () => {
    expect(detectSchema('GeoIP2-Country')).toBe('maxmind');
    expect(detectSchema('GeoLite2-City')).toBe('maxmind');
    expect(detectSchema('GeoIP2-Enterprise')).toBe('maxmind');
    expect(detectSchema('DBIP-Country-Lite')).toBe('maxmind');
    expect(detectSchema('country ipvAll')).toBe('ip-location-db');
    expect(detectSchema('GeoLite2-ASN')).toBeNull();
    expect(await openError(maxmindCountry({}, { databaseType: 'GeoLite2-ASN' }))).toMatch(/bad\.mmdb: is a "GeoLite2-ASN" database, which has no country data \(expected a GeoIP2\/GeoLite2 Country or City database/);
    const forced = await open(maxmindCountry({}, { databaseType: 'Custom' }), { schema: 'maxmind' });
    expect(forced.country('127.0.0.4')).toBe('IE');
  });

  it('refuses a corrupt or truncated file at startup with a clear error', async () => {
    const good = ipLocationDbCountry();
    expect(await openError(Buffer.from('this is not a database'))).toMatch(/bad\.mmdb: is not a MaxMind DB file: no metadata marker \(corrupt or truncated\?\)$/);
    expect(await openError(Buffer.alloc(0))).toMatch(/no metadata marker/);
    expect(await openError(good.subarray(0, Math.floor(good.length / 2)))).toMatch(/no metadata marker/);
    // Cut inside the metadata map.
    const marker = good.lastIndexOf(Buffer.from('abcdef4d61784d696e642e636f6d', 'hex'));
    expect(await openError(good.subarray(0, marker + 60))).toMatch(/bad\.mmdb: has unreadable metadata: /);
    // Metadata intact, data section cut short: tree records point past it.
    const cut = Buffer.concat([good.subarray(0, 960 + 16 + 2), good.subarray(marker)]);
    expect(await openError(cut)).toMatch(/bad\.mmdb: is corrupt: search tree node \d+ points outside the data section/);
    // A record pointing back at the root: a loop.
    const loop = Buffer.from(good);
    loop.writeUIntBE(0, 6, 3);
    expect(await openError(loop)).toMatch(/is corrupt: the search tree loops back to node 0/);
    await expect(GeoIp.open({ path: join(dir, 'missing.mmdb') })).rejects.toThrow(`${join(dir, 'missing.mmdb')}: file not found`);
    expect(() => GeoIp.openSync({ path: join(dir, 'missing.mmdb') })).toThrow(/file not found/);
  });

  it('reloads on change: keeps the last good database on a bad file, counts it, then takes a valid replacement', async () => {
    const onReload = vi.fn();
    const onReloadError = vi.fn();
    const path = join(dir, 'country.mmdb');
    await writeFile(path, maxmindCountry());
    const g = await GeoIp.open({ path, watch: true, debounceMs: 30, onReload, onReloadError });
    opened.push(g);
    expect(g.country('127.0.0.2')).toBe('US');
    expect(g.generation).toBe(0);

    // Garbage written in place.
    await writeFile(path, 'garbage, not a database');
    await vi.waitFor(() => expect(g.counters.reloadFailures).toBeGreaterThanOrEqual(1), { timeout: 5000, interval: 20 });
    expect(g.country('127.0.0.2')).toBe('US');
    expect(g.generation).toBe(0);
    expect(g.lastError?.message).toMatch(/country\.mmdb: is not a MaxMind DB file/);
    expect(onReloadError).toHaveBeenCalled();

    // A database cut short, as by an interrupted download.
    const failures = g.counters.reloadFailures;
    const valid = maxmindCountry({ '127.0.0.2/32': 'CA' });
    await writeFile(path, valid.subarray(0, Math.floor(valid.length * 0.9)));
    await vi.waitFor(() => expect(g.counters.reloadFailures).toBeGreaterThan(failures), { timeout: 5000, interval: 20 });
    expect(g.country('127.0.0.2')).toBe('US');

    // A valid replacement, renamed into place atomically.
    await writeFile(join(dir, 'country.mmdb.tmp'), valid);
    await rename(join(dir, 'country.mmdb.tmp'), path);
    await vi.waitFor(() => expect(g.country('127.0.0.2')).toBe('CA'), { timeout: 5000, interval: 20 });
    expect(g.generation).toBe(1);
    expect(g.counters.reloads).toBe(1);
    expect(g.lastError).toBeNull();
    expect(onReload).toHaveBeenCalledWith(expect.objectContaining({ generation: 1, schema: 'maxmind' }));
    // A switch of schema on reload is fine too.
    await writeFile(join(dir, 'country.mmdb.tmp'), ipLocationDbCountry({ '127.0.0.2/32': 'MX' }));
    await rename(join(dir, 'country.mmdb.tmp'), path);
    await vi.waitFor(() => expect(g.country('127.0.0.2')).toBe('MX'), { timeout: 5000, interval: 20 });
    expect(g.info.schema).toBe('ip-location-db');
  });

  it('a manual reload of an unchanged file changes nothing; of a bad one keeps the old', async () => {
    const g = await open(ipLocationDbCountry(), {}, 'manual.mmdb');
    expect(await g.reload()).toBe(true);
    expect(g.generation).toBe(0);
    expect(g.counters).toEqual({ reloads: 0, reloadFailures: 0 });
    await writeFile(join(dir, 'manual.mmdb'), Buffer.from('nope'));
    expect(await g.reload()).toBe(false);
    expect(g.counters).toEqual({ reloads: 0, reloadFailures: 1 });
    expect(g.country('127.0.0.3')).toBe('DE');
    await rm(join(dir, 'manual.mmdb'));
    expect(await g.reload()).toBe(false);
    expect(g.lastError?.message).toMatch(/manual\.mmdb: file not found/);
    expect(g.country('127.0.0.3')).toBe('DE');
  });

  // Optional: MaxMind's own test databases, when the workspace has them.
  it.skipIf(!officialPresent)('conformance with MaxMind’s official test databases', async () => {
    for (const name of ['GeoIP2-Country-Test.mmdb', 'GeoLite2-Country-Test.mmdb', 'GeoIP2-City-Test.mmdb']) {
      const g = await GeoIp.open({ path: join(OFFICIAL, name) });
      opened.push(g);
      expect(g.info.schema, name).toBe('maxmind');
      expect(g.country('2.125.160.216'), name).toBe('GB');
      expect(g.country('89.160.20.112'), name).toBe('SE');
    }
    // In the source data 81.2.69.142 is located in GB and registered in US.
    const country = await GeoIp.open({ path: join(OFFICIAL, 'GeoIP2-Country-Test.mmdb') });
    opened.push(country);
    expect(country.country('81.2.69.142')).toBe('GB');

    // Our writer, fed the official JSON source, answers exactly as the official file.
    const source = JSON.parse(readFileSync(join(OFFICIAL, 'GeoIP2-Country-Test.json'), 'utf8')) as Record<string, MmdbValue>[];
    const networks = source.map((e) => Object.entries(e)[0]!);
    const ours = new Reader(writeMmdb(networks, { databaseType: 'GeoIP2-Country', recordSize: 28 }));
    const theirs = new Reader(readFileSync(join(OFFICIAL, 'GeoIP2-Country-Test.mmdb')));
    for (const [cidr] of networks) {
      const address = cidr.slice(0, cidr.indexOf('/'));
      expect(ours.getWithPrefixLength(address), cidr).toEqual(theirs.getWithPrefixLength(address));
    }

    // The broken-search-tree test database is refused, whatever schema is claimed.
    await expect(GeoIp.open({ path: join(OFFICIAL, 'MaxMind-DB-test-broken-search-tree-24.mmdb'), schema: 'maxmind' })).rejects.toThrow(/is corrupt: the search tree loops back/);
  });
});
