// Keeps `npm run bench` from rotting: the harness runs for real, briefly
// (direct and residency-proxy in monitor mode, small GET, autocannon so no
// binaries are needed), and must produce a well-formed table.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { runBenchmark } from '../bench/harness.js';
import { BENCH_OUT, CLI, REPO_ROOT } from '../bench/paths.js';
import { HTTPS_COLUMNS, LOAD_COLUMNS, renderMarkdown, renderText } from '../bench/report.js';
import { NEW_HOSTS } from '../bench/settings.js';

describe('benchmark harness (smoke)', () => {
  beforeAll(() => {
    // The harness's child processes run compiled JavaScript (Node 20 runs no
    // TypeScript). --noCheck: emit only (twice as fast); `npm run typecheck` checks these files.
    const tsc = join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    execFileSync(process.execPath, [tsc, '-p', join(REPO_ROOT, 'test', 'bench', 'tsconfig.json'), '--noCheck'], {
      cwd: REPO_ROOT,
      stdio: 'inherit',
      timeout: 60_000,
    });
    expect(existsSync(join(BENCH_OUT, 'test', 'bench', 'upstream-child.js'))).toBe(true);
    // `npm test` builds dist first; the proxy under test is the built CLI.
    expect(existsSync(CLI)).toBe(true);
  }, 90_000);

  it('measures direct and residency-proxy (monitor) and prints the table', async () => {
    const lines: string[] = [];
    const result = await runBenchmark({
      rounds: 1,
      // Long enough that a proxy child still warming up on a loaded CI machine
      // (JIT, first connections) is past it before the measured second.
      durationSec: 1.5,
      warmupSec: 1,
      targets: ['direct', 'monitor'],
      scenarios: ['get-small'],
      tool: 'autocannon',
      micro: false,
      profile: false,
      // A busy CI machine must not stretch the smoke test: measure once, whatever else runs.
      retries: 0,
      maxForeignCores: Infinity,
      outDir: null,
      command: 'bench-smoke.test.ts',
      log: (l) => lines.push(l),
    });

    expect(result.targets.map((t) => t.name)).toEqual(['direct', 'monitor']);
    expect(result.rows).toHaveLength(2);
    for (const row of result.rows) {
      expect(row.scenario).toBe('get-small');
      expect(row.rounds).toBe(1);
      expect(row.rps).toBeGreaterThan(0);
      expect(row.p50Ms).toBeGreaterThan(0);
      expect(row.p99Ms).toBeGreaterThanOrEqual(row.p50Ms);
      expect(row.errors).toBe(0);
      expect(row.unexpected).toBe(0);
      if (row.peakRssMiB !== null) expect(row.peakRssMiB).toBeGreaterThan(0);
    }
    const rp = result.rows.find((r) => r.target === 'monitor')!;
    expect(rp.vsDirect).toBeGreaterThan(0);
    expect(result.machine.cores).toBeGreaterThan(0);
    expect(result.machine.node).toBe(process.version);

    const md = renderMarkdown(result);
    expect(md).toContain(`| ${LOAD_COLUMNS.join(' | ')} |`);
    expect(md).toMatch(/\| small GET \| monitor \| [\d,]+ \|/);
    const text = renderText(result);
    for (const column of LOAD_COLUMNS) expect(text).toContain(column);
    expect(lines.some((l) => l.startsWith('  get-small → monitor: '))).toBe(true);
  }, 30_000);

  it('measures intercepted HTTPS against the plain setting, and the first request to new hosts', async () => {
    const result = await runBenchmark({
      rounds: 1,
      durationSec: 1.5,
      warmupSec: 1,
      // nginx-tls is left out: the smoke test needs no binaries.
      targets: ['enforce-full', 'intercept-https'],
      scenarios: ['https-get-small', 'https-first-request'],
      micro: false,
      profile: false,
      retries: 0,
      maxForeignCores: Infinity,
      outDir: null,
      command: 'bench-smoke.test.ts',
      log: () => {},
    });

    expect(result.targets.map((t) => [t.name, t.kind])).toEqual([
      ['enforce-full', 'residency'],
      ['intercept-https', 'intercept'],
    ]);
    expect(result.rows.map((r) => [r.scenario, r.target])).toEqual([
      ['https-get-small', 'enforce-full'],
      ['https-get-small', 'intercept-https'],
    ]);
    for (const row of result.rows) {
      expect(row.rps).toBeGreaterThan(0);
      expect(row.errors + row.unexpected).toBe(0);
      expect(row.loadCpu).toBeGreaterThan(0);
    }
    expect(result.rows[1]!.vsPlain).toBeGreaterThan(0);
    const first = result.firstRequest!;
    expect(first).toMatchObject({ target: 'intercept-https', hosts: NEW_HOSTS.length, errors: 0, unexpected: 0 });
    // A new host costs a mint and two handshakes; a request on a warm tunnel costs neither.
    expect(first.newHost.medianMs).toBeGreaterThan(first.warm.medianMs);

    const text = renderText(result);
    for (const column of HTTPS_COLUMNS) expect(text).toContain(column);
    expect(text).toContain('First request to a new host');
    expect(renderMarkdown(result)).toMatch(/\| small GET \(undici client\) \| intercept-https \| [\d,]+ \|/);
  }, 60_000);
});
