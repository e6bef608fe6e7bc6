import type { FastifyPluginAsync } from 'fastify';
import type { Config } from './config/load.js';
import { loadPolicy } from './load.js';
import { holdContinueForDecisions, registerDataPlane } from './proxy/routes.js';
import { createResidencyProxy, type ResidencyProxy, type ResidencyProxyOptions } from './server.js';

export interface ResidencyProxyPluginOptions extends ResidencyProxyOptions {
  /** A config file's path (read with its shadow policy, paths relative to it) or a config already loaded (`loadConfig`). */
  config: string | Config;
  /** Serve the admin listener (metrics, readiness, fleet, policy) on the config's `admin` address. Default true. */
  admin?: boolean;
  /** Called once the proxy has started, with its parts (metrics, policy, the admin app). */
  onStarted?: (proxy: ResidencyProxy) => void;
}

/**
 * residency-proxy as a plugin of someone else's Fastify app: every request
 * routed to it (register it under a `prefix` to share the app) is decided
 * and forwarded exactly as `serve` does it, with its own decision log,
 * metrics and admin listener.
 *
 * The app's hooks of the enclosing contexts run first (`onRequest`,
 * `preParsing`, `preValidation`, `preHandler`): authentication, rate limits
 * or load shedding can refuse before any decision is made or recorded. They
 * must not read or replace the request body, nor rewrite `request.raw.url`
 * or headers: the proxy decides on, and forwards, the raw request as the
 * client sent it. The path includes the prefix: give the config's routes
 * that `path_prefix` (with `strip_prefix` when the upstream must not see it).
 *
 * What belongs to a listener stays with `serve`: `forward_proxy` (CONNECT
 * needs the server's `connect` event) is refused here, and `listen` and the
 * header limits are the host server's. Node answers `Expect: 100-continue`
 * before any handler runs when nothing listens for `checkContinue`, so a
 * refused client would send its body: the plugin holds 100 Continue back for
 * its own paths, as `serve` does, unless the app listens for `checkContinue`
 * itself. The app's own options decide two more answers: requests arriving while it
 * closes (`return503OnClosing: false` hands them to the proxy) and targets
 * its router cannot decode (`frameworkErrors`).
 */
export const residencyProxyPlugin: FastifyPluginAsync<ResidencyProxyPluginOptions> = async (fastify, opts) => {
  const { config: given, admin = true, onStarted, ...options } = opts;
  const env = options.env ?? process.env;
  const loaded = typeof given === 'string' ? loadPolicy(given, env) : { config: given, shadow: options.shadow ?? null };
  if (loaded.config.forward_proxy !== undefined) {
    throw new Error(`${loaded.config.source}: forward_proxy needs the proxy's own listener (residency-proxy serve); the Fastify plugin cannot intercept CONNECT`);
  }
  const proxy = createResidencyProxy(loaded.config, { ...options, env, shadow: loaded.shadow });
  registerDataPlane(fastify, proxy.dataPlane);
  holdContinueForDecisions(fastify.server, fastify.prefix);
  fastify.addHook('onReady', async () => {
    await proxy.start({ dataPlane: false, admin });
    onStarted?.(proxy);
  });
  // preClose: before the host's server stops, so requests still arriving get the data plane's 503.
  fastify.addHook('preClose', async () => {
    proxy.dataPlane.beginClose();
  });
  fastify.addHook('onClose', async () => proxy.close());
};
