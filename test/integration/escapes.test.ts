import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DecisionRecord } from '../../src/audit/record.js';
import { startProxy, type RunningProxy } from '../helpers/proxy.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/upstream.js';

/**
 * The escape corpus: request shapes a real client or an attacker can send,
 * each with the bucket and places the storage service would act on, sent
 * through real sockets. A write that would land outside the US is refused
 * with zero bytes at the upstream; what the proxy cannot read the way the
 * service does is refused (400) without a decision; and the record names
 * the real target and every location.
 */

interface Case {
  name: string;
  method: string;
  path: string;
  host?: string;
  headers?: Record<string, string>;
  body?: string;
  /** The status the client sees: 403 refused by policy, 400 unreadable, else forwarded. */
  status: number;
  /** Fields the decision record must carry (none for a 400 before any decision). */
  record?: Partial<Record<keyof DecisionRecord, unknown>>;
  /** Text the refusal must carry (the body, as the client's SDK shows it). */
  message?: string;
  /** A destination the record's signals must name (bucket or place). */
  destination?: { bucket?: string; value?: string; jurisdiction: string | null };
}

const ARN = (bucket: string) => `arn:aws:s3:::${bucket}`;
const replication = (bucket: string) =>
  `<ReplicationConfiguration><Role>arn:aws:iam::123456789012:role/r</Role><Rule><Status>Enabled</Status><Destination><Bucket>${ARN(bucket)}</Bucket></Destination></Rule></ReplicationConfiguration>`;
const inventory = (bucket: string) =>
  `<InventoryConfiguration><Id>i</Id><IsEnabled>true</IsEnabled><Destination><S3BucketDestination><Format>CSV</Format><Bucket>${ARN(bucket)}</Bucket></S3BucketDestination></Destination><Schedule><Frequency>Daily</Frequency></Schedule><IncludedObjectVersions>All</IncludedObjectVersions></InventoryConfiguration>`;
const logging = (bucket: string) => `<BucketLoggingStatus><LoggingEnabled><TargetBucket>${bucket}</TargetBucket><TargetPrefix>logs/</TargetPrefix></LoggingEnabled></BucketLoggingStatus>`;
const BOUNDARY = 'batch_boundary';
const batch = (...calls: string[]) =>
  calls.map((call, i) => `--${BOUNDARY}\r\nContent-Type: application/http\r\nContent-ID: <${i + 1}>\r\n\r\n${call}\r\n`).join('') + `--${BOUNDARY}--\r\n`;
const BATCH_HEADERS = { 'content-type': `multipart/mixed; boundary=${BOUNDARY}` };
const scope = (region: string) => `AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/${region}/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=${'0'.repeat(64)}`;

const FORM_HEADERS = { 'content-type': 'multipart/form-data; boundary=XyZ' };
const form = (fields: Record<string, string>) => Object.entries(fields).map(([k, v]) => `--XyZ\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`).join('') + '--XyZ--\r\n';

const CASES: Case[] = [
  // 1. The bucket S3 acts on comes from the Host before the path.
  { name: 's3: path-style write to an EU bucket', method: 'PUT', path: '/s3/eu-archive/k', body: 'x', status: 403, record: { bucket: 'eu-archive', reason: 'jurisdiction_not_allowed' } },
  { name: 's3: a preserved Host naming another bucket (CNAME addressing)', method: 'PUT', path: '/s3/us-data/k', host: 'eu-archive', body: 'x', status: 400 },
  { name: 's3: a preserved Host with a port naming another bucket', method: 'PUT', path: '/s3/us-data/k', host: 'eu-archive:8080', body: 'x', status: 400 },
  { name: 's3: virtual-hosted under a wildcard route host', method: 'PUT', path: '/us-data/k', host: 'eu-archive.s3.internal', body: 'x', status: 403, record: { bucket: 'eu-archive' } },
  { name: 's3: virtual-hosted under a wildcard route host, upper case', method: 'PUT', path: '/k', host: 'EU-ARCHIVE.S3.INTERNAL', body: 'x', status: 403, record: { bucket: 'eu-archive' } },
  { name: 's3: virtual-hosted AWS name beats the path', method: 'PUT', path: '/aws/us-data/k', host: 'eu-archive.s3.us-east-1.amazonaws.com', body: 'x', status: 403, record: { bucket: 'eu-archive' } },
  { name: 's3: an AWS name that is no S3 endpoint', method: 'PUT', path: '/aws/us-data/k', host: 'eu-archive.sqs.amazonaws.com', body: 'x', status: 400 },
  // 2. Cloud Storage writes whose destination is not the path's bucket.
  { name: 'gcs: objects.rewrite to an EU bucket', method: 'POST', path: '/gcs/storage/v1/b/us-bucket/o/x/rewriteTo/b/eu-bucket/o/y', status: 403, destination: { bucket: 'eu-bucket', jurisdiction: 'BE' } },
  { name: 'gcs: objects.copy to an EU bucket', method: 'POST', path: '/gcs/storage/v1/b/us-bucket/o/x/copyTo/b/eu-bucket/o/y', status: 403, destination: { bucket: 'eu-bucket', jurisdiction: 'BE' } },
  { name: 'gcs: objects.rewrite to an encoded EU bucket name', method: 'POST', path: '/gcs/storage/v1/b/us-bucket/o/x/rewriteTo/b/%65u-bucket/o/y', status: 403, destination: { bucket: 'eu-bucket', jurisdiction: 'BE' } },
  { name: 'gcs: a rewrite path the proxy cannot read as Google does', method: 'POST', path: '/gcs/storage/v1/b/us-bucket/o/x/rewriteTo/b/eu-bucket/o/y/rewriteTo/b/us-bucket/o/z', status: 400 },
  { name: 'gcs: objects.rewrite between US buckets', method: 'POST', path: '/gcs/storage/v1/b/us-bucket/o/x/rewriteTo/b/us-bucket/o/y', status: 200 },
  { name: 'gcs: compose naming an EU destination bucket', method: 'POST', path: '/gcs/storage/v1/b/us-bucket/o/c/compose', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sourceObjects: [{ name: 'a' }], destination: { bucket: 'eu-bucket' } }), status: 403, destination: { bucket: 'eu-bucket', jurisdiction: 'BE' } },
  { name: 'gcs: bucket relocation to the EU', method: 'POST', path: '/gcs/storage/v1/b/us-bucket/relocate', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ destinationLocation: 'EU' }), status: 403, destination: { value: 'EU', jurisdiction: 'BE' } },
  { name: 'gcs: a batch with a write to an EU bucket inside', method: 'POST', path: '/gcs/batch/storage/v1', headers: BATCH_HEADERS, body: batch('GET /storage/v1/b/us-bucket/o/a HTTP/1.1\r\n', 'PATCH /storage/v1/b/eu-bucket/o/b HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{"metadata":{"k":"v"}}'), status: 403, destination: { bucket: 'eu-bucket', jurisdiction: 'BE' } },
  { name: 'gcs: a batch with a rewrite to an EU bucket inside', method: 'POST', path: '/gcs/batch/storage/v1', headers: BATCH_HEADERS, body: batch('POST /storage/v1/b/us-bucket/o/a/rewriteTo/b/eu-bucket/o/b HTTP/1.1\r\n'), status: 403, destination: { bucket: 'eu-bucket', jurisdiction: 'BE' } },
  { name: 'gcs: a batch the proxy cannot parse', method: 'POST', path: '/gcs/batch/storage/v1', headers: BATCH_HEADERS, body: 'not a multipart body', status: 400 },
  { name: 'gcs: a batch of US writes only', method: 'POST', path: '/gcs/batch/storage/v1', headers: BATCH_HEADERS, body: batch('DELETE /storage/v1/b/us-bucket/o/a HTTP/1.1\r\n'), status: 200 },
  // 3. A continuation adds the stored location to its own signals.
  { name: 'gcs: upload_id on a bucket insert placing the bucket in the EU', method: 'POST', path: '/gcs/storage/v1/b?project=p&upload_id=abc', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'new-bucket', location: 'EU' }), status: 403 },
  // 5. Parsing gaps.
  { name: 's3: an encoded uploadId name still names an upload the proxy never saw', method: 'PUT', path: '/s3/us-data/k?partNumber=1&upload%49d=zzz', body: 'x', status: 403, record: { reason: 'unknown_location', upload: { kind: 'multipart', known: false } } },
  { name: 's3: the same parameter twice', method: 'PUT', path: '/s3/us-data/k?partNumber=1&uploadId=a&uploadId=b', body: 'x', status: 400 },
  { name: 's3: an encoded presigned credential names an EU scope', method: 'PUT', path: '/aws/us-data/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Cred%65ntial=AKIDEXAMPLE%2F20260101%2Feu-west-1%2Fs3%2Faws4_request&X-Amz-Signature=00', body: 'x', status: 403, record: { reason: 'location_conflict' }, message: 'found US (declared us-east-1); IE (sigv4 eu-west-1); rule &#34;writes-us&#34; does not allow IE (location_conflict)' },
  { name: 's3: a SigV4 scope in a region the catalog does not know', method: 'PUT', path: '/aws/us-data/k', headers: { authorization: scope('xx-future-9') }, body: 'x', status: 403, record: { reason: 'unknown_location' }, message: 'sigv4 xx-future-9 could not be placed' },
  { name: 's3: a create-bucket constraint the catalog does not know', method: 'PUT', path: '/aws/new-bucket', body: '<CreateBucketConfiguration><LocationConstraint>xx-future-9</LocationConstraint></CreateBucketConfiguration>', status: 403, record: { reason: 'unknown_location' } },
  // 6. Service-side data movement and write-shaped reads.
  { name: 's3: replication to an EU bucket', method: 'PUT', path: '/s3/us-data?replication', body: replication('eu-archive'), status: 403, destination: { bucket: 'eu-archive', jurisdiction: 'IE' } },
  { name: 's3: replication to a bucket nothing places', method: 'PUT', path: '/s3/us-data?replication', body: replication('somewhere'), status: 403, record: { reason: 'unknown_location' }, destination: { bucket: 'somewhere', jurisdiction: null } },
  { name: 's3: replication between US buckets', method: 'PUT', path: '/s3/us-data?replication', body: replication('us-data'), status: 200 },
  { name: 's3: an inventory report delivered to an EU bucket', method: 'PUT', path: '/s3/us-data?inventory&id=i', body: inventory('eu-archive'), status: 403, destination: { bucket: 'eu-archive', jurisdiction: 'IE' } },
  { name: 's3: access logs delivered to an EU bucket', method: 'PUT', path: '/s3/us-data?logging', body: logging('eu-archive'), status: 403, destination: { bucket: 'eu-archive', jurisdiction: 'IE' } },
  { name: 's3: a replication body the proxy cannot read', method: 'PUT', path: '/s3/us-data?replication', body: '<ReplicationConfiguration><Rule>', status: 400 },
  { name: 's3: bucket-level POST ?select is no read', method: 'POST', path: '/s3/eu-archive?select&select-type=2', body: '<x/>', status: 403, record: { operation: 'write' } },
  { name: 's3: ?uploads beside ?select starts an upload', method: 'POST', path: '/s3/eu-archive/k?uploads&select', status: 403, record: { operation: 'write' } },
  { name: 's3: SelectObjectContent reads, its body a query', method: 'POST', path: '/s3/eu-archive/k?select&select-type=2', body: '<SelectObjectContentRequest/>', status: 200, record: { operation: 'read', body: 'query' } },
  { name: 's3: a GET with a body to an EU bucket', method: 'GET', path: '/s3/eu-archive/k', body: 'smuggled', status: 403, record: { operation: 'write', body: 'on-read' } },
  { name: 's3: a HEAD with a body to an EU bucket', method: 'HEAD', path: '/s3/eu-archive/k', body: 'smuggled', status: 403, record: { operation: 'write', body: 'on-read' } },
  { name: 's3: an OPTIONS with a chunked body to an EU bucket', method: 'OPTIONS', path: '/s3/eu-archive/k', headers: { 'transfer-encoding': 'chunked' }, body: 'smuggled', status: 403, record: { operation: 'write', body: 'on-read' } },
  { name: 's3: a GET without a body stays a read', method: 'GET', path: '/s3/eu-archive/k', status: 200, record: { operation: 'read' } },
  // From an attacker's pass: paths a store splits differently, form uploads, more destinations.
  { name: 'azure: an encoded slash joins an EU account to its container (Azurite decodes the whole path)', method: 'PUT', path: '/az/euacct%2Fccc/b2', headers: { 'x-ms-blob-type': 'BlockBlob' }, body: 'x', status: 400 },
  { name: 'azure: the same with a declared EU container', method: 'PUT', path: '/az/devstoreaccount1%2Feucontainer/b3', headers: { 'x-ms-blob-type': 'BlockBlob' }, body: 'x', status: 400 },
  { name: 'azure: a path naming no account the proxy can read', method: 'PUT', path: '/az/EU_ACCT/c/b', headers: { 'x-ms-blob-type': 'BlockBlob' }, body: 'x', status: 400 },
  { name: 'azure: a write to an EU account', method: 'PUT', path: '/az/euacct/c/b', headers: { 'x-ms-blob-type': 'BlockBlob' }, body: 'x', status: 403 },
  { name: 's3: an empty bucket segment before the bucket', method: 'PUT', path: '/s3//eu-archive/k', body: 'x', status: 400 },
  { name: 's3: an encoded slash in the bucket segment', method: 'PUT', path: '/s3/eu-archive%2Fk', body: 'x', status: 400 },
  { name: 's3: a form upload disguised as Select on a "/" key', method: 'POST', path: '/s3/eu-archive//?select', headers: FORM_HEADERS, body: form({ key: 'k', file: 'x' }), status: 403, record: { operation: 'write' } },
  { name: 's3: Select of another type is no read', method: 'POST', path: '/s3/eu-archive/k?select&select-type=3', body: '<x/>', status: 403, record: { operation: 'write' } },
  { name: 's3: a form upload naming no bucket', method: 'POST', path: '/s3/', headers: FORM_HEADERS, body: form({ bucket: 'eu-archive', key: 'k', file: 'x' }), status: 400 },
  { name: 'gcs: a form upload to / (the bucket in the form key)', method: 'POST', path: '/gcs/', headers: FORM_HEADERS, body: form({ key: 'eu-bucket/obj', file: 'x' }), status: 400 },
  { name: 'gcs: access logs of a bucket delivered to an EU bucket (JSON patch)', method: 'PATCH', path: '/gcs/storage/v1/b/us-bucket', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ logging: { logBucket: 'eu-bucket', logObjectPrefix: 'x' } }), status: 403, destination: { bucket: 'eu-bucket', jurisdiction: 'BE' } },
  { name: 'gcs: access logs delivered to an EU bucket (XML ?logging)', method: 'PUT', path: '/gcs/us-bucket?logging', body: '<Logging><LogBucket>eu-bucket</LogBucket><LogObjectPrefix>x</LogObjectPrefix></Logging>', status: 403, destination: { bucket: 'eu-bucket', jurisdiction: 'BE' } },
  { name: 'gcs: a US bucket insert whose logs go to an EU bucket', method: 'POST', path: '/gcs/storage/v1/b?project=p', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'nb', location: 'US', logging: { logBucket: 'eu-bucket' } }), status: 403, destination: { bucket: 'eu-bucket', jurisdiction: 'BE' } },
  { name: 'gcs: a bucket patch without logging', method: 'PATCH', path: '/gcs/storage/v1/b/us-bucket', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ labels: { a: 'b' } }), status: 200 },
  { name: 'gcs: compose with a method override still reads its destination', method: 'POST', path: '/gcs/storage/v1/b/us-bucket/o/ab/compose', headers: { 'content-type': 'application/json', 'x-http-method-override': 'PATCH' }, body: JSON.stringify({ destination: { bucket: 'eu-bucket' } }), status: 403 },
  { name: 'gcs: relocate with a method override still reads its destination', method: 'POST', path: '/gcs/storage/v1/b/us-bucket/relocate', headers: { 'content-type': 'application/json', 'x-http-method-override': 'PATCH' }, body: JSON.stringify({ destinationLocation: 'EU' }), status: 403 },
  { name: 'gcs: a bucket insert with a method override still reads its location', method: 'POST', path: '/gcs/storage/v1/b?project=p', headers: { 'content-type': 'application/json', 'x-http-method-override': 'PUT' }, body: JSON.stringify({ name: 'nb', location: 'EU' }), status: 403 },
  { name: 'gcs: compose with a raw slash in the object name', method: 'POST', path: '/gcs/storage/v1/b/us-bucket/o/a/b/compose', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ destination: { bucket: 'eu-bucket' } }), status: 400 },
  { name: 'gcs: an upload_id the proxy cannot read', method: 'PUT', path: '/gcs/upload/storage/v1/b/us-bucket/o?uploadType=resumable&upload_id=ABC%ZZ', body: 'x', status: 400 },
  { name: 's3: a SigV2 request records who claims to sign it, unverified', method: 'PUT', path: '/s3/us-data/k', headers: { authorization: 'AWS AKIDV2EXAMPLE:c2lnbmF0dXJlVjI=' }, body: 'x', status: 200, record: { principal: 'AKIDV2EXAMPLE' } },
  { name: 's3: a SigV2 presigned URL records its key id', method: 'GET', path: '/s3/us-data/k?AWSAccessKeyId=AKIDV2PRESIGNED&Expires=1999999999&Signature=c2lnbmF0dXJlVjI%3D', status: 200, record: { principal: 'AKIDV2PRESIGNED' } },
  { name: 'gcs: an encoded slash in a JSON bucket segment', method: 'POST', path: '/gcs/upload/storage/v1/b/us%2Fbucket/o?uploadType=media&name=x', body: 'x', status: 400 },
];

/** Path-style and virtual-hosted S3, an AWS-like upstream whose request signals count, and Cloud Storage: US except the EU buckets. */
function startCorpusProxy(url: string): Promise<RunningProxy> {
  return startProxy({
    location: { network: false },
    upstreams: [
      { name: 's3', url, provider: 's3', route: { path_prefix: '/s3', strip_prefix: true }, region: 'us-east-1', buckets: { 'eu-archive': 'eu-west-1', 'us-data': 'us-east-1' } },
      { name: 's3-vhost', url, provider: 's3', route: { host: '*.s3.internal' }, region: 'us-east-1', buckets: { 'eu-archive': 'eu-west-1' } },
      { name: 'aws', url, provider: 's3', route: { path_prefix: '/aws', strip_prefix: true }, region: 'us-east-1', request_signals: true, buckets: { 'eu-archive': 'eu-west-1' } },
      { name: 'gcs', url, provider: 'gcs', route: { path_prefix: '/gcs', strip_prefix: true }, jurisdiction: 'US', request_signals: true, buckets: { 'eu-bucket': 'europe-west1' } },
      // Azurite-style: the account is the first path segment.
      { name: 'az', url, provider: 'azure', route: { path_prefix: '/az', strip_prefix: true }, region: 'eastus', accounts: { euacct: 'westeurope', devstoreaccount1: 'eastus' }, buckets: { eucontainer: 'westeurope' } },
    ],
    rules: [{ name: 'writes-us', match: { operations: ['write'] }, allow_jurisdictions: ['US'], mode: 'enforce' }],
  });
}

interface Answer {
  status: number;
  body: string;
}

function send(port: number, c: Case): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { host: c.host ?? '127.0.0.1', ...c.headers };
    if (c.body !== undefined && headers['transfer-encoding'] === undefined) headers['content-length'] = String(Buffer.byteLength(c.body));
    const req = httpRequest({ host: '127.0.0.1', port, method: c.method, path: c.path, headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end(c.body);
  });
}

describe('the escape corpus: the proxy decides on what the storage acts on', () => {
  let upstream: RecordingUpstream;
  let proxy: RunningProxy;

  beforeAll(async () => {
    upstream = await startRecordingUpstream();
    proxy = await startCorpusProxy(upstream.url);
  });
  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  it.each(CASES.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    upstream.reset();
    const before = proxy.decisions().length;
    const answer = await send(proxy.port, c);
    expect(answer.status).toBe(c.status);
    if (c.message !== undefined) expect(answer.body).toContain(c.message);
    const records = proxy.decisions().slice(before);
    if (c.status === 403 || c.status === 400) {
      // Not one byte of a refused request reaches the storage.
      expect(upstream.requests).toHaveLength(0);
      expect(upstream.bytesReceived).toBe(0);
    } else {
      expect(upstream.requests).toHaveLength(1);
      expect(upstream.requests[0]!.bodyBytes).toBe(c.body === undefined ? 0 : Buffer.byteLength(c.body));
    }
    if (c.status === 400) {
      expect(records).toHaveLength(0);
      return;
    }
    expect(records).toHaveLength(1);
    const record = records[0]!;
    expect(record.decision).toBe(c.status === 403 ? 'block' : 'allow');
    if (c.record) expect(record).toMatchObject(c.record);
    // A principal nobody verified is recorded as a claim only.
    if (record.principal !== undefined) expect('principal_verified' in record).toBe(false);
    // Signatures never reach the log.
    expect(proxy.decisionLogText()).not.toContain('c2lnbmF0dXJl');
    if (c.destination) {
      expect(record.location.signals).toContainEqual(expect.objectContaining({ source: 'destination', ...c.destination }));
    }
  });

  it('a body that names one destination many times is recorded with it once: a batch of 100 calls, 1,000 replication rules', async () => {
    const destinationSignals = (record: { location: { signals: readonly { source: string; bucket?: string }[] } }) =>
      record.location.signals.filter((s) => s.source === 'destination' && s.bucket === 'eu-bucket');
    const calls = Array.from({ length: 100 }, (_, i) => `DELETE /storage/v1/b/eu-bucket/o/o${i} HTTP/1.1\r\n`);
    const before = proxy.decisions().length;
    const batched = await send(proxy.port, { name: '', method: 'POST', path: '/gcs/batch/storage/v1', headers: BATCH_HEADERS, body: batch(...calls), status: 403 });
    expect(batched.status).toBe(403);
    const batchRecord = proxy.decisions().slice(before)[0]!;
    expect(destinationSignals(batchRecord)).toHaveLength(1);
    expect(destinationSignals(batchRecord)[0]).toMatchObject({ jurisdiction: 'BE' });

    const rule = (i: number) => `<Rule><ID>r${i}</ID><Priority>${i}</Priority><Filter/><Status>Enabled</Status><DeleteMarkerReplication><Status>Disabled</Status></DeleteMarkerReplication><Destination><Bucket>${ARN('eu-archive')}</Bucket></Destination></Rule>`;
    const rules = `<ReplicationConfiguration><Role>arn:aws:iam::123456789012:role/r</Role>${Array.from({ length: 1000 }, (_, i) => rule(i + 1)).join('')}</ReplicationConfiguration>`;
    const from = proxy.decisions().length;
    const replicated = await send(proxy.port, { name: '', method: 'PUT', path: '/s3/us-data?replication', body: rules, status: 403 });
    expect(replicated.status).toBe(403);
    const replicationRecord = proxy.decisions().slice(from)[0]!;
    expect(replicationRecord.location.signals.filter((s) => s.source === 'destination' && s.bucket === 'eu-archive')).toHaveLength(1);
    // The record stays the size of what was found, not of the body.
    expect(JSON.stringify(replicationRecord).length).toBeLessThan(4096);
  });
});

describe('continuations add the stored location to their own signals', () => {
  let upstream: RecordingUpstream;
  let proxy: RunningProxy;

  beforeAll(async () => {
    upstream = await startRecordingUpstream({
      respond: (req) => {
        if (req.method === 'POST' && req.url.includes('uploads')) {
          return { status: 200, headers: { 'content-type': 'application/xml' }, body: '<InitiateMultipartUploadResult><Bucket>us-data</Bucket><Key>k</Key><UploadId>up-1</UploadId></InitiateMultipartUploadResult>' };
        }
        if (req.method === 'POST' && req.url.includes('uploadType=resumable') && !req.url.includes('upload_id')) {
          return { status: 200, headers: { location: 'https://storage.googleapis.com/upload/storage/v1/b/us-bucket/o?uploadType=resumable&name=x&upload_id=sess-1' } };
        }
        return { status: 200, body: 'ok' };
      },
    });
    proxy = await startCorpusProxy(upstream.url);
  });
  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  const step = async (c: Omit<Case, 'name'>) => {
    upstream.reset();
    const before = proxy.decisions().length;
    const answer = await send(proxy.port, { name: '', ...c });
    return { status: answer.status, record: proxy.decisions().slice(before)[0], reached: upstream.requests.length };
  };

  it('an S3 part sent with an EU scope for an upload started in the US is refused; its record shows both', async () => {
    expect((await step({ method: 'POST', path: '/aws/us-data/k?uploads', headers: { authorization: scope('us-east-1') }, status: 200 })).status).toBe(200);
    const eu = await step({ method: 'PUT', path: '/aws/us-data/k?partNumber=1&uploadId=up-1', headers: { authorization: scope('eu-west-1') }, body: 'part', status: 403 });
    expect(eu).toMatchObject({ status: 403, reached: 0, record: { reason: 'location_conflict', upload: { kind: 'multipart', known: true } } });
    expect(eu.record!.location.signals).toContainEqual(expect.objectContaining({ source: 'sigv4', value: 'eu-west-1', jurisdiction: 'IE' }));
    const us = await step({ method: 'PUT', path: '/aws/us-data/k?partNumber=1&uploadId=up-1', headers: { authorization: scope('us-east-1') }, body: 'part', status: 200 });
    expect(us).toMatchObject({ status: 200, reached: 1, record: { decision: 'allow', upload: { known: true } } });
    // The same upload id for another object is an upload the proxy never saw.
    const other = await step({ method: 'PUT', path: '/aws/us-data/other?partNumber=1&uploadId=up-1', headers: { authorization: scope('us-east-1') }, body: 'part', status: 403 });
    expect(other).toMatchObject({ status: 403, reached: 0, record: { reason: 'unknown_location', upload: { known: false } } });
  });

  it('a Cloud Storage upload_id does not replace a request’s own signals, nor move the session to another bucket', async () => {
    const start = await step({ method: 'POST', path: '/gcs/upload/storage/v1/b/us-bucket/o?uploadType=resumable&name=x', status: 200 });
    expect(start.status).toBe(200);
    const insert = await step({
      method: 'POST',
      path: '/gcs/storage/v1/b?project=p&upload_id=sess-1',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'new-bucket', location: 'EU' }),
      status: 403,
    });
    expect(insert).toMatchObject({ status: 403, reached: 0, record: { decision: 'block', upload: { known: true } } });
    expect(insert.record!.location.signals).toContainEqual(expect.objectContaining({ source: 'create-bucket', value: 'EU' }));
    const chunk = await step({ method: 'PUT', path: '/gcs/upload/storage/v1/b/us-bucket/o?uploadType=resumable&upload_id=sess-1', body: 'chunk', status: 200 });
    expect(chunk).toMatchObject({ status: 200, reached: 1, record: { decision: 'allow', upload: { known: true } } });
    const moved = await step({ method: 'PUT', path: '/gcs/upload/storage/v1/b/eu-bucket/o?uploadType=resumable&upload_id=sess-1', body: 'chunk', status: 403 });
    expect(moved).toMatchObject({ status: 403, reached: 0, record: { reason: 'unknown_location' } });
  });
});
