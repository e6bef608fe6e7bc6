import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHttpsAzurite, type HttpsAzuriteHandle } from '../helpers/azurite.js';
import { startDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startProxy, type RunningProxy } from '../helpers/proxy.js';
import { createTestCa, issueServerCertificate, type TestCa } from '../helpers/test-ca.js';

/**
 * Forward-proxy mode with the Azure SDK (@azure/storage-blob) as an
 * application uses it: its own `proxyOptions` pointing at the proxy, and the
 * operator CA trusted through NODE_EXTRA_CA_CERTS. The SDK runs in a child
 * process (test/helpers/azure-blob-child.mjs) because its proxy agent takes
 * no TLS options of its own (`tlsSettings` are ignored with a proxy): the
 * process-wide trust store is how an application trusts the CA, and it is
 * read at process start.
 *
 * Azurite serves HTTPS under production-style names
 * (`ACCOUNT.blob.core.windows.net`: the account is the first label of the
 * Host), with a certificate from a test "storage" CA the upstream trusts
 * through `ca_file`; a test DNS server sends those names to loopback. One
 * `{host}` upstream serves both accounts, and `accounts` places `usacct` in
 * eastus and `euacct` in westeurope.
 */

const US_ACCOUNT = 'usacct';
const EU_ACCOUNT = 'euacct';
const US_HOST = `${US_ACCOUNT}.blob.core.windows.net`;
const EU_HOST = `${EU_ACCOUNT}.blob.core.windows.net`;
const MiB = 1024 * 1024;
const CHILD = fileURLToPath(new URL('../helpers/azure-blob-child.mjs', import.meta.url));
const CHILD_TIMEOUT_MS = 45_000;

/** A step of the SDK child's job (see azure-blob-child.mjs). */
type Step = { op: 'createContainer' | 'list'; account: string; container: string }
  | { op: 'upload'; account: string; container: string; blob: string; file: string; blockSize: number; maxSingleShotSize: number; concurrency: number }
  | { op: 'download'; account: string; container: string; blob: string; file: string }
  | { op: 'properties'; account: string; container: string; blob: string };

interface SdkError {
  name: string;
  statusCode: number;
  code: string;
  message: string;
  requestId: string | null;
  decisionId: string | null;
}
type StepResult = { op: string; ok: true; names?: string[]; contentLength?: number; committedBlocks?: number; bytes?: number }
  | { op: string; ok: false; error: SdkError };

/** The upload's blocks: Put Block ×6 (5 × 1 MiB + 123 bytes), then Put Block List. */
const BLOCKS = { blockSize: MiB, maxSingleShotSize: MiB };

describe('forward proxy: the Azure SDK through an intercepting tunnel to ACCOUNT.blob.core.windows.net', () => {
  let dir: string;
  let operatorCa: TestCa;
  let dns: TestDnsServer;
  let azurite: HttpsAzuriteHandle;
  let proxy: RunningProxy;
  let keys: Record<string, string>;
  let files: { operatorCa: string; storageCa: string; upload: string; small: string };
  let data: Buffer;
  const children = new Set<ChildProcess>();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'residency-forward-proxy-azure-'));
    const file = (name: string, content: string | Buffer) => {
      writeFileSync(join(dir, name), content);
      return join(dir, name);
    };
    operatorCa = await createTestCa({ subject: 'CN=Operator Interception CA' });
    const storageCa = await createTestCa({ subject: 'CN=Test Storage CA' });
    // The account names, and 127.0.0.1 for the direct (path-style) client that checks what Azurite holds.
    const azuriteCert = await issueServerCertificate(storageCa, [US_HOST, EU_HOST, '127.0.0.1']);
    data = randomBytes(5 * MiB + 123);
    files = {
      operatorCa: file('operator-ca.pem', operatorCa.certPem),
      storageCa: file('storage-ca.pem', storageCa.certPem),
      upload: file('upload.bin', data),
      small: file('small.txt', 'hello from the eu account\n'),
    };
    keys = { [US_ACCOUNT]: randomBytes(64).toString('base64'), [EU_ACCOUNT]: randomBytes(64).toString('base64') };
    azurite = await startHttpsAzurite({ certFile: file('azurite.crt', azuriteCert.certPem), keyFile: file('azurite.key', azuriteCert.keyPem), accounts: keys });
    dns = await startDnsServer({ [US_HOST]: { A: ['127.0.0.1'] }, [EU_HOST]: { A: ['127.0.0.1'] } });
    proxy = await startProxy({
      dns: { servers: [dns.address] },
      forward_proxy: { ca: { cert_file: files.operatorCa, key_file: file('operator-ca.key', operatorCa.keyPem) } },
      upstreams: [
        {
          name: 'azure-blob',
          url: `https://{host}:${azurite.port}`,
          provider: 'azure',
          route: { host: '*.blob.core.windows.net' },
          ca_file: files.storageCa,
          accounts: { [US_ACCOUNT]: 'eastus', [EU_ACCOUNT]: 'westeurope' },
        },
      ],
      rules: [{ name: 'user-data-writes', match: { operations: ['write'] }, allow_jurisdictions: ['US'] }],
    });
  });

  afterAll(async () => {
    for (const child of children) child.kill('SIGKILL');
    await proxy?.close();
    await azurite?.close();
    await dns?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  /**
   * Run the SDK in a child process, trusting `caFile` as an application would
   * (NODE_EXTRA_CA_CERTS): by default the operator CA when `proxied` (through
   * the residency proxy with the SDK's `proxyOptions`, at the production-style
   * names), else the storage CA (straight to Azurite at 127.0.0.1, path-style).
   */
  async function sdk(proxied: boolean, steps: Step[], caFile = proxied ? files.operatorCa : files.storageCa): Promise<StepResult[]> {
    const env: NodeJS.ProcessEnv = { ...process.env, NODE_EXTRA_CA_CERTS: caFile };
    // Only the SDK's own proxyOptions: nothing from the environment (the SDK reads these when proxyOptions is unset).
    for (const name of ['HTTPS_PROXY', 'HTTP_PROXY', 'ALL_PROXY', 'NO_PROXY']) {
      delete env[name];
      delete env[name.toLowerCase()];
    }
    const job = {
      endpoint: proxied ? `https://{account}.blob.core.windows.net:${azurite.port}` : `https://127.0.0.1:${azurite.port}/{account}`,
      keys,
      ...(proxied ? { proxy: { host: 'http://127.0.0.1', port: proxy.port } } : {}),
      steps,
    };
    const child = spawn(process.execPath, [CHILD], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (t: string) => (stdout += t));
    child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr = (stderr + t).slice(-8192)));
    child.stdin.end(JSON.stringify(job));
    const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_TIMEOUT_MS);
    try {
      const code = await new Promise<number | null>((resolve, reject) => {
        child.once('error', reject);
        child.once('close', (c) => resolve(c));
      });
      if (code !== 0) throw new Error(`the SDK child exited with ${code}:\n${stderr}`);
    } finally {
      clearTimeout(timer);
      children.delete(child);
    }
    return (JSON.parse(stdout) as { results: StepResult[] }).results;
  }

  const tunnelled = (host: string) => proxy.decisions().filter((d) => d.tunnel?.host === host);

  it('uploads a 5 MiB block blob (Put Block ×6 + Put Block List) to the US account and downloads it byte-exact', async () => {
    const downloaded = join(dir, 'download.bin');
    const results = await sdk(true, [
      { op: 'createContainer', account: US_ACCOUNT, container: 'photos' },
      { op: 'upload', account: US_ACCOUNT, container: 'photos', blob: 'big.bin', file: files.upload, ...BLOCKS, concurrency: 2 },
      { op: 'download', account: US_ACCOUNT, container: 'photos', blob: 'big.bin', file: downloaded },
    ]);
    expect(results).toEqual([
      { op: 'createContainer', ok: true },
      { op: 'upload', ok: true, bytes: data.length },
      { op: 'download', ok: true },
    ]);
    expect(readFileSync(downloaded).equals(data)).toBe(true);

    // On Azurite itself, in the account the Host named: one committed blob of six blocks.
    const [stored] = await sdk(false, [{ op: 'properties', account: US_ACCOUNT, container: 'photos', blob: 'big.bin' }]);
    expect(stored).toEqual({ op: 'properties', ok: true, contentLength: data.length, committedBlocks: 6 });

    const records = tunnelled(US_HOST);
    const common = {
      upstream: 'azure-blob',
      bucket: 'photos',
      decision: 'allow',
      effective: 'forwarded',
      tunnel: { host: US_HOST },
      target: { host: `${US_HOST}:${azurite.port}`, address: '127.0.0.1' },
      location: { jurisdictions: ['US'], region: 'eastus' },
    };
    const writes = records.filter((r) => r.operation === 'write');
    // Create Container, Put Block ×6, Put Block List.
    expect(writes.map((r) => [r.method, r.path])).toEqual([
      ['PUT', '/photos'],
      ...Array.from({ length: 7 }, () => ['PUT', '/photos/big.bin']),
    ]);
    for (const r of writes) {
      expect(r).toMatchObject({ ...common, rule: 'user-data-writes', reason: 'jurisdiction_allowed' });
      expect(r.status).toBeLessThan(300);
    }
    const blockBytes = writes.filter((r) => r.path === '/photos/big.bin').map((r) => r.bytes_in);
    expect(blockBytes.filter((b) => b === MiB)).toHaveLength(5);
    expect(blockBytes).toContain(123);
    const reads = records.filter((r) => r.operation === 'read');
    expect(reads.length).toBeGreaterThanOrEqual(1);
    for (const r of reads) expect(r).toMatchObject({ ...common, method: 'GET', path: '/photos/big.bin', reason: 'read_allowed', status: 200 });
  });

  it('refuses an upload to the EU account inside the tunnel with 403 AuthorizationFailure; nothing of it reaches Azurite', async () => {
    // The container exists and holds a blob (written straight to Azurite): without the proxy the upload would succeed.
    expect(
      await sdk(false, [
        { op: 'createContainer', account: EU_ACCOUNT, container: 'photos' },
        { op: 'upload', account: EU_ACCOUNT, container: 'photos', blob: 'seed.txt', file: files.small, ...BLOCKS, concurrency: 1 },
      ]),
    ).toMatchObject([{ ok: true }, { ok: true }]);

    const downloaded = join(dir, 'seed-download.txt');
    const [blocked, single, read] = await sdk(true, [
      // Put Block: 1 MiB of body, refused before any of it is sent.
      { op: 'upload', account: EU_ACCOUNT, container: 'photos', blob: 'big.bin', file: files.upload, ...BLOCKS, concurrency: 1 },
      // Put Blob (one shot).
      { op: 'upload', account: EU_ACCOUNT, container: 'photos', blob: 'small.txt', file: files.small, ...BLOCKS, concurrency: 1 },
      // Reads are not what the rule refuses: the tunnel to the EU account works.
      { op: 'download', account: EU_ACCOUNT, container: 'photos', blob: 'seed.txt', file: downloaded },
    ]);
    const denied = { name: 'RestError', statusCode: 403, code: 'AuthorizationFailure' };
    expect(blocked).toMatchObject({ op: 'upload', ok: false, error: denied });
    // The message is the proxy's, from its Azure-format body.
    expect((blocked as Extract<StepResult, { ok: false }>).error.message).toMatch(/^residency-proxy refused this write: .*\(jurisdiction_not_allowed\)/);
    expect(single).toMatchObject({ op: 'upload', ok: false, error: denied });
    expect(read).toEqual({ op: 'download', ok: true });
    expect(readFileSync(downloaded, 'utf8')).toBe('hello from the eu account\n');

    // Azurite holds the seed only: no blob, committed or not, and no uncommitted block from the refused uploads.
    const [listed] = await sdk(false, [{ op: 'list', account: EU_ACCOUNT, container: 'photos' }]);
    expect(listed).toEqual({ op: 'list', ok: true, names: ['seed.txt'] });

    const records = tunnelled(EU_HOST);
    const refused = records.filter((r) => r.operation === 'write');
    expect(refused.map((r) => r.path)).toEqual(['/photos/big.bin', '/photos/small.txt']);
    for (const r of refused) {
      expect(r).toMatchObject({
        upstream: 'azure-blob',
        bucket: 'photos',
        method: 'PUT',
        rule: 'user-data-writes',
        decision: 'block',
        effective: 'refused',
        reason: 'jurisdiction_not_allowed',
        status: 403,
        bytes_in: 0,
        tunnel: { host: EU_HOST },
        location: { jurisdictions: ['NL'], region: 'westeurope' },
      });
    }
    // The SDK's error carries the decision id as Azure's request id: what an operator looks up.
    const ids = refused.map((r) => r.id);
    for (const { error } of [blocked, single] as Array<Extract<StepResult, { ok: false }>>) {
      expect(error.requestId).toBe(error.decisionId);
      expect(ids).toContain(error.requestId);
    }
    expect(records.filter((r) => r.operation === 'read')).toEqual([
      expect.objectContaining({ method: 'GET', path: '/photos/seed.txt', decision: 'allow', reason: 'read_allowed', status: 200, tunnel: { host: EU_HOST } }),
    ]);

    // The account keys and SharedKey signatures stay out of the decision log.
    const log = proxy.decisionLogText();
    for (const key of Object.values(keys)) expect(log).not.toContain(key);
    expect(log).not.toMatch(/authorization|sharedkey/i);
  });

  it('an SDK process that does not trust the operator CA gets no further than the TLS handshake', async () => {
    const before = proxy.decisions().length;
    // The storage CA (trusted by the upstream) is not the operator CA that signs the tunnel's certificate.
    const [listed] = await sdk(true, [{ op: 'list', account: US_ACCOUNT, container: 'photos' }], files.storageCa);
    expect(listed).toMatchObject({ op: 'list', ok: false, error: { name: 'RestError' } });
    expect((listed as Extract<StepResult, { ok: false }>).error.message).toMatch(/certificate/i);
    expect(proxy.decisions()).toHaveLength(before);
  });
});
