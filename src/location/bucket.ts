import type { Provider } from '../config/schema.js';

/**
 * The bucket (S3, GCS) or container (Azure) a request addresses, for
 * per-bucket declared locations. `path` is relative to the upstream and
 * normalised; `hostname` is the request's lower-case Host without port.
 */
export function bucketOf(
  provider: Provider,
  path: string,
  hostname: string,
  routeHost: string | null,
  accountInPath: boolean,
): string | null {
  switch (provider) {
    case 's3':
      // Virtual-hosted style: BUCKET.<route host>; else path style: /BUCKET/key.
      if (routeHost !== null && !routeHost.startsWith('*.') && hostname.endsWith('.' + routeHost)) {
        return hostname.slice(0, hostname.length - routeHost.length - 1);
      }
      return segment(path, 0);
    case 'azure':
      // Azurite and other emulators: /ACCOUNT/container/blob; the service: /container/blob.
      return segment(path, accountInPath ? 1 : 0);
    case 'gcs': {
      // JSON API: /storage/v1/b/BUCKET/… and /upload/storage/v1/b/BUCKET/…; XML API: /BUCKET/key.
      const json = /^\/(?:upload\/|download\/)?storage\/v1\/b\/([^/?]+)/.exec(path);
      if (json) return decode(json[1]!);
      if (path.startsWith('/storage/') || path.startsWith('/upload/') || path.startsWith('/batch/')) return null;
      return segment(path, 0);
    }
    case 'generic':
      return null;
  }
}

function segment(path: string, index: number): string | null {
  let start = 1;
  for (let i = 0; i < index; i++) {
    const slash = path.indexOf('/', start);
    if (slash === -1) return null;
    start = slash + 1;
  }
  const end = path.indexOf('/', start);
  const s = end === -1 ? path.slice(start) : path.slice(start, end);
  return s === '' ? null : decode(s);
}

/** Percent-decode a path segment; a malformed encoding is kept as it is. */
export function decode(s: string): string {
  if (!s.includes('%')) return s;
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
