import { readFileSync } from 'node:fs';
import type { Config, ConfigProblem } from '../config/load.js';
import type { ClassifyOverrideConfig, Provider } from '../config/schema.js';
import { parseUpstreamUrl } from '../config/validate.js';
import { compileDeclared, placeSignals, resolvePlace, toLocation, type DeclaredLocation, type Location } from '../location/signals.js';
import { hasPathPrefix } from './normalize.js';

/** An upstream as the data plane uses it: URL parsed, route and location compiled. */
export interface Upstream {
  readonly name: string;
  readonly provider: Provider;
  /** The upstream URL; for a `{host}` upstream its host is the literal placeholder (see `hostTemplate`). */
  readonly url: URL;
  /** The upstream URL's path without a trailing slash ('' for the root). */
  readonly basePath: string;
  /** Host header value to send when the client's Host is not preserved. */
  readonly hostHeader: string;
  /** The URL's host name (an IPv6 literal in brackets): what network location resolves; '' for a `{host}` upstream. */
  readonly hostname: string;
  readonly preserveHost: boolean;
  /** Host names the storage service serves as its own endpoint (endpoint_hosts), lower case. */
  readonly endpointHosts: readonly string[];
  readonly routeHost: string | null;
  readonly prefix: string | null;
  readonly stripPrefix: boolean;
  readonly declared: DeclaredLocation;
  /** Buckets (containers) with a declared location of their own. */
  readonly declaredBuckets: ReadonlySet<string>;
  /** Azure: storage account → its declared location (beats the upstream's; a per-container entry beats it). */
  readonly accounts: ReadonlyMap<string, Location> | null;
  readonly classify: readonly ClassifyOverrideConfig[];
  /** Azure emulators (Azurite) put the account in the path: /ACCOUNT/container/blob. */
  readonly accountInPath: boolean;
  /** The Host name, SigV4 scope and create-bucket bodies count as location signals (real cloud endpoints). */
  readonly requestSignals: boolean;
  /** S3 bucket → region discovery, or null when off. */
  readonly discovery: { readonly ttlMs: number; readonly negativeTtlMs: number; readonly timeoutMs: number } | null;
  /**
   * `url: https://{host}[:port]`: the request goes to the host it named,
   * which the route's host pattern admitted. Null for a fixed URL.
   */
  readonly hostTemplate: { readonly scheme: string; readonly port: string } | null;
  readonly timeouts: { readonly connect: number; readonly headers: number; readonly body: number };
  /** `ca_file`'s certificates (PEM): the roots its TLS certificate must chain to; null: the system's. */
  readonly ca: string | null;
}

export interface RouteMatch {
  readonly upstream: Upstream;
  /** Path to send upstream: base path + (possibly stripped) request path. */
  readonly forwardPath: string;
  /** The request path relative to the upstream (after stripping), used for bucket parsing and rules. */
  readonly upstreamPath: string;
  /** scheme://host[:port] the request is sent to: the upstream's own, or for a `{host}` upstream the requested host's. */
  readonly origin: string;
  /** host[:port] of `origin`: the record's target and the Host sent when the client's is not preserved. */
  readonly targetHost: string;
  /** The host name of `origin` (no port): network location resolves it, and the request goes to the address it located. */
  readonly hostname: string;
}

/** The placeholder a `url` uses to forward to the requested host. */
export const HOST_PLACEHOLDER = '{host}';
// What a `{host}` upstream may be asked to connect to: a DNS name or an IPv4
// address, lower case, no port (the port comes from the URL).
const TARGET_HOST = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;
// Cloud endpoints whose Host names, signing scopes and create-bucket bodies mean what the provider says they mean.
const CLOUD_HOST = /(?:^|\.)(?:amazonaws\.com(?:\.cn)?|googleapis\.com|core\.windows\.net)$/;

export function compileUpstreams(config: Config): Upstream[] {
  return config.upstreams.map((u) => {
    const problem = upstreamProblem(u);
    if (problem !== null) throw new Error(`upstream ${u.name}: ${problem}`);
    const templated = u.url.includes(HOST_PLACEHOLDER);
    const url = parseUpstreamUrl(u.url);
    if (typeof url === 'string') throw new Error(`upstream ${u.name}: ${url}`);
    const provider = u.provider ?? 'generic';
    const prefix = u.route.path_prefix === undefined || u.route.path_prefix === '/' ? null : u.route.path_prefix.replace(/\/+$/, '');
    const routeHost = u.route.host?.toLowerCase() ?? null;
    const ms = (s: number | undefined, fallback: number) => Math.round((s ?? fallback) * 1000);
    // Where the upstream really is: the URL's host, or for {host} the route's pattern.
    const endpointHost = templated ? (routeHost ?? '') : url.hostname;
    const accounts = Object.entries(u.accounts ?? {});
    return Object.freeze({
      name: u.name,
      provider,
      url,
      basePath: url.pathname.replace(/\/+$/, ''),
      hostHeader: url.host,
      hostname: templated ? '' : url.hostname,
      // SigV4 (S3, GCS HMAC) signs the Host header: rewriting it breaks every signed request.
      preserveHost: u.preserve_host ?? (provider === 's3' || provider === 'gcs'),
      endpointHosts: (u.endpoint_hosts ?? []).map((h) => h.toLowerCase()),
      routeHost,
      prefix,
      stripPrefix: u.route.strip_prefix ?? false,
      declared: compileDeclared(u),
      declaredBuckets: new Set(Object.keys(u.buckets ?? {})),
      accounts:
        provider === 'azure' && accounts.length > 0
          ? new Map(accounts.map(([account, place]) => [account.toLowerCase(), toLocation(placeSignals('declared', place))]))
          : null,
      classify: u.classify ?? [],
      accountInPath: provider === 'azure' && !templated && !url.hostname.endsWith('.core.windows.net'),
      requestSignals: u.request_signals ?? CLOUD_HOST.test(endpointHost.replace(/^\*\./, '')),
      // A {host} upstream has no one endpoint to ask: its Host names and SigV4 scopes place requests.
      discovery:
        provider === 's3' && u.discovery?.enabled === true && !templated
          ? {
              ttlMs: ms(u.discovery.ttl, 86_400),
              negativeTtlMs: Math.round((u.discovery.negative_ttl ?? 60) * 1000),
              timeoutMs: ms(u.discovery.timeout, 5),
            }
          : null,
      hostTemplate: templated ? { scheme: url.protocol, port: url.port } : null,
      timeouts: {
        connect: ms(u.timeouts?.connect, config.timeouts.connect),
        headers: ms(u.timeouts?.headers, config.timeouts.headers),
        body: ms(u.timeouts?.body, config.timeouts.body),
      },
      // Read at each load: a renewed private CA is picked up by a reload.
      ca: u.ca_file === undefined ? null : readFileSync(u.ca_file, 'utf8'),
    });
  });
}

/**
 * What is wrong with an upstream that only the data plane's rules see (a
 * `{host}` URL needs a host pattern to bound it, accounts must resolve), or
 * null. For check-config as a ConfigCheck through `upstreamProblems`.
 */
function upstreamProblem(u: Config['upstreams'][number]): string | null {
  if (!u.url.includes(HOST_PLACEHOLDER)) return null;
  const url = parseUpstreamUrl(u.url);
  if (typeof url === 'string') return url;
  if (url.hostname !== HOST_PLACEHOLDER || u.url.indexOf(HOST_PLACEHOLDER) !== u.url.lastIndexOf(HOST_PLACEHOLDER)) {
    return `"${u.url}" may use ${HOST_PLACEHOLDER} only as the whole host, once`;
  }
  // Without a host pattern, any Host a client sends would be contacted: an open proxy.
  if (u.route.host === undefined) return `url uses ${HOST_PLACEHOLDER} but route.host is not set (every requested host must match a pattern)`;
  return null;
}

/** Upstream problems for check-config (the same checks compileUpstreams enforces). */
export function upstreamProblems(config: Config): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  config.upstreams.forEach((u, i) => {
    const problem = upstreamProblem(u);
    if (problem !== null) problems.push({ path: `upstreams[${i}].url`, message: problem, expected: `https://${HOST_PLACEHOLDER} with route.host, or a fixed URL` });
    for (const [account, place] of Object.entries(u.accounts ?? {})) {
      if (!resolvePlace(place)) {
        problems.push({ path: `upstreams[${i}].accounts[${JSON.stringify(account)}]`, message: `"${place}" is neither a region nor an ISO code`, expected: 'a cloud region id (westeurope) or ISO 3166-1 code (NL)' });
      }
    }
  });
  return problems;
}

/** Picks the upstream for a request by Host and/or path prefix; the most specific route wins. */
export class Router {
  private readonly routes: readonly Upstream[];

  constructor(upstreams: readonly Upstream[]) {
    // Exact hosts before wildcards before no host; a longer wildcard before a shorter one; then longer prefixes first.
    this.routes = [...upstreams].sort(bySpecificity);
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
      const forwardPath = upstream.basePath + upstreamPath;
      if (upstream.hostTemplate === null) {
        return { upstream, forwardPath, upstreamPath, origin: upstream.url.origin, targetHost: upstream.hostHeader, hostname: upstream.hostname };
      }
      const target = targetFor(upstream.hostTemplate, hostname);
      // A name we would not connect to (IPv6 literal, odd characters): this route does not take it.
      if (target === null) continue;
      return { upstream, forwardPath, upstreamPath, ...target, hostname };
    }
    return null;
  }

  /**
   * The upstream a tunnel to `hostname:port` (a forward proxy's CONNECT) is
   * opened for: the most specific route that names hosts, admits this one
   * and sends to this same host and port over TLS (a `{host}` upstream on
   * that port, or an upstream whose own URL is that origin).
   * Requests inside must then route to that same origin (tunnelOrigin).
   */
  tunnel(hostname: string, port: number): Upstream | null {
    const sendsThere = (u: Upstream) =>
      (u.hostTemplate?.scheme ?? u.url.protocol) === 'https:' &&
      Number((u.hostTemplate?.port ?? u.url.port) || 443) === port &&
      (u.hostTemplate === null ? u.hostname === hostname : TARGET_HOST.test(hostname));
    return this.routes.find((u) => u.routeHost !== null && hostMatches(u.routeHost, hostname) && sendsThere(u)) ?? null;
  }
}

/** The origin a request inside a tunnel to `host:port` must be forwarded to: that host, over TLS. */
export function tunnelOrigin(host: string, port: number): string {
  return port === 443 ? `https://${host}` : `https://${host}:${port}`;
}

/** The origin a `{host}` upstream sends a request for `hostname` to, or null when it is not a host name we connect to. */
export function targetFor(template: { readonly scheme: string; readonly port: string }, hostname: string): { origin: string; targetHost: string } | null {
  if (!TARGET_HOST.test(hostname)) return null;
  const targetHost = template.port === '' ? hostname : `${hostname}:${template.port}`;
  return { origin: `${template.scheme}//${targetHost}`, targetHost };
}

/** Most specific route first (Array.prototype.sort is stable: equal routes keep config order). */
function bySpecificity(a: Upstream, b: Upstream): number {
  const hostRank = (u: Upstream) => (u.routeHost === null ? 0 : u.routeHost.startsWith('*.') ? 1 : 2);
  return hostRank(b) - hostRank(a) || (b.routeHost?.length ?? 0) - (a.routeHost?.length ?? 0) || (b.prefix?.length ?? 0) - (a.prefix?.length ?? 0);
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

/**
 * Upstreams whose route changes what a SigV4 client signed: the path (a
 * stripped prefix) or the Host (not preserved). A store that checks
 * signatures (AWS S3, Cloud Storage's XML API with HMAC keys) answers every
 * such request with SignatureDoesNotMatch. Not an error: stores that check
 * no signatures (the demo upstream, some S3-compatible test servers) work.
 */
export function signedRequestWarnings(config: Config): ConfigProblem[] {
  const demo = config.demo_upstream === undefined ? null : `${config.demo_upstream.host}:${config.demo_upstream.port}`;
  const warnings: ConfigProblem[] = [];
  config.upstreams.forEach((u, i) => {
    if (u.provider !== 's3') return;
    if (demo !== null && URL.canParse(u.url) && new URL(u.url).host === demo) return;
    if (u.route.strip_prefix === true && u.route.path_prefix !== undefined && u.route.path_prefix !== '/') {
      warnings.push({
        path: `upstreams[${i}].route.strip_prefix`,
        message: `stripping ${u.route.path_prefix} changes the path a SigV4 client signed: a store that checks signatures answers SignatureDoesNotMatch`,
        expected: 'a route by host (clients use the store\'s own name, see forward_proxy), or a store that checks no signatures',
      });
    }
    if (u.preserve_host === false) {
      warnings.push({
        path: `upstreams[${i}].preserve_host`,
        message: 'the store receives its own Host, not the one a SigV4 client signed: a store that checks signatures answers SignatureDoesNotMatch',
        expected: 'preserve_host: true, or a store that checks no signatures',
      });
    }
  });
  return warnings;
}
