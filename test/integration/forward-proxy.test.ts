import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { HttpsProxyAgent } from 'https-proxy-agent';
import { ProxyAgent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startProxy, type RunningProxy } from '../helpers/proxy.js';
import { createTestCa, issueServerCertificate, type TestCa } from '../helpers/test-ca.js';

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

interface Received {
  method: string;
  url: string;
  host: string;
  bytes: number;
  sha256: string;
}

/** An HTTPS store stand-in: records what it receives (hash and size, never the whole body), answers 200 with the body's ETag. */
async function startStandIn(cert: { certPem: string; keyPem: string }) {
  const received: Received[] = [];
  const objects = new Map<string, Buffer>();
  const server = https.createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    const hash = createHash('sha256');
    const chunks: Buffer[] = [];
    let bytes = 0;
    req.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      bytes += chunk.length;
      if (bytes <= 1 << 20) chunks.push(chunk);
    });
    req.on('end', () => {
      received.push({ method: req.method!, url: req.url!.split('?')[0]!, host: req.headers.host ?? '', bytes, sha256: hash.digest('hex') });
      const key = `${req.headers.host}${req.url!.split('?')[0]}`;
      if (req.method === 'PUT') objects.set(key, Buffer.concat(chunks));
      const body = req.method === 'GET' ? (objects.get(key) ?? Buffer.alloc(0)) : Buffer.alloc(0);
      res.writeHead(200, { etag: '"standin"', 'content-length': body.length });
      res.end(body);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port, received };
}

describe('forward proxy: HTTPS_PROXY clients through an intercepting tunnel', () => {
  let dir: string;
  let operatorCa: TestCa;
  let dns: TestDnsServer;
  let standIn: Awaited<ReturnType<typeof startStandIn>>;
  let proxy: RunningProxy;
  let proxyUrl: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'residency-forward-proxy-'));
    operatorCa = await createTestCa({ subject: 'CN=Operator Interception CA' });
    const storageCa = await createTestCa({ subject: 'CN=Test Storage CA' });
    standIn = await startStandIn(await issueServerCertificate(storageCa, [US, EU]));
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
      ],
      rules: [{ name: 'user-data-writes', match: { operations: ['write'] }, allow_jurisdictions: ['US'] }],
    });
    proxyUrl = proxy.url;
  });

  afterAll(async () => {
    await proxy?.close();
    standIn?.server.close();
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
    const client = (region: string) =>
      new S3Client({
        region,
        endpoint: `https://s3.${region}.amazonaws.com:${standIn.port}`,
        credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'secret' },
        requestHandler: new NodeHttpHandler({ httpsAgent: new TrustingProxyAgent(proxyUrl, operatorCa.certPem) }),
      });
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
});

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

/** Send a CONNECT and return the whole answer (the proxy closes refused tunnels). */
async function rawConnect(port: number, authority: string): Promise<string> {
  const socket = connect(port, '127.0.0.1');
  socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  let text = '';
  socket.setEncoding('latin1');
  socket.on('data', (t: string) => (text += t));
  await once(socket, 'close');
  return text;
}

/** A TLS connection through a tunnel to `host:port`, trusting `ca`. */
async function openTunnel(proxyPort: number, host: string, port: number, ca: string): Promise<tls.TLSSocket> {
  const raw = connect(proxyPort, '127.0.0.1');
  raw.write(`CONNECT ${host}:${port} HTTP/1.1\r\nHost: ${host}:${port}\r\n\r\n`);
  const [head] = (await once(raw, 'data')) as [Buffer];
  if (!head.toString('latin1').startsWith('HTTP/1.1 200')) throw new Error(`tunnel refused: ${head.toString('latin1')}`);
  const secure = tls.connect({ socket: raw, servername: host, ca });
  try {
    await once(secure, 'secureConnect');
  } catch (err) {
    secure.destroy();
    throw err;
  }
  return secure;
}
