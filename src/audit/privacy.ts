import { createHmac } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import { DecisionLogCodes, DecisionLogError } from './errors.js';
import { boundedMemo } from './memo.js';

export type ClientAddressMode = 'full' | 'truncate' | 'hash';

/** Hex digits of the HMAC kept: 64 bits tell clients apart without a lookup table being cheap to build. */
const HASH_HEX_DIGITS = 16;

function expandIPv6(address: string): number[] | null {
  const [head, tail] = address.split('::') as [string, string | undefined];
  const parse = (part: string): number[] | null => {
    if (part === '') return [];
    const groups: number[] = [];
    for (const g of part.split(':')) {
      if (g.includes('.')) {
        // Embedded IPv4 (::ffff:1.2.3.4): two groups.
        const o = g.split('.').map(Number);
        groups.push(((o[0] ?? 0) << 8) | (o[1] ?? 0), ((o[2] ?? 0) << 8) | (o[3] ?? 0));
      } else {
        groups.push(parseInt(g, 16));
      }
    }
    return groups;
  };
  const left = parse(head);
  const right = tail === undefined ? [] : parse(tail);
  if (!left || !right) return null;
  const missing = 8 - left.length - right.length;
  if (missing < 0 || (tail === undefined && missing !== 0)) return null;
  return [...left, ...new Array<number>(missing).fill(0), ...right];
}

/**
 * The client address as the decision record keeps it:
 * - `full`: unchanged;
 * - `truncate`: the network only, IPv4 as `a.b.c.0/24`, IPv6 as `x:y:z::/48`
 *   (an IPv4-mapped IPv6 address counts as IPv4); anything that is not an IP
 *   address is dropped (empty string);
 * - `hash`: the first 16 hex digits of HMAC-SHA-256(salt, address): stable per
 *   client within a deployment, not reversible without the salt.
 */
export function maskClient(address: string, mode: ClientAddressMode, salt?: string): string {
  if (mode === 'full' || address === '') return address;
  if (mode === 'hash') {
    if (!salt) throw new DecisionLogError(DecisionLogCodes.KEY, 'client_address: hash needs a salt');
    return createHmac('sha256', salt).update(address).digest('hex').slice(0, HASH_HEX_DIGITS);
  }
  const bare = address.replace(/%.*$/, '');
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(bare);
  const v4 = mapped ? mapped[1]! : bare;
  if (isIPv4(v4)) {
    const [a, b, c] = v4.split('.');
    return `${a}.${b}.${c}.0/24`;
  }
  if (isIPv6(bare)) {
    const groups = expandIPv6(bare);
    if (groups) return `${groups.slice(0, 3).map((g) => g.toString(16)).join(':')}::/48`;
  }
  return '';
}

/**
 * The masking function for a config (`decision_log.client_address`, salt from
 * the environment variable `client_salt_env`), checked once at start-up so a
 * missing salt stops the proxy instead of failing every request.
 */
export function clientMasker(
  config: { client_address: ClientAddressMode; client_salt_env: string },
  env: NodeJS.ProcessEnv,
): (address: string) => string {
  const mode = config.client_address;
  if (mode === 'full') return (address) => address;
  if (mode === 'truncate') return cachedMasker((address) => maskClient(address, 'truncate'));
  const salt = env[config.client_salt_env];
  if (!salt) {
    throw new DecisionLogError(DecisionLogCodes.KEY, `client_address: hash needs a salt in the environment variable ${config.client_salt_env}`);
  }
  return cachedMasker((address) => maskClient(address, 'hash', salt));
}

/** Addresses a masker remembers: plenty for the clients a proxy sees at once. */
export const MASK_CACHE_SIZE = 4096;

/** `mask` with its results remembered: a returning client costs a Map lookup instead of an HMAC (bounded: boundedMemo). */
export function cachedMasker(mask: (address: string) => string, size = MASK_CACHE_SIZE): (address: string) => string {
  return boundedMemo(mask, size);
}
