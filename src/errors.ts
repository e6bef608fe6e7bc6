import createError from '@fastify/error';

/**
 * Every error the proxy raises, in one place, each with a stable code and the
 * HTTP status it maps to. The README lists these codes; a test keeps the two
 * in step.
 */
export const Errors = {
  CONFIG_INVALID: createError('RESIDENCY_ERR_CONFIG_INVALID', 'invalid configuration: %s', 500),
  BAD_REQUEST: createError('RESIDENCY_ERR_BAD_REQUEST', '%s', 400),
  POLICY_BLOCK: createError('RESIDENCY_ERR_POLICY_BLOCK', '%s', 403),
  TUNNEL_NOT_ROUTED: createError('RESIDENCY_ERR_TUNNEL_NOT_ROUTED', 'no upstream serves %s: the tunnel is refused', 403),
  NO_ROUTE: createError('RESIDENCY_ERR_NO_ROUTE', 'no upstream is configured for %s', 404),
  METHOD_NOT_ALLOWED: createError('RESIDENCY_ERR_METHOD_NOT_ALLOWED', '%s', 405),
  PROXY_AUTH_REQUIRED: createError('RESIDENCY_ERR_PROXY_AUTH_REQUIRED', 'this proxy needs Proxy-Authorization', 407),
  REQUEST_TIMEOUT: createError('RESIDENCY_ERR_REQUEST_TIMEOUT', 'the request head did not arrive in time', 408),
  PAYLOAD_TOO_LARGE: createError('RESIDENCY_ERR_PAYLOAD_TOO_LARGE', '%s', 413),
  EXPECTATION_FAILED: createError('RESIDENCY_ERR_EXPECTATION_FAILED', '%s', 417),
  MISDIRECTED_REQUEST: createError('RESIDENCY_ERR_MISDIRECTED_REQUEST', '%s', 421),
  HEADERS_TOO_LARGE: createError('RESIDENCY_ERR_HEADERS_TOO_LARGE', '%s', 431),
  INTERNAL_ERROR: createError('RESIDENCY_ERR_INTERNAL_ERROR', 'the proxy failed to handle this request', 500),
  NOT_IMPLEMENTED: createError('RESIDENCY_ERR_NOT_IMPLEMENTED', '%s', 501),
  UPSTREAM_UNREACHABLE: createError('RESIDENCY_ERR_UPSTREAM_UNREACHABLE', 'upstream %s could not be reached', 502),
  UPSTREAM_RESET: createError('RESIDENCY_ERR_UPSTREAM_RESET', 'upstream %s closed the connection', 502),
  UPSTREAM_UNRESOLVED: createError('RESIDENCY_ERR_UPSTREAM_UNRESOLVED', 'upstream %s has no located address', 502),
  DECISION_LOG_UNAVAILABLE: createError(
    'RESIDENCY_ERR_DECISION_LOG_UNAVAILABLE',
    'the decision log cannot be written; writes are refused until it can',
    503,
  ),
  SHUTTING_DOWN: createError('RESIDENCY_ERR_SHUTTING_DOWN', 'the proxy is shutting down', 503),
  TUNNEL_BUSY: createError('RESIDENCY_ERR_TUNNEL_BUSY', 'too many tunnels to new hosts are being opened', 503),
  TUNNEL_LIMIT: createError('RESIDENCY_ERR_TUNNEL_LIMIT', 'forward_proxy.max_tunnels tunnels are open', 503),
  UPSTREAM_TIMEOUT: createError('RESIDENCY_ERR_UPSTREAM_TIMEOUT', 'upstream %s did not answer in time', 504),
  VERSION_NOT_SUPPORTED: createError('RESIDENCY_ERR_VERSION_NOT_SUPPORTED', '%s', 505),
} as const;

export type ErrorName = keyof typeof Errors;

/** The stable codes, for documentation and the README check. */
export const ERROR_CODES: readonly string[] = Object.values(Errors).map((E) => new E('x').code);

/** An error's stable code (`RESIDENCY_ERR_…`), for the x-residency-error header. */
export const errorCode = (name: ErrorName): string => CODES.get(name)!.code;
const CODES = new Map((Object.keys(Errors) as ErrorName[]).map((name) => [name, new Errors[name]('')]));

/**
 * Which error an answer the proxy gives itself is: by its slug where
 * several share a status, else by its status, one error each.
 */
const BY_SLUG: Readonly<Record<string, ErrorName>> = {
  tunnel_not_routed: 'TUNNEL_NOT_ROUTED',
  upstream_reset: 'UPSTREAM_RESET',
  upstream_unresolved: 'UPSTREAM_UNRESOLVED',
  shutting_down: 'SHUTTING_DOWN',
  tunnel_busy: 'TUNNEL_BUSY',
  tunnel_limit: 'TUNNEL_LIMIT',
};
const BY_STATUS: Readonly<Record<number, ErrorName>> = {
  400: 'BAD_REQUEST',
  403: 'POLICY_BLOCK',
  404: 'NO_ROUTE',
  405: 'METHOD_NOT_ALLOWED',
  407: 'PROXY_AUTH_REQUIRED',
  408: 'REQUEST_TIMEOUT',
  413: 'PAYLOAD_TOO_LARGE',
  417: 'EXPECTATION_FAILED',
  421: 'MISDIRECTED_REQUEST',
  431: 'HEADERS_TOO_LARGE',
  500: 'INTERNAL_ERROR',
  501: 'NOT_IMPLEMENTED',
  502: 'UPSTREAM_UNREACHABLE',
  503: 'DECISION_LOG_UNAVAILABLE',
  504: 'UPSTREAM_TIMEOUT',
  505: 'VERSION_NOT_SUPPORTED',
};

/** The error for an answer with this status and slug (an unknown status: INTERNAL_ERROR, which a test keeps from happening). */
export function errorFor(status: number, slug: string): ErrorName {
  const name = BY_SLUG[slug] ?? BY_STATUS[status];
  return name !== undefined && CODES.get(name)!.statusCode === status ? name : 'INTERNAL_ERROR';
}
