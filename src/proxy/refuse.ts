import type { Provider } from '../config/schema.js';
import { errorCode, errorFor } from '../errors.js';

/**
 * Error responses in the upstream provider's own format, so the client's SDK
 * shows a meaningful error: S3 XML, Azure XML (plus `x-ms-error-code`, which
 * the Azure SDK reads first), GCS JSON, and RFC 9457 problem+json elsewhere.
 */
export interface ErrorResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export interface ErrorDetails {
  status: number;
  /** Short title, e.g. 'Write refused by residency policy'. */
  title: string;
  /** Full sentence for people. */
  detail: string;
  /** Stable slug: jurisdiction_not_allowed, upstream_timeout, no_route … */
  code: string;
  decisionId?: string;
  /** Path the client asked for (no query). */
  resource?: string;
  extra?: Record<string, unknown>;
}

const S3_CODES: Record<number, string> = {
  400: 'InvalidRequest',
  403: 'AccessDenied',
  404: 'NoSuchResource',
  405: 'MethodNotAllowed',
  413: 'EntityTooLarge',
  417: 'InvalidRequest',
  421: 'InvalidRequest',
  431: 'RequestHeaderSectionTooLarge',
  501: 'NotImplemented',
  502: 'BadGateway',
  503: 'ServiceUnavailable',
  504: 'GatewayTimeout',
};
const AZURE_CODES: Record<number, string> = {
  400: 'InvalidInput',
  421: 'InvalidInput',
  403: 'AuthorizationFailure',
  404: 'ResourceNotFound',
  413: 'RequestBodyTooLarge',
  502: 'BadGateway',
  503: 'ServerBusy',
  504: 'OperationTimedOut',
};

export function errorResponse(provider: Provider | null, e: ErrorDetails): ErrorResponse {
  // Every answer the proxy gives itself names its stable code, whatever the body format.
  const headers: Record<string, string> = { 'x-residency-error': errorCode(errorFor(e.status, e.code)) };
  if (e.decisionId) {
    headers['x-residency-decision-id'] = e.decisionId;
  }
  switch (provider) {
    case 's3': {
      const code = S3_CODES[e.status] ?? 'InternalError';
      headers['content-type'] = 'application/xml';
      // SDKs and CLIs print these as the request id: the decision id is what an operator looks up.
      if (e.decisionId) {
        headers['x-amz-request-id'] = e.decisionId;
        headers['x-amz-id-2'] = e.decisionId;
      }
      const body =
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error>' +
        `<Code>${code}</Code><Message>${xml(e.detail)}</Message>` +
        (e.resource ? `<Resource>${xml(e.resource)}</Resource>` : '') +
        (e.decisionId ? `<RequestId>${xml(e.decisionId)}</RequestId>` : '') +
        '</Error>';
      return { status: e.status, headers, body };
    }
    case 'azure': {
      const code = AZURE_CODES[e.status] ?? 'InternalError';
      headers['content-type'] = 'application/xml';
      headers['x-ms-error-code'] = code;
      if (e.decisionId) headers['x-ms-request-id'] = e.decisionId;
      const message = `${e.detail}\nRequestId:${e.decisionId ?? ''}\nTime:${new Date().toISOString()}`;
      const body = `<?xml version="1.0" encoding="utf-8"?>\n<Error><Code>${code}</Code><Message>${xml(message)}</Message></Error>`;
      return { status: e.status, headers, body };
    }
    case 'gcs': {
      headers['content-type'] = 'application/json; charset=UTF-8';
      if (e.decisionId) headers['x-guploader-uploadid'] = e.decisionId;
      const reason = e.status === 403 ? 'forbidden' : e.code;
      const body = JSON.stringify({
        error: { code: e.status, message: e.detail, errors: [{ message: e.detail, domain: 'global', reason }] },
      });
      return { status: e.status, headers, body };
    }
    default: {
      headers['content-type'] = 'application/problem+json';
      const body = JSON.stringify({
        type: `https://residency-proxy.dev/problems/${e.code}`,
        title: e.title,
        status: e.status,
        detail: e.detail,
        ...(e.resource ? { instance: e.resource } : {}),
        ...(e.decisionId ? { decision_id: e.decisionId } : {}),
        ...e.extra,
      });
      return { status: e.status, headers, body };
    }
  }
}

function xml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
