import { isIP, isIPv6 } from 'node:net';

/** A name a certificate can be minted for: a DNS name (lower case, no trailing dot) or an IP literal (canonical form). */
export interface Hostname {
  readonly name: string;
  readonly ip: boolean;
}

// RFC 1123 §2.1: letters, digits and hyphens, 1–63 per label, no hyphen at either end.
const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * The hostname a client named (SNI or CONNECT authority, IPv6 with or without
 * brackets), or null when it is neither a DNS name nor an IP literal. The
 * client controls this text, so anything unusual is refused: wildcards,
 * underscores, non-ASCII (SNI carries A-labels), zone ids, all-numeric TLDs
 * (which some URL parsers read as IPv4).
 */
export function parseHostname(input: string): Hostname | null {
  if (input.length === 0 || input.length > 255) return null;
  // Brackets only around IPv6, as in a CONNECT authority.
  const bracketed = input.startsWith('[') && input.endsWith(']');
  const bare = bracketed ? input.slice(1, -1) : input;
  if (bracketed ? isIPv6(bare) : isIP(bare) !== 0) {
    if (bare.includes('%')) return null;
    // One certificate per address, however it was spelled ("::1", "0:0::1").
    return { name: isIPv6(bare) ? new URL(`http://[${bare}]/`).hostname.slice(1, -1) : bare, ip: true };
  }
  if (bracketed) return null;
  const name = (input.endsWith('.') ? input.slice(0, -1) : input).toLowerCase();
  if (name.length > 253) return null;
  const labels = name.split('.');
  if (!labels.every((label) => LABEL.test(label))) return null;
  if (/^\d+$/.test(labels.at(-1)!)) return null;
  return { name, ip: false };
}
