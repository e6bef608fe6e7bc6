import { readFileSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import { Redis } from 'ioredis';
import { silentLogger, type OperationalLogger } from '../log.js';
import { DecisionLogCodes, describeError } from './errors.js';
import type { LogLayout } from './files.js';
import { LogReader, type LogLine } from './log-reader.js';

/**
 * Appends a batch to the stream, exactly once per (replica, seq): the script
 * runs atomically, skips every seq at or below the replica's last shipped
 * seq (kept in a hash next to the stream) and advances it in the same step.
 * A retry after a timeout whose first attempt did land adds nothing.
 *
 * KEYS[1] stream, KEYS[2] hash of last shipped seq per replica;
 * ARGV[1] replica, ARGV[2] MAXLEN (approximate), then seq/line pairs in order.
 * Returns the replica's last shipped seq and how many entries were added.
 */
export const SHIP_SCRIPT = `
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local added = 0
for i = 3, #ARGV, 2 do
  local seq = tonumber(ARGV[i])
  if seq > last then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'replica', ARGV[1], 'seq', ARGV[i], 'record', ARGV[i + 1])
    last = seq
    added = added + 1
  end
end
redis.call('HSET', KEYS[2], ARGV[1], last)
return {last, added}
`;

type ShipFn = (stream: string, shipped: string, replica: string, maxlen: number, ...pairs: (string | number)[]) => Promise<[number, number]>;

export interface ShipperOptions {
  /** The log being shipped (the durable writer). */
  log: { layout: LogLayout; replica: string; committedSeq(): number; onCommit(listener: (seq: number) => void): () => void };
  redisUrl: string;
  /** Full key of the stream (prefix included). */
  streamKey: string;
  /** Full key of the hash of last shipped seq per replica. Default: `${streamKey}:shipped`. */
  shippedKey?: string;
  maxlen: number;
  batchSize?: number;
  /** Retry back-off bounds while Redis is unreachable. */
  retryMinMs?: number;
  retryMaxMs?: number;
  /** The operational log (never the Redis URL: it may carry a password). Default: silent. */
  logger?: OperationalLogger;
}

export interface Shipper {
  start(): void;
  /** Records durable in the local log but not yet confirmed in Redis (for a gauge). */
  backlog(): number;
  /** Last seq confirmed in Redis. */
  shippedSeq(): number;
  /** Ship what is left (bounded by `drainMs`), save the cursor, disconnect. */
  close(drainMs?: number): Promise<void>;
}

interface Cursor {
  replica: string;
  stream: string;
  seq: number;
}

function readCursor(path: string): Cursor | null {
  try {
    const c = JSON.parse(readFileSync(path, 'utf8')) as Cursor;
    return typeof c.seq === 'number' && typeof c.replica === 'string' ? c : null;
  } catch {
    return null;
  }
}

/**
 * Ships the decision log to a Redis Stream, in seq order, off the request
 * path. The local log is the source of truth and the spool: the shipper
 * reads committed records from the files (never from memory), so a Redis
 * outage only grows the backlog. `DIR/decisions.log.cursor.json` keeps the
 * last shipped replica+seq across restarts; on every (re)connection the
 * shipper reconciles with Redis's own record of it (the hash) — ahead means
 * a cursor write was lost (skip ahead, the script would skip anyway); behind
 * means Redis lost data (restarted without persistence), so the missing
 * records are shipped again, at most the last `maxlen` (what the stream
 * would keep anyway).
 */
export function createShipper(options: ShipperOptions): Shipper {
  const { log, streamKey, maxlen } = options;
  const shippedKey = options.shippedKey ?? `${streamKey}:shipped`;
  const batchSize = options.batchSize ?? 500;
  const retryMin = options.retryMinMs ?? 100;
  const retryMax = options.retryMaxMs ?? 2000;
  const logger = options.logger ?? silentLogger;
  const cursorPath = log.layout.cursor;
  const reader = new LogReader(log.layout);

  const saved = readCursor(cursorPath);
  let shipped = saved && saved.replica === log.replica && saved.stream === streamKey ? Math.min(saved.seq, log.committedSeq()) : 0;
  let reconciled = false;
  let stopping = false;
  let drainUntil = Infinity;
  let running: Promise<void> | null = null;
  let wake: ((reason: 'commit' | 'ready' | 'close') => void) | null = null;
  let inflight: LogLine[] | null = null;
  let lastFailureLog = 0;
  let cursorDirty = false;
  let cursorWritten = 0;

  const redis = new Redis(options.redisUrl, {
    lazyConnect: true,
    // Commands fail at once while disconnected; the loop retries (the log is the queue).
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: 5000,
    connectTimeout: 2000,
    retryStrategy: (times: number) => Math.min(retryMin * 2 ** Math.min(times, 8), retryMax),
  });
  redis.defineCommand('shipDecisions', { numberOfKeys: 2, lua: SHIP_SCRIPT });
  const ship = (redis as unknown as { shipDecisions: ShipFn }).shipDecisions.bind(redis);
  redis.on('error', (err: Error) => failure(err));
  redis.on('ready', () => {
    reconciled = false;
    wake?.('ready');
  });
  const unsubscribe = log.onCommit(() => wake?.('commit'));

  function failure(err: unknown): void {
    // One line per 10 s while Redis is away, not one per retry.
    const now = Date.now();
    if (now - lastFailureLog < 10_000) return;
    lastFailureLog = now;
    logger.warn({ code: DecisionLogCodes.SHIP_FAILED, err: describeError(err), backlog: log.committedSeq() - shipped }, 'decision stream: shipping paused, records are kept in the local log');
  }

  /** Sleep until `ms` pass or something wakes it: new records (idle sleep only) or Redis becoming ready. */
  const sleep = (ms: number, wakeOnCommit: boolean) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        wake = null;
        resolve();
      }, ms);
      wake = (reason: 'commit' | 'ready' | 'close') => {
        // While backing off, new records must not turn the back-off into a busy loop.
        if (reason === 'commit' && !wakeOnCommit) return;
        clearTimeout(t);
        wake = null;
        resolve();
      };
    });

  async function saveCursor(force = false): Promise<void> {
    if (!cursorDirty || (!force && Date.now() - cursorWritten < 200)) return;
    cursorDirty = false;
    cursorWritten = Date.now();
    const tmp = `${cursorPath}.tmp`;
    const body: Cursor & { at: string } = { replica: log.replica, stream: streamKey, seq: shipped, at: new Date().toISOString() };
    try {
      await writeFile(tmp, `${JSON.stringify(body)}\n`);
      await rename(tmp, cursorPath);
    } catch (err) {
      // The hash in Redis is authoritative; a lost cursor costs a reconciliation, not a record.
      logger.warn({ err: describeError(err) }, 'decision stream: cannot save the shipping cursor');
    }
  }

  async function reconcile(): Promise<void> {
    const raw = await redis.hget(shippedKey, log.replica);
    const remote = raw === null ? 0 : Number(raw);
    const committed = log.committedSeq();
    if (remote > committed) {
      logger.error({ redis_seq: remote, local_seq: committed }, 'decision stream: Redis holds later records of this replica than the local log (was the log reset?); they are not shipped again');
    }
    // Redis's record of what it holds wins; never resend more than the stream keeps.
    const target = Math.min(Math.max(remote, committed - maxlen, 0), committed);
    if (target < shipped) {
      logger.warn({ redis_seq: remote, shipped_seq: shipped, from_seq: target + 1 }, 'decision stream: Redis has fewer records than were shipped (restarted without persistence?); shipping them again');
    }
    shipped = target;
    inflight = null;
    cursorDirty = true;
    reconciled = true;
  }

  async function step(): Promise<boolean> {
    if (redis.status !== 'ready') return false;
    if (!reconciled) await reconcile();
    const upto = log.committedSeq();
    if (inflight === null) {
      if (shipped >= upto) return true;
      inflight = await reader.read(shipped + 1, upto, batchSize);
      if (inflight.length === 0) {
        // Records below the oldest file kept (archived away): skip to what exists.
        const first = reader.firstAvailable();
        if (first !== null && first > shipped + 1) {
          logger.warn({ from_seq: shipped + 1, to_seq: first - 1 }, 'decision stream: records no longer on disk were not shipped');
          shipped = first - 1;
        }
        inflight = null;
        return true;
      }
    }
    // One script call per replica run (a log directory can change replica name at a file boundary).
    const batch = inflight;
    let i = 0;
    while (i < batch.length) {
      const replica = batch[i]!.replica;
      let j = i;
      const pairs: (string | number)[] = [];
      while (j < batch.length && batch[j]!.replica === replica) {
        pairs.push(batch[j]!.seq, batch[j]!.line);
        j++;
      }
      await ship(streamKey, shippedKey, replica, maxlen, ...pairs);
      shipped = batch[j - 1]!.seq;
      cursorDirty = true;
      i = j;
    }
    inflight = null;
    await saveCursor();
    return true;
  }

  async function loop(): Promise<void> {
    let delay = retryMin;
    while (!(stopping && (shipped >= log.committedSeq() || Date.now() >= drainUntil))) {
      let ok: boolean;
      try {
        ok = await step();
      } catch (err) {
        failure(err);
        ok = false;
      }
      if (!ok) {
        if (stopping) break;
        await sleep(delay, false);
        delay = Math.min(delay * 2, retryMax);
        continue;
      }
      delay = retryMin;
      if (shipped >= log.committedSeq() && !stopping) {
        await saveCursor(true);
        await sleep(1000, true);
      }
    }
    await saveCursor(true);
  }

  return {
    start() {
      if (running) return;
      redis.connect().catch((err: unknown) => failure(err));
      running = loop();
    },
    backlog: () => Math.max(0, log.committedSeq() - shipped),
    shippedSeq: () => shipped,
    async close(drainMs = 2000) {
      stopping = true;
      drainUntil = Date.now() + drainMs;
      unsubscribe();
      wake?.('close');
      await running;
      await reader.close();
      redis.disconnect();
    },
  };
}
