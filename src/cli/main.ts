#!/usr/bin/env node
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const USAGE = `residency-proxy — data-residency enforcement proxy for storage APIs

Usage:
  residency-proxy serve [--config FILE]
  residency-proxy check-config --config FILE
  residency-proxy explain --config FILE METHOD URL [-H 'K: V']… [--format json|text]
  residency-proxy policy test FILE… [--format text|junit]
  residency-proxy policy diff --log FILE… --candidate NEW.yaml [--current OLD.yaml] [--allow-loosening]
  residency-proxy audit keygen|verify|query|report|export …
  residency-proxy fleet status|lockdown|lift --redis URL [--key-prefix P] [--reason TEXT] [--format json|text]

Run 'residency-proxy COMMAND --help' for a command's options.`;

// Loaded on demand: check-config and explain should not pay for the server's imports.
const COMMANDS: Record<string, () => Promise<(args: string[]) => Promise<number>>> = {
  serve: async () => (await import('./serve.js')).serveCommand,
  'check-config': async () => (await import('./check-config.js')).checkConfigCommand,
  explain: async () => (await import('./explain.js')).explainCommand,
  policy: async () => (await import('./policy.js')).policyCommand,
  audit: async () => (await import('./audit.js')).auditCommand,
  fleet: async () => (await import('./fleet.js')).fleetCommand,
};

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    console.log(USAGE);
    return command === undefined ? 2 : 0;
  }
  const load = COMMANDS[command];
  if (!load) {
    console.error(`residency-proxy: unknown command "${command}"\n\n${USAGE}`);
    return 2;
  }
  return (await load())(rest);
}

// Run when executed directly (also through the npm bin symlink).
const self = fileURLToPath(import.meta.url);
if (process.argv[1] !== undefined && realpathSync(process.argv[1]) === self) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      console.error(`residency-proxy: ${(err as Error).message}`);
      process.exitCode = 1;
    },
  );
}
