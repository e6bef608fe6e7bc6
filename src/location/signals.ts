import type { Config, ConfigProblem } from '../config/load.js';
import type { RawUpstream } from '../config/schema.js';
import { lookupRegion } from './catalog.js';
import { isIsoAlpha2 } from './iso3166.js';

/**
 * Where a request's data would land is worked out from signals, each naming
 * its source. Config declarations are the first source; the network
 * (DNS, site networks, cloud ranges, GeoIP) and the request itself (hostname,
 * SigV4 scope, create-bucket bodies) add more. The policy sees only the
 * distinct jurisdictions; the decision record keeps every signal.
 */
export type SignalSource =
  | 'declared'
  | 'hostname'
  | 'sigv4'
  | 'create-bucket'
  | 'discovered'
  | 'destination'
  | 'upload'
  | 'network:site'
  | 'network:cloud-range'
  | 'network:geoip';

export interface Signal {
  readonly source: SignalSource;
  /** What the source said: a region id, an ISO code, an address. */
  readonly value: string;
  /** ISO 3166-1 alpha-2, or null when the source could not place it. */
  readonly jurisdiction: string | null;
  /** The cloud region id, when the source named one. */
  readonly region?: string;
  /** For a destination: the bucket the request also writes to. */
  readonly bucket?: string;
}

export interface Location {
  readonly jurisdictions: readonly string[];
  /** The region id when a signal named one. */
  readonly region: string | null;
  readonly signals: readonly Signal[];
  /**
   * A signal that is evidence named a place the catalog cannot place (a
   * region opened after this release, a destination nothing locates): the
   * location is unknown, whatever the other signals say. Network signals
   * that place nothing (a private address, a global range) are not evidence.
   */
  readonly unplaced: true | undefined;
}

/** Resolve a declared place: a catalog region id, else an ISO 3166-1 code. */
export function resolvePlace(value: string): { region: string | null; jurisdictions: readonly string[] } | null {
  const region = lookupRegion(value);
  if (region) return { region: region.id, jurisdictions: region.jurisdictions };
  if (isIsoAlpha2(value)) return { region: null, jurisdictions: [value] };
  return null;
}

export function placeSignals(source: SignalSource, value: string): Signal[] {
  const place = resolvePlace(value);
  if (!place) return [{ source, value, jurisdiction: null }];
  const region = place.region === null ? {} : { region: place.region };
  return place.jurisdictions.map((jurisdiction) => ({ source, value, jurisdiction, ...region }));
}

/** The declared location of one upstream, compiled once: a default plus per-bucket overrides. */
export interface DeclaredLocation {
  forBucket(bucket: string | null): Location;
}

export function compileDeclared(upstream: RawUpstream): DeclaredLocation {
  // A declared jurisdiction is an ISO code, never a region id (`US` is also Cloud Storage's US multi-region).
  const declared: Signal[] =
    upstream.region !== undefined
      ? placeSignals('declared', upstream.region)
      : upstream.jurisdiction !== undefined
        ? [{ source: 'declared', value: upstream.jurisdiction, jurisdiction: upstream.jurisdiction }]
        : [];
  const base = toLocation(declared);
  const buckets = new Map<string, Location>();
  for (const [bucket, place] of Object.entries(upstream.buckets ?? {})) {
    buckets.set(bucket, toLocation(placeSignals('declared', place)));
  }
  return {
    forBucket(bucket) {
      return (bucket !== null && buckets.get(bucket)) || base;
    },
  };
}

/**
 * Each signal once, first occurrence kept (order decides the region). A
 * body can name one bucket or place many times (a batch of 100 calls to one
 * bucket, 1,000 replication rules to one destination): the record keeps
 * what was found, not how often.
 */
export function distinctSignals(signals: readonly Signal[]): Signal[] {
  const seen = new Set<string>();
  return signals.filter((s) => {
    const key = `${s.source}\0${s.value}\0${s.jurisdiction ?? ''}\0${s.region ?? ''}\0${s.bucket ?? ''}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** Combine signals into a location: distinct jurisdictions, and the first region named. */
export function toLocation(signals: readonly Signal[]): Location {
  const jurisdictions: string[] = [];
  let region: string | null = null;
  let unplaced = false;
  for (const s of signals) {
    if (s.jurisdiction !== null && !jurisdictions.includes(s.jurisdiction)) jurisdictions.push(s.jurisdiction);
    else if (s.jurisdiction === null && !s.source.startsWith('network:')) unplaced = true;
    if (region === null && s.region !== undefined) region = s.region;
  }
  // Left undefined (out of the record) in the usual case where everything is placed.
  return Object.freeze({ jurisdictions, region, signals, unplaced: unplaced ? true : undefined });
}

/** Config problems only the catalog can see: unknown regions, invalid ISO codes. */
export function locationProblems(config: Config): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const iso = (path: string, code: string) => {
    if (!isIsoAlpha2(code)) problems.push({ path, message: `"${code}" is not an ISO 3166-1 alpha-2 code`, expected: 'a two-letter country code such as US, DE, IE' });
  };
  const region = (path: string, id: string) => {
    if (!lookupRegion(id)) problems.push({ path, message: `unknown region "${id}"`, expected: 'a cloud region id such as us-east-1, europe-west3 or eastus' });
  };
  config.allowed_jurisdictions.forEach((j, i) => iso(`allowed_jurisdictions[${i}]`, j));
  config.upstreams.forEach((u, i) => {
    if (u.region !== undefined) region(`upstreams[${i}].region`, u.region);
    if (u.jurisdiction !== undefined) iso(`upstreams[${i}].jurisdiction`, u.jurisdiction);
    if (u.region !== undefined && u.jurisdiction !== undefined) {
      const r = lookupRegion(u.region);
      if (r && !r.jurisdictions.includes(u.jurisdiction)) {
        problems.push({ path: `upstreams[${i}].jurisdiction`, message: `"${u.jurisdiction}" contradicts region ${u.region} (${r.jurisdictions.join(', ')})`, expected: 'region or jurisdiction, or both agreeing' });
      }
    }
    for (const [bucket, place] of Object.entries(u.buckets ?? {})) {
      if (!resolvePlace(place)) {
        problems.push({ path: `upstreams[${i}].buckets[${JSON.stringify(bucket)}]`, message: `"${place}" is neither a region nor an ISO code`, expected: 'a cloud region id (eu-west-1) or ISO 3166-1 code (DE)' });
      }
    }
  });
  config.rules.forEach((r, i) => r.allow_jurisdictions?.forEach((j, k) => iso(`rules[${i}].allow_jurisdictions[${k}]`, j)));
  for (const [cidr, site] of Object.entries(config.networks ?? {})) {
    const at = `networks[${JSON.stringify(cidr)}]`;
    if (typeof site === 'string') iso(at, site);
    // Other shapes are the schema's to report.
    else if (typeof site?.jurisdiction === 'string') iso(`${at}.jurisdiction`, site.jurisdiction);
  }
  return problems;
}
