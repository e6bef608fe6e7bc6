/**
 * residency-proxy's programmatic API: the composition root (`serve` without
 * the CLI), the Fastify plugin, and config loading.
 */
export { createResidencyProxy, type ResidencyProxy, type ResidencyProxyOptions } from './server.js';
export { residencyProxyPlugin, type ResidencyProxyPluginOptions } from './plugin.js';
export { loadConfig, loadPolicy, parseConfigText, type LoadedPolicy } from './load.js';
export { ConfigError, type Config } from './config/load.js';
export type { DecisionRecord } from './audit/record.js';
