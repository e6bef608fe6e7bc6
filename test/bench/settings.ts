import { join } from 'node:path';
import { ConfigSchema } from '../../src/config/schema.js';

/**
 * The residency-proxy settings the benchmark compares, built from feature
 * pieces. A feature names the config keys it needs; one whose keys the
 * schema does not have (yet) is skipped and reported, so the table keeps
 * running while location and logging features land. To measure a new
 * feature: add it to FEATURES and to the settings that should have it.
 */

/** A config document as YAML would hold it. */
export type ConfigDoc = Record<string, unknown>;

export interface ConfigContext {
  /** http://127.0.0.1:PORT of the benchmark upstream. */
  upstreamUrl: string;
  /** This proxy's own scratch folder (decision log, extra policy files). */
  dir: string;
  /** The intercepted-HTTPS setting only: its CA files and the bench DNS server (upstreamUrl is then the TLS upstream). */
  interception?: InterceptionContext;
}

export interface InterceptionContext {
  /** The operator CA the proxy mints tunnel certificates from (PEM files). */
  operatorCertFile: string;
  operatorKeyFile: string;
  /** The CA the TLS upstream's certificate chains to (the upstreams' ca_file). */
  storageCaFile: string;
  /** 'ip:port' of the DNS server that sends the bucket host names to loopback. */
  dnsServer: string;
}

export interface Feature {
  readonly name: string;
  /** What it turns on, for the report. */
  readonly summary: string;
  /** Dotted schema paths that must exist for the feature to apply. */
  readonly needs: readonly string[];
  apply(doc: ConfigDoc, ctx: ConfigContext): void;
  /** Extra files next to the config (a shadow policy), relative names. */
  files?(doc: ConfigDoc, ctx: ConfigContext): Record<string, ConfigDoc>;
  /** Environment the proxy needs for it (secrets are named by variable in the config, never written there). */
  env?: Record<string, string>;
}

/**
 * The Node flags residency-proxy is shipped to run with: `npm start` and the
 * container image's ENTRYPOINT spell them out (a unit test holds the three to
 * the same list), and the benchmark starts the proxy with them, as deployed.
 * A request's objects live until its decision is durable, a few ms under
 * load, so many are still alive at each young-generation scavenge; doubling
 * Node's 16 MiB semi-space halves the scavenges (+8 % on small PUTs, median
 * of 12 alternating pairs; about 40 MiB more peak RSS). `bare` runs with
 * Node's defaults: it gains about 3 % from the same flag.
 */
export const PRODUCT_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=32'];

/** Where the benchmark's requests go: one upstream declared in the US (allowed), one in eu-west-1 (refused under enforce). */
export const PATHS = {
  allowed: '/us/bench-bucket',
  refused: '/eu/bench-bucket',
} as const;

/** The allowed bucket as an S3 client names it through a forward proxy (virtual-hosted, us-east-1). */
export const TUNNEL_HOST = 'bench-bucket.s3.us-east-1.amazonaws.com';

/** Buckets seen once each, for the cost of the first request to a new host (resolved to loopback, on the TLS upstream's certificate). */
export const NEW_HOSTS: readonly string[] = Array.from({ length: 20 }, (_, i) => `new-host-${String(i + 1).padStart(2, '0')}.s3.us-east-1.amazonaws.com`);

const section = (doc: ConfigDoc, key: string): Record<string, unknown> => {
  const current = doc[key];
  if (typeof current === 'object' && current !== null && !Array.isArray(current)) return current as Record<string, unknown>;
  const fresh: Record<string, unknown> = {};
  doc[key] = fresh;
  return fresh;
};

export const FEATURES = {
  base: {
    name: 'base',
    summary: 'two S3 upstreams declared us-east-1 and eu-west-1, default allow [US]',
    needs: ['listen', 'admin', 'upstreams', 'log_level'],
    apply(doc, ctx) {
      doc.listen = { host: '127.0.0.1', port: 0 };
      doc.admin = { host: '127.0.0.1', port: 0 };
      // info: the "listening" line the harness waits for; no per-request logs at any level.
      doc.log_level = 'info';
      doc.allowed_jurisdictions = ['US'];
      doc.upstreams = [
        { name: 's3-us', url: ctx.upstreamUrl, provider: 's3', route: { path_prefix: '/us', strip_prefix: true }, region: 'us-east-1' },
        { name: 's3-eu', url: ctx.upstreamUrl, provider: 's3', route: { path_prefix: '/eu', strip_prefix: true }, region: 'eu-west-1' },
      ];
    },
  },
  monitor: {
    name: 'monitor',
    summary: 'mode monitor',
    needs: ['mode'],
    apply(doc) {
      doc.mode = 'monitor';
    },
  },
  enforce: {
    name: 'enforce',
    summary: 'mode enforce',
    needs: ['mode'],
    apply(doc) {
      doc.mode = 'enforce';
    },
  },
  stdoutLog: {
    name: 'stdout-log',
    summary: 'decision log on stdout (chained records, no fsync; the harness discards them)',
    needs: ['decision_log.path'],
    apply(doc) {
      section(doc, 'decision_log').path = '-';
    },
  },
  durableLog: {
    name: 'durable-log',
    summary: 'durable decision log: file, fdatasync per group commit (the default flush_ms window)',
    needs: ['decision_log.path', 'decision_log.fsync'],
    apply(doc, ctx) {
      // flush_ms stays at the product's default: the benchmark measures what a deployment gets.
      Object.assign(section(doc, 'decision_log'), { path: join(ctx.dir, 'decisions.log'), fsync: true });
    },
  },
  fileLogNoFsync: {
    name: 'file-log-no-fsync',
    summary: 'the same decision log file without fdatasync: the baseline for the durable log, which must cost at most 10% of its throughput',
    needs: ['decision_log.path', 'decision_log.fsync'],
    apply(doc, ctx) {
      Object.assign(section(doc, 'decision_log'), { path: join(ctx.dir, 'decisions.log'), fsync: false });
    },
  },
  rules: {
    name: 'rules',
    summary: 'three rules with path globs (the match is the last one) and an unexpired exception',
    needs: ['rules', 'exceptions'],
    apply(doc) {
      doc.rules = [
        { name: 'logs-eu-ok', match: { operations: ['write'], paths: ['/logs/**'] }, allow_jurisdictions: ['US', 'IE', 'DE'] },
        { name: 'tmp-monitor', match: { upstreams: ['s3-eu'], paths: ['/scratch/**'] }, mode: 'monitor' },
        { name: 'bench-writes', match: { upstreams: ['s3-us', 's3-eu'], operations: ['write'] }, allow_jurisdictions: ['US'] },
      ];
      doc.exceptions = [
        {
          name: 'legacy-archive',
          match: { upstreams: ['s3-eu'], buckets: ['legacy-archive'] },
          action: 'allow',
          expires: '2099-12-31T23:59:59Z',
          ticket: 'BENCH-1',
          reason: 'benchmark: an exception that is checked on every write but never matches',
        },
      ];
    },
  },
  declaredOnly: {
    name: 'declared-only',
    summary: 'network location off (declared locations only)',
    needs: ['location.network'],
    apply(doc) {
      section(doc, 'location').network = false;
    },
  },
  networks: {
    name: 'networks',
    summary: 'site network 127.0.0.0/8 → US',
    needs: ['networks'],
    apply(doc) {
      doc.networks = { '127.0.0.0/8': 'US' };
    },
  },
  networkLocation: {
    name: 'network-location',
    summary: 'network location on: pinned address, site networks, GeoIP (bundled database); every request after the first is a warm cache hit',
    needs: ['location.network', 'location.geoip'],
    apply(doc) {
      // watch off: a file watcher is not per-request work, and the bundled database never changes.
      Object.assign(section(doc, 'location'), { network: true, geoip: { enabled: true, watch: false } });
    },
  },
  requestSignals: {
    name: 'request-signals',
    summary: 'request signals on (Host name, SigV4 credential scope and principal)',
    needs: ['upstreams.request_signals'],
    apply(doc) {
      for (const u of doc.upstreams as Record<string, unknown>[]) u.request_signals = true;
    },
  },
  clientHash: {
    name: 'client-hash',
    summary: 'client addresses recorded as HMAC-SHA-256',
    needs: ['decision_log.client_address', 'decision_log.client_salt_env'],
    apply(doc) {
      Object.assign(section(doc, 'decision_log'), { client_address: 'hash', client_salt_env: 'RESIDENCY_BENCH_CLIENT_SALT' });
    },
    env: { RESIDENCY_BENCH_CLIENT_SALT: 'benchmark-salt-not-a-secret-0123456789abcdef' },
  },
  nodeFront: {
    name: 'node-front',
    summary: "the data plane on Node's server alone, without the Fastify front (to measure what Fastify costs)",
    needs: [],
    apply() {},
    env: { RESIDENCY_DATA_PLANE_FRONT: 'node' },
  },
  dns: {
    name: 'dns',
    summary: 'pinned DNS for upstream names (system resolver; the IP-literal upstream needs no query)',
    needs: ['dns'],
    apply(doc) {
      doc.dns = { min_ttl: 5, max_ttl: 300 };
    },
  },
  shadow: {
    name: 'shadow',
    summary: 'a shadow policy evaluated beside the active one',
    needs: ['shadow_policy'],
    apply(doc) {
      doc.shadow_policy = 'shadow.yaml';
    },
    files(doc) {
      // The same config with a wider allow-list: evaluated, never acted on.
      const { shadow_policy: _shadow, ...rest } = doc;
      return { 'shadow.yaml': { ...rest, allowed_jurisdictions: ['US', 'CA'] } };
    },
  },
  workers2: {
    name: 'workers-2',
    summary: 'two data-plane worker processes on the one listener (node:cluster), each with its own decision log',
    needs: ['workers'],
    apply(doc) {
      doc.workers = 2;
    },
  },
  forwardProxy: {
    name: 'forward-proxy',
    summary:
      "forward-proxy mode: CONNECT tunnels intercepted under certificates minted from a bench operator CA; each upstream becomes https://{host} for its region's S3 host names (the TLS upstream's private CA as ca_file, names resolved by a bench DNS server to loopback)",
    needs: ['forward_proxy.ca', 'upstreams.ca_file', 'dns.servers'],
    apply(doc, ctx) {
      const i = ctx.interception;
      if (i === undefined) throw new Error('forward-proxy: the TLS upstream, CA files and DNS server are missing from the context');
      doc.forward_proxy = { ca: { cert_file: i.operatorCertFile, key_file: i.operatorKeyFile } };
      // The same upstreams (names, regions: the rules still match them), reached by S3 host name over TLS instead of by path prefix.
      const port = new URL(ctx.upstreamUrl).port;
      for (const u of doc.upstreams as Record<string, unknown>[]) {
        Object.assign(u, { url: `https://{host}:${port}`, route: { host: `*.s3.${String(u.region)}.amazonaws.com` }, ca_file: i.storageCaFile });
      }
      section(doc, 'dns').servers = [i.dnsServer];
    },
  },
} satisfies Record<string, Feature>;

export interface ProxySetting {
  readonly name: string;
  readonly summary: string;
  readonly features: readonly Feature[];
  /** Writes to the eu-west-1 upstream are refused (so the refused-PUT scenario applies). */
  readonly enforce: boolean;
}

const F = FEATURES;

/** The residency-proxy settings, lightest first. */
export const SETTINGS: readonly ProxySetting[] = [
  {
    name: 'monitor',
    summary: 'monitor mode, declared locations, decision log on stdout',
    features: [F.base, F.monitor, F.declaredOnly, F.stdoutLog],
    enforce: false,
  },
  {
    name: 'enforce-declared',
    summary: 'enforce mode, declared locations, decision log on stdout',
    features: [F.base, F.enforce, F.declaredOnly, F.stdoutLog],
    enforce: true,
  },
  {
    name: 'enforce-log-fsync',
    summary: 'enforce mode, declared locations, durable decision log (fdatasync per group commit)',
    features: [F.base, F.enforce, F.declaredOnly, F.durableLog],
    enforce: true,
  },
  {
    name: 'enforce-log-nofsync',
    summary: 'as enforce-log-fsync, the same log file without fdatasync',
    features: [F.base, F.enforce, F.declaredOnly, F.fileLogNoFsync],
    enforce: true,
  },
  {
    name: 'enforce-full',
    summary:
      'everything on: enforce, rules + exception, shadow policy, network location (warm cache), request signals, durable fsync\'d decision log with group commit, hashed client addresses',
    features: [F.base, F.enforce, F.rules, F.shadow, F.networks, F.dns, F.networkLocation, F.requestSignals, F.durableLog, F.clientHash],
    enforce: true,
  },
  {
    name: 'enforce-full-nofsync',
    summary: 'enforce-full with its decision log file not synced: what durability costs with everything else on',
    features: [F.base, F.enforce, F.rules, F.shadow, F.networks, F.dns, F.networkLocation, F.requestSignals, F.fileLogNoFsync, F.clientHash],
    enforce: true,
  },
  {
    name: 'enforce-full-node-front',
    summary: "enforce-full with the data plane on Node's server alone (no Fastify front): the Fastify front's cost is enforce-full against this",
    features: [F.base, F.enforce, F.rules, F.shadow, F.networks, F.dns, F.networkLocation, F.requestSignals, F.durableLog, F.clientHash, F.nodeFront],
    enforce: true,
  },
  {
    name: 'enforce-full-workers2',
    summary:
      'enforce-full with workers: 2 (a primary and two worker processes sharing the listener). Pinned like every target: on a 2-CPU host both workers share the proxy CPU, so this measures the cluster\'s cost there, not its gain',
    features: [F.base, F.enforce, F.rules, F.shadow, F.networks, F.dns, F.networkLocation, F.requestSignals, F.durableLog, F.clientHash, F.workers2],
    enforce: true,
  },
];

const enforceFull = SETTINGS.find((s) => s.name === 'enforce-full')!;

/**
 * Intercepted HTTPS: enforce-full's policy, reached the way unmodified S3
 * clients reach real storage (HTTPS_PROXY: CONNECT, TLS to the proxy, TLS
 * from the proxy to the store). Compared with enforce-full over plain HTTP
 * because an S3 `{host}` upstream turns request signals on and resolves names
 * for network location, which enforce-full already does: the two differ only
 * by the tunnel and the two TLS legs. Not in SETTINGS: wrk cannot drive it.
 */
export const INTERCEPT: ProxySetting & { readonly plain: string } = {
  name: 'intercept-https',
  plain: enforceFull.name,
  summary: `${enforceFull.name}'s policy through intercepted CONNECT tunnels: TLS from the client to the proxy (minted certificate), TLS from the proxy to a TLS upstream`,
  features: [...enforceFull.features, F.forwardProxy],
  enforce: true,
};

/** A key's schema node, or undefined. */
function schemaNode(path: string): unknown {
  let node: unknown = ConfigSchema;
  for (const key of path.split('.')) {
    const n = node as { properties?: Record<string, unknown>; items?: { properties?: Record<string, unknown> } };
    const props = n.properties ?? n.items?.properties;
    if (props === undefined || !(key in props)) return undefined;
    node = props[key];
  }
  return node;
}

/** The schema's default for a key (what a config that leaves it out gets). */
export function schemaDefault(path: string): unknown {
  return (schemaNode(path) as { default?: unknown } | undefined)?.default;
}

/** Does the config schema have this dotted key path? (`upstreams.request_signals`: a key of each array item.) */
export function schemaHas(path: string): boolean {
  return schemaNode(path) !== undefined;
}

export interface BuiltConfig {
  doc: ConfigDoc;
  /** Other files to write next to the config. */
  files: Record<string, ConfigDoc>;
  applied: string[];
  /** Features left out because the schema lacks a key they need, with the key. */
  skipped: string[];
  /** The decision log goes to stdout (the harness points the child's stdout at /dev/null). */
  stdoutLog: boolean;
  env: Record<string, string>;
}

export function buildConfig(setting: ProxySetting, ctx: ConfigContext): BuiltConfig {
  const doc: ConfigDoc = {};
  const applied: string[] = [];
  const skipped: string[] = [];
  for (const feature of setting.features) {
    const missing = feature.needs.find((k) => !schemaHas(k));
    if (missing !== undefined) {
      skipped.push(`${feature.name} (no "${missing}" in the config schema)`);
      continue;
    }
    feature.apply(doc, ctx);
    applied.push(feature.name);
  }
  const files: Record<string, ConfigDoc> = {};
  for (const feature of setting.features) {
    if (applied.includes(feature.name) && feature.files) Object.assign(files, feature.files(doc, ctx));
  }
  const env: Record<string, string> = {};
  for (const feature of setting.features) if (applied.includes(feature.name)) Object.assign(env, feature.env ?? {});
  const log = doc.decision_log as { path?: string } | undefined;
  return { doc, files, applied, skipped, stdoutLog: log?.path === '-', env };
}
