import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError, type Config } from '../config/load.js';
import { loadConfig, loadPolicy, type LoadedPolicy } from '../load.js';

/** Thrown for a bad command line; main prints it with the command's usage. */
export class UsageError extends Error {}

export function parse<T extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: T, allowPositionals = false) {
  try {
    const config = { args, options: { help: { type: 'boolean', short: 'h' }, ...options }, allowPositionals, strict: true } as const;
    return parseArgs(config) as ReturnType<typeof parseArgs<{ options: T & { help: { type: 'boolean'; short: 'h' } }; allowPositionals: true; strict: true }>>;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** The shipped default config, next to the package's dist/ (or src/) folder. */
export function defaultConfigPath(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    const candidate = join(dir, 'config', 'default.yaml');
    if (existsSync(candidate)) return candidate;
    dir = dirname(dir);
  }
  return join(process.cwd(), 'config', 'default.yaml');
}

/** Load a config, printing every problem and returning null when it is invalid. */
export function loadOrReport(file: string): Config | null {
  return reportProblems(() => loadConfig(file, process.env));
}

/** Load a config and its shadow policy, printing every problem and returning null when invalid. */
export function loadPolicyOrReport(file: string): LoadedPolicy | null {
  return reportProblems(() => loadPolicy(file, process.env));
}

function reportProblems<T>(load: () => T): T | null {
  try {
    return load();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      return null;
    }
    throw err;
  }
}

/** Run a command body, turning usage errors into exit code 2 with the usage text. */
export async function withUsage(usage: string, body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`${err.message}\n\n${usage}`);
      return 2;
    }
    throw err;
  }
}
