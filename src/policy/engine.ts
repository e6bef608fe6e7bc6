import { createHash } from 'node:crypto';
import type { Config, ConfigProblem } from '../config/load.js';
import type { Mode, Operation } from '../config/schema.js';
import { canonicalJson } from '../audit/canonical.js';
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
  'exception_allowed',
  'exception_blocked',
  // A forward proxy's CONNECT to a host no upstream's route admits: refused before any request is seen.
  'tunnel_not_routed',
] as const;
export type Reason = (typeof REASONS)[number];

/** The name a write falls back to when no configured rule matches it. */
export const DEFAULT_RULE = 'default';

export interface RequestFacts {
  readonly upstream: string;
  readonly operation: Operation;
  readonly method: string;
  /** Normalised path relative to the upstream, without the query string. */
  readonly path: string;
  /** Bucket or container, when the request names one. */
  readonly bucket?: string | null;
  /** The caller's access key id (SigV4 credential), when known. */
  readonly principal?: string | null;
}

/** An exception that changed a decision, as the record names it. */
export interface AppliedException {
  readonly name: string;
  readonly ticket: string;
  readonly expires: string;
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
  /** Set when an exception changed the decision the rules alone would take. */
  readonly exception?: AppliedException;
  /** Set when a fleet-wide lockdown was in force for this decision. */
  readonly lockdown?: true;
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

interface CompiledException extends AppliedException {
  readonly action: 'allow' | 'block';
  readonly expiresAt: number;
  readonly upstreams: ReadonlySet<string> | null;
  readonly buckets: ReadonlySet<string> | null;
  readonly paths: readonly RegExp[] | null;
  readonly principals: ReadonlySet<string> | null;
  readonly operations: ReadonlySet<Operation> | null;
  readonly methods: ReadonlySet<string> | null;
}

export interface Policy {
  /** SHA-256 over the canonical policy-relevant configuration, hex. */
  readonly hash: string;
  readonly rules: readonly CompiledRule[];
  readonly fallback: CompiledRule;
  readonly exceptions: readonly CompiledException[];
}

/** The jurisdictions a rule (by name; `default` the fallback) allows, or null for no such rule. */
export function allowedBy(policy: Policy, rule: string | null): ReadonlySet<string> | null {
  if (rule === null || rule === DEFAULT_RULE) return policy.fallback.allowed;
  return policy.rules.find((r) => r.name === rule)?.allowed ?? null;
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
  const exceptions = config.exceptions.map(
    (e): CompiledException => ({
      name: e.name,
      ticket: e.ticket,
      expires: e.expires,
      action: e.action,
      expiresAt: Date.parse(e.expires),
      upstreams: e.match.upstreams ? new Set(e.match.upstreams) : null,
      buckets: e.match.buckets ? new Set(e.match.buckets) : null,
      paths: e.match.paths ? e.match.paths.map(compileGlob) : null,
      principals: e.match.principals ? new Set(e.match.principals) : null,
      operations: e.match.operations ? new Set(e.match.operations) : null,
      methods: e.match.methods ? new Set(e.match.methods) : null,
    }),
  );
  return Object.freeze({ hash: policyHash(config), rules, fallback, exceptions });
}

/** RFC 3339 with a zone, as exceptions' `expires` must be. */
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$/;

/** Exceptions past their expiry at `now`: check-config warns, a metric counts them. */
export function expiredExceptions(config: Config, now: number): string[] {
  return config.exceptions.filter((e) => Date.parse(e.expires) <= now).map((e) => `${e.name} (expired ${e.expires}, ticket ${e.ticket})`);
}

/** Problems the compiler can see that the schema cannot (for check-config). */
export function policyProblems(config: Config): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const upstreams = new Set(config.upstreams.map((u) => u.name));
  config.exceptions.forEach((e, i) => {
    if (!RFC3339.test(e.expires) || Number.isNaN(Date.parse(e.expires))) {
      problems.push({ path: `exceptions[${i}].expires`, message: `"${e.expires}" is not a timestamp`, expected: 'RFC 3339, e.g. 2026-12-31T23:59:59Z' });
    }
    if (config.exceptions.findIndex((x) => x.name === e.name) !== i) {
      problems.push({ path: `exceptions[${i}].name`, message: `"${e.name}" is used twice`, expected: 'a unique name' });
    }
    e.match.upstreams?.forEach((u, j) => {
      if (!upstreams.has(u)) problems.push({ path: `exceptions[${i}].match.upstreams[${j}]`, message: `names upstream "${u}", which is not configured` });
    });
    if (Object.keys(e.match).length === 0) {
      problems.push({ path: `exceptions[${i}].match`, message: 'matches every request', expected: 'a narrow match: upstreams, buckets, paths or principals' });
    }
  });
  config.rules.forEach((r, i) => {
    r.match?.paths?.forEach((p, j) => {
      if (p.includes('***')) problems.push({ path: `rules[${i}].match.paths[${j}]`, message: `"${p}" has "***"`, expected: 'a glob using * and **' });
    });
  });
  return problems;
}

/**
 * Decide one request. `now` is injectable so exception expiry is testable
 * without sleeping; an expired exception stops applying on its own.
 *
 * Under a fleet-wide `lockdown` every rule behaves as `enforce`, an unknown
 * location is refused and allow-exceptions are suspended, whatever the
 * policy says: an incident commander's switch to stop every non-allowed write.
 */
export function decide(
  policy: Policy,
  facts: RequestFacts,
  jurisdictions: readonly string[],
  now = Date.now(),
  lockdown = false,
  /** A signal named a place nothing can place: the location is unknown (see Location.unplaced). */
  unplaced: boolean | undefined = false,
): Decision {
  const base = decideByRules(policy, facts, jurisdictions, lockdown, unplaced);
  if (policy.exceptions.length === 0) return base;
  const exception = matchException(policy, facts, now);
  if (exception === null || exception.action === base.action || (lockdown && exception.action === 'allow')) return base;
  const mode = base.mode;
  const effective = exception.action === 'block' && mode === 'enforce' ? 'refused' : 'forwarded';
  return {
    action: exception.action,
    rule: base.rule ?? DEFAULT_RULE,
    mode,
    reason: exception.action === 'allow' ? 'exception_allowed' : 'exception_blocked',
    jurisdictions,
    effective,
    exception: { name: exception.name, ticket: exception.ticket, expires: exception.expires },
  };
}

function matchException(policy: Policy, facts: RequestFacts, now: number): CompiledException | null {
  for (const e of policy.exceptions) {
    if (e.expiresAt <= now) continue;
    if (e.upstreams !== null && !e.upstreams.has(facts.upstream)) continue;
    if (e.operations !== null && !e.operations.has(facts.operation)) continue;
    if (e.methods !== null && !e.methods.has(facts.method)) continue;
    if (e.buckets !== null && (facts.bucket === undefined || facts.bucket === null || !e.buckets.has(facts.bucket))) continue;
    if (e.principals !== null && (facts.principal === undefined || facts.principal === null || !e.principals.has(facts.principal))) continue;
    if (e.paths !== null && !e.paths.some((re) => re.test(facts.path))) continue;
    return e;
  }
  return null;
}

function decideByRules(policy: Policy, facts: RequestFacts, jurisdictions: readonly string[], lockdown: boolean, unplaced: boolean | undefined): Decision {
  const rule = matchRule(policy, facts);
  if (rule === null) {
    return { action: 'allow', rule: null, mode: policy.fallback.mode, reason: 'read_allowed', jurisdictions, effective: 'forwarded' };
  }
  let action: 'allow' | 'block';
  let reason: Reason;
  if (jurisdictions.length === 0 || unplaced) {
    // Fail closed: nothing placed the target anywhere, or something placed it where nothing can say.
    action = rule.unknownAllowed && !lockdown ? 'allow' : 'block';
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
  const mode = lockdown ? 'enforce' : rule.mode;
  const effective = action === 'block' && mode === 'enforce' ? 'refused' : 'forwarded';
  const decision: Decision = { action, rule: rule.name, mode, reason, jurisdictions, effective };
  return lockdown ? { ...decision, lockdown: true } : decision;
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
      accounts: u.accounts,
      request_signals: u.request_signals,
      discovery: u.discovery,
      // Which Host the store reads a bucket from.
      preserve_host: u.preserve_host,
      endpoint_hosts: u.endpoint_hosts,
    })),
    rules: config.rules,
    exceptions: config.exceptions,
  };
  // The records' canonical form (sorted keys): equal policies hash equal.
  return createHash('sha256').update(canonicalJson(relevant)).digest('hex');
}

