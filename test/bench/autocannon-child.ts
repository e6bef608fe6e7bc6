// Load from autocannon, in its own process so it can be pinned to the load
// CPU like wrk. Run as a child: node autocannon-child.js '<LoadSpec JSON>'
// Prints one JSON line: {"msg":"result", ...}.
import autocannon from 'autocannon';
import { LatencySamples } from './latency.js';
import type { LoadSpec } from './load.js';

const spec = JSON.parse(process.argv[2] ?? '{}') as LoadSpec;

const samples = new LatencySamples();
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
  samples.add(responseTime);
});
const result = await instance;
console.log(
  JSON.stringify({
    msg: 'result',
    requests: result.requests.total,
    seconds: result.duration,
    ...samples.percentiles(),
    errors: result.errors + result.timeouts,
    statuses,
  }),
);
