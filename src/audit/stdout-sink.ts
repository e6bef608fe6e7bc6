import pino from 'pino';
import { GENESIS_HASH, sealRecord } from './canonical.js';
import { RECORD_VERSION, type DecisionSink, type LogEntry } from './record.js';

/**
 * `decision_log.path: "-"`: chained records on stdout, for a collector that
 * owns durability (a container log driver). No fsync, rotation or seal is
 * possible on a pipe; the chain still lets the collector's copy be verified.
 * Synchronous SonicBoom writes (retrying EAGAIN), so a record is handed to
 * the pipe before the response that depends on it goes out.
 */
export function createStdoutSink(options: { replica: string; onError?: (err: Error) => void }): DecisionSink {
  const destination = pino.destination({ dest: 1, sync: true });
  let broken: Error | null = null;
  destination.on('error', (err: Error) => {
    broken = err;
    options.onError?.(err);
  });
  let seq = 0;
  let prev = GENESIS_HASH;
  return {
    async write(entry: LogEntry) {
      const { line, hash } = sealRecord({ ...entry, v: RECORD_VERSION, seq: seq + 1, replica: options.replica, prev });
      try {
        destination.write(`${line}\n`);
      } catch (err) {
        broken = err as Error;
        options.onError?.(broken);
        throw err;
      }
      seq++;
      prev = hash;
      broken = null;
    },
    healthy: () => broken === null,
    async close() {
      destination.flushSync();
    },
  };
}
