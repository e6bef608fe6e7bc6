import { createHash } from 'node:crypto';
import type { Signal } from '../signals.js';
import { parseSafeXml } from './safe-xml.js';

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

/** Longer than any real upload id: a value past it is not taken for one. */
const MAX_UPLOAD_ID = 1024;

/**
 * The UploadId of an S3 CreateMultipartUpload answer (an
 * InitiateMultipartUploadResult), read with the same XML reader as request
 * bodies: namespace prefixes dropped, entities decoded, no DTDs. Null when
 * the answer is not that document, or has no UploadId or more than one
 * (which one the client would take is a guess, and a wrong guess files the
 * upload under an id its parts never carry).
 */
export function createdUploadId(answer: string): string | null {
  const doc = parseSafeXml(answer);
  if (!doc.ok || doc.root.name !== 'InitiateMultipartUploadResult') return null;
  const found = doc.root.children.filter((child) => child.name === 'UploadId');
  if (found.length !== 1 || found[0]!.children.length > 0) return null;
  const id = found[0]!.text.trim();
  return id.length > 0 && id.length <= MAX_UPLOAD_ID ? id : null;
}
