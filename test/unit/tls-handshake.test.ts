// Real TLS handshakes over loopback with certificates from the minter and the test CA.
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadInterceptionCa } from '../../src/tls/interception-ca.js';
import { CertificateMinter } from '../../src/tls/minter.js';
import { createTestCa, issueServerCertificate, type TestCa } from '../helpers/test-ca.js';

const S3 = 'bucket.s3.eu-west-1.amazonaws.com';
const AZURE = 'acct.blob.core.windows.net';

interface Outcome {
  authorized: boolean;
  error?: string;
  alpn?: string | false | null;
  reply?: string;
}

/** Connect, read the server's greeting, and say how the handshake went. */
function connect(port: number, options: tls.ConnectionOptions): Promise<Outcome> {
  return new Promise((resolve) => {
    const client = tls.connect({ port, host: '127.0.0.1', ALPNProtocols: ['http/1.1'], ...options });
    client.once('error', (err: NodeJS.ErrnoException) => resolve({ authorized: false, error: err.code ?? err.message }));
    client.once('secureConnect', () => {
      client.setEncoding('utf8');
      client.once('data', (reply: string) => {
        resolve({ authorized: client.authorized, alpn: client.alpnProtocol, reply });
        client.destroy();
      });
    });
  });
}

/** A TLS server on a loopback port that greets each client with "hello". */
async function listen(options: tls.TlsOptions): Promise<{ port: number; server: tls.Server }> {
  const server = tls.createServer({ ALPNProtocols: ['http/1.1'], ...options }, (socket) => socket.end('hello'));
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, server };
}

let testCa: TestCa;
let minted: { port: number; server: tls.Server };
let upstream: { port: number; server: tls.Server };

beforeAll(async () => {
  testCa = await createTestCa();
  const minter = new CertificateMinter({ ca: loadInterceptionCa({ cert_env: 'C', key_env: 'K' }, { C: testCa.certPem, K: testCa.keyPem }) });
  minted = await listen({
    SNICallback: (servername, done) => {
      minter.secureContext(servername).then((context) => done(null, context), done);
    },
  });
  const { certPem, keyPem } = await issueServerCertificate(testCa, [S3, AZURE]);
  upstream = await listen({ cert: certPem, key: keyPem });
});

afterAll(async () => {
  await Promise.all([minted, upstream].map(({ server }) => new Promise((resolve) => server.close(resolve))));
});

describe('TLS with minted certificates', () => {
  it('is trusted by a client that trusts the CA, with ALPN http/1.1', async () => {
    for (const servername of [S3, AZURE]) {
      expect(await connect(minted.port, { servername, ca: testCa.certPem })).toEqual({ authorized: true, alpn: 'http/1.1', reply: 'hello' });
    }
  });

  it('is refused by a client that does not trust the CA', async () => {
    const outcome = await connect(minted.port, { servername: S3 });
    expect(outcome.authorized).toBe(false);
    expect(outcome.error).toBe('SELF_SIGNED_CERT_IN_CHAIN');
  });

  it('fails the handshake for a name no certificate is minted for', async () => {
    const outcome = await connect(minted.port, { servername: 'bad_name.example.com', ca: testCa.certPem });
    expect(outcome.authorized).toBe(false);
    expect(outcome.error).toBeDefined();
  });
});

describe('issueServerCertificate (TLS stand-in upstreams)', () => {
  it('serves every name it was issued for', async () => {
    for (const servername of [S3, AZURE]) {
      expect(await connect(upstream.port, { servername, ca: testCa.certPem })).toMatchObject({ authorized: true, reply: 'hello' });
    }
    expect((await connect(upstream.port, { servername: 'other.example.com', ca: testCa.certPem })).error).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
  });
});
