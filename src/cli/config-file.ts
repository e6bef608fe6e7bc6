import { ConfigError, type Config } from '../config/load.js';
import { loadConfig, loadPolicy, type LoadedPolicy } from '../load.js';

// Apart from args.ts, so a command without a config (fleet) does not load the config parser and schema.

/** Load a config, printing every problem and returning null when it is invalid. */
export function loadOrReport(file: string): Config | null {
  return reportProblems(() => loadConfig(file, process.env));
}

/** Load a config and its shadow policy, printing every problem and returning null when invalid. */
export function loadPolicyOrReport(file: string): LoadedPolicy | null {
  return reportProblems(() => loadPolicy(file, process.env));
}

function reportProblems<T>(load: () => T): T | null {
  try {
    return load();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      return null;
    }
    throw err;
  }
}
