import { isIP } from 'node:net';
import type { Operation } from '../config/schema.js';
import type { CreateBucketTarget } from '../location/request/create-bucket.js';
import type { S3ConfigKind } from '../location/request/destination-bodies.js';
import type { SigV4Scope } from '../location/request/sigv4.js';
import type { Signal } from '../location/signals.js';
import type { Classifier } from './classify.js';
import type { RouteMatch, Upstream } from './route.js';

/**
 * One provider's reading of one request: which bucket it acts on, whether it
 * writes, and every place it writes to, as the storage service itself would
 * read the exact bytes it receives. One module per provider (s3, gcs, azure)
 * produces it; the planner turns it into signals and a decision.
 */
export interface ReadContext {
  readonly route: RouteMatch;
  readonly upstream: Upstream;
  /** The Host name the storage service will see: the client's (preserve_host) or the upstream's own. */
  readonly storeHost: string;
  /** Relative to the upstream, normalised. */
  readonly path: string;
  /** Query with parameter names decoded (values as sent). */
  readonly query: string | null;
  readonly method: string;
  readonly headers: RequestHeaders;
  readonly classify: Classifier;
}

/** Request headers as Node delivers them (lower-case names). */
export type RequestHeaders = Readonly<Record<string, string | string[] | undefined>>;

/** A body the proxy must read (bounded) before it can say where the request writes. */
export type Inspect =
  | { readonly kind: 's3-config'; readonly config: S3ConfigKind }
  | { readonly kind: 'gcs-batch' }
  | { readonly kind: 'gcs-relocate' }
  | { readonly kind: 'gcs-compose' }
  | { readonly kind: 'gcs-bucket-resource' }
  | { readonly kind: 'gcs-xml-logging' };

export type UploadKind = 'multipart' | 'gcs-resumable';

export interface Reading {
  readonly operation: Operation;
  readonly bucket: string | null;
  /** Where the service takes the bucket from: the Host it receives, or the path. */
  readonly bucketFrom: 'host' | 'path' | null;
  /** Azure: the storage account the service acts on, when known. */
  readonly account?: string | undefined;
  /** Host name and SigV4 signals (only on upstreams whose request signals count). */
  readonly signals: readonly Signal[];
  /** The SigV4 scope the request claims (its access key id is a claim until verified). */
  readonly scope: SigV4Scope | null;
  /** The access key id of a request signed with AWS Signature Version 2 (recorded; never verified, so it never counts). */
  readonly sigV2KeyId?: string | undefined;
  /** Other buckets on this upstream the request writes to (copy, rewrite destinations). */
  readonly destinations: readonly string[];
  /** The request's body is a query (S3 Select, Azure Query Blob Contents): a read that carries a body. */
  readonly bodyIsQuery: boolean;
  readonly createBucket?: CreateBucketTarget | undefined;
  readonly inspect?: Inspect | undefined;
  readonly discover?: string | undefined;
  readonly upload?: { readonly kind: UploadKind; readonly key: string } | undefined;
  readonly follow: FollowUp | null;
}

/** What to remember once the upstream has answered. */
export interface FollowUp {
  /** CreateMultipartUpload: store the location under the UploadId in the response. */
  readonly multipartStart?: { readonly bucket: string; readonly key: string };
  /** A resumable session start: store the location under the session id in the Location header. */
  readonly gcsStart?: { readonly bucket: string | null };
  /** An undeclared S3 bucket on a discovery upstream: learn its region from x-amz-bucket-region. */
  readonly learnRegion?: string;
  /** DeleteBucket: forget its discovered region. */
  readonly forgetRegion?: string;
}

export interface Reject {
  readonly kind: 'reject';
  readonly status: number;
  readonly code: string;
  readonly detail: string;
}

export function reject(status: number, code: string, detail: string): Reject {
  return { kind: 'reject', status, code, detail };
}

/**
 * How a store addresses a bucket by Host, for a Host that is not a cloud
 * provider's own endpoint name: an IP literal or localhost is path style;
 * the upstream's endpoint names (its URL host, its route host, its
 * endpoint_hosts) are path style, and BUCKET.<one of them> virtual-hosted; anything else a store
 * would read as a CNAME bucket name, which nothing here establishes.
 */
export type Addressing = { readonly style: 'path' } | { readonly style: 'virtual'; readonly bucket: string } | { readonly style: 'unknown' };

const PATH_STYLE: Addressing = Object.freeze({ style: 'path' });
const UNKNOWN: Addressing = Object.freeze({ style: 'unknown' });

export function addressing(host: string, upstream: Upstream): Addressing {
  if (host === 'localhost' || isIpLiteral(host)) return PATH_STYLE;
  for (const domain of endpointNames(upstream)) {
    if (host === domain.name) return domain.wildcard ? UNKNOWN : PATH_STYLE;
    if (host.length > domain.name.length + 1 && host.endsWith(domain.name) && host[host.length - domain.name.length - 1] === '.') {
      return { style: 'virtual', bucket: host.slice(0, host.length - domain.name.length - 1) };
    }
  }
  return UNKNOWN;
}

const ENDPOINT_NAMES = new WeakMap<Upstream, readonly { name: string; wildcard: boolean }[]>();

function endpointNames(upstream: Upstream): readonly { name: string; wildcard: boolean }[] {
  let names = ENDPOINT_NAMES.get(upstream);
  if (names === undefined) {
    const list: { name: string; wildcard: boolean }[] = [];
    const route = upstream.routeHost;
    if (route !== null) list.push(route.startsWith('*.') ? { name: route.slice(2), wildcard: true } : { name: route, wildcard: false });
    if (upstream.hostname !== '' && !isIpLiteral(upstream.hostname)) list.push({ name: upstream.hostname.toLowerCase(), wildcard: false });
    for (const name of upstream.endpointHosts) list.push({ name, wildcard: false });
    names = Object.freeze(list);
    ENDPOINT_NAMES.set(upstream, names);
  }
  return names;
}

export function isIpLiteral(host: string): boolean {
  return host.startsWith('[') || isIP(host) !== 0;
}

const ENCODED_SEPARATOR = /%(?:2f|5c)/i;

/**
 * Whether the first `count` path segments (where the bucket, account or
 * container is) could be split differently by the storage service than by
 * us: an encoded '/' or '\\' (Azurite and others decode the whole path
 * before splitting it), or an empty segment before more path.
 */
export function ambiguousSegments(path: string, count: number): boolean {
  let start = 1;
  for (let i = 0; i < count; i++) {
    const slash = path.indexOf('/', start);
    const segment = slash === -1 ? path.slice(start) : path.slice(start, slash);
    if (ENCODED_SEPARATOR.test(segment)) return true;
    if (segment === '' && slash !== -1) return true;
    if (slash === -1) return false;
    start = slash + 1;
  }
  return false;
}

/** A form upload (S3 and Cloud Storage POST Object) names its key, and may name its bucket, in the body. */
export function isFormUpload(headers: RequestHeaders): boolean {
  const type = headers['content-type'];
  return typeof type === 'string' && type.trimStart().toLowerCase().startsWith('multipart/form-data');
}

export const AMBIGUOUS_PATH = 'the bucket, account or container segment of this path (an encoded separator, or an empty segment) may be read differently by the storage service';

/** The first path segment, raw ('' when absent). */
export function firstSegment(path: string): string {
  const slash = path.indexOf('/', 1);
  return slash === -1 ? path.slice(1) : path.slice(1, slash);
}

/** True when a request carries a body (a declared non-zero length, or any transfer coding). */
export function requestHasBody(headers: RequestHeaders): boolean {
  if (headers['transfer-encoding'] !== undefined) return true;
  const length = headers['content-length'];
  return length !== undefined && length !== '0';
}

/** The parameter names of a (decoded-name) query. */
export function paramNames(query: string | null): string[] {
  if (query === null || query === '') return [];
  const names: string[] = [];
  for (const part of query.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    names.push(eq === -1 ? part : part.slice(0, eq));
  }
  return names;
}
