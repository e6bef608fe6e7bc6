import { lookup, Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';

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
  /**
   * Replaces the system resolver (getaddrinfo) where it is used: no
   * `servers`, and localhost names. For tests that send made-up names to loopback.
   */
  lookup?: (host: string) => Promise<readonly { address: string; family: number }[]>;
  onQuery?: (host: string, kind: DnsQueryKind) => void;
  /** After each query that returned an answer (one call per resolution, not per family). */
  onAnswer?: (host: string, answer: DnsAnswer) => void;
  onFailure?: (host: string, err: Error) => void;
  /** The address list of a host changed (first answer included). */
  onChange?: (host: string, previous: DnsAnswer | undefined, next: DnsAnswer) => void;
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
  timer: NodeJS.Timeout | null;
  failures: number;
  /** Tracked on purpose (`track`): kept until `untrack`, never swept. */
  permanent: boolean;
  /** Asked for (`current`) since the last sweep. */
  used: boolean;
}

export class PinningResolver {
  private readonly states = new Map<string, HostState>();
  private readonly dns: Resolver | null;
  private readonly minTtl: number;
  private readonly maxTtl: number;
  private readonly graceMs: number;
  private closed = false;

  constructor(private readonly options: ResolverOptions = {}) {
    this.minTtl = options.minTtl ?? 5;
    this.maxTtl = Math.max(options.maxTtl ?? 300, this.minTtl);
    this.graceMs = (options.graceSeconds ?? 60) * 1000;
    if (options.servers && options.servers.length > 0) {
      this.dns = new Resolver({ timeout: options.timeoutMs ?? 2000, tries: options.tries ?? 2 });
      this.dns.setServers([...options.servers]);
    } else {
      this.dns = null;
    }
  }

  /**
   * The answer to use now: fresh, or stale within the grace period. Undefined
   * while the first resolution is pending, and after the grace period when
   * resolution keeps failing. Starts tracking an unknown host. Never queries.
   */
  current(host: string): DnsAnswer | undefined {
    const s = this.states.get(host) ?? this.start(host);
    // A flag, not a timestamp: the hot path must not read the clock twice.
    s.used = true;
    if (s.answer === undefined) return undefined;
    return s.usableUntil === Infinity || Date.now() <= s.usableUntil ? s.answer : undefined;
  }

  /** True until the first resolution attempt for the host has finished. */
  isPending(host: string): boolean {
    return !(this.states.get(host) ?? this.start(host)).attempted;
  }

  /** Start resolving and refreshing a host (idempotent); it stays tracked until `untrack`, however idle. */
  track(host: string): void {
    (this.states.get(host) ?? this.start(host)).permanent = true;
  }

  /**
   * Stop refreshing hosts that were started by `current` (not `track`) and
   * not asked for since the previous sweep; returns them. Hosts a `{host}`
   * upstream forwards to (one per bucket name) come and go: without this,
   * every name ever requested would be refreshed forever.
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
    const s = this.states.get(host);
    if (s === undefined) return undefined;
    return { attempted: s.attempted, answer: s.answer, usable: s.answer !== undefined && (s.usableUntil === Infinity || Date.now() <= s.usableUntil), failures: s.failures };
  }

  /** Stop refreshing a host and forget its answer (an upstream removed by a reload). */
  untrack(host: string): void {
    const s = this.states.get(host);
    if (!s) return;
    if (s.timer) clearTimeout(s.timer);
    this.states.delete(host);
  }

  /** Wait for the first resolution attempt (for a host's first use), then answer as `current`. */
  async ready(host: string): Promise<DnsAnswer | undefined> {
    await (this.states.get(host) ?? this.start(host)).first;
    return this.current(host);
  }

  /** Resolve now (joining one in flight), then answer as `current`. */
  async resolveNow(host: string): Promise<DnsAnswer | undefined> {
    const s = this.states.get(host) ?? this.start(host);
    await this.refresh(s);
    return this.current(host);
  }

  get hosts(): readonly string[] {
    return [...this.states.keys()];
  }

  close(): void {
    this.closed = true;
    for (const s of this.states.values()) if (s.timer) clearTimeout(s.timer);
    this.states.clear();
  }

  private start(host: string): HostState {
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
      timer: null,
      failures: 0,
      permanent: false,
      used: true,
    };
    this.states.set(host, s);
    const literal = literalAddress(host);
    if (literal !== null) {
      // An IP literal is its own answer, forever.
      s.answer = Object.freeze({ host, addresses: Object.freeze([literal]), ttl: Infinity, resolvedAt: Date.now(), expiresAt: Infinity, source: 'literal' });
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
      void this.refresh(s);
    }
    return s;
  }

  private refresh(s: HostState): Promise<void> {
    if (s.usableUntil === Infinity || this.closed) return Promise.resolve();
    if (s.inflight) return s.inflight;
    if (s.timer) {
      clearTimeout(s.timer);
      s.timer = null;
    }
    s.inflight = this.query(s.host)
      .then(
        ({ addresses, ttl, source }) => {
          const now = Date.now();
          const previous = s.answer;
          const answer: DnsAnswer = Object.freeze({ host: s.host, addresses: Object.freeze(addresses), ttl, resolvedAt: now, expiresAt: now + ttl * 1000, source });
          s.answer = answer;
          s.usableUntil = answer.expiresAt + this.graceMs;
          s.failures = 0;
          this.options.onAnswer?.(s.host, answer);
          if (!previous || !sameAddresses(previous.addresses, addresses)) this.options.onChange?.(s.host, previous, answer);
          this.schedule(s, Math.max(ttl * 1000 * (this.options.refreshAt ?? 0.75), this.options.minRefreshMs ?? 250));
        },
        (err: unknown) => {
          s.failures++;
          this.options.onFailure?.(s.host, err instanceof Error ? err : new Error(String(err)));
          const min = this.options.retryMinMs ?? 1000;
          this.schedule(s, Math.min(this.options.retryMaxMs ?? 30_000, min * 2 ** Math.min(s.failures - 1, 16)));
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
    s.timer = setTimeout(() => {
      s.timer = null;
      void this.refresh(s);
    }, delayMs);
    // Refreshing must never keep a process alive on its own.
    s.timer.unref();
  }

  private async query(host: string): Promise<{ addresses: string[]; ttl: number; source: 'dns' | 'system' }> {
    const onQuery = this.options.onQuery;
    // RFC 6761: localhost is the machine itself; configured DNS servers need not know it.
    if (this.dns === null || host === 'localhost' || host.endsWith('.localhost')) {
      onQuery?.(host, 'lookup');
      const found = this.options.lookup ? await this.options.lookup(host) : await lookup(host, { all: true });
      const v4 = found.filter((a) => a.family === 4).map((a) => a.address);
      const v6 = found.filter((a) => a.family === 6).map((a) => a.address);
      const addresses = unique([...v4, ...v6]);
      if (addresses.length === 0) throw Object.assign(new Error(`${host}: no addresses`), { code: 'ENODATA' });
      return { addresses, ttl: this.minTtl, source: 'system' };
    }
    onQuery?.(host, 'A');
    onQuery?.(host, 'AAAA');
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
