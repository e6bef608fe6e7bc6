import { existsSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { listRotated, type LogLayout } from './files.js';
import { readFirstLine } from './lines.js';

export interface LogLine {
  seq: number;
  replica: string;
  /** The line as stored (canonical record with its hash). */
  line: string;
}

/**
 * Reads a live log's records by seq, across rotations, straight from the
 * files (the log is the spool: nothing is buffered in memory while a
 * consumer is behind). Holds one open file and a byte offset; when the
 * records run out in that file before `upto`, the file was rotated away and
 * the next one is found by the seq range in the rotated names.
 */
export class LogReader {
  private handle: FileHandle | null = null;
  private path: string | null = null;
  private offset = 0;
  /** The seq the next line at `offset` is expected to carry (null: not positioned). */
  private next: number | null = null;

  constructor(private readonly layout: LogLayout) {}

  /**
   * Records with seq in [from, upto], at most `max`, in order. Reads only
   * whole lines and never past `upto` (what is durable), so a batch that is
   * later cut back after a failed fsync is never handed out.
   */
  async read(from: number, upto: number, max: number): Promise<LogLine[]> {
    if (from > upto) return [];
    if (this.next !== from) await this.locate(from);
    const out: LogLine[] = [];
    // A file running out before `upto` was sealed and rotated: go on in the next one.
    for (let files = 0; files < 16 && out.length < max; files++) {
      const before = out.length;
      const eof = await this.readHere(from, upto, max, out);
      if (out.length > 0) from = out.at(-1)!.seq + 1;
      if (!eof || from > upto) break;
      if (out.length === before && files > 0) break; // nothing new in the next file either
      await this.locate(from);
    }
    return out;
  }

  /** The lowest seq still on disk (older files may have been archived away). */
  firstAvailable(): number | null {
    const rotated = listRotated(this.layout);
    if (rotated.length > 0) return rotated[0]!.firstSeq;
    if (!existsSync(this.layout.active)) return null;
    const first = readFirstLine(this.layout.active);
    if (!first) return null;
    try {
      return (JSON.parse(first.text) as { seq: number }).seq;
    } catch {
      return null;
    }
  }

  /** Appends to `out`; true when the file ended (as opposed to reaching `upto` or `max`). */
  private async readHere(from: number, upto: number, max: number, out: LogLine[]): Promise<boolean> {
    if (this.handle === null) return true;
    const chunk = Buffer.alloc(256 * 1024);
    let carry: Buffer = Buffer.alloc(0);
    for (;;) {
      const { bytesRead } = await this.handle.read(chunk, 0, chunk.length, this.offset + carry.length);
      if (bytesRead === 0) return true;
      const data: Buffer = carry.length > 0 ? Buffer.concat([carry, chunk.subarray(0, bytesRead)]) : chunk.subarray(0, bytesRead);
      let start = 0;
      for (let nl = data.indexOf(0x0a); nl !== -1; nl = data.indexOf(0x0a, start)) {
        const text = data.toString('utf8', start, nl);
        let record: { seq?: unknown; replica?: unknown };
        try {
          record = JSON.parse(text) as typeof record;
        } catch {
          record = {};
        }
        const seq = typeof record.seq === 'number' ? record.seq : null;
        if (seq !== null && seq > upto) return false;
        this.offset += nl - start + 1;
        start = nl + 1;
        if (seq === null || seq < from) continue; // not a record, or already consumed
        out.push({ seq, replica: typeof record.replica === 'string' ? record.replica : '', line: text });
        from = seq + 1;
        this.next = from;
        if (out.length >= max) return false;
      }
      carry = Buffer.from(data.subarray(start));
      if (bytesRead < chunk.length) return true;
    }
  }

  /** Open the file holding `seq` and position at its start (lines below `seq` are skipped while reading). */
  private async locate(seq: number): Promise<void> {
    await this.close();
    const rotated = listRotated(this.layout);
    const holder = rotated.find((f) => f.firstSeq <= seq && seq <= f.lastSeq);
    // Past every rotated range (or before the oldest kept): the active file, else the oldest rotated one.
    const later = rotated.find((f) => f.firstSeq > seq);
    const path = holder?.path ?? (rotated.length > 0 && seq < rotated[0]!.firstSeq ? rotated[0]!.path : (later?.path ?? this.layout.active));
    try {
      this.handle = await open(path, 'r');
      this.path = path;
      this.offset = 0;
      this.next = seq;
    } catch {
      this.handle = null;
      this.path = null;
      this.next = null;
    }
  }

  async close(): Promise<void> {
    const handle = this.handle;
    this.handle = null;
    this.path = null;
    this.next = null;
    await handle?.close().catch(() => {});
  }
}
