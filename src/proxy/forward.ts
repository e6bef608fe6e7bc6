import { EventEmitter } from 'node:events';
import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import { Dispatcher, Pool, type buildConnector } from 'undici';
import { PinnedPools } from './pinned-pools.js';
import type { Upstream } from '../plan/route.js';

/**
 * Forwarding over undici: keep-alive pools, bodies streamed both ways with
 * backpressure, never buffered. Only configured upstreams ever get a pool.
 * A `{host}` upstream gets pools per requested host, and only for hosts its
 * route's host pattern admitted.
 *
 * With network location on, every request is sent with the address its
 * location was decided on, and goes to exactly that address (PinnedPools:
 * the pool's origin is the address; TLS still checks the upstream's name).
 * The HTTP client never resolves an upstream name itself, so a DNS answer
 * that changes between the check and the connection cannot send data
 * somewhere unchecked. Without network location, pools connect to the URL's
 * host and undici resolves it.
 */
export interface ForwardRequest {
  method: string;
  /** Path and query as sent upstream. */
  path: string;
  /** Flat [name, value, name, value …] list, hop-by-hop headers already removed. */
  headers: string[];
  /** Streamed, or (a create-bucket body the proxy inspected) exactly these bytes. */
  body: RequestBody | Buffer | null;
}

export type ForwardFailure = 'upstream_unreachable' | 'upstream_timeout' | 'upstream_reset' | 'client_aborted' | 'upstream_unresolved';

export interface ForwarderOptions {
  /**
   * Extra socket options for every pool (merged over the upstream's connect
   * timeout), e.g. a `lookup` that resolves test names to loopback (unpinned
   * pools only: pinned ones connect to an address), or a TLS `ca`.
   */
  connect?: buildConnector.BuildOptions;
  /** Pools kept per `{host}` upstream (one per requested host and address); the least recently used is closed first. Default 256. */
  maxHostPools?: number;
  /**
   * Network location on: the address an upstream's own requests (bucket
   * region discovery) go to, from the locator's cache; null when its host
   * has no usable answer (the request then fails without connecting).
   */
  addressOf?: (upstream: Upstream) => string | null;
  /** Close a pinned pool idle this long (its address no longer in the DNS answer, a bucket host gone quiet). Default 60 s. */
  pinnedIdleMs?: number;
}

/** A request with no located address: never sent (there is nowhere checked to send it). */
export class UnresolvedUpstreamError extends Error {
  readonly code = 'RESIDENCY_UPSTREAM_UNRESOLVED';
  constructor(upstream: string, host: string) {
    super(`upstream ${upstream}: ${host} has no located address`);
    this.name = 'UnresolvedUpstreamError';
  }
}

export class Forwarder {
  /**
   * Pools by upstream object: compiled upstreams are replaced as a whole on a
   * policy reload, so a changed URL or timeout gets a fresh pool, and
   * in-flight requests keep the pool they started on.
   */
  private readonly pools = new Map<Upstream, Pool>();
  /** `{host}` upstreams: a pool per (upstream, requested origin), in least-recently-used order. */
  private readonly hostPools = new Map<Upstream, Map<string, Pool>>();
  /** Pinned pools, per upstream object (a reload's new upstreams get fresh ones, like `pools`). */
  private readonly pinned = new Map<Upstream, PinnedPools>();
  /** `{host}` upstreams: the URL of each requested origin, for its pinned pools (bounded like the pools). */
  private readonly originUrls = new Map<string, URL>();
  private readonly maxHostPools: number;

  constructor(private readonly options: ForwarderOptions = {}) {
    this.maxHostPools = options.maxHostPools ?? 256;
  }

  private create(u: Upstream, origin: string): Pool {
    return new Pool(origin, { ...poolSettings(u), connect: this.connectFor(u) });
  }

  /** Socket options for an upstream's pools: its connect timeout, and its CA bundle when it names one. */
  private connectFor(u: Upstream): buildConnector.BuildOptions {
    return { timeout: u.timeouts.connect, ...this.options.connect, ...(u.ca === null ? {} : { ca: u.ca }) };
  }

  private pinnedFor(u: Upstream): PinnedPools {
    let pools = this.pinned.get(u);
    if (pools === undefined) {
      pools = new PinnedPools({
        // The upstream's settings whatever the origin (a {host} upstream's hosts share them).
        pool: () => ({ ...poolSettings(u), connect: this.connectFor(u) }),
        idleMs: this.options.pinnedIdleMs ?? 60_000,
        ...(u.hostTemplate === null ? {} : { maxPools: this.maxHostPools }),
      });
      this.pinned.set(u, pools);
    }
    return pools;
  }

  /** The URL a pinned pool is for: the upstream's own, or (a `{host}` upstream) the requested origin's. */
  private urlFor(u: Upstream, origin: string): URL {
    if (u.hostTemplate === null) return u.url;
    let url = this.originUrls.get(origin);
    if (url === undefined) {
      url = new URL(origin);
      if (this.originUrls.size >= this.maxHostPools * 4) this.originUrls.clear();
      this.originUrls.set(origin, url);
    }
    return url;
  }

  private poolFor(u: Upstream, origin: string): Pool {
    if (u.hostTemplate === null) {
      let pool = this.pools.get(u);
      if (pool === undefined) {
        pool = this.create(u, u.url.origin);
        this.pools.set(u, pool);
      }
      return pool;
    }
    let byOrigin = this.hostPools.get(u);
    if (byOrigin === undefined) {
      byOrigin = new Map();
      this.hostPools.set(u, byOrigin);
    }
    let pool = byOrigin.get(origin);
    if (pool !== undefined) {
      // Refresh recency: Map order is the eviction order.
      byOrigin.delete(origin);
      byOrigin.set(origin, pool);
      return pool;
    }
    pool = this.create(u, origin);
    byOrigin.set(origin, pool);
    // Virtual-hosted buckets make one host per bucket: bound the pools, close the coldest gracefully.
    while (byOrigin.size > this.maxHostPools) {
      const [coldest, old] = byOrigin.entries().next().value as [string, Pool];
      byOrigin.delete(coldest);
      old.close().catch(() => old.destroy());
    }
    return pool;
  }

  /**
   * The upstream's own pool, for requests the proxy makes itself (bucket
   * region discovery): they go to the configured endpoint only, never to a
   * host a client named. Not for `{host}` upstreams, which have none.
   */
  dispatcherFor(upstream: Upstream): Dispatcher {
    if (upstream.hostTemplate !== null) throw new Error(`upstream ${upstream.name} forwards to the requested host: it has no pool of its own`);
    const addressOf = this.options.addressOf;
    if (addressOf === undefined) return this.poolFor(upstream, upstream.url.origin);
    // Network location on: to the upstream's located address, as forwarded requests go.
    return new PinnedDispatcher(upstream, () => {
      const address = addressOf(upstream);
      if (address === null) throw new UnresolvedUpstreamError(upstream.name, upstream.hostname);
      return this.pinnedFor(upstream).pool(upstream.url, address);
    });
  }

  /** After a reload: close (gracefully) the pools of upstreams no longer in use. */
  retain(current: readonly Upstream[]): void {
    const keep = new Set(current);
    for (const [u, pool] of this.pools) {
      if (keep.has(u)) continue;
      this.pools.delete(u);
      pool.close().catch(() => pool.destroy());
    }
    for (const [u, byOrigin] of this.hostPools) {
      if (keep.has(u)) continue;
      this.hostPools.delete(u);
      for (const pool of byOrigin.values()) pool.close().catch(() => pool.destroy());
    }
    for (const [u, pools] of this.pinned) {
      if (keep.has(u)) continue;
      this.pinned.delete(u);
      void pools.close();
    }
  }

  /**
   * Send to `origin` (a RouteMatch's: the upstream's own, or the requested
   * host's for a `{host}` upstream); the response goes to `handler` as it
   * arrives. With an `address` (network location on), the connection goes to
   * exactly that address; without, undici resolves the origin's host.
   */
  dispatch(upstream: Upstream, req: ForwardRequest, handler: Dispatcher.DispatchHandler, origin: string, address: string | null): void {
    const options: Dispatcher.DispatchOptions = {
      method: req.method as Dispatcher.HttpMethod,
      path: req.path,
      headers: req.headers,
      // undici streams it with backpressure (its types only list Readable).
      body: req.body as Readable | Buffer | null,
      // A refused or failed write must not be retried with a body we no longer have.
      idempotent: false,
    };
    if (address !== null) this.pinnedFor(upstream).dispatch(this.urlFor(upstream, origin), address, options, handler);
    else this.poolFor(upstream, origin).dispatch(options, handler);
  }

  /** Pinned pools open, for a gauge or a debug view. */
  get pinnedPools(): number {
    let n = 0;
    for (const pools of this.pinned.values()) n += pools.size;
    return n;
  }

  async close(): Promise<void> {
    const all = [...this.pools.values(), ...[...this.hostPools.values()].flatMap((m) => [...m.values()])];
    await Promise.all([...all.map((p) => p.close().catch(() => p.destroy())), ...[...this.pinned.values()].map((p) => p.close())]);
    this.pinned.clear();
  }
}

function poolSettings(u: Upstream) {
  return { headersTimeout: u.timeouts.headers, bodyTimeout: u.timeouts.body, keepAliveTimeout: 4_000, pipelining: 1 };
}

/**
 * An upstream's own requests (bucket region discovery) through its pinned
 * pools: the address is looked up per request from the locator's cache, and
 * the Host header is the upstream's (the pool's origin is an address).
 */
class PinnedDispatcher extends Dispatcher {
  constructor(
    private readonly upstream: Upstream,
    private readonly pool: () => Pool,
  ) {
    super();
  }

  override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    // Throws UnresolvedUpstreamError, which `request` turns into a rejection.
    const pool = this.pool();
    const headers = withHost(options.headers, this.upstream.hostHeader);
    const servername = this.upstream.url.protocol === 'https:' && isName(this.upstream.url.hostname) ? this.upstream.url.hostname : undefined;
    return pool.dispatch({ ...options, headers, ...(servername === undefined ? {} : { servername }) } as Dispatcher.DispatchOptions, handler);
  }
}

function isName(hostname: string): boolean {
  return !hostname.startsWith('[') && !/^\d+\.\d+\.\d+\.\d+$/.test(hostname);
}

/** Request headers with a Host header, unless they already have one. */
function withHost(headers: Dispatcher.DispatchOptions['headers'], host: string): Dispatcher.DispatchOptions['headers'] {
  if (headers === undefined || headers === null) return { host };
  if (Array.isArray(headers)) {
    for (let i = 0; i < headers.length; i += 2) if (String(headers[i]).toLowerCase() === 'host') return headers;
    return [...(headers as string[]), 'host', host];
  }
  if (typeof (headers as Iterable<unknown>)[Symbol.iterator] === 'function') {
    const pairs = [...(headers as Iterable<[string, string | string[] | undefined]>)];
    return pairs.some(([name]) => name.toLowerCase() === 'host') ? pairs : [...pairs, ['host', host]];
  }
  const record = headers as Record<string, string | string[] | undefined>;
  for (const name of Object.keys(record)) if (name.toLowerCase() === 'host') return headers;
  return { ...record, host };
}

/** Map an undici/socket error to what the client is told. */
export function classifyFailure(err: unknown, clientAborted: boolean): ForwardFailure {
  if (clientAborted) return 'client_aborted';
  const code = (err as { code?: string }).code ?? '';
  switch (code) {
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
    case 'ETIMEDOUT':
      return 'upstream_timeout';
    case 'ECONNRESET':
    case 'EPIPE':
    case 'UND_ERR_SOCKET':
    case 'UND_ERR_CLOSED':
      return 'upstream_reset';
    case 'RESIDENCY_UPSTREAM_UNRESOLVED':
      return 'upstream_unresolved';
    default:
      return 'upstream_unreachable';
  }
}

/**
 * The client's request body as undici reads it: a stream-shaped view of the
 * IncomingMessage that counts bytes as they pass. When undici stops early
 * (upstream reset, timeout) it destroys its body; destroying the view only
 * detaches it, so the request (and the client's socket, which still has to
 * carry the 502) stays alive. Lighter than an async iterator: no promise
 * per chunk.
 */
export class RequestBody extends EventEmitter {
  bytes = 0;
  destroyed = false;
  readableEnded = false;
  errored: Error | null = null;
  private flowing = false;
  /** Held: undici may ask for the body, but no byte flows until release(). */
  private held = false;
  private wanted = false;

  constructor(private readonly req: IncomingMessage) {
    super();
    req.once('end', this.onEnd);
    req.once('error', this.onError);
    req.once('close', this.onClose);
  }

  pause(): void {
    this.req.pause();
  }

  /** Let no byte through until release(): the request head may go upstream while the decision is made durable. */
  hold(): void {
    this.held = true;
  }

  release(): void {
    this.held = false;
    if (this.wanted) this.resume();
  }

  /** undici resumes its body once its listeners are on: only then may the request flow (bytes must not pass unseen). */
  resume(): void {
    if (this.destroyed) return;
    this.wanted = true;
    if (this.held) return;
    if (!this.flowing) {
      this.flowing = true;
      this.req.on('data', this.onData);
    }
    this.req.resume();
  }

  /** Only there because undici tells streams by it; nothing pipes this view. */
  pipe(): never {
    throw new Error('RequestBody is read through its events');
  }

  /** What undici calls when it is done with the body (also after its end). */
  destroy(err?: Error): void {
    if (this.destroyed) return;
    this.destroyed = true;
    if (err) this.errored = err;
    if (this.readableEnded) return;
    this.detach();
    // Unread body bytes stay where they are: the answer's linger or drain deals with them.
    this.req.pause();
  }

  private readonly onData = (chunk: Buffer) => {
    this.bytes += chunk.length;
    this.emit('data', chunk);
  };

  private readonly onEnd = () => {
    this.readableEnded = true;
    this.detach();
    this.emit('end');
  };

  private readonly onError = (err: Error) => {
    this.errored = err;
    this.detach();
    this.emit('error', err);
  };

  /** The request closed before its end: the client went away mid-body. */
  private readonly onClose = () => {
    if (this.readableEnded || this.destroyed) return;
    this.destroyed = true;
    this.detach();
    this.emit('close');
  };

  private detach(): void {
    this.req.off('data', this.onData);
    this.req.off('end', this.onEnd);
    this.req.off('error', this.onError);
    this.req.off('close', this.onClose);
  }
}
