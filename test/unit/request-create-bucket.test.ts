import { Readable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Provider } from '../../src/config/schema.js';
import { decodeAwsChunked, isAwsChunked } from '../../src/location/request/aws-chunked.js';
import { readBounded } from '../../src/location/request/body.js';
import {
  CREATE_BUCKET_BODY_LIMIT,
  createBucketLocation,
  createBucketSignals,
  detectCreateBucket,
  type CreateBucketTarget,
} from '../../src/location/request/create-bucket.js';
import { parseSafeXml } from '../../src/location/request/safe-xml.js';

const S3: CreateBucketTarget = { api: 's3', bucket: 'bkt' };
const GCS_XML: CreateBucketTarget = { api: 'gcs-xml', bucket: 'bkt' };
const GCS_JSON: CreateBucketTarget = { api: 'gcs-json', bucket: null };
const NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"';
const cfg = (inner: string) => `<?xml version="1.0" encoding="UTF-8"?>\n<CreateBucketConfiguration ${NS}>${inner}</CreateBucketConfiguration>`;
const loc = (target: CreateBucketTarget, body: string) => createBucketLocation(target, Buffer.from(body));

describe('detectCreateBucket', () => {
  it.each<[Provider, string, string, string | null, string | null, CreateBucketTarget | null]>([
    ['s3', 'PUT', '/bkt', null, null, { api: 's3', bucket: 'bkt' }],
    ['s3', 'PUT', '/bkt/', null, null, { api: 's3', bucket: 'bkt' }],
    ['s3', 'PUT', '/', null, 'bkt', { api: 's3', bucket: 'bkt' }],
    // Unknown parameters do not stop S3 from creating the bucket (the SDK sends x-id on some calls).
    ['s3', 'PUT', '/bkt', 'x-id=CreateBucket', null, { api: 's3', bucket: 'bkt' }],
    ['s3', 'PUT', '/bkt', 'ACL', null, { api: 's3', bucket: 'bkt' }],
    ['s3', 'PUT', '/bkt', 'acl', null, null],
    ['s3', 'PUT', '/bkt', 'policy', null, null],
    ['s3', 'PUT', '/bkt', 'versioning', null, null],
    ['s3', 'PUT', '/bkt', 'x-id=PutBucketTagging&tagging', null, null],
    ['s3', 'PUT', '/bkt', 'publicAccessBlock', null, null],
    ['s3', 'PUT', '/bkt/key', null, null, null],
    ['s3', 'PUT', '/bkt/a/b', null, null, null],
    ['s3', 'PUT', '/key', null, 'bkt', null], // PutObject on a virtual host
    ['s3', 'PUT', '/', null, null, null],
    ['s3', 'POST', '/bkt', null, null, null],
    ['s3', 'GET', '/bkt', null, null, null],
    ['s3', 'HEAD', '/bkt', null, null, null],
    ['s3', 'PUT', '/b%6Bt', null, null, { api: 's3', bucket: 'bkt' }],
    ['s3', 'PUT', '/b%ZZt', null, null, null],
    ['gcs', 'POST', '/storage/v1/b', 'project=my-project', null, { api: 'gcs-json', bucket: null }],
    ['gcs', 'POST', '/storage/v1/b/', null, null, { api: 'gcs-json', bucket: null }],
    ['gcs', 'GET', '/storage/v1/b', 'project=p', null, null],
    ['gcs', 'POST', '/storage/v1/b/bkt/o', 'uploadType=media&name=x', null, null],
    ['gcs', 'PUT', '/bkt', null, null, { api: 'gcs-xml', bucket: 'bkt' }],
    ['gcs', 'PUT', '/', null, 'bkt', { api: 'gcs-xml', bucket: 'bkt' }],
    ['gcs', 'PUT', '/bkt', 'versioning', null, null],
    ['gcs', 'PUT', '/bkt', 'websiteConfig', null, null],
    ['gcs', 'PUT', '/bkt/obj', null, null, null],
    ['azure', 'PUT', '/container', 'restype=container', null, null],
    ['generic', 'PUT', '/bkt', null, null, null],
  ])('%s %s %s ?%s host=%s', (provider, method, path, query, hostBucket, expected) => {
    expect(detectCreateBucket(provider, method, path, query, hostBucket)).toEqual(expected);
  });
});

describe('S3 CreateBucketConfiguration', () => {
  it.each<[string, string[], string | null, boolean]>([
    ['', ['us-east-1'], null, true],
    ['  \n', ['us-east-1'], null, true],
    [cfg(''), ['us-east-1'], null, true],
    [cfg('<LocationConstraint></LocationConstraint>'), ['us-east-1'], '', true],
    [cfg('<LocationConstraint/>'), ['us-east-1'], '', true],
    [cfg('<LocationConstraint>EU</LocationConstraint>'), ['eu-west-1'], 'EU', false],
    [cfg('<LocationConstraint>eu-central-1</LocationConstraint>'), ['eu-central-1'], 'eu-central-1', false],
    [cfg('<LocationConstraint>\n  ap-southeast-2  \n</LocationConstraint>'), ['ap-southeast-2'], 'ap-southeast-2', false],
    [cfg('<LocationConstraint>eu-&#x63;entral-1</LocationConstraint>'), ['eu-central-1'], 'eu-central-1', false],
    [cfg('<!-- a comment --><LocationConstraint>eu-west-3</LocationConstraint>'), ['eu-west-3'], 'eu-west-3', false],
    [cfg('<Tags><Tag><Key>a</Key><Value>b</Value></Tag></Tags><LocationConstraint>eu-north-1</LocationConstraint>'), ['eu-north-1'], 'eu-north-1', false],
    ['<s3:CreateBucketConfiguration xmlns:s3="http://s3.amazonaws.com/doc/2006-03-01/"><s3:LocationConstraint>eu-west-2</s3:LocationConstraint></s3:CreateBucketConfiguration>', ['eu-west-2'], 'eu-west-2', false],
    ['\uFEFF' + cfg('<LocationConstraint>eu-south-1</LocationConstraint>'), ['eu-south-1'], 'eu-south-1', false],
  ])('%j', (body, places, stated, defaulted) => {
    const got = loc(S3, body);
    expect(got).toEqual({ ok: true, api: 's3', bucket: 'bkt', places, stated, defaulted });
  });

  it('a directory bucket (Location, no LocationConstraint) places nothing: the endpoint region applies', () => {
    const body = cfg('<Location><Name>usw2-az1</Name><Type>AvailabilityZone</Type></Location><Bucket><DataRedundancy>SingleAvailabilityZone</DataRedundancy><Type>Directory</Type></Bucket>');
    expect(loc(S3, body)).toMatchObject({ ok: true, places: [], defaulted: false });
  });

  it.each([
    ['<LocationConstraint>eu-west-1</LocationConstraint>', 'not under CreateBucketConfiguration'],
    [cfg('<LocationConstraint>eu-west-1</LocationConstraint><LocationConstraint>us-east-2</LocationConstraint>'), 'two constraints'],
    [cfg('<locationconstraint>eu-west-1</locationconstraint>'), 'differently spelled'],
    [cfg('<LocationConstraint>eu west 1</LocationConstraint>'), 'not an id'],
    [cfg('<LocationConstraint><X>eu-west-1</X></LocationConstraint>'), 'nested'],
    [cfg('<LocationConstraint>eu-west-1</LocationConstraint>') + '<Extra/>', 'two roots'],
    [cfg('<LocationConstraint>eu-west-1'), 'unclosed'],
    [cfg('<LocationConstraint>eu-west-1</Other>'), 'mismatched'],
    [cfg('<LocationConstraint>&unknown;</LocationConstraint>'), 'undefined entity'],
    [cfg('<LocationConstraint>&constructor;</LocationConstraint>'), 'prototype-named entity'],
    [cfg('<LocationConstraint>a & b</LocationConstraint>'), 'bare ampersand'],
    [cfg('<LocationConstraint>&#0;</LocationConstraint>'), 'NUL reference'],
    [cfg('<LocationConstraint><![CDATA[eu-west-1]]></LocationConstraint>'), 'CDATA'],
    ['garbage', 'not XML'],
    ['<', 'truncated'],
    ['<CreateBucketConfiguration a="1></CreateBucketConfiguration>', 'unterminated attribute'],
    ['{"location":"EU"}', 'JSON to the XML API'],
  ])('refuses %j (%s)', (body) => {
    expect(loc(S3, body)).toMatchObject({ ok: false, status: 400, code: 'create_bucket_malformed' });
  });

  it('refuses invalid UTF-8', () => {
    const bytes = Buffer.concat([Buffer.from(cfg('<LocationConstraint>eu-west-1')), Buffer.from([0xff, 0xfe]), Buffer.from('</LocationConstraint>')]);
    expect(createBucketLocation(S3, bytes)).toMatchObject({ ok: false, code: 'create_bucket_malformed' });
  });

  it('signals come from the catalog', () => {
    expect(createBucketSignals(loc(S3, cfg('<LocationConstraint>EU</LocationConstraint>')))).toEqual([
      { source: 'create-bucket', value: 'eu-west-1', jurisdiction: 'IE', region: 'eu-west-1' },
    ]);
    expect(createBucketSignals(loc(S3, 'garbage'))).toEqual([]);
  });
});

describe('DTDs and entities are refused, quickly, and nothing expands', () => {
  const billionLaughs = `<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<CreateBucketConfiguration><LocationConstraint>&lol9;</LocationConstraint></CreateBucketConfiguration>`;

  it('billion laughs: an error in < 50 ms', () => {
    const started = performance.now();
    const got = loc(S3, billionLaughs);
    const ms = performance.now() - started;
    expect(got).toMatchObject({ ok: false, code: 'create_bucket_malformed' });
    expect(ms).toBeLessThan(50);
  });

  it('billion laughs padded to the body limit: still < 50 ms', () => {
    const padded = billionLaughs.replace('<?xml version="1.0"?>', `<?xml version="1.0"?><!--${'x'.repeat(CREATE_BUCKET_BODY_LIMIT - billionLaughs.length - 20)}-->`);
    expect(padded.length).toBeLessThanOrEqual(CREATE_BUCKET_BODY_LIMIT);
    const started = performance.now();
    expect(loc(S3, padded)).toMatchObject({ ok: false });
    expect(performance.now() - started).toBeLessThan(50);
  });

  it.each([
    ['external entity (XXE)', '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><CreateBucketConfiguration><LocationConstraint>&xxe;</LocationConstraint></CreateBucketConfiguration>'],
    ['parameter entity', '<!DOCTYPE x [<!ENTITY % p SYSTEM "http://127.0.0.1/x.dtd"> %p;]><CreateBucketConfiguration/>'],
    ['external DTD', '<!DOCTYPE CreateBucketConfiguration SYSTEM "http://127.0.0.1/x.dtd"><CreateBucketConfiguration/>'],
    ['lower-case doctype', '<!doctype x><CreateBucketConfiguration/>'],
    ['doctype after the root', '<CreateBucketConfiguration/><!DOCTYPE x>'],
    ['doctype inside the root', '<CreateBucketConfiguration><!ENTITY a "b"></CreateBucketConfiguration>'],
  ])('%s', (_name, body) => {
    const doc = parseSafeXml(body);
    expect(doc.ok).toBe(false);
    expect(loc(S3, body)).toMatchObject({ ok: false, code: 'create_bucket_malformed' });
  });

  it('deep nesting and element floods are bounded', () => {
    const deep = '<a>'.repeat(5000) + '</a>'.repeat(5000);
    expect(parseSafeXml(deep)).toMatchObject({ ok: false, error: 'elements nested too deeply' });
    const flood = `<CreateBucketConfiguration>${'<x/>'.repeat(10_000)}</CreateBucketConfiguration>`;
    expect(parseSafeXml(flood)).toMatchObject({ ok: false, error: 'too many elements' });
  });
});

describe('GCS', () => {
  it.each<[string, string[], string | null, boolean, string | null]>([
    ['{"name":"bkt"}', ['US'], null, true, 'bkt'],
    ['{"name":"bkt","location":"EU"}', ['EU'], 'EU', false, 'bkt'],
    ['{"name":"bkt","location":"europe-west3","storageClass":"STANDARD"}', ['europe-west3'], 'europe-west3', false, 'bkt'],
    ['{"name":"bkt","location":"eur4"}', ['eur4'], 'eur4', false, 'bkt'],
    ['{"name":"bkt","location":"EU","customPlacementConfig":{"dataLocations":["EUROPE-WEST3","EUROPE-WEST4"]}}', ['EUROPE-WEST3', 'EUROPE-WEST4'], 'EU', false, 'bkt'],
    ['{"location":"ASIA","labels":{"location":"x"}}', ['ASIA'], 'ASIA', false, null],
  ])('JSON %s', (body, places, stated, defaulted, bucket) => {
    expect(loc(GCS_JSON, body)).toEqual({ ok: true, api: 'gcs-json', bucket, places, stated, defaulted });
  });

  it('JSON locations map through the catalog, case-insensitively', () => {
    const signals = (body: string) => createBucketSignals(loc(GCS_JSON, body));
    expect(signals('{"location":"US"}').map((s) => s.jurisdiction)).toEqual(['US']);
    expect(signals('{}').map((s) => s.jurisdiction)).toEqual(['US']);
    expect(signals('{"location":"EU"}')).toHaveLength(27);
    expect(signals('{"location":"ASIA"}').map((s) => s.jurisdiction)).toContain('JP');
    expect(signals('{"location":"EUR4"}').map((s) => s.jurisdiction)).toEqual(['FI', 'NL']);
    expect(signals('{"location":"Europe-West3"}')).toEqual([{ source: 'create-bucket', value: 'Europe-West3', jurisdiction: 'DE', region: 'europe-west3' }]);
    expect(signals('{"location":"mars-north1"}')).toEqual([{ source: 'create-bucket', value: 'mars-north1', jurisdiction: null }]);
  });

  it.each([
    ['not JSON', '{location:"EU"}'],
    ['an array', '[{"location":"EU"}]'],
    ['null', 'null'],
    ['a non-string location', '{"location":["EU"]}'],
    ['a null location', '{"location":null}'],
    ['a location with spaces', '{"location":"EU WEST"}'],
    ['duplicate keys', '{"location":"EU","location":"US"}'],
    ['case-variant keys', '{"location":"EU","Location":"US"}'],
    ['escaped duplicate keys', '{"location":"EU","\\u006cocation":"US"}'],
    ['snake/camel duplicates', '{"location":"EU","customPlacementConfig":{"dataLocations":["EUROPE-WEST3"],"data_locations":["US-EAST1"]}}'],
    ['empty dataLocations', '{"location":"EU","customPlacementConfig":{"dataLocations":[]}}'],
    ['bad dataLocations', '{"location":"EU","customPlacementConfig":{"dataLocations":[1]}}'],
  ])('JSON refuses %s', (_name, body) => {
    expect(loc(GCS_JSON, body)).toMatchObject({ ok: false, status: 400, code: 'create_bucket_malformed' });
  });

  it('XML API: LocationConstraint as given, US by default, no EU → Ireland mapping', () => {
    expect(loc(GCS_XML, '')).toMatchObject({ ok: true, places: ['US'], defaulted: true });
    expect(loc(GCS_XML, '<CreateBucketConfiguration><LocationConstraint>EU</LocationConstraint><StorageClass>STANDARD</StorageClass></CreateBucketConfiguration>')).toMatchObject({ ok: true, places: ['EU'], stated: 'EU' });
  });
});

describe('aws-chunked bodies', () => {
  const xml = cfg('<LocationConstraint>eu-central-1</LocationConstraint>');
  const sig = 'chunk-signature=' + 'a'.repeat(64);
  const chunked = (parts: string[], trailer = '') =>
    parts.map((p) => `${Buffer.byteLength(p).toString(16)};${sig}\r\n${p}\r\n`).join('') + `0;${sig}\r\n${trailer}\r\n`;

  it('are unframed before parsing', () => {
    const body = chunked([xml.slice(0, 40), xml.slice(40)]);
    expect(createBucketLocation(S3, Buffer.from(body), { awsChunked: true })).toMatchObject({ ok: true, places: ['eu-central-1'] });
    const unsigned = `${Buffer.byteLength(xml).toString(16)}\r\n${xml}\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n`;
    expect(createBucketLocation(S3, Buffer.from(unsigned), { awsChunked: true })).toMatchObject({ ok: true, places: ['eu-central-1'] });
  });

  it('malformed framing is refused', () => {
    expect(decodeAwsChunked(Buffer.from('zz\r\nabc'))).toBeNull();
    expect(decodeAwsChunked(Buffer.from('10\r\nabc\r\n0\r\n'))).toBeNull();
    expect(decodeAwsChunked(Buffer.from('3\r\nabcX\n0\r\n'))).toBeNull();
    expect(decodeAwsChunked(Buffer.from('3\r\nabc'))).toBeNull();
    expect(createBucketLocation(S3, Buffer.from(xml), { awsChunked: true })).toMatchObject({ ok: false, code: 'create_bucket_malformed' });
  });

  it('isAwsChunked', () => {
    expect(isAwsChunked({ 'x-amz-content-sha256': 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD' })).toBe(true);
    expect(isAwsChunked({ 'content-encoding': 'gzip, AWS-Chunked' })).toBe(true);
    expect(isAwsChunked({ 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' })).toBe(false);
    expect(isAwsChunked({})).toBe(false);
  });
});

describe('readBounded', () => {
  const chunks = (parts: Buffer[]) => Readable.from(parts, { objectMode: false });

  it('returns exactly the bytes read', async () => {
    const parts = [Buffer.from('ab'), Buffer.from(''), Buffer.from('cdé')];
    const got = await readBounded(chunks(parts), 100);
    expect(got).toEqual({ ok: true, bytes: Buffer.concat(parts) });
  });

  it('an exactly-at-limit body is fine; one byte more is too large', async () => {
    expect(await readBounded(chunks([Buffer.alloc(10, 1)]), 10)).toMatchObject({ ok: true });
    const over = await readBounded(chunks([Buffer.alloc(6, 1), Buffer.alloc(5, 2)]), 10);
    expect(over).toMatchObject({ ok: false, reason: 'too_large' });
    expect(over.bytes.length).toBe(11);
  });

  it('stops reading at the limit and leaves the rest unread', async () => {
    let produced = 0;
    const stream = new Readable({
      read() {
        produced++;
        this.push(produced > 1000 ? null : Buffer.alloc(1024, 7));
      },
    });
    const got = await readBounded(stream, 4096);
    expect(got).toMatchObject({ ok: false, reason: 'too_large' });
    expect(produced).toBeLessThan(100);
    expect(stream.destroyed).toBe(false);
    // The rest can still be consumed (e.g. forwarded after the inspected bytes).
    let rest = 0;
    for await (const c of stream) rest += (c as Buffer).length;
    expect(got.bytes.length + rest).toBe(1000 * 1024);
  });

  it('an errored or aborted stream is reported, not thrown', async () => {
    const failing = new Readable({
      read() {
        this.destroy(new Error('boom'));
      },
    });
    expect(await readBounded(failing, 10)).toMatchObject({ ok: false, reason: 'aborted' });
    const ac = new AbortController();
    const never = new Readable({ read() {} });
    const p = readBounded(never, 10, ac.signal);
    ac.abort();
    expect(await p).toMatchObject({ ok: false, reason: 'aborted' });
  });

  it('an already-ended stream reads as empty', async () => {
    const s = Readable.from([]);
    for await (const _ of s) void _;
    expect(await readBounded(s, 10)).toEqual({ ok: true, bytes: Buffer.alloc(0) });
  });

  it('exact bytes for any chunking (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 20 }), fc.integer({ min: 0, max: 2048 }), async (parts, limit) => {
        const all = Buffer.concat(parts.map((p) => Buffer.from(p)));
        const got = await readBounded(chunks(parts.map((p) => Buffer.from(p))), limit);
        if (all.length <= limit) expect(got).toEqual({ ok: true, bytes: all });
        else {
          expect(got.ok).toBe(false);
          expect(all.subarray(0, got.bytes.length).equals(got.bytes)).toBe(true);
          expect(got.bytes.length).toBeGreaterThan(limit);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('a body read up to the limit decides; one past it is not read whole', async () => {
    const got = await readBounded(chunks([Buffer.alloc(CREATE_BUCKET_BODY_LIMIT + 1, 0x20)]), CREATE_BUCKET_BODY_LIMIT);
    expect(got).toMatchObject({ ok: false, reason: 'too_large' });
    const fine = await readBounded(chunks([Buffer.from(cfg('<LocationConstraint>EU</LocationConstraint>'))]), CREATE_BUCKET_BODY_LIMIT);
    expect(fine.ok).toBe(true);
    expect(createBucketLocation(S3, fine.bytes)).toMatchObject({ ok: true, places: ['eu-west-1'] });
  });
});

describe('robustness', () => {
  it('never throws on arbitrary bodies', () => {
    const piece = fc.constantFrom('<', '>', '</', '/>', '<!--', '-->', '<?', '?>', '<!DOCTYPE', '&', ';', '&#x', '&lt;', 'CreateBucketConfiguration', 'LocationConstraint', ' a="', '"', "'", 'eu-west-1', '{', '}', '"location"', ':', ',', '[', ']', '\\', '\u0000');
    const structured = fc.array(piece, { maxLength: 40 }).map((p) => p.join(''));
    fc.assert(
      fc.property(fc.oneof(structured, fc.string(), fc.uint8Array({ maxLength: 200 }).map((u) => Buffer.from(u).toString('latin1'))), fc.constantFrom(S3, GCS_XML, GCS_JSON), fc.boolean(), (body, target, chunked) => {
        const got = createBucketLocation(target, Buffer.from(body, 'utf8'), { awsChunked: chunked });
        expect(typeof got.ok).toBe('boolean');
      }),
      { numRuns: 3000 },
    );
  });
});
