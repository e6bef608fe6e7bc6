import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, Errors } from '../../src/errors.js';

describe('error codes', () => {
  it('every code is documented in the README, and every documented code exists', () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const documented = new Set(readme.match(/RESIDENCY_ERR_[A-Z_]+/g));
    expect([...documented].sort()).toEqual([...ERROR_CODES].sort());
  });

  it('codes carry their HTTP status', () => {
    expect(new Errors.POLICY_BLOCK('x').statusCode).toBe(403);
    expect(new Errors.UPSTREAM_TIMEOUT('u').statusCode).toBe(504);
    expect(new Errors.UPSTREAM_UNREACHABLE('u').message).toBe('upstream u could not be reached');
  });
});
