/**
 * Decision-log failures, each with a stable code. The data plane turns a
 * rejected write into a 503 (`RESIDENCY_ERR_DECISION_LOG_UNAVAILABLE`); these
 * codes say why, for the operational log and the CLI.
 */
export const DecisionLogCodes = {
  /** A batch could not be written or fsync'd (disk full, permission, I/O error, file moved away). */
  WRITE_FAILED: 'RESIDENCY_ERR_DECISION_LOG_WRITE_FAILED',
  /** The writer is closed (shutdown). */
  CLOSED: 'RESIDENCY_ERR_DECISION_LOG_CLOSED',
  /** The existing log cannot be continued: its last complete line is not a record. */
  CORRUPT: 'RESIDENCY_ERR_DECISION_LOG_CORRUPT',
  /** Another live process writes this log. */
  LOCKED: 'RESIDENCY_ERR_DECISION_LOG_LOCKED',
  /** The signing key or the client-address salt cannot be loaded. */
  KEY: 'RESIDENCY_ERR_DECISION_LOG_KEY',
  /** Shipping to Redis failed (retried; never fails a request). */
  SHIP_FAILED: 'RESIDENCY_ERR_DECISION_LOG_SHIP_FAILED',
} as const;

export type DecisionLogCode = (typeof DecisionLogCodes)[keyof typeof DecisionLogCodes];

export class DecisionLogError extends Error {
  constructor(
    readonly code: DecisionLogCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'DecisionLogError';
  }
}

/** `code: message` of an errno-style error, for messages. */
export function describeError(err: unknown): string {
  const e = err as { code?: string; message?: string };
  return e.code && !String(e.message).startsWith(e.code) ? `${e.code}: ${e.message ?? ''}` : (e.message ?? String(err));
}
