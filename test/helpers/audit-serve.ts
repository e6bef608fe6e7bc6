import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { request as httpRequest, type Agent } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';

/** The built CLI (`npm test` builds before vitest runs). */
export const CLI = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

export function assertBuilt(): void {
  if (!existsSync(CLI)) throw new Error('dist/cli/main.js is missing: run `npm run build` (npm test does)');
}

/** The environment minus what overrides the config file. */
export function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  for (const name of ['PORT', 'ADMIN_PORT', 'LOG_LEVEL', 'RESIDENCY_CONFIG']) delete env[name];
  return env;
}

export interface ServedProxy {
  child: ChildProcess;
  pid: number;
  port: number;
  adminPort: number;
  /** Parsed JSON lines of the operational log so far. */
  logs: Array<Record<string, unknown>>;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** A proxy config for these tests: loopback, OS-chosen ports, a US and an EU route to one upstream. */
export function proxyConfig(upstreamUrl: string, decisionLog: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  return {
    listen: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0 },
    decision_log: decisionLog,
    log_level: 'info',
    limits: { shutdown_grace_ms: 5_000 },
    upstreams: [
      { name: 'us', url: upstreamUrl, provider: 's3', route: { path_prefix: '/us', strip_prefix: true }, region: 'us-east-1' },
      { name: 'eu', url: upstreamUrl, provider: 's3', route: { path_prefix: '/eu', strip_prefix: true }, region: 'eu-west-1' },
    ],
    rules: [{ name: 'user-data-writes', match: { operations: ['write'] }, allow_jurisdictions: ['US'], mode: 'enforce' }],
    ...extra,
  };
}

export function writeConfig(dir: string, name: string, doc: Record<string, unknown>): string {
  const file = join(dir, name);
  writeFileSync(file, stringify(doc));
  return file;
}

/**
 * `serve --config FILE` as a child; resolves once it logs that it listens.
 * `wrap`: a command that execs the rest of its arguments (the child's pid
 * stays the proxy's), e.g. one that gives it a filesystem of its own.
 */
export function serve(configFile: string, env: NodeJS.ProcessEnv = {}, wrap: readonly string[] = []): Promise<ServedProxy> {
  const command = [...wrap, process.execPath, CLI, 'serve', '--config', configFile];
  const child = spawn(command[0]!, command.slice(1), { env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: Array<Record<string, unknown>> = [];
  let stderr = '';
  let pending = '';
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (t: string) => (stderr += t));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`serve did not start; stderr: ${stderr}; logs: ${JSON.stringify(logs)}`));
    }, 15_000);
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (text: string) => {
      pending += text;
      let nl: number;
      while ((nl = pending.indexOf('\n')) !== -1) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        let parsed: Record<string, unknown>;
        try {
          parsed = JSON.parse(line) as Record<string, unknown>;
        } catch {
          parsed = { text: line };
        }
        logs.push(parsed);
        if (parsed.msg === 'residency-proxy listening') {
          clearTimeout(timer);
          const port = Number(/:(\d+)$/.exec(String(parsed.proxy))![1]);
          const adminPort = Number(/:(\d+)$/.exec(String(parsed.admin))![1]);
          resolve({
            child,
            pid: child.pid!,
            port,
            adminPort,
            logs,
            stderr: () => stderr,
            exited,
            async kill(signal: NodeJS.Signals = 'SIGKILL') {
              if (child.exitCode === null && child.signalCode === null) child.kill(signal);
              await exited;
            },
          });
        }
      }
    });
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`serve exited (${code ?? signal}) before listening; stderr: ${stderr}; logs: ${JSON.stringify(logs)}`));
    });
  });
}

export interface Answer {
  status: number;
  decisionId: string | undefined;
}

/** One request; resolves with the status and decision id, rejects on a connection error. */
export function send(port: number, method: string, path: string, body: string | null, agent?: Agent): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port, method, path, agent: agent ?? false, headers: body === null ? {} : { 'content-length': Buffer.byteLength(body) } },
      (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, decisionId: res.headers['x-residency-decision-id'] as string | undefined }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body ?? undefined);
  });
}

/** Run the built CLI to completion (audit verify, query, …). */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { env: cleanEnv(env), encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
