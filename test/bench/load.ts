import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { childScript } from './paths.js';
import { jsonLine, spawnChild, stopChild, waitForLine } from './proc.js';

/** One load run against one URL. */
export interface LoadSpec {
  url: string;
  method: 'GET' | 'PUT';
  headers: Record<string, string>;
  /** Request body size (0: none). Bodies are the byte 'x' repeated. */
  bodyBytes: number;
  connections: number;
  durationSec: number;
  /** Open-loop request rate (autocannon's overallRate); wrk has no rate control and runs closed-loop instead. */
  rate?: number;
  /** undici: the closed-loop Node client (the one load tool that speaks CONNECT), whatever --tool says. */
  client?: 'undici';
  /** undici only: http://127.0.0.1:PORT of a forward proxy to tunnel through (CONNECT, keep-alive tunnels). */
  proxy?: string;
  /** undici only: a PEM file of the CA to trust for https. */
  caFile?: string;
}

export interface LoadResult {
  tool: 'wrk' | 'autocannon' | 'undici';
  requests: number;
  seconds: number;
  rps: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  /** Connect/read/write errors and timeouts. */
  errors: number;
  /** Responses whose status was not the expected one (wrk: only tells < 400 from ≥ 400). */
  unexpected: number;
  /** undici only: CPU cores the load generator used (near 1: the client, not the target, set the pace). */
  loadCpu?: number;
}

export interface LoadTools {
  /** wrk's path, or null to use autocannon. */
  wrk: string | null;
  taskset: string | null;
  /** The load generator's CPU (null: not pinned). */
  cpu: number | null;
  /** Scratch folder for wrk's Lua scripts. */
  tmpDir: string;
}

export async function runLoad(spec: LoadSpec, expectStatus: number, tools: LoadTools): Promise<LoadResult> {
  if (spec.client === 'undici') return runNodeLoad('undici', spec, expectStatus, tools);
  return tools.wrk ? runWrk(spec, expectStatus, tools) : runNodeLoad('autocannon', spec, expectStatus, tools);
}

const lua = (s: string) => JSON.stringify(s); // ASCII only: a JSON string is a valid Lua string literal.

let scriptSeq = 0;

/**
 * wrk with a Lua script that sets the request and prints one parsable line
 * from done(): latency percentiles in µs, counts, error kinds.
 */
function wrkScript(spec: LoadSpec, dir: string): string {
  const lines = [`wrk.method = ${lua(spec.method)}`];
  if (spec.bodyBytes > 0) lines.push(`wrk.body = string.rep("x", ${spec.bodyBytes})`);
  for (const [k, v] of Object.entries(spec.headers)) lines.push(`wrk.headers[${lua(k)}] = ${lua(v)}`);
  lines.push(
    'done = function(summary, latency, requests)',
    '  local e = summary.errors',
    '  io.write(string.format(\'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d}\\n\',',
    '    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,',
    '    latency:percentile(50), latency:percentile(90), latency:percentile(99)))',
    'end',
  );
  const file = join(dir, `wrk-${process.pid}-${scriptSeq++}.lua`);
  writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

async function runWrk(spec: LoadSpec, expectStatus: number, tools: LoadTools): Promise<LoadResult> {
  const script = wrkScript(spec, tools.tmpDir);
  // One thread: the load generator gets one CPU. -c1 for light load is a closed loop (wrk has no rate control).
  // wrk takes whole seconds.
  const seconds = Math.max(1, Math.round(spec.durationSec));
  const args = ['-t1', `-c${spec.connections}`, `-d${seconds}s`, '--timeout', '10s', '-s', script, spec.url];
  const child = spawnChild({ name: 'wrk', command: tools.wrk!, args, cpu: tools.cpu, taskset: tools.taskset });
  const parsed = waitForLine(child, (l) => (l.startsWith('WRKJSON ') ? (JSON.parse(l.slice(8)) as Record<string, number>) : undefined), (seconds + 30) * 1000);
  let r: Record<string, number>;
  try {
    r = await parsed;
  } finally {
    await stopChild(child, 5_000);
  }
  const requests = r.requests!;
  const elapsed = r.duration_us! / 1e6;
  const statusErrors = r.status!;
  return {
    tool: 'wrk',
    requests,
    seconds: elapsed,
    rps: requests / elapsed,
    p50Ms: r.p50_us! / 1000,
    p90Ms: r.p90_us! / 1000,
    p99Ms: r.p99_us! / 1000,
    errors: r.connect! + r.read! + r.write! + r.timeout!,
    unexpected: expectStatus >= 400 ? requests - statusErrors : statusErrors,
  };
}

/** A pinned Node child that prints one {"msg":"result",…} line. */
async function nodeChild(name: string, arg: unknown, tools: LoadTools, timeoutSec: number): Promise<Record<string, unknown>> {
  const child = spawnChild({ name, command: process.execPath, args: [childScript(name), JSON.stringify(arg)], cpu: tools.cpu, taskset: tools.taskset });
  try {
    return await waitForLine(child, (l) => (jsonLine(l)?.msg === 'result' ? jsonLine(l) : undefined), timeoutSec * 1000);
  } finally {
    await stopChild(child, 5_000);
  }
}

/** autocannon-child or undici-load-child: the same result line. */
async function runNodeLoad(tool: 'autocannon' | 'undici', spec: LoadSpec, expectStatus: number, tools: LoadTools): Promise<LoadResult> {
  const r = await nodeChild(tool === 'autocannon' ? 'autocannon-child' : 'undici-load-child', spec, tools, spec.durationSec + 30);
  const requests = r.requests as number;
  const seconds = r.seconds as number;
  const statuses = r.statuses as Record<string, number>;
  const expected = statuses[String(expectStatus)] ?? 0;
  return {
    tool,
    requests,
    seconds,
    rps: requests / seconds,
    p50Ms: r.p50Ms as number,
    p90Ms: r.p90Ms as number,
    p99Ms: r.p99Ms as number,
    errors: r.errors as number,
    unexpected: Object.values(statuses).reduce((a, b) => a + b, 0) - expected,
    ...(typeof r.loadCpu === 'number' ? { loadCpu: r.loadCpu } : {}),
  };
}

/** The first-request probe: for each new host, a fresh tunnel's first request and a second on it; between them, a fresh tunnel to a known host. */
export interface FirstRequestSpec {
  mode: 'first';
  proxy: string;
  caFile: string;
  headers: Record<string, string>;
  /** One URL per host never requested before. */
  newUrls: string[];
  /** A URL on a host the load rounds already used (certificate minted, name resolved, upstream connections pooled). */
  knownUrl: string;
}

/** Milliseconds per host, in order. */
export interface FirstRequestTimes {
  newHostMs: number[];
  newTunnelMs: number[];
  warmMs: number[];
  /** Responses that were not the expected status, and failed requests. */
  unexpected: number;
  errors: number;
}

export async function runFirstRequests(spec: FirstRequestSpec, expectStatus: number, tools: LoadTools): Promise<FirstRequestTimes> {
  const r = await nodeChild('undici-load-child', spec, tools, 60 + spec.newUrls.length * 10);
  const statuses = r.statuses as Record<string, number>;
  const total = Object.values(statuses).reduce((a, b) => a + b, 0);
  return {
    newHostMs: r.newHostMs as number[],
    newTunnelMs: r.newTunnelMs as number[],
    warmMs: r.warmMs as number[],
    unexpected: total - (statuses[String(expectStatus)] ?? 0),
    errors: r.errors as number,
  };
}

export interface BigPutResult {
  seconds: number;
  bytes: number;
  status: number;
}

/** One streaming upload of `bytes` generated bytes (never held in memory), from a pinned child. */
export async function runBigPut(
  url: string,
  bytes: number,
  framing: 'length' | 'chunked',
  headers: Record<string, string>,
  tools: LoadTools,
  timeoutSec: number,
): Promise<BigPutResult> {
  const r = await nodeChild('big-put-child', { url, bytes, framing, headers, timeoutSec }, tools, timeoutSec + 10);
  if (typeof r.error === 'string') throw new Error(`1 GiB PUT to ${url} failed: ${r.error}`);
  return { seconds: r.seconds as number, bytes: r.bytes as number, status: r.status as number };
}
