// Request hygiene: refuse malformed or smuggling-shaped requests with a clean
// 4xx/5xx before anything is routed or forwarded. Node's llhttp already
// rejects most framing attacks; these checks cover what it lets through (or
// would let through with insecureHTTPParser) and what only matters to a proxy
// (Host, request-target form, header-count truncation).
//
// A caller that sends a refusal should also close the connection
// (`Connection: close`): after a framing refusal the body boundaries cannot be
// trusted (RFC 9112 §6.3).

import { isIPv6 } from 'node:net';
import type { IncomingMessage } from 'node:http';

/** The proxy sets Node's `server.maxHeadersCount` to maxHeaders + 1. */
export interface HygieneLimits {
  maxHeaders: number;
}

/** `code` is a short stable slug, e.g. 'missing_host'. */
export interface Refusal {
  status: number;
  code: string;
  detail: string;
}

const SLASH = 0x2f;
const COLON = 0x3a;

function refusal(status: number, code: string, detail: string): Refusal {
  return { status, code, detail };
}

// RFC 9110 §5.6.2 tchar.
const TCHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1;
for (let c = 0x30; c <= 0x39; c++) TCHAR[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TCHAR[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) TCHAR[c] = 1;

function isToken(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 128 || TCHAR[c] !== 1) return false;
  }
  return true;
}

// RFC 9110 §5.5: field values are VCHAR / obs-text / SP / HTAB. Any other
// control character (CR, LF, NUL above all) could split or truncate the header
// when re-serialised upstream.
function hasBadValueChar(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if ((c < 0x20 && c !== 0x09) || c === 0x7f || c > 0xff) return true;
  }
  return false;
}

// reg-name restricted to what DNS names and IPv4 literals use (RFC 3986 §2.3
// unreserved). Sub-delims and pct-encoding are legal in a URI host but no
// legitimate client sends them in Host, and they only add parsing ambiguity.
function isHostNameChar(c: number): boolean {
  return (
    (c >= 0x61 && c <= 0x7a) ||
    (c >= 0x41 && c <= 0x5a) ||
    (c >= 0x30 && c <= 0x39) ||
    c === 0x2d ||
    c === 0x2e ||
    c === 0x5f ||
    c === 0x7e
  );
}

/** RFC 9110 §7.2: Host = uri-host [ ":" port ]. Returns a problem or null. */
function hostProblem(v: string): string | null {
  if (v.length === 0) return 'Host header is empty';
  if (v.includes('@')) return 'Host must not contain userinfo ("user@host")';
  let hostEnd: number;
  if (v.charCodeAt(0) === 0x5b) {
    // IP-literal (RFC 3986 §3.2.2); zone identifiers and IPvFuture refused.
    const close = v.indexOf(']');
    if (close === -1) return 'Host has an unterminated IPv6 literal';
    const literal = v.slice(1, close);
    if (literal.includes('%') || !isIPv6(literal)) return 'Host has an invalid IPv6 literal';
    hostEnd = close + 1;
    if (hostEnd < v.length && v.charCodeAt(hostEnd) !== COLON) {
      return 'Host has unexpected characters after the IPv6 literal';
    }
  } else {
    const colon = v.indexOf(':');
    if (colon !== -1 && v.indexOf(':', colon + 1) !== -1) {
      return 'Host has more than one ":" outside an IPv6 literal';
    }
    hostEnd = colon === -1 ? v.length : colon;
    if (hostEnd === 0) return 'Host has an empty host name';
    for (let i = 0; i < hostEnd; i++) {
      if (!isHostNameChar(v.charCodeAt(i))) return 'Host contains an invalid character';
    }
  }
  if (hostEnd < v.length) {
    // Port: 1-65535, digits only, no leading zero (one canonical spelling).
    const port = v.slice(hostEnd + 1);
    if (!/^[1-9][0-9]{0,4}$/.test(port) || Number(port) > 65535) {
      return 'Host has an invalid port (must be 1-65535)';
    }
  }
  return null;
}

/**
 * RFC 9112 §6.1/§6.3: only a single 'chunked' is forwardable. Returns null
 * when acceptable, else the refusal.
 */
function transferEncodingProblem(value: string): Refusal | null {
  if (value.length === 7 && value.toLowerCase() === 'chunked') return null;
  const elements = value.split(',');
  let chunked = 0;
  let chunkedLast = false;
  let unsupported: string | null = null;
  for (let i = 0; i < elements.length; i++) {
    const el = (elements[i] as string).trim();
    const semi = el.indexOf(';');
    const name = (semi === -1 ? el : el.slice(0, semi)).trim().toLowerCase();
    if (!isToken(name)) {
      return refusal(400, 'invalid_transfer_encoding', `malformed Transfer-Encoding: ${JSON.stringify(value)}`);
    }
    if (name === 'chunked') {
      if (semi !== -1) {
        return refusal(400, 'invalid_transfer_encoding', 'the chunked transfer coding takes no parameters');
      }
      chunked++;
      chunkedLast = i === elements.length - 1;
    } else if (unsupported === null) {
      unsupported = name;
    }
  }
  if (chunked > 1) {
    return refusal(400, 'invalid_transfer_encoding', 'chunked applied more than once (RFC 9112 §7)');
  }
  if (chunked === 1 && !chunkedLast) {
    return refusal(400, 'invalid_transfer_encoding', 'chunked must be the final transfer coding (RFC 9112 §6.3)');
  }
  if (unsupported !== null) {
    return refusal(501, 'unsupported_transfer_coding', `transfer coding "${unsupported}" is not supported; only "chunked"`);
  }
  // Only reached with whitespace-padded 'chunked' that Node did not trim.
  return refusal(400, 'invalid_transfer_encoding', `malformed Transfer-Encoding: ${JSON.stringify(value)}`);
}

/**
 * Check a request's framing and Host before it is routed. Returns null when
 * it is acceptable.
 */
export function checkRequest(req: IncomingMessage, limits: HygieneLimits): Refusal | null {
  const raw = req.rawHeaders;
  // Node drops header lines beyond maxHeadersCount from req.headers (a
  // trailing Content-Length included) but keeps them in rawHeaders; forwarding
  // the truncated set would change the message framing.
  if (raw.length / 2 > limits.maxHeaders) {
    return refusal(431, 'too_many_headers', `more than ${limits.maxHeaders} header fields`);
  }
  if (req.httpVersionMajor !== 1 || (req.httpVersionMinor !== 0 && req.httpVersionMinor !== 1)) {
    // Node hands HTTP/0.9 and e.g. 'HTTP/2.0' request lines to the handler.
    return refusal(505, 'unsupported_version', `HTTP/${req.httpVersion} is not supported; use HTTP/1.1`);
  }
  const method = req.method ?? '';
  if (method === 'CONNECT') {
    return refusal(405, 'connect_not_allowed', 'CONNECT is not supported; this is a reverse proxy, not a tunnel');
  }

  // Request-target (RFC 9112 §3.2): only origin-form, plus asterisk-form for
  // OPTIONS. Absolute-form is what a forward proxy receives.
  const url = req.url ?? '';
  if (url.charCodeAt(0) !== SLASH && !(url === '*' && method === 'OPTIONS')) {
    return refusal(
      400,
      'absolute_form',
      /^[a-z][a-z0-9+.-]*:/i.test(url)
        ? 'absolute-form request target refused: this proxy is not a forward proxy; send an origin-form path'
        : 'request target must be an origin-form path starting with "/"; this proxy is not a forward proxy',
    );
  }
  if (url.includes('#')) {
    return refusal(400, 'fragment_in_target', 'request target must not contain a fragment ("#")');
  }

  let hostCount = 0;
  let host = '';
  let clCount = 0;
  let contentLength = '';
  let teCount = 0;
  let transferEncoding = '';
  let badExpect: string | null = null;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] as string;
    const value = raw[i + 1] as string;
    if (!isToken(name)) {
      return refusal(400, 'invalid_header_name', `invalid header field name ${JSON.stringify(name)}`);
    }
    if (hasBadValueChar(value)) {
      return refusal(400, 'invalid_header_value', `header ${name} contains a control character (CR, LF, NUL, ...)`);
    }
    // Cheap length switch before lower-casing: only four names matter here.
    switch (name.length) {
      case 4:
        if (name.toLowerCase() === 'host') {
          hostCount++;
          host = value;
        }
        break;
      case 6:
        if (name.toLowerCase() === 'expect' && value.toLowerCase() !== '100-continue' && badExpect === null) {
          badExpect = value;
        }
        break;
      case 14:
        if (name.toLowerCase() === 'content-length') {
          clCount++;
          contentLength = value;
        }
        break;
      case 17:
        if (name.toLowerCase() === 'transfer-encoding') {
          teCount++;
          transferEncoding = value;
        }
        break;
    }
  }

  // RFC 9112 §3.2: a client MUST send Host; a server MUST reject a request
  // with none or with more than one. Node keeps only the first in req.headers.
  if (hostCount === 0) {
    return refusal(400, 'missing_host', 'request has no Host header');
  }
  if (hostCount > 1) {
    return refusal(400, 'duplicate_host', `request has ${hostCount} Host headers`);
  }
  const hp = hostProblem(host);
  if (hp !== null) return refusal(400, 'invalid_host', hp);

  // Framing (RFC 9112 §6.1-§6.3). Any ambiguity is refused, never repaired.
  if (clCount > 1) {
    return refusal(400, 'duplicate_content_length', 'more than one Content-Length header line');
  }
  if (clCount === 1 && !/^[0-9]+$/.test(contentLength)) {
    return refusal(400, 'invalid_content_length', 'Content-Length must be a single decimal number');
  }
  if (teCount > 0) {
    if (req.httpVersionMinor === 0) {
      // §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
      return refusal(400, 'transfer_encoding_http10', 'Transfer-Encoding is not allowed in an HTTP/1.0 request');
    }
    if (teCount > 1) {
      return refusal(400, 'duplicate_transfer_encoding', 'more than one Transfer-Encoding header line');
    }
    if (clCount > 0) {
      return refusal(400, 'content_length_with_transfer_encoding', 'both Content-Length and Transfer-Encoding present');
    }
    const te = transferEncodingProblem(transferEncoding);
    if (te !== null) return te;
  }

  // RFC 9110 §10.1.1: 100-continue is the only defined expectation. Node
  // answers 417 itself unless the value merely contains "100-continue".
  if (badExpect !== null) {
    return refusal(417, 'expectation_failed', `unsupported Expect value ${JSON.stringify(badExpect)}`);
  }
  return null;
}

// RFC 9110 §7.6.1 plus the legacy / HTTP/2 connection-specific fields that
// must never be forwarded.
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'proxy-authenticate',
  'proxy-authorization',
  'http2-settings',
]);

/** True for hop-by-hop header names (expects a lower-case name). */
export function isHopByHop(name: string): boolean {
  return HOP_BY_HOP.has(name);
}

/**
 * The extra fields a Connection header names for removal (beyond the
 * hop-by-hop ones, which always go; `close` is an option, not a field); null
 * when it names none, as the usual `keep-alive` or `close` does (checked
 * first: nearly every response carries one).
 */
export function namedByConnection(value: string | string[] | undefined): Set<string> | null {
  if (value === undefined || value === 'keep-alive' || value === 'close') return null;
  const named = connectionTokens(value).filter((token) => token !== 'close' && !HOP_BY_HOP.has(token));
  return named.length === 0 ? null : new Set(named);
}

/** Lower-cased, trimmed field names listed in Connection header(s). */
export function connectionTokens(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  const out: string[] = [];
  const values = typeof value === 'string' ? [value] : value;
  for (const v of values) {
    for (const part of v.split(',')) {
      const t = part.trim().toLowerCase();
      if (t.length > 0) out.push(t);
    }
  }
  return out;
}
