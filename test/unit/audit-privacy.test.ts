import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { DecisionLogCodes } from '../../src/audit/errors.js';
import { clientMasker, maskClient } from '../../src/audit/privacy.js';

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
