import createError from '@fastify/error';

/**
 * Every error the proxy raises, in one place, each with a stable code and the
 * HTTP status it maps to. The README lists these codes; a test keeps the two
 * in step.
 */
export const Errors = {
  CONFIG_INVALID: createError('RESIDENCY_ERR_CONFIG_INVALID', 'invalid configuration: %s', 500),
  BAD_REQUEST: createError('RESIDENCY_ERR_BAD_REQUEST', '%s', 400),
  NO_ROUTE: createError('RESIDENCY_ERR_NO_ROUTE', 'no upstream is configured for %s', 404),
  POLICY_BLOCK: createError('RESIDENCY_ERR_POLICY_BLOCK', '%s', 403),
  CANNOT_DECIDE: createError('RESIDENCY_ERR_CANNOT_DECIDE', 'the proxy could not decide: %s', 503),
  DECISION_LOG_UNAVAILABLE: createError(
    'RESIDENCY_ERR_DECISION_LOG_UNAVAILABLE',
    'the decision log cannot be written; writes are refused until it can',
    503,
  ),
  UPSTREAM_UNREACHABLE: createError('RESIDENCY_ERR_UPSTREAM_UNREACHABLE', 'upstream %s could not be reached', 502),
  UPSTREAM_TIMEOUT: createError('RESIDENCY_ERR_UPSTREAM_TIMEOUT', 'upstream %s did not answer in time', 504),
  UPSTREAM_RESET: createError('RESIDENCY_ERR_UPSTREAM_RESET', 'upstream %s closed the connection', 502),
} as const;

export type ErrorName = keyof typeof Errors;

/** The stable codes, for documentation and the README check. */
export const ERROR_CODES: readonly string[] = Object.values(Errors).map((E) => new E('x').code);
