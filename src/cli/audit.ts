import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { KeyObject } from 'node:crypto';
import type { QueryFilter, QueryFormat } from '../audit/query.js';
import type { Anchor, Finding, VerifyResult } from '../audit/verify.js';
import type { LogSet } from '../audit/worker-logs.js';
import { plural } from '../text.js';

// Audit commands run on auditors' machines over multi-GB logs: each loads only
// what it needs (not the proxy's config loader, GeoIP or Redis client), which
// keeps the baseline memory of a query or report small.

class UsageError extends Error {}

function parse<T extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: T, allowPositionals = false) {
  try {
    const config = { args, options: { help: { type: 'boolean', short: 'h' }, ...options }, allowPositionals, strict: true } as const;
    return parseArgs(config) as ReturnType<typeof parseArgs<{ options: T & { help: { type: 'boolean'; short: 'h' } }; allowPositionals: true; strict: true }>>;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

const USAGE = `Usage: residency-proxy audit COMMAND …

  keygen --out DIR [--force]
      Write an Ed25519 key pair for signing digests: DIR/decision-log-signing.key
      (private, for decision_log.signing_key_file) and DIR/decision-log-signing.pub
      (public, for auditors). Prints the public key and its key id.

  verify FILE|DIR…|--config FILE [--public-key PEM] [--require-signature]
        [--anchor HASH|DIGEST]… [--format text|json]
      Check record hashes, seq and prev continuity within and across files,
      digests and signatures. Reports the first broken record (file, line,
      seq, what is wrong). Exit 0 intact, 1 broken.
      --config reads decision_log.path from a proxy config. A log path beside
      which workers wrote (workers > 1: decisions.w1.log, decisions.w2.log, …)
      verifies every worker's log (its rotated files too), one result each;
      exit 1 when any is broken.
      Each log must start at seq 1; where older files were deleted on purpose,
      --anchor names where retained history starts: the hash of the last
      record before it, or the digest file that sealed that record. Repeat it
      for several logs.

  query FILE|DIR…|--config FILE [--since T] [--until T] [--decision allow|block] [--upstream U]
        [--jurisdiction J] [--mode M] [--format json|table|csv]
      Stream matching records (json: the lines as stored).

  report FILE|DIR…|--config FILE [--since T] [--until T] [--format md|html|json] [--public-key PEM]
        [--anchor HASH|DIGEST]… [--out FILE]
      Totals by decision, mode, jurisdiction, upstream; blocked non-US writes;
      monitor-mode would-blocks; top reasons; policy versions; chain check
      (--anchor as for verify). Without --since from the first record, without
      --until to the last: the whole log by default.

  export --redis URL --stream KEY --out DIR
      Drain a decision stream into one verifiable file per replica.

query and report read every worker's log too when given the configured log
path (or --config).

T is ISO 8601 (2026-01-31, 2026-01-31T12:00:00Z), a duration back from now (90m, 24h, 7d) or now.
--since is included, --until excluded.`;

const SUBCOMMANDS: Record<string, (args: string[]) => Promise<number>> = {
  keygen,
  verify,
  query,
  report,
  export: exportCommand,
};

export async function auditCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === '--help' || sub === '-h') {
    console.log(USAGE);
    return sub === undefined ? 2 : 0;
  }
  try {
    const run = SUBCOMMANDS[sub];
    if (!run) throw new UsageError(`unknown audit command "${sub}"`);
    return await run(rest);
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`${err.message}\n\n${USAGE}`);
      return 2;
    }
    throw err;
  } finally {
    // Opt-in, for the memory tests: peak RSS of this process, in KiB.
    if (process.env.RESIDENCY_AUDIT_MAXRSS === '1') console.error(JSON.stringify({ max_rss_kib: process.resourceUsage().maxRSS }));
  }
}

async function loadPublicKey(file: string | undefined): Promise<KeyObject | null> {
  if (file === undefined) return null;
  const { parsePublicKey } = await import('../audit/digest.js');
  return parsePublicKey(readFileSync(file, 'utf8'), file);
}

async function keygen(args: string[]): Promise<number> {
  const { values } = parse(args, { out: { type: 'string' }, force: { type: 'boolean' } });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!values.out) throw new UsageError('keygen needs --out DIR');
  mkdirSync(values.out, { recursive: true });
  const privateFile = join(values.out, 'decision-log-signing.key');
  const publicFile = join(values.out, 'decision-log-signing.pub');
  if (!values.force && (existsSync(privateFile) || existsSync(publicFile))) {
    console.error(`${privateFile} or ${publicFile} exists; use --force to replace it (digests signed with the old key then need the old public key)`);
    return 1;
  }
  const { generateSigningKeyPair } = await import('../audit/digest.js');
  const pair = generateSigningKeyPair();
  writeFileSync(privateFile, pair.privatePem, { mode: 0o600 });
  writeFileSync(publicFile, pair.publicPem, { mode: 0o644 });
  console.log(`private key: ${privateFile} (decision_log.signing_key_file; keep it secret)`);
  console.log(`public key:  ${publicFile} (give it to auditors: audit verify --public-key)`);
  console.log(`key id:      ${pair.keyId}`);
  process.stdout.write(pair.publicPem);
  return 0;
}

function location(f: Finding): string {
  return `${f.file}${f.line !== undefined ? `:${f.line}` : ''}${f.seq !== undefined ? ` (seq ${f.seq})` : ''}`;
}

async function verify(args: string[]): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      'public-key': { type: 'string' },
      'require-signature': { type: 'boolean' },
      anchor: { type: 'string', multiple: true },
      format: { type: 'string', default: 'text' },
      config: { type: 'string' },
    },
    true,
  );
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const logs = await withConfiguredLog(positionals, values.config);
  if (logs.length === 0) throw new UsageError('verify needs at least one FILE or DIR, or --config');
  if (values.format !== 'text' && values.format !== 'json') throw new UsageError('--format is text or json');
  if (values['require-signature'] && !values['public-key']) throw new UsageError('--require-signature needs --public-key');
  const { verifyLogs } = await import('../audit/verify.js');
  const { splitByWorker } = await import('../audit/worker-logs.js');
  const publicKey = await loadPublicKey(values['public-key']);
  const anchors = await anchorsFrom(values.anchor, publicKey);
  const sets = splitByWorker(logs);
  const results: { set: LogSet; result: VerifyResult }[] = [];
  for (const set of sets) {
    results.push({ set, result: await verifyLogs(set.args, { publicKey, requireSignature: values['require-signature'] === true, anchors }) });
  }
  const ok = results.every((r) => r.result.ok);
  const single = results.length === 1 && results[0]!.set.worker === null;
  if (values.format === 'json') {
    // One log: the result as before; several (workers): one result per log.
    const body = single ? results[0]!.result : { ok, logs: results.map(({ set, result }) => ({ worker: set.worker, log: set.label, ...result })) };
    console.log(JSON.stringify(body, null, 2));
    return ok ? 0 : 1;
  }
  if (single) return printVerified(results[0]!.result);
  for (const { set, result } of results) {
    console.log(`== ${set.worker === null ? set.label : `worker ${set.worker}: ${set.label}`}`);
    printVerified(result);
  }
  const broken = results.filter((r) => !r.result.ok).map((r) => (r.set.worker === null ? r.set.label : `worker ${r.set.worker}`));
  console.log(broken.length === 0 ? `ALL INTACT: ${plural(results.length, 'log')}` : `BROKEN: ${broken.length} of ${plural(results.length, 'log')} (${broken.join(', ')})`);
  return ok ? 0 : 1;
}

/** The text output of one verification; returns its exit code. */
function printVerified(result: VerifyResult): number {
  for (const f of result.files) {
    const range = f.first_seq === null ? 'no records' : `seq ${f.first_seq}–${f.last_seq} (${plural(f.records, 'record')})`;
    const seal = f.sealed ? `sealed, ${f.signature}` : 'unsealed';
    console.log(`${f.file}: ${range}, ${seal}${f.replica ? `, replica ${f.replica}` : ''}`);
  }
  for (const f of result.findings) {
    // Where anchored history starts is part of what INTACT vouches for.
    if (f.severity !== 'note' || f.code === 'chain_anchor') console.log(`${f.severity.toUpperCase()} ${location(f)}: ${f.message} [${f.code}]`);
  }
  if (result.firstError) {
    console.log(`BROKEN: first broken record at ${location(result.firstError)}: ${result.firstError.message}`);
    return 1;
  }
  const unsigned = result.files.filter((f) => f.signature === 'unsigned').length;
  console.log(`INTACT: ${plural(result.records, 'record')} in ${plural(result.files.length, 'file')}${unsigned > 0 ? ` (${plural(unsigned, 'digest')} unsigned)` : ''}`);
  return 0;
}

/** The positional log arguments, plus the log a proxy config names (--config). */
async function withConfiguredLog(positionals: readonly string[], configFile: string | undefined): Promise<string[]> {
  if (configFile === undefined) return [...positionals];
  // Only here: the config parser and schema load when asked for.
  const { ConfigError, loadConfigFile } = await import('../config/load.js');
  let path: string;
  try {
    path = loadConfigFile(configFile, { env: process.env }).decision_log.path;
  } catch (err) {
    throw new UsageError(err instanceof ConfigError ? err.message : (err as Error).message);
  }
  if (path === '-') throw new UsageError(`${configFile}: decision_log.path is "-" (stdout): there is no log file to read`);
  return [...positionals, path];
}

/** Arguments as query and report read them: a log path beside which workers wrote stands for every worker's log too. */
async function everyWorkerLog(args: readonly string[]): Promise<string[]> {
  const { splitByWorker } = await import('../audit/worker-logs.js');
  return splitByWorker(args).flatMap((set) => set.args);
}

async function filterFrom(values: Record<string, string | boolean | string[] | undefined>): Promise<QueryFilter> {
  const { parseTimeBound } = await import('../audit/query.js');
  const filter: QueryFilter = {};
  const text = (name: string) => (typeof values[name] === 'string' ? (values[name] as string) : undefined);
  const now = Date.now();
  for (const name of ['since', 'until'] as const) {
    const value = text(name);
    try {
      if (value !== undefined) filter[name] = parseTimeBound(value, now);
    } catch (err) {
      throw new UsageError(`--${name} ${(err as Error).message}`);
    }
  }
  if (filter.since !== undefined && filter.until !== undefined && filter.since >= filter.until) {
    throw new UsageError(`--since (${filter.since}) must be before --until (${filter.until}): the period is from --since, included, to --until, excluded`);
  }
  for (const key of ['decision', 'upstream', 'jurisdiction', 'mode'] as const) {
    const v = text(key);
    if (v !== undefined) filter[key] = key === 'jurisdiction' && v !== 'unknown' ? v.toUpperCase() : v;
  }
  return filter;
}

async function query(args: string[]): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      since: { type: 'string' },
      until: { type: 'string' },
      decision: { type: 'string' },
      upstream: { type: 'string' },
      jurisdiction: { type: 'string' },
      mode: { type: 'string' },
      format: { type: 'string', default: 'json' },
      config: { type: 'string' },
    },
    true,
  );
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const logs = await everyWorkerLog(await withConfiguredLog(positionals, values.config));
  if (logs.length === 0) throw new UsageError('query needs at least one FILE or DIR, or --config');
  const format = values.format as QueryFormat;
  if (!['json', 'table', 'csv'].includes(format)) throw new UsageError('--format is json, table or csv');
  const { runQuery } = await import('../audit/query.js');
  const stats = await runQuery(logs, await filterFrom(values), format, process.stdout);
  if (stats.unreadable > 0) console.error(`${plural(stats.unreadable, 'line')} ${stats.unreadable === 1 ? 'was not a record' : 'were not records'} (run "audit verify")`);
  return 0;
}

async function report(args: string[]): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      since: { type: 'string' },
      until: { type: 'string' },
      format: { type: 'string', default: 'md' },
      'public-key': { type: 'string' },
      'require-signature': { type: 'boolean' },
      anchor: { type: 'string', multiple: true },
      out: { type: 'string' },
      config: { type: 'string' },
    },
    true,
  );
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const logs = await everyWorkerLog(await withConfiguredLog(positionals, values.config));
  if (logs.length === 0) throw new UsageError('report needs at least one FILE or DIR, or --config');
  if (values.format !== 'md' && values.format !== 'html' && values.format !== 'json') throw new UsageError('--format is md, html or json');
  const { since, until } = await filterFrom(values);
  const { buildReport, renderHtml, renderMarkdown } = await import('../audit/report.js');
  const publicKey = await loadPublicKey(values['public-key']);
  const data = await buildReport(logs, {
    since,
    until,
    publicKey,
    requireSignature: values['require-signature'] === true,
    anchors: await anchorsFrom(values.anchor, publicKey),
  });
  const text = values.format === 'html' ? renderHtml(data) : values.format === 'json' ? `${JSON.stringify(data, null, 2)}\n` : renderMarkdown(data);
  if (values.out) writeFileSync(values.out, text);
  else process.stdout.write(text);
  return 0;
}

/** --anchor values as verify reads them; a bad one is a usage error. */
async function anchorsFrom(args: readonly string[] | undefined, publicKey: KeyObject | null): Promise<Anchor[]> {
  const { readAnchor } = await import('../audit/verify.js');
  return (args ?? []).map((arg) => {
    try {
      return readAnchor(arg, publicKey);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  });
}

async function exportCommand(args: string[]): Promise<number> {
  const { values } = parse(args, { redis: { type: 'string' }, stream: { type: 'string' }, out: { type: 'string' } });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!values.redis || !values.stream || !values.out) throw new UsageError('export needs --redis URL --stream KEY --out DIR');
  const { exportStream } = await import('../audit/export.js');
  const files = await exportStream({ redisUrl: values.redis, streamKey: values.stream, outDir: values.out });
  for (const f of files) {
    console.log(
      `${f.file}: replica ${f.replica}, seq ${f.first_seq}–${f.last_seq}, ${plural(f.records, 'record')}` +
        `${f.duplicates > 0 ? `, ${plural(f.duplicates, 'duplicate')} skipped` : ''}${f.gaps > 0 ? `, ${plural(f.gaps, 'gap')}` : ''}`,
    );
  }
  if (files.length === 0) console.log(`stream ${values.stream} is empty`);
  return 0;
}
