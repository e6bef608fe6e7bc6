import { adminProblems } from './admin/config.js';
import { ConfigError, loadConfigFile, parseConfig, type Config, type ConfigCheck } from './config/load.js';
import { locationProblems } from './location/signals.js';
import { compilePolicy, policyProblems } from './policy/engine.js';
import { Planner } from './plan/plan.js';
import { compileUpstreams, upstreamProblems } from './plan/route.js';
import { siteNetworkProblems } from './location/networks.js';
import { configuredPrincipalKeys, principalProblems } from './plan/principals.js';
import { tlsProblems } from './proxy/tls-config.js';

/**
 * Loading a config completely (schema, cross-field, catalog and policy
 * checks) and compiling it into a Planner, without the server parts, so
 * check-config and explain start fast.
 *
 * Checks beyond the schema that need the catalog and the policy compiler.
 */
export const CONFIG_CHECKS: readonly ConfigCheck[] = [locationProblems, siteNetworkProblems, upstreamProblems, policyProblems, adminProblems, principalProblems, tlsProblems];

/** Load and fully validate a config file (throws ConfigError listing every problem). */
export function loadConfig(file: string, env: NodeJS.ProcessEnv = {}): Config {
  return loadConfigFile(file, { env, checks: CONFIG_CHECKS });
}

export function parseConfigText(text: string, file: string, env: NodeJS.ProcessEnv = {}): Config {
  return parseConfig(text, file, { env, checks: CONFIG_CHECKS });
}

/** A config and, when it names one, its shadow policy. */
export interface LoadedPolicy {
  readonly config: Config;
  readonly shadow: Config | null;
}

/**
 * Load a config and the shadow policy it references (a path relative to the
 * config file). The shadow's rules must name upstreams of the main config.
 */
export function loadPolicy(file: string, env: NodeJS.ProcessEnv = {}): LoadedPolicy {
  const config = loadConfig(file, env);
  if (config.shadow_policy === undefined) return { config, shadow: null };
  const shadowFile = config.shadow_policy;
  const shadow = loadConfig(shadowFile);
  const known = new Set(config.upstreams.map((u) => u.name));
  const problems = shadow.rules.flatMap((r, i) =>
    (r.match?.upstreams ?? [])
      .map((u, j) => ({ u, j }))
      .filter(({ u }) => !known.has(u))
      .map(({ u, j }) => ({ path: `rules[${i}].match.upstreams[${j}]`, message: `names upstream "${u}", which the active config (${file}) does not have` })),
  );
  if (problems.length > 0) throw new ConfigError(shadowFile, problems);
  return { config, shadow };
}

/** Compile the parts of a config the data plane and `explain` use. */
export function buildPlanner(
  config: Config,
  shadow: Config | null = null,
  now: () => number = Date.now,
  lockdown: () => boolean = () => false,
): Planner {
  return new Planner(compileUpstreams(config), compilePolicy(config), shadow === null ? null : compilePolicy(shadow), now, lockdown, configuredPrincipalKeys(config));
}

