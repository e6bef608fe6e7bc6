import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, errorFor, Errors } from '../../src/errors.js';

describe('error codes', () => {
  it('every code is documented in the README, and every documented code exists', () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const documented = new Set(readme.match(/RESIDENCY_ERR_[A-Z_]+/g));
    expect([...documented].sort()).toEqual([...ERROR_CODES].sort());
  });

  it('each answer the proxy gives itself gets its own error, whose status is the answer\'s', () => {
    const answers: Array<[number, string, string]> = [
      [400, 'ambiguous_host', 'RESIDENCY_ERR_BAD_REQUEST'],
      [403, 'jurisdiction_not_allowed', 'RESIDENCY_ERR_POLICY_BLOCK'],
      [403, 'tunnel_not_routed', 'RESIDENCY_ERR_TUNNEL_NOT_ROUTED'],
      [404, 'no_route', 'RESIDENCY_ERR_NO_ROUTE'],
      [405, 'method_not_allowed', 'RESIDENCY_ERR_METHOD_NOT_ALLOWED'],
      [407, 'proxy_auth_required', 'RESIDENCY_ERR_PROXY_AUTH_REQUIRED'],
      [408, 'request_timeout', 'RESIDENCY_ERR_REQUEST_TIMEOUT'],
      [413, 'create_bucket_body_too_large', 'RESIDENCY_ERR_PAYLOAD_TOO_LARGE'],
      [417, 'expectation_failed', 'RESIDENCY_ERR_EXPECTATION_FAILED'],
      [421, 'misdirected_request', 'RESIDENCY_ERR_MISDIRECTED_REQUEST'],
      [431, 'too_many_headers', 'RESIDENCY_ERR_HEADERS_TOO_LARGE'],
      [500, 'internal_error', 'RESIDENCY_ERR_INTERNAL_ERROR'],
      [501, 'unsupported_transfer_coding', 'RESIDENCY_ERR_NOT_IMPLEMENTED'],
      [502, 'upstream_unreachable', 'RESIDENCY_ERR_UPSTREAM_UNREACHABLE'],
      [502, 'upstream_reset', 'RESIDENCY_ERR_UPSTREAM_RESET'],
      [502, 'upstream_unresolved', 'RESIDENCY_ERR_UPSTREAM_UNRESOLVED'],
      [503, 'decision_log_unavailable', 'RESIDENCY_ERR_DECISION_LOG_UNAVAILABLE'],
      [503, 'shutting_down', 'RESIDENCY_ERR_SHUTTING_DOWN'],
      [503, 'tunnel_busy', 'RESIDENCY_ERR_TUNNEL_BUSY'],
      [503, 'tunnel_limit', 'RESIDENCY_ERR_TUNNEL_LIMIT'],
      [504, 'upstream_timeout', 'RESIDENCY_ERR_UPSTREAM_TIMEOUT'],
      [505, 'unsupported_version', 'RESIDENCY_ERR_VERSION_NOT_SUPPORTED'],
    ];
    for (const [status, slug, code] of answers) {
      const name = errorFor(status, slug);
      expect(new Errors[name]('x').code, `${status} ${slug}`).toBe(code);
      expect(new Errors[name]('x').statusCode, `${status} ${slug}`).toBe(status);
    }
  });

  it('codes carry their HTTP status', () => {
    expect(new Errors.POLICY_BLOCK('x').statusCode).toBe(403);
    expect(new Errors.UPSTREAM_TIMEOUT('u').statusCode).toBe(504);
    expect(new Errors.UPSTREAM_UNREACHABLE('u').message).toBe('upstream u could not be reached');
  });
});
