import { decode } from '../location/bucket.js';
import { detectCreateBucket } from '../location/request/create-bucket.js';
import { S3_DESTINATION_REQUESTS } from '../location/request/destination-bodies.js';
import { hasParam, paramValue } from '../location/request/query.js';
import { isDnsBucketName, parseS3Host, s3HostSignals, type S3HostInfo } from '../location/request/s3-host.js';
import { ACCESS_KEY_ID, parseSigV4, sigv4Signals } from '../location/request/sigv4.js';
import { hashKey } from '../location/request/uploads.js';
import type { Signal } from '../location/signals.js';
import { addressing, AMBIGUOUS_PATH, ambiguousSegments, firstSegment, isFormUpload, paramNames, reject, type FollowUp, type Inspect, type ReadContext, type Reading, type Reject } from './reading.js';

/**
 * Amazon S3 (and S3-compatible stores) as they read a request. The bucket
 * comes from the Host before the path: a virtual-hosted
 * `BUCKET.s3.REGION.amazonaws.com` or `BUCKET.<endpoint>`, and a Host that
 * is no endpoint at all is read by S3 (and by s3rver, MinIO with a domain)
 * as a CNAME bucket name, which the proxy refuses rather than guess.
 */
const AWS_HOST = /\.amazonaws\.com(?:\.cn)?\.?$/;

/** Whether a forward proxy's tunnel to `host` can carry S3 requests: under AWS names, only S3 endpoints (a single-region place). */
export function s3TunnelHost(host: string): boolean {
  if (!AWS_HOST.test(host)) return true;
  const info = parseS3Host(host);
  return info !== null && !(info.style === 'accesspoint' && info.region === null);
}

/** The only parameters a SelectObjectContent request carries: anything else may make the POST a write. */
const SELECT_PARAMS = new Set(['select', 'select-type', 'x-id', 'versionId']);

/** The shared-cache key of a multipart upload: scoped by upstream, bucket and object key; the id hashed. */
export function multipartKey(upstream: string, bucket: string, key: string, uploadId: string): string {
  return 'multipart:' + hashKey(upstream, bucket, key, uploadId);
}


/**
 * The access key id of a Signature Version 2 request (`Authorization: AWS
 * AKID:signature`, or a presigned `AWSAccessKeyId=`): who claims to sign,
 * for the record. It is never verified, so no exception matches it.
 */
function sigV2AccessKeyId(authorization: string | string[] | undefined, query: string | null): string | undefined {
  let id: string | undefined;
  if (typeof authorization === 'string' && authorization.startsWith('AWS ')) {
    const colon = authorization.indexOf(':', 4);
    id = colon === -1 ? undefined : authorization.slice(4, colon);
  } else {
    const raw = paramValue(query, 'AWSAccessKeyId');
    id = raw === undefined ? undefined : decode(raw);
  }
  return id !== undefined && ACCESS_KEY_ID.test(id) ? id : undefined;
}

export function readS3(c: ReadContext): Reading | Reject {
  const { upstream, storeHost, path, query, method, headers } = c;
  let s3Host: S3HostInfo | null = null;
  let hostBucket: string | null = null;
  if (AWS_HOST.test(storeHost)) {
    s3Host = parseS3Host(storeHost);
    if (s3Host === null) {
      // A {host} upstream for AWS forwards to S3 endpoints only, not to any other service under the pattern.
      return upstream.hostTemplate !== null
        ? reject(404, 'no_route', `${storeHost} is not an S3 endpoint`)
        : reject(400, 'ambiguous_host', `${storeHost} is not an S3 endpoint name the proxy can read a bucket from`);
    }
    if (upstream.hostTemplate !== null && s3Host.style === 'accesspoint' && s3Host.region === null) {
      // A multi-region access point is not one place: nothing could say where the data goes.
      return reject(404, 'no_route', `${storeHost} is a multi-region access point, which this upstream does not forward to`);
    }
    hostBucket = s3Host.style === 'path' ? null : s3Host.bucket;
  } else {
    const addressed = addressing(storeHost, upstream);
    if (addressed.style === 'unknown') {
      return reject(400, 'ambiguous_host', `the storage service would read Host ${storeHost} as a bucket name (CNAME addressing), and nothing in this upstream's configuration says which bucket that is`);
    }
    if (addressed.style === 'virtual') {
      if (!isDnsBucketName(addressed.bucket)) return reject(400, 'ambiguous_host', `${storeHost} does not name a valid bucket`);
      hostBucket = addressed.bucket;
    }
  }
  if (hostBucket === null && s3Host?.style !== 'accesspoint' && ambiguousSegments(path, 1)) return reject(400, 'ambiguous_path', AMBIGUOUS_PATH);
  const pathBucket = firstSegment(path);
  const bucket = hostBucket ?? (s3Host?.style === 'accesspoint' || pathBucket === '' ? null : decode(pathBucket));
  // The object key as sent (not decoded): '' for a bucket-level request.
  const key = bucket === null ? '' : hostBucket !== null ? path.slice(1) : path.length > pathBucket.length + 2 ? path.slice(pathBucket.length + 2) : '';

  let operation = c.classify(method, path, query);
  let bodyIsQuery = false;
  if (method === 'POST' && operation === 'read') {
    // Write sub-resources win: only a plain SelectObjectContent (select-type=2)
    // on an object reads. A key that is empty or starts with '/' may route to
    // a bucket-level POST (a form upload) on S3-compatible stores.
    const names = paramNames(query);
    const plainSelect = names.every((n) => SELECT_PARAMS.has(n)) && paramValue(query, 'select-type') === '2';
    if (key === '' || key.startsWith('/') || !plainSelect || isFormUpload(headers)) operation = 'write';
    else bodyIsQuery = true;
  }
  // A form upload with no bucket in the Host or path names its bucket in the body: not read here.
  if (method === 'POST' && bucket === null && isFormUpload(headers)) return reject(400, 'ambiguous_path', 'a form upload that names no bucket in its Host or path');

  const scope = headers.authorization !== undefined || query !== null ? parseSigV4(headers as Parameters<typeof parseSigV4>[0], query) : null;
  const sigV2KeyId = scope === null ? sigV2AccessKeyId(headers.authorization, query) : undefined;
  const signals: Signal[] = upstream.requestSignals ? [...s3HostSignals(s3Host), ...sigv4Signals(scope)] : [];

  const createBucket = method === 'PUT' && upstream.requestSignals && key === '' ? (detectCreateBucket('s3', method, path, query, hostBucket) ?? undefined) : undefined;
  let inspect: Inspect | undefined;
  let upload: Reading['upload'];
  let follow: { -readonly [K in keyof FollowUp]: FollowUp[K] } | null = null;
  if (bucket !== null && query !== null) {
    // Bucket configurations (replication, inventory, access logs, …) and restores that make S3 itself write elsewhere.
    for (const request of S3_DESTINATION_REQUESTS) {
      if (request.method === method && (request.on === 'bucket') === (key === '') && hasParam(query, request.subresource)) inspect = { kind: 's3-config', config: request.kind };
    }
  }
  if (query !== null && bucket !== null && key !== '') {
    if (method === 'POST' && hasParam(query, 'uploads')) {
      follow = { multipartStart: { bucket, key } };
    } else if (operation === 'write' && method !== 'DELETE') {
      // UploadPart, UploadPartCopy, CompleteMultipartUpload. (AbortMultipartUpload only removes data.)
      const id = paramValue(query, 'uploadId');
      if (id !== undefined) upload = { kind: 'multipart', key: multipartKey(upstream.name, bucket, key, decode(id)) };
    }
  }
  let discover: string | undefined;
  if (upstream.discovery !== null && bucket !== null && upstream.declared.forBucket(bucket).signals.length === 0) {
    // Declared beats discovered: only a bucket nothing declares is looked up.
    follow = { ...follow, learnRegion: bucket };
    if (operation === 'write' && createBucket === undefined && upload === undefined) discover = bucket;
    if (method === 'DELETE' && key === '' && (query === null || query === 'x-id=DeleteBucket')) follow.forgetRegion = bucket;
  }
  return { operation, bucket, bucketFrom: hostBucket !== null ? 'host' : bucket !== null ? 'path' : null, signals, scope, sigV2KeyId, destinations: [], bodyIsQuery, createBucket, inspect, discover, upload, follow };
}
