/**
 * Summarise a V8 .cpuprofile (node --cpu-prof): self time per function and
 * per area of the stack (Fastify, undici, our handler, decision log, metrics,
 * JSON, crypto, Node's HTTP), plus inclusive time of residency-proxy's own
 * functions. Pure: reads the JSON, touches nothing.
 */

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface FunctionTime {
  fn: string;
  where: string;
  category: string;
  ms: number;
  pct: number;
}

export interface ProfileSummary {
  /** The part of the profile summarised, ms after it started (null: all of it). */
  window: { fromMs: number; toMs: number } | null;
  /** Sampled time, ms (idle included). */
  totalMs: number;
  /** Sampled time the process was not idle, ms. */
  busyMs: number;
  /** Self time by area, share of busy time. */
  categories: { category: string; ms: number; pct: number }[];
  /** Top functions by self time. */
  topSelf: FunctionTime[];
  /** residency-proxy's own functions (dist/) by inclusive time. */
  topInclusiveOurs: FunctionTime[];
}

/** Which part of the stack a frame belongs to. Order matters: first match wins. */
const AREAS: { category: string; test: (url: string, fn: string) => boolean }[] = [
  { category: 'idle', test: (_u, fn) => fn === '(idle)' },
  { category: 'GC', test: (_u, fn) => fn === '(garbage collector)' },
  { category: 'V8/native (program)', test: (_u, fn) => fn === '(program)' || fn === '(root)' },
  { category: 'metrics (prom-client)', test: (u) => u.includes('/prom-client/') || u.includes('/tdigest/') || u.includes('/bintrees/') },
  { category: 'logging (pino)', test: (u) => u.includes('/pino/') || u.includes('/sonic-boom/') || u.includes('/pino-std-serializers/') },
  {
    category: 'Fastify (routing, hooks, reply)',
    test: (u) =>
      u.includes('/node_modules/fastify/') ||
      u.includes('/node_modules/@fastify/') ||
      u.includes('/find-my-way/') ||
      u.includes('/avvio/') ||
      u.includes('/light-my-request/') ||
      u.includes('/fast-querystring/') ||
      u.includes('/toad-cache/') ||
      u.includes('/fast-json-stringify/'),
  },
  // undici parses responses with llhttp compiled to WebAssembly (Node's own server uses native llhttp).
  { category: 'undici (upstream client)', test: (u) => u.includes('/undici/') || u.includes('internal/deps/undici') || u.startsWith('wasm://') },
  { category: 'decision log (dist/audit)', test: (u) => /\/dist\/audit\//.test(u) },
  { category: 'our handler (dist/proxy/handler, forward)', test: (u) => /\/dist\/proxy\/(handler|forward)\.js/.test(u) },
  { category: 'our plan/route/hygiene (dist/proxy)', test: (u) => /\/dist\/proxy\//.test(u) },
  { category: 'our policy + location', test: (u) => /\/dist\/(policy|location)\//.test(u) },
  { category: 'our other (dist/)', test: (u) => /\/dist\//.test(u) && !u.includes('/node_modules/') },
  { category: 'JSON', test: (u, fn) => u === '' && (fn === 'stringify' || fn === 'parse' || fn.startsWith('JSON')) },
  { category: 'crypto', test: (u, fn) => u.includes('crypto') || (u === '' && /hash|digest|randomUUID|Hash/.test(fn)) },
  { category: 'node http (server, parser, outgoing)', test: (u) => /node:(_http|http|internal\/http)/.test(u) },
  { category: 'AbortController/AbortSignal', test: (u) => u.includes('node:internal/abort_controller') },
  { category: 'start-up (module loading)', test: (u) => /node:internal\/modules\//.test(u) },
  { category: 'node streams + sockets', test: (u) => /node:(net|stream|internal\/streams|internal\/stream_base|internal\/net)/.test(u) },
  { category: 'node timers + async', test: (u) => /node:(internal\/timers|timers|internal\/process\/task_queues|internal\/async_hooks|events)/.test(u) },
  // On the request path only the decision log touches files.
  { category: 'fs calls (decision log: write, fdatasync, stat)', test: (u) => /node:(fs|internal\/fs)/.test(u) },
  { category: 'node other', test: (u) => u.startsWith('node:') },
  { category: 'native builtins (no script)', test: (u) => u === '' },
];

/** Native frames whose own name says where they belong; other natives count toward their JS caller's area. */
const NAMED_NATIVE = new Set(['(idle)', '(garbage collector)', '(program)', '(root)', 'stringify', 'parse', 'JSON.stringify', 'JSON.parse']);

export function categorise(url: string, fn: string): string {
  for (const a of AREAS) if (a.test(url, fn)) return a.category;
  return 'other JS';
}

/** A short location: path from node_modules/ or dist/ on, with the line. */
function shortWhere(frame: CallFrame): string {
  const { url, lineNumber } = frame;
  if (url === '') return '(native)';
  const nm = url.lastIndexOf('/node_modules/');
  const dist = url.lastIndexOf('/dist/');
  const path = nm >= 0 ? url.slice(nm + 14) : dist >= 0 ? url.slice(dist + 1) : url.replace(/^file:\/\//, '');
  return `${path}:${lineNumber + 1}`;
}

/**
 * `window`: only samples this many ms after the profile started (process
 * start-up, module loading and warm-up left out: the steady state is what a
 * long-running proxy pays).
 */
export function summariseProfile(profile: CpuProfile, top = 25, window: { fromMs: number; toMs: number } | null = null): ProfileSummary {
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of profile.nodes) byId.set(n.id, n);
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  const keyOf = (n: ProfileNode) => `${n.callFrame.functionName || '(anonymous)'}\u0000${shortWhere(n.callFrame)}`;
  /** The frame whose area a sample's self time counts toward: itself, or for a native builtin its nearest JS caller. */
  const areaFrame = (id: number): ProfileNode => {
    const node = byId.get(id)!;
    if (node.callFrame.url !== '' || NAMED_NATIVE.has(node.callFrame.functionName) || /hash|digest|randomUUID/i.test(node.callFrame.functionName)) return node;
    for (let cur = parent.get(id); cur !== undefined; cur = parent.get(cur)) {
      const p = byId.get(cur)!;
      if (p.callFrame.url !== '') return p;
    }
    return node;
  };
  const areaOf = (id: number) => {
    const f = areaFrame(id).callFrame;
    return categorise(f.url, f.functionName);
  };
  const areas = new Map<string, number>();
  /** Native functions: where they were called from, for the top list. */
  const callerOf = new Map<string, string>();
  const self = new Map<string, { node: ProfileNode; us: number }>();
  const inclusive = new Map<string, { node: ProfileNode; us: number }>();
  let total = 0;
  let idle = 0;

  let clock = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    const dt = Math.max(0, profile.timeDeltas[i] ?? 0);
    clock += profile.timeDeltas[i] ?? 0;
    const at = (clock - profile.startTime) / 1000;
    if (window !== null && (at < window.fromMs || at > window.toMs)) continue;
    const node = byId.get(id);
    if (!node) continue;
    total += dt;
    if (node.callFrame.functionName === '(idle)') {
      idle += dt;
      continue;
    }
    const key = keyOf(node);
    const s = self.get(key) ?? { node, us: 0 };
    s.us += dt;
    self.set(key, s);
    const area = areaOf(id);
    areas.set(area, (areas.get(area) ?? 0) + dt);
    if (node.callFrame.url === '' && !callerOf.has(key)) {
      const caller = areaFrame(id);
      if (caller !== node) callerOf.set(key, `${caller.callFrame.functionName || '(anonymous)'} ${shortWhere(caller.callFrame)}`);
    }
    // Inclusive: every distinct function on the stack (recursion counted once).
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const n = byId.get(cur)!;
      const k = keyOf(n);
      if (seen.has(k)) continue;
      seen.add(k);
      const e = inclusive.get(k) ?? { node: n, us: 0 };
      e.us += dt;
      inclusive.set(k, e);
    }
  }
  const busy = total - idle;
  const pct = (us: number) => (busy > 0 ? (100 * us) / busy : 0);
  const row = ({ node, us }: { node: ProfileNode; us: number }): FunctionTime => {
    const key = keyOf(node);
    const caller = callerOf.get(key);
    return {
      fn: node.callFrame.functionName || '(anonymous)',
      where: caller ? `(native) ← ${caller}` : shortWhere(node.callFrame),
      category: areaOf(node.id),
      ms: us / 1000,
      pct: pct(us),
    };
  };

  return {
    window,
    totalMs: total / 1000,
    busyMs: busy / 1000,
    categories: [...areas.entries()].map(([category, us]) => ({ category, ms: us / 1000, pct: pct(us) })).sort((a, b) => b.ms - a.ms),
    topSelf: [...self.values()].sort((a, b) => b.us - a.us).slice(0, top).map(row),
    topInclusiveOurs: [...inclusive.values()]
      .filter((e) => /\/dist\//.test(e.node.callFrame.url) && !e.node.callFrame.url.includes('/node_modules/') && !e.node.callFrame.url.includes('dist-bench'))
      .sort((a, b) => b.us - a.us)
      .slice(0, 15)
      .map(row),
  };
}
