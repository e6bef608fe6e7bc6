// Load from autocannon, in its own process so it can be pinned to the load
// CPU like wrk. Run as a child: node autocannon-child.js '<LoadSpec JSON>'
// Prints one JSON line: {"msg":"result", ...}.
import autocannon from 'autocannon';
import type { LoadSpec } from './load.js';

const spec = JSON.parse(process.argv[2] ?? '{}') as LoadSpec;

// autocannon's own histogram has 1 ms resolution; keep exact response times
// (bounded: past the cap every other sample is dropped, so memory stays flat).
const CAP = 1 << 20;
let samples = new Float64Array(CAP);
let count = 0;
let stride = 1;
let seen = 0;
const statuses: Record<string, number> = {};

const instance = autocannon({
  url: spec.url,
  method: spec.method,
  headers: spec.headers,
  ...(spec.bodyBytes > 0 ? { body: Buffer.alloc(spec.bodyBytes, 0x78) } : {}),
  connections: spec.connections,
  duration: spec.durationSec,
  timeout: 10,
  ...(spec.rate !== undefined ? { overallRate: spec.rate } : {}),
});
instance.on('response', (_client: unknown, statusCode: number, _bytes: number, responseTime: number) => {
  statuses[statusCode] = (statuses[statusCode] ?? 0) + 1;
  if (seen++ % stride !== 0) return;
  if (count === CAP) {
    // Halve the kept samples and the sampling rate.
    const kept = new Float64Array(CAP);
    for (let i = 0; i < CAP / 2; i++) kept[i] = samples[i * 2]!;
    samples = kept;
    count = CAP / 2;
    stride *= 2;
  }
  samples[count++] = responseTime;
});
const result = await instance;
const sorted = samples.subarray(0, count).sort();
const pct = (p: number) => (count === 0 ? 0 : sorted[Math.min(count - 1, Math.floor((p / 100) * count))]!);
console.log(
  JSON.stringify({
    msg: 'result',
    requests: result.requests.total,
    seconds: result.duration,
    p50Ms: pct(50),
    p90Ms: pct(90),
    p99Ms: pct(99),
    errors: result.errors + result.timeouts,
    statuses,
  }),
);
