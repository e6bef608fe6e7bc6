import type { Readable } from 'node:stream';

/*
 * Request bodies the proxy inspects before forwarding: read off the stream
 * up to a bound (never buffered whole, never destroyed, so the rest can
 * still be forwarded or refused on the same connection), and their bytes
 * read as text.
 */

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

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** The bytes as UTF-8 text (a leading BOM dropped), or null when they are not UTF-8. */
export function decodeUtf8(bytes: Uint8Array): string | null {
  try {
    return UTF8.decode(bytes); // also drops a leading BOM
  } catch {
    return null;
  }
}
