/**
 * Time as code that schedules by it sees it: passed in, so a test can move
 * time on instead of sleeping through TTLs and idle periods.
 */
export interface Clock {
  /** Epoch milliseconds. */
  now(): number;
  /** Run `fn` once, `ms` from now; the function returned cancels it. Never keeps the process alive on its own. */
  after(ms: number, fn: () => void): () => void;
}

/** The process's own clock and timers (read at call time, so test fake timers still apply). */
export const systemClock: Clock = {
  now: () => Date.now(),
  after(ms, fn) {
    const timer = setTimeout(fn, ms);
    timer.unref();
    return () => clearTimeout(timer);
  },
};
