import type { RawConfig } from '../config/schema.js';
import { silentLogger, type OperationalLogger } from '../log.js';
import { loadSigningKey } from './digest.js';
import { DecisionLogCodes, DecisionLogError } from './errors.js';
import type { DecisionSink } from './record.js';
import { createStdoutSink } from './stdout-sink.js';
import { createDecisionLog, type DecisionLog } from './writer.js';

export type DecisionLogConfig = RawConfig['decision_log'];

export interface OpenDecisionLogOptions {
  replica: string;
  env: NodeJS.ProcessEnv;
  /** The operational log: failed writes, and the file log's resumes, seals and recoveries. Default: silent. */
  logger?: OperationalLogger;
}

/**
 * The decision sink a config asks for: the durable file log, or chained
 * records on stdout for `path: "-"`. `log` is the file log (for the Redis
 * shipper and the backlog metric), null on stdout.
 */
export function openDecisionLog(config: DecisionLogConfig, options: OpenDecisionLogOptions): { sink: DecisionSink; log: DecisionLog | null } {
  const logger = options.logger ?? silentLogger;
  if (config.path === '-') {
    const sink = createStdoutSink({
      replica: options.replica,
      onError: (err) => logger.error({ err: err.message, code: (err as { code?: string }).code }, 'decision log write failed'),
    });
    return { sink, log: null };
  }
  if (config.signing_key_file !== undefined && config.signing_key_env !== undefined) {
    throw new DecisionLogError(DecisionLogCodes.KEY, 'decision_log: set signing_key_file or signing_key_env, not both');
  }
  const signingKey = loadSigningKey({ file: config.signing_key_file, env: config.signing_key_env }, options.env);
  const log = createDecisionLog({
    path: config.path,
    replica: options.replica,
    flushMs: config.flush_ms,
    fsync: config.fsync,
    rotateBytes: config.rotate_bytes,
    rotateSeconds: config.rotate_seconds,
    signingKey,
    failOpen: config.fail_open,
    logger,
  });
  return { sink: log, log };
}
