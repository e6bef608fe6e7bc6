import type { Clock } from '../../src/clock.js';

interface Timer {
  readonly at: number;
  readonly order: number;
  readonly fn: () => void;
}

/**
 * A clock that moves only when the test says so. Real I/O (a DNS query over
 * loopback, a pool closing) still takes real time: `advance` can wait for it
 * after each timer it runs, so time stands still while the I/O a timer
 * started finishes, as if every server answered at once.
 */
export class ManualClock implements Clock {
  private time: number;
  private timers: Timer[] = [];
  private order = 0;

  /** Starts at the real time, so epoch-looking values stay plausible. */
  constructor(start = Date.now()) {
    this.time = start;
  }

  now(): number {
    return this.time;
  }

  after(ms: number, fn: () => void): () => void {
    const timer: Timer = { at: this.time + Math.max(0, ms), order: this.order++, fn };
    this.timers.push(timer);
    return () => {
      this.timers = this.timers.filter((t) => t !== timer);
    };
  }

  /**
   * Move `ms` on, running each timer that falls due on the way in order, with
   * `now()` at its due time. `settle` waits for I/O in flight: awaited first
   * (what the test started) and after each timer (what the timer started).
   */
  async advance(ms: number, settle: () => Promise<void> = async () => {}): Promise<void> {
    const until = this.time + ms;
    await settle();
    for (;;) {
      const next = this.nextDue(until);
      if (next === undefined) break;
      this.timers = this.timers.filter((t) => t !== next);
      this.time = Math.max(this.time, next.at);
      next.fn();
      await settle();
    }
    this.time = until;
  }

  private nextDue(until: number): Timer | undefined {
    let next: Timer | undefined;
    for (const t of this.timers) if (t.at <= until && (next === undefined || t.at < next.at || (t.at === next.at && t.order < next.order))) next = t;
    return next;
  }
}
