import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const CLI = new URL('../../dist/cli/main.js', import.meta.url).pathname;
const EXAMPLE = new URL('../../config/example.yaml', import.meta.url).pathname;
const DEFAULT = new URL('../../config/default.yaml', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'residency-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], { env: { ...process.env, PORT: '', ADMIN_PORT: '' } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('check-config', () => {
  it('accepts the shipped example and default configs', async () => {
    expect((await cli('check-config', '--config', EXAMPLE)).code).toBe(0);
    expect((await cli('check-config', '--config', DEFAULT)).code).toBe(0);
  });

  it('lists every problem of a broken copy, one line each, and exits 1', async () => {
    const broken = readFileSync(EXAMPLE, 'utf8')
      .replace('region: us-east-1 ', 'region: us-esat-1 ')
      .replace('allowed_jurisdictions: [US]', 'allowed_jurisdictions: [USA]')
      .replace('upstreams: [s3-us, s3-eu', 'upstreams: [s3-us, s3-nowhere')
      .replace('mode: monitor ', 'mode: watch ');
    const file = join(dir, 'broken.yaml');
    writeFileSync(file, broken);
    const { code, stderr } = await cli('check-config', '--config', file);
    expect(code).toBe(1);
    const lines = stderr.trim().split('\n');
    expect(lines).toEqual([
      `${file}: rules[1].mode: "watch" is not allowed (expected one of enforce, monitor, warn)`,
      `${file}: rules[0].match.upstreams[1]: names upstream "s3-nowhere", which is not configured (expected one of s3-us, s3-eu, azure-us, gcs-eu, files)`,
      `${file}: allowed_jurisdictions[0]: "USA" is not an ISO 3166-1 alpha-2 code (expected a two-letter country code such as US, DE, IE)`,
      `${file}: upstreams[0].region: unknown region "us-esat-1" (expected a cloud region id such as us-east-1, europe-west3 or eastus)`,
    ]);
  });

  it('warns (exit 0) about an S3 route that changes what a SigV4 client signed', async () => {
    const file = join(dir, 'signed.yaml');
    writeFileSync(
      file,
      [
        'upstreams:',
        '  - { name: s3-us, url: "https://s3.us-east-1.amazonaws.com", provider: s3, route: { path_prefix: /s3-us, strip_prefix: true }, region: us-east-1 }',
        '  - { name: s3-eu, url: "https://s3.eu-west-1.amazonaws.com", provider: s3, route: { host: eu.internal }, preserve_host: false, region: eu-west-1 }',
        '  - { name: aws, url: "https://{host}", provider: s3, route: { host: "*.amazonaws.com" } }',
      ].join('\n'),
    );
    const { code, stderr } = await cli('check-config', '--config', file);
    expect(code).toBe(0);
    expect(stderr.trim().split('\n')).toEqual([
      expect.stringMatching(new RegExp(`^${file}: warning: upstreams\\[0\\]\\.route\\.strip_prefix: stripping /s3-us changes the path a SigV4 client signed`)),
      expect.stringMatching(new RegExp(`^${file}: warning: upstreams\\[1\\]\\.preserve_host: the store receives its own Host`)),
    ]);
  });

  it('usage errors exit 2 and --help exits 0', async () => {
    expect((await cli('check-config')).code).toBe(2);
    expect((await cli('frobnicate')).code).toBe(2);
    const help = await cli('explain', '--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/Usage: residency-proxy explain/);
  });
});

describe('explain', () => {
  it('prints the decision with every signal, as JSON, sending nothing', async () => {
    const { code, stdout } = await cli('explain', '--config', DEFAULT, 'PUT', 'http://127.0.0.1:8080/eu/demo-bucket/k?X-Amz-Signature=deadbeefcafe');
    expect(code).toBe(0);
    const report = JSON.parse(stdout);
    expect(report.route).toMatchObject({ upstream: 'demo-eu', provider: 's3', forward_path: '/demo-bucket/k' });
    expect(report.operation).toBe('write');
    expect(report.location).toEqual({
      jurisdictions: ['IE'],
      region: 'eu-west-1',
      unknown: false,
      signals: [{ source: 'declared', value: 'eu-west-1', jurisdiction: 'IE', region: 'eu-west-1' }],
    });
    // The provider's reading: the bucket from the path, no other destination.
    expect(report).toMatchObject({ bucket: 'demo-bucket', bucket_from: 'path', destinations: [], principal_verified: false });
    expect(report.decision).toEqual({ action: 'block', effective: 'refused', rule: 'user-data-writes', mode: 'enforce', reason: 'jurisdiction_not_allowed', status: 403 });
    expect(report.request.query_parameters).toEqual(['X-Amz-Signature']);
    expect(stdout).not.toContain('deadbeefcafe');
  });

  it('has a text format for people and takes a Host header', async () => {
    const { code, stdout } = await cli('explain', '--config', DEFAULT, 'GET', '/us/demo-bucket/k', '-H', 'Host: localhost', '--format', 'text');
    expect(code).toBe(0);
    expect(stdout).toContain('route      → upstream demo-us (s3)');
    expect(stdout).toContain('signal declared: us-east-1 → US');
    expect(stdout).toContain('decision   → ALLOW by rule (none) in enforce mode: read_allowed');
  });

  it('explains a request refused before any decision', async () => {
    const { code, stdout } = await cli('explain', '--config', DEFAULT, 'PUT', 'http://h/elsewhere');
    expect(code).toBe(0);
    expect(JSON.parse(stdout).outcome).toMatchObject({ status: 404, code: 'no_route' });
  });

  it('prints the provider reading: the bucket from the Host, every destination a body names, and what could not be placed', async () => {
    const config = join(dir, 'reading.yaml');
    writeFileSync(
      config,
      `upstreams:
  - { name: vhost, url: "http://127.0.0.1:1", provider: s3, route: { host: "*.s3.internal" }, region: us-east-1, buckets: { eu-archive: eu-west-1 } }
rules:
  - { name: writes, match: { operations: [write] }, allow_jurisdictions: [US], mode: enforce }
`,
    );
    const body = join(dir, 'replication.xml');
    writeFileSync(
      body,
      '<ReplicationConfiguration><Rule><Destination><Bucket>arn:aws:s3:::eu-archive</Bucket></Destination></Rule><Rule><Destination><Bucket>arn:aws:s3:::elsewhere</Bucket></Destination></Rule></ReplicationConfiguration>',
    );
    const json = await cli('explain', '--config', config, 'PUT', 'http://us-data.s3.internal/?replication', '--body', body, '--offline');
    expect(json.code).toBe(0);
    const report = JSON.parse(json.stdout);
    expect(report).toMatchObject({ bucket: 'us-data', bucket_from: 'host', decision: { action: 'block', reason: 'unknown_location' }, location: { unknown: true } });
    expect(report.destinations).toEqual([
      { bucket: 'eu-archive', place: 'eu-west-1', jurisdiction: 'IE' },
      { bucket: 'elsewhere', place: 'unknown', jurisdiction: null },
    ]);
    const text = await cli('explain', '--config', config, 'PUT', 'http://us-data.s3.internal/?replication', '--body', body, '--offline', '--format', 'text');
    expect(text.stdout).toContain('on bucket us-data (from the Host)');
    expect(text.stdout).toContain('writes to  → bucket eu-archive at eu-west-1 → IE');
    expect(text.stdout).toContain('writes to  → bucket elsewhere at an unknown place → unplaced');
  });
});

describe('check-config and principals', () => {
  it('refuses an allow-exception naming principals without verification keys', async () => {
    const config = join(dir, 'principals.yaml');
    writeFileSync(
      config,
      `upstreams:
  - { name: s3, url: "http://127.0.0.1:1", provider: s3, route: { path_prefix: /s3 }, region: us-east-1 }
exceptions:
  - { name: migration, match: { principals: [AKIDEXAMPLE] }, action: allow, expires: "2999-01-01T00:00:00Z", ticket: T-1, reason: copy }
`,
    );
    const { code, stdout, stderr } = await cli('check-config', '--config', config);
    expect(code).toBe(1);
    expect(stdout + stderr).toContain('exceptions[0].match.principals: an allow-exception names principals, but no principal_keys are configured');
    const keys = join(dir, 'keys');
    writeFileSync(keys, 'AKIDEXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n');
    writeFileSync(config, readFileSync(config, 'utf8') + 'principal_keys: { file: keys }\n');
    const ok = await cli('check-config', '--config', config);
    expect(ok.code).toBe(0);
    expect(ok.stdout + ok.stderr).not.toContain('wJalrXUtnFEMI');
  });
});
