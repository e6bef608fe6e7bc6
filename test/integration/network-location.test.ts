import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { request } from 'undici';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { stringify } from 'yaml';
import type { DecisionRecord } from '../../src/audit/record.js';
import { explainCommand } from '../../src/cli/explain.js';
import { ConfigError } from '../../src/config/load.js';
import { UNRESOLVED, type NetworkLocation } from '../../src/location/network-locator.js';
import { PinningResolver } from '../../src/location/resolver.js';
import { buildPlanner, createResidencyProxy, loadConfig, parseConfigText, type ResidencyProxy } from '../../src/server.js';
import { startDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { ipLocationDbCountry, maxmindCountry } from '../helpers/mmdb-writer.js';
import { decisionsOf } from '../helpers/proxy.js';

/**
 * Network location end to end: a real DNS server on loopback answers 127.x
 * addresses; upstream listeners bind 127.0.0.2 (placed in the US by a site
 * network) and 127.0.0.3 (Germany) on the same port, so only the address the
 * proxy connects to tells them apart. What reaches each listener shows that
 * the proxy sends to the address it located, and only when the policy allows.
 */

const US = '127.0.0.2';
const DE = '127.0.0.3';
const SITES = { [`${US}/32`]: 'US', [`${DE}/32`]: 'DE' };
const WRITES_US_ONLY = { name: 'writes', match: { operations: ['write'] }, allow_jurisdictions: ['US'], mode: 'enforce' };
const RANGES_FIXTURE = fileURLToPath(new URL('../fixtures/ranges/aws-loopback-ip-ranges.json', import.meta.url));

interface Listener {
  readonly address: string;
  readonly port: number;
  /** Accepted TCP connections. */
  connections: number;
  /** Request lines and body bytes received. */
  readonly requests: { method: string; url: string; host: string | undefined; bytes: number }[];
}

let cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  cleanups = [];
});

function listen(server: Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** Recording HTTP listeners on the given loopback addresses, all on one port (the first's, chosen by the OS). */
async function listeners(addresses: readonly string[]): Promise<Listener[]> {
  for (let attempt = 0; ; attempt++) {
    const servers: Server[] = [];
    const out: Listener[] = [];
    try {
      let port = 0;
      for (const address of addresses) {
        const l: Listener = { address, port: 0, connections: 0, requests: [] };
        const server = createServer((req, res) => {
          const seen = { method: req.method ?? '', url: req.url ?? '', host: req.headers.host, bytes: 0 };
          l.requests.push(seen);
          req.on('data', (chunk: Buffer) => (seen.bytes += chunk.length));
          req.on('end', () => res.end(`stored at ${address}\n`));
        });
        server.on('connection', () => l.connections++);
        servers.push(server);
        port = await listen(server, address, port);
        out.push(Object.assign(l, { port }));
      }
      cleanups.push(
        () =>
          Promise.all(
            servers.map(
              (s) =>
                new Promise<void>((r) => {
                  s.closeAllConnections();
                  s.close(() => r());
                }),
            ),
          ).then(() => {}),
      );
      return out;
    } catch (err) {
      await Promise.all(servers.filter((s) => s.listening).map((s) => new Promise<void>((r) => s.close(() => r()))));
      // The port the OS gave the first address is taken on another: try again.
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt > 10) throw err;
    }
  }
}

async function dnsServer(zone: Parameters<typeof startDnsServer>[0]): Promise<TestDnsServer> {
  const dns = await startDnsServer(zone);
  cleanups.push(() => dns.close());
  return dns;
}

interface Running {
  app: ResidencyProxy;
  url: string;
  admin: string;
  dir: string;
  configFile: string;
  decisions(): DecisionRecord[];
}

/** Write the config to a file (reloads read it), build the proxy, and start it unless told not to. */
function create(doc: Record<string, unknown>): { app: ResidencyProxy; dir: string; configFile: string } {
  const dir = mkdtempSync(join(tmpdir(), 'residency-netloc-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const configFile = join(dir, 'policy.yaml');
  writeFileSync(
    configFile,
    stringify({ listen: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 }, decision_log: { path: join(dir, 'decisions.log') }, ...doc }),
  );
  const app = createResidencyProxy(loadConfig(configFile), { logger: pino({ level: 'silent' }), replica: 'test', awaitOutcomes: true });
  cleanups.push(() => app.close());
  return { app, dir, configFile };
}

async function start(doc: Record<string, unknown>): Promise<Running> {
  const { app, dir, configFile } = create(doc);
  const { proxy, admin } = await app.listen();
  const logFile = join(dir, 'decisions.log');
  return {
    app,
    url: `http://127.0.0.1:${proxy.port}`,
    admin: `http://127.0.0.1:${admin.port}`,
    dir,
    configFile,
    decisions: () => decisionsOf(readFileSync(logFile, 'utf8')).filter((r) => (r as { kind?: string }).kind !== 'event'),
  };
}

async function put(url: string, body = 'some bytes that must not leave the US'): Promise<{ status: number; text: string }> {
  const res = await request(url, { method: 'PUT', body });
  return { status: res.statusCode, text: await res.body.text() };
}

async function metric(admin: string, line: RegExp): Promise<number | null> {
  const text = await (await request(`${admin}/metrics`)).body.text();
  for (const l of text.split('\n')) {
    const m = line.exec(l);
    if (m) return Number(l.slice(l.lastIndexOf(' ') + 1));
  }
  return null;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sources = (r: DecisionRecord | undefined) => r?.location.signals.map((s) => `${s.source}:${s.value}:${s.jurisdiction ?? '-'}`);

/** A proxy whose one upstream, `HOST`, is placed by DNS and the site networks only (nothing declared). */
function dnsConfig(dns: TestDnsServer, host: string, port: number, extra: Record<string, unknown> = {}) {
  return {
    dns: { servers: [dns.address], min_ttl: 0, grace_seconds: 2, timeout: 0.2, attempts: 1 },
    networks: SITES,
    // The site networks decide here; GeoIP has its own tests below.
    location: { geoip: { enabled: false } },
    upstreams: [{ name: 'store', url: `http://${host}:${port}`, provider: 'generic', route: { path_prefix: '/s', strip_prefix: true } }],
    rules: [WRITES_US_ONLY],
    ...extra,
  };
}

describe('DNS-located upstreams (a real DNS server, site networks)', () => {
  it('forwards to a US address, records the address and the site signal, and does not query DNS per request', async () => {
    const [us, de] = await listeners([US, DE]);
    const dns = await dnsServer({ 'store.test': { A: [US], ttl: 60 } });
    const proxy = await start(dnsConfig(dns, 'store.test', us!.port));
    const startupQueries = dns.count('store.test');
    expect(startupQueries).toBe(2); // A and AAAA, once, at startup

    for (let i = 0; i < 25; i++) expect((await put(`${proxy.url}/s/bucket/k${i}`, 'x')).status).toBe(200);
    expect(us!.requests).toHaveLength(25);
    expect(us!.requests[0]).toMatchObject({ method: 'PUT', url: '/bucket/k0', bytes: 1 });
    expect(de!.connections).toBe(0);
    // The TTL is respected: no query per request.
    expect(dns.count('store.test')).toBe(startupQueries);

    const [record] = proxy.decisions();
    expect(record).toMatchObject({
      decision: 'allow',
      reason: 'jurisdiction_allowed',
      target: { host: `store.test:${us!.port}`, address: US },
      location: { jurisdictions: ['US'], signals: [{ source: 'network:site', value: `${US}/32`, jurisdiction: 'US' }] },
    });
    expect(await metric(proxy.admin, /^residency_location_lookups_total\{source="dns",result="hit"\}/)).toBeGreaterThanOrEqual(1);
    expect(await metric(proxy.admin, /^residency_location_lookups_total\{source="site",result="hit"\}/)).toBe(1);
  });

  it('refuses an EU address with zero bytes upstream', async () => {
    const [us, de] = await listeners([US, DE]);
    const dns = await dnsServer({ 'store.test': { A: [DE], ttl: 60 } });
    const proxy = await start(dnsConfig(dns, 'store.test', us!.port));
    const res = await put(`${proxy.url}/s/bucket/k`);
    expect(res.status).toBe(403);
    expect(JSON.parse(res.text)).toMatchObject({ reason: 'jurisdiction_not_allowed', jurisdictions: ['DE'] });
    expect(de!.connections).toBe(0);
    expect(us!.connections).toBe(0);
    expect(proxy.decisions()[0]).toMatchObject({
      decision: 'block',
      effective: 'refused',
      target: { address: DE },
      bytes_in: 0,
      location: { jurisdictions: ['DE'], signals: [{ source: 'network:site', value: `${DE}/32`, jurisdiction: 'DE' }] },
    });
  });

  it('an answer that flips US → EU between requests: the next write is refused and nothing reaches the EU listener', async () => {
    const [us, de] = await listeners([US, DE]);
    const dns = await dnsServer({ 'moving.test': { A: [US], ttl: 1 } });
    const proxy = await start(dnsConfig(dns, 'moving.test', us!.port));
    expect((await put(`${proxy.url}/s/bucket/before`)).status).toBe(200);
    expect(us!.requests.map((r) => r.url)).toEqual(['/bucket/before']);

    // Rebinding: the same name now answers with the German address.
    const asked = dns.count('moving.test', 'A');
    dns.set('moving.test', { A: [DE], ttl: 1 });
    // The background refresh (at 3/4 of the TTL) picks it up; no request triggers a query.
    await vi.waitFor(() => expect(dns.count('moving.test', 'A')).toBeGreaterThan(asked), { timeout: 3000, interval: 20 });
    await sleep(50);

    const after = await put(`${proxy.url}/s/bucket/after`);
    expect(after.status).toBe(403);
    expect(de!.connections).toBe(0);
    expect(de!.requests).toEqual([]);
    expect(us!.requests.map((r) => r.url)).toEqual(['/bucket/before']);
    const records = proxy.decisions();
    expect(records.map((r) => [r.decision, r.target.address, r.location.jurisdictions])).toEqual([
      ['allow', US, ['US']],
      ['block', DE, ['DE']],
    ]);
  });

  it('resolver down: the cached answer is served within dns.grace_seconds, then the location is unknown and nothing is sent', async () => {
    const [us, de] = await listeners([US, DE]);
    // TTL 2 s, grace 2 s: fresh until ~2 s after startup, usable until ~4 s.
    const dns = await dnsServer({ 'fading.test': { A: [US], ttl: 2 } });
    const { app } = create(dnsConfig(dns, 'fading.test', us!.port));
    const before = Date.now();
    const { proxy: address, admin } = await app.listen();
    const listening = Date.now();
    expect(listening - before).toBeLessThan(1500);
    const url = `http://127.0.0.1:${address.port}`;
    dns.mode = 'drop';

    expect((await put(`${url}/s/b/fresh`)).status).toBe(200);
    // Past the TTL (the answer expired at the latest 2 s after `listening`), within the grace period.
    await sleep(Math.max(0, listening + 2300 - Date.now()));
    expect(Date.now()).toBeLessThan(before + 4000);
    expect((await put(`${url}/s/b/stale`)).status).toBe(200);
    // Past the grace period: fail closed.
    await sleep(Math.max(0, listening + 4300 - Date.now()));
    const connections = us!.connections + de!.connections;
    const refused = await put(`${url}/s/b/gone`);
    expect(refused.status).toBe(403);
    expect(JSON.parse(refused.text)).toMatchObject({ reason: 'unknown_location', jurisdictions: [] });
    // A read (no rule) has nowhere checked to go either: 502, and no connection is made.
    const read = await request(`${url}/s/b/gone`);
    expect(read.statusCode).toBe(502);
    expect(await read.body.text()).toMatch(/no located address/);
    expect(us!.connections + de!.connections).toBe(connections);
    expect(us!.requests.map((r) => r.url)).toEqual(['/b/fresh', '/b/stale']);

    const log = decisionsOf(readFileSync(join(app.config.decision_log.path), 'utf8'));
    expect(log.map((r) => [r.path, r.decision, r.reason, r.target.address, r.status])).toEqual([
      ['/b/fresh', 'allow', 'jurisdiction_allowed', US, 200],
      ['/b/stale', 'allow', 'jurisdiction_allowed', US, 200],
      ['/b/gone', 'block', 'unknown_location', null, 403],
      ['/b/gone', 'allow', 'read_allowed', null, 502],
    ]);
    expect(log[3]).toMatchObject({ error: 'upstream_unresolved' });
    expect(await metric(`http://127.0.0.1:${admin.port}`, /^residency_location_lookups_total\{source="dns",result="error"\}/)).toBeGreaterThanOrEqual(1);
    expect(await metric(`http://127.0.0.1:${admin.port}`, /^residency_upstream_errors_total\{upstream="store",kind="unresolved"\}/)).toBe(1);
  });

  it('a monitor-mode write to a name that does not resolve is not sent, and records no body bytes', async () => {
    const [us] = await listeners([US]);
    const dns = await dnsServer({ 'store.test': { A: [US], ttl: 60 } });
    const proxy = await start(dnsConfig(dns, 'nowhere.test', us!.port, { rules: [{ ...WRITES_US_ONLY, mode: 'monitor' }] }));
    // Head and body in one write: the proxy holds the whole body before deciding, and would hand it on as bytes.
    const socket = connect({ host: '127.0.0.1', port: Number(new URL(proxy.url).port) });
    cleanups.push(() => void socket.destroy());
    const answer: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => answer.push(chunk));
    socket.write('PUT /s/b/k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 7\r\nConnection: close\r\n\r\npayload');
    await new Promise((resolve) => socket.once('close', resolve));
    expect(Buffer.concat(answer).toString('latin1')).toMatch(/^HTTP\/1\.1 502 /);
    expect(us!.connections).toBe(0);
    const [record] = proxy.decisions();
    expect(record).toMatchObject({ path: '/b/k', decision: 'block', effective: 'forwarded', reason: 'unknown_location', status: 502, error: 'upstream_unresolved', bytes_in: 0 });
  });

  it('{host} upstreams resolve the requested name through the same resolver, on its first request', async () => {
    const [us, de] = await listeners([US, DE]);
    const dns = await dnsServer({ 'a.store.test': { A: [US], ttl: 60 }, 'b.store.test': { A: [DE], ttl: 60 } });
    const proxy = await start({
      ...dnsConfig(dns, 'unused.test', us!.port),
      upstreams: [{ name: 'by-host', url: `http://{host}:${us!.port}`, provider: 'generic', route: { host: '*.store.test' } }],
    });
    const send = async (host: string) => {
      const res = await request(`${proxy.url}/bucket/k`, { method: 'PUT', headers: { host }, body: 'x' });
      await res.body.dump();
      return res.statusCode;
    };
    expect(await send('a.store.test')).toBe(200);
    expect(await send('a.store.test')).toBe(200);
    expect(await send('b.store.test')).toBe(403);
    // Generic upstreams send the target host (with the URL's port) as Host.
    expect(us!.requests.map((r) => r.host)).toEqual([`a.store.test:${us!.port}`, `a.store.test:${us!.port}`]);
    expect(de!.connections).toBe(0);
    expect(dns.count('a.store.test', 'A')).toBe(1);
    expect(dns.count('evil.test')).toBe(0);
    expect(proxy.decisions().map((r) => [r.target.host, r.target.address, r.decision])).toEqual([
      [`a.store.test:${us!.port}`, US, 'allow'],
      [`a.store.test:${us!.port}`, US, 'allow'],
      [`b.store.test:${us!.port}`, DE, 'block'],
    ]);
  });

  it('declared us-east-1 but the address is in an EU site network: location_conflict, refused in enforce, recorded in monitor', async () => {
    const [us, de] = await listeners([US, DE]);
    const dns = await dnsServer({ 'eu.test': { A: [DE], ttl: 60 } });
    const proxy = await start({
      ...dnsConfig(dns, 'eu.test', us!.port),
      upstreams: [
        { name: 'enforced', url: `http://eu.test:${us!.port}`, provider: 'generic', route: { path_prefix: '/e', strip_prefix: true }, region: 'us-east-1' },
        { name: 'watched', url: `http://eu.test:${us!.port}`, provider: 'generic', route: { path_prefix: '/m', strip_prefix: true }, region: 'us-east-1' },
      ],
      rules: [
        { name: 'enforced-writes', match: { upstreams: ['enforced'] }, allow_jurisdictions: ['US'], mode: 'enforce' },
        { name: 'watched-writes', match: { upstreams: ['watched'] }, allow_jurisdictions: ['US'], mode: 'monitor' },
      ],
    });
    const refused = await put(`${proxy.url}/e/bucket/k`);
    expect(refused.status).toBe(403);
    expect(JSON.parse(refused.text)).toMatchObject({ reason: 'location_conflict', jurisdictions: ['US', 'DE'] });
    expect(de!.connections).toBe(0);

    expect((await put(`${proxy.url}/m/bucket/k`)).status).toBe(200);
    expect(de!.requests.map((r) => r.url)).toEqual(['/bucket/k']);
    const [enforced, watched] = proxy.decisions();
    const conflict = ['declared:us-east-1:US', `network:site:${DE}/32:DE`];
    expect(enforced).toMatchObject({ decision: 'block', effective: 'refused', mode: 'enforce', reason: 'location_conflict', target: { address: DE } });
    expect(sources(enforced)).toEqual(conflict);
    expect(watched).toMatchObject({ decision: 'block', effective: 'forwarded', mode: 'monitor', reason: 'location_conflict', status: 200, target: { address: DE } });
    expect(sources(watched)).toEqual(conflict);
    expect(us!.connections).toBe(0);
  });

  it('/readyz is not ready until the upstream hosts have been resolved once', async () => {
    const [us] = await listeners([US]);
    const dns = await dnsServer({ 'slow.test': { A: [US], ttl: 60 } });
    dns.mode = 'drop';
    const { app } = create({ ...dnsConfig(dns, 'slow.test', us!.port), dns: { servers: [dns.address], timeout: 0.3, attempts: 4 } });
    const listening = app.listen();
    await vi.waitFor(() => expect(app.admin.server.listening).toBe(true), { timeout: 5000, interval: 10 });
    const admin = `http://127.0.0.1:${(app.admin.server.address() as AddressInfo).port}`;
    const early = await request(`${admin}/readyz`);
    expect(early.statusCode).toBe(503);
    const body = (await early.body.json()) as { checks: Record<string, { ok: boolean; detail?: string }> };
    expect(body.checks.location).toMatchObject({ ok: false, detail: expect.stringMatching(/^(resolving slow\.test|loading location sources)$/) });
    // The data plane is not listening yet: no request can be decided without the sources.
    expect(app.proxy.server.listening).toBe(false);

    dns.mode = 'answer';
    await listening;
    const ready = await request(`${admin}/readyz`);
    expect(ready.statusCode).toBe(200);
    const checks = ((await ready.body.json()) as { checks: Record<string, { ok: boolean; detail?: string }> }).checks;
    expect(checks.location).toEqual({ ok: true, detail: 'no GeoIP; 0 range file(s); 2 site network(s); 1/1 upstream host(s) resolved' });
  });
});

describe('cloud IP ranges', () => {
  it('an upstream address in an AWS eu-west-1 range (native ip-ranges.json) is refused on the cloud-range signal', async () => {
    const [eu] = await listeners(['127.0.0.4']);
    const proxy = await start({
      location: { geoip: { enabled: false }, cloud_ranges: [RANGES_FIXTURE] },
      upstreams: [{ name: 'aws-eu', url: `http://127.0.0.4:${eu!.port}`, provider: 'generic', route: { path_prefix: '/s', strip_prefix: true } }],
      rules: [WRITES_US_ONLY],
    });
    const res = await put(`${proxy.url}/s/bucket/k`);
    expect(res.status).toBe(403);
    expect(JSON.parse(res.text)).toMatchObject({ reason: 'jurisdiction_not_allowed', jurisdictions: ['IE'] });
    expect(eu!.connections).toBe(0);
    const [record] = proxy.decisions();
    expect(record).toMatchObject({ target: { address: '127.0.0.4' }, location: { region: 'eu-west-1' } });
    expect(record!.location.signals).toEqual([{ source: 'network:cloud-range', value: 'aws:eu-west-1', jurisdiction: 'IE', region: 'eu-west-1' }]);
    // The file's version and date, and its age, for dashboards.
    expect(await metric(proxy.admin, /^residency_location_source_info\{source="cloud-range",version="aws:1717000000",built="2024-05-29T16:26:40Z"\}/)).toBe(1);
    expect(await metric(proxy.admin, /^residency_ip_ranges_age_seconds /)).toBeGreaterThan(0);
  });

  it('a malformed range file stops the start with a message naming the file and the problem', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'residency-ranges-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const bad = join(dir, 'ip-ranges.json');
    writeFileSync(bad, JSON.stringify({ syncToken: '1', createDate: '2024-01-01-00-00-00', prefixes: [{ ip_prefix: '127.0.0.4/33', region: 'eu-west-1' }], ipv6_prefixes: [] }));
    const { app } = create({
      location: { geoip: { enabled: false }, cloud_ranges: [bad] },
      upstreams: [{ name: 's', url: 'http://127.0.0.4:9', provider: 'generic', route: { path_prefix: '/s' } }],
    });
    const failure = app.listen();
    await expect(failure).rejects.toThrow(`${bad}: prefixes[0].ip_prefix: "127.0.0.4/33" is not a CIDR`);
    await expect(failure).rejects.toMatchObject({ code: 'RESIDENCY_ERR_RANGES_INVALID' });
    // Nothing is left listening.
    expect(app.proxy.server.listening).toBe(false);
    expect(app.admin.server.listening).toBe(false);
  });

  it('a range file broken before a reload: the last good tables stay, and the failure is counted', async () => {
    const [eu] = await listeners(['127.0.0.4']);
    const dir = mkdtempSync(join(tmpdir(), 'residency-ranges-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'ip-ranges.json');
    writeFileSync(file, readFileSync(RANGES_FIXTURE));
    const proxy = await start({
      location: { geoip: { enabled: false }, cloud_ranges: [file] },
      upstreams: [{ name: 'aws-eu', url: `http://127.0.0.4:${eu!.port}`, provider: 'generic', route: { path_prefix: '/s', strip_prefix: true } }],
      rules: [WRITES_US_ONLY],
    });
    expect((await put(`${proxy.url}/s/b/k`)).status).toBe(403);

    writeFileSync(file, '{"syncToken": "2", "createDate": "yesterday", "prefixes": [');
    expect(proxy.app.policy.reload('test').ok).toBe(true);
    await vi.waitFor(
      async () => expect(await metric(proxy.admin, /^residency_location_source_reloads_total\{source="cloud-range",result="failure"\}/)).toBe(1),
      { timeout: 5000, interval: 50 },
    );
    expect(await metric(proxy.admin, /^residency_location_source_reloads_total\{source="cloud-range",result="success"\}/)).toBe(0);
    // Still placed by the last good file.
    expect((await put(`${proxy.url}/s/b/k2`)).status).toBe(403);
    expect(sources(proxy.decisions()[1])).toEqual(['network:cloud-range:aws:eu-west-1:IE']);
    expect(eu!.connections).toBe(0);

    // A good file again: the next reload takes it (now 127.0.0.4 is US).
    writeFileSync(file, JSON.stringify({ syncToken: '3', createDate: '2024-06-01-00-00-00', prefixes: [{ ip_prefix: '127.0.0.4/32', region: 'us-east-1' }], ipv6_prefixes: [] }));
    proxy.app.policy.reload('test');
    await vi.waitFor(
      async () => expect(await metric(proxy.admin, /^residency_location_source_reloads_total\{source="cloud-range",result="success"\}/)).toBe(1),
      { timeout: 5000, interval: 50 },
    );
    expect((await put(`${proxy.url}/s/b/k3`)).status).toBe(200);
    expect(eu!.requests.map((r) => r.url)).toEqual(['/b/k3']);
  });
});

describe('GeoIP', () => {
  async function geoipProxy(db: Buffer, upstreams: { name: string; address: string; port: number }[]) {
    const dir = mkdtempSync(join(tmpdir(), 'residency-geoip-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'country.mmdb');
    writeFileSync(file, db);
    const proxy = await start({
      location: { geoip: { path: file } },
      upstreams: upstreams.map((u) => ({ name: u.name, url: `http://${u.address}:${u.port}`, provider: 'generic', route: { path_prefix: `/${u.name}`, strip_prefix: true } })),
      rules: [WRITES_US_ONLY],
    });
    return { proxy, file };
  }

  it('a generated database placing the upstream address in Germany: refused end to end', async () => {
    const [us, de] = await listeners([US, DE]);
    const { proxy } = await geoipProxy(ipLocationDbCountry(), [
      { name: 'us', address: US, port: us!.port },
      { name: 'de', address: DE, port: de!.port },
    ]);
    expect((await put(`${proxy.url}/us/b/k`)).status).toBe(200);
    expect((await put(`${proxy.url}/de/b/k`)).status).toBe(403);
    expect(de!.connections).toBe(0);
    expect(proxy.decisions().map((r) => [r.target.address, r.reason, sources(r)])).toEqual([
      [US, 'jurisdiction_allowed', [`network:geoip:${US}:US`]],
      [DE, 'jurisdiction_not_allowed', [`network:geoip:${DE}:DE`]],
    ]);
    // The file's database_type ('country ipvAll') is said for people in /readyz, and as a fixed lowercase label.
    expect(await metric(proxy.admin, /^residency_location_source_info\{source="geoip",version="ip-location-db-country-ipv4-ipv6",built="/)).toBe(1);
    const ready = (await (await request(`${proxy.admin}/readyz`)).body.json()) as { checks: Record<string, { ok: boolean; detail?: string }> };
    expect(ready.checks.location!.detail).toMatch(/^GeoIP country \(ip-location-db, IPv4\+IPv6\) built \d{4}-\d\d-\d\d; /);
    expect(await metric(proxy.admin, /^residency_geoip_database_age_seconds /)).toBeGreaterThan(0);
  });

  it('MaxMind schema: located by country, never by registered_country', async () => {
    const [ie, registered] = await listeners(['127.0.0.4', '127.0.0.5']);
    // 127.0.0.4: located IE, registered US. 127.0.0.5: registered US, no located country.
    const { proxy } = await geoipProxy(maxmindCountry(), [
      { name: 'ie', address: '127.0.0.4', port: ie!.port },
      { name: 'reg', address: '127.0.0.5', port: registered!.port },
    ]);
    const ieRes = await put(`${proxy.url}/ie/b/k`);
    expect(ieRes.status).toBe(403);
    expect(JSON.parse(ieRes.text)).toMatchObject({ jurisdictions: ['IE'] });
    const regRes = await put(`${proxy.url}/reg/b/k`);
    expect(regRes.status).toBe(403);
    expect(JSON.parse(regRes.text)).toMatchObject({ reason: 'unknown_location', jurisdictions: [] });
    expect(ie!.connections + registered!.connections).toBe(0);
    // A GeoIP answer without a country says nothing: no signal, the address still recorded.
    expect(proxy.decisions()[1]).toMatchObject({ target: { address: '127.0.0.5' }, location: { jurisdictions: [], signals: [] } });
  });

  it('a corrupt database stops the start with a message naming the file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'residency-geoip-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'country.mmdb');
    const good = ipLocationDbCountry();
    writeFileSync(file, good.subarray(0, Math.floor(good.length / 2)));
    const { app } = create({
      location: { geoip: { path: file } },
      upstreams: [{ name: 's', url: 'http://127.0.0.3:9', provider: 'generic', route: { path_prefix: '/s' } }],
    });
    const failure = app.listen();
    await expect(failure).rejects.toThrow(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: is not a MaxMind DB file`));
    await expect(failure).rejects.toMatchObject({ code: 'RESIDENCY_ERR_GEOIP_INVALID' });
    expect(app.admin.server.listening).toBe(false);
  });

  it('a corrupt database on reload: the last good one stays, and the failure is counted', async () => {
    const [de] = await listeners([DE]);
    const good = ipLocationDbCountry();
    const { proxy, file } = await geoipProxy(good, [{ name: 'de', address: DE, port: de!.port }]);
    expect((await put(`${proxy.url}/de/b/k`)).status).toBe(403);

    writeFileSync(file, good.subarray(0, good.length - 64));
    await vi.waitFor(
      async () => expect(await metric(proxy.admin, /^residency_location_source_reloads_total\{source="geoip",result="failure"\}/)).toBeGreaterThanOrEqual(1),
      { timeout: 5000, interval: 50 },
    );
    expect((await put(`${proxy.url}/de/b/k2`)).status).toBe(403);
    expect(sources(proxy.decisions()[1])).toEqual([`network:geoip:${DE}:DE`]);
    expect(de!.connections).toBe(0);

    // A good file again (Germany moved to the US in this test's world): taken.
    writeFileSync(file, ipLocationDbCountry({ [`${DE}/32`]: 'US' }));
    await vi.waitFor(
      async () => expect(await metric(proxy.admin, /^residency_location_source_reloads_total\{source="geoip",result="success"\}/)).toBe(1),
      { timeout: 5000, interval: 50 },
    );
    expect((await put(`${proxy.url}/de/b/k3`)).status).toBe(200);
    expect(de!.requests.map((r) => r.url)).toEqual(['/b/k3']);
  });
});

describe('explain', () => {
  it('prints the chain: host → addresses → each address’s signals → decision', async () => {
    const dns = await dnsServer({ 'multi.test': { A: [US, DE], ttl: 60 } });
    const dir = mkdtempSync(join(tmpdir(), 'residency-explain-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const configFile = join(dir, 'policy.yaml');
    writeFileSync(configFile, stringify(dnsConfig(dns, 'multi.test', 9000)));
    const run = async (...args: string[]) => {
      const out: string[] = [];
      const log = vi.spyOn(console, 'log').mockImplementation((line: string) => void out.push(line));
      try {
        expect(await explainCommand(['--config', configFile, ...args])).toBe(0);
        return out.join('\n');
      } finally {
        log.mockRestore();
      }
    };

    const report = JSON.parse(await run('PUT', 'http://localhost/s/bucket/k')) as Record<string, unknown>;
    expect(report.network).toEqual({
      host: 'multi.test',
      source: 'dns',
      ttl: 60,
      error: null,
      address: US,
      addresses: [
        { address: US, used: true, signals: [{ source: 'network:site', value: `${US}/32`, jurisdiction: 'US' }] },
        { address: DE, used: false, signals: [{ source: 'network:site', value: `${DE}/32`, jurisdiction: 'DE' }] },
      ],
    });
    expect(report).toMatchObject({ location: { jurisdictions: ['US'] }, decision: { action: 'allow', reason: 'jurisdiction_allowed' } });

    const text = await run('PUT', 'http://localhost/s/bucket/k', '--format', 'text');
    expect(text).toContain(`  network    → multi.test → ${US}, ${DE} (dns, ttl 60 s); sends to ${US}`);
    expect(text).toContain(`      ${US} (used):\n        network:site: ${US}/32 → US`);
    expect(text).toContain(`      ${DE}:\n        network:site: ${DE}/32 → DE`);
    expect(text).toContain('decision   → ALLOW by rule writes in enforce mode: jurisdiction_allowed');

    // A name that does not resolve: no address, so the location is unknown.
    dns.mode = 'servfail';
    writeFileSync(configFile, stringify(dnsConfig(dns, 'nowhere.test', 9000)));
    const unresolved = await run('PUT', 'http://localhost/s/bucket/k', '--format', 'text');
    expect(unresolved).toMatch(/network {4}→ nowhere\.test → no address \(.+\): the location is unknown and nothing would be sent/);
    expect(unresolved).toContain('decision   → BLOCK by rule writes in enforce mode: unknown_location');
    // A read is allowed, but nothing can be sent: the proxy answers 502.
    const read = await run('GET', 'http://localhost/s/bucket/k', '--format', 'text');
    expect(read).toContain('effect     → not sent: answered 502 upstream_unresolved');

    const asked = dns.queries.length;
    const offline = await run('PUT', 'http://localhost/s/bucket/k', '--offline', '--format', 'text');
    expect(offline).toContain('network    → not located (--offline)');
    expect(dns.queries.length).toBe(asked);
  });
});

describe('PinningResolver.sweep', () => {
  it('stops refreshing hosts nobody asked for since the last sweep; tracked hosts stay', async () => {
    const dns = await dnsServer({ 'kept.test': { A: [US], ttl: 60 }, 'passing.test': { A: [DE], ttl: 60 } });
    const resolver = new PinningResolver({ servers: [dns.address], timeoutMs: 200, tries: 1 });
    cleanups.push(() => resolver.close());
    resolver.track('kept.test');
    await resolver.ready('kept.test');
    await resolver.ready('passing.test');
    expect(resolver.sweep()).toEqual([]); // both used since they started
    expect(resolver.current('passing.test')?.addresses).toEqual([DE]);
    expect(resolver.sweep()).toEqual([]);
    expect(resolver.sweep()).toEqual(['passing.test']);
    expect(resolver.hosts).toEqual(['kept.test']);
  });
});

describe('Planner.finish with a network location (no I/O)', () => {
  const planner = buildPlanner(
    parseConfigText(
      stringify({
        upstreams: [{ name: 's3', url: 'http://store.test:9000', provider: 's3', route: { path_prefix: '/s3', strip_prefix: true }, region: 'us-east-1' }],
        rules: [WRITES_US_ONLY],
      }),
      'plan.yaml',
    ),
  );
  const site = (address: string, jurisdiction: string): NetworkLocation =>
    Object.freeze({ address, signals: Object.freeze([{ source: 'network:site' as const, value: `${address}/32`, jurisdiction }]) });
  const prepare = (target: string, method = 'PUT') => {
    const p = planner.prepare({ method, target, host: 'localhost' });
    if (p.kind !== 'prepared') throw new Error('not routed');
    return p;
  };

  it('adds the network signals to the declared ones; the same objects give the same location (no allocation per request)', () => {
    const prepared = prepare('/s3/b/k');
    const us = site(US, 'US');
    const first = planner.finish(prepared, undefined, us);
    expect(first.location.jurisdictions).toEqual(['US']);
    expect(first.location.signals.map((s) => s.source)).toEqual(['declared', 'network:site']);
    expect(planner.finish(prepare('/s3/b/other'), undefined, us).location).toBe(first.location);
    expect(planner.finish(prepared, undefined, site(DE, 'DE')).decision).toMatchObject({ action: 'block', reason: 'location_conflict' });
  });

  it('no address: unknown, whatever is declared; a GeoIP answer without a country adds nothing', () => {
    expect(planner.finish(prepare('/s3/b/k'), undefined, UNRESOLVED)).toMatchObject({
      location: { jurisdictions: [], signals: [] },
      decision: { action: 'block', reason: 'unknown_location' },
    });
    const unplaced: NetworkLocation = { address: '10.0.0.1', signals: [{ source: 'network:geoip', value: '10.0.0.1', jurisdiction: null }] };
    expect(planner.finish(prepare('/s3/b/k'), undefined, unplaced).location.signals.map((s) => s.source)).toEqual(['declared']);
  });

  it('an upload part is decided on its stored location with today’s network signals; an unknown upload stays unknown', () => {
    const part = prepare('/s3/b/k?partNumber=2&uploadId=abc');
    expect(part.needs?.upload).toBeDefined();
    const stored = {
      bucket: 'b',
      decision: 'allow' as const,
      signals: [
        { source: 'declared' as const, value: 'us-east-1', jurisdiction: 'US', region: 'us-east-1' },
        { source: 'network:site' as const, value: `${US}/32`, jurisdiction: 'US' },
      ],
    };
    // The name moved to Germany since the upload started: this part goes there, so it is refused.
    const moved = planner.finish(part, { upload: stored }, site(DE, 'DE'));
    expect(moved.location.signals.map((s) => `${s.source}:${s.jurisdiction}`)).toEqual(['declared:US', 'network:site:DE']);
    expect(moved.decision.reason).toBe('location_conflict');
    const unknown = planner.finish(part, { upload: null }, site(US, 'US'));
    // Its own (US) signals do not make an unknown upload decidable.
    expect(unknown).toMatchObject({ upload: { known: false }, location: { unplaced: true }, decision: { reason: 'unknown_location' } });
  });
});

describe('network location settings', () => {
  it('location.network: false keeps the declared-only behaviour: no DNS, no address recorded', async () => {
    const [us] = await listeners([US]);
    const dns = await dnsServer({ 'store.test': { A: [US], ttl: 60 } });
    const proxy = await start({
      dns: { servers: [dns.address] },
      networks: { [`${US}/32`]: 'DE' },
      location: { network: false },
      upstreams: [{ name: 'store', url: `http://${US}:${us!.port}`, provider: 'generic', route: { path_prefix: '/s', strip_prefix: true }, jurisdiction: 'US' }],
      rules: [WRITES_US_ONLY],
    });
    expect((await put(`${proxy.url}/s/b/k`)).status).toBe(200);
    expect(proxy.decisions()[0]).toMatchObject({ target: { address: null }, location: { jurisdictions: ['US'], signals: [{ source: 'declared' }] } });
    const ready = (await (await request(`${proxy.admin}/readyz`)).body.json()) as { checks: Record<string, { ok: boolean; detail?: string }> };
    expect(ready.checks.location).toEqual({ ok: true, detail: 'network location off: declared and request signals only' });
    expect(dns.queries).toEqual([]);
  });

  it('check-config: the new keys validate; DNS servers that are not addresses and inverted TTL bounds are reported once each', () => {
    const text = stringify({
      dns: { servers: ['10.0.0.2', '10.0.0.3:5353', '[fd00::53]:53', 'dns.example', '10.0.0.4:99999'], min_ttl: 600, max_ttl: 60 },
      location: { cloud_ranges: ['ip-ranges.json', { path: 'tags.json', format: 'azure' }], geoip: { schema: 'maxmind' } },
      upstreams: [{ name: 's', url: 'http://127.0.0.1:9', route: { path_prefix: '/s' } }],
    });
    let error: unknown;
    try {
      parseConfigText(text, 'dns.yaml');
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems.map((p) => p.path)).toEqual(['dns.min_ttl', 'dns.servers[3]', 'dns.servers[4]']);
    expect(() => parseConfigText(stringify({ location: { cloud_ranges: [{ file: 'x.json' }] }, upstreams: [{ name: 's', url: 'http://127.0.0.1:9', route: {} }] }), 'bad.yaml')).toThrow(
      /location\.cloud_ranges\[0\]/,
    );
  });
});
