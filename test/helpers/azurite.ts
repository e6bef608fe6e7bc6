import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

export const AZURITE_ACCOUNT_NAME = 'devstoreaccount1';
/** Azurite's well-known development account key (public, not a secret). */
export const AZURITE_ACCOUNT_KEY =
  'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

export interface AzuriteHandle {
  /** Path-style account endpoint: http://127.0.0.1:PORT/devstoreaccount1 */
  blobEndpoint: string;
  port: number;
  accountName: 'devstoreaccount1';
  accountKey: string;
  connectionString: string;
  close(): Promise<void>;
}

const START_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 3_000;
const LISTEN_RE = /successfully listens on https?:\/\/[^\s:]+:(\d+)/;

function azuriteBlobEntry(): string {
  const require = createRequire(import.meta.url);
  const pkgPath = require.resolve('azurite/package.json');
  const pkg = require(pkgPath) as { bin: Record<string, string> };
  const bin = pkg.bin['azurite-blob'];
  if (!bin) throw new Error('azurite package.json has no azurite-blob bin');
  return join(dirname(pkgPath), bin);
}

function waitForExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, timeoutMs);
    const onExit = (): void => {
      clearTimeout(t);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

/** A running Azurite blob service: its port, and how to stop it (by its child process handle). */
interface LaunchedAzurite {
  port: number;
  stop(): Promise<void>;
}

/**
 * Runs Azurite's blob service as a child process on 127.0.0.1 with an OS-assigned port
 * (Azurite 3.35 accepts --blobPort 0 and prints the bound address) and in-memory storage,
 * with `extraArgs` after the common ones and `env` added to the environment.
 */
async function launchAzurite(extraArgs: readonly string[] = [], env: Record<string, string> = {}): Promise<LaunchedAzurite> {
  // Azurite may drop files (debug logs, db files) into its cwd; keep them out of the repo.
  const cwd = await mkdtemp(join(tmpdir(), 'residency-azurite-'));
  const child = spawn(
    process.execPath,
    [
      azuriteBlobEntry(),
      '--blobHost', '127.0.0.1',
      '--blobPort', '0',
      '--inMemoryPersistence',
      // Lets the SDK in devDependencies use a newer x-ms-version than this Azurite knows.
      '--skipApiVersionCheck',
      '--disableTelemetry',
      '--loose',
      '--silent',
      ...extraArgs,
    ],
    { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } },
  );

  // A worker that dies without afterAll() must not leave an orphaned emulator behind.
  const killOnExit = (): void => {
    child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);

  let output = '';
  const collect = (chunk: Buffer): void => {
    // Keep a bounded tail for error messages; the pipes must be drained regardless.
    output = (output + chunk.toString('utf8')).slice(-8192);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);

  const stop = async (): Promise<void> => {
    process.off('exit', killOnExit);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      if (!(await waitForExit(child, STOP_GRACE_MS))) {
        child.kill('SIGKILL');
        await waitForExit(child, STOP_GRACE_MS);
      }
    }
    await rm(cwd, { recursive: true, force: true });
  };

  let port: number;
  try {
    port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`Azurite did not start within ${START_TIMEOUT_MS} ms. Output:\n${output}`));
      }, START_TIMEOUT_MS);
      const onData = (): void => {
        const m = LISTEN_RE.exec(output);
        if (m?.[1]) {
          cleanup();
          resolve(Number(m[1]));
        }
      };
      const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
        cleanup();
        reject(new Error(`Azurite exited during startup (code ${code}, signal ${signal}). Output:\n${output}`));
      };
      const onError = (err: Error): void => {
        cleanup();
        reject(err);
      };
      const cleanup = (): void => {
        clearTimeout(timer);
        child.stdout?.off('data', onData);
        child.off('exit', onExit);
        child.off('error', onError);
      };
      // Registered after `collect`, so `output` already holds the chunk.
      child.stdout?.on('data', onData);
      child.once('exit', onExit);
      child.once('error', onError);
    });
  } catch (err) {
    await stop();
    throw err;
  }

  return { port, stop };
}

/**
 * Runs Azurite's blob service as a child process on 127.0.0.1 with an OS-assigned port
 * (Azurite 3.35 accepts --blobPort 0 and prints the bound address) and in-memory storage.
 */
export async function startAzurite(): Promise<AzuriteHandle> {
  const { port, stop } = await launchAzurite();
  const blobEndpoint = `http://127.0.0.1:${port}/${AZURITE_ACCOUNT_NAME}`;
  let closed = false;
  return {
    blobEndpoint,
    port,
    accountName: AZURITE_ACCOUNT_NAME,
    accountKey: AZURITE_ACCOUNT_KEY,
    connectionString:
      `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT_NAME};` +
      `AccountKey=${AZURITE_ACCOUNT_KEY};BlobEndpoint=${blobEndpoint};`,
    async close() {
      if (closed) return;
      closed = true;
      await stop();
    },
  };
}

export interface HttpsAzuriteOptions {
  /** PEM files of the server certificate and its key (Azurite's `--cert` / `--key`). */
  certFile: string;
  keyFile: string;
  /** Storage account name → base64 key: Azurite's accounts instead of devstoreaccount1 (AZURITE_ACCOUNTS). */
  accounts: Readonly<Record<string, string>>;
}

export interface HttpsAzuriteHandle {
  port: number;
  close(): Promise<void>;
}

/**
 * Azurite's blob service over HTTPS with accounts of the test's choosing.
 * Production-style URLs are left on (no `--disableProductStyleUrl`): a
 * request whose Host is a name with a dot (`ACCOUNT.blob.core.windows.net`)
 * acts on the account in its first label, as Azure does; a request to an IP
 * literal (`https://127.0.0.1:PORT/ACCOUNT/…`) names the account in its path.
 */
export async function startHttpsAzurite(options: HttpsAzuriteOptions): Promise<HttpsAzuriteHandle> {
  const accounts = Object.entries(options.accounts).map(([name, key]) => `${name}:${key}`).join(';');
  const { port, stop } = await launchAzurite(['--cert', options.certFile, '--key', options.keyFile], { AZURITE_ACCOUNTS: accounts });
  let closed = false;
  return {
    port,
    async close() {
      if (closed) return;
      closed = true;
      await stop();
    },
  };
}
