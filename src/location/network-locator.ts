import type { GeoIp } from './geoip.js';
import type { SiteNetworks } from './networks.js';
import type { CloudRanges } from './ranges.js';
import type { PinningResolver } from './resolver.js';
import type { Signal } from './signals.js';

/**
 * Where an upstream host is on the network, from caches only: the pinned DNS
 * answer picks the address, and that address is located by site networks,
 * cloud ranges and GeoIP. The caller must connect to exactly the returned
 * address, so what was located is what is reached.
 *
 * Precedence: a site network match is the only network signal (the operator
 * knows their own sites); otherwise cloud ranges and GeoIP both contribute,
 * and the policy sees a conflict if they disagree.
 *
 * Cost: a warm `locate` is two map reads and an identity check. Per-address
 * results are computed once per database generation (a GeoIP reload or a new
 * range/site table starts a new one) and shared as frozen objects.
 */
export interface NetworkLocation {
  /** The address to connect to; null when the host has no usable answer (the location is then unknown). */
  readonly address: string | null;
  readonly signals: readonly Signal[];
}

export type AddressPick = 'first' | 'round-robin';

export interface NetworkLocatorOptions {
  resolver: PinningResolver;
  sites?: SiteNetworks | null;
  ranges?: CloudRanges | null;
  geoip?: GeoIp | null;
  /** 'first' (default) pins one address per answer; 'round-robin' spreads requests over the answer's addresses. */
  pick?: AddressPick;
  /** Located addresses (and hosts) kept; past it the cache starts over (DNS that rotates through many addresses). Default 4096. */
  cacheSize?: number;
  /**
   * Each source consulted for an address, with what it said: hit (placed
   * it), miss (could not). Called when an address is located, not on cached
   * answers, so it is off the per-request path.
   */
  onLookup?: (source: 'site' | 'cloud-range' | 'geoip', result: 'hit' | 'miss') => void;
}

/** No usable DNS answer: no address to connect to, no signal, so the policy sees an unknown location. */
export const UNRESOLVED: NetworkLocation = Object.freeze({ address: null, signals: Object.freeze([]) });

interface HostMemo {
  answer: object | null;
  result: NetworkLocation;
  next: number;
}

export class NetworkLocator {
  private readonly resolver: PinningResolver;
  private sites: SiteNetworks | null;
  private ranges: CloudRanges | null;
  private readonly geoip: GeoIp | null;
  private readonly roundRobin: boolean;
  private readonly cacheSize: number;
  private readonly byAddress = new Map<string, NetworkLocation>();
  private readonly byHost = new Map<string, HostMemo>();
  private geoGeneration: number;
  private tables = 0;
  private readonly onLookup: NetworkLocatorOptions['onLookup'];

  constructor(options: NetworkLocatorOptions) {
    this.resolver = options.resolver;
    this.sites = options.sites ?? null;
    this.ranges = options.ranges ?? null;
    this.geoip = options.geoip ?? null;
    this.roundRobin = options.pick === 'round-robin';
    this.cacheSize = options.cacheSize ?? 4096;
    this.geoGeneration = this.geoip?.generation ?? 0;
    this.onLookup = options.onLookup;
  }

  /** Changes whenever located results may change: GeoIP reloads, new site or range tables. */
  get generation(): string {
    return `${this.tables}.${this.geoip?.generation ?? 0}`;
  }

  /**
   * The address to use for a host and its network signals, synchronously.
   * 'pending' until the host's first resolution has finished: the caller
   * awaits `ready(host)` and asks again (first request only).
   */
  locate(host: string): NetworkLocation | 'pending' {
    this.checkGeneration();
    // One read: asking twice could admit a new name twice (the rate of new names is counted per ask).
    const answer = this.resolver.answer(host);
    if (answer === 'pending') return answer;
    if (answer === undefined) return UNRESOLVED;
    let memo = this.byHost.get(host);
    if (memo !== undefined && memo.answer === answer && !this.roundRobin) return memo.result;
    if (memo === undefined) {
      // Hosts the resolver forgot leave their memo behind: bounded like the address cache.
      if (this.byHost.size >= this.cacheSize) this.byHost.clear();
      memo = { answer: null, result: UNRESOLVED, next: 0 };
      this.byHost.set(host, memo);
    }
    const { addresses } = answer;
    if (addresses.length === 0) return UNRESOLVED;
    const address = this.roundRobin ? addresses[memo.next++ % addresses.length]! : addresses[0]!;
    const result = this.locateAddress(address);
    memo.answer = answer;
    memo.result = result;
    return result;
  }

  /** Wait for a host's first resolution (e.g. at startup, or on 'pending'). */
  async ready(host: string): Promise<void> {
    await this.resolver.ready(host);
  }

  /** Network signals for one address, cached per generation. */
  locateAddress(address: string): NetworkLocation {
    this.checkGeneration();
    const cached = this.byAddress.get(address);
    if (cached !== undefined) return cached;
    let signals: readonly Signal[];
    const site = this.sites?.lookup(address);
    const count = this.onLookup;
    if (this.sites !== null && this.sites.size > 0) count?.('site', site === undefined ? 'miss' : 'hit');
    if (site !== undefined) {
      signals = site.signals;
    } else {
      const range = this.ranges?.lookup(address);
      const geo = this.geoip?.signal(address);
      if (this.ranges !== null && this.ranges.size > 0) count?.('cloud-range', range?.signals.some((s) => s.jurisdiction !== null) ? 'hit' : 'miss');
      if (geo !== undefined) count?.('geoip', geo.jurisdiction === null ? 'miss' : 'hit');
      signals = Object.freeze([...(range?.signals ?? []), ...(geo ? [Object.freeze(geo)] : [])]);
    }
    const result: NetworkLocation = Object.freeze({ address, signals });
    if (this.byAddress.size >= this.cacheSize) this.byAddress.clear();
    this.byAddress.set(address, result);
    return result;
  }

  /** Swap the site network and cloud range tables (a config reload); cached results are dropped. */
  setTables(tables: { sites?: SiteNetworks | null; ranges?: CloudRanges | null }): void {
    if (tables.sites !== undefined) this.sites = tables.sites;
    if (tables.ranges !== undefined) this.ranges = tables.ranges;
    this.tables++;
    this.invalidate();
  }

  /**
   * Stop resolving hosts nobody asked for since the last sweep (those a
   * `{host}` upstream was asked for; configured hosts are tracked for good).
   * The resolver forgets unused ones by itself once their answers expire;
   * this stays as a backstop.
   */
  sweep(): string[] {
    const removed = this.resolver.sweep();
    for (const host of removed) this.byHost.delete(host);
    return removed;
  }

  /** Forget a host (an upstream a reload removed): no more refreshes. */
  forget(host: string): void {
    this.resolver.untrack(host);
    this.byHost.delete(host);
  }

  private checkGeneration(): void {
    if (this.geoip !== null && this.geoip.generation !== this.geoGeneration) {
      this.geoGeneration = this.geoip.generation;
      this.invalidate();
    }
  }

  private invalidate(): void {
    this.byAddress.clear();
    this.byHost.clear();
  }
}
