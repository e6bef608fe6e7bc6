import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, request as httpRequest } from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, Server } from 'node:http';
import { connect } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { Readable } from 'node:stream';
import { Client, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RECORD_VERSION, type DecisionRecord } from '../../src/audit/record.js';
import { MODES, OPERATIONS } from '../../src/config/schema.js';
import { REASONS } from '../../src/policy/engine.js';
import { startProxy, type RunningProxy } from '../helpers/proxy.js';
import { startRecordingUpstream, type RecordedRequest, type RecordingUpstream } from '../helpers/upstream.js';

const MiB = 1024 * 1024;
const CHUNK = 64 * 1024;
/** One random block per run; every generated chunk is this block stamped with (seed, index). */
const PATTERN = randomBytes(CHUNK);

function chunkAt(seed: number, index: number, length: number): Buffer {
  const chunk = Buffer.allocUnsafe(length).fill(PATTERN);
  // Stamping makes every chunk distinct, so a dropped or reordered chunk changes the hash.
  if (length >= 8) {
    chunk.writeUInt32BE(seed, 0);
    chunk.writeUInt32BE(index, 4);
  }
  return chunk;
}

interface Generated {
  stream: Readable;
  size: number;
  /** Bytes handed to the consumer so far. */
  produced(): number;
}

/** A body of `size` bytes produced chunk by chunk on demand (never held in memory). */
function generated(size: number, seed: number): Generated {
  let index = 0;
  let produced = 0;
  const stream = new Readable({
    highWaterMark: CHUNK,
    read() {
      if (produced >= size) {
        this.push(null);
        return;
      }
      const chunk = chunkAt(seed, index++, Math.min(CHUNK, size - produced));
      produced += chunk.length;
      this.push(chunk);
    },
  });
  return { stream, size, produced: () => produced };
}

/** SHA-256 of what `generated(size, seed)` produces, computed without a stream. */
function generatedSha256(size: number, seed: number): string {
  const hash = createHash('sha256');
  for (let i = 0, done = 0; done < size; i++) {
    const chunk = chunkAt(seed, i, Math.min(CHUNK, size - done));
    hash.update(chunk);
    done += chunk.length;
  }
  return hash.digest('hex');
}

interface Exchange {
  status: number;
  headers: IncomingHttpHeaders;
  rawHeaders: string[];
  /** The response body as text when it is under 1 MiB, else ''. */
  text: string;
  bodyBytes: number;
  bodySha256: string;
  gotContinue: boolean;
  /** An error on the request side after the response had arrived (a refused upload may see EPIPE then). */
  lateError: Error | null;
}

interface SendOptions {
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: Generated | string;
  /** Stream the body with chunked encoding instead of a Content-Length. */
  chunked?: boolean;
  expectContinue?: boolean;
}

/**
 * One request with node:http on its own connection. Rejects when the request
 * fails before a complete response was read (a reset or EPIPE in place of the
 * answer); an error after the response is kept in `lateError`.
 */
function send(port: number, opts: SendOptions): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...opts.headers };
    const body = opts.body;
    if (typeof body === 'string') headers['content-length'] = String(Buffer.byteLength(body));
    else if (body && !opts.chunked) headers['content-length'] = String(body.size);
    if (opts.expectContinue) headers['expect'] = '100-continue';
    const req = httpRequest({ host: '127.0.0.1', port, method: opts.method, path: opts.path, headers, agent: false });
    let gotContinue = false;
    let responded = false;
    let lateError: Error | null = null;
    req.on('error', (err) => {
      if (responded) lateError = err;
      else reject(err);
    });
    const start = () => {
      if (typeof body === 'string') req.end(body);
      else if (body) body.stream.pipe(req);
      else req.end();
    };
    if (opts.expectContinue) {
      req.on('continue', () => {
        gotContinue = true;
        start();
      });
    } else {
      start();
    }
    req.on('response', (res: IncomingMessage) => {
      responded = true;
      const hash = createHash('sha256');
      const small: Buffer[] = [];
      let bytes = 0;
      res.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        bytes += chunk.length;
        if (bytes <= MiB) small.push(chunk);
      });
      res.on('error', reject);
      res.on('aborted', () => reject(new Error('response aborted before its end')));
      res.on('end', () => {
        // Stop producing a body the server no longer wants.
        if (body && typeof body !== 'string') {
          body.stream.unpipe(req);
          body.stream.destroy();
        }
        req.destroy();
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          rawHeaders: res.rawHeaders,
          text: bytes <= MiB ? Buffer.concat(small).toString('utf8') : '',
          bodyBytes: bytes,
          bodySha256: hash.digest('hex'),
          gotContinue,
          lateError,
        });
      });
    });
  });
}

interface RawResponse {
  status: number;
  /** Header lines in order, names lower-cased. */
  headers: [string, string][];
  body: string;
}

/**
 * Writes `text` on a fresh raw socket and reads one response (Content-Length
 * framed, or up to the close). Lets tests send what node:http refuses to.
 */
async function rawRequest(port: number, text: string): Promise<RawResponse> {
  const socket = connect({ host: '127.0.0.1', port });
  try {
    await once(socket, 'connect');
    socket.write(text);
    return await readResponse(socket);
  } finally {
    socket.destroy();
  }
}

function readResponse(socket: Socket): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const tryParse = (closed: boolean): boolean => {
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) return false;
      const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
      const status = Number(lines[0]!.split(' ')[1]);
      const headers = lines.slice(1).map((l): [string, string] => {
        const colon = l.indexOf(':');
        return [l.slice(0, colon).trim().toLowerCase(), l.slice(colon + 1).trim()];
      });
      const length = headers.find(([n]) => n === 'content-length');
      const rest = buf.subarray(end + 4);
      if (length === undefined && !closed) return false;
      const want = length === undefined ? rest.length : Number(length[1]);
      if (rest.length < want) return false;
      buf = rest.subarray(want);
      cleanup();
      resolve({ status, headers, body: rest.subarray(0, want).toString('utf8') });
      return true;
    };
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      tryParse(false);
    };
    const onEnd = () => {
      if (!tryParse(true)) {
        cleanup();
        reject(new Error(`connection closed before a complete response: ${JSON.stringify(buf.toString('latin1'))}`));
      }
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const cleanup = () => {
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('error', onError);
    };
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('error', onError);
  });
}

/** XML character references decoded (the error bodies escape quotes as &#34;). */
const xmlText = (s: string) => s.replace(/&#(\d+);/g, (_, n: string) => String.fromCharCode(Number(n)));

const header = (res: RawResponse, name: string) => res.headers.filter(([n]) => n === name).map(([, v]) => v);

const HEX64 = /^[0-9a-f]{64}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Every field of the decision record contract, with its type. */
function expectRecordShape(r: DecisionRecord): void {
  expect(r.v).toBe(RECORD_VERSION);
  expect(Number.isInteger(r.seq) && r.seq > 0).toBe(true);
  expect(new Date(r.ts).toISOString()).toBe(r.ts);
  expect(r.id).toMatch(UUID);
  expect(r.replica).toBe('test');
  expect(r.policy).toMatch(HEX64);
  expect(typeof r.upstream).toBe('string');
  expect(r.method).toMatch(/^[A-Z]+$/);
  expect(r.path).toMatch(/^\//);
  expect(r.path).not.toContain('?');
  expect(OPERATIONS).toContain(r.operation);
  expect(typeof r.target.host).toBe('string');
  expect(r.target.address === null || typeof r.target.address === 'string').toBe(true);
  expect(Array.isArray(r.location.jurisdictions)).toBe(true);
  for (const j of r.location.jurisdictions) expect(j).toMatch(/^[A-Z]{2}$/);
  expect(r.location.region === null || typeof r.location.region === 'string').toBe(true);
  expect(Array.isArray(r.location.signals)).toBe(true);
  expect(r.rule === null || typeof r.rule === 'string').toBe(true);
  expect(MODES).toContain(r.mode);
  expect(['allow', 'block']).toContain(r.decision);
  expect(['forwarded', 'refused']).toContain(r.effective);
  expect(REASONS).toContain(r.reason);
  expect(Number.isInteger(r.status)).toBe(true);
  expect(Number.isInteger(r.bytes_in) && r.bytes_in >= 0).toBe(true);
  expect(r.bytes_out === null || (Number.isInteger(r.bytes_out) && r.bytes_out >= 0)).toBe(true);
  expect(typeof r.duration_ms === 'number' && r.duration_ms >= 0).toBe(true);
  expect(typeof r.client).toBe('string');
  if ('error' in r) expect(['upstream_unreachable', 'upstream_timeout', 'upstream_reset', 'client_aborted']).toContain(r.error);
  expect(r.prev).toMatch(HEX64);
  expect(r.hash).toMatch(HEX64);
}

/** A port nothing listens on: bound by the OS, then released. */
async function closedPort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('residency proxy over real sockets', () => {
  const UPLOAD = 16 * MiB;
  const REFUSED_UPLOAD = 8 * MiB;
  const DOWNLOAD = 6 * MiB;
  const DOWNLOAD_SEED = 7;

  let proxy: RunningProxy;
  /** US upstream (s3): gets the allowed writes; serves the downloads. */
  let us: RecordingUpstream;
  /** Ireland (s3), enforce: must never see a byte. */
  let eu: RecordingUpstream;
  /** Ireland (s3), reads only. */
  let euRead: RecordingUpstream;
  let monitor: RecordingUpstream;
  let warn: RecordingUpstream;
  /** Generic US upstream whose responses carry hop-by-hop headers. */
  let generic: RecordingUpstream;
  let hanging: RecordingUpstream;
  let upstreams: RecordingUpstream[];
  /** Resets the connection after 1 MiB of a request body. */
  let resetter: Server;
  let resetterBytes = 0;
  let proxyConnections = 0;
  let seenRecords = 0;

  /** Decision records written since the previous call, each checked against the contract. */
  const newRecords = (): DecisionRecord[] => {
    const all = proxy.decisions();
    const fresh = all.slice(seenRecords);
    seenRecords = all.length;
    for (const r of fresh) expectRecordShape(r);
    return fresh;
  };
  const totalUpstreamRequests = () => upstreams.reduce((n, u) => n + u.requests.length, 0);

  beforeAll(async () => {
    us = await startRecordingUpstream({
      respond: (req) => {
        if (req.url.endsWith('/download')) {
          return { status: 200, headers: { 'content-length': String(DOWNLOAD) }, body: generated(DOWNLOAD, DOWNLOAD_SEED).stream };
        }
        if (req.url.endsWith('/download-chunked')) {
          return { status: 200, headers: { 'content-type': 'application/octet-stream' }, body: generated(DOWNLOAD, DOWNLOAD_SEED).stream };
        }
        return { status: 200, headers: { 'content-type': 'text/plain', 'content-length': '3' }, body: 'ok\n' };
      },
    });
    eu = await startRecordingUpstream();
    euRead = await startRecordingUpstream();
    monitor = await startRecordingUpstream();
    warn = await startRecordingUpstream();
    generic = await startRecordingUpstream({
      respond: () => ({
        status: 200,
        headers: {
          'content-type': 'text/plain',
          connection: 'keep-alive, x-upstream-hop',
          'keep-alive': 'timeout=77, max=999',
          'x-upstream-hop': 'secret',
          'x-upstream-visible': 'yes',
          'content-length': '3',
        },
        body: 'ok\n',
      }),
    });
    hanging = await startRecordingUpstream({ hang: true });
    upstreams = [us, eu, euRead, monitor, warn, generic, hanging];
    const dead = await closedPort();
    resetter = createServer((req) => {
      req.on('data', (chunk: Buffer) => {
        resetterBytes += chunk.length;
        if (resetterBytes > MiB) req.socket.destroy();
      });
    });
    resetter.listen(0, '127.0.0.1');
    await once(resetter, 'listening');
    const resetterPort = (resetter.address() as AddressInfo).port;

    proxy = await startProxy({
      allowed_jurisdictions: ['US'],
      mode: 'enforce',
      upstreams: [
        { name: 'us', url: us.url, provider: 's3', route: { path_prefix: '/us', strip_prefix: true }, region: 'us-east-1' },
        { name: 'eu', url: eu.url, provider: 's3', route: { path_prefix: '/eu', strip_prefix: true }, region: 'eu-west-1' },
        { name: 'eu-read', url: euRead.url, provider: 's3', route: { path_prefix: '/ie-read', strip_prefix: true }, region: 'eu-west-1' },
        { name: 'eu-monitor', url: monitor.url, provider: 's3', route: { path_prefix: '/mon', strip_prefix: true }, region: 'eu-west-1' },
        { name: 'eu-warn', url: warn.url, provider: 's3', route: { path_prefix: '/warn', strip_prefix: true }, region: 'eu-west-1' },
        { name: 'gen', url: generic.url, provider: 'generic', route: { path_prefix: '/gen', strip_prefix: true }, region: 'us-east-1' },
        { name: 'dead-s3', url: `http://127.0.0.1:${dead}`, provider: 's3', route: { path_prefix: '/dead-s3', strip_prefix: true }, region: 'us-east-1' },
        { name: 'dead-gen', url: `http://127.0.0.1:${dead}`, provider: 'generic', route: { path_prefix: '/dead-gen', strip_prefix: true }, region: 'us-east-1' },
        { name: 'reset', url: `http://127.0.0.1:${resetterPort}`, provider: 's3', route: { path_prefix: '/reset', strip_prefix: true }, region: 'us-east-1' },
        {
          name: 'slow',
          url: hanging.url,
          provider: 's3',
          route: { path_prefix: '/slow', strip_prefix: true },
          region: 'us-east-1',
          timeouts: { headers: 0.5 },
        },
      ],
      rules: [
        { name: 'monitor-eu', match: { upstreams: ['eu-monitor'], operations: ['write'] }, mode: 'monitor' },
        { name: 'warn-eu', match: { upstreams: ['eu-warn'], operations: ['write'] }, mode: 'warn' },
        { name: 'user-data-writes', match: { operations: ['write'] }, allow_jurisdictions: ['US'], mode: 'enforce' },
      ],
    });
    proxy.app.proxy.server.on('connection', () => proxyConnections++);
  });

  afterAll(async () => {
    await proxy?.close();
    await Promise.all((upstreams ?? []).map((u) => u.close()));
    if (resetter) {
      resetter.closeAllConnections();
      await new Promise<void>((resolve) => resetter.close(() => resolve()));
    }
  });

  describe('enforce refuses a non-US write before any byte leaves', () => {
    const expectRefusal = (res: Exchange) => {
      expect(res.status).toBe(403);
      const id = res.headers['x-residency-decision-id'];
      expect(id).toMatch(UUID);
      expect(res.headers['x-residency-decision']).toBe('block');
      expect(res.headers['content-type']).toBe('application/xml');
      const xml = xmlText(res.text);
      expect(xml).toContain('<Code>AccessDenied</Code>');
      expect(xml).toContain('rule "user-data-writes"');
      expect(xml).toContain('does not allow IE');
      expect(xml).toContain(`<RequestId>${String(id)}</RequestId>`);
      expect(xml).toContain(`decision id ${String(id)}`);
      expect(eu.requests).toHaveLength(0);
      expect(eu.connections).toBe(0);
      expect(eu.bytesReceived).toBe(0);
      const records = newRecords();
      expect(records).toHaveLength(1);
      expect(records[0]).toMatchObject({
        id,
        upstream: 'eu',
        method: 'PUT',
        path: '/bucket/big.bin',
        operation: 'write',
        decision: 'block',
        effective: 'refused',
        mode: 'enforce',
        rule: 'user-data-writes',
        reason: 'jurisdiction_not_allowed',
        status: 403,
        bytes_in: 0,
        bytes_out: null,
      });
      expect(records[0]!.location.jurisdictions).toEqual(['IE']);
      expect(records[0]).not.toHaveProperty('error');
    };

    it('enforce-refuses-streaming-eu-write-with-content-length-and-zero-upstream-bytes', async () => {
      newRecords();
      const body = generated(REFUSED_UPLOAD, 1);
      const res = await send(proxy.port, { method: 'PUT', path: '/eu/bucket/big.bin', body });
      expectRefusal(res);
      // The refusal arrived while the client was still sending.
      expect(body.produced()).toBeLessThan(REFUSED_UPLOAD);
      expect(res.headers['connection']).toBe('close');
    });

    it('enforce-refuses-chunked-eu-write-with-zero-upstream-bytes', async () => {
      newRecords();
      const body = generated(REFUSED_UPLOAD, 2);
      const res = await send(proxy.port, { method: 'PUT', path: '/eu/bucket/big.bin', body, chunked: true });
      expectRefusal(res);
      expect(body.produced()).toBeLessThan(REFUSED_UPLOAD);
      expect(res.headers['connection']).toBe('close');
    });

    it('lingers-after-refusing-a-large-body-so-a-client-still-sending-gets-no-reset', async () => {
      newRecords();
      // Half-open allowed: the proxy's FIN must not stop this client from sending.
      const socket = connect({ host: '127.0.0.1', port: proxy.port, allowHalfOpen: true });
      const errors: Error[] = [];
      socket.on('error', (err) => errors.push(err));
      const closed = once(socket, 'close');
      try {
        await once(socket, 'connect');
        socket.write(`PUT /eu/bucket/big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${REFUSED_UPLOAD}\r\n\r\n`);
        socket.write(chunkAt(4, 0, 256 * 1024));
        const res = await readResponse(socket);
        expect(res.status).toBe(403);
        expect(header(res, 'connection')).toEqual(['close']);
        expect(xmlText(res.body)).toContain('rule "user-data-writes"');
        // A client that has not looked at the answer yet keeps sending (less
        // than refusal_drain_bytes): the proxy must keep reading, not reset.
        for (let i = 1; i <= 4; i++) {
          await new Promise<void>((resolve) => socket.write(chunkAt(4, i, 128 * 1024), () => resolve()));
        }
        await new Promise((r) => setTimeout(r, 100));
        expect(errors).toEqual([]);
        socket.end();
        await closed;
        expect(errors).toEqual([]);
      } finally {
        socket.destroy();
      }
      expect(eu.connections).toBe(0);
      expect(newRecords()).toHaveLength(1);
    });

    it('enforce-refuses-expect-100-continue-eu-write-without-sending-100-continue', async () => {
      newRecords();
      const body = generated(REFUSED_UPLOAD, 3);
      const res = await send(proxy.port, { method: 'PUT', path: '/eu/bucket/big.bin', body, expectContinue: true });
      expectRefusal(res);
      expect(res.gotContinue).toBe(false);
      expect(body.produced()).toBe(0);
    });
  });

  describe('an allowed US write streams through byte-identical', () => {
    const rss: Record<string, number> = {};

    beforeAll(() => {
      rss.before = process.memoryUsage().rss;
    });
    afterAll(() => {
      rss.after = process.memoryUsage().rss;
      const mb = (n: number | undefined) => ((n ?? 0) / MiB).toFixed(1);
      console.log(
        `[proxy.test] RSS around ${UPLOAD / MiB} MiB CL upload + ${UPLOAD / MiB} MiB chunked upload + 2 x ${DOWNLOAD / MiB} MiB downloads ` +
          `(proxy, upstream and client in one process): before ${mb(rss.before)} MiB, after ${mb(rss.after)} MiB, ` +
          `delta ${mb((rss.after ?? 0) - (rss.before ?? 0))} MiB`,
      );
    });

    const expectUpload = (res: Exchange, seed: number, chunked: boolean) => {
      expect(res.status).toBe(200);
      expect(res.text).toBe('ok\n');
      expect(res.headers['x-residency-decision']).toBe('allow');
      const rec = us.requests.at(-1) as RecordedRequest;
      expect(rec.complete).toBe(true);
      expect(rec.url).toBe('/bucket/big.bin');
      expect(rec.bodyBytes).toBe(UPLOAD);
      expect(rec.bodySha256).toBe(generatedSha256(UPLOAD, seed));
      if (chunked) expect(rec.headers['transfer-encoding']).toBe('chunked');
      else expect(rec.headers['content-length']).toBe(String(UPLOAD));
      const records = newRecords();
      expect(records).toHaveLength(1);
      expect(records[0]).toMatchObject({
        id: res.headers['x-residency-decision-id'],
        upstream: 'us',
        operation: 'write',
        decision: 'allow',
        effective: 'forwarded',
        reason: 'jurisdiction_allowed',
        status: 200,
        bytes_in: UPLOAD,
        bytes_out: 3,
      });
      expect(records[0]!.location.jurisdictions).toEqual(['US']);
    };

    it('forwards-16mib-content-length-us-write-byte-identical', async () => {
      newRecords();
      const res = await send(proxy.port, { method: 'PUT', path: '/us/bucket/big.bin', body: generated(UPLOAD, 11) });
      expectUpload(res, 11, false);
    });

    it('forwards-16mib-chunked-us-write-byte-identical', async () => {
      newRecords();
      const res = await send(proxy.port, { method: 'PUT', path: '/us/bucket/big.bin', body: generated(UPLOAD, 12), chunked: true });
      expectUpload(res, 12, true);
    });

    it('forwards-writes-whose-content-type-no-parser-could-read-as-sent-the-fastify-front-reads-no-body', async () => {
      for (const type of ['', ';;;', 'a/b; x="', 'application/json', 'multipart/form-data; boundary=x']) {
        newRecords();
        const res = await rawRequest(proxy.port, `PUT /us/bucket/typed.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: ${type}\r\nContent-Length: 9\r\nConnection: close\r\n\r\n{not json`);
        expect(res.status, `Content-Type: ${type}`).toBe(200);
        const rec = us.requests.at(-1) as RecordedRequest;
        expect(rec.headers['content-type']).toBe(type);
        expect(rec.bodyBytes).toBe(9);
        expect(newRecords()).toHaveLength(1);
      }
    });

    it('forwards-a-small-body-the-same-whether-it-came-with-its-head-after-it-or-pipelined-behind-another-request', async () => {
      const put = (key: string, body: string) => `PUT /us/bucket/${key} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
      const outcomeOf = async (path: string) => {
        const decision = proxy.records().find((r) => r.kind === undefined && r.path === path);
        await expect.poll(() => proxy.records().some((r) => r.kind === 'outcome' && r.id === decision?.id)).toBe(true);
        return proxy.records().find((r) => r.kind === 'outcome' && r.id === decision?.id)!;
      };
      const socket = connect({ host: '127.0.0.1', port: proxy.port });
      /** Statuses of the next `n` responses on the socket (Content-Length framed; pipelined answers may share a read). */
      let pending = Buffer.alloc(0);
      const statuses = async (n: number): Promise<number[]> => {
        const out: number[] = [];
        for (;;) {
          const end = pending.indexOf('\r\n\r\n');
          if (end !== -1) {
            const head = pending.subarray(0, end).toString('latin1');
            const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
            if (pending.length >= end + 4 + length) {
              out.push(Number(head.split(' ')[1]));
              pending = pending.subarray(end + 4 + length);
              if (out.length === n) return out;
              continue;
            }
          }
          const [chunk] = (await once(socket, 'data')) as [Buffer];
          pending = Buffer.concat([pending, chunk]);
        }
      };
      try {
        await once(socket, 'connect');
        // With its head in one write: the proxy has read all of it before deciding.
        socket.write(put('whole.txt', 'hello world'));
        expect(await statuses(1)).toEqual([200]);
        // The head alone, the body later: streamed.
        socket.write(put('split.txt', 'hello world').slice(0, -11));
        await new Promise((r) => setTimeout(r, 100));
        socket.write('hello world');
        expect(await statuses(1)).toEqual([200]);
        // Two requests in one write: each body goes with its own request.
        socket.write(put('first.txt', 'first') + put('second.txt', 'the second'));
        expect(await statuses(2)).toEqual([200, 200]);
      } finally {
        socket.destroy();
      }
      const received = (url: string) => us.requests.filter((r) => r.url === url).at(-1) as RecordedRequest;
      for (const [key, body] of [['whole.txt', 'hello world'], ['split.txt', 'hello world'], ['first.txt', 'first'], ['second.txt', 'the second']] as const) {
        const rec = received(`/bucket/${key}`);
        expect(rec.complete, key).toBe(true);
        expect(rec.bodyHead.toString(), key).toBe(body);
        expect((await outcomeOf(`/bucket/${key}`)).bytes_in, key).toBe(body.length);
      }
    });

    it('sends-100-continue-only-after-allowing-a-write', async () => {
      newRecords();
      const body = generated(2 * MiB, 13);
      const res = await send(proxy.port, { method: 'PUT', path: '/us/bucket/small.bin', body, expectContinue: true });
      expect(res.status).toBe(200);
      expect(res.gotContinue).toBe(true);
      const rec = us.requests.at(-1) as RecordedRequest;
      expect(rec.bodySha256).toBe(generatedSha256(2 * MiB, 13));
      // Expect is answered by the proxy, not passed on.
      expect(rec.headers['expect']).toBeUndefined();
      expect(newRecords()).toHaveLength(1);
    });

    it('streams-upstream-response-bodies-back-byte-identical', async () => {
      newRecords();
      const expected = generatedSha256(DOWNLOAD, DOWNLOAD_SEED);
      const sized = await send(proxy.port, { method: 'GET', path: '/us/bucket/download' });
      expect(sized.status).toBe(200);
      expect(sized.headers['content-length']).toBe(String(DOWNLOAD));
      expect(sized.bodyBytes).toBe(DOWNLOAD);
      expect(sized.bodySha256).toBe(expected);

      const streamed = await send(proxy.port, { method: 'GET', path: '/us/bucket/download-chunked' });
      expect(streamed.status).toBe(200);
      expect(streamed.headers['transfer-encoding']).toBe('chunked');
      expect(streamed.bodyBytes).toBe(DOWNLOAD);
      expect(streamed.bodySha256).toBe(expected);

      const records = newRecords();
      expect(records.map((r) => [r.operation, r.reason, r.bytes_in, r.bytes_out])).toEqual([
        ['read', 'read_allowed', 0, DOWNLOAD],
        ['read', 'read_allowed', 0, null],
      ]);
    });
  });

  describe('monitor and warn modes forward a non-US write', () => {
    it('monitor-forwards-eu-write-and-records-the-block', async () => {
      newRecords();
      const size = 2 * MiB;
      const res = await send(proxy.port, { method: 'PUT', path: '/mon/bucket/m.bin', body: generated(size, 21) });
      expect(res.status).toBe(200);
      expect(res.headers['x-residency-decision']).toBe('block');
      expect(res.headers['x-residency-warning']).toBeUndefined();
      expect(monitor.requests).toHaveLength(1);
      expect(monitor.requests[0]!.bodyBytes).toBe(size);
      expect(monitor.requests[0]!.bodySha256).toBe(generatedSha256(size, 21));
      const records = newRecords();
      expect(records).toHaveLength(1);
      expect(records[0]).toMatchObject({
        upstream: 'eu-monitor',
        decision: 'block',
        effective: 'forwarded',
        mode: 'monitor',
        rule: 'monitor-eu',
        reason: 'jurisdiction_not_allowed',
        status: 200,
        bytes_in: size,
      });
    });

    it('warn-forwards-eu-write-with-warning-headers', async () => {
      newRecords();
      const res = await send(proxy.port, { method: 'PUT', path: '/warn/bucket/w.txt', body: 'hello warn' });
      expect(res.status).toBe(200);
      expect(warn.requests).toHaveLength(1);
      expect(warn.requests[0]!.bodyBytes).toBe(10);
      const id = String(res.headers['x-residency-decision-id']);
      expect(res.headers['x-residency-warning']).toContain('warn-eu');
      expect(res.headers['x-residency-warning']).toContain(id);
      expect(res.headers['warning']).toMatch(/^299 residency-proxy ".+"$/);
      const records = newRecords();
      expect(records).toHaveLength(1);
      expect(records[0]).toMatchObject({ id, decision: 'block', effective: 'forwarded', mode: 'warn', rule: 'warn-eu', status: 200, bytes_in: 10 });
    });
  });

  describe('refusals before a decision', () => {
    it('answers-404-problem-json-for-an-unrouted-path', async () => {
      newRecords();
      const before = totalUpstreamRequests();
      const res = await request(`${proxy.url}/nowhere/b/k`);
      expect(res.statusCode).toBe(404);
      expect(res.headers['content-type']).toBe('application/problem+json');
      const body = (await res.body.json()) as { status: number; type: string };
      expect(body.status).toBe(404);
      expect(body.type).toMatch(/no_route$/);
      expect(totalUpstreamRequests()).toBe(before);
      expect(newRecords()).toHaveLength(0);
    });

    it('refuses-absolute-form-request-target-with-400', async () => {
      newRecords();
      const before = totalUpstreamRequests();
      const res = await rawRequest(proxy.port, 'GET http://other.example/us/b/k HTTP/1.1\r\nHost: other.example\r\n\r\n');
      expect(res.status).toBe(400);
      // The target names an S3 route: the answer is S3's own error document, which SDKs and CLIs print.
      expect(header(res, 'content-type')).toEqual(['application/xml']);
      expect(res.body).toMatch(/<Error><Code>InvalidRequest<\/Code><Message>[^<]*absolute-form/);
      expect(totalUpstreamRequests()).toBe(before);
      expect(newRecords()).toHaveLength(0);
    });

    it('answers-a-refusal-before-a-decision-in-the-format-of-the-route-it-names', async () => {
      const twoHosts = (path: string) => rawRequest(proxy.port, `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n`);
      expect(header(await twoHosts('/us/b/k'), 'content-type')).toEqual(['application/xml']);
      expect(header(await twoHosts('/gen/b/k'), 'content-type')).toEqual(['application/problem+json']);
      // No route, or a path whose route is not clear: problem+json.
      expect(header(await twoHosts('/nowhere/b/k'), 'content-type')).toEqual(['application/problem+json']);
      const dots = await rawRequest(proxy.port, 'PUT /us/../eu/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello');
      expect(header(dots, 'content-type')).toEqual(['application/problem+json']);
    });

    it('refuses-connect-with-405', async () => {
      newRecords();
      const before = totalUpstreamRequests();
      const res = await rawRequest(proxy.port, `CONNECT 127.0.0.1:${us.port} HTTP/1.1\r\nHost: 127.0.0.1:${us.port}\r\n\r\n`);
      expect(res.status).toBe(405);
      expect(totalUpstreamRequests()).toBe(before);
      expect(newRecords()).toHaveLength(0);
    });

    it('refuses-two-host-headers-with-400', async () => {
      newRecords();
      const before = totalUpstreamRequests();
      const res = await rawRequest(proxy.port, 'GET /us/b/k HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n');
      expect(res.status).toBe(400);
      expect(res.body).toContain('Host');
      expect(header(res, 'connection')).toEqual(['close']);
      expect(totalUpstreamRequests()).toBe(before);
      expect(newRecords()).toHaveLength(0);
    });

    it.each(['/us/../eu/x', '/us/%2e%2e/eu/x', '/us/%2E%2E/eu/x'])('refuses-dot-segment-escape-%s-with-400', async (path) => {
      newRecords();
      const before = totalUpstreamRequests();
      const res = await rawRequest(proxy.port, `PUT ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello`);
      expect(res.status).toBe(400);
      expect(JSON.parse(res.body)).toMatchObject({ status: 400 });
      expect(totalUpstreamRequests()).toBe(before);
      expect(newRecords()).toHaveLength(0);
    });

    it('refuses-more-header-lines-than-max-headers-with-431', async () => {
      newRecords();
      const before = totalUpstreamRequests();
      const extra = Array.from({ length: 120 }, (_, i) => `X-Filler-${i}: ${i}\r\n`).join('');
      const res = await rawRequest(proxy.port, `GET /us/b/k HTTP/1.1\r\nHost: 127.0.0.1\r\n${extra}\r\n`);
      expect(res.status).toBe(431);
      expect(totalUpstreamRequests()).toBe(before);
      expect(newRecords()).toHaveLength(0);
    });

    it('answers-what-the-http-parser-cannot-read-with-a-problem-400-and-closes', async () => {
      newRecords();
      const before = totalUpstreamRequests();
      const res = await rawRequest(proxy.port, 'PUT /us/b/k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nBad Header Name: x\r\n\r\nhello');
      expect(res.status).toBe(400);
      expect(header(res, 'x-residency-error')).toEqual(['RESIDENCY_ERR_BAD_REQUEST']);
      expect(header(res, 'connection')).toEqual(['close']);
      expect(JSON.parse(res.body)).toMatchObject({ status: 400, type: 'https://residency-proxy.dev/problems/malformed_request' });
      expect(totalUpstreamRequests()).toBe(before);
      expect(newRecords()).toHaveLength(0);
    });
  });

  describe('upstream failures', () => {
    it('answers-502-in-s3-format-when-the-upstream-is-unreachable', async () => {
      newRecords();
      const res = await send(proxy.port, { method: 'GET', path: '/dead-s3/bucket/k' });
      expect(res.status).toBe(502);
      expect(res.headers['content-type']).toBe('application/xml');
      expect(res.text).toContain('<Code>BadGateway</Code>');
      const id = String(res.headers['x-residency-decision-id']);
      expect(res.text).toContain(`<RequestId>${id}</RequestId>`);
      const records = newRecords();
      expect(records).toHaveLength(1);
      expect(records[0]).toMatchObject({ id, upstream: 'dead-s3', status: 502, error: 'upstream_unreachable', effective: 'forwarded' });
    });

    it('answers-502-problem-json-for-an-unreachable-generic-upstream', async () => {
      newRecords();
      const res = await send(proxy.port, { method: 'PUT', path: '/dead-gen/thing', body: 'payload' });
      expect(res.status).toBe(502);
      expect(res.headers['content-type']).toBe('application/problem+json');
      const body = JSON.parse(res.text) as { status: number; decision_id: string };
      expect(body.status).toBe(502);
      expect(body.decision_id).toBe(res.headers['x-residency-decision-id']);
      const records = newRecords();
      expect(records).toHaveLength(1);
      expect(records[0]).toMatchObject({ id: body.decision_id, upstream: 'dead-gen', method: 'PUT', status: 502, error: 'upstream_unreachable' });
    });

    it('answers-502-not-a-client-abort-when-the-upstream-resets-mid-upload', async () => {
      newRecords();
      const res = await send(proxy.port, { method: 'PUT', path: '/reset/bucket/big.bin', body: generated(REFUSED_UPLOAD, 32) });
      expect(res.status).toBe(502);
      expect(xmlText(res.text)).toContain('<Code>BadGateway</Code>');
      expect(resetterBytes).toBeGreaterThan(MiB);
      const records = newRecords();
      expect(records).toHaveLength(1);
      expect(records[0]).toMatchObject({ upstream: 'reset', status: 502, error: 'upstream_reset', bytes_out: null });
      expect(records[0]!.bytes_in).toBeGreaterThan(MiB);
      expect(records[0]!.bytes_in).toBeLessThan(REFUSED_UPLOAD);
    });

    it('answers-504-when-the-upstream-sends-no-headers-in-time', async () => {
      newRecords();
      const res = await send(proxy.port, { method: 'GET', path: '/slow/bucket/k' });
      expect(res.status).toBe(504);
      expect(res.text).toContain('<Code>GatewayTimeout</Code>');
      expect(hanging.requests).toHaveLength(1);
      const records = newRecords();
      expect(records).toHaveLength(1);
      expect(records[0]).toMatchObject({ upstream: 'slow', status: 504, error: 'upstream_timeout' });
    });
  });

  describe('client abort', () => {
    it('records-a-client-abort-mid-upload-as-499-and-aborts-upstream', async () => {
      newRecords();
      const index = us.requests.length;
      const req = httpRequest({
        host: '127.0.0.1',
        port: proxy.port,
        method: 'PUT',
        path: '/us/bucket/aborted.bin',
        headers: { 'content-length': String(8 * MiB) },
        agent: false,
      });
      req.on('error', () => {});
      req.write(chunkAt(31, 0, MiB));
      // Abort once the body is demonstrably flowing to the upstream.
      await us.waitFor(() => (us.requests[index]?.bodyBytes ?? 0) > 0);
      req.destroy();
      await us.waitFor(() => us.requests[index]?.aborted === true);
      // The decision was durable before the upload started; its outcome follows once the abort is seen.
      await us.waitFor(() => proxy.decisions().slice(seenRecords).some((r) => r.status !== null));
      const records = newRecords();
      expect(records).toHaveLength(1);
      expect(records[0]).toMatchObject({ upstream: 'us', path: '/bucket/aborted.bin', status: 499, error: 'client_aborted', bytes_out: null });
      expect(records[0]!.bytes_in).toBeGreaterThan(0);
      expect(records[0]!.bytes_in).toBeLessThanOrEqual(MiB);
    });

    it('a-client-leaving-mid-download-is-not-counted-as-an-upstream-reset', async () => {
      const resets = async () =>
        (await proxy.app.metrics.upstreamErrors.get()).values.find((v) => v.labels.upstream === 'us' && v.labels.kind === 'reset')?.value ?? 0;
      const before = await resets();
      const closed = new Promise<void>((resolve) => {
        const req = httpRequest({ host: '127.0.0.1', port: proxy.port, path: '/us/bucket/download', agent: false }, (res) => {
          res.once('data', () => req.destroy());
          res.on('error', () => {});
          res.on('close', () => resolve());
        });
        req.on('error', () => {});
        req.end();
      });
      await closed;
      // The proxy sees the close on its side, then drops the upstream response.
      await us.waitFor(() => us.requests.at(-1)?.url.endsWith('/download') === true);
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(await resets()).toBe(before);
    });
  });

  describe('reads to a non-US upstream', () => {
    it('allows-head-and-get-to-a-non-us-upstream-as-reads', async () => {
      newRecords();
      const head = await request(`${proxy.url}/ie-read/bucket/k`, { method: 'HEAD' });
      expect(head.statusCode).toBe(200);
      await head.body.dump();
      const get = await request(`${proxy.url}/ie-read/bucket/k`);
      expect(get.statusCode).toBe(200);
      expect(await get.body.text()).toBe('ok\n');
      expect(euRead.requests.map((r) => r.method)).toEqual(['HEAD', 'GET']);
      const records = newRecords();
      expect(records.map((r) => [r.method, r.operation, r.decision, r.reason, r.rule, r.status])).toEqual([
        ['HEAD', 'read', 'allow', 'read_allowed', null, 200],
        ['GET', 'read', 'allow', 'read_allowed', null, 200],
      ]);
    });

    it('refuses-delete-to-a-non-us-upstream', async () => {
      newRecords();
      const res = await request(`${proxy.url}/ie-read/bucket/k`, { method: 'DELETE' });
      expect(res.statusCode).toBe(403);
      expect(await res.body.text()).toContain('AccessDenied');
      expect(euRead.requests).toHaveLength(2);
      const records = newRecords();
      expect(records).toHaveLength(1);
      expect(records[0]).toMatchObject({ method: 'DELETE', operation: 'write', decision: 'block', effective: 'refused', status: 403 });
    });
  });

  describe('keep-alive after a refusal', () => {
    it('reuses-the-connection-after-refused-small-puts', async () => {
      newRecords();
      const client = new Client(proxy.url, { pipelining: 1 });
      const connectionsBefore = proxyConnections;
      try {
        for (let i = 0; i < 2; i++) {
          const res = await client.request({ method: 'PUT', path: `/eu/bucket/small-${i}`, body: 'small body' });
          expect(res.statusCode).toBe(403);
          expect(res.headers['connection']).not.toBe('close');
          expect(await res.body.text()).toContain('AccessDenied');
        }
      } finally {
        await client.close();
      }
      expect(proxyConnections - connectionsBefore).toBe(1);
      expect(eu.connections).toBe(0);
      expect(newRecords().map((r) => r.status)).toEqual([403, 403]);
    });

    it('drains-a-small-body-sent-after-the-refusal-and-keeps-the-connection', async () => {
      newRecords();
      const connectionsBefore = proxyConnections;
      const socket = connect({ host: '127.0.0.1', port: proxy.port });
      try {
        await once(socket, 'connect');
        const body = 'x'.repeat(4096);
        // Headers first: the refusal goes out before the body has arrived.
        socket.write(`PUT /eu/bucket/late HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${body.length}\r\n\r\n`);
        const first = await readResponse(socket);
        expect(first.status).toBe(403);
        expect(header(first, 'connection')).not.toContain('close');
        socket.write(body);
        socket.write('PUT /eu/bucket/again HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello');
        const second = await readResponse(socket);
        expect(second.status).toBe(403);
        expect(second.body).toContain('AccessDenied');
      } finally {
        socket.destroy();
      }
      expect(proxyConnections - connectionsBefore).toBe(1);
      expect(eu.connections).toBe(0);
      expect(newRecords().map((r) => [r.path, r.status])).toEqual([
        ['/bucket/late', 403],
        ['/bucket/again', 403],
      ]);
    });
  });

  describe('hop-by-hop hygiene', () => {
    it('strips-hop-by-hop-headers-both-ways-and-sets-x-forwarded', async () => {
      newRecords();
      const res = await rawRequest(
        proxy.port,
        'GET /gen/things/1 HTTP/1.1\r\n' +
          'Host: proxy.test:8080\r\n' +
          'Connection: keep-alive, x-secret-hop\r\n' +
          'X-Secret-Hop: 1\r\n' +
          'Keep-Alive: timeout=99\r\n' +
          'TE: trailers\r\n' +
          'Upgrade: h2c\r\n' +
          'Proxy-Authorization: Basic c2VjcmV0\r\n' +
          'X-Forwarded-For: 203.0.113.7\r\n' +
          'X-Forwarded-Proto: gopher\r\n' +
          'X-End-To-End: kept\r\n' +
          '\r\n',
      );
      expect(res.status).toBe(200);
      expect(res.body).toBe('ok\n');

      const rec = generic.requests.at(-1) as RecordedRequest;
      const names = rec.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
      for (const name of ['x-secret-hop', 'keep-alive', 'te', 'upgrade', 'proxy-authorization', 'expect']) {
        expect(names).not.toContain(name);
      }
      // undici's own Connection header for its pool, never the client's.
      expect(names.filter((n) => n === 'connection')).toHaveLength(1);
      expect(rec.headers['connection']).not.toContain('x-secret-hop');
      expect(rec.headers['x-end-to-end']).toBe('kept');
      expect(rec.headers['x-forwarded-for']).toBe('203.0.113.7, 127.0.0.1');
      expect(rec.headers['x-forwarded-proto']).toBe('http');
      expect(rec.headers['x-forwarded-host']).toBe('proxy.test:8080');
      expect(rec.headers['host']).toBe(`127.0.0.1:${generic.port}`);

      // The upstream's connection-level headers stay on the upstream connection.
      expect(header(res, 'x-upstream-visible')).toEqual(['yes']);
      expect(header(res, 'x-upstream-hop')).toEqual([]);
      for (const v of header(res, 'connection')) expect(v).not.toContain('x-upstream-hop');
      for (const v of header(res, 'keep-alive')) expect(v).not.toContain('timeout=77');
      expect(header(res, 'connection').length).toBeLessThanOrEqual(1);
      expect(header(res, 'keep-alive').length).toBeLessThanOrEqual(1);
      expect(newRecords()).toHaveLength(1);
    });
  });

  describe('decision log', () => {
    it('chains-every-record-and-keeps-one-per-decided-request', () => {
      newRecords();
      const all = proxy.records();
      expect(all.length).toBeGreaterThan(0);
      let prev = '0'.repeat(64);
      all.forEach((r, i) => {
        expect(r.seq).toBe(i + 1);
        expect(r.prev).toBe(prev);
        prev = r.hash;
      });
      // One decision per decided request; each forwarded write's decision has exactly one outcome after it.
      const decisions = all.filter((r) => r.kind === undefined);
      const outcomes = all.filter((r) => r.kind === 'outcome');
      expect(new Set(decisions.map((r) => r.id)).size).toBe(decisions.length);
      const pending = decisions.filter((r) => r.status === null);
      expect(pending.every((r) => r.operation === 'write' && r.effective === 'forwarded')).toBe(true);
      expect(outcomes.map((o) => o.id).sort()).toEqual(pending.map((r) => r.id).sort());
      for (const o of outcomes) expect(all.findIndex((r) => r.id === o.id)).toBeLessThan(all.indexOf(o));
      proxy.decisions().forEach(expectRecordShape);
      expect(proxy.decisionLogText()).not.toContain('c2VjcmV0');
    });
  });
});

describe('graceful close', () => {
  const PART = 256 * 1024;
  let upstream: RecordingUpstream;
  let proxy: RunningProxy | undefined;

  beforeAll(async () => {
    upstream = await startRecordingUpstream({
      respond: () => ({
        status: 200,
        headers: { 'content-length': String(3 * PART) },
        // A download that takes ~0.5 s: the close begins while it is being written.
        body: Readable.from(
          (async function* slowly() {
            for (let i = 0; i < 3; i++) {
              if (i > 0) await new Promise((r) => setTimeout(r, 250));
              yield chunkAt(41, i, PART);
            }
          })(),
        ),
      }),
    });
    proxy = await startProxy({
      upstreams: [{ name: 'us', url: upstream.url, provider: 's3', route: { path_prefix: '/us', strip_prefix: true }, region: 'us-east-1' }],
    });
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  it('close-finishes-an-in-flight-keep-alive-download-then-ends-its-connection', async () => {
    const running = proxy!;
    const client = new Client(running.url, { pipelining: 1 });
    try {
      const res = await client.request({ method: 'GET', path: '/us/bucket/slow.bin' });
      expect(res.statusCode).toBe(200);
      // The head is out with keep-alive; the record was written before it.
      expect(res.headers['connection']).not.toBe('close');
      expect(running.decisions()).toHaveLength(1);

      const closeStarted = Date.now();
      let closedAfter = -1;
      const closing = running.close().then(() => (closedAfter = Date.now() - closeStarted));
      proxy = undefined;
      const hash = createHash('sha256');
      let bytes = 0;
      for await (const chunk of res.body) {
        hash.update(chunk as Buffer);
        bytes += (chunk as Buffer).length;
      }
      expect(bytes).toBe(3 * PART);
      const expected = createHash('sha256');
      for (let i = 0; i < 3; i++) expected.update(chunkAt(41, i, PART));
      expect(hash.digest('hex')).toBe(expected.digest('hex'));
      await closing;
      // Without ending the connection the close would wait out keepAliveTimeout (5 s).
      expect(closedAfter).toBeLessThan(2_000);
      expect(await new Promise((resolve) => {
        const socket = connect({ host: '127.0.0.1', port: running.port });
        socket.once('connect', () => {
          socket.destroy();
          resolve('connected');
        });
        socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code));
      })).toBe('ECONNREFUSED');
    } finally {
      await client.destroy();
    }
  });
});
