import { Redis } from 'ioredis';

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
  close(): Promise<void>;
}

export interface FleetRedisOptions {
  url: string;
  keyPrefix: string;
  onStateChange?: (healthy: boolean, error: string | null) => void;
}

export function connectFleetRedis(options: FleetRedisOptions | null): FleetRedis {
  if (options === null) {
    return {
      client: null,
      key: (name) => name,
      healthy: () => false,
      lastError: () => 'redis is not configured',
      close: async () => {},
    };
  }
  let healthy = false;
  let lastError: string | null = 'connecting';
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
    options.onStateChange?.(ok, error);
  };
  client.on('ready', () => set(true, null));
  client.on('error', (err: Error) => set(false, err.message));
  client.on('end', () => set(false, 'connection closed'));
  return {
    client,
    key: (name) => options.keyPrefix + name,
    healthy: () => healthy,
    lastError: () => lastError,
    async close() {
      client.disconnect();
    },
  };
}
