import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import S3rver from 's3rver';

export interface S3rverHandle {
  endpoint: string;
  port: number;
  directory: string;
  close(): Promise<void>;
}

export interface S3rverOptions {
  /** Buckets created before the server starts accepting requests. */
  buckets?: string[];
}

/** s3rver's built-in account; it checks the access key id exists but never verifies SigV4 signatures. */
export const S3RVER_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;

/** Runs s3rver in-process on 127.0.0.1 with an ephemeral port and a throwaway data directory. */
export async function startS3rver(opts: S3rverOptions = {}): Promise<S3rverHandle> {
  const directory = await mkdtemp(join(tmpdir(), 'residency-s3rver-'));
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    directory,
    silent: true,
    // Path-style only: otherwise any non-IP Host (e.g. one a proxy forwards) is taken as a bucket name.
    vhostBuckets: false,
    configureBuckets: (opts.buckets ?? []).map((name) => ({ name })),
  });
  let port: number;
  try {
    ({ port } = await server.run());
  } catch (err) {
    await rm(directory, { recursive: true, force: true });
    throw err;
  }

  let closed = false;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    directory,
    async close() {
      if (closed) return;
      closed = true;
      const done = server.close();
      // Keep-alive sockets from SDK clients would otherwise hold close() open.
      server.httpServer?.closeAllConnections();
      await done;
      await rm(directory, { recursive: true, force: true });
    },
  };
}
