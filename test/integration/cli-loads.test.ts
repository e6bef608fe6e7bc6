// check-config, explain and policy test start fast because they never load
// what only the server needs: checked by recording every module the built
// CLI loads (a loader hook), not by timing.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { CLI, assertBuilt, cleanEnv } from '../helpers/audit-serve.js';

const run = promisify(execFile);
const RECORDER = fileURLToPath(new URL('../helpers/record-loads.mjs', import.meta.url));
const config = (name: string) => fileURLToPath(new URL(`../../config/${name}`, import.meta.url));

/** The dependencies only `serve` needs (`fleet` takes ioredis too). */
// @peculiar/x509 mints interception certificates: serve needs it, a config check only with forward_proxy.
const SERVER = ['fastify', '@fastify/error', 'undici', 'ioredis', 'prom-client', 'pino', '@peculiar/x509'];
/** GeoIP: only when network location is on and a command locates an address. */
const GEOIP = 'maxmind';

const dir = mkdtempSync(join(tmpdir(), 'residency-cli-loads-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
beforeAll(assertBuilt);

/** The packages (by name, from node_modules) a CLI run loaded. */
async function packagesLoaded(...args: string[]): Promise<Set<string>> {
  const out = join(dir, `loads-${Math.random().toString(36).slice(2)}.txt`);
  await run(process.execPath, ['--import', RECORDER, CLI, ...args], { env: cleanEnv({ RECORD_LOADS: out }) });
  const packages = readFileSync(out, 'utf8')
    .split('\n')
    .map((url) => /.*\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)?.[1])
    .filter((name) => name !== undefined);
  return new Set(packages);
}

function expectNone(loaded: Set<string>, packages: readonly string[]): void {
  expect(packages.filter((p) => loaded.has(p))).toEqual([]);
}

describe('what each command loads', () => {
  it('check-config: the config parser and validator, nothing of the server or GeoIP', async () => {
    const loaded = await packagesLoaded('check-config', '--config', config('example.yaml'));
    // The recorder sees packages at all (ES and CommonJS ones).
    expect(loaded).toContain('yaml');
    expect(loaded).toContain('ajv');
    expectNone(loaded, [...SERVER, GEOIP]);
  });

  it('explain: GeoIP only when it locates an address with a GeoIP database', async () => {
    const request = ['PUT', 'http://127.0.0.1:8080/eu/b/k'];
    const located = await packagesLoaded('explain', '--config', config('default.yaml'), ...request);
    expect(located).toContain(GEOIP);
    expectNone(located, SERVER);

    expectNone(await packagesLoaded('explain', '--offline', '--config', config('default.yaml'), ...request), [...SERVER, GEOIP]);

    const noGeoip = join(dir, 'no-geoip.yaml');
    const doc = parse(readFileSync(config('default.yaml'), 'utf8')) as { location?: Record<string, unknown> };
    writeFileSync(noGeoip, stringify({ ...doc, location: { ...doc.location, geoip: { enabled: false } } }));
    expectNone(await packagesLoaded('explain', '--config', noGeoip, ...request), [...SERVER, GEOIP]);
  });

  it('policy test and serve --help load nothing of the server', async () => {
    expectNone(await packagesLoaded('policy', 'test', config('example.tests.yaml')), [...SERVER, GEOIP]);
    expectNone(await packagesLoaded('serve', '--help'), [...SERVER, GEOIP]);
  });

  it('fleet: the Redis client, not the config parser', async () => {
    const loaded = await packagesLoaded('fleet', '--help');
    expect(loaded).toContain('ioredis');
    expectNone(loaded, ['@sinclair/typebox', 'ajv', 'yaml', 'fastify', 'undici', 'prom-client', 'pino', GEOIP]);
  });
});
