import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/upstream.js';
import { decisionsOf } from '../helpers/proxy.js';

/** The built CLI (`npm test` builds before vitest runs). */
const CLI = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

interface Cli {
  child: ChildProcess;
  /** Parsed JSON log lines from stdout so far. */
  logs: Array<Record<string, unknown>>;
  stderr(): string;
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<number | null>;
  /** Resolves with the first log line for which `match` is true. */
  waitForLog(match: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
}

/** The environment minus the variables that override the config file. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const name of ['PORT', 'ADMIN_PORT', 'LOG_LEVEL', 'RESIDENCY_CONFIG']) delete env[name];
  return env;
}

function runCli(args: string[]): Cli {
  const child = spawn(process.execPath, [CLI, ...args], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: Array<Record<string, unknown>> = [];
  const waiters = new Set<() => void>();
  let stderr = '';
  let pending = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (text: string) => {
    pending += text;
    let nl: number;
    while ((nl = pending.indexOf('\n')) !== -1) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        logs.push({ text: line });
      }
    }
    for (const w of waiters) w();
  });
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (text: string) => (stderr += text));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    logs,
    stderr: () => stderr,
    exited,
    waitForLog(match, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = logs.find(match);
          if (found) {
            clearTimeout(timer);
            waiters.delete(check);
            resolve(found);
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no matching log line within ${timeoutMs} ms; stdout: ${JSON.stringify(logs)}; stderr: ${stderr}`));
        }, timeoutMs);
        waiters.add(check);
        void exited.then(() => {
          if (waiters.has(check)) {
            clearTimeout(timer);
            waiters.delete(check);
            reject(new Error(`CLI exited before the log line; stdout: ${JSON.stringify(logs)}; stderr: ${stderr}`));
          }
        });
        check();
      });
    },
  };
}

/** Starts `serve` and waits for its listening line; returns the data-plane port. */
async function serve(configFile: string): Promise<{ cli: Cli; port: number }> {
  const cli = runCli(['serve', '--config', configFile]);
  const line = await cli.waitForLog((l) => l.msg === 'residency-proxy listening');
  const match = /^127\.0\.0\.1:(\d+)$/.exec(String(line.proxy));
  if (!match) throw new Error(`unexpected listening address ${String(line.proxy)}`);
  return { cli, port: Number(match[1]) };
}

/** Resolves with the connect error code, or 'connected' when something accepted the connection. */
function tryConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

describe('residency-proxy serve (the built CLI as a child process)', () => {
  let dir: string;
  let upstream: RecordingUpstream;
  const running = new Set<ChildProcess>();

  const writeConfig = (name: string, doc: Record<string, unknown>): string => {
    const file = join(dir, name);
    writeFileSync(file, stringify(doc));
    return file;
  };
  const baseConfig = (logFile: string) => ({
    listen: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0 },
    decision_log: { path: logFile },
    log_level: 'info',
    limits: { shutdown_grace_ms: 8_000 },
    upstreams: [{ name: 'us', url: upstream.url, provider: 's3', route: { path_prefix: '/us', strip_prefix: true }, region: 'us-east-1' }],
  });
  const track = (cli: Cli) => {
    running.add(cli.child);
    void cli.exited.then(() => running.delete(cli.child));
    return cli;
  };

  beforeAll(async () => {
    if (!existsSync(CLI)) throw new Error('dist/cli/main.js is missing: run `npm run build` (npm test does)');
    dir = mkdtempSync(join(tmpdir(), 'residency-proxy-serve-'));
    upstream = await startRecordingUpstream({ delayMs: 1_500 });
  });

  afterEach(async () => {
    // A failed test must not leave a proxy running.
    for (const child of running) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
  });

  afterAll(async () => {
    await upstream?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('sigterm-drains-an-in-flight-request-refuses-new-connections-and-exits-0', async () => {
    upstream.reset();
    const logFile = join(dir, 'drain-decisions.log');
    const { cli, port } = await serve(writeConfig('drain.yaml', baseConfig(logFile)));
    track(cli);

    // A keep-alive client: the drain must not wait for its idle connection to time out.
    const agent = new Agent({ keepAlive: true });
    try {
      const response = new Promise<{ status: number; connection: string | undefined; body: string }>((resolve, reject) => {
        const req = httpRequest(
          { host: '127.0.0.1', port, method: 'PUT', path: '/us/bucket/slow.txt', agent, headers: { 'content-length': '11' } },
          (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (c: string) => (body += c));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body }));
            res.on('error', reject);
          },
        );
        req.on('error', reject);
        req.end('hello world');
      });
      // The upstream holds its answer for 1.5 s: the request is in flight.
      await upstream.waitFor(() => upstream.requests[0]?.complete === true);

      const signalledAt = Date.now();
      cli.child.kill('SIGTERM');
      await cli.waitForLog((l) => l.msg === 'draining in-flight requests' && l.signal === 'SIGTERM');
      // The listener closes a few ticks after the log line; it must close while the request is still in flight.
      let settled = false;
      void response.then(
        () => (settled = true),
        () => (settled = true),
      );
      const refusedBy = Date.now() + 1_000;
      let attempt = await tryConnect(port);
      while (attempt !== 'ECONNREFUSED' && Date.now() < refusedBy) {
        await new Promise((r) => setTimeout(r, 20));
        attempt = await tryConnect(port);
      }
      expect(attempt).toBe('ECONNREFUSED');
      expect(settled).toBe(false);

      const res = await response;
      // The drained response closes its keep-alive connection rather than holding the exit for keepAliveTimeout.
      expect(res).toEqual({ status: 200, connection: 'close', body: 'ok\n' });
      const code = await cli.exited;
      const drainMs = Date.now() - signalledAt;
      console.log(`[serve.test] SIGTERM → exit ${String(code)} after ${drainMs} ms (upstream delay 1500 ms)`);
      expect(code).toBe(0);
      expect(drainMs).toBeLessThan(4_000);
    } finally {
      agent.destroy();
    }

    // The write's decision, then its outcome: one decided request.
    const records = decisionsOf(readFileSync(logFile, 'utf8'));
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ upstream: 'us', method: 'PUT', path: '/bucket/slow.txt', decision: 'allow', status: 200, bytes_in: 11 });
  });

  it('sigint-stops-an-idle-proxy-with-exit-0', async () => {
    const { cli, port } = await serve(writeConfig('idle.yaml', baseConfig(join(dir, 'idle-decisions.log'))));
    track(cli);
    const signalledAt = Date.now();
    cli.child.kill('SIGINT');
    expect(await cli.exited).toBe(0);
    expect(Date.now() - signalledAt).toBeLessThan(3_000);
    expect(await tryConnect(port)).toBe('ECONNREFUSED');
  });

  it('serve-exits-1-and-names-file-path-and-problem-for-a-bad-config', async () => {
    const file = writeConfig('bad.yaml', { ...baseConfig(join(dir, 'bad-decisions.log')), mode: 'sometimes' });
    const cli = track(runCli(['serve', '--config', file]));
    expect(await cli.exited).toBe(1);
    const lines = cli.stderr().trim().split('\n');
    expect(lines).toContain(`${file}: mode: "sometimes" is not allowed (expected one of enforce, monitor, warn)`);
    for (const line of lines) expect(line.startsWith(`${file}: `)).toBe(true);
    expect(cli.logs.some((l) => l.msg === 'residency-proxy listening')).toBe(false);
  });
});
