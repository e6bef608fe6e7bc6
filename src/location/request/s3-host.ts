import { placeSignals, type Signal } from '../signals.js';

/**
 * What an S3 Host header says: the bucket (virtual-hosted style), the
 * endpoint's region and the endpoint shape. Pure string work, never throws:
 * anything that is not a well-formed S3 endpoint name is null, so a hostile
 * Host can only ever mean "no hostname signal".
 */
export type S3HostStyle = 'virtual' | 'path' | 'accesspoint' | 'website';

export interface S3HostInfo {
  /** Virtual-hosted bucket (may contain dots); null for path style and access points. */
  readonly bucket: string | null;
  /** The endpoint's region; null for a multi-region access point (s3-global). */
  readonly region: string | null;
  readonly style: S3HostStyle;
  readonly partition: 'aws' | 'aws-cn';
  /**
   * The legacy global endpoint (`s3.amazonaws.com`, `BUCKET.s3.amazonaws.com`).
   * `region` is us-east-1 by convention, but AWS routes virtual-hosted
   * requests there to the bucket's own region: it is a weak signal.
   */
  readonly global: boolean;
  /** For `NAME-ACCOUNT.s3-accesspoint.REGION…` (and Object Lambda); the alias for s3-global. */
  readonly accessPoint: { readonly name: string; readonly accountId: string | null } | null;
}

export interface S3CompatibleHostInfo {
  readonly bucket: string | null;
  readonly style: 'virtual' | 'path';
}

// A DNS name as a Host carries it: 253 octets, labels of 1..63 LDH characters.
const MAX_HOST = 253;
const MAX_LABEL = 63;
const HOST_CHARS = /^[a-z0-9.-]+$/;
const PORT = /^\d{1,5}$/;
// AWS region ids: us-east-1, us-gov-west-1, eusc-de-east-1, us-isob-east-1, cn-north-1.
const REGION = /^[a-z]{2,4}(?:-[a-z]+){1,3}-\d{1,2}$/;
// Bucket names as S3 allows them in a Host: 3..63, lower-case letters, digits, dots, hyphens.
const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const IPV4ISH = /^\d+\.\d+\.\d+\.\d+$/;
// Access point names are 3..50 characters; the account id is 12 digits.
const ACCESS_POINT_LABEL = /^([a-z0-9][a-z0-9-]{1,48}[a-z0-9])-(\d{12})$/;
const MRAP_ALIAS = /^[a-z0-9]{1,50}\.mrap$/;
const S3_EXPRESS_ZONE = /^s3express-([a-z0-9]+-az\d{1,2})$/;

const ACCESS_POINT_ENDPOINTS = new Set(['s3-accesspoint', 's3-accesspoint-fips', 's3-object-lambda', 's3-object-lambda-fips']);
const DUALSTACK_ENDPOINTS = new Set(['s3', 's3-fips', 's3-accesspoint', 's3-accesspoint-fips']);

/**
 * Host header → lower-case labels, or null when it is not a DNS name: port
 * stripped, one trailing dot allowed, IP literals and garbage rejected.
 */
export function hostLabels(host: string): string[] | null {
  if (typeof host !== 'string' || host.length === 0 || host.length > MAX_HOST + 7) return null;
  if (host.charCodeAt(0) === 0x5b /* [ */) return null; // IPv6 literal
  let name = host;
  const colon = name.indexOf(':');
  if (colon !== -1) {
    if (!PORT.test(name.slice(colon + 1))) return null;
    name = name.slice(0, colon);
  }
  name = name.toLowerCase();
  if (name.endsWith('.')) name = name.slice(0, -1);
  if (name.length === 0 || name.length > MAX_HOST || !HOST_CHARS.test(name)) return null;
  if (IPV4ISH.test(name)) return null;
  const labels = name.split('.');
  for (const l of labels) {
    if (l.length === 0 || l.length > MAX_LABEL) return null;
  }
  return labels;
}

/** A bucket name S3 accepts in a Host (DNS-compatible). */
export function isDnsBucketName(name: string): boolean {
  return BUCKET.test(name) && !name.includes('..') && !name.includes('.-') && !name.includes('-.') && !IPV4ISH.test(name);
}

interface Endpoint {
  /** How many labels (counted from the right, before the suffix) the endpoint used. */
  used: number;
  region: string | null;
  kind: 's3' | 'website' | 'accesspoint' | 'mrap' | 'express-zonal' | 'express-control';
  global: boolean;
}

/** Parse the endpoint part (the labels just left of amazonaws.com[.cn]). */
function endpointOf(rest: readonly string[]): Endpoint | null {
  const n = rest.length;
  if (n === 0) return null;
  const last = rest[n - 1]!;

  if (last === 's3') return { used: 1, region: 'us-east-1', kind: 's3', global: true };
  if (last === 's3-external-1') return { used: 1, region: 'us-east-1', kind: 's3', global: false };
  if (last === 's3-global') {
    return n >= 2 && rest[n - 2] === 'accesspoint' ? { used: 2, region: null, kind: 'mrap', global: false } : null;
  }
  if (last.startsWith('s3-website-')) {
    const region = last.slice('s3-website-'.length);
    return REGION.test(region) ? { used: 1, region, kind: 'website', global: false } : null;
  }
  if (last.startsWith('s3-fips-')) {
    const region = last.slice('s3-fips-'.length);
    return REGION.test(region) ? { used: 1, region, kind: 's3', global: false } : null;
  }
  if (last.startsWith('s3-') && REGION.test(last.slice(3))) {
    return { used: 1, region: last.slice(3), kind: 's3', global: false };
  }

  // Everything else is `<endpoint>.REGION`, possibly `<endpoint>.dualstack.REGION`.
  if (!REGION.test(last) || n < 2) return null;
  const region = last;
  let endpoint = rest[n - 2]!;
  let used = 2;
  if (endpoint === 'dualstack') {
    if (n < 3 || !DUALSTACK_ENDPOINTS.has(rest[n - 3]!)) return null;
    endpoint = rest[n - 3]!;
    used = 3;
  }
  if (endpoint === 's3' || endpoint === 's3-fips') return { used, region, kind: 's3', global: false };
  if (used === 3) {
    return ACCESS_POINT_ENDPOINTS.has(endpoint) ? { used, region, kind: 'accesspoint', global: false } : null;
  }
  if (endpoint === 's3-website') return { used, region, kind: 'website', global: false };
  if (ACCESS_POINT_ENDPOINTS.has(endpoint)) return { used, region, kind: 'accesspoint', global: false };
  if (endpoint === 's3express-control') return { used, region, kind: 'express-control', global: false };
  if (S3_EXPRESS_ZONE.test(endpoint)) return { used, region, kind: 'express-zonal', global: false };
  return null;
}

/**
 * Parse an AWS S3 endpoint Host header (aws and aws-cn partitions). Never
 * throws; null for anything else (custom domains: parseS3CompatibleHost).
 */
export function parseS3Host(host: string): S3HostInfo | null {
  try {
    return parse(host);
  } catch {
    return null;
  }
}

function parse(host: string): S3HostInfo | null {
  const labels = hostLabels(host);
  if (labels === null) return null;
  const n = labels.length;
  let partition: 'aws' | 'aws-cn';
  let suffix: number;
  if (n >= 3 && labels[n - 1] === 'cn' && labels[n - 2] === 'com' && labels[n - 3] === 'amazonaws') {
    partition = 'aws-cn';
    suffix = 3;
  } else if (n >= 2 && labels[n - 1] === 'com' && labels[n - 2] === 'amazonaws') {
    partition = 'aws';
    suffix = 2;
  } else {
    return null;
  }
  const rest = labels.slice(0, n - suffix);
  const ep = endpointOf(rest);
  if (ep === null) return null;
  // China has no global endpoint and only cn-* regions; aws has none of them.
  if (partition === 'aws-cn' ? ep.global || ep.region === null || !ep.region.startsWith('cn-') : ep.region?.startsWith('cn-')) {
    return null;
  }
  const prefix = rest.slice(0, rest.length - ep.used);
  const base = { region: ep.region, partition, global: ep.global };

  switch (ep.kind) {
    case 's3': {
      if (prefix.length === 0) return { bucket: null, style: 'path', accessPoint: null, ...base };
      const bucket = prefix.join('.');
      return isDnsBucketName(bucket) ? { bucket, style: 'virtual', accessPoint: null, ...base } : null;
    }
    case 'express-zonal': {
      // Directory buckets: NAME--ZONE--x-s3, virtual-hosted only.
      const bucket = prefix.join('.');
      return prefix.length > 0 && isDnsBucketName(bucket) && bucket.endsWith('--x-s3')
        ? { bucket, style: 'virtual', accessPoint: null, ...base }
        : null;
    }
    case 'express-control':
      // The directory-bucket control plane (CreateBucket lands here), path style.
      return prefix.length === 0 ? { bucket: null, style: 'path', accessPoint: null, ...base } : null;
    case 'website': {
      const bucket = prefix.join('.');
      return prefix.length > 0 && isDnsBucketName(bucket) ? { bucket, style: 'website', accessPoint: null, ...base } : null;
    }
    case 'accesspoint': {
      if (prefix.length !== 1) return null;
      const m = ACCESS_POINT_LABEL.exec(prefix[0]!);
      return m ? { bucket: null, style: 'accesspoint', accessPoint: { name: m[1]!, accountId: m[2]! }, ...base } : null;
    }
    case 'mrap': {
      // ALIAS.mrap.accesspoint.s3-global.amazonaws.com: data may be in any of its regions.
      const alias = prefix.join('.');
      return MRAP_ALIAS.test(alias) ? { bucket: null, style: 'accesspoint', accessPoint: { name: alias, accountId: null }, ...base } : null;
    }
  }
}

/**
 * A custom S3-compatible domain from config (`suffix`, e.g. `s3.example.eu`):
 * `BUCKET.<suffix>` is virtual-hosted, `<suffix>` itself path style. Port,
 * case and a trailing dot are ignored on both sides. Null when the host is not
 * under the suffix or the bucket label(s) are not a valid bucket name.
 */
export function parseS3CompatibleHost(host: string, suffix: string): S3CompatibleHostInfo | null {
  try {
    const labels = hostLabels(host);
    const want = hostLabels(suffix.startsWith('.') ? suffix.slice(1) : suffix);
    if (labels === null || want === null || labels.length < want.length) return null;
    const offset = labels.length - want.length;
    for (let i = 0; i < want.length; i++) if (labels[offset + i] !== want[i]) return null;
    if (offset === 0) return { bucket: null, style: 'path' };
    const bucket = labels.slice(0, offset).join('.');
    return isDnsBucketName(bucket) ? { bucket, style: 'virtual' } : null;
  } catch {
    return null;
  }
}

/**
 * The hostname signals for a parsed S3 host. The legacy global endpoint and
 * multi-region access points place nothing: AWS routes those to wherever the
 * bucket is, so us-east-1 would be a guess (discovery or SigV4 decide).
 */
export function s3HostSignals(info: S3HostInfo | null): Signal[] {
  if (info === null || info.region === null || info.global) return [];
  return placeSignals('hostname', info.region);
}
