import { availableParallelism } from 'node:os';
import type { Config } from '../config/load.js';

/**
 * What the primary and its workers say to each other over the cluster IPC
 * channel (besides prom-client's own metrics messages). Every type is
 * prefixed, so each side ignores messages that are not its own.
 */

/** The environment variable that tells a forked process which worker it is (1..N). */
export const WORKER_ENV = 'RESIDENCY_WORKER';

/** How many data-plane processes the config asks for ("auto": one per CPU core this process may use). */
export function workerCount(config: Pick<Config, 'workers'>): number {
  const workers = config.workers ?? 1;
  return workers === 'auto' ? availableParallelism() : workers;
}

/** A worker's number from its environment; null in a process the primary did not fork as a worker. */
export function workerIndexFrom(env: NodeJS.ProcessEnv): number | null {
  const text = env[WORKER_ENV];
  return text !== undefined && /^[1-9]\d*$/.test(text) ? Number(text) : null;
}

/** Worker → primary: the data plane listens (the address is the shared listener's). */
export interface ListeningMessage {
  type: 'residency:listening';
  proxy: { address: string; port: number };
  policy: string;
}

/** Worker → primary: the start failed; the worker exits next. */
export interface StartFailedMessage {
  type: 'residency:start-failed';
  error: string;
}

/** Primary → worker: an admin request to answer with the worker's own admin app (tokens checked there). No admin route takes a body: none is sent. */
export interface AdminRequest {
  type: 'residency:admin-request';
  id: number;
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  remoteAddress: string;
}

/** Worker → primary: the admin app's answer. */
export interface AdminResponse {
  type: 'residency:admin-response';
  id: number;
  status: number;
  headers: Record<string, string | string[] | number | undefined>;
  body: string;
}

/** Primary → worker: this worker's metrics, for the primary to aggregate what arrives in time. */
export interface MetricsRequest {
  type: 'residency:metrics-request';
  id: number;
}

/** Worker → primary: its registry as prom-client's JSON (`getMetricsAsJSON`). */
export interface MetricsResponse {
  type: 'residency:metrics-response';
  id: number;
  metrics: object[];
}

export type WorkerMessage = ListeningMessage | StartFailedMessage | AdminResponse | MetricsResponse;

const WORKER_TYPES = new Set<string>(['residency:listening', 'residency:start-failed', 'residency:admin-response', 'residency:metrics-response']);

export function isWorkerMessage(message: unknown): message is WorkerMessage {
  return typeof message === 'object' && message !== null && WORKER_TYPES.has((message as { type?: unknown }).type as string);
}

export function isAdminRequest(message: unknown): message is AdminRequest {
  return typeof message === 'object' && message !== null && (message as { type?: unknown }).type === 'residency:admin-request';
}

export function isMetricsRequest(message: unknown): message is MetricsRequest {
  return typeof message === 'object' && message !== null && (message as { type?: unknown }).type === 'residency:metrics-request';
}
