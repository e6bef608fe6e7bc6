import { isIP } from 'node:net';
import type { ConfigProblem, Config } from './load.js';

/**
 * Checks across fields that JSON Schema cannot express. Checks that need the
 * region catalog or the policy compiler are supplied by those modules.
 */
export function structuralProblems(config: Config): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const names = new Map<string, number>();
  const routes = new Map<string, string>();

  config.upstreams.forEach((u, i) => {
    const at = `upstreams[${i}]`;
    const previous = names.get(u.name);
    if (previous !== undefined) {
      problems.push({ path: `${at}.name`, message: `"${u.name}" is already used by upstreams[${previous}]`, expected: 'a unique name' });
    } else {
      names.set(u.name, i);
    }

    const url = parseUpstreamUrl(u.url);
    if (typeof url === 'string') problems.push({ path: `${at}.url`, message: url, expected: 'an http:// or https:// URL without credentials' });

    if (u.route.path_prefix === undefined && u.route.host === undefined) {
      problems.push({ path: `${at}.route`, message: 'names neither a host nor a path_prefix', expected: 'route.host and/or route.path_prefix' });
    }
    if (u.route.strip_prefix && u.route.path_prefix === undefined) {
      problems.push({ path: `${at}.route.strip_prefix`, message: 'is set but there is no path_prefix to strip', expected: 'route.path_prefix' });
    }
    const key = routeKey(u.route.host, u.route.path_prefix);
    const claimedBy = routes.get(key);
    if (claimedBy !== undefined) {
      problems.push({ path: `${at}.route`, message: `claims the same route as ${claimedBy}`, expected: 'a distinct host or path_prefix' });
    } else {
      routes.set(key, `upstreams[${i}] (${u.name})`);
    }
  });

  config.rules.forEach((rule, i) => {
    const dup = config.rules.findIndex((r) => r.name === rule.name);
    if (dup !== i) {
      problems.push({ path: `rules[${i}].name`, message: `"${rule.name}" is already used by rules[${dup}]`, expected: 'a unique name' });
    }
    rule.match?.upstreams?.forEach((name, j) => {
      if (!names.has(name)) {
        problems.push({
          path: `rules[${i}].match.upstreams[${j}]`,
          message: `names upstream "${name}", which is not configured`,
          expected: `one of ${[...names.keys()].join(', ')}`,
        });
      }
    });
  });

  for (const cidr of Object.keys(config.networks ?? {})) {
    if (!parseCidr(cidr)) problems.push({ path: `networks[${JSON.stringify(cidr)}]`, message: 'is not a CIDR', expected: 'an address/prefix such as 10.20.0.0/16 or fd00::/8' });
  }
  if (config.dns && config.dns.min_ttl > config.dns.max_ttl) {
    problems.push({ path: 'dns.min_ttl', message: `${config.dns.min_ttl} is above max_ttl ${config.dns.max_ttl}`, expected: 'min_ttl ≤ max_ttl' });
  }
  config.dns?.servers?.forEach((s, i) => {
    if (!parseHostPort(s)) problems.push({ path: `dns.servers[${i}]`, message: `"${s}" is not an address`, expected: 'ip or ip:port, e.g. 127.0.0.1:53 or [::1]:53' });
  });
  problems.push(...workerProblems(config));
  return problems;
}

/**
 * Several workers each write their own decision log, derived from
 * decision_log.path; stdout cannot be split that way (interleaved lines from
 * several writers would fork every chain). "auto" is refused too: whether it
 * means one process depends on the machine, and the config should not.
 */
function workerProblems(config: Config): ConfigProblem[] {
  const workers = config.workers as unknown;
  if (workers === undefined || workers === 1 || config.decision_log?.path !== '-') return [];
  return [
    {
      path: 'workers',
      message: `${JSON.stringify(workers)} needs one decision log file per worker, but decision_log.path is "-" (stdout), which only one process can write`,
      expected: 'decision_log.path naming a file (each worker then writes its own, e.g. decisions.w1.log), or workers: 1',
    },
  ];
}

/** A route's identity: routes with equal keys would shadow each other. */
export function routeKey(host: string | undefined, prefix: string | undefined): string {
  const p = prefix && prefix !== '/' ? prefix.replace(/\/+$/, '') : '';
  return `${(host ?? '*').toLowerCase()} ${p}`;
}

/** Returns the URL, or a sentence saying what is wrong with it. */
export function parseUpstreamUrl(text: string): URL | string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return `"${text}" is not a URL`;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return `scheme "${url.protocol}" is not supported`;
  if (url.username || url.password) return 'contains credentials, which would end up in logs';
  if (url.search || url.hash) return 'has a query or fragment';
  return url;
}

export function parseCidr(text: string): { address: string; prefix: number; family: 4 | 6 } | null {
  const slash = text.indexOf('/');
  const address = slash === -1 ? text : text.slice(0, slash);
  const family = isIP(address);
  if (family === 0) return null;
  const max = family === 4 ? 32 : 128;
  const prefixText = slash === -1 ? String(max) : text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(prefixText)) return null;
  const prefix = Number(prefixText);
  if (prefix > max) return null;
  return { address, prefix, family: family as 4 | 6 };
}

export function parseHostPort(text: string): { host: string; port: number } | null {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+))(?::(\d{1,5}))?$/.exec(text) ?? /^([0-9a-fA-F:]+)$/.exec(text);
  if (!m) return null;
  const host = m[1] ?? m[2] ?? '';
  if (isIP(host) === 0) return null;
  const port = m[3] ? Number(m[3]) : 53;
  return port > 0 && port < 65536 ? { host, port } : null;
}
