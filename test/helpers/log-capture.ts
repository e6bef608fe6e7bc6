import { Writable } from 'node:stream';
import pino, { type Logger } from 'pino';

/** One operational log line as written, its level as a name ('info', 'warn', …). */
export interface CapturedLine {
  level: string;
  msg: string;
  [field: string]: unknown;
}

/**
 * A real pino logger writing JSON lines into memory, for the parts that take
 * a `logger`: `lines` holds every line written so far (synchronously, as it is
 * written), parsed, without time, pid or hostname.
 */
export function captureLog(level: pino.LevelWithSilent = 'debug'): { logger: Logger; lines: CapturedLine[] } {
  const lines: CapturedLine[] = [];
  const stream = new Writable({
    decodeStrings: false,
    write(chunk: string | Buffer, _encoding, done) {
      for (const text of chunk.toString().split('\n')) if (text !== '') lines.push(JSON.parse(text) as CapturedLine);
      done();
    },
  });
  const logger = pino({ level, base: undefined, timestamp: false, formatters: { level: (label) => ({ level: label }) } }, stream);
  return { logger, lines };
}
