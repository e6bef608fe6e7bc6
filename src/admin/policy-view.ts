import type { Config } from '../config/load.js';
import { DEFAULT_RULE } from '../policy/engine.js';

/** The policy in effect as the admin app sees it: supplied by the composition root. */
export interface ActivePolicy {
  /** SHA-256 of the policy (decision records' `policy` field, `residency_policy_info{hash}`). */
  readonly hash: string;
  /** ISO 8601 time the policy was loaded. */
  readonly loadedAt: string;
  /** The config file it came from. */
  readonly source: string;
  readonly config: Config;
  /** Hash of the shadow policy evaluated beside it, when one is configured. */
  readonly shadowHash?: string | null;
}

export interface RuleView {
  name: string;
  match: { upstreams: string[] | null; operations: string[]; methods: string[] | null; paths: string[] | null };
  allow_jurisdictions: string[];
  mode: string;
  unknown_location: string;
}

export interface UpstreamView {
  name: string;
  provider: string;
  /** Scheme, host, port and path only. */
  url: string;
  route: { host: string | null; path_prefix: string | null; strip_prefix: boolean };
  region: string | null;
  jurisdiction: string | null;
  buckets: Record<string, string>;
}

export interface PolicyView {
  hash: string;
  shadow_hash: string | null;
  loaded_at: string;
  source: string;
  defaults: { allowed_jurisdictions: string[]; mode: string; unknown_location: string };
  /** In evaluation order; the last one is the built-in `default` rule for unmatched writes. */
  rules: RuleView[];
  upstreams: UpstreamView[];
}

/**
 * What `/policy` shows: the rules with their defaults resolved (what is
 * actually enforced, not what the file abbreviates) and each upstream's
 * route and declared location. Upstream URLs are shown without user info
 * or query (config refuses credentials in URLs; this is the second line of
 * defence). Admin tokens are never part of a Config, so never shown.
 */
export function policyView(active: ActivePolicy): PolicyView {
  const c = active.config;
  const rules: RuleView[] = c.rules.map((r) => ({
    name: r.name,
    match: {
      upstreams: r.match?.upstreams ? [...r.match.upstreams] : null,
      operations: [...(r.match?.operations ?? ['write'])],
      methods: r.match?.methods ? [...r.match.methods] : null,
      paths: r.match?.paths ? [...r.match.paths] : null,
    },
    allow_jurisdictions: [...(r.allow_jurisdictions ?? c.allowed_jurisdictions)],
    mode: r.mode ?? c.mode,
    unknown_location: r.unknown_location ?? c.unknown_location,
  }));
  rules.push({
    name: DEFAULT_RULE,
    match: { upstreams: null, operations: ['write'], methods: null, paths: null },
    allow_jurisdictions: [...c.allowed_jurisdictions],
    mode: c.mode,
    unknown_location: c.unknown_location,
  });
  return {
    hash: active.hash,
    shadow_hash: active.shadowHash ?? null,
    loaded_at: active.loadedAt,
    source: active.source,
    defaults: { allowed_jurisdictions: [...c.allowed_jurisdictions], mode: c.mode, unknown_location: c.unknown_location },
    rules,
    upstreams: c.upstreams.map((u) => ({
      name: u.name,
      provider: u.provider ?? 'generic',
      url: safeUrl(u.url),
      route: { host: u.route.host ?? null, path_prefix: u.route.path_prefix ?? null, strip_prefix: u.route.strip_prefix ?? false },
      region: u.region ?? null,
      jurisdiction: u.jurisdiction ?? null,
      buckets: { ...(u.buckets ?? {}) },
    })),
  };
}

function safeUrl(text: string): string {
  try {
    const url = new URL(text);
    return `${url.protocol}//${url.host}${url.pathname}`;
  } catch {
    return '(invalid)';
  }
}
