import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../bench/paths.js';

/*
 * The package as a TypeScript user compiles against it: `import … from
 * 'residency-proxy'` resolves through package.json's `exports` to the built
 * `.d.ts` files (npm test builds first), and the compiler holds a consumer
 * to the plugin's and the API's types. The consumer sits in a scratch folder
 * inside the package, where Node's self-reference by package name applies.
 */

const CONSUMER = `
import Fastify from 'fastify';
import { createResidencyProxy, loadConfig, residencyProxyPlugin, type Config, type DecisionRecord, type ResidencyProxyPluginOptions } from 'residency-proxy';

const app = Fastify({ return503OnClosing: false });
const options: ResidencyProxyPluginOptions = { config: 'residency.yaml', admin: false, onStarted: (proxy) => void proxy.metrics };
await app.register(residencyProxyPlugin, { prefix: '/storage', ...options });

const config: Config = loadConfig('residency.yaml');
const proxy = createResidencyProxy(config, { replica: 'a' });
const started: Promise<{ admin: { port: number } | null }> = proxy.start({ dataPlane: false, admin: false });
void started;
const seq: DecisionRecord['seq'] = 1;
void seq;
`;

/** Lines the compiler must refuse, each with the reason it should give. */
const MISUSES: [string, RegExp][] = [
  ["await app.register(residencyProxyPlugin, { prefix: '/storage' });", /config/],
  ["await app.register(residencyProxyPlugin, { config: 'x.yaml', admin: 'yes' });", /'string' is not assignable to type 'boolean \| undefined'/],
  ["createResidencyProxy('residency.yaml');", /Config/],
];

describe('the published types', () => {
  let dir: string;

  beforeAll(() => {
    dir = mkdtempSync(join(REPO_ROOT, '.types-consumer-'));
    writeFileSync(
      join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, skipLibCheck: true, types: ['node'] },
        include: ['*.ts'],
      }),
    );
  });

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const compile = (source: string) => {
    writeFileSync(join(dir, 'consumer.ts'), source);
    const run = spawnSync(process.execPath, [join(REPO_ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(dir, 'tsconfig.json')], { encoding: 'utf8' });
    return { status: run.status, output: `${run.stdout}${run.stderr}` };
  };

  it("a consumer of 'residency-proxy' compiles against the built declarations", () => {
    const { status, output } = compile(`export {};\n${CONSUMER}`);
    expect(output).toBe('');
    expect(status).toBe(0);
  });

  it('and the compiler refuses what the types forbid', () => {
    const { status, output } = compile(`export {};\n${CONSUMER}\n${MISUSES.map(([line]) => line).join('\n')}\n`);
    expect(status).not.toBe(0);
    // One error per misuse, each with its explanation (the lines below its first).
    const errors = output.split(/\n(?=\S*consumer\.ts\()/);
    expect(errors).toHaveLength(MISUSES.length);
    MISUSES.forEach(([, reason], i) => expect(errors[i]).toMatch(reason));
  });
});
