import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { accessSync, constants, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { createInterface } from 'node:readline';

/**
 * Child processes for the benchmark: every one is tracked by PID and ended
 * by PID (never by name), with a bounded grace period before SIGKILL.
 */

/** The absolute path of an executable on PATH, or null. No shell, no `which`. */
export function findBinary(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not here.
    }
  }
  return null;
}

export interface Child {
  readonly name: string;
  readonly pid: number;
  readonly proc: ChildProcess;
  /** Resolves with the exit code (or null after a signal) once the process has exited. */
  readonly exited: Promise<number | null>;
  /** The last lines of stdout and stderr, for error messages. */
  tail(): string;
  /** Listen to every later stdout/stderr line; returns the unsubscribe function. */
  onLine(listener: (line: string, stream: 'stdout' | 'stderr') => void): () => void;
}

const running = new Set<Child>();

export interface SpawnOptions {
  name: string;
  command: string;
  args: readonly string[];
  /** Pin to this CPU with taskset (when given, taskset must exist). */
  cpu?: number | null;
  taskset?: string | null;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** stdout: piped and read line by line (default), or a file descriptor / 'ignore'. */
  stdout?: 'pipe' | 'ignore' | number;
  /** Called with each stdout/stderr line while the process runs. */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
}

export function spawnChild(options: SpawnOptions): Child {
  const pin = options.cpu !== undefined && options.cpu !== null && options.taskset;
  // taskset execs the command: the PID we get is the command's own.
  const command = pin ? options.taskset! : options.command;
  const args = pin ? ['-c', String(options.cpu), options.command, ...options.args] : [...options.args];
  const stdio: StdioOptions = ['ignore', options.stdout ?? 'pipe', 'pipe'];
  const proc = spawn(command, args, { stdio, env: options.env ?? process.env, ...(options.cwd ? { cwd: options.cwd } : {}) });
  const lines: string[] = [];
  const listeners = new Set<(line: string, stream: 'stdout' | 'stderr') => void>();
  if (options.onLine) listeners.add(options.onLine);
  // One reader per stream: a second readline on the same pipe would pause it when closed.
  const keep = (line: string, stream: 'stdout' | 'stderr') => {
    lines.push(`${stream}: ${line}`);
    if (lines.length > 40) lines.shift();
    for (const l of listeners) l(line, stream);
  };
  const onLine = (listener: (line: string, stream: 'stdout' | 'stderr') => void) => {
    listeners.add(listener);
    return () => {
      listeners.delete(listener);
    };
  };
  if (proc.stdout) createInterface({ input: proc.stdout }).on('line', (l) => keep(l, 'stdout'));
  if (proc.stderr) createInterface({ input: proc.stderr }).on('line', (l) => keep(l, 'stderr'));
  const exited = new Promise<number | null>((resolve) => {
    proc.once('exit', (code) => resolve(code));
    proc.once('error', (err) => {
      keep(`spawn failed: ${err.message}`, 'stderr');
      resolve(-1);
    });
  });
  if (proc.pid === undefined) {
    // spawn reports ENOENT asynchronously; the exited promise carries it.
    return { name: options.name, pid: -1, proc, exited, tail: () => lines.join('\n'), onLine };
  }
  const child: Child = { name: options.name, pid: proc.pid, proc, exited, tail: () => lines.join('\n'), onLine };
  running.add(child);
  void exited.then(() => running.delete(child));
  return child;
}

/** Wait for a stdout/stderr line that `match` accepts (returns non-undefined); fails on exit or after `timeoutMs`. */
export function waitForLine<T>(child: Child, match: (line: string) => T | undefined, timeoutMs: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let done = false;
    const finish = (fn: () => void) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      unsubscribe();
      fn();
    };
    const timer = setTimeout(
      () => finish(() => reject(new Error(`${child.name}: not ready within ${timeoutMs} ms\n${child.tail()}`))),
      timeoutMs,
    );
    const unsubscribe = child.onLine((line) => {
      let value: T | undefined;
      try {
        value = match(line);
      } catch {
        value = undefined;
      }
      if (value !== undefined) finish(() => resolve(value));
    });
    void child.exited.then((code) => finish(() => reject(new Error(`${child.name} exited (${code}) before it was ready\n${child.tail()}`))));
  });
}

/** Parse a JSON line, or undefined. */
export function jsonLine(line: string): Record<string, unknown> | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    const value: unknown = JSON.parse(line);
    return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** SIGTERM by PID, then SIGKILL after `graceMs`. */
export async function stopChild(child: Child, graceMs = 5_000, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  if (child.pid <= 0) return child.exited;
  if (child.proc.exitCode !== null || child.proc.signalCode !== null) return child.exited;
  try {
    process.kill(child.pid, signal);
  } catch {
    // Already gone.
  }
  let timer: NodeJS.Timeout | undefined;
  const killed = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), graceMs);
  });
  const first = await Promise.race([child.exited, killed]);
  clearTimeout(timer);
  if (first === 'timeout') {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      // Gone meanwhile.
    }
    return child.exited;
  }
  return first;
}

/** Stop every child still running (on error and on Ctrl-C), each by its PID. */
export async function stopAll(graceMs = 3_000): Promise<void> {
  await Promise.all([...running].map((c) => stopChild(c, graceMs)));
}

const scratch = new Set<string>();

/** A scratch folder to remove on any exit, Ctrl-C included. */
export function trackScratch(dir: string): void {
  scratch.add(dir);
}

export function removeScratch(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  scratch.delete(dir);
}

/** Synchronous last resort on process exit: SIGKILL each tracked PID, remove scratch folders. */
export function cleanupSync(): void {
  for (const c of running) {
    try {
      process.kill(c.pid, 'SIGKILL');
    } catch {
      // Gone.
    }
  }
  running.clear();
  for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
  scratch.clear();
}

/** Resident set size now and its peak (VmHWM), in bytes; null where /proc is not readable. */
export function memoryOf(pid: number): { rss: number; peak: number } | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kib = (key: string) => Number(/^(\w+):\s+(\d+) kB$/m.exec(status.split('\n').find((l) => l.startsWith(`${key}:`)) ?? '')?.[2] ?? NaN);
    const rss = kib('VmRSS');
    const peak = kib('VmHWM');
    if (!Number.isFinite(rss) || !Number.isFinite(peak)) return null;
    return { rss: rss * 1024, peak: peak * 1024 };
  } catch {
    return null;
  }
}

/**
 * Reset a process's peak RSS to its current RSS (`echo 5 > clear_refs`,
 * Linux ≥ 4.0), so VmHWM after a run is that run's peak, not an earlier
 * scenario's. False when not permitted.
 */
export function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** Direct children of a process (nginx's workers), from /proc. */
export function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter((s) => s.length > 0)
      .map(Number);
  } catch {
    return [];
  }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** CPU time, in clock ticks (USER_HZ, 100/s on Linux): the whole machine's busy time and this process tree's. */
export interface CpuSnapshot {
  at: number;
  /** All CPUs: user + nice + system + irq + softirq + steal (steal is another guest's work on our cores). */
  busy: number;
  /** This process, its waited-for children, and every live descendant. */
  ours: number;
}

const TICKS_PER_SECOND = 100;

export function cpuSnapshot(root = process.pid): CpuSnapshot | null {
  try {
    const at = performance.now();
    const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
    const busy = user + nice + system + irq + softirq + steal;
    const procs = new Map<number, { ppid: number; time: number }>();
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      let stat: string;
      try {
        stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      } catch {
        continue; // Exited while we looked.
      }
      // Fields after the command name (which may hold spaces and parentheses).
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const ppid = Number(rest[1]);
      // utime, stime, cutime, cstime: fields 14–17, i.e. rest[11..14].
      const time = Number(rest[11]) + Number(rest[12]) + Number(rest[13]) + Number(rest[14]);
      procs.set(Number(entry), { ppid, time });
    }
    let ours = 0;
    for (const [pid, p] of procs) {
      // Walk up (bounded) to see whether `root` is an ancestor.
      let cur: number | undefined = pid;
      for (let depth = 0; depth < 32 && cur !== undefined && cur > 1; depth++) {
        if (cur === root) {
          ours += p.time;
          break;
        }
        cur = procs.get(cur)?.ppid;
      }
    }
    return { at, busy, ours };
  } catch {
    return null;
  }
}

/** CPU cores' worth of work by anything but this process tree between two snapshots (other builds, steal). */
export function foreignCores(a: CpuSnapshot | null, b: CpuSnapshot | null): number | null {
  if (a === null || b === null || b.at <= a.at) return null;
  const seconds = (b.at - a.at) / 1000;
  return Math.max(0, (b.busy - a.busy - (b.ours - a.ours)) / TICKS_PER_SECOND / seconds);
}
