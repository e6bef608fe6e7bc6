import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';

/** Thrown for a bad command line; main prints it with the command's usage. */
export class UsageError extends Error {}

type Options = NonNullable<ParseArgsConfig['options']>;
type Parsed<T extends Options> = ReturnType<typeof parseArgs<{ options: T & { help: { type: 'boolean'; short: 'h' } }; allowPositionals: true; strict: true }>>;

export function parse<T extends Options>(args: string[], options: T, allowPositionals = false): Parsed<T> {
  try {
    const config = { args, options: { help: { type: 'boolean', short: 'h' }, ...options }, allowPositionals, strict: true } as const;
    return parseArgs(config) as Parsed<T>;
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
