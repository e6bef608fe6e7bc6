// `npm run bench:ab -- --baseline DIR [options]`: this build against another
// checkout's, in one setting, run after run. Both proxies are up at once (with
// one upstream, pinned as the benchmark pins them); each pair of runs visits
// both, in alternating order, so the host's drift (its speed moves by up to 2×
// within minutes here) hits both alike. The result per scenario is the median
// of the per-pair ratios: the tool for questions like "does this change cost
// more than 5 %?", which the main benchmark's ratios to `bare` cannot answer on
// a noisy host.
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { runLoad, type LoadTools } from './load.js';
import { RESULTS_DIR } from './paths.js';
import { median } from './report.js';
import { cleanupSync, cpuSnapshot, findBinary, removeScratch, stopAll, trackScratch } from './proc.js';
import { loadSpec, SCENARIOS, type Scenario } from './scenarios.js';
import { SETTINGS, type buildConfig, type ProxySetting } from './settings.js';
import { startBare, startResidency, startUpstream, type Placement, type Target, type Upstream } from './targets.js';

const USAGE = `Usage: npm run bench:ab -- --baseline DIR [options]

  --baseline DIR     another checkout of this repository, built: in it, run
                     npm ci && npm run build && npx tsc -p test/bench/tsconfig.json
                     or \`bare\`: the bare @fastify/http-proxy peer of the main
                     benchmark, for the 1.0× bare goal in paired runs
  --setting NAME     the setting both run (default enforce-log-fsync): ${SETTINGS.map((s) => s.name).join(', ')}
  --scenarios a,b    load scenarios (default get-small,put-small,put-16k)
  --pairs N          pairs of runs per scenario and instance (default 6)
  --instances N      fresh processes of both builds, one after the other (default 4)
  --duration S       seconds per run (default 2)
  --warmup S         warm-up seconds per proxy and scenario (default 3)
  --no-pin           do not pin with taskset
`;

interface BaselineModule {
  SETTINGS: readonly ProxySetting[];
  buildConfig: typeof buildConfig;
  /** Absent in builds from before the benchmark ran the proxy with node flags. */
  PRODUCT_NODE_FLAGS?: readonly string[];
}

interface ScenarioResult {
  scenario: string;
  baselineRps: number;
  thisRps: number;
  /** Median of the per-pair ratios (this ÷ baseline). */
  ratio: number;
  ratios: number[];
  /** The proxy's own CPU time per request (µs, medians over the runs): what a request costs, whatever the latency. */
  baselineCpuUs: number | null;
  thisCpuUs: number | null;
}

/** One run: req/s, and the proxy's CPU µs per request (null where /proc cannot tell). */
interface Run {
  rps: number;
  cpuUs: number | null;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      baseline: { type: 'string' },
      setting: { type: 'string', default: 'enforce-log-fsync' },
      scenarios: { type: 'string', default: 'get-small,put-small,put-16k' },
      pairs: { type: 'string', default: '6' },
      instances: { type: 'string', default: '4' },
      duration: { type: 'string', default: '2' },
      warmup: { type: 'string', default: '3' },
      'no-pin': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help || values.baseline === undefined) {
    process.stdout.write(USAGE);
    process.exitCode = values.help ? 0 : 2;
    return;
  }
  const name = values.setting;
  const ours = SETTINGS.find((s) => s.name === name);
  if (ours === undefined) throw new Error(`--setting ${name}: not a setting of this checkout`);
  const againstBare = values.baseline === 'bare';
  const root = againstBare ? 'bare' : resolve(values.baseline);
  const scenarios = values.scenarios.split(',').map((n): Scenario => {
    const s = SCENARIOS.find((x) => x.name === n);
    if (s === undefined || s.kind !== 'load') throw new Error(`--scenarios: ${n} is not a load scenario (${SCENARIOS.filter((x) => x.kind === 'load').map((x) => x.name).join(', ')})`);
    return s;
  });
  const pairsPer = Number(values.pairs);
  const instances = Number(values.instances);
  const durationSec = Number(values.duration);
  const warmupSec = Number(values.warmup);
  if (!Number.isInteger(pairsPer) || pairsPer < 1 || !Number.isInteger(instances) || instances < 1 || !(durationSec > 0) || !(warmupSec >= 0)) throw new Error('--pairs, --instances, --duration, --warmup: positive numbers');

  const taskset = values['no-pin'] ? null : findBinary('taskset');
  const pinned = taskset !== null && cpus().length >= 2;
  const tmpDir = mkdtempSync(join(tmpdir(), 'residency-bench-ab-'));
  trackScratch(tmpDir);
  const place: Placement = { taskset: pinned ? taskset : null, serverCpu: pinned ? 1 : null, tmpDir };
  const startBaseline = againstBare ? (upstream: Upstream) => startBare(upstream, place) : await otherBuild(root, name, place);
  const tools: LoadTools = { wrk: findBinary('wrk'), taskset: pinned ? taskset : null, cpu: pinned ? 0 : null, tmpDir };
  const log = (line: string) => console.log(line);
  log(`bench:ab: ${name}, this checkout against ${root}; ${instances} instances × ${pairsPer} pairs of ${durationSec} s runs per scenario; load from ${tools.wrk ? 'wrk' : 'autocannon'}${pinned ? '; load on CPU 0, upstream and both proxies on CPU 1' : ''}`);

  const rows = new Map<string, { base: Run; ours: Run }[]>(scenarios.map((sc) => [sc.name, []]));
  try {
    const upstream = await startUpstream(place);
    const run = async (scenario: Scenario, target: Target, seconds: number): Promise<Run> => {
      const pid = target.memoryPids()[0]!;
      const before = cpuSnapshot(pid);
      const r = await runLoad(loadSpec(scenario, target.url, seconds), scenario.expectStatus(target), tools);
      const after = cpuSnapshot(pid);
      // Clock ticks (1/100 s) over the run's requests.
      const cpuUs = before === null || after === null || r.requests === 0 ? null : ((after.ours - before.ours) * 10_000) / r.requests;
      return { rps: r.rps, cpuUs };
    };
    // Two processes of one build differ by several per cent (JIT, memory layout): fresh processes per instance average that out.
    for (let instance = 0; instance < instances; instance++) {
      // Started in alternating order too.
      const startBase = () => startBaseline(upstream, instance);
      const startOurs = () => startResidency(ours, upstream, place, { label: `this-${instance}` });
      let baseUp: Target;
      let current: Target;
      if (instance % 2 === 0) {
        baseUp = await startBase();
        current = await startOurs();
      } else {
        current = await startOurs();
        baseUp = await startBase();
      }
      try {
        for (const scenario of scenarios) {
          for (const target of [baseUp, current]) await run(scenario, target, warmupSec);
          for (let i = 0; i < pairsPer; i++) {
            // Alternate who goes first: a host speeding up or slowing down favours neither.
            const baseFirst = (instance + i) % 2 === 0;
            const a = await run(scenario, baseFirst ? baseUp : current, durationSec);
            const b = await run(scenario, baseFirst ? current : baseUp, durationSec);
            rows.get(scenario.name)!.push(baseFirst ? { base: a, ours: b } : { base: b, ours: a });
          }
        }
      } finally {
        await baseUp.stop();
        await current.stop();
      }
    }
  } finally {
    await stopAll();
    removeScratch(tmpDir);
  }
  const results = scenarios.map((scenario): ScenarioResult => {
    const pairs = rows.get(scenario.name)!;
    const ratios = pairs.map((r) => r.ours.rps / r.base.rps);
    const cpu = (runs: Run[]) => (runs.every((r) => r.cpuUs !== null) ? median(runs.map((r) => r.cpuUs!)) : null);
    return {
      scenario: scenario.name,
      baselineRps: median(pairs.map((r) => r.base.rps)),
      thisRps: median(pairs.map((r) => r.ours.rps)),
      ratio: median(ratios),
      ratios,
      baselineCpuUs: cpu(pairs.map((r) => r.base)),
      thisCpuUs: cpu(pairs.map((r) => r.ours)),
    };
  });
  const us = (v: number | null) => (v === null ? '?' : v.toFixed(0));
  for (const r of results) {
    log(
      `  ${r.scenario}: baseline ${Math.round(r.baselineRps).toLocaleString('en-US')} req/s, this ${Math.round(r.thisRps).toLocaleString('en-US')} req/s; ` +
        `this ÷ baseline ${r.ratio.toFixed(3)} (pairs ${Math.min(...r.ratios).toFixed(2)}–${Math.max(...r.ratios).toFixed(2)}); ` +
        `proxy CPU per request ${us(r.baselineCpuUs)} → ${us(r.thisCpuUs)} µs`,
    );
  }
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(join(RESULTS_DIR, 'ab-latest.json'), `${JSON.stringify({ setting: name, baseline: root, instances, pairsPerInstance: pairsPer, durationSec, pinned, results }, null, 2)}\n`);
}

/** How to start the other checkout's build of the setting. */
async function otherBuild(root: string, name: string, place: Placement): Promise<(upstream: Upstream, instance: number) => Promise<Target>> {
  const settingsModule = join(root, 'dist-bench', 'test', 'bench', 'settings.js');
  if (!existsSync(join(root, 'dist', 'cli', 'main.js')) || !existsSync(settingsModule)) {
    throw new Error(`${root} is not a built checkout: in it, run npm ci && npm run build && npx tsc -p test/bench/tsconfig.json`);
  }
  const baseline = (await import(pathToFileURL(settingsModule).href)) as BaselineModule;
  const theirs = baseline.SETTINGS.find((s) => s.name === name);
  if (theirs === undefined) throw new Error(`--setting ${name}: not a setting of ${root}`);
  const build = { root, buildConfig: baseline.buildConfig, nodeFlags: baseline.PRODUCT_NODE_FLAGS ?? [] };
  return (upstream, instance) => startResidency(theirs, upstream, place, { label: `baseline-${instance}`, build });
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  cleanupSync();
  process.exitCode = 1;
});
