import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { DecisionLogCodes } from '../../src/audit/errors.js';
import { cachedMasker, clientMasker, MASK_CACHE_SIZE, maskClient } from '../../src/audit/privacy.js';

describe('maskClient', () => {
  it('full keeps the address', () => {
    expect(maskClient('203.0.113.77', 'full')).toBe('203.0.113.77');
  });

  it('truncate keeps an IPv4 /24', () => {
    expect(maskClient('203.0.113.77', 'truncate')).toBe('203.0.113.0/24');
    expect(maskClient('::ffff:198.51.100.9', 'truncate')).toBe('198.51.100.0/24');
  });

  it('truncate keeps an IPv6 /48', () => {
    expect(maskClient('2001:db8:abcd:12:1:2:3:4', 'truncate')).toBe('2001:db8:abcd::/48');
    expect(maskClient('2001:DB8::1', 'truncate')).toBe('2001:db8:0::/48');
    expect(maskClient('fe80::1%eth0', 'truncate')).toBe('fe80:0:0::/48');
    expect(maskClient('::1', 'truncate')).toBe('0:0:0::/48');
  });

  it('truncate drops anything that is not an IP address', () => {
    expect(maskClient('not-an-ip', 'truncate')).toBe('');
    expect(maskClient('', 'truncate')).toBe('');
  });

  it('hash is a 16-hex-digit HMAC-SHA-256 prefix with the salt: stable per client, salt-dependent', () => {
    const expected = createHmac('sha256', 'salt-1').update('203.0.113.77').digest('hex').slice(0, 16);
    expect(maskClient('203.0.113.77', 'hash', 'salt-1')).toBe(expected);
    expect(maskClient('203.0.113.77', 'hash', 'salt-1')).toMatch(/^[0-9a-f]{16}$/);
    expect(maskClient('203.0.113.77', 'hash', 'salt-2')).not.toBe(expected);
    expect(maskClient('203.0.113.78', 'hash', 'salt-1')).not.toBe(expected);
    expect(() => maskClient('203.0.113.77', 'hash', '')).toThrow();
  });
});

describe('clientMasker', () => {
  it('reads the salt from the named environment variable once', () => {
    const mask = clientMasker({ client_address: 'hash', client_salt_env: 'MY_SALT' }, { MY_SALT: 's' });
    expect(mask('10.0.0.1')).toBe(maskClient('10.0.0.1', 'hash', 's'));
  });

  it('refuses hash mode without a salt (at start-up, not per request)', () => {
    expect(() => clientMasker({ client_address: 'hash', client_salt_env: 'MY_SALT' }, {})).toThrow(
      expect.objectContaining({ code: DecisionLogCodes.KEY }),
    );
  });

  it('truncate and full need no salt', () => {
    expect(clientMasker({ client_address: 'truncate', client_salt_env: 'X' }, {})('10.1.2.3')).toBe('10.1.2.0/24');
    expect(clientMasker({ client_address: 'full', client_salt_env: 'X' }, {})('10.1.2.3')).toBe('10.1.2.3');
  });
});

describe('cachedMasker', () => {
  const addresses = ['203.0.113.77', '198.51.100.9', '::ffff:198.51.100.9', '2001:db8::1', 'fe80::1%eth0', 'not-an-ip', ''];

  it('gives what the uncached masking gives, the first time and when repeated (hash and truncate)', () => {
    const hash = clientMasker({ client_address: 'hash', client_salt_env: 'S' }, { S: 'salt-1' });
    const truncate = clientMasker({ client_address: 'truncate', client_salt_env: 'S' }, {});
    for (let round = 0; round < 3; round++) {
      for (const a of addresses) {
        expect(hash(a)).toBe(maskClient(a, 'hash', 'salt-1'));
        expect(truncate(a)).toBe(maskClient(a, 'truncate'));
      }
    }
  });

  it('computes a repeated address once', () => {
    let calls = 0;
    const mask = cachedMasker((a) => {
      calls++;
      return `m:${a}`;
    });
    for (let i = 0; i < 100; i++) expect(mask('10.0.0.1')).toBe('m:10.0.0.1');
    expect(calls).toBe(1);
  });

  it('stays bounded: a flood of distinct addresses never holds more than the bound', () => {
    let calls = 0;
    const mask = cachedMasker((a) => {
      calls++;
      return a;
    });
    const flood = Array.from({ length: 3 * MASK_CACHE_SIZE }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
    for (const a of flood) mask(a);
    expect(calls).toBe(flood.length);
    // Asking again for all of them: whatever the cache kept is at most MASK_CACHE_SIZE, the rest is computed again.
    calls = 0;
    for (const a of flood) mask(a);
    expect(calls).toBeGreaterThanOrEqual(flood.length - MASK_CACHE_SIZE);
  });

  it('honours a smaller bound', () => {
    let calls = 0;
    const mask = cachedMasker((a) => {
      calls++;
      return a;
    }, 2);
    mask('a');
    mask('b');
    mask('a');
    expect(calls).toBe(2);
    mask('c'); // full: cleared, then c
    mask('a');
    expect(calls).toBe(4);
  });
});
