import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

/** How much of each request body is kept in memory for inspection. */
export const BODY_HEAD_LIMIT = 64 * 1024;

export interface RecordedRequest {
  /** Position in arrival order since the last reset(). */
  index: number;
  /** 0-based id of the TCP connection that carried the request (keep-alive reuse shows up here). */
  connectionId: number;
  method: string;
  /** Raw request target as received: path plus '?query'. */
  url: string;
  headers: IncomingHttpHeaders;
  rawHeaders: string[];
  /** Body bytes received so far (after chunked decoding); final once `complete` or `aborted`. */
  bodyBytes: number;
  /** Hex SHA-256 of the body; set when the body ended, or of the received prefix when aborted. */
  bodySha256: string | undefined;
  /** Up to the first 64 KiB of the body. */
  bodyHead: Buffer;
  /** The whole body arrived. */
  complete: boolean;
  /** The client went away before the body ended. */
  aborted: boolean;
  receivedAt: number;
}

export interface UpstreamResponse {
  status?: number;
  headers?: OutgoingHttpHeaders;
  body?: string | Uint8Array | Readable;
}

export interface RecordingUpstreamOptions {
  /**
   * Builds the response once the request body has been fully consumed. `bodyHead` is the
   * first 64 KiB of the body only (bodies are never buffered whole).
   */
  respond?: (req: RecordedRequest, bodyHead: Buffer) => UpstreamResponse | Promise<UpstreamResponse>;
  /** Wait this long after the body ended before responding. */
  delayMs?: number;
  /** Never respond (the body is still consumed and recorded); for timeout tests. */
  hang?: boolean | ((req: RecordedRequest) => boolean);
}

export interface RecordingUpstream {
  url: string;
  port: number;
  /** Live list of requests since the last reset(), in arrival order. */
  readonly requests: RecordedRequest[];
  /** Accepted TCP connections since the last reset(). */
  readonly connections: number;
  /** Body bytes received across all requests (including aborted ones) since the last reset(). */
  readonly bytesReceived: number;
  /** Polls until `predicate` is true (e.g. an aborted upload has been noticed). */
  waitFor(predicate: () => boolean, timeoutMs?: number): Promise<void>;
  reset(): void;
  close(): Promise<void>;
}

const DEFAULT_RESPONSE: UpstreamResponse = {
  status: 200,
  headers: { 'content-type': 'text/plain' },
  body: 'ok\n',
};

export async function startRecordingUpstream(opts: RecordingUpstreamOptions = {}): Promise<RecordingUpstream> {
  let requests: RecordedRequest[] = [];
  let connections = 0;
  let bytesReceived = 0;
  let nextConnectionId = 0;
  const connectionIds = new WeakMap<Socket, number>();
  const timers = new Set<NodeJS.Timeout>();

  const server = createServer();
  server.on('connection', (socket: Socket) => {
    connections++;
    connectionIds.set(socket, nextConnectionId++);
    // Clients resetting mid-body is an expected scenario, not a test failure.
    socket.on('error', () => {});
  });

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const rec: RecordedRequest = {
      index: requests.length,
      connectionId: connectionIds.get(req.socket) ?? -1,
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      bodyBytes: 0,
      bodySha256: undefined,
      bodyHead: Buffer.alloc(0),
      complete: false,
      aborted: false,
      receivedAt: Date.now(),
    };
    // Push before the body arrives so in-flight and aborted requests are visible.
    requests.push(rec);
    const hash = createHash('sha256');
    const headChunks: Buffer[] = [];
    let headLen = 0;

    req.on('data', (chunk: Buffer) => {
      rec.bodyBytes += chunk.length;
      bytesReceived += chunk.length;
      hash.update(chunk);
      if (headLen < BODY_HEAD_LIMIT) {
        const part = chunk.subarray(0, BODY_HEAD_LIMIT - headLen);
        headChunks.push(part);
        headLen += part.length;
      }
    });
    req.on('error', () => {});
    res.on('error', () => {});

    req.on('end', () => {
      rec.complete = true;
      rec.bodySha256 = hash.digest('hex');
      rec.bodyHead = Buffer.concat(headChunks);
      const hang = typeof opts.hang === 'function' ? opts.hang(rec) : opts.hang === true;
      if (hang) return;
      if (opts.delayMs !== undefined && opts.delayMs > 0) {
        const t = setTimeout(() => {
          timers.delete(t);
          void sendResponse(rec, res);
        }, opts.delayMs);
        timers.add(t);
      } else {
        void sendResponse(rec, res);
      }
    });
    req.on('close', () => {
      if (!rec.complete) {
        rec.aborted = true;
        rec.bodySha256 = hash.digest('hex');
        rec.bodyHead = Buffer.concat(headChunks);
      }
    });
  });

  async function sendResponse(rec: RecordedRequest, res: ServerResponse): Promise<void> {
    if (res.destroyed) return;
    let out: UpstreamResponse;
    try {
      out = opts.respond ? await opts.respond(rec, rec.bodyHead) : DEFAULT_RESPONSE;
    } catch (err) {
      out = { status: 500, headers: { 'content-type': 'text/plain' }, body: `respond() threw: ${String(err)}` };
    }
    if (res.destroyed) return;
    res.writeHead(out.status ?? 200, out.headers ?? {});
    const body = out.body;
    if (body instanceof Readable) {
      // Streamed bodies let tests serve large downloads without buffering them.
      await pipeline(body, res).catch(() => {});
    } else {
      res.end(body);
    }
  }

  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    get requests() {
      return requests;
    },
    get connections() {
      return connections;
    },
    get bytesReceived() {
      return bytesReceived;
    },
    async waitFor(predicate: () => boolean, timeoutMs = 5_000): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      while (!predicate()) {
        if (Date.now() > deadline) throw new Error(`recording upstream: condition not met within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 10));
      }
    },
    reset() {
      requests = [];
      connections = 0;
      bytesReceived = 0;
    },
    async close() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      const closed = new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
      // close() alone waits for keep-alive and hanging requests to finish.
      server.closeAllConnections();
      await closed;
    },
  };
}
