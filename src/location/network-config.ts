import type { Config } from '../config/load.js';
import type { RangeFormat } from './ranges.js';

/**
 * The network-location keys (`dns`, `location`) as the service uses them
 * (config/validate.ts checks `dns.servers` and the TTL bounds). Kept free of
 * the GeoIP and range-file code so check-config and explain load fast.
 */
export interface NetworkLocationSettings {
  /** Off: declared and request signals only; the HTTP client resolves upstream names itself. */
  readonly enabled: boolean;
  readonly pick: 'first' | 'round-robin';
  readonly dns: {
    readonly servers: readonly string[];
    readonly minTtl: number;
    readonly maxTtl: number;
    readonly graceSeconds: number;
    readonly timeoutMs: number;
    readonly tries: number;
  };
  /** null: no GeoIP. `path` null: the bundled database. */
  readonly geoip: { readonly path: string | null; readonly schema: 'maxmind' | 'ip-location-db' | undefined; readonly watch: boolean } | null;
  /** Absolute paths. */
  readonly cloudRanges: readonly { readonly path: string; readonly format?: RangeFormat }[];
}

/** Read the settings from a validated config (whose file names the loader made absolute). */
export function networkLocationSettings(config: Config): NetworkLocationSettings {
  const location = config.location;
  const geoip = location.geoip;
  return {
    enabled: location.network,
    pick: location.pick,
    dns: {
      servers: config.dns?.servers ?? [],
      minTtl: config.dns?.min_ttl ?? 5,
      maxTtl: config.dns?.max_ttl ?? 300,
      graceSeconds: config.dns?.grace_seconds ?? 60,
      timeoutMs: Math.round((config.dns?.timeout ?? 2) * 1000),
      tries: config.dns?.attempts ?? 2,
    },
    geoip: geoip.enabled ? { path: geoip.path ?? null, schema: geoip.schema, watch: geoip.watch } : null,
    cloudRanges: location.cloud_ranges.map((f) => (typeof f === 'string' ? { path: f } : { path: f.path, ...(f.format ? { format: f.format } : {}) })),
  };
}
