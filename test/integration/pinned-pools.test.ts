import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createTlsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { PinnedPools } from '../../src/proxy/pinned-pools.js';

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

describe('PinnedPools', () => {
  it('connects only to the given address, whatever the upstream name and Host header say', async () => {
    const { port, a, b } = await twoServers(named);
    const pools = new PinnedPools();
    closers.push(() => pools.close());
    // The upstream's name does not resolve anywhere: only the pinned address can be reached.
    const upstream = new URL(`http://upstream.invalid:${port}/base`);
    const res = await pools.request(upstream, '127.0.0.3', { method: 'GET', path: '/x', headers: { host: `upstream.invalid:${port}` } });
    expect(await res.body.text()).toBe('B');
    expect(b).toEqual([{ host: `upstream.invalid:${port}`, local: '127.0.0.3' }]);
    expect(a).toEqual([]);
    const again = await pools.request(upstream, '127.0.0.2', { method: 'GET', path: '/x', headers: { host: 'anything' } });
    expect(await again.body.text()).toBe('A');
    expect(a).toEqual([{ host: 'anything', local: '127.0.0.2' }]);
    expect(pools.size).toBe(2);
    expect(pools.list().map((p) => p.address).sort()).toEqual(['127.0.0.2', '127.0.0.3']);
  });

  it('reuses one keep-alive pool per (origin, address)', async () => {
    const { port } = await twoServers(named);
    const pools = new PinnedPools();
    closers.push(() => pools.close());
    const upstream = new URL(`http://upstream.invalid:${port}`);
    expect(pools.pool(upstream, '127.0.0.2')).toBe(pools.pool(new URL(`http://upstream.invalid:${port}/other`), '127.0.0.2'));
    expect(pools.pool(upstream, '127.0.0.2')).not.toBe(pools.pool(upstream, '127.0.0.3'));
    expect(pools.size).toBe(2);
  });

  it('closes pools left unused', async () => {
    const { port } = await twoServers(named);
    const pools = new PinnedPools({ idleMs: 100 });
    closers.push(() => pools.close());
    const res = await pools.request(new URL(`http://upstream.invalid:${port}`), '127.0.0.2', { method: 'GET', path: '/', headers: { host: 'x' } });
    await res.body.text();
    expect(pools.size).toBe(1);
    await new Promise((r) => setTimeout(r, 400));
    expect(pools.size).toBe(0);
  });

  it('builds origins from addresses only', () => {
    expect(PinnedPools.originFor(new URL('https://bucket.s3.eu-west-1.amazonaws.com/'), '52.218.1.2')).toBe('https://52.218.1.2:443');
    expect(PinnedPools.originFor(new URL('http://store.example:9000/'), '2001:db8::1')).toBe('http://[2001:db8::1]:9000');
    expect(() => PinnedPools.originFor(new URL('http://store.example/'), 'store.example')).toThrow(/not an IP address/);
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
    const pools = new PinnedPools({ pool: () => ({ connect: { ca: cert } }) });
    closers.push(() => pools.close());
    const upstream = new URL(`https://upstream.test:${port}`);
    // A preserved client Host header (another name) must not change the TLS name.
    const res = await pools.request(upstream, '127.0.0.3', { method: 'GET', path: '/', headers: { host: 'proxy.example:8443' } });
    expect(await res.body.text()).toBe('B');
    expect(b).toEqual([{ host: 'proxy.example:8443', local: '127.0.0.3', sni: 'upstream.test' }]);
    expect(a).toEqual([]);
    // A certificate for another name is refused.
    const wrong = new PinnedPools({ pool: () => ({ connect: { ca: cert } }) });
    closers.push(() => wrong.close());
    await expect(wrong.request(new URL(`https://other.test:${port}`), '127.0.0.2', { method: 'GET', path: '/', headers: { host: 'other.test' } })).rejects.toThrow(/altnames|Hostname\/IP does not match/);
    expect(a).toEqual([]);
  });
});
