// `npm run bench [-- OPTIONS]`: the data-plane benchmark (issue #8).
// Built by `tsc -p test/bench/tsconfig.json` into dist-bench/ and run with node.
import { parseArgs } from 'node:util';
import { DEFAULT_OPTIONS, QUICK_OPTIONS, runBenchmark, type BenchOptions } from './harness.js';
import { RESULTS_DIR } from './paths.js';
import { cleanupSync, stopAll } from './proc.js';
import { renderText } from './report.js';
import { SCENARIOS } from './scenarios.js';
import { INTERCEPT, SETTINGS } from './settings.js';

const USAGE = `Usage: npm run bench -- [options]

  --rounds N            measured rounds per target and scenario (default ${DEFAULT_OPTIONS.rounds})
  --duration S          seconds per run (default ${DEFAULT_OPTIONS.durationSec})
  --warmup S            warm-up seconds per target and scenario (default ${DEFAULT_OPTIONS.warmupSec})
  --quick               smoke run: 1 round of 1 s, no 1 GiB uploads, no profile
  --big                 add the streaming 1 GiB uploads (Content-Length and chunked)
  --big-rounds N        rounds of 1 GiB uploads (default ${DEFAULT_OPTIONS.bigRounds})
  --targets a,b         of: direct, bare, nginx, ${SETTINGS.map((s) => s.name).join(', ')},
                        and for the intercepted-HTTPS comparison (https-* scenarios): ${INTERCEPT.name}, nginx-tls
                        (compared with ${INTERCEPT.plain}; all three run by default)
  --scenarios a,b       of: ${SCENARIOS.map((s) => s.name).join(', ')}
  --tool T              auto (wrk if installed), wrk or autocannon
  --connections N       connections for the saturating scenarios
  --max-other-cpu C     other work (CPU cores) that makes a run wait and repeat (default ${DEFAULT_OPTIONS.maxForeignCores}; Infinity: never)
  --retries N           repeats of a disturbed run (default ${DEFAULT_OPTIONS.retries})
  --quiet-budget S      total seconds spent waiting/repeating for quiet (default ${DEFAULT_OPTIONS.quietBudgetSec})
  --no-pin              do not pin with taskset
  --no-micro            skip the micro-benchmarks
  --no-profile          skip the CPU profile
  --profile-setting S   setting to profile (default ${DEFAULT_OPTIONS.profileSetting})
  --profile-scenario S  load scenario to profile under (default ${DEFAULT_OPTIONS.profileScenario})
  --out DIR             results folder (default test/bench/results)
`;

const { values } = parseArgs({
  options: {
    rounds: { type: 'string' },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    quick: { type: 'boolean', default: false },
    big: { type: 'boolean', default: false },
    'big-rounds': { type: 'string' },
    targets: { type: 'string' },
    scenarios: { type: 'string' },
    tool: { type: 'string' },
    connections: { type: 'string' },
    'max-other-cpu': { type: 'string' },
    retries: { type: 'string' },
    'quiet-budget': { type: 'string' },
    'no-pin': { type: 'boolean', default: false },
    'no-micro': { type: 'boolean', default: false },
    'no-profile': { type: 'boolean', default: false },
    'profile-setting': { type: 'string' },
    'profile-scenario': { type: 'string' },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
  allowPositionals: false,
});

if (values.help) {
  console.log(USAGE);
  process.exit(0);
}

function number(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) {
    console.error(`--${name}: "${value}" is not a positive number\n\n${USAGE}`);
    process.exit(2);
  }
  return n;
}
const list = (value: string | undefined) => (value === undefined ? undefined : value.split(',').map((s) => s.trim()).filter((s) => s.length > 0));
const tool = values.tool ?? 'auto';
if (tool !== 'auto' && tool !== 'wrk' && tool !== 'autocannon') {
  console.error(`--tool: "${tool}" is not auto, wrk or autocannon`);
  process.exit(2);
}

const options: Partial<BenchOptions> = {
  ...(values.quick ? QUICK_OPTIONS : {}),
  command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
  outDir: values.out ?? RESULTS_DIR,
  tool,
  pin: !values['no-pin'],
  micro: !values['no-micro'],
  big: values.big,
};
const set = <K extends keyof BenchOptions>(key: K, value: BenchOptions[K] | undefined) => {
  if (value !== undefined) options[key] = value;
};
set('rounds', number('rounds', values.rounds));
set('durationSec', number('duration', values.duration));
set('warmupSec', values.warmup === '0' ? 0 : number('warmup', values.warmup));
set('bigRounds', number('big-rounds', values['big-rounds']));
set('connections', number('connections', values.connections) ?? null);
set('targets', list(values.targets));
set('scenarios', list(values.scenarios));
set('profileSetting', values['profile-setting']);
set('profileScenario', values['profile-scenario']);
set('maxForeignCores', values['max-other-cpu'] === 'Infinity' ? Infinity : number('max-other-cpu', values['max-other-cpu']));
set('retries', values.retries === '0' ? 0 : number('retries', values.retries));
set('quietBudgetSec', values['quiet-budget'] === '0' ? 0 : number('quiet-budget', values['quiet-budget']));
if (values['no-profile']) options.profile = false;
// --quick turns the 1 GiB uploads off; --big asked for them explicitly.
if (values.big) options.big = true;

// Ctrl-C: stop every child by PID, then leave (the harness removes its scratch folder in its finally).
let interrupted = false;
process.on('SIGINT', () => {
  if (interrupted) process.exit(130);
  interrupted = true;
  console.error('\ninterrupted: stopping child processes');
  void stopAll().finally(() => process.exit(130));
});
process.on('exit', cleanupSync);

try {
  const result = await runBenchmark(options);
  console.log(`\n${renderText(result)}`);
} catch (err) {
  console.error(`bench failed: ${(err as Error).stack ?? String(err)}`);
  process.exitCode = 1;
}
