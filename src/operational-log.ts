import pino, { type Logger } from 'pino';
import type { Config } from './config/load.js';

/**
 * The operational log of a serving process (a single one, a cluster's
 * primary or one of its workers): JSON lines, asynchronous, on stdout, or on
 * stderr when the decision log is written to stdout (a single process only:
 * a cluster refuses that setting).
 */
export function createOperationalLog(config: Pick<Config, 'log_level' | 'decision_log'>): Logger {
  return pino({ level: config.log_level }, pino.destination({ dest: config.decision_log.path === '-' ? 2 : 1, sync: false }));
}
