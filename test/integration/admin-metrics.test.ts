import { Pool } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProxy, type RunningProxy } from '../helpers/proxy.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/upstream.js';

/**
 * Cardinality: labels come from the config (upstreams, rules, reasons),
 * never from traffic. 10,000 requests to distinct paths and buckets through
 * the real proxy must not add a single `residency_` series.
 */

let upstream: RecordingUpstream;
let proxy: RunningProxy;
let pool: Pool;

beforeAll(async () => {
  upstream = await startRecordingUpstream();
  proxy = await startProxy({
    upstreams: [
      { name: 's3-us', url: upstream.url, provider: 's3', route: { path_prefix: '/us', strip_prefix: true }, region: 'us-east-1' },
      { name: 's3-eu', url: upstream.url, provider: 's3', route: { path_prefix: '/eu', strip_prefix: true }, region: 'eu-west-1' },
      { name: 's3-eu-trial', url: upstream.url, provider: 's3', route: { path_prefix: '/trial', strip_prefix: true }, region: 'eu-central-1' },
      { name: 'gcs', url: upstream.url, provider: 'gcs', route: { path_prefix: '/gcs', strip_prefix: true }, jurisdiction: 'US', request_signals: true },
    ],
    rules: [
      { name: 'trial-monitor', match: { upstreams: ['s3-eu-trial'] }, allow_jurisdictions: ['US'], mode: 'monitor' },
      { name: 'user-data', match: { operations: ['write'] }, allow_jurisdictions: ['US'], mode: 'enforce' },
    ],
  });
  pool = new Pool(proxy.url, { connections: 32 });
});

afterAll(async () => {
  await pool?.close();
  await proxy?.close();
  await upstream?.close();
});

/** One request of each shape the proxy distinguishes, to distinct names derived from `i`. */
function shapes(i: number): { method: string; path: string; body?: string }[] {
  return [
    { method: 'PUT', path: `/us/bucket-${i}/key-${i}.bin`, body: 'x' },
    { method: 'PUT', path: `/eu/bucket-${i}/key-${i}.bin`, body: 'x' },
    { method: 'PUT', path: `/trial/bucket-${i}/key-${i}.bin`, body: 'x' },
    { method: 'GET', path: `/us/bucket-${i}/key-${i}.bin` },
    { method: 'GET', path: `/eu/bucket-${i}?list-type=2&prefix=p-${i}` },
    { method: 'DELETE', path: `/us/bucket-${i}/key-${i}.bin` },
    { method: 'GET', path: `/nowhere-${i}/x` },
    { method: 'GET', path: `/us/bucket-${i}/%2e%2e/escape-${i}` },
  ];
}

async function send(requests: { method: string; path: string; body?: string }[], concurrency = 64): Promise<Map<number, number>> {
  const statuses = new Map<number, number>();
  let next = 0;
  const worker = async () => {
    while (next < requests.length) {
      const r = requests[next++]!;
      const res = await pool.request({ method: r.method as 'GET', path: r.path, ...(r.body === undefined ? {} : { body: r.body }) });
      await res.body.dump();
      statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return statuses;
}

async function residencySeries(): Promise<string[]> {
  const text = await (await fetch(`${proxy.adminUrl}/metrics`)).text();
  return text.split('\n').filter((l) => l.startsWith('residency_'));
}

describe('metric cardinality', () => {
  it('stays bounded after 10,000 requests to distinct paths and buckets', async () => {
    // Warm up: every label combination this config and these shapes can produce.
    await send(shapes(0), 1);
    const before = await residencySeries();
    expect(before.some((l) => l.startsWith('residency_decisions_total{upstream="s3-eu"'))).toBe(true);

    const requests = [];
    for (let i = 1; requests.length < 10_000; i++) requests.push(...shapes(i));
    const statuses = await send(requests.slice(0, 10_000));
    // The traffic really went through every path: forwarded, refused, unrouted, malformed.
    expect([...statuses.keys()].sort()).toEqual([200, 400, 403, 404]);

    const after = await residencySeries();
    const names = (lines: string[]) => lines.map((l) => l.replace(/ [^ ]+$/, '')).sort();
    expect(names(after)).toEqual(names(before));
    expect(after.length).toBeLessThan(400);
    // Nothing from the requests themselves ever becomes a label.
    expect(after.join('\n')).not.toMatch(/bucket-|key-|nowhere-|escape-|list-type|127\.0\.0\.1/);

    const decided = after
      .filter((l) => l.startsWith('residency_decisions_total{'))
      .reduce((sum, l) => sum + Number(l.split(' ').at(-1)), 0);
    // 6 of the 8 shapes reach a decision; the warm-up round included.
    expect(decided).toBe(proxy.decisions().length);
  });

  it('stays bounded after thousands of bucket inserts listing places in every order', async () => {
    // Every permutation of three of these, and each place alone and in pairs: thousands of distinct lists.
    const places = ['europe-west1', 'europe-west3', 'asia-east1', 'us-central1', 'australia-southeast1', 'southamerica-east1', 'me-west1', 'africa-south1'];
    const bodies: string[] = [];
    for (const a of places) for (const b of places) for (const c of places) {
      if (a !== b && b !== c && a !== c) bodies.push(JSON.stringify({ name: 'b', customPlacementConfig: { dataLocations: [a, b, c] } }));
    }
    for (const a of places) for (const b of places) if (a !== b) bodies.push(JSON.stringify({ name: 'b', customPlacementConfig: { dataLocations: [a, b] } }));
    for (const a of places) bodies.push(JSON.stringify({ name: 'b', location: a }));
    expect(bodies.length).toBeGreaterThan(300);
    const request = (body: string) => ({ method: 'POST', path: '/gcs/storage/v1/b?project=p', body });
    // Warm up: one list of several places and one of each single place.
    await send([request(bodies[0]!), ...places.map((p) => request(JSON.stringify({ name: 'b', location: p })))], 1);
    const before = await residencySeries();
    const all: { method: string; path: string; body: string }[] = [];
    while (all.length < 3_000) all.push(...bodies.map(request));
    const statuses = await send(all.slice(0, 3_000));
    expect(statuses.get(403)).toBeGreaterThan(0);
    const after = await residencySeries();
    const names = (lines: string[]) => lines.map((l) => l.replace(/ [^ ]+$/, '')).sort();
    expect(names(after)).toEqual(names(before));
    const jurisdictions = new Set(after.filter((l) => l.startsWith('residency_decisions_total{upstream="gcs"')).map((l) => /jurisdiction="([^"]*)"/.exec(l)![1]!));
    expect([...jurisdictions].every((j) => j === 'multiple' || /^[A-Z]{2}$/.test(j))).toBe(true);
    expect(jurisdictions.has('multiple')).toBe(true);
  });
});
