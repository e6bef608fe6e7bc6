/*
 * aws-chunked framing (SigV4 streaming uploads, trailing checksums): the
 * payload bytes sit between chunk headers, so a body is inspected after
 * the framing is stripped.
 */

/** True when an S3 body is framed as aws-chunked (streaming SigV4 or trailing checksums). */
export function isAwsChunked(headers: { readonly 'content-encoding'?: string | undefined; readonly 'x-amz-content-sha256'?: string | string[] | undefined }): boolean {
  const sha = headers['x-amz-content-sha256'];
  if (typeof sha === 'string' && sha.startsWith('STREAMING-')) return true;
  const enc = headers['content-encoding'];
  return typeof enc === 'string' && enc.toLowerCase().split(',').some((e) => e.trim() === 'aws-chunked');
}

const CHUNK_HEADER = /^([0-9a-fA-F]{1,8})(?:;[^\r\n]*)?$/;

/** Strip aws-chunked framing: `hex[;chunk-signature=…]\r\n data \r\n … 0…\r\n [trailers]`. Null when malformed. */
export function decodeAwsChunked(bytes: Uint8Array): Buffer | null {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: Buffer[] = [];
  let pos = 0;
  for (;;) {
    const eol = buf.indexOf('\r\n', pos, 'latin1');
    if (eol === -1 || eol - pos > 256) return null;
    const m = CHUNK_HEADER.exec(buf.toString('latin1', pos, eol));
    if (m === null) return null;
    const size = parseInt(m[1]!, 16);
    pos = eol + 2;
    if (size === 0) return Buffer.concat(out); // trailers (checksums) follow; not data
    if (pos + size + 2 > buf.length || buf[pos + size] !== 0x0d || buf[pos + size + 1] !== 0x0a) return null;
    out.push(buf.subarray(pos, pos + size));
    pos += size + 2;
  }
}
