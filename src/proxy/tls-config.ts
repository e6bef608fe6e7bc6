import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import type { Config, ConfigProblem } from '../config/load.js';
import { InterceptionCaError, loadInterceptionCa, type InterceptionCa } from '../tls/interception-ca.js';
import { loadServedCertificate, TlsCertificateError } from './tls-listener.js';

/**
 * The TLS parts of a config, checked where check-config and serve check
 * everything else: the data plane's certificates, each upstream's CA
 * bundle, and the forward proxy's CA and users. Every problem names the key.
 */

export interface ForwardProxySettings {
  readonly ca: InterceptionCa;
  readonly users: ReadonlyMap<string, string> | null;
  readonly maxCertificates: number;
  readonly maxTunnels: number;
}

/** The forward proxy's settings, or null when it is off. Throws what tlsProblems reports. */
export function forwardProxySettings(config: Config, env: NodeJS.ProcessEnv = process.env): ForwardProxySettings | null {
  const fp = config.forward_proxy;
  if (fp === undefined) return null;
  return { ca: loadInterceptionCa(fp.ca, env), users: loadProxyUsers(fp, env), maxCertificates: fp.max_certificates, maxTunnels: fp.max_tunnels };
}

export function tlsProblems(config: Config): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const tls = config.listen.tls;
  if (tls !== undefined) {
    // One certificate at a time: loading them all stops at the first bad one, and every problem is reported.
    tls.certificates.forEach((files, i) => {
      try {
        loadServedCertificate(files, `listen.tls.certificates[${i}]`);
      } catch (err) {
        if (!(err instanceof TlsCertificateError)) throw err;
        problems.push({ path: err.path, message: err.detail, expected: err.expected });
      }
    });
  }
  config.upstreams.forEach((u, i) => {
    if (u.ca_file === undefined) return;
    const path = `upstreams[${i}].ca_file`;
    try {
      createSecureContext({ ca: readFileSync(u.ca_file, 'utf8') });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      problems.push({ path, message: `${u.ca_file}: ${code?.startsWith('E') ? code : 'holds no PEM certificates'}`, expected: 'a readable PEM bundle of CA certificates' });
    }
    if (!u.url.startsWith('https:')) problems.push({ path, message: `upstream ${u.name} is not reached over https`, expected: 'an https:// url for an upstream with a CA bundle' });
  });
  const fp = config.forward_proxy;
  if (fp !== undefined) {
    try {
      loadInterceptionCa(fp.ca, process.env);
    } catch (err) {
      if (!(err instanceof InterceptionCaError)) throw err;
      problems.push({ path: err.path, message: err.message, expected: err.expected });
    }
    if (fp.users_file !== undefined && fp.users_env !== undefined) {
      problems.push({ path: 'forward_proxy.users_env', message: 'is set together with forward_proxy.users_file', expected: 'one source of proxy users' });
    } else {
      try {
        loadProxyUsers(fp, process.env);
      } catch (err) {
        const path = fp.users_file !== undefined ? 'forward_proxy.users_file' : 'forward_proxy.users_env';
        const code = (err as NodeJS.ErrnoException).code;
        problems.push({ path, message: code === undefined ? (err as Error).message : `${fp.users_file}: ${code}`, expected: 'USER:PASSWORD lines' });
      }
    }
    if (!config.upstreams.some((u) => u.route.host !== undefined && u.url.startsWith('https:'))) {
      problems.push({
        path: 'forward_proxy',
        message: 'no upstream has a route host and an https url, so every tunnel would be refused',
        expected: 'an upstream such as { url: "https://{host}", route: { host: "*.amazonaws.com" } }',
      });
    }
  }
  return problems;
}

/** Proxy users from `forward_proxy.users_file` or `users_env`: USER:PASSWORD lines (blank lines and # comments ignored). */
export function loadProxyUsers(source: { users_file?: string; users_env?: string }, env: NodeJS.ProcessEnv): Map<string, string> | null {
  let text: string;
  if (source.users_file !== undefined) text = readFileSync(source.users_file, 'utf8');
  else if (source.users_env !== undefined) {
    const value = env[source.users_env];
    if (value === undefined || value === '') throw new Error(`environment variable ${source.users_env} is not set`);
    text = value;
  } else return null;
  const users = new Map<string, string>();
  text.split(/\r?\n/).forEach((line, i) => {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) return;
    const colon = trimmed.indexOf(':');
    if (colon <= 0 || colon === trimmed.length - 1) throw new Error(`line ${i + 1} is not USER:PASSWORD`);
    users.set(trimmed.slice(0, colon), trimmed.slice(colon + 1));
  });
  if (users.size === 0) throw new Error('names no users');
  return users;
}
