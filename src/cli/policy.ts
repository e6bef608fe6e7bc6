import { plural } from '../text.js';
import { parse, UsageError, withUsage } from './args.js';
import { loadPolicyOrReport } from './config-file.js';
import { diffLogs, formatDiff } from './policy-diff.js';
import { formatJunit, formatText, runPolicyTestFile, type CaseResult } from './policy-test.js';

const USAGE = `Usage:
  residency-proxy policy test FILE… [--format text|junit]
  residency-proxy policy diff --log FILE… --candidate NEW.yaml [--current OLD.yaml] [--allow-loosening]

policy test   runs decision test cases (YAML) against the policy they name;
              exit 1 when any case fails.
policy diff   re-decides every request in decision logs under a candidate
              policy, with the location signals recorded at the time, and
              reports allow→block and block→allow flips. Exit 1 when any
              block→allow flip occurs (a change that opens a hole), unless
              --allow-loosening. Without --current, the recorded decisions
              are the baseline.`;

export function policyCommand(args: string[]): Promise<number> {
  return withUsage(USAGE, async () => {
    const [sub, ...rest] = args;
    if (sub === undefined || sub === '--help' || sub === '-h') {
      console.log(USAGE);
      return sub === undefined ? 2 : 0;
    }
    if (sub === 'test') return policyTest(rest);
    if (sub === 'diff') return policyDiff(rest);
    throw new UsageError(`unknown policy command "${sub}"`);
  });
}

async function policyTest(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { format: { type: 'string', default: 'text' } }, true);
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (positionals.length === 0) throw new UsageError('policy test needs at least one test file');
  if (values.format !== 'text' && values.format !== 'junit') throw new UsageError('--format is text or junit');
  const results: CaseResult[] = [];
  for (const file of positionals) {
    try {
      results.push(...runPolicyTestFile(file));
    } catch (err) {
      console.error((err as Error).message);
      return 1;
    }
  }
  console.log(values.format === 'junit' ? formatJunit(results) : formatText(results));
  return results.every((r) => r.passed) ? 0 : 1;
}

async function policyDiff(args: string[]): Promise<number> {
  const { values } = parse(args, {
    log: { type: 'string', multiple: true },
    candidate: { type: 'string' },
    current: { type: 'string' },
    'allow-loosening': { type: 'boolean', default: false },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!values.log?.length || !values.candidate) throw new UsageError('policy diff needs --log FILE and --candidate FILE');
  const candidate = loadPolicyOrReport(values.candidate);
  if (!candidate) return 1;
  const current = values.current === undefined ? null : loadPolicyOrReport(values.current);
  if (values.current !== undefined && !current) return 1;
  const report = await diffLogs(values.log, candidate.config, current?.config ?? null);
  console.log(formatDiff(report));
  if (report.blockToAllow > 0 && !values['allow-loosening']) {
    console.error(`policy diff: ${plural(report.blockToAllow, 'recorded block')} would be allowed by the candidate (pass --allow-loosening if intended)`);
    return 1;
  }
  return 0;
}
