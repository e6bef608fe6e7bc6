import { describe, expect, it } from 'vitest';
import { buildPlanner, parseConfigText } from '../../src/load.js';

/** Which CONNECT targets a forward proxy opens (and intercepts) a tunnel for: only hosts an https upstream would forward to. */
const planner = buildPlanner(
  parseConfigText(
    `
upstreams:
  - { name: aws, url: "https://{host}", provider: s3, route: { host: "*.amazonaws.com" } }
  - { name: frankfurt, url: "https://s3.eu-central-1.example.net:8443", provider: s3, route: { host: s3.eu-central-1.example.net }, region: eu-central-1 }
  - { name: blob, url: "https://{host}", provider: azure, route: { host: "*.blob.core.windows.net" } }
  - { name: plain, url: "http://{host}", provider: s3, route: { host: "*.plain.test" }, region: us-east-1 }
  - { name: prefixed, url: "https://storage.example.org", provider: generic, route: { path_prefix: /files }, region: us-east-1 }
`,
    'tunnels.yaml',
  ),
);
const admitted = (host: string, port: number) => planner.tunnelFor(host, port)?.name ?? null;

describe('tunnel admission', () => {
  it.each([
    ['bucket.s3.us-east-1.amazonaws.com', 443, 'aws'],
    ['BUCKET.S3.EU-WEST-1.AMAZONAWS.COM', 443, 'aws'],
    ['s3.us-east-1.amazonaws.com', 443, 'aws'],
    ['acct.blob.core.windows.net', 443, 'blob'],
    ['s3.eu-central-1.example.net', 8443, 'frankfurt'],
  ])('%s:%d → %s', (host, port, upstream) => {
    expect(admitted(host, port)).toBe(upstream);
  });

  it.each([
    ['sts.amazonaws.com', 443, 'an AWS service that is not S3'],
    ['ec2.us-east-1.amazonaws.com', 443, 'an AWS service that is not S3'],
    ['mfzwi23gnjvgw.mrap.accesspoint.s3-global.amazonaws.com', 443, 'a multi-region access point: no one place'],
    ['bucket.s3.us-east-1.amazonaws.com', 8443, 'another port than the upstream sends to'],
    ['s3.eu-central-1.example.net', 443, "another port than the upstream's own"],
    ['bucket.plain.test', 80, 'an upstream reached over plain http'],
    ['storage.example.org', 443, 'a route without a host'],
    ['example.com', 443, 'no route'],
  ])('%s:%d is refused: %s', (host, port) => {
    expect(admitted(host, port)).toBeNull();
  });
});
