// Micro-benchmarks in their own (pinned) process, after the load runs:
// tinybench over the shared cases, then the decision log's group-commit
// throughput. Run as a child: node micro-child.js '{"timeMs":…,"logSeconds":…}'
// Prints one JSON line: {"msg":"result","cases":[…],"decisionLog":[…]}.
import { Bench } from 'tinybench';
import { decisionLogThroughput, microCases } from './micro-cases.js';

const spec = JSON.parse(process.argv[2] ?? '{}') as { timeMs?: number; logSeconds?: number; logConcurrency?: number; dir?: string };
const { cases, close } = await microCases();
const bench = new Bench({ time: spec.timeMs ?? 500, warmupTime: Math.min(200, spec.timeMs ?? 500) });
for (const c of cases) bench.add(c.name, c.fn);
await bench.run();
const out = cases.map((c) => {
  const task = bench.getTask(c.name);
  const result = task?.result as { latency?: { p50: number; mean: number; rme: number } } | undefined;
  if (!result?.latency) throw new Error(`micro-benchmark "${c.name}" did not complete`);
  // Latency is ms per sample of `inner` calls.
  return {
    name: c.name,
    nsPerOp: (result.latency.p50 * 1e6) / c.inner,
    meanNsPerOp: (result.latency.mean * 1e6) / c.inner,
    rme: result.latency.rme,
    ...(c.targetNs === undefined ? {} : { targetNs: c.targetNs }),
  };
});
await close();

const seconds = spec.logSeconds ?? 2;
const concurrency = spec.logConcurrency ?? 256;
const base = { seconds, concurrency, ...(spec.dir ? { dir: spec.dir } : {}) };
const decisionLog = [await decisionLogThroughput({ ...base, fsync: true }), await decisionLogThroughput({ ...base, fsync: false })];
console.log(JSON.stringify({ msg: 'result', cases: out, decisionLog }));
