import { watch, readFileSync, statSync, type FSWatcher, type Stats } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { basename, dirname } from 'node:path';
import { Reader, type Response } from 'maxmind';
import { isIsoAlpha2 } from './iso3166.js';
import { canonicalAddress } from './prefix-table.js';
import type { Signal } from './signals.js';

/**
 * GeoIP country lookups from a MaxMind DB (.mmdb) file.
 *
 * Two schemas are read, chosen by the file's `database_type`:
 *  - MaxMind GeoIP2/GeoLite2 Country and City (and DB-IP's compatible files):
 *    `country.iso_code`, where the network is located. Never
 *    `registered_country`, which is where the owner is registered: a
 *    US company's Frankfurt servers are in DE.
 *  - ip-location-db ('country ipvAll', ...), including the bundled CC0
 *    geo-whois-asn-country database: `country_code`.
 *
 * A database is validated before use (metadata, the whole search tree's
 * record values, a sample of decoded records), so a corrupt or truncated
 * file fails at startup with a clear error, and on reload is refused while
 * the last good database keeps serving.
 */
export type GeoIpSchema = 'maxmind' | 'ip-location-db';

export interface GeoIpOptions {
  /** An .mmdb file; default: the bundled CC0 geo-whois-asn-country database. */
  path?: string;
  /** Override schema detection from `database_type`. */
  schema?: GeoIpSchema;
  /** Reload when the file changes (watching its directory, so atomic renames are seen). Default false. */
  watch?: boolean;
  /** Quiet time after the last change event before reloading, ms. Default 500. */
  debounceMs?: number;
  onReload?: (info: GeoIpInfo) => void;
  onReloadError?: (err: Error) => void;
}

export interface GeoIpInfo {
  readonly path: string;
  /** The file's raw `database_type` (e.g. 'country ipvAll'); `name` and `label` say it for people and metrics. */
  readonly databaseType: string;
  /** For people (readiness): e.g. 'GeoIP country (ip-location-db, IPv4+IPv6)'. */
  readonly name: string;
  /** For a metric label: lowercase, one of a fixed set, e.g. 'ip-location-db-country-ipv4-ipv6'. */
  readonly label: string;
  readonly schema: GeoIpSchema;
  /** metadata build_epoch: feeds a database-age gauge. */
  readonly buildEpoch: Date;
  readonly ipVersion: 4 | 6;
  readonly nodeCount: number;
  /** Bumped on every successful reload; caches keyed by it go stale with the data. */
  readonly generation: number;
}

export interface GeoIpCounters {
  /** Successful reloads (not counting the first load). */
  reloads: number;
  /** Reloads refused (unreadable or invalid file); the previous database stayed. */
  reloadFailures: number;
}

export class GeoIpError extends Error {
  readonly code = 'RESIDENCY_ERR_GEOIP_INVALID';
  constructor(
    readonly file: string,
    reason: string,
  ) {
    super(`${file}: ${reason}`);
    this.name = 'GeoIpError';
  }
}

interface Loaded {
  readonly reader: Reader<Response>;
  readonly info: GeoIpInfo;
  readonly country: (record: Response | null) => string | null;
  readonly identity: string;
}

export class GeoIp {
  readonly counters: GeoIpCounters = { reloads: 0, reloadFailures: 0 };
  /** The reason the last reload was refused, until one succeeds. */
  lastError: Error | null = null;
  private current: Loaded;
  private watcher: FSWatcher | null = null;
  private debounce: NodeJS.Timeout | null = null;
  private reloading: Promise<boolean> | null = null;
  private again = false;
  private closed = false;

  private constructor(
    private readonly path: string,
    private readonly options: GeoIpOptions,
    first: Loaded,
  ) {
    this.current = first;
    if (options.watch) this.startWatching();
  }

  /** The bundled CC0 database (ip-location-db geo-whois-asn-country). */
  static defaultPath(): string {
    return createRequire(import.meta.url).resolve('@ip-location-db/geo-whois-asn-country-mmdb/geo-whois-asn-country.mmdb');
  }

  /** Open and validate. Throws GeoIpError naming the file and what is wrong. */
  static async open(options: GeoIpOptions = {}): Promise<GeoIp> {
    const path = options.path ?? GeoIp.defaultPath();
    let bytes: Buffer;
    let st: Stats;
    try {
      st = await stat(path);
      const shared = sharedLoad(path, identityOf(st), options.schema);
      if (shared !== undefined) return new GeoIp(path, options, shared);
      [bytes, st] = await Promise.all([readFile(path), stat(path)]);
    } catch (err) {
      throw new GeoIpError(path, readFailure(err));
    }
    return new GeoIp(path, options, shareLoad(await loadDatabaseAsync(bytes, path, options.schema, 0, identityOf(st)), options.schema));
  }

  static openSync(options: GeoIpOptions = {}): GeoIp {
    const path = options.path ?? GeoIp.defaultPath();
    let bytes: Buffer;
    let st: Stats;
    try {
      st = statSync(path);
      const shared = sharedLoad(path, identityOf(st), options.schema);
      if (shared !== undefined) return new GeoIp(path, options, shared);
      bytes = readFileSync(path);
      st = statSync(path);
    } catch (err) {
      throw new GeoIpError(path, readFailure(err));
    }
    return new GeoIp(path, options, shareLoad(loadDatabase(bytes, path, options.schema, 0, identityOf(st)), options.schema));
  }

  get info(): GeoIpInfo {
    return this.current.info;
  }

  get generation(): number {
    return this.current.info.generation;
  }

  /** The located country (ISO 3166-1 alpha-2) of an address, or null when the database has none or it is not an address. */
  country(address: string): string | null {
    const canonical = canonicalAddress(address);
    // Mapped IPv4 is looked up as IPv4: not every database aliases ::ffff:0:0/96.
    if (canonical === null || (this.current.info.ipVersion === 4 && canonical.includes(':'))) return null;
    const { reader, country } = this.current;
    return country(reader.get(canonical));
  }

  /** The `network:geoip` signal for an address: value = the address, jurisdiction = the country or null. */
  signal(address: string): Signal {
    return { source: 'network:geoip', value: address, jurisdiction: this.country(address) };
  }

  /**
   * Re-read the file now (the watcher calls this; so may SIGHUP). Resolves
   * true when the database in use is the file's current content, false when
   * the file was refused and the previous database kept.
   */
  reload(): Promise<boolean> {
    if (this.reloading) {
      this.again = true;
      return this.reloading;
    }
    this.reloading = this.doReload().finally(() => {
      this.reloading = null;
      if (this.again && !this.closed) {
        this.again = false;
        void this.reload();
      }
    });
    return this.reloading;
  }

  close(): void {
    this.closed = true;
    this.watcher?.close();
    this.watcher = null;
    if (this.debounce) clearTimeout(this.debounce);
  }

  private async doReload(): Promise<boolean> {
    try {
      const st = await stat(this.path);
      // Unrelated events in the directory, or a touch without new content: nothing to do.
      if (identityOf(st) === this.current.identity) return true;
      const bytes = await readFile(this.path);
      const next = await loadDatabaseAsync(bytes, this.path, this.options.schema, this.current.info.generation + 1, identityOf(st));
      if (this.closed) return false;
      this.current = next;
      this.lastError = null;
      this.counters.reloads++;
      this.options.onReload?.(next.info);
      return true;
    } catch (err) {
      const error = err instanceof GeoIpError ? err : new GeoIpError(this.path, readFailure(err));
      this.counters.reloadFailures++;
      this.lastError = error;
      this.options.onReloadError?.(error);
      return false;
    }
  }

  private startWatching(): void {
    const file = basename(this.path);
    // The directory, not the file: a watch on the file follows the old inode
    // after an atomic rename (and Kubernetes swaps a `..data` symlink).
    this.watcher = watch(dirname(this.path), { persistent: false }, (_event, name) => {
      if (name !== null && name !== file && !name.startsWith('..')) return;
      if (this.debounce) clearTimeout(this.debounce);
      this.debounce = setTimeout(() => {
        this.debounce = null;
        void this.reload();
      }, this.options.debounceMs ?? 500);
      this.debounce.unref();
    });
    this.watcher.on('error', (err) => {
      this.counters.reloadFailures++;
      this.lastError = new GeoIpError(this.path, `watching for changes failed: ${err.message}`);
      this.options.onReloadError?.(this.lastError);
    });
  }
}

/**
 * Databases already validated in this process, by file identity: a second
 * instance on the same unchanged file (a test suite starting many proxies,
 * explain after serve) shares the reader instead of reading and walking
 * ~8 MB again. Weak: the data goes when the last instance using it does.
 */
const SHARED = new Map<string, WeakRef<Loaded>>();

function sharedKey(path: string, identity: string, schema: GeoIpSchema | undefined): string {
  return `${path}\0${identity}\0${schema ?? ''}`;
}

function sharedLoad(path: string, identity: string, schema: GeoIpSchema | undefined): Loaded | undefined {
  return SHARED.get(sharedKey(path, identity, schema))?.deref();
}

function shareLoad(loaded: Loaded, schema: GeoIpSchema | undefined): Loaded {
  for (const [key, ref] of SHARED) if (ref.deref() === undefined) SHARED.delete(key);
  SHARED.set(sharedKey(loaded.info.path, loaded.identity, schema), new WeakRef(loaded));
  return loaded;
}

function identityOf(st: Stats): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
}

function readFailure(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' ? 'file not found' : `cannot be read: ${(err as Error).message}`;
}

const MARKER = Buffer.from('abcdef4d61784d696e642e636f6d', 'hex');
// The spec bounds the metadata section at 128 KiB.
const METADATA_MAX = 128 * 1024;
// Records decoded as a sample of the data section.
const SAMPLE_RECORDS = 32;
// Nodes (or tree steps) checked between yields to the event loop: a few ms of work.
const SLICE = 0xffff;

/** Detect the schema from `database_type`; null for databases without a usable country. */
export function detectSchema(databaseType: string): GeoIpSchema | null {
  if (/^(GeoIP2|GeoLite2)-(Country|City|Enterprise)\b/.test(databaseType)) return 'maxmind';
  if (/^DBIP-(Country|City|Location)/.test(databaseType)) return 'maxmind';
  if (/^(country|city)\b/i.test(databaseType)) return 'ip-location-db';
  return null;
}

const VENDORS: Record<string, string> = { geoip2: 'MaxMind GeoIP2', geolite2: 'MaxMind GeoLite2', dbip: 'DB-IP' };
const COVERAGE: Record<string, { name: string; label: string }> = {
  '4': { name: 'IPv4', label: 'ipv4' },
  '6': { name: 'IPv6', label: 'ipv6' },
  all: { name: 'IPv4+IPv6', label: 'ipv4-ipv6' },
};

/**
 * A database's `name` and metric `label` from its `database_type`. The
 * label never carries the file's own text, so a metric's values stay few.
 */
export function describeDatabase(databaseType: string, schema: GeoIpSchema): { name: string; label: string } {
  const ild = /^(country|city) ipv(4|6|all)$/i.exec(databaseType);
  if (ild) {
    const kind = ild[1]!.toLowerCase();
    const ip = COVERAGE[ild[2]!.toLowerCase()]!;
    return { name: `GeoIP ${kind} (ip-location-db, ${ip.name})`, label: `ip-location-db-${kind}-${ip.label}` };
  }
  const vendor = /^(GeoIP2|GeoLite2|DBIP)-(Country|City|Enterprise|Location)\b/i.exec(databaseType);
  if (vendor) {
    const [who, kind] = [vendor[1]!.toLowerCase(), vendor[2]!.toLowerCase()];
    return { name: `GeoIP ${kind} (${VENDORS[who]!})`, label: `${who}-${kind}` };
  }
  // Read with a forced schema: only that schema goes into the label.
  return { name: `GeoIP database ${JSON.stringify(databaseType)} (read as ${schema})`, label: `other-${schema}` };
}

const EXTRACT: Record<GeoIpSchema, (record: Response | null) => string | null> = {
  maxmind: (r) => iso((r as { country?: { iso_code?: unknown } } | null)?.country?.iso_code),
  'ip-location-db': (r) => iso((r as { country_code?: unknown } | null)?.country_code),
};

function iso(code: unknown): string | null {
  if (typeof code !== 'string' || code.length !== 2) return null;
  const upper = code.toUpperCase();
  return isIsoAlpha2(upper) ? upper : null;
}

/** Parse and validate a database image. Throws GeoIpError. */
export function loadDatabase(bytes: Buffer, path: string, schema: GeoIpSchema | undefined, generation: number, identity = ''): Loaded {
  const steps = loadSteps(bytes, path, schema, generation, identity);
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

/**
 * The same, yielding to the event loop between slices: validating a large
 * database walks every node (~0.1–0.3 s for the bundled one), which must not
 * stall requests while a reload runs.
 */
export async function loadDatabaseAsync(bytes: Buffer, path: string, schema: GeoIpSchema | undefined, generation: number, identity = ''): Promise<Loaded> {
  const steps = loadSteps(bytes, path, schema, generation, identity);
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

function* loadSteps(bytes: Buffer, path: string, schema: GeoIpSchema | undefined, generation: number, identity: string): Generator<void, Loaded, void> {
  const fail = (reason: string): never => {
    throw new GeoIpError(path, reason);
  };
  const marker = bytes.lastIndexOf(MARKER);
  if (marker < 0 || bytes.length - marker > METADATA_MAX + MARKER.length) {
    fail('is not a MaxMind DB file: no metadata marker (corrupt or truncated?)');
  }
  let reader: Reader<Response>;
  try {
    reader = new Reader<Response>(bytes);
  } catch (err) {
    return fail(`has unreadable metadata: ${(err as Error).message}`);
  }
  const m = reader.metadata;
  if (m.binaryFormatMajorVersion !== 2) fail(`has binary format version ${String(m.binaryFormatMajorVersion)} (expected 2)`);
  if (m.ipVersion !== 4 && m.ipVersion !== 6) fail(`has ip_version ${String(m.ipVersion)} (expected 4 or 6)`);
  if (!Number.isInteger(m.nodeCount) || m.nodeCount <= 0) fail(`has node_count ${String(m.nodeCount)} (expected a positive integer)`);
  if (typeof m.databaseType !== 'string') fail('has no database_type');
  if (Number.isNaN(m.buildEpoch.getTime())) fail('has no valid build_epoch');
  const chosen = schema ?? detectSchema(m.databaseType);
  if (chosen === null) {
    fail(`is a "${m.databaseType}" database, which has no country data (expected a GeoIP2/GeoLite2 Country or City database, or an ip-location-db country database)`);
  }
  const treeSize = m.searchTreeSize;
  const dataStart = treeSize + 16;
  if (dataStart > marker) fail(`is truncated: the search tree (${m.nodeCount} nodes) runs past the metadata`);
  for (let i = treeSize; i < dataStart; i++) if (bytes[i] !== 0) fail('is corrupt: no data section separator after the search tree');
  yield* verifyTree(bytes, m.nodeCount, m.recordSize, m.ipVersion === 4 ? 32 : 128, marker - dataStart, fail);

  const country = EXTRACT[chosen!];
  for (const address of sampleAddresses(bytes, m.nodeCount, m.recordSize, m.ipVersion === 4 ? 32 : 128)) {
    let record: Response | null;
    try {
      record = reader.get(address);
    } catch (err) {
      return fail(`is corrupt: the record for ${address} cannot be decoded (${(err as Error).message})`);
    }
    if (typeof record !== 'object' || record === null || Array.isArray(record)) fail(`is corrupt: the record for ${address} is not a map`);
    country(record);
  }
  const info: GeoIpInfo = Object.freeze({
    path,
    databaseType: m.databaseType,
    ...describeDatabase(m.databaseType, chosen!),
    schema: chosen!,
    buildEpoch: m.buildEpoch,
    ipVersion: m.ipVersion as 4 | 6,
    nodeCount: m.nodeCount,
    generation,
  });
  return { reader, info, country, identity };
}

type RecordReader = (bytes: Buffer, offset: number) => number;
const READERS: Record<number, readonly [RecordReader, RecordReader]> = {
  24: [(b, o) => (b[o]! << 16) | (b[o + 1]! << 8) | b[o + 2]!, (b, o) => (b[o + 3]! << 16) | (b[o + 4]! << 8) | b[o + 5]!],
  28: [
    (b, o) => ((b[o + 3]! & 0xf0) << 20) | (b[o]! << 16) | (b[o + 1]! << 8) | b[o + 2]!,
    (b, o) => ((b[o + 3]! & 0x0f) << 24) | (b[o + 4]! << 16) | (b[o + 5]! << 8) | b[o + 6]!,
  ],
  32: [(b, o) => b.readUInt32BE(o), (b, o) => b.readUInt32BE(o + 4)],
};

/**
 * Every record must name a node, "empty" (node_count), or a place inside the
 * data section; and every path from the root must end within the address
 * width. A cycle or an over-deep branch (MaxMind's broken-search-tree test
 * database has one) makes readers silently answer "not found".
 */
function* verifyTree(bytes: Buffer, nodeCount: number, recordSize: number, bits: number, dataSize: number, fail: (reason: string) => never): Generator<void, void, void> {
  const [left, right] = READERS[recordSize]!;
  const nodeBytes = recordSize / 4;
  for (let n = 0; n < nodeCount; n++) {
    if ((n & SLICE) === SLICE) yield;
    const o = n * nodeBytes;
    const l = left(bytes, o);
    const r = right(bytes, o);
    // Data offsets are record − node_count − 16; values just above node_count point into the separator.
    if ((l > nodeCount && (l - nodeCount - 16 < 0 || l - nodeCount - 16 >= dataSize)) || (r > nodeCount && (r - nodeCount - 16 < 0 || r - nodeCount - 16 >= dataSize))) {
      fail(`is corrupt: search tree node ${n} points outside the data section`);
    }
  }
  // Depth-first over the tree (a DAG where aliases share subtrees), memoising
  // each node's height; the stack never grows past `bits`, so this is
  // O(nodes) with typed arrays only.
  const height = new Uint8Array(nodeCount);
  const state = new Uint8Array(nodeCount); // 0 unseen, 1 on the current path, 2 done
  const stack = new Int32Array(bits);
  const phase = new Uint8Array(bits);
  let sp = 0;
  let steps = 0;
  stack[0] = 0;
  phase[0] = 0;
  state[0] = 1;
  while (sp >= 0) {
    if ((++steps & SLICE) === SLICE) yield;
    const n = stack[sp]!;
    if (phase[sp]! < 2) {
      const child = phase[sp] === 0 ? left(bytes, n * nodeBytes) : right(bytes, n * nodeBytes);
      phase[sp]!++;
      if (child >= nodeCount) continue;
      if (state[child] === 1) fail(`is corrupt: the search tree loops back to node ${child}`);
      if (state[child] === 2) {
        if (sp + 1 + height[child]! > bits) fail(`is corrupt: the search tree is deeper than ${bits} bits below node ${n}`);
        continue;
      }
      if (sp + 1 >= bits) fail(`is corrupt: the search tree is deeper than ${bits} bits below node ${n}`);
      sp++;
      stack[sp] = child;
      phase[sp] = 0;
      state[child] = 1;
    } else {
      const l = left(bytes, n * nodeBytes);
      const r = right(bytes, n * nodeBytes);
      height[n] = 1 + Math.max(l < nodeCount ? height[l]! : 0, r < nodeCount ? height[r]! : 0);
      state[n] = 2;
      sp--;
    }
  }
}

/** Addresses of the first few data records, depth first, for a decode check. */
function sampleAddresses(bytes: Buffer, nodeCount: number, recordSize: number, bits: number): string[] {
  const [left, right] = READERS[recordSize]!;
  const nodeBytes = recordSize / 4;
  const seen = new Set<number>();
  const out: string[] = [];
  const path = new Uint8Array(bits);
  const stack: { node: number; depth: number; side: 0 | 1 }[] = [{ node: 0, depth: 0, side: 0 }];
  let steps = 0;
  while (stack.length > 0 && out.length < SAMPLE_RECORDS && steps++ < 100_000) {
    const top = stack.pop()!;
    if (top.side === 0) stack.push({ ...top, side: 1 });
    path[top.depth] = top.side;
    const r = (top.side === 0 ? left : right)(bytes, top.node * nodeBytes);
    if (r < nodeCount) {
      if (top.depth + 1 < bits) stack.push({ node: r, depth: top.depth + 1, side: 0 });
    } else if (r > nodeCount && !seen.has(r)) {
      seen.add(r);
      for (let d = top.depth + 1; d < bits; d++) path[d] = 0;
      out.push(formatBits(path, bits));
    }
  }
  return out;
}

function formatBits(path: Uint8Array, bits: number): string {
  const word = (from: number, width: number) => {
    let v = 0;
    for (let i = 0; i < width; i++) v = v * 2 + path[from + i]!;
    return v;
  };
  if (bits === 32) return [0, 8, 16, 24].map((i) => word(i, 8)).join('.');
  const groups: string[] = [];
  for (let i = 0; i < 128; i += 16) groups.push(word(i, 16).toString(16));
  return groups.join(':');
}
