import { once } from 'node:events';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertBuilt, proxyConfig, runCli, serve, writeConfig, type ServedProxy } from '../helpers/audit-serve.js';
import { metricValue } from '../helpers/metrics.js';
import { decisionsOf } from '../helpers/proxy.js';
import { createTestCa, issueServerCertificate, type TestCa } from '../helpers/test-ca.js';
import { captureClientHello } from '../helpers/tunnel-client.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/upstream.js';

/**
 * HTTPS on the data plane (`listen.tls`), through `serve` as a child
 * process: the certificate chosen by SNI, ALPN, requests decided and
 * recorded as over plain HTTP, certificates reloaded when their files are
 * replaced (and kept when the new files are bad), config problems named by
 * check-config, and clients that botch the handshake counted, never fatal.
 */

const S3 = 's3.us-east-1.amazonaws.com';
const INTERNAL = 'proxy.internal';
const DAY = 24 * 3600_000;

interface Handshake {
  certificate: X509Certificate;
  alpn: string | false | null;
}

/** A TLS handshake with the proxy (no SNI when `servername` is undefined), trusting `ca`; the name is not checked, the chain is. */
async function handshake(port: number, ca: string[], servername?: string): Promise<Handshake> {
  const socket = tls.connect({
    host: '127.0.0.1',
    port,
    ca,
    ...(servername === undefined ? {} : { servername }),
    ALPNProtocols: ['h2', 'http/1.1'],
    checkServerIdentity: () => undefined,
  });
  try {
    await once(socket, 'secureConnect');
    return { certificate: socket.getPeerX509Certificate()!, alpn: socket.alpnProtocol };
  } finally {
    socket.destroy();
  }
}

/** One HTTPS request to the proxy under `servername`; the status, decision id and body. */
function httpsSend(port: number, ca: string, servername: string, method: string, path: string, body: string | null) {
  return new Promise<{ status: number; decisionId: string | undefined; body: string }>((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, servername, ca, method, path, agent: false, headers: body === null ? {} : { 'content-length': Buffer.byteLength(body) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (t: string) => (text += t));
      res.on('end', () => resolve({ status: res.statusCode!, decisionId: res.headers['x-residency-decision-id'] as string | undefined, body: text }));
    });
    req.on('error', reject);
    req.end(body ?? undefined);
  });
}

async function until(ok: () => boolean | Promise<boolean>, timeoutMs = 5_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!(await ok())) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

/** Write next to `path`, then rename over it: a reader sees the old file or the new one, never half of one (as cert-manager and kubelet do). */
function replaceFile(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
}

describe('listen.tls: HTTPS on the data plane', () => {
  let dir: string;
  let certs: string;
  let ca: TestCa;
  let upstream: RecordingUpstream;
  let proxy: ServedProxy;
  let s3: { certPem: string; keyPem: string };
  let internal: { certPem: string; keyPem: string };

  const fingerprint = (pem: string) => new X509Certificate(pem).fingerprint256;
  const decisions = () => (existsSync(join(dir, 'decisions.log')) ? decisionsOf(readFileSync(join(dir, 'decisions.log'), 'utf8')) : []);

  beforeAll(async () => {
    assertBuilt();
    dir = mkdtempSync(join(tmpdir(), 'residency-tls-listener-'));
    certs = join(dir, 'certs');
    mkdirSync(certs);
    ca = await createTestCa({ subject: 'CN=Data Plane Test CA' });
    s3 = await issueServerCertificate(ca, [S3]);
    internal = await issueServerCertificate(ca, [INTERNAL]);
    writeFileSync(join(certs, 's3.pem'), s3.certPem);
    writeFileSync(join(certs, 's3.key'), s3.keyPem);
    writeFileSync(join(certs, 'internal.pem'), internal.certPem);
    writeFileSync(join(certs, 'internal.key'), internal.keyPem);
    upstream = await startRecordingUpstream();
    const config = proxyConfig(
      upstream.url,
      { path: join(dir, 'decisions.log') },
      {
        listen: {
          host: '127.0.0.1',
          port: 0,
          // Relative paths: relative to the config file's directory.
          tls: { certificates: [{ cert_file: 'certs/s3.pem', key_file: 'certs/s3.key' }, { cert_file: 'certs/internal.pem', key_file: 'certs/internal.key' }] },
        },
      },
    );
    proxy = await serve(writeConfig(dir, 'proxy.yaml', config));
  });

  afterAll(async () => {
    await proxy?.kill('SIGTERM');
    await upstream?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves the certificate naming the SNI host, the first one without SNI, and http/1.1 through ALPN', async () => {
    const forS3 = await handshake(proxy.port, [ca.certPem], S3);
    expect(forS3.certificate.fingerprint256).toBe(fingerprint(s3.certPem));
    expect(forS3.certificate.subject).toBe(`CN=${S3}`);
    expect(forS3.certificate.subjectAltName).toBe(`DNS:${S3}`);
    // Offered h2 first: the proxy speaks HTTP/1.1 only, and says so.
    expect(forS3.alpn).toBe('http/1.1');

    const forInternal = await handshake(proxy.port, [ca.certPem], INTERNAL);
    expect(forInternal.certificate.fingerprint256).toBe(fingerprint(internal.certPem));
    expect(forInternal.certificate.subjectAltName).toBe(`DNS:${INTERNAL}`);

    const noSni = await handshake(proxy.port, [ca.certPem]);
    expect(noSni.certificate.fingerprint256).toBe(fingerprint(s3.certPem));
    // A name no certificate has: the first, too.
    expect((await handshake(proxy.port, [ca.certPem], 'elsewhere.example')).certificate.fingerprint256).toBe(fingerprint(s3.certPem));
  });

  it('an HTTPS PUT and GET reach the plain-HTTP upstream, decided and recorded as usual; an EU write is refused', async () => {
    const put = await httpsSend(proxy.port, ca.certPem, INTERNAL, 'PUT', '/us/bucket/tls.txt', 'over tls');
    expect(put.status).toBe(200);
    const got = upstream.requests.find((r) => r.method === 'PUT' && r.url === '/bucket/tls.txt')!;
    expect(got.bodyHead.toString()).toBe('over tls');
    const get = await httpsSend(proxy.port, ca.certPem, INTERNAL, 'GET', '/us/bucket/tls.txt', null);
    expect(get.status).toBe(200);
    const refused = await httpsSend(proxy.port, ca.certPem, S3, 'PUT', '/eu/bucket/tls.txt', 'no');
    expect(refused.status).toBe(403);
    expect(upstream.requests.some((r) => r.method === 'PUT' && r.url === '/bucket/tls.txt' && r.index > got.index)).toBe(false);
    expect(await until(() => decisions().some((d) => d.id === refused.decisionId))).toBe(true);
    const byId = new Map(decisions().map((d) => [d.id, d]));
    expect(byId.get(put.decisionId!)).toMatchObject({ upstream: 'us', method: 'PUT', decision: 'allow', reason: 'jurisdiction_allowed' });
    expect(byId.get(get.decisionId!)).toMatchObject({ upstream: 'us', method: 'GET', decision: 'allow', reason: 'read_allowed' });
    expect(byId.get(refused.decisionId!)).toMatchObject({ upstream: 'eu', decision: 'block', effective: 'refused' });
    expect(byId.get(put.decisionId!)?.tunnel).toBeUndefined();
  });

  it('reloads a certificate replaced on disk; a replacement whose key does not match is refused and the old one kept', async () => {
    const otherCa = await createTestCa({ subject: 'CN=Renewed Test CA' });
    const renewed = await issueServerCertificate(otherCa, [S3]);
    const trusted = [ca.certPem, otherCa.certPem];
    replaceFile(join(certs, 's3.key'), renewed.keyPem);
    replaceFile(join(certs, 's3.pem'), renewed.certPem);
    // New connections get the new certificate within a few seconds; the process serves throughout.
    expect(await until(async () => (await handshake(proxy.port, trusted, S3)).certificate.fingerprint256 === fingerprint(renewed.certPem))).toBe(true);
    expect(proxy.logs.some((l) => l.msg === 'data plane TLS certificates reloaded')).toBe(true);
    // The default (no SNI) is the new first certificate too; the second is unchanged.
    expect((await handshake(proxy.port, trusted)).certificate.fingerprint256).toBe(fingerprint(renewed.certPem));
    expect((await handshake(proxy.port, trusted, INTERNAL)).certificate.fingerprint256).toBe(fingerprint(internal.certPem));
    expect((await httpsSend(proxy.port, otherCa.certPem, S3, 'GET', '/us/bucket/tls.txt', null)).status).toBe(200);

    // A key from another certificate: the reload fails, loudly, and the renewed certificate stays.
    replaceFile(join(certs, 's3.key'), (await issueServerCertificate(otherCa, [S3])).keyPem);
    expect(await until(() => proxy.logs.some((l) => l.msg === 'data plane TLS certificates not reloaded: the previous ones stay in use'))).toBe(true);
    const failure = proxy.logs.find((l) => l.msg === 'data plane TLS certificates not reloaded: the previous ones stay in use')!;
    expect(String(failure.err)).toMatch(/listen\.tls\.certificates\[0\]\.key_file/);
    expect(String(failure.err)).not.toMatch(/PRIVATE KEY/);
    expect((await handshake(proxy.port, trusted, S3)).certificate.fingerprint256).toBe(fingerprint(renewed.certPem));
    expect((await httpsSend(proxy.port, otherCa.certPem, S3, 'GET', '/us/bucket/tls.txt', null)).status).toBe(200);
    expect(proxy.child.exitCode).toBeNull();
  });

  it('plain HTTP to the TLS port and a client reset mid-handshake are counted, and the process keeps serving', async () => {
    const failures = (reason?: string) => metricValue(proxy.adminPort, 'residency_tls_handshake_failures_total', { listener: 'data_plane', ...(reason ? { reason } : {}) });
    const total = async () => {
      const text = await (await fetch(`http://127.0.0.1:${proxy.adminPort}/metrics`)).text();
      return [...text.matchAll(/^residency_tls_handshake_failures_total\{[^}]*listener="data_plane"[^}]*\} (\S+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
    };
    const before = await total();

    // Plain HTTP: the proxy cannot answer in HTTP (it only knows this is not TLS), so it closes.
    const plain = connect(proxy.port, '127.0.0.1');
    plain.on('error', () => {});
    plain.write('GET /us/bucket/tls.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    plain.resume();
    await once(plain, 'close');

    // Half a ClientHello, then a reset.
    const hello = await captureClientHello(INTERNAL);
    const cut = connect(proxy.port, '127.0.0.1');
    cut.on('error', () => {});
    await once(cut, 'connect');
    cut.write(hello.subarray(0, Math.floor(hello.length / 2)));
    await new Promise((r) => setTimeout(r, 50));
    cut.resetAndDestroy();
    await once(cut, 'close');

    expect(await until(async () => (await total()) >= before + 2)).toBe(true);
    expect(await failures('client_reset')).toBeGreaterThanOrEqual(1);
    expect(proxy.child.exitCode).toBeNull();
    expect((await httpsSend(proxy.port, ca.certPem, INTERNAL, 'GET', '/us/bucket/tls.txt', null)).status).toBe(200);
  });
});

describe('check-config names every TLS file problem', () => {
  let dir: string;
  let ca: TestCa;
  let upstream: RecordingUpstream;

  beforeAll(async () => {
    assertBuilt();
    dir = mkdtempSync(join(tmpdir(), 'residency-tls-check-'));
    ca = await createTestCa();
    upstream = await startRecordingUpstream();
  });
  afterAll(async () => {
    await upstream?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const file = (name: string, text: string) => {
    writeFileSync(join(dir, name), text);
    return join(dir, name);
  };
  /** check-config on `extra` (over the usual test config): its exit status and the problem lines (one per problem). */
  const check = (name: string, extra: Record<string, unknown>) => {
    const config = writeConfig(dir, name, proxyConfig(upstream.url, { path: join(dir, 'decisions.log') }, extra));
    const run = runCli(['check-config', '--config', config]);
    return { status: run.status, lines: run.stderr.split('\n').filter((l) => l.startsWith(`${config}: `)), stderr: run.stderr };
  };

  it('listen.tls: an unreadable cert file, a key that does not match, an expired certificate and a file with no PEM, one line each', async () => {
    const good = await issueServerCertificate(ca, [S3]);
    const other = await issueServerCertificate(ca, [S3]);
    // A self-signed certificate that expired yesterday (the test CA options take past dates).
    const expired = await createTestCa({ subject: `CN=${S3}`, notBefore: new Date(Date.now() - 30 * DAY), notAfter: new Date(Date.now() - DAY) });
    const { status, lines, stderr } = check('bad-listen.yaml', {
      listen: {
        host: '127.0.0.1',
        port: 0,
        tls: {
          certificates: [
            { cert_file: join(dir, 'missing.pem'), key_file: file('good.key', good.keyPem) },
            { cert_file: file('good.pem', good.certPem), key_file: file('other.key', other.keyPem) },
            { cert_file: file('expired.pem', expired.certPem), key_file: file('expired.key', expired.keyPem) },
            { cert_file: file('not-pem.pem', 'this is not a certificate\n'), key_file: file('good2.key', good.keyPem) },
          ],
        },
      },
    });
    expect(status).toBe(1);
    expect(lines, stderr).toHaveLength(4);
    expect(lines[0]).toMatch(/listen\.tls\.certificates\[0\]\.cert_file: .*missing\.pem: ENOENT/);
    expect(lines[1]).toMatch(/listen\.tls\.certificates\[1\]\.key_file: .*is not the key of the certificate/);
    expect(lines[2]).toMatch(/listen\.tls\.certificates\[2\]\.cert_file: .*expired on/);
    expect(lines[3]).toMatch(/listen\.tls\.certificates\[3\]\.cert_file: .*holds no PEM certificate/);
    // Never the key itself.
    expect(stderr).not.toMatch(/PRIVATE KEY/);
  });

  it('forward_proxy.ca and upstreams[N].ca_file: each problem names its key', async () => {
    const other = await createTestCa();
    const expiredCa = await createTestCa({ notBefore: new Date(Date.now() - 30 * DAY), notAfter: new Date(Date.now() - DAY) });
    const upstreams = [
      { name: 'us', url: upstream.url, provider: 's3', route: { path_prefix: '/us', strip_prefix: true }, region: 'us-east-1' },
      { name: 'aws-s3', url: 'https://{host}', provider: 's3', route: { host: '*.amazonaws.com' }, ca_file: join(dir, 'no-such-ca.pem') },
    ];
    const cases: Array<[string, Record<string, string>, RegExp]> = [
      ['unreadable cert', { cert_file: join(dir, 'no-ca.pem'), key_file: file('ca.key', ca.keyPem) }, /forward_proxy\.ca\.cert_file: cannot read ".*no-ca\.pem": ENOENT/],
      ['key of another CA', { cert_file: file('ca.pem', ca.certPem), key_file: file('other-ca.key', other.keyPem) }, /forward_proxy\.ca\.key_file: the private key does not match/],
      ['expired', { cert_file: file('expired-ca.pem', expiredCa.certPem), key_file: file('expired-ca.key', expiredCa.keyPem) }, /forward_proxy\.ca\.cert_file: the CA certificate expired on/],
      ['no PEM', { cert_file: file('junk-ca.pem', 'junk\n'), key_file: file('ca2.key', ca.keyPem) }, /forward_proxy\.ca\.cert_file: not a PEM certificate/],
    ];
    for (const [name, caFiles, expected] of cases) {
      const { status, lines, stderr } = check(`bad-ca-${name.replace(/ /g, '-')}.yaml`, { forward_proxy: { ca: caFiles }, upstreams });
      expect(status, name).toBe(1);
      // The CA problem and the missing upstream bundle, one line each.
      expect(lines, stderr).toHaveLength(2);
      expect(lines.find((l) => l.includes('forward_proxy.ca')), name).toMatch(expected);
      expect(lines.find((l) => l.includes('upstreams[1].ca_file')), name).toMatch(/no-such-ca\.pem: ENOENT/);
    }
  });
});
