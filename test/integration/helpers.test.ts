import { createHash, randomBytes } from 'node:crypto';
import { Agent, request as httpRequest } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { BlobServiceClient } from '@azure/storage-blob';
import { startAzurite } from '../helpers/azurite.js';
import type { AzuriteHandle } from '../helpers/azurite.js';
import { S3RVER_CREDENTIALS, startS3rver } from '../helpers/s3rver.js';
import type { S3rverHandle } from '../helpers/s3rver.js';
import { splitTarget, verifySigV4 } from '../helpers/sigv4.js';
import { startRecordingUpstream } from '../helpers/upstream.js';
import type { RecordedRequest, RecordingUpstream } from '../helpers/upstream.js';
import { randomStream } from '../helpers/streams.js';

const MiB = 1024 * 1024;


function sha256(buf: Uint8Array): string {
  return createHash('sha256').update(buf).digest('hex');
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

/** Sends one request with node:http and drains the response. */
function send(
  url: string,
  opts: { method: string; path: string; headers?: Record<string, string>; body?: Readable; agent?: Agent; timeoutMs?: number },
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      new URL(opts.path, url),
      { method: opts.method, headers: opts.headers, agent: opts.agent ?? false },
      (res: IncomingMessage) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (opts.timeoutMs !== undefined) {
      req.setTimeout(opts.timeoutMs, () => req.destroy(new Error('client timeout')));
    }
    if (opts.body) opts.body.pipe(req);
    else req.end();
  });
}

describe('recording upstream', () => {
  let upstream: RecordingUpstream;

  beforeAll(async () => {
    upstream = await startRecordingUpstream();
  });
  afterAll(async () => {
    await upstream.close();
  });

  it('records a streamed 8 MiB PUT body size and SHA-256 and counts connections', async () => {
    upstream.reset();
    const size = 8 * MiB;
    const body = randomStream(size);
    const res = await send(upstream.url, {
      method: 'PUT',
      path: '/bucket/big.bin?x=1',
      headers: { 'content-type': 'application/octet-stream' },
      body: body.stream,
    });
    expect(res).toEqual({ status: 200, body: 'ok\n' });
    expect(upstream.requests).toHaveLength(1);
    const rec = upstream.requests[0] as RecordedRequest;
    expect(rec.method).toBe('PUT');
    expect(rec.url).toBe('/bucket/big.bin?x=1');
    // No content-length was given, so node:http sent it chunked.
    expect(rec.headers['transfer-encoding']).toBe('chunked');
    expect(rec.rawHeaders).toContain('content-type');
    expect(rec.complete).toBe(true);
    expect(rec.aborted).toBe(false);
    expect(rec.bodyBytes).toBe(size);
    expect(rec.bodySha256).toBe(body.sha256());
    expect(rec.bodyHead).toHaveLength(64 * 1024);
    expect(upstream.bytesReceived).toBe(size);
    expect(upstream.connections).toBe(1);
  });

  it('counts keep-alive reuse as one connection', async () => {
    upstream.reset();
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      await send(upstream.url, { method: 'GET', path: '/a', agent });
      await send(upstream.url, { method: 'GET', path: '/b', agent });
    } finally {
      agent.destroy();
    }
    expect(upstream.requests.map((r) => r.url)).toEqual(['/a', '/b']);
    expect(upstream.connections).toBe(1);
    expect(upstream.requests[0]?.connectionId).toBe(upstream.requests[1]?.connectionId);
  });

  it('counts body bytes of a request aborted mid-body', async () => {
    upstream.reset();
    const sent = 256 * 1024;
    await new Promise<void>((resolve) => {
      const req = httpRequest(new URL('/partial', upstream.url), {
        method: 'PUT',
        headers: { 'content-length': String(4 * MiB) },
        agent: false,
      });
      req.on('error', () => resolve());
      req.write(randomBytes(sent), () => {
        // Give the bytes time to land before resetting the connection.
        setTimeout(() => {
          req.destroy();
          resolve();
        }, 50);
      });
    });
    await upstream.waitFor(() => upstream.requests[0]?.aborted === true);
    const rec = upstream.requests[0] as RecordedRequest;
    expect(rec.complete).toBe(false);
    expect(rec.bodyBytes).toBe(sent);
    expect(upstream.bytesReceived).toBe(sent);
    expect(rec.bodySha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it('supports custom responses, delays and hanging', async () => {
    const custom = await startRecordingUpstream({
      delayMs: 100,
      respond: (req, head) => ({
        status: 201,
        headers: { 'content-type': 'text/plain', 'x-seen': String(req.bodyBytes) },
        body: `${req.method} ${head.toString('utf8')}`,
      }),
    });
    const hanging = await startRecordingUpstream({ hang: true });
    try {
      const t0 = Date.now();
      const res = await send(custom.url, { method: 'POST', path: '/', body: Readable.from([Buffer.from('hello')]) });
      expect(res).toEqual({ status: 201, body: 'POST hello' });
      expect(Date.now() - t0).toBeGreaterThanOrEqual(90);

      await expect(send(hanging.url, { method: 'GET', path: '/slow', timeoutMs: 200 })).rejects.toThrow('client timeout');
      expect(hanging.requests[0]?.complete).toBe(true);
    } finally {
      await custom.close();
      // Must not wait for the hanging request.
      await hanging.close();
    }
  });
});

describe('s3rver', () => {
  let s3: S3rverHandle;
  let client: S3Client;

  beforeAll(async () => {
    s3 = await startS3rver();
    client = new S3Client({
      endpoint: s3.endpoint,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: S3RVER_CREDENTIALS,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
  });
  afterAll(async () => {
    client?.destroy();
    await s3?.close();
  });

  it('serves bucket, put, multipart upload, get and delete', async () => {
    const bucket = 'residency-test';
    await client.send(new CreateBucketCommand({ Bucket: bucket }));

    const small = randomBytes(100 * 1024);
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: 'small.bin', Body: small }));
    const gotSmall = await client.send(new GetObjectCommand({ Bucket: bucket, Key: 'small.bin' }));
    expect(await sha256OfStream(gotSmall.Body as Readable)).toEqual({ sha256: sha256(small), bytes: small.length });

    const size = 21 * MiB;
    const body = randomStream(size);
    const upload = new Upload({
      client,
      params: { Bucket: bucket, Key: 'dir/large.bin', Body: body.stream },
      partSize: 5 * MiB,
      queueSize: 2,
    });
    const parts: number[] = [];
    upload.on('httpUploadProgress', (p) => {
      if (p.part !== undefined) parts.push(p.part);
    });
    await upload.done();
    // 21 MiB in 5 MiB parts: a real multipart upload, not a single PUT.
    expect(new Set(parts).size).toBe(5);

    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: 'dir/large.bin' }));
    expect(head.ContentLength).toBe(size);
    const got = await client.send(new GetObjectCommand({ Bucket: bucket, Key: 'dir/large.bin' }));
    expect(await sha256OfStream(got.Body as Readable)).toEqual({ sha256: body.sha256(), bytes: size });

    await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: 'dir/large.bin' }));
    await expect(client.send(new GetObjectCommand({ Bucket: bucket, Key: 'dir/large.bin' }))).rejects.toMatchObject({
      name: 'NoSuchKey',
    });
  });
});

describe('azurite', () => {
  let azurite: AzuriteHandle;

  beforeAll(async () => {
    azurite = await startAzurite();
  });
  afterAll(async () => {
    await azurite?.close();
  });

  it('creates a container, uploads block blobs and downloads them', async () => {
    expect(azurite.blobEndpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/devstoreaccount1$/);
    const service = BlobServiceClient.fromConnectionString(azurite.connectionString);
    const container = service.getContainerClient('residency-test');
    await container.create();

    const small = container.getBlockBlobClient('small.txt');
    await small.upload('hello azurite', 13);
    expect((await small.downloadToBuffer()).toString('utf8')).toBe('hello azurite');

    // Small single-shot limit forces Put Block + Put Block List.
    const data = randomBytes(3 * MiB + 123);
    const big = container.getBlockBlobClient('dir/big.bin');
    await big.uploadData(data, { blockSize: MiB, maxSingleShotSize: MiB, concurrency: 2 });
    const blocks = await big.getBlockList('committed');
    expect(blocks.committedBlocks).toHaveLength(4);
    const dl = await big.download();
    expect(await sha256OfStream(dl.readableStreamBody as Readable)).toEqual({ sha256: sha256(data), bytes: data.length });

    await container.delete();
  });
});

describe('verifySigV4', () => {
  it('matches the AWS documentation examples', () => {
    // "Signature Calculations for the Authorization Header" examples (examplebucket, 2013-05-24).
    const secret = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
    const cred = 'Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request';
    const emptyHash = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
    const base = { host: 'examplebucket.s3.amazonaws.com', 'x-amz-date': '20130524T000000Z' };

    const getObject = verifySigV4(
      {
        method: 'GET',
        path: '/test.txt',
        query: '',
        headers: {
          ...base,
          range: 'bytes=0-9',
          'x-amz-content-sha256': emptyHash,
          authorization:
            `AWS4-HMAC-SHA256 ${cred},SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,` +
            'Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41',
        },
      },
      secret,
    );
    expect(getObject).toMatchObject({ ok: true });

    const putObject = verifySigV4(
      {
        method: 'PUT',
        path: '/test%24file.text',
        query: '',
        headers: {
          ...base,
          date: 'Fri, 24 May 2013 00:00:00 GMT',
          'x-amz-storage-class': 'REDUCED_REDUNDANCY',
          'x-amz-content-sha256': '44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072',
          authorization:
            `AWS4-HMAC-SHA256 ${cred},SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,` +
            'Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd',
        },
      },
      secret,
    );
    expect(putObject).toMatchObject({ ok: true });

    const listObjects = verifySigV4(
      {
        method: 'GET',
        path: '/',
        query: 'max-keys=2&prefix=J',
        headers: {
          ...base,
          'x-amz-content-sha256': emptyHash,
          authorization:
            `AWS4-HMAC-SHA256 ${cred},SignedHeaders=host;x-amz-content-sha256;x-amz-date,` +
            'Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7',
        },
      },
      secret,
    );
    expect(listObjects).toMatchObject({ ok: true });

    const lifecycle = verifySigV4(
      {
        method: 'GET',
        path: '/',
        query: 'lifecycle',
        headers: {
          ...base,
          'x-amz-content-sha256': emptyHash,
          authorization:
            `AWS4-HMAC-SHA256 ${cred},SignedHeaders=host;x-amz-content-sha256;x-amz-date,` +
            'Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543',
        },
      },
      secret,
    );
    expect(lifecycle).toMatchObject({ ok: true });
  });

  describe('against requests recorded from the AWS SDK', () => {
    const secret = 'test-secret/key+value';
    let upstream: RecordingUpstream;
    let client: S3Client;

    const toSigV4Req = (rec: RecordedRequest) => ({ method: rec.method, ...splitTarget(rec.url), headers: rec.headers });

    beforeAll(async () => {
      upstream = await startRecordingUpstream({
        respond: (req) => {
          // Just enough S3 for the SDK's deserialisers.
          if (req.method === 'GET') {
            return {
              status: 200,
              headers: { 'content-type': 'application/xml' },
              body:
                '<?xml version="1.0" encoding="UTF-8"?>' +
                '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' +
                '<Name>bucket</Name><KeyCount>0</KeyCount><MaxKeys>7</MaxKeys><IsTruncated>false</IsTruncated>' +
                '</ListBucketResult>',
            };
          }
          return { status: req.method === 'DELETE' ? 204 : 200, headers: { etag: '"0"' }, body: '' };
        },
      });
      client = new S3Client({
        endpoint: upstream.url,
        region: 'eu-central-1',
        forcePathStyle: true,
        credentials: { accessKeyId: 'AKIDTEST', secretAccessKey: secret },
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
      });
    });
    afterAll(async () => {
      client?.destroy();
      await upstream?.close();
    });

    it('verifies a PutObject with a real payload hash and rejects tampering', async () => {
      upstream.reset();
      const body = randomBytes(200 * 1024);
      await client.send(
        new PutObjectCommand({
          Bucket: 'bucket',
          Key: 'dir/a b+c~(1)*é.bin',
          Body: body,
          ContentType: 'application/octet-stream',
          Metadata: { origin: '  spaced   value  ' },
        }),
      );
      expect(upstream.requests).toHaveLength(1);
      const rec = upstream.requests[0] as RecordedRequest;
      expect(rec.headers['x-amz-content-sha256']).toBe(sha256(body));
      expect(rec.bodySha256).toBe(sha256(body));
      // The SDK encodes the key once, RFC 3986 style; the verifier uses it verbatim.
      expect(rec.url).toBe('/bucket/dir/a%20b%2Bc~%281%29%2A%C3%A9.bin?x-id=PutObject');
      expect(rec.headers.authorization).toMatch(/SignedHeaders=[^,]*\bhost\b/);

      const req = toSigV4Req(rec);
      const result = verifySigV4(req, secret, { payloadSha256: rec.bodySha256 });
      expect(result.reason).toBeUndefined();
      expect(result.ok).toBe(true);
      expect(result.canonicalRequest).toContain(`host:127.0.0.1:${upstream.port}\n`);

      // Host rewritten (as a careless proxy would) must not verify.
      const hostRewritten = verifySigV4({ ...req, headers: { ...req.headers, host: 's3.eu-central-1.amazonaws.com' } }, secret);
      expect(hostRewritten).toMatchObject({ ok: false, reason: 'signature mismatch' });
      const portDropped = verifySigV4({ ...req, headers: { ...req.headers, host: '127.0.0.1' } }, secret);
      expect(portDropped.ok).toBe(false);

      // Re-encoded path, wrong secret, swapped body: all rejected.
      expect(verifySigV4({ ...req, path: decodeURIComponent(req.path) }, secret).ok).toBe(false);
      expect(verifySigV4({ ...req, path: req.path.replace('%2B', '%2b') }, secret).ok).toBe(false);
      expect(verifySigV4(req, 'wrong-secret')).toMatchObject({ ok: false, reason: 'signature mismatch' });
      expect(verifySigV4(req, secret, { payloadSha256: sha256(Buffer.from('other')) }).ok).toBe(false);
      const { host: _host, ...withoutHost } = req.headers;
      expect(verifySigV4({ ...req, headers: withoutHost }, secret)).toMatchObject({
        ok: false,
        reason: 'signed header host is missing from the request',
      });
    });

    it('verifies query-string and empty-payload requests', async () => {
      upstream.reset();
      await client.send(new ListObjectsV2Command({ Bucket: 'bucket', Prefix: 'a b/ü&=', MaxKeys: 7 }));
      await client.send(new DeleteObjectCommand({ Bucket: 'bucket', Key: 'x' }));
      expect(upstream.requests.map((r) => r.method)).toEqual(['GET', 'DELETE']);

      const [list, del] = upstream.requests as [RecordedRequest, RecordedRequest];
      expect(list.url).toContain('list-type=2');
      const listResult = verifySigV4(toSigV4Req(list), secret);
      expect(listResult).toMatchObject({ ok: true });
      // Reordered query parameters still verify (canonical order), altered values do not.
      const { path, query } = splitTarget(list.url);
      const reordered = query.split('&').reverse().join('&');
      expect(verifySigV4({ ...toSigV4Req(list), path, query: reordered }, secret).ok).toBe(true);
      expect(verifySigV4({ ...toSigV4Req(list), path, query: query.replace('max-keys=7', 'max-keys=8') }, secret).ok).toBe(
        false,
      );

      expect(del.headers['x-amz-content-sha256']).toBe(sha256(Buffer.alloc(0)));
      expect(verifySigV4(toSigV4Req(del), secret, { payloadSha256: del.bodySha256 })).toMatchObject({ ok: true });
    });
  });
});
