/** Reading the admin listener's Prometheus metrics in tests. */

/** The value of the first sample of `name` whose labels include `labels`, or undefined (no such sample). */
export async function metricValue(adminPort: number, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (match === null || match[1] !== name) continue;
    const sample = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1]!, m[2]!]));
    if (Object.entries(labels).every(([k, v]) => sample[k] === v)) return Number(match[3]);
  }
  return undefined;
}

/** Poll until `name{labels}` satisfies `ok` (metrics move after the socket events that drive them); returns the last value. */
export async function waitForMetric(
  adminPort: number,
  name: string,
  labels: Record<string, string>,
  ok: (value: number | undefined) => boolean,
  timeoutMs = 5_000,
): Promise<number | undefined> {
  const deadline = Date.now() + timeoutMs;
  let value = await metricValue(adminPort, name, labels);
  while (!ok(value) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    value = await metricValue(adminPort, name, labels);
  }
  return value;
}
