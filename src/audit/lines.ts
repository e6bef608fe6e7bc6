import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { open } from 'node:fs/promises';

export interface Line {
  /** The line's text without its newline. */
  text: string;
  /** 1-based line number. */
  number: number;
  /** Byte offset of the line's first byte. */
  offset: number;
  /** False for a last line that has no newline (a torn write). */
  terminated: boolean;
}

const NEWLINE = 0x0a;

/**
 * Lines of a file, read in chunks into one reused buffer: memory stays at one
 * chunk plus the longest line, whatever the file's size (no per-chunk
 * allocation for the garbage collector to chase on multi-GB logs). Unlike
 * `readline` it says whether the last line ended with a newline, which tells
 * a torn tail from a complete record. `onChunk` sees every byte read, before
 * the lines in it (to hash the file in the same pass); it must not keep the
 * buffer.
 */
export async function* readLines(
  file: string,
  options: { start?: number; onChunk?: (chunk: Buffer) => void; chunkSize?: number } = {},
): AsyncGenerator<Line> {
  const handle = await open(file, 'r');
  const buffer = Buffer.allocUnsafe(options.chunkSize ?? 256 * 1024);
  let carry: Buffer | null = null;
  let position = options.start ?? 0;
  let offset = position;
  let number = 0;
  try {
    for (;;) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, position);
      if (bytesRead === 0) break;
      position += bytesRead;
      const chunk = buffer.subarray(0, bytesRead);
      options.onChunk?.(chunk);
      let start = 0;
      let nl = chunk.indexOf(NEWLINE, start);
      while (nl !== -1) {
        let text: string;
        let length = nl - start;
        if (carry !== null) {
          length += carry.length;
          text = Buffer.concat([carry, chunk.subarray(start, nl)]).toString('utf8');
          carry = null;
        } else {
          text = chunk.toString('utf8', start, nl);
        }
        yield { text, number: ++number, offset, terminated: true };
        offset += length + 1;
        start = nl + 1;
        nl = chunk.indexOf(NEWLINE, start);
      }
      if (start < chunk.length) {
        // Copied: the buffer is reused for the next read.
        carry = carry === null ? Buffer.from(chunk.subarray(start)) : Buffer.concat([carry, chunk.subarray(start)]);
      }
    }
  } finally {
    await handle.close();
  }
  if (carry !== null && carry.length > 0) {
    yield { text: carry.toString('utf8'), number: ++number, offset, terminated: false };
  }
}

export interface Tail {
  /** File size in bytes. */
  size: number;
  /** The last complete (newline-terminated) line, or null when there is none. */
  lastLine: string | null;
  /** Bytes after the last newline: a torn write when non-zero. */
  tornBytes: number;
}

/** The end of a file, read backwards in blocks: start-up cost does not grow with the file. */
export function readTail(file: string): Tail {
  const fd = openSync(file, 'r');
  try {
    const size = fstatSync(fd).size;
    const block = 64 * 1024;
    let end = size;
    let collected: Buffer = Buffer.alloc(0);
    let lastNewline = -1;
    // Find the last newline, then the one before it.
    while (end > 0) {
      const start = Math.max(0, end - block);
      const buf = Buffer.alloc(end - start);
      readSync(fd, buf, 0, buf.length, start);
      collected = Buffer.concat([buf, collected]);
      end = start;
      if (lastNewline === -1) {
        const idx = collected.lastIndexOf(NEWLINE);
        if (idx === -1) continue;
        lastNewline = idx;
      } else {
        lastNewline += buf.length;
      }
      const before = lastNewline === 0 ? -1 : collected.lastIndexOf(NEWLINE, lastNewline - 1);
      if (before !== -1 || end === 0) {
        const tornBytes = collected.length - lastNewline - 1;
        return { size, lastLine: collected.toString('utf8', before + 1, lastNewline), tornBytes };
      }
    }
    return { size, lastLine: null, tornBytes: lastNewline === -1 ? collected.length : collected.length - lastNewline - 1 };
  } finally {
    closeSync(fd);
  }
}

/** The first line of a file (for ordering files by their first record), or null when it has none. */
export function readFirstLine(file: string): { text: string; terminated: boolean } | null {
  const fd = openSync(file, 'r');
  try {
    let collected: Buffer = Buffer.alloc(0);
    let position = 0;
    for (;;) {
      const buf = Buffer.alloc(64 * 1024);
      const n = readSync(fd, buf, 0, buf.length, position);
      if (n === 0) break;
      position += n;
      const chunk = buf.subarray(0, n);
      const nl = chunk.indexOf(NEWLINE);
      if (nl !== -1) return { text: Buffer.concat([collected, chunk.subarray(0, nl)]).toString('utf8'), terminated: true };
      collected = Buffer.concat([collected, chunk]);
    }
    return collected.length === 0 ? null : { text: collected.toString('utf8'), terminated: false };
  } finally {
    closeSync(fd);
  }
}
