import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, type Duplex } from 'node:stream';
import { crc32 } from 'node:zlib';
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { HttpsProxyAgent } from 'https-proxy-agent';
import { ProxyAgent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startProxy, type RunningProxy } from '../helpers/proxy.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/upstream.js';
import { createTestCa, issueServerCertificate, type TestCa } from '../helpers/test-ca.js';
import { startTlsStandIn, type TlsStandIn } from '../helpers/tls-stand-in.js';
import { openTunnel, rawConnect } from '../helpers/tunnel-client.js';

/**
 * Forward-proxy mode with interception, as unmodified clients use it: they
 * set a proxy (CONNECT) and trust the operator CA. A TLS stand-in answers
 * under real S3 names (a test DNS server sends those names to loopback; its
 * certificate comes from a test "storage" CA the upstream trusts through
 * `ca_file`). Writes to us-east-1 go through byte-exact; writes to
 * eu-west-1 are refused inside the tunnel with S3's own error and nothing
 * reaches the store; a tunnel to a host no upstream serves is refused.
 */

const US = 'bucket.s3.us-east-1.amazonaws.com';
const EU = 'bucket.s3.eu-west-1.amazonaws.com';

describe('forward proxy: HTTPS_PROXY clients through an intercepting tunnel', () => {
  let dir: string;
  let operatorCa: TestCa;
  let dns: TestDnsServer;
  let standIn: TlsStandIn;
  let proxy: RunningProxy;
  let proxyUrl: string;
  /** A plain-HTTP route for one path under the US host: a tunnel's requests must never be sent there. */
  let mirror: RecordingUpstream;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'residency-forward-proxy-'));
    mirror = await startRecordingUpstream();
    operatorCa = await createTestCa({ subject: 'CN=Operator Interception CA' });
    const storageCa = await createTestCa({ subject: 'CN=Test Storage CA' });
    standIn = await startTlsStandIn(await issueServerCertificate(storageCa, [US, EU]));
    dns = await startDnsServer({ [US]: { A: ['127.0.0.1'] }, [EU]: { A: ['127.0.0.1'] } });
    const file = (name: string, text: string) => {
      writeFileSync(join(dir, name), text);
      return join(dir, name);
    };
    proxy = await startProxy({
      dns: { servers: [dns.address] },
      forward_proxy: { ca: { cert_file: file('ca.pem', operatorCa.certPem), key_file: file('ca.key', operatorCa.keyPem) } },
      upstreams: [
        {
          name: 'aws-s3',
          url: `https://{host}:${standIn.port}`,
          provider: 's3',
          route: { host: '*.amazonaws.com' },
          ca_file: file('storage-ca.pem', storageCa.certPem),
        },
        { name: 'legacy-mirror', url: mirror.url, provider: 's3', route: { host: US, path_prefix: '/mirror' }, region: 'us-east-1' },
      ],
      rules: [{ name: 'user-data-writes', match: { operations: ['write'] }, allow_jurisdictions: ['US'] }],
    });
    proxyUrl = proxy.url;
  });

  afterAll(async () => {
    await proxy?.close();
    await mirror?.close();
    await standIn?.close();
    await dns?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const agent = () => new ProxyAgent({ uri: proxyUrl, requestTls: { ca: operatorCa.certPem } });

  it('undici ProxyAgent: an allowed write goes through byte-exact, and its record names the tunnel', async () => {
    const body = Buffer.alloc(3 * 1024 * 1024 + 17, 7);
    const res = await request(`https://${US}:${standIn.port}/photos/cat.jpg`, { method: 'PUT', body, dispatcher: agent() });
    expect(res.statusCode).toBe(200);
    await res.body.dump();
    const got = standIn.received.find((r) => r.url === '/photos/cat.jpg')!;
    expect(got).toMatchObject({ method: 'PUT', host: `${US}:${standIn.port}`, bytes: body.length, sha256: createHash('sha256').update(body).digest('hex') });
    const record = proxy.decisions().find((d) => d.path === '/photos/cat.jpg')!;
    expect(record).toMatchObject({ upstream: 'aws-s3', bucket: 'bucket', decision: 'allow', tunnel: { host: US }, status: 200, bytes_in: body.length });
  });

  it('undici ProxyAgent: a write to eu-west-1 is refused inside the tunnel in S3 format, with nothing sent', async () => {
    const before = standIn.received.length;
    const res = await request(`https://${EU}:${standIn.port}/photos/dog.jpg`, { method: 'PUT', body: 'woof', dispatcher: agent() });
    expect(res.statusCode).toBe(403);
    expect(await res.body.text()).toMatch(/<Code>AccessDenied<\/Code>/);
    expect(standIn.received.length).toBe(before);
    expect(proxy.decisions().find((d) => d.path === '/photos/dog.jpg')).toMatchObject({ decision: 'block', effective: 'refused', tunnel: { host: EU } });
  });

  it('the AWS SDK v3 through a proxy agent: PutObject and GetObject round-trip in us-east-1; eu-west-1 is AccessDenied', async () => {
    const client = (region: string) => sdkThroughProxy(region, standIn.port, proxyUrl, operatorCa.certPem);
    const us = client('us-east-1');
    const body = Buffer.from('hello from the sdk\n'.repeat(1000));
    await us.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'sdk/hello.txt', Body: body }));
    const got = await us.send(new GetObjectCommand({ Bucket: 'bucket', Key: 'sdk/hello.txt' }));
    expect(Buffer.from(await got.Body!.transformToByteArray())).toEqual(body);
    const eu = client('eu-west-1');
    await expect(eu.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'sdk/eu.txt', Body: 'x' }))).rejects.toMatchObject({ name: 'AccessDenied' });
    expect(standIn.received.some((r) => r.url.startsWith('/sdk/eu.txt'))).toBe(false);
    us.destroy();
    eu.destroy();
  });

  it('a CONNECT to a host no upstream serves is refused 403, with a decision record', async () => {
    const answer = await rawConnect(proxy.port, 'example.org:443');
    expect(answer).toMatch(/^HTTP\/1\.1 403 /);
    const id = /x-residency-decision-id: (\S+)/.exec(answer)![1];
    expect(proxy.decisions().find((d) => d.id === id)).toMatchObject({ method: 'CONNECT', path: 'example.org:443', reason: 'tunnel_not_routed', effective: 'refused', status: 403 });
  });

  it('a request inside a tunnel for another host is refused 421', async () => {
    const socket = await openTunnel(proxy.port, US, standIn.port, operatorCa.certPem);
    socket.write(`GET /photos/cat.jpg HTTP/1.1\r\nHost: ${EU}:${standIn.port}\r\nConnection: close\r\n\r\n`);
    let text = '';
    socket.setEncoding('latin1');
    socket.on('data', (t: string) => (text += t));
    await once(socket, 'end');
    expect(text).toMatch(/^HTTP\/1\.1 421 /);
    socket.destroy();
  });

  it("a tunnel's requests go only to its own host over TLS: a route to another upstream is refused 421, with nothing sent", async () => {
    const socket = await openTunnel(proxy.port, US, standIn.port, operatorCa.certPem);
    socket.write(`PUT /mirror/secret.txt HTTP/1.1\r\nHost: ${US}:${standIn.port}\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecret`);
    const text = await readAll(socket);
    expect(text).toMatch(/^HTTP\/1\.1 421 /);
    expect(mirror.requests).toEqual([]);
    expect(standIn.received.some((r) => r.url.includes('secret'))).toBe(false);
  });

  it('a CONNECT inside a tunnel is refused 405 (no nested tunnels)', async () => {
    const socket = await openTunnel(proxy.port, US, standIn.port, operatorCa.certPem);
    socket.write(`CONNECT ${EU}:${standIn.port} HTTP/1.1\r\nHost: ${EU}:${standIn.port}\r\n\r\n`);
    expect(await readAll(socket)).toMatch(/^HTTP\/1\.1 405 /);
  });

  it('a client that does not trust the operator CA fails its handshake; the proxy counts it and lives', async () => {
    await expect(request(`https://${US}:${standIn.port}/x`, { dispatcher: new ProxyAgent({ uri: proxyUrl }) })).rejects.toThrow();
    // A client that closes its connection when the certificate does not verify.
    const stranger = await createTestCa({ subject: 'CN=Some Other CA' });
    await expect(openTunnel(proxy.port, US, standIn.port, stranger.certPem)).rejects.toThrow(/certificate/);
    // The proxy sees the tunnel close just after the client gives up.
    const counted = /residency_tls_handshake_failures_total\{listener="tunnel",reason="[a-z_]+"\} [1-9]/;
    let metrics = '';
    for (let i = 0; i < 40 && !counted.test(metrics); i++) {
      metrics = await (await fetch(`${proxy.adminUrl}/metrics`)).text();
      if (!counted.test(metrics)) await new Promise((r) => setTimeout(r, 50));
    }
    expect(metrics).toMatch(counted);
    const res = await request(`https://${US}:${standIn.port}/photos/cat.jpg`, { dispatcher: agent() });
    expect(res.statusCode).toBe(200);
    await res.body.dump();
  });

  it('the AWS SDK v3 streams a PutObject of known length (aws-chunked, trailing checksum): the store gets the payload and checksum intact', async () => {
    const size = 4 * 1024 * 1024 + 123;
    const payload = Buffer.alloc(size);
    for (let i = 0; i < size; i++) payload[i] = (i * 31 + (i >> 12)) & 0xff;
    const us = sdkThroughProxy('us-east-1', standIn.port, proxyUrl, operatorCa.certPem);
    // 64 KiB pieces from a stream: the SDK cannot buffer or hash it up front, so it streams and checksums on the way.
    const pieces = Array.from({ length: Math.ceil(size / 65536) }, (_, i) => payload.subarray(i * 65536, (i + 1) * 65536));
    await us.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'sdk/stream.bin', Body: Readable.from(pieces), ContentLength: size }));
    us.destroy();

    const got = standIn.received.find((r) => r.url === '/sdk/stream.bin')!;
    expect(got.complete).toBe(true);
    // The SDK (this pinned version) streams a body it cannot hash up front as aws-chunked with a CRC32 trailer.
    expect(got.headers).toMatchObject({ 'content-encoding': expect.stringMatching(/aws-chunked/), 'x-amz-content-sha256': 'STREAMING-UNSIGNED-PAYLOAD-TRAILER' });
    expect(got.headers['x-amz-decoded-content-length']).toBe(String(size));
    // The payload and its checksum arrive as the SDK framed them.
    expect(got.decoded).toMatchObject({ bytes: size, sha256: createHash('sha256').update(payload).digest('hex') });
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(payload));
    expect(got.decoded!.trailers['x-amz-checksum-crc32']).toBe(crc.toString('base64'));
    // Byte-exact: the proxy counted (and sent) exactly what the store received, framing included.
    const record = proxy.decisions().find((d) => d.path === '/sdk/stream.bin')!;
    expect(record).toMatchObject({ decision: 'allow', status: 200, bytes_in: got.bytes, tunnel: { host: US } });
  });

  it('the AWS SDK v3 multipart upload: us-east-1 completes through the tunnel; eu-west-1 is refused at CreateMultipartUpload with nothing sent', async () => {
    const us = sdkThroughProxy('us-east-1', standIn.port, proxyUrl, operatorCa.certPem);
    const parts = [Buffer.alloc(256 * 1024, 1), Buffer.alloc(100 * 1024, 2)];
    const { UploadId } = await us.send(new CreateMultipartUploadCommand({ Bucket: 'bucket', Key: 'sdk/multi.bin' }));
    expect(UploadId).toMatch(/^upload-\d+$/);
    const etags: string[] = [];
    for (const [i, body] of parts.entries()) {
      const { ETag } = await us.send(new UploadPartCommand({ Bucket: 'bucket', Key: 'sdk/multi.bin', UploadId, PartNumber: i + 1, Body: body }));
      etags.push(ETag!);
    }
    const done = await us.send(
      new CompleteMultipartUploadCommand({
        Bucket: 'bucket',
        Key: 'sdk/multi.bin',
        UploadId,
        MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
      }),
    );
    expect(done.ETag).toBe('"standin-multipart"');
    us.destroy();
    const calls = standIn.received.filter((r) => r.url === '/sdk/multi.bin');
    expect(calls.map((r) => `${r.method} ${r.query.replace(/=[^&]*/g, '')}`)).toEqual([
      'POST uploads',
      expect.stringMatching(/^PUT (partNumber&uploadId|uploadId&partNumber)/),
      expect.stringMatching(/^PUT (partNumber&uploadId|uploadId&partNumber)/),
      'POST uploadId',
    ]);
    const records = proxy.decisions().filter((d) => d.path === '/sdk/multi.bin');
    expect(records).toHaveLength(4);
    expect(records.every((d) => d.decision === 'allow' && d.tunnel?.host === US)).toBe(true);

    const before = standIn.received.length;
    const eu = sdkThroughProxy('eu-west-1', standIn.port, proxyUrl, operatorCa.certPem);
    await expect(eu.send(new CreateMultipartUploadCommand({ Bucket: 'bucket', Key: 'sdk/multi-eu.bin' }))).rejects.toMatchObject({ name: 'AccessDenied' });
    eu.destroy();
    expect(standIn.received.length).toBe(before);
    expect(proxy.decisions().find((d) => d.path === '/sdk/multi-eu.bin')).toMatchObject({ decision: 'block', effective: 'refused', bytes_in: 0, tunnel: { host: EU } });
  });
});

/**
 * A forward proxy whose tunnels need Proxy-Authorization (users from a
 * file: startProxy runs in this process, so an environment variable would
 * be this process's), and plain-HTTP clients (HTTP_PROXY style, absolute-form
 * targets) reaching a plain-HTTP store under a host name.
 */
describe('forward proxy: proxy users, and HTTP_PROXY clients', () => {
  const STORAGE = 'bucket.storage.test';
  let dir: string;
  let operatorCa: TestCa;
  let dns: TestDnsServer;
  let standIn: TlsStandIn;
  let plain: RecordingUpstream;
  let proxy: RunningProxy;
  const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'residency-forward-proxy-users-'));
    operatorCa = await createTestCa({ subject: 'CN=Operator Interception CA' });
    const storageCa = await createTestCa({ subject: 'CN=Test Storage CA' });
    standIn = await startTlsStandIn(await issueServerCertificate(storageCa, [US]));
    plain = await startRecordingUpstream();
    dns = await startDnsServer({ [US]: { A: ['127.0.0.1'] }, [STORAGE]: { A: ['127.0.0.1'] }, [`other.storage.test`]: { A: ['127.0.0.1'] } });
    const file = (name: string, text: string) => {
      writeFileSync(join(dir, name), text);
      return join(dir, name);
    };
    proxy = await startProxy({
      dns: { servers: [dns.address] },
      forward_proxy: {
        ca: { cert_file: file('ca.pem', operatorCa.certPem), key_file: file('ca.key', operatorCa.keyPem) },
        users_file: file('users', '# proxy users\nalice:correct horse battery\nbob:staple\n'),
      },
      upstreams: [
        { name: 'aws-s3', url: `https://{host}:${standIn.port}`, provider: 's3', route: { host: '*.amazonaws.com' }, ca_file: file('storage-ca.pem', storageCa.certPem) },
        { name: 'test-storage', url: `http://{host}:${plain.port}`, provider: 'generic', route: { host: '*.storage.test' }, region: 'us-east-1' },
      ],
      rules: [{ name: 'user-data-writes', match: { operations: ['write'] }, allow_jurisdictions: ['US'] }],
      limits: { client_header_timeout_ms: 500 },
    });
  });

  afterAll(async () => {
    await proxy?.close();
    await standIn?.close();
    await plain?.close();
    await dns?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a CONNECT without credentials, or with a wrong password or an unknown user, is answered 407 with Proxy-Authenticate', async () => {
    const attempts: Array<Record<string, string>> = [{}, { 'Proxy-Authorization': basic('alice', 'wrong') }, { 'Proxy-Authorization': basic('mallory', 'staple') }, { 'Proxy-Authorization': 'Bearer abc' }];
    for (const headers of attempts) {
      const answer = await rawConnect(proxy.port, `${US}:${standIn.port}`, headers);
      expect(answer).toMatch(/^HTTP\/1\.1 407 /);
      expect(answer).toMatch(/\r\nproxy-authenticate: Basic realm="residency-proxy"\r\n/i);
    }
  });

  it('the right credentials open the tunnel, and its requests are recorded with the proxy user', async () => {
    const agent = new ProxyAgent({ uri: proxy.url, token: basic('alice', 'correct horse battery'), requestTls: { ca: operatorCa.certPem } });
    const res = await request(`https://${US}:${standIn.port}/users/alice.txt`, { method: 'PUT', body: 'from alice', dispatcher: agent });
    expect(res.statusCode).toBe(200);
    await res.body.dump();
    await agent.close();
    // A raw client too: the header as a client writes it.
    const secure = await openTunnel(proxy.port, US, standIn.port, operatorCa.certPem, { 'Proxy-Authorization': basic('bob', 'staple') });
    secure.write(`PUT /users/bob.txt HTTP/1.1\r\nHost: ${US}:${standIn.port}\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbob`);
    let text = '';
    secure.setEncoding('latin1');
    secure.on('data', (t: string) => (text += t));
    await once(secure, 'close');
    expect(text).toMatch(/^HTTP\/1\.1 200 /);
    expect(proxy.decisions().find((d) => d.path === '/users/alice.txt')).toMatchObject({ decision: 'allow', tunnel: { host: US, user: 'alice' } });
    expect(proxy.decisions().find((d) => d.path === '/users/bob.txt')).toMatchObject({ decision: 'allow', tunnel: { host: US, user: 'bob' } });
    // The credentials stop at the proxy.
    expect(standIn.received.filter((r) => r.url.startsWith('/users/')).every((r) => r.headers['proxy-authorization'] === undefined)).toBe(true);
  });

  it('an absolute-form http:// write (HTTP_PROXY) is decided, recorded and forwarded to the host it names', async () => {
    // proxyTunnel: false makes undici send `PUT http://host/path` to the proxy instead of a CONNECT.
    const agent = new ProxyAgent({ uri: proxy.url, proxyTunnel: false, token: basic('alice', 'correct horse battery') });
    const body = Buffer.alloc(200_000, 5);
    const res = await request(`http://${STORAGE}:${plain.port}/docs/report.pdf`, { method: 'PUT', body, dispatcher: agent });
    expect(res.statusCode).toBe(200);
    await res.body.dump();
    await agent.close();
    const got = plain.requests.find((r) => r.url === '/docs/report.pdf')!;
    expect(got).toMatchObject({ method: 'PUT', complete: true, bodyBytes: body.length, bodySha256: createHash('sha256').update(body).digest('hex') });
    expect(got.headers.host).toBe(`${STORAGE}:${plain.port}`);
    expect(got.headers['proxy-authorization']).toBeUndefined();
    const record = proxy.decisions().find((d) => d.path === '/docs/report.pdf');
    expect(record).toMatchObject({ upstream: 'test-storage', decision: 'allow', status: 200, bytes_in: body.length });
    expect(record?.tunnel).toBeUndefined();
  });

  it('an absolute-form write without proxy credentials is answered 407, with nothing sent', async () => {
    const before = plain.requests.length;
    const socket = connect(proxy.port, '127.0.0.1');
    socket.end(`PUT http://${STORAGE}:${plain.port}/docs/anonymous.txt HTTP/1.1\r\nHost: ${STORAGE}:${plain.port}\r\nContent-Length: 2\r\n\r\nhi`);
    const text = await readAll(socket);
    expect(text).toMatch(/^HTTP\/1\.1 407 /);
    expect(text).toMatch(/\r\nproxy-authenticate: Basic realm="residency-proxy"\r\n/i);
    expect(plain.requests.length).toBe(before);
  });

  it('a tunnel that sends no request, or only part of a head, is closed after limits.client_header_timeout_ms', async () => {
    const auth = { 'Proxy-Authorization': basic('bob', 'staple') };
    const idle = await openTunnel(proxy.port, US, standIn.port, operatorCa.certPem, auth);
    const partial = await openTunnel(proxy.port, US, standIn.port, operatorCa.certPem, auth);
    partial.write(`GET /slow HTTP/1.1\r\nHost: ${US}:${standIn.port}\r\n`);
    const started = Date.now();
    const [idleText, partialText] = await Promise.all([readAll(idle), readAll(partial)]);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(partialText).toMatch(/^HTTP\/1\.1 408 /);
    expect(idleText === '' || /^HTTP\/1\.1 408 /.test(idleText)).toBe(true);
  });

  it('an absolute-form target whose Host header names another host is refused 400, with nothing sent', async () => {
    const before = plain.requests.length;
    const socket = connect(proxy.port, '127.0.0.1');
    socket.end(
      `PUT http://${STORAGE}:${plain.port}/docs/sneaky.txt HTTP/1.1\r\nHost: other.storage.test:${plain.port}\r\nProxy-Authorization: ${basic('bob', 'staple')}\r\nContent-Length: 2\r\n\r\nhi`,
    );
    let text = '';
    socket.setEncoding('latin1');
    socket.on('data', (t: string) => (text += t));
    await once(socket, 'close');
    expect(text).toMatch(/^HTTP\/1\.1 400 /);
    expect(text).toMatch(/bad_absolute_target/);
    expect(plain.requests.length).toBe(before);
  });
});

/** Everything a connection sends until it closes, as text. */
async function readAll(socket: Duplex): Promise<string> {
  let text = '';
  socket.setEncoding('latin1');
  socket.on('data', (t: string) => (text += t));
  socket.on('error', () => {});
  await once(socket, 'close');
  return text;
}

/**
 * https-proxy-agent for the SDK, trusting `ca` for the tunnelled TLS (what
 * NODE_EXTRA_CA_CERTS does for a whole process, which a test cannot set for itself).
 */
class TrustingProxyAgent extends HttpsProxyAgent<string> {
  constructor(
    proxy: string,
    private readonly ca: string,
  ) {
    super(proxy);
  }

  override connect(req: Parameters<HttpsProxyAgent<string>['connect']>[0], opts: Parameters<HttpsProxyAgent<string>['connect']>[1]) {
    return super.connect(req, { ...opts, ca: this.ca } as typeof opts);
  }
}

/** An S3 client for `region` reaching the stand-in's port through the forward proxy, trusting the operator CA. */
function sdkThroughProxy(region: string, port: number, proxyUrl: string, ca: string): S3Client {
  return new S3Client({
    region,
    endpoint: `https://s3.${region}.amazonaws.com:${port}`,
    credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'secret' },
    requestHandler: new NodeHttpHandler({ httpsAgent: new TrustingProxyAgent(proxyUrl, ca) }),
  });
}

describe('forward proxy: forward_proxy.max_tunnels bounds the tunnels clients can hold open', () => {
  let dir: string;
  let operatorCa: TestCa;
  let dns: TestDnsServer;
  let standIn: TlsStandIn;
  let proxy: RunningProxy;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'residency-forward-proxy-limit-'));
    operatorCa = await createTestCa({ subject: 'CN=Operator Interception CA' });
    const storageCa = await createTestCa({ subject: 'CN=Test Storage CA' });
    standIn = await startTlsStandIn(await issueServerCertificate(storageCa, [US]));
    dns = await startDnsServer({ [US]: { A: ['127.0.0.1'] } });
    const file = (name: string, text: string) => {
      writeFileSync(join(dir, name), text);
      return join(dir, name);
    };
    proxy = await startProxy({
      dns: { servers: [dns.address] },
      forward_proxy: { ca: { cert_file: file('ca.pem', operatorCa.certPem), key_file: file('ca.key', operatorCa.keyPem) }, max_tunnels: 2 },
      upstreams: [{ name: 'aws-s3', url: `https://{host}:${standIn.port}`, provider: 's3', route: { host: '*.amazonaws.com' }, ca_file: file('storage-ca.pem', storageCa.certPem) }],
      rules: [{ name: 'user-data-writes', match: { operations: ['write'] }, allow_jurisdictions: ['US'] }],
    });
  });

  afterAll(async () => {
    await proxy?.close();
    await standIn?.close();
    await dns?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('past the limit a CONNECT gets 503 with Retry-After; a closed tunnel makes room again', async () => {
    const first = await openTunnel(proxy.port, US, standIn.port, operatorCa.certPem);
    const second = await openTunnel(proxy.port, US, standIn.port, operatorCa.certPem);
    try {
      const refused = await rawConnect(proxy.port, `${US}:${standIn.port}`);
      expect(refused).toMatch(/^HTTP\/1\.1 503 /);
      expect(refused).toMatch(/\r\nretry-after: 1\r\n/i);
      expect(refused).toMatch(/\r\nx-residency-error: RESIDENCY_ERR_TUNNEL_LIMIT\r\n/i);
      const metrics = await (await request(`${proxy.adminUrl}/metrics`)).body.text();
      expect(metrics).toMatch(/residency_rejected_requests_total\{code="tunnel_limit"\} 1/);
      expect(metrics).toMatch(/residency_tunnels_open 2/);

      first.destroy();
      // The proxy sees the close a moment after the client does.
      await vi.waitFor(async () => expect(await (await request(`${proxy.adminUrl}/metrics`)).body.text()).toMatch(/residency_tunnels_open 1/), { timeout: 2000, interval: 20 });
      const third = await openTunnel(proxy.port, US, standIn.port, operatorCa.certPem);
      third.destroy();
    } finally {
      first.destroy();
      second.destroy();
    }
  });
});
