import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import { Pool, type Dispatcher } from 'undici';
import type { Upstream } from './route.js';

/**
 * Forwarding over undici: one keep-alive pool per upstream, bodies streamed
 * both ways with backpressure, never buffered. The pool connects to the
 * upstream's own URL; only configured upstreams ever get a pool. A `{host}`
 * upstream gets one pool per requested host, and only for hosts its route's
 * host pattern admitted.
 */
export interface ForwardRequest {
  method: string;
  /** Path and query as sent upstream. */
  path: string;
  /** Flat [name, value, name, value …] list, hop-by-hop headers already removed. */
  headers: string[];
  /** Streamed, or (a create-bucket body the proxy inspected) exactly these bytes. */
  body: AsyncIterable<Buffer> | Buffer | null;
  signal?: AbortSignal;
}

export type ForwardFailure = 'upstream_unreachable' | 'upstream_timeout' | 'upstream_reset' | 'client_aborted';

export interface ForwarderOptions {
  /**
   * Extra socket options for every pool (merged over the upstream's connect
   * timeout), e.g. a `lookup` that resolves test names to loopback.
   */
  connect?: Pool.Options['connect'];
  /** Pools kept per `{host}` upstream (one per requested host); the least recently used is closed first. Default 256. */
  maxHostPools?: number;
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
  private readonly maxHostPools: number;

  constructor(private readonly options: ForwarderOptions = {}) {
    this.maxHostPools = options.maxHostPools ?? 256;
  }

  private create(u: Upstream, origin: string): Pool {
    const connect = this.options.connect;
    return new Pool(origin, {
      connect: typeof connect === 'function' ? connect : { timeout: u.timeouts.connect, ...connect },
      headersTimeout: u.timeouts.headers,
      bodyTimeout: u.timeouts.body,
      keepAliveTimeout: 4_000,
      pipelining: 1,
    });
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
    return this.poolFor(upstream, upstream.url.origin);
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
  }

  /** Send to `origin` (a RouteMatch's: the upstream's own, or the requested host's for a `{host}` upstream). */
  send(upstream: Upstream, req: ForwardRequest, origin: string = upstream.url.origin): Promise<Dispatcher.ResponseData> {
    return this.poolFor(upstream, origin).request<null>({
      method: req.method as Dispatcher.HttpMethod,
      path: req.path,
      headers: req.headers,
      // undici streams async iterables with backpressure (its types only list Readable).
      body: req.body as Readable | Buffer | null,
      signal: req.signal,
      // A refused or failed write must not be retried with a body we no longer have.
      idempotent: false,
    });
  }

  async close(): Promise<void> {
    const all = [...this.pools.values(), ...[...this.hostPools.values()].flatMap((m) => [...m.values()])];
    await Promise.all(all.map((p) => p.close().catch(() => p.destroy())));
  }
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
    default:
      return 'upstream_unreachable';
  }
}

/** The request body as an async iterable that counts bytes as they pass. */
export async function* countingBody(src: IncomingMessage, counter: { bytes: number }): AsyncGenerator<Buffer> {
  // When undici stops early (upstream reset, timeout), leave the request
  // alive: destroying it would destroy the client's socket before the 502.
  for await (const chunk of src.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
    counter.bytes += chunk.length;
    yield chunk;
  }
}
