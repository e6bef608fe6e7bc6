import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { DecisionRecord } from '../../src/audit/record.js';
import { assertBuilt, proxyConfig, runCli, send, serve, writeConfig, type ServedProxy } from '../helpers/audit-serve.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/upstream.js';

async function readyz(adminPort: number): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${adminPort}/readyz`);
  return { status: res.status, body: await res.text() };
}

async function waitFor(predicate: () => Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/*
 * Tests run as root, where chmod does not stop a write. What does, for any
 * user: the log directory replaced by a plain file. The writer checks, before
 * each batch, that the path it appends to is still the file it has open;
 * with the directory gone that stat fails (ENOTDIR), exactly like a disk
 * that refuses writes. Putting the directory back is the repair.
 */
describe('decision log: the disk stops taking writes, then comes back', () => {
  let dir: string;
  let upstream: RecordingUpstream;
  let proxy: ServedProxy | null = null;

  beforeAll(async () => {
    assertBuilt();
    dir = mkdtempSync(join(tmpdir(), 'audit-disk-'));
    upstream = await startRecordingUpstream();
  });

  afterEach(async () => {
    await proxy?.kill('SIGKILL');
    proxy = null;
  });

  afterAll(async () => {
    await upstream?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const breakDisk = (logDir: string) => {
    renameSync(logDir, `${logDir}.away`);
    writeFileSync(logDir, 'not a directory\n');
  };
  const repairDisk = (logDir: string) => {
    rmSync(logDir);
    renameSync(`${logDir}.away`, logDir);
  };

  it('writes get 503, reads (fail_open: [read]) get 200, /readyz fails; all recover once writable', async () => {
    const logDir = join(dir, 'open-reads');
    const config = writeConfig(dir, 'open-reads.yaml', proxyConfig(upstream.url, { path: join(logDir, 'decisions.log'), fail_open: ['read'] }));
    proxy = await serve(config);
    const { port, adminPort } = proxy;

    expect((await send(port, 'PUT', '/us/bucket/before.txt', 'hi')).status).toBe(200);
    expect((await readyz(adminPort)).status).toBe(200);
    // The write's outcome rides with the next batch, or goes alone after at most 100 ms: let it land first.
    await new Promise((r) => setTimeout(r, 300));

    breakDisk(logDir);
    upstream.reset();
    const put = await send(port, 'PUT', '/us/bucket/during.txt', 'hi');
    expect(put.status).toBe(503);
    // The decision could not be made durable, so no byte of the write's body was sent: no stored write without a record.
    expect(upstream.requests.filter((r) => r.url.includes('during') && (r.bodyBytes > 0 || r.complete))).toEqual([]);
    const refused = await send(port, 'PUT', '/eu/bucket/during.txt', 'hi');
    expect(refused.status).toBe(503); // not even a refusal goes out unrecorded
    const get = await send(port, 'GET', '/us/bucket/before.txt', null);
    expect(get.status).toBe(200);
    const ready = await readyz(adminPort);
    expect(ready.status).toBe(503);
    expect(ready.body).toContain('decision_log');
    expect(proxy.logs.some((l) => l.msg === 'decision record could not be written')).toBe(true);

    repairDisk(logDir);
    // The writer's probe notices by itself, with no request needed.
    await waitFor(async () => (await readyz(adminPort)).status === 200);
    expect((await send(port, 'PUT', '/us/bucket/after.txt', 'hi')).status).toBe(200);

    await proxy.kill('SIGTERM');
    proxy = null;
    const records = readFileSync(join(logDir, 'decisions.log'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as DecisionRecord & { kind?: string });
    // A write's decision (status null) is durable before it is sent, its outcome follows; the held read is
    // written once the log is back, before the next write; the 503s have no record.
    expect(records.map((r) => [r.seq, r.kind ?? r.method, r.path, r.status])).toEqual([
      [1, 'PUT', '/bucket/before.txt', null],
      [2, 'outcome', undefined, 200],
      [3, 'GET', '/bucket/before.txt', 200],
      [4, 'PUT', '/bucket/after.txt', null],
      [5, 'outcome', undefined, 200],
    ]);
    expect(records[1]!.id).toBe(records[0]!.id);
    expect(records[2]!.id).toBe(get.decisionId);
    expect(records[3]!.id).not.toBe(get.decisionId);
    const verify = runCli(['audit', 'verify', logDir]);
    expect(verify.status).toBe(0);
  });

  it('by default every decided request fails closed, reads included', async () => {
    const logDir = join(dir, 'closed');
    const config = writeConfig(dir, 'closed.yaml', proxyConfig(upstream.url, { path: join(logDir, 'decisions.log') }));
    proxy = await serve(config);
    expect((await send(proxy.port, 'GET', '/us/bucket/x.txt', null)).status).toBe(200);
    breakDisk(logDir);
    expect((await send(proxy.port, 'GET', '/us/bucket/x.txt', null)).status).toBe(503);
    expect((await readyz(proxy.adminPort)).status).toBe(503);
    repairDisk(logDir);
    await waitFor(async () => (await readyz(proxy!.adminPort)).status === 200);
    expect((await send(proxy.port, 'GET', '/us/bucket/x.txt', null)).status).toBe(200);
  });
});
