import { once } from 'node:events';
import { createWriteStream, mkdirSync, renameSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';

export interface ExportedFile {
  replica: string;
  file: string;
  first_seq: number;
  last_seq: number;
  records: number;
  /** Entries skipped because their seq was already written (should be 0: shipping is exactly-once). */
  duplicates: number;
  /** Places where the replica's seq jumps (the stream was trimmed, or records were never shipped). */
  gaps: number;
}

interface Open {
  replica: string;
  tmp: string;
  out: WriteStream;
  first: number;
  last: number;
  records: number;
  duplicates: number;
  gaps: number;
}

function safeName(replica: string): string {
  return replica.replace(/[^A-Za-z0-9_.-]/g, '_') || 'unnamed';
}

/**
 * Drain a decision stream into one file per replica, in stream order
 * (`REPLICA-FIRST-LAST.log`, records exactly as the replicas wrote them), so
 * `audit verify` checks each replica's chain. Pages through XRANGE: memory
 * does not grow with the stream.
 */
export async function exportStream(options: { redisUrl: string; streamKey: string; outDir: string; pageSize?: number }): Promise<ExportedFile[]> {
  const pageSize = options.pageSize ?? 1000;
  mkdirSync(options.outDir, { recursive: true });
  const redis = new Redis(options.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null });
  redis.on('error', () => {});
  await redis.connect();
  const files = new Map<string, Open>();
  try {
    let start = '-';
    for (;;) {
      const page = await redis.xrange(options.streamKey, start, '+', 'COUNT', pageSize);
      if (page.length === 0) break;
      for (const [id, fields] of page) {
        start = `(${id}`;
        const entry: Record<string, string> = {};
        for (let i = 0; i + 1 < fields.length; i += 2) entry[fields[i]!] = fields[i + 1]!;
        const replica = entry.replica ?? '';
        const seq = Number(entry.seq);
        const line = entry.record;
        if (line === undefined || !Number.isInteger(seq)) continue;
        let f = files.get(replica);
        if (!f) {
          const tmp = join(options.outDir, `.${safeName(replica)}.partial`);
          f = { replica, tmp, out: createWriteStream(tmp), first: seq, last: seq - 1, records: 0, duplicates: 0, gaps: 0 };
          files.set(replica, f);
        }
        if (seq <= f.last) {
          f.duplicates++;
          continue;
        }
        if (seq !== f.last + 1) f.gaps++;
        f.last = seq;
        f.records++;
        if (!f.out.write(`${line}\n`)) await once(f.out, 'drain');
      }
      if (page.length < pageSize) break;
    }
  } finally {
    redis.disconnect();
  }
  const result: ExportedFile[] = [];
  for (const f of files.values()) {
    f.out.end();
    await once(f.out, 'close');
    const pad = (n: number) => String(n).padStart(12, '0');
    const file = join(options.outDir, `${safeName(f.replica)}-${pad(f.first)}-${pad(f.last)}.log`);
    renameSync(f.tmp, file);
    result.push({ replica: f.replica, file, first_seq: f.first, last_seq: f.last, records: f.records, duplicates: f.duplicates, gaps: f.gaps });
  }
  return result;
}
