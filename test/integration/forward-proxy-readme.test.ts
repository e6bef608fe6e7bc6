import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startProxy, type RunningProxy } from '../helpers/proxy.js';
import { createTestCa, issueServerCertificate } from '../helpers/test-ca.js';
import { startTlsStandIn, type TlsStandIn } from '../helpers/tls-stand-in.js';

/**
 * README "Reaching real cloud storage", step by step, with the AWS SDK for
 * JavaScript v3: the operator CA made with the README's openssl command,
 * the README's config, and examples/aws-sdk-v3-put.mjs run as the README
 * says (HTTPS_PROXY, NODE_EXTRA_CA_CERTS, AWS_REGION). The only addition is
 * AWS_ENDPOINT_URL_S3, which sends the SDK to the TLS stand-in's port
 * instead of 443 (the names stay the real ones, resolved to loopback by a
 * test DNS server).
 */
const EXAMPLE = fileURLToPath(new URL('../../examples/aws-sdk-v3-put.mjs', import.meta.url));
const run = promisify(execFile);

describe('README: the AWS SDK v3 through the forward proxy, as written', () => {
  let dir: string;
  let dns: TestDnsServer;
  let standIn: TlsStandIn;
  let proxy: RunningProxy;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'residency-readme-'));
    // Step 1, verbatim.
    await run('openssl', [
      'req', '-x509', '-new', '-nodes', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
      '-keyout', join(dir, 'operator-ca.key'), '-out', join(dir, 'operator-ca.pem'), '-days', '365',
      '-subj', '/CN=residency-proxy interception CA',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    ]);
    const storageCa = await createTestCa({ subject: 'CN=Test Storage CA' });
    const names = ['readme-bucket.s3.us-east-1.amazonaws.com', 'readme-bucket.s3.eu-west-1.amazonaws.com'];
    standIn = await startTlsStandIn(await issueServerCertificate(storageCa, names));
    dns = await startDnsServer(Object.fromEntries(names.map((n) => [n, { A: ['127.0.0.1'] }])));
    writeFileSync(join(dir, 'storage-ca.pem'), storageCa.certPem);
    // Step 2: the README's aws-s3 upstream (on the stand-in's port, trusting its test CA).
    proxy = await startProxy({
      dns: { servers: [dns.address] },
      forward_proxy: { ca: { cert_file: join(dir, 'operator-ca.pem'), key_file: join(dir, 'operator-ca.key') } },
      upstreams: [{ name: 'aws-s3', url: `https://{host}:${standIn.port}`, provider: 's3', route: { host: '*.amazonaws.com' }, ca_file: join(dir, 'storage-ca.pem') }],
      rules: [{ name: 'user-data-writes', match: { operations: ['write'] }, allow_jurisdictions: ['US'] }],
    });
  });

  afterAll(async () => {
    await proxy?.close();
    await standIn?.close();
    await dns?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Step 3: the example, with the README's environment. */
  const putWithExample = (region: string, key: string, file: string) =>
    run(process.execPath, [EXAMPLE, 'readme-bucket', key, file], {
      env: {
        PATH: process.env.PATH,
        HTTPS_PROXY: proxy.url,
        NODE_EXTRA_CA_CERTS: join(dir, 'operator-ca.pem'),
        AWS_REGION: region,
        AWS_ACCESS_KEY_ID: 'AKIAIOSFODNN7EXAMPLE',
        AWS_SECRET_ACCESS_KEY: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
        AWS_ENDPOINT_URL_S3: `https://s3.${region}.amazonaws.com:${standIn.port}`,
      },
    }).then(
      (out) => ({ code: 0, stdout: out.stdout, stderr: out.stderr }),
      (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }),
    );

  it('stores a file in us-east-1 byte-exact; refuses eu-west-1 as AccessDenied with the decision id as the request id', async () => {
    const file = join(dir, 'report.csv');
    const body = Buffer.from('id,value\n'.repeat(50_000));
    writeFileSync(file, body);

    const us = await putWithExample('us-east-1', 'reports/q4.csv', file);
    expect(us).toMatchObject({ code: 0, stdout: expect.stringMatching(/^stored s3:\/\/readme-bucket\/reports\/q4\.csv/) });
    const stored = standIn.received.find((r) => r.url === '/reports/q4.csv' && r.method === 'PUT')!;
    const payload = stored.decoded ?? { bytes: stored.bytes, sha256: stored.sha256 };
    expect(payload).toMatchObject({ bytes: body.length, sha256: createHash('sha256').update(body).digest('hex') });

    const eu = await putWithExample('eu-west-1', 'reports/q4-eu.csv', file);
    expect(eu.code).toBe(1);
    const id = /^AccessDenied: .*\(request id ([0-9a-f-]{36})\)$/m.exec(eu.stderr)?.[1];
    expect(id).toBeDefined();
    expect(proxy.decisions().find((d) => d.id === id)).toMatchObject({ decision: 'block', effective: 'refused', tunnel: { host: 'readme-bucket.s3.eu-west-1.amazonaws.com' } });
    expect(standIn.received.some((r) => r.url === '/reports/q4-eu.csv')).toBe(false);
  });
});
