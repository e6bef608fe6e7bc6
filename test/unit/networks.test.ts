import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { parseConfigText } from '../../src/load.js';
import { SiteNetworks, siteNetworkProblems } from '../../src/location/networks.js';
import { configProblems } from '../helpers/config-problems.js';

const BASE = 'upstreams:\n  - name: s\n    url: http://127.0.0.1:9000\n    route: { path_prefix: /s }\n    jurisdiction: US\n';

const problems = (text: string) => configProblems(text);

describe('site networks', () => {
  it('accepts an ISO code or { jurisdiction, region } per CIDR', () => {
    const config = parseConfigText(`${BASE}networks:\n  "10.20.0.0/16": US\n  "10.30.0.0/16": { jurisdiction: IE, region: eu-west-1 }\n  "fd00:1::/32": DE\n`, 'policy.yaml');
    const sites = SiteNetworks.fromConfig(config.networks);
    expect(sites.size).toBe(3);
    expect(sites.lookup('10.20.3.4')).toEqual({ prefix: '10.20.0.0/16', signals: [{ source: 'network:site', value: '10.20.0.0/16', jurisdiction: 'US' }] });
    expect(sites.lookup('::ffff:10.30.0.9')?.signals).toEqual([{ source: 'network:site', value: '10.30.0.0/16', jurisdiction: 'IE', region: 'eu-west-1' }]);
    expect(sites.lookup('fd00:1:2::3')?.prefix).toBe('fd00:1::/32');
    expect(sites.lookup('10.40.0.1')).toBeUndefined();
    expect(siteNetworkProblems(config)).toEqual([]);
  });

  it('the most specific site wins', () => {
    const sites = SiteNetworks.fromConfig({ '10.0.0.0/8': 'US', '10.99.0.0/16': 'CA' });
    expect(sites.lookup('10.99.1.1')?.signals[0]?.jurisdiction).toBe('CA');
    expect(sites.lookup('10.98.1.1')?.signals[0]?.jurisdiction).toBe('US');
  });

  it('reports bad codes and regions with their config path', () => {
    expect(problems(`${BASE}networks:\n  "10.0.0.0/8": { jurisdiction: USA }\n`)).toContain(
      'policy.yaml: networks["10.0.0.0/8"].jurisdiction: "USA" is not an ISO 3166-1 alpha-2 code (expected a two-letter country code such as US, DE, IE)',
    );
    // One problem per mistake, not one per alternative form.
    expect(problems(`${BASE}networks:\n  "10.0.0.0/8": { jurisdiction: US, colour: red }\n`)).toEqual(['policy.yaml: networks["10.0.0.0/8"].colour: unknown key (expected one of jurisdiction, region)']);
    expect(problems(`${BASE}networks:\n  "10.0.0.0/8": { region: eu-west-1 }\n`)).toEqual(['policy.yaml: networks["10.0.0.0/8"].jurisdiction: is required but missing']);
    expect(problems(`${BASE}networks:\n  "10.0.0.0/8": 5\n`)).toEqual(['policy.yaml: networks["10.0.0.0/8"]: has the wrong type: number 5 (expected an ISO 3166-1 alpha-2 code, or { jurisdiction, region })']);
    const text = `${BASE}networks:\n  "10.0.0.0/8": { jurisdiction: DE, region: eu-west-1 }\n  "10.1.0.0/16": { jurisdiction: US, region: mars-1 }\n`;
    // check-config reports both…
    expect(problems(text)).toEqual([
      'policy.yaml: networks["10.0.0.0/8"].jurisdiction: "DE" contradicts region eu-west-1 (IE) (expected a jurisdiction of that region)',
      'policy.yaml: networks["10.1.0.0/16"].region: unknown region "mars-1" (expected a cloud region id such as us-east-1, europe-west3 or eastus)',
    ]);
    // …and so do the check and the constructor on their own.
    const config = parseConfig(text, 'policy.yaml');
    expect(siteNetworkProblems(config)).toEqual([
      { path: 'networks["10.0.0.0/8"].jurisdiction', message: '"DE" contradicts region eu-west-1 (IE)', expected: 'a jurisdiction of that region' },
      { path: 'networks["10.1.0.0/16"].region', message: 'unknown region "mars-1"', expected: 'a cloud region id such as us-east-1, europe-west3 or eastus' },
    ]);
    expect(() => SiteNetworks.fromConfig(config.networks)).toThrow(/networks: networks\["10\.0\.0\.0\/8"\]\.jurisdiction: "DE" contradicts region eu-west-1/);
    expect(() => SiteNetworks.fromConfig({ '10.0.0.0/33': 'US' })).toThrow(/is not a CIDR/);
  });
});
