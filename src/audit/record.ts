import type { Mode, Operation } from '../config/schema.js';
import type { AppliedException, Reason } from '../policy/engine.js';
import type { Signal } from '../location/signals.js';

/**
 * Version of the record format. Fields may be added, never renamed.
 * 2: a forwarded write's decision is recorded (durably) before anything is
 * sent upstream, with `status: null`; its outcome follows as an `outcome`
 * record naming the decision's `id`. Version 1 logs stay verifiable.
 */
export const RECORD_VERSION = 2;

/**
 * One decision, as an auditor reads it. No query strings, no headers, no
 * bodies: nothing that could carry a credential or a signature.
 */
export interface DecisionRecord {
  v: number;
  seq: number;
  ts: string;
  id: string;
  replica: string;
  policy: string;
  upstream: string;
  method: string;
  /** Path relative to the upstream (after any route prefix is stripped), as rules match it; never the query string. */
  path: string;
  /** Bucket or container the request addressed, when it names one. */
  bucket: string | null;
  operation: Operation;
  target: { host: string; address: string | null };
  /** `unplaced: true` when a signal named a place nothing can place (the location is then unknown). */
  location: { jurisdictions: readonly string[]; region: string | null; signals: readonly Signal[]; unplaced?: true | undefined };
  rule: string | null;
  mode: Mode;
  decision: 'allow' | 'block';
  effective: 'forwarded' | 'refused';
  reason: Reason;
  /** The exception that changed this decision, when one did. */
  exception?: AppliedException;
  /** Present (true) when a fleet-wide lockdown was in force. */
  lockdown?: true;
  /** The shadow policy's decision, when one is configured and it differed. */
  shadow?: { policy: string; decision: 'allow' | 'block'; rule: string | null; reason: Reason };
  /** The SigV4 access key id the request was signed with, when it was (an identifier, not a secret; exceptions match it). */
  principal?: string;
  /** Present (true) when the principal's SigV4 signature was verified with its configured key: only then can an exception match it. */
  principal_verified?: true;
  /** Came through a forward proxy's tunnel (CONNECT): the host it was opened for, and the proxy user when tunnels need one. */
  tunnel?: { host: string; user?: string };
  /** A body on a read-method request: `query` where the provider reads it as one (S3 Select, Azure query); `on-read` when it was decided as a write. */
  body?: 'query' | 'on-read';
  /**
   * The request continued a multipart upload or resumable session and was
   * decided on the location stored when that started; `known: false` when
   * none was stored (the location is then unknown).
   */
  upload?: { kind: 'multipart' | 'gcs-resumable'; known: boolean };
  /** Final status the client was sent; null on a forwarded write's decision, whose outcome record says. */
  status: number | null;
  bytes_in: number;
  /** Response body bytes the upstream declared (Content-Length); null when it streamed without one. */
  bytes_out: number | null;
  duration_ms: number;
  client: string;
  /** Set when forwarding failed: upstream_unreachable, upstream_timeout, upstream_reset, client_aborted. */
  error?: string;
  prev: string;
  hash: string;
}

/** What the proxy fills in; the sink adds the chain fields. */
export type DecisionEntry = Omit<DecisionRecord, 'v' | 'seq' | 'replica' | 'prev' | 'hash'>;

/**
 * A fleet event in the same chained log, between decision records, so an
 * auditor sees when a lockdown was set or lifted on this replica. Told apart
 * from decisions by `kind: "event"`; the chain fields are the same.
 */
export interface EventEntry {
  kind: 'event';
  event: 'lockdown';
  ts: string;
  id: string;
  state: 'locked' | 'lifted';
  reason: string;
  set_by: string;
  set_at: string;
  trigger: string;
}

/**
 * What became of a forwarded write whose decision was recorded before it was
 * sent: chained after it, naming the decision's `id`.
 */
export interface OutcomeEntry {
  kind: 'outcome';
  ts: string;
  /** The decision this outcome belongs to. */
  id: string;
  status: number;
  bytes_in: number;
  bytes_out: number | null;
  duration_ms: number;
  error?: string;
}

/** Anything the decision log chains. */
export type LogEntry = DecisionEntry | EventEntry | OutcomeEntry;

export function isEvent(record: object): boolean {
  return (record as { kind?: unknown }).kind === 'event';
}

export function isOutcome(record: object): record is OutcomeEntry {
  return (record as { kind?: unknown }).kind === 'outcome';
}

/** A decision (not a fleet event or a write's outcome). */
export function isDecision(record: object): boolean {
  return (record as { kind?: unknown }).kind === undefined;
}

/** Where decision records go. Kept small so a durable, chained sink can replace the first one. */
export interface DecisionSink {
  /**
   * Resolves once the record is written; rejects when it cannot be.
   * `lazy`: nothing waits on this record soon (a write's outcome), so it
   * need not start a batch of its own: it goes with the next batch, or
   * after LAZY_FLUSH_MS at the latest.
   */
  write(entry: LogEntry, options?: { lazy?: boolean }): Promise<void>;
  /** False while the sink cannot write. */
  healthy(): boolean;
  /**
   * True while a batch is being made durable, so a record written now waits
   * for that one and its own (under load). Absent: writes never wait long.
   */
  committing?(): boolean;
  close(): Promise<void>;
}
