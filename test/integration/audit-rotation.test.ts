import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { DecisionRecord } from '../../src/audit/record.js';
import { assertBuilt, proxyConfig, runCli, send, serve, writeConfig, type ServedProxy } from '../helpers/audit-serve.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/upstream.js';

async function traffic(port: number, count: number, tag: string): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: 8 });
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      const answer = await send(port, 'PUT', `/${i % 5 === 0 ? 'eu' : 'us'}/bucket/${tag}-${i}.txt`, 'payload', agent);
      expect([200, 403]).toContain(answer.status);
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  agent.destroy();
}

describe('rotation across several files and a restart, signed seals', () => {
  let dir: string;
  let upstream: RecordingUpstream;
  let proxy: ServedProxy | null = null;

  beforeAll(async () => {
    assertBuilt();
    dir = mkdtempSync(join(tmpdir(), 'audit-rotation-'));
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

  it('chains across rotations and restarts; verify, query and report agree', async () => {
    const keys = join(dir, 'keys');
    const keygen = runCli(['audit', 'keygen', '--out', keys]);
    expect(keygen.status).toBe(0);
    expect(keygen.stdout).toContain('BEGIN PUBLIC KEY');
    const privatePem = readFileSync(join(keys, 'decision-log-signing.key'), 'utf8');
    const publicKey = join(keys, 'decision-log-signing.pub');
    // keygen refuses to overwrite a key pair by accident.
    expect(runCli(['audit', 'keygen', '--out', keys]).status).toBe(1);

    const logDir = join(dir, 'log');
    const path = join(logDir, 'decisions.log');
    // Run 1 signs with a key file, run 2 with the same key from the environment.
    const first = writeConfig(dir, 'first.yaml', proxyConfig(upstream.url, { path, rotate_bytes: 16 * 1024, signing_key_file: join(keys, 'decision-log-signing.key') }));
    proxy = await serve(first);
    await traffic(proxy.port, 150, 'a');
    await proxy.kill('SIGTERM');
    expect((await proxy.exited).code).toBe(0);
    proxy = null;

    const second = writeConfig(dir, 'second.yaml', proxyConfig(upstream.url, { path, rotate_bytes: 16 * 1024, signing_key_env: 'DECISION_KEY' }));
    proxy = await serve(second, { DECISION_KEY: privatePem });
    await traffic(proxy.port, 100, 'b');
    await proxy.kill('SIGTERM');
    expect((await proxy.exited).code).toBe(0);
    proxy = null;

    const names = readdirSync(logDir).sort();
    const rotated = names.filter((n) => /^decisions-\d{12}-\d{12}\.log$/.test(n));
    expect(rotated.length).toBeGreaterThanOrEqual(4);
    for (const n of rotated) expect(names).toContain(`${n}.digest.json`);
    expect(names).toContain('decisions.log.digest.json'); // sealed at shutdown

    // One unbroken chain across every file: 250 decisions, and an outcome after each of the 200 forwarded writes.
    const all = [...rotated, 'decisions.log'].flatMap((n) =>
      readFileSync(join(logDir, n), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as DecisionRecord & { kind?: string }),
    );
    expect(all.filter((r) => r.kind === undefined)).toHaveLength(250);
    expect(all.filter((r) => r.kind === 'outcome')).toHaveLength(200);
    expect(all.map((r) => r.seq)).toEqual(Array.from({ length: 450 }, (_, i) => i + 1));
    for (let i = 1; i < all.length; i++) expect(all[i]!.prev).toBe(all[i - 1]!.hash);

    const verify = runCli(['audit', 'verify', logDir, '--public-key', publicKey, '--require-signature']);
    expect(verify.stdout).toContain('INTACT: 450 records');
    expect(verify.status).toBe(0);

    // The CLI names the first broken record.
    const tampered = join(dir, 'tampered');
    cpSync(logDir, tampered, { recursive: true });
    const victim = rotated[1]!;
    const lines = readFileSync(join(tampered, victim), 'utf8').split('\n');
    // The first decision from line 5 on (outcome records have no method).
    const at = lines.findIndex((l, i) => i >= 4 && l.includes('"method":"PUT"'));
    lines[at] = lines[at]!.replace('"method":"PUT"', '"method":"GET"');
    writeFileSync(join(tampered, victim), lines.join('\n'));
    const broken = runCli(['audit', 'verify', tampered, '--public-key', publicKey]);
    expect(broken.status).toBe(1);
    const seq = (JSON.parse(lines[at]!) as DecisionRecord).seq;
    expect(broken.stdout).toContain(`BROKEN: first broken record at ${join(tampered, victim)}:${at + 1} (seq ${seq}): record seq ${seq} does not match its hash`);

    const blocked = runCli(['audit', 'query', logDir, '--decision', 'block', '--format', 'csv']);
    expect(blocked.status).toBe(0);
    const rows = blocked.stdout.trim().split('\r\n');
    expect(rows.length - 1).toBe(30 + 20); // every 5th request went to /eu
    expect(rows.slice(1).every((r) => r.includes(',block,refused,enforce,write,PUT,eu,IE,403,'))).toBe(true);

    const since = all[0]!.ts;
    const until = new Date(Date.parse(all.at(-1)!.ts) + 1000).toISOString();
    const html = runCli(['audit', 'report', logDir, '--since', since, '--until', until, '--format', 'html', '--public-key', publicKey]);
    expect(html.status).toBe(0);
    expect(html.stdout).toContain('<svg');
    expect(html.stdout).toContain('INTACT: 450 records');
    expect(html.stdout).toContain('Blocked non-US write attempts: 50');
    const md = runCli(['audit', 'report', logDir, '--since', since, '--until', until]);
    expect(md.stdout).toContain('**Chain verification:** INTACT');
  });
});
