import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildReport, renderHtml } from '../../src/audit/report.js';
import { generateLog } from '../helpers/audit-records.js';
import { mixedEntry } from '../helpers/audit-report-log.js';
import { ensureSystemTool } from '../helpers/system-tool.js';

// The HTML report as a person reads it: rendered by headless Chromium, its
// visible text (what CSS and layout leave on screen, not the markup) checked.

let dir: string;
let log: string;

beforeAll(async () => {
  await ensureSystemTool('chromium', 'chromium');
  dir = mkdtempSync(join(tmpdir(), 'audit-report-html-'));
  log = join(dir, 'decisions.log');
  generateLog(log, 120, { entry: mixedEntry });
}, 900_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface Visible {
  /** The page's text as rendered (innerText). */
  body: string;
  headings: string[];
  captions: string[];
  headers: string[];
  /** The first cell of each table row: the row's label. */
  labels: string[];
  /** The chart's text: axis ticks and titles. */
  chart: string[];
}

/** Added to a copy of the report: collects what is on screen into one element that --dump-dom prints. */
const PROBE = `<script>
const text = (selector) => [...document.querySelectorAll(selector)].map((e) => e.innerText ?? e.textContent);
const visible = {
  body: document.body.innerText,
  headings: text('h1, h2'),
  captions: text('caption, figcaption'),
  headers: text('th'),
  labels: text('tr > td:first-child'),
  chart: [...document.querySelectorAll('svg text')].flatMap((t) => (t.children.length > 0 ? [...t.children] : [t]).map((e) => e.textContent)),
};
const out = document.createElement('pre');
out.id = 'visible-text';
out.textContent = JSON.stringify(visible);
document.body.append(out);
</script>`;

/** Run Chromium on the page and return what it printed; every process it started is stopped before this returns. */
async function dumpDom(page: string): Promise<string> {
  const args = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', `--user-data-dir=${join(dir, 'profile')}`, '--dump-dom', pathToFileURL(page).href];
  // Its own process group, so the helpers it forks are stopped with it.
  const child = spawn('chromium', args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const stopAll = () => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // Already gone.
    }
  };
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-4000)));
  const timer = setTimeout(stopAll, 60_000);
  try {
    const [code] = (await once(child, 'close')) as [number | null];
    if (code !== 0) throw new Error(`chromium exited with ${code}:\n${stderr}`);
    return stdout;
  } finally {
    clearTimeout(timer);
    stopAll();
  }
}

async function visibleText(html: string, name: string): Promise<Visible> {
  const page = join(dir, `${name}.html`);
  writeFileSync(page, html.replace('</body>', `${PROBE}</body>`));
  const dom = await dumpDom(page);
  const found = /<pre id="visible-text">([^<]*)<\/pre>/.exec(dom);
  if (!found) throw new Error(`the page did not render its text:\n${dom.slice(0, 2000)}`);
  const json = found[1]!.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&nbsp;/g, '\u00a0').replace(/&amp;/g, '&');
  return JSON.parse(json) as Visible;
}

/** Nothing on screen reads as a placeholder instead of a label. */
function expectNoPlaceholders(v: Visible): void {
  for (const text of [...v.headings, ...v.captions, ...v.headers, ...v.labels, ...v.chart]) {
    expect(text.trim(), `"${text}" is shown as a label`).not.toMatch(/^(none|null|undefined|NaN|)$/i);
  }
  expect(v.body).not.toMatch(/\b(null|undefined|NaN)\b/);
  expect(v.body).not.toMatch(/^\s*none\s*$/im);
}

describe('audit report --format html, as rendered by Chromium', () => {
  it('reads without the README: headings, labelled tables, a readable time axis and a caption for the chart', async () => {
    const v = await visibleText(renderHtml(await buildReport([log], { now: () => Date.UTC(2026, 0, 2) })), 'whole');

    expect(v.headings).toEqual([
      'Decision log report',
      'Decisions over time',
      'Decisions',
      'Modes',
      'Jurisdictions',
      'Upstreams',
      'Blocked non-US write attempts: 40',
      'Would have been blocked (monitor mode): 20',
      'Top reasons',
      'Policy versions in force',
    ]);
    expect(v.body).toContain('Period: the whole log, from the first record (2026-01-01 00:01:30 UTC) to the last record (2026-01-01 03:00:00 UTC, included).');
    expect(v.body).toContain('Chain verification: INTACT: 120 records in 1 file (0 sealed); 0 errors, 0 warnings.');

    // The chart: round UTC times on the axis (the date once), what a bar counts as a caption, a legend of colours only.
    expect(v.chart).toEqual(['0', '2', '4', '00:00', '2026-01-01', '00:30', '01:00', '01:30', '02:00', '02:30', '03:00', 'decisions']);
    expect(v.captions).toContain('Each bar counts the decisions of 5 minutes; times are UTC.');
    expect(v.body).toMatch(/allowed\s*blocked \(refused, or forwarded as a would-block\)/);

    // The jurisdictions table says what it counts, reads apart from writes.
    expect(v.headers).toEqual(expect.arrayContaining(['jurisdiction', 'reads allowed', 'reads refused', 'reads would-block', 'writes allowed', 'writes refused', 'writes would-block']));
    expect(v.body).toMatch(/Decisions by the jurisdiction where the target of the request was placed, reads apart from writes\./);
    expect(v.body).toMatch(/^unknown \(not placed\)\t0\t0\t0\t0\t20\t0$/m);
    expect(v.captions).toEqual(expect.arrayContaining(['By decision', 'By what the proxy did', 'By jurisdiction', 'By upstream', 'By rule']));

    // Reads no rule matched and writes the catch-all decided, each named for what it is.
    expect(v.labels).toEqual(expect.arrayContaining(['none matched (a read: allowed)', 'default (catch-all for writes no rule matched)', 'eu-monitor']));
    expect(v.labels).not.toContain('default');
    expectNoPlaceholders(v);
  });

  it('an empty section says so in a sentence, not with an unlabelled "none"', async () => {
    // 00:00–00:04:30 holds a refused write and an allowed write: no would-block.
    const report = await buildReport([log], { since: '2026-01-01T00:00:00.000Z', until: '2026-01-01T00:04:30.000Z' });
    const v = await visibleText(renderHtml(report), 'quiet');

    expect(v.headings).toContain('Would have been blocked (monitor mode): 0');
    expect(v.body).toMatch(/Would have been blocked \(monitor mode\): 0\n+Requests a rule in monitor mode would have refused[^\n]*\n+None in this period\./);
    expect(v.body).toContain('Period: from 2026-01-01 00:00:00 UTC to 2026-01-01 00:04:30 UTC (excluded).');
    expect(v.captions).toContain('Each bar counts the decisions of 1 minute; times are UTC.');
    expectNoPlaceholders(v);
  });
});
