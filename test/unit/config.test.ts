import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { parseConfigText } from '../../src/server.js';
import { configProblems } from '../helpers/config-problems.js';

const BASE = `
upstreams:
  - name: s3-us
    url: http://127.0.0.1:4569
    provider: s3
    route: { path_prefix: /s3-us, strip_prefix: true }
    region: us-east-1
`;

const problems = configProblems;

describe('config loading', () => {
  it('applies schema defaults and freezes the result', () => {
    const config = parseConfigText(BASE, 'policy.yaml');
    expect(config.allowed_jurisdictions).toEqual(['US']);
    expect(config.mode).toBe('enforce');
    expect(config.unknown_location).toBe('block');
    expect(config.listen).toEqual({ host: '0.0.0.0', port: 8080 });
    expect(config.admin).toEqual({ host: '127.0.0.1', port: 9464 });
    expect(config.limits.max_headers).toBe(100);
    expect(config.source).toBe('policy.yaml');
    expect(Object.isFrozen(config.upstreams[0])).toBe(true);
  });

  it('environment overrides the common knobs', () => {
    const config = parseConfigText(BASE, 'policy.yaml', { PORT: '9000', ADMIN_PORT: '9001', LOG_LEVEL: 'debug' });
    expect(config.listen.port).toBe(9000);
    expect(config.admin.port).toBe(9001);
    expect(config.log_level).toBe('debug');
    expect(problems(BASE, { PORT: 'eighty' })).toEqual(['policy.yaml: $PORT: "eighty" is not a port (expected an integer from 0 to 65535)']);
    expect(problems(BASE, { LOG_LEVEL: 'loud' })[0]).toMatch(/^policy\.yaml: log_level: "loud" is not allowed \(expected one of fatal, error/);
  });

  // Each kind of problem, with the exact text a user sees.
  const cases: [string, string, string][] = [
    ['unknown key', BASE + 'colour: blue\n', 'policy.yaml: colour: unknown key (expected one of '],
    ['unknown nested key', BASE.replace('strip_prefix: true', 'strip_prefx: true'), 'policy.yaml: upstreams[0].route.strip_prefx: unknown key (expected one of path_prefix, strip_prefix, host)'],
    ['wrong type', BASE + 'allowed_jurisdictions: US\n', 'policy.yaml: allowed_jurisdictions: has the wrong type: "US" (expected array)'],
    ['wrong type (number)', BASE.replace('strip_prefix: true', 'strip_prefix: 3'), 'policy.yaml: upstreams[0].route.strip_prefix: has the wrong type: number 3 (expected boolean)'],
    ['bad enum', BASE + 'mode: watch\n', 'policy.yaml: mode: "watch" is not allowed (expected one of enforce, monitor, warn)'],
    ['missing required', 'upstreams:\n  - name: a\n    route: { host: a }\n', 'policy.yaml: upstreams[0].url: is required but missing'],
    ['unknown region id', BASE.replace('us-east-1', 'us-esat-1'), 'policy.yaml: upstreams[0].region: unknown region "us-esat-1" (expected a cloud region id such as us-east-1, europe-west3 or eastus)'],
    ['invalid ISO code', BASE + 'allowed_jurisdictions: [USA]\n', 'policy.yaml: allowed_jurisdictions[0]: "USA" is not an ISO 3166-1 alpha-2 code (expected a two-letter country code such as US, DE, IE)'],
    ['rule names a missing upstream', BASE + 'rules:\n  - name: r\n    match: { upstreams: [s3-eu] }\n', 'policy.yaml: rules[0].match.upstreams[0]: names upstream "s3-eu", which is not configured (expected one of s3-us)'],
    ['two upstreams on one route', BASE + '  - name: s3-other\n    url: http://127.0.0.1:4570\n    route: { path_prefix: /s3-us/ }\n    jurisdiction: US\n', 'policy.yaml: upstreams[1].route: claims the same route as upstreams[0] (s3-us) (expected a distinct host or path_prefix)'],
    ['duplicate upstream name', BASE + '  - name: s3-us\n    url: http://127.0.0.1:4570\n    route: { host: other }\n    jurisdiction: US\n', 'policy.yaml: upstreams[1].name: "s3-us" is already used by upstreams[0] (expected a unique name)'],
    ['credentials in URL', BASE.replace('http://127.0.0.1:4569', 'http://key:secret@127.0.0.1:4569'), 'policy.yaml: upstreams[0].url: contains credentials, which would end up in logs (expected an http:// or https:// URL without credentials)'],
    ['bad CIDR', BASE + 'networks: { "10.0.0.0/33": US }\n', 'policy.yaml: networks["10.0.0.0/33"]: is not a CIDR'],
    ['bad bucket location', BASE.replace('region: us-east-1', 'region: us-east-1\n    buckets: { b: moon }'), 'policy.yaml: upstreams[0].buckets["b"]: "moon" is neither a region nor an ISO code'],
    ['region contradicts jurisdiction', BASE.replace('region: us-east-1', 'region: us-east-1\n    jurisdiction: DE'), 'policy.yaml: upstreams[0].jurisdiction: "DE" contradicts region us-east-1 (US)'],
    ['route names nothing', BASE.replace('route: { path_prefix: /s3-us, strip_prefix: true }', 'route: {}'), 'policy.yaml: upstreams[0].route: names neither a host nor a path_prefix'],
    ['YAML syntax', 'upstreams: [\n', 'policy.yaml: line '],
    ['duplicate YAML key', BASE + 'mode: enforce\nmode: monitor\n', 'policy.yaml: line '],
  ];
  it.each(cases)('reports %s', (_name, text, expected) => {
    const found = problems(text);
    expect(found.some((line) => line.startsWith(expected)), `got:\n${found.join('\n')}`).toBe(true);
  });

  it('reports every problem at once, across schema and semantic checks', () => {
    const text = BASE.replace('us-east-1', 'mars-1') + 'mode: watch\nallowed_jurisdictions: [XX]\nrules:\n  - name: r\n    match: { upstreams: [nope] }\n';
    const found = problems(text);
    expect(found).toHaveLength(4);
    expect(found.join('\n')).toMatch(/mode: "watch"/);
    expect(found.join('\n')).toMatch(/region: unknown region "mars-1"/);
    expect(found.join('\n')).toMatch(/allowed_jurisdictions\[0\]: "XX"/);
    expect(found.join('\n')).toMatch(/rules\[0\]\.match\.upstreams\[0\]: names upstream "nope"/);
  });

  it('a missing file is a problem naming the file', async () => {
    const { loadConfig } = await import('../../src/server.js');
    expect(() => loadConfig('does-not-exist.yaml')).toThrowError(/^does-not-exist\.yaml: \(file\): file not found/);
  });
});

describe('file names in a config: one rule, relative to the config file', () => {
  const dir = join(tmpdir(), 'residency-config-paths', 'etc');
  const file = join(dir, 'proxy.yaml');
  const text = `
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0, token_file: secrets/admin-token, tls: { cert_file: tls/cert.pem, key_file: /abs/key.pem } }
decision_log: { path: ../var/decisions.log, signing_key_file: keys/audit.pem }
upstreams:
  - { name: us, url: 'http://127.0.0.1:9', provider: s3, region: us-east-1, route: { path_prefix: /us, strip_prefix: true } }
`;

  it('resolves every file field against the config file, not the working directory; absolute names stay as written', () => {
    const config = parseConfig(text, file);
    expect(config.decision_log.path).toBe(join(tmpdir(), 'residency-config-paths', 'var', 'decisions.log'));
    expect(config.decision_log.signing_key_file).toBe(join(dir, 'keys', 'audit.pem'));
    expect(config.admin.token_file).toBe(join(dir, 'secrets', 'admin-token'));
    expect(config.admin.tls).toEqual({ cert_file: join(dir, 'tls', 'cert.pem'), key_file: '/abs/key.pem' });
  });

  it('covers the location files, principal keys and the shadow policy too; "-" (stdout) is not a file', () => {
    const more = `${text.replace('decision_log: { path: ../var/decisions.log, signing_key_file: keys/audit.pem }', 'decision_log: { path: "-" }')}
location:
  geoip: { path: geo/country.mmdb }
  cloud_ranges: [ranges/aws.json, { path: ranges/azure.json, format: azure }]
principal_keys: { file: principal-keys }
shadow_policy: next.yaml
`;
    const config = parseConfig(more, file);
    expect(config.decision_log.path).toBe('-');
    expect(config.location.geoip.path).toBe(join(dir, 'geo', 'country.mmdb'));
    expect(config.location.cloud_ranges).toEqual([join(dir, 'ranges', 'aws.json'), { path: join(dir, 'ranges', 'azure.json'), format: 'azure' }]);
    expect(config.principal_keys?.file).toBe(join(dir, 'principal-keys'));
    expect(config.shadow_policy).toBe(join(dir, 'next.yaml'));
  });
});
