/*
 * What the first intercepted connection to a new host costs: minting its
 * certificate (EC P-256 leaf key, signed by an EC P-256 or RSA 2048 CA), and
 * how long the event loop is held while that happens. Not part of `npm test`;
 * run with
 *
 *   npx vitest bench --run --project unit test/bench/mint.bench.ts
 *
 * Printed first: median and p95 mint time over HOSTS new hosts minted one
 * after another (and how much of it ran on the event loop), and over HOSTS
 * minted at once; and the longest event-loop delay
 * (perf_hooks.monitorEventLoopDelay) seen meanwhile, beside the same measure
 * on an idle loop. The bench cases then time a new host and a hit.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { bench, describe } from 'vitest';
import { loadInterceptionCa } from '../../src/tls/interception-ca.js';
import { CertificateMinter } from '../../src/tls/minter.js';
import { createTestCa, type TestCaOptions } from '../helpers/test-ca.js';

const HOSTS = 50;

async function minterFor(options: TestCaOptions, times?: number[]): Promise<CertificateMinter> {
  const { certPem, keyPem } = await createTestCa(options);
  const ca = loadInterceptionCa({ cert_env: 'C', key_env: 'K' }, { C: certPem, K: keyPem });
  return new CertificateMinter({ ca, maxEntries: 100_000, onMint: (_host, ms) => times?.push(ms) });
}

/** The longest event-loop delay (ms) while `work` runs. */
async function longestDelay(work: () => Promise<unknown>): Promise<number> {
  const histogram = monitorEventLoopDelay({ resolution: 1 });
  histogram.enable();
  await work();
  histogram.disable();
  return histogram.max / 1e6;
}

const quantile = (values: number[], q: number) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(q * values.length))]!;
const ms = (n: number) => `${n.toFixed(2)} ms`;
let serial = 0;
const newHost = () => `bucket-${serial++}.s3.eu-west-1.amazonaws.com`;

const idle = await longestDelay(() => sleep(500));
console.log(`idle event loop: longest delay ${ms(idle)} over 500 ms`);
for (const [name, options] of [
  ['EC P-256 CA', {}],
  ['RSA 2048 CA', { keyType: 'rsa' }],
] as const) {
  const times: number[] = [];
  const minter = await minterFor(options, times);
  await minter.secureContext(newHost()); // first use imports the CA key
  times.length = 0;
  const before = performance.eventLoopUtilization();
  const oneByOne = await longestDelay(async () => {
    for (let i = 0; i < HOSTS; i++) await minter.secureContext(newHost());
  });
  const onLoop = performance.eventLoopUtilization(before).active / HOSTS;
  const sequential = times.splice(0);
  const started = performance.now();
  const burst = await longestDelay(() => Promise.all(Array.from({ length: HOSTS }, () => minter.secureContext(newHost()))));
  const wall = performance.now() - started;
  console.log(
    `${name}: one after another: median ${ms(quantile(sequential, 0.5))}, p95 ${ms(quantile(sequential, 0.95))}, ` +
      `${ms(onLoop)} of it on the event loop, longest event-loop delay ${ms(oneByOne)}; ` +
      `${HOSTS} at once: ${ms(wall)} in all, median ${ms(quantile(times, 0.5))} each, longest event-loop delay ${ms(burst)}`,
  );
}

const minter = await minterFor({});
await minter.secureContext('hit.example.com');
describe('certificate minter', () => {
  bench('mint for a new host (EC P-256 CA)', () => minter.secureContext(newHost()).then(() => {}));
  bench('cached host', () => minter.secureContext('hit.example.com').then(() => {}));
});
