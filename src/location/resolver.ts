import { lookup, Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import { systemClock, type Clock } from '../clock.js';

/**
 * DNS resolution with pinning for upstream hosts.
 *
 * The data plane never queries DNS per request: `current(host)` is a
 * synchronous map read of the last answer. Answers are refreshed in the
 * background before their TTL runs out, so a steady stream of requests never
 * sees an expired answer. When refreshing fails, the last good answer is
 * served for a grace period past its expiry, then nothing (fail closed: the
 * request's location becomes unknown). The address the proxy connects to is
 * the address that was located, so a DNS answer that flips to another
 * country (rebinding) changes the location on the next request instead of
 * slipping past a check made on another address.
 *
 * With `servers` configured, A and AAAA are asked of them directly (record
 * TTLs honoured, clamped to min/max); otherwise the system resolver
 * (getaddrinfo, /etc/hosts included) is used, which reports no TTL, so
 * `minTtl` applies.
 *
 * Names come two ways: `track` (the configured upstreams' hosts: refreshed
 * for good) and asking (`current`: the hosts `{host}` upstreams are sent to,
 * one per bucket name, chosen by clients). Asked-for names are bounded, so a
 * client cannot drive the proxy's DNS load: at most `maxTracked` are tracked
 * at once, each refreshed only if it was asked for since its last query
 * (else forgotten when its answer expires); past the cap a name is resolved
 * once and its answer cached for its TTL, never refreshed; and first
 * resolutions of names not tracked are rate limited.
 */
export interface DnsAnswer {
  readonly host: string;
  /** IPv4 first, then IPv6, each in the order the resolver gave. */
  readonly addresses: readonly string[];
  /** The TTL applied, seconds (record TTL clamped to min/max). */
  readonly ttl: number;
  /** Epoch ms when the answer arrived. */
  readonly resolvedAt: number;
  /** Epoch ms when it stops being fresh; past it, it is served only within the grace period. Infinity for literals. */
  readonly expiresAt: number;
  readonly source: 'dns' | 'system' | 'literal';
}

export type DnsQueryKind = 'A' | 'AAAA' | 'lookup';
/** Why a query went out: a name's first resolution (tracked from then on), a tracked name's refresh or retry, a name past the cap resolved once. */
export type DnsQueryReason = 'first' | 'refresh' | 'untracked';
/** Why an asked-for name is not tracked: the cap is reached (resolved once), or the rate of new names is spent (not resolved). */
export type NotTrackedReason = 'cap' | 'rate';

export interface ResolverOptions {
  /** DNS servers ('ip', 'ip:port', '[v6]:port'); default: the system resolver. */
  servers?: readonly string[];
  /** Seconds. Defaults as in the config schema: 5, 300, 60. */
  minTtl?: number;
  maxTtl?: number;
  graceSeconds?: number;
  /** Fraction of the TTL after which the background refresh runs. Default 0.75. */
  refreshAt?: number;
  /** Per-attempt query timeout and attempts per query (c-ares). Default 2000 ms, 2. */
  timeoutMs?: number;
  tries?: number;
  /** Retry backoff after a failed refresh, doubling from min to max. Default 1000 ms to 30 s. */
  retryMinMs?: number;
  retryMaxMs?: number;
  /** Floor for the refresh interval, so min_ttl 0 cannot spin. Default 250 ms. */
  minRefreshMs?: number;
  /** Asked-for names (not `track`ed) tracked at once; past it a name is resolved once, not refreshed. Default 1000. */
  maxTracked?: number;
  /** First resolutions a second of names not tracked (burst: one second's worth); past it a name is not resolved. Default 50. */
  maxNewPerSecond?: number;
  /** Answers kept for names resolved once (past `maxTracked`), oldest dropped first. Default 256. */
  untrackedCacheSize?: number;
  /**
   * Replaces the system resolver (getaddrinfo) where it is used: no
   * `servers`, and localhost names. For tests that send made-up names to loopback.
   */
  lookup?: (host: string) => Promise<readonly { address: string; family: number }[]>;
  onQuery?: (host: string, kind: DnsQueryKind) => void;
  /** As `onQuery`, with why the query went out. */
  onQueryReason?: (host: string, kind: DnsQueryKind, reason: DnsQueryReason) => void;
  /** An asked-for name was not tracked (once per resolution past the cap; once per refused ask past the rate). */
  onNotTracked?: (host: string, reason: NotTrackedReason) => void;
  /** The number of asked-for names tracked changed. */
  onTracked?: (count: number) => void;
  /** After each query that returned an answer (one call per resolution, not per family). */
  onAnswer?: (host: string, answer: DnsAnswer) => void;
  onFailure?: (host: string, err: Error) => void;
  /** The address list of a host changed (first answer included). */
  onChange?: (host: string, previous: DnsAnswer | undefined, next: DnsAnswer) => void;
  /** Time for TTLs, grace, refreshes and the new-name rate (tests move it on instead of sleeping). Default: the system clock. */
  clock?: Clock;
}

interface HostState {
  readonly host: string;
  answer: DnsAnswer | undefined;
  /** Epoch ms until which `answer` may be served (expiry + grace). */
  usableUntil: number;
  /** Settles when the first attempt has finished, either way. */
  readonly first: Promise<void>;
  settleFirst: () => void;
  attempted: boolean;
  inflight: Promise<void> | null;
  /** Cancels the pending refresh, retry or expiry. */
  cancelTimer: (() => void) | null;
  failures: number;
  /** Tracked on purpose (`track`): kept until `untrack`, never swept. */
  permanent: boolean;
  /** Asked for (`current`) since the last sweep. */
  used: boolean;
  /** Asked for since its last query: an asked-for name is refreshed only then. */
  wanted: boolean;
  /** Its refresh was skipped (nobody asked): forgotten when the answer expires, unless asked for before. */
  idle: boolean;
  /** Past the cap: resolved once, never refreshed, kept in the untracked cache until `keepUntil`. */
  readonly once: boolean;
  /** Epoch ms (once only): the answer's expiry, or shortly after a failure; Infinity while resolving. */
  keepUntil: number;
}

/**
 * A token bucket: `rate` tokens a second, at most `burst` saved up. The
 * clock is passed in, so it is pure.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly rate: number,
    private readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.last = now;
  }

  /** Take one token if there is one. */
  take(now: number): boolean {
    // A clock that steps back refills nothing (and takes nothing back).
    if (now > this.last) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
      this.last = now;
    }
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

export class PinningResolver {
  private readonly states = new Map<string, HostState>();
  /** Names resolved once (past the cap), in insertion order: the oldest goes first when full. */
  private readonly untracked = new Map<string, HostState>();
  private readonly dns: Resolver | null;
  private readonly minTtl: number;
  private readonly maxTtl: number;
  private readonly graceMs: number;
  private readonly maxTracked: number;
  private readonly untrackedCacheSize: number;
  private readonly clock: Clock;
  /**
   * First resolutions of names not tracked, for all upstreams together: what
   * it protects (the DNS servers, and the proxy's query load) is shared.
   * Refreshes of tracked names are bounded by the cap instead and never wait
   * for a token, so a flood of new names cannot starve the hosts in use. A
   * name refused a token is not resolved: its request has no located
   * address, handled as any unresolvable name (writes fail closed, reads get
   * 502 upstream_unresolved). Waiting for a token instead would hold
   * requests, and their memory, under exactly the load this guards against.
   */
  private readonly newNames: TokenBucket;
  /** Asked-for names in `states` (`track`ed ones are not counted). */
  private tracked = 0;
  private closed = false;

  constructor(private readonly options: ResolverOptions = {}) {
    this.minTtl = options.minTtl ?? 5;
    this.maxTtl = Math.max(options.maxTtl ?? 300, this.minTtl);
    this.graceMs = (options.graceSeconds ?? 60) * 1000;
    this.maxTracked = options.maxTracked ?? 1000;
    this.untrackedCacheSize = Math.max(1, options.untrackedCacheSize ?? 256);
    this.clock = options.clock ?? systemClock;
    const rate = options.maxNewPerSecond ?? 50;
    this.newNames = new TokenBucket(rate, Math.max(1, rate), this.clock.now());
    if (options.servers && options.servers.length > 0) {
      this.dns = new Resolver({ timeout: options.timeoutMs ?? 2000, tries: options.tries ?? 2 });
      this.dns.setServers([...options.servers]);
    } else {
      this.dns = null;
    }
  }

  /**
   * The answer to use now: fresh, or stale within the grace period. Undefined
   * while the first resolution is pending, after the grace period when
   * resolution keeps failing, and when the name may not be resolved now (the
   * rate of new names is spent). Starts resolving an unknown host. Never waits.
   */
  current(host: string): DnsAnswer | undefined {
    const answer = this.answer(host);
    return answer === 'pending' ? undefined : answer;
  }

  /** `current` and `isPending` in one read: 'pending' until the host's first resolution attempt has finished. */
  answer(host: string): DnsAnswer | 'pending' | undefined {
    const s = this.find(host) ?? this.admit(host);
    if (s === null) return undefined;
    // Flags, not timestamps: the hot path must not read the clock twice.
    s.used = true;
    s.wanted = true;
    // Asked for again after it was left to expire: query now (its answer, if usable, serves meanwhile).
    if (s.idle) void this.refresh(s, 'refresh');
    if (s.answer === undefined) return s.attempted ? undefined : 'pending';
    return s.usableUntil === Infinity || this.clock.now() <= s.usableUntil ? s.answer : undefined;
  }

  /** True until the first resolution attempt for the host has finished. */
  isPending(host: string): boolean {
    const s = this.find(host) ?? this.admit(host);
    return s !== null && !s.attempted;
  }

  /** Start resolving and refreshing a host (idempotent); it stays tracked until `untrack`, however idle, and does not count against the cap. */
  track(host: string): void {
    const s = this.states.get(host);
    if (s === undefined) {
      this.untracked.delete(host);
      this.start(host, 'permanent');
      return;
    }
    if (s.permanent) return;
    s.permanent = true;
    this.count(-1);
    if (s.idle) void this.refresh(s, 'refresh');
  }

  /**
   * Stop refreshing hosts that were started by `current` (not `track`) and
   * not asked for since the previous sweep; returns them. A backstop: such
   * hosts are already forgotten once unused past their answer's expiry.
   */
  sweep(): string[] {
    const removed: string[] = [];
    for (const s of this.states.values()) {
      if (s.permanent) continue;
      if (s.used || s.inflight !== null) {
        s.used = false;
        continue;
      }
      removed.push(s.host);
    }
    for (const host of removed) this.untrack(host);
    return removed;
  }

  /** The host's state without starting to track it: for readiness and explain. */
  peek(host: string): { readonly attempted: boolean; readonly answer: DnsAnswer | undefined; readonly usable: boolean; readonly failures: number } | undefined {
    const s = this.states.get(host) ?? this.untracked.get(host);
    if (s === undefined) return undefined;
    return { attempted: s.attempted, answer: s.answer, usable: s.answer !== undefined && (s.usableUntil === Infinity || this.clock.now() <= s.usableUntil), failures: s.failures };
  }

  /** Stop refreshing a host and forget its answer (an upstream removed by a reload). */
  untrack(host: string): void {
    const s = this.states.get(host);
    if (!s) {
      this.untracked.delete(host);
      return;
    }
    s.cancelTimer?.();
    this.states.delete(host);
    if (!s.permanent) this.count(-1);
  }

  /** Wait for the first resolution attempt (for a host's first use), then answer as `current`. */
  async ready(host: string): Promise<DnsAnswer | undefined> {
    const s = this.find(host) ?? this.admit(host);
    if (s === null) return undefined;
    await s.first;
    return this.current(host);
  }

  /** Resolve now (joining one in flight), then answer as `current`. */
  async resolveNow(host: string): Promise<DnsAnswer | undefined> {
    const s = this.find(host) ?? this.admit(host);
    if (s === null) return undefined;
    await this.refresh(s, s.once ? 'untracked' : 'refresh');
    return this.current(host);
  }

  /** Tracked hosts: `track`ed ones and asked-for ones within the cap (not those resolved once). */
  get hosts(): readonly string[] {
    return [...this.states.keys()];
  }

  /** Asked-for names tracked now (at most `maxTracked`). */
  get trackedCount(): number {
    return this.tracked;
  }

  close(): void {
    this.closed = true;
    for (const s of this.states.values()) s.cancelTimer?.();
    this.states.clear();
    this.untracked.clear();
    if (this.tracked !== 0) this.count(-this.tracked);
  }

  /** A known host: tracked, or resolved once and not yet expired. */
  private find(host: string): HostState | undefined {
    const s = this.states.get(host);
    if (s !== undefined) return s;
    const once = this.untracked.get(host);
    if (once === undefined) return undefined;
    if (once.keepUntil === Infinity || this.clock.now() <= once.keepUntil) return once;
    this.untracked.delete(host);
    return undefined;
  }

  /** An asked-for host not known yet: tracked if the cap allows, else resolved once; null when no new name may be resolved now. */
  private admit(host: string): HostState | null {
    // An IP literal needs no query and no refresh: kept with the names resolved once (as is anything after close).
    if (literalAddress(host) !== null || this.closed) return this.start(host, 'once');
    if (!this.newNames.take(this.clock.now())) {
      this.options.onNotTracked?.(host, 'rate');
      return null;
    }
    if (this.tracked < this.maxTracked) return this.start(host, 'tracked');
    this.options.onNotTracked?.(host, 'cap');
    return this.start(host, 'once');
  }

  private count(delta: number): void {
    this.tracked += delta;
    this.options.onTracked?.(this.tracked);
  }

  private start(host: string, kind: 'permanent' | 'tracked' | 'once'): HostState {
    let settleFirst!: () => void;
    const first = new Promise<void>((resolve) => (settleFirst = resolve));
    const s: HostState = {
      host,
      answer: undefined,
      usableUntil: 0,
      first,
      settleFirst,
      attempted: false,
      inflight: null,
      cancelTimer: null,
      failures: 0,
      permanent: kind === 'permanent',
      used: true,
      wanted: true,
      idle: false,
      once: kind === 'once',
      keepUntil: Infinity,
    };
    if (kind === 'once') {
      if (this.untracked.size >= this.untrackedCacheSize) this.untracked.delete(this.untracked.keys().next().value!);
      this.untracked.set(host, s);
    } else {
      this.states.set(host, s);
      if (kind === 'tracked') this.count(1);
    }
    const literal = literalAddress(host);
    if (literal !== null) {
      // An IP literal is its own answer, forever.
      s.answer = Object.freeze({ host, addresses: Object.freeze([literal]), ttl: Infinity, resolvedAt: this.clock.now(), expiresAt: Infinity, source: 'literal' });
      s.usableUntil = Infinity;
      s.attempted = true;
      settleFirst();
      return s;
    }
    if (this.closed) {
      // Nothing will ever resolve it: settle at once so `ready` cannot hang.
      s.attempted = true;
      settleFirst();
    } else {
      void this.refresh(s, kind === 'once' ? 'untracked' : 'first');
    }
    return s;
  }

  private refresh(s: HostState, reason: DnsQueryReason): Promise<void> {
    if (s.usableUntil === Infinity || this.closed) return Promise.resolve();
    if (s.inflight) return s.inflight;
    if (s.cancelTimer) {
      s.cancelTimer();
      s.cancelTimer = null;
    }
    s.idle = false;
    s.wanted = false;
    s.inflight = this.query(s.host, reason)
      .then(
        ({ addresses, ttl, source }) => {
          const now = this.clock.now();
          const previous = s.answer;
          const answer: DnsAnswer = Object.freeze({ host: s.host, addresses: Object.freeze(addresses), ttl, resolvedAt: now, expiresAt: now + ttl * 1000, source });
          s.answer = answer;
          if (s.once) {
            // No refresh, so no grace for a failing one either; a TTL of 0 still answers the request that asked.
            s.usableUntil = s.keepUntil = Math.max(answer.expiresAt, now + (this.options.minRefreshMs ?? 250));
          } else {
            s.usableUntil = answer.expiresAt + this.graceMs;
          }
          s.failures = 0;
          this.options.onAnswer?.(s.host, answer);
          if (!previous || !sameAddresses(previous.addresses, addresses)) this.options.onChange?.(s.host, previous, answer);
          this.schedule(s, Math.max(ttl * 1000 * (this.options.refreshAt ?? 0.75), this.options.minRefreshMs ?? 250));
        },
        (err: unknown) => {
          s.failures++;
          this.options.onFailure?.(s.host, err instanceof Error ? err : new Error(String(err)));
          // Resolved once: "no answer" holds for the shortest retry, then the next ask tries again.
          if (s.once) s.keepUntil = this.clock.now() + (this.options.retryMinMs ?? 1000);
          this.schedule(s, this.retryDelay(s));
        },
      )
      .finally(() => {
        s.inflight = null;
        s.attempted = true;
        s.settleFirst();
      });
    return s.inflight;
  }

  private schedule(s: HostState, delayMs: number): void {
    if (this.closed || this.states.get(s.host) !== s) return;
    // Refreshing must never keep a process alive on its own: clock timers do not.
    s.cancelTimer = this.clock.after(delayMs, () => {
      s.cancelTimer = null;
      this.due(s);
    });
  }

  /** Backoff after the latest of a run of failures, doubling from min to max. */
  private retryDelay(s: HostState): number {
    return Math.min(this.options.retryMaxMs ?? 30_000, (this.options.retryMinMs ?? 1000) * 2 ** Math.min(Math.max(s.failures - 1, 0), 16));
  }

  /**
   * A refresh (or retry) is due. An asked-for name is queried again only if
   * it was asked for since its last query; otherwise it is not queried and
   * is forgotten (an ask before then refreshes it at once): a resolved name
   * when its answer expires; a name whose resolution is failing once its
   * last answer's grace is over (what a DNS outage is served with) and one
   * more retry interval has passed, so it answers "no address" at once
   * instead of holding its next request for a new first query.
   */
  private due(s: HostState): void {
    if (s.permanent || s.wanted) {
      void this.refresh(s, 'refresh');
      return;
    }
    s.idle = true;
    const now = this.clock.now();
    const until = s.failures === 0 ? (s.answer?.expiresAt ?? now) : Math.max(s.usableUntil, now) + this.retryDelay(s);
    if (until <= now) {
      this.untrack(s.host);
      return;
    }
    s.cancelTimer = this.clock.after(until - now, () => {
      s.cancelTimer = null;
      if (s.idle && this.states.get(s.host) === s) this.untrack(s.host);
    });
  }

  private async query(host: string, reason: DnsQueryReason): Promise<{ addresses: string[]; ttl: number; source: 'dns' | 'system' }> {
    const { onQuery, onQueryReason } = this.options;
    // RFC 6761: localhost is the machine itself; configured DNS servers need not know it.
    if (this.dns === null || host === 'localhost' || host.endsWith('.localhost')) {
      onQuery?.(host, 'lookup');
      onQueryReason?.(host, 'lookup', reason);
      const found = this.options.lookup ? await this.options.lookup(host) : await lookup(host, { all: true });
      const v4 = found.filter((a) => a.family === 4).map((a) => a.address);
      const v6 = found.filter((a) => a.family === 6).map((a) => a.address);
      const addresses = unique([...v4, ...v6]);
      if (addresses.length === 0) throw Object.assign(new Error(`${host}: no addresses`), { code: 'ENODATA' });
      return { addresses, ttl: this.minTtl, source: 'system' };
    }
    onQuery?.(host, 'A');
    onQuery?.(host, 'AAAA');
    onQueryReason?.(host, 'A', reason);
    onQueryReason?.(host, 'AAAA', reason);
    const [a, aaaa] = await Promise.allSettled([this.dns.resolve4(host, { ttl: true }), this.dns.resolve6(host, { ttl: true })]);
    const records = [...(a.status === 'fulfilled' ? a.value : []), ...(aaaa.status === 'fulfilled' ? aaaa.value : [])];
    if (records.length === 0) {
      // Both failed or both empty: report the more telling error (a timeout over "no AAAA").
      const errors = [a, aaaa].filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as NodeJS.ErrnoException);
      const telling = errors.find((e) => e.code !== 'ENODATA' && e.code !== 'ENOTFOUND') ?? errors[0];
      throw telling ?? Object.assign(new Error(`${host}: no A or AAAA records`), { code: 'ENODATA' });
    }
    const ttl = Math.min(Math.max(Math.min(...records.map((r) => r.ttl)), this.minTtl), this.maxTtl);
    return { addresses: unique(records.map((r) => r.address)), ttl, source: 'dns' };
  }
}

/** The address when the host is an IP literal ('10.0.0.1', '::1', '[::1]'), else null. */
export function literalAddress(host: string): string | null {
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  return isIP(bare) === 0 ? null : bare;
}

function unique(addresses: string[]): string[] {
  return [...new Set(addresses)];
}

function sameAddresses(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
