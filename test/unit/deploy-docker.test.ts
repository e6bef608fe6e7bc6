import { execFile, execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DockerfileParser, type Instruction, type JSONInstruction } from 'dockerfile-ast';
import { validate } from 'dockerfile-utils';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfigText } from '../../src/load.js';
import { PRODUCT_NODE_FLAGS } from '../bench/settings.js';

/**
 * The Dockerfile, checked without a Docker engine: validated by
 * dockerfile-utils, parsed by dockerfile-ast, and held to the rules the
 * image must keep (README, "Deploying").
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const read = (file: string) => readFileSync(`${ROOT}${file}`, 'utf8');
const DOCKERFILE = read('Dockerfile');
const DOCKERIGNORE = read('.dockerignore');
const PKG = JSON.parse(read('package.json')) as { version: string; bin: Record<string, string>; files: string[]; scripts: Record<string, string> };
const dockerfile = DockerfileParser.parse(DOCKERFILE);

interface Stage {
  name: string | null;
  image: string;
  instructions: Instruction[];
}

/** Instructions grouped by build stage (each FROM starts one). */
const stages: Stage[] = [];
for (const instruction of dockerfile.getInstructions()) {
  if (instruction.getKeyword() === 'FROM') {
    const from = dockerfile.getFROMs().find((f) => f.getRange().start.line === instruction.getRange().start.line);
    stages.push({ name: from?.getBuildStage() ?? null, image: from?.getImage() ?? '', instructions: [] });
  } else {
    stages.at(-1)?.instructions.push(instruction);
  }
}
const runtime = stages.at(-1) as Stage;
const build = stages[0] as Stage;

const all = (stage: Stage, keyword: string) => stage.instructions.filter((i) => i.getKeyword() === keyword);
const args = (i: Instruction) => i.getArguments().map((a) => a.getValue());
/** The strings of an exec-form (JSON) instruction. */
const json = (i: Instruction) => (i as JSONInstruction).getJSONStrings().map((s) => s.getJSONValue());
const runs = (stage: Stage) => all(stage, 'RUN').map((i) => i.getArgumentsContent() ?? '');
const flag = (i: Instruction, name: string) =>
  (i as JSONInstruction).getFlags().find((f) => f.getName() === name)?.getValue() ?? null;

function env(stage: Stage): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of dockerfile.getENVs()) {
    if (stage.instructions.includes(e)) for (const p of e.getProperties()) out.set(p.getName(), p.getValue() ?? '');
  }
  return out;
}

/** `npm ci` invocations in RUN lines, as argument lists. */
function npmCi(stage: Stage): string[][] {
  return runs(stage)
    .flatMap((line) => line.split(/&&|;/))
    .map((cmd) => cmd.trim().split(/\s+/))
    .filter((words) => words[0] === 'npm' && words[1] === 'ci');
}

describe('Dockerfile', () => {
  it('passes dockerfile-utils validation with no errors or warnings', () => {
    expect(validate(DOCKERFILE)).toEqual([]);
    // The validator is live: a broken file is reported.
    expect(validate('FROM node:24\nEXPOSE eighty\n').length).toBeGreaterThan(0);
  });

  it('has a build stage and a runtime stage, the runtime stage last', () => {
    expect(stages.map((s) => s.name)).toEqual(['build', 'runtime']);
  });

  it('pins the base image to an exact Node.js LTS version and variant in every stage', () => {
    for (const stage of stages) {
      const from = dockerfile.getFROMs()[stages.indexOf(stage)];
      expect(from?.getImageName(), stage.name ?? '').toBe('node');
      const tag = from?.getImageTag() ?? '';
      const m = /^(\d+)\.(\d+)\.(\d+)-(bookworm|trixie)-slim$/.exec(tag);
      expect(m, `${stage.name}: tag "${tag}" is not <major.minor.patch>-<debian>-slim`).not.toBeNull();
      // LTS lines have even major versions; the project needs ≥ 20.18.
      expect(Number(m?.[1]) % 2, tag).toBe(0);
      expect(Number(m?.[1]), tag).toBeGreaterThanOrEqual(22);
    }
    expect(new Set(stages.map((s) => s.image)).size).toBe(1);
  });

  it('builds with dev dependencies in the build stage', () => {
    const installs = npmCi(build);
    expect(installs.length).toBe(1);
    expect(installs[0]).not.toContain('--omit=dev');
    expect(runs(build).some((r) => /\bnpm run build\b/.test(r))).toBe(true);
  });

  it('installs production dependencies only in the runtime stage, and builds nothing there', () => {
    const installs = npmCi(runtime);
    expect(installs.length).toBe(1);
    for (const words of installs) expect(words).toContain('--omit=dev');
    for (const line of runs(runtime)) {
      expect(line).not.toMatch(/\bnpm (install|i|run build)\b/);
      expect(line).not.toMatch(/--include=dev|--production=false/);
    }
    expect(env(runtime).get('NODE_ENV')).toBe('production');
  });

  it('runs as a non-root numeric user in the final stage, set after every RUN', () => {
    const users = all(runtime, 'USER');
    expect(users.length).toBeGreaterThan(0);
    const user = users.at(-1) as Instruction;
    const [uid, gid] = (args(user)[0] ?? '').split(':');
    expect(uid).toMatch(/^\d+$/);
    expect(Number(uid)).toBeGreaterThan(0);
    if (gid !== undefined) expect(gid).toMatch(/^\d+$/);
    const lastRun = all(runtime, 'RUN').at(-1);
    expect(user.getRange().start.line).toBeGreaterThan(lastRun?.getRange().start.line ?? -1);
  });

  it('exposes the data and admin ports', () => {
    const ports = all(runtime, 'EXPOSE').flatMap(args);
    expect(ports).toEqual(expect.arrayContaining(['8080', '9464']));
  });

  it('declares the decision log directory as a VOLUME the runtime user owns', () => {
    const volumes = all(runtime, 'VOLUME').flatMap((v) => (v.getArgumentsContent()?.trim().startsWith('[') ? json(v) : args(v)));
    expect(volumes).toContain('/var/lib/residency-proxy');
    const uid = (args(all(runtime, 'USER').at(-1) as Instruction)[0] ?? '').split(':')[0];
    expect(runs(runtime).some((r) => r.includes('/var/lib/residency-proxy') && r.includes(`chown ${uid}`))).toBe(true);
  });

  it('stops with SIGTERM and starts `node dist/cli/main.js serve` with the product\'s Node flags, as npm start does', () => {
    expect(all(runtime, 'STOPSIGNAL').flatMap(args)).toEqual(['SIGTERM']);
    const entrypoints = all(runtime, 'ENTRYPOINT');
    const cmds = all(runtime, 'CMD');
    expect(entrypoints.length).toBe(1);
    expect(cmds.length).toBe(1);
    expect(json(entrypoints[0] as Instruction)).toEqual(['node', ...PRODUCT_NODE_FLAGS, 'dist/cli/main.js']);
    expect(PKG.scripts.start).toBe(['node', ...PRODUCT_NODE_FLAGS, 'dist/cli/main.js', 'serve'].join(' '));
    expect(json(cmds[0] as Instruction)).toEqual(['serve']);
    expect(Object.values(PKG.bin)).toContain('dist/cli/main.js');
  });

  it('copies into the runtime stage what `npm pack` ships, plus the lockfile', () => {
    const copied = new Set<string>();
    for (const copy of all(runtime, 'COPY')) {
      const parts = json(copy).length > 0 ? json(copy) : args(copy).filter((a) => !a.startsWith('--'));
      const sources = parts.slice(0, -1);
      const dest = parts.at(-1) ?? '';
      for (const source of sources) {
        // `COPY a ./a` and `COPY a b ./` both land top-level entries in WORKDIR.
        const entry = dest.endsWith('/') ? posix.basename(source) : posix.basename(posix.normalize(dest));
        copied.add(entry);
      }
    }
    const pack = JSON.parse(
      execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }),
    ) as { files: { path: string }[] }[];
    const shipped = new Set((pack[0]?.files ?? []).map((f) => f.path.split('/')[0] as string));
    // dist/ is a build output: `npm pack` lists it only once it is built.
    if (!existsSync(`${ROOT}dist`)) shipped.add('dist');
    expect([...copied].sort()).toEqual([...shipped, 'package-lock.json'].sort());
    // Every COPY of build output comes from the build stage, not the context.
    const fromBuild = all(runtime, 'COPY').filter((c) => flag(c, 'from') === 'build');
    expect(fromBuild.flatMap((c) => args(c).filter((a) => !a.startsWith('--')).slice(0, -1))).toEqual(['/app/dist']);
  }, 60_000);

  it('bakes in the container config, overridable through RESIDENCY_CONFIG', () => {
    const configPath = env(runtime).get('RESIDENCY_CONFIG') ?? '';
    const workdir = all(runtime, 'WORKDIR').flatMap(args).at(-1) ?? '';
    expect(configPath.startsWith(`${workdir}/config/`)).toBe(true);
    const file = configPath.slice(workdir.length + 1);
    expect(existsSync(`${ROOT}${file}`)).toBe(true);
    const copiedFromContext = all(runtime, 'COPY').filter((c) => flag(c, 'from') === null).flatMap(args);
    expect(copiedFromContext).toContain('config');

    const config = parseConfigText(read(file), file, { RESIDENCY_ADMIN_TOKEN: 'x'.repeat(64) });
    expect(config.listen.host).toBe('0.0.0.0');
    expect(config.admin.host).toBe('0.0.0.0');
    expect(config.admin.token_env).toBe('RESIDENCY_ADMIN_TOKEN');
    const exposed = all(runtime, 'EXPOSE').flatMap(args);
    expect(exposed).toContain(String(config.listen.port));
    expect(exposed).toContain(String(config.admin.port));
    const volumes = all(runtime, 'VOLUME').flatMap(json);
    expect(volumes.some((v) => config.decision_log.path.startsWith(`${v}/`))).toBe(true);
  });

  it('keeps the build context lean without excluding anything the Dockerfile copies', () => {
    const patterns = DOCKERIGNORE.split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    for (const required of ['node_modules', 'dist', '.git', 'test', 'coverage', '*.log', 'decisions*']) {
      expect(patterns).toContain(required);
    }
    const toRegExp = (p: string) =>
      new RegExp(`^${p.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*\*\//g, '(.*/)?').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')}(/.*)?$`);
    const ignored = (path: string) => patterns.some((p) => !p.startsWith('!') && toRegExp(p).test(path));
    const sources = stages
      .flatMap((s) => all(s, 'COPY'))
      .filter((c) => flag(c, 'from') === null)
      .flatMap((c) => args(c).filter((a) => !a.startsWith('--')).slice(0, -1));
    expect(sources.length).toBeGreaterThan(0);
    for (const source of sources) {
      expect(existsSync(`${ROOT}${source}`), source).toBe(true);
      expect(ignored(source), `${source} is excluded by .dockerignore`).toBe(false);
    }
    // The patterns do what they say.
    expect(ignored('node_modules')).toBe(true);
    expect(ignored('decisions.log')).toBe(true);
    expect(ignored('src/audit/record.ts')).toBe(false);
  });
});

describe('Dockerfile HEALTHCHECK', () => {
  let server: Server;
  let status = 200;
  let port = 0;
  const paths: string[] = [];

  beforeAll(async () => {
    server = createServer((req, res) => {
      paths.push(req.url ?? '');
      res.writeHead(status).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const healthcheck = () => {
    const checks = all(runtime, 'HEALTHCHECK');
    expect(checks.length).toBe(1);
    const check = checks[0] as Instruction;
    const content = check.getArgumentsContent() ?? '';
    // Exec form after the subcommand: HEALTHCHECK [flags] CMD ["node", "-e", "…"]
    const command = JSON.parse(content.slice(content.indexOf('[')).replace(/\\\n/g, '')) as string[];
    return { check, command };
  };

  const run = (command: string[], environment: NodeJS.ProcessEnv) =>
    new Promise<number>((resolve) => {
      const [file, ...rest] = command;
      execFile(file === 'node' ? process.execPath : (file as string), rest, { env: environment, timeout: 15_000 }, (err) =>
        resolve(err ? ((err as { code?: number }).code ?? 1) : 0),
      );
    });

  it('runs node against /healthz with a timeout, no curl', () => {
    const { check, command } = healthcheck();
    expect(args(check)).toContain('CMD');
    expect(command[0]).toBe('node');
    expect(command.join(' ')).toContain('/healthz');
    expect(command.join(' ')).not.toMatch(/curl|wget/);
    expect((check as JSONInstruction).getFlags().map((f) => f.getName())).toEqual(
      expect.arrayContaining(['interval', 'timeout', 'start-period', 'retries']),
    );
  });

  it('exits 0 when /healthz answers 200 and 1 otherwise (the admin port from ADMIN_PORT)', async () => {
    const { command } = healthcheck();
    status = 200;
    expect(await run(command, { ADMIN_PORT: String(port) })).toBe(0);
    expect(paths.at(-1)).toBe('/healthz');
    status = 503;
    expect(await run(command, { ADMIN_PORT: String(port) })).toBe(1);
    // Nothing listening: a failed check, not a hang or a crash code.
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const unused = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    expect(await run(command, { ADMIN_PORT: String(unused) })).toBe(1);
  }, 30_000);
});
