import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { stringify } from 'yaml';
import { checkConfigCommand } from '../../src/cli/check-config.js';
import { formatDiff, type DiffReport, type Flip } from '../../src/cli/policy-diff.js';
import { columns, plural } from '../../src/text.js';

const dir = mkdtempSync(join(tmpdir(), 'residency-cli-output-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function report(groups: { flip: Flip; count: number; samples: string[] }[], over: Partial<DiffReport> = {}): DiffReport {
  return { records: 1, unreadable: 0, unchanged: 0, allowToBlock: 0, blockToAllow: 0, groups: new Map(groups.map((g, i) => [String(i), g])), ...over };
}

describe('plural and columns', () => {
  it('says one thing in the singular and any other count in the plural', () => {
    expect([0, 1, 2].map((n) => plural(n, 'rule'))).toEqual(['0 rules', '1 rule', '2 rules']);
    expect(plural(1, 'policy', 'policies')).toBe('1 policy');
    expect(plural(3, 'policy', 'policies')).toBe('3 policies');
  });

  it('pads every column to its widest cell, right-aligns the ones asked for, and leaves no trailing blanks', () => {
    expect(columns([['a', 'n', 'z'], ['long cell', '1234', ''], ['b', '5', 'x']], [1])).toEqual(['a             n  z', 'long cell  1234', 'b             5  x']);
    // An astral character is one column, as a terminal shows it.
    expect(columns([['🌍', 'x'], ['ab', 'y']])).toEqual(['🌍   x', 'ab  y']);
  });
});

describe('policy diff output', () => {
  const flip = (over: Partial<Flip>): Flip => ({ from: 'block', to: 'allow', upstream: 's3-eu', rule: 'writes', jurisdiction: 'IE', ...over });

  it('keeps every column under its header, whatever the width of the names', () => {
    const text = formatDiff(
      report(
        [
          { flip: flip({}), count: 120, samples: ['id-1', 'id-2', 'id-3'] },
          { flip: flip({ from: 'allow', to: 'block', upstream: 'a-very-long-upstream-name-indeed', rule: 'r', jurisdiction: 'unknown' }), count: 7, samples: ['id-9'] },
          { flip: flip({ upstream: 'x', rule: 'a-rule-name-longer-than-its-header', jurisdiction: 'DE,FR,IE' }), count: 123456, samples: [] },
        ],
        { records: 123583, blockToAllow: 123576, allowToBlock: 7 },
      ),
    );
    const [, blank, header, ...rows] = text.split('\n');
    expect(blank).toBe('');
    expect(rows).toHaveLength(3);
    const titles = ['change', 'count', 'upstream', 'rule (candidate)', 'jurisdiction', 'sample decision ids'];
    const at = titles.map((t) => header!.indexOf(t));
    expect(at.every((x, i) => i === 0 || x > at[i - 1]!)).toBe(true);
    // Largest count first.
    const cells = [
      ['block→allow', '123456', 'x', 'a-rule-name-longer-than-its-header', 'DE,FR,IE', ''],
      ['block→allow', '120', 's3-eu', 'writes', 'IE', 'id-1 id-2 id-3'],
      ['allow→block', '7', 'a-very-long-upstream-name-indeed', 'r', 'unknown', 'id-9'],
    ];
    const countEnd = at[1]! + 'count'.length;
    for (const [r, row] of rows.entries()) {
      const want = cells[r]!;
      for (const [i, cell] of want.entries()) {
        if (cell === '') continue;
        // The count ends where its header ends; every other cell starts where its header starts.
        if (i === 1) expect(row.slice(countEnd - cell.length, countEnd + 1)).toBe(`${cell} `);
        else expect(row.slice(at[i]!, at[i]! + cell.length + 1).trimEnd()).toBe(cell);
      }
      expect(row).toBe(row.trimEnd());
    }
  });

  it('says 1 record and 1 unreadable line in the singular', () => {
    expect(formatDiff(report([], { records: 1, unchanged: 1, unreadable: 1 }))).toBe('1 record replayed: 1 unchanged, 0 allow→block, 0 block→allow, 1 unreadable line skipped');
    expect(formatDiff(report([], { records: 2, unchanged: 2, unreadable: 2 }))).toMatch(/^2 records replayed: .*, 2 unreadable lines skipped$/);
  });
});

describe('check-config summary', () => {
  it('counts upstreams, rules and exceptions in the singular when there is one', async () => {
    const file = join(dir, 'one.yaml');
    writeFileSync(
      file,
      stringify({
        allowed_jurisdictions: ['US'],
        upstreams: [{ name: 'only', url: 'http://127.0.0.1:9', provider: 's3', route: { path_prefix: '/o' }, region: 'us-east-1' }],
        rules: [{ name: 'writes', match: { operations: ['write'] }, allow_jurisdictions: ['US'] }],
      }),
    );
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    try {
      expect(await checkConfigCommand(['--config', file])).toBe(0);
      expect(log.mock.calls).toEqual([[`${file}: ok (1 upstream, 1 rule, 0 exceptions)`]]);
    } finally {
      log.mockRestore();
    }
  });
});
