import { describe, expect, it } from 'vitest';
import { bucketOf } from '../../src/location/bucket.js';
import { compileUpstreams, hostnameOf, Router } from '../../src/plan/route.js';
import { buildPlanner, parseConfigText } from '../../src/server.js';

const CONFIG = `
upstreams:
  - { name: by-prefix, url: "http://127.0.0.1:1/base/", provider: s3, route: { path_prefix: /s3, strip_prefix: true }, region: us-east-1, buckets: { eu-archive: eu-west-1, de-only: DE } }
  - { name: longer-prefix, url: "http://127.0.0.1:2", route: { path_prefix: /s3/special }, jurisdiction: US }
  - { name: by-host, url: "http://127.0.0.1:3", provider: s3, route: { host: s3.internal }, region: eu-central-1 }
  - { name: host-and-prefix, url: "http://127.0.0.1:4", route: { host: s3.internal, path_prefix: /admin }, jurisdiction: US }
  - { name: wildcard, url: "http://127.0.0.1:5", route: { host: "*.files.internal" }, jurisdiction: CA }
  - { name: azurite, url: "http://127.0.0.1:6", provider: azure, route: { path_prefix: /devstoreaccount1 }, region: westeurope }
  - { name: gcs, url: "https://storage.googleapis.com", provider: gcs, route: { path_prefix: /storage }, region: europe-west3 }
`;
const config = parseConfigText(CONFIG, 'r.yaml');
const router = new Router(compileUpstreams(config));

describe('routing', () => {
  it.each([
    ['proxy.local', '/s3/bucket/key', 'by-prefix', '/base/bucket/key'],
    ['proxy.local', '/s3', 'by-prefix', '/base/'],
    ['proxy.local', '/s3/special/x', 'longer-prefix', '/s3/special/x'],
    ['s3.internal', '/bucket/key', 'by-host', '/bucket/key'],
    ['s3.internal', '/admin/x', 'host-and-prefix', '/admin/x'],
    ['a.files.internal', '/x', 'wildcard', '/x'],
    ['a.b.files.internal', '/x', 'wildcard', '/x'],
  ])('%s %s → %s %s', (host, path, upstream, forwardPath) => {
    const m = router.match(host, path);
    expect(m?.upstream.name).toBe(upstream);
    expect(m?.forwardPath).toBe(forwardPath);
  });

  it('a longer wildcard wins over a shorter one, whatever the config order', () => {
    for (const order of [0, 1]) {
      const upstreams = [
        '  - { name: all-aws, url: "https://{host}", provider: s3, route: { host: "*.amazonaws.com" } }',
        '  - { name: ireland, url: "https://{host}", provider: s3, route: { host: "*.s3.eu-west-1.amazonaws.com" }, region: eu-west-1 }',
      ];
      if (order === 1) upstreams.reverse();
      const wildcards = new Router(compileUpstreams(parseConfigText(`upstreams:\n${upstreams.join('\n')}\n`, 'w.yaml')));
      expect(wildcards.match('bucket.s3.eu-west-1.amazonaws.com', '/k')?.upstream.name).toBe('ireland');
      expect(wildcards.match('bucket.s3.us-east-1.amazonaws.com', '/k')?.upstream.name).toBe('all-aws');
    }
  });

  it.each([
    ['proxy.local', '/s3x/bucket'],
    ['proxy.local', '/s3;x/bucket'],
    ['files.internal', '/x'],
    ['other', '/'],
  ])('%s %s has no route', (host, path) => {
    expect(router.match(host, path)).toBeNull();
  });

  it('strips the port and lower-cases the Host', () => {
    expect(hostnameOf('S3.Internal:8080')).toBe('s3.internal');
    expect(hostnameOf('[::1]:8080')).toBe('[::1]');
  });

  it('preserves Host by default for s3 and gcs, not for others', () => {
    const byName = Object.fromEntries(compileUpstreams(config).map((u) => [u.name, u]));
    expect(byName['by-prefix']!.preserveHost).toBe(true);
    expect(byName['gcs']!.preserveHost).toBe(true);
    expect(byName['azurite']!.preserveHost).toBe(false);
    expect(byName['azurite']!.accountInPath).toBe(true);
  });
});

describe('buckets and declared locations', () => {
  it.each([
    ['s3', '/bucket/key', 'x', null, false, 'bucket'],
    ['s3', '/', 'x', null, false, null],
    ['s3', '/key', 'photos.s3.internal', 's3.internal', false, 'photos'],
    ['s3', '/my%20bucket/k', 'x', null, false, 'my bucket'],
    ['azure', '/devstoreaccount1/container/blob', 'x', null, true, 'container'],
    ['azure', '/container/blob', 'acct.blob.core.windows.net', null, false, 'container'],
    ['gcs', '/storage/v1/b/bkt/o/obj', 'x', null, false, 'bkt'],
    ['gcs', '/upload/storage/v1/b/bkt/o', 'x', null, false, 'bkt'],
    ['gcs', '/storage/v1/b', 'x', null, false, null],
    ['gcs', '/bkt/obj', 'x', null, false, 'bkt'],
    ['generic', '/a/b', 'x', null, false, null],
  ] as const)('%s %s (host %s) → %s', (provider, path, host, routeHost, accountInPath, expected) => {
    expect(bucketOf(provider, path, host, routeHost, accountInPath)).toBe(expected);
  });

  it('per-bucket overrides beat the upstream declaration', () => {
    const planner = buildPlanner(config);
    const loc = (target: string) => {
      const plan = planner.plan({ method: 'PUT', target, host: '127.0.0.1:8080' });
      if (plan.kind !== 'decided') throw new Error(plan.detail);
      return plan.location;
    };
    expect(loc('/s3/ordinary/k').jurisdictions).toEqual(['US']);
    expect(loc('/s3/eu-archive/k')).toMatchObject({ jurisdictions: ['IE'], region: 'eu-west-1' });
    expect(loc('/s3/de-only/k')).toMatchObject({ jurisdictions: ['DE'], region: null });
    expect(loc('/s3/eu-archive/k').signals).toEqual([{ source: 'declared', value: 'eu-west-1', jurisdiction: 'IE', region: 'eu-west-1' }]);
  });

  it('decides on the normalised path and refuses escapes before routing', () => {
    const planner = buildPlanner(config);
    expect(planner.plan({ method: 'PUT', target: '/s3/%2e%2e/x', host: 'h' })).toMatchObject({ kind: 'reject', status: 400 });
    expect(planner.plan({ method: 'PUT', target: '/nowhere', host: 'h' })).toMatchObject({ kind: 'reject', status: 404 });
    const plan = planner.plan({ method: 'PUT', target: '/s3/%62ucket/k?x=1', host: 'localhost' });
    expect(plan).toMatchObject({ kind: 'decided', path: '/s3/bucket/k', query: 'x=1', bucket: 'bucket' });
    // A preserved Host that is no endpoint name is a CNAME bucket to S3: the proxy cannot tell which, so it refuses.
    expect(planner.plan({ method: 'PUT', target: '/s3/bucket/k', host: 'h' })).toMatchObject({ kind: 'reject', status: 400, code: 'ambiguous_host' });
  });
});
