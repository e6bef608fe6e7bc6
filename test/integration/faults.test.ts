import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { ProxyAgent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertBuilt, proxyConfig, send, serve, writeConfig, type ServedProxy } from '../helpers/audit-serve.js';
import { verifyLogs } from '../../src/audit/verify.js';
import { haveRedisServer, startRedis, type TestRedis } from '../helpers/audit-redis.js';
import { startDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { waitForMetric } from '../helpers/metrics.js';
import { decisionsOf } from '../helpers/proxy.js';
import { createTestCa, issueServerCertificate, type TestCa } from '../helpers/test-ca.js';
import { startTlsStandIn, type TlsStandIn } from '../helpers/tls-stand-in.js';
import { captureClientHello, connectHead, connectTunnel } from '../helpers/tunnel-client.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/upstream.js';

/**
 * Fault points, looped: a client or an upstream that goes away at any stage
 * of an exchange must never stop the process. The proxy runs as its own
 * process (`serve`), so an uncaught error shows up as an exit.
 */

/** What a client sends before it goes away, and how it goes (RST, or FIN). */
const CLIENT_STAGES: Array<[string, string]> = [
  ['connect-head', 'CONNECT s3.us-east-1.amazonaws.com:443 HTTP/1.1\r\nHost: s3.us-east-1.amazonaws.com:443\r\n\r\n'],
  ['connect-head-and-tls-bytes', 'CONNECT s3.us-east-1.amazonaws.com:443 HTTP/1.1\r\nHost: s3.us-east-1.amazonaws.com:443\r\n\r\n\x16\x03\x01\x00\xa5\x01\x00'],
  ['connect-partial-head', 'CONNECT s3.us-east-1.amazonaws.com:443 HTTP/1.1\r\nHo'],
  ['upgrade-head', 'GET /us/b/k HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n'],
  ['put-head', 'PUT /us/b/k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n'],
  ['put-mid-body', 'PUT /us/b/k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n' + 'x'.repeat(5000)],
  ['refused-put-mid-body', 'PUT /eu/b/k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n' + 'x'.repeat(5000)],
  ['chunked-mid-chunk', 'PUT /us/b/k HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\nabc'],
  ['expect-continue', 'PUT /us/b/k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n'],
  ['get-before-response', 'GET /us/b/k HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'],
  ['garbage', 'NOT-HTTP\r\n\r\n'],
];

/** Send `bytes`, then go away at once (`delayMs` 0: the proxy's answer meets a reset socket) or a little later. */
function clientFault(port: number, bytes: string, how: 'reset' | 'end', delayMs: number): Promise<void> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.write(bytes, 'latin1');
      const go = () => (how === 'reset' ? socket.resetAndDestroy() : socket.end());
      if (delayMs === 0) go();
      else setTimeout(go, delayMs);
    });
    socket.on('error', () => {});
    socket.on('close', () => resolve());
    socket.resume();
  });
}

/** An upstream that reads the request head and then resets, at the given stage. */
async function startResettingUpstream(stage: 'on-connect' | 'after-head' | 'mid-response'): Promise<{ server: Server; url: string }> {
  const server = createServer((socket: Socket) => {
    socket.on('error', () => {});
    if (stage === 'on-connect') return socket.resetAndDestroy();
    socket.once('data', () => {
      if (stage === 'after-head') return socket.resetAndDestroy();
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n' + 'y'.repeat(1000), () => setTimeout(() => socket.resetAndDestroy(), 10));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

describe('fault points never stop the process', () => {
  let upstream: RecordingUpstream;
  let proxy: ServedProxy;
  let dir: string;

  beforeAll(async () => {
    assertBuilt();
    upstream = await startRecordingUpstream();
    dir = mkdtempSync(join(tmpdir(), 'residency-faults-'));
    proxy = await serve(writeConfig(dir, 'proxy.yaml', proxyConfig(upstream.url, { path: join(dir, 'decisions.log') })));
  });
  afterAll(async () => {
    await proxy?.kill('SIGTERM');
    await upstream?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const how of ['reset', 'end'] as const) {
    it.each(CLIENT_STAGES)(`client ${how} at %s: the proxy lives and answers the next request`, async (_stage, bytes) => {
      for (const delayMs of [0, 1, 5, 20]) await clientFault(proxy.port, bytes, how, delayMs);
      await new Promise((r) => setTimeout(r, 50));
      expect(proxy.child.exitCode).toBeNull();
      expect(proxy.child.signalCode).toBeNull();
      const after = await send(proxy.port, 'GET', '/us/b/k', null);
      expect(after.status).toBe(200);
    });
  }

  it('a refused CONNECT is answered 405 and the connection closed', async () => {
    const socket = connect(proxy.port, '127.0.0.1');
    socket.write('CONNECT s3.us-east-1.amazonaws.com:443 HTTP/1.1\r\nHost: s3.us-east-1.amazonaws.com:443\r\n\r\n');
    let text = '';
    socket.setEncoding('latin1');
    socket.on('data', (t: string) => (text += t));
    await once(socket, 'close');
    expect(text).toMatch(/^HTTP\/1\.1 405 /);
  });

  it('after every fault, SIGTERM still drains and exits within the shutdown grace', async () => {
    // Runs after the client faults above: a request stuck on a client that went away would hold the exit.
    const started = Date.now();
    proxy.child.kill('SIGTERM');
    const exit = await Promise.race([proxy.exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 10_000))]);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it.each(['on-connect', 'after-head', 'mid-response'] as const)('upstream reset %s: the client gets an answer or a cut, the proxy lives', async (stage) => {
    const bad = await startResettingUpstream(stage);
    const badDir = mkdtempSync(join(tmpdir(), 'residency-faults-up-'));
    const other = await serve(writeConfig(badDir, 'proxy.yaml', proxyConfig(bad.url, { path: join(badDir, 'decisions.log') })));
    try {
      for (const method of ['GET', 'PUT']) {
        const outcome = await send(other.port, method, '/us/b/k', method === 'PUT' ? 'hello' : null).then(
          (a) => a.status,
          () => 'cut',
        );
        if (stage === 'mid-response') expect(outcome).toBe('cut');
        else expect(outcome).toBe(502);
      }
      expect(other.child.exitCode).toBeNull();
    } finally {
      await other.kill('SIGTERM');
      bad.server.close();
      rmSync(badDir, { recursive: true, force: true });
    }
  });
});

/*
 * The decision log stops taking writes at each stage of a write. Tests run
 * as root, where chmod does not stop a write: the log directory replaced by
 * a plain file does (the writer's next batch fails, as on a failed disk).
 * The invariant each time: no write reaches the upstream without a durable
 * decision, the client gets a clean answer, the process lives.
 */
describe('the decision log fails at each stage of a write', () => {
  let dir: string;
  let upstream: RecordingUpstream;
  let proxy: ServedProxy | null = null;
  let logDir: string;
  let release: (() => void) | null = null;

  beforeAll(async () => {
    assertBuilt();
    dir = mkdtempSync(join(tmpdir(), 'residency-faults-log-'));
    // Answers a path containing "slow" only when the test releases it: the log can break while the write is upstream.
    upstream = await startRecordingUpstream({
      respond: async (req) => {
        if (req.url.includes('slow')) await new Promise<void>((r) => (release = r));
        return { status: 200, body: 'ok' };
      },
    });
  });
  afterAll(async () => {
    await proxy?.kill('SIGKILL');
    await upstream?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const breakLog = () => {
    renameSync(logDir, `${logDir}.away`);
    writeFileSync(logDir, 'not a directory\n');
  };
  const repairLog = () => {
    rmSync(logDir);
    renameSync(`${logDir}.away`, logDir);
  };
  /** Every path the upstream received has a decision on disk (the records are read from wherever the directory is now). */
  const unrecordedWrites = () => {
    const where = existsSync(`${logDir}.away`) ? `${logDir}.away` : logDir;
    const text = readFileSync(join(where, 'decisions.log'), 'utf8');
    const decided = new Set(decisionsOf(text).map((r) => r.path));
    return upstream.requests.filter((r) => !decided.has(r.url)).map((r) => r.url);
  };

  it('unwritable before the write: 503, nothing sent; unwritable while the write is upstream: its decision is durable, the client gets the upstream answer', async () => {
    logDir = join(dir, 'log');
    proxy = await serve(writeConfig(dir, 'proxy.yaml', proxyConfig(upstream.url, { path: join(logDir, 'decisions.log') })));
    expect((await send(proxy.port, 'PUT', '/us/bucket/before.txt', 'x')).status).toBe(200);

    breakLog();
    upstream.reset();
    expect((await send(proxy.port, 'PUT', '/us/bucket/during.txt', 'x')).status).toBe(503);
    expect((await send(proxy.port, 'DELETE', '/us/bucket/before.txt', null)).status).toBe(503);
    // The first write may have sent its head while its decision was being written (no store completes a
    // write without its body); not one body byte went up, and the DELETE (a write with no body) sent nothing.
    expect(upstream.requests.every((r) => r.bodyBytes === 0 && !r.complete)).toBe(true);
    expect(upstream.requests.filter((r) => r.method === 'DELETE')).toEqual([]);
    repairLog();
    await new Promise((r) => setTimeout(r, 1_200)); // the writer's probe notices the repair

    // The write is at the upstream (decision durable) when the log breaks: the outcome cannot be written.
    upstream.reset();
    const slow = send(proxy.port, 'PUT', '/us/bucket/slow.txt', 'x');
    await upstream.waitFor(() => upstream.requests.length === 1 && release !== null);
    breakLog();
    release!();
    expect((await slow).status).toBe(200);
    // The outcome is written after the answer (the decision was durable before the write): it fails, visibly.
    for (let i = 0; i < 40 && !proxy.logs.some((l) => l.msg === 'the outcome of a forwarded write could not be recorded'); i++) await new Promise((r) => setTimeout(r, 50));
    expect(proxy.logs.some((l) => l.msg === 'the outcome of a forwarded write could not be recorded')).toBe(true);
    expect(unrecordedWrites()).toEqual([]);
    repairLog();

    expect(proxy.child.exitCode).toBeNull();
    await new Promise((r) => setTimeout(r, 1_200));
    expect((await send(proxy.port, 'PUT', '/us/bucket/after.txt', 'x')).status).toBe(200);
    expect(unrecordedWrites()).toEqual([]);
  });
});

/*
 * The disk under the decision log fills up. Where the machine allows a user
 * and mount namespace (root, or unprivileged user namespaces), the proxy runs
 * with its log on a small tmpfs of its own that a filler file nearly fills:
 * the kernel answers ENOSPC, and the test frees the space through
 * /proc/PID/root. Elsewhere a file-size limit (RLIMIT_FSIZE, which Node
 * turns into EFBIG) makes the kernel refuse the log's growth: the same
 * failed write, without the freed-space half.
 */
const DISK_BYTES = 256 * 1024;
const FREE_BYTES = 32 * 1024;

function namespacesAllowed(dir: string): boolean {
  const probe = spawnSync('unshare', ['--user', '--map-root-user', '--mount', 'sh', '-c', 'mount -t tmpfs -o size=64k tmpfs "$1"', 'sh', dir], { stdio: 'ignore' });
  return probe.status === 0;
}

describe('the disk under the decision log fills up', () => {
  let dir: string;
  let upstream: RecordingUpstream;
  let proxy: ServedProxy | null = null;

  beforeAll(async () => {
    assertBuilt();
    dir = mkdtempSync(join(tmpdir(), 'residency-faults-disk-'));
    upstream = await startRecordingUpstream();
  });
  afterAll(async () => {
    await proxy?.kill('SIGKILL');
    await upstream?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a write whose decision cannot be written is answered 503 with nothing sent; no write lands unrecorded; freed space brings writes back on an intact chain', async () => {
    const disk = join(dir, 'disk');
    mkdirSync(disk);
    const ownDisk = namespacesAllowed(disk);
    const wrap = ownDisk
      ? ['unshare', '--user', '--map-root-user', '--mount', 'sh', '-c', `mount -t tmpfs -o size=${DISK_BYTES} tmpfs "$1" && head -c ${DISK_BYTES - FREE_BYTES} /dev/zero > "$1/filler" && shift && exec "$@"`, 'sh', disk]
      : ['prlimit', `--fsize=${FREE_BYTES}`, '--'];
    proxy = await serve(writeConfig(dir, 'proxy.yaml', proxyConfig(upstream.url, { path: join(disk, 'decisions.log') })), {}, wrap);
    /** A path on the proxy's disk, as this process can reach it. */
    const onDisk = (name: string) => (ownDisk ? `/proc/${proxy!.pid}/root${disk}/${name}` : join(disk, name));
    const unrecordedWrites = () => {
      // While the disk is full the file may end in a torn line (never acknowledged; recovery cuts it).
      const text = readFileSync(onDisk('decisions.log'), 'utf8');
      const decided = new Set(decisionsOf(text.slice(0, text.lastIndexOf('\n') + 1)).map((r) => r.path));
      return upstream.requests.filter((r) => !decided.has(r.url)).map((r) => r.url);
    };

    // Writes until the disk takes no more (five refusals in a row). Near the end, a batch that does not
    // fit fails while a smaller one after it may still fit: each write is either answered 200 with its
    // decision on disk, or 503 with not one body byte sent (and a write with no body not sent at all).
    const sent: Array<{ method: string; url: string; status: number }> = [];
    let refusedInRow = 0;
    for (let i = 0; i < 600 && refusedInRow < 5; i++) {
      const [method, url, body] = i % 2 === 0 ? ['PUT', `/bucket/k${i}`, 'x'.repeat(100)] : ['DELETE', `/bucket/d${i}`, null];
      const { status } = await send(proxy.port, method, `/us${url}`, body);
      sent.push({ method, url, status });
      refusedInRow = status === 503 ? refusedInRow + 1 : 0;
    }
    expect(refusedInRow).toBe(5);
    expect(sent.filter((r) => r.status === 200).length).toBeGreaterThan(3);
    expect(sent.every((r) => r.status === 200 || r.status === 503)).toBe(true);
    expect(proxy.logs.some((l) => JSON.stringify(l).includes(ownDisk ? 'ENOSPC' : 'EFBIG'))).toBe(true);
    for (const refused of sent.filter((r) => r.status === 503)) {
      const reached = upstream.requests.filter((r) => r.url === refused.url);
      if (refused.method === 'DELETE') expect(reached).toEqual([]);
      else expect(reached.every((r) => r.bodyBytes === 0 && !r.complete)).toBe(true);
    }
    expect(unrecordedWrites()).toEqual([]);
    expect(proxy.child.exitCode).toBeNull();
    if (!ownDisk) return;

    // Space again: the torn tail is cut, writes resume, and the whole log verifies.
    rmSync(onDisk('filler'));
    await new Promise((r) => setTimeout(r, 1_200));
    expect((await send(proxy.port, 'PUT', '/us/bucket/after.txt', 'x')).status).toBe(200);
    expect(unrecordedWrites()).toEqual([]);
    const verified = await verifyLogs([onDisk('decisions.log')]);
    expect(verified.findings.filter((f) => f.severity === 'error')).toEqual([]);
    expect(verified.records).toBeGreaterThan(sent.filter((r) => r.status === 200).length);
  });
});

/*
 * Redis (the fleet state, shared upload locations, the decision-log stream)
 * is killed while traffic runs: requests keep being answered and recorded,
 * the loss shows in readiness detail and metrics, and once Redis is back the
 * records held for the stream reach it.
 */
describe('Redis goes away under traffic', () => {
  let dir: string;
  let upstream: RecordingUpstream;
  let redis: TestRedis;
  let proxy: ServedProxy | null = null;

  beforeAll(async () => {
    if (!haveRedisServer()) throw new Error('redis-server is not on the PATH (this test needs a Redis of its own to kill)');
    assertBuilt();
    dir = mkdtempSync(join(tmpdir(), 'residency-faults-redis-'));
    redis = await startRedis();
    upstream = await startRecordingUpstream({
      respond: (req) =>
        req.method === 'POST' && req.url.endsWith('?uploads')
          ? { status: 200, body: '<InitiateMultipartUploadResult><Bucket>bucket</Bucket><Key>big</Key><UploadId>up-1</UploadId></InitiateMultipartUploadResult>' }
          : { status: 200, body: 'ok' },
    });
  });
  afterAll(async () => {
    await proxy?.kill('SIGKILL');
    await upstream?.close();
    await redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('every request is answered and recorded while Redis is gone; readiness and metrics say so; the stream catches up when it returns', async () => {
    const prefix = `faults-${process.pid}-${Date.now()}:`;
    const config = proxyConfig(upstream.url, { path: join(dir, 'decisions.log') }, { redis: { url: redis.url, key_prefix: prefix } });
    proxy = await serve(writeConfig(dir, 'proxy.yaml', config));
    const port = proxy.port;
    const metric = async (name: string) => {
      const text = await (await fetch(`http://127.0.0.1:${proxy!.adminPort}/metrics`)).text();
      return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
    };
    expect((await send(port, 'POST', '/us/bucket/big?uploads', null)).status).toBe(200);

    // Four clients in a loop (plain writes, reads, parts of the upload begun with Redis up); Redis dies part-way.
    const answers: number[] = [];
    let running = true;
    const client = async (n: number) => {
      for (let i = 0; running; i++) {
        const [method, path, body] = [
          ['PUT', `/us/bucket/c${n}-${i}`, 'x'.repeat(64)],
          ['GET', `/us/bucket/c${n}-${i}`, null],
          ['PUT', `/us/bucket/big?partNumber=${i + 1}&uploadId=up-1`, 'y'.repeat(64)],
        ][i % 3] as [string, string, string | null];
        answers.push((await send(port, method, path, body)).status);
      }
    };
    const clients = [0, 1, 2, 3].map(client);
    await new Promise((r) => setTimeout(r, 300));
    const redisPort = redis.port;
    await redis.stop();
    await new Promise((r) => setTimeout(r, 1_500));
    running = false;
    await Promise.all(clients);

    expect(answers.length).toBeGreaterThan(20);
    expect(answers.filter((s) => s !== 200)).toEqual([]);
    expect(proxy.child.exitCode).toBeNull();
    const decided = new Set(decisionsOf(readFileSync(join(dir, 'decisions.log'), 'utf8')).map((r) => r.path));
    expect(upstream.requests.filter((r) => !decided.has(r.url.split('?')[0]!)).map((r) => r.url)).toEqual([]);
    expect(await metric('residency_fleet_redis_up')).toBe(0);
    const ready = (await (await fetch(`http://127.0.0.1:${proxy.adminPort}/readyz`)).json()) as { checks: Record<string, { ok: boolean; detail?: string }> };
    expect(ready.checks.fleet!.detail).toMatch(/redis unavailable/);
    expect(ready.checks.decision_log!.ok).toBe(true);
    const held = await metric('residency_decision_log_backlog');
    expect(held).toBeGreaterThan(0);

    // Back (empty: no persistence): the records held for the stream are shipped.
    redis = await startRedis(redisPort);
    for (let i = 0; i < 100 && (await metric('residency_decision_log_backlog')) > 0; i++) await new Promise((r) => setTimeout(r, 100));
    expect(await metric('residency_decision_log_backlog')).toBe(0);
    expect(await metric('residency_fleet_redis_up')).toBe(1);
    expect((await send(port, 'PUT', '/us/bucket/after', 'z')).status).toBe(200);
  });
});

/*
 * Forward-proxy tunnels cut at every stage: CONNECT, the TLS handshake
 * inside, the requests inside, the upstream's answer. The proxy runs as a
 * `serve` child in front of a TLS stand-in under a real S3 name (a test DNS
 * server sends it to loopback). After each fault the process lives and a
 * normal tunnelled write goes through; at the end no tunnel is left open,
 * nothing reached the store unrecorded, and SIGTERM exits within the grace.
 */
const TUNNEL_HOST = 'bucket.s3.us-east-1.amazonaws.com';

/** A client part-way into a tunnel: `go` takes it away (RST or a graceful end) at that point. */
interface Cut {
  raw: Socket;
  secure?: tls.TLSSocket;
}

describe('forward-proxy tunnels cut at every stage', () => {
  let dir: string;
  let operatorCa: TestCa;
  let dns: TestDnsServer;
  let standIn: TlsStandIn;
  let proxy: ServedProxy;
  let hello: Buffer;
  let authority: string;

  beforeAll(async () => {
    assertBuilt();
    dir = mkdtempSync(join(tmpdir(), 'residency-faults-tunnel-'));
    operatorCa = await createTestCa({ subject: 'CN=Operator Interception CA' });
    const storageCa = await createTestCa({ subject: 'CN=Test Storage CA' });
    // GETs for objects never stored stream 8 MiB: long enough to cut a client off while the upstream answers.
    standIn = await startTlsStandIn(await issueServerCertificate(storageCa, [TUNNEL_HOST]), { getBytes: 8 << 20 });
    dns = await startDnsServer({ [TUNNEL_HOST]: { A: ['127.0.0.1'] } });
    hello = await captureClientHello(TUNNEL_HOST);
    authority = `${TUNNEL_HOST}:${standIn.port}`;
    const file = (name: string, text: string) => {
      writeFileSync(join(dir, name), text);
      return join(dir, name);
    };
    const config = proxyConfig(`https://${authority}`, { path: join(dir, 'decisions.log') }, {
      dns: { servers: [dns.address] },
      forward_proxy: { ca: { cert_file: file('ca.pem', operatorCa.certPem), key_file: file('ca.key', operatorCa.keyPem) } },
      upstreams: [{ name: 'aws-s3', url: `https://{host}:${standIn.port}`, provider: 's3', route: { host: '*.amazonaws.com' }, ca_file: file('storage-ca.pem', storageCa.certPem) }],
    });
    proxy = await serve(writeConfig(dir, 'proxy.yaml', config));
  });
  afterAll(async () => {
    await proxy?.kill('SIGKILL');
    await standIn?.close();
    await dns?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** TLS with the proxy's minted certificate over a tunnel's raw socket. */
  const handshake = async (raw: Socket) => {
    const secure = tls.connect({ socket: raw, servername: TUNNEL_HOST, ca: operatorCa.certPem });
    secure.on('error', () => {});
    await once(secure, 'secureConnect');
    return secure;
  };
  const opened = (bytes: string | Buffer) => {
    const raw = connect(proxy.port, '127.0.0.1');
    raw.write(bytes);
    return raw;
  };

  let fresh = 0;
  /** Each stage builds a connection up to its fault point. */
  const STAGES: Array<[string, () => Promise<Cut>]> = [
    ['CONNECT head only', async () => ({ raw: opened(connectHead(authority)) })],
    // A host seen first: the client goes away while its certificate is being minted.
    ['CONNECT head only, for a host not minted yet', async () => ({ raw: opened(connectHead(`fresh-${++fresh}.s3.us-east-1.amazonaws.com:${standIn.port}`)) })],
    ['CONNECT head and part of the ClientHello', async () => ({ raw: opened(Buffer.concat([Buffer.from(connectHead(authority)), hello.subarray(0, 60)])) })],
    ['after the 200, before the handshake', async () => ({ raw: await connectTunnel(proxy.port, authority) })],
    [
      'mid-handshake (ClientHello sent, ServerHello received)',
      async () => {
        const raw = await connectTunnel(proxy.port, authority);
        raw.write(hello);
        await once(raw, 'data');
        return { raw };
      },
    ],
    [
      'after the handshake, before any request',
      async () => {
        const raw = await connectTunnel(proxy.port, authority);
        return { raw, secure: await handshake(raw) };
      },
    ],
    [
      'mid-body of a PUT inside the tunnel',
      async () => {
        const raw = await connectTunnel(proxy.port, authority);
        const secure = await handshake(raw);
        secure.write(`PUT /cut/mid-body HTTP/1.1\r\nHost: ${authority}\r\nContent-Length: 100000\r\n\r\n${'x'.repeat(5000)}`);
        return { raw, secure };
      },
    ],
    [
      'while the upstream answers',
      async () => {
        const raw = await connectTunnel(proxy.port, authority);
        const secure = await handshake(raw);
        secure.write(`GET /cut/large HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
        await once(secure, 'data');
        return { raw, secure };
      },
    ],
    ['a CONNECT to a host no upstream serves', async () => ({ raw: opened(connectHead('example.org:443')) })],
    ['garbage after the CONNECT head', async () => ({ raw: opened(`${connectHead(authority)}GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01\x02`) })],
  ];

  /** Build the connection, wait `delayMs`, go away, and wait until the socket is closed. */
  const cutAt = async (stage: () => Promise<Cut>, how: 'reset' | 'end', delayMs: number) => {
    const { raw, secure } = await stage();
    raw.on('error', () => {});
    (secure ?? raw).resume();
    const closed = once(raw, 'close');
    if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
    if (how === 'reset') raw.resetAndDestroy();
    else (secure ?? raw).end();
    await closed;
  };

  /** A normal write through a fresh tunnel. */
  const tunnelledPut = async (path: string) => {
    const agent = new ProxyAgent({ uri: `http://127.0.0.1:${proxy.port}`, requestTls: { ca: operatorCa.certPem } });
    try {
      const res = await request(`https://${authority}${path}`, { method: 'PUT', body: 'still here', dispatcher: agent });
      await res.body.dump();
      return res.statusCode;
    } finally {
      await agent.close();
    }
  };

  for (const how of ['reset', 'end'] as const) {
    it.each(STAGES)(`client ${how}: %s; the proxy lives and tunnels the next write`, async (name, stage) => {
      for (const delayMs of [0, 1, 5, 20]) await cutAt(stage, how, delayMs);
      expect(proxy.child.exitCode).toBeNull();
      expect(proxy.child.signalCode).toBeNull();
      expect(await tunnelledPut(`/after/${how}/${name.replace(/\W+/g, '-')}`)).toBe(200);
    });
  }

  it('no tunnel is left open, nothing reached the store unrecorded, and SIGTERM exits within the grace', async () => {
    expect(await waitForMetric(proxy.adminPort, 'residency_tunnels_open', {}, (v) => v === 0)).toBe(0);
    const decided = new Set(decisionsOf(readFileSync(join(dir, 'decisions.log'), 'utf8')).map((r) => r.path));
    expect(standIn.received.length).toBeGreaterThan(0);
    expect(standIn.received.filter((r) => !decided.has(r.url)).map((r) => `${r.method} ${r.url}`)).toEqual([]);
    const started = Date.now();
    proxy.child.kill('SIGTERM');
    const exit = await Promise.race([proxy.exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 10_000))]);
    expect(exit).toEqual({ code: 0, signal: null });
    // limits.shutdown_grace_ms is 5 s in these configs.
    expect(Date.now() - started).toBeLessThan(6_000);
  });
});
