import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { findWorkerLogs, splitByWorker, workerLogPath } from '../../src/audit/worker-logs.js';
import { mergeFleet, mergeReadiness } from '../../src/cluster/merge.js';
import { workerCount, workerIndexFrom } from '../../src/cluster/protocol.js';
import type { RelayedAnswer, WorkerStatus } from '../../src/cluster/supervisor.js';
import { parseConfigText } from '../../src/server.js';
import { configProblems } from '../helpers/config-problems.js';

const BASE = `
upstreams:
  - name: s3-us
    url: http://127.0.0.1:4569
    provider: s3
    route: { path_prefix: /s3-us, strip_prefix: true }
    region: us-east-1
`;

const problems = (text: string) => configProblems(text);

describe('workers: config', () => {
  it('defaults to one process', () => {
    const config = parseConfigText(BASE, 'policy.yaml');
    expect(config.workers).toBe(1);
    expect(workerCount(config)).toBe(1);
  });

  it('takes a positive integer, or auto for one per core', () => {
    expect(workerCount(parseConfigText(`${BASE}workers: 4\n`, 'policy.yaml'))).toBe(4);
    expect(workerCount(parseConfigText(`${BASE}workers: auto\n`, 'policy.yaml'))).toBe(availableParallelism());
  });

  it('refuses counts that are not positive integers, naming the key', () => {
    for (const value of ['0', '-2', '1.5', 'many', '"2"', '1000']) {
      const found = problems(`${BASE}workers: ${value}\n`);
      expect(found.length, value).toBeGreaterThan(0);
      expect(found.every((p) => p.startsWith('policy.yaml: workers: ')), found.join('\n')).toBe(true);
    }
  });

  it('refuses several workers writing one decision log to stdout, naming both keys', () => {
    for (const workers of ['2', 'auto']) {
      expect(problems(`${BASE}workers: ${workers}\ndecision_log: { path: "-" }\n`)).toEqual([
        `policy.yaml: workers: ${workers === 'auto' ? '"auto"' : workers} needs one decision log file per worker, but decision_log.path is "-" (stdout), which only one process can write (expected decision_log.path naming a file (each worker then writes its own, e.g. decisions.w1.log), or workers: 1)`,
      ]);
    }
    expect(problems(`${BASE}workers: 1\ndecision_log: { path: "-" }\n`)).toEqual([]);
  });

  it('reads a worker number only from a well-formed variable', () => {
    expect(workerIndexFrom({ RESIDENCY_WORKER: '2' })).toBe(2);
    expect(workerIndexFrom({})).toBeNull();
    for (const bad of ['0', '02', 'x', '']) expect(workerIndexFrom({ RESIDENCY_WORKER: bad })).toBeNull();
  });
});

describe('workers: decision log naming', () => {
  it('puts .w<k> before the extension', () => {
    expect(workerLogPath('/var/log/rp/decisions.log', 1)).toBe('/var/log/rp/decisions.w1.log');
    expect(workerLogPath('/var/log/rp/audit.jsonl', 12)).toBe('/var/log/rp/audit.w12.jsonl');
    expect(workerLogPath('/var/log/rp/decisions', 2)).toBe('/var/log/rp/decisions.w2');
    expect(workerLogPath('/var/log/rp/.decisions', 3)).toBe('/var/log/rp/.decisions.w3');
    expect(workerLogPath('/var/log/rp.d/decisions.v2.log', 1)).toBe('/var/log/rp.d/decisions.v2.w1.log');
  });

  describe('on disk', () => {
    let dir: string;
    const touch = (...names: string[]) => names.forEach((n) => writeFileSync(join(dir, n), ''));
    beforeEach(() => {
      dir = mkdtempSync(join(tmpdir(), 'residency-workers-'));
    });
    afterEach(() => rmSync(dir, { recursive: true, force: true }));

    it("finds each worker's active and rotated files, not digests, locks or other logs", () => {
      touch(
        'decisions.w1.log',
        'decisions.w1.log.lock',
        'decisions.w1.log.digest.json',
        'decisions.w1-000000000001-000000000009.log',
        'decisions.w1-000000000001-000000000009.log.digest.json',
        'decisions.w2-000000000001-000000000004.log',
        'decisions.w10.log',
        'decisions.log',
        'decisions-000000000001-000000000003.log',
        'other.w1.log',
        'decisions.w0.log',
      );
      const found = findWorkerLogs(join(dir, 'decisions.log'));
      expect(found.map((w) => w.worker)).toEqual([1, 2, 10]);
      expect(found[0]!.files).toEqual([join(dir, 'decisions.w1-000000000001-000000000009.log'), join(dir, 'decisions.w1.log')]);
      // Rotated and not yet written again: the active file is named, not listed.
      expect(found[1]).toEqual({ worker: 2, active: join(dir, 'decisions.w2.log'), files: [join(dir, 'decisions.w2-000000000001-000000000004.log')] });
    });

    it('follows the rotation names of a log without the .log extension', () => {
      touch('audit.w1.jsonl', 'audit.w1.jsonl-000000000001-000000000002.log');
      expect(findWorkerLogs(join(dir, 'audit.jsonl'))).toEqual([
        { worker: 1, active: join(dir, 'audit.w1.jsonl'), files: [join(dir, 'audit.w1.jsonl-000000000001-000000000002.log'), join(dir, 'audit.w1.jsonl')] },
      ]);
    });

    it('splits a configured path into one set per worker; other arguments stay together', () => {
      touch('decisions.w1.log', 'decisions.w2.log', 'old.log');
      const configured = join(dir, 'decisions.log');
      expect(splitByWorker([configured, join(dir, 'old.log')])).toEqual([
        { worker: null, label: join(dir, 'old.log'), args: [join(dir, 'old.log')] },
        { worker: 1, label: join(dir, 'decisions.w1.log'), args: [join(dir, 'decisions.w1.log')] },
        { worker: 2, label: join(dir, 'decisions.w2.log'), args: [join(dir, 'decisions.w2.log')] },
      ]);
      // A directory is read as before (every log in it, together).
      expect(splitByWorker([dir])).toEqual([{ worker: null, label: dir, args: [dir] }]);
      // A log from before workers, beside the workers' logs, is verified too.
      touch('decisions.log');
      expect(splitByWorker([configured]).map((s) => s.worker)).toEqual([null, 1, 2]);
    });
  });
});

describe('workers: merged admin answers', () => {
  const status = (worker: number, state: WorkerStatus['state'] = 'listening'): WorkerStatus => ({ worker, pid: state === 'listening' ? 100 + worker : null, state, restarts: 0 });
  const answer = (status: number, body: unknown): RelayedAnswer => ({ status, headers: {}, body: JSON.stringify(body) });

  it('is ready only when every worker is, listing each', () => {
    const ok = answer(200, { ready: true, checks: { config: { ok: true } } });
    const merged = mergeReadiness([status(1), status(2)], new Map([[1, ok], [2, ok]]));
    expect(merged.status).toBe(200);
    expect(JSON.parse(merged.body)).toEqual({
      ready: true,
      workers: [
        { worker: 1, pid: 101, state: 'listening', ready: true, checks: { config: { ok: true } } },
        { worker: 2, pid: 102, state: 'listening', ready: true, checks: { config: { ok: true } } },
      ],
    });
    const restarting = mergeReadiness([status(1), status(2, 'restarting')], new Map([[1, ok]]));
    expect(restarting.status).toBe(503);
    expect(JSON.parse(restarting.body).workers[1]).toEqual({ worker: 2, pid: null, state: 'restarting', ready: false, error: 'worker is restarting' });
    const notReady = mergeReadiness([status(1)], new Map([[1, answer(503, { ready: false, checks: { location: { ok: false } } })]]));
    expect(notReady.status).toBe(503);
  });

  it('shows every worker in /fleet without Redis (each knows only itself)', () => {
    const solo = (id: string) => answer(200, { fleet: false, detail: 'redis is not configured', self: { id, instance: id } });
    const merged = mergeFleet([status(1), status(2)], new Map([[1, solo('h-w1')], [2, solo('h-w2')]]));
    const body = JSON.parse(merged.body);
    expect(merged.status).toBe(200);
    expect(body.replicas.map((r: { id: string }) => r.id)).toEqual(['h-w1', 'h-w2']);
    expect(body.workers.map((w: { worker: number; status: number }) => [w.worker, w.status])).toEqual([[1, 200], [2, 200]]);
    expect(body.self).toBeUndefined();
  });

  it('unites the workers\' Redis views (each read a moment apart)', () => {
    const view = (ids: string[], self: string) => answer(200, { replicas: ids.map((id) => ({ id, instance: id })), drift: { flagged: false }, self: { id: self, instance: self } });
    const merged = mergeFleet([status(1), status(2)], new Map([[1, view(['h-w1'], 'h-w1')], [2, view(['h-w1', 'h-w2'], 'h-w2')]]));
    const body = JSON.parse(merged.body);
    expect(body.replicas.map((r: { id: string }) => r.id)).toEqual(['h-w1', 'h-w2']);
    expect(body.drift).toEqual({ flagged: false });
  });
});
