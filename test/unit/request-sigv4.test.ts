import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  parseAuthorizationScope,
  parseQueryScope,
  parseSigV4,
  scopeRegions,
  sigv4Signals,
} from '../../src/location/request/sigv4.js';

const SIG = 'fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024';
const auth = (credential: string, algorithm = 'AWS4-HMAC-SHA256') =>
  `${algorithm} Credential=${credential}, SignedHeaders=host;range;x-amz-date, Signature=${SIG}`;

describe('SigV4 Authorization header', () => {
  it('reads access key, date, region and service', () => {
    expect(parseAuthorizationScope(auth('AKIAIOSFODNN7EXAMPLE/20130524/eu-west-1/s3/aws4_request'))).toEqual({
      algorithm: 'AWS4-HMAC-SHA256',
      accessKeyId: 'AKIAIOSFODNN7EXAMPLE',
      date: '20130524',
      region: 'eu-west-1',
      regionSet: null,
      service: 's3',
      via: 'header',
    });
  });

  it('accepts the compact form without spaces after commas', () => {
    const h = `AWS4-HMAC-SHA256 Credential=AKID/20240101/ap-south-1/s3/aws4_request,SignedHeaders=host,Signature=${SIG}`;
    expect(parseAuthorizationScope(h)).toMatchObject({ region: 'ap-south-1', accessKeyId: 'AKID' });
  });

  it('never returns the signature', () => {
    const got = parseSigV4({ authorization: auth('AKID/20240101/eu-west-1/s3/aws4_request') }, null);
    expect(JSON.stringify(got)).not.toContain(SIG);
    expect(Object.keys(got!)).not.toContain('signature');
  });

  it.each([
    ['', null],
    ['AWS4-HMAC-SHA256', null],
    ['Bearer abc', null],
    ['AWS AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=', null], // SigV2: no region
    [auth('AKID/20240101/eu-west-1/s3'), null], // no terminator
    [auth('AKID/20240101/eu-west-1/s3/aws4_request/extra'), null],
    [auth('AKID/2024-01-01/eu-west-1/s3/aws4_request'), null],
    [auth('AKID/20240101/EU WEST/s3/aws4_request'), null],
    [auth('AKID/20240101//s3/aws4_request'), null],
    [auth('/20240101/eu-west-1/s3/aws4_request'), null],
    [auth('AKID/20240101/eu-west-1/s3/aws4_request', 'AWS4-HMAC-SHA512'), null],
    [`AWS4-HMAC-SHA256 SignedHeaders=host, Signature=${SIG}`, null],
    [`AWS4-HMAC-SHA256 Credential=A/20240101/eu-west-1/s3/aws4_request, Credential=B/20240101/us-east-1/s3/aws4_request`, null],
    [`AWS4-HMAC-SHA256 Credential=AKID/20240101/${'x'.repeat(10_000)}/s3/aws4_request`, null],
  ])('rejects %j', (header, expected) => {
    expect(parseAuthorizationScope(header)).toBe(expected);
  });
});

describe('SigV4 presigned query', () => {
  it('URL-decodes X-Amz-Credential', () => {
    const q = `X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Feu-central-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=${SIG}`;
    const got = parseQueryScope(q);
    expect(got).toEqual({
      algorithm: 'AWS4-HMAC-SHA256',
      accessKeyId: 'AKIAIOSFODNN7EXAMPLE',
      date: '20130524',
      region: 'eu-central-1',
      regionSet: null,
      service: 's3',
      via: 'query',
    });
    expect(JSON.stringify(got)).not.toContain(SIG);
  });

  it.each([
    [null],
    [''],
    ['X-Amz-Credential=AKID%2F20240101%2Feu-west-1%2Fs3%2Faws4_request'], // no algorithm
    ['X-Amz-Algorithm=AWS4-HMAC-SHA256'],
    ['X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=%E0%A4%A'], // bad escape
    ['X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20240101%2Feu-west-1%2Fs3'],
    ['x-amz-algorithm=AWS4-HMAC-SHA256&x-amz-credential=AKID%2F20240101%2Feu-west-1%2Fs3%2Faws4_request'], // names are case-sensitive
  ])('rejects %j', (q) => {
    expect(parseQueryScope(q)).toBeNull();
  });

  it('prefers the Authorization header when both are present', () => {
    const q = 'X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=Q%2F20240101%2Fus-east-1%2Fs3%2Faws4_request';
    expect(parseSigV4({ authorization: auth('H/20240101/eu-west-1/s3/aws4_request') }, q)).toMatchObject({ accessKeyId: 'H', via: 'header' });
    expect(parseSigV4({ authorization: 'Bearer x' }, q)).toMatchObject({ accessKeyId: 'Q', via: 'query' });
  });
});

describe('SigV4a', () => {
  it('takes the region set from the X-Amz-Region-Set header', () => {
    const got = parseSigV4(
      { authorization: auth('AKID/20240101/s3/aws4_request', 'AWS4-ECDSA-P256-SHA256'), 'x-amz-region-set': 'eu-west-1, EU-CENTRAL-1' },
      null,
    );
    expect(got).toMatchObject({ algorithm: 'AWS4-ECDSA-P256-SHA256', region: null, regionSet: ['eu-west-1', 'eu-central-1'], service: 's3' });
    expect(scopeRegions(got)).toEqual(['eu-west-1', 'eu-central-1']);
    expect(sigv4Signals(got).map((s) => s.jurisdiction)).toEqual(['IE', 'DE']);
  });

  it('takes the region set from the query', () => {
    const q = 'X-Amz-Algorithm=AWS4-ECDSA-P256-SHA256&X-Amz-Credential=AKID%2F20240101%2Fs3%2Faws4_request&X-Amz-Region-Set=eu-west-1%2Ceu-west-3';
    expect(parseQueryScope(q)).toMatchObject({ regionSet: ['eu-west-1', 'eu-west-3'], via: 'query' });
  });

  it('a wildcard region set is not a location: no signal', () => {
    for (const set of ['*', 'eu-west-1,*', 'us-*']) {
      const got = parseSigV4({ authorization: auth('AKID/20240101/s3/aws4_request', 'AWS4-ECDSA-P256-SHA256'), 'x-amz-region-set': set }, null);
      expect(got).not.toBeNull();
      expect(got!.accessKeyId).toBe('AKID');
      expect(scopeRegions(got)).toEqual([]);
      expect(sigv4Signals(got)).toEqual([]);
    }
  });

  it('without a region set there is no region', () => {
    const got = parseSigV4({ authorization: auth('AKID/20240101/s3/aws4_request', 'AWS4-ECDSA-P256-SHA256') }, null);
    expect(got).toMatchObject({ regionSet: null, region: null });
    expect(scopeRegions(got)).toEqual([]);
  });

  it('a SigV4 (5-part) credential under the SigV4a algorithm is malformed', () => {
    expect(parseAuthorizationScope(auth('AKID/20240101/eu-west-1/s3/aws4_request', 'AWS4-ECDSA-P256-SHA256'))).toBeNull();
  });

  it('a malformed region set rejects the scope', () => {
    expect(parseAuthorizationScope(auth('AKID/20240101/s3/aws4_request', 'AWS4-ECDSA-P256-SHA256'), 'eu west 1')).toBeNull();
    expect(parseAuthorizationScope(auth('AKID/20240101/s3/aws4_request', 'AWS4-ECDSA-P256-SHA256'), ',')).toBeNull();
  });
});

describe('signals', () => {
  it('SigV4 region → sigv4 signal', () => {
    expect(sigv4Signals(parseSigV4({ authorization: auth('AKID/20240101/eu-central-1/s3/aws4_request') }, null))).toEqual([
      { source: 'sigv4', value: 'eu-central-1', jurisdiction: 'DE', region: 'eu-central-1' },
    ]);
    expect(sigv4Signals(null)).toEqual([]);
  });
});

describe('robustness', () => {
  it('never throws on arbitrary headers and queries', () => {
    const piece = fc.constantFrom('AWS4-HMAC-SHA256 ', 'AWS4-ECDSA-P256-SHA256 ', 'Credential=', '/', ',', ' ', 'aws4_request', 'eu-west-1', 's3', '20240101', 'AKID', '%2F', '%', '&', '=', 'X-Amz-Credential=', 'X-Amz-Algorithm=', 'X-Amz-Region-Set=', '*');
    const structured = fc.array(piece, { maxLength: 20 }).map((p) => p.join(''));
    const any = fc.oneof(fc.string(), structured, fc.string({ unit: 'binary' }));
    fc.assert(
      fc.property(any, any, any, (a, s, q) => {
        const got = parseSigV4({ authorization: a, 'x-amz-region-set': s }, q);
        if (got !== null) {
          expect(typeof got.accessKeyId).toBe('string');
          expect(got.region === null || /^[a-z0-9-]+$/.test(got.region)).toBe(true);
        }
        parseQueryScope(q);
      }),
      { numRuns: 2000 },
    );
  });
});
