import { createHash } from 'node:crypto';
import { accessSync, constants, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import pino from 'pino';
import type { DecisionEntry, DecisionRecord, DecisionSink } from './record.js';
import { RECORD_VERSION } from './record.js';

export interface FileSinkOptions {
  /** A file path, or '-' for stdout. */
  path: string;
  replica: string;
  onWritten?: () => void;
  onError?: (err: Error) => void;
}

/**
 * First decision-log writer: JSON Lines through pino's destination
 * (SonicBoom), separate from the operational log. Lines are written as they
 * are hashed (no level, time or pid added), synchronously, so a record is in
 * the file before the response that depends on it goes out. `prev`/`hash`
 * chain the records with SHA-256 over the line without `hash`.
 */
export function createFileSink(options: FileSinkOptions): DecisionSink {
  const toStdout = options.path === '-';
  if (!toStdout) {
    mkdirSync(dirname(options.path), { recursive: true });
  }
  const destination = pino.destination({ dest: toStdout ? 1 : options.path, sync: true, append: true, mkdir: true });
  let broken: Error | null = null;
  destination.on('error', (err: Error) => {
    broken = err;
    options.onError?.(err);
  });
  let seq = 0;
  let prev = '0'.repeat(64);

  return {
    async write(entry: DecisionEntry) {
      const record: Omit<DecisionRecord, 'hash'> & { hash?: string } = {
        v: RECORD_VERSION,
        seq: ++seq,
        ...entry,
        replica: options.replica,
        prev,
      };
      const unsealed = JSON.stringify(record);
      const hash = createHash('sha256').update(unsealed).digest('hex');
      try {
        destination.write(`${unsealed.slice(0, -1)},"hash":"${hash}"}\n`);
      } catch (err) {
        seq--;
        broken = err as Error;
        options.onError?.(broken);
        throw err;
      }
      prev = hash;
      broken = null;
      options.onWritten?.();
    },
    healthy() {
      if (broken) return false;
      if (toStdout) return true;
      try {
        accessSync(options.path, constants.W_OK);
        return true;
      } catch {
        return false;
      }
    },
    async close() {
      destination.flushSync();
      if (!toStdout) destination.end();
    },
  };
}
