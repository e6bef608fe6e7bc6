import type { RelayedAnswer, WorkerStatus } from './supervisor.js';

/**
 * The primary's answers built from every worker's: /readyz (ready only when
 * every worker is) and /fleet (every worker's replica, with or without Redis).
 * Pure, so the merge rules are tested without processes.
 */

export interface WorkerReadiness {
  worker: number;
  pid: number | null;
  state: WorkerStatus['state'];
  ready: boolean;
  checks?: unknown;
  error?: string;
}

/** 200 when every worker answered ready; each worker is listed, with its checks or why it is not ready. */
export function mergeReadiness(workers: readonly WorkerStatus[], answers: ReadonlyMap<number, RelayedAnswer>): RelayedAnswer {
  const listed = workers.map((w): WorkerReadiness => {
    const base = { worker: w.worker, pid: w.pid, state: w.state };
    const answer = answers.get(w.worker);
    if (answer === undefined) return { ...base, ready: false, error: `worker is ${w.state}` };
    const body = parseObject(answer.body);
    const ready = answer.status === 200 && body?.ready === true;
    if (body?.checks !== undefined) return { ...base, ready, checks: body.checks };
    return { ...base, ready, error: typeof body?.error === 'string' ? body.error : `answered ${answer.status}` };
  });
  const ready = listed.length > 0 && listed.every((w) => w.ready);
  return json(ready ? 200 : 503, { ready, workers: listed });
}

/**
 * One fleet view for the whole process group. With Redis every worker reads
 * the same heartbeats (their union is taken, as each read is a moment apart);
 * without it each worker knows only itself, so its `self` is its entry. The
 * status is the first Redis-backed view's (200), else the first answer's.
 */
export function mergeFleet(workers: readonly WorkerStatus[], answers: ReadonlyMap<number, RelayedAnswer>): RelayedAnswer {
  const views = workers.flatMap((w) => {
    const answer = answers.get(w.worker);
    return answer === undefined ? [] : [{ worker: w.worker, status: answer.status, body: parseObject(answer.body) ?? {} }];
  });
  const base = views.find((v) => v.status === 200 && Array.isArray(v.body.replicas)) ?? views.find((v) => v.status === 200) ?? views[0];
  if (base === undefined) return json(503, { error: 'no worker answered' });
  const replicas = new Map<string, Record<string, unknown>>();
  for (const view of views) {
    const entries = Array.isArray(view.body.replicas) ? (view.body.replicas as unknown[]) : [view.body.self];
    for (const entry of entries) {
      if (isObject(entry)) replicas.set(String(entry.instance ?? entry.id ?? view.worker), entry);
    }
  }
  const { self: _self, ...rest } = base.body;
  return json(base.status, {
    ...rest,
    replicas: [...replicas.values()].sort((a, b) => String(a.id).localeCompare(String(b.id))),
    workers: workers.map((w) => {
      const view = views.find((v) => v.worker === w.worker);
      return { worker: w.worker, pid: w.pid, state: w.state, status: view?.status ?? null, self: view?.body.self ?? null };
    }),
  });
}

export function json(status: number, body: unknown): RelayedAnswer {
  return { status, headers: { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' }, body: JSON.stringify(body) };
}

function parseObject(text: string): Record<string, unknown> | null {
  try {
    const value: unknown = JSON.parse(text);
    return isObject(value) ? value : null;
  } catch {
    return null;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
