import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { stringify } from 'yaml';
import type { DecisionRecord } from '../../src/audit/record.js';
import { createResidencyProxy, parseConfigText, type ResidencyProxy } from '../../src/server.js';

export interface RunningProxy {
  /** http://127.0.0.1:PORT of the data plane. */
  url: string;
  port: number;
  adminUrl: string;
  app: ResidencyProxy;
  logFile: string;
  /**
   * Decision records written so far, parsed, one per decided request: a
   * forwarded write's outcome record is joined into its decision (as
   * `audit query` shows it). `records()` has every line as written.
   */
  decisions(): DecisionRecord[];
  records(): Array<DecisionRecord & { kind?: string }>;
  /** The raw decision log text (for grepping secrets). */
  decisionLogText(): string;
  close(): Promise<void>;
}

/**
 * Start the real proxy in-process on loopback, ports chosen by the OS, with
 * its decision log in a fresh temp directory. `config` is the YAML document
 * as an object; listen/admin/decision_log are filled in.
 */
export async function startProxy(config: Record<string, unknown>): Promise<RunningProxy> {
  const dir = mkdtempSync(join(tmpdir(), 'residency-proxy-test-'));
  const logFile = join(dir, 'decisions.log');
  const doc = {
    listen: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0 },
    decision_log: { path: logFile },
    ...config,
  };
  const parsed = parseConfigText(stringify(doc), 'test.yaml');
  // Tests read the log right after each answer: hold answers until outcomes are durable too.
  const app = createResidencyProxy(parsed, { logger: pino({ level: 'silent' }), replica: 'test', awaitOutcomes: true });
  const { proxy, admin } = await app.listen();
  const readLog = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
  return {
    url: `http://127.0.0.1:${proxy.port}`,
    port: proxy.port,
    adminUrl: `http://127.0.0.1:${admin.port}`,
    app,
    logFile,
    decisionLogText: readLog,
    records: () => parseLines(readLog()),
    decisions: () => decisionsOf(readLog()),
    async close() {
      await app.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The decisions in a log's text, one per decided request, each forwarded write's outcome joined in. */
export function decisionsOf(text: string): DecisionRecord[] {
  return joinOutcomes(parseLines(text));
}

function parseLines(text: string): Array<DecisionRecord & { kind?: string }> {
  return text
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as DecisionRecord & { kind?: string });
}

/** Each outcome's status, bytes, duration and error merged into the decision it names; outcome lines dropped. */
function joinOutcomes(records: Array<DecisionRecord & { kind?: string }>): DecisionRecord[] {
  const byId = new Map<string, DecisionRecord>();
  const out: DecisionRecord[] = [];
  for (const r of records) {
    if (r.kind === 'outcome') {
      const decision = byId.get(r.id);
      if (decision) Object.assign(decision, { status: r.status, bytes_in: r.bytes_in, bytes_out: r.bytes_out, duration_ms: r.duration_ms }, r.error === undefined ? {} : { error: r.error });
      continue;
    }
    byId.set(r.id, r);
    out.push(r);
  }
  return out;
}
