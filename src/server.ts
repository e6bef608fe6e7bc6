import { randomUUID } from 'node:crypto';
import type { AddressInfo, LookupFunction } from 'node:net';
import { hostname } from 'node:os';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { buildAdminApp } from './admin/app.js';
import { loadAdminSecurity } from './admin/config.js';
import { startDemoUpstream } from './demo/upstream.js';
import { createShipper } from './audit/shipper.js';
import { clientMasker } from './audit/privacy.js';
import { openDecisionLog } from './audit/sink.js';
import { workerLogPath } from './audit/worker-logs.js';
import type { DecisionSink } from './audit/record.js';
import type { Config } from './config/load.js';
import { joinFleet, type FleetEvent } from './fleet/member.js';
import { connectFleetRedis, type FleetRedis } from './fleet/redis.js';
import { networkLocationSettings } from './location/network-config.js';
import { createRequestStores } from './fleet/request-stores.js';
import { LocationService } from './location/service.js';
import { createMetrics, readPackageVersion, type Metrics } from './metrics/registry.js';
import { buildProxyApp, type ProxyApp } from './proxy/app.js';
import { createDataPlane, type DataPlane } from './proxy/data-plane.js';
import { writeDecision } from './proxy/handler.js';
import { Forwarder, type ForwarderOptions } from './proxy/forward.js';
import { forwardProxySettings } from './proxy/tls-config.js';
import { DataPlaneTls } from './proxy/tls-listener.js';
import type { TunnelDeps } from './proxy/tunnel.js';
import { CertificateMinter } from './tls/minter.js';
import type { DecisionEntry } from './audit/record.js';
import type { Planner } from './plan/plan.js';
import { signedRequestWarnings, type Upstream } from './plan/route.js';
import { PolicyStore } from './reload.js';
import { createOperationalLog } from './operational-log.js';

export { buildPlanner, loadConfig, parseConfigText } from './load.js';

export interface ResidencyProxyOptions {
  logger?: Logger;
  /** Replica id in decision records; default: host name. */
  replica?: string;
  /** Decision sink; default: the file (or stdout) named by decision_log.path. */
  sink?: DecisionSink;
  /** The shadow policy the config names, already loaded (see loadPolicy). */
  shadow?: Config | null;
  /** Reload the policy when its file changes (serve does; tests opt in). */
  watch?: boolean;
  /** Environment for overrides when the policy is reloaded. */
  env?: NodeJS.ProcessEnv;
  /** Clock for exception expiry. */
  now?: () => number;
  /**
   * Socket options for upstream connections. A `lookup` in it (tests: made-up
   * names to loopback) is what network location resolves upstream names with,
   * in place of the system resolver.
   */
  upstreamConnect?: ForwarderOptions['connect'];
  /** Fleet events (lockdown set/lift applied, Redis lost/back), also in the operational log. */
  onFleetEvent?: (event: FleetEvent) => void;
  /**
   * Hold each forwarded write's answer until its outcome record is durable
   * too (tests that read the log right after an answer). Off by default: the
   * decision is durable before the write; the outcome follows in the next batch.
   */
  awaitOutcomes?: boolean;
  /**
   * This process is worker `index` of a `workers` cluster (src/cluster): it
   * writes its own decision log file, labels every metric series
   * `worker="<index>"`, and leaves the admin port and the demo upstream to the
   * primary (which reaches this admin app through `admin.inject`).
   */
  clusterWorker?: { index: number };
}

export interface ResidencyProxy {
  readonly config: Config;
  /** This process's replica id in records, heartbeats and /fleet. */
  readonly replica: string;
  /** The data plane's own listener (`serve`), built when first used: the plugin never builds it. */
  readonly proxy: ProxyApp;
  /** The data plane's request entry, for a Fastify route of someone else's app (the plugin). */
  readonly dataPlane: DataPlane;
  readonly admin: FastifyInstance;
  readonly metrics: Metrics;
  readonly logger: Logger;
  planner(): Planner;
  /** The policy lifecycle: status, reload. */
  readonly policy: PolicyStore;
  /** Bind both listeners; returns their addresses (a cluster worker binds no admin port: ignore its admin address). */
  listen(): Promise<{ proxy: AddressInfo; admin: AddressInfo }>;
  /** Starts every part, binding only the listeners asked for (the plugin binds neither data-plane listener nor, if told, admin). */
  start(listeners: { dataPlane: boolean; admin: boolean }): Promise<{ admin: AddressInfo | null }>;
  /** Stop accepting, let in-flight requests finish, close the log. */
  close(): Promise<void>;
}

/** The composition root: builds every part from one validated Config. */
export function createResidencyProxy(config: Config, options: ResidencyProxyOptions = {}): ResidencyProxy {
  // The operational log leaves stdout to the decision log when that is configured there.
  const logger = options.logger ?? createOperationalLog(config);
  const env = options.env ?? process.env;
  const worker = options.clusterWorker;
  for (const warning of signedRequestWarnings(config)) logger.warn({ config: warning.path, expected: warning.expected }, warning.message);
  // Admin secrets are read before anything opens: a missing token stops the start.
  const adminSecurity = loadAdminSecurity(config, env);
  // RESIDENCY_REPLICA tells apart several processes on one host (the host name is the default).
  // A cluster worker is a replica of its own: `<replica>-w<index>`.
  const replica = options.replica ?? `${env.RESIDENCY_REPLICA ?? hostname()}${worker ? `-w${worker.index}` : ''}`;

  // The durable, chained decision log (or stdout); with Redis configured, a shipper copies it to a stream off the request path.
  const decisionLog = options.sink
    ? { sink: options.sink, log: null }
    : openDecisionLog(worker ? { ...config.decision_log, path: workerLogPath(config.decision_log.path, worker.index) } : config.decision_log, {
        replica,
        env,
        logger: logger.child({ component: 'decision-log' }),
      });
  const sink = decisionLog.sink;
  const maskClient = clientMasker(config.decision_log, env);
  const shipper =
    decisionLog.log && config.redis
      ? createShipper({
          log: decisionLog.log,
          redisUrl: config.redis.url,
          streamKey: `${config.redis.key_prefix}${config.decision_log.stream.key}`,
          maxlen: config.decision_log.stream.maxlen,
          logger: logger.child({ component: 'shipper' }),
        })
      : null;
  let lastFlush: number | null = null;
  decisionLog.log?.onCommit(() => {
    lastFlush = Date.now() / 1000;
  });
  /** Records not yet in the file (held while it is unwritable) or not yet shipped to Redis; null for a sink that is not the file. */
  const decisionLogBacklog = () => (decisionLog.log === null ? null : decisionLog.log.heldCount() + (shipper?.backlog() ?? 0));

  const metrics = createMetrics({
    version: readPackageVersion(),
    ...(worker ? { defaultLabels: { worker: String(worker.index) } } : {}),
    // Read at scrape time; location is built below (it counts into these metrics).
    evidence: {
      decisionLogBacklog,
      decisionLogLastFlushEpoch: () => lastFlush,
      geoipBuildEpoch: () => location?.geoipBuildEpoch() ?? null,
      ipRangesCreatedEpoch: () => location?.rangesCreatedEpoch() ?? null,
      locationSources: () => location?.sources() ?? [],
    },
  });

  // The one fleet Redis connection (shared state: discovered bucket regions,
  // upload locations); null without `redis`. The decision-log shipper keeps its own.
  const fleetRedis: FleetRedis | null = config.redis
    ? connectFleetRedis({
        url: config.redis.url,
        keyPrefix: config.redis.key_prefix,
        logger: logger.child({ component: 'redis' }),
      })
    : null;
  // This replica in the fleet: heartbeat, /fleet, and the lockdown switch every planner reads per request.
  const fleet = joinFleet({
    redis: fleetRedis,
    settings: config.fleet,
    replica,
    version: readPackageVersion(),
    metrics,
    logger: logger.child({ component: 'fleet' }),
    onFleetEvent(event) {
      // A lockdown set or lifted here is chained into this replica's decision log.
      if (event.type === 'lockdown') {
        const entry = { kind: 'event', event: 'lockdown', ts: event.at, id: randomUUID(), state: event.state, reason: event.reason, set_by: event.set_by, set_at: event.set_at, trigger: event.trigger } as const;
        sink.write(entry).catch((err: Error) => logger.error({ err: err.message }, 'lockdown event could not be written to the decision log'));
      }
      options.onFleetEvent?.(event);
    },
    policy: () => policy.status(),
    decisionLog: () => ({ healthy: sink.healthy(), backlog: decisionLogBacklog() }),
  });

  const policy = new PolicyStore(
    {
      file: config.source,
      env: options.env ?? {},
      ...(options.now ? { now: options.now } : {}),
      lockdown: () => fleet.lockdownActive(),
      onReload(attempt, current) {
        metrics.policyReloads.inc({ result: attempt.ok ? 'success' : 'failure' });
        if (attempt.ok) {
          forwarder.retain(current.upstreams);
          // Site networks and range files reload with the policy (a bad range file keeps the last good tables).
          if (location !== null) void location.reload(policy.config(), upstreamHosts(current.upstreams), networkLocationSettings(policy.config()).cloudRanges);
          const restartLocation = locationRestartKeys(config, policy.config());
          if (restartLocation.length > 0) logger.warn({ keys: restartLocation }, 'changed settings take effect only after a restart');
          metrics.policyInfo.reset();
          metrics.policyInfo.set({ hash: current.policy.hash }, 1);
          metrics.policyLoadedTimestamp.set(Date.parse(attempt.at) / 1000);
          logger.info({ trigger: attempt.trigger, policy: current.policy.hash, restart_required: attempt.restartRequired }, 'policy reloaded');
          fleet.refresh();
          if (attempt.restartRequired.length > 0) {
            logger.warn({ keys: attempt.restartRequired }, 'changed settings take effect only after a restart');
          }
        } else {
          for (const problem of attempt.problems) logger.error({ trigger: attempt.trigger, problem }, 'policy reload failed; keeping the last good policy');
        }
      },
    },
    { config, shadow: options.shadow ?? null },
  );
  const planner = () => policy.current();
  metrics.policyReloads.inc({ result: 'success' });
  metrics.policyInfo.set({ hash: planner().policy.hash }, 1);
  metrics.policyLoadedTimestamp.set(Date.parse(policy.status().loadedAt) / 1000);
  // Network location (location.network, on by default): upstream names resolved
  // and pinned, addresses placed by site networks, cloud ranges and GeoIP.
  const locationSettings = networkLocationSettings(config);
  const location = locationSettings.enabled
    ? new LocationService({
        settings: locationSettings,
        networks: config.networks,
        hosts: upstreamHosts(planner().upstreams),
        ...promiseLookup(options.upstreamConnect),
        // Clients choose the names a {host} upstream is sent to: bound what they can make the proxy resolve.
        hostLimits: { maxTrackedHosts: config.dns?.max_tracked_hosts, maxNewHostsPerSecond: config.dns?.max_new_hosts_per_second },
        logger: logger.child({ component: 'location' }),
        events: {
          lookup: (source, result) => metrics.locationLookups.inc({ source, result }),
          reload: (source, ok) => metrics.locationSourceReloads.inc({ source, result: ok ? 'success' : 'failure' }),
          dnsQuery: (reason) => metrics.dnsQueries.inc({ reason }),
          hostNotTracked: (reason) => metrics.dnsHostsNotTracked.inc({ reason }),
          trackedHosts: (count) => metrics.dnsTrackedHosts.set(count),
        },
      })
    : null;
  const forwarder = new Forwarder({
    ...(options.upstreamConnect ? { connect: options.upstreamConnect } : {}),
    // Pinned: an upstream's own requests (discovery) go to its located address too.
    ...(location !== null ? { addressOf: (u: Upstream) => locatedAddress(location, u.hostname) } : {}),
  });
  const stores = createRequestStores({
    redis: fleetRedis,
    // Discovery asks the configured upstream through its own pool, never a host a client named.
    dispatcherFor: (u) => forwarder.dispatcherFor(u),
    onDiscoveryError: (u, err) => {
      metrics.locationLookups.inc({ source: 'discovered', result: 'error' });
      logger.warn({ upstream: u.name, err: (err as Error).message }, 'bucket region discovery failed');
    },
  });

  const dataPlane = createDataPlane({
    planner,
    maskClient,
    forwarder,
    stores,
    location,
    sink,
    metrics,
    logger,
    awaitOutcomes: options.awaitOutcomes ?? false,
    maxHeaders: config.limits.max_headers,
    limits: { refusalDrainBytes: config.limits.refusal_drain_bytes, refusalLingerMs: config.limits.refusal_linger_ms },
  });
  // The proxy's own listener, built when first used: the plugin serves the data plane on its host's server instead.
  let ownListener: ProxyApp | null = null;
  const proxyListener = (): ProxyApp => (ownListener ??= buildProxyApp({
    plane: dataPlane,
    tls: config.listen.tls === undefined ? null : dataPlaneTls(config.listen.tls.certificates),
    tunnels: forwardProxy(),
    metrics,
    logger,
    maxHeaders: config.limits.max_headers,
    maxHeaderBytes: config.limits.max_header_bytes,
    headersTimeoutMs: config.limits.client_header_timeout_ms,
    // RESIDENCY_DATA_PLANE_FRONT=node: the data plane on Node's server alone, for the benchmark that measures the Fastify front's cost.
    front: env.RESIDENCY_DATA_PLANE_FRONT === 'node' ? 'node' : 'fastify',
  }));
  const admin = buildAdminApp({
    logger,
    metrics,
    security: adminSecurity,
    policy: () => ({ ...policy.status(), config: policy.config() }),
    fleet: () => fleet.view(),
    readiness: [
      { name: 'config', check: () => ({ ok: true, detail: `policy ${planner().policy.hash.slice(0, 12)} from ${config.source}` }) },
      { name: 'upstreams', check: () => ({ ok: planner().upstreams.length > 0, detail: `${planner().upstreams.length} configured` }) },
      { name: 'decision_log', check: () => (sink.healthy() ? { ok: true } : { ok: false, detail: 'decision log is not writable' }) },
      // Always ok: a replica without Redis keeps serving under its last known lockdown state.
      { name: 'fleet', check: () => fleet.readiness() },
      // Not ready until GeoIP and the range files are loaded and every upstream host was resolved once.
      { name: 'location', check: () => location?.readiness() ?? { ok: true, detail: 'network location off: declared and request signals only' } },
    ],
  });

  let closeDemo: (() => Promise<void>) | undefined;
  let proxyAddress: AddressInfo | null = null;
  let closing: Promise<void> | null = null;
  return {
    config,
    replica,
    get proxy() {
      return proxyListener();
    },
    dataPlane,
    admin,
    metrics,
    logger,
    planner,
    policy,
    listen: async () => {
      const { admin: adminAddress } = await start({ dataPlane: true, admin: !worker });
      return { proxy: proxyAddress!, admin: adminAddress ?? (admin.server.address() as AddressInfo) };
    },
    start,
    close,
  };

  /** Starts every part; binds the data-plane and admin listeners only where asked (the plugin serves the data plane on its host's server). */
  async function start(listeners: { dataPlane: boolean; admin: boolean }): Promise<{ admin: AddressInfo | null }> {
    // A replica started during a lockdown starts locked down (bounded wait: a down Redis does not block).
    await fleet.start();
    if (config.demo_upstream && !worker) {
      const demo = await startDemoUpstream(config.demo_upstream.host, config.demo_upstream.port);
      closeDemo = demo.close;
      logger.info({ demo_upstream: `${demo.address.address}:${demo.address.port}` }, 'demo upstream listening (stores nothing)');
    }
    let adminAddress: AddressInfo | null = null;
    try {
      // Admin first: /readyz answers (not ready) while the location sources load.
      if (listeners.admin) {
        await admin.listen({ host: config.admin.host, port: config.admin.port ?? 9464 });
        adminAddress = admin.server.address() as AddressInfo;
      } else await admin.ready();
      // A corrupt GeoIP database or range file stops the start, naming the file.
      await location?.resolved(STARTUP_RESOLVE_MS);
      if (listeners.dataPlane) proxyAddress = await proxyListener().listen({ host: config.listen.host, port: config.listen.port ?? 8080 });
    } catch (err) {
      await close();
      throw err;
    }
    if (options.watch) policy.watch();
    shipper?.start();
    fleet.announce();
    return { admin: adminAddress };
  }

  function close(): Promise<void> {
    closing ??= closeAll();
    return closing;
  }

  function dataPlaneTls(certificates: NonNullable<Config['listen']['tls']>['certificates']): DataPlaneTls {
    return new DataPlaneTls(certificates, {
      reloaded: (subjects) => logger.info({ certificates: subjects }, 'data plane TLS certificates reloaded'),
      reloadFailed: (err) => logger.error({ err: err.message }, 'data plane TLS certificates not reloaded: the previous ones stay in use'),
    });
  }

  /** Forward-proxy mode: tunnels intercepted with certificates from the operator CA; null when off. */
  function forwardProxy(): Omit<TunnelDeps, 'inject'> | null {
    const settings = forwardProxySettings(config, env);
    if (settings === null) return null;
    const minter = new CertificateMinter({
      ca: settings.ca,
      maxEntries: settings.maxCertificates,
      onMint: () => metrics.certificatesMinted.inc(),
      onHit: () => metrics.certificateCacheHits.inc(),
    });
    let open = 0;
    return {
      minter,
      users: settings.users,
      maxTunnels: settings.maxTunnels,
      openTunnels: () => open,
      admit: (host, port) => planner().tunnelFor(host, port),
      recordRefusal: async ({ host, port, user, client }) => {
        const id = randomUUID();
        const entry: DecisionEntry = {
          ts: new Date().toISOString(),
          id,
          policy: planner().policy.hash,
          upstream: '(none)',
          method: 'CONNECT',
          path: `${host}:${port}`,
          bucket: null,
          operation: 'write',
          target: { host: `${host}:${port}`, address: null },
          location: { jurisdictions: [], region: null, signals: [] },
          rule: null,
          mode: 'enforce',
          decision: 'block',
          effective: 'refused',
          reason: 'tunnel_not_routed',
          tunnel: { host, user: user ?? undefined },
          status: 403,
          bytes_in: 0,
          bytes_out: null,
          duration_ms: 0,
          client: maskClient(client),
        };
        metrics.decisions.inc({ upstream: '(none)', operation: 'write', decision: 'block', mode: 'enforce', jurisdiction: 'unknown', reason: 'tunnel_not_routed' });
        return (await writeDecision({ sink, metrics, logger }, entry)) ? id : null;
      },
      events: {
        refused: (code) => metrics.rejectedRequests.inc({ code }),
        opened: () => {
          open++;
          metrics.tunnelsOpen.inc();
        },
        closed: () => {
          open--;
          metrics.tunnelsOpen.dec();
        },
        handshakeFailed: (reason) => metrics.tlsHandshakeFailures.inc({ listener: 'tunnel', reason }),
      },
    };
  }

  async function closeAll(): Promise<void> {
    policy.close();
    // The proxy stops accepting, closes idle keep-alive connections and waits
    // for in-flight requests; past the grace period the rest are cut.
    const listener = ownListener;
    if (listener !== null) {
      const force = setTimeout(() => listener.server.closeAllConnections(), config.limits.shutdown_grace_ms);
      force.unref();
      try {
        await listener.close();
      } finally {
        clearTimeout(force);
      }
    } else dataPlane.beginClose();
    await forwarder.close();
    location?.close();
    await admin.close();
    await closeDemo?.();
    await sink.close();
    // After the seal, so the shipper drains up to the last record.
    await shipper?.close();
    await fleet.close();
    await fleetRedis?.close();
  }
}

/** `location` keys bound at startup (dns is in the policy store's own list): changed ones are reported, not silently ignored. */
function locationRestartKeys(started: Config, next: Config): string[] {
  return (['network', 'pick', 'geoip'] as const)
    .filter((key) => JSON.stringify(started.location[key]) !== JSON.stringify(next.location[key]))
    .map((key) => `location.${key}`);
}

/** How long a start waits for the upstream hosts' first DNS answers; past it, /readyz says which are still resolving. */
const STARTUP_RESOLVE_MS = 10_000;

/** The hosts of fixed-URL upstreams: resolved at startup and kept fresh (`{host}` upstreams' hosts come with requests). */
function upstreamHosts(upstreams: readonly Upstream[]): string[] {
  return [...new Set(upstreams.filter((u) => u.hostTemplate === null).map((u) => u.hostname))];
}

function locatedAddress(location: LocationService, host: string): string | null {
  const found = location.locate(host);
  return found === 'pending' ? null : found.address;
}

/** A socket option `lookup` (net's callback style), as the promise the resolver takes; {} without one. */
function promiseLookup(connect: ForwarderOptions['connect']): { lookup?: (host: string) => Promise<{ address: string; family: number }[]> } {
  const lookup = connect !== undefined && 'lookup' in connect ? (connect.lookup as LookupFunction | undefined) : undefined;
  if (lookup === undefined) return {};
  return {
    lookup: (host) =>
      new Promise((resolve, reject) => {
        lookup(host, { all: true }, (err, addresses) => {
          if (err) reject(err);
          else resolve(typeof addresses === 'string' ? [{ address: addresses, family: addresses.includes(':') ? 6 : 4 }] : addresses);
        });
      }),
  };
}
