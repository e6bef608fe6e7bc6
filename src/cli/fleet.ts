import { Redis } from 'ioredis';
import { operatorIdentity, writeLockdown, type LockdownRecord } from '../fleet/lockdown.js';
import { formatFleetText, readFleetView, type FleetView } from '../fleet/view.js';
import { plural } from '../text.js';
import { parse, UsageError, withUsage } from './args.js';

const USAGE = `Usage:
  residency-proxy fleet status   --redis URL [--key-prefix P] [--format text|json] [--drift-grace SECONDS]
  residency-proxy fleet lockdown --redis URL [--key-prefix P] --reason TEXT [--by NAME] [--wait SECONDS] [--format text|json]
  residency-proxy fleet lift     --redis URL [--key-prefix P] --reason TEXT [--by NAME] [--wait SECONDS] [--format text|json]

The fleet is every replica sharing one Redis and key prefix (the config's
redis.url and redis.key_prefix). --redis defaults to $RESIDENCY_REDIS_URL
(keeps a password out of the process list); --key-prefix to "residency:".

fleet status    every live replica (policy hash, load time, lockdown state,
                decision log health) and policy drift: two policy hashes live
                side by side longer than the grace (default: the largest
                fleet.drift_grace_seconds the replicas report).
                Exit 0: no drift; 3: drift flagged; 1: Redis unreachable.
fleet lockdown  emergency lockdown of every replica within a second: every
                rule enforces (monitor and warn rules refuse), unknown
                locations are refused, allow-exceptions are suspended.
                Replicas that start later start locked down. Stays on until
                'fleet lift', also across a Redis outage or restart.
fleet lift      ends the lockdown.
                lockdown/lift then wait (--wait, default 5 s; 0: do not wait)
                until every live replica reports the new state.
                Exit 0: set and confirmed by every live replica; 4: set, but
                some replica did not confirm in time (listed); 1: Redis
                unreachable (nothing changed).`;

/** Exit code of `fleet status` when policy drift is flagged. */
export const EXIT_DRIFT = 3;
/** Exit code of `fleet lockdown`/`lift` when the switch is set but not every live replica confirmed it. */
export const EXIT_UNCONFIRMED = 4;

interface Target {
  redis: Redis;
  key: (name: string) => string;
}

export function fleetCommand(args: string[]): Promise<number> {
  return withUsage(USAGE, async () => {
    const [sub, ...rest] = args;
    if (sub === undefined || sub === '--help' || sub === '-h') {
      console.log(USAGE);
      return sub === undefined ? 2 : 0;
    }
    if (sub === 'status') return fleetStatus(rest);
    if (sub === 'lockdown') return fleetSwitch(rest, true);
    if (sub === 'lift') return fleetSwitch(rest, false);
    throw new UsageError(`unknown fleet command "${sub}"`);
  });
}

const CONNECTION = {
  redis: { type: 'string' },
  'key-prefix': { type: 'string', default: 'residency:' },
  format: { type: 'string', default: 'text' },
} as const;

function format(value: string | undefined): 'text' | 'json' {
  if (value !== 'text' && value !== 'json') throw new UsageError('--format is text or json');
  return value;
}

function seconds(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`${name} is a number of seconds (0 or more)`);
  return n;
}

/** Connect once, without retrying: an operator in an incident wants an answer, not a hang. */
async function connect(url: string | undefined, prefix: string): Promise<Target | null> {
  const target = url ?? process.env.RESIDENCY_REDIS_URL;
  if (target === undefined || target === '') throw new UsageError('--redis URL (or $RESIDENCY_REDIS_URL) is required');
  if (!/^rediss?:\/\//.test(target)) throw new UsageError('--redis is a redis:// or rediss:// URL');
  const redis = new Redis(target, { lazyConnect: true, connectTimeout: 3_000, commandTimeout: 5_000, maxRetriesPerRequest: 0, retryStrategy: () => null });
  // connect() rejects with a bare "Connection is closed."; the 'error' event has the cause (ECONNREFUSED, auth, TLS).
  let cause: string | null = null;
  redis.on('error', (err: Error) => (cause = err.message));
  try {
    await redis.connect();
  } catch (err) {
    console.error(`residency-proxy fleet: cannot reach Redis at ${redact(target)}: ${cause ?? (err as Error).message}`);
    redis.disconnect();
    return null;
  }
  return { redis, key: (name) => prefix + name };
}

/** The URL without its password, for messages. */
function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '***';
    return u.toString();
  } catch {
    return '(unparsable URL)';
  }
}

async function fleetStatus(args: string[]): Promise<number> {
  const { values } = parse(args, { ...CONNECTION, 'drift-grace': { type: 'string' } });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const fmt = format(values.format);
  const grace = seconds(values['drift-grace'], '--drift-grace');
  const target = await connect(values.redis, values['key-prefix']);
  if (target === null) return 1;
  try {
    const view = await readFleetView(target.redis, target.key, grace === undefined ? {} : { driftGraceSeconds: grace });
    console.log(fmt === 'json' ? JSON.stringify(view, null, 2) : formatFleetText(view));
    return view.drift.flagged ? EXIT_DRIFT : 0;
  } catch (err) {
    console.error(`residency-proxy fleet: reading the fleet failed: ${(err as Error).message}`);
    return 1;
  } finally {
    target.redis.disconnect();
  }
}

async function fleetSwitch(args: string[], active: boolean): Promise<number> {
  const { values } = parse(args, { ...CONNECTION, reason: { type: 'string' }, by: { type: 'string' }, wait: { type: 'string' } });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const fmt = format(values.format);
  const reason = values.reason?.trim();
  // The reason is the audit trail's "why": required, like a ticket for an exception.
  if (reason === undefined || reason === '') throw new UsageError(`fleet ${active ? 'lockdown' : 'lift'} needs --reason "…"`);
  const waitSeconds = seconds(values.wait, '--wait') ?? 5;
  const target = await connect(values.redis, values['key-prefix']);
  if (target === null) return 1;
  const record: LockdownRecord = { active, reason, set_by: values.by?.trim() || operatorIdentity(), set_at: new Date().toISOString() };
  try {
    let delivered: number;
    try {
      delivered = await writeLockdown(target.redis, target.key, record);
    } catch (err) {
      console.error(`residency-proxy fleet: writing the lockdown switch failed: ${(err as Error).message}`);
      return 1;
    }
    const started = Date.now();
    let view: FleetView | null = null;
    let pending: string[] = [];
    for (;;) {
      try {
        view = await readFleetView(target.redis, target.key);
        pending = view.replicas.filter((r) => !follows(r.lockdown, record)).map((r) => `${r.id} (${r.host}:${r.pid})`);
      } catch (err) {
        // The switch is written; only the confirmation is unknown.
        console.error(`residency-proxy fleet: confirming failed: ${(err as Error).message}`);
        view = null;
      }
      if (view !== null && pending.length === 0) break;
      if (Date.now() - started >= waitSeconds * 1000) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const elapsed = (Date.now() - started) / 1000;
    const confirmed = view === null ? [] : view.replicas.filter((r) => follows(r.lockdown, record)).map((r) => r.id);
    const ok = waitSeconds === 0 || (view !== null && pending.length === 0);
    if (fmt === 'json') {
      console.log(JSON.stringify({ lockdown: record, subscribers: delivered, confirmed, pending, waited_seconds: elapsed }, null, 2));
    } else {
      console.log(`${active ? 'LOCKDOWN SET' : 'lockdown lifted'} by ${record.set_by} at ${record.set_at}: ${record.reason}`);
      console.log(`published to ${plural(delivered, 'subscriber')}`);
      if (waitSeconds > 0 && view !== null) {
        const total = view.replicas.length;
        if (total === 0) console.log('no live replicas (none has a heartbeat under this prefix)');
        else console.log(`${confirmed.length}/${plural(total, 'live replica')} confirmed within ${elapsed.toFixed(1)} s${confirmed.length > 0 ? `: ${confirmed.join(', ')}` : ''}`);
        if (pending.length > 0) console.log(`NOT CONFIRMED: ${pending.join(', ')}`);
      }
    }
    return ok ? 0 : EXIT_UNCONFIRMED;
  } finally {
    target.redis.disconnect();
  }
}

/** A replica follows the switch when its heartbeat shows this very record in force. */
function follows(state: { active: boolean; set_at: string | null; set_by: string | null }, record: LockdownRecord): boolean {
  return state.active === record.active && state.set_at === record.set_at && state.set_by === record.set_by;
}
