import { haveRedisServer, startRedis, type TestRedis } from './helpers/audit-redis.js';

/**
 * Once per `vitest run`: a private Redis on a random loopback port for the
 * tests that need one, unless REDIS_URL names one to use. Workers start
 * after this and inherit REDIS_URL; each test file still keeps its own key
 * prefix. (Tests that kill Redis mid-run start their own.)
 */
let redis: TestRedis | null = null;

export async function setup(): Promise<void> {
  if (process.env.REDIS_URL !== undefined) return;
  if (!haveRedisServer()) throw new Error('redis-server is not on the PATH: `npm test` installs it (scripts/test-prerequisites.sh), or set REDIS_URL');
  redis = await startRedis();
  process.env.REDIS_URL = redis.url;
}

export async function teardown(): Promise<void> {
  await redis?.stop();
}
