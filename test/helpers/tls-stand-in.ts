import { createHash } from 'node:crypto';
import { once } from 'node:events';
import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';

/**
 * An HTTPS store stand-in for tests that reach "real" storage names through
 * the proxy (a test DNS server sends them to loopback; the certificate comes
 * from a test CA the upstream trusts through `ca_file`). It records what it
 * receives (hash and size, never the whole body), answers 200 with an ETag,
 * answers S3's multipart calls with their XML, and decodes aws-chunked
 * bodies so a test can compare the payload the SDK meant to send.
 */

export interface StandInRequest {
  method: string;
  /** The path, without the query. */
  url: string;
  /** The query, without '?'. */
  query: string;
  host: string;
  headers: IncomingHttpHeaders;
  /** Body bytes as received (for aws-chunked: the encoding, chunk headers and trailers included). */
  bytes: number;
  sha256: string;
  /** The whole body arrived (false: the request is still in flight, or its sender went away). */
  complete: boolean;
  /** For an aws-chunked body: the payload and the trailers it carried. */
  decoded?: { bytes: number; sha256: string; trailers: Record<string, string> };
}

export interface StandInOptions {
  /** A GET for an object never stored is answered with this many bytes (streamed), for faults while the upstream answers. Default 0. */
  getBytes?: number;
}

export interface TlsStandIn {
  port: number;
  /** Every request, pushed when its head arrives (so requests cut mid-body are there too). */
  received: StandInRequest[];
  close(): Promise<void>;
}

/** Kept whole for decoding and GETs: enough for the tests' uploads, bounded all the same. */
const KEEP_BYTES = 64 << 20;

export async function startTlsStandIn(cert: { certPem: string; keyPem: string }, options: StandInOptions = {}): Promise<TlsStandIn> {
  const received: StandInRequest[] = [];
  const objects = new Map<string, Buffer>();
  let uploads = 0;
  const server = https.createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    const [url, query = ''] = req.url!.split('?') as [string, string?];
    const entry: StandInRequest = { method: req.method!, url, query, host: req.headers.host ?? '', headers: req.headers, bytes: 0, sha256: '', complete: false };
    received.push(entry);
    const hash = createHash('sha256');
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      entry.bytes += chunk.length;
      if (entry.bytes <= KEEP_BYTES) chunks.push(chunk);
    });
    req.on('error', () => {});
    res.on('error', () => {});
    req.on('end', () => {
      entry.sha256 = hash.digest('hex');
      entry.complete = true;
      let body: Buffer = Buffer.concat(chunks);
      if (/aws-chunked/.test(String(req.headers['content-encoding'] ?? ''))) {
        const decoded = decodeAwsChunked(body);
        entry.decoded = { bytes: decoded.payload.length, sha256: createHash('sha256').update(decoded.payload).digest('hex'), trailers: decoded.trailers };
        body = decoded.payload;
      }
      const key = `${req.headers.host}${url}`;
      const params = new URLSearchParams(query);
      const xml = (text: string) => {
        res.writeHead(200, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(text) });
        res.end(text);
      };
      if (req.method === 'POST' && params.has('uploads')) {
        return xml(`<InitiateMultipartUploadResult><Bucket>bucket</Bucket><Key>${url.slice(1)}</Key><UploadId>upload-${++uploads}</UploadId></InitiateMultipartUploadResult>`);
      }
      if (req.method === 'POST' && params.has('uploadId')) {
        return xml(`<CompleteMultipartUploadResult><Bucket>bucket</Bucket><Key>${url.slice(1)}</Key><ETag>"standin-multipart"</ETag></CompleteMultipartUploadResult>`);
      }
      if (req.method === 'PUT' && !params.has('uploadId')) objects.set(key, body);
      if (req.method === 'GET' && !objects.has(key) && (options.getBytes ?? 0) > 0) return streamBytes(res, options.getBytes!);
      const out = req.method === 'GET' ? (objects.get(key) ?? Buffer.alloc(0)) : Buffer.alloc(0);
      res.writeHead(200, { etag: '"standin"', 'content-length': out.length });
      res.end(out);
    });
  });
  server.on('tlsClientError', () => {});
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    received,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** `total` bytes in 64 KiB writes, each after the last drained (a reader that stops reading holds the rest). */
function streamBytes(res: ServerResponse, total: number): void {
  res.writeHead(200, { 'content-length': total });
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  let left = total;
  const more = () => {
    while (left > 0 && !res.destroyed) {
      const part = left >= chunk.length ? chunk : chunk.subarray(0, left);
      left -= part.length;
      if (left === 0) return void res.end(part);
      if (!res.write(part)) return void res.once('drain', more);
    }
  };
  more();
}

/** aws-chunked (SigV4 streaming): `HEX[;chunk-signature=…]\r\nDATA\r\n` …, a zero-size chunk, then `name:value\r\n` trailers and a blank line. */
export function decodeAwsChunked(body: Buffer): { payload: Buffer; trailers: Record<string, string> } {
  const parts: Buffer[] = [];
  let at = 0;
  for (;;) {
    const eol = body.indexOf('\r\n', at);
    if (eol === -1) throw new Error('aws-chunked: a chunk header without its line end');
    const size = parseInt(body.subarray(at, eol).toString('latin1').split(';')[0]!, 16);
    if (!Number.isFinite(size)) throw new Error('aws-chunked: a chunk size that is not hex');
    at = eol + 2;
    if (size === 0) break;
    parts.push(body.subarray(at, at + size));
    at += size + 2;
  }
  const trailers: Record<string, string> = {};
  for (const line of body.subarray(at).toString('latin1').split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) trailers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { payload: Buffer.concat(parts), trailers };
}
