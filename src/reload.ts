import { createHash } from 'node:crypto';
import { readFileSync, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { ConfigError, formatProblem, type Config } from './config/load.js';
import { buildPlanner, loadPolicy, type LoadedPolicy } from './load.js';
import type { Planner } from './plan/plan.js';
import { watchDirectory } from './watch.js';

/**
 * The policy lifecycle: the active Planner, swapped atomically on reload.
 * A new policy is loaded, validated and compiled off to the side; only then
 * does it replace the old one. Requests that already took the old Planner
 * finish under it. A failed reload keeps the last good policy.
 */

/** Keys that are bound at start-up; a change is reported, not silently ignored. */
const RESTART_KEYS = ['listen', 'admin', 'decision_log', 'redis', 'dns', 'limits', 'demo_upstream', 'fleet', 'forward_proxy', 'workers'] as const;

export interface ReloadAttempt {
  readonly at: string;
  readonly trigger: string;
  readonly ok: boolean;
  /** check-config style lines, when it failed. */
  readonly problems: readonly string[];
  /** Keys that changed but only take effect after a restart. */
  readonly restartRequired: readonly string[];
}

export interface PolicyStatus {
  readonly hash: string;
  readonly shadowHash: string | null;
  readonly source: string;
  readonly loadedAt: string;
  readonly lastAttempt: ReloadAttempt | null;
}

export interface PolicyStoreOptions {
  file: string;
  env?: NodeJS.ProcessEnv;
  now?: () => number;
  /** Whether a fleet-wide lockdown is in force; every planner built reads it per request. */
  lockdown?: () => boolean;
  onReload?: (attempt: ReloadAttempt, planner: Planner) => void;
  /** Polling interval backing up fs.watch (which misses some symlink swaps), ms; 0 disables. */
  pollMs?: number;
  debounceMs?: number;
  /** How long changed content must stay unchanged before it is loaded, ms; default: the config's reload.settle_ms. */
  settleMs?: number;
  /** Monotonic milliseconds the settle time is measured in. */
  clock?: () => number;
}

export class PolicyStore {
  private planner: Planner;
  private loaded: LoadedPolicy;
  private loadedAt: string;
  private fingerprint: string;
  private lastAttempt: ReloadAttempt | null = null;
  private watcher: FSWatcher | null = null;
  private shadowWatcher: FSWatcher | null = null;
  private poll: NodeJS.Timeout | null = null;
  private debounce: NodeJS.Timeout | null = null;
  /** Changed content not loaded yet, and since when it has been seen unchanged. */
  private unsettled: { fingerprint: string; since: number } | null = null;
  private settle: NodeJS.Timeout | null = null;
  /** The config the process started with: its restart-only settings are the ones in effect. */
  private readonly running: Config;

  constructor(
    private readonly options: PolicyStoreOptions,
    initial: LoadedPolicy,
  ) {
    this.loaded = initial;
    this.running = initial.config;
    this.planner = buildPlanner(initial.config, initial.shadow, options.now, options.lockdown);
    this.loadedAt = new Date().toISOString();
    this.fingerprint = this.readFingerprint();
  }

  /** The planner for a new request: take it once and use it for the whole request. */
  current(): Planner {
    return this.planner;
  }

  config(): Config {
    return this.loaded.config;
  }

  status(): PolicyStatus {
    return {
      hash: this.planner.policy.hash,
      shadowHash: this.planner.shadowPolicy?.hash ?? null,
      source: this.options.file,
      loadedAt: this.loadedAt,
      lastAttempt: this.lastAttempt,
    };
  }

  /** Load, validate and compile the file again; swap only if all of that worked. */
  reload(trigger: string): ReloadAttempt {
    const at = new Date().toISOString();
    let attempt: ReloadAttempt;
    try {
      const next = loadPolicy(this.options.file, this.options.env ?? {});
      const planner = buildPlanner(next.config, next.shadow, this.options.now, this.options.lockdown);
      // Against what this process runs (restart-only settings never change after start), so a change reverted reads as none.
      const restartRequired = RESTART_KEYS.filter((key) => JSON.stringify(next.config[key]) !== JSON.stringify(this.running[key]));
      this.loaded = next;
      this.planner = planner;
      this.loadedAt = at;
      attempt = { at, trigger, ok: true, problems: [], restartRequired };
    } catch (err) {
      const problems =
        err instanceof ConfigError ? err.problems.map((p) => formatProblem(err.file, p)) : [`${this.options.file}: ${(err as Error).message}`];
      attempt = { at, trigger, ok: false, problems, restartRequired: [] };
    }
    this.fingerprint = this.readFingerprint();
    this.lastAttempt = attempt;
    this.options.onReload?.(attempt, this.planner);
    return attempt;
  }

  /**
   * Reload on file change. Watch the directory, not the file: editors save by
   * atomic rename and Kubernetes swaps a ConfigMap's `..data` symlink, both of
   * which leave a watch on the old inode silent. A content fingerprint makes
   * spurious events harmless; polling backs fs.watch up. New content is loaded
   * only once it has settled (unchanged for reload.settle_ms): a file
   * rewritten in place in several writes can be valid, and weaker, halfway.
   */
  watch(): void {
    const onEvent = () => {
      // Not pushed back by later events: other files in the directory (a decision
      // log beside the policy) change all the time. Settling waits out bursts.
      if (this.debounce) return;
      this.debounce = setTimeout(() => {
        this.debounce = null;
        this.reloadIfChanged('file change');
      }, this.options.debounceMs ?? 200);
      this.debounce.unref();
    };
    // An unwatchable directory still reloads by polling and SIGHUP.
    this.watcher = watchDirectory(dirname(resolve(this.options.file)), onEvent);
    const shadow = this.loaded.config.shadow_policy;
    if (shadow !== undefined) {
      const dir = dirname(resolve(dirname(this.options.file), shadow));
      if (dir !== dirname(resolve(this.options.file))) this.shadowWatcher = watchDirectory(dir, onEvent);
    }
    const pollMs = this.options.pollMs ?? 5_000;
    if (pollMs > 0) {
      this.poll = setInterval(() => this.reloadIfChanged('poll'), pollMs);
      this.poll.unref();
    }
  }

  close(): void {
    this.watcher?.close();
    this.shadowWatcher?.close();
    if (this.poll) clearInterval(this.poll);
    if (this.debounce) clearTimeout(this.debounce);
    if (this.settle) clearTimeout(this.settle);
  }

  private reloadIfChanged(trigger: string): void {
    if (this.settle) clearTimeout(this.settle);
    this.settle = null;
    const fingerprint = this.readFingerprint();
    if (fingerprint === this.fingerprint) {
      // Back to what is loaded: nothing to wait for.
      this.unsettled = null;
      return;
    }
    const now = this.options.clock ? this.options.clock() : performance.now();
    if (this.unsettled?.fingerprint !== fingerprint) this.unsettled = { fingerprint, since: now };
    const settleMs = this.options.settleMs ?? this.loaded.config.reload.settle_ms;
    const waited = now - this.unsettled.since;
    if (waited >= settleMs) {
      this.unsettled = null;
      this.reload(trigger);
      return;
    }
    // Look again once it could have settled; a change seen meanwhile starts the wait over.
    this.settle = setTimeout(() => this.reloadIfChanged(trigger), settleMs - waited);
    this.settle.unref();
  }

  /** Hash of the config and shadow files' bytes; '' for an unreadable file (a reload then reports it). */
  private readFingerprint(): string {
    const hash = createHash('sha256');
    const files = [this.options.file];
    const shadow = this.loaded.config.shadow_policy;
    if (shadow !== undefined) files.push(resolve(dirname(this.options.file), shadow));
    for (const f of files) {
      try {
        hash.update(readFileSync(f));
      } catch {
        hash.update(`missing:${basename(f)}`);
      }
    }
    return hash.digest('hex');
  }
}
