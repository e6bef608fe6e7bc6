import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

/** The nearest folder up holding this project's package.json (works from test/bench and from dist-bench/test/bench). */
function findRoot(start: string): string {
  let dir = start;
  for (let i = 0; i < 8; i++) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'residency-proxy') return dir;
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  throw new Error(`bench: cannot find the residency-proxy package root above ${start}`);
}

export const REPO_ROOT = findRoot(here);

/** Where `tsc -p test/bench/tsconfig.json` writes (gitignored). */
export const BENCH_OUT = join(REPO_ROOT, 'dist-bench');

/**
 * Child processes always run compiled JavaScript (Node 20 cannot run
 * TypeScript): beside this file when it is the compiled copy, else (the
 * smoke test imports the sources through vitest) from dist-bench.
 */
export function childScript(name: string): string {
  return import.meta.url.endsWith('.js') ? join(here, `${name}.js`) : join(BENCH_OUT, 'test', 'bench', `${name}.js`);
}

/** The built CLI (`npm run build`). */
export const CLI = join(REPO_ROOT, 'dist', 'cli', 'main.js');

/** Gitignored results: tables as JSON and Markdown, CPU profiles. */
export const RESULTS_DIR = join(REPO_ROOT, 'test', 'bench', 'results');
