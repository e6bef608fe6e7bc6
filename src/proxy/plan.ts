import type { Operation } from '../config/schema.js';
import { bucketOf } from '../location/bucket.js';
import type { Location } from '../location/signals.js';
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
    };

/** Everything a plan needs, compiled once per policy load. */
export class Planner {
  private readonly router: Router;
  private readonly classifiers = new Map<string, Classifier>();

  constructor(
    readonly upstreams: readonly Upstream[],
    readonly policy: Policy,
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
    const location = upstream.declared.forBucket(bucket);
    const decision = decide(
      this.policy,
      { upstream: upstream.name, operation, method: input.method, path: upstreamPath },
      location.jurisdictions,
    );
    return { kind: 'decided', route, path, query, operation, bucket, location, decision };
  }
}
