import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import { Pool, type Dispatcher } from 'undici';
import type { Upstream } from './route.js';

/**
 * Forwarding over undici: one keep-alive pool per upstream, bodies streamed
 * both ways with backpressure, never buffered. The pool connects to the
 * upstream's own URL; only configured upstreams ever get a pool.
 */
export interface ForwardRequest {
  method: string;
  /** Path and query as sent upstream. */
  path: string;
  /** Flat [name, value, name, value …] list, hop-by-hop headers already removed. */
  headers: string[];
  body: AsyncIterable<Buffer> | null;
  signal?: AbortSignal;
}

export type ForwardFailure = 'upstream_unreachable' | 'upstream_timeout' | 'upstream_reset' | 'client_aborted';

export class Forwarder {
  /**
   * Pools by upstream object: compiled upstreams are replaced as a whole on a
   * policy reload, so a changed URL or timeout gets a fresh pool, and
   * in-flight requests keep the pool they started on.
   */
  private readonly pools = new Map<Upstream, Pool>();

  private poolFor(u: Upstream): Pool {
    let pool = this.pools.get(u);
    if (pool === undefined) {
      pool = new Pool(u.url.origin, {
        connect: { timeout: u.timeouts.connect },
        headersTimeout: u.timeouts.headers,
        bodyTimeout: u.timeouts.body,
        keepAliveTimeout: 4_000,
        pipelining: 1,
      });
      this.pools.set(u, pool);
    }
    return pool;
  }

  /** After a reload: close (gracefully) the pools of upstreams no longer in use. */
  retain(current: readonly Upstream[]): void {
    const keep = new Set(current);
    for (const [u, pool] of this.pools) {
      if (keep.has(u)) continue;
      this.pools.delete(u);
      pool.close().catch(() => pool.destroy());
    }
  }

  send(upstream: Upstream, req: ForwardRequest): Promise<Dispatcher.ResponseData> {
    return this.poolFor(upstream).request<null>({
      method: req.method as Dispatcher.HttpMethod,
      path: req.path,
      headers: req.headers,
      // undici streams async iterables with backpressure (its types only list Readable).
      body: req.body as Readable | null,
      signal: req.signal,
      // A refused or failed write must not be retried with a body we no longer have.
      idempotent: false,
    });
  }

  async close(): Promise<void> {
    await Promise.all([...this.pools.values()].map((p) => p.close().catch(() => p.destroy())));
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
