import { readdirSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { readFirstLine } from './lines.js';

/** A log file as readers see it, before its records are read. */
export interface CatalogFile {
  path: string;
  /** Directory + stem: the files of one log (`decisions.log`, `decisions-F-L.log`). */
  log: string;
  /** The seq range the rotated name claims, if it is a rotated name. */
  named: { first: number; last: number } | null;
  /** The first record's seq and replica (null when the first line is not a record). */
  first: { seq: number; replica: string | null } | null;
}

const ROTATED = /^(.*)-(\d+)-(\d+)\.log$/;

function isLogName(name: string): boolean {
  return name.endsWith('.log') || name.endsWith('.jsonl');
}

/**
 * The files named on a command line: directories expand to their log files
 * (`*.log`, `*.jsonl`); digests, locks and cursors are skipped (digests are
 * found next to their log file). Missing files are returned in `missing`.
 */
export function expandLogArgs(args: readonly string[]): { files: string[]; missing: string[] } {
  const files: string[] = [];
  const missing: string[] = [];
  const seen = new Set<string>();
  const add = (file: string) => {
    const full = resolve(file);
    if (!seen.has(full)) {
      seen.add(full);
      files.push(file);
    }
  };
  for (const arg of args) {
    let isDir = false;
    try {
      isDir = statSync(arg).isDirectory();
    } catch {
      missing.push(arg);
      continue;
    }
    if (isDir) {
      for (const name of readdirSync(arg).sort()) if (isLogName(name)) add(join(arg, name));
    } else if (!arg.endsWith('.digest.json') && !arg.endsWith('.lock') && !arg.endsWith('.cursor.json')) {
      add(arg);
    }
  }
  return { files, missing };
}

export function describeFile(path: string): CatalogFile {
  const name = basename(path);
  const m = ROTATED.exec(name);
  const stem = m ? m[1]! : name.replace(/\.(log|jsonl)$/, '');
  let first: CatalogFile['first'] = null;
  try {
    const line = readFirstLine(path);
    if (line) {
      const record = JSON.parse(line.text) as { seq?: unknown; replica?: unknown };
      if (typeof record.seq === 'number') first = { seq: record.seq, replica: typeof record.replica === 'string' ? record.replica : null };
    }
  } catch {
    // Not a record: the verifier reports it.
  }
  return { path, log: join(dirname(resolve(path)), stem), named: m ? { first: Number(m[2]), last: Number(m[3]) } : null, first };
}

/**
 * Files grouped by log and put in chain order: by the range a rotated name
 * claims, else by the first record's seq (an active file follows its rotated
 * ones). Ordering by the name's claim means a file swapped in under another
 * file's name is checked where the original belonged.
 */
export function orderLogFiles(paths: readonly string[]): CatalogFile[][] {
  const groups = new Map<string, CatalogFile[]>();
  for (const path of paths) {
    const file = describeFile(path);
    let group = groups.get(file.log);
    if (!group) groups.set(file.log, (group = []));
    group.push(file);
  }
  const key = (f: CatalogFile) => f.named?.first ?? f.first?.seq ?? Number.MAX_SAFE_INTEGER;
  return [...groups.keys()].sort().map((log) =>
    groups.get(log)!.sort((a, b) => key(a) - key(b) || Number(b.named !== null) - Number(a.named !== null) || a.path.localeCompare(b.path)),
  );
}
