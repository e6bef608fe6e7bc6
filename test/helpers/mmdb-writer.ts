/**
 * A small MaxMind DB (MMDB 2.0) writer for tests: builds GeoIP databases in
 * memory so tests control every answer without shipping vendor files.
 * Spec: https://maxmind.github.io/MaxMind-DB/
 *
 *   [binary search tree][16 zero bytes][data section]["\xAB\xCD\xEFMaxMind.com"][metadata map]
 *
 * The tree has one node per bit of prefix; each node is two records (left =
 * bit 0, right = bit 1) of 24, 28 or 32 bits. A record holds a node number,
 * `node_count` for "no data", or `node_count + 16 + offset` for a value in
 * the data section. IPv4 networks in an IPv6 tree live under ::/96.
 */
import { parsePrefix } from '../../src/location/prefix-table.js';

export type MmdbValue =
  | string
  | number
  | boolean
  | bigint
  | Uint8Array
  | TypedValue
  | readonly MmdbValue[]
  | { readonly [key: string]: MmdbValue };

/** A number stored as a specific MMDB type (plain numbers become uint32, int32 or double). */
export interface TypedValue {
  readonly $mmdb: 'uint16' | 'uint32' | 'int32' | 'uint64' | 'uint128' | 'double' | 'float';
  readonly value: number | bigint;
}
export const uint16 = (value: number): TypedValue => ({ $mmdb: 'uint16', value });
export const uint64 = (value: number | bigint): TypedValue => ({ $mmdb: 'uint64', value });
export const float = (value: number): TypedValue => ({ $mmdb: 'float', value });

export interface MmdbOptions {
  /** metadata database_type, e.g. 'GeoIP2-Country' or 'country ipvAll'. */
  databaseType: string;
  ipVersion?: 4 | 6;
  recordSize?: 24 | 28 | 32;
  languages?: readonly string[];
  description?: Readonly<Record<string, string>>;
  /** Seconds since the epoch; fixed by default so output is reproducible. */
  buildEpoch?: number;
  /** Point ::ffff:0:0/96 at the IPv4 subtree, as MaxMind's own writer does. */
  aliasMappedIpv4?: boolean;
}

// ---------------------------------------------------------------------------
// Search tree
// ---------------------------------------------------------------------------

interface TreeNode {
  left: Child;
  right: Child;
}
interface DataRef {
  readonly key: string;
}
type Child = TreeNode | DataRef | null;

const isNode = (c: Child): c is TreeNode => c !== null && 'left' in c;

/**
 * Build the file. Networks are inserted in order; a later network overwrites
 * whatever an earlier one put under its prefix (so list general before specific).
 */
export function writeMmdb(networks: Iterable<readonly [cidr: string, value: MmdbValue]>, options: MmdbOptions): Buffer {
  const ipVersion = options.ipVersion ?? 6;
  const recordSize = options.recordSize ?? 28;
  const treeBits = ipVersion === 4 ? 32 : 128;
  const root: TreeNode = { left: null, right: null };
  const values = new Map<string, MmdbValue>();

  for (const [cidr, value] of networks) {
    const p = parsePrefix(cidr);
    if (p === null) throw new Error(`mmdb-writer: "${cidr}" is not a CIDR`);
    if (p.family === 6 && ipVersion === 4) throw new Error(`mmdb-writer: ${cidr} in an IPv4 database`);
    // parsePrefix folds ::ffff:a.b.c.d/n into IPv4; IPv4 in an IPv6 tree sits at ::a.b.c.d.
    const length = p.family === 4 && ipVersion === 6 ? p.length + 96 : p.length;
    const key = valueKey(value);
    values.set(key, value);
    insert(root, p.start, length, treeBits, { key });
  }
  if (options.aliasMappedIpv4 && ipVersion === 6) {
    const v4 = childAt(root, 0n, 96, 128);
    if (v4 !== null) insert(root, 0xffffn << 32n, 96, 128, v4);
  }

  // Number the nodes breadth first; the root must be node 0.
  const numbers = new Map<TreeNode, number>();
  const order: TreeNode[] = [root];
  numbers.set(root, 0);
  for (let i = 0; i < order.length; i++) {
    for (const c of [order[i]!.left, order[i]!.right]) {
      if (isNode(c) && !numbers.has(c)) {
        numbers.set(c, order.length);
        order.push(c);
      }
    }
  }
  const nodeCount = order.length;

  // Data section: each distinct value once; maps reuse nothing (pointers are optional).
  const chunks: Buffer[] = [];
  const offsets = new Map<string, number>();
  let size = 0;
  for (const [key, value] of values) {
    const bytes = encode(value);
    offsets.set(key, size);
    chunks.push(bytes);
    size += bytes.length;
  }
  const data = Buffer.concat(chunks);

  const recordOf = (c: Child): number => {
    if (c === null) return nodeCount;
    if (isNode(c)) return numbers.get(c)!;
    return nodeCount + 16 + offsets.get(c.key)!;
  };
  const max = 2 ** recordSize - 1;
  const nodeBytes = recordSize / 4;
  const tree = Buffer.alloc(nodeCount * nodeBytes);
  order.forEach((node, i) => {
    const l = recordOf(node.left);
    const r = recordOf(node.right);
    if (l > max || r > max) throw new Error(`mmdb-writer: record value ${Math.max(l, r)} does not fit in ${recordSize} bits`);
    const o = i * nodeBytes;
    if (recordSize === 24) {
      tree.writeUIntBE(l, o, 3);
      tree.writeUIntBE(r, o + 3, 3);
    } else if (recordSize === 28) {
      tree.writeUIntBE(l & 0xffffff, o, 3);
      tree[o + 3] = (((l >>> 24) & 0x0f) << 4) | ((r >>> 24) & 0x0f);
      tree.writeUIntBE(r & 0xffffff, o + 4, 3);
    } else {
      tree.writeUInt32BE(l, o);
      tree.writeUInt32BE(r, o + 4);
    }
  });

  const metadata = encode({
    node_count: { $mmdb: 'uint32', value: nodeCount },
    record_size: uint16(recordSize),
    ip_version: uint16(ipVersion),
    database_type: options.databaseType,
    languages: [...(options.languages ?? ['en'])],
    binary_format_major_version: uint16(2),
    binary_format_minor_version: uint16(0),
    build_epoch: uint64(options.buildEpoch ?? 1_700_000_000),
    description: { ...(options.description ?? { en: `test database (${options.databaseType})` }) },
  });
  return Buffer.concat([tree, Buffer.alloc(16), data, METADATA_MARKER, metadata]);
}

export const METADATA_MARKER = Buffer.from('abcdef4d61784d696e642e636f6d', 'hex');

function insert(root: TreeNode, start: bigint, length: number, bits: number, leaf: Child): void {
  if (length === 0) {
    root.left = leaf;
    root.right = leaf;
    return;
  }
  let node = root;
  for (let depth = 0; depth < length; depth++) {
    const bit = Number((start >> BigInt(bits - 1 - depth)) & 1n);
    const side = bit === 0 ? 'left' : 'right';
    if (depth === length - 1) {
      node[side] = leaf;
      return;
    }
    const next = node[side];
    if (isNode(next)) {
      node = next;
    } else {
      // Empty, or a shorter network's data: split it so both halves keep it.
      const split: TreeNode = { left: next, right: next };
      node[side] = split;
      node = split;
    }
  }
}

function childAt(root: TreeNode, start: bigint, length: number, bits: number): Child {
  let c: Child = root;
  for (let depth = 0; depth < length; depth++) {
    if (!isNode(c)) return c;
    c = Number((start >> BigInt(bits - 1 - depth)) & 1n) === 0 ? c.left : c.right;
  }
  return c;
}

// ---------------------------------------------------------------------------
// Data section encoding
// ---------------------------------------------------------------------------

const TYPE = { utf8: 2, double: 3, bytes: 4, uint16: 5, uint32: 6, map: 7, int32: 8, uint64: 9, uint128: 10, array: 11, boolean: 14, float: 15 } as const;

/** Control byte(s): type in the top 3 bits (0 = extended, next byte = type − 7), then the size with its extension bytes. */
function control(type: number, size: number): Buffer {
  let first = type <= 7 ? type << 5 : 0;
  let ext: number[];
  if (size < 29) {
    first |= size;
    ext = [];
  } else if (size < 285) {
    first |= 29;
    ext = [size - 29];
  } else if (size < 65_821) {
    first |= 30;
    ext = [(size - 285) >> 8, (size - 285) & 0xff];
  } else {
    first |= 31;
    const v = size - 65_821;
    ext = [(v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff];
  }
  return Buffer.from([first, ...(type > 7 ? [type - 7] : []), ...ext]);
}

function unsigned(type: number, value: bigint, maxBytes: number): Buffer {
  const bytes: number[] = [];
  for (let v = value; v > 0n; v >>= 8n) bytes.unshift(Number(v & 0xffn));
  if (value < 0n || bytes.length > maxBytes) throw new Error(`mmdb-writer: ${value} does not fit the type`);
  return Buffer.concat([control(type, bytes.length), Buffer.from(bytes)]);
}

export function encode(value: MmdbValue): Buffer {
  if (typeof value === 'string') {
    const bytes = Buffer.from(value, 'utf8');
    return Buffer.concat([control(TYPE.utf8, bytes.length), bytes]);
  }
  if (typeof value === 'boolean') return control(TYPE.boolean, value ? 1 : 0);
  if (typeof value === 'bigint') return value < 1n << 64n ? unsigned(TYPE.uint64, value, 8) : unsigned(TYPE.uint128, value, 16);
  if (typeof value === 'number') {
    if (Number.isInteger(value) && value >= 0 && value <= 0xffffffff) return unsigned(TYPE.uint32, BigInt(value), 4);
    if (Number.isInteger(value) && value >= -0x80000000 && value < 0) return encode({ $mmdb: 'int32', value });
    return encode({ $mmdb: 'double', value });
  }
  if (value instanceof Uint8Array) return Buffer.concat([control(TYPE.bytes, value.length), value]);
  if (Array.isArray(value)) return Buffer.concat([control(TYPE.array, value.length), ...value.map(encode)]);
  if (isTyped(value)) {
    switch (value.$mmdb) {
      case 'uint16':
        return unsigned(TYPE.uint16, BigInt(value.value), 2);
      case 'uint32':
        return unsigned(TYPE.uint32, BigInt(value.value), 4);
      case 'uint64':
        return unsigned(TYPE.uint64, BigInt(value.value), 8);
      case 'uint128':
        return unsigned(TYPE.uint128, BigInt(value.value), 16);
      case 'int32': {
        const b = Buffer.alloc(4);
        b.writeInt32BE(Number(value.value));
        return Buffer.concat([control(TYPE.int32, 4), b]);
      }
      case 'double': {
        const b = Buffer.alloc(8);
        b.writeDoubleBE(Number(value.value));
        return Buffer.concat([control(TYPE.double, 8), b]);
      }
      case 'float': {
        const b = Buffer.alloc(4);
        b.writeFloatBE(Number(value.value));
        return Buffer.concat([control(TYPE.float, 4), b]);
      }
    }
  }
  const entries = Object.entries(value as Record<string, MmdbValue>);
  return Buffer.concat([control(TYPE.map, entries.length), ...entries.flatMap(([k, v]) => [encode(k), encode(v)])]);
}

function isTyped(value: object): value is TypedValue {
  return '$mmdb' in value;
}

/** Identity of a value for de-duplication in the data section (type-aware, unlike JSON). */
function valueKey(value: MmdbValue): string {
  return encode(value).toString('base64');
}

// ---------------------------------------------------------------------------
// Ready-made test databases
// ---------------------------------------------------------------------------

/** Loopback test addresses with known answers, in both schemas. */
export const TEST_COUNTRIES: readonly { readonly cidr: string; readonly country: string | null; readonly registered: string }[] = [
  { cidr: '127.0.0.2/32', country: 'US', registered: 'US' },
  { cidr: '127.0.0.3/32', country: 'DE', registered: 'DE' },
  // Located in Ireland, registered to a US company: country must win.
  { cidr: '127.0.0.4/32', country: 'IE', registered: 'US' },
  // Registered only (no located country): must not be used at all.
  { cidr: '127.0.0.5/32', country: null, registered: 'US' },
  { cidr: '::2/128', country: 'FR', registered: 'FR' },
];

/** ip-location-db style: `{ country_code }`, database_type 'country ipvAll'. */
export function ipLocationDbCountry(overrides: Partial<Record<string, string>> = {}, options: Partial<MmdbOptions> = {}): Buffer {
  return writeMmdb(
    TEST_COUNTRIES.filter((t) => t.country !== null).map((t) => [t.cidr, { country_code: overrides[t.cidr] ?? t.country! }] as const),
    { databaseType: 'country ipvAll', languages: [], recordSize: 24, ...options },
  );
}

/** MaxMind GeoIP2/GeoLite2 style: `{ country: { iso_code }, registered_country: { iso_code } }`. */
export function maxmindCountry(overrides: Partial<Record<string, string>> = {}, options: Partial<MmdbOptions> = {}): Buffer {
  return writeMmdb(
    TEST_COUNTRIES.map((t) => {
      const country = overrides[t.cidr] ?? t.country;
      const record: Record<string, MmdbValue> = {
        continent: { code: 'EU', geoname_id: 6255148, names: { en: 'Europe' } },
        registered_country: { geoname_id: 1, iso_code: t.registered, names: { en: t.registered } },
      };
      if (country !== null) record.country = { geoname_id: 2, iso_code: country, names: { en: country } };
      return [t.cidr, record] as const;
    }),
    { databaseType: 'GeoIP2-Country', aliasMappedIpv4: true, ...options },
  );
}
