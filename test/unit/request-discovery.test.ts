import { describe, expect, it } from 'vitest';
import { regionFromRedirect } from '../../src/location/request/s3-region.js';

const errorXml = (code: string, extra: string) =>
  `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>m</Message>${extra}<RequestId>R</RequestId><HostId>H</HostId></Error>`;

describe('regionFromRedirect', () => {
  it('reads x-amz-bucket-region from any status', () => {
    for (const status of [200, 301, 307, 400, 403]) {
      expect(regionFromRedirect(status, { 'x-amz-bucket-region': 'eu-central-1' }, null)).toBe('eu-central-1');
    }
    expect(regionFromRedirect(200, { 'x-amz-bucket-region': ['EU-WEST-1', 'us-east-1'] }, null)).toBe('eu-west-1');
  });

  it('ignores a malformed header', () => {
    expect(regionFromRedirect(200, { 'x-amz-bucket-region': 'eu west 1' }, null)).toBeNull();
    expect(regionFromRedirect(200, { 'x-amz-bucket-region': '' }, null)).toBeNull();
    expect(regionFromRedirect(200, { 'x-amz-bucket-region': 'x'.repeat(100) }, null)).toBeNull();
    expect(regionFromRedirect(200, {}, null)).toBeNull();
  });

  it('reads <Region> from AuthorizationHeaderMalformed and PermanentRedirect bodies', () => {
    expect(regionFromRedirect(400, {}, errorXml('AuthorizationHeaderMalformed', '<Region>eu-west-2</Region>'))).toBe('eu-west-2');
    expect(regionFromRedirect(301, {}, errorXml('PermanentRedirect', '<Region>ap-northeast-1</Region>'))).toBe('ap-northeast-1');
  });

  it('falls back to a PermanentRedirect <Endpoint>', () => {
    const body = errorXml('PermanentRedirect', '<Bucket>bkt</Bucket><Endpoint>bkt.s3.eu-north-1.amazonaws.com</Endpoint>');
    expect(regionFromRedirect(301, {}, body)).toBe('eu-north-1');
    // The legacy global endpoint names no region.
    expect(regionFromRedirect(301, {}, errorXml('PermanentRedirect', '<Endpoint>bkt.s3.amazonaws.com</Endpoint>'))).toBeNull();
  });

  it('the header wins over the body', () => {
    expect(regionFromRedirect(301, { 'x-amz-bucket-region': 'eu-west-1' }, errorXml('PermanentRedirect', '<Region>us-east-1</Region>'))).toBe('eu-west-1');
  });

  it('ignores bodies of other errors and statuses', () => {
    expect(regionFromRedirect(400, {}, errorXml('InvalidArgument', '<Region>eu-west-2</Region>'))).toBeNull();
    expect(regionFromRedirect(200, {}, errorXml('PermanentRedirect', '<Region>eu-west-2</Region>'))).toBeNull();
    expect(regionFromRedirect(500, {}, errorXml('PermanentRedirect', '<Region>eu-west-2</Region>'))).toBeNull();
    expect(regionFromRedirect(301, {}, 'not xml')).toBeNull();
    expect(regionFromRedirect(301, {}, errorXml('PermanentRedirect', '<Region>eu west</Region>'))).toBeNull();
  });

  it('is bounded on huge bodies', () => {
    const huge = 'x'.repeat(2_000_000) + errorXml('PermanentRedirect', '<Region>eu-west-2</Region>');
    const started = performance.now();
    expect(regionFromRedirect(301, {}, huge)).toBeNull();
    expect(performance.now() - started).toBeLessThan(50);
  });
});
