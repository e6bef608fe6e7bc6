// Real certificates for tests: an operator CA (built with the same library
// the proxy mints with) and server certificates for TLS stand-in upstreams.
import { createPrivateKey, webcrypto } from 'node:crypto';
import { parseHostname } from '../../src/tls/hostname.js';
import { loadInterceptionCa } from '../../src/tls/interception-ca.js';
import { caSigner, issueLeaf, type IssuedCertificate } from '../../src/tls/leaf.js';
import { x509, type X509 } from '../../src/tls/x509.js';

const lib = x509();

export interface TestCa {
  certPem: string;
  keyPem: string;
}

export interface TestCaOptions {
  keyType?: 'ec' | 'rsa';
  /** EC curve (default P-256). */
  curve?: 'P-256' | 'P-384' | 'P-521';
  /** RSA modulus (default 2048). */
  rsaBits?: number;
  /** Default: an hour ago. */
  notBefore?: Date;
  /** Default: in 30 days. */
  notAfter?: Date;
  /** basicConstraints CA:TRUE (default true). */
  ca?: boolean;
  /** Default: keyCertSign | cRLSign. */
  keyUsage?: X509.KeyUsageFlags;
  /** Include a subjectKeyIdentifier (default true). */
  keyId?: boolean;
  /** Default: 'CN=Residency Proxy Test CA, O=Test'. */
  subject?: string;
}

const HOUR = 3600_000;

export async function createTestCa(options: TestCaOptions = {}): Promise<TestCa> {
  const rsa = options.keyType === 'rsa';
  const algorithm = rsa
    ? { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256', publicExponent: new Uint8Array([1, 0, 1]), modulusLength: options.rsaBits ?? 2048 }
    : { name: 'ECDSA', namedCurve: options.curve ?? 'P-256', hash: 'SHA-256' };
  const keys = (await webcrypto.subtle.generateKey(algorithm, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const extensions: X509.Extension[] = [
    new lib.BasicConstraintsExtension(options.ca ?? true, undefined, true),
    new lib.KeyUsagesExtension(options.keyUsage ?? lib.KeyUsageFlags.keyCertSign | lib.KeyUsageFlags.cRLSign, true),
  ];
  if (options.keyId ?? true) extensions.push(await lib.SubjectKeyIdentifierExtension.create(keys.publicKey));
  const cert = await lib.X509CertificateGenerator.createSelfSigned({
    name: options.subject ?? 'CN=Residency Proxy Test CA, O=Test',
    notBefore: options.notBefore ?? new Date(Date.now() - HOUR),
    notAfter: options.notAfter ?? new Date(Date.now() + 30 * 24 * HOUR),
    keys,
    signingAlgorithm: algorithm,
    extensions,
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const keyPem = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' }).export({ format: 'pem', type: 'pkcs8' }).toString();
  return { certPem: cert.toString('pem'), keyPem };
}

/** A server certificate for `hostnames` (DNS names or IP literals), valid for a day, signed by `ca`. */
export async function issueServerCertificate(ca: TestCa, hostnames: string[]): Promise<IssuedCertificate> {
  const hosts = hostnames.map((name) => parseHostname(name) ?? fail(`not a hostname: ${name}`));
  if (hosts.length === 0) fail('no hostnames');
  const signer = await caSigner(loadInterceptionCa({ cert_env: 'CA_CERT', key_env: 'CA_KEY' }, { CA_CERT: ca.certPem, CA_KEY: ca.keyPem }));
  const now = Date.now();
  return issueLeaf(signer, hosts, new Date(now - HOUR), new Date(Math.min(now + 24 * HOUR, signer.notAfter)));
}

function fail(problem: string): never {
  throw new Error(`issueServerCertificate: ${problem}`);
}
