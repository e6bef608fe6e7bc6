import { isIP } from 'node:net';
import { buildConnector, Pool, type Dispatcher } from 'undici';

/**
 * Keep-alive pools pinned to located addresses: one undici Pool per
 * (upstream origin, address), whose origin is the address itself, so the
 * socket goes to exactly the address whose location was checked and undici
 * never resolves the upstream's name on its own. TLS still speaks to the
 * upstream: SNI and certificate verification use the upstream's hostname.
 * The Host header is the caller's (the forwarder always sets one).
 *
 * When DNS moves an upstream to another address, the old address's pool
 * stops being used and is closed by the idle sweep once its requests finish.
 */
export interface PinnedPoolsOptions {
  /** Pool options per upstream (timeouts, pipelining); `connect` may carry TLS options such as `ca`. */
  pool?: (upstream: URL) => Omit<Pool.Options, 'connect'> & { connect?: buildConnector.BuildOptions };
  /** Close a pool that has had no request for this long. Default 60 s. */
  idleMs?: number;
  /**
   * At most this many pools; past it the least recently used is closed
   * (gracefully). For upstreams that forward to the requested host, which
   * makes one origin per bucket name. Default: no limit.
   */
  maxPools?: number;
}

/** What a request needs from its upstream URL, computed once per URL object (URL getters allocate). */
interface UrlFacts {
  readonly origin: string;
  readonly servername: string | undefined;
}

interface Entry {
  readonly pool: Pool;
  readonly upstream: URL;
  readonly address: string;
  lastUsed: number;
}

export class PinnedPools {
  private readonly pools = new Map<string, Entry>();
  private readonly idleMs: number;
  private readonly maxPools: number;
  private readonly sweeper: NodeJS.Timeout;
  private readonly facts = new WeakMap<URL, UrlFacts>();
  private closed = false;

  constructor(private readonly options: PinnedPoolsOptions = {}) {
    this.idleMs = options.idleMs ?? 60_000;
    this.maxPools = options.maxPools ?? Infinity;
    this.sweeper = setInterval(() => void this.sweep(), Math.max(Math.floor(this.idleMs / 2), 50));
    this.sweeper.unref();
  }

  /** `http(s)://ADDRESS:PORT` for an upstream and an address (IPv6 in brackets, the scheme's default port made explicit). */
  static originFor(upstream: URL, address: string): string {
    if (isIP(address) === 0) throw new TypeError(`"${address}" is not an IP address: pinned pools connect to addresses only`);
    const port = upstream.port || (upstream.protocol === 'https:' ? '443' : '80');
    return `${upstream.protocol}//${isIP(address) === 6 ? `[${address}]` : address}:${port}`;
  }

  /** The pool for (upstream, address), created on first use. */
  pool(upstream: URL, address: string): Pool {
    if (this.closed) throw new Error('pinned pools are closed');
    const key = `${this.factsOf(upstream).origin} ${address}`;
    let entry = this.pools.get(key);
    if (entry === undefined) {
      entry = { pool: this.create(upstream, address), upstream, address, lastUsed: Date.now() };
      this.pools.set(key, entry);
      while (this.pools.size > this.maxPools) {
        const [coldest, old] = this.pools.entries().next().value as [string, Entry];
        this.pools.delete(coldest);
        old.pool.close().catch(() => old.pool.destroy());
      }
    } else {
      entry.lastUsed = Date.now();
      if (this.maxPools !== Infinity) {
        // Refresh recency: Map order is the eviction order.
        this.pools.delete(key);
        this.pools.set(key, entry);
      }
    }
    return entry.pool;
  }

  /** Send a request to the upstream at exactly `address`, with the upstream's TLS name whatever the Host header says. */
  request(upstream: URL, address: string, options: Dispatcher.RequestOptions<null>): Promise<Dispatcher.ResponseData<null>> {
    return this.pool(upstream, address).request(this.named(upstream, options));
  }

  /** As `request`, with a handler that takes the response as it arrives. */
  dispatch(upstream: URL, address: string, options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    return this.pool(upstream, address).dispatch(this.named(upstream, options), handler);
  }

  /**
   * undici derives SNI per request from the Host header unless told; a
   * preserved client Host must not change the name the certificate is checked against.
   */
  private named<T extends Dispatcher.DispatchOptions>(upstream: URL, options: T): T {
    const servername = this.factsOf(upstream).servername;
    return servername === undefined ? options : { ...options, servername };
  }

  get size(): number {
    return this.pools.size;
  }

  /** Pools as (origin, address) pairs, for a gauge or a debug endpoint. */
  list(): { upstream: string; address: string; idleMs: number }[] {
    const now = Date.now();
    return [...this.pools.values()].map((e) => ({ upstream: e.upstream.origin, address: e.address, idleMs: now - e.lastUsed }));
  }

  /** Close pools idle for `idleMs` with nothing in flight; resolves to how many were closed. */
  async sweep(now = Date.now()): Promise<number> {
    const closing: Promise<void>[] = [];
    for (const [key, e] of this.pools) {
      if (now - e.lastUsed < this.idleMs || e.pool.stats.size > 0) continue;
      this.pools.delete(key);
      closing.push(e.pool.close().catch(() => e.pool.destroy()));
    }
    await Promise.all(closing);
    return closing.length;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweeper);
    const all = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(all.map((e) => e.pool.close().catch(() => e.pool.destroy())));
  }

  private factsOf(upstream: URL): UrlFacts {
    let facts = this.facts.get(upstream);
    if (facts === undefined) {
      facts = { origin: upstream.origin, servername: tlsName(upstream) };
      this.facts.set(upstream, facts);
    }
    return facts;
  }

  private create(upstream: URL, address: string): Pool {
    const { connect, ...poolOptions } = this.options.pool?.(upstream) ?? {};
    const base = buildConnector({ ...connect });
    const servername = tlsName(upstream);
    const pinned: buildConnector.connector = (opts, callback) => {
      // Belt and braces: whatever undici asks for, the peer is the pinned address.
      base({ ...opts, hostname: address, ...(servername === undefined ? {} : { servername }) }, callback);
    };
    return new Pool(PinnedPools.originFor(upstream, address), { ...poolOptions, connect: pinned });
  }
}

/** The name for SNI and certificate checks: the upstream's hostname, none for an IP literal (SNI forbids addresses). */
function tlsName(upstream: URL): string | undefined {
  if (upstream.protocol !== 'https:') return undefined;
  const host = upstream.hostname.startsWith('[') ? upstream.hostname.slice(1, -1) : upstream.hostname;
  return isIP(host) === 0 ? host : undefined;
}
