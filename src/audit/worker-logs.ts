import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { escapeRegExp, listRotated, logLayout } from './files.js';

/**
 * Decision log naming with `workers` > 1: each worker process writes its own
 * log (one writer per chain), named after `decision_log.path` with `.w<k>`
 * before the file's extension:
 *
 *   decisions.log    →  decisions.w1.log, decisions.w2.log, …
 *   audit.jsonl      →  audit.w1.jsonl
 *   decisions        →  decisions.w1
 *
 * Each worker's log then rotates, seals and locks like any log
 * (`decisions.w1-000000000001-000000041234.log`, `decisions.w1.log.digest.json`,
 * `decisions.w1.log.lock`).
 */
export function workerLogPath(path: string, worker: number): string {
  const { stem, extension } = splitName(basename(path));
  return join(dirname(path), `${stem}.w${worker}${extension}`);
}

/** One worker's log: its active file (when present) and its rotated files, in chain order. */
export interface WorkerLog {
  worker: number;
  /** The active file's path, whether or not it exists now (it is recreated after a rotation). */
  active: string;
  files: string[];
}

/**
 * Every worker's log derived from `path`, found on disk (not from the config's
 * `workers`, which an auditor's machine may resolve differently for "auto"),
 * by worker number. Empty when no worker ever wrote next to `path`.
 */
export function findWorkerLogs(path: string): WorkerLog[] {
  const dir = dirname(path);
  const { stem, extension } = splitName(basename(path));
  const active = new RegExp(`^${escapeRegExp(stem)}\\.w([1-9]\\d*)${escapeRegExp(extension)}$`);
  // Rotated files keep the active name minus `.log` (see files.ts): decisions.w1-F-L.log, audit.w1.jsonl-F-L.log.
  const rotatedStemTail = extension === '.log' ? '' : escapeRegExp(extension);
  const rotated = new RegExp(`^${escapeRegExp(stem)}\\.w([1-9]\\d*)${rotatedStemTail}-\\d+-\\d+\\.log$`);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const workers = new Set<number>();
  for (const name of names) {
    const m = active.exec(name) ?? rotated.exec(name);
    if (m) workers.add(Number(m[1]));
  }
  return [...workers]
    .sort((a, b) => a - b)
    .map((worker) => {
      const layout = logLayout(workerLogPath(path, worker));
      const files = listRotated(layout).map((f) => f.path);
      if (names.includes(basename(layout.active))) files.push(layout.active);
      return { worker, active: layout.active, files };
    });
}

/** `decisions.log` → decisions + .log; a leading dot (`.decisions`) is part of the stem. */
function splitName(name: string): { stem: string; extension: string } {
  const dot = name.lastIndexOf('.');
  return dot > 0 ? { stem: name.slice(0, dot), extension: name.slice(dot) } : { stem: name, extension: '' };
}

/** A set of files verified (or read) as one: one worker's log, or the other arguments together. */
export interface LogSet {
  /** The worker whose log this is; null for arguments that name no worker's log. */
  worker: number | null;
  /** What to call it in output: the worker's active file, else the arguments. */
  label: string;
  args: string[];
}

/**
 * Command-line arguments, split so each worker's log is its own set: an
 * argument naming a log path next to which workers wrote (`decisions.log`
 * with `decisions.w1.log`, … beside it) becomes one set per worker (its
 * rotated and active files), plus the file itself when it exists (a log from
 * before `workers`). Directories and other files stay together, as given.
 */
export function splitByWorker(args: readonly string[]): LogSet[] {
  const sets: LogSet[] = [];
  const rest: string[] = [];
  for (const arg of args) {
    const workers = isDirectory(arg) ? [] : findWorkerLogs(arg);
    if (workers.length === 0) {
      rest.push(arg);
      continue;
    }
    if (existsSync(arg)) rest.push(arg);
    for (const w of workers) sets.push({ worker: w.worker, label: w.active, args: w.files });
  }
  return rest.length > 0 ? [{ worker: null, label: rest.join(' '), args: rest }, ...sets] : sets;
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
