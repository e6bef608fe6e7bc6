import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { DecisionEntry, DecisionSink } from '../audit/record.js';
import type { Metrics } from '../metrics/registry.js';
import { classifyFailure, countingBody, type ForwardFailure, type Forwarder } from './forward.js';
import { connectionTokens, isHopByHop } from './hygiene.js';
import { lingerOnClose } from './linger.js';
import type { Planner, Plan } from './plan.js';
import { errorResponse, type ErrorDetails } from './refuse.js';
import type { Upstream } from './route.js';

export interface HandlerDeps {
  /** Current planner; a function so a reload can swap it between requests. */
  planner: () => Planner;
  forwarder: Forwarder;
  sink: DecisionSink;
  metrics: Metrics;
  logger: Logger;
  limits: { refusalDrainBytes: number; refusalLingerMs: number };
}

type Decided = Extract<Plan, { kind: 'decided' }>;

const FAILURE_STATUS: Record<ForwardFailure, number> = {
  upstream_unreachable: 502,
  upstream_timeout: 504,
  upstream_reset: 502,
  client_aborted: 499,
};
const FAILURE_KIND: Record<ForwardFailure, string> = {
  upstream_unreachable: 'unreachable',
  upstream_timeout: 'timeout',
  upstream_reset: 'reset',
  client_aborted: 'client_aborted',
};

/**
 * The data plane for one request: plan (route, classify, locate, decide),
 * then refuse or forward, with exactly one decision record written before the
 * client sees the final status.
 */
export function createRequestHandler(deps: HandlerDeps) {
  const { forwarder, sink, metrics, logger, limits } = deps;

  return async function handleRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    // Taken once: a reload mid-request must not change the policy this request is decided and recorded under.
    const planner = deps.planner();
    const plan = planner.plan({ method: req.method!, target: req.url!, host: req.headers.host! });
    if (plan.kind === 'reject') {
      metrics.rejectedRequests.inc({ code: plan.code });
      const title = plan.status === 404 ? 'No route' : 'Bad request';
      sendError(req, res, null, { status: plan.status, code: plan.code, title, detail: plan.detail });
      return;
    }

    const id = randomUUID();
    const { decision, route } = plan;
    const upstream = route.upstream;
    metrics.decisions.inc({
      upstream: upstream.name,
      operation: plan.operation,
      decision: decision.action,
      mode: decision.mode,
      jurisdiction: decision.jurisdictions.length === 0 ? 'unknown' : decision.jurisdictions.join(','),
      reason: decision.reason,
    });
    // Would-blocks in monitor mode, and where a shadow policy disagrees: what a team watches before enforcing.
    if (decision.mode === 'monitor' && decision.rule !== null) metrics.shadowDecisions.inc({ rule: decision.rule, decision: decision.action });
    if (plan.shadow !== null) metrics.shadowDecisions.inc({ rule: plan.shadow.rule ?? 'default', decision: plan.shadow.action });

    const entry = (status: number, bytesIn: number, bytesOut: number | null, error?: string): DecisionEntry => ({
      ts: new Date().toISOString(),
      id,
      policy: planner.policy.hash,
      upstream: upstream.name,
      method: req.method!,
      path: route.upstreamPath,
      bucket: plan.bucket,
      operation: plan.operation,
      target: { host: upstream.url.host, address: null },
      location: plan.location,
      rule: decision.rule,
      mode: decision.mode,
      decision: decision.action,
      effective: decision.effective,
      reason: decision.reason,
      ...(decision.exception === undefined ? {} : { exception: decision.exception }),
      ...(decision.lockdown ? { lockdown: true } : {}),
      ...(plan.shadow === null ? {} : { shadow: { policy: planner.shadowPolicy!.hash, decision: plan.shadow.action, rule: plan.shadow.rule, reason: plan.shadow.reason } }),
      status,
      bytes_in: bytesIn,
      bytes_out: bytesOut,
      duration_ms: Math.round((performance.now() - started) * 1000) / 1000,
      client: req.socket.remoteAddress ?? '',
      ...(error === undefined ? {} : { error }),
    });

    /** Write the record; false (after answering 503) when it cannot be written: fail closed. */
    const record = async (e: DecisionEntry): Promise<boolean> => {
      metrics.requestDuration.observe({ upstream: upstream.name, decision: decision.action }, e.duration_ms / 1000);
      try {
        await sink.write(e);
        metrics.decisionLogRecords.inc();
        return true;
      } catch (err) {
        metrics.decisionLogErrors.inc();
        logger.error({ err: errorSummary(err), decision_id: id }, 'decision record could not be written');
        if (!res.headersSent && !res.destroyed) {
          sendError(req, res, upstream, {
            status: 503,
            code: 'decision_log_unavailable',
            title: 'Decision log unavailable',
            detail: 'the decision could not be recorded, so the request was not completed',
            decisionId: id,
          });
        }
        return false;
      }
    };

    if (decision.effective === 'refused') {
      if (!(await record(entry(403, 0, null)))) return;
      const rule = decision.rule ?? 'default';
      const found = decision.jurisdictions.length === 0 ? 'an unknown location' : decision.jurisdictions.join(', ');
      sendError(req, res, upstream, {
        status: 403,
        code: decision.reason,
        title: 'Write refused by residency policy',
        detail: `residency-proxy refused this ${plan.operation}: rule "${rule}" does not allow ${found} (${decision.reason}); decision id ${id}`,
        decisionId: id,
        resource: plan.path,
        extra: { rule, reason: decision.reason, jurisdictions: decision.jurisdictions },
      }, { 'x-residency-decision': 'block' });
      return;
    }

    await forward(req, res, upstream, plan, id, entry, record);
  };

  async function forward(
    req: IncomingMessage,
    res: ServerResponse,
    upstream: Upstream,
    plan: Decided,
    id: string,
    entry: (status: number, bytesIn: number, bytesOut: number | null, error?: string) => DecisionEntry,
    record: (e: DecisionEntry) => Promise<boolean>,
  ): Promise<void> {
    const { decision, route, query } = plan;
    const hasBody = requestHasBody(req.headers);
    // The decision is taken: only now may the client start sending the body (RFC 9110 §10.1.1).
    if (hasBody && isExpectContinue(req.headers)) res.writeContinue();
    const sent = { bytes: 0 };
    const abort = new AbortController();
    const onClientGone = () => {
      if (!res.writableFinished) abort.abort();
    };
    res.once('close', onClientGone);

    let response;
    try {
      response = await forwarder.send(upstream, {
        method: req.method!,
        path: query === null ? route.forwardPath : `${route.forwardPath}?${query}`,
        headers: forwardHeaders(req, upstream),
        body: hasBody ? countingBody(req, sent) : null,
        signal: abort.signal,
      });
    } catch (err) {
      res.off('close', onClientGone);
      const failure = classifyFailure(err, abort.signal.aborted || (req.destroyed && !req.complete));
      metrics.upstreamErrors.inc({ upstream: upstream.name, kind: FAILURE_KIND[failure] });
      metrics.upstreamBytes.inc({ upstream: upstream.name, direction: 'out' }, sent.bytes);
      logger.warn({ upstream: upstream.name, decision_id: id, failure, err: errorSummary(err) }, 'forwarding failed');
      const status = FAILURE_STATUS[failure];
      if (!(await record(entry(status, sent.bytes, null, failure)))) return;
      if (failure === 'client_aborted') return;
      sendError(req, res, upstream, {
        status,
        code: failure,
        title: status === 504 ? 'Upstream timeout' : 'Bad gateway',
        detail: `upstream ${upstream.name} ${failure === 'upstream_timeout' ? 'did not answer in time' : 'could not be reached'}`,
        decisionId: id,
      }, decisionHeaders(decision.action, id));
      return;
    }
    metrics.upstreamBytes.inc({ upstream: upstream.name, direction: 'out' }, sent.bytes);

    const declaredLength = response.headers['content-length'];
    const bytesOut = typeof declaredLength === 'string' && /^\d+$/.test(declaredLength) ? Number(declaredLength) : null;
    if (!(await record(entry(response.statusCode, sent.bytes, bytesOut)))) {
      // Discarded unread: destroying it emits an abort error nobody else listens for.
      response.body.on('error', () => {});
      response.body.destroy();
      return;
    }

    const headers = responseHeaders(response.headers, decision.action, id);
    if (decision.mode === 'warn' && decision.action === 'block') {
      const text = `write would be refused by rule "${decision.rule}" (${decision.reason}); decision id ${id}`;
      headers['x-residency-warning'] = text;
      headers['warning'] = `299 residency-proxy "${text}"`;
    }
    res.off('close', onClientGone);
    res.writeHead(response.statusCode, headers);
    let received = 0;
    response.body.on('data', (chunk: Buffer) => {
      received += chunk.length;
    });
    response.body.pipe(res);
    response.body.once('error', (err) => {
      metrics.upstreamErrors.inc({ upstream: upstream.name, kind: 'reset' });
      logger.warn({ upstream: upstream.name, decision_id: id, err: errorSummary(err) }, 'upstream response failed mid-body');
      res.destroy();
    });
    res.once('close', () => {
      metrics.upstreamBytes.inc({ upstream: upstream.name, direction: 'in' }, received);
      if (!res.writableFinished) response.body.destroy();
    });
  }

  /**
   * Send an error in the upstream's format. When the request body is still
   * arriving, close the connection with a bounded linger so the client reads
   * the response instead of a reset.
   */
  function sendError(
    req: IncomingMessage,
    res: ServerResponse,
    upstream: Upstream | null,
    details: ErrorDetails,
    extraHeaders: Record<string, string> = {},
  ): void {
    const out = errorResponse(upstream?.provider ?? null, details);
    const headers: Record<string, string | number> = { ...out.headers, ...extraHeaders, 'content-length': Buffer.byteLength(out.body) };
    if (!req.complete && requestHasBody(req.headers)) settleUnreadBody(req, headers);
    res.writeHead(out.status, headers);
    res.end(req.method === 'HEAD' ? undefined : out.body);
  }

  /**
   * The client may still be sending a body we will never forward. A small
   * declared body is drained so the connection stays reusable (refusals must
   * be cheap); anything else is answered with `Connection: close` and a
   * lingering close.
   */
  function settleUnreadBody(req: IncomingMessage, headers: Record<string, string | number>): void {
    const length = Number(req.headers['content-length'] ?? NaN);
    if (!isExpectContinue(req.headers) && length <= limits.refusalDrainBytes) {
      const timer = setTimeout(() => req.socket.destroy(), limits.refusalLingerMs);
      timer.unref();
      req.once('end', () => clearTimeout(timer));
      req.once('close', () => clearTimeout(timer));
      req.resume();
      return;
    }
    headers['connection'] = 'close';
    lingerOnClose(req, { maxBytes: limits.refusalDrainBytes, maxMs: limits.refusalLingerMs });
  }
}

function decisionHeaders(action: 'allow' | 'block', id: string): Record<string, string> {
  return { 'x-residency-decision': action, 'x-residency-decision-id': id };
}

export function requestHasBody(headers: IncomingHttpHeaders): boolean {
  if (headers['transfer-encoding'] !== undefined) return true;
  const length = headers['content-length'];
  return length !== undefined && length !== '0';
}

function isExpectContinue(headers: IncomingHttpHeaders): boolean {
  return headers.expect !== undefined && headers.expect.toLowerCase() === '100-continue';
}

/**
 * Request headers for the upstream, in the client's order and spelling (a
 * signature covers them): hop-by-hop headers and those named in Connection
 * dropped (RFC 9110 §7.6.1), Expect answered here, Host preserved or
 * rewritten, X-Forwarded-* appended.
 */
export function forwardHeaders(req: IncomingMessage, upstream: Upstream): string[] {
  const raw = req.rawHeaders;
  const named = req.headers.connection === undefined ? null : new Set(connectionTokens(req.headers.connection));
  const out: string[] = [];
  let forwardedFor: string | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    if (isHopByHop(lower) || lower === 'host' || lower === 'expect' || named?.has(lower)) continue;
    if (lower === 'x-forwarded-for') {
      forwardedFor = forwardedFor === null ? raw[i + 1]! : `${forwardedFor}, ${raw[i + 1]!}`;
      continue;
    }
    if (lower === 'x-forwarded-proto' || lower === 'x-forwarded-host') continue;
    out.push(name, raw[i + 1]!);
  }
  const client = req.socket.remoteAddress ?? '';
  out.push(
    'host',
    upstream.preserveHost ? req.headers.host! : upstream.hostHeader,
    'x-forwarded-for',
    forwardedFor === null ? client : `${forwardedFor}, ${client}`,
    'x-forwarded-proto',
    'encrypted' in req.socket ? 'https' : 'http',
    'x-forwarded-host',
    req.headers.host!,
  );
  return out;
}

/** Upstream response headers minus hop-by-hop ones, plus the decision headers. */
export function responseHeaders(
  headers: Record<string, string | string[] | undefined>,
  action: 'allow' | 'block',
  id: string,
): Record<string, string | string[]> {
  const named = headers.connection === undefined ? null : new Set(connectionTokens(headers.connection));
  const out: Record<string, string | string[]> = {};
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || isHopByHop(name) || named?.has(name)) continue;
    out[name] = value;
  }
  out['x-residency-decision'] = action;
  out['x-residency-decision-id'] = id;
  return out;
}

/** Error details safe for logs: code and message, never request data. */
function errorSummary(err: unknown): { code?: string; message: string } {
  const e = err as { code?: string; message?: string };
  return { ...(e.code ? { code: e.code } : {}), message: e.message ?? String(err) };
}
