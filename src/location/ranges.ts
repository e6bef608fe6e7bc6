import { readFile } from 'node:fs/promises';
import { lookupRegion, type CloudProvider, type RegionInfo } from './catalog.js';
import { normalizePrefix, PrefixTable } from './prefix-table.js';
import type { Signal } from './signals.js';

/**
 * Cloud IP ranges in the providers' own published formats, merged into one
 * longest-prefix table: address → provider region → jurisdiction (catalog).
 *
 *   AWS           ip-ranges.json      syncToken, createDate, prefixes[].ip_prefix/region, ipv6_prefixes[].ipv6_prefix/region
 *   Google Cloud  cloud.json          syncToken, creationTime, prefixes[].ipv4Prefix|ipv6Prefix/scope
 *   Azure         ServiceTags_*.json  changeNumber, values[].properties.region/addressPrefixes
 *
 * Global entries (AWS 'GLOBAL', Azure region '') and regions the catalog does
 * not know place nothing, and are counted. They still enter the table as
 * markers without a jurisdiction, so a global /24 inside a regional /16 is
 * not misread as that region; the locator records them as signals with a
 * null jurisdiction, which the policy ignores.
 */
export type RangeFormat = 'aws' | 'gcp' | 'azure';

export interface RangeFileInfo {
  readonly file: string;
  readonly format: RangeFormat;
  readonly provider: CloudProvider;
  /** syncToken (AWS, Google) or changeNumber (Azure), as text: the file's version for an info metric. */
  readonly version: string;
  /** createDate (AWS) or creationTime (Google) as ISO 8601; null for Azure, whose files carry no date. */
  readonly created: string | null;
  /** Distinct prefixes from this file that map to a catalog region. */
  readonly prefixes: { readonly ipv4: number; readonly ipv6: number };
  /** Listings that place nothing: global ones, and those naming a region the catalog does not know. */
  readonly skipped: { readonly global: number; readonly unknownRegion: number };
  /** The unknown region ids, for a log line asking for a catalog row. */
  readonly unknownRegions: readonly string[];
}

/** One listing from a file: a prefix and where the provider says it is. */
export interface RangeEntry {
  readonly prefix: string;
  readonly family: 4 | 6;
  /** The provider's region id as written; null for a global listing. */
  readonly region: string | null;
  /** The catalog entry, when the region is one the catalog knows for this provider. */
  readonly info: RegionInfo | undefined;
}

export interface ParsedRangeFile {
  readonly info: RangeFileInfo;
  readonly entries: readonly RangeEntry[];
}

/** What a matching prefix says. */
export interface CloudRange {
  readonly prefix: string;
  /** 'aws:eu-west-1'; 'aws:GLOBAL' or 'azure:global' for global listings. */
  readonly places: readonly string[];
  /** `network:cloud-range` signals, built once: value = the place, jurisdiction null for global/unknown. */
  readonly signals: readonly Signal[];
}

export interface RangeProblem {
  readonly path: string;
  readonly message: string;
  readonly expected: string;
}

/** A range file that cannot be used; the message names the file, the JSON path and what was expected. */
export class RangeFileError extends Error {
  readonly code = 'RESIDENCY_ERR_RANGES_INVALID';
  constructor(
    readonly file: string,
    readonly problems: readonly RangeProblem[],
    more = 0,
  ) {
    super(
      problems.map((p) => `${file}: ${p.path}: ${p.message} (expected ${p.expected})`).join('\n') +
        (more > 0 ? `\n${file}: … and ${more} more problem${more === 1 ? '' : 's'}` : ''),
    );
    this.name = 'RangeFileError';
  }
}

const PROVIDER: Record<RangeFormat, CloudProvider> = { aws: 'aws', gcp: 'gcp', azure: 'azure' };
// Enough to show a pattern without burying the first problem.
const MAX_PROBLEMS = 10;

/** Parse and strictly validate one file's text. Throws RangeFileError. */
export function parseRangeFile(text: string, file: string, format?: RangeFormat): ParsedRangeFile {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new RangeFileError(file, [{ path: '(document)', message: `is not valid JSON: ${(err as Error).message}`, expected: 'a JSON document' }]);
  }
  if (!isObject(doc)) throw new RangeFileError(file, [{ path: '(document)', message: `is ${describe(doc)}`, expected: 'a JSON object' }]);
  const kind = format ?? detectFormat(doc);
  if (kind === null) {
    throw new RangeFileError(file, [
      {
        path: '(document)',
        message: 'is not a recognised cloud range file',
        expected: 'AWS ip-ranges.json (syncToken, createDate, prefixes), Google cloud.json (syncToken, creationTime, prefixes) or Azure Service Tags (changeNumber, values)',
      },
    ]);
  }
  const v = new Validator();
  const entries: RangeEntry[] = [];
  let version = '';
  let created: string | null = null;
  const provider = PROVIDER[kind];
  // region: the place (null = global), or undefined when the listing's region is itself invalid (prefix still checked).
  const entry = (path: string, prefixText: unknown, family: 4 | 6 | null, region: string | null | undefined) => {
    if (typeof prefixText !== 'string') {
      v.problem(path, prefixText === undefined ? 'is missing' : `is ${describe(prefixText)}`, family === 6 ? 'an IPv6 prefix such as 2600:1f14::/35' : 'an IPv4 prefix such as 52.94.0.0/16');
      return;
    }
    const p = normalizePrefix(prefixText);
    if (p === null || (family !== null && p.family !== family)) {
      const what = family === null ? 'an IPv4 or IPv6 prefix' : family === 4 ? 'an IPv4 prefix such as 52.94.0.0/16' : 'an IPv6 prefix such as 2600:1f14::/35';
      v.problem(path, `${JSON.stringify(prefixText)} is not ${p === null ? 'a CIDR' : `an IPv${family} prefix`}`, what);
      return;
    }
    if (region === undefined) return;
    const info = region === null ? undefined : lookupRegion(region);
    entries.push({ prefix: p.text, family: p.family, region, info: info?.provider === provider ? info : undefined });
  };

  if (kind === 'aws') {
    version = v.string(doc, 'syncToken', 'syncToken', 'a string such as "1705698786"') ?? '';
    const date = v.string(doc, 'createDate', 'createDate', 'a date such as "2024-01-19-21-13-06"');
    if (date !== undefined) {
      const m = /^(\d{4})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$/.exec(date);
      if (m) created = `${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}Z`;
      if (!m || Number.isNaN(Date.parse(created!))) v.problem('createDate', `${JSON.stringify(date)} is not a date`, 'YYYY-MM-DD-hh-mm-ss, e.g. "2024-01-19-21-13-06"');
    }
    for (const [key, field, family] of [['prefixes', 'ip_prefix', 4], ['ipv6_prefixes', 'ipv6_prefix', 6]] as const) {
      v.array(doc, key, key, 'a list of prefix objects')?.forEach((item, i) => {
        const at = `${key}[${i}]`;
        if (!isObject(item)) return v.problem(at, `is ${describe(item)}`, `an object with ${field} and region`);
        const region = v.string(item, 'region', `${at}.region`, 'a region id such as eu-west-1, or GLOBAL');
        if (item.service !== undefined) v.string(item, 'service', `${at}.service`, 'a service name such as AMAZON');
        entry(`${at}.${field}`, item[field], family, region === 'GLOBAL' ? null : region);
      });
    }
  } else if (kind === 'gcp') {
    version = v.string(doc, 'syncToken', 'syncToken', 'a string such as "1705676400000"') ?? '';
    const time = v.string(doc, 'creationTime', 'creationTime', 'a timestamp such as "2024-01-19T12:00:00.000000"');
    if (time !== undefined) {
      // Google writes microseconds and no zone (UTC); Date wants milliseconds.
      const m = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?(Z)?$/.exec(time);
      const ms = m ? Date.parse(`${m[1]}${m[2] ? m[2].slice(0, 4).padEnd(4, '0') : ''}Z`) : NaN;
      if (Number.isNaN(ms)) v.problem('creationTime', `${JSON.stringify(time)} is not a timestamp`, 'a timestamp such as "2024-01-19T12:00:00.000000"');
      else created = new Date(ms).toISOString();
    }
    v.array(doc, 'prefixes', 'prefixes', 'a list of prefix objects')?.forEach((item, i) => {
      const at = `prefixes[${i}]`;
      if (!isObject(item)) return v.problem(at, `is ${describe(item)}`, 'an object with ipv4Prefix or ipv6Prefix, and scope');
      const scope = v.string(item, 'scope', `${at}.scope`, 'a region id such as europe-west3');
      const has4 = item.ipv4Prefix !== undefined;
      const has6 = item.ipv6Prefix !== undefined;
      if (has4 === has6) return v.problem(at, has4 ? 'has both ipv4Prefix and ipv6Prefix' : 'has neither ipv4Prefix nor ipv6Prefix', 'exactly one of ipv4Prefix, ipv6Prefix');
      const place = scope === undefined ? undefined : scope.toLowerCase() === 'global' ? null : scope;
      entry(has4 ? `${at}.ipv4Prefix` : `${at}.ipv6Prefix`, has4 ? item.ipv4Prefix : item.ipv6Prefix, has4 ? 4 : 6, place);
    });
  } else {
    const change = doc.changeNumber;
    if (typeof change !== 'number' || !Number.isInteger(change)) {
      v.problem('changeNumber', change === undefined ? 'is missing' : `is ${describe(change)}`, 'an integer');
    } else {
      version = String(change);
    }
    if (doc.cloud !== undefined) v.string(doc, 'cloud', 'cloud', 'a cloud name such as Public');
    v.array(doc, 'values', 'values', 'a list of service tags')?.forEach((tag, i) => {
      const at = `values[${i}]`;
      if (!isObject(tag)) return v.problem(at, `is ${describe(tag)}`, 'a service tag object with name and properties');
      v.string(tag, 'name', `${at}.name`, 'a tag name such as AzureCloud.westeurope');
      const props = tag.properties;
      if (!isObject(props)) return v.problem(`${at}.properties`, props === undefined ? 'is missing' : `is ${describe(props)}`, 'an object with region and addressPrefixes');
      const region = v.string(props, 'region', `${at}.properties.region`, 'a region name such as westeurope, or "" for global');
      v.array(props, 'addressPrefixes', `${at}.properties.addressPrefixes`, 'a list of prefixes')?.forEach((p, k) => {
        entry(`${at}.properties.addressPrefixes[${k}]`, p, null, region === '' ? null : region);
      });
    });
  }
  v.throwIfAny(file);

  const distinct = { 4: new Set<string>(), 6: new Set<string>() };
  let global = 0;
  let unknownRegion = 0;
  const unknown = new Set<string>();
  for (const e of entries) {
    if (e.region === null) global++;
    else if (e.info === undefined) {
      unknownRegion++;
      unknown.add(e.region);
    } else distinct[e.family].add(e.prefix);
  }
  const info: RangeFileInfo = Object.freeze({
    file,
    format: kind,
    provider,
    version,
    created,
    prefixes: Object.freeze({ ipv4: distinct[4].size, ipv6: distinct[6].size }),
    skipped: Object.freeze({ global, unknownRegion }),
    unknownRegions: Object.freeze([...unknown].sort()),
  });
  return { info, entries };
}

/** All loaded range files as one table. */
export class CloudRanges {
  private constructor(
    private readonly table: PrefixTable<CloudRange>,
    readonly files: readonly RangeFileInfo[],
  ) {}

  static readonly EMPTY = CloudRanges.fromParsed([]);

  /** Read and parse files (format detected from content unless given). Throws RangeFileError / the read error, naming the file. */
  static async load(files: readonly (string | { readonly path: string; readonly format?: RangeFormat })[]): Promise<CloudRanges> {
    const parsed = await Promise.all(
      files.map(async (f) => {
        const path = typeof f === 'string' ? f : f.path;
        let text: string;
        try {
          text = await readFile(path, 'utf8');
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          throw new RangeFileError(path, [{ path: '(file)', message: code === 'ENOENT' ? 'file not found' : (err as Error).message, expected: 'a readable JSON file' }]);
        }
        return parseRangeFile(text, path, typeof f === 'string' ? undefined : f.format);
      }),
    );
    return CloudRanges.fromParsed(parsed);
  }

  /**
   * Merge parsed files. A prefix listed under several regions keeps all of
   * them (the policy then sees a conflict, not a guess); a global or unknown
   * listing counts only where no file places the same prefix in a region
   * (Azure lists every regional prefix again under the global AzureCloud tag).
   */
  static fromParsed(parsed: readonly ParsedRangeFile[]): CloudRanges {
    // Per prefix: its places, usually one, so a small array rather than a Map.
    const byPrefix = new Map<string, { places: [string, RegionInfo | undefined][]; placed: boolean }>();
    for (const { info, entries } of parsed) {
      for (const e of entries) {
        let slot = byPrefix.get(e.prefix);
        if (!slot) byPrefix.set(e.prefix, (slot = { places: [], placed: false }));
        const place = `${info.provider}:${e.region ?? (info.format === 'aws' ? 'GLOBAL' : 'global')}`;
        if (e.info !== undefined && !slot.placed) {
          slot.places = [];
          slot.placed = true;
        }
        if ((e.info !== undefined || !slot.placed) && !slot.places.some(([p]) => p === place)) slot.places.push([place, e.info]);
      }
    }
    // Prefixes share a handful of place sets: build each set's signals once.
    const shared = new Map<string, { places: readonly string[]; signals: readonly Signal[] }>();
    const table = new PrefixTable<CloudRange>();
    for (const [prefix, { places }] of byPrefix) {
      const key = places.map(([p]) => p).join(' ');
      let set = shared.get(key);
      if (!set) {
        const signals: Signal[] = [];
        for (const [place, region] of places) {
          if (region === undefined) {
            signals.push(Object.freeze({ source: 'network:cloud-range', value: place, jurisdiction: null }));
          } else {
            for (const jurisdiction of region.jurisdictions) {
              signals.push(Object.freeze({ source: 'network:cloud-range', value: place, jurisdiction, region: region.id }));
            }
          }
        }
        set = { places: Object.freeze(places.map(([p]) => p)), signals: Object.freeze(signals) };
        shared.set(key, set);
      }
      table.add(prefix, Object.freeze({ prefix, places: set.places, signals: set.signals }));
    }
    return new CloudRanges(table, Object.freeze(parsed.map((p) => p.info)));
  }

  /** Distinct prefixes in the table, markers included. */
  get size(): number {
    return this.table.size;
  }

  lookup(address: string): CloudRange | undefined {
    return this.table.lookup(address);
  }
}

function detectFormat(doc: Record<string, unknown>): RangeFormat | null {
  if ('values' in doc && 'changeNumber' in doc) return 'azure';
  if ('creationTime' in doc) return 'gcp';
  if ('createDate' in doc || 'ipv6_prefixes' in doc) return 'aws';
  return null;
}

/** Collects problems with their JSON paths, up to a limit. */
class Validator {
  private readonly problems: RangeProblem[] = [];
  private more = 0;

  problem(path: string, message: string, expected: string): void {
    if (this.problems.length < MAX_PROBLEMS) this.problems.push({ path, message, expected });
    else this.more++;
  }

  string(obj: Record<string, unknown>, key: string, path: string, expected: string): string | undefined {
    const value = obj[key];
    if (typeof value === 'string') return value;
    this.problem(path, value === undefined ? 'is missing' : `is ${describe(value)}`, expected);
    return undefined;
  }

  array(obj: Record<string, unknown>, key: string, path: string, expected: string): unknown[] | undefined {
    const value = obj[key];
    if (Array.isArray(value)) return value;
    this.problem(path, value === undefined ? 'is missing' : `is ${describe(value)}`, expected);
    return undefined;
  }

  throwIfAny(file: string): void {
    if (this.problems.length > 0) throw new RangeFileError(file, this.problems, this.more);
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'string') return `a string (${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)})`;
  return `${typeof value === 'number' ? 'a number' : `a ${typeof value}`} (${String(value)})`;
}
