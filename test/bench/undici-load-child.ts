// Closed-loop load from undici, in its own process pinned to the load CPU
// like wrk: the one load tool here that speaks CONNECT (ProxyAgent,
// keep-alive tunnels), used for the whole intercepted-HTTPS comparison
// (plain HTTP, HTTPS, through a forward proxy) so its ratios compare one
// client with itself. Run as a child: node undici-load-child.js '<JSON>'
//   a LoadSpec: `connections` workers, each sending its next request when
//     the last one is answered, for `durationSec`;
//   a FirstRequestSpec ({"mode":"first",…}): the first-request probe.
// Prints one JSON line: {"msg":"result", ...}.
import { readFileSync } from 'node:fs';
import { Agent, ProxyAgent, type Dispatcher } from 'undici';
import { LatencySamples } from './latency.js';
import type { FirstRequestSpec, LoadSpec } from './load.js';

const spec = JSON.parse(process.argv[2] ?? '{}') as LoadSpec | FirstRequestSpec;
const ca = spec.caFile === undefined ? undefined : readFileSync(spec.caFile, 'utf8');
const statuses: Record<string, number> = {};
let errors = 0;

/** One dispatcher: `connections` keep-alive connections (through a proxy: tunnels) per origin. */
function dispatcher(connections: number): Dispatcher {
  const options = { connections, headersTimeout: 10_000, bodyTimeout: 10_000 };
  if (spec.proxy !== undefined) return new ProxyAgent({ ...options, uri: spec.proxy, ...(ca ? { requestTls: { ca } } : {}) });
  return new Agent({ ...options, ...(ca ? { connect: { ca } } : {}) });
}

/** One request, answered and read to the end: its time in ms, or null when it failed. */
async function send(d: Dispatcher, url: URL, method: 'GET' | 'PUT', headers: Record<string, string>, body: Buffer | null): Promise<number | null> {
  const started = performance.now();
  try {
    // A copy: ProxyAgent writes the origin's Host into the object it is given.
    const res = await d.request({ origin: url.origin, path: url.pathname, method, headers: { ...headers }, body });
    await res.body.dump();
    statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1;
    return performance.now() - started;
  } catch {
    errors++;
    return null;
  }
}

async function load(s: LoadSpec): Promise<Record<string, unknown>> {
  const url = new URL(s.url);
  const body = s.bodyBytes > 0 ? Buffer.alloc(s.bodyBytes, 0x78) : null;
  const d = dispatcher(s.connections);
  // Open every connection (and tunnel) before the clock starts, as a running
  // client has them: the first-request probe measures what opening costs.
  await Promise.all(Array.from({ length: s.connections }, () => send(d, url, s.method, s.headers, body)));
  for (const k of Object.keys(statuses)) delete statuses[k];
  errors = 0;
  const samples = new LatencySamples();
  const cpu = process.cpuUsage();
  const started = performance.now();
  const deadline = started + s.durationSec * 1000;
  const worker = async () => {
    while (performance.now() < deadline) {
      const ms = await send(d, url, s.method, s.headers, body);
      if (ms !== null) samples.add(ms);
    }
  };
  await Promise.all(Array.from({ length: s.connections }, worker));
  const seconds = (performance.now() - started) / 1000;
  const used = process.cpuUsage(cpu);
  await d.close();
  const requests = Object.values(statuses).reduce((a, b) => a + b, 0);
  return { requests, seconds, ...samples.percentiles(), errors, statuses, loadCpu: (used.user + used.system) / 1e6 / seconds };
}

async function first(s: FirstRequestSpec): Promise<Record<string, unknown>> {
  const known = new URL(s.knownUrl);
  /** A fresh dispatcher (one new tunnel) for each call: the time of its first request, and of each later one. */
  const fresh = async (url: URL, requests: number): Promise<(number | null)[]> => {
    const d = dispatcher(1);
    const times: (number | null)[] = [];
    for (let i = 0; i < requests; i++) times.push(await send(d, url, 'GET', s.headers, null));
    await d.close();
    return times;
  };
  // Untimed: the client's own code paths (TLS, undici) warm up on a host the proxy knows.
  for (let i = 0; i < 3; i++) await fresh(known, 2);
  for (const k of Object.keys(statuses)) delete statuses[k];
  errors = 0;
  const newHostMs: number[] = [];
  const warmMs: number[] = [];
  const newTunnelMs: number[] = [];
  for (const u of s.newUrls) {
    const [firstMs = null, secondMs = null] = await fresh(new URL(u), 2);
    const [knownMs = null] = await fresh(known, 1);
    if (firstMs !== null) newHostMs.push(firstMs);
    if (secondMs !== null) warmMs.push(secondMs);
    if (knownMs !== null) newTunnelMs.push(knownMs);
  }
  return { newHostMs, newTunnelMs, warmMs, errors, statuses };
}

const result = 'mode' in spec ? await first(spec) : await load(spec);
console.log(JSON.stringify({ msg: 'result', ...result }));
