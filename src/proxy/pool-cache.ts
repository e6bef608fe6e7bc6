import { isIP } from 'node:net';
import { buildConnector, Pool, type Dispatcher } from 'undici';
import { systemClock, type Clock } from '../clock.js';

/**
 * Every keep-alive pool the forwarder sends through, in one cache with one
 * policy. A pool is for (owner, origin, address): the owner is what
 * configured it (an upstream), the origin where requests are for, and the
 * address, when given, the one the socket must go to.
 *
 * Pinned pools (an address given) have the address itself as their origin,
 * so the socket goes to exactly the address whose location was checked and
 * undici never resolves the name on its own; TLS still speaks to the origin:
 * SNI and certificate checks use its hostname. The Host header is the
 * caller's (the forwarder always sets one). Unpinned pools connect to the
 * origin's host, which undici resolves.
 *
 * Closing, the one policy: a pool idle for `idleMs` with nothing in flight
 * (an address DNS moved away from, a bucket host gone quiet); the least
 * recently used past its owner's `maxPools` (virtual-hosted buckets make one
 * origin per bucket name); every pool of an owner `retain` no longer lists
 * (a reload replaced it). Always gracefully: requests in flight finish.
 */
export interface PoolCacheOptions<O extends object> {
  /** Options for an owner's pools (timeouts, pipelining); `connect` may carry TLS options such as `ca`. */
  poolOptions?: (owner: O) => PoolOptions;
  /** At most this many pools for an owner. Default: no limit. */
  maxPools?: (owner: O) => number;
  /** Close a pool that has had no request for this long. Default 60 s. */
  idleMs?: number;
  clock?: Clock;
}

type PoolOptions = Omit<Pool.Options, 'connect'> & { connect?: buildConnector.BuildOptions };

interface Entry {
  readonly pool: Pool;
  readonly origin: string;
  readonly address: string | null;
  /** SNI and certificate name for a pinned https pool (undefined otherwise, and for an IP-literal origin). */
  readonly servername: string | undefined;
  lastUsed: number;
}

/** An owner's pools by `origin address`, least recently used first when bounded. */
interface OwnerPools {
  readonly max: number;
  readonly pools: Map<string, Entry>;
}

export class PoolCache<O extends object> {
  private readonly owners = new Map<O, OwnerPools>();
  private readonly idleMs: number;
  private readonly clock: Clock;
  /** The idle sweep, scheduled while any pool is open. */
  private cancelSweep: (() => void) | null = null;

  constructor(private readonly options: PoolCacheOptions<O> = {}) {
    this.idleMs = options.idleMs ?? 60_000;
    this.clock = options.clock ?? systemClock;
  }

  /** The pool for (owner, origin, address), created on first use; a null address connects to the origin's host. */
  pool(owner: O, origin: string, address: string | null): Pool {
    return this.entry(owner, origin, address).pool;
  }

  /** Send a request through the pool for (owner, origin, address); a pinned https pool keeps the origin's TLS name whatever the Host header says. */
  dispatch(owner: O, origin: string, address: string | null, options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const entry = this.entry(owner, origin, address);
    return entry.pool.dispatch(named(entry, options), handler);
  }

  /** As `dispatch`, answering with the whole response. */
  request(owner: O, origin: string, address: string | null, options: Dispatcher.RequestOptions<null>): Promise<Dispatcher.ResponseData<null>> {
    const entry = this.entry(owner, origin, address);
    return entry.pool.request(named(entry, options));
  }

  get size(): number {
    let n = 0;
    for (const { pools } of this.owners.values()) n += pools.size;
    return n;
  }

  /** Pools as (origin, address) pairs, for a gauge or a debug view. */
  list(): { origin: string; address: string | null; idleMs: number }[] {
    const now = this.clock.now();
    return [...this.owners.values()].flatMap(({ pools }) => [...pools.values()].map((e) => ({ origin: e.origin, address: e.address, idleMs: now - e.lastUsed })));
  }

  /** Close the pools of owners not in `current` (after a reload). */
  retain(current: ReadonlySet<O>): void {
    for (const [owner, { pools }] of this.owners) {
      if (current.has(owner)) continue;
      this.owners.delete(owner);
      for (const e of pools.values()) void closeGracefully(e.pool);
    }
    this.stopSweepWhenEmpty();
  }

  /** Close pools idle for `idleMs` with nothing in flight. */
  private async sweep(): Promise<void> {
    const now = this.clock.now();
    const closing: Promise<void>[] = [];
    for (const [owner, { pools }] of this.owners) {
      for (const [key, e] of pools) {
        if (now - e.lastUsed < this.idleMs || e.pool.stats.size > 0) continue;
        pools.delete(key);
        closing.push(closeGracefully(e.pool));
      }
      if (pools.size === 0) this.owners.delete(owner);
    }
    this.stopSweepWhenEmpty();
    await Promise.all(closing);
  }

  /** Close every pool; the cache stays usable (a later request opens a fresh pool). */
  async close(): Promise<void> {
    const all = [...this.owners.values()].flatMap(({ pools }) => [...pools.values()]);
    this.owners.clear();
    this.stopSweepWhenEmpty();
    await Promise.all(all.map((e) => closeGracefully(e.pool)));
  }

  private entry(owner: O, origin: string, address: string | null): Entry {
    const key = address === null ? origin : `${origin} ${address}`;
    const now = this.clock.now();
    const known = this.owners.get(owner);
    const found = known?.pools.get(key);
    if (known !== undefined && found !== undefined) {
      found.lastUsed = now;
      if (known.max !== Infinity) {
        // Refresh recency: Map order is the eviction order.
        known.pools.delete(key);
        known.pools.set(key, found);
      }
      return found;
    }
    // Created before its owner is added: an address that is not one throws here, leaving nothing behind.
    const entry = this.create(owner, origin, address, now);
    const { pools, max } = known ?? this.addOwner(owner);
    pools.set(key, entry);
    while (pools.size > max) {
      const [coldest, old] = pools.entries().next().value as [string, Entry];
      pools.delete(coldest);
      void closeGracefully(old.pool);
    }
    this.startSweep();
    return entry;
  }

  private addOwner(owner: O): OwnerPools {
    const added: OwnerPools = { max: this.options.maxPools?.(owner) ?? Infinity, pools: new Map() };
    this.owners.set(owner, added);
    return added;
  }

  private create(owner: O, origin: string, address: string | null, now: number): Entry {
    const { connect, ...poolOptions } = this.options.poolOptions?.(owner) ?? {};
    if (address === null) {
      return { pool: new Pool(origin, { ...poolOptions, ...(connect === undefined ? {} : { connect }) }), origin, address, servername: undefined, lastUsed: now };
    }
    const url = new URL(origin);
    const servername = tlsName(url);
    const base = buildConnector({ ...connect });
    const pinned: buildConnector.connector = (opts, callback) => {
      // Belt and braces: whatever undici asks for, the peer is the pinned address.
      base({ ...opts, hostname: address, ...(servername === undefined ? {} : { servername }) }, callback);
    };
    return { pool: new Pool(pinnedOrigin(url, address), { ...poolOptions, connect: pinned }), origin, address, servername, lastUsed: now };
  }

  private startSweep(): void {
    if (this.cancelSweep !== null) return;
    this.cancelSweep = this.clock.after(Math.max(Math.floor(this.idleMs / 2), 50), () => {
      this.cancelSweep = null;
      // The sweep drops idle pools at once (their closing finishes later): what is left decides the next one.
      void this.sweep();
      if (this.owners.size > 0) this.startSweep();
    });
  }

  private stopSweepWhenEmpty(): void {
    if (this.owners.size > 0 || this.cancelSweep === null) return;
    this.cancelSweep();
    this.cancelSweep = null;
  }
}

/** `http(s)://ADDRESS:PORT` for an origin and an address (IPv6 in brackets, the scheme's default port made explicit). */
export function pinnedOrigin(origin: URL, address: string): string {
  if (isIP(address) === 0) throw new TypeError(`"${address}" is not an IP address: pinned pools connect to addresses only`);
  const port = origin.port || (origin.protocol === 'https:' ? '443' : '80');
  return `${origin.protocol}//${isIP(address) === 6 ? `[${address}]` : address}:${port}`;
}

/**
 * undici derives SNI per request from the Host header unless told; a
 * preserved client Host must not change the name the certificate is checked against.
 */
function named<T extends Dispatcher.DispatchOptions>(entry: Entry, options: T): T {
  return entry.servername === undefined ? options : { ...options, servername: entry.servername };
}

/** The name for SNI and certificate checks: the origin's hostname, none for an IP literal (SNI forbids addresses). */
function tlsName(origin: URL): string | undefined {
  if (origin.protocol !== 'https:') return undefined;
  const host = origin.hostname.startsWith('[') ? origin.hostname.slice(1, -1) : origin.hostname;
  return isIP(host) === 0 ? host : undefined;
}

function closeGracefully(pool: Pool): Promise<void> {
  return pool.close().catch(() => pool.destroy());
}
