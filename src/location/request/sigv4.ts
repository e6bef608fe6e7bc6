import { paramValue } from './query.js';
import { placeSignals, type Signal } from '../signals.js';

/**
 * The credential scope of an AWS Signature Version 4 (or 4a) request: the
 * region the client signed for is where it expects the bucket to be (S3
 * rejects a scope naming any other region), so it is a location signal.
 * Only the scope is read; the signature is never parsed out, returned or
 * kept, and nothing here verifies anything.
 */
export interface SigV4Scope {
  readonly algorithm: 'AWS4-HMAC-SHA256' | 'AWS4-ECDSA-P256-SHA256';
  /** The access key id, fit to record as the principal. */
  readonly accessKeyId: string;
  /** yyyymmdd from the scope. */
  readonly date: string;
  /** SigV4: the scope's region. SigV4a has none (see regionSet). */
  readonly region: string | null;
  /** SigV4a: X-Amz-Region-Set as listed, lower case; may contain '*'. Null for SigV4. */
  readonly regionSet: readonly string[] | null;
  readonly service: string;
  /** Where the scope came from: Authorization header or presigned query. */
  readonly via: 'header' | 'query';
}

const SIGV4 = 'AWS4-HMAC-SHA256';
const SIGV4A = 'AWS4-ECDSA-P256-SHA256';
// Generous bounds: real scopes are ~60 bytes, headers a few hundred.
const MAX_AUTHORIZATION = 8 * 1024;
const MAX_CREDENTIAL = 512;
const MAX_REGION_SET = 1024;
/** What an access key id may be (AWS's own are 16–128 of [A-Z0-9]; S3-compatible stores allow a little more). */
export const ACCESS_KEY_ID = /^[A-Za-z0-9_.+=@-]{1,128}$/;
const DATE = /^\d{8}$/;
const REGION = /^[a-z0-9-]{1,64}$/;
const REGION_SET_ENTRY = /^[a-z0-9*-]{1,64}$/;
const SERVICE = /^[a-z0-9-]{1,64}$/;

/** Parse `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…` (or SigV4a). */
export function parseAuthorizationScope(authorization: string | undefined, regionSetHeader?: string | undefined): SigV4Scope | null {
  if (typeof authorization !== 'string' || authorization.length > MAX_AUTHORIZATION) return null;
  const space = authorization.indexOf(' ');
  if (space === -1) return null;
  const algorithm = authorization.slice(0, space);
  if (algorithm !== SIGV4 && algorithm !== SIGV4A) return null;
  let credential: string | null = null;
  for (const part of authorization.slice(space + 1).split(',')) {
    const item = part.trim();
    if (item.startsWith('Credential=')) {
      // Two Credential components would make the scope ambiguous.
      if (credential !== null) return null;
      credential = item.slice('Credential='.length);
    }
  }
  if (credential === null) return null;
  return scopeOf(algorithm, credential, regionSetHeader, 'header');
}

/** Parse a presigned URL's X-Amz-Algorithm / X-Amz-Credential (URL-encoded) / X-Amz-Region-Set. */
export function parseQueryScope(query: string | null): SigV4Scope | null {
  const algorithm = decode(paramValue(query, 'X-Amz-Algorithm'));
  if (algorithm !== SIGV4 && algorithm !== SIGV4A) return null;
  const credential = decode(paramValue(query, 'X-Amz-Credential'));
  if (credential === null) return null;
  return scopeOf(algorithm, credential, decode(paramValue(query, 'X-Amz-Region-Set')) ?? undefined, 'query');
}

/**
 * The request's scope: the Authorization header when it carries SigV4(a),
 * else the presigned query. (S3 rejects requests that use both.)
 */
export function parseSigV4(
  headers: { readonly authorization?: string | undefined; readonly 'x-amz-region-set'?: string | string[] | undefined },
  query: string | null,
): SigV4Scope | null {
  try {
    const set = headers['x-amz-region-set'];
    return (
      parseAuthorizationScope(headers.authorization, Array.isArray(set) ? set.join(',') : set) ?? parseQueryScope(query)
    );
  } catch {
    return null;
  }
}

function scopeOf(
  algorithm: typeof SIGV4 | typeof SIGV4A,
  credential: string,
  regionSet: string | undefined,
  via: 'header' | 'query',
): SigV4Scope | null {
  if (credential.length > MAX_CREDENTIAL) return null;
  const parts = credential.split('/');
  // SigV4: AKID/DATE/REGION/SERVICE/aws4_request; SigV4a: AKID/DATE/SERVICE/aws4_request.
  const want = algorithm === SIGV4 ? 5 : 4;
  if (parts.length !== want || parts[want - 1] !== 'aws4_request') return null;
  const accessKeyId = parts[0]!;
  const date = parts[1]!;
  const service = parts[want - 2]!;
  if (!ACCESS_KEY_ID.test(accessKeyId) || !DATE.test(date) || !SERVICE.test(service)) return null;
  if (algorithm === SIGV4) {
    const region = parts[2]!;
    if (!REGION.test(region)) return null;
    return { algorithm, accessKeyId, date, region, regionSet: null, service, via };
  }
  const set = parseRegionSet(regionSet);
  if (set === undefined) return null;
  return { algorithm, accessKeyId, date, region: null, regionSet: set, service, via };
}

/** null when absent; undefined when malformed. */
function parseRegionSet(value: string | undefined): string[] | null | undefined {
  if (value === undefined) return null;
  if (value.length > MAX_REGION_SET) return undefined;
  const out: string[] = [];
  for (const raw of value.split(',')) {
    const entry = raw.trim().toLowerCase();
    if (!REGION_SET_ENTRY.test(entry)) return undefined;
    if (!out.includes(entry)) out.push(entry);
  }
  return out;
}

function decode(value: string | undefined): string | null {
  if (value === undefined) return null;
  try {
    return decodeURIComponent(value);
  } catch {
    return null;
  }
}

/**
 * The regions a scope places the request in. A SigV4a region set containing
 * a wildcard ('*', 'us-*') is not a location: no signal at all, rather than
 * the listed part of it.
 */
export function scopeRegions(scope: SigV4Scope | null): string[] {
  if (scope === null) return [];
  if (scope.region !== null) return [scope.region];
  if (scope.regionSet === null || scope.regionSet.some((r) => r.includes('*'))) return [];
  return [...scope.regionSet];
}

export function sigv4Signals(scope: SigV4Scope | null): Signal[] {
  return scopeRegions(scope).flatMap((r) => placeSignals('sigv4', r));
}
