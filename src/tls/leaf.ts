import { createHash, generateKeyPair, randomBytes, webcrypto, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import type { Hostname } from './hostname.js';
import type { InterceptionCa } from './interception-ca.js';
import { x509, type X509 } from './x509.js';

/** The X.509 library (loaded here: this module only runs where certificates are made). */
const lib = x509();

/** What signing with the CA needs, prepared once per CA. */
export interface CaSigner {
  readonly certPem: string;
  readonly subject: X509.Name;
  readonly notAfter: number;
  /** The extensions every leaf has (built once: the library's ASN.1 work runs on the event loop). */
  readonly extensions: readonly X509.Extension[];
  readonly key: webcrypto.CryptoKey;
  readonly algorithm: webcrypto.EcdsaParams | webcrypto.Algorithm;
}

/** A leaf certificate (PEM) and its private key (PKCS#8 PEM). */
export interface IssuedCertificate {
  readonly certPem: string;
  readonly keyPem: string;
}

const generateKeyPairAsync = promisify(generateKeyPair);

// RFC 5280 upper bound for commonName (ub-common-name); longer names go in the SAN only.
const MAX_COMMON_NAME = 64;

export async function caSigner(ca: InterceptionCa): Promise<CaSigner> {
  const cert = new lib.X509Certificate(ca.certPem);
  const pkcs8 = ca.key.export({ format: 'der', type: 'pkcs8' });
  // PKCS#1 v1.5 rather than PSS: every TLS client accepts it in certificates.
  // EC: the hash that goes with the curve (CA/Browser Forum BR 7.1.3.2).
  const p384 = ca.key.asymmetricKeyDetails?.namedCurve === 'secp384r1';
  const [importAs, algorithm] =
    ca.key.asymmetricKeyType === 'ec'
      ? [{ name: 'ECDSA', namedCurve: p384 ? 'P-384' : 'P-256' }, { name: 'ECDSA', hash: p384 ? 'SHA-384' : 'SHA-256' }]
      : [{ name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, { name: 'RSASSA-PKCS1-v1_5' }];
  const extensions: X509.Extension[] = [
    new lib.BasicConstraintsExtension(false, undefined, true),
    new lib.KeyUsagesExtension(lib.KeyUsageFlags.digitalSignature, true),
    new lib.ExtendedKeyUsageExtension([lib.ExtendedKeyUsage.serverAuth]),
  ];
  const caKeyId = cert.getExtension(lib.SubjectKeyIdentifierExtension)?.keyId;
  if (caKeyId !== undefined) extensions.push(new lib.AuthorityKeyIdentifierExtension(caKeyId));
  return {
    certPem: ca.certPem,
    subject: cert.subjectName,
    notAfter: cert.notAfter.getTime(),
    extensions,
    key: await webcrypto.subtle.importKey('pkcs8', pkcs8, importAs, false, ['sign']),
    algorithm,
  };
}

/**
 * A TLS server certificate for `hosts` (the first is the subject CN), with a
 * fresh ECDSA P-256 key, signed by the CA. Key generation and signing run on
 * libuv's thread pool; only the library's ASN.1 encoding runs on the event loop.
 */
export async function issueLeaf(signer: CaSigner, hosts: readonly Hostname[], notBefore: Date, notAfter: Date): Promise<IssuedCertificate> {
  const { publicKey, privateKey } = await generateKeyPairAsync('ec', { namedCurve: 'P-256' });
  const spki = publicKey.export({ format: 'der', type: 'spki' });
  const cn = hosts[0]!.name;
  const withCn = cn.length <= MAX_COMMON_NAME;
  const extensions = [
    // An empty subject makes the SAN critical (RFC 5280 §4.2.1.6).
    new lib.SubjectAlternativeNameExtension(
      hosts.map((h) => ({ type: h.ip ? ('ip' as const) : ('dns' as const), value: h.name })),
      !withCn,
    ),
    new lib.SubjectKeyIdentifierExtension(keyIdentifier(publicKey)),
    ...signer.extensions,
  ];
  const cert = await lib.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: withCn ? [{ CN: [cn] }] : [],
    issuer: signer.subject,
    notBefore,
    notAfter,
    publicKey: spki,
    signingKey: signer.key,
    signingAlgorithm: signer.algorithm,
    extensions,
  });
  return { certPem: cert.toString('pem'), keyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString() };
}

/** RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey, for EC the uncompressed point 04‖x‖y. */
function keyIdentifier(publicKey: KeyObject): string {
  const { x, y } = publicKey.export({ format: 'jwk' });
  return createHash('sha1')
    .update(Buffer.concat([Buffer.of(4), Buffer.from(x!, 'base64url'), Buffer.from(y!, 'base64url')]))
    .digest('hex');
}

/** 16 random octets, top bit clear (a positive INTEGER) and the next set (exactly 16 octets in DER). */
function serialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0] = 0x40 | (bytes[0]! & 0x3f);
  return bytes.toString('hex');
}
