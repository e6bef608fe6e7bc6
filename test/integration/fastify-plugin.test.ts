import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import pino from 'pino';
import { request } from 'undici';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyLogs } from '../../src/audit/verify.js';
import { holdContinueForDecisions } from '../../src/proxy/routes.js';
import type * as PublicApi from '../../src/index.js';
import { decisionsOf } from '../helpers/proxy.js';
import { S3RVER_CREDENTIALS, startS3rver, type S3rverHandle } from '../helpers/s3rver.js';

/*
 * The Fastify plugin in an app of someone else's making, through the package's
 * own entry (`residency-proxy`, resolved by its `exports` map to the build):
 * the app's routes beside it, the app's authentication hook refusing first,
 * and the AWS SDK v3 through it against s3rver.
 */

const API_KEY = 'test-api-key';

function sha256(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** One request's raw bytes on a fresh socket; the whole answer (the request asks for Connection: close). */
async function rawRequest(port: number, text: string): Promise<string> {
  const socket = connect(port, '127.0.0.1');
  socket.write(text);
  let answer = '';
  socket.setEncoding('latin1');
  socket.on('data', (chunk: string) => (answer += chunk));
  await once(socket, 'close');
  return answer;
}

/** Sends a request head and returns the first answer the server gives (a 100 or the final status line and headers), without sending a body. */
async function firstAnswer(port: number, head: string): Promise<string> {
  const socket = connect(port, '127.0.0.1');
  socket.write(head);
  socket.setEncoding('latin1');
  let answer = '';
  try {
    await new Promise<void>((resolve, reject) => {
      socket.on('data', (chunk: string) => {
        answer += chunk;
        if (answer.includes('\r\n\r\n')) resolve();
      });
      socket.on('error', reject);
      socket.setTimeout(5_000, () => reject(new Error(`no answer in 5 s; got ${JSON.stringify(answer)}`)));
    });
  } finally {
    socket.destroy();
  }
  return answer;
}

function s3Client(endpoint: string, region: string, apiKey: string | null): S3Client {
  const client = new S3Client({
    endpoint,
    region,
    forcePathStyle: true,
    credentials: S3RVER_CREDENTIALS,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 1,
  });
  if (apiKey !== null) {
    client.middlewareStack.add(
      (next) => (args) => {
        (args.request as { headers: Record<string, string> }).headers['x-api-key'] = apiKey;
        return next(args);
      },
      { step: 'build', name: 'apiKey' },
    );
  }
  return client;
}

describe('residency-proxy as a Fastify plugin in another app', () => {
  let s3: S3rverHandle;
  let app: FastifyInstance;
  let url: string;
  let dir: string;
  let logFile: string;
  let started: PublicApi.ResidencyProxy | null = null;
  const address = () => (app.server.address() as { port: number }).port;
  const decisions = () => decisionsOf(existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');

  beforeAll(async () => {
    s3 = await startS3rver();
    dir = mkdtempSync(join(tmpdir(), 'residency-plugin-test-'));
    logFile = join(dir, 'decisions.log');
    // The package's public entry, as a user imports it (types from the source it is built from).
    const api = (await import('residency-proxy' as string)) as typeof PublicApi;
    const config = api.parseConfigText(
      stringify({
        admin: { host: '127.0.0.1', port: 0 },
        decision_log: { path: logFile },
        // The plugin sits under /storage: the routes name the whole path the client sends.
        upstreams: [
          { name: 's3-us', url: s3.endpoint, provider: 's3', route: { path_prefix: '/storage/us', strip_prefix: true }, region: 'us-east-1' },
          { name: 's3-eu', url: s3.endpoint, provider: 's3', route: { path_prefix: '/storage/eu', strip_prefix: true }, region: 'eu-west-1' },
        ],
        rules: [{ name: 'user-data-writes', match: { operations: ['write'] }, allow_jurisdictions: ['US'], mode: 'enforce' }],
      }),
      join(dir, 'plugin.yaml'),
    );

    // The app options the README asks for: the proxy answers during close, and for targets the router cannot decode.
    app = Fastify({
      return503OnClosing: false,
      frameworkErrors(error: FastifyError, request: FastifyRequest, reply: FastifyReply) {
        if (started === null || !request.raw.url!.startsWith('/storage/')) return reply.code(400).send(error);
        reply.hijack();
        started.dataPlane.serve(request.raw, reply.raw);
      },
    });
    // The app's own authentication: it refuses before the proxy decides anything.
    app.addHook('onRequest', async (req, reply) => {
      if (req.url === '/healthz') return;
      if (req.headers['x-api-key'] !== API_KEY) return reply.code(401).send({ error: 'unauthenticated' });
    });
    app.get('/healthz', async () => ({ ok: true }));
    app.post('/api/echo', async (req) => ({ echoed: req.body }));
    await app.register(api.residencyProxyPlugin, {
      prefix: '/storage',
      config,
      logger: pino({ level: 'silent' }),
      replica: 'plugin-test',
      awaitOutcomes: true,
      onStarted: (proxy) => {
        started = proxy;
      },
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const address = app.server.address() as { port: number };
    url = `http://127.0.0.1:${address.port}`;
  });

  afterAll(async () => {
    await app?.close();
    await s3?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('runs the AWS SDK through the plugin: a US write round-trips byte-exact and is recorded', async () => {
    const client = s3Client(`${url}/storage/us`, 'us-east-1', API_KEY);
    const body = randomBytes(3 * 1024 * 1024 + 17);
    await client.send(new CreateBucketCommand({ Bucket: 'plugin-us' }));
    await client.send(new PutObjectCommand({ Bucket: 'plugin-us', Key: 'dir/object.bin', Body: body }));
    const got = await client.send(new GetObjectCommand({ Bucket: 'plugin-us', Key: 'dir/object.bin' }));
    expect(sha256(await got.Body!.transformToByteArray())).toBe(sha256(body));

    // The record names the path forwarded (the route strips its prefix).
    const put = decisions().find((d) => d.method === 'PUT' && d.path === '/plugin-us/dir/object.bin');
    expect(put).toMatchObject({ upstream: 's3-us', bucket: 'plugin-us', decision: 'allow', effective: 'forwarded', status: 200, bytes_in: body.length, replica: 'plugin-test' });
  });

  it('leaves the body unparsed: a JSON-typed object that is not JSON is stored as sent', async () => {
    const client = s3Client(`${url}/storage/us`, 'us-east-1', API_KEY);
    await client.send(new PutObjectCommand({ Bucket: 'plugin-us', Key: 'not.json', Body: '{not json', ContentType: 'application/json' }));
    const got = await client.send(new GetObjectCommand({ Bucket: 'plugin-us', Key: 'not.json' }));
    expect(await got.Body!.transformToString()).toBe('{not json');
  });

  it('refuses an EU write in the S3 format, with a record, and nothing reaches the storage', async () => {
    const client = s3Client(`${url}/storage/eu`, 'eu-west-1', API_KEY);
    const error = await client.send(new CreateBucketCommand({ Bucket: 'plugin-eu' })).catch((err: unknown) => err as Error & { $metadata?: { httpStatusCode?: number } });
    expect(error).toBeInstanceOf(Error);
    expect(error).toMatchObject({ name: 'AccessDenied', $metadata: { httpStatusCode: 403 } });
    const refused = decisions().find((d) => d.bucket === 'plugin-eu');
    expect(refused).toMatchObject({ upstream: 's3-eu', decision: 'block', effective: 'refused', status: 403 });
    expect(existsSync(join(s3.directory, 'plugin-eu'))).toBe(false);
  });

  it("lets the app's own hook refuse first: no decision, no record, nothing stored", async () => {
    const before = decisions().length;
    const anonymous = s3Client(`${url}/storage/us`, 'us-east-1', null);
    const error = await anonymous.send(new PutObjectCommand({ Bucket: 'plugin-us', Key: 'anonymous.bin', Body: 'x' })).catch((err: unknown) => err as { $metadata?: { httpStatusCode?: number } });
    expect(error.$metadata?.httpStatusCode).toBe(401);
    expect(decisions().length).toBe(before);
    const client = s3Client(`${url}/storage/us`, 'us-east-1', API_KEY);
    await expect(client.send(new GetObjectCommand({ Bucket: 'plugin-us', Key: 'anonymous.bin' }))).rejects.toMatchObject({ name: 'NoSuchKey' });
  });

  it("keeps the app's routes, body parsing and 404s its own", async () => {
    const health = await request(`${url}/healthz`);
    expect(health.statusCode).toBe(200);
    expect(await health.body.json()).toEqual({ ok: true });
    const echo = await request(`${url}/api/echo`, { method: 'POST', headers: { 'x-api-key': API_KEY, 'content-type': 'application/json' }, body: '{"a":1}' });
    expect(await echo.body.json()).toEqual({ echoed: { a: 1 } });
    const missing = await request(`${url}/elsewhere`, { headers: { 'x-api-key': API_KEY } });
    expect(missing.statusCode).toBe(404);
    expect(missing.headers['content-type']).toMatch(/application\/json/);
    await missing.body.dump();
  });

  it("answers a target the app's router cannot decode in its own format (the README's frameworkErrors)", async () => {
    const res = await rawRequest(address(), 'PUT /storage/eu/plugin-eu/%zz HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: ' + API_KEY + '\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc');
    expect(res).toMatch(/^HTTP\/1\.1 400 /);
    expect(res).toMatch(/\r\nx-residency-error: RESIDENCY_ERR_/i);
    expect(res).not.toContain('FST_ERR_BAD_URL');
    const outside = await rawRequest(address(), 'GET /elsewhere/%zz HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: ' + API_KEY + '\r\nConnection: close\r\n\r\n');
    expect(outside).toContain('FST_ERR_BAD_URL');
  });

  it('holds 100 Continue back until the decision on its own paths, and leaves the app its own', async () => {
    // A refused write: the final answer with no 100 before it, so the client never sends its body.
    const head = (path: string) => `PUT ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: ${API_KEY}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n`;
    const refused = await firstAnswer(address(), head('/storage/eu/plugin-eu/held.bin'));
    expect(refused).toMatch(/^HTTP\/1\.1 403 /);
    // An allowed write is invited once it is decided.
    expect(await firstAnswer(address(), head('/storage/us/plugin-us/held.bin'))).toMatch(/^HTTP\/1\.1 100 Continue\r\n/);
    // The app's own route: Node's 100 at once, as without the plugin.
    const post = `POST /api/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: ${API_KEY}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n`;
    expect(await firstAnswer(address(), post)).toMatch(/^HTTP\/1\.1 100 Continue\r\n/);
  });

  it('answers methods it does not serve with its own 405, and serves its admin listener', async () => {
    const propfind = await request(`${url}/storage/us/plugin-us`, { method: 'PROPFIND', headers: { 'x-api-key': API_KEY } });
    expect(propfind.statusCode).toBe(405);
    expect(await propfind.body.text()).toContain('MethodNotAllowed');

    expect(started).not.toBeNull();
    const admin = started!.admin.server.address() as { port: number };
    const metrics = await request(`http://127.0.0.1:${admin.port}/metrics`);
    const text = await metrics.body.text();
    expect(text).toMatch(/residency_decisions_total\{[^}]*upstream="s3-us"[^}]*decision="allow"/);
    expect(text).toMatch(/residency_decisions_total\{[^}]*upstream="s3-eu"[^}]*decision="block"/);
  });

  it("closes with the app: the admin listener stops and the decision log verifies", async () => {
    const admin = started!.admin.server.address() as { port: number };
    await app.close();
    await expect(request(`http://127.0.0.1:${admin.port}/healthz`)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    const verified = await verifyLogs([logFile]);
    expect(verified.findings.filter((f) => f.severity !== 'note')).toEqual([]);
    expect(verified).toMatchObject({ ok: true });
    expect(verified.records).toBeGreaterThan(decisions().length);
  });
});

describe('100 Continue held for the data plane', () => {
  it('holds it back under every prefix registered on one server, and nowhere else', async () => {
    // A handler that refuses at once, never inviting the body: only a held 100 lets its answer come first.
    const server = createServer((_req, res) => {
      res.writeHead(403, { connection: 'close' });
      res.end();
    });
    holdContinueForDecisions(server, '/first');
    holdContinueForDecisions(server, '/second');
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const port = (server.address() as AddressInfo).port;
      const head = (path: string) => `PUT ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n`;
      expect(await firstAnswer(port, head('/first/b/k'))).toMatch(/^HTTP\/1\.1 403 /);
      expect(await firstAnswer(port, head('/second/b/k'))).toMatch(/^HTTP\/1\.1 403 /);
      expect(await firstAnswer(port, head('/secondary/b/k'))).toMatch(/^HTTP\/1\.1 100 Continue\r\n/);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
