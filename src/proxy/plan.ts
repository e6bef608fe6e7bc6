import type { Operation } from '../config/schema.js';
import { bucketOf } from '../location/bucket.js';
import { toLocation, type Location, type Signal } from '../location/signals.js';
import { decide, type Decision, type Policy } from '../policy/engine.js';
import { compileClassifier, type Classifier } from './classify.js';
import { normalizePath, splitTarget } from './normalize.js';
import { hostnameOf, Router, type RouteMatch, type Upstream } from './route.js';

/**
 * route → classify → locate → decide, with no I/O: the proxy runs this for
 * every request, and `explain` runs exactly the same code without sending
 * anything.
 */
export interface RequestInput {
  method: string;
  /** The request-target as received (origin form: path and query). */
  target: string;
  /** The Host header (validated by hygiene in the proxy). */
  host: string;
  /**
   * Location facts to assume instead of looking them up (policy tests): these
   * signals replace the declared ones when `replaceDeclared` is set, else add to them.
   */
  assume?: { signals: readonly Signal[]; replaceDeclared: boolean };
}

export type Plan =
  | { readonly kind: 'reject'; readonly status: number; readonly code: string; readonly detail: string }
  | {
      readonly kind: 'decided';
      readonly route: RouteMatch;
      readonly path: string;
      readonly query: string | null;
      readonly operation: Operation;
      readonly bucket: string | null;
      readonly location: Location;
      readonly decision: Decision;
      /** The shadow policy's decision, when one is configured and it decided differently. */
      readonly shadow: Decision | null;
    };

/** Everything a plan needs, compiled once per policy load. */
export class Planner {
  private readonly router: Router;
  private readonly classifiers = new Map<string, Classifier>();

  constructor(
    readonly upstreams: readonly Upstream[],
    readonly policy: Policy,
    /** A candidate policy evaluated beside the active one, never acted on. */
    readonly shadowPolicy: Policy | null = null,
    /** Injectable clock for exception expiry. */
    private readonly now: () => number = Date.now,
  ) {
    this.router = new Router(upstreams);
    for (const u of upstreams) this.classifiers.set(u.name, compileClassifier(u.provider, u.classify));
  }

  plan(input: RequestInput): Plan {
    const { path: rawPath, query } = splitTarget(input.target);
    const normalized = normalizePath(rawPath);
    if (!normalized.ok) return { kind: 'reject', status: 400, code: 'bad_path', detail: normalized.reason };
    const path = normalized.path;
    const hostname = hostnameOf(input.host);

    const route = this.router.match(hostname, path);
    if (route === null) {
      return { kind: 'reject', status: 404, code: 'no_route', detail: `no upstream is configured for host ${hostname} and path ${path}` };
    }
    const { upstream, upstreamPath } = route;
    const operation = this.classifiers.get(upstream.name)!(input.method, upstreamPath, query);
    const bucket = bucketOf(upstream.provider, upstreamPath, hostname, upstream.routeHost, upstream.accountInPath);
    let location = upstream.declared.forBucket(bucket);
    if (input.assume) {
      location = toLocation(input.assume.replaceDeclared ? input.assume.signals : [...location.signals, ...input.assume.signals]);
    }
    const facts = { upstream: upstream.name, operation, method: input.method, path: upstreamPath, bucket };
    const now = this.policy.exceptions.length > 0 || this.shadowPolicy !== null ? this.now() : 0;
    const decision = decide(this.policy, facts, location.jurisdictions, now);
    let shadow: Decision | null = null;
    if (this.shadowPolicy !== null) {
      const candidate = decide(this.shadowPolicy, facts, location.jurisdictions, now);
      if (candidate.action !== decision.action || candidate.rule !== decision.rule || candidate.reason !== decision.reason) shadow = candidate;
    }
    return { kind: 'decided', route, path, query, operation, bucket, location, decision, shadow };
  }
}
