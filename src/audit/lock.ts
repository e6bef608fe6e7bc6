import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { DecisionLogCodes, DecisionLogError } from './errors.js';

/**
 * One writer per decision log: a second process (or a second log object in
 * this one) appending would fork the chain. The lock is a file holding the
 * writer's pid, beside the log.
 */

/** Logs this process has open: the pid in the lock file cannot tell two writers in one process apart. */
const openInProcess = new Set<string>();

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Take the lock `lock` for the log `active`; throws DecisionLogError (LOCKED) when another writer holds it. */
export function lockLog(lock: string, active: string): void {
  const key = resolve(lock);
  if (openInProcess.has(key)) {
    throw new DecisionLogError(DecisionLogCodes.LOCKED, `${active} is already open in this process`);
  }
  try {
    writeFileSync(lock, `${process.pid}\n`, { flag: 'wx' });
    openInProcess.add(key);
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const pid = Number(readFileSync(lock, 'utf8').trim());
  // In a container the previous process may have had our pid: that one is gone.
  if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && pidAlive(pid)) {
    throw new DecisionLogError(DecisionLogCodes.LOCKED, `${active} is being written by process ${pid} (lock ${lock})`);
  }
  writeFileSync(lock, `${process.pid}\n`);
  openInProcess.add(key);
}

/** Release a lock this process holds (a lock another process took over is left alone). */
export function unlockLog(lock: string): void {
  openInProcess.delete(resolve(lock));
  try {
    if (readFileSync(lock, 'utf8').trim() === String(process.pid)) unlinkSync(lock);
  } catch {
    // Already gone.
  }
}
