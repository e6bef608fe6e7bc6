import { loadOrReport, parse, UsageError, withUsage } from './args.js';

const USAGE = `Usage: residency-proxy check-config --config FILE

Validates FILE. Exit 0 when valid; otherwise exit 1 and print one line per
problem: FILE: path.in.file: what is wrong (expected …).`;

export function checkConfigCommand(args: string[]): Promise<number> {
  return withUsage(USAGE, async () => {
    const { values, positionals } = parse(args, { config: { type: 'string', short: 'c' } }, true);
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    const file = values.config ?? positionals[0];
    if (!file) throw new UsageError('check-config needs --config FILE');
    const config = loadOrReport(file);
    if (!config) return 1;
    console.log(`${file}: ok (${config.upstreams.length} upstreams, ${config.rules.length} rules)`);
    return 0;
  });
}
