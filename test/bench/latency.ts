/**
 * Exact response times for the Node load children (autocannon's own
 * histogram has 1 ms resolution), bounded: past the cap every other sample
 * is dropped and the sampling rate halved, so memory stays flat.
 */
export class LatencySamples {
  static readonly CAP = 1 << 20;
  #samples = new Float64Array(LatencySamples.CAP);
  #count = 0;
  #stride = 1;
  #seen = 0;

  add(ms: number): void {
    if (this.#seen++ % this.#stride !== 0) return;
    if (this.#count === LatencySamples.CAP) {
      const kept = new Float64Array(LatencySamples.CAP);
      for (let i = 0; i < LatencySamples.CAP / 2; i++) kept[i] = this.#samples[i * 2]!;
      this.#samples = kept;
      this.#count = LatencySamples.CAP / 2;
      this.#stride *= 2;
    }
    this.#samples[this.#count++] = ms;
  }

  percentiles(): { p50Ms: number; p90Ms: number; p99Ms: number } {
    const n = this.#count;
    const sorted = this.#samples.subarray(0, n).sort();
    const pct = (p: number) => (n === 0 ? 0 : sorted[Math.min(n - 1, Math.floor((p / 100) * n))]!);
    return { p50Ms: pct(50), p90Ms: pct(90), p99Ms: pct(99) };
  }
}
