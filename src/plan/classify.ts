import type { ClassifyOverrideConfig, Operation, Provider } from '../config/schema.js';
import { hasParam, paramValue } from '../location/request/query.js';
import { compileGlob } from '../policy/glob.js';

export { hasParam, paramValue };

/**
 * Read or write: by method, refined per provider where a POST or PUT does not
 * store data (or a POST does), then by the upstream's configured overrides.
 * Unknown methods are writes: when in doubt, the policy applies.
 */
const READ_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

export interface Classifier {
  (method: string, path: string, query: string | null): Operation;
}

export function compileClassifier(provider: Provider, overrides: readonly ClassifyOverrideConfig[]): Classifier {
  const compiled = overrides.map((o) => ({
    method: o.method,
    query: o.query ?? null,
    path: o.path === undefined ? null : compileGlob(o.path),
    operation: o.operation,
  }));
  return function classify(method, path, query) {
    for (const o of compiled) {
      if (o.method !== method) continue;
      if (o.query !== null && !hasParam(query, o.query)) continue;
      if (o.path !== null && !o.path.test(path)) continue;
      return o.operation;
    }
    return classifyByProvider(provider, method, path, query);
  };
}

export function classifyByProvider(provider: Provider, method: string, path: string, query: string | null): Operation {
  if (READ_METHODS.has(method)) return 'read';
  if (method !== 'POST') return 'write';
  switch (provider) {
    case 's3':
      // SelectObjectContent (POST ?select&select-type=2) only reads. DeleteObjects
      // (?delete), multipart (?uploads, ?uploadId), RestoreObject and browser
      // form uploads all change what is stored.
      return hasParam(query, 'select') ? 'read' : 'write';
    case 'azure':
      // Query Blob Contents (POST ?comp=query) reads; Get User Delegation Key
      // (POST ?restype=service&comp=userdelegationkey) issues a key, stores nothing.
      return paramIs(query, 'comp', 'query') || paramIs(query, 'comp', 'userdelegationkey') ? 'read' : 'write';
    case 'gcs':
      // Stopping a notification channel stores no data; every other POST
      // (uploads, bucket insert, compose, copy, rewrite, batch) may.
      return path === '/storage/v1/channels/stop' ? 'read' : 'write';
    case 'generic':
      return 'write';
  }
}

function paramIs(query: string | null, name: string, value: string): boolean {
  return paramValue(query, name)?.toLowerCase() === value;
}
