// One streaming upload of a generated body: the same 64 KiB buffer written
// again and again with backpressure, so the client never holds the body.
// Run as a child: node big-put-child.js '{"url":…,"bytes":…,"framing":"length"|"chunked","headers":{…},"timeoutSec":…}'
// Prints one JSON line: {"msg":"result","seconds":…,"bytes":…,"status":…} or {"msg":"result","error":…}.
import { request } from 'node:http';

interface Spec {
  url: string;
  bytes: number;
  framing: 'length' | 'chunked';
  headers: Record<string, string>;
  timeoutSec: number;
}
const spec = JSON.parse(process.argv[2] ?? '{}') as Spec;
const CHUNK = Buffer.alloc(64 * 1024, 0x78);

function upload(): Promise<{ seconds: number; bytes: number; status: number }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const headers: Record<string, string> = { ...spec.headers, 'content-type': 'application/octet-stream' };
    // Without Content-Length Node sends Transfer-Encoding: chunked.
    if (spec.framing === 'length') headers['content-length'] = String(spec.bytes);
    const req = request(spec.url, { method: 'PUT', headers, agent: false });
    req.setTimeout(spec.timeoutSec * 1000, () => req.destroy(new Error(`no progress for ${spec.timeoutSec} s`)));
    req.once('error', reject);
    req.once('response', (res) => {
      res.resume();
      res.once('end', () => resolve({ seconds: (performance.now() - started) / 1000, bytes: spec.bytes, status: res.statusCode ?? 0 }));
      res.once('error', reject);
    });
    let left = spec.bytes;
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, CHUNK.length);
        left -= n;
        if (!req.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) {
          req.once('drain', pump);
          return;
        }
      }
      req.end();
    };
    pump();
  });
}

const guard = setTimeout(() => {
  console.log(JSON.stringify({ msg: 'result', error: `not finished within ${spec.timeoutSec} s` }));
  process.exit(1);
}, spec.timeoutSec * 1000);
try {
  const r = await upload();
  console.log(JSON.stringify({ msg: 'result', ...r }));
} catch (err) {
  console.log(JSON.stringify({ msg: 'result', error: (err as Error).message }));
}
clearTimeout(guard);
