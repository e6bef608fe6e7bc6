// The hot-path micro-benchmarks under vitest:
//   npx vitest bench --run --project unit test/bench/micro.bench.ts
// `npm run bench` runs the same cases with tinybench and puts them in its table.
// Each bench body runs its operation `inner` times: ns per op = mean (ms) × 1e6 / inner.
import { afterAll, bench, describe } from 'vitest';
import { microCases } from './micro-cases.js';

const { cases, close } = await microCases();
afterAll(close);

describe('hot path (×inner per sample)', () => {
  for (const c of cases) bench(`${c.name} ×${c.inner}`, c.fn);
});
