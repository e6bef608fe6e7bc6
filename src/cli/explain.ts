import { buildPlanner } from '../load.js';
import type { Plan } from '../proxy/plan.js';
import { loadOrReport, parse, UsageError, withUsage } from './args.js';

const USAGE = `Usage: residency-proxy explain --config FILE METHOD URL [-H 'K: V']… [--format json|text]

Prints the decision the proxy would take for the request, with every signal
and its source. Nothing is sent upstream. URL is absolute
(http://host:port/path) or a path with -H 'Host: …'.`;

export function explainCommand(args: string[]): Promise<number> {
  return withUsage(USAGE, async () => {
    const { values, positionals } = parse(
      args,
      {
        config: { type: 'string', short: 'c' },
        header: { type: 'string', short: 'H', multiple: true },
        format: { type: 'string', default: 'json' },
        body: { type: 'string' },
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

    const config = loadOrReport(values.config);
    if (!config) return 1;
    const planner = buildPlanner(config);
    const plan = planner.plan({ method: method.toUpperCase(), target, host });
    const report = describe(plan, method.toUpperCase(), host, planner.policy.hash);
    console.log(values.format === 'json' ? JSON.stringify(report, null, 2) : asText(report));
    return 0;
  });
}

type Report = ReturnType<typeof describe>;

function describe(plan: Plan, method: string, host: string, policy: string) {
  if (plan.kind === 'reject') {
    return { kind: 'reject' as const, request: { method, host }, outcome: { status: plan.status, code: plan.code, detail: plan.detail }, policy };
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
    route: { upstream: route.upstream.name, provider: route.upstream.provider, url: route.upstream.url.href, forward_path: route.forwardPath },
    operation: plan.operation,
    bucket: plan.bucket,
    location: { jurisdictions: location.jurisdictions, region: location.region, signals: location.signals },
    decision: {
      action: decision.action,
      effective: decision.effective,
      rule: decision.rule,
      mode: decision.mode,
      reason: decision.reason,
      status: decision.effective === 'refused' ? 403 : null,
    },
    policy,
  };
}

function asText(r: Report): string {
  if (r.kind === 'reject') {
    return `${r.request.method} ${r.request.host}\n  refused before any decision: ${r.outcome.status} ${r.outcome.code}: ${r.outcome.detail}`;
  }
  const lines = [
    `${r.request.method} ${r.request.host}${r.request.path}`,
    `  route      → upstream ${r.route.upstream} (${r.route.provider}) ${r.route.url} path ${r.route.forward_path}`,
    `  operation  → ${r.operation}${r.bucket ? ` on bucket ${r.bucket}` : ''}`,
    `  location   → ${r.location.jurisdictions.length ? r.location.jurisdictions.join(', ') : 'unknown'}${r.location.region ? ` (region ${r.location.region})` : ''}`,
    ...r.location.signals.map((s) => `      signal ${s.source}: ${s.value} → ${s.jurisdiction ?? 'unplaced'}`),
    `  decision   → ${r.decision.action.toUpperCase()} by rule ${r.decision.rule ?? '(none)'} in ${r.decision.mode} mode: ${r.decision.reason}`,
    `  effect     → ${r.decision.effective}${r.decision.status ? ` (${r.decision.status})` : ''}`,
    `  policy     ${r.policy}`,
  ];
  return lines.join('\n');
}
