import type { Operation } from '../config/schema.js';
import { bucketOf, decode } from '../location/bucket.js';
import {
  azureAccountFromPath,
  gcsHostBucket,
  gcsSessionKey,
  gcsUploadId,
  isGcsResumableStart,
  parseAzureHost,
  parseGcsRequest,
} from '../location/request/azure-gcs.js';
import { detectCreateBucket, type CreateBucketTarget } from '../location/request/create-bucket.js';
import { parseS3Host, s3HostSignals, type S3HostInfo } from '../location/request/s3-host.js';
import { parseSigV4, sigv4Signals } from '../location/request/sigv4.js';
import { hashKey, type StoredLocation } from '../location/request/uploads.js';
import type { NetworkLocation } from '../location/network-locator.js';
import { toLocation, type Location, type Signal } from '../location/signals.js';
import { decide, type Decision, type Policy } from '../policy/engine.js';
import { compileClassifier, hasParam, paramValue, type Classifier } from './classify.js';
import { normalizePath, splitTarget } from './normalize.js';
import { hostnameOf, Router, type RouteMatch, type Upstream } from './route.js';

/**
 * route → classify → locate → decide. `prepare` does everything that needs
 * no I/O and says what else the request needs (a create-bucket body, a
 * bucket region discovery, the stored location of an upload it continues);
 * the proxy does that work and hands the results to `finish`, which decides.
 * Where the route's host is on the network (the address the request will be
 * sent to and its site/cloud-range/GeoIP signals) is also handed to
 * `finish`: every request has it, from the locator's cache.
 * `explain` and policy tests run the very same code without any I/O.
 */
export interface RequestInput {
  method: string;
  /** The request-target as received (origin form: path and query). */
  target: string;
  /** The Host header (validated by hygiene in the proxy). */
  host: string;
  /** The request headers that carry location or identity (Node's IncomingHttpHeaders fit). */
  headers?: RequestHeaders;
  /**
   * Location facts to assume instead of looking them up (policy tests): these
   * signals replace the declared ones when `replaceDeclared` is set, else add to them.
   */
  assume?: { signals: readonly Signal[]; replaceDeclared: boolean };
}

/** Lower-case names, as Node delivers them. */
export interface RequestHeaders {
  readonly authorization?: string | undefined;
  readonly 'x-amz-region-set'?: string | string[] | undefined;
  readonly 'x-goog-resumable'?: string | string[] | undefined;
  readonly 'content-encoding'?: string | undefined;
  readonly 'x-amz-content-sha256'?: string | string[] | undefined;
  readonly 'x-http-method-override'?: string | string[] | undefined;
}

export type UploadKind = 'multipart' | 'gcs-resumable';

/** Work between prepare and finish; at least one field is set. */
export interface Needs {
  /** A bucket-creating request: read its body (bounded) and add where it puts the bucket. */
  readonly createBucket?: CreateBucketTarget;
  /** An S3 write to a bucket nothing declares: ask the upstream where it is. */
  readonly discover?: string;
  /** Continues an upload: decide on the location stored when it started (shared-cache key). */
  readonly upload?: { readonly kind: UploadKind; readonly key: string };
}

/** What to remember once the upstream has answered. */
export interface FollowUp {
  /** CreateMultipartUpload: store the location under the UploadId in the response. */
  readonly multipartStart?: { readonly bucket: string; readonly key: string };
  /** A resumable session start: store the location under the session id in the Location header. */
  readonly gcsStart?: { readonly bucket: string | null };
  /** An undeclared S3 bucket on a discovery upstream: learn its region from x-amz-bucket-region. */
  readonly learnRegion?: string;
  /** DeleteBucket: forget its discovered region. */
  readonly forgetRegion?: string;
}

export interface Reject {
  readonly kind: 'reject';
  readonly status: number;
  readonly code: string;
  readonly detail: string;
}

export interface Prepared {
  readonly kind: 'prepared';
  readonly route: RouteMatch;
  readonly path: string;
  readonly query: string | null;
  readonly method: string;
  readonly operation: Operation;
  readonly bucket: string | null;
  /** The SigV4 access key id, when the request carries one. */
  readonly principal: string | null;
  /** What is known without I/O: declared (upstream, account, bucket), Host name and SigV4 signals, assumptions. */
  readonly location: Location;
  /** Null for the common request that needs nothing more. */
  readonly needs: Needs | null;
  readonly follow: FollowUp | null;
}

/** What the proxy found between prepare and finish. */
export interface Found {
  /** Signals to add (create-bucket body, discovered region). */
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
  /** Set when the request continues an upload and was decided on its stored location. */
  readonly upload: { readonly kind: UploadKind; readonly known: boolean } | null;
  readonly needs: Needs | null;
  readonly follow: FollowUp | null;
}

export type Plan = Reject | Decided;

const NO_HEADERS: RequestHeaders = {};
const NOTHING_FOUND: Found = {};
/** No address to send to: nothing can be said about where the data would go. */
const UNKNOWN_LOCATION = toLocation([]);
const AWS_HOST = /\.amazonaws\.com(?:\.cn)?\.?$/;
const GCS_XML_HOST = /\.storage\.googleapis\.com\.?$/;
const AZURE_HOST = /\.(?:core\.windows\.net|core\.usgovcloudapi\.net|core\.chinacloudapi\.cn|storage\.azure\.net)\.?$/;
const METHOD_TOKEN = /^[A-Za-z]{1,16}$/;

/** The shared-cache key of a multipart upload: scoped by upstream, bucket and object key; the id hashed. */
export function multipartKey(upstream: string, bucket: string, key: string, uploadId: string): string {
  return 'multipart:' + hashKey(upstream, bucket, key, uploadId);
}

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
    /** Whether a fleet-wide lockdown is in force (read per request). */
    private readonly lockdown: () => boolean = () => false,
  ) {
    this.router = new Router(upstreams);
    for (const u of upstreams) this.classifiers.set(u.name, compileClassifier(u.provider, u.classify));
  }

  /** prepare + finish with nothing looked up: for policy tests and callers that do no I/O. */
  plan(input: RequestInput): Plan {
    const prepared = this.prepare(input);
    return prepared.kind === 'reject' ? prepared : this.finish(prepared);
  }

  /** Route, classify and locate from config and the request alone; no I/O. */
  prepare(input: RequestInput): Reject | Prepared {
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
    const provider = upstream.provider;
    const headers = input.headers ?? NO_HEADERS;
    const method = input.method;
    const classify = this.classifiers.get(upstream.name)!;
    let operation = classify(method, upstreamPath, query);

    let bucket: string | null;
    /** The bucket a virtual-hosted Host named (S3, GCS XML API). */
    let hostBucket: string | null = null;
    let s3Host: S3HostInfo | null = null;
    if (provider === 's3') {
      if (AWS_HOST.test(hostname)) s3Host = parseS3Host(hostname);
      if (s3Host !== null) {
        hostBucket = s3Host.style === 'path' ? null : s3Host.bucket;
        if (upstream.hostTemplate !== null && s3Host.style === 'accesspoint' && s3Host.region === null) {
          // A multi-region access point is not one place: nothing could say where the data goes.
          return { kind: 'reject', status: 404, code: 'no_route', detail: `${hostname} is a multi-region access point, which this upstream does not forward to` };
        }
      } else if (upstream.hostTemplate !== null && AWS_HOST.test(hostname)) {
        // A {host} upstream for AWS forwards to S3 endpoints only, not to any other service under the pattern.
        return { kind: 'reject', status: 404, code: 'no_route', detail: `${hostname} is not an S3 endpoint` };
      } else if (upstream.routeHost !== null && !upstream.routeHost.startsWith('*.')) {
        // BUCKET.<route host> is virtual-hosted on an S3-compatible domain (as
        // bucketOf reads it; a wildcard route says nothing about addressing).
        const routeHost = upstream.routeHost;
        if (hostname.length > routeHost.length + 1 && hostname.endsWith(routeHost) && hostname[hostname.length - routeHost.length - 1] === '.') {
          hostBucket = hostname.slice(0, hostname.length - routeHost.length - 1);
        }
      }
      bucket = hostBucket ?? (s3Host?.style === 'accesspoint' ? null : bucketOf('s3', upstreamPath, hostname, null, false));
    } else if (provider === 'gcs') {
      if (GCS_XML_HOST.test(hostname)) hostBucket = gcsHostBucket(hostname) ?? null;
      bucket = hostBucket ?? bucketOf('gcs', upstreamPath, hostname, upstream.routeHost, false);
    } else {
      bucket = bucketOf(provider, upstreamPath, hostname, upstream.routeHost, upstream.accountInPath);
    }

    // Declared: per bucket, else (Azure) per account, else the upstream's.
    let location = upstream.declared.forBucket(bucket);
    if (upstream.accounts !== null && (bucket === null || !upstream.declaredBuckets.has(bucket))) {
      const account = AZURE_HOST.test(hostname)
        ? parseAzureHost(hostname)?.account
        : upstream.accountInPath
          ? azureAccountFromPath(upstreamPath)?.account
          : undefined;
      const byAccount = account === undefined ? undefined : upstream.accounts.get(account);
      if (byAccount !== undefined) location = byAccount;
    }
    const declaredNothing = location.signals.length === 0;

    // What the request itself says: only for real cloud endpoints (request_signals).
    let principal: string | null = null;
    let requestSignals: Signal[] | null = null;
    if (provider === 's3') {
      const scope = headers.authorization !== undefined || query !== null ? parseSigV4(headers, query) : null;
      principal = scope?.accessKeyId ?? null;
      if (upstream.requestSignals) {
        const found = [...s3HostSignals(s3Host), ...sigv4Signals(scope)];
        if (found.length > 0) requestSignals = found;
      }
    }

    if (input.assume) {
      const own = requestSignals ?? [];
      location = toLocation(input.assume.replaceDeclared ? [...own, ...input.assume.signals] : [...location.signals, ...own, ...input.assume.signals]);
    } else if (requestSignals !== null) {
      location = toLocation([...location.signals, ...requestSignals]);
    }

    let createBucket: CreateBucketTarget | undefined;
    let discover: string | undefined;
    let upload: Needs['upload'];
    let follow: { -readonly [K in keyof FollowUp]: FollowUp[K] } | null = null;
    const isWrite = operation === 'write';

    if (provider === 's3') {
      const key = bucket === null ? '' : objectKey(upstreamPath, hostBucket !== null);
      if (method === 'PUT' && upstream.requestSignals && key === '') {
        createBucket = detectCreateBucket('s3', method, upstreamPath, query, hostBucket) ?? undefined;
      }
      if (query !== null && bucket !== null && key !== '') {
        if (method === 'POST' && hasParam(query, 'uploads')) {
          follow = { multipartStart: { bucket, key } };
        } else if (isWrite && method !== 'DELETE') {
          // UploadPart, UploadPartCopy, CompleteMultipartUpload. (AbortMultipartUpload only removes data.)
          const id = paramValue(query, 'uploadId');
          if (id !== undefined) upload = { kind: 'multipart', key: multipartKey(upstream.name, bucket, key, decode(id)) };
        }
      }
      if (upstream.discovery !== null && bucket !== null && declaredNothing) {
        // Declared beats discovered: only a bucket nothing declares is looked up.
        follow = { ...follow, learnRegion: bucket };
        if (isWrite && createBucket === undefined && upload === undefined) discover = bucket;
        if (method === 'DELETE' && key === '' && (query === null || query === 'x-id=DeleteBucket')) follow.forgetRegion = bucket;
      }
    } else if (provider === 'gcs') {
      let effective = method;
      const override = headers['x-http-method-override'];
      if (method === 'POST' && typeof override === 'string' && METHOD_TOKEN.test(override) && isJsonApi(upstreamPath)) {
        effective = override.toUpperCase();
        // The stricter reading: an upstream that ignores the override runs a POST.
        if (classify(effective, upstreamPath, query) === 'write') operation = 'write';
      }
      if (upstream.requestSignals && (effective === 'POST' || effective === 'PUT')) {
        createBucket = detectCreateBucket('gcs', effective, upstreamPath, query, hostBucket) ?? undefined;
      }
      const sessionId = query !== null && query.includes('upload_id') ? gcsUploadId(query) : null;
      if (sessionId !== null) {
        // Cancelling a session (DELETE) stores nothing: decided as itself.
        if (operation === 'write' && method !== 'DELETE') upload = { kind: 'gcs-resumable', key: gcsSessionKey(upstream.name, sessionId) };
      } else if (method === 'POST') {
        const target = parseGcsRequest(hostname, upstreamPath);
        if (target !== null && isGcsResumableStart(method, target, query, headers)) follow = { gcsStart: { bucket: target.bucket ?? bucket } };
      }
    }

    const needs =
      createBucket === undefined && discover === undefined && upload === undefined
        ? null
        : { ...(createBucket ? { createBucket } : {}), ...(discover ? { discover } : {}), ...(upload ? { upload } : {}) };
    return { kind: 'prepared', route, path, query, method, operation, bucket, principal, location, needs, follow };
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
    if (uploadNeed !== undefined && found.upload !== undefined) {
      // Continuing an upload: its own location is the one it started with, or
      // unknown when none was stored (started elsewhere, or refused): never waved through.
      const stored = found.upload?.signals ?? [];
      // The network signals stored were for the address the upload started on;
      // this part goes to the address located now (added below).
      location = toLocation(network === null ? stored : stored.filter((s) => !s.source.startsWith('network:')));
      upload = { kind: uploadNeed.kind, known: found.upload !== null };
    } else if (found.signals !== undefined && found.signals.length > 0) {
      location = toLocation([...location.signals, ...found.signals]);
    }
    // An unknown upload stays unknown: the network alone must not make it decidable.
    if (network !== null && (upload === null || upload.known)) location = withNetwork(location, network);
    const { route, operation, bucket, principal } = prepared;
    const facts = { upstream: route.upstream.name, operation, method: prepared.method, path: route.upstreamPath, bucket, principal };
    const now = this.policy.exceptions.length > 0 || this.shadowPolicy !== null ? this.now() : 0;
    const lockdown = this.lockdown();
    const decision = decide(this.policy, facts, location.jurisdictions, now, lockdown);
    let shadow: Decision | null = null;
    if (this.shadowPolicy !== null) {
      const candidate = decide(this.shadowPolicy, facts, location.jurisdictions, now, lockdown);
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
      principal,
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

/** The object key part of an S3 path ('' for a bucket-level request), as sent (not decoded). */
function objectKey(path: string, virtualHosted: boolean): string {
  if (virtualHosted) return path.slice(1);
  const slash = path.indexOf('/', 1);
  return slash === -1 ? '' : path.slice(slash + 1);
}

/** Cloud Storage's JSON API (which honours X-HTTP-Method-Override), as opposed to its XML API. */
function isJsonApi(path: string): boolean {
  return path.startsWith('/storage/') || path.startsWith('/upload/') || path.startsWith('/batch/');
}

