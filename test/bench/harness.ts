import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir, totalmem } from 'node:os';
import { join, relative } from 'node:path';
import { runBigPut, runFirstRequests, runLoad, type LoadResult, type LoadSpec, type LoadTools } from './load.js';
import { childScript, REPO_ROOT } from './paths.js';
import { cpuSnapshot, findBinary, foreignCores, jsonLine, memoryOf, removeScratch, resetPeak, sleep, spawnChild, stopAll, stopChild, trackScratch, waitForLine } from './proc.js';
import { summariseProfile, type CpuProfile } from './profile.js';
import { evaluateGoals, renderMarkdown, summarise, summariseFirst, type BenchResult, type LogResult, type Machine, type MicroResult, type Sample, type Series, type TargetSummary } from './report.js';
import { loadSpec, s3Headers, SCENARIOS, type Scenario } from './scenarios.js';
import { INTERCEPT, NEW_HOSTS, PATHS, SETTINGS } from './settings.js';
import { directTarget, nginxVersion, startBare, startNginx, startResidency, startUpstream, writeBenchPki, type Placement, type Target, type Upstream } from './targets.js';

export interface BenchOptions {
  rounds: number;
  durationSec: number;
  /** Warm-up per target and scenario before the first round. */
  warmupSec: number;
  quick: boolean;
  /** Include the streaming 1 GiB uploads. */
  big: boolean;
  bigRounds: number;
  /** Target names to run (direct, bare, nginx, nginx-tls, setting names, intercept-https); null: all. */
  targets: readonly string[] | null;
  /** Scenario names to run; null: all that the mode includes. */
  scenarios: readonly string[] | null;
  tool: 'auto' | 'wrk' | 'autocannon';
  /** Pin load to CPU 0 and servers to CPU 1 with taskset, where possible. */
  pin: boolean;
  micro: boolean;
  /** CPU-profile one residency-proxy setting under one load scenario (small PUTs by default). */
  profile: boolean;
  profileSetting: string;
  profileScenario: string;
  /** Override every load scenario's connection count. */
  connections: number | null;
  /**
   * Other work on the machine (builds, tests, steal) in CPU cores above which
   * a run waits for quiet first and is repeated if it was disturbed.
   */
  maxForeignCores: number;
  /** Repeats of a disturbed run (bounded; the last attempt is kept). */
  retries: number;
  /** Total seconds the whole run may spend waiting for quiet and repeating disturbed runs. */
  quietBudgetSec: number;
  /** Results folder (JSON, Markdown, profile); null writes nothing. */
  outDir: string | null;
  /** The command line, for the report. */
  command: string;
  log: (line: string) => void;
}

export const DEFAULT_OPTIONS: BenchOptions = {
  rounds: 3,
  durationSec: 5,
  warmupSec: 3,
  quick: false,
  big: false,
  bigRounds: 1,
  targets: null,
  scenarios: null,
  tool: 'auto',
  pin: true,
  micro: true,
  profile: true,
  profileSetting: 'enforce-full',
  profileScenario: 'put-small',
  connections: null,
  maxForeignCores: 0.25,
  retries: 2,
  quietBudgetSec: 300,
  outDir: null,
  command: 'npm run bench',
  log: (line) => console.log(line),
};

/** --quick: a smoke run of every part, seconds per target. */
export const QUICK_OPTIONS: Partial<BenchOptions> = { quick: true, rounds: 1, durationSec: 1, warmupSec: 0.5, big: false, profile: false };

function cpuModel(): string {
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('model name'));
    if (line) return line.slice(line.indexOf(':') + 1).trim();
  } catch {
    // Not Linux.
  }
  return cpus()[0]?.model ?? 'unknown CPU';
}

/** The filesystem type under a path (fsync cost depends on it), from /proc/mounts. */
function filesystemOf(path: string): string {
  try {
    let best = { mount: '', type: 'unknown' };
    for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const [, mount, type] = line.split(' ');
      if (mount && type && (path === mount || path.startsWith(mount.endsWith('/') ? mount : `${mount}/`)) && mount.length >= best.mount.length) {
        best = { mount, type };
      }
    }
    return `${best.type} (${best.mount || '?'})`;
  } catch {
    return 'unknown';
  }
}

function toolVersion(binary: string, args: string[]): string {
  try {
    return execFileSync(binary, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 5_000 }).split('\n')[0]!.trim();
  } catch (err) {
    const out = (err as { stdout?: string }).stdout;
    return typeof out === 'string' && out.length > 0 ? out.split('\n')[0]!.trim() : binary;
  }
}

function packageVersion(name: string): string {
  try {
    return (JSON.parse(readFileSync(join(REPO_ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return '?';
  }
}

/** Rotate (and reverse every other round) so each target takes every position: drift hits all alike. */
function roundOrder<T>(items: readonly T[], round: number): T[] {
  if (items.length === 0) return [];
  const k = round % items.length;
  const rotated = [...items.slice(k), ...items.slice(0, k)];
  return round % 2 === 1 ? rotated.reverse() : rotated;
}

export async function runBenchmark(partial: Partial<BenchOptions> = {}): Promise<BenchResult> {
  const o: BenchOptions = { ...DEFAULT_OPTIONS, ...(partial.quick ? QUICK_OPTIONS : {}), ...partial };
  const log = o.log;
  const notes: string[] = [];
  if (!Number.isInteger(o.rounds) || o.rounds < 1) throw new Error('rounds must be a positive integer');
  if (!(o.durationSec > 0) || o.durationSec > 600) throw new Error('duration must be within (0, 600] seconds');

  // Tools and placement.
  const taskset = o.pin ? findBinary('taskset') : null;
  const cores = cpus().length;
  const pinned = taskset !== null && cores >= 2;
  if (o.pin && !pinned) notes.push(taskset === null ? 'taskset not found: processes are not pinned' : 'fewer than 2 CPUs: processes are not pinned');
  const wrk = o.tool === 'autocannon' ? null : findBinary('wrk');
  if (o.tool === 'wrk' && wrk === null) throw new Error('--tool wrk: wrk is not installed');
  if (wrk === null && o.tool === 'auto') notes.push('wrk not found: load from autocannon (fixed-rate light load, 1 ms-accurate histograms replaced by exact samples)');
  const want = (name: string) => o.targets === null || o.targets.includes(name);
  const nginxBinary = want('nginx') || want('nginx-tls') ? findBinary('nginx') : null;
  if ((want('nginx') || want('nginx-tls')) && nginxBinary === null) notes.push('nginx not found: the nginx and nginx-tls peers are skipped');

  const tmpDir = mkdtempSync(join(tmpdir(), 'residency-bench-'));
  trackScratch(tmpDir);
  const place: Placement = { taskset: pinned ? taskset : null, serverCpu: pinned ? 1 : null, tmpDir };
  const tools: LoadTools = { wrk, taskset: pinned ? taskset : null, cpu: pinned ? 0 : null, tmpDir };
  const machine: Machine = {
    cpuModel: cpuModel(),
    cores,
    memoryGiB: totalmem() / 1024 ** 3,
    node: process.version,
    kernel: release(),
    loadTool: wrk ? toolVersion(wrk, ['-v']).replace(/ Copyright.*$/, '') : `autocannon ${packageVersion('autocannon')}`,
    nginx: (() => {
      const binary = nginxBinary ?? findBinary('nginx');
      return binary ? nginxVersion(binary).replace(/^nginx version: /, '') : null;
    })(),
    pinning: pinned ? 'load generator pinned to CPU 0; upstream and the proxy under test share CPU 1 (taskset)' : 'not pinned',
    tmpFs: filesystemOf(tmpDir),
  };

  const scenarios = SCENARIOS.filter((s) => {
    if (o.scenarios !== null) return o.scenarios.includes(s.name);
    if (s.kind === 'big') return o.big && !o.quick;
    return !o.quick || s.quick;
  });
  const settings = SETTINGS.filter((s) => want(s.name));
  // The intercepted-HTTPS comparison needs certificates, a TLS upstream and its DNS server: set up only when one of its scenarios runs.
  const httpsWanted = scenarios.some((s) => s.kind === 'https' || s.kind === 'first') && (want(INTERCEPT.name) || want('nginx-tls'));

  const series: Series[] = [];
  const targetsUp: Target[] = [];
  const started: TargetSummary[] = [];
  const up = (t: Target) => {
    targetsUp.push(t);
    started.push({ name: t.name, kind: t.kind, detail: t.detail });
  };
  let upstream: Upstream | null = null;
  let tlsUpstream: Upstream | null = null;
  let firstRequest: BenchResult['firstRequest'] = null;
  let micro: MicroResult[] = [];
  let decisionLog: LogResult[] = [];
  let profile: BenchResult['profile'] = null;
  let peakResetWorks = true;

  const spec = (scenario: Scenario, target: Target, durationSec: number): LoadSpec => ({
    ...loadSpec(scenario, target.url, durationSec, (scenario.kind === 'load' || scenario.kind === 'https') && o.connections !== null ? o.connections : scenario.connections),
    url: target.client ? target.client.url(scenario.path) : `${target.url}${scenario.path}`,
    // The same client for every target of the comparison, whatever --tool says.
    ...(scenario.kind === 'https' ? { client: 'undici' as const, ...(target.client ? { caFile: target.client.caFile } : {}), ...(target.client?.proxy ? { proxy: target.client.proxy } : {}) } : {}),
  });

  let disturbed = 0;
  let retried = 0;
  // Waiting and repeating are bounded by one budget for the whole run, so a machine that never gets quiet still finishes.
  const quietDeadline = Date.now() + o.quietBudgetSec * 1000;
  /** Wait (bounded) until the machine's other work drops below the threshold. */
  const waitForQuiet = async () => {
    if (!Number.isFinite(o.maxForeignCores)) return;
    const deadline = Math.min(Date.now() + 20_000, quietDeadline);
    let said = false;
    while (Date.now() < deadline) {
      const a = cpuSnapshot();
      await sleep(500);
      const other = foreignCores(a, cpuSnapshot());
      if (other === null || other <= o.maxForeignCores) return;
      if (!said) log(`  (waiting for other work on the machine to settle: ${other.toFixed(2)} cores busy)`);
      said = true;
    }
  };
  const measure = async (scenario: Scenario, target: Target, round: number): Promise<Sample> => {
    for (let attempt = 0; ; attempt++) {
      await waitForQuiet();
      const sample = await measureOnce(scenario, target, round);
      if (sample.foreignCores === null || sample.foreignCores <= o.maxForeignCores) return sample;
      if (attempt >= o.retries || Date.now() > quietDeadline) {
        disturbed++;
        return sample;
      }
      retried++;
      log(`  ${scenario.name} → ${target.name}: disturbed by ${sample.foreignCores.toFixed(2)} cores of other work, repeating`);
    }
  };
  const measureOnce = async (scenario: Scenario, target: Target, round: number): Promise<Sample> => {
    const cpuBefore = cpuSnapshot();
    const pids = target.memoryPids();
    for (const pid of pids) peakResetWorks = resetPeak(pid) && peakResetWorks;
    const before = pids.map(memoryOf);
    const rssBefore = before.every((m) => m !== null) ? before.reduce((a, m) => a + m!.rss, 0) : null;
    const expect = scenario.expectStatus(target);
    let r: LoadResult | null = null;
    let seconds: number | null = null;
    let mbps: number | null = null;
    let errors = 0;
    let unexpected = 0;
    if (scenario.kind === 'big') {
      const big = await runBigPut(`${target.url}${scenario.path}`, scenario.bodyBytes, scenario.framing ?? 'length', s3Headers('PUT', 'us-east-1'), tools, 600);
      seconds = big.seconds;
      mbps = big.bytes / big.seconds / 1e6;
      unexpected = big.status === expect ? 0 : 1;
    } else {
      r = await runLoad(spec(scenario, target, o.durationSec), expect, tools);
      mbps = scenario.mbps ? (r.rps * scenario.bodyBytes) / 1e6 : null;
      errors = r.errors;
      unexpected = r.unexpected;
    }
    const after = pids.map(memoryOf);
    const peakRss = after.every((m) => m !== null) ? after.reduce((a, m) => a + m!.peak, 0) : null;
    const foreign = foreignCores(cpuBefore, cpuSnapshot());
    return {
      foreignCores: foreign,
      round,
      rps: r ? r.rps : 1 / (seconds ?? Infinity),
      mbps,
      p50Ms: r ? r.p50Ms : (seconds ?? 0) * 1000,
      p90Ms: r ? r.p90Ms : (seconds ?? 0) * 1000,
      p99Ms: r ? r.p99Ms : (seconds ?? 0) * 1000,
      seconds,
      rssBefore,
      peakRss,
      errors,
      unexpected,
      loadCpu: r?.loadCpu ?? null,
    };
  };

  const record = (scenario: Scenario, target: Target, sample: Sample) => {
    let s = series.find((x) => x.scenario === scenario.name && x.target === target.name);
    if (!s) {
      s = { scenario: scenario.name, target: target.name, samples: [] };
      series.push(s);
    }
    s.samples.push(sample);
    const what =
      scenario.kind === 'big'
        ? `${sample.seconds!.toFixed(2)} s, ${sample.mbps!.toFixed(0)} MB/s, RSS ${((sample.rssBefore ?? 0) / 2 ** 20).toFixed(0)} → peak ${((sample.peakRss ?? 0) / 2 ** 20).toFixed(0)} MiB`
        : `${Math.round(sample.rps).toLocaleString('en-US')} req/s${sample.mbps !== null ? ` (${sample.mbps.toFixed(0)} MB/s)` : ''}, p50 ${sample.p50Ms.toFixed(3)} ms, p99 ${sample.p99Ms.toFixed(3)} ms`;
    const bad = sample.errors + sample.unexpected > 0 ? `  [${sample.errors} errors, ${sample.unexpected} unexpected status]` : '';
    log(`  ${scenario.name} → ${target.name}: ${what}${bad}`);
  };

  try {
    log(`bench: ${scenarios.map((s) => s.name).join(', ')}; ${o.rounds} round(s) × ${o.durationSec} s; ${machine.loadTool}; ${machine.pinning}`);
    upstream = await startUpstream(place);
    if (want('direct')) up(directTarget(upstream));
    if (want('bare')) up(await startBare(upstream, place));
    if (nginxBinary && want('nginx')) {
      try {
        up(await startNginx(nginxBinary, upstream, place));
      } catch (err) {
        notes.push(`nginx could not be started, skipped: ${(err as Error).message.split('\n')[0]}`);
      }
    }
    for (const setting of settings) {
      const t = await startResidency(setting, upstream, place);
      if (t.skipped.length > 0) notes.push(`${setting.name}: features skipped: ${t.skipped.join(', ')}`);
      up(t);
    }
    if (httpsWanted) {
      const pki = await writeBenchPki(tmpDir);
      tlsUpstream = await startUpstream(place, pki);
      if (nginxBinary && want('nginx-tls')) {
        try {
          up(await startNginx(nginxBinary, tlsUpstream, place, pki));
        } catch (err) {
          notes.push(`nginx-tls could not be started, skipped: ${(err as Error).message.split('\n')[0]}`);
        }
      }
      if (want(INTERCEPT.name)) {
        const t = await startResidency(INTERCEPT, tlsUpstream, place, { pki });
        if (t.skipped.length > 0) notes.push(`${INTERCEPT.name}: features skipped: ${t.skipped.join(', ')}`);
        up(t);
      }
      if (!want(INTERCEPT.plain)) notes.push(`intercepted HTTPS: ${INTERCEPT.plain} (the plain setting it is compared with) was not among the targets, so there is no × plain ratio`);
    }

    const runnable = (scenario: Scenario) => targetsUp.filter((t) => scenario.appliesTo(t));
    const loadScenarios = scenarios.filter((s) => s.kind !== 'big' && s.kind !== 'first');
    const bigScenarios = scenarios.filter((s) => s.kind === 'big');
    const firstScenarios = scenarios.filter((s) => s.kind === 'first');
    const runs = loadScenarios.reduce((a, s) => a + runnable(s).length, 0);
    const bigRuns = bigScenarios.reduce((a, s) => a + runnable(s).length, 0);
    log(`bench: ${targetsUp.map((t) => t.name).join(', ')}; ${runs} runs per round; about ${Math.ceil((runs * (o.warmupSec + o.rounds * (o.durationSec + 0.3))) / 60)} min for the load rounds${bigRuns > 0 ? ` + ${bigRuns * o.bigRounds} uploads of 1 GiB` : ''}`);

    // Warm-up: Node proxies run 30–50 % slower in their first seconds (JIT, pools, buffers).
    if (o.warmupSec > 0) {
      log('warm-up');
      for (const scenario of loadScenarios) {
        for (const target of runnable(scenario)) await runLoad(spec(scenario, target, o.warmupSec), scenario.expectStatus(target), tools);
      }
    }
    for (let round = 0; round < o.rounds; round++) {
      log(`round ${round + 1}/${o.rounds}`);
      for (const scenario of loadScenarios) {
        for (const target of roundOrder(runnable(scenario), round)) record(scenario, target, await measure(scenario, target, round));
      }
    }
    for (let round = 0; round < o.bigRounds && bigScenarios.length > 0; round++) {
      log(`1 GiB uploads, round ${round + 1}/${o.bigRounds}`);
      for (const scenario of bigScenarios) {
        for (const target of roundOrder(runnable(scenario), round)) record(scenario, target, await measure(scenario, target, round));
      }
    }
    // Once per run, after the load rounds: each host is new only once to a running proxy.
    for (const scenario of firstScenarios) {
      for (const target of runnable(scenario)) {
        const { client } = target;
        if (!client?.proxy || !tlsUpstream) continue;
        log(`first request to ${NEW_HOSTS.length} new hosts → ${target.name}`);
        await waitForQuiet();
        const times = await runFirstRequests(
          {
            mode: 'first',
            proxy: client.proxy,
            caFile: client.caFile,
            headers: s3Headers('GET', 'us-east-1'),
            newUrls: NEW_HOSTS.map((host) => `https://${host}:${tlsUpstream!.port}${scenario.path}`),
            knownUrl: client.url(`${PATHS.allowed}${scenario.path}`),
          },
          scenario.expectStatus(target),
          tools,
        );
        firstRequest = summariseFirst(target.name, times);
        const f = firstRequest;
        log(`  new host ${f.newHost.medianMs.toFixed(2)} ms, known host on a new tunnel ${f.newTunnel.medianMs.toFixed(2)} ms, warm tunnel ${f.warm.medianMs.toFixed(3)} ms (medians over ${f.hosts} hosts)`);
      }
    }
    if (!peakResetWorks) notes.push('could not reset peak RSS (/proc/PID/clear_refs): peak RSS is the process lifetime peak');
    if (retried > 0 || disturbed > 0) {
      notes.push(
        `other work on the machine: ${retried} run(s) repeated because more than ${o.maxForeignCores} cores of other work ran during them; ${disturbed} kept although disturbed (after ${o.retries} repeats or once the ${o.quietBudgetSec} s budget for waiting was spent; see the "other CPU" column)`,
      );
    }

    // Stop the measured targets before profiling, so the profiled proxy has CPU 1 to itself with the upstream.
    for (const t of targetsUp.splice(0)) await t.stop();

    if (o.profile && o.outDir !== null) {
      const setting = SETTINGS.find((s) => s.name === o.profileSetting);
      const scenario = SCENARIOS.find((s) => s.name === o.profileScenario && s.kind === 'load');
      if (!setting) throw new Error(`--profile-setting: no setting named ${o.profileSetting}`);
      if (!scenario) throw new Error(`--profile-scenario: no load scenario named ${o.profileScenario}`);
      mkdirSync(o.outDir, { recursive: true });
      const name = `cpu-${setting.name}-${scenario.name}.cpuprofile`;
      const file = join(o.outDir, name);
      rmSync(file, { force: true });
      log(`CPU profile: ${setting.name} under ${scenario.name}`);
      await waitForQuiet();
      // V8 samples wall-clock positions: an upstream sharing the proxy's CPU would show up as time in the
      // socket writes that wake it. The profiled proxy gets CPU 1 alone; its own upstream runs beside the load generator.
      const ownUpstream = await startUpstream({ ...place, serverCpu: tools.cpu });
      const spawned = performance.now();
      let window: { fromMs: number; toMs: number };
      try {
        const t = await startResidency(setting, ownUpstream, place, { nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${o.outDir}`, `--cpu-prof-name=${name}`], label: 'profile' });
        // Only the measured load is summarised: start-up (module loading, GeoIP checks) and warm-up (JIT) are not what a running proxy pays.
        try {
          await runLoad(spec(scenario, t, Math.max(2, o.warmupSec)), 200, tools);
          const from = performance.now();
          await runLoad(spec(scenario, t, Math.max(5, o.durationSec * 2)), 200, tools);
          window = { fromMs: from - spawned, toMs: performance.now() - spawned };
        } finally {
          await t.stop();
        }
      } finally {
        await stopChild(ownUpstream.child);
      }
      if (existsSync(file)) {
        const summary = summariseProfile(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile, 25, window);
        profile = { file: relative(REPO_ROOT, file), setting: setting.name, scenario: scenario.name, summary };
      } else {
        notes.push(`the CPU profile was not written (${name})`);
      }
    }
  } finally {
    for (const t of targetsUp) await t.stop().catch(() => {});
    if (upstream) await stopChild(upstream.child);
    if (tlsUpstream) await stopChild(tlsUpstream.child);
    await stopAll();
  }

  try {
    if (o.micro) {
      log('micro-benchmarks');
      await waitForQuiet();
      const child = spawnChild({
        name: 'micro',
        command: process.execPath,
        args: [childScript('micro-child'), JSON.stringify({ timeMs: o.quick ? 100 : 500, logSeconds: o.quick ? 0.5 : 2, dir: tmpDir })],
        cpu: place.serverCpu,
        taskset: place.taskset,
      });
      try {
        const r = await waitForLine(child, (l) => (jsonLine(l)?.msg === 'result' ? jsonLine(l) : undefined), 180_000);
        micro = r.cases as MicroResult[];
        decisionLog = r.decisionLog as LogResult[];
      } finally {
        await stopChild(child);
      }
      for (const m of micro) log(`  ${m.name}: ${m.nsPerOp.toFixed(0)} ns/op`);
      for (const l of decisionLog) log(`  decision log ${l.fsync ? 'with fsync' : 'without fsync'}: ${Math.round(l.perSecond).toLocaleString('en-US')} records/s`);
    }
  } finally {
    removeScratch(tmpDir);
  }

  // Profiling runs are not targets of the table.
  const targetSummaries = started.filter((t) => !t.name.endsWith('-profile'));
  const rows = summarise(series, scenarios, targetSummaries);
  const result: BenchResult = {
    date: new Date().toISOString(),
    command: o.command,
    machine,
    options: { rounds: o.rounds, durationSec: o.durationSec, warmupSec: o.warmupSec, bigRounds: o.bigRounds, quick: o.quick, big: o.big },
    targets: targetSummaries,
    rows,
    series,
    micro,
    decisionLog,
    goals: evaluateGoals(rows, series, micro, decisionLog, settings.map((s) => s.name)),
    profile,
    firstRequest,
    notes,
  };
  if (o.outDir !== null) writeResults(result, o.outDir, log);
  return result;
}

function writeResults(result: BenchResult, dir: string, log: (line: string) => void): void {
  mkdirSync(dir, { recursive: true });
  const stamp = result.date.replace(/[:.]/g, '-');
  const json = join(dir, `bench-${stamp}.json`);
  const md = join(dir, `bench-${stamp}.md`);
  writeFileSync(json, `${JSON.stringify(result, null, 2)}\n`);
  writeFileSync(md, renderMarkdown(result));
  // Stable names for the README and for diffing runs.
  copyFileSync(json, join(dir, 'latest.json'));
  copyFileSync(md, join(dir, 'latest.md'));
  log(`results: ${relative(REPO_ROOT, json)}, ${relative(REPO_ROOT, md)} (and latest.*)`);
}
