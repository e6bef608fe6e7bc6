import cluster from 'node:cluster';
import { workerCount, workerIndexFrom } from '../cluster/protocol.js';
import { defaultConfigPath, parse, withUsage } from './args.js';
import { loadPolicyOrReport } from './config-file.js';

const USAGE = `Usage: residency-proxy serve [--config FILE]

Runs the proxy. Config: --config, else $RESIDENCY_CONFIG, else the shipped
config/default.yaml. PORT, ADMIN_PORT and LOG_LEVEL override the file.
The policy reloads when the file changes and on SIGHUP.
SIGTERM or SIGINT: stop accepting, finish in-flight requests, exit 0.
With workers > 1 this process is the primary: it forks the workers (one
listener, one decision log each), serves the admin port, passes SIGHUP on,
restarts a worker that dies and drains them all on SIGTERM or SIGINT.`;

export function serveCommand(args: string[]): Promise<number> {
  return withUsage(USAGE, async () => {
    const { values } = parse(args, { config: { type: 'string', short: 'c' } });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    const file = values.config ?? process.env.RESIDENCY_CONFIG ?? defaultConfigPath();
    const loaded = loadPolicyOrReport(file);
    if (!loaded) return 1;

    // A forked worker reads the same file; the count is the primary's business.
    const worker = cluster.isWorker ? workerIndexFrom(process.env) : null;
    if (worker !== null) return (await import('../cluster/worker.js')).runWorker(loaded, worker);
    const count = workerCount(loaded.config);
    if (count > 1) return (await import('../cluster/primary.js')).runPrimary(loaded, file, count);

    // The server's packages (fastify, undici, pino, …) load only for a valid config: --help and a bad file answer at once.
    const { createResidencyProxy } = await import('../server.js');
    const app = createResidencyProxy(loaded.config, { shadow: loaded.shadow, watch: true, env: process.env });
    const { proxy, admin } = await app.listen();
    app.logger.info(
      { proxy: `${proxy.address}:${proxy.port}`, admin: `${admin.address}:${admin.port}`, config: file, policy: app.planner().policy.hash },
      'residency-proxy listening',
    );

    return new Promise<number>((resolve) => {
      let stopping = false;
      const stop = (signal: NodeJS.Signals) => {
        if (stopping) return;
        stopping = true;
        app.logger.info({ signal }, 'draining in-flight requests');
        app.close().then(
          () => resolve(0),
          (err: unknown) => {
            app.logger.error({ err: (err as Error).message }, 'shutdown failed');
            resolve(1);
          },
        );
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
      // SIGHUP reloads the policy; a bad file keeps the last good one (logged and counted).
      process.on('SIGHUP', () => app.policy.reload('SIGHUP'));
    });
  });
}
