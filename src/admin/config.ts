import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { ConfigError, type Config, type ConfigProblem } from '../config/load.js';
import { digestToken } from './auth.js';

/**
 * The admin listener's security settings: which binds need a token, where
 * tokens come from, TLS. Checked in two steps on purpose:
 *
 * - `adminProblems` (a config check, so `check-config` reports it) looks at
 *   the file only. It does not read token files or the environment: CI runs
 *   check-config where the secrets are not mounted.
 * - `loadAdminSecurity` runs at startup, reads the secrets and refuses to
 *   start when one is missing, empty or weak.
 */

type AdminConfig = Config['admin'];

/** A token is a random secret, not a password: shorter ones are guessable over the network. */
export const MIN_TOKEN_LENGTH = 16;
/** RFC 6750 b64token characters are a subset; anything visible is accepted, whitespace is not. */
const TOKEN_SHAPE = /^[\x21-\x7e]+$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** True for binds only this host can reach: 127.0.0.0/8, ::1, IPv4-mapped loopback, localhost. */
export function isLoopbackHost(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1');
  if (h === 'localhost') return true;
  const v4 = h.startsWith('::ffff:') ? h.slice('::ffff:'.length) : h;
  if (isIP(v4) === 4) return v4.split('.')[0] === '127';
  if (isIP(h) === 6) {
    const groups = expandZeros(h).split(':').map((g) => parseInt(g, 16));
    return groups.length === 8 && groups.slice(0, 7).every((g) => g === 0) && groups[7] === 1;
  }
  // Anything else (0.0.0.0, ::, an interface address, a host name) may be reachable from elsewhere.
  return false;
}

/** `::1`, `0::1`, `0:0:0:0:0:0:0:1` all become comparable. */
function expandZeros(h: string): string {
  if (!h.includes('::')) return h;
  const [head = '', tail = ''] = h.split('::');
  const parts = [head, tail].map((s) => (s === '' ? [] : s.split(':')));
  const missing = 8 - parts[0]!.length - parts[1]!.length;
  return [...parts[0]!, ...Array<string>(missing).fill('0'), ...parts[1]!].join(':');
}

/** Cross-field checks of the `admin` key (add to CONFIG_CHECKS). */
export function adminProblems(config: Config): ConfigProblem[] {
  const admin = config.admin;
  // Runs even when the schema failed: read defensively.
  if (typeof admin !== 'object' || admin === null) return [];
  const problems: ConfigProblem[] = [];
  for (const prefix of ['', 'metrics_'] as const) {
    const file = admin[`${prefix}token_file`];
    const env = admin[`${prefix}token_env`];
    if (file !== undefined && env !== undefined) {
      problems.push({ path: `admin.${prefix}token_env`, message: `is set together with admin.${prefix}token_file`, expected: 'one token source' });
    }
    // Never echo the value: someone may have pasted the token itself here.
    if (typeof env === 'string' && !ENV_NAME.test(env)) {
      problems.push({
        path: `admin.${prefix}token_env`,
        message: 'is not an environment variable name (it names the variable that holds the token, never the token)',
        expected: 'a name such as RESIDENCY_ADMIN_TOKEN',
      });
    }
  }
  const raw = admin as Record<string, unknown>;
  for (const key of ['token', 'metrics_token']) {
    if (raw[key] !== undefined) {
      problems.push({
        path: `admin.${key}`,
        message: 'a token must not be written in the config file',
        expected: `admin.${key}_file or admin.${key}_env (the name of an environment variable)`,
      });
    }
  }
  if (typeof admin.host === 'string' && !isLoopbackHost(admin.host) && admin.token_file === undefined && admin.token_env === undefined) {
    problems.push({
      path: 'admin.host',
      message: `binding ${admin.host} requires admin.token_file or admin.token_env`,
      expected: 'a token source',
    });
  }
  return problems;
}

/** What the admin app enforces, with every secret read. */
export interface AdminSecurity {
  /** SHA-256 of the admin token: required for everything but /healthz when set. */
  readonly token: Buffer | null;
  /** SHA-256 of the scrape token: accepted (besides the admin token) on /metrics when set. */
  readonly metricsToken: Buffer | null;
  readonly tls: { readonly cert: Buffer; readonly key: Buffer } | null;
}

/**
 * Read the admin secrets named by the config. Throws a ConfigError listing
 * every problem (the path in the config that named the secret, never the
 * secret). Only digests are kept, so a heap dump holds no token.
 */
export function loadAdminSecurity(config: Config, env: NodeJS.ProcessEnv): AdminSecurity {
  const admin: AdminConfig = config.admin;
  const problems: ConfigProblem[] = [];

  const token = (prefix: '' | 'metrics_'): Buffer | null => {
    const file = admin[`${prefix}token_file`];
    const name = admin[`${prefix}token_env`];
    let value: string | null = null;
    let path: string;
    if (file !== undefined) {
      path = `admin.${prefix}token_file`;
      const text = readSecret(file, path, problems);
      if (text === null) return null;
      // Files written with `echo` end in a newline that is not part of the token.
      value = text.toString('utf8').trim();
    } else if (name !== undefined) {
      path = `admin.${prefix}token_env`;
      const v = env[name];
      if (v === undefined || v === '') {
        problems.push({ path, message: `environment variable ${name} is not set`, expected: 'the token in that variable' });
        return null;
      }
      value = v.trim();
    } else {
      return null;
    }
    if (value === '') {
      problems.push({ path, message: 'the token is empty', expected: `a random token of at least ${MIN_TOKEN_LENGTH} characters` });
    } else if (!TOKEN_SHAPE.test(value)) {
      problems.push({ path, message: 'the token has spaces or non-ASCII characters', expected: 'visible ASCII characters only, e.g. from `openssl rand -hex 32`' });
    } else if (value.length < MIN_TOKEN_LENGTH) {
      problems.push({
        path,
        message: `the token is shorter than ${MIN_TOKEN_LENGTH} characters`,
        expected: `a random token of at least ${MIN_TOKEN_LENGTH} characters, e.g. from \`openssl rand -hex 32\``,
      });
    } else {
      return digestToken(value);
    }
    return null;
  };

  const security = {
    token: token(''),
    metricsToken: token('metrics_'),
    tls: admin.tls
      ? (() => {
          const cert = readSecret(admin.tls.cert_file, 'admin.tls.cert_file', problems);
          const key = readSecret(admin.tls.key_file, 'admin.tls.key_file', problems);
          return cert && key ? { cert, key } : null;
        })()
      : null,
  };
  // The config check runs at load; repeat it so a Config built another way cannot bind unprotected.
  problems.push(...adminProblems(config));
  if (problems.length > 0) throw new ConfigError(config.source, problems);
  return security;
}

function readSecret(file: string, path: string, problems: ConfigProblem[]): Buffer | null {
  try {
    return readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'file not found' : code === 'EACCES' ? 'permission denied' : (err as Error).message;
    problems.push({ path, message: `cannot read "${file}": ${reason}`, expected: 'a readable file' });
    return null;
  }
}
