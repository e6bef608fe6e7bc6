import { createHash } from 'node:crypto';
import type { Signal } from '../signals.js';

/** The location an upload's first request was decided on. */
export interface StoredLocation {
  readonly bucket: string | null;
  readonly signals: readonly Signal[];
  /** What that first request was decided (a monitor-mode block is forwarded, and gets an id). */
  readonly decision: 'allow' | 'block';
}

/**
 * A fixed-length key from parts that come from requests (upload ids,
 * object keys): bounded in size, no separators to confuse, and no bearer
 * tokens in Redis key names.
 */
export function hashKey(...parts: readonly string[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(String(p.length)).update(':').update(p);
  return h.digest('hex');
}
