import type { Operation } from '../config/schema.js';
import type { CreateBucketTarget } from '../location/request/create-bucket.js';
import { verifySigV4 } from '../location/request/sigv4-verify.js';
import type { StoredLocation } from '../location/request/uploads.js';
import type { NetworkLocation } from '../location/network-locator.js';
import { distinctSignals, placeSignals, toLocation, type Location, type Signal } from '../location/signals.js';
import { decide, type Decision, type Policy } from '../policy/engine.js';
import { readAzure } from './azure.js';
import { compileClassifier, type Classifier } from './classify.js';
import { readGcs } from './gcs.js';
import { normalizePath, splitTarget } from './normalize.js';
import { planningQuery } from './query.js';
import { reject, requestHasBody, type FollowUp, type Inspect, type ReadContext, type Reading, type Reject, type RequestHeaders, type UploadKind } from './reading.js';
import { hostnameOf, Router, type RouteMatch, type Upstream } from './route.js';
import { readS3, s3TunnelHost } from './s3.js';

export { multipartKey } from './s3.js';
export type { FollowUp, Inspect, Reject, RequestHeaders, UploadKind };

/**
 * route → read (the provider's own reading) → locate → decide. `prepare`
 * does everything that needs no I/O and says what else the request needs (a
 * body to read, a bucket region to discover, the stored location of an
 * upload it continues); the proxy does that work and hands the results to
 * `finish`, which decides. Where the route's host is on the network (the
 * address the request will be sent to and its site/cloud-range/GeoIP
 * signals) is also handed to `finish`: every request has it, from the
 * locator's cache. `explain` and policy tests run the very same code
 * without any I/O.
 */
export interface RequestInput {
  method: string;
  /** The request-target as received (origin form: path and query). */
  target: string;
  /** The Host header (validated by hygiene in the proxy). */
  host: string;
  /** The request headers (Node's IncomingHttpHeaders fit): location, identity and whether a body follows. */
  headers?: RequestHeaders;
  /**
   * Location facts to assume instead of looking them up (policy tests): these
   * signals replace the declared ones when `replaceDeclared` is set, else add to them.
   */
  assume?: { signals: readonly Signal[]; replaceDeclared: boolean };
}

/** Work between prepare and finish; at least one field is set. */
export interface Needs {
  /** A bucket-creating request: read its body (bounded) and add where it puts the bucket. */
  readonly createBucket?: CreateBucketTarget;
  /** A body that names where else the request writes (S3 bucket configurations, GCS batch, relocate, compose). */
  readonly inspect?: Inspect;
  /** An S3 write to a bucket nothing declares: ask the upstream where it is. */
  readonly discover?: string;
  /** Continues an upload: the location stored when it started joins the request's own (shared-cache key). */
  readonly upload?: { readonly kind: UploadKind; readonly key: string };
}

export interface Prepared {
  readonly kind: 'prepared';
  readonly route: RouteMatch;
  readonly path: string;
  readonly query: string | null;
  readonly method: string;
  readonly operation: Operation;
  readonly bucket: string | null;
  /** Where the storage service takes the bucket from: the Host it receives, or the path. */
  readonly bucketFrom: 'host' | 'path' | null;
  /** The SigV4 access key id the request claims (recorded; matched by exceptions only when verified). */
  readonly principal: string | null;
  /** The claimed principal's signature was verified with its configured secret key. */
  readonly principalVerified: boolean;
  /** A body on a request that otherwise reads: a query the provider reads as such, or one decided as a write. */
  readonly body: 'query' | 'on-read' | null;
  /** What is known without I/O: declared (upstream, account, bucket), Host name and SigV4 signals, destinations, assumptions. */
  readonly location: Location;
  /** Null for the common request that needs nothing more. */
  readonly needs: Needs | null;
  readonly follow: FollowUp | null;
}

/** What the proxy found between prepare and finish. */
export interface Found {
  /** Signals to add (create-bucket body, discovered region, destinations named in a body). */
  readonly signals?: readonly Signal[];
  /** For `needs.upload`: the stored location (null: none stored, so the location is unknown). */
  readonly upload?: StoredLocation | null;
}

export interface Decided extends Omit<Prepared, 'kind' | 'needs' | 'follow'> {
  readonly kind: 'decided';
  /**
   * Where the target is on the network: the address the request goes to and
   * that address's signals. Null when network location is off (or, for
   * policy tests and `explain --offline`, not looked at).
   */
  readonly network: NetworkLocation | null;
  readonly decision: Decision;
  /** The shadow policy's decision, when one is configured and it decided differently. */
  readonly shadow: Decision | null;
  /** Set when the request continues an upload: its stored location joined the request's own. */
  readonly upload: { readonly kind: UploadKind; readonly known: boolean } | null;
  readonly needs: Needs | null;
  readonly follow: FollowUp | null;
}

export type Plan = Reject | Decided;

const NO_HEADERS: RequestHeaders = {};
const NOTHING_FOUND: Found = {};
/** No address to send to: nothing can be said about where the data would go. */
const UNKNOWN_LOCATION = toLocation([]);
/** A continuation whose upload is not known (started elsewhere, refused, expired): never waved through. */
const UNKNOWN_UPLOAD: Signal = Object.freeze({ source: 'upload', value: 'unknown upload', jurisdiction: null });

/** Everything a plan needs, compiled once per policy load. */
export class Planner {
  private readonly router: Router;
  private readonly classifiers = new Map<string, Classifier>();
  /** Whether any exception names principals: only then is a claimed principal worth verifying. */
  private readonly principalsMatter: boolean;

  constructor(
    readonly upstreams: readonly Upstream[],
    readonly policy: Policy,
    /** A candidate policy evaluated beside the active one, never acted on. */
    readonly shadowPolicy: Policy | null = null,
    /** Injectable clock for exception expiry and signature time checks. */
    private readonly now: () => number = Date.now,
    /** Whether a fleet-wide lockdown is in force (read per request). */
    private readonly lockdown: () => boolean = () => false,
    /** Secret keys of the principals exceptions name (principal_keys): the only way a principal counts. */
    private readonly principalKeys: ReadonlyMap<string, string> | null = null,
  ) {
    this.router = new Router(upstreams);
    for (const u of upstreams) this.classifiers.set(u.name, compileClassifier(u.provider, u.classify));
    this.principalsMatter = principalKeys !== null && [policy, shadowPolicy].some((p) => p?.exceptions.some((e) => e.principals !== null));
  }

  /** prepare + finish with nothing looked up: for policy tests and callers that do no I/O. */
  plan(input: RequestInput): Plan {
    const prepared = this.prepare(input);
    return prepared.kind === 'reject' ? prepared : this.finish(prepared);
  }

  /**
   * For an answer given before any decision (a request refused by hygiene or
   * by planning): the provider of the route the request names, absolute-form
   * targets included, so the refusal comes in a format the client's SDK
   * reads. Null when no route is clear (a path that does not normalise
   * could name any route): then problem+json.
   */
  providerFor(host: string | undefined, target: string): Upstream['provider'] | null {
    if (/^https?:\/\//i.test(target)) {
      if (!URL.canParse(target)) return null;
      const url = new URL(target);
      host = url.host;
      target = url.pathname + url.search;
    }
    const read = readTarget(target);
    if ('kind' in read) return null;
    return this.router.match(hostnameOf(host ?? ''), read.path)?.upstream.provider ?? null;
  }

  /**
   * The upstream a CONNECT to `hostname:port` is intercepted for, or null
   * (refused): a tunnel is opened only to a host whose requests the upstream
   * would forward (under AWS names an S3 endpoint, not STS or EC2).
   */
  tunnelFor(hostname: string, port: number): Upstream | null {
    const host = hostname.toLowerCase();
    const upstream = this.router.tunnel(host, port);
    return upstream !== null && upstream.provider === 's3' && !s3TunnelHost(host) ? null : upstream;
  }

  /** Route, read and locate from config and the request alone; no I/O. */
  prepare(input: RequestInput): Reject | Prepared {
    const target = readTarget(input.target);
    if ('kind' in target) return target;
    const { rawPath, path, query } = target;
    const hostname = hostnameOf(input.host);

    const route = this.router.match(hostname, path);
    if (route === null) return reject(404, 'no_route', `no upstream is configured for host ${hostname} and path ${path}`);
    const { upstream, upstreamPath } = route;
    const decoded = queryAsRead(query, upstream.provider !== 'generic');
    if (typeof decoded === 'object' && decoded !== null) return decoded;
    const headers = input.headers ?? NO_HEADERS;
    const context: ReadContext = {
      route,
      upstream,
      // The Host the storage service acts on: the client's when preserved, else the upstream's own.
      storeHost: upstream.preserveHost ? hostname : hostnameOf(route.targetHost),
      path: upstreamPath,
      query: decoded,
      method: input.method,
      headers,
      classify: this.classifiers.get(upstream.name)!,
    };
    const reading = this.read(context);
    if ('kind' in reading) return reading;

    let operation = reading.operation;
    let body: Prepared['body'] = null;
    if (operation === 'read' && requestHasBody(headers)) {
      // A read has no body to store, unless the provider reads it as a query: any other body is decided as a write.
      if (reading.bodyIsQuery) body = 'query';
      else {
        body = 'on-read';
        operation = 'write';
      }
    }

    // Declared: per bucket, else (Azure) per account, else the upstream's.
    const bucket = reading.bucket;
    let location = upstream.declared.forBucket(bucket);
    if (upstream.accounts !== null && reading.account !== undefined && (bucket === null || !upstream.declaredBuckets.has(bucket))) {
      location = upstream.accounts.get(reading.account) ?? location;
    }
    const own = [...reading.signals];
    for (const destination of reading.destinations) own.push(...this.destinationSignals(upstream, destination, { fallback: true }));
    if (input.assume) {
      location = toLocation(input.assume.replaceDeclared ? [...own, ...input.assume.signals] : [...location.signals, ...own, ...input.assume.signals]);
    } else if (own.length > 0) {
      location = toLocation([...location.signals, ...own]);
    }

    const claimed = reading.scope?.accessKeyId ?? reading.sigV2KeyId ?? null;
    const principalVerified = claimed !== null && this.principalsMatter && this.verifyPrincipal(input, rawPath, query, headers);

    const { createBucket, inspect, discover, upload } = reading;
    const needs =
      createBucket === undefined && inspect === undefined && discover === undefined && upload === undefined
        ? null
        : { ...(createBucket ? { createBucket } : {}), ...(inspect ? { inspect } : {}), ...(discover ? { discover } : {}), ...(upload ? { upload } : {}) };
    return {
      kind: 'prepared',
      route,
      path,
      query,
      method: input.method,
      operation,
      bucket,
      bucketFrom: reading.bucketFrom,
      principal: claimed,
      principalVerified,
      body,
      location,
      needs,
      follow: reading.follow,
    };
  }

  /**
   * Where a bucket on this upstream that a request writes to besides its own
   * target is: its declared entry, the region discovery found, or (with
   * `fallback`, where a direct write to it would be decided the same way)
   * the upstream's declared location. Nothing: one signal that places
   * nothing, so the location is unknown.
   */
  destinationSignals(upstream: Upstream, bucket: string, options: { fallback: boolean; discovered?: string | null }): Signal[] {
    const discovered = options.discovered ?? null;
    let places: readonly Signal[] = [];
    // Declared beats discovered, as for a request's own bucket.
    if (upstream.declaredBuckets.has(bucket)) places = upstream.declared.forBucket(bucket).signals;
    else if (discovered !== null) places = placeSignals('discovered', discovered);
    else if (options.fallback) places = upstream.declared.forBucket(null).signals;
    if (places.length === 0) return [{ source: 'destination', value: 'unknown', jurisdiction: null, bucket }];
    return places.map((s) => ({ source: 'destination', value: s.value, jurisdiction: s.jurisdiction, ...(s.region === undefined ? {} : { region: s.region }), bucket }));
  }

  /** Whether a destination bucket's region has to be discovered before it can be placed. */
  needsDiscovery(upstream: Upstream, bucket: string): boolean {
    return upstream.discovery !== null && !upstream.declaredBuckets.has(bucket);
  }

  /** The provider's reading of one request (also for each request inside a batch). */
  read(context: ReadContext): Reading | Reject {
    switch (context.upstream.provider) {
      case 's3':
        return readS3(context);
      case 'gcs':
        return readGcs(context);
      case 'azure':
        return readAzure(context);
      case 'generic':
        return { operation: context.classify(context.method, context.path, context.query), bucket: null, bucketFrom: null, signals: [], scope: null, destinations: [], bodyIsQuery: false, follow: null };
    }
  }

  /** The provider's reading of a request inside another (a Cloud Storage batch call), on the same route. */
  readPart(route: RouteMatch, method: string, target: string, headers: RequestHeaders): Reading | Reject {
    const read = readTarget(target);
    if ('kind' in read) return read;
    const decoded = queryAsRead(read.query, true);
    if (typeof decoded === 'object' && decoded !== null) return decoded;
    const upstream = route.upstream;
    // Batch calls go to the JSON API on Google's endpoint, whatever Host carried the batch.
    const context: ReadContext = { route, upstream, storeHost: 'storage.googleapis.com', path: read.path, query: decoded, method, headers, classify: this.classifiers.get(upstream.name)! };
    return this.read(context);
  }

  /** Verify the request's SigV4 signature with the claimed principal's key, as S3 would (the path and query as sent). */
  private verifyPrincipal(input: RequestInput, rawPath: string, query: string | null, headers: RequestHeaders): boolean {
    const keys = this.principalKeys!;
    const verified = verifySigV4({ method: input.method, path: rawPath, query, headers, host: input.host }, (id) => keys.get(id), this.now());
    return verified.ok;
  }

  /**
   * Decide, on what prepare knew plus what the proxy found, and (network
   * location on) where the route's host is: its signals join the others,
   * and a host with no address has an unknown location. Pure.
   */
  finish(prepared: Prepared, found: Found = NOTHING_FOUND, network: NetworkLocation | null = null): Decided {
    let location = prepared.location;
    let upload: Decided['upload'] = null;
    const uploadNeed = prepared.needs?.upload;
    const added = found.signals ?? [];
    if (uploadNeed !== undefined && found.upload !== undefined) {
      // Continuing an upload: the location it started with joins this request's
      // own (its Host, scope, bucket); an upload not stored, or stored for
      // another bucket, is unknown: never waved through. The stored network
      // signals were for the address the upload started on; this request goes
      // to the address located now (added below).
      const stored = found.upload;
      const sameBucket = stored !== null && (stored.bucket === null || prepared.bucket === null || stored.bucket === prepared.bucket);
      const storedSignals = !sameBucket ? [UNKNOWN_UPLOAD] : network === null ? stored.signals : stored.signals.filter((s) => !s.source.startsWith('network:'));
      // The same signal twice (a continuation's stored and own declared location) is recorded once.
      location = toLocation(distinctSignals([...storedSignals, ...location.signals, ...added]));
      upload = { kind: uploadNeed.kind, known: sameBucket };
    } else if (added.length > 0) {
      location = toLocation([...location.signals, ...added]);
    }
    if (network !== null) location = withNetwork(location, network);
    const { route, operation, bucket } = prepared;
    // A claimed principal counts only when its signature was verified.
    const principal = prepared.principalVerified ? prepared.principal : null;
    const facts = { upstream: route.upstream.name, operation, method: prepared.method, path: route.upstreamPath, bucket, principal };
    const now = this.policy.exceptions.length > 0 || this.shadowPolicy !== null ? this.now() : 0;
    const lockdown = this.lockdown();
    const decision = decide(this.policy, facts, location.jurisdictions, now, lockdown, location.unplaced);
    let shadow: Decision | null = null;
    if (this.shadowPolicy !== null) {
      const candidate = decide(this.shadowPolicy, facts, location.jurisdictions, now, lockdown, location.unplaced);
      if (candidate.action !== decision.action || candidate.rule !== decision.rule || candidate.reason !== decision.reason) shadow = candidate;
    }
    return {
      kind: 'decided',
      route,
      path: prepared.path,
      query: prepared.query,
      method: prepared.method,
      operation,
      bucket,
      bucketFrom: prepared.bucketFrom,
      principal: prepared.principal,
      principalVerified: prepared.principalVerified,
      body: prepared.body,
      location,
      network,
      decision,
      shadow,
      upload,
      needs: prepared.needs,
      follow: prepared.follow,
    };
  }
}

/** A request-target split and its path normalised (the path decided is the path forwarded), or why not. */
function readTarget(target: string): { rawPath: string; path: string; query: string | null } | Reject {
  const { path: rawPath, query } = splitTarget(target);
  const normalized = normalizePath(rawPath);
  return normalized.ok ? { rawPath, path: normalized.path, query } : reject(400, 'bad_path', normalized.reason);
}

/** The query with its names decoded as the service decodes them (see planningQuery), or why it cannot be read. */
function queryAsRead(query: string | null, strict: boolean): string | null | Reject {
  const decoded = planningQuery(query, strict);
  return decoded.ok ? decoded.query : reject(400, 'bad_query', decoded.detail);
}

/**
 * Locations combined with network locations, per pair. Both sides are
 * long-lived frozen objects on the hot path (an upstream's declared
 * location, the locator's per-address result), so a request to a located
 * upstream allocates nothing here; per-request locations (request signals)
 * are collected with their entries.
 */
const COMBINED = new WeakMap<Location, WeakMap<NetworkLocation, Location>>();

/**
 * The location plus the network's signals. A GeoIP answer that places
 * nothing (a private or loopback address, a gap in the database) says
 * nothing and is left out of the record; the address is recorded as the
 * target either way. No address at all: the location is unknown.
 */
export function withNetwork(location: Location, network: NetworkLocation): Location {
  if (network.address === null) return UNKNOWN_LOCATION;
  let byNetwork = COMBINED.get(location);
  const cached = byNetwork?.get(network);
  if (cached !== undefined) return cached;
  const added = network.signals.filter((s) => s.jurisdiction !== null || s.source !== 'network:geoip');
  const result = added.length === 0 ? location : toLocation([...location.signals, ...added]);
  if (byNetwork === undefined) {
    byNetwork = new WeakMap();
    COMBINED.set(location, byNetwork);
  }
  byNetwork.set(network, result);
  return result;
}
