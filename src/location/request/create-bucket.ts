import type { Readable } from 'node:stream';
import type { Provider } from '../../config/schema.js';
import { paramValue } from './query.js';
import { field, jsonKeyProblem } from './strict-json.js';
import { placeSignals, type Signal } from '../signals.js';

/**
 * Bucket-creating requests: where a new bucket will live is in the request
 * body, not in config. Detection is by shape (method, path, query); the body
 * is read up to a small bound, parsed without any entity or DTD processing,
 * and the exact bytes read are handed back so the proxy forwards exactly
 * what it inspected.
 */
export type CreateBucketApi = 's3' | 'gcs-xml' | 'gcs-json';

export interface CreateBucketTarget {
  readonly api: CreateBucketApi;
  /** From the path or Host; null for the GCS JSON API (the name is in the body). */
  readonly bucket: string | null;
}

export type CreateBucketLocation =
  | {
      readonly ok: true;
      readonly api: CreateBucketApi;
      /** The body's bucket name (GCS JSON), else the target's. */
      readonly bucket: string | null;
      /**
       * Where the bucket will be, as region ids / location codes for
       * placeSignals: one entry, or a GCS configurable dual-region's data
       * locations. Empty for an S3 directory bucket (its Location is a zone
       * of the endpoint's region: the hostname says where).
       */
      readonly places: readonly string[];
      /** What the body said, verbatim (LocationConstraint, location); null when absent. */
      readonly stated: string | null;
      /** No location in the request: the provider's default applies. */
      readonly defaulted: boolean;
    }
  | {
      readonly ok: false;
      readonly status: 400;
      readonly code: 'create_bucket_body_too_large' | 'create_bucket_malformed' | 'create_bucket_unreadable';
      readonly detail: string;
    };

/** The largest create-bucket body inspected; real ones are a few hundred bytes. */
export const CREATE_BUCKET_BODY_LIMIT = 64 * 1024;

// PUT /bucket?<one of these> configures a bucket; without one (any other or
// no parameter: S3 ignores unknown ones, e.g. the SDK's x-id) it creates the
// bucket. A name missing here fails closed: its body is not a create-bucket
// configuration, so it is refused as malformed rather than let through.
const S3_PUT_BUCKET_SUBRESOURCES: readonly string[] = [
  'abac', 'accelerate', 'acl', 'analytics', 'cors', 'encryption', 'intelligent-tiering', 'inventory',
  'lifecycle', 'logging', 'metadataAnnotationTable', 'metadataConfiguration', 'metadataInventoryTable',
  'metadataJournalTable', 'metadataTable', 'metrics', 'notification', 'object-lock', 'ownershipControls',
  'policy', 'publicAccessBlock', 'replication', 'requestPayment', 'tagging', 'versioning', 'website',
];
// Cloud Storage XML API: PUT Bucket metadata parameters, plus the ACL ones.
const GCS_PUT_BUCKET_SUBRESOURCES: readonly string[] = [
  'acl', 'billing', 'cors', 'defaultObjectAcl', 'encryptionConfig', 'lifecycle', 'logging', 'storageClass',
  'tagging', 'versioning', 'websiteConfig',
];

const LOCATION_VALUE = /^[A-Za-z0-9-]{1,64}$/;

/**
 * Is this a bucket-creating request? `path` is the normalised path relative
 * to the upstream; `hostBucket` the bucket a virtual-hosted Host named (S3
 * or GCS XML), else null. `method` must be the effective method (after any
 * X-HTTP-Method-Override the upstream honours).
 */
export function detectCreateBucket(
  provider: Provider,
  method: string,
  path: string,
  query: string | null,
  hostBucket: string | null,
): CreateBucketTarget | null {
  switch (provider) {
    case 's3': {
      if (method !== 'PUT' || hasAny(query, S3_PUT_BUCKET_SUBRESOURCES)) return null;
      const bucket = bucketPath(path, hostBucket);
      return bucket === null ? null : { api: 's3', bucket };
    }
    case 'gcs': {
      if (method === 'POST' && (path === '/storage/v1/b' || path === '/storage/v1/b/')) return { api: 'gcs-json', bucket: null };
      if (method !== 'PUT' || hasAny(query, GCS_PUT_BUCKET_SUBRESOURCES)) return null;
      const bucket = bucketPath(path, hostBucket);
      return bucket === null ? null : { api: 'gcs-xml', bucket };
    }
    default:
      return null;
  }
}

function hasAny(query: string | null, names: readonly string[]): boolean {
  if (query === null || query === '') return false;
  for (const n of names) if (paramValue(query, n) !== undefined) return true;
  return false;
}

/** `/` on a virtual host; `/NAME` or `/NAME/` path style. */
function bucketPath(path: string, hostBucket: string | null): string | null {
  if (hostBucket !== null) return path === '/' || path === '' ? hostBucket : null;
  if (!path.startsWith('/')) return null;
  const end = path.endsWith('/') ? path.length - 1 : path.length;
  const name = path.slice(1, end);
  if (name === '' || name.includes('/')) return null;
  try {
    return decodeURIComponent(name);
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------
// Bounded body reading
// ---------------------------------------------------------------------------

export type BoundedBody =
  | { readonly ok: true; readonly bytes: Buffer }
  | {
      readonly ok: false;
      readonly reason: 'too_large' | 'aborted';
      /**
       * Everything consumed from the stream so far (for too_large: more than
       * `limit`). The stream is left paused, not destroyed, so the caller can
       * still answer on the same connection, or forward these bytes followed
       * by the rest of the stream.
       */
      readonly bytes: Buffer;
    };

/**
 * Read a stream to its end, but no more than `limit` bytes. Resolves (never
 * rejects) with the exact bytes read, in order. Does not destroy the stream:
 * for an IncomingMessage that would kill the socket the answer goes out on.
 */
export function readBounded(stream: Readable, limit: number, signal?: AbortSignal): Promise<BoundedBody> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let total = 0;
    let settled = false;
    const finish = (result: BoundedBody) => {
      if (settled) return;
      settled = true;
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('close', onClose);
      // The 'error' listener stays (a no-op once settled): a late error must not crash the process.
      signal?.removeEventListener('abort', onAbort);
      resolve(result);
    };
    const all = () => (chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total));
    const onData = (chunk: Buffer | string) => {
      const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      chunks.push(buf);
      total += buf.length;
      if (total > limit) {
        stream.pause();
        finish({ ok: false, reason: 'too_large', bytes: all() });
      }
    };
    const onEnd = () => finish({ ok: true, bytes: all() });
    const onAbort = () => finish({ ok: false, reason: 'aborted', bytes: all() });
    // 'close' before 'end': the peer went away mid-body.
    const onClose = () => {
      if (!stream.readableEnded) onAbort();
    };
    if (signal?.aborted) return onAbort();
    if (stream.readableEnded) return onEnd();
    if (stream.destroyed) return onAbort();
    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.on('error', onAbort);
    stream.on('close', onClose);
    signal?.addEventListener('abort', onAbort, { once: true });
    stream.resume();
  });
}

// ---------------------------------------------------------------------------
// Body → location
// ---------------------------------------------------------------------------

export interface CreateBucketBodyOptions {
  /** The body is aws-chunked (SigV4 streaming): see isAwsChunked(). */
  readonly awsChunked?: boolean;
}

/** True when an S3 body is framed as aws-chunked (streaming SigV4 or trailing checksums). */
export function isAwsChunked(headers: { readonly 'content-encoding'?: string | undefined; readonly 'x-amz-content-sha256'?: string | string[] | undefined }): boolean {
  const sha = headers['x-amz-content-sha256'];
  if (typeof sha === 'string' && sha.startsWith('STREAMING-')) return true;
  const enc = headers['content-encoding'];
  return typeof enc === 'string' && enc.toLowerCase().split(',').some((e) => e.trim() === 'aws-chunked');
}

const malformed = (detail: string): CreateBucketLocation => ({ ok: false, status: 400, code: 'create_bucket_malformed', detail });

/** Work out where a bucket-creating request puts the bucket, from its (whole) body. Never throws. */
export function createBucketLocation(target: CreateBucketTarget, body: Uint8Array, options: CreateBucketBodyOptions = {}): CreateBucketLocation {
  try {
    let bytes = body;
    if (options.awsChunked && target.api !== 'gcs-json') {
      const decoded = decodeAwsChunked(bytes);
      if (decoded === null) return malformed('the aws-chunked body framing is malformed');
      bytes = decoded;
    }
    const text = decodeUtf8(bytes);
    if (text === null) return malformed('the body is not UTF-8');
    return target.api === 'gcs-json' ? gcsJsonLocation(text) : xmlLocation(target, text);
  } catch {
    return malformed('the body could not be parsed');
  }
}

function xmlLocation(target: CreateBucketTarget, text: string): CreateBucketLocation {
  const s3 = target.api === 's3';
  // S3: no configuration means us-east-1; Cloud Storage's XML API defaults to US.
  const fallback = s3 ? 'us-east-1' : 'US';
  const ok = (stated: string | null, places: string[], defaulted: boolean): CreateBucketLocation => ({
    ok: true, api: target.api, bucket: target.bucket, places, stated, defaulted,
  });
  if (text.trim() === '') return ok(null, [fallback], true);
  const doc = parseSafeXml(text);
  if (!doc.ok) return malformed(doc.error);
  if (doc.root.name !== 'CreateBucketConfiguration') return malformed(`expected CreateBucketConfiguration, found ${doc.root.name}`);
  let constraint: string | null = null;
  let directory = false;
  for (const child of doc.root.children) {
    if (child.name === 'LocationConstraint') {
      if (constraint !== null) return malformed('more than one LocationConstraint');
      if (child.children.length > 0) return malformed('LocationConstraint has child elements');
      constraint = child.text.trim();
    } else if (child.name.toLowerCase() === 'locationconstraint') {
      // Spelled differently from what the upstream reads: refuse rather than guess.
      return malformed(`unexpected element ${child.name}`);
    } else if (child.name === 'Location') {
      directory = true;
    }
  }
  if (constraint === null || constraint === '') {
    // A directory bucket names a zone in the endpoint's region, not a region.
    if (s3 && directory && constraint === null) return ok(null, [], false);
    return ok(constraint, [fallback], true);
  }
  if (!LOCATION_VALUE.test(constraint)) return malformed('LocationConstraint is not a location id');
  // S3's legacy 'EU' constraint means Ireland.
  if (s3 && constraint === 'EU') return ok(constraint, ['eu-west-1'], false);
  return ok(constraint, [constraint], false);
}

function gcsJsonLocation(text: string): CreateBucketLocation {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return malformed('the body is not JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return malformed('the body is not a JSON object');
  // Duplicate or differently spelled keys (location / Location, dataLocations /
  // data_locations) would let the upstream read another value than we did.
  const problem = jsonKeyProblem(text);
  if (problem !== null) return malformed(problem);
  const body = doc as Record<string, unknown>;
  const name = typeof body.name === 'string' ? body.name : null;
  const location = field(body, 'location');
  if (location !== undefined && (typeof location !== 'string' || !LOCATION_VALUE.test(location))) {
    return malformed('location is not a location id');
  }
  const stated = typeof location === 'string' ? location : null;
  const placement = field(body, 'customplacementconfig');
  if (placement !== undefined && placement !== null) {
    if (typeof placement !== 'object' || Array.isArray(placement)) return malformed('customPlacementConfig is not an object');
    const data = field(placement as Record<string, unknown>, 'datalocations');
    if (data !== undefined) {
      if (!Array.isArray(data) || data.length === 0 || data.length > 8) return malformed('dataLocations is not a list of locations');
      if (!data.every((d): d is string => typeof d === 'string' && LOCATION_VALUE.test(d))) return malformed('dataLocations is not a list of locations');
      // A configurable dual-region: the data rests in exactly these regions.
      return { ok: true, api: 'gcs-json', bucket: name, places: [...new Set(data)], stated, defaulted: false };
    }
  }
  return { ok: true, api: 'gcs-json', bucket: name, places: [stated ?? 'US'], stated, defaulted: stated === null };
}

/** Signals for a successful create-bucket location. */
export function createBucketSignals(location: CreateBucketLocation): Signal[] {
  if (!location.ok) return [];
  return location.places.flatMap((p) => placeSignals('create-bucket', p));
}

// ---------------------------------------------------------------------------
// aws-chunked framing (SigV4 streaming uploads)
// ---------------------------------------------------------------------------

const CHUNK_HEADER = /^([0-9a-fA-F]{1,8})(?:;[^\r\n]*)?$/;

/** Strip aws-chunked framing: `hex[;chunk-signature=…]\r\n data \r\n … 0…\r\n [trailers]`. Null when malformed. */
export function decodeAwsChunked(bytes: Uint8Array): Buffer | null {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: Buffer[] = [];
  let pos = 0;
  for (;;) {
    const eol = buf.indexOf('\r\n', pos, 'latin1');
    if (eol === -1 || eol - pos > 256) return null;
    const m = CHUNK_HEADER.exec(buf.toString('latin1', pos, eol));
    if (m === null) return null;
    const size = parseInt(m[1]!, 16);
    pos = eol + 2;
    if (size === 0) return Buffer.concat(out); // trailers (checksums) follow; not data
    if (pos + size + 2 > buf.length || buf[pos + size] !== 0x0d || buf[pos + size + 1] !== 0x0a) return null;
    out.push(buf.subarray(pos, pos + size));
    pos += size + 2;
  }
}

// ---------------------------------------------------------------------------
// A deliberately small XML reader
// ---------------------------------------------------------------------------

/*
 * Why hand-written rather than a library: the documents are tiny and fixed
 * (one element matters), and the one property that matters is what the
 * reader refuses. This one has no DTD support at all: any `<!` other than a
 * comment (DOCTYPE, ENTITY, CDATA) is an error, only the five predefined
 * entities and character references are decoded, and depth and element
 * count are bounded, so no input expands or recurses.
 */
export interface XmlElement {
  /** Local name (any namespace prefix dropped). */
  readonly name: string;
  readonly children: XmlElement[];
  /** Concatenated character data directly inside this element, entities decoded. */
  text: string;
}

export type XmlDocument = { readonly ok: true; readonly root: XmlElement } | { readonly ok: false; readonly error: string };

const XML_NAME = /[A-Za-z_][A-Za-z0-9._:-]*/y;
const XML_SPACE = /[ \t\r\n]*/y;
const MAX_DEPTH = 16;
const MAX_ELEMENTS = 512;
// A Map, not an object literal: '&constructor;' must not find Object.prototype.
const PREDEFINED: ReadonlyMap<string, string> = new Map([['lt', '<'], ['gt', '>'], ['amp', '&'], ['quot', '"'], ['apos', "'"]]);
const HEX_REF = /^#x[0-9a-fA-F]{1,6}$/;
const DEC_REF = /^#\d{1,7}$/;
const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** The bytes as UTF-8 text (a leading BOM dropped), or null when they are not UTF-8. */
export function decodeUtf8(bytes: Uint8Array): string | null {
  try {
    return UTF8.decode(bytes); // also drops a leading BOM
  } catch {
    return null;
  }
}

/** `maxElements`: a create-bucket body has a handful; a replication configuration up to 1,000 rules. */
export function parseSafeXml(text: string, maxElements = MAX_ELEMENTS): XmlDocument {
  try {
    return parseXml(text, maxElements);
  } catch {
    return { ok: false, error: 'the XML could not be parsed' };
  }
}

function parseXml(text: string, maxElements: number): XmlDocument {
  const fail = (error: string): XmlDocument => ({ ok: false, error });
  const stack: XmlElement[] = [];
  let root: XmlElement | null = null;
  let elements = 0;
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0;

  const name = (): string | null => {
    XML_NAME.lastIndex = i;
    const m = XML_NAME.exec(text);
    if (m === null) return null;
    i = XML_NAME.lastIndex;
    return m[0];
  };
  const space = () => {
    XML_SPACE.lastIndex = i;
    XML_SPACE.exec(text);
    i = XML_SPACE.lastIndex;
  };

  while (i < text.length) {
    const lt = text.indexOf('<', i);
    const chars = lt === -1 ? text.slice(i) : text.slice(i, lt);
    if (chars.length > 0) {
      const top = stack[stack.length - 1];
      if (top === undefined) {
        if (chars.trim() !== '') return fail('text outside the root element');
      } else {
        const decoded = decodeEntities(chars);
        if (decoded === null) return fail('entity references other than the predefined ones are not accepted');
        top.text += decoded;
      }
    }
    if (lt === -1) break;
    i = lt;
    if (text.startsWith('<!--', i)) {
      const end = text.indexOf('-->', i + 4);
      if (end === -1) return fail('unterminated comment');
      i = end + 3;
    } else if (text.startsWith('<!', i)) {
      return fail('DTDs, entity declarations and CDATA are not accepted');
    } else if (text.startsWith('<?', i)) {
      const end = text.indexOf('?>', i + 2);
      if (end === -1) return fail('unterminated processing instruction');
      i = end + 2;
    } else if (text.startsWith('</', i)) {
      i += 2;
      const n = name();
      if (n === null) return fail('malformed end tag');
      space();
      if (text.charCodeAt(i) !== 0x3e /* > */) return fail('malformed end tag');
      i++;
      const open = stack.pop();
      if (open === undefined || open.name !== localName(n)) return fail(`mismatched end tag ${n}`);
    } else {
      i++;
      const n = name();
      if (n === null) return fail('malformed start tag');
      if (stack.length === 0 && root !== null) return fail('more than one root element');
      if (stack.length >= MAX_DEPTH) return fail('elements nested too deeply');
      if (++elements > maxElements) return fail('too many elements');
      const el: XmlElement = { name: localName(n), children: [], text: '' };
      // Attributes are read for well-formedness only; none is used.
      for (;;) {
        space();
        if (text.startsWith('/>', i)) {
          i += 2;
          attach(el, false);
          break;
        }
        if (text.charCodeAt(i) === 0x3e /* > */) {
          i++;
          attach(el, true);
          break;
        }
        if (name() === null) return fail('malformed attribute');
        space();
        if (text.charCodeAt(i) !== 0x3d /* = */) return fail('malformed attribute');
        i++;
        space();
        const quote = text[i];
        if (quote !== '"' && quote !== "'") return fail('malformed attribute');
        const end = text.indexOf(quote, i + 1);
        if (end === -1) return fail('unterminated attribute');
        const value = text.slice(i + 1, end);
        if (value.includes('<') || decodeEntities(value) === null) return fail('malformed attribute value');
        i = end + 1;
      }
    }
  }
  if (stack.length > 0) return fail(`unclosed element ${stack[stack.length - 1]!.name}`);
  if (root === null) return fail('no root element');
  return { ok: true, root };

  function attach(el: XmlElement, open: boolean) {
    const parent = stack[stack.length - 1];
    if (parent === undefined) root = el;
    else parent.children.push(el);
    if (open) stack.push(el);
  }
}

function localName(qname: string): string {
  const colon = qname.lastIndexOf(':');
  return colon === -1 ? qname : qname.slice(colon + 1);
}

/** Decode the predefined entities and character references; null on anything else. */
function decodeEntities(s: string): string | null {
  if (!s.includes('&')) return s;
  let out = '';
  let i = 0;
  for (;;) {
    const amp = s.indexOf('&', i);
    if (amp === -1) return out + s.slice(i);
    out += s.slice(i, amp);
    const semi = s.indexOf(';', amp + 1);
    if (semi === -1 || semi - amp > 10) return null;
    const ref = s.slice(amp + 1, semi);
    if (ref.startsWith('#')) {
      const cp = HEX_REF.test(ref) ? parseInt(ref.slice(2), 16) : DEC_REF.test(ref) ? parseInt(ref.slice(1), 10) : NaN;
      if (!Number.isInteger(cp) || cp === 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return null;
      out += String.fromCodePoint(cp);
    } else {
      const v = PREDEFINED.get(ref);
      if (v === undefined) return null;
      out += v;
    }
    i = semi + 1;
  }
}
