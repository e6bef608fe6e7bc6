import { EventEmitter } from 'node:events';
import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import { Dispatcher, type buildConnector } from 'undici';
import { PoolCache } from './pool-cache.js';
import type { Upstream } from '../plan/route.js';

/**
 * Forwarding over undici: keep-alive pools, bodies streamed both ways with
 * backpressure, never buffered. Only configured upstreams ever get a pool.
 * A `{host}` upstream gets pools per requested host, and only for hosts its
 * route's host pattern admitted.
 *
 * With network location on, every request is sent with the address its
 * location was decided on, and goes to exactly that address (PoolCache:
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
  /** Close a pool idle this long (its address no longer in the DNS answer, a bucket host gone quiet). Default 60 s. */
  idleMs?: number;
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
   * Every pool, owned by the upstream object it was made for: compiled
   * upstreams are replaced as a whole on a policy reload, so a changed URL or
   * timeout gets fresh pools, and in-flight requests keep the pool they
   * started on. One per origin (the upstream's own, or a `{host}` upstream's
   * requested ones) and, with network location on, per located address.
   */
  private readonly pools: PoolCache<Upstream>;

  constructor(private readonly options: ForwarderOptions = {}) {
    const maxHostPools = options.maxHostPools ?? 256;
    this.pools = new PoolCache<Upstream>({
      // The upstream's settings whatever the origin (a {host} upstream's hosts share them).
      poolOptions: (u) => ({ ...poolSettings(u), connect: this.connectFor(u) }),
      // Virtual-hosted buckets make one host per bucket: bound those; an upstream's own origin needs no bound.
      maxPools: (u) => (u.hostTemplate === null ? Infinity : maxHostPools),
      idleMs: options.idleMs ?? 60_000,
    });
  }

  /** Socket options for an upstream's pools: its connect timeout, and its CA bundle when it names one. */
  private connectFor(u: Upstream): buildConnector.BuildOptions {
    return { timeout: u.timeouts.connect, ...this.options.connect, ...(u.ca === null ? {} : { ca: u.ca }) };
  }

  /**
   * The upstream's own pool, for requests the proxy makes itself (bucket
   * region discovery): they go to the configured endpoint only, never to a
   * host a client named. Not for `{host}` upstreams, which have none.
   */
  dispatcherFor(upstream: Upstream): Dispatcher {
    if (upstream.hostTemplate !== null) throw new Error(`upstream ${upstream.name} forwards to the requested host: it has no pool of its own`);
    const addressOf = this.options.addressOf;
    if (addressOf === undefined) return new OwnPoolDispatcher(this.pools, upstream, () => null);
    // Network location on: to the upstream's located address, as forwarded requests go.
    return new OwnPoolDispatcher(this.pools, upstream, () => {
      const address = addressOf(upstream);
      if (address === null) throw new UnresolvedUpstreamError(upstream.name, upstream.hostname);
      return address;
    });
  }

  /** After a reload: close (gracefully) the pools of upstreams no longer in use. */
  retain(current: readonly Upstream[]): void {
    this.pools.retain(new Set(current));
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
    this.pools.dispatch(upstream, origin, address, options, handler);
  }

  close(): Promise<void> {
    return this.pools.close();
  }
}

function poolSettings(u: Upstream) {
  return { headersTimeout: u.timeouts.headers, bodyTimeout: u.timeouts.body, keepAliveTimeout: 4_000, pipelining: 1 };
}

/**
 * An upstream's own requests (bucket region discovery) through its pools,
 * the pool looked up per request: an idle one closed meanwhile is replaced,
 * never used closed. With network location on, the address comes from the
 * locator's cache per request, and the Host header is the upstream's (the
 * pool's origin is the address).
 */
class OwnPoolDispatcher extends Dispatcher {
  private readonly origin: string;

  constructor(
    private readonly pools: PoolCache<Upstream>,
    private readonly upstream: Upstream,
    private readonly addressOf: () => string | null,
  ) {
    super();
    this.origin = upstream.url.origin;
  }

  override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    // Throws UnresolvedUpstreamError, which `request` turns into a rejection.
    const address = this.addressOf();
    if (address === null) return this.pools.dispatch(this.upstream, this.origin, null, options, handler);
    const headers = withHost(options.headers, this.upstream.hostHeader);
    return this.pools.dispatch(this.upstream, this.origin, address, { ...options, headers } as Dispatcher.DispatchOptions, handler);
  }
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
