import { bucketOf, decode } from '../location/bucket.js';
import { GCS_BUCKET, gcsHostBucket, gcsSessionKey, gcsUploadId, isGcsResumableStart, parseGcsRequest } from '../location/request/azure-gcs.js';
import { detectCreateBucket } from '../location/request/create-bucket.js';
import { paramValue } from '../location/request/query.js';
import { addressing, AMBIGUOUS_PATH, ambiguousSegments, isFormUpload, reject, type FollowUp, type Inspect, type ReadContext, type Reading, type Reject } from './reading.js';

/**
 * Google Cloud Storage as it reads a request. XML API: the bucket from a
 * `BUCKET.storage.googleapis.com` Host, else the first path segment on
 * Google's own endpoints (any other Host is a CNAME bucket to Google). JSON
 * API: the bucket in `/storage/v1/b/BUCKET/…`, and the places a request
 * writes that are not its own path: `rewriteTo`/`copyTo` destinations in
 * the path; compose, relocate and batch bodies, read before deciding.
 */
const GCS_XML_HOST = /\.storage\.googleapis\.com\.?$/;
const GOOGLE_ENDPOINTS = new Set(['storage.googleapis.com', 'www.googleapis.com']);
const METHOD_TOKEN = /^[A-Za-z]{1,16}$/;
const SEGMENT = '([^/]+)';
/** objects.rewrite and objects.copy: the destination bucket and object are in the path. */
const COPY_PATH = new RegExp(`^/storage/v1/b/${SEGMENT}/o/${SEGMENT}/(?:rewriteTo|copyTo)/b/${SEGMENT}/o/${SEGMENT}$`);
const COMPOSE_PATH = new RegExp(`^/storage/v1/b/${SEGMENT}/o/${SEGMENT}/compose$`);
const RELOCATE_PATH = new RegExp(`^/storage/v1/b/${SEGMENT}/relocate$`);
/** A bucket resource itself (insert is `/storage/v1/b`): its body may set `logging.logBucket`. */
const BUCKET_RESOURCE_PATH = new RegExp(`^/storage/v1/b/${SEGMENT}/?$`);
/** The bucket segment of a JSON API path, raw. */
const JSON_BUCKET_SEGMENT = /^\/(?:upload\/|download\/)?storage\/v1\/b\/([^/]*)/;

export function readGcs(c: ReadContext): Reading | Reject {
  const { upstream, storeHost, path, query, method, headers } = c;
  let hostBucket: string | null = null;
  if (GCS_XML_HOST.test(storeHost)) {
    const named = gcsHostBucket(storeHost);
    if (named === undefined) return reject(400, 'ambiguous_host', `${storeHost} does not name a valid bucket`);
    hostBucket = named;
  } else if (!GOOGLE_ENDPOINTS.has(storeHost)) {
    const addressed = addressing(storeHost, upstream);
    if (addressed.style === 'unknown') {
      return reject(400, 'ambiguous_host', `the storage service would read Host ${storeHost} as a bucket name (CNAME addressing), and nothing in this upstream's configuration says which bucket that is`);
    }
    if (addressed.style === 'virtual') hostBucket = addressed.bucket;
  }
  const jsonApi = hostBucket === null && isJsonApi(path);
  if (hostBucket === null) {
    // The bucket segment, as Google (or an emulator decoding the whole path) could split it differently.
    const segment = jsonApi ? JSON_BUCKET_SEGMENT.exec(path)?.[1] : undefined;
    if (jsonApi ? segment !== undefined && ambiguousSegments(`/${segment}/`, 1) : ambiguousSegments(path, 1)) return reject(400, 'ambiguous_path', AMBIGUOUS_PATH);
  }
  const bucket = hostBucket ?? bucketOf('gcs', path, storeHost, null, false);
  // An XML API form upload with no bucket in the Host or path names its bucket in the form (key or bucket field).
  if (!jsonApi && method === 'POST' && bucket === null && isFormUpload(headers)) return reject(400, 'ambiguous_path', 'a form upload that names no bucket in its Host or path');

  let operation = c.classify(method, path, query);
  let effective = method;
  const override = headers['x-http-method-override'];
  if (jsonApi && method === 'POST' && typeof override === 'string' && METHOD_TOKEN.test(override)) {
    effective = override.toUpperCase();
    // The stricter reading: an upstream that ignores the override runs a POST.
    if (c.classify(effective, path, query) === 'write') operation = 'write';
  }

  // Where a JSON API request writes besides its own path. Both the method and
  // its override count: an upstream may honour either.
  const destinations: string[] = [];
  let inspect: Inspect | undefined;
  const either = (m: string) => method === m || effective === m;
  if (jsonApi) {
    if (path.includes('/rewriteTo/') || path.includes('/copyTo/')) {
      const m = COPY_PATH.exec(path);
      const destination = m === null ? null : decode(m[3]!);
      if (destination === null || !GCS_BUCKET.test(destination)) {
        return reject(400, 'unreadable_destination', 'a rewrite or copy path whose destination bucket the proxy cannot read the way Cloud Storage does');
      }
      destinations.push(destination);
    } else if (path.endsWith('/compose') || path.endsWith('/relocate')) {
      const kind = COMPOSE_PATH.test(path) ? 'gcs-compose' : RELOCATE_PATH.test(path) ? 'gcs-relocate' : null;
      if (kind === null) return reject(400, 'unreadable_destination', 'a compose or relocate path the proxy cannot read the way Cloud Storage does');
      if (either('POST')) inspect = { kind };
    } else if (path.startsWith('/batch/') && operation === 'write') {
      inspect = { kind: 'gcs-batch' };
    } else if (operation === 'write' && (path === '/storage/v1/b' || path === '/storage/v1/b/' || (BUCKET_RESOURCE_PATH.test(path) && !either('DELETE')))) {
      // A bucket insert, patch or update: its logging.logBucket receives logs.
      inspect = { kind: 'gcs-bucket-resource' };
    }
  } else if (either('PUT') && bucket !== null && query !== null && paramValue(query, 'logging') !== undefined) {
    inspect = { kind: 'gcs-xml-logging' };
  }

  const createBucket = upstream.requestSignals
    ? ((either('POST') || either('PUT') ? (detectCreateBucket('gcs', effective, path, query, hostBucket) ?? detectCreateBucket('gcs', method, path, query, hostBucket)) : null) ?? undefined)
    : undefined;
  let upload: Reading['upload'];
  let follow: FollowUp | null = null;
  const sessionId = query !== null && query.includes('upload_id') ? gcsUploadId(query) : null;
  // An upload_id we cannot read may still name a session to Google: never treat it as absent.
  if (sessionId === null && paramValue(query, 'upload_id') !== undefined) return reject(400, 'bad_query', 'the upload_id parameter is not one the proxy can read');
  if (sessionId !== null) {
    // Cancelling a session (DELETE) stores nothing: decided as itself.
    if (operation === 'write' && method !== 'DELETE') upload = { kind: 'gcs-resumable', key: gcsSessionKey(upstream.name, sessionId) };
  } else if (method === 'POST') {
    const target = parseGcsRequest(hostBucket === null ? 'storage.googleapis.com' : storeHost, path);
    if (target !== null && isGcsResumableStart(method, target, query, headers)) follow = { gcsStart: { bucket: target.bucket ?? bucket } };
  }
  return { operation, bucket, bucketFrom: hostBucket !== null ? 'host' : bucket !== null ? 'path' : null, signals: [], scope: null, destinations, bodyIsQuery: false, createBucket, inspect, upload, follow };
}

/** Cloud Storage's JSON API (which honours X-HTTP-Method-Override), as opposed to its XML API. */
function isJsonApi(path: string): boolean {
  return path.startsWith('/storage/') || path.startsWith('/upload/') || path.startsWith('/batch/') || path.startsWith('/download/');
}
