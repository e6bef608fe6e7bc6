// Request-path normalisation. The string returned by normalizePath is the one
// the router decides policy on AND the one forwarded upstream, so the two can
// never disagree. Anything an upstream might read differently (dot segments,
// encoded separators next to '..', ';' path parameters, backslashes) is refused
// rather than "fixed", because a fix only helps if every upstream applies the
// same fix.

export type NormalizeResult = { ok: true; path: string } | { ok: false; reason: string };

const SLASH = 0x2f;
const DOT = 0x2e;
const PERCENT = 0x25;
const SEMICOLON = 0x3b;
const BACKSLASH = 0x5c;
const QUESTION = 0x3f;
const HASH = 0x23;
const SPACE = 0x20;
const DEL = 0x7f;

const HEX_UPPER = '0123456789ABCDEF';

// Per-byte classification for the single scan in normalizePath.
const K_PLAIN = 0;
const K_SLOW = 1; // '%' or ';': needs the rewriting pass
const K_CONTROL = 2;
const K_SPACE = 3;
const K_BACKSLASH = 4;
const K_QUERY_OR_FRAGMENT = 5;
const K_DOT = 6;
const K_NON_BYTE = 7;
const CHAR_KIND = new Uint8Array(256);
for (let c = 0; c < SPACE; c++) CHAR_KIND[c] = K_CONTROL;
CHAR_KIND[DEL] = K_CONTROL;
CHAR_KIND[SPACE] = K_SPACE;
CHAR_KIND[PERCENT] = K_SLOW;
CHAR_KIND[SEMICOLON] = K_SLOW;
CHAR_KIND[BACKSLASH] = K_BACKSLASH;
CHAR_KIND[QUESTION] = K_QUERY_OR_FRAGMENT;
CHAR_KIND[HASH] = K_QUERY_OR_FRAGMENT;
CHAR_KIND[DOT] = K_DOT;

function refuse(reason: string): NormalizeResult {
  return { ok: false, reason };
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}

// RFC 3986 §2.3 unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~"
function isUnreserved(c: number): boolean {
  return (
    (c >= 0x41 && c <= 0x5a) ||
    (c >= 0x61 && c <= 0x7a) ||
    (c >= 0x30 && c <= 0x39) ||
    c === 0x2d ||
    c === DOT ||
    c === 0x5f ||
    c === 0x7e
  );
}

/**
 * True when a (fully decoded) segment would be a dot segment to an upstream
 * that decodes %2F / %5C into separators and/or strips ';' path parameters
 * (Tomcat-style '..;foo'). Every piece between separators is checked.
 */
function hidesDotSegment(decoded: string): boolean {
  // Single pass (linear even for many %2F pieces): `end` is where the piece's
  // name stops, i.e. the first ';' or the separator.
  let start = 0;
  let end = -1;
  for (let i = 0; i <= decoded.length; i++) {
    const c = i < decoded.length ? decoded.charCodeAt(i) : SLASH;
    if (c === SEMICOLON) {
      if (end === -1) end = i;
      continue;
    }
    if (c !== SLASH && c !== BACKSLASH) continue;
    if (end === -1) end = i;
    const n = end - start;
    if (
      (n === 1 && decoded.charCodeAt(start) === DOT) ||
      (n === 2 && decoded.charCodeAt(start) === DOT && decoded.charCodeAt(start + 1) === DOT)
    ) {
      return true;
    }
    start = i + 1;
    end = -1;
  }
  return false;
}

/**
 * Normalise the path part of a request target (no query string) once; the
 * result is what is both decided on and forwarded.
 *
 * RFC 3986 §6.2.2 syntax-based normalisation (upper-case hex, decode
 * unreserved), except that dot segments are refused instead of removed
 * (§5.2.4): resolving them would make the decided path differ from what a
 * non-normalising upstream sees, and after the router strips a route prefix a
 * '..' is only ever an attempt to leave that prefix.
 *
 * Raw bytes 0x80-0xFF (latin1 code units, as Node would present them) are
 * accepted and forwarded unchanged; Node's default parser already rejects them
 * in the request line, and undici forwards them byte for byte. Code units above
 * 0xFF cannot be a request-line byte and are refused.
 */
export function normalizePath(rawPath: string): NormalizeResult {
  if (typeof rawPath !== 'string' || rawPath.charCodeAt(0) !== SLASH) {
    return refuse('path must start with "/"');
  }
  const len = rawPath.length;
  let needsSlowPath = false;
  for (let i = 0; i < len; i++) {
    const c = rawPath.charCodeAt(i);
    const kind = c < 0x100 ? CHAR_KIND[c] : K_NON_BYTE;
    if (kind === K_PLAIN) continue;
    switch (kind) {
      case K_SLOW:
        needsSlowPath = true;
        break;
      case K_CONTROL:
        return refuse('control character in path');
      case K_SPACE:
        return refuse('space in path');
      case K_NON_BYTE:
        return refuse('non-byte character in path');
      case K_BACKSLASH:
        // Some upstreams (IIS, some Java/Windows stacks) treat '\' as '/'.
        return refuse('backslash in path');
      case K_QUERY_OR_FRAGMENT:
        // splitTarget removes the query; a fragment is never part of a target.
        return refuse('"?" or "#" in path');
      case K_DOT:
        // Without '%' or ';' a dot segment can only be a literal '.' or '..'.
        if (rawPath.charCodeAt(i - 1) === SLASH) {
          const next = i + 1 < len ? rawPath.charCodeAt(i + 1) : SLASH;
          if (next === SLASH) return refuse('dot segment in path');
          if (next === DOT && (i + 2 >= len || rawPath.charCodeAt(i + 2) === SLASH)) {
            return refuse('dot segment in path');
          }
        }
        break;
    }
  }
  // Fast path: nothing to rewrite, return the very same string.
  if (!needsSlowPath) return { ok: true, path: rawPath };
  return normalizeSlow(rawPath);
}

function normalizeSlow(rawPath: string): NormalizeResult {
  const len = rawPath.length;
  let out = '/';
  let i = 1;
  while (i <= len) {
    // One segment: rawPath[i, segEnd). A raw '/' is the only separator;
    // '%2F' stays inside the segment (S3 keys may contain it).
    let segEnd = rawPath.indexOf('/', i);
    if (segEnd === -1) segEnd = len;
    let seg = '';
    let decoded = '';
    let run = i; // start of the current run of characters copied verbatim
    for (let j = i; j < segEnd; j++) {
      if (rawPath.charCodeAt(j) !== PERCENT) continue;
      // RFC 3986 §2.1: '%' HEXDIG HEXDIG, wholly inside this segment.
      if (j + 2 >= segEnd) return refuse('invalid percent-encoding in path');
      const hi = hexValue(rawPath.charCodeAt(j + 1));
      const lo = hexValue(rawPath.charCodeAt(j + 2));
      if (hi < 0 || lo < 0) return refuse('invalid percent-encoding in path');
      const v = (hi << 4) | lo;
      if (v === 0) return refuse('encoded NUL (%00) in path');
      const verbatim = rawPath.slice(run, j);
      const ch = String.fromCharCode(v);
      // §6.2.2.2: decode unreserved; keep everything else encoded, upper-case
      // hex (§6.2.2.1). '%2F' in particular must never become a separator.
      seg += verbatim + (isUnreserved(v) ? ch : '%' + HEX_UPPER.charAt(hi) + HEX_UPPER.charAt(lo));
      decoded += verbatim + ch;
      j += 2;
      run = j + 1;
    }
    if (run < segEnd) {
      const verbatim = rawPath.slice(run, segEnd);
      seg += verbatim;
      decoded += verbatim;
    }
    if (hidesDotSegment(decoded)) return refuse('dot segment in path');
    out += seg;
    if (segEnd < len) out += '/';
    i = segEnd + 1;
  }
  return { ok: true, path: out };
}

/**
 * Split a request-target into path and query (query includes no '?'; null
 * when absent). Fragment '#' is rejected by the caller.
 */
export function splitTarget(target: string): { path: string; query: string | null } {
  const q = target.indexOf('?');
  if (q === -1) return { path: target, query: null };
  return { path: target.slice(0, q), query: target.slice(q + 1) };
}

/**
 * True when `path` equals `prefix` or continues it at a segment boundary
 * ('/s3' matches '/s3' and '/s3/x', never '/s3x' or '/s3;x'). A trailing '/'
 * on the prefix is ignored; '/' matches everything.
 */
export function hasPathPrefix(path: string, prefix: string): boolean {
  let end = prefix.length;
  while (end > 0 && prefix.charCodeAt(end - 1) === SLASH) end--;
  if (end === 0) return true;
  if (path.length < end) return false;
  for (let i = 0; i < end; i++) {
    if (path.charCodeAt(i) !== prefix.charCodeAt(i)) return false;
  }
  return path.length === end || path.charCodeAt(end) === SLASH;
}
