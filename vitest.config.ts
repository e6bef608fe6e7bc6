import { defineConfig } from 'vitest/config';

// Two projects: unit tests run in parallel; integration tests (real sockets,
// Redis, child processes, emulators) run one file at a time.
export default defineConfig({
  test: {
    // A private Redis for the run (REDIS_URL set: that one instead).
    globalSetup: ['test/global-setup.ts'],
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          pool: 'threads',
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          fileParallelism: false,
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
    ],
  },
});
