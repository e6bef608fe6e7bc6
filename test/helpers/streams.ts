import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';

/** Random-content stream of `size` bytes; the sender-side hash is available once it ends. */
export function randomStream(size: number, chunkSize = 256 * 1024): { stream: Readable; sha256: () => string } {
  const hash = createHash('sha256');
  let remaining = size;
  let digest: string | undefined;
  const stream = new Readable({
    read() {
      if (remaining === 0) {
        digest = hash.digest('hex');
        this.push(null);
        return;
      }
      const chunk = randomBytes(Math.min(chunkSize, remaining));
      remaining -= chunk.length;
      hash.update(chunk);
      this.push(chunk);
    },
  });
  return {
    stream,
    sha256: () => {
      if (digest === undefined) throw new Error('stream not fully consumed');
      return digest;
    },
  };
}
