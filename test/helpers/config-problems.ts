import { ConfigError } from '../../src/config/load.js';
import { parseConfigText } from '../../src/load.js';

/** What loading this config text reports, one line per problem (check-config's lines); empty when it loads. */
export function configProblems(text: string, env: NodeJS.ProcessEnv = {}): string[] {
  return problemsOf(() => parseConfigText(text, 'policy.yaml', env));
}

/** The problem lines a config load throws, or empty when it loads; any other error is rethrown. */
export function problemsOf(load: () => unknown): string[] {
  try {
    load();
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.message.split('\n');
    throw err;
  }
}
