import { createHash } from 'node:crypto';
import type { Config, ConfigProblem } from '../config/load.js';
import type { Mode, Operation } from '../config/schema.js';
import { compileGlob } from './glob.js';

/**
 * The decision engine: a pure function of (request facts, located
 * jurisdictions, compiled policy). No I/O, no logging, no Fastify: the proxy
 * hands the decision to the audit sink and acts on it.
 */

/** Why a decision came out as it did. A small, stable set: dashboards and auditors key on it. */
export const REASONS = [
  'jurisdiction_allowed',
  'jurisdiction_not_allowed',
  'unknown_location',
  'location_conflict',
  'read_allowed',
] as const;
export type Reason = (typeof REASONS)[number];

/** The name a write falls back to when no configured rule matches it. */
export const DEFAULT_RULE = 'default';

export interface RequestFacts {
  readonly upstream: string;
  readonly operation: Operation;
  readonly method: string;
  /** Normalised path as forwarded, without the query string. */
  readonly path: string;
}

export interface Decision {
  readonly action: 'allow' | 'block';
  /** The rule that decided; `default` when none matched a write, null for an unmatched read. */
  readonly rule: string | null;
  readonly mode: Mode;
  readonly reason: Reason;
  /** Distinct jurisdictions the location signals produced. */
  readonly jurisdictions: readonly string[];
  /** What the proxy does: a block in enforce mode is refused; everything else is forwarded. */
  readonly effective: 'forwarded' | 'refused';
}

interface CompiledRule {
  readonly name: string;
  readonly upstreams: ReadonlySet<string> | null;
  readonly operations: ReadonlySet<Operation>;
  readonly methods: ReadonlySet<string> | null;
  readonly paths: readonly RegExp[] | null;
  readonly allowed: ReadonlySet<string>;
  readonly mode: Mode;
  readonly unknownAllowed: boolean;
}

export interface Policy {
  /** SHA-256 over the canonical policy-relevant configuration, hex. */
  readonly hash: string;
  readonly rules: readonly CompiledRule[];
  readonly fallback: CompiledRule;
}

/** Compile the rules once at load. */
export function compilePolicy(config: Config): Policy {
  const fallback: CompiledRule = {
    name: DEFAULT_RULE,
    upstreams: null,
    operations: new Set<Operation>(['write']),
    methods: null,
    paths: null,
    allowed: new Set(config.allowed_jurisdictions),
    mode: config.mode,
    unknownAllowed: config.unknown_location === 'allow',
  };
  const rules = config.rules.map(
    (r): CompiledRule => ({
      name: r.name,
      upstreams: r.match?.upstreams ? new Set(r.match.upstreams) : null,
      operations: new Set(r.match?.operations ?? ['write']),
      methods: r.match?.methods ? new Set(r.match.methods) : null,
      paths: r.match?.paths ? r.match.paths.map(compileGlob) : null,
      allowed: new Set(r.allow_jurisdictions ?? config.allowed_jurisdictions),
      mode: r.mode ?? config.mode,
      unknownAllowed: (r.unknown_location ?? config.unknown_location) === 'allow',
    }),
  );
  return Object.freeze({ hash: policyHash(config), rules, fallback });
}

/** Problems the compiler can see that the schema cannot (for check-config). */
export function policyProblems(config: Config): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  config.rules.forEach((r, i) => {
    r.match?.paths?.forEach((p, j) => {
      if (p.includes('***')) problems.push({ path: `rules[${i}].match.paths[${j}]`, message: `"${p}" has "***"`, expected: 'a glob using * and **' });
    });
  });
  return problems;
}

export function decide(policy: Policy, facts: RequestFacts, jurisdictions: readonly string[]): Decision {
  const rule = matchRule(policy, facts);
  if (rule === null) {
    return { action: 'allow', rule: null, mode: policy.fallback.mode, reason: 'read_allowed', jurisdictions, effective: 'forwarded' };
  }
  let action: 'allow' | 'block';
  let reason: Reason;
  if (jurisdictions.length === 0) {
    // Fail closed: nothing placed the target anywhere.
    action = rule.unknownAllowed ? 'allow' : 'block';
    reason = 'unknown_location';
  } else {
    let allowed = 0;
    for (const j of jurisdictions) if (rule.allowed.has(j)) allowed++;
    if (allowed === jurisdictions.length) {
      action = 'allow';
      reason = 'jurisdiction_allowed';
    } else {
      action = 'block';
      // Some signals place it inside, some outside: the signals disagree.
      reason = allowed > 0 ? 'location_conflict' : 'jurisdiction_not_allowed';
    }
  }
  const effective = action === 'block' && rule.mode === 'enforce' ? 'refused' : 'forwarded';
  return { action, rule: rule.name, mode: rule.mode, reason, jurisdictions, effective };
}

/** First matching rule wins; a write no rule matches falls to the default rule; an unmatched read is allowed. */
function matchRule(policy: Policy, facts: RequestFacts): CompiledRule | null {
  for (const rule of policy.rules) {
    if (!rule.operations.has(facts.operation)) continue;
    if (rule.upstreams !== null && !rule.upstreams.has(facts.upstream)) continue;
    if (rule.methods !== null && !rule.methods.has(facts.method)) continue;
    if (rule.paths !== null && !rule.paths.some((re) => re.test(facts.path))) continue;
    return rule;
  }
  return facts.operation === 'write' ? policy.fallback : null;
}

/** Hash of everything that changes decisions, so each record names the policy that decided it. */
function policyHash(config: Config): string {
  const relevant = {
    allowed_jurisdictions: config.allowed_jurisdictions,
    mode: config.mode,
    unknown_location: config.unknown_location,
    networks: config.networks ?? {},
    upstreams: config.upstreams.map((u) => ({
      name: u.name,
      url: u.url,
      provider: u.provider,
      route: u.route,
      region: u.region,
      jurisdiction: u.jurisdiction,
      buckets: u.buckets,
      classify: u.classify,
    })),
    rules: config.rules,
  };
  return createHash('sha256').update(canonicalJson(relevant)).digest('hex');
}

/** JSON with object keys sorted, so equal policies hash equal. */
export function canonicalJson(value: unknown): string {
  if (value === undefined) return 'null';
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}
