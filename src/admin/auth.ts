import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * Bearer-token checks for the admin listener. Tokens are compared as SHA-256
 * digests with `timingSafeEqual`: equal-length inputs always, so neither the
 * token's content nor its length leaks through response timing.
 */

export function digestToken(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/** The token of an `Authorization: Bearer <token>` header; null when absent or another scheme. */
export function bearerToken(header: string | undefined): string | null {
  if (header === undefined) return null;
  const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  return match ? match[1]! : null;
}

/**
 * True when the presented token matches one of the accepted digests. Every
 * accepted digest is compared, so timing does not tell which one matched.
 */
export function tokenAccepted(presented: string | null, accepted: readonly Buffer[]): boolean {
  // A missing token is still hashed and compared: the refusal takes the same time.
  const digest = digestToken(presented ?? '');
  let ok = false;
  for (const expected of accepted) {
    if (timingSafeEqual(digest, expected)) ok = true;
  }
  return ok && presented !== null;
}
