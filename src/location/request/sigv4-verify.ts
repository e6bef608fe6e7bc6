import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { ACCESS_KEY_ID } from './sigv4.js';

/**
 * Verification of AWS Signature Version 4 (HMAC-SHA256) as S3 performs it,
 * so a principal named by a request counts only when the request was really
 * signed with that principal's secret. Only the signature is checked: the
 * body's hash (and a streaming upload's chunk signatures) stay S3's job, and
 * S3 refuses a body that does not match the signed hash.
 */
export interface SignedRequest {
  /** e.g. 'PUT'. */
  readonly method: string;
  /** The request path exactly as received on the wire, percent-encodings untouched (no query). */
  readonly path: string;
  /** The raw query string as received (without '?'), or null. */
  readonly query: string | null;
  /**
   * Lower-case names, as Node's IncomingMessage.headers. A header sent more
   * than once is best given as an array (IncomingMessage.headersDistinct):
   * S3 joins repeated values with ',' while Node's joined string uses ', '.
   */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  /** Host header value as the client sent it (may differ from headers.host only in tests; default headers.host). */
  readonly host?: string;
}

export type Verified =
  | { readonly ok: true; readonly accessKeyId: string; readonly via: 'header' | 'query' }
  | { readonly ok: false; readonly reason: string };

const ALGORITHM = 'AWS4-HMAC-SHA256';
// S3 answers RequestTimeTooSkewed beyond 15 minutes.
const DEFAULT_MAX_SKEW_MS = 15 * 60 * 1000;
// S3's presigned URL limit: one week.
const MAX_EXPIRES_SECONDS = 604_800;
const MAX_AUTHORIZATION = 8 * 1024;
const MAX_SIGNED_HEADERS = 64;
// Far beyond any real request (Node's default header limit is 16 KiB) yet bounds the work.
const MAX_QUERY = 64 * 1024;
const MAX_QUERY_PARAMS = 1000;

const SCOPE_DATE = /^\d{8}$/;
const REGION = /^[a-z0-9-]{1,64}$/;
const AMZ_DATE = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/;
const HTTP_DATE = /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d{2}) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$/;
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const SIGNATURE = /^[0-9a-f]{64}$/;
const HEADER_NAME = /^[a-z0-9!#$%&'*+.^_`|~-]+$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;
const UNSIGNED_PAYLOAD = 'UNSIGNED-PAYLOAD';
// Payload hashes S3 takes literally under SigV4 (the ECDSA streaming ones belong to SigV4a).
const LITERAL_PAYLOAD_HASHES = new Set([
  UNSIGNED_PAYLOAD,
  'STREAMING-AWS4-HMAC-SHA256-PAYLOAD',
  'STREAMING-UNSIGNED-PAYLOAD-TRAILER',
  'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER',
]);
const PRESIGN_PARAMS = [
  'X-Amz-Algorithm',
  'X-Amz-Credential',
  'X-Amz-Date',
  'X-Amz-Expires',
  'X-Amz-SignedHeaders',
  'X-Amz-Signature',
] as const;

const fail = (reason: string): Verified => ({ ok: false, reason });

interface QueryParam {
  /** Name and value in canonical (AWS URI) encoding. */
  readonly name: string;
  readonly value: string;
}

interface Scope {
  readonly accessKeyId: string;
  readonly date: string;
  readonly region: string;
  readonly service: string;
}

interface Signed {
  readonly scope: Scope;
  readonly signedHeaders: readonly string[];
  readonly signature: string;
  /** yyyymmddThhmmssZ as it enters the string to sign. */
  readonly amzDate: string;
  readonly payloadHash: string;
}

/**
 * Verify the request's SigV4 signature (Authorization header or presigned
 * query) against the secret of the access key id it names. Never throws;
 * reasons never carry the key id, a secret or a signature.
 */
export function verifySigV4(
  req: SignedRequest,
  secretFor: (accessKeyId: string) => string | undefined,
  now: number,
  options?: { maxSkewMs?: number },
): Verified {
  try {
    const maxSkewMs = options?.maxSkewMs ?? DEFAULT_MAX_SKEW_MS;
    // NaN would make every time comparison false, i.e. every date acceptable.
    if (!Number.isFinite(now) || !Number.isFinite(maxSkewMs) || maxSkewMs < 0) return fail('invalid clock or skew');
    return verify(req, secretFor, now, maxSkewMs);
  } catch {
    return fail('verification error');
  }
}

function verify(
  req: SignedRequest,
  secretFor: (accessKeyId: string) => string | undefined,
  now: number,
  maxSkewMs: number,
): Verified {
  if (typeof req.path !== 'string' || !req.path.startsWith('/')) return fail('malformed path');
  const params = parseQuery(req.query);
  if (typeof params === 'string') return fail(params);

  const authorization = req.headers.authorization;
  if (Array.isArray(authorization) && authorization.length > 1) return fail('duplicate Authorization header');
  const authHeader = Array.isArray(authorization) ? authorization[0] : authorization;
  // Case-insensitive so a lower-cased copy cannot slip past the "both" rule.
  const queryNames = new Set(params.map((p) => p.name.toLowerCase()));
  const querySigned =
    PRESIGN_PARAMS.some((n) => queryNames.has(n.toLowerCase())) ||
    (queryNames.has('awsaccesskeyid') && queryNames.has('signature'));

  if (authHeader !== undefined && querySigned) return fail('both header and query signature present');
  if (authHeader === undefined && !querySigned) return fail('unsigned request');

  const via = authHeader !== undefined ? 'header' : 'query';
  const signed =
    authHeader !== undefined ? fromHeader(authHeader, req, now, maxSkewMs) : fromQuery(params, req, now, maxSkewMs);
  if (typeof signed === 'string') return fail(signed);

  const headerProblem = checkSignedHeaders(signed.signedHeaders, req);
  if (headerProblem !== null) return fail(headerProblem);

  const secret = secretFor(signed.scope.accessKeyId);
  if (typeof secret !== 'string' || secret === '') return fail('no verification key for this principal');

  const canonical = canonicalRequest(req, params, signed);
  if (canonical === null) return fail('signed header missing from request');
  const { scope } = signed;
  const scopeText = `${scope.date}/${scope.region}/${scope.service}/aws4_request`;
  const stringToSign = `${ALGORITHM}\n${signed.amzDate}\n${scopeText}\n${sha256Hex(wireBytes(canonical))}`;
  const expected = hmac(signingKey(secret, scope), stringToSign).toString('hex');
  // Both are 64 hex characters (the signature's shape was checked), so equal length.
  if (!timingSafeEqual(Buffer.from(expected, 'latin1'), Buffer.from(signed.signature, 'latin1'))) {
    return fail('signature mismatch');
  }
  return { ok: true, accessKeyId: scope.accessKeyId, via };
}

// ---------------------------------------------------------------- header form

function fromHeader(authorization: string, req: SignedRequest, now: number, maxSkewMs: number): Signed | string {
  if (authorization.length > MAX_AUTHORIZATION) return 'Authorization header too long';
  const space = authorization.indexOf(' ');
  const algorithm = space === -1 ? authorization : authorization.slice(0, space);
  if (algorithm !== ALGORITHM) return 'unsupported algorithm';

  const parts = new Map<string, string>();
  for (const raw of authorization.slice(space + 1).split(',')) {
    const item = raw.trim();
    const eq = item.indexOf('=');
    if (eq <= 0) return 'malformed Authorization header';
    const key = item.slice(0, eq);
    if (key !== 'Credential' && key !== 'SignedHeaders' && key !== 'Signature') return 'malformed Authorization header';
    if (parts.has(key)) return 'duplicate Authorization component';
    parts.set(key, item.slice(eq + 1));
  }
  const credential = parts.get('Credential');
  const signedHeadersText = parts.get('SignedHeaders');
  const signature = parts.get('Signature');
  if (credential === undefined || signedHeadersText === undefined || signature === undefined) {
    return 'malformed Authorization header';
  }

  const scope = parseCredential(credential);
  if (typeof scope === 'string') return scope;
  const signedHeaders = parseSignedHeaders(signedHeadersText);
  if (typeof signedHeaders === 'string') return signedHeaders;
  if (!SIGNATURE.test(signature)) return 'malformed signature';

  // X-Amz-Date wins; the Date header (RFC 1123) stands in when it is absent.
  const amzDateHeader = single(req.headers['x-amz-date']);
  let amzDate: string;
  let time: number;
  if (amzDateHeader === null) return 'duplicate date header';
  if (amzDateHeader !== undefined) {
    const parsed = parseAmzDate(amzDateHeader);
    if (parsed === null) return 'malformed request date';
    [amzDate, time] = [amzDateHeader, parsed];
  } else {
    const dateHeader = single(req.headers.date);
    if (dateHeader === undefined) return 'missing request date';
    const parsed = dateHeader === null ? null : parseHttpDate(dateHeader);
    if (parsed === null) return 'malformed request date';
    [amzDate, time] = [formatAmzDate(parsed), parsed];
  }
  if (scope.date !== amzDate.slice(0, 8)) return 'scope date does not match request date';
  if (Math.abs(time - now) > maxSkewMs) return 'request time too skewed';

  // S3 requires the header on SigV4 header auth; its value is the canonical request's last line.
  const payloadHash = single(req.headers['x-amz-content-sha256']);
  if (payloadHash === undefined) return 'missing x-amz-content-sha256';
  if (payloadHash === null || !(LITERAL_PAYLOAD_HASHES.has(payloadHash) || SHA256_HEX.test(payloadHash))) {
    return 'malformed x-amz-content-sha256';
  }
  return { scope, signedHeaders, signature, amzDate, payloadHash };
}

// ---------------------------------------------------------------- query form

function fromQuery(params: readonly QueryParam[], req: SignedRequest, now: number, maxSkewMs: number): Signed | string {
  const value = (name: string): string | undefined => {
    const found = params.find((p) => p.name === name);
    return found === undefined ? undefined : decodeCanonical(found.value);
  };
  const algorithm = value('X-Amz-Algorithm');
  // SigV2 presigned (AWSAccessKeyId/Signature/Expires) carries no X-Amz-Algorithm.
  if (algorithm === undefined && params.some((p) => p.name === 'AWSAccessKeyId')) return 'unsupported algorithm';
  if (algorithm !== undefined && algorithm !== ALGORITHM) return 'unsupported algorithm';

  const credential = value('X-Amz-Credential');
  const amzDate = value('X-Amz-Date');
  const expires = value('X-Amz-Expires');
  const signedHeadersText = value('X-Amz-SignedHeaders');
  const signature = value('X-Amz-Signature');
  if (
    algorithm === undefined ||
    credential === undefined ||
    amzDate === undefined ||
    expires === undefined ||
    signedHeadersText === undefined ||
    signature === undefined
  ) {
    return 'missing presigned parameter';
  }

  const scope = parseCredential(credential);
  if (typeof scope === 'string') return scope;
  const signedHeaders = parseSignedHeaders(signedHeadersText);
  if (typeof signedHeaders === 'string') return signedHeaders;
  if (!SIGNATURE.test(signature)) return 'malformed signature';

  const time = parseAmzDate(amzDate);
  if (time === null) return 'malformed request date';
  if (scope.date !== amzDate.slice(0, 8)) return 'scope date does not match request date';
  if (!/^\d{1,6}$/.test(expires)) return 'malformed X-Amz-Expires';
  const expiresSeconds = Number(expires);
  if (expiresSeconds < 1 || expiresSeconds > MAX_EXPIRES_SECONDS) return 'malformed X-Amz-Expires';
  if (now > time + expiresSeconds * 1000) return 'expired';
  if (time - now > maxSkewMs) return 'request date is in the future';

  // A presigned URL's payload is unsigned unless a content hash was itself signed
  // (the AWS presigner puts X-Amz-Content-Sha256=UNSIGNED-PAYLOAD in the query).
  let payloadHash = UNSIGNED_PAYLOAD;
  const queryHash = params.find((p) => p.name.toLowerCase() === 'x-amz-content-sha256');
  if (queryHash !== undefined) {
    const decoded = decodeCanonical(queryHash.value);
    if (decoded === undefined) return 'malformed x-amz-content-sha256';
    payloadHash = decoded;
  } else if (signedHeaders.includes('x-amz-content-sha256')) {
    const header = single(req.headers['x-amz-content-sha256']);
    if (typeof header !== 'string') return 'malformed x-amz-content-sha256';
    payloadHash = header;
  }
  return { scope, signedHeaders, signature, amzDate, payloadHash };
}

// ---------------------------------------------------------------- shared pieces

function parseCredential(credential: string): Scope | string {
  const parts = credential.split('/');
  if (parts.length !== 5 || parts[4] !== 'aws4_request') return 'malformed credential scope';
  const [accessKeyId, date, region, service] = parts as [string, string, string, string, string];
  if (!ACCESS_KEY_ID.test(accessKeyId) || !SCOPE_DATE.test(date) || !REGION.test(region)) {
    return 'malformed credential scope';
  }
  if (service !== 's3') return 'service is not s3';
  return { accessKeyId, date, region, service };
}

/** Lower-case header names, strictly ascending (as every signer writes them), host among them. */
function parseSignedHeaders(text: string): string[] | string {
  const names = text.split(';');
  if (names.length > MAX_SIGNED_HEADERS) return 'too many signed headers';
  for (let i = 0; i < names.length; i++) {
    if (!HEADER_NAME.test(names[i]!)) return 'malformed SignedHeaders';
    if (i > 0 && !(names[i - 1]! < names[i]!)) return 'malformed SignedHeaders';
  }
  if (!names.includes('host')) return 'host is not signed';
  return names;
}

function checkSignedHeaders(signedHeaders: readonly string[], req: SignedRequest): string | null {
  const signed = new Set(signedHeaders);
  for (const name of Object.keys(req.headers)) {
    // S3 refuses x-amz-* headers left out of the signature (HeadersNotSigned);
    // the content hash is exempt because it is signed as the canonical request's last line.
    if (name.startsWith('x-amz-') && name !== 'x-amz-content-sha256' && req.headers[name] !== undefined && !signed.has(name)) {
      return 'unsigned x-amz-* header present';
    }
  }
  return null;
}

function canonicalRequest(req: SignedRequest, params: readonly QueryParam[], signed: Signed): string | null {
  const query = params
    .filter((p) => p.name !== 'X-Amz-Signature')
    .sort((a, b) => compare(a.name, b.name) || compare(a.value, b.value))
    .map((p) => `${p.name}=${p.value}`)
    .join('&');
  let headers = '';
  for (const name of signed.signedHeaders) {
    const value = name === 'host' && req.host !== undefined ? req.host : req.headers[name];
    if (value === undefined) return null;
    const values = Array.isArray(value) ? value : [value];
    if (values.length === 0) return null;
    headers += `${name}:${values.map(trimAll).join(',')}\n`;
  }
  // S3 signs the path as sent: no normalisation and no second encoding.
  return `${req.method}\n${req.path}\n${query}\n${headers}\n${signed.signedHeaders.join(';')}\n${signed.payloadHash}`;
}

function trimAll(value: string): string {
  return value.replace(/[ \t]+/g, ' ').replace(/^ | $/g, '');
}

/** Code-point order, as AWS sorts (the canonical strings are ASCII). */
function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** A header's only value; null when it was sent more than once. */
function single(value: string | string[] | undefined): string | undefined | null {
  if (!Array.isArray(value)) return value;
  if (value.length === 0) return undefined;
  return value.length === 1 ? value[0]! : null;
}

// ---------------------------------------------------------------- query string

/** The parameters in canonical encoding, or a reason. Duplicate X-Amz-* names are refused. */
function parseQuery(query: string | null): QueryParam[] | string {
  if (query === null || query === '') return [];
  if (typeof query !== 'string') return 'malformed query string';
  if (query.length > MAX_QUERY) return 'query string too long';
  const params: QueryParam[] = [];
  const amzNames = new Set<string>();
  for (const piece of query.split('&')) {
    // An empty piece ('a=1&&b=2') is not a parameter.
    if (piece === '') continue;
    if (params.length === MAX_QUERY_PARAMS) return 'too many query parameters';
    const eq = piece.indexOf('=');
    const name = awsUriEncode(eq === -1 ? piece : piece.slice(0, eq));
    const value = awsUriEncode(eq === -1 ? '' : piece.slice(eq + 1));
    if (name === null || value === null) return 'malformed query string';
    // Names are matched decoded, so X-Amz-Cred%65ntial is X-Amz-Credential.
    const lower = name.toLowerCase();
    if (lower.startsWith('x-amz-')) {
      if (amzNames.has(lower)) return 'duplicate query parameter';
      amzNames.add(lower);
    }
    params.push({ name, value });
  }
  return params;
}

/**
 * Percent-decode to bytes, then re-encode with AWS's URI encoding: unreserved
 * A-Za-z0-9-._~ kept, every other byte %XX in upper case. Null on a broken escape.
 */
function awsUriEncode(raw: string): string | null {
  const bytes = wireBytes(raw);
  let out = '';
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i]!;
    if (byte === 0x25 /* % */) {
      const decoded = hexByte(bytes, i + 1);
      if (decoded === -1) return null;
      out += encodeByte(decoded);
      i += 2;
    } else {
      out += encodeByte(byte);
    }
  }
  return out;
}

function hexByte(bytes: Buffer, at: number): number {
  const high = hexDigit(bytes[at]);
  const low = hexDigit(bytes[at + 1]);
  return high === -1 || low === -1 ? -1 : high * 16 + low;
}

function hexDigit(byte: number | undefined): number {
  if (byte === undefined) return -1;
  if (byte >= 0x30 && byte <= 0x39) return byte - 0x30;
  if (byte >= 0x41 && byte <= 0x46) return byte - 0x37;
  if (byte >= 0x61 && byte <= 0x66) return byte - 0x57;
  return -1;
}

function encodeByte(byte: number): string {
  const unreserved =
    (byte >= 0x41 && byte <= 0x5a) || // A-Z
    (byte >= 0x61 && byte <= 0x7a) || // a-z
    (byte >= 0x30 && byte <= 0x39) || // 0-9
    byte === 0x2d || byte === 0x2e || byte === 0x5f || byte === 0x7e; // - . _ ~
  return unreserved ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
}

/** The text a canonical-encoded value stands for; undefined when its bytes are not UTF-8. */
function decodeCanonical(encoded: string): string | undefined {
  try {
    return decodeURIComponent(encoded);
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------- time

/** ms epoch of yyyymmddThhmmssZ, or null when malformed or not a real instant. */
function parseAmzDate(text: string): number | null {
  const m = AMZ_DATE.exec(text);
  if (m === null) return null;
  return utc(+m[1]!, +m[2]!, +m[3]!, +m[4]!, +m[5]!, +m[6]!);
}

/** ms epoch of an RFC 1123 date ('Sun, 06 Nov 1994 08:49:37 GMT'), or null. */
function parseHttpDate(text: string): number | null {
  const m = HTTP_DATE.exec(text);
  if (m === null) return null;
  return utc(+m[3]!, MONTHS.indexOf(m[2]!) + 1, +m[1]!, +m[4]!, +m[5]!, +m[6]!);
}

function utc(year: number, month: number, day: number, hour: number, minute: number, second: number): number | null {
  const ms = Date.UTC(year, month - 1, day, hour, minute, second);
  const d = new Date(ms);
  // Date.UTC rolls 31 Feb over into March; a real instant round-trips.
  const real =
    d.getUTCFullYear() === year &&
    d.getUTCMonth() === month - 1 &&
    d.getUTCDate() === day &&
    d.getUTCHours() === hour &&
    d.getUTCMinutes() === minute &&
    d.getUTCSeconds() === second;
  return real ? ms : null;
}

function formatAmzDate(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
}

// ---------------------------------------------------------------- crypto

/**
 * S3 hashes the bytes it received. Node hands header values (and any raw
 * non-ASCII in the URL) over as latin1, so latin1 gives those bytes back;
 * text that cannot have come off the wire that way is taken as UTF-8.
 */
function wireBytes(text: string): Buffer {
  return Buffer.from(text, /[^\x00-\xff]/.test(text) ? 'utf8' : 'latin1');
}

function sha256Hex(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function hmac(key: string | Buffer, data: string): Buffer {
  return createHmac('sha256', key).update(data, 'utf8').digest();
}

function signingKey(secret: string, scope: Scope): Buffer {
  const dateKey = hmac(`AWS4${secret}`, scope.date);
  const regionKey = hmac(dateKey, scope.region);
  const serviceKey = hmac(regionKey, scope.service);
  return hmac(serviceKey, 'aws4_request');
}
