import { describe, expect, it } from 'vitest';
import { errorResponse } from '../../src/proxy/refuse.js';

const details = {
  status: 403,
  code: 'jurisdiction_not_allowed',
  title: 'Write refused by residency policy',
  detail: 'rule "user-data" does not allow IE <&> (jurisdiction_not_allowed); decision id abc',
  decisionId: 'abc',
  resource: '/bucket/key',
};

describe('refusals in the provider format', () => {
  it('S3: XML AccessDenied, escaped, with the decision id as RequestId', () => {
    const r = errorResponse('s3', details);
    expect(r.status).toBe(403);
    expect(r.headers['content-type']).toBe('application/xml');
    expect(r.body).toMatch(/^<\?xml version="1.0" encoding="UTF-8"\?>\n<Error><Code>AccessDenied<\/Code><Message>rule &#34;user-data&#34; does not allow IE &#60;&#38;&#62;/);
    expect(r.body).toContain('<Resource>/bucket/key</Resource><RequestId>abc</RequestId>');
    // What the AWS CLI, SDKs and rclone print as the request id.
    expect([r.headers['x-amz-request-id'], r.headers['x-amz-id-2']]).toEqual(['abc', 'abc']);
  });

  it('Azure: XML AuthorizationFailure and x-ms-error-code', () => {
    const r = errorResponse('azure', details);
    expect(r.headers['x-ms-error-code']).toBe('AuthorizationFailure');
    expect(r.headers['x-ms-request-id']).toBe('abc');
    expect(r.body).toContain('<Code>AuthorizationFailure</Code>');
    expect(r.body).toContain('RequestId:abc');
  });

  it('GCS: JSON error with code 403', () => {
    const r = errorResponse('gcs', details);
    const body = JSON.parse(r.body);
    expect(body.error.code).toBe(403);
    expect(body.error.message).toBe(details.detail);
    expect(body.error.errors[0].reason).toBe('forbidden');
    expect(r.headers['x-guploader-uploadid']).toBe('abc');
  });

  it('generic: RFC 9457 problem+json', () => {
    const r = errorResponse('generic', { ...details, extra: { rule: 'user-data' } });
    expect(r.headers['content-type']).toBe('application/problem+json');
    expect(JSON.parse(r.body)).toEqual({
      type: 'https://residency-proxy.dev/problems/jurisdiction_not_allowed',
      title: 'Write refused by residency policy',
      status: 403,
      detail: details.detail,
      instance: '/bucket/key',
      decision_id: 'abc',
      rule: 'user-data',
    });
  });

  it('names the stable error code in every format', () => {
    expect(errorResponse('s3', details).headers['x-residency-error']).toBe('RESIDENCY_ERR_POLICY_BLOCK');
    expect(errorResponse(null, { ...details, status: 504, code: 'upstream_timeout' }).headers['x-residency-error']).toBe('RESIDENCY_ERR_UPSTREAM_TIMEOUT');
    expect(errorResponse('gcs', { ...details, status: 503, code: 'decision_log_unavailable' }).headers['x-residency-error']).toBe('RESIDENCY_ERR_DECISION_LOG_UNAVAILABLE');
    expect(errorResponse(null, { ...details, status: 431, code: 'too_many_headers' }).headers['x-residency-error']).toBe('RESIDENCY_ERR_HEADERS_TOO_LARGE');
  });

  it('upstream failures keep the provider format', () => {
    expect(errorResponse('s3', { ...details, status: 504, code: 'upstream_timeout' }).body).toContain('<Code>GatewayTimeout</Code>');
    expect(errorResponse('azure', { ...details, status: 503, code: 'x' }).headers['x-ms-error-code']).toBe('ServerBusy');
  });
});
