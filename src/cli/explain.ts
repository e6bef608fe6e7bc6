import { readFileSync } from 'node:fs';
import { buildPlanner } from '../load.js';
import { createBucketLocation, createBucketSignals, isAwsChunked } from '../location/request/create-bucket.js';
import type { Found, Plan, Prepared } from '../proxy/plan.js';
import { loadOrReport, parse, UsageError, withUsage } from './args.js';

const USAGE = `Usage: residency-proxy explain --config FILE METHOD URL [-H 'K: V']… [--body FILE] [--offline] [--format json|text]

Prints the decision the proxy would take for the request, with every signal
and its source. Nothing is sent anywhere: no upstream, DNS or Redis is
contacted (--offline says so explicitly; it is always the case). URL is
absolute (http://host:port/path) or a path with -H 'Host: …'. Headers that
carry location (Authorization, X-Amz-Region-Set, …) are read like the proxy
reads them, and never printed.

--body FILE   the body of a bucket-creating request (S3 CreateBucket, Cloud
              Storage bucket insert), where the new bucket's location is;
              without it the body is taken as empty.

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
    let plan: Plan = prepared.kind === 'reject' ? prepared : planner.finish(prepared);
    let lookups: string[] = [];
    if (prepared.kind === 'prepared' && prepared.needs !== null) {
      const done = inspect(prepared, body, isAwsChunked(requestHeaders));
      lookups = done.lookups;
      plan = done.reject ?? planner.finish(prepared, done.found);
    }
    const report = describe(plan, upper, host, planner.policy.hash, lookups);
    console.log(values.format === 'json' ? JSON.stringify(report, null, 2) : asText(report));
    return 0;
  });
}

/**
 * The proxy's between-prepare-and-finish work, without I/O: the create-bucket
 * body from --body; everything else is only named.
 */
function inspect(prepared: Prepared, body: Buffer | null, awsChunked: boolean): { found: Found; lookups: string[]; reject?: Plan } {
  const needs = prepared.needs!;
  const lookups: string[] = [];
  const found: { signals?: Found['signals'] } = {};
  if (needs.createBucket !== undefined) {
    const location = createBucketLocation(needs.createBucket, body ?? Buffer.alloc(0), { awsChunked });
    if (body === null) lookups.push('create-bucket: no --body given, so the body was taken as empty (the provider default location)');
    if (!location.ok) return { found, lookups, reject: { kind: 'reject', status: location.status, code: location.code, detail: location.detail } };
    found.signals = createBucketSignals(location);
  }
  if (needs.discover !== undefined) {
    lookups.push(`discovery: the proxy asks upstream ${prepared.route.upstream.name} where bucket ${needs.discover} is (HEAD /${needs.discover}, cached); not done here`);
  }
  if (needs.upload !== undefined) {
    lookups.push(
      `${needs.upload.kind}: the proxy decides this on the location stored when the upload started (none stored: unknown); shown here on the request's own location`,
    );
  }
  return { found, lookups };
}

type Report = ReturnType<typeof describe>;

function describe(plan: Plan, method: string, host: string, policy: string, lookups: readonly string[]) {
  if (plan.kind === 'reject') {
    return { kind: 'reject' as const, request: { method, host }, outcome: { status: plan.status, code: plan.code, detail: plan.detail }, lookups, policy };
  }
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
    principal: plan.principal,
    location: { jurisdictions: location.jurisdictions, region: location.region, signals: location.signals },
    decision: {
      action: decision.action,
      effective: decision.effective,
      rule: decision.rule,
      mode: decision.mode,
      reason: decision.reason,
      status: decision.effective === 'refused' ? 403 : null,
    },
    lookups,
    policy,
  };
}

function asText(r: Report): string {
  if (r.kind === 'reject') {
    return [
      `${r.request.method} ${r.request.host}`,
      `  refused before any decision: ${r.outcome.status} ${r.outcome.code}: ${r.outcome.detail}`,
      ...r.lookups.map((l) => `  note: ${l}`),
    ].join('\n');
  }
  const lines = [
    `${r.request.method} ${r.request.host}${r.request.path}`,
    `  route      → upstream ${r.route.upstream} (${r.route.provider}) ${r.route.url} path ${r.route.forward_path}`,
    `  operation  → ${r.operation}${r.bucket ? ` on bucket ${r.bucket}` : ''}${r.principal ? ` by ${r.principal}` : ''}`,
    `  location   → ${r.location.jurisdictions.length ? r.location.jurisdictions.join(', ') : 'unknown'}${r.location.region ? ` (region ${r.location.region})` : ''}`,
    ...r.location.signals.map((s) => `      signal ${s.source}: ${s.value} → ${s.jurisdiction ?? 'unplaced'}`),
    `  decision   → ${r.decision.action.toUpperCase()} by rule ${r.decision.rule ?? '(none)'} in ${r.decision.mode} mode: ${r.decision.reason}`,
    `  effect     → ${r.decision.effective}${r.decision.status ? ` (${r.decision.status})` : ''}`,
    ...r.lookups.map((l) => `  note: ${l}`),
    `  policy     ${r.policy}`,
  ];
  return lines.join('\n');
}
