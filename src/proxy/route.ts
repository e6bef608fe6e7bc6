import type { Config } from '../config/load.js';
import type { ClassifyOverrideConfig, Provider } from '../config/schema.js';
import { parseUpstreamUrl } from '../config/validate.js';
import { compileDeclared, type DeclaredLocation } from '../location/signals.js';
import { hasPathPrefix } from './normalize.js';

/** An upstream as the data plane uses it: URL parsed, route and location compiled. */
export interface Upstream {
  readonly name: string;
  readonly provider: Provider;
  readonly url: URL;
  /** The upstream URL's path without a trailing slash ('' for the root). */
  readonly basePath: string;
  /** Host header value to send when the client's Host is not preserved. */
  readonly hostHeader: string;
  readonly preserveHost: boolean;
  readonly routeHost: string | null;
  readonly prefix: string | null;
  readonly stripPrefix: boolean;
  readonly declared: DeclaredLocation;
  readonly classify: readonly ClassifyOverrideConfig[];
  /** Azure emulators (Azurite) put the account in the path: /ACCOUNT/container/blob. */
  readonly accountInPath: boolean;
  readonly timeouts: { readonly connect: number; readonly headers: number; readonly body: number };
}

export interface RouteMatch {
  readonly upstream: Upstream;
  /** Path to send upstream: base path + (possibly stripped) request path. */
  readonly forwardPath: string;
  /** The request path relative to the upstream (after stripping), used for bucket parsing and rules. */
  readonly upstreamPath: string;
}

export function compileUpstreams(config: Config): Upstream[] {
  return config.upstreams.map((u) => {
    const url = parseUpstreamUrl(u.url);
    if (typeof url === 'string') throw new Error(`upstream ${u.name}: ${url}`);
    const provider = u.provider ?? 'generic';
    const prefix = u.route.path_prefix === undefined || u.route.path_prefix === '/' ? null : u.route.path_prefix.replace(/\/+$/, '');
    const ms = (s: number | undefined, fallback: number) => Math.round((s ?? fallback) * 1000);
    return Object.freeze({
      name: u.name,
      provider,
      url,
      basePath: url.pathname.replace(/\/+$/, ''),
      hostHeader: url.host,
      // SigV4 (S3, GCS HMAC) signs the Host header: rewriting it breaks every signed request.
      preserveHost: u.preserve_host ?? (provider === 's3' || provider === 'gcs'),
      routeHost: u.route.host?.toLowerCase() ?? null,
      prefix,
      stripPrefix: u.route.strip_prefix ?? false,
      declared: compileDeclared(u),
      classify: u.classify ?? [],
      accountInPath: provider === 'azure' && !url.hostname.endsWith('.core.windows.net'),
      timeouts: {
        connect: ms(u.timeouts?.connect, config.timeouts.connect),
        headers: ms(u.timeouts?.headers, config.timeouts.headers),
        body: ms(u.timeouts?.body, config.timeouts.body),
      },
    });
  });
}

/** Picks the upstream for a request by Host and/or path prefix; the most specific route wins. */
export class Router {
  private readonly routes: readonly Upstream[];

  constructor(upstreams: readonly Upstream[]) {
    // Host+prefix before host-only before prefix-only; longer prefixes first.
    this.routes = [...upstreams].sort((a, b) => specificity(b) - specificity(a));
  }

  /** `hostname` is lower case without port; `path` is already normalised. */
  match(hostname: string, path: string): RouteMatch | null {
    for (const upstream of this.routes) {
      if (upstream.routeHost !== null && !hostMatches(upstream.routeHost, hostname)) continue;
      if (upstream.prefix !== null && !hasPathPrefix(path, upstream.prefix)) continue;
      let upstreamPath = path;
      if (upstream.stripPrefix && upstream.prefix !== null) {
        upstreamPath = path.slice(upstream.prefix.length);
        if (upstreamPath === '' || upstreamPath[0] !== '/') upstreamPath = '/' + upstreamPath;
      }
      return { upstream, forwardPath: upstream.basePath + upstreamPath, upstreamPath };
    }
    return null;
  }
}

function specificity(u: Upstream): number {
  return (u.routeHost !== null ? 100_000 : 0) + (u.routeHost?.startsWith('*.') ? -50_000 : 0) + (u.prefix?.length ?? 0);
}

/** Exact match, or a leading `*.` wildcard matching one or more labels. */
export function hostMatches(pattern: string, hostname: string): boolean {
  if (pattern.startsWith('*.')) return hostname.endsWith(pattern.slice(1)) && hostname.length > pattern.length - 1;
  return pattern === hostname;
}

/** Host header → lower-case hostname without port (hygiene has already validated it). */
export function hostnameOf(host: string): string {
  if (host.startsWith('[')) {
    const end = host.indexOf(']');
    return host.slice(0, end + 1).toLowerCase();
  }
  const colon = host.indexOf(':');
  return (colon === -1 ? host : host.slice(0, colon)).toLowerCase();
}
