import { createHash, createHmac, type Hash, type Hmac } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CreateMultipartUploadCommand, GetObjectCommand, PutObjectCommand, S3Client, UploadPartCommand } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { SignatureV4 } from '@smithy/signature-v4';
import type { Checksum, SourceData } from '@smithy/types';
import { verifySigV4, type SignedRequest, type Verified } from '../../src/location/request/sigv4-verify.js';
import { loadPrincipalKeys } from '../../src/location/request/principal-keys.js';

const AKID = 'AKIAIOSFODNN7EXAMPLE';
const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
const OTHER_SECRET = 'je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY';
const secrets = new Map([[AKID, SECRET]]);
const secretFor = (id: string): string | undefined => secrets.get(id);
const SIGNED_AT = new Date('2026-03-14T09:26:53Z');
const T = SIGNED_AT.getTime();
const MINUTE = 60_000;
const HOST = 'bucket-eu.s3.eu-west-1.amazonaws.com';

/** SHA-256 / HMAC-SHA256 over node:crypto in the shape the signer wants. */
class NodeSha256 implements Checksum {
  private hash: Hash | Hmac;
  constructor(private readonly secret?: SourceData) {
    this.hash = this.fresh();
  }
  update(chunk: Uint8Array): void {
    this.hash.update(chunk);
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.hash.digest());
  }
  reset(): void {
    this.hash = this.fresh();
  }
  private fresh(): Hash | Hmac {
    if (this.secret === undefined) return createHash('sha256');
    const key =
      typeof this.secret === 'string'
        ? this.secret
        : ArrayBuffer.isView(this.secret)
          ? Buffer.from(this.secret.buffer, this.secret.byteOffset, this.secret.byteLength)
          : Buffer.from(this.secret);
    return createHmac('sha256', key);
  }
}

// Configured as the S3 client configures its signer.
const signerFor = (secretAccessKey = SECRET, service = 's3', region = 'eu-west-1', uriEscapePath = false) =>
  new SignatureV4({
    service,
    region,
    credentials: { accessKeyId: AKID, secretAccessKey },
    sha256: NodeSha256,
    uriEscapePath: uriEscapePath,
    applyChecksum: false,
  });

/** The S3 client's escaping of a URI component: encodeURIComponent plus !'()*. */
const awsEscape = (s: string): string =>
  encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
/** Path-style object path as the S3 client writes it: each key segment escaped, '/' kept. */
const objectPath = (bucket: string, key: string): string => `/${bucket}/${key.split('/').map(awsEscape).join('/')}`;

type Query = Record<string, string | string[] | null>;

/** The query string as the SDK's HTTP handler puts it on the wire. */
function wireQuery(query: Query): string | null {
  const parts: string[] = [];
  for (const name of Object.keys(query).sort()) {
    const value = query[name];
    if (value === null || value === undefined) parts.push(awsEscape(name));
    else for (const v of Array.isArray(value) ? value : [value]) parts.push(`${awsEscape(name)}=${awsEscape(v)}`);
  }
  return parts.length === 0 ? null : parts.join('&');
}

interface ToSign {
  method?: string;
  path: string;
  query?: Query;
  headers?: Record<string, string>;
  payloadHash?: string;
}

function smithyRequest(r: ToSign) {
  return {
    method: r.method ?? 'PUT',
    protocol: 'https:',
    hostname: HOST,
    path: r.path,
    query: (r.query ?? {}) as Record<string, string | string[]>,
    headers: {
      host: HOST,
      ...(r.payloadHash === undefined ? {} : { 'x-amz-content-sha256': r.payloadHash }),
      ...(r.headers ?? {}),
    },
  };
}

/** The request as the proxy would see it: lower-case header names, raw path and query. */
function received(signed: { method: string; path: string; query?: Query; headers: Record<string, string> }): SignedRequest {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(signed.headers)) headers[name.toLowerCase()] = value;
  return { method: signed.method, path: signed.path, query: wireQuery((signed.query ?? {}) as Query), headers };
}

async function signHeader(r: ToSign, options: { signer?: SignatureV4; unsignable?: string[]; at?: Date } = {}) {
  const signer = options.signer ?? signerFor();
  const signed = await signer.sign(smithyRequest({ payloadHash: 'UNSIGNED-PAYLOAD', ...r }), {
    signingDate: options.at ?? SIGNED_AT,
    unsignableHeaders: new Set(options.unsignable ?? []),
  });
  return received(signed as Parameters<typeof received>[0]);
}

/** Presigned as the S3 presigner does: the payload declared unsigned, then hoisted into the query. */
async function presign(r: ToSign, expiresIn = 900, at = SIGNED_AT, signer = signerFor()) {
  const signed = await signer.presign(smithyRequest({ method: 'GET', payloadHash: 'UNSIGNED-PAYLOAD', ...r }), {
    signingDate: at,
    expiresIn,
  });
  return received(signed as Parameters<typeof received>[0]);
}

const withChange = (req: SignedRequest, change: Partial<SignedRequest>): SignedRequest => ({ ...req, ...change });
const withHeaders = (req: SignedRequest, headers: Record<string, string | string[] | undefined>): SignedRequest => ({
  ...req,
  headers: { ...req.headers, ...headers },
});
const withQuery = (req: SignedRequest, edit: (q: string) => string): SignedRequest => ({ ...req, query: edit(req.query ?? '') });

/** A failure whose reason leaks neither the key id, a secret nor a signature. */
function expectFailure(result: Verified, reason: string): void {
  expect(result).toEqual({ ok: false, reason });
  if (!result.ok) {
    expect(result.reason).not.toContain(AKID);
    expect(result.reason).not.toContain(SECRET);
    expect(result.reason).not.toMatch(/[0-9a-f]{64}/);
  }
}

const HEX_HASH = createHash('sha256').update('hello world').digest('hex');

describe('verifySigV4: Authorization header', () => {
  it('verifies a PUT signed with a hex payload hash', async () => {
    const req = await signHeader({
      path: objectPath('bucket-eu', 'reports/2026.csv'),
      payloadHash: HEX_HASH,
      headers: { 'content-length': '11', 'content-type': 'text/csv', 'x-amz-meta-owner': 'finance' },
    });
    expect(verifySigV4(req, secretFor, T)).toEqual({ ok: true, accessKeyId: AKID, via: 'header' });
  });

  it('verifies UNSIGNED-PAYLOAD', async () => {
    const req = await signHeader({ path: objectPath('bucket-eu', 'a.txt'), payloadHash: 'UNSIGNED-PAYLOAD' });
    expect(verifySigV4(req, secretFor, T)).toMatchObject({ ok: true });
  });

  it('verifies the seed signature of a streaming upload', async () => {
    const req = await signHeader({
      path: objectPath('bucket-eu', 'big.bin'),
      payloadHash: 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD',
      headers: { 'content-encoding': 'aws-chunked', 'x-amz-decoded-content-length': '66560', 'content-length': '66824' },
    });
    expect(verifySigV4(req, secretFor, T)).toMatchObject({ ok: true });
  });

  it.each(['STREAMING-UNSIGNED-PAYLOAD-TRAILER', 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER'])('verifies %s', async (hash) => {
    const req = await signHeader({
      path: objectPath('bucket-eu', 'big.bin'),
      payloadHash: hash,
      headers: { 'x-amz-trailer': 'x-amz-checksum-crc32' },
    });
    expect(verifySigV4(req, secretFor, T)).toMatchObject({ ok: true });
  });

  it.each([
    'dir/my file.txt',
    'ünïcødé/ключ/文件.txt',
    'a+b=c&d.txt',
    "odd!'()*~ chars.txt",
    'percent%20literal.txt',
    'trailing/',
    'a//double/./dot/../x',
  ])('verifies the S3 client path of key %j (no normalisation, no double encoding)', async (key) => {
    const req = await signHeader({ path: objectPath('bucket-eu', key) });
    expect(verifySigV4(req, secretFor, T)).toMatchObject({ ok: true });
  });

  it('does not accept a signature over a double-encoded path (S3 signs the path as sent)', async () => {
    const req = await signHeader({ path: objectPath('bucket-eu', 'my file.txt') }, { signer: signerFor(SECRET, 's3', 'eu-west-1', true) });
    expectFailure(verifySigV4(req, secretFor, T), 'signature mismatch');
  });

  it.each<[string, Query]>([
    ['multipart part', { partNumber: '3', uploadId: 'VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA' }],
    ['list with an encoded prefix', { 'list-type': '2', prefix: 'a b', delimiter: '/' }],
    ['unicode and reserved characters', { prefix: 'ключ+=&/?', 'continuation-token': '1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=' }],
    ['a repeated parameter', { tag: ['b', 'a', 'c'] }],
  ])('verifies query parameters: %s', async (_name, query) => {
    const req = await signHeader({ method: 'GET', path: '/bucket-eu', query });
    expect(verifySigV4(req, secretFor, T)).toMatchObject({ ok: true });
  });

  it('takes the raw query as sent: list-type=2&prefix=a%20b', async () => {
    const req = await signHeader({ method: 'GET', path: '/bucket-eu', query: { 'list-type': '2', prefix: 'a b' } });
    expect(req.query).toBe('list-type=2&prefix=a%20b');
    expect(verifySigV4(req, secretFor, T)).toMatchObject({ ok: true });
    // Same parameters, differently escaped and ordered on the wire: same canonical form.
    expect(verifySigV4(withChange(req, { query: 'prefix=%61%20b&list-type=2' }), secretFor, T)).toMatchObject({ ok: true });
    // A literal '+' is a plus, not a space.
    expectFailure(verifySigV4(withChange(req, { query: 'list-type=2&prefix=a+b' }), secretFor, T), 'signature mismatch');
  });

  it('counts a parameter without "=" as one with an empty value', async () => {
    const req = await signHeader({ method: 'POST', path: objectPath('bucket-eu', 'big.bin'), query: { uploads: '' } });
    expect(req.query).toBe('uploads=');
    expect(verifySigV4(withChange(req, { query: 'uploads' }), secretFor, T)).toMatchObject({ ok: true });
  });

  it('verifies with the Date header when x-amz-date is absent (the date is in the string to sign)', async () => {
    const signed = await signHeader({ path: objectPath('bucket-eu', 'a.txt') }, { unsignable: ['x-amz-date'] });
    const req = withHeaders(signed, { 'x-amz-date': undefined, date: SIGNED_AT.toUTCString() });
    expect(req.headers.date).toBe('Sat, 14 Mar 2026 09:26:53 GMT');
    expect(verifySigV4(req, secretFor, T)).toMatchObject({ ok: true });
    expectFailure(verifySigV4(withHeaders(req, { date: 'Sat, 14 Mar 2026 09:26:54 GMT' }), secretFor, T), 'signature mismatch');
    expectFailure(verifySigV4(withHeaders(req, { date: '2026-03-14 09:26:53' }), secretFor, T), 'malformed request date');
    expectFailure(verifySigV4(withHeaders(req, { date: undefined }), secretFor, T), 'missing request date');
  });

  it('verifies a session token header and the host the client sent', async () => {
    const signer = new SignatureV4({
      service: 's3',
      region: 'eu-west-1',
      credentials: { accessKeyId: AKID, secretAccessKey: SECRET, sessionToken: 'FQoGZXIvYXdzEBYaDtoken' },
      sha256: NodeSha256,
      uriEscapePath: false,
      applyChecksum: false,
    });
    const req = await signHeader({ path: objectPath('bucket-eu', 'a.txt') }, { signer });
    expect(req.headers['x-amz-security-token']).toBe('FQoGZXIvYXdzEBYaDtoken');
    expect(verifySigV4(req, secretFor, T)).toMatchObject({ ok: true });
    const rewritten = withHeaders(req, { host: 'proxy.internal:8443' });
    expectFailure(verifySigV4(rewritten, secretFor, T), 'signature mismatch');
    expect(verifySigV4(withChange(rewritten, { host: HOST }), secretFor, T)).toMatchObject({ ok: true });
  });

  it('trims header values, collapses inner spaces and joins repeated values with ","', async () => {
    const req = await signHeader({ path: objectPath('bucket-eu', 'a.txt'), headers: { 'x-amz-meta-note': 'two  spaces', 'x-amz-meta-list': 'a,b' } });
    expect(verifySigV4(withHeaders(req, { 'x-amz-meta-note': '  two \t spaces ' }), secretFor, T)).toMatchObject({ ok: true });
    expect(verifySigV4(withHeaders(req, { 'x-amz-meta-list': ['a', ' b '] }), secretFor, T)).toMatchObject({ ok: true });
  });

  it('accepts skew up to 15 minutes either way and refuses beyond (or beyond maxSkewMs)', async () => {
    const req = await signHeader({ path: objectPath('bucket-eu', 'a.txt') });
    expect(verifySigV4(req, secretFor, T + 15 * MINUTE)).toMatchObject({ ok: true });
    expect(verifySigV4(req, secretFor, T - 15 * MINUTE)).toMatchObject({ ok: true });
    expectFailure(verifySigV4(req, secretFor, T + 15 * MINUTE + 1), 'request time too skewed');
    expectFailure(verifySigV4(req, secretFor, T - 16 * MINUTE), 'request time too skewed');
    expectFailure(verifySigV4(req, secretFor, T + 2 * MINUTE, { maxSkewMs: MINUTE }), 'request time too skewed');
    expectFailure(verifySigV4(req, secretFor, Number.NaN), 'invalid clock or skew');
  });

  it('refuses tampering and wrong keys', async () => {
    const req = await signHeader({ path: objectPath('bucket-eu', 'a.txt'), payloadHash: HEX_HASH, headers: { 'x-amz-meta-owner': 'finance' } });
    expectFailure(verifySigV4(req, () => OTHER_SECRET, T), 'signature mismatch');
    expectFailure(verifySigV4(withChange(req, { path: objectPath('bucket-us', 'a.txt') }), secretFor, T), 'signature mismatch');
    expectFailure(verifySigV4(withChange(req, { method: 'DELETE' }), secretFor, T), 'signature mismatch');
    expectFailure(verifySigV4(withChange(req, { query: 'acl' }), secretFor, T), 'signature mismatch');
    expectFailure(verifySigV4(withHeaders(req, { 'x-amz-meta-owner': 'someone' }), secretFor, T), 'signature mismatch');
    expectFailure(verifySigV4(withHeaders(req, { 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' }), secretFor, T), 'signature mismatch');
    // Node's ', ' join of a repeated header is not what was signed.
    expectFailure(verifySigV4(withHeaders(req, { 'x-amz-meta-owner': 'finance, extra' }), secretFor, T), 'signature mismatch');
  });

  it('refuses x-amz-* headers added outside the signature, as S3 does (except the content hash)', async () => {
    const req = await signHeader({ path: objectPath('bucket-eu', 'a.txt') }, { unsignable: ['x-amz-content-sha256'] });
    expect(verifySigV4(req, secretFor, T)).toMatchObject({ ok: true });
    expectFailure(verifySigV4(withHeaders(req, { 'x-amz-copy-source': '/bucket-us/secret.txt' }), secretFor, T), 'unsigned x-amz-* header present');
    // Headers outside x-amz-* may ride along unsigned.
    expect(verifySigV4(withHeaders(req, { 'user-agent': 'curl/8', 'x-amzn-trace-id': 'Root=1-abc' }), secretFor, T)).toMatchObject({ ok: true });
  });

  it('refuses a signed header missing from the request', async () => {
    const req = await signHeader({ path: objectPath('bucket-eu', 'a.txt'), headers: { 'content-md5': '1B2M2Y8AsgTpgAmY7PhCfg==' } });
    expectFailure(verifySigV4(withHeaders(req, { 'content-md5': undefined }), secretFor, T), 'signed header missing from request');
  });

  it('requires x-amz-content-sha256 and a well-formed value', async () => {
    const req = await signHeader({ path: objectPath('bucket-eu', 'a.txt') });
    expectFailure(verifySigV4(withHeaders(req, { 'x-amz-content-sha256': undefined }), secretFor, T), 'missing x-amz-content-sha256');
    expectFailure(verifySigV4(withHeaders(req, { 'x-amz-content-sha256': 'STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD' }), secretFor, T), 'malformed x-amz-content-sha256');
    expectFailure(verifySigV4(withHeaders(req, { 'x-amz-content-sha256': HEX_HASH.toUpperCase() }), secretFor, T), 'malformed x-amz-content-sha256');
  });

  it('checks the scope: service s3, date equal to the request date', async () => {
    const ec2 = await signHeader({ path: '/' }, { signer: signerFor(SECRET, 'ec2') });
    expectFailure(verifySigV4(ec2, secretFor, T), 'service is not s3');
    const req = await signHeader({ path: objectPath('bucket-eu', 'a.txt') });
    const nextDay = withHeaders(req, { 'x-amz-date': '20260315T000100Z' });
    expectFailure(verifySigV4(nextDay, secretFor, Date.parse('2026-03-15T00:01:00Z')), 'scope date does not match request date');
    expectFailure(verifySigV4(withHeaders(req, { 'x-amz-date': '20260230T092653Z' }), secretFor, T), 'malformed request date');
  });

  it('names no principal when the key id is unknown', async () => {
    const req = await signHeader({ path: objectPath('bucket-eu', 'a.txt') });
    expectFailure(verifySigV4(req, () => undefined, T), 'no verification key for this principal');
    expectFailure(verifySigV4(req, () => '', T), 'no verification key for this principal');
  });
});

describe('verifySigV4: Authorization header shape', () => {
  const SIG = 'a'.repeat(64);
  const base = (authorization: string | string[]): SignedRequest => ({
    method: 'GET',
    path: '/bucket-eu/a.txt',
    query: null,
    headers: { host: HOST, authorization, 'x-amz-date': '20260314T092653Z', 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' },
  });
  const CRED = `Credential=${AKID}/20260314/eu-west-1/s3/aws4_request`;

  it.each<[string, string]>([
    [`AWS4-ECDSA-P256-SHA256 Credential=${AKID}/20260314/s3/aws4_request, SignedHeaders=host;x-amz-date;x-amz-region-set, Signature=${'3045'.repeat(16)}`, 'unsupported algorithm'],
    [`AWS ${AKID}:frJIUN8DYpKDtOLCwo//yllqDzg=`, 'unsupported algorithm'],
    ['Bearer abc', 'unsupported algorithm'],
    ['', 'unsupported algorithm'],
    ['AWS4-HMAC-SHA256', 'malformed Authorization header'],
    [`AWS4-HMAC-SHA256 ${CRED}, SignedHeaders=host;x-amz-date`, 'malformed Authorization header'],
    [`AWS4-HMAC-SHA256 ${CRED}, SignedHeaders=host;x-amz-date, Signature=${SIG}, Extra=1`, 'malformed Authorization header'],
    [`AWS4-HMAC-SHA256 ${CRED}, SignedHeaders=host;x-amz-date, SignedHeaders=host, Signature=${SIG}`, 'duplicate Authorization component'],
    [`AWS4-HMAC-SHA256 ${CRED}, ${CRED}, SignedHeaders=host;x-amz-date, Signature=${SIG}`, 'duplicate Authorization component'],
    [`AWS4-HMAC-SHA256 Credential=${AKID}/20260314/eu-west-1/s3, SignedHeaders=host, Signature=${SIG}`, 'malformed credential scope'],
    [`AWS4-HMAC-SHA256 Credential=bad key/20260314/eu-west-1/s3/aws4_request, SignedHeaders=host, Signature=${SIG}`, 'malformed credential scope'],
    [`AWS4-HMAC-SHA256 ${CRED}, SignedHeaders=x-amz-date;host, Signature=${SIG}`, 'malformed SignedHeaders'],
    [`AWS4-HMAC-SHA256 ${CRED}, SignedHeaders=Host;x-amz-date, Signature=${SIG}`, 'malformed SignedHeaders'],
    [`AWS4-HMAC-SHA256 ${CRED}, SignedHeaders=host;host, Signature=${SIG}`, 'malformed SignedHeaders'],
    [`AWS4-HMAC-SHA256 ${CRED}, SignedHeaders=x-amz-date, Signature=${SIG}`, 'host is not signed'],
    [`AWS4-HMAC-SHA256 ${CRED}, SignedHeaders=${Array.from({ length: 65 }, (_, i) => `h${String(i).padStart(2, '0')}`).join(';')};host, Signature=${SIG}`, 'too many signed headers'],
    [`AWS4-HMAC-SHA256 ${CRED}, SignedHeaders=host;x-amz-date, Signature=${SIG.toUpperCase()}`, 'malformed signature'],
    [`AWS4-HMAC-SHA256 ${CRED}, SignedHeaders=host;x-amz-date, Signature=abc`, 'malformed signature'],
    [`AWS4-HMAC-SHA256 ${CRED}, SignedHeaders=host;x-amz-date, Signature=${SIG}${' '.repeat(9000)}`, 'Authorization header too long'],
  ])('refuses %j', (authorization, reason) => {
    expectFailure(verifySigV4(base(authorization), secretFor, T), reason);
  });

  it('refuses a repeated Authorization header', () => {
    const auth = `AWS4-HMAC-SHA256 ${CRED}, SignedHeaders=host;x-amz-date, Signature=${SIG}`;
    expectFailure(verifySigV4(base([auth, auth]), secretFor, T), 'duplicate Authorization header');
  });

  it('refuses a request with no signature at all', () => {
    expectFailure(verifySigV4({ method: 'GET', path: '/bucket-eu/a.txt', query: 'list-type=2', headers: { host: HOST } }, secretFor, T), 'unsigned request');
  });
});

describe('verifySigV4: presigned URLs', () => {
  it('verifies a presigned GET', async () => {
    const req = await presign({ path: objectPath('bucket-eu', 'reports/2026 Q1.csv') }, 3600);
    expect(req.query).toContain('X-Amz-Signature=');
    expect(req.headers.authorization).toBeUndefined();
    expect(verifySigV4(req, secretFor, T + MINUTE)).toEqual({ ok: true, accessKeyId: AKID, via: 'query' });
  });

  it('verifies a presigned PUT with extra query parameters and a signed header', async () => {
    const req = await presign({
      method: 'PUT',
      path: objectPath('bucket-eu', 'ünï/a+b=c.txt'),
      query: { partNumber: '2', uploadId: 'abc/def+ghi=' },
      headers: { 'content-type': 'text/plain' },
    });
    expect(req.query).toContain('X-Amz-SignedHeaders=content-type%3Bhost');
    expect(verifySigV4(req, secretFor, T)).toMatchObject({ ok: true, via: 'query' });
    expectFailure(verifySigV4(withHeaders(req, { 'content-type': 'text/html' }), secretFor, T), 'signature mismatch');
    expectFailure(verifySigV4(withQuery(req, (q) => q.replace('partNumber=2', 'partNumber=3')), secretFor, T), 'signature mismatch');
  });

  it('verifies the S3 presigner (getSignedUrl) output', async () => {
    const client = new S3Client({
      region: 'eu-west-1',
      credentials: { accessKeyId: AKID, secretAccessKey: SECRET },
      endpoint: 'https://s3.eu-west-1.amazonaws.com',
      forcePathStyle: true,
    });
    const url = await getSignedUrl(client, new GetObjectCommand({ Bucket: 'bucket-eu', Key: 'dir/my file ü.txt' }), {
      expiresIn: 600,
      signingDate: SIGNED_AT,
    });
    client.destroy();
    const rest = url.slice('https://s3.eu-west-1.amazonaws.com'.length);
    const q = rest.indexOf('?');
    const req: SignedRequest = { method: 'GET', path: rest.slice(0, q), query: rest.slice(q + 1), headers: { host: 's3.eu-west-1.amazonaws.com' } };
    expect(req.path).toBe('/bucket-eu/dir/my%20file%20%C3%BC.txt');
    expect(verifySigV4(req, secretFor, T)).toMatchObject({ ok: true, via: 'query' });
    expectFailure(verifySigV4(req, secretFor, T + 10 * MINUTE + 1), 'expired');
  });

  it('honours expiry and refuses a URL signed too far in the future', async () => {
    const req = await presign({ path: objectPath('bucket-eu', 'a.txt') }, 300);
    expect(verifySigV4(req, secretFor, T + 300_000)).toMatchObject({ ok: true });
    expectFailure(verifySigV4(req, secretFor, T + 300_001), 'expired');
    expect(verifySigV4(req, secretFor, T - 15 * MINUTE)).toMatchObject({ ok: true });
    expectFailure(verifySigV4(req, secretFor, T - 16 * MINUTE), 'request date is in the future');
    const week = await presign({ path: objectPath('bucket-eu', 'a.txt') }, 604_800);
    expect(verifySigV4(week, secretFor, T + 604_800_000)).toMatchObject({ ok: true });
    expectFailure(verifySigV4(week, secretFor, T + 604_800_001), 'expired');
  });

  it.each(['0', '604801', '-1', '1e3', ''])('refuses X-Amz-Expires=%j', async (expires) => {
    const req = await presign({ path: objectPath('bucket-eu', 'a.txt') }, 300);
    expectFailure(verifySigV4(withQuery(req, (q) => q.replace('X-Amz-Expires=300', `X-Amz-Expires=${expires}`)), secretFor, T), 'malformed X-Amz-Expires');
  });

  it('refuses tampering', async () => {
    const req = await presign({ path: objectPath('bucket-eu', 'a.txt') }, 300);
    expectFailure(verifySigV4(req, () => OTHER_SECRET, T), 'signature mismatch');
    expectFailure(verifySigV4(withChange(req, { path: objectPath('bucket-us', 'a.txt') }), secretFor, T), 'signature mismatch');
    expectFailure(verifySigV4(withQuery(req, (q) => q.replace('X-Amz-Expires=300', 'X-Amz-Expires=3000')), secretFor, T), 'signature mismatch');
    expectFailure(verifySigV4(withQuery(req, (q) => `${q}&response-content-type=text%2Fhtml`), secretFor, T), 'signature mismatch');
    expectFailure(verifySigV4(withHeaders(req, { 'x-amz-acl': 'public-read' }), secretFor, T), 'unsigned x-amz-* header present');
  });

  it('decodes parameter names before matching, as S3 does', async () => {
    const req = await presign({ path: objectPath('bucket-eu', 'a.txt') }, 300);
    const renamed = withQuery(req, (q) => q.replace('X-Amz-Credential=', 'X-Amz-Cred%65ntial='));
    expect(verifySigV4(renamed, secretFor, T)).toMatchObject({ ok: true, via: 'query' });
    const doubled = withQuery(req, (q) => `${q}&X-Amz-Cred%65ntial=OTHER%2F20260314%2Feu-west-1%2Fs3%2Faws4_request`);
    expectFailure(verifySigV4(doubled, secretFor, T), 'duplicate query parameter');
  });

  it.each([
    ['a repeated X-Amz-Signature', (q: string) => `${q}&X-Amz-Signature=${'0'.repeat(64)}`],
    ['a repeated X-Amz-Date', (q: string) => `X-Amz-Date=20260314T000000Z&${q}`],
    ['a lower-case copy of a parameter', (q: string) => `${q}&x-amz-expires=604800`],
  ])('refuses %s', async (_name, edit) => {
    const req = await presign({ path: objectPath('bucket-eu', 'a.txt') }, 300);
    expectFailure(verifySigV4(withQuery(req, edit), secretFor, T), 'duplicate query parameter');
  });

  it('refuses a missing presigned parameter and malformed escapes', async () => {
    const req = await presign({ path: objectPath('bucket-eu', 'a.txt') }, 300);
    expectFailure(verifySigV4(withQuery(req, (q) => q.replace(/&?X-Amz-SignedHeaders=[^&]*/, '')), secretFor, T), 'missing presigned parameter');
    expectFailure(verifySigV4(withQuery(req, (q) => `${q}&bad=%G1`), secretFor, T), 'malformed query string');
    expectFailure(verifySigV4(withQuery(req, (q) => `${q}&bad=%4`), secretFor, T), 'malformed query string');
  });

  it('refuses a signature in both the header and the query', async () => {
    const header = await signHeader({ path: objectPath('bucket-eu', 'a.txt') });
    const query = await presign({ path: objectPath('bucket-eu', 'a.txt') }, 300);
    expectFailure(verifySigV4(withChange(header, { query: query.query }), secretFor, T), 'both header and query signature present');
  });

  it('treats SigV4a and SigV2 presigned URLs as unsupported', () => {
    const v4a = 'X-Amz-Algorithm=AWS4-ECDSA-P256-SHA256&X-Amz-Credential=AKID%2F20260314%2Fs3%2Faws4_request&X-Amz-Region-Set=eu-west-1&X-Amz-Date=20260314T092653Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host&X-Amz-Signature=3045';
    const v2 = `AWSAccessKeyId=${AKID}&Expires=1773480413&Signature=vjbyPxybdZaNmGa%2ByT272YEAiv4%3D`;
    for (const query of [v4a, v2]) {
      expectFailure(verifySigV4({ method: 'GET', path: '/bucket-eu/a.txt', query, headers: { host: HOST } }, secretFor, T), 'unsupported algorithm');
    }
  });
});

describe('verifySigV4: hostile input', () => {
  it('never throws and never verifies garbage', () => {
    const header = fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.array(fc.string(), { maxLength: 3 }), fc.constant(undefined));
    fc.assert(
      fc.property(
        fc.string({ unit: 'binary' }),
        fc.option(fc.string({ unit: 'binary' }), { nil: null }),
        fc.dictionary(fc.constantFrom('authorization', 'host', 'x-amz-date', 'date', 'x-amz-content-sha256', 'x-amz-meta-a'), header),
        fc.double(),
        (path, query, headers, now) => {
          const result = verifySigV4({ method: 'GET', path, query, headers }, secretFor, now);
          expect(result.ok).toBe(false);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('never throws on structured near-misses', () => {
    const auth = fc.tuple(
      fc.constantFrom('AWS4-HMAC-SHA256', 'AWS4-HMAC-SHA256 ', 'AWS4-ECDSA-P256-SHA256'),
      fc.array(fc.oneof(fc.constantFrom(`Credential=${AKID}/20260314/eu-west-1/s3/aws4_request`, 'SignedHeaders=host;x-amz-date', `Signature=${'a'.repeat(64)}`, '=', ',', ''), fc.string()), { maxLength: 6 }),
    ).map(([alg, parts]) => `${alg} ${parts.join(', ')}`);
    fc.assert(
      fc.property(auth, fc.string(), (authorization, date) => {
        const result = verifySigV4(
          { method: 'PUT', path: '/b/k', query: null, headers: { host: HOST, authorization, 'x-amz-date': date, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } },
          secretFor,
          T,
        );
        expect(result.ok).toBe(false);
      }),
      { numRuns: 300 },
    );
  });

  it('bounds huge inputs', () => {
    const huge = 'X-Amz-Algorithm=AWS4-HMAC-SHA256&' + 'a=b&'.repeat(20_000);
    expectFailure(verifySigV4({ method: 'GET', path: '/b', query: huge, headers: { host: HOST } }, secretFor, T), 'query string too long');
    const many = Array.from({ length: 1500 }, (_, i) => `p${i}`).join('&');
    expectFailure(verifySigV4({ method: 'GET', path: '/b', query: many, headers: { host: HOST } }, secretFor, T), 'too many query parameters');
    expectFailure(verifySigV4({ method: 'GET', path: '/b', query: null, headers: { host: HOST, authorization: 'A'.repeat(1_000_000) } }, secretFor, T), 'Authorization header too long');
  });

  it('survives a throwing key lookup and odd paths', async () => {
    const req = await signHeader({ path: objectPath('bucket-eu', 'a.txt') });
    const boom = (): string => {
      throw new Error('store down');
    };
    expectFailure(verifySigV4(req, boom, T), 'verification error');
    expectFailure(verifySigV4(withChange(req, { path: 'http://evil/bucket-eu/a.txt' }), secretFor, T), 'malformed path');
    expectFailure(verifySigV4(withChange(req, { path: '' }), secretFor, T), 'malformed path');
  });
});

describe('verifySigV4: requests from the real S3 client', () => {
  interface Captured {
    readonly method: string;
    readonly url: string;
    readonly headers: http.IncomingHttpHeaders;
    readonly at: number;
  }
  const captured: Captured[] = [];
  let server: http.Server;
  let endpoint: string;

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      captured.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, at: Date.now() });
      req.resume();
      req.on('end', () => {
        if (req.method === 'POST' && /[?&]uploads(=|&|$)/.test(req.url ?? '')) {
          const body =
            '<?xml version="1.0" encoding="UTF-8"?><InitiateMultipartUploadResult><Bucket>bucket-eu</Bucket><Key>k</Key><UploadId>upload-1</UploadId></InitiateMultipartUploadResult>';
          res.writeHead(200, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
          res.end(body);
          return;
        }
        res.writeHead(200, { etag: '"0123456789abcdef0123456789abcdef"', 'content-length': 0 });
        res.end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const clientWith = (checksums: 'WHEN_REQUIRED' | 'WHEN_SUPPORTED'): S3Client =>
    new S3Client({
      endpoint,
      forcePathStyle: true,
      region: 'us-east-1',
      credentials: { accessKeyId: AKID, secretAccessKey: SECRET },
      requestChecksumCalculation: checksums,
      maxAttempts: 1,
    });

  const asReceived = (c: Captured): SignedRequest => {
    const q = c.url.indexOf('?');
    return { method: c.method, path: q === -1 ? c.url : c.url.slice(0, q), query: q === -1 ? null : c.url.slice(q + 1), headers: c.headers };
  };

  async function send(checksums: 'WHEN_REQUIRED' | 'WHEN_SUPPORTED', call: (client: S3Client) => Promise<unknown>): Promise<Captured> {
    const client = clientWith(checksums);
    const before = captured.length;
    try {
      await call(client);
    } finally {
      client.destroy();
    }
    expect(captured.length).toBe(before + 1);
    return captured[before]!;
  }

  it.each(['WHEN_REQUIRED', 'WHEN_SUPPORTED'] as const)('verifies PutObject (checksums %s) and refuses tampering', async (checksums) => {
    const c = await send(
      checksums,
      (client) =>
        client.send(new PutObjectCommand({ Bucket: 'bucket-eu', Key: 'dir/my file ü+=.txt', Body: 'hello world', Metadata: { owner: 'finance' } })),
    );
    const req = asReceived(c);
    expect(req.path).toBe('/bucket-eu/dir/my%20file%20%C3%BC%2B%3D.txt');
    expect(verifySigV4(req, secretFor, c.at)).toEqual({ ok: true, accessKeyId: AKID, via: 'header' });
    expectFailure(verifySigV4(req, () => OTHER_SECRET, c.at), 'signature mismatch');
    expectFailure(verifySigV4(withChange(req, { path: req.path.replace('/bucket-eu/', '/bucket-us/') }), secretFor, c.at), 'signature mismatch');
    expectFailure(verifySigV4(withHeaders(req, { 'x-amz-meta-owner': 'someone-else' }), secretFor, c.at), 'signature mismatch');
    expectFailure(verifySigV4(req, secretFor, c.at + 16 * MINUTE), 'request time too skewed');
  });

  it('verifies CreateMultipartUpload and UploadPart and refuses a tampered query', async () => {
    const create = await send('WHEN_REQUIRED', (client) =>
      client.send(new CreateMultipartUploadCommand({ Bucket: 'bucket-eu', Key: 'big.bin' })),
    );
    const createReq = asReceived(create);
    expect(createReq.query).toMatch(/^uploads/);
    expect(verifySigV4(createReq, secretFor, create.at)).toMatchObject({ ok: true });

    const part = await send('WHEN_REQUIRED', (client) =>
      client.send(
        new UploadPartCommand({ Bucket: 'bucket-eu', Key: 'big.bin', UploadId: 'upload-1', PartNumber: 1, Body: Buffer.alloc(1024, 7) }),
      ),
    );
    const partReq = asReceived(part);
    expect(partReq.query).toContain('partNumber=1');
    expect(verifySigV4(partReq, secretFor, part.at)).toMatchObject({ ok: true, via: 'header' });
    expectFailure(verifySigV4(withQuery(partReq, (q) => q.replace('partNumber=1', 'partNumber=2')), secretFor, part.at), 'signature mismatch');
    expectFailure(verifySigV4(withQuery(partReq, (q) => q.replace('uploadId=upload-1', 'uploadId=upload-2')), secretFor, part.at), 'signature mismatch');
    expectFailure(verifySigV4(withHeaders(partReq, { host: '127.0.0.2:1' }), secretFor, part.at), 'signature mismatch');
    expectFailure(verifySigV4(partReq, secretFor, part.at + 16 * MINUTE), 'request time too skewed');
  });
});

describe('loadPrincipalKeys', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'principal-keys-'));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const file = (name: string, text: string): string => {
    const path = join(dir, name);
    writeFileSync(path, text, { mode: 0o600 });
    return path;
  };

  /** Loading fails with a message containing every `parts` and none of `secrets`. */
  function expectLoadError(load: () => unknown, parts: string[], secretsInInput: string[]): void {
    let message = '';
    try {
      load();
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).not.toBe('');
    for (const part of parts) expect(message).toContain(part);
    for (const secret of secretsInInput) expect(message).not.toContain(secret);
  }

  it('reads a JSON file', () => {
    const path = file('keys.json', `{\n  "${AKID}": "${SECRET}",\n  "MINIOADMIN": "s3cr3t+/="\n}\n`);
    expect(loadPrincipalKeys({ file: path })).toEqual(new Map([[AKID, SECRET], ['MINIOADMIN', 's3cr3t+/=']]));
  });

  it('reads a lines file with comments, blank lines, tabs and CRLF', () => {
    const path = file('keys.txt', `# operators\r\n\r\n${AKID} ${SECRET}\r\n  svc-backup@corp\t\tb4ckup/Secret=  \r\n`);
    expect(loadPrincipalKeys({ file: path })).toEqual(new Map([[AKID, SECRET], ['svc-backup@corp', 'b4ckup/Secret=']]));
  });

  it('reads an environment variable (either format) and nothing when no source is given', () => {
    expect(loadPrincipalKeys({ env: 'KEYS' }, { KEYS: `${AKID} ${SECRET}` })).toEqual(new Map([[AKID, SECRET]]));
    expect(loadPrincipalKeys({ env: 'KEYS' }, { KEYS: JSON.stringify({ [AKID]: SECRET }) })).toEqual(new Map([[AKID, SECRET]]));
    expect(loadPrincipalKeys({}, {})).toEqual(new Map());
    expect(loadPrincipalKeys({ env: 'KEYS' }, { KEYS: '# none yet\n' })).toEqual(new Map());
  });

  it('names the file, the line and what was expected, never a secret', () => {
    const lines = file('bad-fields.txt', `# keys\n${AKID} ${SECRET}\nAKIDTWO ${OTHER_SECRET} trailing-comment\n`);
    expectLoadError(() => loadPrincipalKeys({ file: lines }), [lines, 'line 3', 'ACCESS_KEY_ID SECRET_ACCESS_KEY'], [SECRET, OTHER_SECRET, 'trailing-comment']);

    const swapped = file('swapped.txt', `${SECRET} ${AKID}\n`);
    expectLoadError(() => loadPrincipalKeys({ file: swapped }), [swapped, 'line 1', 'access key id'], [SECRET]);

    const duplicate = file('duplicate.txt', `${AKID} ${SECRET}\n\n${AKID} ${OTHER_SECRET}\n`);
    expectLoadError(() => loadPrincipalKeys({ file: duplicate }), [duplicate, 'line 3', 'duplicate', 'line 1'], [SECRET, OTHER_SECRET]);

    const lonely = file('lonely.txt', `${AKID}\n`);
    expectLoadError(() => loadPrincipalKeys({ file: lonely }), [lonely, 'line 1', 'ACCESS_KEY_ID SECRET_ACCESS_KEY'], []);
  });

  it('reports JSON problems with their line, never a secret', () => {
    const empty = file('empty.json', `{\n  "${AKID}": ""\n}`);
    expectLoadError(() => loadPrincipalKeys({ file: empty }), [empty, 'line 2', 'non-empty secret'], []);

    const duplicate = file('duplicate.json', `{\n  "${AKID}": "${SECRET}",\n  "${AKID}": "${OTHER_SECRET}"\n}`);
    expectLoadError(() => loadPrincipalKeys({ file: duplicate }), [duplicate, 'line 3', 'duplicate', 'line 2'], [SECRET, OTHER_SECRET]);

    const notString = file('number.json', `{\n  "${AKID}": 12345\n}`);
    expectLoadError(() => loadPrincipalKeys({ file: notString }), [notString, 'line 2', 'secret access key as a JSON string'], []);

    const broken = file('broken.json', `{\n  "${AKID}": "${SECRET}"\n  "OTHER": "${OTHER_SECRET}"\n}`);
    expectLoadError(() => loadPrincipalKeys({ file: broken }), [broken, 'line 3', "',' or '}'"], [SECRET, OTHER_SECRET]);

    const badId = file('bad-id.json', `{"${SECRET}": "${OTHER_SECRET}"}`);
    expectLoadError(() => loadPrincipalKeys({ file: badId }), [badId, 'line 1', 'access key id'], [SECRET, OTHER_SECRET]);

    const trailing = file('trailing.json', `{"${AKID}": "${SECRET}"} ${OTHER_SECRET}`);
    expectLoadError(() => loadPrincipalKeys({ file: trailing }), [trailing, 'line 1', 'nothing after'], [SECRET, OTHER_SECRET]);
  });

  it('names the environment variable, and refuses unset variables, missing files and two sources', () => {
    expectLoadError(() => loadPrincipalKeys({ env: 'RP_KEYS' }, { RP_KEYS: `${AKID} ${SECRET} x` }), ['environment variable RP_KEYS', 'line 1'], [SECRET]);
    expectLoadError(() => loadPrincipalKeys({ env: 'RP_KEYS' }, {}), ['environment variable RP_KEYS', 'not set'], []);
    const missing = join(dir, 'missing.txt');
    expectLoadError(() => loadPrincipalKeys({ file: missing }), [missing, 'ENOENT'], []);
    expectLoadError(() => loadPrincipalKeys({ file: missing, env: 'RP_KEYS' }, {}), ['not both'], []);
  });
});
