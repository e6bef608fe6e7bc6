import http from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A stand-in storage endpoint for the shipped default config, so the proxy
 * can be tried with no external services: it reads and discards every
 * request body and answers like a permissive S3 (200, an ETag, empty XML for
 * bucket calls). It stores nothing.
 */
export async function startDemoUpstream(host: string, port: number): Promise<{ address: AddressInfo; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    let bytes = 0;
    req.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
    });
    req.on('end', () => {
      const body = req.method === 'GET' ? '<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult><Name>demo</Name></ListBucketResult>' : '';
      res.writeHead(200, {
        'content-type': 'application/xml',
        etag: `"demo-${bytes}"`,
        'x-demo-bytes-received': String(bytes),
        'content-length': Buffer.byteLength(body),
      });
      res.end(body);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  return {
    address: server.address() as AddressInfo,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
