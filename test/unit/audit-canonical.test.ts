import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalJson, GENESIS_HASH, recordHash, sealRecord } from '../../src/audit/canonical.js';

describe('canonical JSON (the hashed form of records and digests)', () => {
  it('sorts keys at every depth, drops undefined, keeps array order, no whitespace', () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: undefined, x: null }], c: 'é' }, u: undefined })).toBe(
      '{"a":{"c":"é","d":[3,{"x":null,"z":1}]},"b":1}',
    );
  });

  it('sorts by UTF-16 code units (upper case before lower case, like JCS)', () => {
    expect(canonicalJson({ b: 0, B: 0, a: 0, _: 0 })).toBe('{"B":0,"_":0,"a":0,"b":0}');
  });

  it('writes numbers and strings as JSON.stringify does', () => {
    expect(canonicalJson([0.1, 1e21, -0, 'a"b\n', true, null])).toBe('[0.1,1e+21,0,"a\\"b\\n",true,null]');
  });

  it('is independent of key insertion order', () => {
    expect(canonicalJson({ x: 1, y: { b: 2, a: 1 } })).toBe(canonicalJson({ y: { a: 1, b: 2 }, x: 1 }));
  });
});

describe('sealRecord', () => {
  it('hash = SHA-256 of the canonical record without hash; the line is that text plus the hash field', () => {
    const unsealed = { seq: 1, v: 1, prev: GENESIS_HASH, ts: '2026-01-01T00:00:00.000Z', path: '/a' };
    const { line, hash } = sealRecord(unsealed);
    const canonical = canonicalJson(unsealed);
    expect(hash).toBe(createHash('sha256').update(canonical).digest('hex'));
    expect(line).toBe(`${canonical.slice(0, -1)},"hash":"${hash}"}`);
    expect(recordHash(JSON.parse(line) as Record<string, unknown>)).toBe(hash);
  });

  it('a re-serialised record (keys reordered, spaces) still verifies; a changed value does not', () => {
    const { line, hash } = sealRecord({ seq: 2, a: { y: 1, x: 2 } });
    const parsed = JSON.parse(line) as Record<string, unknown>;
    const reordered = JSON.parse(JSON.stringify({ hash: parsed.hash, a: { x: 2, y: 1 }, seq: 2 }, null, 2)) as Record<string, unknown>;
    expect(recordHash(reordered)).toBe(hash);
    expect(recordHash({ ...parsed, seq: 3 })).not.toBe(hash);
  });
});

describe('canonicalJson hashes policies as the policy engine did before it used it', () => {
  /** The engine's own canonical form until both used this module: policy hashes in existing logs must not change. */
  const previousPolicyForm = (value: unknown): string => {
    if (value === undefined) return 'null';
    if (value === null || typeof value !== 'object') return JSON.stringify(value);
    if (Array.isArray(value)) return `[${value.map(previousPolicyForm).join(',')}]`;
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${previousPolicyForm(v)}`).join(',')}}`;
  };

  it('gives the same text for any config-shaped value (what YAML parses to)', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        expect(canonicalJson(value)).toBe(previousPolicyForm(value));
      }),
      { numRuns: 2000 },
    );
  });
});
