import { formatProblem } from '../config/load.js';
import { signedRequestWarnings } from '../plan/route.js';
import { expiredExceptions } from '../policy/engine.js';
import { plural } from '../text.js';
import { parse, UsageError, withUsage } from './args.js';
import { loadPolicyOrReport } from './config-file.js';

const USAGE = `Usage: residency-proxy check-config --config FILE

Validates FILE. Exit 0 when valid; otherwise exit 1 and print one line per
problem: FILE: path.in.file: what is wrong (expected …). A shadow_policy
file is checked too. Exceptions past their expiry are reported as warnings
(they no longer apply; remove them), and so are S3 upstreams whose route
changes the path or Host a SigV4 client signed.`;

export function checkConfigCommand(args: string[]): Promise<number> {
  return withUsage(USAGE, async () => {
    const { values, positionals } = parse(args, { config: { type: 'string', short: 'c' } }, true);
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    const file = values.config ?? positionals[0];
    if (!file) throw new UsageError('check-config needs --config FILE');
    const loaded = loadPolicyOrReport(file);
    if (!loaded) return 1;
    const { config } = loaded;
    for (const expired of expiredExceptions(config, Date.now())) console.error(`${file}: warning: exception ${expired} no longer applies`);
    for (const warning of signedRequestWarnings(config)) console.error(formatProblem(file, { ...warning, path: `warning: ${warning.path}` }));
    const shadow = loaded.shadow ? `, shadow policy ${config.shadow_policy}` : '';
    console.log(`${file}: ok (${plural(config.upstreams.length, 'upstream')}, ${plural(config.rules.length, 'rule')}, ${plural(config.exceptions.length, 'exception')}${shadow})`);
    return 0;
  });
}
