import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/*
 * Independent AWS SigV4 verifier for header-based auth (S3 flavour), used to prove a proxy
 * forwards signed requests byte-for-byte where it matters. Deliberately shares no code with
 * the AWS SDK or the proxy.
 */

export interface SigV4Request {
  method: string;
  /** Raw path as received, without the query. Used verbatim as the canonical URI (S3: no re-encoding, no normalisation). */
  path: string;
  /** Raw query string without the leading '?'. */
  query: string;
  headers: Record<string, string | string[] | undefined>;
}

export interface SigV4VerifyOptions {
  /** Hex SHA-256 of the body actually received; when given it must equal a hex x-amz-content-sha256. */
  payloadSha256?: string;
}

export interface SigV4Result {
  ok: boolean;
  reason?: string;
  canonicalRequest?: string;
  stringToSign?: string;
}

const ALGORITHM = 'AWS4-HMAC-SHA256';
const UNRESERVED = /[A-Za-z0-9\-._~]/;

function sha256Hex(data: string): string {
  return createHash('sha256').update(data, 'utf8').digest('hex');
}

function hmac(key: Buffer | string, data: string): Buffer {
  return createHmac('sha256', key).update(data, 'utf8').digest();
}

/** RFC 3986 encoding of every byte outside the unreserved set, uppercase hex. */
function rfc3986(value: string): string {
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    const ch = String.fromCharCode(byte);
    out += byte < 0x80 && UNRESERVED.test(ch) ? ch : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

function percentDecode(value: string): string {
  // '+' is a literal plus in SigV4, not a space.
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

export function canonicalQueryString(rawQuery: string): string {
  const pairs: [string, string][] = [];
  for (const part of rawQuery.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const key = eq === -1 ? part : part.slice(0, eq);
    const value = eq === -1 ? '' : part.slice(eq + 1);
    pairs.push([rfc3986(percentDecode(key)), rfc3986(percentDecode(value))]);
  }
  // Byte order on the encoded forms; encoded strings are ASCII so code-unit order is byte order.
  pairs.sort(([ak, av], [bk, bv]) => (ak < bk ? -1 : ak > bk ? 1 : av < bv ? -1 : av > bv ? 1 : 0));
  return pairs.map(([k, v]) => `${k}=${v}`).join('&');
}

function headerValue(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const values: string[] = [];
  for (const [key, value] of Object.entries(headers)) {
    if (key.toLowerCase() !== name || value === undefined) continue;
    if (Array.isArray(value)) values.push(...value);
    else values.push(value);
  }
  if (values.length === 0) return undefined;
  // Trim each value and collapse runs of spaces; duplicates are comma-joined.
  return values.map((v) => v.trim().replace(/ +/g, ' ')).join(',');
}

interface ParsedAuthorization {
  accessKeyId: string;
  date: string;
  region: string;
  service: string;
  signedHeaders: string;
  signature: string;
}

function parseAuthorization(value: string): ParsedAuthorization | string {
  if (!value.startsWith(`${ALGORITHM} `)) return `unsupported algorithm in Authorization: ${value.split(' ')[0]}`;
  const fields = new Map<string, string>();
  for (const part of value.slice(ALGORITHM.length + 1).split(',')) {
    const trimmed = part.trim();
    const eq = trimmed.indexOf('=');
    if (eq === -1) return `malformed Authorization component: ${trimmed}`;
    fields.set(trimmed.slice(0, eq), trimmed.slice(eq + 1));
  }
  const credential = fields.get('Credential');
  const signedHeaders = fields.get('SignedHeaders');
  const signature = fields.get('Signature');
  if (!credential || !signedHeaders || !signature) return 'Authorization lacks Credential, SignedHeaders or Signature';
  const scope = credential.split('/');
  if (scope.length !== 5 || scope[4] !== 'aws4_request') return `malformed credential scope: ${credential}`;
  const [accessKeyId, date, region, service] = scope as [string, string, string, string];
  if (!/^\d{8}$/.test(date)) return `malformed credential date: ${date}`;
  return { accessKeyId, date, region, service, signedHeaders, signature };
}

/** Verifies a header-signed SigV4 request against `secretAccessKey` (no clock-skew check). */
export function verifySigV4(req: SigV4Request, secretAccessKey: string, opts: SigV4VerifyOptions = {}): SigV4Result {
  const authorization = headerValue(req.headers, 'authorization');
  if (authorization === undefined) return { ok: false, reason: 'missing Authorization header' };
  const auth = parseAuthorization(authorization);
  if (typeof auth === 'string') return { ok: false, reason: auth };

  const amzDate = headerValue(req.headers, 'x-amz-date');
  if (amzDate === undefined) return { ok: false, reason: 'missing x-amz-date header' };
  if (!/^\d{8}T\d{6}Z$/.test(amzDate)) return { ok: false, reason: `malformed x-amz-date: ${amzDate}` };
  if (amzDate.slice(0, 8) !== auth.date) {
    return { ok: false, reason: `credential date ${auth.date} does not match x-amz-date ${amzDate}` };
  }

  const payloadHash = headerValue(req.headers, 'x-amz-content-sha256');
  if (payloadHash === undefined) return { ok: false, reason: 'missing x-amz-content-sha256 header' };
  if (opts.payloadSha256 !== undefined && /^[0-9a-f]{64}$/i.test(payloadHash)) {
    if (payloadHash.toLowerCase() !== opts.payloadSha256.toLowerCase()) {
      return { ok: false, reason: `x-amz-content-sha256 ${payloadHash} does not match received body ${opts.payloadSha256}` };
    }
  }

  const signedNames = auth.signedHeaders.split(';');
  if (signedNames.some((n) => n === '' || n !== n.toLowerCase())) {
    return { ok: false, reason: `malformed SignedHeaders: ${auth.signedHeaders}` };
  }
  if (!signedNames.includes('host')) return { ok: false, reason: 'host is not a signed header' };
  const canonicalHeaderLines: string[] = [];
  for (const name of signedNames) {
    const value = headerValue(req.headers, name);
    if (value === undefined) return { ok: false, reason: `signed header ${name} is missing from the request` };
    canonicalHeaderLines.push(`${name}:${value}\n`);
  }

  const canonicalRequest = [
    req.method.toUpperCase(),
    req.path === '' ? '/' : req.path,
    canonicalQueryString(req.query),
    canonicalHeaderLines.join(''),
    auth.signedHeaders,
    payloadHash,
  ].join('\n');

  const stringToSign = [
    ALGORITHM,
    amzDate,
    `${auth.date}/${auth.region}/${auth.service}/aws4_request`,
    sha256Hex(canonicalRequest),
  ].join('\n');

  const kDate = hmac(`AWS4${secretAccessKey}`, auth.date);
  const kRegion = hmac(kDate, auth.region);
  const kService = hmac(kRegion, auth.service);
  const kSigning = hmac(kService, 'aws4_request');
  const expected = createHmac('sha256', kSigning).update(stringToSign, 'utf8').digest();

  if (!/^[0-9a-f]{64}$/.test(auth.signature)) {
    return { ok: false, reason: 'signature is not 64 lower-case hex digits', canonicalRequest, stringToSign };
  }
  const provided = Buffer.from(auth.signature, 'hex');
  if (!timingSafeEqual(provided, expected)) {
    return { ok: false, reason: 'signature mismatch', canonicalRequest, stringToSign };
  }
  return { ok: true, canonicalRequest, stringToSign };
}

/** Splits a raw request target ('/path?query') the way verifySigV4 expects it. */
export function splitTarget(url: string): { path: string; query: string } {
  const q = url.indexOf('?');
  return q === -1 ? { path: url, query: '' } : { path: url.slice(0, q), query: url.slice(q + 1) };
}
