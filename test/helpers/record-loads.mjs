// `node --import ./record-loads.mjs …`: appends every module the process
// loads, one file: URL a line, to the file named by $RECORD_LOADS. ES
// modules are seen as they resolve (a loader hook), CommonJS ones at exit.
import { appendFileSync } from 'node:fs';
import { createRequire, register } from 'node:module';
import { pathToFileURL } from 'node:url';

const out = process.env.RECORD_LOADS;
if (!out) throw new Error('record-loads: set RECORD_LOADS to the file to write');

const hook = `
import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context);
  appendFileSync(${JSON.stringify(out)}, resolved.url + '\\n');
  return resolved;
}`;
register(`data:text/javascript,${encodeURIComponent(hook)}`);

process.on('exit', () => {
  const files = Object.keys(createRequire(import.meta.url).cache);
  appendFileSync(out, files.map((f) => `${pathToFileURL(f).href}\n`).join(''));
});
