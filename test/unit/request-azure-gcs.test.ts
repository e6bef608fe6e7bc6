import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  azureAccountFromPath,
  gcsHostBucket,
  gcsSessionKey,
  gcsUploadId,
  gcsUploadIdFromLocation,
  isGcsResumableStart,
  parseAzureHost,
  parseGcsRequest,
  type AzureHostInfo,
  type GcsTarget,
} from '../../src/location/request/azure-gcs.js';

describe('Azure hosts', () => {
  it.each<[string, AzureHostInfo | null]>([
    ['myaccount.blob.core.windows.net', { account: 'myaccount', service: 'blob', cloud: 'public', secondary: false }],
    ['MyAccount.Blob.Core.Windows.Net:443', { account: 'myaccount', service: 'blob', cloud: 'public', secondary: false }],
    ['myaccount.blob.core.windows.net.', { account: 'myaccount', service: 'blob', cloud: 'public', secondary: false }],
    ['myaccount.dfs.core.windows.net', { account: 'myaccount', service: 'dfs', cloud: 'public', secondary: false }],
    ['myaccount.file.core.windows.net', { account: 'myaccount', service: 'file', cloud: 'public', secondary: false }],
    ['myaccount-secondary.blob.core.windows.net', { account: 'myaccount', service: 'blob', cloud: 'public', secondary: true }],
    ['govacct.blob.core.usgovcloudapi.net', { account: 'govacct', service: 'blob', cloud: 'usgov', secondary: false }],
    ['cnacct.blob.core.chinacloudapi.cn', { account: 'cnacct', service: 'blob', cloud: 'china', secondary: false }],
    ['cnacct.dfs.core.chinacloudapi.cn', { account: 'cnacct', service: 'dfs', cloud: 'china', secondary: false }],
    ['zoned1.z23.blob.storage.azure.net', { account: 'zoned1', service: 'blob', cloud: 'public', secondary: false }],
    ['blob.core.windows.net', null],
    ['a.b.blob.core.windows.net', null],
    ['ab.blob.core.windows.net', null], // too short
    [`${'a'.repeat(25)}.blob.core.windows.net`, null], // too long
    ['my-account.blob.core.windows.net', null],
    ['myaccount.web.core.windows.net', null],
    ['myaccount.blob.core.windows.net.evil.example', null],
    ['myaccount.blob.core.windows.com', null],
    ['zoned1.zz.blob.storage.azure.net', null],
    ['127.0.0.1:10000', null],
    ['', null],
  ])('%s', (host, expected) => {
    expect(parseAzureHost(host)).toEqual(expected);
  });

  it.each<[string, ReturnType<typeof azureAccountFromPath>]>([
    ['/devstoreaccount1/container/blob.txt', { account: 'devstoreaccount1', container: 'container' }],
    ['/devstoreaccount1/container', { account: 'devstoreaccount1', container: 'container' }],
    ['/devstoreaccount1', { account: 'devstoreaccount1', container: null }],
    ['/devstoreaccount1/', { account: 'devstoreaccount1', container: null }],
    ['/', null],
    ['', null],
    ['/Dev-Store/container', null],
    ['/ab/container', null],
  ])('path %s', (path, expected) => {
    expect(azureAccountFromPath(path)).toEqual(expected);
  });
});

describe('GCS requests', () => {
  it.each<[string, string, GcsTarget | null]>([
    ['storage.googleapis.com', '/storage/v1/b/my-bucket/o/a%2Fb.txt', { api: 'json', bucket: 'my-bucket', object: 'a/b.txt' }],
    ['storage.googleapis.com', '/storage/v1/b/my-bucket/o', { api: 'json', bucket: 'my-bucket', object: null }],
    ['storage.googleapis.com', '/storage/v1/b/my-bucket', { api: 'json', bucket: 'my-bucket', object: null }],
    ['storage.googleapis.com', '/storage/v1/b/my-bucket/iam', { api: 'json', bucket: 'my-bucket', object: null }],
    ['storage.googleapis.com', '/storage/v1/b', { api: 'json', bucket: null, object: null }],
    ['www.googleapis.com', '/storage/v1/b/my_bucket.v2/o/x', { api: 'json', bucket: 'my_bucket.v2', object: 'x' }],
    ['storage.googleapis.com', '/upload/storage/v1/b/my-bucket/o', { api: 'upload', bucket: 'my-bucket', object: null }],
    ['storage.googleapis.com', '/download/storage/v1/b/my-bucket/o/x', { api: 'download', bucket: 'my-bucket', object: 'x' }],
    ['storage.googleapis.com', '/batch/storage/v1', { api: 'batch', bucket: null, object: null }],
    ['storage.googleapis.com', '/my-bucket/dir/obj.txt', { api: 'xml', bucket: 'my-bucket', object: 'dir/obj.txt' }],
    ['storage.googleapis.com', '/my-bucket', { api: 'xml', bucket: 'my-bucket', object: null }],
    ['storage.googleapis.com', '/my-bucket/', { api: 'xml', bucket: 'my-bucket', object: null }],
    ['storage.googleapis.com', '/', { api: 'xml', bucket: null, object: null }],
    ['my-bucket.storage.googleapis.com', '/dir/obj.txt', { api: 'xml', bucket: 'my-bucket', object: 'dir/obj.txt' }],
    ['my.dotted.bucket.storage.googleapis.com:443', '/', { api: 'xml', bucket: 'my.dotted.bucket', object: null }],
    ['127.0.0.1:4443', '/storage/v1/b/emu/o', { api: 'json', bucket: 'emu', object: null }],
    ['127.0.0.1:4443', '/emu/obj', { api: 'xml', bucket: 'emu', object: 'obj' }],
    ['storage.googleapis.com', '/storage/v1/b/UPPER/o', null],
    ['storage.googleapis.com', '/storage/v1/b/%ZZ/o', null],
    ['storage.googleapis.com', '/Bad_Bucket!/x', null],
    ['-x.storage.googleapis.com', '/', null],
    ['storage.googleapis.com', 'relative', null],
  ])('%s %s', (host, path, expected) => {
    expect(parseGcsRequest(host, path)).toEqual(expected);
  });

  it('only the real XML suffix means virtual hosting', () => {
    expect(gcsHostBucket('storage.googleapis.com')).toBeNull();
    expect(gcsHostBucket('b.storage.googleapis.com.evil.example')).toBeNull();
    expect(gcsHostBucket('localhost:4443')).toBeNull();
    expect(gcsHostBucket('bkt.storage.googleapis.com')).toBe('bkt');
  });
});

describe('GCS resumable sessions', () => {
  const upload = parseGcsRequest('storage.googleapis.com', '/upload/storage/v1/b/bkt/o')!;
  const xml = parseGcsRequest('storage.googleapis.com', '/bkt/obj')!;
  const ID = 'ADPycdvAbc-DEF_123xyz';

  it('recognises session initiation', () => {
    expect(isGcsResumableStart('POST', upload, 'uploadType=resumable&name=obj', {})).toBe(true);
    expect(isGcsResumableStart('POST', upload, 'uploadType=media&name=obj', {})).toBe(false);
    expect(isGcsResumableStart('PUT', upload, 'uploadType=resumable&upload_id=' + ID, {})).toBe(false);
    expect(isGcsResumableStart('POST', upload, 'uploadType=resumable&upload_id=' + ID, {})).toBe(false);
    expect(isGcsResumableStart('POST', xml, null, { 'x-goog-resumable': 'start' })).toBe(true);
    expect(isGcsResumableStart('POST', xml, null, {})).toBe(false);
    expect(isGcsResumableStart('PUT', xml, null, { 'x-goog-resumable': 'start' })).toBe(false);
  });

  it('keys later requests by upload id, from the query and from the initiation Location', () => {
    expect(gcsUploadId(`uploadType=resumable&upload_id=${ID}`)).toBe(ID);
    expect(gcsUploadId(`upload_id=${encodeURIComponent('a+b/c=')}`)).toBe('a+b/c=');
    expect(gcsUploadId('uploadType=resumable')).toBeNull();
    expect(gcsUploadId('upload_id=')).toBeNull();
    expect(gcsUploadId('upload_id=%ZZ')).toBeNull();
    expect(gcsUploadId('upload_id=a%20b')).toBeNull();
    expect(gcsUploadIdFromLocation(`https://storage.googleapis.com/upload/storage/v1/b/bkt/o?uploadType=resumable&name=obj&upload_id=${ID}`)).toBe(ID);
    expect(gcsUploadIdFromLocation(`https://storage.googleapis.com/bkt/obj?upload_id=${ID}#frag`)).toBe(ID);
    expect(gcsUploadIdFromLocation('https://storage.googleapis.com/bkt/obj')).toBeNull();
    expect(gcsUploadIdFromLocation(undefined)).toBeNull();
    expect(gcsUploadIdFromLocation(['a', 'b'])).toBeNull();
  });

  it('session keys are scoped, fixed-length and do not contain the id', () => {
    const a = gcsSessionKey('gcs-eu', ID);
    expect(a).toMatch(/^gcs-resumable:[0-9a-f]{64}$/);
    expect(a).not.toContain(ID);
    expect(gcsSessionKey('gcs-eu', ID)).toBe(a);
    expect(gcsSessionKey('gcs-us', ID)).not.toBe(a);
    expect(gcsSessionKey('gcs-eu', ID + 'x')).not.toBe(a);
  });
});

describe('robustness', () => {
  it('never throws', () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), fc.string(), (a, b, c) => {
        parseAzureHost(a);
        azureAccountFromPath(b);
        const t = parseGcsRequest(a, '/' + b);
        parseGcsRequest(a, b);
        if (t !== null) isGcsResumableStart('POST', t, c, { 'x-goog-resumable': c });
        gcsUploadId(c);
        gcsUploadIdFromLocation(c);
      }),
      { numRuns: 2000 },
    );
  });
});
