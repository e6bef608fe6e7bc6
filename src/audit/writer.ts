import { createHash, type Hash, type KeyObject } from 'node:crypto';
import {
  close as closeCb,
  closeSync,
  constants,
  existsSync,
  fdatasync as fdatasyncCb,
  fstat as fstatCb,
  fsyncSync,
  ftruncate as ftruncateCb,
  mkdirSync,
  open as openCb,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  truncateSync,
  stat as statCb,
  fstatSync,
  write as writeCb,
  writeSync,
} from 'node:fs';
import { open as openAsync, rename as renameAsync } from 'node:fs/promises';
import { basename } from 'node:path';
import type { Operation } from '../config/schema.js';
import { silentLogger, type OperationalLogger } from '../log.js';
import { watchDirectory } from '../watch.js';
import { GENESIS_HASH, recordHash } from './canonical.js';
import { sealDigest, serialiseDigest, type Digest, type DigestBody, type SealReason } from './digest.js';
import { DecisionLogCodes, DecisionLogError, describeError } from './errors.js';
import { digestPath, listRotated, logLayout, rotatedPath, type LogLayout } from './files.js';
import { lockLog, unlockLog } from './lock.js';
import { readFirstLine, readTail } from './lines.js';
import type { DecisionRecord, DecisionSink, LogEntry } from './record.js';
import { linesBuffer, sealNext } from './serialise.js';

/** Linux and most Unixes; absent on Windows, where each batch is fdatasync'd instead. */
const O_DSYNC: number | undefined = constants.O_DSYNC;
/** The longest a lazy record (a write's outcome) waits for a batch to ride with. */
export const LAZY_FLUSH_MS = 100;

/** The file operations on the write path, injectable so tests can fail them. */
export interface FileOps {
  open(path: string, flags: string | number): Promise<number>;
  write(fd: number, buffer: Buffer, offset: number, length: number): Promise<number>;
  fdatasync(fd: number): Promise<void>;
  ftruncate(fd: number, length: number): Promise<void>;
  fstat(fd: number): Promise<FileIdentity & { size: number }>;
  /**
   * Asynchronous on purpose: a hung filesystem must stall the log, not the
   * event loop (refusals, /readyz and metrics keep answering).
   */
  stat(path: string): Promise<FileIdentity>;
  close(fd: number): Promise<void>;
  /**
   * Watch a directory for entries renamed, created or removed (the active
   * file moved, replaced or deleted) so that a batch need not stat the path
   * every time: `onRename` gets the entry's name, or null when the platform
   * does not say; `onLost` when the watch stops working. Null where the
   * directory cannot be watched (every batch then checks the path).
   */
  watch(dir: string, onRename: (name: string | null) => void, onLost: (err: Error) => void): { close(): void } | null;
}

interface FileIdentity {
  dev: number;
  ino: number;
}

const cb =
  <T>(resolve: (v: T) => void, reject: (e: Error) => void) =>
  (err: Error | null, value?: T) =>
    err ? reject(err) : resolve(value as T);

export const nodeFileOps: FileOps = {
  open: (path, flags) => new Promise((res, rej) => openCb(path, flags, 0o640, cb(res, rej))),
  write: (fd, buffer, offset, length) => new Promise((res, rej) => writeCb(fd, buffer, offset, length, null, cb(res, rej))),
  fdatasync: (fd) => new Promise((res, rej) => fdatasyncCb(fd, cb(res, rej))),
  ftruncate: (fd, length) => new Promise((res, rej) => ftruncateCb(fd, length, cb(res, rej))),
  fstat: (fd) => new Promise((res, rej) => fstatCb(fd, cb(res, rej))),
  stat: (path) => new Promise((res, rej) => statCb(path, cb(res, rej))),
  close: (fd) => new Promise((res, rej) => closeCb(fd, cb(res, rej))),
  // A rename of the active file (or of the directory) is what makes the path worth checking.
  watch: (dir, onRename, onLost) =>
    watchDirectory(
      dir,
      (event, name) => {
        if (event === 'rename') onRename(name);
      },
      onLost,
    ),
};

export interface DecisionLogOptions {
  /** The active file, e.g. /var/lib/residency-proxy/decisions.log. */
  path: string;
  replica: string;
  /** Group-commit window: how long a batch waits for company before it is written and fsync'd. */
  flushMs?: number;
  /** fdatasync each batch before acknowledging it (default true; false survives a process crash, not a power loss). */
  fsync?: boolean;
  /**
   * How a batch is made durable when `fsync` is on: `o_dsync` (the default
   * where the platform has it) opens the active file with O_DSYNC, so the
   * write itself returns once its bytes are durable: one system call and one
   * thread-pool job per batch; `fdatasync` writes, then calls fdatasync.
   * The same guarantee either way.
   */
  durability?: 'o_dsync' | 'fdatasync';
  /** Rotate once the active file holds this many bytes (0: never). */
  rotateBytes?: number;
  /** Rotate once the active file's first record is this old (0: never). */
  rotateSeconds?: number;
  /** Ed25519 key signing the digests; null writes them unsigned. */
  signingKey?: KeyObject | null;
  /** Operations whose records are held in memory (and the request answered) while the log cannot be written. */
  failOpen?: readonly Operation[];
  /** At most this many held records; past it, writes fail closed again. */
  heldMax?: number;
  /** A batch this large is written at once, without waiting for the window. */
  maxBatchBytes?: number;
  /** While broken, try to recover this often (also checks time-based rotation). */
  probeMs?: number;
  fileOps?: FileOps;
  now?: () => number;
  /**
   * The operational log: what an operator should see (resumed, sealed,
   * recovered, truncated tail) and every failed batch (each write() also
   * rejects). Default: silent.
   */
  logger?: OperationalLogger;
}

export interface DecisionLog extends DecisionSink {
  readonly layout: LogLayout;
  readonly replica: string;
  /** Seq of the last record known to be durable (0 before any). */
  committedSeq(): number;
  /** Called with the committed seq after every durable batch and seal; returns an unsubscribe function. */
  onCommit(listener: (seq: number) => void): () => void;
  /** Records of fail-open operations waiting in memory for the log to come back. */
  heldCount(): number;
  /** Seal and rotate the active file now (no-op when it is empty). */
  rotate(): Promise<void>;
}

interface Item {
  entry: LogEntry;
  line: string;
  seq: number;
  hash: string;
  prev: string;
  resolve: () => void;
  reject: (err: Error) => void;
}

interface ActiveFile {
  /** Bytes known durable; anything past it after a failure is cut off. */
  size: number;
  count: number;
  firstSeq: number;
  firstPrev: string;
  /** Epoch ms of the file's first record, for time-based rotation. */
  firstAt: number;
  sha: Hash;
}

function emptyActive(): ActiveFile {
  return { size: 0, count: 0, firstSeq: 0, firstPrev: GENESIS_HASH, firstAt: 0, sha: createHash('sha256') };
}

function fsyncDirSync(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Some platforms cannot fsync a directory; the rename is still atomic.
  }
}

async function fsyncDir(dir: string): Promise<void> {
  try {
    const handle = await openAsync(dir, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch {
    // As above.
  }
}

function parseRecordLine(text: string, file: string): DecisionRecord {
  try {
    const record = JSON.parse(text) as DecisionRecord;
    if (typeof record.seq === 'number' && typeof record.hash === 'string') return record;
  } catch {
    // Reported below.
  }
  throw new DecisionLogError(
    DecisionLogCodes.CORRUPT,
    `${file}: the last complete line is not a decision record; move the file aside (check it with "residency-proxy audit verify") and restart`,
  );
}

function readDigest(file: string): Digest | null {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Digest;
  } catch {
    return null;
  }
}

/** Everything a seal needs from a whole file, read once (start-up healing only). */
function summariseFile(file: string): { first: DecisionRecord; last: DecisionRecord; count: number; sha: Hash; size: number } | null {
  const first = readFirstLine(file);
  const tail = readTail(file);
  if (!first || !first.terminated || tail.lastLine === null) return null;
  const sha = createHash('sha256');
  let count = 0;
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(1024 * 1024);
    let position = 0;
    const end = tail.size - tail.tornBytes;
    while (position < end) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, end - position), position);
      if (n === 0) break;
      const chunk = buf.subarray(0, n);
      sha.update(chunk);
      for (let i = chunk.indexOf(0x0a); i !== -1; i = chunk.indexOf(0x0a, i + 1)) count++;
      position += n;
    }
  } finally {
    closeSync(fd);
  }
  return { first: parseRecordLine(first.text, file), last: parseRecordLine(tail.lastLine, file), count, sha, size: tail.size - tail.tornBytes };
}

/**
 * The durable decision log: JSON Lines, one sealed record per line, chained
 * by `seq`/`prev`/`hash`, group-committed (a batch is written and fdatasync'd
 * once per window, and every write() of the batch resolves after that fsync),
 * rotated by size and time, each finished file sealed by a digest.
 *
 * Failure: when a batch cannot be written or synced, its writes and every
 * write queued behind it reject (their chain depends on it), the sequence
 * rolls back to the last durable record, the file is cut back to its last
 * durable byte, and healthy() is false. The next write() or the periodic
 * probe reopens the file, checks it still ends with the last durable record,
 * and carries on.
 *
 * Start-up is synchronous (before the proxy listens): take the lock, finish
 * any rotation a crash interrupted, cut a torn last line (never acknowledged),
 * and resume seq/prev from the tail.
 */
export function createDecisionLog(options: DecisionLogOptions): DecisionLog {
  return new DurableLog(options);
}

class DurableLog implements DecisionLog {
  readonly layout: LogLayout;
  readonly replica: string;
  private readonly ops: FileOps;
  private readonly flushMs: number;
  private readonly fsync: boolean;
  /** The active file is opened O_DSYNC: a returned write is durable, no fdatasync per batch. */
  private readonly syncedWrites: boolean;
  private readonly rotateBytes: number;
  private readonly rotateMs: number;
  private readonly signingKey: KeyObject | null;
  private readonly failOpen: ReadonlySet<string>;
  private readonly heldMax: number;
  private readonly maxBatchBytes: number;
  private readonly now: () => number;
  private readonly logger: OperationalLogger;

  private fd: number | null = null;
  private identity: FileIdentity | null = null;
  /**
   * The log directory's watch: a rename there makes the next batch check
   * the active path (see commit). Null while there is none (every batch
   * checks).
   */
  private watcher: { close(): void } | null = null;
  /** The next batch checks that the path still names the open file: a rename was seen, or the probe interval passed. */
  private pathCheckDue = true;
  private active: ActiveFile = emptyActive();
  /** Replica name in the active file's records (another name only until start-up rotates it away). */
  private activeReplica: string;
  /** Last durable record. */
  private committed = { seq: 0, hash: GENESIS_HASH };
  /** Last record handed a seq (ahead of `committed` while batches are in flight). */
  private assigned = { seq: 0, hash: GENESIS_HASH };
  private prevDigest = GENESIS_HASH;
  /** A rotation that renamed the active file but did not finish (seal, new file). */
  private unfinishedRotation: { path: string; digest: Digest } | null = null;

  private pending: Item[] = [];
  private pendingBytes = 0;
  private held: LogEntry[] = [];
  private timer: NodeJS.Timeout | null = null;
  private lazyTimer: NodeJS.Timeout | null = null;
  /**
   * A batch is due: something pending is waited on (or the lazy window ran
   * out, or the batch is full). Lazy records alone never start a commit, not
   * even when they arrive while one is finishing.
   */
  private due = false;
  /** A flush is queued for the end of this event-loop turn (flush_ms 0). */
  private immediateQueued = false;
  /** A flush loop or an exclusive section (rotation, shutdown) is running. */
  private busy: Promise<void> | null = null;
  private recovering: Promise<boolean> | null = null;
  private lastRecoveryFailure = -Infinity;
  private broken: DecisionLogError | null = null;
  private closed = false;
  private readonly probe: NodeJS.Timeout;
  private readonly listeners = new Set<(seq: number) => void>();

  constructor(private readonly options: DecisionLogOptions) {
    this.layout = logLayout(options.path);
    this.replica = options.replica;
    this.activeReplica = options.replica;
    this.ops = options.fileOps ?? nodeFileOps;
    this.flushMs = options.flushMs ?? 2;
    this.fsync = options.fsync ?? true;
    this.syncedWrites = this.fsync && (options.durability ?? 'o_dsync') === 'o_dsync' && O_DSYNC !== undefined;
    this.rotateBytes = options.rotateBytes ?? 0;
    this.rotateMs = (options.rotateSeconds ?? 0) * 1000;
    this.signingKey = options.signingKey ?? null;
    this.failOpen = new Set(options.failOpen ?? []);
    this.heldMax = options.heldMax ?? 10_000;
    this.maxBatchBytes = options.maxBatchBytes ?? 1024 * 1024;
    this.now = options.now ?? Date.now;
    this.logger = options.logger ?? silentLogger;

    mkdirSync(this.layout.dir, { recursive: true });
    lockLog(this.layout.lock, this.layout.active);
    try {
      this.start();
    } catch (err) {
      unlockLog(this.layout.lock);
      throw err;
    }
    this.watchDirectory();
    this.probe = setInterval(() => void this.housekeeping(), options.probeMs ?? 1000);
    this.probe.unref();
  }

  // ---------------------------------------------------------------------------
  // start-up

  private start(): void {
    const { active, dir } = this.layout;
    const activeDigest = digestPath(active);
    this.prevDigest = this.latestDigestHash();

    // Sealed at the last shutdown: rotate it now so the sealed file is never appended to.
    if (existsSync(activeDigest)) {
      const digest = readDigest(activeDigest);
      if (existsSync(active) && digest) {
        const target = rotatedPath(this.layout, digest.first_seq, digest.last_seq);
        renameSync(active, target);
        renameSync(activeDigest, digestPath(target));
        fsyncDirSync(dir);
        this.logger.info({ file: target }, 'decision log: rotated the file sealed at shutdown');
      } else if (digest) {
        // Crash between the two renames above: move the seal next to its file.
        const match = listRotated(this.layout).find((f) => f.firstSeq === digest.first_seq && f.lastSeq === digest.last_seq);
        if (match && !existsSync(digestPath(match.path))) {
          renameSync(activeDigest, digestPath(match.path));
          fsyncDirSync(dir);
        }
      }
    }

    let tail = existsSync(active) ? readTail(active) : null;
    if (tail && tail.tornBytes > 0) {
      // A batch cut short: its writes never resolved, so no client was answered on it.
      truncateSync(active, tail.size - tail.tornBytes);
      this.logger.warn({ file: active, bytes: tail.tornBytes }, 'decision log: cut a torn last line (never acknowledged)');
      tail = readTail(active);
    }

    const rotated = listRotated(this.layout);
    const newest = rotated.at(-1);
    if (tail === null || tail.lastLine === null) {
      // Crash after renaming the active file but before sealing it: finish the seal.
      if (newest && !existsSync(digestPath(newest.path))) this.sealRecoveredSync(newest.path);
      if (newest) {
        const last = readTail(newest.path).lastLine;
        if (last !== null) {
          const record = parseRecordLine(last, newest.path);
          this.committed = { seq: record.seq, hash: record.hash };
        }
      }
    } else {
      const last = parseRecordLine(tail.lastLine, active);
      this.committed = { seq: last.seq, hash: last.hash };
      if (recordHash(last as unknown as Record<string, unknown>) !== last.hash) {
        throw new DecisionLogError(
          DecisionLogCodes.CORRUPT,
          `${active}: the last record (seq ${last.seq}) does not match its hash; move the file aside (check it with "residency-proxy audit verify") and restart`,
        );
      }
      const summary = summariseFile(active);
      if (summary === null) throw new DecisionLogError(DecisionLogCodes.CORRUPT, `${active}: cannot read its first record`);
      this.active = {
        size: summary.size,
        count: summary.count,
        firstSeq: summary.first.seq,
        firstPrev: summary.first.prev,
        firstAt: Date.parse(summary.first.ts) || this.now(),
        sha: summary.sha,
      };
      if (last.replica !== this.replica) {
        // The log directory now belongs to another replica name: seal the old name's file, chain on.
        this.activeReplica = last.replica;
        this.fd = openSync(active, this.appendFlags(), 0o640);
        this.rotateSync('replica');
      }
    }
    this.assigned = { ...this.committed };

    if (this.fd === null) {
      const created = !existsSync(active);
      this.fd = openSync(active, this.appendFlags(), 0o640);
      if (created) fsyncDirSync(dir);
    }
    const st = fstatSync(this.fd);
    this.identity = { dev: st.dev, ino: st.ino };
    if (this.committed.seq > 0) {
      this.logger.info({ file: active, seq: this.committed.seq }, 'decision log: resumed');
    }
  }

  /** The hash of the newest digest of this log (the next digest chains to it). */
  private latestDigestHash(): string {
    let best: Digest | null = null;
    for (const file of [...listRotated(this.layout).map((f) => digestPath(f.path)), digestPath(this.layout.active)]) {
      const digest = existsSync(file) ? readDigest(file) : null;
      if (digest && typeof digest.hash === 'string' && (best === null || digest.last_seq > best.last_seq)) best = digest;
    }
    return best?.hash ?? GENESIS_HASH;
  }

  private sealRecoveredSync(file: string): void {
    const summary = summariseFile(file);
    if (!summary) return;
    const digest = this.digestFor(
      { replica: summary.first.replica, first: summary.first.seq, firstPrev: summary.first.prev, last: summary.last, count: summary.count },
      summary.sha.digest('hex'),
      summary.size,
      'recovered',
    );
    this.writeDigestSync(file, digest);
    this.logger.warn({ file }, 'decision log: sealed a file a crash left unsealed');
  }

  private digestFor(
    file: { replica: string; first: number; firstPrev: string; last: { seq: number; hash: string }; count: number },
    sha256: string,
    bytes: number,
    reason: SealReason,
  ): Digest {
    const body: DigestBody = {
      v: 1,
      type: 'residency-proxy/decision-log-digest',
      replica: file.replica,
      first_seq: file.first,
      last_seq: file.last.seq,
      count: file.count,
      first_prev: file.firstPrev,
      last_hash: file.last.hash,
      file_sha256: sha256,
      file_bytes: bytes,
      prev_digest: this.prevDigest,
      sealed_at: new Date(this.now()).toISOString(),
      reason,
    };
    return sealDigest(body, this.signingKey);
  }

  private writeDigestSync(file: string, digest: Digest): void {
    const target = digestPath(file);
    const tmp = `${target}.tmp`;
    const fd = openSync(tmp, 'w', 0o640);
    try {
      writeSync(fd, serialiseDigest(digest));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, target);
    fsyncDirSync(this.layout.dir);
    this.prevDigest = digest.hash;
  }

  private async writeDigest(file: string, digest: Digest): Promise<void> {
    const target = digestPath(file);
    const tmp = `${target}.tmp`;
    const handle = await openAsync(tmp, 'w', 0o640);
    try {
      await handle.writeFile(serialiseDigest(digest));
      await handle.sync();
    } finally {
      await handle.close();
    }
    await renameAsync(tmp, target);
    await fsyncDir(this.layout.dir);
    this.prevDigest = digest.hash;
  }

  private activeDigest(reason: SealReason): Digest {
    const a = this.active;
    return this.digestFor(
      { replica: this.activeReplica, first: a.firstSeq, firstPrev: a.firstPrev, last: this.committed, count: a.count },
      a.sha.copy().digest('hex'),
      a.size,
      reason,
    );
  }

  /** Start-up only (replica change): same steps as rotate(), synchronously. */
  private rotateSync(reason: SealReason): void {
    const digest = this.activeDigest(reason);
    const target = rotatedPath(this.layout, this.active.firstSeq, this.committed.seq);
    closeSync(this.fd!);
    this.fd = null;
    renameSync(this.layout.active, target);
    fsyncDirSync(this.layout.dir);
    this.writeDigestSync(target, digest);
    this.active = emptyActive();
    this.activeReplica = this.replica;
    this.logger.info({ file: target, reason, first_seq: digest.first_seq, last_seq: digest.last_seq }, 'decision log: sealed');
  }

  // ---------------------------------------------------------------------------
  // writing

  write(entry: LogEntry, options?: { lazy?: boolean }): Promise<void> {
    if (this.closed) return Promise.reject(new DecisionLogError(DecisionLogCodes.CLOSED, 'the decision log is closed'));
    // The usual case takes no async frame of its own: one promise per record is the writer's whole cost.
    if (this.broken !== null) return this.writeWhileBroken(entry, options);
    return this.enqueue(entry, false, options?.lazy === true);
  }

  private async writeWhileBroken(entry: LogEntry, options?: { lazy?: boolean }): Promise<void> {
    const recovered = await this.recover();
    if (!recovered) {
      if (this.holdable(entry)) {
        this.held.push(entry);
        return;
      }
      throw this.broken ?? new DecisionLogError(DecisionLogCodes.WRITE_FAILED, 'the decision log cannot be written');
    }
    return this.enqueue(entry, false, options?.lazy === true);
  }

  /** Flags for the active file: append, create; O_DSYNC when each write must be durable on return. */
  private appendFlags(): number {
    return constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | (this.syncedWrites ? O_DSYNC! : 0);
  }

  private holdable(entry: LogEntry): boolean {
    return 'operation' in entry && this.failOpen.has(entry.operation) && this.held.length < this.heldMax;
  }

  private enqueue(entry: LogEntry, detached = false, lazy = false): Promise<void> {
    const prev = this.assigned.hash;
    const { line, seq, hash } = sealNext(entry, this.replica, this.assigned);
    this.assigned = { seq, hash };
    const promise = new Promise<void>((resolve, reject) => {
      this.pending.push({ entry, line, seq, hash, prev, resolve, reject });
    });
    if (detached) promise.catch(() => {});
    this.pendingBytes += line.length + 1;
    if (lazy) this.scheduleLazy();
    else {
      this.due = true;
      this.schedule();
    }
    return promise;
  }

  /**
   * A record nothing waits on soon rides with the next batch (the next
   * decision's, under any traffic at all), so a write's outcome costs no
   * sync of its own; with no other traffic it is written after LAZY_FLUSH_MS.
   */
  private scheduleLazy(): void {
    if (this.pendingBytes >= this.maxBatchBytes) {
      this.due = true;
      return this.schedule();
    }
    this.lazyTimer ??= setTimeout(() => {
      this.lazyTimer = null;
      this.due = true;
      this.schedule();
    }, LAZY_FLUSH_MS);
    this.lazyTimer.unref();
  }

  private schedule(): void {
    if (this.busy !== null || this.pending.length === 0 || this.broken !== null) return;
    if (this.pendingBytes >= this.maxBatchBytes) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = null;
      this.startFlush();
      return;
    }
    if (this.flushMs === 0) {
      // No window: write once this turn of the event loop has queued what it
      // will (setTimeout(0) would wait a whole millisecond). Under load the
      // batches still form by themselves while the previous fsync runs.
      if (!this.immediateQueued) {
        this.immediateQueued = true;
        setImmediate(() => {
          this.immediateQueued = false;
          this.startFlush();
        });
      }
      return;
    }
    this.timer ??= setTimeout(() => {
      this.timer = null;
      this.startFlush();
    }, this.flushMs);
  }

  private startFlush(): void {
    if (this.busy !== null || this.pending.length === 0 || !this.due || this.broken !== null) return;
    void this.runBusy(() => this.flushLoop());
  }

  private runBusy(fn: () => Promise<void>): Promise<void> {
    const run = fn().finally(() => {
      this.busy = null;
      // Records that arrived after the loop's last look have waited a whole sync already.
      this.startFlush();
    });
    this.busy = run;
    return run;
  }

  /** Commit batches until none is pending. While one is being synced the next accumulates: that is the group commit. */
  private async flushLoop(): Promise<void> {
    while (this.pending.length > 0 && this.due && this.broken === null) {
      const batch = this.pending;
      this.pending = [];
      this.pendingBytes = 0;
      this.due = false;
      // Every lazy record waiting is in this batch: the next one starts a window of its own.
      if (this.lazyTimer) clearTimeout(this.lazyTimer);
      this.lazyTimer = null;
      try {
        await this.commit(batch);
      } catch (err) {
        this.fail(err, batch);
        return;
      }
      for (const item of batch) item.resolve();
      for (const listener of this.listeners) listener(this.committed.seq);
    }
  }

  private async commit(batch: Item[]): Promise<void> {
    if (this.fd === null) throw new DecisionLogError(DecisionLogCodes.WRITE_FAILED, 'the decision log file is not open');
    // Written records must land in the file auditors read: a moved or replaced file is a failure.
    // `identity` is the open fd's own (taken by fstat whenever this.fd is set, and an open fd keeps
    // its inode), so comparing the path's stat with it is the whole check: no fstat per batch.
    // The stat is a thread-pool round trip as dear as the durable write itself, so a batch makes it
    // only when the directory watch saw a rename, there is no watch, or a probe interval passed
    // (a filesystem whose changes the watch cannot see, such as NFS, is checked once a second).
    if (this.pathCheckDue || this.watcher === null) {
      // Cleared first: a rename seen while this stat runs makes the next batch check again.
      this.pathCheckDue = false;
      const onDisk = await this.ops.stat(this.layout.active);
      if (onDisk.ino !== this.identity!.ino || onDisk.dev !== this.identity!.dev) {
        throw Object.assign(new Error(`${this.layout.active} was moved or replaced`), { code: 'ESTALE' });
      }
    }
    if (this.rotationDue()) await this.rotateNow(this.active.size >= this.rotateBytes && this.rotateBytes > 0 ? 'size' : 'time');

    const buffer = linesBuffer(batch);
    let written = 0;
    while (written < buffer.length) {
      written += await this.ops.write(this.fd, buffer, written, buffer.length - written);
    }
    if (this.fsync && !this.syncedWrites) await this.ops.fdatasync(this.fd);

    const first = batch[0]!;
    const last = batch.at(-1)!;
    if (this.active.count === 0) {
      this.active.firstSeq = first.seq;
      this.active.firstPrev = first.prev;
      this.active.firstAt = this.now();
    }
    this.active.size += buffer.length;
    this.active.count += batch.length;
    this.active.sha.update(buffer);
    this.committed = { seq: last.seq, hash: last.hash };
  }

  private fail(err: unknown, batch: Item[]): void {
    const error =
      err instanceof DecisionLogError
        ? err
        : new DecisionLogError(DecisionLogCodes.WRITE_FAILED, `decision log write failed: ${describeError(err)}`, { cause: err });
    this.broken = error;
    // Everything queued behind the failed batch chains to it: roll the sequence back.
    const items = [...batch, ...this.pending];
    this.pending = [];
    this.pendingBytes = 0;
    this.due = false;
    this.assigned = { ...this.committed };
    if (this.fd !== null) {
      const fd = this.fd;
      this.fd = null;
      this.ops.close(fd).catch(() => {});
    }
    for (const item of items) {
      if (this.holdable(item.entry)) {
        this.held.push(item.entry);
        item.resolve();
      } else {
        item.reject(error);
      }
    }
    this.logger.error({ err: error.message, code: error.code }, 'decision log write failed');
  }

  /** Reopen the file, cut it back to the last durable byte, check its tail; then replay held records. Single flight. */
  private recover(): Promise<boolean> {
    // Under load every write would retry: once per 100 ms is enough to notice the disk is back.
    if (this.recovering === null && this.now() - this.lastRecoveryFailure < 100) return Promise.resolve(false);
    this.recovering ??= this.reopen().then(
      () => {
        this.recovering = null;
        // The directory may be another one now (moved back, recreated): watch what the path names.
        this.watchDirectory();
        if (this.broken === null) return true;
        this.broken = null;
        this.logger.info({ seq: this.committed.seq, held: this.held.length }, 'decision log: writable again');
        const held = this.held;
        this.held = [];
        for (const entry of held) void this.enqueue(entry, true);
        return true;
      },
      (err: unknown) => {
        this.recovering = null;
        this.lastRecoveryFailure = this.now();
        this.broken = new DecisionLogError(DecisionLogCodes.WRITE_FAILED, `decision log still cannot be written: ${describeError(err)}`, { cause: err });
        return false;
      },
    );
    return this.recovering;
  }

  private async reopen(): Promise<void> {
    while (this.busy) await this.busy.catch(() => {});
    if (this.unfinishedRotation) {
      await this.finishRotation();
      return;
    }
    const { active } = this.layout;
    let fd: number;
    let created = false;
    try {
      fd = await this.ops.open(active, 'r+');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      // The active file is gone: start a new one that chains to the last durable record.
      fd = await this.ops.open(active, this.appendFlags());
      created = true;
    }
    try {
      const st = await this.ops.fstat(fd);
      if (created) {
        if (this.active.count > 0) {
          this.logger.error({ file: active, seq: this.committed.seq }, 'decision log: the active file disappeared; a new one continues the chain');
        }
        this.active = emptyActive();
      } else {
        if (st.size < this.active.size) {
          throw new DecisionLogError(DecisionLogCodes.CORRUPT, `${active} is shorter than what was written to it (${st.size} < ${this.active.size} bytes)`);
        }
        if (st.size > this.active.size) await this.ops.ftruncate(fd, this.active.size);
        if (this.active.count > 0) {
          const tail = readTail(active);
          const last = tail.lastLine === null ? null : parseRecordLine(tail.lastLine, active);
          if (last?.hash !== this.committed.hash) {
            throw new DecisionLogError(DecisionLogCodes.CORRUPT, `${active} does not end with the last record written (seq ${this.committed.seq})`);
          }
        }
      }
      if (this.fsync) await this.ops.fdatasync(fd);
      await this.ops.close(fd);
      // Append mode from here on (the r+ handle was for the truncate).
      fd = await this.ops.open(active, this.appendFlags());
      const reopened = await this.ops.fstat(fd);
      this.fd = fd;
      this.identity = { dev: reopened.dev, ino: reopened.ino };
    } catch (err) {
      await this.ops.close(fd).catch(() => {});
      throw err;
    }
  }

  // ---------------------------------------------------------------------------
  // rotation and sealing

  private rotationDue(): boolean {
    if (this.active.count === 0) return false;
    if (this.rotateBytes > 0 && this.active.size >= this.rotateBytes) return true;
    return this.rotateMs > 0 && this.now() - this.active.firstAt >= this.rotateMs;
  }

  /**
   * Rename the active file to its rotated name, seal it, open a fresh active
   * file. The next record chains to the sealed file's last one. A crash or
   * failure part-way is finished by recovery (or at start-up).
   */
  private async rotateNow(reason: SealReason): Promise<void> {
    const digest = this.activeDigest(reason);
    const target = rotatedPath(this.layout, this.active.firstSeq, this.committed.seq);
    await renameAsync(this.layout.active, target);
    const fd = this.fd!;
    this.fd = null;
    await this.ops.close(fd).catch(() => {});
    this.unfinishedRotation = { path: target, digest };
    await this.finishRotation();
    this.logger.info({ file: target, reason, first_seq: digest.first_seq, last_seq: digest.last_seq }, 'decision log: sealed');
  }

  private async finishRotation(): Promise<void> {
    const { path, digest } = this.unfinishedRotation!;
    if (!existsSync(digestPath(path))) await this.writeDigest(path, digest);
    const fd = await this.ops.open(this.layout.active, this.appendFlags() | constants.O_EXCL);
    await fsyncDir(this.layout.dir);
    const st = await this.ops.fstat(fd);
    this.fd = fd;
    this.identity = { dev: st.dev, ino: st.ino };
    this.active = emptyActive();
    this.unfinishedRotation = null;
  }

  async rotate(): Promise<void> {
    await this.exclusive(async () => {
      if (this.broken === null && this.active.count > 0 && this.fd !== null) await this.rotateNow('time');
    });
  }

  /** Run `fn` while no batch is being committed (rotation outside the write path). */
  private async exclusive(fn: () => Promise<void>): Promise<void> {
    while (this.busy) await this.busy.catch(() => {});
    await this.runBusy(fn);
  }

  /** Watch the log directory for renames (a new watch each time: the directory may have been replaced). */
  private watchDirectory(): void {
    this.watcher?.close();
    const activeName = basename(this.layout.active);
    const watcher = this.ops.watch(
      this.layout.dir,
      // Other files live here too (other workers' logs, digests, the shipper's cursor): only the active
      // file's name, the directory itself moved, or an unnamed event make the next batch check.
      (name) => {
        if (name === null || name === activeName || name === basename(this.layout.dir)) this.pathCheckDue = true;
      },
      (err) => {
        watcher?.close();
        if (this.watcher !== watcher) return;
        this.watcher = null;
        this.logger.warn({ dir: this.layout.dir, err: describeError(err) }, 'decision log: the directory watch failed; every batch checks the file again');
      },
    );
    this.watcher = watcher;
    this.pathCheckDue = true;
  }

  private async housekeeping(): Promise<void> {
    if (this.closed) return;
    this.pathCheckDue = true;
    if (this.broken !== null) {
      if (await this.recover()) this.schedule();
      return;
    }
    if (this.rotateMs > 0 && this.active.count > 0 && this.now() - this.active.firstAt >= this.rotateMs && this.busy === null) {
      try {
        await this.exclusive(async () => {
          if (this.rotationDue()) await this.rotateNow('time');
        });
      } catch (err) {
        this.fail(err, []);
      }
    }
  }

  // ---------------------------------------------------------------------------

  healthy(): boolean {
    return this.broken === null && !this.closed;
  }

  committing(): boolean {
    return this.busy !== null;
  }

  committedSeq(): number {
    return this.committed.seq;
  }

  heldCount(): number {
    return this.held.length;
  }

  onCommit(listener: (seq: number) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Write what is pending, seal the active file in place (rotated at the next start), release the lock. */
  async close(): Promise<void> {
    if (this.closed) return;
    clearInterval(this.probe);
    if (this.timer) clearTimeout(this.timer);
    if (this.lazyTimer) clearTimeout(this.lazyTimer);
    this.timer = null;
    if (this.broken !== null) await this.recover();
    // Everything still pending is written now, lazy records included.
    this.due = true;
    while (this.busy !== null || (this.pending.length > 0 && this.broken === null)) {
      this.due = true;
      this.startFlush();
      if (this.busy !== null) await this.busy.catch(() => {});
    }
    this.closed = true;
    if (this.held.length > 0) {
      this.logger.error({ count: this.held.length }, 'decision log: held records lost at shutdown (the log never came back)');
    }
    for (const item of this.pending) item.reject(new DecisionLogError(DecisionLogCodes.CLOSED, 'the decision log is closed'));
    this.pending = [];
    try {
      if (this.broken === null && this.fd !== null && this.active.count > 0) {
        const digest = this.activeDigest('shutdown');
        await this.writeDigest(this.layout.active, digest);
        this.logger.info({ file: this.layout.active, reason: 'shutdown', first_seq: digest.first_seq, last_seq: digest.last_seq }, 'decision log: sealed');
        for (const listener of this.listeners) listener(this.committed.seq);
      }
    } finally {
      // Closed last: a recovery during close watches the directory anew.
      this.watcher?.close();
      this.watcher = null;
      if (this.fd !== null) await this.ops.close(this.fd).catch(() => {});
      this.fd = null;
      unlockLog(this.layout.lock);
    }
  }
}
