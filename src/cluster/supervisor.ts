import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';
import { json } from './merge.js';
import { WORKER_ENV, isWorkerMessage, type AdminRequest, type AdminResponse, type ListeningMessage, type MetricsRequest, type MetricsResponse, type WorkerMessage } from './protocol.js';

/** A worker process as the primary sees it. */
export interface WorkerStatus {
  worker: number;
  pid: number | null;
  state: 'starting' | 'listening' | 'restarting' | 'stopped';
  restarts: number;
}

/** An admin answer relayed from a worker (or made up by the primary when the worker could not answer). */
export interface RelayedAnswer {
  status: number;
  headers: Record<string, string | string[] | number | undefined>;
  body: string;
}

export type RelayedRequest = Omit<AdminRequest, 'type' | 'id'>;

interface Slot extends WorkerStatus {
  process: Worker | null;
  startedAt: number;
  /** Exits soon after a start, in a row: the back-off doubles with each. */
  quickExits: number;
  everListened: boolean;
  startError: string | null;
  exitCode: number | null;
  exitSignal: string | null;
  timer: NodeJS.Timeout | null;
}

/** A worker that lived this long was not crash-looping: its next restart is immediate again (after BACKOFF_MS). */
const STABLE_MS = 10_000;
const BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 30_000;
/** How long a relayed admin request may take before the primary answers for the worker. */
const ASK_TIMEOUT_MS = 10_000;
/** Past the drain grace, how long workers get before SIGKILL. */
const KILL_AFTER_GRACE_MS = 5_000;

/**
 * Forks the workers (every one listens on the config's `listen` port; node's
 * cluster shares the one socket), restarts one that dies with an exponential
 * back-off, relays admin requests to them, and drains them all on shutdown.
 */
export class Supervisor {
  private readonly slots: Slot[];
  /** Requests to workers awaiting their reply, by id. */
  private readonly pending = new Map<number, { process: Worker; reply(message: WorkerReply): void; fail(error: string): void }>();
  private nextAsk = 0;
  private stopping = false;
  private startup: { resolve: (first: ListeningMessage) => void; reject: (err: Error) => void; first: ListeningMessage | null } | null = null;
  private drained: (() => void) | null = null;
  private nextPick = 0;

  constructor(
    count: number,
    private readonly logger: Logger,
    private readonly drainMs: number,
  ) {
    this.slots = Array.from({ length: count }, (_, i) => ({
      worker: i + 1,
      pid: null,
      state: 'stopped' as const,
      restarts: 0,
      process: null,
      startedAt: 0,
      quickExits: 0,
      everListened: false,
      startError: null,
      exitCode: null,
      exitSignal: null,
      timer: null,
    }));
  }

  /** Fork every worker; resolves with the first one's listening message once all listen, rejects when one cannot start. */
  start(): Promise<ListeningMessage> {
    return new Promise((resolve, reject) => {
      this.startup = { resolve, reject, first: null };
      for (const slot of this.slots) this.fork(slot);
    });
  }

  status(): WorkerStatus[] {
    return this.slots.map(({ worker, pid, state, restarts }) => ({ worker, pid, state, restarts }));
  }

  /** How each worker last exited: its code, or the signal that ended it. */
  exits(): { worker: number; code: number | null; signal: string | null }[] {
    return this.slots.map((s) => ({ worker: s.worker, code: s.exitCode, signal: s.exitSignal }));
  }

  /** Workers that can answer now, lowest number first. */
  listening(): number[] {
    return this.slots.filter((s) => s.state === 'listening' && s.process !== null).map((s) => s.worker);
  }

  /** A listening worker, taking turns; null when none is. */
  pick(): number | null {
    const live = this.listening();
    if (live.length === 0) return null;
    return live[this.nextPick++ % live.length]!;
  }

  /** Relay an admin request to worker `n`; a worker that dies or stalls is answered for (502/504). */
  ask(n: number, request: RelayedRequest, timeoutMs = ASK_TIMEOUT_MS): Promise<RelayedAnswer> {
    return this.call(
      n,
      (id) => ({ ...request, type: 'residency:admin-request', id }),
      timeoutMs,
      (reply) => (reply.type === 'residency:admin-response' ? { status: reply.status, headers: reply.headers, body: reply.body } : json(502, { error: `worker ${n} answered out of turn` })),
      (status, error) => json(status, { error }),
    );
  }

  /** Worker `n`'s metrics as prom-client's JSON; null when it is not running or does not answer within `timeoutMs`. */
  metricsOf(n: number, timeoutMs: number): Promise<object[] | null> {
    return this.call(
      n,
      (id) => ({ type: 'residency:metrics-request', id }),
      timeoutMs,
      (reply) => (reply.type === 'residency:metrics-response' ? reply.metrics : null),
      () => null,
    );
  }

  /**
   * One request to worker `n` and its reply. A worker that is not running,
   * dies meanwhile, fails the send (EPIPE: answered for, never thrown) or
   * stalls past `timeoutMs` gets `failed` (502, or 504 for the stall).
   */
  private call<T>(
    n: number,
    message: (id: number) => AdminRequest | MetricsRequest,
    timeoutMs: number,
    answer: (reply: WorkerReply) => T,
    failed: (status: 502 | 504, error: string) => T,
  ): Promise<T> {
    const worker = this.slots[n - 1]?.process;
    if (!worker || !worker.isConnected()) return Promise.resolve(failed(502, `worker ${n} is not running`));
    const id = ++this.nextAsk;
    return new Promise((resolve) => {
      const finish = (value: T) => {
        if (!this.pending.has(id)) return;
        clearTimeout(timer);
        this.pending.delete(id);
        resolve(value);
      };
      const timer = setTimeout(() => finish(failed(504, `worker ${n} did not answer within ${timeoutMs} ms`)), timeoutMs);
      this.pending.set(id, { process: worker, reply: (r) => finish(answer(r)), fail: (error) => finish(failed(502, error)) });
      worker.send(message(id), (err: Error | null) => {
        if (err) finish(failed(502, `worker ${n} could not be asked: ${err.message}`));
      });
    });
  }

  /** Pass a signal on to every running worker (SIGHUP: reload the policy). */
  signal(signal: NodeJS.Signals): void {
    for (const slot of this.slots) slot.process?.process.kill(signal);
  }

  /** SIGTERM every worker and wait until all exited (SIGKILL past the grace); true when each drained cleanly (exit 0). */
  async drain(): Promise<boolean> {
    this.stopping = true;
    for (const slot of this.slots) {
      if (slot.timer) clearTimeout(slot.timer);
      slot.timer = null;
      if (slot.process === null) slot.state = 'stopped';
    }
    const running = this.slots.filter((s) => s.process !== null);
    if (running.length > 0) {
      const allExited = new Promise<void>((resolve) => (this.drained = resolve));
      for (const slot of running) slot.process!.process.kill('SIGTERM');
      const kill = setTimeout(() => {
        for (const slot of this.slots) {
          if (slot.process === null) continue;
          this.logger.error({ worker: slot.worker, pid: slot.pid }, 'worker did not drain in time; killing it');
          slot.process.process.kill('SIGKILL');
        }
      }, this.drainMs + KILL_AFTER_GRACE_MS);
      await allExited;
      clearTimeout(kill);
    }
    return running.every((s) => s.exitCode === 0);
  }

  private fork(slot: Slot): void {
    slot.timer = null;
    slot.state = 'starting';
    slot.startError = null;
    slot.startedAt = Date.now();
    const worker = cluster.fork({ [WORKER_ENV]: String(slot.worker) });
    slot.process = worker;
    slot.pid = worker.process.pid ?? null;
    worker.on('message', (message: unknown) => {
      if (isWorkerMessage(message)) this.onMessage(slot, worker, message);
    });
    worker.on('exit', (code, signal) => this.onExit(slot, worker, code, signal));
    // IPC to a worker that just died fails with EPIPE (ours, or prom-client's metrics requests): without a
    // listener that error would take the primary, and every worker with it, down. The exit restarts it.
    worker.on('error', (err: Error) => this.logger.warn({ worker: slot.worker, err: err.message }, 'IPC with a worker failed'));
  }

  private onMessage(slot: Slot, worker: Worker, message: WorkerMessage): void {
    if (message.type === 'residency:admin-response' || message.type === 'residency:metrics-response') {
      const waiting = this.pending.get(message.id);
      if (waiting?.process === worker) waiting.reply(message);
      return;
    }
    if (slot.process !== worker) return;
    if (message.type === 'residency:start-failed') {
      slot.startError = message.error;
      return;
    }
    slot.state = 'listening';
    slot.everListened = true;
    if (slot.restarts > 0) this.logger.info({ worker: slot.worker, pid: slot.pid, restarts: slot.restarts }, 'worker restarted and listening');
    const startup = this.startup;
    if (startup === null) return;
    startup.first ??= message;
    if (this.slots.every((s) => s.state === 'listening')) {
      this.startup = null;
      startup.resolve(startup.first);
    }
  }

  private onExit(slot: Slot, worker: Worker, code: number | null, signal: string | null): void {
    for (const waiting of this.pending.values()) if (waiting.process === worker) waiting.fail(`worker ${slot.worker} exited`);
    if (slot.process !== worker) return;
    slot.process = null;
    slot.pid = null;
    slot.exitCode = code;
    slot.exitSignal = signal;
    if (this.stopping) {
      slot.state = 'stopped';
      if (this.slots.every((s) => s.process === null)) this.drained?.();
      return;
    }
    if (this.startup !== null && !slot.everListened) {
      // A worker that never started (a port in use, a secret missing) will not start on a retry either.
      slot.state = 'stopped';
      const startup = this.startup;
      this.startup = null;
      startup.reject(new Error(`worker ${slot.worker} could not start: ${slot.startError ?? `exited with ${code ?? signal}`}`));
      return;
    }
    const quick = Date.now() - slot.startedAt < STABLE_MS;
    slot.quickExits = quick ? slot.quickExits + 1 : 0;
    const delay = Math.min(MAX_BACKOFF_MS, BACKOFF_MS * 2 ** slot.quickExits);
    this.logger.error(
      { worker: slot.worker, pid: worker.process.pid, code, signal, restart_in_ms: delay, ...(slot.startError ? { err: slot.startError } : {}) },
      'worker exited unexpectedly; restarting it',
    );
    slot.state = 'restarting';
    slot.timer = setTimeout(() => {
      slot.restarts++;
      this.fork(slot);
    }, delay);
  }
}

/** What a worker replies to the primary's requests. */
type WorkerReply = AdminResponse | MetricsResponse;
