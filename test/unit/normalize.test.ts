import { describe, it, expect } from 'vitest';
import { hasPathPrefix, normalizePath, splitTarget } from '../../src/plan/normalize.js';

// [input, expected output]
const accepted: Array<[string, string]> = [
  ['/', '/'],
  ['/a', '/a'],
  ['/bucket/key.txt', '/bucket/key.txt'],
  ['/a//b/', '/a//b/'],
  ['//', '//'],
  ['/a/', '/a/'],
  ['/a%2Fb', '/a%2Fb'],
  ['/a%2fb', '/a%2Fb'],
  ['/%41%62', '/Ab'],
  ['/a%7E', '/a~'],
  ['/a%7e', '/a~'],
  ['/a%2D%5F%2E%30', '/a-_.0'],
  ['/a%20b', '/a%20b'],
  ['/a%c3%a9', '/a%C3%A9'],
  ['/a%25', '/a%25'],
  ['/a%2541', '/a%2541'],
  ['/a%3Bb', '/a%3Bb'],
  ['/a%5Cb', '/a%5Cb'],
  ['/a;b', '/a;b'],
  ['/a;v=1/b', '/a;v=1/b'],
  ['/s3-us;x/eu', '/s3-us;x/eu'],
  ['/.well-known/x', '/.well-known/x'],
  ['/a/.b/..c/...', '/a/.b/..c/...'],
  ['/a/b.', '/a/b.'],
  ['/a/b..', '/a/b..'],
  ['/a..%2Fb', '/a..%2Fb'],
  ['/x;..', '/x;..'],
  ['/%2e%2e%2e', '/...'],
  ['/%2E.x', '/..x'],
  ['/a%2Fb%2F', '/a%2Fb%2F'],
  ['/a"<>{}|^`[]', '/a"<>{}|^`[]'],
  // Raw bytes 0x80-0xFF (latin1 code units) are left as they are: Node's
  // default parser rejects them in the request line anyway, and undici
  // forwards them byte for byte. Code units > 0xFF are refused below.
  ['/caf\u00e9', '/caf\u00e9'],
  ['/\u0080\u00ff', '/\u0080\u00ff'],
  ['/a%2F%2F%2Fb', '/a%2F%2F%2Fb'],
  ['/a%0Ab', '/a%0Ab'],
  ['/%7Euser/%2A', '/~user/%2A'],
];

// [input, reason regex]
const refused: Array<[string, RegExp]> = [
  ['', /must start with "\/"/],
  ['a/b', /must start with "\/"/],
  ['*', /must start with "\/"/],
  ['http://x/a', /must start with "\/"/],
  ['%2Fa', /must start with "\/"/],
  // dot segments (raw)
  ['/.', /dot segment/],
  ['/..', /dot segment/],
  ['/a/./b', /dot segment/],
  ['/a/../b', /dot segment/],
  ['/a/..', /dot segment/],
  ['/a/.', /dot segment/],
  ['/../a', /dot segment/],
  ['/s3-us/../eu', /dot segment/],
  ['/s3-us;/../eu', /dot segment/],
  // dot segments after decoding unreserved characters
  ['/s3-us/%2e%2e/eu', /dot segment/],
  ['/%2e%2e/', /dot segment/],
  ['/.%2E/', /dot segment/],
  ['/%2E', /dot segment/],
  ['/a/%2e/b', /dot segment/],
  ['/a/.%2e', /dot segment/],
  // dot segments behind an encoded separator
  ['/s3-us/..%2F..%2Feu', /dot segment/],
  ['/s3-us/..%2f..%2feu', /dot segment/],
  ['/s3-us/x%2F..', /dot segment/],
  ['/s3-us/%2F..%2Feu', /dot segment/],
  ['/s3-us/a%2F.%2Fb', /dot segment/],
  ['/s3-us/..%5Ceu', /dot segment/],
  ['/s3-us/%5C..', /dot segment/],
  ['/s3-us/%2e%2e%2feu', /dot segment/],
  // Tomcat-style path parameters
  ['/s3-us/..;/eu', /dot segment/],
  ['/s3-us/..;jsessionid=1/eu', /dot segment/],
  ['/s3-us/.;/eu', /dot segment/],
  ['/s3-us/%2e%2e;/eu', /dot segment/],
  ['/s3-us/..%3B/eu', /dot segment/],
  ['/s3-us/..%3bx', /dot segment/],
  // percent-encoding
  ['/a%00', /NUL/],
  ['/a%00b', /NUL/],
  ['/a%zz', /percent-encoding/],
  ['/a%', /percent-encoding/],
  ['/a%4', /percent-encoding/],
  ['/a%4/b', /percent-encoding/],
  ['/a%%41', /percent-encoding/],
  ['/a%g0', /percent-encoding/],
  ['/a%0g', /percent-encoding/],
  // raw characters
  ['/a\\b', /backslash/],
  ['/s3-us\\..\\eu', /backslash/],
  ['/a\u0000b', /control character/],
  ['/a\tb', /control character/],
  ['/a\r\nb', /control character/],
  ['/a\u001fb', /control character/],
  ['/a\u007fb', /control character/],
  ['/a b', /space/],
  ['/a?b', /"\?" or "#"/],
  ['/a#b', /"\?" or "#"/],
  ['/\u0100', /non-byte/],
  ['/\u{1F600}', /non-byte/],
];

describe('normalizePath accepts', () => {
  it.each(accepted)('%j -> %j', (input, output) => {
    expect(normalizePath(input)).toEqual({ ok: true, path: output });
  });
});

describe('normalizePath refuses', () => {
  it.each(refused)('%j (%s)', (input, reason) => {
    const r = normalizePath(input);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toMatch(reason);
  });
});

describe('normalizePath fast path', () => {
  it('returns the identical string when nothing needs rewriting', () => {
    // Built at runtime so identity is not just interned-literal equality.
    const input = ['', 'bucket', 'some', 'deep', 'key-name_v1.0~x'].join('/');
    const r = normalizePath(input);
    expect(r.ok).toBe(true);
    if (r.ok) expect(Object.is(r.path, input)).toBe(true);
  });

  it('returns the identical string for already-normalised input', () => {
    const input = ['', 'a%2Fb', 'c;d'].join('/');
    const r = normalizePath(input);
    expect(r).toEqual({ ok: true, path: input });
  });

  it('does not throw on non-string input', () => {
    expect(normalizePath(undefined as unknown as string).ok).toBe(false);
    expect(normalizePath(null as unknown as string).ok).toBe(false);
    expect(normalizePath(42 as unknown as string).ok).toBe(false);
  });
});

describe('normalizePath fuzz', () => {
  // mulberry32: tiny seeded PRNG so failures are reproducible.
  function mulberry32(seed: number): () => number {
    let a = seed >>> 0;
    return () => {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }
  const alphabet = [
    '/', '/', '/', '.', '.', '.', '%', '%2e', '%2E', '%2f', '%2F', '%5c', '%3B', '%00', '%41', '%7e', '%zz',
    ';', '\\', 'a', 'b', 'Z', '0', '-', '_', '~', ' ', '\t', '?', '#', '\u00e9', '\u0100', '..', '..;', '%25',
  ];

  it('never throws and is idempotent on 2000 random strings', () => {
    const rand = mulberry32(0x5eed);
    let accepted = 0;
    for (let n = 0; n < 2000; n++) {
      const parts: string[] = rand() < 0.9 ? ['/'] : [];
      const count = 1 + Math.floor(rand() * 12);
      for (let k = 0; k < count; k++) {
        parts.push(alphabet[Math.floor(rand() * alphabet.length)] as string);
      }
      const input = parts.join('');
      let first: ReturnType<typeof normalizePath> | undefined;
      expect(() => {
        first = normalizePath(input);
      }, input).not.toThrow();
      if (first?.ok) {
        accepted++;
        expect(normalizePath(first.path), input).toEqual(first);
        // Output is at least as strict as input: never introduces raw dot segments.
        expect(first.path.split('/').some((s) => s === '.' || s === '..'), input).toBe(false);
      }
    }
    // Sanity: the generator exercises both outcomes.
    expect(accepted).toBeGreaterThan(100);
    expect(accepted).toBeLessThan(2000);
  });
});

describe('splitTarget', () => {
  it.each([
    ['/a', { path: '/a', query: null }],
    ['/a?', { path: '/a', query: '' }],
    ['/a?b=1&c=2', { path: '/a', query: 'b=1&c=2' }],
    ['/a?b=?c', { path: '/a', query: 'b=?c' }],
    ['/?', { path: '/', query: '' }],
    ['/a%3Fb?x', { path: '/a%3Fb', query: 'x' }],
  ])('%j', (input, expected) => {
    expect(splitTarget(input)).toEqual(expected);
  });
});

describe('hasPathPrefix', () => {
  it.each<[string, string, boolean]>([
    ['/s3', '/s3', true],
    ['/s3/', '/s3', true],
    ['/s3/x', '/s3', true],
    ['/s3//x', '/s3', true],
    ['/s3x', '/s3', false],
    ['/s3;x', '/s3', false],
    ['/s3%2Fx', '/s3', false],
    ['/s', '/s3', false],
    ['/S3/x', '/s3', false],
    ['/s3/x', '/s3/', true],
    ['/s3', '/s3/', true],
    ['/s3x', '/s3/', false],
    ['/anything', '/', true],
    ['/', '/', true],
    ['/x', '', true],
    ['/s3-us/eu', '/s3-us', true],
    ['/s3-useu', '/s3-us', false],
    ['/a/b/c', '/a/b', true],
    ['/a/bc', '/a/b', false],
  ])('%j starts with %j: %s', (path, prefix, expected) => {
    expect(hasPathPrefix(path, prefix)).toBe(expected);
  });
});
