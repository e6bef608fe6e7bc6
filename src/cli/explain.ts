import { readFileSync } from 'node:fs';
import { buildPlanner } from '../load.js';
import type { NetworkLocation } from '../location/network-locator.js';
import { networkLocationSettings } from '../location/network-config.js';
import type { Signal } from '../location/signals.js';
import { bodySignals } from '../plan/bodies.js';
import type { Found, Plan, Planner, Prepared } from '../plan/plan.js';
import { parse, UsageError, withUsage } from './args.js';
import { loadOrReport } from './config-file.js';

const USAGE = `Usage: residency-proxy explain --config FILE METHOD URL [-H 'K: V']… [--body FILE] [--offline] [--format json|text]

Prints the decision the proxy would take for the request, with every signal
and its source. No upstream or Redis is contacted. Network location is done
as the proxy does it: the upstream's host is resolved once (through
dns.servers, else the system resolver) and the chain is shown: host →
addresses → each address's signals (site networks, cloud ranges, GeoIP) →
decision. URL is absolute (http://host:port/path) or a path with
-H 'Host: …'. Headers that carry location (Authorization, X-Amz-Region-Set,
…) are read like the proxy reads them, and never printed.

--offline     no DNS query and no network location: the decision is shown
              on the declared and request signals only.

--body FILE   the body the proxy reads before deciding: a bucket-creating
              request's (S3 CreateBucket, Cloud Storage bucket insert), or one
              that names other destinations (S3 replication, inventory,
              logging, analytics, metadata table, restore output; Cloud
              Storage compose, relocate, batch); without it the body is taken
              as empty.

The output names the provider's reading: where the storage service takes
the bucket from (the Host it receives, or the path), every destination the
request writes to besides its own target, and each signal with whether it
could be placed (an unplaced one makes the location unknown).

What the proxy would look up at request time (a bucket's region, the
location an upload started with) is listed under "lookups"; the decision
shown is taken without it.`;

export function explainCommand(args: string[]): Promise<number> {
  return withUsage(USAGE, async () => {
    const { values, positionals } = parse(
      args,
      {
        config: { type: 'string', short: 'c' },
        header: { type: 'string', short: 'H', multiple: true },
        format: { type: 'string', default: 'json' },
        body: { type: 'string' },
        offline: { type: 'boolean', default: false },
      },
      true,
    );
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    if (!values.config) throw new UsageError('explain needs --config FILE');
    const [method, url] = positionals;
    if (!method || !url) throw new UsageError('explain needs METHOD and URL');
    if (values.format !== 'json' && values.format !== 'text') throw new UsageError('--format is json or text');

    const headers = new Map<string, string>();
    for (const h of values.header ?? []) {
      const colon = h.indexOf(':');
      if (colon <= 0) throw new UsageError(`header "${h}" is not "Name: value"`);
      headers.set(h.slice(0, colon).trim().toLowerCase(), h.slice(colon + 1).trim());
    }
    let target = url;
    let host = headers.get('host');
    if (/^https?:\/\//i.test(url)) {
      const parsed = new URL(url);
      target = parsed.pathname + parsed.search;
      host ??= parsed.host;
    }
    if (!host) throw new UsageError('give an absolute URL or a Host header');

    let body: Buffer | null = null;
    if (values.body !== undefined) {
      try {
        body = readFileSync(values.body);
      } catch (err) {
        throw new UsageError(`--body ${values.body}: ${(err as Error).message}`);
      }
    }

    const config = loadOrReport(values.config);
    if (!config) return 1;
    const planner = buildPlanner(config);
    const upper = method.toUpperCase();
    const requestHeaders = Object.fromEntries(headers);
    const prepared = planner.prepare({ method: upper, target, host, headers: requestHeaders });
    let lookups: string[] = [];
    let chain: NetworkChain | string | null = null;
    if (prepared.kind === 'prepared') {
      const settings = networkLocationSettings(config);
      if (values.offline) chain = 'not located (--offline): the proxy also places the upstream address (DNS, site networks, cloud ranges, GeoIP)';
      else if (!settings.enabled) chain = 'off (location.network: false): declared and request signals only';
      else chain = await locateOnce(config, settings, prepared.route.hostname);
    }
    const network = typeof chain === 'object' && chain !== null ? chain.network : null;
    let plan: Plan = prepared.kind === 'reject' ? prepared : planner.finish(prepared, undefined, network);
    if (prepared.kind === 'prepared' && prepared.needs !== null) {
      const done = inspect(planner, prepared, body, requestHeaders);
      lookups = [...lookups, ...done.lookups];
      plan = done.reject ?? planner.finish(prepared, done.found, network);
    }
    const report = describe(plan, upper, host, target, planner.policy.hash, lookups, chain);
    console.log(values.format === 'json' ? JSON.stringify(report, null, 2) : asText(report));
    return 0;
  });
}

interface NetworkChain {
  readonly host: string;
  /** dns, system (getaddrinfo) or literal; null without an answer. */
  readonly source: string | null;
  readonly ttl: number | null;
  readonly error: string | null;
  readonly addresses: readonly { readonly address: string; readonly used: boolean; readonly signals: readonly Signal[] }[];
  /** The address the proxy would send to; null: none, so the location is unknown. */
  readonly address: string | null;
  readonly network: NetworkLocation;
}

/** Resolve the target host once and locate every address, as the proxy would (GeoIP and range files loaded, not watched). */
async function locateOnce(config: Parameters<typeof networkLocationSettings>[0], settings: ReturnType<typeof networkLocationSettings>, host: string): Promise<NetworkChain> {
  // Loaded only here: --offline and the other commands do not pay for GeoIP.
  const { LocationService } = await import('../location/service.js');
  const service = new LocationService({
    settings: { ...settings, geoip: settings.geoip === null ? null : { ...settings.geoip, watch: false } },
    networks: config.networks,
    hosts: [],
  });
  try {
    await service.start();
    const chain = await service.chain(host);
    return {
      host,
      source: chain.answer?.source ?? null,
      ttl: chain.answer === null || !Number.isFinite(chain.answer.ttl) ? null : chain.answer.ttl,
      error: chain.error,
      addresses: chain.addresses.map((a) => ({ ...a, used: a.address === chain.address })),
      address: chain.address,
      network: chain.network,
    };
  } finally {
    service.close();
  }
}

/**
 * The proxy's between-prepare-and-finish work, without I/O: the create-bucket
 * body from --body; everything else is only named.
 */
function inspect(planner: Planner, prepared: Prepared, body: Buffer | null, headers: Record<string, string>): { found: Found; lookups: string[]; reject?: Plan } {
  const needs = prepared.needs!;
  const lookups: string[] = [];
  const signals: Signal[] = [];
  const found: { signals?: Found['signals'] } = { signals };
  if (body === null && needs.createBucket !== undefined) lookups.push('create-bucket: no --body given, so the body was taken as empty (the provider default location)');
  if (body === null && needs.inspect !== undefined) lookups.push(`${needs.inspect.kind}: no --body given, so the body was taken as empty; the proxy reads it before deciding`);
  if (needs.createBucket !== undefined || needs.inspect !== undefined) {
    const upstream = prepared.route.upstream;
    const read = bodySignals(planner, prepared, needs, body ?? Buffer.alloc(0), headers);
    if ('kind' in read) return { found, lookups, reject: read };
    signals.push(...read.signals);
    for (const { bucket, fallback } of read.buckets) {
      if (planner.needsDiscovery(upstream, bucket)) lookups.push(`discovery: the proxy asks upstream ${upstream.name} where destination bucket ${bucket} is; not done here`);
      signals.push(...planner.destinationSignals(upstream, bucket, { fallback }));
    }
  }
  if (needs.discover !== undefined) {
    lookups.push(`discovery: the proxy asks upstream ${prepared.route.upstream.name} where bucket ${needs.discover} is (HEAD /${needs.discover}, cached); not done here`);
  }
  if (needs.upload !== undefined) {
    lookups.push(
      `${needs.upload.kind}: the proxy adds the location stored when the upload started (none stored, or stored for another bucket: unknown); shown here on the request's own location`,
    );
  }
  return { found, lookups };
}

type Report = ReturnType<typeof describe>;

function describe(plan: Plan, method: string, host: string, target: string, policy: string, lookups: readonly string[], chain: NetworkChain | string | null) {
  if (plan.kind === 'reject') {
    const path = target.split('?')[0]!;
    return { kind: 'reject' as const, request: { method, host, path }, outcome: { status: plan.status, code: plan.code, detail: plan.detail }, lookups, policy };
  }
  // A host with no address: a forwarded request is answered 502 and nothing is sent.
  const unresolved = typeof chain === 'object' && chain !== null && chain.address === null;
  const { route, decision, location } = plan;
  return {
    kind: 'decided' as const,
    request: {
      method,
      host,
      path: plan.path,
      // Parameter names only: values can carry signatures.
      query_parameters: plan.query === null ? [] : plan.query.split('&').map((p) => decodeURIComponent(p.split('=')[0] ?? '')),
    },
    route: {
      upstream: route.upstream.name,
      provider: route.upstream.provider,
      url: route.upstream.hostTemplate === null ? route.upstream.url.href : `${route.origin}${route.upstream.basePath}/`,
      forward_path: route.forwardPath,
    },
    operation: plan.operation,
    bucket: plan.bucket,
    // The provider's reading: where the bucket comes from, and every other bucket or place the request writes to.
    bucket_from: plan.bucketFrom,
    destinations: location.signals.filter((s) => s.source === 'destination').map((s) => ({ bucket: s.bucket ?? null, place: s.value, jurisdiction: s.jurisdiction })),
    ...(plan.body === null ? {} : { body: plan.body }),
    principal: plan.principal,
    principal_verified: plan.principalVerified,
    // host → addresses → each address's signals; null with --offline or location.network off.
    network:
      typeof chain !== 'object' || chain === null
        ? null
        : { host: chain.host, source: chain.source, ttl: chain.ttl, error: chain.error, address: chain.address, addresses: chain.addresses },
    ...(typeof chain === 'string' ? { network_note: chain } : {}),
    location: { jurisdictions: location.jurisdictions, region: location.region, unknown: location.unplaced === true || location.jurisdictions.length === 0, signals: location.signals },
    decision: {
      action: decision.action,
      effective: decision.effective,
      rule: decision.rule,
      mode: decision.mode,
      reason: decision.reason,
      status: decision.effective === 'refused' ? 403 : unresolved ? 502 : null,
      ...(decision.effective === 'forwarded' && unresolved ? { not_sent: 'upstream_unresolved' } : {}),
    },
    lookups,
    policy,
  };
}

function networkLines(n: Extract<Report, { kind: 'decided' }>['network']): string[] {
  if (n === null) return [];
  if (n.addresses.length === 0) return [`  network    → ${n.host} → no address (${n.error ?? 'no answer'}): the location is unknown and nothing would be sent`];
  const how = n.source === 'literal' ? 'an address' : `${n.source}${n.ttl === null ? '' : `, ttl ${n.ttl} s`}`;
  return [
    `  network    → ${n.host} → ${n.addresses.map((a) => a.address).join(', ')} (${how}); sends to ${n.address ?? 'nothing'}`,
    ...n.addresses.flatMap((a) => [
      `      ${a.address}${a.used ? ' (used)' : ''}:${a.signals.length === 0 ? ' no network signal' : ''}`,
      ...a.signals.map((s) => `        ${s.source}: ${s.value} → ${s.jurisdiction ?? 'unplaced'}`),
    ]),
  ];
}

function asText(r: Report): string {
  if (r.kind === 'reject') {
    return [
      `${r.request.method} ${r.request.host}${r.request.path}`,
      `  refused before any decision: ${r.outcome.status} ${r.outcome.code}: ${r.outcome.detail}`,
      ...r.lookups.map((l) => `  note: ${l}`),
    ].join('\n');
  }
  const lines = [
    `${r.request.method} ${r.request.host}${r.request.path}`,
    `  route      → upstream ${r.route.upstream} (${r.route.provider}) ${r.route.url} path ${r.route.forward_path}`,
    `  operation  → ${r.operation}${r.bucket ? ` on bucket ${r.bucket} (from the ${r.bucket_from === 'host' ? 'Host' : 'path'})` : ''}${r.principal ? ` by ${r.principal} (${r.principal_verified ? 'verified' : 'not verified: does not count'})` : ''}${'body' in r ? `; body: ${r.body === 'query' ? 'a query' : 'on a read, decided as a write'}` : ''}`,
    ...r.destinations.map((d) => `  writes to  → ${d.bucket === null ? '' : `bucket ${d.bucket} `}${d.place === 'unknown' ? 'at an unknown place' : `at ${d.place}`} → ${d.jurisdiction ?? 'unplaced'}`),
    ...('network_note' in r ? [`  network    → ${r.network_note}`] : networkLines(r.network)),
    `  location   → ${r.location.jurisdictions.length ? r.location.jurisdictions.join(', ') : 'unknown'}${r.location.region ? ` (region ${r.location.region})` : ''}`,
    ...r.location.signals.map((s) => `      signal ${s.source}: ${s.value}${s.bucket ? ` (bucket ${s.bucket})` : ''} → ${s.jurisdiction ?? 'unplaced: the location is unknown'}`),
    `  decision   → ${r.decision.action.toUpperCase()} by rule ${r.decision.rule ?? '(none)'} in ${r.decision.mode} mode: ${r.decision.reason}`,
    'not_sent' in r.decision
      ? `  effect     → not sent: answered ${r.decision.status} ${r.decision.not_sent} (the upstream's name has no located address)`
      : `  effect     → ${r.decision.effective}${r.decision.status ? ` (${r.decision.status})` : ''}`,
    ...r.lookups.map((l) => `  note: ${l}`),
    `  policy     ${r.policy}`,
  ];
  return lines.join('\n');
}
