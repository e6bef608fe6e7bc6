import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { GENESIS_HASH } from '../../src/audit/canonical.js';
import type { DecisionEntry } from '../../src/audit/record.js';
import { sealEntry } from '../../src/audit/serialise.js';
import { createDecisionLog } from '../../src/audit/writer.js';
import { buildPlanner, parseConfigText } from '../../src/load.js';
import { GeoIp } from '../../src/location/geoip.js';
import { NetworkLocator } from '../../src/location/network-locator.js';
import { SiteNetworks } from '../../src/location/networks.js';
import { parseS3Host } from '../../src/location/request/s3-host.js';
import { PinningResolver } from '../../src/location/resolver.js';
import { compilePolicy, decide, type RequestFacts } from '../../src/policy/engine.js';
import { buildConfig, schemaDefault, SETTINGS, type ProxySetting } from './settings.js';

/**
 * The hot-path pieces measured alone, shared by the harness (tinybench, in
 * `npm run bench`) and `npx vitest bench test/bench/micro.bench.ts`.
 * Each case runs its body `inner` times per sample, so the harness's
 * per-sample cost does not swamp a sub-microsecond operation.
 */
export interface MicroCase {
  readonly name: string;
  /** The budget per operation, ns: a goal in the report's targets. */
  readonly targetNs?: number;
  readonly inner: number;
  readonly fn: () => void;
}

/**
 * Results go somewhere, so the JIT cannot drop the calls (exported: a value
 * other modules could read is one it cannot prove dead).
 * @public
 */
export let sink: unknown;

function settingNamed(name: string): ProxySetting {
  const s = SETTINGS.find((x) => x.name === name);
  if (!s) throw new Error(`no setting ${name}`);
  return s;
}

/** The benchmark's own configs, as the proxy loads them. */
function loadSetting(name: string) {
  const built = buildConfig(settingNamed(name), { upstreamUrl: 'http://127.0.0.1:9', dir: tmpdir() });
  const config = parseConfigText(stringify(built.doc), `${name}.yaml`);
  const shadowDoc = built.files['shadow.yaml'];
  const shadow = shadowDoc ? parseConfigText(stringify(shadowDoc), 'shadow.yaml') : null;
  return { config, shadow };
}

/** A record as the handler fills it for an allowed small PUT. */
export function sampleEntry(): DecisionEntry {
  return {
    ts: new Date().toISOString(),
    id: randomUUID(),
    policy: 'f'.repeat(64),
    upstream: 's3-us',
    method: 'PUT',
    path: '/bench-bucket/small.bin',
    bucket: 'bench-bucket',
    operation: 'write',
    target: { host: '127.0.0.1:9000', address: '127.0.0.1' },
    location: {
      jurisdictions: ['US'],
      region: 'us-east-1',
      signals: [
        { source: 'declared', value: 'us-east-1', jurisdiction: 'US', region: 'us-east-1' },
        { source: 'network:site', value: '127.0.0.0/8', jurisdiction: 'US' },
      ],
    },
    rule: 'bench-writes',
    mode: 'enforce',
    decision: 'allow',
    effective: 'forwarded',
    reason: 'jurisdiction_allowed',
    status: 200,
    bytes_in: 128,
    bytes_out: 3,
    duration_ms: 0.412,
    client: '127.0.0.1',
  };
}

export interface MicroSetup {
  cases: MicroCase[];
  close(): Promise<void>;
}

export async function microCases(): Promise<MicroSetup> {
  const full = loadSetting('enforce-full');
  const declared = loadSetting('enforce-declared');

  const policy = compilePolicy(full.config);
  const facts: RequestFacts = { upstream: 's3-us', operation: 'write', method: 'PUT', path: '/bench-bucket/small.bin', bucket: 'bench-bucket' };
  const now = Date.now();
  const declaredPlanner = buildPlanner(declared.config);
  const fullPlanner = buildPlanner(full.config, full.shadow);
  const put = { method: 'PUT', target: '/us/bench-bucket/small.bin', host: '127.0.0.1:8080' };

  const geoip = await GeoIp.open();
  const resolver = new PinningResolver();
  // The same site network the enforce-full setting configures; an IP-literal host resolves without a query.
  const sites = SiteNetworks.fromConfig(full.config.networks ?? { '127.0.0.0/8': 'US' });
  const locator = new NetworkLocator({ resolver, sites, geoip });
  await locator.ready('127.0.0.1');
  if (locator.locate('127.0.0.1') === 'pending') throw new Error('network locator: 127.0.0.1 still pending after ready()');

  const entry = sampleEntry();
  const chain = { v: 1, seq: 1, replica: 'bench', prev: GENESIS_HASH };
  const N = 1000;
  const loop = (body: () => unknown) => () => {
    for (let i = 0; i < N; i++) sink = body();
  };
  const loop100 = (body: () => unknown) => {
    for (let i = 0; i < 100; i++) sink = body();
  };
  const cases: MicroCase[] = [
    { name: 'policy decide (3 rules + exception)', targetNs: 1_000, inner: N, fn: loop(() => decide(policy, facts, ['US'], now)) },
    { name: 'Planner.plan small PUT (declared)', inner: N, fn: loop(() => declaredPlanner.plan(put)) },
    { name: 'Planner.plan small PUT (full policy + shadow)', inner: N, fn: loop(() => fullPlanner.plan(put)) },
    { name: 'parseS3Host virtual-hosted', inner: N, fn: loop(() => parseS3Host('bench-bucket.s3.eu-west-1.amazonaws.com')) },
    { name: 'cached network location (NetworkLocator.locate, warm)', targetNs: 2_000, inner: N, fn: loop(() => locator.locate('127.0.0.1')) },
    { name: 'decision record serialise + SHA-256 (sealEntry)', targetNs: 5_000, inner: 100, fn: () => loop100(() => sealEntry(entry, chain)) },
  ];
  return {
    cases,
    async close() {
      resolver.close();
      geoip.close();
    },
  };
}

export interface LogThroughput {
  fsync: boolean;
  flushMs: number | null;
  records: number;
  seconds: number;
  perSecond: number;
  concurrency: number;
}

/**
 * The durable decision log alone: `concurrency` writers (requests in
 * flight) each awaiting its record's group commit, for `seconds`.
 */
export async function decisionLogThroughput(options: { fsync: boolean; seconds: number; concurrency: number; dir?: string }): Promise<LogThroughput> {
  const dir = mkdtempSync(join(options.dir ?? tmpdir(), 'residency-bench-log-'));
  // The group-commit window a config gets by default.
  const flushMs = schemaDefault('decision_log.flush_ms');
  const log = createDecisionLog({ path: join(dir, 'decisions.log'), replica: 'bench', fsync: options.fsync, ...(typeof flushMs === 'number' ? { flushMs } : {}) });
  let records = 0;
  const started = performance.now();
  const deadline = started + options.seconds * 1000;
  const writer = async () => {
    while (performance.now() < deadline) {
      await log.write(sampleEntry());
      records++;
    }
  };
  try {
    await Promise.all(Array.from({ length: options.concurrency }, writer));
  } finally {
    await log.close();
    rmSync(dir, { recursive: true, force: true });
  }
  const seconds = (performance.now() - started) / 1000;
  return { fsync: options.fsync, flushMs: typeof flushMs === 'number' ? flushMs : null, records, seconds, perSecond: records / seconds, concurrency: options.concurrency };
}
