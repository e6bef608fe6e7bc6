import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { LookupAddress, LookupOptions } from 'node:dns';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import pino from 'pino';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { stringify } from 'yaml';
import {
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { BlobServiceClient, StorageSharedKeyCredential } from '@azure/storage-blob';
import { Redis } from 'ioredis';
import type { DecisionRecord } from '../../src/audit/record.js';
import { explainCommand } from '../../src/cli/explain.js';
import { parseConfig } from '../../src/config/load.js';
import { compileUpstreams, targetFor } from '../../src/plan/route.js';
import { createResidencyProxy, parseConfigText, type ResidencyProxy } from '../../src/server.js';
import { startAzurite, type AzuriteHandle } from '../helpers/azurite.js';
import { decisionsOf, startProxy, type RunningProxy } from '../helpers/proxy.js';
import { S3RVER_CREDENTIALS, startS3rver, type S3rverHandle } from '../helpers/s3rver.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/upstream.js';

/*
 * Location from the request itself (issue #4): S3 Host names and SigV4
 * scopes, create-bucket bodies, bucket region discovery shared through
 * Redis, multipart and resumable-upload continuity, Azure account mapping,
 * and `{host}` upstreams, with real SDKs (AWS SDK v3 against s3rver, Azure
 * SDK against Azurite) and recording upstreams where the provider's own
 * behaviour (x-amz-bucket-region, GCS) has to be stood in for.
 *
 * s3rver and the recording upstreams run on 127.0.0.1, so every upstream
 * here sets `request_signals: true` explicitly (the default is on only for
 * amazonaws.com, googleapis.com and core.windows.net hosts).
 */

const MiB = 1024 * 1024;
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
// One key prefix per run: parallel runs and leftovers never meet; removed afterwards.
const PREFIX = `residency-test:${randomUUID()}:`;
const WRITE_RULE = { name: 'user-data-writes', match: { operations: ['write'] }, allow_jurisdictions: ['US'], mode: 'enforce' };
const DENIED = { name: 'AccessDenied', $metadata: { httpStatusCode: 403 } };

function s3Client(endpoint: string, region: string, credentials: { accessKeyId: string; secretAccessKey: string } = S3RVER_CREDENTIALS): S3Client {
  return new S3Client({
    endpoint,
    region,
    forcePathStyle: true,
    credentials,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

const since = (proxy: RunningProxy, from: number): DecisionRecord[] => proxy.decisions().slice(from);
const sources = (r: DecisionRecord | undefined) => r?.location.signals.map((s) => `${s.source}:${s.value}`);
const rejected = async (app: ResidencyProxy, code: string) =>
  (await app.metrics.rejectedRequests.get()).values.find((v) => v.labels.code === code)?.value ?? 0;

let redis: Redis;
beforeAll(async () => {
  redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await redis.connect();
});
afterAll(async () => {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${PREFIX}*`, 'COUNT', 500);
    if (keys.length > 0) await redis.del(...keys);
    cursor = next;
  } while (cursor !== '0');
  redis.disconnect();
});

describe('S3: create-bucket bodies, SigV4 scopes and multipart uploads (AWS SDK v3 → proxy → s3rver)', () => {
  let s3: S3rverHandle;
  let proxy: RunningProxy;
  /** A second replica on the same Redis. */
  let replica: RunningProxy;
  /** Straight to s3rver: what was really stored. */
  let direct: S3Client;

  const config = () => ({
    redis: { url: REDIS_URL, key_prefix: PREFIX },
    upstreams: [
      // s3rver accepts no path prefix, so the SDK's /s3-us prefix is stripped (s3rver checks no signatures).
      { name: 's3-us', url: s3.endpoint, provider: 's3', route: { path_prefix: '/s3-us', strip_prefix: true }, region: 'us-east-1', request_signals: true },
    ],
    rules: [WRITE_RULE],
  });

  beforeAll(async () => {
    s3 = await startS3rver({ buckets: ['mp-bucket'] });
    proxy = await startProxy(config());
    replica = await startProxy(config());
    direct = s3Client(s3.endpoint, 'us-east-1');
  });
  afterAll(async () => {
    direct?.destroy();
    await replica?.close();
    await proxy?.close();
    await s3?.close();
  });

  it('refuses CreateBucket with LocationConstraint eu-west-1 to a US upstream and creates nothing; allows it without one', async () => {
    const from = proxy.decisions().length;
    const client = s3Client(`${proxy.url}/s3-us`, 'us-east-1');
    try {
      await expect(
        client.send(new CreateBucketCommand({ Bucket: 'eu-wanted', CreateBucketConfiguration: { LocationConstraint: 'eu-west-1' } })),
      ).rejects.toMatchObject(DENIED);
      await client.send(new CreateBucketCommand({ Bucket: 'us-default' }));
    } finally {
      client.destroy();
    }
    await expect(direct.send(new HeadBucketCommand({ Bucket: 'eu-wanted' }))).rejects.toMatchObject({ $metadata: { httpStatusCode: 404 } });
    expect(readdirSync(s3.directory)).not.toContain('eu-wanted');
    await direct.send(new HeadBucketCommand({ Bucket: 'us-default' }));

    const [refused, allowed] = since(proxy, from);
    expect(refused).toMatchObject({
      method: 'PUT',
      bucket: 'eu-wanted',
      decision: 'block',
      effective: 'refused',
      reason: 'location_conflict',
      status: 403,
      principal: S3RVER_CREDENTIALS.accessKeyId,
      location: { jurisdictions: ['US', 'IE'] },
    });
    expect(sources(refused)).toEqual(['declared:us-east-1', 'sigv4:us-east-1', 'create-bucket:eu-west-1']);
    expect(allowed).toMatchObject({ bucket: 'us-default', decision: 'allow', reason: 'jurisdiction_allowed', status: 200 });
    // No constraint: S3's default, us-east-1.
    expect(sources(allowed)).toEqual(['declared:us-east-1', 'sigv4:us-east-1', 'create-bucket:us-east-1']);
  });

  it('refuses a write signed for eu-central-1 to a US-declared upstream as location_conflict', async () => {
    const from = proxy.decisions().length;
    const client = s3Client(`${proxy.url}/s3-us`, 'eu-central-1');
    try {
      await expect(client.send(new PutObjectCommand({ Bucket: 'us-default', Key: 'scoped.txt', Body: 'signed for Frankfurt' }))).rejects.toMatchObject(DENIED);
    } finally {
      client.destroy();
    }
    await expect(direct.send(new HeadObjectCommand({ Bucket: 'us-default', Key: 'scoped.txt' }))).rejects.toMatchObject({
      $metadata: { httpStatusCode: 404 },
    });
    const [r] = since(proxy, from);
    expect(r).toMatchObject({ reason: 'location_conflict', effective: 'refused', location: { jurisdictions: ['US', 'DE'] } });
    expect(sources(r)).toEqual(['declared:us-east-1', 'sigv4:eu-central-1']);
  });

  it('refuses a presigned PUT URL generated for eu-west-1; one for us-east-1 stores the object', async () => {
    const from = proxy.decisions().length;
    const eu = s3Client(`${proxy.url}/s3-us`, 'eu-west-1');
    const us = s3Client(`${proxy.url}/s3-us`, 'us-east-1');
    try {
      const euUrl = await getSignedUrl(eu, new PutObjectCommand({ Bucket: 'us-default', Key: 'presigned.txt' }), { expiresIn: 300 });
      const usUrl = await getSignedUrl(us, new PutObjectCommand({ Bucket: 'us-default', Key: 'presigned.txt' }), { expiresIn: 300 });
      expect(euUrl).toContain('X-Amz-Credential=');
      const refused = await request(euUrl, { method: 'PUT', body: 'presigned for Ireland' });
      const refusedBody = await refused.body.text();
      expect(refused.statusCode).toBe(403);
      expect(refusedBody).toContain('<Code>AccessDenied</Code>');
      await expect(direct.send(new HeadObjectCommand({ Bucket: 'us-default', Key: 'presigned.txt' }))).rejects.toMatchObject({
        $metadata: { httpStatusCode: 404 },
      });
      const stored = await request(usUrl, { method: 'PUT', body: 'presigned for Virginia' });
      await stored.body.dump();
      expect(stored.statusCode).toBe(200);
    } finally {
      eu.destroy();
      us.destroy();
    }
    expect((await direct.send(new HeadObjectCommand({ Bucket: 'us-default', Key: 'presigned.txt' }))).ContentLength).toBe(22);
    const [refused, allowed] = since(proxy, from);
    expect(refused).toMatchObject({ reason: 'location_conflict', principal: S3RVER_CREDENTIALS.accessKeyId });
    expect(sources(refused)).toEqual(['declared:us-east-1', 'sigv4:eu-west-1']);
    expect(allowed).toMatchObject({ decision: 'allow', status: 200 });
    // The query (credential, signature) never reaches the log.
    expect(proxy.decisionLogText()).not.toContain('X-Amz-');
  });

  it('lets the parts of an allowed multipart upload through, on this replica and another sharing Redis', async () => {
    const from = proxy.decisions().length;
    const client = s3Client(`${proxy.url}/s3-us`, 'us-east-1');
    const body = randomBytes(11 * MiB);
    try {
      const upload = new Upload({ client, params: { Bucket: 'mp-bucket', Key: 'dir/big.bin', Body: body }, partSize: 5 * MiB, queueSize: 2 });
      await upload.done();
    } finally {
      client.destroy();
    }
    expect((await direct.send(new HeadObjectCommand({ Bucket: 'mp-bucket', Key: 'dir/big.bin' }))).ContentLength).toBe(body.length);
    const records = since(proxy, from);
    const parts = records.filter((r) => r.upload !== undefined);
    // 3 × UploadPart + CompleteMultipartUpload, each decided on the location the upload started with.
    expect(parts).toHaveLength(4);
    for (const r of parts) {
      expect(r).toMatchObject({ upload: { kind: 'multipart', known: true }, decision: 'allow', effective: 'forwarded', location: { jurisdictions: ['US'] } });
    }
    expect(await redis.keys(`${PREFIX}upload:multipart:*`)).not.toHaveLength(0);

    // Started here, continued on the other replica: it reads the upload's location from Redis.
    const a = s3Client(`${proxy.url}/s3-us`, 'us-east-1');
    const b = s3Client(`${replica.url}/s3-us`, 'us-east-1');
    try {
      const { UploadId } = await a.send(new CreateMultipartUploadCommand({ Bucket: 'mp-bucket', Key: 'shared.bin' }));
      const part = await b.send(new UploadPartCommand({ Bucket: 'mp-bucket', Key: 'shared.bin', UploadId, PartNumber: 1, Body: randomBytes(1024) }));
      await b.send(
        new CompleteMultipartUploadCommand({ Bucket: 'mp-bucket', Key: 'shared.bin', UploadId, MultipartUpload: { Parts: [{ ETag: part.ETag!, PartNumber: 1 }] } }),
      );
    } finally {
      a.destroy();
      b.destroy();
    }
    expect(replica.decisions().map((r) => [r.upload, r.decision])).toEqual([
      [{ kind: 'multipart', known: true }, 'allow'],
      [{ kind: 'multipart', known: true }, 'allow'],
    ]);
  });

  it('refuses an UploadPart for an upload the proxy never saw (fail closed), and nothing is stored', async () => {
    // Started behind the proxy's back, straight on s3rver.
    const { UploadId } = await direct.send(new CreateMultipartUploadCommand({ Bucket: 'mp-bucket', Key: 'sneaky.bin' }));
    const from = proxy.decisions().length;
    const client = s3Client(`${proxy.url}/s3-us`, 'us-east-1');
    try {
      await expect(
        client.send(new UploadPartCommand({ Bucket: 'mp-bucket', Key: 'sneaky.bin', UploadId, PartNumber: 1, Body: randomBytes(64 * 1024) })),
      ).rejects.toMatchObject(DENIED);
    } finally {
      client.destroy();
    }
    const [r] = since(proxy, from);
    // The request's own location (declared us-east-1) joins the stored one, which is unknown: never waved through.
    expect(r).toMatchObject({
      upload: { kind: 'multipart', known: false },
      decision: 'block',
      effective: 'refused',
      reason: 'unknown_location',
      location: { unplaced: true },
    });
    expect(r!.location.signals).toContainEqual({ source: 'upload', value: 'unknown upload', jurisdiction: null });
    // (s3rver has no ListParts; the recording-upstream case below shows nothing is sent.)
    await expect(direct.send(new HeadObjectCommand({ Bucket: 'mp-bucket', Key: 'sneaky.bin' }))).rejects.toMatchObject({
      $metadata: { httpStatusCode: 404 },
    });
  });
});

describe('S3 create-bucket bodies on the wire (recording upstream)', () => {
  let upstream: RecordingUpstream;
  let proxy: RunningProxy;

  beforeAll(async () => {
    upstream = await startRecordingUpstream({ respond: () => ({ status: 200, headers: { etag: '"0"', 'content-length': '0' }, body: '' }) });
    proxy = await startProxy({
      upstreams: [
        { name: 'rec', url: upstream.url, provider: 's3', route: { path_prefix: '/rec', strip_prefix: true }, region: 'us-east-1', request_signals: true },
        // An S3-compatible store: no request signals, the body is not inspected.
        { name: 'minio', url: upstream.url, provider: 's3', route: { path_prefix: '/minio', strip_prefix: true }, region: 'us-east-1' },
      ],
      rules: [WRITE_RULE],
    });
  });
  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  const xml = (constraint: string) =>
    `<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LocationConstraint>${constraint}</LocationConstraint></CreateBucketConfiguration>`;

  it('forwards exactly the inspected bytes, Content-Length or chunked', async () => {
    upstream.reset();
    const body = xml('us-west-2');
    // Expect: 100-continue: the proxy asks for the body (it decides on it) before deciding.
    const viaLength = await putWithExpect(`${proxy.url}/rec/b1`, body);
    expect(viaLength.continued).toBe(true);
    // A two-chunk stream has no known length: sent chunked.
    const viaChunks = await request(`${proxy.url}/rec/b2`, {
      method: 'PUT',
      body: Readable.from([Buffer.from(body.slice(0, 40)), Buffer.from(body.slice(40))]),
    });
    await viaChunks.body.dump();
    expect([viaLength.status, viaChunks.statusCode]).toEqual([200, 200]);
    expect(upstream.requests.map((r) => [r.url, r.bodyHead.toString(), r.headers['content-length']])).toEqual([
      ['/b1', body, String(Buffer.byteLength(body))],
      ['/b2', body, String(Buffer.byteLength(body))],
    ]);
    expect(proxy.decisions().slice(-2).map((r) => [r.bytes_in, sources(r)])).toEqual([
      [Buffer.byteLength(body), ['declared:us-east-1', 'create-bucket:us-west-2']],
      [Buffer.byteLength(body), ['declared:us-east-1', 'create-bucket:us-west-2']],
    ]);
  });

  it('answers 400 before any decision for a body over 64 KiB or malformed, and counts it', async () => {
    upstream.reset();
    const from = proxy.decisions().length;
    const before = await rejected(proxy.app, 'create_bucket_body_too_large');
    const big = await request(`${proxy.url}/rec/big`, { method: 'PUT', body: Buffer.alloc(65 * 1024, 0x20) });
    expect(big.statusCode).toBe(400);
    expect(await big.body.text()).toContain('<Code>InvalidRequest</Code>');
    const bad = await request(`${proxy.url}/rec/bad`, { method: 'PUT', body: '<!DOCTYPE x [<!ENTITY a "eu-west-1">]><CreateBucketConfiguration/>' });
    expect(bad.statusCode).toBe(400);
    await bad.body.dump();
    expect(upstream.requests).toHaveLength(0);
    expect(since(proxy, from)).toHaveLength(0);
    expect(await rejected(proxy.app, 'create_bucket_body_too_large')).toBe(before + 1);
    expect(await rejected(proxy.app, 'create_bucket_malformed')).toBeGreaterThanOrEqual(1);
  });

  it('sends nothing upstream for a part of an unknown upload, even on an S3-compatible upstream', async () => {
    upstream.reset();
    const from = proxy.decisions().length;
    for (const prefix of ['/rec', '/minio']) {
      const res = await request(`${proxy.url}${prefix}/bkt/obj?partNumber=1&uploadId=never-seen`, { method: 'PUT', body: randomBytes(1024) });
      await res.body.dump();
      expect(res.statusCode).toBe(403);
    }
    expect(upstream.requests).toHaveLength(0);
    expect(since(proxy, from).map((r) => [r.upstream, r.reason, r.upload])).toEqual([
      ['rec', 'unknown_location', { kind: 'multipart', known: false }],
      ['minio', 'unknown_location', { kind: 'multipart', known: false }],
    ]);
  });

  it('matches exceptions only on a SigV4 principal whose signature it verified', async () => {
    const keysDir = mkdtempSync(join(tmpdir(), 'residency-keys-'));
    const keysFile = join(keysDir, 'principals');
    const secret = 'x'.repeat(40);
    writeFileSync(keysFile, `EXEMPTKEY ${secret}\n`);
    const excepted = await startProxy({
      upstreams: [{ name: 'rec', url: upstream.url, provider: 's3', route: { path_prefix: '/rec', strip_prefix: true }, region: 'us-east-1', request_signals: true }],
      rules: [WRITE_RULE],
      principal_keys: { file: keysFile },
      exceptions: [
        { name: 'migration', match: { principals: ['EXEMPTKEY'] }, action: 'allow', expires: '2999-01-01T00:00:00Z', ticket: 'CHG-1', reason: 'one-off copy to Frankfurt' },
      ],
    });
    const exempt = s3Client(`${excepted.url}/rec`, 'eu-central-1', { accessKeyId: 'EXEMPTKEY', secretAccessKey: secret });
    // Claims the excepted key id without knowing its secret: the claim must not count.
    const impostor = s3Client(`${excepted.url}/rec`, 'eu-central-1', { accessKeyId: 'EXEMPTKEY', secretAccessKey: 'y'.repeat(40) });
    const other = s3Client(`${excepted.url}/rec`, 'eu-central-1', { accessKeyId: 'OTHERKEY', secretAccessKey: secret });
    try {
      upstream.reset();
      await exempt.send(new PutObjectCommand({ Bucket: 'bkt', Key: 'k', Body: 'x' }));
      await expect(impostor.send(new PutObjectCommand({ Bucket: 'bkt', Key: 'k2', Body: 'x' }))).rejects.toMatchObject(DENIED);
      await expect(other.send(new PutObjectCommand({ Bucket: 'bkt', Key: 'k', Body: 'x' }))).rejects.toMatchObject(DENIED);
      expect(excepted.decisions().map((r) => [r.principal, r.principal_verified, r.decision, r.reason, r.exception?.name])).toEqual([
        ['EXEMPTKEY', true, 'allow', 'exception_allowed', 'migration'],
        ['EXEMPTKEY', undefined, 'block', 'location_conflict', undefined],
        ['OTHERKEY', undefined, 'block', 'location_conflict', undefined],
      ]);
      expect(upstream.requests.map((r) => r.url)).toEqual(['/bkt/k?x-id=PutObject']);
      expect(excepted.decisionLogText()).not.toContain(secret);
    } finally {
      exempt.destroy();
      impostor.destroy();
      other.destroy();
      await excepted.close();
      rmSync(keysDir, { recursive: true, force: true });
    }
  });

  it('leaves an S3-compatible upstream alone: no body inspection, no request signals', async () => {
    upstream.reset();
    const from = proxy.decisions().length;
    const res = await request(`${proxy.url}/minio/anywhere`, { method: 'PUT', body: xml('eu-west-1') });
    await res.body.dump();
    expect(res.statusCode).toBe(200);
    expect(sources(since(proxy, from)[0])).toEqual(['declared:us-east-1']);
  });
});

describe('bucket region discovery through the proxy, shared by two replicas on one Redis', () => {
  let upstream: RecordingUpstream;
  let a: RunningProxy;
  let b: RunningProxy;
  const REGIONS: Record<string, string> = { '/us-bucket': 'us-east-2', '/eu-bucket': 'eu-west-1' };

  const config = () => ({
    redis: { url: REDIS_URL, key_prefix: PREFIX },
    upstreams: [
      {
        name: 'aws-undeclared',
        url: upstream.url,
        provider: 's3',
        route: { path_prefix: '/d', strip_prefix: true },
        discovery: { enabled: true, ttl: 600, negative_ttl: 30, timeout: 2 },
      },
    ],
    rules: [WRITE_RULE],
  });

  beforeAll(async () => {
    // s3rver sends no x-amz-bucket-region: this stands in for S3's HEAD /BUCKET answer.
    upstream = await startRecordingUpstream({
      respond: (req) => {
        if (req.method === 'HEAD') {
          const region = REGIONS[req.url];
          return region === undefined ? { status: 404, body: '' } : { status: 200, headers: { 'x-amz-bucket-region': region }, body: '' };
        }
        // A response that tells the region on its own (as S3's do): learned without a HEAD.
        if (req.url.startsWith('/learned/')) return { status: 200, headers: { 'x-amz-bucket-region': 'eu-west-2', 'content-length': '2' }, body: 'ok' };
        return { status: 200, headers: { 'content-length': '0' }, body: '' };
      },
    });
    a = await startProxy(config());
    b = await startProxy(config());
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await upstream?.close();
  });

  const put = async (proxy: RunningProxy, path: string) => {
    const res = await request(`${proxy.url}${path}`, { method: 'PUT', body: 'x' });
    await res.body.dump();
    return res.statusCode;
  };
  const heads = (url: string) => upstream.requests.filter((r) => r.method === 'HEAD' && r.url === url).length;

  it('discovers a bucket once, caches it in Redis, and the other replica does not ask again', async () => {
    expect(await put(a, '/d/us-bucket/one')).toBe(200);
    expect(await put(a, '/d/us-bucket/two')).toBe(200);
    expect(heads('/us-bucket')).toBe(1);
    const [first] = a.decisions();
    expect(first).toMatchObject({ bucket: 'us-bucket', decision: 'allow', location: { jurisdictions: ['US'], region: 'us-east-2' } });
    expect(sources(first)).toEqual(['discovered:us-east-2']);
    expect(await redis.get(`${PREFIX}bucket-region:${upstream.url}|us-bucket`)).toBe('us-east-2');

    expect(await put(b, '/d/us-bucket/three')).toBe(200);
    expect(heads('/us-bucket')).toBe(1);
    expect(sources(b.decisions()[0])).toEqual(['discovered:us-east-2']);
  });

  it('refuses writes to a bucket discovered elsewhere, and to one nothing can place', async () => {
    const from = a.decisions().length;
    expect(await put(a, '/d/eu-bucket/k')).toBe(403);
    expect(await put(a, '/d/nowhere/k')).toBe(403);
    expect(upstream.requests.filter((r) => r.method === 'PUT' && (r.url.startsWith('/eu-bucket') || r.url.startsWith('/nowhere')))).toHaveLength(0);
    expect(since(a, from).map((r) => [r.bucket, r.reason, sources(r)])).toEqual([
      ['eu-bucket', 'jurisdiction_not_allowed', ['discovered:eu-west-1']],
      ['nowhere', 'unknown_location', []],
    ]);
  });

  it('learns a region from x-amz-bucket-region on any response', async () => {
    const res = await request(`${a.url}/d/learned/k`);
    await res.body.dump();
    // Remembering is off the request path: wait for it to land.
    await vi.waitFor(async () => expect(await redis.get(`${PREFIX}bucket-region:${upstream.url}|learned`)).toBe('eu-west-2'));
    const from = a.decisions().length;
    expect(await put(a, '/d/learned/k')).toBe(403);
    expect(heads('/learned')).toBe(0);
    expect(sources(since(a, from)[0])).toEqual(['discovered:eu-west-2']);
  });
});

describe('Cloud Storage: JSON bucket insert and resumable sessions (recording upstream)', () => {
  let upstream: RecordingUpstream;
  let proxy: RunningProxy;
  const SESSION = 'ADPycdt-session_1';

  beforeAll(async () => {
    upstream = await startRecordingUpstream({
      respond: (req) => {
        if (req.method === 'POST' && req.url.includes('uploadType=resumable')) {
          return {
            status: 200,
            headers: { location: `https://storage.googleapis.com/upload/storage/v1/b/us-bkt/o?uploadType=resumable&name=obj&upload_id=${SESSION}`, 'content-length': '0' },
            body: '',
          };
        }
        return { status: 200, headers: { 'content-type': 'application/json' }, body: '{}' };
      },
    });
    proxy = await startProxy({
      upstreams: [
        { name: 'gcs', url: upstream.url, provider: 'gcs', route: { path_prefix: '/gcs', strip_prefix: true }, jurisdiction: 'US', request_signals: true },
      ],
      rules: [WRITE_RULE],
    });
  });
  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  const insert = (location: string) =>
    request(`${proxy.url}/gcs/storage/v1/b?project=p`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: `${location.toLowerCase()}-bkt`, location }),
    });

  it('refuses a bucket insert with location EU and allows US', async () => {
    upstream.reset();
    const from = proxy.decisions().length;
    const eu = await insert('EU');
    const euBody = (await eu.body.json()) as { error: { code: number } };
    expect(eu.statusCode).toBe(403);
    expect(euBody.error.code).toBe(403);
    const us = await insert('US');
    await us.body.dump();
    expect(us.statusCode).toBe(200);
    expect(upstream.requests.map((r) => JSON.parse(r.bodyHead.toString()) as unknown)).toEqual([{ name: 'us-bkt', location: 'US' }]);
    const [refused, allowed] = since(proxy, from);
    expect(refused).toMatchObject({ decision: 'block', reason: 'location_conflict' });
    expect(refused!.location.jurisdictions).toContain('DE');
    expect(allowed).toMatchObject({ decision: 'allow', location: { jurisdictions: ['US'] } });
    expect(sources(allowed)).toEqual(['declared:US', 'create-bucket:US']);
  });

  it('decides a resumable session’s chunks on the location it started with; an unknown session fails closed', async () => {
    upstream.reset();
    const from = proxy.decisions().length;
    const start = await request(`${proxy.url}/gcs/upload/storage/v1/b/us-bkt/o?uploadType=resumable&name=obj`, { method: 'POST' });
    await start.body.dump();
    expect(start.statusCode).toBe(200);
    const chunk = await request(`${proxy.url}/gcs/upload/storage/v1/b/us-bkt/o?uploadType=resumable&name=obj&upload_id=${SESSION}`, {
      method: 'PUT',
      body: randomBytes(1024),
    });
    await chunk.body.dump();
    expect(chunk.statusCode).toBe(200);
    const stranger = await request(`${proxy.url}/gcs/upload/storage/v1/b/us-bkt/o?uploadType=resumable&name=obj&upload_id=never-seen`, {
      method: 'PUT',
      body: randomBytes(1024),
    });
    await stranger.body.dump();
    expect(stranger.statusCode).toBe(403);
    expect(since(proxy, from).map((r) => [r.upload ?? null, r.decision, r.reason])).toEqual([
      [null, 'allow', 'jurisdiction_allowed'],
      [{ kind: 'gcs-resumable', known: true }, 'allow', 'jurisdiction_allowed'],
      [{ kind: 'gcs-resumable', known: false }, 'block', 'unknown_location'],
    ]);
  });
});

describe('Azure: account → region mapping (Azure SDK → proxy → Azurite)', () => {
  let azurite: AzuriteHandle;
  let usProxy: RunningProxy;
  let euProxy: RunningProxy;

  const upstreamFor = (accounts: Record<string, string>, region?: string) => ({
    upstreams: [
      {
        name: 'azurite',
        url: `http://127.0.0.1:${azurite.port}`,
        provider: 'azure',
        // No strip_prefix: SharedKey signs the path Azurite must see.
        route: { path_prefix: '/devstoreaccount1' },
        accounts,
        ...(region === undefined ? {} : { region }),
      },
    ],
    rules: [WRITE_RULE],
  });
  const service = (proxy: RunningProxy) =>
    new BlobServiceClient(`${proxy.url}/${azurite.accountName}`, new StorageSharedKeyCredential(azurite.accountName, azurite.accountKey));

  beforeAll(async () => {
    azurite = await startAzurite();
    // Nothing declared for the upstream: the account alone places it.
    usProxy = await startProxy(upstreamFor({ devstoreaccount1: 'eastus' }));
    // The account's location beats the upstream's.
    euProxy = await startProxy(upstreamFor({ devstoreaccount1: 'westeurope' }, 'eastus'));
  });
  afterAll(async () => {
    await usProxy?.close();
    await euProxy?.close();
    await azurite?.close();
  });

  it('allows an account mapped to eastus and refuses one mapped to westeurope', async () => {
    const us = service(usProxy).getContainerClient('acct-us');
    await us.create();
    await us.getBlockBlobClient('a.txt').upload('hello', 5);
    const eu = service(euProxy).getContainerClient('acct-eu');
    await expect(eu.create()).rejects.toMatchObject({ statusCode: 403, code: 'AuthorizationFailure' });
    await expect(eu.getBlockBlobClient('a.txt').upload('hello', 5)).rejects.toMatchObject({ statusCode: 403 });

    const direct = BlobServiceClient.fromConnectionString(azurite.connectionString);
    expect(await direct.getContainerClient('acct-us').getBlockBlobClient('a.txt').exists()).toBe(true);
    expect(await direct.getContainerClient('acct-eu').exists()).toBe(false);

    for (const r of usProxy.decisions().filter((d) => d.operation === 'write')) {
      expect(r).toMatchObject({ decision: 'allow', location: { jurisdictions: ['US'], region: 'eastus' } });
    }
    const refused = euProxy.decisions();
    expect(refused.length).toBeGreaterThanOrEqual(2);
    for (const r of refused) {
      expect(r).toMatchObject({ decision: 'block', effective: 'refused', reason: 'jurisdiction_not_allowed', location: { jurisdictions: ['NL'], region: 'westeurope' } });
    }
  });
});

describe('{host} upstreams: one upstream for every S3 region', () => {
  let upstream: RecordingUpstream;

  beforeAll(async () => {
    upstream = await startRecordingUpstream({ respond: () => ({ status: 200, headers: { 'content-length': '0' }, body: '' }) });
  });
  afterAll(async () => {
    await upstream?.close();
  });

  it('builds the target from the requested host, only for names it would connect to', () => {
    const template = { scheme: 'https:', port: '' };
    expect(targetFor(template, 'bkt.s3.eu-west-1.amazonaws.com')).toEqual({
      origin: 'https://bkt.s3.eu-west-1.amazonaws.com',
      targetHost: 'bkt.s3.eu-west-1.amazonaws.com',
    });
    expect(targetFor({ scheme: 'http:', port: '9000' }, '127.0.0.1')).toEqual({ origin: 'http://127.0.0.1:9000', targetHost: '127.0.0.1:9000' });
    for (const bad of ['[::1]', 'a_b.amazonaws.com', '-x.amazonaws.com', 'a..amazonaws.com', 'x'.repeat(64) + '.amazonaws.com', 'evil.com/x', 'a b']) {
      expect(targetFor(template, bad)).toBeNull();
    }
  });

  it('refuses a {host} URL without a host pattern (it would be an open proxy)', () => {
    const text = stringify({ upstreams: [{ name: 'open', url: 'https://{host}', provider: 's3', route: { path_prefix: '/x' } }] });
    // check-config refuses it…
    expect(() => parseConfigText(text, 'open.yaml')).toThrow(/^open\.yaml: upstreams\[0\]\.url: .*route\.host is not set/m);
    // …and so does compiling it, should it get that far.
    expect(() => compileUpstreams(parseConfig(text, 'open.yaml'))).toThrow(/route\.host is not set/);
  });

  it('forwards to the requested host (loopback: an exact host pattern) and records it as the target', async () => {
    const proxy = await startProxy({
      upstreams: [{ name: 'by-host', url: `http://{host}:${upstream.port}`, provider: 's3', route: { host: '127.0.0.1' }, region: 'us-east-1' }],
      rules: [WRITE_RULE],
    });
    try {
      upstream.reset();
      const res = await request(`${proxy.url}/bkt/k`, { method: 'PUT', body: 'x' });
      await res.body.dump();
      expect(res.statusCode).toBe(200);
      expect(upstream.requests.map((r) => [r.url, r.headers.host])).toEqual([['/bkt/k', `127.0.0.1:${proxy.port}`]]);
      expect(proxy.decisions()[0]).toMatchObject({ bucket: 'bkt', target: { host: `127.0.0.1:${upstream.port}` }, decision: 'allow' });
    } finally {
      await proxy.close();
    }
  });

  it('routes *.amazonaws.com by Host: the region in the name decides, only S3 endpoints under the pattern are contacted', async () => {
    // Every upstream name resolves to the recording upstream on loopback (the test's stand-in for DNS).
    const looked: string[] = [];
    const lookup = (hostname: string, options: LookupOptions, callback: (err: Error | null, address: string | LookupAddress[], family?: number) => void) => {
      looked.push(hostname);
      if (options.all) callback(null, [{ address: '127.0.0.1', family: 4 }]);
      else callback(null, '127.0.0.1', 4);
    };
    const dir = mkdtempSync(join(tmpdir(), 'residency-host-test-'));
    const doc = {
      listen: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0 },
      decision_log: { path: join(dir, 'decisions.log') },
      // No region declared: the Host name (request_signals defaults to true under amazonaws.com) places each request.
      upstreams: [{ name: 'aws', url: `http://{host}:${upstream.port}`, provider: 's3', route: { host: '*.amazonaws.com' } }],
      rules: [WRITE_RULE],
    };
    const app = createResidencyProxy(parseConfigText(stringify(doc), 'aws.yaml'), {
      logger: pino({ level: 'silent' }),
      replica: 'test',
      upstreamConnect: { lookup: lookup as never },
      awaitOutcomes: true,
    });
    try {
      const { proxy } = await app.listen();
      const send = async (host: string, method = 'PUT', path = '/k') => {
        const res = await request(`http://127.0.0.1:${proxy.port}${path}`, { method, headers: { host }, ...(method === 'PUT' ? { body: 'x' } : {}) });
        await res.body.dump();
        return res.statusCode;
      };
      upstream.reset();
      expect(await send('mybucket.s3.us-east-2.amazonaws.com')).toBe(200);
      expect(await send('mybucket.s3.eu-west-1.amazonaws.com')).toBe(403);
      expect(await send('evil.example.com')).toBe(404);
      expect(await send('sqs.us-east-1.amazonaws.com')).toBe(404);
      expect(await send('s3.dualstack.us-west-2.amazonaws.com', 'PUT', '/pathbucket/k')).toBe(200);
      expect(upstream.requests.map((r) => [r.headers.host, r.url])).toEqual([
        ['mybucket.s3.us-east-2.amazonaws.com', '/k'],
        ['s3.dualstack.us-west-2.amazonaws.com', '/pathbucket/k'],
      ]);
      // Only the admitted S3 names were ever resolved (network location resolves each to locate it, refused ones included).
      expect([...new Set(looked)].sort()).toEqual(['mybucket.s3.eu-west-1.amazonaws.com', 'mybucket.s3.us-east-2.amazonaws.com', 's3.dualstack.us-west-2.amazonaws.com']);
      const records = readRecords(doc.decision_log.path);
      expect(records.map((r) => [r.bucket, r.decision, r.target.host, sources(r)])).toEqual([
        ['mybucket', 'allow', `mybucket.s3.us-east-2.amazonaws.com:${upstream.port}`, ['hostname:us-east-2']],
        ['mybucket', 'block', `mybucket.s3.eu-west-1.amazonaws.com:${upstream.port}`, ['hostname:eu-west-1']],
        ['pathbucket', 'allow', `s3.dualstack.us-west-2.amazonaws.com:${upstream.port}`, ['hostname:us-west-2']],
      ]);
    } finally {
      await app.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('explain with request signals (no I/O)', () => {
  let dir: string;
  let configFile: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'residency-explain-test-'));
    configFile = join(dir, 'policy.yaml');
    writeFileSync(
      configFile,
      stringify({
        upstreams: [
          { name: 's3', url: 'https://s3.us-east-1.amazonaws.com', provider: 's3', route: { host: 's3.us-east-1.amazonaws.com' }, region: 'us-east-1' },
          { name: 'undeclared', url: 'https://s3.amazonaws.com', provider: 's3', route: { path_prefix: '/u', strip_prefix: true }, discovery: { enabled: true } },
        ],
        rules: [WRITE_RULE],
      }),
    );
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  async function explain(...args: string[]): Promise<{ code: number; report: Record<string, unknown> }> {
    const out: string[] = [];
    const log = vi.spyOn(console, 'log').mockImplementation((line: string) => void out.push(line));
    try {
      const code = await explainCommand(['--config', configFile, ...args]);
      return { code, report: JSON.parse(out.join('\n')) as Record<string, unknown> };
    } finally {
      log.mockRestore();
    }
  }

  it('reads a create-bucket body from --body, SigV4 scope from -H, and names the lookups it does not do', async () => {
    const body = join(dir, 'create.xml');
    writeFileSync(body, '<CreateBucketConfiguration><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>');
    const auth = 'Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=feedface';
    const created = await explain('PUT', 'http://s3.us-east-1.amazonaws.com/new-bucket', '-H', auth, '--body', body, '--offline');
    expect(created.code).toBe(0);
    expect(created.report).toMatchObject({ principal: 'AKIDEXAMPLE', decision: { action: 'block', reason: 'location_conflict' } });
    expect((created.report.location as { signals: { source: string }[] }).signals.map((s) => s.source)).toEqual([
      'declared',
      'hostname',
      'sigv4',
      'create-bucket',
    ]);
    expect(JSON.stringify(created.report)).not.toContain('feedface');

    const discovered = await explain('PUT', 'http://localhost/u/some-bucket/k', '--offline');
    expect(discovered.report).toMatchObject({ decision: { reason: 'unknown_location' } });
    expect(discovered.report.lookups).toEqual([expect.stringMatching(/^discovery: the proxy asks upstream undeclared where bucket some-bucket is/)]);
  });
});

/** A PUT that sends its body only after 100 Continue (undici's request does not do Expect). */
function putWithExpect(url: string, body: string): Promise<{ status: number; continued: boolean }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'PUT', headers: { expect: '100-continue', 'content-length': Buffer.byteLength(body) } });
    let continued = false;
    req.on('continue', () => {
      continued = true;
      req.end(body);
    });
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, continued }));
    });
    req.on('error', reject);
    req.flushHeaders();
  });
}

function readRecords(file: string): DecisionRecord[] {
  return decisionsOf(readFileSync(file, 'utf8'));
}
