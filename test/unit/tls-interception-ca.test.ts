import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InterceptionCaError, loadInterceptionCa, type InterceptionCaSource } from '../../src/tls/interception-ca.js';
import { x509 } from '../../src/tls/x509.js';
import { createTestCa, type TestCa } from '../helpers/test-ca.js';

const lib = x509();

const DAY = 24 * 3600_000;
let dir: string;
let ec: TestCa;
let rsa: TestCa;
let p384: TestCa;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tls-ca-'));
  [ec, rsa, p384] = await Promise.all([createTestCa(), createTestCa({ keyType: 'rsa' }), createTestCa({ curve: 'P-384' })]);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/** The error loadInterceptionCa throws for a certificate and key given as environment variables. */
function problem(cert: string | undefined, key: string | undefined): InterceptionCaError {
  return problemFor({ cert_env: 'CA_CERT', key_env: 'CA_KEY' }, { CA_CERT: cert, CA_KEY: key });
}

function problemFor(source: InterceptionCaSource, env: NodeJS.ProcessEnv = {}): InterceptionCaError {
  try {
    loadInterceptionCa(source, env);
  } catch (err) {
    if (err instanceof InterceptionCaError) return err;
    throw err;
  }
  throw new Error('loadInterceptionCa accepted it');
}

describe('loadInterceptionCa: sources', () => {
  it('reads the certificate and key from files', () => {
    const ca = loadInterceptionCa({ cert_file: file('ca.pem', ec.certPem), key_file: file('ca.key', ec.keyPem) }, {});
    expect(ca.certificate.ca).toBe(true);
    expect(ca.certPem).toBe(ca.certificate.toString());
    expect(ca.key.asymmetricKeyType).toBe('ec');
    expect(Object.isFrozen(ca)).toBe(true);
  });

  it('reads them from environment variables, mixed with files too', () => {
    const env = { MY_CA: rsa.certPem, MY_KEY: rsa.keyPem };
    expect(loadInterceptionCa({ cert_env: 'MY_CA', key_env: 'MY_KEY' }, env).key.asymmetricKeyDetails?.modulusLength).toBe(2048);
    expect(loadInterceptionCa({ cert_file: file('rsa.pem', rsa.certPem), key_env: 'MY_KEY' }, env).certificate.ca).toBe(true);
  });

  it('accepts P-384 CAs and PKCS#1 / SEC1 key encodings', () => {
    const load = (ca: TestCa, keyPem = ca.keyPem) => loadInterceptionCa({ cert_env: 'C', key_env: 'K' }, { C: ca.certPem, K: keyPem });
    expect(load(p384).key.asymmetricKeyDetails?.namedCurve).toBe('secp384r1');
    const pkcs1 = createPrivateKey(rsa.keyPem).export({ format: 'pem', type: 'pkcs1' }).toString();
    const sec1 = createPrivateKey(ec.keyPem).export({ format: 'pem', type: 'sec1' }).toString();
    expect([pkcs1, sec1].map((pem) => pem.split('\n')[0])).toEqual(['-----BEGIN RSA PRIVATE KEY-----', '-----BEGIN EC PRIVATE KEY-----']);
    expect(load(rsa, pkcs1).certificate.ca).toBe(true);
    expect(load(ec, sec1).certificate.ca).toBe(true);
  });

  it('wants exactly one of *_file and *_env', () => {
    expect(problemFor({ key_env: 'K' }, { K: ec.keyPem })).toMatchObject({
      path: 'forward_proxy.ca',
      message: 'no CA certificate: neither cert_file nor cert_env is set',
      expected: 'exactly one of cert_file, cert_env',
    });
    expect(problemFor({ cert_env: 'C' }, { C: ec.certPem })).toMatchObject({ path: 'forward_proxy.ca', message: 'no CA private key: neither key_file nor key_env is set' });
    expect(problemFor({ cert_file: 'ca.pem', cert_env: 'C', key_env: 'K' })).toMatchObject({
      path: 'forward_proxy.ca.cert_file',
      message: 'both cert_file and cert_env are set',
    });
    expect(problemFor({ cert_env: 'C', key_file: 'ca.key', key_env: 'K' }, { C: ec.certPem })).toMatchObject({ path: 'forward_proxy.ca.key_file' });
  });

  it('names an unreadable file as given and the OS reason', () => {
    const missing = join(dir, 'missing.pem');
    expect(problemFor({ cert_file: missing, key_env: 'K' })).toMatchObject({
      path: 'forward_proxy.ca.cert_file',
      message: `cannot read "${missing}": ENOENT: no such file or directory`,
      expected: 'a readable PEM file',
    });
    mkdirSync(join(dir, 'a-directory'));
    const cert = file('ca2.pem', ec.certPem);
    expect(problemFor({ cert_file: cert, key_file: join(dir, 'a-directory') })).toMatchObject({
      path: 'forward_proxy.ca.key_file',
      message: `cannot read "${join(dir, 'a-directory')}": EISDIR: illegal operation on a directory`,
    });
  });

  it('names an unset or empty environment variable', () => {
    expect(problemFor({ cert_env: 'NOPE', key_env: 'K' }, { K: ec.keyPem })).toMatchObject({
      path: 'forward_proxy.ca.cert_env',
      message: 'environment variable NOPE is not set',
    });
    expect(problem(ec.certPem, '')).toMatchObject({ path: 'forward_proxy.ca.key_env', message: 'environment variable CA_KEY is not set' });
  });
});

describe('loadInterceptionCa: the certificate', () => {
  it('must be one PEM certificate', () => {
    expect(problem('hello', ec.keyPem)).toMatchObject({ path: 'forward_proxy.ca.cert_env', message: 'not a PEM certificate' });
    expect(problem(ec.keyPem, ec.keyPem)).toMatchObject({ message: 'not a PEM certificate' });
    expect(problem(ec.certPem + rsa.certPem, ec.keyPem)).toMatchObject({ message: '2 certificates where one is expected' });
    expect(problem('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n', ec.keyPem)).toMatchObject({
      message: 'the PEM certificate cannot be parsed',
    });
  });

  it('must be a CA that may sign certificates', async () => {
    const leaf = await createTestCa({ ca: false });
    expect(problem(leaf.certPem, leaf.keyPem)).toMatchObject({
      path: 'forward_proxy.ca.cert_env',
      message: 'the certificate is not a CA (basicConstraints CA:TRUE is missing)',
    });
    const noCertSign = await createTestCa({ keyUsage: lib.KeyUsageFlags.digitalSignature });
    expect(problem(noCertSign.certPem, noCertSign.keyPem)).toMatchObject({
      message: "the certificate's keyUsage does not allow signing certificates",
    });
  });

  it('must be valid now', async () => {
    const expired = await createTestCa({ notBefore: new Date(Date.now() - 10 * DAY), notAfter: new Date('2020-01-02T00:00:00Z') });
    expect(problem(expired.certPem, expired.keyPem)).toMatchObject({
      path: 'forward_proxy.ca.cert_env',
      message: 'the CA certificate expired on 2020-01-02T00:00:00.000Z',
    });
    const future = await createTestCa({ notBefore: new Date('2999-01-01T00:00:00Z'), notAfter: new Date('2999-12-31T00:00:00Z') });
    expect(problem(future.certPem, future.keyPem)).toMatchObject({ message: 'the CA certificate is not valid until 2999-01-01T00:00:00.000Z' });
  });
});

describe('loadInterceptionCa: the key', () => {
  it('must match the certificate', () => {
    expect(problem(ec.certPem, p384.keyPem)).toMatchObject({
      path: 'forward_proxy.ca.key_env',
      message: 'the private key does not match the CA certificate',
      expected: 'the private key of the certificate in forward_proxy.ca.cert_env',
    });
  });

  it('must be an unencrypted PEM private key, and is never quoted', () => {
    expect(problem(ec.certPem, ec.certPem)).toMatchObject({ path: 'forward_proxy.ca.key_env', message: 'not a PEM private key' });
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const encrypted = privateKey.export({ format: 'pem', type: 'pkcs8', cipher: 'aes-256-cbc', passphrase: 'secret' }).toString();
    expect(problem(ec.certPem, encrypted)).toMatchObject({ message: 'the private key is encrypted' });
    const body = 'MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg';
    const broken = problem(ec.certPem, `-----BEGIN PRIVATE KEY-----\n${body}\n-----END PRIVATE KEY-----\n`);
    expect(broken.message).toBe('the PEM private key cannot be parsed');
    expect(`${broken.message} ${broken.expected}`).not.toContain(body);
  });

  it('must be EC P-256/P-384 or RSA of at least 2048 bits', async () => {
    const expected = 'an EC P-256 or P-384 key, or an RSA key of at least 2048 bits';
    const p521 = await createTestCa({ curve: 'P-521' });
    expect(problem(p521.certPem, p521.keyPem)).toMatchObject({ path: 'forward_proxy.ca.key_env', message: 'unsupported CA key type: EC secp521r1', expected });
    const small = await createTestCa({ keyType: 'rsa', rsaBits: 1024 });
    expect(problem(small.certPem, small.keyPem)).toMatchObject({ message: 'unsupported CA key type: RSA 1024-bit' });
    const ed = generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
    expect(problem(ec.certPem, ed)).toMatchObject({ message: 'unsupported CA key type: ed25519' });
  });
});
