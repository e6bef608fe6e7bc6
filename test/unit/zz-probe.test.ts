import { it } from 'vitest';
import { PrefixTable } from '../../src/location/prefix-table.js';
it('probe', () => {
  let a = 0x5eed;
  const rand = () => { a = (a + 0x6d2b79f5) >>> 0; let t = a; t = Math.imul(t ^ (t >>> 15), t | 1); t ^= t + Math.imul(t ^ (t >>> 7), t | 61); return ((t ^ (t >>> 14)) >>> 0) / 4294967296; };
  const v4 = (n: number) => `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
  const hex = () => Math.floor(rand() * 65536).toString(16);
  const table = new PrefixTable<number>();
  let t = performance.now();
  for (let i = 0; i < 60000; i++) { const len = 16 + Math.floor(rand() * 13); const start = ((Math.floor(rand() * 2 ** 32) >>> (32 - len)) << (32 - len)) >>> 0; table.add(`${v4(start)}/${len}`, i); }
  for (let i = 0; i < 20000; i++) table.add(`2600:${hex()}:${hex()}::/48`, i);
  console.log('add ms', performance.now() - t, table.size);
  t = performance.now(); table.lookup('1.2.3.4'); console.log('compile ms', performance.now() - t);
  const addrs = Array.from({ length: 4096 }, () => v4(Math.floor(rand() * 2 ** 32)));
  const addrs6 = Array.from({ length: 4096 }, () => `2600:${hex()}:${hex()}:${hex()}::${hex()}`);
  let hits = 0;
  for (let round = 0; round < 3; round++) {
    t = performance.now();
    for (let i = 0; i < 2_000_000; i++) if (table.lookup(addrs[i & 4095]!) !== undefined) hits++;
    console.log('v4 ns/op', ((performance.now() - t) * 1e6) / 2_000_000, hits);
    t = performance.now();
    for (let i = 0; i < 2_000_000; i++) if (table.lookup(addrs6[i & 4095]!) !== undefined) hits++;
    console.log('v6 ns/op', ((performance.now() - t) * 1e6) / 2_000_000, hits);
  }
});
