import { writeSync } from 'node:fs';
import { GENESIS_HASH } from './canonical.js';
import type { DecisionSink, LogEntry } from './record.js';
import { linesBuffer, sealNext } from './serialise.js';

export interface StdoutSinkOptions {
  replica: string;
  onError?: (err: Error) => void;
  /** write(2) on stdout, injectable so tests can fail it: bytes written, or throws. */
  writeSync?: (buffer: Buffer, offset: number, length: number) => number;
}

interface Pending {
  line: string;
  seq: number;
  hash: string;
  resolve: () => void;
  reject: (err: Error) => void;
}

/** How long to wait for a full non-blocking pipe to drain before trying again. */
const EAGAIN_WAIT_MS = 1;
const waitCell = new Int32Array(new SharedArrayBuffer(4));

/** Write all of `buffer`, waiting out EAGAIN; the bytes written before an error, and the error. */
function writeAll(write: NonNullable<StdoutSinkOptions['writeSync']>, buffer: Buffer): { written: number; error: Error | null } {
  let written = 0;
  while (written < buffer.length) {
    try {
      written += write(buffer, written, buffer.length - written);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EAGAIN' && code !== 'EBUSY') return { written, error: err as Error };
      Atomics.wait(waitCell, 0, 0, EAGAIN_WAIT_MS);
    }
  }
  return { written, error: null };
}

/**
 * `decision_log.path: "-"`: chained records on stdout, for a collector that
 * owns durability (a container log driver). No fsync, rotation or seal is
 * possible on a pipe; the chain still lets the collector's copy be verified.
 *
 * The records of one event-loop turn go out in one synchronous write(2)
 * (waiting out EAGAIN), and each write() resolves only once its line is
 * handed to the pipe, so a record is out before the response that depends on
 * it. A failed write rejects the records it did not get out whole; the chain
 * continues from the last one it did.
 */
export function createStdoutSink(options: StdoutSinkOptions): DecisionSink {
  const write = options.writeSync ?? ((buffer, offset, length) => writeSync(1, buffer, offset, length));
  let broken: Error | null = null;
  /** Last record handed to stdout whole. */
  let written = { seq: 0, hash: GENESIS_HASH };
  /** Last record given a seq (ahead of `written` while a turn's records wait). */
  let assigned = written;
  /** A failed write left part of a line out: the next write ends it first. */
  let torn = false;
  let pending: Pending[] = [];
  let flushQueued = false;

  const flush = () => {
    flushQueued = false;
    const batch = pending;
    pending = [];
    if (batch.length === 0) return;
    const head = torn ? '\n' : '';
    const buffer = linesBuffer(batch, head);
    const { written: bytes, error } = writeAll(write, buffer);
    if (error === null) {
      torn = false;
      broken = null;
      written = { seq: batch.at(-1)!.seq, hash: batch.at(-1)!.hash };
      for (const p of batch) p.resolve();
      return;
    }
    // The records that got out whole: each line up to its newline within the bytes written.
    let end = head.length;
    let done = 0;
    for (const p of batch) {
      const lineEnd = end + Buffer.byteLength(p.line) + 1;
      if (lineEnd > bytes) break;
      end = lineEnd;
      done++;
    }
    // Nothing written leaves the stream as it was; otherwise it is torn unless it stopped after a newline.
    if (bytes > 0) torn = bytes !== end;
    for (const p of batch.slice(0, done)) p.resolve();
    if (done > 0) written = { seq: batch[done - 1]!.seq, hash: batch[done - 1]!.hash };
    // The rest chained to records that are not out: the chain resumes from the last one that is.
    assigned = written;
    broken = error;
    options.onError?.(error);
    for (const p of batch.slice(done)) p.reject(error);
  };

  return {
    write(entry: LogEntry) {
      const { line, seq, hash } = sealNext(entry, options.replica, assigned);
      assigned = { seq, hash };
      const promise = new Promise<void>((resolve, reject) => pending.push({ line, seq, hash, resolve, reject }));
      if (!flushQueued) {
        flushQueued = true;
        setImmediate(flush);
      }
      return promise;
    },
    healthy: () => broken === null,
    async close() {
      flush();
    },
  };
}
