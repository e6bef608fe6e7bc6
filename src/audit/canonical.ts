import { hash as oneShotHash } from 'node:crypto';
import { boundedMemo } from './memo.js';

/** `prev` of the very first record of a log: 64 zeros. */
export const GENESIS_HASH = '0'.repeat(64);

/** Record keys are a small fixed set; the bound keeps hostile input from growing the cache. */
const quoteKey = boundedMemo((key) => JSON.stringify(key), 1024);

/**
 * The canonical form hashed into every record and digest:
 *
 * - JSON text with no insignificant whitespace;
 * - object keys sorted by UTF-16 code units (JavaScript's default sort), at
 *   every depth; properties whose value is `undefined` are left out;
 * - arrays in their order (`undefined` items as `null`);
 * - strings and numbers exactly as `JSON.stringify` writes them (shortest
 *   round-trip numbers, `\uXXXX` only for control characters and lone surrogates).
 *
 * For the values a record holds (strings, finite numbers, booleans, null,
 * arrays, plain objects) this is RFC 8785 (JCS). It is a copy of the policy
 * engine's rule rather than an import: `audit/` depends on `config/` only.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    if (typeof value === 'number' && !Number.isFinite(value)) return 'null';
    return JSON.stringify(value) ?? 'null';
  }
  if (Array.isArray(value)) return arrayJson(value, canonicalJson);
  let keys = Object.keys(value);
  // Lines read back from a log are already sorted: skip the sort then (verification is the hot path).
  for (let i = 1; i < keys.length; i++) {
    if (keys[i - 1]! > keys[i]!) {
      keys = keys.sort();
      break;
    }
  }
  let out = '{';
  let first = true;
  for (const key of keys) {
    const item = (value as Record<string, unknown>)[key];
    if (item === undefined) continue;
    if (!first) out += ',';
    first = false;
    out += `${quoteKey(key)}:${canonicalJson(item)}`;
  }
  return `${out}}`;
}

/** `[…]` with each item written by `write`; `undefined` items as null (as JSON.stringify). */
export function arrayJson(items: readonly unknown[], write: (item: unknown) => string): string {
  let out = '[';
  for (let i = 0; i < items.length; i++) {
    if (i > 0) out += ',';
    const item = items[i];
    out += item === undefined ? 'null' : write(item);
  }
  return `${out}]`;
}

export function sha256Hex(text: string | Uint8Array): string {
  return oneShotHash('sha256', text, 'hex');
}

/**
 * Seal a record: `hash` is the SHA-256 (lowercase hex) of the UTF-8 bytes of
 * the canonical form of the record without `hash`. The line written is that
 * canonical text with `,"hash":"…"` inserted before the closing brace, so the
 * line minus its trailing hash field is exactly what was hashed (checkable
 * with standard tools) and the record's content is still bound when a reader
 * re-serialises it.
 */
export function sealRecord(unsealed: object): { line: string; hash: string } {
  return sealCanonical(canonicalJson(unsealed));
}

/** sealRecord from a record's canonical text (however it was produced). */
export function sealCanonical(canonical: string): { line: string; hash: string } {
  const hash = sha256Hex(canonical);
  return { line: `${canonical.slice(0, -1)},"hash":"${hash}"}`, hash };
}

/** The hash a parsed record should carry: over its canonical form without `hash`. */
export function recordHash(record: Record<string, unknown>): string {
  const { hash: _hash, ...rest } = record;
  return sha256Hex(canonicalJson(rest));
}

/** Keys in canonical order at every depth (`skip`: a top-level key allowed out of order, the trailing `hash`). */
function sortedDeep(value: unknown, skip?: string): boolean {
  if (value === null || typeof value !== 'object') return true;
  if (Array.isArray(value)) {
    for (const item of value) if (!sortedDeep(item)) return false;
    return true;
  }
  let last: string | null = null;
  for (const key in value) {
    if (key === skip) continue;
    if (last !== null && last > key) return false;
    last = key;
    if (!sortedDeep((value as Record<string, unknown>)[key])) return false;
  }
  return true;
}

/**
 * Whether a stored line's record matches its hash. Fast path for lines as
 * the writer produces them: when re-serialising the parsed record gives the
 * line back byte for byte and its keys are in canonical order, the line
 * minus its trailing hash field IS the canonical form, so hashing that text
 * is exactly the canonical check without rebuilding it. Anything else
 * (reformatted, keys reordered) takes the full canonical path.
 */
export function lineMatchesHash(line: string, record: Record<string, unknown>, hash: string): boolean {
  const suffix = `,"hash":"${hash}"}`;
  if (line.endsWith(suffix) && sortedDeep(record, 'hash') && JSON.stringify(record) === line) {
    return sha256Hex(`${line.slice(0, -suffix.length)}}`) === hash;
  }
  return recordHash(record) === hash;
}
