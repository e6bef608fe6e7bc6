import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { REGIONS } from '../../src/location/catalog.js';
import {
  isDnsBucketName,
  parseS3CompatibleHost,
  parseS3Host,
  s3HostSignals,
  type S3HostInfo,
} from '../../src/location/request/s3-host.js';

type Row = [host: string, expected: Partial<S3HostInfo> | null];

const table: Row[] = [
  // Virtual-hosted, regional
  ['my-bucket.s3.eu-west-1.amazonaws.com', { bucket: 'my-bucket', region: 'eu-west-1', style: 'virtual', partition: 'aws', global: false }],
  ['my.dotted.bucket.s3.eu-central-1.amazonaws.com', { bucket: 'my.dotted.bucket', region: 'eu-central-1', style: 'virtual' }],
  ['b-1.s3.us-gov-west-1.amazonaws.com', { bucket: 'b-1', region: 'us-gov-west-1', style: 'virtual' }],
  ['bkt.s3.eusc-de-east-1.amazonaws.com', { bucket: 'bkt', region: 'eusc-de-east-1' }],
  // Path style, regional
  ['s3.eu-west-1.amazonaws.com', { bucket: null, region: 'eu-west-1', style: 'path', global: false }],
  // Legacy global
  ['s3.amazonaws.com', { bucket: null, region: 'us-east-1', style: 'path', global: true }],
  ['my-bucket.s3.amazonaws.com', { bucket: 'my-bucket', region: 'us-east-1', style: 'virtual', global: true }],
  ['s3-external-1.amazonaws.com', { bucket: null, region: 'us-east-1', style: 'path', global: false }],
  // Dash region (legacy)
  ['s3-eu-west-1.amazonaws.com', { bucket: null, region: 'eu-west-1', style: 'path' }],
  ['my-bucket.s3-ap-southeast-2.amazonaws.com', { bucket: 'my-bucket', region: 'ap-southeast-2', style: 'virtual' }],
  ['s3-fips-us-gov-west-1.amazonaws.com', { bucket: null, region: 'us-gov-west-1', style: 'path' }],
  // Dualstack and FIPS
  ['s3.dualstack.eu-north-1.amazonaws.com', { bucket: null, region: 'eu-north-1', style: 'path' }],
  ['bkt.s3.dualstack.eu-north-1.amazonaws.com', { bucket: 'bkt', region: 'eu-north-1', style: 'virtual' }],
  ['bkt.s3-fips.us-east-2.amazonaws.com', { bucket: 'bkt', region: 'us-east-2', style: 'virtual' }],
  ['s3-fips.dualstack.us-west-2.amazonaws.com', { bucket: null, region: 'us-west-2', style: 'path' }],
  ['bkt.s3-fips.dualstack.us-west-2.amazonaws.com', { bucket: 'bkt', region: 'us-west-2', style: 'virtual' }],
  // Access points
  ['finance-ap-123456789012.s3-accesspoint.eu-west-3.amazonaws.com', { bucket: null, region: 'eu-west-3', style: 'accesspoint', accessPoint: { name: 'finance-ap', accountId: '123456789012' } }],
  ['ap1-123456789012.s3-accesspoint.dualstack.sa-east-1.amazonaws.com', { region: 'sa-east-1', style: 'accesspoint', accessPoint: { name: 'ap1', accountId: '123456789012' } }],
  ['ap1-123456789012.s3-accesspoint-fips.us-east-1.amazonaws.com', { region: 'us-east-1', style: 'accesspoint' }],
  ['olap-123456789012.s3-object-lambda.eu-west-1.amazonaws.com', { region: 'eu-west-1', style: 'accesspoint' }],
  ['mfzwi23gnjvgw.mrap.accesspoint.s3-global.amazonaws.com', { bucket: null, region: null, style: 'accesspoint', accessPoint: { name: 'mfzwi23gnjvgw.mrap', accountId: null } }],
  // Website endpoints
  ['site.example.com.s3-website-us-west-2.amazonaws.com', { bucket: 'site.example.com', region: 'us-west-2', style: 'website' }],
  ['site.s3-website.eu-central-1.amazonaws.com', { bucket: 'site', region: 'eu-central-1', style: 'website' }],
  // S3 Express One Zone
  ['data--usw2-az1--x-s3.s3express-usw2-az1.us-west-2.amazonaws.com', { bucket: 'data--usw2-az1--x-s3', region: 'us-west-2', style: 'virtual' }],
  ['s3express-control.eu-north-1.amazonaws.com', { bucket: null, region: 'eu-north-1', style: 'path' }],
  // China
  ['bkt.s3.cn-north-1.amazonaws.com.cn', { bucket: 'bkt', region: 'cn-north-1', style: 'virtual', partition: 'aws-cn' }],
  ['s3.cn-northwest-1.amazonaws.com.cn', { bucket: null, region: 'cn-northwest-1', style: 'path', partition: 'aws-cn' }],
  ['site.s3-website.cn-north-1.amazonaws.com.cn', { bucket: 'site', style: 'website', partition: 'aws-cn' }],
  // Port, case, trailing dot
  ['My-Bucket.S3.EU-West-1.AmazonAWS.com:443', { bucket: 'my-bucket', region: 'eu-west-1', style: 'virtual' }],
  ['bkt.s3.eu-west-1.amazonaws.com.', { bucket: 'bkt', region: 'eu-west-1' }],
  ['bkt.s3.eu-west-1.amazonaws.com.:8443', { bucket: 'bkt', region: 'eu-west-1' }],
  // Not S3, or malformed
  ['', null],
  ['.', null],
  ['amazonaws.com', null],
  ['s3.cn-north-1.amazonaws.com', null], // cn region outside China
  ['s3.eu-west-1.amazonaws.com.cn', null], // non-cn region in China
  ['s3.amazonaws.com.cn', null], // no global endpoint in China
  ['bkt.s3.not-a-region.amazonaws.com', null],
  ['bkt.s3.eu-west-1.amazonaws.com.evil.example', null],
  ['s3.eu-west-1.amazonaws.com:http', null],
  ['s3.eu-west-1.amazonaws.com:123456', null],
  ['bkt..s3.eu-west-1.amazonaws.com', null],
  ['.bkt.s3.eu-west-1.amazonaws.com', null],
  ['bkt.s3.eu-west-1.amazonaws.com..', null],
  ['ab.s3.eu-west-1.amazonaws.com', null], // bucket too short
  ['-bkt.s3.eu-west-1.amazonaws.com', null],
  ['192.168.1.1.s3.eu-west-1.amazonaws.com', null], // IP-shaped bucket name
  ['bkt_1.s3.eu-west-1.amazonaws.com', null],
  ['127.0.0.1', null],
  ['127.0.0.1:9000', null],
  ['[::1]:9000', null],
  ['[2001:db8::1]', null],
  ['localhost', null],
  [`${'a'.repeat(64)}.s3.eu-west-1.amazonaws.com`, null], // label > 63
  [`${'a.'.repeat(130)}s3.eu-west-1.amazonaws.com`, null], // host > 253
  ['s3-website.eu-central-1.amazonaws.com', null], // website needs a bucket
  ['ap-12345.s3-accesspoint.eu-west-1.amazonaws.com', null], // account is 12 digits
  ['a.b-123456789012.s3-accesspoint.eu-west-1.amazonaws.com', null],
  ['s3-accesspoint.eu-west-1.amazonaws.com', null],
  ['bkt.dualstack.eu-west-1.amazonaws.com', null],
  ['bkt.s3-website.dualstack.eu-west-1.amazonaws.com', null],
  ['bkt.s3-control.eu-west-1.amazonaws.com', null],
  ['bkt.s3express-usw2-az1.us-west-2.amazonaws.com', null], // not a directory bucket name
  ['s3.eu-west-1.amazonaws.com\r\nx: y', null],
  ['bkt.s3.eu-west-1.amazonaws.com/path', null],
  ['bkt.s3.eu-west-1.amazonaws.com:443:443', null],
];

describe('parseS3Host', () => {
  it.each(table)('%s', (host, expected) => {
    const got = parseS3Host(host);
    if (expected === null) expect(got).toBeNull();
    else expect(got).toMatchObject(expected);
  });

  it('the legacy global endpoint and multi-region access points give no hostname signal', () => {
    expect(s3HostSignals(parseS3Host('bkt.s3.amazonaws.com'))).toEqual([]);
    expect(s3HostSignals(parseS3Host('x.mrap.accesspoint.s3-global.amazonaws.com'))).toEqual([]);
    expect(s3HostSignals(null)).toEqual([]);
    expect(s3HostSignals(parseS3Host('bkt.s3.eu-central-1.amazonaws.com'))).toEqual([
      { source: 'hostname', value: 'eu-central-1', jurisdiction: 'DE', region: 'eu-central-1' },
    ]);
  });

  it('an unknown but well-formed region is parsed (the catalog decides whether it is placed)', () => {
    expect(parseS3Host('bkt.s3.xx-nowhere-9.amazonaws.com')).toMatchObject({ region: 'xx-nowhere-9' });
    expect(s3HostSignals(parseS3Host('bkt.s3.xx-nowhere-9.amazonaws.com'))).toEqual([
      { source: 'hostname', value: 'xx-nowhere-9', jurisdiction: null },
    ]);
  });
});

describe('parseS3CompatibleHost', () => {
  it.each<[string, string, ReturnType<typeof parseS3CompatibleHost>]>([
    ['bkt.s3.example.eu', 's3.example.eu', { bucket: 'bkt', style: 'virtual' }],
    ['my.bkt.s3.example.eu', 's3.example.eu', { bucket: 'my.bkt', style: 'virtual' }],
    ['BKT.S3.Example.EU.:9000', '.s3.example.eu.', { bucket: 'bkt', style: 'virtual' }],
    ['s3.example.eu', 's3.example.eu', { bucket: null, style: 'path' }],
    ['s3.example.eu:443', 'S3.EXAMPLE.EU', { bucket: null, style: 'path' }],
    ['bkt.s3.example.com', 's3.example.eu', null],
    ['bkts3.example.eu', 's3.example.eu', null],
    ['example.eu', 's3.example.eu', null],
    ['ab.s3.example.eu', 's3.example.eu', null],
    ['b..x.s3.example.eu', 's3.example.eu', null],
    ['127.0.0.1', '0.0.1', null],
    ['bkt.s3.example.eu', '', null],
  ])('%s under %s', (host, suffix, expected) => {
    expect(parseS3CompatibleHost(host, suffix)).toEqual(expected);
  });
});

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

const AWS_REGIONS = [...REGIONS.values()].filter((r) => r.provider === 'aws').map((r) => r.id);
const COMMERCIAL = AWS_REGIONS.filter((r) => !r.startsWith('cn-'));
const CHINA = AWS_REGIONS.filter((r) => r.startsWith('cn-'));

const label = fc.stringMatching(/^[a-z0-9](?:[a-z0-9-]{0,12}[a-z0-9])?$/);
const bucketArb = fc
  .array(label, { minLength: 1, maxLength: 4 })
  .map((ls) => ls.join('.'))
  .filter((b) => b.length >= 3 && b.length <= 63 && !/^\d+\.\d+\.\d+\.\d+$/.test(b));
const apNameArb = fc.stringMatching(/^[a-z0-9][a-z0-9-]{1,20}[a-z0-9]$/);
const accountArb = fc.stringMatching(/^\d{12}$/);

type Shape = 'virtual' | 'virtual-dualstack' | 'virtual-fips' | 'virtual-fips-dualstack' | 'virtual-dash' | 'path' | 'path-dash' | 'path-dualstack' | 'website-dash' | 'website-dot' | 'accesspoint' | 'accesspoint-dualstack';
const SHAPES: Shape[] = ['virtual', 'virtual-dualstack', 'virtual-fips', 'virtual-fips-dualstack', 'virtual-dash', 'path', 'path-dash', 'path-dualstack', 'website-dash', 'website-dot', 'accesspoint', 'accesspoint-dualstack'];

/** Independent host builder: the documented endpoint spellings. */
function buildHost(shape: Shape, bucket: string, region: string, suffix: string, ap: string): string {
  switch (shape) {
    case 'virtual': return `${bucket}.s3.${region}.${suffix}`;
    case 'virtual-dualstack': return `${bucket}.s3.dualstack.${region}.${suffix}`;
    case 'virtual-fips': return `${bucket}.s3-fips.${region}.${suffix}`;
    case 'virtual-fips-dualstack': return `${bucket}.s3-fips.dualstack.${region}.${suffix}`;
    case 'virtual-dash': return `${bucket}.s3-${region}.${suffix}`;
    case 'path': return `s3.${region}.${suffix}`;
    case 'path-dash': return `s3-${region}.${suffix}`;
    case 'path-dualstack': return `s3.dualstack.${region}.${suffix}`;
    case 'website-dash': return `${bucket}.s3-website-${region}.${suffix}`;
    case 'website-dot': return `${bucket}.s3-website.${region}.${suffix}`;
    case 'accesspoint': return `${ap}.s3-accesspoint.${region}.${suffix}`;
    case 'accesspoint-dualstack': return `${ap}.s3-accesspoint.dualstack.${region}.${suffix}`;
  }
}

function expectedStyle(shape: Shape): S3HostInfo['style'] {
  if (shape.startsWith('virtual')) return 'virtual';
  if (shape.startsWith('path')) return 'path';
  if (shape.startsWith('website')) return 'website';
  return 'accesspoint';
}

/** Random case, optional trailing dot and port: none of them change the meaning. */
const decorate = (host: string) =>
  fc.tuple(fc.array(fc.boolean(), { minLength: host.length, maxLength: host.length }), fc.boolean(), fc.option(fc.integer({ min: 1, max: 65535 }))).map(
    ([upper, dot, port]) =>
      [...host].map((c, i) => (upper[i] ? c.toUpperCase() : c)).join('') + (dot ? '.' : '') + (port === null ? '' : `:${port}`),
  );

describe('parseS3Host properties', () => {
  it('never throws, and anything it returns is well formed', () => {
    const tokens = fc.constantFrom('s3', 's3-', '.', '..', '-', 'amazonaws', 'com', 'cn', 'dualstack', 's3-accesspoint', 's3-website', 's3-fips', 'eu-west-1', 'cn-north-1', ':', '443', '[', ']', 'a'.repeat(70), '123456789012', 'x');
    const hostish = fc.array(tokens, { maxLength: 30 }).map((t) => t.join(''));
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: 'binary', maxLength: 300 }), hostish, fc.string({ maxLength: 400 })), (host) => {
        const got = parseS3Host(host);
        if (got !== null) {
          expect(got.bucket === null || isDnsBucketName(got.bucket)).toBe(true);
          expect(got.region === null || /^[a-z]{2,4}(-[a-z]+)+-\d+$/.test(got.region)).toBe(true);
        }
        parseS3CompatibleHost(host, 's3.example.eu');
        parseS3CompatibleHost('bkt.s3.example.eu', host);
      }),
      { numRuns: 2000 },
    );
  });

  it('never throws on non-strings smuggled in from untyped callers', () => {
    for (const v of [undefined, null, 42, {}, [], Symbol('x')]) {
      expect(parseS3Host(v as unknown as string)).toBeNull();
    }
  });

  it('round-trips generated (bucket, region, shape) through a host builder', () => {
    const arb = fc
      .record({
        shape: fc.constantFrom(...SHAPES),
        bucket: bucketArb,
        china: fc.boolean(),
        commercial: fc.constantFrom(...COMMERCIAL),
        cn: fc.constantFrom(...CHINA),
        ap: apNameArb,
        account: accountArb,
      })
      .chain((r) => {
        const region = r.china ? r.cn : r.commercial;
        const suffix = r.china ? 'amazonaws.com.cn' : 'amazonaws.com';
        const host = buildHost(r.shape, r.bucket, region, suffix, `${r.ap}-${r.account}`);
        return decorate(host).map((decorated) => ({ ...r, region, decorated }));
      });
    fc.assert(
      fc.property(arb, (r) => {
        const got = parseS3Host(r.decorated);
        expect(got).not.toBeNull();
        const style = expectedStyle(r.shape);
        expect(got!.style).toBe(style);
        expect(got!.region).toBe(r.region);
        expect(got!.partition).toBe(r.china ? 'aws-cn' : 'aws');
        expect(got!.global).toBe(false);
        if (style === 'virtual' || style === 'website') expect(got!.bucket).toBe(r.bucket);
        else expect(got!.bucket).toBeNull();
        if (style === 'accesspoint') expect(got!.accessPoint).toEqual({ name: r.ap, accountId: r.account });
      }),
      { numRuns: 1500 },
    );
  });

  it('round-trips buckets under a custom S3-compatible suffix', () => {
    const suffixArb = fc.array(label, { minLength: 1, maxLength: 3 }).map((ls) => ls.join('.')).filter((s) => !/^\d+\.\d+\.\d+\.\d+$/.test(s));
    fc.assert(
      fc.property(bucketArb, suffixArb, (bucket, suffix) => {
        // A bucket and suffix can combine into an IPv4-looking host, which is rightly not a bucket host.
        fc.pre(!/^\d+\.\d+\.\d+\.\d+$/.test(`${bucket}.${suffix}`));
        expect(parseS3CompatibleHost(`${bucket}.${suffix}`, suffix)).toEqual({ bucket, style: 'virtual' });
        expect(parseS3CompatibleHost(suffix, suffix)).toEqual({ bucket: null, style: 'path' });
      }),
    );
  });
});
