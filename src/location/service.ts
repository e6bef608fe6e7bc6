import { systemClock, type Clock } from '../clock.js';
import type { Config } from '../config/load.js';
import { silentLogger, type OperationalLogger } from '../log.js';
import type { GeoIp, GeoIpInfo } from './geoip.js';
import { NetworkLocator, UNRESOLVED, type NetworkLocation } from './network-locator.js';
import type { NetworkLocationSettings } from './network-config.js';
import { SiteNetworks } from './networks.js';
import { CloudRanges } from './ranges.js';
import { PinningResolver, type DnsAnswer, type DnsQueryReason, type NotTrackedReason, type ResolverOptions } from './resolver.js';
import type { Signal } from './signals.js';

/**
 * Network location for the server: one pinning resolver, the GeoIP
 * database, the cloud range and site network tables, and the locator over
 * them, with their lifecycle (load at startup, tables again on every policy
 * reload, GeoIP when its file changes, close).
 *
 * The data plane calls `locate(host)`: a synchronous cache read once the
 * host has an answer; 'pending' only for a host's first request (the caller
 * awaits `ready(host)` once). The address returned is the one the request
 * must be sent to: what was located is what is reached.
 */
export type LocationSource = 'dns' | 'site' | 'cloud-range' | 'geoip';
export type LookupResult = 'hit' | 'miss' | 'error';

export interface LocationEvents {
  /** A lookup performed (DNS: each resolution; the others: each address located, not each request). */
  lookup?: (source: LocationSource, result: LookupResult) => void;
  /** A source reloaded (GeoIP file change; range files and site networks with the policy). */
  reload?: (source: 'geoip' | 'cloud-range' | 'site', ok: boolean) => void;
  /** A DNS query sent for an upstream name (A and AAAA one each), by why. */
  dnsQuery?: (reason: DnsQueryReason) => void;
  /** A `{host}` name not tracked: past dns.max_tracked_hosts (resolved once) or dns.max_new_hosts_per_second (not resolved). */
  hostNotTracked?: (reason: NotTrackedReason) => void;
  /** How many `{host}` names are tracked now (the configured upstreams' hosts not counted). */
  trackedHosts?: (count: number) => void;
}

/** One line of `residency_location_source_info`. */
export interface SourceInfo {
  readonly source: 'geoip' | 'cloud-range';
  readonly version: string;
  /** ISO 8601, '' when the source carries no date (Azure Service Tags). */
  readonly built: string;
}

export interface LocationServiceOptions {
  settings: NetworkLocationSettings;
  /** The `networks` key. */
  networks: Config['networks'];
  /** Host names (or IP literals) of the configured upstreams: resolved at startup and kept fresh. */
  hosts: readonly string[];
  events?: LocationEvents;
  /** The operational log: resolution failures, changed addresses, reloads, host limits reached. Default: silent. */
  logger?: OperationalLogger;
  /** Replaces the system resolver (tests: made-up names to loopback). */
  lookup?: ResolverOptions['lookup'];
  /** How often hosts nobody asked for lately stop being refreshed. Default 5 minutes. */
  sweepMs?: number;
  /** Time and timers for the resolver and the service's own (the sweep, `resolved`'s wait). Default: the system clock. */
  clock?: Clock;
  /**
   * Bounds on the names `{host}` upstreams are asked for (clients choose
   * them): `dns.max_tracked_hosts` and `dns.max_new_hosts_per_second`,
   * defaults as in the config schema (1000, 50).
   */
  hostLimits?: { maxTrackedHosts?: number; maxNewHostsPerSecond?: number };
}

/** The chain explain prints: host → addresses → each address's signals. */
export interface LocationChain {
  readonly host: string;
  readonly answer: DnsAnswer | null;
  /** Why there is no answer. */
  readonly error: string | null;
  /** The address the proxy would connect to (null: none, so the location is unknown). */
  readonly address: string | null;
  /** Every address of the answer with its signals (the proxy uses one, per `location.pick`). */
  readonly addresses: readonly { readonly address: string; readonly signals: readonly Signal[] }[];
  /** What the decision takes: the address used and its signals. */
  readonly network: NetworkLocation;
}

type State = 'idle' | 'loading' | 'ready' | 'failed' | 'closed';

export class LocationService {
  readonly resolver: PinningResolver;
  private locator: NetworkLocator | null = null;
  private geoip: GeoIp | null = null;
  private ranges: CloudRanges = CloudRanges.EMPTY;
  private sites: SiteNetworks;
  private hosts: Set<string>;
  private state: State = 'idle';
  private failure: Error | null = null;
  private started: Promise<void> | null = null;
  private reloads: Promise<void> = Promise.resolve();
  /** Cancels the next sweep. */
  private cancelSweep: (() => void) | null = null;
  private readonly clock: Clock;
  private readonly events: LocationEvents;
  private readonly logger: OperationalLogger;
  /** The last resolution error per host, until it resolves. */
  private readonly failures = new Map<string, string>();
  /** Each limit is logged the first time it turns a name away (the counters say how often). */
  private readonly limitsLogged = new Set<NotTrackedReason>();

  constructor(private readonly options: LocationServiceOptions) {
    const { dns } = options.settings;
    this.events = options.events ?? {};
    this.logger = options.logger ?? silentLogger;
    this.clock = options.clock ?? systemClock;
    const events = this.events;
    const logger = this.logger;
    this.resolver = new PinningResolver({
      servers: dns.servers,
      minTtl: dns.minTtl,
      maxTtl: dns.maxTtl,
      graceSeconds: dns.graceSeconds,
      timeoutMs: dns.timeoutMs,
      tries: dns.tries,
      maxTracked: options.hostLimits?.maxTrackedHosts ?? 1000,
      maxNewPerSecond: options.hostLimits?.maxNewHostsPerSecond ?? 50,
      ...(options.lookup ? { lookup: options.lookup } : {}),
      clock: this.clock,
      onQueryReason: (_host, _kind, reason) => events.dnsQuery?.(reason),
      onTracked: (count) => events.trackedHosts?.(count),
      onNotTracked: (host, reason) => {
        events.hostNotTracked?.(reason);
        if (this.limitsLogged.has(reason)) return;
        this.limitsLogged.add(reason);
        if (reason === 'cap') {
          logger.warn({ host }, 'dns.max_tracked_hosts reached: further {host} names are resolved once per TTL, not refreshed (logged once)');
        } else {
          logger.warn({ host }, 'dns.max_new_hosts_per_second reached: a new {host} name was not resolved, so its request has no located address (logged once)');
        }
      },
      onAnswer: (host) => {
        this.failures.delete(host);
        events.lookup?.('dns', 'hit');
      },
      onFailure: (host, err) => {
        const code = (err as NodeJS.ErrnoException).code;
        // Bounded: only for explaining why a host has no answer.
        if (this.failures.size > 1000) this.failures.clear();
        this.failures.set(host, `${code ?? 'error'}: ${err.message}`);
        // No such name or no address records: the name is the problem, not the resolver.
        events.lookup?.('dns', code === 'ENOTFOUND' || code === 'ENODATA' ? 'miss' : 'error');
        logger.warn({ host, code, err: err.message }, 'upstream name could not be resolved; the last answer is served within dns.grace_seconds, then the location is unknown');
      },
      onChange: (host, previous, next) => {
        if (previous !== undefined) logger.info({ host, from: previous.addresses, to: next.addresses }, 'upstream addresses changed');
      },
    });
    // Validated by the config checks; compiled now so a start never fails on it.
    this.sites = SiteNetworks.fromConfig(options.networks);
    this.hosts = new Set(options.hosts);
  }

  /**
   * Load GeoIP and the range files, then start resolving the configured
   * hosts. Rejects (GeoIpError, RangeFileError: the file and what is wrong)
   * when a source cannot be used: the proxy does not start without it.
   */
  start(): Promise<void> {
    this.started ??= this.load();
    return this.started;
  }

  private async load(): Promise<void> {
    this.state = 'loading';
    const { settings } = this.options;
    const geo = settings.geoip;
    const events = this.events;
    const logger = this.logger;
    try {
      const [geoip, ranges] = await Promise.all([
        geo === null
          ? null
          : // Imported only when used: without GeoIP (explain included) maxmind is never loaded.
            import('./geoip.js').then(({ GeoIp }) =>
              GeoIp.open({
                ...(geo.path === null ? {} : { path: geo.path }),
                ...(geo.schema === undefined ? {} : { schema: geo.schema }),
                // The bundled database changes only with the package: nothing to watch.
                watch: geo.watch && geo.path !== null,
                onReload: (info: GeoIpInfo) => {
                  events.reload?.('geoip', true);
                  logger.info({ file: info.path, database_type: info.databaseType, built: info.buildEpoch.toISOString() }, 'GeoIP database reloaded');
                },
                onReloadError: (err: Error) => {
                  events.reload?.('geoip', false);
                  logger.error({ err: err.message }, 'GeoIP database reload refused; keeping the last good database');
                },
              }),
            ),
        CloudRanges.load(settings.cloudRanges),
      ]);
      if (this.isClosed()) {
        geoip?.close();
        return;
      }
      this.geoip = geoip;
      this.ranges = ranges;
    } catch (err) {
      this.state = 'failed';
      this.failure = err as Error;
      throw err;
    }
    this.locator = new NetworkLocator({
      resolver: this.resolver,
      sites: this.sites,
      ranges: this.ranges,
      geoip: this.geoip,
      pick: settings.pick,
      onLookup: (source, result) => events.lookup?.(source, result),
    });
    for (const host of this.hosts) this.resolver.track(host);
    this.state = 'ready';
    this.scheduleSweep(this.options.sweepMs ?? 5 * 60_000);
  }

  /** Every `sweepMs`, until closed (clock timers never keep the process alive). */
  private scheduleSweep(sweepMs: number): void {
    this.cancelSweep = this.clock.after(sweepMs, () => {
      this.cancelSweep = null;
      if (this.isClosed()) return;
      this.locator?.sweep();
      this.scheduleSweep(sweepMs);
    });
  }

  /** Wait (at most `timeoutMs`) for the first resolution of every configured host, either way. */
  async resolved(timeoutMs: number): Promise<void> {
    await this.start();
    let cancel: (() => void) | undefined;
    const timeout = new Promise<void>((resolve) => {
      cancel = this.clock.after(timeoutMs, resolve);
    });
    await Promise.race([Promise.all([...this.hosts].map((h) => this.resolver.ready(h))), timeout]);
    cancel?.();
  }

  /** The address to send to and its network signals; 'pending' before the host's first answer (await `ready`). */
  locate(host: string): NetworkLocation | 'pending' {
    return this.locator === null ? 'pending' : this.locator.locate(host);
  }

  /** Settles when `locate(host)` has something to say (an answer, or none after the first attempt). */
  async ready(host: string): Promise<void> {
    if (this.locator === null) {
      // Not started (or failed, or closed): nothing will come, so the caller sees UNRESOLVED.
      if (this.state !== 'loading') return;
      await this.started?.catch(() => {});
      if (this.locator === null) return;
    }
    await this.locator.ready(host);
  }

  /** Like `locate`, waiting for a first answer: never 'pending'. */
  async locateNow(host: string): Promise<NetworkLocation> {
    let found = this.locate(host);
    if (found === 'pending') {
      await this.ready(host);
      found = this.locate(host);
    }
    return found === 'pending' ? UNRESOLVED : found;
  }

  /** Resolve a host now and locate every address of the answer (explain). */
  async chain(host: string): Promise<LocationChain> {
    await this.start();
    const answer = await this.resolver.resolveNow(host);
    if (answer === undefined || this.locator === null) {
      return { host, answer: null, error: this.failures.get(host) ?? 'no answer', address: null, addresses: [], network: UNRESOLVED };
    }
    const located = await this.locateNow(host);
    const locator = this.locator;
    return {
      host,
      answer,
      error: null,
      address: located.address,
      addresses: answer.addresses.map((address) => ({ address, signals: locator.locateAddress(address).signals })),
      network: located,
    };
  }

  /**
   * After a policy reload: new site networks and range files (re-read, so
   * SIGHUP picks up updated provider files), and the upstream hosts to keep
   * resolved. A range file that cannot be used keeps the last good tables.
   */
  reload(config: Config, hosts: readonly string[], cloudRanges: NetworkLocationSettings['cloudRanges']): Promise<void> {
    // One at a time, in order: a slow range file must not let an older reload win.
    // Never rejects: a reload that fails keeps what is in use, and says so.
    this.reloads = this.reloads.then(() =>
      this.reloadNow(config, hosts, cloudRanges).catch((err: unknown) => {
        this.logger.error({ err: (err as Error).message }, 'location sources could not be reloaded; keeping the last good ones');
      }),
    );
    return this.reloads;
  }

  private async reloadNow(config: Config, hosts: readonly string[], cloudRanges: NetworkLocationSettings['cloudRanges']): Promise<void> {
    if (this.state === 'closed') return;
    const events = this.events;
    const logger = this.logger;
    let sites = this.sites;
    try {
      sites = SiteNetworks.fromConfig(config.networks);
      events.reload?.('site', true);
    } catch (err) {
      events.reload?.('site', false);
      logger.error({ err: (err as Error).message }, 'site networks could not be compiled; keeping the last good ones');
    }
    let ranges = this.ranges;
    try {
      ranges = await CloudRanges.load(cloudRanges);
      events.reload?.('cloud-range', true);
    } catch (err) {
      events.reload?.('cloud-range', false);
      logger.error({ err: (err as Error).message, code: (err as { code?: string }).code }, 'cloud range files could not be loaded; keeping the last good ones');
    }
    if (this.isClosed()) return;
    this.sites = sites;
    this.ranges = ranges;
    this.locator?.setTables({ sites, ranges });
    const next = new Set(hosts);
    for (const host of this.hosts) if (!next.has(host)) this.locator?.forget(host);
    this.hosts = next;
    if (this.locator !== null) for (const host of next) this.resolver.track(host);
  }

  /** For /readyz: loaded, and every configured host resolved once (either way). */
  readiness(): { ok: boolean; detail: string } {
    switch (this.state) {
      case 'idle':
      case 'loading':
        return { ok: false, detail: 'loading location sources' };
      case 'failed':
        return { ok: false, detail: this.failure?.message ?? 'location sources failed to load' };
      case 'closed':
        return { ok: false, detail: 'closed' };
    }
    const pending: string[] = [];
    const unresolved: string[] = [];
    for (const host of this.hosts) {
      const s = this.resolver.peek(host);
      if (s === undefined || !s.attempted) pending.push(host);
      else if (!s.usable) unresolved.push(host);
    }
    if (pending.length > 0) return { ok: false, detail: `resolving ${pending.join(', ')}` };
    const geo = this.geoip === null ? 'no GeoIP' : `${this.geoip.info.name} built ${this.geoip.info.buildEpoch.toISOString().slice(0, 10)}`;
    const parts = [geo, `${this.ranges.files.length} range file(s)`, `${this.sites.size} site network(s)`, `${this.hosts.size - unresolved.length}/${this.hosts.size} upstream host(s) resolved`];
    // An unresolvable upstream fails closed on its own requests; it does not make the replica unready.
    if (unresolved.length > 0) parts.push(`unresolved (requests to them are refused or fail): ${unresolved.join(', ')}`);
    return { ok: true, detail: parts.join('; ') };
  }

  /** When the GeoIP database in use was built, Unix seconds. */
  geoipBuildEpoch(): number | null {
    return this.geoip === null ? null : this.geoip.info.buildEpoch.getTime() / 1000;
  }

  /** The oldest creation date among the range files in use, Unix seconds. */
  rangesCreatedEpoch(): number | null {
    let oldest: number | null = null;
    for (const f of this.ranges.files) {
      if (f.created === null) continue;
      const t = Date.parse(f.created) / 1000;
      if (oldest === null || t < oldest) oldest = t;
    }
    return oldest;
  }

  sources(): SourceInfo[] {
    const out: SourceInfo[] = [];
    if (this.geoip !== null) out.push({ source: 'geoip', version: this.geoip.info.label, built: this.geoip.info.buildEpoch.toISOString() });
    for (const f of this.ranges.files) out.push({ source: 'cloud-range', version: `${f.provider}:${f.version}`, built: f.created ?? '' });
    return out;
  }

  /** GeoIP reload counters (the watcher's, and any refused file). */
  get geoipCounters(): { reloads: number; reloadFailures: number } | null {
    return this.geoip?.counters ?? null;
  }

  /** A method, not a field read: `close` may run while a load awaits. */
  private isClosed(): boolean {
    return this.state === 'closed';
  }

  close(): void {
    this.state = 'closed';
    this.cancelSweep?.();
    this.cancelSweep = null;
    this.resolver.close();
    this.geoip?.close();
  }
}
