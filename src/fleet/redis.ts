import { Redis } from 'ioredis';
import { silentLogger, type OperationalLogger } from '../log.js';

/**
 * The one Redis connection a replica uses for everything it shares with the
 * fleet (bucket regions, multipart decisions, heartbeats, lockdown), with one
 * key prefix scheme and one failure policy: Redis is optional and never on
 * the critical path. When it is unreachable, commands fail fast (no offline
 * queue), callers fall back to their local state, and `healthy()` says so.
 */
export interface FleetRedis {
  /** The client, for modules that share state; null when Redis is not configured. */
  readonly client: Redis | null;
  /** `<key_prefix><name>`: every key the proxy writes goes through here. */
  key(name: string): string;
  healthy(): boolean;
  /** Last connection error, for /readyz detail. */
  lastError(): string | null;
  /**
   * A second connection for SUBSCRIBE (a subscribed connection can run no
   * other command), created on first call and closed with this one; null
   * when Redis is not configured. It queues its SUBSCRIBE until connected
   * and re-subscribes after every reconnect. (Optional so hand-made fakes
   * stay valid; connectFleetRedis always provides it.)
   */
  subscriber?(): Redis | null;
  /**
   * Tell `listener` about every change of `healthy()`/`lastError()`, so
   * modules sharing the connection need not own it. Returns an unsubscribe
   * function. (Optional like `subscriber`.)
   */
  watchState?(listener: (healthy: boolean, error: string | null) => void): () => void;
  close(): Promise<void>;
}

export interface FleetRedisOptions {
  url: string;
  keyPrefix: string;
  /** Every change of the connection's state is logged here (never the URL: it may carry a password). Default: silent. */
  logger?: OperationalLogger;
}

export function connectFleetRedis(options: FleetRedisOptions | null): FleetRedis {
  if (options === null) {
    return {
      client: null,
      key: (name) => name,
      healthy: () => false,
      lastError: () => 'redis is not configured',
      subscriber: () => null,
      watchState: () => () => {},
      close: async () => {},
    };
  }
  const logger = options.logger ?? silentLogger;
  let healthy = false;
  let lastError: string | null = 'connecting';
  const listeners = new Set<(healthy: boolean, error: string | null) => void>();
  const client = new Redis(options.url, {
    // Fail fast while disconnected: callers fall back to local state rather than queue.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 2_000,
    commandTimeout: 1_000,
    lazyConnect: false,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2_000),
  });
  const set = (ok: boolean, error: string | null) => {
    if (ok === healthy && error === lastError) return;
    healthy = ok;
    lastError = error;
    logger[ok ? 'info' : 'warn']({ redis: ok ? 'ready' : error }, 'fleet redis connection changed');
    for (const listener of listeners) listener(ok, error);
  };
  client.on('ready', () => set(true, null));
  client.on('error', (err: Error) => set(false, err.message));
  client.on('end', () => set(false, 'connection closed'));
  // A server that goes away closes the socket before any reconnect attempt errors:
  // say so at once rather than at the first failed retry.
  let closing = false;
  client.on('close', () => {
    if (healthy && !closing) set(false, 'connection lost');
  });
  let sub: Redis | null = null;
  return {
    client,
    key: (name) => options.keyPrefix + name,
    healthy: () => healthy,
    lastError: () => lastError,
    subscriber() {
      if (sub === null) {
        // Unlike the command connection, SUBSCRIBE may wait for a connection:
        // it is never on a request's path, and ioredis re-subscribes after a
        // reconnect only a subscription that once succeeded.
        sub = client.duplicate({ enableOfflineQueue: true, maxRetriesPerRequest: null, commandTimeout: undefined, autoResubscribe: true });
        // Errors are reported through the command connection; an unhandled 'error' would only be noise.
        sub.on('error', () => {});
      }
      return sub;
    },
    watchState(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async close() {
      closing = true;
      sub?.disconnect();
      client.disconnect();
    },
  };
}

/** A JSON object read back from Redis; null for anything else (another version, a foreign key). */
export function parseJsonObject(text: string): Record<string, unknown> | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
}
