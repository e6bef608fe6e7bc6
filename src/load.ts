import { loadConfigFile, parseConfig, type Config, type ConfigCheck } from './config/load.js';
import { locationProblems } from './location/signals.js';
import { compilePolicy, policyProblems } from './policy/engine.js';
import { Planner } from './proxy/plan.js';
import { compileUpstreams } from './proxy/route.js';

/**
 * Loading a config completely (schema, cross-field, catalog and policy
 * checks) and compiling it into a Planner, without the server parts, so
 * check-config and explain start fast.
 *
 * Checks beyond the schema that need the catalog and the policy compiler.
 */
export const CONFIG_CHECKS: readonly ConfigCheck[] = [locationProblems, policyProblems];

/** Load and fully validate a config file (throws ConfigError listing every problem). */
export function loadConfig(file: string, env: NodeJS.ProcessEnv = {}): Config {
  return loadConfigFile(file, { env, checks: CONFIG_CHECKS });
}

export function parseConfigText(text: string, file: string, env: NodeJS.ProcessEnv = {}): Config {
  return parseConfig(text, file, { env, checks: CONFIG_CHECKS });
}

/** Compile the parts of a config the data plane and `explain` use. */
export function buildPlanner(config: Config): Planner {
  return new Planner(compileUpstreams(config), compilePolicy(config));
}

