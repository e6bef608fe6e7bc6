import type { Provider } from '../../config/schema.js';
import { decodeAwsChunked } from './aws-chunked.js';
import { decodeUtf8 } from './body.js';
import { paramValue } from './query.js';
import { parseSafeXml } from './safe-xml.js';
import { field, jsonKeyProblem } from './strict-json.js';
import { placeSignals, type Signal } from '../signals.js';

/**
 * Bucket-creating requests: where a new bucket will live is in the request
 * body, not in config. Detection is by shape (method, path, query); the body
 * is read up to a small bound, parsed without any entity or DTD processing,
 * and the exact bytes read are handed back so the proxy forwards exactly
 * what it inspected.
 */
export type CreateBucketApi = 's3' | 'gcs-xml' | 'gcs-json';

export interface CreateBucketTarget {
  readonly api: CreateBucketApi;
  /** From the path or Host; null for the GCS JSON API (the name is in the body). */
  readonly bucket: string | null;
}

export type CreateBucketLocation =
  | {
      readonly ok: true;
      readonly api: CreateBucketApi;
      /** The body's bucket name (GCS JSON), else the target's. */
      readonly bucket: string | null;
      /**
       * Where the bucket will be, as region ids / location codes for
       * placeSignals: one entry, or a GCS configurable dual-region's data
       * locations. Empty for an S3 directory bucket (its Location is a zone
       * of the endpoint's region: the hostname says where).
       */
      readonly places: readonly string[];
      /** What the body said, verbatim (LocationConstraint, location); null when absent. */
      readonly stated: string | null;
      /** No location in the request: the provider's default applies. */
      readonly defaulted: boolean;
    }
  | {
      readonly ok: false;
      readonly status: 400;
      readonly code: 'create_bucket_body_too_large' | 'create_bucket_malformed' | 'create_bucket_unreadable';
      readonly detail: string;
    };

/** The largest create-bucket body inspected; real ones are a few hundred bytes. */
export const CREATE_BUCKET_BODY_LIMIT = 64 * 1024;

// PUT /bucket?<one of these> configures a bucket; without one (any other or
// no parameter: S3 ignores unknown ones, e.g. the SDK's x-id) it creates the
// bucket. A name missing here fails closed: its body is not a create-bucket
// configuration, so it is refused as malformed rather than let through.
const S3_PUT_BUCKET_SUBRESOURCES: readonly string[] = [
  'abac', 'accelerate', 'acl', 'analytics', 'cors', 'encryption', 'intelligent-tiering', 'inventory',
  'lifecycle', 'logging', 'metadataAnnotationTable', 'metadataConfiguration', 'metadataInventoryTable',
  'metadataJournalTable', 'metadataTable', 'metrics', 'notification', 'object-lock', 'ownershipControls',
  'policy', 'publicAccessBlock', 'replication', 'requestPayment', 'tagging', 'versioning', 'website',
];
// Cloud Storage XML API: PUT Bucket metadata parameters, plus the ACL ones.
const GCS_PUT_BUCKET_SUBRESOURCES: readonly string[] = [
  'acl', 'billing', 'cors', 'defaultObjectAcl', 'encryptionConfig', 'lifecycle', 'logging', 'storageClass',
  'tagging', 'versioning', 'websiteConfig',
];

const LOCATION_VALUE = /^[A-Za-z0-9-]{1,64}$/;

/**
 * Is this a bucket-creating request? `path` is the normalised path relative
 * to the upstream; `hostBucket` the bucket a virtual-hosted Host named (S3
 * or GCS XML), else null. `method` must be the effective method (after any
 * X-HTTP-Method-Override the upstream honours).
 */
export function detectCreateBucket(
  provider: Provider,
  method: string,
  path: string,
  query: string | null,
  hostBucket: string | null,
): CreateBucketTarget | null {
  switch (provider) {
    case 's3': {
      if (method !== 'PUT' || hasAny(query, S3_PUT_BUCKET_SUBRESOURCES)) return null;
      const bucket = bucketPath(path, hostBucket);
      return bucket === null ? null : { api: 's3', bucket };
    }
    case 'gcs': {
      if (method === 'POST' && (path === '/storage/v1/b' || path === '/storage/v1/b/')) return { api: 'gcs-json', bucket: null };
      if (method !== 'PUT' || hasAny(query, GCS_PUT_BUCKET_SUBRESOURCES)) return null;
      const bucket = bucketPath(path, hostBucket);
      return bucket === null ? null : { api: 'gcs-xml', bucket };
    }
    default:
      return null;
  }
}

function hasAny(query: string | null, names: readonly string[]): boolean {
  if (query === null || query === '') return false;
  for (const n of names) if (paramValue(query, n) !== undefined) return true;
  return false;
}

/** `/` on a virtual host; `/NAME` or `/NAME/` path style. */
function bucketPath(path: string, hostBucket: string | null): string | null {
  if (hostBucket !== null) return path === '/' || path === '' ? hostBucket : null;
  if (!path.startsWith('/')) return null;
  const end = path.endsWith('/') ? path.length - 1 : path.length;
  const name = path.slice(1, end);
  if (name === '' || name.includes('/')) return null;
  try {
    return decodeURIComponent(name);
  } catch {
    return null;
  }
}

export interface CreateBucketBodyOptions {
  /** The body is aws-chunked (SigV4 streaming): see isAwsChunked(). */
  readonly awsChunked?: boolean;
}

const malformed = (detail: string): CreateBucketLocation => ({ ok: false, status: 400, code: 'create_bucket_malformed', detail });

/** Work out where a bucket-creating request puts the bucket, from its (whole) body. Never throws. */
export function createBucketLocation(target: CreateBucketTarget, body: Uint8Array, options: CreateBucketBodyOptions = {}): CreateBucketLocation {
  try {
    let bytes = body;
    if (options.awsChunked && target.api !== 'gcs-json') {
      const decoded = decodeAwsChunked(bytes);
      if (decoded === null) return malformed('the aws-chunked body framing is malformed');
      bytes = decoded;
    }
    const text = decodeUtf8(bytes);
    if (text === null) return malformed('the body is not UTF-8');
    return target.api === 'gcs-json' ? gcsJsonLocation(text) : xmlLocation(target, text);
  } catch {
    return malformed('the body could not be parsed');
  }
}

function xmlLocation(target: CreateBucketTarget, text: string): CreateBucketLocation {
  const s3 = target.api === 's3';
  // S3: no configuration means us-east-1; Cloud Storage's XML API defaults to US.
  const fallback = s3 ? 'us-east-1' : 'US';
  const ok = (stated: string | null, places: string[], defaulted: boolean): CreateBucketLocation => ({
    ok: true, api: target.api, bucket: target.bucket, places, stated, defaulted,
  });
  if (text.trim() === '') return ok(null, [fallback], true);
  const doc = parseSafeXml(text);
  if (!doc.ok) return malformed(doc.error);
  if (doc.root.name !== 'CreateBucketConfiguration') return malformed(`expected CreateBucketConfiguration, found ${doc.root.name}`);
  let constraint: string | null = null;
  let directory = false;
  for (const child of doc.root.children) {
    if (child.name === 'LocationConstraint') {
      if (constraint !== null) return malformed('more than one LocationConstraint');
      if (child.children.length > 0) return malformed('LocationConstraint has child elements');
      constraint = child.text.trim();
    } else if (child.name.toLowerCase() === 'locationconstraint') {
      // Spelled differently from what the upstream reads: refuse rather than guess.
      return malformed(`unexpected element ${child.name}`);
    } else if (child.name === 'Location') {
      directory = true;
    }
  }
  if (constraint === null || constraint === '') {
    // A directory bucket names a zone in the endpoint's region, not a region.
    if (s3 && directory && constraint === null) return ok(null, [], false);
    return ok(constraint, [fallback], true);
  }
  if (!LOCATION_VALUE.test(constraint)) return malformed('LocationConstraint is not a location id');
  // S3's legacy 'EU' constraint means Ireland.
  if (s3 && constraint === 'EU') return ok(constraint, ['eu-west-1'], false);
  return ok(constraint, [constraint], false);
}

function gcsJsonLocation(text: string): CreateBucketLocation {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return malformed('the body is not JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return malformed('the body is not a JSON object');
  // Duplicate or differently spelled keys (location / Location, dataLocations /
  // data_locations) would let the upstream read another value than we did.
  const problem = jsonKeyProblem(text);
  if (problem !== null) return malformed(problem);
  const body = doc as Record<string, unknown>;
  const name = typeof body.name === 'string' ? body.name : null;
  const location = field(body, 'location');
  if (location !== undefined && (typeof location !== 'string' || !LOCATION_VALUE.test(location))) {
    return malformed('location is not a location id');
  }
  const stated = typeof location === 'string' ? location : null;
  const placement = field(body, 'customplacementconfig');
  if (placement !== undefined && placement !== null) {
    if (typeof placement !== 'object' || Array.isArray(placement)) return malformed('customPlacementConfig is not an object');
    const data = field(placement as Record<string, unknown>, 'datalocations');
    if (data !== undefined) {
      if (!Array.isArray(data) || data.length === 0 || data.length > 8) return malformed('dataLocations is not a list of locations');
      if (!data.every((d): d is string => typeof d === 'string' && LOCATION_VALUE.test(d))) return malformed('dataLocations is not a list of locations');
      // A configurable dual-region: the data rests in exactly these regions.
      return { ok: true, api: 'gcs-json', bucket: name, places: [...new Set(data)], stated, defaulted: false };
    }
  }
  return { ok: true, api: 'gcs-json', bucket: name, places: [stated ?? 'US'], stated, defaulted: stated === null };
}

/** Signals for a successful create-bucket location. */
export function createBucketSignals(location: CreateBucketLocation): Signal[] {
  if (!location.ok) return [];
  return location.places.flatMap((p) => placeSignals('create-bucket', p));
}
