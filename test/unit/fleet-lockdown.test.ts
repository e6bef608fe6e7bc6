import { EventEmitter } from 'node:events';
import type { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { LOCKDOWN_CHANNEL, LOCKDOWN_KEY, LockdownWatcher, parseLockdownRecord, type LockdownChange, type LockdownRecord } from '../../src/fleet/lockdown.js';
import type { FleetRedis } from '../../src/fleet/redis.js';
import { captureLog } from '../helpers/log-capture.js';

/** An in-memory stand-in for the fleet connection: GET/SET (NX) and a subscriber that can deliver messages. */
function fakeRedis(initial: Record<string, string> = {}, healthy = true) {
  const store = new Map(Object.entries(initial));
  const client = Object.assign(new EventEmitter(), {
    gets: 0,
    failNext: false,
    async get(key: string) {
      this.gets++;
      if (this.failNext) {
        this.failNext = false;
        throw new Error('Command timed out');
      }
      return store.get(key) ?? null;
    },
    async set(key: string, value: string, nx?: 'NX') {
      if (nx === 'NX' && store.has(key)) return null;
      store.set(key, value);
      return 'OK';
    },
  });
  const sub = Object.assign(new EventEmitter(), {
    channels: new Set<string>(),
    async subscribe(channel: string) {
      this.channels.add(channel);
      return 1;
    },
    async unsubscribe(channel: string) {
      this.channels.delete(channel);
      return 0;
    },
  });
  const state = { healthy };
  const redis: FleetRedis = {
    client: client as unknown as Redis,
    key: (name) => 'p:' + name,
    healthy: () => state.healthy,
    lastError: () => (state.healthy ? null : 'connect ECONNREFUSED'),
    subscriber: () => sub as unknown as Redis,
    close: async () => {},
  };
  return { redis, store, client, sub, state };
}

const LOCKED: LockdownRecord = { active: true, reason: 'incident', set_by: 'a@b', set_at: '2026-11-29T20:00:00.000Z' };
const LIFTED: LockdownRecord = { active: false, reason: 'over', set_by: 'a@b', set_at: '2026-11-29T21:00:00.000Z' };

const watchers: LockdownWatcher[] = [];
function watch(redis: FleetRedis, extra: { startupTimeoutMs?: number } = {}) {
  const changes: LockdownChange[] = [];
  const { logger, lines: events } = captureLog();
  const w = new LockdownWatcher({ redis, pollMs: 60_000, onChange: (c) => changes.push(c), logger, ...extra });
  watchers.push(w);
  return { w, changes, events };
}
afterEach(() => {
  for (const w of watchers.splice(0)) w.close();
});

/** Let queued promise callbacks run. */
const settle = () => new Promise((r) => setTimeout(r, 5));

describe('parseLockdownRecord', () => {
  it('accepts a record and rejects anything else', () => {
    expect(parseLockdownRecord(JSON.stringify(LOCKED))).toEqual(LOCKED);
    expect(parseLockdownRecord(JSON.stringify({ ...LOCKED, extra: 1 }))).toEqual(LOCKED);
    for (const bad of ['', 'null', '1', '{"active":"yes","reason":"","set_by":"","set_at":""}', JSON.stringify({ ...LOCKED, reason: undefined })]) {
      expect(parseLockdownRecord(bad), bad).toBeNull();
    }
  });
});

describe('LockdownWatcher', () => {
  it('starts locked down when the switch is set, and subscribes to the channel', async () => {
    const { redis, sub } = fakeRedis({ [`p:${LOCKDOWN_KEY}`]: JSON.stringify(LOCKED) });
    const { w, changes } = watch(redis);
    await w.start();
    expect(w.active()).toBe(true);
    expect(changes).toEqual([{ active: true, previous: false, trigger: 'startup', record: LOCKED }]);
    expect(sub.channels).toEqual(new Set([`p:${LOCKDOWN_CHANNEL}`]));
    w.close();
    expect(sub.channels.size).toBe(0);
  });

  it('a message re-reads the key; the message body alone is not trusted while the key is readable', async () => {
    const { redis, store, sub } = fakeRedis();
    const { w, changes } = watch(redis);
    await w.start();
    expect(w.active()).toBe(false);
    store.set(`p:${LOCKDOWN_KEY}`, JSON.stringify(LOCKED));
    // A stale message claiming "lifted": the key says locked, and the key wins.
    sub.emit('message', `p:${LOCKDOWN_CHANNEL}`, JSON.stringify(LIFTED));
    await settle();
    expect(w.active()).toBe(true);
    expect(changes.map((c) => [c.active, c.trigger])).toEqual([[true, 'message']]);
    // Messages on other channels are ignored.
    store.set(`p:${LOCKDOWN_KEY}`, JSON.stringify(LIFTED));
    sub.emit('message', 'other', '');
    await settle();
    expect(w.active()).toBe(true);
    w.refresh('poll');
    await settle();
    expect(w.active()).toBe(false);
    expect(changes.at(-1)).toMatchObject({ active: false, previous: true, trigger: 'poll' });
  });

  it('keeps the last known state while Redis is down or a read fails', async () => {
    const { redis, store, client, state, sub } = fakeRedis({ [`p:${LOCKDOWN_KEY}`]: JSON.stringify(LOCKED) });
    const { w, events } = watch(redis);
    await w.start();
    state.healthy = false;
    store.set(`p:${LOCKDOWN_KEY}`, JSON.stringify(LIFTED));
    w.refresh('poll');
    w.refresh('poll');
    await settle();
    expect(w.active()).toBe(true);
    // Logged once per outage, not per poll.
    expect(events.filter((e) => e.msg.includes('cannot be read'))).toHaveLength(1);
    state.healthy = true;
    client.failNext = true;
    w.refresh('poll');
    await settle();
    expect(w.active()).toBe(true);
    w.refresh('poll');
    await settle();
    expect(w.active()).toBe(false);
    expect(events.some((e) => e.msg.includes('readable again'))).toBe(true);
    // With the command connection down, a message that got through carries the record itself.
    state.healthy = false;
    sub.emit('message', `p:${LOCKDOWN_CHANNEL}`, JSON.stringify(LOCKED));
    await settle();
    expect(w.active()).toBe(true);
  });

  it('a missing key (Redis restarted empty) keeps the lockdown and writes it back, unless someone wrote the key first', async () => {
    const { redis, store } = fakeRedis({ [`p:${LOCKDOWN_KEY}`]: JSON.stringify(LOCKED) });
    const { w, events } = watch(redis);
    await w.start();
    store.clear();
    w.refresh('poll');
    await settle();
    expect(w.active()).toBe(true);
    expect(JSON.parse(store.get(`p:${LOCKDOWN_KEY}`)!)).toEqual(LOCKED);
    expect(events.some((e) => e.msg.includes('restored'))).toBe(true);

    // SET NX: a lift written meanwhile is never overwritten.
    store.set(`p:${LOCKDOWN_KEY}`, JSON.stringify(LIFTED));
    await redis.client!.set(`p:${LOCKDOWN_KEY}`, JSON.stringify(LOCKED), 'NX');
    expect(JSON.parse(store.get(`p:${LOCKDOWN_KEY}`)!)).toEqual(LIFTED);
  });

  it('restores nothing it never knew, and an unlocked replica leaves a missing key alone', async () => {
    const { redis, store } = fakeRedis();
    const { w, changes } = watch(redis);
    await w.start();
    w.refresh('poll');
    await settle();
    expect(store.size).toBe(0);
    expect(changes).toEqual([]);
  });

  it('a malformed key keeps the state and is reported once', async () => {
    const { redis, store } = fakeRedis({ [`p:${LOCKDOWN_KEY}`]: JSON.stringify(LOCKED) });
    const { w, events } = watch(redis);
    await w.start();
    store.set(`p:${LOCKDOWN_KEY}`, 'on');
    w.refresh('poll');
    await settle();
    w.refresh('poll');
    await settle();
    expect(w.active()).toBe(true);
    expect(events.filter((e) => e.level === 'error')).toHaveLength(1);
  });

  it('does not hold up a start while Redis is unreachable, and picks the switch up later', async () => {
    const { redis, state, client } = fakeRedis({ [`p:${LOCKDOWN_KEY}`]: JSON.stringify(LOCKED) }, false);
    const { w, events } = watch(redis, { startupTimeoutMs: 50 });
    const t0 = Date.now();
    await w.start();
    expect(Date.now() - t0).toBeLessThan(1_000);
    expect(w.active()).toBe(false);
    expect(events[0]?.msg).toMatch(/unknown at start-up/);
    expect(client.gets).toBe(0);
    state.healthy = true;
    w.refresh('poll');
    await settle();
    expect(w.active()).toBe(true);
  });

  it('waits for the connection at start-up (up to the timeout) before reading', async () => {
    const { redis, state, client } = fakeRedis({ [`p:${LOCKDOWN_KEY}`]: JSON.stringify(LOCKED) }, false);
    const { w } = watch(redis, { startupTimeoutMs: 5_000 });
    const started = w.start();
    setTimeout(() => {
      state.healthy = true;
      client.emit('ready');
    }, 20);
    await started;
    expect(w.active()).toBe(true);
  });

  it('without Redis, never locks and does nothing', async () => {
    const redis: FleetRedis = { client: null, key: (n) => n, healthy: () => false, lastError: () => 'redis is not configured', close: async () => {} };
    const { w, events } = watch(redis);
    await w.start();
    w.refresh('poll');
    await settle();
    expect(w.active()).toBe(false);
    expect(events).toEqual([]);
  });
});
