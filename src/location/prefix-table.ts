/**
 * Longest-prefix match over IPv4 and IPv6, generic in its value.
 *
 * CIDR blocks are either nested or disjoint, so a set of prefixes flattens
 * into sorted, non-overlapping segments where each segment carries the value
 * of the longest prefix covering it. A lookup reads a 65,536-entry index on
 * the address's top 16 bits, then binary-searches the few segments of that
 * /16 in a typed array: no per-lookup allocation, little pointer chasing,
 * memory proportional to the number of prefixes rather than to prefix
 * length × count as in a bit trie. Building is lazy: the first lookup after
 * an `add` flattens the table (done once at load in practice).
 *
 * IPv4-mapped IPv6 (`::ffff:1.2.3.4`) is IPv4 on both sides: a lookup of a
 * mapped address searches the IPv4 table, and an added `::ffff:0:0/96`
 * sub-prefix lands there too. Other IPv6 prefixes never match IPv4
 * addresses (`::/0` covers all of IPv6, not IPv4).
 */

export interface PrefixMatch<V> {
  /** The matching prefix, canonical form ('10.20.0.0/16', '2001:db8::/32'). */
  readonly prefix: string;
  readonly value: V;
}

export type ParsedAddress = { readonly family: 4; readonly value: number } | { readonly family: 6; readonly words: readonly [number, number, number, number] };

interface Entry<V> {
  readonly family: 4 | 6;
  /** First address: a number for IPv4, a 128-bit bigint for IPv6 (bigint only at build time). */
  readonly start: number | bigint;
  readonly length: number;
  value: V;
  /** Canonical text, made on first use (tables of 100k prefixes should not format them all at load). */
  text: string | null;
}

// Scratch buffers for parsing: lookups are synchronous, so they are never shared.
const scratch = new Uint32Array(4);
const groupScratch = new Uint16Array(8);

export class PrefixTable<V> {
  // IPv4 keys are numbers (start × 64 + length), IPv6 keys strings: no bigint or formatting per add.
  private readonly byKey = new Map<number | string, Entry<V>>();
  private compiled: Compiled<V> | null = null;

  /** Number of distinct prefixes. */
  get size(): number {
    return this.byKey.size;
  }

  /**
   * Adds a prefix ('10.0.0.0/8', '2001:db8::/32', a bare address as /32 or
   * /128). Host bits are masked off. Adding an identical prefix again
   * replaces its value, like Map.set. Throws on anything that is not a CIDR.
   */
  add(cidr: string, value: V): void {
    const key = prefixKey(cidr);
    if (key === null) throw new TypeError(`"${cidr}" is not a CIDR (expected an address/prefix such as 10.20.0.0/16 or 2001:db8::/32)`);
    const existing = this.byKey.get(key);
    if (existing) {
      existing.value = value;
    } else if (typeof key === 'number') {
      this.byKey.set(key, { family: 4, start: Math.floor(key / 64), length: key % 64, value, text: null });
    } else {
      const [w0, w1, w2, w3] = scratch;
      const start = (BigInt(w0!) << 96n) | (BigInt(w1!) << 64n) | (BigInt(w2!) << 32n) | BigInt(w3!);
      this.byKey.set(key, { family: 6, start, length: Number(key.slice(key.indexOf('/') + 1)), value, text: null });
    }
    this.compiled = null;
  }

  /** The value of the exact prefix, if it was added (not a longest-prefix match). */
  get(cidr: string): V | undefined {
    const key = prefixKey(cidr);
    return key === null ? undefined : this.byKey.get(key)?.value;
  }

  /** The value of the longest prefix containing the address; undefined when none does or the text is not an address. */
  lookup(address: string): V | undefined {
    const i = this.find(address);
    return i < 0 ? undefined : this.compiled!.entries[i]!.value;
  }

  /** Like lookup, with the matching prefix. */
  match(address: string): PrefixMatch<V> | undefined {
    const i = this.find(address);
    if (i < 0) return undefined;
    const e = this.compiled!.entries[i]!;
    return { prefix: textOf(e), value: e.value };
  }

  *entries(): IterableIterator<PrefixMatch<V>> {
    for (const e of this.byKey.values()) yield { prefix: textOf(e), value: e.value };
  }

  private find(address: string): number {
    const c = this.compiled ?? (this.compiled = compile([...this.byKey.values()]));
    if (address.indexOf(':') === -1) {
      const v4 = parseIPv4(address, 0, address.length);
      return v4 < 0 ? -1 : search4(c, v4);
    }
    if (!parseIPv6(address, scratch)) return -1;
    if (scratch[0] === 0 && scratch[1] === 0 && scratch[2] === 0xffff) return search4(c, scratch[3]!);
    return search6(c, scratch[0]!, scratch[1]!, scratch[2]!, scratch[3]!);
  }
}

function textOf(e: Entry<unknown>): string {
  return (e.text ??= formatPrefix(e.family, BigInt(e.start), e.length));
}

/**
 * The map key of a CIDR, host bits masked: a number for IPv4 (mapped IPv6
 * /96+ included), a string for IPv6 with the masked words left in `scratch`.
 */
function prefixKey(cidr: string): number | string | null {
  const slash = cidr.indexOf('/');
  const end = slash === -1 ? cidr.length : slash;
  let length = -1;
  if (slash !== -1) {
    const digits = cidr.length - slash - 1;
    if (digits < 1 || digits > 3) return null;
    length = 0;
    for (let i = slash + 1; i < cidr.length; i++) {
      const d = cidr.charCodeAt(i) - 48;
      if (d < 0 || d > 9) return null;
      length = length * 10 + d;
    }
  }
  if (cidr.lastIndexOf(':', end) === -1) {
    const v = parseIPv4(cidr, 0, end);
    if (v < 0 || length > 32) return null;
    if (length < 0) length = 32;
    return maskV4(v, length) * 64 + length;
  }
  if (!parseIPv6(slash === -1 ? cidr : cidr.slice(0, slash), scratch)) return null;
  if (length > 128) return null;
  if (length < 0) length = 128;
  if (length >= 96 && scratch[0] === 0 && scratch[1] === 0 && scratch[2] === 0xffff) {
    return maskV4(scratch[3]!, length - 96) * 64 + (length - 96);
  }
  for (let w = 0; w < 4; w++) {
    const keep = Math.min(Math.max(length - 32 * w, 0), 32);
    scratch[w] = keep === 0 ? 0 : keep === 32 ? scratch[w]! : (scratch[w]! & (0xffffffff << (32 - keep))) >>> 0;
  }
  return `${scratch[0]},${scratch[1]},${scratch[2]},${scratch[3]}/${length}`;
}

function maskV4(v: number, length: number): number {
  return length === 0 ? 0 : (v & (0xffffffff << (32 - length))) >>> 0;
}

interface Compiled<V> {
  readonly entries: readonly Entry<V>[];
  readonly starts4: Uint32Array;
  readonly values4: Int32Array;
  /** Four 32-bit words per segment, most significant first. */
  readonly starts6: Uint32Array;
  readonly values6: Int32Array;
  /** First segment in each /16 (by the top 16 bits), so a search touches one bucket. */
  readonly index4: Int32Array;
  readonly index6: Int32Array;
}

function compile<V>(entries: Entry<V>[]): Compiled<V> {
  const v4 = flatten(entries, 4, 32);
  const v6 = flatten(entries, 6, 128);
  const starts4 = Uint32Array.from(v4.starts as number[]);
  const starts6 = new Uint32Array(v6.starts.length * 4);
  (v6.starts as bigint[]).forEach((s, i) => {
    for (let w = 0; w < 4; w++) starts6[i * 4 + w] = Number((s >> BigInt(96 - 32 * w)) & 0xffffffffn);
  });
  return {
    entries,
    starts4,
    values4: Int32Array.from(v4.values),
    starts6,
    values6: Int32Array.from(v6.values),
    index4: bucketIndex(starts4, 1),
    index6: bucketIndex(starts6, 4),
  };
}

/** index[b] = the first segment whose start has top 16 bits ≥ b; index[65536] = the count. */
function bucketIndex(starts: Uint32Array, stride: number): Int32Array {
  const index = new Int32Array(65537);
  const n = starts.length / stride;
  let i = 0;
  for (let b = 0; b <= 65536; b++) {
    while (i < n && starts[i * stride]! >>> 16 < b) i++;
    index[b] = i;
  }
  return index;
}

/**
 * Sweep the prefixes of one family in address order (shorter first at equal
 * starts), keeping a stack of the prefixes still open. Each opening and each
 * closing starts a segment; the segment's value is the innermost open prefix,
 * or -1 for a gap. Equal neighbours merge. IPv4 runs on numbers, IPv6 on bigints.
 */
function flatten<V>(all: readonly Entry<V>[], family: 4 | 6, bits: number): { starts: (number | bigint)[]; values: number[] } {
  const order = all.map((_, i) => i).filter((i) => all[i]!.family === family);
  order.sort((a, b) => {
    const x = all[a]!;
    const y = all[b]!;
    return x.start < y.start ? -1 : x.start > y.start ? 1 : x.length - y.length;
  });
  const ends = new Map<number, number | bigint>();
  const after = (i: number): number | bigint | null => {
    const e = all[i]!;
    // One past the prefix's last address; null when it runs to the end of the space.
    const next = family === 4 ? (e.start as number) + 2 ** (32 - e.length) : (e.start as bigint) + (1n << BigInt(bits - e.length));
    return next === (family === 4 ? 2 ** 32 : 1n << 128n) ? null : next;
  };
  const starts: (number | bigint)[] = [];
  const values: number[] = [];
  const emit = (start: number | bigint, value: number) => {
    // A segment of zero width is superseded by the one starting at the same place.
    if (starts.length > 0 && starts[starts.length - 1] === start) {
      starts.pop();
      values.pop();
    }
    if (values.length > 0 && values[values.length - 1] === value) return;
    starts.push(start);
    values.push(value);
  };
  const stack: number[] = [];
  const close = (before: number | bigint | null) => {
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      const next = ends.get(top) ?? null;
      if (before !== null && (next === null || next > before)) return;
      stack.pop();
      if (next !== null) emit(next, stack.length > 0 ? stack[stack.length - 1]! : -1);
    }
  };
  for (const i of order) {
    const e = all[i]!;
    close(e.start);
    emit(e.start, i);
    const next = after(i);
    if (next !== null) ends.set(i, next);
    stack.push(i);
  }
  close(null);
  return { starts, values };
}

function search4<V>(c: Compiled<V>, x: number): number {
  const starts = c.starts4;
  const b = x >>> 16;
  let lo = c.index4[b]!;
  let hi = c.index4[b + 1]! - 1;
  // Nothing in this /16 starts at or below x: the segment that started before it covers x.
  let found = lo - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    if (starts[mid]! <= x) {
      found = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return found < 0 ? -1 : c.values4[found]!;
}

function search6<V>(c: Compiled<V>, w0: number, w1: number, w2: number, w3: number): number {
  const s = c.starts6;
  const b = w0 >>> 16;
  let lo = c.index6[b]!;
  let hi = c.index6[b + 1]! - 1;
  let found = lo - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const o = mid * 4;
    // starts[mid] <= address, comparing word by word.
    let le: boolean;
    if (s[o] !== w0) le = s[o]! < w0;
    else if (s[o + 1] !== w1) le = s[o + 1]! < w1;
    else if (s[o + 2] !== w2) le = s[o + 2]! < w2;
    else le = s[o + 3]! <= w3;
    if (le) {
      found = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return found < 0 ? -1 : c.values6[found]!;
}

// ---------------------------------------------------------------------------
// Parsing. Hand-written rather than node:net, because lookups are on the hot
// path: no regex, no allocation (parseIPv6 writes into caller/module buffers).
// ---------------------------------------------------------------------------

/** Dotted-quad IPv4 in text[from, to) as an unsigned 32-bit number, or -1. Leading zeros are refused (octal ambiguity). */
export function parseIPv4(text: string, from: number, to: number): number {
  let value = 0;
  let parts = 0;
  let i = from;
  while (parts < 4) {
    const begin = i;
    let octet = 0;
    while (i < to) {
      const c = text.charCodeAt(i) - 48;
      if (c < 0 || c > 9) break;
      octet = octet * 10 + c;
      i++;
    }
    const digits = i - begin;
    if (digits === 0 || digits > 3 || octet > 255 || (digits > 1 && text.charCodeAt(begin) === 48)) return -1;
    value = value * 256 + octet;
    parts++;
    if (parts < 4) {
      if (i >= to || text.charCodeAt(i) !== 46) return -1;
      i++;
    }
  }
  return i === to ? value : -1;
}

/** IPv6 text (with `::` and an optional trailing dotted quad; no zone id) into four 32-bit words. */
export function parseIPv6(text: string, out: Uint32Array): boolean {
  const n = text.length;
  if (n < 2 || n > 45) return false;
  // Up to 8 16-bit groups; `gap` is where `::` stands, in groups.
  const groups = groupScratch;
  let count = 0;
  let gap = -1;
  let i = 0;
  if (text.charCodeAt(0) === 58) {
    if (text.charCodeAt(1) !== 58) return false;
    gap = 0;
    i = 2;
    if (i === n) {
      out.fill(0);
      return true;
    }
  }
  while (i < n) {
    if (count === 8) return false;
    const begin = i;
    let group = 0;
    while (i < n) {
      const c = text.charCodeAt(i);
      // `c | 32` folds A-F onto a-f.
      if (c >= 48 && c <= 57) group = (group << 4) | (c - 48);
      else if ((c | 32) >= 97 && (c | 32) <= 102) group = (group << 4) | ((c | 32) - 87);
      else break;
      i++;
    }
    if (i < n && text.charCodeAt(i) === 46) {
      // A trailing dotted quad fills the last two groups.
      if (count > 6) return false;
      const v4 = parseIPv4(text, begin, n);
      if (v4 < 0) return false;
      groups[count++] = v4 >>> 16;
      groups[count++] = v4 & 0xffff;
      i = n;
      break;
    }
    if (i === begin || i - begin > 4) return false;
    groups[count++] = group;
    if (i === n) break;
    if (text.charCodeAt(i) !== 58) return false;
    i++;
    if (text.charCodeAt(i) === 58) {
      if (gap >= 0) return false;
      gap = count;
      i++;
      if (i === n) break;
    } else if (i === n) {
      return false;
    }
  }
  if (gap < 0 ? count !== 8 : count > 7) return false;
  if (gap >= 0) {
    // Move the groups after `::` to the end and zero the gap.
    const tail = count - gap;
    for (let k = tail - 1; k >= 0; k--) groups[8 - tail + k] = groups[gap + k]!;
    for (let k = gap; k < 8 - tail; k++) groups[k] = 0;
  }
  for (let w = 0; w < 4; w++) out[w] = ((groups[2 * w]! << 16) | groups[2 * w + 1]!) >>> 0;
  return true;
}

/** An address as family and bits; IPv4-mapped IPv6 comes back as IPv4. Null for anything else. */
export function parseAddress(text: string): ParsedAddress | null {
  if (text.indexOf(':') === -1) {
    const v = parseIPv4(text, 0, text.length);
    return v < 0 ? null : { family: 4, value: v };
  }
  const w = new Uint32Array(4);
  if (!parseIPv6(text, w)) return null;
  if (w[0] === 0 && w[1] === 0 && w[2] === 0xffff) return { family: 4, value: w[3]! };
  return { family: 6, words: [w[0]!, w[1]!, w[2]!, w[3]!] };
}

/**
 * The canonical text of an address: dotted quad for IPv4 and IPv4-mapped
 * IPv6, RFC 5952 form for IPv6. Null when the text is not an address.
 */
export function canonicalAddress(text: string): string | null {
  const a = parseAddress(text);
  if (a === null) return null;
  if (a.family === 4) return formatIPv4(a.value);
  const [w0, w1, w2, w3] = a.words;
  return formatWords(w0, w1, w2, w3);
}

/** A CIDR's family, first address (host bits masked) and length. Mapped IPv6 prefixes of /96 or longer become IPv4. */
export function parsePrefix(cidr: string): { family: 4 | 6; start: bigint; length: number } | null {
  const slash = cidr.indexOf('/');
  const text = slash === -1 ? cidr : cidr.slice(0, slash);
  let family: 4 | 6;
  let bits: bigint;
  if (text.indexOf(':') === -1) {
    const v = parseIPv4(text, 0, text.length);
    if (v < 0) return null;
    family = 4;
    bits = BigInt(v);
  } else {
    const w = new Uint32Array(4);
    if (!parseIPv6(text, w)) return null;
    family = 6;
    bits = (BigInt(w[0]!) << 96n) | (BigInt(w[1]!) << 64n) | (BigInt(w[2]!) << 32n) | BigInt(w[3]!);
  }
  const max = family === 4 ? 32 : 128;
  let length = max;
  if (slash !== -1) {
    const p = cidr.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p)) return null;
    length = Number(p);
    if (length > max) return null;
  }
  if (family === 6 && length >= 96 && bits >> 32n === 0xffffn) {
    family = 4;
    bits &= 0xffffffffn;
    length -= 96;
  }
  const width = BigInt(family === 4 ? 32 : 128);
  const hostBits = width - BigInt(length);
  const start = (bits >> hostBits) << hostBits;
  return { family, start, length };
}

/** The canonical text of a CIDR ('10.20.0.0/16'), host bits masked; null when it is not one. */
export function canonicalPrefix(cidr: string): string | null {
  return normalizePrefix(cidr)?.text ?? null;
}

/** Family and canonical text of a CIDR in one cheap pass (no bigint): for loaders with 100k prefixes. */
export function normalizePrefix(cidr: string): { family: 4 | 6; text: string } | null {
  const key = prefixKey(cidr);
  if (key === null) return null;
  if (typeof key === 'number') return { family: 4, text: `${formatIPv4(Math.floor(key / 64))}/${key % 64}` };
  return { family: 6, text: `${formatWords(scratch[0]!, scratch[1]!, scratch[2]!, scratch[3]!)}/${key.slice(key.indexOf('/') + 1)}` };
}

function formatPrefix(family: 4 | 6, start: bigint, length: number): string {
  return `${family === 4 ? formatIPv4(Number(start)) : formatIPv6(start)}/${length}`;
}

function formatIPv4(v: number): string {
  return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
}

/** RFC 5952: lower case, no leading zeros, the longest run (≥ 2) of zero groups as `::`. */
function formatIPv6(v: bigint): string {
  const w = (k: number) => Number((v >> BigInt(32 * k)) & 0xffffffffn);
  return formatWords(w(3), w(2), w(1), w(0));
}

function formatWords(w0: number, w1: number, w2: number, w3: number): string {
  const g = [w0 >>> 16, w0 & 0xffff, w1 >>> 16, w1 & 0xffff, w2 >>> 16, w2 & 0xffff, w3 >>> 16, w3 & 0xffff];
  let bestAt = -1;
  let bestLen = 1;
  for (let k = 0; k < 8; ) {
    if (g[k] !== 0) {
      k++;
      continue;
    }
    let e = k;
    while (e < 8 && g[e] === 0) e++;
    if (e - k > bestLen) {
      bestAt = k;
      bestLen = e - k;
    }
    k = e;
  }
  const hex = (from: number, to: number) => g.slice(from, to).map((x) => x.toString(16)).join(':');
  return bestAt < 0 ? hex(0, 8) : `${hex(0, bestAt)}::${hex(bestAt + bestLen, 8)}`;
}
