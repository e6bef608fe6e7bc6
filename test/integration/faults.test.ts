import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertBuilt, proxyConfig, send, serve, writeConfig, type ServedProxy } from '../helpers/audit-serve.js';
import { decisionsOf } from '../helpers/proxy.js';
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
