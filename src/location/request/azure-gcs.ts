import { createHash } from 'node:crypto';
import { paramValue } from './query.js';
import { hostLabels } from './s3-host.js';

/**
 * What Azure Blob and Google Cloud Storage requests name: the storage
 * account (Azure: its region is account metadata, so config maps account →
 * region) and the bucket (GCS), plus resumable-upload sessions, whose later
 * requests carry only an upload id. Pure string work; never throws.
 */

// ---------------------------------------------------------------------------
// Azure
// ---------------------------------------------------------------------------

export type AzureService = 'blob' | 'dfs' | 'file' | 'queue' | 'table';
export type AzureCloud = 'public' | 'usgov' | 'china';

export interface AzureHostInfo {
  readonly account: string;
  readonly service: AzureService;
  readonly cloud: AzureCloud;
  /** `ACCOUNT-secondary.…`: the read-only replica in the paired region (RA-GRS). */
  readonly secondary: boolean;
}

// Storage account names: 3..24 lower-case letters and digits.
const AZURE_ACCOUNT = /^[a-z0-9]{3,24}$/;
const AZURE_SERVICES: ReadonlySet<string> = new Set(['blob', 'dfs', 'file', 'queue', 'table']);
const AZURE_CLOUDS: readonly (readonly [suffix: readonly string[], cloud: AzureCloud])[] = [
  [['core', 'windows', 'net'], 'public'],
  [['core', 'usgovcloudapi', 'net'], 'usgov'],
  [['core', 'chinacloudapi', 'cn'], 'china'],
];
// Azure DNS zone endpoints: ACCOUNT.zNN.blob.storage.azure.net.
const AZURE_DNS_ZONE = /^z\d{2}$/;

/** `ACCOUNT.blob.core.windows.net` and the other services and sovereign clouds. */
export function parseAzureHost(host: string): AzureHostInfo | null {
  const labels = hostLabels(host);
  if (labels === null) return null;
  const n = labels.length;
  let cloud: AzureCloud | null = null;
  let rest: string[] = [];
  for (const [suffix, c] of AZURE_CLOUDS) {
    if (n === suffix.length + 2 && suffix.every((l, i) => labels[n - suffix.length + i] === l)) {
      cloud = c;
      rest = labels.slice(0, 2);
      break;
    }
  }
  if (cloud === null && n === 6 && labels[3] === 'storage' && labels[4] === 'azure' && labels[5] === 'net' && AZURE_DNS_ZONE.test(labels[1]!)) {
    // ACCOUNT.zNN.SERVICE.storage.azure.net
    cloud = 'public';
    rest = [labels[0]!, labels[2]!];
  }
  if (cloud === null) return null;
  const [first, service] = rest as [string, string];
  if (!AZURE_SERVICES.has(service)) return null;
  const secondary = first.endsWith('-secondary');
  const account = secondary ? first.slice(0, -'-secondary'.length) : first;
  if (!AZURE_ACCOUNT.test(account)) return null;
  return { account, service: service as AzureService, cloud, secondary };
}

/**
 * Emulators (Azurite) and path-style endpoints: `/ACCOUNT/container/blob`.
 * `path` is the normalised path relative to the upstream.
 */
export function azureAccountFromPath(path: string): { readonly account: string; readonly container: string | null } | null {
  const [account, container] = segments(path, 2);
  if (account === undefined || !AZURE_ACCOUNT.test(account)) return null;
  return { account, container: container ?? null };
}

// ---------------------------------------------------------------------------
// Google Cloud Storage
// ---------------------------------------------------------------------------

export type GcsApi = 'json' | 'upload' | 'download' | 'batch' | 'xml';

export interface GcsTarget {
  readonly api: GcsApi;
  readonly bucket: string | null;
  /** The object name (decoded), when the request names one. */
  readonly object: string | null;
}

// Bucket names: 3..63 per dot-separated component, 222 in all; letters, digits, - _ .
/** A Cloud Storage bucket name (the characters and length a bucket may have). */
export const GCS_BUCKET = /^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$/;
const GCS_XML_SUFFIX = ['storage', 'googleapis', 'com'] as const;
const JSON_BUCKET_PATH = /^\/(upload\/|download\/)?storage\/v1\/b\/([^/]+)(?:\/o(?:\/(.+))?)?/;

/**
 * The bucket and object a GCS request addresses: JSON API
 * (`/storage/v1/b/BUCKET/o/OBJ`, `/upload/storage/v1/b/BUCKET/o`,
 * `/download/…`), batch, or XML API (`BUCKET.storage.googleapis.com/OBJ` or
 * path style `/BUCKET/OBJ` on storage.googleapis.com or an emulator).
 */
export function parseGcsRequest(host: string, path: string): GcsTarget | null {
  if (!path.startsWith('/')) return null;
  const hostBucket = gcsHostBucket(host);
  if (hostBucket === undefined) return null;
  if (hostBucket !== null) {
    const object = path.length > 1 ? decode(path.slice(1)) : null;
    return { api: 'xml', bucket: hostBucket, object };
  }
  const m = JSON_BUCKET_PATH.exec(path);
  if (m !== null) {
    const bucket = decode(m[2]!);
    if (bucket === null || !GCS_BUCKET.test(bucket)) return null;
    const api: GcsApi = m[1] === 'upload/' ? 'upload' : m[1] === 'download/' ? 'download' : 'json';
    return { api, bucket, object: m[3] === undefined ? null : decode(m[3]) };
  }
  if (path.startsWith('/batch/')) return { api: 'batch', bucket: null, object: null };
  if (path === '/storage' || path.startsWith('/storage/') || path.startsWith('/upload/') || path.startsWith('/download/')) {
    return { api: path.startsWith('/upload/') ? 'upload' : 'json', bucket: null, object: null };
  }
  // XML API, path style.
  const slash = path.indexOf('/', 1);
  const rawBucket = slash === -1 ? path.slice(1) : path.slice(1, slash);
  if (rawBucket === '') return { api: 'xml', bucket: null, object: null };
  const bucket = decode(rawBucket);
  if (bucket === null || !GCS_BUCKET.test(bucket)) return null;
  const object = slash === -1 || slash === path.length - 1 ? null : decode(path.slice(slash + 1));
  return { api: 'xml', bucket, object };
}

/** `BUCKET.storage.googleapis.com` → bucket; other hosts null; undefined for an invalid one. */
export function gcsHostBucket(host: string): string | null | undefined {
  const labels = hostLabels(host);
  // Emulators run on IP literals and arbitrary names: only the real suffix means virtual hosting.
  if (labels === null) return null;
  const n = labels.length;
  if (n <= 3 || !GCS_XML_SUFFIX.every((l, i) => labels[n - 3 + i] === l)) return null;
  const bucket = labels.slice(0, n - 3).join('.');
  return GCS_BUCKET.test(bucket) ? bucket : undefined;
}

/** Does this request start a resumable upload (JSON `uploadType=resumable` POST, or XML `x-goog-resumable: start`)? */
export function isGcsResumableStart(
  method: string,
  target: GcsTarget,
  query: string | null,
  headers: { readonly 'x-goog-resumable'?: string | string[] | undefined },
): boolean {
  if (method !== 'POST') return false;
  if (target.api === 'upload') return paramValue(query, 'uploadType') === 'resumable' && paramValue(query, 'upload_id') === undefined;
  if (target.api === 'xml') {
    const h = headers['x-goog-resumable'];
    return typeof h === 'string' && h.trim().toLowerCase() === 'start';
  }
  return false;
}

// Upload ids are URL-safe tokens of a few hundred characters.
const UPLOAD_ID = /^[A-Za-z0-9_.~+/=-]{1,2048}$/;

/** The `upload_id` of a request belonging to a resumable session (JSON or XML), decoded; null when absent or malformed. */
export function gcsUploadId(query: string | null): string | null {
  const raw = paramValue(query, 'upload_id');
  if (raw === undefined) return null;
  const id = decode(raw);
  return id !== null && UPLOAD_ID.test(id) ? id : null;
}

/** The upload id in a session-initiation response's `Location` header. */
export function gcsUploadIdFromLocation(location: string | string[] | undefined): string | null {
  if (typeof location !== 'string' || location.length > 8192) return null;
  const q = location.indexOf('?');
  if (q === -1) return null;
  const hash = location.indexOf('#', q);
  return gcsUploadId(location.slice(q + 1, hash === -1 ? undefined : hash));
}

/**
 * The shared-cache key for a resumable session: scoped by upstream, the id
 * hashed (ids are long, and they are bearer tokens: they must not appear in
 * Redis keys or logs).
 */
export function gcsSessionKey(scope: string, uploadId: string): string {
  return 'gcs-resumable:' + createHash('sha256').update(scope).update('\0').update(uploadId).digest('hex');
}

// ---------------------------------------------------------------------------

/** The first `count` path segments, decoded (undefined where absent or undecodable). */
function segments(path: string, count: number): (string | undefined)[] {
  const out: (string | undefined)[] = [];
  let start = path.startsWith('/') ? 1 : 0;
  for (let k = 0; k < count; k++) {
    if (start > path.length) break;
    let end = path.indexOf('/', start);
    if (end === -1) end = path.length;
    const s = path.slice(start, end);
    out.push(s === '' ? undefined : (decode(s) ?? undefined));
    start = end + 1;
  }
  return out;
}

function decode(s: string): string | null {
  if (!s.includes('%')) return s;
  try {
    return decodeURIComponent(s);
  } catch {
    return null;
  }
}
