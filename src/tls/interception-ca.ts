import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { x509 } from './x509.js';

/** Where the operator CA comes from: files or environment variables (PEM text), never the config itself. */
export interface InterceptionCaSource {
  cert_file?: string;
  key_file?: string;
  cert_env?: string;
  key_env?: string;
}

export interface InterceptionCa {
  /** The CA certificate, PEM. */
  readonly certPem: string;
  readonly certificate: X509Certificate;
  /** The CA private key. */
  readonly key: KeyObject;
}

/** A config problem: `path` like 'forward_proxy.ca.cert_file', `message`, `expected` (the shape of a ConfigProblem). */
export class InterceptionCaError extends Error {
  readonly code = 'RESIDENCY_ERR_CONFIG_INVALID';
  constructor(
    readonly path: string,
    message: string,
    readonly expected: string,
  ) {
    super(message);
    this.name = 'InterceptionCaError';
  }
}

const AT = 'forward_proxy.ca';
const KEY_TYPES = 'an EC P-256 or P-384 key, or an RSA key of at least 2048 bits';
const CURVES = new Set(['prime256v1', 'secp384r1']);

/**
 * Read and check the operator CA (synchronous: start-up and reload). Throws
 * InterceptionCaError naming the config key at fault. Messages name files as
 * given and never quote key material.
 */
export function loadInterceptionCa(source: InterceptionCaSource, env: NodeJS.ProcessEnv): InterceptionCa {
  const cert = readPem(source, 'cert', env);
  const key = readPem(source, 'key', env);
  const certificate = parseCertificate(cert.text, cert.path);
  const caKey = parseKey(key.text, key.path);

  if (!certificate.checkPrivateKey(caKey)) {
    throw new InterceptionCaError(key.path, 'the private key does not match the CA certificate', `the private key of the certificate in ${cert.path}`);
  }
  // Checked from the extension itself: OpenSSL (X509Certificate.ca) also takes an extension-less v1 root for a CA.
  // The library only here, on first use: check-config and explain need it only with forward_proxy.
  const lib = x509();
  const parsed = new lib.X509Certificate(certificate.raw);
  if (parsed.getExtension(lib.BasicConstraintsExtension)?.ca !== true) {
    throw new InterceptionCaError(cert.path, 'the certificate is not a CA (basicConstraints CA:TRUE is missing)', 'a CA certificate');
  }
  // With CA:TRUE, OpenSSL refuses it only for a keyUsage without keyCertSign.
  if (!certificate.ca) {
    throw new InterceptionCaError(cert.path, "the certificate's keyUsage does not allow signing certificates", 'a CA certificate with keyUsage keyCertSign');
  }
  const now = Date.now();
  if (now < parsed.notBefore.getTime()) {
    throw new InterceptionCaError(cert.path, `the CA certificate is not valid until ${parsed.notBefore.toISOString()}`, 'a CA certificate valid now');
  }
  if (now > parsed.notAfter.getTime()) {
    throw new InterceptionCaError(cert.path, `the CA certificate expired on ${parsed.notAfter.toISOString()}`, 'a CA certificate valid now');
  }
  return Object.freeze({ certPem: certificate.toString(), certificate, key: caKey });
}

function readPem(source: InterceptionCaSource, what: 'cert' | 'key', env: NodeJS.ProcessEnv): { text: string; path: string } {
  const file = source[`${what}_file`];
  const name = source[`${what}_env`];
  const expected = `exactly one of ${what}_file, ${what}_env`;
  if (file !== undefined && name !== undefined) {
    throw new InterceptionCaError(`${AT}.${what}_file`, `both ${what}_file and ${what}_env are set`, expected);
  }
  if (file !== undefined) {
    const path = `${AT}.${what}_file`;
    try {
      return { text: readFileSync(file, 'utf8'), path };
    } catch (err) {
      throw new InterceptionCaError(path, `cannot read "${file}": ${osReason(err as NodeJS.ErrnoException)}`, 'a readable PEM file');
    }
  }
  if (name !== undefined) {
    const path = `${AT}.${what}_env`;
    const text = env[name];
    if (text === undefined || text === '') throw new InterceptionCaError(path, `environment variable ${name} is not set`, 'PEM text in that variable');
    return { text, path };
  }
  throw new InterceptionCaError(AT, `no CA ${what === 'cert' ? 'certificate' : 'private key'}: neither ${what}_file nor ${what}_env is set`, expected);
}

/** "ENOENT: no such file or directory, open 'ca.pem'" → "ENOENT: no such file or directory" (the name is already in the message). */
function osReason(err: NodeJS.ErrnoException): string {
  return err.syscall === undefined ? err.message : err.message.replace(new RegExp(`, ${err.syscall}( '.*')?$`, 's'), '');
}

function parseCertificate(text: string, path: string): X509Certificate {
  const count = text.match(/-----BEGIN CERTIFICATE-----/g)?.length ?? 0;
  const expected = 'one PEM certificate (-----BEGIN CERTIFICATE-----)';
  if (count === 0) throw new InterceptionCaError(path, 'not a PEM certificate', expected);
  // A chain would leave open which certificate signs: the CA alone, please.
  if (count > 1) throw new InterceptionCaError(path, `${count} certificates where one is expected`, expected);
  try {
    return new X509Certificate(text);
  } catch {
    throw new InterceptionCaError(path, 'the PEM certificate cannot be parsed', expected);
  }
}

function parseKey(text: string, path: string): KeyObject {
  const expected = `an unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1): ${KEY_TYPES}`;
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(text)) {
    throw new InterceptionCaError(path, 'the private key is encrypted', expected);
  }
  if (!/-----BEGIN (?:RSA |EC )?PRIVATE KEY-----/.test(text)) throw new InterceptionCaError(path, 'not a PEM private key', expected);
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: text, format: 'pem' });
  } catch {
    // The library's reason is not quoted: nothing from a key goes in a message.
    throw new InterceptionCaError(path, 'the PEM private key cannot be parsed', expected);
  }
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails ?? {};
  const supported =
    (type === 'ec' && CURVES.has(details.namedCurve ?? '')) ||
    (type === 'rsa' && (details.modulusLength ?? 0) >= 2048);
  if (!supported) {
    const what = type === 'ec' ? `EC ${details.namedCurve}` : type === 'rsa' ? `RSA ${details.modulusLength}-bit` : String(type);
    throw new InterceptionCaError(path, `unsupported CA key type: ${what}`, KEY_TYPES);
  }
  return key;
}
