import { isIP } from 'node:net';
import { describe, expect, it } from 'vitest';
import { canonicalAddress, parseAddress, PrefixTable } from '../../src/location/prefix-table.js';

describe('PrefixTable', () => {
  it('picks the longest of overlapping IPv4 prefixes', () => {
    const t = new PrefixTable<string>();
    t.add('10.0.0.0/8', 'a');
    t.add('10.20.0.0/16', 'b');
    t.add('10.20.30.0/24', 'c');
    t.add('10.20.30.40/32', 'd');
    expect(t.lookup('10.1.1.1')).toBe('a');
    expect(t.lookup('10.20.1.1')).toBe('b');
    expect(t.lookup('10.20.30.1')).toBe('c');
    expect(t.lookup('10.20.30.40')).toBe('d');
    expect(t.lookup('10.20.30.41')).toBe('c');
    expect(t.lookup('10.20.31.0')).toBe('b');
    expect(t.lookup('10.21.0.0')).toBe('a');
    expect(t.lookup('11.0.0.0')).toBeUndefined();
    expect(t.lookup('9.255.255.255')).toBeUndefined();
    expect(t.match('10.20.30.7')).toEqual({ prefix: '10.20.30.0/24', value: 'c' });
  });

  it('handles /0, /32 and the ends of the IPv4 space', () => {
    const t = new PrefixTable<string>();
    t.add('0.0.0.0/0', 'any');
    t.add('0.0.0.0/32', 'zero');
    t.add('255.255.255.255/32', 'ones');
    t.add('255.0.0.0/8', 'top');
    expect(t.lookup('0.0.0.0')).toBe('zero');
    expect(t.lookup('0.0.0.1')).toBe('any');
    expect(t.lookup('255.255.255.255')).toBe('ones');
    expect(t.lookup('255.255.255.254')).toBe('top');
    expect(t.lookup('254.255.255.255')).toBe('any');
    expect(t.lookup('8.8.8.8')).toBe('any');
  });

  it('handles IPv6 prefixes, /0 and /128', () => {
    const t = new PrefixTable<string>();
    t.add('::/0', 'any6');
    t.add('2001:db8::/32', 'doc');
    t.add('2001:db8:1::/48', 'doc1');
    t.add('2001:db8:1:2::1/128', 'host');
    t.add('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128', 'last');
    t.add('::/128', 'unspecified');
    expect(t.lookup('2001:db8:1:2::1')).toBe('host');
    expect(t.lookup('2001:0DB8:0001:0002:0000:0000:0000:0001')).toBe('host');
    expect(t.lookup('2001:db8:1:2::2')).toBe('doc1');
    expect(t.lookup('2001:db8:2::1')).toBe('doc');
    expect(t.lookup('2001:db9::1')).toBe('any6');
    expect(t.lookup('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff')).toBe('last');
    expect(t.lookup('ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe')).toBe('any6');
    expect(t.lookup('::')).toBe('unspecified');
    expect(t.lookup('::1')).toBe('any6');
    expect(t.match('2001:db8:1::5')).toEqual({ prefix: '2001:db8:1::/48', value: 'doc1' });
  });

  it('keeps the families apart, but treats IPv4-mapped IPv6 as IPv4', () => {
    const t = new PrefixTable<string>();
    t.add('::/0', 'any6');
    t.add('10.0.0.0/8', 'ten');
    t.add('::ffff:192.168.0.0/112', 'mapped-prefix');
    expect(t.lookup('8.8.8.8')).toBeUndefined();
    expect(t.lookup('::ffff:10.1.2.3')).toBe('ten');
    expect(t.lookup('::FFFF:a01:203')).toBe('ten');
    expect(t.lookup('192.168.44.1')).toBe('mapped-prefix');
    expect(t.lookup('::ffff:192.168.44.1')).toBe('mapped-prefix');
    expect(t.match('192.168.1.1')?.prefix).toBe('192.168.0.0/16');
    // Not mapped: ::10.1.2.3 is the deprecated IPv4-compatible form, an IPv6 address.
    expect(t.lookup('::10.1.2.3')).toBe('any6');
  });

  it('masks host bits, replaces a re-added prefix, rejects what is not a CIDR', () => {
    const t = new PrefixTable<number>();
    t.add('10.20.30.40/16', 1);
    expect(t.match('10.20.99.1')).toEqual({ prefix: '10.20.0.0/16', value: 1 });
    t.add('10.20.0.0/16', 2);
    expect(t.size).toBe(1);
    expect(t.lookup('10.20.99.1')).toBe(2);
    expect(t.get('10.20.0.0/16')).toBe(2);
    expect(t.get('10.20.0.0/17')).toBeUndefined();
    t.add('192.0.2.1', 3);
    expect(t.match('192.0.2.1')).toEqual({ prefix: '192.0.2.1/32', value: 3 });
    for (const bad of ['10.0.0.0/33', '10.0.0/8', '10.0.0.0/', '10.0.0.0/x', '::/129', 'example.com/8', '', '01.2.3.4/8']) {
      expect(() => t.add(bad, 0), bad).toThrow(/is not a CIDR/);
    }
  });

  it('answers undefined for text that is not an address', () => {
    const t = new PrefixTable<string>();
    t.add('0.0.0.0/0', 'v4');
    t.add('::/0', 'v6');
    for (const bad of ['', 'localhost', '1.2.3', '1.2.3.4.5', '256.1.1.1', '1.2.3.04', ' 1.2.3.4', '1::2::3', ':1', '1:', 'fe80::1%eth0', '12345::', '1:2:3:4:5:6:7:8:9', '::1.2.3', '[::1]']) {
      expect(t.lookup(bad), JSON.stringify(bad)).toBeUndefined();
    }
  });

  it('parses exactly what node:net accepts (bar zone ids and leading-zero octets)', () => {
    const samples = [
      '0.0.0.0', '255.255.255.255', '1.2.3.4', '::', '::1', '1::', '1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7::', '::2:3:4:5:6:7:8',
      '1::8', 'fe80::1:2', '::ffff:1.2.3.4', '64:ff9b::192.0.2.33', '1:2:3:4:5:6:1.2.3.4', 'ABCD:EF01::', '0:0:0:0:0:0:0:0',
      '1:2:3:4:5:6:7:8:9', '1::2::3', ':::', '1:2:3:4:5:6:7:1.2.3.4', '::1.2.3.256', '1.2.3.4:80', 'g::1', '12345::1', '1.2.3',
    ];
    for (const s of samples) {
      expect(parseAddress(s) !== null, s).toBe(isIP(s) !== 0);
      if (isIP(s) === 6 && parseAddress(s)?.family === 6) {
        // URL normalises IPv6 independently of our code.
        expect(canonicalAddress(s), s).toBe(new URL(`http://[${s}]/`).hostname.slice(1, -1));
      }
    }
    expect(canonicalAddress('::ffff:0102:0304')).toBe('1.2.3.4');
  });

  it('agrees with a linear scan on random prefixes and addresses (seeded)', () => {
    const rand = mulberry32(0x5eed);
    for (const family of [4, 6] as const) {
      const bits = family === 4 ? 32 : 128;
      const randomBits = (n: number) => {
        let v = 0n;
        for (let i = 0; i < n; i += 16) v = (v << 16n) | BigInt(Math.floor(rand() * 65536));
        return v & ((1n << BigInt(n)) - 1n);
      };
      // Few bases, many lengths: plenty of nesting and shared starts.
      const bases = Array.from({ length: 12 }, () => randomBits(bits));
      const table = new PrefixTable<number>();
      const naive = new Map<string, { start: bigint; end: bigint; length: number; value: number }>();
      for (let i = 0; i < 600; i++) {
        const length = Math.floor(rand() * (bits + 1));
        const base = rand() < 0.8 ? bases[Math.floor(rand() * bases.length)]! : randomBits(bits);
        const host = BigInt(bits - length);
        const start = (base >> host) << host;
        const end = start + (1n << host) - 1n;
        table.add(`${formatFull(family, start)}/${length}`, i);
        naive.set(`${start}/${length}`, { start, end, length, value: i });
      }
      const probes: bigint[] = [];
      for (const p of naive.values()) probes.push(p.start, p.end, p.start - 1n, p.end + 1n, p.start + (p.end - p.start) / 2n);
      for (let i = 0; i < 2000; i++) probes.push(randomBits(bits));
      const max = (1n << BigInt(bits)) - 1n;
      for (const a of probes) {
        if (a < 0n || a > max) continue;
        let best: { length: number; value: number } | undefined;
        for (const p of naive.values()) if (a >= p.start && a <= p.end && (!best || p.length > best.length)) best = p;
        const text = rand() < 0.5 || family === 4 ? formatFull(family, a) : new URL(`http://[${formatFull(6, a)}]/`).hostname.slice(1, -1);
        expect(table.lookup(text), text).toBe(best?.value);
      }
    }
  });
});

/** Uncompressed text, written independently of the module under test. */
function formatFull(family: 4 | 6, v: bigint): string {
  if (family === 4) return [24n, 16n, 8n, 0n].map((s) => String((v >> s) & 255n)).join('.');
  const groups: string[] = [];
  for (let k = 7; k >= 0; k--) groups.push(((v >> BigInt(16 * k)) & 0xffffn).toString(16).padStart(4, '0'));
  return groups.join(':');
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
