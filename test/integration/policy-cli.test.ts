import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { XMLValidator, XMLParser } from 'fast-xml-parser';
import { afterAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const CLI = new URL('../../dist/cli/main.js', import.meta.url).pathname;
const EXAMPLE_TESTS = new URL('../../config/example.tests.yaml', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'residency-policy-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], { maxBuffer: 64 * 1024 * 1024 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

const POLICY = `
allowed_jurisdictions: [US]
upstreams:
  - { name: s3-us, url: "http://127.0.0.1:1", provider: s3, route: { path_prefix: /s3-us, strip_prefix: true }, region: us-east-1 }
  - { name: s3-eu, url: "http://127.0.0.1:2", provider: s3, route: { path_prefix: /s3-eu, strip_prefix: true }, region: eu-west-1 }
rules:
  - { name: writes, match: { operations: [write] }, allow_jurisdictions: [US] }
`;
writeFileSync(join(dir, 'policy.yaml'), POLICY);

describe('policy test', () => {
  it('the shipped example tests pass (they run in npm test)', async () => {
    const { code, stdout } = await cli('policy', 'test', EXAMPLE_TESTS);
    expect(stdout).toMatch(/^17 passed, 0 failed$/m);
    expect(code).toBe(0);
  });

  it('a failing case exits 1 with a diff of expected and actual', async () => {
    const file = join(dir, 'failing.tests.yaml');
    writeFileSync(file, `policy: policy.yaml
cases:
  - name: passes
    request: { method: PUT, url: http://localhost/s3-us/b/k }
    expect: { decision: allow }
  - name: wrong expectation
    request: { method: PUT, url: http://localhost/s3-eu/b/k }
    expect: { decision: allow, rule: writes }
`);
    const { code, stdout } = await cli('policy', 'test', file);
    expect(code).toBe(1);
    expect(stdout).toContain('✓ passes');
    expect(stdout).toContain('✗ wrong expectation\n    decision:\n      - expected: "allow"\n      + actual:   "block"');
    expect(stdout).toMatch(/^1 passed, 1 failed$/m);
  });

  it('--format junit is well-formed XML CI systems can read', async () => {
    const file = join(dir, 'junit.tests.yaml');
    writeFileSync(file, `policy: policy.yaml
cases:
  - name: "US <ok> & fine"
    request: { method: PUT, url: http://localhost/s3-us/b/k }
    expect: { decision: allow }
  - name: EU wrong
    request: { method: PUT, url: http://localhost/s3-eu/b/k }
    expect: { decision: allow }
`);
    const { code, stdout } = await cli('policy', 'test', file, '--format', 'junit');
    expect(code).toBe(1);
    expect(XMLValidator.validate(stdout)).toBe(true);
    const doc = new XMLParser({ ignoreAttributes: false, processEntities: true, htmlEntities: true }).parse(stdout);
    expect(doc.testsuites['@_tests']).toBe('2');
    expect(doc.testsuites['@_failures']).toBe('1');
    const cases = doc.testsuites.testsuite.testcase;
    expect(cases[0]['@_name']).toBe('US <ok> & fine');
    expect(cases[1].failure['@_message']).toBe('decision: expected "allow", actual "block"');
  });

  it('a malformed test file is an error naming the file', async () => {
    const file = join(dir, 'bad.tests.yaml');
    writeFileSync(file, 'cases: []\n');
    const { code, stderr } = await cli('policy', 'test', file);
    expect(code).toBe(1);
    expect(stderr).toContain(`${file}: policy: is required`);
  });
});

describe('policy diff', () => {
  // A generated log: N US writes, M IE writes (blocked), K IE reads.
  async function writeLog(file: string, us: number, ie: number, reads: number): Promise<void> {
    const out = createWriteStream(file);
    let seq = 0;
    const line = (upstream: string, method: string, operation: string, region: string, j: string, decision: string) =>
      JSON.stringify({
        v: 1, seq: ++seq, ts: '2026-11-29T10:00:00.000Z', id: `id-${seq}`, replica: 'r', policy: 'p', upstream, method,
        path: `/bucket/k${seq}`, operation, target: { host: 'h', address: null },
        location: { jurisdictions: [j], region, signals: [{ source: 'declared', value: region, jurisdiction: j, region }] },
        rule: 'writes', mode: 'enforce', decision, effective: decision === 'block' ? 'refused' : 'forwarded', reason: 'x',
        status: 200, bytes_in: 0, bytes_out: 0, duration_ms: 1, client: '127.0.0.1', prev: '0', hash: '0',
      }) + '\n';
    for (let i = 0; i < us; i++) out.write(line('s3-us', 'PUT', 'write', 'us-east-1', 'US', 'allow'));
    for (let i = 0; i < ie; i++) out.write(line('s3-eu', 'PUT', 'write', 'eu-west-1', 'IE', 'block'));
    for (let i = 0; i < reads; i++) out.write(line('s3-eu', 'GET', 'read', 'eu-west-1', 'IE', 'allow'));
    await new Promise<void>((resolve) => out.end(resolve));
  }

  it('reports known flips and gates on loosening', async () => {
    const log = join(dir, 'decisions.log');
    await writeLog(log, 300, 120, 50);
    // Loosening: IE allowed → the 120 recorded blocks flip to allow.
    writeFileSync(join(dir, 'loose.yaml'), POLICY.replace('allow_jurisdictions: [US]', 'allow_jurisdictions: [US, IE]'));
    const loose = await cli('policy', 'diff', '--log', log, '--candidate', join(dir, 'loose.yaml'));
    expect(loose.stdout).toMatch(/^470 records replayed: 350 unchanged, 0 allow→block, 120 block→allow$/m);
    expect(loose.stdout).toMatch(/block→allow\s+120\s+s3-eu\s+writes\s+IE\s+id-301 id-302 id-303/);
    expect(loose.code).toBe(1);
    expect(loose.stderr).toMatch(/120 recorded blocks would be allowed/);
    expect((await cli('policy', 'diff', '--log', log, '--candidate', join(dir, 'loose.yaml'), '--allow-loosening')).code).toBe(0);

    // Tightening: reads of IE data now blocked too; US untouched.
    writeFileSync(join(dir, 'strict.yaml'), POLICY.replace('operations: [write]', 'operations: [read, write]'));
    const strict = await cli('policy', 'diff', '--log', log, '--candidate', join(dir, 'strict.yaml'));
    expect(strict.code).toBe(0);
    expect(strict.stdout).toMatch(/^470 records replayed: 420 unchanged, 50 allow→block, 0 block→allow$/m);

    // --current re-decides the baseline instead of trusting the recorded decision.
    const same = await cli('policy', 'diff', '--log', log, '--candidate', join(dir, 'policy.yaml'), '--current', join(dir, 'policy.yaml'));
    expect(same.stdout).toMatch(/^470 records replayed: 470 unchanged/m);
  });
});
