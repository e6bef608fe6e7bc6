import { describe, it, expect } from 'vitest';
import { REGIONS, buildRegionMap, lookupRegion } from '../../src/location/catalog.js';
import type { CloudProvider } from '../../src/location/catalog.js';
import { isIsoAlpha2 } from '../../src/location/iso3166.js';

const entries = [...REGIONS.entries()];

describe('region catalog data', () => {
  it('every entry has non-empty, valid, distinct ISO 3166-1 alpha-2 jurisdictions', () => {
    for (const [, info] of entries) {
      expect(info.jurisdictions.length, info.id).toBeGreaterThan(0);
      for (const cc of info.jurisdictions) expect(isIsoAlpha2(cc), `${info.id}: ${cc}`).toBe(true);
      expect(new Set(info.jurisdictions).size, info.id).toBe(info.jurisdictions.length);
    }
  });

  it('ids are lower case, non-empty, unique and match their map key', () => {
    const ids = entries.map(([, info]) => info.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const [key, info] of entries) {
      expect(info.id).toBe(key);
      expect(info.id).toMatch(/^[a-z0-9-]+$/);
    }
  });

  it('every entry has a provider and a description', () => {
    for (const [, info] of entries) {
      expect(['aws', 'gcp', 'azure']).toContain(info.provider);
      expect(info.description.trim(), info.id).not.toBe('');
    }
  });

  it('has a plausible number of regions per provider', () => {
    const count = (p: CloudProvider): number => entries.filter(([, i]) => i.provider === p).length;
    expect(count('aws')).toBeGreaterThanOrEqual(30);
    expect(count('gcp')).toBeGreaterThanOrEqual(40);
    expect(count('azure')).toBeGreaterThanOrEqual(55);
  });

  it('entries are frozen', () => {
    const info = lookupRegion('us-east-1');
    expect(Object.isFrozen(info)).toBe(true);
    expect(Object.isFrozen(info?.jurisdictions)).toBe(true);
  });
});

describe('well-known regions', () => {
  it.each<[string, CloudProvider, string]>([
    // AWS
    ['us-east-1', 'aws', 'US'],
    ['us-west-2', 'aws', 'US'],
    ['eu-west-1', 'aws', 'IE'],
    ['eu-central-1', 'aws', 'DE'],
    ['eu-central-2', 'aws', 'CH'],
    ['eu-west-2', 'aws', 'GB'],
    ['eu-south-2', 'aws', 'ES'],
    ['ap-southeast-1', 'aws', 'SG'],
    ['ap-southeast-4', 'aws', 'AU'],
    ['ap-southeast-5', 'aws', 'MY'],
    ['ap-southeast-6', 'aws', 'NZ'],
    ['ap-southeast-7', 'aws', 'TH'],
    ['ap-east-1', 'aws', 'HK'],
    ['ap-east-2', 'aws', 'TW'],
    ['me-south-1', 'aws', 'BH'],
    ['me-central-1', 'aws', 'AE'],
    ['il-central-1', 'aws', 'IL'],
    ['mx-central-1', 'aws', 'MX'],
    ['ca-west-1', 'aws', 'CA'],
    ['cn-north-1', 'aws', 'CN'],
    ['cn-northwest-1', 'aws', 'CN'],
    ['us-gov-west-1', 'aws', 'US'],
    ['us-iso-east-1', 'aws', 'US'],
    ['us-isob-east-1', 'aws', 'US'],
    ['eusc-de-east-1', 'aws', 'DE'],
    ['ca-central-1', 'aws', 'CA'],
    ['sa-east-1', 'aws', 'BR'],
    // Google Cloud
    ['europe-west3', 'gcp', 'DE'],
    ['europe-west2', 'gcp', 'GB'],
    ['europe-west1', 'gcp', 'BE'],
    ['europe-west4', 'gcp', 'NL'],
    ['us-central1', 'gcp', 'US'],
    ['asia-northeast1', 'gcp', 'JP'],
    ['asia-east1', 'gcp', 'TW'],
    ['northamerica-northeast1', 'gcp', 'CA'],
    ['northamerica-south1', 'gcp', 'MX'],
    ['me-central1', 'gcp', 'QA'],
    ['me-west1', 'gcp', 'IL'],
    ['africa-south1', 'gcp', 'ZA'],
    ['us', 'gcp', 'US'],
    ['nam4', 'gcp', 'US'],
    ['asia1', 'gcp', 'JP'],
    // Azure
    ['eastus', 'azure', 'US'],
    ['westeurope', 'azure', 'NL'],
    ['northeurope', 'azure', 'IE'],
    ['uksouth', 'azure', 'GB'],
    ['germanywestcentral', 'azure', 'DE'],
    ['switzerlandnorth', 'azure', 'CH'],
    ['usgovvirginia', 'azure', 'US'],
    ['usdodeast', 'azure', 'US'],
    ['chinanorth', 'azure', 'CN'],
    ['chinaeast3', 'azure', 'CN'],
    ['australiaeast', 'azure', 'AU'],
    ['southeastasia', 'azure', 'SG'],
    ['eastasia', 'azure', 'HK'],
    ['qatarcentral', 'azure', 'QA'],
  ])('%s (%s) -> %s', (id, provider, cc) => {
    const info = lookupRegion(id);
    expect(info).toBeDefined();
    expect(info?.id).toBe(id);
    expect(info?.provider).toBe(provider);
    expect(info?.jurisdictions).toEqual([cc]);
  });

  it('maps GCS multi- and dual-regions to every country they may use', () => {
    const eu = lookupRegion('eu')?.jurisdictions ?? [];
    expect(eu).toHaveLength(27);
    for (const cc of ['BE', 'DE', 'NL', 'FI', 'IE', 'IT', 'FR', 'PL', 'ES', 'SE']) expect(eu).toContain(cc);
    expect(eu).not.toContain('GB');
    expect(eu).not.toContain('CH');
    expect([...(lookupRegion('asia')?.jurisdictions ?? [])].sort()).toEqual(['HK', 'ID', 'IN', 'JP', 'KR', 'SG', 'TW']);
    expect([...(lookupRegion('eur4')?.jurisdictions ?? [])].sort()).toEqual(['FI', 'NL']);
    expect([...(lookupRegion('eur5')?.jurisdictions ?? [])].sort()).toEqual(['BE', 'GB']);
    expect([...(lookupRegion('eur7')?.jurisdictions ?? [])].sort()).toEqual(['DE', 'GB']);
    expect([...(lookupRegion('eur8')?.jurisdictions ?? [])].sort()).toEqual(['CH', 'DE']);
  });
});

describe('lookupRegion', () => {
  it('is case-insensitive', () => {
    expect(lookupRegion('EUROPE-WEST3')?.id).toBe('europe-west3');
    expect(lookupRegion('US')?.id).toBe('us');
    expect(lookupRegion('EUR4')?.id).toBe('eur4');
    expect(lookupRegion('Us-East-1')?.id).toBe('us-east-1');
    expect(lookupRegion('WestEurope')?.jurisdictions).toEqual(['NL']);
  });

  it.each(['mars-north-1', '', 'us-east-1 ', ' us-east-1', 'us_east_1', 'us-east1-a', 'europe', 'global', 'xk'])(
    'returns undefined for unknown id %j',
    (id) => {
      expect(lookupRegion(id)).toBeUndefined();
    },
  );

  it('only folds ASCII letters (no Unicode case tricks)', () => {
    // U+212A KELVIN SIGN lower-cases to 'k' under String#toLowerCase.
    expect(lookupRegion('U\u212ASOUTH')).toBeUndefined();
    expect(lookupRegion('UKSOUTH')?.id).toBe('uksouth');
  });

  it('never throws, even for non-string input', () => {
    for (const bad of [undefined, null, 42, {}, Symbol('x')]) {
      expect(() => lookupRegion(bad as unknown as string)).not.toThrow();
      expect(lookupRegion(bad as unknown as string)).toBeUndefined();
    }
  });

  it('does not resolve Object.prototype keys', () => {
    expect(lookupRegion('constructor')).toBeUndefined();
    expect(lookupRegion('__proto__')).toBeUndefined();
  });
});

describe('buildRegionMap', () => {
  it('throws on a duplicate id within a provider', () => {
    expect(() => buildRegionMap({ aws: [['x-1', 'US', 'a'], ['x-1', 'US', 'b']] })).toThrow(/duplicate id 'x-1'/);
  });

  it('throws on a duplicate id across providers', () => {
    expect(() => buildRegionMap({ aws: [['x-1', 'US', 'a']], azure: [['x-1', 'US', 'b']] })).toThrow(
      /duplicate id 'x-1' \(aws and azure\)/,
    );
  });

  it('throws on an upper-case id or an invalid jurisdiction', () => {
    expect(() => buildRegionMap({ gcp: [['X-1', 'US', 'a']] })).toThrow(/lower case/);
    expect(() => buildRegionMap({ gcp: [['x-1', 'EU', 'a']] })).toThrow(/invalid jurisdictions/);
    expect(() => buildRegionMap({ gcp: [['x-1', [], 'a']] })).toThrow(/invalid jurisdictions/);
  });
});
