import { createHash, randomBytes } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { readdirSync } from 'node:fs';
import type { ClientRequest, IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { BlobServiceClient, StorageSharedKeyCredential } from '@azure/storage-blob';
import { RECORD_VERSION, type DecisionRecord } from '../../src/audit/record.js';
import { AZURITE_ACCOUNT_KEY, startAzurite } from '../helpers/azurite.js';
import type { AzuriteHandle } from '../helpers/azurite.js';
import { startProxy } from '../helpers/proxy.js';
import type { RunningProxy } from '../helpers/proxy.js';
import { S3RVER_CREDENTIALS, startS3rver } from '../helpers/s3rver.js';
import type { S3rverHandle } from '../helpers/s3rver.js';
import { splitTarget, verifySigV4 } from '../helpers/sigv4.js';
import { startRecordingUpstream } from '../helpers/upstream.js';
import type { RecordedRequest, RecordingUpstream } from '../helpers/upstream.js';
import { randomStream } from '../helpers/streams.js';

/*
 * Real storage SDKs through the real proxy, over loopback sockets: the AWS SDK v3
 * (client-s3 + lib-storage) against s3rver, the Azure SDK against Azurite, and
 * the AWS SDK against the recording upstream where the bytes on the wire matter
 * (SigV4 survival, secrets kept out of the decision log).
 *
 * Routing choices:
 * - S3 (s3rver): the SDK keeps the path of a custom endpoint, so
 *   `endpoint: ${proxy.url}/s3-us` + forcePathStyle sends /s3-us/BUCKET/KEY, and a
 *   `path_prefix: /s3-us, strip_prefix: true` route forwards /BUCKET/KEY. The SDK
 *   signed /s3-us/BUCKET/KEY, so the forwarded request no longer carries a valid
 *   signature; s3rver never verifies signatures, so this is fine here. Against a
 *   verifying S3, a stripped prefix breaks SigV4 (shown below against the
 *   recording upstream): route by Host, or use a prefix without strip_prefix as
 *   the SigV4 tests do. (Routing s3rver by Host instead would mean pointing the
 *   SDK at a name such as localhost, which may resolve to ::1 while the proxy
 *   listens on 127.0.0.1 only.)
 * - Azure (Azurite): SharedKey signs `/ACCOUNT` + the request path, and Azurite
 *   verifies it, so the path must reach Azurite unchanged. Each Azure proxy has a
 *   single upstream routed by `path_prefix: /devstoreaccount1` without
 *   strip_prefix; the region under test is varied by running one proxy per
 *   region. (Routing by Host would need the SDK to send a Host other than the
 *   URL's; `*.localhost` names are not resolvable everywhere.)
 */

const MiB = 1024 * 1024;
const LARGE = 21 * MiB;
const PART = 5 * MiB;

const CONTRACT_FIELDS = [
  'v', 'seq', 'ts', 'id', 'replica', 'policy', 'upstream', 'method', 'path', 'operation', 'target', 'location',
  'rule', 'mode', 'decision', 'effective', 'reason', 'status', 'bytes_in', 'bytes_out', 'duration_ms', 'client',
  'prev', 'hash',
] as const;

/** Distinct SigV4 credentials, so the key id is not the secret (as with s3rver's S3RVER/S3RVER). */
const SIG_CREDENTIALS = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' } as const;

const WRITE_RULE = { name: 'user-data-writes', match: { operations: ['write'] }, allow_jurisdictions: ['US'], mode: 'enforce' };

// ---------------------------------------------------------------------------
// helpers


function sha256(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}

async function sha256OfStream(stream: AsyncIterable<Uint8Array>): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of stream) {
    hash.update(chunk);
    bytes += chunk.length;
  }
  return { sha256: hash.digest('hex'), bytes };
}

function s3Client(
  endpoint: string,
  region: string,
  credentials: { accessKeyId: string; secretAccessKey: string } = S3RVER_CREDENTIALS,
): S3Client {
  return new S3Client({
    endpoint,
    region,
    forcePathStyle: true,
    credentials,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

interface Outgoing {
  method: string;
  /** Path as sent, without the query. */
  path: string;
  query: string;
  authorization: string | undefined;
  expect: string | undefined;
  /** What came back, before the SDK parsed it; unset when no response arrived. */
  response?: { status: number; headers: Record<string, string | string[] | undefined> };
}

/**
 * Every HTTP attempt an S3Client sends (retries included) with the headers it
 * signed, and the raw response: a middleware at the innermost end of the
 * deserialize step runs below the retry and signing middlewares, once per
 * attempt, and sees the response before the SDK turns it into a result or error.
 */
function watchS3(client: S3Client): Outgoing[] {
  const sent: Outgoing[] = [];
  client.middlewareStack.add(
    (next) => async (args) => {
      const req = args.request as {
        method: string;
        path: string;
        query?: Record<string, string | string[] | null>;
        headers: Record<string, string>;
      };
      const header = (name: string) => Object.entries(req.headers).find(([k]) => k.toLowerCase() === name)?.[1];
      const query = Object.entries(req.query ?? {})
        .map(([k, v]) => (v === null ? k : `${k}=${String(v)}`))
        .join('&');
      const entry: Outgoing = { method: req.method, path: req.path, query, authorization: header('authorization'), expect: header('expect') };
      sent.push(entry);
      const out = await next(args);
      const res = out.response as { statusCode: number; headers: Record<string, string> };
      entry.response = { status: res.statusCode, headers: res.headers };
      return out;
    },
    { step: 'deserialize', priority: 'low', name: 'watchS3' },
  );
  return sent;
}

/**
 * Every HTTP request the Azure SDK sends to 127.0.0.1:`port`, with the headers it
 * signed and the response, seen through Node's built-in diagnostics channels.
 * Node publishes `http.client.request.start` when the request is ended, i.e. once
 * the body is written: fine for the Azure SDK, which writes bodies at once, but it
 * would miss an AWS SDK request with `Expect: 100-continue` whose body is never
 * sent (refused), hence the middleware above for S3.
 */
function watchOutgoing(port: number): { requests: Outgoing[]; stop(): void } {
  const requests: Outgoing[] = [];
  const byRequest = new WeakMap<ClientRequest, Outgoing>();
  const onStart = (message: unknown): void => {
    const req = (message as { request: ClientRequest }).request;
    if (req.getHeader('host') !== `127.0.0.1:${port}`) return;
    const { path, query } = splitTarget(req.path);
    const header = (name: string) => {
      const v = req.getHeader(name);
      return v === undefined ? undefined : String(v);
    };
    const entry: Outgoing = { method: req.method, path, query, authorization: header('authorization'), expect: header('expect') };
    byRequest.set(req, entry);
    requests.push(entry);
  };
  const onResponse = (message: unknown): void => {
    const { request: req, response: res } = message as { request: ClientRequest; response: IncomingMessage };
    const entry = byRequest.get(req);
    if (entry) entry.response = { status: res.statusCode ?? 0, headers: res.headers };
  };
  subscribe('http.client.request.start', onStart);
  subscribe('http.client.response.finish', onResponse);
  return {
    requests,
    stop: () => {
      unsubscribe('http.client.request.start', onStart);
      unsubscribe('http.client.response.finish', onResponse);
    },
  };
}

/** Decision records written after the first `from` ones. */
function recordsSince(proxy: RunningProxy, from: number): DecisionRecord[] {
  return proxy.decisions().slice(from);
}

/** Every contract field is present and well-typed; seq, prev and hash chain over the whole log. */
function expectWellFormedLog(proxy: RunningProxy): void {
  const lines = proxy.decisionLogText().split('\n').filter((l) => l.length > 0);
  let prev = '0'.repeat(64);
  // A forwarded write's decision (status null) waits for exactly one outcome record, later in the chain.
  const awaiting = new Set<string>();
  lines.forEach((line, i) => {
    const r = JSON.parse(line) as DecisionRecord & { kind?: string };
    expect(r.v).toBe(RECORD_VERSION);
    expect(r.seq).toBe(i + 1);
    expect(new Date(r.ts).toISOString()).toBe(r.ts);
    expect(r.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(r.replica).toBe('test');
    expect(r.prev).toBe(prev);
    // hash = SHA-256 of the line without its trailing hash field.
    expect(r.hash).toBe(sha256(line.replace(/,"hash":"[0-9a-f]{64}"\}$/, '}')));
    prev = r.hash;
    expect(typeof r.bytes_in).toBe('number');
    expect(r.bytes_out === null || typeof r.bytes_out === 'number').toBe(true);
    expect(r.duration_ms).toBeGreaterThanOrEqual(0);
    if (r.kind === 'outcome') {
      expect(awaiting.delete(r.id), `outcome ${i + 1} names no decision waiting for one`).toBe(true);
      expect(typeof r.status).toBe('number');
      return;
    }
    for (const field of CONTRACT_FIELDS) expect(r, `record ${i + 1} lacks ${field}`).toHaveProperty(field);
    expect(r.policy).toMatch(/^[0-9a-f]{64}$/);
    expect(r.path).not.toContain('?');
    expect(['read', 'write']).toContain(r.operation);
    expect(typeof r.target.host).toBe('string');
    expect(r.target.address === null || typeof r.target.address === 'string').toBe(true);
    expect(Array.isArray(r.location.jurisdictions)).toBe(true);
    expect(Array.isArray(r.location.signals)).toBe(true);
    if (r.status === null) {
      expect([r.operation, r.effective]).toEqual(['write', 'forwarded']);
      awaiting.add(r.id);
    } else {
      expect(typeof r.status).toBe('number');
    }
    expect(r.client).toBe('127.0.0.1');
  });
  expect([...awaiting]).toEqual([]);
}

/**
 * Exactly one record per request the SDK sent, matched through the
 * x-residency-decision-id response header (concurrent multipart parts finish in
 * any order): same method, forwarded path (prefix stripped, no query), status and
 * decision as the response. Returns the records in the order the SDK sent them.
 */
function expectOneRecordPerRequest(records: DecisionRecord[], sent: Outgoing[], stripPrefix = ''): DecisionRecord[] {
  expect(records).toHaveLength(sent.length);
  const byId = new Map(records.map((r) => [r.id, r]));
  expect(byId.size).toBe(records.length);
  return sent.map((s) => {
    const id = s.response?.headers['x-residency-decision-id'];
    const record = typeof id === 'string' ? byId.get(id) : undefined;
    const path = s.path.startsWith(stripPrefix) ? s.path.slice(stripPrefix.length) : s.path;
    expect(record, `no record for ${s.method} ${s.path} (decision id ${String(id)})`).toBeDefined();
    expect([record!.method, record!.path, record!.status, record!.decision]).toEqual([
      s.method,
      path,
      s.response?.status,
      s.response?.headers['x-residency-decision'],
    ]);
    return record!;
  });
}

const isWrite = (r: DecisionRecord) => r.operation === 'write';

// ---------------------------------------------------------------------------

let s3: S3rverHandle;
let azurite: AzuriteHandle;
/** Straight to s3rver, bypassing the proxy: ground truth for what was stored. */
let directS3: S3Client;

beforeAll(async () => {
  const [s3Started, azuriteStarted] = await Promise.allSettled([startS3rver(), startAzurite()]);
  if (s3Started.status === 'fulfilled') s3 = s3Started.value;
  if (azuriteStarted.status === 'fulfilled') azurite = azuriteStarted.value;
  if (s3Started.status === 'rejected') throw s3Started.reason;
  if (azuriteStarted.status === 'rejected') throw azuriteStarted.reason;
  directS3 = s3Client(s3.endpoint, 'us-east-1');
});

afterAll(async () => {
  directS3?.destroy();
  await Promise.allSettled([s3?.close(), azurite?.close()]);
});

describe('AWS SDK v3 through the proxy (enforce)', () => {
  let proxy: RunningProxy;

  beforeAll(async () => {
    proxy = await startProxy({
      upstreams: [
        { name: 's3-us', url: s3.endpoint, provider: 's3', route: { path_prefix: '/s3-us', strip_prefix: true }, region: 'us-east-1' },
        { name: 's3-eu', url: s3.endpoint, provider: 's3', route: { path_prefix: '/s3-eu', strip_prefix: true }, region: 'eu-west-1' },
        {
          name: 's3-mixed',
          url: s3.endpoint,
          provider: 's3',
          route: { path_prefix: '/s3-mixed', strip_prefix: true },
          region: 'us-east-1',
          buckets: { 'pinned-eu': 'eu-west-1' },
        },
      ],
      rules: [WRITE_RULE],
    });
  });
  afterAll(async () => {
    await proxy?.close();
  });

  it('forwards bucket, put, 21 MiB multipart upload, get and delete to a us-east-1 upstream and records each as allow', async () => {
    const from = proxy.decisions().length;
    const client = s3Client(`${proxy.url}/s3-us`, 'us-east-1');
    const sent = watchS3(client);
    const bucket = 'us-data';
    const small = randomBytes(100 * 1024);
    const large = randomStream(LARGE);
    try {
      await client.send(new CreateBucketCommand({ Bucket: bucket }));
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: 'small.bin', Body: small }));

      const upload = new Upload({
        client,
        params: { Bucket: bucket, Key: 'dir/large.bin', Body: large.stream },
        partSize: PART,
        queueSize: 2,
      });
      await upload.done();

      const gotSmall = await client.send(new GetObjectCommand({ Bucket: bucket, Key: 'small.bin' }));
      expect(await sha256OfStream(gotSmall.Body as Readable)).toEqual({ sha256: sha256(small), bytes: small.length });
      const gotLarge = await client.send(new GetObjectCommand({ Bucket: bucket, Key: 'dir/large.bin' }));
      expect(await sha256OfStream(gotLarge.Body as Readable)).toEqual({ sha256: large.sha256(), bytes: LARGE });

      await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: 'dir/large.bin' }));
    } finally {
      client.destroy();
    }

    // Stored on s3rver: the bucket and the small object; the large one is gone again.
    await directS3.send(new HeadBucketCommand({ Bucket: bucket }));
    expect((await directS3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'small.bin' }))).ContentLength).toBe(small.length);
    await expect(directS3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'dir/large.bin' }))).rejects.toMatchObject({
      $metadata: { httpStatusCode: 404 },
    });

    // The SDK really did a multipart upload: 4 × 5 MiB + 1 MiB. Bodies ≥ 2 MiB carry Expect: 100-continue,
    // which the proxy answers with 100 Continue only after it decided to forward.
    const parts = sent.filter((r) => r.method === 'PUT' && /(^|&)partNumber=/.test(r.query));
    expect(parts).toHaveLength(5);
    expect(parts.filter((p) => p.expect === '100-continue')).toHaveLength(4);
    expect(sent.filter((r) => r.method === 'POST').map((r) => r.query)).toEqual([
      expect.stringMatching(/(^|&)uploads(=|&|$)/),
      expect.stringMatching(/(^|&)uploadId=/),
    ]);
    // The SDK keeps the endpoint's path: requests go to /s3-us/BUCKET/…
    expect(sent.every((r) => r.path.startsWith(`/s3-us/${bucket}`))).toBe(true);

    const records = expectOneRecordPerRequest(recordsSince(proxy, from), sent, '/s3-us');
    for (const r of records) {
      expect(r).toMatchObject({
        upstream: 's3-us',
        decision: 'allow',
        effective: 'forwarded',
        mode: 'enforce',
        target: { host: `127.0.0.1:${s3.port}` },
        location: { jurisdictions: ['US'], region: 'us-east-1', signals: [{ source: 'declared', value: 'us-east-1', jurisdiction: 'US' }] },
      });
      expect(r.status).toBeLessThan(300);
      expect(r).toMatchObject(
        isWrite(r) ? { rule: 'user-data-writes', reason: 'jurisdiction_allowed' } : { rule: null, reason: 'read_allowed' },
      );
    }
    expect(records.filter(isWrite)).toHaveLength(records.length - 2);
    const byKey = (method: string, key: string, queryPart = '') =>
      records.filter((r, i) => r.method === method && r.path === `/${bucket}/${key}` && sent[i]!.query.includes(queryPart));
    expect(byKey('PUT', 'small.bin')[0]).toMatchObject({ bytes_in: small.length, status: 200 });
    const partBytes = byKey('PUT', 'dir/large.bin', 'partNumber=').map((r) => r.bytes_in);
    expect(partBytes.sort((a, b) => a - b)).toEqual([LARGE - 4 * PART, PART, PART, PART, PART]);
    expect(byKey('GET', 'dir/large.bin')[0]).toMatchObject({ bytes_out: LARGE, operation: 'read' });
    expect(byKey('DELETE', 'dir/large.bin')[0]).toMatchObject({ status: 204, operation: 'write' });
    expectWellFormedLog(proxy);
  });

  it('refuses every write to a eu-west-1 upstream with AccessDenied 403 and stores nothing on s3rver', async () => {
    const from = proxy.decisions().length;
    const client = s3Client(`${proxy.url}/s3-eu`, 'eu-west-1');
    const sent = watchS3(client);
    const bucket = 'eu-data';
    const denied = { name: 'AccessDenied', $metadata: { httpStatusCode: 403 } };
    const large = randomStream(LARGE);
    try {
      await expect(client.send(new CreateBucketCommand({ Bucket: bucket }))).rejects.toMatchObject(denied);
      await expect(
        client.send(new PutObjectCommand({ Bucket: bucket, Key: 'small.bin', Body: randomBytes(100 * 1024) })),
      ).rejects.toMatchObject(denied);
      // ≥ 2 MiB: the SDK sends Expect: 100-continue and must get the 403 instead of a 100 Continue.
      await expect(
        client.send(new PutObjectCommand({ Bucket: bucket, Key: 'six.bin', Body: randomBytes(6 * MiB) })),
      ).rejects.toMatchObject(denied);

      const upload = new Upload({
        client,
        params: { Bucket: bucket, Key: 'dir/large.bin', Body: large.stream },
        partSize: PART,
        queueSize: 2,
      });
      await expect(upload.done()).rejects.toMatchObject(denied);

      await expect(client.send(new DeleteObjectCommand({ Bucket: bucket, Key: 'small.bin' }))).rejects.toMatchObject(denied);
      // A read is not covered by the write rule: it is forwarded, and s3rver has no such bucket.
      await expect(client.send(new GetObjectCommand({ Bucket: bucket, Key: 'small.bin' }))).rejects.toMatchObject({
        name: 'NoSuchBucket',
        $metadata: { httpStatusCode: 404 },
      });
    } finally {
      client.destroy();
      large.stream.destroy();
    }

    // The multipart upload failed at CreateMultipartUpload: no part was ever sent.
    expect(sent.map((r) => `${r.method} ${r.path}`)).toEqual([
      `PUT /s3-eu/${bucket}/`,
      `PUT /s3-eu/${bucket}/small.bin`,
      `PUT /s3-eu/${bucket}/six.bin`,
      `POST /s3-eu/${bucket}/dir/large.bin`,
      `DELETE /s3-eu/${bucket}/small.bin`,
      `GET /s3-eu/${bucket}/small.bin`,
    ]);
    expect(sent[2]!.expect).toBe('100-continue');
    expect(sent[3]!.query).toMatch(/(^|&)uploads(=|&|$)/);

    // Nothing reached s3rver's store.
    await expect(directS3.send(new HeadBucketCommand({ Bucket: bucket }))).rejects.toMatchObject({
      $metadata: { httpStatusCode: 404 },
    });
    expect(readdirSync(s3.directory)).not.toContain(bucket);

    const records = expectOneRecordPerRequest(recordsSince(proxy, from), sent, '/s3-eu');
    const location = { jurisdictions: ['IE'], region: 'eu-west-1', signals: [{ source: 'declared', value: 'eu-west-1', jurisdiction: 'IE' }] };
    for (const r of records.slice(0, 5)) {
      expect(r).toMatchObject({
        upstream: 's3-eu',
        operation: 'write',
        rule: 'user-data-writes',
        mode: 'enforce',
        decision: 'block',
        effective: 'refused',
        reason: 'jurisdiction_not_allowed',
        status: 403,
        bytes_in: 0,
        location,
      });
    }
    expect(records[5]).toMatchObject({ operation: 'read', decision: 'allow', effective: 'forwarded', status: 404, location });
    expectWellFormedLog(proxy);
  });

  it('places each bucket by its own declared region on a shared upstream', async () => {
    const from = proxy.decisions().length;
    const client = s3Client(`${proxy.url}/s3-mixed`, 'us-east-1');
    const sent = watchS3(client);
    try {
      await client.send(new CreateBucketCommand({ Bucket: 'mixed-us' }));
      await client.send(new PutObjectCommand({ Bucket: 'mixed-us', Key: 'a.txt', Body: 'stays in the US' }));
      await expect(client.send(new CreateBucketCommand({ Bucket: 'pinned-eu' }))).rejects.toMatchObject({
        name: 'AccessDenied',
        $metadata: { httpStatusCode: 403 },
      });
      await expect(
        client.send(new PutObjectCommand({ Bucket: 'pinned-eu', Key: 'a.txt', Body: 'would land in Ireland' })),
      ).rejects.toMatchObject({ name: 'AccessDenied', $metadata: { httpStatusCode: 403 } });
    } finally {
      client.destroy();
    }
    expect(readdirSync(s3.directory)).toContain('mixed-us');
    expect(readdirSync(s3.directory)).not.toContain('pinned-eu');
    const records = expectOneRecordPerRequest(recordsSince(proxy, from), sent, '/s3-mixed');
    expect(records.map((r) => [r.path, r.location.region, r.location.jurisdictions, r.decision, r.effective])).toEqual([
      ['/mixed-us/', 'us-east-1', ['US'], 'allow', 'forwarded'],
      ['/mixed-us/a.txt', 'us-east-1', ['US'], 'allow', 'forwarded'],
      ['/pinned-eu/', 'eu-west-1', ['IE'], 'block', 'refused'],
      ['/pinned-eu/a.txt', 'eu-west-1', ['IE'], 'block', 'refused'],
    ]);
  });

  it('refuses a 6 MiB PutObject sent without Expect: 100-continue with a readable AccessDenied, not a reset', async () => {
    const from = proxy.decisions().length;
    // The body is already on its way when the 403 is sent: the proxy must let the SDK read the response.
    const client = new S3Client({
      endpoint: `${proxy.url}/s3-eu`,
      region: 'eu-west-1',
      forcePathStyle: true,
      credentials: S3RVER_CREDENTIALS,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      expectContinueHeader: false,
    });
    const sent = watchS3(client);
    try {
      await expect(
        client.send(new PutObjectCommand({ Bucket: 'eu-data', Key: 'no-expect.bin', Body: randomBytes(6 * MiB) })),
      ).rejects.toMatchObject({ name: 'AccessDenied', $metadata: { httpStatusCode: 403, attempts: 1 } });
    } finally {
      client.destroy();
    }
    expect(sent.map((r) => r.expect)).toEqual([undefined]);
    expect(recordsSince(proxy, from)).toEqual([
      expect.objectContaining({ method: 'PUT', path: '/eu-data/no-expect.bin', decision: 'block', effective: 'refused', status: 403 }),
    ]);
    expect(readdirSync(s3.directory)).not.toContain('eu-data');
  });
});

describe('AWS SDK v3 through the proxy (monitor)', () => {
  let proxy: RunningProxy;

  beforeAll(async () => {
    proxy = await startProxy({
      upstreams: [
        { name: 's3-eu', url: s3.endpoint, provider: 's3', route: { path_prefix: '/s3-eu', strip_prefix: true }, region: 'eu-west-1' },
      ],
      rules: [{ ...WRITE_RULE, mode: 'monitor' }],
    });
  });
  afterAll(async () => {
    await proxy?.close();
  });

  it('forwards the writes a eu-west-1 upstream would refuse and records them as block/forwarded/monitor', async () => {
    const client = s3Client(`${proxy.url}/s3-eu`, 'eu-west-1');
    const sent = watchS3(client);
    const bucket = 'eu-monitored';
    const small = randomBytes(64 * 1024);
    const large = randomStream(LARGE);
    try {
      await client.send(new CreateBucketCommand({ Bucket: bucket }));
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: 'small.bin', Body: small }));
      const upload = new Upload({
        client,
        params: { Bucket: bucket, Key: 'dir/large.bin', Body: large.stream },
        partSize: PART,
        queueSize: 2,
      });
      await upload.done();
      const got = await client.send(new GetObjectCommand({ Bucket: bucket, Key: 'dir/large.bin' }));
      expect(await sha256OfStream(got.Body as Readable)).toEqual({ sha256: large.sha256(), bytes: LARGE });
      await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: 'small.bin' }));
    } finally {
      client.destroy();
    }

    // Forwarded for real: s3rver has the bucket and the multipart object.
    expect((await directS3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'dir/large.bin' }))).ContentLength).toBe(LARGE);

    const records = proxy.decisions();
    expectOneRecordPerRequest(records, sent, '/s3-eu');
    const writes = records.filter(isWrite);
    // CreateBucket, PutObject, CreateMultipartUpload, 5 × UploadPart, Complete, DeleteObject.
    expect(writes).toHaveLength(10);
    for (const r of writes) {
      expect(r).toMatchObject({
        upstream: 's3-eu',
        rule: 'user-data-writes',
        mode: 'monitor',
        decision: 'block',
        effective: 'forwarded',
        reason: 'jurisdiction_not_allowed',
        location: { jurisdictions: ['IE'], region: 'eu-west-1' },
      });
      expect(r.status).toBeLessThan(300);
    }
    expect(records.filter((r) => !isWrite(r))).toEqual([
      expect.objectContaining({ method: 'GET', decision: 'allow', effective: 'forwarded', reason: 'read_allowed', status: 200, bytes_out: LARGE }),
    ]);
    expectWellFormedLog(proxy);
  });
});

describe('SigV4-signed requests through the proxy', () => {
  let upstream: RecordingUpstream;
  let proxy: RunningProxy;

  beforeAll(async () => {
    upstream = await startRecordingUpstream({
      // Just enough S3 for the SDK's PutObject deserialiser.
      respond: () => ({ status: 200, headers: { etag: '"0"', 'content-length': '0' }, body: '' }),
    });
    // No strip_prefix: the path the SDK signs (/signed/BUCKET/KEY) is the path the upstream receives.
    proxy = await startProxy({
      upstreams: [
        { name: 'signed', url: upstream.url, provider: 's3', route: { path_prefix: '/signed' }, region: 'us-east-1' },
        {
          name: 'rewritten',
          url: upstream.url,
          provider: 's3',
          route: { path_prefix: '/rewritten' },
          region: 'us-east-1',
          preserve_host: false,
        },
        { name: 'signed-eu', url: upstream.url, provider: 's3', route: { path_prefix: '/signed-eu' }, region: 'eu-west-1' },
        { name: 'stripped', url: upstream.url, provider: 's3', route: { path_prefix: '/stripped', strip_prefix: true }, region: 'us-east-1' },
      ],
      rules: [WRITE_RULE],
    });
  });
  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });

  const sigReq = (rec: RecordedRequest) => ({ method: rec.method, ...splitTarget(rec.url), headers: rec.headers });
  const signatureOf = (authorization: string | string[] | undefined) => /Signature=([0-9a-f]{64})/.exec(String(authorization))?.[1];

  it('keeps a PutObject signature valid with the default preserved Host, and breaks it when Host is rewritten', async () => {
    upstream.reset();
    const body = randomBytes(256 * 1024);

    const preserved = s3Client(`${proxy.url}/signed`, 'us-east-1', SIG_CREDENTIALS);
    const rewritten = s3Client(`${proxy.url}/rewritten`, 'us-east-1', SIG_CREDENTIALS);
    try {
      await preserved.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'dir/a b.bin', Body: body }));
      await rewritten.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'dir/a b.bin', Body: body }));
    } finally {
      preserved.destroy();
      rewritten.destroy();
    }
    expect(upstream.requests).toHaveLength(2);
    const [ok, broken] = upstream.requests as [RecordedRequest, RecordedRequest];

    expect(ok.url).toBe('/signed/bucket/dir/a%20b.bin?x-id=PutObject');
    expect(ok.headers.host).toBe(`127.0.0.1:${proxy.port}`);
    expect(ok.bodySha256).toBe(sha256(body));
    const okResult = verifySigV4(sigReq(ok), SIG_CREDENTIALS.secretAccessKey, { payloadSha256: ok.bodySha256 });
    expect(okResult.reason).toBeUndefined();
    expect(okResult.ok).toBe(true);

    // preserve_host: false sends the upstream's own host: the signed Host no longer matches.
    expect(broken.headers.host).toBe(`127.0.0.1:${upstream.port}`);
    expect(broken.headers['x-forwarded-host']).toBe(`127.0.0.1:${proxy.port}`);
    expect(verifySigV4(sigReq(broken), SIG_CREDENTIALS.secretAccessKey, { payloadSha256: broken.bodySha256 })).toMatchObject({
      ok: false,
      reason: 'signature mismatch',
    });
    // … and only the Host differs: restoring it makes the signature verify again.
    const restored = { ...sigReq(broken), headers: { ...broken.headers, host: `127.0.0.1:${proxy.port}` } };
    expect(verifySigV4(restored, SIG_CREDENTIALS.secretAccessKey).ok).toBe(true);

    expect(proxy.decisions().map((r) => [r.upstream, r.decision, r.status])).toEqual([
      ['signed', 'allow', 200],
      ['rewritten', 'allow', 200],
    ]);
  });

  it('breaks SigV4 when a strip_prefix route changes the signed path (route a verifying S3 by Host or an unstripped prefix)', async () => {
    upstream.reset();
    const client = s3Client(`${proxy.url}/stripped`, 'us-east-1', SIG_CREDENTIALS);
    try {
      await client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'k.txt', Body: 'x' }));
    } finally {
      client.destroy();
    }
    const [rec] = upstream.requests as [RecordedRequest];
    expect(rec.url).toBe('/bucket/k.txt?x-id=PutObject');
    expect(verifySigV4(sigReq(rec), SIG_CREDENTIALS.secretAccessKey)).toMatchObject({ ok: false, reason: 'signature mismatch' });
    // The SDK signed the path it sent, prefix included.
    expect(verifySigV4({ ...sigReq(rec), path: `/stripped${splitTarget(rec.url).path}` }, SIG_CREDENTIALS.secretAccessKey).ok).toBe(true);
  });

  it('keeps secrets, signatures and Authorization out of the decision log', async () => {
    upstream.reset();
    const from = proxy.decisions().length;
    const client = s3Client(`${proxy.url}/signed`, 'us-east-1', SIG_CREDENTIALS);
    const euClient = s3Client(`${proxy.url}/signed-eu`, 'eu-west-1', SIG_CREDENTIALS);
    const euSent = watchS3(euClient);
    try {
      await client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'secret.txt', Body: 'top secret' }));
      await expect(
        euClient.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'secret.txt', Body: 'top secret' })),
      ).rejects.toMatchObject({ name: 'AccessDenied', $metadata: { httpStatusCode: 403 } });
    } finally {
      client.destroy();
      euClient.destroy();
    }
    const forwardedSig = signatureOf(upstream.requests[0]?.headers.authorization);
    const refusedSig = signatureOf(euSent[0]?.authorization);
    expect(forwardedSig).toMatch(/^[0-9a-f]{64}$/);
    expect(refusedSig).toMatch(/^[0-9a-f]{64}$/);

    // Presigned-URL style: the credentials and signature ride in the query string.
    const presignedSig = 'deadbeef'.repeat(8);
    const refusedPresignedSig = 'cafebabe'.repeat(8);
    const presignedQuery = (sig: string) =>
      'X-Amz-Algorithm=AWS4-HMAC-SHA256' +
      `&X-Amz-Credential=${SIG_CREDENTIALS.accessKeyId}%2F20250101%2Fus-east-1%2Fs3%2Faws4_request` +
      '&X-Amz-Date=20250101T000000Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host' +
      `&X-Amz-Signature=${sig}`;
    const presigned = await request(`${proxy.url}/signed/bucket/presigned.txt?${presignedQuery(presignedSig)}`, {
      method: 'PUT',
      body: 'presigned upload',
    });
    expect(presigned.statusCode).toBe(200);
    await presigned.body.text();
    // The proxy forwards the query untouched …
    expect(upstream.requests.at(-1)?.url).toBe(`/signed/bucket/presigned.txt?${presignedQuery(presignedSig)}`);

    const refused = await request(`${proxy.url}/signed-eu/bucket/presigned.txt?${presignedQuery(refusedPresignedSig)}`, {
      method: 'PUT',
      body: 'presigned upload',
    });
    const refusedBody = await refused.body.text();
    expect(refused.statusCode).toBe(403);
    expect(refused.headers['content-type']).toBe('application/xml');
    expect(refused.headers['x-residency-decision']).toBe('block');
    expect(refusedBody).toMatch(/^<\?xml[^>]*\?>\s*<Error><Code>AccessDenied<\/Code><Message>[^<]+<\/Message>/);
    // The refusal does not echo the presigned query back either.
    expect(refusedBody).not.toContain(refusedPresignedSig);

    const records = recordsSince(proxy, from);
    expect(records.map((r) => [r.upstream, r.path, r.decision, r.effective, r.status])).toEqual([
      ['signed', '/signed/bucket/secret.txt', 'allow', 'forwarded', 200],
      ['signed-eu', '/signed-eu/bucket/secret.txt', 'block', 'refused', 403],
      ['signed', '/signed/bucket/presigned.txt', 'allow', 'forwarded', 200],
      ['signed-eu', '/signed-eu/bucket/presigned.txt', 'block', 'refused', 403],
    ]);
    expect(refused.headers['x-residency-decision-id']).toBe(records[3]!.id);

    // … but the decision log keeps no query, header or credential.
    const log = proxy.decisionLogText();
    expect(log.length).toBeGreaterThan(0);
    for (const secret of [SIG_CREDENTIALS.secretAccessKey, forwardedSig!, refusedSig!, presignedSig, refusedPresignedSig]) {
      expect(log).not.toContain(secret);
    }
    expect(log).not.toMatch(/authorization/i);
    expect(log).not.toContain('X-Amz-');
    expectWellFormedLog(proxy);
  });
});

describe('Azure SDK through the proxy', () => {
  let usProxy: RunningProxy;
  let euProxy: RunningProxy;
  /** Straight to Azurite, bypassing the proxy. */
  let direct: BlobServiceClient;

  const azureUpstream = (region: string) => ({
    upstreams: [
      // No strip_prefix: SharedKey signs the path, and Azurite must see the one the SDK signed.
      { name: `az-${region}`, url: `http://127.0.0.1:${azurite.port}`, provider: 'azure', route: { path_prefix: '/devstoreaccount1' }, region },
    ],
    rules: [WRITE_RULE],
  });
  const viaProxy = (proxy: RunningProxy) =>
    new BlobServiceClient(
      `${proxy.url}/${azurite.accountName}`,
      new StorageSharedKeyCredential(azurite.accountName, azurite.accountKey),
    );
  const sharedKeySignatures = (sent: Outgoing[]) =>
    sent.map((s) => /^SharedKey devstoreaccount1:(\S+)$/.exec(s.authorization ?? '')?.[1]);

  beforeAll(async () => {
    usProxy = await startProxy(azureUpstream('eastus'));
    euProxy = await startProxy(azureUpstream('westeurope'));
    direct = BlobServiceClient.fromConnectionString(azurite.connectionString);
  });
  afterAll(async () => {
    await usProxy?.close();
    await euProxy?.close();
  });

  it('creates a container, uploads and downloads block blobs through an eastus upstream', async () => {
    const service = viaProxy(usProxy);
    const wire = watchOutgoing(usProxy.port);
    const container = service.getContainerClient('us-container');
    const data = randomBytes(3 * MiB + 123);
    try {
      await container.create();
      const small = container.getBlockBlobClient('small.txt');
      await small.upload('hello azurite', 13);
      expect((await small.downloadToBuffer()).toString('utf8')).toBe('hello azurite');

      // Small single-shot limit forces Put Block ×4 + Put Block List.
      const big = container.getBlockBlobClient('dir/big.bin');
      await big.uploadData(data, { blockSize: MiB, maxSingleShotSize: MiB, concurrency: 2 });
      const dl = await big.download();
      expect(await sha256OfStream(dl.readableStreamBody as Readable)).toEqual({ sha256: sha256(data), bytes: data.length });
    } finally {
      wire.stop();
    }

    // On Azurite itself.
    const stored = direct.getContainerClient('us-container').getBlockBlobClient('dir/big.bin');
    expect((await stored.getProperties()).contentLength).toBe(data.length);
    expect((await stored.getBlockList('committed')).committedBlocks).toHaveLength(4);

    const records = usProxy.decisions();
    expectOneRecordPerRequest(records, wire.requests);
    expect(records.filter((r) => r.method === 'PUT' && r.path === '/devstoreaccount1/us-container/dir/big.bin')).toHaveLength(5);
    for (const r of records) {
      expect(r).toMatchObject({
        upstream: 'az-eastus',
        decision: 'allow',
        effective: 'forwarded',
        target: { host: `127.0.0.1:${azurite.port}` },
        location: { jurisdictions: ['US'], region: 'eastus' },
      });
      expect(r.status).toBeLessThan(300);
    }
    expect(records.filter(isWrite).every((r) => r.rule === 'user-data-writes' && r.reason === 'jurisdiction_allowed')).toBe(true);
    expectWellFormedLog(usProxy);

    // The account key and the SharedKey signatures the SDK sent stay out of the log.
    const signatures = sharedKeySignatures(wire.requests);
    expect(signatures.every((s) => s !== undefined && s.length >= 40)).toBe(true);
    const log = usProxy.decisionLogText();
    expect(log).not.toContain(azurite.accountKey);
    for (const s of signatures) expect(log).not.toContain(s!);
    expect(log).not.toMatch(/authorization|sharedkey/i);
  });

  it('refuses container create and blob uploads through a westeurope upstream with 403 AuthorizationFailure', async () => {
    const service = viaProxy(euProxy);
    const wire = watchOutgoing(euProxy.port);
    const container = service.getContainerClient('eu-container');
    const denied = { statusCode: 403, code: 'AuthorizationFailure' };
    try {
      await expect(container.create()).rejects.toMatchObject(denied);
      await expect(container.getBlockBlobClient('small.txt').upload('hello azurite', 13)).rejects.toMatchObject(denied);
      // One 3 MiB Put Blob: more body than the proxy drains after refusing, and the SDK sends no Expect.
      await expect(container.getBlockBlobClient('single.bin').upload(randomBytes(3 * MiB), 3 * MiB)).rejects.toMatchObject(denied);
      await expect(
        container.getBlockBlobClient('dir/big.bin').uploadData(randomBytes(3 * MiB), { blockSize: MiB, maxSingleShotSize: MiB, concurrency: 1 }),
      ).rejects.toMatchObject(denied);
    } finally {
      wire.stop();
    }

    // Nothing was created on Azurite.
    expect(await direct.getContainerClient('eu-container').exists()).toBe(false);

    const records = euProxy.decisions();
    expectOneRecordPerRequest(records, wire.requests);
    expect(records.length).toBeGreaterThanOrEqual(3);
    for (const r of records) {
      expect(r).toMatchObject({
        upstream: 'az-westeurope',
        operation: 'write',
        rule: 'user-data-writes',
        decision: 'block',
        effective: 'refused',
        reason: 'jurisdiction_not_allowed',
        status: 403,
        bytes_in: 0,
        location: { jurisdictions: ['NL'], region: 'westeurope' },
      });
    }
    expectWellFormedLog(euProxy);

    const signatures = sharedKeySignatures(wire.requests);
    expect(signatures.every((s) => s !== undefined)).toBe(true);
    const log = euProxy.decisionLogText();
    expect(log).not.toContain(azurite.accountKey);
    for (const s of signatures) expect(log).not.toContain(s!);
    expect(log).not.toMatch(/authorization|sharedkey/i);
  });

  it('answers a refused Azure write with the x-ms-error-code header and the decision headers', async () => {
    const from = euProxy.decisions().length;
    const res = await request(`${euProxy.url}/devstoreaccount1/eu-container/raw.txt`, {
      method: 'PUT',
      headers: { 'x-ms-blob-type': 'BlockBlob' },
      body: 'raw',
    });
    const body = await res.body.text();
    expect(res.statusCode).toBe(403);
    expect(res.headers['x-ms-error-code']).toBe('AuthorizationFailure');
    expect(res.headers['x-residency-decision']).toBe('block');
    expect(body).toMatch(/<Error><Code>AuthorizationFailure<\/Code><Message>/);
    const [record] = recordsSince(euProxy, from);
    expect(res.headers['x-residency-decision-id']).toBe(record?.id);
  });
});

describe('refusing an upload whose body is still arriving', () => {
  /*
   * A write refused before its body has arrived is answered 403 with
   * `Connection: close`, and the proxy lingers on the socket (reading and
   * discarding up to refusal_drain_bytes, for at most refusal_linger_ms) so the
   * client reads the refusal instead of a reset. Once the client has read the
   * 403 and closed its end, the linger has nothing left to wait for: the
   * connection must be released then, not when refusal_linger_ms runs out.
   */
  const LINGER_MS = 2_000;
  let upstream: RecordingUpstream;

  beforeAll(async () => {
    upstream = await startRecordingUpstream();
  });
  afterAll(async () => {
    await upstream?.close();
  });

  /** One fresh proxy per case, so its open connections are this case's only. */
  const refusingProxy = (provider: 's3' | 'azure', prefix: string) =>
    startProxy({
      upstreams: [{ name: 'eu', url: upstream.url, provider, route: { path_prefix: prefix }, region: 'westeurope' }],
      limits: { refusal_linger_ms: LINGER_MS },
    });

  /** Client sockets this process connects to `port` while `fn` runs (any client library), via Node's diagnostics channel. */
  async function clientSocketsTo(port: number, fn: () => Promise<void>): Promise<Socket[]> {
    const sockets: Socket[] = [];
    const onSocket = (message: unknown): void => {
      const socket = (message as { socket: Socket }).socket;
      socket.once('connect', () => {
        if (socket.remotePort === port) sockets.push(socket);
      });
    };
    subscribe('net.client.socket', onSocket);
    try {
      await fn();
    } finally {
      unsubscribe('net.client.socket', onSocket);
    }
    return sockets;
  }

  /** The client's sockets are closed (within `limitMs`): it has read the 403 and hung up. */
  async function expectClosed(sockets: Socket[], limitMs = 500): Promise<void> {
    expect(sockets.length).toBeGreaterThan(0);
    const deadline = performance.now() + limitMs;
    while (sockets.some((s) => !s.closed) && performance.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    expect(sockets.map((s) => s.closed)).toEqual(sockets.map(() => true));
  }

  /** Milliseconds until the proxy holds no client connection (gives up after `limitMs`). */
  async function msUntilNoConnections(proxy: RunningProxy, limitMs: number): Promise<number> {
    const t0 = performance.now();
    const count = () =>
      new Promise<number>((resolve, reject) => proxy.app.proxy.server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
    while ((await count()) > 0 && performance.now() - t0 < limitMs) await new Promise((r) => setTimeout(r, 10));
    return Math.round(performance.now() - t0);
  }

  it('releases the connection once the Azure SDK has read the 403 for a 3 MiB Put Blob and closed', async () => {
    const proxy = await refusingProxy('azure', '/devstoreaccount1');
    try {
      const service = new BlobServiceClient(
        `${proxy.url}/devstoreaccount1`,
        new StorageSharedKeyCredential('devstoreaccount1', AZURITE_ACCOUNT_KEY),
      );
      const blob = service.getContainerClient('c').getBlockBlobClient('single.bin');
      const sockets = await clientSocketsTo(proxy.port, async () => {
        await expect(blob.upload(randomBytes(3 * MiB), 3 * MiB)).rejects.toMatchObject({ statusCode: 403, code: 'AuthorizationFailure' });
      });
      expect(upstream.requests).toHaveLength(0);
      await expectClosed(sockets);
      const ms = await msUntilNoConnections(proxy, LINGER_MS + 500);
      expect(ms, `connection held ${ms} ms after the client closed (refusal_linger_ms ${LINGER_MS})`).toBeLessThan(LINGER_MS / 2);
    } finally {
      await proxy.close();
    }
  });

  it('stops lingering on a refused 6 MiB PutObject without Expect once more than refusal_drain_bytes arrived', async () => {
    // Node's HTTP client ends its socket only after the whole body is written, so the SDK's
    // connection stays open while the proxy lingers; reading and discarding, the proxy sees more
    // than refusal_drain_bytes (1 MiB) arrive and must cut the connection then, long before
    // refusal_linger_ms.
    const proxy = await refusingProxy('s3', '/s3');
    const client = new S3Client({
      endpoint: `${proxy.url}/s3`,
      region: 'eu-west-1',
      forcePathStyle: true,
      credentials: SIG_CREDENTIALS,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      expectContinueHeader: false,
    });
    try {
      await expect(
        client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'six.bin', Body: randomBytes(6 * MiB) })),
      ).rejects.toMatchObject({ name: 'AccessDenied', $metadata: { httpStatusCode: 403 } });
      expect(upstream.requests).toHaveLength(0);
      const ms = await msUntilNoConnections(proxy, LINGER_MS + 500);
      expect(ms, `connection held ${ms} ms for a 6 MiB refused body (refusal_linger_ms ${LINGER_MS}, drain cap 1 MiB)`).toBeLessThan(
        LINGER_MS / 2,
      );
    } finally {
      client.destroy();
      await proxy.close();
    }
  });
});
