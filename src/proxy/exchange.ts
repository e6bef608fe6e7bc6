import type { ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import type { BoundedBody } from '../location/request/body.js';

export interface ResponseHead {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
}

/** Where body chunks go once someone takes the body: false from `data` pauses the upstream. */
interface Consumer {
  data(chunk: Buffer): boolean;
  end(): void;
  error(err: Error): void;
}

/** Response body bytes held before anyone takes the body; beyond this the upstream is paused. */
const EARLY_BYTES = 16 * 1024;

/** Why the proxy cancelled an exchange (the client left, or the response was discarded). */
export class ExchangeAbortedError extends Error {
  readonly code = 'RESIDENCY_EXCHANGE_ABORTED';
  constructor() {
    super('the forwarded request was cancelled');
    this.name = 'ExchangeAbortedError';
  }
}

/**
 * One forwarded request's upstream response, delivered to the client without
 * an intermediate stream: undici calls in with the head and each body chunk,
 * and chunks are written straight to the client's response, with
 * backpressure (undici stops reading the upstream socket while the client is
 * slow). Until the caller has recorded the decision and takes the body
 * (`pipe`, `collect`) or drops it (`abort`), what arrives is held, up to
 * EARLY_BYTES; past that the upstream is paused. A small answer (most are)
 * is then read whole without pausing and resuming the upstream connection,
 * which costs undici a parser stop and restart per response.
 */
export class UpstreamExchange implements Dispatcher.DispatchHandler {
  /** Resolves with the final (non-1xx) head; rejects when the request fails before one arrives. */
  readonly head: Promise<ResponseHead>;
  /** Body bytes received from the upstream so far. */
  received = 0;
  /** The proxy cancelled it (`abort`). */
  aborted = false;
  /**
   * undici took a connection and is writing the request: a body given as
   * bytes is handed to the socket right after (a stream's bytes are counted
   * as they pass). False when it failed before that (no connection).
   */
  requestStarted = false;

  private controller: Dispatcher.DispatchController | null = null;
  private resolveHead!: (head: ResponseHead) => void;
  private rejectHead!: (err: Error) => void;
  private headSeen = false;
  private consumer: Consumer | null = null;
  /** What arrived while nobody had taken the body: at most EARLY_BYTES and one chunk. */
  private early: Buffer[] = [];
  private earlyBytes = 0;
  private ended = false;
  private failure: Error | null = null;

  constructor() {
    this.head = new Promise<ResponseHead>((resolve, reject) => {
      this.resolveHead = resolve;
      this.rejectHead = reject;
    });
    // The caller may stop listening (an early abort); a rejection nobody awaits must not crash the process.
    this.head.catch(() => {});
  }

  /** Cancel: before the head, `head` rejects; after, the upstream connection is dropped. */
  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    this.controller?.abort(new ExchangeAbortedError());
  }

  /**
   * Stream the body into the client's response; `onError` hears an upstream
   * failure mid-body (the response is then destroyed), not the end of an
   * exchange the proxy cancelled itself (the client left).
   */
  pipe(res: ServerResponse, onError: (err: Error) => void): void {
    const resume = () => this.controller?.resume();
    this.take({
      data: (chunk) => {
        if (res.write(chunk)) return true;
        res.once('drain', resume);
        return false;
      },
      end: () => res.end(),
      error: (err) => {
        if (!this.aborted) onError(err);
        res.destroy();
      },
    });
  }

  /** Read the body up to `limit` bytes (as `readBounded` does for a stream); past the limit the rest stays unread for `pipe`. */
  collect(limit: number): Promise<BoundedBody> {
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      let total = 0;
      const all = () => (chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total));
      this.take({
        data: (chunk) => {
          chunks.push(chunk);
          total += chunk.length;
          if (total <= limit) return true;
          this.consumer = null;
          resolve({ ok: false, reason: 'too_large', bytes: all() });
          return false;
        },
        end: () => resolve({ ok: true, bytes: all() }),
        error: () => resolve({ ok: false, reason: 'aborted', bytes: all() }),
      });
    });
  }

  private take(consumer: Consumer): void {
    this.consumer = consumer;
    let more = true;
    while (this.early.length > 0 && this.consumer === consumer) {
      const chunk = this.early.shift()!;
      this.earlyBytes -= chunk.length;
      more = consumer.data(chunk);
    }
    // `collect` stopped at its limit: the rest waits for the next consumer.
    if (this.consumer !== consumer) return;
    if (this.failure !== null) consumer.error(this.failure);
    else if (this.ended) consumer.end();
    else if (more) this.controller?.resume();
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.aborted) controller.abort(new ExchangeAbortedError());
    else this.requestStarted = true;
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>): void {
    // 1xx (a 100 Continue the upstream sent anyway): informational, not the answer.
    if (statusCode < 200) return;
    this.headSeen = true;
    this.resolveHead({ statusCode, headers });
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.received += chunk.length;
    const consumer = this.consumer;
    if (consumer === null) {
      // Held until the decision is recorded and someone takes the body; a large one waits at the upstream.
      this.early.push(chunk);
      this.earlyBytes += chunk.length;
      if (this.earlyBytes > EARLY_BYTES) controller.pause();
    } else if (!consumer.data(chunk)) {
      controller.pause();
    }
  }

  onResponseEnd(): void {
    this.ended = true;
    this.consumer?.end();
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (!this.headSeen) {
      this.rejectHead(err);
      return;
    }
    this.failure = err;
    this.consumer?.error(err);
  }
}
