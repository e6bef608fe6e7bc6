import { X509Certificate } from 'node:crypto';
import net from 'node:net';
import tls, { type SecureContext } from 'node:tls';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadInterceptionCa, type InterceptionCa } from '../../src/tls/interception-ca.js';
import { CertificateMinter, InvalidHostnameError, type MinterOptions } from '../../src/tls/minter.js';
import { x509 } from '../../src/tls/x509.js';
import { createTestCa, type TestCaOptions } from '../helpers/test-ca.js';

const lib = x509();

const HOUR = 3600_000;
const S3 = 'bucket.s3.eu-west-1.amazonaws.com';
// Whole seconds: certificate times have no milliseconds.
const T0 = Math.floor(Date.now() / 1000) * 1000;

async function testCa(options?: TestCaOptions): Promise<InterceptionCa> {
  const { certPem, keyPem } = await createTestCa(options);
  return loadInterceptionCa({ cert_env: 'C', key_env: 'K' }, { C: certPem, K: keyPem });
}

let ca: InterceptionCa;
beforeAll(async () => {
  ca = await testCa();
});

/** The certificates a TLS client is sent by a server using `context` (no SNI needed: IP literals too). */
async function served(context: SecureContext): Promise<X509Certificate[]> {
  const server = net.createServer((socket) => {
    const secure = new tls.TLSSocket(socket, { isServer: true, secureContext: context });
    secure.on('error', () => secure.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const { port } = server.address() as net.AddressInfo;
    const client = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false });
    await new Promise<void>((resolve, reject) => client.once('secureConnect', resolve).once('error', reject));
    const chain: X509Certificate[] = [];
    for (let c = client.getPeerCertificate(true); c.raw !== undefined; c = c.issuerCertificate) {
      chain.push(new X509Certificate(c.raw));
      if (c.issuerCertificate === c) break;
    }
    client.destroy();
    return chain;
  } finally {
    server.close();
  }
}

async function mint(minter: CertificateMinter, hostname: string): Promise<X509Certificate> {
  return (await served(await minter.secureContext(hostname)))[0]!;
}

function counting(options: Partial<MinterOptions> = {}) {
  const mints: string[] = [];
  let hits = 0;
  const minter = new CertificateMinter({ ca, onMint: (host) => mints.push(host), onHit: () => hits++, ...options });
  return { minter, mints, hits: () => hits };
}

describe('CertificateMinter: the certificate', () => {
  it('is a server certificate for the host, issued by the CA, with the CA as chain', async () => {
    const minter = new CertificateMinter({ ca, now: () => T0 });
    const [leaf, chained] = await served(await minter.secureContext(S3));
    expect(chained?.fingerprint256).toBe(ca.certificate.fingerprint256);
    expect(leaf!.checkIssued(ca.certificate)).toBe(true);
    expect(leaf!.verify(ca.certificate.publicKey)).toBe(true);
    expect(leaf!.subject).toBe(`CN=${S3}`);
    expect(leaf!.issuer).toBe(ca.certificate.subject);
    expect(leaf!.subjectAltName).toBe(`DNS:${S3}`);
    expect(leaf!.keyUsage).toEqual([lib.ExtendedKeyUsage.serverAuth]);
    expect(leaf!.ca).toBe(false);
    expect(leaf!.checkHost(S3)).toBe(S3);
    expect(leaf!.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    // Clock skew: valid from an hour ago, for 24 h by default.
    expect(new Date(leaf!.validFrom).getTime()).toBe(T0 - HOUR);
    expect(new Date(leaf!.validTo).getTime()).toBe(T0 + 24 * HOUR);

    const parsed = new lib.X509Certificate(leaf!.raw);
    const caParsed = new lib.X509Certificate(ca.certificate.raw);
    expect(parsed.serialNumber).toMatch(/^[4-7][0-9a-f]{31}$/);
    expect(parsed.signatureAlgorithm).toMatchObject({ name: 'ECDSA', hash: { name: 'SHA-256' } });
    const keyUsage = parsed.getExtension(lib.KeyUsagesExtension)!;
    expect([keyUsage.critical, keyUsage.usages]).toEqual([true, lib.KeyUsageFlags.digitalSignature]);
    const constraints = parsed.getExtension(lib.BasicConstraintsExtension)!;
    expect([constraints.critical, constraints.ca]).toEqual([true, false]);
    expect(parsed.getExtension(lib.SubjectAlternativeNameExtension)!.critical).toBe(false);
    // RFC 5280 method (1), as the library computes it.
    expect(parsed.getExtension(lib.SubjectKeyIdentifierExtension)!.keyId).toBe((await lib.SubjectKeyIdentifierExtension.create(parsed.publicKey)).keyId);
    expect(parsed.getExtension(lib.AuthorityKeyIdentifierExtension)!.keyId).toBe(caParsed.getExtension(lib.SubjectKeyIdentifierExtension)!.keyId);
    // The issuer is the CA's subject byte for byte (Go matches names by their bytes).
    const subject = Buffer.from(caParsed.subjectName.toArrayBuffer());
    expect([ca.certificate.raw.includes(subject), leaf!.raw.includes(subject)]).toEqual([true, true]);
  });

  it('names an IP literal as an iPAddress, however it is spelled', async () => {
    const { minter, mints } = counting();
    expect((await mint(minter, '127.0.0.1')).subjectAltName).toBe('IP Address:127.0.0.1');
    const v6 = await mint(minter, '[2001:db8:0:0::1]');
    expect(v6.subjectAltName).toBe('IP Address:2001:DB8:0:0:0:0:0:1');
    expect(v6.checkIP('2001:db8::1')).toBe('2001:db8::1');
    await minter.secureContext('2001:DB8::1');
    expect(mints).toEqual(['127.0.0.1', '2001:db8::1']);
  });

  it('puts a name longer than a commonName allows in a critical SAN only', async () => {
    const long = `${'a'.repeat(63)}.s3.eu-west-1.amazonaws.com`;
    const leaf = await mint(new CertificateMinter({ ca }), long);
    expect(leaf.subject ?? '').toBe('');
    expect(leaf.checkHost(long)).toBe(long);
    expect(new lib.X509Certificate(leaf.raw).getExtension(lib.SubjectAlternativeNameExtension)!.critical).toBe(true);
  });

  it('never outlives the CA, and is not minted once the CA has expired', async () => {
    const shortCa = await testCa({ notAfter: new Date(T0 + 2 * HOUR) });
    let now = T0;
    const minter = new CertificateMinter({ ca: shortCa, now: () => now });
    const leaf = await mint(minter, S3);
    expect(new Date(leaf.validTo).getTime()).toBe(T0 + 2 * HOUR);
    now = T0 + 3 * HOUR;
    await expect(minter.secureContext('other.example.com')).rejects.toThrow(/^the interception CA expired on /);
  });

  it('is signed with the CA key: P-384 with SHA-384, RSA with PKCS#1 v1.5 and SHA-256', async () => {
    for (const [options, algorithm] of [
      [{ curve: 'P-384' }, { name: 'ECDSA', hash: { name: 'SHA-384' } }],
      [{ keyType: 'rsa' }, { name: 'RSASSA-PKCS1-v1_5', hash: { name: 'SHA-256' } }],
    ] as const) {
      const other = await testCa(options);
      const leaf = await mint(new CertificateMinter({ ca: other }), S3);
      expect(leaf.verify(other.certificate.publicKey)).toBe(true);
      expect(new lib.X509Certificate(leaf.raw).signatureAlgorithm).toMatchObject(algorithm);
    }
  });

  it('has no authorityKeyIdentifier when the CA has no subjectKeyIdentifier', async () => {
    const other = await testCa({ keyId: false });
    const leaf = await mint(new CertificateMinter({ ca: other }), S3);
    expect(leaf.checkIssued(other.certificate)).toBe(true);
    expect(new lib.X509Certificate(leaf.raw).getExtension(lib.AuthorityKeyIdentifierExtension)).toBeNull();
  });
});

describe('CertificateMinter: the cache', () => {
  it('returns the cached context on a hit and says so', async () => {
    const times: number[] = [];
    let hits = 0;
    const minter = new CertificateMinter({ ca, onMint: (_host, ms) => times.push(ms), onHit: () => hits++ });
    const first = await minter.secureContext(S3);
    expect(await minter.secureContext(S3)).toBe(first);
    expect(await minter.secureContext('Bucket.S3.eu-west-1.amazonaws.com.')).toBe(first);
    expect([times.length, hits, minter.size()]).toEqual([1, 2, 1]);
    expect(times[0]).toBeGreaterThan(0);
  });

  it('shares one mint between concurrent calls for a host', async () => {
    const { minter, mints, hits } = counting();
    const contexts = await Promise.all(Array.from({ length: 8 }, () => minter.secureContext(S3)));
    expect(new Set(contexts).size).toBe(1);
    expect([mints, hits()]).toEqual([[S3], 0]);
  });

  it('mints for many new hosts at once, one after another', async () => {
    const { minter, mints } = counting();
    const hosts = Array.from({ length: 6 }, (_, i) => `h${i}.example.com`);
    const contexts = await Promise.all(hosts.map((host) => minter.secureContext(host)));
    expect(new Set(contexts).size).toBe(6);
    expect(mints).toEqual(hosts);
  });

  it('tries again after a failed mint', async () => {
    let now = T0 + 400 * 24 * HOUR; // past the test CA
    const { minter, mints } = counting({ now: () => now });
    await expect(minter.secureContext(S3)).rejects.toThrow(/expired/);
    now = T0;
    await minter.secureContext(S3);
    expect(mints).toEqual([S3]);
  });

  it('evicts the least recently used host beyond maxEntries', async () => {
    const { minter, mints } = counting({ maxEntries: 2 });
    const a = await minter.secureContext('a.example.com');
    await minter.secureContext('b.example.com');
    await minter.secureContext('a.example.com');
    await minter.secureContext('c.example.com');
    expect(minter.size()).toBe(2);
    expect(await minter.secureContext('a.example.com')).toBe(a);
    await minter.secureContext('b.example.com');
    expect(mints).toEqual(['a.example.com', 'b.example.com', 'c.example.com', 'b.example.com']);
    expect(minter.size()).toBe(2);
  });

  it('mints again when less than 10% of the validity is left', async () => {
    let now = T0;
    const { minter, mints } = counting({ validityMs: 10 * HOUR, now: () => now });
    const first = await minter.secureContext(S3);
    now = T0 + 8.9 * HOUR;
    expect(await minter.secureContext(S3)).toBe(first);
    now = T0 + 9.1 * HOUR;
    const second = await minter.secureContext(S3);
    expect(second).not.toBe(first);
    expect(mints).toEqual([S3, S3]);
    expect(minter.size()).toBe(1);
  });
});

describe('CertificateMinter: hostnames', () => {
  it('mints for nothing but a DNS name or an IP literal', async () => {
    const { minter, mints } = counting();
    const garbage = [
      '',
      '*.example.com',
      'a_b.example.com',
      '-a.example.com',
      'a-.example.com',
      'a..example.com',
      '.example.com',
      'exämple.com',
      `${'a'.repeat(64)}.com`,
      `${'abcdefghi.'.repeat(26)}com`,
      '1.2.3',
      '256.1.1.1',
      '[1.2.3.4]',
      'fe80::1%eth0',
      'example.com:443',
      'example.com/x',
      'example.com\u0000.evil',
      'a'.repeat(10_000),
    ];
    for (const hostname of garbage) {
      await expect(minter.secureContext(hostname), hostname).rejects.toBeInstanceOf(InvalidHostnameError);
    }
    await expect(minter.secureContext('a'.repeat(10_000))).rejects.toThrow(/^not a DNS name or IP literal: "a{100}"…$/);
    expect(mints).toEqual([]);
    await minter.secureContext('xn--bcher-kva.example');
    await minter.secureContext('localhost');
    await minter.secureContext('3com.example');
    expect(mints).toEqual(['xn--bcher-kva.example', 'localhost', '3com.example']);
  });

  it('checks its options', () => {
    expect(() => new CertificateMinter({ ca, maxEntries: 0 })).toThrow('maxEntries: expected a positive integer, got 0');
    expect(() => new CertificateMinter({ ca, maxEntries: 1.5 })).toThrow(RangeError);
    expect(() => new CertificateMinter({ ca, validityMs: Number.NaN })).toThrow('validityMs: expected a positive number, got NaN');
  });
});
