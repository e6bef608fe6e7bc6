import { readdirSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/**
 * File naming of one replica's log directory, for the active path
 * `DIR/decisions.log`:
 *
 *   decisions.log                                   active file (appended to)
 *   decisions.log.digest.json                       seal of the active file, written at shutdown
 *   decisions-000000000001-000000041234.log         rotated file: first and last seq, zero-padded
 *   decisions-000000000001-000000041234.log.digest.json   its seal
 *   decisions.log.lock                              pid of the writing process
 *   decisions.log.cursor.json                       last record shipped to Redis
 *
 * Sequence numbers are padded to 12 digits so a plain `ls` lists files in
 * chain order; readers order files by their first record, not by name.
 */
export interface LogLayout {
  dir: string;
  active: string;
  stem: string;
  lock: string;
  cursor: string;
}

const SEQ_DIGITS = 12;

export function logLayout(activePath: string): LogLayout {
  const dir = dirname(activePath);
  const base = basename(activePath);
  const stem = base.endsWith('.log') ? base.slice(0, -'.log'.length) : base;
  return { dir, active: activePath, stem, lock: `${activePath}.lock`, cursor: `${activePath}.cursor.json` };
}

export function rotatedPath(layout: LogLayout, firstSeq: number, lastSeq: number): string {
  const pad = (n: number) => String(n).padStart(SEQ_DIGITS, '0');
  return join(layout.dir, `${layout.stem}-${pad(firstSeq)}-${pad(lastSeq)}.log`);
}

export function digestPath(logFile: string): string {
  return `${logFile}.digest.json`;
}

export interface RotatedFile {
  path: string;
  firstSeq: number;
  lastSeq: number;
}

export function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Rotated files of this layout, in seq order (by the range in their names). */
export function listRotated(layout: LogLayout): RotatedFile[] {
  const pattern = new RegExp(`^${escapeRegExp(layout.stem)}-(\\d+)-(\\d+)\\.log$`);
  let names: string[];
  try {
    names = readdirSync(layout.dir);
  } catch {
    return [];
  }
  const out: RotatedFile[] = [];
  for (const name of names) {
    const m = pattern.exec(name);
    if (m) out.push({ path: join(layout.dir, name), firstSeq: Number(m[1]), lastSeq: Number(m[2]) });
  }
  return out.sort((a, b) => a.firstSeq - b.firstSeq);
}
