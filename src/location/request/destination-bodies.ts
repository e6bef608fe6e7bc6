import { decodeAwsChunked } from './aws-chunked.js';
import { decodeUtf8 } from './body.js';
import { parseSafeXml, type XmlElement } from './safe-xml.js';
import { field, jsonKeyProblem } from './strict-json.js';
import { GCS_BUCKET } from './azure-gcs.js';

/**
 * Requests whose data lands somewhere other than their own target, because
 * the body says so: S3 bucket configurations that make S3 copy data into
 * another bucket, Cloud Storage bucket relocation and compose, and the
 * Cloud Storage JSON batch endpoint (whose parts are requests of their own).
 * Pure parsers over a body the caller has already read (bounded). Every
 * function answers, never throws; anything it cannot read with certainty is
 * "not ok", and the caller refuses the request (fail closed).
 */

/** Where a body says data goes: buckets (on the same service; located by the caller) and places (region/location ids such as 'eu-west-1', 'EU', 'us-central1', 'nam4'). */
export interface Destinations {
  readonly buckets: readonly string[];
  readonly places: readonly string[];
}

export type BodyReading =
  | { readonly ok: true; readonly destinations: Destinations }
  | { readonly ok: false; readonly code: string; readonly detail: string };

/** Cloud Storage JSON batch: each inner request of POST /batch/storage/v1. */
export interface BatchPart {
  readonly method: string;
  /** Path and query as written, e.g. /storage/v1/b/b1/o/x?alt=json (an absolute target's scheme and host removed). */
  readonly target: string;
  /** Lower-case names. */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Uint8Array;
}

export type BatchReading =
  | { readonly ok: true; readonly parts: readonly BatchPart[] }
  | { readonly ok: false; readonly code: string; readonly detail: string };

const DESTINATION_CODE = 'unreadable_destination';
const BATCH_CODE = 'unreadable_batch';

/** Thrown inside this module only; every exported function turns it into a not-ok answer. */
class Unreadable extends Error {}

function unreadable(detail: string): never {
  throw new Unreadable(detail);
}

function failure(code: string, error: unknown): { ok: false; code: string; detail: string } {
  return { ok: false, code, detail: error instanceof Unreadable ? error.message : 'the body could not be parsed' };
}

function utf8(bytes: Uint8Array): string {
  return decodeUtf8(bytes) ?? unreadable('the body is not UTF-8');
}

/** Order kept, duplicates dropped. */
function destinations(buckets: Iterable<string>, places: Iterable<string>): Destinations {
  return { buckets: [...new Set(buckets)], places: [...new Set(places)] };
}

// ---------------------------------------------------------------------------
// S3: configurations that make S3 itself write data elsewhere
// ---------------------------------------------------------------------------

/*
 * Element paths from the S3 API reference (PutBucketReplication, Destination;
 * PutBucketInventoryConfiguration, InventoryS3BucketDestination;
 * PutBucketLogging, LoggingEnabled; PutBucketAnalyticsConfiguration,
 * AnalyticsS3BucketDestination; CreateBucketMetadataTableConfiguration,
 * S3TablesDestination; RestoreObject, RestoreRequest, S3Location).
 *
 * Deliberately not here, because their bodies name no place data is written to:
 * - metadataConfiguration (S3 Metadata V2) and metadataJournalTable /
 *   metadataInventoryTable / metadataAnnotationTable: the tables always live
 *   in an AWS managed table bucket in the bucket's own Region and account;
 *   the body carries only expiry, state and encryption settings.
 * - notification: SNS, SQS, Lambda and EventBridge receive event records
 *   (key, size, ETag), not object data, and S3 requires those targets to be
 *   in the bucket's own Region.
 * - lifecycle, intelligent-tiering: storage classes within the bucket.
 * - website: redirects answer readers; nothing is written.
 * - CopyObject, UploadPartCopy: the source is a header, the target the path.
 * S3 Batch Operations jobs (reports, copy targets) go to the S3 Control
 * endpoint, another API.
 */

/** Elements an S3 configuration body may hold: S3 allows up to 1,000 replication rules. */
const S3_CONFIG_MAX_ELEMENTS = 20_000;

/** S3 request bodies that make S3 itself write data elsewhere. */
export type S3ConfigKind = 'replication' | 'inventory' | 'logging' | 'analytics' | 'metadataTable' | 'restore';

/** Which request carries each kind's body: method and query parameter, on a bucket or an object. */
export const S3_DESTINATION_REQUESTS: readonly {
  readonly kind: S3ConfigKind;
  readonly method: 'PUT' | 'POST';
  readonly subresource: string;
  readonly on: 'bucket' | 'object';
}[] = [
  { kind: 'replication', method: 'PUT', subresource: 'replication', on: 'bucket' },
  { kind: 'inventory', method: 'PUT', subresource: 'inventory', on: 'bucket' },
  { kind: 'logging', method: 'PUT', subresource: 'logging', on: 'bucket' },
  { kind: 'analytics', method: 'PUT', subresource: 'analytics', on: 'bucket' },
  { kind: 'metadataTable', method: 'POST', subresource: 'metadataTable', on: 'bucket' },
  // A SELECT restore writes its output to OutputLocation (S3 Select: existing customers only).
  { kind: 'restore', method: 'POST', subresource: 'restore', on: 'object' },
];

/** One step below the root; optional: an element whose absence means "no destination", not a malformed body. */
interface Step {
  readonly name: string;
  readonly optional?: boolean;
}

type ValueReader = (value: string, where: string) => { bucket?: string; place?: string };

interface S3Shape {
  readonly root: string;
  readonly path: readonly Step[];
  readonly read: ValueReader;
}

const S3_SHAPES: Readonly<Record<S3ConfigKind, S3Shape>> = {
  // Every rule counts, Disabled ones too: which rules are live is S3's business, not ours.
  replication: { root: 'ReplicationConfiguration', path: [{ name: 'Rule' }, { name: 'Destination' }, { name: 'Bucket' }], read: s3BucketArn },
  inventory: { root: 'InventoryConfiguration', path: [{ name: 'Destination' }, { name: 'S3BucketDestination' }, { name: 'Bucket' }], read: s3BucketArn },
  // An empty BucketLoggingStatus turns logging off.
  logging: { root: 'BucketLoggingStatus', path: [{ name: 'LoggingEnabled', optional: true }, { name: 'TargetBucket' }], read: plainBucketName },
  // Storage class analysis without DataExport keeps its findings to itself.
  analytics: {
    root: 'AnalyticsConfiguration',
    path: [{ name: 'StorageClassAnalysis' }, { name: 'DataExport', optional: true }, { name: 'Destination' }, { name: 'S3BucketDestination' }, { name: 'Bucket' }],
    read: s3BucketArn,
  },
  metadataTable: { root: 'MetadataTableConfiguration', path: [{ name: 'S3TablesDestination' }, { name: 'TableBucketArn' }], read: tableBucketArn },
  // A plain restore (no OutputLocation) brings the object back in place.
  restore: { root: 'RestoreRequest', path: [{ name: 'OutputLocation', optional: true }, { name: 'S3' }, { name: 'BucketName' }], read: plainBucketName },
};

export interface S3BodyOptions {
  /** The body is aws-chunked (SigV4 streaming): see isAwsChunked(). */
  readonly awsChunked?: boolean;
}

/** Every destination an S3 body of this kind names. Never throws. */
export function s3ConfigDestinations(kind: S3ConfigKind, body: Uint8Array, options: S3BodyOptions = {}): BodyReading {
  try {
    // Own keys only: a caller's 'constructor' must not find Object.prototype's.
    if (!Object.hasOwn(S3_SHAPES, kind)) return unreadable(`unknown configuration kind ${String(kind)}`);
    const shape = S3_SHAPES[kind];
    let bytes = body;
    if (options.awsChunked) bytes = decodeAwsChunked(bytes) ?? unreadable('the aws-chunked body framing is malformed');
    const text = utf8(bytes);
    if (text.trim() === '') return unreadable('the body is empty');
    // Up to 1,000 replication rules of a dozen elements each (the body itself is bounded at 1 MiB).
    const doc = parseSafeXml(text, S3_CONFIG_MAX_ELEMENTS);
    if (!doc.ok) return unreadable(doc.error);
    if (doc.root.name !== shape.root) return unreadable(`expected ${shape.root}, found ${doc.root.name}`);
    const buckets: string[] = [];
    const places: string[] = [];
    let where = shape.root;
    let nodes: XmlElement[] = [doc.root];
    for (const step of shape.path) {
      where = `${where}/${step.name}`;
      const next: XmlElement[] = [];
      for (const node of nodes) {
        const found = childElements(node, step.name);
        if (found.length === 0 && !step.optional) return unreadable(`${where} is missing`);
        next.push(...found);
      }
      nodes = next;
    }
    for (const leaf of nodes) {
      if (leaf.children.length > 0) return unreadable(`${where} has child elements`);
      const found = shape.read(leaf.text.trim(), where);
      if (found.bucket !== undefined) buckets.push(found.bucket);
      if (found.place !== undefined) places.push(found.place);
    }
    return { ok: true, destinations: destinations(buckets, places) };
  } catch (error) {
    return failure(DESTINATION_CODE, error);
  }
}

/** Children named exactly `name` (S3 matches case-sensitively); a differently-cased one is refused, not guessed at. */
function childElements(parent: XmlElement, name: string): XmlElement[] {
  const lower = name.toLowerCase();
  const found: XmlElement[] = [];
  for (const child of parent.children) {
    if (child.name === name) found.push(child);
    else if (child.name.toLowerCase() === lower) unreadable(`unexpected element ${child.name} (S3 reads ${name})`);
  }
  return found;
}

// Legacy us-east-1 names allow upper case and underscores, up to 255 characters.
const S3_BUCKET_NAME = /^[A-Za-z0-9._-]{1,255}$/;
const ARN_PARTITION = /^aws(?:-[a-z]+)*$/; // aws, aws-cn, aws-us-gov, aws-iso, aws-iso-b, aws-eusc, …
const REGION = /^[a-z]{2,4}(?:-[a-z]+)+-\d{1,2}$/;
const ACCOUNT = /^\d{12}$/;
const ACCESS_POINT = /^accesspoint\/[a-z0-9-]{3,50}$/;
const TABLE_BUCKET = /^bucket\/[a-z0-9_-]{3,63}$/;

interface Arn {
  readonly service: string;
  readonly region: string;
  readonly account: string;
  readonly resource: string;
}

function parseArn(value: string, where: string): Arn {
  const fields = value.split(':');
  if (fields.length < 6 || fields[0] !== 'arn' || !ARN_PARTITION.test(fields[1]!)) return unreadable(`${where} is not an ARN`);
  return { service: fields[2]!, region: fields[3]!, account: fields[4]!, resource: fields.slice(5).join(':') };
}

/** `arn:PARTITION:s3:::NAME` → the bucket; `arn:PARTITION:s3:REGION:ACCOUNT:accesspoint/NAME` → its Region. */
function s3BucketArn(value: string, where: string): { bucket?: string; place?: string } {
  const arn = parseArn(value, where);
  if (arn.service !== 's3') return unreadable(`${where} is not an S3 bucket ARN (service ${arn.service})`);
  if (arn.region === '' && arn.account === '') {
    if (!S3_BUCKET_NAME.test(arn.resource)) return unreadable(`${where} does not name a bucket`);
    return { bucket: arn.resource };
  }
  // A Multi-Region Access Point (no Region, an account) spreads data over Regions it alone knows.
  if (arn.region === '') return unreadable(`${where} names no single Region`);
  if (!REGION.test(arn.region) || !ACCOUNT.test(arn.account) || !ACCESS_POINT.test(arn.resource)) {
    return unreadable(`${where} is neither a bucket nor an access point ARN`);
  }
  return { place: arn.region };
}

/** `arn:PARTITION:s3tables:REGION:ACCOUNT:bucket/NAME` → its Region (a table bucket is not located by name). */
function tableBucketArn(value: string, where: string): { place: string } {
  const arn = parseArn(value, where);
  if (arn.service !== 's3tables' || !REGION.test(arn.region) || !ACCOUNT.test(arn.account) || !TABLE_BUCKET.test(arn.resource)) {
    return unreadable(`${where} is not a table bucket ARN`);
  }
  return { place: arn.region };
}

function plainBucketName(value: string, where: string): { bucket: string } {
  if (!S3_BUCKET_NAME.test(value)) return unreadable(`${where} is not a bucket name`);
  return { bucket: value };
}

// ---------------------------------------------------------------------------
// Cloud Storage JSON API bodies
// ---------------------------------------------------------------------------

const LOCATION_VALUE = /^[A-Za-z0-9-]{1,64}$/;
// 3..63 characters, or up to 222 when dotted; lower case only.

/** POST /storage/v1/b/BUCKET/relocate: destinationLocation, destinationCustomPlacementConfig.dataLocations. Never throws. */
export function gcsRelocateDestinations(body: Uint8Array): BodyReading {
  try {
    const doc = readJsonObject(utf8(body));
    const location = field(doc, 'destinationlocation');
    if (typeof location !== 'string' || !LOCATION_VALUE.test(location)) return unreadable('destinationLocation is missing or not a location id');
    const places = [location];
    const placement = field(doc, 'destinationcustomplacementconfig');
    if (placement !== undefined && placement !== null) {
      if (typeof placement !== 'object' || Array.isArray(placement)) return unreadable('destinationCustomPlacementConfig is not an object');
      const data = field(placement as Record<string, unknown>, 'datalocations');
      if (data !== undefined) {
        if (!Array.isArray(data) || data.length === 0 || data.length > 8) return unreadable('dataLocations is not a list of locations');
        for (const d of data) {
          if (typeof d !== 'string' || !LOCATION_VALUE.test(d)) return unreadable('dataLocations is not a list of locations');
          places.push(d);
        }
      }
    }
    return { ok: true, destinations: destinations([], places) };
  } catch (error) {
    return failure(DESTINATION_CODE, error);
  }
}

/** Compose: a `destination.bucket` naming a bucket (perhaps not the path's). No destination resource: nothing beyond the path. Never throws. */
export function gcsComposeDestinations(body: Uint8Array): BodyReading {
  try {
    const doc = readJsonObject(utf8(body));
    const destination = field(doc, 'destination');
    if (destination === undefined || destination === null) return { ok: true, destinations: destinations([], []) };
    if (typeof destination !== 'object' || Array.isArray(destination)) return unreadable('destination is not an object');
    const bucket = field(destination as Record<string, unknown>, 'bucket');
    if (bucket === undefined || bucket === null) return { ok: true, destinations: destinations([], []) };
    if (typeof bucket !== 'string' || !GCS_BUCKET.test(bucket)) return unreadable('destination.bucket is not a bucket name');
    return { ok: true, destinations: destinations([bucket], []) };
  } catch (error) {
    return failure(DESTINATION_CODE, error);
  }
}

/**
 * A bucket resource (JSON insert, patch or update): `logging.logBucket`
 * is where Cloud Storage writes the bucket's usage and storage logs, as new
 * objects. No logging: nothing beyond the bucket itself. Never throws.
 */
export function gcsBucketResourceDestinations(body: Uint8Array): BodyReading {
  try {
    if (body.length === 0) return { ok: true, destinations: destinations([], []) };
    const logging = field(readJsonObject(utf8(body)), 'logging');
    if (logging === undefined || logging === null) return { ok: true, destinations: destinations([], []) };
    if (typeof logging !== 'object' || Array.isArray(logging)) return unreadable('logging is not an object');
    const bucket = field(logging as Record<string, unknown>, 'logbucket');
    if (bucket === undefined || bucket === null || bucket === '') return { ok: true, destinations: destinations([], []) };
    if (typeof bucket !== 'string' || !GCS_BUCKET.test(bucket)) return unreadable('logging.logBucket is not a bucket name');
    return { ok: true, destinations: destinations([bucket], []) };
  } catch (error) {
    return failure(DESTINATION_CODE, error);
  }
}

/** Cloud Storage XML API `PUT /BUCKET?logging`: `Logging/LogBucket` receives the logs. Never throws. */
export function gcsXmlLoggingDestinations(body: Uint8Array): BodyReading {
  try {
    const doc = parseSafeXml(utf8(body));
    if (!doc.ok) return unreadable(doc.error);
    if (doc.root.name !== 'Logging') return unreadable(`expected Logging, found ${doc.root.name}`);
    const named = doc.root.children.filter((c) => c.name === 'LogBucket');
    if (named.length > 1) return unreadable('more than one LogBucket');
    if (named.length === 0 || named[0]!.text.trim() === '') return { ok: true, destinations: destinations([], []) };
    const bucket = named[0]!.text.trim();
    if (!GCS_BUCKET.test(bucket)) return unreadable('LogBucket is not a bucket name');
    return { ok: true, destinations: destinations([bucket], []) };
  } catch (error) {
    return failure(DESTINATION_CODE, error);
  }
}

function readJsonObject(text: string): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return unreadable('the body is not JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return unreadable('the body is not a JSON object');
  // A reader that keeps the last of two equal keys (or reads another
  // spelling: Google also takes snake_case) could see what we did not.
  const problem = jsonKeyProblem(text);
  if (problem !== null) return unreadable(problem);
  return doc as Record<string, unknown>;
}

// ---------------------------------------------------------------------------
// Cloud Storage JSON batch (multipart/mixed of application/http parts)
// ---------------------------------------------------------------------------

/** Google refuses batches of more than 100 calls. */
export const GCS_BATCH_MAX_PARTS = 100;
const MAX_HEADERS = 64;
const MAX_LINE = 8 * 1024;
const MAX_HEADER_BYTES = 32 * 1024;
const BATCH_HOSTS: readonly string[] = ['storage.googleapis.com', 'www.googleapis.com'];
// RFC 2046 boundary characters; a boundary may not end in a space.
const BOUNDARY = /^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$/;
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const HEADER_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$/;
const CONTROL = /[\u0000-\u0008\u000a-\u001f\u007f]/;
const REQUEST_LINE = /^([A-Z]{1,20}) ([\x21-\x7e]+)(?: (HTTP\/1\.[01]))?$/;
const ABSOLUTE_TARGET = /^(https?):\/\/([^/?#]*)(.*)$/i;
const IDENTITY_ENCODINGS: ReadonlySet<string> = new Set(['7bit', '8bit', 'binary']);

export interface GcsBatchOptions {
  /**
   * Hosts (host or host:port, any case) accepted in absolute inner targets
   * besides Google's own. Clients pointed at this proxy write the proxy's
   * host there (the Python client writes absolute URLs).
   */
  readonly extraHosts?: readonly string[];
}

/** Split a batch body into its inner requests. Never throws. */
export function parseGcsBatch(contentType: string | undefined, body: Uint8Array, options: GcsBatchOptions = {}): BatchReading {
  try {
    const boundary = multipartBoundary(contentType);
    utf8(body); // validity only; offsets below are byte offsets
    const bytes = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    // latin1 maps each byte to one character: string offsets are byte offsets.
    const text = bytes.toString('latin1');
    const hosts = new Set([...BATCH_HOSTS, ...(options.extraHosts ?? [])].map((h) => h.toLowerCase()));
    const ranges = partRanges(text, boundary);
    if (ranges.length === 0) return unreadable('the batch has no parts');
    if (ranges.length > GCS_BATCH_MAX_PARTS) return unreadable(`the batch has more than ${GCS_BATCH_MAX_PARTS} parts`);
    const parts = ranges.map(([start, end], n) => readPart(text, bytes, start, end, hosts, n + 1));
    return { ok: true, parts };
  } catch (error) {
    return failure(BATCH_CODE, error);
  }
}

function multipartBoundary(contentType: string | undefined): string {
  if (contentType === undefined) return unreadable('the batch has no Content-Type');
  const semi = contentType.indexOf(';');
  const mediaType = (semi === -1 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
  if (mediaType !== 'multipart/mixed') return unreadable('the batch is not multipart/mixed');
  const params = semi === -1 ? new Map<string, string>() : mediaParams(contentType.slice(semi + 1));
  const boundary = params.get('boundary');
  if (boundary === undefined) return unreadable('the batch Content-Type has no boundary');
  if (!BOUNDARY.test(boundary)) return unreadable('the batch boundary is not a valid boundary');
  return boundary;
}

/** `; name=value; name="quoted \" value"` → lower-case names; a repeated name is refused. */
function mediaParams(s: string): Map<string, string> {
  const params = new Map<string, string>();
  let i = 0;
  const skipSpace = () => {
    while (s[i] === ' ' || s[i] === '\t') i++;
  };
  while (i < s.length) {
    skipSpace();
    if (s[i] === ';') {
      i++;
      continue;
    }
    if (i >= s.length) break;
    const eq = s.indexOf('=', i);
    if (eq === -1) return unreadable('a Content-Type parameter has no value');
    const name = s.slice(i, eq).trim().toLowerCase();
    if (!TOKEN.test(name)) return unreadable('a Content-Type parameter name is malformed');
    i = eq + 1;
    let value = '';
    if (s[i] === '"') {
      i++;
      for (;;) {
        if (i >= s.length) return unreadable('an unterminated quoted Content-Type parameter');
        const ch = s[i]!;
        if (ch === '"') break;
        if (ch === '\\') i++;
        value += s[i] ?? '';
        i++;
      }
      i++;
    } else {
      const start = i;
      while (i < s.length && s[i] !== ';' && s[i] !== ' ' && s[i] !== '\t') i++;
      value = s.slice(start, i);
    }
    skipSpace();
    if (i < s.length && s[i] !== ';') return unreadable('a Content-Type parameter is malformed');
    if (params.has(name)) return unreadable(`the Content-Type parameter ${name} appears more than once`);
    params.set(name, value);
  }
  return params;
}

/**
 * The [start, end) of each part's content (RFC 2046): a delimiter is a line
 * that is `--boundary` plus optional padding; the line break before it
 * belongs to it; `--boundary--` closes. Lines may end in CRLF or LF.
 * `--boundary` anywhere else (mid-line, or a line that goes on after it) is
 * refused, in the preamble and epilogue too: RFC 2046 forbids it in content,
 * and parsers disagree about where such text splits.
 */
function partRanges(text: string, boundary: string): [number, number][] {
  const dashBoundary = `--${boundary}`;
  const ranges: [number, number][] = [];
  let contentStart = -1; // after the latest delimiter line
  let closed = false;
  // Resume after each delimiter line: a boundary of dashes must not match inside its own close.
  let resumeAt = 0;
  for (let at = text.indexOf(dashBoundary); at !== -1; at = text.indexOf(dashBoundary, resumeAt)) {
    if (at > 0 && text[at - 1] !== '\n') return unreadable('the boundary appears inside a line');
    if (closed) return unreadable('a boundary line follows the closing boundary');
    let i = at + dashBoundary.length;
    const close = text.startsWith('--', i);
    if (close) i += 2;
    while (text[i] === ' ' || text[i] === '\t') i++;
    let lineEnd: number;
    if (text.startsWith('\r\n', i)) lineEnd = i + 2;
    else if (text[i] === '\n') lineEnd = i + 1;
    else if (i === text.length && close) lineEnd = i;
    else return unreadable('a line begins with the boundary but is not a delimiter');
    if (contentStart !== -1) {
      const breakBefore = text[at - 2] === '\r' ? 2 : 1;
      ranges.push([contentStart, Math.max(contentStart, at - breakBefore)]);
    }
    if (ranges.length > GCS_BATCH_MAX_PARTS) return unreadable(`the batch has more than ${GCS_BATCH_MAX_PARTS} parts`);
    contentStart = lineEnd;
    resumeAt = Math.max(lineEnd, at + 1);
    closed = close;
  }
  // A missing close is also what a truncated body looks like.
  if (!closed) return unreadable('the batch has no closing boundary');
  return ranges;
}

function readPart(text: string, bytes: Buffer, start: number, end: number, hosts: ReadonlySet<string>, n: number): BatchPart {
  const mime = readHeaders(text, start, end, `part ${n}`);
  if (!mime.blankLine) return unreadable(`part ${n} has no blank line after its headers`);
  const contentType = mime.headers['content-type'];
  if (contentType === undefined || contentType.split(';')[0]!.trim().toLowerCase() !== 'application/http') {
    return unreadable(`part ${n} is not application/http`);
  }
  const encoding = mime.headers['content-transfer-encoding'];
  if (encoding !== undefined && !IDENTITY_ENCODINGS.has(encoding.toLowerCase())) return unreadable(`part ${n} has Content-Transfer-Encoding ${encoding}`);

  const lineEnd = text.indexOf('\n', mime.next);
  const requestLineEnd = lineEnd === -1 || lineEnd >= end ? end : lineEnd;
  const requestLine = stripCr(text.slice(mime.next, requestLineEnd), `part ${n}`);
  const m = REQUEST_LINE.exec(requestLine);
  if (m === null) return unreadable(`part ${n} does not begin with a request line`);
  const method = m[1]!;
  const target = requestTarget(m[2]!, hosts, n);

  const inner = readHeaders(text, Math.min(requestLineEnd + 1, end), end, `request ${n}`);
  if (inner.headers['transfer-encoding'] !== undefined) return unreadable(`request ${n} has Transfer-Encoding`);
  const body = new Uint8Array(bytes.subarray(inner.next, end));
  const length = inner.headers['content-length'];
  if (length !== undefined && (!/^\d{1,10}$/.test(length) || Number(length) !== body.length)) {
    return unreadable(`request ${n} has a Content-Length that is not its body's length`);
  }
  return { method, target, headers: inner.headers, body };
}

/** Origin-form as written; absolute-form (an allowed host only) → its path and query. */
function requestTarget(raw: string, hosts: ReadonlySet<string>, n: number): string {
  let target = raw;
  const absolute = ABSOLUTE_TARGET.exec(raw);
  if (absolute !== null) {
    const authority = absolute[2]!.toLowerCase();
    if (authority.includes('@')) return unreadable(`request ${n} has credentials in its target`);
    const host = absolute[1]!.toLowerCase() === 'https' ? authority.replace(/:443$/, '') : authority.replace(/:80$/, '');
    if (!hosts.has(host)) return unreadable(`request ${n} is for another host (${host})`);
    target = absolute[3]!;
  }
  // `//host/…` reads as an authority to some parsers.
  if (!target.startsWith('/') || target.startsWith('//')) return unreadable(`request ${n} has a malformed target`);
  if (target.includes('#')) return unreadable(`request ${n} has a fragment in its target`);
  return target;
}

interface HeaderBlock {
  readonly headers: Record<string, string>;
  /** Where what follows the headers begins. */
  readonly next: number;
  /** Ended by an empty line (else by the end of the part). */
  readonly blankLine: boolean;
}

/** Header lines from `start` up to an empty line or `end`. Folded, repeated or oversized headers are refused. */
function readHeaders(text: string, start: number, end: number, what: string): HeaderBlock {
  const headers = new Map<string, string>();
  const block = (next: number, blankLine: boolean): HeaderBlock => ({ headers: Object.fromEntries(headers), next, blankLine });
  let pos = start;
  while (pos < end) {
    if (pos - start > MAX_HEADER_BYTES) return unreadable(`${what} has too many header bytes`);
    const nl = text.indexOf('\n', pos);
    const lineEnd = nl === -1 || nl >= end ? end : nl;
    if (lineEnd - pos > MAX_LINE) return unreadable(`${what} has a header line that is too long`);
    const line = stripCr(text.slice(pos, lineEnd), what);
    const next = Math.min(lineEnd + 1, end);
    if (line === '') return block(next, true);
    if (line.startsWith(' ') || line.startsWith('\t')) return unreadable(`${what} has a folded header line`);
    const m = HEADER_LINE.exec(line);
    if (m === null || CONTROL.test(m[2]!)) return unreadable(`${what} has a malformed header line`);
    const name = m[1]!.toLowerCase();
    if (headers.has(name)) return unreadable(`${what} has the header ${name} more than once`);
    if (headers.size >= MAX_HEADERS) return unreadable(`${what} has too many headers`);
    headers.set(name, m[2]!);
    pos = next;
  }
  return block(end, false);
}

/** A line without its CR; a CR anywhere else is refused (some parsers end lines there). */
function stripCr(line: string, what: string): string {
  const bare = line.endsWith('\r') ? line.slice(0, -1) : line;
  if (bare.includes('\r')) return unreadable(`${what} has a bare CR`);
  return bare;
}
