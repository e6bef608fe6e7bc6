import { describe, it, expect } from 'vitest';
import { ISO_3166_ALPHA2, isIsoAlpha2 } from '../../src/location/iso3166.js';

describe('ISO 3166-1 alpha-2 codes', () => {
  it('holds exactly the 249 officially assigned codes, upper case', () => {
    expect(ISO_3166_ALPHA2.size).toBe(249);
    for (const code of ISO_3166_ALPHA2) expect(code).toMatch(/^[A-Z]{2}$/);
  });

  it.each([
    'US', 'GB', 'DE', 'FR', 'IE', 'NL', 'CH', 'CN', 'HK', 'TW', 'SG', 'JP', 'KR', 'IN', 'BR', 'ZA',
    'AX', 'BQ', 'CW', 'SX', 'SS', 'EH', 'PS', 'AQ', 'UM', 'ZW', 'AD',
  ])('accepts %s', (code) => {
    expect(isIsoAlpha2(code)).toBe(true);
  });

  it.each([
    'us', 'Us', 'EU', 'XK', 'UK', 'UN', 'EZ', 'AN', 'YU', 'CS', 'TP', 'ZZ', 'AA', 'QM', 'XA',
    '', 'U', 'USA', ' US', 'US ', '12',
  ])('rejects %j', (code) => {
    expect(isIsoAlpha2(code)).toBe(false);
  });
});
