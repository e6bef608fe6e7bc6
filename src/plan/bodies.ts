import { isAwsChunked } from '../location/request/aws-chunked.js';
import { createBucketLocation, createBucketSignals, type CreateBucketTarget } from '../location/request/create-bucket.js';
import {
  gcsBucketResourceDestinations,
  gcsComposeDestinations,
  gcsXmlLoggingDestinations,
  gcsRelocateDestinations,
  parseGcsBatch,
  s3ConfigDestinations,
  type BodyReading,
} from '../location/request/destination-bodies.js';
import { distinctSignals, placeSignals, type Signal } from '../location/signals.js';
import type { Planner, Prepared } from './plan.js';
import { reject, type Inspect, type Reject, type RequestHeaders } from './reading.js';

/**
 * Where a request writes according to its body (read whole, bounded, before
 * deciding): buckets on the same upstream, to be placed like the request's
 * own target (`fallback`: the upstream's declared location counts for an
 * undeclared bucket, as for a direct write to it; S3 configurations name
 * buckets in any region, so theirs must be declared or discovered), and
 * places named outright. What cannot be read is refused (400), never guessed.
 */
export interface BodyDestinations {
  readonly buckets: readonly { readonly bucket: string; readonly fallback: boolean }[];
  readonly signals: readonly Signal[];
}

/** How many bytes of each kind of body the proxy reads before deciding. */
export const INSPECT_LIMITS: Readonly<Record<Inspect['kind'], number>> = {
  // A replication configuration may hold up to 1,000 rules.
  's3-config': 1024 * 1024,
  // Up to 100 calls, each with its own (small) metadata body.
  'gcs-batch': 1024 * 1024,
  'gcs-relocate': 64 * 1024,
  'gcs-compose': 64 * 1024,
  'gcs-bucket-resource': 64 * 1024,
  'gcs-xml-logging': 64 * 1024,
};

/** What a body read before deciding adds to a request's own signals. */
export interface BodySignals extends BodyDestinations {
  /** The places a create-bucket body names (null: not a create-bucket request). */
  readonly created: readonly string[] | null;
}

/**
 * The create-bucket location and the destinations a request's body names:
 * one reading for the proxy and for `explain`. Each destination bucket and
 * signal once, however often the body names it (a batch of 100 calls to one
 * bucket, 1,000 replication rules to one destination). The buckets are left
 * to place by the caller (the proxy discovers their regions, explain says it
 * would).
 */
export function bodySignals(
  planner: Planner,
  prepared: Prepared,
  needs: { readonly createBucket?: CreateBucketTarget; readonly inspect?: Inspect },
  body: Uint8Array,
  headers: RequestHeaders,
): BodySignals | Reject {
  const signals: Signal[] = [];
  let created: readonly string[] | null = null;
  if (needs.createBucket !== undefined) {
    const location = createBucketLocation(needs.createBucket, body, { awsChunked: isAwsChunked(headers as Parameters<typeof isAwsChunked>[0]) });
    if (!location.ok) return reject(location.status, location.code, location.detail);
    signals.push(...createBucketSignals(location));
    created = location.places;
  }
  let buckets: BodyDestinations['buckets'] = [];
  if (needs.inspect !== undefined) {
    const destinations = readDestinations(planner, prepared, needs.inspect, body, headers);
    if ('kind' in destinations) return destinations;
    signals.push(...destinations.signals);
    buckets = [...new Map(destinations.buckets.map((b) => [`${b.fallback ? 1 : 0}${b.bucket}`, b])).values()];
  }
  return { signals: distinctSignals(signals), buckets, created };
}

function readDestinations(planner: Planner, prepared: Prepared, inspect: Inspect, body: Uint8Array, headers: RequestHeaders): BodyDestinations | Reject {
  switch (inspect.kind) {
    case 's3-config':
      return fromReading(s3ConfigDestinations(inspect.config, body, { awsChunked: isAwsChunked(headers as Parameters<typeof isAwsChunked>[0]) }), false);
    case 'gcs-relocate':
      return fromReading(gcsRelocateDestinations(body), true);
    case 'gcs-compose':
      return fromReading(gcsComposeDestinations(body), true);
    case 'gcs-bucket-resource':
      return fromReading(gcsBucketResourceDestinations(body), true);
    case 'gcs-xml-logging':
      return fromReading(gcsXmlLoggingDestinations(body), true);
    case 'gcs-batch':
      return batchDestinations(planner, prepared, body, headers);
  }
}

function fromReading(reading: BodyReading, fallback: boolean): BodyDestinations | Reject {
  if (!reading.ok) return reject(400, reading.code, reading.detail);
  return {
    buckets: reading.destinations.buckets.map((bucket) => ({ bucket, fallback })),
    signals: reading.destinations.places.flatMap((place) => placeSignals('destination', place)),
  };
}

/**
 * A Cloud Storage batch: every call inside is read as if it were sent on its
 * own, and every place a writing call reaches is a destination of the batch.
 * Calls the proxy cannot read, uploads (which a batch cannot carry) and
 * nested batches refuse the whole batch.
 */
function batchDestinations(planner: Planner, prepared: Prepared, body: Uint8Array, headers: RequestHeaders): BodyDestinations | Reject {
  const contentType = headers['content-type'];
  const host = headers.host;
  const batch = parseGcsBatch(typeof contentType === 'string' ? contentType : undefined, body, { extraHosts: typeof host === 'string' ? [host] : [] });
  if (!batch.ok) return reject(400, batch.code, batch.detail);
  const buckets: { bucket: string; fallback: boolean }[] = [];
  const signals: Signal[] = [];
  const upstream = prepared.route.upstream;
  for (const [n, part] of batch.parts.entries()) {
    const where = `batch call ${n + 1}`;
    const reading = planner.readPart(prepared.route, part.method, part.target, part.headers);
    if ('kind' in reading) return reject(400, 'unreadable_batch', `${where}: ${reading.detail}`);
    if (reading.operation === 'read' && part.body.length === 0) continue;
    if (reading.upload !== undefined || reading.inspect?.kind === 'gcs-batch') return reject(400, 'unreadable_batch', `${where}: uploads and batches cannot be sent inside a batch`);
    if (reading.bucket !== null) buckets.push({ bucket: reading.bucket, fallback: true });
    for (const bucket of reading.destinations) buckets.push({ bucket, fallback: true });
    if (reading.createBucket !== undefined) {
      const created = createBucketLocation(reading.createBucket, part.body);
      if (!created.ok) return reject(400, 'unreadable_batch', `${where}: ${created.detail}`);
      signals.push(...createBucketSignals(created));
    } else if (reading.bucket === null) {
      // A bucket-less write (a bucket insert where request signals do not count): where the upstream is declared.
      signals.push(...upstream.declared.forBucket(null).signals.map((s) => ({ ...s, source: 'destination' as const })));
    }
    if (reading.inspect !== undefined) {
      const inner = readDestinations(planner, prepared, reading.inspect, part.body, part.headers);
      if ('kind' in inner) return reject(400, 'unreadable_batch', `${where}: ${inner.detail}`);
      buckets.push(...inner.buckets);
      signals.push(...inner.signals);
    }
  }
  return { buckets, signals };
}
