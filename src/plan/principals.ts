import type { Config, ConfigProblem } from '../config/load.js';
import { loadPrincipalKeys } from '../location/request/principal-keys.js';

/**
 * A principal (an access key id) can change a decision only once the proxy
 * has verified the request's signature with that principal's secret key:
 * anyone can write any key id into an Authorization header. The keys come
 * from `principal_keys` (a file, relative to the config, or an environment
 * variable), read each time the policy is loaded.
 */
export function configuredPrincipalKeys(config: Config, env: NodeJS.ProcessEnv = process.env): ReadonlyMap<string, string> | null {
  const source = config.principal_keys;
  if (source === undefined) return null;
  return loadPrincipalKeys({ ...(source.file ? { file: source.file } : {}), ...(source.env ? { env: source.env } : {}) }, env);
}

/** check-config: an allow-exception for principals must be verifiable, and every principal it names needs a key. */
export function principalProblems(config: Config): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const source = config.principal_keys;
  if (source !== undefined && (source.file === undefined) === (source.env === undefined)) {
    problems.push({ path: 'principal_keys', message: 'names neither or both of file and env', expected: 'exactly one of principal_keys.file or principal_keys.env' });
    return problems;
  }
  let keys: ReadonlyMap<string, string> | null = null;
  try {
    keys = configuredPrincipalKeys(config);
  } catch (err) {
    problems.push({ path: source?.file !== undefined ? 'principal_keys.file' : 'principal_keys.env', message: (err as Error).message, expected: 'ACCESS_KEY_ID SECRET lines or a JSON object of them' });
    return problems;
  }
  config.exceptions.forEach((e, i) => {
    const principals = e.match.principals;
    if (principals === undefined || e.action !== 'allow') return;
    if (keys === null) {
      problems.push({
        path: `exceptions[${i}].match.principals`,
        message: 'an allow-exception names principals, but no principal_keys are configured to verify them (an unverified key id is only a claim)',
        expected: 'principal_keys: { file: … } or { env: … } with the secret key of each principal',
      });
      return;
    }
    principals.forEach((p, j) => {
      if (!keys.has(p)) problems.push({ path: `exceptions[${i}].match.principals[${j}]`, message: `"${p}" has no key in principal_keys, so it can never be verified`, expected: 'a principal listed in principal_keys' });
    });
  });
  return problems;
}
