import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createTlsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { pinnedOrigin, PoolCache } from '../../src/proxy/pool-cache.js';
import { ManualClock } from '../helpers/manual-clock.js';

interface Seen {
  host: string | undefined;
  local: string | undefined;
  sni?: string | false | null;
}

let closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.reverse()) await close();
  closers = [];
});

function listen(server: Server | HttpsServer, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      closers.push(() => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }));
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** An HTTP server that answers with its own name and records what reached it. */
function named(name: string, seen: Seen[]): Server {
  return createServer((req: IncomingMessage, res) => {
    seen.push({ host: req.headers.host, local: req.socket.localAddress });
    res.end(name);
  });
}

/** Two servers on the same port, one on 127.0.0.2 and one on 127.0.0.3. */
async function twoServers(make: (name: string, seen: Seen[]) => Server | HttpsServer) {
  for (let attempt = 0; ; attempt++) {
    const a: Seen[] = [];
    const b: Seen[] = [];
    const sa = make('A', a);
    const port = await listen(sa, '127.0.0.2', 0);
    try {
      await listen(make('B', b), '127.0.0.3', port);
      return { port, a, b };
    } catch (err) {
      // The same port number was taken on 127.0.0.3: try another.
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt > 10) throw err;
    }
  }
}

/** What owns the pools in these tests (the forwarder's owners are upstreams). */
const OWNER = {};
const OTHER = {};

describe('PoolCache: pools pinned to addresses', () => {
  it('connects only to the given address, whatever the upstream name and Host header say', async () => {
    const { port, a, b } = await twoServers(named);
    const pools = new PoolCache();
    closers.push(() => pools.close());
    // The upstream's name does not resolve anywhere: only the pinned address can be reached.
    const upstream = `http://upstream.invalid:${port}`;
    const res = await pools.request(OWNER, upstream, '127.0.0.3', { method: 'GET', path: '/x', headers: { host: `upstream.invalid:${port}` } });
    expect(await res.body.text()).toBe('B');
    expect(b).toEqual([{ host: `upstream.invalid:${port}`, local: '127.0.0.3' }]);
    expect(a).toEqual([]);
    const again = await pools.request(OWNER, upstream, '127.0.0.2', { method: 'GET', path: '/x', headers: { host: 'anything' } });
    expect(await again.body.text()).toBe('A');
    expect(a).toEqual([{ host: 'anything', local: '127.0.0.2' }]);
    expect(pools.size).toBe(2);
    expect(pools.list().map((p) => p.address).sort()).toEqual(['127.0.0.2', '127.0.0.3']);
  });

  it('reuses one keep-alive pool per (origin, address)', async () => {
    const { port } = await twoServers(named);
    const pools = new PoolCache();
    closers.push(() => pools.close());
    const upstream = `http://upstream.invalid:${port}`;
    expect(pools.pool(OWNER, upstream, '127.0.0.2')).toBe(pools.pool(OWNER, upstream, '127.0.0.2'));
    expect(pools.pool(OWNER, upstream, '127.0.0.2')).not.toBe(pools.pool(OWNER, upstream, '127.0.0.3'));
    // Pinned and unpinned pools of one origin are not the same pool.
    expect(pools.pool(OWNER, upstream, null)).not.toBe(pools.pool(OWNER, upstream, '127.0.0.2'));
    // Nor are two owners' pools for the same origin and address.
    expect(pools.pool(OTHER, upstream, '127.0.0.2')).not.toBe(pools.pool(OWNER, upstream, '127.0.0.2'));
    expect(pools.size).toBe(4);
  });

  it('closes pools left unused, and only those', async () => {
    const { port } = await twoServers(named);
    const clock = new ManualClock();
    const pools = new PoolCache({ idleMs: 60_000, clock });
    closers.push(() => pools.close());
    const upstream = `http://upstream.invalid:${port}`;
    const res = await pools.request(OWNER, upstream, '127.0.0.2', { method: 'GET', path: '/', headers: { host: 'x' } });
    await res.body.text();
    expect(pools.size).toBe(1);
    await clock.advance(40_000);
    // Used again (unpinned, this time) before the pinned pool's minute is up.
    const plain = pools.pool(OWNER, `http://127.0.0.3:${port}`, null);
    await clock.advance(30_000);
    expect(pools.list().map((p) => p.address)).toEqual([null]);
    await clock.advance(60_000);
    expect(pools.size).toBe(0);
    expect(plain.closed).toBe(true);
  });

  it('keeps a pool with a request in flight, however long idle', async () => {
    let arrive: (answer: () => void) => void = () => {};
    const arrived = new Promise<() => void>((resolve) => (arrive = resolve));
    const port = await listen(createServer((_req, res) => arrive(() => res.end('late'))), '127.0.0.2', 0);
    const clock = new ManualClock();
    const pools = new PoolCache({ idleMs: 1000, clock });
    closers.push(() => pools.close());
    const pending = pools.request(OWNER, `http://upstream.invalid:${port}`, '127.0.0.2', { method: 'GET', path: '/', headers: { host: 'x' } });
    const answer = await arrived;
    await clock.advance(10_000);
    expect(pools.size).toBe(1);
    answer();
    expect(await (await pending).body.text()).toBe('late');
    await clock.advance(10_000);
    expect(pools.size).toBe(0);
  });

  it('bounds an owner\'s pools, closing the least recently used first', () => {
    const pools = new PoolCache({ maxPools: (owner) => (owner === OWNER ? 2 : Infinity) });
    closers.push(() => pools.close());
    const a = pools.pool(OWNER, 'http://a.test', '127.0.0.2');
    const b = pools.pool(OWNER, 'http://b.test', '127.0.0.2');
    // a used again: b is now the coldest.
    expect(pools.pool(OWNER, 'http://a.test', '127.0.0.2')).toBe(a);
    const c = pools.pool(OWNER, 'http://c.test', null);
    expect(b.closed).toBe(true);
    expect(a.closed).toBe(false);
    expect(pools.list().map((p) => p.origin)).toEqual(['http://a.test', 'http://c.test']);
    // Another owner's pools count against its own bound, not this one.
    for (let i = 0; i < 5; i++) pools.pool(OTHER, `http://h${i}.test`, null);
    expect(pools.size).toBe(7);
    expect(c.closed).toBe(false);
  });

  it('retain closes the pools of owners no longer listed', () => {
    const pools = new PoolCache();
    closers.push(() => pools.close());
    const kept = pools.pool(OWNER, 'http://a.test', '127.0.0.2');
    const dropped = [pools.pool(OTHER, 'http://a.test', '127.0.0.2'), pools.pool(OTHER, 'http://b.test', null)];
    pools.retain(new Set([OWNER]));
    expect(dropped.map((p) => p.closed)).toEqual([true, true]);
    expect(kept.closed).toBe(false);
    expect(pools.size).toBe(1);
  });

  it('builds origins from addresses only', () => {
    expect(pinnedOrigin(new URL('https://bucket.s3.eu-west-1.amazonaws.com/'), '52.218.1.2')).toBe('https://52.218.1.2:443');
    expect(pinnedOrigin(new URL('http://store.example:9000/'), '2001:db8::1')).toBe('http://[2001:db8::1]:9000');
    expect(() => pinnedOrigin(new URL('http://store.example/'), 'store.example')).toThrow(/not an IP address/);
    // Asked to pin to a name, the cache opens nothing.
    const pools = new PoolCache();
    expect(() => pools.pool(OWNER, 'http://store.example', 'store.example')).toThrow(/not an IP address/);
    expect(pools.size).toBe(0);
  });

  const openssl = (() => {
    try {
      execFileSync('openssl', ['version'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  })();

  // Needs the openssl CLI to make a throwaway certificate.
  it.skipIf(!openssl)('TLS: SNI and certificate checks use the upstream name while the socket goes to the address', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pinned-tls-'));
    closers.push(async () => rmSync(dir, { recursive: true, force: true }));
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
      '-subj', '/CN=upstream.test', '-addext', 'subjectAltName=DNS:upstream.test',
      '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
    ], { stdio: 'ignore' });
    const key = readFileSync(join(dir, 'key.pem'));
    const cert = readFileSync(join(dir, 'cert.pem'));
    const { port, a, b } = await twoServers((name, seen) =>
      createTlsServer({ key, cert }, (req, res) => {
        seen.push({ host: req.headers.host, local: req.socket.localAddress, sni: (req.socket as TLSSocket).servername });
        res.end(name);
      }),
    );
    const pools = new PoolCache({ poolOptions: () => ({ connect: { ca: cert } }) });
    closers.push(() => pools.close());
    const upstream = `https://upstream.test:${port}`;
    // A preserved client Host header (another name) must not change the TLS name.
    const res = await pools.request(OWNER, upstream, '127.0.0.3', { method: 'GET', path: '/', headers: { host: 'proxy.example:8443' } });
    expect(await res.body.text()).toBe('B');
    expect(b).toEqual([{ host: 'proxy.example:8443', local: '127.0.0.3', sni: 'upstream.test' }]);
    expect(a).toEqual([]);
    // A certificate for another name is refused.
    const wrong = new PoolCache({ poolOptions: () => ({ connect: { ca: cert } }) });
    closers.push(() => wrong.close());
    await expect(wrong.request(OWNER, `https://other.test:${port}`, '127.0.0.2', { method: 'GET', path: '/', headers: { host: 'other.test' } })).rejects.toThrow(/altnames|Hostname\/IP does not match/);
    expect(a).toEqual([]);
  });
});
