import { createOperationalLog } from '../operational-log.js';
import { loadAdminSecurity } from '../admin/config.js';
import { startDemoUpstream } from '../demo/upstream.js';
import type { LoadedPolicy } from '../load.js';
import { startAdminRelay, type AdminRelay } from './admin-relay.js';
import { Supervisor } from './supervisor.js';

/**
 * The primary of a `workers` cluster: it serves no data-plane request itself.
 * It forks the workers (which share the `listen` socket), serves the admin
 * port by relaying to them, runs the demo upstream once, passes SIGHUP on,
 * restarts a worker that dies, and on SIGTERM/SIGINT drains them all.
 * Exit 0 after a clean drain; 1 when a worker could not start at all, or did
 * not drain cleanly.
 */
export async function runPrimary(loaded: LoadedPolicy, file: string, count: number): Promise<number> {
  const { config } = loaded;
  const logger = createOperationalLog(config).child({ role: 'primary' });
  // Read before anything starts, as a single process does: a missing token or TLS file stops the start.
  const security = loadAdminSecurity(config, process.env);
  const supervisor = new Supervisor(count, logger, config.limits.shutdown_grace_ms);

  let stopRequested: (signal: NodeJS.Signals) => void = () => {};
  const stopSignal = new Promise<NodeJS.Signals>((resolve) => (stopRequested = resolve));
  process.on('SIGTERM', () => stopRequested('SIGTERM'));
  process.on('SIGINT', () => stopRequested('SIGINT'));
  // Every worker watches the policy file too; SIGHUP is the operator's "reload now".
  process.on('SIGHUP', () => {
    logger.info({ workers: supervisor.listening() }, 'SIGHUP: passing it on to every worker (policy reload)');
    supervisor.signal('SIGHUP');
  });

  let admin: AdminRelay | null = null;
  let demo: { close(): Promise<void> } | null = null;
  const closeOwn = async () => {
    await admin?.close();
    await demo?.close();
  };
  try {
    if (config.demo_upstream) {
      const started = await startDemoUpstream(config.demo_upstream.host, config.demo_upstream.port);
      demo = started;
      logger.info({ demo_upstream: `${started.address.address}:${started.address.port}` }, 'demo upstream listening (stores nothing)');
    }
    // Admin first, as in a single process: /readyz answers (not ready) while the workers start.
    admin = await startAdminRelay({
      host: config.admin.host,
      port: config.admin.port ?? 9464,
      security,
      supervisor,
      logger,
    });
    const first = await Promise.race([supervisor.start(), stopSignal.then(() => null)]);
    if (first !== null) {
      logger.info(
        { proxy: `${first.proxy.address}:${first.proxy.port}`, admin: `${admin.address.address}:${admin.address.port}`, config: file, policy: first.policy, workers: count },
        'residency-proxy listening',
      );
    }
  } catch (err) {
    logger.error({ err: (err as Error).message }, 'residency-proxy could not start');
    await supervisor.drain();
    await closeOwn();
    return 1;
  }

  const signal = await stopSignal;
  logger.info({ signal, workers: supervisor.listening() }, 'draining every worker');
  const clean = await supervisor.drain();
  await closeOwn();
  if (!clean) logger.error({ exits: supervisor.exits() }, 'a worker did not drain cleanly');
  return clean ? 0 : 1;
}
